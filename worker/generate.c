/* generate: batched generation over a KV cache (see generate.h).
 *
 * The one idea: a batch is a set of cache slots. Prompts are checked, tokenized and measured
 * before anything is allocated (so the cache is planned once, for the longest prompt plus
 * max_new_tokens); then each prompt in turn is prefilled into a free slot (its image through the
 * vision tower first), and every step feeds the last token of every live slot as one row each.
 * A sequence that stops frees its slot at once for the next waiting prompt. Sampling draws from a
 * stream seeded by (seed, prompt index) alone, so results do not depend on the batch around them. */
#include "generate.h"

#include "image_decode.h"
#include "image_process.h"
#include "model_config.h"
#include "qwen2vl.h"
#include "tok.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GEN_DEFAULT_BATCH 32
#define GEN_PREFILL_ROWS  256   /* a prompt is prefilled in chunks of at most this many tokens */
#define GEN_MAX_EOS       16

struct gen {
    model_config    cfg;
    qwen2vl_model  *m;
    tok_tokenizer  *tok;       /* NULL: gen_open_no_tokenizer */
    tok_encoder    *enc;
    imgproc_params  ip;
    int32_t         eos[GEN_MAX_EOS];
    int             n_eos;
    int             max_batch;
};

/* One prompt on its way through the batch. */
typedef struct gen_seq {
    int32_t       *ids;          /* the expanded prompt (owned when own_ids) */
    int            n;
    int            own_ids;
    const uint8_t *image;        /* encoded, decoded at admission; or */
    size_t         image_len;
    const float   *pixels;       /* already preprocessed */
    int            grid[3];      /* grid[0] = 0: no image */
    int            delta;        /* M-RoPE: new token at cache index c has position c + delta */
    tok_ids        out;          /* generated ids (ends unused) */
    int            stop;
    uint64_t       rng;
} gen_seq;

/* ---- open / close ------------------------------------------------------------------------- */

/* generation_config.json's eos_token_id (an int or a list) replaces the config's, as
 * transformers' generate takes it from there. Absent file: the config's list. */
static int gen_load_eos(gen_t *g, const char *dir, adapt_error *err)
{
    for (int i = 0; i < g->cfg.text.n_eos_token_ids && i < GEN_MAX_EOS; i++)
        g->eos[g->n_eos++] = g->cfg.text.eos_token_ids[i];
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        if (errno == ENOENT) return 0;
        return adapt_fail(err, ADAPT_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    char buf[65536];
    size_t len = fread(buf, 1, sizeof buf - 1, fp);
    int bad = ferror(fp) || len == sizeof buf - 1;
    fclose(fp);
    if (bad) return adapt_fail(err, ADAPT_EIO, "%s: read error, or over 64 KiB", path);
    buf[len] = 0;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!root) return adapt_fail(err, ADAPT_ECORRUPT, "%s: not valid JSON", path);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    int rc = 0;
    if (cJSON_IsNumber(e)) {
        g->n_eos = 0;
        g->eos[g->n_eos++] = (int32_t)e->valuedouble;
    } else if (cJSON_IsArray(e)) {
        g->n_eos = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, e) {
            if (!cJSON_IsNumber(v) || g->n_eos == GEN_MAX_EOS) {
                rc = adapt_fail(err, ADAPT_EINVAL,
                                "%s: eos_token_id must hold at most %d integer token ids", path,
                                GEN_MAX_EOS);
                break;
            }
            g->eos[g->n_eos++] = (int32_t)v->valuedouble;
        }
    } else if (e && !cJSON_IsNull(e)) {
        rc = adapt_fail(err, ADAPT_EINVAL, "%s: eos_token_id must be an integer or a list", path);
    }
    cJSON_Delete(root);
    return rc;
}

static int gen_open_impl(gen_t **out, const char *dir, int with_tokenizer, adapt_error *err)
{
    *out = NULL;
    gen_t *g = calloc(1, sizeof *g);
    if (!g) return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
    g->max_batch = GEN_DEFAULT_BATCH;
    /* the model object only holds the weights here (no gradients, no training activations):
     * generation plans its own cache and scratch (qwen2vl_infer_create) */
    int rc = model_config_load(&g->cfg, dir, err);
    if (!rc) rc = qwen2vl_create_inference(&g->m, &g->cfg, ops_cpu(), err);
    if (!rc) rc = qwen2vl_load_weights(g->m, dir, err);
    if (!rc) rc = gen_load_eos(g, dir, err);
    if (!rc && with_tokenizer) {
        rc = tok_load(&g->tok, dir, err);
        if (!rc) rc = tok_encoder_new(&g->enc, g->tok, err);
    }
    if (!rc) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
        if (stat(path, &st) == 0) rc = imgproc_params_load(&g->ip, path, err);
        else imgproc_params_default(&g->ip);
    }
    if (rc) {
        gen_close(g);
        return adapt_error_prefix(err, "generate: ");   /* the loaders name the file */
    }
    *out = g;
    return 0;
}

int gen_open(gen_t **out, const char *model_dir, adapt_error *err)
{
    return gen_open_impl(out, model_dir, 1, err);
}

int gen_open_no_tokenizer(gen_t **out, const char *model_dir, adapt_error *err)
{
    return gen_open_impl(out, model_dir, 0, err);
}

void gen_set_max_batch(gen_t *g, int max_batch)
{
    g->max_batch = max_batch < 1 ? 1 : max_batch;
}

void gen_close(gen_t *g)
{
    if (!g) return;
    tok_encoder_free(g->enc);
    tok_free(g->tok);
    qwen2vl_free(g->m);
    free(g);
}

qwen2vl_model *gen_model(gen_t *g) { return g->m; }

void gen_result_clear(gen_result *r)
{
    free(r->text);
    free(r->ids);
    memset(r, 0, sizeof *r);
}

/* ---- sampling ----------------------------------------------------------------------------- */

static uint64_t gen_rng_next(uint64_t *s)
{
    /* splitmix64: one 64-bit state per sequence, enough for a stream no batch can perturb */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int gen_argmax(const float *logits, int V)
{
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;   /* the first of equal maxima, as torch.argmax */
    return best;
}

typedef struct gen_cand {
    float p;
    int   id;
} gen_cand;

static int gen_cand_cmp(const void *a, const void *b)
{
    const gen_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

/* Temperature, then top-p as transformers' TopPLogitsWarper (the smallest set of most likely
 * tokens holding top_p of the mass), then one draw. probs / cand are V-long scratch. */
static int gen_sample(const float *logits, int V, float temperature, float top_p, uint64_t *rng,
                      float *probs, gen_cand *cand)
{
    float mx = logits[0];
    for (int v = 1; v < V; v++) if (logits[v] > mx) mx = logits[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++) {
        probs[v] = expf((logits[v] - mx) / temperature);
        sum += probs[v];
    }
    double u = (double)(gen_rng_next(rng) >> 11) * 0x1.0p-53;
    if (!(top_p < 1.0f)) {
        double acc = 0.0, target = u * sum;
        for (int v = 0; v < V; v++) {
            acc += probs[v];
            if (acc > target) return v;
        }
        return V - 1;
    }
    /* Tokens below (1 - top_p) / V of the mass are outside the nucleus whatever the others are
     * (all of them together hold less than 1 - top_p), so only the rest need sorting. */
    double cut = (1.0 - top_p) / V * sum;
    int nc = 0;
    for (int v = 0; v < V; v++)
        if (probs[v] >= cut) cand[nc++] = (gen_cand){ probs[v], v };
    qsort(cand, (size_t)nc, sizeof *cand, gen_cand_cmp);
    double keep = 0.0;
    int nk = 0;
    while (nk < nc) {
        keep += cand[nk++].p;
        if (keep >= top_p * sum) break;
    }
    double acc = 0.0, target = u * keep;
    for (int i = 0; i < nk; i++) {
        acc += cand[i].p;
        if (acc > target) return cand[i].id;
    }
    return cand[nk - 1].id;
}

/* ---- stopping ----------------------------------------------------------------------------- */

/* The earliest byte offset where a stop string starts in text, or -1. */
static long gen_find_stop(const char *text, size_t len, const gen_options *o)
{
    long best = -1;
    for (size_t i = 0; i < o->n_stop_strings; i++) {
        const char *s = o->stop_strings[i];
        size_t sl = strlen(s);
        if (!sl || sl > len) continue;
        for (size_t at = 0; at + sl <= len && (best < 0 || (long)at < best); at++)
            if (!memcmp(text + at, s, sl)) {
                best = (long)at;
                break;
            }
    }
    return best;
}

/* Whether the newest token ends the sequence; sets q->stop. */
static int gen_check_stop(gen_t *g, gen_seq *q, const gen_options *o, tok_bytes *scratch,
                          adapt_error *err)
{
    int32_t t = q->out.ids[q->out.n - 1];
    if (!o->ignore_eos)
        for (int i = 0; i < g->n_eos; i++)
            if (t == g->eos[i]) return q->stop = GEN_STOP_EOS;
    for (size_t i = 0; i < o->n_stop_ids; i++)
        if (t == o->stop_ids[i]) return q->stop = GEN_STOP_ID;
    if (o->n_stop_strings && g->tok) {
        scratch->len = 0;
        /* special tokens kept: stop strings match token strings, as transformers' do */
        int rc = tok_decode(g->tok, q->out.ids, q->out.n, TOK_DECODE_LOSSY, scratch, err);
        if (rc) return rc;
        if (gen_find_stop(scratch->data, scratch->len, o) >= 0) return q->stop = GEN_STOP_STRING;
    }
    if (q->out.n >= o->max_new_tokens) return q->stop = GEN_STOP_LENGTH;
    return 0;
}

/* ---- the batch ---------------------------------------------------------------------------- */

typedef struct gen_plan {
    qwen2vl_infer *s;
    int            slots, max_len, max_patches, max_feat;
    float         *features;   /* [max image tokens, D] */
    float         *pixels;     /* [max_patches, patch_dim]: decoded images */
    float         *logits;     /* [max(slots, 1), V] */
    float         *probs;      /* [V] */
    gen_cand      *cand;       /* [V] */
    int           *rows;       /* ids, slot, cache_pos, pos[3], logit_rows: [R] each */
    int           *slot_seq;   /* [slots] the sequence in each slot, -1 free */
    tok_bytes      text;
} gen_plan;

static void gen_plan_free(gen_plan *p)
{
    qwen2vl_infer_free(p->s);
    free(p->features);
    free(p->pixels);
    free(p->logits);
    free(p->probs);
    free(p->cand);
    free(p->rows);
    free(p->slot_seq);
    tok_bytes_free(&p->text);
}

/* Chooses the next token of sequence q from its logits row and checks whether it stops. */
static int gen_take(gen_t *g, gen_plan *p, gen_seq *q, const float *logits, const gen_options *o,
                    adapt_error *err)
{
    int V = g->cfg.text.vocab_size;
    int t = o->temperature > 0.0f
                ? gen_sample(logits, V, o->temperature, o->top_p, &q->rng, p->probs, p->cand)
                : gen_argmax(logits, V);
    if (tok_ids_push(&q->out, t, 0))
        return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory for the output ids");
    int rc = gen_check_stop(g, q, o, &p->text, err);
    return rc < 0 ? rc : 0;
}

/* The image of q through the vision tower into p->features. */
static int gen_image(gen_t *g, gen_plan *p, gen_seq *q, adapt_error *err)
{
    const float *pix = q->pixels;
    if (!pix) {
        uint8_t *rgb = NULL;
        imgdec_info info;
        imgproc_plan plan;
        int rc = imgdec_decode_rgb(q->image, q->image_len, &rgb, &info, err);
        if (!rc) {
            size_t cap = (size_t)p->max_patches * 3 * g->cfg.vision.temporal_patch_size *
                         g->cfg.vision.patch_size * g->cfg.vision.patch_size;
            rc = imgproc_process(&g->ip, rgb, (int)info.width, (int)info.height, p->pixels, cap,
                                 &plan, err);
        }
        free(rgb);
        if (rc) return rc;
        pix = p->pixels;
    }
    return qwen2vl_infer_image(g->m, p->s, pix, q->grid, p->features, err);
}

/* Prefills sequence q into slot, in chunks, and takes its first token from the last row. */
static int gen_prefill(gen_t *g, gen_plan *p, gen_seq *q, int slot, const gen_options *o,
                       adapt_error *err)
{
    int rc = q->grid[0] ? gen_image(g, p, q, err) : 0;
    if (rc) return rc;
    int R = GEN_PREFILL_ROWS, D = g->cfg.text.hidden_size, img = g->cfg.image_token_id;
    int *ids = p->rows, *sl = ids + p->max_len, *cp = sl + p->max_len, *pos = cp + p->max_len;
    int *lr = pos + 6 * p->max_len;
    /* M-RoPE ids of the whole prompt, as transformers' get_rope_index */
    int cursor = 0;
    rc = qwen2vl_rope_index(q->ids, q->n, img, g->cfg.vision.spatial_merge_size, q->grid,
                            q->grid[0] ? 1 : 0, &cursor, pos, q->n, err);
    if (rc) return rc;
    int n_img_before = 0;
    for (int c0 = 0; c0 < q->n; c0 += R) {
        int c1 = c0 + R < q->n ? c0 + R : q->n, n = c1 - c0;
        int *cpos = pos + 3 * q->n;  /* the chunk's ids, component-major, after the whole list */
        for (int i = 0; i < n; i++) {
            ids[i] = q->ids[c0 + i];
            sl[i] = slot;
            cp[i] = c0 + i;
            for (int k = 0; k < 3; k++) cpos[k * n + i] = pos[k * q->n + c0 + i];
        }
        lr[0] = n - 1;
        qwen2vl_rows rows = { .n = n, .ids = ids, .slot = sl, .cache_pos = cp, .pos = cpos,
                              .image_features = p->features + (size_t)n_img_before * D,
                              .n_logits = c1 == q->n, .logit_rows = lr };
        rc = qwen2vl_infer_step(g->m, p->s, &rows, p->logits, err);
        if (rc) return rc;
        for (int i = 0; i < n; i++) n_img_before += ids[i] == img;
    }
    return gen_take(g, p, q, p->logits, o, err);
}

/* One decode step: the last token of every live slot. */
static int gen_decode_step(gen_t *g, gen_plan *p, gen_seq *seqs, const gen_options *o,
                           adapt_error *err)
{
    int *ids = p->rows, *sl = ids + p->max_len, *cp = sl + p->max_len, *pos = cp + p->max_len;
    int *lr = pos + 6 * p->max_len, n = 0;
    for (int s = 0; s < p->slots; s++) {
        if (p->slot_seq[s] < 0) continue;
        gen_seq *q = &seqs[p->slot_seq[s]];
        ids[n] = q->out.ids[q->out.n - 1];
        sl[n] = s;
        cp[n] = q->n + (int)q->out.n - 1;
        lr[n] = n;
        n++;
    }
    if (!n) return 0;
    int *cpos = pos;
    for (int i = 0; i < n; i++) {
        gen_seq *q = &seqs[p->slot_seq[sl[i]]];
        cpos[i] = cpos[n + i] = cpos[2 * n + i] = cp[i] + q->delta;
    }
    qwen2vl_rows rows = { .n = n, .ids = ids, .slot = sl, .cache_pos = cp, .pos = cpos,
                          .image_features = NULL, .n_logits = n, .logit_rows = lr,
                          .row_invariant = 1 };
    int rc = qwen2vl_infer_step(g->m, p->s, &rows, p->logits, err);
    size_t V = (size_t)g->cfg.text.vocab_size;
    for (int i = 0; !rc && i < n; i++) {
        gen_seq *q = &seqs[p->slot_seq[sl[i]]];
        rc = gen_take(g, p, q, p->logits + (size_t)i * V, o, err);
        if (q->stop) p->slot_seq[sl[i]] = -1;
    }
    return rc;
}

/* Checks every prompt and measures it: M-RoPE delta, longest prompt, largest image. */
static int gen_measure(gen_t *g, gen_seq *seqs, size_t n, gen_plan *p, adapt_error *err)
{
    int img = g->cfg.image_token_id, V = g->cfg.text.vocab_size, max_n = 1;
    for (size_t i = 0; i < n; i++) if (seqs[i].n > max_n) max_n = seqs[i].n;
    int *pos = malloc(sizeof(int) * 3 * (size_t)max_n);
    if (!pos) return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        gen_seq *q = &seqs[i];
        if (q->n < 1) {
            rc = adapt_fail(err, ADAPT_EINVAL, "generate: prompt %zu is empty", i);
            break;
        }
        for (int t = 0; t < q->n && !rc; t++)
            if (q->ids[t] < 0 || q->ids[t] >= V)
                rc = adapt_fail(err, ADAPT_ERANGE,
                                "generate: prompt %zu: token %d is id %d, outside the model's "
                                "vocabulary [0, %d)", i, t, q->ids[t], V);
        int cursor = 0;
        if (!rc)
            rc = qwen2vl_rope_index(q->ids, q->n, img, g->cfg.vision.spatial_merge_size, q->grid,
                                    q->grid[0] ? 1 : 0, &cursor, pos, q->n, err);
        if (!rc && cursor != (q->grid[0] ? 1 : 0))
            rc = adapt_fail(err, ADAPT_EINVAL,
                            "generate: prompt %zu has an image but no <|image_pad|> token", i);
        if (rc) {
            if (strncmp(err->message, "generate:", 9))
                adapt_error_prefix(err, "generate: prompt %zu: ", i);
            break;
        }
        int mx = 0;
        for (int k = 0; k < 3 * q->n; k++) if (pos[k] > mx) mx = pos[k];
        q->delta = mx + 1 - q->n;
        if (q->n > p->max_len) p->max_len = q->n;
        int np = q->grid[0] ? q->grid[0] * q->grid[1] * q->grid[2] : 0;
        if (np > p->max_patches) p->max_patches = np;
    }
    free(pos);
    return rc;
}

static int gen_plan_make(gen_t *g, gen_plan *p, size_t n, const gen_options *o,
                         adapt_error *err)
{
    int V = g->cfg.text.vocab_size, D = g->cfg.text.hidden_size;
    int ms = g->cfg.vision.spatial_merge_size;
    p->slots = (int)(n < (size_t)g->max_batch ? n : (size_t)g->max_batch);
    int R = p->slots > GEN_PREFILL_ROWS ? p->slots : GEN_PREFILL_ROWS;
    if (R > p->max_len && p->max_len >= p->slots) R = p->max_len;
    long cap = (long)p->max_len + o->max_new_tokens;
    if (cap > 0x7fffffffL / 8)
        return adapt_fail(err, ADAPT_ERANGE, "generate: prompt %d + %u new tokens is too long",
                          p->max_len, o->max_new_tokens);
    int rc = qwen2vl_infer_create(&p->s, g->m, p->slots, (int)cap, R, p->max_patches, err);
    if (rc) return rc;
    size_t pd = (size_t)3 * g->cfg.vision.temporal_patch_size * g->cfg.vision.patch_size *
                g->cfg.vision.patch_size;
    p->max_feat = p->max_patches / (ms * ms);
    p->features = malloc(sizeof(float) * ((size_t)p->max_feat * D + 1));
    p->pixels = malloc(sizeof(float) * ((size_t)p->max_patches * pd + 1));
    p->logits = malloc(sizeof(float) * (size_t)p->slots * V);
    p->probs = malloc(sizeof(float) * (size_t)V);
    p->cand = malloc(sizeof(gen_cand) * (size_t)V);
    /* ids, slot, cache_pos (1 each), pos (3 for the whole prompt + 3 for a chunk), logit rows (1) */
    int len = p->max_len > R ? p->max_len : R;
    p->max_len = len;
    p->rows = malloc(sizeof(int) * 10 * (size_t)len);
    p->slot_seq = malloc(sizeof(int) * (size_t)p->slots);
    if (!p->features || !p->pixels || !p->logits || !p->probs || !p->cand || !p->rows ||
        !p->slot_seq)
        return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory for a batch of %d", p->slots);
    for (int s = 0; s < p->slots; s++) p->slot_seq[s] = -1;
    return 0;
}

/* The output text of ids[0..n) without special tokens, cut at byte `at` of the special-kept
 * text (a stop string's match, found where transformers' StopStringCriteria looks: in the token
 * strings, special tokens included): the tokens wholly before it, plus the part of a normal token
 * that the match starts inside. */
static int gen_text_cut_plain(gen_t *g, const int32_t *ids, size_t n, size_t at, tok_bytes *out,
                              adapt_error *err)
{
    tok_bytes kept = {0};
    size_t t = 0, start = 0;
    int rc = 0;
    /* the first token whose kept text reaches past the match start */
    for (; t < n && !rc; t++) {
        rc = tok_decode(g->tok, ids + t, 1, TOK_DECODE_LOSSY, &kept, err);
        if (kept.len > at) break;
        start = kept.len;
    }
    tok_bytes_free(&kept);
    if (!rc) rc = tok_decode(g->tok, ids, t, TOK_DECODE_LOSSY | TOK_DECODE_SKIP_SPECIAL, out, err);
    if (!rc && t < n && !tok_is_special(g->tok, ids[t]) && at > start) {
        tok_bytes one = {0};
        rc = tok_decode(g->tok, ids + t, 1, TOK_DECODE_LOSSY, &one, err);
        if (!rc && tok_bytes_append(out, one.data, at - start))
            rc = adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
        tok_bytes_free(&one);
    }
    return rc;
}

/* The result of q: its ids, and its text (cut before a stop string). */
static int gen_finish(gen_t *g, gen_seq *q, const gen_options *o, gen_result *r, adapt_error *err)
{
    memset(r, 0, sizeof *r);
    r->n_ids = q->out.n;
    r->stop_reason = q->stop;
    r->ids = malloc(sizeof(int32_t) * (q->out.n + 1));
    if (!r->ids) return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
    memcpy(r->ids, q->out.ids, sizeof(int32_t) * q->out.n);
    if (!g->tok) return 0;
    tok_bytes b = {0};
    int rc = tok_decode(g->tok, q->out.ids, q->out.n, TOK_DECODE_LOSSY, &b, err);
    long at = !rc && q->stop == GEN_STOP_STRING ? gen_find_stop(b.data, b.len, o) : -1;
    if (!rc && at >= 0) {
        if (o->keep_special) {
            b.len = (size_t)at;
        } else {
            b.len = 0;
            rc = gen_text_cut_plain(g, q->out.ids, q->out.n, (size_t)at, &b, err);
        }
    } else if (!rc && !o->keep_special) {
        b.len = 0;
        rc = tok_decode(g->tok, q->out.ids, q->out.n, TOK_DECODE_LOSSY | TOK_DECODE_SKIP_SPECIAL,
                        &b, err);
    }
    if (!rc) {
        r->text = malloc(b.len + 1);
        if (!r->text) rc = adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
        else {
            if (b.len) memcpy(r->text, b.data, b.len);
            r->text[b.len] = 0;
        }
    }
    tok_bytes_free(&b);
    if (rc) gen_result_clear(r);
    return rc;
}

static int gen_core(gen_t *g, gen_seq *seqs, size_t n, const gen_options *o, gen_result *results,
                    adapt_error *err)
{
    if (o->temperature < 0.0f || !(o->top_p > 0.0f && o->top_p <= 1.0f))
        return adapt_fail(err, ADAPT_EINVAL,
                          "generate: temperature %g must be >= 0 and top_p %g in (0, 1]",
                          (double)o->temperature, (double)o->top_p);
    if (!n) return 0;
    gen_plan p = {0};
    int rc = gen_measure(g, seqs, n, &p, err);
    if (!rc) rc = gen_plan_make(g, &p, n, o, err);
    for (size_t i = 0; i < n; i++)
        seqs[i].rng = o->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i + 1));
    size_t next = 0;
    int live = 0;
    if (o->max_new_tokens == 0)
        for (; next < n; next++) seqs[next].stop = GEN_STOP_LENGTH;
    while (!rc && (next < n || live)) {
        /* admit waiting prompts into free slots */
        for (int s = 0; s < p.slots && next < n && !rc; s++) {
            if (p.slot_seq[s] >= 0) continue;
            gen_seq *q = &seqs[next];
            rc = gen_prefill(g, &p, q, s, o, err);
            if (rc) adapt_error_prefix(err, "generate: prompt %zu: ", next);
            else if (!q->stop) p.slot_seq[s] = (int)next;
            next++;
        }
        live = 0;
        for (int s = 0; s < p.slots; s++) live += p.slot_seq[s] >= 0;
        if (!rc && live) rc = gen_decode_step(g, &p, seqs, o, err);
    }
    size_t done = 0;
    for (; !rc && done < n; done++) rc = gen_finish(g, &seqs[done], o, &results[done], err);
    if (rc)
        for (size_t i = 0; i < done; i++) gen_result_clear(&results[i]);
    gen_plan_free(&p);
    return rc;
}

static void gen_seqs_free(gen_seq *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (seqs[i].own_ids) free(seqs[i].ids);
        tok_ids_free(&seqs[i].out);
    }
    free(seqs);
}

int gen_run_tokens(gen_t *g, const gen_token_prompt *prompts, size_t n, const gen_options *o,
                   gen_result *results, adapt_error *err)
{
    gen_seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    if (!seqs) return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
    for (size_t i = 0; i < n; i++) {
        seqs[i].ids = (int32_t *)prompts[i].ids;
        seqs[i].n = prompts[i].n_ids > 0x7fffffff ? -1 : (int)prompts[i].n_ids;
        if (prompts[i].pixel_values) {
            seqs[i].pixels = prompts[i].pixel_values;
            memcpy(seqs[i].grid, prompts[i].grid_thw, sizeof seqs[i].grid);
        }
    }
    int rc = gen_core(g, seqs, n, o, results, err);
    gen_seqs_free(seqs, n);
    return rc;
}

/* Tokenizes prompt i and expands its <|image_pad|> to the image's merged token count. */
static int gen_tokenize(gen_t *g, const gen_prompt *pr, size_t i, gen_seq *q, adapt_error *err)
{
    tok_ids t = {0};
    int rc = tok_encode(g->enc, pr->text ? pr->text : "", pr->text ? strlen(pr->text) : 0, &t,
                        err);
    if (rc) return adapt_error_prefix(err, "generate: prompt %zu: ", i);
    int img = g->cfg.image_token_id, n_pad = 0, at = -1;
    for (size_t k = 0; k < t.n; k++)
        if (t.ids[k] == img) { n_pad++; at = (int)k; }
    int want = pr->image ? 1 : 0, G = 0;
    if (n_pad != want) {
        tok_ids_free(&t);
        return adapt_fail(err, ADAPT_EINVAL,
                          "generate: prompt %zu has %d <|image_pad|> token%s and %d image%s "
                          "(one <|image_pad|> per image)", i, n_pad, n_pad == 1 ? "" : "s",
                          want, want == 1 ? "" : "s");
    }
    if (pr->image) {
        imgdec_info info;
        imgproc_plan plan;
        rc = imgdec_validate(pr->image, pr->image_len, 0, &info, err);
        if (!rc) rc = imgproc_plan_image(&g->ip, (int)info.width, (int)info.height, &plan, err);
        if (rc) {
            tok_ids_free(&t);
            return adapt_error_prefix(err, "generate: prompt %zu: image: ", i);
        }
        q->image = pr->image;
        q->image_len = pr->image_len;
        q->grid[0] = plan.grid_t;
        q->grid[1] = plan.grid_h;
        q->grid[2] = plan.grid_w;
        int ms = g->cfg.vision.spatial_merge_size;
        G = plan.grid_t * plan.grid_h * plan.grid_w / (ms * ms);
    }
    size_t n = t.n - (size_t)n_pad + (size_t)G;
    q->ids = malloc(sizeof(int32_t) * (n + 1));
    if (!q->ids) {
        tok_ids_free(&t);
        return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
    }
    q->own_ids = 1;
    size_t w = 0;
    for (size_t k = 0; k < t.n; k++) {
        if ((int)k == at && pr->image)
            for (int j = 0; j < G; j++) q->ids[w++] = img;
        else
            q->ids[w++] = t.ids[k];
    }
    q->n = n > 0x7fffffff ? -1 : (int)n;
    tok_ids_free(&t);
    return 0;
}

int gen_run(gen_t *g, const gen_prompt *prompts, size_t n, const gen_options *o,
            gen_result *results, adapt_error *err)
{
    if (!g->tok)
        return adapt_fail(err, ADAPT_EINVAL,
                          "generate: text prompts need a tokenizer (opened without one)");
    gen_seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    if (!seqs) return adapt_fail(err, ADAPT_ENOMEM, "generate: out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = gen_tokenize(g, &prompts[i], i, &seqs[i], err);
    if (!rc) rc = gen_core(g, seqs, n, o, results, err);
    gen_seqs_free(seqs, n);
    return rc;
}
