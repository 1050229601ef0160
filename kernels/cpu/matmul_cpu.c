/* matmul_cpu: C = alpha op(A) op(B) + beta C, and the bias add / bias gradient of a Linear.
 *
 * Design: BLAS (OpenBLAS's sgemm/dgemm) when the build found one, because nothing hand-written
 * here beats it; otherwise a cache-blocked product in the Goto manner: B is packed into
 * KC x NR slivers, A into MR x KC slivers, and a register-tiled MR x NR micro-kernel (plain C the
 * compiler vectorises, cloned for AVX2+FMA) runs over them. Packing absorbs the transposes, so
 * the micro-kernel sees one layout. Tiles live on the stack: nothing to allocate or fail. */
#include "kernels_cpu.h"

#if ADAPT_HAVE_BLAS
#include <cblas.h>
#endif

enum { MM_MR = 6, MM_NR = 16, MM_KC = 128, MM_MC = 72, MM_NC = 64 };

/* element (i, j) of op(X) where X is stored row-major with leading dimension ld */
static inline real mm_at(const real *x, int trans, int ld, int i, int j)
{
    return trans ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j];
}

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) as MR-row slivers: sliver s holds
 * kc columns of MR values each, zero-padded past m. ap [ceil(mc/MR) * MR * kc] */
static void mm_pack_a(real *ap, const real *a, int trans_a, int lda, int i0, int mc, int p0, int kc)
{
    for (int s = 0; s < mc; s += MM_MR) {
        real *dst = ap + (size_t)s * kc;
        int rows = mc - s < MM_MR ? mc - s : MM_MR;
        for (int p = 0; p < kc; p++) {
            for (int r = 0; r < rows; r++) dst[p * MM_MR + r] = mm_at(a, trans_a, lda, i0 + s + r, p0 + p);
            for (int r = rows; r < MM_MR; r++) dst[p * MM_MR + r] = 0;
        }
    }
}

/* Pack rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) as NR-column slivers, zero-padded past n.
 * bp [ceil(nc/NR) * NR * kc] */
static void mm_pack_b(real *bp, const real *b, int trans_b, int ldb, int p0, int kc, int j0, int nc)
{
    for (int s = 0; s < nc; s += MM_NR) {
        real *dst = bp + (size_t)s * kc;
        int cols = nc - s < MM_NR ? nc - s : MM_NR;
        for (int p = 0; p < kc; p++) {
            for (int c = 0; c < cols; c++) dst[p * MM_NR + c] = mm_at(b, trans_b, ldb, p0 + p, j0 + s + c);
            for (int c = cols; c < MM_NR; c++) dst[p * MM_NR + c] = 0;
        }
    }
}

/* C tile [rows, cols] += alpha * (MR x kc sliver of A) * (kc x NR sliver of B). The fixed-size
 * accumulator stays in registers; the edge copy-out handles partial tiles.
 * ap [kc, MR], bp [kc, NR], c [rows, ldc] */
CPU_VEC_CLONES
static void mm_micro(real *c, int ldc, const real *ap, const real *bp, int kc, int rows, int cols,
                     real alpha)
{
    real acc[MM_MR][MM_NR];
    for (int r = 0; r < MM_MR; r++)
        for (int j = 0; j < MM_NR; j++) acc[r][j] = 0;
    for (int p = 0; p < kc; p++) {
        const real *ar = ap + p * MM_MR, *br = bp + p * MM_NR;
        for (int r = 0; r < MM_MR; r++)
            for (int j = 0; j < MM_NR; j++) acc[r][j] += ar[r] * br[j];
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) c[(size_t)r * ldc + j] += alpha * acc[r][j];
}

/* One MC x NC block of C over one KC slab: pack A's rows, then run the micro-kernel over the
 * already-packed B columns. ap is this thread's scratch [MC * KC]. */
static void mm_block(real *c, int ldc, const real *a, int trans_a, int lda, const real *bp,
                     real *ap, int i0, int mc, int p0, int kc, int j0, int nc, real alpha)
{
    mm_pack_a(ap, a, trans_a, lda, i0, mc, p0, kc);
    for (int js = 0; js < nc; js += MM_NR) {
        int cols = nc - js < MM_NR ? nc - js : MM_NR;
        for (int is = 0; is < mc; is += MM_MR) {
            int rows = mc - is < MM_MR ? mc - is : MM_MR;
            mm_micro(c + (size_t)(i0 + is) * ldc + j0 + js, ldc, ap + (size_t)is * kc,
                     bp + (size_t)js * kc, kc, rows, cols, alpha);
        }
    }
}

/* C = beta C first, so the blocked passes only ever add; beta = 0 overwrites (BLAS semantics). */
static void mm_scale_rows(real *c, int i0, int i1, int n, int ldc, real beta)
{
    for (int i = i0; i < i1; i++) {
        real *row = c + (size_t)i * ldc;
        if (beta == 0) for (int j = 0; j < n; j++) row[j] = 0;
        else for (int j = 0; j < n; j++) row[j] *= beta;
    }
}

/* One (row block, column block) task of one KC slab: pack its B columns and A rows, multiply. */
static void mm_task(real *c, const real *a, const real *b, int m, int n, int trans_a,
                    int trans_b, int lda, int ldb, int ldc, real alpha, int p0, int kc, int bi,
                    int bj)
{
    real ap[((MM_MC + MM_MR - 1) / MM_MR) * MM_MR * MM_KC];
    real bp[MM_NC * MM_KC];
    int i0 = bi * MM_MC, j0 = bj * MM_NC;
    int mc = m - i0 < MM_MC ? m - i0 : MM_MC, nc = n - j0 < MM_NC ? n - j0 : MM_NC;
    mm_pack_b(bp, b, trans_b, ldb, p0, kc, j0, nc);
    mm_block(c, ldc, a, trans_a, lda, bp, ap, i0, mc, p0, kc, j0, nc, alpha);
}

/* The blocked product. The parallel version splits the (row block, column block) grid of each
 * KC slab across OpenMP threads; every task packs its own A and B tiles (cheap next to its
 * MC x NC x KC product) so threads never wait on one another inside a slab. The serial version
 * has no OpenMP construct at all, so callers inside a parallel region pay nothing for one. */
static void mm_blocked(real *c, const real *a, const real *b, int m, int n, int k, int trans_a,
                       int trans_b, int lda, int ldb, int ldc, real alpha, real beta, int parallel)
{
    if (m <= 0 || n <= 0) return;
    if (beta != 1) {
        if (parallel) {
#pragma omp parallel for if ((size_t)m * n > (1u << 15))
            for (int i = 0; i < m; i++) mm_scale_rows(c, i, i + 1, n, ldc, beta);
        } else {
            mm_scale_rows(c, 0, m, n, ldc, beta);
        }
    }
    if (k <= 0 || alpha == 0) return;
    int mb = (m + MM_MC - 1) / MM_MC, nb = (n + MM_NC - 1) / MM_NC;
    for (int p0 = 0; p0 < k; p0 += MM_KC) {
        int kc = k - p0 < MM_KC ? k - p0 : MM_KC;
        if (parallel) {
#pragma omp parallel for collapse(2) schedule(static) if (mb * nb > 1)
            for (int bi = 0; bi < mb; bi++)
                for (int bj = 0; bj < nb; bj++)
                    mm_task(c, a, b, m, n, trans_a, trans_b, lda, ldb, ldc, alpha, p0, kc, bi, bj);
        } else {
            for (int bi = 0; bi < mb; bi++)
                for (int bj = 0; bj < nb; bj++)
                    mm_task(c, a, b, m, n, trans_a, trans_b, lda, ldb, ldc, alpha, p0, kc, bi, bj);
        }
    }
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

void CPU_FN(matmul)(real *c, const real *a, const real *b, int m, int n, int k, int trans_a,
                    int trans_b, int lda, int ldb, int ldc, real alpha, real beta)
{
#if ADAPT_HAVE_BLAS
    /* tiny products are cheaper without BLAS's thread hand-off */
    if ((double)m * n * k >= 32768.0 && m > 0 && n > 0) {
        enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
        enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
#ifdef ADAPT_CPU_F64
        cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
        return;
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
 * row loop stays contiguous within a column block. */
void CPU_FN(bias_backward)(real *dbias, const real *dy, int rows, int n, int ldy)
{
    enum { CB = 256 };
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
