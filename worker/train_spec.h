/* train_spec: the train spec JSON (and the JobSpec envelope around it) into protobuf.
 *
 * The one idea: every key is one row of a table (name, type, field offset, default, range or
 * allowed words), so parsing, defaults, range checks and the refusal of unknown keys are one
 * loop, and the error for a bad value always names the key and its JSON path
 * ("$.train.stages[1].lr_llm"). Defaults follow LLaMA-Factory's full fine-tuning recipe for
 * Qwen2-VL (examples/train_full/qwen2vl_full_sft.yaml and its argument defaults):
 *
 *   key                  default        range / words
 *   model_path           (required)     non-empty
 *   corpus               (required)     non-empty
 *   overlays             []             non-empty strings; two_stage needs at least one
 *   output_dir           (required)     non-empty
 *   mode                 single_stage   single_stage | two_stage | synthesizer
 *   epochs               3              0 .. 100000     (max_steps > 0 takes precedence)
 *   max_steps            0              0 .. 1e12       (epochs and max_steps not both 0)
 *   global_batch         16             1 .. 1048576    samples per optimizer step
 *   micro_batch_tokens   4096           64 .. 16777216  and >= max_seq_len
 *   lr_llm               1e-5           (0, 1]
 *   lr_vision            = lr_llm       [0, 1]
 *   weight_decay         0              [0, 1]
 *   warmup_ratio         0.1            [0, 1]
 *   schedule             cosine         cosine | linear | constant
 *   max_grad_norm        1.0            [0, 1e6]        0: no clipping
 *   seed                 42             0 .. 2^53 as a number, any u64 as a decimal string
 *   freeze_vision        true           (LLaMA-Factory's freeze_vision_tower)
 *   freeze_merger        true           (LLaMA-Factory's freeze_multi_modal_projector)
 *   checkpoint_every     500            0 .. 1e9        0: only on signal and at the end
 *   keep_last            0              0 .. 1000000    0: keep every checkpoint
 *   image_min_pixels     1024           1 .. 2^28       <= image_max_pixels
 *   image_max_pixels     589824         1 .. 2^28
 *   max_seq_len          2048           16 .. 1048576   (LLaMA-Factory's cutoff_len)
 *   caption_instructions built-in pool  1 .. 100000 non-empty strings
 *   blank_image_ratio    0              [0, 1]; non-zero only in synthesizer mode
 *   stages               []             two_stage: exactly 2 objects; other modes: none
 *   pack_window          1024           1 .. 1048576
 *   adam_beta1           0.9            [0, 1)
 *   adam_beta2           0.999          [0, 1)
 *   adam_epsilon         1e-8           (0, 1]
 *
 * A key given as null takes its default, and "stages": [] means none, as in proto3's JSON
 * mapping, so a spec the daemon re-serialises from its message reads the same.
 *
 * A stage object takes epochs, max_steps, lr_llm, lr_vision, warmup_ratio, schedule; the
 * learning rates, warmup and schedule it leaves out come from the top level, and its length
 * (epochs, max_steps) from the top level only when it gives neither. */
#ifndef ADAPT_TRAIN_SPEC_H
#define ADAPT_TRAIN_SPEC_H

#include "error.h"
#include "job.pb-c.h"

#include <stddef.h>

/* Parses a train spec object. src names the input in messages (a file path, "request body").
 * Free *out with train_spec_free. */
int train_spec_parse(const char *json, size_t len, const char *src, Adaptd__TrainSpec **out,
                     adapt_error *err);
/* Reads and parses a file holding either a JobSpec (an object with "kind") or a bare TrainSpec.
 * *job receives the envelope when there is one (else NULL); *train always the train spec, owned
 * by *job when there is one. Free with train_spec_free_job(*job) or train_spec_free(*train). */
int train_spec_load(const char *path, Adaptd__JobSpec **job, Adaptd__TrainSpec **train,
                    adapt_error *err);
/* Parses a JobSpec envelope (name, kind, ranks, backend, launcher, max_restarts, train). */
int train_spec_parse_job(const char *json, size_t len, const char *src, Adaptd__JobSpec **out,
                         adapt_error *err);

void train_spec_free(Adaptd__TrainSpec *spec);
void train_spec_free_job(Adaptd__JobSpec *job);

/* The built-in caption-instruction pool used when the spec gives none. */
extern const char *const train_spec_default_instructions[];
extern const size_t train_spec_n_default_instructions;

#endif
