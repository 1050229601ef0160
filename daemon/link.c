/* link: frame codec, the libuv Unix-socket server, and frames applied to the job store; see
 * link.h.
 *
 * Design: bytes in, frames out. The server never interprets a frame beyond the Hello binding a
 * connection to one job; what a frame means for the job is link_store_frame's business. */
#include "link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- codec -------------------------------------------------------------------------------- */

int link_frame_encode(const Adaptd__LinkFrame *f, uint8_t **buf, size_t *len, adapt_error *err)
{
    size_t n = adaptd__link_frame__get_packed_size(f);
    if (n > UINT32_MAX) return adapt_fail(err, ADAPT_ERANGE, "link frame of %zu bytes", n);
    uint8_t *b = malloc(LINK_HEADER_BYTES + n);
    if (!b) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    b[0] = (uint8_t)(n >> 24); b[1] = (uint8_t)(n >> 16); b[2] = (uint8_t)(n >> 8); b[3] = (uint8_t)n;
    adaptd__link_frame__pack(f, b + LINK_HEADER_BYTES);
    *buf = b;
    *len = LINK_HEADER_BYTES + n;
    return ADAPT_OK;
}

struct link_decoder {
    uint8_t *buf;
    size_t   len, cap, max_frame;
    int      failed;
};

int link_decoder_init(link_decoder_t **out, size_t max_frame, adapt_error *err)
{
    link_decoder_t *d = calloc(1, sizeof *d);
    if (!d) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    d->max_frame = max_frame ? max_frame : LINK_MAX_FRAME;
    *out = d;
    return ADAPT_OK;
}

void link_decoder_close(link_decoder_t *d)
{
    if (!d) return;
    free(d->buf);
    free(d);
}

static size_t frame_length(const uint8_t *b)
{
    return (size_t)b[0] << 24 | (size_t)b[1] << 16 | (size_t)b[2] << 8 | b[3];
}

int link_decoder_feed(link_decoder_t *d, const void *data, size_t len, adapt_error *err)
{
    if (d->failed) return adapt_fail(err, ADAPT_ECORRUPT, "link stream already failed");
    if (d->len + len > d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < d->len + len) cap *= 2;
        uint8_t *b = realloc(d->buf, cap);
        if (!b) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        d->buf = b;
        d->cap = cap;
    }
    memcpy(d->buf + d->len, data, len);
    d->len += len;
    if (d->len >= LINK_HEADER_BYTES && frame_length(d->buf) > d->max_frame) {
        d->failed = 1;
        return adapt_fail(err, ADAPT_ECORRUPT, "link frame of %zu bytes exceeds the limit of %zu",
                          frame_length(d->buf), d->max_frame);
    }
    return ADAPT_OK;
}

int link_decoder_next(link_decoder_t *d, Adaptd__LinkFrame **frame, adapt_error *err)
{
    *frame = NULL;
    if (d->failed) return adapt_fail(err, ADAPT_ECORRUPT, "link stream already failed");
    if (d->len < LINK_HEADER_BYTES) return 0;
    size_t n = frame_length(d->buf);
    if (n > d->max_frame) {
        d->failed = 1;
        return adapt_fail(err, ADAPT_ECORRUPT, "link frame of %zu bytes exceeds the limit of %zu",
                          n, d->max_frame);
    }
    if (d->len < LINK_HEADER_BYTES + n) return 0;
    Adaptd__LinkFrame *f = adaptd__link_frame__unpack(NULL, n, d->buf + LINK_HEADER_BYTES);
    size_t used = LINK_HEADER_BYTES + n;
    memmove(d->buf, d->buf + used, d->len - used);
    d->len -= used;
    if (!f || f->body_case == ADAPTD__LINK_FRAME__BODY__NOT_SET) {
        if (f) adaptd__link_frame__free_unpacked(f, NULL);
        d->failed = 1;
        return adapt_fail(err, ADAPT_ECORRUPT, f ? "link frame carries no message"
                                                 : "link frame of %zu bytes does not decode", n);
    }
    /* After the length, the frame's own next length must also be within limits: checked now so
     * a stream is refused as early as the bytes allow. */
    if (d->len >= LINK_HEADER_BYTES && frame_length(d->buf) > d->max_frame) d->failed = 1;
    *frame = f;
    return 1;
}

size_t link_decoder_pending(const link_decoder_t *d) { return d->len; }

/* ---- server ------------------------------------------------------------------------------- */

struct link_peer {
    uv_pipe_t       pipe;
    link_server_t  *srv;
    link_peer_t    *prev, *next;
    link_decoder_t *dec;
    int             closing;
    int             hello_seen;
    uint32_t        rank;
    char            job_id[JOB_STORE_ID_LEN + 1];
    uint8_t         rbuf[16384];
};

struct link_server {
    uv_loop_t    *loop;
    uv_pipe_t     listen;
    link_handlers h;
    size_t        max_frame;
    link_peer_t  *peers;
    int           npeers;
    int           open_handles;
    int           closing;
};

static void server_maybe_free(link_server_t *srv)
{
    if (srv->closing && srv->open_handles == 0) free(srv);
}

static void peer_closed(uv_handle_t *h)
{
    link_peer_t *p = h->data;
    link_server_t *srv = p->srv;
    if (p->prev) p->prev->next = p->next; else srv->peers = p->next;
    if (p->next) p->next->prev = p->prev;
    srv->npeers--;
    srv->open_handles--;
    link_decoder_close(p->dec);
    free(p);
    server_maybe_free(srv);
}

static void peer_close(link_peer_t *p)
{
    if (p->closing) return;
    p->closing = 1;
    if (p->srv->h.on_close) p->srv->h.on_close(p->srv->h.ctx, p, p->job_id);
    uv_close((uv_handle_t *)&p->pipe, peer_closed);
}

/* The job a frame names, for the one-job-per-connection rule; NULL for Control. */
static const char *frame_job(const Adaptd__LinkFrame *f)
{
    switch (f->body_case) {
    case ADAPTD__LINK_FRAME__BODY_HELLO:      return f->hello->job_id;
    case ADAPTD__LINK_FRAME__BODY_PROGRESS:   return f->progress->job_id;
    case ADAPTD__LINK_FRAME__BODY_CHECKPOINT: return f->checkpoint->job_id;
    case ADAPTD__LINK_FRAME__BODY_DONE:       return f->done->job_id;
    case ADAPTD__LINK_FRAME__BODY_HEARTBEAT:  return f->heartbeat->job_id;
    case ADAPTD__LINK_FRAME__BODY_WORK_REQUEST: return f->work_request->job_id;
    case ADAPTD__LINK_FRAME__BODY_SHARD_DONE:   return f->shard_done->job_id;
    default:                                  return NULL;
    }
}

/* Enforces Hello-first and one job per connection; 0 when the frame may be delivered. */
static int peer_admit(link_peer_t *p, const Adaptd__LinkFrame *f)
{
    const char *job = frame_job(f);
    if (!job) return -1;                        /* workers never send Control */
    if (!p->hello_seen) {
        if (f->body_case != ADAPTD__LINK_FRAME__BODY_HELLO || strlen(job) != JOB_STORE_ID_LEN)
            return -1;
        p->hello_seen = 1;
        p->rank = f->hello->rank;
        memcpy(p->job_id, job, JOB_STORE_ID_LEN + 1);
        return 0;
    }
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_HELLO) return -1;
    return strcmp(job, p->job_id) == 0 ? 0 : -1;
}

/* The read buffer is the peer's own rbuf, consumed (copied into the decoder) before read_cb
 * returns. */
static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    link_peer_t *p = h->data;
    *buf = uv_buf_init((char *)p->rbuf, sizeof p->rbuf);
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    link_peer_t *p = s->data;
    if (nread == 0 || p->closing) return;
    if (nread < 0 || link_decoder_feed(p->dec, buf->base, (size_t)nread, NULL) != ADAPT_OK) {
        peer_close(p);
        return;
    }
    for (;;) {
        Adaptd__LinkFrame *f;
        int rc = link_decoder_next(p->dec, &f, NULL);
        if (rc == 0) return;
        int refuse = rc < 0 || peer_admit(p, f) != 0 ||
                     (p->srv->h.on_frame && p->srv->h.on_frame(p->srv->h.ctx, p, f) != 0);
        if (f) adaptd__link_frame__free_unpacked(f, NULL);
        if (refuse) { peer_close(p); return; }
    }
}

static void on_peer(uv_stream_t *ls, int status)
{
    link_server_t *srv = ls->data;
    if (status < 0 || srv->closing) return;
    link_peer_t *p = calloc(1, sizeof *p);
    if (!p) return;
    p->srv = srv;
    uv_pipe_init(srv->loop, &p->pipe, 0);
    p->pipe.data = p;
    p->next = srv->peers;
    if (srv->peers) srv->peers->prev = p;
    srv->peers = p;
    srv->npeers++;
    srv->open_handles++;
    if (link_decoder_init(&p->dec, srv->max_frame, NULL) != ADAPT_OK ||
        uv_accept(ls, (uv_stream_t *)&p->pipe) != 0 ||
        uv_read_start((uv_stream_t *)&p->pipe, peer_alloc, peer_read) != 0)
        peer_close(p);
}

static void listener_closed(uv_handle_t *h)
{
    link_server_t *srv = h->data;
    srv->open_handles--;
    server_maybe_free(srv);
}

int link_server_init(link_server_t **out, uv_loop_t *loop, const char *path, size_t max_frame,
                     const link_handlers *h, adapt_error *err)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return adapt_fail(err, ADAPT_EINVAL, "%s exists and is not a socket", path);
        unlink(path);   /* only this daemon's state dir holds it: a leftover from a dead one */
    }
    link_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    srv->loop = loop;
    srv->h = *h;
    srv->max_frame = max_frame ? max_frame : LINK_MAX_FRAME;
    uv_pipe_init(loop, &srv->listen, 0);
    srv->listen.data = srv;
    srv->open_handles = 1;
    int rc = uv_pipe_bind(&srv->listen, path);
    if (rc == 0 && chmod(path, 0600) != 0) rc = uv_translate_sys_error(errno);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listen, 128, on_peer);
    if (rc != 0) {
        srv->closing = 1;
        uv_close((uv_handle_t *)&srv->listen, listener_closed);
        return adapt_fail(err, ADAPT_EIO, "worker link socket %s: %s", path, uv_strerror(rc));
    }
    *out = srv;
    return ADAPT_OK;
}

void link_server_close(link_server_t *srv)
{
    if (!srv) return;
    srv->closing = 1;
    uv_close((uv_handle_t *)&srv->listen, listener_closed);
    for (link_peer_t *p = srv->peers; p; p = p->next) peer_close(p);
}

int link_server_peers(const link_server_t *srv) { return srv->npeers; }
const char *link_peer_job(const link_peer_t *p) { return p->job_id; }
uint32_t link_peer_rank(const link_peer_t *p) { return p->rank; }

/* The buffer of a sent frame travels with its write request and is freed here. */
typedef struct link_write {
    uv_write_t req;
    uint8_t   *buf;
} link_write;

static void peer_written(uv_write_t *req, int status)
{
    link_write *w = (link_write *)req;
    free(w->buf);
    free(w);
}

int link_peer_send(link_peer_t *p, const Adaptd__LinkFrame *f, adapt_error *err)
{
    if (p->closing) return adapt_fail(err, ADAPT_EIO, "worker link to job %s is closed", p->job_id);
    link_write *w = calloc(1, sizeof *w);
    size_t len;
    if (!w) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    int rc = link_frame_encode(f, &w->buf, &len, err);
    if (rc != ADAPT_OK) { free(w); return rc; }
    uv_buf_t b = uv_buf_init((char *)w->buf, (unsigned)len);
    if ((rc = uv_write(&w->req, (uv_stream_t *)&p->pipe, &b, 1, peer_written)) != 0) {
        free(w->buf);
        free(w);
        return adapt_fail(err, ADAPT_EIO, "worker link: %s", uv_strerror(rc));
    }
    return ADAPT_OK;
}

/* ---- frames into the job store ------------------------------------------------------------ */

static int store_hello(job_store_t *js, const Adaptd__Hello *h, adapt_error *err)
{
    if (h->protocol != LINK_PROTOCOL)
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "job %s: worker speaks link protocol %u, adaptd %d",
                          h->job_id, h->protocol, LINK_PROTOCOL);
    job_store_record r;
    int rc = job_store_get(js, h->job_id, &r, err);
    if (rc != ADAPT_OK) return rc;
    int state = r.state;
    job_store_record_clear(&r);
    if (state == JOB_STORE_RUNNING) return ADAPT_OK;          /* another rank said hello first */
    if (state != JOB_STORE_STARTING)
        return adapt_fail(err, ADAPT_EINVAL, "job %s is %s: no worker may join it", h->job_id,
                          job_store_state_name(state));
    return job_store_transition(js, h->job_id, JOB_STORE_RUNNING, NULL, err);
}

int link_done_outcome(const Adaptd__Done *d)
{
    /* a stopped worker (ok=false, stopped=true) left a complete checkpoint to resume from */
    return d->ok ? JOB_STORE_DONE_OK : d->fatal ? JOB_STORE_DONE_FATAL
         : d->stopped ? JOB_STORE_DONE_STOPPED : JOB_STORE_DONE_FAILED;
}

int link_store_frame(job_store_t *js, const Adaptd__LinkFrame *f, adapt_error *err)
{
    switch (f->body_case) {
    case ADAPTD__LINK_FRAME__BODY_HELLO:
        return store_hello(js, f->hello, err);
    case ADAPTD__LINK_FRAME__BODY_PROGRESS: {
        const Adaptd__Progress *m = f->progress;
        if (m->rank != 0) return ADAPT_OK;                     /* rank 0 speaks for the job */
        job_store_progress p = {
            .step = m->step, .total_steps = m->total_steps, .epoch = m->epoch,
            .samples = m->samples, .tokens = m->tokens, .loss = m->loss, .lr = m->lr,
            .grad_norm = m->grad_norm, .step_seconds = m->step_seconds,
            .tokens_per_second = m->tokens_per_second, .unix_time_ms = m->unix_time_ms,
        };
        return job_store_add_progress(js, m->job_id, &p, err);
    }
    case ADAPTD__LINK_FRAME__BODY_CHECKPOINT:
        if (!f->checkpoint->complete) return ADAPT_OK;         /* only a whole one can resume */
        return job_store_set_checkpoint(js, f->checkpoint->job_id, f->checkpoint->path, err);
    case ADAPTD__LINK_FRAME__BODY_DONE:
        return job_store_attempt_set_done(js, f->done->job_id, 0, link_done_outcome(f->done),
                                          f->done->ok ? NULL : f->done->error, err);
    case ADAPTD__LINK_FRAME__BODY_HEARTBEAT:
        return ADAPT_OK;
    case ADAPTD__LINK_FRAME__BODY_WORK_REQUEST:   /* the scheduler's work queue answers these */
    case ADAPTD__LINK_FRAME__BODY_SHARD_DONE:
        return ADAPT_OK;
    default:
        return adapt_fail(err, ADAPT_EINVAL, "a worker may not send this frame");
    }
}
