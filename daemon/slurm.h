/* slurm: the Slurm launcher — one attempt of a job submitted with sbatch from a template,
 * watched with squeue and sacct, stopped with scancel.
 *
 * The one idea: every Slurm command is a short child process run with uv_spawn and read through
 * pipes, one at a time per job, so the daemon's loop never waits on slurmctld; the job's fate is
 * what sacct says once squeue no longer lists it, and the Slurm job id (saved by the caller) is
 * all a restarted daemon needs to adopt the job again.
 *
 * Outcome mapping (on_exit's exit_status, term_signal), from sacct's State and ExitCode "N:S":
 *   COMPLETED                  N, S                    (0, 0 for a clean run)
 *   FAILED                     N, S                    (the batch script's exit code: srun's)
 *   CANCELLED                  SLURM_STATUS_CANCELLED,   SIGTERM
 *   TIMEOUT, DEADLINE          SLURM_STATUS_TIMEOUT,     SIGTERM
 *   PREEMPTED                  SLURM_STATUS_PREEMPTED,   SIGTERM
 *   NODE_FAIL, BOOT_FAIL       SLURM_STATUS_NODE_FAIL,   SIGKILL
 *   OUT_OF_MEMORY              SLURM_STATUS_OUT_OF_MEMORY, SIGKILL
 *   gone from squeue, and sacct knows nothing for SLURM_LOST_POLLS polls (no accounting)
 *                              SLURM_STATUS_UNKNOWN,     0
 *   sbatch failed or printed no job id
 *                              SLURM_STATUS_SUBMIT_FAILED, 0 (slurm_job_error: sbatch's stderr)
 * A negative exit_status never collides with a real exit code; a non-zero term_signal says the
 * workers were killed rather than exiting, so "retry unless exit 2" stays the caller's one rule. */
#ifndef ADAPT_SLURM_H
#define ADAPT_SLURM_H

#include <stdint.h>

#include <uv.h>

#include "error.h"

enum {
    SLURM_STATUS_CANCELLED     = -1,
    SLURM_STATUS_TIMEOUT       = -2,
    SLURM_STATUS_PREEMPTED     = -3,
    SLURM_STATUS_NODE_FAIL     = -4,
    SLURM_STATUS_OUT_OF_MEMORY = -5,
    SLURM_STATUS_UNKNOWN       = -6,
    SLURM_STATUS_SUBMIT_FAILED = -7,
    SLURM_LOST_POLLS           = 10,   /* polls with no trace of the job before UNKNOWN */
    SLURM_CMD_TIMEOUT_MS       = 60000, /* a Slurm command still running after this is killed */
};

typedef struct slurm_job slurm_job_t;

/* The attempt has ended (see the mapping above). Fires exactly once per handle (never after
 * slurm_job_detach); the handle is freed once this returns. */
typedef void (*slurm_exit_fn)(void *ctx, slurm_job_t *j, int64_t exit_status, int term_signal);

typedef struct slurm_spec {
    const char *template_path;      /* deploy/slurm/adaptd-job.sbatch.in or a site's copy */
    const char *job_dir;            /* attempt-N.sbatch is written here */
    const char *job_id;             /* adaptd's job id */
    uint32_t    attempt, ranks;     /* ranks: sbatch --ntasks */
    const char *const *worker_argv; /* NULL-terminated: adapt-worker train --spec ... */
    const char *const *env;         /* NULL-terminated "NAME=value", exported by the script */
    const char *log_dir;            /* sbatch --output/--error, and ADAPTD_LOG_DIR of the ranks */
    const char *sbatch, *squeue, *scancel, *sacct;  /* NULL: looked up in PATH */
    uint64_t    poll_ms;            /* squeue period; 0 = 5000 */
    uint64_t    grace_ms;           /* scancel --signal=TERM → scancel delay; 0 = 30000 */
    slurm_exit_fn on_exit;
    void       *ctx;
} slurm_spec;

/* Renders the template into job_dir/attempt-N.sbatch and submits it (asynchronously): errors
 * here are about the template, the spec or spawning sbatch; a refusal by sbatch itself comes
 * through on_exit as SLURM_STATUS_SUBMIT_FAILED. */
int  slurm_job_start(slurm_job_t **out, uv_loop_t *loop, const slurm_spec *s, adapt_error *err);
/* Watches a job submitted earlier (by a previous life of the daemon). Only the commands, poll
 * and grace periods, on_exit and ctx of s are used. */
int  slurm_job_adopt(slurm_job_t **out, uv_loop_t *loop, const char *slurm_id, const slurm_spec *s,
                     adapt_error *err);
/* scancel --signal=TERM now (the workers checkpoint and exit 0), plain scancel after grace_ms
 * if the job is still there. A stop while sbatch runs cancels the job once its id is known. */
void slurm_job_stop(slurm_job_t *j);
/* Stops watching without cancelling and without on_exit (daemon shutdown: the job keeps
 * running for a later slurm_job_adopt); frees the handle once the loop has closed it. Detached
 * while sbatch still runs (slurm_job_id is ""), sbatch is killed and a job it may have queued
 * is unknown to the caller: save the id first, or stop instead. */
void slurm_job_detach(slurm_job_t *j);
/* The Slurm job id; "" until sbatch has answered. */
const char *slurm_job_id(const slurm_job_t *j);
/* A sentence on an unusual outcome (sbatch's refusal, sacct's state); "" otherwise. Valid until
 * on_exit returns. */
const char *slurm_job_error(const slurm_job_t *j);

/* Renders the template text for s into a malloc'd script (*out); exposed for the tests. */
int  slurm_render(const char *tmpl, const slurm_spec *s, char **out, adapt_error *err);

#endif
