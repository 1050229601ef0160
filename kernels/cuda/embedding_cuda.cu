/* embedding_cuda: token-embedding lookup and the scatter of image features into the
 * <|image_pad|> rows, each with its backward (twins of kernels/cpu/embedding_cpu.c), fp32 and
 * bf16 storage (the embedding gradient dw is fp32 either way: it is a parameter gradient).
 *
 * Design: the lookup's backward is a scatter-add in which several tokens may hit one row. Float
 * atomics would make the sum's order, and so its last bits, change from run to run; instead the
 * first token of each id (the "leader") sums the rows of every token with that id in token
 * order and is the only writer of that dw row. Finding them costs a scan of ids per token
 * (T^2 integer compares through shared memory), small next to the T x d floats moved. */
#include "kernels_cuda.cuh"

enum { EMB_THREADS = 256, EMB_IDS_TILE = 1024 };

template <typename X>
static __global__ void embedding_forward_kernel(X *y, const X *w, const int *ids, int T, int d)
{
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        const X *src = w + (size_t)ids[t] * d;
        X *dst = y + (size_t)t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
    }
}

template <typename X> static void embedding_forward(X *y, const X *w, const int *ids, int T, int d)
{
    if (T <= 0 || d <= 0) return;
    embedding_forward_kernel<X><<<T < 65535 ? T : 65535, EMB_THREADS, 0, cuda_stream()>>>(y, w, ids, T, d);
    CUDA_LAUNCHED();
}

template <typename X>
static __global__ void embedding_backward_kernel(float *dw, const X *dy, const int *ids, int T, int d)
{
    __shared__ int tile[EMB_IDS_TILE];
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        int id = ids[t];
        int earlier = 0;
        for (int u = threadIdx.x; u < t; u += blockDim.x) earlier |= ids[u] == id;
        if (__syncthreads_or(earlier)) continue;  /* block-uniform: not the leader of id */
        for (int j0 = 0; j0 < d; j0 += blockDim.x) {
            int j = j0 + threadIdx.x;
            float acc = 0;
            for (int u0 = t; u0 < T; u0 += EMB_IDS_TILE) {
                int nu = T - u0 < EMB_IDS_TILE ? T - u0 : EMB_IDS_TILE;
                __syncthreads();  /* the previous tile is read by everyone */
                for (int i = threadIdx.x; i < nu; i += blockDim.x) tile[i] = ids[u0 + i];
                __syncthreads();
                if (j < d)
                    for (int i = 0; i < nu; i++)
                        if (tile[i] == id) acc += cuda_ld(dy + (size_t)(u0 + i) * d + j);
            }
            if (j < d) dw[(size_t)id * d + j] += acc;
        }
    }
}

template <typename X>
static void embedding_backward(float *dw, const X *dy, const int *ids, int T, int d)
{
    if (T <= 0 || d <= 0) return;
    embedding_backward_kernel<X><<<T < 65535 ? T : 65535, EMB_THREADS, 0, cuda_stream()>>>(dw, dy, ids, T, d);
    CUDA_LAUNCHED();
}

template <typename X>
static __global__ void scatter_rows_forward_kernel(X *y, const X *src, const int *pos, int n, int d)
{
    for (int i = blockIdx.x; i < n; i += gridDim.x) {
        X *dst = y + (size_t)pos[i] * d;
        const X *s = src + (size_t)i * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = s[j];
    }
}

template <typename X> static void scatter_rows_forward(X *y, const X *src, const int *pos, int n, int d)
{
    if (n <= 0 || d <= 0) return;
    scatter_rows_forward_kernel<X><<<n < 65535 ? n : 65535, EMB_THREADS, 0, cuda_stream()>>>(y, src, pos, n, d);
    CUDA_LAUNCHED();
}

/* pos holds distinct rows, so row i of dsrc and row pos[i] of dy have one writer each */
template <typename X>
static __global__ void scatter_rows_backward_kernel(X *dsrc, X *dy, const int *pos, int n, int d)
{
    for (int i = blockIdx.x; i < n; i += gridDim.x) {
        X *g = dy + (size_t)pos[i] * d, *dst = dsrc + (size_t)i * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            cuda_st(dst + j, cuda_ld(dst + j) + cuda_ld(g + j));
            cuda_st(g + j, 0.0f);
        }
    }
}

template <typename X> static void scatter_rows_backward(X *dsrc, X *dy, const int *pos, int n, int d)
{
    if (n <= 0 || d <= 0) return;
    scatter_rows_backward_kernel<X><<<n < 65535 ? n : 65535, EMB_THREADS, 0, cuda_stream()>>>(dsrc, dy, pos, n, d);
    CUDA_LAUNCHED();
}

/* ---- fp32: the table's entries ---- */
void cuda_embedding_forward_f32(float *y, const float *w, const int *ids, int T, int d)
{
    embedding_forward(y, w, ids, T, d);
}

void cuda_embedding_backward_f32(float *dw, const float *dy, const int *ids, int T, int d)
{
    embedding_backward(dw, dy, ids, T, d);
}

void cuda_scatter_rows_forward_f32(float *y, const float *src, const int *pos, int n, int d)
{
    scatter_rows_forward(y, src, pos, n, d);
}

void cuda_scatter_rows_backward_f32(float *dsrc, float *dy, const int *pos, int n, int d)
{
    scatter_rows_backward(dsrc, dy, pos, n, d);
}

/* ---- bf16: ops_cuda.h ---- */
extern "C" void ops_cuda_embedding_forward_bf16(ops_bf16 *y, const ops_bf16 *w, const int *ids, int T,
                                                int d)
{
    embedding_forward(BF(y), CBF(w), ids, T, d);
}

extern "C" void ops_cuda_embedding_backward_bf16(float *dw, const ops_bf16 *dy, const int *ids, int T,
                                                 int d)
{
    embedding_backward(dw, CBF(dy), ids, T, d);
}

extern "C" void ops_cuda_scatter_rows_forward_bf16(ops_bf16 *y, const ops_bf16 *src, const int *pos,
                                                   int n, int d)
{
    scatter_rows_forward(BF(y), CBF(src), pos, n, d);
}

extern "C" void ops_cuda_scatter_rows_backward_bf16(ops_bf16 *dsrc, ops_bf16 *dy, const int *pos,
                                                    int n, int d)
{
    scatter_rows_backward(BF(dsrc), BF(dy), pos, n, d);
}
