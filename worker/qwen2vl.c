/* qwen2vl: the parameter layout, lifecycle, activation plan and Linear helpers; see qwen2vl.h.
 *
 * The one idea: one table of fields (which params slot, which transformers name, which tower,
 * which shape, how many layers) drives everything that must agree on the layout: the offsets of
 * the pointer struct, the tensor names for load and save, the per-tower counts and the init. */
#include "qwen2vl_internal.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FIELD_MATRIX = 1, FIELD_NORM = 2, FIELD_BIAS = 3 };

/* One field of qwen2vl_params: `layers` stacked tensors of shape dims[0..ndim). */
typedef struct qwen2vl_field {
    size_t        slot;         /* offsetof(qwen2vl_params, ...) */
    const char   *name;         /* printf pattern, %d = layer when layers > 0 */
    qwen2vl_tower tower;
    int           kind;
    int           layers;       /* 0: a single tensor */
    int           ndim;
    int64_t       dims[5];
} qwen2vl_field;

/* The names save_pretrained writes (transformers 5.x maps its modules model.visual.* and
 * model.language_model.* back to these on save, for the published checkpoints' sake). */
#define VIS "visual."
#define LMP "model."
#define SLOT(f) offsetof(qwen2vl_params, f)

/* The fields of cfg in buffer order; returns their count. */
static int fields_build(const model_config *cfg, qwen2vl_field *f)
{
    const model_config_vision *v = &cfg->vision;
    const model_config_text *t = &cfg->text;
    int64_t E = v->embed_dim, M = v->mlp_dim, Lv = v->depth;
    int64_t C = E * v->spatial_merge_size * v->spatial_merge_size;
    int64_t D = t->hidden_size, I = t->intermediate_size, V = t->vocab_size, L = t->num_hidden_layers;
    int64_t Q = (int64_t)t->num_attention_heads * t->head_dim;
    int64_t K = (int64_t)t->num_key_value_heads * t->head_dim;
    const qwen2vl_tower VT = QWEN2VL_TOWER_VISION, MT = QWEN2VL_TOWER_MERGER, LT = QWEN2VL_TOWER_LLM;
    int n = 0;
#define F(s, nm, tw, kd, ly, nd, ...) \
    f[n++] = (qwen2vl_field){ SLOT(s), nm, tw, kd, (int)(ly), nd, { __VA_ARGS__ } }
    F(patch_embed, VIS "patch_embed.proj.weight", VT, FIELD_MATRIX, 0, 5, E, v->in_channels,
      v->temporal_patch_size, v->patch_size, v->patch_size);
    F(v_norm1_w, VIS "blocks.%d.norm1.weight",    VT, FIELD_NORM,   Lv, 1, E);
    F(v_norm1_b, VIS "blocks.%d.norm1.bias",      VT, FIELD_BIAS,   Lv, 1, E);
    F(v_qkv_w,   VIS "blocks.%d.attn.qkv.weight", VT, FIELD_MATRIX, Lv, 2, 3 * E, E);
    F(v_qkv_b,   VIS "blocks.%d.attn.qkv.bias",   VT, FIELD_BIAS,   Lv, 1, 3 * E);
    F(v_proj_w,  VIS "blocks.%d.attn.proj.weight", VT, FIELD_MATRIX, Lv, 2, E, E);
    F(v_proj_b,  VIS "blocks.%d.attn.proj.bias",  VT, FIELD_BIAS,   Lv, 1, E);
    F(v_norm2_w, VIS "blocks.%d.norm2.weight",    VT, FIELD_NORM,   Lv, 1, E);
    F(v_norm2_b, VIS "blocks.%d.norm2.bias",      VT, FIELD_BIAS,   Lv, 1, E);
    F(v_fc1_w,   VIS "blocks.%d.mlp.fc1.weight",  VT, FIELD_MATRIX, Lv, 2, M, E);
    F(v_fc1_b,   VIS "blocks.%d.mlp.fc1.bias",    VT, FIELD_BIAS,   Lv, 1, M);
    F(v_fc2_w,   VIS "blocks.%d.mlp.fc2.weight",  VT, FIELD_MATRIX, Lv, 2, E, M);
    F(v_fc2_b,   VIS "blocks.%d.mlp.fc2.bias",    VT, FIELD_BIAS,   Lv, 1, E);
    F(m_ln_w,    VIS "merger.ln_q.weight",        MT, FIELD_NORM,   0, 1, E);
    F(m_ln_b,    VIS "merger.ln_q.bias",          MT, FIELD_BIAS,   0, 1, E);
    F(m_fc1_w,   VIS "merger.mlp.0.weight",       MT, FIELD_MATRIX, 0, 2, C, C);
    F(m_fc1_b,   VIS "merger.mlp.0.bias",         MT, FIELD_BIAS,   0, 1, C);
    F(m_fc2_w,   VIS "merger.mlp.2.weight",       MT, FIELD_MATRIX, 0, 2, D, C);
    F(m_fc2_b,   VIS "merger.mlp.2.bias",         MT, FIELD_BIAS,   0, 1, D);
    F(embed,     LMP "embed_tokens.weight",       LT, FIELD_MATRIX, 0, 2, V, D);
    F(in_norm,   LMP "layers.%d.input_layernorm.weight", LT, FIELD_NORM, L, 1, D);
    F(q_w,       LMP "layers.%d.self_attn.q_proj.weight", LT, FIELD_MATRIX, L, 2, Q, D);
    F(q_b,       LMP "layers.%d.self_attn.q_proj.bias",   LT, FIELD_BIAS,   L, 1, Q);
    F(k_w,       LMP "layers.%d.self_attn.k_proj.weight", LT, FIELD_MATRIX, L, 2, K, D);
    F(k_b,       LMP "layers.%d.self_attn.k_proj.bias",   LT, FIELD_BIAS,   L, 1, K);
    F(v_w,       LMP "layers.%d.self_attn.v_proj.weight", LT, FIELD_MATRIX, L, 2, K, D);
    F(v_b,       LMP "layers.%d.self_attn.v_proj.bias",   LT, FIELD_BIAS,   L, 1, K);
    F(o_w,       LMP "layers.%d.self_attn.o_proj.weight", LT, FIELD_MATRIX, L, 2, D, Q);
    F(post_norm, LMP "layers.%d.post_attention_layernorm.weight", LT, FIELD_NORM, L, 1, D);
    F(gate_w,    LMP "layers.%d.mlp.gate_proj.weight", LT, FIELD_MATRIX, L, 2, I, D);
    F(up_w,      LMP "layers.%d.mlp.up_proj.weight",   LT, FIELD_MATRIX, L, 2, I, D);
    F(down_w,    LMP "layers.%d.mlp.down_proj.weight", LT, FIELD_MATRIX, L, 2, D, I);
    F(norm,      LMP "norm.weight",               LT, FIELD_NORM,   0, 1, D);
    if (!cfg->tie_word_embeddings)
        F(lm_head, "lm_head.weight",              LT, FIELD_MATRIX, 0, 2, V, D);
#undef F
    return n;
}

enum { MAX_FIELDS = 40 };

static size_t field_numel(const qwen2vl_field *f)
{
    size_t n = 1;
    for (int d = 0; d < f->ndim; d++) n *= (size_t)f->dims[d];
    return n;
}

int qwen2vl_layout(const model_config *cfg, qwen2vl_tensor **out, size_t *n_tensors,
                   size_t tower_params[QWEN2VL_TOWER_COUNT], adapt_error *err)
{
    qwen2vl_field f[MAX_FIELDS];
    int nf = fields_build(cfg, f);
    size_t count = 0;
    for (int i = 0; i < nf; i++) count += f[i].layers ? (size_t)f[i].layers : 1;
    qwen2vl_tensor *t = calloc(count ? count : 1, sizeof *t);
    if (!t) return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory for %zu tensors", count);
    for (int k = 0; k < QWEN2VL_TOWER_COUNT; k++) tower_params[k] = 0;
    size_t off = 0, j = 0;
    for (int i = 0; i < nf; i++) {
        size_t numel = field_numel(&f[i]);
        int reps = f[i].layers ? f[i].layers : 1;
        for (int l = 0; l < reps; l++, j++) {
            snprintf(t[j].name, sizeof t[j].name, f[i].name, l);
            t[j].offset = off;
            t[j].numel = numel;
            t[j].ndim = f[i].ndim;
            memcpy(t[j].shape, f[i].dims, sizeof t[j].shape);
            t[j].tower = f[i].tower;
            t[j].is_matrix = f[i].kind == FIELD_MATRIX;
            t[j].is_norm = f[i].kind == FIELD_NORM;
            off += numel;
            tower_params[f[i].tower] += numel;
        }
    }
    *out = t;
    *n_tensors = count;
    return 0;
}

/* Points every slot of p into base, in field order (the same order qwen2vl_layout lays out). */
static void params_point(qwen2vl_params *p, const model_config *cfg, float *base)
{
    qwen2vl_field f[MAX_FIELDS];
    int nf = fields_build(cfg, f);
    size_t off = 0;
    memset(p, 0, sizeof *p);
    for (int i = 0; i < nf; i++) {
        *(float **)((char *)p + f[i].slot) = base + off;
        off += field_numel(&f[i]) * (size_t)(f[i].layers ? f[i].layers : 1);
    }
    if (cfg->tie_word_embeddings) p->lm_head = p->embed;
}

/* A bump allocator over a block that may not exist yet (base NULL: count only), in bytes, so
 * fp32 statistics and bf16 activations share one block. */
typedef struct carver {
    char   *base;
    size_t  used;     /* bytes */
    size_t  es;       /* bytes of a stored activation element: 4 or 2 */
    int    *ibase;
    size_t  iused;
} carver;

static void *carve_bytes(carver *c, size_t bytes)
{
    void *p = c->base ? c->base + c->used : NULL;
    c->used += (bytes + 63) & ~(size_t)63;  /* 64-byte steps keep every buffer aligned for SIMD */
    return p;
}

/* n fp32 floats (statistics, lse, the loss and its scratch, staged pixels) */
static float *carve(carver *c, size_t n) { return carve_bytes(c, n * sizeof(float)); }

/* n stored activation elements, at the model's precision */
static qwen2vl_tx *carve_x(carver *c, size_t n) { return carve_bytes(c, n * c->es); }

static int *carve_int(carver *c, size_t n)
{
    int *p = c->ibase ? c->ibase + c->iused : NULL;
    c->iused += (n + 15) & ~(size_t)15;
    return p;
}

size_t qwen2vl_acts_plan(qwen2vl_acts *a, const model_config *cfg, const qwen2vl_budget *b,
                         size_t loss_work_len, int staging, void *base, int *ibase,
                         size_t *n_ints)
{
    const model_config_vision *v = &cfg->vision;
    const model_config_text *t = &cfg->text;
    size_t N = (size_t)b->max_patches, T = (size_t)b->max_tokens;
    size_t ms = (size_t)v->spatial_merge_size * v->spatial_merge_size;
    size_t G = N / ms, E = v->embed_dim, M = v->mlp_dim, Lv = v->depth, Hv = v->num_heads;
    size_t C = E * ms, D = t->hidden_size, I = t->intermediate_size, L = t->num_hidden_layers;
    size_t H = t->num_attention_heads, Q = H * t->head_dim;
    size_t K = (size_t)t->num_key_value_heads * t->head_dim, W = Q + 2 * K;
    size_t P = (size_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    int bf16 = b->precision == QWEN2VL_BF16;
    carver c = { base, 0, bf16 ? sizeof(ops_bf16) : sizeof(float), ibase, 0 };
    a->v_x = carve_x(&c, (Lv + 1) * N * E);
    a->v_ln1 = carve_x(&c, Lv * N * E);
    a->v_mean1 = carve(&c, Lv * N);
    a->v_rstd1 = carve(&c, Lv * N);
    a->v_qkv = carve_x(&c, Lv * N * 3 * E);
    a->v_att = carve_x(&c, Lv * N * E);
    a->v_lse = carve(&c, Lv * N * Hv);
    a->v_mid = carve_x(&c, Lv * N * E);
    a->v_ln2 = carve_x(&c, Lv * N * E);
    a->v_mean2 = carve(&c, Lv * N);
    a->v_rstd2 = carve(&c, Lv * N);
    a->v_fc1 = carve_x(&c, Lv * N * M);
    a->v_act = carve_x(&c, Lv * N * M);
    a->m_ln = carve_x(&c, N * E);
    a->m_mean = carve(&c, N);
    a->m_rstd = carve(&c, N);
    a->m_fc1 = carve_x(&c, G * C);
    a->m_act = carve_x(&c, G * C);
    a->m_out = carve_x(&c, G * D);
    a->x = carve_x(&c, (L + 1) * T * D);
    a->ln1 = carve_x(&c, L * T * D);
    a->rstd1 = carve(&c, L * T);
    a->qkv = carve_x(&c, L * T * W);
    a->att = carve_x(&c, L * T * Q);
    a->lse = carve(&c, L * T * H);
    a->mid = carve_x(&c, L * T * D);
    a->ln2 = carve_x(&c, L * T * D);
    a->rstd2 = carve(&c, L * T);
    a->gu = carve_x(&c, L * T * 2 * I);
    a->act = carve_x(&c, L * T * I);
    a->hf = carve_x(&c, T * D);
    a->rstdf = carve(&c, T);
    a->d_res = carve_x(&c, T * D);
    a->d_ln = carve_x(&c, T * D);
    a->d_qkv = carve_x(&c, T * W);
    a->d_att = carve_x(&c, T * Q);
    a->d_gu = carve_x(&c, T * 2 * I);
    a->d_act = carve_x(&c, T * I);
    a->dv_res = carve_x(&c, N * E);
    a->dv_ln = carve_x(&c, N * E);
    a->dv_qkv = carve_x(&c, N * 3 * E);
    a->dv_att = carve_x(&c, N * E);
    a->dv_fc1 = carve_x(&c, N * M);
    a->dv_act = carve_x(&c, N * M);
    a->dm_out = carve_x(&c, G * D);
    a->dm_act = carve_x(&c, G * C);
    a->dm_fc1 = carve_x(&c, G * C);
    a->att_keep = carve_x(&c, T * Q);
    a->d_keep = carve_x(&c, T * D);
    a->loss_work = carve(&c, loss_work_len);
    a->loss = carve(&c, 1);
    a->loss_slots = carve(&c, QWEN2VL_LOSS_SLOTS);
    a->pixels = staging ? carve(&c, N * P) : NULL;
    a->v_pix = bf16 ? carve_x(&c, N * P) : NULL;
    qwen2vl_ints *i = &a->i;
    i->v_pos = carve_int(&c, 2 * N);
    i->v_cu = carve_int(&c, (size_t)b->max_images + 1);
    i->pos = carve_int(&c, 3 * T);
    i->targets = carve_int(&c, T);
    i->img_pos = carve_int(&c, T);
    i->cu = carve_int(&c, (size_t)b->max_seqs + 1);
    i->keep = carve_int(&c, T);
    i->keep_targets = carve_int(&c, T);
    i->ids = staging ? carve_int(&c, T) : NULL;
    *n_ints = c.iused;
    return c.used;
}

/* Enough scratch for the fused LM head to compute each row chunk's logits once, at its full
 * chunk of 256 rows (loss_cpu.c's XENT_ROWS). */
static size_t loss_work_len_for(const model_config *cfg)
{
    return 256 * (2 * (size_t)cfg->text.hidden_size + 3 + (size_t)cfg->text.vocab_size);
}

size_t qwen2vl_activation_bytes(const model_config *cfg, const qwen2vl_budget *budget)
{
    qwen2vl_acts a;
    size_t n_ints;
    size_t n = qwen2vl_acts_plan(&a, cfg, budget, loss_work_len_for(cfg), 0, NULL, NULL, &n_ints);
    return n + n_ints * sizeof(int);
}

size_t qwen2vl_activation_floats(const model_config *cfg, const qwen2vl_budget *budget)
{
    return (qwen2vl_activation_bytes(cfg, budget) + sizeof(float) - 1) / sizeof(float);
}

/* b NULL: an inference-only model, which plans no activations and so has no budget to check. */
static int config_check(const model_config *cfg, const qwen2vl_budget *b, adapt_error *err)
{
    const model_config_vision *v = &cfg->vision;
    const model_config_text *t = &cfg->text;
    if (t->head_dim > OPS_ATTN_MAX_HEAD_DIM || v->head_dim > OPS_ATTN_MAX_HEAD_DIM)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "qwen2vl: head_dim %d / vision head_dim %d over the op limit %d",
                          t->head_dim, v->head_dim, OPS_ATTN_MAX_HEAD_DIM);
    if (v->head_dim % 4 || t->head_dim % 2)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "qwen2vl: vision head_dim %d must be a multiple of 4, text head_dim %d even",
                          v->head_dim, t->head_dim);
    if (t->mrope_section[0] + t->mrope_section[1] + t->mrope_section[2] != t->head_dim / 2)
        return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: mrope_section sums to %d, not head_dim/2 = %d",
                          t->mrope_section[0] + t->mrope_section[1] + t->mrope_section[2],
                          t->head_dim / 2);
    if (v->out_hidden_size != t->hidden_size)
        return adapt_fail(err, ADAPT_EINVAL,
                          "qwen2vl: vision_config.hidden_size %d != the LM's hidden_size %d",
                          v->out_hidden_size, t->hidden_size);
    if (b && (b->max_tokens < 1 || b->max_patches < 0 || b->max_seqs < 1 || b->max_images < 0))
        return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: budget needs max_tokens >= 1, max_seqs >= 1");
    if (b && b->precision != QWEN2VL_FP32 && b->precision != QWEN2VL_BF16)
        return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: budget precision %d is neither fp32 (0) nor "
                          "bf16 (1)", (int)b->precision);
    return 0;
}

/* Every bf16 entry the passes call: a table that lacks one cannot run the mixed model. */
static int bf16_check(const ops_table *ops, adapt_error *err)
{
#define NEED(e) { #e, (const void *)ops->e }
    const struct { const char *name; const void *fn; } need[] = {
        NEED(f32_to_bf16), NEED(add_bf16), NEED(fill_bf16), NEED(matmul_bf16),
        NEED(matmul_bf16_f32out), NEED(bias_backward_bf16), NEED(embedding_forward_bf16),
        NEED(embedding_backward_bf16), NEED(scatter_rows_forward_bf16),
        NEED(scatter_rows_backward_bf16), NEED(layernorm_forward_bf16),
        NEED(layernorm_backward_bf16), NEED(rmsnorm_forward_bf16), NEED(rmsnorm_backward_bf16),
        NEED(rope_forward_bf16), NEED(rope_backward_bf16), NEED(attention_forward_bf16),
        NEED(attention_backward_bf16), NEED(swiglu_forward_bf16), NEED(swiglu_backward_bf16),
        NEED(quickgelu_forward_bf16), NEED(quickgelu_backward_bf16), NEED(gelu_forward_bf16),
        NEED(gelu_backward_bf16), NEED(lmhead_xent_bf16),
    };
#undef NEED
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!need[i].fn)
            return adapt_fail(err, ADAPT_EUNSUPPORTED,
                              "qwen2vl: backend '%s' lacks the op %s of the bf16 model; create "
                              "it with precision fp32", ops->backend, need[i].name);
    return 0;
}

/* budget NULL: weights only (qwen2vl_create_inference); the gradient buffer and the activation
 * plan stay NULL, and the entry points that would touch them check m->inference first. */
/* A buffer of n floats of backend memory, zeroed (mem_alloc's promise). */
static float *mem_floats(const ops_table *ops, size_t n)
{
    return ops->mem_alloc(n * sizeof(float));
}

static void mem_release(const ops_table *ops, void *p)
{
    if (p && ops->mem_free) ops->mem_free(p);
}

/* Generation (worker/qwen2vl_decode.c, worker/generate.c) reads its KV cache and scratch on the
 * host: it needs a backend whose memory the host may touch. */
int qwen2vl_require_host_backend(const ops_table *ops, const char *what, adapt_error *err)
{
    if (ops->host_accessible) return 0;
    return adapt_fail(err, ADAPT_EUNSUPPORTED,
                      "qwen2vl: %s needs a host-accessible backend and backend '%s' is not one "
                      "(generation's KV cache and cached attention run on the host; use the cpu "
                      "backend)", what, ops->backend);
}

static int model_create(qwen2vl_model **out, const model_config *cfg, const qwen2vl_budget *budget,
                        const ops_table *ops, adapt_error *err)
{
    *out = NULL;
    int rc = config_check(cfg, budget, err);
    if (rc) return rc;
    if (!ops->mem_alloc || !ops->mem_upload || !ops->mem_download)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "qwen2vl: backend '%s' has no memory entries (mem_alloc, mem_upload, "
                          "mem_download)", ops->backend);
    qwen2vl_model *m = calloc(1, sizeof *m);
    if (!m) return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory");
    m->cfg = *cfg;
    m->ops = ops;
    m->inference = budget == NULL;
    if (budget) m->budget = *budget;
    rc = qwen2vl_layout(cfg, &m->tensors, &m->n_tensors, m->tower_params, err);
    if (rc) { free(m); return rc; }
    for (int k = 0; k < QWEN2VL_TOWER_COUNT; k++) m->n_params += m->tower_params[k];
    size_t nb = qwen2vl_buffer_floats(m);
    m->param_mem = mem_floats(ops, nb);
    if (!m->param_mem) {
        qwen2vl_free(m);
        return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of %s memory for %zu parameters",
                          ops->backend, m->n_params);
    }
    m->resident_bytes = nb * sizeof(float);
    params_point(&m->w, cfg, m->param_mem);
    if (m->inference) {
        *out = m;
        return 0;
    }
    m->loss_work_len = loss_work_len_for(cfg);
    m->bf16 = budget->precision == QWEN2VL_BF16;
    m->es = m->bf16 ? sizeof(ops_bf16) : sizeof(float);
    if (m->bf16 && (rc = bf16_check(ops, err))) {
        qwen2vl_free(m);
        return rc;
    }
    /* a backend the host cannot touch gets the batch through staging buffers of its own */
    int staging = !ops->host_accessible;
    size_t n_ints;
    size_t act_bytes = qwen2vl_acts_plan(&m->a, cfg, budget, m->loss_work_len, staging, NULL, NULL,
                                         &n_ints);
    m->n_ints = n_ints;
    m->grad_mem = mem_floats(ops, nb);
    m->act_mem = ops->mem_alloc(act_bytes);
    m->act_ints = ops->mem_alloc(n_ints * sizeof(int));
    if (m->bf16) m->p16 = ops->mem_alloc(nb * sizeof(ops_bf16));
    if (staging) m->host_ints = calloc(n_ints ? n_ints : 1, sizeof(int));
    if (!m->grad_mem || !m->act_mem || !m->act_ints || (m->bf16 && !m->p16) ||
        (staging && !m->host_ints)) {
        qwen2vl_free(m);
        return adapt_fail(err, ADAPT_ENOMEM,
                          "qwen2vl: out of %s memory for %zu parameters and %zu activation bytes "
                          "(lower the token budget)", ops->backend, m->n_params, act_bytes);
    }
    m->resident_bytes += nb * sizeof(float) + act_bytes + n_ints * sizeof(int) +
                         (m->bf16 ? nb * sizeof(ops_bf16) : 0);
    /* graphs pay where a launch costs host time (a GPU); ADAPT_GRAPHS overrides, for tests */
    const char *env = getenv("ADAPT_GRAPHS");
    qwen2vl_graph_policy policy = !strcmp(ops->backend, "cuda") ? QWEN2VL_GRAPHS_ON_REPEAT
                                                                 : QWEN2VL_GRAPHS_OFF;
    if (env && *env)
        policy = !strcmp(env, "repeat") ? QWEN2VL_GRAPHS_ON_REPEAT
               : strcmp(env, "0") != 0  ? QWEN2VL_GRAPHS_ALWAYS
                                        : QWEN2VL_GRAPHS_OFF;
    qwen2vl_set_graphs(m, policy);
    qwen2vl_acts_plan(&m->a, cfg, budget, m->loss_work_len, staging, m->act_mem, m->act_ints,
                      &n_ints);
    /* the host mirror: the same int carving over host memory (on a host_accessible backend the
     * block itself, so planning writes straight where the ops read and nothing is uploaded) */
    qwen2vl_acts mirror;
    qwen2vl_acts_plan(&mirror, cfg, budget, m->loss_work_len, staging, NULL,
                      staging ? m->host_ints : m->act_ints, &n_ints);
    m->hi = mirror.i;
    params_point(&m->g, cfg, m->grad_mem);
    *out = m;
    return 0;
}

int qwen2vl_create(qwen2vl_model **out, const model_config *cfg, const qwen2vl_budget *budget,
                   const ops_table *ops, adapt_error *err)
{
    *out = NULL;
    if (!budget) return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: qwen2vl_create needs a budget");
    return model_create(out, cfg, budget, ops, err);
}

int qwen2vl_create_inference(qwen2vl_model **out, const model_config *cfg, const ops_table *ops,
                             adapt_error *err)
{
    *out = NULL;
    int rc = qwen2vl_require_host_backend(ops, "an inference-only model", err);
    if (rc) return rc;
    return model_create(out, cfg, NULL, ops, err);
}

void qwen2vl_free(qwen2vl_model *m)
{
    if (!m) return;
    free(m->tensors);
    mem_release(m->ops, m->param_mem);
    mem_release(m->ops, m->grad_mem);
    mem_release(m->ops, m->act_mem);
    mem_release(m->ops, m->act_ints);
    mem_release(m->ops, m->p16);
    for (int i = 0; i < QWEN2VL_GRAPHS; i++)
        if (m->graphs[i].graph) m->ops->graph_free(m->graphs[i].graph);
    free(m->host_ints);
    free(m);
}

const model_config *qwen2vl_config(const qwen2vl_model *m) { return &m->cfg; }
qwen2vl_params *qwen2vl_weights(qwen2vl_model *m) { return &m->w; }
qwen2vl_params *qwen2vl_grads(qwen2vl_model *m) { return m->inference ? NULL : &m->g; }
float *qwen2vl_param_buffer(qwen2vl_model *m) { return m->param_mem; }
float *qwen2vl_grad_buffer(qwen2vl_model *m) { return m->grad_mem; }
size_t qwen2vl_num_params(const qwen2vl_model *m) { return m->n_params; }
size_t qwen2vl_num_tensors(const qwen2vl_model *m) { return m->n_tensors; }
int qwen2vl_is_inference(const qwen2vl_model *m) { return m->inference; }
size_t qwen2vl_resident_bytes(const qwen2vl_model *m) { return m->resident_bytes; }
const ops_table *qwen2vl_ops(const qwen2vl_model *m) { return m->ops; }
size_t qwen2vl_buffer_floats(const qwen2vl_model *m) { return m->n_params + QWEN2VL_BUFFER_SLACK; }
qwen2vl_precision qwen2vl_get_precision(const qwen2vl_model *m)
{
    return m->bf16 ? QWEN2VL_BF16 : QWEN2VL_FP32;
}

ops_bf16 *qwen2vl_param_buffer_bf16(qwen2vl_model *m) { return m->p16; }

/* The whole buffer, slack included: ZeRO-1's shards reach into it, and rounding zeros is cheap. */
void qwen2vl_weights_changed(qwen2vl_model *m)
{
    if (m->bf16) m->ops->f32_to_bf16(m->p16, m->param_mem, qwen2vl_buffer_floats(m));
}

/* The buffer a copy addresses; NULL for the gradients of an inference model. */
static float *copy_buffer(const qwen2vl_model *m, int grads, size_t offset, size_t n)
{
    assert(offset <= qwen2vl_buffer_floats(m) && n <= qwen2vl_buffer_floats(m) - offset);
    return grads ? m->grad_mem : m->param_mem;
}

void qwen2vl_copy_out(const qwen2vl_model *m, int grads, size_t offset, size_t n, float *host)
{
    const float *buf = copy_buffer(m, grads, offset, n);
    if (buf && n) m->ops->mem_download(host, buf + offset, n * sizeof(float));
}

void qwen2vl_copy_in(qwen2vl_model *m, int grads, size_t offset, size_t n, const float *host)
{
    float *buf = copy_buffer(m, grads, offset, n);
    if (buf && n) m->ops->mem_upload(buf + offset, host, n * sizeof(float));
    /* the working copy follows the range that changed (not the whole buffer: callers copy in
     * tensor by tensor) */
    if (!grads && n && m->bf16) m->ops->f32_to_bf16(m->p16 + offset, m->param_mem + offset, n);
}

const qwen2vl_tensor *qwen2vl_tensor_at(const qwen2vl_model *m, size_t i)
{
    return i < m->n_tensors ? &m->tensors[i] : NULL;
}

int qwen2vl_set_frozen(qwen2vl_model *m, qwen2vl_tower tower, int frozen, adapt_error *err)
{
    if (tower != QWEN2VL_TOWER_VISION && tower != QWEN2VL_TOWER_MERGER)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "qwen2vl: only the vision tower and the merger can be frozen");
    m->frozen[tower] = frozen != 0;
    return 0;
}

void qwen2vl_zero_grads(qwen2vl_model *m)
{
    if (m->inference) return;   /* no gradients to zero; forward_backward refuses this model */
    m->ops->fill_f32(m->grad_mem, 0.0f, m->n_params);
    m->n_loss_slots = 0;   /* a new step's losses */
    m->loss_folded = 0.0;
}

void qwen2vl_linear_forward(const ops_table *ops, float *y, const float *x, const float *w,
                            const float *b, int rows, int in, int out, int ldy)
{
    ops->matmul_f32(y, x, w, rows, out, in, 0, 1, in, in, ldy, 1.0f, 0.0f);
    if (b) ops->bias_add_f32(y, b, rows, out, ldy);
}

void qwen2vl_linear_backward(const ops_table *ops, float *dx, float *dw, float *db,
                             const float *dy, const float *x, const float *w, int rows, int in,
                             int out, int ldy, float dx_beta)
{
    if (dx) ops->matmul_f32(dx, dy, w, rows, in, out, 0, 0, ldy, in, in, 1.0f, dx_beta);
    if (dw) ops->matmul_f32(dw, dy, x, out, in, rows, 1, 0, ldy, in, in, 1.0f, 1.0f);
    if (db) ops->bias_backward_f32(db, dy, rows, out, ldy);
}

/* ---- the mixed-precision op layer (qwen2vl_internal.h) --------------------------------------
 * F(p) / B(p): a stored tensor as the fp32 / bf16 entries take it. */
#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))
#define B(p) ((ops_bf16 *)(p))
#define CB(p) ((const ops_bf16 *)(p))

void mp_linear_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *x,
                       const qwen2vl_tx *w, const qwen2vl_tx *b, int rows, int in, int out,
                       int ldy)
{
    if (!m->bf16) {
        qwen2vl_linear_forward(m->ops, F(y), CF(x), CF(w), CF(b), rows, in, out, ldy);
        return;
    }
    /* the bias joins the product before its one rounding (cuBLASLt's bias epilogue) */
    m->ops->matmul_bf16(B(y), CB(x), CB(w), rows, out, in, 0, 1, in, in, ldy, 1.0f, 0.0f, CB(b));
}

void mp_linear_backward(const qwen2vl_model *m, qwen2vl_tx *dx, float *dw, float *db,
                        const qwen2vl_tx *dy, const qwen2vl_tx *x, const qwen2vl_tx *w, int rows,
                        int in, int out, int ldy, float dx_beta)
{
    const ops_table *ops = m->ops;
    if (!m->bf16) {
        qwen2vl_linear_backward(ops, F(dx), dw, db, CF(dy), CF(x), CF(w), rows, in, out, ldy,
                                dx_beta);
        return;
    }
    if (dx)
        ops->matmul_bf16(B(dx), CB(dy), CB(w), rows, in, out, 0, 0, ldy, in, in, 1.0f, dx_beta,
                         NULL);
    if (dw)
        ops->matmul_bf16_f32out(dw, CB(dy), CB(x), out, in, rows, 1, 0, ldy, in, in, 1.0f, 1.0f);
    if (db) ops->bias_backward_bf16(db, CB(dy), rows, out, ldy);
}

void mp_add(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *a, const qwen2vl_tx *b,
            size_t n)
{
    if (m->bf16) m->ops->add_bf16(B(y), CB(a), CB(b), n);
    else m->ops->add_f32(F(y), CF(a), CF(b), n);
}

void mp_zero(const qwen2vl_model *m, qwen2vl_tx *y, size_t n)
{
    if (m->bf16) m->ops->fill_bf16(B(y), 0.0f, n);
    else m->ops->fill_f32(F(y), 0.0f, n);
}

void mp_gather(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *w, const int *ids, int T,
               int d)
{
    if (m->bf16) m->ops->embedding_forward_bf16(B(y), CB(w), ids, T, d);
    else m->ops->embedding_forward_f32(F(y), CF(w), ids, T, d);
}

void mp_embedding_backward(const qwen2vl_model *m, float *dw, const qwen2vl_tx *dy, const int *ids,
                           int T, int d)
{
    if (m->bf16) m->ops->embedding_backward_bf16(dw, CB(dy), ids, T, d);
    else m->ops->embedding_backward_f32(dw, CF(dy), ids, T, d);
}

void mp_scatter_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *src,
                        const int *pos, int n, int d)
{
    if (m->bf16) m->ops->scatter_rows_forward_bf16(B(y), CB(src), pos, n, d);
    else m->ops->scatter_rows_forward_f32(F(y), CF(src), pos, n, d);
}

void mp_scatter_backward(const qwen2vl_model *m, qwen2vl_tx *dsrc, qwen2vl_tx *dy, const int *pos,
                         int n, int d)
{
    if (m->bf16) m->ops->scatter_rows_backward_bf16(B(dsrc), B(dy), pos, n, d);
    else m->ops->scatter_rows_backward_f32(F(dsrc), F(dy), pos, n, d);
}

void mp_layernorm_forward(const qwen2vl_model *m, qwen2vl_tx *y, float *mean, float *rstd,
                          const qwen2vl_tx *x, const qwen2vl_tx *w, const qwen2vl_tx *b, int T,
                          int d, float eps)
{
    if (m->bf16) m->ops->layernorm_forward_bf16(B(y), mean, rstd, CB(x), CB(w), CB(b), T, d, eps);
    else m->ops->layernorm_forward_f32(F(y), mean, rstd, CF(x), CF(w), CF(b), T, d, eps);
}

void mp_layernorm_backward(const qwen2vl_model *m, qwen2vl_tx *dx, float *dw, float *db,
                           const qwen2vl_tx *dy, const qwen2vl_tx *x, const qwen2vl_tx *w,
                           const float *mean, const float *rstd, int T, int d)
{
    if (m->bf16)
        m->ops->layernorm_backward_bf16(B(dx), dw, db, CB(dy), CB(x), CB(w), mean, rstd, T, d);
    else
        m->ops->layernorm_backward_f32(F(dx), dw, db, CF(dy), CF(x), CF(w), mean, rstd, T, d);
}

void mp_rmsnorm_forward(const qwen2vl_model *m, qwen2vl_tx *y, float *rstd, const qwen2vl_tx *x,
                        const qwen2vl_tx *w, int T, int d, float eps)
{
    if (m->bf16) m->ops->rmsnorm_forward_bf16(B(y), rstd, NULL, CB(x), CB(w), T, d, eps);
    else m->ops->rmsnorm_forward_f32(F(y), rstd, NULL, CF(x), CF(w), T, d, eps);
}

void mp_rmsnorm_backward(const qwen2vl_model *m, qwen2vl_tx *du, float *dw, const qwen2vl_tx *dy,
                         const qwen2vl_tx *u, const qwen2vl_tx *w, const float *rstd, int T, int d)
{
    if (m->bf16) m->ops->rmsnorm_backward_bf16(B(du), dw, CB(dy), CB(u), CB(w), rstd, T, d);
    else m->ops->rmsnorm_backward_f32(F(du), dw, CF(dy), CF(u), CF(w), rstd, T, d);
}

void mp_rope_forward(const qwen2vl_model *m, qwen2vl_tx *x, const int *pos, int T, int n_heads,
                     int ldx, const ops_rope *rope)
{
    if (m->bf16) m->ops->rope_forward_bf16(B(x), pos, T, n_heads, ldx, rope);
    else m->ops->rope_forward_f32(F(x), pos, T, n_heads, ldx, rope);
}

void mp_rope_backward(const qwen2vl_model *m, qwen2vl_tx *dx, const int *pos, int T, int n_heads,
                      int ldx, const ops_rope *rope)
{
    if (m->bf16) m->ops->rope_backward_bf16(B(dx), pos, T, n_heads, ldx, rope);
    else m->ops->rope_backward_f32(F(dx), pos, T, n_heads, ldx, rope);
}

void mp_attention_forward(const qwen2vl_model *m, qwen2vl_tx *o, float *lse, const qwen2vl_tx *q,
                          const qwen2vl_tx *k, const qwen2vl_tx *v, const ops_attn *attn)
{
    if (m->bf16) m->ops->attention_forward_bf16(B(o), lse, CB(q), CB(k), CB(v), attn);
    else m->ops->attention_forward_f32(F(o), lse, CF(q), CF(k), CF(v), attn);
}

void mp_attention_backward(const qwen2vl_model *m, qwen2vl_tx *dq, qwen2vl_tx *dk, qwen2vl_tx *dv,
                           const qwen2vl_tx *dout, const qwen2vl_tx *q, const qwen2vl_tx *k,
                           const qwen2vl_tx *v, const qwen2vl_tx *o, const float *lse,
                           const ops_attn *attn)
{
    if (m->bf16)
        m->ops->attention_backward_bf16(B(dq), B(dk), B(dv), CB(dout), CB(q), CB(k), CB(v), CB(o),
                                        lse, attn);
    else
        m->ops->attention_backward_f32(F(dq), F(dk), F(dv), CF(dout), CF(q), CF(k), CF(v), CF(o),
                                       lse, attn);
}

void mp_swiglu_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *gate,
                       const qwen2vl_tx *up, int T, int n, int ld_in)
{
    if (m->bf16) m->ops->swiglu_forward_bf16(B(y), CB(gate), CB(up), T, n, ld_in);
    else m->ops->swiglu_forward_f32(F(y), CF(gate), CF(up), T, n, ld_in);
}

void mp_swiglu_backward(const qwen2vl_model *m, qwen2vl_tx *dgate, qwen2vl_tx *dup,
                        const qwen2vl_tx *dy, const qwen2vl_tx *gate, const qwen2vl_tx *up, int T,
                        int n, int ld_in)
{
    if (m->bf16)
        m->ops->swiglu_backward_bf16(B(dgate), B(dup), CB(dy), CB(gate), CB(up), T, n, ld_in);
    else
        m->ops->swiglu_backward_f32(F(dgate), F(dup), CF(dy), CF(gate), CF(up), T, n, ld_in);
}

void mp_quickgelu_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *x, size_t n)
{
    if (m->bf16) m->ops->quickgelu_forward_bf16(B(y), CB(x), n);
    else m->ops->quickgelu_forward_f32(F(y), CF(x), n);
}

void mp_quickgelu_backward(const qwen2vl_model *m, qwen2vl_tx *dx, const qwen2vl_tx *dy,
                           const qwen2vl_tx *x, size_t n)
{
    if (m->bf16) m->ops->quickgelu_backward_bf16(B(dx), CB(dy), CB(x), n);
    else m->ops->quickgelu_backward_f32(F(dx), CF(dy), CF(x), n);
}

void mp_gelu_forward(const qwen2vl_model *m, qwen2vl_tx *y, const qwen2vl_tx *x, size_t n)
{
    if (m->bf16) m->ops->gelu_forward_bf16(B(y), CB(x), n);
    else m->ops->gelu_forward_f32(F(y), CF(x), n);
}

void mp_gelu_backward(const qwen2vl_model *m, qwen2vl_tx *dx, const qwen2vl_tx *dy,
                      const qwen2vl_tx *x, size_t n)
{
    if (m->bf16) m->ops->gelu_backward_bf16(B(dx), CB(dy), CB(x), n);
    else m->ops->gelu_backward_f32(F(dx), CF(dy), CF(x), n);
}

void mp_lmhead_xent(const qwen2vl_model *m, float *loss, qwen2vl_tx *dh, float *dw,
                    const qwen2vl_tx *h, const qwen2vl_tx *w, const int *labels, int T,
                    float normaliser)
{
    const model_config_text *t = &m->cfg.text;
    if (m->bf16)
        m->ops->lmhead_xent_bf16(loss, B(dh), dw, CB(h), CB(w), labels, T, t->hidden_size,
                                 t->vocab_size, normaliser, m->a.loss_work, m->loss_work_len);
    else
        m->ops->lmhead_xent_f32(loss, F(dh), dw, CF(h), CF(w), labels, T, t->hidden_size,
                                t->vocab_size, normaliser, m->a.loss_work, m->loss_work_len);
}

void mp_logits(const qwen2vl_model *m, float *c, const qwen2vl_tx *h, const qwen2vl_tx *w, int n)
{
    int D = m->cfg.text.hidden_size, V = m->cfg.text.vocab_size;
    if (m->bf16) m->ops->matmul_bf16_f32out(c, CB(h), CB(w), n, V, D, 0, 1, D, D, V, 1.0f, 0.0f);
    else m->ops->matmul_f32(c, CF(h), CF(w), n, V, D, 0, 1, D, D, V, 1.0f, 0.0f);
}
