/* attention_cpu: multi-head attention over variable-length packed sequences (cu_seqlens),
 * causal with grouped-query heads for the decoder, bidirectional per image for the vision tower.
 *
 * Design: flash attention on the CPU with its own tile products. Queries go in blocks of t rows,
 * keys in tiles of t; a block keeps a running max and sum per row (online softmax) and rescales
 * its output accumulator as tiles arrive, so memory is O(block x tile), never a segment's full
 * score matrix, and the per-row log-sum-exp is saved for backward, which recomputes each tile's
 * probabilities from it. The one idea: the tile products stream packed, contiguous operands and
 * accumulate into contiguous scratch, not into the model's strided rows (which are a multiple of
 * 1 KB apart, so a block of them maps to a sixteenth of the L1 sets and a quarter of the L2's).
 * Each K / V tile is packed once (transposed into 16-column slivers for the score-like products
 * Q K^T and dO V^T, as contiguous rows for the others) and serves all the query blocks of a
 * pass and every query head of its GQA group; backward packs each Q and dO block as contiguous rows (forward
 * reads Q in place: it is only broadcast); outputs and gradients accumulate in scratch rows and
 * reach o, dq, dk, dv in one pass per tile. A register-tiled 6 x 16 micro-kernel (GCC vector
 * extensions, generic over `real`) runs every product, and causal masking trims work per
 * micro-tile, not only per tile. Parallelism: forward over (segment, kv head, head chunk, row
 * super-block), each owning its output rows; backward over (segment, kv head), since the query
 * heads of one group all add into the same dk, dv rows and one owner per row means no atomics
 * and a thread-count-independent result. */
#include "kernels_cpu.h"

#include <assert.h>

/* Tiles are t x t with t <= 64, a multiple of ATT_NR chosen per head_dim so that backward's
 * eight t x round16(head_dim) buffers (five packs, three accumulators) and two score tiles fit
 * ATT_SCRATCH (t = 64 up to head_dim 64, 48 at 80, 32 at 128, 16 at 256). The scratch is a fixed
 * stack buffer, 160 KB in float (320 KB in the test-only double build): less than the chain this
 * file used to reach, its 96 KB of tiles plus the serial matmul's 256 KB packing buffer, so
 * OpenMP threads' stacks need nothing new. Forward processes up to ATT_SB_TILES query blocks per
 * pass, so each packed key tile serves all of them, and up to ATT_HEAD_CHUNK query heads of a
 * group (running max and sum per row and head on the stack). On the 20M benchmark's shapes
 * (forward + backward, one thread) 64 x 64 beat 48 x 48 by 3-9% and 32 x 32 by 14-21%; 96 x 96
 * gained under 4% for 1.6x the stack. */
enum { ATT_T_MAX = 64, ATT_MR = 6, ATT_NR = 16, ATT_SB_TILES = 4, ATT_HEAD_CHUNK = 4 };
enum { ATT_SCRATCH = 10 * ATT_T_MAX * ATT_T_MAX, ATT_SB_MAX = ATT_SB_TILES * ATT_T_MAX };

/* 32-byte vectors: AVX registers in the x86-64-v3 clone, SSE pairs in the default one */
typedef real att_vec __attribute__((vector_size(32)));
typedef real att_vec_u __attribute__((vector_size(32), aligned(sizeof(real))));
enum { ATT_VN = 32 / sizeof(real), ATT_NV = ATT_NR / ATT_VN };

static inline int att_min(int x, int y) { return x < y ? x : y; }
static inline int att_round16(int x) { return (x + ATT_NR - 1) / ATT_NR * ATT_NR; }

static int att_tile(int head_dim)
{
    int dp = att_round16(head_dim), t = ATT_T_MAX;
    while (t > ATT_NR && 8 * t * dp + 2 * t * t > ATT_SCRATCH) t -= ATT_NR;
    return t;
}

/* Whether the accumulators of `heads` heads x `rows` rows fit the scratch after forward's packs
 * and score tile; one block of ATT_HEAD_CHUNK heads always does, as att_tile leaves room
 * for backward's eight t x dp buffers */
static int att_fwd_acc_fits(int heads, int rows, int t, int dp)
{
    return (size_t)heads * rows * dp <= (size_t)ATT_SCRATCH - 2 * (size_t)t * dp - (size_t)t * t;
}

/* Number of keys row r of a query block may see inside tile [c0, c0 + nc), given the block
 * starts at segment-relative row r0. */
static inline int att_visible(const ops_attn *a, int r0, int r, int c0, int nc)
{
    if (!a->causal) return nc;
    int lim = r0 + r - c0 + 1;
    return lim < 0 ? 0 : (lim > nc ? nc : lim);
}

/* ---- packing ------------------------------------------------------------------------------- */
/* rows [0, n) x columns [0, D) of src (row stride ld) as contiguous rows of round16(D), zero
 * past D: dst[r dp + c] = src[r][c]. Read as the A operand (Q K^T, dO V^T) and as the B
 * operand where head_dim is the product's width (P V, P^T dO, dS K, dS^T Q): 16 columns of a
 * row are one aligned load. dst [n * round16(D)] */
CPU_VEC_CLONES
static void att_pack_rows(real *dst, const real *src, size_t ld, int n, int D)
{
    int dp = att_round16(D), full = D / ATT_NR * ATT_NR;
    for (int r = 0; r < n; r++) {
        real *d = dst + (size_t)r * dp;
        const real *s = src + (size_t)r * ld;
        for (int j0 = 0; j0 < full; j0 += ATT_NR)
            for (int v = 0; v < ATT_NV; v++)
                *(att_vec *)(d + j0 + v * ATT_VN) = *(const att_vec_u *)(s + j0 + v * ATT_VN);
        for (int c = full; c < D; c++) d[c] = s[c];
        for (int c = D; c < dp; c++) d[c] = 0;
    }
}

/* GCC's __builtin_shuffle on float vectors; clang spells it differently, and the double build
 * is test-only */
#if defined(__GNUC__) && !defined(__clang__) && !defined(ADAPT_CPU_F64)
#define ATT_SHUFFLE_TRANSPOSE 1
#else
#define ATT_SHUFFLE_TRANSPOSE 0
#endif

#if ATT_SHUFFLE_TRANSPOSE
_Static_assert(ATT_VN == 8, "att_transpose8 shuffles 8-float vectors");
typedef int32_t att_mask __attribute__((vector_size(32)));

/* r[0..8) := the columns of the 8 x 8 block whose rows are r[0..8): three rounds of pairwise
 * interleaves (24 shuffles for 64 elements, where element-wise copying costs a load and a
 * store each) */
static inline __attribute__((always_inline)) void att_transpose8(att_vec r[8])
{
    const att_mask lo1 = {0, 8, 1, 9, 4, 12, 5, 13}, hi1 = {2, 10, 3, 11, 6, 14, 7, 15};
    const att_mask lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const att_mask lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
    att_vec t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], lo1);
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi1);
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; j++) {
            u[i + 2 * j] = __builtin_shuffle(t[i + j], t[i + j + 2], lo2);
            u[i + 2 * j + 1] = __builtin_shuffle(t[i + j], t[i + j + 2], hi2);
        }
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shuffle(u[i], u[i + 4], lo4);
        r[i + 4] = __builtin_shuffle(u[i], u[i + 4], hi4);
    }
}
#endif

/* The same rows transposed, zero past n: dst[(j D + p) 16 + c] = src[16 j + c][p]. The B
 * operand where the keys are the product's width (Q K^T, dO V^T); dst [round16(n) * D]. In the
 * float build whole 8 x 8 blocks go through att_transpose8; the edges (and the double build)
 * copy element by element. */
CPU_VEC_CLONES
static void att_pack_cols(real *dst, const real *src, size_t ld, int n, int D)
{
    for (int j0 = 0; j0 < n; j0 += ATT_NR) {
        int w = att_min(ATT_NR, n - j0), c_done = 0, p_done = 0;
        real *d = dst + (size_t)j0 * D;
#if ATT_SHUFFLE_TRANSPOSE
        c_done = w / 8 * 8, p_done = D / 8 * 8;
        for (int c0 = 0; c0 < c_done; c0 += 8)
            for (int p0 = 0; p0 < p_done; p0 += 8) {
                att_vec r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = *(const att_vec_u *)(src + (size_t)(j0 + c0 + i) * ld + p0);
                att_transpose8(r);
                for (int i = 0; i < 8; i++) *(att_vec *)(d + (size_t)(p0 + i) * ATT_NR + c0) = r[i];
            }
#endif
        for (int c = 0; c < w; c++) {
            const real *s = src + (size_t)(j0 + c) * ld;
            for (int p = c < c_done ? p_done : 0; p < D; p++) d[(size_t)p * ATT_NR + c] = s[p];
        }
        for (int c = w; c < ATT_NR; c++)
            for (int p = 0; p < D; p++) d[(size_t)p * ATT_NR + c] = 0;
    }
}

/* Asks for rows [0, n) x columns [0, D) of a strided matrix to be brought into cache: the next
 * tile's or block's operands, while this one computes. Rows a few KB apart are no stream the
 * hardware prefetchers follow; measured 1-5% on the benchmark's shapes. */
static inline void att_prefetch_rows(const real *src, size_t ld, int n, int D)
{
    for (int r = 0; r < n; r++)
        for (int j = 0; j < D; j += 64 / (int)sizeof(real))
            __builtin_prefetch(src + (size_t)r * ld + j, 0, 3);
}

/* ---- tile products ----------------------------------------------------------------------- */
/* How causal masking trims a product (row i of the query block sees key j of the tile iff
 * j <= i + delta, delta = block start - tile start): a score-like product (rows x keys) skips
 * micro-tiles wholly above the diagonal (its consumer zeroes masked entries anyway); rows x
 * keys-deep products stop the depth at the last key the micro-tile's rows see; keys x rows-deep
 * products start it at the first row that sees the micro-tile's keys. Masked probabilities are
 * exact zeros, so trimming drops only zero terms. */
typedef enum {
    ATT_TRIM_NONE, ATT_TRIM_SKIP_MASKED, ATT_TRIM_K_TO_DIAG, ATT_TRIM_K_FROM_DIAG
} att_trim;

/* C [m, n] = alpha A B (or += when accumulate). A's element (i, p) is a[i lda + p], or
 * a[p lda + i] when a_trans; B's element (p, j) is b[(j / 16) b_sliver + p ldb + j % 16], a
 * pack: transposed slivers (ldb = 16, b_sliver = 16 k) or rows (ldb = round16(D), b_sliver = 16),
 * 32-byte aligned either way. */
typedef struct att_prod {
    real       *c;
    size_t      ldc;
    const real *a;
    size_t      lda;
    int         a_trans;
    const real *b;
    size_t      ldb, b_sliver;
    int         m, n, k;
    real        alpha;
    int         accumulate;
    att_trim    trim;
    int         delta;
} att_prod;

/* One MR x 16 micro-tile over depth k, accumulated in registers (12 of the 16 AVX registers in
 * float at MR = 6). Rows past `rows` re-read the last valid row (results discarded). Inlined
 * with constant mr and rows, so a full tile's row offsets are immediates. */
static inline __attribute__((always_inline)) void
att_micro(const int mr, const int rows, const int a_trans, real *c, size_t ldc, const real *a,
          size_t lda, const real *b, size_t ldb, int k, int cols, real alpha, int accumulate)
{
    const real *ar[ATT_MR];
    for (int r = 0; r < mr; r++) ar[r] = a + (size_t)(r < rows ? r : rows - 1) * (a_trans ? 1 : lda);
    att_vec acc[ATT_MR][ATT_NV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < ATT_NV; v++) acc[r][v] = (att_vec){0};
    for (int p = 0; p < k; p++) {
        att_vec bv[ATT_NV];
        for (int v = 0; v < ATT_NV; v++) bv[v] = *(const att_vec *)(b + (size_t)p * ldb + v * ATT_VN);
        size_t off = a_trans ? (size_t)p * lda : (size_t)p;
        for (int r = 0; r < mr; r++) {
            real x = ar[r][off];
            for (int v = 0; v < ATT_NV; v++) acc[r][v] += x * bv[v];
        }
    }
    if (cols == ATT_NR) {
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < ATT_NV; v++) {
                att_vec_u *cv = (att_vec_u *)(c + (size_t)r * ldc + v * ATT_VN);
                *cv = accumulate ? *cv + alpha * acc[r][v] : alpha * acc[r][v];
            }
        return;
    }
    for (int r = 0; r < rows; r++) {
        real *cr = c + (size_t)r * ldc;
        for (int j = 0; j < cols; j++) {
            real x = alpha * acc[r][j / ATT_VN][j % ATT_VN];
            cr[j] = accumulate ? cr[j] + x : x;
        }
    }
}

/* one micro-tile of either A layout; full 6- and 4-row tiles get their own constant copies */
static inline __attribute__((always_inline)) void
att_micro_any(int rows, int a_trans, real *c, size_t ldc, const real *a, size_t lda,
              const real *b, size_t ldb, int k, int cols, real alpha, int accumulate)
{
    int acc = accumulate;
    if (a_trans) {
        if (rows == ATT_MR) att_micro(ATT_MR, ATT_MR, 1, c, ldc, a, lda, b, ldb, k, cols, alpha, acc);
        else if (rows == 4) att_micro(4, 4, 1, c, ldc, a, lda, b, ldb, k, cols, alpha, acc);
        else att_micro(ATT_MR, rows, 1, c, ldc, a, lda, b, ldb, k, cols, alpha, acc);
    } else {
        if (rows == ATT_MR) att_micro(ATT_MR, ATT_MR, 0, c, ldc, a, lda, b, ldb, k, cols, alpha, acc);
        else if (rows == 4) att_micro(4, 4, 0, c, ldc, a, lda, b, ldb, k, cols, alpha, acc);
        else att_micro(ATT_MR, rows, 0, c, ldc, a, lda, b, ldb, k, cols, alpha, acc);
    }
}

/* The product, sliver by sliver (one 16-column sliver of B, at most t x 16, stays in L1 while
 * every row micro-tile passes over it). */
CPU_VEC_CLONES
static void att_gemm(const att_prod *g)
{
    for (int j0 = 0; j0 < g->n; j0 += ATT_NR) {
        int cols = att_min(ATT_NR, g->n - j0);
        const real *bs = g->b + (size_t)(j0 / ATT_NR) * g->b_sliver;
        for (int i0 = 0; i0 < g->m; i0 += ATT_MR) {
            int rows = att_min(ATT_MR, g->m - i0), kb = 0, ke = g->k;
            if (g->trim == ATT_TRIM_SKIP_MASKED && j0 > i0 + rows - 1 + g->delta) continue;
            if (g->trim == ATT_TRIM_K_TO_DIAG) ke = att_min(ke, i0 + rows + g->delta);
            if (g->trim == ATT_TRIM_K_FROM_DIAG) kb = i0 - g->delta > 0 ? i0 - g->delta : 0;
            if (kb >= ke) {  /* no depth left: nothing to add, or a zero tile to write */
                if (!g->accumulate)
                    for (int r = 0; r < rows; r++)
                        memset(g->c + (size_t)(i0 + r) * g->ldc + j0, 0, (size_t)cols * sizeof(real));
                continue;
            }
            const real *a = g->a_trans ? g->a + (size_t)kb * g->lda + i0
                                       : g->a + (size_t)i0 * g->lda + kb;
            att_micro_any(rows, g->a_trans, g->c + (size_t)i0 * g->ldc + j0, g->ldc, a, g->lda,
                          bs + (size_t)kb * g->ldb, g->ldb, ke - kb, cols, g->alpha, g->accumulate);
        }
    }
}

/* ---- forward ----------------------------------------------------------------------------- */
/* Online-softmax update of one query block with its score tile s [nr, lds] (already scaled):
 * turns s into probabilities relative to the new running max (zero where masked, up to nc),
 * rescales the block's output rows o [nr, ldo] and the running sums l. */
CPU_VEC_CLONES
static void att_online_update(real *s, int lds, real *o, size_t ldo, real *m, real *l,
                              const ops_attn *a, int r0, int nr, int c0, int nc)
{
    int D = a->head_dim;
    for (int r = 0; r < nr; r++) {
        real *sr = s + (size_t)r * lds;
        int vis = att_visible(a, r0, r, c0, nc);
        for (int c = vis; c < nc; c++) sr[c] = 0;
        if (vis == 0) continue;
        real mx = m[r];
#pragma omp simd reduction(max : mx)
        for (int c = 0; c < vis; c++) mx = sr[c] > mx ? sr[c] : mx;
        real sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < vis; c++) {
            sr[c] = cpu_exp(sr[c] - mx);
            sum += sr[c];
        }
        real corr = m[r] == -INFINITY ? 0 : cpu_exp(m[r] - mx);
        l[r] = l[r] * corr + sum;
        m[r] = mx;
        if (corr != 1) {
            real *orow = o + (size_t)r * ldo;
            for (int j = 0; j < D; j++) orow[j] *= corr;
        }
    }
}

/* The work of one forward item: query heads [h0, h1) of kv head kvh, segment rows [R0, R1)
 * (at most ATT_SB_TILES blocks of t). Key tiles go outermost, so each is packed once for all
 * the item's blocks and heads; the output accumulates in contiguous rows of the scratch
 * (o's rows are a few KB apart, and the L1 sets they map to could not hold a block of them).
 * scr [ATT_SCRATCH]: packed K, V, one score tile, then the accumulators. */
static void att_forward_item(real *o, real *lse, const real *q, const real *k, const real *v,
                             const ops_attn *a, int t0, int len, int kvh, int h0, int h1, int R0,
                             int R1, int t, real *scr)
{
    int D = a->head_dim, dp = att_round16(D);
    real *kt = scr, *vr = kt + (size_t)t * dp, *s = vr + (size_t)t * dp, *acc = s + (size_t)t * t;
    real m[ATT_HEAD_CHUNK * ATT_SB_MAX], l[ATT_HEAD_CHUNK * ATT_SB_MAX];
    assert(att_fwd_acc_fits(h1 - h0, R1 - R0, t, dp));
    for (int i = 0; i < (h1 - h0) * (R1 - R0); i++) { m[i] = -INFINITY; l[i] = 0; }
    memset(acc, 0, (size_t)(h1 - h0) * (R1 - R0) * dp * sizeof(real));
    int key_end = a->causal ? R1 : len;
    for (int c0 = 0; c0 < key_end; c0 += t) {
        int nc = att_min(t, key_end - c0);
        att_pack_cols(kt, k + (size_t)(t0 + c0) * a->ldk + (size_t)kvh * D, a->ldk, nc, D);
        att_pack_rows(vr, v + (size_t)(t0 + c0) * a->ldv + (size_t)kvh * D, a->ldv, nc, D);
        /* the next key tile's rows, a slice per block so the requests spread over the work */
        int next_nc = att_min(t, key_end - c0 - t), step = 0;
        int steps = (h1 - h0) * ((R1 - R0 + t - 1) / t);
        for (int h = h0; h < h1; h++)
            for (int r0 = R0; r0 < R1; r0 += t, step++) {
                int nr = att_min(t, R1 - r0), delta = r0 - c0;
                if (next_nc > 0) {
                    int p0 = next_nc * step / steps, p1 = next_nc * (step + 1) / steps;
                    size_t row = (size_t)(t0 + c0 + t + p0);
                    att_prefetch_rows(k + row * a->ldk + (size_t)kvh * D, a->ldk, p1 - p0, D);
                    att_prefetch_rows(v + row * a->ldv + (size_t)kvh * D, a->ldv, p1 - p0, D);
                }
                if (c0 == 0 && r0 + t < R1)  /* the next block's queries, first touched now */
                    att_prefetch_rows(q + (size_t)(t0 + r0 + t) * a->ldq + (size_t)h * D, a->ldq,
                                      att_min(t, R1 - r0 - t), D);
                if (a->causal && r0 + nr <= c0) continue;
                size_t st = (size_t)(h - h0) * (R1 - R0) + (size_t)(r0 - R0);
                real *ob = acc + st * dp;
                att_prod sc = {s, (size_t)t, q + (size_t)(t0 + r0) * a->ldq + (size_t)h * D,
                               (size_t)a->ldq, 0, kt, ATT_NR, (size_t)ATT_NR * D, nr, nc, D,
                               a->scale, 0,
                               a->causal ? ATT_TRIM_SKIP_MASKED : ATT_TRIM_NONE, delta};
                att_gemm(&sc);
                att_online_update(s, t, ob, dp, m + st, l + st, a, r0, nr, c0, nc);
                att_prod pv = {ob, (size_t)dp, s, (size_t)t, 0, vr, (size_t)dp, ATT_NR, nr, D, nc,
                               1, 1,
                               a->causal ? ATT_TRIM_K_TO_DIAG : ATT_TRIM_NONE, delta};
                att_gemm(&pv);
            }
    }
    for (int h = h0; h < h1; h++)
        for (int r = R0; r < R1; r++) {
            size_t st = (size_t)(h - h0) * (R1 - R0) + (size_t)(r - R0);
            real *orow = o + (size_t)(t0 + r) * a->ldo + (size_t)h * D, inv = 1 / l[st];
            for (int j = 0; j < D; j++) orow[j] = acc[st * dp + j] * inv;
            lse[(size_t)(t0 + r) * a->num_heads + h] = m[st] + (real)log(l[st]);
        }
}

static int att_longest(const ops_attn *a)
{
    int longest = 0;
    for (int s = 0; s < a->num_seqs; s++) {
        int len = a->cu_seqlens[s + 1] - a->cu_seqlens[s];
        longest = len > longest ? len : longest;
    }
    return longest;
}

void CPU_FN(attention_forward)(real *o, real *lse, const real *q, const real *k, const real *v,
                               const ops_attn *a)
{
    assert(a->head_dim <= OPS_ATTN_MAX_HEAD_DIM && a->num_heads % a->num_kv_heads == 0);
    int group = a->num_heads / a->num_kv_heads, chunks = (group + ATT_HEAD_CHUNK - 1) / ATT_HEAD_CHUNK;
    int t = att_tile(a->head_dim), dp = att_round16(a->head_dim);
    int heads = att_min(group, ATT_HEAD_CHUNK);
    int nb = ATT_SB_TILES;  /* blocks per super-block: as many as the accumulators allow */
    while (nb > 1 && !att_fwd_acc_fits(heads, nb * t, t, dp)) nb--;
    int sb = nb * t, sbs = (att_longest(a) + sb - 1) / sb;
    /* item = (segment, kv head, head chunk, row super-block); super-blocks past a segment's end
     * are empty items */
    int per_seq = a->num_kv_heads * chunks * sbs, items = a->num_seqs * per_seq;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
        int sq = it / per_seq, rem = it % per_seq;
        int kvh = rem / (chunks * sbs), ch = rem / sbs % chunks, R0 = rem % sbs * sb;
        int t0 = a->cu_seqlens[sq], len = a->cu_seqlens[sq + 1] - t0;
        if (R0 >= len) continue;
        int h0 = kvh * group + ch * ATT_HEAD_CHUNK;
        int h1 = att_min(h0 + ATT_HEAD_CHUNK, (kvh + 1) * group);
        real scr[ATT_SCRATCH] __attribute__((aligned(64)));
        att_forward_item(o, lse, q, k, v, a, t0, len, kvh, h0, h1, R0, att_min(R0 + sb, len), t, scr);
    }
}

/* ---- backward ---------------------------------------------------------------------------- */
/* Probabilities of a recomputed score tile p [nr, ldp] from the rows' saved lse, zero where
 * masked (up to nc: entries the score product skipped are overwritten here). */
CPU_VEC_CLONES
static void att_probs(real *p, int ldp, const real *rowlse, const ops_attn *a, int r0, int nr,
                      int c0, int nc)
{
    for (int r = 0; r < nr; r++) {
        real *pr = p + (size_t)r * ldp, l = rowlse[r];
        int vis = att_visible(a, r0, r, c0, nc);
#pragma omp simd
        for (int c = 0; c < vis; c++) pr[c] = cpu_exp(pr[c] - l);
        for (int c = vis; c < nc; c++) pr[c] = 0;
    }
}

/* dS = P (dP - rowsum(dO o)), in place over dp [nr, ldp]; zero where masked (never reading the
 * entries the dP product skipped) */
CPU_VEC_CLONES
static void att_dscores(real *dp, const real *p, int ldp, const real *rowdot, const ops_attn *a,
                        int r0, int nr, int c0, int nc)
{
    for (int r = 0; r < nr; r++) {
        real *dr = dp + (size_t)r * ldp, d = rowdot[r];
        const real *pr = p + (size_t)r * ldp;
        int vis = att_visible(a, r0, r, c0, nc);
#pragma omp simd
        for (int c = 0; c < vis; c++) dr[c] = pr[c] * (dr[c] - d);
        for (int c = vis; c < nc; c++) dr[c] = 0;
    }
}

/* dst rows [n, D] (row stride ld) += src rows (stride lds) */
CPU_VEC_CLONES
static void att_add_rows(real *dst, size_t ld, const real *src, size_t lds, int n, int D)
{
    for (int r = 0; r < n; r++) {
        real *d = dst + (size_t)r * ld;
        const real *x = src + (size_t)r * lds;
#pragma omp simd
        for (int j = 0; j < D; j++) d[j] += x[j];
    }
}

/* The packed operands and the accumulators of one key tile and one query block, carved out of
 * the scratch buffer. The gradients accumulate in contiguous rows and reach dq, dk, dv in one
 * pass each: added to their strided rows by every micro-tile, they cost backward a fifth. */
typedef struct att_bwd_tiles {
    real *kt, *kr, *vt;  /* K transposed, K rows, V transposed: [t * round16(D)] each */
    real *qr, *dor;      /* Q rows, dO rows of the block */
    real *dka, *dva;     /* the key tile's dK, dV [t, round16(D)] */
    real *dqt;           /* the block's dQ from this key tile [t, round16(D)] */
    real *p, *ds;        /* probabilities and score gradients [t, t] */
} att_bwd_tiles;

/* rowsum(dO o) and the saved lse of segment rows [r0, r0 + nr) of head h */
static void att_row_stats(real *rowdot, real *rowlse, const real *dout, const real *o,
                          const real *lse, const ops_attn *a, int t0, int h, int r0, int nr)
{
    int D = a->head_dim;
    for (int r = 0; r < nr; r++) {
        size_t row = (size_t)(t0 + r0 + r);
        const real *orow = o + row * a->ldo + (size_t)h * D;
        const real *dorow = dout + row * a->ldo + (size_t)h * D;
        real acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < D; j++) acc += dorow[j] * orow[j];
        rowdot[r] = acc;
        rowlse[r] = lse[row * a->num_heads + h];
    }
}

/* Backward of one query block (segment rows [r0, r0 + nr), head h) against key tile
 * [c0, c0 + nc) whose packs are in w: P = exp(S - lse), dV += P^T dO,
 * dS = P (dO V^T - rowsum(dO o)), dQ += scale dS K, dK += scale dS^T Q. The caller owns the dk,
 * dv rows of this (segment, kv head) and the dq rows of its heads. The rows' stats come from
 * the caller's cache, or, when it has none (NULL), are computed here. */
static void att_backward_block(real *dq, real *dk, real *dv, const real *dout, const real *q,
                               const real *o, const real *lse, const ops_attn *a,
                               const att_bwd_tiles *w, const real *cached_dot,
                               const real *cached_lse, int t, int t0, int len, int kvh, int h,
                               int r0, int nr, int c0, int nc)
{
    int D = a->head_dim, delta = r0 - c0;
    real own_dot[ATT_T_MAX], own_lse[ATT_T_MAX];
    const real *qb = q + (size_t)(t0 + r0) * a->ldq + (size_t)h * D;
    const real *dob = dout + (size_t)(t0 + r0) * a->ldo + (size_t)h * D;
    att_pack_rows(w->qr, qb, a->ldq, nr, D);
    att_pack_rows(w->dor, dob, a->ldo, nr, D);
    int next = att_min(t, len - r0 - t);  /* the next block's rows, needed after this one */
    if (next > 0) {
        size_t row = (size_t)(t0 + r0 + t);
        att_prefetch_rows(q + row * a->ldq + (size_t)h * D, a->ldq, next, D);
        att_prefetch_rows(dout + row * a->ldo + (size_t)h * D, a->ldo, next, D);
        att_prefetch_rows(dq + row * a->ldq + (size_t)h * D, a->ldq, next, D);
        if (!cached_dot) att_prefetch_rows(o + row * a->ldo + (size_t)h * D, a->ldo, next, D);
    }
    const real *rowdot = cached_dot, *rowlse = cached_lse;
    if (!cached_dot) {
        att_row_stats(own_dot, own_lse, dout, o, lse, a, t0, h, r0, nr);
        rowdot = own_dot;
        rowlse = own_lse;
    }
    att_trim scores = a->causal ? ATT_TRIM_SKIP_MASKED : ATT_TRIM_NONE;
    att_trim to_diag = a->causal ? ATT_TRIM_K_TO_DIAG : ATT_TRIM_NONE;
    att_trim from_diag = a->causal ? ATT_TRIM_K_FROM_DIAG : ATT_TRIM_NONE;
    size_t dp = (size_t)att_round16(D);
    size_t cs = (size_t)ATT_NR * D, tt = (size_t)t;  /* sliver stride of the transposed packs */
    real sc = a->scale;
    /*              C       ldc  A       lda  A^T  B       ldb     sliver  m   n   k   alpha  acc  trim */
    att_prod s   = {w->p,   tt,  w->qr,  dp,  0,   w->kt,  ATT_NR, cs,     nr, nc, D,  sc,    0,   scores,    delta};
    att_prod pdo = {w->dva, dp,  w->p,   tt,  1,   w->dor, dp,     ATT_NR, nc, D,  nr, 1,     1,   from_diag, delta};
    att_prod dop = {w->ds,  tt,  w->dor, dp,  0,   w->vt,  ATT_NR, cs,     nr, nc, D,  1,     0,   scores,    delta};
    att_prod dsk = {w->dqt, dp,  w->ds,  tt,  0,   w->kr,  dp,     ATT_NR, nr, D,  nc, sc,    0,   to_diag,   delta};
    att_prod dsq = {w->dka, dp,  w->ds,  tt,  1,   w->qr,  dp,     ATT_NR, nc, D,  nr, sc,    1,   from_diag, delta};
    att_gemm(&s);
    att_probs(w->p, t, rowlse, a, r0, nr, c0, nc);
    att_gemm(&pdo);
    att_gemm(&dop);
    att_dscores(w->ds, w->p, t, rowdot, a, r0, nr, c0, nc);
    att_gemm(&dsk);
    att_add_rows(dq + (size_t)(t0 + r0) * a->ldq + (size_t)h * D, a->ldq, w->dqt, dp, nr, D);
    att_gemm(&dsq);
}

void CPU_FN(attention_backward)(real *dq, real *dk, real *dv, const real *dout, const real *q,
                                const real *k, const real *v, const real *o, const real *lse,
                                const ops_attn *a)
{
    assert(a->head_dim <= OPS_ATTN_MAX_HEAD_DIM && a->num_heads % a->num_kv_heads == 0);
    int group = a->num_heads / a->num_kv_heads, D = a->head_dim, dp = att_round16(D);
    int t = att_tile(D), items = a->num_seqs * a->num_kv_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
        int sq = it / a->num_kv_heads, kvh = it % a->num_kv_heads;
        int t0 = a->cu_seqlens[sq], len = a->cu_seqlens[sq + 1] - t0;
        real scr[ATT_SCRATCH] __attribute__((aligned(64)));
        size_t pk = (size_t)t * dp;
        att_bwd_tiles w = {scr, scr + pk, scr + 2 * pk, scr + 3 * pk, scr + 4 * pk, scr + 5 * pk,
                           scr + 6 * pk, scr + 7 * pk, scr + 8 * pk, scr + 8 * pk + (size_t)t * t};
        /* every key tile needs each row's rowsum(dO o) and lse: computed once when the group's
         * rows fit the cache (the benchmark's segments do), else per block and tile */
        real stat_dot[ATT_HEAD_CHUNK * ATT_SB_MAX], stat_lse[ATT_HEAD_CHUNK * ATT_SB_MAX];
        int cached = group * len <= ATT_HEAD_CHUNK * ATT_SB_MAX;
        for (int g = 0; cached && g < group; g++)
            att_row_stats(stat_dot + (size_t)g * len, stat_lse + (size_t)g * len, dout, o, lse, a,
                          t0, kvh * group + g, 0, len);
        /* key tiles outermost: each is packed once for every head of the group and every block */
        for (int c0 = 0; c0 < len; c0 += t) {
            int nc = att_min(t, len - c0);
            const real *kb = k + (size_t)(t0 + c0) * a->ldk + (size_t)kvh * D;
            const real *vb = v + (size_t)(t0 + c0) * a->ldv + (size_t)kvh * D;
            att_pack_cols(w.kt, kb, a->ldk, nc, D);
            att_pack_rows(w.kr, kb, a->ldk, nc, D);
            att_pack_cols(w.vt, vb, a->ldv, nc, D);
            memset(w.dka, 0, 2 * pk * sizeof(real));  /* dka and dva */
            /* the next key tile's rows (and its dk, dv rows), a slice per block */
            int next_nc = att_min(t, len - c0 - t), steps = group * ((len + t - 1) / t), step = 0;
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int r0 = 0; r0 < len; r0 += t, step++) {
                    int nr = att_min(t, len - r0);
                    if (next_nc > 0) {
                        int p0 = next_nc * step / steps, p1 = next_nc * (step + 1) / steps;
                        size_t row = (size_t)(t0 + c0 + t + p0);
                        att_prefetch_rows(k + row * a->ldk + (size_t)kvh * D, a->ldk, p1 - p0, D);
                        att_prefetch_rows(v + row * a->ldv + (size_t)kvh * D, a->ldv, p1 - p0, D);
                        att_prefetch_rows(dk + row * a->ldk + (size_t)kvh * D, a->ldk, p1 - p0, D);
                        att_prefetch_rows(dv + row * a->ldv + (size_t)kvh * D, a->ldv, p1 - p0, D);
                    }
                    if (a->causal && r0 + nr <= c0) continue;
                    size_t st = (size_t)(h - kvh * group) * len + (size_t)r0;
                    att_backward_block(dq, dk, dv, dout, q, o, lse, a, &w,
                                       cached ? stat_dot + st : NULL, cached ? stat_lse + st : NULL,
                                       t, t0, len, kvh, h, r0, nr, c0, nc);
                }
            att_add_rows(dk + (size_t)(t0 + c0) * a->ldk + (size_t)kvh * D, a->ldk, w.dka, dp, nc, D);
            att_add_rows(dv + (size_t)(t0 + c0) * a->ldv + (size_t)kvh * D, a->ldv, w.dva, dp, nc, D);
        }
    }
}
