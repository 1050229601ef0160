/* Gradient checks of every CPU op with a backward, against central finite differences in double.
 *
 * How: the kernels are compiled twice from one source (kernels/cpu/kernels_cpu.h), so this test
 * links the double build (cpu_*_f64) and runs the finite differences on it: the math checked is
 * the math that ships, with only the scalar type changed, and double leaves the difference
 * quotient accurate to ~1e-9 instead of float's ~1e-3, tight enough to catch a wrong term that a
 * float check would hide in noise. A second comparison then runs the shipped float ops (through
 * ops_cpu()'s table) on the same inputs and checks their outputs and gradients against the
 * double build with float-sized tolerances: that covers what only the float build has (the
 * polynomial exp, float accumulation, BLAS sgemm). Gradients are seeded with random values first
 * and the difference is taken, so the "+=" contract of every backward is checked too.
 *
 * Each case: random inputs, a random projection R of the outputs, L = sum(R * out); the analytic
 * gradient of L is compared with (L(x + h e_i) - L(x - h e_i)) / 2h on every element of small
 * inputs and on a random sample of larger ones. */
#define ADAPT_CPU_F64 1
#include "../check.h"
#include "kernels_cpu.h"
#include "test_ops_util.h"

#include <stdio.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { GC_MAX = 4, GC_SAMPLES = 160 };

typedef struct gc_op gc_op;
struct gc_op {
    const char *name;
    int         n_in, n_out;
    size_t      in_len[GC_MAX], out_len[GC_MAX];
    double     *in[GC_MAX];
    const void *ctx;
    /* out = f(in), double build */
    void (*forward)(const gc_op *op, double **out);
    /* din += J^T dout, double build */
    void (*backward)(const gc_op *op, double *const *dout, double **din);
    /* the float ops on the same inputs: out = f(in), din = J^T dout (din zeroed by the caller) */
    void (*run_f32)(const gc_op *op, double *const *dout, double **out, double **din);
    double tol_f32;  /* relative (to each tensor's max) tolerance of the float build */
    int    samples;  /* elements checked per input when it is larger (0: GC_SAMPLES) */
};

static const ops_table *OPS;
static double worst_fd, worst_f32;

static double gc_objective(const gc_op *op, double *const *r, double **out)
{
    op->forward(op, out);
    double L = 0;
    for (int o = 0; o < op->n_out; o++)
        for (size_t i = 0; i < op->out_len[o]; i++) L += r[o][i] * out[o][i];
    return L;
}

/* central differences on input j at sampled indices; returns the max error relative to the
 * larger of the tensor's gradient scale and 1e-3 */
static double gc_fd_input(const gc_op *op, int j, const double *grad, double *const *r, double **out,
                          tu_rng *rng)
{
    size_t n = op->in_len[j];
    double scale = tu_max_abs(grad, n), worst = 0;
    if (scale < 1e-3) scale = 1e-3;
    size_t cap = op->samples ? (size_t)op->samples : GC_SAMPLES;
    size_t samples = n <= cap ? n : cap;
    for (size_t s = 0; s < samples; s++) {
        size_t i = n <= cap ? s : (s == 0 ? 0 : (s == 1 ? n - 1 : (size_t)tu_int(rng, (int)n)));
        double x0 = op->in[j][i], h = 1e-5 * (fabs(x0) > 1 ? fabs(x0) : 1);
        op->in[j][i] = x0 + h;
        double lp = gc_objective(op, r, out);
        op->in[j][i] = x0 - h;
        double lm = gc_objective(op, r, out);
        op->in[j][i] = x0;
        double fd = (lp - lm) / (2 * h), e = fabs(fd - grad[i]) / scale;
        if (isnan(fd) || isnan(grad[i])) e = INFINITY;
        worst = e > worst ? e : worst;
    }
    return worst;
}

static void gc_run(const gc_op *op, uint64_t seed)
{
    double t_start = tu_seconds();
    tu_rng rng = {seed};
    double *out[GC_MAX], *r[GC_MAX], *din[GC_MAX], *grad[GC_MAX], *out32[GC_MAX], *din32[GC_MAX];
    for (int o = 0; o < op->n_out; o++) {
        out[o] = tu_zeros(op->out_len[o]);
        out32[o] = tu_zeros(op->out_len[o]);
        r[o] = tu_rand(&rng, op->out_len[o], 1.0);
    }
    op->forward(op, out);
    for (int j = 0; j < op->n_in; j++) {
        din[j] = tu_rand(&rng, op->in_len[j], 1.0);
        grad[j] = tu_dup(din[j], op->in_len[j]);
        din32[j] = tu_zeros(op->in_len[j]);
    }
    op->backward(op, r, din);
    for (int j = 0; j < op->n_in; j++)
        for (size_t i = 0; i < op->in_len[j]; i++) grad[j][i] = din[j][i] - grad[j][i];

    /* the thousands of tiny forward passes of the differences run on one thread: waking a team
     * for each costs more than the pass on a busy machine; the analytic gradient and the float
     * run above and below keep the ops' own threading */
    double fd_err = 0, f32_err = 0;
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    for (int j = 0; j < op->n_in; j++) {
        double e = gc_fd_input(op, j, grad[j], r, out, &rng);
        fd_err = e > fd_err ? e : fd_err;
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    op->forward(op, out);
    op->run_f32(op, r, out32, din32);
    for (int o = 0; o < op->n_out; o++) {
        double e = tu_rel_err(out32[o], out[o], op->out_len[o], 1e-3);
        f32_err = e > f32_err ? e : f32_err;
    }
    for (int j = 0; j < op->n_in; j++) {
        double e = tu_rel_err(din32[j], grad[j], op->in_len[j], 1e-3);
        f32_err = e > f32_err ? e : f32_err;
    }
    CHECK_MSG(fd_err < 1e-6, "%s: finite-difference error %.3g", op->name, fd_err);
    CHECK_MSG(f32_err < op->tol_f32, "%s: float vs double error %.3g (tol %.1g)", op->name, f32_err,
              op->tol_f32);
    fprintf(stderr, "  %-36s fd(f64) %.2e   f32-vs-f64 %.2e (tol %.0e)  %.2f s\n", op->name, fd_err,
            f32_err, op->tol_f32, tu_seconds() - t_start);
    worst_fd = fd_err > worst_fd ? fd_err : worst_fd;
    worst_f32 = f32_err > worst_f32 ? f32_err : worst_f32;
    for (int o = 0; o < op->n_out; o++) { free(out[o]); free(out32[o]); free(r[o]); }
    for (int j = 0; j < op->n_in; j++) { free(din[j]); free(grad[j]); free(din32[j]); }
}

/* float copies of an op's inputs and of dout, and the copy-back of float results */
typedef struct gc_f32 {
    float *in[GC_MAX], *dout[GC_MAX], *out[GC_MAX], *din[GC_MAX];
} gc_f32;

static gc_f32 gc_f32_begin(const gc_op *op, double *const *dout)
{
    gc_f32 f;
    for (int j = 0; j < op->n_in; j++) {
        f.in[j] = tu_to_f32(op->in[j], op->in_len[j]);
        f.din[j] = calloc(op->in_len[j] + 1, sizeof(float));
    }
    for (int o = 0; o < op->n_out; o++) {
        f.dout[o] = tu_to_f32(dout[o], op->out_len[o]);
        f.out[o] = calloc(op->out_len[o] + 1, sizeof(float));
    }
    return f;
}

static void gc_f32_end(const gc_op *op, gc_f32 *f, double **out, double **din)
{
    for (int j = 0; j < op->n_in; j++) {
        for (size_t i = 0; i < op->in_len[j]; i++) din[j][i] = f->din[j][i];
        free(f->in[j]);
        free(f->din[j]);
    }
    for (int o = 0; o < op->n_out; o++) {
        for (size_t i = 0; i < op->out_len[o]; i++) out[o][i] = f->out[o][i];
        free(f->dout[o]);
        free(f->out[o]);
    }
}

/* ---- Linear: Y = X W^T + b ------------------------------------------------------------------ */
typedef struct { int m, n, k; } lin_ctx;

static void lin_fwd(const gc_op *op, double **out)
{
    const lin_ctx *c = op->ctx;
    cpu_matmul_f64(out[0], op->in[0], op->in[1], c->m, c->n, c->k, 0, 1, c->k, c->k, c->n, 1, 0);
    cpu_bias_add_f64(out[0], op->in[2], c->m, c->n, c->n);
}

static void lin_bwd(const gc_op *op, double *const *dout, double **din)
{
    const lin_ctx *c = op->ctx;
    cpu_matmul_f64(din[0], dout[0], op->in[1], c->m, c->k, c->n, 0, 0, c->n, c->k, c->k, 1, 1);
    cpu_matmul_f64(din[1], dout[0], op->in[0], c->n, c->k, c->m, 1, 0, c->n, c->k, c->k, 1, 1);
    cpu_bias_backward_f64(din[2], dout[0], c->m, c->n, c->n);
}

static void lin_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const lin_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    OPS->matmul_f32(f.out[0], f.in[0], f.in[1], c->m, c->n, c->k, 0, 1, c->k, c->k, c->n, 1, 0);
    OPS->bias_add_f32(f.out[0], f.in[2], c->m, c->n, c->n);
    OPS->matmul_f32(f.din[0], f.dout[0], f.in[1], c->m, c->k, c->n, 0, 0, c->n, c->k, c->k, 1, 1);
    OPS->matmul_f32(f.din[1], f.dout[0], f.in[0], c->n, c->k, c->m, 1, 0, c->n, c->k, c->k, 1, 1);
    OPS->bias_backward_f32(f.din[2], f.dout[0], c->m, c->n, c->n);
    gc_f32_end(op, &f, out, din);
}

static void test_linear(int m, int n, int k, uint64_t seed)
{
    tu_rng rng = {seed};
    lin_ctx c = {m, n, k};
    char name[64];
    snprintf(name, sizeof name, "linear %dx%dx%d", m, n, k);
    gc_op op = {.name = name, .n_in = 3, .n_out = 1, .ctx = &c, .forward = lin_fwd,
                .backward = lin_bwd, .run_f32 = lin_f32, .tol_f32 = 2e-6};
    op.in_len[0] = (size_t)m * k; op.in_len[1] = (size_t)n * k; op.in_len[2] = n;
    op.out_len[0] = (size_t)m * n;
    for (int j = 0; j < 3; j++) op.in[j] = tu_rand(&rng, op.in_len[j], 1.0);
    gc_run(&op, seed + 1);
    for (int j = 0; j < 3; j++) free(op.in[j]);
}

/* ---- embedding lookup and image-feature scatter --------------------------------------------- */
typedef struct { int T, d, n; const int *idx; } emb_ctx;

static void emb_fwd(const gc_op *op, double **out)
{
    const emb_ctx *c = op->ctx;
    cpu_embedding_forward_f64(out[0], op->in[0], c->idx, c->T, c->d);
}

static void emb_bwd(const gc_op *op, double *const *dout, double **din)
{
    const emb_ctx *c = op->ctx;
    cpu_embedding_backward_f64(din[0], dout[0], c->idx, c->T, c->d);
}

static void emb_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const emb_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    OPS->embedding_forward_f32(f.out[0], f.in[0], c->idx, c->T, c->d);
    OPS->embedding_backward_f32(f.din[0], f.dout[0], c->idx, c->T, c->d);
    gc_f32_end(op, &f, out, din);
}

/* y = base with rows pos[i] replaced by src[i] */
static void sct_fwd(const gc_op *op, double **out)
{
    const emb_ctx *c = op->ctx;
    memcpy(out[0], op->in[0], op->in_len[0] * sizeof(double));
    cpu_scatter_rows_forward_f64(out[0], op->in[1], c->idx, c->n, c->d);
}

static void sct_bwd(const gc_op *op, double *const *dout, double **din)
{
    const emb_ctx *c = op->ctx;
    double *g = tu_dup(dout[0], op->out_len[0]);
    cpu_scatter_rows_backward_f64(din[1], g, c->idx, c->n, c->d);
    for (size_t i = 0; i < op->in_len[0]; i++) din[0][i] += g[i];
    free(g);
}

static void sct_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const emb_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    memcpy(f.out[0], f.in[0], op->in_len[0] * sizeof(float));
    OPS->scatter_rows_forward_f32(f.out[0], f.in[1], c->idx, c->n, c->d);
    OPS->scatter_rows_backward_f32(f.din[1], f.dout[0], c->idx, c->n, c->d);
    for (size_t i = 0; i < op->in_len[0]; i++) f.din[0][i] += f.dout[0][i];
    gc_f32_end(op, &f, out, din);
}

static void test_embedding(uint64_t seed)
{
    tu_rng rng = {seed};
    enum { T = 41, D = 13, V = 17, N = 9 };
    int ids[T], pos[N];
    for (int t = 0; t < T; t++) ids[t] = tu_int(&rng, V);  /* repeats on purpose: 41 tokens, 17 rows */
    for (int i = 0; i < N; i++) pos[i] = 3 + 4 * i;        /* distinct rows, as image pads are */
    emb_ctx ce = {T, D, 0, ids};
    gc_op op = {.name = "embedding (repeated ids)", .n_in = 1, .n_out = 1, .ctx = &ce,
                .forward = emb_fwd, .backward = emb_bwd, .run_f32 = emb_f32, .tol_f32 = 1e-6};
    op.in_len[0] = (size_t)V * D; op.out_len[0] = (size_t)T * D;
    op.in[0] = tu_rand(&rng, op.in_len[0], 1.0);
    gc_run(&op, seed + 1);
    free(op.in[0]);

    emb_ctx cs = {T, D, N, pos};
    gc_op sc = {.name = "scatter image rows", .n_in = 2, .n_out = 1, .ctx = &cs,
                .forward = sct_fwd, .backward = sct_bwd, .run_f32 = sct_f32, .tol_f32 = 1e-6};
    sc.in_len[0] = (size_t)T * D; sc.in_len[1] = (size_t)N * D; sc.out_len[0] = (size_t)T * D;
    for (int j = 0; j < 2; j++) sc.in[j] = tu_rand(&rng, sc.in_len[j], 1.0);
    gc_run(&sc, seed + 2);
    for (int j = 0; j < 2; j++) free(sc.in[j]);
}

/* ---- LayerNorm, RMSNorm (plain and fused with the residual add) ------------------------------ */
typedef struct { int T, d; float eps; } norm_ctx;

static void ln_fwd(const gc_op *op, double **out)
{
    const norm_ctx *c = op->ctx;
    double *mean = tu_zeros(c->T), *rstd = tu_zeros(c->T);
    cpu_layernorm_forward_f64(out[0], mean, rstd, op->in[0], op->in[1], op->in[2], c->T, c->d, c->eps);
    free(mean); free(rstd);
}

static void ln_bwd(const gc_op *op, double *const *dout, double **din)
{
    const norm_ctx *c = op->ctx;
    double *mean = tu_zeros(c->T), *rstd = tu_zeros(c->T), *y = tu_zeros(op->out_len[0]);
    cpu_layernorm_forward_f64(y, mean, rstd, op->in[0], op->in[1], op->in[2], c->T, c->d, c->eps);
    cpu_layernorm_backward_f64(din[0], din[1], din[2], dout[0], op->in[0], op->in[1], mean, rstd,
                               c->T, c->d);
    free(mean); free(rstd); free(y);
}

static void ln_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const norm_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    float *mean = calloc(c->T, sizeof *mean), *rstd = calloc(c->T, sizeof *rstd);
    OPS->layernorm_forward_f32(f.out[0], mean, rstd, f.in[0], f.in[1], f.in[2], c->T, c->d, c->eps);
    OPS->layernorm_backward_f32(f.din[0], f.din[1], f.din[2], f.dout[0], f.in[0], f.in[1], mean,
                                rstd, c->T, c->d);
    free(mean); free(rstd);
    gc_f32_end(op, &f, out, din);
}

/* plain: in = (x, w), out = y. fused: in = (x, res, w), out = (y, res + x) */
static void rms_fwd(const gc_op *op, double **out)
{
    const norm_ctx *c = op->ctx;
    double *rstd = tu_zeros(c->T);
    if (op->n_in == 2) {
        cpu_rmsnorm_forward_f64(out[0], rstd, NULL, op->in[0], op->in[1], c->T, c->d, c->eps);
    } else {
        memcpy(out[1], op->in[1], op->in_len[1] * sizeof(double));
        cpu_rmsnorm_forward_f64(out[0], rstd, out[1], op->in[0], op->in[2], c->T, c->d, c->eps);
    }
    free(rstd);
}

static void rms_bwd(const gc_op *op, double *const *dout, double **din)
{
    const norm_ctx *c = op->ctx;
    size_t n = op->in_len[0];
    double *rstd = tu_zeros(c->T), *y = tu_zeros(n), *u = tu_dup(op->in[0], n);
    if (op->n_in == 2) {
        cpu_rmsnorm_forward_f64(y, rstd, NULL, op->in[0], op->in[1], c->T, c->d, c->eps);
        cpu_rmsnorm_backward_f64(din[0], din[1], dout[0], u, op->in[1], rstd, c->T, c->d);
    } else {
        /* the residual stream's gradient collects the norm's, then feeds both x and res */
        memcpy(u, op->in[1], n * sizeof(double));
        cpu_rmsnorm_forward_f64(y, rstd, u, op->in[0], op->in[2], c->T, c->d, c->eps);
        double *du = tu_dup(dout[1], n);
        cpu_rmsnorm_backward_f64(du, din[2], dout[0], u, op->in[2], rstd, c->T, c->d);
        for (size_t i = 0; i < n; i++) { din[0][i] += du[i]; din[1][i] += du[i]; }
        free(du);
    }
    free(rstd); free(y); free(u);
}

static void rms_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const norm_ctx *c = op->ctx;
    size_t n = op->in_len[0];
    gc_f32 f = gc_f32_begin(op, dout);
    float *rstd = calloc(c->T, sizeof *rstd);
    if (op->n_in == 2) {
        OPS->rmsnorm_forward_f32(f.out[0], rstd, NULL, f.in[0], f.in[1], c->T, c->d, c->eps);
        OPS->rmsnorm_backward_f32(f.din[0], f.din[1], f.dout[0], f.in[0], f.in[1], rstd, c->T, c->d);
    } else {
        memcpy(f.out[1], f.in[1], n * sizeof(float));
        OPS->rmsnorm_forward_f32(f.out[0], rstd, f.out[1], f.in[0], f.in[2], c->T, c->d, c->eps);
        memcpy(f.din[1], f.dout[1], n * sizeof(float));
        OPS->rmsnorm_backward_f32(f.din[1], f.din[2], f.dout[0], f.out[1], f.in[2], rstd, c->T, c->d);
        memcpy(f.din[0], f.din[1], n * sizeof(float));
    }
    free(rstd);
    gc_f32_end(op, &f, out, din);
}

static void test_norms(uint64_t seed)
{
    tu_rng rng = {seed};
    norm_ctx c = {19, 37, 1e-6f};
    size_t n = (size_t)c.T * c.d;
    gc_op ln = {.name = "layernorm", .n_in = 3, .n_out = 1, .ctx = &c, .forward = ln_fwd,
                .backward = ln_bwd, .run_f32 = ln_f32, .tol_f32 = 1e-6};
    ln.in_len[0] = n; ln.in_len[1] = ln.in_len[2] = c.d; ln.out_len[0] = n;
    ln.in[0] = tu_rand(&rng, n, 2.0);
    for (size_t i = 0; i < n; i++) ln.in[0][i] += 0.5;  /* a non-zero mean, as activations have */
    ln.in[1] = tu_rand(&rng, c.d, 1.0); ln.in[2] = tu_rand(&rng, c.d, 1.0);
    gc_run(&ln, seed + 1);
    for (int j = 0; j < 3; j++) free(ln.in[j]);

    gc_op rms = {.name = "rmsnorm", .n_in = 2, .n_out = 1, .ctx = &c, .forward = rms_fwd,
                 .backward = rms_bwd, .run_f32 = rms_f32, .tol_f32 = 1e-6};
    rms.in_len[0] = n; rms.in_len[1] = c.d; rms.out_len[0] = n;
    rms.in[0] = tu_rand(&rng, n, 2.0); rms.in[1] = tu_rand(&rng, c.d, 1.0);
    gc_run(&rms, seed + 2);
    for (int j = 0; j < 2; j++) free(rms.in[j]);

    gc_op fused = {.name = "rmsnorm + residual add", .n_in = 3, .n_out = 2, .ctx = &c,
                   .forward = rms_fwd, .backward = rms_bwd, .run_f32 = rms_f32, .tol_f32 = 1e-6};
    fused.in_len[0] = fused.in_len[1] = n; fused.in_len[2] = c.d;
    fused.out_len[0] = fused.out_len[1] = n;
    fused.in[0] = tu_rand(&rng, n, 1.0); fused.in[1] = tu_rand(&rng, n, 2.0);
    fused.in[2] = tu_rand(&rng, c.d, 1.0);
    gc_run(&fused, seed + 3);
    for (int j = 0; j < 3; j++) free(fused.in[j]);
}

/* ---- rotary embeddings ----------------------------------------------------------------------- */
typedef struct { int T, heads, ldx; const int *pos; ops_rope rope; } rope_ctx;

static void rope_fwd(const gc_op *op, double **out)
{
    const rope_ctx *c = op->ctx;
    memcpy(out[0], op->in[0], op->in_len[0] * sizeof(double));
    cpu_rope_forward_f64(out[0], c->pos, c->T, c->heads, c->ldx, &c->rope);
}

static void rope_bwd(const gc_op *op, double *const *dout, double **din)
{
    const rope_ctx *c = op->ctx;
    double *g = tu_dup(dout[0], op->out_len[0]);
    cpu_rope_backward_f64(g, c->pos, c->T, c->heads, c->ldx, &c->rope);
    for (size_t i = 0; i < op->in_len[0]; i++) din[0][i] += g[i];
    free(g);
}

static void rope_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const rope_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    memcpy(f.out[0], f.in[0], op->in_len[0] * sizeof(float));
    OPS->rope_forward_f32(f.out[0], c->pos, c->T, c->heads, c->ldx, &c->rope);
    memcpy(f.din[0], f.dout[0], op->in_len[0] * sizeof(float));
    OPS->rope_backward_f32(f.din[0], c->pos, c->T, c->heads, c->ldx, &c->rope);
    gc_f32_end(op, &f, out, din);
}

static void test_rope_case(const char *name, ops_rope rope, int n_ids, int max_pos, double tol,
                           uint64_t seed)
{
    tu_rng rng = {seed};
    enum { T = 23, HEADS = 3 };
    int ldx = HEADS * rope.head_dim + 5;  /* padding columns: untouched, gradient passes through */
    int *pos = malloc(sizeof(int) * n_ids * T);
    for (int i = 0; i < n_ids * T; i++) pos[i] = tu_int(&rng, max_pos);
    rope_ctx c = {T, HEADS, ldx, pos, rope};
    gc_op op = {.name = name, .n_in = 1, .n_out = 1, .ctx = &c, .forward = rope_fwd,
                .backward = rope_bwd, .run_f32 = rope_f32, .tol_f32 = tol};
    op.in_len[0] = op.out_len[0] = (size_t)T * ldx;
    op.in[0] = tu_rand(&rng, op.in_len[0], 1.0);
    gc_run(&op, seed + 1);
    free(op.in[0]);
    free(pos);
}

static void test_rope(uint64_t seed)
{
    /* float angles at positions in the thousands lose ~1e-5 rad to rounding, exactly as
     * transformers' float angles do; the double build keeps the exact angle, hence the looser
     * float tolerance as positions grow */
    test_rope_case("rope 1-D (theta 1e6, pos < 4096)",
                   (ops_rope){OPS_ROPE_1D, 16, 1e6f, {0, 0, 0}}, 1, 4096, 2e-4, seed);
    test_rope_case("rope vision 2-D (pos < 64)",
                   (ops_rope){OPS_ROPE_VISION_2D, 16, 1e4f, {0, 0, 0}}, 2, 64, 1e-5, seed + 10);
    test_rope_case("rope M-RoPE [2,3,3] (pos < 512)",
                   (ops_rope){OPS_ROPE_MROPE, 16, 1e6f, {2, 3, 3}}, 3, 512, 3e-5, seed + 20);
}

/* ---- attention ------------------------------------------------------------------------------- */
typedef struct { ops_attn a; } att_ctx;

static void att_fwd(const gc_op *op, double **out)
{
    const att_ctx *c = op->ctx;
    double *lse = tu_zeros((size_t)c->a.total_tokens * c->a.num_heads);
    cpu_attention_forward_f64(out[0], lse, op->in[0], op->in[1], op->in[2], &c->a);
    free(lse);
}

static void att_bwd(const gc_op *op, double *const *dout, double **din)
{
    const att_ctx *c = op->ctx;
    double *lse = tu_zeros((size_t)c->a.total_tokens * c->a.num_heads);
    double *o = tu_zeros(op->out_len[0]);
    cpu_attention_forward_f64(o, lse, op->in[0], op->in[1], op->in[2], &c->a);
    cpu_attention_backward_f64(din[0], din[1], din[2], dout[0], op->in[0], op->in[1], op->in[2], o,
                               lse, &c->a);
    free(lse); free(o);
}

static void att_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const att_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    float *lse = calloc((size_t)c->a.total_tokens * c->a.num_heads, sizeof *lse);
    OPS->attention_forward_f32(f.out[0], lse, f.in[0], f.in[1], f.in[2], &c->a);
    OPS->attention_backward_f32(f.din[0], f.din[1], f.din[2], f.dout[0], f.in[0], f.in[1], f.in[2],
                                f.out[0], lse, &c->a);
    free(lse);
    gc_f32_end(op, &f, out, din);
}

static void test_attention_case(const char *name, const int *lens, int nseq, int heads, int kv_heads,
                                int hd, int causal, uint64_t seed)
{
    tu_rng rng = {seed};
    int cu[16] = {0}, maxlen = 0;
    for (int s = 0; s < nseq; s++) {
        cu[s + 1] = cu[s] + lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    }
    int T = cu[nseq];
    att_ctx c = {{.cu_seqlens = cu, .num_seqs = nseq, .total_tokens = T, .max_seqlen = maxlen,
                  .num_heads = heads, .num_kv_heads = kv_heads, .head_dim = hd,
                  .ldq = heads * hd + 3, .ldk = kv_heads * hd, .ldv = kv_heads * hd + 1,
                  .ldo = heads * hd, .scale = 1.0f / sqrtf((float)hd), .causal = causal}};
    gc_op op = {.name = name, .n_in = 3, .n_out = 1, .ctx = &c, .forward = att_fwd,
                .backward = att_bwd, .run_f32 = att_f32, .tol_f32 = 3e-6, .samples = 48};
    op.in_len[0] = (size_t)T * c.a.ldq; op.in_len[1] = (size_t)T * c.a.ldk;
    op.in_len[2] = (size_t)T * c.a.ldv; op.out_len[0] = (size_t)T * c.a.ldo;
    for (int j = 0; j < 3; j++) op.in[j] = tu_rand(&rng, op.in_len[j], 1.5);
    gc_run(&op, seed + 1);
    for (int j = 0; j < 3; j++) free(op.in[j]);
}

static void test_attention(uint64_t seed)
{
    /* lengths straddle the 64-row query blocks and 64-key tiles; one segment is empty */
    static const int lm[] = {5, 70, 1, 0, 67};
    static const int vis[] = {9, 66, 20};
    test_attention_case("attention causal GQA 4/2, 5 segs", lm, 5, 4, 2, 8, 1, seed);
    test_attention_case("attention bidirectional, 3 segs", vis, 3, 3, 3, 12, 0, seed + 10);
    static const int one[] = {130};
    test_attention_case("attention causal MQA 2/1, one seg", one, 1, 2, 1, 6, 1, seed + 20);
}

/* ---- activations ----------------------------------------------------------------------------- */
typedef struct { int T, n; } act_ctx;

static void swi_fwd(const gc_op *op, double **out)
{
    const act_ctx *c = op->ctx;
    cpu_swiglu_forward_f64(out[0], op->in[0], op->in[0] + c->n, c->T, c->n, 2 * c->n);
}

static void swi_bwd(const gc_op *op, double *const *dout, double **din)
{
    const act_ctx *c = op->ctx;
    cpu_swiglu_backward_f64(din[0], din[0] + c->n, dout[0], op->in[0], op->in[0] + c->n, c->T, c->n,
                            2 * c->n);
}

static void swi_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const act_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    OPS->swiglu_forward_f32(f.out[0], f.in[0], f.in[0] + c->n, c->T, c->n, 2 * c->n);
    OPS->swiglu_backward_f32(f.din[0], f.din[0] + c->n, f.dout[0], f.in[0], f.in[0] + c->n, c->T,
                             c->n, 2 * c->n);
    gc_f32_end(op, &f, out, din);
}

/* element-wise ones: ctx picks quickgelu (n = 0) or gelu (n = 1) */
static void elt_fwd(const gc_op *op, double **out)
{
    const act_ctx *c = op->ctx;
    if (c->n == 0) cpu_quickgelu_forward_f64(out[0], op->in[0], op->in_len[0]);
    else cpu_gelu_forward_f64(out[0], op->in[0], op->in_len[0]);
}

static void elt_bwd(const gc_op *op, double *const *dout, double **din)
{
    const act_ctx *c = op->ctx;
    if (c->n == 0) cpu_quickgelu_backward_f64(din[0], dout[0], op->in[0], op->in_len[0]);
    else cpu_gelu_backward_f64(din[0], dout[0], op->in[0], op->in_len[0]);
}

static void elt_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const act_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    size_t n = op->in_len[0];
    if (c->n == 0) {
        OPS->quickgelu_forward_f32(f.out[0], f.in[0], n);
        OPS->quickgelu_backward_f32(f.din[0], f.dout[0], f.in[0], n);
    } else {
        OPS->gelu_forward_f32(f.out[0], f.in[0], n);
        OPS->gelu_backward_f32(f.din[0], f.dout[0], f.in[0], n);
    }
    gc_f32_end(op, &f, out, din);
}

static void test_activations(uint64_t seed)
{
    tu_rng rng = {seed};
    act_ctx cs = {11, 29};
    gc_op swi = {.name = "swiglu (fused gate|up rows)", .n_in = 1, .n_out = 1, .ctx = &cs,
                 .forward = swi_fwd, .backward = swi_bwd, .run_f32 = swi_f32, .tol_f32 = 1e-6};
    swi.in_len[0] = (size_t)cs.T * 2 * cs.n; swi.out_len[0] = (size_t)cs.T * cs.n;
    swi.in[0] = tu_rand(&rng, swi.in_len[0], 6.0);
    gc_run(&swi, seed + 1);
    free(swi.in[0]);
    for (int kind = 0; kind < 2; kind++) {
        act_ctx ce = {0, kind};
        gc_op op = {.name = kind ? "gelu (erf)" : "quickgelu", .n_in = 1, .n_out = 1, .ctx = &ce,
                    .forward = elt_fwd, .backward = elt_bwd, .run_f32 = elt_f32, .tol_f32 = 1e-6};
        op.in_len[0] = op.out_len[0] = 301;
        op.in[0] = tu_rand(&rng, 301, 6.0);
        gc_run(&op, seed + 2 + kind);
        free(op.in[0]);
    }
}

/* ---- fused LM head + cross-entropy ----------------------------------------------------------- */
typedef struct { int T, d, V; const int *labels; float norm; size_t work_len; } xent_ctx;

static void xent_fwd(const gc_op *op, double **out)
{
    const xent_ctx *c = op->ctx;
    double *work = tu_zeros(c->work_len);
    cpu_lmhead_xent_f64(out[0], NULL, NULL, op->in[0], op->in[1], c->labels, c->T, c->d, c->V,
                        c->norm, work, c->work_len);
    free(work);
}

/* the op returns the gradient of the loss itself, so the projection R (one number) scales it */
static void xent_bwd(const gc_op *op, double *const *dout, double **din)
{
    const xent_ctx *c = op->ctx;
    double *work = tu_zeros(c->work_len), loss;
    double *dh = tu_zeros(op->in_len[0]), *dw = tu_zeros(op->in_len[1]);
    cpu_lmhead_xent_f64(&loss, dh, dw, op->in[0], op->in[1], c->labels, c->T, c->d, c->V, c->norm,
                        work, c->work_len);
    for (size_t i = 0; i < op->in_len[0]; i++) din[0][i] += dout[0][0] * dh[i];
    for (size_t i = 0; i < op->in_len[1]; i++) din[1][i] += dout[0][0] * dw[i];
    free(work); free(dh); free(dw);
}

static void xent_f32(const gc_op *op, double *const *dout, double **out, double **din)
{
    const xent_ctx *c = op->ctx;
    gc_f32 f = gc_f32_begin(op, dout);
    float *work = calloc(c->work_len, sizeof *work);
    OPS->lmhead_xent_f32(f.out[0], f.din[0], f.din[1], f.in[0], f.in[1], c->labels, c->T, c->d,
                         c->V, c->norm, work, c->work_len);
    free(work);
    gc_f32_end(op, &f, out, din);
    for (size_t i = 0; i < op->in_len[0]; i++) din[0][i] *= dout[0][0];
    for (size_t i = 0; i < op->in_len[1]; i++) din[1][i] *= dout[0][0];
}

static void test_xent_case(const char *name, int T, int d, int V, double mask_share,
                           size_t work_len, uint64_t seed)
{
    tu_rng rng = {seed};
    int *labels = malloc(sizeof(int) * T), count = 0;
    for (int t = 0; t < T; t++) {
        labels[t] = (tu_uniform(&rng) + 1) / 2 < mask_share ? OPS_LABEL_IGNORE : tu_int(&rng, V);
        count += labels[t] != OPS_LABEL_IGNORE;
    }
    /* the global normaliser counts other ranks' tokens too */
    xent_ctx c = {T, d, V, labels, (float)(count + 7), work_len};
    gc_op op = {.name = name, .n_in = 2, .n_out = 1, .ctx = &c, .forward = xent_fwd,
                .backward = xent_bwd, .run_f32 = xent_f32, .tol_f32 = 3e-6};
    op.in_len[0] = (size_t)T * d; op.in_len[1] = (size_t)V * d; op.out_len[0] = 1;
    op.in[0] = tu_rand(&rng, op.in_len[0], 1.0);
    op.in[1] = tu_rand(&rng, op.in_len[1], 1.0);
    gc_run(&op, seed + 1);
    free(op.in[0]); free(op.in[1]); free(labels);
}

/* every label masked, and a zero normaliser: loss 0, gradients untouched, no NaN */
static void test_xent_masked(void)
{
    enum { T = 9, D = 4, V = 11 };
    float h[T * D], w[V * D], dh[T * D] = {0}, dw[V * D] = {0}, work[512], loss = -1;
    int labels[T];
    for (int i = 0; i < T * D; i++) h[i] = (float)(i % 7) - 3;
    for (int i = 0; i < V * D; i++) w[i] = (float)(i % 5) - 2;
    for (int t = 0; t < T; t++) labels[t] = OPS_LABEL_IGNORE;
    OPS->lmhead_xent_f32(&loss, dh, dw, h, w, labels, T, D, V, 10.0f, work, 512);
    int nonzero = 0;
    for (int i = 0; i < T * D; i++) nonzero += dh[i] != 0;
    for (int i = 0; i < V * D; i++) nonzero += dw[i] != 0;
    CHECK_MSG(loss == 0 && nonzero == 0, "all-masked loss %g, %d nonzero grads", loss, nonzero);
    labels[2] = 3;
    loss = -1;
    OPS->lmhead_xent_f32(&loss, dh, dw, h, w, labels, T, D, V, 0.0f, work, 512);
    CHECK_MSG(loss == 0 && dh[0] == 0, "zero normaliser: loss %g", loss);
}

static void test_xent(uint64_t seed)
{
    enum { T = 150, D = 8, V = 37 };
    size_t whole = 64 * (2 * D + 3 + V);
    test_xent_case("xent one vocab tile, 3 row chunks", T, D, V, 0.3, whole, seed);
    /* 64 rows x 10 vocabulary entries per tile: four vocab chunks, the last partial */
    test_xent_case("xent vocab chunks of 10", T, D, V, 0.3, 64 * (2 * D + 3 + 10), seed + 10);
    /* the minimum scratch: one row and one vocabulary entry at a time */
    test_xent_case("xent minimal scratch (1 x 1 tiles)", 12, D, 13, 0.3, 2 * D + 4, seed + 20);
    test_xent_case("xent 90% masked, odd sizes", 77, 5, 23, 0.9, 3 * (2 * 5 + 3 + 7), seed + 30);
    test_xent_masked();
}

int main(void)
{
    OPS = ops_cpu();
    fprintf(stderr, "gradient checks (fd: central differences on the double build; f32: the shipped "
                    "float ops against it; errors relative to each tensor's max)\n");
    test_linear(37, 45, 70, 100);   /* BLAS-sized when a BLAS is present */
    test_linear(5, 7, 9, 110);      /* below the BLAS threshold: the blocked kernel */
    test_embedding(200);
    test_norms(300);
    test_rope(400);
    test_attention(500);
    test_activations(600);
    test_xent(700);
    fprintf(stderr, "worst: fd %.2e, f32-vs-f64 %.2e\n", worst_fd, worst_f32);
    return check_report("ops_grad");
}
