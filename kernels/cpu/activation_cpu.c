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

/* The standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2, GELU's gate. The double build
 * (the gradient checks' reference) keeps libm's erf. The float build uses polynomials the
 * compiler vectorises, as cpu_exp does for the sigmoid (libm's erf is a scalar call per element,
 * which made GELU cost as much as the merger's products around it): with z = x / sqrt 2,
 *   |z| <= 1:  erf(z) = z P(z^2)                    (P: degree 5, least squares on [0, 1])
 *   |z| > 1:   erfc(|z|) = exp(-z^2) R(1 / (1 + |z|/2))  (R: degree 8 on |z| in [0.95, 10])
 * and for negative x the tail Phi = erfc(|z|) / 2 directly, never 1 - (1 - tiny), so it keeps its
 * relative precision far out. Measured against libm's double erfc on x in [-13, 13]: absolute
 * error of Phi < 1.2e-7, relative < 1.4e-5 wherever Phi > 1e-30 (the float 1 + erf it replaces
 * had no correct digit left below x = -5.5). */
#ifdef ADAPT_CPU_F64
static inline double act_phi(double x) { return 0.5 * (1 + erf(x * M_SQRT1_2)); }
static inline double act_pdf_exp(double x) { return exp(-0.5 * x * x); }
#else
static inline float act_phi(float x)
{
    float z = x * (float)M_SQRT1_2, a = fabsf(z);
    float z2 = z * z;
    float p = -5.696655952e-04f;
    p = p * z2 + 4.934506853e-03f;
    p = p * z2 - 2.672698146e-02f;
    p = p * z2 + 1.128078875e-01f;
    p = p * z2 - 3.761241472e-01f;
    p = p * z2 + 1.128379150e+00f;
    float near = 0.5f + 0.5f * (z * p);
    float ac = a < 10.0f ? a : 10.0f;
    float t = 1.0f / (1.0f + 0.5f * ac);
    float r = 7.588224357e-02f;
    r = r * t - 1.686186928e-01f;
    r = r * t + 2.082599636e-03f;
    r = r * t + 1.232319265e-01f;
    r = r * t + 1.495801017e-01f;
    r = r * t + 2.554529103e-01f;
    r = r * t + 2.805485490e-01f;
    r = r * t + 2.822429309e-01f;
    r = r * t - 5.916701596e-06f;
    float half_erfc = 0.5f * cpu_exp(-ac * ac) * r;
    float far = z > 0 ? 1.0f - half_erfc : half_erfc;
    return a <= 1.0f ? near : far;
}
static inline float act_pdf_exp(float x) { return cpu_exp(-0.5f * x * x); }
#endif

CPU_VEC_CLONES
static void gelu_block(real *y, const real *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] * act_phi(x[i]);
}

void CPU_FN(gelu_forward)(real *y, const real *x, size_t n)
{
    size_t nb = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#pragma omp parallel for if (n > ACT_PAR)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * ACT_BLOCK;
        gelu_block(y + i0, x + i0, n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK);
    }
}

/* d/dx = Phi(x) + x phi(x), phi the standard normal density */
CPU_VEC_CLONES
static void gelu_block_backward(real *dx, const real *dy, const real *x, size_t n)
{
    const real inv_sqrt_2pi = (real)0.39894228040143267794;
    for (size_t i = 0; i < n; i++)
        dx[i] += dy[i] * (act_phi(x[i]) + x[i] * inv_sqrt_2pi * act_pdf_exp(x[i]));
}

void CPU_FN(gelu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    size_t nb = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#pragma omp parallel for if (n > ACT_PAR)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * ACT_BLOCK;
        gelu_block_backward(dx + i0, dy + i0, x + i0, n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK);
    }
}
