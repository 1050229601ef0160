/* status_page: GET / — the one static HTML + JS page (daemon/status_page.html) that lists the
 * jobs and draws the selected job's loss curve, compiled into adaptd.
 *
 * The one idea: the page is bytes fixed at build time, so serving it is a pointer hand-off with
 * headers fixed at build time too: a Content-Security-Policy naming the hashes of the page's own
 * inline style and script, no-cache plus an ETag so a browser revalidates with a 304. */
#ifndef ADAPT_STATUS_PAGE_H
#define ADAPT_STATUS_PAGE_H

#include "http_server.h"

/* Answers a GET or HEAD of the page: 200 with the page, or 304 when If-None-Match names its
 * ETag (or is "*"). */
void status_page_serve(const http_request *req, http_response *res);

/* The page's ETag, quoted, as sent in the ETag header (for tests). */
const char *status_page_etag(void);

#endif
