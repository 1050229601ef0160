/* test_qwen2vl_guarded: the Qwen2-VL model never touches backend memory behind the op table's back.
 *
 * The same tiny model (tied and untied LM head) is built twice, on ops_cpu() and on
 * ops_cpu_guarded() — whose memory is PROT_NONE outside the table's entries, so any host access
 * to a parameter, gradient or activation segfaults — with the same weights. On a packed batch of
 * three samples (images of three sizes, two images in one sample, a text-only sample):
 *   - the guarded model's buffers really are guarded memory (a forked child reading them dies of
 *     SIGSEGV: without that, every comparison below would pass vacuously);
 *   - init, forward + backward, accumulation, logits, micro-batches, gradients-ready ranges and
 *     the frozen towers give the cpu model's loss and every gradient bit for bit (both read
 *     through qwen2vl_copy_out), the buffers' slack stays zero;
 *   - save_weights of the guarded model loads into a cpu model (and the cpu model's into a guarded
 *     one) with identical parameters, and both write the same bytes. */
#include "check.h"
#include "qwen2vl.h"
#include "qwen2vl_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const qwen2vl_budget *const BUDGET = &fixture_batch_budget;

/* The first tensor whose floats differ, named; the slack past n_params must be zero in both. */
static void buffers_same(qwen2vl_model *c, qwen2vl_model *g, int grads, const char *what)
{
    const char *first;
    size_t slack, diff = fixture_buffers_diff(c, g, grads, &first, &slack);
    CHECK_MSG(diff == 0, "%s: %s of %zu tensors differ between cpu and cpu-guarded (first %s)",
              what, grads ? "gradients" : "parameters", diff, first);
    CHECK_MSG(slack == 0, "%s: %zu floats of the %s buffer's slack are not zero", what, slack,
              grads ? "gradient" : "parameter");
}

static int files_same(const char *a, const char *b)
{
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static void test_variant(int tied)
{
    adapt_error err = {0};
    model_config cfg;
    if (fixture_config_parse(&cfg, tied, &err)) { CHECK_MSG(0, "%s", err.message); return; }
    qwen2vl_model *c = NULL, *g = NULL;
    CHECK_MSG(qwen2vl_create(&c, &cfg, BUDGET, ops_cpu(), &err) == 0, "cpu: %s", err.message);
    CHECK_MSG(qwen2vl_create(&g, &cfg, BUDGET, ops_cpu_guarded(), &err) == 0, "cpu-guarded: %s",
              err.message);
    if (!c || !g) { qwen2vl_free(c); qwen2vl_free(g); return; }
    CHECK(qwen2vl_ops(g) == ops_cpu_guarded() && qwen2vl_ops(c) == ops_cpu());
    size_t n = qwen2vl_num_params(g), total = qwen2vl_buffer_floats(g);
    CHECK_MSG(total == n + 4096 && qwen2vl_buffer_floats(c) == total, "buffer_floats %zu for %zu params",
              total, n);
    /* the model's buffers are the backend's memory, not host memory */
    CHECK_MSG(fixture_read_faults(qwen2vl_param_buffer(g)), "the guarded model's parameter buffer "
              "is readable from the host: not allocated through the op table");
    CHECK_MSG(fixture_read_faults(qwen2vl_grad_buffer(g)), "the guarded model's gradient buffer "
              "is readable from the host: not allocated through the op table");
    CHECK(fixture_read_faults(qwen2vl_weights(g)->embed) &&
          fixture_read_faults(qwen2vl_grads(g)->lm_head));

    /* init through host staging: the same weights on both */
    qwen2vl_init_weights(c, 17);
    qwen2vl_init_weights(g, 17);
    buffers_same(c, g, 0, "init");
    /* then weights of a scale with non-trivial gradients everywhere (std 0.02 leaves them tiny),
     * and non-trivial norms and biases, written into both through copy_in */
    float *w = fixture_buffer_copy(c, 0);
    for (size_t i = 0; i < n; i++) w[i] = 3.0f * w[i] + 0.02f * sinf(0.61f * (float)i);
    qwen2vl_copy_in(c, 0, 0, n, w);
    qwen2vl_copy_in(g, 0, 0, n, w);
    /* a partial copy_in in the middle of the buffer lands where it should */
    float probe[5] = { 0.5f, -0.25f, 0.125f, 2.0f, -1.0f }, back[5];
    qwen2vl_copy_in(g, 0, n / 2, 5, probe);
    qwen2vl_copy_out(g, 0, n / 2, 5, back);
    CHECK(memcmp(probe, back, sizeof probe) == 0);
    qwen2vl_copy_in(g, 0, n / 2, 5, w + n / 2);
    buffers_same(c, g, 0, "copy_in");
    free(w);

    static fixture_batch tb;
    fixture_batch_make(&tb);
    float lc = 0, lg = -1;
    /* forward + backward */
    qwen2vl_zero_grads(c);
    qwen2vl_zero_grads(g);
    CHECK_MSG(qwen2vl_forward_backward(c, &tb.b, &lc, &err) == 0, "cpu: %s", err.message);
    CHECK_MSG(qwen2vl_forward_backward(g, &tb.b, &lg, &err) == 0, "cpu-guarded: %s", err.message);
    CHECK_MSG(lc == lg && isfinite(lc) && lc > 0, "loss cpu %.9g, cpu-guarded %.9g", lc, lg);
    buffers_same(c, g, 1, "forward_backward");
    /* a second pass accumulates, on both alike */
    CHECK(qwen2vl_forward_backward(c, &tb.b, &lc, &err) == 0);
    CHECK(qwen2vl_forward_backward(g, &tb.b, &lg, &err) == 0);
    CHECK(lc == lg);
    buffers_same(c, g, 1, "accumulated");
    printf("%s: loss %.9g on both, %zu gradients identical\n", tied ? "tied" : "untied", lc, n);

    /* forward only, then every row's logits */
    float fc = 0, fg = -1;
    CHECK(qwen2vl_forward(c, &tb.b, &fc, &err) == 0);
    CHECK_MSG(qwen2vl_forward(g, &tb.b, &fg, &err) == 0, "cpu-guarded forward: %s", err.message);
    CHECK_MSG(fc == fg && fc == lc, "forward loss cpu %.9g, cpu-guarded %.9g", fc, fg);
    size_t nl = (size_t)tb.b.n_tokens * (size_t)cfg.text.vocab_size;
    float *logc = malloc(nl * sizeof *logc), *logg = malloc(nl * sizeof *logg);
    memset(logg, 0xff, nl * sizeof *logg);
    CHECK_MSG(qwen2vl_logits(c, 0, tb.b.n_tokens, logc, &err) == 0, "%s", err.message);
    CHECK_MSG(qwen2vl_logits(g, 0, tb.b.n_tokens, logg, &err) == 0, "cpu-guarded logits: %s",
              err.message);
    CHECK_MSG(memcmp(logc, logg, nl * sizeof *logc) == 0, "logits differ");
    /* a slice of rows (its own product shape: compared with the cpu model's slice) */
    CHECK(qwen2vl_logits(c, 7, 5, logc, &err) == 0);
    CHECK(qwen2vl_logits(g, 7, 5, logg, &err) == 0);
    CHECK_MSG(memcmp(logc, logg, 5 * (size_t)cfg.text.vocab_size * sizeof *logg) == 0,
              "logits of rows 7..11 differ");
    free(logc);
    free(logg);

    /* micro-batches: the text-only sample alone (no image on the guarded backend) after the first */
    qwen2vl_batch mb_a = tb.first, mb_b = tb.text;
    qwen2vl_model *both[2] = { c, g };
    float lm[2][2];
    for (int k = 0; k < 2; k++) {
        qwen2vl_zero_grads(both[k]);
        CHECK(qwen2vl_forward_backward(both[k], &mb_a, &lm[k][0], &err) == 0);
        CHECK_MSG(qwen2vl_forward_backward(both[k], &mb_b, &lm[k][1], &err) == 0, "%s", err.message);
    }
    CHECK(lm[0][0] == lm[1][0] && lm[0][1] == lm[1][1]);
    buffers_same(c, g, 1, "micro-batches");

    /* the gradients-ready ranges: each downloaded when reported is already final */
    size_t reported;
    int final;
    CHECK(fixture_ready_run(g, &tb.b, &lg, &reported, &final, &err) == 0);
    CHECK_MSG(reported == n && final,
              "gradients-ready: %zu of %zu floats reported, or a range changed after its report",
              reported, n);

    /* frozen towers: vision and merger, then vision alone */
    static const int frozen[2][2] = { { 1, 1 }, { 1, 0 } };
    for (int f = 0; f < 2; f++) {
        for (int k = 0; k < 2; k++) {
            CHECK(qwen2vl_set_frozen(both[k], QWEN2VL_TOWER_VISION, frozen[f][0], &err) == 0);
            CHECK(qwen2vl_set_frozen(both[k], QWEN2VL_TOWER_MERGER, frozen[f][1], &err) == 0);
            qwen2vl_zero_grads(both[k]);
            CHECK_MSG(qwen2vl_forward_backward(both[k], &tb.b, &lm[k][0], &err) == 0, "%s",
                      err.message);
        }
        CHECK(lm[0][0] == lm[1][0]);
        buffers_same(c, g, 1, f ? "vision frozen" : "vision and merger frozen");
        float *gg = fixture_buffer_copy(g, 1);
        size_t nonzero = 0, nonzero_llm = 0;
        for (size_t k = 0; k < qwen2vl_num_tensors(g); k++) {
            const qwen2vl_tensor *t = qwen2vl_tensor_at(g, k);
            for (size_t i = t->offset; i < t->offset + t->numel; i++) {
                if (t->tower == QWEN2VL_TOWER_VISION) nonzero += gg[i] != 0.0f;
                if (t->tower == QWEN2VL_TOWER_LLM) nonzero_llm += gg[i] != 0.0f;
            }
        }
        CHECK_MSG(nonzero == 0 && nonzero_llm > 0, "frozen vision: %zu vision gradients written, "
                  "%zu LLM gradients", nonzero, nonzero_llm);
        free(gg);
    }
    for (int k = 0; k < 2; k++) {
        CHECK(qwen2vl_set_frozen(both[k], QWEN2VL_TOWER_VISION, 0, &err) == 0);
        CHECK(qwen2vl_set_frozen(both[k], QWEN2VL_TOWER_MERGER, 0, &err) == 0);
    }

    /* weights out of the guarded model into a cpu model, and back, and the same bytes written */
    char dg[] = "/tmp/adapt-guard-XXXXXX", dc[] = "/tmp/adapt-guard-XXXXXX";
    CHECK(mkdtemp(dg) != NULL && mkdtemp(dc) != NULL);
    CHECK_MSG(qwen2vl_save_weights(g, dg, 0, &err) == 0, "cpu-guarded save: %s", err.message);
    CHECK_MSG(qwen2vl_save_weights(c, dc, 0, &err) == 0, "cpu save: %s", err.message);
    char fg_path[600], fc_path[600];
    snprintf(fg_path, sizeof fg_path, "%s/model.safetensors", dg);
    snprintf(fc_path, sizeof fc_path, "%s/model.safetensors", dc);
    CHECK_MSG(files_same(fg_path, fc_path), "model.safetensors of cpu and cpu-guarded differ");
    qwen2vl_model *c2 = NULL, *g2 = NULL;
    CHECK(qwen2vl_create(&c2, &cfg, BUDGET, ops_cpu(), &err) == 0);
    CHECK(qwen2vl_create(&g2, &cfg, BUDGET, ops_cpu_guarded(), &err) == 0);
    if (c2 && g2) {
        CHECK_MSG(qwen2vl_load_weights(c2, dg, &err) == 0, "cpu load: %s", err.message);
        CHECK_MSG(qwen2vl_load_weights(g2, dc, &err) == 0, "cpu-guarded load: %s", err.message);
        buffers_same(c2, g, 0, "saved by cpu-guarded, loaded by cpu");
        buffers_same(c, g2, 0, "saved by cpu, loaded by cpu-guarded");
        /* sharded save from the guarded model */
        CHECK(fixture_dir_remove(dg) == 0);
        strcpy(dg, "/tmp/adapt-guard-XXXXXX");
        CHECK(mkdtemp(dg) != NULL);
        CHECK_MSG(qwen2vl_save_weights(g, dg, 100000, &err) == 0, "sharded save: %s", err.message);
        qwen2vl_init_weights(c2, 99);
        CHECK_MSG(qwen2vl_load_weights(c2, dg, &err) == 0, "sharded load: %s", err.message);
        buffers_same(c2, g, 0, "sharded, saved by cpu-guarded");
    }
    qwen2vl_free(c2);
    qwen2vl_free(g2);
    CHECK(fixture_dir_remove(dg) == 0 && fixture_dir_remove(dc) == 0);

    /* generation may need host access: then refused clearly, not a segfault */
    qwen2vl_model *inf = NULL;
    int rc = qwen2vl_create_inference(&inf, &cfg, ops_cpu_guarded(), &err);
    if (rc != 0) {
        CHECK_MSG(rc == ADAPT_EUNSUPPORTED && err.message[0], "inference on cpu-guarded: rc %d (%s)",
                  rc, err.message);
    } else {
        qwen2vl_infer *s = NULL;
        rc = qwen2vl_infer_create(&s, inf, 1, 16, 16, 16, &err);
        CHECK_MSG(rc == 0 || (rc == ADAPT_EUNSUPPORTED && err.message[0]),
                  "inference cache on cpu-guarded: rc %d (%s)", rc, err.message);
        if (s) qwen2vl_infer_free(s);
        qwen2vl_free(inf);
    }
    qwen2vl_free(c);
    qwen2vl_free(g);
}

int main(void)
{
    test_variant(0);
    test_variant(1);
    return check_report("qwen2vl_guarded");
}
