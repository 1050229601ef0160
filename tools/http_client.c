/* http_client: blocking HTTP/1.1 over TCP or a Unix socket, responses parsed by llhttp; see
 * http_client.h.
 *
 * Design: the socket is non-blocking and every connect, send and receive waits in poll() for
 * what is left of the request's deadline, so a daemon that hangs costs the caller the time-out
 * and no more. llhttp's callbacks append into the response as bytes arrive; a header name or
 * value may come in several pieces, so both are accumulated until llhttp says it is complete. */
#include "http_client.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

struct http_client {
    char     url[1024];
    int      is_unix;
    char     host[256];     /* TCP host without brackets, or the socket path */
    char     port[16];
    char     host_header[300];
    char     prefix[512];   /* path prefix of the URL, without a trailing '/' */
    char    *token;
    unsigned timeout_ms;
    int      fd;            /* -1 when not connected */
};

/* ---- URL ----------------------------------------------------------------------------------- */

static int url_parse(http_client *c, const char *url, adapt_error *err)
{
    if (snprintf(c->url, sizeof c->url, "%s", url) >= (int)sizeof c->url)
        return adapt_fail(err, ADAPT_EINVAL, "server URL longer than %zu bytes", sizeof c->url - 1);
    if (!strncmp(url, "unix:", 5)) {
        const char *path = url + 5;
        struct sockaddr_un sun;
        if (!*path) return adapt_fail(err, ADAPT_EINVAL, "%s: expected unix:/PATH/TO/SOCKET", url);
        if (strlen(path) >= sizeof sun.sun_path)
            return adapt_fail(err, ADAPT_EINVAL, "%s: a Unix socket path is at most %zu bytes", url,
                              sizeof sun.sun_path - 1);
        c->is_unix = 1;
        snprintf(c->host, sizeof c->host, "%s", path);
        snprintf(c->host_header, sizeof c->host_header, "localhost");
        return ADAPT_OK;
    }
    if (!strncmp(url, "https://", 8))
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: https is not supported; reach a remote adaptd "
                          "through an SSH tunnel (ssh -L 8642:127.0.0.1:8642 HOST)", url);
    if (strncmp(url, "http://", 7))
        return adapt_fail(err, ADAPT_EINVAL, "%s: expected http://HOST[:PORT] or unix:/PATH", url);
    const char *h = url + 7, *path = strchr(h, '/');
    size_t hostport_len = path ? (size_t)(path - h) : strlen(h);
    char hostport[sizeof c->host];
    if (hostport_len == 0 || hostport_len >= sizeof hostport)
        return adapt_fail(err, ADAPT_EINVAL, "%s: no host or a host too long", url);
    memcpy(hostport, h, hostport_len);
    hostport[hostport_len] = '\0';
    const char *port = NULL;
    if (hostport[0] == '[') {
        char *close = strchr(hostport, ']');
        if (!close || (close[1] && close[1] != ':'))
            return adapt_fail(err, ADAPT_EINVAL, "%s: expected [IPv6]:PORT", url);
        *close = '\0';
        snprintf(c->host, sizeof c->host, "%s", hostport + 1);
        if (close[1] == ':') port = close + 2;
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon) { *colon = '\0'; port = colon + 1; }
        snprintf(c->host, sizeof c->host, "%s", hostport);
    }
    if (!c->host[0]) return adapt_fail(err, ADAPT_EINVAL, "%s: no host", url);
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (!*port || *end || p < 1 || p > 65535)
            return adapt_fail(err, ADAPT_EINVAL, "%s: port '%s' is not in 1..65535", url, port);
    }
    snprintf(c->port, sizeof c->port, "%s", port ? port : "80");
    snprintf(c->host_header, sizeof c->host_header, "%.*s", (int)hostport_len, h);
    if (path) {
        size_t n = strlen(path);
        while (n > 0 && path[n - 1] == '/') n--;
        if (n >= sizeof c->prefix) return adapt_fail(err, ADAPT_EINVAL, "%s: path too long", url);
        memcpy(c->prefix, path, n);
        c->prefix[n] = '\0';
    }
    return ADAPT_OK;
}

int http_client_open(http_client **out, const char *url, unsigned timeout_ms, adapt_error *err)
{
    http_client *c = calloc(1, sizeof *c);
    if (!c) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    c->fd = -1;
    c->timeout_ms = timeout_ms ? timeout_ms : 30000;
    int rc = url_parse(c, url, err);
    if (rc != ADAPT_OK) { free(c); return rc; }
    *out = c;
    return ADAPT_OK;
}

static void conn_drop(http_client *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

void http_client_close(http_client *c)
{
    if (!c) return;
    conn_drop(c);
    free(c->token);
    free(c);
}

int http_client_set_token(http_client *c, const char *token, adapt_error *err)
{
    free(c->token);
    c->token = NULL;
    if (!token || !*token) return ADAPT_OK;
    if (strpbrk(token, "\r\n")) return adapt_fail(err, ADAPT_EINVAL, "the token holds a line break");
    if (!(c->token = strdup(token))) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    return ADAPT_OK;
}

const char *http_client_url(const http_client *c) { return c->url; }

/* ---- the socket, bounded by a deadline ------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n > 0) return 1;
        if (n == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static int connect_one(int family, const struct sockaddr *addr, socklen_t len, int64_t deadline,
                       int *fd_out, int *errno_out)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { *errno_out = errno; return -1; }
    if (connect(fd, addr, len) == 0) { *fd_out = fd; return 0; }
    if (errno != EINPROGRESS && errno != EAGAIN) { *errno_out = errno; close(fd); return -1; }
    int w = wait_fd(fd, POLLOUT, deadline);
    int so = 0;
    socklen_t sl = sizeof so;
    if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0) { *fd_out = fd; return 0; }
    *errno_out = w == 0 ? ETIMEDOUT : so ? so : errno;
    close(fd);
    return -1;
}

static int conn_open(http_client *c, int64_t deadline, adapt_error *err)
{
    int e = 0;
    if (c->is_unix) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        memcpy(sun.sun_path, c->host, strlen(c->host) + 1);  /* url_parse checked the length */
        if (connect_one(AF_UNIX, (struct sockaddr *)&sun, sizeof sun, deadline, &c->fd, &e) == 0) return ADAPT_OK;
        return adapt_fail(err, ADAPT_EIO, "cannot connect to %s: %s", c->url, strerror(e));
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0) return adapt_fail(err, ADAPT_EIO, "cannot resolve %s: %s", c->host, gai_strerror(g));
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (connect_one(a->ai_family, a->ai_addr, a->ai_addrlen, deadline, &c->fd, &e) == 0) break;
    freeaddrinfo(res);
    if (c->fd >= 0) return ADAPT_OK;
    return adapt_fail(err, ADAPT_EIO, "cannot connect to %s: %s", c->url, strerror(e ? e : ECONNREFUSED));
}

static int send_all(http_client *c, const char *p, size_t n, int64_t deadline, adapt_error *err)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) { p += w; n -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(c->fd, POLLOUT, deadline);
            if (r == 1) continue;
            return adapt_fail(err, ADAPT_EIO, "sending to %s: %s", c->url, r == 0 ? "timed out" : strerror(errno));
        }
        return adapt_fail(err, ADAPT_EIO, "sending to %s: %s", c->url, strerror(errno));
    }
    return ADAPT_OK;
}

/* ---- the response, through llhttp ---------------------------------------------------------- */

typedef struct parse_state {
    http_client_response *res;
    int    no_body;              /* the request was HEAD */
    int    done;
    int    too_big;
    char  *field;                /* header name being accumulated */
    size_t field_len;
    char  *value;
    size_t value_len;
} parse_state;

static int append(char **buf, size_t *len, const char *at, size_t n, size_t max)
{
    if (*len + n > max) return -1;
    char *b = realloc(*buf, *len + n + 1);
    if (!b) return -1;
    memcpy(b + *len, at, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    parse_state *s = p->data;
    return append(&s->field, &s->field_len, at, n, 8192);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    parse_state *s = p->data;
    return append(&s->value, &s->value_len, at, n, 65536);
}

/* A complete header: stored as name\0value\0 in res->headers. */
static int on_header_value_complete(llhttp_t *p)
{
    parse_state *s = p->data;
    http_client_response *r = s->res;
    int rc = 0;
    if (r->n_headers >= HTTP_CLIENT_MAX_HEADERS) rc = -1;
    else if (append(&r->headers, &r->headers_len, s->field ? s->field : "", s->field_len + 1, 1 << 20) ||
             append(&r->headers, &r->headers_len, s->value ? s->value : "", s->value_len + 1, 1 << 20))
        rc = -1;
    else r->n_headers++;
    free(s->field);
    free(s->value);
    s->field = s->value = NULL;
    s->field_len = s->value_len = 0;
    return rc;
}

static int on_headers_complete(llhttp_t *p)
{
    parse_state *s = p->data;
    s->res->status = llhttp_get_status_code(p);
    return s->no_body ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    parse_state *s = p->data;
    if (append(&s->res->body, &s->res->body_len, at, n, HTTP_CLIENT_MAX_BODY)) { s->too_big = 1; return -1; }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    parse_state *s = p->data;
    s->done = 1;
    return HPE_PAUSED;   /* stop here: anything after this answer is not ours */
}

/* Reads until llhttp has one whole answer. *got_any tells a reused connection that the server
 * closed before sending anything (retry) from a broken answer (fail). */
static int read_response(http_client *c, int no_body, int64_t deadline, http_client_response *res,
                         int *keep_alive, int *got_any, adapt_error *err)
{
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    parse_state st = { .res = res, .no_body = no_body };
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    parser.data = &st;
    char buf[65536];
    int rc = ADAPT_OK;
    *got_any = 0;
    while (!st.done && rc == ADAPT_OK) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(c->fd, POLLIN, deadline);
            if (w != 1)
                rc = adapt_fail(err, ADAPT_EIO, "waiting for %s: %s", c->url,
                                w == 0 ? "timed out (the daemon did not answer)" : strerror(errno));
            continue;
        }
        if (n < 0) { rc = adapt_fail(err, ADAPT_EIO, "reading from %s: %s", c->url, strerror(errno)); break; }
        llhttp_errno_t e;
        if (n == 0) {
            if (!*got_any) { rc = adapt_fail(err, ADAPT_EIO, "%s closed the connection without answering", c->url); break; }
            e = llhttp_finish(&parser);   /* a body that runs to the close ends here */
            if (!st.done && e == HPE_OK) e = HPE_INVALID_EOF_STATE;
        } else {
            *got_any = 1;
            e = llhttp_execute(&parser, buf, (size_t)n);
        }
        if (st.done) break;
        if (e != HPE_OK) {
            if (st.too_big)
                rc = adapt_fail(err, ADAPT_ECORRUPT, "%s: response body larger than %d bytes", c->url, HTTP_CLIENT_MAX_BODY);
            else if (e == HPE_INVALID_EOF_STATE)
                rc = adapt_fail(err, ADAPT_EIO, "%s closed the connection in the middle of an answer", c->url);
            else
                rc = adapt_fail(err, ADAPT_ECORRUPT, "%s: not an HTTP/1.1 answer (%s: %s)", c->url,
                                llhttp_errno_name(e), llhttp_get_error_reason(&parser));
        }
    }
    *keep_alive = rc == ADAPT_OK && llhttp_should_keep_alive(&parser);
    free(st.field);
    free(st.value);
    if (rc == ADAPT_OK && !res->body && !(res->body = calloc(1, 1))) rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    return rc;
}

/* ---- requests ------------------------------------------------------------------------------ */

static int build_head(const http_client *c, const char *method, const char *target,
                      const char *content_type, size_t body_len, int has_body, char **out, adapt_error *err)
{
    int mutating = strcmp(method, "GET") && strcmp(method, "HEAD");
    char ct[300] = "", len[64] = "";
    if (content_type) snprintf(ct, sizeof ct, "Content-Type: %s\r\n", content_type);
    if (has_body || mutating) snprintf(len, sizeof len, "Content-Length: %zu\r\n", body_len);
    int n = asprintf(out, "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: adaptctl/%s\r\n"
                     "Accept: application/json, text/plain\r\n%s%s%s%s%s",
                     method, c->prefix, target, c->host_header, ADAPT_VERSION, ct, len,
                     mutating && c->token ? "Authorization: Bearer " : "",
                     mutating && c->token ? c->token : "", mutating && c->token ? "\r\n" : "");
    if (n < 0) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    char *full = realloc(*out, (size_t)n + 3);
    if (!full) { free(*out); return adapt_fail(err, ADAPT_ENOMEM, "out of memory"); }
    memcpy(full + n, "\r\n", 3);
    *out = full;
    return ADAPT_OK;
}

int http_client_request(http_client *c, const char *method, const char *target,
                        const char *content_type, const char *body, size_t body_len,
                        http_client_response *res, adapt_error *err)
{
    memset(res, 0, sizeof *res);
    if (strpbrk(method, " \r\n") || strpbrk(target, " \r\n") || target[0] != '/' ||
        (content_type && strpbrk(content_type, "\r\n")))
        return adapt_fail(err, ADAPT_EINVAL, "bad request line: %s %s", method, target);
    char *head = NULL;
    int rc = build_head(c, method, target, content_type, body_len, body != NULL, &head, err);
    if (rc != ADAPT_OK) return rc;
    int64_t deadline = now_ms() + c->timeout_ms;
    for (int attempt = 0; attempt < 2; attempt++) {
        int reused = c->fd >= 0, keep_alive = 0, got_any = 0;
        if (!reused && (rc = conn_open(c, deadline, err)) != ADAPT_OK) break;
        rc = send_all(c, head, strlen(head), deadline, err);
        if (rc == ADAPT_OK && body_len) rc = send_all(c, body, body_len, deadline, err);
        if (rc == ADAPT_OK) rc = read_response(c, !strcmp(method, "HEAD"), deadline, res, &keep_alive, &got_any, err);
        if (rc == ADAPT_OK) {
            if (!keep_alive) conn_drop(c);
            break;
        }
        conn_drop(c);
        http_client_response_clear(res);
        /* a kept-alive connection the server closed while idle: one fresh try */
        if (!(reused && !got_any && rc == ADAPT_EIO)) break;
        adapt_error_clear(err);
    }
    free(head);
    return rc;
}

const char *http_client_header(const http_client_response *res, const char *name)
{
    const char *p = res->headers;
    for (int i = 0; p && i < res->n_headers; i++) {
        const char *value = p + strlen(p) + 1;
        if (!strcasecmp(p, name)) return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

void http_client_response_clear(http_client_response *res)
{
    free(res->body);
    free(res->headers);
    memset(res, 0, sizeof *res);
}
