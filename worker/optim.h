/* optim: AdamW over the model's one parameter buffer, with two learning-rate groups, a warmup +
 * decay schedule and global grad-norm clipping.
 *
 * The one idea: the optimizer sees the model only as a table of tensors (offset, length, number
 * of dimensions, group) into one parameter buffer and one gradient buffer of the same layout, and
 * keeps its two moment buffers in that same layout, so a checkpoint of the optimizer is two
 * memcpy-able arrays and a frozen tower is simply a group that is left out.
 *
 * Semantics follow torch / transformers as LLaMA-Factory runs them:
 *   - groups: OPTIM_GROUP_VISION (the vision tower, lr_vision) and OPTIM_GROUP_MAIN (projector
 *     and LLM, lr_main); a frozen tensor takes no step and counts in no norm;
 *   - decoupled weight decay (torch.optim.AdamW) only on tensors of two or more dimensions
 *     (matrices, convolutions, embeddings), never on biases and norm weights;
 *   - bias correction with the step counted from 1;
 *   - clipping as torch.nn.utils.clip_grad_norm_ over every trainable tensor together;
 *   - schedules as transformers' get_{cosine,linear,constant}_schedule_with_warmup with
 *     warmup steps = ceil(warmup_ratio * total steps). */
#ifndef ADAPT_OPTIM_H
#define ADAPT_OPTIM_H

#include "error.h"
#include "ops.h"

#include <stddef.h>
#include <stdint.h>

typedef enum optim_group {
    OPTIM_GROUP_VISION,
    OPTIM_GROUP_MAIN,
    OPTIM_GROUP_COUNT,
} optim_group;

typedef enum optim_schedule {
    OPTIM_SCHEDULE_COSINE,
    OPTIM_SCHEDULE_LINEAR,
    OPTIM_SCHEDULE_CONSTANT,
} optim_schedule;

/* One tensor of the parameter buffer. */
typedef struct optim_tensor {
    size_t      offset;   /* in floats from the start of the buffer */
    size_t      numel;
    int         ndim;     /* >= 2: takes weight decay */
    optim_group group;
    int         frozen;   /* 1: no step, no part in the gradient norm */
} optim_tensor;

typedef struct optim_config {
    double         lr[OPTIM_GROUP_COUNT];  /* peak learning rates */
    double         beta1, beta2, eps;
    double         weight_decay;
    double         max_grad_norm;          /* <= 0: no clipping */
    double         warmup_ratio;
    optim_schedule schedule;
    uint64_t       total_steps;
} optim_config;

typedef struct optim {
    const ops_table *ops;
    optim_config     cfg;
    optim_tensor    *tensors;     /* [n_tensors], owned */
    size_t           n_tensors;
    size_t           n_params;    /* floats in the parameter buffer and in m and v */
    float           *m, *v;       /* [n_params] each, owned, zero at init */
    const float    **norm_ptrs;   /* [n_tensors] scratch for grad_norm_f32 */
    size_t          *norm_lens;
    uint64_t         step;        /* optimizer steps done */
} optim;

/* "cosine" | "linear" | "constant" → *out; EINVAL naming the word otherwise. */
int    optim_schedule_parse(const char *name, optim_schedule *out, adapt_error *err);
/* Warmup steps of a run: ceil(warmup_ratio * total_steps). */
uint64_t optim_warmup_steps(double warmup_ratio, uint64_t total_steps);
/* The multiplier of the peak learning rate for the step that follows `done` steps. */
double optim_lr_factor(const optim_config *cfg, uint64_t done);

/* Copies the tensor table; allocates zeroed moments. EINVAL for a tensor outside n_params, a
 * total of 0 steps or a negative learning rate. */
int  optim_init(optim *o, const ops_table *ops, const optim_config *cfg,
                const optim_tensor *tensors, size_t n_tensors, size_t n_params, adapt_error *err);
void optim_close(optim *o);
/* A new schedule on the same tensors (two_stage's second stage): moments zeroed and the step
 * count back to 0 when fresh, else both kept (a resume inside the stage restores them). */
void optim_restart(optim *o, const optim_config *cfg, int fresh);

/* One step: global grad norm over the trainable tensors, clip coefficient, AdamW on each
 * trainable tensor with its group's scheduled learning rate, step + 1. The gradients must
 * already be summed over ranks and micro-batches. *grad_norm receives the norm before clipping,
 * *lr the main group's learning rate used (either may be NULL). */
void optim_step(optim *o, float *params, const float *grads, float *grad_norm, double *lr);

#endif
