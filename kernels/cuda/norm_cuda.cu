/* norm_cuda: LayerNorm (vision tower, merger) and RMSNorm with the optional fused residual add
 * (decoder), forward and backward (twins of kernels/cpu/norm_cpu.c), fp32 and bf16 storage.
 *
 * Design: one block per row for everything per-row (statistics, y, dx), with the row sums in
 * double as on the CPU (a memory-bound kernel; the extra precision costs nothing measurable and
 * keeps the twins within an ulp or two). The weight and bias gradients, which sum over rows, are
 * a second kernel over column blocks: 32 columns x 16 row lanes per block, the lanes' partials
 * added in lane order, one writer per element, so no atomics and the same bits on every run.
 * Templated over the storage type T of activations and weights (x, y, w, b, res, dx, du); the
 * row statistics (mean, rstd) and the parameter gradients (dw, db) are fp32 always, since
 * parameter gradients accumulate over micro-batches into the fp32 master gradients. */
#include "kernels_cuda.cuh"

enum { NORM_THREADS = 256, NORM_COLS = 32, NORM_LANES = 16 };

static unsigned norm_rows_grid(int T) { return T < 65535 ? (unsigned)T : 65535u; }

template <typename T>
static __global__ void layernorm_forward_kernel(T *y, float *mean, float *rstd, const T *x,
                                                const T *w, const T *b, int rows, int d, float eps)
{
    __shared__ double sh[32];
    for (int t = blockIdx.x; t < rows; t += gridDim.x) {
        const T *xr = x + (size_t)t * d;
        double s = 0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) s += cuda_ld(xr + j);
        double mu = cuda_block_sum(s, sh) / d;
        double ss = 0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            double c = cuda_ld(xr + j) - mu;
            ss += c * c;
        }
        ss = cuda_block_sum(ss, sh);
        float r = (float)(1.0 / sqrt(ss / d + eps)), m = (float)mu;
        T *yr = y + (size_t)t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            cuda_st(yr + j, (cuda_ld(xr + j) - m) * r * cuda_ld(w + j) + cuda_ld(b + j));
        if (threadIdx.x == 0) {
            mean[t] = m;
            rstd[t] = r;
        }
    }
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy w, xhat = (x - mean) rstd */
template <typename T>
static __global__ void layernorm_dx_kernel(T *dx, const T *dy, const T *x, const T *w,
                                           const float *mean, const float *rstd, int rows, int d)
{
    __shared__ double sh[32];
    for (int t = blockIdx.x; t < rows; t += gridDim.x) {
        const T *xr = x + (size_t)t * d, *gr = dy + (size_t)t * d;
        float m = mean[t], r = rstd[t];
        double sg = 0, sgx = 0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float g = cuda_ld(gr + j) * cuda_ld(w + j);
            sg += g;
            sgx += g * ((cuda_ld(xr + j) - m) * r);
        }
        float mg = (float)(cuda_block_sum(sg, sh) / d);
        float mgx = (float)(cuda_block_sum(sgx, sh) / d);
        T *dxr = dx + (size_t)t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float g = cuda_ld(gr + j) * cuda_ld(w + j);
            cuda_st(dxr + j, cuda_ld(dxr + j) + r * (g - mg - (cuda_ld(xr + j) - m) * r * mgx));
        }
    }
}

/* dw += sum_t dy xhat, db += sum_t dy; either may be NULL (RMSNorm has no bias; a frozen norm
 * wants neither). For RMSNorm, mean is NULL and x is the normalised input u, so xhat = u rstd. */
template <typename T>
static __global__ void norm_params_kernel(float *dw, float *db, const T *dy, const T *x,
                                          const float *mean, const float *rstd, int rows, int d)
{
    __shared__ float pw[NORM_LANES][NORM_COLS], pb[NORM_LANES][NORM_COLS];
    int j = blockIdx.x * NORM_COLS + threadIdx.x;
    float aw = 0, ab = 0;
    if (j < d)
        for (int t = threadIdx.y; t < rows; t += NORM_LANES) {
            float g = cuda_ld(dy + (size_t)t * d + j), xv = cuda_ld(x + (size_t)t * d + j);
            float xhat = mean ? (xv - mean[t]) * rstd[t] : xv * rstd[t];
            aw += g * xhat;
            ab += g;
        }
    pw[threadIdx.y][threadIdx.x] = aw;
    pb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        float sw = 0, sb = 0;
        for (int l = 0; l < NORM_LANES; l++) {
            sw += pw[l][threadIdx.x];
            sb += pb[l][threadIdx.x];
        }
        if (dw) dw[j] += sw;
        if (db) db[j] += sb;
    }
}

template <typename T>
static void norm_params(float *dw, float *db, const T *dy, const T *x, const float *mean,
                        const float *rstd, int rows, int d)
{
    if (!dw && !db) return;  /* a frozen norm: no parameter pass */
    dim3 block(NORM_COLS, NORM_LANES);
    norm_params_kernel<T><<<(d + NORM_COLS - 1) / NORM_COLS, block, 0, cuda_stream()>>>(
        dw, db, dy, x, mean, rstd, rows, d);
    CUDA_LAUNCHED();
}

template <typename T>
static void layernorm_forward(T *y, float *mean, float *rstd, const T *x, const T *w, const T *b,
                              int rows, int d, float eps)
{
    if (rows <= 0 || d <= 0) return;
    layernorm_forward_kernel<T><<<norm_rows_grid(rows), NORM_THREADS, 0, cuda_stream()>>>(
        y, mean, rstd, x, w, b, rows, d, eps);
    CUDA_LAUNCHED();
}

template <typename T>
static void layernorm_backward(T *dx, float *dw, float *db, const T *dy, const T *x, const T *w,
                               const float *mean, const float *rstd, int rows, int d)
{
    if (rows <= 0 || d <= 0) return;
    layernorm_dx_kernel<T><<<norm_rows_grid(rows), NORM_THREADS, 0, cuda_stream()>>>(
        dx, dy, x, w, mean, rstd, rows, d);
    CUDA_LAUNCHED();
    norm_params(dw, db, dy, x, mean, rstd, rows, d);
}

/* Each thread normalises the columns it summed, so reading back the residual it just wrote
 * needs no barrier. With bf16 storage the sum is rounded to bf16 first and that rounded value
 * is normalised, so forward and backward (which reads res) see the same u. */
template <typename T>
static __global__ void rmsnorm_forward_kernel(T *y, float *rstd, T *res, const T *x, const T *w,
                                              int rows, int d, float eps)
{
    __shared__ double sh[32];
    for (int t = blockIdx.x; t < rows; t += gridDim.x) {
        const T *xr = x + (size_t)t * d;
        T *rr = res ? res + (size_t)t * d : NULL;
        double ss = 0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float u = cuda_ld(xr + j);
            if (rr) {
                cuda_st(rr + j, cuda_ld(rr + j) + u);
                u = cuda_ld(rr + j);
            }
            ss += (double)u * u;
        }
        ss = cuda_block_sum(ss, sh);
        float r = (float)(1.0 / sqrt(ss / d + eps));
        const T *ur = rr ? rr : xr;
        T *yr = y + (size_t)t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            cuda_st(yr + j, cuda_ld(w + j) * (cuda_ld(ur + j) * r));
        if (threadIdx.x == 0) rstd[t] = r;
    }
}

/* du = rstd (g - uhat mean(g uhat)) with g = dy w, uhat = u rstd */
template <typename T>
static __global__ void rmsnorm_du_kernel(T *du, const T *dy, const T *u, const T *w,
                                         const float *rstd, int rows, int d)
{
    __shared__ double sh[32];
    for (int t = blockIdx.x; t < rows; t += gridDim.x) {
        const T *ur = u + (size_t)t * d, *gr = dy + (size_t)t * d;
        float r = rstd[t];
        double sgu = 0;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            sgu += cuda_ld(gr + j) * cuda_ld(w + j) * (cuda_ld(ur + j) * r);
        float mgu = (float)(cuda_block_sum(sgu, sh) / d);
        T *dur = du + (size_t)t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float g = cuda_ld(gr + j) * cuda_ld(w + j);
            cuda_st(dur + j, cuda_ld(dur + j) + r * (g - cuda_ld(ur + j) * r * mgu));
        }
    }
}

template <typename T>
static void rmsnorm_forward(T *y, float *rstd, T *res, const T *x, const T *w, int rows, int d,
                            float eps)
{
    if (rows <= 0 || d <= 0) return;
    rmsnorm_forward_kernel<T><<<norm_rows_grid(rows), NORM_THREADS, 0, cuda_stream()>>>(
        y, rstd, res, x, w, rows, d, eps);
    CUDA_LAUNCHED();
}

template <typename T>
static void rmsnorm_backward(T *du, float *dw, const T *dy, const T *u, const T *w,
                             const float *rstd, int rows, int d)
{
    if (rows <= 0 || d <= 0) return;
    rmsnorm_du_kernel<T><<<norm_rows_grid(rows), NORM_THREADS, 0, cuda_stream()>>>(
        du, dy, u, w, rstd, rows, d);
    CUDA_LAUNCHED();
    norm_params<T>(dw, NULL, dy, u, NULL, rstd, rows, d);
}

/* ---- fp32: the table's entries ---- */
void cuda_layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x, const float *w,
                                const float *b, int T, int d, float eps)
{
    layernorm_forward(y, mean, rstd, x, w, b, T, d, eps);
}

void cuda_layernorm_backward_f32(float *dx, float *dw, float *db, const float *dy, const float *x,
                                 const float *w, const float *mean, const float *rstd, int T, int d)
{
    layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, T, d);
}

void cuda_rmsnorm_forward_f32(float *y, float *rstd, float *res, const float *x, const float *w,
                              int T, int d, float eps)
{
    rmsnorm_forward(y, rstd, res, x, w, T, d, eps);
}

void cuda_rmsnorm_backward_f32(float *du, float *dw, const float *dy, const float *u,
                               const float *w, const float *rstd, int T, int d)
{
    rmsnorm_backward(du, dw, dy, u, w, rstd, T, d);
}

/* ---- bf16: ops_cuda.h ---- */
extern "C" void ops_cuda_layernorm_forward_bf16(ops_bf16 *y, float *mean, float *rstd,
                                                const ops_bf16 *x, const ops_bf16 *w,
                                                const ops_bf16 *b, int T, int d, float eps)
{
    layernorm_forward(BF(y), mean, rstd, CBF(x), CBF(w), CBF(b), T, d, eps);
}

extern "C" void ops_cuda_layernorm_backward_bf16(ops_bf16 *dx, float *dw, float *db,
                                                 const ops_bf16 *dy, const ops_bf16 *x,
                                                 const ops_bf16 *w, const float *mean,
                                                 const float *rstd, int T, int d)
{
    layernorm_backward(BF(dx), dw, db, CBF(dy), CBF(x), CBF(w), mean, rstd, T, d);
}

extern "C" void ops_cuda_rmsnorm_forward_bf16(ops_bf16 *y, float *rstd, ops_bf16 *res,
                                              const ops_bf16 *x, const ops_bf16 *w, int T, int d,
                                              float eps)
{
    rmsnorm_forward(BF(y), rstd, BF(res), CBF(x), CBF(w), T, d, eps);
}

extern "C" void ops_cuda_rmsnorm_backward_bf16(ops_bf16 *du, float *dw, const ops_bf16 *dy,
                                               const ops_bf16 *u, const ops_bf16 *w,
                                               const float *rstd, int T, int d)
{
    rmsnorm_backward(BF(du), dw, CBF(dy), CBF(u), CBF(w), rstd, T, d);
}
