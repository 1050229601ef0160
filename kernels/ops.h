/* ops: the op table. Model code is written once against it; each backend fills one table.
 *
 * Every op has a CPU twin in kernels/cpu/ and a CUDA twin in kernels/cuda/ under the same name,
 * and the CPU twin is the reference the CUDA one is tested against. Pointers passed to a backend's
 * ops live in that backend's memory (host for cpu, device for cuda); the small descriptor structs
 * below (ops_rope, ops_attn) are host memory, passed by pointer, and only the pointers inside them
 * are backend memory. A table entry may be NULL where a backend lacks that op (the CUDA table
 * fills in with its issue).
 *
 * Conventions, the same for every entry, so a model can chain ops without reading each one:
 *   - dims are int, flat lengths size_t; matrices are row-major; an `ld*` argument is the number
 *     of elements between the starts of consecutive rows (>= the row length), so an op can read
 *     a slice of a fused buffer (q, k, v out of one qkv product) without a copy;
 *   - `*_backward` is a separate entry and ACCUMULATES (+=) into every gradient it writes, input
 *     gradients included: parameter gradients then sum over micro-batches and tied uses, and a
 *     residual stream's gradient collects its branches with no extra add. Callers zero gradient
 *     buffers once per step;
 *   - every pointer an op takes is backend memory from the table's mem_alloc (host memory only
 *     where an entry says so: descriptor structs, grad_norm's pointer and length arrays);
 *   - ops allocate nothing, except the blocked CPU matmul fallback's packing tiles (on the stack)
 *     and the attention tiles (on the stack); the fused loss takes its scratch from the caller;
 *     the one exception that mallocs is the CPU backend's bf16 entries, reference twins that
 *     widen to fp32 scratch and call the fp32 ops (kernels/cpu/bf16_cpu.c: not a fast path);
 *   - fp32 arithmetic everywhere; storage is fp32 except in the bf16 section at the end of the
 *     table (mixed precision: bf16 weights and activations, fp32 master weights, gradients of
 *     parameters, moments and row statistics);
 *   - the CPU backend threads with OpenMP only (OMP_NUM_THREADS); it runs OpenBLAS single-
 *     threaded on each thread's part of a product, and sets openblas_set_num_threads(1) on its
 *     first large matmul, so two thread pools never compete for the cores. */
#ifndef ADAPT_OPS_H
#define ADAPT_OPS_H

#include <stddef.h>

#define OPS_ATTN_MAX_HEAD_DIM 256     /* attention and rotary head_dim limit (stack tiles) */
#define OPS_LABEL_IGNORE      (-100)  /* a label the loss skips, as transformers' ignore_index */

/* bf16 storage: the upper 16 bits of an IEEE fp32 (1 sign, 8 exponent, 7 mantissa bits), held as
 * 16-bit words so C callers need no CUDA header (the CUDA kernels read them as __nv_bfloat16).
 * Widening is exact (shift left by 16). Narrowing rounds to nearest, ties to even, on every
 * backend: subnormals are kept (no flush), a finite value past the largest bf16 (3.39e38) by
 * half an ulp or more becomes inf, and NaN stays NaN (quiet; this file's helpers keep the sign
 * and the top payload bits, CUDA gives its canonical 0x7fff: the bits differ, NaN-ness does not). */
typedef unsigned short ops_bf16;

/* Which rotary embedding, all with the rotate_half convention of transformers:
 * for band j in [0, head_dim/2): (x[j], x[j + head_dim/2]) is rotated by angle pos_j * inv_freq_j. */
typedef enum ops_rope_kind {
    OPS_ROPE_1D,         /* text: one position id per token, inv_freq_j = theta^(-2j/head_dim) */
    OPS_ROPE_VISION_2D,  /* Qwen2-VL vision tower: ids (h, w); bands [0, head_dim/4) use h, the
                          * rest use w, inv_freq over head_dim/2 (VisionRotaryEmbedding(head_dim/2)) */
    OPS_ROPE_MROPE,      /* Qwen2-VL decoder: ids (t, h, w); mrope_section[0] bands use t, the next
                          * mrope_section[1] use h, the last mrope_section[2] use w */
} ops_rope_kind;

typedef struct ops_rope {
    ops_rope_kind kind;
    int           head_dim;          /* even, <= OPS_ATTN_MAX_HEAD_DIM; multiple of 4 for VISION_2D */
    float         theta;             /* base, 10000 for the vision tower, 1e6 for Qwen2-VL's LM */
    int           mrope_section[3];  /* OPS_ROPE_MROPE only: t, h, w bands, sum = head_dim/2 */
} ops_rope;

/* Attention over variable-length packed sequences: segment s holds tokens
 * [cu_seqlens[s], cu_seqlens[s+1]) and attends only within itself. */
typedef struct ops_attn {
    const int *cu_seqlens;    /* [num_seqs + 1], backend memory, cu_seqlens[0] = 0, non-decreasing */
    int        num_seqs;
    int        total_tokens;  /* cu_seqlens[num_seqs] (a host copy, for launch shapes) */
    int        max_seqlen;    /* longest segment (a host copy, for launch shapes) */
    int        num_heads;     /* query heads */
    int        num_kv_heads;  /* divides num_heads; query head h reads kv head h / (num_heads / num_kv_heads) */
    int        head_dim;      /* <= OPS_ATTN_MAX_HEAD_DIM */
    int        ldq, ldk, ldv, ldo;  /* row strides (elements per token) of q/dq, k/dk, v/dv, o/dout */
    float      scale;         /* usually 1/sqrt(head_dim) */
    int        causal;        /* 1: token i sees tokens <= i of its segment (LM); 0: the whole segment */
} ops_attn;

typedef struct ops_table {
    const char *backend;  /* "cpu", "cpu-guarded" (tests) or "cuda" */
    /* 1 when host code may read and write this backend's memory directly (cpu); 0 when every
     * access must go through mem_upload / mem_download (cuda, and cpu-guarded, which exists to
     * prove that the model and the training loop never touch backend memory behind its back) */
    int host_accessible;

    /* ---- memory: every buffer an op reads or writes comes from mem_alloc -------------------
     * Copies are ordered with the ops issued before and after them (one stream on CUDA). */
    /* bytes of zeroed backend memory, 64-byte aligned; NULL when out of memory */
    void *(*mem_alloc)(size_t bytes);
    void  (*mem_free)(void *p);   /* NULL: nothing */
    /* host → backend; returns once src may be reused (the copy itself may still be queued) */
    void  (*mem_upload)(void *dst, const void *src_host, size_t bytes);
    /* backend → host; returns when the bytes are in dst_host (it waits for the ops before it) */
    void  (*mem_download)(void *dst_host, const void *src, size_t bytes);
    /* backend → backend (regions do not overlap) */
    void  (*mem_copy)(void *dst, const void *src, size_t bytes);
    /* Waits for every op issued; 0, or -1 with the first failure the backend recorded (launch or
     * device errors surface late on CUDA) written to msg [len] (msg may be NULL). */
    int   (*sync)(char *msg, size_t len);

    /* y[i] = a[i] + b[i] */
    void (*add_f32)(float *y, const float *a, const float *b, size_t n);
    /* y[i] += alpha * x[i] */
    void (*axpy_f32)(float *y, float alpha, const float *x, size_t n);
    /* y[i] = value: zeroes gradient buffers before a step's backward (they accumulate) */
    void (*fill_f32)(float *y, float value, size_t n);

    /* ---- matrix products: a Linear is matmul (trans_b = 1) + bias_add ---------------------- */
    /* C[m,n] = alpha * op(A) * op(B) + beta * C; op(A) is [m,k] (A stored [k,m] when trans_a),
     * op(B) is [k,n] (B stored [n,k] when trans_b). beta = 0 overwrites C (NaNs in C ignored).
     * Linear backward: dX += dY W (0, 0, beta 1); dW += dY^T X (1, 0, beta 1).
     * c [m, ldc]; a [m, lda] or [k, lda] (trans_a); b [k, ldb] or [n, ldb] (trans_b) */
    void (*matmul_f32)(float *c, const float *a, const float *b, int m, int n, int k,
                       int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha, float beta);
    /* y[r, :] += bias for each of rows rows; y [rows, ldy], bias [n] */
    void (*bias_add_f32)(float *y, const float *bias, int rows, int n, int ldy);
    /* dbias += sum over rows of dy; dbias [n], dy [rows, ldy] */
    void (*bias_backward_f32)(float *dbias, const float *dy, int rows, int n, int ldy);

    /* ---- embedding and image-feature scatter ------------------------------------------------ */
    /* y[t] = w[ids[t]]; y [T, d], w [V, d], ids [T] in [0, V) */
    void (*embedding_forward_f32)(float *y, const float *w, const int *ids, int T, int d);
    /* dw[ids[t]] += dy[t]; dw [V, d], dy [T, d] */
    void (*embedding_backward_f32)(float *dw, const float *dy, const int *ids, int T, int d);
    /* y[pos[i]] = src[i] (overwrites those rows); y [T, d], src [n, d], pos [n] distinct */
    void (*scatter_rows_forward_f32)(float *y, const float *src, const int *pos, int n, int d);
    /* dsrc[i] += dy[pos[i]], then dy[pos[i]] = 0: rows overwritten in forward pass no gradient
     * on to what was there before (the token embedding), exactly as masked_scatter.
     * dsrc [n, d], dy [T, d] in/out */
    void (*scatter_rows_backward_f32)(float *dsrc, float *dy, const int *pos, int n, int d);

    /* ---- normalisation ---------------------------------------------------------------------- */
    /* y = (x - mean) * rstd * w + b per row; saves mean, rstd for backward.
     * y [T, d], mean [T], rstd [T], x [T, d], w [d], b [d] */
    void (*layernorm_forward_f32)(float *y, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int T, int d, float eps);
    /* dx [T, d] +=, dw [d] +=, db [d] +=; dy, x [T, d]; w [d]; mean, rstd [T]. dw and/or db may
     * be NULL (a frozen norm): that sum is skipped */
    void (*layernorm_backward_f32)(float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *w, const float *mean, const float *rstd, int T, int d);
    /* RMSNorm, optionally fused with the residual add: when res is not NULL, res += x first and
     * the sum is normalised (res then holds the new residual stream, the input of backward).
     * y = u * rstd * w with u = res or x. y [T, d], rstd [T], res [T, d] in/out or NULL,
     * x [T, d], w [d] */
    void (*rmsnorm_forward_f32)(float *y, float *rstd, float *res, const float *x, const float *w,
                                int T, int d, float eps);
    /* du [T, d] +=, dw [d] +=; u [T, d] the normalised input (res after the fused add); with the
     * fused add, pass the residual stream's gradient as du: it is then the gradient of both x
     * and the old residual. dy [T, d], w [d], rstd [T] */
    void (*rmsnorm_backward_f32)(float *du, float *dw, const float *dy, const float *u,
                                 const float *w, const float *rstd, int T, int d);

    /* ---- rotary embedding, in place on x [T, ldx] holding n_heads heads of rope->head_dim ---- */
    /* pos is component-major [n_ids, T]: n_ids = 1 (1D), 2 (h, w: VISION_2D), 3 (t, h, w: MROPE) */
    void (*rope_forward_f32)(float *x, const int *pos, int T, int n_heads, int ldx,
                             const ops_rope *rope);
    /* the transpose rotation, in place on dx [T, ldx] (not accumulating: the rotation is its own
     * buffer's gradient) */
    void (*rope_backward_f32)(float *dx, const int *pos, int T, int n_heads, int ldx,
                              const ops_rope *rope);

    /* ---- attention (flash manner: tiled online softmax, no T x T matrix) -------------------- */
    /* o = softmax(scale q k^T + mask) v per head; lse = per-row log-sum-exp of the scaled scores.
     * q [T, ldq] (num_heads x head_dim used), k [T, ldk], v [T, ldv] (num_kv_heads x head_dim),
     * o [T, ldo] (num_heads x head_dim written), lse [T, num_heads] */
    void (*attention_forward_f32)(float *o, float *lse, const float *q, const float *k,
                                  const float *v, const ops_attn *attn);
    /* dq, dk, dv +=; shapes as q, k, v; dout, o as o; lse as in forward */
    void (*attention_backward_f32)(float *dq, float *dk, float *dv, const float *dout,
                                   const float *q, const float *k, const float *v, const float *o,
                                   const float *lse, const ops_attn *attn);

    /* ---- activations ------------------------------------------------------------------------ */
    /* y = silu(gate) * up; y [T, n], gate, up [T, ld_in] (ld_in = 2n for a fused gate|up) */
    void (*swiglu_forward_f32)(float *y, const float *gate, const float *up, int T, int n, int ld_in);
    /* dgate, dup [T, ld_in] +=; dy [T, n] */
    void (*swiglu_backward_f32)(float *dgate, float *dup, const float *dy, const float *gate,
                                const float *up, int T, int n, int ld_in);
    /* y = x * sigmoid(1.702 x); y, x [n] */
    void (*quickgelu_forward_f32)(float *y, const float *x, size_t n);
    /* dx [n] += dy * d/dx */
    void (*quickgelu_backward_f32)(float *dx, const float *dy, const float *x, size_t n);
    /* y = x * (1 + erf(x / sqrt 2)) / 2 (nn.GELU(), exact); y, x [n] */
    void (*gelu_forward_f32)(float *y, const float *x, size_t n);
    void (*gelu_backward_f32)(float *dx, const float *dy, const float *x, size_t n);

    /* ---- fused LM head + cross-entropy, forward and backward in one pass ---------------------- */
    /* loss[0] = sum over t with labels[t] != OPS_LABEL_IGNORE of (logsumexp(logits_t) -
     * logits_t[labels[t]]) / normaliser, logits = h w^T never held whole: rows go in chunks and the
     * vocabulary in chunks sized to fit work (online logsumexp across vocabulary chunks; with
     * work_len >= 64 (2d + 3 + V) a row chunk's logits are computed once, not twice). dh, dw +=
     * the gradient of loss[0]; both NULL for forward only. normaliser <= 0 gives loss 0 and no
     * gradient. Labels are OPS_LABEL_IGNORE or in [0, V).
     * loss [1], dh [T, d], dw [V, d], h [T, d], w [V, d], labels [T], work [work_len],
     * work_len >= 2d + 4 (more is faster) */
    void (*lmhead_xent_f32)(float *loss, float *dh, float *dw, const float *h, const float *w,
                            const int *labels, int T, int d, int V, float normaliser,
                            float *work, size_t work_len);

    /* ---- optimizer -------------------------------------------------------------------------- */
    /* norm[0] = sqrt(sum of squares of all count tensors); scale[0] = the clip coefficient
     * min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ (1 when max_norm <= 0).
     * tensors, lens [count] host arrays of backend pointers / lengths; norm, scale [1] */
    void (*grad_norm_f32)(float *norm, float *scale, const float *const *tensors,
                          const size_t *lens, int count, float max_norm);
    /* one torch.optim.AdamW step on one tensor with g * grad_scale[0] (NULL: 1) as its gradient;
     * weight_decay 0 for tensors that take none; step counts from 1. Hyperparameters are double,
     * as torch's Python floats are: 1 - beta2 formed from a float 0.999 is off by 1e-5.
     * p, m, v [n] in/out, g [n], grad_scale [1] or NULL */
    void (*adamw_step_f32)(float *p, float *m, float *v, const float *g, const float *grad_scale,
                           size_t n, double lr, double beta1, double beta2, double eps,
                           double weight_decay, int step);

    /* ---- bf16 storage (mixed precision) ------------------------------------------------------
     * Each entry keeps the contract of the fp32 entry of the same stem (shapes, strides, += in
     * backward, NULL gradients) with activations and weights stored as bf16 and all arithmetic
     * in fp32: inputs are widened exactly, a result is rounded to bf16 once, where it is stored
     * (a += gradient: old + delta in fp32, then one rounding). What stays fp32: row statistics
     * (mean, rstd), attention's lse, the loss, and every PARAMETER gradient (dw, db of the
     * norms, the embedding's dw, a Linear's dW and db), which accumulate into the fp32 master
     * gradients. Every entry is set on every backend (cpu, cpu-guarded, cuda). */
    /* y[i] = bf16(x[i]) / y[i] = float(x[i]); y, x [n] */
    void (*f32_to_bf16)(ops_bf16 *y, const float *x, size_t n);
    void (*bf16_to_f32)(float *y, const ops_bf16 *x, size_t n);
    /* add_f32 / axpy_f32 / fill_f32 over bf16 (fill: value rounded once) */
    void (*add_bf16)(ops_bf16 *y, const ops_bf16 *a, const ops_bf16 *b, size_t n);
    void (*axpy_bf16)(ops_bf16 *y, float alpha, const ops_bf16 *x, size_t n);
    void (*fill_bf16)(ops_bf16 *y, float value, size_t n);
    /* matmul_f32 over bf16 A, B, C with fp32 accumulation; bias [n] (bf16) or NULL: when set it
     * is added to every row before the one rounding of C (a Linear's forward in one pass: the
     * cuBLASLt bias epilogue on CUDA), also for k = 0 (C = beta C + bias). */
    void (*matmul_bf16)(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                        int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                        float beta, const ops_bf16 *bias);
    /* the same with fp32 C and no bias: a Linear's dW += dY^T X into the fp32 master gradient */
    void (*matmul_bf16_f32out)(float *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n,
                               int k, int trans_a, int trans_b, int lda, int ldb, int ldc,
                               float alpha, float beta);
    /* bias_add_f32 with bf16 y and bias; bias_backward_f32 from bf16 dy into fp32 dbias */
    void (*bias_add_bf16)(ops_bf16 *y, const ops_bf16 *bias, int rows, int n, int ldy);
    void (*bias_backward_bf16)(float *dbias, const ops_bf16 *dy, int rows, int n, int ldy);
    /* embedding (a row gather: also the model's gather of kept rows) and image-feature scatter;
     * the embedding's dw is fp32 */
    void (*embedding_forward_bf16)(ops_bf16 *y, const ops_bf16 *w, const int *ids, int T, int d);
    void (*embedding_backward_bf16)(float *dw, const ops_bf16 *dy, const int *ids, int T, int d);
    void (*scatter_rows_forward_bf16)(ops_bf16 *y, const ops_bf16 *src, const int *pos, int n,
                                      int d);
    void (*scatter_rows_backward_bf16)(ops_bf16 *dsrc, ops_bf16 *dy, const int *pos, int n,
                                       int d);
    /* norms: mean, rstd fp32; dw, db fp32 (either may be NULL, as in fp32) */
    void (*layernorm_forward_bf16)(ops_bf16 *y, float *mean, float *rstd, const ops_bf16 *x,
                                   const ops_bf16 *w, const ops_bf16 *b, int T, int d, float eps);
    void (*layernorm_backward_bf16)(ops_bf16 *dx, float *dw, float *db, const ops_bf16 *dy,
                                    const ops_bf16 *x, const ops_bf16 *w, const float *mean,
                                    const float *rstd, int T, int d);
    /* with res: res += x is rounded to bf16 and that rounded sum is normalised (backward reads
     * it as u) */
    void (*rmsnorm_forward_bf16)(ops_bf16 *y, float *rstd, ops_bf16 *res, const ops_bf16 *x,
                                 const ops_bf16 *w, int T, int d, float eps);
    void (*rmsnorm_backward_bf16)(ops_bf16 *du, float *dw, const ops_bf16 *dy, const ops_bf16 *u,
                                  const ops_bf16 *w, const float *rstd, int T, int d);
    /* rotary in place, rounded once per element */
    void (*rope_forward_bf16)(ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                              const ops_rope *rope);
    void (*rope_backward_bf16)(ops_bf16 *dx, const int *pos, int T, int n_heads, int ldx,
                               const ops_rope *rope);
    /* attention: lse fp32. CUDA rounds P and dS to bf16 as tensor-core operands (FlashAttention
     * does the same) where head_dim is a multiple of 16 up to 128; the CPU twin keeps them fp32,
     * so the two agree to bf16 precision, not bit for bit. */
    void (*attention_forward_bf16)(ops_bf16 *o, float *lse, const ops_bf16 *q, const ops_bf16 *k,
                                   const ops_bf16 *v, const ops_attn *attn);
    void (*attention_backward_bf16)(ops_bf16 *dq, ops_bf16 *dk, ops_bf16 *dv,
                                    const ops_bf16 *dout, const ops_bf16 *q, const ops_bf16 *k,
                                    const ops_bf16 *v, const ops_bf16 *o, const float *lse,
                                    const ops_attn *attn);
    /* activations */
    void (*swiglu_forward_bf16)(ops_bf16 *y, const ops_bf16 *gate, const ops_bf16 *up, int T,
                                int n, int ld_in);
    void (*swiglu_backward_bf16)(ops_bf16 *dgate, ops_bf16 *dup, const ops_bf16 *dy,
                                 const ops_bf16 *gate, const ops_bf16 *up, int T, int n, int ld_in);
    void (*quickgelu_forward_bf16)(ops_bf16 *y, const ops_bf16 *x, size_t n);
    void (*quickgelu_backward_bf16)(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n);
    void (*gelu_forward_bf16)(ops_bf16 *y, const ops_bf16 *x, size_t n);
    void (*gelu_backward_bf16)(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n);
    /* lmhead_xent_f32 with bf16 h, w, dh and fp32 dw; logits, softmax and loss fp32; the
     * gradient tile (softmax - onehot) / normaliser is rounded to bf16 as the operand of the two
     * products, dh summed over the vocabulary in fp32 and rounded once. A label outside [0, V)
     * that is not OPS_LABEL_IGNORE makes the loss NaN. work [work_len] fp32 scratch, work_len >=
     * 2d + 68 (the CPU twin ignores it and uses its own). */
    void (*lmhead_xent_bf16)(float *loss, ops_bf16 *dh, float *dw, const ops_bf16 *h,
                             const ops_bf16 *w, const int *labels, int T, int d, int V,
                             float normaliser, float *work, size_t work_len);
    /* adamw_step_f32 on the fp32 master p, m, v with an fp32 gradient, also writing the updated
     * parameter rounded to bf16 into p16 [n] (the model's working copy) */
    void (*adamw_step_mixed)(float *p, ops_bf16 *p16, float *m, float *v, const float *g,
                             const float *grad_scale, size_t n, double lr, double beta1,
                             double beta2, double eps, double weight_decay, int step);

    /* ---- graphs: a sequence of ops recorded once and replayed (CUDA graphs) -------------------
     * All four NULL where a backend has none (cpu). Between graph_begin and graph_end the ops
     * this thread issues are RECORDED, NOT RUN: each keeps the arguments it was called with
     * (pointers, scalars, the descriptor structs by value, grad_norm's arrays copied) and every
     * graph_launch runs the recorded ops again with exactly those arguments, reading whatever the
     * memory they point to holds by then. So a caller may change the CONTENT of backend memory
     * between launches (mem_upload before the launch), never a host value an op took: one graph
     * per set of host values. No mem_alloc, mem_free, mem_upload, mem_download, mem_copy or sync
     * between begin and end: CUDA's stream capture fails on them, cpu-guarded aborts naming the
     * call. Each returns 0, or -1 with the reason in msg [len] (msg may be NULL). */
    int  (*graph_begin)(char *msg, size_t len);
    /* ends the capture: *graph holds the recorded ops, none of which has run yet */
    int  (*graph_end)(void **graph, char *msg, size_t len);
    /* issues the graph's ops, ordered with the ops and copies before and after it */
    int  (*graph_launch)(void *graph, char *msg, size_t len);
    void (*graph_free)(void *graph);   /* NULL graph: nothing */
} ops_table;

/* One value (host code: weight loading, tests): round to nearest even / widen exactly, as the
 * table's f32_to_bf16 and bf16_to_f32 do (kernels/cpu/bf16_cpu.c). */
ops_bf16 ops_bf16_from_f32(float x);
float    ops_bf16_to_f32(ops_bf16 x);

const ops_table *ops_cpu(void);
/* The CPU ops over memory that is mprotect()ed PROT_NONE except while one of its own entries
 * runs: any host access to backend memory outside the op table faults at once. A test backend
 * (kernels/cpu/ops_cpu_guarded.c): it stands in for a device backend where there is no GPU. */
const ops_table *ops_cpu_guarded(void);
/* "cpu" | "cpu-guarded" | "cuda" → the table; NULL for an unknown name or a backend this build
 * lacks (cuda without -Dcuda) */
const ops_table *ops_by_name(const char *name);
#if defined(ADAPT_HAVE_CUDA) && ADAPT_HAVE_CUDA
const ops_table *ops_cuda(void);
#endif

#endif
