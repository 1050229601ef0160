/* bench_sgemm: the AVX2 sgemm engine (kernels/cpu/sgemm_avx2_cpu.c) against OpenBLAS as matmul
 * calls it without the engine, on the products of one training step of issue 4's benchmark model.
 *
 * The one idea: both sides run under the same split of C into one part per OpenMP thread (rows
 * when C is tall, columns when wide, in multiples of the 6 x 16 tile, as matmul_cpu.c's
 * mm_parallel does) with single-threaded work per part, and they alternate call by call, so
 * machine noise falls on both alike. The shapes are those CPU_FN(matmul) saw in one step of
 * bench-train-step (tests/data/bench_qwen2vl_20m.json, batch 8, 1552 tokens, 2048 patches),
 * with how often each occurs; the total weighs each shape by that count.
 *
 *   OMP_NUM_THREADS=2 OMP_PROC_BIND=close OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1 \
 *     bench-sgemm [--reps N] [--cold] */
#include "kernels_cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if ADAPT_HAVE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* one product of the step: C [m, n] (ldc) = alpha op(A) op(B) + beta C, `count` times a step */
typedef struct bench_gemm {
    int m, n, k, trans_a, trans_b, lda, ldb, ldc;
    float beta;
    int count;
} bench_gemm;

/* captured from CPU_FN(matmul) during one bench-train-step step (alpha is always 1) */
static const bench_gemm bench_step_gemms[] = {
    /*   m     n     k  ta tb   lda   ldb   ldc beta count */
    { 128,  512, 8192, 0, 0, 8192,  512,  512, 1, 1},
    { 128, 8192,  512, 0, 1,  512,  512, 8192, 0, 1},
    { 128,  512, 1552, 1, 0,  768,  512,  512, 1, 8},
    { 256, 1176, 2048, 1, 0,  256, 1176, 1176, 1, 1},
    { 256,  512, 8192, 0, 0, 8192,  512,  512, 1, 3},
    { 256, 8192,  512, 0, 1,  512,  512, 8192, 0, 3},
    { 256, 1024, 2048, 1, 0,  256, 1024, 1024, 1, 4},
    { 256,  256, 2048, 1, 0,  256,  256,  256, 1, 4},
    { 512, 1024, 1024, 0, 0, 1024, 1024, 1024, 0, 1},
    { 512, 1024, 1024, 0, 1, 1024, 1024, 1024, 0, 1},
    { 512, 1024,  512, 0, 0,  512, 1024, 1024, 0, 1},
    { 512, 1024,  512, 1, 0,  512, 1024, 1024, 1, 1},
    { 512, 1408,  896, 1, 0,  512, 1408, 1408, 1, 1},
    { 512,  512, 1024, 0, 1, 1024, 1024,  512, 0, 1},
    { 512,  512,  896, 1, 0,  512,  512,  512, 1, 1},
    { 512, 1408, 1552, 1, 0,  512, 1408, 1408, 1, 3},
    { 512,  512, 1552, 1, 0,  512,  512,  512, 1, 3},
    { 512,  512, 1552, 1, 0,  768,  512,  512, 1, 4},
    { 768,  256, 2048, 1, 0,  768,  256,  256, 1, 4},
    { 896, 1408,  512, 0, 0,  512, 1408, 1408, 0, 1},
    { 896,  512, 1408, 0, 0, 2816,  512,  512, 0, 1},
    { 896,  512, 1408, 0, 0, 2816,  512,  512, 1, 1},
    { 896,  512, 1408, 0, 1, 1408, 1408,  512, 0, 1},
    { 896,  512,  512, 0, 0,  512,  512,  512, 0, 1},
    { 896,  512,  512, 0, 1,  512,  512,  512, 0, 1},
    { 896, 1408,  512, 0, 1,  512,  512, 2816, 0, 2},
    {1024, 1024,  512, 1, 0, 1024, 1024, 1024, 1, 1},
    {1024,  256, 2048, 1, 0, 1024,  256,  256, 1, 4},
    {1408,  512,  896, 1, 0, 2816,  512,  512, 1, 2},
    {1408,  512, 1552, 1, 0, 2816,  512,  512, 1, 6},
    {1552, 1408,  512, 0, 0,  512, 1408, 1408, 0, 3},
    {1552,  512, 1408, 0, 0, 2816,  512,  512, 0, 3},
    {1552,  512, 1408, 0, 0, 2816,  512,  512, 1, 3},
    {1552,  512, 1408, 0, 1, 1408, 1408,  512, 0, 3},
    {1552,  512,  512, 0, 0,  512,  512,  512, 0, 3},
    {1552,  512,  512, 0, 1,  512,  512,  512, 0, 3},
    {1552,  512,  512, 0, 0,  768,  512,  512, 0, 4},
    {1552,  512,  512, 0, 1,  512,  512,  768, 0, 4},
    {1552, 1408,  512, 0, 1,  512,  512, 2816, 0, 6},
    {1552,  128,  512, 0, 1,  512,  512,  768, 0, 8},
    {1552,  512,  128, 0, 0,  768,  512,  512, 1, 8},
    {2048,  256, 1176, 0, 1, 1176, 1176,  256, 0, 1},
    {2048, 1024,  256, 0, 0,  256, 1024, 1024, 0, 4},
    {2048, 1024,  256, 0, 1,  256,  256, 1024, 0, 4},
    {2048,  256, 1024, 0, 0, 1024,  256,  256, 0, 4},
    {2048,  256, 1024, 0, 1, 1024, 1024,  256, 0, 4},
    {2048,  256,  256, 0, 0,  256,  256,  256, 0, 4},
    {2048,  256,  256, 0, 1,  256,  256,  256, 0, 4},
    {2048,  256,  768, 0, 0,  768,  256,  256, 0, 4},
    {2048,  768,  256, 0, 1,  256,  256,  768, 0, 4},
    {8192,  512,  128, 1, 0, 8192,  512,  512, 1, 1},
    {8192,  512,  256, 1, 0, 8192,  512,  512, 1, 3},
};
enum { BENCH_NSHAPES = sizeof bench_step_gemms / sizeof bench_step_gemms[0] };

typedef enum { BENCH_OWN, BENCH_BLAS } bench_side;

/* one shape's operands */
typedef struct bench_buf {
    float *a, *b, *c;
} bench_buf;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *bench_fill(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof(float));
    if (!p) { fprintf(stderr, "bench-sgemm: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

/* one thread's part under matmul's split, on one side */
static void bench_part(const bench_gemm *g, const bench_buf *x, bench_side side, int nt, int t)
{
    int by_rows = g->m >= g->n, len = by_rows ? g->m : g->n, unit = by_rows ? 6 : 16;
    int chunk = ((len + nt - 1) / nt + unit - 1) / unit * unit;
    int lo = t * chunk, hi = lo + chunk < len ? lo + chunk : len;
    if (lo >= hi) return;
    const float *a = x->a, *b = x->b;
    float *c = x->c + (by_rows ? (size_t)lo * g->ldc : (size_t)lo);
    int m = g->m, n = g->n;
    if (by_rows) { a += g->trans_a ? (size_t)lo : (size_t)lo * g->lda; m = hi - lo; }
    else { b += g->trans_b ? (size_t)lo * g->ldb : (size_t)lo; n = hi - lo; }
    if (side == BENCH_OWN) {
        cpu_sgemm_avx2(c, a, b, m, n, g->k, g->trans_a, g->trans_b, g->lda, g->ldb, g->ldc, 1.0f,
                       g->beta);
        return;
    }
#if ADAPT_HAVE_BLAS
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                g->trans_b ? CblasTrans : CblasNoTrans, m, n, g->k, 1.0f, a, g->lda, b, g->ldb,
                g->beta, c, g->ldc);
#endif
}

/* --cold: a buffer larger than the L3 written before each timed product, so its operands come
 * from memory as in the training step (where other ops run between products), not from cache */
static float *bench_flush_buf;
enum { BENCH_FLUSH_FLOATS = 12 << 20 };   /* 48 MB */

static void bench_flush(void)
{
    if (!bench_flush_buf) return;
#pragma omp parallel for
    for (size_t i = 0; i < BENCH_FLUSH_FLOATS; i += 16) bench_flush_buf[i] += 1.0f;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One product on one side, in one parallel region as matmul runs it: its wall seconds, and in
 * *cpu the CPU seconds its threads spent on it, summed (what the product costs the cores; on a
 * machine shared with other work it is the steadier of the two, as descheduled time is left
 * out). */
static double bench_time(const bench_gemm *g, const bench_buf *x, bench_side side, double *cpu)
{
    bench_flush();
    double t0 = now_s(), sum = 0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : sum)
    {
        double c0 = cpu_s();
        bench_part(g, x, side, omp_get_num_threads(), omp_get_thread_num());
        sum += cpu_s() - c0;
    }
#else
    double c0 = cpu_s();
    bench_part(g, x, side, 1, 0);
    sum = cpu_s() - c0;
#endif
    *cpu = sum;
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cold") == 0) bench_flush_buf = calloc(BENCH_FLUSH_FLOATS, 4);
        else { fprintf(stderr, "usage: bench-sgemm [--reps N] [--cold]\n"); return 2; }
    }
    if (reps < 1) reps = 1;
    if (!cpu_sgemm_avx2_supported()) {
        fprintf(stderr, "bench-sgemm: no AVX2+FMA here\n");
        return 1;
    }
#if ADAPT_HAVE_BLAS
    openblas_set_num_threads(1);
#else
    fprintf(stderr, "bench-sgemm: built without BLAS, nothing to compare with\n");
    return 1;
#endif
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    /* per rep: wall and CPU seconds of each side */
    double *t[2][2];
    for (int i = 0; i < 4; i++) t[i / 2][i % 2] = malloc(sizeof(double) * reps);
    double step[2][2][2] = {{{0}}};   /* [side][wall, cpu][median, best], count-weighted */
    double step_flop = 0;
    printf("%d threads, %d reps; GFLOP/s per core from CPU time (best / median) and the median "
           "wall-time ratio blas/own\n", threads, reps);
    printf("    m     n     k ta tb beta cnt |   own best    med |  blas best    med | cpu ratio "
           "wall ratio\n");
    for (int s = 0; s < BENCH_NSHAPES; s++) {
        const bench_gemm *g = &bench_step_gemms[s];
        size_t a_rows = g->trans_a ? g->k : g->m, b_rows = g->trans_b ? g->n : g->k;
        bench_buf x = {bench_fill(a_rows * g->lda, 1 + s), bench_fill(b_rows * g->ldb, 7 + s),
                       bench_fill((size_t)g->m * g->ldc, 13 + s)};
        double dummy;
        bench_time(g, &x, BENCH_OWN, &dummy);   /* first touches: buffers, pages, BLAS set-up */
        bench_time(g, &x, BENCH_BLAS, &dummy);
        for (int r = 0; r < reps; r++)   /* alternate which side goes first */
            for (int i = 0; i < 2; i++) {
                bench_side sd = (bench_side)((i + r) & 1);
                t[sd][0][r] = bench_time(g, &x, sd, &t[sd][1][r]);
            }
        for (int i = 0; i < 4; i++) qsort(t[i / 2][i % 2], reps, sizeof(double), cmp_double);
        double flop = 2.0 * g->m * g->n * g->k, gf = 1e-9 * flop;
        for (int sd = 0; sd < 2; sd++)
            for (int w = 0; w < 2; w++) {
                step[sd][w][0] += g->count * t[sd][w][reps / 2];
                step[sd][w][1] += g->count * t[sd][w][0];
            }
        step_flop += g->count * flop;
        printf("%5d %5d %5d %2d %2d %4g %3d | %6.1f %6.1f | %6.1f %6.1f | %5.2fx %5.2fx\n", g->m,
               g->n, g->k, g->trans_a, g->trans_b, g->beta, g->count, gf / t[0][1][0],
               gf / t[0][1][reps / 2], gf / t[1][1][0], gf / t[1][1][reps / 2],
               t[1][1][reps / 2] / t[0][1][reps / 2], t[1][0][reps / 2] / t[0][0][reps / 2]);
        free(x.a); free(x.b); free(x.c);
    }
    double gf = step_flop * 1e-9;
    printf("step's products, %.1f GFLOP, count-weighted:\n", gf);
    for (int w = 0; w < 2; w++)
        printf("  %s: own %.3f s (best %.3f), blas %.3f s (best %.3f); blas/own %.3f (median), "
               "%.3f (best); per core own %.1f, blas %.1f GFLOP/s (medians)\n",
               w ? "cpu " : "wall", step[0][w][0], step[0][w][1], step[1][w][0], step[1][w][1],
               step[1][w][0] / step[0][w][0], step[1][w][1] / step[0][w][1],
               gf / step[0][w][0] / (w ? 1 : threads), gf / step[1][w][0] / (w ? 1 : threads));
    for (int i = 0; i < 4; i++) free(t[i / 2][i % 2]);
    return 0;
}
