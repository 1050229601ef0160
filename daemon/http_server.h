/* http_server: adaptd's HTTP/1.1 server — libuv TCP and Unix-socket listeners, llhttp parsing,
 * keep-alive and pipelining, and the limits that keep one client from hurting the others.
 *
 * The one idea: a request is handed to the handler only once it is complete and within limits,
 * and the handler answers synchronously, so responses leave in request order without any
 * per-request queue; every limit (size, time, count) is enforced here, before the API sees
 * anything. */
#ifndef ADAPT_HTTP_SERVER_H
#define ADAPT_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "error.h"

typedef struct http_server http_server_t;

typedef struct http_limits {
    size_t   max_header_bytes;    /* request line + headers; over it → 431 */
    size_t   max_body_bytes;      /* declared or received body; over it → 413 */
    uint64_t header_timeout_ms;   /* first byte of a request to the end of its headers → 408 */
    uint64_t body_timeout_ms;     /* end of headers to the end of the body → 408 */
    uint64_t idle_timeout_ms;     /* keep-alive connection without a request → closed */
    int      max_connections;     /* more at once → 503 and closed */
} http_limits;

/* The defaults named in the daemon's --help. */
void http_limits_default(http_limits *lim);

enum { HTTP_MAX_HEADERS = 64 };

/* A complete request. Every pointer is owned by the server and valid only during the handler
 * call; strings are NUL-terminated. */
typedef struct http_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* the URL up to '?', not decoded */
    const char *query;         /* after '?', "" when none */
    const char *body;          /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t      body_len;
    int         header_count;
    const char *header_names[HTTP_MAX_HEADERS];
    const char *header_values[HTTP_MAX_HEADERS];
} http_request;

/* What the handler answers. Exactly one of body (malloc'd; the server takes it and frees it
 * once the bytes are on the socket or copied into its queue) or static_body (never freed) may
 * be set. A 204 or 304 carries neither body nor Content-Length. */
typedef struct http_response {
    int         status;
    const char *content_type;   /* default application/json */
    char       *body;
    const char *static_body;
    size_t      body_len;
    const char *static_headers; /* "Name: value\r\n" lines that outlive the response, or NULL */
    char        extra_headers[256];  /* "Name: value\r\n" lines, or "" */
} http_response;

typedef void (*http_handler_fn)(void *ctx, const http_request *req, http_response *res);

int  http_server_init(http_server_t **out, uv_loop_t *loop, const http_limits *lim,
                      http_handler_fn handler, void *ctx, adapt_error *err);
/* Listens on host:port; port 0 picks a free one, written to *bound (when not NULL). */
int  http_server_listen_tcp(http_server_t *srv, const char *host, int port, int *bound,
                            adapt_error *err);
/* Listens on a Unix socket at path, replacing a stale socket file left by a dead daemon. */
int  http_server_listen_unix(http_server_t *srv, const char *path, adapt_error *err);
/* Sets the handler's ctx after init (the handler may need the server itself, for counters). */
void http_server_set_context(http_server_t *srv, void *ctx);
/* The port of the first TCP listener, or 0. */
int  http_server_port(const http_server_t *srv);
/* Closes listeners and connections; the memory is freed once the loop has run their close
 * callbacks, so run the loop after this. */
void http_server_close(http_server_t *srv);

/* Responses sent so far with this status (100..599); for adaptd_http_requests_total. */
uint64_t http_server_responses(const http_server_t *srv, int status);
int      http_server_connections(const http_server_t *srv);

/* The value of header name (case-insensitive), or NULL. */
const char *http_request_header(const http_request *req, const char *name);
/* Finds name=value in a query string and percent-decodes value into buf. Returns 1 when found,
 * 0 when absent, -1 when the value does not fit or is badly encoded. */
int http_query_get(const char *query, const char *name, char *buf, size_t size);
const char *http_status_reason(int status);

#endif
