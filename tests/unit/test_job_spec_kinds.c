/* test_job_spec_kinds: the daemon's checks of the pipeline job kinds (daemon/job_spec_kinds.c)
 * through job_spec_parse: defaults filled as adapt-worker fills them, paths made canonical inside
 * the data root, each refusal naming its field; pipeline checked stage by stage, its train stage
 * by proto/train_rules. */
#include "check.h"
#include "job_spec.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char root[PATH_MAX];

static int parse(const char *json, char **normalized, char field[JOB_SPEC_FIELD_MAX],
                 adapt_error *err)
{
    job_spec_policy pol = { .data_root = root, .max_ranks = 4 };
    Adaptd__JobSpec *spec = NULL;
    *normalized = NULL;
    field[0] = '\0';
    int rc = job_spec_parse(json, strlen(json), &pol, &spec, normalized, field, err);
    if (spec) adaptd__job_spec__free_unpacked(spec, NULL);
    return rc;
}

static void refused(const char *json, const char *want_field, const char *want_msg)
{
    char *norm, field[JOB_SPEC_FIELD_MAX];
    adapt_error err = {0};
    CHECK_MSG(parse(json, &norm, field, &err) == ADAPT_EINVAL, "accepted: %s", json);
    CHECK_MSG(!strcmp(field, want_field), "field \"%s\", want \"%s\" (%s)", field, want_field,
              err.message);
    CHECK_STR_CONTAINS(err.message, want_msg);
    free(norm);
}

static void test_synthesize(void)
{
    char *norm, field[JOB_SPEC_FIELD_MAX];
    adapt_error err = {0};
    CHECK_MSG(parse("{\"kind\":\"synthesize\",\"synthesize\":{\"model_path\":\"model\","
                    "\"corpus\":\"corpus\",\"output_dir\":\"out/syn\"}}", &norm, field, &err) == 0,
              "%s", err.message);
    CHECK(norm != NULL);
    if (norm) {
        CHECK_STR_CONTAINS(norm, "\"max_new_tokens\":512");
        CHECK_STR_CONTAINS(norm, "\"batch_size\":16");
        CHECK_STR_CONTAINS(norm, "\"seed\":42");
        CHECK_STR_CONTAINS(norm, "\"top_p\":1");
        CHECK_STR_CONTAINS(norm, "\"backend\":\"cpu\"");
        char want[PATH_MAX + 32];
        snprintf(want, sizeof want, "\"model_path\":\"%s/model\"", root);
        CHECK_STR_CONTAINS(norm, want);
    }
    free(norm);
    refused("{\"kind\":\"synthesize\"}", "synthesize", "required for kind \"synthesize\"");
    refused("{\"kind\":\"synthesize\",\"synthesize\":{\"corpus\":\"corpus\",\"output_dir\":\"o\"}}",
            "synthesize.model_path", "required");
    refused("{\"kind\":\"synthesize\",\"synthesize\":{\"model_path\":\"nothing\",\"corpus\":"
            "\"corpus\",\"output_dir\":\"o\"}}", "synthesize.model_path", "nothing");
    refused("{\"kind\":\"synthesize\",\"synthesize\":{\"model_path\":\"model\",\"corpus\":"
            "\"corpus\",\"output_dir\":\"/etc/x\"}}", "synthesize.output_dir", "outside");
    refused("{\"kind\":\"synthesize\",\"synthesize\":{\"model_path\":\"model\",\"corpus\":"
            "\"corpus\",\"output_dir\":\"o\",\"top_p\":1.5}}", "synthesize.top_p", "outside");
    refused("{\"kind\":\"synthesize\",\"synthesize\":{\"model_path\":\"model\",\"corpus\":"
            "\"corpus\",\"output_dir\":\"o\",\"family\":\"mllama\"}}", "synthesize.family",
            "qwen2_vl");
    refused("{\"kind\":\"synthesize\",\"train\":{},\"synthesize\":{}}", "train",
            "only for kind \"train\"");
    refused("{\"kind\":\"synthesize\",\"filter\":{},\"synthesize\":{}}", "filter",
            "only for kind \"filter\"");
    refused("{\"kind\":\"synthesize\",\"ranks\":9,\"synthesize\":{}}", "ranks", "--slots");
    refused("{\"kind\":\"distill\"}", "kind", "expected one of train, synthesize");
    refused("{\"kind\":\"synthesize\",\"synthesize\":{\"bogus\":1}}", "synthesize.bogus",
            "unknown field");
}

static void test_filter_evaluate(void)
{
    char *norm, field[JOB_SPEC_FIELD_MAX];
    adapt_error err = {0};
    CHECK_MSG(parse("{\"kind\":\"filter\",\"filter\":{\"model_path\":\"model\",\"corpus\":"
                    "\"corpus\",\"synthesized\":\"syn\",\"output_dir\":\"f\",\"cot_templates\":"
                    "[\"{informative} so {precise}\"]}}", &norm, field, &err) == 0, "%s",
              err.message);
    if (norm) CHECK_STR_CONTAINS(norm, "\"max_new_tokens\":2");
    free(norm);
    refused("{\"kind\":\"filter\",\"filter\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
            "\"synthesized\":\"missing\",\"output_dir\":\"f\"}}", "filter.synthesized", "missing");
    refused("{\"kind\":\"filter\",\"filter\":{\"model_path\":\"model\",\"corpus\":\"corpus\","
            "\"synthesized\":\"syn\",\"output_dir\":\"f\",\"cot_templates\":[\"{informative}\"]}}",
            "filter.cot_templates[0]", "{precise}");
    CHECK_MSG(parse("{\"kind\":\"evaluate\",\"evaluate\":{\"model_path\":\"model\",\"benchmark\":"
                    "\"bench.jsonl\",\"output_dir\":\"e\"}}", &norm, field, &err) == 0, "%s",
              err.message);
    if (norm) CHECK_STR_CONTAINS(norm, "\"max_new_tokens\":256");
    free(norm);
    refused("{\"kind\":\"evaluate\",\"evaluate\":{\"model_path\":\"model\",\"benchmark\":"
            "\"nope.jsonl\",\"output_dir\":\"e\"}}", "evaluate.benchmark", "nope.jsonl");
}

static void test_pipeline(void)
{
    /* checked stage by stage (the train stage's model, the links between stages), then refused */
    refused("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"w\",\"synthesize\":{\"model_path\":"
            "\"model\",\"corpus\":\"corpus\"},\"filter\":{\"model_path\":\"nothing\"},\"train\":{}}}",
            "pipeline.filter.model_path", "nothing");
    refused("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"w\",\"synthesize\":{\"model_path\":"
            "\"model\",\"corpus\":\"corpus\"},\"filter\":{\"model_path\":\"model\"},\"train\":{}}}",
            "pipeline.train.model_path", "required");
    refused("{\"kind\":\"pipeline\",\"pipeline\":{\"synthesize\":{}}}", "pipeline.work_dir",
            "required");
    /* the train stage through train_rules: its ranges and rules, named under pipeline.train */
    refused("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"w\",\"synthesize\":{\"model_path\":"
            "\"model\",\"corpus\":\"corpus\"},\"filter\":{\"model_path\":\"model\"},\"train\":"
            "{\"model_path\":\"model\",\"warmup_ratio\":2}}}", "pipeline.train.warmup_ratio",
            "outside");
    refused("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"w\",\"synthesize\":{\"model_path\":"
            "\"model\",\"corpus\":\"corpus\"},\"filter\":{\"model_path\":\"model\"},\"train\":"
            "{\"model_path\":\"model\",\"mode\":\"two_stage\"}}}", "pipeline.train.mode",
            "single_stage");
    /* accepted: the stages linked, the train stage's defaults filled */
    char *norm, field[JOB_SPEC_FIELD_MAX];
    adapt_error err = {0};
    CHECK_MSG(parse("{\"kind\":\"pipeline\",\"pipeline\":{\"work_dir\":\"w\",\"synthesize\":"
                    "{\"model_path\":\"model\",\"corpus\":\"corpus\"},\"filter\":{\"model_path\":"
                    "\"model\"},\"train\":{\"model_path\":\"model\",\"freeze_vision\":false},"
                    "\"evaluate\":[{\"benchmark\":\"bench.jsonl\"}]}}", &norm, field, &err) == 0,
              "field %s: %s", field, err.message);
    if (norm) {
        char want[PATH_MAX + 64];
        snprintf(want, sizeof want, "\"overlays\":[\"%s/w/filtered\"]", root);
        CHECK_STR_CONTAINS(norm, want);
        snprintf(want, sizeof want, "\"output_dir\":\"%s/w/model\"", root);
        CHECK_STR_CONTAINS(norm, want);
        CHECK_STR_CONTAINS(norm, "\"pack_window\":1024");
        CHECK_STR_CONTAINS(norm, "\"mode\":\"single_stage\"");
        CHECK_STR_CONTAINS(norm, "\"freeze_vision\":false");   /* given, not defaulted */
        CHECK_STR_CONTAINS(norm, "\"freeze_merger\":true");
    }
    free(norm);
}

int main(void)
{
    char tmpl[] = "/tmp/adapt-kinds-XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, root)) return 1;
    const char *dirs[] = { "model", "corpus", "syn" };
    char p[PATH_MAX + 32];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
        mkdir(p, 0755);
    }
    snprintf(p, sizeof p, "%s/bench.jsonl", root);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
    test_synthesize();
    test_filter_evaluate();
    test_pipeline();
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return check_report("test_job_spec_kinds");
}
