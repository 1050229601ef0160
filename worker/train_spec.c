/* train_spec: adapt-worker's reader of a train spec file; see train_spec.h.
 *
 * Design: the JSON is mapped onto the message through protobuf-c's descriptors, taking the same
 * JSON types adaptd's reader takes (daemon/job_spec.c), and every default, range and rule
 * after that is proto/train_rules' — the same function adaptd ran when the job was submitted,
 * so the worker accepts exactly the specs adaptd accepts and reads the same effective values.
 * Every message built here is malloc'd piecewise, so free_unpacked frees it on any path. */
#include "train_spec.h"
#include "train_rules.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const *const train_spec_default_instructions = train_rules_default_instructions;
const size_t train_spec_n_default_instructions = TRAIN_RULES_N_DEFAULT_INSTRUCTIONS;

/* A parse in progress: the input's name for messages and where the first error goes. */
typedef struct spec_ctx {
    const char  *src;
    adapt_error *err;
} spec_ctx;

static int spec_fail(spec_ctx *c, const char *prefix, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "SRC: train.pack_window: what" — the member as adaptd names it, after the file. */
static int spec_fail(spec_ctx *c, const char *prefix, const char *name, const char *fmt, ...)
{
    char what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return adapt_fail(c->err, ADAPT_EINVAL, "%s: %s%s: %s", c->src, prefix, name, what);
}

static int spec_nomem(spec_ctx *c)
{
    return adapt_fail(c->err, ADAPT_ENOMEM, "%s: no memory to read the spec", c->src);
}

static char *spec_string(const cJSON *v)
{
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= TRAIN_RULES_MAX_STRING) return NULL;
    size_t n = strlen(v->valuestring) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, v->valuestring, n);
    return d;
}

/* A whole number in [0, max]. */
static int spec_whole(const cJSON *v, double max, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > max || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* A uint64 as proto3's JSON mapping writes it: a decimal string (seeds above 2^53 do not
 * survive a JSON double), or a number up to 2^53. */
static int spec_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsString(v)) return spec_whole(v, 9007199254740992.0, out);
    const char *s = v->valuestring;
    if (s[0] < '0' || s[0] > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end || errno) return 0;
    *out = x;
    return 1;
}

/* One JSON value into the scalar member fd of msg (types as adaptd's reader takes them). */
static int spec_read_scalar(spec_ctx *c, void *msg, const ProtobufCFieldDescriptor *fd,
                            const cJSON *v, const char *prefix)
{
    char *member = (char *)msg + fd->offset;
    uint64_t u;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING: {
        char *s = spec_string(v);
        if (!s) return cJSON_IsString(v) ? spec_fail(c, prefix, fd->name, "longer than %d bytes",
                                                     TRAIN_RULES_MAX_STRING - 1)
                                         : spec_fail(c, prefix, fd->name, "expected a string");
        char **slot = (char **)member;
        if (*slot != protobuf_c_empty_string) free(*slot);
        *slot = s;
        return ADAPT_OK;
    }
    case PROTOBUF_C_TYPE_UINT32:
        if (!spec_whole(v, UINT32_MAX, &u))
            return spec_fail(c, prefix, fd->name, "expected a non-negative 32-bit integer");
        *(uint32_t *)member = (uint32_t)u;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_UINT64:
        if (!spec_u64(v, &u))
            return spec_fail(c, prefix, fd->name, "expected a non-negative integer (up to 2^53 "
                             "as a number, any 64-bit one as a decimal string)");
        *(uint64_t *)member = u;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_FLOAT:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            return spec_fail(c, prefix, fd->name, "expected a number");
        *(float *)member = (float)v->valuedouble;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_BOOL:
        if (!cJSON_IsBool(v)) return spec_fail(c, prefix, fd->name, "expected true or false");
        *(protobuf_c_boolean *)member = cJSON_IsTrue(v);
        return ADAPT_OK;
    default:
        return spec_fail(c, prefix, fd->name, "type not accepted in a JSON spec");
    }
}

static int spec_read_strings(spec_ctx *c, void *msg, const ProtobufCFieldDescriptor *fd,
                             const cJSON *v, const char *prefix)
{
    if (!cJSON_IsArray(v)) return spec_fail(c, prefix, fd->name, "expected an array of strings");
    int n = cJSON_GetArraySize(v);
    if (n > TRAIN_RULES_MAX_LIST)
        return spec_fail(c, prefix, fd->name, "more than %d entries", TRAIN_RULES_MAX_LIST);
    char **list = calloc((size_t)n + 1, sizeof *list);
    if (!list) return spec_nomem(c);
    /* installed first, counted per entry: a failure half-way is freed with the message */
    *(char ***)((char *)msg + fd->offset) = list;
    size_t *count = (size_t *)((char *)msg + fd->quantifier_offset);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!(list[*count] = spec_string(e)))
            return spec_fail(c, prefix, fd->name, "expected an array of strings");
        (*count)++;
    }
    return ADAPT_OK;
}

static int spec_read_object(spec_ctx *c, ProtobufCMessage *msg, const cJSON *o,
                            train_rules_object object, const char *prefix, uint64_t *given,
                            train_rules_given *sub_given);

/* "stages": an array of StageSchedule objects; sub_given->stage[k] marks what stage k gave. */
static int spec_read_stages(spec_ctx *c, Adaptd__TrainSpec *t, const cJSON *v, const char *prefix,
                            train_rules_given *given)
{
    if (!cJSON_IsArray(v)) return spec_fail(c, prefix, "stages", "expected an array of objects");
    int n = cJSON_GetArraySize(v);
    if (n > TRAIN_RULES_MAX_LIST)
        return spec_fail(c, prefix, "stages", "more than %d entries", TRAIN_RULES_MAX_LIST);
    t->stages = calloc((size_t)n + 1, sizeof *t->stages);
    if (!t->stages) return spec_nomem(c);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        size_t k = t->n_stages;
        if (!cJSON_IsObject(e)) return spec_fail(c, prefix, "stages", "expected an array of objects");
        Adaptd__StageSchedule *st = malloc(sizeof *st);
        if (!st) return spec_nomem(c);
        adaptd__stage_schedule__init(st);
        t->stages[k] = st;
        t->n_stages++;
        char sub[TRAIN_RULES_FIELD_MAX];
        snprintf(sub, sizeof sub, "%sstages[%zu].", prefix, k);
        uint64_t scratch = 0;
        uint64_t *mask = k < TRAIN_RULES_STAGES ? &given->stage[k] : &scratch;
        int rc = spec_read_object(c, &st->base, e, TRAIN_RULES_STAGE, sub, mask, NULL);
        if (rc) return rc;
    }
    return ADAPT_OK;
}

/* Reads every member of o into msg through msg's descriptor, marking each one given (not null)
 * in *given. Unknown and repeated keys are refused. sub_given: the TrainSpec's stages' marks
 * (object TRAIN_RULES_TRAIN) or the train spec's (TRAIN_RULES_JOB); NULL for a stage. */
static int spec_read_object(spec_ctx *c, ProtobufCMessage *msg, const cJSON *o,
                            train_rules_object object, const char *prefix, uint64_t *given,
                            train_rules_given *sub_given)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    uint64_t seen = 0;
    for (const cJSON *m = o->child; m; m = m->next) {
        const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field_by_name(d, m->string);
        if (!fd) return spec_fail(c, prefix, m->string, "unknown field");
        uint64_t bit = (uint64_t)1 << (fd - d->fields);
        if (seen & bit) return spec_fail(c, prefix, m->string, "given twice");
        seen |= bit;
        if (cJSON_IsNull(m)) continue;   /* null means "the default", as in proto3's JSON */
        if (train_rules_mark(given, object, fd->name))
            return spec_fail(c, prefix, fd->name, "no rule for this field (proto/train_rules.c)");
        int rc;
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE && object == TRAIN_RULES_TRAIN) {
            rc = spec_read_stages(c, (Adaptd__TrainSpec *)msg, m, prefix, sub_given);
        } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            /* the envelope: train is read here; another kind's sub-spec stays marked given
             * only, and train_rules_fill_job refuses it */
            if (strcmp(fd->name, "train")) continue;
            if (!cJSON_IsObject(m)) return spec_fail(c, prefix, "train", "expected an object");
            Adaptd__TrainSpec *t = malloc(sizeof *t);
            if (!t) return spec_nomem(c);
            adaptd__train_spec__init(t);
            ((Adaptd__JobSpec *)msg)->train = t;
            rc = spec_read_object(c, &t->base, m, TRAIN_RULES_TRAIN, "train.", &sub_given->top,
                                  sub_given);
        } else if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            rc = spec_read_strings(c, msg, fd, m, prefix);
        } else {
            rc = spec_read_scalar(c, msg, fd, m, prefix);
        }
        if (rc) return rc;
    }
    return ADAPT_OK;
}

/* A refusal by proto/train_rules (err holds the reason alone) as "SRC: FIELD: reason". */
static int spec_rules_failed(spec_ctx *c, int rc, const char *field)
{
    if (rc != ADAPT_EINVAL) return rc;
    char reason[sizeof c->err->message];
    snprintf(reason, sizeof reason, "%s", c->err->message);
    return adapt_fail(c->err, ADAPT_EINVAL, "%s: %s: %s", c->src, field[0] ? field : "spec", reason);
}

static int spec_parse_train_obj(spec_ctx *c, const cJSON *o, Adaptd__TrainSpec **out)
{
    if (!cJSON_IsObject(o))
        return adapt_fail(c->err, ADAPT_EINVAL, "%s: the spec must be a JSON object", c->src);
    Adaptd__TrainSpec *t = malloc(sizeof *t);
    if (!t) return spec_nomem(c);
    adaptd__train_spec__init(t);
    train_rules_given given = { 0 };
    char field[TRAIN_RULES_FIELD_MAX];
    int rc = spec_read_object(c, &t->base, o, TRAIN_RULES_TRAIN, "", &given.top, &given);
    if (!rc) rc = spec_rules_failed(c, train_rules_fill(t, &given, field, c->err), field);
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
    adapt_error local;
    spec_ctx c = { .src = src ? src : "train spec", .err = err ? err : &local };
    *out = NULL;
    cJSON *root = spec_parse_json(&c, json, len);
    if (!root) return c.err->code;
    int rc = spec_parse_train_obj(&c, root, out);
    cJSON_Delete(root);
    return rc;
}

static int spec_parse_job_obj(spec_ctx *c, const cJSON *o, Adaptd__JobSpec **out)
{
    if (!cJSON_IsObject(o))
        return adapt_fail(c->err, ADAPT_EINVAL, "%s: the job spec must be a JSON object", c->src);
    Adaptd__JobSpec *j = malloc(sizeof *j);
    if (!j) return spec_nomem(c);
    adaptd__job_spec__init(j);
    uint64_t envelope = 0;
    train_rules_given given = { 0 };
    char field[TRAIN_RULES_FIELD_MAX];
    int rc = spec_read_object(c, &j->base, o, TRAIN_RULES_JOB, "", &envelope, &given);
    if (!rc) rc = spec_rules_failed(c, train_rules_fill_job(j, envelope, &given, field, c->err), field);
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
    adapt_error local;
    spec_ctx c = { .src = src ? src : "job spec", .err = err ? err : &local };
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
