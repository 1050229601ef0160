/* sgemm_avx2_cpu: a hand-written fp32 GEMM for x86-64 with AVX2+FMA, the engine behind the float
 * build's large products (CPU_FN(matmul) hands it one part of C per OpenMP thread).
 *
 * The one idea: Goto/BLIS blocking around a 6 x 16 register tile. Per NC-wide panel and KC-deep
 * slab, op(B) is packed into 16-column slivers (k-major, zero-padded) and op(A) per MC-row block
 * into 6-row slivers (k-major, zero-padded), so the micro-kernel only ever streams two
 * contiguous arrays: per k, two 8-float loads of B, six broadcasts of A and twelve FMAs into
 * twelve ymm accumulators. All four transpose cases are absorbed by the packing. beta is folded
 * into the first slab's store (beta == 0 writes C without reading it) and alpha into every store,
 * so there is no separate pass over C. Each C element is the same chain of FMAs over k, slab by
 * slab from k = 0, wherever its tile sits: results do not depend on how C is cut between threads.
 * Edge tiles run the same kernel on a local 6 x 16 tile (so they round exactly like inner ones).
 * The packing buffers are per thread and kept between calls. */
#include "kernels_cpu.h"

#include <stdlib.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <pthread.h>

/* KC x NR of B (16 KB) stays in L1 while the MC x KC block of A (144 KB) is read from L2;
 * NC bounds the packed B panel (KC x NC, 2 MB) so it stays in L2/L3 next to the other thread's. */
enum { SG_MR = 6, SG_NR = 16, SG_KC = 256, SG_MC = 144, SG_NC = 2048 };
/* slack after each packed buffer: the 6-row A packer's 8-wide stores run 2 floats past a sliver */
enum { SG_SLACK = 16 };
/* how many rows of A ahead the transposed-A packer prefetches (4 to 48 measured alike with the
 * earlier sliver-by-sliver packer; not re-tuned for the row-by-row one) */
enum { SG_PF_ROWS = 16 };

/* how the kernel combines its sums with C: the first slab applies beta, later slabs add */
enum sg_store { SG_STORE_SET, SG_STORE_ADD, SG_STORE_SCALE };

#define SG_TARGET __attribute__((target("avx2,fma")))

/* ---- packing ---- */

/* 8 x 8 transpose in registers: r[i] holds row i on entry, column i on exit */
SG_TARGET static inline void sg_transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Pack `lanes` vectors that each run contiguously along k (src + l * ld + p, p < kc) into a
 * k-major sliver of width w (dst[p * w + l]), lanes <= w, the rest zero. This is the
 * transposing case of both packers: rows of A (w = 6) and columns of a transposed B (w = 16).
 * Full 8-lane groups go through register transposes; stores are 8 wide and, for w = 6, spill 2
 * floats into the next k step (rewritten by it) or the buffer's slack. */
SG_TARGET static void sg_pack_strided(float *dst, int w, const float *src, size_t ld, int lanes,
                                      int kc, int next_lanes)
{
    int p = 0;
    if (lanes == w) {
        for (; p + 8 <= kc; p += 8)
            for (int l0 = 0; l0 < w; l0 += 8) {
                /* the next sliver's lines: each of its short runs (kc floats) would cost the
                 * hardware prefetcher a few misses to spot, and operands are mostly cold */
                for (int i = l0; i < l0 + 8 && i < next_lanes; i++)
                    _mm_prefetch((const char *)(src + (size_t)(w + i) * ld + p), _MM_HINT_T0);
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = l0 + i < w ? _mm256_loadu_ps(src + (size_t)(l0 + i) * ld + p)
                                      : _mm256_setzero_ps();
                sg_transpose8(r);
                for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (size_t)(p + q) * w + l0, r[q]);
            }
    }
    for (; p < kc; p++) {
        float *d = dst + (size_t)p * w;
        for (int l = 0; l < lanes; l++) d[l] = src[(size_t)l * ld + p];
        for (int l = lanes; l < w; l++) d[l] = 0;
    }
}

/* Pack op(B) where its k-th row is contiguous (src + p * ld + c, c < cols) into a 16-column
 * sliver dst[p * 16 + c], zero past cols: a plain copy per k. */
SG_TARGET static void sg_pack_b_rows(float *dst, const float *src, size_t ld, int cols, int kc,
                                     int next_cols)
{
    if (cols == SG_NR) {
        for (int p = 0; p < kc; p++) {
            const float *s = src + (size_t)p * ld;
            /* the next sliver's 16 floats of this row: kc short runs, one per row of B */
            if (next_cols > 0) _mm_prefetch((const char *)(s + SG_NR), _MM_HINT_T0);
            _mm256_storeu_ps(dst + (size_t)p * SG_NR, _mm256_loadu_ps(s));
            _mm256_storeu_ps(dst + (size_t)p * SG_NR + 8, _mm256_loadu_ps(s + 8));
        }
        return;
    }
    for (int p = 0; p < kc; p++) {
        const float *s = src + (size_t)p * ld;
        float *d = dst + (size_t)p * SG_NR;
        for (int c = 0; c < cols; c++) d[c] = s[c];
        for (int c = cols; c < SG_NR; c++) d[c] = 0;
    }
}

/* Pack op(A) rows [i0, i0 + mc) x k [p0, p0 + kc) into 6-row slivers (sliver s at s * 6 * kc). */
SG_TARGET static void sg_pack_a(float *dst, const float *a, int trans_a, size_t lda, int i0,
                                int mc, int p0, int kc)
{
    if (trans_a) {
        /* op(A)(i, p) = a[p * lda + i]: the six values of one k are contiguous, a 24-byte copy.
         * The block is kc rows of mc floats of A at stride lda; each row is read once, left to
         * right, and dealt out six floats to every sliver (one pass over A rather than one per
         * sliver, whose strided walks found the rows in L2 at best). Rows SG_PF_ROWS ahead are
         * requested early: A is mostly cold and a strided walk trains no hardware prefetcher. */
        const float *s0 = a + (size_t)p0 * lda + i0;
        int full = mc / SG_MR * SG_MR;
        for (int p = 0; p < kc && p < SG_PF_ROWS; p++)
            for (int i = 0; i < mc; i += 16)
                _mm_prefetch((const char *)(s0 + (size_t)p * lda + i), _MM_HINT_T0);
        for (int p = 0; p < kc; p++) {
            const float *s = s0 + (size_t)p * lda;
            if (p + SG_PF_ROWS < kc)
                for (int i = 0; i < mc; i += 16)
                    _mm_prefetch((const char *)(s + (size_t)SG_PF_ROWS * lda + i), _MM_HINT_T0);
            float *d = dst + (size_t)p * SG_MR;
            for (int is = 0; is < full; is += SG_MR)
                memcpy(d + (size_t)is * kc, s + is, SG_MR * sizeof(float));
            if (full < mc)
                for (int r = 0; r < SG_MR; r++)
                    d[(size_t)full * kc + r] = full + r < mc ? s[full + r] : 0.0f;
        }
        return;
    }
    for (int is = 0; is < mc; is += SG_MR) {
        int rows = mc - is < SG_MR ? mc - is : SG_MR;
        int next = mc - is - SG_MR < SG_MR ? mc - is - SG_MR : SG_MR;
        sg_pack_strided(dst + (size_t)is * kc, SG_MR, a + (size_t)(i0 + is) * lda + p0, lda, rows,
                        kc, next);
    }
}

/* Pack op(B) k [p0, p0 + kc) x columns [j0, j0 + nc) into 16-column slivers (s at s * 16 * kc). */
SG_TARGET static void sg_pack_b(float *dst, const float *b, int trans_b, size_t ldb, int p0,
                                int kc, int j0, int nc)
{
    for (int js = 0; js < nc; js += SG_NR) {
        int cols = nc - js < SG_NR ? nc - js : SG_NR;
        float *d = dst + (size_t)js * kc;
        if (trans_b) /* op(B)(p, j) = b[j * ldb + p]: each column is contiguous along k */
            sg_pack_strided(d, SG_NR, b + (size_t)(j0 + js) * ldb + p0, ldb, cols, kc,
                            nc - js - SG_NR < SG_NR ? nc - js - SG_NR : SG_NR);
        else
            sg_pack_b_rows(d, b + (size_t)p0 * ldb + j0 + js, ldb, cols, kc, nc - js - SG_NR);
    }
}

/* ---- the micro-kernel ---- */

/* C tile [6, 16] (row stride ldc) <- combine(C, alpha * A sliver [6, kc] * B sliver [kc, 16]). */
SG_TARGET static void sg_kernel(int kc, const float *a, const float *b, float *c, size_t ldc,
                                float alpha, float beta, enum sg_store mode)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    /* the C tile is needed only at the end; ask for it now so the store does not wait */
    for (int r = 0; r < SG_MR; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 15), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
        av = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
        a += SG_MR;
        b += SG_NR;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    __m256 acc[SG_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < SG_MR; r++)
        for (int h = 0; h < 2; h++) {
            float *cp = c + r * ldc + h * 8;
            __m256 v;
            if (mode == SG_STORE_SET) v = _mm256_mul_ps(va, acc[r][h]);
            else if (mode == SG_STORE_ADD) v = _mm256_fmadd_ps(va, acc[r][h], _mm256_loadu_ps(cp));
            else v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp), _mm256_mul_ps(va, acc[r][h]));
            _mm256_storeu_ps(cp, v);
        }
}

/* A tile at C's bottom or right edge: the kernel runs on a local tile holding C's rows x cols
 * (not read when the store overwrites), and only those are copied back. */
SG_TARGET static void sg_kernel_edge(int kc, const float *a, const float *b, float *c, size_t ldc,
                                     int rows, int cols, float alpha, float beta,
                                     enum sg_store mode)
{
    float t[SG_MR * SG_NR] __attribute__((aligned(32))) = {0};
    if (mode != SG_STORE_SET)
        for (int r = 0; r < rows; r++) memcpy(t + r * SG_NR, c + r * ldc, cols * sizeof(float));
    sg_kernel(kc, a, b, t, SG_NR, alpha, beta, mode);
    for (int r = 0; r < rows; r++) memcpy(c + r * ldc, t + r * SG_NR, cols * sizeof(float));
}

/* ---- per-thread packing buffers ---- */

/* One buffer per thread, grown on demand and kept: OpenMP's pool threads live as long as the
 * process, so steady state allocates nothing. A thread-specific key rather than a plain
 * thread-local pointer, so a thread that ends (one of a caller's own threads) frees its buffer. */
typedef struct sg_buf {
    float *data;
    size_t cap;   /* floats */
} sg_buf;

static pthread_key_t  sg_key;
static pthread_once_t sg_key_once = PTHREAD_ONCE_INIT;
static int            sg_key_ok;

static void sg_buf_free(void *p)
{
    sg_buf *b = p;
    free(b->data);
    free(b);
}

static void sg_key_make(void)
{
    sg_key_ok = pthread_key_create(&sg_key, sg_buf_free) == 0;
}

/* this thread's buffer of at least `floats`, 64-byte aligned; NULL when memory runs out */
static float *sg_buffer(size_t floats)
{
    pthread_once(&sg_key_once, sg_key_make);
    if (!sg_key_ok) return NULL;
    sg_buf *b = pthread_getspecific(sg_key);
    if (b && floats <= b->cap) return b->data;
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        if (pthread_setspecific(sg_key, b) != 0) { free(b); return NULL; }
    }
    float *nb = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    if (!nb) return NULL;
    free(b->data);
    b->data = nb;
    b->cap = floats;
    return nb;
}

/* ---- the driver ---- */

/* C = beta C (beta == 0 writes zeros without reading C): k == 0 or alpha == 0 */
static void sg_scale(float *c, int m, int n, size_t ldc, float beta)
{
    for (int i = 0; i < m; i++) {
        float *row = c + (size_t)i * ldc;
        if (beta == 0) memset(row, 0, (size_t)n * sizeof(float));
        else if (beta != 1) for (int j = 0; j < n; j++) row[j] *= beta;
    }
}

/* The macro-kernel: one packed MC x KC block of A against one packed KC x NC panel of B. Each
 * 16-column B sliver (16 KB) stays in L1 while the 6-row A slivers stream past it from L2. */
SG_TARGET static void sg_macro(const float *ap, const float *bp, float *c, size_t ldc, int mc,
                               int nc, int kc, float alpha, float beta, enum sg_store mode)
{
    for (int jr = 0; jr < nc; jr += SG_NR) {
        int cols = nc - jr < SG_NR ? nc - jr : SG_NR;
        const float *bs = bp + (size_t)jr * kc;
        for (int ir = 0; ir < mc; ir += SG_MR) {
            int rows = mc - ir < SG_MR ? mc - ir : SG_MR;
            const float *as = ap + (size_t)ir * kc;
            float *ct = c + (size_t)ir * ldc + jr;
            if (rows == SG_MR && cols == SG_NR) sg_kernel(kc, as, bs, ct, ldc, alpha, beta, mode);
            else sg_kernel_edge(kc, as, bs, ct, ldc, rows, cols, alpha, beta, mode);
        }
    }
}

int cpu_sgemm_avx2_supported(void)
{
    static int known = -1;
    int s = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        s = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&known, s, __ATOMIC_RELAXED);
    }
    return s;
}

int cpu_sgemm_avx2(float *c, const float *a, const float *b, int m, int n, int k, int trans_a,
                   int trans_b, int lda, int ldb, int ldc, float alpha, float beta)
{
    if (m <= 0 || n <= 0) return 1;
    if (k <= 0 || alpha == 0) {
        sg_scale(c, m, n, (size_t)ldc, beta);
        return 1;
    }
    if (!cpu_sgemm_avx2_supported()) return 0;
    int kcmax = k < SG_KC ? k : SG_KC, ncmax = n < SG_NC ? n : SG_NC, mcmax = m < SG_MC ? m : SG_MC;
    size_t a_len = ((size_t)(mcmax + SG_MR - 1) / SG_MR * SG_MR) * kcmax + SG_SLACK;
    size_t b_len = ((size_t)(ncmax + SG_NR - 1) / SG_NR * SG_NR) * kcmax + SG_SLACK;
    float *buf = sg_buffer(a_len + b_len);
    if (!buf) return 0;
    float *ap = buf, *bp = buf + (a_len + 15) / 16 * 16;
    /* b_len's slack absorbs the rounding of ap's length up to 64 bytes */
    enum sg_store first = beta == 0 ? SG_STORE_SET : beta == 1 ? SG_STORE_ADD : SG_STORE_SCALE;
    for (int jc = 0; jc < n; jc += SG_NC) {
        int nc = n - jc < SG_NC ? n - jc : SG_NC;
        for (int pc = 0; pc < k; pc += SG_KC) {
            int kc = k - pc < SG_KC ? k - pc : SG_KC;
            enum sg_store mode = pc == 0 ? first : SG_STORE_ADD;
            sg_pack_b(bp, b, trans_b, (size_t)ldb, pc, kc, jc, nc);
            for (int ic = 0; ic < m; ic += SG_MC) {
                int mc = m - ic < SG_MC ? m - ic : SG_MC;
                sg_pack_a(ap, a, trans_a, (size_t)lda, ic, mc, pc, kc);
                sg_macro(ap, bp, c + (size_t)ic * ldc + jc, (size_t)ldc, mc, nc, kc, alpha, beta,
                         mode);
            }
        }
    }
    return 1;
}

#else /* not x86-64 with GCC: never used, matmul keeps BLAS */

int cpu_sgemm_avx2_supported(void) { return 0; }

int cpu_sgemm_avx2(float *c, const float *a, const float *b, int m, int n, int k, int trans_a,
                   int trans_b, int lda, int ldb, int ldc, float alpha, float beta)
{
    (void)c; (void)a; (void)b; (void)m; (void)n; (void)k; (void)trans_a; (void)trans_b;
    (void)lda; (void)ldb; (void)ldc; (void)alpha; (void)beta;
    return 0;
}

#endif
