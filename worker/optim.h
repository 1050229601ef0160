/* optim: AdamW over the model's one parameter buffer, with two learning-rate groups, a warmup +
 * decay schedule and global grad-norm clipping.
 *
 * The one idea: the optimizer sees the model only as a table of tensors (offset, length, number
 * of dimensions, group) into one parameter buffer and one gradient buffer of the same layout, and
 * keeps its two moment buffers in that same layout, so a checkpoint of the optimizer is two
 * memcpy-able arrays and a frozen tower is simply a group that is left out.
 *
 * Backends: parameters, gradients, moments and the norm / clip scalars are the op table's memory
 * (host memory on "cpu", device memory on "cuda"); the optimizer touches them only through the
 * table's ops, so it runs unchanged on any backend. ZeRO-1: optim_set_shard narrows it to one
 * rank's slice [lo, hi) of the buffers (moments for that slice only), and optim_set_norm_sum
 * lets the clip norm be summed over every rank's slice.
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
    size_t           n_params;    /* floats in the parameter and gradient buffers' layout */
    size_t           lo, hi;      /* the floats this optimizer steps: [0, n_params) or a shard */
    int              sharded;     /* optim_set_shard was called */
    size_t           n_moments;   /* floats in m and in v: hi - lo */
    float           *m, *v;       /* backend memory [n_moments] each, owned, zero at init;
                                   * m[i] belongs to parameter float lo + i */
    float           *scalars;     /* backend memory [2]: the gradient norm, the clip coefficient */
    int            (*norm_sum)(void *ctx, double *sumsq, adapt_error *err);
    void            *norm_ctx;
    const float    **norm_ptrs;   /* [n_tensors] scratch for grad_norm_f32 (host array) */
    size_t          *norm_lens;
    uint64_t         step;        /* optimizer steps done */
} optim;

/* "cosine" | "linear" | "constant" → *out; EINVAL naming the word otherwise. */
int    optim_schedule_parse(const char *name, optim_schedule *out, adapt_error *err);
/* Warmup steps of a run: ceil(warmup_ratio * total_steps). */
uint64_t optim_warmup_steps(double warmup_ratio, uint64_t total_steps);
/* The multiplier of the peak learning rate for the step that follows `done` steps. */
double optim_lr_factor(const optim_config *cfg, uint64_t done);

/* Copies the tensor table; allocates zeroed moments of n_params floats each from ops->mem_alloc.
 * EINVAL for a tensor outside n_params, a total of 0 steps or a negative learning rate; ENOMEM. */
int  optim_init(optim *o, const ops_table *ops, const optim_config *cfg,
                const optim_tensor *tensors, size_t n_tensors, size_t n_params, adapt_error *err);
void optim_close(optim *o);
/* ZeRO-1: before the first step, limits the optimizer to the parameter floats [lo, hi) (one
 * rank's shard): tensors are clipped to the range, the moments are reallocated (zeroed) to
 * hi - lo floats, and optim_step's params / grads stay pointers to the whole buffers. EINVAL for
 * a range outside n_params or after a step; ENOMEM. */
int  optim_set_shard(optim *o, size_t lo, size_t hi, adapt_error *err);
/* With a shard, the clip norm covers every rank's shard: each step computes the local sum of
 * squares, passes it to sum (which replaces it by the sum over ranks, e.g. an MPI all-reduce;
 * 0, or a negative adapt_error_code with err set) and derives the clip coefficient from the
 * total on the host, as torch.nn.utils.clip_grad_norm_ does. Without a shard it is not used. */
void optim_set_norm_sum(optim *o, int (*sum)(void *ctx, double *sumsq, adapt_error *err),
                        void *ctx);
/* A new schedule on the same tensors (two_stage's second stage): moments zeroed and the step
 * count back to 0 when fresh, else both kept (a resume inside the stage restores them). */
void optim_restart(optim *o, const optim_config *cfg, int fresh);

/* One step: global grad norm over the trainable tensors, clip coefficient, AdamW on each
 * trainable tensor (its part in the shard) with its group's scheduled learning rate, step + 1.
 * params, grads: backend pointers to the whole buffers. The gradients must already be summed
 * over ranks and micro-batches (with a shard: at least the shard's). *grad_norm (a host float)
 * receives the norm before clipping, *lr the main group's learning rate used (either may be
 * NULL). 0, or the norm-sum hook's error (the step is then not taken). */
int  optim_step(optim *o, float *params, const float *grads, float *grad_norm, double *lr,
                adapt_error *err);

#endif
