/* loss_cpu: the LM head fused with masked cross-entropy, forward and backward in one call.
 *
 * Design: the T x V logits are never held. Unmasked rows are gathered in chunks of up to
 * XENT_ROWS; for each chunk the vocabulary is swept in chunks that fit the caller's scratch,
 * keeping a running max and sum per row (online logsumexp). A second sweep turns each logit
 * tile into its gradient (softmax - onehot) / normaliser and feeds two products, dH += G W and
 * dW += G^T H. When the scratch holds a row chunk's whole vocabulary, the second sweep reuses
 * the tile instead of recomputing it (three products per chunk instead of four). Masked rows are
 * skipped before any product, which matters for instruction tuning, where most tokens are
 * prompt or image. The products go through matmul (BLAS when present), which brings its own
 * threads; the per-row softmax work is split across OpenMP threads. */
#include "kernels_cpu.h"

#include <assert.h>

/* Rows per chunk: the weight gradient dW += G^T H is a product of inner size `rows` that reads
 * and writes all of dW (V x d) once per chunk, so small chunks make it memory-bound; 256 rows
 * cost 256 x (V + 2d + 3) floats of scratch (159 MB for Qwen2-VL-2B, against a step's GBs). */
enum { XENT_ROWS = 256 };

/* Scratch layout of one row chunk, carved from the caller's work buffer. */
typedef struct xent_scratch {
    real *hc;    /* [rows, d] gathered hidden states */
    real *dhc;   /* [rows, d] their gradient */
    real *m;     /* [rows] running max */
    real *l;     /* [rows] running sum of exp(logit - m) */
    real *tgt;   /* [rows] logit of the label */
    real *tile;  /* [rows, vc] logits, then gradients */
    int   rows;  /* rows per chunk */
    int   vc;    /* vocabulary entries per tile */
} xent_scratch;

static xent_scratch xent_carve(real *work, size_t work_len, int d, int V)
{
    xent_scratch s;
    int rows = XENT_ROWS;
    while (rows > 1 && work_len / rows < (size_t)2 * d + 3 + 16) rows /= 2;
    size_t per_row = work_len / rows;
    assert(per_row >= (size_t)2 * d + 4);
    size_t vc = per_row - 2 * (size_t)d - 3;
    s.vc = vc > (size_t)V ? V : (int)vc;
    s.rows = rows;
    s.hc = work;
    s.dhc = s.hc + (size_t)rows * d;
    s.m = s.dhc + (size_t)rows * d;
    s.l = s.m + rows;
    s.tgt = s.l + rows;
    s.tile = s.tgt + rows;
    return s;
}

/* One row of a tile: its max and its sum of exp(logit - that max), from the running max mx.
 * CPU_VEC_CLONES: an outlined OpenMP body is not cloned, so the row loops live here to run on
 * AVX2+FMA where the machine has it (the loss tiles sweep T x V logits twice). */
CPU_VEC_CLONES
static real xent_row_fold(const real *tr, int nv, real mx, real *sum_out)
{
#pragma omp simd reduction(max : mx)
    for (int c = 0; c < nv; c++) mx = tr[c] > mx ? tr[c] : mx;
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < nv; c++) sum += cpu_exp(tr[c] - mx);
    *sum_out = sum;
    return mx;
}

/* Fold tile [nr, nv] (vocabulary entries [v0, v0 + nv)) into each row's running max and sum,
 * and pick up the label's logit when it falls in this tile. */
static void xent_fold_tile(xent_scratch *s, const int *lab, int nr, int v0, int nv)
{
#pragma omp parallel for if ((size_t)nr * nv > (1u << 15))
    for (int r = 0; r < nr; r++) {
        const real *tr = s->tile + (size_t)r * nv;
        real sum;
        real mx = xent_row_fold(tr, nv, s->m[r], &sum);
        real corr = s->m[r] == -INFINITY ? 0 : cpu_exp(s->m[r] - mx);
        s->l[r] = s->l[r] * corr + sum;
        s->m[r] = mx;
        if (lab[r] >= v0 && lab[r] < v0 + nv) s->tgt[r] = tr[lab[r] - v0];
    }
}

CPU_VEC_CLONES
static void xent_row_grad(real *tr, int nv, real lse, real inv_norm)
{
    for (int c = 0; c < nv; c++) tr[c] = cpu_exp(tr[c] - lse) * inv_norm;
}

/* Turn tile logits into dloss/dlogits = (softmax - onehot) / normaliser, in place. */
static void xent_grad_tile(xent_scratch *s, const int *lab, int nr, int v0, int nv, real inv_norm)
{
#pragma omp parallel for if ((size_t)nr * nv > (1u << 15))
    for (int r = 0; r < nr; r++) {
        real *tr = s->tile + (size_t)r * nv;
        xent_row_grad(tr, nv, s->m[r] + (real)log(s->l[r]), inv_norm);
        if (lab[r] >= v0 && lab[r] < v0 + nv) tr[lab[r] - v0] -= inv_norm;
    }
}

/* One chunk of nr unmasked rows (token indices idx, labels lab, hidden states already in hc):
 * returns its summed loss and, when dh is set, adds its gradients into dh and dw. */
static double xent_chunk(xent_scratch *s, real *dh, real *dw, const real *w, const int *idx,
                         const int *lab, int nr, int d, int V, real inv_norm)
{
    int one_tile = s->vc >= V;
    for (int r = 0; r < nr; r++) { s->m[r] = -INFINITY; s->l[r] = 0; s->tgt[r] = 0; }
    for (int v0 = 0; v0 < V; v0 += s->vc) {
        int nv = V - v0 < s->vc ? V - v0 : s->vc;
        CPU_FN(matmul)(s->tile, s->hc, w + (size_t)v0 * d, nr, nv, d, 0, 1, d, d, nv, 1, 0);
        xent_fold_tile(s, lab, nr, v0, nv);
    }
    double loss = 0;
    for (int r = 0; r < nr; r++) loss += (double)s->m[r] + log((double)s->l[r]) - s->tgt[r];
    if (!dh) return loss;
    memset(s->dhc, 0, (size_t)nr * d * sizeof(real));
    for (int v0 = 0; v0 < V; v0 += s->vc) {
        int nv = V - v0 < s->vc ? V - v0 : s->vc;
        if (!one_tile)
            CPU_FN(matmul)(s->tile, s->hc, w + (size_t)v0 * d, nr, nv, d, 0, 1, d, d, nv, 1, 0);
        xent_grad_tile(s, lab, nr, v0, nv, inv_norm);
        CPU_FN(matmul)(s->dhc, s->tile, w + (size_t)v0 * d, nr, d, nv, 0, 0, nv, d, d, 1, 1);
        CPU_FN(matmul)(dw + (size_t)v0 * d, s->tile, s->hc, nv, d, nr, 1, 0, nv, d, d, 1, 1);
    }
    for (int r = 0; r < nr; r++) {
        real *dst = dh + (size_t)idx[r] * d;
        const real *src = s->dhc + (size_t)r * d;
        for (int j = 0; j < d; j++) dst[j] += src[j];
    }
    return loss;
}

void CPU_FN(lmhead_xent)(real *loss, real *dh, real *dw, const real *h, const real *w,
                         const int *labels, int T, int d, int V, float normaliser, real *work,
                         size_t work_len)
{
    loss[0] = 0;
    if (normaliser <= 0) return;
    assert((dh == NULL) == (dw == NULL));
    xent_scratch s = xent_carve(work, work_len, d, V);
    real inv_norm = (real)(1.0 / normaliser);
    double total = 0;
    int t = 0;
    while (t < T) {
        int idx[XENT_ROWS], lab[XENT_ROWS], nr = 0;
        for (; t < T && nr < s.rows; t++) {
            if (labels[t] == OPS_LABEL_IGNORE) continue;
            assert(labels[t] >= 0 && labels[t] < V);
            idx[nr] = t;
            lab[nr] = labels[t];
            memcpy(s.hc + (size_t)nr * d, h + (size_t)t * d, (size_t)d * sizeof(real));
            nr++;
        }
        if (nr > 0) total += xent_chunk(&s, dh, dw, w, idx, lab, nr, d, V, inv_norm);
    }
    loss[0] = (real)(total / normaliser);
}
