/* qwen2vl_decode: Qwen2-VL inference for generation: the vision tower once per image, then the
 * decoder over new tokens only, reading the keys and values of earlier tokens from a KV cache.
 *
 * The one idea: prefill and decode are the same call. A step is a list of rows (slot, cache index,
 * M-RoPE ids); each layer first writes the rows' rotated keys and values into their slots' cache
 * and then lets each row attend to its slot's cache up to its own index, so a whole prompt (rows
 * of one slot at consecutive indices, causal by construction) and one token of every live sequence
 * go through the same code. Nothing is saved for a backward pass: every layer reuses one set of
 * [max_rows, width] buffers, so memory is the cache plus a few rows, not the training plan. */
#include "qwen2vl_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
/* query heads sharing one kv head that the cached attention takes together (Qwen2-VL-2B: 12 / 2,
 * 7B: 28 / 4, 72B: 64 / 8) */
#define INFER_MAX_HEADS_PER_KV 16

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define INFER_HAVE_AVX2_KERNEL 1
#else
#define INFER_HAVE_AVX2_KERNEL 0
#endif

struct qwen2vl_infer {
    int    slots, capacity, max_rows, max_patches;
    int    L, D, I, H, KV, hd, Q, K, W, V;
    float *kc, *vc;          /* [L, slots, capacity, K] rotated keys, values */
    float *x;                /* [R, D] residual stream */
    float *ln;               /* [R, D] */
    float *rstd;             /* [R] */
    float *qkv;              /* [R, W] q | k | v */
    float *att;              /* [R, Q] */
    float *tmp;              /* [R, D] a branch's output before the residual add */
    float *gu;               /* [R, 2I] gate | up */
    float *act;              /* [R, I] */
    float *hf;               /* [R, D] the rows that want logits, after the final norm */
    int   *img_rows;         /* [R] */
    float *scores;           /* [threads, score_len] attention scores and sums of one kv group */
    size_t score_len;        /* (H / KV) * (capacity + hd) */
    int    n_threads;
    /* vision, one image at a time (N patches, G = N / merge^2) */
    float *vx, *vln, *vqkv, *vatt, *vtmp, *vfc, *vact, *vmean, *vrstd, *vlse;
    float *mfc, *mact;       /* [G, C] */
    int   *vpos;             /* [2, N] */
    int    avx2;             /* the row kernel may use AVX2 + FMA (checked once) */
};

void qwen2vl_infer_free(qwen2vl_infer *s)
{
    if (!s) return;
    free(s->kc);
    free(s->vc);
    free(s->x);
    free(s->ln);
    free(s->rstd);
    free(s->qkv);
    free(s->att);
    free(s->tmp);
    free(s->gu);
    free(s->act);
    free(s->hf);
    free(s->img_rows);
    free(s->scores);
    free(s->vx);
    free(s->vln);
    free(s->vqkv);
    free(s->vatt);
    free(s->vtmp);
    free(s->vfc);
    free(s->vact);
    free(s->vmean);
    free(s->vrstd);
    free(s->vlse);
    free(s->mfc);
    free(s->mact);
    free(s->vpos);
    free(s);
}

static float *infer_alloc(size_t n, int *bad)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) *bad = 1;
    return p;
}

int qwen2vl_infer_create(qwen2vl_infer **out, const qwen2vl_model *m, int slots, int capacity,
                         int max_rows, int max_patches, adapt_error *err)
{
    *out = NULL;
    if (slots < 1 || capacity < 1 || max_rows < 1 || max_patches < 0)
        return adapt_fail(err, ADAPT_EINVAL,
                          "qwen2vl: inference plan of %d slots x %d tokens, %d rows, %d patches "
                          "(slots, tokens and rows must be >= 1)", slots, capacity, max_rows,
                          max_patches);
    const model_config_text *tc = &m->cfg.text;
    if (tc->num_attention_heads / tc->num_key_value_heads > INFER_MAX_HEADS_PER_KV)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "qwen2vl: %d query heads per kv head; generation handles at most %d",
                          tc->num_attention_heads / tc->num_key_value_heads,
                          INFER_MAX_HEADS_PER_KV);
    /* the cache and scratch below are malloc'd and read by host loops */
    int rc = qwen2vl_require_host_backend(m->ops, "generation (qwen2vl_infer_create)", err);
    if (rc) return rc;
    const model_config_text *t = &m->cfg.text;
    const model_config_vision *v = &m->cfg.vision;
    qwen2vl_infer *s = calloc(1, sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory for the inference plan");
    s->slots = slots;
    s->capacity = capacity;
    s->max_rows = max_rows;
    s->max_patches = max_patches;
    s->L = t->num_hidden_layers;
    s->D = t->hidden_size;
    s->I = t->intermediate_size;
    s->H = t->num_attention_heads;
    s->KV = t->num_key_value_heads;
    s->hd = t->head_dim;
    s->Q = s->H * s->hd;
    s->K = s->KV * s->hd;
    s->W = s->Q + 2 * s->K;
    s->V = t->vocab_size;
#if INFER_HAVE_AVX2_KERNEL
    __builtin_cpu_init();
    s->avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#ifdef _OPENMP
    s->n_threads = omp_get_max_threads();
#else
    s->n_threads = 1;
#endif
    size_t R = (size_t)max_rows, cache = (size_t)s->L * slots * capacity * s->K;
    int bad = 0;
    s->kc = infer_alloc(cache, &bad);
    s->vc = infer_alloc(cache, &bad);
    s->x = infer_alloc(R * s->D, &bad);
    s->ln = infer_alloc(R * s->D, &bad);
    s->rstd = infer_alloc(R, &bad);
    s->qkv = infer_alloc(R * s->W, &bad);
    s->att = infer_alloc(R * s->Q, &bad);
    s->tmp = infer_alloc(R * s->D, &bad);
    s->gu = infer_alloc(R * 2 * s->I, &bad);
    s->act = infer_alloc(R * s->I, &bad);
    s->hf = infer_alloc(R * s->D, &bad);
    s->img_rows = malloc(R * sizeof(int));
    s->score_len = (size_t)(s->H / s->KV) * ((size_t)capacity + s->hd);
    s->scores = infer_alloc((size_t)s->n_threads * s->score_len, &bad);
    size_t N = (size_t)max_patches, E = (size_t)v->embed_dim, M = (size_t)v->mlp_dim;
    size_t ms = (size_t)v->spatial_merge_size * v->spatial_merge_size;
    s->vx = infer_alloc(N * E, &bad);
    s->vln = infer_alloc(N * E, &bad);
    s->vqkv = infer_alloc(N * 3 * E, &bad);
    s->vatt = infer_alloc(N * E, &bad);
    s->vtmp = infer_alloc(N * E, &bad);
    s->vfc = infer_alloc(N * M, &bad);
    s->vact = infer_alloc(N * M, &bad);
    s->vmean = infer_alloc(N, &bad);
    s->vrstd = infer_alloc(N, &bad);
    s->vlse = infer_alloc(N * v->num_heads, &bad);
    s->mfc = infer_alloc(N / ms * E * ms, &bad);
    s->mact = infer_alloc(N / ms * E * ms, &bad);
    s->vpos = malloc((2 * N + 1) * sizeof(int));
    if (bad || !s->img_rows || !s->vpos) {
        qwen2vl_infer_free(s);
        return adapt_fail(err, ADAPT_ENOMEM,
                          "qwen2vl: out of memory for a KV cache of %d x %d tokens (%.1f MiB)",
                          slots, capacity, 8.0 * (double)cache / (1024.0 * 1024.0));
    }
    *out = s;
    return 0;
}

/* ---- vision ------------------------------------------------------------------------------- */

static void infer_vision_block(const qwen2vl_model *m, qwen2vl_infer *s, int l, int N,
                               const ops_attn *at)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    size_t E = (size_t)m->cfg.vision.embed_dim, M = (size_t)m->cfg.vision.mlp_dim, L = (size_t)l;
    int e = (int)E, mm = (int)M;
    ops->layernorm_forward_f32(s->vln, s->vmean, s->vrstd, s->vx, w->v_norm1_w + L * E,
                               w->v_norm1_b + L * E, N, e, 1e-6f);
    qwen2vl_linear_forward(ops, s->vqkv, s->vln, w->v_qkv_w + L * 3 * E * E,
                           w->v_qkv_b + L * 3 * E, N, e, 3 * e, 3 * e);
    ops_rope rope = { .kind = OPS_ROPE_VISION_2D, .head_dim = m->cfg.vision.head_dim,
                      .theta = (float)m->cfg.vision.rope_theta };
    ops->rope_forward_f32(s->vqkv, s->vpos, N, m->cfg.vision.num_heads, 3 * e, &rope);
    ops->rope_forward_f32(s->vqkv + E, s->vpos, N, m->cfg.vision.num_heads, 3 * e, &rope);
    ops->attention_forward_f32(s->vatt, s->vlse, s->vqkv, s->vqkv + E, s->vqkv + 2 * E, at);
    qwen2vl_linear_forward(ops, s->vtmp, s->vatt, w->v_proj_w + L * E * E, w->v_proj_b + L * E,
                           N, e, e, e);
    ops->add_f32(s->vx, s->vx, s->vtmp, (size_t)N * E);
    ops->layernorm_forward_f32(s->vln, s->vmean, s->vrstd, s->vx, w->v_norm2_w + L * E,
                               w->v_norm2_b + L * E, N, e, 1e-6f);
    qwen2vl_linear_forward(ops, s->vfc, s->vln, w->v_fc1_w + L * M * E, w->v_fc1_b + L * M, N, e,
                           mm, mm);
    ops->quickgelu_forward_f32(s->vact, s->vfc, (size_t)N * M);
    qwen2vl_linear_forward(ops, s->vtmp, s->vact, w->v_fc2_w + L * E * M, w->v_fc2_b + L * E, N,
                           mm, e, e);
    ops->add_f32(s->vx, s->vx, s->vtmp, (size_t)N * E);
}

int qwen2vl_infer_image(qwen2vl_model *m, qwen2vl_infer *s, const float *pixel_values,
                        const int grid_thw[3], float *features, adapt_error *err)
{
    const model_config_vision *v = &m->cfg.vision;
    int ms = v->spatial_merge_size, gh = grid_thw[1], gw = grid_thw[2];
    if (grid_thw[0] != 1)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "qwen2vl: image grid_t %d; only still images (grid_t 1) are implemented",
                          grid_thw[0]);
    if (gh < ms || gw < ms || gh % ms || gw % ms)
        return adapt_fail(err, ADAPT_EINVAL,
                          "qwen2vl: image grid %dx%d is not a multiple of the merge size %d", gh,
                          gw, ms);
    long n = (long)gh * gw;
    if (n > s->max_patches)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: image of %ld patches, the plan holds %d", n,
                          s->max_patches);
    int N = (int)n, j = 0;
    /* (h, w) of each patch in the processor's merge-major order, as the training step plans it */
    int *ph = s->vpos, *pw = s->vpos + N;
    for (int hb = 0; hb < gh / ms; hb++)
        for (int wb = 0; wb < gw / ms; wb++)
            for (int r = 0; r < ms; r++)
                for (int c = 0; c < ms; c++, j++) {
                    ph[j] = hb * ms + r;
                    pw[j] = wb * ms + c;
                }
    const ops_table *ops = m->ops;
    int E = v->embed_dim, P = v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    int C = E * ms * ms, G = N / (ms * ms), D = m->cfg.text.hidden_size;
    int cu[2] = { 0, N };
    ops_attn at = { .cu_seqlens = cu, .num_seqs = 1, .total_tokens = N, .max_seqlen = N,
                    .num_heads = v->num_heads, .num_kv_heads = v->num_heads,
                    .head_dim = v->head_dim, .ldq = 3 * E, .ldk = 3 * E, .ldv = 3 * E, .ldo = E,
                    .scale = 1.0f / sqrtf((float)v->head_dim), .causal = 0 };
    /* the Conv3d with stride = kernel is one product over flattened patches */
    qwen2vl_linear_forward(ops, s->vx, pixel_values, m->w.patch_embed, NULL, N, P, E, E);
    for (int l = 0; l < v->depth; l++) infer_vision_block(m, s, l, N, &at);
    /* the merger reads four consecutive LayerNorm rows as one [4E] row */
    ops->layernorm_forward_f32(s->vln, s->vmean, s->vrstd, s->vx, m->w.m_ln_w, m->w.m_ln_b, N, E,
                               1e-6f);
    qwen2vl_linear_forward(ops, s->mfc, s->vln, m->w.m_fc1_w, m->w.m_fc1_b, G, C, C, C);
    ops->gelu_forward_f32(s->mact, s->mfc, (size_t)G * C);
    qwen2vl_linear_forward(ops, features, s->mact, m->w.m_fc2_w, m->w.m_fc2_b, G, C, D, D);
    return 0;
}

/* ---- row-invariant products for decode steps ------------------------------------------------ */
/* y[r, j] = x[r] . w[j] (+ b[j]) where every (r, j) is one dot product whose operations do not
 * depend on how many rows the call holds: a decode step's logits then are the same bits for a
 * sequence alone or in any batch, which is what makes seeded sampling independent of the batch
 * (a BLAS product picks kernels and blockings by shape, so a row's bits would depend on its
 * neighbours). It is also the faster product at decode shapes: each weight row is read once
 * from memory and used for every batch row while it sits in L1. */
#if INFER_HAVE_AVX2_KERNEL
__attribute__((target("avx2,fma"))) static inline float infer_hsum(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* outputs [j0, j1) for every row; in a multiple of 8 (checked by the caller) */
__attribute__((target("avx2,fma"))) static void infer_rows_avx2(float *y, const float *x,
                                                                const float *w, int rows, int in,
                                                                int j0, int j1, int ldy)
{
    for (int j = j0; j < j1; j += 2) {
        int two = j + 1 < j1;
        const float *w0 = w + (size_t)j * in, *w1 = two ? w0 + in : w0;
        int r = 0;
        for (; r + 4 <= rows; r += 4) {
            const float *x0 = x + (size_t)r * in, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int k = 0; k < in; k += 8) {
                __m256 v0 = _mm256_loadu_ps(w0 + k), v1 = _mm256_loadu_ps(w1 + k);
                __m256 u0 = _mm256_loadu_ps(x0 + k), u1 = _mm256_loadu_ps(x1 + k);
                __m256 u2 = _mm256_loadu_ps(x2 + k), u3 = _mm256_loadu_ps(x3 + k);
                a0 = _mm256_fmadd_ps(v0, u0, a0);
                a1 = _mm256_fmadd_ps(v0, u1, a1);
                a2 = _mm256_fmadd_ps(v0, u2, a2);
                a3 = _mm256_fmadd_ps(v0, u3, a3);
                b0 = _mm256_fmadd_ps(v1, u0, b0);
                b1 = _mm256_fmadd_ps(v1, u1, b1);
                b2 = _mm256_fmadd_ps(v1, u2, b2);
                b3 = _mm256_fmadd_ps(v1, u3, b3);
            }
            float *yr = y + (size_t)r * ldy + j;
            yr[0] = infer_hsum(a0);
            yr[ldy] = infer_hsum(a1);
            yr[2 * (size_t)ldy] = infer_hsum(a2);
            yr[3 * (size_t)ldy] = infer_hsum(a3);
            if (two) {
                yr[1] = infer_hsum(b0);
                yr[ldy + 1] = infer_hsum(b1);
                yr[2 * (size_t)ldy + 1] = infer_hsum(b2);
                yr[3 * (size_t)ldy + 1] = infer_hsum(b3);
            }
        }
        for (; r < rows; r++) {
            const float *x0 = x + (size_t)r * in;
            __m256 a0 = _mm256_setzero_ps(), b0 = a0;
            for (int k = 0; k < in; k += 8) {
                __m256 u0 = _mm256_loadu_ps(x0 + k);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), u0, a0);
                b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), u0, b0);
            }
            y[(size_t)r * ldy + j] = infer_hsum(a0);
            if (two) y[(size_t)r * ldy + j + 1] = infer_hsum(b0);
        }
    }
}
#endif

/* the same contract on any CPU: eight running sums per dot product in a fixed order */
static void infer_rows_generic(float *y, const float *x, const float *w, int rows, int in, int j0,
                               int j1, int ldy)
{
    for (int j = j0; j < j1; j++) {
        const float *wj = w + (size_t)j * in;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * in;
            float acc[8] = {0};
            int k = 0;
            for (; k + 8 <= in; k += 8)
                for (int l = 0; l < 8; l++) acc[l] += wj[k + l] * xr[k + l];
            for (; k < in; k++) acc[k & 7] += wj[k] * xr[k];
            y[(size_t)r * ldy + j] = ((acc[0] + acc[4]) + (acc[2] + acc[6])) +
                                     ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        }
    }
}

static void infer_linear_rows(const qwen2vl_infer *s, float *y, const float *x, const float *w,
                              const float *b, int rows, int in, int out, int ldy)
{
    int avx2 = s->avx2 && in % 8 == 0;
    const int block = 32;
    int n_blocks = (out + block - 1) / block;
#pragma omp parallel for schedule(static) if ((double)rows * in * out > 65536.0)
    for (int bi = 0; bi < n_blocks; bi++) {
        int j0 = bi * block, j1 = j0 + block < out ? j0 + block : out;
#if INFER_HAVE_AVX2_KERNEL
        if (avx2) {
            infer_rows_avx2(y, x, w, rows, in, j0, j1, ldy);
            continue;
        }
#endif
        infer_rows_generic(y, x, w, rows, in, j0, j1, ldy);
    }
    (void)avx2;
    if (b)
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < out; j++) y[(size_t)r * ldy + j] += b[j];
}

/* A decode step's rows go through the row-invariant product, a prefill's through the op table's
 * matmul (BLAS is faster for many rows, and a prompt's prefill never depends on other prompts). */
static void infer_linear(const qwen2vl_model *m, const qwen2vl_infer *s, int invariant, float *y,
                         const float *x, const float *w, const float *b, int rows, int in, int out,
                         int ldy)
{
    if (invariant) infer_linear_rows(s, y, x, w, b, rows, in, out, ldy);
    else qwen2vl_linear_forward(m->ops, y, x, w, b, rows, in, out, ldy);
}

/* ---- decoder ------------------------------------------------------------------------------ */

static float *infer_kslot(const qwen2vl_infer *s, float *base, int l, int slot)
{
    return base + (((size_t)l * s->slots + slot) * s->capacity) * s->K;
}

/* The grp query heads q[0..grp) (hd floats apart) of one row that share one kv head:
 * softmax(scale q k^T) v over len cached positions (keys and values Kw floats apart), into
 * o[0..grp). The heads of a group go together so each cached key and value is read once for all
 * of them (the cache, not the weights, is most of a long decode step's memory traffic). Two passes
 * over the scores (max, then exp and sum); sc holds grp * len scores, then grp * hd sums. */
static inline __attribute__((always_inline)) void
infer_attend(float *o, const float *q, const float *kb, const float *vb, int len, int hd, int grp,
             int Kw, float scale, float *sc)
{
    float mx[INFER_MAX_HEADS_PER_KV], sum[INFER_MAX_HEADS_PER_KV];
    for (int g = 0; g < grp; g++) mx[g] = -INFINITY;
    /* four keys at a time: four independent sums per head instead of one dependent chain */
    int j = 0;
    for (; j + 4 <= len; j += 4) {
        const float *k0 = kb + (size_t)j * Kw, *k1 = k0 + Kw, *k2 = k1 + Kw, *k3 = k2 + Kw;
        for (int g = 0; g < grp; g++) {
            const float *qg = q + (size_t)g * hd;
            float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
            for (int c = 0; c < hd; c++) {
                d0 += qg[c] * k0[c];
                d1 += qg[c] * k1[c];
                d2 += qg[c] * k2[c];
                d3 += qg[c] * k3[c];
            }
            float *sg = sc + (size_t)g * len + j;
            sg[0] = d0 * scale;
            sg[1] = d1 * scale;
            sg[2] = d2 * scale;
            sg[3] = d3 * scale;
            for (int e = 0; e < 4; e++) if (sg[e] > mx[g]) mx[g] = sg[e];
        }
    }
    for (; j < len; j++) {
        const float *k = kb + (size_t)j * Kw;
        for (int g = 0; g < grp; g++) {
            const float *qg = q + (size_t)g * hd;
            float d = 0.0f;
#pragma omp simd reduction(+ : d)
            for (int c = 0; c < hd; c++) d += qg[c] * k[c];
            d *= scale;
            sc[(size_t)g * len + j] = d;
            if (d > mx[g]) mx[g] = d;
        }
    }
    for (int g = 0; g < grp; g++) {
        float *sg = sc + (size_t)g * len, t = 0.0f;
        for (int e = 0; e < len; e++) {
            sg[e] = expf(sg[e] - mx[g]);
            t += sg[e];
        }
        sum[g] = t;
    }
    float *acc = sc + (size_t)grp * len;
    memset(acc, 0, sizeof(float) * (size_t)grp * hd);
    j = 0;
    for (; j + 4 <= len; j += 4) {
        const float *v0 = vb + (size_t)j * Kw, *v1 = v0 + Kw, *v2 = v1 + Kw, *v3 = v2 + Kw;
        for (int g = 0; g < grp; g++) {
            const float *pg = sc + (size_t)g * len + j;
            float p0 = pg[0], p1 = pg[1], p2 = pg[2], p3 = pg[3], *ag = acc + (size_t)g * hd;
#pragma omp simd
            for (int c = 0; c < hd; c++) ag[c] += p0 * v0[c] + p1 * v1[c] + p2 * v2[c] + p3 * v3[c];
        }
    }
    for (; j < len; j++) {
        const float *vv = vb + (size_t)j * Kw;
        for (int g = 0; g < grp; g++) {
            float p = sc[(size_t)g * len + j], *ag = acc + (size_t)g * hd;
#pragma omp simd
            for (int c = 0; c < hd; c++) ag[c] += p * vv[c];
        }
    }
    for (int g = 0; g < grp; g++) {
        float inv = 1.0f / sum[g];
        for (int c = 0; c < hd; c++) o[(size_t)g * hd + c] = acc[(size_t)g * hd + c] * inv;
    }
}

#if INFER_HAVE_AVX2_KERNEL
/* the same code compiled for AVX2 + FMA (the build targets baseline x86-64) */
__attribute__((target("avx2,fma"))) static void
infer_attend_avx2(float *o, const float *q, const float *kb, const float *vb, int len, int hd,
                  int grp, int Kw, float scale, float *sc)
{
    infer_attend(o, q, kb, vb, len, hd, grp, Kw, scale, sc);
}
#endif

static void infer_attend_generic(float *o, const float *q, const float *kb, const float *vb,
                                 int len, int hd, int grp, int Kw, float scale, float *sc)
{
    infer_attend(o, q, kb, vb, len, hd, grp, Kw, scale, sc);
}

/* Every row and kv head (with its query heads) against its slot's cache [0, cache_pos]; each
 * (row, kv head) is computed alone, so a row's result never depends on the others. */
static void infer_attention(qwen2vl_infer *s, int l, const qwen2vl_rows *r)
{
    int n = r->n, KV = s->KV, hd = s->hd, grp = s->H / s->KV;
    float scale = 1.0f / sqrtf((float)hd);
    void (*attend)(float *, const float *, const float *, const float *, int, int, int, int,
                   float, float *) = infer_attend_generic;
#if INFER_HAVE_AVX2_KERNEL
    if (s->avx2) attend = infer_attend_avx2;
#endif
#pragma omp parallel for schedule(dynamic, 1) if ((long)n * KV > 1)
    for (int ih = 0; ih < n * KV; ih++) {
        int i = ih / KV, h = ih % KV;
#ifdef _OPENMP
        float *sc = s->scores + (size_t)omp_get_thread_num() * s->score_len;
#else
        float *sc = s->scores;
#endif
        size_t kvo = (size_t)h * hd, qo = (size_t)h * grp * hd;
        attend(s->att + (size_t)i * s->Q + qo, s->qkv + (size_t)i * s->W + qo,
               infer_kslot(s, s->kc, l, r->slot[i]) + kvo, infer_kslot(s, s->vc, l, r->slot[i]) + kvo,
               r->cache_pos[i] + 1, hd, grp, s->K, scale, sc);
    }
}

/* One decoder layer on the rows. On entry s->x holds the residual stream and, from layer 1 on,
 * s->tmp the previous layer's MLP output still to be added (the add is fused into the norm). */
static void infer_layer(const qwen2vl_model *m, qwen2vl_infer *s, int l, const qwen2vl_rows *r)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    size_t L = (size_t)l, D = (size_t)s->D, I = (size_t)s->I, Q = (size_t)s->Q, K = (size_t)s->K;
    int n = r->n, inv = r->row_invariant;
    float eps = (float)m->cfg.text.rms_norm_eps;
    ops->rmsnorm_forward_f32(s->ln, s->rstd, l ? s->x : NULL, l ? s->tmp : s->x,
                             w->in_norm + L * D, n, s->D, eps);
    infer_linear(m, s, inv, s->qkv, s->ln, w->q_w + L * Q * D, w->q_b + L * Q, n, s->D, s->Q,
                           s->W);
    infer_linear(m, s, inv, s->qkv + Q, s->ln, w->k_w + L * K * D, w->k_b + L * K, n, s->D,
                           s->K, s->W);
    infer_linear(m, s, inv, s->qkv + Q + K, s->ln, w->v_w + L * K * D, w->v_b + L * K, n,
                           s->D, s->K, s->W);
    ops_rope rope = { .kind = OPS_ROPE_MROPE, .head_dim = s->hd,
                      .theta = (float)m->cfg.text.rope_theta,
                      .mrope_section = { m->cfg.text.mrope_section[0],
                                         m->cfg.text.mrope_section[1],
                                         m->cfg.text.mrope_section[2] } };
    ops->rope_forward_f32(s->qkv, r->pos, n, s->H, s->W, &rope);
    ops->rope_forward_f32(s->qkv + Q, r->pos, n, s->KV, s->W, &rope);
    for (int i = 0; i < n; i++) {
        size_t at = (size_t)r->cache_pos[i] * K;
        memcpy(infer_kslot(s, s->kc, l, r->slot[i]) + at, s->qkv + (size_t)i * s->W + Q,
               K * sizeof(float));
        memcpy(infer_kslot(s, s->vc, l, r->slot[i]) + at, s->qkv + (size_t)i * s->W + Q + K,
               K * sizeof(float));
    }
    infer_attention(s, l, r);
    infer_linear(m, s, inv, s->tmp, s->att, w->o_w + L * D * Q, NULL, n, s->Q, s->D, s->D);
    ops->rmsnorm_forward_f32(s->ln, s->rstd, s->x, s->tmp, w->post_norm + L * D, n, s->D, eps);
    infer_linear(m, s, inv, s->gu, s->ln, w->gate_w + L * I * D, NULL, n, s->D, s->I,
                           2 * s->I);
    infer_linear(m, s, inv, s->gu + I, s->ln, w->up_w + L * I * D, NULL, n, s->D, s->I,
                           2 * s->I);
    ops->swiglu_forward_f32(s->act, s->gu, s->gu + I, n, s->I, 2 * s->I);
    infer_linear(m, s, inv, s->tmp, s->act, w->down_w + L * D * I, NULL, n, s->I, s->D, s->D);
}

static int infer_check_rows(const qwen2vl_model *m, const qwen2vl_infer *s, const qwen2vl_rows *r,
                            int *n_img, adapt_error *err)
{
    if (r->n < 1 || r->n > s->max_rows)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: step of %d rows, the plan holds 1..%d",
                          r->n, s->max_rows);
    if (r->n_logits < 0 || r->n_logits > r->n)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: %d logit rows of a %d-row step",
                          r->n_logits, r->n);
    int img = m->cfg.image_token_id, k = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->ids[i] < 0 || r->ids[i] >= s->V)
            return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: row %d: token id %d outside [0, %d)", i,
                              r->ids[i], s->V);
        if (r->slot[i] < 0 || r->slot[i] >= s->slots)
            return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: row %d: slot %d outside [0, %d)", i,
                              r->slot[i], s->slots);
        if (r->cache_pos[i] < 0 || r->cache_pos[i] >= s->capacity)
            return adapt_fail(err, ADAPT_ERANGE,
                              "qwen2vl: row %d: cache index %d outside [0, %d) (the planned "
                              "prompt + new tokens)", i, r->cache_pos[i], s->capacity);
        if (r->ids[i] == img) k++;
    }
    for (int i = 0; i < r->n_logits; i++)
        if (r->logit_rows[i] < 0 || r->logit_rows[i] >= r->n)
            return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: logit row %d outside [0, %d)",
                              r->logit_rows[i], r->n);
    if (k && !r->image_features)
        return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: %d image-token rows and no image features",
                          k);
    *n_img = k;
    return 0;
}

int qwen2vl_infer_step(qwen2vl_model *m, qwen2vl_infer *s, const qwen2vl_rows *r, float *logits,
                       adapt_error *err)
{
    int n_img = 0;
    int rc = infer_check_rows(m, s, r, &n_img, err);
    if (rc) return rc;
    const ops_table *ops = m->ops;
    int n = r->n, D = s->D;
    ops->embedding_forward_f32(s->x, m->w.embed, r->ids, n, D);
    if (n_img) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (r->ids[i] == m->cfg.image_token_id) s->img_rows[k++] = i;
        ops->scatter_rows_forward_f32(s->x, r->image_features, s->img_rows, n_img, D);
    }
    for (int l = 0; l < s->L; l++) infer_layer(m, s, l, r);
    if (!r->n_logits) return 0;
    /* the last MLP's add, then the final norm on the rows that want logits only */
    ops->add_f32(s->x, s->x, s->tmp, (size_t)n * D);
    for (int i = 0; i < r->n_logits; i++)
        memcpy(s->ln + (size_t)i * D, s->x + (size_t)r->logit_rows[i] * D, sizeof(float) * D);
    ops->rmsnorm_forward_f32(s->hf, s->rstd, NULL, s->ln, m->w.norm, r->n_logits, D,
                             (float)m->cfg.text.rms_norm_eps);
    infer_linear(m, s, r->row_invariant, logits, s->hf, m->w.lm_head, NULL, r->n_logits, D, s->V,
                 s->V);
    return 0;
}
