/* qwen2vl: the Qwen2-VL model (vision tower, PatchMerger, Qwen2 decoder), forward and backward on
 * the op table of kernels/, weights in and out in the Hugging Face layout.
 *
 * The one idea (llm.c's): every parameter lives in ONE contiguous fp32 buffer, laid out by a table
 * that names each tensor exactly as transformers does (vision tower first, then the merger, then
 * the language model, so freezing a tower is freezing a range); the gradients live in a second
 * buffer of the same layout, so a checkpoint is one copy and an all-reduce one buffer. Activations
 * are planned once from a token budget (text tokens, image patches) and never reallocated. */
#ifndef ADAPT_QWEN2VL_H
#define ADAPT_QWEN2VL_H

#include "error.h"
#include "model_config.h"
#include "ops.h"

#include <stddef.h>
#include <stdint.h>

typedef enum qwen2vl_tower {
    QWEN2VL_TOWER_VISION,   /* visual.patch_embed + visual.blocks */
    QWEN2VL_TOWER_MERGER,   /* visual.merger */
    QWEN2VL_TOWER_LLM,      /* model.* + lm_head */
    QWEN2VL_TOWER_COUNT,
} qwen2vl_tower;

/* Pointers into the parameter (or gradient) buffer. Per-layer tensors are stacked: layer l of
 * a [L, a, b] field starts at l * a * b. E vision width, M vision MLP width, P patch_dim
 * (3 * 2 * 14 * 14), Lv vision depth, C = 4E merger width, D LM width, I LM MLP width, V vocab,
 * L LM layers, Q = heads * head_dim, K = kv_heads * head_dim. */
typedef struct qwen2vl_params {
    float *patch_embed;   /* [E, P]      Conv3d weight [E, 3, 2, 14, 14] flattened */
    float *v_norm1_w;     /* [Lv, E] */
    float *v_norm1_b;     /* [Lv, E] */
    float *v_qkv_w;       /* [Lv, 3E, E] */
    float *v_qkv_b;       /* [Lv, 3E] */
    float *v_proj_w;      /* [Lv, E, E] */
    float *v_proj_b;      /* [Lv, E] */
    float *v_norm2_w;     /* [Lv, E] */
    float *v_norm2_b;     /* [Lv, E] */
    float *v_fc1_w;       /* [Lv, M, E] */
    float *v_fc1_b;       /* [Lv, M] */
    float *v_fc2_w;       /* [Lv, E, M] */
    float *v_fc2_b;       /* [Lv, E] */
    float *m_ln_w;        /* [E]         merger.ln_q */
    float *m_ln_b;        /* [E] */
    float *m_fc1_w;       /* [C, C]      merger.mlp.0 */
    float *m_fc1_b;       /* [C] */
    float *m_fc2_w;       /* [D, C]      merger.mlp.2 */
    float *m_fc2_b;       /* [D] */
    float *embed;         /* [V, D]      embed_tokens (also the LM head when tied) */
    float *in_norm;       /* [L, D]      input_layernorm */
    float *q_w;           /* [L, Q, D] */
    float *q_b;           /* [L, Q] */
    float *k_w;           /* [L, K, D] */
    float *k_b;           /* [L, K] */
    float *v_w;           /* [L, K, D] */
    float *v_b;           /* [L, K] */
    float *o_w;           /* [L, D, Q] */
    float *post_norm;     /* [L, D]      post_attention_layernorm */
    float *gate_w;        /* [L, I, D] */
    float *up_w;          /* [L, I, D] */
    float *down_w;        /* [L, D, I] */
    float *norm;          /* [D]         the final RMSNorm */
    float *lm_head;       /* [V, D]      = embed when tie_word_embeddings */
} qwen2vl_params;

/* One named tensor of the layout: where it sits in the buffer and which tower owns it. */
typedef struct qwen2vl_tensor {
    char           name[96];      /* as transformers 5.x save_pretrained writes it */
    size_t         offset;        /* in floats from the start of the buffer */
    size_t         numel;
    int            ndim;
    int64_t        shape[5];
    qwen2vl_tower  tower;
    int            is_matrix;     /* Linear / Conv / Embedding weight: normal init; else norm or bias */
    int            is_norm;       /* a norm weight: ones at init */
} qwen2vl_tensor;

/* Activation budget: the most a forward pass holds at once. */
typedef struct qwen2vl_budget {
    int max_tokens;    /* text tokens of a packed batch, all sequences together */
    int max_patches;   /* vision patches of all its images together (4 per image token) */
    int max_seqs;      /* packed sequences */
    int max_images;
} qwen2vl_budget;

/* One packed batch. Sequences lie back to back in input_ids; labels are transformers' labels
 * (not yet shifted: position t is scored on labels[t + 1] of the same sequence, as
 * ForCausalLMLoss does), OPS_LABEL_IGNORE where no loss is taken. Images are consumed in the
 * order of their <|image_pad|> runs; image i owns grid_t * grid_h * grid_w patch rows of
 * pixel_values, in image_process's order. */
typedef struct qwen2vl_batch {
    int          n_tokens;
    const int   *input_ids;       /* [n_tokens] */
    const int   *labels;          /* [n_tokens], or NULL for no loss */
    int          n_seqs;
    const int   *cu_seqlens;      /* [n_seqs + 1], cu_seqlens[0] = 0, cu_seqlens[n_seqs] = n_tokens */
    int          n_images;
    const int   *image_grid_thw;  /* [n_images, 3] */
    const float *pixel_values;    /* [sum of t*h*w, patch_dim] */
    float        loss_normaliser; /* the unmasked-token count of the whole global batch */
} qwen2vl_batch;

typedef struct qwen2vl_model qwen2vl_model;

/* Builds the layout for cfg and allocates parameters (zeroed), gradients and activations for
 * the budget. Refuses configs the layout cannot hold (head_dim over the op limit, odd merge). */
int qwen2vl_create(qwen2vl_model **out, const model_config *cfg, const qwen2vl_budget *budget,
                   const ops_table *ops, adapt_error *err);
/* Weights only, for inference (worker/generate.c): no gradient buffer and no activation plan, so
 * the model holds 4 B per parameter instead of 8 B plus the activations. qwen2vl_infer_* (which
 * plan their own cache and scratch), weight load / save / init and qwen2vl_logits' refusal work
 * as on any model; the whole-batch passes (qwen2vl_forward, qwen2vl_forward_backward*) are refused
 * with ADAPT_EINVAL, qwen2vl_grads and qwen2vl_grad_buffer return NULL, and qwen2vl_zero_grads
 * and qwen2vl_grads_ready_all do nothing. */
int qwen2vl_create_inference(qwen2vl_model **out, const model_config *cfg, const ops_table *ops,
                             adapt_error *err);
void qwen2vl_free(qwen2vl_model *m);
/* 1 for a model of qwen2vl_create_inference. */
int    qwen2vl_is_inference(const qwen2vl_model *m);
/* Bytes of the buffers the model allocated: weights, gradients, planned activations (floats and
 * ints); the tensor table and the struct are not counted. */
size_t qwen2vl_resident_bytes(const qwen2vl_model *m);

const model_config   *qwen2vl_config(const qwen2vl_model *m);
qwen2vl_params       *qwen2vl_weights(qwen2vl_model *m);
qwen2vl_params       *qwen2vl_grads(qwen2vl_model *m);         /* NULL on an inference model */
float                *qwen2vl_param_buffer(qwen2vl_model *m);
float                *qwen2vl_grad_buffer(qwen2vl_model *m);   /* NULL on an inference model */
size_t                qwen2vl_num_params(const qwen2vl_model *m);
size_t                qwen2vl_num_tensors(const qwen2vl_model *m);
const qwen2vl_tensor *qwen2vl_tensor_at(const qwen2vl_model *m, size_t i);

/* Layout without a model: the tensor table of cfg (caller frees *out) and per-tower counts. */
int qwen2vl_layout(const model_config *cfg, qwen2vl_tensor **out, size_t *n_tensors,
                   size_t tower_params[QWEN2VL_TOWER_COUNT], adapt_error *err);

/* Freezing the vision tower and/or the merger: their gradients are neither computed nor written
 * (with both frozen the whole vision backward is skipped). The LLM cannot be frozen (refused). */
int qwen2vl_set_frozen(qwen2vl_model *m, qwen2vl_tower tower, int frozen, adapt_error *err);

/* Weights: load from a Hugging Face directory or file (the `visual.*` / `model.*` names that
 * save_pretrained writes and the published checkpoints hold, or transformers 5.x's module names
 * `model.visual.*` / `model.language_model.*`), F32/BF16/F16; missing or unexpected tensors are
 * an error listing them. Save writes F32 model.safetensors (or shards above max_shard_bytes,
 * 0 = one file) with save_pretrained's names, lm_head.weight omitted when tied as it does. */
int qwen2vl_load_weights(qwen2vl_model *m, const char *path, adapt_error *err);
int qwen2vl_save_weights(const qwen2vl_model *m, const char *dir, uint64_t max_shard_bytes,
                         adapt_error *err);

/* transformers' _init_weights: Linear / Conv3d / Embedding weights ~ normal(0, initializer_range
 * of their tower's config), biases 0, norm weights 1 (the padding row of embed_tokens 0 when
 * pad_token_id is set). Deterministic in seed; not torch's random stream. */
void qwen2vl_init_weights(qwen2vl_model *m, uint64_t seed);

/* Forward pass; with labels, *loss = the masked cross-entropy sum / loss_normaliser. */
int qwen2vl_forward(qwen2vl_model *m, const qwen2vl_batch *b, float *loss, adapt_error *err);
/* Forward and backward: ACCUMULATES into the gradient buffer (zero it per step with
 * qwen2vl_zero_grads), so micro-batches sum. */
int qwen2vl_forward_backward(qwen2vl_model *m, const qwen2vl_batch *b, float *loss,
                             adapt_error *err);
void qwen2vl_zero_grads(qwen2vl_model *m);

/* Gradients ready: called with a range [offset, offset + count) of the gradient buffer (in
 * floats) once the backward pass will not write it again, so a caller may start summing it across
 * ranks while the backward goes on. One backward reports every float of the buffer exactly once,
 * frozen towers and imageless batches included, in an order fixed by the config alone: the
 * untied lm_head, the final norm, each decoder layer's tensors (layers last to first), the
 * embedding (tied: with the LM head's share), the merger, each vision block (last to first), the
 * patch embedding. */
typedef void (*qwen2vl_grads_ready_fn)(void *ctx, size_t offset, size_t count);
/* qwen2vl_forward_backward that reports ranges as their gradients become final (ready may be
 * NULL: then it is qwen2vl_forward_backward). On an error before the backward, nothing is
 * reported. */
int qwen2vl_forward_backward_ready(qwen2vl_model *m, const qwen2vl_batch *b, float *loss,
                                   qwen2vl_grads_ready_fn ready, void *ctx, adapt_error *err);
/* Reports the same ranges in the same order with no pass at all: for a rank with no batch to
 * run, which must still take part in every bucket. */
void qwen2vl_grads_ready_all(qwen2vl_model *m, qwen2vl_grads_ready_fn ready, void *ctx);
/* After qwen2vl_forward: logits [n_rows, V] of packed tokens [row0, row0 + n_rows). Refused after
 * a training pass, which carries only the scored rows through the last layer's MLP. */
int qwen2vl_logits(qwen2vl_model *m, int row0, int n_rows, float *logits, adapt_error *err);

/* transformers' get_rope_index for one sequence: pos [3, n] (t, h, w components). Image tokens
 * are runs of image_token_id; each run takes the next grid of grid_thw (*image_cursor advances)
 * and must hold t*h*w / merge^2 tokens. Text continues after an image at its start + max(h, w) /
 * merge. */
int qwen2vl_rope_index(const int *ids, int n, int image_token_id, int spatial_merge_size,
                       const int *grid_thw, int n_images, int *image_cursor, int *pos, int ld_pos,
                       adapt_error *err);

/* The 4-byte words (floats and ints) of the activations qwen2vl_create plans for budget: saved
 * per-layer activations, backward scratch, the fused loss's scratch, index buffers. Training
 * memory is then 16 B per parameter (fp32 weights, grads, two AdamW moments) + 4 B x this. */
size_t qwen2vl_activation_floats(const model_config *cfg, const qwen2vl_budget *budget);


/* ---- inference with a KV cache (worker/qwen2vl_decode.c), for generation -------------------- */
/* The cache and scratch of one inference batch: `slots` sequences of up to `capacity` tokens each
 * (K/V of every layer), up to `max_rows` new tokens per step, images of up to `max_patches`
 * patches each. Planned once; steps allocate nothing. */
typedef struct qwen2vl_infer qwen2vl_infer;
int  qwen2vl_infer_create(qwen2vl_infer **out, const qwen2vl_model *m, int slots, int capacity,
                          int max_rows, int max_patches, adapt_error *err);
void qwen2vl_infer_free(qwen2vl_infer *s);
/* The vision tower and merger on one still image (grid_thw = {1, h, w}, pixel_values [h*w,
 * patch_dim] in image_process's order): features [h*w / merge^2, D], the rows that replace its
 * <|image_pad|> tokens. */
int  qwen2vl_infer_image(qwen2vl_model *m, qwen2vl_infer *s, const float *pixel_values,
                         const int grid_thw[3], float *features, adapt_error *err);
/* New tokens of one step. Row r is token ids[r] of sequence slot[r] at cache index
 * cache_pos[r]; it attends to that slot's cache [0, cache_pos[r]], so every earlier index must be
 * in the cache already or an earlier row of the same call. pos holds the M-RoPE ids [3, n]
 * (component-major). Rows whose id is the image token take the next row of image_features in row
 * order. Logits come for rows logit_rows[0..n_logits). */
typedef struct qwen2vl_rows {
    int          n;
    const int   *ids;             /* [n] */
    const int   *slot;            /* [n] */
    const int   *cache_pos;       /* [n] */
    const int   *pos;             /* [3, n] */
    const float *image_features;  /* [image rows of this call, D], or NULL when there are none */
    int          n_logits;
    const int   *logit_rows;      /* [n_logits] */
    int          row_invariant;   /* each row's results the same bits whatever the other rows
                                   * (decode steps: batch-independent sampling); else BLAS */
} qwen2vl_rows;
/* logits [n_logits, V] */
int  qwen2vl_infer_step(qwen2vl_model *m, qwen2vl_infer *s, const qwen2vl_rows *r, float *logits,
                        adapt_error *err);

#endif
