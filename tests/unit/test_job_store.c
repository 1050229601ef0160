/* test_job_store: the job lifecycle (every legal and illegal transition), attempts, progress and
 * the metrics series, paging, WAL mode, and a store killed with SIGKILL mid-work that reopens
 * with every committed job intact. */
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "job_store.h"

static char dir[] = "/tmp/adapt-test-job-store-XXXXXX";

static void new_job(job_store_t *js, char id[JOB_STORE_ID_LEN + 1], const char *name)
{
    job_store_new in = { .name = name, .kind = "train", .ranks = 2, .max_restarts = 1,
                         .spec_json = "{\"kind\":\"train\"}" };
    adapt_error err = {0};
    CHECK_MSG(job_store_create(js, &in, id, &err) == ADAPT_OK, "%s", err.message);
}

static int state_of(job_store_t *js, const char *id)
{
    job_store_record r;
    if (job_store_get(js, id, &r, NULL) != ADAPT_OK) return -1;
    job_store_record_clear(&r);
    return r.state;
}

/* Walks every (from, to) pair through the store itself: a job is driven to `from` along a
 * legal path, then asked to go to `to`, and the store must agree with the table. */
static void test_transitions(job_store_t *js)
{
    static const int path_to[JOB_STORE_STATE_COUNT][4] = {
        [JOB_STORE_QUEUED]    = { -1 },
        [JOB_STORE_STARTING]  = { JOB_STORE_STARTING, -1 },
        [JOB_STORE_RUNNING]   = { JOB_STORE_STARTING, JOB_STORE_RUNNING, -1 },
        [JOB_STORE_SUCCEEDED] = { JOB_STORE_STARTING, JOB_STORE_RUNNING, JOB_STORE_SUCCEEDED, -1 },
        [JOB_STORE_FAILED]    = { JOB_STORE_STARTING, JOB_STORE_FAILED, -1 },
        [JOB_STORE_CANCELLED] = { JOB_STORE_CANCELLED, -1 },
        [JOB_STORE_RETRYING]  = { JOB_STORE_STARTING, JOB_STORE_RETRYING, -1 },
        [JOB_STORE_PREEMPTED] = { JOB_STORE_STARTING, JOB_STORE_PREEMPTED, -1 },
    };
    int legal = 0, illegal = 0;
    for (int from = 0; from < JOB_STORE_STATE_COUNT; from++) {
        for (int to = 0; to < JOB_STORE_STATE_COUNT; to++) {
            char id[JOB_STORE_ID_LEN + 1];
            new_job(js, id, "t");
            for (int k = 0; path_to[from][k] >= 0; k++)
                CHECK(job_store_transition(js, id, path_to[from][k], NULL, NULL) == ADAPT_OK);
            CHECK(state_of(js, id) == from);
            adapt_error err = {0};
            int rc = job_store_transition(js, id, to, NULL, &err);
            int want = job_store_transition_allowed(from, to);
            CHECK_MSG((rc == ADAPT_OK) == want, "%s -> %s gave %d", job_store_state_name(from),
                      job_store_state_name(to), rc);
            CHECK(state_of(js, id) == (want ? to : from));
            if (!want) CHECK_STR_CONTAINS(err.message, "illegal transition");
            legal += want;
            illegal += !want;
        }
    }
    /* 19: running -> starting is a pipeline job's next stage (daemon/pipeline.h, issue 8) */
    CHECK(legal == 19);
    CHECK(illegal == 64 - 19);
    for (int s = 0; s < JOB_STORE_STATE_COUNT; s++)
        if (job_store_state_is_terminal(s))
            for (int t = 0; t < JOB_STORE_STATE_COUNT; t++) CHECK(!job_store_transition_allowed(s, t));
}

static void test_attempts_and_progress(job_store_t *js)
{
    char id[JOB_STORE_ID_LEN + 1];
    new_job(js, id, "progress");
    adapt_error err = {0};
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, &err) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_RUNNING, NULL, &err) == ADAPT_OK);
    for (int s = 1; s <= 5; s++) {
        job_store_progress p = { .step = (uint64_t)s, .total_steps = 5, .loss = 3.0 - 0.25 * s,
                                 .tokens_per_second = 1000 + s, .step_seconds = 0.5 };
        CHECK(job_store_add_progress(js, id, &p, &err) == ADAPT_OK);
    }
    CHECK(job_store_set_checkpoint(js, id, "/data/ckpt/step-4", &err) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_RETRYING, "rank 1 killed by signal 9", &err) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, &err) == ADAPT_OK);
    job_store_record r;
    CHECK(job_store_get(js, id, &r, &err) == ADAPT_OK);
    CHECK(r.attempt == 2);
    CHECK(r.has_progress && r.progress.step == 5 && r.progress.loss == 1.75);
    CHECK(strcmp(r.last_checkpoint, "/data/ckpt/step-4") == 0);
    CHECK_STR_CONTAINS(r.error, "signal 9");
    CHECK(r.started_ms > 0 && r.finished_ms == 0);
    job_store_record_clear(&r);

    job_store_progress pts[10];
    size_t n = 0;
    CHECK(job_store_metrics(js, id, 2, pts, 10, &n, &err) == ADAPT_OK);
    CHECK(n == 3 && pts[0].step == 3 && pts[2].step == 5 && pts[2].tokens_per_second == 1005);
    CHECK(job_store_metrics(js, id, -1, pts, 2, &n, &err) == ADAPT_OK);
    CHECK(n == 2 && pts[0].step == 1);
    CHECK(job_store_add_progress(js, "0123456789abcdef0123456789abcdef", pts, &err) == ADAPT_ENOTFOUND);
    CHECK(job_store_get(js, "nope", &r, &err) == ADAPT_ENOTFOUND);
}

static void test_paging(job_store_t *js)
{
    char ids[7][JOB_STORE_ID_LEN + 1];
    for (int i = 0; i < 7; i++) new_job(js, ids[i], "page");
    CHECK(strcmp(ids[0], ids[1]) != 0);
    job_store_record rows[3];
    size_t n, seen = 0;
    int64_t after = 0;
    for (int page = 0; page < 1000; page++) {   /* bounded: 7 + ~100 jobs in pages of 3 */
        CHECK(job_store_list(js, JOB_STORE_QUEUED, after, rows, 3, &n, NULL) == ADAPT_OK);
        for (size_t i = 0; i < n; i++) {
            CHECK(rows[i].state == JOB_STORE_QUEUED && rows[i].seq > after);
            after = rows[i].seq;
            job_store_record_clear(&rows[i]);
        }
        seen += n;
        if (n < 3) break;
    }
    uint64_t counts[JOB_STORE_STATE_COUNT];
    CHECK(job_store_count_by_state(js, counts, NULL) == ADAPT_OK);
    CHECK(counts[JOB_STORE_QUEUED] == seen);
}

/* A child creates jobs, moves one, then dies by SIGKILL without closing anything. */
static void test_kill_and_reopen(void)
{
    char sub[256];
    snprintf(sub, sizeof sub, "%s/killed", dir);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        job_store_t *js;
        if (job_store_open(&js, sub, NULL) != ADAPT_OK) _exit(3);
        char id[JOB_STORE_ID_LEN + 1];
        job_store_new in = { .name = "survivor", .kind = "train", .ranks = 1, .spec_json = "{}" };
        job_store_create(js, &in, id, NULL);
        job_store_transition(js, id, JOB_STORE_STARTING, NULL, NULL);
        job_store_transition(js, id, JOB_STORE_RUNNING, NULL, NULL);
        job_store_progress p = { .step = 42, .loss = 0.5 };
        job_store_add_progress(js, id, &p, NULL);
        if (write(fds[1], id, JOB_STORE_ID_LEN) != JOB_STORE_ID_LEN) _exit(4);
        raise(SIGKILL);
    }
    close(fds[1]);
    char id[JOB_STORE_ID_LEN + 1] = {0};
    CHECK(read(fds[0], id, JOB_STORE_ID_LEN) == JOB_STORE_ID_LEN);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    job_store_t *js;
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&js, sub, &err) == ADAPT_OK, "%s", err.message);
    job_store_record r;
    CHECK(job_store_get(js, id, &r, &err) == ADAPT_OK);
    CHECK(r.state == JOB_STORE_RUNNING && r.attempt == 1 && r.progress.step == 42);
    CHECK(strcmp(r.name, "survivor") == 0);
    job_store_record_clear(&r);
    job_store_close(js);

    sqlite3 *db;
    char path[300];
    snprintf(path, sizeof path, "%s/adaptd.db", sub);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* The scheduler's columns: an attempt's process, Slurm id and Done, a pending cancel; and
 * starting -> running keeps the attempt open (it is the same attempt going on). */
static void test_attempt_records(job_store_t *js)
{
    char id[JOB_STORE_ID_LEN + 1];
    job_store_new in = { .name = "att", .kind = "train", .ranks = 2, .max_restarts = 1, .spec_json = "{}" };
    CHECK(job_store_create(js, &in, id, NULL) == ADAPT_OK);
    adapt_error err = {0};
    job_store_attempt a;
    CHECK(job_store_attempt_get(js, id, 1, &a, &err) == ADAPT_ENOTFOUND);
    CHECK(job_store_attempt_set_done(js, id, 0, JOB_STORE_DONE_OK, NULL, &err) == ADAPT_ENOTFOUND);
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_process(js, id, 1, 4242, 987654, 4242, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_process(js, id, 2, 1, 1, 1, &err) == ADAPT_ENOTFOUND);
    CHECK(job_store_transition(js, id, JOB_STORE_RUNNING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_get(js, id, 1, &a, NULL) == ADAPT_OK);
    CHECK(a.attempt == 1 && a.ended_ms == 0 && a.outcome[0] == '\0');
    CHECK(a.pid == 4242 && a.pid_start == 987654 && a.pgid == 4242 && a.done == JOB_STORE_DONE_NONE);
    CHECK(job_store_attempt_set_done(js, id, 0, JOB_STORE_DONE_FATAL, "bad spec", NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_done(js, id, 0, 9, NULL, &err) == ADAPT_EINVAL);
    CHECK(job_store_attempt_set_slurm_id(js, id, 1, "4100", NULL) == ADAPT_OK);
    CHECK(job_store_request_cancel(js, id, NULL) == ADAPT_OK);
    CHECK(job_store_request_cancel(js, "0123456789abcdef0123456789abcdef", &err) == ADAPT_ENOTFOUND);
    job_store_record r;
    CHECK(job_store_get(js, id, &r, NULL) == ADAPT_OK && r.cancel_requested == 1);
    job_store_record_clear(&r);
    CHECK(job_store_transition(js, id, JOB_STORE_RETRYING, "attempt 1 of 2 failed", NULL) == ADAPT_OK);
    CHECK(job_store_attempt_get(js, id, 1, &a, NULL) == ADAPT_OK);
    CHECK(a.ended_ms > 0 && strcmp(a.outcome, "retrying") == 0 && strcmp(a.error, "attempt 1 of 2 failed") == 0);
    CHECK(a.done == JOB_STORE_DONE_FATAL && strcmp(a.done_error, "bad spec") == 0);
    CHECK(strcmp(a.slurm_id, "4100") == 0);
    /* the next attempt starts clean */
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_get(js, id, 2, &a, NULL) == ADAPT_OK);
    CHECK(a.pid == 0 && a.done == JOB_STORE_DONE_NONE && a.slurm_id[0] == '\0' && a.ended_ms == 0);
}

/* A version-1 database (as the adaptd before the scheduler wrote it) is migrated in place,
 * keeping its jobs; one from a newer adaptd is refused. */
static void test_migration(void)
{
    char sub[256], path[300];
    snprintf(sub, sizeof sub, "%s/v1", dir);
    CHECK(mkdir(sub, 0700) == 0);
    snprintf(path, sizeof path, "%s/adaptd.db", sub);
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
        "CREATE TABLE jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " name TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, ranks INTEGER NOT NULL,"
        " attempt INTEGER NOT NULL, max_restarts INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
        " started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,"
        " updated_ms INTEGER NOT NULL, has_progress INTEGER NOT NULL DEFAULT 0,"
        " step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0,"
        " epoch INTEGER NOT NULL DEFAULT 0, samples INTEGER NOT NULL DEFAULT 0,"
        " tokens INTEGER NOT NULL DEFAULT 0, loss REAL NOT NULL DEFAULT 0, lr REAL NOT NULL DEFAULT 0,"
        " grad_norm REAL NOT NULL DEFAULT 0, step_seconds REAL NOT NULL DEFAULT 0,"
        " tokens_per_second REAL NOT NULL DEFAULT 0, progress_ms INTEGER NOT NULL DEFAULT 0,"
        " last_checkpoint TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '', spec TEXT NOT NULL);"
        "CREATE TABLE attempts(job_id TEXT NOT NULL REFERENCES jobs(id), attempt INTEGER NOT NULL,"
        " started_ms INTEGER NOT NULL, ended_ms INTEGER NOT NULL DEFAULT 0,"
        " outcome TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',"
        " PRIMARY KEY(job_id, attempt)) WITHOUT ROWID;"
        "INSERT INTO jobs(id, name, kind, state, ranks, attempt, max_restarts, created_ms, updated_ms, spec)"
        " VALUES('00112233445566778899aabbccddeeff', 'old', 'train', 'running', 2, 1, 0, 1, 1, '{}');"
        "INSERT INTO attempts(job_id, attempt, started_ms) VALUES('00112233445566778899aabbccddeeff', 1, 1);"
        "PRAGMA user_version = 1;", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    for (int round = 0; round < 2; round++) {   /* the second open finds version 2: no change */
        job_store_t *js;
        adapt_error err = {0};
        CHECK_MSG(job_store_open(&js, sub, &err) == ADAPT_OK, "%s", err.message);
        if (!js) return;
        job_store_record r;
        CHECK(job_store_get(js, "00112233445566778899aabbccddeeff", &r, NULL) == ADAPT_OK);
        CHECK(r.state == JOB_STORE_RUNNING && strcmp(r.name, "old") == 0 && r.cancel_requested == 0);
        job_store_record_clear(&r);
        job_store_attempt a;
        CHECK(job_store_attempt_get(js, "00112233445566778899aabbccddeeff", 1, &a, NULL) == ADAPT_OK);
        CHECK(a.pid == 0 && a.done == JOB_STORE_DONE_NONE && a.slurm_id[0] == '\0');
        job_store_close(js);
    }
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 99;", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    job_store_t *js = NULL;
    adapt_error err = {0};
    CHECK(job_store_open(&js, sub, &err) == ADAPT_EUNSUPPORTED && js == NULL);
    CHECK_STR_CONTAINS(err.message, "schema version 99");
}

int main(void)
{
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    job_store_t *js;
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    test_transitions(js);
    test_attempts_and_progress(js);
    test_paging(js);
    test_attempt_records(js);
    job_store_close(js);
    test_kill_and_reopen();
    test_migration();
    CHECK(job_store_state_parse("running") == JOB_STORE_RUNNING && job_store_state_parse("x") == -1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("job_store");
}
