/* qwen2vl_internal: the model struct and its planned activations, shared by the qwen2vl_*.c
 * modules (layout and lifecycle, weights, vision tower, decoder) and by no one else.
 *
 * The one idea: every buffer a step touches is sized once from the budget and carved out of one
 * float block and one int block, so a step allocates nothing and its peak memory is known up front
 * (qwen2vl_activation_floats is the same carving, counted). */
#ifndef ADAPT_QWEN2VL_INTERNAL_H
#define ADAPT_QWEN2VL_INTERNAL_H

#include "qwen2vl.h"

/* Saved forward activations (per layer, stacked) and backward scratch. N max patches, G = N / 4
 * merged tokens, T max tokens; other letters as in qwen2vl_params. */
typedef struct qwen2vl_acts {
    /* vision tower */
    float *v_x;        /* [Lv + 1, N, E]  residual stream entering each block; [Lv] feeds the merger */
    float *v_ln1;      /* [Lv, N, E] */
    float *v_mean1;    /* [Lv, N] */
    float *v_rstd1;    /* [Lv, N] */
    float *v_qkv;      /* [Lv, N, 3E]     q and k after the rotary embedding */
    float *v_att;      /* [Lv, N, E] */
    float *v_lse;      /* [Lv, N, Hv] */
    float *v_mid;      /* [Lv, N, E]      residual after attention */
    float *v_ln2;      /* [Lv, N, E] */
    float *v_mean2;    /* [Lv, N] */
    float *v_rstd2;    /* [Lv, N] */
    float *v_fc1;      /* [Lv, N, M]      before QuickGELU */
    float *v_act;      /* [Lv, N, M] */
    /* merger */
    float *m_ln;       /* [N, E]  = [G, C] */
    float *m_mean;     /* [N] */
    float *m_rstd;     /* [N] */
    float *m_fc1;      /* [G, C]          before GELU */
    float *m_act;      /* [G, C] */
    float *m_out;      /* [G, D]          image features */
    /* decoder */
    float *x;          /* [L + 1, T, D]   residual stream entering each layer; [L] the last */
    float *ln1;        /* [L, T, D] */
    float *rstd1;      /* [L, T] */
    float *qkv;        /* [L, T, Q + 2K]  q | k | v, q and k after M-RoPE */
    float *att;        /* [L, T, Q] */
    float *lse;        /* [L, T, H] */
    float *mid;        /* [L, T, D] */
    float *ln2;        /* [L, T, D] */
    float *rstd2;      /* [L, T] */
    float *gu;         /* [L, T, 2I]      gate | up */
    float *act;        /* [L, T, I] */
    float *hf;         /* [T, D]          after the final norm */
    float *rstdf;      /* [T] */
    /* backward scratch */
    float *d_res;      /* [T, D] */
    float *d_ln;       /* [T, D] */
    float *d_qkv;      /* [T, Q + 2K] */
    float *d_att;      /* [T, Q] */
    float *d_gu;       /* [T, 2I] */
    float *d_act;      /* [T, I] */
    float *dv_res;     /* [N, E] */
    float *dv_ln;      /* [N, E] */
    float *dv_qkv;     /* [N, 3E] */
    float *dv_att;     /* [N, E] */
    float *dv_fc1;     /* [N, M] */
    float *dv_act;     /* [N, M] */
    float *dm_out;     /* [G, D] */
    float *dm_act;     /* [G, C] */
    float *dm_fc1;     /* [G, C] */
    float *att_keep;   /* [T, Q]          last layer, training: attention output of the scored rows */
    float *d_keep;     /* [T, D]          last layer, training: their residual stream's gradient */
    float *loss_work;  /* [loss_work_len]  the fused LM head's scratch */
    /* ints */
    int   *v_pos;      /* [2, N]          (h, w) of each patch */
    int   *v_cu;       /* [max_images + 1] */
    int   *pos;        /* [3, T]          M-RoPE (t, h, w) */
    int   *targets;    /* [T]             shifted labels */
    int   *img_pos;    /* [T]             rows of <|image_pad|> tokens */
    int   *cu;         /* [max_seqs + 1] */
    int   *keep;       /* [T]             rows whose target is scored, ascending */
    int   *keep_targets; /* [T]           their targets */
} qwen2vl_acts;

struct qwen2vl_model {
    model_config     cfg;
    const ops_table *ops;
    qwen2vl_budget   budget;
    qwen2vl_tensor  *tensors;
    size_t           n_tensors;
    size_t           n_params;
    size_t           tower_params[QWEN2VL_TOWER_COUNT];
    int              inference;       /* qwen2vl_create_inference: weights only, grad_mem, act_mem,
                                       * act_ints NULL and a, g, budget zero */
    size_t           resident_bytes;  /* param_mem + grad_mem + act_mem + act_ints */
    float           *param_mem;
    float           *grad_mem;
    qwen2vl_params   w;
    qwen2vl_params   g;
    int              frozen[QWEN2VL_TOWER_COUNT];
    float           *act_mem;
    int             *act_ints;
    size_t           loss_work_len;
    qwen2vl_acts     a;
    /* the shape of the last forward pass */
    int              n_tokens;
    int              n_seqs;
    int              n_patches;
    int              n_images;
    int              n_image_tokens;
    int              n_keep;        /* rows past the last layer's attention: n_tokens, or in a
                                     * training pass the scored rows (a.keep) when fewer */
    int              have_forward;  /* a forward pass with every row's logits available */
    /* during qwen2vl_forward_backward_ready: whom to tell that gradients are final */
    qwen2vl_grads_ready_fn ready;
    void            *ready_ctx;
};

/* Tells m->ready (when set) that n gradient floats from g on are final. */
static inline void qwen2vl_ready(const qwen2vl_model *m, const float *g, size_t n)
{
    if (m->ready) m->ready(m->ready_ctx, (size_t)(g - m->grad_mem), n);
}
/* The ranges of one part, in the order of qwen2vl.h: decoder layer l, the merger, vision blocks
 * from `from` down to 0 and then the patch embedding, vision block l. */
void qwen2vl_ready_text_layer(const qwen2vl_model *m, int l);
void qwen2vl_ready_merger(const qwen2vl_model *m);
void qwen2vl_ready_vision_block(const qwen2vl_model *m, int l);
void qwen2vl_ready_vision_from(const qwen2vl_model *m, int from);

/* Carves the activations of cfg/budget out of base (NULL: only counts); returns floats used and
 * stores ints used in *n_ints. */
size_t qwen2vl_acts_plan(qwen2vl_acts *a, const model_config *cfg, const qwen2vl_budget *b,
                         size_t loss_work_len, float *base, int *ibase, size_t *n_ints);

/* Linear layers on the op table: y = x W^T + b; backward accumulates dW, db and writes
 * (beta 0) or adds (beta 1) dx; a NULL dx / dw / db is skipped. x, dx are [rows, in] packed. */
void qwen2vl_linear_forward(const ops_table *ops, float *y, const float *x, const float *w,
                            const float *b, int rows, int in, int out, int ldy);
void qwen2vl_linear_backward(const ops_table *ops, float *dx, float *dw, float *db,
                             const float *dy, const float *x, const float *w, int rows, int in,
                             int out, int ldy, float dx_beta);

/* Vision tower + merger: forward fills a.m_out; backward takes a.dm_out. */
void qwen2vl_vision_forward(qwen2vl_model *m, const float *pixel_values);
void qwen2vl_vision_backward(qwen2vl_model *m, const float *pixel_values);
/* Decoder: embeddings (image features scattered in), layers, final norm into a.hf. Rows past
 * the last layer's attention: n_keep; when fewer than n_tokens, they are a.keep's rows, packed
 * (a.hf [n_keep, D]). */
void qwen2vl_text_forward(qwen2vl_model *m, const int *input_ids);
/* From dhf (the gradient of the final norm's output, [n_keep, D]) down to the embeddings; fills
 * a.dm_out with the image features' gradient. dhf may be a.d_ln: the final norm reads it before
 * the layers reuse that buffer. */
void qwen2vl_text_backward(qwen2vl_model *m, const int *input_ids, const float *dhf);

#endif
