/* launcher: uv_spawn in a new session, output to files, group signals; see launcher.h.
 *
 * Design: the leader's output goes straight to files opened here (inherited descriptors), not
 * through pipes, so a job that writes a lot never waits on the daemon's event loop and its logs
 * survive a restart of adaptd. */
#include "launcher.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

enum { LAUNCHER_MAX_ENV_EXTRA = 64 };

struct launcher {
    uv_process_t     proc;
    uv_timer_t       grace;
    launcher_exit_fn on_exit;
    void            *ctx;
    uint64_t         grace_ms;
    int              pid;
    int              exited;
    int              handles_open;
};

static void handle_closed(uv_handle_t *h)
{
    launcher_t *l = h->data;
    if (--l->handles_open == 0) free(l);
}

static void on_proc_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    launcher_t *l = p->data;
    l->exited = 1;
    /* The leader is gone; anything it left in the group is cleaned up with it, so no orphan
     * rank keeps a GPU after its attempt ended. */
    launcher_group_signal(l->pid, SIGKILL, NULL);
    uv_timer_stop(&l->grace);
    if (l->on_exit) l->on_exit(l->ctx, l, exit_status, term_signal);
    uv_close((uv_handle_t *)&l->proc, handle_closed);
    uv_close((uv_handle_t *)&l->grace, handle_closed);
}

static void on_grace(uv_timer_t *t)
{
    launcher_t *l = t->data;
    if (!l->exited) launcher_group_signal(l->pid, SIGKILL, NULL);
}

static int open_log(const char *dir, const char *name, adapt_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) adapt_fail(err, ADAPT_EIO, "opening %s: %s", path, strerror(errno));
    return fd;
}

/* adaptd's environment plus the extra entries, in one malloc'd NULL-terminated array (the
 * strings themselves are borrowed). */
static char **env_merge(const char *const *extra)
{
    size_t n = 0, k = 0;
    while (environ[n]) n++;
    while (extra && extra[k] && k < LAUNCHER_MAX_ENV_EXTRA) k++;
    char **env = calloc(n + k + 1, sizeof *env);
    if (!env) return NULL;
    for (size_t i = 0; i < k; i++) env[i] = (char *)extra[i];
    for (size_t i = 0; i < n; i++) env[k + i] = environ[i];
    return env;
}

int launcher_start(launcher_t **out, uv_loop_t *loop, const launcher_spec *spec, adapt_error *err)
{
    *out = NULL;
    int fd_out = open_log(spec->log_dir, spec->log_name ? spec->log_name : "stdout.log", err);
    if (fd_out < 0) return ADAPT_EIO;
    int fd_err = spec->log_name ? dup(fd_out) : open_log(spec->log_dir, "stderr.log", err);
    if (spec->log_name && fd_err < 0) adapt_fail(err, ADAPT_EIO, "dup: %s", strerror(errno));
    if (fd_err < 0) { close(fd_out); return ADAPT_EIO; }
    launcher_t *l = calloc(1, sizeof *l);
    char **env = env_merge(spec->env);
    int rc = ADAPT_ENOMEM;
    if (!l || !env) { adapt_fail(err, rc, "out of memory"); goto done; }
    l->on_exit = spec->on_exit;
    l->ctx = spec->ctx;
    l->grace_ms = spec->grace_ms;
    uv_stdio_container_t stdio[3] = {
        { .flags = UV_IGNORE },
        { .flags = UV_INHERIT_FD, .data.fd = fd_out },
        { .flags = UV_INHERIT_FD, .data.fd = fd_err },
    };
    uv_process_options_t opt = {
        .exit_cb = on_proc_exit, .file = spec->argv[0], .args = (char **)spec->argv,
        .env = env, .cwd = spec->cwd, .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3, .stdio = stdio,
    };
    l->proc.data = l;
    int uvrc = uv_spawn(loop, &l->proc, &opt);
    if (uvrc != 0) {
        rc = adapt_fail(err, ADAPT_EIO, "starting %s: %s", spec->argv[0], uv_strerror(uvrc));
        /* uv_spawn initialized the handle even on failure: it must be closed, not freed */
        l->handles_open = 1;
        uv_close((uv_handle_t *)&l->proc, handle_closed);
        l = NULL;
        goto done;
    }
    uv_timer_init(loop, &l->grace);
    l->grace.data = l;
    l->handles_open = 2;
    l->pid = l->proc.pid;
    /* DETACHED ran setsid() in the child: its pid is the group id of everything it starts.
     * Leaving the handle referenced keeps the loop alive until the attempt ends. */
    *out = l;
    rc = ADAPT_OK;
done:
    if (rc != ADAPT_OK) free(l);
    free(env);
    close(fd_out);   /* the child holds its own copies */
    close(fd_err);
    return rc;
}

void launcher_stop(launcher_t *l)
{
    if (!l || l->exited) return;
    launcher_group_signal(l->pid, SIGTERM, NULL);
    /* the grace period counts from now, not from the loop's last cached time */
    uv_update_time(l->grace.loop);
    uv_timer_start(&l->grace, on_grace, l->grace_ms, 0);
}

void launcher_kill(launcher_t *l)
{
    if (l && !l->exited) launcher_group_signal(l->pid, SIGKILL, NULL);
}

int launcher_pid(const launcher_t *l) { return l->pid; }

void launcher_detach(launcher_t *l)
{
    if (!l || l->exited) return;
    /* closing a uv_process_t neither signals nor waits for the process; marking it exited keeps
     * a late exit_cb (none comes after close) and the grace timer from acting */
    l->exited = 1;
    l->on_exit = NULL;
    uv_timer_stop(&l->grace);
    uv_close((uv_handle_t *)&l->proc, handle_closed);
    uv_close((uv_handle_t *)&l->grace, handle_closed);
}

/* ---- processes by /proc ------------------------------------------------------------------- */

/* The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses,
 * hence the last ')'): field 3 (state) is rest[0]; the numbers follow. */
static int stat_read(int pid, char *state, int *pgrp, int *session, uint64_t *start_time)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ') return -1;
    p += 2;
    *state = *p;
    /* fields 4 (ppid) .. 22 (starttime): skip the state, then read numbers */
    unsigned long long v[20] = {0};
    int k = 0;
    for (p++; *p && k < 19; k++) {
        while (*p == ' ') p++;
        char *end;
        /* negative fields (priority, nice) come out as huge values: only pgrp, session and
         * starttime are used, and those are never negative */
        v[k] = strtoull(p, &end, 10);
        if (end == p) return -1;
        p = end;
    }
    if (k < 19) return -1;
    /* v[0] = field 4 (ppid), v[1] = 5 (pgrp), v[2] = 6 (session), v[18] = 22 (starttime) */
    *pgrp = (int)v[1];
    *session = (int)v[2];
    *start_time = v[18];
    return 0;
}

static int state_live(char state) { return state != 'Z' && state != 'X' && state != 'x'; }

int launcher_proc_info(int pid, uint64_t *start_time, int *session)
{
    char state;
    int pgrp, sid;
    uint64_t st;
    if (pid <= 0 || stat_read(pid, &state, &pgrp, &sid, &st) != 0 || !state_live(state)) return 0;
    if (start_time) *start_time = st;
    if (session) *session = sid;
    return 1;
}

/* Whether /proc/PID/environ holds the entry tag ("NAME=value") exactly. A process of another
 * user cannot be read: not ours. */
static int environ_has(int pid, const char *tag)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    size_t tlen = strlen(tag), cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t n = 0;
    while (buf && (n = read(fd, buf + len, cap - len)) > 0) {
        len += (size_t)n;
        if (len == cap) {
            char *b = cap < (1u << 22) ? realloc(buf, 2 * cap + 1) : NULL;
            if (!b) break;
            buf = b;
            cap *= 2;
        }
    }
    close(fd);
    int found = 0;
    for (size_t i = 0; buf && i < len && !found; ) {
        size_t e = strnlen(buf + i, len - i);
        found = e == tlen && memcmp(buf + i, tag, tlen) == 0;
        i += e + 1;
    }
    free(buf);
    return found;
}

/* Sends sig (0: none) to every live process whose group or session is sid (and whose
 * environment holds tag, when given); returns how many. */
static int group_each(int sid, int sig, const char *tag)
{
    if (sid <= 1) return 0;   /* never the whole system */
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        int pid = atoi(e->d_name), pgrp, session;
        char state;
        uint64_t st;
        if (stat_read(pid, &state, &pgrp, &session, &st) != 0 || !state_live(state)) continue;
        if (pgrp != sid && session != sid) continue;
        if (tag && !environ_has(pid, tag)) continue;
        count++;
        if (sig) kill(pid, sig);
    }
    closedir(d);
    return count;
}

int launcher_group_signal(int sid, int sig, const char *tag)
{
    if (sid <= 1) return 0;
    /* the scan first, so the count is of the processes found alive before this signal */
    int n = group_each(sid, sig, tag);
    if (!tag) kill(-sid, sig);
    return n;
}

int launcher_group_alive(int sid, const char *tag)
{
    /* a scan, not kill(-sid, 0): that misses ranks in groups of their own and counts zombies */
    return group_each(sid, 0, tag) > 0;
}
