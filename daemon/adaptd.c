/* adaptd: the job service's main — options, state dir, token, listeners, the event loop.
 *
 * The one idea: main owns every piece (store, API, HTTP server, worker link) and the one
 * libuv loop they share; nothing is global, and a SIGINT/SIGTERM closes the pieces in reverse
 * order and lets the loop run their close callbacks before exit. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "api.h"
#include "http_server.h"
#include "job_store.h"
#include "link.h"
#include "scheduler.h"

enum { MAX_LISTEN = 8 };

typedef struct options {
    const char *listen[MAX_LISTEN];
    int         nlisten;
    char        state_dir[PATH_MAX];
    char        token_file[PATH_MAX];
    char        data_root[PATH_MAX];
    unsigned    slots;
    int         require_token;
    http_limits limits;
    char        mpirun[PATH_MAX];
    char        worker[PATH_MAX];
    uint64_t    kill_grace_ms;
    uint64_t    heartbeat_timeout_s;
    char        slurm[5][PATH_MAX];   /* --slurm-template, --sbatch, --squeue, --scancel, --sacct */
    uint64_t    slurm_poll_ms;
    int         hold;
} options;

typedef struct daemon_ctx {
    uv_loop_t      *loop;
    job_store_t    *store;
    api_t          *api;
    http_server_t  *http;
    link_server_t  *link;
    scheduler_t    *sched;
    uv_signal_t     sigint, sigterm;
} daemon_ctx;

static void usage(FILE *f)
{
    http_limits d;
    http_limits_default(&d);
    fprintf(f,
        "usage: adaptd [options]\n"
        "  --listen HOST:PORT | [V6]:PORT | unix:PATH   (repeatable; default 127.0.0.1:8642)\n"
        "  --state-dir DIR      SQLite, job folders, worker link socket\n"
        "                       (default $XDG_STATE_HOME/adaptd or ~/.local/state/adaptd)\n"
        "  --data-root DIR      every path in a job spec must resolve inside it (default: cwd)\n"
        "  --slots N            ranks that may run at once (default: CPUs)\n"
        "  --token-file FILE    bearer token for mutating endpoints (default STATE_DIR/token;\n"
        "                       required when listening beyond loopback; created 0600)\n"
        "  --require-token      require the token even on loopback / Unix sockets (as does\n"
        "                       naming --token-file)\n"
        "  --max-connections N  (default %d)      --max-body-bytes N   (default %zu)\n"
        "  --max-header-bytes N (default %zu)     --header-timeout-ms N (default %llu)\n"
        "  --body-timeout-ms N  (default %llu)    --idle-timeout-ms N  (default %llu)\n"
        "  --mpirun PATH        starts each attempt's ranks (default: mpirun in PATH)\n"
        "  --worker PATH        adapt-worker (default: next to adaptd, then ../worker/ in a\n"
        "                       build tree, then PATH)\n"
        "  --kill-grace-ms N    cancel: SIGTERM, then SIGKILL after N ms (default 10000)\n"
        "  --heartbeat-timeout S  a job silent on the worker link for S seconds is killed and\n"
        "                       retried (default 60)\n"
        "  --slurm-template FILE  lets jobs use launcher \"slurm\": each attempt is this sbatch\n"
        "                       template rendered (deploy/slurm/adaptd-job.sbatch.in)\n"
        "  --sbatch, --squeue, --scancel, --sacct PATH  the Slurm commands (default: PATH)\n"
        "  --slurm-poll-ms N    squeue period (default 5000)\n"
        "  --hold               queue submitted jobs but start none (maintenance); jobs already\n"
        "                       started run on, and are retried\n"
        "SIGTERM or SIGINT stops adaptd and leaves running jobs running: the next adaptd on the\n"
        "same --state-dir adopts them.\n",
        d.max_connections, d.max_body_bytes, d.max_header_bytes,
        (unsigned long long)d.header_timeout_ms, (unsigned long long)d.body_timeout_ms,
        (unsigned long long)d.idle_timeout_ms);
}

static int parse_count(const char *opt, const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s || s[0] == '-' || v == 0 || v > max) {
        fprintf(stderr, "adaptd: %s %s: expected an integer in [1, %llu]\n", opt, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int default_state_dir(char *out, size_t size)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    int n = xdg && xdg[0] ? snprintf(out, size, "%s/adaptd", xdg)
          : home && home[0] ? snprintf(out, size, "%s/.local/state/adaptd", home) : -1;
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "adaptd: neither XDG_STATE_HOME nor HOME is set: pass --state-dir\n");
        return -1;
    }
    return 0;
}

/* The default adapt-worker: installed next to adaptd, or in a build tree (build/daemon/adaptd
 * and build/worker/adapt-worker), else found in PATH when a job starts. */
static void default_worker(char *out, size_t size)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            static const char *const rel[] = { "adapt-worker", "../worker/adapt-worker" };
            for (size_t i = 0; i < 2; i++) {
                if ((size_t)snprintf(out, size, "%s/%s", self, rel[i]) < size && access(out, X_OK) == 0)
                    return;
            }
        }
    }
    snprintf(out, size, "adapt-worker");
}

static int parse_options(int argc, char **argv, options *o)
{
    enum { O_STATE = 256, O_TOKEN, O_DATA, O_SLOTS, O_REQTOKEN, O_MAXCONN, O_MAXBODY, O_MAXHEAD,
           O_HTO, O_BTO, O_ITO, O_MPIRUN, O_WORKER, O_GRACE, O_HEARTBEAT, O_STEMPLATE,
           O_SBATCH, O_SQUEUE, O_SCANCEL, O_SACCT, O_SPOLL, O_HOLD };
    static const struct option longopts[] = {
        { "listen", 1, 0, 'l' },          { "state-dir", 1, 0, O_STATE },
        { "token-file", 1, 0, O_TOKEN },  { "data-root", 1, 0, O_DATA },
        { "slots", 1, 0, O_SLOTS },       { "require-token", 0, 0, O_REQTOKEN },
        { "max-connections", 1, 0, O_MAXCONN }, { "max-body-bytes", 1, 0, O_MAXBODY },
        { "max-header-bytes", 1, 0, O_MAXHEAD }, { "header-timeout-ms", 1, 0, O_HTO },
        { "body-timeout-ms", 1, 0, O_BTO }, { "idle-timeout-ms", 1, 0, O_ITO },
        { "mpirun", 1, 0, O_MPIRUN },     { "worker", 1, 0, O_WORKER },
        { "kill-grace-ms", 1, 0, O_GRACE }, { "heartbeat-timeout", 1, 0, O_HEARTBEAT },
        { "slurm-template", 1, 0, O_STEMPLATE }, { "sbatch", 1, 0, O_SBATCH },
        { "squeue", 1, 0, O_SQUEUE },     { "scancel", 1, 0, O_SCANCEL },
        { "sacct", 1, 0, O_SACCT },       { "slurm-poll-ms", 1, 0, O_SPOLL },
        { "hold", 0, 0, O_HOLD },
        { "help", 0, 0, 'h' },            { 0, 0, 0, 0 },
    };
    memset(o, 0, sizeof *o);
    http_limits_default(&o->limits);
    o->slots = uv_available_parallelism();
    o->kill_grace_ms = 10000;
    o->heartbeat_timeout_s = 60;
    unsigned long long v;
    int c;
    while ((c = getopt_long(argc, argv, "l:h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'l':
            if (o->nlisten == MAX_LISTEN) { fprintf(stderr, "adaptd: at most %d --listen\n", MAX_LISTEN); return -1; }
            o->listen[o->nlisten++] = optarg;
            break;
        case O_STATE: snprintf(o->state_dir, sizeof o->state_dir, "%s", optarg); break;
        case O_TOKEN: snprintf(o->token_file, sizeof o->token_file, "%s", optarg); break;
        case O_DATA:  snprintf(o->data_root, sizeof o->data_root, "%s", optarg); break;
        case O_REQTOKEN: o->require_token = 1; break;
        case O_SLOTS:   bad = parse_count("--slots", optarg, 1u << 20, &v); o->slots = (unsigned)v; break;
        case O_MAXCONN: bad = parse_count("--max-connections", optarg, 1u << 20, &v);
                        o->limits.max_connections = (int)v; break;
        case O_MAXBODY: bad = parse_count("--max-body-bytes", optarg, 1ull << 30, &v);
                        o->limits.max_body_bytes = v; break;
        case O_MAXHEAD: bad = parse_count("--max-header-bytes", optarg, 1u << 20, &v);
                        o->limits.max_header_bytes = v; break;
        case O_HTO: bad = parse_count("--header-timeout-ms", optarg, 3600000, &v); o->limits.header_timeout_ms = v; break;
        case O_BTO: bad = parse_count("--body-timeout-ms", optarg, 3600000, &v); o->limits.body_timeout_ms = v; break;
        case O_ITO: bad = parse_count("--idle-timeout-ms", optarg, 3600000, &v); o->limits.idle_timeout_ms = v; break;
        case O_MPIRUN: snprintf(o->mpirun, sizeof o->mpirun, "%s", optarg); break;
        case O_WORKER: snprintf(o->worker, sizeof o->worker, "%s", optarg); break;
        case O_GRACE: bad = parse_count("--kill-grace-ms", optarg, 3600000, &v); o->kill_grace_ms = v; break;
        case O_HEARTBEAT: bad = parse_count("--heartbeat-timeout", optarg, 86400, &v); o->heartbeat_timeout_s = v; break;
        case O_STEMPLATE: case O_SBATCH: case O_SQUEUE: case O_SCANCEL: case O_SACCT:
            snprintf(o->slurm[c - O_STEMPLATE], PATH_MAX, "%s", optarg);
            break;
        case O_HOLD: o->hold = 1; break;
        case O_SPOLL: bad = parse_count("--slurm-poll-ms", optarg, 3600000, &v); o->slurm_poll_ms = v; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (bad) return -1;
    }
    if (optind < argc) { fprintf(stderr, "adaptd: unexpected argument %s\n", argv[optind]); return -1; }
    if (o->nlisten == 0) o->listen[o->nlisten++] = "127.0.0.1:8642";
    if (!o->state_dir[0] && default_state_dir(o->state_dir, sizeof o->state_dir) != 0) return -1;
    if (!o->data_root[0] && !getcwd(o->data_root, sizeof o->data_root)) return -1;
    if (!o->worker[0]) default_worker(o->worker, sizeof o->worker);
    if (!o->mpirun[0]) snprintf(o->mpirun, sizeof o->mpirun, "mpirun");
    /* attempts run in their job's folder: a relative path must be made absolute now */
    char *paths[7] = { o->worker, o->mpirun, o->slurm[0], o->slurm[1], o->slurm[2], o->slurm[3],
                       o->slurm[4] };
    static const char *const names[7] = { "--worker", "--mpirun", "--slurm-template", "--sbatch",
                                          "--squeue", "--scancel", "--sacct" };
    for (int i = 0; i < 7; i++) {
        char abs[PATH_MAX];
        if (!strchr(paths[i], '/')) continue;
        errno = 0;
        if (!realpath(paths[i], abs) || access(abs, i == 2 ? R_OK : X_OK) != 0) {
            fprintf(stderr, "adaptd: %s %s: %s\n", names[i], paths[i], strerror(errno ? errno : EACCES));
            return -1;
        }
        snprintf(paths[i], PATH_MAX, "%s", abs);
    }
    return 0;
}

/* Splits HOST:PORT or [V6]:PORT; host is written without brackets. */
static int split_host_port(const char *spec, char *host, size_t size, int *port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon) return -1;
    const char *h = spec;
    size_t hlen = (size_t)(colon - spec);
    if (h[0] == '[') {
        if (hlen < 2 || spec[hlen - 1] != ']') return -1;
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= size) return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

static int is_loopback(const char *host)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1) return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) == 1) return memcmp(a, in6addr_loopback.s6_addr, 16) == 0;
    return 0;
}

/* Creates the state dir and its parents, owner-only. */
static int mkdir_parents(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char keep = *s;
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                fprintf(stderr, "adaptd: creating %s: %s\n", p, strerror(errno));
                return -1;
            }
            *s = keep;
            if (!keep) return 0;
        }
    }
}

/* Reads the token, or creates it (O_EXCL, 0600) on first start. A token readable by group or
 * others is refused: it would no longer be a secret. */
static int token_load(const char *path, char *tok, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        unsigned char raw[32];
        if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) return -1;
        for (size_t i = 0; i < sizeof raw; i++) snprintf(tok + 2 * i, 3, "%02x", raw[i]);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, tok, 64) != 64 || write(fd, "\n", 1) != 1 || close(fd) != 0) {
            fprintf(stderr, "adaptd: creating token file %s: %s\n", path, strerror(errno));
            return -1;
        }
        fprintf(stderr, "adaptd: created token file %s (mode 0600)\n", path);
        return 0;
    }
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "adaptd: token file %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        fprintf(stderr, "adaptd: token file %s is readable by others (mode %03o): chmod 600 it\n",
                path, st.st_mode & 0777);
        close(fd);
        return -1;
    }
    ssize_t n = read(fd, tok, size - 1);
    close(fd);
    if (n <= 0) { fprintf(stderr, "adaptd: token file %s is empty\n", path); return -1; }
    tok[n] = '\0';
    tok[strcspn(tok, "\r\n")] = '\0';
    if (strlen(tok) < 16) { fprintf(stderr, "adaptd: token in %s is shorter than 16 bytes\n", path); return -1; }
    return 0;
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_ctx *d = s->data;
    fprintf(stderr, "adaptd: signal %d, shutting down; running jobs keep running\n", signum);
    http_server_close(d->http);
    link_server_close(d->link);
    scheduler_close(d->sched);
    d->sched = NULL;
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
}

static int start_listeners(const options *o, daemon_ctx *d, int *need_token)
{
    adapt_error err = {0};
    for (int i = 0; i < o->nlisten; i++) {
        const char *l = o->listen[i];
        int rc;
        if (strncmp(l, "unix:", 5) == 0) {
            rc = http_server_listen_unix(d->http, l + 5, &err);
            if (rc == ADAPT_OK) printf("adaptd: listening on unix:%s\n", l + 5);
        } else {
            char host[256];
            int port;
            if (split_host_port(l, host, sizeof host, &port) != 0) {
                fprintf(stderr, "adaptd: --listen %s: expected HOST:PORT, [V6]:PORT or unix:PATH\n", l);
                return -1;
            }
            if (!is_loopback(host)) *need_token = 1;
            int bound = 0;
            rc = http_server_listen_tcp(d->http, host, port, &bound, &err);
            if (rc == ADAPT_OK)
                printf("adaptd: listening on http://%s%s%s:%d\n", strchr(host, ':') ? "[" : "", host,
                       strchr(host, ':') ? "]" : "", bound);
        }
        if (rc != ADAPT_OK) { fprintf(stderr, "adaptd: %s\n", err.message); return -1; }
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_options(argc, argv, &o) != 0 || mkdir_parents(o.state_dir) != 0) return 2;
    daemon_ctx d = { .loop = uv_default_loop() };
    adapt_error err = {0};
    int need_token = o.require_token || o.token_file[0], rc = 1;   /* naming a token file asks for it */
    char token[256] = "", link_path[PATH_MAX + 16];
    if (job_store_open(&d.store, o.state_dir, &err) != ADAPT_OK) {
        fprintf(stderr, "adaptd: %s\n", err.message);
        return 1;
    }
    /* Before any listener says "listening on": whoever starts adaptd may stop it as soon as it
     * reads that line, and a SIGTERM then must shut down cleanly (exit 0), not kill it. A signal
     * that comes during the setup below waits in the loop for uv_run. */
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sigterm);
    d.sigint.data = d.sigterm.data = &d;
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    if (http_server_init(&d.http, d.loop, &o.limits, api_handle, NULL, &err) != ADAPT_OK ||
        start_listeners(&o, &d, &need_token) != 0)
        goto out;
    if (need_token) {
        if (!o.token_file[0] && (size_t)snprintf(o.token_file, sizeof o.token_file, "%.4000s/token",
                                                 o.state_dir) >= sizeof o.token_file)
            goto out;
        if (token_load(o.token_file, token, sizeof token) != 0) goto out;
    }
    snprintf(link_path, sizeof link_path, "%s/link.sock", o.state_dir);
    scheduler_config sc = { .store = d.store, .slots = o.slots, .link_path = link_path,
                            .mpirun = o.mpirun, .worker = o.worker, .kill_grace_ms = o.kill_grace_ms,
                            .heartbeat_timeout_ms = o.heartbeat_timeout_s * 1000, .poll_ms = 500,
                            .slurm_poll_ms = o.slurm_poll_ms, .hold = o.hold };
    const char **slurm_cfg[5] = { &sc.slurm_template, &sc.sbatch, &sc.squeue, &sc.scancel, &sc.sacct };
    for (int i = 0; i < 5; i++) *slurm_cfg[i] = o.slurm[i][0] ? o.slurm[i] : NULL;
    if (scheduler_init(&d.sched, d.loop, &sc, &err) != ADAPT_OK) goto out;
    api_config cfg = { .store = d.store, .http = d.http, .data_root = o.data_root, .slots = o.slots,
                       .token = need_token ? token : NULL, .version = ADAPT_VERSION,
                       .sched = d.sched };
    if (api_init(&d.api, &cfg, &err) != ADAPT_OK) goto out;
    http_server_set_context(d.http, d.api);
    link_handlers lh = { .on_frame = scheduler_on_frame, .on_close = scheduler_on_close, .ctx = d.sched };
    if (link_server_init(&d.link, d.loop, link_path, LINK_MAX_FRAME, &lh, &err) != ADAPT_OK) goto out;
    /* after the link listens: an adopted worker that reconnects finds it */
    if (scheduler_recover(d.sched, &err) != ADAPT_OK) goto out;
    printf("adaptd: worker link on %s; state in %s; data root %s; %u slots%s\n", link_path,
           o.state_dir, o.data_root, o.slots, need_token ? "; token required for changes" : "");
    printf("adaptd: jobs run as %s -np N ... %s KIND --spec SPEC%s\n", o.mpirun, o.worker,
           o.hold ? " (--hold: none starts)" : "");
    fflush(stdout);
    uv_run(d.loop, UV_RUN_DEFAULT);
    d.http = NULL;
    d.link = NULL;
    rc = 0;
out:
    if (rc != 0 && err.message[0]) fprintf(stderr, "adaptd: %s\n", err.message);
    if (rc != 0) {   /* a failed setup: the signal handlers are still open */
        uv_close((uv_handle_t *)&d.sigint, NULL);
        uv_close((uv_handle_t *)&d.sigterm, NULL);
    }
    if (d.http) http_server_close(d.http);
    if (d.link) link_server_close(d.link);
    scheduler_close(d.sched);
    uv_run(d.loop, UV_RUN_NOWAIT);
    api_close(d.api);
    job_store_close(d.store);
    uv_loop_close(d.loop);
    return rc;
}
