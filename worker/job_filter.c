/* job_filter: `adapt-worker filter` — a language model judges each synthesized triplet and the
 * kept ones become the tasks training reads.
 *
 * The one idea: the filter is an overlay-to-overlay map over the same shard units as synthesize
 * (job_kinds.h); the judge sees text only (no image), and consistency.h decides the label and
 * the response, so this file only says how a record is prompted and what its output record
 * holds (the shards, batches and ranks are job_overlay_run's). The label counts and the
 * pass rate are counted over the finished overlay by rank 0, so a rerun that skipped finished
 * shards still reports the whole job. */
#include "job_kinds.h"

#include "consistency.h"
#include "file_io.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct filter_job {
    const Adaptd__FilterSpec *spec;
    char                     *prompt;     /* the few-shot template */
    const char *const        *pool;       /* chain-of-thought templates */
    size_t                    n_pool;
    corpus                   *base, *synth;
} filter_job;

static const char *const rule_names[] = { "informative", "append", "cot" };

int job_filter_record(const Adaptd__Sample *syn, const char *judge, const char *const *pool,
                      size_t n_pool, Adaptd__Sample **out, adapt_error *err)
{
    Adaptd__Sample *s = malloc(sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    adaptd__sample__init(s);
    *out = s;
    if (!(s->id = strdup(syn->id))) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    int rc = job_sample_format(s, "filter", err);
    if (rc || !judge) return rc ? rc : job_sample_extra(s, "label", "none", err);
    const char *q = job_sample_extra_get(syn, "instruction");
    const char *pr = job_sample_extra_get(syn, "precise");
    const char *inf = job_sample_extra_get(syn, "informative");
    consistency_label label = consistency_label_parse(judge);
    rc = job_sample_extra(s, "label", consistency_label_name(label), err);
    if (!rc) rc = job_sample_extra(s, "judge", judge, err);
    if (!rc) rc = job_sample_extra(s, "instruction", q, err);
    if (!rc) rc = job_sample_extra(s, "precise", pr, err);
    if (!rc) rc = job_sample_extra(s, "informative", inf, err);
    if (rc || label != CONSISTENCY_YES) return rc;
    char *response = NULL;
    consistency_rule rule;
    if ((rc = consistency_compose(inf, pr, syn->id, pool, n_pool, &response, &rule, err)))
        return rc;
    rc = job_sample_extra(s, "rule", rule_names[rule], err);
    Adaptd__Turn **turns = rc ? NULL : calloc(2, sizeof *turns);
    if (!rc && !turns) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
    if (!rc) {
        s->turns = turns;
        for (int t = 0; t < 2 && !rc; t++) {
            Adaptd__Turn *turn = malloc(sizeof *turn);
            if (!turn) {
                rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
                break;
            }
            adaptd__turn__init(turn);
            turn->role = t ? ADAPTD__TURN__ROLE__ROLE_ASSISTANT : ADAPTD__TURN__ROLE__ROLE_USER;
            turns[s->n_turns++] = turn;
            turn->text = t ? response : strdup(q);
            if (t) response = NULL;
            if (!turn->text) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
        }
    }
    free(response);
    return rc;
}

static int filter_prompt(void *ctx, const Adaptd__Sample *rec, char **text,
                         const uint8_t **image, size_t *image_len, adapt_error *err)
{
    const filter_job *j = ctx;
    const char *q = job_sample_extra_get(rec, "instruction");
    const char *pr = job_sample_extra_get(rec, "precise");
    const char *inf = job_sample_extra_get(rec, "informative");
    *text = NULL;
    *image = NULL;   /* the judge reads text only */
    *image_len = 0;
    if (!q || !pr || !inf) return ADAPT_OK;
    return consistency_prompt_build(j->prompt, q, inf, pr, text, err);
}

static int filter_output(void *ctx, const Adaptd__Sample *rec, const char *output,
                         Adaptd__Sample **out, adapt_error *err)
{
    const filter_job *j = ctx;
    return job_filter_record(rec, output, j->pool, j->n_pool, out, err);
}

/* The synthesized overlay must be one of this base corpus, shard for shard. */
static int filter_check_alignment(const filter_job *j, adapt_error *err)
{
    const Adaptd__Manifest *b = corpus_manifest(j->base), *o = corpus_manifest(j->synth);
    if (o->base_corpus && o->base_corpus->manifest_crc32c != corpus_manifest_crc32c(j->base))
        return adapt_fail(err, ADAPT_EINVAL, "filter.synthesized %s was made from another corpus "
                          "than filter.corpus %s (its base manifest crc32c differs)",
                          j->spec->synthesized, j->spec->corpus);
    if (o->n_shards != b->n_shards)
        return adapt_fail(err, ADAPT_EINVAL, "filter.synthesized %s has %zu shards, filter.corpus "
                          "%s %zu: an overlay aligns shard for shard with its base",
                          j->spec->synthesized, o->n_shards, j->spec->corpus, b->n_shards);
    for (size_t s = 0; s < b->n_shards; s++)
        if (o->shards[s]->records != b->shards[s]->records)
            return adapt_fail(err, ADAPT_EINVAL, "filter.synthesized %s shard %zu holds %llu "
                              "records, the base shard %llu", j->spec->synthesized, s,
                              (unsigned long long)o->shards[s]->records,
                              (unsigned long long)b->shards[s]->records);
    return ADAPT_OK;
}

static int filter_load_prompt(filter_job *j, adapt_error *err)
{
    const char *file = j->spec->prompt_file;
    if (!file[0]) {
        j->prompt = strdup(consistency_default_prompt);
        return j->prompt ? ADAPT_OK : adapt_fail(err, ADAPT_ENOMEM, "no memory");
    }
    FILE *f = fopen(file, "rb");
    if (!f) return adapt_fail(err, ADAPT_ENOTFOUND, "filter.prompt_file %s: cannot open it",
                              file);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b && (n += fread(b + n, 1, cap - 1 - n, f)) == cap - 1) {
        char *g = realloc(b, cap *= 2);
        if (!g) free(b);
        b = g;
    }
    fclose(f);
    if (!b) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    b[n] = '\0';
    if (strlen(b) != n) {
        free(b);
        return adapt_fail(err, ADAPT_EINVAL, "filter.prompt_file %s: holds a NUL byte", file);
    }
    j->prompt = b;
    return consistency_prompt_check(b, file, err);
}

/* Rank 0: label counts over the finished overlay → OUTPUT/filter_report.json. */
static int filter_report(filter_job *j, FILE *progress, adapt_error *err)
{
    corpus *ov = NULL;
    int rc = corpus_open(&ov, j->spec->output_dir, err);
    uint64_t n = rc ? 0 : corpus_count(ov), labels[CONSISTENCY_N_LABELS] = {0}, judged = 0;
    uint64_t rules[3] = {0};
    for (uint64_t i = 0; !rc && i < n; i++) {
        Adaptd__Sample *r = NULL;
        if ((rc = corpus_read(ov, i, &r, err))) break;
        const char *l = job_sample_extra_get(r, "label"), *rule = job_sample_extra_get(r, "rule");
        for (int k = 0; l && k < CONSISTENCY_N_LABELS; k++)
            if (!strcmp(l, consistency_label_name((consistency_label)k))) {
                labels[k]++;
                judged++;
            }
        for (int k = 0; rule && k < 3; k++) rules[k] += !strcmp(rule, rule_names[k]);
        adaptd__sample__free_unpacked(r, NULL);
    }
    corpus_close(ov);
    if (rc) return rc;
    char json[1024], path[PATH_MAX];
    int len = snprintf(json, sizeof json,
                       "{\"kind\": \"filter\", \"records\": %llu, \"triplets\": %llu, "
                       "\"kept\": %llu, \"pass_rate\": %.6f, \"labels\": {\"yes\": %llu, "
                       "\"no\": %llu, \"open\": %llu, \"other\": %llu}, \"rules\": "
                       "{\"informative\": %llu, \"append\": %llu, \"cot\": %llu}}\n",
                       (unsigned long long)n, (unsigned long long)judged,
                       (unsigned long long)labels[CONSISTENCY_YES],
                       judged ? (double)labels[CONSISTENCY_YES] / (double)judged : 0.0,
                       (unsigned long long)labels[CONSISTENCY_YES],
                       (unsigned long long)labels[CONSISTENCY_NO],
                       (unsigned long long)labels[CONSISTENCY_OPEN],
                       (unsigned long long)labels[CONSISTENCY_OTHER],
                       (unsigned long long)rules[0], (unsigned long long)rules[1],
                       (unsigned long long)rules[2]);
    snprintf(path, sizeof path, "%s/filter_report.json", j->spec->output_dir);
    if ((rc = file_io_write_atomic(path, json, (size_t)len, err))) return rc;
    if (progress) {
        fputs(json, progress);
        fflush(progress);
    }
    return ADAPT_OK;
}

int job_filter_run(const job_run_options *o, const Adaptd__FilterSpec *spec, adapt_error *err)
{
    filter_job j = { .spec = spec };
    int rc = filter_load_prompt(&j, err);
    if (spec->n_cot_templates) {
        j.pool = (const char *const *)spec->cot_templates;
        j.n_pool = spec->n_cot_templates;
    } else {
        j.pool = consistency_default_cot;
        j.n_pool = consistency_n_default_cot;
    }
    for (size_t i = 0; !rc && i < spec->n_cot_templates; i++)
        rc = consistency_cot_check(spec->cot_templates[i], "filter.cot_templates", err);
    if (!rc && (rc = corpus_open(&j.base, spec->corpus, err)) != 0)
        rc = adapt_error_prefix(err, "filter.corpus %s: ", spec->corpus);
    if (!rc && (rc = corpus_open(&j.synth, spec->synthesized, err)) != 0)
        rc = adapt_error_prefix(err, "filter.synthesized %s: ", spec->synthesized);
    if (!rc) rc = filter_check_alignment(&j, err);
    if (rc) {
        rc = job_ranks_agree(o->c, rc, err);   /* the collective the other ranks reach */
    } else {
        job_overlay ov = { .base = j.base, .base_path = spec->corpus, .out_dir = spec->output_dir };
        job_map m = {
            .in = j.synth, .in_path = spec->synthesized, .model_path = spec->model_path,
            .options = { .max_new_tokens = spec->max_new_tokens, .top_p = 1 },   /* greedy */
            .batch = spec->batch_size, .prompt = filter_prompt, .record = filter_output,
            .ctx = &j,
        };
        rc = job_overlay_run(o, &ov, &m, "filter", err);
        if (!rc && comm_rank(o->c) == 0) rc = filter_report(&j, o->progress, err);
    }
    corpus_close(j.synth);
    corpus_close(j.base);
    free(j.prompt);
    return rc;
}
