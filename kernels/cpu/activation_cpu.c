/* activation_cpu: SwiGLU (decoder MLP), QuickGELU (vision MLP) and exact GELU (PatchMerger),
 * forward and backward.
 *
 * Design: element-wise loops written so the compiler vectorises them: the sigmoid goes through
 * cpu_exp (a polynomial in the float build, not libm's scalar call); backward recomputes the
 * activation from the saved input instead of storing it, trading a few flops for a whole
 * activation-sized buffer per layer. */
#include "kernels_cpu.h"

enum { ACT_PAR = 1 << 15 };  /* below this many elements a parallel region costs more than it saves */

static inline real act_sigmoid(real x) { return 1 / (1 + cpu_exp(-x)); }

void CPU_FN(swiglu_forward)(real *y, const real *gate, const real *up, int T, int n, int ld_in)
{
#pragma omp parallel for if ((size_t)T * n > ACT_PAR)
    for (int t = 0; t < T; t++) {
        const real *g = gate + (size_t)t * ld_in, *u = up + (size_t)t * ld_in;
        real *yr = y + (size_t)t * n;
        for (int j = 0; j < n; j++) yr[j] = g[j] * act_sigmoid(g[j]) * u[j];
    }
}

void CPU_FN(swiglu_backward)(real *dgate, real *dup, const real *dy, const real *gate,
                             const real *up, int T, int n, int ld_in)
{
    /* silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g) */
#pragma omp parallel for if ((size_t)T * n > ACT_PAR)
    for (int t = 0; t < T; t++) {
        const real *g = gate + (size_t)t * ld_in, *u = up + (size_t)t * ld_in;
        const real *dyr = dy + (size_t)t * n;
        real *dg = dgate + (size_t)t * ld_in, *du = dup + (size_t)t * ld_in;
        for (int j = 0; j < n; j++) {
            real s = act_sigmoid(g[j]);
            dg[j] += dyr[j] * u[j] * s * (1 + g[j] * (1 - s));
            du[j] += dyr[j] * g[j] * s;
        }
    }
}

void CPU_FN(quickgelu_forward)(real *y, const real *x, size_t n)
{
#pragma omp parallel for simd if (n > ACT_PAR)
    for (size_t i = 0; i < n; i++) y[i] = x[i] * act_sigmoid((real)1.702 * x[i]);
}

void CPU_FN(quickgelu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
#pragma omp parallel for simd if (n > ACT_PAR)
    for (size_t i = 0; i < n; i++) {
        real s = act_sigmoid((real)1.702 * x[i]);
        dx[i] += dy[i] * (s + (real)1.702 * x[i] * s * (1 - s));
    }
}

/* erf has no cheap vectorised form here; GELU only runs in the merger, on a few thousand
 * rows, so the libm call per element is acceptable */
void CPU_FN(gelu_forward)(real *y, const real *x, size_t n)
{
#pragma omp parallel for if (n > ACT_PAR)
    for (size_t i = 0; i < n; i++) y[i] = (real)0.5 * x[i] * (1 + (real)erf(x[i] * (real)M_SQRT1_2));
}

void CPU_FN(gelu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    /* d/dx = Phi(x) + x phi(x), phi the standard normal density */
    const real inv_sqrt_2pi = (real)0.39894228040143267794;
#pragma omp parallel for if (n > ACT_PAR)
    for (size_t i = 0; i < n; i++) {
        real cdf = (real)0.5 * (1 + (real)erf(x[i] * (real)M_SQRT1_2));
        real pdf = inv_sqrt_2pi * (real)exp((real)-0.5 * x[i] * x[i]);
        dx[i] += dy[i] * (cdf + x[i] * pdf);
    }
}
