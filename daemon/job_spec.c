/* job_spec: JSON → JobSpec through protobuf-c descriptors, then the rules; see job_spec.h.
 *
 * Design: the generic walk (fill_message / message_to_json) knows only protobuf types; a train
 * job's defaults, ranges and rules are proto/train_rules' (the function adapt-worker runs on the
 * same text), and check_job adds only what is the daemon's own: --slots, Slurm set up, paths
 * inside --data-root. Every message built here is malloc'd piecewise so
 * protobuf_c_message_free_unpacked(msg, NULL) frees it on any path. */
#include "job_spec.h"
#include "job_spec_kinds.h"   /* synthesize, filter, evaluate, pipeline (issue 8) */
#include "train_rules.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* the readers' limits are train_rules', so adapt-worker's reader takes the same documents */
enum { SPEC_MAX_FIELDS = 256, SPEC_MAX_LIST = TRAIN_RULES_MAX_LIST,
       SPEC_MAX_STRING = TRAIN_RULES_MAX_STRING };
/* 2^53: the largest integer a JSON number carries exactly */
#define SPEC_EXACT_MAX 9007199254740992.0

static int bad(char field[JOB_SPEC_FIELD_MAX], const char *prefix, const char *name,
               adapt_error *err, const char *what)
{
    snprintf(field, JOB_SPEC_FIELD_MAX, "%s%s", prefix, name);
    return adapt_fail(err, ADAPT_EINVAL, "%s%s: %s", prefix, name, what);
}

static int json_integer(const cJSON *v, double max, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > max || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* A uint64 as proto3's JSON mapping has it: a number up to 2^53 or a decimal string (a seed
 * above 2^53 does not survive a JSON double). */
static int json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsString(v)) return json_integer(v, SPEC_EXACT_MAX, out);
    const char *s = v->valuestring;
    if (s[0] < '0' || s[0] > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end || errno) return 0;
    *out = x;
    return 1;
}

static char *json_string_copy(const cJSON *v)
{
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= SPEC_MAX_STRING) return NULL;
    return strdup(v->valuestring);
}

static int fill_message(ProtobufCMessage *msg, const cJSON *obj, const char *prefix,
                        char field[JOB_SPEC_FIELD_MAX], adapt_error *err);

/* A repeated field: strings or messages (the only lists job.proto has). Each element is counted
 * in the quantifier as soon as it exists, so an error half-way frees what was built. */
static int fill_list(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd, const cJSON *v,
                     const char *prefix, char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    int is_msg = fd->type == PROTOBUF_C_TYPE_MESSAGE;
    if (fd->type != PROTOBUF_C_TYPE_STRING && !is_msg)
        return bad(field, prefix, fd->name, err, "list type not accepted in JSON specs");
    const char *want = is_msg ? "expected an array of objects" : "expected an array of strings";
    if (!cJSON_IsArray(v)) return bad(field, prefix, fd->name, err, want);
    int n = cJSON_GetArraySize(v);
    if (n > SPEC_MAX_LIST) return bad(field, prefix, fd->name, err, "more than 1024 entries");
    void **list = calloc((size_t)n + 1, sizeof *list);
    if (!list) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    *(void ***)((char *)msg + fd->offset) = list;
    size_t *count = (size_t *)((char *)msg + fd->quantifier_offset);
    const cJSON *item;
    cJSON_ArrayForEach(item, v) {
        size_t i = *count;
        if (!is_msg) {
            if (!(list[i] = json_string_copy(item))) return bad(field, prefix, fd->name, err, want);
            (*count)++;
            continue;
        }
        if (!cJSON_IsObject(item)) return bad(field, prefix, fd->name, err, want);
        const ProtobufCMessageDescriptor *sd = fd->descriptor;
        ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
        if (!sub) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        sd->message_init(sub);
        list[i] = sub;
        (*count)++;
        char sub_prefix[JOB_SPEC_FIELD_MAX];
        snprintf(sub_prefix, sizeof sub_prefix, "%s%s[%zu].", prefix, fd->name, i);
        int rc = fill_message(sub, item, sub_prefix, field, err);
        if (rc != ADAPT_OK) return rc;
    }
    return ADAPT_OK;
}

/* Stores one JSON value into the field fd of msg. */
static int fill_field(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd, const cJSON *v,
                      const char *prefix, char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    char *member = (char *)msg + fd->offset;
    uint64_t u;
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) return fill_list(msg, fd, v, prefix, field, err);
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING: {
        char *s = json_string_copy(v);
        if (!s) return bad(field, prefix, fd->name, err, cJSON_IsString(v)
                           ? "longer than 4095 bytes" : "expected a string");
        *(char **)member = s;
        return ADAPT_OK;
    }
    case PROTOBUF_C_TYPE_UINT32:
        if (!json_integer(v, UINT32_MAX, &u))
            return bad(field, prefix, fd->name, err, "expected a non-negative 32-bit integer");
        *(uint32_t *)member = (uint32_t)u;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_UINT64:
        if (!json_u64(v, &u))
            return bad(field, prefix, fd->name, err, "expected a non-negative integer (up to 2^53 "
                       "as a number, any 64-bit one as a decimal string)");
        *(uint64_t *)member = u;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            return bad(field, prefix, fd->name, err, "expected a number");
        if (fd->type == PROTOBUF_C_TYPE_FLOAT) *(float *)member = (float)v->valuedouble;
        else *(double *)member = v->valuedouble;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_BOOL:
        if (!cJSON_IsBool(v)) return bad(field, prefix, fd->name, err, "expected true or false");
        *(protobuf_c_boolean *)member = cJSON_IsTrue(v);
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!cJSON_IsObject(v)) return bad(field, prefix, fd->name, err, "expected an object");
        const ProtobufCMessageDescriptor *sd = fd->descriptor;
        ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
        if (!sub) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        sd->message_init(sub);
        *(ProtobufCMessage **)member = sub;
        char sub_prefix[JOB_SPEC_FIELD_MAX];
        snprintf(sub_prefix, sizeof sub_prefix, "%s%s.", prefix, fd->name);
        return fill_message(sub, v, sub_prefix, field, err);
    }
    default:
        return bad(field, prefix, fd->name, err, "field type not accepted in JSON specs");
    }
}

static int fill_message(ProtobufCMessage *msg, const cJSON *obj, const char *prefix,
                        char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    unsigned char seen[SPEC_MAX_FIELDS] = {0};
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field_by_name(d, v->string);
        if (!fd) return bad(field, prefix, v->string, err, "unknown field");
        size_t idx = (size_t)(fd - d->fields);
        if (idx >= SPEC_MAX_FIELDS || seen[idx]) return bad(field, prefix, v->string, err, "given twice");
        seen[idx] = 1;
        if (cJSON_IsNull(v)) continue;   /* null means "the default", as in proto3 JSON */
        int rc = fill_field(msg, fd, v, prefix, field, err);
        if (rc != ADAPT_OK) return rc;
    }
    return ADAPT_OK;
}

/* ---- canonical paths --------------------------------------------------------------------- */

static int inside(const char *root, const char *path)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return 1;
    return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int job_spec_resolve_path(const char *root, const char *path, int must_exist, char *out,
                          size_t size, adapt_error *err)
{
    char joined[PATH_MAX], real[PATH_MAX];
    if (!path[0]) return adapt_fail(err, ADAPT_EINVAL, "empty path");
    if (snprintf(joined, sizeof joined, "%s%s%s", path[0] == '/' ? "" : root,
                 path[0] == '/' ? "" : "/", path) >= (int)sizeof joined)
        return adapt_fail(err, ADAPT_EINVAL, "path too long");
    if (realpath(joined, real)) {
        if (!inside(root, real))
            return adapt_fail(err, ADAPT_EINVAL, "%s resolves to %s, outside --data-root %s", path, real, root);
        if (snprintf(out, size, "%s", real) >= (int)size) return adapt_fail(err, ADAPT_EINVAL, "path too long");
        return ADAPT_OK;
    }
    if (errno != ENOENT || must_exist)
        return adapt_fail(err, ADAPT_EINVAL, "%s: %s", path, strerror(errno));
    /* Not there yet (an output folder): the deepest existing ancestor decides, and the missing
     * tail may not climb back out with "..". */
    char *cut = joined + strlen(joined);
    while (cut > joined) {
        while (cut > joined && *cut != '/') cut--;
        if (cut == joined) break;
        *cut = '\0';
        if (realpath(joined, real)) break;
        if (errno != ENOENT) return adapt_fail(err, ADAPT_EINVAL, "%s: %s", path, strerror(errno));
        *cut = '/';
        cut--;
    }
    if (cut == joined) return adapt_fail(err, ADAPT_EINVAL, "%s: no existing parent", path);
    const char *tail = cut + 1;
    if (strstr(tail, "/../") || strncmp(tail, "../", 3) == 0 || strcmp(tail, "..") == 0 ||
        (strlen(tail) >= 3 && strcmp(tail + strlen(tail) - 3, "/..") == 0))
        return adapt_fail(err, ADAPT_EINVAL, "%s: '..' below a folder that does not exist", path);
    if (!inside(root, real))
        return adapt_fail(err, ADAPT_EINVAL, "%s resolves outside --data-root %s", path, root);
    if (snprintf(out, size, "%s/%s", real, tail) >= (int)size)
        return adapt_fail(err, ADAPT_EINVAL, "path too long");
    return ADAPT_OK;
}

/* Replaces *s by its canonical form inside the data root. */
static int check_path(char **s, const char *name, int required, int must_exist,
                      const job_spec_policy *pol, char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    if (!(*s)[0]) return required ? bad(field, "", name, err, "required") : ADAPT_OK;
    char canon[PATH_MAX];
    adapt_error perr;
    if (job_spec_resolve_path(pol->data_root, *s, must_exist, canon, sizeof canon, &perr) != ADAPT_OK)
        return bad(field, "", name, err, perr.message);
    char *copy = strdup(canon);
    if (!copy) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    if (*s != protobuf_c_empty_string) free(*s);
    *s = copy;
    return ADAPT_OK;
}

/* Which members of a train job the client gave (not null): proto3 cannot tell a 0 given from
 * a member left out, and train_rules must (freeze_vision: false, pack_window: 0). */
static void given_members(const cJSON *root, uint64_t *envelope, train_rules_given *given)
{
    const cJSON *m, *train = cJSON_GetObjectItemCaseSensitive(root, "train");
    cJSON_ArrayForEach(m, root)
        if (!cJSON_IsNull(m)) train_rules_mark(envelope, TRAIN_RULES_JOB, m->string);
    if (!cJSON_IsObject(train)) return;
    cJSON_ArrayForEach(m, train)
        if (!cJSON_IsNull(m)) train_rules_mark(&given->top, TRAIN_RULES_TRAIN, m->string);
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(train, "stages");
    for (int k = 0; k < TRAIN_RULES_STAGES && cJSON_IsArray(stages); k++) {
        const cJSON *st = cJSON_GetArrayItem(stages, k);
        if (!cJSON_IsObject(st)) break;
        cJSON_ArrayForEach(m, st)
            if (!cJSON_IsNull(m)) train_rules_mark(&given->stage[k], TRAIN_RULES_STAGE, m->string);
    }
}

/* The paths of a train spec made canonical inside --data-root (after train_rules: a path
 * left out is already refused as required there). */
static int check_train_paths(Adaptd__TrainSpec *t, const job_spec_policy *pol,
                             char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    int rc;
    if ((rc = check_path(&t->model_path, "train.model_path", 1, 1, pol, field, err)) ||
        (rc = check_path(&t->corpus, "train.corpus", 1, 1, pol, field, err)) ||
        (rc = check_path(&t->output_dir, "train.output_dir", 1, 0, pol, field, err)))
        return rc;
    for (size_t i = 0; i < t->n_overlays; i++) {
        char name[64];
        snprintf(name, sizeof name, "train.overlays[%zu]", i);
        if ((rc = check_path(&t->overlays[i], name, 1, 1, pol, field, err))) return rc;
    }
    return ADAPT_OK;
}

static int check_job(Adaptd__JobSpec *s, const cJSON *root, const job_spec_policy *pol,
                     char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    if (!s->kind[0]) return bad(field, "", "kind", err, "required");
    if (strcmp(s->kind, "train") != 0) {
        if (strlen(s->name) > 127) return bad(field, "", "name", err, "longer than 127 bytes");
        return job_spec_check_kind(s, root, pol, field, err);
    }
    /* first: a job that can never start is refused as such, whatever else it holds */
    if (s->ranks > pol->max_ranks) {
        char what[96];
        snprintf(what, sizeof what, "%u exceeds the daemon's --slots %u", s->ranks, pol->max_ranks);
        return bad(field, "", "ranks", err, what);
    }
    uint64_t envelope = 0;
    train_rules_given given = { 0 };
    given_members(root, &envelope, &given);
    char rule_field[TRAIN_RULES_FIELD_MAX];
    int rc = train_rules_fill_job(s, envelope, &given, rule_field, err);
    if (rc == ADAPT_EINVAL) {
        char why[sizeof err->message];
        snprintf(why, sizeof why, "%s", err->message);
        return bad(field, "", rule_field, err, why);
    }
    if (rc) return rc;
    return check_train_paths(s->train, pol, field, err);
}

/* ---- back to JSON ------------------------------------------------------------------------ */

static cJSON *message_to_json(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    cJSON *o = cJSON_CreateObject();
    for (unsigned i = 0; o && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *member = (const char *)msg + fd->offset;
        cJSON *v = NULL;
        char num[64];
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + fd->quantifier_offset);
            void *const *list = *(void *const *const *)member;
            v = cJSON_CreateArray();
            for (size_t k = 0; v && k < n; k++)
                cJSON_AddItemToArray(v, fd->type == PROTOBUF_C_TYPE_STRING
                                        ? cJSON_CreateString(list[k])
                                        : fd->type == PROTOBUF_C_TYPE_MESSAGE
                                        ? message_to_json(list[k]) : cJSON_CreateNull());
        } else switch (fd->type) {
        case PROTOBUF_C_TYPE_STRING: v = cJSON_CreateString(*(char *const *)member); break;
        case PROTOBUF_C_TYPE_UINT32: v = cJSON_CreateNumber(*(const uint32_t *)member); break;
        case PROTOBUF_C_TYPE_UINT64: {
            /* above 2^53 as proto3's decimal string, which json_u64 reads back exactly */
            uint64_t u = *(const uint64_t *)member;
            if ((double)u <= SPEC_EXACT_MAX) {
                v = cJSON_CreateNumber((double)u);
            } else {
                snprintf(num, sizeof num, "%llu", (unsigned long long)u);
                v = cJSON_CreateString(num);
            }
            break;
        }
        case PROTOBUF_C_TYPE_FLOAT:
            /* the shortest text that reads back as the same float: 0.0002, not its double
             * widening 0.000199999995 */
            for (int prec = 6; prec <= 9; prec++) {
                snprintf(num, sizeof num, "%.*g", prec, *(const float *)member);
                if (strtof(num, NULL) == *(const float *)member) break;
            }
            v = cJSON_CreateRaw(num);
            break;
        case PROTOBUF_C_TYPE_DOUBLE: v = cJSON_CreateNumber(*(const double *)member); break;
        case PROTOBUF_C_TYPE_BOOL: v = cJSON_CreateBool(*(const protobuf_c_boolean *)member); break;
        case PROTOBUF_C_TYPE_MESSAGE: {
            /* a sub-spec not set (another kind's) is left out, as proto3's JSON does */
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)member;
            if (!sub) continue;
            v = message_to_json(sub);
            break;
        }
        default: v = cJSON_CreateNull(); break;
        }
        if (!v) { cJSON_Delete(o); return NULL; }
        cJSON_AddItemToObject(o, fd->name, v);
    }
    return o;
}

int job_spec_parse(const char *json, size_t len, const job_spec_policy *pol,
                   Adaptd__JobSpec **spec, char **normalized, char field[JOB_SPEC_FIELD_MAX],
                   adapt_error *err)
{
    *spec = NULL;
    *normalized = NULL;
    field[0] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - json) : 0;
        return adapt_fail(err, ADAPT_EINVAL, "malformed JSON near byte %zu", at);
    }
    /* cJSON stops after the first value: anything but white space after it is refused, as
     * adapt-worker's reader refuses it */
    for (size_t at = (size_t)(end - json); at < len && json[at]; at++)
        if (!strchr(" \t\r\n", json[at])) {
            cJSON_Delete(root);
            return adapt_fail(err, ADAPT_EINVAL, "malformed JSON: unexpected text after the "
                              "document at byte %zu", at);
        }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return adapt_fail(err, ADAPT_EINVAL, "the job spec must be a JSON object");
    }
    Adaptd__JobSpec *s = calloc(1, sizeof *s);
    if (!s) { cJSON_Delete(root); return adapt_fail(err, ADAPT_ENOMEM, "out of memory"); }
    adaptd__job_spec__init(s);
    int rc = fill_message(&s->base, root, "", field, err);
    if (rc == ADAPT_OK) rc = check_job(s, root, pol, field, err);
    /* here, not in check_job: every kind's envelope passes this way */
    if (rc == ADAPT_OK && strcmp(s->launcher, "slurm") == 0 && !pol->slurm)
        rc = bad(field, "", "launcher", err, "\"slurm\" is not set up on this adaptd: start it "
                 "with --slurm-template (deploy/slurm/adaptd-job.sbatch.in or a site's copy)");
    cJSON *out = rc == ADAPT_OK ? message_to_json(&s->base) : NULL;
    cJSON_Delete(root);
    if (rc == ADAPT_OK && !(out && (*normalized = cJSON_PrintUnformatted(out))))
        rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    cJSON_Delete(out);
    if (rc != ADAPT_OK) {
        adaptd__job_spec__free_unpacked(s, NULL);
        return rc;
    }
    *spec = s;
    return ADAPT_OK;
}
