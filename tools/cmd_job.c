/* cmd_job: adaptctl's job commands against adaptd — submit, list, status, watch, cancel,
 * checkpoint, logs.
 *
 * The one idea: every command is one or a few API calls through job_call, which turns what
 * happened into the documented exit code once (3 daemon unreachable, 4 the daemon refused the
 * request, 5 the daemon failed), so the commands themselves only format answers. Human output
 * goes to stdout, --json prints the daemon's documents unchanged for scripts. */
#include "commands.h"
#include "http_client.h"
#include "job_yaml.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define JOB_DEFAULT_URL "http://127.0.0.1:8642"

enum { JOB_ID_LEN = 32, JOB_PAGE_MAX = 100, JOB_UNREACHABLE_PATIENCE_MS = 30000 };

/* What every job command shares: where the daemon is, how to authenticate, output mode. */
typedef struct job_cli {
    const char  *cmd;           /* "submit", ... for messages */
    const char  *server;        /* --server */
    const char  *token_file;    /* --token-file */
    double       timeout_s;     /* --timeout */
    int          json;          /* --json */
    http_client *http;
} job_cli;

/* Long options every job command accepts, in addition to its own. */
enum { OPT_SERVER = 1000, OPT_TOKEN_FILE, OPT_JSON, OPT_TIMEOUT, OPT_HELP, OPT_STATE, OPT_LIMIT,
       OPT_WATCH, OPT_RANK, OPT_TAIL, OPT_FOLLOW, OPT_ATTEMPT, OPT_INTERVAL };

#define JOB_COMMON_OPTIONS                                     \
    { "server",     required_argument, 0, OPT_SERVER },        \
    { "token-file", required_argument, 0, OPT_TOKEN_FILE },    \
    { "timeout",    required_argument, 0, OPT_TIMEOUT },       \
    { "json",       no_argument,       0, OPT_JSON },          \
    { "help",       no_argument,       0, OPT_HELP }

static const char common_usage[] =
    "common options:\n"
    "  --server URL       adaptd's address: http://HOST:PORT or unix:/PATH (default $ADAPTD_URL,\n"
    "                     else " JOB_DEFAULT_URL ")\n"
    "  --token-file FILE  bearer token for submit / cancel / checkpoint (default $ADAPTD_TOKEN,\n"
    "                     else the file named by $ADAPTD_TOKEN_FILE)\n"
    "  --timeout SECONDS  per request (default 30)\n"
    "  --json             the daemon's JSON documents, for scripts\n"
    "exit codes: 0 ok (watch: the job succeeded), 1 the job failed or was cancelled (watch) or the\n"
    "spec file is bad, 2 bad usage, 3 cannot reach adaptd, 4 adaptd refused the request (4xx,\n"
    "its message printed), 5 adaptd failed (5xx)\n";

/* ---- small helpers --------------------------------------------------------------------------- */

static int usage_error(const job_cli *cli, const char *usage, const char *fmt, const char *arg)
{
    fprintf(stderr, "adaptctl %s: ", cli->cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    return ADAPTCTL_EXIT_USAGE;
}

/* Handles an option every job command shares: 1 consumed, 0 not a common option, -1 bad value. */
static int common_option(job_cli *cli, int opt, const char *arg)
{
    char *end;
    switch (opt) {
    case OPT_SERVER:     cli->server = arg; return 1;
    case OPT_TOKEN_FILE: cli->token_file = arg; return 1;
    case OPT_JSON:       cli->json = 1; return 1;
    case OPT_TIMEOUT:
        errno = 0;
        cli->timeout_s = strtod(arg, &end);
        if (errno || *end || !(cli->timeout_s > 0 && cli->timeout_s <= 86400)) return -1;
        return 1;
    default:
        return 0;
    }
}

static int is_job_id(const char *s)
{
    size_t n = strlen(s);
    if (n != JOB_ID_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) return 0;
    return 1;
}

static int parse_uint(const char *s, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !*s || *end || v < 0 || v > max) return -1;
    *out = v;
    return 0;
}

/* Percent-encodes a query value (RFC 3986 unreserved characters pass through). */
static void query_escape(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || strchr("-._~", ch)) out[o++] = (char)ch;
        else { out[o++] = '%'; out[o++] = hex[ch >> 4]; out[o++] = hex[ch & 15]; }
    }
    out[o] = '\0';
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the first line of a token file; the daemon writes it as 64 hex characters. */
static int token_read(const char *path, char *tok, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "adaptctl: token file %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fgets(tok, (int)size, f) != NULL;
    fclose(f);
    size_t n = ok ? strcspn(tok, "\r\n") : 0;
    while (n > 0 && isspace((unsigned char)tok[n - 1])) n--;
    tok[n] = '\0';
    if (!n) {
        fprintf(stderr, "adaptctl: token file %s is empty\n", path);
        return -1;
    }
    return 0;
}

/* Opens the client: --server, else $ADAPTD_URL, else the default; the token from --token-file,
 * else $ADAPTD_TOKEN, else the file $ADAPTD_TOKEN_FILE names. */
static int job_connect(job_cli *cli)
{
    const char *url = cli->server;
    if (!url || !*url) url = getenv("ADAPTD_URL");
    if (!url || !*url) url = JOB_DEFAULT_URL;
    adapt_error err = {0};
    if (http_client_open(&cli->http, url, (unsigned)(cli->timeout_s * 1000), &err) != ADAPT_OK) {
        fprintf(stderr, "adaptctl %s: %s\n", cli->cmd, err.message);
        return ADAPTCTL_EXIT_USAGE;
    }
    char tok[512] = "";
    const char *env_tok = getenv("ADAPTD_TOKEN"), *env_file = getenv("ADAPTD_TOKEN_FILE");
    if (cli->token_file) {
        if (token_read(cli->token_file, tok, sizeof tok)) return ADAPTCTL_EXIT_USAGE;
    } else if (env_tok && *env_tok) {
        snprintf(tok, sizeof tok, "%s", env_tok);
    } else if (env_file && *env_file) {
        if (token_read(env_file, tok, sizeof tok)) return ADAPTCTL_EXIT_USAGE;
    }
    if (http_client_set_token(cli->http, tok, &err) != ADAPT_OK) {
        fprintf(stderr, "adaptctl %s: %s\n", cli->cmd, err.message);
        return ADAPTCTL_EXIT_USAGE;
    }
    return ADAPTCTL_EXIT_OK;
}

/* ---- one API call ---------------------------------------------------------------------------- */

/* Prints the daemon's refusal ({"error": {"code", "message"}}, or the raw body when it is not
 * that) and returns the exit code of its status class. */
static int report_http_error(const job_cli *cli, const http_client_response *res)
{
    cJSON *doc = cJSON_ParseWithLength(res->body, res->body_len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (cJSON_IsString(msg))
        fprintf(stderr, "adaptctl %s: adaptd answered %d %s: %s\n", cli->cmd, res->status,
                cJSON_IsString(code) ? code->valuestring : "", msg->valuestring);
    else
        fprintf(stderr, "adaptctl %s: adaptd answered %d: %.300s\n", cli->cmd, res->status,
                res->body_len ? res->body : "(no body)");
    if (res->status == 401)
        fprintf(stderr, "adaptctl %s: pass the daemon's token with --token-file (adaptd writes it to "
                "STATE_DIR/token) or $ADAPTD_TOKEN\n", cli->cmd);
    cJSON_Delete(doc);
    return res->status >= 500 ? ADAPTCTL_EXIT_SERVER : ADAPTCTL_EXIT_REFUSED;
}

/* One request. On exit code 0, res holds a 2xx answer and *doc (when doc is non-NULL) its JSON.
 * quiet_unreachable leaves the "cannot reach" message to the caller (watch retries). */
static int job_call_ex(const job_cli *cli, const char *method, const char *target, const char *body,
                       http_client_response *res, cJSON **doc, int quiet_unreachable)
{
    adapt_error err = {0};
    if (doc) *doc = NULL;
    int rc = http_client_request(cli->http, method, target, body ? "application/json" : NULL, body,
                                 body ? strlen(body) : 0, res, &err);
    if (rc != ADAPT_OK) {
        if (!quiet_unreachable || rc == ADAPT_ENOMEM || rc == ADAPT_EINVAL)
            fprintf(stderr, "adaptctl %s: %s\n  (is adaptd running? start it with `adaptd`, or point "
                    "--server / $ADAPTD_URL at it)\n", cli->cmd, err.message);
        return rc == ADAPT_EINVAL ? ADAPTCTL_EXIT_USAGE : ADAPTCTL_EXIT_UNREACHABLE;
    }
    if (res->status < 200 || res->status >= 300) {
        int code = report_http_error(cli, res);
        http_client_response_clear(res);
        return code;
    }
    if (doc && !(*doc = cJSON_ParseWithLength(res->body, res->body_len))) {
        fprintf(stderr, "adaptctl %s: adaptd answered %d with a body that is not JSON: %.200s\n",
                cli->cmd, res->status, res->body);
        http_client_response_clear(res);
        return ADAPTCTL_EXIT_SERVER;
    }
    return ADAPTCTL_EXIT_OK;
}

static int job_call(const job_cli *cli, const char *method, const char *target, const char *body,
                    http_client_response *res, cJSON **doc)
{
    return job_call_ex(cli, method, target, body, res, doc, 0);
}

/* ---- formatting ------------------------------------------------------------------------------ */

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void format_time_ms(double ms, char *buf, size_t size)
{
    if (!(ms > 0)) { snprintf(buf, size, "-"); return; }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void format_duration(double s, char *buf, size_t size)
{
    if (!(s >= 0) || s > 1e9) { snprintf(buf, size, "-"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

static int state_is_terminal(const char *s)
{
    return !strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

static void print_json_body(const http_client_response *res)
{
    fwrite(res->body, 1, res->body_len, stdout);
    if (!res->body_len || res->body[res->body_len - 1] != '\n') putchar('\n');
}

/* ---- submit ---------------------------------------------------------------------------------- */

static int job_watch_loop(job_cli *cli, const char *id, double interval_s);

static const char submit_usage[] =
    "usage: adaptctl submit FILE [--watch] [--json]\n"
    "  FILE     a JobSpec as YAML (.yaml/.yml) or JSON (.json); other names are sniffed\n"
    "  --watch  then follow it as `adaptctl watch` does (exit code from its final state)\n";

int cmd_job_submit(int argc, char **argv)
{
    job_cli cli = { .cmd = "submit", .timeout_s = 30 };
    static const struct option opts[] = { JOB_COMMON_OPTIONS, { "watch", no_argument, 0, OPT_WATCH }, { 0 } };
    int watch = 0, o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = common_option(&cli, o, optarg);
        if (c < 0) return usage_error(&cli, submit_usage, "bad value '%s'", optarg);
        if (c) continue;
        if (o == OPT_WATCH) watch = 1;
        else if (o == OPT_HELP) { printf("%s%s", submit_usage, common_usage); return ADAPTCTL_EXIT_OK; }
        else return usage_error(&cli, submit_usage, "%s", "unknown option");
    }
    if (optind != argc - 1) return usage_error(&cli, submit_usage, "%s", "expects one FILE");
    const char *path = argv[optind];
    adapt_error err = {0};
    cJSON *spec = NULL;
    if (job_yaml_load_file(path, &spec, &err) != ADAPT_OK) {
        fprintf(stderr, "adaptctl submit: %s\n", err.message);
        return ADAPTCTL_EXIT_FAULT;
    }
    if (!cJSON_IsObject(spec)) {
        fprintf(stderr, "adaptctl submit: %s: a job spec is a mapping at the top level "
                "(name, kind, ranks, train: ...)\n", path);
        cJSON_Delete(spec);
        return ADAPTCTL_EXIT_FAULT;
    }
    char *body = job_yaml_print(spec);
    cJSON_Delete(spec);
    if (!body) { fprintf(stderr, "adaptctl submit: out of memory\n"); return ADAPTCTL_EXIT_FAULT; }
    int rc = job_connect(&cli);
    http_client_response res;
    cJSON *doc = NULL;
    if (rc == ADAPTCTL_EXIT_OK) rc = job_call(&cli, "POST", "/v1/jobs", body, &res, &doc);
    free(body);
    if (rc == ADAPTCTL_EXIT_OK) {
        char id[JOB_ID_LEN + 1];
        snprintf(id, sizeof id, "%s", json_str(doc, "id"));
        if (cli.json) print_json_body(&res);
        else printf("%s\n", id);
        fflush(stdout);
        http_client_response_clear(&res);
        cJSON_Delete(doc);
        if (watch) rc = job_watch_loop(&cli, id, 1.0);
    }
    http_client_close(cli.http);
    return rc;
}

/* ---- list ------------------------------------------------------------------------------------ */

static const char list_usage[] =
    "usage: adaptctl list [--state STATE] [--limit N] [--json]\n"
    "  --state STATE  queued, starting, running, succeeded, failed, cancelled, retrying, preempted\n"
    "  --limit N      the first N jobs in submission order (default: all, fetched a page at a time)\n";

static void list_print_row(const cJSON *j)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "progress");
    char step[48] = "-", loss[24] = "-", created[32];
    if (cJSON_IsObject(p)) {
        snprintf(step, sizeof step, "%.0f/%.0f", json_num(p, "step"), json_num(p, "total_steps"));
        snprintf(loss, sizeof loss, "%.4f", json_num(p, "loss"));
    }
    format_time_ms(json_num(j, "created_ms"), created, sizeof created);
    printf("%-32s  %-10s  %-5.0f  %-16.16s  %-11s  %-8s  %s\n", json_str(j, "id"), json_str(j, "state"),
           json_num(j, "ranks"), json_str(j, "name"), step, loss, created);
}

int cmd_job_list(int argc, char **argv)
{
    job_cli cli = { .cmd = "list", .timeout_s = 30 };
    static const struct option opts[] = { JOB_COMMON_OPTIONS, { "state", required_argument, 0, OPT_STATE },
                                          { "limit", required_argument, 0, OPT_LIMIT }, { 0 } };
    const char *state = NULL;
    long limit = -1;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = common_option(&cli, o, optarg);
        if (c < 0) return usage_error(&cli, list_usage, "bad value '%s'", optarg);
        if (c) continue;
        if (o == OPT_STATE) state = optarg;
        else if (o == OPT_LIMIT) {
            if (parse_uint(optarg, 1000000000L, &limit) || limit == 0)
                return usage_error(&cli, list_usage, "--limit wants a positive integer, got '%s'", optarg);
        } else if (o == OPT_HELP) { printf("%s%s", list_usage, common_usage); return ADAPTCTL_EXIT_OK; }
        else return usage_error(&cli, list_usage, "%s", "unknown option");
    }
    if (optind != argc) return usage_error(&cli, list_usage, "unexpected argument '%s'", argv[optind]);
    int rc = job_connect(&cli);
    cJSON *all = cJSON_CreateArray();
    char page_token[64] = "", state_q[96] = "";
    if (state) query_escape(state, state_q, sizeof state_q);
    long shown = 0;
    while (rc == ADAPTCTL_EXIT_OK && (limit < 0 || shown < limit)) {
        long want = limit < 0 || limit - shown > JOB_PAGE_MAX ? JOB_PAGE_MAX : limit - shown;
        char target[300];
        snprintf(target, sizeof target, "/v1/jobs?limit=%ld%s%s%s%s", want, state ? "&state=" : "",
                 state_q, page_token[0] ? "&page_token=" : "", page_token);
        http_client_response res;
        cJSON *doc;
        if ((rc = job_call(&cli, "GET", target, NULL, &res, &doc)) != ADAPTCTL_EXIT_OK) break;
        http_client_response_clear(&res);
        cJSON *jobs = cJSON_GetObjectItemCaseSensitive(doc, "jobs");
        cJSON *j;
        while (cJSON_IsArray(jobs) && (j = cJSON_DetachItemFromArray(jobs, 0)) != NULL) {
            cJSON_AddItemToArray(all, j);
            shown++;
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(doc, "next_page_token");
        int more = cJSON_IsString(next) && next->valuestring[0];
        if (more) query_escape(next->valuestring, page_token, sizeof page_token);
        cJSON_Delete(doc);
        if (!more) break;
    }
    if (rc == ADAPTCTL_EXIT_OK) {
        if (cli.json) {
            cJSON *out = cJSON_CreateObject();
            cJSON_AddItemToObject(out, "jobs", all);
            all = NULL;
            char *text = job_yaml_print(out);
            printf("%s\n", text ? text : "");
            free(text);
            cJSON_Delete(out);
        } else {
            printf("%-32s  %-10s  %-5s  %-16s  %-11s  %-8s  %s\n", "ID", "STATE", "RANKS", "NAME", "STEP",
                   "LOSS", "CREATED");
            const cJSON *j;
            cJSON_ArrayForEach(j, all) list_print_row(j);
        }
    }
    cJSON_Delete(all);
    http_client_close(cli.http);
    return rc;
}

/* ---- status ---------------------------------------------------------------------------------- */

static const char status_usage[] = "usage: adaptctl status ID [--json]\n";

static void status_print(const cJSON *j)
{
    char t1[32], t2[32], t3[32];
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(j, "spec");
    const cJSON *train = cJSON_GetObjectItemCaseSensitive(spec, "train");
    printf("job         %s (%s)\n", json_str(j, "id"), json_str(j, "name"));
    printf("kind        %s, %.0f rank%s, attempt %.0f (restarts allowed: %.0f)\n", json_str(j, "kind"),
           json_num(j, "ranks"), json_num(j, "ranks") == 1 ? "" : "s", json_num(j, "attempt"),
           json_num(j, "max_restarts"));
    printf("state       %s\n", json_str(j, "state"));
    format_time_ms(json_num(j, "created_ms"), t1, sizeof t1);
    format_time_ms(json_num(j, "started_ms"), t2, sizeof t2);
    format_time_ms(json_num(j, "finished_ms"), t3, sizeof t3);
    printf("created     %s\nstarted     %s\nfinished    %s\n", t1, t2, t3);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "progress");
    if (cJSON_IsObject(p)) {
        double step = json_num(p, "step"), total = json_num(p, "total_steps");
        char eta[32];
        format_duration(json_num(p, "eta_seconds"), eta, sizeof eta);
        printf("progress    step %.0f / %.0f (%.0f%%), epoch %.0f, %.0f samples, %.0f tokens\n", step, total,
               total > 0 ? 100.0 * step / total : 0.0, json_num(p, "epoch"), json_num(p, "samples"),
               json_num(p, "tokens"));
        printf("training    loss %.4f, lr %.3g, grad norm %.3g, %.0f tokens/s, %.3f s/step, ETA %s\n",
               json_num(p, "loss"), json_num(p, "lr"), json_num(p, "grad_norm"),
               json_num(p, "tokens_per_second"), json_num(p, "step_seconds"), eta);
    } else {
        printf("progress    -\n");
    }
    if (*json_str(j, "last_checkpoint")) printf("checkpoint  %s\n", json_str(j, "last_checkpoint"));
    if (*json_str(train, "output_dir")) printf("output      %s\n", json_str(train, "output_dir"));
    if (*json_str(j, "error")) printf("error       %s\n", json_str(j, "error"));
}

/* Parses `COMMAND ID [options]` for the commands that take only the common options. */
static int parse_id_command(job_cli *cli, int argc, char **argv, const char *usage, const char **id)
{
    static const struct option opts[] = { JOB_COMMON_OPTIONS, { 0 } };
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = common_option(cli, o, optarg);
        if (c < 0) return usage_error(cli, usage, "bad value '%s'", optarg);
        if (c) continue;
        if (o == OPT_HELP) { printf("%s%s", usage, common_usage); return -1; }
        return usage_error(cli, usage, "%s", "unknown option");
    }
    if (optind != argc - 1) return usage_error(cli, usage, "%s", "expects one job ID");
    *id = argv[optind];
    if (!is_job_id(*id))
        return usage_error(cli, usage, "'%s' is not a job id (32 lowercase hex digits, as submit printed)", *id);
    return ADAPTCTL_EXIT_OK;
}

int cmd_job_status(int argc, char **argv)
{
    job_cli cli = { .cmd = "status", .timeout_s = 30 };
    const char *id;
    int rc = parse_id_command(&cli, argc, argv, status_usage, &id);
    if (rc) return rc < 0 ? ADAPTCTL_EXIT_OK : rc;
    if ((rc = job_connect(&cli)) == ADAPTCTL_EXIT_OK) {
        char target[64];
        snprintf(target, sizeof target, "/v1/jobs/%s", id);
        http_client_response res;
        cJSON *doc;
        if ((rc = job_call(&cli, "GET", target, NULL, &res, &doc)) == ADAPTCTL_EXIT_OK) {
            if (cli.json) print_json_body(&res);
            else status_print(doc);
            cJSON_Delete(doc);
            http_client_response_clear(&res);
        }
    }
    http_client_close(cli.http);
    return rc;
}

/* ---- cancel, checkpoint ---------------------------------------------------------------------- */

static const char cancel_usage[] = "usage: adaptctl cancel ID [--json]\n";
static const char checkpoint_usage[] =
    "usage: adaptctl checkpoint ID [--json]   (ask a running job to checkpoint at its next step)\n";

static int post_action(int argc, char **argv, const char *cmd, const char *usage, const char *action)
{
    job_cli cli = { .cmd = cmd, .timeout_s = 30 };
    const char *id;
    int rc = parse_id_command(&cli, argc, argv, usage, &id);
    if (rc) return rc < 0 ? ADAPTCTL_EXIT_OK : rc;
    if ((rc = job_connect(&cli)) == ADAPTCTL_EXIT_OK) {
        char target[96];
        snprintf(target, sizeof target, "/v1/jobs/%s/%s", id, action);
        http_client_response res;
        if ((rc = job_call(&cli, "POST", target, NULL, &res, NULL)) == ADAPTCTL_EXIT_OK) {
            cJSON *doc = cJSON_ParseWithLength(res.body, res.body_len);
            if (cli.json) print_json_body(&res);
            else if (!strcmp(action, "cancel") && res.status == 202)
                printf("%s stopping: SIGTERM sent, `adaptctl watch %s` shows when it is cancelled\n", id, id);
            else if (!strcmp(action, "cancel")) printf("%s %s\n", id, doc ? json_str(doc, "state") : "cancelled");
            else printf("%s: checkpoint requested\n", id);
            cJSON_Delete(doc);
            http_client_response_clear(&res);
        }
    }
    http_client_close(cli.http);
    return rc;
}

int cmd_job_cancel(int argc, char **argv) { return post_action(argc, argv, "cancel", cancel_usage, "cancel"); }

int cmd_job_checkpoint(int argc, char **argv)
{
    return post_action(argc, argv, "checkpoint", checkpoint_usage, "checkpoint");
}

/* ---- watch ----------------------------------------------------------------------------------- */

static const char watch_usage[] =
    "usage: adaptctl watch ID [--interval SECONDS] [--json]\n"
    "  follows the job until it ends: a live progress line on a terminal, one line per change\n"
    "  otherwise (--json: the job document per change); exit 0 when it succeeded, 1 when it\n"
    "  failed or was cancelled\n";

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

/* One line of progress: state, step/total, [bar] when bar_width > 0, loss, tokens/s, ETA. */
static void watch_line(const cJSON *j, int bar_width, char *out, size_t size)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "progress");
    const char *state = json_str(j, "state");
    if (!cJSON_IsObject(p)) {
        snprintf(out, size, "%s", state);
        if (*json_str(j, "error"))
            snprintf(out + strlen(out), size - strlen(out), ": %s", json_str(j, "error"));
        return;
    }
    double step = json_num(p, "step"), total = json_num(p, "total_steps");
    double frac = total > 0 ? fmin(1.0, step / total) : 0;
    char bar[256] = "", eta[32];
    if (bar_width > 0) {
        if (bar_width > 200) bar_width = 200;
        int fill = (int)(frac * bar_width + 0.5);
        bar[0] = '[';
        for (int i = 0; i < bar_width; i++) bar[1 + i] = i < fill ? '#' : '.';
        bar[1 + bar_width] = ']';
        bar[2 + bar_width] = ' ';
        bar[3 + bar_width] = '\0';
    }
    format_duration(state_is_terminal(state) ? 0 : json_num(p, "eta_seconds"), eta, sizeof eta);
    snprintf(out, size, "%-9s %6.0f/%-6.0f %s%3.0f%%  loss %.4f  %.0f tok/s  ETA %s", state, step, total, bar,
             100 * frac, json_num(p, "loss"), json_num(p, "tokens_per_second"), eta);
    if (*json_str(j, "error"))
        snprintf(out + strlen(out), size - strlen(out), "  (%s)", json_str(j, "error"));
}

/* Ctrl-C during a live line: end the line first so the shell prompt starts on its own, then die
 * of the signal as the caller expects (write and raise are async-signal-safe). */
static void watch_on_interrupt(int signum)
{
    ssize_t w = write(STDOUT_FILENO, "\n", 1);
    (void)w;
    signal(signum, SIG_DFL);
    raise(signum);
}

static int job_watch_loop(job_cli *cli, const char *id, double interval_s)
{
    int tty = isatty(STDOUT_FILENO) && !cli->json;
    if (tty) signal(SIGINT, watch_on_interrupt);
    char target[64], last[512] = "";
    snprintf(target, sizeof target, "/v1/jobs/%s", id);
    int64_t unreachable_since = -1;
    for (;;) {
        http_client_response res;
        cJSON *doc;
        int rc = job_call_ex(cli, "GET", target, NULL, &res, &doc, 1);
        if (rc == ADAPTCTL_EXIT_UNREACHABLE) {
            /* adaptd restarting (it re-adopts running jobs) is not the job's end: wait a while */
            int64_t now = monotonic_ms();
            if (unreachable_since < 0) {
                unreachable_since = now;
                fprintf(stderr, "%sadaptctl watch: adaptd at %s does not answer; retrying for %d s\n",
                        tty ? "\n" : "", http_client_url(cli->http), JOB_UNREACHABLE_PATIENCE_MS / 1000);
            }
            if (now - unreachable_since > JOB_UNREACHABLE_PATIENCE_MS) {
                fprintf(stderr, "adaptctl watch: cannot reach adaptd at %s\n", http_client_url(cli->http));
                return ADAPTCTL_EXIT_UNREACHABLE;
            }
            sleep_ms((long)(interval_s * 1000));
            continue;
        }
        if (rc != ADAPTCTL_EXIT_OK) return rc;
        unreachable_since = -1;
        const char *state = json_str(doc, "state");
        int done = state_is_terminal(state);
        char line[512];
        if (tty) {
            int width = terminal_width();
            watch_line(doc, 0, line, sizeof line);
            int bar = width - 1 - (int)strlen(line) - 3;
            watch_line(doc, bar >= 10 ? (bar > 40 ? 40 : bar) : 0, line, sizeof line);
            printf("\r%.*s\033[K%s", width - 1, line, done ? "\n" : "");
            fflush(stdout);
        } else {
            /* a new line per update of the job (state, attempt, step), not per poll: ETA and
             * tokens/s move on every poll and would fill a log file with repeats */
            char key[512];
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(doc, "progress");
            snprintf(key, sizeof key, "%s %.0f %.0f %s", state, json_num(doc, "attempt"),
                     cJSON_IsObject(p) ? json_num(p, "step") : -1.0, json_str(doc, "error"));
            if (strcmp(key, last)) {
                watch_line(doc, 0, line, sizeof line);
                if (cli->json) print_json_body(&res);
                else printf("%s\n", line);
                fflush(stdout);
                snprintf(last, sizeof last, "%s", key);
            }
        }
        int exit_code = !strcmp(state, "succeeded") ? ADAPTCTL_EXIT_OK : ADAPTCTL_EXIT_FAULT;
        if (done && exit_code != ADAPTCTL_EXIT_OK && !cli->json)
            fprintf(stderr, "adaptctl watch: job %s %s%s%s\n", id, state, *json_str(doc, "error") ? ": " : "",
                    json_str(doc, "error"));
        cJSON_Delete(doc);
        http_client_response_clear(&res);
        if (done) return exit_code;
        sleep_ms((long)(interval_s * 1000));
    }
}

int cmd_job_watch(int argc, char **argv)
{
    job_cli cli = { .cmd = "watch", .timeout_s = 30 };
    static const struct option opts[] = { JOB_COMMON_OPTIONS,
                                          { "interval", required_argument, 0, OPT_INTERVAL }, { 0 } };
    double interval = 1.0;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = common_option(&cli, o, optarg);
        if (c < 0) return usage_error(&cli, watch_usage, "bad value '%s'", optarg);
        if (c) continue;
        if (o == OPT_INTERVAL) {
            char *end;
            interval = strtod(optarg, &end);
            if (*end || !(interval >= 0.05 && interval <= 3600))
                return usage_error(&cli, watch_usage, "--interval wants seconds in [0.05, 3600], got '%s'", optarg);
        } else if (o == OPT_HELP) { printf("%s%s", watch_usage, common_usage); return ADAPTCTL_EXIT_OK; }
        else return usage_error(&cli, watch_usage, "%s", "unknown option");
    }
    if (optind != argc - 1) return usage_error(&cli, watch_usage, "%s", "expects one job ID");
    const char *id = argv[optind];
    if (!is_job_id(id)) return usage_error(&cli, watch_usage, "'%s' is not a job id", id);
    int rc = job_connect(&cli);
    if (rc == ADAPTCTL_EXIT_OK) rc = job_watch_loop(&cli, id, interval);
    http_client_close(cli.http);
    return rc;
}

/* ---- logs ------------------------------------------------------------------------------------ */

static const char logs_usage[] =
    "usage: adaptctl logs ID [--rank R] [--tail N] [--attempt A] [-f] [--json]\n"
    "  --rank R     a worker rank (default 0) or 'launcher' for the launcher's own output\n"
    "  --tail N     only the last N lines\n"
    "  --attempt A  an earlier attempt's logs (default: the current one)\n"
    "  -f           keep printing what is appended until the job ends\n"
    "  --json       {\"job_id\", \"rank\", \"offset\", \"text\"} per chunk, one per line\n";

typedef struct logs_args {
    const char *id, *rank;
    long tail, attempt;
    int follow;
    double interval;
} logs_args;

/* Fetches one chunk and prints it; *offset is advanced from X-Log-Offset (-1 when the daemon
 * did not send one). */
static int logs_fetch(const job_cli *cli, const logs_args *a, long long *offset, int first)
{
    char target[256], rank_q[64];
    query_escape(a->rank, rank_q, sizeof rank_q);
    int n = snprintf(target, sizeof target, "/v1/jobs/%s/logs?rank=%s", a->id, rank_q);
    if (first && a->tail >= 0) n += snprintf(target + n, sizeof target - (size_t)n, "&tail=%ld", a->tail);
    if (!first && *offset >= 0) n += snprintf(target + n, sizeof target - (size_t)n, "&offset=%lld", *offset);
    if (a->attempt >= 0) snprintf(target + n, sizeof target - (size_t)n, "&attempt=%ld", a->attempt);
    http_client_response res;
    int rc = job_call(cli, "GET", target, NULL, &res, NULL);
    if (rc != ADAPTCTL_EXIT_OK) return rc;
    const char *h = http_client_header(&res, "X-Log-Offset");
    char *end = NULL;
    long long next = h ? strtoll(h, &end, 10) : -1;
    if (!h || *end || next < 0) next = -1;
    if (cli->json) {
        if (res.body_len || first) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "job_id", a->id);
            cJSON_AddStringToObject(o, "rank", a->rank);
            cJSON_AddNumberToObject(o, "offset", (double)next);
            cJSON_AddStringToObject(o, "text", res.body);
            char *text = job_yaml_print(o);
            printf("%s\n", text ? text : "");
            free(text);
            cJSON_Delete(o);
        }
    } else {
        fwrite(res.body, 1, res.body_len, stdout);
    }
    fflush(stdout);
    http_client_response_clear(&res);
    *offset = next;
    return ADAPTCTL_EXIT_OK;
}

/* -f on a job still queued: its logs appear when it starts (attempt 1), so wait for that. */
static int logs_wait_start(const job_cli *cli, const logs_args *a)
{
    char target[64];
    snprintf(target, sizeof target, "/v1/jobs/%s", a->id);
    for (;;) {
        http_client_response res;
        cJSON *doc;
        int rc = job_call(cli, "GET", target, NULL, &res, &doc);
        if (rc != ADAPTCTL_EXIT_OK) return rc;
        int started = json_num(doc, "attempt") >= 1 || state_is_terminal(json_str(doc, "state"));
        cJSON_Delete(doc);
        http_client_response_clear(&res);
        if (started) return ADAPTCTL_EXIT_OK;
        sleep_ms((long)(a->interval * 1000));
    }
}

static int logs_follow(const job_cli *cli, const logs_args *a, long long offset)
{
    char target[64];
    snprintf(target, sizeof target, "/v1/jobs/%s", a->id);
    if (offset < 0) {
        fprintf(stderr, "adaptctl logs: adaptd sent no X-Log-Offset header: cannot follow\n");
        return ADAPTCTL_EXIT_SERVER;
    }
    for (;;) {
        /* the state first: a job that ended before this fetch has all of its output in it */
        http_client_response res;
        cJSON *doc;
        int rc = job_call(cli, "GET", target, NULL, &res, &doc);
        if (rc != ADAPTCTL_EXIT_OK) return rc;
        int done = state_is_terminal(json_str(doc, "state"));
        cJSON_Delete(doc);
        http_client_response_clear(&res);
        if ((rc = logs_fetch(cli, a, &offset, 0)) != ADAPTCTL_EXIT_OK) return rc;
        if (done) return ADAPTCTL_EXIT_OK;
        if (offset < 0) {
            fprintf(stderr, "adaptctl logs: adaptd sent no X-Log-Offset header: cannot follow\n");
            return ADAPTCTL_EXIT_SERVER;
        }
        sleep_ms((long)(a->interval * 1000));
    }
}

int cmd_job_logs(int argc, char **argv)
{
    job_cli cli = { .cmd = "logs", .timeout_s = 30 };
    static const struct option opts[] = { JOB_COMMON_OPTIONS,
        { "rank", required_argument, 0, OPT_RANK },       { "tail", required_argument, 0, OPT_TAIL },
        { "attempt", required_argument, 0, OPT_ATTEMPT }, { "follow", no_argument, 0, OPT_FOLLOW },
        { "interval", required_argument, 0, OPT_INTERVAL }, { 0 } };
    logs_args a = { .rank = "0", .tail = -1, .attempt = -1, .interval = 1.0 };
    long v;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        int c = common_option(&cli, o, optarg);
        if (c < 0) return usage_error(&cli, logs_usage, "bad value '%s'", optarg);
        if (c) continue;
        switch (o) {
        case OPT_RANK:
            if (strcmp(optarg, "launcher") && parse_uint(optarg, 1 << 20, &v))
                return usage_error(&cli, logs_usage, "--rank wants a rank number or 'launcher', got '%s'", optarg);
            a.rank = optarg;
            break;
        case OPT_TAIL:
            if (parse_uint(optarg, 1L << 30, &a.tail))
                return usage_error(&cli, logs_usage, "--tail wants a line count, got '%s'", optarg);
            break;
        case OPT_ATTEMPT:
            if (parse_uint(optarg, 1L << 20, &a.attempt))
                return usage_error(&cli, logs_usage, "--attempt wants a number, got '%s'", optarg);
            break;
        case OPT_INTERVAL: {
            char *end;
            a.interval = strtod(optarg, &end);
            if (*end || !(a.interval >= 0.05 && a.interval <= 3600))
                return usage_error(&cli, logs_usage, "--interval wants seconds in [0.05, 3600], got '%s'", optarg);
            break;
        }
        case 'f': case OPT_FOLLOW: a.follow = 1; break;
        case OPT_HELP: printf("%s%s", logs_usage, common_usage); return ADAPTCTL_EXIT_OK;
        default: return usage_error(&cli, logs_usage, "%s", "unknown option");
        }
    }
    if (optind != argc - 1) return usage_error(&cli, logs_usage, "%s", "expects one job ID");
    a.id = argv[optind];
    if (!is_job_id(a.id)) return usage_error(&cli, logs_usage, "'%s' is not a job id", a.id);
    int rc = job_connect(&cli);
    if (rc == ADAPTCTL_EXIT_OK && a.follow) rc = logs_wait_start(&cli, &a);
    long long offset = -1, before = -1;
    if (rc == ADAPTCTL_EXIT_OK) rc = logs_fetch(&cli, &a, &offset, 1);
    /* without --tail the daemon sends at most 1 MiB at a time: read on to the end */
    while (rc == ADAPTCTL_EXIT_OK && !a.follow && a.tail < 0 && offset > before) {
        before = offset;
        rc = logs_fetch(&cli, &a, &offset, 0);
    }
    if (rc == ADAPTCTL_EXIT_OK && a.follow) rc = logs_follow(&cli, &a, offset);
    http_client_close(cli.http);
    return rc;
}
