/* test_launcher: the launcher against real processes — output captured to the job's log files,
 * exit codes, a stop that takes the whole process group (SIGTERM), a group that ignores SIGTERM
 * (SIGKILL after the grace period), a command that does not exist; and a stand-in worker (this
 * binary re-run with --stand-in-worker) that speaks the link protocol, so a job goes
 * starting → running → succeeded with its metrics series stored, end to end. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "launcher.h"
#include "link.h"

typedef struct run_result {
    int     done;
    int64_t status;
    int     signal;
    link_server_t *link;
} run_result;

static void on_exit_cb(void *ctx, launcher_t *l, int64_t status, int sig)
{
    run_result *r = ctx;
    r->done = 1;
    r->status = status;
    r->signal = sig;
    if (r->link) link_server_close(r->link);
}

static char dir[] = "/tmp/adapt-test-launcher-XXXXXX";

static void read_file(const char *name, char *buf, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

static void run_cmd(const char *const *argv, uint64_t grace, int stop_after_ms, run_result *r)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    launcher_spec spec = { .argv = argv, .log_dir = dir, .grace_ms = grace, .on_exit = on_exit_cb, .ctx = r };
    launcher_t *l;
    adapt_error err = {0};
    CHECK_MSG(launcher_start(&l, &loop, &spec, &err) == ADAPT_OK, "%s", err.message);
    if (stop_after_ms > 0) {
        struct timespec ts = { 0, stop_after_ms * 1000000L };
        nanosleep(&ts, NULL);
        launcher_stop(l);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_output_and_exit(void)
{
    const char *argv[] = { "sh", "-c", "echo to-out; echo to-err >&2; exit 3", NULL };
    run_result r = {0};
    run_cmd(argv, 1000, 0, &r);
    CHECK(r.done && r.status == 3 && r.signal == 0);
    char buf[256];
    read_file("stdout.log", buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "to-out");
    read_file("stderr.log", buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "to-err");
}

/* Running or sleeping; a zombie (dead, not yet reaped by a container's init) counts as dead. */
static int alive(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z' && close_paren[2] != 'X';
}

static void test_stop_group(void)
{
    char script[512];
    snprintf(script, sizeof script, "sleep 30 & echo $! > %s/child.pid; wait", dir);
    const char *argv[] = { "sh", "-c", script, NULL };
    run_result r = {0};
    run_cmd(argv, 5000, 300, &r);
    CHECK(r.done && r.signal == SIGTERM);
    char buf[32];
    read_file("child.pid", buf, sizeof buf);
    pid_t child = (pid_t)atoi(buf);
    CHECK(child > 0);
    for (int i = 0; i < 50 && child > 0 && alive(child); i++) usleep(20000);
    CHECK_MSG(child > 0 && !alive(child), "the group's background child %d survived", child);
}

/* Open MPI's mpirun puts each rank in a process group of its own inside the leader's session:
 * a stop must reach those too (here a job-control shell's background job stands in). */
static void test_stop_session(void)
{
    char script[512];
    snprintf(script, sizeof script, "set -m; sleep 30 & echo $! > %s/child2.pid; wait", dir);
    const char *argv[] = { "sh", "-c", script, NULL };
    run_result r = {0};
    run_cmd(argv, 5000, 300, &r);
    CHECK(r.done);
    char buf[32];
    read_file("child2.pid", buf, sizeof buf);
    pid_t child = (pid_t)atoi(buf);
    CHECK(child > 0 && getpgid(child) != getpgid(0));
    for (int i = 0; i < 50 && child > 0 && alive(child); i++) usleep(20000);
    CHECK_MSG(child > 0 && !alive(child), "the session's child %d in its own group survived", child);
}

/* Process identity from /proc: a live child's start time is stable and its session found; a
 * dead (even unreaped) one is gone; launcher_group_alive sees a session until its last
 * process ends. */
static void test_proc_info(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (fork() == 0) { pause(); _exit(0); }
        pause();
        _exit(0);
    }
    CHECK(pid > 0);
    usleep(100000);
    uint64_t st1 = 0, st2 = 0;
    int sid = 0;
    CHECK(launcher_proc_info(pid, &st1, &sid) == 1 && st1 > 0 && sid == pid);
    CHECK(launcher_proc_info(pid, &st2, NULL) == 1 && st2 == st1);
    CHECK(launcher_group_alive(pid, NULL));
    CHECK(launcher_group_signal(pid, 0, NULL) == 2);
    kill(pid, SIGKILL);
    usleep(100000);
    /* a zombie (not yet waited for) counts as gone; its child still runs in the session */
    CHECK(launcher_proc_info(pid, NULL, NULL) == 0);
    CHECK(launcher_group_alive(pid, NULL));
    CHECK(launcher_group_signal(pid, SIGKILL, NULL) == 1);
    for (int i = 0; i < 50 && launcher_group_alive(pid, NULL); i++) usleep(20000);
    CHECK(!launcher_group_alive(pid, NULL));
    waitpid(pid, NULL, 0);
    CHECK(launcher_proc_info(pid, NULL, NULL) == 0);
    CHECK(launcher_group_signal(1, 0, NULL) == 0);   /* never init's group or session */
}

/* With a tag, only the session's processes whose environment holds it exactly are counted and
 * signalled: a reused session number must not take an unrelated process along. */
static void test_tagged(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (fork() == 0) {
            char *const env[] = { "ADAPTD_JOB_ID=abc", NULL };
            execle("/bin/sleep", "sleep", "30", (char *)NULL, env);
            _exit(127);
        }
        char *const env[] = { "OTHER=1", NULL };
        execle("/bin/sleep", "sleep", "30", (char *)NULL, env);
        _exit(127);
    }
    usleep(200000);
    CHECK(launcher_group_signal(pid, 0, NULL) == 2);
    CHECK(launcher_group_signal(pid, 0, "ADAPTD_JOB_ID=abc") == 1);
    CHECK(launcher_group_signal(pid, 0, "ADAPTD_JOB_ID=ab") == 0);
    CHECK(launcher_group_signal(pid, 0, "ADAPTD_JOB_ID=abcd") == 0);
    CHECK(launcher_group_signal(pid, SIGKILL, "ADAPTD_JOB_ID=abc") == 1);
    for (int i = 0; i < 50 && launcher_group_alive(pid, "ADAPTD_JOB_ID=abc"); i++) usleep(20000);
    CHECK(!launcher_group_alive(pid, "ADAPTD_JOB_ID=abc"));
    CHECK(launcher_proc_info(pid, NULL, NULL) == 1);   /* the untagged leader was spared */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* log_name: stdout and stderr interleaved in one file. */
static void test_combined_log(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *argv[] = { "sh", "-c", "echo one; echo two >&2; echo three", NULL };
    run_result r = {0};
    launcher_spec spec = { .argv = argv, .log_dir = dir, .log_name = "launcher.log",
                           .grace_ms = 100, .on_exit = on_exit_cb, .ctx = &r };
    launcher_t *l;
    CHECK(launcher_start(&l, &loop, &spec, NULL) == ADAPT_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    char buf[256];
    read_file("launcher.log", buf, sizeof buf);
    CHECK_MSG(strcmp(buf, "one\ntwo\nthree\n") == 0, "launcher.log: %s", buf);
}

/* launcher_detach: the process keeps running and the exit callback never fires. */
static void test_detach(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *argv[] = { "sleep", "30", NULL };
    run_result r = {0};
    launcher_spec spec = { .argv = argv, .log_dir = dir, .grace_ms = 100, .on_exit = on_exit_cb, .ctx = &r };
    launcher_t *l;
    CHECK(launcher_start(&l, &loop, &spec, NULL) == ADAPT_OK);
    int pid = launcher_pid(l);
    launcher_detach(l);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    CHECK(!r.done && alive(pid));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_sigkill_after_grace(void)
{
    const char *argv[] = { "sh", "-c", "trap '' TERM; sleep 30; sleep 30", NULL };
    run_result r = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_cmd(argv, 300, 200, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(r.done && r.signal == SIGKILL);
    CHECK_MSG(s > 0.45 && s < 5, "SIGKILL came after %.2f s", s);
}

static void test_missing_command(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *argv[] = { "/nonexistent/adapt-worker", NULL };
    launcher_spec spec = { .argv = argv, .log_dir = dir, .grace_ms = 100 };
    launcher_t *l;
    adapt_error err = {0};
    CHECK(launcher_start(&l, &loop, &spec, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "/nonexistent/adapt-worker");
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

/* ---- the stand-in worker ------------------------------------------------------------------- */

static int send_frame(int fd, Adaptd__LinkFrame *f)
{
    uint8_t *b;
    size_t n;
    if (link_frame_encode(f, &b, &n, NULL) != ADAPT_OK) return -1;
    int ok = write(fd, b, n) == (ssize_t)n;
    free(b);
    return ok ? 0 : -1;
}

static int stand_in_worker(void)
{
    const char *path = getenv("ADAPTD_LINK"), *job = getenv("ADAPTD_JOB_ID");
    if (!path || !job) return 2;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return 3;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    Adaptd__Hello h = ADAPTD__HELLO__INIT;
    h.job_id = (char *)job; h.world_size = 1; h.protocol = LINK_PROTOCOL; h.pid = getpid();
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO; f.hello = &h;
    if (send_frame(fd, &f)) return 4;
    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    p.job_id = (char *)job; p.total_steps = 5;
    f.body_case = ADAPTD__LINK_FRAME__BODY_PROGRESS; f.progress = &p;
    for (int s = 1; s <= 5; s++) {
        p.step = (uint64_t)s; p.loss = 3.0f - 0.5f * (float)s; p.tokens_per_second = 100.0 * s;
        if (send_frame(fd, &f)) return 5;
    }
    Adaptd__Done d = ADAPTD__DONE__INIT;
    d.job_id = (char *)job; d.ok = 1; d.step = 5;
    f.body_case = ADAPTD__LINK_FRAME__BODY_DONE; f.done = &d;
    if (send_frame(fd, &f)) return 6;
    char c;
    ssize_t got = read(fd, &c, 1);   /* wait for the daemon to hang up: frames all delivered */
    (void)got;
    printf("stand-in worker done\n");
    return 0;
}

static int store_frame(void *ctx, link_peer_t *peer, const Adaptd__LinkFrame *f)
{
    adapt_error err = {0};
    int rc = link_store_frame(ctx, f, &err);
    if (rc != ADAPT_OK) fprintf(stderr, "link: %s\n", err.message);
    /* Done is recorded on the attempt; the final state is the scheduler's to set (it waits for
     * the exit), done here by hand */
    if (rc == ADAPT_OK && f->body_case == ADAPTD__LINK_FRAME__BODY_DONE)
        rc = job_store_transition(ctx, f->done->job_id, JOB_STORE_SUCCEEDED, NULL, &err);
    /* Done is the last frame: hanging up tells the stand-in it may exit */
    return rc != ADAPT_OK || f->body_case == ADAPTD__LINK_FRAME__BODY_DONE;
}

static void test_stand_in_worker(const char *self)
{
    job_store_t *js;
    adapt_error err = {0};
    char state[128], sock[160], env_link[200], env_job[64];
    snprintf(state, sizeof state, "%s/state", dir);
    CHECK(job_store_open(&js, state, &err) == ADAPT_OK);
    job_store_new in = { .name = "stand-in", .kind = "train", .ranks = 1, .spec_json = "{}" };
    char id[JOB_STORE_ID_LEN + 1];
    CHECK(job_store_create(js, &in, id, NULL) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);

    uv_loop_t loop;
    uv_loop_init(&loop);
    snprintf(sock, sizeof sock, "%s/link.sock", state);
    run_result r = {0};
    link_handlers h = { .on_frame = store_frame, .ctx = js };
    CHECK(link_server_init(&r.link, &loop, sock, 0, &h, &err) == ADAPT_OK);
    snprintf(env_link, sizeof env_link, "ADAPTD_LINK=%s", sock);
    snprintf(env_job, sizeof env_job, "ADAPTD_JOB_ID=%s", id);
    const char *env[] = { env_link, env_job, NULL };
    const char *argv[] = { self, "--stand-in-worker", NULL };
    char job_dir[256];
    job_store_job_dir(js, id, job_dir, sizeof job_dir);
    launcher_spec spec = { .argv = argv, .env = env, .log_dir = job_dir, .grace_ms = 1000,
                           .on_exit = on_exit_cb, .ctx = &r };
    launcher_t *l;
    CHECK_MSG(launcher_start(&l, &loop, &spec, &err) == ADAPT_OK, "%s", err.message);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    CHECK(r.done && r.status == 0 && r.signal == 0);

    job_store_record rec;
    CHECK(job_store_get(js, id, &rec, NULL) == ADAPT_OK);
    CHECK_MSG(rec.state == JOB_STORE_SUCCEEDED, "state %s", job_store_state_name(rec.state));
    CHECK(rec.progress.step == 5 && rec.progress.loss == 0.5);
    job_store_record_clear(&rec);
    job_store_attempt at;
    CHECK(job_store_attempt_get(js, id, 1, &at, NULL) == ADAPT_OK && at.done == JOB_STORE_DONE_OK);
    job_store_progress pts[8];
    size_t n = 0;
    CHECK(job_store_metrics(js, id, -1, pts, 8, &n, NULL) == ADAPT_OK && n == 5);
    char buf[256], rel[128];
    snprintf(rel, sizeof rel, "state/jobs/%s/stdout.log", id);
    read_file(rel, buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "stand-in worker done");
    job_store_close(js);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--stand-in-worker") == 0) return stand_in_worker();
    if (!mkdtemp(dir)) return 1;
    test_output_and_exit();
    test_stop_group();
    test_stop_session();
    test_proc_info();
    test_tagged();
    test_combined_log();
    test_detach();
    test_sigkill_after_grace();
    test_missing_command();
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    self[n > 0 ? n : 0] = '\0';
    test_stand_in_worker(self);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("launcher");
}
