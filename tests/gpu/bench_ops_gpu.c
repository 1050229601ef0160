/* bench_ops_gpu: times the CUDA ops at the shapes of one Qwen2-VL-2B training step (B = 8, one
 * 448x448 image = 1024 patches and 256 merged tokens + 512 text tokens per sample), so a GPU
 * session sees at once where a step's time goes and how far each op is from the card's peak.
 * Not a test: it checks nothing but CUDA errors (test_ops_gpu checks the values). Inputs are
 * random; each op runs once to warm up, then ITERS times between two events.
 * Usage: bench_ops_gpu [ITERS]   (exit 77 without a CUDA device) */
#include "adapt_config.h"
#include "gpu_util.h"

#include "ops.h"
#include "ops_cuda.h"

static int iters = 10;

typedef void (*bench_fn)(void *ctx);

/* mean milliseconds per call of fn(ctx) */
static double bench_time(bench_fn fn, void *ctx)
{
    cudaEvent_t e0, e1;
    GU_CUDA(cudaEventCreate(&e0));
    GU_CUDA(cudaEventCreate(&e1));
    cudaStream_t s = (cudaStream_t)ops_cuda_stream();  /* the stream every op runs on */
    fn(ctx);
    GU_CUDA(cudaEventRecord(e0, s));
    for (int i = 0; i < iters; i++) fn(ctx);
    GU_CUDA(cudaEventRecord(e1, s));
    GU_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    GU_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    char msg[600];
    if (ops_cuda_sync(msg, sizeof msg)) {
        fprintf(stderr, "bench_ops_gpu: CUDA error: %s\n", msg);
        exit(1);
    }
    return ms / iters;
}

static void *dev_zeros(size_t bytes)
{
    void *p = NULL;
    GU_CUDA(cudaMalloc(&p, bytes));
    GU_CUDA(cudaMemset(p, 0, bytes));
    return p;
}

/* small random values (a constant pattern is enough for timing; no NaN/inf paths) */
static void *dev_rand_f32(size_t n)
{
    tu_rng r = {n};
    float *h = gu_rand(&r, n, 0.5);
    void *d = gu_putf(h, n);
    free(h);
    return d;
}

static void *dev_rand_bf16(size_t n)
{
    tu_rng r = {n + 1};
    ops_bf16 *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = gu_bf16((float)(0.5 * tu_uniform(&r)));
    void *d = gu_put(h, n * sizeof *h);
    free(h);
    return d;
}

typedef struct mm_ctx { void *c, *a, *b; int m, n, k, bf16; } mm_ctx;

static void run_mm(void *p)
{
    mm_ctx *x = p;
    if (x->bf16)
        ops_cuda_matmul_bf16(x->c, x->a, x->b, x->m, x->n, x->k, 0, 1, x->k, x->k, x->n, 1, 0, NULL,
                             OPS_CUDA_EPI_NONE);
    else
        ops_cuda()->matmul_f32(x->c, x->a, x->b, x->m, x->n, x->k, 0, 1, x->k, x->k, x->n, 1, 0);
}

typedef struct att_ctx { void *q, *k, *v, *o, *dq, *dk, *dv, *dout; float *lse; ops_attn a; int bf16, bwd; } att_ctx;

static void run_att(void *p)
{
    att_ctx *x = p;
    if (x->bf16 && !x->bwd) ops_cuda_attention_forward_bf16(x->o, x->lse, x->q, x->k, x->v, &x->a);
    if (x->bf16 && x->bwd)
        ops_cuda_attention_backward_bf16(x->dq, x->dk, x->dv, x->dout, x->q, x->k, x->v, x->o, x->lse, &x->a);
    if (!x->bf16 && !x->bwd) ops_cuda()->attention_forward_f32(x->o, x->lse, x->q, x->k, x->v, &x->a);
    if (!x->bf16 && x->bwd)
        ops_cuda()->attention_backward_f32(x->dq, x->dk, x->dv, x->dout, x->q, x->k, x->v, x->o,
                                           x->lse, &x->a);
}

typedef struct xent_ctx { float *loss, *dh, *dw, *h, *w, *work; int *labels; int T, d, V; size_t work_len; } xent_ctx;

static void run_xent(void *p)
{
    xent_ctx *x = p;
    ops_cuda()->lmhead_xent_f32(x->loss, x->dh, x->dw, x->h, x->w, x->labels, x->T, x->d, x->V,
                                (float)x->T, x->work, x->work_len);
}

typedef struct norm_ctx { void *y, *res, *x, *w; float *rstd; int T, d, bf16; } norm_ctx;

static void run_norm(void *p)
{
    norm_ctx *x = p;
    if (x->bf16) ops_cuda_rmsnorm_forward_bf16(x->y, x->rstd, x->res, x->x, x->w, x->T, x->d, 1e-6f);
    else ops_cuda()->rmsnorm_forward_f32(x->y, x->rstd, x->res, x->x, x->w, x->T, x->d, 1e-6f);
}

static void bench_matmuls(void)
{
    /* the decoder MLP's gate|up product: [6144 x 1536] x [1536 x 17920] */
    int m = 6144, n = 17920, k = 1536;
    for (int bf = 1; bf >= 0; bf--) {
        size_t es = bf ? 2 : 4;
        mm_ctx x = {dev_zeros((size_t)m * n * es), bf ? dev_rand_bf16((size_t)m * k) : dev_rand_f32((size_t)m * k),
                    bf ? dev_rand_bf16((size_t)n * k) : dev_rand_f32((size_t)n * k), m, n, k, bf};
        double ms = bench_time(run_mm, &x);
        printf("%-34s %-30s %9.3f ms %8.1f TFLOP/s\n", bf ? "matmul_bf16 (cuBLASLt)" : "matmul_f32 (cuBLASLt, no TF32)",
               "6144x17920x1536", ms, 2.0 * m * n * k / (ms * 1e-3) / 1e12);
        cudaFree(x.a); cudaFree(x.b); cudaFree(x.c);
    }
}

static void bench_attention(int nseg, int seglen, int H, int KVH, int D, int causal, const char *what)
{
    int T = nseg * seglen;
    int *cu = malloc((nseg + 1) * sizeof *cu);
    for (int s = 0; s <= nseg; s++) cu[s] = s * seglen;
    int *d_cu = gu_puti(cu, nseg + 1);
    ops_attn a = {d_cu, nseg, T, seglen, H, KVH, D, H * D, KVH * D, KVH * D, H * D,
                  1.0f / sqrtf((float)D), causal};
    /* matmul FLOPs of attention: 2 products of 2 T_seg^2 D per head forward (half when causal),
     * 2.5x that backward (5 products) */
    double fwd_flops = 4.0 * seglen * (double)seglen * D * H * nseg * (causal ? 0.5 : 1.0);
    for (int variant = 2; variant >= 0; variant--) {  /* bf16 tensor cores, bf16 CUDA cores, fp32 */
        int bf = variant > 0;
        ops_cuda_attention_tensor_cores(variant == 2);
        size_t es = bf ? 2 : 4, nq = (size_t)T * H * D, nkv = (size_t)T * KVH * D;
        att_ctx x;
        x.q = bf ? dev_rand_bf16(nq) : dev_rand_f32(nq);
        x.k = bf ? dev_rand_bf16(nkv) : dev_rand_f32(nkv);
        x.v = bf ? dev_rand_bf16(nkv) : dev_rand_f32(nkv);
        x.dout = bf ? dev_rand_bf16(nq) : dev_rand_f32(nq);
        x.o = dev_zeros(nq * es);
        x.dq = dev_zeros(nq * es);
        x.dk = dev_zeros(nkv * es);
        x.dv = dev_zeros(nkv * es);
        x.lse = dev_zeros((size_t)T * H * sizeof(float));
        x.a = a;
        x.bf16 = bf;
        for (int bwd = 0; bwd < 2; bwd++) {
            x.bwd = bwd;
            double ms = bench_time(run_att, &x);
            char name[64], shape[64];
            snprintf(name, sizeof name, "attention_%s_%s", bwd ? "backward" : "forward",
                     variant == 2 ? "bf16 tc" : variant == 1 ? "bf16 simt" : "f32");
            snprintf(shape, sizeof shape, "%s %dx%d H=%d/%d D=%d", what, nseg, seglen, H, KVH, D);
            printf("%-34s %-30s %9.3f ms %8.1f TFLOP/s\n", name, shape, ms,
                   fwd_flops * (bwd ? 2.5 : 1.0) / (ms * 1e-3) / 1e12);
        }
        cudaFree(x.q); cudaFree(x.k); cudaFree(x.v); cudaFree(x.dout); cudaFree(x.o); cudaFree(x.dq);
        cudaFree(x.dk); cudaFree(x.dv); cudaFree(x.lse);
    }
    ops_cuda_attention_tensor_cores(1);
    cudaFree(d_cu);
    free(cu);
}

static void bench_xent(void)
{
    int T = 6144, d = 1536, V = 151936;
    xent_ctx x;
    x.T = T; x.d = d; x.V = V;
    x.work_len = (size_t)1024 * (16384 + 3);
    x.loss = dev_zeros(sizeof(float));
    x.h = dev_rand_f32((size_t)T * d);
    x.w = dev_rand_f32((size_t)V * d);
    x.dh = dev_zeros((size_t)T * d * sizeof(float));
    x.dw = dev_zeros((size_t)V * d * sizeof(float));
    x.work = dev_zeros(x.work_len * sizeof(float));
    int *labels = malloc(T * sizeof *labels);
    for (int t = 0; t < T; t++) labels[t] = (t * 7919) % V;
    x.labels = gu_puti(labels, T);
    double ms = bench_time(run_xent, &x);
    printf("%-34s %-30s %9.3f ms %8.1f TFLOP/s\n", "lmhead_xent_f32 (fwd+bwd)", "T=6144 d=1536 V=151936",
           ms, 3 * 2.0 * T * (double)d * V / (ms * 1e-3) / 1e12);
    cudaFree(x.loss); cudaFree(x.h); cudaFree(x.w); cudaFree(x.dh); cudaFree(x.dw); cudaFree(x.work);
    cudaFree(x.labels);
    free(labels);
}

static void bench_norm(void)
{
    int T = 6144, d = 1536;
    for (int bf = 1; bf >= 0; bf--) {
        size_t n = (size_t)T * d, es = bf ? 2 : 4;
        norm_ctx x = {dev_zeros(n * es), bf ? dev_rand_bf16(n) : dev_rand_f32(n),
                      bf ? dev_rand_bf16(n) : dev_rand_f32(n), bf ? dev_rand_bf16(d) : dev_rand_f32(d),
                      dev_zeros(T * sizeof(float)), T, d, bf};
        double ms = bench_time(run_norm, &x);
        /* bytes: read x and res, write res and y */
        printf("%-34s %-30s %9.3f ms %8.1f GB/s\n", bf ? "rmsnorm_forward_bf16 +res" : "rmsnorm_forward_f32 +res",
               "T=6144 d=1536", ms, 4.0 * n * es / (ms * 1e-3) / 1e9);
        cudaFree(x.y); cudaFree(x.res); cudaFree(x.x); cudaFree(x.w); cudaFree(x.rstd);
    }
}

int main(int argc, char **argv)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "bench_ops_gpu: no CUDA device: skipped\n");
        return 77;
    }
    if (argc > 1) iters = atoi(argv[1]) > 0 ? atoi(argv[1]) : iters;
    struct cudaDeviceProp prop;
    GU_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("bench_ops_gpu: %s, %d iterations per op, Qwen2-VL-2B step shapes (B=8)\n", prop.name, iters);
    bench_matmuls();
    bench_attention(8, 768, 12, 2, 128, 1, "LM");
    bench_attention(8, 1024, 16, 16, 80, 0, "vision");
    bench_norm();
    bench_xent();
    return 0;
}
