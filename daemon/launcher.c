/* launcher: uv_spawn in a new session, output to files, group signals; see launcher.h.
 *
 * Design: the leader's output goes straight to files opened here (inherited descriptors), not
 * through pipes, so a job that writes a lot never waits on the daemon's event loop and its logs
 * survive a restart of adaptd. */
#include "launcher.h"

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
    kill(-l->pid, SIGKILL);
    uv_timer_stop(&l->grace);
    if (l->on_exit) l->on_exit(l->ctx, l, exit_status, term_signal);
    uv_close((uv_handle_t *)&l->proc, handle_closed);
    uv_close((uv_handle_t *)&l->grace, handle_closed);
}

static void on_grace(uv_timer_t *t)
{
    launcher_t *l = t->data;
    if (!l->exited) kill(-l->pid, SIGKILL);
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
    int fd_out = open_log(spec->log_dir, "stdout.log", err);
    if (fd_out < 0) return ADAPT_EIO;
    int fd_err = open_log(spec->log_dir, "stderr.log", err);
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
    kill(-l->pid, SIGTERM);
    /* the grace period counts from now, not from the loop's last cached time */
    uv_update_time(l->grace.loop);
    uv_timer_start(&l->grace, on_grace, l->grace_ms, 0);
}

void launcher_kill(launcher_t *l)
{
    if (l && !l->exited) kill(-l->pid, SIGKILL);
}

int launcher_pid(const launcher_t *l) { return l->pid; }
