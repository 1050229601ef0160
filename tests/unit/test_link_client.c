/* test_link_client: the worker's link client (worker/link_client.c) in-process against plain
 * Unix sockets — a daemon that accepts and never reads (stopped with SIGSTOP) costs the training
 * thread nothing (every call returns at once, Progress is dropped and counted) and Done's wait
 * ends at ADAPTD_DONE_WAIT_MS; no daemon at all is no error; Control frames set the signal flag
 * (CHECKPOINT never overrides a pending STOP); a daemon refusing every connection makes one log
 * line, not one a retry; the environment is checked naming the variable;
 * per-rank log files; which error codes are fatal (exit 2). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "link_client.h"

static char dir[] = "/tmp/adapt-test-link-client-XXXXXX";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listen_at(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 4) == 0);
    return fd;
}

static void options_init(link_client_options *o, const char *path, atomic_int *flag)
{
    *o = (link_client_options){ .path = path, .job_id = "jobtest0000000000000000000000001",
                                .attempt = 1, .world = 1, .heartbeat_ms = 100,
                                .reconnect_ms = 100, .done_wait_ms = 300, .signal = flag };
}

/* A stopped daemon: the connection is accepted by the kernel, nobody reads. */
static void test_daemon_never_reads(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/stopped.sock", dir);
    int lfd = listen_at(path);
    link_client_options o;
    options_init(&o, path, NULL);
    link_client_t *c = NULL;
    adapt_error err = {0};
    CHECK_MSG(link_client_start(&c, &o, &err) == ADAPT_OK, "%s", err.message);
    CHECK(link_client_connected(c));
    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    double t0 = now_s(), worst = 0;
    for (int i = 0; i < 50000; i++) {
        p.step = (uint64_t)i + 1;
        double a = now_s();
        link_client_progress(c, &p);
        if (now_s() - a > worst) worst = now_s() - a;
    }
    double total = now_s() - t0;
    link_client_stats st = link_client_stats_get(c);
    printf("50000 Progress calls to a daemon that never reads: %.3f s, worst call %.2f ms, "
           "%llu dropped\n", total, worst * 1e3, (unsigned long long)st.progress_dropped);
    /* a blocking send would hang here for good; the bounds leave room for a loaded machine */
    CHECK_MSG(worst < 0.5 && total < 5.0, "a Progress call took %.3f s, all %.3f s", worst, total);
    CHECK(st.progress_dropped > 0);
    t0 = now_s();
    CHECK(link_client_done(c, 1, 0, 0, NULL, "/out", 7) == 0);
    double waited = now_s() - t0;
    CHECK_MSG(waited >= 0.25 && waited < 2.0, "Done waited %.3f s for a 0.3 s limit", waited);
    link_client_close(c);
    close(lfd);
}

/* No daemon: starting is fine, Progress is dropped, Done gives up after its wait. */
static void test_no_daemon(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/nobody.sock", dir);
    link_client_options o;
    options_init(&o, path, NULL);
    link_client_t *c = NULL;
    adapt_error err = {0};
    CHECK(link_client_start(&c, &o, &err) == ADAPT_OK && !link_client_connected(c));
    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    link_client_progress(c, &p);
    CHECK(link_client_stats_get(c).progress_dropped == 1);
    double t0 = now_s();
    CHECK(link_client_done(c, 0, 1, 0, "bad spec", NULL, 0) == 0);
    CHECK(now_s() - t0 < 2.0);
    link_client_close(c);
}

static void send_control(int fd, int action)
{
    uint8_t frame[] = { 0, 0, 0, 4, 0x32, 2, 0x08, (uint8_t)action };
    CHECK(write(fd, frame, sizeof frame) == (ssize_t)sizeof frame);
}

static int wait_flag(atomic_int *flag, int want)
{
    for (int i = 0; i < 200; i++) {
        if (atomic_load(flag) == want) return 1;
        usleep(10000);
    }
    return 0;
}

static void test_control(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/control.sock", dir);
    int lfd = listen_at(path);
    atomic_int flag = 0;
    link_client_options o;
    options_init(&o, path, &flag);
    link_client_t *c = NULL;
    adapt_error err = {0};
    CHECK(link_client_start(&c, &o, &err) == ADAPT_OK);
    int fd = accept(lfd, NULL, NULL);
    CHECK(fd >= 0);
    send_control(fd, 1);
    CHECK_MSG(wait_flag(&flag, 1), "CHECKPOINT did not reach the flag (%d)", atomic_load(&flag));
    atomic_store(&flag, 0);
    send_control(fd, 2);
    CHECK(wait_flag(&flag, 2));
    send_control(fd, 1);            /* a later CHECKPOINT must not undo the STOP */
    usleep(200000);
    CHECK(atomic_load(&flag) == 2);
    CHECK(link_client_stats_get(c).controls == 3);
    /* heartbeats and Done arrive: read what came (Hello first) */
    usleep(350000);
    CHECK(link_client_done(c, 1, 0, 0, NULL, "/out", 3) == 1);
    link_client_close(c);           /* the client's socket closes: read to its end */
    uint8_t buf[16384];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf && (r = read(fd, buf + n, sizeof buf - n)) > 0) n += (size_t)r;
    int hello = 0, beats = 0, done = 0;
    for (size_t off = 0; off + 4 <= n;) {
        size_t len = (size_t)buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3];
        if (off + 4 + len > n) break;
        uint8_t tag = buf[off + 4];
        if (off == 0) hello = tag == 0x0a;
        beats += tag == 0x2a;
        done += tag == 0x22;
        off += 4 + len;
    }
    CHECK_MSG(hello && beats >= 2 && done == 1, "hello first %d, heartbeats %d, done %d", hello,
              beats, done);
    close(fd);
    close(lfd);
}

/* A daemon that closes every connection at once (refusing the job): one note, not one a try. */
static void test_refused_quietly(void)
{
    char path[128], log[160];
    snprintf(path, sizeof path, "%s/refuse.sock", dir);
    snprintf(log, sizeof log, "%s/refuse.log", dir);
    int lfd = listen_at(path);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < 8; i++) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) close(fd);
        }
        _exit(0);
    }
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(lf, STDERR_FILENO);
    link_client_options o;
    options_init(&o, path, NULL);
    link_client_t *c = NULL;
    adapt_error err = {0};
    CHECK(link_client_start(&c, &o, &err) == ADAPT_OK);
    for (int i = 0; i < 100 && link_client_stats_get(c).connects < 4; i++) usleep(20000);
    uint64_t connects = link_client_stats_get(c).connects;
    link_client_close(c);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(lf);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(lfd);
    char buf[4096] = "";
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
    int lines = 0;
    for (char *p = buf; *p; p++) lines += *p == '\n';
    CHECK_MSG(connects >= 4 && lines == 1 && strstr(buf, "may refuse this job"),
              "%llu connects, %d lines:\n%s", (unsigned long long)connects, lines, buf);
}

static void test_env(void)
{
    link_client_options o;
    int have = 1;
    adapt_error err = {0};
    unsetenv("ADAPTD_LINK");
    CHECK(link_client_env(&o, &have, &err) == ADAPT_OK && have == 0);
    setenv("ADAPTD_LINK", "/run/x.sock", 1);
    setenv("ADAPTD_JOB_ID", "j1", 1);
    setenv("ADAPTD_ATTEMPT", "4", 1);
    unsetenv("ADAPTD_HEARTBEAT_MS");
    unsetenv("ADAPTD_DONE_WAIT_MS");
    CHECK(link_client_env(&o, &have, &err) == ADAPT_OK && have == 1);
    CHECK(o.attempt == 4 && o.heartbeat_ms == 5000 && o.done_wait_ms == 30000 &&
          !strcmp(o.job_id, "j1") && o.reconnect_ms == 1000);
    setenv("ADAPTD_HEARTBEAT_MS", "5s", 1);
    CHECK(link_client_env(&o, &have, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "ADAPTD_HEARTBEAT_MS");
    unsetenv("ADAPTD_HEARTBEAT_MS");
    setenv("ADAPTD_ATTEMPT", "-1", 1);
    CHECK(link_client_env(&o, &have, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "ADAPTD_ATTEMPT");
    unsetenv("ADAPTD_LINK");
    unsetenv("ADAPTD_ATTEMPT");
}

static void test_logs(void)
{
    char logs[128], path[192], buf[256] = "";
    snprintf(logs, sizeof logs, "%s/logs/job/", dir);   /* parents made too */
    pid_t pid = fork();
    if (pid == 0) {
        adapt_error err = {0};
        if (link_client_logs(logs, 3, &err) != ADAPT_OK) _exit(3);
        printf("to stdout\n");
        fprintf(stderr, "to stderr\n");
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(path, sizeof path, "%s/logs/job/rank-3.log", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
    CHECK_STR_CONTAINS(buf, "to stdout\n");
    CHECK_STR_CONTAINS(buf, "to stderr\n");
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    adapt_error err = {0};
    CHECK(link_client_logs("/proc/no/such/dir", 0, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "/proc/no/such/dir");
    CHECK(link_client_logs(NULL, 0, &err) == ADAPT_OK);
}

static void test_fatal_codes(void)
{
    CHECK(link_client_error_fatal(ADAPT_EINVAL) && link_client_error_fatal(ADAPT_ECORRUPT) &&
          link_client_error_fatal(ADAPT_ENOTFOUND) && link_client_error_fatal(ADAPT_EVERSION) &&
          link_client_error_fatal(ADAPT_EUNSUPPORTED));
    CHECK(!link_client_error_fatal(ADAPT_EIO) && !link_client_error_fatal(ADAPT_ENOMEM) &&
          !link_client_error_fatal(ADAPT_ERANGE));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_fatal_codes();
    test_env();
    test_logs();
    test_no_daemon();
    test_control();
    test_refused_quietly();
    test_daemon_never_reads();
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    printf("%d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
