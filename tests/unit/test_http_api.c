/* test_http_api: API v1 through the real HTTP server on 127.0.0.1 — jobs created and read back,
 * 400s naming the bad field (wrong type, unknown field, bad choice, paths escaping --data-root
 * directly or through a symlink), paging with a state filter, cancel and its 409, the metrics
 * series, bearer-token checks, and /metrics parsed line by line as Prometheus text. */
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "check.h"
#include "http_server.h"
#include "job_spec.h"
#include "job_store.h"

#define TOKEN "test-token-0123456789abcdef"

typedef struct fixture {
    uv_loop_t      loop;
    uv_async_t     stop;
    http_server_t *srv;
    api_t         *api;
    job_store_t   *store;
    sem_t          ready;
    int            port;
    char           dir[64], state[128], data[128];
} fixture;

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
    CHECK_MSG(job_store_open(&fx->store, fx->state, &err) == ADAPT_OK, "%s", err.message);
    CHECK(http_server_init(&fx->srv, &fx->loop, NULL, api_handle, NULL, &err) == ADAPT_OK);
    api_config cfg = { .store = fx->store, .http = fx->srv, .data_root = fx->data, .slots = 4,
                       .token = TOKEN, .version = "9.9.9-test" };
    CHECK_MSG(api_init(&fx->api, &cfg, &err) == ADAPT_OK, "%s", err.message);
    http_server_set_context(fx->srv, fx->api);
    CHECK(http_server_listen_tcp(fx->srv, "127.0.0.1", 0, &fx->port, &err) == ADAPT_OK);
    sem_post(&fx->ready);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_loop_close(&fx->loop);
    api_close(fx->api);
    job_store_close(fx->store);
    return NULL;
}

/* One request on a fresh connection; returns the status, the body in a malloc'd *body. */
static int call(int port, const char *method, const char *path, const char *json, int auth, char **body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    *body = NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return 0; }
    char head[1024];
    size_t jl = json ? strlen(json) : 0;
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                     method, path, jl, auth ? "Authorization: Bearer " TOKEN "\r\n" : "");
    if (write(fd, head, (size_t)n) != n || (jl && write(fd, json, jl) != (ssize_t)jl)) { close(fd); return 0; }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (len < cap - 1 && (r = read(fd, buf + len, cap - 1 - len)) > 0) len += (size_t)r;
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    int status = len > 12 ? atoi(buf + 9) : 0;
    *body = strdup(sep ? sep + 4 : "");
    free(buf);
    return status;
}

static const char *GOOD = "{\"name\":\"n%d\",\"kind\":\"train\",\"ranks\":2,\"train\":"
    "{\"model_path\":\"model\",\"corpus\":\"corpus\",\"output_dir\":\"out/run%d\",\"epochs\":1,"
    "\"lr_llm\":0.0002,\"overlays\":[\"corpus\"],\"freeze_vision\":false,\"mode\":\"two_stage\","
    "\"stages\":[{\"epochs\":1,\"schedule\":\"linear\"},{\"lr_llm\":0.001}]}}";

static void create_job(int port, int i, char id[64])
{
    char json[512], *body;
    snprintf(json, sizeof json, GOOD, i, i);
    int st = call(port, "POST", "/v1/jobs", json, 1, &body);
    CHECK_MSG(st == 201, "status %d: %s", st, body);
    cJSON *doc = cJSON_Parse(body);
    const cJSON *jid = cJSON_GetObjectItem(doc, "id");
    snprintf(id, 64, "%s", cJSON_IsString(jid) ? jid->valuestring : "");
    CHECK(strlen(id) == 32);
    CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "state")), "queued") == 0);
    cJSON_Delete(doc);
    free(body);
}

static void expect_400(int port, const char *json, const char *field)
{
    char *body;
    int st = call(port, "POST", "/v1/jobs", json, 1, &body);
    CHECK_MSG(st == 400, "status %d for %s", st, json);
    CHECK_STR_CONTAINS(body, "\"code\":\"invalid_argument\"");
    CHECK_STR_CONTAINS(body, field);
    free(body);
}

static void test_create_and_read(fixture *fx, char id[64])
{
    create_job(fx->port, 0, id);
    char path[128], *body;
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    CHECK(call(fx->port, "GET", path, NULL, 0, &body) == 200);
    cJSON *doc = cJSON_Parse(body);
    cJSON *train = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "spec"), "train");
    char want[256];
    snprintf(want, sizeof want, "%s/model", fx->data);
    CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(train, "model_path")), want) == 0);
    CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(train, "schedule")), "cosine") == 0);
    CHECK(cJSON_GetObjectItem(doc, "ranks")->valuedouble == 2);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(train, "freeze_vision")));   /* a false given stays */
    CHECK_STR_CONTAINS(body, "\"lr_llm\":0.0002,");
    /* every member carries its effective value (proto/train_rules' defaults filled in), as
     * adapt-worker will run it */
    CHECK(cJSON_GetObjectItem(train, "pack_window")->valuedouble == 1024);
    CHECK(cJSON_GetObjectItem(train, "checkpoint_every")->valuedouble == 500);
    CHECK(cJSON_GetObjectItem(train, "max_steps")->valuedouble == 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(train, "freeze_merger")));
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(train, "caption_instructions")) == 8);
    CHECK_STR_CONTAINS(body, "\"lr_vision\":0.0002,");   /* follows lr_llm */
    CHECK_STR_CONTAINS(body, "\"seed\":42,");
    cJSON *stages = cJSON_GetObjectItem(train, "stages");
    cJSON *s0 = cJSON_GetArrayItem(stages, 0), *s1 = cJSON_GetArrayItem(stages, 1);
    CHECK(cJSON_GetArraySize(stages) == 2 && s0 && s1);
    if (s0 && s1) {   /* a stage's members left out come from the top level */
        CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(s0, "schedule")), "linear"));
        CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(s1, "schedule")), "cosine"));
        CHECK(cJSON_GetObjectItem(s1, "epochs")->valuedouble == 1);
    }
    CHECK_STR_CONTAINS(body, "\"lr_llm\":0.001,");
    CHECK(!strstr(body, "\"synthesize\""));   /* only the sub-spec of the job's kind */
    cJSON_Delete(doc);
    free(body);
    CHECK(call(fx->port, "GET", "/v1/jobs/0123456789abcdef0123456789abcdef", NULL, 0, &body) == 404);
    CHECK_STR_CONTAINS(body, "not_found");
    free(body);
    CHECK(call(fx->port, "GET", "/v1/jobs/../../etc", NULL, 0, &body) == 404);
    free(body);
}

static void test_bad_specs(fixture *fx)
{
    int p = fx->port;
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"o\",\"epochs\":\"2\"}}", "train.epochs");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"epochs\":1.5}}", "train.epochs");
    /* this API runs no Slurm launcher (no --slurm-template): refused at submit, not at start */
    expect_400(p, "{\"kind\":\"train\",\"launcher\":\"slurm\",\"train\":{\"model_path\":\"model\","
                  "\"corpus\":\"corpus\",\"output_dir\":\"o\"}}", "launcher: \\\"slurm\\\" is not set up");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"bogus\":1}}", "train.bogus: unknown field");
    expect_400(p, "{\"kind\":\"train\",\"color\":\"red\"}", "color: unknown field");
    expect_400(p, "{\"kind\":7}", "kind: expected a string");
    expect_400(p, "{\"train\":{}}", "kind: required");
    expect_400(p, "{\"kind\":\"synthesize\"}", "synthesize: required");
    expect_400(p, "{\"kind\":\"train\",\"ranks\":64,\"train\":{}}", "ranks: 64 exceeds");
    expect_400(p, "{\"kind\":\"train\",\"ranks\":-1}", "ranks");
    expect_400(p, "{\"kind\":\"train\",\"backend\":\"tpu\",\"train\":{}}", "backend");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"o\",\"schedule\":\"wavy\"}}", "train.schedule");
    expect_400(p, "{\"kind\":\"train\"}", "train: required");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"/etc\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"o\"}}", "train.model_path");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"escape\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"o\"}}", "outside --data-root");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"escape/new\"}}", "train.output_dir");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"new/../../x\"}}", "train.output_dir");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"nothere\","
                  "\"output_dir\":\"o\"}}", "train.corpus");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"overlays\":[\"corpus\",3]}}", "train.overlays");
    expect_400(p, "{\"kind\":\"train\",\"kind\":\"train\"}", "given twice");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"stages\":[{\"epochs\":1},{\"epochs\":\"x\"}]}}",
               "train.stages[1].epochs");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"stages\":[1]}}", "train.stages: expected an array of objects");
    /* proto/train_rules, the rules adapt-worker applies too: a member named with its range */
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"o\",\"pack_window\":0}}", "train.pack_window: 0 is outside [1, 1048576]");
    expect_400(p, "{\"kind\":\"train\",\"train\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
                  "\"output_dir\":\"o\",\"stages\":[{},{}]}}", "train.stages: applies only to mode");
    expect_400(p, "{\"kind\":\"train\",\"ranks\":0,\"train\":{}}", "ranks: 0 is outside [1, 65536]");
    expect_400(p, "{\"kind\":\"train\"} {}", "unexpected text after the document");
    expect_400(p, "{\"kind\":", "malformed JSON");
    expect_400(p, "[1,2]", "must be a JSON object");
    char *body;
    CHECK(call(p, "POST", "/v1/jobs", "{}", 0, &body) == 401);
    CHECK_STR_CONTAINS(body, "unauthorized");
    free(body);
}

static void test_paging_and_cancel(fixture *fx, const char *first)
{
    char ids[5][64], *body;
    for (int i = 0; i < 5; i++) create_job(fx->port, i + 1, ids[i]);
    char path[256], token[32] = "";
    int seen = 0, pages = 0;
    for (; pages < 20; pages++) {   /* 6 jobs in pages of 2: 3 pages */
        snprintf(path, sizeof path, "/v1/jobs?state=queued&limit=2%s%s", token[0] ? "&page_token=" : "", token);
        CHECK(call(fx->port, "GET", path, NULL, 0, &body) == 200);
        cJSON *doc = cJSON_Parse(body);
        seen += cJSON_GetArraySize(cJSON_GetObjectItem(doc, "jobs"));
        const cJSON *next = cJSON_GetObjectItem(doc, "next_page_token");
        int more = cJSON_IsString(next);
        if (more) snprintf(token, sizeof token, "%s", next->valuestring);
        cJSON_Delete(doc);
        free(body);
        if (!more) break;
    }
    CHECK(seen == 6 && pages == 2);
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", ids[2]);
    CHECK(call(fx->port, "POST", path, NULL, 0, &body) == 401);
    free(body);
    CHECK(call(fx->port, "POST", path, NULL, 1, &body) == 200);
    CHECK_STR_CONTAINS(body, "\"state\":\"cancelled\"");
    free(body);
    CHECK(call(fx->port, "POST", path, NULL, 1, &body) == 409);
    CHECK_STR_CONTAINS(body, "already cancelled");
    free(body);
    CHECK(call(fx->port, "GET", "/v1/jobs?state=cancelled", NULL, 0, &body) == 200);
    CHECK_STR_CONTAINS(body, ids[2]);
    CHECK(strstr(body, first) == NULL);
    free(body);
    CHECK(call(fx->port, "GET", "/v1/jobs?state=sleeping", NULL, 0, &body) == 400);
    CHECK_STR_CONTAINS(body, "state");
    free(body);
    CHECK(call(fx->port, "GET", "/v1/jobs?limit=abc", NULL, 0, &body) == 400);
    CHECK_STR_CONTAINS(body, "limit");
    free(body);
    CHECK(call(fx->port, "GET", "/v1/jobs?limit=1000", NULL, 0, &body) == 400);
    free(body);
    CHECK(call(fx->port, "DELETE", "/v1/jobs", NULL, 1, &body) == 405);
    free(body);
}

/* ---- Prometheus text: a small parser ------------------------------------------------------ */

typedef struct sample { char name[64], labels[128]; double value; } sample;

/* Parses the exposition text into samples; returns -1 on any line that is not a comment, a
 * blank, or `name{labels} value` / `name value`. */
static int prom_parse(const char *text, sample *out, int cap, int *n)
{
    *n = 0;
    for (const char *line = text; *line; ) {
        const char *eol = strchr(line, '\n');
        if (!eol) return -1;                     /* every line ends with \n */
        if (*line != '#' && line != eol) {
            if (*n == cap) return -1;
            sample *s = &out[*n];
            size_t k = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:0123456789");
            if (k == 0 || k >= sizeof s->name) return -1;
            memcpy(s->name, line, k);
            s->name[k] = '\0';
            const char *p = line + k;
            s->labels[0] = '\0';
            if (*p == '{') {
                const char *close = memchr(p, '}', (size_t)(eol - p));
                if (!close || (size_t)(close - p) >= sizeof s->labels) return -1;
                memcpy(s->labels, p + 1, (size_t)(close - p - 1));
                s->labels[close - p - 1] = '\0';
                p = close + 1;
            }
            if (*p != ' ') return -1;
            char *end;
            s->value = strtod(p + 1, &end);
            if (end != eol) return -1;
            (*n)++;
        } else if (*line == '#' && strncmp(line, "# HELP ", 7) && strncmp(line, "# TYPE ", 7)) {
            return -1;
        }
        line = eol + 1;
    }
    return 0;
}

static double prom_get(const sample *s, int n, const char *name, const char *labels)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0 && strcmp(s[i].labels, labels) == 0) return s[i].value;
    return -1;
}

/* Like call (GET, no body) but keeps the head: *head and *body are malloc'd. Reads up to 4 MiB. */
static int call_head(int port, const char *method, const char *path, char **head, char **body,
                     size_t *body_len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    *head = *body = NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return 0; }
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Content-Length: 0\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", method, path);
    if (write(fd, req, (size_t)n) != n) { close(fd); return 0; }
    size_t cap = 4 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (len < cap - 1 && (r = read(fd, buf + len, cap - 1 - len)) > 0) len += (size_t)r;
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    int status = len > 12 ? atoi(buf + 9) : 0;
    *head = strndup(buf, sep ? (size_t)(sep - buf) : len);
    *body_len = sep ? len - (size_t)(sep + 4 - buf) : 0;
    *body = malloc(*body_len + 1);
    memcpy(*body, sep ? sep + 4 : "", *body_len);
    (*body)[*body_len] = '\0';
    free(buf);
    return status;
}

static long long log_offset(const char *head)
{
    const char *h = strstr(head, "X-Log-Offset: ");
    return h ? atoll(h + 14) : -1;
}

static void write_log(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) { CHECK(fwrite(text, 1, len, f) == len); fclose(f); }
}

/* GET /v1/jobs/{id}/logs against log files written here, and POST checkpoint without a
 * scheduler. A second store handle (its own SQLite connection) starts the job's attempt. */
static void test_logs(fixture *fx)
{
    char id[64], idle[64], path[600], dir[512], *head, *body;
    size_t blen;
    create_job(fx->port, 20, id);
    create_job(fx->port, 21, idle);
    job_store_t *js;
    CHECK(job_store_open(&js, fx->state, NULL) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    char jd[400];
    job_store_job_dir(js, id, jd, sizeof jd);
    job_store_close(js);
    snprintf(dir, sizeof dir, "%s/logs", jd);
    mkdir(dir, 0700);
    snprintf(dir, sizeof dir, "%s/logs/attempt-1", jd);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/rank-0.log", dir);
    write_log(path, "l1\nl2\nl3\n", 9);
    snprintf(path, sizeof path, "%s/launcher.log", dir);
    write_log(path, "x", 1);

    static const struct { const char *q; int status; const char *body; long long offset; } cases[] = {
        { "",                        200, "l1\nl2\nl3\n", 9 },
        { "?rank=0&tail=2",          200, "l2\nl3\n", 9 },
        { "?tail=10",                200, "l1\nl2\nl3\n", 9 },
        { "?tail=0",                 200, "", 9 },
        { "?offset=3",               200, "l2\nl3\n", 9 },
        { "?offset=9",               200, "", 9 },
        { "?rank=launcher&tail=1",   200, "x", 1 },
        { "?rank=1",                 200, "", 0 },     /* not written yet: empty */
        { "?attempt=1&rank=0&offset=6", 200, "l3\n", 9 },
        { "?offset=10",              400, NULL, -1 },
        { "?tail=1&offset=0",        400, NULL, -1 },
        { "?rank=-1",                400, NULL, -1 },
        { "?tail=x",                 400, NULL, -1 },
        { "?rank=2",                 404, NULL, -1 },
        { "?attempt=2",              404, NULL, -1 },
        { "?attempt=0",              404, NULL, -1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char url[256];
        snprintf(url, sizeof url, "/v1/jobs/%s/logs%s", id, cases[i].q);
        int st = call_head(fx->port, "GET", url, &head, &body, &blen);
        CHECK_MSG(st == cases[i].status, "logs%s: %d", cases[i].q, st);
        if (cases[i].body) {
            CHECK_MSG(strcmp(body, cases[i].body) == 0, "logs%s: body %s", cases[i].q, body);
            CHECK_MSG(log_offset(head) == cases[i].offset, "logs%s: X-Log-Offset in %s", cases[i].q, head);
            CHECK_STR_CONTAINS(head, "Content-Type: text/plain");
        }
        free(head);
        free(body);
    }
    /* 1.5 MiB of 13-byte lines: one answer carries 1 MiB; tail reads the end */
    size_t nlines = 121000, big_len = nlines * 13;
    char *big = malloc(big_len + 1);
    for (size_t i = 0; i < nlines; i++) snprintf(big + 13 * i, 14, "line %07zu\n", i);
    snprintf(path, sizeof path, "%s/rank-1.log", dir);
    write_log(path, big, big_len);
    char url[256];
    snprintf(url, sizeof url, "/v1/jobs/%s/logs?rank=1", id);
    CHECK(call_head(fx->port, "GET", url, &head, &body, &blen) == 200);
    CHECK(blen == 1 << 20 && memcmp(body, big, blen) == 0 && log_offset(head) == 1 << 20);
    free(head); free(body);
    snprintf(url, sizeof url, "/v1/jobs/%s/logs?rank=1&offset=%d", id, 1 << 20);
    CHECK(call_head(fx->port, "GET", url, &head, &body, &blen) == 200);
    CHECK(blen == big_len - (1 << 20) && memcmp(body, big + (1 << 20), blen) == 0);
    CHECK(log_offset(head) == (long long)big_len);
    free(head); free(body);
    snprintf(url, sizeof url, "/v1/jobs/%s/logs?rank=1&tail=3", id);
    CHECK(call_head(fx->port, "GET", url, &head, &body, &blen) == 200);
    CHECK_MSG(strcmp(body, "line 0120997\nline 0120998\nline 0120999\n") == 0, "tail=3: %.60s", body);
    free(head); free(body);
    /* tail beyond the last 1 MiB: whole lines only, the cut first one left out */
    snprintf(url, sizeof url, "/v1/jobs/%s/logs?rank=1&tail=100000", id);
    CHECK(call_head(fx->port, "GET", url, &head, &body, &blen) == 200);
    CHECK(blen > 0 && blen < (1 << 20) && blen % 13 == 0 && strncmp(body, "line ", 5) == 0);
    free(head); free(body);
    free(big);

    snprintf(url, sizeof url, "/v1/jobs/%s/logs", idle);
    CHECK(call_head(fx->port, "GET", url, &head, &body, &blen) == 404);
    CHECK_STR_CONTAINS(body, "has not started");
    free(head); free(body);
    snprintf(url, sizeof url, "/v1/jobs/%s/logs", id);
    CHECK(call_head(fx->port, "POST", url, &head, &body, &blen) == 405);
    free(head); free(body);
    /* no scheduler in this fixture: nothing runs, so nothing can checkpoint */
    snprintf(url, sizeof url, "/v1/jobs/%s/checkpoint", id);
    CHECK(call_head(fx->port, "POST", url, &head, &body, &blen) == 409);
    free(head); free(body);
    CHECK(call_head(fx->port, "GET", url, &head, &body, &blen) == 405);
    free(head); free(body);
}

static void test_metrics(fixture *fx, const char *id)
{
    /* a second connection to the same database plays the worker link's part */
    job_store_t *js;
    CHECK(job_store_open(&js, fx->state, NULL) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, NULL) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_RUNNING, NULL, NULL) == ADAPT_OK);
    for (int s = 1; s <= 4; s++) {
        job_store_progress p = { .step = (uint64_t)s, .total_steps = 10, .loss = 2.0 / s,
                                 .tokens_per_second = 500.0 * s, .step_seconds = 0.25 };
        CHECK(job_store_add_progress(js, id, &p, NULL) == ADAPT_OK);
    }
    job_store_close(js);
    char path[128], *body;
    snprintf(path, sizeof path, "/v1/jobs/%s/metrics?since=2", id);
    CHECK(call(fx->port, "GET", path, NULL, 0, &body) == 200);
    cJSON *doc = cJSON_Parse(body);
    cJSON *pts = cJSON_GetObjectItem(doc, "points");
    CHECK(cJSON_GetArraySize(pts) == 2);
    CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(pts, 0), "step")->valuedouble == 3);
    cJSON_Delete(doc);
    free(body);
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    CHECK(call(fx->port, "GET", path, NULL, 0, &body) == 200);
    CHECK_STR_CONTAINS(body, "\"eta_seconds\":1.5");
    free(body);

    CHECK(call(fx->port, "GET", "/metrics", NULL, 0, &body) == 200);
    sample s[128];
    int n;
    CHECK_MSG(prom_parse(body, s, 128, &n) == 0, "unparsable metrics:\n%s", body);
    CHECK(prom_get(s, n, "adaptd_build_info", "version=\"9.9.9-test\"") == 1);
    CHECK(prom_get(s, n, "adaptd_jobs", "state=\"running\"") == 1);
    CHECK(prom_get(s, n, "adaptd_jobs", "state=\"queued\"") == 4);
    CHECK(prom_get(s, n, "adaptd_jobs", "state=\"cancelled\"") == 1);
    char lab[64];
    snprintf(lab, sizeof lab, "job=\"%s\"", id);
    CHECK(prom_get(s, n, "adaptd_job_step", lab) == 4);
    CHECK(prom_get(s, n, "adaptd_job_loss", lab) == 0.5);
    CHECK(prom_get(s, n, "adaptd_job_tokens_per_second", lab) == 2000);
    CHECK(prom_get(s, n, "adaptd_http_requests_total", "code=\"400\"") >= 23);
    CHECK(prom_get(s, n, "adaptd_http_requests_total", "code=\"201\"") == 6);
    free(body);
}

static void test_probes(fixture *fx)
{
    char *body;
    CHECK(call(fx->port, "GET", "/livez", NULL, 0, &body) == 200);
    free(body);
    CHECK(call(fx->port, "GET", "/readyz", NULL, 0, &body) == 200);
    free(body);
    CHECK(call(fx->port, "POST", "/livez", NULL, 1, &body) == 405);
    free(body);
    CHECK(call(fx->port, "GET", "/nowhere", NULL, 0, &body) == 404);
    CHECK_STR_CONTAINS(body, "{\"error\":{\"code\":\"not_found\"");
    free(body);
}

/* The spec parser on damaged input (fixed seed): every mutation of a good spec is either
 * accepted or refused with a message, and a refusal inside the document names a field. */
static void test_spec_mutations(const char *data_root)
{
    char good[512];
    snprintf(good, sizeof good, GOOD, 1, 1);
    size_t len = strlen(good);
    uint32_t seed = 777;
    static const char alphabet[] = "{}[]\":,0123456789.-eE truefalsnul\\x";
    int accepted = 0, refused = 0;
    job_spec_policy pol = { .data_root = data_root, .max_ranks = 4 };
    for (int round = 0; round < 3000; round++) {
        char doc[512];
        memcpy(doc, good, len + 1);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1664525u + 1013904223u;
            doc[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        Adaptd__JobSpec *spec;
        char *norm, field[JOB_SPEC_FIELD_MAX];
        adapt_error err = {0};
        int rc = job_spec_parse(doc, len, &pol, &spec, &norm, field, &err);
        if (rc == ADAPT_OK) {
            accepted++;
            CHECK(norm && norm[0] == '{');
            adaptd__job_spec__free_unpacked(spec, NULL);
            free(norm);
        } else {
            refused++;
            CHECK(rc == ADAPT_EINVAL && err.message[0]);
        }
    }
    CHECK(refused > 0);
    fprintf(stderr, "spec mutations: %d accepted, %d refused\n", accepted, refused);
}

int main(void)
{
    fixture fx = {0};
    snprintf(fx.dir, sizeof fx.dir, "/tmp/adapt-test-api-XXXXXX");
    if (!mkdtemp(fx.dir)) return 1;
    snprintf(fx.state, sizeof fx.state, "%s/state", fx.dir);
    snprintf(fx.data, sizeof fx.data, "%s/data", fx.dir);
    char p[256];
    mkdir(fx.data, 0700);
    snprintf(p, sizeof p, "%s/model", fx.data); mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/corpus", fx.data); mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/escape", fx.data);
    CHECK(symlink("/tmp", p) == 0);     /* inside the root by name, outside by resolution */
    sem_init(&fx.ready, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, server_thread, &fx);
    sem_wait(&fx.ready);
    char first[64] = "";
    if (fx.port > 0) {
        test_probes(&fx);
        test_create_and_read(&fx, first);
        test_bad_specs(&fx);
        test_paging_and_cancel(&fx, first);
        test_metrics(&fx, first);
        test_logs(&fx);
    }
    char real_data[4096];
    if (realpath(fx.data, real_data)) test_spec_mutations(real_data);
    uv_async_send(&fx.stop);
    pthread_join(t, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", fx.dir);
    return check_report("http_api");
}
