/* gpu_util: what the GPU parity tests share: device buffers that fail the test loudly, the
 * comparison with its error bound (NaN never passes), the results table, and bf16 rounding on
 * the host. Header-only, like tests/unit/test_ops_util.h, which it builds on. */
#ifndef ADAPT_GPU_UTIL_H
#define ADAPT_GPU_UTIL_H

#include "check.h"
#include "unit/test_ops_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed allocation or copy leaves nothing meaningful to compare: stop with the reason. */
static inline void gu_cuda(cudaError_t e, const char *what, int line)
{
    if (e == cudaSuccess) return;
    fprintf(stderr, "test_ops_gpu.c:%d: %s: %s (is the GPU healthy? see nvidia-smi)\n", line, what,
            cudaGetErrorString(e));
    exit(1);
}
#define GU_CUDA(call) gu_cuda((call), #call, __LINE__)

static inline void *gu_put(const void *host, size_t bytes)
{
    void *d = NULL;
    GU_CUDA(cudaMalloc(&d, bytes ? bytes : 1));
    if (bytes) GU_CUDA(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

static inline void gu_get(void *host, const void *dev, size_t bytes)
{
    if (bytes) GU_CUDA(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

static inline float *gu_putf(const float *host, size_t n) { return gu_put(host, n * sizeof(float)); }
static inline int *gu_puti(const int *host, size_t n) { return gu_put(host, n * sizeof(int)); }

/* n floats uniform in [-scale, scale) */
static inline float *gu_rand(tu_rng *r, size_t n, double scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * tu_uniform(r));
    return x;
}

static inline float *gu_copy(const float *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

/* max |got - ref| / max(max |ref|, floor): error relative to the tensor's scale, as
 * tu_rel_err; NaN or inf in either gives +inf, which fails every bound */
static inline double gu_err(const float *got, const float *ref, size_t n, double floor_)
{
    double scale = floor_, worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) return INFINITY;
        double a = fabs((double)ref[i]);
        scale = a > scale ? a : scale;
        double e = fabs((double)got[i] - ref[i]);
        worst = e > worst ? e : worst;
    }
    return worst / scale;
}

/* ---- the results table ---- */
typedef struct gu_row {
    char   op[40];
    char   shape[64];
    double err, bound;
} gu_row;

enum { GU_MAX_ROWS = 256 };
static gu_row gu_rows[GU_MAX_ROWS];
static int gu_nrows;

static inline void gu_record(const char *op, const char *shape, double err, double bound)
{
    CHECK_MSG(err <= bound, "%s [%s]: error %.3g exceeds bound %.3g", op, shape, err, bound);
    if (gu_nrows == GU_MAX_ROWS) return;
    gu_row *r = &gu_rows[gu_nrows++];
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->err = err;
    r->bound = bound;
}

static inline void gu_print_table(FILE *f)
{
    fprintf(f, "%-28s %-34s %11s %9s  %s\n", "op", "shape", "rel err", "bound", "result");
    for (int i = 0; i < gu_nrows; i++) {
        const gu_row *r = &gu_rows[i];
        fprintf(f, "%-28s %-34s %11.3e %9.1e  %s\n", r->op, r->shape, r->err, r->bound,
                r->err <= r->bound ? "ok" : "FAIL");
    }
}

/* ---- bf16 on the host: round to nearest even, as __float2bfloat16 does ---- */
static inline uint16_t gu_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float gu_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

#endif
