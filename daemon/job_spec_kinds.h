/* job_spec_kinds: the daemon's rules for the pipeline job kinds (issue 8) — synthesize, filter,
 * evaluate and pipeline — on top of job_spec's generic JSON walk.
 *
 * The one idea: the same defaults as adapt-worker (worker/job_kinds.h) are filled in here, so
 * the normalized spec a client reads back is the one the worker runs; every path is made
 * canonical inside --data-root, inputs must exist, outputs need only an existing parent. */
#ifndef ADAPT_JOB_SPEC_KINDS_H
#define ADAPT_JOB_SPEC_KINDS_H

#include "job_spec.h"

struct cJSON;   /* <cjson/cJSON.h>, for the submitted document */

/* Checks a JobSpec whose kind is not "train": the envelope (ranks, backend, launcher,
 * max_restarts) and the sub-spec its kind names, filling defaults. An unknown kind is refused
 * naming the kinds there are. root is the submitted JSON document: a pipeline's train stage goes
 * through proto/train_rules, which must know the members the client gave (freeze_vision: false
 * is not "left out"). field names the offending field on failure. */
int job_spec_check_kind(Adaptd__JobSpec *s, const struct cJSON *root, const job_spec_policy *pol,
                        char field[JOB_SPEC_FIELD_MAX], adapt_error *err);

#endif
