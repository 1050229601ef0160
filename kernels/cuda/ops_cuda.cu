/* ops_cuda: the CUDA op table (fp32), its memory entries, the backend's streams and error
 * record, and the element-wise ops too small for a family of their own. The kernels live one
 * family per file (matmul_cuda.cu, embedding_cuda.cu, norm_cuda.cu, rope_cuda.cu,
 * attention_cuda.cu, activation_cuda.cu, loss_cuda.cu, optim_cuda.cu), each the twin of the
 * kernels/cpu/ file of the same family.
 *
 * The one idea: one compute stream orders everything the table does (every op, every copy, every
 * cuBLASLt product with its preallocated workspace), and nothing in an op allocates or waits, so
 * the host runs ahead and a training step can later be captured as a CUDA graph. Only
 * mem_download and sync wait. A second (side) stream carries collectives; the two events below
 * let either stream wait for the work issued so far on the other without blocking the host.
 *
 * Both streams are ordinary (blocking) streams, not cudaStreamNonBlocking: work a caller puts on
 * the legacy default stream (a plain cudaMemcpy in a test, say) stays ordered with the table's.
 * Nothing the backend itself issues uses the legacy stream, so this costs no overlap, and graph
 * capture is allowed on such a stream. The backend is driven from one host thread (its state is
 * process-global, like the CUDA context it uses). */
#include "kernels_cuda.cuh"

#include <stdio.h>
#include <string.h>

/* The first failure, kept until cleared. Global because table entries carry no context. */
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
    /* the whole device: the side stream's collectives too, and a failure anywhere surfaces */
    CUDA_CHECK(cudaDeviceSynchronize());
    if (!cuda_first_error[0]) return 0;
    if (msg && len) snprintf(msg, len, "%s", cuda_first_error);
    return -1;
}

extern "C" void ops_cuda_clear_error(void) { cuda_first_error[0] = 0; }

/* ---- streams and events ----------------------------------------------------------------------- */

cudaStream_t cuda_compute_stream;
static cudaStream_t cuda_side;
static cudaEvent_t cuda_compute_done, cuda_side_done;  /* recorded by the wait functions */
static int cuda_setup_failed;  /* made once: a failure is not retried on every op */
static int cuda_bound_device = -1;

/* Makes both streams, both events and the cuBLASLt handle on the current device; 0, or -1 with
 * msg (everything made so far is released, so a later call may try again). */
static int cuda_setup(char *msg, size_t len)
{
    if (cuda_compute_stream) return 0;
    cudaStream_t compute = NULL, side = NULL;
    cudaEvent_t ev_c = NULL, ev_s = NULL;
    int dev = -1, least = 0, greatest = 0;
    cudaError_t e = cudaGetDevice(&dev);
    const char *what = "cudaGetDevice";
    if (e == cudaSuccess) { what = "cudaDeviceGetStreamPriorityRange";
                            e = cudaDeviceGetStreamPriorityRange(&least, &greatest); }
    if (e == cudaSuccess) { what = "cudaStreamCreate(compute)"; e = cudaStreamCreate(&compute); }
    /* collectives get the higher priority: a gradient bucket's all-reduce is on the step's
     * critical path at its end, and should not queue behind backward kernels that are not */
    if (e == cudaSuccess) { what = "cudaStreamCreateWithPriority(side)";
                            e = cudaStreamCreateWithPriority(&side, cudaStreamDefault, greatest); }
    if (e == cudaSuccess) { what = "cudaEventCreateWithFlags";
                            e = cudaEventCreateWithFlags(&ev_c, cudaEventDisableTiming); }
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&ev_s, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        snprintf(msg, len, "CUDA backend set-up: %s failed: %s", what, cudaGetErrorString(e));
        cudaGetLastError();
    } else if (cuda_matmul_setup(msg, len) == 0) {
        cuda_side = side;
        cuda_compute_done = ev_c;
        cuda_side_done = ev_s;
        cuda_bound_device = dev;
        cuda_compute_stream = compute;  /* last: cuda_stream() takes it as "all made" */
        return 0;
    }
    if (ev_s) cudaEventDestroy(ev_s);
    if (ev_c) cudaEventDestroy(ev_c);
    if (side) cudaStreamDestroy(side);
    if (compute) cudaStreamDestroy(compute);
    return -1;
}

cudaStream_t cuda_stream_make(void)
{
    if (cuda_setup_failed) return 0;
    char msg[300];
    if (cuda_setup(msg, sizeof msg) == 0) return cuda_compute_stream;
    cuda_setup_failed = 1;
    cuda_fail(__FILE__, __LINE__, "the CUDA backend's first use", msg);
    return 0;
}

extern "C" int ops_cuda_set_device(int device, char *msg, size_t len)
{
    char local[300];
    if (!msg || !len) { msg = local; len = sizeof local; }
    if (cuda_compute_stream) {
        if (device == cuda_bound_device) return 0;
        snprintf(msg, len, "ops_cuda_set_device(%d): the CUDA backend is already bound to GPU %d "
                 "(one GPU per process)", device, cuda_bound_device);
        return -1;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(msg, len, "ops_cuda_set_device(%d): no CUDA device (%s)", device,
                 e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount says 0");
        cudaGetLastError();
        return -1;
    }
    if (device < 0 || device >= count) {
        snprintf(msg, len, "ops_cuda_set_device(%d): no such GPU (this node has %d: 0..%d)", device,
                 count, count - 1);
        return -1;
    }
    e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(msg, len, "ops_cuda_set_device(%d): cudaSetDevice failed: %s", device,
                 cudaGetErrorString(e));
        cudaGetLastError();
        return -1;
    }
    if (cuda_setup(msg, len)) return -1;
    cuda_setup_failed = 0;
    return 0;
}

extern "C" void *ops_cuda_stream(void) { return (void *)cuda_stream(); }

extern "C" void *ops_cuda_side_stream(void)
{
    cuda_stream();
    return (void *)cuda_side;
}

extern "C" void ops_cuda_side_wait_compute(void)
{
    cudaStream_t compute = cuda_stream();
    if (!cuda_side) return;  /* set-up failed: recorded already */
    CUDA_CHECK(cudaEventRecord(cuda_compute_done, compute));
    CUDA_CHECK(cudaStreamWaitEvent(cuda_side, cuda_compute_done, 0));
}

extern "C" void ops_cuda_compute_wait_side(void)
{
    cudaStream_t compute = cuda_stream();
    if (!cuda_side) return;
    CUDA_CHECK(cudaEventRecord(cuda_side_done, cuda_side));
    CUDA_CHECK(cudaStreamWaitEvent(compute, cuda_side_done, 0));
}

/* ---- memory ------------------------------------------------------------------------------------ */

/* cudaMalloc's blocks are 256-byte aligned (ops.h asks 64). A failed allocation is recorded
 * (the caller gets NULL and names what it wanted; sync then carries CUDA's reason too) and its
 * error cleared, so the next launch check does not blame itself for it. */
static void *cuda_mem_alloc(size_t bytes)
{
    cudaStream_t s = cuda_stream();  /* the backend set up on this device before the first block */
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        char what[160];
        snprintf(what, sizeof what, "%s (%zu bytes)", cudaGetErrorString(e), bytes);
        cudaGetLastError();
        cuda_fail(__FILE__, __LINE__, "cudaMalloc", what);
        return NULL;
    }
    if (bytes) {
        e = cudaMemsetAsync(p, 0, bytes, s);
        if (e != cudaSuccess) {
            cuda_fail(__FILE__, __LINE__, "cudaMemsetAsync(new block)", cudaGetErrorString(e));
            cudaFree(p);
            return NULL;
        }
    }
    return p;
}

/* cudaFree waits for the device: freeing is for the end of a run, never inside a step */
static void cuda_mem_free(void *p)
{
    if (p) CUDA_CHECK(cudaFree(p));
}

/* From pageable memory (malloc, the model's staging) cudaMemcpyAsync copies src into a driver
 * staging buffer before it returns, so src may be reused at once while the DMA to the device is
 * still queued on the compute stream. From page-locked or managed memory it returns before
 * reading src, so then the stream is waited for, to keep ops.h's promise. */
static void cuda_mem_upload(void *dst, const void *src_host, size_t bytes)
{
    if (!bytes) return;
    cudaStream_t s = cuda_stream();
    cudaPointerAttributes attr;
    int pageable = 1;
    if (cudaPointerGetAttributes(&attr, src_host) == cudaSuccess)
        pageable = attr.type == cudaMemoryTypeUnregistered;
    else
        cudaGetLastError();  /* older drivers refuse unregistered pointers: pageable */
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, s));
    if (!pageable) CUDA_CHECK(cudaStreamSynchronize(s));
}

/* Waits for the ops before it (same stream). A failed copy leaves 0xff bytes in dst (NaN as
 * floats, -1 as ints), so a result read without checking sync cannot pass for a real one. */
static void cuda_mem_download(void *dst_host, const void *src, size_t bytes)
{
    if (!bytes) return;
    cudaStream_t s = cuda_stream();
    cudaError_t e = cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
        cuda_fail(__FILE__, __LINE__, "mem_download (cudaMemcpyAsync + cudaStreamSynchronize)",
                  cudaGetErrorString(e));
        memset(dst_host, 0xff, bytes);
    }
}

static void cuda_mem_copy(void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
}

/* ---- element-wise ops -------------------------------------------------------------------------- */

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

#include "bf16_extra_cuda.cuh"  /* the bf16 entries bound at the end of the table */

/* the graph entries (graph_cuda.cu) */
extern "C" int  ops_cuda_graph_begin(char *msg, size_t len);
extern "C" int  ops_cuda_graph_end(void **graph, char *msg, size_t len);
extern "C" int  ops_cuda_graph_launch(void *graph, char *msg, size_t len);
extern "C" void ops_cuda_graph_free(void *graph);

/* Designated initialisers in the order of ops.h (C++20's rule); every entry is set, and
 * tests/gpu/test_ops_cuda_table.c checks that none is NULL. */
static const ops_table cuda_table = {
    .backend                   = "cuda",
    .host_accessible           = 0,
    .mem_alloc                 = cuda_mem_alloc,
    .mem_free                  = cuda_mem_free,
    .mem_upload                = cuda_mem_upload,
    .mem_download              = cuda_mem_download,
    .mem_copy                  = cuda_mem_copy,
    .sync                      = ops_cuda_sync,
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
    /* bf16 storage: the ops_cuda.h variants, and bf16_extra_cuda.cu for what they lacked */
    .f32_to_bf16               = ops_cuda_f32_to_bf16,
    .bf16_to_f32               = ops_cuda_bf16_to_f32,
    .add_bf16                  = cuda_add_bf16,
    .axpy_bf16                 = cuda_axpy_bf16,
    .fill_bf16                 = cuda_fill_bf16,
    .matmul_bf16               = cuda_matmul_bf16_entry,
    .matmul_bf16_f32out        = ops_cuda_matmul_bf16_f32out,
    .bias_add_bf16             = cuda_bias_add_bf16,
    .bias_backward_bf16        = cuda_bias_backward_bf16,
    .embedding_forward_bf16    = ops_cuda_embedding_forward_bf16,
    .embedding_backward_bf16   = ops_cuda_embedding_backward_bf16,
    .scatter_rows_forward_bf16 = ops_cuda_scatter_rows_forward_bf16,
    .scatter_rows_backward_bf16 = ops_cuda_scatter_rows_backward_bf16,
    .layernorm_forward_bf16    = ops_cuda_layernorm_forward_bf16,
    .layernorm_backward_bf16   = ops_cuda_layernorm_backward_bf16,
    .rmsnorm_forward_bf16      = ops_cuda_rmsnorm_forward_bf16,
    .rmsnorm_backward_bf16     = ops_cuda_rmsnorm_backward_bf16,
    .rope_forward_bf16         = ops_cuda_rope_forward_bf16,
    .rope_backward_bf16        = ops_cuda_rope_backward_bf16,
    .attention_forward_bf16    = ops_cuda_attention_forward_bf16,
    .attention_backward_bf16   = ops_cuda_attention_backward_bf16,
    .swiglu_forward_bf16       = ops_cuda_swiglu_forward_bf16,
    .swiglu_backward_bf16      = ops_cuda_swiglu_backward_bf16,
    .quickgelu_forward_bf16    = ops_cuda_quickgelu_forward_bf16,
    .quickgelu_backward_bf16   = ops_cuda_quickgelu_backward_bf16,
    .gelu_forward_bf16         = ops_cuda_gelu_forward_bf16,
    .gelu_backward_bf16        = ops_cuda_gelu_backward_bf16,
    .lmhead_xent_bf16          = ops_cuda_lmhead_xent_bf16,
    .adamw_step_mixed          = ops_cuda_adamw_step_mixed,
    /* stream capture of the compute stream (graph_cuda.cu) */
    .graph_begin               = ops_cuda_graph_begin,
    .graph_end                 = ops_cuda_graph_end,
    .graph_launch              = ops_cuda_graph_launch,
    .graph_free                = ops_cuda_graph_free,
};

extern "C" const ops_table *ops_cuda(void) { return &cuda_table; }
