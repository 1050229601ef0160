/* job_store: adaptd's durable job state — one SQLite database (WAL mode) under --state-dir.
 *
 * The one idea: SQLite is the only truth about jobs. Every state change is one transaction that
 * checks the transition against the lifecycle table first, so a daemon killed at any instant
 * restarts from a consistent set of jobs and no illegal history can ever be written. */
#ifndef ADAPT_JOB_STORE_H
#define ADAPT_JOB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct job_store job_store_t;

/* The lifecycle. queued → starting → running → succeeded | failed | cancelled, with retrying
 * (a failed attempt that will start again) and preempted (taken off its slots from outside). */
enum job_store_state {
    JOB_STORE_QUEUED = 0,
    JOB_STORE_STARTING,
    JOB_STORE_RUNNING,
    JOB_STORE_SUCCEEDED,
    JOB_STORE_FAILED,
    JOB_STORE_CANCELLED,
    JOB_STORE_RETRYING,
    JOB_STORE_PREEMPTED,
    JOB_STORE_STATE_COUNT
};

enum { JOB_STORE_ID_LEN = 32 };  /* 128 random bits as lowercase hex */

const char *job_store_state_name(int state);
/* Returns the state named s, or -1. */
int job_store_state_parse(const char *s);
int job_store_state_is_terminal(int state);
/* Whether the lifecycle allows from → to. */
int job_store_transition_allowed(int from, int to);

/* What a new job is created from: the validated spec as JSON text plus the columns the store
 * indexes or reports without parsing it. */
typedef struct job_store_new {
    const char *name;
    const char *kind;
    uint32_t    ranks;
    uint32_t    max_restarts;
    const char *spec_json;
} job_store_new;

/* Latest progress of a job, also one row of its per-step metrics series. */
typedef struct job_store_progress {
    uint64_t step;
    uint64_t total_steps;
    uint32_t epoch;
    uint64_t samples;
    uint64_t tokens;
    double   loss;
    double   lr;
    double   grad_norm;
    double   step_seconds;
    double   tokens_per_second;
    int64_t  unix_time_ms;
} job_store_progress;

/* One job as read back. spec_json is malloc'd and owned by the record: job_store_record_clear
 * frees it. */
typedef struct job_store_record {
    char     id[JOB_STORE_ID_LEN + 1];
    int64_t  seq;                /* creation order; the paging cursor */
    char     name[128];
    char     kind[32];
    int      state;
    uint32_t ranks;
    uint32_t attempt;            /* 0 before the first start, then 1, 2, ... */
    uint32_t max_restarts;
    int64_t  created_ms, started_ms, finished_ms, updated_ms;  /* 0 = not yet */
    int      has_progress;
    job_store_progress progress;
    char     last_checkpoint[1024];
    char     error[512];
    char    *spec_json;
    int      cancel_requested;   /* a cancel waits for the attempt's processes to end */
} job_store_record;

void job_store_record_clear(job_store_record *r);

/* Opens (creating when needed) state_dir/adaptd.db and state_dir/jobs/. */
int  job_store_open(job_store_t **out, const char *state_dir, adapt_error *err);
void job_store_close(job_store_t *js);

/* Creates a queued job with a fresh unguessable id and its folder state_dir/jobs/ID. */
int job_store_create(job_store_t *js, const job_store_new *in, char id[JOB_STORE_ID_LEN + 1],
                     adapt_error *err);
/* ADAPT_ENOTFOUND when no job has that id. */
int job_store_get(job_store_t *js, const char *id, job_store_record *out, adapt_error *err);
/* Up to cap jobs with seq > after_seq in creation order, only those in state `state` unless it
 * is -1. *n receives the count; each record must be cleared by the caller. */
int job_store_list(job_store_t *js, int state, int64_t after_seq, job_store_record *out,
                   size_t cap, size_t *n, adapt_error *err);
/* Moves a job to state `to` when the lifecycle allows it (ADAPT_EINVAL names the transition
 * when not). Entering starting opens a new attempt; a terminal state closes it. message, when
 * not NULL, becomes the job's error text. */
int job_store_transition(job_store_t *js, const char *id, int to, const char *message,
                         adapt_error *err);
/* Records progress as the job's latest and as the series row for p->step. */
int job_store_add_progress(job_store_t *js, const char *id, const job_store_progress *p,
                           adapt_error *err);
int job_store_set_checkpoint(job_store_t *js, const char *id, const char *path, adapt_error *err);
/* Series rows with step > since (since = -1 for all), ascending, at most cap. */
int job_store_metrics(job_store_t *js, const char *id, int64_t since, job_store_progress *out,
                      size_t cap, size_t *n, adapt_error *err);
int job_store_count_by_state(job_store_t *js, uint64_t counts[JOB_STORE_STATE_COUNT],
                             adapt_error *err);
/* The folder of one job: state_dir/jobs/ID. */
int job_store_job_dir(job_store_t *js, const char *id, char *buf, size_t size);
/* What the worker's Done frame said about an attempt. */
enum job_store_done {
    JOB_STORE_DONE_NONE = 0,    /* no Done (yet) */
    JOB_STORE_DONE_OK,          /* finished its work */
    JOB_STORE_DONE_FAILED,      /* failed; another attempt may succeed */
    JOB_STORE_DONE_FATAL,       /* failed for a reason no retry can fix (a spec or input error) */
    JOB_STORE_DONE_STOPPED,     /* stopped from outside after a complete checkpoint: resumable */
};

/* One attempt of a job: when it ran, the process that ran it, what it reported. */
typedef struct job_store_attempt {
    uint32_t attempt;
    int64_t  started_ms, ended_ms;    /* ended_ms 0: still open */
    char     outcome[16];             /* the state the job left this attempt for, or "" */
    char     error[512];
    int64_t  pid;                     /* the launcher's leader process; 0 = not spawned (yet) */
    uint64_t pid_start;               /* its start time (/proc/PID/stat field 22, clock ticks) */
    int64_t  pgid;                    /* its process group (and session) */
    int      done;                    /* enum job_store_done */
    char     done_error[512];
    char     slurm_id[64];            /* launcher "slurm": the Slurm job id; "" otherwise */
} job_store_attempt;

int job_store_attempt_get(job_store_t *js, const char *id, uint32_t attempt, job_store_attempt *out,
                          adapt_error *err);
/* Records the process of an attempt right after it is spawned, so a restarted daemon can tell
 * whether that process still runs (pid and start time) and wait for its group to end. */
int job_store_attempt_set_process(job_store_t *js, const char *id, uint32_t attempt, int64_t pid,
                                  uint64_t pid_start, int64_t pgid, adapt_error *err);
/* Records the Slurm job id of an attempt once sbatch has answered (a restarted daemon adopts
 * the Slurm job by it). */
int job_store_attempt_set_slurm_id(job_store_t *js, const char *id, uint32_t attempt,
                                   const char *slurm_id, adapt_error *err);
/* Records a worker's Done (enum job_store_done) on attempt `attempt`, 0 = the job's current. */
int job_store_attempt_set_done(job_store_t *js, const char *id, uint32_t attempt, int done,
                               const char *error, adapt_error *err);
/* How many attempts of job id ended in state `outcome` (e.g. preempted ones, which do not use
 * up max_restarts). */
int job_store_attempt_count(job_store_t *js, const char *id, int outcome, uint32_t *n,
                            adapt_error *err);
/* Marks a cancel that takes effect once the running attempt has stopped (it survives a restart
 * of the daemon). */
int job_store_request_cancel(job_store_t *js, const char *id, adapt_error *err);

/* The database handle, for modules that keep tables of their own in it (daemon/workqueue.c:
 * the shards table of schema version 3). Same thread as the store, never closed by them. */
struct sqlite3;
struct sqlite3 *job_store_sqlite(job_store_t *js);

/* A cheap query that proves the database answers (readiness). */
int job_store_ping(job_store_t *js, adapt_error *err);

#endif
