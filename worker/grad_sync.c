/* grad_sync: gradient sums across ranks — bucketed all-reduce or ZeRO-1 — over NCCL, MPI, or MPI
 * through host staging; see grad_sync.h.
 *
 * The one idea: the transport is chosen once at open, and each of the three operations (start a
 * bucket, finish the step's reduction, gather the parameters) is one switch over it, so the
 * bucketing and sharding arithmetic is written once and every transport sums exactly the same
 * floats in the same order. */
#include "grad_sync.h"

#include "adapt_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if ADAPT_HAVE_NCCL
#include "ops_cuda.h"
#endif

typedef enum gs_transport {
    GS_NONE,     /* a world of one: nothing to sum */
    GS_MPI,      /* MPI on the backend buffers themselves (host_accessible) */
    GS_STAGED,   /* MPI on host copies: download, sum, upload */
    GS_NCCL,     /* NCCL on the device buffers, on the CUDA side stream */
} gs_transport;

typedef struct gs_range { size_t lo, hi; } gs_range;

struct grad_sync {
    comm            *c;
    const ops_table *ops;
    grad_sync_mode   mode;
    gs_transport     transport;
    int              rank, world;
    float           *params, *grads;   /* backend memory, [buffer_floats] each */
    size_t           begin, end;       /* trainable floats */
    size_t           buffer_floats;
    size_t           shard;            /* ZERO1: S floats per rank */
    size_t           bucket_floats;
    size_t           lo, hi;           /* ALLREDUCE: the pending bucket, empty when lo == hi */
    size_t           started;          /* buckets started this step */
    size_t           done;             /* buckets the last reduce completed */
    int              failed;           /* an error was kept or returned: the grad_sync is spent */
    adapt_error      kept;             /* the first error of grad_sync_ready */
    float           *host;    /* staging: ALLREDUCE [end - begin] (float i at i - begin); ZERO1
                               * [world * S] (the padded range) */
    float           *recv;    /* ZERO1 over MPI: [S], the reduce-scatter's output */
    gs_range        *staged;  /* GS_STAGED ALLREDUCE: buckets in flight, uploaded after the wait */
    size_t           n_staged, cap_staged;
    void            *side;    /* GS_NCCL: the cudaStream_t collectives run on */
};

static const char *const gs_transport_names[] = { "none", "mpi", "mpi-staged", "nccl" };

int grad_sync_nccl_timeout_s(double *out, adapt_error *err)
{
    *out = GRAD_SYNC_NCCL_TIMEOUT_S;
    const char *s = getenv("ADAPT_NCCL_TIMEOUT_S");
    if (!s || !*s) return ADAPT_OK;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v) || !(v > 0))
        return adapt_fail(err, ADAPT_EINVAL, "ADAPT_NCCL_TIMEOUT_S=\"%.64s\": expected a number of "
                          "seconds > 0 (how long an NCCL collective may take before the job "
                          "fails)", s);
    *out = v;
    return ADAPT_OK;
}


/* Room for one more staged bucket. The list reaches its size in the first step and stays. */
static int gs_staged_push(grad_sync *gs, size_t lo, size_t hi, adapt_error *err)
{
    if (gs->n_staged == gs->cap_staged) {
        size_t cap = gs->cap_staged ? 2 * gs->cap_staged : 64;
        gs_range *r = realloc(gs->staged, cap * sizeof *r);
        if (!r) return adapt_fail(err, ADAPT_ENOMEM, "grad_sync: no memory for a staged bucket");
        gs->staged = r;
        gs->cap_staged = cap;
    }
    gs->staged[gs->n_staged++] = (gs_range){ lo, hi };
    return ADAPT_OK;
}

/* Starts the sum of grads [lo, hi) across ranks; it completes in grad_sync_reduce. */
static int gs_bucket_start(grad_sync *gs, size_t lo, size_t hi, adapt_error *err)
{
    size_t n = hi - lo;
    int rc = ADAPT_OK;
    switch (gs->transport) {
    case GS_NONE:
        return ADAPT_OK;
    case GS_MPI:
        rc = comm_allreduce_start(gs->c, gs->grads + lo, n, err);
        break;
    case GS_STAGED: {
        /* the bucket's own slice of the host copy: buckets in flight never share floats */
        float *h = gs->host + (lo - gs->begin);
        gs->ops->mem_download(h, gs->grads + lo, n * sizeof *h);
        rc = gs_staged_push(gs, lo, hi, err);
        if (!rc) rc = comm_allreduce_start(gs->c, h, n, err);
        break;
    }
    case GS_NCCL:
#if ADAPT_HAVE_NCCL
        /* the side stream must not read the bucket before backward's kernels that wrote it */
        ops_cuda_side_wait_compute();
        rc = comm_nccl_allreduce_sum_f32(gs->c, gs->grads + lo, n, gs->side, err);
#endif
        break;
    }
    if (!rc) gs->started++;
    return rc;
}

/* Starts the pending bucket. grad_sync_ready cannot return an error, so the first one is kept
 * (in gs->kept) for grad_sync_reduce, and no bucket starts after it. */
static void gs_flush(grad_sync *gs)
{
    if (gs->lo < gs->hi && !gs->failed && gs_bucket_start(gs, gs->lo, gs->hi, &gs->kept))
        gs->failed = 1;
    gs->lo = gs->hi = 0;
}

void grad_sync_ready(void *ctx, size_t offset, size_t count)
{
    grad_sync *gs = ctx;
    if (gs->mode != GRAD_SYNC_ALLREDUCE || gs->transport == GS_NONE || gs->failed) return;
    if (offset >= gs->end) return;  /* past the trainable range */
    size_t lo = offset > gs->begin ? offset : gs->begin;
    size_t hi = count < gs->end - offset ? offset + count : gs->end;
    if (lo >= hi) return;  /* frozen, or empty */
    if (gs->lo == gs->hi) {
        gs->lo = lo;
        gs->hi = hi;
    } else if (lo == gs->hi) {
        gs->hi = hi;
    } else if (hi == gs->lo) {
        gs->lo = lo;
    } else {
        gs_flush(gs);
        gs->lo = lo;
        gs->hi = hi;
    }
    /* full buckets go at once, from the low end; the remainder waits for its neighbours */
    while (gs->hi - gs->lo >= gs->bucket_floats && !gs->failed) {
        size_t keep_lo = gs->lo + gs->bucket_floats, keep_hi = gs->hi;
        gs->hi = keep_lo;
        gs_flush(gs);
        gs->lo = keep_lo;
        gs->hi = keep_hi;
    }
}

/* A call that failed leaves the grad_sync spent: buckets of this step may still be in flight on
 * the other ranks, and nothing says which of them this rank's later calls would pair with. */
static int gs_fail(grad_sync *gs, int rc)
{
    if (rc) gs->failed = 1;
    return rc;
}

static int gs_spent(const grad_sync *gs, adapt_error *err)
{
    return adapt_fail(err, ADAPT_EINVAL, "grad_sync: used after an earlier failure (the job must "
                      "restart)");
}

#if ADAPT_HAVE_NCCL
/* Waits for the side stream's collectives (polling NCCL's errors, with the time-out), then
 * orders the compute stream after them, so the optimizer's kernels read the sums. */
static int gs_nccl_finish(grad_sync *gs, adapt_error *err)
{
    int rc = comm_nccl_wait(gs->c, gs->side, err);
    if (!rc) ops_cuda_compute_wait_side();
    return rc;
}
#endif

static int gs_allreduce_finish(grad_sync *gs, adapt_error *err)
{
    gs_flush(gs);
    if (gs->failed) {
        if (!gs->kept.code) return gs_spent(gs, err);
        if (err) *err = gs->kept;
        return gs->kept.code;
    }
    int rc = ADAPT_OK;
    switch (gs->transport) {
    case GS_NONE:
        break;
    case GS_MPI:
        rc = comm_allreduce_wait_all(gs->c, err);
        break;
    case GS_STAGED:
        rc = comm_allreduce_wait_all(gs->c, err);
        for (size_t i = 0; !rc && i < gs->n_staged; i++) {
            const gs_range *r = &gs->staged[i];
            gs->ops->mem_upload(gs->grads + r->lo, gs->host + (r->lo - gs->begin),
                                (r->hi - r->lo) * sizeof(float));
        }
        gs->n_staged = 0;
        break;
    case GS_NCCL:
#if ADAPT_HAVE_NCCL
        if (gs->started) rc = gs_nccl_finish(gs, err);
#endif
        break;
    }
    gs->done = gs->started;
    gs->started = 0;
    return rc;
}

/* ZERO1: this rank's shard of grads becomes the sum over ranks of that shard. */
static int gs_reduce_scatter(grad_sync *gs, adapt_error *err)
{
    size_t S = gs->shard, own = gs->begin + (size_t)gs->rank * S;
    int rc = ADAPT_OK;
    switch (gs->transport) {
    case GS_NONE:
        break;
    case GS_MPI:
        rc = comm_reduce_scatter_f32(gs->c, gs->grads + gs->begin, gs->recv, S, err);
        if (!rc) memcpy(gs->grads + own, gs->recv, S * sizeof(float));
        break;
    case GS_STAGED:
        gs->ops->mem_download(gs->host, gs->grads + gs->begin, (size_t)gs->world * S * sizeof(float));
        rc = comm_reduce_scatter_f32(gs->c, gs->host, gs->recv, S, err);
        if (!rc) gs->ops->mem_upload(gs->grads + own, gs->recv, S * sizeof(float));
        break;
    case GS_NCCL:
#if ADAPT_HAVE_NCCL
        ops_cuda_side_wait_compute();
        rc = comm_nccl_reduce_scatter_f32(gs->c, gs->grads + gs->begin, S, gs->side, err);
        if (!rc) rc = gs_nccl_finish(gs, err);
#endif
        break;
    }
    return rc;
}

int grad_sync_reduce(grad_sync *gs, adapt_error *err)
{
    if (gs->mode == GRAD_SYNC_ALLREDUCE) return gs_fail(gs, gs_allreduce_finish(gs, err));
    if (gs->failed) return gs_spent(gs, err);
    if (gs->transport == GS_NONE || gs->shard == 0) return ADAPT_OK;
    return gs_fail(gs, gs_reduce_scatter(gs, err));
}

int grad_sync_gather_params(grad_sync *gs, adapt_error *err)
{
    if (gs->failed) return gs_spent(gs, err);
    if (gs->mode != GRAD_SYNC_ZERO1 || gs->transport == GS_NONE || gs->shard == 0) return ADAPT_OK;
    size_t S = gs->shard, own = (size_t)gs->rank * S;
    int rc = ADAPT_OK;
    switch (gs->transport) {
    case GS_NONE:
        break;
    case GS_MPI:
        rc = comm_allgather_f32(gs->c, gs->params + gs->begin, S, err);
        break;
    case GS_STAGED:
        gs->ops->mem_download(gs->host + own, gs->params + gs->begin + own, S * sizeof(float));
        rc = comm_allgather_f32(gs->c, gs->host, S, err);
        /* every block but this rank's own, which is already in place */
        if (!rc && own > 0) gs->ops->mem_upload(gs->params + gs->begin, gs->host, own * sizeof(float));
        if (!rc && own + S < (size_t)gs->world * S)
            gs->ops->mem_upload(gs->params + gs->begin + own + S, gs->host + own + S,
                                ((size_t)gs->world * S - own - S) * sizeof(float));
        break;
    case GS_NCCL:
#if ADAPT_HAVE_NCCL
        /* the optimizer's update of this rank's shard must land before it is sent */
        ops_cuda_side_wait_compute();
        rc = comm_nccl_allgather_f32(gs->c, gs->params + gs->begin, S, gs->side, err);
        if (!rc) rc = gs_nccl_finish(gs, err);
#endif
        break;
    }
    return gs_fail(gs, rc);
}

int grad_sync_norm_sum(void *ctx, double *sumsq, adapt_error *err)
{
    grad_sync *gs = ctx;
    if (gs->failed) return gs_spent(gs, err);
    if (gs->mode != GRAD_SYNC_ZERO1 || gs->transport == GS_NONE) return ADAPT_OK;
    return gs_fail(gs, comm_allreduce_sum_f64(gs->c, sumsq, 1, err));
}

void grad_sync_shard(const grad_sync *gs, size_t *lo, size_t *hi)
{
    if (gs->mode == GRAD_SYNC_ZERO1) {
        *lo = gs->begin + (size_t)gs->rank * gs->shard;
        *hi = *lo + gs->shard;
    } else {
        *lo = gs->begin;
        *hi = gs->end;
    }
}

void grad_sync_set_bucket_floats(grad_sync *gs, size_t floats)
{
    gs->bucket_floats = floats ? floats : 1;
}

size_t grad_sync_buckets(const grad_sync *gs) { return gs->done; }

const char *grad_sync_transport(const grad_sync *gs) { return gs_transport_names[gs->transport]; }

/* Which transport this backend and build get (see grad_sync.h). */
static gs_transport gs_pick(const comm *c, const ops_table *ops)
{
    if (comm_world(c) == 1) return GS_NONE;
#if ADAPT_HAVE_NCCL
    if (!strcmp(ops->backend, "cuda") && comm_has_nccl()) return GS_NCCL;
#endif
    return ops->host_accessible ? GS_MPI : GS_STAGED;
}

/* Host buffers the transport needs, all allocated here, once. */
static int gs_alloc(grad_sync *gs, adapt_error *err)
{
    size_t host = 0, recv = 0;
    if (gs->mode == GRAD_SYNC_ZERO1) {
        if (gs->transport == GS_MPI || gs->transport == GS_STAGED) recv = gs->shard;
        if (gs->transport == GS_STAGED) host = (size_t)gs->world * gs->shard;
    } else if (gs->transport == GS_STAGED) {
        host = gs->end - gs->begin;
    }
    if (host && !(gs->host = malloc(host * sizeof(float))))
        return adapt_fail(err, ADAPT_ENOMEM, "grad_sync: no memory for the %zu-float host staging "
                          "buffer", host);
    if (recv && !(gs->recv = malloc(recv * sizeof(float))))
        return adapt_fail(err, ADAPT_ENOMEM, "grad_sync: no memory for the %zu-float shard buffer",
                          recv);
    return ADAPT_OK;
}

#if ADAPT_HAVE_NCCL
static int gs_nccl_open(grad_sync *gs, adapt_error *err)
{
    double timeout;
    int rc = grad_sync_nccl_timeout_s(&timeout, err);
    if (rc) return rc;
    /* The communicator must live on the GPU the buffers are on: binding the backend to the local
     * rank's GPU is a no-op when the worker did so already, and an error naming both GPUs when
     * it bound another one. */
    int device = comm_local_rank(gs->c);
    char msg[300];
    if (ops_cuda_set_device(device, msg, sizeof msg))
        return adapt_fail(err, ADAPT_EIO, "grad_sync: NCCL on GPU %d (the local rank): %s", device,
                          msg);
    gs->side = ops_cuda_side_stream();
    if (!gs->side) {
        ops_cuda_sync(msg, sizeof msg);
        return adapt_fail(err, ADAPT_EIO, "grad_sync: NCCL needs the CUDA backend's side stream, "
                          "and the backend's set-up failed: %s", msg);
    }
    return comm_nccl_init(gs->c, device, timeout, err);
}
#endif

int grad_sync_open(grad_sync **out, comm *c, const ops_table *ops, grad_sync_mode mode,
                   float *params, float *grads, size_t begin, size_t end, size_t buffer_floats,
                   adapt_error *err)
{
    *out = NULL;
    if (mode != GRAD_SYNC_ALLREDUCE && mode != GRAD_SYNC_ZERO1)
        return adapt_fail(err, ADAPT_EINVAL, "grad_sync: unknown mode %d", (int)mode);
    if (!params || !grads || begin > end || end > buffer_floats)
        return adapt_fail(err, ADAPT_EINVAL, "grad_sync: the trainable range [%zu, %zu) does not "
                          "fit buffers of %zu floats", begin, end, buffer_floats);
    grad_sync *gs = calloc(1, sizeof *gs);
    if (!gs) return adapt_fail(err, ADAPT_ENOMEM, "grad_sync: no memory");
    *gs = (grad_sync){ .c = c, .ops = ops, .mode = mode, .rank = comm_rank(c),
                       .world = comm_world(c), .params = params, .grads = grads, .begin = begin,
                       .end = end, .buffer_floats = buffer_floats,
                       .bucket_floats = GRAD_SYNC_BUCKET_FLOATS };
    gs->transport = gs_pick(c, ops);
    int rc = ADAPT_OK;
    if (mode == GRAD_SYNC_ZERO1) {
        size_t n = end - begin, w = (size_t)gs->world;
        gs->shard = (n + w - 1) / w;
        if (gs->shard > (buffer_floats - begin) / w)
            rc = adapt_fail(err, ADAPT_EINVAL, "grad_sync: ZeRO-1 over %d ranks pads the %zu "
                            "trainable floats to %zu, past the end of the %zu-float buffers (the "
                            "model's slack holds the padding of up to 4096 ranks)", gs->world, n,
                            w * gs->shard, buffer_floats - begin);
    }
    if (!rc) rc = gs_alloc(gs, err);
#if ADAPT_HAVE_NCCL
    if (!rc && gs->transport == GS_NCCL) rc = gs_nccl_open(gs, err);
#endif
    if (rc) {
        grad_sync_close(gs);
        return rc;
    }
    *out = gs;
    return ADAPT_OK;
}

void grad_sync_close(grad_sync *gs)
{
    if (!gs) return;
    free(gs->host);
    free(gs->recv);
    free(gs->staged);
    free(gs);
}
