/* kernels_cpu: the CPU kernels behind ops_cpu's table, written once over a `real` type.
 *
 * The one idea: every kernel file in kernels/cpu/ is compiled twice from the same source, as
 * float (cpu_*_f32, the shipped ops) and, with ADAPT_CPU_F64 defined, as double (cpu_*_f64, a
 * test-only library). The gradient checks run finite differences on the double build, so the
 * math they check is the math that ships, not a second transcription of it. Only the table
 * (ops_cpu.c) is float-only. Argument meanings and shapes are those of the matching entry in
 * ops.h. */
#ifndef ADAPT_KERNELS_CPU_H
#define ADAPT_KERNELS_CPU_H

#include "adapt_config.h"
#include "ops.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef ADAPT_CPU_F64
typedef double real;
#define CPU_FN(name) cpu_##name##_f64
#else
typedef float real;
#define CPU_FN(name) cpu_##name##_f32
#endif

/* Hot tile loops are cloned for AVX2+FMA and dispatched at load time, so one binary runs on any
 * x86-64 yet uses the wide units where they exist. Outlined OpenMP bodies do not inherit the
 * clones, which is why the tile routines that carry them are plain serial functions. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define CPU_VEC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CPU_VEC_CLONES
#endif

/* exp for the hot loops: the float build uses a branch-free polynomial the compiler vectorises
 * (libm's expf is a scalar call and would dominate softmax and the loss); relative error < 2e-7
 * on the range that matters. The double build keeps libm's exp, the reference. */
#ifdef ADAPT_CPU_F64
static inline double cpu_sqrt(double x) { return sqrt(x); }
static inline double cpu_exp(double x) { return exp(x); }
#else
static inline float cpu_sqrt(float x) { return sqrtf(x); }

static inline float cpu_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* x = n ln2 + r, |r| <= ln2/2; the magic constant rounds to nearest without a libm call */
    float n = x * 1.44269504f + 12582912.0f;
    n -= 12582912.0f;
    float r = x - n * 0.693145752f;
    r -= n * 1.42860677e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    return p * s.f;
}
#endif

/* ---- matmul_cpu.c ---- */
void CPU_FN(matmul)(real *c, const real *a, const real *b, int m, int n, int k, int trans_a,
                    int trans_b, int lda, int ldb, int ldc, real alpha, real beta);
/* the cache-blocked fallback, one part of C per OpenMP thread; what matmul runs without BLAS */
void CPU_FN(matmul_blocked)(real *c, const real *a, const real *b, int m, int n, int k,
                            int trans_a, int trans_b, int lda, int ldb, int ldc, real alpha,
                            real beta);
/* the same, one thread: for callers already inside a parallel region (attention tiles) */
void CPU_FN(matmul_serial)(real *c, const real *a, const real *b, int m, int n, int k,
                           int trans_a, int trans_b, int lda, int ldb, int ldc, real alpha,
                           real beta);
void CPU_FN(bias_add)(real *y, const real *bias, int rows, int n, int ldy);
void CPU_FN(bias_backward)(real *dbias, const real *dy, int rows, int n, int ldy);

/* ---- sgemm_avx2_cpu.c (float library only): matmul's engine for large products on one
 * thread's part of C, same arguments as matmul; 0 when it cannot run (no AVX2+FMA, or no memory
 * for its packing buffers), C untouched then ---- */
int cpu_sgemm_avx2_supported(void);
int cpu_sgemm_avx2(float *c, const float *a, const float *b, int m, int n, int k, int trans_a,
                   int trans_b, int lda, int ldb, int ldc, float alpha, float beta);

/* ---- embedding_cpu.c ---- */
void CPU_FN(embedding_forward)(real *y, const real *w, const int *ids, int T, int d);
void CPU_FN(embedding_backward)(real *dw, const real *dy, const int *ids, int T, int d);
void CPU_FN(scatter_rows_forward)(real *y, const real *src, const int *pos, int n, int d);
void CPU_FN(scatter_rows_backward)(real *dsrc, real *dy, const int *pos, int n, int d);

/* ---- norm_cpu.c ---- */
void CPU_FN(layernorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *w,
                               const real *b, int T, int d, float eps);
void CPU_FN(layernorm_backward)(real *dx, real *dw, real *db, const real *dy, const real *x,
                                const real *w, const real *mean, const real *rstd, int T, int d);
void CPU_FN(rmsnorm_forward)(real *y, real *rstd, real *res, const real *x, const real *w, int T,
                             int d, float eps);
void CPU_FN(rmsnorm_backward)(real *du, real *dw, const real *dy, const real *u, const real *w,
                              const real *rstd, int T, int d);

/* ---- rope_cpu.c ---- */
void CPU_FN(rope_forward)(real *x, const int *pos, int T, int n_heads, int ldx,
                          const ops_rope *rope);
void CPU_FN(rope_backward)(real *dx, const int *pos, int T, int n_heads, int ldx,
                           const ops_rope *rope);

/* ---- attention_cpu.c ---- */
void CPU_FN(attention_forward)(real *o, real *lse, const real *q, const real *k, const real *v,
                               const ops_attn *attn);
void CPU_FN(attention_backward)(real *dq, real *dk, real *dv, const real *dout, const real *q,
                                const real *k, const real *v, const real *o, const real *lse,
                                const ops_attn *attn);

/* ---- activation_cpu.c ---- */
void CPU_FN(swiglu_forward)(real *y, const real *gate, const real *up, int T, int n, int ld_in);
void CPU_FN(swiglu_backward)(real *dgate, real *dup, const real *dy, const real *gate,
                             const real *up, int T, int n, int ld_in);
void CPU_FN(quickgelu_forward)(real *y, const real *x, size_t n);
void CPU_FN(quickgelu_backward)(real *dx, const real *dy, const real *x, size_t n);
void CPU_FN(gelu_forward)(real *y, const real *x, size_t n);
void CPU_FN(gelu_backward)(real *dx, const real *dy, const real *x, size_t n);

/* ---- loss_cpu.c ---- */
void CPU_FN(lmhead_xent)(real *loss, real *dh, real *dw, const real *h, const real *w,
                         const int *labels, int T, int d, int V, float normaliser, real *work,
                         size_t work_len);

/* ---- optim_cpu.c ---- */
void CPU_FN(grad_norm)(real *norm, real *scale, const real *const *tensors, const size_t *lens,
                       int count, float max_norm);
void CPU_FN(adamw_step)(real *p, real *m, real *v, const real *g, const real *grad_scale,
                        size_t n, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int step);

#endif
