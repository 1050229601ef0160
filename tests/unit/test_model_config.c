/* test_model_config: Qwen2-VL config.json reading.
 *
 * Without arguments (suite unit): the published Qwen2-VL-2B-Instruct config (flat layout) and
 * the nested layouts of transformers 4.5x and 5 parse to the same struct with the published
 * values; every setting that would change the math is refused with its field named; malformed
 * values are refused with their field named.
 * With `--reference SCRIPT PYTHON` (suite reference): transformers' Qwen2VLConfig is the
 * reference. For several configs (2B, 7B, a tiny one, one leaning on defaults and nulls) it writes
 * the flat file, its own nested re-save and the values its config objects hold; both files must
 * parse here to exactly those values. */
#include "../check.h"
#include "model_config.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Qwen/Qwen2-VL-2B-Instruct's config.json as published. */
static const char *const flat_2b =
    "{\"architectures\":[\"Qwen2VLForConditionalGeneration\"],\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151645,\"vision_start_token_id\":151652,"
    "\"vision_end_token_id\":151653,\"vision_token_id\":151654,\"image_token_id\":151655,"
    "\"video_token_id\":151656,\"hidden_act\":\"silu\",\"hidden_size\":1536,\"initializer_range\":0.02,"
    "\"intermediate_size\":8960,\"max_position_embeddings\":32768,\"max_window_layers\":28,"
    "\"model_type\":\"qwen2_vl\",\"num_attention_heads\":12,\"num_hidden_layers\":28,"
    "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,\"sliding_window\":32768,"
    "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.41.2\","
    "\"use_cache\":true,\"use_sliding_window\":false,"
    "\"vision_config\":{\"depth\":32,\"embed_dim\":1280,\"mlp_ratio\":4,\"num_heads\":16,\"in_chans\":3,"
    "\"hidden_size\":1536,\"patch_size\":14,\"spatial_merge_size\":2,\"spatial_patch_size\":14,"
    "\"temporal_patch_size\":2},"
    "\"rope_scaling\":{\"type\":\"mrope\",\"mrope_section\":[16,24,24]},\"vocab_size\":151936}";

/* The same model as transformers 5 saves it (layer_types shortened by nothing: 28 entries). */
static char nested_v5[8192];

static void nested_v5_make(void)
{
    char layers[28 * 20] = "";
    for (int i = 0; i < 28; i++) strcat(layers, i ? ",\"full_attention\"" : "\"full_attention\"");
    snprintf(nested_v5, sizeof nested_v5,
        "{\"architectures\":[\"Qwen2VLForConditionalGeneration\"],\"dtype\":\"bfloat16\",\"image_token_id\":151655,"
        "\"model_type\":\"qwen2_vl\",\"text_config\":{\"attention_dropout\":0.0,\"bos_token_id\":151643,"
        "\"dtype\":\"bfloat16\",\"eos_token_id\":151645,\"hidden_act\":\"silu\",\"hidden_size\":1536,"
        "\"initializer_range\":0.02,\"intermediate_size\":8960,\"layer_types\":[%s],"
        "\"max_position_embeddings\":32768,\"max_window_layers\":28,\"model_type\":\"qwen2_vl_text\","
        "\"num_attention_heads\":12,\"num_hidden_layers\":28,\"num_key_value_heads\":2,\"pad_token_id\":null,"
        "\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"mrope_section\":[16,24,24],\"rope_theta\":1000000.0,"
        "\"rope_type\":\"default\",\"type\":\"mrope\"},\"sliding_window\":null,\"use_cache\":true,"
        "\"use_sliding_window\":false,\"vocab_size\":151936},\"tie_word_embeddings\":true,"
        "\"transformers_version\":\"5.24.0\",\"video_token_id\":151656,\"vision_config\":{\"depth\":32,"
        "\"embed_dim\":1280,\"hidden_act\":\"quick_gelu\",\"hidden_size\":1536,\"in_channels\":3,\"in_chans\":3,"
        "\"initializer_range\":0.02,\"mlp_ratio\":4,\"model_type\":\"qwen2_vl_vision\",\"num_heads\":16,"
        "\"patch_size\":14,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"axial\"},"
        "\"spatial_merge_size\":2,\"spatial_patch_size\":14,\"temporal_patch_size\":2},"
        "\"vision_end_token_id\":151653,\"vision_start_token_id\":151652,\"vision_token_id\":151654}", layers);
}

/* transformers 4.5x's nested save: rope_scaling and rope_theta in text_config, tie flag there. */
static const char *const nested_v4 =
    "{\"model_type\":\"qwen2_vl\",\"image_token_id\":151655,\"video_token_id\":151656,"
    "\"vision_start_token_id\":151652,\"vision_end_token_id\":151653,\"torch_dtype\":\"bfloat16\","
    "\"text_config\":{\"model_type\":\"qwen2_vl_text\",\"hidden_size\":1536,\"intermediate_size\":8960,"
    "\"num_hidden_layers\":28,\"num_attention_heads\":12,\"num_key_value_heads\":2,\"vocab_size\":151936,"
    "\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,\"max_position_embeddings\":32768,"
    "\"tie_word_embeddings\":true,\"bos_token_id\":151643,\"eos_token_id\":151645,\"sliding_window\":32768,"
    "\"use_sliding_window\":false,\"rope_scaling\":{\"type\":\"mrope\",\"rope_type\":\"default\","
    "\"mrope_section\":[16,24,24]}},"
    "\"vision_config\":{\"depth\":32,\"embed_dim\":1280,\"mlp_ratio\":4,\"num_heads\":16,\"in_chans\":3,"
    "\"hidden_size\":1536,\"patch_size\":14,\"spatial_merge_size\":2,\"temporal_patch_size\":2,"
    "\"model_type\":\"qwen2_vl\"}}";

static int parse(const char *json, model_config *c, adapt_error *err)
{
    return model_config_parse(c, json, strlen(json), "config.json", err);
}

static void test_layouts(void)
{
    model_config a, b, c;
    adapt_error err = {0};
    nested_v5_make();
    CHECK_MSG(parse(flat_2b, &a, &err) == 0, "%s", err.message);
    CHECK_MSG(parse(nested_v5, &b, &err) == 0, "%s", err.message);
    CHECK_MSG(parse(nested_v4, &c, &err) == 0, "%s", err.message);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    CHECK(memcmp(&a, &c, sizeof a) == 0);
    /* The published values. */
    CHECK(a.text.vocab_size == 151936 && a.text.hidden_size == 1536 && a.text.intermediate_size == 8960);
    CHECK(a.text.num_hidden_layers == 28 && a.text.num_attention_heads == 12 && a.text.num_key_value_heads == 2);
    CHECK(a.text.head_dim == 128 && a.text.rms_norm_eps == 1e-6 && a.text.rope_theta == 1e6);
    CHECK(a.text.mrope_section[0] == 16 && a.text.mrope_section[1] == 24 && a.text.mrope_section[2] == 24);
    CHECK(a.text.bos_token_id == 151643 && a.text.n_eos_token_ids == 1 && a.text.eos_token_ids[0] == 151645);
    CHECK(a.text.pad_token_id == -1);
    CHECK(a.vision.depth == 32 && a.vision.embed_dim == 1280 && a.vision.num_heads == 16 && a.vision.head_dim == 80);
    CHECK(a.vision.mlp_dim == 5120 && a.vision.out_hidden_size == 1536 && a.vision.in_channels == 3);
    CHECK(a.vision.patch_size == 14 && a.vision.temporal_patch_size == 2 && a.vision.spatial_merge_size == 2);
    CHECK(a.vision.rope_theta == 10000.0);
    CHECK(a.tie_word_embeddings == 1 && a.image_token_id == 151655 && a.video_token_id == 151656);
    CHECK(a.vision_start_token_id == 151652 && a.vision_end_token_id == 151653);
    CHECK(strcmp(a.dtype, "bfloat16") == 0);

    /* Settings that change nothing are accepted: factor 1, null KV heads (= attention heads). */
    cJSON *j = cJSON_Parse(flat_2b);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(j, "rope_scaling"), "factor", 1.0);
    cJSON_ReplaceItemInObject(j, "num_key_value_heads", cJSON_CreateNull());
    char *s = cJSON_PrintUnformatted(j);
    CHECK_MSG(parse(s, &c, &err) == 0, "%s", err.message);
    CHECK(c.text.num_key_value_heads == 12);
    free(s);
    cJSON_Delete(j);

    /* A directory or a file path both load; a missing file is ENOTFOUND naming it. */
    char dir[] = "/tmp/adapt-mc-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs(flat_2b, f);
    fclose(f);
    CHECK(model_config_load(&b, dir, &err) == 0 && memcmp(&a, &b, sizeof a) == 0);
    CHECK(model_config_load(&b, path, &err) == 0 && memcmp(&a, &b, sizeof a) == 0);
    unlink(path);
    CHECK(model_config_load(&b, dir, &err) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, path);
    rmdir(dir);
}

/* Parses `base` with one change at a dotted path (a set of `value`, given as JSON text, or a
 * removal when value is NULL) and expects `code` with the field path and `why` in the message. */
static void expect_refused(const char *base, const char *path, const char *value, int code, const char *field,
                           const char *why)
{
    cJSON *j = cJSON_Parse(base), *obj = j;
    char p[128];
    snprintf(p, sizeof p, "%s", path);
    char *key = p, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        obj = cJSON_GetObjectItem(obj, key);
        key = dot + 1;
    }
    if (!obj) { CHECK_MSG(0, "test bug: %s", path); cJSON_Delete(j); return; }
    cJSON_DeleteItemFromObject(obj, key);
    if (value) cJSON_AddItemToObject(obj, key, cJSON_Parse(value));
    char *s = cJSON_PrintUnformatted(j);
    model_config c;
    adapt_error err = {0};
    int rc = parse(s, &c, &err);
    CHECK_MSG(rc == code, "%s = %s: rc %d, expected %d (%s)", path, value ? value : "(removed)", rc, code, err.message);
    char quoted[160];
    snprintf(quoted, sizeof quoted, "'%s'", field);
    CHECK_STR_CONTAINS(err.message, quoted);
    CHECK_STR_CONTAINS(err.message, "config.json");
    if (why) CHECK_STR_CONTAINS(err.message, why);
    free(s);
    cJSON_Delete(j);
}

static void test_refusals(void)
{
    const int U = ADAPT_EUNSUPPORTED, I = ADAPT_EINVAL;
    /* Settings that change the math, flat layout. */
    expect_refused(flat_2b, "use_sliding_window", "true", U, "use_sliding_window", "full");
    expect_refused(flat_2b, "rope_scaling.type", "\"yarn\"", U, "rope_scaling.type", "mrope");
    expect_refused(flat_2b, "rope_scaling.rope_type", "\"linear\"", U, "rope_scaling.rope_type", "\"linear\"");
    expect_refused(flat_2b, "rope_scaling.factor", "2.0", U, "rope_scaling.factor", "unscaled");
    expect_refused(flat_2b, "rope_scaling.original_max_position_embeddings", "4096", U,
                   "rope_scaling.original_max_position_embeddings", NULL);
    expect_refused(flat_2b, "rope_scaling.partial_rotary_factor", "0.5", U, "rope_scaling.partial_rotary_factor", NULL);
    expect_refused(flat_2b, "rope_scaling.mrope_section", "[16,24,16]", I, "rope_scaling.mrope_section", "head_dim / 2 = 64");
    expect_refused(flat_2b, "rope_scaling.mrope_section", "[16,24]", I, "rope_scaling.mrope_section", NULL);
    expect_refused(flat_2b, "hidden_act", "\"gelu\"", U, "hidden_act", "silu");
    expect_refused(flat_2b, "vision_config.hidden_act", "\"gelu\"", U, "vision_config.hidden_act", "QuickGELU");
    expect_refused(flat_2b, "layer_types",
                   "[\"full_attention\",\"full_attention\",\"full_attention\",\"sliding_attention\","
                   "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                   "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                   "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                   "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                   "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                   "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\"]",
                   U, "layer_types[3]", "sliding_attention");
    expect_refused(flat_2b, "layer_types", "[\"full_attention\"]", I, "layer_types", "28");
    expect_refused(flat_2b, "attention_dropout", "0.1", U, "attention_dropout", "dropout");
    expect_refused(flat_2b, "head_dim", "64", U, "head_dim", "128");
    expect_refused(flat_2b, "model_type", "\"qwen2_5_vl\"", U, "model_type", "qwen2_5_vl");
    expect_refused(flat_2b, "model_type", NULL, I, "model_type", "missing");
    expect_refused(flat_2b, "quantization_config", "{\"quant_method\":\"awq\"}", U, "quantization_config", NULL);
    expect_refused(flat_2b, "vision_config.in_chans", "4", U, "vision_config.in_chans", "RGB");
    expect_refused(flat_2b, "vision_config.model_type", "\"qwen2_5_vl\"", U, "vision_config.model_type", NULL);
    expect_refused(flat_2b, "vision_config.head_dim", "64", U, "vision_config.head_dim", "80");
    expect_refused(flat_2b, "vision_config.hidden_size", "1024", I, "vision_config.hidden_size", "1536");
    expect_refused(flat_2b, "vision_config.mlp_ratio", "2.5", I, "vision_config.mlp_ratio", "integer");
    /* Malformed values. */
    expect_refused(flat_2b, "hidden_size", "\"big\"", I, "hidden_size", "integer");
    expect_refused(flat_2b, "num_attention_heads", "7", I, "hidden_size", "num_attention_heads = 7");
    expect_refused(flat_2b, "num_key_value_heads", "5", I, "num_key_value_heads", "does not divide");
    expect_refused(flat_2b, "num_hidden_layers", "0", I, "num_hidden_layers", ">= 1");
    expect_refused(flat_2b, "use_sliding_window", "\"no\"", I, "use_sliding_window", "true or false");
    expect_refused(flat_2b, "rms_norm_eps", "\"small\"", I, "rms_norm_eps", "number");
    expect_refused(flat_2b, "vision_config.depth", "-1", I, "vision_config.depth", NULL);
    expect_refused(flat_2b, "eos_token_id", "[1,\"x\"]", I, "eos_token_id", NULL);
    expect_refused(flat_2b, "vision_config", "[]", I, "vision_config", "object");

    /* The nested layouts name the field with its section. */
    nested_v5_make();
    expect_refused(nested_v5, "text_config.use_sliding_window", "true", U, "text_config.use_sliding_window", NULL);
    expect_refused(nested_v5, "text_config.rope_parameters.rope_type", "\"dynamic\"", U,
                   "text_config.rope_parameters.rope_type", "\"dynamic\"");
    expect_refused(nested_v5, "text_config.rope_parameters.factor", "8.0", U, "text_config.rope_parameters.factor", NULL);
    expect_refused(nested_v5, "text_config.hidden_act", "\"relu\"", U, "text_config.hidden_act", NULL);
    expect_refused(nested_v5, "vision_config.rope_parameters.rope_type", "\"yarn\"", U,
                   "vision_config.rope_parameters.rope_type", "axial");
    expect_refused(nested_v5, "vision_config.num_heads", "3", I, "vision_config.embed_dim", "num_heads = 3");
    expect_refused(nested_v4, "text_config.rope_scaling.type", "\"su\"", U, "text_config.rope_scaling.type", NULL);

    model_config c;
    adapt_error err = {0};
    CHECK(model_config_parse(&c, "{\"model_type\": ", 15, "cfg.json", &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "cfg.json: not a JSON object");
}

/* ---- against transformers -------------------------------------------------------------------- */

typedef enum { F_INT, F_DBL, F_MROPE, F_EOS } field_kind;

static const struct {
    const char *key;
    field_kind  kind;
    size_t      off;
} fields[] = {
#define T(name, kind) {"text." #name, kind, offsetof(model_config, text.name)}
#define V(name, kind) {"vision." #name, kind, offsetof(model_config, vision.name)}
    T(vocab_size, F_INT), T(hidden_size, F_INT), T(intermediate_size, F_INT), T(num_hidden_layers, F_INT),
    T(num_attention_heads, F_INT), T(num_key_value_heads, F_INT), T(head_dim, F_INT),
    T(max_position_embeddings, F_INT), T(rms_norm_eps, F_DBL), T(rope_theta, F_DBL),
    T(mrope_section, F_MROPE), T(initializer_range, F_DBL), T(bos_token_id, F_INT), T(eos_token_ids, F_EOS),
    T(pad_token_id, F_INT),
    V(depth, F_INT), V(embed_dim, F_INT), V(num_heads, F_INT), V(head_dim, F_INT), V(mlp_dim, F_INT),
    V(out_hidden_size, F_INT), V(in_channels, F_INT), V(patch_size, F_INT), V(temporal_patch_size, F_INT),
    V(spatial_merge_size, F_INT), V(rope_theta, F_DBL), V(initializer_range, F_DBL),
#undef T
#undef V
    {"tie_word_embeddings", F_INT, offsetof(model_config, tie_word_embeddings)},
    {"image_token_id", F_INT, offsetof(model_config, image_token_id)},
    {"video_token_id", F_INT, offsetof(model_config, video_token_id)},
    {"vision_start_token_id", F_INT, offsetof(model_config, vision_start_token_id)},
    {"vision_end_token_id", F_INT, offsetof(model_config, vision_end_token_id)},
};

/* Does the struct hold `value` (the reference's text) for `key`? */
static int field_matches(const model_config *c, const char *key, const char *value)
{
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(fields[i].key, key) != 0) continue;
        const char *base = (const char *)c + fields[i].off;
        char have[256] = "";
        switch (fields[i].kind) {
        case F_INT: snprintf(have, sizeof have, "%d", *(const int *)base); break;
        case F_DBL: return *(const double *)base == strtod(value, NULL);
        case F_MROPE: {
            const int *m = (const int *)base;
            snprintf(have, sizeof have, "%d %d %d", m[0], m[1], m[2]);
            break;
        }
        case F_EOS:
            for (int k = 0; k < c->text.n_eos_token_ids; k++)
                snprintf(have + strlen(have), sizeof have - strlen(have), k ? " %d" : "%d", c->text.eos_token_ids[k]);
            break;
        }
        return strcmp(have, value) == 0;
    }
    CHECK_MSG(0, "the reference names a field '%s' this test does not know", key);
    return 0;
}

static int reference_main(const char *script, const char *python_default)
{
    int missing_code;
    const char *python = check_reference_python(python_default, &missing_code);
    if (!python) return missing_code;
    char dir[] = "/tmp/adapt-mc-XXXXXX", cmd[2048], path[512], line[512];
    if (!mkdtemp(dir)) return 1;
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", python, script, dir);
    int st = system(cmd);
    CHECK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed", cmd);
    snprintf(path, sizeof path, "%s/names.txt", dir);
    FILE *names = fopen(path, "r");
    int configs = 0, compared = 0;
    while (names && fgets(line, sizeof line, names)) {
        char name[128];
        if (sscanf(line, "%127s", name) != 1) continue;
        model_config flat, nested;
        adapt_error err = {0};
        snprintf(path, sizeof path, "%s/%s.flat.json", dir, name);
        CHECK_MSG(model_config_load(&flat, path, &err) == 0, "%s", err.message);
        snprintf(path, sizeof path, "%s/%s.nested.json", dir, name);
        CHECK_MSG(model_config_load(&nested, path, &err) == 0, "%s", err.message);
        /* Same math either way (dtype is informational and absent from some). */
        memset(flat.dtype, 0, sizeof flat.dtype);
        memset(nested.dtype, 0, sizeof nested.dtype);
        CHECK_MSG(memcmp(&flat, &nested, sizeof flat) == 0, "%s: flat and nested layouts parse differently", name);
        snprintf(path, sizeof path, "%s/%s.expect.txt", dir, name);
        FILE *ex = fopen(path, "r");
        char l[512];
        while (ex && fgets(l, sizeof l, ex)) {
            l[strcspn(l, "\n")] = '\0';
            char *sp = strchr(l, ' ');
            if (!sp) continue;
            *sp = '\0';
            CHECK_MSG(field_matches(&flat, l, sp + 1), "%s: %s should be %s as transformers reads it", name, l, sp + 1);
            compared++;
        }
        if (ex) fclose(ex);
        configs++;
    }
    if (names) fclose(names);
    CHECK(configs == 4 && compared == configs * (int)(sizeof fields / sizeof fields[0]));
    printf("%d configs x 2 layouts, %d fields compared with transformers' reading\n", configs, compared);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("model_config (reference)");
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--reference") == 0) return reference_main(argv[2], argv[3]);
    test_layouts();
    test_refusals();
    return check_report("model_config");
}
