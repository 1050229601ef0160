/* qwen2vl_internal: the model struct and its planned activations, shared by the qwen2vl_*.c
 * modules (layout and lifecycle, weights, vision tower, decoder) and by no one else.
 *
 * The one idea: every buffer a step touches is sized once from the budget and carved out of one
 * byte block (activations at the model's precision, statistics fp32) and one int block, so a
 * step allocates nothing and its peak memory is known up front (qwen2vl_activation_bytes is the
 * same carving, counted). The passes are written once, for both precisions, on the mp_* layer
 * below. Both blocks are backend memory (the op table's mem_alloc): host code never reads or
 * writes them. The integers are planned on the host, in a host mirror of the int block carved
 * the same way (the block itself when the backend is host_accessible), and reach the backend in
 * one upload per pass. */
#ifndef ADAPT_QWEN2VL_INTERNAL_H
#define ADAPT_QWEN2VL_INTERNAL_H

#include "qwen2vl.h"

/* An activation (or a weight as the passes read it) in the model's storage precision: fp32
 * (float) or, with QWEN2VL_BF16, bf16 (ops_bf16). Deliberately incomplete, so C refuses pointer
 * arithmetic on it: every offset goes through qx() / qw() below, which scale by the element size
 * the model chose at creation. The mp_* layer (qwen2vl.c) casts to the op table's types. */
typedef struct qwen2vl_tx qwen2vl_tx;

/* The planned integers of a pass, all derived from the batch on the host. Two sets exist: the
 * backend's (qwen2vl_acts.i, what ops read) and the host mirror (qwen2vl_model.hi, what the
 * planning writes and host loops read), at the same offsets of their blocks. N max patches,
 * T max tokens. */
typedef struct qwen2vl_ints {
    int *v_pos;        /* [2, N]          (h, w) of each patch */
    int *v_cu;         /* [max_images + 1] */
    int *pos;          /* [3, T]          M-RoPE (t, h, w) */
    int *targets;      /* [T]             shifted labels */
    int *img_pos;      /* [T]             rows of <|image_pad|> tokens */
    int *cu;           /* [max_seqs + 1] */
    int *keep;         /* [T]             rows whose target is scored, ascending */
    int *keep_targets; /* [T]             their targets */
    int *ids;          /* [T]             the batch's input_ids, staged: only on a backend that is
                        * not host_accessible (elsewhere NULL: ops read the batch's own array) */
} qwen2vl_ints;

#define QWEN2VL_GRAPHS     8    /* graphs kept per model */
#define QWEN2VL_GRAPH_SEEN 16   /* QWEN2VL_GRAPHS_ON_REPEAT: keys remembered from direct passes */
#define QWEN2VL_LOSS_SLOTS 64   /* micro-batch losses held in backend memory before a fold */

/* Saved forward activations (per layer, stacked) and backward scratch. N max patches, G = N / 4
 * merged tokens, T max tokens; other letters as in qwen2vl_params. qwen2vl_tx fields are stored
 * at the model's precision (bf16 or fp32); float fields are fp32 in both. */
typedef struct qwen2vl_acts {
    /* vision tower */
    qwen2vl_tx *v_x;       /* [Lv + 1, N, E] residual stream entering each block; [Lv] feeds
                            *                the merger */
    qwen2vl_tx *v_ln1;     /* [Lv, N, E] */
    float      *v_mean1;   /* [Lv, N] */
    float      *v_rstd1;   /* [Lv, N] */
    qwen2vl_tx *v_qkv;     /* [Lv, N, 3E]    q and k after the rotary embedding */
    qwen2vl_tx *v_att;     /* [Lv, N, E] */
    float      *v_lse;     /* [Lv, N, Hv] */
    qwen2vl_tx *v_mid;     /* [Lv, N, E]     residual after attention */
    qwen2vl_tx *v_ln2;     /* [Lv, N, E] */
    float      *v_mean2;   /* [Lv, N] */
    float      *v_rstd2;   /* [Lv, N] */
    qwen2vl_tx *v_fc1;     /* [Lv, N, M]     before QuickGELU */
    qwen2vl_tx *v_act;     /* [Lv, N, M] */
    /* merger */
    qwen2vl_tx *m_ln;      /* [N, E] = [G, C] */
    float      *m_mean;    /* [N] */
    float      *m_rstd;    /* [N] */
    qwen2vl_tx *m_fc1;     /* [G, C]         before GELU */
    qwen2vl_tx *m_act;     /* [G, C] */
    qwen2vl_tx *m_out;     /* [G, D]         image features */
    /* decoder */
    qwen2vl_tx *x;         /* [L + 1, T, D]  residual stream entering each layer; [L] the last */
    qwen2vl_tx *ln1;       /* [L, T, D] */
    float      *rstd1;     /* [L, T] */
    qwen2vl_tx *qkv;       /* [L, T, Q + 2K] q | k | v, q and k after M-RoPE */
    qwen2vl_tx *att;       /* [L, T, Q] */
    float      *lse;       /* [L, T, H] */
    qwen2vl_tx *mid;       /* [L, T, D] */
    qwen2vl_tx *ln2;       /* [L, T, D] */
    float      *rstd2;     /* [L, T] */
    qwen2vl_tx *gu;        /* [L, T, 2I]     gate | up */
    qwen2vl_tx *act;       /* [L, T, I] */
    qwen2vl_tx *hf;        /* [T, D]         after the final norm */
    float      *rstdf;     /* [T] */
    /* backward scratch */
    qwen2vl_tx *d_res;     /* [T, D] */
    qwen2vl_tx *d_ln;      /* [T, D] */
    qwen2vl_tx *d_qkv;     /* [T, Q + 2K] */
    qwen2vl_tx *d_att;     /* [T, Q] */
    qwen2vl_tx *d_gu;      /* [T, 2I] */
    qwen2vl_tx *d_act;     /* [T, I] */
    qwen2vl_tx *dv_res;    /* [N, E] */
    qwen2vl_tx *dv_ln;     /* [N, E] */
    qwen2vl_tx *dv_qkv;    /* [N, 3E] */
    qwen2vl_tx *dv_att;    /* [N, E] */
    qwen2vl_tx *dv_fc1;    /* [N, M] */
    qwen2vl_tx *dv_act;    /* [N, M] */
    qwen2vl_tx *dm_out;    /* [G, D] */
    qwen2vl_tx *dm_act;    /* [G, C] */
    qwen2vl_tx *dm_fc1;    /* [G, C] */
    qwen2vl_tx *att_keep;  /* [T, Q]         last layer, training: attention output of the
                            *                scored rows */
    qwen2vl_tx *d_keep;    /* [T, D]         last layer, training: their residual stream's
                            *                gradient */
    float      *loss_work; /* [loss_work_len] the fused LM head's scratch; qwen2vl_logits'
                            *                staging */
    float      *loss;      /* [1]            the fused LM head's loss, downloaded into the
                            *                caller's */
    float      *loss_slots; /* [QWEN2VL_LOSS_SLOTS] the step's pass losses, copied from loss
                            *                when the caller takes no loss per pass */
    float      *pixels;    /* [N, P]         the batch's pixel_values, staged: only on a backend
                            *                that is not host_accessible (elsewhere NULL) */
    qwen2vl_tx *v_pix;     /* [N, P]         bf16 only: the pixels rounded for the patch embedding
                            *                (fp32: NULL, the product reads the fp32 pixels) */
    qwen2vl_ints i;        /* the planned integers, backend copies */
} qwen2vl_acts;

/* A training pass's shape key: every host value that reaches an argument of an op the pass
 * issues (qwen2vl_step.c graph_key_of lists where each comes from). Compared with memcmp: built
 * on a zeroed struct. */
typedef struct qwen2vl_graph_key {
    int          n_tokens, n_seqs, n_patches, n_images, n_image_tokens, n_keep;
    int          max_seqlen;         /* longest sequence: the decoder attention's launch shape */
    int          max_image_patches;  /* largest image: the vision attention's launch shape */
    unsigned int normaliser_bits;    /* the fused loss's normaliser, a scalar argument */
    int          frozen_vision, frozen_merger, bf16;
    const int   *pass_ids;           /* where the ops read the batch (fixed on a staging backend) */
    const float *pass_pixels;
} qwen2vl_graph_key;

typedef struct qwen2vl_graph {
    qwen2vl_graph_key key;
    void             *graph;     /* the backend's; NULL: a free slot */
    unsigned long     last_use;  /* the model's pass clock at its last launch */
} qwen2vl_graph;

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
    size_t           resident_bytes;  /* param_mem + grad_mem + p16 + act_mem + act_ints */
    float           *param_mem;
    float           *grad_mem;
    qwen2vl_params   w;
    qwen2vl_params   g;
    int              frozen[QWEN2VL_TOWER_COUNT];
    /* mixed precision (qwen2vl_budget.precision): bf16 stores activations, their gradients and
     * the working copy p16 of the weights as bf16; the master weights and every parameter
     * gradient stay fp32 (param_mem, grad_mem) */
    int              bf16;
    size_t           es;              /* bytes of a stored element: 4 (fp32) or 2 (bf16) */
    ops_bf16        *p16;             /* [buffer_floats] bf16 copy of param_mem, the weights the
                                       * passes read (NULL in fp32); qwen2vl_weights_changed */
    void            *act_mem;         /* the carved activation block, in bytes */
    int             *act_ints;
    size_t           n_ints;          /* ints of act_ints (and of host_ints) */
    int             *host_ints;       /* the host mirror of act_ints (malloc); NULL when the
                                       * backend is host_accessible: hi then points into act_ints */
    size_t           loss_work_len;
    qwen2vl_acts     a;
    qwen2vl_ints     hi;              /* host mirror of a.i: planning writes, host loops read it */
    /* the shape of the last forward pass */
    int              n_tokens;
    int              n_seqs;
    int              n_patches;
    int              n_images;
    int              n_image_tokens;
    int              n_keep;        /* rows past the last layer's attention: n_tokens, or in a
                                     * training pass the scored rows (a.keep) when fewer */
    int              have_forward;  /* a forward pass with every row's logits available */
    /* the batch's arrays as the ops of this pass read them: backend memory (the staged copies
     * a.i.ids and a.pixels), or the batch's own arrays when the backend is host_accessible */
    const int       *pass_ids;
    const float     *pass_pixels;
    /* graphs of training passes (qwen2vl_set_graphs) */
    int              graphs_on;       /* qwen2vl_graph_policy */
    qwen2vl_graph    graphs[QWEN2VL_GRAPHS];
    unsigned long    graph_clock, graph_hits, graph_misses, graph_direct;
    /* ON_REPEAT: keys of passes issued op by op, a ring; a key found here is captured */
    qwen2vl_graph_key graph_seen[QWEN2VL_GRAPH_SEEN];
    int              n_graph_seen, graph_seen_next;
    /* the step's losses (qwen2vl_loss_read): the first n_loss_slots of a.loss_slots written
     * since qwen2vl_zero_grads; loss_folded the double sum of those downloaded already */
    int              n_loss_slots;
    double           loss_folded;
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

/* 0 when ops is host_accessible; else ADAPT_EUNSUPPORTED naming the backend and `what`: the
 * generation path (KV cache, cached attention) runs on host memory. */
int qwen2vl_require_host_backend(const ops_table *ops, const char *what, adapt_error *err);

/* Carves the activations of cfg/budget out of base (NULL: only counts) and the planned ints out
 * of ibase (NULL: only counts); returns BYTES used (stored activations at the budget's precision:
 * 2 bytes in bf16, 4 in fp32; row statistics, lse and the loss's scratch always 4) and stores
 * ints used in *n_ints. staging: also the batch's staging buffers (a.pixels, a.i.ids), for a
 * backend that is not host_accessible. Carving the same ibase twice gives the same offsets,
 * which is what makes a host mirror of the int block. */
size_t qwen2vl_acts_plan(qwen2vl_acts *a, const model_config *cfg, const qwen2vl_budget *b,
                         size_t loss_work_len, int staging, void *base, int *ibase,
                         size_t *n_ints);

/* ---- the mixed-precision op layer ----------------------------------------------------------
 * The passes (qwen2vl_vision.c, qwen2vl_text.c, qwen2vl_step.c) are written once against these:
 * each mp_* calls the op table's fp32 entry when the model is fp32 (the very calls the fp32 model
 * always made, so its bits do not change) and the _bf16 entry of the same stem when it is bf16.
 * Row statistics, lse, the loss and every parameter gradient (dw, db: the master gradients) are
 * float in both. */

/* p + off elements of the storage precision */
static inline qwen2vl_tx *qx(const qwen2vl_model *m, const qwen2vl_tx *p, size_t off)
{
    return (qwen2vl_tx *)((const char *)p + off * m->es);
}
/* The weights the passes read, at master + off: the master itself in fp32, the same offset of
 * the working copy p16 in bf16 (tied: lm_head is embed's pointer, so both read one copy). */
static inline const qwen2vl_tx *qw(const qwen2vl_model *m, const float *master, size_t off)
{
    if (!m->bf16) return (const qwen2vl_tx *)(master + off);
    return (const qwen2vl_tx *)(m->p16 + (size_t)(master - m->param_mem) + off);
}

/* y = x W^T + b (b NULL: none); backward: dx = dy W (+ dx_beta dx), dW += dy^T x, db += sum dy;
 * a NULL dx / dw / db is skipped. x, dx [rows, in] packed; y, dy [rows, ldy]. */
void mp_linear_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *x,
                       const qwen2vl_tx *w, const qwen2vl_tx *b, int rows, int in, int out,
                       int ldy);
void mp_linear_backward(const qwen2vl_model *m, qwen2vl_tx *dx, float *dw, float *db,
                        const qwen2vl_tx *dy, const qwen2vl_tx *x, const qwen2vl_tx *w, int rows,
                        int in, int out, int ldy, float dx_beta);
void mp_add(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *a, const qwen2vl_tx *b,
            size_t n);
void mp_zero(const qwen2vl_model *m, qwen2vl_tx *y, size_t n);
/* row gather y[t] = w[ids[t]] / dw[ids[t]] += dy[t] (fp32 dw) */
void mp_gather(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *w, const int *ids, int T,
               int d);
void mp_embedding_backward(const qwen2vl_model *m, float *dw, const qwen2vl_tx *dy, const int *ids,
                           int T, int d);
void mp_scatter_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *src,
                        const int *pos, int n, int d);
void mp_scatter_backward(const qwen2vl_model *m, qwen2vl_tx *dsrc, qwen2vl_tx *dy, const int *pos,
                         int n, int d);
void mp_layernorm_forward(const qwen2vl_model *m, qwen2vl_tx *y, float *mean, float *rstd,
                          const qwen2vl_tx *x, const qwen2vl_tx *w, const qwen2vl_tx *b, int T,
                          int d, float eps);
void mp_layernorm_backward(const qwen2vl_model *m, qwen2vl_tx *dx, float *dw, float *db,
                           const qwen2vl_tx *dy, const qwen2vl_tx *x, const qwen2vl_tx *w,
                           const float *mean, const float *rstd, int T, int d);
void mp_rmsnorm_forward(const qwen2vl_model *m, qwen2vl_tx *y, float *rstd, const qwen2vl_tx *x,
                        const qwen2vl_tx *w, int T, int d, float eps);
void mp_rmsnorm_backward(const qwen2vl_model *m, qwen2vl_tx *du, float *dw, const qwen2vl_tx *dy,
                         const qwen2vl_tx *u, const qwen2vl_tx *w, const float *rstd, int T,
                         int d);
void mp_rope_forward(const qwen2vl_model *m, qwen2vl_tx *x, const int *pos, int T, int n_heads,
                     int ldx, const ops_rope *rope);
void mp_rope_backward(const qwen2vl_model *m, qwen2vl_tx *dx, const int *pos, int T, int n_heads,
                      int ldx, const ops_rope *rope);
void mp_attention_forward(const qwen2vl_model *m, qwen2vl_tx *o, float *lse, const qwen2vl_tx *q,
                          const qwen2vl_tx *k, const qwen2vl_tx *v, const ops_attn *attn);
void mp_attention_backward(const qwen2vl_model *m, qwen2vl_tx *dq, qwen2vl_tx *dk, qwen2vl_tx *dv,
                           const qwen2vl_tx *dout, const qwen2vl_tx *q, const qwen2vl_tx *k,
                           const qwen2vl_tx *v, const qwen2vl_tx *o, const float *lse,
                           const ops_attn *attn);
void mp_swiglu_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *gate,
                       const qwen2vl_tx *up, int T, int n, int ld_in);
void mp_swiglu_backward(const qwen2vl_model *m, qwen2vl_tx *dgate, qwen2vl_tx *dup,
                        const qwen2vl_tx *dy, const qwen2vl_tx *gate, const qwen2vl_tx *up, int T,
                        int n, int ld_in);
void mp_quickgelu_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *x, size_t n);
void mp_quickgelu_backward(const qwen2vl_model *m, qwen2vl_tx *dx, const qwen2vl_tx *dy,
                           const qwen2vl_tx *x, size_t n);
void mp_gelu_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *x, size_t n);
void mp_gelu_backward(const qwen2vl_model *m, qwen2vl_tx *dx, const qwen2vl_tx *dy,
                      const qwen2vl_tx *x, size_t n);
/* the fused LM head + loss on the model's a.loss_work; dh NULL with dw NULL: forward only */
void mp_lmhead_xent(const qwen2vl_model *m, float *loss, qwen2vl_tx *dh, float *dw,
                    const qwen2vl_tx *h, const qwen2vl_tx *w, const int *labels, int T,
                    float normaliser);
/* logits [n, V] (fp32, c backend memory) = h [n, D] W^T */
void mp_logits(const qwen2vl_model *m, float *c, const qwen2vl_tx *h, const qwen2vl_tx *w, int n);

/* Linear layers on the op table: y = x W^T + b; backward accumulates dW, db and writes
 * (beta 0) or adds (beta 1) dx; a NULL dx / dw / db is skipped. x, dx are [rows, in] packed. */
void qwen2vl_linear_forward(const ops_table *ops, float *y, const float *x, const float *w,
                            const float *b, int rows, int in, int out, int ldy);
void qwen2vl_linear_backward(const ops_table *ops, float *dx, float *dw, float *db,
                             const float *dy, const float *x, const float *w, int rows, int in,
                             int out, int ldy, float dx_beta);

/* Vision tower + merger: forward fills a.m_out; backward takes a.dm_out. pixel_values and
 * input_ids below are backend memory (m->pass_pixels, m->pass_ids). */
void qwen2vl_vision_forward(qwen2vl_model *m, const float *pixel_values);
void qwen2vl_vision_backward(qwen2vl_model *m, const float *pixel_values);
/* Decoder: embeddings (image features scattered in), layers, final norm into a.hf. Rows past
 * the last layer's attention: n_keep; when fewer than n_tokens, they are a.keep's rows, packed
 * (a.hf [n_keep, D]). */
void qwen2vl_text_forward(qwen2vl_model *m, const int *input_ids);
/* From dhf (the gradient of the final norm's output, [n_keep, D]) down to the embeddings; fills
 * a.dm_out with the image features' gradient. dhf may be a.d_ln: the final norm reads it before
 * the layers reuse that buffer. */
void qwen2vl_text_backward(qwen2vl_model *m, const int *input_ids, const qwen2vl_tx *dhf);

#endif
