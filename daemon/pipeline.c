/* pipeline: the stages of a pipeline job and their state in SQLite; see pipeline.h.
 *
 * Design: the plan works on the stored spec's JSON with cJSON — each stage's spec is the
 * pipeline's sub-object for it, copied, its empty paths filled from the stage before, wrapped
 * in a JobSpec envelope of the stage's kind — so a field the pipeline spec does not mention
 * stays unset and adapt-worker applies its own default, as for a job of that kind. The stage
 * rows are written with short statements prepared per call: a stage changes a few times per
 * job, far from any hot path. */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void pipeline_plan_free(pipeline_plan *p)
{
    if (!p) return;
    for (size_t i = 0; i < PIPELINE_MAX_STAGES; i++) {
        free(p->stage[i].output_dir);
        free(p->stage[i].spec_json);
    }
    memset(p, 0, sizeof *p);
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Sets o[key] to value unless o holds a non-empty string there already. */
static int fill(cJSON *o, const char *key, const char *value)
{
    if (str_of(o, key) || !value) return 0;
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    return cJSON_AddStringToObject(o, key, value) ? 0 : -1;
}

/* work_dir/leaf into buf, or NULL without a work_dir. */
static const char *under(char *buf, size_t size, const char *work_dir, const char *leaf)
{
    if (!work_dir) return NULL;
    snprintf(buf, size, "%s/%s", work_dir, leaf);
    return buf;
}

/* Adds stage `name` running `kind` with the sub-spec `sub` (detached copy, owned by the new
 * envelope) to the plan. */
static int plan_add(pipeline_plan *p, const cJSON *job, const char *name, const char *kind,
                    cJSON *sub, adapt_error *err)
{
    pipeline_stage *st = &p->stage[p->n];
    cJSON *env = cJSON_CreateObject();
    int bad = !env;
    const char *jname = str_of(job, "name");
    char full[160];
    snprintf(full, sizeof full, "%s/%s", jname ? jname : "pipeline", name);
    bad = bad || !cJSON_AddStringToObject(env, "name", full) ||
          !cJSON_AddStringToObject(env, "kind", kind);
    static const char *const copied[] = { "ranks", "backend", "launcher" };
    for (size_t i = 0; !bad && i < sizeof copied / sizeof copied[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(job, copied[i]);
        cJSON *c = v ? cJSON_Duplicate(v, 1) : NULL;
        if (v && (!c || !cJSON_AddItemToObject(env, copied[i], c))) bad = 1;
    }
    const char *out = str_of(sub, "output_dir");
    if (!bad && !cJSON_AddItemToObject(env, kind, sub)) bad = 1;
    else sub = NULL;
    if (!bad) {
        snprintf(st->name, sizeof st->name, "%s", name);
        snprintf(st->kind, sizeof st->kind, "%s", kind);
        st->spec_json = cJSON_PrintUnformatted(env);
        st->output_dir = strdup(out ? out : "");
        bad = !st->spec_json || !st->output_dir;
    }
    cJSON_Delete(sub);
    cJSON_Delete(env);
    if (bad) return adapt_fail(err, ADAPT_ENOMEM, "pipeline: out of memory");
    p->n++;
    return ADAPT_OK;
}

/* A detached copy of pipeline[key] (an object), or NULL with err naming it. */
static cJSON *sub_spec(const cJSON *pl, const char *key, adapt_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(pl, key);
    if (!cJSON_IsObject(v)) {
        adapt_fail(err, ADAPT_EINVAL, "pipeline.%s: required (an object)", key);
        return NULL;
    }
    cJSON *c = cJSON_Duplicate(v, 1);
    if (!c) adapt_fail(err, ADAPT_ENOMEM, "pipeline: out of memory");
    return c;
}

static int need_path(const cJSON *o, const char *field, const char *key, adapt_error *err)
{
    if (str_of(o, key)) return ADAPT_OK;
    return adapt_fail(err, ADAPT_EINVAL, "%s.%s: required (no pipeline.work_dir to put it under)",
                      field, key);
}

static int plan_build(const cJSON *job, pipeline_plan *p, adapt_error *err)
{
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(job, "pipeline");
    if (!cJSON_IsObject(pl)) return adapt_fail(err, ADAPT_EINVAL, "pipeline: required (an object)");
    const char *wd = str_of(pl, "work_dir");
    char b[4096];
    int rc;
    cJSON *syn = sub_spec(pl, "synthesize", err);
    if (!syn) return err ? err->code : ADAPT_EINVAL;
    if (fill(syn, "output_dir", under(b, sizeof b, wd, "synthesized"))) goto oom_syn;
    if ((rc = need_path(syn, "pipeline.synthesize", "output_dir", err)) ||
        (rc = need_path(syn, "pipeline.synthesize", "corpus", err))) {
        cJSON_Delete(syn);
        return rc;
    }
    char corpus[4096], synthesized[4096], filtered[4096], model[4096];
    snprintf(corpus, sizeof corpus, "%s", str_of(syn, "corpus"));
    snprintf(synthesized, sizeof synthesized, "%s", str_of(syn, "output_dir"));
    if ((rc = plan_add(p, job, "synthesize", "synthesize", syn, err))) return rc;

    cJSON *fil = sub_spec(pl, "filter", err);
    if (!fil) return err ? err->code : ADAPT_EINVAL;
    if (fill(fil, "corpus", corpus) || fill(fil, "synthesized", synthesized) ||
        fill(fil, "output_dir", under(b, sizeof b, wd, "filtered"))) {
        cJSON_Delete(fil);
        return adapt_fail(err, ADAPT_ENOMEM, "pipeline: out of memory");
    }
    if ((rc = need_path(fil, "pipeline.filter", "output_dir", err))) { cJSON_Delete(fil); return rc; }
    snprintf(filtered, sizeof filtered, "%s", str_of(fil, "output_dir"));
    if ((rc = plan_add(p, job, "filter", "filter", fil, err))) return rc;

    cJSON *tr = sub_spec(pl, "train", err);
    if (!tr) return err ? err->code : ADAPT_EINVAL;
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(tr, "overlays");
    int bad = fill(tr, "corpus", corpus) || fill(tr, "output_dir", under(b, sizeof b, wd, "model"));
    if (!bad && (!cJSON_IsArray(ov) || cJSON_GetArraySize(ov) == 0)) {
        /* the base corpus + the filtered overlay: the paper's single-stage training */
        cJSON_DeleteItemFromObjectCaseSensitive(tr, "overlays");
        const char *one[] = { filtered };
        cJSON *arr = cJSON_CreateStringArray(one, 1);
        bad = !arr || !cJSON_AddItemToObject(tr, "overlays", arr);
    }
    if (bad) {
        cJSON_Delete(tr);
        return adapt_fail(err, ADAPT_ENOMEM, "pipeline: out of memory");
    }
    const char *mode = str_of(tr, "mode");
    if (mode && strcmp(mode, "single_stage")) {
        /* the message is made before the delete: mode points into tr */
        adapt_fail(err, ADAPT_EINVAL, "pipeline.train.mode: \"%s\"; the pipeline trains "
                   "single_stage (the base corpus + the filtered overlay)", mode);
        cJSON_Delete(tr);
        return ADAPT_EINVAL;
    }
    if ((rc = need_path(tr, "pipeline.train", "output_dir", err)) ||
        (rc = need_path(tr, "pipeline.train", "model_path", err))) {
        cJSON_Delete(tr);
        return rc;
    }
    snprintf(model, sizeof model, "%s", str_of(tr, "output_dir"));
    if ((rc = plan_add(p, job, "train", "train", tr, err))) return rc;

    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(pl, "evaluate");
    int n_ev = cJSON_IsArray(evs) ? cJSON_GetArraySize(evs) : 0;
    if (evs && !cJSON_IsArray(evs) && !cJSON_IsNull(evs))
        return adapt_fail(err, ADAPT_EINVAL, "pipeline.evaluate: expected an array");
    if (n_ev > PIPELINE_MAX_EVALUATE)
        return adapt_fail(err, ADAPT_EINVAL, "pipeline.evaluate: %d benchmarks; at most %d", n_ev,
                          PIPELINE_MAX_EVALUATE);
    for (int i = 0; i < n_ev; i++) {
        const cJSON *e = cJSON_GetArrayItem(evs, i);
        char field[64], leaf[32];
        snprintf(field, sizeof field, "pipeline.evaluate[%d]", i);
        snprintf(leaf, sizeof leaf, "eval-%d", i);
        if (!cJSON_IsObject(e))
            return adapt_fail(err, ADAPT_EINVAL, "%s: expected an object", field);
        cJSON *ev = cJSON_Duplicate(e, 1);
        if (!ev || fill(ev, "model_path", model) ||
            fill(ev, "output_dir", under(b, sizeof b, wd, leaf))) {
            cJSON_Delete(ev);
            return adapt_fail(err, ADAPT_ENOMEM, "pipeline: out of memory");
        }
        if ((rc = need_path(ev, field, "output_dir", err))) { cJSON_Delete(ev); return rc; }
        char name[32];
        snprintf(name, sizeof name, "evaluate-%d", i);
        if ((rc = plan_add(p, job, name, "evaluate", ev, err))) return rc;
    }
    return ADAPT_OK;
oom_syn:
    cJSON_Delete(syn);
    return adapt_fail(err, ADAPT_ENOMEM, "pipeline: out of memory");
}

int pipeline_plan_make(const char *spec_json, pipeline_plan *out, adapt_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *job = cJSON_Parse(spec_json ? spec_json : "");
    if (!cJSON_IsObject(job)) {
        cJSON_Delete(job);
        return adapt_fail(err, ADAPT_EINVAL, "pipeline job: its stored spec is not a JSON object");
    }
    int rc = plan_build(job, out, err);
    cJSON_Delete(job);
    return rc;
}

/* ---- the stages table ---------------------------------------------------------------------- */

static int db_fail(sqlite3 *db, adapt_error *err, const char *what)
{
    return adapt_fail(err, ADAPT_EIO, "pipeline stages: %s: %s", what, sqlite3_errmsg(db));
}

/* Runs one statement with text/int bindings given as a format of 't' (text) and 'i' (int64). */
static int exec_bound(sqlite3 *db, const char *sql, const char *types, const void *const *vals,
                      adapt_error *err, const char *what)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) return db_fail(db, err, what);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't') sqlite3_bind_text(s, i + 1, vals[i], -1, SQLITE_STATIC);
        else sqlite3_bind_int64(s, i + 1, *(const int64_t *)vals[i]);
    }
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? ADAPT_OK : db_fail(db, err, what);
}

int pipeline_stage_begin(job_store_t *js, const char *job_id, uint32_t index, const char *name,
                         uint32_t attempt, adapt_error *err)
{
    int64_t idx = index, at = attempt, now = wall_ms();
    const void *vals[] = { job_id, &idx, name, &at, &now };
    return exec_bound(job_store_sqlite(js),
                      "INSERT INTO stages(job_id, stage, name, state, attempt, attempts, started_ms) "
                      "VALUES(?1, ?2, ?3, 'running', ?4, 1, ?5) ON CONFLICT(job_id, stage) DO UPDATE "
                      "SET state = 'running', attempt = ?4, attempts = attempts + 1, name = ?3 "
                      "WHERE state != 'done'", "titii", vals, err, "starting a stage");
}

int pipeline_stage_finish(job_store_t *js, const char *job_id, uint32_t attempt, adapt_error *err)
{
    int64_t at = attempt, now = wall_ms();
    const void *vals[] = { job_id, &at, &now };
    return exec_bound(job_store_sqlite(js),
                      "UPDATE stages SET state = 'done', finished_ms = ?3 WHERE job_id = ?1 AND "
                      "attempt = ?2 AND state = 'running'", "tii", vals, err, "finishing a stage");
}

int pipeline_next_stage(job_store_t *js, const char *job_id, uint32_t n, uint32_t *next,
                        adapt_error *err)
{
    sqlite3 *db = job_store_sqlite(js);
    sqlite3_stmt *s;
    *next = n;
    if (sqlite3_prepare_v2(db, "SELECT stage FROM stages WHERE job_id = ?1 AND state = 'done' "
                           "ORDER BY stage", -1, &s, NULL) != SQLITE_OK)
        return db_fail(db, err, "reading the stages");
    sqlite3_bind_text(s, 1, job_id, -1, SQLITE_STATIC);
    uint32_t expect = 0;
    int rc;
    /* the first gap in the done stages is the next one to run */
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && (uint32_t)sqlite3_column_int64(s, 0) == expect)
        expect++;
    int bad = rc != SQLITE_ROW && rc != SQLITE_DONE;
    sqlite3_finalize(s);
    if (bad) return db_fail(db, err, "reading the stages");
    *next = expect < n ? expect : n;
    return ADAPT_OK;
}

int pipeline_stages_get(job_store_t *js, const char *job_id, pipeline_stage_row *rows, size_t cap,
                        size_t *n, adapt_error *err)
{
    sqlite3 *db = job_store_sqlite(js);
    sqlite3_stmt *s;
    *n = 0;
    if (sqlite3_prepare_v2(db, "SELECT stage, name, state, attempt, attempts, started_ms, "
                           "finished_ms FROM stages WHERE job_id = ?1 ORDER BY stage", -1, &s,
                           NULL) != SQLITE_OK)
        return db_fail(db, err, "reading the stages");
    sqlite3_bind_text(s, 1, job_id, -1, SQLITE_STATIC);
    int rc = SQLITE_DONE;
    while (*n < cap && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        pipeline_stage_row *r = &rows[(*n)++];
        r->index = (uint32_t)sqlite3_column_int64(s, 0);
        snprintf(r->name, sizeof r->name, "%s", (const char *)sqlite3_column_text(s, 1));
        snprintf(r->state, sizeof r->state, "%s", (const char *)sqlite3_column_text(s, 2));
        r->attempt = (uint32_t)sqlite3_column_int64(s, 3);
        r->attempts = (uint32_t)sqlite3_column_int64(s, 4);
        r->started_ms = sqlite3_column_int64(s, 5);
        r->finished_ms = sqlite3_column_int64(s, 6);
    }
    int bad = *n < cap && rc != SQLITE_DONE;
    sqlite3_finalize(s);
    return bad ? db_fail(db, err, "reading the stages") : ADAPT_OK;
}
