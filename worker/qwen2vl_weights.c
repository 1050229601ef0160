/* qwen2vl_weights: the model's parameters in and out of the Hugging Face layout, and their
 * initialisation as transformers' _init_weights does it.
 *
 * The one idea: the layout table (qwen2vl_layout) already holds every tensor's transformers name,
 * shape and offset, so load, save and init are each one loop over it; the checkpoints holding
 * module names (`model.visual.*`, `model.language_model.*`), which transformers 5.x also
 * loads, are the same table with the prefixes rewritten. The parameter buffer is backend memory:
 * where the host may touch it each tensor is read or filled in place; elsewhere load goes through
 * a host buffer of the largest tensor (one upload per tensor), init through 4 MB host chunks, and
 * save downloads the whole buffer once. */
#include "qwen2vl_internal.h"

#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OLD_VIS "visual."
#define OLD_LM  "model."

/* The name a tensor has in a checkpoint of the given kind: the layout's names are the ones
 * save_pretrained writes (`visual.*`, `model.*`, `lm_head.weight`); a checkpoint may also carry
 * transformers 5.x's module names (`model.visual.*`, `model.language_model.*`), v5 = 1. */
static void name_in(const char *name, int v5, char *out, size_t cap)
{
    size_t nv = strlen(OLD_VIS), nl = strlen(OLD_LM);
    if (v5 && strncmp(name, OLD_VIS, nv) == 0)
        snprintf(out, cap, "model.visual.%s", name + nv);
    else if (v5 && strncmp(name, OLD_LM, nl) == 0)
        snprintf(out, cap, "model.language_model.%s", name + nl);
    else
        snprintf(out, cap, "%s", name);
}

static int names_check(const qwen2vl_model *m, const safetensors_t *st, int v5, adapt_error *err)
{
    size_t n = m->n_tensors;
    /* A tied checkpoint may still carry lm_head.weight (some writers keep it); it is then the
     * same values and is accepted but not read. */
    int extra = m->cfg.tie_word_embeddings && safetensors_find(st, "lm_head.weight") != NULL;
    char (*names)[128] = malloc((n + 1) * sizeof *names);
    const char **ptrs = malloc((n + 1) * sizeof *ptrs);
    if (!names || !ptrs) {
        free(names);
        free(ptrs);
        return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        name_in(m->tensors[i].name, v5, names[i], sizeof names[i]);
        ptrs[i] = names[i];
    }
    if (extra) ptrs[n] = "lm_head.weight";
    int rc = safetensors_check_names(st, ptrs, n + (size_t)extra, err);
    free(names);
    free(ptrs);
    return rc;
}

/* A host buffer for one tensor at a time, on a backend the host cannot write; NULL (with no
 * error) where it can: the tensors are then written in place. */
static int tensor_staging(const qwen2vl_model *m, float **out, adapt_error *err)
{
    *out = NULL;
    if (m->ops->host_accessible) return 0;
    size_t most = 1;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].numel > most) most = m->tensors[i].numel;
    *out = malloc(most * sizeof(float));
    if (!*out)
        return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory for a %zu-float host buffer "
                          "staging the weights", most);
    return 0;
}

int qwen2vl_load_weights(qwen2vl_model *m, const char *path, adapt_error *err)
{
    float *stage;
    int rc = tensor_staging(m, &stage, err);
    if (rc) return rc;
    safetensors_t *st;
    rc = safetensors_open(&st, path, err);
    if (rc) {
        free(stage);
        return rc;
    }
    int v5 = safetensors_find(st, "model.language_model.embed_tokens.weight") != NULL;
    rc = names_check(m, st, v5, err);
    for (size_t i = 0; !rc && i < m->n_tensors; i++) {
        const qwen2vl_tensor *t = &m->tensors[i];
        char name[128];
        name_in(t->name, v5, name, sizeof name);
        const safetensors_tensor *s = safetensors_find(st, name);
        int same = s->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = s->shape[d] == t->shape[d];
        if (!same) {
            rc = adapt_fail(err, ADAPT_EINVAL,
                            "%s: tensor '%s' has %d dims [%lld, ...], config.json wants %d dims "
                            "[%lld, ...] (does the config match the weights?)", path, name,
                            s->ndim, s->ndim ? (long long)s->shape[0] : 0LL, t->ndim,
                            (long long)t->shape[0]);
            break;
        }
        float *dst = stage ? stage : m->param_mem + t->offset;
        rc = safetensors_read_f32(st, name, dst, t->numel, err);
        if (!rc && stage)
            m->ops->mem_upload(m->param_mem + t->offset, stage, t->numel * sizeof(float));
    }
    safetensors_close(st);
    free(stage);
    if (rc) return adapt_error_prefix(err, "loading Qwen2-VL weights: ");
    qwen2vl_weights_changed(m);  /* bf16: the passes read the rounded copy */
    return 0;
}

int qwen2vl_save_weights(const qwen2vl_model *m, const char *dir, uint64_t max_shard_bytes,
                         adapt_error *err)
{
    /* the writer takes every tensor's bytes at once: a backend the host cannot read hands over a
     * host copy of the whole buffer */
    const float *src = m->param_mem;
    float *host = NULL;
    if (!m->ops->host_accessible) {
        host = malloc((m->n_params ? m->n_params : 1) * sizeof(float));
        if (!host)
            return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory for a host copy of %zu "
                              "parameters to save", m->n_params);
        m->ops->mem_download(host, m->param_mem, m->n_params * sizeof(float));
        src = host;
    }
    safetensors_entry *e = calloc(m->n_tensors, sizeof *e);
    if (!e) {
        free(host);
        return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory");
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qwen2vl_tensor *t = &m->tensors[i];
        e[i].name = t->name;
        e[i].dtype = SAFETENSORS_F32;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = src + t->offset;
    }
    int rc = safetensors_write_dir(dir, e, m->n_tensors, max_shard_bytes, err);
    free(e);
    free(host);
    return rc;
}

/* splitmix64: a stateless-seeded stream, so one seed gives the same weights on every host. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A uniform in (0, 1): 53 random bits, never 0 (Box-Muller takes its log). */
static double rng_uniform(uint64_t *s)
{
    return ((double)(rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void fill_normal(float *p, size_t n, double std, uint64_t *s)
{
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(rng_uniform(s))), th = 2.0 * M_PI * rng_uniform(s);
        p[i] = (float)(std * r * cos(th));
        if (i + 1 < n) p[i + 1] = (float)(std * r * sin(th));
    }
}

/* Host chunks staging the init on a backend the host cannot write. Even sizes: fill_normal draws
 * pairs, so the stream (and the weights) is the same whatever the chunking. */
enum { INIT_CHUNK = 1 << 20, INIT_CHUNK_FALLBACK = 4096 };

void qwen2vl_init_weights(qwen2vl_model *m, uint64_t seed)
{
    float fallback[INIT_CHUNK_FALLBACK], *stage = NULL;
    size_t cap = 0;
    if (!m->ops->host_accessible) {
        /* init cannot fail: without the large buffer, the small one on the stack does it */
        stage = malloc(INIT_CHUNK * sizeof(float));
        cap = stage ? INIT_CHUNK : INIT_CHUNK_FALLBACK;
        if (!stage) stage = fallback;
    }
    uint64_t s = seed;
    int pad = m->cfg.text.pad_token_id;
    size_t D = (size_t)m->cfg.text.hidden_size, embed_at = (size_t)(m->w.embed - m->param_mem);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qwen2vl_tensor *t = &m->tensors[i];
        double std = t->tower == QWEN2VL_TOWER_LLM ? m->cfg.text.initializer_range
                                                   : m->cfg.vision.initializer_range;
        if (std <= 0) std = 0.02;  /* transformers: `initializer_range or 0.02` */
        size_t chunk = stage ? cap : t->numel;
        for (size_t k0 = 0; k0 < t->numel; k0 += chunk) {
            size_t n = t->numel - k0 < chunk ? t->numel - k0 : chunk;
            float *p = stage ? stage : m->param_mem + t->offset + k0;
            if (t->is_matrix) {
                fill_normal(p, n, std, &s);
            } else {
                float v = t->is_norm ? 1.0f : 0.0f;
                for (size_t k = 0; k < n; k++) p[k] = v;
            }
            /* nn.Embedding(padding_idx = pad_token_id) starts with that row at zero. */
            if (t->offset == embed_at && pad >= 0 && pad < m->cfg.text.vocab_size) {
                size_t r0 = (size_t)pad * D, r1 = r0 + D;
                size_t lo = r0 > k0 ? r0 : k0, hi = r1 < k0 + n ? r1 : k0 + n;
                if (lo < hi) memset(p + (lo - k0), 0, sizeof(float) * (hi - lo));
            }
            if (stage) m->ops->mem_upload(m->param_mem + t->offset + k0, stage, n * sizeof(float));
        }
    }
    if (stage != fallback) free(stage);
    qwen2vl_weights_changed(m);  /* bf16: the passes read the rounded copy */
}
