/* api: adaptd's HTTP API v1 — routes, JSON bodies, errors, auth and the Prometheus page.
 *
 * The one idea: one table maps (method, path pattern) to a handler, and every answer, success
 * or error, is built by the same two helpers, so each error is {"error":{"code","message"}} with
 * the right status everywhere. */
#ifndef ADAPT_API_H
#define ADAPT_API_H

#include <stdint.h>

#include "error.h"
#include "http_server.h"
#include "job_store.h"
#include "scheduler.h"

typedef struct api api_t;

typedef struct api_config {
    job_store_t   *store;
    http_server_t *http;           /* for adaptd_http_requests_total; may be NULL */
    const char    *data_root;      /* canonical */
    uint32_t       slots;
    const char    *token;          /* bearer token mutating endpoints require; NULL = none */
    const char    *version;
    scheduler_t   *sched;          /* starts, cancels and checkpoints jobs; NULL: the API only
                                      records jobs (cancel then works on queued ones only) */
} api_config;

int  api_init(api_t **out, const api_config *cfg, adapt_error *err);
void api_close(api_t *api);
/* The http_handler_fn to give http_server_init, with the api as ctx. */
void api_handle(void *api, const http_request *req, http_response *res);

#endif
