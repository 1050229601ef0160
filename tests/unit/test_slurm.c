/* test_slurm: the Slurm launcher (daemon/slurm.c) on a uv loop against the stand-in sbatch,
 * srun, squeue, sacct and scancel of tests/integration/fake_slurm — a clean run over 2 tasks
 * (its script, --ntasks, the exported environment quoted right, the output file), a failing
 * exit code, a stop the workers answer (TERM → exit 0) and one they ignore (plain scancel after
 * the grace period → CANCELLED), a stop before sbatch has answered, sbatch refusing or printing
 * garbage, the template's checks, adoption of a running, a finished and an unknown job id, and a
 * detach (daemon shutdown) that leaves the job running for a later adopt.
 * Usage: test_slurm FAKE_SLURM_DIR TEMPLATE */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "slurm.h"

static char fake[PATH_MAX / 2], tmpl[PATH_MAX / 2];
static char dir[] = "/tmp/adapt-test-slurm-XXXXXX";
static char cmd_sbatch[PATH_MAX], cmd_squeue[PATH_MAX], cmd_scancel[PATH_MAX], cmd_sacct[PATH_MAX];

typedef struct result {
    int     count;
    int64_t status;
    int     signal;
    char    error[1024];
    char    id[64];
} result;

static void on_exit_cb(void *ctx, slurm_job_t *j, int64_t status, int sig)
{
    result *r = ctx;
    r->count++;
    r->status = status;
    r->signal = sig;
    snprintf(r->error, sizeof r->error, "%s", slurm_job_error(j));
    snprintf(r->id, sizeof r->id, "%s", slurm_job_id(j));
}

static char job_dir[PATH_MAX], log_dir[PATH_MAX];

static void spec_init(slurm_spec *s, const char *name, const char *const *argv, result *r)
{
    snprintf(job_dir, sizeof job_dir, "%s/%s", dir, name);
    snprintf(log_dir, sizeof log_dir, "%s/%s/logs", dir, name);
    mkdir(job_dir, 0755);
    mkdir(log_dir, 0755);
    *s = (slurm_spec){
        .template_path = tmpl, .job_dir = job_dir, .job_id = "j0123456789abcdef", .attempt = 1,
        .ranks = 1, .worker_argv = argv, .log_dir = log_dir, .sbatch = cmd_sbatch,
        .squeue = cmd_squeue, .scancel = cmd_scancel, .sacct = cmd_sacct, .poll_ms = 50,
        .grace_ms = 400, .on_exit = on_exit_cb, .ctx = r,
    };
}

/* A loop run with a watchdog: a job that never ends fails the test instead of hanging it. */
static void on_watchdog(uv_timer_t *t)
{
    fprintf(stderr, "test_slurm: the loop ran for 20 s; giving up\n");
    exit(1);
}

static void loop_run(uv_loop_t *loop)
{
    uv_timer_t dog;
    uv_timer_init(loop, &dog);
    uv_timer_start(&dog, on_watchdog, 20000, 0);
    uv_unref((uv_handle_t *)&dog);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&dog, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
}

static void read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* Runs the loop until the job's task has set its SIGTERM trap and said so (READY below), so a
 * stop's SIGTERM meets the trap however slow the machine, and at least min_ms. */
static void loop_until_ready(uv_loop_t *loop, slurm_job_t *j, int min_ms)
{
    uint64_t start = uv_now(loop);
    for (int i = 0; i < 2000; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(10000);
        uv_update_time(loop);
        char tasks[PATH_MAX];
        snprintf(tasks, sizeof tasks, "%s/ready.%s", dir, slurm_job_id(j));
        if (slurm_job_id(j)[0] && access(tasks, R_OK) == 0 && uv_now(loop) - start >= (uint64_t)min_ms)
            return;
    }
    CHECK_MSG(0, "the job's task never got ready");
}

/* Starts a job and runs the loop to its end; stop_after_ms > 1 stops it once its tasks run
 * (and that long after the start), 1 stops it at once, before sbatch has answered. */
static void run_job(slurm_spec *s, int stop_after_ms)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slurm_job_t *j = NULL;
    adapt_error err = {0};
    int rc = slurm_job_start(&j, &loop, s, &err);
    CHECK_MSG(rc == ADAPT_OK, "%s", err.message);
    if (rc == ADAPT_OK && stop_after_ms == 1) slurm_job_stop(j);   /* before sbatch answers */
    if (rc == ADAPT_OK && stop_after_ms > 1) {
        loop_until_ready(&loop, j, stop_after_ms);
        slurm_job_stop(j);
    }
    loop_run(&loop);
    CHECK(uv_loop_close(&loop) == 0);
}

/* A task's first words once its trap is set. */
#define READY "touch \"$FAKE_SLURM_DIR/ready.$SLURM_JOB_ID\"; "

static void test_success(void)
{
    char script[1024];
    snprintf(script, sizeof script, "echo task-$SLURM_PROCID; printf '%%s' \"$GREETING\" > %s/"
             "greeting.$SLURM_PROCID; exit 0", dir);
    const char *argv[] = { "sh", "-c", script, NULL };
    const char *env[] = { "GREETING=it's \"quoted\" $HOME `x` \\", "ADAPTD_JOB_ID=j1", NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "ok", argv, &r);
    s.ranks = 2;
    s.env = env;
    run_job(&s, 0);
    CHECK_MSG(r.count == 1 && r.status == 0 && r.signal == 0, "count %d status %lld signal %d: %s",
              r.count, (long long)r.status, r.signal, r.error);
    CHECK(r.id[0] && strspn(r.id, "0123456789") == strlen(r.id));
    char buf[4096], path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/attempt-1.sbatch", job_dir);
    read_text(path, buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "#SBATCH --ntasks=2\n");
    CHECK_STR_CONTAINS(buf, "#SBATCH --job-name=adaptd-j0123456789abcdef\n");
    CHECK_STR_CONTAINS(buf, "export ADAPTD_JOB_ID='j1'\n");
    CHECK_STR_CONTAINS(buf, "exec srun --ntasks=2 --kill-on-bad-exit=1 'sh' '-c' ");
    snprintf(path, sizeof path, "%s/slurm-attempt-1.out", log_dir);
    read_text(path, buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "task-0");
    CHECK_STR_CONTAINS(buf, "task-1");
    snprintf(path, sizeof path, "%s/greeting.1", dir);
    read_text(path, buf, sizeof buf);
    CHECK_MSG(!strcmp(buf, env[0] + strlen("GREETING=")), "the variable arrived as [%s]", buf);
}

static void test_failure(void)
{
    const char *argv[] = { "sh", "-c", "exit 3", NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "fail", argv, &r);
    s.attempt = 2;
    run_job(&s, 0);
    CHECK_MSG(r.count == 1 && r.status == 3 && r.signal == 0, "status %lld signal %d",
              (long long)r.status, r.signal);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/attempt-2.sbatch", job_dir);
    CHECK(access(path, R_OK) == 0);
}

/* The workers take SIGTERM (checkpoint) and exit 0 well within the grace period. */
static void test_stop_answered(void)
{
    const char *argv[] = { "sh", "-c", "trap 'echo got-term; kill $!; exit 0' TERM; " READY
                           "sleep 30 & wait $!", NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "stop", argv, &r);
    s.grace_ms = 10000;
    run_job(&s, 600);
    CHECK_MSG(r.count == 1 && r.status == 0 && r.signal == 0, "status %lld signal %d: %s",
              (long long)r.status, r.signal, r.error);
    char buf[256], path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/slurm-attempt-1.out", log_dir);
    read_text(path, buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "got-term");
}

/* pid has ended: no such process, or a zombie (killed, its exit not yet collected by whoever
 * inherited it — not ours to wait for) */
static int process_gone(pid_t pid)
{
    if (kill(pid, 0) != 0) return 1;
    char path[64], stat[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *close_paren = strrchr(stat, ')');  /* the command may hold spaces and ')' */
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

/* The workers ignore SIGTERM: plain scancel after the grace period. */
static void test_stop_ignored(void)
{
    char script[512];
    snprintf(script, sizeof script, "trap '' TERM; echo $$ > %s/kill.pid; " READY "sleep 30", dir);
    const char *argv[] = { "sh", "-c", script, NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "kill", argv, &r);
    run_job(&s, 600);
    CHECK_MSG(r.count == 1 && r.status == SLURM_STATUS_CANCELLED && r.signal == SIGTERM,
              "status %lld signal %d", (long long)r.status, r.signal);
    CHECK_STR_CONTAINS(r.error, "CANCELLED");
    /* the plain scancel took the task that ignored SIGTERM with it */
    char path[PATH_MAX + 64], buf[32];
    snprintf(path, sizeof path, "%s/kill.pid", dir);
    read_text(path, buf, sizeof buf);
    pid_t task = (pid_t)atoi(buf);
    int gone = 0;
    for (int i = 0; i < 100 && task > 0 && !gone; i++) {
        gone = process_gone(task);
        if (!gone) usleep(20000);
    }
    CHECK_MSG(task > 0 && gone, "task %d survived the cancel", (int)task);
}

/* A stop while sbatch is still running: the job is cancelled as soon as its id is known. */
static void test_stop_while_submitting(void)
{
    const char *argv[] = { "sh", "-c", "trap '' TERM; sleep 30", NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "early", argv, &r);
    char flag[PATH_MAX + 64];
    snprintf(flag, sizeof flag, "%s/sbatch_delay", dir);
    FILE *f = fopen(flag, "w");
    fputs("0.3\n", f);
    fclose(f);
    run_job(&s, 1);
    unlink(flag);
    /* CANCELLED after the grace period, or killed by the SIGTERM itself when it reached the
     * task before its trap was set: either way ended by a signal, not by the 30 s sleep */
    CHECK_MSG(r.count == 1 && r.signal == SIGTERM &&
              (r.status == SLURM_STATUS_CANCELLED || r.status == 0), "status %lld signal %d",
              (long long)r.status, r.signal);
}

static void test_sbatch_refuses(void)
{
    const char *argv[] = { "sh", "-c", "exit 0", NULL };
    char flag[PATH_MAX + 64];
    snprintf(flag, sizeof flag, "%s/sbatch_refuse", dir);
    FILE *f = fopen(flag, "w");
    fputs("sbatch: error: Batch job submission failed: Invalid partition name specified\n", f);
    fclose(f);
    result r = {0};
    slurm_spec s;
    spec_init(&s, "refused", argv, &r);
    run_job(&s, 0);
    unlink(flag);
    CHECK(r.count == 1 && r.status == SLURM_STATUS_SUBMIT_FAILED && r.signal == 0);
    CHECK_STR_CONTAINS(r.error, "Invalid partition name specified");
    CHECK(r.id[0] == '\0');

    snprintf(flag, sizeof flag, "%s/sbatch_garbage", dir);
    f = fopen(flag, "w");
    fclose(f);
    memset(&r, 0, sizeof r);
    spec_init(&s, "garbage", argv, &r);
    run_job(&s, 0);
    unlink(flag);
    CHECK(r.count == 1 && r.status == SLURM_STATUS_SUBMIT_FAILED);
    CHECK_STR_CONTAINS(r.error, "no job id");
}

static void test_template_checks(void)
{
    const char *argv[] = { "true", NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "render", argv, &r);
    char *out = NULL;
    adapt_error err = {0};
    CHECK(slurm_render("#!/bin/sh\necho no srun line\n", &s, &out, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "@WORKER@");
    const char *bad_env[] = { "1BAD=x", NULL };
    s.env = bad_env;
    CHECK(slurm_render("@ENV@ @WORKER@", &s, &out, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "1BAD=x");
    s.env = NULL;
    s.log_dir = "/tmp/with space";
    CHECK(slurm_render("@WORKER@", &s, &out, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "with space");
    s.log_dir = log_dir;
    /* text that merely contains '@' passes untouched */
    CHECK(slurm_render("#SBATCH --signal=TERM@120\n@RANKS@ @WORKER@\n", &s, &out, &err) == ADAPT_OK);
    CHECK(out && !strcmp(out, "#SBATCH --signal=TERM@120\n1 'true'\n"));
    free(out);
    /* a template that is not there fails the start, naming it */
    s.template_path = "/nonexistent/adaptd-job.sbatch.in";
    uv_loop_t loop;
    uv_loop_init(&loop);
    slurm_job_t *j = NULL;
    CHECK(slurm_job_start(&j, &loop, &s, &err) == ADAPT_ENOTFOUND && j == NULL);
    CHECK_STR_CONTAINS(err.message, "/nonexistent/adaptd-job.sbatch.in");
    CHECK(slurm_job_adopt(&j, &loop, "12a", &s, &err) == ADAPT_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

/* Submits a job directly with the stand-in sbatch (as a previous daemon did); its id. */
static void submit_direct(const char *body, char *id, size_t cap)
{
    char path[PATH_MAX + 64], cmd[3 * PATH_MAX];
    snprintf(path, sizeof path, "%s/direct-%d.sbatch", dir, rand());
    FILE *f = fopen(path, "w");
    fprintf(f, "#!/bin/sh\n#SBATCH --ntasks=1\nexec srun sh -c '%s'\n", body);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s --parsable %s", cmd_sbatch, path);
    FILE *p = popen(cmd, "r");
    id[0] = '\0';
    if (p && fgets(id, (int)cap, p)) id[strcspn(id, "\n")] = '\0';
    if (p) pclose(p);
    CHECK(id[0] != '\0');
}

static void adopt_run(const char *id, int stop_after_ms, result *r)
{
    const char *argv[] = { "true", NULL };
    slurm_spec s;
    spec_init(&s, "adopt", argv, r);
    uv_loop_t loop;
    uv_loop_init(&loop);
    slurm_job_t *j = NULL;
    adapt_error err = {0};
    CHECK_MSG(slurm_job_adopt(&j, &loop, id, &s, &err) == ADAPT_OK, "%s", err.message);
    if (j && stop_after_ms) {
        loop_until_ready(&loop, j, stop_after_ms);
        slurm_job_stop(j);
    }
    loop_run(&loop);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_adopt(void)
{
    char id[64];
    result r = {0};
    submit_direct("sleep 0.5; exit 4", id, sizeof id);
    adopt_run(id, 0, &r);
    CHECK_MSG(r.count == 1 && r.status == 4 && r.signal == 0 && !strcmp(r.id, id),
              "running job %s: status %lld signal %d", id, (long long)r.status, r.signal);
    /* adopting it again, long finished: sacct answers at once */
    memset(&r, 0, sizeof r);
    adopt_run(id, 0, &r);
    CHECK(r.count == 1 && r.status == 4);
    /* an id Slurm never knew: neither squeue nor sacct, then UNKNOWN */
    memset(&r, 0, sizeof r);
    adopt_run("987654", 0, &r);
    CHECK(r.count == 1 && r.status == SLURM_STATUS_UNKNOWN && r.signal == 0);
    CHECK_STR_CONTAINS(r.error, "987654");
}

/* Daemon shutdown: detach leaves the job running and fires nothing; a new life adopts and
 * stops it. */
static void test_detach_then_adopt(void)
{
    const char *argv[] = { "sh", "-c", "trap 'kill $!; exit 0' TERM; " READY "sleep 30 & wait $!",
                           NULL };
    result r = {0};
    slurm_spec s;
    spec_init(&s, "detach", argv, &r);
    uv_loop_t loop;
    uv_loop_init(&loop);
    slurm_job_t *j = NULL;
    adapt_error err = {0};
    CHECK_MSG(slurm_job_start(&j, &loop, &s, &err) == ADAPT_OK, "%s", err.message);
    char id[64] = "";
    for (int i = 0; i < 500 && j && !slurm_job_id(j)[0]; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    if (j) snprintf(id, sizeof id, "%s", slurm_job_id(j));
    CHECK(id[0] != '\0');
    slurm_job_detach(j);
    loop_run(&loop);
    CHECK(uv_loop_close(&loop) == 0);
    CHECK(r.count == 0);
    char state[PATH_MAX + 64], buf[64];
    snprintf(state, sizeof state, "%s/jobs/%s/state", dir, id);
    read_text(state, buf, sizeof buf);
    CHECK_MSG(strncmp(buf, "DONE", 4) != 0, "the detached job %s ended: %s", id, buf);
    adopt_run(id, 300, &r);
    CHECK_MSG(r.count == 1 && r.status == 0 && r.signal == 0, "adopted %s: status %lld",
              id, (long long)r.status);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_slurm FAKE_SLURM_DIR TEMPLATE\n");
        return 2;
    }
    snprintf(fake, sizeof fake, "%s", argv[1]);
    snprintf(tmpl, sizeof tmpl, "%s", argv[2]);
    snprintf(cmd_sbatch, sizeof cmd_sbatch, "%s/sbatch", fake);
    snprintf(cmd_squeue, sizeof cmd_squeue, "%s/squeue", fake);
    snprintf(cmd_scancel, sizeof cmd_scancel, "%s/scancel", fake);
    snprintf(cmd_sacct, sizeof cmd_sacct, "%s/sacct", fake);
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    setenv("FAKE_SLURM_DIR", dir, 1);
    test_template_checks();
    test_success();
    test_failure();
    test_stop_answered();
    test_stop_ignored();
    test_stop_while_submitting();
    test_sbatch_refuses();
    test_adopt();
    test_detach_then_adopt();
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (!check_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    printf("%d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
