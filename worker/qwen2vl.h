/* qwen2vl: the Qwen2-VL model (vision tower, PatchMerger, Qwen2 decoder), forward and backward on
 * the op table of kernels/, weights in and out in the Hugging Face layout.
 *
 * The one idea (llm.c's): every parameter lives in ONE contiguous fp32 buffer, laid out by a table
 * that names each tensor exactly as transformers does (vision tower first, then the merger, then
 * the language model, so freezing a tower is freezing a range); the gradients live in a second
 * buffer of the same layout, so a checkpoint is one copy and an all-reduce one buffer. Activations
 * are planned once from a token budget (text tokens, image patches) and never reallocated.
 *
 * Memory: the model runs on any op table (kernels/ops.h). Parameters, gradients, activations and
 * the planned index buffers are BACKEND memory (the table's mem_alloc: host memory on "cpu",
 * device memory on "cuda", PROT_NONE memory on "cpu-guarded"); every pointer this header returns
 * into them (qwen2vl_weights, qwen2vl_grads, qwen2vl_param_buffer, qwen2vl_grad_buffer) is a
 * backend pointer, to hand to ops or to read through qwen2vl_copy_out. Everything a caller passes
 * in or gets out (batches, losses, logits, weights files) is HOST memory: the model stages what
 * it needs through mem_upload / mem_download, and skips the staging on a host_accessible backend,
 * where the cpu path is what it always was.
 *
 * Precision: a training model is fp32 or mixed bf16 (qwen2vl_budget.precision). In bf16 the
 * buffers above keep their meaning (fp32 master weights and fp32 gradients, same layout) and the
 * model adds a bf16 working copy of the weights, the one its passes read, refreshed from the
 * master by qwen2vl_weights_changed; activations and their gradients are bf16. */
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

/* The precision of a training model (chosen at creation, in its budget). */
typedef enum qwen2vl_precision {
    QWEN2VL_FP32 = 0,  /* fp32 weights, activations and gradients (the zero of the budget) */
    QWEN2VL_BF16 = 1,  /* mixed: bf16 weights as the passes read them (a working copy of the fp32
                        * master, refreshed by qwen2vl_weights_changed), bf16 activations and
                        * activation gradients; fp32 master weights, parameter gradients, row
                        * statistics and loss (kernels/ops.h's bf16 section) */
} qwen2vl_precision;

/* Activation budget: the most a forward pass holds at once. */
typedef struct qwen2vl_budget {
    int max_tokens;    /* text tokens of a packed batch, all sequences together */
    int max_patches;   /* vision patches of all its images together (4 per image token) */
    int max_seqs;      /* packed sequences */
    int max_images;
    qwen2vl_precision precision;  /* zero (QWEN2VL_FP32) unless set */
} qwen2vl_budget;

/* One packed batch, all HOST memory (the model uploads what its ops read into planned staging
 * buffers; on a host_accessible backend the ops read these arrays directly). Sequences lie back
 * to back in input_ids; labels are transformers' labels
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

/* Floats past n_params at the end of both the parameter and the gradient buffer: zeroed at
 * creation and never read or written by the model, so ZeRO-1 can pad its equal shards into them
 * (worlds up to this many ranks). */
#define QWEN2VL_BUFFER_SLACK 4096

/* Builds the layout for cfg and allocates parameters (zeroed), gradients and activations for
 * the budget, all from ops->mem_alloc (ops must outlive the model). Refuses configs the layout
 * cannot hold (head_dim over the op limit, odd merge). budget->precision QWEN2VL_BF16 also
 * allocates the bf16 working copy, and is refused (ADAPT_EUNSUPPORTED, naming the op) on a
 * table that lacks a bf16 entry the passes call. */
int qwen2vl_create(qwen2vl_model **out, const model_config *cfg, const qwen2vl_budget *budget,
                   const ops_table *ops, adapt_error *err);
/* Weights only, for inference (worker/generate.c): no gradient buffer and no activation plan, so
 * the model holds 4 B per parameter instead of 8 B plus the activations. qwen2vl_infer_* (which
 * plan their own cache and scratch), weight load / save / init and qwen2vl_logits' refusal work
 * as on any model; the whole-batch passes (qwen2vl_forward, qwen2vl_forward_backward*) are refused
 * with ADAPT_EINVAL, qwen2vl_grads and qwen2vl_grad_buffer return NULL, and qwen2vl_zero_grads
 * and qwen2vl_grads_ready_all do nothing. Generation runs on host memory: a backend that is not
 * host_accessible is refused with ADAPT_EUNSUPPORTED naming it. */
int qwen2vl_create_inference(qwen2vl_model **out, const model_config *cfg, const ops_table *ops,
                             adapt_error *err);
void qwen2vl_free(qwen2vl_model *m);
/* 1 for a model of qwen2vl_create_inference. */
int    qwen2vl_is_inference(const qwen2vl_model *m);
/* Bytes of the backend buffers the model allocated: weights and gradients (qwen2vl_buffer_floats
 * each), in bf16 the weights' working copy (2 B x qwen2vl_buffer_floats), planned activations
 * (qwen2vl_activation_bytes); the tensor table, the struct and the host mirror of the index
 * buffers are not counted. */
size_t qwen2vl_resident_bytes(const qwen2vl_model *m);
/* QWEN2VL_FP32 for an inference model */
qwen2vl_precision qwen2vl_get_precision(const qwen2vl_model *m);
/* Mixed precision: the passes read a bf16 working copy of the weights, so after anything writes
 * the fp32 master (qwen2vl_param_buffer) behind the model's back — an optimizer step, ZeRO-1's
 * parameter all-gather, a direct upload — call this before the next pass: it rounds the whole
 * master into the copy (one f32_to_bf16 over qwen2vl_buffer_floats, on the backend). Weight load,
 * init and qwen2vl_copy_in of the parameters call it themselves. fp32 and inference models:
 * nothing to do. */
void qwen2vl_weights_changed(qwen2vl_model *m);
/* The bf16 working copy (backend memory, qwen2vl_buffer_floats elements at the master's
 * offsets), for an optimizer that writes it itself (the table's adamw_step_mixed); NULL in fp32.
 * Under ZeRO-1 the all-gather brings only the fp32 master of the other shards: call
 * qwen2vl_weights_changed after it all the same. */
ops_bf16 *qwen2vl_param_buffer_bf16(qwen2vl_model *m);

const model_config   *qwen2vl_config(const qwen2vl_model *m);
const ops_table      *qwen2vl_ops(const qwen2vl_model *m);     /* the table it was created on */
/* backend pointers into the parameter / gradient buffer (see the top of this header) */
qwen2vl_params       *qwen2vl_weights(qwen2vl_model *m);
qwen2vl_params       *qwen2vl_grads(qwen2vl_model *m);         /* NULL on an inference model */
float                *qwen2vl_param_buffer(qwen2vl_model *m);
float                *qwen2vl_grad_buffer(qwen2vl_model *m);   /* NULL on an inference model */
/* floats of each of the two buffers: n_params + QWEN2VL_BUFFER_SLACK */
size_t                qwen2vl_buffer_floats(const qwen2vl_model *m);
/* Host copies of floats [offset, offset + n) of the parameter (grads = 0) or gradient (grads = 1)
 * buffer, any backend; offset + n <= qwen2vl_buffer_floats. copy_out waits for the ops before it.
 * The gradients of an inference model: nothing is copied. */
void qwen2vl_copy_out(const qwen2vl_model *m, int grads, size_t offset, size_t n, float *host);
void qwen2vl_copy_in(qwen2vl_model *m, int grads, size_t offset, size_t n, const float *host);
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
 * 0 = one file) with save_pretrained's names, lm_head.weight omitted when tied as it does.
 * On a backend that is not host_accessible load goes through a host buffer of the largest tensor
 * (one upload per tensor) and save through a host copy of the whole parameter buffer. */
int qwen2vl_load_weights(qwen2vl_model *m, const char *path, adapt_error *err);
int qwen2vl_save_weights(const qwen2vl_model *m, const char *dir, uint64_t max_shard_bytes,
                         adapt_error *err);

/* transformers' _init_weights: Linear / Conv3d / Embedding weights ~ normal(0, initializer_range
 * of their tower's config), biases 0, norm weights 1 (the padding row of embed_tokens 0 when
 * pad_token_id is set). Deterministic in seed; not torch's random stream. The same bits on every
 * backend (one that is not host_accessible gets them through 4 MB host chunks). */
void qwen2vl_init_weights(qwen2vl_model *m, uint64_t seed);

/* Forward pass; with labels, *loss = the masked cross-entropy sum / loss_normaliser (loss is a
 * host float: the backend's scalar is downloaded into it, which waits for the pass). */
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
/* The step's loss without a wait per micro-batch: qwen2vl_forward_backward_ready with loss NULL
 * downloads nothing; its pass's loss stays in backend memory, one slot per micro-batch since
 * qwen2vl_zero_grads (every 64 slots are downloaded and folded, one wait per 64 passes).
 * qwen2vl_loss_read downloads the rest and returns in *loss their sum taken in double in pass
 * order, the same additions as summing each pass's float into a double starting from 0. 0, or
 * -1 on an inference-only model (*loss 0). */
int  qwen2vl_loss_read(qwen2vl_model *m, double *loss);
/* CUDA graphs (the op table's graph entries): with graphs on, a training pass given no ready
 * callback (qwen2vl_forward_backward_ready with ready NULL) records its device work (vision,
 * decoder, loss, backward; the host planning and the batch's uploads stay outside) as a graph
 * the first time it sees a shape key, and replays that graph for every later pass with the same
 * key. The key holds every host value that reaches an op argument (qwen2vl_step.c graph_key_of);
 * 8 graphs are kept, the least recently used is freed first. A pass with a ready callback (the
 * bucketed all-reduce, whose host code starts collectives between ops) never uses a graph.
 * The loss normaliser is a scalar argument of the fused loss, so it is part of the key: passes
 * replay only where it repeats (the micro-batches of one step share it; a loop whose global
 * scored-token count changes every step captures afresh every step, until the fused loss reads
 * it from backend memory).
 * When to capture (qwen2vl_graph_policy): QWEN2VL_GRAPHS_ALWAYS captures a key the first time it
 * is seen; QWEN2VL_GRAPHS_ON_REPEAT runs a key's first pass op by op and captures it only when it
 * comes again (among the last QWEN2VL_GRAPH_SEEN keys so issued), so a loop whose keys never
 * repeat pays no capture at all, while a fixed-shape loop (packing to a fixed budget with a fixed
 * normaliser, a benchmark) replays from its third pass.
 * Default: ON_REPEAT when the backend is cuda, off elsewhere; the environment's ADAPT_GRAPHS
 * (0 off, 1 always, "repeat" on repeat) overrides it at qwen2vl_create, this call afterwards.
 * Returns the policy in force: QWEN2VL_GRAPHS_OFF also when the backend has no graph entries
 * (cpu). */
typedef enum qwen2vl_graph_policy {
    QWEN2VL_GRAPHS_OFF       = 0,
    QWEN2VL_GRAPHS_ALWAYS    = 1,
    QWEN2VL_GRAPHS_ON_REPEAT = 2,
} qwen2vl_graph_policy;
int  qwen2vl_set_graphs(qwen2vl_model *m, int policy);
/* Passes that replayed a cached graph (hits) and that captured a new one (misses). */
void qwen2vl_graph_counts(const qwen2vl_model *m, unsigned long *hits, unsigned long *misses);
/* ON_REPEAT: passes issued op by op because their key had not been seen before. */
unsigned long qwen2vl_graph_direct_passes(const qwen2vl_model *m);
/* Reports the same ranges in the same order with no pass at all: for a rank with no batch to
 * run, which must still take part in every bucket. */
void qwen2vl_grads_ready_all(qwen2vl_model *m, qwen2vl_grads_ready_fn ready, void *ctx);
/* After qwen2vl_forward: logits [n_rows, V] of packed tokens [row0, row0 + n_rows), written to
 * HOST memory. On a backend that is not host_accessible they go through the fused loss's scratch
 * in chunks of at least 256 rows, one product and one download each: past the first chunk the
 * product's row split differs from one whole product, so the bits may differ in the last place
 * from the cpu backend's. In bf16 the product reads the bf16 hidden states and working copy and
 * writes fp32 logits. Refused after a training pass, which carries only the scored rows
 * through the last layer's MLP. */
int qwen2vl_logits(qwen2vl_model *m, int row0, int n_rows, float *logits, adapt_error *err);

/* transformers' get_rope_index for one sequence: pos [3, n] (t, h, w components). Image tokens
 * are runs of image_token_id; each run takes the next grid of grid_thw (*image_cursor advances)
 * and must hold t*h*w / merge^2 tokens. Text continues after an image at its start + max(h, w) /
 * merge. */
int qwen2vl_rope_index(const int *ids, int n, int image_token_id, int spatial_merge_size,
                       const int *grid_thw, int n_images, int *image_cursor, int *pos, int ld_pos,
                       adapt_error *err);

/* The 4-byte words (floats and ints) of the activations qwen2vl_create plans for budget on a
 * host_accessible backend: saved per-layer activations, backward scratch, the fused loss's
 * scratch, index buffers. Training memory is then 16 B per parameter (fp32 weights, grads, two
 * AdamW moments) + 4 B x this (bf16: + 2 B per parameter for the working copy, and this is about
 * half, the row statistics and the loss's scratch staying fp32). A backend that is not
 * host_accessible adds the batch's staging buffers: max_tokens ints and max_patches x patch_dim
 * floats. */
size_t qwen2vl_activation_floats(const model_config *cfg, const qwen2vl_budget *budget);
/* The same in bytes, exactly (qwen2vl_resident_bytes counts these on a host_accessible backend). */
size_t qwen2vl_activation_bytes(const model_config *cfg, const qwen2vl_budget *budget);


/* ---- inference with a KV cache (worker/qwen2vl_decode.c), for generation -------------------- */
/* All host memory: the cache and scratch are malloc'd, so a model on a backend that is not
 * host_accessible is refused (ADAPT_EUNSUPPORTED) by qwen2vl_infer_create; features, rows and
 * logits below are host arrays. */
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
