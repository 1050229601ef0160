/* test_pipeline_examples: deploy/examples/{synthesize,filter,evaluate,pipeline}.yaml read as
 * adaptctl submit reads them (tools/job_yaml) and checked by the daemon (daemon/job_spec with a
 * --data-root holding the paths they name) and by adapt-worker (worker/job_kinds); the pipeline
 * example is accepted with its train stage filled by proto/train_rules (the values it gives kept,
 * the rest defaulted, the stages linked), and a bad train stage is refused naming its field.
 * Usage: test_pipeline_examples DEPLOY_EXAMPLES_DIR */
#include "check.h"
#include "job_kinds.h"
#include "job_spec.h"
#include "job_yaml.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

static char root[PATH_MAX];

static void make(const char *rel, int file)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; *s; s++)
        if (*s == '/') { *s = '\0'; mkdir(p, 0755); *s = '/'; }
    if (file) {
        FILE *f = fopen(p, "w");
        if (f) fclose(f);
    } else {
        mkdir(p, 0755);
    }
}

/* The example as JSON text (malloc'd), or NULL after a failed check. */
static char *example_json(const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.yaml", dir, name);
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    if (!f) return NULL;
    char *text = malloc(1 << 16);
    size_t len = text ? fread(text, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (!text) return NULL;
    cJSON *doc = NULL;
    adapt_error err = {0};
    CHECK_MSG(job_yaml_parse(text, len, path, &doc, &err) == ADAPT_OK, "%s", err.message);
    free(text);
    char *json = doc ? job_yaml_print(doc) : NULL;
    cJSON_Delete(doc);
    return json;
}

static void check_example(const char *dir, const char *kind)
{
    char *json = example_json(dir, kind);
    if (!json) return;
    job_spec_policy pol = { .data_root = root, .max_ranks = 8 };
    Adaptd__JobSpec *spec = NULL;
    char *normalized = NULL, field[JOB_SPEC_FIELD_MAX] = "";
    adapt_error err = {0};
    int rc = job_spec_parse(json, strlen(json), &pol, &spec, &normalized, field, &err);
    if (!strcmp(kind, "pipeline")) {
        CHECK_MSG(rc == ADAPT_OK, "the daemon refuses pipeline.yaml: field %s: %s", field,
                  err.message);
        const Adaptd__TrainSpec *t = spec && spec->pipeline ? spec->pipeline->train : NULL;
        CHECK(t != NULL);
        if (t) {
            /* given by the example, kept */
            CHECK(t->epochs == 1 && t->global_batch == 128 && t->checkpoint_every == 200);
            CHECK(t->lr_vision > 1.9e-6f && t->lr_vision < 2.1e-6f);
            /* left out, the rules' defaults */
            CHECK(t->pack_window == 1024 && t->freeze_vision && t->keep_last == 0);
            CHECK(t->adam_beta2 > 0.998f && t->adam_beta2 < 1.0f);
            /* linked: the synthesize corpus, the filtered overlay, work_dir/model */
            CHECK(t->n_overlays == 1 && strstr(t->overlays[0], "runs/biomed-pipeline/filtered"));
            CHECK(strstr(t->corpus, "corpora/biomed-captions") != NULL);
            CHECK(strstr(t->output_dir, "runs/biomed-pipeline/model") != NULL);
        }
        CHECK(normalized && strstr(normalized, "\"pack_window\":1024"));
        /* the given marks come from the document: false stays false, a 0 is refused as given */
        cJSON *doc = cJSON_Parse(json);
        cJSON *tr = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "pipeline"), "train");
        if (tr) {
            cJSON_AddFalseToObject(tr, "freeze_vision");
            char *j2 = cJSON_PrintUnformatted(doc);
            Adaptd__JobSpec *s2 = NULL;
            char *n2 = NULL;
            CHECK(j2 && job_spec_parse(j2, strlen(j2), &pol, &s2, &n2, field, &err) == ADAPT_OK);
            CHECK(s2 && s2->pipeline && !s2->pipeline->train->freeze_vision);
            if (s2) adaptd__job_spec__free_unpacked(s2, NULL);
            free(n2);
            free(j2);
            cJSON_AddNumberToObject(tr, "pack_window", 0);
            j2 = cJSON_PrintUnformatted(doc);
            s2 = NULL;
            n2 = NULL;
            CHECK(j2 && job_spec_parse(j2, strlen(j2), &pol, &s2, &n2, field, &err) == ADAPT_EINVAL);
            CHECK_MSG(!strcmp(field, "pipeline.train.pack_window") &&
                      strstr(err.message, "pipeline.train.pack_window"), "field %s: %s", field,
                      err.message);
            if (s2) adaptd__job_spec__free_unpacked(s2, NULL);
            free(n2);
            free(j2);
            cJSON_ReplaceItemInObject(tr, "pack_window", cJSON_CreateNumber(64));
            cJSON_ReplaceItemInObject(tr, "mode", cJSON_CreateString("two_stage"));
            j2 = cJSON_PrintUnformatted(doc);
            s2 = NULL;
            n2 = NULL;
            CHECK(j2 && job_spec_parse(j2, strlen(j2), &pol, &s2, &n2, field, &err) == ADAPT_EINVAL);
            CHECK_MSG(!strcmp(field, "pipeline.train.mode"), "field %s: %s", field, err.message);
            if (s2) adaptd__job_spec__free_unpacked(s2, NULL);
            free(n2);
            free(j2);
        }
        CHECK(tr != NULL);
        cJSON_Delete(doc);
    } else {
        CHECK_MSG(rc == ADAPT_OK, "the daemon refuses %s.yaml: field %s: %s", kind, field,
                  err.message);
        /* the worker reads what the daemon writes for it */
        Adaptd__JobSpec *job = NULL;
        if (normalized)
            CHECK_MSG(job_kinds_parse(normalized, strlen(normalized), "spec.json", kind, &job,
                                      &err) == ADAPT_OK, "adapt-worker refuses %s: %s", kind,
                      err.message);
        if (job) adaptd__job_spec__free_unpacked(job, NULL);
        /* and the example as written */
        CHECK_MSG(job_kinds_parse(json, strlen(json), kind, kind, &job, &err) == ADAPT_OK,
                  "adapt-worker refuses %s.yaml: %s", kind, err.message);
        if (job) adaptd__job_spec__free_unpacked(job, NULL);
    }
    if (spec) adaptd__job_spec__free_unpacked(spec, NULL);
    free(normalized);
    free(json);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_pipeline_examples DEPLOY_EXAMPLES_DIR\n");
        return 2;
    }
    char tmpl[] = "/tmp/adapt-test-pipeline-XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, root)) return 1;
    const char *dirs[] = { "models/synthesizer", "models/judge", "models/qwen2-vl-2b-instruct",
                           "corpora/biomed-captions", "corpora/biomed-synthesized", "runs/biomed-adapt" };
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) make(dirs[i], 0);
    make("benchmarks/vqa-rad/test.jsonl", 1);
    make("benchmarks/slake/test.jsonl", 1);
    const char *kinds[] = { "synthesize", "filter", "evaluate", "pipeline" };
    for (size_t i = 0; i < 4; i++) check_example(argv[1], kinds[i]);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return check_report("test_pipeline_examples");
}
