/* job_synthesize: `adapt-worker synthesize` — the synthesizer writes an instruction with a precise
 * and an informative answer for every image-caption pair of a corpus, into an overlay corpus.
 *
 * The one idea: this file only says how one record is prompted and what its overlay record
 * holds; the shards, batches, reruns and ranks are job_overlay_run's (job_kinds.h). What the
 * synthesizer wrote is kept raw next to the parsed triplet, so a parser fix can be checked
 * against real outputs without generating again. A record with no caption or no image is not
 * prompted: its overlay record is empty (it trains caption-only, or not at all) and the report
 * counts it. */
#include "job_kinds.h"

#include "file_io.h"
#include "synth.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define JOB_SYNTH_STREAM UINT64_C(0x53594e5400000301)   /* sampling seed of a batch */

int job_synth_record(const synth_template *t, const Adaptd__Sample *base, const char *output,
                     Adaptd__Sample **out, uint64_t *triplets, adapt_error *err)
{
    Adaptd__Sample *s = malloc(sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    adaptd__sample__init(s);
    *out = s;
    if (!(s->id = strdup(base->id))) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    int rc = job_sample_format(s, "synthesize", err);
    if (!rc && !output)
        return job_sample_extra(s, "skipped", base->image.len ? "no_caption" : "no_image", err);
    if (rc) return rc;
    synth_result r;
    if ((rc = synth_parse(t, output, &r, err))) return rc;
    char pairs[32];
    snprintf(pairs, sizeof pairs, "%zu", r.n_pairs);
    rc = job_sample_extra(s, "raw", output, err);
    if (!rc) rc = job_sample_extra(s, "pairs", pairs, err);
    if (!rc && r.has_triplet) {
        rc = job_sample_extra(s, "instruction", r.instruction, err);
        if (!rc) rc = job_sample_extra(s, "precise", r.precise, err);
        if (!rc) rc = job_sample_extra(s, "informative", r.informative, err);
        (*triplets)++;
    }
    synth_result_free(&r);
    return rc;
}

typedef struct synth_ctx {
    const synth_template *tmpl;
    uint64_t              triplets;
} synth_ctx;

static int synth_prompt(void *ctx, const Adaptd__Sample *rec, char **text, const uint8_t **image,
                        size_t *image_len, adapt_error *err)
{
    const synth_ctx *c = ctx;
    *text = NULL;
    if (!rec->caption[0] || !rec->image.len) return ADAPT_OK;
    *image = rec->image.data;
    *image_len = rec->image.len;
    return synth_prompt_build(c->tmpl, rec->caption, text, err);
}

static int synth_output(void *ctx, const Adaptd__Sample *rec, const char *output,
                        Adaptd__Sample **out, adapt_error *err)
{
    synth_ctx *c = ctx;
    return job_synth_record(c->tmpl, rec, output, out, &c->triplets, err);
}

/* Rank 0 after the manifest: counts over the finished overlay (so a rerun that skipped shards
 * reports the whole job) into OUTPUT/synthesize_report.json and the progress stream. */
static int synth_report(const Adaptd__SynthesizeSpec *spec, FILE *progress, adapt_error *err)
{
    corpus *ov = NULL;
    int rc = corpus_open(&ov, spec->output_dir, err);
    uint64_t n = rc ? 0 : corpus_count(ov), triplets = 0, prompted = 0, no_caption = 0,
             no_image = 0, pairs = 0;
    for (uint64_t i = 0; !rc && i < n; i++) {
        Adaptd__Sample *r = NULL;
        if ((rc = corpus_read(ov, i, &r, err))) break;
        const char *skipped = job_sample_extra_get(r, "skipped");
        const char *np = job_sample_extra_get(r, "pairs");
        if (skipped && !strcmp(skipped, "no_caption")) no_caption++;
        else if (skipped) no_image++;
        else prompted++;
        if (np) pairs += strtoull(np, NULL, 10);
        if (job_sample_extra_get(r, "instruction")) triplets++;
        adaptd__sample__free_unpacked(r, NULL);
    }
    corpus_close(ov);
    if (rc) return rc;
    char json[1024], path[PATH_MAX];
    int len = snprintf(json, sizeof json,
                       "{\"kind\": \"synthesize\", \"records\": %llu, \"prompted\": %llu, "
                       "\"triplets\": %llu, \"pairs\": %llu, \"skipped_no_caption\": %llu, "
                       "\"skipped_no_image\": %llu, \"triplet_rate\": %.6f}\n",
                       (unsigned long long)n, (unsigned long long)prompted,
                       (unsigned long long)triplets, (unsigned long long)pairs,
                       (unsigned long long)no_caption, (unsigned long long)no_image,
                       prompted ? (double)triplets / (double)prompted : 0.0);
    snprintf(path, sizeof path, "%s/synthesize_report.json", spec->output_dir);
    if ((rc = file_io_write_atomic(path, json, (size_t)len, err))) return rc;
    if (progress) {
        fputs(json, progress);
        fflush(progress);
    }
    return ADAPT_OK;
}

int job_synthesize_run(const job_run_options *o, const Adaptd__SynthesizeSpec *spec,
                       adapt_error *err)
{
    synth_ctx ctx = {0};
    char *family = NULL;
    int rc = ADAPT_OK;
    if (spec->family[0]) family = strdup(spec->family);
    else rc = job_kinds_model_type(spec->model_path, &family, err);
    if (!rc && !family) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
    if (!rc && !(ctx.tmpl = synth_template_find(family)))
        rc = adapt_fail(err, ADAPT_EUNSUPPORTED, "synthesize.family \"%s\": no synthesizer "
                        "template for it (templates: %s)", family, synth_template_families());
    free(family);
    corpus *base = NULL;
    if (!rc && (rc = corpus_open(&base, spec->corpus, err)) != 0)
        rc = adapt_error_prefix(err, "synthesize.corpus %s: ", spec->corpus);
    /* a failure before the map still meets the other ranks there */
    if (rc) return job_ranks_agree(o->c, rc, err);
    const char *stop = ctx.tmpl->stop;
    job_overlay ov = { .base = base, .base_path = spec->corpus, .out_dir = spec->output_dir };
    job_map m = {
        .in = base, .in_path = spec->corpus, .model_path = spec->model_path,
        .options = { .max_new_tokens = spec->max_new_tokens, .temperature = spec->temperature,
                     .top_p = spec->top_p, .stop_strings = &stop, .n_stop_strings = 1,
                     .keep_special = 1,
                     /* several turns are wanted: a chat model's end-of-turn eos must not end
                      * the output after the first answer; the family's stop string does */
                     .ignore_eos = 1 },
        .seed = spec->seed, .seed_stream = JOB_SYNTH_STREAM, .batch = spec->batch_size,
        .prompt = synth_prompt, .record = synth_output, .ctx = &ctx,
    };
    rc = job_overlay_run(o, &ov, &m, "synthesize", err);
    if (!rc && comm_rank(o->c) == 0) rc = synth_report(spec, o->progress, err);
    corpus_close(base);
    return rc;
}
