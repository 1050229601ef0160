/* bf16_extra_cuda: the bf16 entries of the op table that the CUDA kernel families did not have:
 * the element-wise add / axpy / fill, a Linear's bias add and bias gradient over bf16 storage,
 * and the table's form of the bf16 product (a NULL-able bias instead of ops_cuda.h's epilogue
 * enum). Twins of kernels/cpu/bf16_cpu.c.
 *
 * The one idea: as everywhere in kernels/cuda, values are widened at the load (cuda_ld), the
 * arithmetic is fp32, and each result is rounded once at the store (cuda_st, round to nearest
 * even); the bias gradient sums in a fixed order (no atomics), so it gives the same bits on
 * every run. */
#include "bf16_extra_cuda.cuh"

static __global__ void add_bf16_kernel(cuda_bf16 *y, const cuda_bf16 *a, const cuda_bf16 *b, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        cuda_st(y + i, cuda_ld(a + i) + cuda_ld(b + i));
}

static __global__ void axpy_bf16_kernel(cuda_bf16 *y, float alpha, const cuda_bf16 *x, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        cuda_st(y + i, cuda_ld(y + i) + alpha * cuda_ld(x + i));
}

static __global__ void fill_bf16_kernel(cuda_bf16 *y, float value, size_t n)
{
    cuda_bf16 v = __float2bfloat16(value);
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = v;
}

void cuda_add_bf16(ops_bf16 *y, const ops_bf16 *a, const ops_bf16 *b, size_t n)
{
    if (!n) return;
    add_bf16_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(BF(y), CBF(a), CBF(b), n);
    CUDA_LAUNCHED();
}

void cuda_axpy_bf16(ops_bf16 *y, float alpha, const ops_bf16 *x, size_t n)
{
    if (!n) return;
    axpy_bf16_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(BF(y), alpha, CBF(x), n);
    CUDA_LAUNCHED();
}

void cuda_fill_bf16(ops_bf16 *y, float value, size_t n)
{
    if (!n) return;
    fill_bf16_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(BF(y), value, n);
    CUDA_LAUNCHED();
}

/* y[r, j] = y[r, j] + bias[j], one rounding */
static __global__ void bias_add_bf16_kernel(cuda_bf16 *y, const cuda_bf16 *bias, int rows, int n,
                                            int ldy)
{
    size_t total = (size_t)rows * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        cuda_bf16 *e = y + (i / n) * ldy + i % n;
        cuda_st(e, cuda_ld(e) + cuda_ld(bias + i % n));
    }
}

void cuda_bias_add_bf16(ops_bf16 *y, const ops_bf16 *bias, int rows, int n, int ldy)
{
    if (rows <= 0 || n <= 0) return;
    bias_add_bf16_kernel<<<cuda_grid((size_t)rows * n, 256), 256, 0, cuda_stream()>>>(
        BF(y), CBF(bias), rows, n, ldy);
    CUDA_LAUNCHED();
}

/* matmul_cuda.cu's bias gradient over bf16 dy: one block per 32 columns, 16 row lanes each
 * summing every 16th row, the lanes' partials then added in lane order; one writer per dbias
 * element (fp32, the master gradient) */
enum { BB_COLS = 32, BB_LANES = 16 };

static __global__ void bias_backward_bf16_kernel(float *dbias, const cuda_bf16 *dy, int rows, int n,
                                                 int ldy)
{
    __shared__ float part[BB_LANES][BB_COLS];
    int j = blockIdx.x * BB_COLS + threadIdx.x;
    float acc = 0;
    if (j < n)
        for (int r = threadIdx.y; r < rows; r += BB_LANES) acc += cuda_ld(dy + (size_t)r * ldy + j);
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < n) {
        float s = 0;
        for (int l = 0; l < BB_LANES; l++) s += part[l][threadIdx.x];
        dbias[j] += s;
    }
}

void cuda_bias_backward_bf16(float *dbias, const ops_bf16 *dy, int rows, int n, int ldy)
{
    if (rows <= 0 || n <= 0) return;
    dim3 block(BB_COLS, BB_LANES);
    bias_backward_bf16_kernel<<<(n + BB_COLS - 1) / BB_COLS, block, 0, cuda_stream()>>>(
        dbias, CBF(dy), rows, n, ldy);
    CUDA_LAUNCHED();
}

/* k = 0 with a bias: C = beta C + bias in fp32, one rounding (cuBLASLt takes no empty product) */
static __global__ void empty_bias_kernel(cuda_bf16 *c, const cuda_bf16 *bias, int m, int n, int ldc,
                                         float beta)
{
    size_t total = (size_t)m * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        cuda_bf16 *e = c + (i / n) * ldc + i % n;
        float old = beta == 0.0f ? 0.0f : beta * cuda_ld(e);  /* beta 0 ignores NaNs in C */
        cuda_st(e, old + cuda_ld(bias + i % n));
    }
}

void cuda_matmul_bf16_entry(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                            int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                            float beta, const ops_bf16 *bias)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0 && bias) {
        empty_bias_kernel<<<cuda_grid((size_t)m * n, 256), 256, 0, cuda_stream()>>>(
            BF(c), CBF(bias), m, n, ldc, beta);
        CUDA_LAUNCHED();
        return;
    }
    ops_cuda_matmul_bf16(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta, bias,
                         bias ? OPS_CUDA_EPI_BIAS : OPS_CUDA_EPI_NONE);
}
