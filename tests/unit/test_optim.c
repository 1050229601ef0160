/* test_optim: worker/optim.c — the schedules against transformers' formulas, warmup rounding,
 * AdamW's first bias-corrected step, decay only on tensors of two or more dimensions, the two
 * learning-rate groups, frozen tensors, the clip norm over trainable tensors only, and a restart
 * for a new stage; ZeRO-1 shards (optim_set_shard + the norm-sum hook) against the unsharded
 * optimizer on each shard's range; the same steps on the cpu-guarded backend (every buffer
 * PROT_NONE outside the table's ops: a host access faults) end bit-identical to cpu. */
#include "check.h"
#include "optim.h"

#include <math.h>

static void test_schedules(void)
{
    optim_config c = { .warmup_ratio = 0.1, .total_steps = 10, .schedule = OPTIM_SCHEDULE_COSINE };
    CHECK(optim_warmup_steps(0.1, 10) == 1);
    CHECK(optim_warmup_steps(0.25, 10) == 3);   /* ceil, as transformers' get_warmup_steps */
    CHECK(optim_warmup_steps(0.0, 10) == 0);
    CHECK(optim_lr_factor(&c, 0) == 0.0);
    CHECK(fabs(optim_lr_factor(&c, 1) - 1.0) < 1e-12);
    CHECK(fabs(optim_lr_factor(&c, 6) - 0.5 * (1.0 + cos(M_PI * 5.0 / 9.0))) < 1e-12);
    CHECK(fabs(optim_lr_factor(&c, 10)) < 1e-12);
    c.schedule = OPTIM_SCHEDULE_LINEAR;
    CHECK(fabs(optim_lr_factor(&c, 4) - 6.0 / 9.0) < 1e-12);
    CHECK(optim_lr_factor(&c, 10) == 0.0);
    c.schedule = OPTIM_SCHEDULE_CONSTANT;
    c.warmup_ratio = 0.3;
    CHECK(fabs(optim_lr_factor(&c, 1) - 1.0 / 3.0) < 1e-12);
    CHECK(optim_lr_factor(&c, 3) == 1.0 && optim_lr_factor(&c, 9) == 1.0);
    optim_schedule s;
    adapt_error err = {0};
    CHECK(optim_schedule_parse("linear", &s, &err) == 0 && s == OPTIM_SCHEDULE_LINEAR);
    CHECK(optim_schedule_parse("step", &s, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "'step'");
}

/* Tensors: 0 a 2x2 vision matrix, 1 a vision bias of 2, 2 a main 2x2 matrix, 3 a main norm of
 * 2, 4 a frozen main matrix of 2x1. */
static const optim_tensor TENSORS[] = {
    { 0, 4, 2, OPTIM_GROUP_VISION, 0 },
    { 4, 2, 1, OPTIM_GROUP_VISION, 0 },
    { 6, 4, 2, OPTIM_GROUP_MAIN, 0 },
    { 10, 2, 1, OPTIM_GROUP_MAIN, 0 },
    { 12, 2, 2, OPTIM_GROUP_MAIN, 1 },
};
#define NP 14

static void test_step(void)
{
    optim_config c = { .lr = { 0.01, 0.1 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .weight_decay = 0.5, .max_grad_norm = 0.0, .warmup_ratio = 0.0,
                       .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = 4 };
    optim o;
    adapt_error err = {0};
    CHECK_MSG(optim_init(&o, ops_cpu(), &c, TENSORS, 5, NP, &err) == 0, "%s", err.message);
    float p[NP], g[NP];
    for (int i = 0; i < NP; i++) {
        p[i] = 1.0f;
        g[i] = (i % 2) ? -2.0f : 0.0f;   /* zero gradient on even slots: only decay moves them */
    }
    g[13] = 100.0f;                       /* frozen: must not count in the norm */
    float norm = 0.0f;
    double lr = 0.0;
    CHECK(optim_step(&o, p, g, &norm, &lr, &err) == 0);
    CHECK(fabs(lr - 0.1) < 1e-12);
    /* 6 trainable odd slots of |g| = 2: the norm is sqrt(6 * 4) */
    CHECK_MSG(fabs(norm - sqrtf(24.0f)) < 1e-5, "norm %g", norm);
    /* first step: m_hat / sqrt(v_hat) = sign(g), decoupled decay lr * wd * p first */
    CHECK(fabs(p[0] - (1.0 - 0.01 * 0.5)) < 1e-6);              /* vision matrix, g = 0 */
    CHECK(fabs(p[1] - (1.0 - 0.01 * 0.5 + 0.01)) < 1e-6);       /* vision matrix, g < 0 */
    CHECK(p[4] == 1.0f);                                         /* bias, g = 0: no decay */
    CHECK(fabs(p[5] - (1.0 + 0.01)) < 1e-6);                     /* bias, g < 0 */
    CHECK(fabs(p[6] - (1.0 - 0.1 * 0.5)) < 1e-6);               /* main matrix */
    CHECK(fabs(p[7] - (1.0 - 0.1 * 0.5 + 0.1)) < 1e-6);
    CHECK(p[10] == 1.0f);                                        /* norm weight: no decay */
    CHECK(fabs(p[11] - 1.1) < 1e-6);
    CHECK(p[12] == 1.0f && p[13] == 1.0f);                       /* frozen */
    CHECK(o.m[13] == 0.0f && o.v[13] == 0.0f);
    CHECK(o.step == 1);
    /* a resume inside a stage keeps the moments; a new stage starts them afresh */
    c.total_steps = 7;
    optim_restart(&o, &c, 0);
    CHECK(o.step == 1 && o.m[1] != 0.0f && o.cfg.total_steps == 7);
    optim_restart(&o, &c, 1);
    CHECK(o.step == 0 && o.m[1] == 0.0f && o.v[1] == 0.0f);
    optim_close(&o);
}

static void test_clip(void)
{
    /* With clipping, the second step sees g scaled: m and v keep the clipped gradient. */
    optim_config c = { .lr = { 0.0, 0.0 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .max_grad_norm = 1.0, .schedule = OPTIM_SCHEDULE_CONSTANT,
                       .total_steps = 1 };
    optim_tensor t = { 0, 2, 1, OPTIM_GROUP_MAIN, 0 };
    optim o;
    adapt_error err = {0};
    CHECK(optim_init(&o, ops_cpu(), &c, &t, 1, 2, &err) == 0);
    float p[2] = { 0, 0 }, g[2] = { 3, 4 }, norm;
    CHECK(optim_step(&o, p, g, &norm, NULL, &err) == 0);
    CHECK(fabs(norm - 5.0f) < 1e-5);
    /* m = (1 - beta1) * g * min(1, 1 / (5 + 1e-6)) */
    CHECK_MSG(fabs(o.m[0] - 0.1f * 3.0f / 5.0f) < 1e-6, "m %g", o.m[0]);
    CHECK(fabs(o.m[1] - 0.1f * 4.0f / 5.0f) < 1e-6);
    optim_close(&o);
    CHECK(optim_init(&o, ops_cpu(), &c, &t, 1, 1, &err) == ADAPT_EINVAL);
    c.total_steps = 0;
    CHECK(optim_init(&o, ops_cpu(), &c, &t, 1, 2, &err) == ADAPT_EINVAL);
}

/* The norm-sum hook of a simulated rank: adds the other ranks' local sum of squares, which the
 * test worked out the way the optimizer does (the float norm of the local part, squared). */
typedef struct shard_peer {
    double others;
    int    calls;
} shard_peer;

static int peer_sum(void *ctx, double *sumsq, adapt_error *err)
{
    (void)err;
    shard_peer *p = ctx;
    p->calls++;
    *sumsq += p->others;
    return 0;
}

static int peer_fail(void *ctx, double *sumsq, adapt_error *err)
{
    (void)ctx;
    (void)sumsq;
    return adapt_fail(err, ADAPT_EIO, "peer gone");
}

/* The local sum of squares of the trainable floats of [lo, hi), as optim computes it. */
static double shard_sumsq(const float *g, size_t lo, size_t hi)
{
    double acc = 0.0;
    for (size_t t = 0; t < sizeof TENSORS / sizeof TENSORS[0]; t++) {
        if (TENSORS[t].frozen) continue;
        for (size_t i = TENSORS[t].offset; i < TENSORS[t].offset + TENSORS[t].numel; i++)
            if (i >= lo && i < hi) acc += (double)g[i] * g[i];
    }
    float norm = (float)sqrt(acc);
    return (double)norm * norm;
}

static int rel_close(double a, double b, double tol)
{
    double d = fabs(a - b), s = fmax(fabs(a), fabs(b));
    return d <= tol * s || d <= 1e-12;
}

/* Two shards [0, 7) and [7, 14) (7 cuts the main matrix, 14 ends in the frozen tensor) step the
 * same parameters as one unsharded optimizer: bit for bit without clipping, within 1e-6
 * (relative; the norm is summed in another order) with it; floats outside a rank's shard are
 * left alone, and its moments are the unsharded moments of its range. */
static void test_shard(double max_norm)
{
    optim_config c = { .lr = { 0.01, 0.1 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .weight_decay = 0.5, .max_grad_norm = max_norm, .warmup_ratio = 0.0,
                       .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = 3 };
    const size_t cut[3] = { 0, 7, NP };
    optim full, part[2];
    shard_peer peer[2] = { { 0 }, { 0 } };
    adapt_error err = {0};
    float p_full[NP], p_part[2][NP], p0[NP], g[NP];
    CHECK(optim_init(&full, ops_cpu(), &c, TENSORS, 5, NP, &err) == 0);
    for (int r = 0; r < 2; r++) {
        CHECK(optim_init(&part[r], ops_cpu(), &c, TENSORS, 5, NP, &err) == 0);
        CHECK_MSG(optim_set_shard(&part[r], cut[r], cut[r + 1], &err) == 0, "%s", err.message);
        optim_set_norm_sum(&part[r], peer_sum, &peer[r]);
        CHECK(part[r].n_moments == cut[r + 1] - cut[r]);
    }
    for (int i = 0; i < NP; i++) p0[i] = p_full[i] = p_part[0][i] = p_part[1][i] = 0.1f * (float)i - 0.5f;
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < NP; i++) g[i] = (float)((i * 7 + step * 3) % 11) - 5.0f;
        float n_full = 0.0f, n_part[2] = { 0.0f, 0.0f };
        CHECK(optim_step(&full, p_full, g, &n_full, NULL, &err) == 0);
        for (int r = 0; r < 2; r++) {
            peer[r].others = shard_sumsq(g, cut[1 - r], cut[2 - r]);
            CHECK(optim_step(&part[r], p_part[r], g, &n_part[r], NULL, &err) == 0);
            CHECK_MSG(rel_close(n_part[r], n_full, 1e-6), "step %d rank %d: norm %.9g vs %.9g",
                      step, r, n_part[r], n_full);
            CHECK(peer[r].calls == step + 1);
        }
    }
    for (int r = 0; r < 2; r++) {
        for (size_t i = 0; i < NP; i++) {
            if (i < cut[r] || i >= cut[r + 1]) {
                CHECK_MSG(p_part[r][i] == p0[i], "rank %d touched float %zu outside its shard", r, i);
                continue;
            }
            size_t k = i - cut[r];
            if (max_norm <= 0.0) {
                CHECK_MSG(p_part[r][i] == p_full[i], "rank %d float %zu: %.9g vs %.9g", r, i,
                          p_part[r][i], p_full[i]);
                CHECK(part[r].m[k] == full.m[i] && part[r].v[k] == full.v[i]);
            } else {
                CHECK_MSG(rel_close(p_part[r][i], p_full[i], 1e-6), "rank %d float %zu: %.9g vs "
                          "%.9g", r, i, p_part[r][i], p_full[i]);
                CHECK(rel_close(part[r].m[k], full.m[i], 1e-6) &&
                      rel_close(part[r].v[k], full.v[i], 1e-6));
            }
        }
        optim_close(&part[r]);
    }
    optim_close(&full);
}

/* A shard's refusals, an empty shard (a rank past the end of the floats still joins the norm's
 * sum), a failing hook, and a restart that zeroes the shard's moments only. */
static void test_shard_edges(void)
{
    optim_config c = { .lr = { 0.01, 0.1 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .max_grad_norm = 1.0, .schedule = OPTIM_SCHEDULE_CONSTANT,
                       .total_steps = 3 };
    optim o;
    adapt_error err = {0};
    float p[NP] = { 0 }, g[NP];
    for (int i = 0; i < NP; i++) g[i] = 1.0f;
    CHECK(optim_init(&o, ops_cpu(), &c, TENSORS, 5, NP, &err) == 0);
    CHECK(optim_set_shard(&o, 3, NP + 1, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "outside");
    CHECK(optim_set_shard(&o, 5, 4, &err) == ADAPT_EINVAL);
    shard_peer peer = { .others = 16.0 };
    CHECK(optim_set_shard(&o, NP, NP, &err) == 0 && o.n_moments == 0);
    optim_set_norm_sum(&o, peer_sum, &peer);
    float norm = 0.0f;
    CHECK(optim_step(&o, p, g, &norm, NULL, &err) == 0);
    CHECK(peer.calls == 1 && fabs(norm - 4.0f) < 1e-6);   /* only the others' 16 */
    for (int i = 0; i < NP; i++) CHECK(p[i] == 0.0f);
    CHECK(optim_set_shard(&o, 0, 4, &err) == ADAPT_EINVAL);   /* after a step */
    CHECK_STR_CONTAINS(err.message, "before the first step");
    optim_close(&o);

    CHECK(optim_init(&o, ops_cpu(), &c, TENSORS, 5, NP, &err) == 0);
    CHECK(optim_set_shard(&o, 4, 8, &err) == 0);
    optim_set_norm_sum(&o, peer_fail, NULL);
    CHECK(optim_step(&o, p, g, &norm, NULL, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "peer gone");
    CHECK(o.step == 0 && p[5] == 0.0f);
    optim_set_norm_sum(&o, peer_sum, &peer);
    CHECK(optim_step(&o, p, g, &norm, NULL, &err) == 0);
    CHECK(o.m[1] != 0.0f && p[5] != 0.0f && p[3] == 0.0f && p[8] == 0.0f);
    optim_restart(&o, &c, 1);
    for (size_t k = 0; k < o.n_moments; k++) CHECK(o.m[k] == 0.0f && o.v[k] == 0.0f);
    optim_close(&o);
}

/* params, grads and moments on backend ops (uploaded from host arrays) for `steps` steps of
 * optimizer o (already set up on ops); the parameters and the moments come back to the host. */
static void run_on(const ops_table *ops, optim *o, float *p_host, int steps, float *m_host,
                   float *v_host, float *norms)
{
    float *p = ops->mem_alloc(NP * sizeof(float)), *g = ops->mem_alloc(NP * sizeof(float));
    CHECK(p && g);
    if (!p || !g) return;
    ops->mem_upload(p, p_host, NP * sizeof(float));
    adapt_error err = {0};
    for (int step = 0; step < steps; step++) {
        float gh[NP];
        for (int i = 0; i < NP; i++) gh[i] = (float)((i * 5 + step * 2) % 9) - 4.0f;
        ops->mem_upload(g, gh, sizeof gh);
        CHECK_MSG(optim_step(o, p, g, &norms[step], NULL, &err) == 0, "%s", err.message);
    }
    ops->mem_download(p_host, p, NP * sizeof(float));
    ops->mem_download(m_host, o->m, o->n_moments * sizeof(float));
    ops->mem_download(v_host, o->v, o->n_moments * sizeof(float));
    ops->mem_free(p);
    ops->mem_free(g);
}

/* cpu vs cpu-guarded, unsharded and as shard [3, 11) with a norm hook: the same bytes, and a
 * fresh restart zeroes backend moments through the table. */
static void test_guarded(void)
{
    const ops_table *be[2] = { ops_cpu(), ops_cpu_guarded() };
    optim_config c = { .lr = { 0.01, 0.1 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .weight_decay = 0.1, .max_grad_norm = 1.0, .warmup_ratio = 0.0,
                       .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = 3 };
    CHECK(be[1] != NULL && !be[1]->host_accessible);
    if (!be[1]) return;
    for (int sharded = 0; sharded < 2; sharded++) {
        float p[2][NP], m[2][NP], v[2][NP], norms[2][3];
        shard_peer peer[2] = { { .others = 9.0 }, { .others = 9.0 } };
        for (int b = 0; b < 2; b++) {
            optim o;
            adapt_error err = {0};
            for (int i = 0; i < NP; i++) p[b][i] = 0.05f * (float)i - 0.3f;
            CHECK_MSG(optim_init(&o, be[b], &c, TENSORS, 5, NP, &err) == 0, "%s", err.message);
            if (sharded) {
                CHECK(optim_set_shard(&o, 3, 11, &err) == 0);
                optim_set_norm_sum(&o, peer_sum, &peer[b]);
            }
            run_on(be[b], &o, p[b], 3, m[b], v[b], norms[b]);
            optim_restart(&o, &c, 1);
            float z[NP];
            be[b]->mem_download(z, o.m, o.n_moments * sizeof(float));
            for (size_t k = 0; k < o.n_moments; k++) CHECK(z[k] == 0.0f);
            size_t n = o.n_moments;
            optim_close(&o);
            CHECK_MSG(memcmp(m[0], m[b], n * sizeof(float)) == 0 &&
                      memcmp(v[0], v[b], n * sizeof(float)) == 0, "sharded %d: moments differ",
                      sharded);
        }
        CHECK_MSG(memcmp(p[0], p[1], sizeof p[0]) == 0, "sharded %d: cpu and cpu-guarded "
                  "parameters differ", sharded);
        CHECK(memcmp(norms[0], norms[1], sizeof norms[0]) == 0);
        CHECK(norms[0][0] > 1.0f);   /* the clip was active */
    }
}

int main(void)
{
    test_schedules();
    test_step();
    test_clip();
    test_shard(0.0);
    test_shard(1.0);
    test_shard_edges();
    test_guarded();
    printf("test_optim: %d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
