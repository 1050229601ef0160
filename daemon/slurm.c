/* slurm: the template renderer, the asynchronous Slurm commands and the poll loop; see slurm.h.
 *
 * Design: a job is a small state machine (submitting → watching → done) driven by the results
 * of child commands; each command owns its process, two pipes and a time-out timer and frees
 * itself, and the job is freed when its own timers and every command it started are closed. */
#include "slurm.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_io.h"

enum { CMD_OUT_MAX = 64 * 1024, SLURM_ID_MAX = 63, TEMPLATE_MAX = 1 << 20 };

typedef enum cmd_kind { CMD_SBATCH, CMD_SQUEUE, CMD_SACCT, CMD_SCANCEL } cmd_kind;

typedef struct slurm_cmd slurm_cmd;

struct slurm_job {
    uv_loop_t    *loop;
    char          id[SLURM_ID_MAX + 1];
    char         *sbatch, *squeue, *scancel, *sacct;
    uint64_t      poll_ms, grace_ms;
    slurm_exit_fn on_exit;
    void         *ctx;
    uv_timer_t    poll, grace;
    int           timers_open;   /* closed once the job is done */
    int           cmds_open;     /* commands whose handles are not yet closed */
    slurm_cmd    *cmds;          /* those still running, to kill when the job ends */
    int           done;          /* on_exit fired, or detached */
    int           polling;       /* a squeue/sacct round is in flight */
    int           stop_requested, term_sent;
    int           lost_polls;
    char          error[1024];
};

struct slurm_cmd {
    uv_process_t  proc;
    uv_pipe_t     out, err;
    uv_timer_t    timeout;
    slurm_job_t  *job;
    slurm_cmd    *next;
    cmd_kind      kind;
    char          obuf[CMD_OUT_MAX + 1], ebuf[CMD_OUT_MAX + 1];
    size_t        olen, elen;
    int64_t       exit_status;
    int           term_signal;
    int           pending;       /* exit + two EOFs still to come */
    int           handles;       /* open uv handles */
};

/* ---- rendering ----------------------------------------------------------------------------- */

typedef struct strbuf { char *s; size_t len, cap; int oom; } strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = 1; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Single-quoted for sh: every byte literal, a ' written as '\'' */
static void sb_quote(strbuf *b, const char *s)
{
    sb_puts(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'') sb_puts(b, "'\\''");
        else sb_add(b, p, 1);
    }
    sb_puts(b, "'");
}

static int env_name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return 0;
    return 1;
}

/* Values that land in #SBATCH lines, which sbatch reads unquoted. */
static int sbatch_value_ok(const char *s, const char *extra)
{
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (isspace((unsigned char)*p) || *p == '%' || *p == '"' || *p == '\'' || *p == '\\' ||
            *p == '@' || (unsigned char)*p < 0x20 || (!isalnum((unsigned char)*p) && !strchr(extra, *p)))
            return 0;
    return 1;
}

int slurm_render(const char *tmpl, const slurm_spec *s, char **out, adapt_error *err)
{
    *out = NULL;
    if (!s->job_id || !sbatch_value_ok(s->job_id, "-_."))
        return adapt_fail(err, ADAPT_EINVAL, "slurm: job id \"%s\" must be letters, digits, '-', "
                          "'_' or '.'", s->job_id ? s->job_id : "");
    if (!s->log_dir || s->log_dir[0] != '/' || !sbatch_value_ok(s->log_dir, "/-_.+,:="))
        return adapt_fail(err, ADAPT_EINVAL, "slurm: log dir \"%s\" must be an absolute path "
                          "without spaces, quotes, '%%' or '@' (it goes into #SBATCH lines)",
                          s->log_dir ? s->log_dir : "");
    if (s->ranks == 0) return adapt_fail(err, ADAPT_EINVAL, "slurm: ranks must be at least 1");
    if (!s->worker_argv || !s->worker_argv[0])
        return adapt_fail(err, ADAPT_EINVAL, "slurm: no worker command line");
    if (!strstr(tmpl, "@WORKER@"))
        return adapt_fail(err, ADAPT_EINVAL, "slurm: template %s has no @WORKER@ (the srun line "
                          "that starts the ranks)", s->template_path ? s->template_path : "");
    for (const char *const *e = s->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !env_name_ok(*e, (size_t)(eq - *e)) || strchr(eq, '\n'))
            return adapt_fail(err, ADAPT_EINVAL, "slurm: environment entry \"%s\" is not "
                              "NAME=value with a shell variable name and one line", *e);
    }
    char num[32];
    strbuf b = {0};
    for (const char *p = tmpl; *p;) {
        const char *at = strchr(p, '@');
        if (!at) { sb_puts(&b, p); break; }
        sb_add(&b, p, (size_t)(at - p));
        p = at;
        if (!strncmp(p, "@JOB_ID@", 8)) { sb_puts(&b, s->job_id); p += 8; }
        else if (!strncmp(p, "@ATTEMPT@", 9)) {
            snprintf(num, sizeof num, "%" PRIu32, s->attempt);
            sb_puts(&b, num);
            p += 9;
        } else if (!strncmp(p, "@RANKS@", 7)) {
            snprintf(num, sizeof num, "%" PRIu32, s->ranks);
            sb_puts(&b, num);
            p += 7;
        } else if (!strncmp(p, "@LOG_DIR_SH@", 12)) { sb_quote(&b, s->log_dir); p += 12; }
        else if (!strncmp(p, "@LOG_DIR@", 9)) { sb_puts(&b, s->log_dir); p += 9; }
        else if (!strncmp(p, "@ENV@", 5)) {
            for (const char *const *e = s->env; e && *e; e++) {
                const char *eq = strchr(*e, '=');
                sb_puts(&b, "export ");
                sb_add(&b, *e, (size_t)(eq - *e) + 1);
                sb_quote(&b, eq + 1);
                sb_puts(&b, "\n");
            }
            p += 5;
        } else if (!strncmp(p, "@WORKER@", 8)) {
            for (const char *const *a = s->worker_argv; *a; a++) {
                if (a != s->worker_argv) sb_puts(&b, " ");
                sb_quote(&b, *a);
            }
            p += 8;
        } else {
            sb_add(&b, p, 1);
            p++;
        }
    }
    if (b.oom || !b.s) {
        free(b.s);
        return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    }
    *out = b.s;
    return ADAPT_OK;
}

static int template_read(const char *path, char **out, adapt_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                          "slurm: template %s: %s", path, strerror(errno));
    char *buf = malloc(TEMPLATE_MAX + 1);
    size_t n = buf ? fread(buf, 1, TEMPLATE_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    if (bad || n > TEMPLATE_MAX || memchr(buf, '\0', n)) {
        free(buf);
        return adapt_fail(err, ADAPT_EINVAL, "slurm: template %s: %s", path,
                          bad ? "read error" : "not a text file of at most 1 MiB");
    }
    buf[n] = '\0';
    *out = buf;
    return ADAPT_OK;
}

/* ---- the job's life ------------------------------------------------------------------------ */

static void job_maybe_free(slurm_job_t *j)
{
    if (!j->done || j->timers_open > 0 || j->cmds_open > 0) return;
    free(j->sbatch);
    free(j->squeue);
    free(j->scancel);
    free(j->sacct);
    free(j);
}

static void timer_closed(uv_handle_t *h)
{
    slurm_job_t *j = h->data;
    j->timers_open--;
    job_maybe_free(j);
}

/* Ends the job: on_exit once (unless detached), running commands killed, timers closed. */
static void job_end(slurm_job_t *j, int notify, int64_t status, int sig)
{
    if (j->done) return;
    j->done = 1;
    uv_timer_stop(&j->poll);
    uv_timer_stop(&j->grace);
    for (slurm_cmd *c = j->cmds; c; c = c->next) uv_process_kill(&c->proc, SIGKILL);
    if (notify && j->on_exit) j->on_exit(j->ctx, j, status, sig);
    uv_close((uv_handle_t *)&j->poll, timer_closed);
    uv_close((uv_handle_t *)&j->grace, timer_closed);
}

static int cmd_run(slurm_job_t *j, cmd_kind kind, const char *const *argv, adapt_error *err);

static void job_cancel(slurm_job_t *j, int plain)
{
    const char *argv_term[] = { j->scancel, "--signal=TERM", j->id, NULL };
    const char *argv_kill[] = { j->scancel, j->id, NULL };
    adapt_error err = {0};
    if (cmd_run(j, CMD_SCANCEL, plain ? argv_kill : argv_term, &err) != ADAPT_OK)
        fprintf(stderr, "adaptd: slurm job %s: %s\n", j->id, err.message);
}

static void on_grace(uv_timer_t *t)
{
    slurm_job_t *j = t->data;
    if (!j->done) job_cancel(j, 1);
}

static void stop_now(slurm_job_t *j)
{
    if (j->term_sent || j->done) return;
    j->term_sent = 1;
    job_cancel(j, 0);
    uv_update_time(j->loop);
    uv_timer_start(&j->grace, on_grace, j->grace_ms, 0);
}

static void on_poll(uv_timer_t *t)
{
    slurm_job_t *j = t->data;
    if (j->done || j->polling || !j->id[0]) return;
    const char *argv[] = { j->squeue, "-h", "-j", j->id, "-o", "%T", NULL };
    adapt_error err = {0};
    if (cmd_run(j, CMD_SQUEUE, argv, &err) == ADAPT_OK) j->polling = 1;
    else fprintf(stderr, "adaptd: slurm job %s: %s\n", j->id, err.message);
}

static void watch_begin(slurm_job_t *j, uint64_t first_ms)
{
    uv_timer_start(&j->poll, on_poll, first_ms, j->poll_ms);
    if (j->stop_requested) stop_now(j);
}

/* First line of text, trimmed of surrounding whitespace, into out. */
static void first_line(const char *s, char *out, size_t cap)
{
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strcspn(s, "\r\n");
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* sbatch --parsable prints "ID" or "ID;CLUSTER". */
static void sbatch_result(slurm_job_t *j, slurm_cmd *c)
{
    char line[256];
    first_line(c->obuf, line, sizeof line);
    line[strcspn(line, ";")] = '\0';
    size_t n = strlen(line);
    int ok = c->exit_status == 0 && c->term_signal == 0 && n > 0 && n <= SLURM_ID_MAX &&
             strspn(line, "0123456789") == n;
    if (!ok) {
        char why[1024];
        first_line(c->ebuf, why, sizeof why);
        if (c->exit_status != 0 || c->term_signal != 0)
            snprintf(j->error, sizeof j->error, "sbatch %s %d: %.900s", c->term_signal ? "killed by signal"
                     : "exited", c->term_signal ? c->term_signal : (int)c->exit_status,
                     why[0] ? why : "(nothing on stderr)");
        else
            snprintf(j->error, sizeof j->error, "sbatch printed no job id (stdout \"%.200s\", "
                     "stderr \"%.700s\")", line, why);
        job_end(j, 1, SLURM_STATUS_SUBMIT_FAILED, 0);
        return;
    }
    memcpy(j->id, line, n + 1);
    watch_begin(j, j->poll_ms);
}

static int terminal_map(const char *state, int64_t code, int sig, int64_t *status, int *tsig)
{
    static const struct { const char *name; int64_t status; int sig; } killed[] = {
        { "CANCELLED",     SLURM_STATUS_CANCELLED,     SIGTERM },
        { "TIMEOUT",       SLURM_STATUS_TIMEOUT,       SIGTERM },
        { "DEADLINE",      SLURM_STATUS_TIMEOUT,       SIGTERM },
        { "PREEMPTED",     SLURM_STATUS_PREEMPTED,     SIGTERM },
        { "NODE_FAIL",     SLURM_STATUS_NODE_FAIL,     SIGKILL },
        { "BOOT_FAIL",     SLURM_STATUS_NODE_FAIL,     SIGKILL },
        { "OUT_OF_MEMORY", SLURM_STATUS_OUT_OF_MEMORY, SIGKILL },
    };
    if (!strcmp(state, "COMPLETED") || !strcmp(state, "FAILED")) {
        *status = code;
        *tsig = sig;
        /* FAILED with exit code 0 happens (a step failed, the script went on): not a success */
        if (!strcmp(state, "FAILED") && code == 0 && sig == 0) *status = 1;
        return 1;
    }
    for (size_t i = 0; i < sizeof killed / sizeof killed[0]; i++)
        if (!strcmp(state, killed[i].name)) {
            *status = killed[i].status;
            *tsig = killed[i].sig;
            return 1;
        }
    return 0;   /* PENDING, RUNNING, COMPLETING, REQUEUED, SUSPENDED, ...: not over */
}

/* sacct -n -X -P -o State,ExitCode: "STATE[ by UID]|N:S". */
static void sacct_result(slurm_job_t *j, slurm_cmd *c)
{
    char line[256], state[64] = "";
    first_line(c->obuf, line, sizeof line);
    long long code = 0;
    int sig = 0;
    char *bar = strchr(line, '|');
    if (c->exit_status == 0 && bar) {
        *bar = '\0';
        size_t n = strcspn(line, " ");
        if (n < sizeof state) { memcpy(state, line, n); state[n] = '\0'; }
        if (sscanf(bar + 1, "%lld:%d", &code, &sig) != 2) state[0] = '\0';
    }
    int64_t status;
    int tsig;
    if (state[0] && terminal_map(state, code, sig, &status, &tsig)) {
        if (status < 0)
            snprintf(j->error, sizeof j->error, "slurm job %s ended %s (exit code %lld:%d)", j->id,
                     state, code, sig);
        job_end(j, 1, status, tsig);
        return;
    }
    if (state[0]) { j->lost_polls = 0; return; }   /* still on its way out of the queue */
    if (++j->lost_polls >= SLURM_LOST_POLLS) {
        char why[512];
        first_line(c->ebuf, why, sizeof why);
        snprintf(j->error, sizeof j->error, "slurm job %s is gone from squeue and sacct does not "
                 "know how it ended%s%s", j->id, why[0] ? ": " : "", why);
        job_end(j, 1, SLURM_STATUS_UNKNOWN, 0);
    }
}

static void squeue_result(slurm_job_t *j, slurm_cmd *c)
{
    char line[256];
    first_line(c->obuf, line, sizeof line);
    if (c->exit_status == 0 && line[0]) {   /* PENDING, RUNNING, ...: still in the queue */
        j->lost_polls = 0;
        j->polling = 0;
        return;
    }
    /* Gone from the queue (or squeue failed, e.g. an id slurmctld already purged): sacct has
     * the outcome — or says the job still runs, when squeue merely hiccuped. */
    const char *argv[] = { j->sacct, "-j", j->id, "-n", "-X", "-P", "-o", "State,ExitCode", NULL };
    adapt_error err = {0};
    if (cmd_run(j, CMD_SACCT, argv, &err) != ADAPT_OK) {
        fprintf(stderr, "adaptd: slurm job %s: %s\n", j->id, err.message);
        j->polling = 0;
    }
}

/* ---- commands ------------------------------------------------------------------------------ */

static void cmd_closed(uv_handle_t *h)
{
    slurm_cmd *c = h->data;
    if (--c->handles > 0) return;
    slurm_job_t *j = c->job;
    free(c);
    j->cmds_open--;
    job_maybe_free(j);
}

static void cmd_finish(slurm_cmd *c)
{
    slurm_job_t *j = c->job;
    for (slurm_cmd **pp = &j->cmds; *pp; pp = &(*pp)->next)
        if (*pp == c) { *pp = c->next; break; }
    uv_timer_stop(&c->timeout);
    uv_close((uv_handle_t *)&c->proc, cmd_closed);
    uv_close((uv_handle_t *)&c->timeout, cmd_closed);
    if (!j->done) {
        switch (c->kind) {
        case CMD_SBATCH: sbatch_result(j, c); break;
        case CMD_SQUEUE: squeue_result(j, c); break;
        case CMD_SACCT:  sacct_result(j, c); j->polling = 0; break;
        case CMD_SCANCEL:
            if (c->exit_status != 0)
                fprintf(stderr, "adaptd: scancel of slurm job %s exited %d: %s", j->id,
                        (int)c->exit_status, c->ebuf);
            break;
        }
    }
}

static void cmd_step(slurm_cmd *c)
{
    if (--c->pending == 0) cmd_finish(c);
}

static void on_cmd_exit(uv_process_t *p, int64_t status, int sig)
{
    slurm_cmd *c = p->data;
    c->exit_status = status;
    c->term_signal = sig;
    cmd_step(c);
}

static void cmd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[4096];   /* one loop thread: read_cb copies out before the next read */
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void cmd_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    slurm_cmd *c = s->data;
    int is_out = s == (uv_stream_t *)&c->out;
    if (n > 0) {
        char *dst = is_out ? c->obuf : c->ebuf;
        size_t *len = is_out ? &c->olen : &c->elen;
        size_t take = (size_t)n < CMD_OUT_MAX - *len ? (size_t)n : CMD_OUT_MAX - *len;
        memcpy(dst + *len, buf->base, take);
        *len += take;
        dst[*len] = '\0';
        return;
    }
    if (n == 0) return;
    uv_read_stop(s);
    uv_close((uv_handle_t *)s, cmd_closed);
    cmd_step(c);
}

static void on_cmd_timeout(uv_timer_t *t)
{
    slurm_cmd *c = t->data;
    uv_process_kill(&c->proc, SIGKILL);
}

static int cmd_run(slurm_job_t *j, cmd_kind kind, const char *const *argv, adapt_error *err)
{
    slurm_cmd *c = calloc(1, sizeof *c);
    if (!c) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    c->job = j;
    c->kind = kind;
    uv_pipe_init(j->loop, &c->out, 0);
    uv_pipe_init(j->loop, &c->err, 0);
    uv_timer_init(j->loop, &c->timeout);
    c->out.data = c->err.data = c->timeout.data = c->proc.data = c;
    uv_stdio_container_t stdio[3] = {
        { .flags = UV_IGNORE },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->err },
    };
    uv_process_options_t opt = {
        .exit_cb = on_cmd_exit, .file = argv[0], .args = (char **)argv,
        .stdio_count = 3, .stdio = stdio,
    };
    j->cmds_open++;
    int rc = uv_spawn(j->loop, &c->proc, &opt);
    c->handles = 4;
    if (rc != 0) {
        /* every handle was initialised (uv_spawn too): close them all, the last frees c */
        uv_close((uv_handle_t *)&c->proc, cmd_closed);
        uv_close((uv_handle_t *)&c->out, cmd_closed);
        uv_close((uv_handle_t *)&c->err, cmd_closed);
        uv_close((uv_handle_t *)&c->timeout, cmd_closed);
        return adapt_fail(err, ADAPT_EIO, "slurm: cannot run %s: %s", argv[0], uv_strerror(rc));
    }
    c->pending = 3;
    c->next = j->cmds;
    j->cmds = c;
    uv_read_start((uv_stream_t *)&c->out, cmd_alloc, cmd_read);
    uv_read_start((uv_stream_t *)&c->err, cmd_alloc, cmd_read);
    uv_timer_start(&c->timeout, on_cmd_timeout, SLURM_CMD_TIMEOUT_MS, 0);
    return ADAPT_OK;
}

/* ---- API ----------------------------------------------------------------------------------- */

static int job_new(slurm_job_t **out, uv_loop_t *loop, const slurm_spec *s, adapt_error *err)
{
    slurm_job_t *j = calloc(1, sizeof *j);
    if (!j) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    j->loop = loop;
    j->sbatch = strdup(s->sbatch ? s->sbatch : "sbatch");
    j->squeue = strdup(s->squeue ? s->squeue : "squeue");
    j->scancel = strdup(s->scancel ? s->scancel : "scancel");
    j->sacct = strdup(s->sacct ? s->sacct : "sacct");
    j->poll_ms = s->poll_ms ? s->poll_ms : 5000;
    j->grace_ms = s->grace_ms ? s->grace_ms : 30000;
    j->on_exit = s->on_exit;
    j->ctx = s->ctx;
    if (!j->sbatch || !j->squeue || !j->scancel || !j->sacct) {
        j->done = 1;
        job_maybe_free(j);
        return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    }
    uv_timer_init(loop, &j->poll);
    uv_timer_init(loop, &j->grace);
    j->poll.data = j->grace.data = j;
    j->timers_open = 2;
    *out = j;
    return ADAPT_OK;
}

/* Drops a job that never got going: no on_exit, memory freed when its handles are closed. */
static void job_abandon(slurm_job_t *j) { job_end(j, 0, 0, 0); }

int slurm_job_start(slurm_job_t **out, uv_loop_t *loop, const slurm_spec *s, adapt_error *err)
{
    *out = NULL;
    char *tmpl = NULL, *script = NULL;
    int rc = template_read(s->template_path, &tmpl, err);
    if (rc == ADAPT_OK) rc = slurm_render(tmpl, s, &script, err);
    free(tmpl);
    if (rc != ADAPT_OK) return rc;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/attempt-%" PRIu32 ".sbatch", s->job_dir, s->attempt) >=
        (int)sizeof path) {
        free(script);
        return adapt_fail(err, ADAPT_EINVAL, "slurm: job dir %s: path too long", s->job_dir);
    }
    rc = file_io_write_atomic(path, script, strlen(script), err);
    free(script);
    if (rc != ADAPT_OK) return adapt_error_prefix(err, "slurm: batch script: ");
    slurm_job_t *j;
    if ((rc = job_new(&j, loop, s, err)) != ADAPT_OK) return rc;
    const char *argv[] = { j->sbatch, "--parsable", path, NULL };
    if ((rc = cmd_run(j, CMD_SBATCH, argv, err)) != ADAPT_OK) {
        job_abandon(j);
        return rc;
    }
    *out = j;
    return ADAPT_OK;
}

int slurm_job_adopt(slurm_job_t **out, uv_loop_t *loop, const char *slurm_id, const slurm_spec *s,
                    adapt_error *err)
{
    *out = NULL;
    size_t n = slurm_id ? strlen(slurm_id) : 0;
    if (n == 0 || n > SLURM_ID_MAX || strspn(slurm_id, "0123456789") != n)
        return adapt_fail(err, ADAPT_EINVAL, "slurm: \"%s\" is not a Slurm job id",
                          slurm_id ? slurm_id : "");
    slurm_job_t *j;
    int rc = job_new(&j, loop, s, err);
    if (rc != ADAPT_OK) return rc;
    memcpy(j->id, slurm_id, n + 1);
    watch_begin(j, 0);   /* the first look at once: the job may have ended while we were away */
    *out = j;
    return ADAPT_OK;
}

void slurm_job_stop(slurm_job_t *j)
{
    if (!j || j->done) return;
    j->stop_requested = 1;
    if (j->id[0]) stop_now(j);   /* else sbatch_result → watch_begin does it */
}

void slurm_job_detach(slurm_job_t *j)
{
    if (j) job_end(j, 0, 0, 0);
}

const char *slurm_job_id(const slurm_job_t *j) { return j->id; }
const char *slurm_job_error(const slurm_job_t *j) { return j->error; }
