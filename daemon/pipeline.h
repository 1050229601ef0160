/* pipeline: the daemon's "pipeline" job — synthesize → filter → train → evaluate[i] run as the
 * stages of one job, each stage one or more attempts of it, resumable stage by stage.
 *
 * The one idea: the stage list is a pure function of the job's stored spec (pipeline_plan), and
 * which stages are done is a row per stage in SQLite (the stages table of schema version 3),
 * written when the attempt that ran a stage ends well. So a daemon restarted at any instant
 * recomputes the plan, reads which stages are done, and starts the lowest unfinished one; a
 * finished stage is never rerun, and a failed one is retried alone. Each stage gets a spec file
 * of its own kind (JOBDIR/stage-K.json) that adapt-worker reads as it reads a job of that kind;
 * the paths a client left empty are linked to the stage before (proto/job.proto PipelineSpec). */
#ifndef ADAPT_PIPELINE_H
#define ADAPT_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job_store.h"

enum { PIPELINE_MAX_EVALUATE = 16, PIPELINE_MAX_STAGES = 3 + PIPELINE_MAX_EVALUATE };

typedef struct pipeline_stage {
    char  name[32];        /* "synthesize", "filter", "train", "evaluate-0", … */
    char  kind[16];        /* the adapt-worker command that runs it */
    char *output_dir;      /* where it writes (malloc'd) */
    char *spec_json;       /* its own JobSpec of kind `kind` (malloc'd) */
} pipeline_stage;

typedef struct pipeline_plan {
    size_t         n;
    pipeline_stage stage[PIPELINE_MAX_STAGES];
} pipeline_plan;

/* The stages of a pipeline job from its stored spec JSON (a JobSpec of kind "pipeline").
 * ADAPT_EINVAL naming the field for a spec that has no stage it needs. Free with
 * pipeline_plan_free (also after a failure). */
int  pipeline_plan_make(const char *spec_json, pipeline_plan *out, adapt_error *err);
void pipeline_plan_free(pipeline_plan *p);

/* One stage as the store holds it. state: "pending" (never started), "running" (an attempt of
 * it was started), "done". */
typedef struct pipeline_stage_row {
    uint32_t index;
    char     name[32];
    char     state[16];
    uint32_t attempt;          /* the latest attempt that ran it; 0 = none */
    uint32_t attempts;         /* how many attempts ran it */
    int64_t  started_ms, finished_ms;
} pipeline_stage_row;

/* Attempt `attempt` runs stage `index` (named `name`) of job_id: the stage is running. */
int  pipeline_stage_begin(job_store_t *js, const char *job_id, uint32_t index, const char *name,
                          uint32_t attempt, adapt_error *err);
/* The attempt `attempt` of job_id ended well: the stage it ran is done (no change when it
 * already is, or when the attempt ran no stage). */
int  pipeline_stage_finish(job_store_t *js, const char *job_id, uint32_t attempt,
                           adapt_error *err);
/* The lowest stage of n that is not done (n when every stage is). */
int  pipeline_next_stage(job_store_t *js, const char *job_id, uint32_t n, uint32_t *next,
                         adapt_error *err);
/* The stages the store holds for job_id, by index (stages never started are absent). */
int  pipeline_stages_get(job_store_t *js, const char *job_id, pipeline_stage_row *rows,
                         size_t cap, size_t *n, adapt_error *err);

#endif
