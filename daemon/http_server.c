/* http_server: libuv listeners and connections, llhttp parsing, limits; see http_server.h.
 *
 * Design: each connection is a small state machine (idle → headers → body → idle, or drain once
 * it is going to close) with one timer whose deadline depends on the phase. A connection that
 * must close first writes its last response, shuts down its write side and keeps reading (and
 * discarding) for a short linger, so the client reads the 4xx instead of a reset. */
#include "http_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <llhttp.h>

enum {
    HTTP_MAX_LISTENERS = 8,
    HTTP_READ_BUF      = 16384,
    HTTP_LINGER_MS     = 500,
    HTTP_WRITE_HIGH    = 4 << 20,  /* queued response bytes above which reading pauses */
};

enum conn_phase { CONN_IDLE, CONN_HEADERS, CONN_BODY, CONN_DRAIN };

typedef struct listener {
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } h;
    http_server_t *srv;
} listener;

typedef struct conn {
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } h;
    uv_timer_t     timer;
    http_server_t *srv;
    struct conn   *prev, *next;
    llhttp_t       parser;
    int            phase;
    int            handles_open;    /* stream + timer; the conn is freed when both closed */
    int            closing;
    int            close_after_write;
    int            reading;
    int            fail_status;     /* set by a parser callback that refuses the request */
    int            pending_writes;
    int            finishing;       /* conn_finish ran: the FIN is queued or sent */
    /* request line and headers, NUL-separated, indexed by the offsets below */
    char          *head;
    size_t         head_len, head_cap;
    size_t         name_off[HTTP_MAX_HEADERS], value_off[HTTP_MAX_HEADERS];
    int            nheaders, field_open, value_open;
    char          *body;
    size_t         body_len, body_cap;
    char           rbuf[HTTP_READ_BUF];
} conn;

/* One response on its way out: the uv_write_t and the bytes in one allocation, freed in
 * write_done. */
typedef struct write_req {
    uv_write_t req;
    conn      *c;
    size_t     len;
    char       data[];
} write_req;

struct http_server {
    uv_loop_t        *loop;
    http_limits       lim;
    http_handler_fn   handler;
    void             *ctx;
    llhttp_settings_t settings;    /* shared by every parser; must outlive them */
    listener         *listeners[HTTP_MAX_LISTENERS];
    int               nlisteners;
    int               port;
    conn             *conns;
    int               nconns;
    int               open_handles; /* listeners + conns not yet freed */
    int               closing;
    uint64_t          responses[600];
};

void http_limits_default(http_limits *lim)
{
    lim->max_header_bytes  = 16 * 1024;
    lim->max_body_bytes    = 1024 * 1024;
    lim->header_timeout_ms = 10000;
    lim->body_timeout_ms   = 30000;
    lim->idle_timeout_ms   = 60000;
    lim->max_connections   = 512;
}

const char *http_status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "Unknown";
}

static void server_maybe_free(http_server_t *srv)
{
    if (srv->closing && srv->open_handles == 0) free(srv);
}

/* ---- connection teardown ---------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles_open > 0) return;
    http_server_t *srv = c->srv;
    if (c->prev) c->prev->next = c->next; else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    srv->open_handles--;
    free(c->head);
    free(c->body);
    free(c);
    server_maybe_free(srv);
}

static void conn_close(conn *c)
{
    if (c->closing) return;
    c->closing = 1;
    uv_close(&c->h.handle, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void conn_timer_cb(uv_timer_t *t);

static void conn_timer_set(conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

/* ---- writing ------------------------------------------------------------------------------ */

static void read_start(conn *c);

static void shutdown_done(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    free(req);
    /* After the FIN, linger a moment reading and discarding what the client still sends, then
     * close: closing with unread input would reset the connection and lose the response. */
    if (status < 0 || c->closing) { if (!c->closing) conn_close(c); return; }
    conn_timer_set(c, HTTP_LINGER_MS);
}

static void conn_finish(conn *c)
{
    if (c->finishing) return;   /* the last write and the closing request may both get here */
    c->finishing = 1;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, &c->h.stream, shutdown_done) != 0) {
        free(req);
        conn_close(c);
        return;
    }
    req->data = c;
}

static void write_done(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    free(w);
    c->pending_writes--;
    if (c->closing) return;                        /* cancelled by uv_close: c still valid */
    if (status < 0) { conn_close(c); return; }
    if (c->close_after_write) {
        if (c->pending_writes == 0) conn_finish(c);
        return;
    }
    if (!c->reading && uv_stream_get_write_queue_size(&c->h.stream) == 0) read_start(c);
}

/* Sends head + body. The common case (nothing queued, the socket has room) is one writev from
 * the caller's buffers, with no allocation and no copy; only what the kernel does not take at
 * once is copied into a write_req and queued behind. Returns -1 (connection closed) when it
 * cannot. */
static int conn_write(conn *c, const char *head, size_t n, const char *body, size_t len)
{
    uv_buf_t bufs[2] = { uv_buf_init((char *)head, (unsigned)n), uv_buf_init((char *)body, (unsigned)len) };
    size_t sent = 0;
    if (c->pending_writes == 0) {
        int rc = uv_try_write(&c->h.stream, bufs, len ? 2 : 1);
        if (rc < 0 && rc != UV_EAGAIN) { conn_close(c); return -1; }
        if (rc > 0) sent = (size_t)rc;
        if (sent == n + len) {
            if (c->close_after_write) conn_finish(c);
            return 0;
        }
    }
    size_t rest = n + len - sent;
    write_req *w = malloc(sizeof *w + rest);
    if (!w) { conn_close(c); return -1; }
    size_t from_head = sent < n ? n - sent : 0;
    memcpy(w->data, head + (n - from_head), from_head);
    memcpy(w->data + from_head, body + (len - (rest - from_head)), rest - from_head);
    w->c = c;
    w->len = rest;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
    if (uv_write(&w->req, &c->h.stream, &buf, 1, write_done) != 0) {
        free(w);
        conn_close(c);
        return -1;
    }
    c->pending_writes++;
    if (c->reading && uv_stream_get_write_queue_size(&c->h.stream) > HTTP_WRITE_HIGH) {
        uv_read_stop(&c->h.stream);   /* a client that pipelines but never reads */
        c->reading = 0;
    }
    return 0;
}

/* A response head assembled with plain copies: snprintf's format parsing was a visible share of
 * a small response's cost. */
typedef struct head_buf { char *p; size_t len, cap; int overflow; } head_buf;

static void head_put(head_buf *b, const char *s, size_t n)
{
    if (b->overflow || b->len + n > b->cap) { b->overflow = 1; return; }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void head_puts(head_buf *b, const char *s) { head_put(b, s, strlen(s)); }

static void head_putu(head_buf *b, unsigned long long v)
{
    char digits[24];
    size_t i = sizeof digits;
    do { digits[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    head_put(b, digits + i, sizeof digits - i);
}

/* Sends one response: the head built on the stack, the body sent from where the handler left
 * it (see conn_write). */
static void conn_respond(conn *c, const http_response *res, int head_only)
{
    const char *body = res->body ? res->body : res->static_body ? res->static_body : "";
    size_t body_len = (res->body || res->static_body) ? res->body_len : 0;
    int bodiless = res->status == 204 || res->status == 304;
    char head[1536];
    head_buf b = { .p = head, .cap = sizeof head };
    head_puts(&b, "HTTP/1.1 ");
    head_putu(&b, (unsigned)res->status);
    head_puts(&b, " ");
    head_puts(&b, http_status_reason(res->status));
    head_puts(&b, "\r\n");
    if (bodiless) {
        body_len = 0;
    } else {
        head_puts(&b, "Content-Type: ");
        head_puts(&b, res->content_type ? res->content_type : "application/json");
        head_puts(&b, "\r\nContent-Length: ");
        head_putu(&b, body_len);
        head_puts(&b, "\r\n");
    }
    if (c->close_after_write) head_puts(&b, "Connection: close\r\n");
    if (res->static_headers) head_puts(&b, res->static_headers);
    head_puts(&b, res->extra_headers);
    head_puts(&b, "\r\n");
    if (res->status >= 100 && res->status < 600) c->srv->responses[res->status]++;
    if (b.overflow) { conn_close(c); return; }
    conn_write(c, head, b.len, body, head_only ? 0 : body_len);
}

/* Answers with an error and closes: the connection's framing can no longer be trusted. */
static void conn_fail(conn *c, int status, const char *message)
{
    char body[512];
    const char *code = status == 408 ? "timeout" : status == 413 ? "payload_too_large"
                     : status == 431 ? "headers_too_large" : status == 503 ? "unavailable"
                     : status == 500 ? "internal" : "bad_request";
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
                     code, message);
    http_response res = { .status = status, .static_body = body,
                          .body_len = n > 0 && (size_t)n < sizeof body ? (size_t)n : 0 };
    c->close_after_write = 1;
    c->phase = CONN_DRAIN;
    /* the deadline for the client to take the response; the linger follows it */
    conn_timer_set(c, c->srv->lim.header_timeout_ms);
    conn_respond(c, &res, 0);
}

static void conn_timer_cb(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->phase == CONN_HEADERS || c->phase == CONN_BODY)
        conn_fail(c, 408, c->phase == CONN_HEADERS ? "headers not received in time"
                                                   : "body not received in time");
    else
        conn_close(c);   /* idle keep-alive, or the linger after a final response */
}

/* ---- parser callbacks --------------------------------------------------------------------- */

static int head_append(conn *c, const char *at, size_t len)
{
    size_t limit = c->srv->lim.max_header_bytes;
    if (c->head_len + len + 1 > limit) { c->fail_status = 431; return -1; }
    if (c->head_len + len + 1 > c->head_cap) {
        size_t cap = c->head_cap ? c->head_cap * 2 : 1024;
        while (cap < c->head_len + len + 1) cap *= 2;
        if (cap > limit) cap = limit;
        char *p = realloc(c->head, cap);
        if (!p) { c->fail_status = 500; return -1; }
        c->head = p;
        c->head_cap = cap;
    }
    memcpy(c->head + c->head_len, at, len);
    c->head_len += len;
    return 0;
}

static int end_value(conn *c)
{
    if (!c->value_open) return 0;
    c->value_open = 0;
    c->nheaders++;
    return head_append(c, "", 1);
}

static int on_message_begin(llhttp_t *p)
{
    conn *c = p->data;
    c->phase = CONN_HEADERS;
    c->head_len = c->body_len = 0;
    c->nheaders = c->field_open = c->value_open = 0;
    conn_timer_set(c, c->srv->lim.header_timeout_ms);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) { return head_append(p->data, at, len); }
static int on_url_complete(llhttp_t *p) { return head_append(p->data, "", 1); }

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (!c->field_open) {
        if (end_value(c) != 0) return -1;
        if (c->nheaders == HTTP_MAX_HEADERS) { c->fail_status = 431; return -1; }
        c->name_off[c->nheaders] = c->head_len;
        c->field_open = 1;
    }
    return head_append(c, at, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    conn *c = p->data;
    c->field_open = 0;
    if (head_append(c, "", 1) != 0) return -1;
    c->value_off[c->nheaders] = c->head_len;
    c->value_open = 1;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) { return head_append(p->data, at, len); }
static int on_header_value_complete(llhttp_t *p) { return end_value(p->data); }

static int on_headers_complete(llhttp_t *p)
{
    conn *c = p->data;
    if (end_value(c) != 0) return -1;
    if (p->content_length > c->srv->lim.max_body_bytes && (p->flags & F_CONTENT_LENGTH)) {
        c->fail_status = 413;
        return -1;
    }
    c->phase = CONN_BODY;
    conn_timer_set(c, c->srv->lim.body_timeout_ms);
    /* A client that asks before sending its body (curl does past 1 KiB) is told to go on now
     * rather than after its own time-out; a body over the limit was refused above. */
    for (int i = 0; i < c->nheaders; i++) {
        if (strcasecmp(c->head + c->name_off[i], "Expect") == 0 &&
            strcasecmp(c->head + c->value_off[i], "100-continue") == 0 && p->content_length > 0) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (conn_write(c, cont, sizeof cont - 1, "", 0) != 0) return -1;
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn *c = p->data;
    size_t limit = c->srv->lim.max_body_bytes;
    if (c->body_len + len > limit) { c->fail_status = 413; return -1; }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap * 2 : 4096;
        while (cap < c->body_len + len + 1) cap *= 2;
        if (cap > limit + 1) cap = limit + 1;
        char *b = realloc(c->body, cap);
        if (!b) { c->fail_status = 500; return -1; }
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

/* Builds the request view over the connection's buffers and runs the handler. */
static void conn_dispatch(conn *c)
{
    http_request req = { .method = llhttp_method_name(c->parser.method) };
    if (c->head_len == 0 && head_append(c, "", 1) != 0) { conn_fail(c, 431, "request too large"); return; }
    char *url = c->head;
    char *q = strchr(url, '?');
    if (q) *q++ = '\0';
    req.path = url;
    req.query = q ? q : "";
    if (!c->body && on_body(&c->parser, "", 0) != 0) { conn_fail(c, 500, "out of memory"); return; }
    c->body[c->body_len] = '\0';
    req.body = c->body;
    req.body_len = c->body_len;
    req.header_count = c->nheaders;
    for (int i = 0; i < c->nheaders; i++) {
        req.header_names[i] = c->head + c->name_off[i];
        req.header_values[i] = c->head + c->value_off[i];
    }
    http_response res = { .status = 500 };
    c->srv->handler(c->srv->ctx, &req, &res);
    conn_respond(c, &res, c->parser.method == HTTP_HEAD);
    free(res.body);
}

static int on_message_complete(llhttp_t *p)
{
    conn *c = p->data;
    int keep = llhttp_should_keep_alive(p);
    if (!keep) c->close_after_write = 1;
    conn_dispatch(c);
    if (c->closing) return HPE_PAUSED;
    c->phase = c->close_after_write ? CONN_DRAIN : CONN_IDLE;
    if (c->close_after_write) {
        conn_timer_set(c, c->srv->lim.header_timeout_ms);
        return HPE_PAUSED;          /* ignore whatever was pipelined after a closing request */
    }
    conn_timer_set(c, c->srv->lim.idle_timeout_ms);
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* The read buffer is the connection's own rbuf: read_cb consumes it entirely before returning. */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread == 0) return;
    if (nread < 0) {
        /* EOF or error: whatever was half-received cannot be answered. A client that half-closes
         * after pipelining still gets its queued responses before the close. */
        if (c->pending_writes > 0 && nread == UV_EOF) { uv_read_stop(s); c->reading = 0;
                                                        c->close_after_write = 1; return; }
        conn_close(c);
        return;
    }
    if (c->phase == CONN_DRAIN) return;
    llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (e == HPE_OK || c->closing) return;
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        c->close_after_write = 1;
        c->phase = CONN_DRAIN;
        if (c->pending_writes == 0) conn_finish(c);
        return;
    }
    int status = c->fail_status ? c->fail_status : 400;
    const char *why = status == 413 ? "request body too large"
                    : status == 431 ? "request line or headers too large"
                    : status == 500 ? "out of memory" : "malformed HTTP request";
    conn_fail(c, status, why);
}

static void read_start(conn *c)
{
    if (uv_read_start(&c->h.stream, alloc_cb, read_cb) == 0) c->reading = 1;
}

/* ---- listening ---------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *ls, int status)
{
    listener *l = ls->data;
    http_server_t *srv = l->srv;
    if (status < 0 || srv->closing) return;
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = srv;
    int is_tcp = ls->type == UV_TCP;
    int rc = is_tcp ? uv_tcp_init(srv->loop, &c->h.tcp) : uv_pipe_init(srv->loop, &c->h.pipe, 0);
    if (rc != 0) { free(c); return; }
    uv_timer_init(srv->loop, &c->timer);
    c->h.handle.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    srv->open_handles++;
    if (uv_accept(ls, &c->h.stream) != 0) { conn_close(c); return; }
    if (is_tcp) uv_tcp_nodelay(&c->h.tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    c->parser.data = c;
    /* Past twice the limit even the 503 is not worth its memory: drop at once. */
    if (srv->nconns > 2 * srv->lim.max_connections) { conn_close(c); return; }
    read_start(c);
    if (srv->nconns > srv->lim.max_connections) {
        conn_fail(c, 503, "too many connections");
        return;
    }
    conn_timer_set(c, srv->lim.header_timeout_ms);
}

int http_server_init(http_server_t **out, uv_loop_t *loop, const http_limits *lim,
                     http_handler_fn handler, void *ctx, adapt_error *err)
{
    http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return adapt_fail(err, ADAPT_ENOMEM, "http server: out of memory");
    srv->loop = loop;
    if (lim) srv->lim = *lim; else http_limits_default(&srv->lim);
    srv->handler = handler;
    srv->ctx = ctx;
    llhttp_settings_init(&srv->settings);
    srv->settings.on_message_begin         = on_message_begin;
    srv->settings.on_url                   = on_url;
    srv->settings.on_url_complete          = on_url_complete;
    srv->settings.on_header_field          = on_header_field;
    srv->settings.on_header_field_complete = on_header_field_complete;
    srv->settings.on_header_value          = on_header_value;
    srv->settings.on_header_value_complete = on_header_value_complete;
    srv->settings.on_headers_complete      = on_headers_complete;
    srv->settings.on_body                  = on_body;
    srv->settings.on_message_complete      = on_message_complete;
    *out = srv;
    return ADAPT_OK;
}

static void listener_closed(uv_handle_t *h)
{
    listener *l = h->data;
    http_server_t *srv = l->srv;
    free(l);
    srv->open_handles--;
    server_maybe_free(srv);
}

static listener *listener_new(http_server_t *srv, adapt_error *err)
{
    if (srv->nlisteners == HTTP_MAX_LISTENERS) {
        adapt_fail(err, ADAPT_ERANGE, "at most %d listeners", HTTP_MAX_LISTENERS);
        return NULL;
    }
    listener *l = calloc(1, sizeof *l);
    if (!l) { adapt_fail(err, ADAPT_ENOMEM, "http server: out of memory"); return NULL; }
    l->srv = srv;
    l->h.handle.data = l;
    return l;
}

/* Registers an initialized listener handle; on failure closes it. */
static int listener_start(http_server_t *srv, listener *l, int rc, const char *where,
                          adapt_error *err)
{
    srv->open_handles++;
    if (rc == 0) rc = uv_listen(&l->h.stream, 511, on_connection);
    if (rc != 0) {
        uv_close(&l->h.handle, listener_closed);
        return adapt_fail(err, ADAPT_EIO, "listening on %s: %s", where, uv_strerror(rc));
    }
    srv->listeners[srv->nlisteners++] = l;
    return ADAPT_OK;
}

int http_server_listen_tcp(http_server_t *srv, const char *host, int port, int *bound_port,
                           adapt_error *err)
{
    struct sockaddr_storage addr;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc != 0) return adapt_fail(err, ADAPT_EINVAL, "--listen: bad address %s", host);
    listener *l = listener_new(srv, err);
    if (!l) return err ? err->code : ADAPT_ENOMEM;
    uv_tcp_init(srv->loop, &l->h.tcp);
    rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&addr, 0);
    char where[300];
    snprintf(where, sizeof where, "%s:%d", host, port);
    if ((rc = listener_start(srv, l, rc, where, err)) != ADAPT_OK) return rc;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&bound, &len);
    int got = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    if (srv->port == 0) srv->port = got;
    if (bound_port) *bound_port = got;
    return ADAPT_OK;
}

/* A socket file nobody accepts on is left over from a daemon that died; one that accepts
 * belongs to a live daemon and must not be taken over. */
static int unix_path_take(const char *path, adapt_error *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) return ADAPT_OK;
    if (!S_ISSOCK(st.st_mode))
        return adapt_fail(err, ADAPT_EINVAL, "%s exists and is not a socket", path);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return adapt_fail(err, ADAPT_EINVAL, "socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int alive = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0) close(fd);
    if (alive) return adapt_fail(err, ADAPT_EIO, "%s: another process is listening there", path);
    unlink(path);
    return ADAPT_OK;
}

int http_server_listen_unix(http_server_t *srv, const char *path, adapt_error *err)
{
    int rc = unix_path_take(path, err);
    if (rc != ADAPT_OK) return rc;
    listener *l = listener_new(srv, err);
    if (!l) return err ? err->code : ADAPT_ENOMEM;
    uv_pipe_init(srv->loop, &l->h.pipe, 0);
    rc = uv_pipe_bind(&l->h.pipe, path);
    if (rc == 0 && chmod(path, 0600) != 0) rc = uv_translate_sys_error(errno);
    return listener_start(srv, l, rc, path, err);
}

int http_server_port(const http_server_t *srv) { return srv->port; }
void http_server_set_context(http_server_t *srv, void *ctx) { srv->ctx = ctx; }
int http_server_connections(const http_server_t *srv) { return srv->nconns; }

uint64_t http_server_responses(const http_server_t *srv, int status)
{
    return status >= 100 && status < 600 ? srv->responses[status] : 0;
}

void http_server_close(http_server_t *srv)
{
    if (!srv) return;
    srv->closing = 1;
    for (int i = 0; i < srv->nlisteners; i++) uv_close(&srv->listeners[i]->h.handle, listener_closed);
    srv->nlisteners = 0;
    for (conn *c = srv->conns; c; c = c->next) conn_close(c);
    server_maybe_free(srv);
}

/* ---- request helpers ---------------------------------------------------------------------- */

const char *http_request_header(const http_request *req, const char *name)
{
    for (int i = 0; i < req->header_count; i++)
        if (strcasecmp(req->header_names[i], name) == 0) return req->header_values[i];
    return NULL;
}

static int hex_val(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int query_decode(const char *v, size_t len, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        if (ch == '+') ch = ' ';
        else if (ch == '%') {
            if (i + 2 >= len) return -1;
            int hi = hex_val(v[i + 1]), lo = hex_val(v[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= size) return -1;
        buf[o++] = ch;
    }
    buf[o] = '\0';
    return 1;
}

int http_query_get(const char *query, const char *name, char *buf, size_t size)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= nlen && strncmp(p, name, nlen) == 0 && (len == nlen || p[nlen] == '=')) {
            const char *v = len == nlen ? p + len : p + nlen + 1;
            size_t vlen = len == nlen ? 0 : len - nlen - 1;
            return query_decode(v, vlen, buf, size);
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}
