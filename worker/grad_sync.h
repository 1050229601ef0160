/* grad_sync: the sum of the step's gradients across data-parallel ranks, on any backend.
 *
 * The one idea: the training loop says only WHEN (gradient ranges are final, backward is done,
 * the optimizer has stepped) and grad_sync picks HOW from the backend and the build, once, at
 * open:
 *   - NCCL, when the backend is "cuda" and the build has NCCL: collectives on the device buffers,
 *     on the CUDA side stream, with asynchronous error polling, a time-out and ncclCommAbort
 *     (comm.h). The time-out is ADAPT_NCCL_TIMEOUT_S seconds (default 600);
 *   - MPI straight on the buffers when the backend is host_accessible ("cpu");
 *   - MPI through host staging otherwise ("cpu-guarded", or "cuda" without NCCL): the range is
 *     downloaded into host memory allocated once at open, summed there, and uploaded back.
 *
 * Two modes:
 *   GRAD_SYNC_ALLREDUCE: every rank ends the step with the full gradient sum. Ranges reported by
 *     grad_sync_ready while the last micro-batch's backward runs gather into buckets of at most
 *     GRAD_SYNC_BUCKET_FLOATS adjacent floats, each started as soon as it is full (or the next
 *     range is not adjacent), so the sums travel while backward computes the earlier layers.
 *   GRAD_SYNC_ZERO1: the trainable range [begin, end) is cut into world equal shards of
 *     S = ceil((end - begin) / world) floats, the last ones padded into the buffers' zeroed slack
 *     (so the padding must stay zero, which it does: sums and copies of zeros). After backward
 *     a reduce-scatter leaves each rank the sum of its own shard; the optimizer updates only that
 *     shard (its moments are 1/world of the full size); an all-gather then gives every rank the
 *     whole updated parameter range.
 * A world of one needs no sum: every call returns at once and no NCCL communicator is made.
 *
 * Every rank must make the same calls with the same ranges in the same order (the model reports
 * ranges in an order fixed by its config; a rank with no batch replays it). After any failure
 * the grad_sync (and on NCCL the communicator) is spent: only grad_sync_close remains valid. */
#ifndef ADAPT_GRAD_SYNC_H
#define ADAPT_GRAD_SYNC_H

#include "comm.h"
#include "error.h"
#include "ops.h"

#include <stddef.h>

/* The default bucket: 16 MiB of floats, big enough to amortise a collective's latency, small
 * enough that the last layer's sum starts long before backward ends. */
#define GRAD_SYNC_BUCKET_FLOATS ((size_t)1 << 22)
/* The NCCL time-out when ADAPT_NCCL_TIMEOUT_S is not set, in seconds. */
#define GRAD_SYNC_NCCL_TIMEOUT_S 600.0

typedef enum grad_sync_mode { GRAD_SYNC_ALLREDUCE, GRAD_SYNC_ZERO1 } grad_sync_mode;
typedef struct grad_sync grad_sync;

/* params, grads: backend pointers to buffers of buffer_floats floats (the model's); [begin, end)
 * the trainable floats (end = n_params). ZERO1 needs begin + world * S <= buffer_floats (the
 * model's slack holds the padding). The NCCL transport binds this rank to GPU comm_local_rank(c)
 * and builds the communicator here (world > 1 only). 0, or an adapt_error naming what failed. */
int  grad_sync_open(grad_sync **out, comm *c, const ops_table *ops, grad_sync_mode mode,
                    float *params, float *grads, size_t begin, size_t end, size_t buffer_floats,
                    adapt_error *err);
/* Safe on NULL. Does not wait for buckets in flight: close after grad_sync_reduce or on failure. */
void grad_sync_close(grad_sync *gs);

/* This rank's shard of the parameter buffer: ZERO1 [lo, hi) with hi - lo = S (the last shards
 * may reach past end into the slack: the optimizer clips to end); ALLREDUCE: [begin, end). */
void grad_sync_shard(const grad_sync *gs, size_t *lo, size_t *hi);

/* A qwen2vl_grads_ready_fn (ctx = the grad_sync): gradient floats [offset, offset + count) are
 * final (clipped to [begin, end); each float reported at most once per step). ALLREDUCE starts
 * buckets from it; ZERO1 ignores it. Errors are kept for grad_sync_reduce. */
void grad_sync_ready(void *gs, size_t offset, size_t count);

/* After the step's backward: ALLREDUCE starts the pending bucket and waits for every bucket
 * (afterwards the reported ranges hold the sums over ranks); ZERO1 reduce-scatters (this rank's
 * shard then holds the sum). A kept error from grad_sync_ready is returned here. */
int  grad_sync_reduce(grad_sync *gs, adapt_error *err);

/* After the optimizer step: ZERO1 all-gathers the parameters; ALLREDUCE: nothing. */
int  grad_sync_gather_params(grad_sync *gs, adapt_error *err);

/* An optim_set_norm_sum callback (ctx = the grad_sync): ZERO1 replaces *sumsq, this rank's
 * shard's sum of squared gradients, by the sum over ranks (MPI, whatever the transport: one
 * double); ALLREDUCE and a world of one leave it, as every rank already holds every gradient. */
int  grad_sync_norm_sum(void *gs, double *sumsq, adapt_error *err);

/* ---- for tests and tuning ------------------------------------------------------------------ */
/* The largest bucket, in floats (>= 1; GRAD_SYNC_BUCKET_FLOATS by default). Between steps. */
void grad_sync_set_bucket_floats(grad_sync *gs, size_t floats);
/* Buckets the last grad_sync_reduce completed (ALLREDUCE, world > 1; else 0). */
size_t grad_sync_buckets(const grad_sync *gs);
/* "none" (a world of one), "mpi", "mpi-staged" or "nccl": the transport open chose. */
const char *grad_sync_transport(const grad_sync *gs);
/* The time-out of the NCCL transport's waits: ADAPT_NCCL_TIMEOUT_S (seconds, > 0), else
 * GRAD_SYNC_NCCL_TIMEOUT_S; ADAPT_EINVAL naming the variable when it is not a number > 0. */
int grad_sync_nccl_timeout_s(double *out, adapt_error *err);

#endif
