/* model_config: Qwen2-VL config.json parsing and refusal of unsupported math; see model_config.h.
 *
 * Fields are read through a reader with a sticky error: the first bad field fills the error and
 * every later read is a no-op, so the parse reads as a plain list of fields with their
 * transformers defaults, in the order transformers' configuration_qwen2_vl.py declares them. */
#include "model_config.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct cfg_reader {
    const char  *src;    /* the file, for messages */
    const char  *sec;    /* "", "text_config." or "vision_config.": the field path prefix */
    adapt_error *err;
    int          rc;     /* sticky: the first failure */
} cfg_reader;

static void cfg_fail(cfg_reader *r, int code, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void cfg_fail(cfg_reader *r, int code, const char *key, const char *fmt, ...)
{
    if (r->rc) return;
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    r->rc = adapt_fail(r->err, code, "%s: field '%s%s' %s", r->src, r->sec, key, what);
}

/* The value of key, or NULL when absent or JSON null (both mean "use the default"). */
static const cJSON *cfg_get(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static int cfg_int(cfg_reader *r, const cJSON *obj, const char *key, int def, int min)
{
    const cJSON *v = cfg_get(obj, key);
    if (r->rc || !v) return def;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < min || d > INT_MAX) {
        cfg_fail(r, ADAPT_EINVAL, key, "must be an integer >= %d", min);
        return def;
    }
    return (int)d;
}

static double cfg_num(cfg_reader *r, const cJSON *obj, const char *key, double def)
{
    const cJSON *v = cfg_get(obj, key);
    if (r->rc || !v) return def;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        cfg_fail(r, ADAPT_EINVAL, key, "must be a finite number");
        return def;
    }
    return v->valuedouble;
}

static bool cfg_bool(cfg_reader *r, const cJSON *obj, const char *key, bool def)
{
    const cJSON *v = cfg_get(obj, key);
    if (r->rc || !v) return def;
    if (!cJSON_IsBool(v)) {
        cfg_fail(r, ADAPT_EINVAL, key, "must be true or false");
        return def;
    }
    return cJSON_IsTrue(v);
}

static const char *cfg_str(cfg_reader *r, const cJSON *obj, const char *key, const char *def)
{
    const cJSON *v = cfg_get(obj, key);
    if (r->rc || !v) return def;
    if (!cJSON_IsString(v)) {
        cfg_fail(r, ADAPT_EINVAL, key, "must be a string");
        return def;
    }
    return v->valuestring;
}

/* A string field that must take one of the values adaptd implements (NULL-terminated list). */
static void cfg_str_in(cfg_reader *r, const cJSON *obj, const char *key, const char *def,
                       const char *const *allowed, const char *why)
{
    const char *s = cfg_str(r, obj, key, def);
    if (r->rc || !s) return;
    for (const char *const *a = allowed; *a; a++)
        if (strcmp(s, *a) == 0) return;
    cfg_fail(r, ADAPT_EUNSUPPORTED, key, "= \"%s\" is not supported: %s", s, why);
}

/* ---- text ------------------------------------------------------------------------------------ */

/* rope_parameters (transformers >= 5) or rope_scaling (the published checkpoints): only plain
 * M-RoPE is implemented, so every key that would scale or reshape the frequencies is refused. */
static void rope_read(cfg_reader *r, const cJSON *t, model_config_text *c)
{
    const char *key = cfg_get(t, "rope_parameters") ? "rope_parameters" : "rope_scaling";
    const cJSON *rope = cfg_get(t, key);
    c->rope_theta = cfg_num(r, t, "rope_theta", 1000000.0);
    c->mrope_section[0] = 16, c->mrope_section[1] = 24, c->mrope_section[2] = 24;
    if (!rope || r->rc) return;
    if (!cJSON_IsObject(rope)) { cfg_fail(r, ADAPT_EINVAL, key, "must be an object"); return; }
    char field[96];
    const cJSON *e;
    cJSON_ArrayForEach(e, rope) {
        snprintf(field, sizeof field, "%s.%s", key, e->string);
        if (strcmp(e->string, "type") == 0 || strcmp(e->string, "rope_type") == 0) {
            if (!cJSON_IsString(e)) { cfg_fail(r, ADAPT_EINVAL, field, "must be a string"); return; }
            if (strcmp(e->valuestring, "mrope") != 0 && strcmp(e->valuestring, "default") != 0) {
                cfg_fail(r, ADAPT_EUNSUPPORTED, field, "= \"%s\" is not supported: adaptd implements "
                         "multimodal RoPE (mrope) only", e->valuestring);
                return;
            }
        } else if (strcmp(e->string, "rope_theta") == 0) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0) || !isfinite(e->valuedouble))
                cfg_fail(r, ADAPT_EINVAL, field, "must be a positive number");
            else c->rope_theta = e->valuedouble;
        } else if (strcmp(e->string, "factor") == 0 && cJSON_IsNumber(e) && e->valuedouble == 1.0) {
            continue;   /* a factor of 1 scales nothing */
        } else if (strcmp(e->string, "mrope_section") == 0) {
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 3) {
                cfg_fail(r, ADAPT_EINVAL, field, "must be an array of 3 positive integers");
                return;
            }
            for (int i = 0; i < 3; i++) {
                const cJSON *v = cJSON_GetArrayItem(e, i);
                if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
                    v->valuedouble > 65536) {
                    cfg_fail(r, ADAPT_EINVAL, field, "must be an array of 3 positive integers");
                    return;
                }
                c->mrope_section[i] = (int)v->valuedouble;
            }
        } else {
            cfg_fail(r, ADAPT_EUNSUPPORTED, field,
                     "is not supported: adaptd implements unscaled multimodal RoPE only "
                     "(no factor, YaRN, NTK, partial rotary or similar settings)");
            return;
        }
    }
}

/* Everything transformers' Qwen2VLTextConfig reads that changes the math or the shapes. */
static void text_read(cfg_reader *r, const cJSON *t, model_config_text *c)
{
    c->vocab_size              = cfg_int(r, t, "vocab_size", 152064, 1);
    c->hidden_size             = cfg_int(r, t, "hidden_size", 8192, 1);
    c->intermediate_size       = cfg_int(r, t, "intermediate_size", 29568, 1);
    c->num_hidden_layers       = cfg_int(r, t, "num_hidden_layers", 80, 1);
    c->num_attention_heads     = cfg_int(r, t, "num_attention_heads", 64, 1);
    /* Absent means the class default (8); null means "one KV head per query head". */
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(t, "num_key_value_heads");
    c->num_key_value_heads     = cJSON_IsNull(kv) ? c->num_attention_heads : cfg_int(r, t, "num_key_value_heads", 8, 1);
    c->max_position_embeddings = cfg_int(r, t, "max_position_embeddings", 32768, 1);
    c->initializer_range       = cfg_num(r, t, "initializer_range", 0.02);
    c->rms_norm_eps            = cfg_num(r, t, "rms_norm_eps", 1e-5);
    static const char *const silu[] = {"silu", NULL};
    cfg_str_in(r, t, "hidden_act", "silu", silu, "the Qwen2 MLP of adaptd is SwiGLU (silu)");
    if (cfg_bool(r, t, "use_sliding_window", false))
        cfg_fail(r, ADAPT_EUNSUPPORTED, "use_sliding_window", "= true is not supported: adaptd attends over the "
                 "full (packed) sequence");
    if (cfg_num(r, t, "attention_dropout", 0.0) != 0.0)
        cfg_fail(r, ADAPT_EUNSUPPORTED, "attention_dropout", "is not 0: adaptd's training is dropout-free");
    if (r->rc) return;
    if (c->hidden_size % c->num_attention_heads)
        cfg_fail(r, ADAPT_EINVAL, "hidden_size", "= %d is not a multiple of num_attention_heads = %d",
                 c->hidden_size, c->num_attention_heads);
    if (c->num_attention_heads % c->num_key_value_heads)
        cfg_fail(r, ADAPT_EINVAL, "num_key_value_heads", "= %d does not divide num_attention_heads = %d",
                 c->num_key_value_heads, c->num_attention_heads);
    c->head_dim = r->rc ? 0 : c->hidden_size / c->num_attention_heads;
    if (cfg_int(r, t, "head_dim", c->head_dim, 1) != c->head_dim)
        cfg_fail(r, ADAPT_EUNSUPPORTED, "head_dim", "differs from hidden_size / num_attention_heads = %d, "
                 "which Qwen2-VL's attention uses", c->head_dim);
    const cJSON *lt = cfg_get(t, "layer_types");
    if (lt && !r->rc) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->num_hidden_layers)
            cfg_fail(r, ADAPT_EINVAL, "layer_types", "must be an array of num_hidden_layers = %d strings",
                     c->num_hidden_layers);
        for (int i = 0; i < c->num_hidden_layers && !r->rc; i++) {
            const cJSON *v = cJSON_GetArrayItem(lt, i);
            if (!cJSON_IsString(v) || strcmp(v->valuestring, "full_attention") != 0) {
                char f[32];
                snprintf(f, sizeof f, "layer_types[%d]", i);
                cfg_fail(r, ADAPT_EUNSUPPORTED, f, "= %s is not supported: adaptd implements full_attention only",
                         cJSON_IsString(v) ? v->valuestring : "(not a string)");
            }
        }
    }
    rope_read(r, t, c);
    if (!r->rc && c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2] != c->head_dim / 2)
        cfg_fail(r, ADAPT_EINVAL, cfg_get(t, "rope_parameters") ? "rope_parameters.mrope_section" : "rope_scaling.mrope_section",
                 "= [%d, %d, %d] does not sum to head_dim / 2 = %d", c->mrope_section[0], c->mrope_section[1],
                 c->mrope_section[2], c->head_dim / 2);
}

/* bos / eos / pad: not math, but the generation and packing code needs them. */
static void token_ids_read(cfg_reader *r, const cJSON *t, model_config_text *c)
{
    c->bos_token_id = cfg_int(r, t, "bos_token_id", 151643, 0);
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(t, "bos_token_id"))) c->bos_token_id = -1;
    c->pad_token_id = cfg_int(r, t, "pad_token_id", -1, 0);
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(t, "eos_token_id");
    c->n_eos_token_ids = 0;
    if (!eos) { c->eos_token_ids[c->n_eos_token_ids++] = 151645; return; }
    if (cJSON_IsNull(eos) || r->rc) return;
    if (cJSON_IsNumber(eos)) { c->eos_token_ids[c->n_eos_token_ids++] = cfg_int(r, t, "eos_token_id", 0, 0); return; }
    if (!cJSON_IsArray(eos) || cJSON_GetArraySize(eos) > MODEL_CONFIG_MAX_EOS) {
        cfg_fail(r, ADAPT_EINVAL, "eos_token_id", "must be an integer or an array of at most %d", MODEL_CONFIG_MAX_EOS);
        return;
    }
    const cJSON *v;
    cJSON_ArrayForEach(v, eos) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > INT_MAX) {
            cfg_fail(r, ADAPT_EINVAL, "eos_token_id", "holds something other than a token id");
            return;
        }
        c->eos_token_ids[c->n_eos_token_ids++] = (int)v->valuedouble;
    }
}

/* ---- vision ---------------------------------------------------------------------------------- */

/* An int that transformers also accepts under an alias (attribute_map or the old name). */
static int cfg_int_alias(cfg_reader *r, const cJSON *v, const char *key, const char *alias, int def, int min)
{
    return cfg_get(v, key) ? cfg_int(r, v, key, def, min) : cfg_int(r, v, alias, def, min);
}

static void vision_rope_read(cfg_reader *r, const cJSON *v, model_config_vision *c)
{
    c->rope_theta = 10000.0;
    const cJSON *rope = cfg_get(v, "rope_parameters");
    if (!rope || r->rc) return;
    if (!cJSON_IsObject(rope)) { cfg_fail(r, ADAPT_EINVAL, "rope_parameters", "must be an object"); return; }
    const cJSON *e;
    cJSON_ArrayForEach(e, rope) {
        char field[96];
        snprintf(field, sizeof field, "rope_parameters.%s", e->string);
        if (strcmp(e->string, "rope_theta") == 0) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0) || !isfinite(e->valuedouble))
                cfg_fail(r, ADAPT_EINVAL, field, "must be a positive number");
            else c->rope_theta = e->valuedouble;
        } else if (strcmp(e->string, "rope_type") == 0 || strcmp(e->string, "type") == 0) {
            if (!cJSON_IsString(e) || (strcmp(e->valuestring, "axial") != 0 && strcmp(e->valuestring, "default") != 0))
                cfg_fail(r, ADAPT_EUNSUPPORTED, field, "is not supported: the vision tower's 2-D RoPE is axial only");
        } else {
            cfg_fail(r, ADAPT_EUNSUPPORTED, field, "is not supported: the vision tower's 2-D RoPE is unscaled");
        }
    }
}

static void vision_read(cfg_reader *r, const cJSON *v, model_config_vision *c)
{
    static const char *const vision_types[] = {"qwen2_vl_vision", "qwen2_vl", NULL};
    cfg_str_in(r, v, "model_type", "qwen2_vl_vision", vision_types, "this is not a Qwen2-VL vision tower");
    c->depth               = cfg_int_alias(r, v, "depth", "num_hidden_layers", 32, 1);
    c->embed_dim           = cfg_int(r, v, "embed_dim", 1280, 1);
    c->out_hidden_size     = cfg_int(r, v, "hidden_size", 3584, 1);
    c->num_heads           = cfg_int_alias(r, v, "num_heads", "num_attention_heads", 16, 1);
    c->in_channels         = cfg_int_alias(r, v, "in_channels", "in_chans", 3, 1);
    c->patch_size          = cfg_int(r, v, "patch_size", 14, 1);
    c->temporal_patch_size = cfg_int(r, v, "temporal_patch_size", 2, 1);
    c->spatial_merge_size  = cfg_int(r, v, "spatial_merge_size", 2, 1);
    c->initializer_range   = cfg_num(r, v, "initializer_range", 0.02);
    int ratio              = cfg_int(r, v, "mlp_ratio", 4, 1);   /* an int in transformers 5 */
    static const char *const qgelu[] = {"quick_gelu", NULL};
    cfg_str_in(r, v, "hidden_act", "quick_gelu", qgelu, "adaptd's vision MLP uses QuickGELU");
    if (r->rc) return;
    if ((long long)c->embed_dim * ratio > INT_MAX)
        cfg_fail(r, ADAPT_EINVAL, "mlp_ratio", "= %d makes the MLP width overflow", ratio);
    c->mlp_dim = c->embed_dim * ratio;
    if (c->in_channels != 3)
        cfg_fail(r, ADAPT_EUNSUPPORTED, cfg_get(v, "in_channels") ? "in_channels" : "in_chans",
                 "= %d is not supported: images are RGB", c->in_channels);
    if (c->embed_dim % c->num_heads)
        cfg_fail(r, ADAPT_EINVAL, "embed_dim", "= %d is not a multiple of num_heads = %d", c->embed_dim, c->num_heads);
    c->head_dim = r->rc ? 0 : c->embed_dim / c->num_heads;
    if (cfg_int(r, v, "head_dim", c->head_dim, 1) != c->head_dim)
        cfg_fail(r, ADAPT_EUNSUPPORTED, "head_dim", "differs from embed_dim / num_heads = %d", c->head_dim);
    vision_rope_read(r, v, c);
}

/* ---- the whole file -------------------------------------------------------------------------- */

static void root_read(cfg_reader *r, const cJSON *root, model_config *cfg)
{
    static const char *const qwen2_vl[] = {"qwen2_vl", NULL};
    cfg_str_in(r, root, "model_type", NULL, qwen2_vl, "this parser reads Qwen2-VL configs only");
    if (!r->rc && !cfg_get(root, "model_type"))
        cfg_fail(r, ADAPT_EINVAL, "model_type", "is missing; expected \"qwen2_vl\"");
    if (!r->rc && cfg_get(root, "quantization_config"))
        cfg_fail(r, ADAPT_EUNSUPPORTED, "quantization_config", "is present: adaptd reads unquantized weights only");
    cfg->image_token_id        = cfg_int(r, root, "image_token_id", 151655, 0);
    cfg->video_token_id        = cfg_int(r, root, "video_token_id", 151656, 0);
    cfg->vision_start_token_id = cfg_int(r, root, "vision_start_token_id", 151652, 0);
    cfg->vision_end_token_id   = cfg_int(r, root, "vision_end_token_id", 151653, 0);
    cfg->tie_word_embeddings   = cfg_bool(r, root, "tie_word_embeddings", false);
    const char *dt = cfg_str(r, root, "dtype", cfg_str(r, root, "torch_dtype", ""));
    snprintf(cfg->dtype, sizeof cfg->dtype, "%s", dt ? dt : "");
}

int model_config_parse(model_config *cfg, const char *json, size_t len, const char *source,
                       adapt_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        long at = end ? (long)(end - json) : 0;
        cJSON_Delete(root);
        return adapt_fail(err, ADAPT_EINVAL, "%s: not a JSON object (parse stops at byte %ld)", source, at);
    }
    cfg_reader r = {source, "", err, ADAPT_OK};
    root_read(&r, root, cfg);
    /* Nested layout when text_config is an object; otherwise the text fields are at the top. */
    const cJSON *text = cfg_get(root, "text_config");
    if (text && !cJSON_IsObject(text)) cfg_fail(&r, ADAPT_EINVAL, "text_config", "must be an object");
    if (text) r.sec = "text_config.";
    else text = root;
    text_read(&r, text, &cfg->text);
    token_ids_read(&r, text, &cfg->text);
    /* Pre-v5 nested saves kept tie_word_embeddings in text_config; transformers forwards it. */
    if (text != root && !cfg->tie_word_embeddings) cfg->tie_word_embeddings = cfg_bool(&r, text, "tie_word_embeddings", false);
    r.sec = "";
    const cJSON *vision = cfg_get(root, "vision_config");
    if (vision && !cJSON_IsObject(vision)) cfg_fail(&r, ADAPT_EINVAL, "vision_config", "must be an object");
    r.sec = "vision_config.";
    vision_read(&r, vision, &cfg->vision);
    if (!r.rc && cfg->vision.out_hidden_size != cfg->text.hidden_size)
        cfg_fail(&r, ADAPT_EINVAL, "hidden_size", "= %d differs from the LM width %d the merger must project to",
                 cfg->vision.out_hidden_size, cfg->text.hidden_size);
    cJSON_Delete(root);
    return r.rc;
}

int model_config_load(model_config *cfg, const char *path, adapt_error *err)
{
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(file, sizeof file, "%s/config.json", path);
    else snprintf(file, sizeof file, "%s", path);
    FILE *fp = fopen(file, "rb");
    if (!fp) return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO, "%s: cannot open: %s",
                               file, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 > cap) {
            if (cap > (size_t)64 << 20) { free(buf); fclose(fp); return adapt_fail(err, ADAPT_EINVAL, "%s: over 64 MiB; not a config", file); }
            char *g = realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!g) { free(buf); fclose(fp); return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", file); }
            buf = g;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    bool bad = ferror(fp);
    fclose(fp);
    if (bad) { free(buf); return adapt_fail(err, ADAPT_EIO, "%s: read error", file); }
    int rc = model_config_parse(cfg, buf, n, file, err);
    free(buf);
    return rc;
}
