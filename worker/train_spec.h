/* train_spec: adapt-worker's reader of the spec file adaptd writes (JOBDIR/spec.json) or a user
 * hands it: a JobSpec of kind "train" (an object with "kind") or a bare TrainSpec, as JSON with
 * proto/job.proto's field names.
 *
 * The one idea: this module only maps JSON onto the message, taking exactly the JSON types
 * adaptd takes (a uint64 also as a decimal string, null as "the default", unknown and repeated
 * keys refused); every default, range, allowed word and rule between members is
 * proto/train_rules' train_rules_fill — the function adaptd runs at submission — so a spec
 * adaptd accepts is accepted here with the same effective values, and one it refuses is refused
 * here naming the same member. The table of defaults and ranges is in proto/train_rules.h.
 *
 * Messages are "FILE: MEMBER: reason", MEMBER named as adaptd names it
 * ("spec.json: train.pack_window: 0 is outside [1, 1048576]"; a bare TrainSpec's members have
 * no "train." prefix). */
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
/* Parses a JobSpec of kind "train": the envelope (name, kind, ranks, backend, launcher,
 * max_restarts) and its train spec. */
int train_spec_parse_job(const char *json, size_t len, const char *src, Adaptd__JobSpec **out,
                         adapt_error *err);

void train_spec_free(Adaptd__TrainSpec *spec);
void train_spec_free_job(Adaptd__JobSpec *job);

/* The built-in caption-instruction pool used when the spec gives none (train_rules'). */
extern const char *const *const train_spec_default_instructions;
extern const size_t train_spec_n_default_instructions;

#endif
