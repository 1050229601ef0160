/* train: the training loop of `adapt-worker train` — data order, packing, gradient accumulation,
 * the all-reduces, AdamW, checkpoints, progress — for every rank of a data-parallel job.
 *
 * The one idea: a step is a pure function of (weights, moments, global step), and everything
 * else is derived from the global step (epoch and step in it, the samples, the pack key, the
 * learning rate). So a checkpoint is weights + moments + the step, a resumed run repeats exactly
 * what the uninterrupted one would have done, bit for bit on the same world size, and a world of
 * N sums gradients over exactly the samples a world of 1 does.
 *
 * Backends: the model, its gradients and the optimizer's moments live in the op table's memory
 * of the backend named in train_options (cpu, cpu-guarded, cuda), and the loop touches them only
 * through the table and the model's copy functions. Gradient sums across ranks go through
 * grad_sync: a bucketed all-reduce, or with zero_stage 1 (ZeRO-1) a reduce-scatter, an AdamW step
 * on this rank's shard of the parameters (moments for that shard only) and an all-gather.
 *
 * two_stage runs stage 1 (captions, every record) and then stage 2 (kept tasks, only the
 * records that have one) as two schedules back to back: each stage has its own data order,
 * learning rates, warmup and length, and stage 2 starts with fresh AdamW moments as a separate
 * run would; global steps count on across the boundary and a checkpoint records its stage. */
#ifndef ADAPT_TRAIN_H
#define ADAPT_TRAIN_H

#include "comm.h"
#include "error.h"
#include "job.pb-c.h"
#include "ops.h"
#include "optim.h"
#include "qwen2vl.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

/* Values of the signal flag main's handler sets; TRAIN_SIGNAL_STOP wins over the other. */
#define TRAIN_SIGNAL_NONE       0
#define TRAIN_SIGNAL_CHECKPOINT 1   /* SIGUSR1: checkpoint at the next step boundary, go on */
#define TRAIN_SIGNAL_STOP       2   /* SIGTERM: checkpoint at the next step boundary, stop */

/* train_run's positive result when it stopped on TRAIN_SIGNAL_STOP after its checkpoint. */
#define TRAIN_STOPPED 1

/* What rank 0 reports besides its JSON lines (main forwards them to the daemon's link); any
 * member may be NULL. The messages are valid during the call only. */
typedef struct train_events {
    void (*progress)(void *ctx, const Adaptd__Progress *p);
    void (*checkpoint)(void *ctx, uint64_t step, const char *dir);
    void  *ctx;
} train_events;

typedef struct train_options {
    const Adaptd__TrainSpec *spec;
    const char              *backend;   /* op table (ops_by_name): "cpu" when NULL */
    int                      resume;    /* continue from the newest complete checkpoint */
    const char              *resume_from; /* or from this one, refused unless complete */
    /* may be NULL; the loop resets CHECKPOINT after use. Atomic: the signal handler and the
     * worker link's thread (Control frames) set it while the loop reads it. */
    atomic_int              *signal;
    FILE                    *progress;  /* rank 0's JSON lines, one per step */
    train_events             events;
} train_options;

/* Runs the whole job on this rank: 0 when every step is done and the final weights are in
 * spec->output_dir (Hugging Face layout), TRAIN_STOPPED after a signal's checkpoint, or a
 * negative adapt_error_code with err naming what failed and where. */
int train_run(comm *c, const train_options *opt, adapt_error *err);

/* Held-out loss: the masked cross-entropy of model_dir's weights over every record of corpus,
 * averaged over the scored tokens, with the spec's data settings (one process), on backend
 * (NULL: cpu). */
int train_eval_loss(const Adaptd__TrainSpec *spec, const char *backend, const char *model_dir,
                    const char *corpus, double *loss, uint64_t *tokens, adapt_error *err);

/* The op table of backend name (NULL: "cpu"), made ready for this process: on cuda the GPU
 * local_rank is bound first. EINVAL naming the backends this build has for an unknown name or
 * one not built in; EIO when the device cannot be set up. */
int train_backend_open(const char *name, int local_rank, const ops_table **out, adapt_error *err);
/* The backends this build has, comma-separated ("cpu, cpu-guarded, cuda"). */
const char *train_backend_list(void);

/* The optimizer's tensor table of model m (one entry per tensor of its layout, in order): the
 * vision tower in OPTIM_GROUP_VISION, the merger and the LLM in OPTIM_GROUP_MAIN, the tensors of
 * a frozen tower marked frozen. *grad_begin (may be NULL) receives the first float of a trainable
 * tensor (n_params when none is). NULL when out of memory; the caller frees the table. */
optim_tensor *train_optim_tensors(const qwen2vl_model *m, int freeze_vision, int freeze_merger,
                                  size_t *grad_begin);

#endif
