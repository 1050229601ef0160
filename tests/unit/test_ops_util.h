/* test_ops_util: what the op tests share: a seeded generator, float/double copies and
 * error measures. Header-only (static functions) so each test stays one translation unit. */
#ifndef ADAPT_TEST_OPS_UTIL_H
#define ADAPT_TEST_OPS_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* splitmix64: deterministic across platforms, so a failing case reproduces from its seed */
typedef struct tu_rng { uint64_t s; } tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static inline double tu_uniform(tu_rng *r) { return (double)(tu_next(r) >> 11) * 0x1.0p-52 - 1.0; }

static inline int tu_int(tu_rng *r, int n) { return (int)(tu_next(r) % (uint64_t)n); }

/* a double array of n values in [-scale, scale), each exactly representable as a float, so the
 * float and double builds see the same inputs */
static inline double *tu_rand(tu_rng *r, size_t n, double scale)
{
    double *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (double)(float)(scale * tu_uniform(r));
    return x;
}

static inline double *tu_zeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static inline double *tu_dup(const double *x, size_t n)
{
    double *y = malloc((n ? n : 1) * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static inline float *tu_to_f32(const double *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

static inline double *tu_to_f64(const float *x, size_t n)
{
    double *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

static inline double tu_max_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* max |a - b| / max(max |b|, floor): an error relative to the tensor's scale, not per element,
 * which is what float rounding produces; NaN anywhere gives +inf so it never passes */
static inline double tu_rel_err(const double *a, const double *b, size_t n, double floor_)
{
    double scale = tu_max_abs(b, n), worst = 0;
    if (scale < floor_) scale = floor_;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        worst = e > worst ? e : worst;
    }
    return worst / scale;
}

static inline double tu_rel_err_f32(const float *a, const double *b, size_t n, double floor_)
{
    double *a64 = tu_to_f64(a, n);
    double e = tu_rel_err(a64, b, n, floor_);
    free(a64);
    return e;
}

static inline double tu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
