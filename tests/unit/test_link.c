/* test_link: worker-link frames — round trip of every message, byte-at-a-time delivery,
 * truncated, oversized, undecodable and empty frames refused; then the libuv server with a
 * stand-in worker thread speaking the protocol over a Unix socket: Hello moves the job to
 * running, Progress lands in the metrics series, Control comes back, Done ends the job, and
 * peers that break the protocol are disconnected while the server keeps serving. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "link.h"

static Adaptd__LinkFrame *roundtrip(const Adaptd__LinkFrame *f)
{
    uint8_t *buf;
    size_t len;
    CHECK(link_frame_encode(f, &buf, &len, NULL) == ADAPT_OK);
    link_decoder_t *d;
    link_decoder_init(&d, 0, NULL);
    CHECK(link_decoder_feed(d, buf, len, NULL) == ADAPT_OK);
    Adaptd__LinkFrame *out = NULL;
    CHECK(link_decoder_next(d, &out, NULL) == 1);
    CHECK(link_decoder_pending(d) == 0);
    link_decoder_close(d);
    free(buf);
    return out;
}

static void test_roundtrip(void)
{
    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    p.job_id = "0123456789abcdef0123456789abcdef";
    p.step = 17; p.total_steps = 100; p.loss = 2.5f; p.tokens_per_second = 12345.5;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_PROGRESS;
    f.progress = &p;
    Adaptd__LinkFrame *g = roundtrip(&f);
    CHECK(g && g->body_case == ADAPTD__LINK_FRAME__BODY_PROGRESS);
    CHECK(g && g->progress->step == 17 && g->progress->loss == 2.5f &&
          g->progress->tokens_per_second == 12345.5 && strcmp(g->progress->job_id, p.job_id) == 0);
    if (g) adaptd__link_frame__free_unpacked(g, NULL);

    Adaptd__Control c = ADAPTD__CONTROL__INIT;
    c.action = ADAPTD__CONTROL__ACTION__CONTROL_STOP;
    c.reason = "cancel";
    f.body_case = ADAPTD__LINK_FRAME__BODY_CONTROL;
    f.control = &c;
    g = roundtrip(&f);
    CHECK(g && g->control->action == ADAPTD__CONTROL__ACTION__CONTROL_STOP);
    if (g) adaptd__link_frame__free_unpacked(g, NULL);

    Adaptd__Done dn = ADAPTD__DONE__INIT;
    dn.job_id = p.job_id; dn.ok = 1; dn.step = 100;
    f.body_case = ADAPTD__LINK_FRAME__BODY_DONE;
    f.done = &dn;
    g = roundtrip(&f);
    CHECK(g && g->done->ok && g->done->step == 100);
    if (g) adaptd__link_frame__free_unpacked(g, NULL);
}

/* Three frames delivered one byte at a time come out as three frames, in order. */
static void test_byte_stream(void)
{
    Adaptd__Heartbeat h = ADAPTD__HEARTBEAT__INIT;
    h.job_id = "x";
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_HEARTBEAT;
    f.heartbeat = &h;
    uint8_t all[256];
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        h.rank = (uint32_t)i;
        uint8_t *b; size_t n;
        link_frame_encode(&f, &b, &n, NULL);
        memcpy(all + total, b, n);
        total += n;
        free(b);
    }
    link_decoder_t *d;
    link_decoder_init(&d, 0, NULL);
    int got = 0;
    for (size_t i = 0; i < total; i++) {
        CHECK(link_decoder_feed(d, all + i, 1, NULL) == ADAPT_OK);
        Adaptd__LinkFrame *g;
        int rc;
        while ((rc = link_decoder_next(d, &g, NULL)) == 1) {
            CHECK(g->heartbeat->rank == (uint32_t)got);
            got++;
            adaptd__link_frame__free_unpacked(g, NULL);
        }
        CHECK(rc == 0);
    }
    CHECK(got == 3);
    link_decoder_close(d);
}

static void test_bad_frames(void)
{
    link_decoder_t *d;
    Adaptd__LinkFrame *g;
    adapt_error err = {0};

    /* truncated: all but the last byte */
    Adaptd__Heartbeat h = ADAPTD__HEARTBEAT__INIT;
    h.job_id = "job-with-a-longer-id";
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_HEARTBEAT;
    f.heartbeat = &h;
    uint8_t *b; size_t n;
    link_frame_encode(&f, &b, &n, NULL);
    link_decoder_init(&d, 0, NULL);
    CHECK(link_decoder_feed(d, b, n - 1, NULL) == ADAPT_OK);
    CHECK(link_decoder_next(d, &g, NULL) == 0 && link_decoder_pending(d) == n - 1);
    link_decoder_close(d);
    free(b);

    /* oversized: refused on the length prefix alone, and the decoder stays failed */
    uint8_t big[4] = { 0, 1, 0, 1 };   /* 65537 > 64 KiB */
    link_decoder_init(&d, 0, NULL);
    CHECK(link_decoder_feed(d, big, 4, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "exceeds the limit");
    CHECK(link_decoder_feed(d, big, 1, NULL) == ADAPT_ECORRUPT);
    link_decoder_close(d);

    /* a frame that is not protobuf, and a frame with no message in it */
    uint8_t junk[] = { 0, 0, 0, 3, 0xff, 0xff, 0xff };
    link_decoder_init(&d, 0, NULL);
    link_decoder_feed(d, junk, sizeof junk, NULL);
    CHECK(link_decoder_next(d, &g, &err) < 0 && g == NULL);
    link_decoder_close(d);
    uint8_t empty[] = { 0, 0, 0, 0 };
    link_decoder_init(&d, 0, NULL);
    link_decoder_feed(d, empty, sizeof empty, NULL);
    CHECK(link_decoder_next(d, &g, &err) < 0);
    CHECK_STR_CONTAINS(err.message, "no message");
    link_decoder_close(d);

    /* a smaller configured limit applies */
    link_decoder_init(&d, 8, NULL);
    link_frame_encode(&f, &b, &n, NULL);
    CHECK(n - 4 > 8 && link_decoder_feed(d, b, n, NULL) == ADAPT_ECORRUPT);
    free(b);
    link_decoder_close(d);
}

/* Random bytes (fixed seed): the decoder must end every stream with frames, a request for more
 * bytes, or an error — never a crash, never an endless loop. */
static void test_random_streams(void)
{
    uint32_t seed = 12345;
    int frames = 0, errors = 0;
    for (int round = 0; round < 2000; round++) {
        uint8_t buf[96];
        size_t n = 0;
        seed = seed * 1664525u + 1013904223u;
        n = 4 + (seed >> 24) % (sizeof buf - 4);
        for (size_t i = 0; i < n; i++) { seed = seed * 1664525u + 1013904223u; buf[i] = (uint8_t)(seed >> 24); }
        buf[0] = 0; buf[1] = 0;                 /* keep most prefixes under the limit */
        if (round % 2 == 0) {                   /* an exact prefix: random bytes reach unpack */
            buf[2] = (uint8_t)((n - 4) >> 8);
            buf[3] = (uint8_t)(n - 4);
            if (round % 4 == 0) { buf[4] = 0x12; buf[5] = (uint8_t)(n - 6); }  /* a Progress field */
        }
        link_decoder_t *d;
        link_decoder_init(&d, 0, NULL);
        if (link_decoder_feed(d, buf, n, NULL) == ADAPT_OK) {
            for (int k = 0; k < 100; k++) {     /* at most n/4 frames fit in n bytes */
                Adaptd__LinkFrame *g;
                int rc = link_decoder_next(d, &g, NULL);
                if (rc == 1) { frames++; adaptd__link_frame__free_unpacked(g, NULL); continue; }
                errors += rc < 0;
                break;
            }
        } else {
            errors++;
        }
        link_decoder_close(d);
    }
    CHECK(errors > 0);
    fprintf(stderr, "random streams: %d frames decoded, %d streams refused\n", frames, errors);
}

/* ---- server with a stand-in worker --------------------------------------------------------- */

typedef struct server_fixture {
    uv_loop_t      loop;
    uv_async_t     done;
    link_server_t *srv;
    job_store_t   *js;
    char           sock[300];
    char           job[JOB_STORE_ID_LEN + 1];
    int            frames, closes, client_ok;
} server_fixture;

static int job_store_get_state_is(job_store_t *js, const char *id, int state)
{
    job_store_record r;
    if (job_store_get(js, id, &r, NULL) != ADAPT_OK) return 0;
    int same = r.state == state;
    job_store_record_clear(&r);
    return same;
}

static int fx_frame(void *ctx, link_peer_t *peer, const Adaptd__LinkFrame *f)
{
    server_fixture *fx = ctx;
    fx->frames++;
    if (link_store_frame(fx->js, f, NULL) != ADAPT_OK) return 1;
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_DONE) {
        /* Done is only recorded on the attempt; the job's state is the scheduler's call, made
         * here by hand as it would be once the worker's processes have exited with status 0 */
        job_store_attempt a;
        CHECK(job_store_get_state_is(fx->js, fx->job, JOB_STORE_RUNNING));
        CHECK(job_store_attempt_get(fx->js, fx->job, 1, &a, NULL) == ADAPT_OK &&
              a.done == JOB_STORE_DONE_OK);
        CHECK(job_store_transition(fx->js, fx->job, JOB_STORE_SUCCEEDED, NULL, NULL) == ADAPT_OK);
    }
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_HELLO) {
        Adaptd__Control c = ADAPTD__CONTROL__INIT;
        c.action = ADAPTD__CONTROL__ACTION__CONTROL_CHECKPOINT;
        Adaptd__LinkFrame out = ADAPTD__LINK_FRAME__INIT;
        out.body_case = ADAPTD__LINK_FRAME__BODY_CONTROL;
        out.control = &c;
        CHECK(link_peer_send(peer, &out, NULL) == ADAPT_OK);
    }
    return 0;
}

static void fx_close(void *ctx, link_peer_t *peer, const char *job) { ((server_fixture *)ctx)->closes++; }

static int client_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return -1; }
    return fd;
}

static void client_send(int fd, Adaptd__LinkFrame *f)
{
    uint8_t *b; size_t n;
    link_frame_encode(f, &b, &n, NULL);
    CHECK(write(fd, b, n) == (ssize_t)n);
    free(b);
}

/* Returns 1 when the server closed the connection (read gives EOF or reset). */
static int client_closed_by_server(int fd)
{
    char c;
    ssize_t n = read(fd, &c, 1);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void *worker_thread(void *arg)
{
    server_fixture *fx = arg;
    int fd = client_connect(fx->sock);
    CHECK(fd >= 0);
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    Adaptd__Hello h = ADAPTD__HELLO__INIT;
    h.job_id = fx->job; h.world_size = 1; h.protocol = LINK_PROTOCOL; h.pid = getpid();
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO; f.hello = &h;
    client_send(fd, &f);
    /* the daemon answers a Hello with a Control(checkpoint) in this fixture */
    uint8_t buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    link_decoder_t *d;
    link_decoder_init(&d, 0, NULL);
    Adaptd__LinkFrame *g = NULL;
    CHECK(n > 4 && link_decoder_feed(d, buf, (size_t)n, NULL) == ADAPT_OK &&
          link_decoder_next(d, &g, NULL) == 1);
    CHECK(g && g->body_case == ADAPTD__LINK_FRAME__BODY_CONTROL &&
          g->control->action == ADAPTD__CONTROL__ACTION__CONTROL_CHECKPOINT);
    if (g) adaptd__link_frame__free_unpacked(g, NULL);
    link_decoder_close(d);

    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    p.job_id = fx->job; p.total_steps = 3;
    f.body_case = ADAPTD__LINK_FRAME__BODY_PROGRESS; f.progress = &p;
    for (int s = 1; s <= 3; s++) { p.step = (uint64_t)s; p.loss = 4.0f / (float)s; client_send(fd, &f); }
    Adaptd__Checkpoint ck = ADAPTD__CHECKPOINT__INIT;
    ck.job_id = fx->job; ck.step = 3; ck.path = "/ckpt/3"; ck.complete = 1;
    f.body_case = ADAPTD__LINK_FRAME__BODY_CHECKPOINT; f.checkpoint = &ck;
    client_send(fd, &f);
    Adaptd__Done dn = ADAPTD__DONE__INIT;
    dn.job_id = fx->job; dn.ok = 1; dn.step = 3;
    f.body_case = ADAPTD__LINK_FRAME__BODY_DONE; f.done = &dn;
    client_send(fd, &f);
    /* a Hello after Hello breaks the protocol: the server hangs up */
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO; f.hello = &h;
    client_send(fd, &f);
    CHECK(client_closed_by_server(fd));
    close(fd);

    /* Progress before any Hello, and an oversized frame: both disconnected */
    fd = client_connect(fx->sock);
    f.body_case = ADAPTD__LINK_FRAME__BODY_PROGRESS; f.progress = &p;
    client_send(fd, &f);
    CHECK(client_closed_by_server(fd));
    close(fd);
    fd = client_connect(fx->sock);
    uint8_t big[4] = { 0x7f, 0, 0, 0 };
    CHECK(write(fd, big, 4) == 4);
    CHECK(client_closed_by_server(fd));
    close(fd);
    /* a Hello for a job that is not starting (it succeeded) is refused */
    fd = client_connect(fx->sock);
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO; f.hello = &h;
    client_send(fd, &f);
    CHECK(client_closed_by_server(fd));
    close(fd);
    fx->client_ok = 1;
    uv_async_send(&fx->done);
    return NULL;
}

static void fx_done(uv_async_t *a)
{
    server_fixture *fx = a->data;
    link_server_close(fx->srv);
    uv_close((uv_handle_t *)&fx->done, NULL);
}

static void test_server(const char *dir)
{
    server_fixture fx = {0};
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&fx.js, dir, &err) == ADAPT_OK, "%s", err.message);
    job_store_new in = { .name = "link", .kind = "train", .ranks = 1, .spec_json = "{}" };
    CHECK(job_store_create(fx.js, &in, fx.job, NULL) == ADAPT_OK);
    CHECK(job_store_transition(fx.js, fx.job, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    snprintf(fx.sock, sizeof fx.sock, "%s/link.sock", dir);
    uv_loop_init(&fx.loop);
    uv_async_init(&fx.loop, &fx.done, fx_done);
    fx.done.data = &fx;
    link_handlers h = { .on_frame = fx_frame, .on_close = fx_close, .ctx = &fx };
    CHECK_MSG(link_server_init(&fx.srv, &fx.loop, fx.sock, 0, &h, &err) == ADAPT_OK, "%s", err.message);
    pthread_t t;
    pthread_create(&t, NULL, worker_thread, &fx);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    CHECK(uv_loop_close(&fx.loop) == 0);
    CHECK(fx.client_ok && fx.closes == 4);
    job_store_record r;
    CHECK(job_store_get(fx.js, fx.job, &r, NULL) == ADAPT_OK);
    CHECK(r.state == JOB_STORE_SUCCEEDED && r.progress.step == 3);
    CHECK(strcmp(r.last_checkpoint, "/ckpt/3") == 0);
    job_store_record_clear(&r);
    job_store_progress pts[8];
    size_t n = 0;
    CHECK(job_store_metrics(fx.js, fx.job, -1, pts, 8, &n, NULL) == ADAPT_OK);
    CHECK(n == 3 && pts[2].loss > 1.33 && pts[2].loss < 1.34);
    job_store_close(fx.js);
}

int main(void)
{
    test_roundtrip();
    test_byte_stream();
    test_bad_frames();
    test_random_streams();
    char dir[] = "/tmp/adapt-test-link-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_server(dir);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("link");
}
