/* launcher: starts one attempt of a job as a process group and stops it.
 *
 * The one idea: the command (mpirun ..., or any command line) is spawned as the leader of its
 * own session and process group, so every process it starts — ranks, helpers, their children —
 * can be signalled at once; stopping is SIGTERM to the group, then SIGKILL to the group when the
 * grace period ends, and the exit callback fires exactly once.
 *
 * "The group" is the leader's process group plus every process of its session: Open MPI's
 * mpirun puts each rank in a process group of its own (so kill(-pgid) would reach mpirun
 * alone and orphan the ranks), but the ranks stay in the session the leader opened. */
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
    const char *log_name;        /* when set, stdout and stderr both go (appended) to this one
                                    file in log_dir instead, interleaved as written */
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
/* Lets go of the attempt without signalling it (daemon shutdown: the job keeps running and a
 * restarted daemon adopts it). The exit callback never fires; the handle is freed once the loop
 * has run the close callbacks. */
void launcher_detach(launcher_t *l);

/* Process identity from /proc/PID/stat: 1 when pid is alive and not a zombie, with its start
 * time (field 22, clock ticks since boot: with the pid, unique across pid reuse) and session;
 * 0 when it is gone. Either out pointer may be NULL. */
int launcher_proc_info(int pid, uint64_t *start_time, int *session);
/* Sends sig to process group sid and to every process of session sid. Returns how many
 * processes of the session were found alive (not zombies). With tag ("NAME=value"), only
 * processes whose environment holds that entry are counted and signalled, and the group is
 * not signalled as a whole: a restarted daemon knows a session only by its number, which may
 * have been reused by an unrelated one once every process of the old one ended. */
int launcher_group_signal(int sid, int sig, const char *tag);
/* Whether any process of group or session sid (with tag, as above) is still alive (zombies
 * count as gone: a container's init may be slow to reap them). */
int launcher_group_alive(int sid, const char *tag);

#endif
