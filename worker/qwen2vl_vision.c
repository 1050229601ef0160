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
        int len = m->hi.v_cu[i + 1] - m->hi.v_cu[i];  /* host mirror: launch shapes */
        if (len > max_len) max_len = len;
    }
    ops_attn at = {
        .cu_seqlens = m->a.i.v_cu, .num_seqs = m->n_images, .total_tokens = d->N,
        .max_seqlen = max_len, .num_heads = d->Hv, .num_kv_heads = d->Hv, .head_dim = d->hd,
        .ldq = 3 * d->E, .ldk = 3 * d->E, .ldv = 3 * d->E, .ldo = d->E,
        .scale = 1.0f / sqrtf((float)d->hd), .causal = 0,
    };
    return at;
}

static void vis_block_forward(qwen2vl_model *m, const vis_dims *d, int l)
{
    const qwen2vl_params *w = &m->w;
    qwen2vl_acts *a = &m->a;
    size_t N = d->N, E = d->E, M = d->M;
    const qwen2vl_tx *x = qx(m, a->v_x, l * N * E);
    qwen2vl_tx *ln1 = qx(m, a->v_ln1, l * N * E), *qkv = qx(m, a->v_qkv, l * N * 3 * E);
    qwen2vl_tx *att = qx(m, a->v_att, l * N * E), *mid = qx(m, a->v_mid, l * N * E);
    qwen2vl_tx *ln2 = qx(m, a->v_ln2, l * N * E), *fc1 = qx(m, a->v_fc1, l * N * M);
    qwen2vl_tx *act = qx(m, a->v_act, l * N * M), *out = qx(m, a->v_x, (l + 1) * N * E);

    mp_layernorm_forward(m, ln1, a->v_mean1 + l * N, a->v_rstd1 + l * N, x,
                         qw(m, w->v_norm1_w, l * E), qw(m, w->v_norm1_b, l * E), d->N, d->E,
                         1e-6f);
    mp_linear_forward(m, qkv, ln1, qw(m, w->v_qkv_w, l * 3 * E * E), qw(m, w->v_qkv_b, l * 3 * E),
                      d->N, d->E, 3 * d->E, 3 * d->E);
    ops_rope rope = vis_rope(m);
    /* q and k heads lie back to back in the row: one call turns both, cos/sin once per patch */
    mp_rope_forward(m, qkv, a->i.v_pos, d->N, 2 * d->Hv, 3 * d->E, &rope);
    ops_attn at = vis_attn(m, d);
    mp_attention_forward(m, att, a->v_lse + l * N * d->Hv, qkv, qx(m, qkv, E), qx(m, qkv, 2 * E),
                         &at);
    mp_linear_forward(m, mid, att, qw(m, w->v_proj_w, l * E * E), qw(m, w->v_proj_b, l * E),
                      d->N, d->E, d->E, d->E);
    mp_add(m, mid, mid, x, N * E);
    mp_layernorm_forward(m, ln2, a->v_mean2 + l * N, a->v_rstd2 + l * N, mid,
                         qw(m, w->v_norm2_w, l * E), qw(m, w->v_norm2_b, l * E), d->N, d->E,
                         1e-6f);
    mp_linear_forward(m, fc1, ln2, qw(m, w->v_fc1_w, l * M * E), qw(m, w->v_fc1_b, l * M),
                      d->N, d->E, d->M, d->M);
    mp_quickgelu_forward(m, act, fc1, N * M);
    mp_linear_forward(m, out, act, qw(m, w->v_fc2_w, l * E * M), qw(m, w->v_fc2_b, l * E),
                      d->N, d->M, d->E, d->E);
    mp_add(m, out, out, mid, N * E);
}

/* The patch embedding's input: the fp32 pixels themselves, or in bf16 their rounded copy. */
static const qwen2vl_tx *vis_pixels(const qwen2vl_model *m, const float *pixel_values)
{
    if (!m->bf16) return (const qwen2vl_tx *)pixel_values;
    return m->a.v_pix;
}

void qwen2vl_vision_forward(qwen2vl_model *m, const float *pixel_values)
{
    qwen2vl_acts *a = &m->a;
    const qwen2vl_params *w = &m->w;
    vis_dims d = vis_dims_of(m);
    if (m->bf16)
        m->ops->f32_to_bf16((ops_bf16 *)a->v_pix, pixel_values, (size_t)d.N * d.P);
    /* The Conv3d with stride = kernel is one product over flattened patches. */
    mp_linear_forward(m, a->v_x, vis_pixels(m, pixel_values), qw(m, w->patch_embed, 0), NULL,
                      d.N, d.P, d.E, d.E);
    for (int l = 0; l < m->cfg.vision.depth; l++) vis_block_forward(m, &d, l);
    const qwen2vl_tx *xl = qx(m, a->v_x, (size_t)m->cfg.vision.depth * d.N * d.E);
    mp_layernorm_forward(m, a->m_ln, a->m_mean, a->m_rstd, xl, qw(m, w->m_ln_w, 0),
                         qw(m, w->m_ln_b, 0), d.N, d.E, 1e-6f);
    mp_linear_forward(m, a->m_fc1, a->m_ln, qw(m, w->m_fc1_w, 0), qw(m, w->m_fc1_b, 0), d.G, d.C,
                      d.C, d.C);
    mp_gelu_forward(m, a->m_act, a->m_fc1, (size_t)d.G * d.C);
    mp_linear_forward(m, a->m_out, a->m_act, qw(m, w->m_fc2_w, 0), qw(m, w->m_fc2_b, 0), d.G, d.C,
                      d.D, d.D);
}

/* dv_res holds d(block output) on entry and d(block input) on return. */
static void vis_block_backward(qwen2vl_model *m, const vis_dims *d, int l)
{
    const qwen2vl_params *w = &m->w;
    qwen2vl_params *g = &m->g;
    qwen2vl_acts *a = &m->a;
    size_t N = d->N, E = d->E, M = d->M;
    const qwen2vl_tx *x = qx(m, a->v_x, l * N * E), *ln1 = qx(m, a->v_ln1, l * N * E);
    const qwen2vl_tx *qkv = qx(m, a->v_qkv, l * N * 3 * E), *att = qx(m, a->v_att, l * N * E);
    const qwen2vl_tx *mid = qx(m, a->v_mid, l * N * E), *ln2 = qx(m, a->v_ln2, l * N * E);
    const qwen2vl_tx *fc1 = qx(m, a->v_fc1, l * N * M), *act = qx(m, a->v_act, l * N * M);

    mp_linear_backward(m, a->dv_act, g->v_fc2_w + l * E * M, g->v_fc2_b + l * E, a->dv_res, act,
                       qw(m, w->v_fc2_w, l * E * M), d->N, d->M, d->E, d->E, 0.0f);
    mp_zero(m, a->dv_fc1, N * M);
    mp_quickgelu_backward(m, a->dv_fc1, a->dv_act, fc1, N * M);
    mp_linear_backward(m, a->dv_ln, g->v_fc1_w + l * M * E, g->v_fc1_b + l * M, a->dv_fc1, ln2,
                       qw(m, w->v_fc1_w, l * M * E), d->N, d->E, d->M, d->M, 0.0f);
    mp_layernorm_backward(m, a->dv_res, g->v_norm2_w + l * E, g->v_norm2_b + l * E, a->dv_ln, mid,
                          qw(m, w->v_norm2_w, l * E), a->v_mean2 + l * N, a->v_rstd2 + l * N,
                          d->N, d->E);
    mp_linear_backward(m, a->dv_att, g->v_proj_w + l * E * E, g->v_proj_b + l * E, a->dv_res, att,
                       qw(m, w->v_proj_w, l * E * E), d->N, d->E, d->E, d->E, 0.0f);
    mp_zero(m, a->dv_qkv, N * 3 * E);
    ops_attn at = vis_attn(m, d);
    mp_attention_backward(m, a->dv_qkv, qx(m, a->dv_qkv, E), qx(m, a->dv_qkv, 2 * E), a->dv_att,
                          qkv, qx(m, qkv, E), qx(m, qkv, 2 * E), att, a->v_lse + l * N * d->Hv,
                          &at);
    ops_rope rope = vis_rope(m);
    mp_rope_backward(m, a->dv_qkv, a->i.v_pos, d->N, 2 * d->Hv, 3 * d->E, &rope);
    mp_linear_backward(m, a->dv_ln, g->v_qkv_w + l * 3 * E * E, g->v_qkv_b + l * 3 * E, a->dv_qkv,
                       ln1, qw(m, w->v_qkv_w, l * 3 * E * E), d->N, d->E, 3 * d->E, 3 * d->E,
                       0.0f);
    mp_layernorm_backward(m, a->dv_res, g->v_norm1_w + l * E, g->v_norm1_b + l * E, a->dv_ln, x,
                          qw(m, w->v_norm1_w, l * E), a->v_mean1 + l * N, a->v_rstd1 + l * N,
                          d->N, d->E);
}

/* From a.dm_out (the image features' gradient) down to the patch embedding. */
void qwen2vl_vision_backward(qwen2vl_model *m, const float *pixel_values)
{
    qwen2vl_acts *a = &m->a;
    const qwen2vl_params *w = &m->w;
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
    mp_linear_backward(m, a->dm_act, merger_frozen ? NULL : g->m_fc2_w,
                       merger_frozen ? NULL : g->m_fc2_b, a->dm_out, a->m_act,
                       qw(m, w->m_fc2_w, 0), d.G, d.C, d.D, d.D, 0.0f);
    mp_zero(m, a->dm_fc1, (size_t)d.G * d.C);
    mp_gelu_backward(m, a->dm_fc1, a->dm_act, a->m_fc1, (size_t)d.G * d.C);
    mp_linear_backward(m, a->dv_ln, merger_frozen ? NULL : g->m_fc1_w,
                       merger_frozen ? NULL : g->m_fc1_b, a->dm_fc1, a->m_ln,
                       qw(m, w->m_fc1_w, 0), d.G, d.C, d.C, d.C, 0.0f);
    const qwen2vl_tx *xl = qx(m, a->v_x, (size_t)m->cfg.vision.depth * d.N * d.E);
    mp_zero(m, a->dv_res, (size_t)d.N * d.E);
    mp_layernorm_backward(m, a->dv_res, merger_frozen ? NULL : g->m_ln_w,
                          merger_frozen ? NULL : g->m_ln_b, a->dv_ln, xl, qw(m, w->m_ln_w, 0),
                          a->m_mean, a->m_rstd, d.N, d.E);
    qwen2vl_ready_merger(m);
    if (vision_frozen) {  /* ln_q's own gradients needed the pass above; the blocks don't */
        qwen2vl_ready_vision_from(m, depth - 1);
        return;
    }
    for (int l = depth - 1; l >= 0; l--) {
        vis_block_backward(m, &d, l);
        qwen2vl_ready_vision_block(m, l);
    }
    mp_linear_backward(m, NULL, g->patch_embed, NULL, a->dv_res, vis_pixels(m, pixel_values),
                       NULL, d.N, d.P, d.E, d.E, 0.0f);
    qwen2vl_ready_vision_from(m, -1);  /* no block left: the patch embedding alone */
}
