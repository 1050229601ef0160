/* test_qwen2vl_bf16: the mixed-precision Qwen2-VL model (qwen2vl_budget.precision = QWEN2VL_BF16:
 * bf16 weights as read, bf16 activations, fp32 master weights and parameter gradients).
 *
 * The tiny model (tied and untied LM head) is built three times with the same fp32 master
 * weights: fp32 on ops_cpu(), bf16 on ops_cpu(), bf16 on ops_cpu_guarded() (memory PROT_NONE
 * outside the op table). On a packed batch of three samples (images of three sizes, two images in
 * one sample, a text-only sample):
 *   - the bf16 loss is the fp32 loss within a bf16 bound, every tensor's gradient is the fp32
 *     one's within a cosine and a relative-norm bound (NaN fails every bound), logits likewise;
 *   - bf16 on cpu and on cpu-guarded give the same loss and every gradient bit for bit (forward +
 *     backward, accumulation, micro-batches, frozen towers, logits), so the bf16 path never
 *     touches backend memory from the host; the gradients-ready ranges are final when reported;
 *   - the activations take the bytes expected (bf16 about half), resident bytes add up, and a
 *     budget the batch fills exactly gives the same bits (no bf16 buffer carved too small);
 *   - the passes read the working copy (the master rounded, every element): a master changed
 *     behind the model's back is not seen until qwen2vl_weights_changed, and then it is exactly
 *     as a fresh copy_in or load_weights;
 *   - SGD steps on the master (axpy on the backend) + qwen2vl_weights_changed lower the loss in
 *     bf16 as in fp32, on a trajectory close to fp32's;
 *   - TrainSpec.precision: "fp32" by default, "bf16" kept, anything else refused naming it. */
#include "check.h"
#include "qwen2vl.h"
#include "qwen2vl_fixture.h"
#include "train_spec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds, set with margin over what this batch measures (printed on every run; BF16_VERBOSE=1
 * prints every tensor): bf16 keeps 8 significant bits, one rounding is up to 2^-9 = 0.2 %
 * relative, and the weights themselves are rounded, so the bf16 model is a slightly different
 * function. Measured: loss within 9e-4, logits within 1.8e-2, gradient cosines >= 0.998,
 * relative gradient errors <= 4.4e-2 except the q / k projection biases (6.3e-2: softmax is
 * nearly shift-invariant in them, so their gradients are sums that mostly cancel). */
#define LOSS_REL_MAX    2e-2   /* |loss_bf16 - loss_fp32| / loss_fp32 */
#define GRAD_COS_MIN    0.99   /* cosine of every tensor's gradient with fp32's */
#define GRAD_REL_MAX    1e-1   /* |g_bf16 - g_fp32| / |g_fp32| of every tensor */
#define LOGIT_REL_MAX   4e-2   /* |logits_bf16 - logits_fp32| / |logits_fp32| */

/* bf16 on cpu and cpu-guarded: the whole buffer, slack included, bit for bit */
static void buffers_same(qwen2vl_model *c, qwen2vl_model *g, int grads, const char *what)
{
    const char *first;
    size_t slack, diff = fixture_buffers_diff(c, g, grads, &first, &slack);
    CHECK_MSG(diff == 0 && slack == 0, "bf16 %s: %s of %zu tensors differ between cpu and "
              "cpu-guarded (first %s), %zu slack floats not zero", what,
              grads ? "gradients" : "parameters", diff, first, slack);
}

/* Every tensor's bf16 gradient against fp32's; the worst cosine and relative error come back.
 * Written so that a NaN anywhere fails (comparisons against NaN are false). */
static void grads_close(qwen2vl_model *f, qwen2vl_model *b, const char *what, double *worst_cos,
                        double *worst_rel)
{
    float *gf = fixture_buffer_copy(f, 1), *gb = fixture_buffer_copy(b, 1);
    double wc = 1.0, wr = 0.0;
    const char *bad = NULL;
    for (size_t k = 0; k < qwen2vl_num_tensors(f); k++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(f, k);
        double dot = 0, nf = 0, nb = 0, nd = 0;
        for (size_t i = t->offset; i < t->offset + t->numel; i++) {
            double x = gf[i], y = gb[i];
            dot += x * y;
            nf += x * x;
            nb += y * y;
            nd += (x - y) * (x - y);
        }
        if (nf == 0.0 && nb == 0.0) continue;  /* frozen: both untouched */
        double cosv = dot / sqrt(nf * nb), rel = sqrt(nd / nf);
        if (getenv("BF16_VERBOSE")) printf("  %-48s cos %.6f rel %.4g\n", t->name, cosv, rel);
        if (!(cosv > GRAD_COS_MIN && rel < GRAD_REL_MAX) && !bad) bad = t->name;
        if (!(cosv >= wc)) wc = cosv;
        if (!(rel <= wr)) wr = rel;
    }
    CHECK_MSG(bad == NULL, "%s: gradient of %s: bf16 vs fp32 beyond cosine > %g and relative "
              "error < %g (worst cosine %.6f, worst relative %.4g)", what, bad, GRAD_COS_MIN,
              GRAD_REL_MAX, wc, wr);
    *worst_cos = wc;
    *worst_rel = wr;
    free(gf);
    free(gb);
}

static double rel_diff(float a, float ref)
{
    return fabs((double)a - (double)ref) / fabs((double)ref);
}

/* A few plain SGD steps p -= lr g on the backend (axpy over the master, as an optimizer writes
 * it), each followed by qwen2vl_weights_changed; the losses before each step into loss[steps]. */
static void sgd_steps(qwen2vl_model *m, const qwen2vl_batch *b, float lr, int steps, float *loss)
{
    adapt_error err = {0};
    const ops_table *ops = qwen2vl_ops(m);
    size_t n = qwen2vl_num_params(m);
    for (int s = 0; s < steps; s++) {
        qwen2vl_zero_grads(m);
        loss[s] = NAN;
        CHECK_MSG(qwen2vl_forward_backward(m, b, &loss[s], &err) == 0, "%s", err.message);
        ops->axpy_f32(qwen2vl_param_buffer(m), -lr, qwen2vl_grad_buffer(m), n);
        qwen2vl_weights_changed(m);
    }
}

static void test_variant(int tied)
{
    const char *name = tied ? "tied" : "untied";
    adapt_error err = {0};
    model_config cfg;
    if (fixture_config_parse(&cfg, tied, &err)) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    qwen2vl_budget b32 = fixture_batch_budget;
    qwen2vl_budget b16 = b32;
    b16.precision = QWEN2VL_BF16;
    qwen2vl_model *f = NULL, *c = NULL, *g = NULL;
    CHECK_MSG(qwen2vl_create(&f, &cfg, &b32, ops_cpu(), &err) == 0, "fp32: %s", err.message);
    CHECK_MSG(qwen2vl_create(&c, &cfg, &b16, ops_cpu(), &err) == 0, "bf16 cpu: %s", err.message);
    CHECK_MSG(qwen2vl_create(&g, &cfg, &b16, ops_cpu_guarded(), &err) == 0, "bf16 cpu-guarded: %s",
              err.message);
    if (!f || !c || !g) {
        qwen2vl_free(f);
        qwen2vl_free(c);
        qwen2vl_free(g);
        return;
    }
    CHECK(qwen2vl_get_precision(f) == QWEN2VL_FP32 && qwen2vl_get_precision(c) == QWEN2VL_BF16 &&
          qwen2vl_get_precision(g) == QWEN2VL_BF16);

    /* a precision that is neither is refused, naming it */
    qwen2vl_budget bad = b32;
    bad.precision = (qwen2vl_precision)7;
    qwen2vl_model *x = NULL;
    CHECK(qwen2vl_create(&x, &cfg, &bad, ops_cpu(), &err) == ADAPT_EINVAL && x == NULL);
    CHECK_STR_CONTAINS(err.message, "precision 7");
    /* a table lacking a bf16 entry the passes need is refused, naming the entry */
    ops_table partial = *ops_cpu();
    partial.gelu_backward_bf16 = NULL;
    CHECK(qwen2vl_create(&x, &cfg, &b16, &partial, &err) == ADAPT_EUNSUPPORTED && x == NULL);
    CHECK_STR_CONTAINS(err.message, "gelu_backward_bf16");

    /* memory: activations at 2 bytes except the fp32 statistics, lse and the loss's scratch
     * (256 rows of 2D + 3 + V floats, the same in both), and bf16 adds the rounded pixels
     * [max_patches, patch_dim]; resident = weights + gradients (fp32) + the bf16 working copy +
     * activations + ints */
    size_t a32 = qwen2vl_activation_bytes(&cfg, &b32), a16 = qwen2vl_activation_bytes(&cfg, &b16);
    size_t nb = qwen2vl_buffer_floats(f);
    size_t lw = 256 * (2 * 64 + 3 + 256) * 4, pix16 = 128 * 1176 * 2;
    double ratio = (double)(a16 - lw - pix16) / (double)(a32 - lw);
    CHECK_MSG(a16 < a32 && ratio > 0.45 && ratio < 0.55, "activation bytes fp32 %zu, bf16 %zu "
              "(%.3f of fp32's past the loss's scratch and the bf16 pixels)", a32, a16, ratio);
    CHECK_MSG(qwen2vl_resident_bytes(f) == 2 * nb * 4 + a32 &&
              qwen2vl_resident_bytes(c) == 2 * nb * 4 + nb * 2 + a16,
              "resident bytes fp32 %zu, bf16 %zu; expected %zu and %zu",
              qwen2vl_resident_bytes(f), qwen2vl_resident_bytes(c), 2 * nb * 4 + a32,
              2 * nb * 4 + nb * 2 + a16);
    CHECK(qwen2vl_activation_floats(&cfg, &b16) * 4 >= a16 &&
          qwen2vl_activation_floats(&cfg, &b32) * 4 == a32);
    printf("%s: activation bytes fp32 %zu, bf16 %zu (%.3f); resident fp32 %zu, bf16 %zu\n", name,
           a32, a16, ratio, qwen2vl_resident_bytes(f), qwen2vl_resident_bytes(c));

    /* the same fp32 master everywhere: init, then a scale with non-trivial gradients */
    qwen2vl_init_weights(f, 17);
    size_t n = qwen2vl_num_params(f);
    float *w = fixture_buffer_copy(f, 0);
    for (size_t i = 0; i < n; i++) w[i] = 3.0f * w[i] + 0.02f * sinf(0.61f * (float)i);
    qwen2vl_copy_in(f, 0, 0, n, w);
    qwen2vl_copy_in(c, 0, 0, n, w);
    qwen2vl_copy_in(g, 0, 0, n, w);
    buffers_same(c, g, 0, "copy_in");

    static fixture_batch tb;
    fixture_batch_make(&tb);
    float lf = NAN, lc = NAN, lg = NAN;
    qwen2vl_model *all[3] = { f, c, g };
    float *ls[3] = { &lf, &lc, &lg };
    for (int k = 0; k < 3; k++) {
        qwen2vl_zero_grads(all[k]);
        CHECK_MSG(qwen2vl_forward_backward(all[k], &tb.b, ls[k], &err) == 0, "model %d: %s", k,
                  err.message);
    }
    double lrel = rel_diff(lc, lf);
    CHECK_MSG(lrel < LOSS_REL_MAX && lf > 0, "loss fp32 %.7g, bf16 %.7g (relative %.3g)", lf, lc,
              lrel);
    CHECK_MSG(memcmp(&lc, &lg, sizeof lc) == 0, "bf16 loss cpu %.9g, cpu-guarded %.9g", lc, lg);
    buffers_same(c, g, 1, "forward_backward");
    /* the guarded model's working copy is backend memory too */
    CHECK_MSG(fixture_read_faults(qwen2vl_param_buffer_bf16(g)), "the guarded bf16 model's "
              "working copy is readable from the host: not allocated through the op table");
    /* a budget the batch fills exactly: a buffer carved too small for its bf16 contents would
     * overlap its neighbour (or, the last one, run off the guarded block) and change the bits */
    qwen2vl_budget exact = { .max_tokens = tb.b.n_tokens, .max_patches = 56, .max_seqs = 3,
                             .max_images = 3, .precision = QWEN2VL_BF16 };
    qwen2vl_model *e = NULL;
    CHECK_MSG(qwen2vl_create(&e, &cfg, &exact, ops_cpu_guarded(), &err) == 0, "%s", err.message);
    if (e) {
        float le = NAN;
        qwen2vl_copy_in(e, 0, 0, n, w);
        qwen2vl_zero_grads(e);
        CHECK_MSG(qwen2vl_forward_backward(e, &tb.b, &le, &err) == 0, "%s", err.message);
        CHECK_MSG(memcmp(&le, &lc, sizeof le) == 0, "exact budget: loss %.9g, else %.9g", le, lc);
        buffers_same(c, e, 1, "exact budget");
        /* forward only carries every row through the last layer: the buffers' full extent */
        float fe = NAN, fcpu = NAN;
        CHECK(qwen2vl_forward(e, &tb.b, &fe, &err) == 0 && qwen2vl_forward(c, &tb.b, &fcpu, &err) == 0);
        CHECK_MSG(memcmp(&fe, &fcpu, sizeof fe) == 0, "exact budget: forward loss %.9g, else %.9g",
                  fe, fcpu);
        qwen2vl_free(e);
    }
    double wc, wr;
    grads_close(f, c, name, &wc, &wr);
    printf("%s: loss fp32 %.7g bf16 %.7g (relative %.3g); gradients: worst cosine %.6f, worst "
           "relative error %.4g over %zu tensors\n", name, lf, lc, lrel, wc, wr,
           qwen2vl_num_tensors(f));

    /* a second pass accumulates, alike on both bf16 backends */
    CHECK(qwen2vl_forward_backward(c, &tb.b, &lc, &err) == 0);
    CHECK(qwen2vl_forward_backward(g, &tb.b, &lg, &err) == 0);
    CHECK(memcmp(&lc, &lg, sizeof lc) == 0);
    buffers_same(c, g, 1, "accumulated");

    /* forward only and the logits: fp32-close, and bit-identical across the bf16 backends */
    float ff = NAN, fc = NAN, fg = NAN;
    CHECK(qwen2vl_forward(f, &tb.b, &ff, &err) == 0);
    CHECK(qwen2vl_forward(c, &tb.b, &fc, &err) == 0);
    CHECK_MSG(qwen2vl_forward(g, &tb.b, &fg, &err) == 0, "%s", err.message);
    CHECK_MSG(rel_diff(fc, ff) < LOSS_REL_MAX && memcmp(&fc, &fg, sizeof fc) == 0,
              "forward loss fp32 %.7g, bf16 cpu %.7g, bf16 cpu-guarded %.7g", ff, fc, fg);
    size_t nl = (size_t)tb.b.n_tokens * (size_t)cfg.text.vocab_size;
    float *lo32 = malloc(nl * sizeof(float)), *loc = malloc(nl * sizeof(float));
    float *log_ = malloc(nl * sizeof(float));
    memset(loc, 0xff, nl * sizeof(float));
    memset(log_, 0xff, nl * sizeof(float));
    CHECK(qwen2vl_logits(f, 0, tb.b.n_tokens, lo32, &err) == 0);
    CHECK(qwen2vl_logits(c, 0, tb.b.n_tokens, loc, &err) == 0);
    CHECK_MSG(qwen2vl_logits(g, 0, tb.b.n_tokens, log_, &err) == 0, "%s", err.message);
    CHECK_MSG(memcmp(loc, log_, nl * sizeof(float)) == 0, "bf16 logits differ cpu vs cpu-guarded");
    double nd = 0, n32 = 0;
    for (size_t i = 0; i < nl; i++) {
        nd += ((double)loc[i] - lo32[i]) * ((double)loc[i] - lo32[i]);
        n32 += (double)lo32[i] * lo32[i];
    }
    double logit_rel = sqrt(nd / n32);
    CHECK_MSG(logit_rel < LOGIT_REL_MAX, "logits bf16 vs fp32: relative error %.4g", logit_rel);
    printf("%s: forward loss fp32 %.7g bf16 %.7g; logits relative error %.4g\n", name, ff, fc,
           logit_rel);
    free(lo32);
    free(loc);
    free(log_);

    /* micro-batches: the first sample, then the text-only one (no image) */
    qwen2vl_batch mb_a = tb.first, mb_b = tb.text;
    float lm[3][2];
    for (int k = 0; k < 3; k++) {
        qwen2vl_zero_grads(all[k]);
        CHECK(qwen2vl_forward_backward(all[k], &mb_a, &lm[k][0], &err) == 0);
        CHECK_MSG(qwen2vl_forward_backward(all[k], &mb_b, &lm[k][1], &err) == 0, "%s",
                  err.message);
    }
    CHECK(memcmp(lm[1], lm[2], sizeof lm[1]) == 0);
    CHECK(rel_diff(lm[1][0], lm[0][0]) < LOSS_REL_MAX && rel_diff(lm[1][1], lm[0][1]) < LOSS_REL_MAX);
    buffers_same(c, g, 1, "micro-batches");
    grads_close(f, c, "micro-batches", &wc, &wr);

    /* gradients-ready: every float reported once, final when reported */
    size_t reported;
    int final;
    CHECK(fixture_ready_run(g, &tb.b, &lg, &reported, &final, &err) == 0);
    CHECK_MSG(reported == n && final,
              "bf16 gradients-ready: %zu of %zu floats reported, or a range changed after its "
              "report", reported, n);

    /* frozen towers: vision and merger, then vision alone */
    static const int frozen[2][2] = { { 1, 1 }, { 1, 0 } };
    for (int fz = 0; fz < 2; fz++) {
        for (int k = 0; k < 3; k++) {
            CHECK(qwen2vl_set_frozen(all[k], QWEN2VL_TOWER_VISION, frozen[fz][0], &err) == 0);
            CHECK(qwen2vl_set_frozen(all[k], QWEN2VL_TOWER_MERGER, frozen[fz][1], &err) == 0);
            qwen2vl_zero_grads(all[k]);
            CHECK(qwen2vl_forward_backward(all[k], &tb.b, &lm[k][0], &err) == 0);
        }
        CHECK(memcmp(&lm[1][0], &lm[2][0], sizeof(float)) == 0);
        buffers_same(c, g, 1, fz ? "vision frozen" : "vision and merger frozen");
        grads_close(f, c, fz ? "vision frozen" : "vision and merger frozen", &wc, &wr);
        float *gg = fixture_buffer_copy(c, 1);
        size_t written = 0;
        for (size_t k = 0; k < qwen2vl_num_tensors(c); k++) {
            const qwen2vl_tensor *t = qwen2vl_tensor_at(c, k);
            if (t->tower == QWEN2VL_TOWER_VISION || (frozen[fz][1] && t->tower == QWEN2VL_TOWER_MERGER))
                for (size_t i = t->offset; i < t->offset + t->numel; i++) written += gg[i] != 0.0f;
        }
        CHECK_MSG(written == 0, "bf16 frozen towers: %zu gradients written", written);
        free(gg);
    }
    for (int k = 0; k < 3; k++) {
        CHECK(qwen2vl_set_frozen(all[k], QWEN2VL_TOWER_VISION, 0, &err) == 0);
        CHECK(qwen2vl_set_frozen(all[k], QWEN2VL_TOWER_MERGER, 0, &err) == 0);
    }

    /* the passes read the working copy: a master changed behind the model's back (the cpu
     * backend's buffer is host memory) is not seen until qwen2vl_weights_changed */
    float before = NAN, stale = NAN, fresh = NAN, viacopy = NAN;
    CHECK(qwen2vl_forward(c, &tb.b, &before, &err) == 0);
    float *master = qwen2vl_param_buffer(c);
    for (size_t i = 0; i < n; i++) w[i] *= 0.5f;
    memcpy(master, w, n * sizeof(float));
    CHECK(qwen2vl_forward(c, &tb.b, &stale, &err) == 0);
    qwen2vl_weights_changed(c);
    CHECK(qwen2vl_forward(c, &tb.b, &fresh, &err) == 0);
    qwen2vl_copy_in(g, 0, 0, n, w);  /* copy_in refreshes the copy itself */
    CHECK(qwen2vl_forward(g, &tb.b, &viacopy, &err) == 0);
    CHECK_MSG(memcmp(&before, &stale, sizeof before) == 0 && fresh != before &&
              memcmp(&fresh, &viacopy, sizeof fresh) == 0,
              "working copy: loss %.9g, after a master change without weights_changed %.9g, with "
              "it %.9g, through copy_in %.9g", before, stale, fresh, viacopy);
    qwen2vl_copy_in(f, 0, 0, n, w);
    /* load_weights refreshes the copy too: the fp32 model's weights saved, loaded into a fresh
     * bf16 guarded model, give the loss of the model that got them through copy_in */
    char dir[] = "/tmp/adapt-bf16-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_MSG(qwen2vl_save_weights(f, dir, 0, &err) == 0, "save: %s", err.message);
    qwen2vl_model *ld = NULL;
    CHECK(qwen2vl_create(&ld, &cfg, &b16, ops_cpu_guarded(), &err) == 0);
    if (ld) {
        float lload = NAN;
        CHECK_MSG(qwen2vl_load_weights(ld, dir, &err) == 0, "load: %s", err.message);
        CHECK(qwen2vl_forward(ld, &tb.b, &lload, &err) == 0);
        CHECK_MSG(memcmp(&lload, &viacopy, sizeof lload) == 0, "loaded bf16 model: loss %.9g, "
                  "through copy_in %.9g", lload, viacopy);
        qwen2vl_free(ld);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    /* the copy is the master rounded to nearest even, every float of the buffer (cpu: host
     * memory); there is none in fp32 */
    const ops_bf16 *p16 = qwen2vl_param_buffer_bf16(c);
    size_t nbf = qwen2vl_buffer_floats(c), off = 0;
    for (size_t i = 0; p16 && i < nbf; i++) off += p16[i] != ops_bf16_from_f32(master[i]);
    CHECK_MSG(p16 && off == 0 && qwen2vl_param_buffer_bf16(f) == NULL &&
              qwen2vl_param_buffer_bf16(g) != NULL, "working copy: %zu of %zu elements are not "
              "the rounded master", off, nbf);
    free(w);

    /* SGD steps on the master: the loss goes down in bf16 as in fp32 */
    enum { STEPS = 6 };
    float tf[STEPS], tc[STEPS], tg[STEPS];
    const float lr = 0.05f;  /* 0.5 overshoots in fp32 already; 0.02 .. 0.2 all descend */
    sgd_steps(f, &tb.b, lr, STEPS, tf);
    sgd_steps(c, &tb.b, lr, STEPS, tc);
    sgd_steps(g, &tb.b, lr, STEPS, tg);
    CHECK_MSG(memcmp(tc, tg, sizeof tc) == 0, "bf16 SGD: cpu and cpu-guarded losses differ");
    buffers_same(c, g, 0, "after SGD steps");
    double drift = 0;
    for (int s = 0; s < STEPS; s++)
        if (!(rel_diff(tc[s], tf[s]) <= drift)) drift = rel_diff(tc[s], tf[s]);
    CHECK_MSG(tf[STEPS - 1] < 0.95f * tf[0] && tc[STEPS - 1] < 0.95f * tc[0] && drift < 5e-2,
              "SGD: fp32 loss %.6g -> %.6g, bf16 %.6g -> %.6g (largest relative gap %.3g)",
              tf[0], tf[STEPS - 1], tc[0], tc[STEPS - 1], drift);
    printf("%s: %d SGD steps (lr %g): fp32 loss %.6g -> %.6g, bf16 %.6g -> %.6g, largest gap %.3g\n",
           name, STEPS, lr, tf[0], tf[STEPS - 1], tc[0], tc[STEPS - 1], drift);

    qwen2vl_free(f);
    qwen2vl_free(c);
    qwen2vl_free(g);
}

/* TrainSpec.precision through the worker's spec reader (train_rules underneath) */
static void test_precision_rule(void)
{
    static const char *const docs[3] = {
        "{\"model_path\": \"/m\", \"corpus\": \"/c\", \"output_dir\": \"/o\"}",
        "{\"model_path\": \"/m\", \"corpus\": \"/c\", \"output_dir\": \"/o\", \"precision\": \"bf16\"}",
        "{\"model_path\": \"/m\", \"corpus\": \"/c\", \"output_dir\": \"/o\", \"precision\": \"fp16\"}",
    };
    for (int k = 0; k < 3; k++) {
        Adaptd__TrainSpec *t = NULL;
        adapt_error err = {0};
        int rc = train_spec_parse(docs[k], strlen(docs[k]), "spec.json", &t, &err);
        if (k < 2) {
            CHECK_MSG(rc == 0 && t && !strcmp(t->precision, k ? "bf16" : "fp32"), "precision %d: "
                      "rc %d %s (%s)", k, rc, err.message, t ? t->precision : "-");
        } else {
            CHECK_MSG(rc == ADAPT_EINVAL, "precision fp16: rc %d", rc);
            CHECK_STR_CONTAINS(err.message, "precision");
            CHECK_STR_CONTAINS(err.message, "fp16");
        }
        if (t) train_spec_free(t);
    }
}

int main(void)
{
    test_precision_rule();
    test_variant(0);
    test_variant(1);
    return check_report("qwen2vl_bf16");
}
