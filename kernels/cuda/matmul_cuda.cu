/* matmul_cuda: C = alpha op(A) op(B) + beta C through cuBLASLt (fp32, and bf16 with fp32
 * accumulation and a fused bias epilogue), and the bias add / bias gradient of a Linear.
 *
 * Design: the table's matrices are row-major and cuBLASLt's column-major, so a row-major C [m, n]
 * is computed as the column-major C^T [n, m] = op(B)^T op(A)^T: the operands swap places and
 * keep their leading dimensions, and no data is ever transposed. The fp32 product uses
 * CUBLAS_COMPUTE_32F (not TF32), so it matches the CPU twin to fp32 rounding. The handle and a
 * 32 MiB workspace are made with the backend's streams (ops_cuda_set_device or the first op) and
 * kept for the process, every product runs on the compute stream with that workspace, so a step
 * allocates nothing and a CUDA graph may capture the products; cuBLASLt picks the algorithm from
 * its heuristic once per shape, and the plan (descriptors + algorithm) is cached. */
#include "kernels_cuda.cuh"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CUBLAS_CHECK(call)                                                              \
    do {                                                                                \
        cublasStatus_t cublas_s_ = (call);                                              \
        if (cublas_s_ != CUBLAS_STATUS_SUCCESS)                                         \
            cuda_fail(__FILE__, __LINE__, #call, cublasLtGetStatusString(cublas_s_));   \
    } while (0)

enum { MM_WORKSPACE = 32 << 20 };

/* the process's cuBLASLt handle and workspace (made once with the streams, never freed: the
 * driver reclaims them) */
static cublasLtHandle_t mm_handle;
static void *mm_workspace;

int cuda_matmul_setup(char *msg, size_t len)
{
    if (mm_handle) return 0;
    cublasStatus_t s = cublasLtCreate(&mm_handle);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(msg, len, "cublasLtCreate failed: %s", cublasLtGetStatusString(s));
        mm_handle = NULL;
        return -1;
    }
    cudaError_t e = cudaMalloc(&mm_workspace, MM_WORKSPACE);
    if (e != cudaSuccess) {
        snprintf(msg, len, "cudaMalloc of the %d MiB cuBLASLt workspace failed: %s",
                 MM_WORKSPACE >> 20, cudaGetErrorString(e));
        cudaGetLastError();  /* not sticky: keep it from being blamed on the next launch */
        cublasLtDestroy(mm_handle);
        mm_handle = NULL;
        return -1;
    }
    return 0;
}

/* 1 when the handle exists (made with the streams; a failure there is already recorded) */
static int mm_ready(void)
{
    cuda_stream();
    if (mm_handle) return 1;
    cuda_fail(__FILE__, __LINE__, "matmul", "no cuBLASLt handle (see the first error)");
    return 0;
}

/* One product in the table's row-major terms; types name A/B, C and the compute mode. */
typedef struct mm_call {
    void *c; const void *a, *b, *bias;
    int m, n, k, trans_a, trans_b, lda, ldb, ldc;
    float alpha, beta;
    cudaDataType_t ab_type, c_type;
    cublasComputeType_t compute;
    cublasLtEpilogue_t epilogue;
} mm_call;

/* cuBLASLt's heuristic assumes 256-byte aligned operands unless told otherwise, and an algorithm
 * it picks may then fault or refuse on a slice (q out of a fused qkv, a row chunk of h): so each
 * operand's real alignment is passed on. */
static uint32_t mm_alignment(const void *ptr)
{
    uintptr_t a = (uintptr_t)ptr;
    uint32_t align = 256;
    while (align > 1 && a % align) align >>= 1;
    return align;
}

/* A plan: the descriptors and the heuristic's algorithm for one shape, made on first use and
 * kept, so the ~1000 products of a training step cost no descriptor set-up or heuristic query
 * after the first step. The key is everything the plan depends on; pointers enter only through
 * their alignment, and alpha, beta and the bias pointer are given at each call. */
typedef struct mm_key {
    int m, n, k, trans_a, trans_b, lda, ldb, ldc;
    int ab_type, c_type, compute, epilogue;
    uint32_t align_a, align_b, align_c;
} mm_key;

typedef struct mm_plan {
    int                    used, ok;  /* ok = 0: no algorithm for this shape (reported once) */
    mm_key                 key;
    cublasLtMatmulDesc_t   op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t   algo;
} mm_plan;

enum { MM_PLANS = 512 };                 /* a step has a few dozen distinct shapes */
static mm_plan mm_plans[MM_PLANS];        /* open addressing; a full table recycles a slot */

static void mm_plan_free(mm_plan *pl)
{
    if (pl->lc) cublasLtMatrixLayoutDestroy(pl->lc);
    if (pl->lb) cublasLtMatrixLayoutDestroy(pl->lb);
    if (pl->la) cublasLtMatrixLayoutDestroy(pl->la);
    if (pl->op) cublasLtMatmulDescDestroy(pl->op);
    memset(pl, 0, sizeof *pl);
}

static void mm_plan_make(mm_plan *pl, const mm_key *key)
{
    memset(pl, 0, sizeof *pl);
    pl->used = 1;
    pl->key = *key;
    cublasLtMatmulPreference_t pref = NULL;
    /* cuBLASLt's A is our B and its B our A (see the file comment) */
    cublasOperation_t op_a = key->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = key->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)key->epilogue;
    cudaDataType_t ab = (cudaDataType_t)key->ab_type, ct = (cudaDataType_t)key->c_type;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&pl->op, (cublasComputeType_t)key->compute, CUDA_R_32F));
    if (!pl->op) return;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof epi));
        /* the bias has C's type (bf16 bias for bf16 C, cuBLASLt's default for non-fp32 C) */
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ct,
                                                    sizeof ct));
    }
    /* stored shapes, column-major: our B [k, n] is n x k; our B^T-stored [n, k] is k x n */
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->la, ab, key->trans_b ? key->k : key->n,
                                            key->trans_b ? key->n : key->k, key->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->lb, ab, key->trans_a ? key->m : key->k,
                                            key->trans_a ? key->k : key->m, key->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->lc, ct, key->n, key->m, key->ldc));
    size_t ws = MM_WORKSPACE;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    if (!pl->la || !pl->lb || !pl->lc || !pref) {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        return;
    }
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                      &key->align_a, sizeof key->align_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                      &key->align_b, sizeof key->align_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                      &key->align_c, sizeof key->align_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                      &key->align_c, sizeof key->align_c));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(mm_handle, pl->op, pl->la, pl->lb, pl->lc, pl->lc,
                                                pref, 1, &heur, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (found > 0) {
        pl->algo = heur.algo;
        pl->ok = 1;
        return;
    }
    char what[160];
    snprintf(what, sizeof what, "m=%d n=%d k=%d trans=%d,%d ld=%d,%d,%d", key->m, key->n, key->k,
             key->trans_a, key->trans_b, key->lda, key->ldb, key->ldc);
    cuda_fail(__FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic (no algorithm)", what);
}

static mm_plan *mm_plan_get(const mm_key *key)
{
    const unsigned char *b = (const unsigned char *)key;
    uint64_t h = 1469598103934665603ull;  /* FNV-1a */
    for (size_t i = 0; i < sizeof *key; i++) h = (h ^ b[i]) * 1099511628211ull;
    size_t start = (size_t)(h % MM_PLANS);
    for (size_t probe = 0; probe < MM_PLANS; probe++) {
        mm_plan *pl = &mm_plans[(start + probe) % MM_PLANS];
        if (!pl->used) {
            mm_plan_make(pl, key);
            return pl;
        }
        if (!memcmp(&pl->key, key, sizeof *key)) return pl;
    }
    mm_plan *pl = &mm_plans[start];  /* full: more shapes than a step has; recycle */
    mm_plan_free(pl);
    mm_plan_make(pl, key);
    return pl;
}

static void mm_run(const mm_call *p)
{
    if (!mm_ready()) return;
    mm_key key;
    memset(&key, 0, sizeof key);  /* the key is hashed and compared as bytes */
    key.m = p->m; key.n = p->n; key.k = p->k;
    key.trans_a = p->trans_a; key.trans_b = p->trans_b;
    key.lda = p->lda; key.ldb = p->ldb; key.ldc = p->ldc;
    key.ab_type = p->ab_type; key.c_type = p->c_type;
    key.compute = p->compute; key.epilogue = p->epilogue;
    key.align_a = mm_alignment(p->b);  /* cuBLASLt's A is our B */
    key.align_b = mm_alignment(p->a);
    key.align_c = mm_alignment(p->c);
    mm_plan *pl = mm_plan_get(&key);
    if (!pl->ok) {  /* every call fails loudly, not just the one that made the plan */
        char what[160];
        snprintf(what, sizeof what, "m=%d n=%d k=%d trans=%d,%d ld=%d,%d,%d", p->m, p->n, p->k,
                 p->trans_a, p->trans_b, p->lda, p->ldb, p->ldc);
        cuda_fail(__FILE__, __LINE__, "matmul (no cuBLASLt plan for this product)", what);
        return;
    }
    if (p->epilogue != CUBLASLT_EPILOGUE_DEFAULT)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &p->bias, sizeof p->bias));
    CUBLAS_CHECK(cublasLtMatmul(mm_handle, pl->op, &p->alpha, p->b, pl->la, p->a, pl->lb, &p->beta,
                                p->c, pl->lc, p->c, pl->lc, &pl->algo, mm_workspace, MM_WORKSPACE,
                                cuda_stream()));
}

/* k = 0: the product is empty and C = beta C (beta = 0 overwrites, NaNs included), which not
 * every cuBLASLt algorithm accepts, so it is done here. */
template <typename T> static __global__ void mm_scale_kernel(T *c, int m, int n, int ldc, float beta)
{
    size_t total = (size_t)m * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        T *e = c + (i / n) * ldc + i % n;
        *e = beta == 0.0f ? (T)0.0f : (T)(beta * (float)*e);
    }
}

template <typename T> static void mm_scale(T *c, int m, int n, int ldc, float beta)
{
    mm_scale_kernel<T><<<cuda_grid((size_t)m * n, 256), 256, 0, cuda_stream()>>>(c, m, n, ldc, beta);
    CUDA_LAUNCHED();
}

void cuda_matmul_f32(float *c, const float *a, const float *b, int m, int n, int k, int trans_a,
                     int trans_b, int lda, int ldb, int ldc, float alpha, float beta)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { mm_scale(c, m, n, ldc, beta); return; }
    mm_call p = {c, a, b, NULL, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta,
                 CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUBLASLT_EPILOGUE_DEFAULT};
    mm_run(&p);
}

extern "C" void ops_cuda_matmul_bf16(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m,
                                     int n, int k, int trans_a, int trans_b, int lda, int ldb,
                                     int ldc, float alpha, float beta, const ops_bf16 *bias,
                                     ops_cuda_epilogue epilogue)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        /* an empty product with a bias epilogue is the bias alone; nothing uses it, so refuse */
        if (epilogue != OPS_CUDA_EPI_NONE)
            cuda_fail(__FILE__, __LINE__, "ops_cuda_matmul_bf16", "k = 0 with an epilogue");
        else
            mm_scale((__nv_bfloat16 *)c, m, n, ldc, beta);
        return;
    }
    mm_call p = {c, a, b, bias, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta,
                 CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F,
                 epilogue == OPS_CUDA_EPI_BIAS ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT};
    mm_run(&p);
}

extern "C" void ops_cuda_matmul_bf16_f32out(float *c, const ops_bf16 *a, const ops_bf16 *b, int m,
                                            int n, int k, int trans_a, int trans_b, int lda,
                                            int ldb, int ldc, float alpha, float beta)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { mm_scale(c, m, n, ldc, beta); return; }
    mm_call p = {c, a, b, NULL, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta,
                 CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUBLASLT_EPILOGUE_DEFAULT};
    mm_run(&p);
}

static __global__ void bias_add_kernel(float *y, const float *bias, int rows, int n, int ldy)
{
    size_t total = (size_t)rows * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
        y[(i / n) * ldy + i % n] += bias[i % n];
}

void cuda_bias_add_f32(float *y, const float *bias, int rows, int n, int ldy)
{
    if (rows <= 0 || n <= 0) return;
    bias_add_kernel<<<cuda_grid((size_t)rows * n, 256), 256, 0, cuda_stream()>>>(y, bias, rows, n, ldy);
    CUDA_LAUNCHED();
}

/* One block per 32 columns; its 32 x 16 threads each sum every 16th row of one column, then the
 * 16 partials of a column are added in row-lane order: one writer per dbias element and a fixed
 * summation order, so the result is the same on every run. */
enum { BB_COLS = 32, BB_LANES = 16 };

static __global__ void bias_backward_kernel(float *dbias, const float *dy, int rows, int n, int ldy)
{
    __shared__ float part[BB_LANES][BB_COLS];
    int j = blockIdx.x * BB_COLS + threadIdx.x;
    float acc = 0;
    if (j < n)
        for (int r = threadIdx.y; r < rows; r += BB_LANES) acc += dy[(size_t)r * ldy + j];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < n) {
        float s = 0;
        for (int l = 0; l < BB_LANES; l++) s += part[l][threadIdx.x];
        dbias[j] += s;
    }
}

void cuda_bias_backward_f32(float *dbias, const float *dy, int rows, int n, int ldy)
{
    if (rows <= 0 || n <= 0) return;
    dim3 block(BB_COLS, BB_LANES);
    bias_backward_kernel<<<(n + BB_COLS - 1) / BB_COLS, block, 0, cuda_stream()>>>(dbias, dy, rows, n, ldy);
    CUDA_LAUNCHED();
}
