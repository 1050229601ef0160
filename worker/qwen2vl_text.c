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
        int len = m->hi.cu[s + 1] - m->hi.cu[s];  /* host mirror: launch shapes */
        if (len > max_len) max_len = len;
    }
    ops_attn at = {
        .cu_seqlens = m->a.i.cu, .num_seqs = n_seqs, .total_tokens = d->T, .max_seqlen = max_len,
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
    const qwen2vl_params *w = &m->w;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, Q = d->Q, K = d->K, W = d->W;
    const qwen2vl_tx *x = qx(m, a->x, l * T * D);
    qwen2vl_tx *ln1 = qx(m, a->ln1, l * T * D), *qkv = qx(m, a->qkv, l * T * W);

    mp_rmsnorm_forward(m, ln1, a->rstd1 + l * T, x, qw(m, w->in_norm, l * D), d->T, d->D,
                       (float)m->cfg.text.rms_norm_eps);
    mp_linear_forward(m, qkv, ln1, qw(m, w->q_w, l * Q * D), qw(m, w->q_b, l * Q), d->T, d->D,
                      d->Q, d->W);
    mp_linear_forward(m, qx(m, qkv, Q), ln1, qw(m, w->k_w, l * K * D), qw(m, w->k_b, l * K), d->T,
                      d->D, d->K, d->W);
    mp_linear_forward(m, qx(m, qkv, Q + K), ln1, qw(m, w->v_w, l * K * D), qw(m, w->v_b, l * K),
                      d->T, d->D, d->K, d->W);
    /* k's heads follow q's in the row: one call turns both, cos/sin once per token */
    ops_rope rope = txt_rope(m);
    mp_rope_forward(m, qkv, a->i.pos, d->T, d->H + d->KV, d->W, &rope);
    ops_attn at = txt_attn(m, d, n_seqs);
    mp_attention_forward(m, qx(m, a->att, l * T * Q), a->lse + l * T * d->H, qkv, qx(m, qkv, Q),
                         qx(m, qkv, Q + K), &at);
}

/* MLP half of layer l on n rows packed from the start of the layer's buffers: mid = att W_o^T +
 * res, ln2, SwiGLU, out = mid + down(act). att [n, Q]; res [n, D] may be ln2's buffer (it is
 * read before ln2 is written); out [n, D]. */
static void txt_mlp_forward(qwen2vl_model *m, const txt_dims *d, int l, int n,
                            const qwen2vl_tx *att, const qwen2vl_tx *res, qwen2vl_tx *out)
{
    const qwen2vl_params *w = &m->w;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, I = d->I, Q = d->Q, N = (size_t)n;
    qwen2vl_tx *mid = qx(m, a->mid, l * T * D), *ln2 = qx(m, a->ln2, l * T * D);
    qwen2vl_tx *gu = qx(m, a->gu, l * T * 2 * I), *act = qx(m, a->act, l * T * I);

    mp_linear_forward(m, mid, att, qw(m, w->o_w, l * D * Q), NULL, n, d->Q, d->D, d->D);
    mp_add(m, mid, mid, res, N * D);
    mp_rmsnorm_forward(m, ln2, a->rstd2 + l * T, mid, qw(m, w->post_norm, l * D), n, d->D,
                       (float)m->cfg.text.rms_norm_eps);
    mp_linear_forward(m, gu, ln2, qw(m, w->gate_w, l * I * D), NULL, n, d->D, d->I, 2 * d->I);
    mp_linear_forward(m, qx(m, gu, I), ln2, qw(m, w->up_w, l * I * D), NULL, n, d->D, d->I,
                      2 * d->I);
    mp_swiglu_forward(m, act, gu, qx(m, gu, I), n, d->I, 2 * d->I);
    mp_linear_forward(m, out, act, qw(m, w->down_w, l * D * I), NULL, n, d->I, d->D, d->D);
    mp_add(m, out, out, mid, N * D);
}

void qwen2vl_text_forward(qwen2vl_model *m, const int *input_ids)
{
    qwen2vl_acts *a = &m->a;
    txt_dims d = txt_dims_of(m);
    size_t T = d.T, D = d.D, Q = d.Q;
    int n_seqs = m->n_seqs, L = m->cfg.text.num_hidden_layers, n_keep = m->n_keep;
    mp_gather(m, a->x, qw(m, m->w.embed, 0), input_ids, d.T, d.D);
    if (m->n_image_tokens)
        mp_scatter_forward(m, a->x, a->m_out, a->i.img_pos, m->n_image_tokens, d.D);
    for (int l = 0; l < L; l++) {
        const qwen2vl_tx *x = qx(m, a->x, l * T * D);
        qwen2vl_tx *out = qx(m, a->x, (l + 1) * T * D);
        txt_attn_forward(m, &d, l, n_seqs);
        if (l < L - 1 || n_keep == d.T) {
            txt_mlp_forward(m, &d, l, d.T, qx(m, a->att, l * T * Q), x, out);
        } else {
            /* Past the last attention a row reaches only its own logits: the rows the loss does
             * not score stop here, packed out by a row gather (the embedding lookup). */
            qwen2vl_tx *ln2 = qx(m, a->ln2, l * T * D);
            mp_gather(m, a->att_keep, qx(m, a->att, l * T * Q), a->i.keep, n_keep, d.Q);
            mp_gather(m, ln2, x, a->i.keep, n_keep, d.D);
            txt_mlp_forward(m, &d, l, n_keep, a->att_keep, ln2, out);
        }
    }
    mp_rmsnorm_forward(m, a->hf, a->rstdf, qx(m, a->x, (size_t)L * T * D), qw(m, m->w.norm, 0),
                       n_keep, d.D, (float)m->cfg.text.rms_norm_eps);
}

/* MLP half of layer l on n rows, as txt_mlp_forward: dres [n, D] holds d(out) on entry and
 * d(mid) on return; datt [n, Q] gets d(att) (overwritten); att [n, Q] as in forward. */
static void txt_mlp_backward(qwen2vl_model *m, const txt_dims *d, int l, int n,
                             const qwen2vl_tx *att, qwen2vl_tx *dres, qwen2vl_tx *datt)
{
    const qwen2vl_params *w = &m->w;
    qwen2vl_params *g = &m->g;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, I = d->I, Q = d->Q, N = (size_t)n;
    const qwen2vl_tx *mid = qx(m, a->mid, l * T * D), *ln2 = qx(m, a->ln2, l * T * D);
    const qwen2vl_tx *gu = qx(m, a->gu, l * T * 2 * I), *act = qx(m, a->act, l * T * I);

    mp_linear_backward(m, a->d_act, g->down_w + l * D * I, NULL, dres, act,
                       qw(m, w->down_w, l * D * I), n, d->I, d->D, d->D, 0.0f);
    mp_zero(m, a->d_gu, N * 2 * I);
    mp_swiglu_backward(m, a->d_gu, qx(m, a->d_gu, I), a->d_act, gu, qx(m, gu, I), n, d->I,
                       2 * d->I);
    mp_linear_backward(m, a->d_ln, g->gate_w + l * I * D, NULL, a->d_gu, ln2,
                       qw(m, w->gate_w, l * I * D), n, d->D, d->I, 2 * d->I, 0.0f);
    mp_linear_backward(m, a->d_ln, g->up_w + l * I * D, NULL, qx(m, a->d_gu, I), ln2,
                       qw(m, w->up_w, l * I * D), n, d->D, d->I, 2 * d->I, 1.0f);
    mp_rmsnorm_backward(m, dres, g->post_norm + l * D, a->d_ln, mid, qw(m, w->post_norm, l * D),
                        a->rstd2 + l * T, n, d->D);
    mp_linear_backward(m, datt, g->o_w + l * D * Q, NULL, dres, att, qw(m, w->o_w, l * D * Q), n,
                       d->Q, d->D, d->D, 0.0f);
}

/* Attention half of layer l on all T rows: a.d_att holds d(att); d_res, which holds d(mid) on
 * entry, holds d(layer input) on return. */
static void txt_attn_backward(qwen2vl_model *m, const txt_dims *d, int l, int n_seqs)
{
    const qwen2vl_params *w = &m->w;
    qwen2vl_params *g = &m->g;
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, Q = d->Q, K = d->K, W = d->W;
    const qwen2vl_tx *x = qx(m, a->x, l * T * D), *ln1 = qx(m, a->ln1, l * T * D);
    const qwen2vl_tx *qkv = qx(m, a->qkv, l * T * W), *att = qx(m, a->att, l * T * Q);

    mp_zero(m, a->d_qkv, T * W);
    ops_attn at = txt_attn(m, d, n_seqs);
    mp_attention_backward(m, a->d_qkv, qx(m, a->d_qkv, Q), qx(m, a->d_qkv, Q + K), a->d_att, qkv,
                          qx(m, qkv, Q), qx(m, qkv, Q + K), att, a->lse + l * T * d->H, &at);
    ops_rope rope = txt_rope(m);
    mp_rope_backward(m, a->d_qkv, a->i.pos, d->T, d->H + d->KV, d->W, &rope);
    mp_linear_backward(m, a->d_ln, g->q_w + l * Q * D, g->q_b + l * Q, a->d_qkv, ln1,
                       qw(m, w->q_w, l * Q * D), d->T, d->D, d->Q, d->W, 0.0f);
    mp_linear_backward(m, a->d_ln, g->k_w + l * K * D, g->k_b + l * K, qx(m, a->d_qkv, Q), ln1,
                       qw(m, w->k_w, l * K * D), d->T, d->D, d->K, d->W, 1.0f);
    mp_linear_backward(m, a->d_ln, g->v_w + l * K * D, g->v_b + l * K, qx(m, a->d_qkv, Q + K), ln1,
                       qw(m, w->v_w, l * K * D), d->T, d->D, d->K, d->W, 1.0f);
    mp_rmsnorm_backward(m, a->d_res, g->in_norm + l * D, a->d_ln, x, qw(m, w->in_norm, l * D),
                        a->rstd1 + l * T, d->T, d->D);
}

/* The last layer of a training pass, whose MLP half ran on the n_keep scored rows: their
 * gradients (in a.d_keep) are scattered back to full rows for the attention half. */
static void txt_last_layer_backward(qwen2vl_model *m, const txt_dims *d, int l, int n_seqs)
{
    qwen2vl_acts *a = &m->a;
    size_t T = d->T, D = d->D, Q = d->Q;
    int n = m->n_keep;
    qwen2vl_tx *datt_keep = a->d_qkv;  /* free until the attention half zeroes it */
    txt_mlp_backward(m, d, l, n, a->att_keep, a->d_keep, datt_keep);
    mp_zero(m, a->d_att, T * Q);
    mp_scatter_forward(m, a->d_att, datt_keep, a->i.keep, n, d->Q);
    mp_zero(m, a->d_res, T * D);
    mp_scatter_forward(m, a->d_res, a->d_keep, a->i.keep, n, d->D);
    txt_attn_backward(m, d, l, n_seqs);
}

void qwen2vl_text_backward(qwen2vl_model *m, const int *input_ids, const qwen2vl_tx *dhf)
{
    qwen2vl_acts *a = &m->a;
    txt_dims d = txt_dims_of(m);
    int n_seqs = m->n_seqs;
    int L = m->cfg.text.num_hidden_layers, n_keep = m->n_keep, packed = n_keep < d.T;
    qwen2vl_tx *dtop = packed ? a->d_keep : a->d_res;
    mp_zero(m, dtop, (size_t)n_keep * d.D);
    mp_rmsnorm_backward(m, dtop, m->g.norm, dhf, qx(m, a->x, (size_t)L * d.T * d.D),
                        qw(m, m->w.norm, 0), a->rstdf, n_keep, d.D);
    qwen2vl_ready(m, m->g.norm, (size_t)d.D);
    for (int l = L - 1; l >= 0; l--) {
        if (l == L - 1 && packed) {
            txt_last_layer_backward(m, &d, l, n_seqs);
        } else {
            size_t T = d.T, Q = d.Q;
            txt_mlp_backward(m, &d, l, d.T, qx(m, a->att, l * T * Q), a->d_res, a->d_att);
            txt_attn_backward(m, &d, l, n_seqs);
        }
        qwen2vl_ready_text_layer(m, l);
    }
    /* The image rows' gradient goes to the merger, and not on to the <|image_pad|> embedding. */
    if (m->n_image_tokens) {
        mp_zero(m, a->dm_out, (size_t)m->n_image_tokens * d.D);
        mp_scatter_backward(m, a->dm_out, a->d_res, a->i.img_pos, m->n_image_tokens, d.D);
    }
    mp_embedding_backward(m, m->g.embed, a->d_res, input_ids, d.T, d.D);
    /* tied: the LM head's share landed here first, so the embedding is final only now */
    qwen2vl_ready(m, m->g.embed, (size_t)m->cfg.text.vocab_size * d.D);
}
