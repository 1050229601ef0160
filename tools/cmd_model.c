/* cmd_model: `adaptctl model info` (what a Qwen2-VL config is and what training it costs) and
 * `adaptctl model init` (a randomly initialised model in the Hugging Face layout, so tests,
 * benchmarks and the embedded default can make small models that transformers loads unchanged),
 * `adaptctl model generate` (one prompt through worker/generate.c, for users and the reference
 * test against transformers' generate).
 *
 * The one idea: both commands go through the model's own layout and activation plan
 * (qwen2vl_layout, qwen2vl_activation_floats), so the counts printed are the ones the trainer
 * allocates, not a separate estimate that could drift from it. */
#include "commands.h"
#include "generate.h"
#include "model_config.h"
#include "qwen2vl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void info_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl model info PATH [--batch N] [--tokens N] [--patches N]\n"
        "  PATH         a model directory or its config.json (model_type qwen2_vl)\n"
        "  --batch N    sequences per step (default 8)\n"
        "  --tokens N   text tokens per sequence, image tokens included (default 1024)\n"
        "  --patches N  vision patches per sequence, 4 per image token (default 1024: one\n"
        "               448x448 image)\n");
}

static int parse_count(const char *s, const char *opt, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > max) {
        fprintf(stderr, "adaptctl model: %s wants an integer in [0, %ld], got '%s'\n", opt, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static void print_config(const model_config *c)
{
    const model_config_text *t = &c->text;
    const model_config_vision *v = &c->vision;
    printf("text:   vocab %d, hidden %d, %d layers, %d heads / %d kv heads of %d, MLP %d,\n"
           "        rope_theta %g, mrope_section [%d, %d, %d], rms_norm_eps %g, lm_head %s\n",
           t->vocab_size, t->hidden_size, t->num_hidden_layers, t->num_attention_heads,
           t->num_key_value_heads, t->head_dim, t->intermediate_size, t->rope_theta,
           t->mrope_section[0], t->mrope_section[1], t->mrope_section[2], t->rms_norm_eps,
           c->tie_word_embeddings ? "tied to embed_tokens" : "untied");
    printf("vision: depth %d, width %d, %d heads of %d, MLP %d, patch %d x %d x %d, merge %d x %d "
           "-> width %d\n",
           v->depth, v->embed_dim, v->num_heads, v->head_dim, v->mlp_dim, v->temporal_patch_size,
           v->patch_size, v->patch_size, v->spatial_merge_size, v->spatial_merge_size,
           v->out_hidden_size);
    printf("tokens: image %d, video %d, vision start %d, vision end %d\n", c->image_token_id,
           c->video_token_id, c->vision_start_token_id, c->vision_end_token_id);
}

int cmd_model_info(int argc, char **argv)
{
    const char *path = NULL;
    long batch = 8, tokens = 1024, patches = 1024;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) { info_usage(stdout); return ADAPTCTL_EXIT_OK; }
        if (!strcmp(s, "--batch") && has) {
            if (parse_count(argv[++i], s, 1L << 20, &batch)) return ADAPTCTL_EXIT_USAGE;
        } else if (!strcmp(s, "--tokens") && has) {
            if (parse_count(argv[++i], s, 1L << 24, &tokens)) return ADAPTCTL_EXIT_USAGE;
        } else if (!strcmp(s, "--patches") && has) {
            if (parse_count(argv[++i], s, 1L << 24, &patches)) return ADAPTCTL_EXIT_USAGE;
        } else if (s[0] != '-' && !path) {
            path = s;
        } else {
            fprintf(stderr, "adaptctl model info: unknown or incomplete argument '%s'\n", s);
            info_usage(stderr);
            return ADAPTCTL_EXIT_USAGE;
        }
    }
    if (!path || batch < 1 || batch * tokens > 0x7fffffffL || batch * patches > 0x7fffffffL) {
        fprintf(stderr, "adaptctl model info: %s\n",
                path ? "batch x tokens and batch x patches must fit an int, batch >= 1"
                     : "PATH is required");
        info_usage(stderr);
        return ADAPTCTL_EXIT_USAGE;
    }
    model_config cfg;
    adapt_error err = {0};
    qwen2vl_tensor *t = NULL;
    size_t n, tw[QWEN2VL_TOWER_COUNT];
    if (model_config_load(&cfg, path, &err) || qwen2vl_layout(&cfg, &t, &n, tw, &err)) {
        fprintf(stderr, "adaptctl model info: %s\n", err.message);
        return ADAPTCTL_EXIT_FAULT;
    }
    free(t);
    size_t total = tw[0] + tw[1] + tw[2];
    print_config(&cfg);
    printf("parameters: vision %zu, merger %zu, LLM %zu, total %zu (%zu tensors)\n",
           tw[QWEN2VL_TOWER_VISION], tw[QWEN2VL_TOWER_MERGER], tw[QWEN2VL_TOWER_LLM], total, n);
    qwen2vl_budget b = { .max_tokens = (int)(batch * tokens), .max_patches = (int)(batch * patches),
                         .max_seqs = (int)batch, .max_images = (int)batch };
    size_t acts = qwen2vl_activation_floats(&cfg, &b);
    double mib = 1024.0 * 1024.0;
    printf("training memory at batch %ld x %ld tokens, %ld patches each (fp32, CPU):\n", batch,
           tokens, patches);
    printf("  weights + grads + AdamW m, v = 16 B x %zu params = %.1f MiB\n", total,
           16.0 * (double)total / mib);
    printf("  activations (planned: saved per layer for backward + scratch) = 4 B x %zu = %.1f MiB\n",
           acts, 4.0 * (double)acts / mib);
    printf("  total = 16 B x params + 4 B x activations = %.1f MiB\n",
           (16.0 * (double)total + 4.0 * (double)acts) / mib);
    return ADAPTCTL_EXIT_OK;
}

static void init_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl model init --config CONFIG.json --out DIR [--seed S] [--tokenizer DIR]\n"
        "  random weights as transformers' _init_weights draws them (normal(0, initializer_range)\n"
        "  for Linear/Conv/Embedding, 1 and 0 for norms and biases), written as DIR/config.json\n"
        "  and DIR/model.safetensors (F32); --tokenizer copies a tokenizer's files into DIR\n");
}

/* Copies src to dst byte for byte; a missing src is not an error when optional. */
static int file_copy(const char *src, const char *dst, int optional)
{
    FILE *in = fopen(src, "rb");
    if (!in) {
        if (optional && errno == ENOENT) return 0;
        fprintf(stderr, "adaptctl model init: cannot read %s: %s\n", src, strerror(errno));
        return -1;
    }
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fprintf(stderr, "adaptctl model init: cannot write %s: %s\n", dst, strerror(errno));
        fclose(in);
        return -1;
    }
    char buf[65536];
    size_t r;
    int rc = 0;
    while ((r = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, r, out) != r) rc = -1;
    if (ferror(in)) rc = -1;
    if (fclose(out)) rc = -1;
    fclose(in);
    if (rc) fprintf(stderr, "adaptctl model init: copying %s to %s failed\n", src, dst);
    return rc;
}

/* The files of a Hugging Face tokenizer (and its chat template / image processor) that exist. */
static int tokenizer_copy(const char *from, const char *to)
{
    static const char *const files[] = {
        "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
        "special_tokens_map.json", "added_tokens.json", "chat_template.json", "chat_template.jinja",
        "preprocessor_config.json",
    };
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/tokenizer.json", from);
    struct stat st;
    if (stat(src, &st) != 0) {
        fprintf(stderr, "adaptctl model init: %s has no tokenizer.json (is --tokenizer a Hugging "
                "Face tokenizer directory?)\n", from);
        return -1;
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, files[i]);
        if (file_copy(src, dst, 1)) return -1;
    }
    return 0;
}

int cmd_model_init(int argc, char **argv)
{
    const char *config = NULL, *out = NULL, *tokenizer = NULL;
    long seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) { init_usage(stdout); return ADAPTCTL_EXIT_OK; }
        if (!strcmp(s, "--config") && has) config = argv[++i];
        else if (!strcmp(s, "--out") && has) out = argv[++i];
        else if (!strcmp(s, "--tokenizer") && has) tokenizer = argv[++i];
        else if (!strcmp(s, "--seed") && has) {
            if (parse_count(argv[++i], s, 0x7fffffffffffffffL, &seed)) return ADAPTCTL_EXIT_USAGE;
        } else {
            fprintf(stderr, "adaptctl model init: unknown or incomplete argument '%s'\n", s);
            init_usage(stderr);
            return ADAPTCTL_EXIT_USAGE;
        }
    }
    if (!config || !out) {
        fprintf(stderr, "adaptctl model init: --config and --out are required\n");
        init_usage(stderr);
        return ADAPTCTL_EXIT_USAGE;
    }
    model_config cfg;
    adapt_error err = {0};
    qwen2vl_model *m = NULL;
    /* The smallest budget: init runs no step, so it needs no activations to speak of. */
    qwen2vl_budget b = { .max_tokens = 1, .max_patches = 0, .max_seqs = 1, .max_images = 0 };
    if (model_config_load(&cfg, config, &err) || qwen2vl_create(&m, &cfg, &b, ops_cpu(), &err)) {
        fprintf(stderr, "adaptctl model init: %s\n", err.message);
        return ADAPTCTL_EXIT_FAULT;
    }
    int rc = ADAPTCTL_EXIT_OK;
    char dst[4096];
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "adaptctl model init: cannot create %s: %s\n", out, strerror(errno));
        rc = ADAPTCTL_EXIT_FAULT;
    }
    if (!rc) {
        qwen2vl_init_weights(m, (uint64_t)seed);
        if (qwen2vl_save_weights(m, out, 0, &err)) {
            fprintf(stderr, "adaptctl model init: %s\n", err.message);
            rc = ADAPTCTL_EXIT_FAULT;
        }
    }
    /* config.json is the given file verbatim: it already says what transformers needs to know. */
    char src[4096];
    struct stat st;
    snprintf(src, sizeof src, stat(config, &st) == 0 && S_ISDIR(st.st_mode) ? "%s/config.json" : "%s",
             config);
    snprintf(dst, sizeof dst, "%s/config.json", out);
    if (!rc && file_copy(src, dst, 0)) rc = ADAPTCTL_EXIT_FAULT;
    if (!rc && tokenizer && tokenizer_copy(tokenizer, out)) rc = ADAPTCTL_EXIT_FAULT;
    if (!rc)
        printf("wrote %s: %zu parameters, seed %ld\n", out, qwen2vl_num_params(m), seed);
    qwen2vl_free(m);
    return rc;
}

static void generate_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl model generate --model DIR --prompt TEXT [--image FILE]\n"
        "         [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--keep-special]\n"
        "         [--stop STR]... [--stop-id ID]... [--json]\n"
        "  DIR holds config.json, the weights and tokenizer.json. TEXT is the whole prompt with\n"
        "  special tokens written out; with --image, it holds one <|image_pad|> (inside\n"
        "  <|vision_start|><|vision_end|>), expanded to the image's token count.\n"
        "  --max-new-tokens N  default 64       --temperature T  default 0 (greedy)\n"
        "  --top-p P           default 1 (off)  --seed S         sampling seed, default 0\n"
        "  --keep-special      special tokens stay in the text (eos included)\n"
        "  --stop STR          stop when the text reaches STR (cut before it); repeatable\n"
        "  --stop-id ID        stop at this token id besides the model's eos ids; repeatable\n"
        "  --json              print {\"text\", \"ids\", \"stop_reason\"} instead of the text\n");
}

static int read_whole_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "adaptctl model generate: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; }
            else buf = nb;
        }
    }
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "adaptctl model generate: reading %s failed\n", path);
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static const char *stop_reason_name(int r)
{
    switch (r) {
    case GEN_STOP_EOS: return "eos";
    case GEN_STOP_ID: return "stop_id";
    case GEN_STOP_STRING: return "stop_string";
    case GEN_STOP_LENGTH: return "length";
    default: return "unknown";
    }
}

static int parse_float(const char *s, const char *opt, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s) {
        fprintf(stderr, "adaptctl model generate: %s wants a number, got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int generate_print(const gen_result *r, int json)
{
    if (!json) {
        printf("%s\n", r->text ? r->text : "");
        return 0;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *ids = cJSON_CreateArray();
    if (!o || !ids) { cJSON_Delete(o); cJSON_Delete(ids); return -1; }
    for (size_t i = 0; i < r->n_ids; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(r->ids[i]));
    cJSON_AddStringToObject(o, "text", r->text ? r->text : "");
    cJSON_AddItemToObject(o, "ids", ids);
    cJSON_AddStringToObject(o, "stop_reason", stop_reason_name(r->stop_reason));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return -1;
    printf("%s\n", s);
    free(s);
    return 0;
}

int cmd_model_generate(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *image = NULL;
    gen_options o = { .max_new_tokens = 64, .temperature = 0.0f, .top_p = 1.0f };
    const char **stops = calloc((size_t)argc + 1, sizeof *stops);
    int32_t *stop_ids = calloc((size_t)argc + 1, sizeof *stop_ids);
    size_t n_stops = 0, n_stop_ids = 0;
    int json = 0, rc = ADAPTCTL_EXIT_USAGE;
    if (!stops || !stop_ids) {
        fprintf(stderr, "adaptctl model generate: out of memory\n");
        free(stops);
        free(stop_ids);
        return ADAPTCTL_EXIT_FAULT;
    }
    long v;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) { generate_usage(stdout); rc = 0; goto done; }
        if (!strcmp(s, "--model") && has) model = argv[++i];
        else if (!strcmp(s, "--prompt") && has) prompt = argv[++i];
        else if (!strcmp(s, "--image") && has) image = argv[++i];
        else if (!strcmp(s, "--stop") && has) stops[n_stops++] = argv[++i];
        else if (!strcmp(s, "--keep-special")) o.keep_special = 1;
        else if (!strcmp(s, "--json")) json = 1;
        else if (!strcmp(s, "--max-new-tokens") && has) {
            if (parse_count(argv[++i], s, 1L << 20, &v)) goto done;
            o.max_new_tokens = (uint32_t)v;
        } else if (!strcmp(s, "--seed") && has) {
            if (parse_count(argv[++i], s, 0x7fffffffffffffffL, &v)) goto done;
            o.seed = (uint64_t)v;
        } else if (!strcmp(s, "--stop-id") && has) {
            if (parse_count(argv[++i], s, 0x7fffffffL, &v)) goto done;
            stop_ids[n_stop_ids++] = (int32_t)v;
        } else if (!strcmp(s, "--temperature") && has) {
            if (parse_float(argv[++i], s, &o.temperature)) goto done;
        } else if (!strcmp(s, "--top-p") && has) {
            if (parse_float(argv[++i], s, &o.top_p)) goto done;
        } else {
            fprintf(stderr, "adaptctl model generate: unknown or incomplete argument '%s'\n", s);
            generate_usage(stderr);
            goto done;
        }
    }
    if (!model || !prompt) {
        fprintf(stderr, "adaptctl model generate: --model and --prompt are required\n");
        generate_usage(stderr);
        goto done;
    }
    o.stop_strings = stops;
    o.n_stop_strings = n_stops;
    o.stop_ids = stop_ids;
    o.n_stop_ids = n_stop_ids;
    rc = ADAPTCTL_EXIT_FAULT;
    uint8_t *img = NULL;
    size_t img_len = 0;
    if (image && read_whole_file(image, &img, &img_len)) goto done;
    adapt_error err = {0};
    gen_t *g = NULL;
    gen_prompt p = { .text = prompt, .image = img, .image_len = img_len };
    gen_result r = {0};
    if (gen_open(&g, model, &err) || gen_run(g, &p, 1, &o, &r, &err)) {
        fprintf(stderr, "adaptctl model generate: %s\n", err.message);
    } else {
        rc = generate_print(&r, json) ? ADAPTCTL_EXIT_FAULT : ADAPTCTL_EXIT_OK;
        gen_result_clear(&r);
    }
    gen_close(g);
    free(img);
done:
    free(stops);
    free(stop_ids);
    return rc;
}
