/* activation_cuda: SwiGLU (decoder MLP), QuickGELU (vision MLP) and exact GELU (PatchMerger),
 * forward and backward (twins of kernels/cpu/activation_cpu.c), fp32 and bf16 storage.
 *
 * Design: grid-stride element-wise loops templated over the storage type (fp32 math either way);
 * backward recomputes the activation from the saved input, as on the CPU. expf and erff are
 * CUDA's full-precision versions (nvcc's default, no fast-math), within a couple of ulp of the
 * CPU twin's. */
#include "kernels_cuda.cuh"

enum { ACT_THREADS = 256 };

static __device__ __forceinline__ float act_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
static __global__ void swiglu_forward_kernel(T *y, const T *gate, const T *up, int T_, int n, int ld_in)
{
    size_t total = (size_t)T_ * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        size_t in = (i / n) * ld_in + i % n;
        float g = cuda_ld(gate + in);
        cuda_st(y + i, g * act_sigmoid(g) * cuda_ld(up + in));
    }
}

template <typename T>
static void swiglu_forward(T *y, const T *gate, const T *up, int T_, int n, int ld_in)
{
    if (T_ <= 0 || n <= 0) return;
    swiglu_forward_kernel<T><<<cuda_grid((size_t)T_ * n, ACT_THREADS), ACT_THREADS, 0, cuda_stream()>>>(
        y, gate, up, T_, n, ld_in);
    CUDA_LAUNCHED();
}

/* silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g) */
template <typename T>
static __global__ void swiglu_backward_kernel(T *dgate, T *dup, const T *dy, const T *gate,
                                              const T *up, int T_, int n, int ld_in)
{
    size_t total = (size_t)T_ * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        size_t in = (i / n) * ld_in + i % n;
        float g = cuda_ld(gate + in), u = cuda_ld(up + in), s = act_sigmoid(g), d = cuda_ld(dy + i);
        cuda_st(dgate + in, cuda_ld(dgate + in) + d * u * s * (1.0f + g * (1.0f - s)));
        cuda_st(dup + in, cuda_ld(dup + in) + d * g * s);
    }
}

template <typename T>
static void swiglu_backward(T *dgate, T *dup, const T *dy, const T *gate, const T *up, int T_,
                            int n, int ld_in)
{
    if (T_ <= 0 || n <= 0) return;
    swiglu_backward_kernel<T><<<cuda_grid((size_t)T_ * n, ACT_THREADS), ACT_THREADS, 0, cuda_stream()>>>(
        dgate, dup, dy, gate, up, T_, n, ld_in);
    CUDA_LAUNCHED();
}

/* the three unary activations, selected at compile time */
enum { ACT_QUICKGELU, ACT_GELU };

#define ACT_SQRT1_2 0.70710678118654752440f

template <int KIND> static __device__ __forceinline__ float act_forward(float x)
{
    if (KIND == ACT_QUICKGELU) return x * act_sigmoid(1.702f * x);
    return 0.5f * x * (1.0f + erff(x * ACT_SQRT1_2));
}

/* QuickGELU: s + 1.702 x s (1 - s); GELU: Phi(x) + x phi(x), phi the standard normal density */
template <int KIND> static __device__ __forceinline__ float act_derivative(float x)
{
    if (KIND == ACT_QUICKGELU) {
        float s = act_sigmoid(1.702f * x);
        return s + 1.702f * x * s * (1.0f - s);
    }
    const float inv_sqrt_2pi = 0.39894228040143267794f;
    float cdf = 0.5f * (1.0f + erff(x * ACT_SQRT1_2));
    float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

template <int KIND, typename T> static __global__ void unary_forward_kernel(T *y, const T *x, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        cuda_st(y + i, act_forward<KIND>(cuda_ld(x + i)));
}

template <int KIND, typename T>
static __global__ void unary_backward_kernel(T *dx, const T *dy, const T *x, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        cuda_st(dx + i, cuda_ld(dx + i) + cuda_ld(dy + i) * act_derivative<KIND>(cuda_ld(x + i)));
}

template <int KIND, typename T> static void unary_forward(T *y, const T *x, size_t n)
{
    if (!n) return;
    unary_forward_kernel<KIND, T><<<cuda_grid(n, ACT_THREADS), ACT_THREADS, 0, cuda_stream()>>>(y, x, n);
    CUDA_LAUNCHED();
}

template <int KIND, typename T> static void unary_backward(T *dx, const T *dy, const T *x, size_t n)
{
    if (!n) return;
    unary_backward_kernel<KIND, T><<<cuda_grid(n, ACT_THREADS), ACT_THREADS, 0, cuda_stream()>>>(dx, dy, x, n);
    CUDA_LAUNCHED();
}

/* ---- fp32: the table's entries ---- */
void cuda_swiglu_forward_f32(float *y, const float *gate, const float *up, int T, int n, int ld_in)
{
    swiglu_forward(y, gate, up, T, n, ld_in);
}

void cuda_swiglu_backward_f32(float *dgate, float *dup, const float *dy, const float *gate,
                              const float *up, int T, int n, int ld_in)
{
    swiglu_backward(dgate, dup, dy, gate, up, T, n, ld_in);
}

void cuda_quickgelu_forward_f32(float *y, const float *x, size_t n) { unary_forward<ACT_QUICKGELU>(y, x, n); }

void cuda_quickgelu_backward_f32(float *dx, const float *dy, const float *x, size_t n)
{
    unary_backward<ACT_QUICKGELU>(dx, dy, x, n);
}

void cuda_gelu_forward_f32(float *y, const float *x, size_t n) { unary_forward<ACT_GELU>(y, x, n); }

void cuda_gelu_backward_f32(float *dx, const float *dy, const float *x, size_t n)
{
    unary_backward<ACT_GELU>(dx, dy, x, n);
}

/* ---- bf16: ops_cuda.h ---- */
extern "C" void ops_cuda_swiglu_forward_bf16(ops_bf16 *y, const ops_bf16 *gate, const ops_bf16 *up,
                                             int T, int n, int ld_in)
{
    swiglu_forward(BF(y), CBF(gate), CBF(up), T, n, ld_in);
}

extern "C" void ops_cuda_swiglu_backward_bf16(ops_bf16 *dgate, ops_bf16 *dup, const ops_bf16 *dy,
                                              const ops_bf16 *gate, const ops_bf16 *up, int T, int n,
                                              int ld_in)
{
    swiglu_backward(BF(dgate), BF(dup), CBF(dy), CBF(gate), CBF(up), T, n, ld_in);
}

extern "C" void ops_cuda_quickgelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n)
{
    unary_forward<ACT_QUICKGELU>(BF(y), CBF(x), n);
}

extern "C" void ops_cuda_quickgelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x,
                                                 size_t n)
{
    unary_backward<ACT_QUICKGELU>(BF(dx), CBF(dy), CBF(x), n);
}

extern "C" void ops_cuda_gelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n)
{
    unary_forward<ACT_GELU>(BF(y), CBF(x), n);
}

extern "C" void ops_cuda_gelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n)
{
    unary_backward<ACT_GELU>(BF(dx), CBF(dy), CBF(x), n);
}
