/* http_client: a small blocking HTTP/1.1 client for adaptd's API, over TCP or a Unix socket.
 *
 * The one idea: one request at a time on one kept-alive connection, every wait bounded by a
 * deadline (poll), and responses parsed by llhttp — the same parser the daemon uses — so
 * Content-Length, chunked and read-to-close bodies all take one path. A failure says which of
 * three things happened: the server could not be reached or stopped answering (ADAPT_EIO), it
 * answered something that is not HTTP (ADAPT_ECORRUPT), or the URL itself is bad (ADAPT_EINVAL).
 * HTTP status codes are not errors here: the caller reads res->status. */
#ifndef ADAPT_HTTP_CLIENT_H
#define ADAPT_HTTP_CLIENT_H

#include <stddef.h>

#include "error.h"

typedef struct http_client http_client;

enum {
    HTTP_CLIENT_MAX_BODY    = 256 << 20,  /* bytes of one response body */
    HTTP_CLIENT_MAX_HEADERS = 100,
};

typedef struct http_client_response {
    int     status;
    char   *body;        /* malloc'd and NUL-terminated (body_len excludes the NUL); owned by
                            the response until http_client_response_clear */
    size_t  body_len;
    char   *headers;     /* name\0value\0 pairs, n_headers of them; owned like body */
    size_t  headers_len;
    int     n_headers;
} http_client_response;

/* url: http://HOST[:PORT][/PREFIX] (HOST may be [IPv6]) or unix:/PATH/TO.sock. Nothing is
 * connected yet: the first request connects. timeout_ms bounds each request from connect to
 * the last byte of the answer. */
int  http_client_open(http_client **out, const char *url, unsigned timeout_ms, adapt_error *err);
void http_client_close(http_client *c);

/* Sent as "Authorization: Bearer TOKEN" on every request whose method is not GET or HEAD
 * (adaptd asks for it on mutating endpoints only). NULL or "" sends none. The client copies it. */
int  http_client_set_token(http_client *c, const char *token, adapt_error *err);

/* The URL as given, for messages ("cannot reach adaptd at ..."). */
const char *http_client_url(const http_client *c);

/* One request. target is the path and query ("/v1/jobs?limit=5"), appended to the URL's prefix.
 * content_type may be NULL when there is no body. On ADAPT_OK, res holds the answer (any
 * status); the caller clears it. A kept-alive connection that the server closed in between is
 * reopened once, transparently. */
int  http_client_request(http_client *c, const char *method, const char *target,
                         const char *content_type, const char *body, size_t body_len,
                         http_client_response *res, adapt_error *err);

/* The first value of a response header (names compare case-insensitively), or NULL. */
const char *http_client_header(const http_client_response *res, const char *name);

void http_client_response_clear(http_client_response *res);

#endif
