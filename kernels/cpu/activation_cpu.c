/* activation_cpu: SwiGLU (decoder MLP), QuickGELU (vision MLP) and exact GELU (PatchMerger),
 * forward and backward.
 *
 * Design: element-wise loops written so the compiler vectorises them: the sigmoid goes through
 * cpu_exp (a polynomial in the float build, not libm's scalar call); backward recomputes the
 * activation from the saved input instead of storing it, trading a few flops for a whole
 * activation-sized buffer per layer. The loops live in CPU_VEC_CLONES helpers called from the
 * parallel loops (an OpenMP region's outlined body is not cloned itself), so they run on AVX2
 * where the machine has it: a step spends a few percent of its time here. */
#include "kernels_cpu.h"

enum { ACT_PAR = 1 << 15 };  /* below this many elements a parallel region costs more than it saves */

static inline real act_sigmoid(real x) { return 1 / (1 + cpu_exp(-x)); }

CPU_VEC_CLONES
static void swiglu_row(real *y, const real *g, const real *u, int n)
{
    for (int j = 0; j < n; j++) y[j] = g[j] * act_sigmoid(g[j]) * u[j];
}

void CPU_FN(swiglu_forward)(real *y, const real *gate, const real *up, int T, int n, int ld_in)
{
#pragma omp parallel for if ((size_t)T * n > ACT_PAR)
    for (int t = 0; t < T; t++)
        swiglu_row(y + (size_t)t * n, gate + (size_t)t * ld_in, up + (size_t)t * ld_in, n);
}

/* silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g) */
CPU_VEC_CLONES
static void swiglu_row_backward(real *dg, real *du, const real *dy, const real *g, const real *u,
                                int n)
{
    for (int j = 0; j < n; j++) {
        real s = act_sigmoid(g[j]);
        dg[j] += dy[j] * u[j] * s * (1 + g[j] * (1 - s));
        du[j] += dy[j] * g[j] * s;
    }
}

void CPU_FN(swiglu_backward)(real *dgate, real *dup, const real *dy, const real *gate,
                             const real *up, int T, int n, int ld_in)
{
#pragma omp parallel for if ((size_t)T * n > ACT_PAR)
    for (int t = 0; t < T; t++) {
        size_t in = (size_t)t * ld_in;
        swiglu_row_backward(dgate + in, dup + in, dy + (size_t)t * n, gate + in, up + in, n);
    }
}

enum { ACT_BLOCK = 4096 };  /* element-wise ops over flat buffers go to threads in blocks */

CPU_VEC_CLONES
static void quickgelu_block(real *y, const real *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] * act_sigmoid((real)1.702 * x[i]);
}

void CPU_FN(quickgelu_forward)(real *y, const real *x, size_t n)
{
    size_t nb = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#pragma omp parallel for if (n > ACT_PAR)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * ACT_BLOCK;
        quickgelu_block(y + i0, x + i0, n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK);
    }
}

CPU_VEC_CLONES
static void quickgelu_block_backward(real *dx, const real *dy, const real *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        real s = act_sigmoid((real)1.702 * x[i]);
        dx[i] += dy[i] * (s + (real)1.702 * x[i] * s * (1 - s));
    }
}

void CPU_FN(quickgelu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    size_t nb = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#pragma omp parallel for if (n > ACT_PAR)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * ACT_BLOCK;
        quickgelu_block_backward(dx + i0, dy + i0, x + i0, n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK);
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
