/* work_source: where a rank of a synthesize / filter / evaluate job gets its next unit of work
 * (a base shard, an evaluate chunk) — from adaptd's work queue when the daemon runs the job,
 * else from the static assignment (rank r of W takes r, r + W, r + 2W, …).
 *
 * The one idea: one loop in the job kinds, two sources behind it. Under adaptd
 * (ADAPTD_WORK_QUEUE=1 with ADAPTD_LINK) every rank opens its own connection to the worker
 * link, says Hello (its rank, work_queue = true) and asks for one unit at a time, so a slow
 * rank never holds the others back; after a unit's output is renamed into place it reports
 * ShardDone, which the daemon records durably. The connection is synchronous and owned by the
 * calling thread (one question, one answer); a daemon restart costs a reconnect and the
 * question again, which the daemon answers the same (a lease the rank never received goes back
 * to it). */
#ifndef ADAPT_WORK_SOURCE_H
#define ADAPT_WORK_SOURCE_H

#include <stdint.h>

#include "error.h"

typedef struct work_source work_source;

/* Opens this rank's source of `units` units for job kind `kind`. The daemon's queue when the
 * environment says so (ADAPTD_WORK_QUEUE=1, ADAPTD_LINK, ADAPTD_JOB_ID, ADAPTD_ATTEMPT; the
 * first connect is tried within ADAPTD_WORK_WAIT_MS, default 60000), else the static
 * assignment. A malformed variable is an error naming it. */
int  work_source_open(work_source **out, int rank, int world, const char *kind, uint64_t units,
                      adapt_error *err);
/* The next unit for this rank: *more = 1 with *unit, or *more = 0 when none is left. A daemon
 * that cannot be reached for ADAPTD_WORK_WAIT_MS, or that refuses the request, is an error
 * (ADAPT_EIO: another attempt may pass). */
int  work_source_next(work_source *ws, uint64_t *unit, int *more, adapt_error *err);
/* Unit `unit` is finished, its output at `output` (under its final name) with `records`
 * records: ShardDone to the daemon; nothing for the static assignment. */
int  work_source_done(work_source *ws, uint64_t unit, const char *output, uint64_t records,
                      adapt_error *err);
/* 1 when the units come from the daemon's queue. Safe on NULL (0). */
int  work_source_queued(const work_source *ws);
void work_source_close(work_source *ws);

#endif
