/* ops_cuda: the CUDA op table (fp32), the backend's error record, and the element-wise ops too
 * small for a family of their own. The kernels live one family per file (matmul_cuda.cu,
 * embedding_cuda.cu, norm_cuda.cu, rope_cuda.cu, attention_cuda.cu, activation_cuda.cu,
 * loss_cuda.cu, optim_cuda.cu), each the twin of the kernels/cpu/ file of the same family; every
 * op launches on cuda_stream() and returns without waiting. */
#include "kernels_cuda.cuh"

#include <stdio.h>
#include <string.h>

/* The first failure, kept until cleared. Global because table entries carry no context; the
 * backend is driven from one host thread, like the CUDA context it reports on. */
static char cuda_first_error[512];

void cuda_fail(const char *file, int line, const char *call, const char *detail)
{
    if (cuda_first_error[0]) return;
    const char *base = strrchr(file, '/');
    snprintf(cuda_first_error, sizeof cuda_first_error,
             "%s:%d: %s failed: %s (check the device with nvidia-smi; a sticky error needs a new "
             "process)", base ? base + 1 : file, line, call, detail);
}

extern "C" int ops_cuda_sync(char *msg, size_t len)
{
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    if (!cuda_first_error[0]) return 0;
    if (msg && len) snprintf(msg, len, "%s", cuda_first_error);
    return -1;
}

extern "C" void ops_cuda_clear_error(void) { cuda_first_error[0] = 0; }

static __global__ void add_f32_kernel(float *y, const float *a, const float *b, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = a[i] + b[i];
}

static __global__ void axpy_f32_kernel(float *y, float alpha, const float *x, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] += alpha * x[i];
}

static __global__ void fill_f32_kernel(float *y, float value, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = value;
}

static void cuda_add_f32(float *y, const float *a, const float *b, size_t n)
{
    if (!n) return;
    add_f32_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(y, a, b, n);
    CUDA_LAUNCHED();
}

static void cuda_axpy_f32(float *y, float alpha, const float *x, size_t n)
{
    if (!n) return;
    axpy_f32_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(y, alpha, x, n);
    CUDA_LAUNCHED();
}

void cuda_fill_f32(float *y, float value, size_t n)
{
    if (!n) return;
    fill_f32_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(y, value, n);
    CUDA_LAUNCHED();
}

static __global__ void f32_to_bf16_kernel(cuda_bf16 *y, const float *x, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = __float2bfloat16(x[i]);
}

static __global__ void bf16_to_f32_kernel(float *y, const cuda_bf16 *x, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = __bfloat162float(x[i]);
}

extern "C" void ops_cuda_f32_to_bf16(ops_bf16 *y, const float *x, size_t n)
{
    if (!n) return;
    f32_to_bf16_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(BF(y), x, n);
    CUDA_LAUNCHED();
}

extern "C" void ops_cuda_bf16_to_f32(float *y, const ops_bf16 *x, size_t n)
{
    if (!n) return;
    bf16_to_f32_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(y, CBF(x), n);
    CUDA_LAUNCHED();
}

/* Designated initialisers in the order of ops.h (C++20's rule); every entry is set, and
 * tests/gpu/test_ops_cuda_table.c checks that none is NULL. */
static const ops_table cuda_table = {
    .backend                   = "cuda",
    .add_f32                   = cuda_add_f32,
    .axpy_f32                  = cuda_axpy_f32,
    .fill_f32                  = cuda_fill_f32,
    .matmul_f32                = cuda_matmul_f32,
    .bias_add_f32              = cuda_bias_add_f32,
    .bias_backward_f32         = cuda_bias_backward_f32,
    .embedding_forward_f32     = cuda_embedding_forward_f32,
    .embedding_backward_f32    = cuda_embedding_backward_f32,
    .scatter_rows_forward_f32  = cuda_scatter_rows_forward_f32,
    .scatter_rows_backward_f32 = cuda_scatter_rows_backward_f32,
    .layernorm_forward_f32     = cuda_layernorm_forward_f32,
    .layernorm_backward_f32    = cuda_layernorm_backward_f32,
    .rmsnorm_forward_f32       = cuda_rmsnorm_forward_f32,
    .rmsnorm_backward_f32      = cuda_rmsnorm_backward_f32,
    .rope_forward_f32          = cuda_rope_forward_f32,
    .rope_backward_f32         = cuda_rope_backward_f32,
    .attention_forward_f32     = cuda_attention_forward_f32,
    .attention_backward_f32    = cuda_attention_backward_f32,
    .swiglu_forward_f32        = cuda_swiglu_forward_f32,
    .swiglu_backward_f32       = cuda_swiglu_backward_f32,
    .quickgelu_forward_f32     = cuda_quickgelu_forward_f32,
    .quickgelu_backward_f32    = cuda_quickgelu_backward_f32,
    .gelu_forward_f32          = cuda_gelu_forward_f32,
    .gelu_backward_f32         = cuda_gelu_backward_f32,
    .lmhead_xent_f32           = cuda_lmhead_xent_f32,
    .grad_norm_f32             = cuda_grad_norm_f32,
    .adamw_step_f32            = cuda_adamw_step_f32,
};

extern "C" const ops_table *ops_cuda(void) { return &cuda_table; }
