/* train_rules: the one set of rules for a TrainSpec (proto/job.proto) — each member's default,
 * range or allowed words, and the rules between members — applied by adaptd when a job is
 * submitted (daemon/job_spec.c) and by adapt-worker when it reads the spec file
 * (worker/train_spec.c), so a spec one accepts the other accepts, with the same values.
 *
 * The one idea: a reader only turns a document into the message and notes which members the
 * document gave (proto3 cannot tell a 0 given from a member left out, and freeze_vision: false
 * or pack_window: 0 must not read as "the default"); train_rules_fill then does the rest from
 * one table keyed by job.proto's field names — types and places in the message come from
 * protobuf-c's descriptors, so the table cannot disagree with the schema. Defaults follow
 * LLaMA-Factory's full fine-tuning recipe for Qwen2-VL (examples/train_full/qwen2vl_full_sft.yaml):
 *
 *   member               default        range / words
 *   model_path           (required)     non-empty
 *   corpus               (required)     non-empty
 *   overlays             []             0 .. 1000 non-empty strings; two_stage needs one
 *   output_dir           (required)     non-empty
 *   mode                 single_stage   single_stage | two_stage | synthesizer
 *   epochs               3              [0, 100000]     (max_steps > 0 takes precedence)
 *   max_steps            0              [0, 1e12]       (epochs and max_steps not both 0)
 *   global_batch         16             [1, 1048576]    samples per optimizer step
 *   micro_batch_tokens   4096           [64, 16777216]  and >= max_seq_len
 *   lr_llm               1e-5           (0, 1]
 *   lr_vision            = lr_llm       [0, 1]
 *   weight_decay         0              [0, 1]
 *   warmup_ratio         0.1            [0, 1]
 *   schedule             cosine         cosine | linear | constant
 *   max_grad_norm        1              [0, 1e6]        0: no clipping
 *   seed                 42             any uint64 (JSON: a number up to 2^53 or a decimal string)
 *   freeze_vision        true           (LLaMA-Factory's freeze_vision_tower)
 *   freeze_merger        true           (LLaMA-Factory's freeze_multi_modal_projector)
 *   checkpoint_every     500            [0, 1e9]        0: only on signal and at the end
 *   keep_last            0              [0, 1e6]        0: keep every checkpoint
 *   image_min_pixels     1024           [1, 2^28]       <= image_max_pixels
 *   image_max_pixels     589824         [1, 2^28]
 *   max_seq_len          2048           [16, 1048576]   (LLaMA-Factory's cutoff_len)
 *   caption_instructions built-in pool  1 .. 1024 non-empty strings
 *   blank_image_ratio    0              [0, 1]; non-zero only in mode synthesizer
 *   stages               []             two_stage: exactly 2; other modes: none
 *   pack_window          1024           [1, 1048576]    samples per first-fit packing window
 *   adam_beta1           0.9            [0, 1)
 *   adam_beta2           0.999          [0, 1)
 *   adam_epsilon         1e-8           (0, 1]
 *   zero_stage           0              [0, 1]          1: ZeRO-1 (optimizer state sharded)
 *   precision            fp32           fp32 | bf16     bf16: bf16 weights as read and activations,
 *                                                       fp32 master weights, gradients, moments
 *
 * A stage takes epochs, max_steps, lr_vision, lr_llm, warmup_ratio, schedule with the ranges
 * above; the rates, warmup and schedule it leaves out come from the top level, and its length
 * (epochs, max_steps) from the top level only when it gives neither. */
#ifndef ADAPT_TRAIN_RULES_H
#define ADAPT_TRAIN_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job.pb-c.h"

enum {
    TRAIN_RULES_FIELD_MAX  = 64,     /* "train.stages[1].warmup_ratio" and the like */
    TRAIN_RULES_STAGES     = 2,      /* a two_stage run: captions, then tasks */
    TRAIN_RULES_N_DEFAULT_INSTRUCTIONS = 8,
    /* What a reader takes before any rule: longer strings and lists are refused by the type
     * check of both readers alike (a guard against huge documents, not a training rule). */
    TRAIN_RULES_MAX_STRING = 4096,   /* bytes, the terminating NUL included */
    TRAIN_RULES_MAX_LIST   = 1024,   /* entries of a repeated member */
};

typedef enum train_rules_object {
    TRAIN_RULES_TRAIN,   /* a TrainSpec */
    TRAIN_RULES_STAGE,   /* a StageSchedule */
    TRAIN_RULES_JOB,     /* the JobSpec envelope of a train job */
} train_rules_object;

/* Which members a document gave (not null): bit i is row i of the table, as train_rules_index
 * and train_rules_stage_index number them. stage[k] is for the k-th stage object. */
typedef struct train_rules_given {
    uint64_t top;
    uint64_t stage[TRAIN_RULES_STAGES];
} train_rules_given;

/* The row of a TrainSpec member (-1 for a name job.proto's TrainSpec does not have). */
int train_rules_index(const char *name);
/* The row of a StageSchedule member (-1 when none). */
int train_rules_stage_index(const char *name);
/* The row of a JobSpec member (-1 when none). */
int train_rules_job_index(const char *name);
/* Marks name, a member of object, as given in *mask; returns 0, or -1 for a name with no row. */
int train_rules_mark(uint64_t *mask, train_rules_object object, const char *name);

/* Fills every member given does not name with its default, then checks every rule. On success
 * every member holds its effective value (strings malloc'd, so free_unpacked frees them). On
 * failure returns ADAPT_EINVAL with field the member to change, relative to the TrainSpec
 * ("pack_window", "stages[1].lr_llm"), and err->message the reason alone
 * ("0 is outside [1, 1048576]"), for the caller to prefix ("train.pack_window: ..."). */
int train_rules_fill(Adaptd__TrainSpec *t, const train_rules_given *given,
                     char field[TRAIN_RULES_FIELD_MAX], adapt_error *err);

/* The envelope of a kind "train" job, then its train spec: name (at most 127 bytes), kind
 * ("train"), ranks (1, [1, 65536]), backend (cpu | cuda), launcher (local | slurm),
 * max_restarts (0, [0, 100]); train required, the other kinds' sub-specs refused. given marks
 * the envelope's members (TRAIN_RULES_JOB), train_given the train spec's. field is relative to
 * the JobSpec ("ranks", "train.pack_window"). The daemon's own limits (--slots, Slurm set up,
 * paths inside --data-root) are its own, on top of these. */
int train_rules_fill_job(Adaptd__JobSpec *j, uint64_t given, const train_rules_given *train_given,
                         char field[TRAIN_RULES_FIELD_MAX], adapt_error *err);

/* Whether every field of TrainSpec, StageSchedule and JobSpec in job.proto has a row and every row a
 * field of a type the rules handle; on failure err names the first that does not. */
int train_rules_check_table(adapt_error *err);

/* The built-in caption-instruction pool a spec without caption_instructions gets. */
extern const char *const train_rules_default_instructions[TRAIN_RULES_N_DEFAULT_INSTRUCTIONS];

#endif
