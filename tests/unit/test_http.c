/* test_http: the HTTP server on 127.0.0.1 (ephemeral port) and a Unix socket, driven by a
 * plain-socket client: good requests, keep-alive, pipelining, chunked bodies, malformed request
 * lines and headers (400), huge bodies (413), huge headers (431), slow clients (408), idle
 * keep-alive close, the connection limit (503) — and after each, a fresh request still works.
 * The server runs its own libuv loop on a thread; every client read has a 5 s time-out. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "http_server.h"

typedef struct fixture {
    uv_loop_t      loop;
    uv_async_t     stop;
    http_server_t *srv;
    sem_t          ready;
    int            port;
    char           sock[100];
    uint64_t       count_400, count_413, count_200;
} fixture;

/* Echo: "METHOD PATH?QUERY len=N x-test=V" so the client can check what the server parsed. */
static void echo(void *ctx, const http_request *req, http_response *res)
{
    const char *x = http_request_header(req, "X-Test");
    char *b = malloc(256);
    int n = snprintf(b, 256, "%s %s?%s len=%zu x-test=%s", req->method, req->path, req->query,
                     req->body_len, x ? x : "-");
    res->status = strcmp(req->path, "/missing") == 0 ? 404 : 200;
    res->content_type = "text/plain";
    res->body = b;
    res->body_len = (size_t)n;
}

static void on_stop(uv_async_t *a)
{
    fixture *fx = a->data;
    fx->count_200 = http_server_responses(fx->srv, 200);
    fx->count_400 = http_server_responses(fx->srv, 400);
    fx->count_413 = http_server_responses(fx->srv, 413);
    http_server_close(fx->srv);
    uv_close((uv_handle_t *)a, NULL);
}

static void *server_thread(void *arg)
{
    fixture *fx = arg;
    http_limits lim = { .max_header_bytes = 1024, .max_body_bytes = 4096, .header_timeout_ms = 300,
                        .body_timeout_ms = 300, .idle_timeout_ms = 800, .max_connections = 8 };
    adapt_error err = {0};
    uv_loop_init(&fx->loop);
    uv_async_init(&fx->loop, &fx->stop, on_stop);
    fx->stop.data = fx;
    CHECK(http_server_init(&fx->srv, &fx->loop, &lim, echo, fx, &err) == ADAPT_OK);
    CHECK_MSG(http_server_listen_tcp(fx->srv, "127.0.0.1", 0, &fx->port, &err) == ADAPT_OK, "%s", err.message);
    CHECK_MSG(http_server_listen_unix(fx->srv, fx->sock, &err) == ADAPT_OK, "%s", err.message);
    sem_post(&fx->ready);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&fx->loop) == 0);
    return NULL;
}

/* ---- client ------------------------------------------------------------------------------- */

typedef struct client {
    int    fd;
    char   buf[1 << 16];
    size_t len;
} client;

static void client_timeouts(int fd)
{
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static client *client_tcp(int port)
{
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    client_timeouts(c->fd);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return c;
}

static client *client_unix(const char *path)
{
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    client_timeouts(c->fd);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    CHECK(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return c;
}

static void client_free(client *c)
{
    close(c->fd);
    free(c);
}

static int client_send(client *c, const char *s, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

static int client_sends(client *c, const char *s) { return client_send(c, s, strlen(s)); }

/* Reads one whole response; returns its status (0 when the connection ended first) and copies
 * its body and headers. Bytes of a following (pipelined) response stay buffered. */
static int client_response(client *c, char *body, size_t cap, char *head, size_t hcap)
{
    for (int reads = 0; reads < 1000; reads++) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end) {
            size_t hlen = (size_t)(end - c->buf) + 4;
            char *cl = memmem(c->buf, hlen, "Content-Length: ", 16);
            size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
            if (c->len >= hlen + blen) {
                int status = atoi(c->buf + 9);
                size_t n = blen < cap - 1 ? blen : cap - 1;
                memcpy(body, c->buf + hlen, n);
                body[n] = '\0';
                if (head) { size_t h = hlen < hcap - 1 ? hlen : hcap - 1; memcpy(head, c->buf, h); head[h] = '\0'; }
                memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
                c->len -= hlen + blen;
                return status;
            }
        }
        if (c->len == sizeof c->buf) return 0;
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r <= 0) return 0;
        c->len += (size_t)r;
    }
    return 0;
}

/* 1 when the server closes the connection (after any bytes still in flight). */
static int client_sees_close(client *c)
{
    char tmp[4096];
    for (int i = 0; i < 100; i++) {
        ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) return 1;
        if (r < 0) return 0;   /* time-out: still open */
    }
    return 0;
}

static int request(client *c, const char *raw, char *body, size_t cap)
{
    if (client_sends(c, raw) != 0) return 0;
    return client_response(c, body, cap, NULL, 0);
}

/* A fresh connection gets a good answer: the server survived whatever came before. */
static void check_alive(int port)
{
    client *c = client_tcp(port);
    char body[512];
    CHECK(request(c, "GET /alive HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 200);
    CHECK_STR_CONTAINS(body, "GET /alive");
    client_free(c);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ---- cases -------------------------------------------------------------------------------- */

static void test_good_and_keepalive(int port)
{
    client *c = client_tcp(port);
    char body[512], head[1024];
    CHECK(client_sends(c, "GET /a?x=1 HTTP/1.1\r\nHost: t\r\nX-Test: hello\r\n\r\n") == 0);
    CHECK(client_response(c, body, sizeof body, head, sizeof head) == 200);
    CHECK(strcmp(body, "GET /a?x=1 len=0 x-test=hello") == 0);
    CHECK_STR_CONTAINS(head, "Content-Length: 29\r\n");
    CHECK_STR_CONTAINS(head, "Content-Type: text/plain\r\n");
    for (int i = 0; i < 5; i++) {     /* same connection, one after another */
        char req[128];
        snprintf(req, sizeof req, "GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        CHECK(request(c, req, body, sizeof body) == 200);
        char want[32];
        snprintf(want, sizeof want, "GET /k%d?", i);
        CHECK_STR_CONTAINS(body, want);
    }
    CHECK(request(c, "GET /missing HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 404);
    CHECK(request(c, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world", body, sizeof body) == 200);
    CHECK_STR_CONTAINS(body, "len=11");
    CHECK(request(c, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", body, sizeof body) == 200);
    CHECK_STR_CONTAINS(body, "len=11");
    CHECK(client_sends(c, "POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n") == 0);
    char cont[32] = {0};
    CHECK(recv(c->fd, cont, 25, MSG_WAITALL) == 25 && strcmp(cont, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    CHECK(request(c, "abcde", body, sizeof body) == 200);
    CHECK_STR_CONTAINS(body, "POST /e? len=5");
    CHECK(client_sends(c, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /after-head HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    /* HEAD: Content-Length of the GET body, no body bytes; the next response follows at once */
    char *end = NULL;
    for (int i = 0; i < 50 && !end; i++) {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r <= 0) break;
        c->len += (size_t)r;
        end = memmem(c->buf, c->len, "GET /after-head", 15);
    }
    CHECK(end != NULL && strncmp(c->buf, "HTTP/1.1 200", 12) == 0);
    client_free(c);
}

static void test_pipelining(int port)
{
    client *c = client_tcp(port);
    char body[512];
    CHECK(client_sends(c, "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                          "POST /p2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                          "GET /p3 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CHECK(client_response(c, body, sizeof body, NULL, 0) == 200 && strncmp(body, "GET /p1?", 8) == 0);
    CHECK(client_response(c, body, sizeof body, NULL, 0) == 200 && strncmp(body, "POST /p2?", 9) == 0);
    CHECK_STR_CONTAINS(body, "len=3");
    CHECK(client_response(c, body, sizeof body, NULL, 0) == 200 && strncmp(body, "GET /p3?", 8) == 0);
    /* 200 pipelined requests in one write, answered in order */
    char *many = malloc(200 * 40);
    size_t n = 0;
    for (int i = 0; i < 200; i++) n += (size_t)sprintf(many + n, "GET /m%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    CHECK(client_send(c, many, n) == 0);
    free(many);
    int ordered = 1;
    for (int i = 0; i < 200; i++) {
        char want[32];
        snprintf(want, sizeof want, "GET /m%d?", i);
        if (client_response(c, body, sizeof body, NULL, 0) != 200 || strncmp(body, want, strlen(want)) != 0)
            ordered = 0;
    }
    CHECK(ordered);
    /* Connection: close in the middle: later pipelined requests are not answered */
    char head[512];
    CHECK(client_sends(c, "GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                          "GET /ignored HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CHECK(client_response(c, body, sizeof body, head, sizeof head) == 200);
    CHECK_STR_CONTAINS(head, "Connection: close");
    CHECK(client_sees_close(c));
    client_free(c);
    c = client_tcp(port);
    CHECK(request(c, "GET /old HTTP/1.0\r\n\r\n", body, sizeof body) == 200);
    CHECK(client_sees_close(c));
    client_free(c);
}

static void expect_refusal(int port, const char *raw, size_t len, int status, const char *code)
{
    client *c = client_tcp(port);
    char body[512];
    client_send(c, raw, len);
    int got = client_response(c, body, sizeof body, NULL, 0);
    CHECK_MSG(got == status, "wanted %d, got %d for %.40s", status, got, raw);
    CHECK_STR_CONTAINS(body, code);
    CHECK(client_sees_close(c));
    client_free(c);
    check_alive(port);
}

static void test_malformed(int port)
{
    static const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /x HTTP/9.9\r\nHost: t\r\n\r\n",
        "GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /x y z HTTP/1.1\r\n\r\n",
        "\x01\x02\x03\x04\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_refusal(port, bad[i], strlen(bad[i]), 400, "bad_request");
}

static void test_limits(int port)
{
    expect_refusal(port, "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n", 55,
                   413, "payload_too_large");
    /* chunked, each chunk small, the sum over the limit */
    char raw[8192];
    size_t n = (size_t)sprintf(raw, "POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        n += (size_t)sprintf(raw + n, "400\r\n");
        memset(raw + n, 'a', 1024);
        n += 1024;
        n += (size_t)sprintf(raw + n, "\r\n");
    }
    expect_refusal(port, raw, n, 413, "payload_too_large");
    /* a huge body actually sent: the client still reads the 413 rather than a reset */
    char *huge = malloc(300000);
    n = (size_t)sprintf(huge, "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 250000\r\n\r\n");
    memset(huge + n, 'b', 250000);
    expect_refusal(port, huge, n + 250000, 413, "payload_too_large");
    free(huge);
    n = (size_t)sprintf(raw, "GET /h HTTP/1.1\r\nHost: t\r\nX-Long: ");
    memset(raw + n, 'h', 2000);
    n += 2000;
    n += (size_t)sprintf(raw + n, "\r\n\r\n");
    expect_refusal(port, raw, n, 431, "headers_too_large");
    n = (size_t)sprintf(raw, "GET /");
    memset(raw + n, 'u', 3000);
    n += 3000;
    n += (size_t)sprintf(raw + n, " HTTP/1.1\r\n\r\n");
    expect_refusal(port, raw, n, 431, "headers_too_large");
}

static void test_timeouts(int port)
{
    char body[512];
    /* headers never finished: 408 after the 300 ms header time-out */
    client *c = client_tcp(port);
    CHECK(client_sends(c, "GET /slow HTTP/1.1\r\nHost: t\r\n") == 0);
    sleep_ms(150);
    CHECK(client_sends(c, "X-A: 1\r\n") == 0);   /* trickling does not reset the deadline */
    CHECK(client_response(c, body, sizeof body, NULL, 0) == 408);
    CHECK_STR_CONTAINS(body, "timeout");
    CHECK(client_sees_close(c));
    client_free(c);
    /* body never finished */
    c = client_tcp(port);
    CHECK(client_sends(c, "POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc") == 0);
    CHECK(client_response(c, body, sizeof body, NULL, 0) == 408);
    CHECK(client_sees_close(c));
    client_free(c);
    /* a connection that never sends a byte is closed too */
    c = client_tcp(port);
    CHECK(client_sees_close(c));
    client_free(c);
    /* idle keep-alive: closed quietly after 800 ms without a request */
    c = client_tcp(port);
    CHECK(request(c, "GET /i HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 200);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    CHECK(client_sees_close(c));
    gettimeofday(&t1, NULL);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_usec - t0.tv_usec) / 1e6;
    CHECK_MSG(waited > 0.5 && waited < 3.0, "idle close after %.2f s", waited);
    client_free(c);
    check_alive(port);
}

static void test_connection_limit(int port)
{
    client *open[8];
    char body[512];
    for (int i = 0; i < 8; i++) {
        open[i] = client_tcp(port);
        CHECK(request(open[i], "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 200);
    }
    client *extra = client_tcp(port);
    CHECK(client_response(extra, body, sizeof body, NULL, 0) == 503);
    CHECK_STR_CONTAINS(body, "unavailable");
    CHECK(client_sees_close(extra));
    client_free(extra);
    CHECK(request(open[3], "GET /still HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 200);
    for (int i = 0; i < 8; i++) client_free(open[i]);
    sleep_ms(100);   /* let the server see the closes */
    check_alive(port);
}

static void test_unix(const char *path)
{
    client *c = client_unix(path);
    char body[512];
    CHECK(request(c, "GET /u HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 200);
    CHECK(request(c, "GET /u2 HTTP/1.1\r\nHost: t\r\n\r\n", body, sizeof body) == 200);
    CHECK_STR_CONTAINS(body, "/u2");
    client_free(c);
}

static void test_query(void)
{
    char v[16];
    CHECK(http_query_get("a=1&state=run%20ning&b", "state", v, sizeof v) == 1 && strcmp(v, "run ning") == 0);
    CHECK(http_query_get("a=1&b", "b", v, sizeof v) == 1 && v[0] == '\0');
    CHECK(http_query_get("ab=1", "a", v, sizeof v) == 0);
    CHECK(http_query_get("a=%zz", "a", v, sizeof v) == -1);
    CHECK(http_query_get("a=%2", "a", v, sizeof v) == -1);
    CHECK(http_query_get("a=0123456789abcdefXYZ", "a", v, sizeof v) == -1);
    CHECK(http_query_get("", "a", v, sizeof v) == 0);
}

int main(void)
{
    fixture fx = {0};
    char dir[] = "/tmp/adapt-test-http-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    snprintf(fx.sock, sizeof fx.sock, "%s/http.sock", dir);
    sem_init(&fx.ready, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, server_thread, &fx);
    sem_wait(&fx.ready);
    test_query();
    if (fx.port > 0) {
        test_good_and_keepalive(fx.port);
        test_pipelining(fx.port);
        test_malformed(fx.port);
        test_limits(fx.port);
        test_timeouts(fx.port);
        test_connection_limit(fx.port);
        test_unix(fx.sock);
        check_alive(fx.port);
    }
    uv_async_send(&fx.stop);
    pthread_join(t, NULL);
    CHECK(fx.count_400 == 8 && fx.count_413 == 3 && fx.count_200 > 200);
    unlink(fx.sock);
    rmdir(dir);
    return check_report("http");
}
