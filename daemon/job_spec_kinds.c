/* job_spec_kinds: validation and defaults of the synthesize, filter, evaluate and pipeline
 * specs; see job_spec_kinds.h. The defaults repeat worker/job_kinds.h's (the daemon does not
 * include the worker's headers: the layers point down only). */
#include "job_spec_kinds.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "train_rules.h"

enum {
    KINDS_SYNTH_MAX_NEW_TOKENS  = 512,
    KINDS_FILTER_MAX_NEW_TOKENS = 2,
    KINDS_EVAL_MAX_NEW_TOKENS   = 256,
    KINDS_DEFAULT_BATCH         = 16,
    KINDS_DEFAULT_SEED          = 42,
};

static int kinds_bad(char field[JOB_SPEC_FIELD_MAX], const char *name, adapt_error *err,
                     const char *what)
{
    snprintf(field, JOB_SPEC_FIELD_MAX, "%s", name);
    return adapt_fail(err, ADAPT_EINVAL, "%s: %s", name, what);
}

/* Replaces *s by its canonical form inside the data root; an empty *s takes fallback (when
 * given) or is refused when required. */
static int kinds_path(char **s, const char *fallback, const char *name, int required,
                      int must_exist, const job_spec_policy *pol, char field[JOB_SPEC_FIELD_MAX],
                      adapt_error *err)
{
    const char *src = (*s)[0] ? *s : fallback;
    if (!src || !src[0]) return required ? kinds_bad(field, name, err, "required") : ADAPT_OK;
    char canon[PATH_MAX];
    adapt_error perr;
    if (job_spec_resolve_path(pol->data_root, src, must_exist, canon, sizeof canon, &perr))
        return kinds_bad(field, name, err, perr.message);
    char *copy = strdup(canon);
    if (!copy) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    if (*s != protobuf_c_empty_string) free(*s);
    *s = copy;
    return ADAPT_OK;
}

static int kinds_range(double v, double lo, double hi, const char *name,
                       char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    if (v >= lo && v <= hi) return ADAPT_OK;
    char what[128];
    snprintf(what, sizeof what, "%g is outside [%g, %g]", v, lo, hi);
    return kinds_bad(field, name, err, what);
}

/* "prefix.name" into buf. */
static const char *kinds_name(char *buf, size_t size, const char *prefix, const char *name)
{
    snprintf(buf, size, "%s.%s", prefix, name);
    return buf;
}

/* work_dir/leaf, or NULL without a work_dir; the returned buffer is buf. */
static const char *kinds_default(char *buf, size_t size, const char *work_dir, const char *leaf)
{
    if (!work_dir || !work_dir[0]) return NULL;
    snprintf(buf, size, "%s/%s", work_dir, leaf);
    return buf;
}

static int check_synthesize(Adaptd__SynthesizeSpec *s, const char *p, const char *out_default,
                            const job_spec_policy *pol, char field[JOB_SPEC_FIELD_MAX],
                            adapt_error *err)
{
    char n[96];
    int rc;
    if (!s->max_new_tokens) s->max_new_tokens = KINDS_SYNTH_MAX_NEW_TOKENS;
    if (s->top_p == 0) s->top_p = 1;
    if (!s->seed) s->seed = KINDS_DEFAULT_SEED;
    if (!s->batch_size) s->batch_size = KINDS_DEFAULT_BATCH;
    if ((rc = kinds_path(&s->model_path, NULL, kinds_name(n, sizeof n, p, "model_path"), 1, 1, pol, field, err)) ||
        (rc = kinds_path(&s->corpus, NULL, kinds_name(n, sizeof n, p, "corpus"), 1, 1, pol, field, err)) ||
        (rc = kinds_path(&s->output_dir, out_default, kinds_name(n, sizeof n, p, "output_dir"), 1, 0, pol, field, err)))
        return rc;
    if (s->family[0] && strcmp(s->family, "qwen2_vl") && strcmp(s->family, "llava_next") &&
        strcmp(s->family, "llava"))
        return kinds_bad(field, kinds_name(n, sizeof n, p, "family"), err,
                         "expected qwen2_vl or llava_next (or empty: the model's model_type)");
    if ((rc = kinds_range(s->max_new_tokens, 1, 32768, kinds_name(n, sizeof n, p, "max_new_tokens"), field, err)) ||
        (rc = kinds_range(s->temperature, 0, 100, kinds_name(n, sizeof n, p, "temperature"), field, err)) ||
        (rc = kinds_range(s->top_p, 0, 1, kinds_name(n, sizeof n, p, "top_p"), field, err)) ||
        (rc = kinds_range(s->batch_size, 1, 4096, kinds_name(n, sizeof n, p, "batch_size"), field, err)))
        return rc;
    return ADAPT_OK;
}

/* corpus_default / synth_default: the pipeline's links to the synthesize stage (NULL alone). */
static int check_filter(Adaptd__FilterSpec *s, const char *p, const char *corpus_default,
                        const char *synth_default, const char *out_default,
                        const job_spec_policy *pol, char field[JOB_SPEC_FIELD_MAX],
                        adapt_error *err)
{
    char n[96];
    int rc;
    int in_pipeline = synth_default != NULL;
    if (!s->max_new_tokens) s->max_new_tokens = KINDS_FILTER_MAX_NEW_TOKENS;
    if (!s->batch_size) s->batch_size = KINDS_DEFAULT_BATCH;
    if ((rc = kinds_path(&s->model_path, NULL, kinds_name(n, sizeof n, p, "model_path"), 1, 1, pol, field, err)) ||
        (rc = kinds_path(&s->corpus, corpus_default, kinds_name(n, sizeof n, p, "corpus"), 1, !in_pipeline, pol, field, err)) ||
        /* in a pipeline the synthesized overlay is made by the stage before */
        (rc = kinds_path(&s->synthesized, synth_default, kinds_name(n, sizeof n, p, "synthesized"), 1, !in_pipeline, pol, field, err)) ||
        (rc = kinds_path(&s->output_dir, out_default, kinds_name(n, sizeof n, p, "output_dir"), 1, 0, pol, field, err)) ||
        (rc = kinds_path(&s->prompt_file, NULL, kinds_name(n, sizeof n, p, "prompt_file"), 0, 1, pol, field, err)) ||
        (rc = kinds_range(s->max_new_tokens, 1, 64, kinds_name(n, sizeof n, p, "max_new_tokens"), field, err)) ||
        (rc = kinds_range(s->batch_size, 1, 4096, kinds_name(n, sizeof n, p, "batch_size"), field, err)))
        return rc;
    for (size_t i = 0; i < s->n_cot_templates; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s.cot_templates[%zu]", p, i);
        if (!strstr(s->cot_templates[i], "{informative}") || !strstr(s->cot_templates[i], "{precise}"))
            return kinds_bad(field, name, err, "a template needs both {informative} and {precise}");
    }
    return ADAPT_OK;
}

static int check_evaluate(Adaptd__EvaluateSpec *s, const char *p, const char *model_default,
                          const char *out_default, const job_spec_policy *pol,
                          char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    char n[96];
    int rc;
    if (!s->max_new_tokens) s->max_new_tokens = KINDS_EVAL_MAX_NEW_TOKENS;
    if (!s->seed) s->seed = KINDS_DEFAULT_SEED;
    if (!s->batch_size) s->batch_size = KINDS_DEFAULT_BATCH;
    if ((rc = kinds_path(&s->model_path, model_default, kinds_name(n, sizeof n, p, "model_path"), 1, !model_default, pol, field, err)) ||
        (rc = kinds_path(&s->benchmark, NULL, kinds_name(n, sizeof n, p, "benchmark"), 1, 1, pol, field, err)) ||
        (rc = kinds_path(&s->images_root, NULL, kinds_name(n, sizeof n, p, "images_root"), 0, 1, pol, field, err)) ||
        (rc = kinds_path(&s->output_dir, out_default, kinds_name(n, sizeof n, p, "output_dir"), 1, 0, pol, field, err)) ||
        (rc = kinds_range(s->max_new_tokens, 1, 32768, kinds_name(n, sizeof n, p, "max_new_tokens"), field, err)) ||
        (rc = kinds_range(s->batch_size, 1, 4096, kinds_name(n, sizeof n, p, "batch_size"), field, err)))
        return rc;
    return ADAPT_OK;
}

/* Which members of pipeline.train the client gave (not null), for train_rules_fill: proto3
 * cannot tell freeze_vision: false from a member left out. The members the pipeline links
 * (corpus, output_dir, overlays) are marked by the caller once linked. */
static void pipeline_train_given(const cJSON *root, train_rules_given *given)
{
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(root, "pipeline");
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(pl, "train");
    const cJSON *m;
    if (!cJSON_IsObject(tr)) return;
    cJSON_ArrayForEach(m, tr)
        if (!cJSON_IsNull(m)) train_rules_mark(&given->top, TRAIN_RULES_TRAIN, m->string);
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(tr, "stages");
    for (int k = 0; k < TRAIN_RULES_STAGES && cJSON_IsArray(stages); k++) {
        const cJSON *st = cJSON_GetArrayItem(stages, k);
        if (!cJSON_IsObject(st)) break;
        cJSON_ArrayForEach(m, st)
            if (!cJSON_IsNull(m)) train_rules_mark(&given->stage[k], TRAIN_RULES_STAGE, m->string);
    }
}

/* The pipeline: each stage's empty paths are linked to the stage before (job.proto). The train
 * stage then gets the same rules as a kind "train" job (proto/train_rules: defaults, ranges,
 * cross-field rules), so the stored spec carries every effective value and a train stage the
 * worker would refuse is refused at submission, not hours later after synthesis. */
static int check_pipeline(Adaptd__PipelineSpec *s, const cJSON *root, const job_spec_policy *pol,
                          char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    int rc = kinds_path(&s->work_dir, NULL, "pipeline.work_dir", 1, 0, pol, field, err);
    if (rc) return rc;
    if (!s->synthesize) return kinds_bad(field, "pipeline.synthesize", err, "required");
    if (!s->filter) return kinds_bad(field, "pipeline.filter", err, "required");
    if (!s->train) return kinds_bad(field, "pipeline.train", err, "required");
    char d[PATH_MAX];
    if ((rc = check_synthesize(s->synthesize, "pipeline.synthesize",
                               kinds_default(d, sizeof d, s->work_dir, "synthesized"), pol, field,
                               err)) ||
        (rc = check_filter(s->filter, "pipeline.filter", s->synthesize->corpus,
                           s->synthesize->output_dir,
                           kinds_default(d, sizeof d, s->work_dir, "filtered"), pol, field, err)))
        return rc;
    Adaptd__TrainSpec *t = s->train;
    /* the pipeline trains the base corpus + the filtered overlay (daemon/pipeline.c) */
    if (t->mode[0] && strcmp(t->mode, "single_stage"))
        return kinds_bad(field, "pipeline.train.mode", err,
                         "a pipeline trains single_stage (the base corpus + the filtered overlay)");
    if ((rc = kinds_path(&t->model_path, NULL, "pipeline.train.model_path", 1, 1, pol, field, err)) ||
        (rc = kinds_path(&t->corpus, s->synthesize->corpus, "pipeline.train.corpus", 1, 1, pol, field, err)) ||
        (rc = kinds_path(&t->output_dir, kinds_default(d, sizeof d, s->work_dir, "model"),
                         "pipeline.train.output_dir", 1, 0, pol, field, err)))
        return rc;
    if (t->n_overlays == 0) {
        t->overlays = malloc(sizeof *t->overlays);
        if (!t->overlays || !(t->overlays[0] = strdup(s->filter->output_dir)))
            return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        t->n_overlays = 1;
    }
    for (size_t i = 0; i < t->n_overlays; i++) {
        /* an overlay may be made by a stage before (the filtered one): need not exist yet */
        char name[64];
        snprintf(name, sizeof name, "pipeline.train.overlays[%zu]", i);
        if ((rc = kinds_path(&t->overlays[i], NULL, name, 1, 0, pol, field, err))) return rc;
    }
    train_rules_given given = { 0 };
    pipeline_train_given(root, &given);
    /* linked above, so given whether or not the client wrote them */
    static const char *const linked[] = { "model_path", "corpus", "output_dir", "overlays" };
    for (size_t i = 0; i < sizeof linked / sizeof *linked; i++)
        train_rules_mark(&given.top, TRAIN_RULES_TRAIN, linked[i]);
    char rule_field[TRAIN_RULES_FIELD_MAX];
    rc = train_rules_fill(t, &given, rule_field, err);
    if (rc == ADAPT_EINVAL) {
        char why[sizeof err->message];
        snprintf(why, sizeof why, "%s", err->message);
        char name[JOB_SPEC_FIELD_MAX];
        snprintf(name, sizeof name, "pipeline.train.%.*s", JOB_SPEC_FIELD_MAX - 16, rule_field);
        return kinds_bad(field, name, err, why);
    }
    if (rc) return rc;
    for (size_t i = 0; i < s->n_evaluate; i++) {
        char p[64], leaf[32];
        snprintf(p, sizeof p, "pipeline.evaluate[%zu]", i);
        snprintf(leaf, sizeof leaf, "eval-%zu", i);
        if ((rc = check_evaluate(s->evaluate[i], p, t->output_dir,
                                 kinds_default(d, sizeof d, s->work_dir, leaf), pol, field, err)))
            return rc;
    }
    return ADAPT_OK;
}

int job_spec_check_kind(Adaptd__JobSpec *s, const cJSON *root, const job_spec_policy *pol,
                        char field[JOB_SPEC_FIELD_MAX], adapt_error *err)
{
    static const char *const kinds[] = { "synthesize", "filter", "evaluate", "pipeline" };
    size_t k = 0;
    while (k < 4 && strcmp(s->kind, kinds[k])) k++;
    if (k == 4)
        return kinds_bad(field, "kind", err,
                         "expected one of train, synthesize, filter, evaluate, pipeline");
    if (s->ranks == 0) s->ranks = 1;
    if (s->ranks > pol->max_ranks) {
        char what[96];
        snprintf(what, sizeof what, "%u exceeds the daemon's --slots %u", s->ranks, pol->max_ranks);
        return kinds_bad(field, "ranks", err, what);
    }
    int rc;
    if ((rc = kinds_range(s->max_restarts, 0, 100, "max_restarts", field, err))) return rc;
    const char *backend = s->backend[0] ? s->backend : "cpu";
    const char *launcher = s->launcher[0] ? s->launcher : "local";
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda"))
        return kinds_bad(field, "backend", err, "expected cpu or cuda");
    if (strcmp(launcher, "local") && strcmp(launcher, "slurm"))
        return kinds_bad(field, "launcher", err, "expected local or slurm");
    if (!s->backend[0] && !(s->backend = strdup(backend))) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    if (!s->launcher[0] && !(s->launcher = strdup(launcher))) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    /* exactly the sub-spec of its kind */
    const void *given[] = { s->synthesize, s->filter, s->evaluate, s->pipeline };
    if (s->train) return kinds_bad(field, "train", err, "only for kind \"train\"");
    for (size_t i = 0; i < 4; i++) {
        if (i == k && !given[i]) {
            char what[64];
            snprintf(what, sizeof what, "required for kind \"%s\"", kinds[k]);
            return kinds_bad(field, kinds[i], err, what);
        }
        if (i != k && given[i]) {
            char what[64];
            snprintf(what, sizeof what, "only for kind \"%s\"", kinds[i]);
            return kinds_bad(field, kinds[i], err, what);
        }
    }
    switch (k) {
    case 0: return check_synthesize(s->synthesize, "synthesize", NULL, pol, field, err);
    case 1: return check_filter(s->filter, "filter", NULL, NULL, NULL, pol, field, err);
    case 2: return check_evaluate(s->evaluate, "evaluate", NULL, NULL, pol, field, err);
    default: return check_pipeline(s->pipeline, root, pol, field, err);
    }
}
