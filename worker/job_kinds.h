/* job_kinds: the generation job kinds of adapt-worker — synthesize, filter, evaluate — and what
 * they share: reading their spec, splitting the work over ranks, and writing an overlay corpus
 * shard by shard.
 *
 * The one idea: the unit of work is one base shard, and its output is one overlay shard written
 * atomically (shard_writer: "<path>.tmp", fsync, rename). A rank takes its shards from
 * work_source.h: adaptd's work queue when the daemon runs the job, else the static assignment
 * (rank r of W takes r, r + W, …). Before generating a shard a rank looks for it under its final
 * name, and a shard that is there, opens with the base shard's record count and names the base's
 * records is done, so a rerun (after a crash, a kill -9, a resubmission) redoes exactly the
 * unfinished shards. When every rank is past a barrier, rank 0 writes manifest.pb last (the
 * overlay's completeness mark), listing each shard with its size and crc32c and the base corpus
 * it aligns with.
 *
 * Overlay records carry the base record's id and no image (images are never copied):
 *   synthesize  source.format "synthesize"; source.extra: "raw" (the synthesizer's output),
 *               "pairs" (rounds parsed), and when a triplet was found "instruction", "precise",
 *               "informative". No turns: a synthesized overlay trains as caption-only.
 *   filter      source.format "filter"; turns: (user instruction, assistant composed response)
 *               for a kept triplet, none otherwise; source.extra: "label" (yes/no/open/other),
 *               "judge" (the judge's raw output), "rule" (informative/append/cot), and the
 *               triplet. Training reads the turns (conversation.h conv_tasks_from_overlay). */
#ifndef ADAPT_JOB_KINDS_H
#define ADAPT_JOB_KINDS_H

#include "comm.h"
#include "corpus.h"
#include "error.h"
#include "generate.h"
#include "job.pb-c.h"

#include <stdint.h>
#include <stdio.h>

/* Spec defaults (also documented in proto/job.proto). */
#define JOB_SYNTH_MAX_NEW_TOKENS  512u
#define JOB_FILTER_MAX_NEW_TOKENS 2u
#define JOB_EVAL_MAX_NEW_TOKENS   256u
#define JOB_DEFAULT_BATCH         16u
#define JOB_DEFAULT_SEED          42u

/* Reads a spec file for kind ("synthesize", "filter", "evaluate"): a JobSpec whose kind is that
 * one (as the daemon writes it, every field present) or the bare kind spec. Unknown keys and
 * wrong types are refused naming the JSON path; defaults are filled and required fields
 * checked. Free with adaptd__job_spec__free_unpacked(*out, NULL). */
int job_kinds_load(const char *path, const char *kind, Adaptd__JobSpec **out, adapt_error *err);
/* The same on JSON text (src names it in errors). */
int job_kinds_parse(const char *json, size_t len, const char *src, const char *kind,
                    Adaptd__JobSpec **out, adapt_error *err);

/* A model directory's config.json "model_type" (malloc'd). */
int job_kinds_model_type(const char *model_dir, char **out, adapt_error *err);

/* --- overlay output ---------------------------------------------------------------------- */

typedef struct job_overlay {
    corpus     *base;
    const char *base_path;
    const char *out_dir;
} job_overlay;

/* The overlay shard path for base shard s (same relative path as the base's). */
int  job_overlay_shard_path(const job_overlay *o, uint64_t s, char *buf, size_t size,
                            adapt_error *err);
/* 1 when the overlay shard for base shard s exists, opens, holds the base shard's record count
 * and its first and last records carry the base records' ids; 0 when it must be (re)made. */
int  job_overlay_shard_done(const job_overlay *o, uint64_t s);
/* Creates out_dir and the folders of the shard paths. */
int  job_overlay_prepare(const job_overlay *o, adapt_error *err);
/* Rank 0, after every shard is done: writes manifest.pb (name: the out_dir's last component,
 * provenance tool = tool). */
int  job_overlay_finish(const job_overlay *o, const char *tool, adapt_error *err);

/* The static assignment: base shard s belongs to rank s % world. */
static inline int job_rank_owns(uint64_t shard, int rank, int world)
{
    return (int)(shard % (uint64_t)world) == rank;
}

/* Sets a Sample's source.format (creating source). */
int  job_sample_format(Adaptd__Sample *s, const char *format, adapt_error *err);
/* Appends a (key, value) pair to a Sample's source.extra (values copied). */
int  job_sample_extra(Adaptd__Sample *s, const char *key, const char *value, adapt_error *err);
/* The value of key in source.extra, or NULL. */
const char *job_sample_extra_get(const Adaptd__Sample *s, const char *key);
/* Frees a Sample built with job_sample_* (every string and list malloc'd). */
void job_sample_free(Adaptd__Sample *s);

/* --- the overlay records (exposed for the unit tests) ----------------------------------- */

struct synth_template;
/* The synthesized overlay record of base record `base` given the synthesizer's output (NULL:
 * not prompted: no caption or no image); a triplet found is counted in *triplets. Free *out
 * with job_sample_free, also on failure. */
int job_synth_record(const struct synth_template *t, const Adaptd__Sample *base,
                     const char *output, Adaptd__Sample **out, uint64_t *triplets,
                     adapt_error *err);
/* The filtered overlay record of a synthesized record given the judge's output (NULL: it had
 * no triplet); pool is the chain-of-thought pool. Free *out with job_sample_free. */
int job_filter_record(const Adaptd__Sample *syn, const char *judge, const char *const *pool,
                      size_t n_pool, Adaptd__Sample **out, adapt_error *err);

/* --- the job kinds ------------------------------------------------------------------------ */

typedef struct job_run_options {
    comm *c;
    FILE *progress;   /* one JSON line per finished shard (rank 0's and the others'), or NULL */
    /* After each of this rank's work units (a shard, an evaluate chunk), done or skipped: units
     * done so far and this rank's total, and the records they held. NULL: not called. */
    void (*unit_done)(void *ctx, uint64_t done, uint64_t total, uint64_t records);
    void  *ctx;
} job_run_options;

/* This rank's number of units out of n when unit u belongs to rank u % world. */
static inline uint64_t job_rank_units(uint64_t n, int rank, int world)
{
    return n / (uint64_t)world + ((uint64_t)rank < n % (uint64_t)world);
}

/* --- generating an overlay: one map over the shards ------------------------------------- */

/* What a generation job does with one input record: prompt builds the prompt (*text malloc'd,
 * *image pointing into rec or NULL; *text NULL: this record is not prompted), record builds the
 * output record from the generated text (NULL when not prompted). */
typedef struct job_map {
    corpus     *in;           /* read record for record alongside the base (aligned with it) */
    const char *in_path;      /* for messages */
    const char *model_path;   /* the generator, opened on the first shard that needs it */
    gen_options options;      /* options.seed is replaced per batch when seed_stream != 0 */
    uint64_t    seed, seed_stream;
    size_t      batch;
    int (*prompt)(void *ctx, const Adaptd__Sample *rec, char **text, const uint8_t **image,
                  size_t *image_len, adapt_error *err);
    int (*record)(void *ctx, const Adaptd__Sample *rec, const char *output, Adaptd__Sample **out,
                  adapt_error *err);
    void       *ctx;
    gen_t      *gen;          /* owned; job_overlay_run closes it */
} job_map;

/* The whole job on this rank: for each base shard the work source hands it, unless already
 * done, reads m->in's
 * records in batches, generates, writes the overlay shard atomically; one JSON line per shard on
 * o->progress and o->unit_done; then every rank meets (a failure anywhere fails all) and rank 0
 * writes the manifest. kind names the job in the progress lines and the manifest. */
int job_overlay_run(const job_run_options *o, const job_overlay *ov, job_map *m,
                    const char *kind, adapt_error *err);

/* Every rank's rc combined: the first failure of this rank stays in err; a rank that did not
 * fail learns that another did. Every rank must call it (it is a collective). */
int job_ranks_agree(comm *c, int rc, adapt_error *err);

int job_synthesize_run(const job_run_options *o, const Adaptd__SynthesizeSpec *s,
                       adapt_error *err);
int job_filter_run(const job_run_options *o, const Adaptd__FilterSpec *s, adapt_error *err);
int job_evaluate_run(const job_run_options *o, const Adaptd__EvaluateSpec *s, adapt_error *err);

/* `adapt-worker KIND --spec PATH` on this rank: loads the spec for kind, runs it with o's
 * progress outputs (o->c is replaced by c), and names the job's output folder in output_dir
 * (for Done). */
int job_kinds_run(comm *c, const char *kind, const char *spec_path, const job_run_options *o,
                  char *output_dir, size_t size, adapt_error *err);

#endif
