/* test_pipeline_stages: the pipeline job's plan (daemon/pipeline.c) — the stage list and each
 * stage's own spec, with the paths a client left empty linked to the stage before and to
 * work_dir, the ones it gave kept — and the stages table: a stage begun, finished by the
 * attempt that ran it (only by that one), the next stage the lowest not done, a retried stage
 * counting its attempts, state surviving a reopen of the store (resume stage by stage). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "job_store.h"
#include "pipeline.h"

static char dir[] = "/tmp/adapt-test-pipeline-stages-XXXXXX";

static const char *const SPEC =
    "{\"name\":\"p\",\"kind\":\"pipeline\",\"ranks\":2,\"backend\":\"cpu\",\"max_restarts\":1,"
    "\"pipeline\":{\"work_dir\":\"/w\","
    "\"synthesize\":{\"model_path\":\"/m/syn\",\"corpus\":\"/c\",\"max_new_tokens\":8},"
    "\"filter\":{\"model_path\":\"/m/judge\",\"output_dir\":\"/elsewhere/filtered\"},"
    "\"train\":{\"model_path\":\"/m/base\",\"max_steps\":3},"
    "\"evaluate\":[{\"benchmark\":\"/b/a.jsonl\"},{\"benchmark\":\"/b/b.jsonl\",\"model_path\":\"/m/other\"}]}}";

/* The string at path a.b in a stage's spec JSON ("" when absent). */
static const char *get(cJSON *doc, const char *a, const char *b)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(doc, a);
    const cJSON *v = b ? cJSON_GetObjectItemCaseSensitive(o, b) : o;
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void test_plan(void)
{
    pipeline_plan p;
    adapt_error err = {0};
    CHECK_MSG(pipeline_plan_make(SPEC, &p, &err) == ADAPT_OK, "%s", err.message);
    CHECK(p.n == 5);
    const char *names[] = { "synthesize", "filter", "train", "evaluate-0", "evaluate-1" };
    const char *kinds[] = { "synthesize", "filter", "train", "evaluate", "evaluate" };
    for (size_t i = 0; i < 5 && i < p.n; i++)
        CHECK_MSG(!strcmp(p.stage[i].name, names[i]) && !strcmp(p.stage[i].kind, kinds[i]),
                  "stage %zu: %s %s", i, p.stage[i].name, p.stage[i].kind);
    cJSON *s[5] = {0};
    for (size_t i = 0; i < 5 && i < p.n; i++) {
        s[i] = cJSON_Parse(p.stage[i].spec_json);
        CHECK(s[i] && !strcmp(get(s[i], "kind", NULL), kinds[i]));
        /* the envelope: ranks and backend carried, the name saying which stage */
        CHECK(cJSON_GetObjectItemCaseSensitive(s[i], "ranks") &&
              cJSON_GetObjectItemCaseSensitive(s[i], "ranks")->valueint == 2);
        CHECK(!strcmp(get(s[i], "backend", NULL), "cpu"));
        CHECK(strstr(get(s[i], "name", NULL), names[i]) != NULL);
        /* only the stage's own sub-spec, no pipeline object */
        CHECK(!cJSON_GetObjectItemCaseSensitive(s[i], "pipeline"));
    }
    if (p.n == 5 && s[0] && s[1] && s[2] && s[3] && s[4]) {
        CHECK(!strcmp(get(s[0], "synthesize", "output_dir"), "/w/synthesized"));
        CHECK(!strcmp(p.stage[0].output_dir, "/w/synthesized"));
        CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s[0], "synthesize"),
                                               "max_new_tokens")->valueint == 8);
        CHECK(!strcmp(get(s[1], "filter", "corpus"), "/c"));
        CHECK(!strcmp(get(s[1], "filter", "synthesized"), "/w/synthesized"));
        CHECK(!strcmp(get(s[1], "filter", "output_dir"), "/elsewhere/filtered"));   /* kept */
        CHECK(!strcmp(get(s[2], "train", "corpus"), "/c"));
        CHECK(!strcmp(get(s[2], "train", "output_dir"), "/w/model"));
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(s[2], "train"), "overlays");
        CHECK(cJSON_GetArraySize(ov) == 1 &&
              !strcmp(cJSON_GetArrayItem(ov, 0)->valuestring, "/elsewhere/filtered"));
        CHECK(!strcmp(get(s[3], "evaluate", "model_path"), "/w/model"));
        CHECK(!strcmp(get(s[3], "evaluate", "output_dir"), "/w/eval-0"));
        CHECK(!strcmp(get(s[4], "evaluate", "model_path"), "/m/other"));      /* kept */
        CHECK(!strcmp(get(s[4], "evaluate", "output_dir"), "/w/eval-1"));
    }
    for (size_t i = 0; i < 5; i++) cJSON_Delete(s[i]);
    pipeline_plan_free(&p);

    /* no evaluate: three stages */
    CHECK(pipeline_plan_make("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"/w\","
                             "\"synthesize\":{\"corpus\":\"/c\"},\"filter\":{},"
                             "\"train\":{\"model_path\":\"/m\"}}}", &p, &err) == ADAPT_OK && p.n == 3);
    pipeline_plan_free(&p);
    /* refusals name the field */
    CHECK(pipeline_plan_make("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"/w\","
                             "\"synthesize\":{\"corpus\":\"/c\"},\"train\":{}}}", &p, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "pipeline.filter");
    pipeline_plan_free(&p);
    CHECK(pipeline_plan_make("{\"kind\":\"pipeline\",\"pipeline\":{"
                             "\"synthesize\":{\"corpus\":\"/c\"},\"filter\":{},\"train\":{}}}",
                             &p, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "pipeline.synthesize.output_dir");
    pipeline_plan_free(&p);
    CHECK(pipeline_plan_make("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"/w\","
                             "\"synthesize\":{\"corpus\":\"/c\"},\"filter\":{},"
                             "\"train\":{\"model_path\":\"/m\",\"mode\":\"two_stage\"}}}",
                             &p, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "pipeline.train.mode");
    pipeline_plan_free(&p);
    CHECK(pipeline_plan_make("[1]", &p, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "not a JSON object");
    pipeline_plan_free(&p);
}

static void test_stages(void)
{
    job_store_t *js = NULL;
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    if (!js) return;
    char id[JOB_STORE_ID_LEN + 1];
    job_store_new in = { .name = "p", .kind = "pipeline", .ranks = 1, .spec_json = SPEC };
    CHECK(job_store_create(js, &in, id, &err) == ADAPT_OK);
    uint32_t next = 99;
    CHECK(pipeline_next_stage(js, id, 5, &next, &err) == ADAPT_OK && next == 0);
    /* attempt 1 runs stage 0 and ends well */
    CHECK(pipeline_stage_begin(js, id, 0, "synthesize", 1, &err) == ADAPT_OK);
    CHECK(pipeline_next_stage(js, id, 5, &next, &err) == ADAPT_OK && next == 0);
    CHECK(pipeline_stage_finish(js, id, 1, &err) == ADAPT_OK);
    CHECK(pipeline_next_stage(js, id, 5, &next, &err) == ADAPT_OK && next == 1);
    /* attempt 2 runs stage 1 and fails; attempt 3 runs it again and ends well */
    CHECK(pipeline_stage_begin(js, id, 1, "filter", 2, &err) == ADAPT_OK);
    CHECK(pipeline_stage_begin(js, id, 1, "filter", 3, &err) == ADAPT_OK);
    /* the failed attempt 2 finishing late changes nothing: attempt 3 runs the stage now */
    CHECK(pipeline_stage_finish(js, id, 2, &err) == ADAPT_OK);
    CHECK(pipeline_next_stage(js, id, 5, &next, &err) == ADAPT_OK && next == 1);
    CHECK(pipeline_stage_finish(js, id, 3, &err) == ADAPT_OK);
    /* finishing twice (a daemon restarted while the stage drained) changes nothing */
    CHECK(pipeline_stage_finish(js, id, 3, &err) == ADAPT_OK);
    /* a done stage is never begun again */
    CHECK(pipeline_stage_begin(js, id, 0, "synthesize", 4, &err) == ADAPT_OK);
    job_store_close(js);
    /* reopened (a daemon restart): the next stage is train */
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    if (!js) return;
    CHECK(pipeline_next_stage(js, id, 5, &next, &err) == ADAPT_OK && next == 2);
    pipeline_stage_row rows[PIPELINE_MAX_STAGES];
    size_t n = 0;
    CHECK(pipeline_stages_get(js, id, rows, PIPELINE_MAX_STAGES, &n, &err) == ADAPT_OK && n == 2);
    if (n == 2) {
        CHECK(rows[0].index == 0 && !strcmp(rows[0].state, "done") && rows[0].attempt == 1 &&
              rows[0].attempts == 1 && rows[0].finished_ms >= rows[0].started_ms);
        CHECK(rows[1].index == 1 && !strcmp(rows[1].name, "filter") &&
              !strcmp(rows[1].state, "done") && rows[1].attempt == 3 && rows[1].attempts == 2);
    }
    /* every stage done: next is the count */
    for (uint32_t k = 2; k < 5; k++) {
        CHECK(pipeline_stage_begin(js, id, k, "x", 4 + k, &err) == ADAPT_OK);
        CHECK(pipeline_stage_finish(js, id, 4 + k, &err) == ADAPT_OK);
    }
    CHECK(pipeline_next_stage(js, id, 5, &next, &err) == ADAPT_OK && next == 5);
    job_store_close(js);
}

/* A stage that ended well: running -> starting closes its attempt as succeeded (the retry
 * budget counts those apart from failures) and opens the next one. */
static void test_next_stage_transition(void)
{
    job_store_t *js = NULL;
    adapt_error err = {0};
    CHECK_MSG(job_store_open(&js, dir, &err) == ADAPT_OK, "%s", err.message);
    if (!js) return;
    char id[JOB_STORE_ID_LEN + 1];
    job_store_new in = { .name = "p", .kind = "pipeline", .ranks = 1, .spec_json = SPEC };
    CHECK(job_store_create(js, &in, id, &err) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_STARTING, NULL, &err) == ADAPT_OK);
    CHECK(job_store_transition(js, id, JOB_STORE_RUNNING, NULL, &err) == ADAPT_OK);
    CHECK_MSG(job_store_transition(js, id, JOB_STORE_STARTING, NULL, &err) == ADAPT_OK, "%s",
              err.message);
    job_store_attempt a;
    CHECK(job_store_attempt_get(js, id, 1, &a, &err) == ADAPT_OK &&
          !strcmp(a.outcome, "succeeded") && a.ended_ms > 0);
    CHECK(job_store_attempt_get(js, id, 2, &a, &err) == ADAPT_OK && a.ended_ms == 0);
    uint32_t n = 0;
    CHECK(job_store_attempt_count(js, id, JOB_STORE_SUCCEEDED, &n, &err) == ADAPT_OK && n == 1);
    job_store_record r;
    CHECK(job_store_get(js, id, &r, &err) == ADAPT_OK && r.state == JOB_STORE_STARTING &&
          r.attempt == 2);
    job_store_record_clear(&r);
    job_store_close(js);
}

int main(void)
{
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_plan();
    test_stages();
    test_next_stage_transition();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("pipeline_stages");
}
