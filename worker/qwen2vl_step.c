/* qwen2vl_step: one packed batch through the model: its checks and index planning, the forward
 * pass, the loss, the backward pass and the logits.
 *
 * The one idea: everything derived from the batch's integers (M-RoPE ids, vision (h, w) ids,
 * per-image and per-sequence segment bounds, image-token rows, shifted labels) is computed once
 * into the planned int buffers before any float work, and every inconsistency of the batch is
 * refused there, so the float passes below run with no checks and no allocation. That planning
 * happens on the host, in the host mirror of the int block (qwen2vl_internal.h); on a backend
 * the host cannot touch, the batch then reaches it in two uploads per pass (the ints with the
 * token ids, the pixels), and the loss comes back in one 4-byte download at the pass's end (or
 * stays in a backend slot until qwen2vl_loss_read reads the step's). Because the planning and
 * the uploads come first, a training pass's device work is a fixed sequence of ops for a given
 * set of host values (graph_key_of): with graphs on it is captured once per such key and
 * replayed. */
#include "qwen2vl_internal.h"

#include <string.h>

static int batch_check_shape(const qwen2vl_model *m, const qwen2vl_batch *b, adapt_error *err)
{
    const qwen2vl_budget *bud = &m->budget;
    if (b->n_tokens < 1 || b->n_tokens > bud->max_tokens)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: batch of %d tokens, budget is 1..%d",
                          b->n_tokens, bud->max_tokens);
    if (b->n_seqs < 1 || b->n_seqs > bud->max_seqs)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: batch of %d sequences, budget is 1..%d",
                          b->n_seqs, bud->max_seqs);
    if (b->n_images < 0 || b->n_images > bud->max_images)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: batch of %d images, budget is 0..%d",
                          b->n_images, bud->max_images);
    if (b->cu_seqlens[0] != 0 || b->cu_seqlens[b->n_seqs] != b->n_tokens)
        return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: cu_seqlens must run from 0 to n_tokens %d",
                          b->n_tokens);
    for (int s = 0; s < b->n_seqs; s++)
        if (b->cu_seqlens[s + 1] <= b->cu_seqlens[s])
            return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: sequence %d of the batch is empty", s);
    int V = m->cfg.text.vocab_size;
    for (int t = 0; t < b->n_tokens; t++) {
        if (b->input_ids[t] < 0 || b->input_ids[t] >= V)
            return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: input_ids[%d] = %d outside [0, %d)", t,
                              b->input_ids[t], V);
        if (b->labels && b->labels[t] != OPS_LABEL_IGNORE && (b->labels[t] < 0 || b->labels[t] >= V))
            return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: labels[%d] = %d outside [0, %d)", t,
                              b->labels[t], V);
    }
    return 0;
}

/* Vision: (h, w) of every patch in the merge-major order, and one attention segment per image. */
static int batch_plan_vision(qwen2vl_model *m, const qwen2vl_batch *b, adapt_error *err)
{
    int ms = m->cfg.vision.spatial_merge_size;
    long n = 0;
    for (int i = 0; i < b->n_images; i++) {
        const int *g = b->image_grid_thw + 3 * i;
        if (g[0] != 1)
            return adapt_fail(err, ADAPT_EUNSUPPORTED,
                              "qwen2vl: image %d has grid_t %d; only still images (grid_t 1) are "
                              "implemented", i, g[0]);
        if (g[1] < ms || g[2] < ms || g[1] % ms || g[2] % ms)
            return adapt_fail(err, ADAPT_EINVAL,
                              "qwen2vl: image %d grid %dx%d is not a multiple of the merge size %d",
                              i, g[1], g[2], ms);
        n += (long)g[1] * g[2];
    }
    if (n > m->budget.max_patches)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: %ld image patches, budget is %d", n,
                          m->budget.max_patches);
    int N = (int)n, j = 0;
    int *ph = m->hi.v_pos, *pw = m->hi.v_pos + N;
    m->hi.v_cu[0] = 0;
    for (int i = 0; i < b->n_images; i++) {
        int gh = b->image_grid_thw[3 * i + 1], gw = b->image_grid_thw[3 * i + 2];
        for (int hb = 0; hb < gh / ms; hb++)
            for (int wb = 0; wb < gw / ms; wb++)
                for (int r = 0; r < ms; r++)
                    for (int c = 0; c < ms; c++, j++) {
                        ph[j] = hb * ms + r;
                        pw[j] = wb * ms + c;
                    }
        m->hi.v_cu[i + 1] = j;
    }
    m->n_patches = N;
    m->n_images = b->n_images;
    return 0;
}

/* Text: M-RoPE ids per sequence, the image-token rows, labels shifted within each sequence. */
static int batch_plan_text(qwen2vl_model *m, const qwen2vl_batch *b, adapt_error *err)
{
    int T = b->n_tokens, img = m->cfg.image_token_id, cursor = 0;
    qwen2vl_ints *h = &m->hi;
    memcpy(h->cu, b->cu_seqlens, sizeof(int) * (size_t)(b->n_seqs + 1));
    for (int s = 0; s < b->n_seqs; s++) {
        int s0 = b->cu_seqlens[s], len = b->cu_seqlens[s + 1] - s0;
        int rc = qwen2vl_rope_index(b->input_ids + s0, len, img, m->cfg.vision.spatial_merge_size,
                                    b->image_grid_thw, b->n_images, &cursor, h->pos + s0, T, err);
        if (rc) return adapt_error_prefix(err, "sequence %d: ", s);
        for (int t = s0; t < s0 + len; t++)
            h->targets[t] = (b->labels && t + 1 < s0 + len) ? b->labels[t + 1] : OPS_LABEL_IGNORE;
    }
    if (cursor != b->n_images)
        return adapt_fail(err, ADAPT_EINVAL,
                          "qwen2vl: %d images given but only %d <|image_pad|> runs in the batch",
                          b->n_images, cursor);
    int k = 0;
    for (int t = 0; t < T; t++)
        if (b->input_ids[t] == img) h->img_pos[k++] = t;
    m->n_image_tokens = k;
    m->n_tokens = T;
    m->n_seqs = b->n_seqs;
    return 0;
}

static int batch_plan(qwen2vl_model *m, const qwen2vl_batch *b, adapt_error *err)
{
    m->have_forward = 0;
    int rc = batch_check_shape(m, b, err);
    if (!rc) rc = batch_plan_vision(m, b, err);
    if (!rc) rc = batch_plan_text(m, b, err);
    return rc;
}

/* A training pass carries only the scored rows past the last layer's attention (see
 * qwen2vl_text.c); packing pays only when some rows are not scored, and a batch with none scored
 * keeps every row (its loss and gradients are zero either way). */
static void plan_keep(qwen2vl_model *m, int training)
{
    qwen2vl_ints *h = &m->hi;
    int n = 0, T = m->n_tokens;
    if (training)
        for (int t = 0; t < T; t++)
            if (h->targets[t] != OPS_LABEL_IGNORE) {
                h->keep[n] = t;
                h->keep_targets[n++] = h->targets[t];
            }
    m->n_keep = n > 0 ? n : T;
}

/* Where the host may touch backend memory, the planning wrote straight into the int block and the
 * ops read the batch's own arrays: nothing to copy. Elsewhere the token ids join the mirror (ids
 * is carved last, so the prefix of the block up to them holds every planned int) and that prefix
 * goes up in one upload, the pixels in a second. */
static void batch_stage(qwen2vl_model *m, const qwen2vl_batch *b)
{
    const ops_table *ops = m->ops;
    if (ops->host_accessible) {
        m->pass_ids = b->input_ids;
        m->pass_pixels = b->pixel_values;
        return;
    }
    const qwen2vl_ints *h = &m->hi;
    memcpy(h->ids, b->input_ids, sizeof(int) * (size_t)m->n_tokens);
    size_t used = (size_t)(h->ids + m->n_tokens - m->host_ints);
    ops->mem_upload(m->act_ints, m->host_ints, used * sizeof(int));
    const model_config_vision *v = &m->cfg.vision;
    size_t P = (size_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    if (m->n_patches)
        ops->mem_upload(m->a.pixels, b->pixel_values, sizeof(float) * (size_t)m->n_patches * P);
    m->pass_ids = m->a.i.ids;
    m->pass_pixels = m->a.pixels;
}

static void forward_ops(qwen2vl_model *m)
{
    if (m->n_patches) qwen2vl_vision_forward(m, m->pass_pixels);
    qwen2vl_text_forward(m, m->pass_ids);
}

static void forward_passes(qwen2vl_model *m, const qwen2vl_batch *b, int training)
{
    plan_keep(m, training);
    batch_stage(m, b);
    forward_ops(m);
    m->have_forward = m->n_keep == m->n_tokens;
}

/* An inference model (qwen2vl_create_inference) has neither the activations a whole-batch pass
 * writes nor the gradients a backward accumulates: refused before anything is touched. */
static int refuse_inference(const qwen2vl_model *m, const char *what, adapt_error *err)
{
    if (!m->inference) return 0;
    return adapt_fail(err, ADAPT_EINVAL,
                      "qwen2vl: %s refused on an inference-only model (qwen2vl_create_inference "
                      "allocates no gradients or activations; create it with qwen2vl_create to "
                      "train, or use qwen2vl_infer_step)", what);
}

int qwen2vl_forward(qwen2vl_model *m, const qwen2vl_batch *b, float *loss, adapt_error *err)
{
    int refused = refuse_inference(m, "qwen2vl_forward", err);
    if (refused) return refused;
    int rc = batch_plan(m, b, err);
    if (rc) return rc;
    forward_passes(m, b, 0);
    if (loss) {
        *loss = 0.0f;
        if (b->labels) {
            mp_lmhead_xent(m, m->a.loss, NULL, NULL, m->a.hf, qw(m, m->w.lm_head, 0),
                           m->a.i.targets, m->n_tokens, b->loss_normaliser);
            m->ops->mem_download(loss, m->a.loss, sizeof(float));
        }
    }
    return 0;
}

/* The ranges, in the order qwen2vl.h promises (the layout stacks each field's layers, so one
 * layer is one range per field). */
void qwen2vl_ready_text_layer(const qwen2vl_model *m, int l)
{
    const model_config_text *t = &m->cfg.text;
    size_t D = (size_t)t->hidden_size, I = (size_t)t->intermediate_size;
    size_t Q = (size_t)t->num_attention_heads * t->head_dim;
    size_t K = (size_t)t->num_key_value_heads * t->head_dim, L = (size_t)l;
    const qwen2vl_params *g = &m->g;
    qwen2vl_ready(m, g->in_norm + L * D, D);
    qwen2vl_ready(m, g->q_w + L * Q * D, Q * D);
    qwen2vl_ready(m, g->q_b + L * Q, Q);
    qwen2vl_ready(m, g->k_w + L * K * D, K * D);
    qwen2vl_ready(m, g->k_b + L * K, K);
    qwen2vl_ready(m, g->v_w + L * K * D, K * D);
    qwen2vl_ready(m, g->v_b + L * K, K);
    qwen2vl_ready(m, g->o_w + L * D * Q, D * Q);
    qwen2vl_ready(m, g->post_norm + L * D, D);
    qwen2vl_ready(m, g->gate_w + L * I * D, I * D);
    qwen2vl_ready(m, g->up_w + L * I * D, I * D);
    qwen2vl_ready(m, g->down_w + L * D * I, D * I);
}

/* ln_q through mlp.2's bias lie back to back in the layout: one range. */
void qwen2vl_ready_merger(const qwen2vl_model *m)
{
    qwen2vl_ready(m, m->g.m_ln_w, (size_t)(m->g.embed - m->g.m_ln_w));
}

void qwen2vl_ready_vision_block(const qwen2vl_model *m, int l)
{
    const model_config_vision *v = &m->cfg.vision;
    size_t E = (size_t)v->embed_dim, M = (size_t)v->mlp_dim, L = (size_t)l;
    const qwen2vl_params *g = &m->g;
    qwen2vl_ready(m, g->v_norm1_w + L * E, E);
    qwen2vl_ready(m, g->v_norm1_b + L * E, E);
    qwen2vl_ready(m, g->v_qkv_w + L * 3 * E * E, 3 * E * E);
    qwen2vl_ready(m, g->v_qkv_b + L * 3 * E, 3 * E);
    qwen2vl_ready(m, g->v_proj_w + L * E * E, E * E);
    qwen2vl_ready(m, g->v_proj_b + L * E, E);
    qwen2vl_ready(m, g->v_norm2_w + L * E, E);
    qwen2vl_ready(m, g->v_norm2_b + L * E, E);
    qwen2vl_ready(m, g->v_fc1_w + L * M * E, M * E);
    qwen2vl_ready(m, g->v_fc1_b + L * M, M);
    qwen2vl_ready(m, g->v_fc2_w + L * E * M, E * M);
    qwen2vl_ready(m, g->v_fc2_b + L * E, E);
}

void qwen2vl_ready_vision_from(const qwen2vl_model *m, int from)
{
    const qwen2vl_params *g = &m->g;
    for (int l = from; l >= 0; l--) qwen2vl_ready_vision_block(m, l);
    qwen2vl_ready(m, g->patch_embed, (size_t)(g->v_norm1_w - g->patch_embed));
}

static void ready_lm_head(const qwen2vl_model *m)
{
    const model_config_text *t = &m->cfg.text;
    if (!m->cfg.tie_word_embeddings)
        qwen2vl_ready(m, m->g.lm_head, (size_t)t->vocab_size * t->hidden_size);
}

static void ready_text_rest(const qwen2vl_model *m)
{
    const model_config_text *t = &m->cfg.text;
    qwen2vl_ready(m, m->g.norm, (size_t)t->hidden_size);
    for (int l = t->num_hidden_layers - 1; l >= 0; l--) qwen2vl_ready_text_layer(m, l);
    qwen2vl_ready(m, m->g.embed, (size_t)t->vocab_size * t->hidden_size);
}

void qwen2vl_grads_ready_all(qwen2vl_model *m, qwen2vl_grads_ready_fn ready, void *ctx)
{
    if (m->inference) return;   /* no gradient buffer: no ranges to report */
    m->ready = ready;
    m->ready_ctx = ctx;
    ready_lm_head(m);
    ready_text_rest(m);
    qwen2vl_ready_merger(m);
    qwen2vl_ready_vision_from(m, m->cfg.vision.depth - 1);
    m->ready = NULL;
    m->ready_ctx = NULL;
}

/* The device work of a training pass, after the planning and the uploads: forward, the fused
 * loss, backward. Nothing here touches memory outside the op table (no copy, no wait): it is
 * what a graph records. Host values reach its ops only through the fields graph_key_of reads. */
static void train_ops(qwen2vl_model *m, float normaliser)
{
    const model_config_text *t = &m->cfg.text;
    qwen2vl_acts *a = &m->a;
    forward_ops(m);
    int packed = m->n_keep < m->n_tokens;
    /* d_ln is free until the layers' backward, which runs after the final norm's */
    qwen2vl_tx *dhf = a->d_ln;
    mp_zero(m, dhf, (size_t)m->n_keep * t->hidden_size);
    mp_lmhead_xent(m, a->loss, dhf, m->g.lm_head, a->hf, qw(m, m->w.lm_head, 0),
                   packed ? a->i.keep_targets : a->i.targets, m->n_keep, normaliser);
    ready_lm_head(m);
    qwen2vl_text_backward(m, m->pass_ids, dhf);
    if (m->n_patches) {
        qwen2vl_vision_backward(m, m->pass_pixels);
    } else {
        qwen2vl_ready_merger(m);
        qwen2vl_ready_vision_from(m, m->cfg.vision.depth - 1);
    }
}

/* Every host value an op of train_ops takes, and where it comes from (the rest of their
 * arguments are fixed at creation: the config's dims, eps, theta and heads, the buffers' and
 * weights' addresses, the loss's scratch length):
 *   n_tokens: every decoder op's row count, the attention's total_tokens, the embedding's T;
 *   n_seqs: the decoder attention's num_seqs; its max_seqlen: the longest sequence;
 *   n_patches: every vision op's row count (and G = n_patches / merge^2 for the merger), whether
 *     the vision tower runs; n_images, the largest image: the vision attention's num_seqs and
 *     max_seqlen;
 *   n_image_tokens: the image-feature scatter's row count, whether it runs;
 *   n_keep: the rows past the last attention (and whether the packed path runs: n_keep <
 *     n_tokens picks keep_targets or targets, the gathers and scatters of the last layer);
 *   the loss normaliser: a scalar argument of the fused loss;
 *   the frozen towers: which gradients the vision backward passes (NULL or not) and whether
 *     it runs; the precision: which entries run (fixed per model, kept for clarity);
 *   pass_ids, pass_pixels: the addresses the ops read the batch at (the staging buffers on a
 *     backend that is not host_accessible, else the caller's own arrays, which vary). */
static qwen2vl_graph_key graph_key_of(const qwen2vl_model *m, float normaliser)
{
    qwen2vl_graph_key k;
    memset(&k, 0, sizeof k);  /* memcmp: no stray padding bytes */
    k.n_tokens = m->n_tokens;
    k.n_seqs = m->n_seqs;
    k.n_patches = m->n_patches;
    k.n_images = m->n_images;
    k.n_image_tokens = m->n_image_tokens;
    k.n_keep = m->n_keep;
    for (int s = 0; s < m->n_seqs; s++) {
        int len = m->hi.cu[s + 1] - m->hi.cu[s];
        if (len > k.max_seqlen) k.max_seqlen = len;
    }
    for (int i = 0; i < m->n_images; i++) {
        int len = m->hi.v_cu[i + 1] - m->hi.v_cu[i];
        if (len > k.max_image_patches) k.max_image_patches = len;
    }
    memcpy(&k.normaliser_bits, &normaliser, sizeof k.normaliser_bits);
    k.frozen_vision = m->frozen[QWEN2VL_TOWER_VISION];
    k.frozen_merger = m->frozen[QWEN2VL_TOWER_MERGER];
    k.bf16 = m->bf16;
    k.pass_ids = m->pass_ids;
    k.pass_pixels = m->pass_pixels;
    return k;
}

/* train_ops through the graph of this pass's key: replayed when cached, else captured (into a
 * free slot or over the least recently used graph) and launched. */
static int train_ops_graph(qwen2vl_model *m, float normaliser, adapt_error *err)
{
    const ops_table *ops = m->ops;
    qwen2vl_graph_key key = graph_key_of(m, normaliser);
    qwen2vl_graph *slot = NULL, *victim = NULL;
    for (int i = 0; i < QWEN2VL_GRAPHS; i++) {
        qwen2vl_graph *g = &m->graphs[i];
        if (g->graph && memcmp(&g->key, &key, sizeof key) == 0) {
            slot = g;
            break;
        }
        /* a free slot first, else the least recently launched */
        if (!victim || (victim->graph && (!g->graph || g->last_use < victim->last_use)))
            victim = g;
    }
    char msg[256] = "";
    if (!slot && m->graphs_on == QWEN2VL_GRAPHS_ON_REPEAT) {
        /* capture only a key seen before: a first sighting runs op by op and is remembered */
        int seen = -1;
        for (int i = 0; i < m->n_graph_seen && seen < 0; i++)
            if (memcmp(&m->graph_seen[i], &key, sizeof key) == 0) seen = i;
        if (seen < 0) {
            m->graph_seen[m->graph_seen_next] = key;
            m->graph_seen_next = (m->graph_seen_next + 1) % QWEN2VL_GRAPH_SEEN;
            if (m->n_graph_seen < QWEN2VL_GRAPH_SEEN) m->n_graph_seen++;
            m->graph_direct++;
            train_ops(m, normaliser);
            return 0;
        }
        memset(&m->graph_seen[seen], 0xff, sizeof key);  /* captured now: forget it here */
    }
    if (slot) {
        m->graph_hits++;
    } else {
        slot = victim;
        if (slot->graph) ops->graph_free(slot->graph);
        slot->graph = NULL;
        if (ops->graph_begin(msg, sizeof msg))
            return adapt_fail(err, ADAPT_EIO, "qwen2vl: graph capture: %s", msg);
        train_ops(m, normaliser);
        void *graph = NULL;
        if (ops->graph_end(&graph, msg, sizeof msg))
            return adapt_fail(err, ADAPT_EIO, "qwen2vl: graph capture: %s", msg);
        slot->graph = graph;
        slot->key = key;
        m->graph_misses++;
    }
    slot->last_use = ++m->graph_clock;
    if (ops->graph_launch(slot->graph, msg, sizeof msg))
        return adapt_fail(err, ADAPT_EIO, "qwen2vl: graph launch: %s", msg);
    return 0;
}

int qwen2vl_set_graphs(qwen2vl_model *m, int policy)
{
    const ops_table *ops = m->ops;
    int can = !m->inference && ops->graph_begin && ops->graph_end && ops->graph_launch &&
              ops->graph_free;
    if (policy != QWEN2VL_GRAPHS_ALWAYS && policy != QWEN2VL_GRAPHS_ON_REPEAT) policy = 0;
    m->graphs_on = can ? policy : QWEN2VL_GRAPHS_OFF;
    return m->graphs_on;
}

unsigned long qwen2vl_graph_direct_passes(const qwen2vl_model *m) { return m->graph_direct; }

void qwen2vl_graph_counts(const qwen2vl_model *m, unsigned long *hits, unsigned long *misses)
{
    if (hits) *hits = m->graph_hits;
    if (misses) *misses = m->graph_misses;
}

/* Downloads the first n loss slots and adds them, in order, to the double sum. */
static void loss_fold(qwen2vl_model *m)
{
    float host[QWEN2VL_LOSS_SLOTS];
    if (m->n_loss_slots == 0) return;
    m->ops->mem_download(host, m->a.loss_slots, sizeof(float) * (size_t)m->n_loss_slots);
    for (int i = 0; i < m->n_loss_slots; i++) m->loss_folded += host[i];
    m->n_loss_slots = 0;
}

int qwen2vl_loss_read(qwen2vl_model *m, double *loss)
{
    *loss = 0.0;
    if (m->inference) return -1;
    loss_fold(m);
    *loss = m->loss_folded;
    return 0;
}

int qwen2vl_forward_backward_ready(qwen2vl_model *m, const qwen2vl_batch *b, float *loss,
                                   qwen2vl_grads_ready_fn ready, void *ctx, adapt_error *err)
{
    int refused = refuse_inference(m, "qwen2vl_forward_backward", err);
    if (refused) return refused;
    if (!b->labels) return adapt_fail(err, ADAPT_EINVAL, "qwen2vl: a backward pass needs labels");
    int rc = batch_plan(m, b, err);
    if (rc) return rc;
    plan_keep(m, 1);
    batch_stage(m, b);
    const ops_table *ops = m->ops;
    qwen2vl_acts *a = &m->a;
    /* the ready callback is host code run between ops (collectives of the bucketed all-reduce):
     * a graph cannot hold it, so such a pass is issued op by op */
    if (m->graphs_on && !ready) {
        rc = train_ops_graph(m, b->loss_normaliser, err);
        if (rc) return rc;
    } else {
        m->ready = ready;
        m->ready_ctx = ctx;
        train_ops(m, b->loss_normaliser);
        m->ready = NULL;
        m->ready_ctx = NULL;
    }
    m->have_forward = m->n_keep == m->n_tokens;
    /* the download waits for the ops before it: taken last, it does not stall the backward's
     * issue on a device backend. With no loss asked for, the pass's loss is kept in backend
     * memory for qwen2vl_loss_read: a device-side copy, no wait (a full set of slots is folded,
     * one wait per QWEN2VL_LOSS_SLOTS passes). */
    if (loss) {
        ops->mem_download(loss, a->loss, sizeof(float));
    } else {
        if (m->n_loss_slots == QWEN2VL_LOSS_SLOTS) loss_fold(m);
        ops->mem_copy(a->loss_slots + m->n_loss_slots++, a->loss, sizeof(float));
    }
    return 0;
}

int qwen2vl_forward_backward(qwen2vl_model *m, const qwen2vl_batch *b, float *loss,
                             adapt_error *err)
{
    return qwen2vl_forward_backward_ready(m, b, loss, NULL, NULL, err);
}

int qwen2vl_logits(qwen2vl_model *m, int row0, int n_rows, float *logits, adapt_error *err)
{
    if (!m->have_forward)
        return adapt_fail(err, ADAPT_EINVAL,
                          "qwen2vl: logits need a forward pass (qwen2vl_forward) first; a training "
                          "pass keeps only the scored rows' hidden states");
    if (row0 < 0 || n_rows < 0 || row0 + n_rows > m->n_tokens)
        return adapt_fail(err, ADAPT_ERANGE, "qwen2vl: logits rows [%d, %d) outside [0, %d)", row0,
                          row0 + n_rows, m->n_tokens);
    const ops_table *ops = m->ops;
    int D = m->cfg.text.hidden_size, V = m->cfg.text.vocab_size;
    const qwen2vl_tx *hf = qx(m, m->a.hf, (size_t)row0 * D);
    const qwen2vl_tx *head = qw(m, m->w.lm_head, 0);
    if (ops->host_accessible) {
        if (n_rows) mp_logits(m, logits, hf, head, n_rows);
        return 0;
    }
    /* The fused loss's scratch holds at least 256 rows of logits (loss_work_len_for) and is free
     * between passes: the rows go through it in chunks, each downloaded into the caller's. */
    int chunk = (int)(m->loss_work_len / (size_t)V);
    for (int r = 0; r < n_rows; r += chunk) {
        int n = n_rows - r < chunk ? n_rows - r : chunk;
        mp_logits(m, m->a.loss_work, qx(m, hf, (size_t)r * D), head, n);
        ops->mem_download(logits + (size_t)r * V, m->a.loss_work, sizeof(float) * (size_t)n * V);
    }
    return 0;
}
