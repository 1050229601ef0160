/* qwen2vl_text: the Qwen2 decoder of Qwen2-VL (token embedding with the image features scattered
 * in, RMSNorm, GQA with Q/K/V biases and M-RoPE, causal attention per packed sequence, SwiGLU),
 * forward and backward.
 *
 * The one idea: q, k and v of a layer are written side by side into one [T, Q + 2K] row (three
 * products into column slices), so rotary and attention read them by stride and their gradients
 * come back in the same shape with no split or concatenation. In a training pass the last layer
 * is split at its attention: a row's k and v feed later rows, but past the attention it reaches
 * only its own logits, so the o_proj, MLP and final norm run on the rows the loss scores alone
 * (about half of an instruction sample, whose prompt and image tokens are not scored). */
#include "qwen2vl_internal.h"

#include <math.h>

typedef struct txt_dims {
    int T, D, I, H, KV, hd, Q, K, W;
} txt_dims;

static txt_dims txt_dims_of(const qwen2vl_model *m)
{
    const model_config_text *t = &m->cfg.text;
    txt_dims d = {
        .T = m->n_tokens, .D = t->hidden_size, .I = t->intermediate_size,
        .H = t->num_attention_heads, .KV = t->num_key_value_heads, .hd = t->head_dim,
        .Q = t->num_attention_heads * t->head_dim, .K = t->num_key_value_heads * t->head_dim,
    };
    d.W = d.Q + 2 * d.K;
    return d;
}

static ops_rope txt_rope(const qwen2vl_model *m)
{
    const model_config_text *t = &m->cfg.text;
    ops_rope r = { .kind = OPS_ROPE_MROPE, .head_dim = t->head_dim, .theta = (float)t->rope_theta,
                   .mrope_section = { t->mrope_section[0], t->mrope_section[1],
                                      t->mrope_section[2] } };
    return r;
}

static ops_attn txt_attn(const qwen2vl_model *m, const txt_dims *d, int n_seqs)
{
    int max_len = 0;
    for (int s = 0; s < n_seqs; s++) {
        int len = m->a.cu[s + 1] - m->a.cu[s];
        if (len > max_len) max_len = len;
    }
    ops_attn at = {
        .cu_seqlens = m->a.cu, .num_seqs = n_seqs, .total_tokens = d->T, .max_seqlen = max_len,
        .num_heads = d->H, .num_kv_heads = d->KV, .head_dim = d->hd,
        .ldq = d->W, .ldk = d->W, .ldv = d->W, .ldo = d->Q,
        .scale = 1.0f / sqrtf((float)d->hd), .causal = 1,
    };
    return at;
}

/* Attention half of layer l, on all T rows (every row's k and v feed later rows): ln1, q | k | v,
 * M-RoPE, attention into a.att. */
static void txt_attn_forward(qwen2vl_model *m, const txt_dims *d, int l, int n_seqs)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, Q = d->Q, K = d->K, W = d->W;
    const float *x = a->x + l * T * D;
    float *ln1 = a->ln1 + l * T * D, *qkv = a->qkv + l * T * W;

    ops->rmsnorm_forward_f32(ln1, a->rstd1 + l * T, NULL, x, w->in_norm + l * D, d->T, d->D,
                             (float)m->cfg.text.rms_norm_eps);
    qwen2vl_linear_forward(ops, qkv, ln1, w->q_w + l * Q * D, w->q_b + l * Q, d->T, d->D, d->Q, d->W);
    qwen2vl_linear_forward(ops, qkv + Q, ln1, w->k_w + l * K * D, w->k_b + l * K, d->T, d->D, d->K,
                           d->W);
    qwen2vl_linear_forward(ops, qkv + Q + K, ln1, w->v_w + l * K * D, w->v_b + l * K, d->T, d->D,
                           d->K, d->W);
    /* k's heads follow q's in the row: one call turns both, cos/sin once per token */
    ops_rope rope = txt_rope(m);
    ops->rope_forward_f32(qkv, a->pos, d->T, d->H + d->KV, d->W, &rope);
    ops_attn at = txt_attn(m, d, n_seqs);
    ops->attention_forward_f32(a->att + l * T * Q, a->lse + l * T * d->H, qkv, qkv + Q,
                               qkv + Q + K, &at);
}

/* MLP half of layer l on n rows packed from the start of the layer's buffers: mid = att W_o^T +
 * res, ln2, SwiGLU, out = mid + down(act). att [n, Q]; res [n, D] may be ln2's buffer (it is
 * read before ln2 is written); out [n, D]. */
static void txt_mlp_forward(qwen2vl_model *m, const txt_dims *d, int l, int n, const float *att,
                            const float *res, float *out)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, I = d->I, Q = d->Q, N = (size_t)n;
    float *mid = a->mid + l * T * D, *ln2 = a->ln2 + l * T * D, *gu = a->gu + l * T * 2 * I;
    float *act = a->act + l * T * I;

    qwen2vl_linear_forward(ops, mid, att, w->o_w + l * D * Q, NULL, n, d->Q, d->D, d->D);
    ops->add_f32(mid, mid, res, N * D);
    ops->rmsnorm_forward_f32(ln2, a->rstd2 + l * T, NULL, mid, w->post_norm + l * D, n, d->D,
                             (float)m->cfg.text.rms_norm_eps);
    qwen2vl_linear_forward(ops, gu, ln2, w->gate_w + l * I * D, NULL, n, d->D, d->I, 2 * d->I);
    qwen2vl_linear_forward(ops, gu + I, ln2, w->up_w + l * I * D, NULL, n, d->D, d->I, 2 * d->I);
    ops->swiglu_forward_f32(act, gu, gu + I, n, d->I, 2 * d->I);
    qwen2vl_linear_forward(ops, out, act, w->down_w + l * D * I, NULL, n, d->I, d->D, d->D);
    ops->add_f32(out, out, mid, N * D);
}

void qwen2vl_text_forward(qwen2vl_model *m, const int *input_ids)
{
    const ops_table *ops = m->ops;
    qwen2vl_acts *a = &m->a;
    txt_dims d = txt_dims_of(m);
    size_t T = d.T, D = d.D, Q = d.Q;
    int n_seqs = m->n_seqs, L = m->cfg.text.num_hidden_layers, n_keep = m->n_keep;
    ops->embedding_forward_f32(a->x, m->w.embed, input_ids, d.T, d.D);
    if (m->n_image_tokens)
        ops->scatter_rows_forward_f32(a->x, a->m_out, a->img_pos, m->n_image_tokens, d.D);
    for (int l = 0; l < L; l++) {
        const float *x = a->x + l * T * D;
        float *out = a->x + (l + 1) * T * D;
        txt_attn_forward(m, &d, l, n_seqs);
        if (l < L - 1 || n_keep == d.T) {
            txt_mlp_forward(m, &d, l, d.T, a->att + l * T * Q, x, out);
        } else {
            /* Past the last attention a row reaches only its own logits: the rows the loss does
             * not score stop here, packed out by a row gather (the embedding lookup). */
            float *ln2 = a->ln2 + l * T * D;
            ops->embedding_forward_f32(a->att_keep, a->att + l * T * Q, a->keep, n_keep, d.Q);
            ops->embedding_forward_f32(ln2, x, a->keep, n_keep, d.D);
            txt_mlp_forward(m, &d, l, n_keep, a->att_keep, ln2, out);
        }
    }
    ops->rmsnorm_forward_f32(a->hf, a->rstdf, NULL, a->x + (size_t)L * T * D, m->w.norm, n_keep,
                             d.D, (float)m->cfg.text.rms_norm_eps);
}

/* MLP half of layer l on n rows, as txt_mlp_forward: dres [n, D] holds d(out) on entry and
 * d(mid) on return; datt [n, Q] gets d(att) (overwritten); att [n, Q] as in forward. */
static void txt_mlp_backward(qwen2vl_model *m, const txt_dims *d, int l, int n, const float *att,
                             float *dres, float *datt)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    qwen2vl_params *g = &m->g;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, I = d->I, Q = d->Q, N = (size_t)n;
    const float *mid = a->mid + l * T * D, *ln2 = a->ln2 + l * T * D;
    const float *gu = a->gu + l * T * 2 * I, *act = a->act + l * T * I;

    qwen2vl_linear_backward(ops, a->d_act, g->down_w + l * D * I, NULL, dres, act,
                            w->down_w + l * D * I, n, d->I, d->D, d->D, 0.0f);
    ops->fill_f32(a->d_gu, 0.0f, N * 2 * I);
    ops->swiglu_backward_f32(a->d_gu, a->d_gu + I, a->d_act, gu, gu + I, n, d->I, 2 * d->I);
    qwen2vl_linear_backward(ops, a->d_ln, g->gate_w + l * I * D, NULL, a->d_gu, ln2,
                            w->gate_w + l * I * D, n, d->D, d->I, 2 * d->I, 0.0f);
    qwen2vl_linear_backward(ops, a->d_ln, g->up_w + l * I * D, NULL, a->d_gu + I, ln2,
                            w->up_w + l * I * D, n, d->D, d->I, 2 * d->I, 1.0f);
    ops->rmsnorm_backward_f32(dres, g->post_norm + l * D, a->d_ln, mid, w->post_norm + l * D,
                              a->rstd2 + l * T, n, d->D);
    qwen2vl_linear_backward(ops, datt, g->o_w + l * D * Q, NULL, dres, att, w->o_w + l * D * Q, n,
                            d->Q, d->D, d->D, 0.0f);
}

/* Attention half of layer l on all T rows: a.d_att holds d(att); d_res, which holds d(mid) on
 * entry, holds d(layer input) on return. */
static void txt_attn_backward(qwen2vl_model *m, const txt_dims *d, int l, int n_seqs)
{
    const ops_table *ops = m->ops;
    const qwen2vl_params *w = &m->w;
    qwen2vl_params *g = &m->g;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, Q = d->Q, K = d->K, W = d->W;
    const float *x = a->x + l * T * D, *ln1 = a->ln1 + l * T * D, *qkv = a->qkv + l * T * W;
    const float *att = a->att + l * T * Q;

    ops->fill_f32(a->d_qkv, 0.0f, T * W);
    ops_attn at = txt_attn(m, d, n_seqs);
    ops->attention_backward_f32(a->d_qkv, a->d_qkv + Q, a->d_qkv + Q + K, a->d_att, qkv, qkv + Q,
                                qkv + Q + K, att, a->lse + l * T * d->H, &at);
    ops_rope rope = txt_rope(m);
    ops->rope_backward_f32(a->d_qkv, a->pos, d->T, d->H + d->KV, d->W, &rope);
    qwen2vl_linear_backward(ops, a->d_ln, g->q_w + l * Q * D, g->q_b + l * Q, a->d_qkv, ln1,
                            w->q_w + l * Q * D, d->T, d->D, d->Q, d->W, 0.0f);
    qwen2vl_linear_backward(ops, a->d_ln, g->k_w + l * K * D, g->k_b + l * K, a->d_qkv + Q, ln1,
                            w->k_w + l * K * D, d->T, d->D, d->K, d->W, 1.0f);
    qwen2vl_linear_backward(ops, a->d_ln, g->v_w + l * K * D, g->v_b + l * K, a->d_qkv + Q + K,
                            ln1, w->v_w + l * K * D, d->T, d->D, d->K, d->W, 1.0f);
    ops->rmsnorm_backward_f32(a->d_res, g->in_norm + l * D, a->d_ln, x, w->in_norm + l * D,
                              a->rstd1 + l * T, d->T, d->D);
}

/* The last layer of a training pass, whose MLP half ran on the n_keep scored rows: their
 * gradients (in a.d_keep) are scattered back to full rows for the attention half. */
static void txt_last_layer_backward(qwen2vl_model *m, const txt_dims *d, int l, int n_seqs)
{
    const ops_table *ops = m->ops;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, Q = d->Q;
    int n = m->n_keep;
    float *datt_keep = a->d_qkv;  /* free until the attention half zeroes it */
    txt_mlp_backward(m, d, l, n, a->att_keep, a->d_keep, datt_keep);
    ops->fill_f32(a->d_att, 0.0f, T * Q);
    ops->scatter_rows_forward_f32(a->d_att, datt_keep, a->keep, n, d->Q);
    ops->fill_f32(a->d_res, 0.0f, T * D);
    ops->scatter_rows_forward_f32(a->d_res, a->d_keep, a->keep, n, d->D);
    txt_attn_backward(m, d, l, n_seqs);
}

void qwen2vl_text_backward(qwen2vl_model *m, const int *input_ids, const float *dhf)
{
    const ops_table *ops = m->ops;
    qwen2vl_acts *a = &m->a;
    txt_dims d = txt_dims_of(m);
    int n_seqs = m->n_seqs;
    int L = m->cfg.text.num_hidden_layers, n_keep = m->n_keep, packed = n_keep < d.T;
    float *dtop = packed ? a->d_keep : a->d_res;
    ops->fill_f32(dtop, 0.0f, (size_t)n_keep * d.D);
    ops->rmsnorm_backward_f32(dtop, m->g.norm, dhf, a->x + (size_t)L * d.T * d.D, m->w.norm,
                              a->rstdf, n_keep, d.D);
    qwen2vl_ready(m, m->g.norm, (size_t)d.D);
    for (int l = L - 1; l >= 0; l--) {
        if (l == L - 1 && packed) {
            txt_last_layer_backward(m, &d, l, n_seqs);
        } else {
            size_t T = d.T, Q = d.Q;
            txt_mlp_backward(m, &d, l, d.T, a->att + l * T * Q, a->d_res, a->d_att);
            txt_attn_backward(m, &d, l, n_seqs);
        }
        qwen2vl_ready_text_layer(m, l);
    }
    /* The image rows' gradient goes to the merger, and not on to the <|image_pad|> embedding. */
    if (m->n_image_tokens) {
        ops->fill_f32(a->dm_out, 0.0f, (size_t)m->n_image_tokens * d.D);
        ops->scatter_rows_backward_f32(a->dm_out, a->d_res, a->img_pos, m->n_image_tokens, d.D);
    }
    ops->embedding_backward_f32(m->g.embed, a->d_res, input_ids, d.T, d.D);
    /* tied: the LM head's share landed here first, so the embedding is final only now */
    qwen2vl_ready(m, m->g.embed, (size_t)m->cfg.text.vocab_size * d.D);
}
