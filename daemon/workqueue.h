/* workqueue: the daemon's side of shard scheduling — the units of work of a synthesize, filter
 * or evaluate job (its base shards, its evaluate chunks) handed to ranks as they ask over the
 * worker link, each finished unit recorded durably in the job store's shards table.
 *
 * The one idea: a unit is pending, leased to one (rank, attempt), or done, and only the
 * database says which. A rank asking for work gets the lowest pending unit; a ShardDone (sent
 * after the worker renamed the unit's output into place) makes it done for good; when an
 * attempt ends its leased units go back to pending. So a slow rank never holds the others
 * back, a killed rank's unit is redone by the next attempt, and a retried or resumed job redoes
 * exactly the units that are not done. */
#ifndef ADAPT_WORKQUEUE_H
#define ADAPT_WORKQUEUE_H

#include <stdint.h>

#include "error.h"
#include "job_store.h"

typedef struct workqueue workqueue_t;

typedef struct workqueue_counts {
    uint64_t total, pending, leased, done;
    uint64_t records;      /* records of the done units, as their ShardDone said */
    uint64_t duplicates;   /* ShardDone frames for a unit that was done already */
} workqueue_counts;

/* Prepares the queue's statements on the store's database (schema version 3's shards table).
 * The store must outlive the queue. */
int  workqueue_open(workqueue_t **out, job_store_t *js, adapt_error *err);
void workqueue_close(workqueue_t *wq);

/* Rank `rank` of attempt `attempt` asks for a unit of (job_id, stage). The first request makes
 * the table of `units` pending units; a later one counting differently is refused
 * (ADAPT_EINVAL naming both counts: the worker and the daemon disagree on the input). A lease
 * the same (rank, attempt) still holds goes back first: a rank only asks when it holds none,
 * so such a lease is a grant it never received (a daemon restart between the two). Returns
 * *none_left = 1 when no unit is pending, else the unit leased in *shard. */
int  workqueue_request(workqueue_t *wq, const char *job_id, uint32_t stage, uint64_t units,
                       uint32_t rank, uint32_t attempt, uint64_t *shard, int *none_left,
                       adapt_error *err);

/* Unit `shard` of (job_id, stage) is finished by (rank, attempt), its output at `output`
 * holding `records` records. Done whatever its state was (the output is in place under its
 * final name, so it is finished even when the lease had gone back after a daemon restart);
 * *duplicate = 1 when it was done already. ADAPT_EINVAL for a unit the table does not hold. */
int  workqueue_done(workqueue_t *wq, const char *job_id, uint32_t stage, uint64_t shard,
                    uint32_t rank, uint32_t attempt, const char *output, uint64_t records,
                    int *duplicate, adapt_error *err);

/* Attempt `attempt` of job_id has ended (or a later one starts): every unit leased by it or an
 * earlier attempt goes back to pending; *requeued (may be NULL) counts them. */
int  workqueue_attempt_end(workqueue_t *wq, const char *job_id, uint32_t attempt,
                           uint64_t *requeued, adapt_error *err);

/* The units of (job_id, stage) by state; all zero before the first request. */
int  workqueue_counts_get(workqueue_t *wq, const char *job_id, uint32_t stage,
                          workqueue_counts *c, adapt_error *err);

#endif
