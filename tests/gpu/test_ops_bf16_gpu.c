/* test_ops_bf16_gpu: every bf16 entry of the CUDA op table against the same entry of the CPU
 * table (kernels/cpu/bf16_cpu.c) on fresh random inputs, through the tables only (memory from
 * the CUDA table's mem_alloc, copies through mem_upload / mem_download).
 *
 * The one idea: the CPU twins round to bf16 at the very points the CUDA kernels do, so the two
 * are compared in bf16 ulps, not against an fp32 reference with a loose bound: an element-wise
 * result (conversions, add, axpy, bias add, norms, rotary, activations, scatter, the optimizer's
 * working copy) may differ by at most one bf16 ulp (the fp32 values on the two sides differ in
 * their last bits — FMA contraction, libm against CUDA's expf/erff, summation order — and that
 * can move a rounding by one step, never more). The ulp is that of the reference value, floored
 * at 2^-10 of the tensor's largest value so that results cancelling to near zero are judged at
 * the tensor's scale. Products, attention and the loss's gradients sum in other orders (and
 * attention's tensor-core path rounds P and dS to bf16 where the twin keeps fp32) and are held
 * to 1e-2 relative to the tensor's largest value; the outputs that stay fp32 (statistics, lse,
 * parameter gradients, the loss, master weights and moments) to 2e-5 (products and attention's
 * lse: 1e-4). NaN never passes. Gradients start non-zero (the += contract) and leading dimensions
 * are padded (padding compared too: untouched on both sides). Exits 77 without a device.
 * Usage: test_ops_bf16_gpu [SEED] */
#include "adapt_config.h"
#include "gpu_util.h"

#include "ops.h"
#include "ops_cuda.h"

static const ops_table *cpu, *gpu;
static tu_rng rng;

enum { B_ULP, B_PROD, B_F32, B_F32_PROD };
static const double bounds[] = {1.0, 1e-2, 2e-5, 1e-4};

/* ---- device memory through the table -------------------------------------------------------- */

static void *dput(const void *host, size_t bytes)
{
    void *d = gpu->mem_alloc(bytes ? bytes : 1);
    CHECK_MSG(d != NULL, "cuda mem_alloc(%zu) failed", bytes);
    if (!d) exit(1);
    if (bytes && host) gpu->mem_upload(d, host, bytes);  /* NULL host: zeroed memory */
    return d;
}

static void dget(void *host, const void *dev, size_t bytes)
{
    if (bytes) gpu->mem_download(host, dev, bytes);
}

/* the backend's recorded failure, checked after each case so a failed launch names its op */
static void gpu_done(const char *op)
{
    char msg[600];
    if (gpu->sync(msg, sizeof msg)) {
        fprintf(stderr, "%s: CUDA error: %s\n", op, msg);
        gu_record(op, "CUDA error", INFINITY, 0);
        ops_cuda_clear_error();
    }
}

/* ---- host values ------------------------------------------------------------------------------ */

static ops_bf16 *bf_rand(size_t n, double scale)
{
    ops_bf16 *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = ops_bf16_from_f32((float)(scale * tu_uniform(&rng)));
    return x;
}

static float *bf_widen(const ops_bf16 *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = ops_bf16_to_f32(x[i]);
    return y;
}

/* ---- comparisons ------------------------------------------------------------------------------ */

/* largest |got - ref| in bf16 ulps of ref (floored at 2^-10 of max |ref|); NaN or inf: inf */
static double ulp_err(const ops_bf16 *got, const ops_bf16 *ref, size_t n)
{
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)ops_bf16_to_f32(ref[i]));
        scale = r > scale ? r : scale;
    }
    double floor_ = ldexp(scale, -10);
    for (size_t i = 0; i < n; i++) {
        float g = ops_bf16_to_f32(got[i]), r = ops_bf16_to_f32(ref[i]);
        if (!isfinite(g) || !isfinite(r)) return INFINITY;
        double a = fabs((double)r) > floor_ ? fabs((double)r) : floor_;
        if (a == 0) a = 0x1p-133;  /* an all-zero tensor: any difference fails */
        int e;
        frexp(a, &e);
        double u = fabs((double)g - r) / ldexp(1.0, e - 8);
        worst = u > worst ? u : worst;
    }
    return worst;
}

/* download n bf16 values at dev and compare with the CPU twin's ref */
static void cmp_bf(const char *op, const char *shape, const void *dev, const ops_bf16 *ref, size_t n,
                   int bound)
{
    ops_bf16 *got = malloc((n ? n : 1) * sizeof *got);
    dget(got, dev, n * sizeof *got);
    double err;
    if (bound == B_ULP) {
        err = ulp_err(got, ref, n);
    } else {
        float *g = bf_widen(got, n), *r = bf_widen(ref, n);
        err = gu_err(g, r, n, 1e-30);
        free(g);
        free(r);
    }
    gu_record(op, shape, err, bounds[bound]);
    free(got);
}

static void cmp_f(const char *op, const char *shape, const void *dev, const float *ref, size_t n,
                  int bound)
{
    float *got = malloc((n ? n : 1) * sizeof *got);
    dget(got, dev, n * sizeof *got);
    gu_record(op, shape, gu_err(got, ref, n, 1e-30), bounds[bound]);
    free(got);
}

/* ---- cases ------------------------------------------------------------------------------------ */

static void test_convert(void)
{
    /* random floats of every magnitude, exact ties and subnormals: bit for bit both ways */
    size_t n = 50001;
    float *x = malloc(n * sizeof *x), *back = malloc(n * sizeof *back);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)tu_next(&rng);
        if (i % 4 == 0) u = (u & 0xffff0000u) | 0x8000u;
        if (i % 4 == 1) u &= 0x807fffffu;
        if ((u & 0x7f800000u) == 0x7f800000u) u &= 0xff7fffffu;  /* NaN bits differ by design */
        memcpy(&x[i], &u, sizeof u);
    }
    ops_bf16 *h = malloc(n * sizeof *h);
    cpu->f32_to_bf16(h, x, n);
    float *d_x = dput(x, n * sizeof *x), *d_back = dput(NULL, n * sizeof *x);
    ops_bf16 *d_h = dput(NULL, n * sizeof *h);
    gpu->f32_to_bf16(d_h, d_x, n);
    gpu_done("f32_to_bf16");
    /* identical bits (not ulps: values past the largest bf16 round to inf on both sides) */
    ops_bf16 *got = malloc(n * sizeof *got);
    dget(got, d_h, n * sizeof *got);
    gu_record("f32_to_bf16 identical", "n=50001 ties, subnormals",
              memcmp(got, h, n * sizeof *h) ? 1.0 : 0.0, 0);
    gpu->bf16_to_f32(d_back, d_h, n);
    gpu_done("bf16_to_f32");
    cpu->bf16_to_f32(back, h, n);
    float *gb = malloc(n * sizeof *gb);
    dget(gb, d_back, n * sizeof *gb);
    gu_record("bf16_to_f32 identical", "n=50001", memcmp(gb, back, n * sizeof *gb) ? 1.0 : 0.0, 0);
    /* NaN stays NaN */
    float nan_in[2] = {NAN, -NAN};
    ops_bf16 nan_out[2];
    float *d_nan = dput(nan_in, sizeof nan_in);
    ops_bf16 *d_nan16 = dput(NULL, sizeof nan_out);
    gpu->f32_to_bf16(d_nan16, d_nan, 2);
    gpu_done("f32_to_bf16 NaN");
    dget(nan_out, d_nan16, sizeof nan_out);
    CHECK(isnan(ops_bf16_to_f32(nan_out[0])) && isnan(ops_bf16_to_f32(nan_out[1])));
    gpu->mem_free(d_x); gpu->mem_free(d_back); gpu->mem_free(d_h); gpu->mem_free(d_nan);
    gpu->mem_free(d_nan16);
    free(x); free(back); free(h); free(got); free(gb);
}

static void test_elementwise(void)
{
    size_t n = 100003;
    ops_bf16 *a = bf_rand(n, 3), *b = bf_rand(n, 3), *y = bf_rand(n, 3);
    ops_bf16 *d_a = dput(a, n * 2), *d_b = dput(b, n * 2), *d_y = dput(y, n * 2);
    cpu->add_bf16(y, a, b, n);
    gpu->add_bf16(d_y, d_a, d_b, n);
    gpu_done("add_bf16");
    cmp_bf("add_bf16", "n=100003", d_y, y, n, B_ULP);
    cpu->axpy_bf16(y, -0.37f, a, n);
    gpu->axpy_bf16(d_y, -0.37f, d_a, n);
    gpu_done("axpy_bf16");
    cmp_bf("axpy_bf16", "n=100003", d_y, y, n, B_ULP);
    cpu->fill_bf16(y, 1.00390625f, n);  /* a tie: 1.0 */
    gpu->fill_bf16(d_y, 1.00390625f, n);
    gpu_done("fill_bf16");
    cmp_bf("fill_bf16", "n=100003 tie", d_y, y, n, B_ULP);
    gpu->mem_free(d_a); gpu->mem_free(d_b); gpu->mem_free(d_y);
    free(a); free(b); free(y);
}

static void test_matmul(int m, int n, int k, int ta, int tb, float beta, int bias)
{
    int lda = (ta ? m : k) + 8, ldb = (tb ? k : n) + 8, ldc = n + 8;  /* 16-byte aligned rows */
    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb, nc = (size_t)m * ldc;
    ops_bf16 *a = bf_rand(na, 1), *b = bf_rand(nb, 1), *c = bf_rand(nc, 1), *bs = bf_rand(n, 1);
    ops_bf16 *d_a = dput(a, na * 2), *d_b = dput(b, nb * 2), *d_c = dput(c, nc * 2);
    ops_bf16 *d_bs = dput(bs, (size_t)n * 2);
    cpu->matmul_bf16(c, a, b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, beta, bias ? bs : NULL);
    gpu->matmul_bf16(d_c, d_a, d_b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, beta, bias ? d_bs : NULL);
    gpu_done("matmul_bf16");
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%dx%d t%d%d b%.0f bias%d", m, n, k, ta, tb, beta, bias);
    cmp_bf("matmul_bf16", shape, d_c, c, nc, B_PROD);
    float *cf = gu_rand(&rng, nc, 1);
    float *d_cf = dput(cf, nc * sizeof *cf);
    cpu->matmul_bf16_f32out(cf, a, b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, 1.0f);
    gpu->matmul_bf16_f32out(d_cf, d_a, d_b, m, n, k, ta, tb, lda, ldb, ldc, 1.0f, 1.0f);
    gpu_done("matmul_bf16_f32out");
    cmp_f("matmul_bf16_f32out", shape, d_cf, cf, nc, B_F32_PROD);
    gpu->mem_free(d_a); gpu->mem_free(d_b); gpu->mem_free(d_c); gpu->mem_free(d_bs);
    gpu->mem_free(d_cf);
    free(a); free(b); free(c); free(bs); free(cf);
}

static void test_bias(void)
{
    int rows = 300, n = 97, ld = 104;
    size_t ny = (size_t)rows * ld;
    ops_bf16 *y = bf_rand(ny, 1), *bias = bf_rand(n, 1);
    float *db = gu_rand(&rng, n, 1);
    ops_bf16 *d_y = dput(y, ny * 2), *d_bias = dput(bias, (size_t)n * 2);
    float *d_db = dput(db, (size_t)n * sizeof *db);
    cpu->bias_add_bf16(y, bias, rows, n, ld);
    gpu->bias_add_bf16(d_y, d_bias, rows, n, ld);
    gpu_done("bias_add_bf16");
    cmp_bf("bias_add_bf16", "300x97 ld104", d_y, y, ny, B_ULP);
    cpu->bias_backward_bf16(db, y, rows, n, ld);
    gpu->bias_backward_bf16(d_db, d_y, rows, n, ld);
    gpu_done("bias_backward_bf16");
    cmp_f("bias_backward_bf16", "300x97 ld104", d_db, db, n, B_F32);
    gpu->mem_free(d_y); gpu->mem_free(d_bias); gpu->mem_free(d_db);
    free(y); free(bias); free(db);
}

static void test_embedding(void)
{
    int V = 300, d = 136, T = 500, n = 40;
    size_t ny = (size_t)T * d, nw = (size_t)V * d;
    ops_bf16 *w = bf_rand(nw, 1), *y = bf_rand(ny, 1), *dy = bf_rand(ny, 1);
    ops_bf16 *src = bf_rand((size_t)n * d, 1), *dsrc = bf_rand((size_t)n * d, 1);
    float *dw = gu_rand(&rng, nw, 1);
    int *ids = malloc(T * sizeof *ids), *pos = malloc(n * sizeof *pos);
    for (int t = 0; t < T; t++) ids[t] = tu_int(&rng, V / 4);  /* many repeats */
    for (int i = 0; i < n; i++) pos[i] = 7 + 12 * i;
    ops_bf16 *d_w = dput(w, nw * 2), *d_y = dput(y, ny * 2), *d_dy = dput(dy, ny * 2);
    ops_bf16 *d_src = dput(src, (size_t)n * d * 2), *d_dsrc = dput(dsrc, (size_t)n * d * 2);
    float *d_dw = dput(dw, nw * sizeof *dw);
    int *d_ids = dput(ids, T * sizeof *ids), *d_pos = dput(pos, n * sizeof *pos);
    cpu->embedding_forward_bf16(y, w, ids, T, d);
    gpu->embedding_forward_bf16(d_y, d_w, d_ids, T, d);
    gpu_done("embedding_forward_bf16");
    cmp_bf("embedding_forward_bf16", "T=500 d=136", d_y, y, ny, B_ULP);
    cpu->embedding_backward_bf16(dw, dy, ids, T, d);
    gpu->embedding_backward_bf16(d_dw, d_dy, d_ids, T, d);
    gpu_done("embedding_backward_bf16");
    cmp_f("embedding_backward_bf16", "T=500 d=136 V=300", d_dw, dw, nw, B_F32);
    cpu->scatter_rows_forward_bf16(y, src, pos, n, d);
    gpu->scatter_rows_forward_bf16(d_y, d_src, d_pos, n, d);
    gpu_done("scatter_rows_forward_bf16");
    cmp_bf("scatter_rows_forward_bf16", "n=40 d=136", d_y, y, ny, B_ULP);
    cpu->scatter_rows_backward_bf16(dsrc, dy, pos, n, d);
    gpu->scatter_rows_backward_bf16(d_dsrc, d_dy, d_pos, n, d);
    gpu_done("scatter_rows_backward_bf16");
    cmp_bf("scatter_rows_backward_bf16 dsrc", "n=40 d=136", d_dsrc, dsrc, (size_t)n * d, B_ULP);
    cmp_bf("scatter_rows_backward_bf16 dy", "rows zeroed", d_dy, dy, ny, B_ULP);
    gpu->mem_free(d_w); gpu->mem_free(d_y); gpu->mem_free(d_dy); gpu->mem_free(d_src);
    gpu->mem_free(d_dsrc); gpu->mem_free(d_dw); gpu->mem_free(d_ids); gpu->mem_free(d_pos);
    free(w); free(y); free(dy); free(src); free(dsrc); free(dw); free(ids); free(pos);
}

static void test_layernorm(int T, int d)
{
    size_t nx = (size_t)T * d;
    ops_bf16 *x = bf_rand(nx, 2), *w = bf_rand(d, 1), *b = bf_rand(d, 1), *y = bf_rand(nx, 1);
    ops_bf16 *dy = bf_rand(nx, 1), *dx = bf_rand(nx, 1);
    float *mean = malloc(T * sizeof *mean), *rstd = malloc(T * sizeof *rstd);
    float *dw = gu_rand(&rng, d, 1), *db = gu_rand(&rng, d, 1);
    ops_bf16 *d_x = dput(x, nx * 2), *d_w = dput(w, (size_t)d * 2), *d_b = dput(b, (size_t)d * 2);
    ops_bf16 *d_y = dput(y, nx * 2), *d_dy = dput(dy, nx * 2), *d_dx = dput(dx, nx * 2);
    float *d_mean = dput(NULL, T * sizeof(float)), *d_rstd = dput(NULL, T * sizeof(float));
    float *d_dw = dput(dw, d * sizeof *dw), *d_db = dput(db, d * sizeof *db);
    char shape[48];
    snprintf(shape, sizeof shape, "T=%d d=%d", T, d);
    cpu->layernorm_forward_bf16(y, mean, rstd, x, w, b, T, d, 1e-6f);
    gpu->layernorm_forward_bf16(d_y, d_mean, d_rstd, d_x, d_w, d_b, T, d, 1e-6f);
    gpu_done("layernorm_forward_bf16");
    cmp_bf("layernorm_forward_bf16", shape, d_y, y, nx, B_ULP);
    cmp_f("layernorm_forward_bf16 mean", shape, d_mean, mean, T, B_F32);
    cmp_f("layernorm_forward_bf16 rstd", shape, d_rstd, rstd, T, B_F32);
    /* backward from the CPU's statistics on both sides, so dx compares the backward alone */
    gpu->mem_upload(d_mean, mean, T * sizeof *mean);
    gpu->mem_upload(d_rstd, rstd, T * sizeof *rstd);
    cpu->layernorm_backward_bf16(dx, dw, db, dy, x, w, mean, rstd, T, d);
    gpu->layernorm_backward_bf16(d_dx, d_dw, d_db, d_dy, d_x, d_w, d_mean, d_rstd, T, d);
    gpu_done("layernorm_backward_bf16");
    cmp_bf("layernorm_backward_bf16 dx", shape, d_dx, dx, nx, B_ULP);
    cmp_f("layernorm_backward_bf16 dw", shape, d_dw, dw, d, B_F32);
    cmp_f("layernorm_backward_bf16 db", shape, d_db, db, d, B_F32);
    gpu->mem_free(d_x); gpu->mem_free(d_w); gpu->mem_free(d_b); gpu->mem_free(d_y);
    gpu->mem_free(d_dy); gpu->mem_free(d_dx); gpu->mem_free(d_mean); gpu->mem_free(d_rstd);
    gpu->mem_free(d_dw); gpu->mem_free(d_db);
    free(x); free(w); free(b); free(y); free(dy); free(dx); free(mean); free(rstd); free(dw);
    free(db);
}

static void test_rmsnorm(int T, int d, int fused)
{
    size_t nx = (size_t)T * d;
    ops_bf16 *x = bf_rand(nx, 2), *w = bf_rand(d, 1), *y = bf_rand(nx, 1), *res = bf_rand(nx, 2);
    ops_bf16 *dy = bf_rand(nx, 1), *du = bf_rand(nx, 1);
    float *rstd = malloc(T * sizeof *rstd), *dw = gu_rand(&rng, d, 1);
    ops_bf16 *d_x = dput(x, nx * 2), *d_w = dput(w, (size_t)d * 2), *d_y = dput(y, nx * 2);
    ops_bf16 *d_res = dput(res, nx * 2), *d_dy = dput(dy, nx * 2), *d_du = dput(du, nx * 2);
    float *d_rstd = dput(NULL, T * sizeof(float)), *d_dw = dput(dw, d * sizeof *dw);
    char shape[48];
    snprintf(shape, sizeof shape, "T=%d d=%d%s", T, d, fused ? " +res" : "");
    cpu->rmsnorm_forward_bf16(y, rstd, fused ? res : NULL, x, w, T, d, 1e-6f);
    gpu->rmsnorm_forward_bf16(d_y, d_rstd, fused ? d_res : NULL, d_x, d_w, T, d, 1e-6f);
    gpu_done("rmsnorm_forward_bf16");
    cmp_bf("rmsnorm_forward_bf16", shape, d_y, y, nx, B_ULP);
    cmp_bf("rmsnorm_forward_bf16 res", shape, d_res, res, nx, B_ULP);
    cmp_f("rmsnorm_forward_bf16 rstd", shape, d_rstd, rstd, T, B_F32);
    const ops_bf16 *u = fused ? res : x;
    const ops_bf16 *d_u = fused ? d_res : d_x;
    gpu->mem_upload((void *)d_u, u, nx * 2);  /* the same u and rstd on both sides */
    gpu->mem_upload(d_rstd, rstd, T * sizeof *rstd);
    cpu->rmsnorm_backward_bf16(du, dw, dy, u, w, rstd, T, d);
    gpu->rmsnorm_backward_bf16(d_du, d_dw, d_dy, d_u, d_w, d_rstd, T, d);
    gpu_done("rmsnorm_backward_bf16");
    cmp_bf("rmsnorm_backward_bf16 du", shape, d_du, du, nx, B_ULP);
    cmp_f("rmsnorm_backward_bf16 dw", shape, d_dw, dw, d, B_F32);
    gpu->mem_free(d_x); gpu->mem_free(d_w); gpu->mem_free(d_y); gpu->mem_free(d_res);
    gpu->mem_free(d_dy); gpu->mem_free(d_du); gpu->mem_free(d_rstd); gpu->mem_free(d_dw);
    free(x); free(w); free(y); free(res); free(dy); free(du); free(rstd); free(dw);
}

static void test_rope(ops_rope_kind kind, int hd, float theta, const char *name)
{
    int T = 300, heads = 6, ldx = (heads + 2) * hd;  /* q heads of a wider qkv row */
    size_t nx = (size_t)T * ldx;
    ops_rope rope = {.kind = kind, .head_dim = hd, .theta = theta};
    if (kind == OPS_ROPE_MROPE) {
        rope.mrope_section[0] = hd / 8;
        rope.mrope_section[1] = rope.mrope_section[2] = (hd / 2 - hd / 8) / 2;
        rope.mrope_section[0] += hd / 2 - rope.mrope_section[0] - 2 * rope.mrope_section[1];
    }
    int *pos = malloc(3 * T * sizeof *pos);
    for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&rng, 4000);
    int *d_pos = dput(pos, 3 * T * sizeof *pos);
    for (int dir = 0; dir < 2; dir++) {
        ops_bf16 *x = bf_rand(nx, 2), *d_x = dput(x, nx * 2);
        if (dir == 0) {
            cpu->rope_forward_bf16(x, pos, T, heads, ldx, &rope);
            gpu->rope_forward_bf16(d_x, d_pos, T, heads, ldx, &rope);
        } else {
            cpu->rope_backward_bf16(x, pos, T, heads, ldx, &rope);
            gpu->rope_backward_bf16(d_x, d_pos, T, heads, ldx, &rope);
        }
        gpu_done("rope_bf16");
        char op[40];
        snprintf(op, sizeof op, "rope_%s_bf16 %s", dir ? "backward" : "forward", name);
        cmp_bf(op, "T=300 6 heads, padded", d_x, x, nx, B_ULP);
        gpu->mem_free(d_x);
        free(x);
    }
    gpu->mem_free(d_pos);
    free(pos);
}

static void test_attention(const int *lens, int nseq, int H, int KV, int hd, int causal, int tc)
{
    int cu[16] = {0}, max_len = 0;
    for (int s = 0; s < nseq; s++) {
        cu[s + 1] = cu[s] + lens[s];
        max_len = lens[s] > max_len ? lens[s] : max_len;
    }
    int T = cu[nseq], W = (H + 2 * KV) * hd, ldo = H * hd;
    size_t nqkv = (size_t)T * W, no = (size_t)T * ldo, nl = (size_t)T * H;
    int *d_cu = dput(cu, (nseq + 1) * sizeof(int));
    ops_attn a = {.cu_seqlens = cu, .num_seqs = nseq, .total_tokens = T, .max_seqlen = max_len,
                  .num_heads = H, .num_kv_heads = KV, .head_dim = hd, .ldq = W, .ldk = W,
                  .ldv = W, .ldo = ldo, .scale = 1.0f / sqrtf((float)hd), .causal = causal};
    ops_attn ad = a;
    ad.cu_seqlens = d_cu;
    ops_bf16 *qkv = bf_rand(nqkv, 2), *o = bf_rand(no, 1), *dout = bf_rand(no, 1);
    ops_bf16 *dqkv = bf_rand(nqkv, 1);
    float *lse = malloc(nl * sizeof *lse);
    ops_bf16 *d_qkv = dput(qkv, nqkv * 2), *d_o = dput(o, no * 2), *d_dout = dput(dout, no * 2);
    ops_bf16 *d_dqkv = dput(dqkv, nqkv * 2);
    float *d_lse = dput(NULL, nl * sizeof *lse);
    ops_cuda_attention_tensor_cores(tc);
    cpu->attention_forward_bf16(o, lse, qkv, qkv + H * hd, qkv + (H + KV) * hd, &a);
    gpu->attention_forward_bf16(d_o, d_lse, d_qkv, d_qkv + H * hd, d_qkv + (H + KV) * hd, &ad);
    gpu_done("attention_forward_bf16");
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d H%d/%d hd%d c%d %s", T, H, KV, hd, causal, tc ? "tc" : "cc");
    cmp_bf("attention_forward_bf16", shape, d_o, o, no, B_PROD);
    cmp_f("attention_forward_bf16 lse", shape, d_lse, lse, nl, B_F32_PROD);
    /* backward from the CPU's o and lse on both sides */
    gpu->mem_upload(d_o, o, no * 2);
    gpu->mem_upload(d_lse, lse, nl * sizeof *lse);
    cpu->attention_backward_bf16(dqkv, dqkv + H * hd, dqkv + (H + KV) * hd, dout, qkv, qkv + H * hd,
                                 qkv + (H + KV) * hd, o, lse, &a);
    gpu->attention_backward_bf16(d_dqkv, d_dqkv + H * hd, d_dqkv + (H + KV) * hd, d_dout, d_qkv,
                                 d_qkv + H * hd, d_qkv + (H + KV) * hd, d_o, d_lse, &ad);
    gpu_done("attention_backward_bf16");
    cmp_bf("attention_backward_bf16 dqkv", shape, d_dqkv, dqkv, nqkv, B_PROD);
    ops_cuda_attention_tensor_cores(1);
    gpu->mem_free(d_cu); gpu->mem_free(d_qkv); gpu->mem_free(d_o); gpu->mem_free(d_dout);
    gpu->mem_free(d_dqkv); gpu->mem_free(d_lse);
    free(qkv); free(o); free(dout); free(dqkv); free(lse);
}

static void test_activations(void)
{
    int T = 64, n = 300, ld = 2 * n;
    size_t nin = (size_t)T * ld, ny = (size_t)T * n;
    ops_bf16 *gu = bf_rand(nin, 6), *y = bf_rand(ny, 1), *dy = bf_rand(ny, 1), *dgu = bf_rand(nin, 1);
    ops_bf16 *d_gu = dput(gu, nin * 2), *d_y = dput(y, ny * 2), *d_dy = dput(dy, ny * 2);
    ops_bf16 *d_dgu = dput(dgu, nin * 2);
    cpu->swiglu_forward_bf16(y, gu, gu + n, T, n, ld);
    gpu->swiglu_forward_bf16(d_y, d_gu, d_gu + n, T, n, ld);
    gpu_done("swiglu_forward_bf16");
    cmp_bf("swiglu_forward_bf16", "T=64 n=300 fused", d_y, y, ny, B_ULP);
    cpu->swiglu_backward_bf16(dgu, dgu + n, dy, gu, gu + n, T, n, ld);
    gpu->swiglu_backward_bf16(d_dgu, d_dgu + n, d_dy, d_gu, d_gu + n, T, n, ld);
    gpu_done("swiglu_backward_bf16");
    cmp_bf("swiglu_backward_bf16", "T=64 n=300 fused", d_dgu, dgu, nin, B_ULP);

    /* the unary activations over the whole gate|up buffer as x */
    static const char *names[2][2] = {{"quickgelu_forward_bf16", "quickgelu_backward_bf16"},
                                      {"gelu_forward_bf16", "gelu_backward_bf16"}};
    for (int kind = 0; kind < 2; kind++) {
        ops_bf16 *z = bf_rand(nin, 1), *dz = bf_rand(nin, 1), *g = bf_rand(nin, 1);
        ops_bf16 *d_z = dput(z, nin * 2), *d_dz = dput(dz, nin * 2), *d_g = dput(g, nin * 2);
        if (kind == 0) {
            cpu->quickgelu_forward_bf16(z, gu, nin);
            gpu->quickgelu_forward_bf16(d_z, d_gu, nin);
        } else {
            cpu->gelu_forward_bf16(z, gu, nin);
            gpu->gelu_forward_bf16(d_z, d_gu, nin);
        }
        gpu_done(names[kind][0]);
        cmp_bf(names[kind][0], "n=38400", d_z, z, nin, B_ULP);
        if (kind == 0) {
            cpu->quickgelu_backward_bf16(dz, g, gu, nin);
            gpu->quickgelu_backward_bf16(d_dz, d_g, d_gu, nin);
        } else {
            cpu->gelu_backward_bf16(dz, g, gu, nin);
            gpu->gelu_backward_bf16(d_dz, d_g, d_gu, nin);
        }
        gpu_done(names[kind][1]);
        cmp_bf(names[kind][1], "n=38400", d_dz, dz, nin, B_ULP);
        gpu->mem_free(d_z); gpu->mem_free(d_dz); gpu->mem_free(d_g);
        free(z); free(dz); free(g);
    }
    gpu->mem_free(d_gu); gpu->mem_free(d_y); gpu->mem_free(d_dy); gpu->mem_free(d_dgu);
    free(gu); free(y); free(dy); free(dgu);
}

static void test_lmhead(int T, int d, int V, size_t work_len)
{
    size_t nh = (size_t)T * d, nw = (size_t)V * d;
    ops_bf16 *h = bf_rand(nh, 1), *w = bf_rand(nw, 1), *dh = bf_rand(nh, 0.01);
    float *dw = gu_rand(&rng, nw, 0.01);
    int *labels = malloc(T * sizeof *labels), counted = 0;
    for (int t = 0; t < T; t++) {
        labels[t] = t % 4 == 1 ? OPS_LABEL_IGNORE : tu_int(&rng, V);
        counted += labels[t] != OPS_LABEL_IGNORE;
    }
    ops_bf16 *d_h = dput(h, nh * 2), *d_w = dput(w, nw * 2), *d_dh = dput(dh, nh * 2);
    float *d_dw = dput(dw, nw * sizeof *dw), *d_work = dput(NULL, work_len * sizeof(float));
    float *d_loss = dput(NULL, sizeof(float));
    int *d_labels = dput(labels, T * sizeof *labels);
    float loss, *work = malloc(work_len * sizeof *work);
    cpu->lmhead_xent_bf16(&loss, dh, dw, h, w, labels, T, d, V, (float)counted, work, work_len);
    gpu->lmhead_xent_bf16(d_loss, d_dh, d_dw, d_h, d_w, d_labels, T, d, V, (float)counted, d_work,
                          work_len);
    gpu_done("lmhead_xent_bf16");
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d d=%d V=%d work %zu", T, d, V, work_len);
    cmp_f("lmhead_xent_bf16 loss", shape, d_loss, &loss, 1, B_F32);
    cmp_bf("lmhead_xent_bf16 dh", shape, d_dh, dh, nh, B_PROD);
    cmp_f("lmhead_xent_bf16 dw", shape, d_dw, dw, nw, B_PROD);
    gpu->mem_free(d_h); gpu->mem_free(d_w); gpu->mem_free(d_dh); gpu->mem_free(d_dw);
    gpu->mem_free(d_work); gpu->mem_free(d_loss); gpu->mem_free(d_labels);
    free(h); free(w); free(dh); free(dw); free(labels); free(work);
}

static void test_adamw_mixed(void)
{
    size_t n = 100003;
    float *p = gu_rand(&rng, n, 1), *m = gu_rand(&rng, n, 0.01), *v = gu_rand(&rng, n, 0.001);
    float *g = gu_rand(&rng, n, 0.1), gs = 0.75f;
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    ops_bf16 *p16 = bf_rand(n, 1);
    float *d_p = dput(p, n * 4), *d_m = dput(m, n * 4), *d_v = dput(v, n * 4), *d_g = dput(g, n * 4);
    float *d_gs = dput(&gs, sizeof gs);
    ops_bf16 *d_p16 = dput(p16, n * 2);
    cpu->adamw_step_mixed(p, p16, m, v, g, &gs, n, 1e-3, 0.9, 0.999, 1e-8, 0.1, 3);
    gpu->adamw_step_mixed(d_p, d_p16, d_m, d_v, d_g, d_gs, n, 1e-3, 0.9, 0.999, 1e-8, 0.1, 3);
    gpu_done("adamw_step_mixed");
    cmp_f("adamw_step_mixed p", "n=100003", d_p, p, n, B_F32);
    cmp_f("adamw_step_mixed m", "n=100003", d_m, m, n, B_F32);
    cmp_f("adamw_step_mixed v", "n=100003", d_v, v, n, B_F32);
    cmp_bf("adamw_step_mixed p16", "n=100003", d_p16, p16, n, B_ULP);
    gpu->mem_free(d_p); gpu->mem_free(d_m); gpu->mem_free(d_v); gpu->mem_free(d_g);
    gpu->mem_free(d_gs); gpu->mem_free(d_p16);
    free(p); free(m); free(v); free(g); free(p16);
}

int main(int argc, char **argv)
{
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "test_ops_bf16_gpu: no CUDA device (%s): skipped\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    unsigned long long seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (unsigned long long)time(NULL);
    rng.s = seed;
    printf("test_ops_bf16_gpu: seed %llu (rerun with it as the argument)\n", seed);
    cpu = ops_cpu();
    gpu = ops_cuda();
    char msg[300];
    if (ops_cuda_set_device(0, msg, sizeof msg)) {
        fprintf(stderr, "test_ops_bf16_gpu: %s\n", msg);
        return 1;
    }

    test_convert();
    test_elementwise();
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) test_matmul(67, 48, 136, ta, tb, 1.0f, 1);
    test_matmul(256, 384, 512, 0, 1, 0.0f, 1);  /* a Linear forward with its bias epilogue */
    test_matmul(9, 16, 0, 0, 1, 0.5f, 1);       /* empty product with bias */
    test_bias();
    test_embedding();
    test_layernorm(37, 1280);
    test_layernorm(5, 33);
    test_rmsnorm(37, 1536, 1);
    test_rmsnorm(6, 70, 0);
    test_rope(OPS_ROPE_1D, 128, 1e6f, "1d");
    test_rope(OPS_ROPE_VISION_2D, 80, 1e4f, "vision_2d");
    test_rope(OPS_ROPE_MROPE, 128, 1e6f, "mrope");
    for (int tc = 1; tc >= 0; tc--) {
        static const int lm[] = {50, 0, 77, 130}, vis[] = {64, 36, 100};
        test_attention(lm, 4, 4, 2, 128, 1, tc);  /* decoder: causal, grouped-query */
        test_attention(vis, 3, 2, 2, 80, 0, tc);  /* vision: bidirectional, head_dim 80 */
    }
    test_activations();
    test_lmhead(300, 64, 1000, (size_t)1 << 22);
    test_lmhead(300, 64, 1000, 64 * (3 * 64 + 3 + 450));
    test_adamw_mixed();

    gu_print_table(stdout);
    return check_report("test_ops_bf16_gpu");
}
