/* test_ops_gpu: every CUDA op of the table (and the bf16 products of ops_cuda.h) against its CPU
 * twin on fresh random inputs, with the error bounds below; prints one table row per check. First
 * the table's memory entries and streams are checked exactly (test_memory).
 *
 * The one idea: the CPU table is the reference. Each case makes inputs on the host, runs the CPU
 * op on host copies and the CUDA op on device copies of the same bytes, brings the CUDA result
 * back and compares with gu_err (error relative to the reference tensor's largest value; NaN
 * never passes). Gradient buffers start random, not zero, so the accumulate-into (+=) contract
 * is checked too, and leading dimensions are padded so strided slices are exercised. Exits 77
 * (skipped) where no CUDA device exists, so CI can build it without running it.
 *
 * Bounds (fp32 twins; both sides round in fp32, in different orders):
 *   element-wise, gather/scatter, optimizer          1e-5
 *   row reductions (norms), products, loss, norm     2e-5
 *   attention forward / backward                     5e-5 / 1e-4
 *   bf16 products against fp32 on bf16-rounded inputs: 1e-5 with fp32 output, 1e-2 with bf16
 *   output (one bf16 rounding of each result: 2^-8 of its magnitude).
 * Usage: test_ops_gpu [SEED] */
#include "adapt_config.h"
#include "gpu_util.h"

#include "ops.h"
#include "ops_cuda.h"

static const ops_table *cpu, *gpu;
static tu_rng rng;

enum { B_ELEM = 0, B_RED, B_ATT_F, B_ATT_B, B_BF16_F32, B_BF16 };
static const double bounds[] = {1e-5, 2e-5, 5e-5, 1e-4, 1e-5, 1e-2};

/* The backend's sticky error, checked after each case so a failed launch names its op. */
static void gpu_done(const char *op)
{
    char msg[600];
    if (ops_cuda_sync(msg, sizeof msg)) {
        fprintf(stderr, "%s: CUDA error: %s\n", op, msg);
        gu_record(op, "CUDA error", INFINITY, 0);
        ops_cuda_clear_error();
    }
}

/* compare n floats at device pointer dev with the reference ref */
static void compare(const char *op, const char *shape, const float *dev, const float *ref, size_t n,
                    int bound)
{
    float *got = malloc((n ? n : 1) * sizeof *got);
    gu_get(got, dev, n * sizeof *got);
    gu_record(op, shape, gu_err(got, ref, n, 1e-30), bounds[bound]);
    free(got);
}

/* an exact check: bytes equal or not */
static void exact(const char *what, const char *shape, int same)
{
    gu_record(what, shape, same ? 0.0 : INFINITY, 0);
}

/* The table's memory entries and the streams: zeroed blocks, bit-exact round trips, device
 * copies, an upload from page-locked memory that may be overwritten as soon as it returns, the
 * side stream ordered after compute work and compute after side work, and an impossible
 * allocation that returns NULL with the reason kept for sync. */
static void test_memory(void)
{
    enum { N = 1 << 20 };
    char msg[600];
    float *host = gu_rand(&rng, N, 1), *back = malloc(N * sizeof *back);
    float *d = gpu->mem_alloc(N * sizeof(float)), *d2 = gpu->mem_alloc(N * sizeof(float));
    if (!d || !d2) {
        exact("mem_alloc", "4 MiB", 0);
        return;
    }
    gpu->mem_download(back, d, N * sizeof *back);
    int zero = 1;
    for (size_t i = 0; i < N; i++) zero &= back[i] == 0.0f;
    exact("mem_alloc zeroed", "4 MiB", zero);
    gpu->mem_upload(d, host, N * sizeof *host);
    gpu->mem_copy(d2, d, N * sizeof *host);
    gpu->axpy_f32(d2, 1.0f, d, N);  /* d2 = 2 host, in stream order after the copy */
    gpu->mem_download(back, d2, N * sizeof *back);
    int twice = 1;
    for (size_t i = 0; i < N; i++) twice &= back[i] == 2.0f * host[i];
    exact("mem_upload/copy/download", "4 MiB + axpy", twice);
    /* page-locked source: mem_upload must not return before it has read it */
    float *pinned = NULL;
    if (cudaMallocHost((void **)&pinned, N * sizeof *pinned) == cudaSuccess) {
        for (size_t i = 0; i < N; i++) pinned[i] = 3.0f;
        gpu->mem_upload(d, pinned, N * sizeof *pinned);
        for (size_t i = 0; i < N; i++) pinned[i] = -1.0f;
        gpu->mem_download(back, d, N * sizeof *back);
        int threes = 1;
        for (size_t i = 0; i < N; i++) threes &= back[i] == 3.0f;
        exact("mem_upload pinned source", "4 MiB", threes);
        cudaFreeHost(pinned);
    } else {
        cudaGetLastError();
        exact("cudaMallocHost", "4 MiB", 0);
    }
    /* the side stream after compute work, then compute after the side stream's copy */
    cudaStream_t side = (cudaStream_t)ops_cuda_side_stream();
    exact("streams distinct", "compute, side",
          side != NULL && ops_cuda_stream() != NULL && (void *)side != ops_cuda_stream());
    gpu->fill_f32(d, 5.0f, N);
    ops_cuda_side_wait_compute();
    GU_CUDA(cudaMemcpyAsync(d2, d, N * sizeof(float), cudaMemcpyDeviceToDevice, side));
    ops_cuda_compute_wait_side();
    gpu->axpy_f32(d2, 1.0f, d2, N);  /* 10 only if it ran after the side copy */
    gpu->mem_download(back, d2, N * sizeof *back);
    int tens = 1;
    for (size_t i = 0; i < N; i++) tens &= back[i] == 10.0f;
    exact("side/compute stream waits", "fill, side copy, axpy", tens);
    gpu_done("memory");
    /* out of memory: NULL, and sync reports cudaMalloc; the error is not sticky */
    void *huge = gpu->mem_alloc((size_t)1 << 52);
    int refused = huge == NULL && gpu->sync(msg, sizeof msg) != 0 && strstr(msg, "cudaMalloc");
    exact("mem_alloc 4 PiB refused", "NULL + sync error", refused);
    if (huge) gpu->mem_free(huge);
    ops_cuda_clear_error();
    gpu->fill_f32(d, 1.0f, N);
    exact("after a refused mem_alloc", "ops still run", gpu->sync(msg, sizeof msg) == 0);
    void *empty = gpu->mem_alloc(0);
    exact("mem_alloc(0)", "not NULL", empty != NULL);
    gpu->mem_free(empty);
    gpu->mem_free(NULL);
    gpu->mem_free(d);
    gpu->mem_free(d2);
    gpu_done("memory");
    free(host);
    free(back);
}

static void test_elementwise(void)
{
    size_t n = 100003;
    float *a = gu_rand(&rng, n, 1), *b = gu_rand(&rng, n, 1), *y = gu_rand(&rng, n, 1);
    float *da = gu_putf(a, n), *db = gu_putf(b, n), *dy = gu_putf(y, n);
    cpu->add_f32(y, a, b, n);
    gpu->add_f32(dy, da, db, n);
    gpu_done("add");
    compare("add", "n=100003", dy, y, n, B_ELEM);
    cpu->axpy_f32(y, -0.37f, a, n);
    gpu->axpy_f32(dy, -0.37f, da, n);
    gpu_done("axpy");
    compare("axpy", "n=100003", dy, y, n, B_ELEM);
    cpu->fill_f32(y, 2.5f, n);
    gpu->fill_f32(dy, 2.5f, n);
    gpu_done("fill");
    compare("fill", "n=100003", dy, y, n, B_ELEM);
    cudaFree(da); cudaFree(db); cudaFree(dy);
    free(a); free(b); free(y);
}

static void test_matmul_case(int m, int n, int k, int ta, int tb, float alpha, float beta)
{
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb, nc = (size_t)m * ldc;
    float *a = gu_rand(&rng, na, 1), *b = gu_rand(&rng, nb, 1), *c = gu_rand(&rng, nc, 1);
    /* beta = 0 must overwrite C, NaNs included (only where C is written: the padding past n
     * is compared too, and a NaN there would fail the check on both sides) */
    if (beta == 0)
        for (size_t i = 0; i < nc; i += 7)
            if (i % ldc < (size_t)n) c[i] = NAN;
    float *da = gu_putf(a, na), *db = gu_putf(b, nb), *dc = gu_putf(c, nc);
    cpu->matmul_f32(c, a, b, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta);
    gpu->matmul_f32(dc, da, db, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta);
    gpu_done("matmul");
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%dx%d t%d%d a%.1f b%.0f", m, n, k, ta, tb, alpha, beta);
    compare("matmul", shape, dc, c, nc, B_RED);
    cudaFree(da); cudaFree(db); cudaFree(dc);
    free(a); free(b); free(c);
}

static void test_matmul(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            test_matmul_case(67, 45, 129, ta, tb, 0.7f, 0);
            test_matmul_case(67, 45, 129, ta, tb, 1.0f, 1);
        }
    test_matmul_case(256, 384, 512, 0, 1, 1.0f, 0);  /* a Linear forward at a real-ish size */
    test_matmul_case(9, 13, 0, 0, 0, 1.0f, 0.5f);     /* empty product: C = beta C */
    test_matmul_case(9, 13, 0, 1, 1, 1.0f, 0);        /* empty product, beta 0: zeros */
}

static void test_bias(void)
{
    int rows = 300, n = 97, ld = 100;
    size_t ny = (size_t)rows * ld;
    float *y = gu_rand(&rng, ny, 1), *bias = gu_rand(&rng, n, 1), *db = gu_rand(&rng, n, 1);
    float *dy = gu_putf(y, ny), *dbias = gu_putf(bias, n), *ddb = gu_putf(db, n);
    cpu->bias_add_f32(y, bias, rows, n, ld);
    gpu->bias_add_f32(dy, dbias, rows, n, ld);
    gpu_done("bias_add");
    compare("bias_add", "300x97 ld100", dy, y, ny, B_ELEM);
    cpu->bias_backward_f32(db, y, rows, n, ld);
    gpu->bias_backward_f32(ddb, dy, rows, n, ld);
    gpu_done("bias_backward");
    compare("bias_backward", "300x97 ld100", ddb, db, n, B_RED);
    cudaFree(dy); cudaFree(dbias); cudaFree(ddb);
    free(y); free(bias); free(db);
}

static void test_embedding(void)
{
    int V = 50, d = 200, T = 333;
    int *ids = malloc(T * sizeof *ids);
    for (int t = 0; t < T; t++) ids[t] = tu_int(&rng, V);  /* many repeats: the scatter-add case */
    size_t nw = (size_t)V * d, ny = (size_t)T * d;
    float *w = gu_rand(&rng, nw, 1), *y = gu_rand(&rng, ny, 1), *dw = gu_rand(&rng, nw, 1);
    float *g = gu_rand(&rng, ny, 1);
    float *d_w = gu_putf(w, nw), *d_y = gu_putf(y, ny), *d_dw = gu_putf(dw, nw), *d_g = gu_putf(g, ny);
    int *d_ids = gu_puti(ids, T);
    cpu->embedding_forward_f32(y, w, ids, T, d);
    gpu->embedding_forward_f32(d_y, d_w, d_ids, T, d);
    gpu_done("embedding_forward");
    compare("embedding_forward", "V=50 d=200 T=333", d_y, y, ny, B_ELEM);
    cpu->embedding_backward_f32(dw, g, ids, T, d);
    gpu->embedding_backward_f32(d_dw, d_g, d_ids, T, d);
    gpu_done("embedding_backward");
    compare("embedding_backward", "V=50 d=200 T=333", d_dw, dw, nw, B_ELEM);

    /* image features into n distinct rows */
    int n = 40;
    int *pos = malloc(T * sizeof *pos);
    for (int t = 0; t < T; t++) pos[t] = t;
    for (int i = 0; i < n; i++) {
        int j = i + tu_int(&rng, T - i), tmp = pos[i];
        pos[i] = pos[j];
        pos[j] = tmp;
    }
    size_t ns = (size_t)n * d;
    float *src = gu_rand(&rng, ns, 1), *dsrc = gu_rand(&rng, ns, 1);
    float *d_src = gu_putf(src, ns), *d_dsrc = gu_putf(dsrc, ns);
    int *d_pos = gu_puti(pos, n);
    cpu->scatter_rows_forward_f32(y, src, pos, n, d);
    gpu->scatter_rows_forward_f32(d_y, d_src, d_pos, n, d);
    gpu_done("scatter_rows_forward");
    compare("scatter_rows_forward", "n=40 d=200 T=333", d_y, y, ny, B_ELEM);
    cpu->scatter_rows_backward_f32(dsrc, g, pos, n, d);
    gpu->scatter_rows_backward_f32(d_dsrc, d_g, d_pos, n, d);
    gpu_done("scatter_rows_backward");
    compare("scatter_rows_backward dsrc", "n=40 d=200 T=333", d_dsrc, dsrc, ns, B_ELEM);
    compare("scatter_rows_backward dy", "n=40 d=200 T=333", d_g, g, ny, B_ELEM);
    cudaFree(d_w); cudaFree(d_y); cudaFree(d_dw); cudaFree(d_g); cudaFree(d_ids);
    cudaFree(d_src); cudaFree(d_dsrc); cudaFree(d_pos);
    free(ids); free(w); free(y); free(dw); free(g); free(pos); free(src); free(dsrc);
}

static void test_layernorm(int T, int d)
{
    size_t n = (size_t)T * d;
    float *x = gu_rand(&rng, n, 2), *w = gu_rand(&rng, d, 1), *b = gu_rand(&rng, d, 1);
    for (size_t i = 0; i < n; i++) x[i] += 0.5f;  /* a non-zero mean */
    float *y = gu_rand(&rng, n, 1), *mean = gu_rand(&rng, T, 1), *rstd = gu_rand(&rng, T, 1);
    float *d_x = gu_putf(x, n), *d_w = gu_putf(w, d), *d_b = gu_putf(b, d), *d_y = gu_putf(y, n);
    float *d_mean = gu_putf(mean, T), *d_rstd = gu_putf(rstd, T);
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d d=%d", T, d);
    cpu->layernorm_forward_f32(y, mean, rstd, x, w, b, T, d, 1e-6f);
    gpu->layernorm_forward_f32(d_y, d_mean, d_rstd, d_x, d_w, d_b, T, d, 1e-6f);
    gpu_done("layernorm_forward");
    compare("layernorm_forward y", shape, d_y, y, n, B_RED);
    compare("layernorm_forward mean", shape, d_mean, mean, T, B_RED);
    compare("layernorm_forward rstd", shape, d_rstd, rstd, T, B_RED);
    /* backward from the CPU's saved statistics on both sides, so only backward is compared */
    float *g = gu_rand(&rng, n, 1), *dx = gu_rand(&rng, n, 0.1), *dw = gu_rand(&rng, d, 1);
    float *db = gu_rand(&rng, d, 1);
    float *d_g = gu_putf(g, n), *d_dx = gu_putf(dx, n), *d_dw = gu_putf(dw, d), *d_db = gu_putf(db, d);
    GU_CUDA(cudaMemcpy(d_mean, mean, T * sizeof(float), cudaMemcpyHostToDevice));
    GU_CUDA(cudaMemcpy(d_rstd, rstd, T * sizeof(float), cudaMemcpyHostToDevice));
    cpu->layernorm_backward_f32(dx, dw, db, g, x, w, mean, rstd, T, d);
    gpu->layernorm_backward_f32(d_dx, d_dw, d_db, d_g, d_x, d_w, d_mean, d_rstd, T, d);
    gpu_done("layernorm_backward");
    compare("layernorm_backward dx", shape, d_dx, dx, n, B_RED);
    compare("layernorm_backward dw", shape, d_dw, dw, d, B_RED);
    compare("layernorm_backward db", shape, d_db, db, d, B_RED);
    /* a frozen norm (dw NULL) and a bias-only gradient (dw NULL, db set): dx still accumulates */
    cpu->layernorm_backward_f32(dx, NULL, db, g, x, w, mean, rstd, T, d);
    gpu->layernorm_backward_f32(d_dx, NULL, d_db, d_g, d_x, d_w, d_mean, d_rstd, T, d);
    cpu->layernorm_backward_f32(dx, NULL, NULL, g, x, w, mean, rstd, T, d);
    gpu->layernorm_backward_f32(d_dx, NULL, NULL, d_g, d_x, d_w, d_mean, d_rstd, T, d);
    gpu_done("layernorm_backward");
    compare("layernorm_backward dx, no dw", shape, d_dx, dx, n, B_RED);
    compare("layernorm_backward db, no dw", shape, d_db, db, d, B_RED);
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_b); cudaFree(d_y); cudaFree(d_mean); cudaFree(d_rstd);
    cudaFree(d_g); cudaFree(d_dx); cudaFree(d_dw); cudaFree(d_db);
    free(x); free(w); free(b); free(y); free(mean); free(rstd); free(g); free(dx); free(dw); free(db);
}

static void test_rmsnorm(int T, int d, int fused)
{
    size_t n = (size_t)T * d;
    float *x = gu_rand(&rng, n, 2), *w = gu_rand(&rng, d, 1), *res = gu_rand(&rng, n, 2);
    float *y = gu_rand(&rng, n, 1), *rstd = gu_rand(&rng, T, 1);
    float *d_x = gu_putf(x, n), *d_w = gu_putf(w, d), *d_res = gu_putf(res, n), *d_y = gu_putf(y, n);
    float *d_rstd = gu_putf(rstd, T);
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d d=%d%s", T, d, fused ? " +res" : "");
    cpu->rmsnorm_forward_f32(y, rstd, fused ? res : NULL, x, w, T, d, 1e-6f);
    gpu->rmsnorm_forward_f32(d_y, d_rstd, fused ? d_res : NULL, d_x, d_w, T, d, 1e-6f);
    gpu_done("rmsnorm_forward");
    compare("rmsnorm_forward y", shape, d_y, y, n, B_RED);
    compare("rmsnorm_forward rstd", shape, d_rstd, rstd, T, B_RED);
    if (fused) compare("rmsnorm_forward res", shape, d_res, res, n, B_ELEM);
    const float *u = fused ? res : x;
    float *g = gu_rand(&rng, n, 1), *du = gu_rand(&rng, n, 0.1), *dw = gu_rand(&rng, d, 1);
    float *d_u = gu_putf(u, n), *d_g = gu_putf(g, n), *d_du = gu_putf(du, n), *d_dw = gu_putf(dw, d);
    GU_CUDA(cudaMemcpy(d_rstd, rstd, T * sizeof(float), cudaMemcpyHostToDevice));
    cpu->rmsnorm_backward_f32(du, dw, g, u, w, rstd, T, d);
    gpu->rmsnorm_backward_f32(d_du, d_dw, d_g, d_u, d_w, d_rstd, T, d);
    gpu_done("rmsnorm_backward");
    compare("rmsnorm_backward du", shape, d_du, du, n, B_RED);
    compare("rmsnorm_backward dw", shape, d_dw, dw, d, B_RED);
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_res); cudaFree(d_y); cudaFree(d_rstd);
    cudaFree(d_u); cudaFree(d_g); cudaFree(d_du); cudaFree(d_dw);
    free(x); free(w); free(res); free(y); free(rstd); free(g); free(du); free(dw);
}

static void test_rope(ops_rope_kind kind, int head_dim, float theta, const char *name)
{
    int T = 50, H = 3, ldx = H * head_dim + 5, n_ids = kind == OPS_ROPE_1D ? 1 : kind == OPS_ROPE_VISION_2D ? 2 : 3;
    ops_rope rope = {kind, head_dim, theta, {0, 0, 0}};
    if (kind == OPS_ROPE_MROPE) {
        rope.mrope_section[0] = head_dim / 8;
        rope.mrope_section[1] = rope.mrope_section[2] = (head_dim / 2 - head_dim / 8) / 2;
        rope.mrope_section[0] += head_dim / 2 - rope.mrope_section[0] - 2 * rope.mrope_section[1];
    }
    int *pos = malloc((size_t)n_ids * T * sizeof *pos);
    for (int i = 0; i < n_ids * T; i++) pos[i] = tu_int(&rng, 6000);  /* thousands: rounding */
    size_t n = (size_t)T * ldx;
    float *x = gu_rand(&rng, n, 1);
    float *d_x = gu_putf(x, n);
    int *d_pos = gu_puti(pos, (size_t)n_ids * T);
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d H=%d hd=%d", T, H, head_dim);
    cpu->rope_forward_f32(x, pos, T, H, ldx, &rope);
    gpu->rope_forward_f32(d_x, d_pos, T, H, ldx, &rope);
    gpu_done(name);
    char op[40];
    snprintf(op, sizeof op, "rope_forward %s", name);
    compare(op, shape, d_x, x, n, B_ELEM);
    cpu->rope_backward_f32(x, pos, T, H, ldx, &rope);
    gpu->rope_backward_f32(d_x, d_pos, T, H, ldx, &rope);
    gpu_done(name);
    snprintf(op, sizeof op, "rope_backward %s", name);
    compare(op, shape, d_x, x, n, B_ELEM);
    cudaFree(d_x); cudaFree(d_pos);
    free(pos); free(x);
}

/* One attention case: segments of the given lengths (0 allowed), H query heads over KVH kv
 * heads of head_dim D, rows padded by 8 floats. */
static void test_attention(const int *lens, int nseg, int H, int KVH, int D, int causal)
{
    int *cu = malloc((nseg + 1) * sizeof *cu), maxlen = 0;
    cu[0] = 0;
    for (int s = 0; s < nseg; s++) {
        cu[s + 1] = cu[s] + lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    }
    int T = cu[nseg], ldq = H * D + 8, ldkv = KVH * D + 8;
    size_t nq = (size_t)T * ldq, nkv = (size_t)T * ldkv, nl = (size_t)T * H;
    float *q = gu_rand(&rng, nq, 1), *k = gu_rand(&rng, nkv, 1), *v = gu_rand(&rng, nkv, 1);
    float *o = gu_rand(&rng, nq, 1), *lse = gu_rand(&rng, nl, 1);
    float *d_q = gu_putf(q, nq), *d_k = gu_putf(k, nkv), *d_v = gu_putf(v, nkv);
    float *d_o = gu_putf(o, nq), *d_lse = gu_putf(lse, nl);
    int *d_cu = gu_puti(cu, nseg + 1);
    ops_attn a = {cu, nseg, T, maxlen, H, KVH, D, ldq, ldkv, ldkv, ldq, 1.0f / sqrtf((float)D), causal};
    ops_attn ga = a;
    ga.cu_seqlens = d_cu;
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d seg=%d H=%d/%d D=%d %s", T, nseg, H, KVH, D,
             causal ? "causal" : "bidir");
    cpu->attention_forward_f32(o, lse, q, k, v, &a);
    gpu->attention_forward_f32(d_o, d_lse, d_q, d_k, d_v, &ga);
    gpu_done("attention_forward");
    /* only the written columns of o: the padding keeps its random bytes on both sides */
    compare("attention_forward o", shape, d_o, o, nq, B_ATT_F);
    compare("attention_forward lse", shape, d_lse, lse, nl, B_ATT_F);
    /* gradients start small: the += is checked without hiding the contributions' errors */
    float *dout = gu_rand(&rng, nq, 1), *dq = gu_rand(&rng, nq, 0.05), *dk = gu_rand(&rng, nkv, 0.05);
    float *dv = gu_rand(&rng, nkv, 0.05);
    float *d_dout = gu_putf(dout, nq), *d_dq = gu_putf(dq, nq), *d_dk = gu_putf(dk, nkv);
    float *d_dv = gu_putf(dv, nkv);
    /* backward from the CPU's o and lse on both sides */
    GU_CUDA(cudaMemcpy(d_o, o, nq * sizeof(float), cudaMemcpyHostToDevice));
    GU_CUDA(cudaMemcpy(d_lse, lse, nl * sizeof(float), cudaMemcpyHostToDevice));
    cpu->attention_backward_f32(dq, dk, dv, dout, q, k, v, o, lse, &a);
    gpu->attention_backward_f32(d_dq, d_dk, d_dv, d_dout, d_q, d_k, d_v, d_o, d_lse, &ga);
    gpu_done("attention_backward");
    compare("attention_backward dq", shape, d_dq, dq, nq, B_ATT_B);
    compare("attention_backward dk", shape, d_dk, dk, nkv, B_ATT_B);
    compare("attention_backward dv", shape, d_dv, dv, nkv, B_ATT_B);
    cudaFree(d_q); cudaFree(d_k); cudaFree(d_v); cudaFree(d_o); cudaFree(d_lse); cudaFree(d_cu);
    cudaFree(d_dout); cudaFree(d_dq); cudaFree(d_dk); cudaFree(d_dv);
    free(cu); free(q); free(k); free(v); free(o); free(lse); free(dout); free(dq); free(dk); free(dv);
}

static void test_attentions(void)
{
    static const int lm[] = {70, 1, 0, 33, 130}, vis[] = {64, 100}, small[] = {5, 40, 17};
    test_attention(lm, 5, 4, 2, 128, 1);   /* decoder: causal, grouped-query, Qwen2-VL's head_dim */
    test_attention(vis, 2, 3, 3, 80, 0);   /* vision tower: bidirectional per image, head_dim 80 */
    test_attention(small, 3, 2, 1, 64, 1); /* the 64 and 256 instantiations */
    test_attention(small, 3, 2, 2, 256, 0);
    test_attention(small, 3, 4, 4, 36, 1); /* a head_dim that is no multiple of 32 */
}

static void test_activations(void)
{
    int T = 50, n = 300, ld = 2 * n;
    size_t nin = (size_t)T * ld, ny = (size_t)T * n;
    float *gu = gu_rand(&rng, nin, 6), *y = gu_rand(&rng, ny, 1), *g = gu_rand(&rng, ny, 1);
    float *dgu = gu_rand(&rng, nin, 1);
    float *d_gu = gu_putf(gu, nin), *d_y = gu_putf(y, ny), *d_g = gu_putf(g, ny), *d_dgu = gu_putf(dgu, nin);
    cpu->swiglu_forward_f32(y, gu, gu + n, T, n, ld);
    gpu->swiglu_forward_f32(d_y, d_gu, d_gu + n, T, n, ld);
    gpu_done("swiglu_forward");
    compare("swiglu_forward", "T=50 n=300 fused gate|up", d_y, y, ny, B_ELEM);
    cpu->swiglu_backward_f32(dgu, dgu + n, g, gu, gu + n, T, n, ld);
    gpu->swiglu_backward_f32(d_dgu, d_dgu + n, d_g, d_gu, d_gu + n, T, n, ld);
    gpu_done("swiglu_backward");
    compare("swiglu_backward", "T=50 n=300 fused gate|up", d_dgu, dgu, nin, B_ELEM);

    size_t m = 10007;
    float *x = gu_rand(&rng, m, 6), *ya = gu_rand(&rng, m, 1), *dx = gu_rand(&rng, m, 1);
    float *dya = gu_rand(&rng, m, 1);
    float *d_x = gu_putf(x, m), *d_ya = gu_putf(ya, m), *d_dx = gu_putf(dx, m), *d_dya = gu_putf(dya, m);
    cpu->quickgelu_forward_f32(ya, x, m);
    gpu->quickgelu_forward_f32(d_ya, d_x, m);
    gpu_done("quickgelu_forward");
    compare("quickgelu_forward", "n=10007", d_ya, ya, m, B_ELEM);
    cpu->quickgelu_backward_f32(dx, dya, x, m);
    gpu->quickgelu_backward_f32(d_dx, d_dya, d_x, m);
    gpu_done("quickgelu_backward");
    compare("quickgelu_backward", "n=10007", d_dx, dx, m, B_ELEM);
    cpu->gelu_forward_f32(ya, x, m);
    gpu->gelu_forward_f32(d_ya, d_x, m);
    gpu_done("gelu_forward");
    compare("gelu_forward", "n=10007", d_ya, ya, m, B_ELEM);
    cpu->gelu_backward_f32(dx, dya, x, m);
    gpu->gelu_backward_f32(d_dx, d_dya, d_x, m);
    gpu_done("gelu_backward");
    compare("gelu_backward", "n=10007", d_dx, dx, m, B_ELEM);
    cudaFree(d_gu); cudaFree(d_y); cudaFree(d_g); cudaFree(d_dgu);
    cudaFree(d_x); cudaFree(d_ya); cudaFree(d_dx); cudaFree(d_dya);
    free(gu); free(y); free(g); free(dgu); free(x); free(ya); free(dx); free(dya);
}

/* work_len picks the regime: whole vocabulary in one tile, or several tiles and row chunks */
static void test_lmhead(int T, int d, int V, size_t gpu_work, int backward)
{
    int *labels = malloc(T * sizeof *labels), counted = 0;
    for (int t = 0; t < T; t++) {
        labels[t] = tu_int(&rng, 10) < 3 ? OPS_LABEL_IGNORE : tu_int(&rng, V);
        counted += labels[t] != OPS_LABEL_IGNORE;
    }
    size_t nh = (size_t)T * d, nw = (size_t)V * d;
    /* gradients start small but not zero: the += is checked, and the loss's contributions
     * (about 1 / normaliser) still set the scale the error is measured against */
    float *h = gu_rand(&rng, nh, 1), *w = gu_rand(&rng, nw, 0.5), *dh = gu_rand(&rng, nh, 1e-3);
    float *dw = gu_rand(&rng, nw, 1e-3), loss = -1;
    size_t cpu_work = (size_t)64 * (2 * d + 3 + V);
    float *work = malloc(cpu_work * sizeof *work);
    float *d_h = gu_putf(h, nh), *d_w = gu_putf(w, nw), *d_dh = gu_putf(dh, nh), *d_dw = gu_putf(dw, nw);
    float *d_loss = gu_putf(&loss, 1), *d_work = NULL;
    GU_CUDA(cudaMalloc((void **)&d_work, gpu_work * sizeof(float)));
    int *d_labels = gu_puti(labels, T);
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d d=%d V=%d work=%zu%s", T, d, V, gpu_work, backward ? "" : " fwd");
    cpu->lmhead_xent_f32(&loss, backward ? dh : NULL, backward ? dw : NULL, h, w, labels, T, d, V,
                         (float)counted, work, cpu_work);
    gpu->lmhead_xent_f32(d_loss, backward ? d_dh : NULL, backward ? d_dw : NULL, d_h, d_w, d_labels,
                         T, d, V, (float)counted, d_work, gpu_work);
    gpu_done("lmhead_xent");
    compare("lmhead_xent loss", shape, d_loss, &loss, 1, B_RED);
    if (backward) {
        compare("lmhead_xent dh", shape, d_dh, dh, nh, B_RED);
        compare("lmhead_xent dw", shape, d_dw, dw, nw, B_RED);
    }
    /* normaliser 0: loss 0, gradients untouched */
    cpu->lmhead_xent_f32(&loss, dh, dw, h, w, labels, T, d, V, 0, work, cpu_work);
    gpu->lmhead_xent_f32(d_loss, d_dh, d_dw, d_h, d_w, d_labels, T, d, V, 0, d_work, gpu_work);
    gpu_done("lmhead_xent");
    compare("lmhead_xent normaliser=0", shape, d_loss, &loss, 1, B_RED);
    if (backward) compare("lmhead_xent normaliser=0 dw", shape, d_dw, dw, nw, B_RED);
    cudaFree(d_h); cudaFree(d_w); cudaFree(d_dh); cudaFree(d_dw); cudaFree(d_loss); cudaFree(d_work);
    cudaFree(d_labels);
    free(labels); free(h); free(w); free(dh); free(dw); free(work);
}

static void test_optim(void)
{
    enum { COUNT = 150 };  /* more than one launch's worth of tensors */
    float *host[COUNT], *dev[COUNT];
    size_t lens[COUNT];
    for (int i = 0; i < COUNT; i++) {
        lens[i] = 1 + (size_t)tu_int(&rng, 5000);
        host[i] = gu_rand(&rng, lens[i], 0.01 * (1 + i % 7));
        dev[i] = gu_putf(host[i], lens[i]);
    }
    float norm = 0, scale = 0, zero2[2] = {0, 0};
    float *d_ns = gu_putf(zero2, 2);
    const float max_norms[] = {0.5f, 1e6f, 0.0f};
    for (int c = 0; c < 3; c++) {
        cpu->grad_norm_f32(&norm, &scale, (const float *const *)host, lens, COUNT, max_norms[c]);
        gpu->grad_norm_f32(d_ns, d_ns + 1, (const float *const *)dev, lens, COUNT, max_norms[c]);
        gpu_done("grad_norm");
        char shape[64];
        snprintf(shape, sizeof shape, "%d tensors max_norm=%g", COUNT, max_norms[c]);
        compare("grad_norm norm", shape, d_ns, &norm, 1, B_RED);
        compare("grad_norm scale", shape, d_ns + 1, &scale, 1, B_RED);
    }
    cpu->grad_norm_f32(&norm, &scale, NULL, NULL, 0, 1.0f);
    gpu->grad_norm_f32(d_ns, d_ns + 1, NULL, NULL, 0, 1.0f);
    gpu_done("grad_norm");
    compare("grad_norm norm", "0 tensors", d_ns, &norm, 1, B_RED);
    compare("grad_norm scale", "0 tensors", d_ns + 1, &scale, 1, B_RED);

    size_t n = 10007;
    float *p = gu_rand(&rng, n, 1), *m = gu_rand(&rng, n, 0.01), *v = gu_rand(&rng, n, 1e-4);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    float *g = gu_rand(&rng, n, 0.1), gs = 0.37f;
    float *d_p = gu_putf(p, n), *d_m = gu_putf(m, n), *d_v = gu_putf(v, n), *d_g = gu_putf(g, n);
    float *d_gs = gu_putf(&gs, 1);
    for (int step = 1; step <= 3; step++) {
        const float *cs = step == 2 ? NULL : &gs, *gsd = step == 2 ? NULL : d_gs;
        cpu->adamw_step_f32(p, m, v, g, cs, n, 1e-3, 0.9, 0.999, 1e-8, step == 3 ? 0.0 : 0.1, step);
        gpu->adamw_step_f32(d_p, d_m, d_v, d_g, gsd, n, 1e-3, 0.9, 0.999, 1e-8, step == 3 ? 0.0 : 0.1,
                            step);
    }
    gpu_done("adamw_step");
    compare("adamw_step p", "n=10007 3 steps", d_p, p, n, B_ELEM);
    compare("adamw_step m", "n=10007 3 steps", d_m, m, n, B_ELEM);
    compare("adamw_step v", "n=10007 3 steps", d_v, v, n, B_ELEM);
    for (int i = 0; i < COUNT; i++) { cudaFree(dev[i]); free(host[i]); }
    cudaFree(d_ns); cudaFree(d_p); cudaFree(d_m); cudaFree(d_v); cudaFree(d_g); cudaFree(d_gs);
    free(p); free(m); free(v); free(g);
}

/* bf16 products: inputs rounded to bf16 on the host; the reference is the CPU fp32 product of
 * those rounded values (then the bias), so only accumulation order and the output rounding
 * differ. */
static void test_matmul_bf16(int m, int n, int k, int ta, int tb, int bias)
{
    int lda = (ta ? m : k) + 8, ldb = (tb ? k : n) + 8, ldc = n + 8;
    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb, nc = (size_t)m * ldc;
    float *a = gu_rand(&rng, na, 1), *b = gu_rand(&rng, nb, 1), *bs = gu_rand(&rng, n, 1);
    float *c = gu_rand(&rng, nc, 1);
    ops_bf16 *a16 = malloc(na * 2), *b16 = malloc(nb * 2), *bs16 = malloc(n * 2), *c16 = malloc(nc * 2);
    for (size_t i = 0; i < na; i++) a[i] = gu_f32(a16[i] = gu_bf16(a[i]));
    for (size_t i = 0; i < nb; i++) b[i] = gu_f32(b16[i] = gu_bf16(b[i]));
    for (int i = 0; i < n; i++) bs[i] = gu_f32(bs16[i] = gu_bf16(bs[i]));
    for (size_t i = 0; i < nc; i++) c[i] = gu_f32(c16[i] = gu_bf16(c[i]));
    ops_bf16 *d_a = gu_put(a16, na * 2), *d_b = gu_put(b16, nb * 2), *d_bs = gu_put(bs16, (size_t)n * 2);
    ops_bf16 *d_c = gu_put(c16, nc * 2);
    float *d_c32 = gu_putf(c, nc);
    float *ref = gu_copy(c, nc), *ref32 = gu_copy(c, nc);
    cpu->matmul_f32(ref, a, b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, 0.0f);
    if (bias) cpu->bias_add_f32(ref, bs, m, n, ldc);
    ops_cuda_matmul_bf16(d_c, d_a, d_b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, 0.0f, d_bs,
                         bias ? OPS_CUDA_EPI_BIAS : OPS_CUDA_EPI_NONE);
    gpu_done("matmul_bf16");
    for (size_t i = 0; i < nc; i++)  /* the padding is not written: keep it equal */
        if (i % ldc >= (size_t)n) ref[i] = c[i];
    float *got = malloc(nc * sizeof *got);
    gu_get(c16, d_c, nc * 2);
    for (size_t i = 0; i < nc; i++) got[i] = gu_f32(c16[i]);
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%dx%d t%d%d%s", m, n, k, ta, tb, bias ? " +bias" : "");
    gu_record("matmul_bf16", shape, gu_err(got, ref, nc, 1e-30), bounds[B_BF16]);
    /* fp32 output accumulating (beta 1): the weight-gradient form */
    cpu->matmul_f32(ref32, a, b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, 1.0f);
    ops_cuda_matmul_bf16_f32out(d_c32, d_a, d_b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, 1.0f);
    gpu_done("matmul_bf16_f32out");
    compare("matmul_bf16_f32out", shape, d_c32, ref32, nc, B_BF16_F32);
    cudaFree(d_a); cudaFree(d_b); cudaFree(d_bs); cudaFree(d_c); cudaFree(d_c32);
    free(a); free(b); free(bs); free(c); free(a16); free(b16); free(bs16); free(c16);
    free(ref); free(ref32); free(got);
}

/* ---- bf16 storage variants: inputs rounded to bf16 on the host, the CPU fp32 op run on those
 * rounded values is the reference; bf16 outputs are compared at B_BF16 (their own rounding),
 * the outputs that stay fp32 (statistics, lse, parameter gradients) at the fp32 bounds ---- */
static void bf_round(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = gu_f32(gu_bf16(x[i]));
}

static float *bf_rand(size_t n, double scale)
{
    float *x = gu_rand(&rng, n, scale);
    bf_round(x, n);
    return x;
}

/* a device bf16 copy of x (already bf16-exact) */
static ops_bf16 *bf_put(const float *x, size_t n)
{
    ops_bf16 *h = malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = gu_bf16(x[i]);
    ops_bf16 *d = gu_put(h, n * sizeof *h);
    free(h);
    return d;
}

static void bf_compare(const char *op, const char *shape, const ops_bf16 *dev, const float *ref, size_t n)
{
    ops_bf16 *h = malloc((n ? n : 1) * sizeof *h);
    float *got = malloc((n ? n : 1) * sizeof *got);
    gu_get(h, dev, n * sizeof *h);
    for (size_t i = 0; i < n; i++) got[i] = gu_f32(h[i]);
    gu_record(op, shape, gu_err(got, ref, n, 1e-30), bounds[B_BF16]);
    free(h);
    free(got);
}

static void test_bf16_convert(void)
{
    size_t n = 5001;
    float *x = gu_rand(&rng, n, 100), *back = malloc(n * sizeof *back), *ref = gu_copy(x, n);
    bf_round(ref, n);
    float *d_x = gu_putf(x, n), *d_back = gu_putf(x, n);
    ops_bf16 *d_h = gu_put(NULL, n * sizeof(ops_bf16));
    ops_cuda_f32_to_bf16(d_h, d_x, n);
    ops_cuda_bf16_to_f32(d_back, d_h, n);
    gpu_done("f32_to_bf16");
    gu_get(back, d_back, n * sizeof *back);
    /* round to nearest even, bit for bit */
    gu_record("f32_to_bf16 / bf16_to_f32", "n=5001", memcmp(back, ref, n * sizeof *ref) ? 1.0 : 0.0, 0);
    cudaFree(d_x); cudaFree(d_back); cudaFree(d_h);
    free(x); free(back); free(ref);
}

static void test_bf16_activations(void)
{
    int T = 40, n = 200, ld = 2 * n;
    size_t nin = (size_t)T * ld, ny = (size_t)T * n;
    float *gu = bf_rand(nin, 6), *y = bf_rand(ny, 1), *g = bf_rand(ny, 1), *dgu = bf_rand(nin, 1);
    ops_bf16 *d_gu = bf_put(gu, nin), *d_y = bf_put(y, ny), *d_g = bf_put(g, ny), *d_dgu = bf_put(dgu, nin);
    cpu->swiglu_forward_f32(y, gu, gu + n, T, n, ld);
    ops_cuda_swiglu_forward_bf16(d_y, d_gu, d_gu + n, T, n, ld);
    gpu_done("swiglu_forward_bf16");
    bf_compare("swiglu_forward_bf16", "T=40 n=200 fused", d_y, y, ny);
    cpu->swiglu_backward_f32(dgu, dgu + n, g, gu, gu + n, T, n, ld);
    ops_cuda_swiglu_backward_bf16(d_dgu, d_dgu + n, d_g, d_gu, d_gu + n, T, n, ld);
    gpu_done("swiglu_backward_bf16");
    bf_compare("swiglu_backward_bf16", "T=40 n=200 fused", d_dgu, dgu, nin);
    size_t m = 4099;
    float *x = bf_rand(m, 6), *ya = bf_rand(m, 1), *dx = bf_rand(m, 1), *dya = bf_rand(m, 1);
    ops_bf16 *d_x = bf_put(x, m), *d_ya = bf_put(ya, m), *d_dx = bf_put(dx, m), *d_dya = bf_put(dya, m);
    float *dx2 = gu_copy(dx, m);
    ops_bf16 *d_dx2 = bf_put(dx, m);
    cpu->quickgelu_forward_f32(ya, x, m);
    ops_cuda_quickgelu_forward_bf16(d_ya, d_x, m);
    gpu_done("quickgelu_forward_bf16");
    bf_compare("quickgelu_forward_bf16", "n=4099", d_ya, ya, m);
    cpu->quickgelu_backward_f32(dx, dya, x, m);
    ops_cuda_quickgelu_backward_bf16(d_dx, d_dya, d_x, m);
    gpu_done("quickgelu_backward_bf16");
    bf_compare("quickgelu_backward_bf16", "n=4099", d_dx, dx, m);
    cpu->gelu_forward_f32(ya, x, m);
    ops_cuda_gelu_forward_bf16(d_ya, d_x, m);
    gpu_done("gelu_forward_bf16");
    bf_compare("gelu_forward_bf16", "n=4099", d_ya, ya, m);
    cpu->gelu_backward_f32(dx2, dya, x, m);
    ops_cuda_gelu_backward_bf16(d_dx2, d_dya, d_x, m);
    gpu_done("gelu_backward_bf16");
    bf_compare("gelu_backward_bf16", "n=4099", d_dx2, dx2, m);
    cudaFree(d_gu); cudaFree(d_y); cudaFree(d_g); cudaFree(d_dgu); cudaFree(d_x); cudaFree(d_ya);
    cudaFree(d_dx); cudaFree(d_dya); cudaFree(d_dx2);
    free(gu); free(y); free(g); free(dgu); free(x); free(ya); free(dx); free(dya); free(dx2);
}

static void test_bf16_norms(int T, int d)
{
    size_t n = (size_t)T * d;
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d d=%d", T, d);
    float *x = bf_rand(n, 2), *w = bf_rand(d, 1), *b = bf_rand(d, 1), *y = bf_rand(n, 1);
    float *mean = gu_rand(&rng, T, 1), *rstd = gu_rand(&rng, T, 1);
    ops_bf16 *d_x = bf_put(x, n), *d_w = bf_put(w, d), *d_b = bf_put(b, d), *d_y = bf_put(y, n);
    float *d_mean = gu_putf(mean, T), *d_rstd = gu_putf(rstd, T);
    cpu->layernorm_forward_f32(y, mean, rstd, x, w, b, T, d, 1e-6f);
    ops_cuda_layernorm_forward_bf16(d_y, d_mean, d_rstd, d_x, d_w, d_b, T, d, 1e-6f);
    gpu_done("layernorm_forward_bf16");
    bf_compare("layernorm_forward_bf16 y", shape, d_y, y, n);
    compare("layernorm_forward_bf16 rstd", shape, d_rstd, rstd, T, B_RED);
    float *g = bf_rand(n, 1), *dx = bf_rand(n, 1), *dw = gu_rand(&rng, d, 1), *db = gu_rand(&rng, d, 1);
    ops_bf16 *d_g = bf_put(g, n), *d_dx = bf_put(dx, n);
    float *d_dw = gu_putf(dw, d), *d_db = gu_putf(db, d);
    GU_CUDA(cudaMemcpy(d_mean, mean, T * sizeof(float), cudaMemcpyHostToDevice));
    GU_CUDA(cudaMemcpy(d_rstd, rstd, T * sizeof(float), cudaMemcpyHostToDevice));
    cpu->layernorm_backward_f32(dx, dw, db, g, x, w, mean, rstd, T, d);
    ops_cuda_layernorm_backward_bf16(d_dx, d_dw, d_db, d_g, d_x, d_w, d_mean, d_rstd, T, d);
    gpu_done("layernorm_backward_bf16");
    bf_compare("layernorm_backward_bf16 dx", shape, d_dx, dx, n);
    compare("layernorm_backward_bf16 dw", shape, d_dw, dw, d, B_RED);
    compare("layernorm_backward_bf16 db", shape, d_db, db, d, B_RED);

    /* RMSNorm with the fused residual: the reference rounds the new residual to bf16 before
     * normalising, as the bf16 op is documented to */
    float *res = bf_rand(n, 2);
    ops_bf16 *d_res = bf_put(res, n);
    for (size_t i = 0; i < n; i++) res[i] = gu_f32(gu_bf16(res[i] + x[i]));
    cpu->rmsnorm_forward_f32(y, rstd, NULL, res, w, T, d, 1e-6f);
    ops_cuda_rmsnorm_forward_bf16(d_y, d_rstd, d_res, d_x, d_w, T, d, 1e-6f);
    gpu_done("rmsnorm_forward_bf16");
    bf_compare("rmsnorm_forward_bf16 y", shape, d_y, y, n);
    bf_compare("rmsnorm_forward_bf16 res", shape, d_res, res, n);
    compare("rmsnorm_forward_bf16 rstd", shape, d_rstd, rstd, T, B_RED);
    /* backward from equal starting points: the CPU's rstd, fresh du, the CPU's dw */
    GU_CUDA(cudaMemcpy(d_rstd, rstd, T * sizeof(float), cudaMemcpyHostToDevice));
    GU_CUDA(cudaMemcpy(d_dw, dw, d * sizeof(float), cudaMemcpyHostToDevice));
    float *du = bf_rand(n, 1);
    ops_bf16 *d_u = bf_put(res, n), *d_du = bf_put(du, n);
    cpu->rmsnorm_backward_f32(du, dw, g, res, w, rstd, T, d);
    ops_cuda_rmsnorm_backward_bf16(d_du, d_dw, d_g, d_u, d_w, d_rstd, T, d);
    gpu_done("rmsnorm_backward_bf16");
    bf_compare("rmsnorm_backward_bf16 du", shape, d_du, du, n);
    compare("rmsnorm_backward_bf16 dw", shape, d_dw, dw, d, B_RED);
    cudaFree(d_du);
    free(du);
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_b); cudaFree(d_y); cudaFree(d_mean); cudaFree(d_rstd);
    cudaFree(d_g); cudaFree(d_dx); cudaFree(d_dw); cudaFree(d_db); cudaFree(d_res); cudaFree(d_u);
    free(x); free(w); free(b); free(y); free(mean); free(rstd); free(g); free(dx); free(dw);
    free(db); free(res);
}

static void test_bf16_rope_embedding(void)
{
    int T = 30, H = 2, hd = 128, ldx = H * hd + 8;
    ops_rope rope = {OPS_ROPE_MROPE, hd, 1e6f, {16, 24, 24}};
    int *pos = malloc(3 * T * sizeof *pos);
    for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&rng, 3000);
    size_t n = (size_t)T * ldx;
    float *x = bf_rand(n, 1);
    ops_bf16 *d_x = bf_put(x, n);
    int *d_pos = gu_puti(pos, 3 * T);
    cpu->rope_forward_f32(x, pos, T, H, ldx, &rope);
    ops_cuda_rope_forward_bf16(d_x, d_pos, T, H, ldx, &rope);
    gpu_done("rope_forward_bf16");
    bf_compare("rope_forward_bf16 mrope", "T=30 H=2 hd=128", d_x, x, n);
    bf_round(x, n);  /* the bf16 op's input to backward is its rounded output */
    cpu->rope_backward_f32(x, pos, T, H, ldx, &rope);
    ops_cuda_rope_backward_bf16(d_x, d_pos, T, H, ldx, &rope);
    gpu_done("rope_backward_bf16");
    bf_compare("rope_backward_bf16 mrope", "T=30 H=2 hd=128", d_x, x, n);

    int V = 40, d = 96, Tt = 200;
    int *ids = malloc(Tt * sizeof *ids);
    for (int t = 0; t < Tt; t++) ids[t] = tu_int(&rng, V);
    size_t nw = (size_t)V * d, ny = (size_t)Tt * d;
    float *w = bf_rand(nw, 1), *y = bf_rand(ny, 1), *g = bf_rand(ny, 1), *dw = gu_rand(&rng, nw, 1);
    ops_bf16 *d_w = bf_put(w, nw), *d_y = bf_put(y, ny), *d_g = bf_put(g, ny);
    float *d_dw = gu_putf(dw, nw);
    int *d_ids = gu_puti(ids, Tt);
    cpu->embedding_forward_f32(y, w, ids, Tt, d);
    ops_cuda_embedding_forward_bf16(d_y, d_w, d_ids, Tt, d);
    gpu_done("embedding_forward_bf16");
    bf_compare("embedding_forward_bf16", "V=40 d=96 T=200", d_y, y, ny);
    cpu->embedding_backward_f32(dw, g, ids, Tt, d);
    ops_cuda_embedding_backward_bf16(d_dw, d_g, d_ids, Tt, d);
    gpu_done("embedding_backward_bf16");
    compare("embedding_backward_bf16 dw", "V=40 d=96 T=200", d_dw, dw, nw, B_ELEM);
    int ns = 25, *sp = malloc(ns * sizeof *sp);
    for (int i = 0; i < ns; i++) sp[i] = 3 + 7 * i;  /* distinct rows < Tt */
    float *src = bf_rand((size_t)ns * d, 1), *dsrc = bf_rand((size_t)ns * d, 1);
    ops_bf16 *d_src = bf_put(src, (size_t)ns * d), *d_dsrc = bf_put(dsrc, (size_t)ns * d);
    int *d_sp = gu_puti(sp, ns);
    cpu->scatter_rows_forward_f32(y, src, sp, ns, d);
    ops_cuda_scatter_rows_forward_bf16(d_y, d_src, d_sp, ns, d);
    gpu_done("scatter_rows_forward_bf16");
    bf_compare("scatter_rows_forward_bf16", "n=25 d=96", d_y, y, ny);
    cpu->scatter_rows_backward_f32(dsrc, g, sp, ns, d);
    ops_cuda_scatter_rows_backward_bf16(d_dsrc, d_g, d_sp, ns, d);
    gpu_done("scatter_rows_backward_bf16");
    bf_compare("scatter_rows_backward_bf16 dsrc", "n=25 d=96", d_dsrc, dsrc, (size_t)ns * d);
    bf_compare("scatter_rows_backward_bf16 dy", "n=25 d=96", d_g, g, ny);
    cudaFree(d_x); cudaFree(d_pos); cudaFree(d_w); cudaFree(d_y); cudaFree(d_g); cudaFree(d_dw);
    cudaFree(d_ids); cudaFree(d_src); cudaFree(d_dsrc); cudaFree(d_sp);
    free(pos); free(x); free(ids); free(w); free(y); free(g); free(dw); free(sp); free(src); free(dsrc);
}

/* tc: 1 runs the tensor-core kernels where the shape allows, 0 forces the CUDA-core ones */
static void test_bf16_attention(const int *lens, int nseg, int H, int KVH, int D, int causal, int tc)
{
    ops_cuda_attention_tensor_cores(tc);
    const char *path = tc && D % 16 == 0 && D <= 128 ? "tc" : "simt";
    int *cu = malloc((nseg + 1) * sizeof *cu), maxlen = 0;
    cu[0] = 0;
    for (int s = 0; s < nseg; s++) {
        cu[s + 1] = cu[s] + lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    }
    int T = cu[nseg], ldq = H * D, ldkv = KVH * D;
    size_t nq = (size_t)T * ldq, nkv = (size_t)T * ldkv, nl = (size_t)T * H;
    float *q = bf_rand(nq, 1), *k = bf_rand(nkv, 1), *v = bf_rand(nkv, 1), *o = bf_rand(nq, 1);
    float *lse = gu_rand(&rng, nl, 1);
    ops_bf16 *d_q = bf_put(q, nq), *d_k = bf_put(k, nkv), *d_v = bf_put(v, nkv), *d_o = bf_put(o, nq);
    float *d_lse = gu_putf(lse, nl);
    int *d_cu = gu_puti(cu, nseg + 1);
    ops_attn a = {cu, nseg, T, maxlen, H, KVH, D, ldq, ldkv, ldkv, ldq, 1.0f / sqrtf((float)D), causal};
    ops_attn ga = a;
    ga.cu_seqlens = d_cu;
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d seg=%d H=%d/%d D=%d %s %s", T, nseg, H, KVH, D,
             causal ? "causal" : "bidir", path);
    cpu->attention_forward_f32(o, lse, q, k, v, &a);
    ops_cuda_attention_forward_bf16(d_o, d_lse, d_q, d_k, d_v, &ga);
    gpu_done("attention_forward_bf16");
    bf_compare("attention_forward_bf16 o", shape, d_o, o, nq);
    compare("attention_forward_bf16 lse", shape, d_lse, lse, nl, B_ATT_F);
    /* backward from the bf16-rounded CPU output on both sides */
    bf_round(o, nq);
    float *dout = bf_rand(nq, 1), *dq = bf_rand(nq, 0.05), *dk = bf_rand(nkv, 0.05), *dv = bf_rand(nkv, 0.05);
    ops_bf16 *d_dout = bf_put(dout, nq), *d_dq = bf_put(dq, nq), *d_dk = bf_put(dk, nkv);
    ops_bf16 *d_dv = bf_put(dv, nkv), *d_o2 = bf_put(o, nq);
    GU_CUDA(cudaMemcpy(d_lse, lse, nl * sizeof(float), cudaMemcpyHostToDevice));
    cpu->attention_backward_f32(dq, dk, dv, dout, q, k, v, o, lse, &a);
    ops_cuda_attention_backward_bf16(d_dq, d_dk, d_dv, d_dout, d_q, d_k, d_v, d_o2, d_lse, &ga);
    gpu_done("attention_backward_bf16");
    bf_compare("attention_backward_bf16 dq", shape, d_dq, dq, nq);
    bf_compare("attention_backward_bf16 dk", shape, d_dk, dk, nkv);
    bf_compare("attention_backward_bf16 dv", shape, d_dv, dv, nkv);
    cudaFree(d_q); cudaFree(d_k); cudaFree(d_v); cudaFree(d_o); cudaFree(d_lse); cudaFree(d_cu);
    cudaFree(d_dout); cudaFree(d_dq); cudaFree(d_dk); cudaFree(d_dv); cudaFree(d_o2);
    ops_cuda_attention_tensor_cores(1);
    free(cu); free(q); free(k); free(v); free(o); free(lse); free(dout); free(dq); free(dk); free(dv);
}

/* bf16 LM head: the reference is the fp32 op on the rounded h, w; loss and logits are fp32 on
 * both sides, dh is rounded once per row chunk, dw is fed by the bf16-rounded gradient tile */
static void test_lmhead_bf16(int T, int d, int V, size_t gpu_work)
{
    int *labels = malloc(T * sizeof *labels), counted = 0;
    for (int t = 0; t < T; t++) {
        labels[t] = tu_int(&rng, 10) < 3 ? OPS_LABEL_IGNORE : tu_int(&rng, V);
        counted += labels[t] != OPS_LABEL_IGNORE;
    }
    size_t nh = (size_t)T * d, nw = (size_t)V * d, cpu_work = (size_t)64 * (2 * d + 3 + V);
    float *h = bf_rand(nh, 1), *w = bf_rand(nw, 0.5), *dh = bf_rand(nh, 1e-3), *dw = gu_rand(&rng, nw, 1e-3);
    float *work = malloc(cpu_work * sizeof *work), loss = -1;
    ops_bf16 *d_h = bf_put(h, nh), *d_w = bf_put(w, nw), *d_dh = bf_put(dh, nh);
    float *d_dw = gu_putf(dw, nw), *d_loss = gu_putf(&loss, 1), *d_work = NULL;
    GU_CUDA(cudaMalloc((void **)&d_work, gpu_work * sizeof(float)));
    int *d_labels = gu_puti(labels, T);
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d d=%d V=%d work=%zu", T, d, V, gpu_work);
    cpu->lmhead_xent_f32(&loss, dh, dw, h, w, labels, T, d, V, (float)counted, work, cpu_work);
    ops_cuda_lmhead_xent_bf16(d_loss, d_dh, d_dw, d_h, d_w, d_labels, T, d, V, (float)counted,
                              d_work, gpu_work);
    gpu_done("lmhead_xent_bf16");
    compare("lmhead_xent_bf16 loss", shape, d_loss, &loss, 1, B_RED);
    bf_compare("lmhead_xent_bf16 dh", shape, d_dh, dh, nh);
    float *got = malloc(nw * sizeof *got);
    gu_get(got, d_dw, nw * sizeof *got);
    gu_record("lmhead_xent_bf16 dw", shape, gu_err(got, dw, nw, 1e-30), bounds[B_BF16]);
    cudaFree(d_h); cudaFree(d_w); cudaFree(d_dh); cudaFree(d_dw); cudaFree(d_loss); cudaFree(d_work);
    cudaFree(d_labels);
    free(labels); free(h); free(w); free(dh); free(dw); free(work); free(got);
}

/* multi-tensor AdamW against the CPU op per tensor; weight decay differs per tensor, half the
 * tensors also write a bf16 copy; more tensors than one launch takes */
static void test_adamw_multi(void)
{
    enum { COUNT = 53 };
    ops_cuda_adamw_tensor t[COUNT];
    float *p[COUNT], *m[COUNT], *v[COUNT], *g[COUNT], gs = 0.6f;
    float *d_gs = gu_putf(&gs, 1);
    for (int i = 0; i < COUNT; i++) {
        size_t n = 1 + (size_t)tu_int(&rng, 3000);
        p[i] = gu_rand(&rng, n, 1);
        m[i] = gu_rand(&rng, n, 0.01);
        v[i] = gu_rand(&rng, n, 1e-4);
        for (size_t j = 0; j < n; j++) v[i][j] = fabsf(v[i][j]);
        g[i] = gu_rand(&rng, n, 0.1);
        t[i].p = gu_putf(p[i], n);
        t[i].m = gu_putf(m[i], n);
        t[i].v = gu_putf(v[i], n);
        t[i].g = gu_putf(g[i], n);
        t[i].p16 = i % 2 ? gu_put(NULL, n * sizeof(ops_bf16)) : NULL;
        t[i].n = n;
        t[i].weight_decay = i % 3 ? 0.1 : 0.0;
    }
    for (int step = 4; step <= 5; step++) {
        for (int i = 0; i < COUNT; i++)
            cpu->adamw_step_f32(p[i], m[i], v[i], g[i], &gs, t[i].n, 3e-4, 0.9, 0.999, 1e-8,
                                t[i].weight_decay, step);
        ops_cuda_adamw_multi(t, COUNT, d_gs, 3e-4, 0.9, 0.999, 1e-8, step);
    }
    gpu_done("adamw_multi");
    double worst = 0, worst16 = 0;
    for (int i = 0; i < COUNT; i++) {
        size_t n = t[i].n;
        float *got = malloc(n * sizeof *got);
        const float *devs[3] = {t[i].p, t[i].m, t[i].v}, *refs[3] = {p[i], m[i], v[i]};
        for (int k = 0; k < 3; k++) {
            gu_get(got, devs[k], n * sizeof *got);
            double e = gu_err(got, refs[k], n, 1e-30);
            worst = e > worst ? e : worst;
        }
        if (t[i].p16) {
            ops_bf16 *h = malloc(n * sizeof *h);
            gu_get(h, t[i].p16, n * sizeof *h);
            for (size_t j = 0; j < n; j++) got[j] = gu_f32(h[j]);
            double e = gu_err(got, p[i], n, 1e-30);
            worst16 = e > worst16 ? e : worst16;
            free(h);
        }
        free(got);
        cudaFree(t[i].p); cudaFree(t[i].m); cudaFree(t[i].v); cudaFree((void *)t[i].g);
        if (t[i].p16) cudaFree(t[i].p16);
        free(p[i]); free(m[i]); free(v[i]); free(g[i]);
    }
    gu_record("adamw_multi p, m, v", "53 tensors 2 steps", worst, bounds[B_ELEM]);
    gu_record("adamw_multi p16", "53 tensors 2 steps", worst16, bounds[B_BF16]);
    cudaFree(d_gs);
}

static void test_adamw_mixed(void)
{
    size_t n = 5003;
    float *p = gu_rand(&rng, n, 1), *m = gu_rand(&rng, n, 0.01), *v = gu_rand(&rng, n, 1e-4);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    float *g = gu_rand(&rng, n, 0.1), gs = 0.8f;
    float *d_p = gu_putf(p, n), *d_m = gu_putf(m, n), *d_v = gu_putf(v, n), *d_g = gu_putf(g, n);
    float *d_gs = gu_putf(&gs, 1);
    ops_bf16 *d_p16 = gu_put(NULL, n * sizeof(ops_bf16));
    cpu->adamw_step_f32(p, m, v, g, &gs, n, 2e-4, 0.9, 0.95, 1e-8, 0.05, 7);
    ops_cuda_adamw_step_mixed(d_p, d_p16, d_m, d_v, d_g, d_gs, n, 2e-4, 0.9, 0.95, 1e-8, 0.05, 7);
    gpu_done("adamw_step_mixed");
    compare("adamw_step_mixed p", "n=5003", d_p, p, n, B_ELEM);
    compare("adamw_step_mixed m", "n=5003", d_m, m, n, B_ELEM);
    compare("adamw_step_mixed v", "n=5003", d_v, v, n, B_ELEM);
    bf_round(p, n);
    bf_compare("adamw_step_mixed p16", "n=5003", d_p16, p, n);
    cudaFree(d_p); cudaFree(d_m); cudaFree(d_v); cudaFree(d_g); cudaFree(d_gs); cudaFree(d_p16);
    free(p); free(m); free(v); free(g);
}

int main(int argc, char **argv)
{
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "test_ops_gpu: no CUDA device (%s): skipped\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    struct cudaDeviceProp prop;
    GU_CUDA(cudaGetDeviceProperties(&prop, 0));
    unsigned long long seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (unsigned long long)time(NULL);
    rng.s = seed;
    printf("test_ops_gpu: %s (sm_%d%d, %.0f GiB), seed %llu (rerun with it as the argument)\n",
           prop.name, prop.major, prop.minor, prop.totalGlobalMem / 1073741824.0, seed);
    cpu = ops_cpu();
    gpu = ops_cuda();
    char msg[300];
    if (ops_cuda_set_device(0, msg, sizeof msg)) {
        fprintf(stderr, "test_ops_gpu: %s\n", msg);
        return 1;
    }
    CHECK(ops_cuda_set_device(0, msg, sizeof msg) == 0);  /* the same GPU again: nothing */
    CHECK(ops_cuda_set_device(ndev, msg, sizeof msg) == -1);
    CHECK_STR_CONTAINS(msg, "already bound");

    test_memory();
    test_elementwise();
    test_matmul();
    test_bias();
    test_embedding();
    test_layernorm(37, 1280);
    test_layernorm(5, 33);
    test_rmsnorm(37, 1536, 1);
    test_rmsnorm(6, 70, 0);
    test_rope(OPS_ROPE_1D, 128, 1e6f, "1d");
    test_rope(OPS_ROPE_VISION_2D, 80, 1e4f, "vision_2d");
    test_rope(OPS_ROPE_MROPE, 128, 1e6f, "mrope");
    test_attentions();
    test_activations();
    test_lmhead(300, 64, 1000, (size_t)1 << 22, 1);        /* one tile */
    test_lmhead(300, 64, 1000, 64 * (2 * 64 + 3 + 300), 1); /* row chunks of 64, 4 tiles */
    test_lmhead(70, 32, 500, 2 * 32 + 4, 1);                /* the minimum scratch */
    test_lmhead(300, 64, 1000, (size_t)1 << 22, 0);        /* forward only */
    test_optim();
    test_matmul_bf16(67, 45, 129, 0, 1, 1);
    test_matmul_bf16(67, 48, 136, 0, 0, 0);
    test_matmul_bf16(64, 48, 136, 1, 0, 0);
    test_matmul_bf16(256, 384, 512, 0, 1, 1);
    test_bf16_convert();
    test_bf16_activations();
    test_bf16_norms(21, 1536);
    test_bf16_rope_embedding();
    for (int tc = 1; tc >= 0; tc--) {
        static const int lm[] = {50, 0, 77, 130}, vis[] = {64, 36, 100}, small[] = {5, 40, 17};
        test_bf16_attention(lm, 4, 4, 2, 128, 1, tc);   /* decoder: causal, grouped-query */
        test_bf16_attention(vis, 3, 2, 2, 80, 0, tc);   /* vision: bidirectional, head_dim 80 */
        test_bf16_attention(small, 3, 2, 1, 64, 1, tc);
        test_bf16_attention(small, 3, 2, 2, 48, 0, tc);
    }
    test_bf16_attention((const int[]){5, 40, 17}, 3, 2, 2, 36, 1, 1);  /* no tensor-core shape */
    test_lmhead_bf16(300, 64, 1000, (size_t)1 << 22);        /* one tile */
    test_lmhead_bf16(300, 64, 1000, 64 * (3 * 64 + 3 + 450)); /* row chunks, several tiles */
    test_lmhead_bf16(40, 32, 300, 2 * 32 + 68);               /* the minimum scratch */
    test_adamw_mixed();
    test_adamw_multi();

    gu_print_table(stdout);
    return check_report("test_ops_gpu");
}
