/* train_data: corpus records → tokens, labels and image patches → packed micro-batches; see
 * train_data.h. */
#include "train_data.h"

#include "conversation.h"
#include "corpus.h"
#include "image_decode.h"
#include "image_process.h"
#include "ops.h"
#include "tok.h"
#include "tok_chat.h"
#include "train_spec.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One prepared sample: owned arrays, freed at the next prepare. */
typedef struct td_sample {
    uint64_t index;
    int     *ids, *labels;     /* [n] */
    uint32_t n;                /* tokens after truncation */
    float   *pixels;           /* [n_patches, patch_dim] or NULL */
    size_t   n_patches;
    int      grid[3];
    int      has_image;
} td_sample;

typedef struct td_worker {
    tok_encoder    *enc;
    imgdec_decoder *dec;
} td_worker;

struct train_data {
    corpus           *base;
    corpus          **overlays;
    size_t            n_overlays;
    tok_tokenizer    *tok;
    td_worker         workers[TRAIN_DATA_THREADS];
    imgproc_params    ip;
    conv_options      copt;
    tok_chat_options  chat;
    uint32_t          max_len;
    uint64_t          budget_tokens;
    size_t            window;
    int               merge;
    size_t            patch_dim;
    /* the current step */
    Adaptd__Sample  **records;    /* [n * (1 + n_overlays)]: base, then each overlay */
    td_sample        *samples;
    size_t            n, cap;
    pack_plan         plan;
    uint64_t          loss_tokens, tokens;
    /* one micro-batch, sized by the budget */
    int              *ids, *labels, *cu, *grid;
    float            *pixels;
    qwen2vl_budget    budget;
};

static void samples_clear(train_data *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->samples[i].ids);
        free(d->samples[i].labels);
        free(d->samples[i].pixels);
        for (size_t k = 0; k <= d->n_overlays; k++) {
            Adaptd__Sample **r = &d->records[i * (1 + d->n_overlays) + k];
            if (*r) adaptd__sample__free_unpacked(*r, NULL);
            *r = NULL;
        }
    }
    if (d->cap) memset(d->samples, 0, d->cap * sizeof *d->samples);
    pack_plan_free(&d->plan);
    memset(&d->plan, 0, sizeof d->plan);
    d->n = 0;
}

static int open_overlays(train_data *d, const Adaptd__TrainSpec *spec, adapt_error *err)
{
    d->n_overlays = spec->n_overlays;
    d->overlays = calloc(spec->n_overlays + 1, sizeof *d->overlays);
    if (!d->overlays) return adapt_fail(err, ADAPT_ENOMEM, "train data: no memory");
    for (size_t i = 0; i < spec->n_overlays; i++) {
        if (corpus_open(&d->overlays[i], spec->overlays[i], err))
            return adapt_error_prefix(err, "overlay %s: ", spec->overlays[i]);
        if (corpus_count(d->overlays[i]) != corpus_count(d->base))
            return adapt_fail(err, ADAPT_EINVAL, "overlay %s holds %llu records, its base corpus "
                              "%llu: an overlay must align record for record with its base",
                              spec->overlays[i],
                              (unsigned long long)corpus_count(d->overlays[i]),
                              (unsigned long long)corpus_count(d->base));
    }
    return 0;
}

static int open_tokenizer(train_data *d, const Adaptd__TrainSpec *spec, const model_config *cfg,
                          adapt_error *err)
{
    if (tok_load(&d->tok, spec->model_path, err))
        return adapt_error_prefix(err, "tokenizer in %s: ", spec->model_path);
    int32_t pad = tok_token_id(d->tok, "<|image_pad|>");
    if (pad != cfg->image_token_id)
        return adapt_fail(err, ADAPT_EINVAL, "%s: the tokenizer's <|image_pad|> is %d but "
                          "config.json's image_token_id is %d: tokenizer and model do not match",
                          spec->model_path, pad, cfg->image_token_id);
    for (int t = 0; t < TRAIN_DATA_THREADS; t++) {
        if (tok_encoder_new(&d->workers[t].enc, d->tok, err)) return -1;
        d->workers[t].dec = imgdec_decoder_new();
        if (!d->workers[t].dec) return adapt_fail(err, ADAPT_ENOMEM, "train data: no memory");
    }
    return 0;
}

static int open_image_params(train_data *d, const Adaptd__TrainSpec *spec,
                             const model_config *cfg, adapt_error *err)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/preprocessor_config.json", spec->model_path);
    imgproc_params_default(&d->ip);
    if (stat(path, &st) == 0 && imgproc_params_load(&d->ip, path, err)) return -1;
    d->ip.min_pixels = spec->image_min_pixels;
    d->ip.max_pixels = spec->image_max_pixels;
    d->ip.patch_size = cfg->vision.patch_size;
    d->ip.temporal_patch_size = cfg->vision.temporal_patch_size;
    d->ip.merge_size = cfg->vision.spatial_merge_size;
    d->merge = cfg->vision.spatial_merge_size;
    d->patch_dim = (size_t)cfg->vision.in_channels * (size_t)cfg->vision.temporal_patch_size *
                   (size_t)cfg->vision.patch_size * (size_t)cfg->vision.patch_size;
    return 0;
}

static int alloc_batch(train_data *d, adapt_error *err)
{
    /* Every image is at least one token of merge^2 patches, every sequence at least one token. */
    int T = (int)d->budget_tokens;
    d->budget = (qwen2vl_budget){ .max_tokens = T, .max_patches = T * d->merge * d->merge,
                                  .max_seqs = T, .max_images = T };
    d->ids = malloc((size_t)T * sizeof *d->ids);
    d->labels = malloc((size_t)T * sizeof *d->labels);
    d->cu = malloc(((size_t)T + 1) * sizeof *d->cu);
    d->grid = malloc((size_t)T * 3 * sizeof *d->grid);
    d->pixels = malloc((size_t)d->budget.max_patches * d->patch_dim * sizeof *d->pixels);
    if (!d->ids || !d->labels || !d->cu || !d->grid || !d->pixels)
        return adapt_fail(err, ADAPT_ENOMEM, "train data: no memory for a %d-token micro-batch", T);
    return 0;
}

int train_data_open(train_data **out, const Adaptd__TrainSpec *spec, const char *corpus_path,
                    const model_config *cfg, adapt_error *err)
{
    train_data *d = calloc(1, sizeof *d);
    if (!d) return adapt_fail(err, ADAPT_ENOMEM, "train data: no memory");
    *out = d;
    const char *path = corpus_path ? corpus_path : spec->corpus;
    if (corpus_open(&d->base, path, err)) return adapt_error_prefix(err, "corpus %s: ", path);
    if (corpus_count(d->base) == 0)
        return adapt_fail(err, ADAPT_EINVAL, "corpus %s holds no record to train on", path);
    if (open_overlays(d, spec, err) || open_tokenizer(d, spec, cfg, err) ||
        open_image_params(d, spec, cfg, err))
        return -1;
    if (!strcmp(spec->mode, "synthesizer")) {
        d->copt.mode = CONV_MODE_SYNTHESIZER;
        d->chat.mask_mode = TOK_CHAT_MASK_AFTER_FIRST_TURN;
    } else if (!strcmp(spec->mode, "single_stage")) {
        d->copt.mode = CONV_MODE_SINGLE_STAGE;
        d->chat.mask_mode = TOK_CHAT_MASK_ASSISTANT;
    } else {
        d->copt.mode = CONV_MODE_CAPTION_ONLY;
        d->chat.mask_mode = TOK_CHAT_MASK_ASSISTANT;
    }
    d->copt.seed = spec->seed;
    d->copt.blank_ratio = spec->blank_image_ratio;
    if (spec->n_caption_instructions) {
        d->copt.instructions = (const char *const *)spec->caption_instructions;
        d->copt.n_instructions = spec->n_caption_instructions;
    } else {
        d->copt.instructions = train_spec_default_instructions;
        d->copt.n_instructions = train_spec_n_default_instructions;
    }
    d->chat.family = TOK_CHAT_QWEN2_VL;
    d->chat.image_token_id = cfg->image_token_id;
    d->max_len = spec->max_seq_len;
    d->budget_tokens = spec->micro_batch_tokens;
    d->window = spec->pack_window;
    return alloc_batch(d, err);
}

void train_data_close(train_data *d)
{
    if (!d) return;
    if (d->samples) samples_clear(d);
    free(d->samples);
    free(d->records);
    for (int t = 0; t < TRAIN_DATA_THREADS; t++) {
        tok_encoder_free(d->workers[t].enc);
        imgdec_decoder_free(d->workers[t].dec);
    }
    tok_free(d->tok);
    for (size_t i = 0; d->overlays && i < d->n_overlays; i++) corpus_close(d->overlays[i]);
    free(d->overlays);
    corpus_close(d->base);
    free(d->ids);
    free(d->labels);
    free(d->cu);
    free(d->grid);
    free(d->pixels);
    free(d);
}

uint64_t train_data_count(const train_data *d) { return corpus_count(d->base); }

void train_data_set_stage(train_data *d, int stage)
{
    if (stage == 1) d->copt.mode = CONV_MODE_CAPTION_ONLY;
    else if (stage == 2) d->copt.mode = CONV_MODE_TASKS_ONLY;
}

int train_data_task_records(train_data *d, uint64_t **out, uint64_t *n, adapt_error *err)
{
    uint64_t total = corpus_count(d->base), kept = 0;
    uint64_t *idx = malloc((total ? total : 1) * sizeof *idx);
    if (!idx) return adapt_fail(err, ADAPT_ENOMEM, "no memory for %llu record indices",
                                (unsigned long long)total);
    for (uint64_t i = 0; i < total; i++) {
        size_t tasks = 0;
        for (size_t k = 0; k < d->n_overlays; k++) {
            Adaptd__Sample *rec = NULL;
            conv_task *t = NULL;
            size_t nt = 0;
            int rc = corpus_read(d->overlays[k], i, &rec, err);
            if (!rc) rc = conv_tasks_from_overlay(rec, &t, &nt, err);
            free(t);
            if (rec) adaptd__sample__free_unpacked(rec, NULL);
            if (rc) {
                free(idx);
                return adapt_error_prefix(err, "overlay %zu record %llu: ", k,
                                          (unsigned long long)i);
            }
            tasks += nt;
        }
        if (tasks > 0) idx[kept++] = i;
    }
    *out = idx;
    *n = kept;
    return 0;
}
void train_data_budget(const train_data *d, qwen2vl_budget *b) { *b = d->budget; }
size_t train_data_batches(const train_data *d) { return d->plan.n_batches; }
uint64_t train_data_loss_tokens(const train_data *d) { return d->loss_tokens; }
uint64_t train_data_tokens(const train_data *d) { return d->tokens; }
uint64_t train_data_truncated(const train_data *d) { return d->plan.truncated; }

/* Decodes the sample's image (a white one of the same size when the conversation says blank)
 * and runs the image processor into s->pixels. */
static int sample_image(train_data *d, td_worker *w, const Adaptd__Sample *rec, int blank,
                        td_sample *s, adapt_error *err)
{
    uint8_t *rgb = NULL;
    imgdec_info info;
    if (imgdec_decoder_rgb(w->dec, rec->image.data, rec->image.len, &rgb, &info, err))
        return -1;
    if (blank) memset(rgb, 255, (size_t)info.width * info.height * 3);
    imgproc_plan plan;
    int rc = imgproc_plan_image(&d->ip, (int)info.width, (int)info.height, &plan, err);
    if (!rc) {
        s->pixels = malloc(plan.n_patches * plan.patch_dim * sizeof(float));
        if (!s->pixels) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory for image patches");
    }
    if (!rc)
        rc = imgproc_process(&d->ip, rgb, (int)info.width, (int)info.height, s->pixels,
                             plan.n_patches * plan.patch_dim, &plan, err);
    free(rgb);
    if (rc) return rc;
    if (plan.patch_dim != d->patch_dim)
        return adapt_fail(err, ADAPT_EINVAL, "image patches of %zu values, the model takes %zu",
                          plan.patch_dim, d->patch_dim);
    s->n_patches = plan.n_patches;
    s->grid[0] = plan.grid_t;
    s->grid[1] = plan.grid_h;
    s->grid[2] = plan.grid_w;
    s->has_image = 1;
    return 0;
}

/* The conversation's turns as chat messages; the image part goes first in its turn. */
static int sample_render(train_data *d, td_worker *w, const conv *c, int64_t image_tokens,
                         tok_chat *chat, adapt_error *err)
{
    tok_chat_message *msgs = calloc(c->n_turns, sizeof *msgs);
    tok_chat_part *parts = calloc(c->n_turns + 1, sizeof *parts);
    if (!msgs || !parts) {
        free(msgs);
        free(parts);
        return adapt_fail(err, ADAPT_ENOMEM, "no memory for a conversation");
    }
    size_t p = 0;
    for (size_t i = 0; i < c->n_turns; i++) {
        msgs[i].role = c->turns[i].role == CONV_ROLE_USER ? "user" : "assistant";
        msgs[i].parts = &parts[p];
        if (i == c->image_turn && image_tokens > 0)
            parts[p++] = (tok_chat_part){ NULL, 0, (int32_t)image_tokens };
        parts[p++] = (tok_chat_part){ c->turns[i].text, strlen(c->turns[i].text), 0 };
        msgs[i].n_parts = (size_t)(&parts[p] - msgs[i].parts);
    }
    int rc = tok_chat_render(w->enc, d->tok, msgs, c->n_turns, &d->chat, chat, err);
    free(msgs);
    free(parts);
    return rc;
}

/* Ids and labels from a rendered chat, cut to max_len; an image placeholder run must not be
 * cut, since the model needs every token of an image it is given. */
static int sample_tokens(train_data *d, const tok_chat *chat, td_sample *s, adapt_error *err)
{
    uint32_t n = chat->n > d->max_len ? d->max_len : (uint32_t)chat->n;
    for (size_t k = 0; k < chat->n_images; k++)
        if (chat->images[k].start + chat->images[k].n > n)
            return adapt_fail(err, ADAPT_EINVAL, "max_seq_len %u cuts the image placeholder "
                              "(tokens %zu..%zu): raise max_seq_len or lower image_max_pixels",
                              d->max_len, chat->images[k].start,
                              chat->images[k].start + chat->images[k].n);
    s->ids = malloc((size_t)chat->n * sizeof *s->ids);
    s->labels = malloc((size_t)chat->n * sizeof *s->labels);
    if (!s->ids || !s->labels) return adapt_fail(err, ADAPT_ENOMEM, "no memory for tokens");
    for (size_t t = 0; t < chat->n; t++) {
        s->ids[t] = chat->ids[t];
        s->labels[t] = chat->mask[t] && t > 0 ? chat->ids[t] : OPS_LABEL_IGNORE;
    }
    /* The pack plan truncates lengths the same way; keep the full arrays for it. */
    s->n = (uint32_t)chat->n;
    return 0;
}

static int sample_prepare(train_data *d, td_worker *w, size_t i, adapt_error *err)
{
    td_sample *s = &d->samples[i];
    Adaptd__Sample *const *rec = &d->records[i * (1 + d->n_overlays)];
    conv_task *tasks = NULL;
    size_t n_tasks = 0;
    int rc = 0;
    for (size_t k = 0; k < d->n_overlays && !rc; k++) {
        conv_task *t = NULL;
        size_t n = 0;
        rc = conv_tasks_from_overlay(rec[1 + k], &t, &n, err);
        conv_task *grown = rc ? NULL : realloc(tasks, (n_tasks + n + 1) * sizeof *tasks);
        if (!rc && !grown) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory for tasks");
        if (!rc) {
            tasks = grown;
            memcpy(tasks + n_tasks, t, n * sizeof *t);
            n_tasks += n;
        }
        free(t);
    }
    conv c = {0};
    if (!rc) rc = conv_build(&c, &d->copt, rec[0]->id, rec[0]->caption, tasks, n_tasks, err);
    int64_t image_tokens = 0;
    if (!rc && rec[0]->image.len > 0) {
        rc = sample_image(d, w, rec[0], c.blank_image, s, err);
        if (!rc) image_tokens = tok_qwen2_vl_image_tokens(s->grid[0], s->grid[1], s->grid[2],
                                                          d->merge);
    }
    tok_chat chat = {0};
    if (!rc) rc = sample_render(d, w, &c, image_tokens, &chat, err);
    if (!rc) rc = sample_tokens(d, &chat, s, err);
    tok_chat_free(&chat);
    conv_free(&c);
    free(tasks);
    return rc;
}

typedef struct td_job {
    train_data  *d;
    int          thread;
    size_t       failed;   /* first failing sample of this thread, d->n when none */
    adapt_error  err;
} td_job;

static void *worker_run(void *arg)
{
    td_job *j = arg;
    j->failed = j->d->n;
    for (size_t i = (size_t)j->thread; i < j->d->n; i += TRAIN_DATA_THREADS) {
        if (sample_prepare(j->d, &j->d->workers[j->thread], i, &j->err)) {
            j->failed = i;
            break;
        }
    }
    return NULL;
}

static int records_read(train_data *d, const uint64_t *indices, size_t n, adapt_error *err)
{
    for (size_t i = 0; i < n; i++) {
        d->samples[i].index = indices[i];
        Adaptd__Sample **rec = &d->records[i * (1 + d->n_overlays)];
        if (corpus_read(d->base, indices[i], &rec[0], err))
            return adapt_error_prefix(err, "corpus record %llu: ",
                                      (unsigned long long)indices[i]);
        for (size_t k = 0; k < d->n_overlays; k++)
            if (corpus_read(d->overlays[k], indices[i], &rec[1 + k], err))
                return adapt_error_prefix(err, "overlay %zu record %llu: ", k,
                                          (unsigned long long)indices[i]);
    }
    return 0;
}

static int samples_reserve(train_data *d, size_t n, adapt_error *err)
{
    if (n <= d->cap) return 0;
    td_sample *s = realloc(d->samples, n * sizeof *s);
    if (s) d->samples = s;
    Adaptd__Sample **r = realloc(d->records, n * (1 + d->n_overlays) * sizeof *r);
    if (r) d->records = r;
    if (!s || !r) return adapt_fail(err, ADAPT_ENOMEM, "train data: no memory for %zu samples", n);
    memset(d->samples + d->cap, 0, (n - d->cap) * sizeof *s);
    memset(d->records + d->cap * (1 + d->n_overlays), 0,
           (n - d->cap) * (1 + d->n_overlays) * sizeof *r);
    d->cap = n;
    return 0;
}

/* Runs sample_prepare over every sample on the worker threads; the error reported is the one
 * of the lowest failing sample, so it does not depend on thread timing. */
static int samples_process(train_data *d, adapt_error *err)
{
    td_job jobs[TRAIN_DATA_THREADS];
    pthread_t th[TRAIN_DATA_THREADS];
    int started[TRAIN_DATA_THREADS] = {0};
    for (int t = 0; t < TRAIN_DATA_THREADS; t++) {
        jobs[t] = (td_job){ .d = d, .thread = t };
        started[t] = t > 0 && pthread_create(&th[t], NULL, worker_run, &jobs[t]) == 0;
    }
    worker_run(&jobs[0]);
    for (int t = 1; t < TRAIN_DATA_THREADS; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else worker_run(&jobs[t]);
    }
    int worst = -1;
    for (int t = 0; t < TRAIN_DATA_THREADS; t++)
        if (jobs[t].failed < d->n && (worst < 0 || jobs[t].failed < jobs[worst].failed))
            worst = t;
    if (worst < 0) return 0;
    const td_sample *s = &d->samples[jobs[worst].failed];
    const Adaptd__Sample *rec = d->records[jobs[worst].failed * (1 + d->n_overlays)];
    *err = jobs[worst].err;
    return adapt_error_prefix(err, "corpus record %llu (id \"%s\"): ",
                              (unsigned long long)s->index, rec->id);
}

int train_data_prepare(train_data *d, const uint64_t *indices, size_t n, uint64_t key,
                       adapt_error *err)
{
    samples_clear(d);
    d->loss_tokens = d->tokens = 0;
    if (samples_reserve(d, n, err)) return -1;
    d->n = n;
    if (records_read(d, indices, n, err) || samples_process(d, err)) return -1;
    uint32_t *lengths = malloc((n ? n : 1) * sizeof *lengths);
    if (!lengths) return adapt_fail(err, ADAPT_ENOMEM, "train data: no memory");
    for (size_t i = 0; i < n; i++) lengths[i] = d->samples[i].n;
    int rc = pack_plan_build(&d->plan, lengths, n, d->budget_tokens, d->max_len, d->window, key,
                             err);
    free(lengths);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        d->samples[i].n = d->plan.length[i];
        d->tokens += d->samples[i].n;
        for (uint32_t t = 0; t < d->samples[i].n; t++)
            d->loss_tokens += d->samples[i].labels[t] != OPS_LABEL_IGNORE;
    }
    return 0;
}

int train_data_build(train_data *d, size_t i, float loss_normaliser, qwen2vl_batch *b,
                     adapt_error *err)
{
    if (i >= d->plan.n_batches)
        return adapt_fail(err, ADAPT_ERANGE, "micro-batch %zu of %zu", i, d->plan.n_batches);
    const pack_batch *pb = &d->plan.batches[i];
    int n_tokens = 0, n_seqs = 0, n_images = 0;
    size_t patches = 0;
    d->cu[0] = 0;
    for (size_t k = pb->begin; k < pb->end; k++) {
        const td_sample *s = &d->samples[d->plan.order[k]];
        memcpy(d->ids + n_tokens, s->ids, s->n * sizeof *d->ids);
        memcpy(d->labels + n_tokens, s->labels, s->n * sizeof *d->labels);
        n_tokens += (int)s->n;
        d->cu[++n_seqs] = n_tokens;
        if (!s->has_image) continue;
        if ((patches + s->n_patches) > (size_t)d->budget.max_patches)
            return adapt_fail(err, ADAPT_ERANGE, "micro-batch %zu needs more than %d image "
                              "patches", i, d->budget.max_patches);
        memcpy(d->pixels + patches * d->patch_dim, s->pixels,
               s->n_patches * d->patch_dim * sizeof *d->pixels);
        memcpy(d->grid + 3 * n_images, s->grid, sizeof s->grid);
        patches += s->n_patches;
        n_images++;
    }
    *b = (qwen2vl_batch){ .n_tokens = n_tokens, .input_ids = d->ids, .labels = d->labels,
                          .n_seqs = n_seqs, .cu_seqlens = d->cu, .n_images = n_images,
                          .image_grid_thw = d->grid, .pixel_values = d->pixels,
                          .loss_normaliser = loss_normaliser };
    return 0;
}
