/* bf16_cpu: the CPU twins of the op table's bf16 entries (kernels/cpu/bf16_cpu.c), declared for
 * the tables that bind them (ops_cpu.c, and a wrapping backend such as cpu-guarded). Argument
 * meanings and shapes are those of the entry of the same name in ops.h. */
#ifndef ADAPT_BF16_CPU_H
#define ADAPT_BF16_CPU_H

#include "ops.h"

#include <stddef.h>

/* The twins widen to fp32 scratch they malloc (the one exception to "ops allocate nothing": a
 * reference, not a fast path). Entries return void, so a failed allocation is recorded here
 * (the first one, with the op's name) and the op leaves its outputs untouched: 0, or -1 with
 * the message in msg [len] (msg may be NULL). A backend's sync entry should report it.
 * ops_cpu_bf16_clear forgets it (tests). */
int  ops_cpu_bf16_error(char *msg, size_t len);
void ops_cpu_bf16_clear(void);

void cpu_f32_to_bf16(ops_bf16 *y, const float *x, size_t n);
void cpu_bf16_to_f32(float *y, const ops_bf16 *x, size_t n);
void cpu_add_bf16(ops_bf16 *y, const ops_bf16 *a, const ops_bf16 *b, size_t n);
void cpu_axpy_bf16(ops_bf16 *y, float alpha, const ops_bf16 *x, size_t n);
void cpu_fill_bf16(ops_bf16 *y, float value, size_t n);
void cpu_matmul_bf16(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                     int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha, float beta,
                     const ops_bf16 *bias);
void cpu_matmul_bf16_f32out(float *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                            int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                            float beta);
void cpu_bias_add_bf16(ops_bf16 *y, const ops_bf16 *bias, int rows, int n, int ldy);
void cpu_bias_backward_bf16(float *dbias, const ops_bf16 *dy, int rows, int n, int ldy);
void cpu_embedding_forward_bf16(ops_bf16 *y, const ops_bf16 *w, const int *ids, int T, int d);
void cpu_embedding_backward_bf16(float *dw, const ops_bf16 *dy, const int *ids, int T, int d);
void cpu_scatter_rows_forward_bf16(ops_bf16 *y, const ops_bf16 *src, const int *pos, int n, int d);
void cpu_scatter_rows_backward_bf16(ops_bf16 *dsrc, ops_bf16 *dy, const int *pos, int n, int d);
void cpu_layernorm_forward_bf16(ops_bf16 *y, float *mean, float *rstd, const ops_bf16 *x,
                                const ops_bf16 *w, const ops_bf16 *b, int T, int d, float eps);
void cpu_layernorm_backward_bf16(ops_bf16 *dx, float *dw, float *db, const ops_bf16 *dy,
                                 const ops_bf16 *x, const ops_bf16 *w, const float *mean,
                                 const float *rstd, int T, int d);
void cpu_rmsnorm_forward_bf16(ops_bf16 *y, float *rstd, ops_bf16 *res, const ops_bf16 *x,
                              const ops_bf16 *w, int T, int d, float eps);
void cpu_rmsnorm_backward_bf16(ops_bf16 *du, float *dw, const ops_bf16 *dy, const ops_bf16 *u,
                               const ops_bf16 *w, const float *rstd, int T, int d);
void cpu_rope_forward_bf16(ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                           const ops_rope *rope);
void cpu_rope_backward_bf16(ops_bf16 *dx, const int *pos, int T, int n_heads, int ldx,
                            const ops_rope *rope);
void cpu_attention_forward_bf16(ops_bf16 *o, float *lse, const ops_bf16 *q, const ops_bf16 *k,
                                const ops_bf16 *v, const ops_attn *attn);
void cpu_attention_backward_bf16(ops_bf16 *dq, ops_bf16 *dk, ops_bf16 *dv, const ops_bf16 *dout,
                                 const ops_bf16 *q, const ops_bf16 *k, const ops_bf16 *v,
                                 const ops_bf16 *o, const float *lse, const ops_attn *attn);
void cpu_swiglu_forward_bf16(ops_bf16 *y, const ops_bf16 *gate, const ops_bf16 *up, int T, int n,
                             int ld_in);
void cpu_swiglu_backward_bf16(ops_bf16 *dgate, ops_bf16 *dup, const ops_bf16 *dy,
                              const ops_bf16 *gate, const ops_bf16 *up, int T, int n, int ld_in);
void cpu_quickgelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n);
void cpu_quickgelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n);
void cpu_gelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n);
void cpu_gelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n);
void cpu_lmhead_xent_bf16(float *loss, ops_bf16 *dh, float *dw, const ops_bf16 *h,
                          const ops_bf16 *w, const int *labels, int T, int d, int V,
                          float normaliser, float *work, size_t work_len);
void cpu_adamw_step_mixed(float *p, ops_bf16 *p16, float *m, float *v, const float *g,
                          const float *grad_scale, size_t n, double lr, double beta1, double beta2,
                          double eps, double weight_decay, int step);

#endif
