/* seed_jobs: writes jobs with a per-step metrics series straight into an adaptd state dir, for
 * tests and benchmarks that need finished (or failed) jobs with history before adaptd starts.
 *
 * The one idea: the jobs go through the job store's own API (create, lifecycle transitions,
 * add_progress), so what adaptd later serves is exactly what a real run would have left in
 * SQLite; the loss curve is a fixed function of the step, so a test can predict every point.
 *
 * Usage: seed_jobs STATE_DIR [--steps N] [--state succeeded|failed|running] [--name NAME]
 *                            [--error TEXT] [--kind train|pipeline]
 * A pipeline job (four stages) is left with synthesize done by attempt 1 and filter started by
 * attempt 2, and no metrics series; its --state applies as for a train job.
 * Prints the new job's id on stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "job_store.h"
#include "pipeline.h"

typedef struct seed_options {
    const char *state_dir;
    const char *name;
    const char *error;
    long        steps;
    int         state;
    int         pipeline;
} seed_options;

static int parse_args(int argc, char **argv, seed_options *o)
{
    *o = (seed_options){ .name = "seeded-train", .steps = 50, .state = JOB_STORE_SUCCEEDED };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') { o->state_dir = a; continue; }
        if (!v) { fprintf(stderr, "seed_jobs: %s needs a value\n", a); return -1; }
        i++;
        if (strcmp(a, "--steps") == 0) {
            char *end;
            o->steps = strtol(v, &end, 10);
            if (*end || o->steps < 1 || o->steps > 1000000) {
                fprintf(stderr, "seed_jobs: --steps %s: expected an integer in [1, 1000000]\n", v);
                return -1;
            }
        } else if (strcmp(a, "--state") == 0) {
            o->state = job_store_state_parse(v);
            if (o->state != JOB_STORE_SUCCEEDED && o->state != JOB_STORE_FAILED &&
                o->state != JOB_STORE_RUNNING) {
                fprintf(stderr, "seed_jobs: --state %s: expected succeeded, failed or running\n", v);
                return -1;
            }
        } else if (strcmp(a, "--name") == 0) {
            o->name = v;
        } else if (strcmp(a, "--kind") == 0) {
            if (strcmp(v, "train") && strcmp(v, "pipeline")) {
                fprintf(stderr, "seed_jobs: --kind %s: expected train or pipeline\n", v);
                return -1;
            }
            o->pipeline = strcmp(v, "pipeline") == 0;
        } else if (strcmp(a, "--error") == 0) {
            o->error = v;
        } else {
            fprintf(stderr, "seed_jobs: unknown option %s\n", a);
            return -1;
        }
    }
    if (!o->state_dir) {
        fprintf(stderr, "usage: seed_jobs STATE_DIR [--steps N] [--state succeeded|failed|running] "
                        "[--name NAME] [--error TEXT] [--kind train|pipeline]\n");
        return -1;
    }
    return 0;
}

/* The loss the test expects at step s: a decaying exponential with a small ripple, so the
 * curve is neither flat nor monotone. */
static double seed_loss(long s)
{
    return 0.5 + 2.0 * exp(-(double)s / 15.0) + 0.05 * sin((double)s);
}

/* A pipeline spec pipeline_plan_make accepts (synthesize, filter, train, evaluate-0); its paths
 * are never opened, as the job never runs. */
static const char seed_pipeline_spec[] =
    "{\"name\":\"seeded-pipeline\",\"kind\":\"pipeline\",\"ranks\":1,\"max_restarts\":2,"
    "\"pipeline\":{\"work_dir\":\"/seeded/work\","
    "\"synthesize\":{\"model_path\":\"/seeded/model\",\"corpus\":\"/seeded/corpus\"},"
    "\"filter\":{\"model_path\":\"/seeded/model\"},"
    "\"train\":{\"model_path\":\"/seeded/model\",\"mode\":\"single_stage\"},"
    "\"evaluate\":[{\"benchmark\":\"/seeded/bench.jsonl\"}]}}";

static int seed_pipeline(const seed_options *o, job_store_t *js, char id[JOB_STORE_ID_LEN + 1],
                         adapt_error *err)
{
    job_store_new in = { .name = o->name, .kind = "pipeline", .ranks = 1, .max_restarts = 2,
                         .spec_json = seed_pipeline_spec };
    int rc = job_store_create(js, &in, id, err);
    if (rc == ADAPT_OK) rc = job_store_transition(js, id, JOB_STORE_STARTING, NULL, err);
    if (rc == ADAPT_OK) rc = job_store_transition(js, id, JOB_STORE_RUNNING, NULL, err);
    if (rc == ADAPT_OK) rc = pipeline_stage_begin(js, id, 0, "synthesize", 1, err);
    if (rc == ADAPT_OK) rc = pipeline_stage_finish(js, id, 1, err);
    if (rc == ADAPT_OK) rc = pipeline_stage_begin(js, id, 1, "filter", 2, err);
    if (rc == ADAPT_OK && o->state != JOB_STORE_RUNNING)
        rc = job_store_transition(js, id, o->state, o->error, err);
    return rc;
}

static int seed_run(const seed_options *o, job_store_t *js, char id[JOB_STORE_ID_LEN + 1],
                    adapt_error *err)
{
    if (o->pipeline) return seed_pipeline(o, js, id, err);
    job_store_new in = { .name = o->name, .kind = "train", .ranks = 1, .max_restarts = 0,
                         .spec_json = "{\"kind\":\"train\",\"ranks\":1,\"seeded\":true}" };
    int rc = job_store_create(js, &in, id, err);
    if (rc == ADAPT_OK) rc = job_store_transition(js, id, JOB_STORE_STARTING, NULL, err);
    if (rc == ADAPT_OK) rc = job_store_transition(js, id, JOB_STORE_RUNNING, NULL, err);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t t0 = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 - o->steps * 250;
    for (long s = 1; rc == ADAPT_OK && s <= o->steps; s++) {
        job_store_progress p = {
            .step = (uint64_t)s, .total_steps = (uint64_t)o->steps, .epoch = (uint32_t)(s * 2 / o->steps),
            .samples = (uint64_t)s * 8, .tokens = (uint64_t)s * 4096, .loss = seed_loss(s),
            .lr = 3e-4, .grad_norm = 1.0 / (double)s, .step_seconds = 0.25,
            .tokens_per_second = 16384.0, .unix_time_ms = t0 + s * 250,
        };
        rc = job_store_add_progress(js, id, &p, err);
    }
    if (rc == ADAPT_OK && o->state != JOB_STORE_RUNNING)
        rc = job_store_transition(js, id, o->state, o->error, err);
    return rc;
}

int main(int argc, char **argv)
{
    seed_options o;
    if (parse_args(argc, argv, &o) != 0) return 2;
    job_store_t *js;
    adapt_error err = {0};
    char id[JOB_STORE_ID_LEN + 1];
    int rc = job_store_open(&js, o.state_dir, &err);
    if (rc == ADAPT_OK) {
        rc = seed_run(&o, js, id, &err);
        job_store_close(js);
    }
    if (rc != ADAPT_OK) {
        fprintf(stderr, "seed_jobs: %s\n", err.message);
        return 1;
    }
    printf("%s\n", id);
    return 0;
}
