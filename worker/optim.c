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
    o->tensors = malloc((n_tensors ? n_tensors : 1) * sizeof *o->tensors);
    o->norm_ptrs = malloc((n_tensors ? n_tensors : 1) * sizeof *o->norm_ptrs);
    o->norm_lens = malloc((n_tensors ? n_tensors : 1) * sizeof *o->norm_lens);
    o->m = calloc(n_params ? n_params : 1, sizeof(float));
    o->v = calloc(n_params ? n_params : 1, sizeof(float));
    if (!o->tensors || !o->norm_ptrs || !o->norm_lens || !o->m || !o->v) {
        optim_close(o);
        return adapt_fail(err, ADAPT_ENOMEM, "optim: no memory for %zu parameters' moments",
                          n_params);
    }
    memcpy(o->tensors, tensors, n_tensors * sizeof *tensors);
    return 0;
}

void optim_close(optim *o)
{
    free(o->tensors);
    free(o->norm_ptrs);
    free(o->norm_lens);
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

void optim_restart(optim *o, const optim_config *cfg, int fresh)
{
    o->cfg = *cfg;
    if (!fresh) return;
    memset(o->m, 0, o->n_params * sizeof *o->m);
    memset(o->v, 0, o->n_params * sizeof *o->v);
    o->step = 0;
}

void optim_step(optim *o, float *params, const float *grads, float *grad_norm, double *lr)
{
    int count = 0;
    for (size_t i = 0; i < o->n_tensors; i++) {
        const optim_tensor *t = &o->tensors[i];
        if (t->frozen) continue;
        o->norm_ptrs[count] = grads + t->offset;
        o->norm_lens[count] = t->numel;
        count++;
    }
    float norm = 0.0f, scale = 1.0f;
    o->ops->grad_norm_f32(&norm, &scale, o->norm_ptrs, o->norm_lens, count,
                          (float)o->cfg.max_grad_norm);
    double factor = optim_lr_factor(&o->cfg, o->step);
    int step = (int)(o->step + 1);
    /* The update is element-wise, so a run of adjacent tensors with the same group and decay
     * (a field's stacked layers, usually) is one call: one parallel sweep over the run instead of
     * a thread fork per small tensor. */
    for (size_t i = 0; i < o->n_tensors;) {
        const optim_tensor *t = &o->tensors[i];
        if (t->frozen) { i++; continue; }
        int decays = t->ndim >= 2;
        size_t end = t->offset + t->numel, j = i + 1;
        for (; j < o->n_tensors; j++) {
            const optim_tensor *u = &o->tensors[j];
            if (u->frozen || u->group != t->group || (u->ndim >= 2) != decays || u->offset != end)
                break;
            end += u->numel;
        }
        o->ops->adamw_step_f32(params + t->offset, o->m + t->offset, o->v + t->offset,
                               grads + t->offset, &scale, end - t->offset,
                               o->cfg.lr[t->group] * factor, o->cfg.beta1, o->cfg.beta2,
                               o->cfg.eps, decays ? o->cfg.weight_decay : 0.0, step);
        i = j;
    }
    o->step++;
    if (grad_norm) *grad_norm = norm;
    if (lr) *lr = o->cfg.lr[OPTIM_GROUP_MAIN] * factor;
}
