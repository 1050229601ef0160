/* matmul_cpu: C = alpha op(A) op(B) + beta C, and the bias add / bias gradient of a Linear.
 *
 * Design: BLAS (OpenBLAS's sgemm/dgemm) when the build found one, because nothing hand-written
 * here beats it; otherwise a cache-blocked product in the Goto manner: per KC-deep slab, a
 * KC x NC panel of B is packed once into NR-wide slivers and reused by every row block, each
 * MC x KC block of A is packed once into MR-high slivers and reused across the whole panel, and
 * a register-tiled MR x NR micro-kernel (GCC vector extensions, cloned for AVX2+FMA) runs over
 * them. Packing absorbs the transposes, so the micro-kernel sees one layout. Tiles live on the
 * stack (at most ~350 KB for the double build): nothing to allocate or fail. */
#include "kernels_cpu.h"

#if ADAPT_HAVE_BLAS
#include <cblas.h>
#endif

enum { MM_MR = 6, MM_NR = 16, MM_KC = 256, MM_MC = 72, MM_NC = 256 };
enum { MM_AP_LEN = MM_MC * MM_KC, MM_BP_LEN = MM_NC * MM_KC };

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) as MR-row slivers: sliver s holds kc
 * columns of MR values each, zero-padded past mc. ap [ceil(mc/MR) * MR * kc] */
CPU_VEC_CLONES
static void mm_pack_a(real *ap, const real *a, int trans_a, int lda, int i0, int mc, int p0, int kc)
{
    for (int s = 0; s < mc; s += MM_MR) {
        real *dst = ap + (size_t)s * kc;
        int rows = mc - s < MM_MR ? mc - s : MM_MR;
        if (rows < MM_MR) memset(dst, 0, (size_t)kc * MM_MR * sizeof(real));
        for (int r = 0; r < rows; r++) {
            if (trans_a) {
                const real *src = a + (size_t)p0 * lda + i0 + s + r;
                for (int p = 0; p < kc; p++) dst[p * MM_MR + r] = src[(size_t)p * lda];
            } else {
                const real *src = a + (size_t)(i0 + s + r) * lda + p0;
                for (int p = 0; p < kc; p++) dst[p * MM_MR + r] = src[p];
            }
        }
    }
}

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
 * a[p * a_sp + r * a_sr], so the same kernel reads a packed sliver (a_sp = MR, a_sr = 1) or A in
 * place, transposed or not; rows past `rows` re-read the last valid row (results discarded), so
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

/* Row block [i0, i0+mc) of C times the packed panel (columns [j0, j0+nc)) over one slab, with
 * slivers [s_lo, s_hi) of the panel. ap holds the block's packed A. */
static void mm_block(real *c, int ldc, const real *ap, const real *bp, int i0, int mc, int kc,
                     int j0, int nc, int s_lo, int s_hi, real alpha)
{
    for (int js = s_lo; js < s_hi; js += MM_NR) {
        int cols = nc - js < MM_NR ? nc - js : MM_NR;
        for (int is = 0; is < mc; is += MM_MR) {
            int rows = mc - is < MM_MR ? mc - is : MM_MR;
            mm_micro(c + (size_t)(i0 + is) * ldc + j0 + js, ldc, ap + (size_t)is * kc, MM_MR, 1,
                     rows, bp + (size_t)js * kc, MM_NR, kc, cols, alpha);
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

/* The shape of one product, so the slab loops take one argument instead of twelve. */
typedef struct mm_shape {
    real       *c;
    const real *a, *b;
    int         m, n, k, trans_a, trans_b, lda, ldb, ldc;
    real        alpha;
} mm_shape;

/* One thread does it all: for callers inside a parallel region (attention tiles); no OpenMP
 * construct here, so they pay nothing for one. These products are small (a 64 x 64 tile by a
 * head_dim), so A is read in place and B too wherever its rows are op(B)'s rows: packing would
 * cost as much as the product. bp is scratch for the B slivers that do need packing. */
static void mm_slab_serial(const mm_shape *g, real *bp, int p0, int kc, int j0, int nc)
{
    size_t a_sp = g->trans_a ? (size_t)g->lda : 1, a_sr = g->trans_a ? 1 : (size_t)g->lda;
    for (int js = 0; js < nc; js += MM_NR) {
        int cols = nc - js < MM_NR ? nc - js : MM_NR;
        const real *bs = g->b + (size_t)p0 * g->ldb + j0 + js;
        size_t b_sp = (size_t)g->ldb;
        if (g->trans_b || cols < MM_NR) {
            mm_pack_b_sliver(bp, g->b, g->trans_b, g->ldb, p0, kc, j0, js, nc);
            bs = bp;
            b_sp = MM_NR;
        }
        for (int i0 = 0; i0 < g->m; i0 += MM_MR) {
            int rows = g->m - i0 < MM_MR ? g->m - i0 : MM_MR;
            const real *as = g->a + (g->trans_a ? (size_t)p0 * g->lda + i0 : (size_t)i0 * g->lda + p0);
            mm_micro(g->c + (size_t)i0 * g->ldc + j0 + js, g->ldc, as, a_sp, a_sr, rows, bs, b_sp,
                     kc, cols, g->alpha);
        }
    }
}

/* Threads share the packed B panel. With several row blocks they split the row blocks (each
 * packs its own A once); with one (short, wide products such as the loss's) they share one packed
 * A and split the panel's slivers instead. */
static void mm_slab_parallel(const mm_shape *g, real *bp, int p0, int kc, int j0, int nc)
{
    int slivers = (nc + MM_NR - 1) / MM_NR, mb = (g->m + MM_MC - 1) / MM_MC;
#pragma omp parallel for schedule(static) if (slivers > 1)
    for (int si = 0; si < slivers; si++)
        mm_pack_b_sliver(bp + (size_t)si * MM_NR * kc, g->b, g->trans_b, g->ldb, p0, kc, j0,
                         si * MM_NR, nc);
    if (mb > 1) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int bi = 0; bi < mb; bi++) {
            real ap[MM_AP_LEN];
            int i0 = bi * MM_MC, mc = g->m - i0 < MM_MC ? g->m - i0 : MM_MC;
            mm_pack_a(ap, g->a, g->trans_a, g->lda, i0, mc, p0, kc);
            mm_block(g->c, g->ldc, ap, bp, i0, mc, kc, j0, nc, 0, nc, g->alpha);
        }
    } else {
        real ap[MM_AP_LEN];
        mm_pack_a(ap, g->a, g->trans_a, g->lda, 0, g->m, p0, kc);
#pragma omp parallel for schedule(static) if (slivers > 1)
        for (int si = 0; si < slivers; si++)
            mm_block(g->c, g->ldc, ap, bp, 0, g->m, kc, j0, nc, si * MM_NR, si * MM_NR + MM_NR,
                     g->alpha);
    }
}

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
    mm_shape g = {c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha};
    real bp[MM_BP_LEN];
    for (int p0 = 0; p0 < k; p0 += MM_KC) {
        int kc = k - p0 < MM_KC ? k - p0 : MM_KC;
        for (int j0 = 0; j0 < n; j0 += MM_NC) {
            int nc = n - j0 < MM_NC ? n - j0 : MM_NC;
            if (parallel) mm_slab_parallel(&g, bp, p0, kc, j0, nc);
            else mm_slab_serial(&g, bp, p0, kc, j0, nc);
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
