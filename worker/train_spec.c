/* train_spec: table-driven parsing of the train spec and job envelope; see train_spec.h.
 *
 * Every string the result holds is malloc'd (empty ones too), so protobuf-c's free_unpacked
 * releases a parsed spec exactly as it releases an unpacked one. */
#include "train_spec.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const train_spec_default_instructions[] = {
    "Describe the image.",
    "Write a caption for this image.",
    "What does this image show? Describe it.",
    "Give a short description of the picture.",
    "Summarize the visual content of the image.",
    "Provide a caption that describes the image.",
    "Explain what can be seen in this image.",
    "Describe the contents of this picture in a few sentences.",
};
const size_t train_spec_n_default_instructions =
    sizeof train_spec_default_instructions / sizeof train_spec_default_instructions[0];

typedef enum spec_type {
    SPEC_STR,       /* char * */
    SPEC_WORD,      /* char *, one of choices */
    SPEC_STR_LIST,  /* size_t n + char ** */
    SPEC_U32,
    SPEC_U64,
    SPEC_F32,
    SPEC_BOOL,      /* protobuf_c_boolean */
    SPEC_STAGES,    /* handled by spec_parse_stages */
    SPEC_OBJECT,    /* handled by the caller (JobSpec.train) */
} spec_type;

typedef struct spec_field {
    const char        *key;
    spec_type          type;
    size_t             off;       /* of the value (or the array pointer) */
    size_t             n_off;     /* SPEC_STR_LIST: of the count */
    int                required;
    double             def;       /* numbers and booleans */
    const char        *def_str;   /* strings and words */
    double             lo, hi;    /* inclusive, unless lo_open / hi_open */
    int                lo_open, hi_open;
    const char *const *choices;   /* SPEC_WORD, NULL-terminated */
} spec_field;

static const char *const spec_modes[]     = { "single_stage", "two_stage", "synthesizer", NULL };
static const char *const spec_schedules[] = { "cosine", "linear", "constant", NULL };
static const char *const spec_kinds[]     = { "train", NULL };
static const char *const spec_backends[]  = { "cpu", "cuda", NULL };
static const char *const spec_launchers[] = { "local", "slurm", NULL };

#define TS(f) offsetof(Adaptd__TrainSpec, f)
static const spec_field train_fields[] = {
 { "model_path",           SPEC_STR,      TS(model_path), 0, 1, 0, "", 0, 0, 0, 0, NULL },
 { "corpus",               SPEC_STR,      TS(corpus), 0, 1, 0, "", 0, 0, 0, 0, NULL },
 { "overlays",             SPEC_STR_LIST, TS(overlays), TS(n_overlays), 0, 0, NULL, 0, 1000, 0, 0, NULL },
 { "output_dir",           SPEC_STR,      TS(output_dir), 0, 1, 0, "", 0, 0, 0, 0, NULL },
 { "mode",                 SPEC_WORD,     TS(mode), 0, 0, 0, "single_stage", 0, 0, 0, 0, spec_modes },
 { "epochs",               SPEC_U32,      TS(epochs), 0, 0, 3, NULL, 0, 100000, 0, 0, NULL },
 { "max_steps",            SPEC_U64,      TS(max_steps), 0, 0, 0, NULL, 0, 1e12, 0, 0, NULL },
 { "global_batch",         SPEC_U32,      TS(global_batch), 0, 0, 16, NULL, 1, 1048576, 0, 0, NULL },
 { "micro_batch_tokens",   SPEC_U32,      TS(micro_batch_tokens), 0, 0, 4096, NULL, 64, 16777216, 0, 0, NULL },
 { "lr_llm",               SPEC_F32,      TS(lr_llm), 0, 0, 1e-5, NULL, 0, 1, 1, 0, NULL },
 { "lr_vision",            SPEC_F32,      TS(lr_vision), 0, 0, 1e-5, NULL, 0, 1, 0, 0, NULL },
 { "weight_decay",         SPEC_F32,      TS(weight_decay), 0, 0, 0, NULL, 0, 1, 0, 0, NULL },
 { "warmup_ratio",         SPEC_F32,      TS(warmup_ratio), 0, 0, 0.1, NULL, 0, 1, 0, 0, NULL },
 { "schedule",             SPEC_WORD,     TS(schedule), 0, 0, 0, "cosine", 0, 0, 0, 0, spec_schedules },
 { "max_grad_norm",        SPEC_F32,      TS(max_grad_norm), 0, 0, 1.0, NULL, 0, 1e6, 0, 0, NULL },
 { "seed",                 SPEC_U64,      TS(seed), 0, 0, 42, NULL, 0, 9007199254740992.0, 0, 0, NULL },
 { "freeze_vision",        SPEC_BOOL,     TS(freeze_vision), 0, 0, 1, NULL, 0, 0, 0, 0, NULL },
 { "freeze_merger",        SPEC_BOOL,     TS(freeze_merger), 0, 0, 1, NULL, 0, 0, 0, 0, NULL },
 { "checkpoint_every",     SPEC_U32,      TS(checkpoint_every), 0, 0, 500, NULL, 0, 1e9, 0, 0, NULL },
 { "keep_last",            SPEC_U32,      TS(keep_last), 0, 0, 0, NULL, 0, 1e6, 0, 0, NULL },
 { "image_min_pixels",     SPEC_U32,      TS(image_min_pixels), 0, 0, 1024, NULL, 1, 268435456, 0, 0, NULL },
 { "image_max_pixels",     SPEC_U32,      TS(image_max_pixels), 0, 0, 589824, NULL, 1, 268435456, 0, 0, NULL },
 { "max_seq_len",          SPEC_U32,      TS(max_seq_len), 0, 0, 2048, NULL, 16, 1048576, 0, 0, NULL },
 { "caption_instructions", SPEC_STR_LIST, TS(caption_instructions), TS(n_caption_instructions), 0, 0, NULL, 1, 100000, 0, 0, NULL },
 { "blank_image_ratio",    SPEC_F32,      TS(blank_image_ratio), 0, 0, 0, NULL, 0, 1, 0, 0, NULL },
 { "stages",               SPEC_STAGES,   TS(stages), TS(n_stages), 0, 0, NULL, 0, 0, 0, 0, NULL },
 { "pack_window",          SPEC_U32,      TS(pack_window), 0, 0, 1024, NULL, 1, 1048576, 0, 0, NULL },
 { "adam_beta1",           SPEC_F32,      TS(adam_beta1), 0, 0, 0.9, NULL, 0, 1, 0, 1, NULL },
 { "adam_beta2",           SPEC_F32,      TS(adam_beta2), 0, 0, 0.999, NULL, 0, 1, 0, 1, NULL },
 { "adam_epsilon",         SPEC_F32,      TS(adam_epsilon), 0, 0, 1e-8, NULL, 0, 1, 1, 0, NULL },
};
#undef TS

#define SS(f) offsetof(Adaptd__StageSchedule, f)
static const spec_field stage_fields[] = {
 { "epochs",       SPEC_U32,  SS(epochs), 0, 0, 0, NULL, 0, 100000, 0, 0, NULL },
 { "max_steps",    SPEC_U64,  SS(max_steps), 0, 0, 0, NULL, 0, 1e12, 0, 0, NULL },
 { "lr_llm",       SPEC_F32,  SS(lr_llm), 0, 0, 0, NULL, 0, 1, 1, 0, NULL },
 { "lr_vision",    SPEC_F32,  SS(lr_vision), 0, 0, 0, NULL, 0, 1, 0, 0, NULL },
 { "warmup_ratio", SPEC_F32,  SS(warmup_ratio), 0, 0, 0, NULL, 0, 1, 0, 0, NULL },
 { "schedule",     SPEC_WORD, SS(schedule), 0, 0, 0, "", 0, 0, 0, 0, spec_schedules },
};
#undef SS

#define JS(f) offsetof(Adaptd__JobSpec, f)
static const spec_field job_fields[] = {
 { "name",         SPEC_STR,    JS(name), 0, 0, 0, "", 0, 0, 0, 0, NULL },
 { "kind",         SPEC_WORD,   JS(kind), 0, 1, 0, "", 0, 0, 0, 0, spec_kinds },
 { "ranks",        SPEC_U32,    JS(ranks), 0, 0, 1, NULL, 1, 65536, 0, 0, NULL },
 { "backend",      SPEC_WORD,   JS(backend), 0, 0, 0, "cpu", 0, 0, 0, 0, spec_backends },
 { "launcher",     SPEC_WORD,   JS(launcher), 0, 0, 0, "local", 0, 0, 0, 0, spec_launchers },
 { "max_restarts", SPEC_U32,    JS(max_restarts), 0, 0, 3, NULL, 0, 1000, 0, 0, NULL },
 { "train",        SPEC_OBJECT, JS(train), 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
};
#undef JS

#define SPEC_COUNT(a) (sizeof (a) / sizeof (a)[0])
#define SPEC_MAX_FIELDS 40
_Static_assert(SPEC_COUNT(train_fields) <= SPEC_MAX_FIELDS, "raise SPEC_MAX_FIELDS");

/* A parse in progress: where we are (for messages) and the sticky first error. */
typedef struct spec_ctx {
    const char  *src;
    char         path[256];   /* JSON path of the object being read, "$.train" */
    adapt_error *err;
} spec_ctx;

static int spec_fail(spec_ctx *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int spec_fail(spec_ctx *c, const char *key, const char *fmt, ...)
{
    char what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return adapt_fail(c->err, ADAPT_EINVAL, "%s: key \"%s\" (at %s.%s): %s", c->src, key,
                      c->path, key, what);
}

#define SPEC_AT(base, off, type) ((type *)((char *)(base) + (off)))

static char *spec_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Replaces a heap string field (every string field holds a heap string once defaults ran). */
static int spec_set_str(spec_ctx *c, void *obj, size_t off, const char *key, const char *v)
{
    char *d = spec_strdup(v);
    if (!d) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory for %s", c->src, key);
    char **slot = SPEC_AT(obj, off, char *);
    free(*slot);
    *slot = d;
    return ADAPT_OK;
}

static int spec_defaults(spec_ctx *c, void *obj, const spec_field *f, size_t n)
{
    /* protobuf-c's init points strings at a shared static "": clear them all first so that a
     * spec freed after a failure below never frees that static. */
    for (size_t i = 0; i < n; i++)
        if (f[i].type == SPEC_STR || f[i].type == SPEC_WORD)
            *SPEC_AT(obj, f[i].off, char *) = NULL;
    for (size_t i = 0; i < n; i++) {
        switch (f[i].type) {
        case SPEC_STR: case SPEC_WORD:
            if (spec_set_str(c, obj, f[i].off, f[i].key, f[i].def_str)) return c->err->code;
            break;
        case SPEC_U32:  *SPEC_AT(obj, f[i].off, uint32_t) = (uint32_t)f[i].def; break;
        case SPEC_U64:  *SPEC_AT(obj, f[i].off, uint64_t) = (uint64_t)f[i].def; break;
        case SPEC_F32:  *SPEC_AT(obj, f[i].off, float) = (float)f[i].def; break;
        case SPEC_BOOL: *SPEC_AT(obj, f[i].off, protobuf_c_boolean) = f[i].def != 0; break;
        default: break;   /* lists, stages and objects start empty */
        }
    }
    return ADAPT_OK;
}

static int spec_check_range(spec_ctx *c, const spec_field *f, double v)
{
    int below = f->lo_open ? v <= f->lo : v < f->lo;
    int above = f->hi_open ? v >= f->hi : v > f->hi;
    if (below || above || isnan(v))
        return spec_fail(c, f->key, "%.17g is out of range %c%.17g, %.17g%c", v,
                         f->lo_open ? '(' : '[', f->lo, f->hi, f->hi_open ? ')' : ']');
    return ADAPT_OK;
}

static int spec_read_number(spec_ctx *c, void *obj, const spec_field *f, const cJSON *v)
{
    if (f->type == SPEC_U64 && cJSON_IsString(v)) {
        /* Seeds above 2^53 do not survive a JSON double: a decimal string carries them. */
        const char *s = v->valuestring;
        char *end;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (!s[0] || *end || errno || s[0] == '-' || s[0] == '+' || s[0] == ' ')
            return spec_fail(c, f->key, "\"%s\" is not an unsigned 64-bit decimal integer", s);
        *SPEC_AT(obj, f->off, uint64_t) = x;
        return ADAPT_OK;
    }
    if (!cJSON_IsNumber(v))
        return spec_fail(c, f->key, "expected a number");
    double d = v->valuedouble;
    if (f->type != SPEC_F32 && d != floor(d))
        return spec_fail(c, f->key, "%.17g is not a whole number", d);
    if (spec_check_range(c, f, d)) return c->err->code;
    switch (f->type) {
    case SPEC_U32: *SPEC_AT(obj, f->off, uint32_t) = (uint32_t)d; break;
    case SPEC_U64: *SPEC_AT(obj, f->off, uint64_t) = (uint64_t)d; break;
    default:       *SPEC_AT(obj, f->off, float) = (float)d; break;
    }
    return ADAPT_OK;
}

static int spec_read_word(spec_ctx *c, void *obj, const spec_field *f, const cJSON *v)
{
    if (!cJSON_IsString(v)) return spec_fail(c, f->key, "expected a string");
    if (f->type == SPEC_WORD) {
        size_t i = 0;
        while (f->choices[i] && strcmp(f->choices[i], v->valuestring)) i++;
        if (!f->choices[i]) {
            char words[256] = "";
            for (size_t k = 0; f->choices[k]; k++)
                snprintf(words + strlen(words), sizeof words - strlen(words), "%s%s",
                         k ? " | " : "", f->choices[k]);
            return spec_fail(c, f->key, "\"%s\" is not one of %s", v->valuestring, words);
        }
    } else if (f->required && !v->valuestring[0]) {
        return spec_fail(c, f->key, "must not be empty");
    }
    return spec_set_str(c, obj, f->off, f->key, v->valuestring);
}

static int spec_read_list(spec_ctx *c, void *obj, const spec_field *f, const cJSON *v)
{
    if (!cJSON_IsArray(v)) return spec_fail(c, f->key, "expected an array of strings");
    int n = cJSON_GetArraySize(v);
    if (n < f->lo || n > f->hi)
        return spec_fail(c, f->key, "has %d entries, expected %.0f to %.0f", n, f->lo, f->hi);
    char **list = calloc(n ? (size_t)n : 1, sizeof *list);
    if (!list) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory for %s", c->src, f->key);
    /* Installed first so a failure below is freed with the spec. */
    *SPEC_AT(obj, f->off, char **) = list;
    size_t *count = SPEC_AT(obj, f->n_off, size_t);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return spec_fail(c, f->key, "element %d is not a non-empty string", i);
        if (!(list[i] = spec_strdup(e->valuestring)))
            return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory for %s", c->src, f->key);
        *count = (size_t)i + 1;
    }
    return ADAPT_OK;
}

static int spec_read_value(spec_ctx *c, void *obj, const spec_field *f, const cJSON *v)
{
    switch (f->type) {
    case SPEC_STR: case SPEC_WORD: return spec_read_word(c, obj, f, v);
    case SPEC_STR_LIST:            return spec_read_list(c, obj, f, v);
    case SPEC_BOOL:
        if (!cJSON_IsBool(v)) return spec_fail(c, f->key, "expected true or false");
        *SPEC_AT(obj, f->off, protobuf_c_boolean) = cJSON_IsTrue(v);
        return ADAPT_OK;
    case SPEC_U32: case SPEC_U64: case SPEC_F32:
        return spec_read_number(c, obj, f, v);
    default:
        return ADAPT_OK;   /* stages and objects: read by the caller after this pass */
    }
}

/* Reads every member of object `o` through table f into obj; seen[i] becomes 1 for a key given,
 * -1 for a key given as null (the default), and stays 0 for a key absent.
 * Unknown and repeated keys are refused. */
static int spec_read_object(spec_ctx *c, void *obj, const spec_field *f, size_t n,
                            const cJSON *o, int *seen)
{
    if (!cJSON_IsObject(o))
        return adapt_fail(c->err, ADAPT_EINVAL, "%s: %s must be a JSON object", c->src, c->path);
    for (const cJSON *m = o->child; m; m = m->next) {
        size_t i = 0;
        while (i < n && strcmp(f[i].key, m->string)) i++;
        if (i == n) return spec_fail(c, m->string, "unknown key");
        if (seen[i] != 0) return spec_fail(c, m->string, "given twice");
        /* null means "the default", as in proto3's JSON mapping (what the daemon may send) */
        if (cJSON_IsNull(m)) { seen[i] = -1; continue; }
        seen[i] = 1;
        if (spec_read_value(c, obj, &f[i], m)) return c->err->code;
    }
    for (size_t i = 0; i < n; i++)
        if (f[i].required && seen[i] <= 0) return spec_fail(c, f[i].key, "is required");
    return ADAPT_OK;
}

static size_t spec_index(const spec_field *f, size_t n, const char *key)
{
    size_t i = 0;
    while (i < n && strcmp(f[i].key, key)) i++;
    return i;
}

/* One stage object; fields it leaves out come from the top level (see train_spec.h). */
static int spec_parse_stage(spec_ctx *c, const Adaptd__TrainSpec *top, const cJSON *o,
                            Adaptd__StageSchedule *st)
{
    int seen[SPEC_MAX_FIELDS] = { 0 };
    if (spec_defaults(c, st, stage_fields, SPEC_COUNT(stage_fields))) return c->err->code;
    if (spec_read_object(c, st, stage_fields, SPEC_COUNT(stage_fields), o, seen))
        return c->err->code;
    const size_t n = SPEC_COUNT(stage_fields);
    int gave_length = seen[spec_index(stage_fields, n, "epochs")] > 0 ||
                      seen[spec_index(stage_fields, n, "max_steps")] > 0;
    if (!gave_length) {
        st->epochs = top->epochs;
        st->max_steps = top->max_steps;
    }
    if (seen[spec_index(stage_fields, n, "lr_llm")] <= 0) st->lr_llm = top->lr_llm;
    if (seen[spec_index(stage_fields, n, "lr_vision")] <= 0) st->lr_vision = top->lr_vision;
    if (seen[spec_index(stage_fields, n, "warmup_ratio")] <= 0) st->warmup_ratio = top->warmup_ratio;
    if (seen[spec_index(stage_fields, n, "schedule")] <= 0 &&
        spec_set_str(c, st, offsetof(Adaptd__StageSchedule, schedule), "schedule", top->schedule))
        return c->err->code;
    if (st->epochs == 0 && st->max_steps == 0)
        return spec_fail(c, "epochs", "a stage needs epochs or max_steps above 0");
    return ADAPT_OK;
}

static int spec_parse_stages(spec_ctx *c, Adaptd__TrainSpec *t, const cJSON *arr)
{
    if (!cJSON_IsArray(arr)) return spec_fail(c, "stages", "expected an array of 2 objects");
    int n = cJSON_GetArraySize(arr);
    if (n != 2)
        return spec_fail(c, "stages", "two_stage takes exactly 2 stages (captions, then "
                         "tasks), got %d", n);
    t->stages = calloc(2, sizeof *t->stages);
    if (!t->stages) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory", c->src);
    char saved[sizeof c->path];
    memcpy(saved, c->path, sizeof saved);
    int i = 0, rc = ADAPT_OK;
    for (const cJSON *o = arr->child; o && !rc; o = o->next, i++) {
        Adaptd__StageSchedule *st = malloc(sizeof *st);
        if (!st) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory", c->src);
        adaptd__stage_schedule__init(st);
        t->stages[i] = st;
        t->n_stages = (size_t)i + 1;
        snprintf(c->path, sizeof c->path, "%.200s.stages[%d]", saved, i);
        rc = spec_parse_stage(c, t, o, st);
    }
    if (!rc) memcpy(c->path, saved, sizeof saved);
    return rc;
}

static int spec_use_default_pool(spec_ctx *c, Adaptd__TrainSpec *t)
{
    size_t n = train_spec_n_default_instructions;
    t->caption_instructions = calloc(n, sizeof *t->caption_instructions);
    if (!t->caption_instructions) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory", c->src);
    for (size_t i = 0; i < n; i++) {
        if (!(t->caption_instructions[i] = spec_strdup(train_spec_default_instructions[i])))
            return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory", c->src);
        t->n_caption_instructions = i + 1;
    }
    return ADAPT_OK;
}

/* Rules between keys, each reported against the key a user would change. */
static int spec_check_train(spec_ctx *c, Adaptd__TrainSpec *t, const cJSON *o)
{
    int two = !strcmp(t->mode, "two_stage");
    if (t->epochs == 0 && t->max_steps == 0)
        return spec_fail(c, "epochs", "epochs and max_steps are both 0: give one of them");
    if (t->micro_batch_tokens < t->max_seq_len)
        return spec_fail(c, "micro_batch_tokens", "%u is below max_seq_len %u, so a sample of "
                         "max_seq_len tokens could not fit in a micro-batch",
                         t->micro_batch_tokens, t->max_seq_len);
    if (t->image_min_pixels > t->image_max_pixels)
        return spec_fail(c, "image_min_pixels", "%u is above image_max_pixels %u",
                         t->image_min_pixels, t->image_max_pixels);
    if (t->blank_image_ratio > 0 && strcmp(t->mode, "synthesizer"))
        return spec_fail(c, "blank_image_ratio", "applies only to mode \"synthesizer\"");
    if (two && t->n_overlays == 0)
        return spec_fail(c, "overlays", "two_stage needs an overlay with the synthesized tasks "
                         "for its second stage");
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(o, "stages");
    if (cJSON_IsNull(stages) || (cJSON_IsArray(stages) && cJSON_GetArraySize(stages) == 0))
        stages = NULL;   /* null or [] : none, as proto3 JSON writes an empty repeated field */
    if (stages && !two)
        return spec_fail(c, "stages", "applies only to mode \"two_stage\"");
    if (!stages && two)
        return spec_fail(c, "stages", "mode \"two_stage\" needs 2 stage objects");
    return stages ? spec_parse_stages(c, t, stages) : ADAPT_OK;
}

static int spec_parse_train_obj(spec_ctx *c, const cJSON *o, Adaptd__TrainSpec **out)
{
    Adaptd__TrainSpec *t = malloc(sizeof *t);
    if (!t) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory", c->src);
    adaptd__train_spec__init(t);
    const size_t n = SPEC_COUNT(train_fields);
    int seen[SPEC_MAX_FIELDS] = { 0 };
    int rc = spec_defaults(c, t, train_fields, n);
    if (!rc) rc = spec_read_object(c, t, train_fields, n, o, seen);
    if (!rc && seen[spec_index(train_fields, n, "lr_vision")] <= 0) t->lr_vision = t->lr_llm;
    if (!rc && seen[spec_index(train_fields, n, "caption_instructions")] <= 0)
        rc = spec_use_default_pool(c, t);
    if (!rc) rc = spec_check_train(c, t, o);
    if (rc) {
        train_spec_free(t);
        return rc;
    }
    *out = t;
    return ADAPT_OK;
}

static cJSON *spec_parse_json(spec_ctx *c, const char *json, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        adapt_fail(c->err, ADAPT_EINVAL, "%s: not valid JSON near byte %zu", c->src, at);
        return NULL;
    }
    /* cJSON stops after the first value: anything but white space after it is an error. */
    size_t at = (size_t)(end - json);
    while (at < len && (json[at] == ' ' || json[at] == '\t' || json[at] == '\n' ||
                        json[at] == '\r'))
        at++;
    if (at < len && json[at] != '\0') {
        cJSON_Delete(root);
        adapt_fail(c->err, ADAPT_EINVAL, "%s: unexpected text after the JSON value at byte %zu",
                   c->src, at);
        return NULL;
    }
    return root;
}

int train_spec_parse(const char *json, size_t len, const char *src, Adaptd__TrainSpec **out,
                     adapt_error *err)
{
    spec_ctx c = { .src = src ? src : "train spec", .path = "$", .err = err };
    adapt_error local;
    if (!c.err) c.err = &local;
    *out = NULL;
    cJSON *root = spec_parse_json(&c, json, len);
    if (!root) return c.err->code;
    int rc = spec_parse_train_obj(&c, root, out);
    cJSON_Delete(root);
    return rc;
}

static int spec_parse_job_obj(spec_ctx *c, const cJSON *o, Adaptd__JobSpec **out)
{
    Adaptd__JobSpec *j = malloc(sizeof *j);
    if (!j) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory", c->src);
    adaptd__job_spec__init(j);
    const size_t n = SPEC_COUNT(job_fields);
    int seen[SPEC_MAX_FIELDS] = { 0 };
    int rc = spec_defaults(c, j, job_fields, n);
    if (!rc) rc = spec_read_object(c, j, job_fields, n, o, seen);
    if (!rc) {
        const cJSON *train = cJSON_GetObjectItemCaseSensitive(o, "train");
        if (!train || cJSON_IsNull(train)) {
            rc = spec_fail(c, "train", "a job of kind \"train\" needs a train object");
        } else {
            snprintf(c->path, sizeof c->path, "$.train");
            rc = spec_parse_train_obj(c, train, &j->train);
        }
    }
    if (rc) {
        train_spec_free_job(j);
        return rc;
    }
    *out = j;
    return ADAPT_OK;
}

int train_spec_parse_job(const char *json, size_t len, const char *src, Adaptd__JobSpec **out,
                         adapt_error *err)
{
    spec_ctx c = { .src = src ? src : "job spec", .path = "$", .err = err };
    adapt_error local;
    if (!c.err) c.err = &local;
    *out = NULL;
    cJSON *root = spec_parse_json(&c, json, len);
    if (!root) return c.err->code;
    int rc = spec_parse_job_obj(&c, root, out);
    cJSON_Delete(root);
    return rc;
}

static int spec_read_file(const char *path, char **buf, size_t *len, adapt_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                          "%s: cannot open the spec: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap || cap > ((size_t)64 << 20)) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) { free(b); b = NULL; break; }
        b = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b) return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory to read the spec", path);
    if (bad || n == cap) {
        free(b);
        return adapt_fail(err, bad ? ADAPT_EIO : ADAPT_EINVAL, "%s: %s", path,
                          bad ? "read error" : "a spec above 64 MiB is not a spec");
    }
    *buf = b;
    *len = n;
    return ADAPT_OK;
}

int train_spec_load(const char *path, Adaptd__JobSpec **job, Adaptd__TrainSpec **train,
                    adapt_error *err)
{
    *job = NULL;
    *train = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = spec_read_file(path, &buf, &len, err);
    if (rc) return rc;
    /* An envelope is told apart by its "kind" key, which a TrainSpec does not have. */
    cJSON *probe = cJSON_ParseWithLength(buf, len);
    int is_job = probe && cJSON_GetObjectItemCaseSensitive(probe, "kind") != NULL;
    cJSON_Delete(probe);
    if (is_job) {
        rc = train_spec_parse_job(buf, len, path, job, err);
        if (!rc) *train = (*job)->train;
    } else {
        rc = train_spec_parse(buf, len, path, train, err);
    }
    free(buf);
    return rc;
}

void train_spec_free(Adaptd__TrainSpec *spec)
{
    if (spec) adaptd__train_spec__free_unpacked(spec, NULL);
}

void train_spec_free_job(Adaptd__JobSpec *job)
{
    if (job) adaptd__job_spec__free_unpacked(job, NULL);
}
