/* qwen2vl_weights: the model's parameters in and out of the Hugging Face layout, and their
 * initialisation as transformers' _init_weights does it.
 *
 * The one idea: the layout table (qwen2vl_layout) already holds every tensor's transformers name,
 * shape and offset, so load, save and init are each one loop over it; the checkpoints holding
 * module names (`model.visual.*`, `model.language_model.*`), which transformers 5.x also
 * loads, are the same table with the prefixes rewritten. */
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

int qwen2vl_load_weights(qwen2vl_model *m, const char *path, adapt_error *err)
{
    safetensors_t *st;
    int rc = safetensors_open(&st, path, err);
    if (rc) return rc;
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
        rc = safetensors_read_f32(st, name, m->param_mem + t->offset, t->numel, err);
    }
    safetensors_close(st);
    if (rc) return adapt_error_prefix(err, "loading Qwen2-VL weights: ");
    return 0;
}

int qwen2vl_save_weights(const qwen2vl_model *m, const char *dir, uint64_t max_shard_bytes,
                         adapt_error *err)
{
    safetensors_entry *e = calloc(m->n_tensors, sizeof *e);
    if (!e) return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory");
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qwen2vl_tensor *t = &m->tensors[i];
        e[i].name = t->name;
        e[i].dtype = SAFETENSORS_F32;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = m->param_mem + t->offset;
    }
    int rc = safetensors_write_dir(dir, e, m->n_tensors, max_shard_bytes, err);
    free(e);
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

void qwen2vl_init_weights(qwen2vl_model *m, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const qwen2vl_tensor *t = &m->tensors[i];
        float *p = m->param_mem + t->offset;
        double std = t->tower == QWEN2VL_TOWER_LLM ? m->cfg.text.initializer_range
                                                   : m->cfg.vision.initializer_range;
        if (std <= 0) std = 0.02;  /* transformers: `initializer_range or 0.02` */
        if (t->is_matrix) {
            fill_normal(p, t->numel, std, &s);
        } else {
            float v = t->is_norm ? 1.0f : 0.0f;
            for (size_t k = 0; k < t->numel; k++) p[k] = v;
        }
    }
    /* nn.Embedding(padding_idx = pad_token_id) starts with that row at zero. */
    int pad = m->cfg.text.pad_token_id, D = m->cfg.text.hidden_size;
    if (pad >= 0 && pad < m->cfg.text.vocab_size)
        memset(m->w.embed + (size_t)pad * D, 0, sizeof(float) * D);
}
