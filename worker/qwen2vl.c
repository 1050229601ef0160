/* qwen2vl: the parameter layout, lifecycle, activation plan and Linear helpers; see qwen2vl.h.
 *
 * The one idea: one table of fields (which params slot, which transformers name, which tower,
 * which shape, how many layers) drives everything that must agree on the layout: the offsets of
 * the pointer struct, the tensor names for load and save, the per-tower counts and the init. */
#include "qwen2vl_internal.h"

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

/* A bump allocator over a block that may not exist yet (base NULL: count only). */
typedef struct carver {
    float  *base;
    size_t  used;
    int    *ibase;
    size_t  iused;
} carver;

static float *carve(carver *c, size_t n)
{
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(size_t)15;  /* 64-byte steps keep every buffer aligned for SIMD */
    return p;
}

static int *carve_int(carver *c, size_t n)
{
    int *p = c->ibase ? c->ibase + c->iused : NULL;
    c->iused += (n + 15) & ~(size_t)15;
    return p;
}

size_t qwen2vl_acts_plan(qwen2vl_acts *a, const model_config *cfg, const qwen2vl_budget *b,
                         size_t loss_work_len, float *base, int *ibase, size_t *n_ints)
{
    const model_config_vision *v = &cfg->vision;
    const model_config_text *t = &cfg->text;
    size_t N = (size_t)b->max_patches, T = (size_t)b->max_tokens;
    size_t ms = (size_t)v->spatial_merge_size * v->spatial_merge_size;
    size_t G = N / ms, E = v->embed_dim, M = v->mlp_dim, Lv = v->depth, Hv = v->num_heads;
    size_t C = E * ms, D = t->hidden_size, I = t->intermediate_size, L = t->num_hidden_layers;
    size_t H = t->num_attention_heads, Q = H * t->head_dim;
    size_t K = (size_t)t->num_key_value_heads * t->head_dim, W = Q + 2 * K;
    carver c = { base, 0, ibase, 0 };
    a->v_x = carve(&c, (Lv + 1) * N * E);
    a->v_ln1 = carve(&c, Lv * N * E);
    a->v_mean1 = carve(&c, Lv * N);
    a->v_rstd1 = carve(&c, Lv * N);
    a->v_qkv = carve(&c, Lv * N * 3 * E);
    a->v_att = carve(&c, Lv * N * E);
    a->v_lse = carve(&c, Lv * N * Hv);
    a->v_mid = carve(&c, Lv * N * E);
    a->v_ln2 = carve(&c, Lv * N * E);
    a->v_mean2 = carve(&c, Lv * N);
    a->v_rstd2 = carve(&c, Lv * N);
    a->v_fc1 = carve(&c, Lv * N * M);
    a->v_act = carve(&c, Lv * N * M);
    a->m_ln = carve(&c, N * E);
    a->m_mean = carve(&c, N);
    a->m_rstd = carve(&c, N);
    a->m_fc1 = carve(&c, G * C);
    a->m_act = carve(&c, G * C);
    a->m_out = carve(&c, G * D);
    a->x = carve(&c, (L + 1) * T * D);
    a->ln1 = carve(&c, L * T * D);
    a->rstd1 = carve(&c, L * T);
    a->qkv = carve(&c, L * T * W);
    a->att = carve(&c, L * T * Q);
    a->lse = carve(&c, L * T * H);
    a->mid = carve(&c, L * T * D);
    a->ln2 = carve(&c, L * T * D);
    a->rstd2 = carve(&c, L * T);
    a->gu = carve(&c, L * T * 2 * I);
    a->act = carve(&c, L * T * I);
    a->hf = carve(&c, T * D);
    a->rstdf = carve(&c, T);
    a->d_res = carve(&c, T * D);
    a->d_ln = carve(&c, T * D);
    a->d_qkv = carve(&c, T * W);
    a->d_att = carve(&c, T * Q);
    a->d_gu = carve(&c, T * 2 * I);
    a->d_act = carve(&c, T * I);
    a->dv_res = carve(&c, N * E);
    a->dv_ln = carve(&c, N * E);
    a->dv_qkv = carve(&c, N * 3 * E);
    a->dv_att = carve(&c, N * E);
    a->dv_fc1 = carve(&c, N * M);
    a->dv_act = carve(&c, N * M);
    a->dm_out = carve(&c, G * D);
    a->dm_act = carve(&c, G * C);
    a->dm_fc1 = carve(&c, G * C);
    a->att_keep = carve(&c, T * Q);
    a->d_keep = carve(&c, T * D);
    a->loss_work = carve(&c, loss_work_len);
    a->v_pos = carve_int(&c, 2 * N);
    a->v_cu = carve_int(&c, (size_t)b->max_images + 1);
    a->pos = carve_int(&c, 3 * T);
    a->targets = carve_int(&c, T);
    a->img_pos = carve_int(&c, T);
    a->cu = carve_int(&c, (size_t)b->max_seqs + 1);
    a->keep = carve_int(&c, T);
    a->keep_targets = carve_int(&c, T);
    *n_ints = c.iused;
    return c.used;
}

/* Enough scratch for the fused LM head to compute each row chunk's logits once, at its full
 * chunk of 256 rows (loss_cpu.c's XENT_ROWS). */
static size_t loss_work_len_for(const model_config *cfg)
{
    return 256 * (2 * (size_t)cfg->text.hidden_size + 3 + (size_t)cfg->text.vocab_size);
}

size_t qwen2vl_activation_floats(const model_config *cfg, const qwen2vl_budget *budget)
{
    qwen2vl_acts a;
    size_t n_ints;
    size_t n = qwen2vl_acts_plan(&a, cfg, budget, loss_work_len_for(cfg), NULL, NULL, &n_ints);
    return n + n_ints;  /* an int is as large as a float */
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
    return 0;
}

/* budget NULL: weights only (qwen2vl_create_inference); the gradient buffer and the activation
 * plan stay NULL, and the entry points that would touch them check m->inference first. */
static int model_create(qwen2vl_model **out, const model_config *cfg, const qwen2vl_budget *budget,
                        const ops_table *ops, adapt_error *err)
{
    *out = NULL;
    int rc = config_check(cfg, budget, err);
    if (rc) return rc;
    qwen2vl_model *m = calloc(1, sizeof *m);
    if (!m) return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory");
    m->cfg = *cfg;
    m->ops = ops;
    m->inference = budget == NULL;
    if (budget) m->budget = *budget;
    rc = qwen2vl_layout(cfg, &m->tensors, &m->n_tensors, m->tower_params, err);
    if (rc) { free(m); return rc; }
    for (int k = 0; k < QWEN2VL_TOWER_COUNT; k++) m->n_params += m->tower_params[k];
    m->param_mem = calloc(m->n_params, sizeof(float));
    if (!m->param_mem) {
        qwen2vl_free(m);
        return adapt_fail(err, ADAPT_ENOMEM, "qwen2vl: out of memory for %zu parameters",
                          m->n_params);
    }
    m->resident_bytes = m->n_params * sizeof(float);
    params_point(&m->w, cfg, m->param_mem);
    if (m->inference) {
        *out = m;
        return 0;
    }
    m->loss_work_len = loss_work_len_for(cfg);
    size_t n_ints;
    size_t n_floats = qwen2vl_acts_plan(&m->a, cfg, budget, m->loss_work_len, NULL, NULL, &n_ints);
    m->grad_mem = calloc(m->n_params, sizeof(float));
    m->act_mem = calloc(n_floats, sizeof(float));
    m->act_ints = calloc(n_ints, sizeof(int));
    if (!m->grad_mem || !m->act_mem || !m->act_ints) {
        qwen2vl_free(m);
        return adapt_fail(err, ADAPT_ENOMEM,
                          "qwen2vl: out of memory for %zu parameters and %zu activation floats "
                          "(lower the token budget)", m->n_params, n_floats);
    }
    m->resident_bytes += m->n_params * sizeof(float) + n_floats * sizeof(float) +
                         n_ints * sizeof(int);
    qwen2vl_acts_plan(&m->a, cfg, budget, m->loss_work_len, m->act_mem, m->act_ints, &n_ints);
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
    return model_create(out, cfg, NULL, ops, err);
}

void qwen2vl_free(qwen2vl_model *m)
{
    if (!m) return;
    free(m->tensors);
    free(m->param_mem);
    free(m->grad_mem);
    free(m->act_mem);
    free(m->act_ints);
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
