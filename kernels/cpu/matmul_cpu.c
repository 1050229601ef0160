/* matmul_cpu: C = alpha op(A) op(B) + beta C, and the bias add / bias gradient of a Linear.
 *
 * Design: large products run one part of C per OpenMP thread (one thread pool for all ops, see
 * mm_parallel), each part through a single-threaded engine: in the float build on a CPU with
 * AVX2+FMA, the hand-written sgemm of sgemm_avx2_cpu.c (measured a few percent faster than
 * OpenBLAS on the training step's products, with no separate beta pass; ADAPT_SGEMM=blas selects
 * BLAS instead); otherwise BLAS (OpenBLAS's sgemm/dgemm) when the build found one; otherwise, and
 * for small products, a cache-blocked product in the Goto manner: per KC-deep slab, the
 * KC x NC panel of B is packed into NR-wide slivers where it has to be (transposed, or a ragged
 * edge) and reused by every MC-row block of A, and a register-tiled MR x NR micro-kernel (GCC
 * vector extensions, cloned for AVX2+FMA) runs over them, reading A in place through strides.
 * Threads each take a part of C and run the serial engine on it, without synchronising. The
 * packing buffer lives on the stack (256 KB, 512 KB in the double build): nothing to allocate
 * or fail. */
#include "kernels_cpu.h"

#include <stdlib.h>

#if ADAPT_HAVE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

enum { MM_MR = 6, MM_NR = 16, MM_KC = 256, MM_MC = 72, MM_NC = 256 };
enum { MM_BP_LEN = MM_NC * MM_KC };

/* Pack rows [p0, p0+kc) x cols [j0 + s, j0 + s + NR) of op(B), one NR-column sliver, zero-padded
 * past nc. dst [kc * NR] */
CPU_VEC_CLONES
static void mm_pack_b_sliver(real *dst, const real *b, int trans_b, int ldb, int p0, int kc, int j0,
                             int s, int nc)
{
    int cols = nc - s < MM_NR ? nc - s : MM_NR;
    if (cols < MM_NR) memset(dst, 0, (size_t)kc * MM_NR * sizeof(real));
    if (trans_b) {
        for (int c = 0; c < cols; c++) {
            const real *src = b + (size_t)(j0 + s + c) * ldb + p0;
            for (int p = 0; p < kc; p++) dst[p * MM_NR + c] = src[p];
        }
    } else {
        for (int p = 0; p < kc; p++) {
            const real *src = b + (size_t)(p0 + p) * ldb + j0 + s;
            for (int c = 0; c < cols; c++) dst[p * MM_NR + c] = src[c];
        }
    }
}

/* 32-byte vectors through GCC's vector extension: AVX registers in the x86-64-v3 clone, pairs of
 * SSE registers in the default one, plain scalars elsewhere; no intrinsics to port. */
typedef real mm_vec __attribute__((vector_size(32)));
typedef real mm_vec_u __attribute__((vector_size(32), aligned(sizeof(real))));  /* unaligned loads */
enum { MM_VN = 32 / sizeof(real), MM_NV = MM_NR / MM_VN };

/* C tile [rows, cols] += alpha * A tile [rows, kc] * B tile [kc, NR]. A's element (r, p) is
 * a[p * a_sp + r * a_sr], so the kernel reads A in place, transposed (a_sp = lda, a_sr = 1) or
 * not (1, lda): the MR values a step needs are broadcast one by one anyway, so packing A would
 * buy nothing but a copy. Rows past `rows` re-read the last valid row (results discarded), so
 * nothing outside A is touched. B's row p is the NR values at b + p * b_sp: a packed, zero-padded
 * sliver (b_sp = NR) or, when op(B) is B itself and NR columns exist, B in place. The MR x NR
 * accumulator lives in registers (12 of the 16 AVX registers for float). c [rows, ldc] */
CPU_VEC_CLONES
static void mm_micro(real *c, int ldc, const real *a, size_t a_sp, size_t a_sr, int rows,
                     const real *b, size_t b_sp, int kc, int cols, real alpha)
{
    size_t roff[MM_MR];
    for (int r = 0; r < MM_MR; r++) roff[r] = (size_t)(r < rows ? r : rows - 1) * a_sr;
    mm_vec acc[MM_MR][MM_NV];
    for (int r = 0; r < MM_MR; r++)
        for (int v = 0; v < MM_NV; v++) acc[r][v] = (mm_vec){0};
    for (int p = 0; p < kc; p++) {
        mm_vec bv[MM_NV];
        for (int v = 0; v < MM_NV; v++) bv[v] = *(const mm_vec_u *)(b + (size_t)p * b_sp + v * MM_VN);
        const real *ar = a + (size_t)p * a_sp;
        for (int r = 0; r < MM_MR; r++)
            for (int v = 0; v < MM_NV; v++) acc[r][v] += ar[roff[r]] * bv[v];
    }
    if (rows == MM_MR && cols == MM_NR) {
        for (int r = 0; r < MM_MR; r++)
            for (int v = 0; v < MM_NV; v++) {
                mm_vec_u *cv = (mm_vec_u *)(c + (size_t)r * ldc + v * MM_VN);
                *cv += alpha * acc[r][v];
            }
        return;
    }
    for (int r = 0; r < rows; r++) {
        real *cr = c + (size_t)r * ldc;
        for (int j = 0; j < cols; j++) cr[j] += alpha * acc[r][j / MM_VN][j % MM_VN];
    }
}

/* C = beta C first, so the blocked passes only ever add; beta = 0 overwrites (BLAS semantics). */
static void mm_scale_rows(real *c, int m, int n, int ldc, real beta)
{
    for (int i = 0; i < m; i++) {
        real *row = c + (size_t)i * ldc;
        if (beta == 0) for (int j = 0; j < n; j++) row[j] = 0;
        else for (int j = 0; j < n; j++) row[j] *= beta;
    }
}

/* The shape of one product, so the engine takes one argument instead of thirteen. */
typedef struct mm_shape {
    real       *c;
    const real *a, *b;
    int         m, n, k, trans_a, trans_b, lda, ldb, ldc;
    real        alpha, beta;
} mm_shape;

/* Whether sliver [js, js + NR) of a panel must be packed: op(B) transposed, or ragged at the
 * right edge (the micro-kernel always reads NR columns). Otherwise B is read in place. */
static inline int mm_needs_pack(const mm_shape *g, int nc, int js)
{
    return g->trans_b || nc - js < MM_NR;
}

/* The serial engine. Per KC slab and NC panel, the slivers of B that need it are packed once and
 * reused by every MC-row block; A is read in place (the micro-kernel takes its strides), which
 * for the small tile products of attention saves a copy as large as the product. */
static void mm_serial(const mm_shape *g)
{
    real bp[MM_BP_LEN];
    size_t a_sp = g->trans_a ? (size_t)g->lda : 1, a_sr = g->trans_a ? 1 : (size_t)g->lda;
    if (g->beta != 1) mm_scale_rows(g->c, g->m, g->n, g->ldc, g->beta);
    if (g->k <= 0 || g->alpha == 0) return;
    for (int p0 = 0; p0 < g->k; p0 += MM_KC) {
        int kc = g->k - p0 < MM_KC ? g->k - p0 : MM_KC;
        for (int j0 = 0; j0 < g->n; j0 += MM_NC) {
            int nc = g->n - j0 < MM_NC ? g->n - j0 : MM_NC;
            for (int js = 0; js < nc; js += MM_NR)
                if (mm_needs_pack(g, nc, js))
                    mm_pack_b_sliver(bp + (size_t)js * kc, g->b, g->trans_b, g->ldb, p0, kc, j0, js, nc);
            for (int i0 = 0; i0 < g->m; i0 += MM_MC) {
                int i1 = g->m - i0 < MM_MC ? g->m : i0 + MM_MC;
                for (int js = 0; js < nc; js += MM_NR) {
                    int packed = mm_needs_pack(g, nc, js), cols = nc - js < MM_NR ? nc - js : MM_NR;
                    const real *bs = packed ? bp + (size_t)js * kc : g->b + (size_t)p0 * g->ldb + j0 + js;
                    size_t b_sp = packed ? MM_NR : (size_t)g->ldb;
                    for (int is = i0; is < i1; is += MM_MR) {
                        int rows = i1 - is < MM_MR ? i1 - is : MM_MR;
                        const real *as = g->a + (size_t)p0 * a_sp + (size_t)is * a_sr;
                        mm_micro(g->c + (size_t)is * g->ldc + j0 + js, g->ldc, as, a_sp, a_sr, rows,
                                 bs, b_sp, kc, cols, g->alpha);
                    }
                }
            }
        }
    }
}

/* The parallel product: C is cut into one part per thread (rows when C is tall, columns when it
 * is wide, e.g. the loss's row chunks) and each thread runs a serial engine on its part (the
 * blocked one, or single-threaded BLAS). One parallel region and no barrier inside: on a machine
 * shared with other work a descheduled thread then delays only its own part, not every slab of
 * everyone's, and BLAS runs on the same OpenMP threads as every other op instead of a second
 * pool of spinning threads competing with them for the cores. */
static void mm_parallel(const mm_shape *g, void (*engine)(const mm_shape *))
{
#ifdef _OPENMP
#pragma omp parallel if ((double)g->m * g->n * g->k > 131072.0)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        mm_shape part = *g;
        int by_rows = g->m >= g->n, len = by_rows ? g->m : g->n, unit = by_rows ? MM_MR : MM_NR;
        int chunk = ((len + nt - 1) / nt + unit - 1) / unit * unit;
        int lo = t * chunk, hi = lo + chunk < len ? lo + chunk : len;
        if (lo < hi) {
            part.c += by_rows ? (size_t)lo * g->ldc : (size_t)lo;
            if (by_rows) {
                part.a += g->trans_a ? (size_t)lo : (size_t)lo * g->lda;
                part.m = hi - lo;
            } else {
                part.b += g->trans_b ? (size_t)lo * g->ldb : (size_t)lo;
                part.n = hi - lo;
            }
            engine(&part);
        }
    }
#else
    engine(g);
#endif
}

#if ADAPT_HAVE_BLAS
/* one part through BLAS, on the calling thread (matmul keeps OpenBLAS single-threaded) */
static void mm_blas(const mm_shape *g)
{
    enum CBLAS_TRANSPOSE ta = g->trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = g->trans_b ? CblasTrans : CblasNoTrans;
#ifdef ADAPT_CPU_F64
    cblas_dgemm(CblasRowMajor, ta, tb, g->m, g->n, g->k, g->alpha, g->a, g->lda, g->b, g->ldb,
                g->beta, g->c, g->ldc);
#else
    cblas_sgemm(CblasRowMajor, ta, tb, g->m, g->n, g->k, g->alpha, g->a, g->lda, g->b, g->ldb,
                g->beta, g->c, g->ldc);
#endif
}
#endif

static void mm_blocked(real *c, const real *a, const real *b, int m, int n, int k, int trans_a,
                       int trans_b, int lda, int ldb, int ldc, real alpha, real beta, int parallel)
{
    if (m <= 0 || n <= 0) return;
    mm_shape g = {c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta};
    if (parallel) mm_parallel(&g, mm_serial);
    else mm_serial(&g);
}

void CPU_FN(matmul_blocked)(real *c, const real *a, const real *b, int m, int n, int k,
                            int trans_a, int trans_b, int lda, int ldb, int ldc, real alpha,
                            real beta)
{
    mm_blocked(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta, 1);
}

void CPU_FN(matmul_serial)(real *c, const real *a, const real *b, int m, int n, int k,
                           int trans_a, int trans_b, int lda, int ldb, int ldc, real alpha,
                           real beta)
{
    mm_blocked(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta, 0);
}

#ifndef ADAPT_CPU_F64
/* one part through the hand-written AVX2 engine (sgemm_avx2_cpu.c); where that cannot run (its
 * packing buffer could not be allocated) the part goes the way it would without the engine */
static void mm_own(const mm_shape *g)
{
    if (cpu_sgemm_avx2(g->c, g->a, g->b, g->m, g->n, g->k, g->trans_a, g->trans_b, g->lda, g->ldb,
                       g->ldc, g->alpha, g->beta))
        return;
#if ADAPT_HAVE_BLAS
    mm_blas(g);
#else
    mm_serial(g);
#endif
}

/* Whether large products take the AVX2 engine: yes where the CPU has AVX2+FMA, unless
 * ADAPT_SGEMM=blas (ADAPT_SGEMM=own forces it where BLAS would be the default; both are for A/B
 * benchmarks and tests). Read once. */
static int mm_own_enabled(void)
{
    static int use = -1;
    int u = __atomic_load_n(&use, __ATOMIC_RELAXED);
    if (u < 0) {
        const char *e = getenv("ADAPT_SGEMM");
        u = cpu_sgemm_avx2_supported() && !(e && strcmp(e, "blas") == 0);
        __atomic_store_n(&use, u, __ATOMIC_RELAXED);
    }
    return u;
}
#endif

void CPU_FN(matmul)(real *c, const real *a, const real *b, int m, int n, int k, int trans_a,
                    int trans_b, int lda, int ldb, int ldc, real alpha, real beta)
{
#if ADAPT_HAVE_BLAS || !defined(ADAPT_CPU_F64)
    /* tiny products are cheaper in the blocked engine than through a packing engine's overhead */
    if ((double)m * n * k >= 32768.0 && m > 0 && n > 0) {
        mm_shape g = {c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta};
#if ADAPT_HAVE_BLAS
        /* the parts run on OpenMP threads, so OpenBLAS must not start threads of its own: that
         * would put two spinning pools on the same cores (measurably slower on 2 cores, where
         * BLAS calls alternate with OpenMP ops all through a step). Process-wide, but BLAS is
         * only ever called from here (also as the AVX2 engine's fallback). */
        if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
#endif
#ifndef ADAPT_CPU_F64
        if (mm_own_enabled()) {
            mm_parallel(&g, mm_own);
            return;
        }
#endif
#if ADAPT_HAVE_BLAS
        mm_parallel(&g, mm_blas);
        return;
#endif
    }
#endif
    mm_blocked(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta, 1);
}

void CPU_FN(bias_add)(real *y, const real *bias, int rows, int n, int ldy)
{
#pragma omp parallel for if ((size_t)rows * n > (1u << 16))
    for (int r = 0; r < rows; r++) {
        real *yr = y + (size_t)r * ldy;
        for (int j = 0; j < n; j++) yr[j] += bias[j];
    }
}

/* Columns are split across threads (not rows) so each dbias element has one writer and the
 * row loop stays contiguous within a column block. Blocks of 64 columns: a 256-wide bias (the
 * vision tower's) is then 4 blocks for the threads to share, not one that a single thread sums. */
void CPU_FN(bias_backward)(real *dbias, const real *dy, int rows, int n, int ldy)
{
    enum { CB = 64 };
    int nblocks = (n + CB - 1) / CB;
#pragma omp parallel for if ((size_t)rows * n > (1u << 16))
    for (int bj = 0; bj < nblocks; bj++) {
        int j0 = bj * CB, nc = n - j0 < CB ? n - j0 : CB;
        real acc[CB];
        for (int j = 0; j < nc; j++) acc[j] = 0;
        for (int r = 0; r < rows; r++) {
            const real *dr = dy + (size_t)r * ldy + j0;
            for (int j = 0; j < nc; j++) acc[j] += dr[j];
        }
        for (int j = 0; j < nc; j++) dbias[j0 + j] += acc[j];
    }
}
