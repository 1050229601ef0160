/* test_ops_bf16: the CPU table's bf16 entries (kernels/cpu/bf16_cpu.c), the reference of the
 * CUDA bf16 kernels and the path a mixed-precision model takes without a GPU.
 *
 * The one idea: a bf16 entry must equal the fp32 entry of the same stem run on the same
 * bf16-exact inputs, with each output rounded to bf16 once (round to nearest even) — BIT FOR
 * BIT, since that is the same function with the same summation order. The exceptions are named
 * and bounded: the fused loss rounds its gradient tile to bf16 mid-way (as CUDA does), so its dh
 * and dw are within 1e-2 of the fp32 op's (relative to the tensor's largest value) and its loss
 * within 1e-5. Strided outputs are checked over their padding too (untouched), gradients start
 * non-zero (the += contract), and a comparison never accepts NaN. Independently of the fp32 op,
 * the rounding helpers are checked on their edge cases and against a double-precision model of
 * round-to-nearest-even, and a few entries against the double build of the kernels (within one
 * bf16 ulp of the exact result). Usage: test_ops_bf16 [SEED] */
#include "adapt_config.h"
#include "bf16_cpu.h"
#include "check.h"
#include "kernels_cpu.h"
#include "test_ops_util.h"

#include <float.h>
#include <stdio.h>

/* the double build (adapt_kernels_f64) of the kernels the exactness checks use */
void cpu_gelu_forward_f64(double *y, const double *x, size_t n);
void cpu_quickgelu_forward_f64(double *y, const double *x, size_t n);
void cpu_rmsnorm_forward_f64(double *y, double *rstd, double *res, const double *x,
                             const double *w, int T, int d, float eps);
void cpu_matmul_f64(double *c, const double *a, const double *b, int m, int n, int k, int trans_a,
                    int trans_b, int lda, int ldb, int ldc, double alpha, double beta);

static const ops_table *cpu;
static tu_rng rng;

/* ---- helpers ------------------------------------------------------------------------------ */

static ops_bf16 *bf_rand(size_t n, double scale)
{
    ops_bf16 *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = ops_bf16_from_f32((float)(scale * tu_uniform(&rng)));
    return x;
}

static ops_bf16 *bf_dup(const ops_bf16 *x, size_t n)
{
    ops_bf16 *y = malloc((n ? n : 1) * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static float *bf_widen(const ops_bf16 *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = ops_bf16_to_f32(x[i]);
    return y;
}

static float *f_dup(const float *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static float *f_rand(size_t n, double scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * tu_uniform(&rng));
    return x;
}

/* dst[r, 0:cols] = bf16(src[r, 0:cols]) for rows of stride ld: the reference's one rounding,
 * over exactly the columns an op writes (the rest of dst keeps its bits) */
static void narrow_region(ops_bf16 *dst, const float *src, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++)
            dst[(size_t)r * ld + j] = ops_bf16_from_f32(src[(size_t)r * ld + j]);
}

static int bf_isnan(ops_bf16 h) { return (h & 0x7fffu) > 0x7f80u; }

/* elements whose bits differ, or that are NaN on either side (NaN never passes) */
static size_t bf_diff(const ops_bf16 *got, const ops_bf16 *ref, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != ref[i] || bf_isnan(got[i]) || bf_isnan(ref[i]);
    return bad;
}

static size_t f_diff(const float *got, const float *ref, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += memcmp(&got[i], &ref[i], sizeof(float)) != 0 || isnan(got[i]) || isnan(ref[i]);
    return bad;
}

#define SAME_BF(what, got, ref, n) do {                                                       \
        size_t bad_ = bf_diff((got), (ref), (n));                                             \
        CHECK_MSG(bad_ == 0, "%s: %zu of %zu bf16 values differ from round(fp32 op) or are NaN", \
                  (what), bad_, (size_t)(n));                                                 \
    } while (0)

#define SAME_F(what, got, ref, n) do {                                                        \
        size_t bad_ = f_diff((got), (ref), (n));                                              \
        CHECK_MSG(bad_ == 0, "%s: %zu of %zu fp32 values differ from the fp32 op or are NaN",    \
                  (what), bad_, (size_t)(n));                                                 \
    } while (0)

/* tensor-scale relative error of fp32 values (tu_rel_err: NaN gives inf) */
static double f_rel(const float *got, const float *ref, size_t n)
{
    double *a = tu_to_f64(got, n), *b = tu_to_f64(ref, n);
    double e = tu_rel_err(a, b, n, 1e-30);
    free(a);
    free(b);
    return e;
}

/* largest |got - exact| in bf16 ulps of the exact value (an ulp floored at floor_ so values that
 * cancel to near zero are judged against the tensor's scale); NaN gives inf */
static double bf_ulps(const ops_bf16 *got, const double *exact, size_t n, double floor_)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double g = ops_bf16_to_f32(got[i]), x = exact[i];
        if (isnan(g) || isnan(x)) return INFINITY;
        int e;
        frexp(fabs(x) > floor_ ? fabs(x) : floor_, &e);
        double ulp = ldexp(1.0, e - 8);  /* 8 significant bits: [2^(e-1), 2^e) has ulp 2^(e-8) */
        double u = fabs(g - x) / ulp;
        worst = u > worst ? u : worst;
    }
    return worst;
}

/* ---- rounding ----------------------------------------------------------------------------- */

static uint32_t f_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* round to nearest even, modelled in double arithmetic: the two bf16 neighbours of x (its
 * truncation and the next value away from zero) and the distances to them */
static ops_bf16 rne_model(float x)
{
    uint32_t u = f_bits(x);
    ops_bf16 lo = (ops_bf16)(u >> 16), hi = (ops_bf16)(lo + 1);
    double dl = fabs((double)x - ops_bf16_to_f32(lo));
    double next = (lo & 0x7fffu) == 0x7f7fu ? copysign(ldexp(1.0, 128), x)  /* past max: inf */
                                            : (double)ops_bf16_to_f32(hi);
    double dh = fabs(next - (double)x);
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1u) ? hi : lo;
}

static void test_rounding(void)
{
    static const struct { uint32_t in; uint16_t out; const char *what; } cases[] = {
        {0x3f800000u, 0x3f80, "1.0 exact"},
        {0x3f808000u, 0x3f80, "tie, even below: down"},
        {0x3f818000u, 0x3f82, "tie, odd below: up"},
        {0x3f808001u, 0x3f81, "just above a tie: up"},
        {0x3f807fffu, 0x3f80, "just below a tie: down"},
        {0xbf808000u, 0xbf80, "negative tie: down in magnitude"},
        {0xbf818000u, 0xbf82, "negative tie, odd: up in magnitude"},
        {0x3fffffffu, 0x4000, "carry into the exponent"},
        {0x00000000u, 0x0000, "+0"},
        {0x80000000u, 0x8000, "-0"},
        {0x7f800000u, 0x7f80, "+inf"},
        {0xff800000u, 0xff80, "-inf"},
        {0x7f7f0000u, 0x7f7f, "largest bf16"},
        {0x7f7f7fffu, 0x7f7f, "below the overflow tie: largest"},
        {0x7f7f8000u, 0x7f80, "overflow tie (odd): inf"},
        {0x7f7fffffu, 0x7f80, "FLT_MAX: inf"},
        {0xff7fffffu, 0xff80, "-FLT_MAX: -inf"},
        {0x00010000u, 0x0001, "smallest bf16 subnormal"},
        {0x00008000u, 0x0000, "half the smallest subnormal, tie: to 0"},
        {0x00018000u, 0x0002, "subnormal tie, odd: up"},
        {0x00017fffu, 0x0001, "subnormal below tie"},
        {0x00000001u, 0x0000, "smallest fp32 subnormal: 0"},
        {0x007fffffu, 0x0080, "largest fp32 subnormal: smallest normal"},
        {0x80008001u, 0x8001, "negative subnormal above a tie"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ops_bf16 got = ops_bf16_from_f32(f_of(cases[i].in));
        CHECK_MSG(got == cases[i].out, "round(0x%08x) (%s) = 0x%04x, want 0x%04x", cases[i].in,
                  cases[i].what, got, cases[i].out);
    }
    /* NaN stays NaN whatever its payload (a payload in the dropped half only must not carry
     * into inf), keeps its sign, comes back quiet */
    static const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0xffc00000u,
                                    0xff800001u, 0x7fffffffu, 0x7fbfffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        ops_bf16 h = ops_bf16_from_f32(f_of(nans[i]));
        CHECK_MSG(bf_isnan(h) && (h & 0x0040u) && (h >> 15) == (nans[i] >> 31),
                  "round(NaN 0x%08x) = 0x%04x: not a quiet NaN of the same sign", nans[i], h);
        CHECK(isnan(ops_bf16_to_f32(h)));
    }
    /* widening is exact: all 65536 patterns */
    int bad_widen = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = ops_bf16_to_f32((ops_bf16)h);
        bad_widen += f_bits(x) != h << 16;
        if (!isnan(x)) bad_widen += ops_bf16_from_f32(x) != h;  /* and round-trips */
    }
    CHECK_MSG(bad_widen == 0, "%d bf16 patterns do not widen exactly or round-trip", bad_widen);
    /* random bit patterns (every exponent, subnormals, infinities) and ties against the model */
    enum { NRAND = 200000 };
    float *x = malloc(NRAND * sizeof *x);
    for (int i = 0; i < NRAND; i++) {
        uint32_t u = (uint32_t)tu_next(&rng);
        if (i % 4 == 0) u = (u & 0xffff0000u) | 0x8000u;  /* an exact tie */
        if (i % 4 == 1) u &= 0x807fffffu;                /* a subnormal */
        x[i] = f_of(u);
    }
    int bad_model = 0;
    for (int i = 0; i < NRAND; i++)
        if (!isnan(x[i])) bad_model += ops_bf16_from_f32(x[i]) != rne_model(x[i]);
    CHECK_MSG(bad_model == 0, "%d of %d random values round differently from the RNE model",
              bad_model, NRAND);
    /* the table's bulk conversions are the scalar helpers */
    ops_bf16 *h = malloc(NRAND * sizeof *h);
    float *back = malloc(NRAND * sizeof *back);
    cpu->f32_to_bf16(h, x, NRAND);
    cpu->bf16_to_f32(back, h, NRAND);
    int bad_bulk = 0;
    for (int i = 0; i < NRAND; i++) {
        ops_bf16 want = ops_bf16_from_f32(x[i]);
        bad_bulk += h[i] != want || f_bits(back[i]) != (uint32_t)want << 16;
    }
    CHECK_MSG(bad_bulk == 0, "%d bulk conversions differ from ops_bf16_from_f32 / _to_f32",
              bad_bulk);
    free(x);
    free(h);
    free(back);
}

/* the comparisons themselves: NaN must fail even against identical NaN bits */
static void test_nan_never_passes(void)
{
    ops_bf16 a[3] = {0x3f80, 0x7fc0, 0x4000}, b[3] = {0x3f80, 0x7fc0, 0x4000};
    CHECK(bf_diff(a, b, 3) == 1);
    float fa[2] = {1.0f, NAN}, fb[2] = {1.0f, NAN};
    CHECK(f_diff(fa, fb, 2) == 1);
    CHECK(isinf(f_rel(fa, fb, 2)));
    double ex[1] = {NAN};
    CHECK(isinf(bf_ulps(a, ex, 1, 1e-30)));
}

/* ---- element-wise --------------------------------------------------------------------------- */

static void test_elementwise(void)
{
    size_t n = 100003;  /* past the threading threshold, not a multiple of the chunk */
    ops_bf16 *a = bf_rand(n, 3), *b = bf_rand(n, 3), *y = bf_rand(n, 3);
    float *a32 = bf_widen(a, n), *b32 = bf_widen(b, n), *y32 = bf_widen(y, n);
    ops_bf16 *ref = malloc(n * sizeof *ref);

    cpu->add_f32(y32, a32, b32, n);
    cpu->add_bf16(y, a, b, n);
    narrow_region(ref, y32, 1, (int)n, (int)n);
    SAME_BF("add_bf16", y, ref, n);

    free(y32);
    y32 = bf_widen(y, n);
    cpu->axpy_f32(y32, -0.37f, a32, n);
    cpu->axpy_bf16(y, -0.37f, a, n);
    narrow_region(ref, y32, 1, (int)n, (int)n);
    SAME_BF("axpy_bf16", y, ref, n);

    cpu->fill_bf16(y, 2.5f, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += y[i] != 0x4020;
    CHECK_MSG(bad == 0, "fill_bf16(2.5): %zu values are not 0x4020", bad);
    cpu->fill_bf16(y, 1.00390625f, 7);  /* 1 + 2^-8: a tie, rounds to even 1.0 */
    CHECK(y[0] == 0x3f80 && y[6] == 0x3f80 && y[7] == 0x4020);

    free(a); free(b); free(y); free(a32); free(b32); free(y32); free(ref);
}

typedef void (*unary_f32)(float *, const float *, size_t);
typedef void (*unary_bf16)(ops_bf16 *, const ops_bf16 *, size_t);
typedef void (*unary_bwd_f32)(float *, const float *, const float *, size_t);
typedef void (*unary_bwd_bf16)(ops_bf16 *, const ops_bf16 *, const ops_bf16 *, size_t);

static void test_unary(const char *name, unary_f32 f32, unary_bf16 f16, unary_bwd_f32 b32,
                       unary_bwd_bf16 b16, void (*f64)(double *, const double *, size_t))
{
    size_t n = 70001;
    ops_bf16 *x = bf_rand(n, 4), *y = bf_rand(n, 1), *dy = bf_rand(n, 1), *dx = bf_rand(n, 1);
    float *x32 = bf_widen(x, n), *y32 = malloc(n * sizeof *y32), *dy32 = bf_widen(dy, n);
    float *dx32 = bf_widen(dx, n);
    ops_bf16 *ref = malloc(n * sizeof *ref);
    char what[64];

    f32(y32, x32, n);
    f16(y, x, n);
    narrow_region(ref, y32, 1, (int)n, (int)n);
    snprintf(what, sizeof what, "%s_forward_bf16", name);
    SAME_BF(what, y, ref, n);
    /* independently: within one bf16 ulp of the exact function */
    double *x64 = tu_to_f64(x32, n), *y64 = malloc(n * sizeof *y64);
    f64(y64, x64, n);
    double u = bf_ulps(y, y64, n, 1e-6);
    CHECK_MSG(u <= 1.0, "%s: %.3f bf16 ulps from the double build (bound 1)", what, u);

    b32(dx32, dy32, x32, n);
    b16(dx, dy, x, n);
    narrow_region(ref, dx32, 1, (int)n, (int)n);
    snprintf(what, sizeof what, "%s_backward_bf16", name);
    SAME_BF(what, dx, ref, n);

    free(x); free(y); free(dy); free(dx); free(x32); free(y32); free(dy32); free(dx32);
    free(ref); free(x64); free(y64);
}

/* ---- products -------------------------------------------------------------------------------- */

static void test_matmul_case(int m, int n, int k, int ta, int tb, float alpha, float beta,
                             int with_bias)
{
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
    size_t nc = (size_t)m * ldc;
    ops_bf16 *a = bf_rand(na, 1), *b = bf_rand(nb, 1), *c = bf_rand(nc, 1), *bias = bf_rand(n, 1);
    if (beta == 0)  /* beta = 0 overwrites C, NaNs included */
        for (size_t i = 0; i < nc; i += 7)
            if (i % ldc < (size_t)n) c[i] = 0x7fc0;
    float *a32 = bf_widen(a, na), *b32 = bf_widen(b, nb), *c32 = bf_widen(c, nc);
    float *bias32 = bf_widen(bias, n);
    ops_bf16 *ref = bf_dup(c, nc);
    cpu->matmul_f32(c32, a32, b32, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta);
    if (with_bias) cpu->bias_add_f32(c32, bias32, m, n, ldc);
    narrow_region(ref, c32, m, n, ldc);
    double *c64 = NULL;
    if (k > 0 && beta == 0 && !with_bias) {  /* the exact product, for the independent check */
        double *a64 = tu_to_f64(a32, na), *b64 = tu_to_f64(b32, nb);
        c64 = tu_zeros(nc);
        cpu_matmul_f64(c64, a64, b64, m, n, k, ta, tb, lda, ldb, ldc, alpha, 0);
        free(a64);
        free(b64);
    }
    cpu->matmul_bf16(c, a, b, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta, with_bias ? bias : NULL);
    char what[96];
    snprintf(what, sizeof what, "matmul_bf16 %dx%dx%d t%d%d a%.1f b%.0f bias%d", m, n, k, ta, tb,
             alpha, beta, with_bias);
    SAME_BF(what, c, ref, nc);  /* the padding past n included: untouched */
    if (c64) {
        /* one rounding of a product whose fp32 accumulation error is far below bf16's */
        double worst = 0, scale = tu_max_abs(c64, nc);
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++) {
                size_t i = (size_t)r * ldc + j;
                double e = fabs(ops_bf16_to_f32(c[i]) - c64[i]);
                worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
            }
        CHECK_MSG(worst <= 0x1p-8 * scale, "%s: %.3g from the exact product (bound 2^-8 of %.3g)",
                  what, worst, scale);
        free(c64);
    }

    /* the fp32-output form: the fp32 op on the widened operands, bit for bit */
    float *cf = f_rand(nc, 1), *cf_ref = f_dup(cf, nc);
    cpu->matmul_f32(cf_ref, a32, b32, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta == 0 ? 0 : 1);
    cpu->matmul_bf16_f32out(cf, a, b, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta == 0 ? 0 : 1);
    snprintf(what, sizeof what, "matmul_bf16_f32out %dx%dx%d t%d%d", m, n, k, ta, tb);
    SAME_F(what, cf, cf_ref, nc);

    free(a); free(b); free(c); free(bias); free(a32); free(b32); free(c32); free(bias32);
    free(ref); free(cf); free(cf_ref);
}

static void test_matmul(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            test_matmul_case(37, 45, 129, ta, tb, 0.7f, 0, 0);
            test_matmul_case(37, 45, 129, ta, tb, 1.0f, 1, 1);
        }
    test_matmul_case(70, 96, 200, 0, 1, 1.0f, 0, 1);  /* a Linear forward, BLAS-sized */
    test_matmul_case(9, 13, 0, 0, 0, 1.0f, 0.5f, 0);  /* empty product: C = beta C */
    test_matmul_case(9, 13, 0, 0, 1, 1.0f, 0, 1);     /* empty product with bias: the bias */
}

static void test_bias(void)
{
    int rows = 300, n = 97, ld = 100;
    size_t ny = (size_t)rows * ld;
    ops_bf16 *y = bf_rand(ny, 1), *bias = bf_rand(n, 1);
    float *y32 = bf_widen(y, ny), *bias32 = bf_widen(bias, n);
    ops_bf16 *ref = bf_dup(y, ny);
    cpu->bias_add_f32(y32, bias32, rows, n, ld);
    narrow_region(ref, y32, rows, n, ld);
    cpu->bias_add_bf16(y, bias, rows, n, ld);
    SAME_BF("bias_add_bf16", y, ref, ny);

    float *db = f_rand(n, 1), *db_ref = f_dup(db, n);
    free(y32);
    y32 = bf_widen(y, ny);
    cpu->bias_backward_f32(db_ref, y32, rows, n, ld);
    cpu->bias_backward_bf16(db, y, rows, n, ld);
    SAME_F("bias_backward_bf16", db, db_ref, n);
    free(y); free(bias); free(y32); free(bias32); free(ref); free(db); free(db_ref);
}

/* ---- embedding and scatter -------------------------------------------------------------------- */

static void test_embedding(void)
{
    int V = 50, d = 33, T = 200, n = 17;
    ops_bf16 *w = bf_rand((size_t)V * d, 1), *y = bf_rand((size_t)T * d, 1);
    int *ids = malloc(T * sizeof *ids), *pos = malloc(n * sizeof *pos);
    for (int t = 0; t < T; t++) ids[t] = tu_int(&rng, V);
    for (int i = 0; i < n; i++) pos[i] = 3 + 11 * i;  /* distinct, < T */
    size_t ny = (size_t)T * d;

    cpu->embedding_forward_bf16(y, w, ids, T, d);
    size_t bad = 0;
    for (int t = 0; t < T; t++) bad += memcmp(y + (size_t)t * d, w + (size_t)ids[t] * d, d * 2) != 0;
    CHECK_MSG(bad == 0, "embedding_forward_bf16: %zu rows are not their id's row", bad);

    ops_bf16 *dy = bf_rand(ny, 1);
    float *dy32 = bf_widen(dy, ny), *dw = f_rand((size_t)V * d, 1);
    float *dw_ref = f_dup(dw, (size_t)V * d);
    cpu->embedding_backward_f32(dw_ref, dy32, ids, T, d);
    cpu->embedding_backward_bf16(dw, dy, ids, T, d);
    SAME_F("embedding_backward_bf16", dw, dw_ref, (size_t)V * d);

    ops_bf16 *src = bf_rand((size_t)n * d, 1), *yref = bf_dup(y, ny);
    for (int i = 0; i < n; i++) memcpy(yref + (size_t)pos[i] * d, src + (size_t)i * d, d * 2);
    cpu->scatter_rows_forward_bf16(y, src, pos, n, d);
    SAME_BF("scatter_rows_forward_bf16", y, yref, ny);

    ops_bf16 *dsrc = bf_rand((size_t)n * d, 1), *dsrc_ref = bf_dup(dsrc, (size_t)n * d);
    float *dsrc32 = bf_widen(dsrc, (size_t)n * d);
    ops_bf16 *dy_ref = bf_dup(dy, ny);
    float *dyb32 = bf_widen(dy, ny);
    cpu->scatter_rows_backward_f32(dsrc32, dyb32, pos, n, d);
    narrow_region(dsrc_ref, dsrc32, n, d, d);
    narrow_region(dy_ref, dyb32, T, d, d);
    cpu->scatter_rows_backward_bf16(dsrc, dy, pos, n, d);
    SAME_BF("scatter_rows_backward_bf16 dsrc", dsrc, dsrc_ref, (size_t)n * d);
    SAME_BF("scatter_rows_backward_bf16 dy (rows zeroed)", dy, dy_ref, ny);
    CHECK(dy[(size_t)pos[0] * d] == 0 && dy[(size_t)pos[n - 1] * d + d - 1] == 0);

    free(w); free(y); free(ids); free(pos); free(dy); free(dy32); free(dw); free(dw_ref);
    free(src); free(yref); free(dsrc); free(dsrc_ref); free(dsrc32); free(dy_ref); free(dyb32);
}

/* ---- norms ------------------------------------------------------------------------------------ */

static void test_layernorm(void)
{
    int T = 67, d = 80;
    size_t nx = (size_t)T * d;
    ops_bf16 *x = bf_rand(nx, 2), *w = bf_rand(d, 1), *b = bf_rand(d, 1), *y = bf_rand(nx, 1);
    float *x32 = bf_widen(x, nx), *w32 = bf_widen(w, d), *b32 = bf_widen(b, d);
    float *y32 = malloc(nx * sizeof *y32);
    float mean[67], rstd[67], mean_ref[67], rstd_ref[67];
    ops_bf16 *ref = malloc(nx * sizeof *ref);
    cpu->layernorm_forward_f32(y32, mean_ref, rstd_ref, x32, w32, b32, T, d, 1e-6f);
    narrow_region(ref, y32, T, d, d);
    cpu->layernorm_forward_bf16(y, mean, rstd, x, w, b, T, d, 1e-6f);
    SAME_BF("layernorm_forward_bf16", y, ref, nx);
    SAME_F("layernorm_forward_bf16 mean", mean, mean_ref, (size_t)T);
    SAME_F("layernorm_forward_bf16 rstd", rstd, rstd_ref, (size_t)T);

    for (int with_params = 0; with_params < 2; with_params++) {
        ops_bf16 *dy = bf_rand(nx, 1), *dx = bf_rand(nx, 1), *dx_ref = bf_dup(dx, nx);
        float *dy32 = bf_widen(dy, nx), *dx32 = bf_widen(dx, nx);
        float *dw = f_rand(d, 1), *db = f_rand(d, 1), *dw_ref = f_dup(dw, d), *db_ref = f_dup(db, d);
        cpu->layernorm_backward_f32(dx32, with_params ? dw_ref : NULL, with_params ? db_ref : NULL,
                                    dy32, x32, w32, mean, rstd, T, d);
        narrow_region(dx_ref, dx32, T, d, d);
        cpu->layernorm_backward_bf16(dx, with_params ? dw : NULL, with_params ? db : NULL, dy, x, w,
                                     mean, rstd, T, d);
        SAME_BF("layernorm_backward_bf16 dx", dx, dx_ref, nx);
        SAME_F("layernorm_backward_bf16 dw", dw, dw_ref, (size_t)d);  /* NULL: untouched */
        SAME_F("layernorm_backward_bf16 db", db, db_ref, (size_t)d);
        free(dy); free(dx); free(dx_ref); free(dy32); free(dx32); free(dw); free(db);
        free(dw_ref); free(db_ref);
    }
    free(x); free(w); free(b); free(y); free(x32); free(w32); free(b32); free(y32); free(ref);
}

static void test_rmsnorm(void)
{
    int T = 45, d = 96;
    size_t nx = (size_t)T * d;
    ops_bf16 *x = bf_rand(nx, 2), *w = bf_rand(d, 1), *y = bf_rand(nx, 1), *res = bf_rand(nx, 2);
    float *w32 = bf_widen(w, d), *y32 = malloc(nx * sizeof *y32);
    float rstd[45], rstd_ref[45];
    ops_bf16 *ref = malloc(nx * sizeof *ref);

    for (int fused = 0; fused < 2; fused++) {
        /* fused: the reference's u is round(res + x), as the op's contract says */
        ops_bf16 *u = bf_dup(x, nx), *res_before = bf_dup(res, nx);
        if (fused)
            for (size_t i = 0; i < nx; i++)
                u[i] = ops_bf16_from_f32(ops_bf16_to_f32(res[i]) + ops_bf16_to_f32(x[i]));
        float *u32 = bf_widen(u, nx);
        cpu->rmsnorm_forward_f32(y32, rstd_ref, NULL, u32, w32, T, d, 1e-6f);
        narrow_region(ref, y32, T, d, d);
        cpu->rmsnorm_forward_bf16(y, rstd, fused ? res : NULL, x, w, T, d, 1e-6f);
        SAME_BF(fused ? "rmsnorm_forward_bf16 (fused) y" : "rmsnorm_forward_bf16 y", y, ref, nx);
        SAME_F("rmsnorm_forward_bf16 rstd", rstd, rstd_ref, (size_t)T);
        SAME_BF(fused ? "rmsnorm_forward_bf16 res = round(res + x)" : "rmsnorm_forward_bf16 res",
                res, fused ? u : res_before, nx);
        /* independently: y within one bf16 ulp of the double build on the same u */
        double *u64 = tu_to_f64(u32, nx), *w64 = tu_to_f64(w32, d), *y64 = tu_zeros(nx);
        double r64[45];
        cpu_rmsnorm_forward_f64(y64, r64, NULL, u64, w64, T, d, 1e-6f);
        double ul = bf_ulps(y, y64, nx, 1e-6);
        CHECK_MSG(ul <= 1.0, "rmsnorm_forward_bf16: %.3f bf16 ulps from the double build", ul);
        free(u64); free(w64); free(y64);

        ops_bf16 *dy = bf_rand(nx, 1), *du = bf_rand(nx, 1), *du_ref = bf_dup(du, nx);
        float *dy32 = bf_widen(dy, nx), *du32 = bf_widen(du, nx);
        float *dw = f_rand(d, 1), *dw_ref = f_dup(dw, d);
        cpu->rmsnorm_backward_f32(du32, dw_ref, dy32, u32, w32, rstd, T, d);
        narrow_region(du_ref, du32, T, d, d);
        cpu->rmsnorm_backward_bf16(du, dw, dy, u, w, rstd, T, d);
        SAME_BF("rmsnorm_backward_bf16 du", du, du_ref, nx);
        SAME_F("rmsnorm_backward_bf16 dw", dw, dw_ref, (size_t)d);
        free(u); free(res_before); free(u32); free(dy); free(du); free(du_ref); free(dy32);
        free(du32); free(dw); free(dw_ref);
    }
    free(x); free(w); free(y); free(res); free(w32); free(y32); free(ref);
}

/* ---- rotary ---------------------------------------------------------------------------------- */

static void test_rope(void)
{
    int T = 29, heads = 3, hd = 16, ldx = heads * hd + 5;
    size_t nx = (size_t)T * ldx;
    ops_rope ropes[3] = {
        {.kind = OPS_ROPE_1D, .head_dim = hd, .theta = 1e6f},
        {.kind = OPS_ROPE_VISION_2D, .head_dim = hd, .theta = 1e4f},
        {.kind = OPS_ROPE_MROPE, .head_dim = hd, .theta = 1e6f, .mrope_section = {2, 3, 3}},
    };
    int *pos = malloc(3 * T * sizeof *pos);
    for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&rng, 3000);
    for (int k = 0; k < 3; k++)
        for (int dir = 0; dir < 2; dir++) {
            ops_bf16 *x = bf_rand(nx, 2), *ref = bf_dup(x, nx);
            float *x32 = bf_widen(x, nx);
            if (dir == 0) {
                cpu->rope_forward_f32(x32, pos, T, heads, ldx, &ropes[k]);
                cpu->rope_forward_bf16(x, pos, T, heads, ldx, &ropes[k]);
            } else {
                cpu->rope_backward_f32(x32, pos, T, heads, ldx, &ropes[k]);
                cpu->rope_backward_bf16(x, pos, T, heads, ldx, &ropes[k]);
            }
            narrow_region(ref, x32, T, heads * hd, ldx);
            char what[64];
            snprintf(what, sizeof what, "rope_%s_bf16 kind %d", dir ? "backward" : "forward", k);
            SAME_BF(what, x, ref, nx);  /* the 5 padding columns of each row untouched */
            free(x); free(ref); free(x32);
        }
    free(pos);
}

/* ---- attention ------------------------------------------------------------------------------- */

static void test_attention_case(int causal, int H, int KV, int hd)
{
    int cu[4] = {0, 5, 17, 30}, T = 30;
    int W = (H + 2 * KV) * hd + 3, ldo = H * hd + 2;  /* q | k | v of one fused buffer, padded */
    size_t nqkv = (size_t)T * W, no = (size_t)T * ldo;
    ops_attn at = {.cu_seqlens = cu, .num_seqs = 3, .total_tokens = T, .max_seqlen = 13,
                   .num_heads = H, .num_kv_heads = KV, .head_dim = hd, .ldq = W, .ldk = W,
                   .ldv = W, .ldo = ldo, .scale = 1.0f / sqrtf((float)hd), .causal = causal};
    ops_bf16 *qkv = bf_rand(nqkv, 2), *o = bf_rand(no, 1), *o_ref = bf_dup(o, no);
    float *qkv32 = bf_widen(qkv, nqkv), *o32 = bf_widen(o, no);
    float *lse = malloc((size_t)T * H * sizeof *lse), *lse_ref = malloc((size_t)T * H * sizeof *lse);
    const ops_bf16 *q = qkv, *k = qkv + H * hd, *v = qkv + (H + KV) * hd;
    const float *q32 = qkv32, *k32 = qkv32 + H * hd, *v32 = qkv32 + (H + KV) * hd;
    cpu->attention_forward_f32(o32, lse_ref, q32, k32, v32, &at);
    narrow_region(o_ref, o32, T, H * hd, ldo);
    cpu->attention_forward_bf16(o, lse, q, k, v, &at);
    char what[80];
    snprintf(what, sizeof what, "attention_forward_bf16 causal%d H%d KV%d hd%d", causal, H, KV, hd);
    SAME_BF(what, o, o_ref, no);
    SAME_F("attention_forward_bf16 lse", lse, lse_ref, (size_t)T * H);

    /* backward into one fused d_qkv buffer with non-zero contents (the += contract): each of
     * dq, dk, dv must leave the others' columns and the padding alone */
    ops_bf16 *dout = bf_rand(no, 1), *dqkv = bf_rand(nqkv, 1), *dqkv_ref = bf_dup(dqkv, nqkv);
    float *dout32 = bf_widen(dout, no), *dqkv32 = bf_widen(dqkv, nqkv);
    float *oo32 = bf_widen(o, no);  /* the op's rounded o, as a model would pass it */
    cpu->attention_backward_f32(dqkv32, dqkv32 + H * hd, dqkv32 + (H + KV) * hd, dout32, q32, k32,
                                v32, oo32, lse, &at);
    narrow_region(dqkv_ref, dqkv32, T, H * hd, W);
    narrow_region(dqkv_ref + H * hd, dqkv32 + H * hd, T, KV * hd, W);
    narrow_region(dqkv_ref + (H + KV) * hd, dqkv32 + (H + KV) * hd, T, KV * hd, W);
    cpu->attention_backward_bf16(dqkv, dqkv + H * hd, dqkv + (H + KV) * hd, dout, q, k, v, o, lse,
                                 &at);
    snprintf(what, sizeof what, "attention_backward_bf16 causal%d H%d KV%d hd%d", causal, H, KV, hd);
    SAME_BF(what, dqkv, dqkv_ref, nqkv);

    free(qkv); free(o); free(o_ref); free(qkv32); free(o32); free(lse); free(lse_ref);
    free(dout); free(dqkv); free(dqkv_ref); free(dout32); free(dqkv32); free(oo32);
}

/* ---- SwiGLU (gate | up fused, ld_in = 2n) ------------------------------------------------------ */

static void test_swiglu(void)
{
    int T = 41, n = 75, ld = 2 * n;
    size_t nin = (size_t)T * ld, ny = (size_t)T * n;
    ops_bf16 *gu = bf_rand(nin, 3), *y = bf_rand(ny, 1), *ref = malloc(ny * sizeof *ref);
    float *gu32 = bf_widen(gu, nin), *y32 = malloc(ny * sizeof *y32);
    cpu->swiglu_forward_f32(y32, gu32, gu32 + n, T, n, ld);
    narrow_region(ref, y32, T, n, n);
    cpu->swiglu_forward_bf16(y, gu, gu + n, T, n, ld);
    SAME_BF("swiglu_forward_bf16", y, ref, ny);

    ops_bf16 *dy = bf_rand(ny, 1), *dgu = bf_rand(nin, 1), *dgu_ref = bf_dup(dgu, nin);
    float *dy32 = bf_widen(dy, ny), *dgu32 = bf_widen(dgu, nin);
    cpu->swiglu_backward_f32(dgu32, dgu32 + n, dy32, gu32, gu32 + n, T, n, ld);
    narrow_region(dgu_ref, dgu32, T, 2 * n, ld);
    cpu->swiglu_backward_bf16(dgu, dgu + n, dy, gu, gu + n, T, n, ld);
    SAME_BF("swiglu_backward_bf16 (dgate | dup interleaved)", dgu, dgu_ref, nin);
    free(gu); free(y); free(ref); free(gu32); free(y32); free(dy); free(dgu); free(dgu_ref);
    free(dy32); free(dgu32);
}

/* ---- fused LM head + cross-entropy ---------------------------------------------------------- */

static void test_lmhead_case(int T, int d, int V)
{
    size_t nh = (size_t)T * d, nw = (size_t)V * d;
    ops_bf16 *h = bf_rand(nh, 1), *w = bf_rand(nw, 1), *dh = bf_rand(nh, 0.01);
    int *labels = malloc(T * sizeof *labels);
    int counted = 0;
    for (int t = 0; t < T; t++) {
        labels[t] = t % 3 == 1 ? OPS_LABEL_IGNORE : tu_int(&rng, V);
        counted += labels[t] != OPS_LABEL_IGNORE;
    }
    float *h32 = bf_widen(h, nh), *w32 = bf_widen(w, nw), *dh_before = bf_widen(dh, nh);
    float *dh32 = f_dup(dh_before, nh), *dw = f_rand(nw, 0.01), *dw32 = f_dup(dw, nw);
    size_t work_len = 64 * ((size_t)2 * d + 3 + V) + 64;
    float *work = malloc(work_len * sizeof *work);
    float loss_ref, loss, loss_fwd;
    cpu->lmhead_xent_f32(&loss_ref, dh32, dw32, h32, w32, labels, T, d, V, (float)counted, work,
                         work_len);
    cpu->lmhead_xent_bf16(&loss, dh, dw, h, w, labels, T, d, V, (float)counted, work, work_len);
    cpu->lmhead_xent_bf16(&loss_fwd, NULL, NULL, h, w, labels, T, d, V, (float)counted, work,
                          work_len);
    char what[64];
    snprintf(what, sizeof what, "lmhead_xent_bf16 T%d d%d V%d", T, d, V);
    double le = fabs((double)loss - loss_ref) / fabs((double)loss_ref);
    CHECK_MSG(isfinite(loss) && le <= 1e-5, "%s: loss %.9g vs fp32 op %.9g (rel %.2g, bound 1e-5)",
              what, loss, loss_ref, le);
    CHECK_MSG(memcmp(&loss, &loss_fwd, sizeof loss) == 0, "%s: forward-only loss %.9g != %.9g",
              what, loss_fwd, loss);
    /* dh and dw (started non-zero: +=) against the fp32 op's: the bf16 gradient tile (2^-9
     * relative per element) and dh's one rounding stay well within 1e-2 of the scale */
    float *dh_got = bf_widen(dh, nh);
    double eh = f_rel(dh_got, dh32, nh);
    CHECK_MSG(eh <= 1e-2, "%s: dh rel err %.3g (bound 1e-2)", what, eh);
    double ew = f_rel(dw, dw32, nw);
    CHECK_MSG(ew <= 1e-2, "%s: dw rel err %.3g (bound 1e-2)", what, ew);
    fprintf(stderr, "  %s: loss rel %.2g, dh rel %.2g, dw rel %.2g against the fp32 op\n", what,
            le, eh, ew);
    /* masked rows get no gradient: their dh stays bit for bit */
    size_t touched = 0;
    ops_bf16 *dh_b16 = malloc(nh * sizeof *dh_b16);
    for (size_t i = 0; i < nh; i++) dh_b16[i] = ops_bf16_from_f32(dh_before[i]);
    for (int t = 0; t < T; t++)
        if (labels[t] == OPS_LABEL_IGNORE)
            touched += memcmp(dh + (size_t)t * d, dh_b16 + (size_t)t * d, (size_t)d * 2) != 0;
    CHECK_MSG(touched == 0, "%s: %zu masked rows of dh changed", what, touched);
    /* a label outside [0, V) that is not the ignore label: NaN, loudly */
    labels[0] = V;
    cpu->lmhead_xent_bf16(&loss, NULL, NULL, h, w, labels, T, d, V, (float)counted, work, work_len);
    CHECK_MSG(isnan(loss), "%s: a label out of range gave loss %g, not NaN", what, loss);
    free(h); free(w); free(dh); free(labels); free(h32); free(w32); free(dh_before); free(dh32);
    free(dw); free(dw32); free(work); free(dh_got); free(dh_b16);
}

/* ---- optimizer ---------------------------------------------------------------------------------- */

static void test_adamw(void)
{
    size_t n = 100003;
    float *p = f_rand(n, 1), *m = f_rand(n, 0.01), *v = f_rand(n, 0.001), *g = f_rand(n, 0.1);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    float *p_ref = f_dup(p, n), *m_ref = f_dup(m, n), *v_ref = f_dup(v, n);
    float gs = 0.75f;
    ops_bf16 *p16 = bf_rand(n, 1);
    cpu->adamw_step_f32(p_ref, m_ref, v_ref, g, &gs, n, 1e-3, 0.9, 0.999, 1e-8, 0.1, 7);
    cpu->adamw_step_mixed(p, p16, m, v, g, &gs, n, 1e-3, 0.9, 0.999, 1e-8, 0.1, 7);
    SAME_F("adamw_step_mixed p", p, p_ref, n);
    SAME_F("adamw_step_mixed m", m, m_ref, n);
    SAME_F("adamw_step_mixed v", v, v_ref, n);
    ops_bf16 *p16_ref = malloc(n * sizeof *p16_ref);
    narrow_region(p16_ref, p_ref, 1, (int)n, (int)n);
    SAME_BF("adamw_step_mixed p16 = round(p)", p16, p16_ref, n);
    free(p); free(m); free(v); free(g); free(p_ref); free(m_ref); free(v_ref); free(p16);
    free(p16_ref);
}

/* every bf16 entry is set in the CPU table (ops.h: no backend leaves one NULL) */
static void test_table_complete(void)
{
    const void *entries[] = {
        (const void *)cpu->f32_to_bf16, (const void *)cpu->bf16_to_f32, (const void *)cpu->add_bf16,
        (const void *)cpu->axpy_bf16, (const void *)cpu->fill_bf16, (const void *)cpu->matmul_bf16,
        (const void *)cpu->matmul_bf16_f32out, (const void *)cpu->bias_add_bf16,
        (const void *)cpu->bias_backward_bf16, (const void *)cpu->embedding_forward_bf16,
        (const void *)cpu->embedding_backward_bf16, (const void *)cpu->scatter_rows_forward_bf16,
        (const void *)cpu->scatter_rows_backward_bf16, (const void *)cpu->layernorm_forward_bf16,
        (const void *)cpu->layernorm_backward_bf16, (const void *)cpu->rmsnorm_forward_bf16,
        (const void *)cpu->rmsnorm_backward_bf16, (const void *)cpu->rope_forward_bf16,
        (const void *)cpu->rope_backward_bf16, (const void *)cpu->attention_forward_bf16,
        (const void *)cpu->attention_backward_bf16, (const void *)cpu->swiglu_forward_bf16,
        (const void *)cpu->swiglu_backward_bf16, (const void *)cpu->quickgelu_forward_bf16,
        (const void *)cpu->quickgelu_backward_bf16, (const void *)cpu->gelu_forward_bf16,
        (const void *)cpu->gelu_backward_bf16, (const void *)cpu->lmhead_xent_bf16,
        (const void *)cpu->adamw_step_mixed,
    };
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        CHECK_MSG(entries[i] != NULL, "CPU table bf16 entry %zu (in ops.h order) is NULL", i);
}

int main(int argc, char **argv)
{
    rng.s = argc > 1 ? strtoull(argv[1], NULL, 10) : 20261126u;
    fprintf(stderr, "test_ops_bf16: seed %llu\n", (unsigned long long)rng.s);
    cpu = ops_cpu();
    test_table_complete();
    test_nan_never_passes();
    test_rounding();
    test_elementwise();
    test_unary("quickgelu", cpu->quickgelu_forward_f32, cpu->quickgelu_forward_bf16,
               cpu->quickgelu_backward_f32, cpu->quickgelu_backward_bf16, cpu_quickgelu_forward_f64);
    test_unary("gelu", cpu->gelu_forward_f32, cpu->gelu_forward_bf16, cpu->gelu_backward_f32,
               cpu->gelu_backward_bf16, cpu_gelu_forward_f64);
    test_matmul();
    test_bias();
    test_embedding();
    test_layernorm();
    test_rmsnorm();
    test_rope();
    test_attention_case(1, 4, 2, 16);  /* the decoder: causal, grouped-query */
    test_attention_case(0, 2, 2, 40);  /* the vision tower: bidirectional per image, hd 80/2 */
    test_swiglu();
    test_lmhead_case(300, 24, 50);     /* more rows than one chunk, one vocabulary tile */
    test_lmhead_case(20, 16, 8300);    /* several vocabulary tiles */
    test_adamw();
    char msg[256];
    CHECK_MSG(ops_cpu_bf16_error(msg, sizeof msg) == 0, "a bf16 twin recorded: %s", msg);
    return check_report("test_ops_bf16");
}
