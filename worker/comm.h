/* comm: the ranks of a data-parallel job — who am I, how many are we, and the collectives
 * training needs (bucketed gradient all-reduce, broadcast, barrier).
 *
 * The one idea: MPI is initialised only when a launcher started us. Open MPI's mpirun exports
 * OMPI_COMM_WORLD_SIZE (and PMIX_RANK) to every process; srun exports SLURM_STEP_NUM_TASKS /
 * SLURM_NTASKS and PMI_RANK or PMIX_RANK with --mpi=pmi2/pmix; MPICH's hydra exports PMI_RANK.
 * When none of these is set, adapt-worker is a plain process and comm is a world of one without
 * calling MPI_Init at all (a singleton MPI_Init would try to start an Open MPI daemon, which is
 * slow and fails in many containers). When a launcher says there are N > 1 tasks but MPI (or this
 * build) sees a world of another size, comm_init fails instead of letting N processes each train
 * alone on the whole data set.
 *
 * Local rank (which GPU to use later): OMPI_COMM_WORLD_LOCAL_RANK, else SLURM_LOCALID, else the
 * rank within MPI's shared-memory split of the world, else 0.
 *
 * Gradient buckets: comm_allreduce_start starts an MPI_Iallreduce (sum, in place) on one bucket
 * and returns at once, so the backward pass can go on computing the next layer's gradients while
 * this one travels; comm_allreduce_wait_all completes every bucket started. Without MPI (or with
 * a world of one) every collective is an immediate no-op: a sum over one rank is the buffer.
 *
 * ZeRO-1 (worker/grad_sync.c) adds a reduce-scatter and an all-gather over equal blocks, one per
 * rank in rank order, on the host (MPI) or on the GPU (NCCL). */
#ifndef ADAPT_COMM_H
#define ADAPT_COMM_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct comm comm;

/* argc/argv may be NULL. */
int  comm_init(comm **out, int *argc, char ***argv, adapt_error *err);
/* Finalises MPI when comm_init initialised it; safe on NULL. */
void comm_close(comm *c);

int  comm_rank(const comm *c);
int  comm_world(const comm *c);
int  comm_local_rank(const comm *c);
/* 1 when MPI was initialised (a launcher started us), else 0. */
int  comm_uses_mpi(const comm *c);

int  comm_barrier(comm *c, adapt_error *err);
/* Broadcasts bytes of buf from root to every rank. */
int  comm_broadcast(comm *c, void *buf, size_t bytes, int root, adapt_error *err);
/* Blocking in-place sums across ranks. */
int  comm_allreduce_sum_f32(comm *c, float *buf, size_t n, adapt_error *err);
int  comm_allreduce_sum_f64(comm *c, double *buf, size_t n, adapt_error *err);
int  comm_allreduce_sum_u64(comm *c, uint64_t *buf, size_t n, adapt_error *err);

/* Starts an in-place sum of buf[0..n) across ranks; buf must stay untouched until
 * comm_allreduce_wait_all returns. Every rank must start the same buckets in the same order. */
int  comm_allreduce_start(comm *c, float *buf, size_t n, adapt_error *err);
/* Waits for every bucket started since the last wait. */
int  comm_allreduce_wait_all(comm *c, adapt_error *err);

/* ZeRO-1's host collectives (blocking). send holds world * shard floats, block r being floats
 * [r * shard, (r + 1) * shard); recv [shard], which must not overlap send, receives the sum over
 * ranks of this rank's block. A world of one copies its block. Blocks longer than MPI's int count
 * (2^31 - 1 floats) are refused (ADAPT_EUNSUPPORTED): use more ranks. */
int  comm_reduce_scatter_f32(comm *c, const float *send, float *recv, size_t shard,
                             adapt_error *err);
/* In place: buf holds world * shard floats; this rank's block [rank * shard, (rank + 1) * shard)
 * goes to every rank and every other rank's block arrives in its place. World 1: nothing. */
int  comm_allgather_f32(comm *c, float *buf, size_t shard, adapt_error *err);

/* ---- GPU collectives over NCCL (issue 7; ADAPT_EUNSUPPORTED where the build has no NCCL) ----
 * comm_nccl_init binds this rank to GPU `device` and builds the NCCL communicator over the
 * world: rank 0 makes the unique id, comm_broadcast (MPI_Bcast) carries it, every rank joins. The
 * communicator is non-blocking, so every wait polls NCCL's asynchronous error state and gives up
 * after timeout_s seconds: on an error or a time-out the communicator is aborted
 * (ncclCommAbort) and the call fails, so a dead or hung peer fails the job cleanly (the daemon
 * retries it) instead of hanging it. After such a failure only comm_close remains valid. */
int  comm_nccl_init(comm *c, int device, double timeout_s, adapt_error *err);
/* 1 when this build has NCCL >= 2.14 (what comm_nccl_init needs), else 0. */
int  comm_has_nccl(void);
/* Enqueues an in-place sum of dev_buf[0..n) (device memory) across ranks on stream (a
 * cudaStream_t; NULL is the default stream) and returns without waiting for it. */
int  comm_nccl_allreduce_sum_f32(comm *c, float *dev_buf, size_t n, void *stream, adapt_error *err);
/* In place, NCCL's way: dev_buf holds world * shard floats; afterwards this rank's block
 * [rank * shard, (rank + 1) * shard) holds the sum over ranks of that block (the other blocks
 * are left as they were). Enqueued on stream, not waited for. */
int  comm_nccl_reduce_scatter_f32(comm *c, float *dev_buf, size_t shard, void *stream,
                                  adapt_error *err);
/* In place: this rank's block of dev_buf [world * shard] goes to every rank; enqueued on stream. */
int  comm_nccl_allgather_f32(comm *c, float *dev_buf, size_t shard, void *stream,
                             adapt_error *err);
/* Waits until stream has finished (and with it the collectives enqueued on it), polling NCCL's
 * asynchronous error state meanwhile and once more at the end; an error or the time-out aborts
 * the communicator and fails with a message that names NCCL and what went wrong. */
int  comm_nccl_wait(comm *c, void *stream, adapt_error *err);

/* The launcher's view, from the environment alone: number of tasks it started (0 when no
 * launcher is recognised) and this process's local rank (-1 when no variable says). */
int  comm_env_launched_tasks(void);
int  comm_env_local_rank(void);

#endif
