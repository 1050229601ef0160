/* ops_cuda.h: what the CUDA backend offers beyond ops.h's table: its error status, the bf16
 * matrix products with fused epilogues, and bf16-storage variants of the table's ops.
 *
 * The one idea: table entries return void, like their CPU twins, and CUDA reports most failures
 * late (a launch error surfaces at the next synchronisation), so the backend keeps the FIRST
 * failure it sees (file, line, call, CUDA's message) and the caller asks for it once per step
 * with ops_cuda_sync, which also waits for the device. Nothing here calls exit(). */
#ifndef ADAPT_OPS_CUDA_H
#define ADAPT_OPS_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ops.h"  /* ops_rope, ops_attn; C linkage for C++ includers too */

/* Waits for the device, then returns 0, or -1 with the first recorded failure written to
 * msg [len] (NUL-terminated; msg may be NULL). The failure stays recorded until
 * ops_cuda_clear_error: a CUDA context error is sticky anyway. */
int  ops_cuda_sync(char *msg, size_t len);
void ops_cuda_clear_error(void);

/* ---- device and streams ----------------------------------------------------------------------
 * Every table entry (ops, copies, cuBLASLt products) is issued on one compute stream; a second,
 * higher-priority side stream is there for collectives (NCCL), so gradient buckets reduce while
 * the backward goes on. Both are ordinary (blocking) streams: work on the legacy default stream
 * stays ordered with them. */
/* Binds this process to GPU `device` (cudaSetDevice) before the table's first use; creates the
 * compute stream, the side stream, their events and the cuBLASLt handle and workspace there.
 * 0, or -1 with msg [len] (a missing GPU, a device already bound to another). Without it the
 * table sets itself up on the current device at its first use. */
int   ops_cuda_set_device(int device, char *msg, size_t len);
void *ops_cuda_stream(void);        /* the cudaStream_t every table op runs on */
void *ops_cuda_side_stream(void);   /* a second stream, for collectives */
/* Stream-to-stream waits through events (the host does not wait): */
void  ops_cuda_side_wait_compute(void);  /* side stream waits for the work issued so far on compute */
void  ops_cuda_compute_wait_side(void);  /* compute stream waits for the work issued so far on side */

/* ops_bf16 (bf16 storage as 16-bit words) is ops.h's, as are the table's bf16 entries that
 * bind the functions below. */

/* Epilogues of the bf16 product, fused into cuBLASLt's output pass. No GELU epilogue: cuBLASLt's
 * is the tanh approximation, and Qwen2-VL's merger uses the exact (erf) GELU. */
typedef enum ops_cuda_epilogue {
    OPS_CUDA_EPI_NONE,  /* C = alpha op(A) op(B) + beta C */
    OPS_CUDA_EPI_BIAS,  /* the same, plus bias[n] on every row (a Linear's forward) */
} ops_cuda_epilogue;

/* matmul_f32's contract (ops.h) over bf16 A, B, C with fp32 accumulation; bias [n] is bf16 and
 * read only with OPS_CUDA_EPI_BIAS. */
void ops_cuda_matmul_bf16(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                          int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                          float beta, const ops_bf16 *bias, ops_cuda_epilogue epilogue);

/* The same with fp32 C (the weight gradient of a bf16 Linear accumulated into fp32 master
 * gradients: dW += dY^T X with beta = 1). No epilogue. */
void ops_cuda_matmul_bf16_f32out(float *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n,
                                 int k, int trans_a, int trans_b, int lda, int ldb, int ldc,
                                 float alpha, float beta);

/* ---- bf16 storage variants of the table's ops ----------------------------------------------
 * Same contracts as the ops.h entry of the same name (shapes, strides, += in backward), with
 * activations and weights stored as bf16 and all arithmetic in fp32. What stays fp32: row
 * statistics (mean, rstd), attention's lse, and every parameter gradient (dw, db of the norms,
 * dw of the embedding), which accumulate into the fp32 master gradients. */
void ops_cuda_f32_to_bf16(ops_bf16 *y, const float *x, size_t n);  /* round to nearest even */
void ops_cuda_bf16_to_f32(float *y, const ops_bf16 *x, size_t n);

void ops_cuda_embedding_forward_bf16(ops_bf16 *y, const ops_bf16 *w, const int *ids, int T, int d);
void ops_cuda_embedding_backward_bf16(float *dw, const ops_bf16 *dy, const int *ids, int T, int d);
void ops_cuda_scatter_rows_forward_bf16(ops_bf16 *y, const ops_bf16 *src, const int *pos, int n,
                                        int d);
void ops_cuda_scatter_rows_backward_bf16(ops_bf16 *dsrc, ops_bf16 *dy, const int *pos, int n, int d);

void ops_cuda_layernorm_forward_bf16(ops_bf16 *y, float *mean, float *rstd, const ops_bf16 *x,
                                     const ops_bf16 *w, const ops_bf16 *b, int T, int d, float eps);
void ops_cuda_layernorm_backward_bf16(ops_bf16 *dx, float *dw, float *db, const ops_bf16 *dy,
                                      const ops_bf16 *x, const ops_bf16 *w, const float *mean,
                                      const float *rstd, int T, int d);
/* with res: res += x is rounded to bf16 and that rounded sum is normalised (backward reads it) */
void ops_cuda_rmsnorm_forward_bf16(ops_bf16 *y, float *rstd, ops_bf16 *res, const ops_bf16 *x,
                                   const ops_bf16 *w, int T, int d, float eps);
void ops_cuda_rmsnorm_backward_bf16(ops_bf16 *du, float *dw, const ops_bf16 *dy, const ops_bf16 *u,
                                    const ops_bf16 *w, const float *rstd, int T, int d);

void ops_cuda_rope_forward_bf16(ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                                const ops_rope *rope);
void ops_cuda_rope_backward_bf16(ops_bf16 *dx, const int *pos, int T, int n_heads, int ldx,
                                 const ops_rope *rope);

/* bf16 attention runs on tensor cores (WMMA) when head_dim is a multiple of 16 up to 128, else
 * on the CUDA-core kernels; on = 0 forces the CUDA-core kernels (tests, A/B timings). Default 1. */
void ops_cuda_attention_tensor_cores(int on);
void ops_cuda_attention_forward_bf16(ops_bf16 *o, float *lse, const ops_bf16 *q, const ops_bf16 *k,
                                     const ops_bf16 *v, const ops_attn *attn);
void ops_cuda_attention_backward_bf16(ops_bf16 *dq, ops_bf16 *dk, ops_bf16 *dv,
                                      const ops_bf16 *dout, const ops_bf16 *q, const ops_bf16 *k,
                                      const ops_bf16 *v, const ops_bf16 *o, const float *lse,
                                      const ops_attn *attn);

void ops_cuda_swiglu_forward_bf16(ops_bf16 *y, const ops_bf16 *gate, const ops_bf16 *up, int T,
                                  int n, int ld_in);
void ops_cuda_swiglu_backward_bf16(ops_bf16 *dgate, ops_bf16 *dup, const ops_bf16 *dy,
                                   const ops_bf16 *gate, const ops_bf16 *up, int T, int n, int ld_in);
void ops_cuda_quickgelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n);
void ops_cuda_quickgelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n);
void ops_cuda_gelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n);
void ops_cuda_gelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n);

/* lmhead_xent_f32 with bf16 h, w and dh (dw fp32); logits, softmax and loss stay fp32.
 * work [work_len] fp32 scratch, work_len >= 2d + 68 (more is faster) */
void ops_cuda_lmhead_xent_bf16(float *loss, ops_bf16 *dh, float *dw, const ops_bf16 *h,
                               const ops_bf16 *w, const int *labels, int T, int d, int V,
                               float normaliser, float *work, size_t work_len);

/* adamw_step_f32 on the fp32 master p, m, v with an fp32 gradient, also writing the updated
 * parameter rounded to bf16 into p16 [n] (the model's working copy) in the same pass */
void ops_cuda_adamw_step_mixed(float *p, ops_bf16 *p16, float *m, float *v, const float *g,
                               const float *grad_scale, size_t n, double lr, double beta1,
                               double beta2, double eps, double weight_decay, int step);

/* One tensor of a multi-tensor AdamW step: fp32 master p, moments m, v, fp32 gradient g, all
 * [n] in device memory; p16 (bf16 working copy, [n]) or NULL; its own weight decay. */
typedef struct ops_cuda_adamw_tensor {
    float          *p, *m, *v;
    ops_bf16       *p16;
    const float    *g;
    size_t          n;
    double          weight_decay;
} ops_cuda_adamw_tensor;

/* adamw_step_f32 on count tensors in a few launches (tensors is a host array); the same
 * arithmetic, bit for bit, as one adamw_step_f32 / ops_cuda_adamw_step_mixed per tensor */
void ops_cuda_adamw_multi(const ops_cuda_adamw_tensor *tensors, int count, const float *grad_scale,
                          double lr, double beta1, double beta2, double eps, int step);

#ifdef __cplusplus
}
#endif

#endif
