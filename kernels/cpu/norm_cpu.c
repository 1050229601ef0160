/* norm_cpu: LayerNorm (vision tower, merger) and RMSNorm with the optional fused residual add
 * (decoder), forward and backward.
 *
 * Design: rows go to threads for everything per-row (statistics, dx). The weight and bias
 * gradients, which sum over rows, are summed in the same pass while the row is in cache: rows go
 * in fixed chunks of NORM_ROWS, each chunk sums its own partial gradient row, and the partials
 * are added in chunk order at the end, so the result depends on neither the thread count nor
 * the schedule and there is no second sweep over dy and x (when the partials' scratch cannot be
 * had, a second pass that splits the *columns* across threads does the sums instead). Row
 * statistics accumulate in double: one row is at most a few thousand values, and this keeps the
 * float build within an ulp or two of the reference at no measurable cost. The row and column
 * loops live in CPU_VEC_CLONES helpers (an outlined OpenMP body is not cloned), and the row sums
 * are `omp simd` reductions: several double lanes instead of one serial chain of adds, which
 * was the loops' bound (a reassociation, still in double). */
#include "kernels_cpu.h"

#include <stdlib.h>

enum {
    NORM_ROWS = 32,   /* rows per chunk: each chunk sums one partial row of dw (and db) */
    NORM_CB = 128,    /* columns per block when the partials are added (or summed from rows) */
};

CPU_VEC_CLONES
static void ln_row(real *y, real *mean, real *rstd, const real *x, const real *w, const real *b,
                   int d, float eps)
{
    double s = 0, ss = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < d; j++) s += x[j];
    double mu = s / d;
#pragma omp simd reduction(+ : ss)
    for (int j = 0; j < d; j++) ss += (x[j] - mu) * (x[j] - mu);
    real r = (real)(1.0 / sqrt(ss / d + eps)), m = (real)mu;
    for (int j = 0; j < d; j++) y[j] = (x[j] - m) * r * w[j] + b[j];
    *mean = m;
    *rstd = r;
}

void CPU_FN(layernorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *w,
                               const real *b, int T, int d, float eps)
{
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int t = 0; t < T; t++)
        ln_row(y + (size_t)t * d, mean + t, rstd + t, x + (size_t)t * d, w, b, d, eps);
}

/* Rows [t0, t1) of the LayerNorm backward: dx = rstd (g - mean(g) - xhat mean(g xhat)) with
 * g = dy w, xhat = (x - mean) rstd; pw += dy xhat and pb += dy (each NULL: skipped). */
CPU_VEC_CLONES
static void ln_rows_backward(real *dx, real *pw, real *pb, const real *dy, const real *x,
                             const real *w, const real *mean, const real *rstd, int t0, int t1,
                             int d)
{
    for (int t = t0; t < t1; t++) {
        const real *xr = x + (size_t)t * d, *gr = dy + (size_t)t * d;
        real *dxr = dx + (size_t)t * d;
        real m = mean[t], r = rstd[t];
        double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
        for (int j = 0; j < d; j++) {
            real g = gr[j] * w[j];
            sg += g;
            sgx += g * ((xr[j] - m) * r);
        }
        real mg = (real)(sg / d), mgx = (real)(sgx / d);
        for (int j = 0; j < d; j++) dxr[j] += r * (gr[j] * w[j] - mg - (xr[j] - m) * r * mgx);
        if (pw)
            for (int j = 0; j < d; j++) pw[j] += gr[j] * ((xr[j] - m) * r);
        if (pb)
            for (int j = 0; j < d; j++) pb[j] += gr[j];
    }
}

/* Rows [t0, t1) of the RMSNorm backward: du = rstd (g - uhat mean(g uhat)) with g = dy w,
 * uhat = u rstd; pw += dy uhat (NULL: skipped). */
CPU_VEC_CLONES
static void rms_rows_backward(real *du, real *pw, const real *dy, const real *u, const real *w,
                              const real *rstd, int t0, int t1, int d)
{
    for (int t = t0; t < t1; t++) {
        const real *ur = u + (size_t)t * d, *gr = dy + (size_t)t * d;
        real *dur = du + (size_t)t * d;
        real r = rstd[t];
        double sgu = 0;
#pragma omp simd reduction(+ : sgu)
        for (int j = 0; j < d; j++) sgu += gr[j] * w[j] * (ur[j] * r);
        real mgu = (real)(sgu / d);
        for (int j = 0; j < d; j++) dur[j] += r * (gr[j] * w[j] - ur[j] * r * mgu);
        if (pw)
            for (int j = 0; j < d; j++) pw[j] += gr[j] * (ur[j] * r);
    }
}

/* The fallback's column pass: the parameter gradients of columns [j0, j0 + nc) summed over the
 * T rows, aw += dy xhat, ab += dy (ab NULL: none; mean NULL: RMSNorm, xhat = x rstd). */
CPU_VEC_CLONES
static void norm_dw_block(real *aw, real *ab, const real *dy, const real *x, const real *mean,
                          const real *rstd, int T, int d, int j0, int nc)
{
    for (int t = 0; t < T; t++) {
        const real *xr = x + (size_t)t * d + j0, *gr = dy + (size_t)t * d + j0;
        real m = mean ? mean[t] : 0, r = rstd[t];
        for (int j = 0; j < nc; j++) aw[j] += gr[j] * ((xr[j] - m) * r);
        if (ab)
            for (int j = 0; j < nc; j++) ab[j] += gr[j];
    }
}

/* Both norms' backward (mean NULL: RMSNorm, db then NULL too): dx, and dw / db (NULL: a frozen
 * norm, no parameter sums). */
static void norm_backward(real *dx, real *dw, real *db, const real *dy, const real *x,
                          const real *w, const real *mean, const real *rstd, int T, int d)
{
    int nchunks = (T + NORM_ROWS - 1) / NORM_ROWS, np = (dw != NULL) + (db != NULL);
    /* per chunk: its dw partial row, then its db partial row */
    real *part = np ? malloc((size_t)nchunks * np * d * sizeof(real)) : NULL;
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int c = 0; c < nchunks; c++) {
        int t0 = c * NORM_ROWS, t1 = T - t0 < NORM_ROWS ? T : t0 + NORM_ROWS;
        real *pw = NULL, *pb = NULL;
        if (part) {
            real *p = part + (size_t)c * np * d;
            memset(p, 0, (size_t)np * d * sizeof(real));
            if (dw) pw = p;
            if (db) pb = p + (dw ? d : 0);
        }
        if (mean) ln_rows_backward(dx, pw, pb, dy, x, w, mean, rstd, t0, t1, d);
        else rms_rows_backward(dx, pw, dy, x, w, rstd, t0, t1, d);
    }
    if (!np) return;
    int nblocks = (d + NORM_CB - 1) / NORM_CB;
#pragma omp parallel for if ((size_t)(part ? nchunks : T) * d > (1u << 16))
    for (int bj = 0; bj < nblocks; bj++) {
        int j0 = bj * NORM_CB, nc = d - j0 < NORM_CB ? d - j0 : NORM_CB;
        real aw[NORM_CB], ab[NORM_CB];
        for (int j = 0; j < nc; j++) aw[j] = ab[j] = 0;
        if (part) {  /* the chunks' partials, in chunk order */
            for (int c = 0; c < nchunks; c++) {
                const real *p = part + (size_t)c * np * d + j0;
                if (dw)
                    for (int j = 0; j < nc; j++) aw[j] += p[j];
                if (db)
                    for (int j = 0; j < nc; j++) ab[j] += p[(dw ? d : 0) + j];
            }
        } else {
            norm_dw_block(aw, db ? ab : NULL, dy, x, mean, rstd, T, d, j0, nc);
        }
        if (dw) for (int j = 0; j < nc; j++) dw[j0 + j] += aw[j];
        if (db) for (int j = 0; j < nc; j++) db[j0 + j] += ab[j];
    }
    free(part);
}

void CPU_FN(layernorm_backward)(real *dx, real *dw, real *db, const real *dy, const real *x,
                                const real *w, const real *mean, const real *rstd, int T, int d)
{
    norm_backward(dx, dw, db, dy, x, w, mean, rstd, T, d);
}

/* res NULL: u = x; else res += x first and u = res (the fused residual add) */
CPU_VEC_CLONES
static void rms_row(real *y, real *rstd, real *res, const real *x, const real *w, int d,
                    float eps)
{
    const real *u = x;
    if (res) {
        for (int j = 0; j < d; j++) res[j] += x[j];
        u = res;
    }
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int j = 0; j < d; j++) ss += (double)u[j] * u[j];
    real r = (real)(1.0 / sqrt(ss / d + eps));
    for (int j = 0; j < d; j++) y[j] = w[j] * (u[j] * r);
    *rstd = r;
}

void CPU_FN(rmsnorm_forward)(real *y, real *rstd, real *res, const real *x, const real *w, int T,
                             int d, float eps)
{
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int t = 0; t < T; t++)
        rms_row(y + (size_t)t * d, rstd + t, res ? res + (size_t)t * d : NULL, x + (size_t)t * d,
                w, d, eps);
}

void CPU_FN(rmsnorm_backward)(real *du, real *dw, const real *dy, const real *u, const real *w,
                              const real *rstd, int T, int d)
{
    norm_backward(du, dw, NULL, dy, u, w, NULL, rstd, T, d);
}
