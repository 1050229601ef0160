/* loss_cuda: the LM head fused with masked cross-entropy, forward and backward in one call
 * (twin of kernels/cpu/loss_cpu.c).
 *
 * Design: the T x V logits are never held. Rows go in chunks of up to XENT_ROWS, and for each
 * chunk the vocabulary is swept in tiles that fit the caller's scratch: a cuBLASLt product makes
 * the tile of logits, and a kernel folds it into each row's running max and sum (online
 * logsumexp) and picks up the label's logit. A second sweep turns each tile into its gradient
 * (softmax - onehot) / normaliser and feeds two products, dH += G W and dW += G^T H (the tile is
 * reused, not recomputed, when one tile holds the whole vocabulary). Unlike the CPU twin, rows
 * are not gathered by label first: the labels are in device memory and reading them back would
 * stall the stream (and break graph capture), so masked rows ride along with zero gradient. A
 * label outside [0, V) that is not OPS_LABEL_IGNORE makes the loss NaN, loudly. The loss is
 * summed per chunk by one block in row order, so it is the same on every run. The bf16 form
 * (ops_cuda.h: bf16 h, w, dh; fp32 dw) keeps the logits, the softmax and the chunk's dh sum in
 * fp32 and rounds the gradient tile to bf16 only as an operand of the two products. */
#include "kernels_cuda.cuh"

enum { XENT_ROWS = 1024, XENT_THREADS = 256 };

typedef struct xent_scratch {
    float     *m;     /* [rows] running max */
    float     *l;     /* [rows] running sum of exp(logit - m) */
    float     *tgt;   /* [rows] logit of the label */
    float     *dhc;   /* [rows, d] bf16 only: the chunk's dh summed in fp32 over vocabulary tiles */
    float     *tile;  /* [rows, vc] logits, then gradients */
    cuda_bf16 *g16;   /* [rows, vc] bf16 only: the gradient tile rounded for the bf16 products */
    int        rows;  /* rows per chunk */
    int        vc;    /* vocabulary entries per tile */
} xent_scratch;

/* The CPU twin's carving rule (work_len >= 2d + 4 always works) with fewer per-row arrays. The
 * bf16 form also holds dhc and the bf16 copy of the tile (1.5 floats per tile entry), the copy
 * starting on a 256-byte boundary: work_len >= 2d + 68 always works there. */
static int xent_carve(float *work, size_t work_len, int d, int V, int bf16, xent_scratch *s)
{
    int rows = XENT_ROWS;
    size_t slack = bf16 ? 64 : 0;  /* the bf16 copy's alignment */
    while (rows > 1 && (work_len < slack || (work_len - slack) / rows < (size_t)2 * d + 3 + 16))
        rows /= 2;
    size_t per_row = work_len / rows, vc;
    if (per_row < (size_t)2 * d + 4) return -1;
    if (!bf16) {
        vc = per_row - 3;
    } else {
        size_t fixed = (size_t)rows * (3 + (size_t)d) + 64;
        if (work_len < fixed + 2 * (size_t)rows) return -1;
        vc = 2 * (work_len - fixed) / (3 * (size_t)rows);
    }
    s->vc = vc > (size_t)V ? V : (int)vc;
    s->rows = rows;
    s->m = work;
    s->l = s->m + rows;
    s->tgt = s->l + rows;
    s->dhc = bf16 ? s->tgt + rows : NULL;
    s->tile = s->tgt + rows + (bf16 ? (size_t)rows * d : 0);
    s->g16 = NULL;
    if (bf16) {
        size_t end = (size_t)(s->tile - work) + (size_t)rows * s->vc;
        s->g16 = (cuda_bf16 *)(work + (end + 63) / 64 * 64);
    }
    return 0;
}

/* One block per row of the chunk: fold tile [nr, nv] (vocabulary [v0, v0 + nv)) into m, l, tgt;
 * first = 1 starts the rows afresh. */
static __global__ void xent_fold_kernel(xent_scratch s, const int *labels, int nr, int v0, int nv,
                                        int V, int first)
{
    __shared__ float sh[32];
    int r = blockIdx.x, lab = labels[r];
    if (first && threadIdx.x == 0) {
        s.m[r] = -INFINITY;
        s.l[r] = 0;
        s.tgt[r] = lab == OPS_LABEL_IGNORE || (lab >= 0 && lab < V) ? 0.0f : NAN;
    }
    if (lab == OPS_LABEL_IGNORE) return;  /* block-uniform */
    const float *tr = s.tile + (size_t)r * nv;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < nv; c += blockDim.x) mx = fmaxf(mx, tr[c]);
    mx = cuda_block_max(mx, sh);
    __syncthreads();  /* thread 0's first-time writes above are seen below */
    float mold = s.m[r];
    float mnew = fmaxf(mold, mx);
    float sum = 0;
    for (int c = threadIdx.x; c < nv; c += blockDim.x) sum += expf(tr[c] - mnew);
    sum = cuda_block_sum(sum, sh);
    if (threadIdx.x == 0) {
        float corr = mold == -INFINITY ? 0.0f : expf(mold - mnew);
        s.l[r] = s.l[r] * corr + sum;
        s.m[r] = mnew;
        if (lab >= v0 && lab < v0 + nv) s.tgt[r] = tr[lab - v0];
    }
}

/* loss[0] (+)= sum over the chunk's unmasked rows of (m + log l - tgt) / normaliser */
static __global__ void xent_loss_kernel(float *loss, xent_scratch s, const int *labels, int nr,
                                        float normaliser, int first)
{
    __shared__ double sh[32];
    double acc = 0;
    for (int r = threadIdx.x; r < nr; r += blockDim.x)
        if (labels[r] != OPS_LABEL_IGNORE)
            acc += (double)s.m[r] + log((double)s.l[r]) - s.tgt[r];
    acc = cuda_block_sum(acc, sh);
    if (threadIdx.x == 0) loss[0] = (first ? 0.0f : loss[0]) + (float)(acc / normaliser);
}

/* tile logits -> dloss/dlogits = (softmax - onehot) / normaliser, in place; masked rows -> 0 */
static __global__ void xent_grad_kernel(xent_scratch s, const int *labels, int nr, int v0, int nv,
                                        float inv_norm)
{
    size_t total = (size_t)nr * nv, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int r = (int)(i / nv), c = (int)(i % nv), lab = labels[r];
        float g = 0;
        if (lab != OPS_LABEL_IGNORE) {
            float lse = s.m[r] + logf(s.l[r]);
            g = expf(s.tile[i] - lse) * inv_norm;
            if (lab == v0 + c) g -= inv_norm;
        }
        s.tile[i] = g;
    }
}

static __global__ void xent_zero_kernel(float *loss) { loss[0] = 0; }

static __global__ void xent_round_kernel(cuda_bf16 *g16, const float *tile, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        g16[i] = __float2bfloat16(tile[i]);
}

/* dh rows (bf16) += dhc (fp32), rounded once per chunk */
static __global__ void xent_dh_kernel(cuda_bf16 *dh, const float *dhc, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dh[i] = __float2bfloat16(__bfloat162float(dh[i]) + dhc[i]);
}

/* logits tile [nr, nv] = hc [nr, d] w [nv, d]^T, fp32 whatever the storage */
static void xent_logits(const xent_scratch *s, const float *hc, const float *w, int nr, int nv, int d)
{
    cuda_matmul_f32(s->tile, hc, w, nr, nv, d, 0, 1, d, d, nv, 1, 0);
}

static void xent_logits(const xent_scratch *s, const cuda_bf16 *hc, const cuda_bf16 *w, int nr,
                        int nv, int d)
{
    ops_cuda_matmul_bf16_f32out(s->tile, (const ops_bf16 *)hc, (const ops_bf16 *)w, nr, nv, d, 0, 1,
                                d, d, nv, 1, 0);
}

/* the gradient tile's two products: dh rows += G w, dw rows += G^T hc (first: first tile) */
static void xent_backprop(const xent_scratch *s, float *dh, float *dw, const float *hc,
                          const float *w, int nr, int nv, int d, int first)
{
    (void)first;
    cuda_matmul_f32(dh, s->tile, w, nr, d, nv, 0, 0, nv, d, d, 1, 1);
    cuda_matmul_f32(dw, s->tile, hc, nv, d, nr, 1, 0, nv, d, d, 1, 1);
}

static void xent_backprop(const xent_scratch *s, cuda_bf16 *dh, float *dw, const cuda_bf16 *hc,
                          const cuda_bf16 *w, int nr, int nv, int d, int first)
{
    (void)dh;  /* summed in s->dhc, added to dh once per chunk */
    size_t n = (size_t)nr * nv;
    xent_round_kernel<<<cuda_grid(n, XENT_THREADS), XENT_THREADS, 0, cuda_stream()>>>(s->g16, s->tile, n);
    CUDA_LAUNCHED();
    const ops_bf16 *g = (const ops_bf16 *)s->g16;
    ops_cuda_matmul_bf16_f32out(s->dhc, g, (const ops_bf16 *)w, nr, d, nv, 0, 0, nv, d, d, 1,
                                first ? 0.0f : 1.0f);
    ops_cuda_matmul_bf16_f32out(dw, g, (const ops_bf16 *)hc, nv, d, nr, 1, 0, nv, d, d, 1, 1);
}

static void xent_chunk_done(const xent_scratch *s, float *dh, int nr, int d)
{
    (void)s; (void)dh; (void)nr; (void)d;
}

static void xent_chunk_done(const xent_scratch *s, cuda_bf16 *dh, int nr, int d)
{
    size_t n = (size_t)nr * d;
    xent_dh_kernel<<<cuda_grid(n, XENT_THREADS), XENT_THREADS, 0, cuda_stream()>>>(dh, s->dhc, n);
    CUDA_LAUNCHED();
}

template <typename X>
static void xent_run(float *loss, X *dh, float *dw, const X *h, const X *w, const int *labels,
                     int T, int d, int V, float normaliser, float *work, size_t work_len)
{
    const int bf16 = sizeof(X) == 2;
    if (normaliser <= 0 || T <= 0) {
        xent_zero_kernel<<<1, 1, 0, cuda_stream()>>>(loss);
        CUDA_LAUNCHED();
        return;
    }
    xent_scratch s;
    if ((dh == NULL) != (dw == NULL) || xent_carve(work, work_len, d, V, bf16, &s)) {
        cuda_fail(__FILE__, __LINE__, "lmhead_xent", bf16
                  ? "dh and dw must both be set or both NULL, and work_len >= 2d + 68"
                  : "dh and dw must both be set or both NULL, and work_len >= 2d + 4");
        return;
    }
    float inv_norm = (float)(1.0 / normaliser);
    int one_tile = s.vc >= V;
    for (int t0 = 0; t0 < T; t0 += s.rows) {
        int nr = T - t0 < s.rows ? T - t0 : s.rows;
        const X *hc = h + (size_t)t0 * d;
        const int *lab = labels + t0;
        for (int v0 = 0; v0 < V; v0 += s.vc) {
            int nv = V - v0 < s.vc ? V - v0 : s.vc;
            xent_logits(&s, hc, w + (size_t)v0 * d, nr, nv, d);
            xent_fold_kernel<<<nr, XENT_THREADS, 0, cuda_stream()>>>(s, lab, nr, v0, nv, V, v0 == 0);
            CUDA_LAUNCHED();
        }
        xent_loss_kernel<<<1, XENT_THREADS, 0, cuda_stream()>>>(loss, s, lab, nr, normaliser, t0 == 0);
        CUDA_LAUNCHED();
        if (!dh) continue;
        for (int v0 = 0; v0 < V; v0 += s.vc) {
            int nv = V - v0 < s.vc ? V - v0 : s.vc;
            if (!one_tile) xent_logits(&s, hc, w + (size_t)v0 * d, nr, nv, d);
            xent_grad_kernel<<<cuda_grid((size_t)nr * nv, XENT_THREADS), XENT_THREADS, 0,
                               cuda_stream()>>>(s, lab, nr, v0, nv, inv_norm);
            CUDA_LAUNCHED();
            xent_backprop(&s, dh + (size_t)t0 * d, dw + (size_t)v0 * d, hc, w + (size_t)v0 * d, nr,
                          nv, d, v0 == 0);
        }
        xent_chunk_done(&s, dh + (size_t)t0 * d, nr, d);
    }
}

void cuda_lmhead_xent_f32(float *loss, float *dh, float *dw, const float *h, const float *w,
                          const int *labels, int T, int d, int V, float normaliser, float *work,
                          size_t work_len)
{
    xent_run(loss, dh, dw, h, w, labels, T, d, V, normaliser, work, work_len);
}

extern "C" void ops_cuda_lmhead_xent_bf16(float *loss, ops_bf16 *dh, float *dw, const ops_bf16 *h,
                                          const ops_bf16 *w, const int *labels, int T, int d, int V,
                                          float normaliser, float *work, size_t work_len)
{
    xent_run(loss, BF(dh), dw, CBF(h), CBF(w), labels, T, d, V, normaliser, work, work_len);
}
