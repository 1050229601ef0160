/* attention_tc_cuda: the bf16 attention of ops_cuda.h on tensor cores (WMMA, bf16 in, fp32
 * accumulate), for head_dim a multiple of 16 up to 128 (Qwen2-VL: 80 and 128); attention_cuda.cu
 * keeps the CUDA-core kernels for every other shape and for fp32.
 *
 * Design: the same three kernels as attention_cuda.cu (forward; dq query-major; dk/dv key-major,
 * each gradient element with one writer, no atomics), but every tile product is a 16x16x16 WMMA
 * product: a warp owns 16 query rows (or 16 keys in the dk/dv kernel) and a 64-wide tile of the
 * other side, so S = Q K^T, O += P V, dP = dO V^T, dQ += dS K, dV += P^T dO and dK += dS^T Q are
 * all tensor-core products from shared memory. WMMA hides which lane holds which accumulator
 * element, so the running accumulators (O, dQ, dK, dV) live in per-warp fp32 shared memory,
 * loaded and stored around each product, and the element-wise steps (mask, online softmax,
 * dS) read the score tiles from shared memory with two lanes per row, 32 columns each. P and dS
 * are rounded to bf16 as operands of the next product, as FlashAttention does; everything else is
 * fp32. Rows of shared tiles are padded by 8 bf16 / 4 floats so WMMA loads do not hit one bank. */
#include "kernels_cuda.cuh"

#include <mma.h>

using namespace nvcuda;

static constexpr int TC_ROWS = 16, TC_TILE = 64, TC_WARPS = 4, TC_THREADS = 32 * TC_WARPS;
static constexpr int TC_LDS = TC_TILE + 4, TC_LDP = TC_TILE + 8;  /* fp32 score rows, bf16 P / dS rows */

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, cuda_bf16, wmma::row_major> tc_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, cuda_bf16, wmma::row_major> tc_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, cuda_bf16, wmma::col_major> tc_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> tc_acc;

/* rows [r0, r0 + n) of one head of x into s [rows][ld] (bf16), zero rows past n */
static __device__ __forceinline__ void tc_load_rows(cuda_bf16 *s, int ld, int rows, const cuda_bf16 *x,
                                                    size_t xld, size_t off, int r0, int n, int D)
{
    for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
        int r = i / D, j = i % D;
        s[r * ld + j] = r < n ? x[(size_t)(r0 + r) * xld + off + j] : __float2bfloat16(0.0f);
    }
}

/* out [16][64] (fp32, ld TC_LDS) = A [16][D] B^T, B given as 64 rows [64][D]: the score tile of
 * 16 rows against 64 rows of the other side */
static __device__ __forceinline__ void tc_scores(float *out, const cuda_bf16 *a, const cuda_bf16 *b,
                                                 int ld, int D)
{
    for (int nf = 0; nf < TC_TILE / 16; nf++) {
        tc_acc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < D; kk += 16) {
            tc_a fa;
            tc_b_col fb;
            wmma::load_matrix_sync(fa, a + kk, ld);
            /* col-major B: element (k, c) at b[c * ld + k], i.e. row c of the other side */
            wmma::load_matrix_sync(fb, b + nf * 16 * ld + kk, ld);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(out + nf * 16, acc, TC_LDS, wmma::mem_row_major);
    }
}

/* acc [16][D] (fp32, ld ldo) += P [16][64] (bf16, ld TC_LDP) B [64][D] (bf16, ld ld) */
static __device__ __forceinline__ void tc_accumulate(float *acc_s, int ldo, const cuda_bf16 *p,
                                                     const cuda_bf16 *b, int ld, int D)
{
    for (int nf = 0; nf < D; nf += 16) {
        tc_acc acc;
        wmma::load_matrix_sync(acc, acc_s + nf, ldo, wmma::mem_row_major);
        for (int kk = 0; kk < TC_TILE; kk += 16) {
            tc_a fa;
            tc_b_row fb;
            wmma::load_matrix_sync(fa, p + kk, TC_LDP);
            wmma::load_matrix_sync(fb, b + kk * ld + nf, ld);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(acc_s + nf, acc, ldo, wmma::mem_row_major);
    }
}

static __device__ __forceinline__ bool tc_visible(const ops_attn &a, int qrow, int krow)
{
    return !a.causal || krow <= qrow;
}

/* shared memory of each kernel, in bytes, for head_dim D */
static size_t tc_fwd_bytes(int D)
{
    size_t ldh = D + 8, ldo = D + 4;
    return 3 * TC_TILE * ldh * 2 +
           TC_WARPS * (TC_ROWS * TC_LDS * 4 + TC_ROWS * TC_LDP * 2 + TC_ROWS * ldo * 4);
}

static size_t tc_dq_bytes(int D)
{
    size_t ldh = D + 8, ldo = D + 4;
    return 4 * TC_TILE * ldh * 2 +
           TC_WARPS * (2 * TC_ROWS * TC_LDS * 4 + TC_ROWS * TC_LDP * 2 + TC_ROWS * ldo * 4);
}

static size_t tc_dkdv_bytes(int D)
{
    size_t ldh = D + 8, ldo = D + 4;
    return 4 * TC_TILE * ldh * 2 + 2 * TC_TILE * 4 +
           TC_WARPS * (2 * TC_ROWS * TC_LDS * 4 + 2 * TC_ROWS * TC_LDP * 2 + 2 * TC_ROWS * ldo * 4);
}

static __global__ void __launch_bounds__(TC_THREADS)
tc_forward_kernel(cuda_bf16 *o, float *lse, const cuda_bf16 *q, const cuda_bf16 *k,
                  const cuda_bf16 *v, ops_attn a, int qblocks)
{
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const int D = a.head_dim, LDH = D + 8, LDO = D + 4;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    cuda_bf16 *sq = (cuda_bf16 *)tc_smem, *sk = sq + TC_TILE * LDH, *sv = sk + TC_TILE * LDH;
    unsigned char *wbase = (unsigned char *)(sv + TC_TILE * LDH) +
                           (size_t)warp * (TC_ROWS * TC_LDS * 4 + TC_ROWS * TC_LDP * 2 + TC_ROWS * LDO * 4);
    float *ss = (float *)wbase;                                   /* [16][TC_LDS] scores */
    cuda_bf16 *sp = (cuda_bf16 *)(ss + TC_ROWS * TC_LDS);         /* [16][TC_LDP] P */
    float *so = (float *)(sp + TC_ROWS * TC_LDP);                 /* [16][LDO] output */
    int seg = blockIdx.x / qblocks, r0 = (blockIdx.x % qblocks) * TC_TILE, h = blockIdx.y;
    int t0 = a.cu_seqlens[seg], len = a.cu_seqlens[seg + 1] - t0;
    if (r0 >= len) return;  /* block-uniform */
    int nr = len - r0 < TC_TILE ? len - r0 : TC_TILE;
    int kvh = h / (a.num_heads / a.num_kv_heads);
    tc_load_rows(sq, LDH, TC_TILE, q, a.ldq, (size_t)h * D, t0 + r0, nr, D);
    for (int i = lane; i < TC_ROWS * LDO; i += 32) so[i] = 0;
    /* lane pair (2 rr, 2 rr + 1) owns row rr of the warp's 16; half picks 32 of the 64 columns */
    int rr = lane >> 1, half = lane & 1, r = warp * TC_ROWS + rr;
    float m = -INFINITY, l = 0;
    int key_end = a.causal ? r0 + nr : len;
    for (int c0 = 0; c0 < key_end; c0 += TC_TILE) {
        int nc = key_end - c0 < TC_TILE ? key_end - c0 : TC_TILE;
        __syncthreads();  /* the previous K, V tile is consumed (first time: Q is loaded) */
        tc_load_rows(sk, LDH, TC_TILE, k, a.ldk, (size_t)kvh * D, t0 + c0, nc, D);
        tc_load_rows(sv, LDH, TC_TILE, v, a.ldv, (size_t)kvh * D, t0 + c0, nc, D);
        __syncthreads();
        tc_scores(ss, sq + warp * TC_ROWS * LDH, sk, LDH, D);
        __syncwarp();
        float mx = -INFINITY;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            bool vis = c < nc && tc_visible(a, r0 + r, c0 + c);
            if (vis) mx = fmaxf(mx, a.scale * ss[rr * TC_LDS + c]);
        }
        mx = fmaxf(mx, __shfl_xor_sync(CUDA_FULL_MASK, mx, 1));
        float mnew = fmaxf(m, mx), sum = 0;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            bool vis = c < nc && tc_visible(a, r0 + r, c0 + c);
            float p = vis ? expf(a.scale * ss[rr * TC_LDS + c] - mnew) : 0.0f;
            sp[rr * TC_LDP + c] = __float2bfloat16(p);
            sum += p;
        }
        sum += __shfl_xor_sync(CUDA_FULL_MASK, sum, 1);
        if (mnew != -INFINITY) {  /* same for both lanes of the pair */
            float corr = m == -INFINITY ? 0.0f : expf(m - mnew);
            l = l * corr + sum;
            m = mnew;
            for (int j = half * (D / 2); j < (half + 1) * (D / 2); j++) so[rr * LDO + j] *= corr;
        }
        __syncwarp();
        tc_accumulate(so, LDO, sp, sv, LDH, D);
        __syncwarp();
    }
    if (r < nr) {
        size_t t = (size_t)(t0 + r0 + r);
        float inv = 1.0f / l;
        for (int j = half * (D / 2); j < (half + 1) * (D / 2); j++)
            o[t * a.ldo + (size_t)h * D + j] = __float2bfloat16(so[rr * LDO + j] * inv);
        if (half == 0) lse[t * a.num_heads + h] = m + logf(l);
    }
}

/* rowsum(dO o) of one row, the lane pair splitting the columns */
static __device__ __forceinline__ float tc_rowdot(const cuda_bf16 *dout, const cuda_bf16 *o, size_t off,
                                                  int D, int half)
{
    float part = 0;
    for (int j = half * (D / 2); j < (half + 1) * (D / 2); j++)
        part += __bfloat162float(dout[off + j]) * __bfloat162float(o[off + j]);
    return part + __shfl_xor_sync(CUDA_FULL_MASK, part, 1);
}

static __global__ void __launch_bounds__(TC_THREADS)
tc_dq_kernel(cuda_bf16 *dq, const cuda_bf16 *dout, const cuda_bf16 *q, const cuda_bf16 *k,
             const cuda_bf16 *v, const cuda_bf16 *o, const float *lse, ops_attn a, int qblocks)
{
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const int D = a.head_dim, LDH = D + 8, LDO = D + 4;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    cuda_bf16 *sq = (cuda_bf16 *)tc_smem, *sdo = sq + TC_TILE * LDH;
    cuda_bf16 *sk = sdo + TC_TILE * LDH, *sv = sk + TC_TILE * LDH;
    unsigned char *wbase = (unsigned char *)(sv + TC_TILE * LDH) +
                           (size_t)warp * (2 * TC_ROWS * TC_LDS * 4 + TC_ROWS * TC_LDP * 2 + TC_ROWS * LDO * 4);
    float *ss = (float *)wbase, *sdp = ss + TC_ROWS * TC_LDS;     /* S, dP [16][TC_LDS] */
    cuda_bf16 *sds = (cuda_bf16 *)(sdp + TC_ROWS * TC_LDS);       /* dS [16][TC_LDP] */
    float *sdq = (float *)(sds + TC_ROWS * TC_LDP);               /* [16][LDO] */
    int seg = blockIdx.x / qblocks, r0 = (blockIdx.x % qblocks) * TC_TILE, h = blockIdx.y;
    int t0 = a.cu_seqlens[seg], len = a.cu_seqlens[seg + 1] - t0;
    if (r0 >= len) return;
    int nr = len - r0 < TC_TILE ? len - r0 : TC_TILE;
    int kvh = h / (a.num_heads / a.num_kv_heads);
    tc_load_rows(sq, LDH, TC_TILE, q, a.ldq, (size_t)h * D, t0 + r0, nr, D);
    tc_load_rows(sdo, LDH, TC_TILE, dout, a.ldo, (size_t)h * D, t0 + r0, nr, D);
    for (int i = lane; i < TC_ROWS * LDO; i += 32) sdq[i] = 0;
    int rr = lane >> 1, half = lane & 1, r = warp * TC_ROWS + rr;
    size_t trow = (size_t)(t0 + r0 + (r < nr ? r : 0));
    float rd = tc_rowdot(dout, o, trow * a.ldo + (size_t)h * D, D, half);
    float rl = lse[trow * a.num_heads + h];
    int key_end = a.causal ? r0 + nr : len;
    for (int c0 = 0; c0 < key_end; c0 += TC_TILE) {
        int nc = key_end - c0 < TC_TILE ? key_end - c0 : TC_TILE;
        __syncthreads();
        tc_load_rows(sk, LDH, TC_TILE, k, a.ldk, (size_t)kvh * D, t0 + c0, nc, D);
        tc_load_rows(sv, LDH, TC_TILE, v, a.ldv, (size_t)kvh * D, t0 + c0, nc, D);
        __syncthreads();
        tc_scores(ss, sq + warp * TC_ROWS * LDH, sk, LDH, D);
        tc_scores(sdp, sdo + warp * TC_ROWS * LDH, sv, LDH, D);
        __syncwarp();
        for (int c = half * 32; c < half * 32 + 32; c++) {
            bool vis = r < nr && c < nc && tc_visible(a, r0 + r, c0 + c);
            float p = vis ? expf(a.scale * ss[rr * TC_LDS + c] - rl) : 0.0f;
            sds[rr * TC_LDP + c] = __float2bfloat16(p * (sdp[rr * TC_LDS + c] - rd));
        }
        __syncwarp();
        tc_accumulate(sdq, LDO, sds, sk, LDH, D);
        __syncwarp();
    }
    if (r < nr) {
        size_t t = (size_t)(t0 + r0 + r);
        for (int j = half * (D / 2); j < (half + 1) * (D / 2); j++) {
            cuda_bf16 *e = dq + t * a.ldq + (size_t)h * D + j;
            *e = __float2bfloat16(__bfloat162float(*e) + a.scale * sdq[rr * LDO + j]);
        }
    }
}

static __global__ void __launch_bounds__(TC_THREADS)
tc_dkdv_kernel(cuda_bf16 *dk, cuda_bf16 *dv, const cuda_bf16 *dout, const cuda_bf16 *q,
               const cuda_bf16 *k, const cuda_bf16 *v, const cuda_bf16 *o, const float *lse,
               ops_attn a, int kblocks)
{
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const int D = a.head_dim, LDH = D + 8, LDO = D + 4;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    cuda_bf16 *sk = (cuda_bf16 *)tc_smem, *sv = sk + TC_TILE * LDH;
    cuda_bf16 *sq = sv + TC_TILE * LDH, *sdo = sq + TC_TILE * LDH;
    float *srl = (float *)(sdo + TC_TILE * LDH), *srd = srl + TC_TILE;  /* [64] each */
    unsigned char *wbase = (unsigned char *)(srd + TC_TILE) +
                           (size_t)warp * (2 * TC_ROWS * TC_LDS * 4 + 2 * TC_ROWS * TC_LDP * 2 +
                                           2 * TC_ROWS * LDO * 4);
    float *sst = (float *)wbase, *sdpt = sst + TC_ROWS * TC_LDS;  /* S^T, dP^T [16 keys][64 q] */
    cuda_bf16 *spt = (cuda_bf16 *)(sdpt + TC_ROWS * TC_LDS);      /* P^T [16][TC_LDP] */
    cuda_bf16 *sdst = spt + TC_ROWS * TC_LDP;                      /* dS^T [16][TC_LDP] */
    float *sdk = (float *)(sdst + TC_ROWS * TC_LDP), *sdv = sdk + TC_ROWS * LDO;
    int seg = blockIdx.x / kblocks, c0 = (blockIdx.x % kblocks) * TC_TILE, kvh = blockIdx.y;
    int t0 = a.cu_seqlens[seg], len = a.cu_seqlens[seg + 1] - t0;
    if (c0 >= len) return;
    int nk = len - c0 < TC_TILE ? len - c0 : TC_TILE;
    int group = a.num_heads / a.num_kv_heads;
    tc_load_rows(sk, LDH, TC_TILE, k, a.ldk, (size_t)kvh * D, t0 + c0, nk, D);
    tc_load_rows(sv, LDH, TC_TILE, v, a.ldv, (size_t)kvh * D, t0 + c0, nk, D);
    for (int i = lane; i < 2 * TC_ROWS * LDO; i += 32) sdk[i] = 0;  /* sdk, sdv */
    int rr = lane >> 1, half = lane & 1, kc = warp * TC_ROWS + rr;  /* this pair's key */
    int q_begin = a.causal ? c0 : 0;  /* earlier rows see none of these keys */
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int q0 = q_begin; q0 < len; q0 += TC_TILE) {
            int nq = len - q0 < TC_TILE ? len - q0 : TC_TILE;
            __syncthreads();  /* the previous query tile is consumed (first time: K, V loaded) */
            tc_load_rows(sq, LDH, TC_TILE, q, a.ldq, (size_t)h * D, t0 + q0, nq, D);
            tc_load_rows(sdo, LDH, TC_TILE, dout, a.ldo, (size_t)h * D, t0 + q0, nq, D);
            for (int row = warp * TC_ROWS + rr; row < warp * TC_ROWS + TC_ROWS; row += TC_ROWS) {
                size_t t = (size_t)(t0 + q0 + (row < nq ? row : 0));
                float rd = tc_rowdot(dout, o, t * a.ldo + (size_t)h * D, D, half);
                if (half == 0) {
                    srd[row] = row < nq ? rd : 0.0f;
                    srl[row] = row < nq ? lse[t * a.num_heads + h] : 0.0f;
                }
            }
            __syncthreads();
            tc_scores(sst, sk + warp * TC_ROWS * LDH, sq, LDH, D);
            tc_scores(sdpt, sv + warp * TC_ROWS * LDH, sdo, LDH, D);
            __syncwarp();
            for (int c = half * 32; c < half * 32 + 32; c++) {
                bool vis = c < nq && kc < nk && tc_visible(a, q0 + c, c0 + kc);
                float p = vis ? expf(a.scale * sst[rr * TC_LDS + c] - srl[c]) : 0.0f;
                spt[rr * TC_LDP + c] = __float2bfloat16(p);
                sdst[rr * TC_LDP + c] = __float2bfloat16(p * (sdpt[rr * TC_LDS + c] - srd[c]));
            }
            __syncwarp();
            tc_accumulate(sdv, LDO, spt, sdo, LDH, D);
            tc_accumulate(sdk, LDO, sdst, sq, LDH, D);
            __syncwarp();
        }
    if (kc < nk) {
        size_t t = (size_t)(t0 + c0 + kc);
        for (int j = half * (D / 2); j < (half + 1) * (D / 2); j++) {
            cuda_bf16 *ek = dk + t * a.ldk + (size_t)kvh * D + j, *ev = dv + t * a.ldv + (size_t)kvh * D + j;
            *ek = __float2bfloat16(__bfloat162float(*ek) + a.scale * sdk[rr * LDO + j]);
            *ev = __float2bfloat16(__bfloat162float(*ev) + sdv[rr * LDO + j]);
        }
    }
}

/* whether the tensor-core kernels take this shape (WMMA tiles of 16; the smem plan fits 128) */
bool cuda_attention_tc_fits(const ops_attn *a)
{
    return a->head_dim % 16 == 0 && a->head_dim <= 128;
}

template <typename K> static bool tc_smem_limit(K kernel, size_t bytes)
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

void cuda_attention_tc_forward(cuda_bf16 *o, float *lse, const cuda_bf16 *q, const cuda_bf16 *k,
                               const cuda_bf16 *v, const ops_attn *a)
{
    int qblocks = (a->max_seqlen + TC_TILE - 1) / TC_TILE;
    size_t bytes = tc_fwd_bytes(a->head_dim);
    if (!tc_smem_limit(tc_forward_kernel, bytes)) return;
    dim3 grid((unsigned)(a->num_seqs * qblocks), (unsigned)a->num_heads);
    tc_forward_kernel<<<grid, TC_THREADS, bytes, cuda_stream()>>>(o, lse, q, k, v, *a, qblocks);
    CUDA_LAUNCHED();
}

void cuda_attention_tc_backward(cuda_bf16 *dq, cuda_bf16 *dk, cuda_bf16 *dv, const cuda_bf16 *dout,
                                const cuda_bf16 *q, const cuda_bf16 *k, const cuda_bf16 *v,
                                const cuda_bf16 *o, const float *lse, const ops_attn *a)
{
    int blocks = (a->max_seqlen + TC_TILE - 1) / TC_TILE;
    size_t bytes_q = tc_dq_bytes(a->head_dim), bytes_k = tc_dkdv_bytes(a->head_dim);
    if (!tc_smem_limit(tc_dq_kernel, bytes_q) || !tc_smem_limit(tc_dkdv_kernel, bytes_k)) return;
    dim3 grid_q((unsigned)(a->num_seqs * blocks), (unsigned)a->num_heads);
    tc_dq_kernel<<<grid_q, TC_THREADS, bytes_q, cuda_stream()>>>(dq, dout, q, k, v, o, lse, *a, blocks);
    CUDA_LAUNCHED();
    dim3 grid_k((unsigned)(a->num_seqs * blocks), (unsigned)a->num_kv_heads);
    tc_dkdv_kernel<<<grid_k, TC_THREADS, bytes_k, cuda_stream()>>>(dk, dv, dout, q, k, v, o, lse, *a,
                                                                    blocks);
    CUDA_LAUNCHED();
}
