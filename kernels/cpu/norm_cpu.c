/* norm_cpu: LayerNorm (vision tower, merger) and RMSNorm with the optional fused residual add
 * (decoder), forward and backward.
 *
 * Design: rows go to threads for everything per-row (statistics, dx); the weight and bias
 * gradients, which sum over rows, are a second pass that splits the *columns* across threads,
 * so each gradient element has one writer and no per-thread partial buffers are needed. Row
 * statistics accumulate in double: one row is at most a few thousand values, and this keeps the
 * float build within an ulp or two of the reference at no measurable cost. */
#include "kernels_cpu.h"

enum { NORM_CB = 128 };  /* columns per block in the parameter-gradient pass */

void CPU_FN(layernorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *w,
                               const real *b, int T, int d, float eps)
{
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int t = 0; t < T; t++) {
        const real *xr = x + (size_t)t * d;
        double s = 0, ss = 0;
        for (int j = 0; j < d; j++) s += xr[j];
        double mu = s / d;
        for (int j = 0; j < d; j++) ss += (xr[j] - mu) * (xr[j] - mu);
        real r = (real)(1.0 / sqrt(ss / d + eps)), m = (real)mu;
        real *yr = y + (size_t)t * d;
        for (int j = 0; j < d; j++) yr[j] = (xr[j] - m) * r * w[j] + b[j];
        mean[t] = m;
        rstd[t] = r;
    }
}

void CPU_FN(layernorm_backward)(real *dx, real *dw, real *db, const real *dy, const real *x,
                                const real *w, const real *mean, const real *rstd, int T, int d)
{
    /* dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy w, xhat = (x - mean) rstd */
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int t = 0; t < T; t++) {
        const real *xr = x + (size_t)t * d, *gr = dy + (size_t)t * d;
        real m = mean[t], r = rstd[t];
        double sg = 0, sgx = 0;
        for (int j = 0; j < d; j++) {
            real g = gr[j] * w[j];
            sg += g;
            sgx += g * ((xr[j] - m) * r);
        }
        real mg = (real)(sg / d), mgx = (real)(sgx / d);
        real *dxr = dx + (size_t)t * d;
        for (int j = 0; j < d; j++)
            dxr[j] += r * (gr[j] * w[j] - mg - (xr[j] - m) * r * mgx);
    }
    if (!dw && !db) return;  /* a frozen norm: no parameter pass */
    int nblocks = (d + NORM_CB - 1) / NORM_CB;
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int bj = 0; bj < nblocks; bj++) {
        int j0 = bj * NORM_CB, nc = d - j0 < NORM_CB ? d - j0 : NORM_CB;
        real aw[NORM_CB], ab[NORM_CB];
        for (int j = 0; j < nc; j++) aw[j] = ab[j] = 0;
        for (int t = 0; t < T; t++) {
            const real *xr = x + (size_t)t * d + j0, *gr = dy + (size_t)t * d + j0;
            real m = mean[t], r = rstd[t];
            for (int j = 0; j < nc; j++) {
                aw[j] += gr[j] * ((xr[j] - m) * r);
                ab[j] += gr[j];
            }
        }
        if (dw) for (int j = 0; j < nc; j++) dw[j0 + j] += aw[j];
        if (db) for (int j = 0; j < nc; j++) db[j0 + j] += ab[j];
    }
}

void CPU_FN(rmsnorm_forward)(real *y, real *rstd, real *res, const real *x, const real *w, int T,
                             int d, float eps)
{
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int t = 0; t < T; t++) {
        const real *xr = x + (size_t)t * d;
        const real *ur = xr;
        if (res) {
            real *rr = res + (size_t)t * d;
            for (int j = 0; j < d; j++) rr[j] += xr[j];
            ur = rr;
        }
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)ur[j] * ur[j];
        real r = (real)(1.0 / sqrt(ss / d + eps));
        real *yr = y + (size_t)t * d;
        for (int j = 0; j < d; j++) yr[j] = w[j] * (ur[j] * r);
        rstd[t] = r;
    }
}

void CPU_FN(rmsnorm_backward)(real *du, real *dw, const real *dy, const real *u, const real *w,
                              const real *rstd, int T, int d)
{
    /* du = rstd (g - uhat mean(g uhat)) with g = dy w, uhat = u rstd */
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int t = 0; t < T; t++) {
        const real *ur = u + (size_t)t * d, *gr = dy + (size_t)t * d;
        real r = rstd[t];
        double sgu = 0;
        for (int j = 0; j < d; j++) sgu += gr[j] * w[j] * (ur[j] * r);
        real mgu = (real)(sgu / d);
        real *dur = du + (size_t)t * d;
        for (int j = 0; j < d; j++) dur[j] += r * (gr[j] * w[j] - ur[j] * r * mgu);
    }
    int nblocks = (d + NORM_CB - 1) / NORM_CB;
#pragma omp parallel for if ((size_t)T * d > (1u << 15))
    for (int bj = 0; bj < nblocks; bj++) {
        int j0 = bj * NORM_CB, nc = d - j0 < NORM_CB ? d - j0 : NORM_CB;
        real aw[NORM_CB];
        for (int j = 0; j < nc; j++) aw[j] = 0;
        for (int t = 0; t < T; t++) {
            const real *ur = u + (size_t)t * d + j0, *gr = dy + (size_t)t * d + j0;
            real r = rstd[t];
            for (int j = 0; j < nc; j++) aw[j] += gr[j] * (ur[j] * r);
        }
        for (int j = 0; j < nc; j++) dw[j0 + j] += aw[j];
    }
}
