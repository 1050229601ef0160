/* train_rules: the TrainSpec table and train_rules_fill; see train_rules.h.
 *
 * Design: a row says only what the schema cannot (default, bounds, words, required); where a
 * member sits in the message and what C type it has is read from its protobuf-c field
 * descriptor, so the same walk serves TrainSpec and StageSchedule. Rules between members come
 * after the per-member pass, each reported against the member a user would change. */
#include "train_rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const train_rules_default_instructions[TRAIN_RULES_N_DEFAULT_INSTRUCTIONS] = {
    "Describe the image.",
    "Write a caption for this image.",
    "What does this image show? Describe it.",
    "Give a short description of the picture.",
    "Summarize the visual content of the image.",
    "Provide a caption that describes the image.",
    "Explain what can be seen in this image.",
    "Describe the contents of this picture in a few sentences.",
};

enum {
    RULE_REQUIRED = 1,   /* a string that must be given, non-empty */
    RULE_LO_OPEN  = 2,   /* (lo, ... instead of [lo, ... */
    RULE_HI_OPEN  = 4,   /* ..., hi) instead of ..., hi] */
};

typedef struct train_rule {
    const char *name;      /* the job.proto field */
    unsigned    flags;
    double      def;       /* numbers and booleans */
    double      lo, hi;    /* numbers: the value; repeated strings: the number of entries */
    const char *choices;   /* words: "a|b|c", the first one the default */
} train_rule;

#define U64_MAX_D 18446744073709551615.0
static const train_rule top_rules[] = {
    { "model_path",           RULE_REQUIRED, 0,      0,  0,         NULL },
    { "corpus",               RULE_REQUIRED, 0,      0,  0,         NULL },
    { "overlays",             0,             0,      0,  1000,      NULL },
    { "output_dir",           RULE_REQUIRED, 0,      0,  0,         NULL },
    { "mode",                 0,             0,      0,  0,         "single_stage|two_stage|synthesizer" },
    { "epochs",               0,             3,      0,  100000,    NULL },
    { "max_steps",            0,             0,      0,  1e12,      NULL },
    { "global_batch",         0,             16,     1,  1048576,   NULL },
    { "micro_batch_tokens",   0,             4096,   64, 16777216,  NULL },
    /* lr_llm before lr_vision: a bad lr_llm is named as such, not as the lr_vision it fed */
    { "lr_llm",               RULE_LO_OPEN,  1e-5,   0,  1,         NULL },
    { "lr_vision",            0,             1e-5,   0,  1,         NULL },   /* = lr_llm */
    { "weight_decay",         0,             0,      0,  1,         NULL },
    { "warmup_ratio",         0,             0.1,    0,  1,         NULL },
    { "schedule",             0,             0,      0,  0,         "cosine|linear|constant" },
    { "max_grad_norm",        0,             1,      0,  1e6,       NULL },
    { "seed",                 0,             42,     0,  U64_MAX_D, NULL },
    { "freeze_vision",        0,             1,      0,  0,         NULL },
    { "freeze_merger",        0,             1,      0,  0,         NULL },
    { "checkpoint_every",     0,             500,    0,  1e9,       NULL },
    { "keep_last",            0,             0,      0,  1e6,       NULL },
    { "image_min_pixels",     0,             1024,   1,  268435456, NULL },
    { "image_max_pixels",     0,             589824, 1,  268435456, NULL },
    { "max_seq_len",          0,             2048,   16, 1048576,   NULL },
    { "caption_instructions", 0,             0,      1,  TRAIN_RULES_MAX_LIST, NULL },   /* built-in pool */
    { "blank_image_ratio",    0,             0,      0,  1,         NULL },
    { "stages",               0,             0,      0,  0,         NULL },   /* rules_stages */
    { "pack_window",          0,             1024,   1,  1048576,   NULL },
    { "adam_beta1",           RULE_HI_OPEN,  0.9,    0,  1,         NULL },
    { "adam_beta2",           RULE_HI_OPEN,  0.999,  0,  1,         NULL },
    { "adam_epsilon",         RULE_LO_OPEN,  1e-8,   0,  1,         NULL },
    { "zero_stage",           0,             0,      0,  1,         NULL },   /* 1: ZeRO-1 */
    { "precision",            0,             0,      0,  0,         "fp32|bf16" },
};

/* The JobSpec envelope of a train job. name's hi is its length in bytes; the sub-specs of the
 * other kinds have rows only to be refused when given (train_rules_fill_job). */
static const train_rule job_rules[] = {
    { "name",         0,             0, 0, 127,   NULL },
    { "kind",         RULE_REQUIRED, 0, 0, 0,     "train" },
    { "ranks",        0,             1, 1, 65536, NULL },
    { "backend",      0,             0, 0, 0,     "cpu|cuda" },
    { "launcher",     0,             0, 0, 0,     "local|slurm" },
    { "max_restarts", 0,             0, 0, 100,   NULL },
    { "train",        0,             0, 0, 0,     NULL },
    { "synthesize",   0,             0, 0, 0,     NULL },
    { "filter",       0,             0, 0, 0,     NULL },
    { "evaluate",     0,             0, 0, 0,     NULL },
    { "pipeline",     0,             0, 0, 0,     NULL },
};

/* A stage's defaults are the top level's values (rules_stage), never these rows' def. */
static const train_rule stage_rules[] = {
    { "epochs",       0,            0, 0, 100000, NULL },
    { "max_steps",    0,            0, 0, 1e12,   NULL },
    { "lr_llm",       RULE_LO_OPEN, 0, 0, 1,      NULL },
    { "lr_vision",    0,            0, 0, 1,      NULL },
    { "warmup_ratio", 0,            0, 0, 1,      NULL },
    { "schedule",     0,            0, 0, 0,      "cosine|linear|constant" },
};

#define N_TOP   (sizeof top_rules / sizeof top_rules[0])
#define N_STAGE (sizeof stage_rules / sizeof stage_rules[0])
#define N_JOB   (sizeof job_rules / sizeof job_rules[0])
_Static_assert(N_TOP <= 64 && N_STAGE <= 64 && N_JOB <= 64, "train_rules_given holds 64 bits per object");

static int rules_find(const train_rule *rows, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].name, name)) return (int)i;
    return -1;
}

int train_rules_index(const char *name) { return rules_find(top_rules, N_TOP, name); }
int train_rules_stage_index(const char *name) { return rules_find(stage_rules, N_STAGE, name); }
int train_rules_job_index(const char *name) { return rules_find(job_rules, N_JOB, name); }

int train_rules_mark(uint64_t *mask, train_rules_object object, const char *name)
{
    int i = object == TRAIN_RULES_STAGE ? train_rules_stage_index(name)
          : object == TRAIN_RULES_JOB   ? train_rules_job_index(name)
                                        : train_rules_index(name);
    if (i < 0) return -1;
    *mask |= (uint64_t)1 << i;
    return 0;
}

static int given_has(uint64_t mask, const train_rule *rows, size_t n, const char *name)
{
    int i = rules_find(rows, n, name);
    return i >= 0 && (mask >> i & 1);
}

/* ---- one failure: the member and the reason ------------------------------------------------ */

static int rules_fail(char field[TRAIN_RULES_FIELD_MAX], const char *prefix, const char *name,
                      adapt_error *err, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int rules_fail(char field[TRAIN_RULES_FIELD_MAX], const char *prefix, const char *name,
                      adapt_error *err, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(field, TRAIN_RULES_FIELD_MAX, "%s%s", prefix, name);
    return adapt_fail(err, ADAPT_EINVAL, "%s", what);
}

static int rules_nomem(adapt_error *err)
{
    return adapt_fail(err, ADAPT_ENOMEM, "out of memory filling the train spec's defaults");
}

/* A number as a person writes it: whole ones in full (1048576, not 1.04858e+06), others in
 * the shortest text that reads back as the same float (0.0002, not 0.000199999995). */
static void number_text(char *buf, size_t size, double v)
{
    if (v > -1e18 && v < 1e18 && v == (double)(long long)v) {   /* no libm for proto/ */
        /* as an integer: the same digits as %.0f, and a width the compiler can bound */
        snprintf(buf, size, "%lld", (long long)v);
        return;
    }
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtof(buf, NULL) == (float)v) return;
    }
}

/* ---- members through their descriptors -------------------------------------------------- */

static const ProtobufCFieldDescriptor *rule_field(const ProtobufCMessageDescriptor *d,
                                                  const train_rule *r)
{
    return protobuf_c_message_descriptor_get_field_by_name(d, r->name);
}

#define MEMBER(msg, fd, type) ((type *)((char *)(msg) + (fd)->offset))

static double number_get(const void *msg, const ProtobufCFieldDescriptor *fd)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_UINT32: return *MEMBER(msg, fd, uint32_t);
    case PROTOBUF_C_TYPE_UINT64: return (double)*MEMBER(msg, fd, uint64_t);
    case PROTOBUF_C_TYPE_FLOAT:  return *MEMBER(msg, fd, float);
    default:                     return 0;
    }
}

static void number_set(void *msg, const ProtobufCFieldDescriptor *fd, double v)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_UINT32: *MEMBER(msg, fd, uint32_t) = (uint32_t)v; break;
    case PROTOBUF_C_TYPE_UINT64: *MEMBER(msg, fd, uint64_t) = (uint64_t)v; break;
    case PROTOBUF_C_TYPE_FLOAT:  *MEMBER(msg, fd, float) = (float)v; break;
    case PROTOBUF_C_TYPE_BOOL:   *MEMBER(msg, fd, protobuf_c_boolean) = v != 0; break;
    default: break;
    }
}

/* Replaces a string member by a malloc'd copy of s (the old one freed unless it is protobuf-c's
 * shared empty string). */
static int string_set(char **slot, const char *s, size_t n, adapt_error *err)
{
    char *d = malloc(n + 1);
    if (!d) return rules_nomem(err);
    memcpy(d, s, n);
    d[n] = '\0';
    if (*slot && *slot != protobuf_c_empty_string) free(*slot);
    *slot = d;
    return ADAPT_OK;
}

static int word_ok(const char *choices, const char *w)
{
    size_t len = strlen(w);
    for (const char *p = choices; *p; ) {
        size_t n = strcspn(p, "|");
        if (n == len && !strncmp(p, w, n)) return 1;
        p += n + (p[n] == '|');
    }
    return 0;
}

/* One member against its row: required, words, ranges, list lengths and entries. */
static int rule_check(const void *msg, const ProtobufCFieldDescriptor *fd, const train_rule *r,
                      int given, const char *prefix, char field[TRAIN_RULES_FIELD_MAX],
                      adapt_error *err)
{
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
        if (fd->type != PROTOBUF_C_TYPE_STRING) return ADAPT_OK;   /* stages: rules_stages */
        size_t n = *(const size_t *)((const char *)msg + fd->quantifier_offset);
        char *const *list = *MEMBER(msg, fd, char **);
        if (n < r->lo || n > r->hi)
            return rules_fail(field, prefix, r->name, err, "has %zu entries, expected %.0f to %.0f",
                              n, r->lo, r->hi);
        for (size_t i = 0; i < n; i++)
            if (!list[i][0]) {
                char name[TRAIN_RULES_FIELD_MAX];
                snprintf(name, sizeof name, "%s[%zu]", r->name, i);
                return rules_fail(field, prefix, name, err, "must not be empty");
            }
        return ADAPT_OK;
    }
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *MEMBER(msg, fd, char *);
        if (r->choices && !word_ok(r->choices, s)) {
            char words[128];
            size_t k = 0;
            for (const char *c = r->choices; *c && k + 4 < sizeof words; c++)
                k += (size_t)snprintf(words + k, sizeof words - k, *c == '|' ? " | " : "%c", *c);
            return rules_fail(field, prefix, r->name, err, "\"%.64s\" is not one of %s", s, words);
        }
        if ((r->flags & RULE_REQUIRED) && !s[0])
            return rules_fail(field, prefix, r->name, err, given ? "must not be empty" : "required");
        if (r->hi > 0 && strlen(s) > r->hi)
            return rules_fail(field, prefix, r->name, err, "longer than %.0f bytes", r->hi);
        return ADAPT_OK;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FLOAT: {
        double v = number_get(msg, fd);
        int below = (r->flags & RULE_LO_OPEN) ? !(v > r->lo) : !(v >= r->lo);
        int above = (r->flags & RULE_HI_OPEN) ? !(v < r->hi) : !(v <= r->hi);
        if (!below && !above) return ADAPT_OK;
        char vt[32], lt[32], ht[32];
        number_text(vt, sizeof vt, v);
        number_text(lt, sizeof lt, r->lo);
        number_text(ht, sizeof ht, r->hi);
        return rules_fail(field, prefix, r->name, err, "%s is outside %c%s, %s%c", vt,
                          (r->flags & RULE_LO_OPEN) ? '(' : '[', lt, ht,
                          (r->flags & RULE_HI_OPEN) ? ')' : ']');
    }
    default:
        return ADAPT_OK;
    }
}

/* Every member of msg against its row. */
static int rules_check_all(const void *msg, const ProtobufCMessageDescriptor *d,
                           const train_rule *rows, size_t n, uint64_t given, const char *prefix,
                           char field[TRAIN_RULES_FIELD_MAX], adapt_error *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = rule_check(msg, rule_field(d, &rows[i]), &rows[i], (int)(given >> i & 1), prefix,
                            field, err);
        if (rc) return rc;
    }
    return ADAPT_OK;
}

/* ---- defaults ------------------------------------------------------------------------------ */

static int default_pool(Adaptd__TrainSpec *t, adapt_error *err)
{
    t->caption_instructions = calloc(TRAIN_RULES_N_DEFAULT_INSTRUCTIONS, sizeof (char *));
    if (!t->caption_instructions) return rules_nomem(err);
    for (size_t i = 0; i < TRAIN_RULES_N_DEFAULT_INSTRUCTIONS; i++) {
        const char *s = train_rules_default_instructions[i];
        t->caption_instructions[i] = NULL;
        if (string_set(&t->caption_instructions[i], s, strlen(s), err)) return err->code;
        t->n_caption_instructions = i + 1;
    }
    return ADAPT_OK;
}

static int top_defaults(Adaptd__TrainSpec *t, uint64_t given, adapt_error *err)
{
    const ProtobufCMessageDescriptor *d = &adaptd__train_spec__descriptor;
    for (size_t i = 0; i < N_TOP; i++) {
        const train_rule *r = &top_rules[i];
        const ProtobufCFieldDescriptor *fd = rule_field(d, r);
        if (given >> i & 1 || fd->label == PROTOBUF_C_LABEL_REPEATED) continue;
        if (fd->type == PROTOBUF_C_TYPE_STRING) {
            if (r->choices && string_set(MEMBER(t, fd, char *), r->choices,
                                         strcspn(r->choices, "|"), err))
                return err->code;
        } else {
            number_set(t, fd, r->def);
        }
    }
    if (!given_has(given, top_rules, N_TOP, "lr_vision")) t->lr_vision = t->lr_llm;
    if (!given_has(given, top_rules, N_TOP, "caption_instructions") && t->n_caption_instructions == 0)
        return default_pool(t, err);
    return ADAPT_OK;
}

/* A stage's members left out come from the top level (see train_rules.h). */
static int stage_defaults(Adaptd__StageSchedule *st, const Adaptd__TrainSpec *t, uint64_t given,
                          adapt_error *err)
{
#define GIVEN(name) given_has(given, stage_rules, N_STAGE, name)
    if (!GIVEN("epochs") && !GIVEN("max_steps")) {
        st->epochs = t->epochs;
        st->max_steps = t->max_steps;
    }
    if (!GIVEN("lr_vision")) st->lr_vision = t->lr_vision;
    if (!GIVEN("lr_llm")) st->lr_llm = t->lr_llm;
    if (!GIVEN("warmup_ratio")) st->warmup_ratio = t->warmup_ratio;
    if (!GIVEN("schedule") && string_set(&st->schedule, t->schedule, strlen(t->schedule), err))
        return err->code;
#undef GIVEN
    return ADAPT_OK;
}

/* ---- rules between members ----------------------------------------------------------------- */

static int rules_stages(Adaptd__TrainSpec *t, const train_rules_given *given,
                        char field[TRAIN_RULES_FIELD_MAX], adapt_error *err)
{
    int two = !strcmp(t->mode, "two_stage");
    if (t->n_stages && !two)
        return rules_fail(field, "", "stages", err, "applies only to mode \"two_stage\"");
    if (!two) return ADAPT_OK;
    if (t->n_stages == 0)
        return rules_fail(field, "", "stages", err, "mode \"two_stage\" needs 2 stage objects");
    if (t->n_stages != TRAIN_RULES_STAGES)
        return rules_fail(field, "", "stages", err, "two_stage takes exactly 2 stages (captions, "
                          "then tasks), got %zu", t->n_stages);
    for (size_t k = 0; k < t->n_stages; k++) {
        Adaptd__StageSchedule *st = t->stages[k];
        char prefix[32];
        snprintf(prefix, sizeof prefix, "stages[%zu].", k);
        int rc = stage_defaults(st, t, given->stage[k], err);
        if (!rc) rc = rules_check_all(st, &adaptd__stage_schedule__descriptor, stage_rules, N_STAGE,
                                      given->stage[k], prefix, field, err);
        if (rc) return rc;
        if (st->epochs == 0 && st->max_steps == 0)
            return rules_fail(field, prefix, "epochs", err, "a stage needs epochs or max_steps "
                              "above 0");
    }
    return ADAPT_OK;
}

static int rules_between(Adaptd__TrainSpec *t, char field[TRAIN_RULES_FIELD_MAX], adapt_error *err)
{
    if (t->epochs == 0 && t->max_steps == 0)
        return rules_fail(field, "", "epochs", err, "epochs and max_steps are both 0: give one "
                          "of them");
    if (t->micro_batch_tokens < t->max_seq_len)
        return rules_fail(field, "", "micro_batch_tokens", err, "%u is below max_seq_len %u, so "
                          "a sample of max_seq_len tokens could not fit in a micro-batch",
                          t->micro_batch_tokens, t->max_seq_len);
    if (t->image_min_pixels > t->image_max_pixels)
        return rules_fail(field, "", "image_min_pixels", err, "%u is above image_max_pixels %u",
                          t->image_min_pixels, t->image_max_pixels);
    if (t->blank_image_ratio > 0 && strcmp(t->mode, "synthesizer"))
        return rules_fail(field, "", "blank_image_ratio", err, "applies only to mode "
                          "\"synthesizer\"");
    if (!strcmp(t->mode, "two_stage") && t->n_overlays == 0)
        return rules_fail(field, "", "overlays", err, "two_stage needs an overlay with the "
                          "synthesized tasks for its second stage");
    return ADAPT_OK;
}

int train_rules_fill(Adaptd__TrainSpec *t, const train_rules_given *given,
                     char field[TRAIN_RULES_FIELD_MAX], adapt_error *err)
{
    static const train_rules_given none = { 0 };
    if (!given) given = &none;
    field[0] = '\0';
    int rc = top_defaults(t, given->top, err);
    if (!rc) rc = rules_check_all(t, &adaptd__train_spec__descriptor, top_rules, N_TOP, given->top,
                                  "", field, err);
    if (!rc) rc = rules_between(t, field, err);
    if (!rc) rc = rules_stages(t, given, field, err);
    return rc;
}

int train_rules_fill_job(Adaptd__JobSpec *j, uint64_t given, const train_rules_given *train_given,
                         char field[TRAIN_RULES_FIELD_MAX], adapt_error *err)
{
    const ProtobufCMessageDescriptor *d = &adaptd__job_spec__descriptor;
    field[0] = '\0';
    for (size_t i = 0; i < N_JOB; i++) {
        const train_rule *r = &job_rules[i];
        const ProtobufCFieldDescriptor *fd = rule_field(d, r);
        if (given >> i & 1) continue;
        if (fd->type == PROTOBUF_C_TYPE_STRING && r->choices) {
            if (string_set(MEMBER(j, fd, char *), r->choices, strcspn(r->choices, "|"), err))
                return err->code;
        } else if (fd->type != PROTOBUF_C_TYPE_STRING && fd->type != PROTOBUF_C_TYPE_MESSAGE) {
            number_set(j, fd, r->def);
        }
    }
    int rc = rules_check_all(j, d, job_rules, N_JOB, given, "", field, err);
    if (rc) return rc;
    const void *others[] = { j->synthesize, j->filter, j->evaluate, j->pipeline };
    static const char *const names[] = { "synthesize", "filter", "evaluate", "pipeline" };
    for (size_t k = 0; k < 4; k++)
        if (others[k] || given_has(given, job_rules, N_JOB, names[k]))
            return rules_fail(field, "", names[k], err, "only for kind \"%s\"", names[k]);
    if (!j->train) return rules_fail(field, "", "train", err, "required for kind \"train\"");
    rc = train_rules_fill(j->train, train_given, field, err);
    if (rc == ADAPT_EINVAL) {
        char inner[TRAIN_RULES_FIELD_MAX];
        snprintf(inner, sizeof inner, "%s", field);
        snprintf(field, TRAIN_RULES_FIELD_MAX, "train.%.*s", TRAIN_RULES_FIELD_MAX - 7, inner);
    }
    return rc;
}

/* ---- the table against the schema --------------------------------------------------------- */

static int table_check(const ProtobufCMessageDescriptor *d, const train_rule *rows, size_t n,
                       adapt_error *err)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (rules_find(rows, n, d->fields[i].name) < 0)
            return adapt_fail(err, ADAPT_EINVAL, "%s.%s has no row in proto/train_rules.c",
                              d->name, d->fields[i].name);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCFieldDescriptor *fd = rule_field(d, &rows[i]);
        if (!fd)
            return adapt_fail(err, ADAPT_EINVAL, "row %s is not a field of %s", rows[i].name,
                              d->name);
        int repeated = fd->label == PROTOBUF_C_LABEL_REPEATED;
        int ok = repeated ? fd->type == PROTOBUF_C_TYPE_STRING ||
                            (fd->type == PROTOBUF_C_TYPE_MESSAGE &&
                             fd->descriptor == &adaptd__stage_schedule__descriptor)
                          : fd->type == PROTOBUF_C_TYPE_STRING || fd->type == PROTOBUF_C_TYPE_UINT32 ||
                            (fd->type == PROTOBUF_C_TYPE_MESSAGE && d == &adaptd__job_spec__descriptor) ||
                            fd->type == PROTOBUF_C_TYPE_UINT64 || fd->type == PROTOBUF_C_TYPE_FLOAT ||
                            fd->type == PROTOBUF_C_TYPE_BOOL;
        if (!ok || (rows[i].choices && fd->type != PROTOBUF_C_TYPE_STRING))
            return adapt_fail(err, ADAPT_EINVAL, "%s.%s: a type the rules do not handle", d->name,
                              rows[i].name);
    }
    return ADAPT_OK;
}

int train_rules_check_table(adapt_error *err)
{
    int rc = table_check(&adaptd__train_spec__descriptor, top_rules, N_TOP, err);
    if (!rc) rc = table_check(&adaptd__stage_schedule__descriptor, stage_rules, N_STAGE, err);
    return rc ? rc : table_check(&adaptd__job_spec__descriptor, job_rules, N_JOB, err);
}
