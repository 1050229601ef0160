/* test_work_source: a rank's source of work units (worker/work_source.c) — the static
 * assignment without the daemon; under ADAPTD_WORK_QUEUE=1, against a stand-in daemon thread on
 * a Unix socket: Hello (rank, attempt, work_queue) first, one WorkRequest per unit answered by a
 * WorkGrant, ShardDone after each unit, none_left ending the loop, a refused request failing
 * with the daemon's reason, a dead daemon failing after ADAPTD_WORK_WAIT_MS; and the
 * environment's refusals. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "job.pb-c.h"
#include "link_client.h"
#include "work_source.h"

static char dir[] = "/tmp/adapt-test-work-source-XXXXXX";
static char sock_path[200];

static int read_frame(int fd, Adaptd__LinkFrame **out)
{
    uint8_t h[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t r = read(fd, h + got, 4 - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    uint8_t *b = malloc(len + 1);
    for (got = 0; got < len;) {
        ssize_t r = read(fd, b + got, len - got);
        if (r <= 0) { free(b); return -1; }
        got += (size_t)r;
    }
    *out = adaptd__link_frame__unpack(NULL, len, b);
    free(b);
    return *out ? 0 : -1;
}

static void send_grant(int fd, uint64_t shard, int none_left, const char *error, int fatal)
{
    Adaptd__WorkGrant g = ADAPTD__WORK_GRANT__INIT;
    g.shard = shard;
    g.none_left = none_left;
    g.fatal = fatal;
    if (error) g.error = (char *)error;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_WORK_GRANT;
    f.work_grant = &g;
    size_t n = adaptd__link_frame__get_packed_size(&f);
    uint8_t *b = malloc(4 + n);
    b[0] = (uint8_t)(n >> 24); b[1] = (uint8_t)(n >> 16); b[2] = (uint8_t)(n >> 8); b[3] = (uint8_t)n;
    adaptd__link_frame__pack(&f, b + 4);
    if (write(fd, b, 4 + n) != (ssize_t)(4 + n)) perror("write");
    free(b);
}

/* The stand-in daemon: one connection; grants units 3 then 1, then none left, recording what
 * the worker said; with `refuse`, answers the first request with the daemon's unit-count
 * refusal (1, fatal), another refusal (2), a unit past the worker's count (3) or a retryable
 * refusal whose text happens to read like the count refusal (4). */
typedef struct daemon_ctx {
    int      listen_fd, refuse;
    int      hello_ok, requests, dones;
    uint64_t done_units[8];
    char     done_out[64];
} daemon_ctx;

static void *daemon_thread(void *arg)
{
    daemon_ctx *d = arg;
    int fd = accept(d->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    static const uint64_t grants[] = { 3, 1 };
    Adaptd__LinkFrame *f;
    while (read_frame(fd, &f) == 0) {
        if (f->body_case == ADAPTD__LINK_FRAME__BODY_HELLO)
            d->hello_ok = f->hello->rank == 1 && f->hello->attempt == 2 && f->hello->work_queue &&
                          !strcmp(f->hello->job_id, "0123456789abcdef0123456789abcdef");
        else if (f->body_case == ADAPTD__LINK_FRAME__BODY_WORK_REQUEST) {
            int k = d->requests++;
            if (f->work_request->units != 5 || f->work_request->rank != 1) send_grant(fd, 0, 0, "bad request", 0);
            else if (d->refuse == 1)   /* daemon/workqueue.c's count refusal: fatal */
                send_grant(fd, 0, 0, "job 0123 stage 0: rank 1 counts 5 units of work, the "
                                     "daemon's table holds 4 (the input changed since the job began?)", 1);
            else if (d->refuse == 2) send_grant(fd, 0, 0, "the store is busy", 0);  /* retryable */
            else if (d->refuse == 4)   /* the flag decides, not the words */
                send_grant(fd, 0, 0, "the store failed counting units of work", 0);
            else if (d->refuse == 3) send_grant(fd, 5, 0, NULL, 0);   /* past the worker's 5 units */
            else if (k < 2) send_grant(fd, grants[k], 0, NULL, 0);
            else send_grant(fd, 0, 1, NULL, 0);
        } else if (f->body_case == ADAPTD__LINK_FRAME__BODY_SHARD_DONE && d->dones < 8) {
            d->done_units[d->dones++] = f->shard_done->shard;
            snprintf(d->done_out, sizeof d->done_out, "%s", f->shard_done->output_path);
        }
        adaptd__link_frame__free_unpacked(f, NULL);
    }
    close(fd);
    return NULL;
}

static int listen_on(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4) != 0) return -1;
    return fd;
}

static void test_static(void)
{
    unsetenv("ADAPTD_WORK_QUEUE");
    work_source *ws = NULL;
    adapt_error err = {0};
    CHECK(work_source_open(&ws, 1, 3, "synthesize", 7, &err) == ADAPT_OK && !work_source_queued(ws));
    uint64_t u, got[8];
    int more = 0, n = 0;
    while (work_source_next(ws, &u, &more, &err) == ADAPT_OK && more && n < 8) {
        got[n++] = u;
        CHECK(work_source_done(ws, u, "x", 1, &err) == ADAPT_OK);
    }
    CHECK(n == 2 && got[0] == 1 && got[1] == 4);
    work_source_close(ws);
}

static void test_queue(int refuse)
{
    daemon_ctx d = { .listen_fd = listen_on(sock_path), .refuse = refuse };
    CHECK(d.listen_fd >= 0);
    pthread_t t;
    pthread_create(&t, NULL, daemon_thread, &d);
    setenv("ADAPTD_WORK_QUEUE", "1", 1);
    setenv("ADAPTD_LINK", sock_path, 1);
    setenv("ADAPTD_JOB_ID", "0123456789abcdef0123456789abcdef", 1);
    setenv("ADAPTD_ATTEMPT", "2", 1);
    work_source *ws = NULL;
    adapt_error err = {0};
    CHECK_MSG(work_source_open(&ws, 1, 2, "synthesize", 5, &err) == ADAPT_OK, "%s", err.message);
    CHECK(work_source_queued(ws));
    uint64_t u, got[8];
    int more = 0, n = 0, rc;
    while ((rc = work_source_next(ws, &u, &more, &err)) == ADAPT_OK && more && n < 8) {
        got[n++] = u;
        CHECK(work_source_done(ws, u, "/out/shard", 2, &err) == ADAPT_OK);
    }
    work_source_close(ws);
    pthread_join(t, NULL);
    close(d.listen_fd);
    CHECK(d.hello_ok);
    if (refuse == 1) {
        /* a unit count the daemon disagrees with: exit 2, not retried */
        CHECK_MSG(rc == ADAPT_EINVAL && n == 0 && link_client_error_fatal(rc), "rc %d", rc);
        CHECK_STR_CONTAINS(err.message, "the daemon's table holds 4");
    } else if (refuse == 2) {
        CHECK_MSG(rc == ADAPT_EIO && n == 0 && !link_client_error_fatal(rc), "rc %d", rc);
        CHECK_STR_CONTAINS(err.message, "the store is busy");
    } else if (refuse == 4) {
        CHECK_MSG(rc == ADAPT_EIO && n == 0 && !link_client_error_fatal(rc), "rc %d", rc);
        CHECK_STR_CONTAINS(err.message, "counting units of work");
    } else if (refuse == 3) {
        CHECK_MSG(rc == ADAPT_EINVAL && n == 0 && link_client_error_fatal(rc), "rc %d", rc);
        CHECK_STR_CONTAINS(err.message, "counts 5 units of work");
    } else {
        CHECK_MSG(rc == ADAPT_OK && n == 2 && got[0] == 3 && got[1] == 1, "rc %d n %d: %s", rc, n,
                  err.message);
        CHECK(d.requests == 3 && d.dones == 2 && d.done_units[0] == 3 && d.done_units[1] == 1);
        CHECK(!strcmp(d.done_out, "/out/shard"));
    }
}

static void test_dead_daemon(void)
{
    setenv("ADAPTD_LINK", sock_path, 1);   /* nothing listens there now */
    unlink(sock_path);
    setenv("ADAPTD_WORK_WAIT_MS", "700", 1);
    work_source *ws = NULL;
    adapt_error err = {0};
    CHECK(work_source_open(&ws, 0, 2, "filter", 3, &err) == ADAPT_OK);
    uint64_t u;
    int more = 1;
    CHECK(work_source_next(ws, &u, &more, &err) == ADAPT_EIO && !more);
    CHECK_STR_CONTAINS(err.message, "ADAPTD_WORK_WAIT_MS");
    work_source_close(ws);
    /* the environment's refusals name the variable */
    setenv("ADAPTD_WORK_WAIT_MS", "soon", 1);
    CHECK(work_source_open(&ws, 0, 2, "filter", 3, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "ADAPTD_WORK_WAIT_MS");
    unsetenv("ADAPTD_WORK_WAIT_MS");
    setenv("ADAPTD_WORK_QUEUE", "2", 1);
    CHECK(work_source_open(&ws, 0, 2, "filter", 3, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "ADAPTD_WORK_QUEUE");
    setenv("ADAPTD_WORK_QUEUE", "1", 1);
    unsetenv("ADAPTD_LINK");
    CHECK(work_source_open(&ws, 0, 2, "filter", 3, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "needs ADAPTD_LINK");
}

int main(void)
{
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    snprintf(sock_path, sizeof sock_path, "%s/link.sock", dir);
    test_static();
    test_queue(0);
    test_queue(1);
    test_queue(2);
    test_queue(3);
    test_queue(4);
    test_dead_daemon();
    unlink(sock_path);
    rmdir(dir);
    return check_report("work_source");
}
