/* test_model_gpu: the whole Qwen2-VL training step on the CUDA backend against the same step on
 * the CPU: a tiny model (tied and untied LM head) with the same weights on ops_cuda() and
 * ops_cpu(), a packed batch of four samples (images of different sizes, two images in one
 * sample, a text-only sample), then
 *   - forward loss, and forward + backward loss and the gradient of every parameter tensor;
 *   - determinism and accumulation on the GPU: a second pass gives the same bits (no atomics),
 *     a third pass without zeroing doubles them to rounding (ops.h's +=);
 *   - one AdamW step through worker/optim (optim_init with ops_cuda()) fed the same gradients on
 *     both sides (the GPU's, copied into the CPU model): grad norm, moments, parameters;
 *   - the loss of a forward pass after the step.
 *
 * Bounds: per tensor, max |gpu - cpu| / max |cpu| <= 1e-4 (the bound the CPU model meets against
 * transformers in tests/unit/test_qwen2vl.c --reference), loss relative 1e-4. cuBLASLt runs
 * CUBLAS_COMPUTE_32F (true fp32, TF32 off: kernels/cuda/matmul_cuda.cu), so the only differences
 * are summation orders and FMA contraction. The optimizer, given the same gradients, agrees to
 * rounding: grad norm relative 1e-6, moments 1e-5 per tensor, parameters within 1e-3 of the
 * learning rate (a wrong update is a whole lr off). NaN never passes. Exits 77 without a device.
 * `--backend cpu-guarded` runs the same checks with that table in the GPU's place, so the harness
 * is proven where there is no GPU (suite unit).
 * The mixed-precision model (bf16 working copy and activations, fp32 master weights, gradients
 * and moments) is checked the same way, bf16 on the device against bf16 on the CPU (whose bf16
 * twins round at the same points): loss relative 1e-2, every gradient tensor cosine > 0.99 and
 * relative 2-norm error < 0.1, one AdamW step + qwen2vl_weights_changed (fp32 masters as in
 * fp32; the loss after it within 1e-2 and different from the loss before it). NaN never passes.
 * Usage: test_model_gpu [--backend NAME] [SEED] */
#include "adapt_config.h"
#include "check.h"
#include "ops.h"
#include "ops_cuda.h"
#include "optim.h"
#include "qwen2vl.h"
#include "train.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_GRAD 1e-4
#define TOL_LOSS 1e-4

enum { IMAGE = 250, VSTART = 252, VEND = 253, PATCH_DIM = 3 * 2 * 14 * 14 };

static const char *TINY_CONFIG =
    "{\"model_type\": \"qwen2_vl\", \"image_token_id\": 250, \"video_token_id\": 251,"
    " \"vision_start_token_id\": 252, \"vision_end_token_id\": 253, \"tie_word_embeddings\": %s,"
    " \"text_config\": {\"vocab_size\": 256, \"hidden_size\": 64, \"intermediate_size\": 96,"
    "  \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    "  \"pad_token_id\": 3, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0,"
    "  \"mrope_section\": [2, 3, 3]}},"
    " \"vision_config\": {\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 4, \"mlp_ratio\": 2,"
    "  \"hidden_size\": 64}}";

static uint64_t rng_state;
/* the backend under test: ops_cuda(), or (--backend NAME) another table standing in for it, so
 * this harness itself can be checked where there is no GPU (cpu-guarded) */
static const ops_table *dev;

static double rng_uniform(void)  /* [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

/* ---- the packed batch (the samples of tests/reference/qwen2vl_ref.py's shapes) ------------- */
enum { MAX_TOK = 160, MAX_IMG = 4 };

typedef struct tiny_batch {
    int    ids[MAX_TOK], labels[MAX_TOK], cu[5], grid[3 * MAX_IMG];
    float *pix;
    int    n, n_seqs, n_images, n_patches;
    qwen2vl_batch b;
} tiny_batch;

static void put_text(tiny_batch *t, int count)
{
    for (int i = 0; i < count; i++) t->ids[t->n++] = (int)(100 + 99 * rng_uniform()) + 1;
}

static void put_image(tiny_batch *t, int h, int w)
{
    t->ids[t->n++] = VSTART;
    for (int i = 0; i < h * w / 4; i++) t->ids[t->n++] = IMAGE;
    t->ids[t->n++] = VEND;
    int *g = t->grid + 3 * t->n_images++;
    g[0] = 1; g[1] = h; g[2] = w;
    t->n_patches += h * w;
}

static void end_seq(tiny_batch *t)
{
    int start = t->cu[t->n_seqs];
    t->cu[++t->n_seqs] = t->n;
    int len = t->n - start;
    for (int i = start; i < t->n; i++)
        t->labels[i] = (i - start < len / 3 || t->ids[i] == IMAGE) ? OPS_LABEL_IGNORE : t->ids[i];
}

static void tiny_batch_make(tiny_batch *t)
{
    memset(t, 0, sizeof *t);
    put_text(t, 5); put_image(t, 4, 6); put_text(t, 7); end_seq(t);
    put_text(t, 3); put_image(t, 6, 4); put_text(t, 4); put_image(t, 2, 2); put_text(t, 6); end_seq(t);
    put_text(t, 9); end_seq(t);
    put_image(t, 2, 8); put_text(t, 5); end_seq(t);
    t->pix = malloc((size_t)t->n_patches * PATCH_DIM * sizeof *t->pix);
    for (size_t i = 0; i < (size_t)t->n_patches * PATCH_DIM; i++) t->pix[i] = (float)rng_uniform();
    /* the normaliser: positions scored on the next label of the same sequence */
    int scored = 0;
    for (int s = 0; s < t->n_seqs; s++)
        for (int i = t->cu[s] + 1; i < t->cu[s + 1]; i++) scored += t->labels[i] != OPS_LABEL_IGNORE;
    t->b = (qwen2vl_batch){ .n_tokens = t->n, .input_ids = t->ids, .labels = t->labels,
                            .n_seqs = t->n_seqs, .cu_seqlens = t->cu, .n_images = t->n_images,
                            .image_grid_thw = t->grid, .pixel_values = t->pix,
                            .loss_normaliser = (float)scored };
}

/* ---- comparisons ---------------------------------------------------------------------------- */

/* max |got - ref| / max |ref| (ref all zero: max |got|); NaN or inf anywhere: +inf */
static double rel_err(const float *got, const float *ref, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) return INFINITY;
        double e = fabs((double)got[i] - ref[i]);
        d = e > d ? e : d;
        s = fabs(ref[i]) > s ? fabs(ref[i]) : s;
    }
    return s > 0 ? d / s : d;
}

static double scalar_err(double got, double ref)
{
    if (!isfinite(got) || !isfinite(ref)) return INFINITY;
    return fabs(got - ref) / (fabs(ref) > 1e-30 ? fabs(ref) : 1.0);
}

/* every tensor of the layout: worst relative error of got vs ref (host copies of whole buffers) */
static double tensors_err(const qwen2vl_model *m, const float *got, const float *ref,
                          const char *what, double bound, const char *variant)
{
    double worst = 0;
    const char *worst_name = "-";
    for (size_t i = 0; i < qwen2vl_num_tensors(m); i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(m, i);
        double e = rel_err(got + t->offset, ref + t->offset, t->numel);
        CHECK_MSG(e <= bound, "%s: %s of %s: relative error %.3g > %.1g", variant, what, t->name,
                  e, bound);
        if (!(e <= worst)) { worst = e; worst_name = t->name; }
    }
    printf("  %-34s worst %.3e (%s)\n", what, worst, worst_name);
    return worst;
}

static int gpu_ok(const char *where)
{
    char msg[600];
    if (dev->sync(msg, sizeof msg) == 0) return 1;
    CHECK_MSG(0, "%s: %s error: %s", where, dev->backend, msg);
    if (dev == ops_cuda()) ops_cuda_clear_error();
    return 0;
}

static float *grads_of(const qwen2vl_model *m, size_t n)
{
    float *h = malloc(n * sizeof *h);
    qwen2vl_copy_out(m, 1, 0, n, h);
    return h;
}

static float *params_of(const qwen2vl_model *m, size_t n)
{
    float *h = malloc(n * sizeof *h);
    qwen2vl_copy_out(m, 0, 0, n, h);
    return h;
}

/* the worker's optimizer table, every tower trainable */
static optim_tensor *optim_table(const qwen2vl_model *m)
{
    return train_optim_tensors(m, 0, 0, NULL);
}

/* The same tiny model on ops_cpu() (mc) and on the device (mg) at one precision, with the
 * same weights (init with seed, then a usable scale: std 0.02 leaves the loss flat; the host copy
 * written into both) and the packed test batch. 0, or -1 with nothing left allocated. */
typedef struct model_pair {
    tiny_batch     tb;
    qwen2vl_model *mc, *mg;
    float         *w0;   /* the weights both hold, [n] */
    size_t         n;
} model_pair;

static int pair_open(model_pair *p, int tied, qwen2vl_precision precision, uint64_t seed)
{
    const char *what = precision == QWEN2VL_BF16 ? "bf16 model" : "model";
    char json[2048];
    snprintf(json, sizeof json, TINY_CONFIG, tied ? "true" : "false");
    adapt_error err = {0};
    model_config cfg;
    if (model_config_parse(&cfg, json, strlen(json), "tiny", &err)) {
        CHECK_MSG(0, "%s", err.message);
        return -1;
    }
    tiny_batch_make(&p->tb);
    qwen2vl_budget bud = { .max_tokens = p->tb.n, .max_patches = p->tb.n_patches,
                           .max_seqs = p->tb.n_seqs, .max_images = p->tb.n_images,
                           .precision = precision };
    p->mc = p->mg = NULL;
    if (qwen2vl_create(&p->mc, &cfg, &bud, ops_cpu(), &err)) {
        CHECK_MSG(0, "cpu %s: %s", what, err.message);
        free(p->tb.pix);
        return -1;
    }
    if (qwen2vl_create(&p->mg, &cfg, &bud, dev, &err)) {
        CHECK_MSG(0, "%s %s: %s", dev->backend, what, err.message);
        qwen2vl_free(p->mc);
        free(p->tb.pix);
        return -1;
    }
    p->n = qwen2vl_num_params(p->mc);
    qwen2vl_init_weights(p->mc, seed);
    p->w0 = params_of(p->mc, p->n);
    for (size_t i = 0; i < p->n; i++) p->w0[i] = 5.0f * p->w0[i] + 0.05f * sinf(0.61f * (float)i);
    qwen2vl_copy_in(p->mc, 0, 0, p->n, p->w0);  /* in bf16 copy_in rounds the working copy too */
    qwen2vl_copy_in(p->mg, 0, 0, p->n, p->w0);
    return 0;
}

static void pair_close(model_pair *p, const char *what)
{
    free(p->w0);
    qwen2vl_free(p->mg);
    qwen2vl_free(p->mc);
    gpu_ok(what);
    free(p->tb.pix);
}

static void run_variant(int tied)
{
    const char *variant = tied ? "tied" : "untied";
    printf("%s LM head (%s against cpu):\n", variant, dev->backend);
    static model_pair p;
    if (pair_open(&p, tied, QWEN2VL_FP32, 11)) return;
    qwen2vl_model *mc = p.mc, *mg = p.mg;
    float *w0 = p.w0;
    size_t n = p.n;
    adapt_error err = {0};
    CHECK(qwen2vl_ops(mg) == dev && qwen2vl_ops(mc) == ops_cpu());
    CHECK(qwen2vl_buffer_floats(mg) == qwen2vl_buffer_floats(mc));
    float *back = params_of(mg, n);
    CHECK_MSG(memcmp(back, w0, n * sizeof *w0) == 0, "%s: copy_in/copy_out round trip", variant);
    free(back);

    /* forward only */
    float lc = 0, lg = 0;
    CHECK_MSG(qwen2vl_forward(mc, &p.tb.b, &lc, &err) == 0, "cpu forward: %s", err.message);
    CHECK_MSG(qwen2vl_forward(mg, &p.tb.b, &lg, &err) == 0, "cuda forward: %s", err.message);
    gpu_ok("forward");
    double e = scalar_err(lg, lc);
    CHECK_MSG(e <= TOL_LOSS, "%s: forward loss %.9g (device) vs %.9g (cpu)", variant, lg, lc);
    printf("  %-34s %.9g vs %.9g, rel %.3e\n", "forward loss", lg, lc, e);

    /* forward + backward */
    qwen2vl_zero_grads(mc);
    qwen2vl_zero_grads(mg);
    CHECK_MSG(qwen2vl_forward_backward(mc, &p.tb.b, &lc, &err) == 0, "cpu fwd+bwd: %s", err.message);
    CHECK_MSG(qwen2vl_forward_backward(mg, &p.tb.b, &lg, &err) == 0, "cuda fwd+bwd: %s", err.message);
    gpu_ok("forward_backward");
    e = scalar_err(lg, lc);
    CHECK_MSG(e <= TOL_LOSS, "%s: training loss %.9g (device) vs %.9g (cpu)", variant, lg, lc);
    printf("  %-34s %.9g vs %.9g, rel %.3e\n", "fwd+bwd loss", lg, lc, e);
    float *gc = grads_of(mc, n), *gg = grads_of(mg, n);
    for (size_t i = 0; i < qwen2vl_num_tensors(mc); i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(mc, i);
        float peak = 0;
        for (size_t k = 0; k < t->numel; k++) peak = fmaxf(peak, fabsf(gc[t->offset + k]));
        CHECK_MSG(peak > 0, "%s: the CPU gradient of %s is zero: the comparison would be vacuous",
                  variant, t->name);
    }
    tensors_err(mc, gg, gc, "gradients", TOL_GRAD, variant);

    /* determinism (same bits again) and accumulation (a pass more doubles exactly) */
    float l2 = 0, l3 = 0;
    qwen2vl_zero_grads(mg);
    CHECK(qwen2vl_forward_backward(mg, &p.tb.b, &l2, &err) == 0);
    float *g2 = grads_of(mg, n);
    CHECK_MSG(l2 == lg && memcmp(g2, gg, n * sizeof *g2) == 0,
              "%s: a second GPU pass differs from the first (non-deterministic kernel)", variant);
    CHECK(qwen2vl_forward_backward(mg, &p.tb.b, &l3, &err) == 0);
    qwen2vl_copy_out(mg, 1, 0, n, g2);
    /* not bit-exact: a float collecting several contributions adds them onto a non-zero start */
    float *twice = malloc(n * sizeof *twice);
    for (size_t i = 0; i < n; i++) twice[i] = 2.0f * gg[i];
    tensors_err(mc, g2, twice, "a 2nd pass without zeroing = 2 g", 1e-6, variant);
    free(twice);
    gpu_ok("determinism");
    free(g2);

    /* one AdamW step through worker/optim on each backend, from the same gradients: the GPU's,
     * written back into both models (the GPU buffer was doubled above) */
    qwen2vl_copy_in(mg, 1, 0, n, gg);
    qwen2vl_copy_in(mc, 1, 0, n, gg);
    optim_config oc = { .lr = { 2e-2, 1e-2 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = 0.1, .max_grad_norm = 1.0, .warmup_ratio = 0,
                        .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = 2 };
    optim_tensor *ot = optim_table(mc);
    optim oc_cpu, oc_gpu;
    int rc_c = optim_init(&oc_cpu, ops_cpu(), &oc, ot, qwen2vl_num_tensors(mc), n, &err);
    CHECK_MSG(rc_c == 0, "cpu optim_init: %s", err.message);
    int rc_g = optim_init(&oc_gpu, dev, &oc, ot, qwen2vl_num_tensors(mg), n, &err);
    CHECK_MSG(rc_g == 0, "cuda optim_init: %s", err.message);
    if (rc_c == 0 && rc_g == 0) {
        float norm_c = 0, norm_g = 0;
        double lr_c = 0, lr_g = 0;
        CHECK_MSG(optim_step(&oc_cpu, qwen2vl_param_buffer(mc), qwen2vl_grad_buffer(mc), &norm_c,
                             &lr_c, &err) == 0, "cpu optim_step: %s", err.message);
        CHECK_MSG(optim_step(&oc_gpu, qwen2vl_param_buffer(mg), qwen2vl_grad_buffer(mg), &norm_g,
                             &lr_g, &err) == 0, "cuda optim_step: %s", err.message);
        gpu_ok("optim_step");
        e = scalar_err(norm_g, norm_c);
        CHECK_MSG(e <= 1e-6, "%s: grad norm %.9g (device) vs %.9g (cpu)", variant, norm_g, norm_c);
        CHECK_MSG(norm_c > oc.max_grad_norm, "%s: grad norm %g does not reach the clip %g: the "
                  "clip path would go unchecked", variant, norm_c, oc.max_grad_norm);
        CHECK(lr_g == lr_c);
        printf("  %-34s %.9g vs %.9g, rel %.3e (clip at %g)\n", "grad norm", norm_g,
               norm_c, e, oc.max_grad_norm);
        /* moments: the GPU's are backend memory (device), read through the table */
        float *mh = malloc(n * sizeof *mh), *vh = malloc(n * sizeof *vh);
        dev->mem_download(mh, oc_gpu.m, n * sizeof *mh);
        dev->mem_download(vh, oc_gpu.v, n * sizeof *vh);
        tensors_err(mc, mh, oc_cpu.m, "AdamW m", 1e-5, variant);
        tensors_err(mc, vh, oc_cpu.v, "AdamW v", 1e-5, variant);
        free(mh);
        free(vh);
        float *pc = params_of(mc, n), *pg = params_of(mg, n);
        double worst = 0;
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) {
            double d = isfinite(pg[i]) ? fabs((double)pg[i] - pc[i]) : INFINITY;
            worst = d > worst || isnan(d) ? d : worst;
            moved += pc[i] != w0[i];
        }
        double rel_lr = worst / oc.lr[OPTIM_GROUP_MAIN];
        CHECK_MSG(rel_lr <= 1e-3, "%s: parameters after AdamW differ by %.3g (%.3g of lr)",
                  variant, worst, rel_lr);
        CHECK_MSG(moved > n / 2, "%s: AdamW moved only %zu of %zu parameters", variant, moved, n);
        printf("  %-34s max |diff| %.3e = %.3e lr\n", "params after AdamW", worst,
               rel_lr);
        /* the updated models give the same loss again */
        CHECK(qwen2vl_forward(mc, &p.tb.b, &lc, &err) == 0);
        CHECK(qwen2vl_forward(mg, &p.tb.b, &lg, &err) == 0);
        gpu_ok("forward after step");
        e = scalar_err(lg, lc);
        CHECK_MSG(e <= TOL_LOSS, "%s: loss after the step %.9g (device) vs %.9g (cpu)", variant, lg,
                  lc);
        printf("  %-34s %.9g vs %.9g, rel %.3e\n", "loss after step", lg, lc, e);
        free(pc);
        free(pg);
    }
    if (rc_c == 0) optim_close(&oc_cpu);
    if (rc_g == 0) optim_close(&oc_gpu);
    gpu_ok("optim_close");
    free(ot);
    free(gc);
    free(gg);
    pair_close(&p, "qwen2vl_free");
}

/* ---- the mixed-precision (bf16) model: cuda bf16 against cpu bf16 --------------------------- */

/* Bounds of the bf16 model on the device against the same model on the CPU. The CPU's bf16 twins
 * (kernels/cpu/bf16_cpu.c) round at the same points as the CUDA kernels, but the sums inside a
 * product, a norm or an attention row run in other orders, so a value near a rounding boundary
 * can land one bf16 ulp (2^-8 relative) apart and carry that through the layers: the two are the
 * same function to bf16 precision, not to the bit. The CPU bf16 model itself is within 9e-4
 * (loss) and cosine 0.998 (gradients) of fp32 on such a batch (tests/unit/test_qwen2vl_bf16.c),
 * so these bounds fail any kernel that is wrong rather than rounded differently. */
#define BF16_LOSS_REL  1e-2   /* |loss_dev - loss_cpu| / loss_cpu */
#define BF16_GRAD_COS  0.99   /* cosine of every tensor's gradient with the CPU's */
#define BF16_GRAD_REL  1e-1   /* |g_dev - g_cpu| / |g_cpu| (2-norms) of every tensor */

/* every tensor: cosine and relative 2-norm error of got vs ref; NaN anywhere fails both */
static void tensors_cos(const qwen2vl_model *m, const float *got, const float *ref,
                        const char *variant)
{
    double worst_cos = 1, worst_rel = 0;
    const char *wc_name = "-", *wr_name = "-";
    for (size_t i = 0; i < qwen2vl_num_tensors(m); i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(m, i);
        double dot = 0, ng = 0, nr = 0, nd = 0;
        for (size_t k = 0; k < t->numel; k++) {
            double x = got[t->offset + k], y = ref[t->offset + k];
            dot += x * y;
            ng += x * x;
            nr += y * y;
            nd += (x - y) * (x - y);
        }
        double cosv = ng > 0 && nr > 0 ? dot / sqrt(ng * nr) : NAN, rel = sqrt(nd / nr);
        CHECK_MSG(cosv > BF16_GRAD_COS && rel < BF16_GRAD_REL, "%s bf16: gradient of %s: cosine "
                  "%.6f (bound > %g), relative error %.4g (bound < %g)", variant, t->name, cosv,
                  BF16_GRAD_COS, rel, BF16_GRAD_REL);
        if (!(cosv >= worst_cos)) { worst_cos = cosv; wc_name = t->name; }
        if (!(rel <= worst_rel)) { worst_rel = rel; wr_name = t->name; }
    }
    printf("  %-34s worst cosine %.6f (%s), worst rel %.3e (%s)\n", "bf16 gradients", worst_cos,
           wc_name, worst_rel, wr_name);
}

/* The bf16 model (qwen2vl_budget.precision QWEN2VL_BF16) on the device and on ops_cpu() with the
 * same fp32 master weights: forward loss, forward + backward loss and every gradient, then one
 * AdamW step through worker/optim from the same gradients (the device's, in both) followed by
 * qwen2vl_weights_changed, as adapt-worker steps: the fp32 masters agree as in fp32 (the
 * optimizer is fp32 on both sides), and the loss after the step agrees to the bf16 bound, which
 * proves the working copy was refreshed from the updated master on the device. */
static void run_variant_bf16(int tied)
{
    const char *variant = tied ? "tied" : "untied";
    printf("%s LM head, bf16 model (%s bf16 against cpu bf16):\n", variant, dev->backend);
    static model_pair p;
    if (pair_open(&p, tied, QWEN2VL_BF16, 13)) return;
    qwen2vl_model *mc = p.mc, *mg = p.mg;
    float *w0 = p.w0;
    size_t n = p.n;
    adapt_error err = {0};
    CHECK(qwen2vl_get_precision(mg) == QWEN2VL_BF16 && qwen2vl_get_precision(mc) == QWEN2VL_BF16);

    float lc = 0, lg = 0;
    CHECK_MSG(qwen2vl_forward(mc, &p.tb.b, &lc, &err) == 0, "cpu bf16 forward: %s", err.message);
    CHECK_MSG(qwen2vl_forward(mg, &p.tb.b, &lg, &err) == 0, "%s bf16 forward: %s", dev->backend,
              err.message);
    gpu_ok("bf16 forward");
    double e = scalar_err(lg, lc);
    CHECK_MSG(e <= BF16_LOSS_REL, "%s bf16: forward loss %.9g (device) vs %.9g (cpu)", variant, lg, lc);
    printf("  %-34s %.9g vs %.9g, rel %.3e\n", "bf16 forward loss", lg, lc, e);

    qwen2vl_zero_grads(mc);
    qwen2vl_zero_grads(mg);
    CHECK_MSG(qwen2vl_forward_backward(mc, &p.tb.b, &lc, &err) == 0, "cpu bf16 fwd+bwd: %s",
              err.message);
    CHECK_MSG(qwen2vl_forward_backward(mg, &p.tb.b, &lg, &err) == 0, "%s bf16 fwd+bwd: %s",
              dev->backend, err.message);
    gpu_ok("bf16 forward_backward");
    e = scalar_err(lg, lc);
    CHECK_MSG(e <= BF16_LOSS_REL, "%s bf16: training loss %.9g (device) vs %.9g (cpu)", variant,
              lg, lc);
    printf("  %-34s %.9g vs %.9g, rel %.3e\n", "bf16 fwd+bwd loss", lg, lc, e);
    float *gc = grads_of(mc, n), *gg = grads_of(mg, n);
    tensors_cos(mc, gg, gc, variant);

    /* one AdamW step from the device's gradients on both sides, then the working copies */
    qwen2vl_copy_in(mc, 1, 0, n, gg);
    optim_config oc = { .lr = { 2e-2, 1e-2 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = 0.1, .max_grad_norm = 1.0, .warmup_ratio = 0,
                        .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = 2 };
    optim_tensor *ot = optim_table(mc);
    optim oc_cpu, oc_gpu;
    int rc_c = optim_init(&oc_cpu, ops_cpu(), &oc, ot, qwen2vl_num_tensors(mc), n, &err);
    CHECK_MSG(rc_c == 0, "cpu optim_init: %s", err.message);
    int rc_g = optim_init(&oc_gpu, dev, &oc, ot, qwen2vl_num_tensors(mg), n, &err);
    CHECK_MSG(rc_g == 0, "%s optim_init: %s", dev->backend, err.message);
    if (rc_c == 0 && rc_g == 0) {
        float norm_c = 0, norm_g = 0;
        CHECK_MSG(optim_step(&oc_cpu, qwen2vl_param_buffer(mc), qwen2vl_grad_buffer(mc), &norm_c,
                             NULL, &err) == 0, "cpu optim_step: %s", err.message);
        CHECK_MSG(optim_step(&oc_gpu, qwen2vl_param_buffer(mg), qwen2vl_grad_buffer(mg), &norm_g,
                             NULL, &err) == 0, "%s optim_step: %s", dev->backend, err.message);
        qwen2vl_weights_changed(mc);
        qwen2vl_weights_changed(mg);
        gpu_ok("bf16 optim_step + weights_changed");
        e = scalar_err(norm_g, norm_c);
        CHECK_MSG(e <= 1e-6, "%s bf16: grad norm %.9g (device) vs %.9g (cpu)", variant, norm_g,
                  norm_c);
        float *pc = params_of(mc, n), *pg = params_of(mg, n);
        double worst = 0;
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) {
            double d = isfinite(pg[i]) ? fabs((double)pg[i] - pc[i]) : INFINITY;
            worst = d > worst || isnan(d) ? d : worst;
            moved += pg[i] != w0[i];
        }
        double rel_lr = worst / oc.lr[OPTIM_GROUP_MAIN];
        CHECK_MSG(rel_lr <= 1e-3, "%s bf16: fp32 masters after AdamW differ by %.3g (%.3g of lr)",
                  variant, worst, rel_lr);
        CHECK_MSG(moved > n / 2, "%s bf16: AdamW moved only %zu of %zu parameters", variant,
                  moved, n);
        printf("  %-34s max |diff| %.3e = %.3e lr\n", "bf16 masters after AdamW", worst, rel_lr);
        float la = 0, lb = 0;
        CHECK(qwen2vl_forward(mc, &p.tb.b, &la, &err) == 0);
        CHECK(qwen2vl_forward(mg, &p.tb.b, &lb, &err) == 0);
        gpu_ok("bf16 forward after step");
        e = scalar_err(lb, la);
        CHECK_MSG(e <= BF16_LOSS_REL, "%s bf16: loss after the step %.9g (device) vs %.9g (cpu)",
                  variant, lb, la);
        /* the step moved the working copy: a stale copy would give the loss before the step */
        CHECK_MSG(fabsf(lb - lg) > 1e-4f * fabsf(lg), "%s bf16: the loss after the step (%.9g) "
                  "is the loss before it (%.9g): was the working copy refreshed?", variant, lb, lg);
        printf("  %-34s %.9g vs %.9g, rel %.3e (before the step %.9g)\n", "bf16 loss after step",
               lb, la, e, lg);
        free(pc);
        free(pg);
    }
    if (rc_c == 0) optim_close(&oc_cpu);
    if (rc_g == 0) optim_close(&oc_gpu);
    gpu_ok("bf16 optim_close");
    free(ot);
    free(gc);
    free(gg);
    pair_close(&p, "bf16 qwen2vl_free");
}

int main(int argc, char **argv)
{
    dev = ops_cuda();
    int a = 1;
    if (argc > 2 && strcmp(argv[1], "--backend") == 0) {
        dev = ops_by_name(argv[2]);
        if (!dev) {
            fprintf(stderr, "test_model_gpu: unknown backend %s\n", argv[2]);
            return 2;
        }
        a = 3;
    }
    if (dev == ops_cuda()) {
        int ndev = 0;
        cudaError_t e = cudaGetDeviceCount(&ndev);
        if (e != cudaSuccess || ndev == 0) {
            fprintf(stderr, "test_model_gpu: no CUDA device (%s): skipped\n",
                    e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
            return 77;
        }
        char msg[300];
        if (ops_cuda_set_device(0, msg, sizeof msg)) {
            fprintf(stderr, "test_model_gpu: %s\n", msg);
            return 1;
        }
    }
    rng_state = argc > a ? strtoull(argv[a], NULL, 0) : 20261126u;
    printf("test_model_gpu: %s vs cpu, seed %llu; cuBLASLt CUBLAS_COMPUTE_32F (TF32 off); bounds: "
           "gradients %.0e per tensor, loss %.0e\n", dev->backend, (unsigned long long)rng_state,
           TOL_GRAD, TOL_LOSS);
    run_variant(0);
    run_variant(1);
    printf("bf16 bounds: loss %.0e relative, gradients cosine > %g and relative < %g per tensor\n",
           BF16_LOSS_REL, BF16_GRAD_COS, BF16_GRAD_REL);
    run_variant_bf16(0);
    run_variant_bf16(1);
    return check_report("test_model_gpu");
}
