/* test_workqueue: the daemon's work queue (daemon/workqueue.c) on a real job store — units
 * leased lowest first, one lease per unit, done recorded durably (and a second ShardDone counted
 * as a duplicate), leases going back when their attempt ends, a resumed job redoing only the
 * unfinished units, a request that counts the units differently refused, a grant lost to a
 * daemon restart given back, and the schema-2 → 3 migration that adds the shards table. */
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "job_store.h"
#include "workqueue.h"

static char dir[] = "/tmp/adapt-test-workqueue-XXXXXX";

static void new_job(job_store_t *js, char id[JOB_STORE_ID_LEN + 1])
{
    job_store_new in = { .name = "s", .kind = "synthesize", .ranks = 2, .max_restarts = 1,
                         .spec_json = "{\"kind\":\"synthesize\"}" };
    adapt_error err = {0};
    CHECK_MSG(job_store_create(js, &in, id, &err) == ADAPT_OK, "%s", err.message);
}

/* One request; returns the unit granted, or -1 for none left, -2 for an error. */
static long long ask(workqueue_t *wq, const char *id, uint32_t stage, uint64_t units, uint32_t rank,
                     uint32_t attempt)
{
    uint64_t shard = 99;
    int none = -1;
    adapt_error err = {0};
    if (workqueue_request(wq, id, stage, units, rank, attempt, &shard, &none, &err) != ADAPT_OK)
        return -2;
    return none ? -1 : (long long)shard;
}

static int done(workqueue_t *wq, const char *id, uint64_t shard, uint32_t rank, uint32_t attempt)
{
    int dup = -1;
    adapt_error err = {0};
    int rc = workqueue_done(wq, id, 0, shard, rank, attempt, "/out/shard", 10 + shard, &dup, &err);
    CHECK_MSG(rc == ADAPT_OK, "%s", err.message);
    return dup;
}

static workqueue_counts counts(workqueue_t *wq, const char *id, uint32_t stage)
{
    workqueue_counts c;
    adapt_error err = {0};
    CHECK_MSG(workqueue_counts_get(wq, id, stage, &c, &err) == ADAPT_OK, "%s", err.message);
    return c;
}

static void test_lease_done_requeue(job_store_t *js, workqueue_t *wq)
{
    char id[JOB_STORE_ID_LEN + 1];
    new_job(js, id);
    workqueue_counts c = counts(wq, id, 0);
    CHECK(c.total == 0);
    /* two ranks of attempt 1 take the lowest pending units in turn, never the same one */
    CHECK(ask(wq, id, 0, 5, 0, 1) == 0);
    CHECK(ask(wq, id, 0, 5, 1, 1) == 1);
    c = counts(wq, id, 0);
    CHECK(c.total == 5 && c.pending == 3 && c.leased == 2 && c.done == 0);
    CHECK(done(wq, id, 1, 1, 1) == 0);
    CHECK(ask(wq, id, 0, 5, 1, 1) == 2);          /* rank 1 is faster: it takes the next */
    CHECK(done(wq, id, 2, 1, 1) == 0);
    CHECK(ask(wq, id, 0, 5, 1, 1) == 3);
    c = counts(wq, id, 0);
    CHECK(c.done == 2 && c.leased == 2 && c.pending == 1 && c.records == 11 + 12);
    /* a request counting the units differently: refused, naming both counts */
    uint64_t shard;
    int none;
    adapt_error err = {0};
    CHECK(workqueue_request(wq, id, 0, 7, 0, 1, &shard, &none, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "counts 7 units");
    CHECK_STR_CONTAINS(err.message, "holds 5");
    /* a unit never handed out cannot be done */
    int dup;
    CHECK(workqueue_done(wq, id, 0, 17, 0, 1, "x", 1, &dup, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "unit 17");
    /* attempt 1 ends (rank 0 was killed holding unit 0, rank 1 holding unit 3) */
    uint64_t requeued = 0;
    CHECK(workqueue_attempt_end(wq, id, 1, &requeued, &err) == ADAPT_OK && requeued == 2);
    c = counts(wq, id, 0);
    CHECK(c.done == 2 && c.leased == 0 && c.pending == 3);
    /* attempt 2 redoes only the unfinished units: 0, 3, 4, then none */
    CHECK(ask(wq, id, 0, 5, 0, 2) == 0);
    CHECK(ask(wq, id, 0, 5, 1, 2) == 3);
    CHECK(done(wq, id, 3, 1, 2) == 0);
    CHECK(ask(wq, id, 0, 5, 1, 2) == 4);
    CHECK(done(wq, id, 4, 1, 2) == 0);
    CHECK(ask(wq, id, 0, 5, 1, 2) == -1);        /* unit 0 is leased to rank 0: none left */
    CHECK(done(wq, id, 0, 0, 2) == 0);
    CHECK(ask(wq, id, 0, 5, 0, 2) == -1);
    c = counts(wq, id, 0);
    CHECK(c.done == 5 && c.pending == 0 && c.leased == 0 && c.duplicates == 0);
    /* a second ShardDone for a done unit is taken (its output is in place) and counted */
    CHECK(done(wq, id, 4, 0, 2) == 1);
    CHECK(counts(wq, id, 0).duplicates == 1);
    /* ending an attempt never touches done units */
    CHECK(workqueue_attempt_end(wq, id, 2, &requeued, &err) == ADAPT_OK && requeued == 0);
    CHECK(counts(wq, id, 0).done == 5);
}

static void test_lost_grant_and_stages(job_store_t *js, workqueue_t *wq)
{
    char id[JOB_STORE_ID_LEN + 1];
    new_job(js, id);
    CHECK(ask(wq, id, 0, 3, 0, 1) == 0);
    /* rank 0 asks again without reporting unit 0: its grant was lost (a daemon restart), so
     * unit 0 goes back first and is the one it gets */
    CHECK(ask(wq, id, 0, 3, 0, 1) == 0);
    workqueue_counts c = counts(wq, id, 0);
    CHECK(c.leased == 1 && c.pending == 2);
    /* another rank's lease is not released by rank 0's request */
    CHECK(ask(wq, id, 0, 3, 1, 1) == 1);
    CHECK(ask(wq, id, 0, 3, 0, 1) == 0);
    CHECK(counts(wq, id, 0).leased == 2);
    /* stages are separate tables of units */
    CHECK(ask(wq, id, 1, 2, 0, 1) == 0);
    c = counts(wq, id, 1);
    CHECK(c.total == 2 && c.leased == 1);
    CHECK(counts(wq, id, 0).total == 3);
    /* an empty job has nothing to hand out */
    char id2[JOB_STORE_ID_LEN + 1];
    new_job(js, id2);
    CHECK(ask(wq, id2, 0, 0, 0, 1) == -1);
}

/* The table is durable: a daemon killed right after a ShardDone finds the unit done. */
static void test_durable(void)
{
    char id[JOB_STORE_ID_LEN + 1];
    job_store_t *js = NULL;
    workqueue_t *wq = NULL;
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    CHECK_MSG(workqueue_open(&wq, js, &err) == ADAPT_OK, "%s", err.message);
    new_job(js, id);
    CHECK(ask(wq, id, 0, 2, 0, 1) == 0);
    CHECK(done(wq, id, 0, 0, 1) == 0);
    CHECK(ask(wq, id, 0, 2, 0, 1) == 1);
    workqueue_close(wq);
    job_store_close(js);
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    CHECK_MSG(workqueue_open(&wq, js, &err) == ADAPT_OK, "%s", err.message);
    workqueue_counts c = counts(wq, id, 0);
    CHECK(c.done == 1 && c.leased == 1 && c.records == 10);
    workqueue_close(wq);
    job_store_close(js);
}

/* A schema-2 database (no shards table) opens as version 3 with its jobs kept. */
static void test_migration(void)
{
    char sub[300], path[340];
    snprintf(sub, sizeof sub, "%s/v2", dir);
    snprintf(path, sizeof path, "%s/adaptd.db", sub);
    job_store_t *js = NULL;
    adapt_error err = {0};
    char id[JOB_STORE_ID_LEN + 1];
    CHECK_MSG(job_store_open(&js, sub, &err) == ADAPT_OK, "%s", err.message);
    new_job(js, id);
    job_store_close(js);
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "DROP TABLE shards; PRAGMA user_version = 2;", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_MSG(job_store_open(&js, sub, &err) == ADAPT_OK, "%s", err.message);
    workqueue_t *wq = NULL;
    CHECK_MSG(workqueue_open(&wq, js, &err) == ADAPT_OK, "%s", err.message);
    CHECK(ask(wq, id, 0, 1, 0, 1) == 0);
    job_store_record r;
    CHECK(job_store_get(js, id, &r, NULL) == ADAPT_OK && r.state == JOB_STORE_QUEUED);
    job_store_record_clear(&r);
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(job_store_sqlite(js), "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 3);
    sqlite3_finalize(s);
    workqueue_close(wq);
    job_store_close(js);
}

int main(void)
{
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    job_store_t *js = NULL;
    workqueue_t *wq = NULL;
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    CHECK_MSG(workqueue_open(&wq, js, &err) == ADAPT_OK, "%s", err.message);
    if (wq) {
        test_lease_done_requeue(js, wq);
        test_lost_grant_and_stages(js, wq);
    }
    workqueue_close(wq);
    job_store_close(js);
    test_durable();
    test_migration();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("workqueue");
}
