/* The AVX2 sgemm engine (kernels/cpu/sgemm_avx2_cpu.c) against a naive double-precision product:
 * all four transpose cases, shapes on both sides of every blocking edge (the 6 x 16 tile, KC, MC,
 * NC), leading dimensions larger than needed with NaN in A's and B's unused columns and sentinels
 * around C (nothing outside C's m x n may be read into a result or written), alpha 1 and -0.5,
 * beta 0 over a NaN-filled C (never read), 1 and 0.25, k = 0, and calls from short-lived
 * threads. Then through CPU_FN(matmul): under ADAPT_SGEMM=own (the test 'sgemm') the product is
 * bit-identical for 1, 2 and 3 OpenMP threads and to the engine called on the whole of C at once;
 * under ADAPT_SGEMM=blas (the test 'sgemm_blas') matmul is BLAS (not bit-equal to the engine),
 * and both agree within the bound. */
#include "../check.h"
#include "kernels_cpu.h"
#include "test_ops_util.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static const float SENTINEL = 12345.0f;

/* one product's operands, laid out with padding: A and B have ld = needed + pad (padding NaN),
 * C sits at row 1, column 2 of a (m + 2) x (n + 5) array of sentinels */
typedef struct sg_case {
    int    m, n, k, ta, tb, lda, ldb, ldc;
    float  alpha, beta;
    float *a, *b, *cbuf, *c;   /* c = cbuf + ldc + 2 */
    double *ref, *mag;          /* [m * n]: the exact result, and the bound's magnitude */
} sg_case;

static float *rand_f32(tu_rng *r, size_t n)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)tu_uniform(r);
    return x;
}

/* NaN in the columns of a row-major [rows, ld] array past `used` */
static void poison_pad(float *x, int rows, int used, int ld)
{
    for (int r = 0; r < rows; r++)
        for (int c = used; c < ld; c++) x[(size_t)r * ld + c] = NAN;
}

static void case_make(sg_case *t, int m, int n, int k, int ta, int tb, float alpha, float beta,
                      uint64_t seed)
{
    tu_rng rng = {seed};
    t->m = m; t->n = n; t->k = k; t->ta = ta; t->tb = tb; t->alpha = alpha; t->beta = beta;
    int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    t->lda = a_cols + 3; t->ldb = b_cols + 1; t->ldc = n + 5;
    t->a = rand_f32(&rng, (size_t)a_rows * t->lda);
    t->b = rand_f32(&rng, (size_t)b_rows * t->ldb);
    poison_pad(t->a, a_rows, a_cols, t->lda);
    poison_pad(t->b, b_rows, b_cols, t->ldb);
    size_t lc = (size_t)(m + 2) * t->ldc;
    t->cbuf = malloc(lc * sizeof(float));
    for (size_t i = 0; i < lc; i++) t->cbuf[i] = SENTINEL;
    t->c = t->cbuf + t->ldc + 2;
    t->ref = malloc(((size_t)m * n + 1) * sizeof(double));
    t->mag = malloc(((size_t)m * n + 1) * sizeof(double));
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float c0 = (float)tu_uniform(&rng);
            t->c[(size_t)i * t->ldc + j] = beta == 0 ? NAN : c0;
            double acc = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double x = ta ? t->a[(size_t)p * t->lda + i] : t->a[(size_t)i * t->lda + p];
                double y = tb ? t->b[(size_t)j * t->ldb + p] : t->b[(size_t)p * t->ldb + j];
                acc += x * y;
                mag += fabs(x * y);
            }
            double bc = beta == 0 ? 0 : (double)beta * c0;
            t->ref[(size_t)i * n + j] = alpha * acc + bc;
            t->mag[(size_t)i * n + j] = fabs(alpha) * mag + fabs(bc);
        }
}

static void case_free(sg_case *t)
{
    free(t->a); free(t->b); free(t->cbuf); free(t->ref); free(t->mag);
}

/* A copy of C's starting values (padding included), to rerun the product on */
static float *c_save(const sg_case *t)
{
    size_t lc = (size_t)(t->m + 2) * t->ldc;
    float *s = malloc(lc * sizeof(float));
    memcpy(s, t->cbuf, lc * sizeof(float));
    return s;
}

static void c_restore(sg_case *t, const float *s)
{
    memcpy(t->cbuf, s, (size_t)(t->m + 2) * t->ldc * sizeof(float));
}

/* Errors beyond fp32 rounding of a k-term sum, and writes outside C. Returns the count. */
static int case_check(const sg_case *t, const char *what)
{
    int bad = 0, outside = 0;
    /* a k-term float sum (FMAs, blocked) rounds at most ~k + 2 times; 2x margin */
    double u = 0x1p-24 * 2.0 * (t->k + 2);
    for (int i = 0; i < t->m; i++)
        for (int j = 0; j < t->n; j++) {
            double got = t->c[(size_t)i * t->ldc + j], want = t->ref[(size_t)i * t->n + j];
            double lim = u * t->mag[(size_t)i * t->n + j] + 1e-30;
            if (!(fabs(got - want) <= lim)) {
                if (bad < 3)
                    fprintf(stderr, "  %s m=%d n=%d k=%d ta=%d tb=%d alpha=%g beta=%g: "
                            "C[%d][%d] = %.9g, want %.9g\n", what, t->m, t->n, t->k, t->ta,
                            t->tb, t->alpha, t->beta, i, j, got, want);
                bad++;
            }
        }
    for (int i = -1; i <= t->m; i++)
        for (int j = -2; j < t->ldc - 2; j++) {
            if (i >= 0 && i < t->m && j >= 0 && j < t->n) continue;
            outside += t->c[(ptrdiff_t)i * t->ldc + j] != SENTINEL;
        }
    CHECK_MSG(bad == 0, "%s m=%d n=%d k=%d ta=%d tb=%d alpha=%g beta=%g: %d wrong", what, t->m,
              t->n, t->k, t->ta, t->tb, t->alpha, t->beta, bad);
    CHECK_MSG(outside == 0, "%s m=%d n=%d k=%d ta=%d tb=%d: %d writes outside C", what, t->m, t->n,
              t->k, t->ta, t->tb, outside);
    return bad + outside;
}

static int engine(sg_case *t)
{
    return cpu_sgemm_avx2(t->c, t->a, t->b, t->m, t->n, t->k, t->ta, t->tb, t->lda, t->ldb,
                          t->ldc, t->alpha, t->beta);
}

/* every transpose case, alpha and beta on one shape, through the engine on one thread */
static void test_shape(int m, int n, int k)
{
    static const float alphas[] = {1.0f, -0.5f}, betas[] = {0.0f, 1.0f, 0.25f};
    for (int tr = 0; tr < 4; tr++)
        for (int ai = 0; ai < 2; ai++)
            for (int bi = 0; bi < 3; bi++) {
                sg_case t;
                case_make(&t, m, n, k, tr >> 1, tr & 1, alphas[ai], betas[bi],
                          1000003u * m + 1009u * n + k + 17u * (tr * 6 + ai * 3 + bi));
                CHECK(engine(&t) == 1);
                case_check(&t, "engine");
                case_free(&t);
            }
}

static void test_engine_shapes(void)
{
    /* the tile is 6 x 16; KC 256, MC 144, NC 2048 (sgemm_avx2_cpu.c) */
    static const int shapes[][3] = {
        {1, 1, 1},     {1, 1, 7},      {5, 15, 3},     {6, 16, 8},     {7, 17, 9},
        {6, 16, 255},  {7, 15, 256},   {5, 17, 257},   {12, 32, 513},  {143, 33, 40},
        {144, 31, 41}, {145, 47, 300}, {1, 300, 20},   {300, 1, 20},   {289, 50, 64},
        {13, 2049, 30}, {37, 2047, 70},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        test_shape(shapes[s][0], shapes[s][1], shapes[s][2]);
}

/* one large product per transpose case: the forward's 1552 x 2816 x 512, a few slabs, blocks
 * and panels deep */
static void test_engine_large(void)
{
    for (int tr = 0; tr < 4; tr++) {
        sg_case t;
        int m = tr == 1 ? 1552 : 400, n = tr == 1 ? 2816 : 2100, k = tr == 1 ? 512 : 600;
        case_make(&t, m, n, k, tr >> 1, tr & 1, 1.0f, tr == 2 ? 0.25f : 1.0f, 77 + tr);
        CHECK(engine(&t) == 1);
        case_check(&t, "engine large");
        case_free(&t);
    }
}

/* k = 0 is C = beta C (zeros for beta 0 over NaN); alpha = 0 likewise reads neither A nor B */
static void test_engine_degenerate(void)
{
    static const float betas[] = {0.0f, 1.0f, 0.25f};
    for (int bi = 0; bi < 3; bi++) {
        sg_case t;
        case_make(&t, 9, 20, 0, 0, 0, 1.0f, betas[bi], 5 + bi);
        CHECK(engine(&t) == 1);
        case_check(&t, "engine k=0");
        case_free(&t);
        case_make(&t, 9, 20, 30, 1, 0, 0.0f, betas[bi], 50 + bi);
        for (int i = 0; i < 9 * 30; i++) t.a[i] = NAN;
        CHECK(engine(&t) == 1);
        case_check(&t, "engine alpha=0");
        case_free(&t);
    }
}

/* The engine on threads that come and go (a caller's own threads, not OpenMP's pool): each gets
 * its own packing buffer, freed when it ends (run under valgrind to see no leak). */
static void *engine_thread(void *arg)
{
    sg_case *t = arg;
    return (void *)(intptr_t)engine(t);
}

static void test_engine_threads(void)
{
    for (int round = 0; round < 3; round++) {
        sg_case t[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            case_make(&t[i], 50 + 7 * i, 70, 300, i, 1 - i, 1.0f, 0.0f, 300 + round * 2 + i);
            CHECK(pthread_create(&th[i], NULL, engine_thread, &t[i]) == 0);
        }
        for (int i = 0; i < 2; i++) {
            void *ret = NULL;
            CHECK(pthread_join(th[i], &ret) == 0);
            CHECK((intptr_t)ret == 1);
            case_check(&t[i], "engine on a pthread");
            case_free(&t[i]);
        }
    }
}

static int bitwise_equal(const sg_case *t, const float *x, const float *y)
{
    return memcmp(x, y, (size_t)(t->m + 2) * t->ldc * sizeof(float)) == 0;
}

/* matmul as the model calls it: own path bit for bit across thread counts and equal to the
 * engine on all of C; BLAS path within the bound (and really BLAS: not bit-equal to the engine) */
static void test_matmul(int use_blas)
{
    static const int shapes[][3] = {{301, 203, 700}, {97, 517, 300}, {1552, 128, 512}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tr = 0; tr < 4; tr++) {
            sg_case t;
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            float beta = tr == 3 ? 1.0f : tr == 2 ? 0.25f : 0.0f;
            case_make(&t, m, n, k, tr >> 1, tr & 1, tr == 1 ? -0.5f : 1.0f, beta, 900 + s * 4 + tr);
            float *c0 = c_save(&t), *c_engine = NULL;
            CHECK(engine(&t) == 1);
            c_engine = c_save(&t);
            int differs = 0;
            for (int threads = 1; threads <= 3; threads++) {
                c_restore(&t, c0);
#ifdef _OPENMP
                omp_set_num_threads(threads);
#endif
                cpu_matmul_f32(t.c, t.a, t.b, m, n, k, t.ta, t.tb, t.lda, t.ldb, t.ldc, t.alpha,
                               t.beta);
                if (use_blas) {
                    case_check(&t, "matmul (blas)");
                    differs |= !bitwise_equal(&t, t.cbuf, c_engine);
                } else {
                    CHECK_MSG(bitwise_equal(&t, t.cbuf, c_engine),
                              "matmul (own) m=%d n=%d k=%d ta=%d tb=%d, %d threads: not bit-equal "
                              "to the engine on one thread", m, n, k, t.ta, t.tb, threads);
                    case_check(&t, "matmul (own)");
                }
            }
            if (use_blas)
                CHECK_MSG(differs, "ADAPT_SGEMM=blas m=%d n=%d k=%d: bit-equal to the engine, "
                          "so not BLAS", m, n, k);
            free(c0); free(c_engine);
            case_free(&t);
        }
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
}

int main(void)
{
    if (!cpu_sgemm_avx2_supported()) {
        fprintf(stderr, "no AVX2+FMA on this CPU: the engine is never used, nothing to test\n");
        return 77;
    }
    const char *mode = getenv("ADAPT_SGEMM");
    int use_blas = mode && strcmp(mode, "blas") == 0;
#if !ADAPT_HAVE_BLAS
    if (use_blas) {
        fprintf(stderr, "built without BLAS: ADAPT_SGEMM=blas has no BLAS to select\n");
        return 77;
    }
#endif
    /* the engine's own checks do not depend on ADAPT_SGEMM: run them once, in the `sgemm` test
     * (their double references are most of this test's time, several minutes under ASan) */
    if (!use_blas) {
        test_engine_shapes();
        test_engine_large();
        test_engine_degenerate();
        test_engine_threads();
    }
    test_matmul(use_blas);
    return check_report(use_blas ? "sgemm_blas" : "sgemm");
}
