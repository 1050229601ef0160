/* launcher: starts one attempt of a job as a process group and stops it.
 *
 * The one idea: the command (mpirun ..., or any command line) is spawned as the leader of its
 * own session and process group, so every process it starts — ranks, helpers, their children —
 * can be signalled at once with kill(-pgid); stopping is SIGTERM to the group, then SIGKILL to
 * the group when the grace period ends, and the exit callback fires exactly once. */
#ifndef ADAPT_LAUNCHER_H
#define ADAPT_LAUNCHER_H

#include <stdint.h>

#include <uv.h>

#include "error.h"

typedef struct launcher launcher_t;

/* The attempt has ended. exit_status is the exit code, term_signal the signal that killed the
 * group leader (0 when it exited). The handle is freed right after this returns. */
typedef void (*launcher_exit_fn)(void *ctx, launcher_t *l, int64_t exit_status, int term_signal);

typedef struct launcher_spec {
    const char *const *argv;     /* NULL-terminated; argv[0] looked up in PATH */
    const char *const *env;      /* extra NULL-terminated "NAME=value" entries, added to adaptd's
                                    own environment (e.g. ADAPTD_LINK, ADAPTD_JOB_ID); may be NULL */
    const char *log_dir;         /* stdout.log and stderr.log are created (appended) here */
    const char *cwd;             /* NULL = adaptd's */
    uint64_t    grace_ms;        /* SIGTERM → SIGKILL delay */
    launcher_exit_fn on_exit;
    void       *ctx;
} launcher_spec;

int  launcher_start(launcher_t **out, uv_loop_t *loop, const launcher_spec *spec, adapt_error *err);
/* SIGTERM to the whole group now, SIGKILL after grace_ms if the leader has not exited. */
void launcher_stop(launcher_t *l);
/* SIGKILL to the group at once (daemon shutdown without waiting). */
void launcher_kill(launcher_t *l);
int  launcher_pid(const launcher_t *l);

#endif
