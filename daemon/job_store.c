/* job_store: jobs, attempts and per-step metrics in SQLite (WAL); see job_store.h.
 *
 * Design: every statement is prepared once at open and kept in the handle; a state change reads
 * the current state and writes the new one inside one IMMEDIATE transaction, so two writers (or
 * a crash between them) can never leave a transition half made. */
#include "job_store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <sqlite3.h>

static const char *const state_names[JOB_STORE_STATE_COUNT] = {
    [JOB_STORE_QUEUED]    = "queued",
    [JOB_STORE_STARTING]  = "starting",
    [JOB_STORE_RUNNING]   = "running",
    [JOB_STORE_SUCCEEDED] = "succeeded",
    [JOB_STORE_FAILED]    = "failed",
    [JOB_STORE_CANCELLED] = "cancelled",
    [JOB_STORE_RETRYING]  = "retrying",
    [JOB_STORE_PREEMPTED] = "preempted",
};

/* allowed[from] is a bit set of the states `from` may move to. Terminal states allow nothing:
 * a finished job is history. */
#define B(s) (1u << (s))
static const unsigned allowed[JOB_STORE_STATE_COUNT] = {
    [JOB_STORE_QUEUED]    = B(JOB_STORE_STARTING) | B(JOB_STORE_CANCELLED),
    [JOB_STORE_STARTING]  = B(JOB_STORE_RUNNING) | B(JOB_STORE_FAILED) | B(JOB_STORE_CANCELLED)
                          | B(JOB_STORE_RETRYING) | B(JOB_STORE_PREEMPTED),
    [JOB_STORE_RUNNING]   = B(JOB_STORE_SUCCEEDED) | B(JOB_STORE_FAILED) | B(JOB_STORE_CANCELLED)
                          | B(JOB_STORE_RETRYING) | B(JOB_STORE_PREEMPTED)
                          /* a pipeline job's next stage (daemon/pipeline.h) */
                          | B(JOB_STORE_STARTING),
    [JOB_STORE_RETRYING]  = B(JOB_STORE_STARTING) | B(JOB_STORE_FAILED) | B(JOB_STORE_CANCELLED),
    [JOB_STORE_PREEMPTED] = B(JOB_STORE_QUEUED) | B(JOB_STORE_STARTING) | B(JOB_STORE_CANCELLED),
};
#undef B

enum {
    STMT_INSERT, STMT_GET, STMT_LIST_ALL, STMT_LIST_STATE, STMT_STATE_OF, STMT_SET_STATE,
    STMT_ATTEMPT_OPEN, STMT_ATTEMPT_CLOSE, STMT_PROGRESS, STMT_SERIES_ADD, STMT_SERIES_GET,
    STMT_CHECKPOINT, STMT_COUNT_STATES, STMT_BEGIN, STMT_COMMIT, STMT_ROLLBACK, STMT_PING,
    STMT_ATTEMPT_GET, STMT_ATTEMPT_PROCESS, STMT_ATTEMPT_DONE, STMT_CANCEL_REQUEST,
    STMT_ATTEMPT_SLURM, STMT_ATTEMPT_COUNT,
    STMT__COUNT
};

#define JOB_COLUMNS "id, seq, name, kind, state, ranks, attempt, max_restarts, created_ms, " \
    "started_ms, finished_ms, updated_ms, has_progress, step, total_steps, epoch, samples, " \
    "tokens, loss, lr, grad_norm, step_seconds, tokens_per_second, progress_ms, " \
    "last_checkpoint, error, spec, cancel_requested"

static const char *const stmt_sql[STMT__COUNT] = {
    [STMT_INSERT] = "INSERT INTO jobs(id, name, kind, state, ranks, attempt, max_restarts, "
                    "created_ms, updated_ms, spec) VALUES(?1, ?2, ?3, 'queued', ?4, 0, ?5, ?6, ?6, ?7)",
    [STMT_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [STMT_LIST_ALL] = "SELECT " JOB_COLUMNS " FROM jobs WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    [STMT_LIST_STATE] = "SELECT " JOB_COLUMNS " FROM jobs WHERE seq > ?1 AND state = ?3 "
                        "ORDER BY seq LIMIT ?2",
    [STMT_STATE_OF] = "SELECT state, attempt FROM jobs WHERE id = ?1",
    [STMT_SET_STATE] = "UPDATE jobs SET state = ?2, attempt = ?3, updated_ms = ?4, "
                       "started_ms = CASE WHEN ?2 = 'running' AND started_ms = 0 THEN ?4 ELSE started_ms END, "
                       "finished_ms = CASE WHEN ?5 THEN ?4 ELSE finished_ms END, "
                       "error = COALESCE(?6, error) WHERE id = ?1",
    [STMT_ATTEMPT_OPEN] = "INSERT INTO attempts(job_id, attempt, started_ms) VALUES(?1, ?2, ?3)",
    [STMT_ATTEMPT_CLOSE] = "UPDATE attempts SET ended_ms = ?3, outcome = ?4, error = ?5 "
                           "WHERE job_id = ?1 AND attempt = ?2 AND ended_ms = 0",
    [STMT_PROGRESS] = "UPDATE jobs SET has_progress = 1, step = ?2, total_steps = ?3, epoch = ?4, "
                      "samples = ?5, tokens = ?6, loss = ?7, lr = ?8, grad_norm = ?9, "
                      "step_seconds = ?10, tokens_per_second = ?11, progress_ms = ?12, "
                      "updated_ms = ?13 WHERE id = ?1",
    [STMT_SERIES_ADD] = "INSERT OR REPLACE INTO metrics(job_id, step, total_steps, epoch, samples, "
                        "tokens, loss, lr, grad_norm, step_seconds, tokens_per_second, unix_ms) "
                        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [STMT_SERIES_GET] = "SELECT step, total_steps, epoch, samples, tokens, loss, lr, grad_norm, "
                        "step_seconds, tokens_per_second, unix_ms FROM metrics "
                        "WHERE job_id = ?1 AND step > ?2 ORDER BY step LIMIT ?3",
    [STMT_CHECKPOINT] = "UPDATE jobs SET last_checkpoint = ?2, updated_ms = ?3 WHERE id = ?1",
    [STMT_COUNT_STATES] = "SELECT state, count(*) FROM jobs GROUP BY state",
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_PING] = "SELECT count(*) FROM jobs WHERE seq < 0",
    [STMT_ATTEMPT_GET] = "SELECT attempt, started_ms, ended_ms, outcome, error, pid, pid_start, "
                         "pgid, done, done_error, slurm_id FROM attempts WHERE job_id = ?1 AND attempt = ?2",
    [STMT_ATTEMPT_COUNT] = "SELECT count(*) FROM attempts WHERE job_id = ?1 AND outcome = ?2",
    [STMT_ATTEMPT_SLURM] = "UPDATE attempts SET slurm_id = ?3 WHERE job_id = ?1 AND attempt = ?2",
    [STMT_ATTEMPT_PROCESS] = "UPDATE attempts SET pid = ?3, pid_start = ?4, pgid = ?5 "
                             "WHERE job_id = ?1 AND attempt = ?2",
    /* attempt 0 means the job's current one, so a Done frame (which names no attempt) lands on
     * the attempt that is running */
    [STMT_ATTEMPT_DONE] = "UPDATE attempts SET done = ?3, done_error = ?4 WHERE job_id = ?1 AND "
                          "attempt = CASE WHEN ?2 = 0 THEN (SELECT attempt FROM jobs WHERE id = ?1) "
                          "ELSE ?2 END",
    [STMT_CANCEL_REQUEST] = "UPDATE jobs SET cancel_requested = 1, updated_ms = ?2 WHERE id = ?1",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS jobs("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,"
    "  ranks INTEGER NOT NULL, attempt INTEGER NOT NULL, max_restarts INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL DEFAULT 0,"
    "  finished_ms INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL,"
    "  has_progress INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0,"
    "  total_steps INTEGER NOT NULL DEFAULT 0, epoch INTEGER NOT NULL DEFAULT 0,"
    "  samples INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,"
    "  loss REAL NOT NULL DEFAULT 0, lr REAL NOT NULL DEFAULT 0, grad_norm REAL NOT NULL DEFAULT 0,"
    "  step_seconds REAL NOT NULL DEFAULT 0, tokens_per_second REAL NOT NULL DEFAULT 0,"
    "  progress_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_checkpoint TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',"
    "  spec TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);"
    "CREATE TABLE IF NOT EXISTS attempts("
    "  job_id TEXT NOT NULL REFERENCES jobs(id), attempt INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL, ended_ms INTEGER NOT NULL DEFAULT 0,"
    "  outcome TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY(job_id, attempt)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS metrics("
    "  job_id TEXT NOT NULL REFERENCES jobs(id), step INTEGER NOT NULL,"
    "  total_steps INTEGER NOT NULL, epoch INTEGER NOT NULL, samples INTEGER NOT NULL,"
    "  tokens INTEGER NOT NULL, loss REAL NOT NULL, lr REAL NOT NULL, grad_norm REAL NOT NULL,"
    "  step_seconds REAL NOT NULL, tokens_per_second REAL NOT NULL, unix_ms INTEGER NOT NULL,"
    "  PRIMARY KEY(job_id, step)) WITHOUT ROWID;";

/* Schema version 2 (the scheduler): the process of each attempt (leader pid, its start time
 * from /proc/PID/stat, its process group) or its Slurm job id, the Done a worker reported for
 * it, and a cancel
 * that is waiting for the attempt's processes to end. Columns are added, never changed, so a
 * version-1 database keeps every job. */
enum { SCHEMA_VERSION = 3 };
static const char migrate_v2_sql[] =
    "ALTER TABLE attempts ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE attempts ADD COLUMN pid_start INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE attempts ADD COLUMN pgid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE attempts ADD COLUMN done INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE attempts ADD COLUMN done_error TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE attempts ADD COLUMN slurm_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;";

/* Schema version 3 (the paper's pipeline, issue 8): shards — one row per unit of work (a base
 * shard, an evaluate chunk) of a job's stage, with who holds it and what it produced
 * (daemon/workqueue.c); state is 'pending', 'leased' (to rank, attempt) or 'done', and
 * done_count counts the ShardDone frames taken for it (1 when no unit was ever done twice).
 * stages — the pipeline job's stages (daemon/pipeline.c). */
static const char migrate_v3_sql[] =
    "CREATE TABLE IF NOT EXISTS shards("
    "  job_id TEXT NOT NULL REFERENCES jobs(id), stage INTEGER NOT NULL, shard INTEGER NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', rank INTEGER NOT NULL DEFAULT -1,"
    "  attempt INTEGER NOT NULL DEFAULT 0, output TEXT NOT NULL DEFAULT '',"
    "  records INTEGER NOT NULL DEFAULT 0, done_count INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(job_id, stage, shard)) WITHOUT ROWID;"
    /* the pipeline job's stages (daemon/pipeline.c): 'pending', 'running' or 'done', and the
     * latest attempt that ran each */
    "CREATE TABLE IF NOT EXISTS stages("
    "  job_id TEXT NOT NULL REFERENCES jobs(id), stage INTEGER NOT NULL, name TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', attempt INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, started_ms INTEGER NOT NULL DEFAULT 0,"
    "  finished_ms INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(job_id, stage)) WITHOUT ROWID;";

struct job_store {
    sqlite3      *db;
    sqlite3_stmt *stmt[STMT__COUNT];
    char          dir[4096];
};

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

const char *job_store_state_name(int state)
{
    return state >= 0 && state < JOB_STORE_STATE_COUNT ? state_names[state] : "unknown";
}

int job_store_state_parse(const char *s)
{
    for (int i = 0; i < JOB_STORE_STATE_COUNT; i++)
        if (s && strcmp(s, state_names[i]) == 0) return i;
    return -1;
}

int job_store_state_is_terminal(int state)
{
    return state == JOB_STORE_SUCCEEDED || state == JOB_STORE_FAILED || state == JOB_STORE_CANCELLED;
}

int job_store_transition_allowed(int from, int to)
{
    if (from < 0 || from >= JOB_STORE_STATE_COUNT || to < 0 || to >= JOB_STORE_STATE_COUNT) return 0;
    return (allowed[from] >> to) & 1u;
}

void job_store_record_clear(job_store_record *r)
{
    if (!r) return;
    free(r->spec_json);
    r->spec_json = NULL;
}

static int db_fail(job_store_t *js, adapt_error *err, const char *what)
{
    return adapt_fail(err, ADAPT_EIO, "job store %s/adaptd.db: %s: %s", js->dir, what,
                      sqlite3_errmsg(js->db));
}

static int mkdir_if_missing(const char *path, adapt_error *err)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return adapt_fail(err, ADAPT_EIO, "creating %s: %s (check --state-dir)", path, strerror(errno));
    return ADAPT_OK;
}

static int user_version(job_store_t *js, int *v)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(js->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK) return -1;
    int ok = sqlite3_step(s) == SQLITE_ROW;
    if (ok) *v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return ok ? 0 : -1;
}

/* Brings a database of an older schema up to SCHEMA_VERSION in one transaction (a database
 * just created has user_version 0 and the version-1 tables); refuses one from a newer adaptd. */
static int schema_migrate(job_store_t *js, const char *path, adapt_error *err)
{
    int v = 0;
    if (user_version(js, &v) != 0) return db_fail(js, err, "reading user_version");
    if (v > SCHEMA_VERSION)
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "job store %s has schema version %d; this adaptd "
                          "knows %d: run the newer adaptd that wrote it", path, v, SCHEMA_VERSION);
    if (v == SCHEMA_VERSION) return ADAPT_OK;
    /* every step from v on, in one transaction: a crash leaves the old version whole */
    char *msg = NULL, sql[sizeof migrate_v2_sql + sizeof migrate_v3_sql + 96];
    snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; %s %s PRAGMA user_version = %d; COMMIT;",
             v < 2 ? migrate_v2_sql : "", v < 3 ? migrate_v3_sql : "", SCHEMA_VERSION);
    if (sqlite3_exec(js->db, sql, NULL, NULL, &msg) == SQLITE_OK) return ADAPT_OK;
    int rc = adapt_fail(err, ADAPT_EIO, "job store %s: migrating schema %d to %d: %s", path, v,
                        SCHEMA_VERSION, msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_exec(js->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int job_store_open(job_store_t **out, const char *state_dir, adapt_error *err)
{
    *out = NULL;
    job_store_t *js = calloc(1, sizeof *js);
    if (!js) return adapt_fail(err, ADAPT_ENOMEM, "job store: out of memory");
    if (snprintf(js->dir, sizeof js->dir, "%s", state_dir) >= (int)sizeof js->dir - 64) {
        free(js);
        return adapt_fail(err, ADAPT_EINVAL, "state dir path too long: %s", state_dir);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/jobs", js->dir);
    int rc = mkdir_if_missing(js->dir, err);
    if (rc == ADAPT_OK) rc = mkdir_if_missing(path, err);
    if (rc != ADAPT_OK) { free(js); return rc; }

    snprintf(path, sizeof path, "%s/adaptd.db", js->dir);
    if (sqlite3_open_v2(path, &js->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = db_fail(js, err, "open");
        job_store_close(js);
        return rc;
    }
    sqlite3_busy_timeout(js->db, 5000);
    /* WAL: readers (GET under load) never block the writer (progress frames); NORMAL sync keeps
     * every committed transaction across a crash of adaptd, losing at most the last ones on a
     * power cut. */
    char *msg = NULL;
    if (sqlite3_exec(js->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                     "PRAGMA foreign_keys=ON;", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(js->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        rc = adapt_fail(err, ADAPT_EIO, "job store %s: schema: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        job_store_close(js);
        return rc;
    }
    if ((rc = schema_migrate(js, path, err)) != ADAPT_OK) {
        job_store_close(js);
        return rc;
    }
    for (int i = 0; i < STMT__COUNT; i++) {
        if (sqlite3_prepare_v3(js->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &js->stmt[i], NULL) != SQLITE_OK) {
            rc = db_fail(js, err, stmt_sql[i]);
            job_store_close(js);
            return rc;
        }
    }
    *out = js;
    return ADAPT_OK;
}

void job_store_close(job_store_t *js)
{
    if (!js) return;
    for (int i = 0; i < STMT__COUNT; i++) sqlite3_finalize(js->stmt[i]);
    sqlite3_close(js->db);
    free(js);
}

struct sqlite3 *job_store_sqlite(job_store_t *js) { return js->db; }

int job_store_job_dir(job_store_t *js, const char *id, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/jobs/%s", js->dir, id);
    return n > 0 && (size_t)n < size ? ADAPT_OK : ADAPT_ERANGE;
}

/* Runs a statement that returns no rows and resets it, so a cached statement never holds a read
 * transaction open. */
static int stmt_run(job_store_t *js, sqlite3_stmt *s, adapt_error *err, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? ADAPT_OK : db_fail(js, err, what);
}

static void random_id(char id[JOB_STORE_ID_LEN + 1])
{
    unsigned char raw[JOB_STORE_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n > 0) got += (size_t)n;
        /* getrandom only fails with EINTR once the pool is initialized; retrying is correct. */
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        id[2 * i] = hex[raw[i] >> 4];
        id[2 * i + 1] = hex[raw[i] & 15];
    }
    id[JOB_STORE_ID_LEN] = '\0';
}

int job_store_create(job_store_t *js, const job_store_new *in, char id[JOB_STORE_ID_LEN + 1],
                     adapt_error *err)
{
    random_id(id);
    char dir[4200];
    job_store_job_dir(js, id, dir, sizeof dir);
    int rc = mkdir_if_missing(dir, err);
    if (rc != ADAPT_OK) return rc;
    sqlite3_stmt *s = js->stmt[STMT_INSERT];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, in->name ? in->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, in->kind ? in->kind : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, in->ranks);
    sqlite3_bind_int64(s, 5, in->max_restarts);
    sqlite3_bind_int64(s, 6, now_ms());
    sqlite3_bind_text(s, 7, in->spec_json ? in->spec_json : "{}", -1, SQLITE_STATIC);
    return stmt_run(js, s, err, "inserting a job");
}

static void copy_text(char *dst, size_t size, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, size, "%s", t ? (const char *)t : "");
}

/* One progress row's 11 columns, starting at column first, in the order of the progress table
 * (step, total_steps, epoch, samples, tokens, loss, lr, grad_norm, step_seconds,
 * tokens_per_second, unix_time_ms): the job row embeds the latest one, the series holds all. */
static void progress_from_row(sqlite3_stmt *s, int first, job_store_progress *p)
{
    p->step = (uint64_t)sqlite3_column_int64(s, first + 0);
    p->total_steps = (uint64_t)sqlite3_column_int64(s, first + 1);
    p->epoch = (uint32_t)sqlite3_column_int64(s, first + 2);
    p->samples = (uint64_t)sqlite3_column_int64(s, first + 3);
    p->tokens = (uint64_t)sqlite3_column_int64(s, first + 4);
    p->loss = sqlite3_column_double(s, first + 5);
    p->lr = sqlite3_column_double(s, first + 6);
    p->grad_norm = sqlite3_column_double(s, first + 7);
    p->step_seconds = sqlite3_column_double(s, first + 8);
    p->tokens_per_second = sqlite3_column_double(s, first + 9);
    p->unix_time_ms = sqlite3_column_int64(s, first + 10);
}

/* Fills r from the current row of a statement selecting JOB_COLUMNS. */
static int record_from_row(sqlite3_stmt *s, job_store_record *r)
{
    memset(r, 0, sizeof *r);
    copy_text(r->id, sizeof r->id, s, 0);
    r->seq = sqlite3_column_int64(s, 1);
    copy_text(r->name, sizeof r->name, s, 2);
    copy_text(r->kind, sizeof r->kind, s, 3);
    r->state = job_store_state_parse((const char *)sqlite3_column_text(s, 4));
    r->ranks = (uint32_t)sqlite3_column_int64(s, 5);
    r->attempt = (uint32_t)sqlite3_column_int64(s, 6);
    r->max_restarts = (uint32_t)sqlite3_column_int64(s, 7);
    r->created_ms = sqlite3_column_int64(s, 8);
    r->started_ms = sqlite3_column_int64(s, 9);
    r->finished_ms = sqlite3_column_int64(s, 10);
    r->updated_ms = sqlite3_column_int64(s, 11);
    r->has_progress = sqlite3_column_int(s, 12);
    progress_from_row(s, 13, &r->progress);
    copy_text(r->last_checkpoint, sizeof r->last_checkpoint, s, 24);
    copy_text(r->error, sizeof r->error, s, 25);
    const unsigned char *spec = sqlite3_column_text(s, 26);
    r->spec_json = strdup(spec ? (const char *)spec : "{}");
    r->cancel_requested = sqlite3_column_int(s, 27);
    return r->spec_json ? ADAPT_OK : ADAPT_ENOMEM;
}

int job_store_get(job_store_t *js, const char *id, job_store_record *out, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_GET];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    int rc = ADAPT_OK;
    if (step == SQLITE_ROW) {
        if (record_from_row(s, out) != ADAPT_OK) rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    } else if (step == SQLITE_DONE) {
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "no job with id %s", id);
    } else {
        rc = db_fail(js, err, "reading a job");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

int job_store_list(job_store_t *js, int state, int64_t after_seq, job_store_record *out,
                   size_t cap, size_t *n, adapt_error *err)
{
    *n = 0;
    sqlite3_stmt *s = js->stmt[state < 0 ? STMT_LIST_ALL : STMT_LIST_STATE];
    sqlite3_bind_int64(s, 1, after_seq);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)cap);
    if (state >= 0) sqlite3_bind_text(s, 3, job_store_state_name(state), -1, SQLITE_STATIC);
    int rc = ADAPT_OK, step;
    while (*n < cap && (step = sqlite3_step(s)) == SQLITE_ROW) {
        if (record_from_row(s, &out[*n]) != ADAPT_OK) {
            rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
            break;
        }
        (*n)++;
    }
    if (rc == ADAPT_OK && *n < cap && step != SQLITE_DONE) rc = db_fail(js, err, "listing jobs");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != ADAPT_OK) {
        for (size_t i = 0; i < *n; i++) job_store_record_clear(&out[i]);
        *n = 0;
    }
    return rc;
}

/* Reads state and attempt of one job inside the caller's transaction. */
static int state_of(job_store_t *js, const char *id, int *state, int64_t *attempt, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_STATE_OF];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(s), rc = ADAPT_OK;
    if (step == SQLITE_ROW) {
        *state = job_store_state_parse((const char *)sqlite3_column_text(s, 0));
        *attempt = sqlite3_column_int64(s, 1);
    } else if (step == SQLITE_DONE) {
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "no job with id %s", id);
    } else {
        rc = db_fail(js, err, "reading a job's state");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

/* The body of job_store_transition, run between BEGIN IMMEDIATE and COMMIT. */
static int transition_locked(job_store_t *js, const char *id, int to, const char *message,
                             adapt_error *err)
{
    int from = -1;
    int64_t attempt = 0;
    int rc = state_of(js, id, &from, &attempt, err);
    if (rc != ADAPT_OK) return rc;
    if (!job_store_transition_allowed(from, to))
        return adapt_fail(err, ADAPT_EINVAL, "job %s: illegal transition %s -> %s", id,
                          job_store_state_name(from), job_store_state_name(to));
    int64_t t = now_ms();
    /* starting -> running is the same attempt going on; any other move out of them ends it */
    if ((from == JOB_STORE_STARTING || from == JOB_STORE_RUNNING) && to != JOB_STORE_RUNNING) {
        sqlite3_stmt *c = js->stmt[STMT_ATTEMPT_CLOSE];
        sqlite3_bind_text(c, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(c, 2, attempt);
        sqlite3_bind_int64(c, 3, t);
        /* running -> starting is a pipeline's stage that ended well, its next one starting */
        sqlite3_bind_text(c, 4, from == JOB_STORE_RUNNING && to == JOB_STORE_STARTING
                          ? job_store_state_name(JOB_STORE_SUCCEEDED) : job_store_state_name(to),
                          -1, SQLITE_STATIC);
        sqlite3_bind_text(c, 5, message ? message : "", -1, SQLITE_STATIC);
        if ((rc = stmt_run(js, c, err, "closing an attempt")) != ADAPT_OK) return rc;
    }
    if (to == JOB_STORE_STARTING) {
        attempt++;
        sqlite3_stmt *o = js->stmt[STMT_ATTEMPT_OPEN];
        sqlite3_bind_text(o, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(o, 2, attempt);
        sqlite3_bind_int64(o, 3, t);
        if ((rc = stmt_run(js, o, err, "opening an attempt")) != ADAPT_OK) return rc;
    }
    sqlite3_stmt *s = js->stmt[STMT_SET_STATE];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, job_store_state_name(to), -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, attempt);
    sqlite3_bind_int64(s, 4, t);
    sqlite3_bind_int(s, 5, job_store_state_is_terminal(to));
    if (message) sqlite3_bind_text(s, 6, message, -1, SQLITE_STATIC);
    else sqlite3_bind_null(s, 6);
    return stmt_run(js, s, err, "changing a job's state");
}

int job_store_transition(job_store_t *js, const char *id, int to, const char *message,
                         adapt_error *err)
{
    int rc = stmt_run(js, js->stmt[STMT_BEGIN], err, "begin");
    if (rc != ADAPT_OK) return rc;
    rc = transition_locked(js, id, to, message, err);
    if (rc == ADAPT_OK) rc = stmt_run(js, js->stmt[STMT_COMMIT], err, "commit");
    if (rc != ADAPT_OK) stmt_run(js, js->stmt[STMT_ROLLBACK], NULL, "rollback");
    return rc;
}

static void bind_progress(sqlite3_stmt *s, int first, const job_store_progress *p)
{
    sqlite3_bind_int64(s, first + 0, (sqlite3_int64)p->step);
    sqlite3_bind_int64(s, first + 1, (sqlite3_int64)p->total_steps);
    sqlite3_bind_int64(s, first + 2, p->epoch);
    sqlite3_bind_int64(s, first + 3, (sqlite3_int64)p->samples);
    sqlite3_bind_int64(s, first + 4, (sqlite3_int64)p->tokens);
    sqlite3_bind_double(s, first + 5, p->loss);
    sqlite3_bind_double(s, first + 6, p->lr);
    sqlite3_bind_double(s, first + 7, p->grad_norm);
    sqlite3_bind_double(s, first + 8, p->step_seconds);
    sqlite3_bind_double(s, first + 9, p->tokens_per_second);
    sqlite3_bind_int64(s, first + 10, p->unix_time_ms);
}

int job_store_add_progress(job_store_t *js, const char *id, const job_store_progress *p,
                           adapt_error *err)
{
    int rc = stmt_run(js, js->stmt[STMT_BEGIN], err, "begin");
    if (rc != ADAPT_OK) return rc;
    sqlite3_stmt *u = js->stmt[STMT_PROGRESS];
    sqlite3_bind_text(u, 1, id, -1, SQLITE_STATIC);
    bind_progress(u, 2, p);
    sqlite3_bind_int64(u, 13, now_ms());
    rc = stmt_run(js, u, err, "storing progress");
    if (rc == ADAPT_OK && sqlite3_changes(js->db) == 0)
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "no job with id %s", id);
    if (rc == ADAPT_OK) {
        sqlite3_stmt *a = js->stmt[STMT_SERIES_ADD];
        sqlite3_bind_text(a, 1, id, -1, SQLITE_STATIC);
        bind_progress(a, 2, p);
        rc = stmt_run(js, a, err, "storing a metrics row");
    }
    if (rc == ADAPT_OK) rc = stmt_run(js, js->stmt[STMT_COMMIT], err, "commit");
    if (rc != ADAPT_OK) stmt_run(js, js->stmt[STMT_ROLLBACK], NULL, "rollback");
    return rc;
}

int job_store_set_checkpoint(job_store_t *js, const char *id, const char *path, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_CHECKPOINT];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, now_ms());
    int rc = stmt_run(js, s, err, "storing a checkpoint");
    if (rc == ADAPT_OK && sqlite3_changes(js->db) == 0)
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "no job with id %s", id);
    return rc;
}

int job_store_metrics(job_store_t *js, const char *id, int64_t since, job_store_progress *out,
                      size_t cap, size_t *n, adapt_error *err)
{
    *n = 0;
    sqlite3_stmt *s = js->stmt[STMT_SERIES_GET];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, since);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)cap);
    int step;
    while (*n < cap && (step = sqlite3_step(s)) == SQLITE_ROW) {
        progress_from_row(s, 0, &out[(*n)++]);
    }
    int rc = (*n == cap || step == SQLITE_DONE) ? ADAPT_OK : db_fail(js, err, "reading metrics");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

int job_store_count_by_state(job_store_t *js, uint64_t counts[JOB_STORE_STATE_COUNT],
                             adapt_error *err)
{
    memset(counts, 0, sizeof(uint64_t) * JOB_STORE_STATE_COUNT);
    sqlite3_stmt *s = js->stmt[STMT_COUNT_STATES];
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        int st = job_store_state_parse((const char *)sqlite3_column_text(s, 0));
        if (st >= 0) counts[st] = (uint64_t)sqlite3_column_int64(s, 1);
    }
    int rc = step == SQLITE_DONE ? ADAPT_OK : db_fail(js, err, "counting jobs");
    sqlite3_reset(s);
    return rc;
}

int job_store_ping(job_store_t *js, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_PING];
    int step = sqlite3_step(s);
    sqlite3_reset(s);
    return step == SQLITE_ROW ? ADAPT_OK : db_fail(js, err, "ping");
}

int job_store_attempt_get(job_store_t *js, const char *id, uint32_t attempt, job_store_attempt *out,
                          adapt_error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = js->stmt[STMT_ATTEMPT_GET];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, attempt);
    int step = sqlite3_step(s), rc = ADAPT_OK;
    if (step == SQLITE_ROW) {
        out->attempt = (uint32_t)sqlite3_column_int64(s, 0);
        out->started_ms = sqlite3_column_int64(s, 1);
        out->ended_ms = sqlite3_column_int64(s, 2);
        copy_text(out->outcome, sizeof out->outcome, s, 3);
        copy_text(out->error, sizeof out->error, s, 4);
        out->pid = sqlite3_column_int64(s, 5);
        out->pid_start = (uint64_t)sqlite3_column_int64(s, 6);
        out->pgid = sqlite3_column_int64(s, 7);
        out->done = sqlite3_column_int(s, 8);
        copy_text(out->done_error, sizeof out->done_error, s, 9);
        copy_text(out->slurm_id, sizeof out->slurm_id, s, 10);
    } else if (step == SQLITE_DONE) {
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "job %s has no attempt %u", id, attempt);
    } else {
        rc = db_fail(js, err, "reading an attempt");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

int job_store_attempt_set_process(job_store_t *js, const char *id, uint32_t attempt, int64_t pid,
                                  uint64_t pid_start, int64_t pgid, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_ATTEMPT_PROCESS];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, attempt);
    sqlite3_bind_int64(s, 3, pid);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)pid_start);
    sqlite3_bind_int64(s, 5, pgid);
    int rc = stmt_run(js, s, err, "storing an attempt's process");
    if (rc == ADAPT_OK && sqlite3_changes(js->db) == 0)
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "job %s has no attempt %u", id, attempt);
    return rc;
}

int job_store_attempt_set_done(job_store_t *js, const char *id, uint32_t attempt, int done,
                               const char *error, adapt_error *err)
{
    if (done < JOB_STORE_DONE_NONE || done > JOB_STORE_DONE_STOPPED)
        return adapt_fail(err, ADAPT_EINVAL, "job %s: done outcome %d out of range", id, done);
    sqlite3_stmt *s = js->stmt[STMT_ATTEMPT_DONE];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, attempt);
    sqlite3_bind_int(s, 3, done);
    sqlite3_bind_text(s, 4, error ? error : "", -1, SQLITE_STATIC);
    int rc = stmt_run(js, s, err, "storing an attempt's outcome");
    if (rc == ADAPT_OK && sqlite3_changes(js->db) == 0)
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "job %s has no attempt %u (has it started?)", id,
                        attempt);
    return rc;
}

int job_store_request_cancel(job_store_t *js, const char *id, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_CANCEL_REQUEST];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now_ms());
    int rc = stmt_run(js, s, err, "storing a cancel request");
    if (rc == ADAPT_OK && sqlite3_changes(js->db) == 0)
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "no job with id %s", id);
    return rc;
}

int job_store_attempt_set_slurm_id(job_store_t *js, const char *id, uint32_t attempt,
                                   const char *slurm_id, adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_ATTEMPT_SLURM];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, attempt);
    sqlite3_bind_text(s, 3, slurm_id, -1, SQLITE_STATIC);
    int rc = stmt_run(js, s, err, "storing an attempt's Slurm job id");
    if (rc == ADAPT_OK && sqlite3_changes(js->db) == 0)
        rc = adapt_fail(err, ADAPT_ENOTFOUND, "job %s has no attempt %u", id, attempt);
    return rc;
}

int job_store_attempt_count(job_store_t *js, const char *id, int outcome, uint32_t *n,
                            adapt_error *err)
{
    sqlite3_stmt *s = js->stmt[STMT_ATTEMPT_COUNT];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, job_store_state_name(outcome), -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    *n = step == SQLITE_ROW ? (uint32_t)sqlite3_column_int64(s, 0) : 0;
    int rc = step == SQLITE_ROW ? ADAPT_OK : db_fail(js, err, "counting attempts");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}
