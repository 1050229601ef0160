/* attention_cuda: multi-head attention over variable-length packed sequences (cu_seqlens),
 * causal with grouped-query heads for the decoder, bidirectional per image for the vision tower
 * (twin of kernels/cpu/attention_cpu.c), forward and backward in the flash-attention manner.
 *
 * Design. A block takes one tile of ATT_BR query rows of one (segment, head); the segment's keys
 * and values stream through shared memory in tiles of 32, and each row keeps a running max and
 * sum (online softmax) and rescales its output accumulator as tiles arrive, so no score matrix
 * ever reaches global memory; the per-row log-sum-exp is saved for backward. Inside a block a
 * warp owns ATT_RPW rows: for scores, lane c takes key c of the tile (K rows padded by one float
 * so the 32 lanes hit 32 banks) and the row's query is a broadcast; for P V, lane j owns output
 * columns j, j+32, ... and the probabilities are passed along with shuffles. Backward is two
 * kernels that each recompute P from the saved lse: dq query-major like forward, and dk/dv
 * key-major (a block owns a tile of keys of one kv head and walks every query row of the
 * group's heads that sees them). That recomputes P once more than a fused backward, but every
 * gradient element then has exactly one writer: no atomics, the same bits on every run.
 * Arithmetic is fp32 on the CUDA cores for both storage types (fp32: the table's twin; bf16:
 * ops_cuda.h, widened on the way into shared memory, for the shapes attention_tc_cuda.cu's
 * tensor-core kernels do not take); the head dimension is a template bound
 * (64, 128 or 256 = 32 x ATT_DC) over registers, the actual head_dim a run-time loop bound. */
#include "kernels_cuda.cuh"

enum { ATT_BC = 32, ATT_WARPS = 4, ATT_THREADS = 32 * ATT_WARPS };

/* rows per warp and per block, per head-dimension chunk count DC (registers: RPW x DC floats of
 * output accumulator per lane) */
template <int DC> struct att_shape {
    static const int RPW = DC <= 4 ? 8 : 4;
    static const int BR = RPW * ATT_WARPS;
    static const int KPW = DC <= 4 ? 8 : 4;   /* keys per warp in the dk/dv kernel */
    static const int BK = KPW * ATT_WARPS;
};

static __device__ __forceinline__ bool att_visible(const ops_attn &a, int qrow, int krow)
{
    return !a.causal || krow <= qrow;
}

/* rows [r0, r0 + n) of one head of x (stride ld, head offset off) into s [rows][sld], zeros past n */
template <typename X>
static __device__ __forceinline__ void att_load_rows(float *s, int sld, int rows, const X *x,
                                                     size_t ld, size_t off, int r0, int n, int D)
{
    for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
        int r = i / D, j = i % D;
        s[r * sld + j] = r < n ? cuda_ld(x + (size_t)(r0 + r) * ld + off + j) : 0.0f;
    }
}

template <int DC, typename X>
static __global__ void __launch_bounds__(ATT_THREADS)
att_forward_kernel(X *o, float *lse, const X *q, const X *k, const X *v, ops_attn a, int qblocks)
{
    typedef att_shape<DC> S;
    extern __shared__ float smem[];
    const int D = a.head_dim, DP = D + 1;
    float *sq = smem;                 /* [BR][D]  */
    float *sk = sq + S::BR * D;       /* [BC][DP] */
    float *sv = sk + ATT_BC * DP;     /* [BC][D]  */
    int seg = blockIdx.x / qblocks, r0 = (blockIdx.x % qblocks) * S::BR, h = blockIdx.y;
    int t0 = a.cu_seqlens[seg], len = a.cu_seqlens[seg + 1] - t0;
    if (r0 >= len) return;  /* block-uniform */
    int nr = len - r0 < S::BR ? len - r0 : S::BR;
    int kvh = h / (a.num_heads / a.num_kv_heads);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    att_load_rows(sq, D, S::BR, q, a.ldq, (size_t)h * D, t0 + r0, nr, D);

    float m[S::RPW], l[S::RPW], acc[S::RPW][DC];
#pragma unroll
    for (int i = 0; i < S::RPW; i++) {
        m[i] = -INFINITY;
        l[i] = 0;
#pragma unroll
        for (int c = 0; c < DC; c++) acc[i][c] = 0;
    }
    int key_end = a.causal ? r0 + nr : len;
    for (int c0 = 0; c0 < key_end; c0 += ATT_BC) {
        int nc = key_end - c0 < ATT_BC ? key_end - c0 : ATT_BC;
        __syncthreads();  /* the previous tile is consumed (and, first time, Q is loaded) */
        att_load_rows(sk, DP, ATT_BC, k, a.ldk, (size_t)kvh * D, t0 + c0, nc, D);
        att_load_rows(sv, D, ATT_BC, v, a.ldv, (size_t)kvh * D, t0 + c0, nc, D);
        __syncthreads();
        /* scores of this lane's key against the warp's rows */
        float s[S::RPW];
#pragma unroll
        for (int i = 0; i < S::RPW; i++) s[i] = 0;
        const float *kr = sk + lane * DP;
        for (int j = 0; j < D; j++) {
            float kj = kr[j];
#pragma unroll
            for (int i = 0; i < S::RPW; i++) s[i] += sq[(warp * S::RPW + i) * D + j] * kj;
        }
        float p[S::RPW];
#pragma unroll
        for (int i = 0; i < S::RPW; i++) {
            int r = warp * S::RPW + i;
            bool vis = lane < nc && att_visible(a, r0 + r, c0 + lane);
            float sc = vis ? a.scale * s[i] : -INFINITY;
            float mnew = fmaxf(m[i], cuda_warp_max(sc));
            /* a row that has seen no key yet keeps m = -inf and contributes nothing */
            p[i] = vis ? expf(sc - mnew) : 0.0f;
            float corr = m[i] == -INFINITY ? 0.0f : expf(m[i] - mnew);
            float psum = cuda_warp_sum(p[i]);
            if (mnew != -INFINITY) {
                l[i] = l[i] * corr + psum;
                m[i] = mnew;
#pragma unroll
                for (int c = 0; c < DC; c++) acc[i][c] *= corr;
            }
        }
        for (int c = 0; c < nc; c++) {
            float vv[DC];
#pragma unroll
            for (int cc = 0; cc < DC; cc++) {
                int j = lane + 32 * cc;
                vv[cc] = j < D ? sv[c * D + j] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < S::RPW; i++) {
                float pc = __shfl_sync(CUDA_FULL_MASK, p[i], c);
#pragma unroll
                for (int cc = 0; cc < DC; cc++) acc[i][cc] += pc * vv[cc];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < S::RPW; i++) {
        int r = warp * S::RPW + i;
        if (r >= nr) continue;
        size_t t = (size_t)(t0 + r0 + r);
        float inv = 1.0f / l[i];
#pragma unroll
        for (int cc = 0; cc < DC; cc++) {
            int j = lane + 32 * cc;
            if (j < D) cuda_st(o + t * a.ldo + (size_t)h * D + j, acc[i][cc] * inv);
        }
        if (lane == 0) lse[t * a.num_heads + h] = m[i] + logf(l[i]);
    }
}

/* dq += scale dS K, query-major: per row, P = exp(scale q k - lse), dP = dO v,
 * dS = P (dP - rowsum(dO o)) */
template <int DC, typename X>
static __global__ void __launch_bounds__(ATT_THREADS)
att_dq_kernel(X *dq, const X *dout, const X *q, const X *k, const X *v, const X *o,
              const float *lse, ops_attn a, int qblocks)
{
    typedef att_shape<DC> S;
    extern __shared__ float smem[];
    const int D = a.head_dim, DP = D + 1;
    float *sq = smem;                 /* [BR][D]  */
    float *sdo = sq + S::BR * D;      /* [BR][D]  */
    float *sk = sdo + S::BR * D;      /* [BC][DP] */
    float *sv = sk + ATT_BC * DP;     /* [BC][DP] */
    int seg = blockIdx.x / qblocks, r0 = (blockIdx.x % qblocks) * S::BR, h = blockIdx.y;
    int t0 = a.cu_seqlens[seg], len = a.cu_seqlens[seg + 1] - t0;
    if (r0 >= len) return;
    int nr = len - r0 < S::BR ? len - r0 : S::BR;
    int kvh = h / (a.num_heads / a.num_kv_heads);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    att_load_rows(sq, D, S::BR, q, a.ldq, (size_t)h * D, t0 + r0, nr, D);
    att_load_rows(sdo, D, S::BR, dout, a.ldo, (size_t)h * D, t0 + r0, nr, D);

    float rl[S::RPW], rd[S::RPW], acc[S::RPW][DC];
#pragma unroll
    for (int i = 0; i < S::RPW; i++) {
        int r = warp * S::RPW + i;
        size_t t = (size_t)(t0 + r0 + (r < nr ? r : 0));
        float part = 0;
        for (int j = lane; j < D; j += 32)
            part += cuda_ld(dout + t * a.ldo + (size_t)h * D + j) * cuda_ld(o + t * a.ldo + (size_t)h * D + j);
        rd[i] = cuda_warp_sum(part);
        rl[i] = lse[t * a.num_heads + h];
#pragma unroll
        for (int c = 0; c < DC; c++) acc[i][c] = 0;
    }
    int key_end = a.causal ? r0 + nr : len;
    for (int c0 = 0; c0 < key_end; c0 += ATT_BC) {
        int nc = key_end - c0 < ATT_BC ? key_end - c0 : ATT_BC;
        __syncthreads();
        att_load_rows(sk, DP, ATT_BC, k, a.ldk, (size_t)kvh * D, t0 + c0, nc, D);
        att_load_rows(sv, DP, ATT_BC, v, a.ldv, (size_t)kvh * D, t0 + c0, nc, D);
        __syncthreads();
        float s[S::RPW], dp[S::RPW];
#pragma unroll
        for (int i = 0; i < S::RPW; i++) s[i] = dp[i] = 0;
        const float *kr = sk + lane * DP, *vr = sv + lane * DP;
        for (int j = 0; j < D; j++) {
            float kj = kr[j], vj = vr[j];
#pragma unroll
            for (int i = 0; i < S::RPW; i++) {
                s[i] += sq[(warp * S::RPW + i) * D + j] * kj;
                dp[i] += sdo[(warp * S::RPW + i) * D + j] * vj;
            }
        }
        float ds[S::RPW];
#pragma unroll
        for (int i = 0; i < S::RPW; i++) {
            int r = warp * S::RPW + i;
            bool vis = r < nr && lane < nc && att_visible(a, r0 + r, c0 + lane);
            float p = vis ? expf(a.scale * s[i] - rl[i]) : 0.0f;
            ds[i] = p * (dp[i] - rd[i]);
        }
        for (int c = 0; c < nc; c++) {
            float kv[DC];
#pragma unroll
            for (int cc = 0; cc < DC; cc++) {
                int j = lane + 32 * cc;
                kv[cc] = j < D ? sk[c * DP + j] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < S::RPW; i++) {
                float dsc = __shfl_sync(CUDA_FULL_MASK, ds[i], c);
#pragma unroll
                for (int cc = 0; cc < DC; cc++) acc[i][cc] += dsc * kv[cc];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < S::RPW; i++) {
        int r = warp * S::RPW + i;
        if (r >= nr) continue;
        size_t t = (size_t)(t0 + r0 + r);
#pragma unroll
        for (int cc = 0; cc < DC; cc++) {
            int j = lane + 32 * cc;
            if (j < D) {
                X *e = dq + t * a.ldq + (size_t)h * D + j;
                cuda_st(e, cuda_ld(e) + a.scale * acc[i][cc]);
            }
        }
    }
}

/* dv += P^T dO, dk += scale dS^T Q, key-major: a block owns BK keys of one kv head; lanes take
 * the query rows of a 32-row tile, warps their KPW keys each. */
template <int DC, typename X>
static __global__ void __launch_bounds__(ATT_THREADS)
att_dkdv_kernel(X *dk, X *dv, const X *dout, const X *q, const X *k, const X *v, const X *o,
                const float *lse, ops_attn a, int kblocks)
{
    typedef att_shape<DC> S;
    extern __shared__ float smem[];
    const int D = a.head_dim, DP = D + 1;
    float *sk = smem;                 /* [BK][D]  */
    float *sv = sk + S::BK * D;       /* [BK][D]  */
    float *sq = sv + S::BK * D;       /* [32][DP] */
    float *sdo = sq + 32 * DP;        /* [32][DP] */
    float *srl = sdo + 32 * DP;       /* [32] lse of the tile's rows */
    float *srd = srl + 32;            /* [32] rowsum(dO o) */
    int seg = blockIdx.x / kblocks, c0 = (blockIdx.x % kblocks) * S::BK, kvh = blockIdx.y;
    int t0 = a.cu_seqlens[seg], len = a.cu_seqlens[seg + 1] - t0;
    if (c0 >= len) return;
    int nk = len - c0 < S::BK ? len - c0 : S::BK;
    int group = a.num_heads / a.num_kv_heads;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    att_load_rows(sk, D, S::BK, k, a.ldk, (size_t)kvh * D, t0 + c0, nk, D);
    att_load_rows(sv, D, S::BK, v, a.ldv, (size_t)kvh * D, t0 + c0, nk, D);

    float adk[S::KPW][DC], adv[S::KPW][DC];
#pragma unroll
    for (int i = 0; i < S::KPW; i++)
#pragma unroll
        for (int c = 0; c < DC; c++) adk[i][c] = adv[i][c] = 0;
    /* causal: rows before the first key of this block see none of its keys */
    int q_begin = a.causal ? c0 : 0;
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int q0 = q_begin; q0 < len; q0 += 32) {
            int nq = len - q0 < 32 ? len - q0 : 32;
            __syncthreads();  /* the previous query tile is consumed (first time: K, V loaded) */
            att_load_rows(sq, DP, 32, q, a.ldq, (size_t)h * D, t0 + q0, nq, D);
            att_load_rows(sdo, DP, 32, dout, a.ldo, (size_t)h * D, t0 + q0, nq, D);
            for (int r = warp; r < 32; r += ATT_WARPS) {
                float part = 0;
                if (r < nq) {
                    size_t t = (size_t)(t0 + q0 + r);
                    for (int j = lane; j < D; j += 32)
                        part += cuda_ld(dout + t * a.ldo + (size_t)h * D + j) *
                                cuda_ld(o + t * a.ldo + (size_t)h * D + j);
                }
                part = cuda_warp_sum(part);
                if (lane == 0) {
                    srd[r] = part;
                    srl[r] = r < nq ? lse[(size_t)(t0 + q0 + r) * a.num_heads + h] : 0.0f;
                }
            }
            __syncthreads();
            float s[S::KPW], dp[S::KPW];
#pragma unroll
            for (int i = 0; i < S::KPW; i++) s[i] = dp[i] = 0;
            const float *qr = sq + lane * DP, *dor = sdo + lane * DP;
            for (int j = 0; j < D; j++) {
                float qj = qr[j], doj = dor[j];
#pragma unroll
                for (int i = 0; i < S::KPW; i++) {
                    s[i] += qj * sk[(warp * S::KPW + i) * D + j];
                    dp[i] += doj * sv[(warp * S::KPW + i) * D + j];
                }
            }
            float p[S::KPW], ds[S::KPW];
            float rl = srl[lane], rd = srd[lane];
#pragma unroll
            for (int i = 0; i < S::KPW; i++) {
                int c = warp * S::KPW + i;
                bool vis = lane < nq && c < nk && att_visible(a, q0 + lane, c0 + c);
                p[i] = vis ? expf(a.scale * s[i] - rl) : 0.0f;
                ds[i] = p[i] * (dp[i] - rd);
            }
            for (int r = 0; r < nq; r++) {
                float qv[DC], dov[DC];
#pragma unroll
                for (int cc = 0; cc < DC; cc++) {
                    int j = lane + 32 * cc;
                    qv[cc] = j < D ? sq[r * DP + j] : 0.0f;
                    dov[cc] = j < D ? sdo[r * DP + j] : 0.0f;
                }
#pragma unroll
                for (int i = 0; i < S::KPW; i++) {
                    float pr = __shfl_sync(CUDA_FULL_MASK, p[i], r);
                    float dsr = __shfl_sync(CUDA_FULL_MASK, ds[i], r);
#pragma unroll
                    for (int cc = 0; cc < DC; cc++) {
                        adv[i][cc] += pr * dov[cc];
                        adk[i][cc] += dsr * qv[cc];
                    }
                }
            }
        }
#pragma unroll
    for (int i = 0; i < S::KPW; i++) {
        int c = warp * S::KPW + i;
        if (c >= nk) continue;
        size_t t = (size_t)(t0 + c0 + c);
#pragma unroll
        for (int cc = 0; cc < DC; cc++) {
            int j = lane + 32 * cc;
            if (j < D) {
                X *ek = dk + t * a.ldk + (size_t)kvh * D + j, *ev = dv + t * a.ldv + (size_t)kvh * D + j;
                cuda_st(ek, cuda_ld(ek) + a.scale * adk[i][cc]);
                cuda_st(ev, cuda_ld(ev) + adv[i][cc]);
            }
        }
    }
}

/* Launch with `bytes` of dynamic shared memory, raising the kernel's limit past the default
 * 48 KiB when needed (up to the device's opt-in maximum: 227 KiB on Hopper). */
template <typename K> static bool att_smem(K kernel, size_t bytes)
{
    if (bytes <= 48 * 1024) return true;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess) {
        cuda_fail(__FILE__, __LINE__, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)",
                  cudaGetErrorString(e));
        return false;
    }
    return true;
}

static bool att_check(const ops_attn *a)
{
    if (a->head_dim < 1 || a->head_dim > OPS_ATTN_MAX_HEAD_DIM || a->num_kv_heads < 1 ||
        a->num_heads % a->num_kv_heads) {
        cuda_fail(__FILE__, __LINE__, "attention", "bad ops_attn: head_dim must be in [1, "
                  "OPS_ATTN_MAX_HEAD_DIM] and num_kv_heads must divide num_heads");
        return false;
    }
    return a->num_seqs > 0 && a->max_seqlen > 0 && a->num_heads > 0;
}

template <int DC, typename X>
static void att_forward(X *o, float *lse, const X *q, const X *k, const X *v, const ops_attn *a)
{
    typedef att_shape<DC> S;
    int D = a->head_dim, qblocks = (a->max_seqlen + S::BR - 1) / S::BR;
    size_t bytes = sizeof(float) * ((size_t)S::BR * D + (size_t)ATT_BC * (D + 1) + (size_t)ATT_BC * D);
    if (!att_smem(att_forward_kernel<DC, X>, bytes)) return;
    dim3 grid((unsigned)(a->num_seqs * qblocks), (unsigned)a->num_heads);
    att_forward_kernel<DC, X><<<grid, ATT_THREADS, bytes, cuda_stream()>>>(o, lse, q, k, v, *a, qblocks);
    CUDA_LAUNCHED();
}

template <int DC, typename X>
static void att_backward(X *dq, X *dk, X *dv, const X *dout, const X *q, const X *k, const X *v,
                         const X *o, const float *lse, const ops_attn *a)
{
    typedef att_shape<DC> S;
    int D = a->head_dim;
    int qblocks = (a->max_seqlen + S::BR - 1) / S::BR;
    size_t bytes_q = sizeof(float) * (2 * (size_t)S::BR * D + 2 * (size_t)ATT_BC * (D + 1));
    if (!att_smem(att_dq_kernel<DC, X>, bytes_q)) return;
    dim3 grid_q((unsigned)(a->num_seqs * qblocks), (unsigned)a->num_heads);
    att_dq_kernel<DC, X><<<grid_q, ATT_THREADS, bytes_q, cuda_stream()>>>(dq, dout, q, k, v, o, lse, *a,
                                                                        qblocks);
    CUDA_LAUNCHED();
    int kblocks = (a->max_seqlen + S::BK - 1) / S::BK;
    size_t bytes_k = sizeof(float) * (2 * (size_t)S::BK * D + 2 * (size_t)32 * (D + 1) + 64);
    if (!att_smem(att_dkdv_kernel<DC, X>, bytes_k)) return;
    dim3 grid_k((unsigned)(a->num_seqs * kblocks), (unsigned)a->num_kv_heads);
    att_dkdv_kernel<DC, X><<<grid_k, ATT_THREADS, bytes_k, cuda_stream()>>>(dk, dv, dout, q, k, v, o,
                                                                          lse, *a, kblocks);
    CUDA_LAUNCHED();
}

template <typename X>
static void att_forward_any(X *o, float *lse, const X *q, const X *k, const X *v, const ops_attn *a)
{
    if (!att_check(a)) return;
    if (a->head_dim <= 64) att_forward<2>(o, lse, q, k, v, a);
    else if (a->head_dim <= 128) att_forward<4>(o, lse, q, k, v, a);
    else att_forward<8>(o, lse, q, k, v, a);
}

template <typename X>
static void att_backward_any(X *dq, X *dk, X *dv, const X *dout, const X *q, const X *k,
                             const X *v, const X *o, const float *lse, const ops_attn *a)
{
    if (!att_check(a)) return;
    if (a->head_dim <= 64) att_backward<2>(dq, dk, dv, dout, q, k, v, o, lse, a);
    else if (a->head_dim <= 128) att_backward<4>(dq, dk, dv, dout, q, k, v, o, lse, a);
    else att_backward<8>(dq, dk, dv, dout, q, k, v, o, lse, a);
}

void cuda_attention_forward_f32(float *o, float *lse, const float *q, const float *k,
                                const float *v, const ops_attn *a)
{
    att_forward_any(o, lse, q, k, v, a);
}

void cuda_attention_backward_f32(float *dq, float *dk, float *dv, const float *dout,
                                 const float *q, const float *k, const float *v, const float *o,
                                 const float *lse, const ops_attn *a)
{
    att_backward_any(dq, dk, dv, dout, q, k, v, o, lse, a);
}

/* bf16 storage (ops_cuda.h): on tensor cores (attention_tc_cuda.cu) where the head dimension
 * allows, else these kernels with the tiles widened to fp32 in shared memory; lse stays fp32.
 * The switch is process-wide backend configuration, set once (tests and A/B timings flip it). */
static int att_tensor_cores = 1;

extern "C" void ops_cuda_attention_tensor_cores(int on) { att_tensor_cores = on != 0; }

extern "C" void ops_cuda_attention_forward_bf16(ops_bf16 *o, float *lse, const ops_bf16 *q,
                                                const ops_bf16 *k, const ops_bf16 *v,
                                                const ops_attn *a)
{
    if (!att_check(a)) return;
    if (att_tensor_cores && cuda_attention_tc_fits(a))
        cuda_attention_tc_forward(BF(o), lse, CBF(q), CBF(k), CBF(v), a);
    else
        att_forward_any(BF(o), lse, CBF(q), CBF(k), CBF(v), a);
}

extern "C" void ops_cuda_attention_backward_bf16(ops_bf16 *dq, ops_bf16 *dk, ops_bf16 *dv,
                                                 const ops_bf16 *dout, const ops_bf16 *q,
                                                 const ops_bf16 *k, const ops_bf16 *v,
                                                 const ops_bf16 *o, const float *lse,
                                                 const ops_attn *a)
{
    if (!att_check(a)) return;
    if (att_tensor_cores && cuda_attention_tc_fits(a))
        cuda_attention_tc_backward(BF(dq), BF(dk), BF(dv), CBF(dout), CBF(q), CBF(k), CBF(v), CBF(o),
                                   lse, a);
    else
        att_backward_any(BF(dq), BF(dk), BF(dv), CBF(dout), CBF(q), CBF(k), CBF(v), CBF(o), lse, a);
}
