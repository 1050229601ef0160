/* test_grad_sync: gradient sums across ranks (worker/grad_sync.c).
 *
 * Without arguments (a plain process, a world of one): every call is a no-op that leaves the
 * buffers as they were; the shard is the whole trainable range; the refusals of open;
 * ADAPT_NCCL_TIMEOUT_S; the TrainSpec rule of zero_stage; in a build with NCCL, the NCCL calls'
 * refusals that need no GPU (a GPU that does not exist, calls before the communicator).
 *
 * With --mpi, under `mpirun -np 2` or `-np 3` (3 makes the ZeRO-1 shards uneven), on three
 * backends: "cpu" (MPI straight on the buffers), a copy of the cpu table that says it is not
 * host_accessible (MPI through host staging, on plain memory), and "cpu-guarded" (the same
 * staging over memory the host cannot touch, so a stray host access faults):
 *   - ALLREDUCE: every rank's seeded gradients, reported in many small ranges, in backward's
 *     descending order with jumps, end as the exact sum (computed here from every rank's seeds),
 *     the frozen prefix untouched, the slack zero; bucket counts for known patterns; a second
 *     step on the same grad_sync; a range past the default bucket size on cpu;
 *   - ZERO1: after reduce each rank's shard holds the exact sum of that shard; after each rank
 *     writes its own values into its shard, gather_params gives every rank the concatenation;
 *     the padding in the slack stays zero; open refuses buffers without room for the padding.
 * Gradient values are multiples of 1/8 below 2^10, so float sums are exact and checks use ==. */
#include "adapt_config.h"
#include "check.h"
#include "comm.h"
#include "grad_sync.h"
#include "ops.h"
#include "train_rules.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SLACK = 4096 };

/* The seeded gradient of float i on rank r: a multiple of 1/8 in [-125, 125]. */
static float seed_grad(int r, size_t i, unsigned step)
{
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15u ^ ((uint64_t)r + 1) * 0xC2B2AE3D27D4EB4Fu ^
                 ((uint64_t)step + 7) * 0x165667B19E3779F9u;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 32;
    return (float)((int)(h % 2001) - 1000) / 8.0f;
}

/* A backend buffer of n floats holding host[0..n). */
static float *upload(const ops_table *ops, const float *host, size_t n)
{
    float *d = ops->mem_alloc(n * sizeof *d);
    CHECK(d != NULL);
    if (d) ops->mem_upload(d, host, n * sizeof *d);
    return d;
}

static float *download(const ops_table *ops, const float *d, size_t n)
{
    float *h = malloc(n * sizeof *h);
    ops->mem_download(h, d, n * sizeof *h);
    return h;
}

/* ---- a world of one ------------------------------------------------------------------------ */

static void test_single(void)
{
    comm *c;
    adapt_error e = {0};
    CHECK_MSG(comm_init(&c, NULL, NULL, &e) == ADAPT_OK, "%s", e.message);
    if (!c) return;
    const ops_table *ops = ops_cpu();
    size_t n = 1000, begin = 10, total = n + SLACK;
    float *hp = calloc(total, sizeof *hp), *hg = calloc(total, sizeof *hg);
    for (size_t i = 0; i < n; i++) {
        hp[i] = (float)i;
        hg[i] = seed_grad(0, i, 0);
    }
    for (int mode = GRAD_SYNC_ALLREDUCE; mode <= GRAD_SYNC_ZERO1; mode++) {
        float *p = upload(ops, hp, total), *g = upload(ops, hg, total);
        grad_sync *gs;
        CHECK_MSG(grad_sync_open(&gs, c, ops, (grad_sync_mode)mode, p, g, begin, n, total, &e) ==
                  ADAPT_OK, "%s", e.message);
        CHECK(!strcmp(grad_sync_transport(gs), "none"));
        size_t lo, hi;
        grad_sync_shard(gs, &lo, &hi);
        CHECK(lo == begin && hi == n);   /* ZeRO-1 over one rank: the whole range */
        grad_sync_ready(gs, 0, n);
        CHECK(grad_sync_reduce(gs, &e) == ADAPT_OK);
        CHECK(grad_sync_gather_params(gs, &e) == ADAPT_OK);
        CHECK(grad_sync_buckets(gs) == 0);
        CHECK(!memcmp(p, hp, total * sizeof *p) && !memcmp(g, hg, total * sizeof *g));
        double sumsq = 2.5;
        CHECK(grad_sync_norm_sum(gs, &sumsq, &e) == ADAPT_OK && sumsq == 2.5);
        grad_sync_close(gs);
        ops->mem_free(p);
        ops->mem_free(g);
    }
    /* the range must fit the buffers */
    grad_sync *gs = NULL;
    CHECK(grad_sync_open(&gs, c, ops, GRAD_SYNC_ALLREDUCE, hp, hg, 10, total + 1, total, &e) ==
          ADAPT_EINVAL && gs == NULL);
    CHECK_STR_CONTAINS(e.message, "does not fit");
    CHECK(grad_sync_open(&gs, c, ops, (grad_sync_mode)7, hp, hg, 0, n, total, &e) == ADAPT_EINVAL);
    grad_sync_close(NULL);
    free(hp);
    free(hg);
    comm_close(c);
}

static void test_nccl_timeout(void)
{
    adapt_error e = {0};
    double t = 0;
    unsetenv("ADAPT_NCCL_TIMEOUT_S");
    CHECK(grad_sync_nccl_timeout_s(&t, &e) == ADAPT_OK && t == 600.0);
    setenv("ADAPT_NCCL_TIMEOUT_S", "12.5", 1);
    CHECK(grad_sync_nccl_timeout_s(&t, &e) == ADAPT_OK && t == 12.5);
    static const char *const bad[] = { "0", "-3", "ten", "5s", "inf", "nan" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("ADAPT_NCCL_TIMEOUT_S", bad[i], 1);
        CHECK_MSG(grad_sync_nccl_timeout_s(&t, &e) == ADAPT_EINVAL, "%s accepted", bad[i]);
        CHECK_STR_CONTAINS(e.message, "ADAPT_NCCL_TIMEOUT_S");
    }
    unsetenv("ADAPT_NCCL_TIMEOUT_S");
#if !ADAPT_HAVE_NCCL
    comm *c;
    if (comm_init(&c, NULL, NULL, &e) == ADAPT_OK) {
        CHECK(!comm_has_nccl());
        CHECK(comm_nccl_init(c, 0, 600, &e) == ADAPT_EUNSUPPORTED);
        CHECK_STR_CONTAINS(e.message, "NCCL");
        comm_close(c);
    }
#else
    /* what runs of the NCCL code without a GPU: the refusals before any collective */
    comm *c;
    if (comm_init(&c, NULL, NULL, &e) == ADAPT_OK) {
        CHECK(comm_has_nccl());
        CHECK(comm_nccl_init(c, 0, 0, &e) == ADAPT_EINVAL);
        CHECK(comm_nccl_init(c, 9999, 600, &e) == ADAPT_EIO);   /* no such GPU */
        CHECK_STR_CONTAINS(e.message, "NCCL start-up: rank 0 cannot use GPU 9999");
        float x = 0;
        CHECK(comm_nccl_allreduce_sum_f32(c, &x, 1, NULL, &e) == ADAPT_EINVAL);
        CHECK_STR_CONTAINS(e.message, "NCCL all-reduce without a communicator");
        CHECK(comm_nccl_reduce_scatter_f32(c, &x, 1, NULL, &e) == ADAPT_EINVAL);
        CHECK(comm_nccl_allgather_f32(c, &x, 1, NULL, &e) == ADAPT_EINVAL);
        CHECK(comm_nccl_wait(c, NULL, &e) == ADAPT_EINVAL);
        comm_close(c);
    }
#endif
}

/* zero_stage in the TrainSpec rules: default 0, 1 kept, 2 refused naming the member. */
static void test_zero_stage_rule(void)
{
    for (unsigned v = 0; v <= 2; v++) {
        Adaptd__TrainSpec *t = malloc(sizeof *t);   /* free_unpacked frees the message too */
        adaptd__train_spec__init(t);
        t->model_path = strdup("/m");
        t->corpus = strdup("/c");
        t->output_dir = strdup("/o");
        train_rules_given g = {0};
        CHECK(train_rules_mark(&g.top, TRAIN_RULES_TRAIN, "model_path") == 0);
        CHECK(train_rules_mark(&g.top, TRAIN_RULES_TRAIN, "corpus") == 0);
        CHECK(train_rules_mark(&g.top, TRAIN_RULES_TRAIN, "output_dir") == 0);
        if (v > 0) {
            t->zero_stage = v;
            CHECK(train_rules_mark(&g.top, TRAIN_RULES_TRAIN, "zero_stage") == 0);
        } else {
            t->zero_stage = 9;   /* not given: the default replaces whatever is there */
        }
        char field[TRAIN_RULES_FIELD_MAX] = "";
        adapt_error e = {0};
        int rc = train_rules_fill(t, &g, field, &e);
        if (v < 2) {
            CHECK_MSG(rc == ADAPT_OK && t->zero_stage == v, "zero_stage %u: %s", v, e.message);
        } else {
            CHECK(rc == ADAPT_EINVAL);
            CHECK_MSG(!strcmp(field, "zero_stage"), "field %s", field);
            CHECK_STR_CONTAINS(e.message, "2 is outside [0, 1]");
        }
        adaptd__train_spec__free_unpacked(t, NULL);
    }
}

/* ---- under mpirun --------------------------------------------------------------------------- */

typedef struct world_ctx {
    comm *c;
    int   rank, world;
} world_ctx;

/* The exact sum over ranks of float i's seeded gradient. */
static float sum_grad(int world, size_t i, unsigned step)
{
    float s = 0;
    for (int r = 0; r < world; r++) s += seed_grad(r, i, step);
    return s;
}

/* Host gradients of rank r for one step: seeded on [0, n), zero slack. */
static float *host_grads(int r, size_t n, size_t total, unsigned step)
{
    float *h = calloc(total, sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = seed_grad(r, i, step);
    return h;
}

/* Reports [0, n) as backward would: chunks of 1..300 floats from the top down (adjacent: they
 * merge), every 7th chunk held back and reported after the next one (a jump: the pending bucket
 * is started), one range straddling into the frozen prefix, one past the end. The chunk sizes
 * come from a fixed seed, so every rank reports the same ranges in the same order. */
static void report_backward(grad_sync *gs, size_t n, size_t slack)
{
    grad_sync_ready(gs, n, slack / 2);   /* past end: ignored */
    size_t hi = n, held_lo = 0, held_n = 0;
    unsigned k = 0;
    while (hi > 0) {
        size_t len = 1 + (size_t)((k * 2654435761u) >> 8) % 300;
        if (len > hi) len = hi;
        size_t lo = hi - len;
        if (k % 7 == 3 && !held_n) {
            held_lo = lo;
            held_n = len;
        } else {
            grad_sync_ready(gs, lo, len);
            if (held_n) {
                grad_sync_ready(gs, held_lo, held_n);
                held_n = 0;
            }
        }
        hi = lo;
        k++;
    }
    if (held_n) grad_sync_ready(gs, held_lo, held_n);
}

/* Counts floats of d[lo, hi) that differ from want(i); the first few are printed. */
#define COUNT_BAD(bad, lo, hi, got, want_expr, what) do {                                     \
        for (size_t i_ = (lo); i_ < (hi); i_++) {                                             \
            size_t i = i_;                                                                    \
            float w_ = (want_expr);                                                           \
            if ((got)[i] != w_ && (bad)++ < 3)                                                \
                fprintf(stderr, "  %s: float %zu is %g, expected %g\n", (what), i,            \
                        (double)(got)[i], (double)w_);                                        \
        }                                                                                     \
    } while (0)

static void test_allreduce(const world_ctx *w, const ops_table *ops, const char *transport)
{
    size_t n = 10008, begin = 11, total = n + SLACK;
    adapt_error e = {0};
    float *hp = calloc(total, sizeof *hp);
    float *p = upload(ops, hp, total);
    float *hg = host_grads(w->rank, n, total, 0);
    float *g = upload(ops, hg, total);
    grad_sync *gs;
    CHECK_MSG(grad_sync_open(&gs, w->c, ops, GRAD_SYNC_ALLREDUCE, p, g, begin, n, total, &e) ==
              ADAPT_OK, "%s", e.message);
    if (!gs) return;
    CHECK_MSG(!strcmp(grad_sync_transport(gs), transport), "%s: transport %s, expected %s",
              ops->backend, grad_sync_transport(gs), transport);
    size_t lo, hi;
    grad_sync_shard(gs, &lo, &hi);
    CHECK(lo == begin && hi == n);
    for (unsigned step = 0; step < 2; step++) {
        if (step) {   /* a second step on the same grad_sync: fresh gradients */
            free(hg);
            hg = host_grads(w->rank, n, total, step);
            ops->mem_upload(g, hg, total * sizeof *hg);
        }
        grad_sync_set_bucket_floats(gs, step ? 1000 : 97);
        report_backward(gs, n, SLACK);
        CHECK_MSG(grad_sync_reduce(gs, &e) == ADAPT_OK, "%s", e.message);
        CHECK_MSG(grad_sync_buckets(gs) > (n - begin) / (step ? 1000 : 97),
                  "%zu buckets", grad_sync_buckets(gs));
        float *got = download(ops, g, total);
        size_t bad = 0;
        COUNT_BAD(bad, 0, begin, got, hg[i], "frozen prefix");
        COUNT_BAD(bad, begin, n, got, sum_grad(w->world, i, step), "sum");
        COUNT_BAD(bad, n, total, got, 0.0f, "slack");
        CHECK_MSG(bad == 0, "%s step %u: %zu wrong floats", ops->backend, step, bad);
        free(got);
    }
    /* bucket counts: one adjacent run under a big bucket is one bucket; one range of 1000 under
     * 100-float buckets is ten; two ranges with a gap are two */
    grad_sync_set_bucket_floats(gs, 1 << 20);
    for (size_t at = begin; at < n; at += 50) grad_sync_ready(gs, at, 50);
    CHECK(grad_sync_reduce(gs, &e) == ADAPT_OK && grad_sync_buckets(gs) == 1);
    for (size_t top = n; top > 0; top -= top < 50 ? top : 50)   /* backward's order: downwards */
        grad_sync_ready(gs, top < 50 ? 0 : top - 50, top < 50 ? top : 50);
    CHECK(grad_sync_reduce(gs, &e) == ADAPT_OK && grad_sync_buckets(gs) == 1);
    grad_sync_set_bucket_floats(gs, 100);
    grad_sync_ready(gs, 2000, 1000);
    CHECK(grad_sync_reduce(gs, &e) == ADAPT_OK && grad_sync_buckets(gs) == 10);
    grad_sync_ready(gs, 5000, 10);
    grad_sync_ready(gs, 20, 10);
    CHECK(grad_sync_reduce(gs, &e) == ADAPT_OK && grad_sync_buckets(gs) == 2);
    CHECK(grad_sync_reduce(gs, &e) == ADAPT_OK && grad_sync_buckets(gs) == 0);
    CHECK(grad_sync_gather_params(gs, &e) == ADAPT_OK);   /* ALLREDUCE: nothing */
    double sumsq = 2.5;   /* every rank holds the whole gradient: its norm is not summed */
    CHECK(grad_sync_norm_sum(gs, &sumsq, &e) == ADAPT_OK && sumsq == 2.5);
    float *gp = download(ops, p, total);
    CHECK(!memcmp(gp, hp, total * sizeof *gp));
    free(gp);
    grad_sync_close(gs);
    ops->mem_free(p);
    ops->mem_free(g);
    free(hp);
    free(hg);
}

/* One range larger than the default bucket (2 buckets), on the cpu backend only (size). */
static void test_allreduce_big(const world_ctx *w)
{
    const ops_table *ops = ops_cpu();
    size_t n = GRAD_SYNC_BUCKET_FLOATS + 12345, total = n + SLACK;
    float *p = ops->mem_alloc(total * sizeof *p);
    float *hg = host_grads(w->rank, n, total, 5);
    float *g = upload(ops, hg, total);
    grad_sync *gs;
    adapt_error e = {0};
    CHECK_MSG(grad_sync_open(&gs, w->c, ops, GRAD_SYNC_ALLREDUCE, p, g, 0, n, total, &e) ==
              ADAPT_OK, "%s", e.message);
    if (!gs) return;
    grad_sync_ready(gs, 0, n);
    CHECK_MSG(grad_sync_reduce(gs, &e) == ADAPT_OK, "%s", e.message);
    CHECK(grad_sync_buckets(gs) == 2);
    size_t bad = 0;
    COUNT_BAD(bad, 0, n, g, sum_grad(w->world, i, 5), "big sum");
    CHECK_MSG(bad == 0, "%zu wrong floats", bad);
    grad_sync_close(gs);
    ops->mem_free(p);
    ops->mem_free(g);
    free(hg);
}

/* The value rank r writes into float i of its parameter shard. */
static float shard_value(int r, size_t i) { return (float)(100000 * (r + 1)) + (float)i; }

static void test_zero1(const world_ctx *w, const ops_table *ops, size_t n, size_t begin)
{
    size_t total = n + SLACK, W = (size_t)w->world;
    size_t S = (n - begin + W - 1) / W;
    adapt_error e = {0};
    float *hp = calloc(total, sizeof *hp);
    for (size_t i = 0; i < n; i++) hp[i] = -(float)i;   /* the same on every rank */
    float *p = upload(ops, hp, total);
    float *hg = host_grads(w->rank, n, total, 3);
    float *g = upload(ops, hg, total);
    grad_sync *gs;
    CHECK_MSG(grad_sync_open(&gs, w->c, ops, GRAD_SYNC_ZERO1, p, g, begin, n, total, &e) ==
              ADAPT_OK, "%s", e.message);
    if (!gs) return;
    size_t lo, hi;
    grad_sync_shard(gs, &lo, &hi);
    CHECK_MSG(lo == begin + (size_t)w->rank * S && hi == lo + S, "shard [%zu, %zu), S %zu", lo, hi,
              S);
    double sumsq = (double)(w->rank + 1) * 0.25;   /* the shards' squared norms add up */
    CHECK(grad_sync_norm_sum(gs, &sumsq, &e) == ADAPT_OK);
    CHECK_MSG(sumsq == 0.125 * w->world * (w->world + 1), "sumsq %g", sumsq);
    report_backward(gs, n, SLACK);   /* ZeRO-1 ignores the ranges */
    CHECK_MSG(grad_sync_reduce(gs, &e) == ADAPT_OK, "%s", e.message);
    CHECK(grad_sync_buckets(gs) == 0);
    float *got = download(ops, g, total);
    size_t bad = 0, top = hi < n ? hi : n;
    COUNT_BAD(bad, lo, top, got, sum_grad(w->world, i, 3), "shard sum");
    COUNT_BAD(bad, n, total, got, 0.0f, "grad slack");   /* the padding summed zeros */
    COUNT_BAD(bad, 0, begin, got, hg[i], "frozen prefix");
    CHECK_MSG(bad == 0, "%s: %zu wrong gradient floats", ops->backend, bad);
    free(got);

    /* the optimizer's part: this rank writes its own shard, clipped to end as optim does */
    float *mine = malloc((S ? S : 1) * sizeof *mine);
    for (size_t i = lo; i < top; i++) mine[i - lo] = shard_value(w->rank, i);
    if (top > lo) ops->mem_upload(p + lo, mine, (top - lo) * sizeof *mine);
    CHECK_MSG(grad_sync_gather_params(gs, &e) == ADAPT_OK, "%s", e.message);
    got = download(ops, p, total);
    bad = 0;
    COUNT_BAD(bad, 0, begin, got, hp[i], "frozen parameters");
    COUNT_BAD(bad, begin, n, got, shard_value((int)((i - begin) / S), i), "gathered");
    COUNT_BAD(bad, n, total, got, 0.0f, "parameter slack");
    CHECK_MSG(bad == 0, "%s: %zu wrong parameter floats", ops->backend, bad);
    free(got);
    free(mine);
    grad_sync_close(gs);

    /* without room in the slack for the padding, open refuses (when there is padding) */
    if ((n - begin) % W) {
        gs = NULL;
        CHECK(grad_sync_open(&gs, w->c, ops, GRAD_SYNC_ZERO1, p, g, begin, n, n, &e) ==
              ADAPT_EINVAL && gs == NULL);
        CHECK_STR_CONTAINS(e.message, "ZeRO-1");
    }
    ops->mem_free(p);
    ops->mem_free(g);
    free(hp);
    free(hg);
}

static void test_mpi(int *argc, char ***argv)
{
    world_ctx w;
    adapt_error e = {0};
    CHECK_MSG(comm_init(&w.c, argc, argv, &e) == ADAPT_OK, "%s", e.message);
    if (!w.c) return;
    w.rank = comm_rank(w.c);
    w.world = comm_world(w.c);
    CHECK_MSG(w.world >= 2, "world %d: run under mpirun -np 2 or more", w.world);
    /* the staged transport on plain memory: the cpu table, minus host_accessible */
    ops_table staged = *ops_cpu();
    staged.backend = "cpu-staged-test";
    staged.host_accessible = 0;
    const struct { const ops_table *ops; const char *transport; } backends[] = {
        { ops_cpu(), "mpi" },
        { &staged, "mpi-staged" },
        { ops_cpu_guarded(), "mpi-staged" },
    };
    for (size_t b = 0; b < sizeof backends / sizeof *backends; b++) {
        const ops_table *ops = backends[b].ops;
        test_allreduce(&w, ops, backends[b].transport);
        test_zero1(&w, ops, 10008, 11);   /* 9997 trainable: uneven over 2 and 3 ranks */
        test_zero1(&w, ops, 2, 0);        /* fewer floats than ranks: whole shards in the slack */
        test_zero1(&w, ops, 11, 11);      /* nothing trainable */
        CHECK(comm_barrier(w.c, &e) == ADAPT_OK);
    }
    test_allreduce_big(&w);
    comm_close(w.c);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--mpi")) {
        test_mpi(&argc, &argv);
        return check_report("grad_sync (mpi)");
    }
    test_single();
    test_nccl_timeout();
    test_zero_stage_rule();
    return check_report("grad_sync");
}
