/* workqueue: units of work leased to ranks, recorded in SQLite; see workqueue.h.
 *
 * Design: every operation that reads a state and writes another runs inside one IMMEDIATE
 * transaction on the store's connection, so a daemon killed between the two leaves either the
 * old state or the new one, never a unit leased twice or a done unit pending again. */
#include "workqueue.h"

#include <stdio.h>
#include <stdlib.h>

#include <sqlite3.h>

enum {
    WQ_BEGIN, WQ_COMMIT, WQ_ROLLBACK, WQ_COUNT_ROWS, WQ_INSERT, WQ_RELEASE_OWN, WQ_LOWEST,
    WQ_LEASE, WQ_STATE_OF, WQ_DONE, WQ_REQUEUE, WQ_COUNTS,
    WQ__COUNT
};

static const char *const wq_sql[WQ__COUNT] = {
    [WQ_BEGIN] = "BEGIN IMMEDIATE",
    [WQ_COMMIT] = "COMMIT",
    [WQ_ROLLBACK] = "ROLLBACK",
    [WQ_COUNT_ROWS] = "SELECT count(*) FROM shards WHERE job_id = ?1 AND stage = ?2",
    [WQ_INSERT] = "INSERT INTO shards(job_id, stage, shard) VALUES(?1, ?2, ?3)",
    [WQ_RELEASE_OWN] = "UPDATE shards SET state = 'pending', rank = -1 WHERE job_id = ?1 AND "
                       "stage = ?2 AND state = 'leased' AND rank = ?3 AND attempt = ?4",
    [WQ_LOWEST] = "SELECT min(shard) FROM shards WHERE job_id = ?1 AND stage = ?2 AND "
                  "state = 'pending'",
    [WQ_LEASE] = "UPDATE shards SET state = 'leased', rank = ?4, attempt = ?5 WHERE job_id = ?1 "
                 "AND stage = ?2 AND shard = ?3",
    [WQ_STATE_OF] = "SELECT state FROM shards WHERE job_id = ?1 AND stage = ?2 AND shard = ?3",
    [WQ_DONE] = "UPDATE shards SET state = 'done', rank = ?4, attempt = ?5, output = ?6, "
                "records = ?7, done_count = done_count + 1 WHERE job_id = ?1 AND stage = ?2 AND "
                "shard = ?3",
    [WQ_REQUEUE] = "UPDATE shards SET state = 'pending', rank = -1 WHERE job_id = ?1 AND "
                   "state = 'leased' AND attempt <= ?2",
    [WQ_COUNTS] = "SELECT count(*), sum(state = 'pending'), sum(state = 'leased'), "
                  "sum(state = 'done'), sum(CASE WHEN state = 'done' THEN records ELSE 0 END), "
                  "sum(max(done_count - 1, 0)) FROM shards WHERE job_id = ?1 AND stage = ?2",
};

struct workqueue {
    sqlite3      *db;
    sqlite3_stmt *stmt[WQ__COUNT];
};

static int wq_fail(workqueue_t *wq, adapt_error *err, const char *what)
{
    return adapt_fail(err, ADAPT_EIO, "work queue: %s: %s", what, sqlite3_errmsg(wq->db));
}

/* Steps a statement that returns no row (or whose row the caller does not need), resets it. */
static int wq_run(workqueue_t *wq, int which, adapt_error *err, const char *what)
{
    sqlite3_stmt *s = wq->stmt[which];
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? ADAPT_OK : wq_fail(wq, err, what);
}

/* Steps a one-row query; *isnull set when its first column is NULL (min() of no rows). */
static int wq_int(workqueue_t *wq, int which, int64_t *v, int *isnull, adapt_error *err,
                  const char *what)
{
    sqlite3_stmt *s = wq->stmt[which];
    int rc = sqlite3_step(s), out = ADAPT_OK;
    if (rc == SQLITE_ROW) {
        if (isnull) *isnull = sqlite3_column_type(s, 0) == SQLITE_NULL;
        *v = sqlite3_column_int64(s, 0);
    } else if (rc == SQLITE_DONE) {
        if (isnull) *isnull = 1;
        *v = 0;
    } else {
        out = wq_fail(wq, err, what);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return out;
}

static void bind_key(sqlite3_stmt *s, const char *job_id, uint32_t stage)
{
    sqlite3_bind_text(s, 1, job_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, stage);
}

int workqueue_open(workqueue_t **out, job_store_t *js, adapt_error *err)
{
    *out = NULL;
    workqueue_t *wq = calloc(1, sizeof *wq);
    if (!wq) return adapt_fail(err, ADAPT_ENOMEM, "work queue: out of memory");
    wq->db = job_store_sqlite(js);
    for (int i = 0; i < WQ__COUNT; i++) {
        if (sqlite3_prepare_v3(wq->db, wq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &wq->stmt[i],
                               NULL) != SQLITE_OK) {
            int rc = wq_fail(wq, err, wq_sql[i]);
            workqueue_close(wq);
            return rc;
        }
    }
    *out = wq;
    return ADAPT_OK;
}

void workqueue_close(workqueue_t *wq)
{
    if (!wq) return;
    for (int i = 0; i < WQ__COUNT; i++) sqlite3_finalize(wq->stmt[i]);
    free(wq);
}

/* Ends the transaction: COMMIT when rc is ADAPT_OK, else ROLLBACK (rc kept). */
static int wq_end(workqueue_t *wq, int rc, adapt_error *err)
{
    if (rc == ADAPT_OK) rc = wq_run(wq, WQ_COMMIT, err, "commit");
    if (rc != ADAPT_OK) wq_run(wq, WQ_ROLLBACK, NULL, "rollback");
    return rc;
}

static int request_locked(workqueue_t *wq, const char *job_id, uint32_t stage, uint64_t units,
                          uint32_t rank, uint32_t attempt, uint64_t *shard, int *none_left,
                          adapt_error *err)
{
    int64_t have = 0;
    bind_key(wq->stmt[WQ_COUNT_ROWS], job_id, stage);
    int rc = wq_int(wq, WQ_COUNT_ROWS, &have, NULL, err, "counting units");
    if (rc) return rc;
    if (have == 0) {
        for (uint64_t u = 0; !rc && u < units; u++) {
            bind_key(wq->stmt[WQ_INSERT], job_id, stage);
            sqlite3_bind_int64(wq->stmt[WQ_INSERT], 3, (sqlite3_int64)u);
            rc = wq_run(wq, WQ_INSERT, err, "making the unit table");
        }
        if (rc) return rc;
    } else if ((uint64_t)have != units) {
        return adapt_fail(err, ADAPT_EINVAL, "job %s stage %u: rank %u counts %llu units of work, "
                          "the daemon's table holds %lld (the input changed since the job began?)",
                          job_id, stage, rank, (unsigned long long)units, (long long)have);
    }
    sqlite3_stmt *s = wq->stmt[WQ_RELEASE_OWN];
    bind_key(s, job_id, stage);
    sqlite3_bind_int64(s, 3, rank);
    sqlite3_bind_int64(s, 4, attempt);
    if ((rc = wq_run(wq, WQ_RELEASE_OWN, err, "releasing a lost grant"))) return rc;
    int64_t lowest = 0;
    int isnull = 1;
    bind_key(wq->stmt[WQ_LOWEST], job_id, stage);
    if ((rc = wq_int(wq, WQ_LOWEST, &lowest, &isnull, err, "finding a pending unit"))) return rc;
    if (isnull) {
        *none_left = 1;
        return ADAPT_OK;
    }
    s = wq->stmt[WQ_LEASE];
    bind_key(s, job_id, stage);
    sqlite3_bind_int64(s, 3, lowest);
    sqlite3_bind_int64(s, 4, rank);
    sqlite3_bind_int64(s, 5, attempt);
    if ((rc = wq_run(wq, WQ_LEASE, err, "leasing a unit"))) return rc;
    *shard = (uint64_t)lowest;
    return ADAPT_OK;
}

int workqueue_request(workqueue_t *wq, const char *job_id, uint32_t stage, uint64_t units,
                      uint32_t rank, uint32_t attempt, uint64_t *shard, int *none_left,
                      adapt_error *err)
{
    *none_left = 0;
    *shard = 0;
    if (units > INT64_MAX)
        return adapt_fail(err, ADAPT_EINVAL, "job %s: %llu units of work is out of range", job_id,
                          (unsigned long long)units);
    int rc = wq_run(wq, WQ_BEGIN, err, "begin");
    if (rc) return rc;
    rc = request_locked(wq, job_id, stage, units, rank, attempt, shard, none_left, err);
    return wq_end(wq, rc, err);
}

int workqueue_done(workqueue_t *wq, const char *job_id, uint32_t stage, uint64_t shard,
                   uint32_t rank, uint32_t attempt, const char *output, uint64_t records,
                   int *duplicate, adapt_error *err)
{
    *duplicate = 0;
    int rc = wq_run(wq, WQ_BEGIN, err, "begin");
    if (rc) return rc;
    sqlite3_stmt *s = wq->stmt[WQ_STATE_OF];
    bind_key(s, job_id, stage);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)shard);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        const unsigned char *st = sqlite3_column_text(s, 0);
        *duplicate = st && st[0] == 'd';
    } else if (step == SQLITE_DONE) {
        rc = adapt_fail(err, ADAPT_EINVAL, "job %s stage %u: rank %u reports unit %llu done, "
                        "which the daemon never handed out", job_id, stage, rank,
                        (unsigned long long)shard);
    } else {
        rc = wq_fail(wq, err, "reading a unit");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (!rc) {
        s = wq->stmt[WQ_DONE];
        bind_key(s, job_id, stage);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)shard);
        sqlite3_bind_int64(s, 4, rank);
        sqlite3_bind_int64(s, 5, attempt);
        sqlite3_bind_text(s, 6, output ? output : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, (sqlite3_int64)records);
        rc = wq_run(wq, WQ_DONE, err, "recording a finished unit");
    }
    return wq_end(wq, rc, err);
}

int workqueue_attempt_end(workqueue_t *wq, const char *job_id, uint32_t attempt,
                          uint64_t *requeued, adapt_error *err)
{
    sqlite3_stmt *s = wq->stmt[WQ_REQUEUE];
    sqlite3_bind_text(s, 1, job_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, attempt);
    int rc = wq_run(wq, WQ_REQUEUE, err, "putting leased units back");
    if (requeued) *requeued = rc ? 0 : (uint64_t)sqlite3_changes(wq->db);
    return rc;
}

int workqueue_counts_get(workqueue_t *wq, const char *job_id, uint32_t stage,
                         workqueue_counts *c, adapt_error *err)
{
    sqlite3_stmt *s = wq->stmt[WQ_COUNTS];
    bind_key(s, job_id, stage);
    int step = sqlite3_step(s), rc = ADAPT_OK;
    *c = (workqueue_counts){0};
    if (step == SQLITE_ROW) {
        c->total = (uint64_t)sqlite3_column_int64(s, 0);
        c->pending = (uint64_t)sqlite3_column_int64(s, 1);
        c->leased = (uint64_t)sqlite3_column_int64(s, 2);
        c->done = (uint64_t)sqlite3_column_int64(s, 3);
        c->records = (uint64_t)sqlite3_column_int64(s, 4);
        c->duplicates = (uint64_t)sqlite3_column_int64(s, 5);
    } else {
        rc = wq_fail(wq, err, "counting units");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}
