/* tok_chat: chat rendering for Qwen2-VL and llava_llama_3 (see tok_chat.h for the design).
 *
 * Both families are the same shape — a header naming the role, the content, an end marker — so
 * one renderer walks the conversation and a small table per family spells the pieces. */
#include "tok_chat.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chat_layout {
    const char *head_open;      /* before the role name */
    const char *head_close;     /* after the role name */
    const char *turn_end;       /* after the content; trained with an assistant turn */
    const char *image_open;     /* around an image's placeholder run */
    const char *image_close;
    const char *image_pad;      /* the placeholder token, NULL: options.image_token_id */
    bool        bos;            /* starts with tokenizer_config's bos_token */
    const char *default_system;
} chat_layout;

static const chat_layout layouts[] = {
    [TOK_CHAT_QWEN2_VL] = {
        "<|im_start|>", "\n", "<|im_end|>\n", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
        false, "You are a helpful assistant.",
    },
    [TOK_CHAT_LLAVA_LLAMA_3] = {
        "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", "", "", NULL,
        true, "You are a helpful language and vision assistant. You are able to understand the "
              "visual content that the user provides, and assist the user with a variety of tasks "
              "using natural language.",
    },
};

const char *tok_chat_default_system(tok_chat_family family)
{
    return layouts[family].default_system;
}

int64_t tok_qwen2_vl_image_tokens(int64_t t, int64_t h, int64_t w, int64_t merge_size)
{
    if (t <= 0 || h <= 0 || w <= 0 || merge_size <= 0 || h % merge_size || w % merge_size) return -1;
    return t * (h / merge_size) * (w / merge_size);
}

int tok_chat_family_parse(const char *name)
{
    if (!strcmp(name, "qwen2_vl")) return TOK_CHAT_QWEN2_VL;
    if (!strcmp(name, "llava_llama_3")) return TOK_CHAT_LLAVA_LLAMA_3;
    return -1;
}

int tok_chat_mask_mode_parse(const char *name)
{
    if (!strcmp(name, "assistant")) return TOK_CHAT_MASK_ASSISTANT;
    if (!strcmp(name, "synthesizer")) return TOK_CHAT_MASK_AFTER_FIRST_TURN;
    return -1;
}

void tok_chat_free(tok_chat *c)
{
    free(c->ids);
    free(c->mask);
    free(c->images);
    memset(c, 0, sizeof *c);
}

/* The text rendered since the last image, with one "trained" flag per byte. */
typedef struct chat_builder {
    tok_encoder         *enc;
    const tok_tokenizer *tok;
    tok_chat            *out;
    tok_bytes            text;
    uint8_t             *trained;
    size_t               trained_cap;
    tok_ids              scratch;
} chat_builder;

static int chat_push(tok_chat *c, int32_t id, bool trained)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 512;
        int32_t *ids = realloc(c->ids, cap * sizeof *ids);
        if (!ids) return ADAPT_ENOMEM;
        c->ids = ids;
        uint8_t *mask = realloc(c->mask, cap);
        if (!mask) return ADAPT_ENOMEM;
        c->mask = mask;
        c->cap = cap;
    }
    c->ids[c->n] = id;
    c->mask[c->n] = trained;
    c->n++;
    return ADAPT_OK;
}

static int builder_text(chat_builder *b, const char *s, size_t n, bool trained)
{
    size_t at = b->text.len;
    if (tok_bytes_append(&b->text, s, n)) return ADAPT_ENOMEM;
    if (b->text.len > b->trained_cap) {
        size_t cap = b->text.cap;
        uint8_t *m = realloc(b->trained, cap);
        if (!m) return ADAPT_ENOMEM;
        b->trained = m;
        b->trained_cap = cap;
    }
    memset(b->trained + at, trained, n);
    return ADAPT_OK;
}

/* Encodes the pending text. A token is trained when any byte it covers is; a token that covers
 * no byte of its own (inside a run NFC rewrote) follows the byte before its end. */
static int builder_flush(chat_builder *b, adapt_error *err)
{
    if (!b->text.len) return ADAPT_OK;
    b->scratch.n = 0;
    if (tok_encode(b->enc, b->text.data, b->text.len, &b->scratch, err)) return err->code;
    size_t prev = 0;
    for (size_t i = 0; i < b->scratch.n; i++) {
        size_t end = b->scratch.ends[i];
        bool trained = false;
        for (size_t k = prev; k < end && !trained; k++) trained = b->trained[k];
        if (end == prev && end > 0) trained = b->trained[end - 1];
        if (chat_push(b->out, b->scratch.ids[i], trained))
            return adapt_fail(err, ADAPT_ENOMEM, "chat: out of memory");
        prev = end;
    }
    b->text.len = 0;
    return ADAPT_OK;
}

static int builder_image(chat_builder *b, int32_t pad_id, int32_t n, adapt_error *err)
{
    if (builder_flush(b, err)) return err->code;
    tok_chat *c = b->out;
    if (c->n_images == c->images_cap) {
        size_t cap = c->images_cap ? c->images_cap * 2 : 8;
        tok_chat_image *im = realloc(c->images, cap * sizeof *im);
        if (!im) return adapt_fail(err, ADAPT_ENOMEM, "chat: out of memory");
        c->images = im;
        c->images_cap = cap;
    }
    c->images[c->n_images++] = (tok_chat_image){c->n, (size_t)n};
    for (int32_t i = 0; i < n; i++)   /* placeholders are inputs, never targets */
        if (chat_push(c, pad_id, false)) return adapt_fail(err, ADAPT_ENOMEM, "chat: out of memory");
    return ADAPT_OK;
}

static int builder_str(chat_builder *b, const char *s, bool trained, adapt_error *err)
{
    if (builder_text(b, s, strlen(s), trained)) return adapt_fail(err, ADAPT_ENOMEM, "chat: out of memory");
    return ADAPT_OK;
}

static int render_header(chat_builder *b, const chat_layout *L, const char *role, bool trained,
                         adapt_error *err)
{
    if (builder_str(b, L->head_open, trained, err) || builder_str(b, role, trained, err) ||
        builder_str(b, L->head_close, trained, err))
        return err->code;
    return ADAPT_OK;
}

static int render_turn(chat_builder *b, const chat_layout *L, const tok_chat_message *m,
                       int32_t pad_id, bool head_trained, bool body_trained, size_t index,
                       adapt_error *err)
{
    if (render_header(b, L, m->role, head_trained, err)) return err->code;
    for (size_t k = 0; k < m->n_parts; k++) {
        const tok_chat_part *p = &m->parts[k];
        if (p->n_image_tokens > 0) {
            if (builder_str(b, L->image_open, body_trained, err) ||
                builder_image(b, pad_id, p->n_image_tokens, err) ||
                builder_str(b, L->image_close, body_trained, err))
                return adapt_error_prefix(err, "chat message %zu part %zu: ", index, k);
        } else if (p->text && builder_text(b, p->text, p->len, body_trained)) {
            return adapt_fail(err, ADAPT_ENOMEM, "chat: out of memory");
        }
    }
    return builder_str(b, L->turn_end, body_trained, err);
}

/* Every special token the layout writes must be one of the tokenizer's, or the rendering would
 * silently spell it out as plain text. */
static int check_layout(const tok_tokenizer *tok, const chat_layout *L, const tok_chat_options *opt,
                        bool has_images, int32_t *pad_id, adapt_error *err)
{
    const char *need[] = {L->head_open, L->image_open, L->image_close, L->image_pad,
                          L->turn_end[0] == '<' ? L->turn_end : NULL};
    char end_tok[64];
    if (need[4]) {   /* the marker without the newline that follows it */
        size_t n = strcspn(need[4], "\n");
        snprintf(end_tok, sizeof end_tok, "%.*s", (int)n, need[4]);
        need[4] = end_tok;
    }
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (need[i] && need[i][0] && tok_token_id(tok, need[i]) < 0)
            return adapt_fail(err, ADAPT_EINVAL, "chat: the tokenizer has no token %s, which this "
                              "chat family needs: wrong tokenizer for the family?", need[i]);
    if (L->bos && tok_bos_id(tok) < 0)
        return adapt_fail(err, ADAPT_EINVAL, "chat: tokenizer_config.json has no bos_token, which "
                          "this chat family starts with");
    *pad_id = L->image_pad ? tok_token_id(tok, L->image_pad) : opt->image_token_id;
    if (has_images && *pad_id < 0)
        return adapt_fail(err, ADAPT_EINVAL, "chat: no image placeholder id (set image_token_id)");
    return ADAPT_OK;
}

static int render_all(chat_builder *b, const chat_layout *L, const tok_chat_message *msgs,
                      size_t n_msgs, const tok_chat_options *opt, int32_t pad_id, adapt_error *err)
{
    bool after_first = opt->mask_mode == TOK_CHAT_MASK_AFTER_FIRST_TURN;
    bool all_trained = false;   /* synthesizer mode, once the first assistant turn is over */
    if (L->bos && chat_push(b->out, tok_bos_id(b->tok), false))
        return adapt_fail(err, ADAPT_ENOMEM, "chat: out of memory");
    if (n_msgs == 0 || strcmp(msgs[0].role, "system")) {
        const char *sys = opt->default_system ? opt->default_system : L->default_system;
        tok_chat_part part = {sys, strlen(sys), 0};
        tok_chat_message m = {"system", &part, 1};
        if (render_turn(b, L, &m, pad_id, false, false, 0, err)) return err->code;
    }
    for (size_t i = 0; i < n_msgs; i++) {
        bool assistant = !strcmp(msgs[i].role, "assistant");
        bool body = all_trained || (!after_first && assistant);
        if (render_turn(b, L, &msgs[i], pad_id, all_trained, body, i, err)) return err->code;
        if (after_first && assistant) all_trained = true;
    }
    if (opt->generation_role && render_header(b, L, opt->generation_role, all_trained, err))
        return err->code;
    return builder_flush(b, err);
}

int tok_chat_render(tok_encoder *enc, const tok_tokenizer *tok, const tok_chat_message *msgs,
                    size_t n_msgs, const tok_chat_options *opt, tok_chat *out, adapt_error *err)
{
    if ((unsigned)opt->family >= sizeof layouts / sizeof layouts[0])
        return adapt_fail(err, ADAPT_EINVAL, "chat: unknown family %d", (int)opt->family);
    const chat_layout *L = &layouts[opt->family];
    int32_t pad_id = -1;
    bool has_images = false;
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !msgs[i].role[0])
            return adapt_fail(err, ADAPT_EINVAL, "chat message %zu: no role", i);
        for (size_t k = 0; k < msgs[i].n_parts; k++) has_images |= msgs[i].parts[k].n_image_tokens > 0;
    }
    if (check_layout(tok, L, opt, has_images, &pad_id, err)) return err->code;
    out->n = 0;
    out->n_images = 0;
    chat_builder b = {.enc = enc, .tok = tok, .out = out};
    int rc = render_all(&b, L, msgs, n_msgs, opt, pad_id, err);
    tok_bytes_free(&b.text);
    free(b.trained);
    tok_ids_free(&b.scratch);
    return rc;
}
