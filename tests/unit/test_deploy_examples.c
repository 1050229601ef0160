/* test_deploy_examples: deploy/examples/train.yaml is a job adaptd accepts as written — read
 * as adaptctl submit reads it (tools/job_yaml), validated by the daemon (daemon/job_spec, with a
 * --data-root holding the relative paths it names) and by the worker (worker/train_spec), and
 * every other .yaml file in deploy/examples at least reads as YAML.
 * Usage: test_deploy_examples DEPLOY_EXAMPLES_DIR */
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "check.h"
#include "job_spec.h"
#include "job_yaml.h"
#include "train_spec.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf) buf[*len] = '\0';
    return buf;
}

static cJSON *yaml_read(const char *path)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    CHECK_MSG(text != NULL, "cannot read %s", path);
    cJSON *doc = NULL;
    adapt_error err = {0};
    if (text) CHECK_MSG(job_yaml_parse(text, len, path, &doc, &err) == ADAPT_OK, "%s", err.message);
    free(text);
    return doc;
}

static void mkdirs(const char *root, const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; *s; s++)
        if (*s == '/') { *s = '\0'; mkdir(p, 0755); *s = '/'; }
    mkdir(p, 0755);
}

static void test_train(const char *examples)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/train.yaml", examples);
    cJSON *doc = yaml_read(path);
    if (!doc) return;
    char *json = job_yaml_print(doc);
    cJSON_Delete(doc);
    CHECK(json != NULL);
    if (!json) return;

    char root[] = "/tmp/adapt-test-deploy-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    mkdirs(root, "models/qwen2-vl-2b-instruct");
    mkdirs(root, "corpora/biomed-captions");
    mkdirs(root, "corpora/biomed-tasks");
    mkdirs(root, "runs");
    job_spec_policy pol = { .data_root = root, .max_ranks = 8 };
    Adaptd__JobSpec *spec = NULL;
    char *normalized = NULL, field[JOB_SPEC_FIELD_MAX] = "";
    adapt_error err = {0};
    CHECK_MSG(job_spec_parse(json, strlen(json), &pol, &spec, &normalized, field, &err) == ADAPT_OK,
              "the daemon refuses %s: field %s: %s", path, field, err.message);
    if (spec) {
        CHECK(!strcmp(spec->kind, "train") && spec->ranks == 2 && spec->train &&
              spec->train->n_overlays == 1 && spec->train->checkpoint_every == 200);
        adaptd__job_spec__free_unpacked(spec, NULL);
    }
    free(normalized);

    Adaptd__JobSpec *job = NULL;
    CHECK_MSG(train_spec_parse_job(json, strlen(json), path, &job, &err) == ADAPT_OK,
              "adapt-worker refuses %s: %s", path, err.message);
    if (job) train_spec_free_job(job);
    free(json);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

static void test_all_read(const char *examples)
{
    DIR *d = opendir(examples);
    CHECK_MSG(d != NULL, "cannot open %s", examples);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", examples, e->d_name);
        cJSON *doc = yaml_read(path);
        CHECK_MSG(doc && cJSON_IsObject(doc) && cJSON_IsString(cJSON_GetObjectItem(doc, "kind")),
                  "%s: not a job spec object with a kind", path);
        cJSON_Delete(doc);
        n++;
    }
    closedir(d);
    CHECK(n >= 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_deploy_examples DEPLOY_EXAMPLES_DIR\n");
        return 2;
    }
    test_train(argv[1]);
    test_all_read(argv[1]);
    printf("%d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
