/* comm: MPI when a launcher started us, a world of one otherwise; see comm.h.
 *
 * MPI calls return their codes (MPI_ERRORS_RETURN on the world communicator) and every one goes
 * through comm_mpi_check, which names the call and the MPI error string: a failed collective is
 * an adapt_error like any other, not an abort inside the library. */
#include "comm.h"

#include "adapt_config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if ADAPT_HAVE_MPI
#include <mpi.h>
#endif
#if ADAPT_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <time.h>
/* nccl.h declares a few functions with () instead of (void); it is not ours to fix */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
/* non-blocking communicators (ncclConfig_t), which the time-outs need, came with NCCL 2.14 */
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
#define COMM_NCCL 1
#endif
#endif
#ifndef COMM_NCCL
#define COMM_NCCL 0
#endif

struct comm {
    int rank, world, local_rank;
    int mpi;           /* MPI is in use */
    int mpi_owned;     /* we called MPI_Init and must finalise */
#if ADAPT_HAVE_MPI
    MPI_Request *pending;   /* started buckets */
    size_t       n_pending, cap_pending;
#endif
#if COMM_NCCL
    ncclComm_t nccl;          /* GPU collectives, after comm_nccl_init; NULL before or aborted */
    double     nccl_timeout;  /* seconds any NCCL wait may take before the job is failed */
#endif
};

#if COMM_NCCL
static void comm_nccl_close(comm *c);
#endif

/* A positive integer from the environment, or -1. */
static long comm_env_long(const char *name)
{
    const char *s = getenv(name);
    if (!s || !*s) return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < 0 ? -1 : v;
}

int comm_env_launched_tasks(void)
{
    /* SLURM_NTASKS is left out on purpose: a batch script of an --ntasks=4 allocation has it
     * too, and there the worker started by hand is one process, not one of four. */
    static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                        "SLURM_STEP_NUM_TASKS" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        long v = comm_env_long(vars[i]);
        if (v > 0) return v > INT_MAX ? INT_MAX : (int)v;
    }
    /* PMIx alone (Open MPI 5's prun, srun --mpi=pmix) says we were launched, not how many. */
    return comm_env_long("PMIX_RANK") >= 0 || comm_env_long("PMI_RANK") >= 0 ? 1 : 0;
}

#if ADAPT_HAVE_MPI
/* Whether an MPI launcher (not merely Slurm) started this process: then MPI_Init finds its
 * peers. A one-task srun step without PMI stays a plain process. */
static int comm_env_mpi_launched(void)
{
    static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK",
                                        "PMIX_RANK" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (comm_env_long(vars[i]) >= 0) return 1;
    return comm_env_launched_tasks() > 1;
}
#endif

int comm_env_local_rank(void)
{
    long v = comm_env_long("OMPI_COMM_WORLD_LOCAL_RANK");
    if (v < 0) v = comm_env_long("SLURM_LOCALID");
    return v > INT_MAX ? -1 : (int)v;
}

/* Under MPI the launcher's count must be MPI's; srun without MPI (SLURM_NTASKS=1) is fine. */
static int comm_check_world(comm *c, int launched, adapt_error *err)
{
    if (launched > 1 && c->world != launched)
        return adapt_fail(err, ADAPT_EINVAL,
                          "comm: the launcher started %d tasks but %s a world of %d; %s",
                          launched, c->mpi ? "MPI reports" : "this build (without MPI) is",
                          c->world,
                          c->mpi ? "run with the launcher of the MPI adapt-worker was built "
                                   "against (srun --mpi=pmix for Open MPI)"
                                 : "rebuild with MPI (meson -Dmpi=enabled)");
    return ADAPT_OK;
}

#if ADAPT_HAVE_MPI

static int comm_mpi_check(int rc, const char *what, adapt_error *err)
{
    if (rc == MPI_SUCCESS) return ADAPT_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", rc);
    return adapt_fail(err, ADAPT_EIO, "comm: %s failed: %s", what, msg);
}

static int comm_mpi_init(comm *c, int *argc, char ***argv, adapt_error *err)
{
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* Only the main thread calls MPI; OpenMP threads inside kernels never do. */
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return adapt_fail(err, ADAPT_EIO, "comm: MPI_Init_thread failed");
        c->mpi_owned = 1;
    }
    c->mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rc = comm_mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank), "MPI_Comm_rank", err);
    if (!rc) rc = comm_mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &c->world), "MPI_Comm_size", err);
    if (!rc && c->local_rank < 0) {
        MPI_Comm node;
        rc = comm_mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank,
                                                MPI_INFO_NULL, &node), "MPI_Comm_split_type", err);
        if (!rc) {
            MPI_Comm_rank(node, &c->local_rank);
            MPI_Comm_free(&node);
        }
    }
    return rc;
}

/* MPI counts are int: large buffers go in slices of at most 1 Gi elements. */
#define COMM_SLICE ((size_t)1 << 30)

static int comm_allreduce(comm *c, void *buf, size_t n, MPI_Datatype type, size_t elem,
                          adapt_error *err)
{
    if (c->world == 1) return ADAPT_OK;
    for (size_t at = 0; at < n; at += COMM_SLICE) {
        size_t k = n - at < COMM_SLICE ? n - at : COMM_SLICE;
        int rc = comm_mpi_check(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + at * elem, (int)k,
                                              type, MPI_SUM, MPI_COMM_WORLD),
                                "MPI_Allreduce", err);
        if (rc) return rc;
    }
    return ADAPT_OK;
}

int comm_barrier(comm *c, adapt_error *err)
{
    return c->world == 1 ? ADAPT_OK
                         : comm_mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier", err);
}

int comm_broadcast(comm *c, void *buf, size_t bytes, int root, adapt_error *err)
{
    if (root < 0 || root >= c->world)
        return adapt_fail(err, ADAPT_EINVAL, "comm: broadcast root %d outside a world of %d",
                          root, c->world);
    if (c->world == 1) return ADAPT_OK;
    for (size_t at = 0; at < bytes; at += COMM_SLICE) {
        size_t k = bytes - at < COMM_SLICE ? bytes - at : COMM_SLICE;
        int rc = comm_mpi_check(MPI_Bcast((char *)buf + at, (int)k, MPI_BYTE, root,
                                          MPI_COMM_WORLD), "MPI_Bcast", err);
        if (rc) return rc;
    }
    return ADAPT_OK;
}

int comm_allreduce_sum_f32(comm *c, float *buf, size_t n, adapt_error *err)
{
    return comm_allreduce(c, buf, n, MPI_FLOAT, sizeof *buf, err);
}

int comm_allreduce_sum_f64(comm *c, double *buf, size_t n, adapt_error *err)
{
    return comm_allreduce(c, buf, n, MPI_DOUBLE, sizeof *buf, err);
}

int comm_allreduce_sum_u64(comm *c, uint64_t *buf, size_t n, adapt_error *err)
{
    return comm_allreduce(c, buf, n, MPI_UINT64_T, sizeof *buf, err);
}

int comm_allreduce_start(comm *c, float *buf, size_t n, adapt_error *err)
{
    if (c->world == 1) return ADAPT_OK;
    for (size_t at = 0; at < n; at += COMM_SLICE) {
        if (c->n_pending == c->cap_pending) {
            size_t cap = c->cap_pending ? 2 * c->cap_pending : 64;
            MPI_Request *p = realloc(c->pending, cap * sizeof *p);
            if (!p) return adapt_fail(err, ADAPT_ENOMEM, "comm: no memory for a bucket");
            c->pending = p;
            c->cap_pending = cap;
        }
        size_t k = n - at < COMM_SLICE ? n - at : COMM_SLICE;
        int rc = comm_mpi_check(MPI_Iallreduce(MPI_IN_PLACE, buf + at, (int)k, MPI_FLOAT,
                                               MPI_SUM, MPI_COMM_WORLD,
                                               &c->pending[c->n_pending]),
                                "MPI_Iallreduce", err);
        if (rc) return rc;
        c->n_pending++;
    }
    return ADAPT_OK;
}

int comm_allreduce_wait_all(comm *c, adapt_error *err)
{
    if (c->n_pending == 0) return ADAPT_OK;
    int rc = comm_mpi_check(MPI_Waitall((int)c->n_pending, c->pending, MPI_STATUSES_IGNORE),
                            "MPI_Waitall on the gradient buckets", err);
    c->n_pending = 0;
    return rc;
}

/* The block of a ZeRO-1 collective travels as one int count. */
static int comm_shard_count(size_t shard, const char *what, adapt_error *err)
{
    if (shard <= INT_MAX) return ADAPT_OK;
    return adapt_fail(err, ADAPT_EUNSUPPORTED, "comm: %s of blocks of %zu floats: MPI counts stop "
                      "at %d; run with more ranks so each one's shard is smaller", what, shard,
                      INT_MAX);
}

int comm_reduce_scatter_f32(comm *c, const float *send, float *recv, size_t shard,
                            adapt_error *err)
{
    if (c->world == 1) {
        memmove(recv, send, shard * sizeof *recv);
        return ADAPT_OK;
    }
    if (shard == 0) return ADAPT_OK;
    int rc = comm_shard_count(shard, "reduce-scatter", err);
    if (rc) return rc;
    return comm_mpi_check(MPI_Reduce_scatter_block(send, recv, (int)shard, MPI_FLOAT, MPI_SUM,
                                                   MPI_COMM_WORLD),
                          "MPI_Reduce_scatter_block", err);
}

int comm_allgather_f32(comm *c, float *buf, size_t shard, adapt_error *err)
{
    if (c->world == 1 || shard == 0) return ADAPT_OK;
    int rc = comm_shard_count(shard, "all-gather", err);
    if (rc) return rc;
    return comm_mpi_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)shard,
                                        MPI_FLOAT, MPI_COMM_WORLD),
                          "MPI_Allgather", err);
}

#else  /* !ADAPT_HAVE_MPI: a world of one */

int comm_barrier(comm *c, adapt_error *err) { return ADAPT_OK; }

int comm_broadcast(comm *c, void *buf, size_t bytes, int root, adapt_error *err)
{
    return root == 0 ? ADAPT_OK : adapt_fail(err, ADAPT_EINVAL,
                                             "comm: broadcast root %d outside a world of 1", root);
}

int comm_allreduce_sum_f32(comm *c, float *buf, size_t n, adapt_error *err) { return ADAPT_OK; }
int comm_allreduce_sum_f64(comm *c, double *buf, size_t n, adapt_error *err) { return ADAPT_OK; }
int comm_allreduce_sum_u64(comm *c, uint64_t *buf, size_t n, adapt_error *err) { return ADAPT_OK; }
int comm_allreduce_start(comm *c, float *buf, size_t n, adapt_error *err) { return ADAPT_OK; }
int comm_allreduce_wait_all(comm *c, adapt_error *err) { return ADAPT_OK; }

int comm_reduce_scatter_f32(comm *c, const float *send, float *recv, size_t shard,
                            adapt_error *err)
{
    memmove(recv, send, shard * sizeof *recv);
    return ADAPT_OK;
}

int comm_allgather_f32(comm *c, float *buf, size_t shard, adapt_error *err) { return ADAPT_OK; }

#endif

int comm_init(comm **out, int *argc, char ***argv, adapt_error *err)
{
    *out = NULL;
    comm *c = calloc(1, sizeof *c);
    if (!c) return adapt_fail(err, ADAPT_ENOMEM, "comm: no memory");
    c->rank = 0;
    c->world = 1;
    c->local_rank = comm_env_local_rank();
    int launched = comm_env_launched_tasks();
    int rc = ADAPT_OK;
#if ADAPT_HAVE_MPI
    if (comm_env_mpi_launched()) rc = comm_mpi_init(c, argc, argv, err);
#endif
    if (!rc) rc = comm_check_world(c, launched, err);
    if (rc) {
        comm_close(c);
        return rc;
    }
    if (c->local_rank < 0) c->local_rank = 0;
    *out = c;
    return ADAPT_OK;
}

void comm_close(comm *c)
{
    if (!c) return;
#if COMM_NCCL
    comm_nccl_close(c);  /* before MPI_Finalize: its peers may still talk */
#endif
#if ADAPT_HAVE_MPI
    free(c->pending);
    if (c->mpi_owned) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
#endif
    free(c);
}

int comm_rank(const comm *c) { return c->rank; }
int comm_world(const comm *c) { return c->world; }
int comm_local_rank(const comm *c) { return c->local_rank; }
int comm_uses_mpi(const comm *c) { return c->mpi; }

/* ---- NCCL (issue 7) ----------------------------------------------------------------------- */
#if COMM_NCCL
int comm_has_nccl(void) { return 1; }

static double comm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 50 us between polls: far below a bucket's transfer time, and the host has nothing else to do */
static void comm_nap(void)
{
    struct timespec ts = {0, 50 * 1000};
    nanosleep(&ts, NULL);
}

/* Fails the job cleanly: the message (NCCL's own detail included) is taken before the abort
 * frees the communicator, and the abort unblocks anything still queued on it. */
static int comm_nccl_fail(comm *c, const char *what, const char *detail, adapt_error *err)
{
    char last[256] = "";
    const char *le = ncclGetLastError(c->nccl);
    if (le && *le && strcmp(le, detail)) snprintf(last, sizeof last, "%s", le);
    int rc = adapt_fail(err, ADAPT_EIO, "comm: NCCL %s failed on rank %d of %d: %s%s%s (the NCCL "
                        "communicator is aborted; the job fails and can be retried)", what, c->rank,
                        c->world, detail, last[0] ? ": " : "", last);
    if (c->nccl) {
        ncclCommAbort(c->nccl);
        c->nccl = NULL;
    }
    return rc;
}

static int comm_nccl_timed_out(comm *c, const char *what, adapt_error *err)
{
    char detail[192];
    snprintf(detail, sizeof detail, "not finished within the %.0f s time-out (a rank died, hangs, "
             "or lost its network)", c->nccl_timeout);
    return comm_nccl_fail(c, what, detail, err);
}

/* Non-blocking communicators: a call may return ncclInProgress, and the next call must wait
 * until the communicator settles; an error or a time-out aborts it. */
static int comm_nccl_settle(comm *c, const char *what, adapt_error *err)
{
    double t0 = comm_now();
    for (;;) {
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(c->nccl, &state);
        if (r != ncclSuccess) return comm_nccl_fail(c, what, ncclGetErrorString(r), err);
        if (state == ncclSuccess) return ADAPT_OK;
        if (state != ncclInProgress) return comm_nccl_fail(c, what, ncclGetErrorString(state), err);
        if (comm_now() - t0 > c->nccl_timeout) return comm_nccl_timed_out(c, what, err);
        comm_nap();
    }
}

/* What an enqueue returned: queued, queued later (settle), or failed (abort). */
static int comm_nccl_enqueued(comm *c, ncclResult_t r, const char *what, adapt_error *err)
{
    if (r == ncclInProgress) return comm_nccl_settle(c, what, err);
    if (r != ncclSuccess) return comm_nccl_fail(c, what, ncclGetErrorString(r), err);
    return ADAPT_OK;
}

static int comm_nccl_ready(const comm *c, const char *what, adapt_error *err)
{
    if (c->nccl) return ADAPT_OK;
    return adapt_fail(err, ADAPT_EINVAL, "comm: NCCL %s without a communicator (comm_nccl_init "
                      "first; after an NCCL failure the job must restart)", what);
}

int comm_nccl_init(comm *c, int device, double timeout_s, adapt_error *err)
{
    if (c->nccl) return adapt_fail(err, ADAPT_EINVAL, "comm: NCCL is already initialised");
    if (!(timeout_s > 0)) return adapt_fail(err, ADAPT_EINVAL, "comm: NCCL time-out must be > 0 s");
    /* Every rank first learns whether every rank can go on: a rank that cannot bind its GPU, or a
     * rank 0 that cannot make the id, fails the whole job at once instead of leaving the others
     * blocked in the broadcast or timing out in the communicator's start-up. */
    char why[384] = "";
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess)
        snprintf(why, sizeof why, "comm: NCCL start-up: rank %d cannot use GPU %d: %s (check "
                 "CUDA_VISIBLE_DEVICES and that there is one GPU per rank on the node)", c->rank,
                 device, cudaGetErrorString(ce));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0 && !why[0]) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            snprintf(why, sizeof why, "comm: NCCL start-up: ncclGetUniqueId failed: %s (is a "
                     "network interface up? NCCL_SOCKET_IFNAME selects one)", ncclGetErrorString(r));
    }
    uint64_t failed = why[0] != '\0';
    int rc = comm_allreduce_sum_u64(c, &failed, 1, err);
    if (rc) return rc;
    if (why[0]) return adapt_fail(err, ADAPT_EIO, "%s", why);
    if (failed)
        return adapt_fail(err, ADAPT_EIO, "comm: NCCL start-up failed on %llu other rank(s) (their "
                          "logs say why); rank %d stops with them", (unsigned long long)failed,
                          c->rank);
    /* rank 0 made the id; MPI carries it to everyone (a world of one broadcasts to itself) */
    rc = comm_broadcast(c, &id, sizeof id, 0, err);
    if (rc) return rc;
    c->nccl_timeout = timeout_s;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;  /* so a peer that never joins is a time-out here, not a hang */
    ncclResult_t r = ncclCommInitRankConfig(&c->nccl, c->world, id, c->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress)
        return comm_nccl_fail(c, "ncclCommInitRankConfig", ncclGetErrorString(r), err);
    return comm_nccl_settle(c, "ncclCommInitRankConfig", err);
}

int comm_nccl_allreduce_sum_f32(comm *c, float *dev_buf, size_t n, void *stream, adapt_error *err)
{
    int rc = comm_nccl_ready(c, "all-reduce", err);
    if (rc || n == 0) return rc;
    return comm_nccl_enqueued(c, ncclAllReduce(dev_buf, dev_buf, n, ncclFloat32, ncclSum, c->nccl,
                                               (cudaStream_t)stream), "ncclAllReduce", err);
}

int comm_nccl_reduce_scatter_f32(comm *c, float *dev_buf, size_t shard, void *stream,
                                 adapt_error *err)
{
    int rc = comm_nccl_ready(c, "reduce-scatter", err);
    if (rc || shard == 0) return rc;
    /* recvbuff = sendbuff + rank * recvcount is NCCL's in-place form */
    return comm_nccl_enqueued(c, ncclReduceScatter(dev_buf, dev_buf + (size_t)c->rank * shard,
                                                   shard, ncclFloat32, ncclSum, c->nccl,
                                                   (cudaStream_t)stream),
                              "ncclReduceScatter", err);
}

int comm_nccl_allgather_f32(comm *c, float *dev_buf, size_t shard, void *stream, adapt_error *err)
{
    int rc = comm_nccl_ready(c, "all-gather", err);
    if (rc || shard == 0) return rc;
    /* sendbuff = recvbuff + rank * sendcount is NCCL's in-place form */
    return comm_nccl_enqueued(c, ncclAllGather(dev_buf + (size_t)c->rank * shard, dev_buf, shard,
                                               ncclFloat32, c->nccl, (cudaStream_t)stream),
                              "ncclAllGather", err);
}

int comm_nccl_wait(comm *c, void *stream, adapt_error *err)
{
    int rc = comm_nccl_ready(c, "wait", err);
    if (rc) return rc;
    double t0 = comm_now();
    for (;;) {
        cudaError_t q = cudaStreamQuery((cudaStream_t)stream);
        /* the error state is read even when the stream is done: an aborted collective's kernel
         * ends too, and its stream then reads as finished */
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(c->nccl, &state);
        if (r != ncclSuccess)
            return comm_nccl_fail(c, "ncclCommGetAsyncError", ncclGetErrorString(r), err);
        if (state != ncclSuccess && state != ncclInProgress)
            return comm_nccl_fail(c, "collective", ncclGetErrorString(state), err);
        if (q == cudaSuccess) return ADAPT_OK;
        if (q != cudaErrorNotReady)
            return comm_nccl_fail(c, "collective's CUDA stream", cudaGetErrorString(q), err);
        if (comm_now() - t0 > c->nccl_timeout) return comm_nccl_timed_out(c, "collective", err);
        comm_nap();
    }
}

/* A clean end: ncclCommFinalize flushes what is queued and waits for the peers to get there too;
 * a peer that never does must not hang the exit, so after the time-out the communicator is
 * aborted instead. */
static void comm_nccl_close(comm *c)
{
    if (!c->nccl) return;
    ncclResult_t r = ncclCommFinalize(c->nccl);
    ncclResult_t state = r;
    if (r == ncclSuccess || r == ncclInProgress) {
        double t0 = comm_now();
        while (ncclCommGetAsyncError(c->nccl, &state) == ncclSuccess && state == ncclInProgress &&
               comm_now() - t0 <= c->nccl_timeout)
            comm_nap();
    }
    if (state == ncclSuccess)
        ncclCommDestroy(c->nccl);
    else
        ncclCommAbort(c->nccl);
    c->nccl = NULL;
}
#else
int comm_has_nccl(void) { return 0; }

static int comm_no_nccl(adapt_error *err)
{
    return adapt_fail(err, ADAPT_EUNSUPPORTED, "comm: this build has no NCCL >= 2.14 (configure "
                      "with -Dcuda=enabled on a machine with the CUDA toolkit and NCCL)");
}

int comm_nccl_init(comm *c, int device, double timeout_s, adapt_error *err)
{
    return comm_no_nccl(err);
}

int comm_nccl_allreduce_sum_f32(comm *c, float *dev_buf, size_t n, void *stream, adapt_error *err)
{
    return comm_no_nccl(err);
}

int comm_nccl_reduce_scatter_f32(comm *c, float *dev_buf, size_t shard, void *stream,
                                 adapt_error *err)
{
    return comm_no_nccl(err);
}

int comm_nccl_allgather_f32(comm *c, float *dev_buf, size_t shard, void *stream, adapt_error *err)
{
    return comm_no_nccl(err);
}

int comm_nccl_wait(comm *c, void *stream, adapt_error *err)
{
    return comm_no_nccl(err);
}
#endif
