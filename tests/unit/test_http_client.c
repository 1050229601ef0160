/* test_http_client: tools/http_client.c against a scripted server thread on 127.0.0.1 and on a
 * Unix socket: Content-Length, chunked and read-to-close bodies, keep-alive reuse, a kept-alive
 * connection closed by the server (retried once), time-outs, refused connections, answers that
 * are not HTTP or end early, the bearer token only on mutating requests, the URL's prefix, and
 * bad URLs. */
#include "check.h"
#include "http_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { MAX_STEPS = 8 };

/* One scripted exchange: read one request, answer `reply` (NULL: answer nothing and hold the
 * connection hold_ms), then close the connection when close_after is set. */
typedef struct script_step {
    const char *reply;
    int         close_after;
    int         hold_ms;
} script_step;

typedef struct server {
    int         listen_fd;
    script_step steps[MAX_STEPS];
    int         n_steps;
    int         accepts;              /* connections accepted */
    char        requests[MAX_STEPS][2048];
    pthread_t   thread;
} server;

static int read_request(int fd, char *out, size_t size)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, out + n, size - 1 - n);
        if (r <= 0) return -1;
        n += (size_t)r;
        out[n] = '\0';
        char *end = strstr(out, "\r\n\r\n");
        if (!end) continue;
        const char *cl = strcasestr(out, "Content-Length: ");
        size_t body = cl ? (size_t)atol(cl + 16) : 0;
        if (n >= (size_t)(end + 4 - out) + body) return 0;
    }
}

static void *server_run(void *arg)
{
    server *s = arg;
    int fd = -1;
    for (int i = 0; i < s->n_steps; i++) {
        if (fd < 0) {
            fd = accept(s->listen_fd, NULL, NULL);
            if (fd < 0) return NULL;
            s->accepts++;
        }
        if (read_request(fd, s->requests[i], sizeof s->requests[i])) { close(fd); fd = -1; i--; continue; }
        const script_step *st = &s->steps[i];
        if (st->reply) {
            ssize_t w = write(fd, st->reply, strlen(st->reply));
            (void)w;
        } else {
            struct timespec ts = { st->hold_ms / 1000, (st->hold_ms % 1000) * 1000000L };
            nanosleep(&ts, NULL);
        }
        if (st->close_after || !st->reply) { close(fd); fd = -1; }
    }
    if (fd >= 0) close(fd);
    return NULL;
}

/* Starts the scripted server on 127.0.0.1 (unix_path NULL) or a Unix socket; writes its URL. */
static void server_start(server *s, const char *unix_path, char *url, size_t url_size)
{
    if (unix_path) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", unix_path);
        unlink(unix_path);
        s->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(bind(s->listen_fd, (struct sockaddr *)&sun, sizeof sun) == 0);
        snprintf(url, url_size, "unix:%s", unix_path);
    } else {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sin;
        s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(bind(s->listen_fd, (struct sockaddr *)&sin, sizeof sin) == 0);
        CHECK(getsockname(s->listen_fd, (struct sockaddr *)&sin, &len) == 0);
        snprintf(url, url_size, "http://127.0.0.1:%d/api/", ntohs(sin.sin_port));
    }
    CHECK(listen(s->listen_fd, 8) == 0);
    pthread_create(&s->thread, NULL, server_run, s);
}

static void server_stop(server *s)
{
    shutdown(s->listen_fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

#define OK_JSON(body) "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-log-offset: 42\r\n" \
                      "Content-Length: " #body "\r\n\r\n"

static void test_bodies_and_keepalive(void)
{
    server s = { .n_steps = 4, .steps = {
        { "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Log-Offset: 42\r\n\r\n{\"a\":1}", 0, 0 },
        { "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"b\"\r\n3\r\n:2}\r\n0\r\n\r\n", 0, 0 },
        { "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}", 0, 0 },
        { "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 1, 0 } } };
    char url[128];
    server_start(&s, NULL, url, sizeof url);
    http_client *c;
    adapt_error err = {0};
    CHECK(http_client_open(&c, url, 5000, &err) == ADAPT_OK);
    CHECK(http_client_set_token(c, "sekrit", &err) == ADAPT_OK);
    http_client_response r;
    CHECK(http_client_request(c, "GET", "/v1/jobs?limit=2", NULL, NULL, 0, &r, &err) == ADAPT_OK);
    CHECK(r.status == 200 && r.body_len == 7 && !strcmp(r.body, "{\"a\":1}"));
    CHECK(http_client_header(&r, "x-log-offset") && !strcmp(http_client_header(&r, "x-log-offset"), "42"));
    CHECK(http_client_header(&r, "X-Missing") == NULL);
    http_client_response_clear(&r);
    CHECK(http_client_request(c, "POST", "/v1/jobs", "application/json", "{\"k\":1}", 7, &r, &err) == ADAPT_OK);
    CHECK(r.status == 201 && !strcmp(r.body, "{\"b\":2}"));
    http_client_response_clear(&r);
    CHECK(http_client_request(c, "GET", "/v1/jobs/x", NULL, NULL, 0, &r, &err) == ADAPT_OK);
    CHECK(r.status == 404 && !strcmp(r.body, "{}"));
    http_client_response_clear(&r);
    CHECK(http_client_request(c, "GET", "/livez", NULL, NULL, 0, &r, &err) == ADAPT_OK);
    CHECK(r.status == 200 && !strcmp(r.body, "until the end"));
    http_client_response_clear(&r);
    http_client_close(c);
    server_stop(&s);
    CHECK_MSG(s.accepts == 1, "keep-alive: %d connections for 4 requests", s.accepts);
    /* the prefix of the URL, the token on POST only, the body as sent */
    CHECK_STR_CONTAINS(s.requests[0], "GET /api/v1/jobs?limit=2 HTTP/1.1\r\n");
    CHECK(strstr(s.requests[0], "Authorization") == NULL);
    CHECK_STR_CONTAINS(s.requests[1], "POST /api/v1/jobs HTTP/1.1\r\n");
    CHECK_STR_CONTAINS(s.requests[1], "Authorization: Bearer sekrit\r\n");
    CHECK_STR_CONTAINS(s.requests[1], "Content-Type: application/json\r\n");
    CHECK_STR_CONTAINS(s.requests[1], "Content-Length: 7\r\n");
    CHECK_STR_CONTAINS(s.requests[1], "\r\n\r\n{\"k\":1}");
}

static void test_stale_connection_retried(void)
{
    /* the server closes a kept-alive connection after its answer, without saying so */
    server s = { .n_steps = 2, .steps = {
        { "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1, 0 },
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain", 1, 0 } } };
    char url[128];
    server_start(&s, NULL, url, sizeof url);
    http_client *c;
    adapt_error err = {0};
    CHECK(http_client_open(&c, url, 5000, &err) == ADAPT_OK);
    http_client_response r;
    CHECK(http_client_request(c, "GET", "/a", NULL, NULL, 0, &r, &err) == ADAPT_OK && !strcmp(r.body, "ok"));
    http_client_response_clear(&r);
    usleep(50 * 1000);
    CHECK_MSG(http_client_request(c, "POST", "/b", NULL, NULL, 0, &r, &err) == ADAPT_OK, "%s", err.message);
    CHECK(r.status == 200 && !strcmp(r.body, "again"));
    http_client_response_clear(&r);
    http_client_close(c);
    server_stop(&s);
    CHECK(s.accepts == 2);
    CHECK_STR_CONTAINS(s.requests[1], "POST /api/b HTTP/1.1\r\n");
    CHECK_STR_CONTAINS(s.requests[1], "Content-Length: 0\r\n");
}

static void test_failures(void)
{
    /* a server that never answers: the time-out, not a hang */
    server s = { .n_steps = 3, .steps = { { NULL, 1, 1500 },
        { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", 1, 0 },
        { "SSH-2.0-OpenSSH_9.2\r\n\r\n", 1, 0 } } };
    char url[128];
    server_start(&s, NULL, url, sizeof url);
    http_client *c;
    adapt_error err = {0};
    CHECK(http_client_open(&c, url, 300, &err) == ADAPT_OK);
    http_client_response r;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(http_client_request(c, "GET", "/slow", NULL, NULL, 0, &r, &err) == ADAPT_EIO);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    CHECK_STR_CONTAINS(err.message, "timed out");
    CHECK_MSG(took >= 0.25 && took < 3.0, "time-out took %.3f s", took);  /* generous: shared CI cores */
    http_client_close(c);
    CHECK(http_client_open(&c, url, 3000, &err) == ADAPT_OK);
    CHECK(http_client_request(c, "GET", "/half", NULL, NULL, 0, &r, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "in the middle of an answer");
    CHECK(http_client_request(c, "GET", "/ssh", NULL, NULL, 0, &r, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "not an HTTP/1.1 answer");
    http_client_close(c);
    server_stop(&s);

    /* nothing listening */
    CHECK(http_client_open(&c, url, 1000, &err) == ADAPT_OK);
    CHECK(http_client_request(c, "GET", "/", NULL, NULL, 0, &r, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "cannot connect to http://127.0.0.1:");
    CHECK(http_client_request(c, "GET", "no-slash", NULL, NULL, 0, &r, &err) == ADAPT_EINVAL);
    CHECK(http_client_request(c, "GET", "/a b", NULL, NULL, 0, &r, &err) == ADAPT_EINVAL);
    CHECK(http_client_set_token(c, "a\nb", &err) == ADAPT_EINVAL);
    http_client_close(c);
}

static void test_unix_socket(void)
{
    char dir[] = "/tmp/test_http_client.XXXXXX", path[128], url[160];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/api.sock", dir);
    server s = { .n_steps = 1, .steps = { { OK_JSON(2) "{}", 1, 0 } } };
    server_start(&s, path, url, sizeof url);
    http_client *c;
    adapt_error err = {0};
    CHECK(http_client_open(&c, url, 3000, &err) == ADAPT_OK);
    CHECK(!strcmp(http_client_url(c), url));
    http_client_response r;
    CHECK(http_client_request(c, "GET", "/livez", NULL, NULL, 0, &r, &err) == ADAPT_OK);
    CHECK(r.status == 200 && !strcmp(r.body, "{}"));
    http_client_response_clear(&r);
    http_client_close(c);
    server_stop(&s);
    CHECK_STR_CONTAINS(s.requests[0], "GET /livez HTTP/1.1\r\nHost: localhost\r\n");
    unlink(path);
    rmdir(dir);
}

static void test_urls(void)
{
    static const struct { const char *url; int rc; const char *msg; } cases[] = {
        { "http://127.0.0.1:8642", ADAPT_OK, "" },
        { "http://[::1]:8642/", ADAPT_OK, "" },
        { "http://localhost", ADAPT_OK, "" },
        { "unix:/run/adaptd.sock", ADAPT_OK, "" },
        { "ftp://x", ADAPT_EINVAL, "expected http://HOST[:PORT] or unix:/PATH" },
        { "http://h:99999", ADAPT_EINVAL, "port '99999' is not in 1..65535" },
        { "http://h:", ADAPT_EINVAL, "port '' is not" },
        { "http://", ADAPT_EINVAL, "no host" },
        { "http://[::1", ADAPT_EINVAL, "expected [IPv6]:PORT" },
        { "https://h", ADAPT_EUNSUPPORTED, "https is not supported" },
        { "unix:", ADAPT_EINVAL, "expected unix:/PATH" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_client *c = NULL;
        adapt_error err = {0};
        int rc = http_client_open(&c, cases[i].url, 1000, &err);
        CHECK_MSG(rc == cases[i].rc, "%s: rc %d, want %d (%s)", cases[i].url, rc, cases[i].rc, err.message);
        if (rc != ADAPT_OK) CHECK_STR_CONTAINS(err.message, cases[i].msg);
        http_client_close(c);
    }
}

int main(void)
{
    test_bodies_and_keepalive();
    test_stale_connection_retried();
    test_failures();
    test_unix_socket();
    test_urls();
    return check_report("http_client");
}
