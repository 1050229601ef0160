/* test_qwen2vl: the Qwen2-VL model (worker/qwen2vl*.c).
 *
 * Without arguments (suite unit): the parameter layout's names and counts, get_rope_index on
 * hand-worked layouts and its refusals, init's scheme, save -> load bit-exact through the model's
 * own writer and reader (F32, one file and shards; save_pretrained's names and transformers 5.x's
 * module names), batch refusals, that a forward-backward pass is deterministic, its gradients
 * accumulate, micro-batches sharing the global normaliser add up to the packed batch, the freeze
 * switches hold, and a finite-difference check of the gradient of each tower.
 *
 * With `--reference SCRIPT PYTHON` (suite reference): transformers' Qwen2VLForConditionalGeneration
 * is the reference (tests/reference/qwen2vl_ref.py). A tiny model with random weights written by
 * save_pretrained (tied and untied LM head) is loaded; on a packed batch of four samples (images
 * of different sizes, two images in one sample, a text-only sample) the logits, the loss and the
 * gradient of every parameter must match within a relative error of 1e-4 (max |diff| / max |ref|
 * per tensor), and get_rope_index must match on several layouts exactly. */
#include "check.h"
#include "qwen2vl.h"
#include "qwen2vl_fixture.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOL 1e-4

/* the shared tiny model (qwen2vl_fixture.c), its LM head tied or not */
static int tiny_config(model_config *cfg, int tied)
{
    adapt_error err = {0};
    int rc = fixture_config_parse(cfg, tied, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    return rc;
}

static const qwen2vl_budget BUDGET = { .max_tokens = 128, .max_patches = 256, .max_seqs = 8,
                                       .max_images = 8 };

static void test_layout(void)
{
    model_config cfg;
    if (tiny_config(&cfg, 1)) return;
    qwen2vl_tensor *t;
    size_t n, towers[QWEN2VL_TOWER_COUNT];
    adapt_error err = {0};
    CHECK(qwen2vl_layout(&cfg, &t, &n, towers, &err) == 0);
    /* 1 patch embed + 12 per vision block + 6 merger; embed + 12 per layer + norm */
    CHECK(n == 1 + 2 * 12 + 6 + 1 + 2 * 12 + 1);
    CHECK(strcmp(t[0].name, "visual.patch_embed.proj.weight") == 0);
    CHECK(t[0].ndim == 5 && t[0].shape[1] == 3 && t[0].shape[4] == 14);
    /* a block: 4E^2 (qkv, proj) + 2ME (fc1, fc2) + 9E (2 norms, qkv and proj biases, fc2 bias)
     * + M (fc1 bias) */
    CHECK(towers[QWEN2VL_TOWER_VISION] == 32 * 1176 + 2 * (4 * 32 * 32 + 2 * 64 * 32 + 9 * 32 + 64));
    CHECK(towers[QWEN2VL_TOWER_MERGER] == 2 * 32 + 128 * 128 + 128 + 64 * 128 + 64);
    int has_head = 0, has_embed = 0;
    for (size_t i = 0; i < n; i++) {
        has_head |= strcmp(t[i].name, "lm_head.weight") == 0;
        has_embed |= strcmp(t[i].name, "model.embed_tokens.weight") == 0;
        if (i) CHECK(t[i].offset == t[i - 1].offset + t[i - 1].numel);
    }
    CHECK(!has_head && has_embed);
    free(t);
    if (tiny_config(&cfg, 0)) return;
    CHECK(qwen2vl_layout(&cfg, &t, &n, towers, &err) == 0);
    CHECK(strcmp(t[n - 1].name, "lm_head.weight") == 0);
    free(t);
}

static void test_rope_index(void)
{
    enum { IMG = 9 };
    /* text(2) image 4x4 -> 2x2 merged, text(2): text after starts at 2 + max(2, 2) = 4 */
    int ids[] = { 1, 2, IMG, IMG, IMG, IMG, 3, 4 };
    int grid[] = { 1, 4, 4 };
    int pos[3 * 8], cursor = 0;
    adapt_error err = {0};
    CHECK(qwen2vl_rope_index(ids, 8, IMG, 2, grid, 1, &cursor, pos, 8, &err) == 0);
    int want_t[] = { 0, 1, 2, 2, 2, 2, 4, 5 }, want_h[] = { 0, 1, 2, 2, 3, 3, 4, 5 };
    int want_w[] = { 0, 1, 2, 3, 2, 3, 4, 5 };
    CHECK(memcmp(pos, want_t, sizeof want_t) == 0);
    CHECK(memcmp(pos + 8, want_h, sizeof want_h) == 0);
    CHECK(memcmp(pos + 16, want_w, sizeof want_w) == 0);
    CHECK(cursor == 1);
    /* a run of the wrong length, and a run with no image left */
    cursor = 0;
    CHECK(qwen2vl_rope_index(ids, 5, IMG, 2, grid, 1, &cursor, pos, 8, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "needs 4");
    cursor = 1;
    CHECK(qwen2vl_rope_index(ids, 8, IMG, 2, grid, 1, &cursor, pos, 8, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "no image left");
}

static void test_init(void)
{
    model_config cfg;
    if (tiny_config(&cfg, 1)) return;
    qwen2vl_model *m;
    adapt_error err = {0};
    if (qwen2vl_create(&m, &cfg, &BUDGET, ops_cpu(), &err)) { CHECK_MSG(0, "%s", err.message); return; }
    qwen2vl_init_weights(m, 42);
    qwen2vl_params *w = qwen2vl_weights(m);
    CHECK(w->in_norm[0] == 1.0f && w->v_norm1_b[5] == 0.0f && w->q_b[3] == 0.0f);
    CHECK(w->lm_head == w->embed);
    double s = 0, s2 = 0;
    size_t n = (size_t)256 * 64;
    for (size_t i = 0; i < n; i++) { s += w->embed[i]; s2 += (double)w->embed[i] * w->embed[i]; }
    double sd = sqrt(s2 / n - (s / n) * (s / n));
    CHECK_MSG(fabs(sd - 0.02) < 0.001 && fabs(s / n) < 0.001, "embed std %g mean %g", sd, s / n);
    for (int d = 0; d < 64; d++) CHECK(w->embed[3 * 64 + d] == 0.0f);  /* pad_token_id row */
    qwen2vl_free(m);
}

/* Item 8c: the model's writer and reader round-trip every bit, one file and shards. */
static void test_save_load(int tied, uint64_t shard)
{
    model_config cfg;
    if (tiny_config(&cfg, tied)) return;
    qwen2vl_model *a, *b;
    adapt_error err = {0};
    if (qwen2vl_create(&a, &cfg, &BUDGET, ops_cpu(), &err)) { CHECK_MSG(0, "%s", err.message); return; }
    CHECK(qwen2vl_create(&b, &cfg, &BUDGET, ops_cpu(), &err) == 0);
    qwen2vl_init_weights(a, 7);
    /* Make norms and biases non-trivial so a swap of two tensors would show. */
    float *pa = qwen2vl_param_buffer(a);
    for (size_t i = 0; i < qwen2vl_num_params(a); i += 3) pa[i] += 1e-3f * (float)(i % 97);
    char dir[] = "/tmp/adapt-q2vl-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_MSG(qwen2vl_save_weights(a, dir, shard, &err) == 0, "%s", err.message);
    CHECK_MSG(qwen2vl_load_weights(b, dir, &err) == 0, "%s", err.message);
    CHECK(memcmp(pa, qwen2vl_param_buffer(b), qwen2vl_num_params(a) * sizeof(float)) == 0);
    /* a checkpoint of the other LM-head kind lacks or has an extra tensor: refused, named */
    if (!tied) {
        model_config tcfg;
        tiny_config(&tcfg, 1);
        qwen2vl_model *t;
        CHECK(qwen2vl_create(&t, &tcfg, &BUDGET, ops_cpu(), &err) == 0);
        int rc = qwen2vl_load_weights(t, dir, &err);
        /* tied models accept a stray lm_head.weight, as transformers does */
        CHECK_MSG(rc == 0, "%s", err.message);
        qwen2vl_free(t);
    } else {
        model_config ucfg;
        tiny_config(&ucfg, 0);
        qwen2vl_model *u;
        CHECK(qwen2vl_create(&u, &ucfg, &BUDGET, ops_cpu(), &err) == 0);
        CHECK(qwen2vl_load_weights(u, dir, &err) != 0);
        CHECK_STR_CONTAINS(err.message, "lm_head.weight");
        qwen2vl_free(u);
    }
    CHECK(fixture_dir_remove(dir) == 0);
    qwen2vl_free(a);
    qwen2vl_free(b);
}

/* A checkpoint under transformers 5.x's module names (model.visual.*, model.language_model.*)
 * loads to the same parameters. */
static void test_load_module_names(void)
{
    model_config cfg;
    if (tiny_config(&cfg, 0)) return;
    qwen2vl_model *a, *b;
    adapt_error err = {0};
    if (qwen2vl_create(&a, &cfg, &BUDGET, ops_cpu(), &err)) { CHECK_MSG(0, "%s", err.message); return; }
    CHECK(qwen2vl_create(&b, &cfg, &BUDGET, ops_cpu(), &err) == 0);
    qwen2vl_init_weights(a, 9);
    size_t n = qwen2vl_num_tensors(a);
    safetensors_entry *e = calloc(n, sizeof *e);
    char (*names)[160] = calloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(a, i);
        if (strncmp(t->name, "visual.", 7) == 0) snprintf(names[i], 160, "model.%s", t->name);
        else if (strncmp(t->name, "model.", 6) == 0)
            snprintf(names[i], 160, "model.language_model.%s", t->name + 6);
        else snprintf(names[i], 160, "%s", t->name);
        e[i] = (safetensors_entry){ .name = names[i], .dtype = SAFETENSORS_F32, .ndim = t->ndim,
                                    .data = qwen2vl_param_buffer(a) + t->offset };
        memcpy(e[i].shape, t->shape, sizeof t->shape);
    }
    char dir[] = "/tmp/adapt-q2vl-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_MSG(safetensors_write_dir(dir, e, n, 0, &err) == 0, "%s", err.message);
    CHECK_MSG(qwen2vl_load_weights(b, dir, &err) == 0, "%s", err.message);
    CHECK(memcmp(qwen2vl_param_buffer(a), qwen2vl_param_buffer(b),
                 qwen2vl_num_params(a) * sizeof(float)) == 0);
    CHECK(fixture_dir_remove(dir) == 0);
    free(e);
    free(names);
    qwen2vl_free(a);
    qwen2vl_free(b);
}

/* A small packed batch: two sequences, the first with a 4x4-patch image. */
typedef struct tiny_batch {
    int ids[24], labels[24], cu[3], grid[3];
    float pix[16 * 1176];
    qwen2vl_batch b;
} tiny_batch;

static void tiny_batch_make(tiny_batch *t)
{
    int ids[24] = { 5, 6, 252, 250, 250, 250, 250, 253, 7, 8, 9, 10, 11, 12,
                    20, 21, 22, 23, 24, 25, 26, 27, 28, 29 };
    memcpy(t->ids, ids, sizeof ids);
    for (int i = 0; i < 24; i++) t->labels[i] = (i < 3 || ids[i] == 250) ? OPS_LABEL_IGNORE : ids[i];
    t->cu[0] = 0; t->cu[1] = 14; t->cu[2] = 24;
    t->grid[0] = 1; t->grid[1] = 4; t->grid[2] = 4;
    for (int i = 0; i < 16 * 1176; i++) t->pix[i] = sinf(0.37f * (float)i);
    t->b = (qwen2vl_batch){ .n_tokens = 24, .input_ids = t->ids, .labels = t->labels, .n_seqs = 2,
                            .cu_seqlens = t->cu, .n_images = 1, .image_grid_thw = t->grid,
                            .pixel_values = t->pix, .loss_normaliser = 17.0f };
}

static void test_step(void)
{
    model_config cfg;
    if (tiny_config(&cfg, 0)) return;
    qwen2vl_model *m;
    adapt_error err = {0};
    if (qwen2vl_create(&m, &cfg, &BUDGET, ops_cpu(), &err)) { CHECK_MSG(0, "%s", err.message); return; }
    qwen2vl_init_weights(m, 3);
    static tiny_batch tb;
    tiny_batch_make(&tb);
    size_t n = qwen2vl_num_params(m);
    float *g1 = malloc(n * sizeof *g1);
    float l1, l2, l3;
    qwen2vl_zero_grads(m);
    CHECK_MSG(qwen2vl_forward_backward(m, &tb.b, &l1, &err) == 0, "%s", err.message);
    memcpy(g1, qwen2vl_grad_buffer(m), n * sizeof *g1);
    /* a training pass carries only the scored rows past the last layer's attention (the tiny
     * batch masks its prompts), so every row's logits are refused after it ... */
    float *one_row = malloc((size_t)cfg.text.vocab_size * sizeof *one_row);
    CHECK(qwen2vl_logits(m, 0, 1, one_row, &err) == ADAPT_EINVAL);
    CHECK(qwen2vl_forward(m, &tb.b, &l2, &err) == 0);
    CHECK(l1 == l2 && isfinite(l1) && l1 > 0);
    /* ... and given after a forward pass */
    CHECK_MSG(qwen2vl_logits(m, 0, 1, one_row, &err) == 0, "%s", err.message);
    free(one_row);
    /* gradients accumulate: a second pass doubles them exactly */
    CHECK(qwen2vl_forward_backward(m, &tb.b, &l3, &err) == 0);
    const float *g2 = qwen2vl_grad_buffer(m);
    int doubled = 1;
    for (size_t i = 0; i < n; i++) doubled &= g2[i] == 2.0f * g1[i];
    CHECK(doubled && l3 == l1);
    /* frozen vision tower and merger: no vision gradient written */
    qwen2vl_zero_grads(m);
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_VISION, 1, &err) == 0);
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_MERGER, 1, &err) == 0);
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_LLM, 1, &err) == ADAPT_EUNSUPPORTED);
    CHECK(qwen2vl_forward_backward(m, &tb.b, &l3, &err) == 0);
    const qwen2vl_params *g = qwen2vl_grads(m);
    size_t nv = (size_t)(g->embed - g->patch_embed), zero = 1;
    for (size_t i = 0; i < nv; i++) zero &= g->patch_embed[i] == 0.0f;
    CHECK(zero);
    int same_llm = memcmp(g->embed, g1 + nv, (n - nv) * sizeof(float)) == 0;
    CHECK(same_llm);  /* the LLM's gradients do not depend on the vision backward */
    /* merger trainable, vision frozen: merger gradients as before, vision blocks none */
    qwen2vl_zero_grads(m);
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_MERGER, 0, &err) == 0);
    CHECK(qwen2vl_forward_backward(m, &tb.b, &l3, &err) == 0);
    size_t nb = (size_t)(g->m_ln_w - g->patch_embed);
    zero = 1;
    for (size_t i = 0; i < nb; i++) zero &= g->patch_embed[i] == 0.0f;
    CHECK(zero);
    CHECK(memcmp(g->m_ln_w, g1 + nb, (nv - nb) * sizeof(float)) == 0);
    /* merger frozen, vision trainable: no merger gradient, the vision blocks' as before */
    qwen2vl_zero_grads(m);
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_MERGER, 1, &err) == 0);
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_VISION, 0, &err) == 0);
    CHECK(qwen2vl_forward_backward(m, &tb.b, &l3, &err) == 0);
    zero = 1;
    for (size_t i = nb; i < nv; i++) zero &= g->patch_embed[i] == 0.0f;
    CHECK(zero);
    CHECK(memcmp(g->patch_embed, g1, nb * sizeof(float)) == 0);
    /* the loss is normalised by the global count: the two sequences as two micro-batches, each
     * with the batch's normaliser, give the packed batch's loss and gradients (to rounding) */
    CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_MERGER, 0, &err) == 0);
    qwen2vl_zero_grads(m);
    int cu_a[2] = { 0, 14 }, cu_b[2] = { 0, 10 };
    qwen2vl_batch mb_a = tb.b, mb_b = tb.b;
    mb_a.n_tokens = 14; mb_a.n_seqs = 1; mb_a.cu_seqlens = cu_a;
    mb_b.n_tokens = 10; mb_b.n_seqs = 1; mb_b.cu_seqlens = cu_b; mb_b.n_images = 0;
    mb_b.input_ids = tb.ids + 14; mb_b.labels = tb.labels + 14;
    float la, lb;
    CHECK(qwen2vl_forward_backward(m, &mb_a, &la, &err) == 0);
    CHECK(qwen2vl_forward_backward(m, &mb_b, &lb, &err) == 0);
    CHECK_MSG(fabsf(la + lb - l1) <= 1e-5f * l1, "micro-batches %g + %g vs packed %g", la, lb, l1);
    double gmax = 0, dmax = 0;
    for (size_t i = 0; i < n; i++) {
        gmax = fmax(gmax, fabs(g1[i]));
        dmax = fmax(dmax, fabs((double)g2[i] - g1[i]));
    }
    CHECK_MSG(dmax <= 1e-5 * gmax, "micro-batch gradients differ by %g (scale %g)", dmax, gmax);
    /* refusals: a wrong image-token count, too many tokens */
    tb.grid[1] = 8;
    CHECK(qwen2vl_forward(m, &tb.b, &l2, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "sequence 0");
    tb.grid[1] = 4;
    tb.b.n_tokens = 200;
    CHECK(qwen2vl_forward(m, &tb.b, &l2, &err) == ADAPT_ERANGE);
    free(g1);
    qwen2vl_free(m);
}

/* The gradients-ready ranges of one backward: each range is copied when reported, and how
 * often every float was reported is counted. */
typedef struct ready_log {
    const float *g;
    float       *snap;
    unsigned    *seen;
    size_t       n, n_ranges, off[256], count[256];
    int          outside;
} ready_log;

static void ready_record(void *ctx, size_t offset, size_t count)
{
    ready_log *r = ctx;
    if (offset > r->n || count > r->n - offset || r->n_ranges == 256) {
        r->outside = 1;
        return;
    }
    r->off[r->n_ranges] = offset;
    r->count[r->n_ranges++] = count;
    memcpy(r->snap + offset, r->g + offset, count * sizeof(float));
    for (size_t i = offset; i < offset + count; i++) r->seen[i]++;
}

static void ready_reset(ready_log *r)
{
    r->n_ranges = 0;
    r->outside = 0;
    memset(r->seen, 0, r->n * sizeof *r->seen);
    memset(r->snap, 0xff, r->n * sizeof(float));
}

/* Every float reported exactly once, no range empty, each range already final when reported
 * (the snapshot equals the buffer after the backward bit for bit), and the order the same as
 * qwen2vl_grads_ready_all's. */
static void ready_check(qwen2vl_model *m, ready_log *r, const char *what)
{
    int once = !r->outside, nonempty = 1;
    for (size_t i = 0; i < r->n; i++) once &= r->seen[i] == 1;
    for (size_t k = 0; k < r->n_ranges; k++) nonempty &= r->count[k] > 0;
    CHECK_MSG(once && nonempty, "%s: ranges do not cover the gradients exactly once", what);
    CHECK_MSG(memcmp(r->snap, r->g, r->n * sizeof(float)) == 0,
              "%s: a range changed after it was reported", what);
    ready_log replay = { .g = r->g, .snap = r->snap, .seen = r->seen, .n = r->n };
    ready_reset(&replay);
    qwen2vl_grads_ready_all(m, ready_record, &replay);
    int same = replay.n_ranges == r->n_ranges && !replay.outside;
    for (size_t k = 0; same && k < r->n_ranges; k++)
        same = replay.off[k] == r->off[k] && replay.count[k] == r->count[k];
    CHECK_MSG(same, "%s: the replay's ranges differ from the backward's", what);
}

static void test_grads_ready(int tied)
{
    model_config cfg;
    if (tiny_config(&cfg, tied)) return;
    qwen2vl_model *m;
    adapt_error err = {0};
    if (qwen2vl_create(&m, &cfg, &BUDGET, ops_cpu(), &err)) { CHECK_MSG(0, "%s", err.message); return; }
    qwen2vl_init_weights(m, 5);
    static tiny_batch tb;
    tiny_batch_make(&tb);
    size_t n = qwen2vl_num_params(m);
    ready_log r = { .g = qwen2vl_grad_buffer(m), .snap = malloc(n * sizeof(float)),
                    .seen = malloc(n * sizeof(unsigned)), .n = n };
    float *plain = malloc(n * sizeof *plain);
    float l0, l1;
    /* the same gradients and loss as without the callback */
    qwen2vl_zero_grads(m);
    CHECK(qwen2vl_forward_backward(m, &tb.b, &l0, &err) == 0);
    memcpy(plain, r.g, n * sizeof *plain);
    qwen2vl_zero_grads(m);
    ready_reset(&r);
    CHECK_MSG(qwen2vl_forward_backward_ready(m, &tb.b, &l1, ready_record, &r, &err) == 0, "%s",
              err.message);
    CHECK(l0 == l1 && memcmp(plain, r.g, n * sizeof *plain) == 0);
    ready_check(m, &r, tied ? "tied" : "untied");
    /* on top of accumulated gradients (a last micro-batch after others) */
    ready_reset(&r);
    CHECK(qwen2vl_forward_backward_ready(m, &tb.b, &l1, ready_record, &r, &err) == 0);
    ready_check(m, &r, "accumulated");
    /* a batch with no image: the vision ranges are still reported, in the same places */
    int cu_b[2] = { 0, 10 };
    qwen2vl_batch text = tb.b;
    text.n_tokens = 10; text.n_seqs = 1; text.cu_seqlens = cu_b; text.n_images = 0;
    text.input_ids = tb.ids + 14; text.labels = tb.labels + 14;
    ready_reset(&r);
    CHECK(qwen2vl_forward_backward_ready(m, &text, &l1, ready_record, &r, &err) == 0);
    ready_check(m, &r, "no image");
    /* frozen towers: their ranges reported all the same */
    static const int frozen[3][2] = { { 1, 1 }, { 1, 0 }, { 0, 1 } };
    for (int k = 0; k < 3; k++) {
        CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_VISION, frozen[k][0], &err) == 0);
        CHECK(qwen2vl_set_frozen(m, QWEN2VL_TOWER_MERGER, frozen[k][1], &err) == 0);
        ready_reset(&r);
        CHECK(qwen2vl_forward_backward_ready(m, &tb.b, &l1, ready_record, &r, &err) == 0);
        ready_check(m, &r, "frozen");
    }
    /* a refused batch reports nothing */
    tb.b.n_tokens = 200;
    ready_reset(&r);
    CHECK(qwen2vl_forward_backward_ready(m, &tb.b, &l1, ready_record, &r, &err) == ADAPT_ERANGE);
    CHECK(r.n_ranges == 0);
    free(plain);
    free(r.snap);
    free(r.seen);
    qwen2vl_free(m);
}

/* The backward pass agrees with the forward one without Python: per tower, the finite difference
 * of the loss along a fixed direction d matches the gradient's dot product with d (fp32, so to
 * 5e-3; transformers checks each gradient to 1e-4 in the reference suite). */
static void test_directional_derivative(void)
{
    model_config cfg;
    if (tiny_config(&cfg, 0)) return;
    qwen2vl_model *m;
    adapt_error err = {0};
    if (qwen2vl_create(&m, &cfg, &BUDGET, ops_cpu(), &err)) { CHECK_MSG(0, "%s", err.message); return; }
    qwen2vl_init_weights(m, 11);
    size_t n = qwen2vl_num_params(m);
    float *w = qwen2vl_param_buffer(m);
    /* weights of a usable scale: std 0.02 init leaves the loss flat in most directions */
    for (size_t i = 0; i < n; i++) w[i] = 5.0f * w[i] + 0.05f * sinf(0.61f * (float)i);
    static tiny_batch tb;
    tiny_batch_make(&tb);
    float loss;
    qwen2vl_zero_grads(m);
    CHECK(qwen2vl_forward_backward(m, &tb.b, &loss, &err) == 0);
    const float *g = qwen2vl_grad_buffer(m);
    float *w0 = malloc(n * sizeof *w0);
    memcpy(w0, w, n * sizeof *w0);
    for (int tower = 0; tower < QWEN2VL_TOWER_COUNT; tower++) {
        const float h = 1e-4f;
        double an = 0;
        for (size_t k = 0; k < qwen2vl_num_tensors(m); k++) {
            const qwen2vl_tensor *t = qwen2vl_tensor_at(m, k);
            if ((int)t->tower != tower) continue;
            for (size_t i = t->offset; i < t->offset + t->numel; i++)
                an += (double)g[i] * sin(1.3 * (double)i);
        }
        /* the five-point stencil: the loss is curved enough along d that the central
         * difference's h^2 term would show at 1e-2 */
        static const float steps[4] = { 1, -1, 2, -2 };
        float l[4];
        for (int k4 = 0; k4 < 4; k4++) {
            for (size_t k = 0; k < qwen2vl_num_tensors(m); k++) {
                const qwen2vl_tensor *t = qwen2vl_tensor_at(m, k);
                if ((int)t->tower != tower) continue;
                for (size_t i = t->offset; i < t->offset + t->numel; i++)
                    w[i] = w0[i] + steps[k4] * h * (float)sin(1.3 * (double)i);
            }
            CHECK(qwen2vl_forward(m, &tb.b, &l[k4], &err) == 0);
        }
        memcpy(w, w0, n * sizeof *w0);
        double fd = (8.0 * ((double)l[0] - l[1]) - ((double)l[2] - l[3])) / (12.0 * h);
        CHECK_MSG(fabs(fd - an) <= 5e-3 * fabs(an) + 1e-4,
                  "tower %d: finite difference %.6g, gradient . d %.6g", tower, fd, an);
    }
    free(w0);
    qwen2vl_free(m);
}

/* ---- the transformers reference ---------------------------------------------------------- */

static float *read_all(const safetensors_t *st, const char *name, uint64_t *count)
{
    const safetensors_tensor *t = safetensors_find(st, name);
    if (!t) { CHECK_MSG(0, "reference lacks %s", name); return NULL; }
    float *p = malloc((t->nelem ? t->nelem : 1) * sizeof *p);
    adapt_error err = {0};
    CHECK_MSG(safetensors_read_f32(st, name, p, t->nelem, &err) == 0, "%s", err.message);
    *count = t->nelem;
    return p;
}

static int *to_ints(const float *f, uint64_t n)
{
    int *p = malloc((n ? n : 1) * sizeof *p);
    for (uint64_t i = 0; i < n; i++) p[i] = (int)f[i];
    return p;
}

/* max |a - b| / max |b|: the error relative to the tensor's scale. */
static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    return s > 0 ? d / s : d;
}

/* The reference's gradient name of a layout tensor: transformers 5.x module names. */
static void grad_name(const char *name, char *out, size_t cap)
{
    if (strncmp(name, "visual.", 7) == 0) snprintf(out, cap, "grad.model.visual.%s", name + 7);
    else if (strncmp(name, "model.", 6) == 0) snprintf(out, cap, "grad.model.language_model.%s", name + 6);
    else snprintf(out, cap, "grad.%s", name);
}

static void reference_variant(const char *dir)
{
    char path[600];
    adapt_error err = {0};
    model_config cfg;
    snprintf(path, sizeof path, "%s/model", dir);
    if (model_config_load(&cfg, path, &err)) { CHECK_MSG(0, "%s", err.message); return; }
    safetensors_t *ref;
    snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    if (safetensors_open(&ref, path, &err)) { CHECK_MSG(0, "%s", err.message); return; }
    uint64_t n_tok, n_cu, n_grid, n_pix, n_logits, one;
    float *f_ids = read_all(ref, "input_ids", &n_tok), *f_lab = read_all(ref, "labels", &n_tok);
    float *f_cu = read_all(ref, "cu_seqlens", &n_cu), *f_grid = read_all(ref, "image_grid_thw", &n_grid);
    float *pix = read_all(ref, "pixel_values", &n_pix), *logits = read_all(ref, "logits", &n_logits);
    float *loss_ref = read_all(ref, "loss", &one), *norm = read_all(ref, "loss_normaliser", &one);
    int *ids = to_ints(f_ids, n_tok), *labels = to_ints(f_lab, n_tok);
    int *cu = to_ints(f_cu, n_cu), *grid = to_ints(f_grid, n_grid);
    qwen2vl_batch b = { .n_tokens = (int)n_tok, .input_ids = ids, .labels = labels,
                        .n_seqs = (int)n_cu - 1, .cu_seqlens = cu, .n_images = (int)n_grid / 3,
                        .image_grid_thw = grid, .pixel_values = pix, .loss_normaliser = norm[0] };
    qwen2vl_budget bud = { .max_tokens = (int)n_tok, .max_patches = (int)(n_pix / 1176),
                           .max_seqs = b.n_seqs, .max_images = b.n_images };
    qwen2vl_model *m = NULL;
    snprintf(path, sizeof path, "%s/model", dir);
    CHECK_MSG(qwen2vl_create(&m, &cfg, &bud, ops_cpu(), &err) == 0, "%s", err.message);
    CHECK_MSG(m && qwen2vl_load_weights(m, path, &err) == 0, "%s", err.message);
    float loss = 0;
    float *out = malloc(n_logits * sizeof *out);
    CHECK_MSG(m && qwen2vl_forward(m, &b, &loss, &err) == 0, "%s", err.message);
    CHECK(m && qwen2vl_logits(m, 0, b.n_tokens, out, &err) == 0);
    double e_logits = rel_err(out, logits, n_logits), e_loss = fabs(loss - loss_ref[0]) / fabs(loss_ref[0]);
    CHECK_MSG(e_logits < TOL, "%s: logits relative error %.3g", dir, e_logits);
    CHECK_MSG(e_loss < TOL, "%s: loss %.9g vs transformers %.9g", dir, loss, loss_ref[0]);
    qwen2vl_zero_grads(m);
    CHECK_MSG(qwen2vl_forward_backward(m, &b, &loss, &err) == 0, "%s", err.message);
    double e_grad = 0;
    const char *worst = "";
    size_t compared = 0;
    for (size_t i = 0; m && i < qwen2vl_num_tensors(m); i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(m, i);
        char name[160];
        grad_name(t->name, name, sizeof name);
        uint64_t n;
        float *g = read_all(ref, name, &n);
        if (!g) continue;
        CHECK(n == t->numel);
        float peak = 0;
        for (uint64_t k = 0; k < n; k++) peak = fabsf(g[k]) > peak ? fabsf(g[k]) : peak;
        CHECK_MSG(peak > 0, "%s: the reference gradient of %s is zero: the test would be vacuous",
                  dir, t->name);
        double e = rel_err(qwen2vl_grad_buffer(m) + t->offset, g, t->numel);
        CHECK_MSG(e < TOL, "%s: gradient of %s relative error %.3g", dir, t->name, e);
        if (e > e_grad) { e_grad = e; worst = t->name; }
        compared++;
        free(g);
    }
    printf("%s: logits rel err %.3g, loss rel err %.3g, %zu gradients, max rel err %.3g (%s)\n",
           dir, e_logits, e_loss, compared, e_grad, worst);
    qwen2vl_free(m);
    free(out); free(f_ids); free(f_lab); free(f_cu); free(f_grid); free(pix); free(logits);
    free(loss_ref); free(norm); free(ids); free(labels); free(cu); free(grid);
    safetensors_close(ref);
}

static void reference_rope(const char *dir)
{
    char path[600], name[64];
    adapt_error err = {0};
    safetensors_t *st;
    snprintf(path, sizeof path, "%s/rope.safetensors", dir);
    if (safetensors_open(&st, path, &err)) { CHECK_MSG(0, "%s", err.message); return; }
    int cases = 0;
    for (int k = 0;; k++) {
        snprintf(name, sizeof name, "rope.%d.ids", k);
        if (!safetensors_find(st, name)) break;
        uint64_t n, ng, np;
        float *fi = read_all(st, name, &n);
        snprintf(name, sizeof name, "rope.%d.grid", k);
        float *fg = read_all(st, name, &ng);
        snprintf(name, sizeof name, "rope.%d.pos", k);
        float *fp = read_all(st, name, &np);
        int *ids = to_ints(fi, n), *grid = to_ints(fg, ng), *want = to_ints(fp, np);
        int *pos = malloc(3 * n * sizeof *pos), cursor = 0;
        CHECK_MSG(qwen2vl_rope_index(ids, (int)n, 250, 2, grid, (int)ng / 3, &cursor, pos, (int)n,
                                     &err) == 0, "case %d: %s", k, err.message);
        CHECK_MSG(np == 3 * n && memcmp(pos, want, 3 * n * sizeof *pos) == 0,
                  "rope case %d differs from get_rope_index", k);
        free(fi); free(fg); free(fp); free(ids); free(grid); free(want); free(pos);
        cases++;
    }
    CHECK(cases == 5);
    printf("get_rope_index: %d layouts identical\n", cases);
    safetensors_close(st);
}

static int reference_main(const char *script, const char *python_default)
{
    const char *python = getenv("ADAPT_TEST_PYTHON");
    if (!python || !*python) python = python_default;
    char dir[] = "/tmp/adapt-q2vl-ref-XXXXXX", cmd[2048], sub[600];
    /* torch joined the requirements with this test: an older venv has the rest but not it */
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, transformers, safetensors' 2>/dev/null",
             python);
    if (access(python, X_OK) != 0 || system(cmd) != 0) {
        const char *ci = getenv("CI");
        fprintf(stderr, "reference python %s with torch and transformers is missing (make the venv "
                "from tests/requirements.txt)\n", python);
        return ci && strcmp(ci, "true") == 0 ? 1 : 77;
    }
    if (!mkdtemp(dir)) return 1;
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", python, script, dir);
    int st = system(cmd);
    CHECK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed", cmd);
    if (!check_failures) {
        snprintf(sub, sizeof sub, "%s/tied", dir);
        reference_variant(sub);
        snprintf(sub, sizeof sub, "%s/untied", dir);
        reference_variant(sub);
        reference_rope(dir);
    }
    if (fixture_dir_remove(dir) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("qwen2vl (reference)");
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--reference") == 0) return reference_main(argv[2], argv[3]);
    test_layout();
    test_rope_index();
    test_init();
    test_save_load(1, 0);
    test_save_load(0, 0);
    test_save_load(0, 200000);
    test_load_module_names();
    test_step();
    test_grads_ready(0);
    test_grads_ready(1);
    test_directional_derivative();
    return check_report("qwen2vl");
}
