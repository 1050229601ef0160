/* test_ops_guarded: the cpu-guarded backend (kernels/cpu/ops_cpu_guarded.c), the CPU's stand-in
 * for a device, is itself checked here before other tests lean on it.
 *
 * 1. It faults: a host read or write of its memory outside an entry kills the process with
 *    SIGSEGV (a forked child tries), also right after an op or a copy ran (the regions are locked
 *    again); a host pointer given to an op, a backend pointer given as a copy's host side, an
 *    extent past an allocation's end and a foreign mem_free abort with a message naming the entry
 *    and the argument.
 * 2. It is the CPU table, bit for bit: every entry, fp32 and bf16, runs on small random inputs
 *    through ops_cpu() on host memory and through ops_cpu_guarded() on guarded memory (upload,
 *    op, download), and every buffer, inputs included, must come back with identical bytes. The
 *    scalars the ops take by pointer (the loss, grad_norm's norm and scale, adamw's grad_scale)
 *    are guarded buffers too. Since each entry opens only its arguments' pages, a wrong extent
 *    in the backend's checks would show here as a crash inside the CPU kernel.
 * 3. Its memory entries: zeroed 64-byte-aligned allocations, copies in all three directions,
 *    sync, many live regions at once, and two threads using the table at the same time. */
#include "../check.h"
#include "test_ops_util.h"
#include "ops.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const ops_table *C, *G;

/* ---- pairs: a host buffer for the cpu table and its guarded twin, same initial bytes -------- */
typedef struct pair {
    const char *name;
    size_t      bytes;
    void       *h, *d;
} pair;

static pair PAIRS[32];
static int  NPAIRS;

static pair *pair_new(const char *name, const void *init, size_t bytes)
{
    pair *p = &PAIRS[NPAIRS++];
    p->name = name;
    p->bytes = bytes;
    p->h = malloc(bytes ? bytes : 1);
    if (bytes) memcpy(p->h, init, bytes);
    p->d = G->mem_alloc(bytes);
    G->mem_upload(p->d, init, bytes);
    return p;
}

static pair *pair_rand(const char *name, tu_rng *r, size_t n, double scale)
{
    double *x = tu_rand(r, n, scale);
    float *f = tu_to_f32(x, n);
    pair *p = pair_new(name, f, n * sizeof(float));
    free(x);
    free(f);
    return p;
}

static pair *pair_ints(const char *name, const int *v, size_t n)
{
    return pair_new(name, v, n * sizeof(int));
}

/* Downloads every guarded twin and compares its bytes with the cpu table's buffer, then frees
 * the pairs. */
static void pairs_check(const char *what)
{
    for (int i = 0; i < NPAIRS; i++) {
        pair *p = &PAIRS[i];
        unsigned char *got = malloc(p->bytes ? p->bytes : 1);
        G->mem_download(got, p->d, p->bytes);
        size_t first = p->bytes;
        for (size_t k = 0; k < p->bytes && first == p->bytes; k++)
            if (got[k] != ((unsigned char *)p->h)[k]) first = k;
        CHECK_MSG(first == p->bytes, "%s: %s differs from the cpu table's at byte %zu of %zu", what,
                  p->name, first, p->bytes);
        free(got);
        free(p->h);
        G->mem_free(p->d);
    }
    NPAIRS = 0;
}

/* the side's view of a pair: side 0 the cpu table on host memory, side 1 the guarded twin */
#define FP(p)  ((float *)(side ? (p)->d : (p)->h))
#define IP(p)  ((int *)(side ? (p)->d : (p)->h))
#define OPS    (side ? G : C)

/* ---- 2. every entry, bit for bit --------------------------------------------------------- */

static void test_elementwise(void)
{
    static const size_t lens[] = { 0, 1, 1000 };
    for (size_t li = 0; li < 3; li++) {
        size_t n = lens[li];
        tu_rng r = { 100 + li };
        pair *y = pair_rand("y", &r, n, 1), *a = pair_rand("a", &r, n, 1), *b = pair_rand("b", &r, n, 1);
        pair *q = pair_rand("q", &r, n, 3), *dq = pair_rand("dq", &r, n, 1);
        for (int side = 0; side < 2; side++) {
            OPS->add_f32(FP(y), FP(a), FP(b), n);
            OPS->axpy_f32(FP(a), -0.75f, FP(y), n);
            OPS->quickgelu_forward_f32(FP(b), FP(q), n);
            OPS->quickgelu_backward_f32(FP(dq), FP(a), FP(q), n);
            OPS->gelu_forward_f32(FP(y), FP(q), n);
            OPS->gelu_backward_f32(FP(dq), FP(b), FP(q), n);
        }
        pairs_check("add / axpy / quickgelu / gelu");
        y = pair_rand("y", &r, n, 1);
        for (int side = 0; side < 2; side++) OPS->fill_f32(FP(y), 0.25f, n);
        pairs_check("fill_f32");
    }
}

static void test_matmul(void)
{
    enum { M = 13, N = 17, K = 9 };
    for (int t = 0; t < 8; t++) {
        int ta = t & 1, tb = (t >> 1) & 1;
        float beta = (t >> 2) ? 1.0f : 0.0f;
        int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        tu_rng r = { 200 + t };
        pair *a = pair_rand("a", &r, (size_t)(ta ? K : M) * lda, 1);
        pair *b = pair_rand("b", &r, (size_t)(tb ? N : K) * ldb, 1);
        pair *c = pair_rand("c", &r, (size_t)M * ldc, 1);
        for (int side = 0; side < 2; side++)
            OPS->matmul_f32(FP(c), FP(a), FP(b), M, N, K, ta, tb, lda, ldb, ldc, 0.5f, beta);
        pairs_check("matmul_f32");
    }
    /* a product large enough for the BLAS / OpenMP path */
    tu_rng r = { 210 };
    pair *a = pair_rand("a", &r, 96 * 130, 1), *b = pair_rand("b", &r, 130 * 140, 1);
    pair *c = pair_rand("c", &r, 96 * 140, 1);
    for (int side = 0; side < 2; side++)
        OPS->matmul_f32(FP(c), FP(a), FP(b), 96, 140, 130, 0, 0, 130, 140, 140, 1.0f, 1.0f);
    pairs_check("matmul_f32 96x140x130");
}

static void test_bias(void)
{
    enum { R = 5, N = 7, LD = 9 };
    tu_rng r = { 300 };
    pair *y = pair_rand("y", &r, R * LD, 1), *bias = pair_rand("bias", &r, N, 1);
    pair *db = pair_rand("dbias", &r, N, 1);
    for (int side = 0; side < 2; side++) {
        OPS->bias_add_f32(FP(y), FP(bias), R, N, LD);
        OPS->bias_backward_f32(FP(db), FP(y), R, N, LD);
    }
    pairs_check("bias_add / bias_backward");
}

static void test_embedding_scatter(void)
{
    enum { V = 11, D = 8, T = 6, NS = 4, TY = 10 };
    tu_rng r = { 400 };
    int ids[T] = { 3, 0, 10, 3, 7, 3 }, pos[NS] = { 9, 2, 5, 0 };
    pair *w = pair_rand("w", &r, V * D, 1), *y = pair_rand("y", &r, T * D, 1);
    pair *dw = pair_rand("dw", &r, V * D, 1), *dy = pair_rand("dy", &r, T * D, 1);
    pair *pi = pair_ints("ids", ids, T);
    for (int side = 0; side < 2; side++) {
        OPS->embedding_forward_f32(FP(y), FP(w), IP(pi), T, D);
        OPS->embedding_backward_f32(FP(dw), FP(dy), IP(pi), T, D);
    }
    pairs_check("embedding_forward / backward");
    pair *ys = pair_rand("y", &r, TY * D, 1), *src = pair_rand("src", &r, NS * D, 1);
    pair *dsrc = pair_rand("dsrc", &r, NS * D, 1), *dys = pair_rand("dy", &r, TY * D, 1);
    pair *pp = pair_ints("pos", pos, NS);
    for (int side = 0; side < 2; side++) {
        OPS->scatter_rows_forward_f32(FP(ys), FP(src), IP(pp), NS, D);
        OPS->scatter_rows_backward_f32(FP(dsrc), FP(dys), IP(pp), NS, D);
    }
    pairs_check("scatter_rows_forward / backward");
}

static void test_norms(void)
{
    enum { T = 5, D = 16 };
    tu_rng r = { 500 };
    pair *x = pair_rand("x", &r, T * D, 2), *y = pair_rand("y", &r, T * D, 1);
    pair *w = pair_rand("w", &r, D, 1), *b = pair_rand("b", &r, D, 1);
    pair *mean = pair_rand("mean", &r, T, 1), *rstd = pair_rand("rstd", &r, T, 1);
    pair *dy = pair_rand("dy", &r, T * D, 1), *dx = pair_rand("dx", &r, T * D, 1);
    pair *dw = pair_rand("dw", &r, D, 1), *db = pair_rand("db", &r, D, 1);
    for (int side = 0; side < 2; side++) {
        OPS->layernorm_forward_f32(FP(y), FP(mean), FP(rstd), FP(x), FP(w), FP(b), T, D, 1e-6f);
        OPS->layernorm_backward_f32(FP(dx), FP(dw), FP(db), FP(dy), FP(x), FP(w), FP(mean),
                                    FP(rstd), T, D);
        /* a frozen norm: no weight or bias gradient */
        OPS->layernorm_backward_f32(FP(dx), NULL, NULL, FP(dy), FP(x), FP(w), FP(mean), FP(rstd), T, D);
    }
    pairs_check("layernorm_forward / backward");
    x = pair_rand("x", &r, T * D, 2); y = pair_rand("y", &r, T * D, 1);
    pair *res = pair_rand("res", &r, T * D, 1);
    w = pair_rand("w", &r, D, 1); rstd = pair_rand("rstd", &r, T, 1);
    dy = pair_rand("dy", &r, T * D, 1); dx = pair_rand("du", &r, T * D, 1);
    dw = pair_rand("dw", &r, D, 1);
    pair *y2 = pair_rand("y2", &r, T * D, 1), *rstd2 = pair_rand("rstd2", &r, T, 1);
    for (int side = 0; side < 2; side++) {
        OPS->rmsnorm_forward_f32(FP(y2), FP(rstd2), NULL, FP(x), FP(w), T, D, 1e-6f);
        OPS->rmsnorm_forward_f32(FP(y), FP(rstd), FP(res), FP(x), FP(w), T, D, 1e-6f);
        OPS->rmsnorm_backward_f32(FP(dx), FP(dw), FP(dy), FP(res), FP(w), FP(rstd), T, D);
    }
    pairs_check("rmsnorm_forward (plain, fused add) / backward");
}

static void test_rope(void)
{
    enum { T = 7, H = 3, HD = 16, LD = H * HD + 5 };
    static const ops_rope ropes[3] = {
        { .kind = OPS_ROPE_1D, .head_dim = HD, .theta = 1e6f },
        { .kind = OPS_ROPE_VISION_2D, .head_dim = HD, .theta = 1e4f },
        { .kind = OPS_ROPE_MROPE, .head_dim = HD, .theta = 1e6f, .mrope_section = { 2, 3, 3 } },
    };
    for (int k = 0; k < 3; k++) {
        tu_rng r = { 600 + k };
        int pos[3 * T];
        for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&r, 50);
        pair *x = pair_rand("x", &r, T * LD, 1), *dx = pair_rand("dx", &r, T * LD, 1);
        pair *pp = pair_ints("pos", pos, (size_t)(k + 1) * T);
        for (int side = 0; side < 2; side++) {
            OPS->rope_forward_f32(FP(x), IP(pp), T, H, LD, &ropes[k]);
            OPS->rope_backward_f32(FP(dx), IP(pp), T, H, LD, &ropes[k]);
        }
        pairs_check(k == 0 ? "rope 1D" : k == 1 ? "rope vision 2D" : "rope M-RoPE");
    }
}

static void test_attention(void)
{
    enum { H = 4, HK = 2, D = 8, LD = (H + 2 * HK) * D };
    int cu[4] = { 0, 5, 5, 17 };   /* an empty segment in the middle */
    for (int causal = 0; causal < 2; causal++) {
        tu_rng r = { 700 + causal };
        int T = cu[3];
        pair *qkv = pair_rand("qkv", &r, (size_t)T * LD, 2), *o = pair_rand("o", &r, (size_t)T * H * D, 1);
        pair *lse = pair_rand("lse", &r, (size_t)T * H, 1), *dout = pair_rand("dout", &r, (size_t)T * H * D, 1);
        pair *dqkv = pair_rand("dqkv", &r, (size_t)T * LD, 1), *pc = pair_ints("cu_seqlens", cu, 4);
        for (int side = 0; side < 2; side++) {
            ops_attn a = { .cu_seqlens = IP(pc), .num_seqs = 3, .total_tokens = T, .max_seqlen = 12,
                           .num_heads = H, .num_kv_heads = HK, .head_dim = D, .ldq = LD, .ldk = LD,
                           .ldv = LD, .ldo = H * D, .scale = 0.35f, .causal = causal };
            float *q = FP(qkv), *dq = FP(dqkv);
            OPS->attention_forward_f32(FP(o), FP(lse), q, q + H * D, q + (H + HK) * D, &a);
            OPS->attention_backward_f32(dq, dq + H * D, dq + (H + HK) * D, FP(dout), q, q + H * D,
                                        q + (H + HK) * D, FP(o), FP(lse), &a);
        }
        pairs_check(causal ? "attention causal GQA" : "attention bidirectional GQA");
    }
}

static void test_swiglu(void)
{
    enum { T = 6, N = 10 };
    tu_rng r = { 800 };
    pair *gu = pair_rand("gate|up", &r, T * 2 * N, 2), *y = pair_rand("y", &r, T * N, 1);
    pair *dgu = pair_rand("dgate|dup", &r, T * 2 * N, 1), *dy = pair_rand("dy", &r, T * N, 1);
    for (int side = 0; side < 2; side++) {
        OPS->swiglu_forward_f32(FP(y), FP(gu), FP(gu) + N, T, N, 2 * N);
        OPS->swiglu_backward_f32(FP(dgu), FP(dgu) + N, FP(dy), FP(gu), FP(gu) + N, T, N, 2 * N);
    }
    pairs_check("swiglu_forward / backward");
}

static void test_lmhead_xent(void)
{
    enum { T = 9, D = 12, V = 37 };
    int labels[T] = { 4, OPS_LABEL_IGNORE, 36, 0, 11, OPS_LABEL_IGNORE, 2, 2, 30 };
    /* the smallest scratch (vocabulary chunks, logits twice) and one holding whole rows */
    static const size_t work[2] = { 2 * D + 4, 64 * (2 * D + 3 + V) };
    for (int k = 0; k < 2; k++) {
        tu_rng r = { 900 + k };
        pair *h = pair_rand("h", &r, T * D, 1), *w = pair_rand("w", &r, V * D, 1);
        pair *dh = pair_rand("dh", &r, T * D, 1), *dw = pair_rand("dw", &r, V * D, 1);
        pair *lab = pair_ints("labels", labels, T), *loss = pair_rand("loss", &r, 1, 1);
        pair *loss_fwd = pair_rand("loss (forward only)", &r, 1, 1);
        pair *ws = pair_rand("work", &r, work[k], 1);
        for (int side = 0; side < 2; side++) {
            OPS->lmhead_xent_f32(FP(loss_fwd), NULL, NULL, FP(h), FP(w), IP(lab), T, D, V, 7.0f,
                                 FP(ws), work[k]);
            OPS->lmhead_xent_f32(FP(loss), FP(dh), FP(dw), FP(h), FP(w), IP(lab), T, D, V, 7.0f,
                                 FP(ws), work[k]);
        }
        pairs_check(k ? "lmhead_xent_f32 (large work)" : "lmhead_xent_f32 (minimal work)");
    }
}

static void test_optimizer(void)
{
    static const size_t lens[3] = { 5, 300, 1 };
    for (int clip = 0; clip < 2; clip++) {
        tu_rng r = { 1000 + clip };
        pair *g[3], *p[3], *m[3], *v[3];
        for (int i = 0; i < 3; i++) {
            g[i] = pair_rand("g", &r, lens[i], 3);
            p[i] = pair_rand("p", &r, lens[i], 1);
            m[i] = pair_rand("m", &r, lens[i], 0.1);
            double *vv = tu_rand(&r, lens[i], 0.01);
            for (size_t k = 0; k < lens[i]; k++) vv[k] = fabs(vv[k]);
            float *vf = tu_to_f32(vv, lens[i]);
            v[i] = pair_new("v", vf, lens[i] * sizeof(float));
            free(vv);
            free(vf);
        }
        pair *norm = pair_rand("norm", &r, 1, 1), *scale = pair_rand("scale", &r, 1, 1);
        for (int side = 0; side < 2; side++) {
            const float *tensors[3] = { FP(g[0]), FP(g[1]), FP(g[2]) };
            OPS->grad_norm_f32(FP(norm), FP(scale), tensors, lens, 3, clip ? 1.5f : 0.0f);
            for (int i = 0; i < 3; i++)
                OPS->adamw_step_f32(FP(p[i]), FP(m[i]), FP(v[i]), FP(g[i]), i == 2 ? NULL : FP(scale),
                                    lens[i], 1e-3, 0.9, 0.999, 1e-8, i ? 0.01 : 0.0, 3 + clip);
        }
        pairs_check(clip ? "grad_norm_f32 (clip 1.5) / adamw_step_f32" : "grad_norm_f32 / adamw_step_f32");
    }
}

/* ---- the bf16 entries, bit for bit ------------------------------------------------------- */
#define BP(p)  ((ops_bf16 *)(side ? (p)->d : (p)->h))

static pair *pair_bf16(const char *name, tu_rng *r, size_t n, double scale)
{
    ops_bf16 *b = malloc((n ? n : 1) * sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = ops_bf16_from_f32((float)(scale * tu_uniform(r)));
    pair *p = pair_new(name, b, n * sizeof *b);
    free(b);
    return p;
}

static void test_bf16_elementwise(void)
{
    enum { N = 1000 };
    tu_rng r = { 1100 };
    pair *x = pair_rand("x", &r, N, 2), *xf = pair_rand("xf", &r, N, 1);
    pair *y = pair_bf16("y", &r, N, 1), *a = pair_bf16("a", &r, N, 1), *b = pair_bf16("b", &r, N, 1);
    pair *q = pair_bf16("q", &r, N, 3), *dq = pair_bf16("dq", &r, N, 1), *f = pair_bf16("f", &r, N, 1);
    for (int side = 0; side < 2; side++) {
        OPS->f32_to_bf16(BP(y), FP(x), N);
        OPS->bf16_to_f32(FP(xf), BP(a), N);
        OPS->add_bf16(BP(y), BP(a), BP(b), N);
        OPS->axpy_bf16(BP(a), -0.75f, BP(y), N);
        OPS->quickgelu_forward_bf16(BP(b), BP(q), N);
        OPS->quickgelu_backward_bf16(BP(dq), BP(a), BP(q), N);
        OPS->gelu_forward_bf16(BP(y), BP(q), N);
        OPS->gelu_backward_bf16(BP(dq), BP(b), BP(q), N);
        OPS->fill_bf16(BP(f), 0.3f, N);
    }
    pairs_check("bf16 conversions / add / axpy / fill / quickgelu / gelu");
}

static void test_bf16_matmul(void)
{
    enum { M = 13, N = 17, K = 9 };
    for (int t = 0; t < 8; t++) {
        int ta = t & 1, tb = (t >> 1) & 1, with_bias = (t >> 2) & 1;
        int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        tu_rng r = { 1200 + t };
        pair *a = pair_bf16("a", &r, (size_t)(ta ? K : M) * lda, 1);
        pair *b = pair_bf16("b", &r, (size_t)(tb ? N : K) * ldb, 1);
        pair *c = pair_bf16("c", &r, (size_t)M * ldc, 1), *bias = pair_bf16("bias", &r, N, 1);
        pair *cf = pair_rand("c fp32", &r, (size_t)M * ldc, 1);
        for (int side = 0; side < 2; side++) {
            OPS->matmul_bf16(BP(c), BP(a), BP(b), M, N, K, ta, tb, lda, ldb, ldc, 0.5f,
                             with_bias ? 1.0f : 0.0f, with_bias ? BP(bias) : NULL);
            OPS->matmul_bf16_f32out(FP(cf), BP(a), BP(b), M, N, K, ta, tb, lda, ldb, ldc, 0.5f,
                                    with_bias ? 1.0f : 0.0f);
            /* k = 0 with a bias: C = beta C + bias */
            OPS->matmul_bf16(BP(c), BP(a), BP(b), M, N, 0, ta, tb, lda, ldb, ldc, 1.0f, 0.5f, BP(bias));
        }
        pairs_check("matmul_bf16 / matmul_bf16_f32out");
    }
    enum { R = 5, NB = 7, LD = 9 };
    tu_rng r = { 1210 };
    pair *y = pair_bf16("y", &r, R * LD, 1), *bias = pair_bf16("bias", &r, NB, 1);
    pair *db = pair_rand("dbias", &r, NB, 1);
    for (int side = 0; side < 2; side++) {
        OPS->bias_add_bf16(BP(y), BP(bias), R, NB, LD);
        OPS->bias_backward_bf16(FP(db), BP(y), R, NB, LD);
    }
    pairs_check("bias_add_bf16 / bias_backward_bf16");
}

static void test_bf16_rows_norms(void)
{
    enum { V = 11, D = 16, T = 6, NS = 4, TY = 10 };
    tu_rng r = { 1300 };
    int ids[T] = { 3, 0, 10, 3, 7, 3 }, pos[NS] = { 9, 2, 5, 0 };
    pair *w = pair_bf16("w", &r, V * D, 1), *y = pair_bf16("y", &r, T * D, 1);
    pair *dw = pair_rand("dw", &r, V * D, 1), *dy = pair_bf16("dy", &r, T * D, 1);
    pair *pi = pair_ints("ids", ids, T);
    pair *ys = pair_bf16("ys", &r, TY * D, 1), *src = pair_bf16("src", &r, NS * D, 1);
    pair *dsrc = pair_bf16("dsrc", &r, NS * D, 1), *dys = pair_bf16("dys", &r, TY * D, 1);
    pair *pp = pair_ints("pos", pos, NS);
    for (int side = 0; side < 2; side++) {
        OPS->embedding_forward_bf16(BP(y), BP(w), IP(pi), T, D);
        OPS->embedding_backward_bf16(FP(dw), BP(dy), IP(pi), T, D);
        OPS->scatter_rows_forward_bf16(BP(ys), BP(src), IP(pp), NS, D);
        OPS->scatter_rows_backward_bf16(BP(dsrc), BP(dys), IP(pp), NS, D);
    }
    pairs_check("embedding / scatter_rows bf16");
    pair *x = pair_bf16("x", &r, T * D, 2), *yn = pair_bf16("yn", &r, T * D, 1);
    pair *nw = pair_bf16("w", &r, D, 1), *nb = pair_bf16("b", &r, D, 1);
    pair *mean = pair_rand("mean", &r, T, 1), *rstd = pair_rand("rstd", &r, T, 1);
    pair *ndy = pair_bf16("dy", &r, T * D, 1), *dx = pair_bf16("dx", &r, T * D, 1);
    pair *ndw = pair_rand("dw", &r, D, 1), *ndb = pair_rand("db", &r, D, 1);
    pair *res = pair_bf16("res", &r, T * D, 1), *y2 = pair_bf16("y2", &r, T * D, 1);
    pair *rstd2 = pair_rand("rstd2", &r, T, 1), *du = pair_bf16("du", &r, T * D, 1);
    for (int side = 0; side < 2; side++) {
        OPS->layernorm_forward_bf16(BP(yn), FP(mean), FP(rstd), BP(x), BP(nw), BP(nb), T, D, 1e-6f);
        OPS->layernorm_backward_bf16(BP(dx), FP(ndw), FP(ndb), BP(ndy), BP(x), BP(nw), FP(mean),
                                     FP(rstd), T, D);
        OPS->layernorm_backward_bf16(BP(dx), NULL, NULL, BP(ndy), BP(x), BP(nw), FP(mean),
                                     FP(rstd), T, D);
        OPS->rmsnorm_forward_bf16(BP(y2), FP(rstd2), NULL, BP(x), BP(nw), T, D, 1e-6f);
        OPS->rmsnorm_forward_bf16(BP(y2), FP(rstd2), BP(res), BP(x), BP(nw), T, D, 1e-6f);
        OPS->rmsnorm_backward_bf16(BP(du), FP(ndw), BP(ndy), BP(res), BP(nw), FP(rstd2), T, D);
    }
    pairs_check("layernorm / rmsnorm bf16");
}

static void test_bf16_attention_rope(void)
{
    enum { H = 4, HK = 2, D = 16, LD = (H + 2 * HK) * D };
    int cu[4] = { 0, 5, 5, 17 }, T = 17;
    static const ops_rope mrope = { .kind = OPS_ROPE_MROPE, .head_dim = D, .theta = 1e6f,
                                    .mrope_section = { 2, 3, 3 } };
    tu_rng r = { 1400 };
    int pos[3 * 17];
    for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&r, 40);
    pair *qkv = pair_bf16("qkv", &r, (size_t)T * LD, 2), *o = pair_bf16("o", &r, (size_t)T * H * D, 1);
    pair *lse = pair_rand("lse", &r, (size_t)T * H, 1), *dout = pair_bf16("dout", &r, (size_t)T * H * D, 1);
    pair *dqkv = pair_bf16("dqkv", &r, (size_t)T * LD, 1), *pc = pair_ints("cu_seqlens", cu, 4);
    pair *pp = pair_ints("pos", pos, 3 * (size_t)T);
    for (int side = 0; side < 2; side++) {
        ops_attn a = { .cu_seqlens = IP(pc), .num_seqs = 3, .total_tokens = T, .max_seqlen = 12,
                       .num_heads = H, .num_kv_heads = HK, .head_dim = D, .ldq = LD, .ldk = LD,
                       .ldv = LD, .ldo = H * D, .scale = 0.25f, .causal = 1 };
        ops_bf16 *q = BP(qkv), *dq = BP(dqkv);
        OPS->rope_forward_bf16(q, IP(pp), T, H + HK, LD, &mrope);
        OPS->attention_forward_bf16(BP(o), FP(lse), q, q + H * D, q + (H + HK) * D, &a);
        OPS->attention_backward_bf16(dq, dq + H * D, dq + (H + HK) * D, BP(dout), q, q + H * D,
                                     q + (H + HK) * D, BP(o), FP(lse), &a);
        OPS->rope_backward_bf16(dq, IP(pp), T, H + HK, LD, &mrope);
    }
    pairs_check("rope / attention bf16");
}

static void test_bf16_mlp_loss_optim(void)
{
    enum { T = 9, D = 12, V = 37, N = 10 };
    tu_rng r = { 1500 };
    pair *gu = pair_bf16("gate|up", &r, T * 2 * N, 2), *y = pair_bf16("y", &r, T * N, 1);
    pair *dgu = pair_bf16("dgate|dup", &r, T * 2 * N, 1), *dy = pair_bf16("dy", &r, T * N, 1);
    for (int side = 0; side < 2; side++) {
        OPS->swiglu_forward_bf16(BP(y), BP(gu), BP(gu) + N, T, N, 2 * N);
        OPS->swiglu_backward_bf16(BP(dgu), BP(dgu) + N, BP(dy), BP(gu), BP(gu) + N, T, N, 2 * N);
    }
    pairs_check("swiglu bf16");
    int labels[T] = { 4, OPS_LABEL_IGNORE, 36, 0, 11, OPS_LABEL_IGNORE, 2, 2, 30 };
    size_t work_len = 2 * D + 68;
    pair *h = pair_bf16("h", &r, T * D, 1), *w = pair_bf16("w", &r, V * D, 1);
    pair *dh = pair_bf16("dh", &r, T * D, 1), *dw = pair_rand("dw", &r, V * D, 1);
    pair *lab = pair_ints("labels", labels, T), *loss = pair_rand("loss", &r, 1, 1);
    pair *loss_fwd = pair_rand("loss (forward only)", &r, 1, 1), *ws = pair_rand("work", &r, work_len, 1);
    for (int side = 0; side < 2; side++) {
        OPS->lmhead_xent_bf16(FP(loss_fwd), NULL, NULL, BP(h), BP(w), IP(lab), T, D, V, 7.0f,
                              FP(ws), work_len);
        OPS->lmhead_xent_bf16(FP(loss), BP(dh), FP(dw), BP(h), BP(w), IP(lab), T, D, V, 7.0f,
                              FP(ws), work_len);
    }
    pairs_check("lmhead_xent_bf16");
    enum { P = 300 };
    pair *p = pair_rand("p", &r, P, 1), *p16 = pair_bf16("p16", &r, P, 1);
    pair *m = pair_rand("m", &r, P, 0.1), *g = pair_rand("g", &r, P, 2);
    double *vv = tu_rand(&r, P, 0.01);
    for (int k = 0; k < P; k++) vv[k] = fabs(vv[k]);
    float *vf = tu_to_f32(vv, P);
    pair *v = pair_new("v", vf, P * sizeof(float)), *scale = pair_new("grad_scale", &(float){ 0.5f }, 4);
    free(vv);
    free(vf);
    for (int side = 0; side < 2; side++) {
        OPS->adamw_step_mixed(FP(p), BP(p16), FP(m), FP(v), FP(g), FP(scale), P, 1e-3, 0.9, 0.999,
                              1e-8, 0.01, 2);
        OPS->adamw_step_mixed(FP(p), BP(p16), FP(m), FP(v), FP(g), NULL, P, 1e-3, 0.9, 0.999, 1e-8,
                              0.0, 3);
    }
    pairs_check("adamw_step_mixed");
}

/* ---- 3. the memory entries --------------------------------------------------------------- */

static void test_memory(void)
{
    CHECK(strcmp(G->backend, "cpu-guarded") == 0 && G->host_accessible == 0);
    CHECK(ops_by_name("cpu-guarded") == G && ops_by_name("cpu") == C);
    /* every entry present: a NULL would crash a model on this backend, not fail a test */
    const void *const *e = (const void *const *)&G->mem_alloc;
    const void *const *end = (const void *const *)(G + 1);
    int missing = 0;
    for (; e < end; e++) missing += *e == NULL;
    CHECK_MSG(missing == 0, "%d entries of the cpu-guarded table are NULL", missing);
    static const size_t sizes[] = { 0, 1, 63, 4096, 4097, 100000 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *a = G->mem_alloc(n), *b = G->mem_alloc(n);
        CHECK_MSG(a && b && ((uintptr_t)a % 64) == 0 && ((uintptr_t)b % 64) == 0, "alloc %zu", n);
        unsigned char *h = malloc(n + 1), *back = malloc(n + 1);
        memset(back, 0xab, n + 1);
        G->mem_download(back, a, n);
        size_t nonzero = 0;
        for (size_t k = 0; k < n; k++) nonzero += back[k] != 0;
        CHECK_MSG(nonzero == 0, "alloc %zu: %zu bytes not zero", n, nonzero);
        for (size_t k = 0; k < n; k++) h[k] = (unsigned char)(k * 131 + 7);
        G->mem_upload(a, h, n);
        G->mem_copy(b, a, n);
        memset(back, 0, n + 1);
        G->mem_download(back, b, n);
        CHECK_MSG(memcmp(back, h, n) == 0, "upload -> copy -> download of %zu bytes", n);
        free(h);
        free(back);
        G->mem_free(a);
        G->mem_free(b);
    }
    G->mem_free(NULL);
    char msg[64] = "stale";
    CHECK(G->sync(msg, sizeof msg) == 0 && msg[0] == '\0');
    CHECK(G->sync(NULL, 0) == 0);
    /* many live regions, freed out of order: the registry keeps the rest usable */
    enum { NR = 300 };
    float *regs[NR];
    for (int i = 0; i < NR; i++) {
        regs[i] = G->mem_alloc((size_t)(i % 7 + 1) * sizeof(float));
        G->fill_f32(regs[i], (float)i, (size_t)(i % 7 + 1));
    }
    for (int i = 0; i < NR; i += 2) G->mem_free(regs[i]);
    int bad = 0;
    for (int i = 1; i < NR; i += 2) {
        float got[7];
        G->axpy_f32(regs[i], 1.0f, regs[i], (size_t)(i % 7 + 1));
        G->mem_download(got, regs[i], (size_t)(i % 7 + 1) * sizeof(float));
        for (int k = 0; k < i % 7 + 1; k++) bad += got[k] != 2.0f * (float)i;
        G->mem_free(regs[i]);
    }
    CHECK_MSG(bad == 0, "300 regions: %d wrong values", bad);
}

/* Two threads using the table at once: entries are serialised, nothing faults, results hold. */
typedef struct worker_arg { int id, bad; } worker_arg;

static void *worker_run(void *p)
{
    worker_arg *w = p;
    enum { N = 5000 };
    float *host = malloc(N * sizeof *host), *d = G->mem_alloc(N * sizeof *host);
    for (int it = 0; it < 200; it++) {
        G->fill_f32(d, (float)w->id, N);
        G->axpy_f32(d, 2.0f, d, N);
        G->mem_download(host, d, N * sizeof *host);
        for (int k = 0; k < N; k += 97) w->bad += host[k] != 3.0f * (float)w->id;
    }
    G->mem_free(d);
    free(host);
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[2];
    worker_arg a[2] = { { 1, 0 }, { 2, 0 } };
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, worker_run, &a[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK_MSG(a[0].bad == 0 && a[1].bad == 0, "threads: %d, %d wrong values", a[0].bad, a[1].bad);
}

/* ---- 1. it faults -------------------------------------------------------------------------- */

typedef enum misuse {
    MISUSE_READ, MISUSE_WRITE, MISUSE_READ_AFTER_OP, MISUSE_READ_AFTER_UPLOAD,
    MISUSE_HOST_TO_OP, MISUSE_DEVICE_AS_HOST, MISUSE_PAST_END, MISUSE_FOREIGN_FREE,
    MISUSE_COUNT,
} misuse;

static const struct {
    const char *what;
    int         signal;
    const char *message;  /* in the child's stderr; NULL: a plain fault has none */
} MISUSES[MISUSE_COUNT] = {
    [MISUSE_READ]              = { "host read of guarded memory", SIGSEGV, NULL },
    [MISUSE_WRITE]             = { "host memset of guarded memory", SIGSEGV, NULL },
    [MISUSE_READ_AFTER_OP]     = { "host read after an op ran", SIGSEGV, NULL },
    [MISUSE_READ_AFTER_UPLOAD] = { "host read after mem_upload", SIGSEGV, NULL },
    [MISUSE_HOST_TO_OP]        = { "host pointer given to an op", SIGABRT, "add_f32: b" },
    [MISUSE_DEVICE_AS_HOST]    = { "backend pointer as mem_upload's source", SIGABRT,
                                   "mem_upload: src_host" },
    [MISUSE_PAST_END]          = { "an op reaching past an allocation", SIGABRT, "fill_f32: y" },
    [MISUSE_FOREIGN_FREE]      = { "mem_free of a host pointer", SIGABRT, "mem_free" },
};

static void misuse_child(misuse m)
{
    enum { N = 256 };
    float *d = G->mem_alloc(N * sizeof(float)), *d2 = G->mem_alloc(N * sizeof(float));
    static float host[N];
    volatile float sink = 0;
    switch (m) {
    case MISUSE_READ:              sink = d[3]; break;
    case MISUSE_WRITE:             memset(d, 0, N * sizeof(float)); break;
    case MISUSE_READ_AFTER_OP:     G->fill_f32(d, 1.0f, N); sink = d[0]; break;
    case MISUSE_READ_AFTER_UPLOAD: G->mem_upload(d, host, sizeof host); sink = d[N - 1]; break;
    case MISUSE_HOST_TO_OP:        G->add_f32(d, d2, host, N); break;
    case MISUSE_DEVICE_AS_HOST:    G->mem_upload(d, d2, 16); break;
    case MISUSE_PAST_END:          G->fill_f32(d, 0.0f, N + 1); break;
    case MISUSE_FOREIGN_FREE:      G->mem_free(host); break;
    case MISUSE_COUNT:             break;
    }
    (void)sink;
    _exit(0);  /* reached only when the misuse went unnoticed */
}

/* A child about to fault: dies of the signal itself (no handler a sanitizer installed, no core
 * file left behind). */
static void child_plain_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
    struct rlimit none = { 0, 0 };
    setrlimit(RLIMIT_CORE, &none);
}

static void test_faults(void)
{
    for (int m = 0; m < MISUSE_COUNT; m++) {
        int fds[2];
        if (pipe(fds) != 0) { CHECK(0); return; }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(fds[1], 2);
            close(fds[0]);
            child_plain_signals();
            misuse_child((misuse)m);
        }
        close(fds[1]);
        char out[2048];
        size_t got = 0;
        ssize_t k;
        while ((k = read(fds[0], out + got, sizeof out - 1 - got)) > 0) got += (size_t)k;
        out[got] = '\0';
        close(fds[0]);
        int st = 0;
        waitpid(pid, &st, 0);
        int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        /* under AddressSanitizer, which may keep its own SIGSEGV handler: its report, then exit 1 */
        if (!sig && WIFEXITED(st) && WEXITSTATUS(st) != 0 && strstr(out, "SEGV on unknown address"))
            sig = SIGSEGV;
        CHECK_MSG(sig == MISUSES[m].signal, "%s: child ended with %s %d, wanted signal %d",
                  MISUSES[m].what, sig ? "signal" : "exit", sig ? sig : WEXITSTATUS(st),
                  MISUSES[m].signal);
        if (MISUSES[m].message) CHECK_STR_CONTAINS(out, MISUSES[m].message);
        fprintf(stderr, "  %-40s -> signal %d%s%.*s", MISUSES[m].what, sig,
                MISUSES[m].message ? ": " : "\n", MISUSES[m].message ? (int)got : 0, out);
    }
}

int main(void)
{
    C = ops_cpu();
    G = ops_cpu_guarded();
    test_faults();
    test_memory();
    test_elementwise();
    test_matmul();
    test_bias();
    test_embedding_scatter();
    test_norms();
    test_rope();
    test_attention();
    test_swiglu();
    test_lmhead_xent();
    test_optimizer();
    test_bf16_elementwise();
    test_bf16_matmul();
    test_bf16_rows_norms();
    test_bf16_attention_rope();
    test_bf16_mlp_loss_optim();
    test_threads();
    return check_report("ops_guarded");
}
