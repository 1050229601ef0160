/* optim: AdamW with two groups, schedule and clipping; see optim.h. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int optim_schedule_parse(const char *name, optim_schedule *out, adapt_error *err)
{
    static const struct { const char *name; optim_schedule s; } words[] = {
        { "cosine",   OPTIM_SCHEDULE_COSINE },
        { "linear",   OPTIM_SCHEDULE_LINEAR },
        { "constant", OPTIM_SCHEDULE_CONSTANT },
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (name && !strcmp(name, words[i].name)) {
            *out = words[i].s;
            return 0;
        }
    }
    return adapt_fail(err, ADAPT_EINVAL, "optim: unknown schedule '%s' (cosine, linear, constant)",
                      name ? name : "(null)");
}

uint64_t optim_warmup_steps(double warmup_ratio, uint64_t total_steps)
{
    /* transformers' get_warmup_steps: math.ceil(num_training_steps * warmup_ratio). */
    return (uint64_t)ceil((double)total_steps * warmup_ratio);
}

double optim_lr_factor(const optim_config *cfg, uint64_t done)
{
    uint64_t warm = optim_warmup_steps(cfg->warmup_ratio, cfg->total_steps);
    uint64_t total = cfg->total_steps;
    if (done < warm) return (double)done / (double)(warm > 1 ? warm : 1);
    switch (cfg->schedule) {
    case OPTIM_SCHEDULE_CONSTANT:
        return 1.0;
    case OPTIM_SCHEDULE_LINEAR: {
        double span = (double)(total > warm ? total - warm : 1);
        double f = (double)(total > done ? total - done : 0) / span;
        return f > 0.0 ? f : 0.0;
    }
    case OPTIM_SCHEDULE_COSINE:
    default: {
        double span = (double)(total > warm ? total - warm : 1);
        double progress = (double)(done - warm) / span;
        double f = 0.5 * (1.0 + cos(M_PI * progress));
        return f > 0.0 ? f : 0.0;
    }
    }
}

/* count floats of backend memory, zeroed; at least one, so that an empty shard still has a
 * valid pointer to hand to the ops */
static float *optim_alloc(const ops_table *ops, size_t count)
{
    return ops->mem_alloc((count ? count : 1) * sizeof(float));
}

static void optim_free(const ops_table *ops, void *p)
{
    if (p && ops->mem_free) ops->mem_free(p);
}

int optim_init(optim *o, const ops_table *ops, const optim_config *cfg,
               const optim_tensor *tensors, size_t n_tensors, size_t n_params, adapt_error *err)
{
    memset(o, 0, sizeof *o);
    if (cfg->total_steps == 0)
        return adapt_fail(err, ADAPT_EINVAL, "optim: a run of 0 steps has no schedule");
    for (int g = 0; g < OPTIM_GROUP_COUNT; g++)
        if (!(cfg->lr[g] >= 0.0))
            return adapt_fail(err, ADAPT_EINVAL, "optim: learning rate of group %d is %g", g,
                              cfg->lr[g]);
    for (size_t i = 0; i < n_tensors; i++)
        if (tensors[i].offset > n_params || tensors[i].numel > n_params - tensors[i].offset)
            return adapt_fail(err, ADAPT_EINVAL, "optim: tensor %zu lies outside the %zu "
                              "parameters", i, n_params);
    o->ops = ops;
    o->cfg = *cfg;
    o->n_tensors = n_tensors;
    o->n_params = n_params;
    o->lo = 0;
    o->hi = n_params;
    o->n_moments = n_params;
    o->tensors = malloc((n_tensors ? n_tensors : 1) * sizeof *o->tensors);
    o->norm_ptrs = malloc((n_tensors ? n_tensors : 1) * sizeof *o->norm_ptrs);
    o->norm_lens = malloc((n_tensors ? n_tensors : 1) * sizeof *o->norm_lens);
    o->m = optim_alloc(ops, n_params);
    o->v = optim_alloc(ops, n_params);
    o->scalars = optim_alloc(ops, 2);
    if (!o->tensors || !o->norm_ptrs || !o->norm_lens || !o->m || !o->v || !o->scalars) {
        optim_close(o);
        return adapt_fail(err, ADAPT_ENOMEM, "optim: no %s memory for %zu parameters' moments",
                          ops->backend, n_params);
    }
    memcpy(o->tensors, tensors, n_tensors * sizeof *tensors);
    return 0;
}

void optim_close(optim *o)
{
    free(o->tensors);
    free(o->norm_ptrs);
    free(o->norm_lens);
    if (o->ops) {
        optim_free(o->ops, o->m);
        optim_free(o->ops, o->v);
        optim_free(o->ops, o->scalars);
    }
    memset(o, 0, sizeof *o);
}

int optim_set_shard(optim *o, size_t lo, size_t hi, adapt_error *err)
{
    if (lo > hi || hi > o->n_params)
        return adapt_fail(err, ADAPT_EINVAL, "optim: shard [%zu, %zu) lies outside the %zu "
                          "parameters", lo, hi, o->n_params);
    if (o->step != 0)
        return adapt_fail(err, ADAPT_EINVAL, "optim: a shard is set before the first step, "
                          "not after step %llu", (unsigned long long)o->step);
    float *m = optim_alloc(o->ops, hi - lo), *v = optim_alloc(o->ops, hi - lo);
    if (!m || !v) {
        optim_free(o->ops, m);
        optim_free(o->ops, v);
        return adapt_fail(err, ADAPT_ENOMEM, "optim: no %s memory for the moments of the shard "
                          "[%zu, %zu)", o->ops->backend, lo, hi);
    }
    optim_free(o->ops, o->m);
    optim_free(o->ops, o->v);
    o->m = m;
    o->v = v;
    o->lo = lo;
    o->hi = hi;
    o->n_moments = hi - lo;
    o->sharded = 1;
    return 0;
}

void optim_set_norm_sum(optim *o, int (*sum)(void *ctx, double *sumsq, adapt_error *err),
                        void *ctx)
{
    o->norm_sum = sum;
    o->norm_ctx = ctx;
}

void optim_restart(optim *o, const optim_config *cfg, int fresh)
{
    o->cfg = *cfg;
    if (!fresh) return;
    o->ops->fill_f32(o->m, 0.0f, o->n_moments);
    o->ops->fill_f32(o->v, 0.0f, o->n_moments);
    o->step = 0;
}

/* The part of tensor t this optimizer steps: [*a, *b), empty (a == b) when frozen or outside
 * the shard. */
static void optim_clip(const optim *o, const optim_tensor *t, size_t *a, size_t *b)
{
    size_t lo = t->offset, hi = t->offset + t->numel;
    if (lo < o->lo) lo = o->lo;
    if (hi > o->hi) hi = o->hi;
    if (t->frozen || lo >= hi) lo = hi = t->offset;
    *a = lo;
    *b = hi;
}

/* The clip coefficient of a sharded step: the local sum of squares summed over ranks through
 * the hook, then torch's min(1, max_norm / (norm + 1e-6)) on the host, uploaded for adamw. The
 * local norm is grad_norm_f32 with no clipping, squared back. */
static int optim_norm_sharded(optim *o, int count, adapt_error *err)
{
    const ops_table *ops = o->ops;
    float local;
    ops->grad_norm_f32(o->scalars, o->scalars + 1, o->norm_ptrs, o->norm_lens, count, 0.0f);
    ops->mem_download(&local, o->scalars, sizeof local);
    double sumsq = (double)local * (double)local;
    int rc = o->norm_sum(o->norm_ctx, &sumsq, err);
    if (rc) return rc;
    double nrm = sqrt(sumsq > 0.0 ? sumsq : 0.0);
    /* the op takes max_norm as a float: the same rounding as the unsharded path */
    float max_norm = (float)o->cfg.max_grad_norm;
    double coef = max_norm > 0 ? max_norm / (nrm + 1e-6) : 1.0;
    float host[2] = { (float)nrm, (float)(coef < 1.0 ? coef : 1.0) };
    ops->mem_upload(o->scalars, host, sizeof host);
    return 0;
}

int optim_step(optim *o, float *params, const float *grads, float *grad_norm, double *lr,
               adapt_error *err)
{
    const ops_table *ops = o->ops;
    int count = 0;
    for (size_t i = 0; i < o->n_tensors; i++) {
        size_t a, b;
        optim_clip(o, &o->tensors[i], &a, &b);
        if (a == b) continue;
        o->norm_ptrs[count] = grads + a;
        o->norm_lens[count] = b - a;
        count++;
    }
    float *scale = o->scalars + 1;
    if (o->sharded && o->norm_sum) {
        int rc = optim_norm_sharded(o, count, err);
        if (rc) return rc;
    } else {
        ops->grad_norm_f32(o->scalars, scale, o->norm_ptrs, o->norm_lens, count,
                           (float)o->cfg.max_grad_norm);
    }
    double factor = optim_lr_factor(&o->cfg, o->step);
    int step = (int)(o->step + 1);
    /* The update is element-wise, so a run of adjacent tensors with the same group and decay
     * (a field's stacked layers, usually) is one call: one parallel sweep over the run instead of
     * a thread fork per small tensor. */
    for (size_t i = 0; i < o->n_tensors;) {
        const optim_tensor *t = &o->tensors[i];
        size_t a, end;
        optim_clip(o, t, &a, &end);
        if (a == end) { i++; continue; }
        int decays = t->ndim >= 2;
        size_t j = i + 1;
        for (; j < o->n_tensors; j++) {
            const optim_tensor *u = &o->tensors[j];
            size_t ua, ub;
            optim_clip(o, u, &ua, &ub);
            if (ua == ub || u->group != t->group || (u->ndim >= 2) != decays || ua != end)
                break;
            end = ub;
        }
        ops->adamw_step_f32(params + a, o->m + (a - o->lo), o->v + (a - o->lo), grads + a, scale,
                            end - a, o->cfg.lr[t->group] * factor, o->cfg.beta1, o->cfg.beta2,
                            o->cfg.eps, decays ? o->cfg.weight_decay : 0.0, step);
        i = j;
    }
    o->step++;
    /* read back last: on a device the download waits for the queued updates too */
    if (grad_norm) ops->mem_download(grad_norm, o->scalars, sizeof *grad_norm);
    if (lr) *lr = o->cfg.lr[OPTIM_GROUP_MAIN] * factor;
    return 0;
}
