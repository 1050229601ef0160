/* test_generate: generation (worker/generate.c) and its KV-cache forward (worker/qwen2vl_decode.c)
 * on tiny random Qwen2-VL models with the real qwen3 tokenizer.
 *
 * The one idea: the training forward pass (qwen2vl_forward on the whole sequence, no cache) is
 * the oracle. Greedy decoding over the cache must give the same logits (1e-4) and tokens as a
 * full recompute of prompt + tokens so far at every step; everything else (batches, sampling,
 * stops) is checked against runs of the same prompts alone or without the stop.
 *
 * usage: test_generate TOKENIZER_DIR (the qwen3 fixture: tokenizer.json, tokenizer_config.json) */
#include "check.h"
#include "generate.h"
#include "qwen2vl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#define IMG_ID 151655
#define EOS_ID 151645

static const char *CONFIG =
    "{\"model_type\": \"qwen2_vl\", \"image_token_id\": 151655, \"video_token_id\": 151656,"
    " \"vision_start_token_id\": 151652, \"vision_end_token_id\": 151653,"
    " \"eos_token_id\": 151645, \"bos_token_id\": 151643, \"tie_word_embeddings\": false,"
    " \"text_config\": {\"vocab_size\": 151936, \"hidden_size\": 64, \"intermediate_size\": 96,"
    "   \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    "   \"rms_norm_eps\": 1e-6, \"max_position_embeddings\": 4096,"
    "   \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0,"
    "     \"mrope_section\": [2, 3, 3]}, \"tie_word_embeddings\": false,"
    "   \"eos_token_id\": 151645, \"bos_token_id\": 151643},"
    " \"vision_config\": {\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 4, \"mlp_ratio\": 2,"
    "   \"hidden_size\": 64}}";

static char g_tmp[256];
static const char *g_tokdir;

/* ---- fixtures ------------------------------------------------------------------------------ */

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static float normal(uint64_t *s)
{
    /* sum of 4 uniforms, centred and scaled to unit variance: enough for random weights */
    float u = 0.0f;
    for (int i = 0; i < 4; i++) u += (float)lcg(s) / 2147483648.0f;
    return (u - 2.0f) * 1.7320508f;
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    if (!in || !out) {
        if (in) fclose(in);
        return -1;
    }
    char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, r, out);
    fclose(in);
    return fclose(out);
}

/* A model directory with every weight random (logits far from uniform, so greedy tokens vary;
 * the LM head is untied, as a tied random one would mostly repeat the last token); boost > 0 makes
 * <|im_end|>'s LM-head row a large multiple of another, so the model emits it. */
static int write_model(const char *dir, uint64_t seed, float boost)
{
    adapt_error err = {0};
    model_config cfg;
    qwen2vl_model *m = NULL;
    qwen2vl_budget b = { .max_tokens = 1, .max_patches = 0, .max_seqs = 1, .max_images = 0 };
    mkdir(dir, 0755);
    if (model_config_parse(&cfg, CONFIG, strlen(CONFIG), "test config", &err) ||
        qwen2vl_create(&m, &cfg, &b, ops_cpu(), &err)) {
        fprintf(stderr, "write_model: %s\n", err.message);
        return -1;
    }
    float *p = qwen2vl_param_buffer(m);
    uint64_t s = seed;
    for (size_t i = 0; i < qwen2vl_num_tensors(m); i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(m, i);
        float scale = 0.1f, base = 0.0f;
        if (t->is_norm) base = 1.0f;
        else if (strstr(t->name, "embed_tokens")) scale = 1.0f;
        else if (t->is_matrix) scale = 1.0f / sqrtf((float)(t->numel / (size_t)t->shape[0]));
        for (size_t k = 0; k < t->numel; k++) p[t->offset + k] = base + scale * normal(&s);
    }
    if (boost > 0.0f) {
        qwen2vl_params *w = qwen2vl_weights(m);
        for (int d = 0; d < 64; d++)
            w->lm_head[(size_t)EOS_ID * 64 + d] = boost * w->lm_head[(size_t)1000 * 64 + d];
    }
    char path[512], src[512];
    int rc = qwen2vl_save_weights(m, dir, 0, &err);
    if (rc) fprintf(stderr, "write_model: %s\n", err.message);
    qwen2vl_free(m);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(CONFIG, f);
    fclose(f);
    const char *files[] = { "tokenizer.json", "tokenizer_config.json" };
    for (int i = 0; i < 2 && !rc; i++) {
        snprintf(src, sizeof src, "%s/%s", g_tokdir, files[i]);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        rc = copy_file(src, path);
    }
    return rc;
}

/* A w x h JPEG of smooth colour bands plus noise. */
static uint8_t *make_jpeg(int w, int h, uint64_t seed, size_t *len)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    uint64_t s = seed;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                rgb[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)((x * (c + 1) * 3 + y * 2 + (int)(lcg(&s) % 40)) & 255);
    tjhandle tj = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    int rc = tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_444, 90, 0);
    tjDestroy(tj);
    free(rgb);
    if (rc) return NULL;
    uint8_t *out = malloc(size);
    memcpy(out, jpeg, size);
    tjFree(jpeg);
    *len = size;
    return out;
}

/* ---- KV cache against a full recompute ------------------------------------------------------ */

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Greedy over the cache (prefill in two chunks, then one row per step) against qwen2vl_forward on
 * the whole sequence at every step; then gen_run_tokens must give the same tokens. */
static void test_kv_equals_recompute(const char *dir)
{
    adapt_error err = {0};
    gen_t *g = NULL;
    CHECK_MSG(gen_open_no_tokenizer(&g, dir, &err) == 0, "%s", err.message);
    if (!g) return;
    qwen2vl_model *m = gen_model(g);
    const model_config *cfg = qwen2vl_config(m);
    int V = cfg->text.vocab_size, D = cfg->text.hidden_size, STEPS = 12;
    /* prompt: text, an image of grid 4 x 6 (6 merged tokens), text */
    int grid[3] = { 1, 4, 6 }, P = 3 * 2 * 14 * 14, N = 24, G = 6;
    int prompt[40], n = 0;
    uint64_t s = 11;
    for (int i = 0; i < 7; i++) prompt[n++] = (int)(lcg(&s) % 150000);
    prompt[n++] = 151652;
    for (int i = 0; i < G; i++) prompt[n++] = IMG_ID;
    prompt[n++] = 151653;
    for (int i = 0; i < 9; i++) prompt[n++] = (int)(lcg(&s) % 150000);
    float *pix = malloc(sizeof(float) * (size_t)N * P);
    for (int i = 0; i < N * P; i++) pix[i] = normal(&s);

    /* the oracle: a training-shaped model with the same weights */
    qwen2vl_model *full = NULL;
    qwen2vl_budget b = { .max_tokens = 64, .max_patches = N, .max_seqs = 1, .max_images = 1 };
    CHECK_MSG(qwen2vl_create(&full, cfg, &b, ops_cpu(), &err) == 0, "%s", err.message);
    memcpy(qwen2vl_param_buffer(full), qwen2vl_param_buffer(m),
           sizeof(float) * qwen2vl_num_params(m));

    qwen2vl_infer *inf = NULL;
    CHECK_MSG(qwen2vl_infer_create(&inf, m, 2, n + STEPS, 16, N, &err) == 0, "%s", err.message);
    float *feat = malloc(sizeof(float) * (size_t)G * D);
    float *lk = malloc(sizeof(float) * V), *lf = malloc(sizeof(float) * V);
    CHECK_MSG(qwen2vl_infer_image(m, inf, pix, grid, feat, &err) == 0, "%s", err.message);
    int pos[3 * 64], cursor = 0;
    CHECK(qwen2vl_rope_index(prompt, n, IMG_ID, 2, grid, 1, &cursor, pos, n, &err) == 0);
    int mx = 0;
    for (int i = 0; i < 3 * n; i++) if (pos[i] > mx) mx = pos[i];
    int delta = mx + 1 - n;
    /* prefill into slot 1 in two chunks split inside the image run */
    int seq[64], slot[64], cp[64], cpos[3 * 64], lr = 0, split = 10;
    memcpy(seq, prompt, sizeof(int) * n);
    for (int c = 0; c < 2; c++) {
        int c0 = c ? split : 0, c1 = c ? n : split, k = c1 - c0, img_before = 0;
        for (int i = 0; i < c0; i++) img_before += prompt[i] == IMG_ID;
        for (int i = 0; i < k; i++) {
            slot[i] = 1;
            cp[i] = c0 + i;
            for (int j = 0; j < 3; j++) cpos[j * k + i] = pos[j * n + c0 + i];
        }
        lr = k - 1;
        qwen2vl_rows r = { .n = k, .ids = prompt + c0, .slot = slot, .cache_pos = cp, .pos = cpos,
                           .image_features = feat + (size_t)img_before * D, .n_logits = c,
                           .logit_rows = &lr };
        CHECK_MSG(qwen2vl_infer_step(m, inf, &r, lk, &err) == 0, "%s", err.message);
    }
    int len = n, greedy[64];
    double worst = 0.0;
    for (int step = 0; step < STEPS; step++) {
        int cu[2] = { 0, len };
        qwen2vl_batch fb = { .n_tokens = len, .input_ids = seq, .n_seqs = 1, .cu_seqlens = cu,
                             .n_images = 1, .image_grid_thw = grid, .pixel_values = pix };
        CHECK_MSG(qwen2vl_forward(full, &fb, NULL, &err) == 0, "%s", err.message);
        CHECK(qwen2vl_logits(full, len - 1, 1, lf, &err) == 0);
        for (int v = 0; v < V; v++) {
            double d = fabs((double)lk[v] - lf[v]);
            if (d > worst) worst = d;
        }
        int tk = argmax(lk, V), tf = argmax(lf, V);
        CHECK_MSG(tk == tf, "step %d: cache picks %d, full recompute %d", step, tk, tf);
        greedy[step] = seq[len++] = tf;
        /* one decode row: the new token at cache index len - 1 */
        int id = tf, sl = 1, c = len - 1, p3[3] = { c + delta, c + delta, c + delta }, zero = 0;
        qwen2vl_rows r = { .n = 1, .ids = &id, .slot = &sl, .cache_pos = &c, .pos = p3,
                           .n_logits = 1, .logit_rows = &zero, .row_invariant = step & 1 };
        if (step + 1 < STEPS) CHECK(qwen2vl_infer_step(m, inf, &r, lk, &err) == 0);
    }
    CHECK_MSG(worst < 1e-4, "KV-cache logits differ from the full recompute by %g", worst);
    /* the distinct tokens show the test is not a degenerate model repeating one token */
    int distinct = 0;
    for (int i = 0; i < STEPS; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= greedy[j] == greedy[i];
        distinct += !seen;
    }
    CHECK_MSG(distinct >= 4, "only %d distinct tokens in %d greedy steps", distinct, STEPS);

    /* gen_run_tokens: the same tokens, alone and with a text-only prompt beside it */
    gen_token_prompt tp[2] = {
        { .ids = prompt, .n_ids = (size_t)n, .pixel_values = pix, .grid_thw = { 1, 4, 6 } },
        { .ids = prompt + 17, .n_ids = 5 },
    };
    gen_options o = { .max_new_tokens = (uint32_t)STEPS, .top_p = 1.0f };
    gen_result res[2];
    for (int both = 0; both < 2; both++) {
        int rc = gen_run_tokens(g, tp, (size_t)(1 + both), &o, res, &err);
        CHECK_MSG(rc == 0, "%s", err.message);
        if (rc) continue;
        CHECK(res[0].n_ids == (size_t)STEPS && res[0].stop_reason == GEN_STOP_LENGTH);
        CHECK(res[0].text == NULL);
        for (int i = 0; i < STEPS && i < (int)res[0].n_ids; i++)
            CHECK_MSG(res[0].ids[i] == greedy[i], "gen_run_tokens token %d: %d, greedy %d", i,
                      res[0].ids[i], greedy[i]);
        for (int i = 0; i <= both; i++) gen_result_clear(&res[i]);
    }
    /* errors name the prompt: an image-token run of the wrong length */
    tp[0].grid_thw[2] = 8;
    CHECK(gen_run_tokens(g, tp, 1, &o, res, &err) != 0);
    CHECK_STR_CONTAINS(err.message, "prompt 0");
    free(pix);
    free(feat);
    free(lk);
    free(lf);
    qwen2vl_infer_free(inf);
    qwen2vl_free(full);
    gen_close(g);
}

/* ---- batches, sampling, stops ---------------------------------------------------------------- */

#define N_PROMPTS 6

typedef struct prompt_set {
    gen_prompt p[N_PROMPTS];
    uint8_t   *jpeg[2];
    char       long_text[4096];   /* over GEN_PREFILL_ROWS tokens: a prefill in several chunks */
} prompt_set;

static void prompts_make(prompt_set *ps)
{
    size_t l0 = 0, l1 = 0;
    ps->jpeg[0] = make_jpeg(90, 60, 1, &l0);
    ps->jpeg[1] = make_jpeg(50, 130, 2, &l1);
    gen_prompt p[N_PROMPTS] = {
        { .text = "<|im_start|>user\nHello there, how are you today?<|im_end|>\n"
                  "<|im_start|>assistant\n" },
        { .text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?"
                  "<|im_end|>\n<|im_start|>assistant\n", .image = ps->jpeg[0], .image_len = l0 },
        { .text = "Short" },
        { .text = "A much longer prompt about lighthouses, tides, the sea, ships, and the keepers "
                  "who lived there <|vision_start|><|image_pad|><|vision_end|> and then more.",
          .image = ps->jpeg[1], .image_len = l1 },
        { .text = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nCount.<|im_end|>\n" },
        { .text = ps->long_text, .image = ps->jpeg[0], .image_len = l0 },
    };
    size_t w = (size_t)snprintf(ps->long_text, sizeof ps->long_text,
                                "<|vision_start|><|image_pad|><|vision_end|>");
    for (int i = 0; i < 100 && w + 16 < sizeof ps->long_text; i++)
        w += (size_t)snprintf(ps->long_text + w, sizeof ps->long_text - w, "x%d, ", i * 7919 % 1000);
    memcpy(ps->p, p, sizeof p);
}

static int results_equal(const gen_result *a, const gen_result *b)
{
    return a->n_ids == b->n_ids && !memcmp(a->ids, b->ids, sizeof(int32_t) * a->n_ids) &&
           a->stop_reason == b->stop_reason && a->text && b->text && !strcmp(a->text, b->text);
}

/* All prompts in one run (3 slots, so finished sequences hand their slot on) against each alone. */
static void check_batch_vs_alone(gen_t *g, const prompt_set *ps, const gen_options *o,
                                 const char *what)
{
    adapt_error err = {0};
    gen_result all[N_PROMPTS], one;
    gen_set_max_batch(g, 3);
    CHECK_MSG(gen_run(g, ps->p, N_PROMPTS, o, all, &err) == 0, "%s: %s", what, err.message);
    for (int i = 0; i < N_PROMPTS; i++) {
        CHECK_MSG(gen_run(g, &ps->p[i], 1, o, &one, &err) == 0, "%s", err.message);
        /* alone, the prompt is sequence 0: with sampling its stream differs unless seeded per
         * index, so only greedy compares with the batch here */
        if (o->temperature == 0.0f)
            CHECK_MSG(results_equal(&all[i], &one), "%s: prompt %d differs batched / alone", what, i);
        gen_result_clear(&one);
    }
    for (int i = 0; i < N_PROMPTS; i++) gen_result_clear(&all[i]);
}

static gen_result *all_results_unused(void)
{
    static gen_result r[N_PROMPTS];
    return r;
}

static void test_batches(const char *dir)
{
    adapt_error err = {0};
    gen_t *g = NULL;
    CHECK_MSG(gen_open(&g, dir, &err) == 0, "%s", err.message);
    if (!g) return;
    prompt_set ps;
    prompts_make(&ps);
    gen_options greedy = { .max_new_tokens = 10, .top_p = 1.0f };
    check_batch_vs_alone(g, &ps, &greedy, "greedy");

    /* sampling: the same seed gives the same texts whatever the batch size (1, 2 or 5 slots);
     * another seed gives others */
    gen_options samp = { .max_new_tokens = 10, .temperature = 1.0f, .top_p = 0.9f, .seed = 42 };
    gen_result a[N_PROMPTS], b[N_PROMPTS], c[N_PROMPTS];
    gen_set_max_batch(g, 5);
    CHECK_MSG(gen_run(g, ps.p, N_PROMPTS, &samp, a, &err) == 0, "%s", err.message);
    gen_set_max_batch(g, 2);
    CHECK_MSG(gen_run(g, ps.p, N_PROMPTS, &samp, b, &err) == 0, "%s", err.message);
    gen_set_max_batch(g, 1);
    samp.seed = 43;
    CHECK_MSG(gen_run(g, ps.p, N_PROMPTS, &samp, c, &err) == 0, "%s", err.message);
    int same_other_seed = 0, differs_from_greedy = 0;
    for (int i = 0; i < N_PROMPTS; i++) {
        CHECK_MSG(results_equal(&a[i], &b[i]), "sampling prompt %d: 5 slots / 2 slots differ: %zu %d %d / %zu %d %d", i, a[i].n_ids, a[i].ids[0], a[i].ids[a[i].n_ids-1], b[i].n_ids, b[i].ids[0], b[i].ids[b[i].n_ids-1]);
        same_other_seed += results_equal(&a[i], &c[i]);
        gen_result gr;
        CHECK(gen_run(g, &ps.p[i], 1, &greedy, &gr, &err) == 0);
        differs_from_greedy += !results_equal(&a[i], &gr);
        gen_result_clear(&gr);
    }
    CHECK_MSG(same_other_seed < N_PROMPTS, "seed 43 gave seed 42's samples for every prompt");
    /* a nucleus of one token (top_p tiny) is greedy, whatever the temperature */
    gen_options nucleus1 = { .max_new_tokens = 10, .temperature = 1.5f, .top_p = 1e-6f, .seed = 9 };
    gen_result n1, gr1;
    CHECK(gen_run(g, &ps.p[0], 1, &nucleus1, &n1, &err) == 0);
    CHECK(gen_run(g, &ps.p[0], 1, &greedy, &gr1, &err) == 0);
    CHECK_MSG(results_equal(&n1, &gr1), "top_p 1e-6 differs from greedy");
    gen_result_clear(&n1);
    gen_result_clear(&gr1);
    CHECK_MSG(differs_from_greedy > 0, "sampling at temperature 1 always equals greedy");
    for (int i = 0; i < N_PROMPTS; i++) {
        gen_result_clear(&a[i]);
        gen_result_clear(&b[i]);
        gen_result_clear(&c[i]);
    }
    /* a prompt whose <|image_pad|> count does not match its images is refused, named */
    gen_prompt bad = { .text = "no image token here", .image = ps.jpeg[0], .image_len = 100 };
    gen_result r;
    CHECK(gen_run(g, &bad, 1, &greedy, &r, &err) != 0);
    CHECK_STR_CONTAINS(err.message, "prompt 0 has 0 <|image_pad|>");
    /* a truncated image fails with the prompt named; no prompts is no work; bad options refused */
    gen_prompt trunc[2] = { ps.p[0], ps.p[1] };
    trunc[1].image_len = 200;
    CHECK(gen_run(g, trunc, 2, &greedy, all_results_unused(), &err) != 0);
    CHECK_STR_CONTAINS(err.message, "prompt 1");
    CHECK(gen_run(g, ps.p, 0, &greedy, &r, &err) == 0);
    gen_options neg = { .max_new_tokens = 4, .temperature = -1.0f, .top_p = 1.0f };
    CHECK(gen_run(g, ps.p, 1, &neg, &r, &err) != 0);
    CHECK_STR_CONTAINS(err.message, "temperature");
    gen_close(g);
    free(ps.jpeg[0]);
    free(ps.jpeg[1]);
}

static void test_stops(const char *dir)
{
    adapt_error err = {0};
    gen_t *g = NULL;
    CHECK_MSG(gen_open(&g, dir, &err) == 0, "%s", err.message);
    if (!g) return;
    gen_prompt p = { .text = "<|im_start|>user\nWrite something long.<|im_end|>\n" };
    gen_options o = { .max_new_tokens = 16, .top_p = 1.0f };
    gen_result full, r;
    CHECK_MSG(gen_run(g, &p, 1, &o, &full, &err) == 0, "%s", err.message);
    CHECK(full.n_ids == 16 && full.stop_reason == GEN_STOP_LENGTH);

    /* a stop id: the output ends at its first occurrence, the id included */
    int32_t stop = full.ids[5];
    size_t first = 0;
    while (full.ids[first] != stop) first++;
    o.stop_ids = &stop;
    o.n_stop_ids = 1;
    CHECK(gen_run(g, &p, 1, &o, &r, &err) == 0);
    CHECK(r.stop_reason == GEN_STOP_ID && r.n_ids == first + 1);
    CHECK(!memcmp(r.ids, full.ids, sizeof(int32_t) * r.n_ids));
    gen_result_clear(&r);
    o.n_stop_ids = 0;

    /* a stop string from the middle of the text: the text is cut just before it */
    size_t tl = strlen(full.text);
    char needle[8] = {0};
    memcpy(needle, full.text + tl / 2, tl / 2 >= 3 ? 3 : 1);
    const char *stops[2] = { "never appears \x01", needle };
    o.stop_strings = stops;
    o.n_stop_strings = 2;
    CHECK(gen_run(g, &p, 1, &o, &r, &err) == 0);
    size_t at = (size_t)(strstr(full.text, needle) - full.text);
    CHECK_MSG(r.stop_reason == GEN_STOP_STRING, "stop reason %d", r.stop_reason);
    CHECK_MSG(strlen(r.text) == at && !strncmp(r.text, full.text, at),
              "cut text '%s', want the first %zu bytes of '%s'", r.text, at, full.text);
    CHECK(r.n_ids <= full.n_ids);
    gen_result_clear(&r);
    o.n_stop_strings = 0;
    gen_result_clear(&full);
    gen_close(g);
}

/* The eos token (special) ends generation; its text stays only with keep_special. The model of
 * dir emits it (its embedding row is boosted). A generation_config.json eos list replaces the
 * config's. */
static void test_eos_special(const char *dir)
{
    adapt_error err = {0};
    gen_t *g = NULL;
    CHECK_MSG(gen_open(&g, dir, &err) == 0, "%s", err.message);
    if (!g) return;
    gen_prompt p = { .text = "<|im_start|>user\nSay something and stop.<|im_end|>\n" };
    gen_options o = { .max_new_tokens = 40, .top_p = 1.0f };
    gen_result r, k, ig;
    CHECK_MSG(gen_run(g, &p, 1, &o, &r, &err) == 0, "%s", err.message);
    CHECK_MSG(r.stop_reason == GEN_STOP_EOS && r.n_ids && r.ids[r.n_ids - 1] == EOS_ID,
              "stop reason %d after %zu tokens", r.stop_reason, r.n_ids);
    o.keep_special = 1;
    CHECK(gen_run(g, &p, 1, &o, &k, &err) == 0);
    size_t kl = strlen(k.text), rl = strlen(r.text);
    CHECK_MSG(kl == rl + strlen("<|im_end|>") && !strcmp(k.text + rl, "<|im_end|>") &&
              !strncmp(k.text, r.text, rl), "keep_special '%s' vs '%s'", k.text, r.text);
    o.ignore_eos = 1;
    CHECK(gen_run(g, &p, 1, &o, &ig, &err) == 0);
    CHECK(ig.n_ids == 40 && ig.stop_reason == GEN_STOP_LENGTH);
    /* a stop string spelling a special token matches it with or without keep_special, and the
     * text is cut before it either way */
    const char *im_end = "<|im_end|>";
    o.stop_strings = &im_end;
    o.n_stop_strings = 1;
    for (int keep = 0; keep < 2; keep++) {
        gen_result st;
        o.keep_special = keep;
        CHECK(gen_run(g, &p, 1, &o, &st, &err) == 0);
        CHECK_MSG(st.stop_reason == GEN_STOP_STRING && st.n_ids == r.n_ids &&
                  !strcmp(st.text, r.text), "keep %d: reason %d, '%s' vs '%s'", keep,
                  st.stop_reason, st.text, r.text);
        gen_result_clear(&st);
    }
    o.n_stop_strings = 0;
    o.keep_special = 1;
    gen_close(g);
    g = NULL;
    /* generation_config.json's list: an earlier token of the output becomes an eos id */
    if (r.n_ids >= 3) {
        char path[512];
        snprintf(path, sizeof path, "%s/generation_config.json", dir);
        FILE *f = fopen(path, "w");
        fprintf(f, "{\"eos_token_id\": [%d, 7]}", r.ids[1]);
        fclose(f);
        CHECK_MSG(gen_open(&g, dir, &err) == 0, "%s", err.message);
        gen_result e;
        o.ignore_eos = 0;
        CHECK(g && gen_run(g, &p, 1, &o, &e, &err) == 0);
        size_t first = 0;
        while (r.ids[first] != r.ids[1]) first++;
        CHECK(g && e.stop_reason == GEN_STOP_EOS && e.n_ids == first + 1);
        if (g) gen_result_clear(&e);
        gen_close(g);
        unlink(path);
    }
    gen_result_clear(&r);
    gen_result_clear(&k);
    gen_result_clear(&ig);
}

/* ---- the inference-only model ---------------------------------------------------------------- */

static void count_ready(void *ctx, size_t offset, size_t count)
{
    (void)offset;
    (void)count;
    ++*(int *)ctx;
}

/* gen_open's model holds the weights and nothing else: exactly 4 B per parameter, where the
 * training model of the smallest budget (what gen_open created before) adds a gradient buffer of
 * the same size and the planned activations; the whole-batch passes are refused with a message,
 * the gradient entry points are inert. That its generation equals a training model's forward is
 * test_kv_equals_recompute. */
static void test_inference_model(const char *dir)
{
    adapt_error err = {0};
    gen_t *g = NULL;
    CHECK_MSG(gen_open_no_tokenizer(&g, dir, &err) == 0, "%s", err.message);
    if (!g) return;
    qwen2vl_model *m = gen_model(g);
    const model_config *cfg = qwen2vl_config(m);
    size_t n = qwen2vl_num_params(m);
    CHECK(qwen2vl_is_inference(m));
    CHECK(qwen2vl_grad_buffer(m) == NULL && qwen2vl_grads(m) == NULL);
    size_t nb = qwen2vl_buffer_floats(m);  /* n + the ZeRO-1 slack */
    CHECK_MSG(qwen2vl_resident_bytes(m) == nb * sizeof(float),
              "inference model holds %zu B, weights are %zu B", qwen2vl_resident_bytes(m),
              nb * sizeof(float));

    qwen2vl_model *t = NULL;
    qwen2vl_budget b = { .max_tokens = 1, .max_patches = 0, .max_seqs = 1, .max_images = 0 };
    CHECK_MSG(qwen2vl_create(&t, cfg, &b, ops_cpu(), &err) == 0, "%s", err.message);
    if (t) {
        CHECK(!qwen2vl_is_inference(t) && qwen2vl_grad_buffer(t) != NULL);
        size_t want = 2 * nb * sizeof(float) + 4 * qwen2vl_activation_floats(cfg, &b);
        CHECK_MSG(qwen2vl_resident_bytes(t) == want, "training model holds %zu B, planned %zu B",
                  qwen2vl_resident_bytes(t), want);
        CHECK(qwen2vl_resident_bytes(t) - qwen2vl_resident_bytes(m) > n * sizeof(float));
        /* the same weights give the same bits through the KV-cache path on either kind, so
         * generation is what it was when gen_open created a training model */
        memcpy(qwen2vl_param_buffer(t), qwen2vl_param_buffer(m), n * sizeof(float));
        int V = cfg->text.vocab_size, ids[5] = { 7, 900, 151643, 42, 12345 }, slot[5] = { 0 };
        int cp[5], pos[15], rows[2] = { 2, 4 };
        for (int i = 0; i < 5; i++) cp[i] = pos[i] = pos[5 + i] = pos[10 + i] = i;
        qwen2vl_rows r = { .n = 5, .ids = ids, .slot = slot, .cache_pos = cp, .pos = pos,
                           .n_logits = 2, .logit_rows = rows };
        float *lm = malloc(sizeof(float) * 2 * (size_t)V), *lt = malloc(sizeof(float) * 2 * (size_t)V);
        qwen2vl_infer *sm = NULL, *st = NULL;
        CHECK(qwen2vl_infer_create(&sm, m, 1, 8, 5, 0, &err) == 0);
        CHECK(qwen2vl_infer_create(&st, t, 1, 8, 5, 0, &err) == 0);
        if (sm && st) {
            CHECK_MSG(qwen2vl_infer_step(m, sm, &r, lm, &err) == 0, "%s", err.message);
            CHECK_MSG(qwen2vl_infer_step(t, st, &r, lt, &err) == 0, "%s", err.message);
            CHECK(memcmp(lm, lt, sizeof(float) * 2 * (size_t)V) == 0);
        }
        qwen2vl_infer_free(sm);
        qwen2vl_infer_free(st);
        free(lm);
        free(lt);
        qwen2vl_free(t);
    }
    CHECK(qwen2vl_create(&t, cfg, NULL, ops_cpu(), &err) == ADAPT_EINVAL && t == NULL);

    /* a valid training batch: only the model kind makes these fail */
    int ids[4] = { 10, 20, 30, 40 }, labels[4] = { 10, 20, 30, 40 }, cu[2] = { 0, 4 };
    qwen2vl_batch batch = { .n_tokens = 4, .input_ids = ids, .labels = labels, .n_seqs = 1,
                            .cu_seqlens = cu, .loss_normaliser = 3.0f };
    float loss = -1.0f, logit = 0.0f;
    err = (adapt_error){0};
    CHECK(qwen2vl_forward_backward(m, &batch, &loss, &err) == ADAPT_EINVAL);
    CHECK(err.code == ADAPT_EINVAL && strstr(err.message, "inference-only") &&
          strstr(err.message, "qwen2vl_forward_backward"));
    CHECK(loss == -1.0f);
    int calls = 0;
    err = (adapt_error){0};
    CHECK(qwen2vl_forward_backward_ready(m, &batch, &loss, count_ready, &calls, &err) ==
          ADAPT_EINVAL && err.code == ADAPT_EINVAL);
    err = (adapt_error){0};
    CHECK(qwen2vl_forward(m, &batch, &loss, &err) == ADAPT_EINVAL);
    CHECK(strstr(err.message, "inference-only") != NULL);
    CHECK(qwen2vl_logits(m, 0, 1, &logit, &err) == ADAPT_EINVAL);
    qwen2vl_zero_grads(m);
    qwen2vl_grads_ready_all(m, count_ready, &calls);
    CHECK_MSG(calls == 0, "%d gradient ranges reported by a model without gradients", calls);
    gen_close(g);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_generate TOKENIZER_DIR\n");
        return 2;
    }
    g_tokdir = argv[1];
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_generate.XXXXXX");
    if (!mkdtemp(g_tmp)) return 1;
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/a", g_tmp);
    snprintf(b, sizeof b, "%s/eos", g_tmp);
    CHECK(write_model(a, 5, 0.0f) == 0);
    CHECK(write_model(b, 5, 40.0f) == 0);
    test_kv_equals_recompute(a);
    test_inference_model(a);
    test_batches(a);
    test_stops(a);
    test_eos_special(b);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_tmp);
    return check_report("test_generate");
}
