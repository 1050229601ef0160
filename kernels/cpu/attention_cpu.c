/* attention_cpu: multi-head attention over variable-length packed sequences (cu_seqlens),
 * causal with grouped-query heads for the decoder, bidirectional per image for the vision tower.
 *
 * Design: flash attention on the CPU. Queries go in blocks of ATT_BR rows, keys in tiles of
 * ATT_BC; a block keeps a running max and sum per row (online softmax) and rescales its output
 * accumulator as tiles arrive, so memory is O(block x tile), never a segment's full score matrix,
 * and the per-row log-sum-exp is saved for backward. Backward recomputes each tile's
 * probabilities from that lse. Every tile product goes through the serial blocked matmul, whose
 * micro-kernel reads the tiles in place (only K's transposed slivers get packed) and absorbs the
 * transposes of backward. Parallelism: forward over (segment, head); backward
 * over (segment, kv head), since the query heads of one group all add into the same dk, dv rows
 * and one owner per row means no atomics and a thread-count-independent result. */
#include "kernels_cpu.h"

#include <assert.h>

/* 64 x 128 tiles: wider key tiles halve the online-softmax rescales and the per-tile call
 * overhead. Measured on the 20M benchmark's vision (256-patch images) and decoder (194-token
 * causal) shapes, forward + backward: 64 x 128 fastest of 64 x {64, 128, 256} and
 * {32, 48, 128} x 128 (146 ms a step against 172 ms for 64 x 64). */
enum { ATT_BR = 64, ATT_BC = 128 };

/* Number of keys row r of a query block may see inside tile [c0, c0 + nc), given the block
 * starts at segment-relative row r0. */
static inline int att_visible(const ops_attn *a, int r0, int r, int c0, int nc)
{
    if (!a->causal) return nc;
    int lim = r0 + r - c0 + 1;
    return lim < 0 ? 0 : (lim > nc ? nc : lim);
}

/* Online-softmax update of one query block with one score tile s [nr, ATT_BC] (already scaled):
 * turns s into probabilities relative to the new running max, rescales acc [nr, D] and l. */
CPU_VEC_CLONES
static void att_online_update(real *s, real *acc, real *m, real *l, const ops_attn *a, int r0,
                              int nr, int c0, int nc)
{
    int D = a->head_dim;
    for (int r = 0; r < nr; r++) {
        real *sr = s + (size_t)r * ATT_BC;
        int vis = att_visible(a, r0, r, c0, nc);
        real mx = m[r];
#pragma omp simd reduction(max : mx)
        for (int c = 0; c < vis; c++) mx = sr[c] > mx ? sr[c] : mx;
        real sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < vis; c++) {
            sr[c] = cpu_exp(sr[c] - mx);
            sum += sr[c];
        }
        for (int c = vis; c < nc; c++) sr[c] = 0;
        if (vis == 0) continue;
        real corr = m[r] == -INFINITY ? 0 : cpu_exp(m[r] - mx);
        l[r] = l[r] * corr + sum;
        m[r] = mx;
        real *ar = acc + (size_t)r * D;
        for (int j = 0; j < D; j++) ar[j] *= corr;
    }
}

/* One query block of one head: rows [r0, r0 + nr) of the segment starting at token t0. */
static void att_forward_block(real *o, real *lse, const real *q, const real *k, const real *v,
                              const ops_attn *a, int t0, int len, int h, int r0, int nr)
{
    int D = a->head_dim, kvh = h / (a->num_heads / a->num_kv_heads);
    real s[ATT_BR * ATT_BC], acc[ATT_BR * OPS_ATTN_MAX_HEAD_DIM], m[ATT_BR], l[ATT_BR];
    for (int r = 0; r < nr; r++) { m[r] = -INFINITY; l[r] = 0; }
    memset(acc, 0, (size_t)nr * D * sizeof(real));
    const real *qb = q + (size_t)(t0 + r0) * a->ldq + (size_t)h * D;
    int key_end = a->causal ? r0 + nr : len;
    for (int c0 = 0; c0 < key_end; c0 += ATT_BC) {
        int nc = key_end - c0 < ATT_BC ? key_end - c0 : ATT_BC;
        const real *kb = k + (size_t)(t0 + c0) * a->ldk + (size_t)kvh * D;
        const real *vb = v + (size_t)(t0 + c0) * a->ldv + (size_t)kvh * D;
        CPU_FN(matmul_serial)(s, qb, kb, nr, nc, D, 0, 1, a->ldq, a->ldk, ATT_BC, a->scale, 0);
        att_online_update(s, acc, m, l, a, r0, nr, c0, nc);
        CPU_FN(matmul_serial)(acc, s, vb, nr, D, nc, 0, 0, ATT_BC, a->ldv, D, 1, 1);
    }
    for (int r = 0; r < nr; r++) {
        real *orow = o + (size_t)(t0 + r0 + r) * a->ldo + (size_t)h * D;
        real inv = 1 / l[r];
        for (int j = 0; j < D; j++) orow[j] = acc[(size_t)r * D + j] * inv;
        lse[(size_t)(t0 + r0 + r) * a->num_heads + h] = m[r] + (real)log(l[r]);
    }
}

void CPU_FN(attention_forward)(real *o, real *lse, const real *q, const real *k, const real *v,
                               const ops_attn *a)
{
    assert(a->head_dim <= OPS_ATTN_MAX_HEAD_DIM && a->num_heads % a->num_kv_heads == 0);
    int items = a->num_seqs * a->num_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
        int sq = it / a->num_heads, h = it % a->num_heads;
        int t0 = a->cu_seqlens[sq], len = a->cu_seqlens[sq + 1] - t0;
        for (int r0 = 0; r0 < len; r0 += ATT_BR) {
            int nr = len - r0 < ATT_BR ? len - r0 : ATT_BR;
            att_forward_block(o, lse, q, k, v, a, t0, len, h, r0, nr);
        }
    }
}

/* Probabilities of a recomputed score tile p [nr, ATT_BC] from the rows' saved lse, masked. */
CPU_VEC_CLONES
static void att_probs(real *p, const real *rowlse, const ops_attn *a, int r0, int nr, int c0, int nc)
{
    for (int r = 0; r < nr; r++) {
        real *pr = p + (size_t)r * ATT_BC, l = rowlse[r];
        int vis = att_visible(a, r0, r, c0, nc);
#pragma omp simd
        for (int c = 0; c < vis; c++) pr[c] = cpu_exp(pr[c] - l);
        for (int c = vis; c < nc; c++) pr[c] = 0;
    }
}

/* dS = P (dP - rowsum(dO o)), in place over dp [nr, ATT_BC] */
CPU_VEC_CLONES
static void att_dscores(real *dp, const real *p, const real *rowdot, int nr, int nc)
{
    for (int r = 0; r < nr; r++) {
        real *dr = dp + (size_t)r * ATT_BC, d = rowdot[r];
        const real *pr = p + (size_t)r * ATT_BC;
        for (int c = 0; c < nc; c++) dr[c] = pr[c] * (dr[c] - d);
    }
}

/* Backward of one query block of head h against every key tile it saw:
 * P = exp(S - lse), dV += P^T dO, dS = P (dO V^T - rowsum(dO o)), dQ += scale dS K,
 * dK += scale dS^T Q. The caller owns dk, dv rows of this (segment, kv head). */
static void att_backward_block(real *dq, real *dk, real *dv, const real *dout, const real *q,
                               const real *k, const real *v, const real *o, const real *lse,
                               const ops_attn *a, int t0, int len, int h, int r0, int nr)
{
    int D = a->head_dim, kvh = h / (a->num_heads / a->num_kv_heads);
    real p[ATT_BR * ATT_BC], ds[ATT_BR * ATT_BC], rowdot[ATT_BR], rowlse[ATT_BR];
    size_t qoff = (size_t)(t0 + r0) * a->ldq + (size_t)h * D;
    const real *qb = q + qoff, *dob = dout + (size_t)(t0 + r0) * a->ldo + (size_t)h * D;
    for (int r = 0; r < nr; r++) {
        const real *orow = o + (size_t)(t0 + r0 + r) * a->ldo + (size_t)h * D;
        real acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < D; j++) acc += dob[(size_t)r * a->ldo + j] * orow[j];
        rowdot[r] = acc;
        rowlse[r] = lse[(size_t)(t0 + r0 + r) * a->num_heads + h];
    }
    int key_end = a->causal ? r0 + nr : len;
    for (int c0 = 0; c0 < key_end; c0 += ATT_BC) {
        int nc = key_end - c0 < ATT_BC ? key_end - c0 : ATT_BC;
        size_t koff = (size_t)(t0 + c0) * a->ldk + (size_t)kvh * D;
        size_t voff = (size_t)(t0 + c0) * a->ldv + (size_t)kvh * D;
        CPU_FN(matmul_serial)(p, qb, k + koff, nr, nc, D, 0, 1, a->ldq, a->ldk, ATT_BC, a->scale, 0);
        att_probs(p, rowlse, a, r0, nr, c0, nc);
        CPU_FN(matmul_serial)(dv + voff, p, dob, nc, D, nr, 1, 0, ATT_BC, a->ldo, a->ldv, 1, 1);
        CPU_FN(matmul_serial)(ds, dob, v + voff, nr, nc, D, 0, 1, a->ldo, a->ldv, ATT_BC, 1, 0);
        att_dscores(ds, p, rowdot, nr, nc);
        CPU_FN(matmul_serial)(dq + qoff, ds, k + koff, nr, D, nc, 0, 0, ATT_BC, a->ldk, a->ldq,
                              a->scale, 1);
        CPU_FN(matmul_serial)(dk + koff, ds, qb, nc, D, nr, 1, 0, ATT_BC, a->ldq, a->ldk,
                              a->scale, 1);
    }
}

void CPU_FN(attention_backward)(real *dq, real *dk, real *dv, const real *dout, const real *q,
                                const real *k, const real *v, const real *o, const real *lse,
                                const ops_attn *a)
{
    assert(a->head_dim <= OPS_ATTN_MAX_HEAD_DIM && a->num_heads % a->num_kv_heads == 0);
    int group = a->num_heads / a->num_kv_heads;
    int items = a->num_seqs * a->num_kv_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
        int sq = it / a->num_kv_heads, kvh = it % a->num_kv_heads;
        int t0 = a->cu_seqlens[sq], len = a->cu_seqlens[sq + 1] - t0;
        for (int h = kvh * group; h < (kvh + 1) * group; h++)
            for (int r0 = 0; r0 < len; r0 += ATT_BR) {
                int nr = len - r0 < ATT_BR ? len - r0 : ATT_BR;
                att_backward_block(dq, dk, dv, dout, q, k, v, o, lse, a, t0, len, h, r0, nr);
            }
    }
}
