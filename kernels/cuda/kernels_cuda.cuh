/* kernels_cuda: what the CUDA kernel families share: the error record, the stream every op
 * launches on, grid sizing and warp/block reductions, and the family entry points the table in
 * ops_cuda.cu binds (argument meanings and shapes are those of the matching entry of ops.h).
 *
 * The one idea: every reduction that feeds a result is done in a fixed order (warp shuffles in
 * a fixed pattern, then the warps' partials summed in index order, no floating-point atomics), so
 * a kernel gives the same bits on every run, which bit-identical resume needs. */
#ifndef ADAPT_KERNELS_CUDA_CUH
#define ADAPT_KERNELS_CUDA_CUH

#include "adapt_config.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>

extern "C" {
#include "ops.h"
}
#include "ops_cuda.h"

/* Records the first failure (later ones are usually its consequences). */
void cuda_fail(const char *file, int line, const char *call, const char *detail);

#define CUDA_CHECK(call)                                                        \
    do {                                                                        \
        cudaError_t cuda_e_ = (call);                                           \
        if (cuda_e_ != cudaSuccess)                                             \
            cuda_fail(__FILE__, __LINE__, #call, cudaGetErrorString(cuda_e_));  \
    } while (0)

/* after a <<<...>>> launch: a bad configuration is reported here, not at the next sync */
#define CUDA_LAUNCHED() CUDA_CHECK(cudaGetLastError())

/* The compute stream (ops_cuda.cu), on which every op, copy and cuBLASLt product is issued, so
 * ops are ordered among themselves and a step can be captured as a CUDA graph. It is made, with
 * the side stream, the events and the cuBLASLt handle and workspace, by ops_cuda_set_device or,
 * failing that, on first use on the current device (cuda_stream_make; on failure the error is
 * recorded and 0, the legacy stream, is returned so the caller's sync reports it). */
extern cudaStream_t cuda_compute_stream;
cudaStream_t cuda_stream_make(void);
static inline cudaStream_t cuda_stream(void)
{
    return cuda_compute_stream ? cuda_compute_stream : cuda_stream_make();
}

/* matmul_cuda.cu: makes the cuBLASLt handle and its workspace (once; 0, or -1 with msg). Called
 * when the streams are made, so no product allocates inside a step. */
int cuda_matmul_setup(char *msg, size_t len);

/* Blocks for a grid-stride loop over n items: enough to fill any current GPU, never zero. */
static inline unsigned cuda_grid(size_t n, unsigned block)
{
    size_t blocks = (n + block - 1) / block;
    if (blocks > 8192) blocks = 8192;
    return blocks ? (unsigned)blocks : 1u;
}

#define CUDA_FULL_MASK 0xffffffffu

/* Storage types: the kernel families are templates over the activation storage type T, float
 * (the table's fp32 twins) or __nv_bfloat16 (ops_cuda.h's bf16 variants); arithmetic is fp32
 * either way, and values pass through these two at every global load and store. */
typedef __nv_bfloat16 cuda_bf16;

__device__ __forceinline__ float cuda_ld(const float *p) { return *p; }
__device__ __forceinline__ float cuda_ld(const cuda_bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void cuda_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void cuda_st(cuda_bf16 *p, float v) { *p = __float2bfloat16(v); }

/* ops_cuda.h's C-visible bf16 words as the kernels' type */
#define BF(p)  ((cuda_bf16 *)(p))
#define CBF(p) ((const cuda_bf16 *)(p))

template <typename T> __device__ __forceinline__ T cuda_warp_sum(T v)
{
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(CUDA_FULL_MASK, v, off);
    return v;
}

__device__ __forceinline__ float cuda_warp_max(float v)
{
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(CUDA_FULL_MASK, v, off));
    return v;
}

/* Sum over a 1-D block whose size is a multiple of 32; every thread gets the total. sh holds
 * 32 values. Every thread adds the warp partials in index order, so all agree bit for bit. */
template <typename T> __device__ T cuda_block_sum(T v, T *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = cuda_warp_sum(v);
    __syncthreads();  /* sh may still be read by a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < nwarps; w++) total += sh[w];
    return total;
}

__device__ __forceinline__ float cuda_block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = cuda_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < nwarps; w++) m = fmaxf(m, sh[w]);
    return m;
}

/* ---- ops_cuda.cu ---- */
void cuda_fill_f32(float *y, float value, size_t n);

/* ---- matmul_cuda.cu ---- */
void cuda_matmul_f32(float *c, const float *a, const float *b, int m, int n, int k, int trans_a,
                     int trans_b, int lda, int ldb, int ldc, float alpha, float beta);
void cuda_bias_add_f32(float *y, const float *bias, int rows, int n, int ldy);
void cuda_bias_backward_f32(float *dbias, const float *dy, int rows, int n, int ldy);

/* ---- embedding_cuda.cu ---- */
void cuda_embedding_forward_f32(float *y, const float *w, const int *ids, int T, int d);
void cuda_embedding_backward_f32(float *dw, const float *dy, const int *ids, int T, int d);
void cuda_scatter_rows_forward_f32(float *y, const float *src, const int *pos, int n, int d);
void cuda_scatter_rows_backward_f32(float *dsrc, float *dy, const int *pos, int n, int d);

/* ---- norm_cuda.cu ---- */
void cuda_layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x, const float *w,
                                const float *b, int T, int d, float eps);
void cuda_layernorm_backward_f32(float *dx, float *dw, float *db, const float *dy, const float *x,
                                 const float *w, const float *mean, const float *rstd, int T, int d);
void cuda_rmsnorm_forward_f32(float *y, float *rstd, float *res, const float *x, const float *w,
                              int T, int d, float eps);
void cuda_rmsnorm_backward_f32(float *du, float *dw, const float *dy, const float *u,
                               const float *w, const float *rstd, int T, int d);

/* ---- rope_cuda.cu ---- */
void cuda_rope_forward_f32(float *x, const int *pos, int T, int n_heads, int ldx,
                           const ops_rope *rope);
void cuda_rope_backward_f32(float *dx, const int *pos, int T, int n_heads, int ldx,
                            const ops_rope *rope);

/* ---- attention_cuda.cu ---- */
void cuda_attention_forward_f32(float *o, float *lse, const float *q, const float *k,
                                const float *v, const ops_attn *attn);
void cuda_attention_backward_f32(float *dq, float *dk, float *dv, const float *dout,
                                 const float *q, const float *k, const float *v, const float *o,
                                 const float *lse, const ops_attn *attn);

/* ---- attention_tc_cuda.cu (bf16 on tensor cores; attention_cuda.cu chooses) ---- */
bool cuda_attention_tc_fits(const ops_attn *attn);
void cuda_attention_tc_forward(cuda_bf16 *o, float *lse, const cuda_bf16 *q, const cuda_bf16 *k,
                               const cuda_bf16 *v, const ops_attn *attn);
void cuda_attention_tc_backward(cuda_bf16 *dq, cuda_bf16 *dk, cuda_bf16 *dv, const cuda_bf16 *dout,
                                const cuda_bf16 *q, const cuda_bf16 *k, const cuda_bf16 *v,
                                const cuda_bf16 *o, const float *lse, const ops_attn *attn);

/* ---- activation_cuda.cu ---- */
void cuda_swiglu_forward_f32(float *y, const float *gate, const float *up, int T, int n, int ld_in);
void cuda_swiglu_backward_f32(float *dgate, float *dup, const float *dy, const float *gate,
                              const float *up, int T, int n, int ld_in);
void cuda_quickgelu_forward_f32(float *y, const float *x, size_t n);
void cuda_quickgelu_backward_f32(float *dx, const float *dy, const float *x, size_t n);
void cuda_gelu_forward_f32(float *y, const float *x, size_t n);
void cuda_gelu_backward_f32(float *dx, const float *dy, const float *x, size_t n);

/* ---- loss_cuda.cu ---- */
void cuda_lmhead_xent_f32(float *loss, float *dh, float *dw, const float *h, const float *w,
                          const int *labels, int T, int d, int V, float normaliser, float *work,
                          size_t work_len);

/* ---- optim_cuda.cu ---- */
void cuda_grad_norm_f32(float *norm, float *scale, const float *const *tensors,
                        const size_t *lens, int count, float max_norm);
void cuda_adamw_step_f32(float *p, float *m, float *v, const float *g, const float *grad_scale,
                         size_t n, double lr, double beta1, double beta2, double eps,
                         double weight_decay, int step);

#endif
