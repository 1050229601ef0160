/* scheduler: adaptd's job lifecycle — starts queued jobs on free slots, watches each attempt
 * (its process, its link frames, its heartbeats), retries or ends it, and rebuilds all of that
 * from the job store after a restart.
 *
 * The one idea: SQLite holds every fact a restarted daemon needs (state, attempt, the attempt's
 * leader pid + start time + group, the worker's Done, a pending cancel), and the in-memory job
 * only holds what can be rebuilt from it; a job keeps its slots from its start until the last
 * process of its attempt is gone, so two attempts of one job never run at once and a retry
 * never lands on slots another job took. */
#ifndef ADAPT_SCHEDULER_H
#define ADAPT_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "error.h"
#include "job.pb-c.h"
#include "job_store.h"
#include "link.h"

typedef struct scheduler scheduler_t;

typedef struct scheduler_config {
    job_store_t *store;
    uint32_t     slots;                 /* ranks that may run at once */
    const char  *link_path;             /* the worker link socket (ADAPTD_LINK) */
    const char  *mpirun;                /* looked up in PATH unless it has a '/' */
    const char  *worker;                /* adapt-worker */
    uint64_t     kill_grace_ms;         /* cancel: SIGTERM, then SIGKILL after this */
    uint64_t     heartbeat_timeout_ms;  /* an attempt silent this long is killed; 0 = never */
    uint64_t     poll_ms;               /* adopted processes, heartbeats, draining groups */
    int          hold;                  /* start no queued job (retries of started ones go on) */
    /* launcher "slurm" (daemon/slurm.c): refused at submit unless a template is named */
    const char  *slurm_template;        /* deploy/slurm/adaptd-job.sbatch.in or a site's copy */
    const char  *sbatch, *squeue, *scancel, *sacct;  /* NULL: looked up in PATH */
    uint64_t     slurm_poll_ms;         /* squeue period; 0 = slurm.c's default */
} scheduler_config;

int  scheduler_init(scheduler_t **out, uv_loop_t *loop, const scheduler_config *cfg,
                    adapt_error *err);
/* Rebuilds the jobs that were starting, running, retrying or preempted when the last daemon
 * stopped:
 * an attempt whose leader still runs (same pid, same start time) is adopted and watched by
 * polling; any other is finished as its stored Done says, or retried. Then schedules. */
int  scheduler_recover(scheduler_t *s, adapt_error *err);
/* Daemon shutdown: lets go of every attempt without signalling it (a restarted daemon adopts
 * them). Memory goes once the loop has run the close callbacks. */
void scheduler_close(scheduler_t *s);

/* Whether jobs with launcher "slurm" can run here (a template was configured). */
int  scheduler_slurm_enabled(const scheduler_t *s);

/* A job was queued (or slots were freed): run a scheduling pass soon, outside the caller. */
void scheduler_kick(scheduler_t *s);
/* Cancels job id. A queued, retrying or preempted job is cancelled at once (*pending = 0); a
 * starting or
 * running one is stopped — SIGTERM to its processes, SIGKILL after the grace — and becomes
 * cancelled when they have exited (*pending = 1). ADAPT_ENOTFOUND for an unknown job,
 * ADAPT_EINVAL for one already finished. */
int  scheduler_cancel(scheduler_t *s, const char *id, int *pending, adapt_error *err);
/* Asks the job's rank-0 worker for a checkpoint now (Control CONTROL_CHECKPOINT).
 * ADAPT_ENOTFOUND for an unknown job; ADAPT_EINVAL when it is not running or no worker of it
 * is connected to the link. */
int  scheduler_checkpoint(scheduler_t *s, const char *id, adapt_error *err);

/* The work queue of synthesize / filter / evaluate jobs (daemon/workqueue.h), for the API's
 * shard counts; NULL when s is NULL. */
struct workqueue;
struct workqueue *scheduler_workqueue(const scheduler_t *s);

/* The link server's handlers (link_handlers with the scheduler as ctx). */
int  scheduler_on_frame(void *s, link_peer_t *peer, const Adaptd__LinkFrame *f);
void scheduler_on_close(void *s, link_peer_t *peer, const char *job_id);

/* Jobs the scheduler is watching (an attempt running, or draining before a retry) and the
 * slots they hold. */
size_t   scheduler_active(const scheduler_t *s);
uint32_t scheduler_slots_used(const scheduler_t *s);

/* ---- the slot rule, pure (unit-tested on its own) ------------------------------------------ */

enum scheduler_decision {
    SCHEDULER_WAIT = 0,    /* does not fit now, or an earlier job is waiting */
    SCHEDULER_START,       /* start it now */
    SCHEDULER_NEVER,       /* needs more ranks than the daemon has slots: fail it */
};

/* Decides for queued jobs (ranks[i], in creation order) with `free` of `total` slots: each
 * starts while it fits; the first that does not fit stops every later one (no small job
 * overtakes a big one, so a big job is never starved); a job that can never fit does not
 * block. Writes decision[i] and returns how many start. */
size_t scheduler_plan(uint32_t total, uint32_t free, const uint32_t *ranks, size_t n,
                      uint8_t *decision);

/* Whether output_dir/checkpoints holds a complete checkpoint (a step-* folder with DONE):
 * an attempt after the first passes --resume only then, since adapt-worker refuses --resume
 * with nothing to resume from. */
int scheduler_has_checkpoint(const char *output_dir);

#endif
