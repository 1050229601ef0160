/* api: routes of API v1 over the job store; see api.h.
 *
 * Design: handlers are synchronous (SQLite answers in microseconds from the WAL), take the
 * request and fill the response; the body is always malloc'd text handed to the server, which
 * frees it after copying it onto the socket. */
#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "job_spec.h"
#include "status_page.h"
#include "pipeline.h"
#include "workqueue.h"

enum { API_PAGE_DEFAULT = 20, API_PAGE_MAX = 100, API_POINTS_DEFAULT = 1000,
       API_POINTS_MAX = 10000, API_METRICS_JOBS = 256,
       API_LOG_MAX = 1 << 20,      /* bytes of log in one response; X-Log-Offset continues */
       API_TAIL_MAX = 100000 };

struct api {
    api_config cfg;
    char       data_root[PATH_MAX];
    char       token[256];
    char       version[64];
};

/* ---- answers ------------------------------------------------------------------------------ */

static void reply_json(http_response *res, int status, cJSON *doc)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!res->body) {
        res->status = 500;
        res->static_body = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        res->body_len = strlen(res->static_body);
        return;
    }
    res->body_len = strlen(res->body);
}

static void reply_error(http_response *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_error(http_response *res, int status, const char *code, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *doc = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(doc, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    reply_json(res, status, doc);
}

static void reply_store_error(http_response *res, const adapt_error *err)
{
    if (err->code == ADAPT_ENOTFOUND) reply_error(res, 404, "not_found", "%s", err->message);
    else reply_error(res, 500, "internal", "%s", err->message);
}

static void reply_static(http_response *res, int status, const char *body)
{
    res->status = status;
    res->static_body = body;
    res->body_len = strlen(body);
}

/* ---- job documents ------------------------------------------------------------------------ */

/* cJSON prints every number above INT_MAX (all the *_ms times) or with a fraction through
 * sprintf("%1.15g"), an sscanf back and often a second sprintf: most of the CPU a GET of a job
 * costs. Integers go in as digits written here instead. */
static void add_int(cJSON *o, const char *name, long long v)
{
    char buf[24], *p = buf + sizeof buf;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    *--p = '\0';
    do { *--p = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) *--p = '-';
    cJSON_AddRawToObject(o, name, p);
}

static cJSON *progress_json(const job_store_progress *p)
{
    cJSON *o = cJSON_CreateObject();
    add_int(o, "step", (long long)p->step);
    add_int(o, "total_steps", (long long)p->total_steps);
    add_int(o, "epoch", p->epoch);
    add_int(o, "samples", (long long)p->samples);
    add_int(o, "tokens", (long long)p->tokens);
    cJSON_AddNumberToObject(o, "loss", p->loss);
    cJSON_AddNumberToObject(o, "lr", p->lr);
    cJSON_AddNumberToObject(o, "grad_norm", p->grad_norm);
    cJSON_AddNumberToObject(o, "step_seconds", p->step_seconds);
    cJSON_AddNumberToObject(o, "tokens_per_second", p->tokens_per_second);
    add_int(o, "unix_time_ms", p->unix_time_ms);
    return o;
}

static cJSON *job_json(const job_store_record *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "kind", r->kind);
    cJSON_AddStringToObject(o, "state", job_store_state_name(r->state));
    add_int(o, "ranks", r->ranks);
    add_int(o, "attempt", r->attempt);
    add_int(o, "max_restarts", r->max_restarts);
    add_int(o, "created_ms", r->created_ms);
    add_int(o, "started_ms", r->started_ms);
    add_int(o, "finished_ms", r->finished_ms);
    add_int(o, "updated_ms", r->updated_ms);
    if (r->has_progress) {
        cJSON *p = progress_json(&r->progress);
        const job_store_progress *g = &r->progress;
        if (g->total_steps > g->step && g->step_seconds > 0)
            cJSON_AddNumberToObject(p, "eta_seconds", (double)(g->total_steps - g->step) * g->step_seconds);
        cJSON_AddItemToObject(o, "progress", p);
    } else {
        cJSON_AddNullToObject(o, "progress");
    }
    cJSON_AddStringToObject(o, "last_checkpoint", r->last_checkpoint);
    cJSON_AddStringToObject(o, "error", r->error);
    /* The stored spec is text this daemon printed with cJSON after validation: inserted as is,
     * without a parse and re-print on every GET. */
    cJSON_AddRawToObject(o, "spec", r->spec_json && r->spec_json[0] ? r->spec_json : "{}");
    return o;
}

/* ---- routes ------------------------------------------------------------------------------- */

static int authorized(const api_t *api, const http_request *req)
{
    if (!api->token[0]) return 1;
    const char *h = http_request_header(req, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) return 0;
    const char *given = h + 7;
    size_t n = strlen(api->token);
    if (strlen(given) != n) return 0;
    unsigned char diff = 0;   /* constant time: no early exit on the first wrong byte */
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(given[i] ^ api->token[i]);
    return diff == 0;
}

static void jobs_create(api_t *api, const http_request *req, http_response *res)
{
    const char *ct = http_request_header(req, "Content-Type");
    if (ct && strncmp(ct, "application/json", 16) != 0) {
        reply_error(res, 415, "unsupported_media_type", "send the job spec as application/json");
        return;
    }
    job_spec_policy pol = { .data_root = api->data_root, .max_ranks = api->cfg.slots,
                            .slurm = scheduler_slurm_enabled(api->cfg.sched) };
    Adaptd__JobSpec *spec;
    char *normalized, field[JOB_SPEC_FIELD_MAX];
    adapt_error err = {0};
    if (job_spec_parse(req->body, req->body_len, &pol, &spec, &normalized, field, &err) != ADAPT_OK) {
        if (err.code == ADAPT_ENOMEM) reply_error(res, 500, "internal", "%s", err.message);
        else reply_error(res, 400, "invalid_argument", "%s", err.message);
        return;
    }
    job_store_new in = { .name = spec->name, .kind = spec->kind, .ranks = spec->ranks,
                         .max_restarts = spec->max_restarts, .spec_json = normalized };
    char id[JOB_STORE_ID_LEN + 1];
    job_store_record r;
    int rc = job_store_create(api->cfg.store, &in, id, &err);
    adaptd__job_spec__free_unpacked(spec, NULL);
    free(normalized);
    if (rc == ADAPT_OK) rc = job_store_get(api->cfg.store, id, &r, &err);
    if (rc != ADAPT_OK) { reply_error(res, 500, "internal", "%s", err.message); return; }
    snprintf(res->extra_headers, sizeof res->extra_headers, "Location: /v1/jobs/%s\r\n", id);
    reply_json(res, 201, job_json(&r));
    job_store_record_clear(&r);
    if (api->cfg.sched) scheduler_kick(api->cfg.sched);
}

/* Reads an optional non-negative integer query parameter; -1 and a 400 when malformed. */
static int query_number(const http_request *req, const char *name, long long dflt, long long max,
                        long long *out, http_response *res)
{
    char buf[32], *end;
    int got = http_query_get(req->query, name, buf, sizeof buf);
    *out = dflt;
    if (got == 0) return 0;
    long long v = got > 0 && buf[0] >= '0' && buf[0] <= '9' ? strtoll(buf, &end, 10) : -1;
    if (v < 0 || *end != '\0' || v > max) {
        reply_error(res, 400, "invalid_argument", "%s: expected an integer in [0, %lld]", name, max);
        return -1;
    }
    *out = v;
    return 0;
}

static void jobs_list(api_t *api, const http_request *req, http_response *res)
{
    char sbuf[32];
    int state = -1;
    int got = http_query_get(req->query, "state", sbuf, sizeof sbuf);
    if (got != 0 && (got < 0 || (state = job_store_state_parse(sbuf)) < 0)) {
        reply_error(res, 400, "invalid_argument", "state: expected one of queued, starting, running, "
                    "succeeded, failed, cancelled, retrying, preempted");
        return;
    }
    long long limit, after;
    if (query_number(req, "limit", API_PAGE_DEFAULT, API_PAGE_MAX, &limit, res) ||
        query_number(req, "page_token", 0, LLONG_MAX, &after, res))
        return;
    if (limit == 0) limit = API_PAGE_DEFAULT;
    job_store_record *rows = calloc((size_t)limit + 1, sizeof *rows);
    size_t n = 0;
    adapt_error err = {0};
    if (!rows || job_store_list(api->cfg.store, state, after, rows, (size_t)limit + 1, &n, &err) != ADAPT_OK) {
        free(rows);
        reply_error(res, 500, "internal", "%s", rows ? err.message : "out of memory");
        return;
    }
    /* one row more than the page tells whether a next page exists without a count query */
    size_t shown = n > (size_t)limit ? (size_t)limit : n;
    cJSON *doc = cJSON_CreateObject();
    cJSON *jobs = cJSON_AddArrayToObject(doc, "jobs");
    for (size_t i = 0; i < shown; i++) cJSON_AddItemToArray(jobs, job_json(&rows[i]));
    if (n > shown) {
        char tok[32];
        snprintf(tok, sizeof tok, "%lld", (long long)rows[shown - 1].seq);
        cJSON_AddStringToObject(doc, "next_page_token", tok);
    } else {
        cJSON_AddNullToObject(doc, "next_page_token");
    }
    for (size_t i = 0; i < n; i++) job_store_record_clear(&rows[i]);
    free(rows);
    reply_json(res, 200, doc);
}

static cJSON *shards_json(const workqueue_counts *wc)
{
    cJSON *sh = cJSON_CreateObject();
    add_int(sh, "total", (long long)wc->total);
    add_int(sh, "pending", (long long)wc->pending);
    add_int(sh, "leased", (long long)wc->leased);
    add_int(sh, "done", (long long)wc->done);
    add_int(sh, "records", (long long)wc->records);
    return sh;
}

/* Adds "stage" {name, index, count} and "stages" [{index, name, kind, state, attempt, attempts,
 * started_ms, finished_ms, shards}] to a pipeline job's document; returns the current stage. */
static uint32_t pipeline_json(api_t *api, const job_store_record *r, workqueue_t *wq, cJSON *doc)
{
    pipeline_plan plan;
    pipeline_stage_row rows[PIPELINE_MAX_STAGES];
    size_t n = 0;
    uint32_t next = 0;
    adapt_error err = {0};
    if (pipeline_plan_make(r->spec_json, &plan, &err) != ADAPT_OK ||
        pipeline_stages_get(api->cfg.store, r->id, rows, PIPELINE_MAX_STAGES, &n, &err) != ADAPT_OK ||
        pipeline_next_stage(api->cfg.store, r->id, (uint32_t)plan.n, &next, &err) != ADAPT_OK) {
        pipeline_plan_free(&plan);
        return 0;
    }
    /* a finished job shows its last stage; a running one the stage it is on */
    uint32_t cur = next < plan.n ? next : (uint32_t)(plan.n ? plan.n - 1 : 0);
    cJSON *st = cJSON_AddObjectToObject(doc, "stage");
    cJSON_AddStringToObject(st, "name", plan.n ? plan.stage[cur].name : "");
    add_int(st, "index", cur);
    add_int(st, "count", (long long)plan.n);
    cJSON *arr = cJSON_AddArrayToObject(doc, "stages");
    for (size_t i = 0; i < plan.n; i++) {
        const pipeline_stage_row *row = NULL;
        for (size_t k = 0; k < n; k++) if (rows[k].index == i) row = &rows[k];
        cJSON *o = cJSON_CreateObject();
        add_int(o, "index", (long long)i);
        cJSON_AddStringToObject(o, "name", plan.stage[i].name);
        cJSON_AddStringToObject(o, "kind", plan.stage[i].kind);
        cJSON_AddStringToObject(o, "state", row ? row->state : "pending");
        add_int(o, "attempt", row ? row->attempt : 0);
        add_int(o, "attempts", row ? row->attempts : 0);
        add_int(o, "started_ms", row ? row->started_ms : 0);
        add_int(o, "finished_ms", row ? row->finished_ms : 0);
        cJSON_AddStringToObject(o, "output_dir", plan.stage[i].output_dir);
        workqueue_counts wc;
        if (wq && workqueue_counts_get(wq, r->id, (uint32_t)i, &wc, NULL) == ADAPT_OK && wc.total)
            cJSON_AddItemToObject(o, "shards", shards_json(&wc));
        cJSON_AddItemToArray(arr, o);
    }
    pipeline_plan_free(&plan);
    return cur;
}

static void job_reply(api_t *api, const char *id, int status, http_response *res)
{
    job_store_record r;
    adapt_error err = {0};
    if (job_store_get(api->cfg.store, id, &r, &err) != ADAPT_OK) { reply_store_error(res, &err); return; }
    cJSON *doc = job_json(&r);
    workqueue_t *wq = scheduler_workqueue(api->cfg.sched);
    /* a pipeline's stages (issue 8 item 6): "stage" is the one running or next, "stages" each
     * one's state, attempts and work-queue units */
    uint32_t current = 0;
    if (strcmp(r.kind, "pipeline") == 0) current = pipeline_json(api, &r, wq, doc);
    /* the work queue's units (issue 8 item 5): the job's progress over all its ranks */
    workqueue_counts wc;
    if (wq && strcmp(r.kind, "train") != 0 &&   /* train jobs take no units: no query per GET */
        workqueue_counts_get(wq, id, current, &wc, NULL) == ADAPT_OK && wc.total)
        cJSON_AddItemToObject(doc, "shards", shards_json(&wc));
    reply_json(res, status, doc);
    job_store_record_clear(&r);
}

static void job_get(api_t *api, const char *id, http_response *res) { job_reply(api, id, 200, res); }

/* 200 with the cancelled job, or 202 while its processes are being stopped (the job reads
 * cancelled once they have exited). */
static void job_cancel(api_t *api, const char *id, http_response *res)
{
    adapt_error err = {0};
    if (api->cfg.sched) {
        int pending = 0;
        int rc = scheduler_cancel(api->cfg.sched, id, &pending, &err);
        if (rc == ADAPT_EINVAL) reply_error(res, 409, "conflict", "%s", err.message);
        else if (rc != ADAPT_OK) reply_store_error(res, &err);
        else job_reply(api, id, pending ? 202 : 200, res);
        return;
    }
    job_store_record r;
    if (job_store_get(api->cfg.store, id, &r, &err) != ADAPT_OK) { reply_store_error(res, &err); return; }
    int state = r.state;
    job_store_record_clear(&r);
    if (job_store_state_is_terminal(state)) {
        reply_error(res, 409, "conflict", "job %s is already %s", id, job_store_state_name(state));
        return;
    }
    if (job_store_transition(api->cfg.store, id, JOB_STORE_CANCELLED, "cancelled by request", &err) != ADAPT_OK) {
        if (err.code == ADAPT_EINVAL) reply_error(res, 409, "conflict", "%s", err.message);
        else reply_store_error(res, &err);
        return;
    }
    job_get(api, id, res);
}

static void job_metrics(api_t *api, const char *id, const http_request *req, http_response *res)
{
    long long since, limit;
    char probe[8];
    if (query_number(req, "since", 0, LLONG_MAX, &since, res) ||
        query_number(req, "limit", API_POINTS_DEFAULT, API_POINTS_MAX, &limit, res))
        return;
    if (http_query_get(req->query, "since", probe, sizeof probe) == 0) since = -1;
    if (limit == 0) limit = API_POINTS_DEFAULT;
    adapt_error err = {0};
    job_store_record r;
    if (job_store_get(api->cfg.store, id, &r, &err) != ADAPT_OK) { reply_store_error(res, &err); return; }
    job_store_record_clear(&r);
    job_store_progress *pts = calloc((size_t)limit, sizeof *pts);
    size_t n = 0;
    if (!pts || job_store_metrics(api->cfg.store, id, since, pts, (size_t)limit, &n, &err) != ADAPT_OK) {
        free(pts);
        reply_error(res, 500, "internal", "%s", pts ? err.message : "out of memory");
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "job_id", id);
    cJSON *arr = cJSON_AddArrayToObject(doc, "points");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, progress_json(&pts[i]));
    if (n == (size_t)limit) cJSON_AddNumberToObject(doc, "next_since", (double)pts[n - 1].step);
    else cJSON_AddNullToObject(doc, "next_since");
    free(pts);
    reply_json(res, 200, doc);
}

/* POST /v1/jobs/{id}/checkpoint: Control CONTROL_CHECKPOINT to the job's rank-0 worker. */
static void job_checkpoint(api_t *api, const char *id, http_response *res)
{
    adapt_error err = {0};
    if (!api->cfg.sched) {
        reply_error(res, 409, "conflict", "this adaptd runs no jobs, so none can checkpoint");
        return;
    }
    int rc = scheduler_checkpoint(api->cfg.sched, id, &err);
    if (rc == ADAPT_EINVAL) reply_error(res, 409, "conflict", "%s", err.message);
    else if (rc != ADAPT_OK) reply_store_error(res, &err);
    else job_reply(api, id, 202, res);
}

/* The start of the last `lines` lines of buf[0..len) (a final newline ends the last line, it
 * does not start an empty one). When buf holds fewer lines, 0 — or, when buf is only the end
 * of a longer file, the start of its first whole line. */
static size_t tail_start(const char *buf, size_t len, long long lines, int partial)
{
    if (lines == 0) return len;
    size_t i = len;
    if (i > 0 && buf[i - 1] == '\n') i--;
    long long seen = 0;
    while (i > 0) {
        if (buf[i - 1] == '\n' && ++seen == lines) return i;
        i--;
    }
    if (!partial) return 0;
    const char *nl = memchr(buf, '\n', len);
    return nl ? (size_t)(nl - buf) + 1 : 0;
}

/* Which log file: rank=R (0 <= R < ranks; the worker's rank-R.log) or rank=launcher (the
 * launcher's own stdout and stderr, launcher.log), of attempt=A (default the latest). */
static int log_path(api_t *api, const job_store_record *r, const http_request *req,
                    http_response *res, char *path, size_t size)
{
    char rank[32];
    int got = http_query_get(req->query, "rank", rank, sizeof rank);
    if (got < 0) { reply_error(res, 400, "invalid_argument", "rank: expected an integer or \"launcher\""); return -1; }
    if (got == 0) snprintf(rank, sizeof rank, "0");
    int launcher = strcmp(rank, "launcher") == 0;
    long long rk = -1, attempt;
    if (!launcher) {
        char *end;
        rk = rank[0] >= '0' && rank[0] <= '9' && strlen(rank) <= 9 ? strtoll(rank, &end, 10) : -1;
        if (rk < 0 || *end) {
            reply_error(res, 400, "invalid_argument", "rank: expected an integer or \"launcher\"");
            return -1;
        }
        if (rk >= r->ranks) {
            reply_error(res, 404, "not_found", "job %s has ranks 0..%u; no rank %lld", r->id,
                        r->ranks - 1, rk);
            return -1;
        }
    }
    if (query_number(req, "attempt", r->attempt, UINT32_MAX, &attempt, res)) return -1;
    if (r->attempt == 0) {
        reply_error(res, 404, "not_found", "job %s has not started: no logs yet", r->id);
        return -1;
    }
    if (attempt == 0 || attempt > r->attempt) {
        reply_error(res, 404, "not_found", "job %s has attempts 1..%u; no attempt %lld", r->id,
                    r->attempt, attempt);
        return -1;
    }
    char dir[PATH_MAX];
    job_store_job_dir(api->cfg.store, r->id, dir, sizeof dir);
    int n = launcher ? snprintf(path, size, "%s/logs/attempt-%lld/launcher.log", dir, attempt)
                     : snprintf(path, size, "%s/logs/attempt-%lld/rank-%lld.log", dir, attempt, rk);
    if (n < 0 || (size_t)n >= size) { reply_error(res, 500, "internal", "log path too long"); return -1; }
    return 0;
}

/* GET /v1/jobs/{id}/logs?rank=R|launcher&attempt=A&tail=N|offset=B: text/plain, at most
 * API_LOG_MAX bytes; X-Log-Offset is the byte offset just after what was sent, so a follower
 * asks again with offset=that. A log its process has not written yet reads as empty. */
static void job_logs(api_t *api, const char *id, const http_request *req, http_response *res)
{
    job_store_record r;
    adapt_error err = {0};
    if (job_store_get(api->cfg.store, id, &r, &err) != ADAPT_OK) { reply_store_error(res, &err); return; }
    char path[PATH_MAX + 64], probe[8];
    long long tail, offset;
    int bad = log_path(api, &r, req, res, path, sizeof path) ||
              query_number(req, "tail", 0, API_TAIL_MAX, &tail, res) ||
              query_number(req, "offset", 0, LLONG_MAX, &offset, res);
    job_store_record_clear(&r);
    if (bad) return;
    int has_tail = http_query_get(req->query, "tail", probe, sizeof probe) != 0;
    if (has_tail && http_query_get(req->query, "offset", probe, sizeof probe) != 0) {
        reply_error(res, 400, "invalid_argument", "tail and offset: give one or the other");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 && errno != ENOENT) { reply_error(res, 500, "internal", "%s: %s", path, strerror(errno)); return; }
    long long size = 0;
    if (fd >= 0 && fstat(fd, &st) == 0) size = st.st_size;
    if (offset > size) {
        if (fd >= 0) close(fd);
        reply_error(res, 400, "invalid_argument", "offset %lld is past the end of the log (%lld bytes)",
                    offset, size);
        return;
    }
    long long from = offset, want = size - offset;
    if (has_tail) {
        from = size > API_LOG_MAX ? size - API_LOG_MAX : 0;
        want = size - from;
    } else if (want > API_LOG_MAX) {
        want = API_LOG_MAX;
    }
    char *buf = malloc((size_t)want + 1);
    ssize_t got = 0;
    if (!buf) { if (fd >= 0) close(fd); reply_error(res, 500, "internal", "out of memory"); return; }
    if (fd >= 0 && want > 0) got = pread(fd, buf, (size_t)want, from);
    if (fd >= 0) close(fd);
    if (got < 0) { free(buf); reply_error(res, 500, "internal", "reading %s: %s", path, strerror(errno)); return; }
    size_t start = has_tail ? tail_start(buf, (size_t)got, tail, from > 0) : 0;
    size_t len = (size_t)got - start;
    memmove(buf, buf + start, len);
    buf[len] = '\0';
    res->status = 200;
    res->content_type = "text/plain; charset=utf-8";
    if (len) { res->body = buf; res->body_len = len; }
    else { free(buf); res->static_body = ""; res->body_len = 0; }
    snprintf(res->extra_headers, sizeof res->extra_headers, "X-Log-Offset: %lld\r\n",
             from + (long long)got);
}

/* ---- Prometheus text ---------------------------------------------------------------------- */

typedef struct text_buf { char *p; size_t len, cap; int failed; } text_buf;

static void text_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text_buf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->failed; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = 1; return; }
        if (b->p && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->failed = 1; return; }
        b->p = q;
        b->cap = cap;
    }
}

static void metrics_jobs(api_t *api, text_buf *b)
{
    uint64_t counts[JOB_STORE_STATE_COUNT];
    adapt_error err = {0};
    if (job_store_count_by_state(api->cfg.store, counts, &err) == ADAPT_OK) {
        text_printf(b, "# HELP adaptd_jobs Jobs by state.\n# TYPE adaptd_jobs gauge\n");
        for (int s = 0; s < JOB_STORE_STATE_COUNT; s++)
            text_printf(b, "adaptd_jobs{state=\"%s\"} %llu\n", job_store_state_name(s),
                        (unsigned long long)counts[s]);
    }
    /* malloc, not calloc: job_store_list fills every row it returns, and clearing all 256
     * records (~0.5 MB) was 90% of a scrape's CPU */
    job_store_record *rows = malloc(API_METRICS_JOBS * sizeof *rows);
    size_t n = 0;
    if (!rows || job_store_list(api->cfg.store, JOB_STORE_RUNNING, 0, rows, API_METRICS_JOBS, &n, &err)) {
        free(rows);
        return;
    }
    static const struct { const char *name, *help; } series[] = {
        { "adaptd_job_step", "Latest optimizer step of a running job." },
        { "adaptd_job_loss", "Latest training loss of a running job." },
        { "adaptd_job_tokens_per_second", "Latest throughput of a running job." },
    };
    for (int k = 0; k < 3; k++) {
        text_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", series[k].name, series[k].help, series[k].name);
        for (size_t i = 0; i < n; i++) {
            const job_store_progress *p = &rows[i].progress;
            double v = k == 0 ? (double)p->step : k == 1 ? p->loss : p->tokens_per_second;
            if (rows[i].has_progress) text_printf(b, "%s{job=\"%s\"} %.17g\n", series[k].name, rows[i].id, v);
        }
    }
    for (size_t i = 0; i < n; i++) job_store_record_clear(&rows[i]);
    free(rows);
}

static void metrics_page(api_t *api, http_response *res)
{
    text_buf b = {0};
    text_printf(&b, "# HELP adaptd_build_info Version of this adaptd.\n# TYPE adaptd_build_info gauge\n"
                    "adaptd_build_info{version=\"%s\"} 1\n", api->version);
    metrics_jobs(api, &b);
    if (api->cfg.sched)
        text_printf(&b, "# HELP adaptd_slots Ranks this adaptd may run at once (--slots).\n"
                        "# TYPE adaptd_slots gauge\nadaptd_slots %u\n"
                        "# HELP adaptd_slots_used Ranks held by jobs running or between attempts.\n"
                        "# TYPE adaptd_slots_used gauge\nadaptd_slots_used %u\n",
                    api->cfg.slots, scheduler_slots_used(api->cfg.sched));
    if (api->cfg.http) {
        text_printf(&b, "# HELP adaptd_http_requests_total HTTP responses by status code.\n"
                        "# TYPE adaptd_http_requests_total counter\n");
        for (int code = 100; code < 600; code++) {
            uint64_t c = http_server_responses(api->cfg.http, code);
            if (c) text_printf(&b, "adaptd_http_requests_total{code=\"%d\"} %llu\n", code,
                               (unsigned long long)c);
        }
    }
    if (b.failed) { free(b.p); reply_error(res, 500, "internal", "out of memory"); return; }
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    res->body = b.p;
    res->body_len = b.len;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static int is_job_id(const char *s, size_t n)
{
    if (n != JOB_STORE_ID_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static void method_not_allowed(http_response *res, const char *allow)
{
    snprintf(res->extra_headers, sizeof res->extra_headers, "Allow: %s\r\n", allow);
    reply_error(res, 405, "method_not_allowed", "use %s here", allow);
}

/* /v1/jobs/{id}[/metrics|/logs|/cancel|/checkpoint] */
static void route_job(api_t *api, const http_request *req, http_response *res, const char *rest)
{
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!is_job_id(rest, idlen)) { reply_error(res, 404, "not_found", "no such job"); return; }
    char id[JOB_STORE_ID_LEN + 1];
    memcpy(id, rest, idlen);
    id[idlen] = '\0';
    const char *sub = slash ? slash : "";
    int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    int post = strcmp(req->method, "POST") == 0;
    if (!*sub) { if (get) job_get(api, id, res); else method_not_allowed(res, "GET"); return; }
    if (strcmp(sub, "/metrics") == 0) {
        if (get) job_metrics(api, id, req, res); else method_not_allowed(res, "GET");
        return;
    }
    if (strcmp(sub, "/logs") == 0) {
        if (get) job_logs(api, id, req, res); else method_not_allowed(res, "GET");
        return;
    }
    if (strcmp(sub, "/cancel") == 0 || strcmp(sub, "/checkpoint") == 0) {
        if (!post) { method_not_allowed(res, "POST"); return; }
        if (!authorized(api, req)) {
            reply_error(res, 401, "unauthorized", "this endpoint needs Authorization: Bearer <token from --token-file>");
            return;
        }
        if (strcmp(sub, "/cancel") == 0) job_cancel(api, id, res);
        else job_checkpoint(api, id, res);
        return;
    }
    reply_error(res, 404, "not_found", "no route %s", req->path);
}

void api_handle(void *ctx, const http_request *req, http_response *res)
{
    api_t *api = ctx;
    const char *p = req->path;
    int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (strcmp(p, "/") == 0 || strcmp(p, "/index.html") == 0) {   /* the status page */
        if (get) status_page_serve(req, res); else method_not_allowed(res, "GET");
    } else if (strcmp(p, "/livez") == 0) {
        if (get) reply_static(res, 200, "{\"status\":\"ok\"}"); else method_not_allowed(res, "GET");
    } else if (strcmp(p, "/readyz") == 0) {
        if (!get) { method_not_allowed(res, "GET"); return; }
        adapt_error err = {0};
        if (job_store_ping(api->cfg.store, &err) == ADAPT_OK) reply_static(res, 200, "{\"status\":\"ready\"}");
        else reply_error(res, 503, "unavailable", "%s", err.message);
    } else if (strcmp(p, "/metrics") == 0) {
        if (get) metrics_page(api, res); else method_not_allowed(res, "GET");
    } else if (strcmp(p, "/v1/jobs") == 0) {
        if (get) jobs_list(api, req, res);
        else if (strcmp(req->method, "POST") != 0) method_not_allowed(res, "GET, POST");
        else if (!authorized(api, req))
            reply_error(res, 401, "unauthorized", "this endpoint needs Authorization: Bearer <token from --token-file>");
        else jobs_create(api, req, res);
    } else if (strncmp(p, "/v1/jobs/", 9) == 0) {
        route_job(api, req, res, p + 9);
    } else {
        reply_error(res, 404, "not_found", "no route %s", p);
    }
}

int api_init(api_t **out, const api_config *cfg, adapt_error *err)
{
    api_t *api = calloc(1, sizeof *api);
    if (!api) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    api->cfg = *cfg;
    if (!realpath(cfg->data_root, api->data_root)) {
        free(api);
        return adapt_fail(err, ADAPT_EINVAL, "--data-root %s: not an existing folder", cfg->data_root);
    }
    if (cfg->token && snprintf(api->token, sizeof api->token, "%s", cfg->token) >= (int)sizeof api->token) {
        free(api);
        return adapt_fail(err, ADAPT_EINVAL, "token longer than %zu bytes", sizeof api->token - 1);
    }
    snprintf(api->version, sizeof api->version, "%s", cfg->version ? cfg->version : ADAPT_VERSION);
    api->cfg.data_root = api->data_root;
    *out = api;
    return ADAPT_OK;
}

void api_close(api_t *api) { free(api); }
