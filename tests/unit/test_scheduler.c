/* test_scheduler: the scheduler in-process against a stand-in mpirun (a shell script that
 * records its arguments and environment, then exits with a chosen status or sleeps): the slot
 * rule on its own; the command line, environment, spec.json and log folder of an attempt;
 * a job that must wait for slots; retry with --resume once a checkpoint exists, and failure
 * when the attempts are used up; exit 2 not retried; cancel of a running attempt; heartbeat
 * time-out; recovery after a restart (a live process adopted and watched, a dead one retried,
 * a stored Done honoured); launcher "slurm" through daemon/slurm.c against the stand-in Slurm
 * commands (tests/integration/fake_slurm) and deploy/slurm's template.
 * Usage: test_scheduler FAKE_SLURM_DIR SLURM_TEMPLATE */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "launcher.h"
#include "scheduler.h"

static char dir[] = "/tmp/adapt-test-scheduler-XXXXXX";

static void test_plan(void)
{
    uint8_t d[8];
    const uint32_t a[] = { 2, 2, 1 };
    CHECK(scheduler_plan(4, 4, a, 3, d) == 2 && d[0] == SCHEDULER_START && d[1] == SCHEDULER_START &&
          d[2] == SCHEDULER_WAIT);
    /* a big job that does not fit stops the small one behind it: no starvation */
    const uint32_t b[] = { 1, 4, 1 };
    CHECK(scheduler_plan(4, 3, b, 3, d) == 1 && d[0] == SCHEDULER_START && d[1] == SCHEDULER_WAIT &&
          d[2] == SCHEDULER_WAIT);
    /* one that can never fit is failed, and does not block */
    const uint32_t c[] = { 8, 1, 2 };
    CHECK(scheduler_plan(4, 4, c, 3, d) == 2 && d[0] == SCHEDULER_NEVER && d[1] == SCHEDULER_START &&
          d[2] == SCHEDULER_START);
    CHECK(scheduler_plan(4, 0, a, 3, d) == 0 && d[0] == SCHEDULER_WAIT);
    CHECK(scheduler_plan(4, 4, a, 0, d) == 0);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) { fputs(text, f); fclose(f); }
}

static void read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

static void test_has_checkpoint(void)
{
    char out[256], p[400];
    snprintf(out, sizeof out, "%s/ck", dir);
    CHECK(!scheduler_has_checkpoint(out));
    snprintf(p, sizeof p, "mkdir -p '%s/checkpoints/step-00000004'", out);
    CHECK(system(p) == 0);
    CHECK(!scheduler_has_checkpoint(out));   /* being written: no DONE yet */
    snprintf(p, sizeof p, "%s/checkpoints/step-00000004/DONE", out);
    write_text(p, "adaptd checkpoint 1\n");
    CHECK(scheduler_has_checkpoint(out));
    CHECK(!scheduler_has_checkpoint(""));
}

/* ---- a scheduler on a loop, with the stand-in mpirun ------------------------------------------ */

typedef struct fixture {
    uv_loop_t    loop;
    uv_timer_t   poll;
    job_store_t *js;
    scheduler_t *s;
    char         mpirun[300], exit_file[300], worker[300];
    const char  *fake_slurm, *slurm_template;
    const char  *wait_id;
    int          wait_state;
    int          timed_out;
    uint64_t     deadline;
} fixture;

static int job_state(job_store_t *js, const char *id, job_store_record *out)
{
    job_store_record r;
    if (job_store_get(js, id, &r, NULL) != ADAPT_OK) return -1;
    if (out) *out = r;
    else job_store_record_clear(&r);
    return r.state;
}

static void on_poll(uv_timer_t *t)
{
    fixture *fx = t->data;
    if (job_state(fx->js, fx->wait_id, NULL) == fx->wait_state) uv_stop(&fx->loop);
    else if (uv_now(&fx->loop) > fx->deadline) { fx->timed_out = 1; uv_stop(&fx->loop); }
}

/* Runs the loop until job id is in state, or 10 s. */
static int run_until(fixture *fx, const char *id, int state)
{
    fx->wait_id = id;
    fx->wait_state = state;
    fx->timed_out = 0;
    uv_update_time(&fx->loop);
    fx->deadline = uv_now(&fx->loop) + 10000;
    uv_timer_start(&fx->poll, on_poll, 20, 20);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&fx->poll);
    int got = job_state(fx->js, id, NULL);
    CHECK_MSG(got == state, "job %s: %s, waited for %s", id, job_store_state_name(got),
              job_store_state_name(state));
    return got == state;
}

static void fixture_scheduler(fixture *fx, uint64_t heartbeat_ms)
{
    char link[300];
    snprintf(link, sizeof link, "%s/link.sock", dir);
    scheduler_config cfg = { .store = fx->js, .slots = 3, .link_path = link, .mpirun = fx->mpirun,
                             .worker = fx->fake_slurm ? fx->worker : "/opt/adapt/adapt-worker",
                             .kill_grace_ms = 300, .heartbeat_timeout_ms = heartbeat_ms, .poll_ms = 50,
                             .slurm_template = fx->slurm_template, .slurm_poll_ms = 100 };
    char cmds[4][400];
    const char **slots[4] = { &cfg.sbatch, &cfg.squeue, &cfg.scancel, &cfg.sacct };
    static const char *const names[4] = { "sbatch", "squeue", "scancel", "sacct" };
    for (int i = 0; fx->fake_slurm && i < 4; i++) {
        snprintf(cmds[i], sizeof cmds[i], "%s/%s", fx->fake_slurm, names[i]);
        *slots[i] = cmds[i];
    }
    adapt_error err = {0};
    CHECK_MSG(scheduler_init(&fx->s, &fx->loop, &cfg, &err) == ADAPT_OK, "%s", err.message);
}

static void fixture_open(fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    char state[300];
    snprintf(state, sizeof state, "%s/state", dir);
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&fx->js, state, &err) == ADAPT_OK, "%s", err.message);
    uv_loop_init(&fx->loop);
    uv_timer_init(&fx->loop, &fx->poll);
    fx->poll.data = fx;
    snprintf(fx->mpirun, sizeof fx->mpirun, "%s/mpirun", dir);
    snprintf(fx->exit_file, sizeof fx->exit_file, "%s/exit-code", dir);
    write_text(fx->mpirun,
               "#!/bin/sh\n"
               "# stand-in mpirun: records its arguments and the ADAPTD_ environment\n"
               "echo \"$@\" > \"$ADAPTD_LOG_DIR/argv\"\n"
               "env | grep '^ADAPTD_' | sort > \"$ADAPTD_LOG_DIR/env\"\n"
               "read code < \"$(dirname \"$0\")/exit-code\"\n"
               "if [ \"$code\" = sleep ]; then exec sleep 30; fi\n"
               "sleep 0.2\n"
               "exit \"$code\"\n");
    chmod(fx->mpirun, 0700);
    write_text(fx->exit_file, "0\n");
}

static void fixture_close_scheduler(fixture *fx)
{
    scheduler_close(fx->s);
    fx->s = NULL;
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void fixture_close(fixture *fx)
{
    if (fx->s) fixture_close_scheduler(fx);
    uv_close((uv_handle_t *)&fx->poll, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&fx->loop) == 0);
    job_store_close(fx->js);
}

static void create(fixture *fx, uint32_t ranks, uint32_t max_restarts, const char *spec, char *id)
{
    job_store_new in = { .name = "t", .kind = "train", .ranks = ranks, .max_restarts = max_restarts,
                         .spec_json = spec };
    CHECK(job_store_create(fx->js, &in, id, NULL) == ADAPT_OK);
}

static void attempt_file(fixture *fx, const char *id, int attempt, const char *name, char *buf,
                         size_t cap)
{
    char jd[300], p[400];
    job_store_job_dir(fx->js, id, jd, sizeof jd);
    snprintf(p, sizeof p, "%s/logs/attempt-%d/%s", jd, attempt, name);
    read_text(p, buf, cap);
}

static void test_attempts(void)
{
    fixture fx;
    fixture_open(&fx);
    fixture_scheduler(&fx, 0);
    char a[JOB_STORE_ID_LEN + 1], b[JOB_STORE_ID_LEN + 1], spec[600], out[200], buf[2048];
    snprintf(out, sizeof out, "%s/out-a", dir);
    snprintf(spec, sizeof spec, "{\"kind\":\"train\",\"ranks\":2,\"train\":{\"output_dir\":\"%s\"}}", out);
    create(&fx, 2, 1, spec, a);
    create(&fx, 2, 0, "{\"kind\":\"train\"}", b);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, a, JOB_STORE_STARTING));
    /* 3 slots: b (2 ranks) waits while a holds 2 */
    CHECK(job_state(fx.js, b, NULL) == JOB_STORE_QUEUED);
    CHECK(scheduler_active(fx.s) == 1 && scheduler_slots_used(fx.s) == 2);
    adapt_error err = {0};
    CHECK(scheduler_checkpoint(fx.s, a, &err) == ADAPT_EINVAL);   /* starting, not running */
    CHECK(scheduler_checkpoint(fx.s, "0123456789abcdef0123456789abcdef", &err) == ADAPT_ENOTFOUND);

    /* attempt 1 exits 0 without a Done: retried; a complete checkpoint exists by then */
    char p[900];
    snprintf(p, sizeof p, "mkdir -p '%s/checkpoints/step-00000002' && touch '%s/checkpoints/step-00000002/DONE'", out, out);
    CHECK(system(p) == 0);
    job_store_record r;
    CHECK(run_until(&fx, a, JOB_STORE_FAILED));
    CHECK(job_state(fx.js, a, &r) == JOB_STORE_FAILED);
    CHECK(r.attempt == 2);
    CHECK_STR_CONTAINS(r.error, "attempt 2 of 2 failed: exited with status 0 without reporting Done");
    job_store_record_clear(&r);
    job_store_attempt at;
    CHECK(job_store_attempt_get(fx.js, a, 1, &at, NULL) == ADAPT_OK);
    CHECK(strcmp(at.outcome, "retrying") == 0 && at.pid > 0 && at.pgid == at.pid && at.pid_start > 0);
    CHECK_STR_CONTAINS(at.error, "attempt 1 of 2 failed");

    attempt_file(&fx, a, 1, "argv", buf, sizeof buf);
    char want[900];
    /* no backend in the spec: --backend cpu */
    snprintf(want, sizeof want, "-np 2 %s--oversubscribe --bind-to none /opt/adapt/adapt-worker "
             "train --backend cpu --spec %s/state/jobs/%s/spec.json\n", geteuid() == 0 ? "--allow-run-as-root " : "",
             dir, a);
    CHECK_MSG(strcmp(buf, want) == 0, "attempt 1 argv: %s", buf);
    attempt_file(&fx, a, 2, "argv", buf, sizeof buf);
    CHECK_MSG(strstr(buf, "spec.json --resume\n") != NULL, "attempt 2 argv: %s", buf);
    attempt_file(&fx, a, 2, "env", buf, sizeof buf);
    snprintf(want, sizeof want, "ADAPTD_ATTEMPT=2\nADAPTD_HEARTBEAT_MS=10000\nADAPTD_JOB_ID=%s\n"
             "ADAPTD_LINK=%s/link.sock\nADAPTD_LOG_DIR=%s/state/jobs/%s/logs/attempt-2\n", a, dir, dir, a);
    CHECK_MSG(strcmp(buf, want) == 0, "attempt 2 env: %s", buf);
    char jd[300];
    job_store_job_dir(fx.js, a, jd, sizeof jd);
    snprintf(p, sizeof p, "%s/spec.json", jd);
    read_text(p, buf, sizeof buf);
    CHECK(strcmp(buf, spec) == 0);

    /* b ran once a's slots were free: after a's last attempt ended */
    CHECK(run_until(&fx, b, JOB_STORE_FAILED));
    job_store_attempt a2, b1;
    CHECK(job_store_attempt_get(fx.js, a, 2, &a2, NULL) == ADAPT_OK &&
          job_store_attempt_get(fx.js, b, 1, &b1, NULL) == ADAPT_OK);
    CHECK(b1.started_ms >= a2.ended_ms);
    CHECK(job_state(fx.js, b, &r) == JOB_STORE_FAILED && r.attempt == 1);
    job_store_record_clear(&r);

    /* exit 2 (a spec error) is not retried */
    char c[JOB_STORE_ID_LEN + 1];
    write_text(fx.exit_file, "2\n");
    create(&fx, 1, 3, "{\"kind\":\"train\"}", c);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, c, JOB_STORE_FAILED));
    CHECK(job_state(fx.js, c, &r) == JOB_STORE_FAILED && r.attempt == 1);
    CHECK_STR_CONTAINS(r.error, "not retried");
    job_store_record_clear(&r);

    /* cancel: queued at once; running stopped, then cancelled */
    char d[JOB_STORE_ID_LEN + 1], e[JOB_STORE_ID_LEN + 1];
    write_text(fx.exit_file, "sleep\n");
    create(&fx, 3, 0, "{\"kind\":\"train\"}", d);
    create(&fx, 1, 0, "{\"kind\":\"train\"}", e);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, d, JOB_STORE_STARTING));
    int pending = -1;
    CHECK(scheduler_cancel(fx.s, e, &pending, &err) == ADAPT_OK && pending == 0);
    CHECK(job_state(fx.js, e, NULL) == JOB_STORE_CANCELLED);
    usleep(300000);   /* the stand-in sleeps by now */
    CHECK(scheduler_cancel(fx.s, d, &pending, &err) == ADAPT_OK && pending == 1);
    CHECK(job_state(fx.js, d, &r) == JOB_STORE_STARTING && r.cancel_requested);
    job_store_record_clear(&r);
    CHECK(run_until(&fx, d, JOB_STORE_CANCELLED));
    CHECK(scheduler_cancel(fx.s, d, &pending, &err) == ADAPT_EINVAL);
    fixture_close(&fx);
}

static void test_heartbeat(void)
{
    fixture fx;
    fixture_open(&fx);
    fixture_scheduler(&fx, 400);
    write_text(fx.exit_file, "sleep\n");
    char a[JOB_STORE_ID_LEN + 1];
    create(&fx, 1, 0, "{\"kind\":\"train\"}", a);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, a, JOB_STORE_FAILED));
    job_store_record r;
    CHECK(job_state(fx.js, a, &r) == JOB_STORE_FAILED);
    CHECK_STR_CONTAINS(r.error, "no heartbeat");
    job_store_record_clear(&r);
    char buf[256];
    attempt_file(&fx, a, 1, "env", buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "ADAPTD_HEARTBEAT_MS=100\n");
    fixture_close(&fx);
}

static void run_for(fixture *fx, uint64_t ms);

/* --hold: queued jobs stay queued. */
static void test_hold(void)
{
    fixture fx;
    fixture_open(&fx);
    char link[300];
    snprintf(link, sizeof link, "%s/link.sock", dir);
    scheduler_config cfg = { .store = fx.js, .slots = 3, .link_path = link, .mpirun = fx.mpirun,
                             .worker = "w", .kill_grace_ms = 300, .poll_ms = 50, .hold = 1 };
    CHECK(scheduler_init(&fx.s, &fx.loop, &cfg, NULL) == ADAPT_OK);
    char a[JOB_STORE_ID_LEN + 1];
    create(&fx, 1, 0, "{\"kind\":\"train\"}", a);
    scheduler_kick(fx.s);
    run_for(&fx, 300);
    CHECK(job_state(fx.js, a, NULL) == JOB_STORE_QUEUED && scheduler_active(fx.s) == 0);
    CHECK(!scheduler_slurm_enabled(fx.s));
    fixture_close(&fx);
}

/* A process in a session of its own, as the launcher would have left it. */
static pid_t spawn_sleeper(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        execlp("sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    usleep(50000);
    return pid;
}

static void test_recover(void)
{
    fixture fx;
    fixture_open(&fx);
    write_text(fx.exit_file, "0\n");
    char live[JOB_STORE_ID_LEN + 1], done[JOB_STORE_ID_LEN + 1], lost[JOB_STORE_ID_LEN + 1];
    char stopped[JOB_STORE_ID_LEN + 1];
    create(&fx, 1, 1, "{\"kind\":\"train\"}", live);
    create(&fx, 1, 0, "{\"kind\":\"train\"}", done);
    create(&fx, 1, 0, "{\"kind\":\"train\"}", lost);
    create(&fx, 1, 0, "{\"kind\":\"train\"}", stopped);
    /* its workers stopped after a checkpoint (SIGTERM from outside) and exited: preempted */
    CHECK(job_store_transition(fx.js, stopped, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_transition(fx.js, stopped, JOB_STORE_RUNNING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_done(fx.js, stopped, 0, JOB_STORE_DONE_STOPPED, NULL, NULL) == ADAPT_OK);
    /* as a daemon killed mid-job left them */
    pid_t pid = spawn_sleeper();
    uint64_t st = 0;
    CHECK(launcher_proc_info(pid, &st, NULL));
    CHECK(job_store_transition(fx.js, live, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_transition(fx.js, live, JOB_STORE_RUNNING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_process(fx.js, live, 1, pid, st, pid, NULL) == ADAPT_OK);
    CHECK(job_store_transition(fx.js, done, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_transition(fx.js, done, JOB_STORE_RUNNING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_process(fx.js, done, 1, 999999, 1, 999999, NULL) == ADAPT_OK);
    CHECK(job_store_attempt_set_done(fx.js, done, 0, JOB_STORE_DONE_OK, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_transition(fx.js, lost, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    /* a live pid with another start time is another process (pid reuse): not adopted */
    uint64_t self_st = 0;
    CHECK(launcher_proc_info(getpid(), &self_st, NULL));
    CHECK(job_store_attempt_set_process(fx.js, lost, 1, getpid(), self_st + 1, 0, NULL) == ADAPT_OK);

    fixture_scheduler(&fx, 0);
    adapt_error err = {0};
    CHECK_MSG(scheduler_recover(fx.s, &err) == ADAPT_OK, "%s", err.message);
    job_store_record r;
    CHECK(job_state(fx.js, done, NULL) == JOB_STORE_SUCCEEDED);
    CHECK(job_state(fx.js, lost, &r) == JOB_STORE_FAILED);
    CHECK_STR_CONTAINS(r.error, "attempt 1 of 1 failed");
    job_store_record_clear(&r);
    CHECK(job_state(fx.js, live, NULL) == JOB_STORE_RUNNING);
    CHECK(job_state(fx.js, stopped, NULL) == JOB_STORE_PREEMPTED);
    /* the preempted job starts again (max_restarts 0: a preemption is not a failure); its
     * attempt 2 exits 0 without Done and fails as attempt 2 of 2 */
    CHECK(run_until(&fx, stopped, JOB_STORE_FAILED));
    CHECK(job_state(fx.js, stopped, &r) == JOB_STORE_FAILED && r.attempt == 2);
    CHECK_STR_CONTAINS(r.error, "attempt 2 of 2 failed");
    job_store_record_clear(&r);
    uint32_t np = 0;
    CHECK(job_store_attempt_count(fx.js, stopped, JOB_STORE_PREEMPTED, &np, NULL) == ADAPT_OK && np == 1);
    /* only the adopted job is still watched, holding its slot */
    CHECK(scheduler_active(fx.s) == 1 && scheduler_slots_used(fx.s) == 1);

    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* gone without a Done: retried (attempt 2 runs the stand-in, which exits 0 without Done) */
    CHECK(run_until(&fx, live, JOB_STORE_FAILED));
    CHECK(job_state(fx.js, live, &r) == JOB_STORE_FAILED && r.attempt == 2);
    job_store_record_clear(&r);
    job_store_attempt at;
    CHECK(job_store_attempt_get(fx.js, live, 1, &at, NULL) == ADAPT_OK);
    CHECK_STR_CONTAINS(at.error, "without reporting Done");
    fixture_close(&fx);
}

/* Shutdown lets go of a running attempt: its process lives on, and the next scheduler adopts
 * it and cancels it on request. */
static void test_detach_and_adopt(void)
{
    fixture fx;
    fixture_open(&fx);
    fixture_scheduler(&fx, 0);
    write_text(fx.exit_file, "sleep\n");
    char a[JOB_STORE_ID_LEN + 1];
    create(&fx, 1, 0, "{\"kind\":\"train\"}", a);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, a, JOB_STORE_STARTING));
    fixture_close_scheduler(&fx);
    job_store_attempt at;
    CHECK(job_store_attempt_get(fx.js, a, 1, &at, NULL) == ADAPT_OK);
    CHECK(launcher_proc_info((int)at.pid, NULL, NULL) == 1);

    fixture_scheduler(&fx, 0);
    adapt_error err = {0};
    CHECK(scheduler_recover(fx.s, &err) == ADAPT_OK);
    CHECK(scheduler_active(fx.s) == 1 && job_state(fx.js, a, NULL) == JOB_STORE_STARTING);
    int pending = 0;
    CHECK(scheduler_cancel(fx.s, a, &pending, &err) == ADAPT_OK && pending == 1);
    CHECK(run_until(&fx, a, JOB_STORE_CANCELLED));
    CHECK(!launcher_group_alive((int)at.pgid, NULL));
    /* this test's process is the sleeper's parent: reap it */
    waitpid((pid_t)at.pid, NULL, WNOHANG);
    fixture_close(&fx);
}

/* A stand-in adapt-worker for Slurm attempts: each task records its arguments, then exits as
 * exit-code says (or sleeps). */
static void write_worker(fixture *fx)
{
    snprintf(fx->worker, sizeof fx->worker, "%s/worker", dir);
    write_text(fx->worker,
               "#!/bin/sh\n"
               "echo \"$@\" > \"$ADAPTD_LOG_DIR/worker-$SLURM_PROCID\"\n"
               "read code < \"$(dirname \"$0\")/exit-code\"\n"
               "if [ \"$code\" = sleep ]; then exec sleep 30; fi\n"
               "exit \"$code\"\n");
    chmod(fx->worker, 0700);
}

static void run_for(fixture *fx, uint64_t ms)
{
    fx->wait_id = "";
    fx->wait_state = -2;
    uv_update_time(&fx->loop);
    fx->deadline = uv_now(&fx->loop) + ms;
    uv_timer_start(&fx->poll, on_poll, 20, 20);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&fx->poll);
}

static void test_slurm(const char *fake, const char *tmpl)
{
    char fake_dir[300];
    snprintf(fake_dir, sizeof fake_dir, "%s/fake-slurm", dir);
    mkdir(fake_dir, 0700);
    setenv("FAKE_SLURM_DIR", fake_dir, 1);
    fixture fx;
    fixture_open(&fx);
    fx.fake_slurm = fake;
    fx.slurm_template = tmpl;
    write_worker(&fx);
    fixture_scheduler(&fx, 0);
    CHECK(scheduler_slurm_enabled(fx.s));
    /* exit 2 from the tasks: the batch script's exit code, a spec error, not retried */
    write_text(fx.exit_file, "2\n");
    char a[JOB_STORE_ID_LEN + 1], b[JOB_STORE_ID_LEN + 1];
    create(&fx, 2, 3, "{\"kind\":\"train\",\"launcher\":\"slurm\",\"backend\":\"cuda\"}", a);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, a, JOB_STORE_FAILED));
    job_store_record r;
    CHECK(job_state(fx.js, a, &r) == JOB_STORE_FAILED && r.attempt == 1);
    CHECK_STR_CONTAINS(r.error, "not retried");
    job_store_record_clear(&r);
    job_store_attempt at;
    CHECK(job_store_attempt_get(fx.js, a, 1, &at, NULL) == ADAPT_OK && at.slurm_id[0] && at.pid == 0);
    char buf[1024], want[600];
    attempt_file(&fx, a, 1, "worker-1", buf, sizeof buf);
    /* the JobSpec's backend reaches the worker through the Slurm template too */
    snprintf(want, sizeof want, "train --backend cuda --spec %s/state/jobs/%s/spec.json\n", dir, a);
    CHECK_MSG(strcmp(buf, want) == 0, "the worker's arguments under srun: %s", buf);

    /* a running Slurm job is cancelled through scancel */
    write_text(fx.exit_file, "sleep\n");
    create(&fx, 1, 0, "{\"kind\":\"train\",\"launcher\":\"slurm\"}", b);
    scheduler_kick(fx.s);
    CHECK(run_until(&fx, b, JOB_STORE_STARTING));
    run_for(&fx, 800);   /* sbatch has answered and the tasks run */
    CHECK(job_store_attempt_get(fx.js, b, 1, &at, NULL) == ADAPT_OK && at.slurm_id[0]);
    int pending = 0;
    adapt_error err = {0};
    CHECK(scheduler_cancel(fx.s, b, &pending, &err) == ADAPT_OK && pending == 1);
    CHECK(run_until(&fx, b, JOB_STORE_CANCELLED));
    fixture_close(&fx);
}

int main(int argc, char **argv)
{
    if (!mkdtemp(dir)) return 1;
    test_plan();
    test_has_checkpoint();
    test_attempts();
    test_heartbeat();
    test_recover();
    test_detach_and_adopt();
    test_hold();
    if (argc >= 3) test_slurm(argv[1], argv[2]);
    else fprintf(stderr, "test_scheduler: no FAKE_SLURM_DIR and template given: Slurm part skipped\n");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("scheduler");
}
