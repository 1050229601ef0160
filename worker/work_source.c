/* work_source: a rank's units of work from adaptd's queue or the static assignment; see
 * work_source.h.
 *
 * Design: a blocking question-and-answer over a Unix socket, with poll() deadlines so a stopped
 * daemon costs a time-out, never a hang; on any failure the connection is dropped and the next
 * try reconnects (Hello again). Frames are link frames: 4-byte big-endian length + LinkFrame. */
#include "work_source.h"

#include "job.pb-c.h"
#include "link_client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { WS_RECONNECT_MS = 500, WS_MAX_FRAME = 64 * 1024 };

struct work_source {
    int      queued;
    int      rank, world;
    uint64_t units, next_static;
    /* queue mode */
    link_client_options o;
    char     kind[32];
    uint64_t wait_ms;
    int      fd;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void ws_disconnect(work_source *ws)
{
    if (ws->fd >= 0) close(ws->fd);
    ws->fd = -1;
}

/* Writes all of buf before deadline; -1 on failure or time-out. */
static int send_all(int fd, const uint8_t *buf, size_t len, uint64_t deadline)
{
    while (len) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        uint64_t now = now_ms();
        if (now >= deadline) return -1;
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR) return -1;
    }
    return 0;
}

/* Reads exactly len bytes before deadline; -1 on failure, end of stream or time-out. */
static int recv_all(int fd, uint8_t *buf, size_t len, uint64_t deadline)
{
    while (len) {
        ssize_t r = recv(fd, buf, len, MSG_DONTWAIT);
        if (r > 0) {
            buf += r;
            len -= (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
        uint64_t now = now_ms();
        if (now >= deadline) return -1;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR) return -1;
    }
    return 0;
}

static int send_frame(work_source *ws, const Adaptd__LinkFrame *f, uint64_t deadline)
{
    size_t n = adaptd__link_frame__get_packed_size(f);
    uint8_t *buf = malloc(4 + n);
    if (!buf) return -1;
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    adaptd__link_frame__pack(f, buf + 4);
    int rc = send_all(ws->fd, buf, 4 + n, deadline);
    free(buf);
    return rc;
}

/* Connects and says Hello when not connected; -1 when that fails now. */
static int ws_connect(work_source *ws, uint64_t deadline)
{
    if (ws->fd >= 0) return 0;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(ws->o.path) >= sizeof sa.sun_path) return -1;
    memcpy(sa.sun_path, ws->o.path, strlen(ws->o.path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    ws->fd = fd;
    Adaptd__Hello h = ADAPTD__HELLO__INIT;
    h.job_id = (char *)ws->o.job_id;
    h.rank = (uint32_t)ws->rank;
    h.world_size = (uint32_t)ws->world;
    h.pid = getpid();
    h.attempt = ws->o.attempt;
    h.worker_version = "1";
    h.protocol = LINK_CLIENT_PROTOCOL;
    h.work_queue = 1;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO;
    f.hello = &h;
    if (send_frame(ws, &f, deadline) != 0) {
        ws_disconnect(ws);
        return -1;
    }
    return 0;
}

/* Reads frames until a WorkGrant (others, e.g. a Control meant for the reporting link, are
 * skipped); the caller frees *out. -1 on failure. */
static int read_grant(work_source *ws, Adaptd__LinkFrame **out, uint64_t deadline)
{
    for (;;) {
        uint8_t hdr[4];
        if (recv_all(ws->fd, hdr, 4, deadline) != 0) return -1;
        size_t len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
        if (len > WS_MAX_FRAME) return -1;
        uint8_t *body = malloc(len ? len : 1);
        if (!body) return -1;
        int rc = recv_all(ws->fd, body, len, deadline);
        Adaptd__LinkFrame *f = rc ? NULL : adaptd__link_frame__unpack(NULL, len, body);
        free(body);
        if (!f) return -1;
        if (f->body_case == ADAPTD__LINK_FRAME__BODY_WORK_GRANT) {
            *out = f;
            return 0;
        }
        adaptd__link_frame__free_unpacked(f, NULL);
    }
}

int work_source_open(work_source **out, int rank, int world, const char *kind, uint64_t units,
                     adapt_error *err)
{
    *out = NULL;
    work_source *ws = calloc(1, sizeof *ws);
    if (!ws) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    ws->rank = rank;
    ws->world = world > 0 ? world : 1;
    ws->units = units;
    ws->next_static = (uint64_t)rank;
    ws->fd = -1;
    const char *q = getenv("ADAPTD_WORK_QUEUE");
    if (q && *q && strcmp(q, "0") != 0) {
        if (strcmp(q, "1") != 0) {
            free(ws);
            return adapt_fail(err, ADAPT_EINVAL, "ADAPTD_WORK_QUEUE=\"%s\": expected 0 or 1", q);
        }
        int have = 0, rc = link_client_env(&ws->o, &have, err);
        const char *w = getenv("ADAPTD_WORK_WAIT_MS");
        char *end = NULL;
        ws->wait_ms = 60000;
        if (!rc && w && *w) {
            errno = 0;
            unsigned long long v = strtoull(w, &end, 10);
            if (errno || *end || w[0] == '-' || v == 0 || v > 3600000)
                rc = adapt_fail(err, ADAPT_EINVAL, "ADAPTD_WORK_WAIT_MS=\"%s\": expected a whole "
                                "number of milliseconds from 1 to 3600000", w);
            ws->wait_ms = v;
        }
        if (!rc && !have)
            rc = adapt_fail(err, ADAPT_EINVAL, "ADAPTD_WORK_QUEUE=1 needs ADAPTD_LINK (the "
                            "daemon's worker link socket)");
        if (rc) {
            free(ws);
            return rc;
        }
        ws->queued = 1;
        snprintf(ws->kind, sizeof ws->kind, "%s", kind ? kind : "");
    }
    *out = ws;
    return ADAPT_OK;
}

int work_source_queued(const work_source *ws) { return ws ? ws->queued : 0; }

int work_source_next(work_source *ws, uint64_t *unit, int *more, adapt_error *err)
{
    *more = 0;
    if (!ws->queued) {
        if (ws->next_static >= ws->units) return ADAPT_OK;
        *unit = ws->next_static;
        ws->next_static += (uint64_t)ws->world;
        *more = 1;
        return ADAPT_OK;
    }
    Adaptd__WorkRequest q = ADAPTD__WORK_REQUEST__INIT;
    q.job_id = (char *)ws->o.job_id;
    q.rank = (uint32_t)ws->rank;
    q.attempt = ws->o.attempt;
    q.kind = ws->kind;
    q.units = ws->units;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_WORK_REQUEST;
    f.work_request = &q;
    uint64_t deadline = now_ms() + ws->wait_ms;
    /* asking again after a lost answer is safe: the daemon gives back a lease this rank never
     * received before it leases anew */
    while (now_ms() < deadline) {
        Adaptd__LinkFrame *g = NULL;
        if (ws_connect(ws, deadline) == 0 && send_frame(ws, &f, deadline) == 0 &&
            read_grant(ws, &g, deadline) == 0) {
            const Adaptd__WorkGrant *wg = g->work_grant;
            int rc = ADAPT_OK;
            /* A count of units the daemon's table disagrees with is the input's fault (the
             * corpus changed since the job began, or a spec that shards it otherwise): every
             * retry would count the same, so it is ADAPT_EINVAL, which adapt-worker exits 2
             * for and adaptd does not retry (link_client_error_fatal). Any other refusal (the
             * daemon's store failing) may pass on the next attempt. */
            if (wg->error && wg->error[0])
                rc = adapt_fail(err, wg->fatal ? ADAPT_EINVAL : ADAPT_EIO,
                                "the daemon refused rank %d's request for work: %s", ws->rank,
                                wg->error);
            else if (!wg->none_left && wg->shard >= ws->units)
                rc = adapt_fail(err, ADAPT_EINVAL, "the daemon granted unit %llu, but rank %d "
                                "counts %llu units of work", (unsigned long long)wg->shard,
                                ws->rank, (unsigned long long)ws->units);
            else if (!wg->none_left) {
                *unit = wg->shard;
                *more = 1;
            }
            adaptd__link_frame__free_unpacked(g, NULL);
            return rc;
        }
        ws_disconnect(ws);
        uint64_t now = now_ms();
        if (now + WS_RECONNECT_MS >= deadline) break;
        struct timespec ts = { 0, WS_RECONNECT_MS * 1000000L };
        nanosleep(&ts, NULL);
    }
    return adapt_fail(err, ADAPT_EIO, "rank %d: no answer from the daemon's work queue at %s "
                      "within %llu ms (ADAPTD_WORK_WAIT_MS)", ws->rank, ws->o.path,
                      (unsigned long long)ws->wait_ms);
}

int work_source_done(work_source *ws, uint64_t unit, const char *output, uint64_t records,
                     adapt_error *err)
{
    if (!ws->queued) return ADAPT_OK;
    Adaptd__ShardDone d = ADAPTD__SHARD_DONE__INIT;
    d.job_id = (char *)ws->o.job_id;
    d.rank = (uint32_t)ws->rank;
    d.shard = unit;
    d.output_path = (char *)(output ? output : "");
    d.records = records;
    d.attempt = ws->o.attempt;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_SHARD_DONE;
    f.shard_done = &d;
    uint64_t deadline = now_ms() + ws->wait_ms;
    /* Sent once per connection: a frame the daemon lost with its life is not lost work — the
     * unit stays leased to this rank, its next request puts it back in the queue, and whoever
     * gets it finds its output in place and reports it finished without redoing it. */
    if (ws_connect(ws, deadline) == 0 && send_frame(ws, &f, deadline) == 0) return ADAPT_OK;
    ws_disconnect(ws);
    (void)err;
    fprintf(stderr, "adapt-worker: rank %d: ShardDone of unit %llu not delivered (the daemon "
            "link is down); it goes back to the queue and is reported again when next handed out\n", ws->rank,
            (unsigned long long)unit);
    return ADAPT_OK;
}

void work_source_close(work_source *ws)
{
    if (!ws) return;
    ws_disconnect(ws);
    free(ws);
}
