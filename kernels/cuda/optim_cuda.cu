/* optim_cuda: the global gradient norm with its clip coefficient, and the AdamW step (twins of
 * kernels/cpu/optim_cpu.c).
 *
 * Design: the norm is multi-tensor: up to NORM_TENSORS gradient tensors go to one launch by
 * value (pointers and lengths in the kernel's parameters), each block sums squares in double
 * over its stride of all of them and writes one partial; a one-block kernel then adds the
 * partials in index order to a running total. Nothing is atomic, so the norm is the same bits
 * on every run, and nothing comes back to the host: the clip coefficient stays on the device,
 * where adamw_step reads it through grad_scale. The partials live in a fixed __device__ array,
 * which is safe because every op runs on one stream. The AdamW arithmetic is the CPU twin's
 * (torch.optim.AdamW's single-tensor path) with the same constants formed on the host; its
 * mixed-precision form (ops_cuda.h) also writes the bf16 working copy of each parameter. */
#include "kernels_cuda.cuh"

#include <string.h>

enum { NORM_TENSORS = 96, NORM_BLOCKS = 512, NORM_THREADS = 256 };

typedef struct norm_batch {
    const float *x[NORM_TENSORS];
    size_t       n[NORM_TENSORS];
    int          count;
} norm_batch;

static __device__ double norm_partial[NORM_BLOCKS];
static __device__ double norm_total;

static __global__ void norm_partial_kernel(norm_batch b)
{
    __shared__ double sh[32];
    double acc = 0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (int i = 0; i < b.count; i++) {
        const float *x = b.x[i];
        for (size_t j = first; j < b.n[i]; j += stride) acc += (double)x[j] * x[j];
    }
    acc = cuda_block_sum(acc, sh);
    if (threadIdx.x == 0) norm_partial[blockIdx.x] = acc;
}

/* one block of NORM_BLOCKS threads: total (= 0 first) += the partials in index order */
static __global__ void norm_accumulate_kernel(int first)
{
    __shared__ double sh[32];
    double s = cuda_block_sum(norm_partial[threadIdx.x], sh);
    if (threadIdx.x == 0) norm_total = (first ? 0.0 : norm_total) + s;
}

static __global__ void norm_finish_kernel(float *norm, float *scale, float max_norm, int any)
{
    double nrm = any ? sqrt(norm_total) : 0.0;
    norm[0] = (float)nrm;
    double coef = max_norm > 0 ? max_norm / (nrm + 1e-6) : 1.0;
    scale[0] = (float)(coef < 1.0 ? coef : 1.0);
}

void cuda_grad_norm_f32(float *norm, float *scale, const float *const *tensors,
                        const size_t *lens, int count, float max_norm)
{
    int launches = 0;
    for (int i0 = 0; i0 < count; i0 += NORM_TENSORS) {
        norm_batch b;
        b.count = count - i0 < NORM_TENSORS ? count - i0 : NORM_TENSORS;
        for (int i = 0; i < b.count; i++) {
            b.x[i] = tensors[i0 + i];
            b.n[i] = lens[i0 + i];
        }
        norm_partial_kernel<<<NORM_BLOCKS, NORM_THREADS, 0, cuda_stream()>>>(b);
        CUDA_LAUNCHED();
        norm_accumulate_kernel<<<1, NORM_BLOCKS, 0, cuda_stream()>>>(launches == 0);
        CUDA_LAUNCHED();
        launches++;
    }
    norm_finish_kernel<<<1, 1, 0, cuda_stream()>>>(norm, scale, max_norm, launches > 0);
    CUDA_LAUNCHED();
}

/* p16, when set, receives the updated parameter rounded to bf16: the mixed-precision model's
 * working copy, written in the same pass instead of a second read of the master weights */
static __global__ void adamw_kernel(float *p, cuda_bf16 *p16, float *m, float *v, const float *g,
                                    const float *grad_scale, size_t n, float decay, float b1,
                                    float b2, float b2c, float step_size, float bc2_sqrt, float e)
{
    float gs = grad_scale ? grad_scale[0] : 1.0f;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float gi = g[i] * gs;
        float pi = p[i] * decay;
        float mi = m[i] + b1 * (gi - m[i]);
        float vi = v[i] * b2 + b2c * gi * gi;
        float pn = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + e));
        p[i] = pn;
        if (p16) p16[i] = __float2bfloat16(pn);
        m[i] = mi;
        v[i] = vi;
    }
}

static void adamw_step(float *p, cuda_bf16 *p16, float *m, float *v, const float *g,
                       const float *grad_scale, size_t n, double lr, double beta1, double beta2,
                       double eps, double weight_decay, int step)
{
    if (!n) return;
    float decay = (float)(1.0 - lr * weight_decay);
    float b1 = (float)(1.0 - beta1), b2 = (float)beta2, b2c = (float)(1.0 - beta2);
    float step_size = (float)(lr / (1.0 - pow(beta1, step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, step));
    adamw_kernel<<<cuda_grid(n, 256), 256, 0, cuda_stream()>>>(p, p16, m, v, g, grad_scale, n, decay, b1,
                                                               b2, b2c, step_size, bc2_sqrt,
                                                               (float)eps);
    CUDA_LAUNCHED();
}

void cuda_adamw_step_f32(float *p, float *m, float *v, const float *g, const float *grad_scale,
                         size_t n, double lr, double beta1, double beta2, double eps,
                         double weight_decay, int step)
{
    adamw_step(p, NULL, m, v, g, grad_scale, n, lr, beta1, beta2, eps, weight_decay, step);
}

extern "C" void ops_cuda_adamw_step_mixed(float *p, ops_bf16 *p16, float *m, float *v,
                                          const float *g, const float *grad_scale, size_t n,
                                          double lr, double beta1, double beta2, double eps,
                                          double weight_decay, int step)
{
    adamw_step(p, BF(p16), m, v, g, grad_scale, n, lr, beta1, beta2, eps, weight_decay, step);
}

/* ---- multi-tensor AdamW (ops_cuda.h): up to ADAMW_TENSORS tensors per launch, one pass each ---- */
enum { ADAMW_TENSORS = 24 };

typedef struct adamw_batch {
    float       *p[ADAMW_TENSORS], *m[ADAMW_TENSORS], *v[ADAMW_TENSORS];
    cuda_bf16   *p16[ADAMW_TENSORS];
    const float *g[ADAMW_TENSORS];
    size_t       n[ADAMW_TENSORS];
    float        decay[ADAMW_TENSORS];  /* 1 - lr weight_decay, per tensor */
    int          count;
} adamw_batch;

static __global__ void adamw_multi_kernel(adamw_batch b, const float *grad_scale, float b1, float b2,
                                          float b2c, float step_size, float bc2_sqrt, float e)
{
    float gs = grad_scale ? grad_scale[0] : 1.0f;
    size_t stride = (size_t)gridDim.x * blockDim.x, first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (int t = 0; t < b.count; t++) {
        float *p = b.p[t], *m = b.m[t], *v = b.v[t], decay = b.decay[t];
        cuda_bf16 *p16 = b.p16[t];
        const float *g = b.g[t];
        for (size_t i = first; i < b.n[t]; i += stride) {
            float gi = g[i] * gs;
            float pi = p[i] * decay;
            float mi = m[i] + b1 * (gi - m[i]);
            float vi = v[i] * b2 + b2c * gi * gi;
            float pn = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + e));
            p[i] = pn;
            if (p16) p16[i] = __float2bfloat16(pn);
            m[i] = mi;
            v[i] = vi;
        }
    }
}

extern "C" void ops_cuda_adamw_multi(const ops_cuda_adamw_tensor *tensors, int count,
                                     const float *grad_scale, double lr, double beta1, double beta2,
                                     double eps, int step)
{
    float b1 = (float)(1.0 - beta1), b2 = (float)beta2, b2c = (float)(1.0 - beta2);
    float step_size = (float)(lr / (1.0 - pow(beta1, step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, step));
    for (int i0 = 0; i0 < count; i0 += ADAMW_TENSORS) {
        adamw_batch b;
        memset(&b, 0, sizeof b);
        b.count = count - i0 < ADAMW_TENSORS ? count - i0 : ADAMW_TENSORS;
        size_t most = 0;
        for (int i = 0; i < b.count; i++) {
            const ops_cuda_adamw_tensor *t = &tensors[i0 + i];
            b.p[i] = t->p;
            b.p16[i] = BF(t->p16);
            b.m[i] = t->m;
            b.v[i] = t->v;
            b.g[i] = t->g;
            b.n[i] = t->n;
            b.decay[i] = (float)(1.0 - lr * t->weight_decay);
            most = t->n > most ? t->n : most;
        }
        adamw_multi_kernel<<<cuda_grid(most, 256), 256, 0, cuda_stream()>>>(b, grad_scale, b1, b2, b2c,
                                                                            step_size, bc2_sqrt,
                                                                            (float)eps);
        CUDA_LAUNCHED();
    }
}
