/* qwen2vl_vision: the vision tower (patch embedding, pre-LayerNorm blocks with 2-D rotary
 * attention confined to each image, QuickGELU MLP) and the PatchMerger, forward and backward.
 *
 * The one idea: patches arrive in the 2x2-merge-major order the image processor writes, so the
 * merger's "2x2 merge" is no gather at all: four consecutive rows of the [N, E] LayerNorm output
 * are one row of the [N/4, 4E] merger input, the same memory read with another width. */
#include "qwen2vl_internal.h"

#include <math.h>

typedef struct vis_dims {
    int N, E, M, Hv, hd, C, G, D, P;
} vis_dims;

static vis_dims vis_dims_of(const qwen2vl_model *m)
{
    const model_config_vision *v = &m->cfg.vision;
    int ms = v->spatial_merge_size * v->spatial_merge_size;
    vis_dims d = {
        .N = m->n_patches, .E = v->embed_dim, .M = v->mlp_dim, .Hv = v->num_heads,
        .hd = v->head_dim, .C = v->embed_dim * ms, .G = m->n_patches / ms,
        .D = m->cfg.text.hidden_size,
        .P = v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size,
    };
    return d;
}

static ops_rope vis_rope(const qwen2vl_model *m)
{
    ops_rope r = { .kind = OPS_ROPE_VISION_2D, .head_dim = m->cfg.vision.head_dim,
                   .theta = (float)m->cfg.vision.rope_theta };
    return r;
}

static ops_attn vis_attn(const qwen2vl_model *m, const vis_dims *d)
{
    int max_len = 0;
    for (int i = 0; i < m->n_images; i++) {
        int len = m->a.v_cu[i + 1] - m->a.v_cu[i];
        if (len > max_len) max_len = len;
    }
    ops_attn at = {
        .cu_seqlens = m->a.v_cu, .num_seqs = m->n_images, .total_tokens = d->N,
        .max_seqlen = max_len, .num_heads = d->Hv, .num_kv_heads = d->Hv, .head_dim = d->hd,
        .ldq = 3 * d->E, .ldk = 3 * d->E, .ldv = 3 * d->E, .ldo = d->E,
        .scale = 1.0f / sqrtf((float)d->hd), .causal = 0,
    };
    return at;
}

static void vis_block_forward(qwen2vl_model *m, const vis_dims *d, int l)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    qwen2vl_acts *a = &m->a;
    size_t N = d->N, E = d->E, M = d->M;
    const float *x = a->v_x + l * N * E;
    float *ln1 = a->v_ln1 + l * N * E, *qkv = a->v_qkv + l * N * 3 * E;
    float *att = a->v_att + l * N * E, *mid = a->v_mid + l * N * E;
    float *ln2 = a->v_ln2 + l * N * E, *fc1 = a->v_fc1 + l * N * M, *act = a->v_act + l * N * M;
    float *out = a->v_x + (l + 1) * N * E;

    ops->layernorm_forward_f32(ln1, a->v_mean1 + l * N, a->v_rstd1 + l * N, x,
                               w->v_norm1_w + l * E, w->v_norm1_b + l * E, d->N, d->E, 1e-6f);
    qwen2vl_linear_forward(ops, qkv, ln1, w->v_qkv_w + l * 3 * E * E, w->v_qkv_b + l * 3 * E,
                           d->N, d->E, 3 * d->E, 3 * d->E);
    ops_rope rope = vis_rope(m);
    /* q and k heads lie back to back in the row: one call turns both, cos/sin once per patch */
    ops->rope_forward_f32(qkv, a->v_pos, d->N, 2 * d->Hv, 3 * d->E, &rope);
    ops_attn at = vis_attn(m, d);
    ops->attention_forward_f32(att, a->v_lse + l * N * d->Hv, qkv, qkv + E, qkv + 2 * E, &at);
    qwen2vl_linear_forward(ops, mid, att, w->v_proj_w + l * E * E, w->v_proj_b + l * E,
                           d->N, d->E, d->E, d->E);
    ops->add_f32(mid, mid, x, N * E);
    ops->layernorm_forward_f32(ln2, a->v_mean2 + l * N, a->v_rstd2 + l * N, mid,
                               w->v_norm2_w + l * E, w->v_norm2_b + l * E, d->N, d->E, 1e-6f);
    qwen2vl_linear_forward(ops, fc1, ln2, w->v_fc1_w + l * M * E, w->v_fc1_b + l * M,
                           d->N, d->E, d->M, d->M);
    ops->quickgelu_forward_f32(act, fc1, N * M);
    qwen2vl_linear_forward(ops, out, act, w->v_fc2_w + l * E * M, w->v_fc2_b + l * E,
                           d->N, d->M, d->E, d->E);
    ops->add_f32(out, out, mid, N * E);
}

void qwen2vl_vision_forward(qwen2vl_model *m, const float *pixel_values)
{
    const ops_table *ops = m->ops;
    qwen2vl_acts *a = &m->a;
    vis_dims d = vis_dims_of(m);
    /* The Conv3d with stride = kernel is one product over flattened patches. */
    qwen2vl_linear_forward(ops, a->v_x, pixel_values, m->w.patch_embed, NULL, d.N, d.P, d.E, d.E);
    for (int l = 0; l < m->cfg.vision.depth; l++) vis_block_forward(m, &d, l);
    const float *xl = a->v_x + (size_t)m->cfg.vision.depth * d.N * d.E;
    ops->layernorm_forward_f32(a->m_ln, a->m_mean, a->m_rstd, xl, m->w.m_ln_w, m->w.m_ln_b,
                               d.N, d.E, 1e-6f);
    qwen2vl_linear_forward(ops, a->m_fc1, a->m_ln, m->w.m_fc1_w, m->w.m_fc1_b, d.G, d.C, d.C, d.C);
    ops->gelu_forward_f32(a->m_act, a->m_fc1, (size_t)d.G * d.C);
    qwen2vl_linear_forward(ops, a->m_out, a->m_act, m->w.m_fc2_w, m->w.m_fc2_b, d.G, d.C, d.D, d.D);
}

/* dv_res holds d(block output) on entry and d(block input) on return. */
static void vis_block_backward(qwen2vl_model *m, const vis_dims *d, int l)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    qwen2vl_params *g = &m->g;
    qwen2vl_acts *a = &m->a;
    size_t N = d->N, E = d->E, M = d->M;
    const float *x = a->v_x + l * N * E, *ln1 = a->v_ln1 + l * N * E;
    const float *qkv = a->v_qkv + l * N * 3 * E, *att = a->v_att + l * N * E;
    const float *mid = a->v_mid + l * N * E, *ln2 = a->v_ln2 + l * N * E;
    const float *fc1 = a->v_fc1 + l * N * M, *act = a->v_act + l * N * M;

    qwen2vl_linear_backward(ops, a->dv_act, g->v_fc2_w + l * E * M, g->v_fc2_b + l * E, a->dv_res,
                            act, w->v_fc2_w + l * E * M, d->N, d->M, d->E, d->E, 0.0f);
    ops->fill_f32(a->dv_fc1, 0.0f, N * M);
    ops->quickgelu_backward_f32(a->dv_fc1, a->dv_act, fc1, N * M);
    qwen2vl_linear_backward(ops, a->dv_ln, g->v_fc1_w + l * M * E, g->v_fc1_b + l * M, a->dv_fc1,
                            ln2, w->v_fc1_w + l * M * E, d->N, d->E, d->M, d->M, 0.0f);
    ops->layernorm_backward_f32(a->dv_res, g->v_norm2_w + l * E, g->v_norm2_b + l * E, a->dv_ln,
                                mid, w->v_norm2_w + l * E, a->v_mean2 + l * N, a->v_rstd2 + l * N,
                                d->N, d->E);
    qwen2vl_linear_backward(ops, a->dv_att, g->v_proj_w + l * E * E, g->v_proj_b + l * E,
                            a->dv_res, att, w->v_proj_w + l * E * E, d->N, d->E, d->E, d->E, 0.0f);
    ops->fill_f32(a->dv_qkv, 0.0f, N * 3 * E);
    ops_attn at = vis_attn(m, d);
    ops->attention_backward_f32(a->dv_qkv, a->dv_qkv + E, a->dv_qkv + 2 * E, a->dv_att, qkv,
                                qkv + E, qkv + 2 * E, att, a->v_lse + l * N * d->Hv, &at);
    ops_rope rope = vis_rope(m);
    ops->rope_backward_f32(a->dv_qkv, a->v_pos, d->N, 2 * d->Hv, 3 * d->E, &rope);
    qwen2vl_linear_backward(ops, a->dv_ln, g->v_qkv_w + l * 3 * E * E, g->v_qkv_b + l * 3 * E,
                            a->dv_qkv, ln1, w->v_qkv_w + l * 3 * E * E, d->N, d->E, 3 * d->E,
                            3 * d->E, 0.0f);
    ops->layernorm_backward_f32(a->dv_res, g->v_norm1_w + l * E, g->v_norm1_b + l * E, a->dv_ln,
                                x, w->v_norm1_w + l * E, a->v_mean1 + l * N, a->v_rstd1 + l * N,
                                d->N, d->E);
}

/* From a.dm_out (the image features' gradient) down to the patch embedding. */
void qwen2vl_vision_backward(qwen2vl_model *m, const float *pixel_values)
{
    const ops_table *ops = m->ops;
    qwen2vl_acts *a = &m->a;
    qwen2vl_params *g = &m->g;
    vis_dims d = vis_dims_of(m);
    int merger_frozen = m->frozen[QWEN2VL_TOWER_MERGER];
    int vision_frozen = m->frozen[QWEN2VL_TOWER_VISION];
    int depth = m->cfg.vision.depth;
    if (merger_frozen && vision_frozen) {
        qwen2vl_ready_merger(m);
        qwen2vl_ready_vision_from(m, depth - 1);
        return;
    }
    qwen2vl_linear_backward(ops, a->dm_act, merger_frozen ? NULL : g->m_fc2_w,
                            merger_frozen ? NULL : g->m_fc2_b, a->dm_out, a->m_act, m->w.m_fc2_w,
                            d.G, d.C, d.D, d.D, 0.0f);
    ops->fill_f32(a->dm_fc1, 0.0f, (size_t)d.G * d.C);
    ops->gelu_backward_f32(a->dm_fc1, a->dm_act, a->m_fc1, (size_t)d.G * d.C);
    qwen2vl_linear_backward(ops, a->dv_ln, merger_frozen ? NULL : g->m_fc1_w,
                            merger_frozen ? NULL : g->m_fc1_b, a->dm_fc1, a->m_ln, m->w.m_fc1_w,
                            d.G, d.C, d.C, d.C, 0.0f);
    const float *xl = a->v_x + (size_t)m->cfg.vision.depth * d.N * d.E;
    ops->fill_f32(a->dv_res, 0.0f, (size_t)d.N * d.E);
    ops->layernorm_backward_f32(a->dv_res, merger_frozen ? NULL : g->m_ln_w,
                                merger_frozen ? NULL : g->m_ln_b, a->dv_ln, xl,
                                m->w.m_ln_w, a->m_mean, a->m_rstd, d.N, d.E);
    qwen2vl_ready_merger(m);
    if (vision_frozen) {  /* ln_q's own gradients needed the pass above; the blocks don't */
        qwen2vl_ready_vision_from(m, depth - 1);
        return;
    }
    for (int l = depth - 1; l >= 0; l--) {
        vis_block_backward(m, &d, l);
        qwen2vl_ready_vision_block(m, l);
    }
    qwen2vl_linear_backward(ops, NULL, g->patch_embed, NULL, a->dv_res, pixel_values, NULL,
                            d.N, d.P, d.E, d.E, 0.0f);
    qwen2vl_ready_vision_from(m, -1);  /* no block left: the patch embedding alone */
}
