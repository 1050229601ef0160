/* link_client: adapt-worker's side of adaptd — the worker link (rank 0 reports Hello, Progress,
 * Checkpoint, Done and Heartbeat frames over the daemon's Unix socket and takes Control frames
 * back), the per-rank log files, and the exit-code contract.
 *
 * The one idea: the training thread never touches the socket. It hands whole frames to a
 * bounded queue under a mutex and goes on; one background thread owns the socket (non-blocking)
 * and does all the waiting — writing the queue, reading Control frames, heartbeats, reconnecting
 * every second after the daemon restarts (then Hello again, and the newest Checkpoint the daemon
 * may have missed). So a stopped or dead daemon can cost a step nothing but a dropped Progress
 * frame; only Done is worth waiting for, and only at exit and for a bounded time.
 *
 * Exit codes of adapt-worker (the daemon's retry rule rests on them):
 *   0  success, or stopped (SIGTERM / Control STOP) after a complete checkpoint
 *   1  runtime failure — I/O, memory, MPI, a signal: worth a retry (from the newest checkpoint)
 *   2  usage, spec or input error — bad argument, bad spec, missing or damaged model, corpus or
 *      checkpoint, a configuration refused: a retry would fail the same way, so it is not retried
 * Done{ok=false, fatal=true} carries the same verdict as exit code 2 over the link. */
#ifndef ADAPT_LINK_CLIENT_H
#define ADAPT_LINK_CLIENT_H

#include "error.h"
#include "job.pb-c.h"

#include <stdatomic.h>
#include <stdint.h>

enum {
    LINK_CLIENT_EXIT_OK      = 0,
    LINK_CLIENT_EXIT_FAILED  = 1,
    LINK_CLIENT_EXIT_FATAL   = 2,
    LINK_CLIENT_PROTOCOL     = 1,
    LINK_CLIENT_QUEUE_BYTES  = 256 * 1024, /* past this, Progress frames are dropped, not queued */
    LINK_CLIENT_MAX_FRAME    = 64 * 1024,  /* largest daemon → worker frame accepted */
    LINK_CLIENT_BRIEF_MS     = 2000,       /* a connection shorter than this was refused */
};

typedef struct link_client link_client_t;

typedef struct link_client_options {
    const char  *path;          /* the daemon's Unix socket (ADAPTD_LINK) */
    const char  *job_id;        /* ADAPTD_JOB_ID */
    uint32_t     attempt;       /* ADAPTD_ATTEMPT */
    uint32_t     world;         /* ranks of the job, reported in Hello */
    uint64_t     heartbeat_ms;  /* ADAPTD_HEARTBEAT_MS, default 5000 */
    uint64_t     reconnect_ms;  /* 1000 */
    uint64_t     done_wait_ms;  /* ADAPTD_DONE_WAIT_MS, default 30000 */
    /* Control frames land here (TRAIN_SIGNAL_CHECKPOINT / TRAIN_SIGNAL_STOP, see train.h); a
     * lock-free atomic, as the signal handler writes the same flag. May be NULL. */
    atomic_int  *signal;
} link_client_options;

typedef struct link_client_stats {
    uint64_t frames_sent;       /* whole frames written to a socket */
    uint64_t progress_dropped;  /* Progress frames dropped: link down or queue full */
    uint64_t connects;          /* successful connects, the first included */
    uint64_t controls;          /* Control frames received */
} link_client_stats;

/* Reads the options from the environment (ADAPTD_LINK, ADAPTD_JOB_ID, ADAPTD_ATTEMPT,
 * ADAPTD_HEARTBEAT_MS, ADAPTD_DONE_WAIT_MS); 0 with *have = 0 when ADAPTD_LINK is unset or
 * empty, a negative code naming the variable when one is malformed. */
int  link_client_env(link_client_options *o, int *have, adapt_error *err);

/* Starts the link thread; the first connect is tried before this returns (the daemon is
 * normally there), later ones by the thread. A daemon that is not there is no error. */
int  link_client_start(link_client_t **out, const link_client_options *o, adapt_error *err);

/* Queue a frame and return at once; both are safe on NULL. Progress is dropped (counted) while
 * the link is down or the queue is full; the newest Checkpoint is kept and re-sent after a
 * reconnect until it was written once. */
void link_client_progress(link_client_t *c, const Adaptd__Progress *p);
void link_client_checkpoint(link_client_t *c, uint64_t step, const char *dir);

/* Queues Done and waits up to done_wait_ms for it to be written, reconnecting meanwhile if the
 * link is down. Returns 1 when it was delivered, 0 when the wait ran out. Safe on NULL (0). */
int  link_client_done(link_client_t *c, int ok, int fatal, int stopped, const char *error,
                      const char *output_dir, uint64_t step);

link_client_stats link_client_stats_get(link_client_t *c);
/* 1 while a connection is up. */
int  link_client_connected(link_client_t *c);

/* Stops the thread, closes the socket, frees; safe on NULL. */
void link_client_close(link_client_t *c);

/* Per-rank logs: when dir is non-NULL and non-empty, creates it if missing and points this
 * process's stdout and stderr (dup2) at dir/rank-R.log (appended), both line-buffered. */
int  link_client_logs(const char *dir, int rank, adapt_error *err);

/* The rank a launcher gave this process, from the environment alone (before MPI_Init):
 * OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, SLURM_PROCID; 0 when none is set. */
int  link_client_env_rank(void);

/* 1 when an adapt_error code means the input is wrong (exit 2, not retried), 0 when a retry
 * may succeed (exit 1). */
int  link_client_error_fatal(int code);

#endif
