/* bf16_cpu: the CPU twins of the op table's bf16 entries: the reference the CUDA bf16 kernels
 * are tested against, and what lets a mixed-precision model run (and be tested) without a GPU.
 *
 * The one idea: a twin widens its bf16 inputs exactly to fp32 scratch, runs the fp32 CPU op of
 * the same stem on them, and rounds each output to bf16 once, where it is stored: exactly the
 * points where the CUDA kernels round (cuda_ld / cuda_st around fp32 arithmetic). So a twin's
 * result is, bit for bit, round(fp32 op(widened inputs)), and the only places it can differ from
 * CUDA beyond fp32 summation order are the ones ops.h names (attention's bf16 tensor-core
 * operands). Where CUDA rounds mid-way, the twin rounds at the same place: the fused residual sum
 * of RMSNorm, and the loss's gradient tile (both below).
 *
 * Scratch: twins malloc it (calloc: the gaps of strided slices are zeros) and free it before
 * returning, the one exception to "ops allocate nothing". A failed allocation is recorded
 * (ops_cpu_bf16_error) and leaves the outputs untouched. Element-wise twins instead work through
 * stack chunks, which also lets them thread over chunks.
 *
 * Strided outputs are narrowed only over the columns the op writes: dgate and dup of a fused
 * gate|up buffer, or q and k of a qkv buffer, are interleaved slices of one allocation, and a
 * twin must not write its neighbour's columns (not even with the same bits). */
#include "bf16_cpu.h"
#include "kernels_cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- rounding ---------------------------------------------------------------------------- */

/* Round to nearest even on the bit pattern: adding 0x7fff plus the lowest kept bit carries into
 * the kept half exactly when the dropped half is above the midpoint, or at it with the kept half
 * odd. The carry may run into the exponent, which is right: the largest mantissa rounds up to
 * the next binade, and past the largest finite value to inf. Subnormals need nothing special.
 * NaN is tested first, or a payload in the dropped half only could carry into inf: it keeps its
 * sign and top payload bits, with the quiet bit set so the result is a NaN for any payload. */
static inline ops_bf16 bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ops_bf16)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ops_bf16)(u >> 16);
}

static inline float bf16_widen(ops_bf16 h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

ops_bf16 ops_bf16_from_f32(float x) { return bf16_round(x); }
float ops_bf16_to_f32(ops_bf16 x) { return bf16_widen(x); }

/* ---- the failure record ------------------------------------------------------------------ */

/* The first failure only (later ones are usually its consequences); the table is driven from one
 * host thread, like every backend's. */
static char bf16_error[256];

int ops_cpu_bf16_error(char *msg, size_t len)
{
    if (!bf16_error[0]) return 0;
    if (msg && len) snprintf(msg, len, "%s", bf16_error);
    return -1;
}

void ops_cpu_bf16_clear(void) { bf16_error[0] = 0; }

/* ---- scratch ----------------------------------------------------------------------------- */

enum { SCR_MAX = 10, EW_CHUNK = 1024 };

/* One op's scratch buffers, freed together. */
typedef struct scr {
    const char *op;
    float      *p[SCR_MAX];
    int         n, failed;
} scr;

static float *scr_zeros(scr *s, size_t count)
{
    float *p = s->n < SCR_MAX ? calloc(count ? count : 1, sizeof *p) : NULL;
    if (!p) {
        if (!s->failed && !bf16_error[0])
            snprintf(bf16_error, sizeof bf16_error,
                     "cpu bf16 %s: cannot allocate %zu floats of fp32 scratch (out of memory); "
                     "its outputs were not written", s->op, count);
        s->failed = 1;
        return NULL;
    }
    s->p[s->n++] = p;
    return p;
}

static void scr_free(scr *s)
{
    for (int i = 0; i < s->n; i++) free(s->p[i]);
    s->n = 0;
}

/* elements spanned by [rows, cols] with row stride ld: the scratch copy keeps the stride, so the
 * fp32 op takes the very same ld arguments */
static size_t span(int rows, int cols, int ld)
{
    if (rows <= 0 || cols <= 0) return 0;
    return (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

static void widen_rows(float *dst, const ops_bf16 *src, int rows, int cols, int ld)
{
#pragma omp parallel for if ((size_t)rows * cols > (1u << 16))
    for (int r = 0; r < rows; r++) {
        const ops_bf16 *s = src + (size_t)r * ld;
        float *d = dst + (size_t)r * ld;
        for (int j = 0; j < cols; j++) d[j] = bf16_widen(s[j]);
    }
}

static void narrow_rows(ops_bf16 *dst, const float *src, int rows, int cols, int ld)
{
#pragma omp parallel for if ((size_t)rows * cols > (1u << 16))
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        ops_bf16 *d = dst + (size_t)r * ld;
        for (int j = 0; j < cols; j++) d[j] = bf16_round(s[j]);
    }
}

/* a widened copy of [rows, cols] (stride ld) of src; NULL src gives NULL (an optional input) */
static float *scr_widen(scr *s, const ops_bf16 *src, int rows, int cols, int ld)
{
    if (!src) return NULL;
    float *p = scr_zeros(s, span(rows, cols, ld));
    if (p) widen_rows(p, src, rows, cols, ld);
    return p;
}

/* ---- conversions and element-wise ops ----------------------------------------------------- */

void cpu_f32_to_bf16(ops_bf16 *y, const float *x, size_t n)
{
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] = bf16_round(x[i]);
}

void cpu_bf16_to_f32(float *y, const ops_bf16 *x, size_t n)
{
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] = bf16_widen(x[i]);
}

/* one IEEE addition, correctly rounded whatever the compiler does: the fp32 op's exact result */
void cpu_add_bf16(ops_bf16 *y, const ops_bf16 *a, const ops_bf16 *b, size_t n)
{
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] = bf16_round(bf16_widen(a[i]) + bf16_widen(b[i]));
}

/* An element-wise twin in stack chunks: the fp32 op runs on each widened chunk, so a multiply-add
 * is contracted (or not) exactly as in the fp32 op, and the chunks spread over the threads. */
void cpu_axpy_bf16(ops_bf16 *y, float alpha, const ops_bf16 *x, size_t n)
{
    const ops_table *f32 = ops_cpu();
#pragma omp parallel for if (n > (1u << 16))
    for (size_t c0 = 0; c0 < n; c0 += EW_CHUNK) {
        float ys[EW_CHUNK], xs[EW_CHUNK];
        size_t nc = n - c0 < EW_CHUNK ? n - c0 : EW_CHUNK;
        for (size_t i = 0; i < nc; i++) {
            ys[i] = bf16_widen(y[c0 + i]);
            xs[i] = bf16_widen(x[c0 + i]);
        }
        f32->axpy_f32(ys, alpha, xs, nc);
        for (size_t i = 0; i < nc; i++) y[c0 + i] = bf16_round(ys[i]);
    }
}

void cpu_fill_bf16(ops_bf16 *y, float value, size_t n)
{
    ops_bf16 v = bf16_round(value);
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] = v;
}

/* y = f(x) for the unary activations, chunked as axpy */
static void unary_forward(void (*f)(float *, const float *, size_t), ops_bf16 *y,
                          const ops_bf16 *x, size_t n)
{
#pragma omp parallel for if (n > (1u << 16))
    for (size_t c0 = 0; c0 < n; c0 += EW_CHUNK) {
        float ys[EW_CHUNK], xs[EW_CHUNK];
        size_t nc = n - c0 < EW_CHUNK ? n - c0 : EW_CHUNK;
        for (size_t i = 0; i < nc; i++) xs[i] = bf16_widen(x[c0 + i]);
        f(ys, xs, nc);
        for (size_t i = 0; i < nc; i++) y[c0 + i] = bf16_round(ys[i]);
    }
}

/* dx += dy f'(x), one rounding of the sum */
static void unary_backward(void (*f)(float *, const float *, const float *, size_t), ops_bf16 *dx,
                           const ops_bf16 *dy, const ops_bf16 *x, size_t n)
{
#pragma omp parallel for if (n > (1u << 16))
    for (size_t c0 = 0; c0 < n; c0 += EW_CHUNK) {
        float dxs[EW_CHUNK], dys[EW_CHUNK], xs[EW_CHUNK];
        size_t nc = n - c0 < EW_CHUNK ? n - c0 : EW_CHUNK;
        for (size_t i = 0; i < nc; i++) {
            dxs[i] = bf16_widen(dx[c0 + i]);
            dys[i] = bf16_widen(dy[c0 + i]);
            xs[i] = bf16_widen(x[c0 + i]);
        }
        f(dxs, dys, xs, nc);
        for (size_t i = 0; i < nc; i++) dx[c0 + i] = bf16_round(dxs[i]);
    }
}

void cpu_quickgelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n)
{
    unary_forward(cpu_quickgelu_forward_f32, y, x, n);
}

void cpu_quickgelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n)
{
    unary_backward(cpu_quickgelu_backward_f32, dx, dy, x, n);
}

void cpu_gelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n)
{
    unary_forward(cpu_gelu_forward_f32, y, x, n);
}

void cpu_gelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n)
{
    unary_backward(cpu_gelu_backward_f32, dx, dy, x, n);
}

/* ---- products ------------------------------------------------------------------------------ */

/* fp32 accumulation of bf16-exact operands: what cuBLASLt computes with CUBLAS_COMPUTE_32F, up
 * to summation order. The bias is added in fp32 before the one rounding, as the epilogue does. */
void cpu_matmul_bf16(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                     int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha, float beta,
                     const ops_bf16 *bias)
{
    if (m <= 0 || n <= 0) return;
    scr s = {.op = "matmul_bf16"};
    float *a32 = scr_widen(&s, a, trans_a ? k : m, trans_a ? m : k, lda);
    float *b32 = scr_widen(&s, b, trans_b ? n : k, trans_b ? k : n, ldb);
    /* beta = 0 ignores C (NaNs included): zeros stand in for it */
    float *c32 = beta != 0 ? scr_widen(&s, c, m, n, ldc) : scr_zeros(&s, span(m, n, ldc));
    float *bias32 = scr_widen(&s, bias, 1, n, n);
    if (!s.failed) {
        cpu_matmul_f32(c32, a32, b32, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta);
        if (bias32) cpu_bias_add_f32(c32, bias32, m, n, ldc);
        narrow_rows(c, c32, m, n, ldc);
    }
    scr_free(&s);
}

void cpu_matmul_bf16_f32out(float *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                            int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                            float beta)
{
    if (m <= 0 || n <= 0) return;
    scr s = {.op = "matmul_bf16_f32out"};
    float *a32 = scr_widen(&s, a, trans_a ? k : m, trans_a ? m : k, lda);
    float *b32 = scr_widen(&s, b, trans_b ? n : k, trans_b ? k : n, ldb);
    if (!s.failed)
        cpu_matmul_f32(c, a32, b32, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta);
    scr_free(&s);
}

/* one IEEE addition per element, as add_bf16 */
void cpu_bias_add_bf16(ops_bf16 *y, const ops_bf16 *bias, int rows, int n, int ldy)
{
#pragma omp parallel for if ((size_t)rows * n > (1u << 16))
    for (int r = 0; r < rows; r++) {
        ops_bf16 *yr = y + (size_t)r * ldy;
        for (int j = 0; j < n; j++) yr[j] = bf16_round(bf16_widen(yr[j]) + bf16_widen(bias[j]));
    }
}

void cpu_bias_backward_bf16(float *dbias, const ops_bf16 *dy, int rows, int n, int ldy)
{
    if (rows <= 0 || n <= 0) return;
    scr s = {.op = "bias_backward_bf16"};
    float *dy32 = scr_widen(&s, dy, rows, n, ldy);
    if (!s.failed) cpu_bias_backward_f32(dbias, dy32, rows, n, ldy);
    scr_free(&s);
}

/* ---- embedding and scatter: copies are exact, so they need no fp32 detour ------------------ */

void cpu_embedding_forward_bf16(ops_bf16 *y, const ops_bf16 *w, const int *ids, int T, int d)
{
#pragma omp parallel for if ((size_t)T * d > (1u << 16))
    for (int t = 0; t < T; t++)
        memcpy(y + (size_t)t * d, w + (size_t)ids[t] * d, (size_t)d * sizeof *y);
}

void cpu_embedding_backward_bf16(float *dw, const ops_bf16 *dy, const int *ids, int T, int d)
{
    if (T <= 0 || d <= 0) return;
    scr s = {.op = "embedding_backward_bf16"};
    float *dy32 = scr_widen(&s, dy, T, d, d);
    if (!s.failed) cpu_embedding_backward_f32(dw, dy32, ids, T, d);
    scr_free(&s);
}

void cpu_scatter_rows_forward_bf16(ops_bf16 *y, const ops_bf16 *src, const int *pos, int n, int d)
{
#pragma omp parallel for if ((size_t)n * d > (1u << 16))
    for (int i = 0; i < n; i++)
        memcpy(y + (size_t)pos[i] * d, src + (size_t)i * d, (size_t)d * sizeof *y);
}

/* dsrc += dy[pos] is one IEEE addition per element; pos rows are distinct, one writer each */
void cpu_scatter_rows_backward_bf16(ops_bf16 *dsrc, ops_bf16 *dy, const int *pos, int n, int d)
{
#pragma omp parallel for if ((size_t)n * d > (1u << 16))
    for (int i = 0; i < n; i++) {
        ops_bf16 *g = dy + (size_t)pos[i] * d, *dst = dsrc + (size_t)i * d;
        for (int j = 0; j < d; j++) {
            dst[j] = bf16_round(bf16_widen(dst[j]) + bf16_widen(g[j]));
            g[j] = 0;  /* +0.0 in bf16 as in fp32 */
        }
    }
}

/* ---- normalisation ------------------------------------------------------------------------- */

void cpu_layernorm_forward_bf16(ops_bf16 *y, float *mean, float *rstd, const ops_bf16 *x,
                                const ops_bf16 *w, const ops_bf16 *b, int T, int d, float eps)
{
    if (T <= 0 || d <= 0) return;
    scr s = {.op = "layernorm_forward_bf16"};
    float *x32 = scr_widen(&s, x, T, d, d), *w32 = scr_widen(&s, w, 1, d, d);
    float *b32 = scr_widen(&s, b, 1, d, d), *y32 = scr_zeros(&s, span(T, d, d));
    if (!s.failed) {
        cpu_layernorm_forward_f32(y32, mean, rstd, x32, w32, b32, T, d, eps);
        narrow_rows(y, y32, T, d, d);
    }
    scr_free(&s);
}

void cpu_layernorm_backward_bf16(ops_bf16 *dx, float *dw, float *db, const ops_bf16 *dy,
                                 const ops_bf16 *x, const ops_bf16 *w, const float *mean,
                                 const float *rstd, int T, int d)
{
    if (T <= 0 || d <= 0) return;
    scr s = {.op = "layernorm_backward_bf16"};
    float *dx32 = scr_widen(&s, dx, T, d, d), *dy32 = scr_widen(&s, dy, T, d, d);
    float *x32 = scr_widen(&s, x, T, d, d), *w32 = scr_widen(&s, w, 1, d, d);
    if (!s.failed) {
        cpu_layernorm_backward_f32(dx32, dw, db, dy32, x32, w32, mean, rstd, T, d);
        narrow_rows(dx, dx32, T, d, d);
    }
    scr_free(&s);
}

/* The fused residual add rounds res + x to bf16 first and normalises that rounded sum (the CUDA
 * kernel does the same, so forward and backward, which reads res, see the same u). */
void cpu_rmsnorm_forward_bf16(ops_bf16 *y, float *rstd, ops_bf16 *res, const ops_bf16 *x,
                              const ops_bf16 *w, int T, int d, float eps)
{
    if (T <= 0 || d <= 0) return;
    scr s = {.op = "rmsnorm_forward_bf16"};
    float *u32 = scr_zeros(&s, span(T, d, d)), *w32 = scr_widen(&s, w, 1, d, d);
    float *y32 = scr_zeros(&s, span(T, d, d));
    if (!s.failed) {
        if (res) cpu_add_bf16(res, res, x, (size_t)T * d);
        widen_rows(u32, res ? res : x, T, d, d);
        cpu_rmsnorm_forward_f32(y32, rstd, NULL, u32, w32, T, d, eps);
        narrow_rows(y, y32, T, d, d);
    }
    scr_free(&s);
}

void cpu_rmsnorm_backward_bf16(ops_bf16 *du, float *dw, const ops_bf16 *dy, const ops_bf16 *u,
                               const ops_bf16 *w, const float *rstd, int T, int d)
{
    if (T <= 0 || d <= 0) return;
    scr s = {.op = "rmsnorm_backward_bf16"};
    float *du32 = scr_widen(&s, du, T, d, d), *dy32 = scr_widen(&s, dy, T, d, d);
    float *u32 = scr_widen(&s, u, T, d, d), *w32 = scr_widen(&s, w, 1, d, d);
    if (!s.failed) {
        cpu_rmsnorm_backward_f32(du32, dw, dy32, u32, w32, rstd, T, d);
        narrow_rows(du, du32, T, d, d);
    }
    scr_free(&s);
}

/* ---- rotary ------------------------------------------------------------------------------- */

static void rope_bf16(int dir, ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                      const ops_rope *rope)
{
    int cols = n_heads * rope->head_dim;
    if (T <= 0 || cols <= 0) return;
    scr s = {.op = dir > 0 ? "rope_forward_bf16" : "rope_backward_bf16"};
    float *x32 = scr_widen(&s, x, T, cols, ldx);
    if (!s.failed) {
        if (dir > 0)
            cpu_rope_forward_f32(x32, pos, T, n_heads, ldx, rope);
        else
            cpu_rope_backward_f32(x32, pos, T, n_heads, ldx, rope);
        narrow_rows(x, x32, T, cols, ldx);
    }
    scr_free(&s);
}

void cpu_rope_forward_bf16(ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                           const ops_rope *rope)
{
    rope_bf16(1, x, pos, T, n_heads, ldx, rope);
}

void cpu_rope_backward_bf16(ops_bf16 *dx, const int *pos, int T, int n_heads, int ldx,
                            const ops_rope *rope)
{
    rope_bf16(-1, dx, pos, T, n_heads, ldx, rope);
}

/* ---- attention ---------------------------------------------------------------------------- */

void cpu_attention_forward_bf16(ops_bf16 *o, float *lse, const ops_bf16 *q, const ops_bf16 *k,
                                const ops_bf16 *v, const ops_attn *a)
{
    int T = a->total_tokens, qc = a->num_heads * a->head_dim, kc = a->num_kv_heads * a->head_dim;
    if (T <= 0 || qc <= 0) return;
    scr s = {.op = "attention_forward_bf16"};
    float *q32 = scr_widen(&s, q, T, qc, a->ldq), *k32 = scr_widen(&s, k, T, kc, a->ldk);
    float *v32 = scr_widen(&s, v, T, kc, a->ldv), *o32 = scr_zeros(&s, span(T, qc, a->ldo));
    if (!s.failed) {
        cpu_attention_forward_f32(o32, lse, q32, k32, v32, a);
        narrow_rows(o, o32, T, qc, a->ldo);
    }
    scr_free(&s);
}

void cpu_attention_backward_bf16(ops_bf16 *dq, ops_bf16 *dk, ops_bf16 *dv, const ops_bf16 *dout,
                                 const ops_bf16 *q, const ops_bf16 *k, const ops_bf16 *v,
                                 const ops_bf16 *o, const float *lse, const ops_attn *a)
{
    int T = a->total_tokens, qc = a->num_heads * a->head_dim, kc = a->num_kv_heads * a->head_dim;
    if (T <= 0 || qc <= 0) return;
    scr s = {.op = "attention_backward_bf16"};
    float *dq32 = scr_widen(&s, dq, T, qc, a->ldq), *dk32 = scr_widen(&s, dk, T, kc, a->ldk);
    float *dv32 = scr_widen(&s, dv, T, kc, a->ldv), *do32 = scr_widen(&s, dout, T, qc, a->ldo);
    float *q32 = scr_widen(&s, q, T, qc, a->ldq), *k32 = scr_widen(&s, k, T, kc, a->ldk);
    float *v32 = scr_widen(&s, v, T, kc, a->ldv), *o32 = scr_widen(&s, o, T, qc, a->ldo);
    if (!s.failed) {
        cpu_attention_backward_f32(dq32, dk32, dv32, do32, q32, k32, v32, o32, lse, a);
        narrow_rows(dq, dq32, T, qc, a->ldq);
        narrow_rows(dk, dk32, T, kc, a->ldk);
        narrow_rows(dv, dv32, T, kc, a->ldv);
    }
    scr_free(&s);
}

/* ---- SwiGLU (gate and up are column slices of rows of ld_in) ------------------------------ */

void cpu_swiglu_forward_bf16(ops_bf16 *y, const ops_bf16 *gate, const ops_bf16 *up, int T, int n,
                             int ld_in)
{
    if (T <= 0 || n <= 0) return;
    scr s = {.op = "swiglu_forward_bf16"};
    float *g32 = scr_widen(&s, gate, T, n, ld_in), *u32 = scr_widen(&s, up, T, n, ld_in);
    float *y32 = scr_zeros(&s, span(T, n, n));
    if (!s.failed) {
        cpu_swiglu_forward_f32(y32, g32, u32, T, n, ld_in);
        narrow_rows(y, y32, T, n, n);
    }
    scr_free(&s);
}

void cpu_swiglu_backward_bf16(ops_bf16 *dgate, ops_bf16 *dup, const ops_bf16 *dy,
                              const ops_bf16 *gate, const ops_bf16 *up, int T, int n, int ld_in)
{
    if (T <= 0 || n <= 0) return;
    scr s = {.op = "swiglu_backward_bf16"};
    float *dg32 = scr_widen(&s, dgate, T, n, ld_in), *du32 = scr_widen(&s, dup, T, n, ld_in);
    float *dy32 = scr_widen(&s, dy, T, n, n), *g32 = scr_widen(&s, gate, T, n, ld_in);
    float *u32 = scr_widen(&s, up, T, n, ld_in);
    if (!s.failed) {
        cpu_swiglu_backward_f32(dg32, du32, dy32, g32, u32, T, n, ld_in);
        narrow_rows(dgate, dg32, T, n, ld_in);
        narrow_rows(dup, du32, T, n, ld_in);
    }
    scr_free(&s);
}

/* ---- LM head + cross-entropy ------------------------------------------------------------------
 * Not the fp32 op on widened copies: the CUDA kernel rounds the gradient tile to bf16 before its
 * two products and rounds dh once per row chunk, and the twin must round there too. So this is
 * the fp32 op's algorithm (masked rows gathered out, row chunks, vocabulary tiles, online
 * logsumexp, the second sweep turning logits into (softmax - onehot) / normaliser) with those
 * two roundings, libm's expf / logf (as CUDA's full-precision ones) and the weight tile widened
 * into scratch as it is swept. A label outside [0, V) that is not OPS_LABEL_IGNORE gives the
 * row a NaN target, hence a NaN loss, as on CUDA. */
enum { XB_ROWS = 256, XB_TILE = 1 << 21 };  /* rows per chunk; floats per logits tile */

typedef struct xb_chunk {
    float *hc, *dhc, *wc, *tile, *m, *l, *tgt;
    int    idx[XB_ROWS], lab[XB_ROWS];
    int    nr, vc, d, V;
} xb_chunk;

static void xb_logits(xb_chunk *c, const ops_bf16 *w, int v0, int nv)
{
    widen_rows(c->wc, w + (size_t)v0 * c->d, nv, c->d, c->d);
    cpu_matmul_f32(c->tile, c->hc, c->wc, c->nr, nv, c->d, 0, 1, c->d, c->d, nv, 1, 0);
}

static void xb_fold(xb_chunk *c, int v0, int nv)
{
#pragma omp parallel for if ((size_t)c->nr * nv > (1u << 15))
    for (int r = 0; r < c->nr; r++) {
        const float *tr = c->tile + (size_t)r * nv;
        float mx = -INFINITY;
        for (int j = 0; j < nv; j++) mx = fmaxf(mx, tr[j]);
        float mold = c->m[r], mnew = fmaxf(mold, mx), sum = 0;
        for (int j = 0; j < nv; j++) sum += expf(tr[j] - mnew);
        float corr = mold == -INFINITY ? 0.0f : expf(mold - mnew);
        c->l[r] = c->l[r] * corr + sum;
        c->m[r] = mnew;
        if (c->lab[r] >= v0 && c->lab[r] < v0 + nv) c->tgt[r] = tr[c->lab[r] - v0];
    }
}

/* logits -> dloss/dlogits, rounded to bf16 (kept widened: the products' fp32 operands) */
static void xb_grad(xb_chunk *c, int v0, int nv, float inv_norm)
{
#pragma omp parallel for if ((size_t)c->nr * nv > (1u << 15))
    for (int r = 0; r < c->nr; r++) {
        float *tr = c->tile + (size_t)r * nv;
        float lse = c->m[r] + logf(c->l[r]);
        for (int j = 0; j < nv; j++) {
            float g = expf(tr[j] - lse) * inv_norm;
            if (c->lab[r] == v0 + j) g -= inv_norm;
            tr[j] = bf16_widen(bf16_round(g));
        }
    }
}

static double xb_chunk_run(xb_chunk *c, ops_bf16 *dh, float *dw, const ops_bf16 *w,
                           float inv_norm)
{
    int nr = c->nr, d = c->d, V = c->V, one_tile = c->vc >= V;
    for (int r = 0; r < nr; r++) {
        c->m[r] = -INFINITY;
        c->l[r] = 0;
        c->tgt[r] = c->lab[r] >= 0 && c->lab[r] < V ? 0.0f : NAN;
    }
    for (int v0 = 0; v0 < V; v0 += c->vc) {
        int nv = V - v0 < c->vc ? V - v0 : c->vc;
        xb_logits(c, w, v0, nv);
        xb_fold(c, v0, nv);
    }
    double loss = 0;
    for (int r = 0; r < nr; r++) loss += (double)c->m[r] + log((double)c->l[r]) - c->tgt[r];
    if (!dh) return loss;
    memset(c->dhc, 0, (size_t)nr * d * sizeof *c->dhc);
    for (int v0 = 0; v0 < V; v0 += c->vc) {
        int nv = V - v0 < c->vc ? V - v0 : c->vc;
        if (!one_tile) xb_logits(c, w, v0, nv);
        xb_grad(c, v0, nv, inv_norm);
        cpu_matmul_f32(c->dhc, c->tile, c->wc, nr, d, nv, 0, 0, nv, d, d, 1, 1);
        cpu_matmul_f32(dw + (size_t)v0 * d, c->tile, c->hc, nv, d, nr, 1, 0, nv, d, d, 1, 1);
    }
    for (int r = 0; r < nr; r++) {
        ops_bf16 *dst = dh + (size_t)c->idx[r] * d;
        const float *src = c->dhc + (size_t)r * d;
        for (int j = 0; j < d; j++) dst[j] = bf16_round(bf16_widen(dst[j]) + src[j]);
    }
    return loss;
}

void cpu_lmhead_xent_bf16(float *loss, ops_bf16 *dh, float *dw, const ops_bf16 *h,
                          const ops_bf16 *w, const int *labels, int T, int d, int V,
                          float normaliser, float *work, size_t work_len)
{
    (void)work;  /* a reference twin: its own scratch (ops.h) */
    (void)work_len;
    loss[0] = 0;
    if (normaliser <= 0 || T <= 0 || d <= 0 || V <= 0) return;
    if ((dh == NULL) != (dw == NULL)) {
        if (!bf16_error[0])
            snprintf(bf16_error, sizeof bf16_error,
                     "cpu bf16 lmhead_xent_bf16: dh and dw must both be set or both NULL");
        loss[0] = NAN;
        return;
    }
    xb_chunk c;
    memset(&c, 0, sizeof c);
    c.d = d;
    c.V = V;
    size_t vc = XB_TILE / XB_ROWS;
    c.vc = vc > (size_t)V ? V : (int)vc;
    scr s = {.op = "lmhead_xent_bf16"};
    c.hc = scr_zeros(&s, (size_t)XB_ROWS * d);
    c.dhc = scr_zeros(&s, (size_t)XB_ROWS * d);
    c.wc = scr_zeros(&s, (size_t)c.vc * d);
    c.tile = scr_zeros(&s, (size_t)XB_ROWS * c.vc);
    c.m = scr_zeros(&s, 3 * (size_t)XB_ROWS);
    if (s.failed) {
        scr_free(&s);
        loss[0] = NAN;  /* a loss that cannot pass for a result */
        return;
    }
    c.l = c.m + XB_ROWS;
    c.tgt = c.l + XB_ROWS;
    float inv_norm = (float)(1.0 / normaliser);
    double total = 0;
    for (int t = 0; t < T;) {
        c.nr = 0;
        for (; t < T && c.nr < XB_ROWS; t++) {
            if (labels[t] == OPS_LABEL_IGNORE) continue;
            c.idx[c.nr] = t;
            c.lab[c.nr] = labels[t];
            widen_rows(c.hc + (size_t)c.nr * d, h + (size_t)t * d, 1, d, d);
            c.nr++;
        }
        if (c.nr > 0) total += xb_chunk_run(&c, dh, dw, w, inv_norm);
    }
    loss[0] = (float)(total / normaliser);
    scr_free(&s);
}

/* ---- optimizer ------------------------------------------------------------------------------ */

void cpu_adamw_step_mixed(float *p, ops_bf16 *p16, float *m, float *v, const float *g,
                          const float *grad_scale, size_t n, double lr, double beta1, double beta2,
                          double eps, double weight_decay, int step)
{
    cpu_adamw_step_f32(p, m, v, g, grad_scale, n, lr, beta1, beta2, eps, weight_decay, step);
    cpu_f32_to_bf16(p16, p, n);
}
