/* job_kinds: spec reading, overlay shard bookkeeping and Sample helpers shared by the
 * synthesize, filter and evaluate job kinds; see job_kinds.h.
 *
 * The spec reader maps JSON onto the protobuf message through protobuf-c's descriptors (as the
 * daemon does), so it accepts exactly job.proto's field names, including the JobSpec the daemon
 * re-serialises with every field present; the rules a schema cannot say (required fields,
 * defaults, ranges) are per kind, below. */
#include "job_kinds.h"

#include "data_order.h"
#include "file_io.h"
#include "shard.h"
#include "work_source.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- JSON → message ---------------------------------------------------------------------- */

static int fill_message(ProtobufCMessage *msg, const cJSON *obj, const char *path,
                        const char *src, adapt_error *err);

static int spec_bad(const char *src, const char *path, const char *name, adapt_error *err,
                    const char *what)
{
    return adapt_fail(err, ADAPT_EINVAL, "%s: %s%s: %s", src, path, name, what);
}

static int fill_scalar(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd, const cJSON *v,
                       const char *path, const char *src, adapt_error *err)
{
    char *member = (char *)msg + fd->offset;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!cJSON_IsString(v)) return spec_bad(src, path, fd->name, err, "expected a string");
        if (!(*(char **)member = strdup(v->valuestring)))
            return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_UINT64:
        /* above 2^53 the daemon writes a uint64 as a decimal string (proto3 JSON does too) */
        if (cJSON_IsString(v)) {
            char *end = NULL;
            errno = 0;
            unsigned long long u = strtoull(v->valuestring, &end, 10);
            if (!v->valuestring[0] || *end || errno || v->valuestring[0] == '-')
                return spec_bad(src, path, fd->name, err, "expected a non-negative integer");
            *(uint64_t *)member = (uint64_t)u;
            return ADAPT_OK;
        }
        /* fall through */
    case PROTOBUF_C_TYPE_UINT32: {
        double max = fd->type == PROTOBUF_C_TYPE_UINT32 ? (double)UINT32_MAX : 9007199254740992.0;
        if (!isfinite(d) || d < 0 || d > max || floor(d) != d)
            return spec_bad(src, path, fd->name, err, fd->type == PROTOBUF_C_TYPE_UINT32
                            ? "expected a non-negative 32-bit integer"
                            : "expected a non-negative integer up to 2^53");
        if (fd->type == PROTOBUF_C_TYPE_UINT32) *(uint32_t *)member = (uint32_t)d;
        else *(uint64_t *)member = (uint64_t)d;
        return ADAPT_OK;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!isfinite(d)) return spec_bad(src, path, fd->name, err, "expected a number");
        if (fd->type == PROTOBUF_C_TYPE_FLOAT) *(float *)member = (float)d;
        else *(double *)member = d;
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_BOOL:
        if (!cJSON_IsBool(v)) return spec_bad(src, path, fd->name, err, "expected true or false");
        *(protobuf_c_boolean *)member = cJSON_IsTrue(v);
        return ADAPT_OK;
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!cJSON_IsObject(v)) return spec_bad(src, path, fd->name, err, "expected an object");
        const ProtobufCMessageDescriptor *sd = fd->descriptor;
        ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
        if (!sub) return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
        sd->message_init(sub);
        *(ProtobufCMessage **)member = sub;
        char sub_path[256];
        snprintf(sub_path, sizeof sub_path, "%s%s.", path, fd->name);
        return fill_message(sub, v, sub_path, src, err);
    }
    default:
        return spec_bad(src, path, fd->name, err, "field type not accepted in a JSON spec");
    }
}

/* A repeated field: each element is counted as soon as it exists, so an error half-way frees
 * what was built with the message. */
static int fill_list(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd, const cJSON *v,
                     const char *path, const char *src, adapt_error *err)
{
    if (!cJSON_IsArray(v)) return spec_bad(src, path, fd->name, err, "expected an array");
    int n = cJSON_GetArraySize(v);
    void **list = calloc((size_t)n + 1, sizeof *list);
    if (!list) return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
    *(void ***)((char *)msg + fd->offset) = list;
    size_t *count = (size_t *)((char *)msg + fd->quantifier_offset);
    const cJSON *item;
    cJSON_ArrayForEach(item, v) {
        char item_path[256];
        snprintf(item_path, sizeof item_path, "%s%s[%zu]", path, fd->name, *count);
        if (fd->type == PROTOBUF_C_TYPE_STRING) {
            if (!cJSON_IsString(item)) return spec_bad(src, item_path, "", err, "expected a string");
            if (!(list[*count] = strdup(item->valuestring)))
                return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
            (*count)++;
        } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (!cJSON_IsObject(item)) return spec_bad(src, item_path, "", err, "expected an object");
            const ProtobufCMessageDescriptor *sd = fd->descriptor;
            ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
            if (!sub) return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
            sd->message_init(sub);
            list[(*count)++] = sub;
            strcat(item_path, ".");
            int rc = fill_message(sub, item, item_path, src, err);
            if (rc) return rc;
        } else {
            return spec_bad(src, path, fd->name, err, "list type not accepted in a JSON spec");
        }
    }
    return ADAPT_OK;
}

static int fill_message(ProtobufCMessage *msg, const cJSON *obj, const char *path,
                        const char *src, adapt_error *err)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(d, v->string);
        if (!fd) return spec_bad(src, path, v->string, err, "unknown key");
        if (cJSON_IsNull(v)) continue;   /* null: the default, as in proto3 JSON */
        int rc = fd->label == PROTOBUF_C_LABEL_REPEATED
                     ? fill_list(msg, fd, v, path, src, err)
                     : fill_scalar(msg, fd, v, path, src, err);
        if (rc) return rc;
    }
    return ADAPT_OK;
}

/* ---- per-kind defaults and checks ---------------------------------------------------------- */

static int need(const char *value, const char *src, const char *name, adapt_error *err)
{
    return value && value[0] ? ADAPT_OK
                             : adapt_fail(err, ADAPT_EINVAL, "%s: %s: required", src, name);
}

static int in_range(double v, double lo, double hi, const char *src, const char *name,
                    adapt_error *err)
{
    return v >= lo && v <= hi ? ADAPT_OK
        : adapt_fail(err, ADAPT_EINVAL, "%s: %s: %g is outside [%g, %g]", src, name, v, lo, hi);
}

static int check_synthesize(Adaptd__SynthesizeSpec *s, const char *src, adapt_error *err)
{
    if (!s->max_new_tokens) s->max_new_tokens = JOB_SYNTH_MAX_NEW_TOKENS;
    if (s->top_p == 0) s->top_p = 1;
    if (!s->seed) s->seed = JOB_DEFAULT_SEED;
    if (!s->batch_size) s->batch_size = JOB_DEFAULT_BATCH;
    int rc;
    if ((rc = need(s->model_path, src, "synthesize.model_path", err)) ||
        (rc = need(s->corpus, src, "synthesize.corpus", err)) ||
        (rc = need(s->output_dir, src, "synthesize.output_dir", err)) ||
        (rc = in_range(s->max_new_tokens, 1, 32768, src, "synthesize.max_new_tokens", err)) ||
        (rc = in_range(s->temperature, 0, 100, src, "synthesize.temperature", err)) ||
        (rc = in_range(s->top_p, 0, 1, src, "synthesize.top_p", err)) ||
        (rc = in_range(s->batch_size, 1, 4096, src, "synthesize.batch_size", err)))
        return rc;
    return ADAPT_OK;
}

static int check_filter(Adaptd__FilterSpec *s, const char *src, adapt_error *err)
{
    if (!s->max_new_tokens) s->max_new_tokens = JOB_FILTER_MAX_NEW_TOKENS;
    if (!s->batch_size) s->batch_size = JOB_DEFAULT_BATCH;
    int rc;
    if ((rc = need(s->model_path, src, "filter.model_path", err)) ||
        (rc = need(s->corpus, src, "filter.corpus", err)) ||
        (rc = need(s->synthesized, src, "filter.synthesized", err)) ||
        (rc = need(s->output_dir, src, "filter.output_dir", err)) ||
        (rc = in_range(s->max_new_tokens, 1, 64, src, "filter.max_new_tokens", err)) ||
        (rc = in_range(s->batch_size, 1, 4096, src, "filter.batch_size", err)))
        return rc;
    for (size_t i = 0; i < s->n_cot_templates; i++) {
        char name[64];
        snprintf(name, sizeof name, "filter.cot_templates[%zu]", i);
        if (!strstr(s->cot_templates[i], "{informative}") ||
            !strstr(s->cot_templates[i], "{precise}"))
            return adapt_fail(err, ADAPT_EINVAL, "%s: %s: a template needs both {informative} "
                              "and {precise}", src, name);
    }
    return ADAPT_OK;
}

static int check_evaluate(Adaptd__EvaluateSpec *s, const char *src, adapt_error *err)
{
    if (!s->max_new_tokens) s->max_new_tokens = JOB_EVAL_MAX_NEW_TOKENS;
    if (!s->seed) s->seed = JOB_DEFAULT_SEED;
    if (!s->batch_size) s->batch_size = JOB_DEFAULT_BATCH;
    int rc;
    if ((rc = need(s->model_path, src, "evaluate.model_path", err)) ||
        (rc = need(s->benchmark, src, "evaluate.benchmark", err)) ||
        (rc = need(s->output_dir, src, "evaluate.output_dir", err)) ||
        (rc = in_range(s->max_new_tokens, 1, 32768, src, "evaluate.max_new_tokens", err)) ||
        (rc = in_range(s->batch_size, 1, 4096, src, "evaluate.batch_size", err)))
        return rc;
    return ADAPT_OK;
}

int job_kinds_parse(const char *json, size_t len, const char *src, const char *kind,
                    Adaptd__JobSpec **out, adapt_error *err)
{
    *out = NULL;
    cJSON *doc = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return adapt_fail(err, ADAPT_EINVAL, "%s: not a JSON object", src);
    }
    Adaptd__JobSpec *job = calloc(1, sizeof *job);
    if (!job) {
        cJSON_Delete(doc);
        return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
    }
    adaptd__job_spec__init(job);
    int rc;
    if (cJSON_GetObjectItemCaseSensitive(doc, "kind")) {
        rc = fill_message(&job->base, doc, "", src, err);
        if (!rc && strcmp(job->kind, kind) != 0)
            rc = adapt_fail(err, ADAPT_EINVAL, "%s: kind: \"%s\", but this is adapt-worker %s",
                            src, job->kind, kind);
    } else {
        /* a bare kind spec: wrap it */
        cJSON *wrap = cJSON_CreateObject();
        rc = wrap ? ADAPT_OK : adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", src);
        if (!rc) {
            cJSON_AddItemReferenceToObject(wrap, kind, doc);
            rc = fill_message(&job->base, wrap, "", src, err);
            cJSON_Delete(wrap);
        }
        if (!rc && !(job->kind = strdup(kind))) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
    }
    cJSON_Delete(doc);
    if (!rc) {
        if (!strcmp(kind, "synthesize"))
            rc = job->synthesize ? check_synthesize(job->synthesize, src, err)
                                 : need(NULL, src, "synthesize", err);
        else if (!strcmp(kind, "filter"))
            rc = job->filter ? check_filter(job->filter, src, err) : need(NULL, src, "filter", err);
        else if (!strcmp(kind, "evaluate"))
            rc = job->evaluate ? check_evaluate(job->evaluate, src, err)
                               : need(NULL, src, "evaluate", err);
        else
            rc = adapt_fail(err, ADAPT_EINVAL, "%s: kind \"%s\" is not a generation job", src, kind);
    }
    if (rc) {
        adaptd__job_spec__free_unpacked(job, NULL);
        return rc;
    }
    *out = job;
    return ADAPT_OK;
}

static int read_file(const char *path, char **buf, size_t *len, adapt_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                              "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        char *g = realloc(b, cap *= 2);
        if (!g) free(b);
        b = g;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b) return adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", path);
    if (bad) {
        free(b);
        return adapt_fail(err, ADAPT_EIO, "%s: read error", path);
    }
    b[n < cap ? n : cap - 1] = '\0';
    *buf = b;
    *len = n;
    return ADAPT_OK;
}

int job_kinds_load(const char *path, const char *kind, Adaptd__JobSpec **out, adapt_error *err)
{
    char *buf;
    size_t len;
    int rc = read_file(path, &buf, &len, err);
    if (rc) return rc;
    rc = job_kinds_parse(buf, len, path, kind, out, err);
    free(buf);
    return rc;
}

int job_kinds_model_type(const char *model_dir, char **out, adapt_error *err)
{
    char path[PATH_MAX], *buf;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    int rc = read_file(path, &buf, &len, err);
    if (rc) return rc;
    cJSON *doc = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "model_type");
    rc = cJSON_IsString(t) ? ADAPT_OK
        : adapt_fail(err, ADAPT_EINVAL, "%s: no \"model_type\" string", path);
    if (!rc && !(*out = strdup(t->valuestring))) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
    cJSON_Delete(doc);
    return rc;
}

/* ---- overlay shards ------------------------------------------------------------------------ */

int job_overlay_shard_path(const job_overlay *o, uint64_t s, char *buf, size_t size,
                           adapt_error *err)
{
    const Adaptd__Manifest *m = corpus_manifest(o->base);
    if (s >= m->n_shards) return adapt_fail(err, ADAPT_ERANGE, "shard %llu out of range",
                                            (unsigned long long)s);
    if (snprintf(buf, size, "%s/%s", o->out_dir, m->shards[s]->path) >= (int)size)
        return adapt_fail(err, ADAPT_EINVAL, "%s: path too long", o->out_dir);
    return ADAPT_OK;
}

int job_overlay_shard_done(const job_overlay *o, uint64_t s)
{
    char path[PATH_MAX];
    adapt_error e;
    if (job_overlay_shard_path(o, s, path, sizeof path, &e)) return 0;
    shard_reader *r = NULL;
    if (shard_reader_open(&r, path, &e)) return 0;
    const Adaptd__ShardInfo *si = corpus_manifest(o->base)->shards[s];
    int done = shard_reader_count(r) == si->records;
    /* the first and last records must name the base's: a shard left by a run over another
     * corpus with the same shard sizes is not this job's */
    for (uint64_t k = 0; done && k < 2; k++) {
        uint64_t i = k ? si->records - 1 : 0;
        Adaptd__Sample *a = NULL, *b = NULL;
        done = !shard_reader_read(r, i, &a, &e) &&
               !corpus_read(o->base, si->first_record + i, &b, &e) && !strcmp(a->id, b->id);
        if (a) adaptd__sample__free_unpacked(a, NULL);
        if (b) adaptd__sample__free_unpacked(b, NULL);
    }
    shard_reader_close(r);
    return done;
}

static int mkdir_p(char *path, adapt_error *err)
{
    for (char *p = path + 1; ; p++) {
        if (*p != '/' && *p) continue;
        char save = *p;
        *p = '\0';
        int bad = mkdir(path, 0755) != 0 && errno != EEXIST;
        *p = save;
        if (bad) return adapt_fail(err, ADAPT_EIO, "cannot create %.*s: %s", (int)(p - path), path,
                                   strerror(errno));
        if (!save) return ADAPT_OK;
    }
}

int job_overlay_prepare(const job_overlay *o, adapt_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", o->out_dir);
    int rc = mkdir_p(path, err);
    const Adaptd__Manifest *m = corpus_manifest(o->base);
    for (size_t s = 0; !rc && s < m->n_shards; s++) {
        if ((rc = job_overlay_shard_path(o, s, path, sizeof path, err))) break;
        char *slash = strrchr(path, '/');
        *slash = '\0';
        rc = mkdir_p(path, err);
    }
    return rc;
}

int job_overlay_finish(const job_overlay *o, const char *tool, adapt_error *err)
{
    const Adaptd__Manifest *bm = corpus_manifest(o->base);
    Adaptd__Manifest m = ADAPTD__MANIFEST__INIT;
    Adaptd__BaseCorpusRef ref = ADAPTD__BASE_CORPUS_REF__INIT;
    Adaptd__ImportProvenance prov = ADAPTD__IMPORT_PROVENANCE__INIT;
    Adaptd__ShardInfo *info = calloc(bm->n_shards + 1, sizeof *info);
    Adaptd__ShardInfo **list = calloc(bm->n_shards + 1, sizeof *list);
    char path[PATH_MAX];
    int rc = info && list ? ADAPT_OK : adapt_fail(err, ADAPT_ENOMEM, "overlay manifest: no memory");
    for (size_t s = 0; !rc && s < bm->n_shards; s++) {
        shard_reader *r = NULL;
        uint32_t crc = 0;
        rc = job_overlay_shard_path(o, s, path, sizeof path, err);
        if (!rc) rc = shard_reader_open(&r, path, err);
        if (!rc) rc = shard_reader_check(r, &crc, err);
        if (!rc && shard_reader_count(r) != bm->shards[s]->records)
            rc = adapt_fail(err, ADAPT_ECORRUPT, "%s holds %llu records, base shard %llu", path,
                            (unsigned long long)shard_reader_count(r),
                            (unsigned long long)bm->shards[s]->records);
        if (!rc) {
            adaptd__shard_info__init(&info[s]);
            info[s].path = bm->shards[s]->path;
            info[s].records = bm->shards[s]->records;
            info[s].bytes = shard_reader_size(r);
            info[s].crc32c = crc;
            info[s].first_record = bm->shards[s]->first_record;
            list[s] = &info[s];
        }
        shard_reader_close(r);
    }
    if (!rc) {
        const char *name = strrchr(o->out_dir, '/');
        name = name && name[1] ? name + 1 : o->out_dir;
        ref.path = (char *)o->base_path;
        ref.corpus_name = bm->corpus_name;
        ref.record_count = bm->record_count;
        ref.manifest_crc32c = corpus_manifest_crc32c(o->base);
        prov.tool = (char *)tool;
        prov.tool_version = "1";
        prov.source_format = (char *)tool;
        prov.finished_unix = (int64_t)time(NULL);
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        prov.hostname = host;
        m.corpus_name = (char *)name;
        m.format_version = CORPUS_FORMAT_VERSION;
        m.created_unix = (int64_t)time(NULL);
        m.record_count = bm->record_count;
        m.n_shards = bm->n_shards;
        m.shards = list;
        m.provenance = &prov;
        m.base_corpus = &ref;
        snprintf(path, sizeof path, "%s/%s", o->out_dir, CORPUS_MANIFEST_NAME);
        rc = corpus_manifest_save(path, &m, NULL, err);
    }
    free(info);
    free(list);
    return rc;
}

/* ---- the map over shards ------------------------------------------------------------------ */

typedef struct map_batch {
    Adaptd__Sample **recs;
    gen_prompt      *prompts;
    gen_result      *results;
    char           **texts;
    size_t          *slot;     /* record k's prompt index, or the batch size: not prompted */
} map_batch;

static void map_batch_free(map_batch *b)
{
    free(b->recs);
    free(b->prompts);
    free(b->results);
    free(b->texts);
    free(b->slot);
}

/* One batch of records [first, first + n) of shard si: prompts, generation, output records. */
static int map_batch_run(job_map *m, map_batch *b, shard_writer *w, const Adaptd__ShardInfo *si,
                         uint64_t first, size_t n, adapt_error *err)
{
    size_t np = 0, none = m->batch;
    int rc = ADAPT_OK;
    for (size_t k = 0; !rc && k < n; k++) {
        uint64_t g = si->first_record + first + k;
        b->slot[k] = none;
        if ((rc = corpus_read(m->in, g, &b->recs[k], err)) != 0) {
            rc = adapt_error_prefix(err, "%s record %llu: ", m->in_path, (unsigned long long)g);
            break;
        }
        const uint8_t *image = NULL;
        size_t image_len = 0;
        if ((rc = m->prompt(m->ctx, b->recs[k], &b->texts[np], &image, &image_len, err))) break;
        if (!b->texts[np]) continue;
        b->prompts[np] = (gen_prompt){ .text = b->texts[np], .image = image, .image_len = image_len };
        b->slot[k] = np++;
    }
    /* sampling draws keyed by the batch's first record: a rerun or another world size samples
     * the same text */
    if (m->seed_stream)
        m->options.seed = data_order_key(m->seed, m->seed_stream, si->first_record + first);
    int generated = 0;
    if (!rc && np && !m->gen) rc = gen_open(&m->gen, m->model_path, err);
    if (!rc && np) {
        rc = gen_run(m->gen, b->prompts, np, &m->options, b->results, err);
        if (rc) rc = adapt_error_prefix(err, "%s records %llu..%llu: ", m->in_path,
                                        (unsigned long long)(si->first_record + first),
                                        (unsigned long long)(si->first_record + first + n - 1));
        generated = !rc;
    }
    for (size_t k = 0; !rc && k < n; k++) {
        Adaptd__Sample *out = NULL;
        const char *text = b->slot[k] < none ? b->results[b->slot[k]].text : NULL;
        if (b->slot[k] < none && !text) text = "";   /* a generator without a tokenizer */
        rc = m->record(m->ctx, b->recs[k], text, &out, err);
        if (!rc) rc = shard_writer_add(w, out, err);
        job_sample_free(out);
    }
    for (size_t k = 0; k < np; k++) {
        if (generated) gen_result_clear(&b->results[k]);
        free(b->texts[k]);
        b->texts[k] = NULL;
    }
    for (size_t k = 0; k < n; k++) {
        if (b->recs[k]) adaptd__sample__free_unpacked(b->recs[k], NULL);
        b->recs[k] = NULL;
    }
    return rc;
}

static int map_shard(const job_overlay *ov, job_map *m, uint64_t s, adapt_error *err)
{
    const Adaptd__ShardInfo *si = corpus_manifest(ov->base)->shards[s];
    char path[PATH_MAX];
    int rc = job_overlay_shard_path(ov, s, path, sizeof path, err);
    shard_writer *w = NULL;
    if (!rc) rc = shard_writer_open(&w, path, 3, err);
    if (rc) return rc;
    size_t bs = m->batch;
    map_batch b = { calloc(bs, sizeof *b.recs), calloc(bs, sizeof *b.prompts),
                    calloc(bs, sizeof *b.results), calloc(bs, sizeof *b.texts),
                    calloc(bs, sizeof *b.slot) };
    if (!b.recs || !b.prompts || !b.results || !b.texts || !b.slot)
        rc = adapt_fail(err, ADAPT_ENOMEM, "no memory for a batch of %zu", bs);
    for (uint64_t first = 0; !rc && first < si->records; first += bs) {
        size_t n = (size_t)(si->records - first < bs ? si->records - first : bs);
        rc = map_batch_run(m, &b, w, si, first, n, err);
    }
    map_batch_free(&b);
    if (rc) {
        shard_writer_abort(w);
        return rc;
    }
    return shard_writer_finish(w, NULL, err);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int job_ranks_agree(comm *c, int rc, adapt_error *err)
{
    adapt_error cerr;
    uint64_t failed = rc != 0;
    if (comm_allreduce_sum_u64(c, &failed, 1, &cerr) && !rc)
        return adapt_fail(err, cerr.code, "%s", cerr.message);
    if (!rc && failed) return adapt_fail(err, ADAPT_EIO, "another rank failed (see its message)");
    return rc;
}

int job_overlay_run(const job_run_options *o, const job_overlay *ov, job_map *m,
                    const char *kind, adapt_error *err)
{
    int rank = comm_rank(o->c), world = comm_world(o->c);
    const Adaptd__Manifest *bm = corpus_manifest(ov->base);
    uint64_t n_shards = bm->n_shards, units = 0, records = 0, s = 0;
    work_source *ws = NULL;
    int rc = job_overlay_prepare(ov, err), more = 1;
    if (!rc) rc = work_source_open(&ws, rank, world, kind, n_shards, err);
    /* from the daemon's queue a rank cannot know its share: progress counts against all */
    uint64_t mine = work_source_queued(ws) ? n_shards : job_rank_units(n_shards, rank, world);
    while (!rc && !(rc = work_source_next(ws, &s, &more, err)) && more) {
        double t0 = now_s();
        char path[PATH_MAX];
        int done = job_overlay_shard_done(ov, s);
        if (!done) rc = map_shard(ov, m, s, err);
        if (!rc) rc = job_overlay_shard_path(ov, s, path, sizeof path, err);
        if (!rc) rc = work_source_done(ws, s, path, bm->shards[s]->records, err);
        if (rc) break;
        records += bm->shards[s]->records;
        if (o->progress) {
            fprintf(o->progress, "{\"kind\": \"%s\", \"rank\": %d, \"shard\": %llu, "
                    "\"shards\": %llu, \"records\": %llu, \"skipped\": %s, \"seconds\": %.3f}\n",
                    kind, rank, (unsigned long long)s, (unsigned long long)n_shards,
                    (unsigned long long)bm->shards[s]->records, done ? "true" : "false",
                    now_s() - t0);
            fflush(o->progress);
        }
        if (o->unit_done) o->unit_done(o->ctx, ++units, mine, records);
    }
    work_source_close(ws);
    if (m->gen) gen_close(m->gen);
    m->gen = NULL;
    /* every rank reaches this point, failed or not, so none waits forever on another */
    rc = job_ranks_agree(o->c, rc, err);
    if (!rc && rank == 0) {
        char tool[64];
        snprintf(tool, sizeof tool, "adapt-worker %s", kind);
        rc = job_overlay_finish(ov, tool, err);
    }
    return rc;
}

/* ---- Sample helpers ------------------------------------------------------------------------ */

static int sample_source(Adaptd__Sample *s, adapt_error *err)
{
    if (!s->source) {
        if (!(s->source = malloc(sizeof *s->source)))
            return adapt_fail(err, ADAPT_ENOMEM, "no memory");
        adaptd__source_meta__init(s->source);
    }
    return ADAPT_OK;
}

int job_sample_format(Adaptd__Sample *s, const char *format, adapt_error *err)
{
    if (sample_source(s, err)) return ADAPT_ENOMEM;
    char *f = strdup(format);
    if (!f) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    if (s->source->format != protobuf_c_empty_string) free(s->source->format);
    s->source->format = f;
    return ADAPT_OK;
}

int job_sample_extra(Adaptd__Sample *s, const char *key, const char *value, adapt_error *err)
{
    if (sample_source(s, err)) return ADAPT_ENOMEM;
    Adaptd__SourceMeta *m = s->source;
    Adaptd__KeyValue **g = realloc(m->extra, (m->n_extra + 1) * sizeof *g);
    if (!g) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    m->extra = g;
    Adaptd__KeyValue *kv = malloc(sizeof *kv);
    if (!kv) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    adaptd__key_value__init(kv);
    kv->key = strdup(key);
    kv->value = strdup(value);
    m->extra[m->n_extra++] = kv;
    if (!kv->key || !kv->value) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    return ADAPT_OK;
}

const char *job_sample_extra_get(const Adaptd__Sample *s, const char *key)
{
    for (size_t i = 0; s->source && i < s->source->n_extra; i++)
        if (!strcmp(s->source->extra[i]->key, key)) return s->source->extra[i]->value;
    return NULL;
}

/* protobuf-c's free_unpacked frees every string and sub-message with the allocator given,
 * which is what job_sample_* built them with (malloc); protobuf_c_empty_string is skipped. */
void job_sample_free(Adaptd__Sample *s)
{
    if (s) adaptd__sample__free_unpacked(s, NULL);
}

/* ---- the command ------------------------------------------------------------------------- */

int job_kinds_run(comm *c, const char *kind, const char *spec_path, const job_run_options *opt,
                  char *output_dir, size_t size, adapt_error *err)
{
    Adaptd__JobSpec *job = NULL;
    int rc = job_kinds_load(spec_path, kind, &job, err);
    if (rc) return rc;
    job_run_options o = *opt;
    o.c = c;
    const char *out = "";
    if (job->synthesize && !strcmp(kind, "synthesize")) {
        out = job->synthesize->output_dir;
        rc = job_synthesize_run(&o, job->synthesize, err);
    } else if (job->filter && !strcmp(kind, "filter")) {
        out = job->filter->output_dir;
        rc = job_filter_run(&o, job->filter, err);
    } else {
        out = job->evaluate->output_dir;
        rc = job_evaluate_run(&o, job->evaluate, err);
    }
    snprintf(output_dir, size, "%s", out);
    adaptd__job_spec__free_unpacked(job, NULL);
    return rc;
}
