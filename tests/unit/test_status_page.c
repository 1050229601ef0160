/* test_status_page: GET / answered by status_page_serve without a socket — the embedded page,
 * its headers (CSP with the two inline hashes, no-cache, the ETag) and If-None-Match in the
 * forms RFC 9110 allows: one tag, a list, a weak tag, "*", and tags that must not match. */
#include "check.h"
#include "status_page.h"

static http_response serve(const char *if_none_match)
{
    http_request req = { .method = "GET", .path = "/", .query = "" };
    if (if_none_match) {
        req.header_names[0] = "if-none-match";   /* header names compare case-insensitively */
        req.header_values[0] = if_none_match;
        req.header_count = 1;
    }
    http_response res = { .status = 500 };
    status_page_serve(&req, &res);
    return res;
}

int main(void)
{
    const char *etag = status_page_etag();
    CHECK(etag[0] == '"' && strlen(etag) > 2 && etag[strlen(etag) - 1] == '"');

    http_response res = serve(NULL);
    CHECK(res.status == 200);
    CHECK(res.body == NULL && res.static_body != NULL);
    CHECK(res.content_type && strcmp(res.content_type, "text/html; charset=utf-8") == 0);
    CHECK(res.body_len > 1000 && strlen(res.static_body) == res.body_len);
    CHECK(strncmp(res.static_body, "<!DOCTYPE html>", 15) == 0);
    CHECK_STR_CONTAINS(res.static_body, "<svg id=\"curve\"");
    const char *h = res.static_headers ? res.static_headers : "";
    CHECK_STR_CONTAINS(h, "Content-Security-Policy: default-src 'none'; script-src 'sha256-");
    CHECK_STR_CONTAINS(h, "style-src 'sha256-");
    CHECK_STR_CONTAINS(h, "connect-src 'self'");
    CHECK_STR_CONTAINS(h, "Cache-Control: no-cache\r\n");
    char line[128];
    snprintf(line, sizeof line, "ETag: %s\r\n", etag);
    CHECK_STR_CONTAINS(h, line);
    CHECK(strstr(h, "unsafe-inline") == NULL && strstr(h, "unsafe-eval") == NULL);

    char list[256], weak[128];
    snprintf(list, sizeof list, "\"old\", %s , \"older\"", etag);
    snprintf(weak, sizeof weak, "W/%s", etag);
    const char *matching[] = { etag, list, weak, "*" };
    for (size_t i = 0; i < sizeof matching / sizeof *matching; i++) {
        res = serve(matching[i]);
        CHECK_MSG(res.status == 304, "If-None-Match: %s → %d", matching[i], res.status);
        CHECK(res.static_body == NULL && res.body == NULL);
        CHECK(res.static_headers && strstr(res.static_headers, line));
    }
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%.*s\"", (int)strlen(etag) - 2, etag);   /* one char short */
    const char *stale[] = { "\"0\"", "", ",,", prefix, "W/\"x\", \"y\"", "\"unterminated" };
    for (size_t i = 0; i < sizeof stale / sizeof *stale; i++) {
        res = serve(stale[i]);
        CHECK_MSG(res.status == 200, "If-None-Match: %s → %d", stale[i], res.status);
    }
    printf("%d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
