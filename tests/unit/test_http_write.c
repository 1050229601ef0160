/* test_http_write: how the HTTP server puts responses on the socket. A response leaves in one
 * writev straight from the handler's buffers when the socket takes it, and only the part the
 * kernel refuses is copied and queued; this checks that bytes are never lost, reordered or
 * duplicated across that boundary: large pipelined responses to a client that reads nothing
 * for a while (partial writes, queued tails, reading paused), Connection: close after queued
 * writes, HEAD, and 204 / 304 without a body or Content-Length followed by more requests on the
 * same connection; plus static_headers. The server runs its own libuv loop on a thread. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "http_server.h"

enum { BIG = 256 * 1024, PIPELINED = 48 };

typedef struct fixture {
    uv_loop_t      loop;
    uv_async_t     stop;
    http_server_t *srv;
    sem_t          ready;
    int            port;
    char          *big[PIPELINED];   /* body k: byte i is (31 k + i) mod 251 */
} fixture;

static unsigned char pattern(int k, size_t i) { return (unsigned char)((31u * (unsigned)k + i) % 251u); }

/* /big/K → body K (static); /empty → 204; /same → 304 with an ETag; else a short text. */
static void handler(void *ctx, const http_request *req, http_response *res)
{
    fixture *fx = ctx;
    int k;
    if (sscanf(req->path, "/big/%d", &k) == 1 && k >= 0 && k < PIPELINED) {
        res->status = 200;
        res->content_type = "application/octet-stream";
        res->static_body = fx->big[k];
        res->body_len = BIG;
    } else if (strcmp(req->path, "/empty") == 0) {
        res->status = 204;
    } else if (strcmp(req->path, "/same") == 0) {
        res->status = 304;
        res->static_headers = "ETag: \"v1\"\r\nCache-Control: no-cache\r\n";
    } else {
        res->status = 200;
        res->content_type = "text/plain";
        res->body = strdup(req->path);
        res->body_len = strlen(req->path);
        res->static_headers = "X-Static: yes\r\n";
        snprintf(res->extra_headers, sizeof res->extra_headers, "X-Extra: 1\r\n");
    }
}

static void on_stop(uv_async_t *a)
{
    fixture *fx = a->data;
    http_server_close(fx->srv);
    uv_close((uv_handle_t *)a, NULL);
}

static void *server_thread(void *arg)
{
    fixture *fx = arg;
    adapt_error err = {0};
    uv_loop_init(&fx->loop);
    uv_async_init(&fx->loop, &fx->stop, on_stop);
    fx->stop.data = fx;
    CHECK(http_server_init(&fx->srv, &fx->loop, NULL, handler, fx, &err) == ADAPT_OK);
    CHECK_MSG(http_server_listen_tcp(fx->srv, "127.0.0.1", 0, &fx->port, &err) == ADAPT_OK, "%s", err.message);
    sem_post(&fx->ready);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&fx->loop) == 0);
    return NULL;
}

/* ---- a client that reads responses as a stream -------------------------------------------- */

typedef struct client { int fd; char buf[8192]; size_t len; } client;

static client *client_open(int port)
{
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    /* a small receive buffer so the server's sends stop short and its queue is used */
    int rcv = 16384;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return c;
}

static void client_close(client *c) { close(c->fd); free(c); }

static int client_send(client *c, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

static int client_fill(client *c)
{
    if (c->len == sizeof c->buf) return -1;
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r <= 0) return -1;
    c->len += (size_t)r;
    return 0;
}

static void client_consume(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Reads one response head into head (NUL-terminated); returns its status, 0 on failure. */
static int client_head(client *c, char *head, size_t cap)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (client_fill(c) != 0) return 0;
    size_t hlen = (size_t)(end - c->buf) + 4;
    if (hlen >= cap) return 0;
    memcpy(head, c->buf, hlen);
    head[hlen] = '\0';
    client_consume(c, hlen);
    return atoi(head + 9);
}

static long content_length(const char *head)
{
    const char *cl = strstr(head, "Content-Length: ");
    return cl ? strtol(cl + 16, NULL, 10) : -1;
}

/* Reads n body bytes and counts those that differ from body k. */
static size_t client_body_check(client *c, size_t n, int k)
{
    size_t bad = 0, got = 0;
    while (got < n) {
        if (c->len == 0 && client_fill(c) != 0) return bad + (n - got);
        size_t take = c->len < n - got ? c->len : n - got;
        for (size_t i = 0; i < take; i++)
            bad += (unsigned char)c->buf[i] != pattern(k, got + i);
        client_consume(c, take);
        got += take;
    }
    return bad;
}

static int client_sees_close(client *c)
{
    for (int i = 0; i < 100; i++) {
        if (c->len) { c->len = 0; continue; }
        ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) return 1;
        if (r < 0) return 0;
    }
    return 0;
}

/* ---- cases -------------------------------------------------------------------------------- */

/* 48 responses of 256 KiB (12 MiB, past the 4 MiB queue mark that pauses reading) asked for in
 * one write by a client that then waits before reading: each arrives whole and in order, and
 * the last one's Connection: close closes the connection once the queue has drained. */
static void test_pipelined_large(int port)
{
    client *c = client_open(port);
    static char reqs[PIPELINED * 64];
    size_t off = 0;
    for (int k = 0; k < PIPELINED; k++)
        off += (size_t)snprintf(reqs + off, sizeof reqs - off, "GET /big/%d HTTP/1.1\r\nHost: t\r\n%s\r\n", k,
                                k == PIPELINED - 1 ? "Connection: close\r\n" : "");
    CHECK(client_send(c, reqs) == 0);
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    char head[1024];
    for (int k = 0; k < PIPELINED; k++) {
        int status = client_head(c, head, sizeof head);
        CHECK_MSG(status == 200, "response %d: status %d", k, status);
        if (status != 200) break;
        CHECK_MSG(content_length(head) == BIG, "response %d: %s", k, head);
        size_t bad = client_body_check(c, BIG, k);
        CHECK_MSG(bad == 0, "response %d: %zu bytes differ from body %d", k, bad, k);
        if (k == PIPELINED - 1) CHECK_STR_CONTAINS(head, "Connection: close");
    }
    CHECK(client_sees_close(c));
    client_close(c);
}

/* HEAD announces the length and sends nothing; 204 and 304 carry neither body nor framing
 * headers; the requests after each are read correctly on the same connection. */
static void test_bodiless(int port)
{
    client *c = client_open(port);
    CHECK(client_send(c, "HEAD /big/3 HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /empty HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /same HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\n\r\n"
                         "GET /after HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    char head[1024];
    CHECK(client_head(c, head, sizeof head) == 200);
    CHECK(content_length(head) == BIG);
    CHECK(client_head(c, head, sizeof head) == 204);
    CHECK_MSG(!strstr(head, "Content-Length") && !strstr(head, "Content-Type"), "204 head: %s", head);
    CHECK(client_head(c, head, sizeof head) == 304);
    CHECK_MSG(!strstr(head, "Content-Length") && !strstr(head, "Content-Type"), "304 head: %s", head);
    CHECK_STR_CONTAINS(head, "ETag: \"v1\"\r\n");
    CHECK(client_head(c, head, sizeof head) == 200);
    CHECK_STR_CONTAINS(head, "X-Static: yes\r\nX-Extra: 1\r\n\r\n");
    CHECK(content_length(head) == 6);
    while (c->len < 6 && client_fill(c) == 0) {}
    CHECK(c->len == 6 && memcmp(c->buf, "/after", 6) == 0);
    client_close(c);
}

int main(void)
{
    static fixture fx;
    for (int k = 0; k < PIPELINED; k++) {
        fx.big[k] = malloc(BIG);
        for (size_t i = 0; i < BIG; i++) fx.big[k][i] = (char)pattern(k, i);
    }
    sem_init(&fx.ready, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, server_thread, &fx);
    sem_wait(&fx.ready);
    test_pipelined_large(fx.port);
    test_bodiless(fx.port);
    uv_async_send(&fx.stop);
    pthread_join(th, NULL);
    for (int k = 0; k < PIPELINED; k++) free(fx.big[k]);
    printf("%d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
