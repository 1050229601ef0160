/* tok_chat: chat rendering of the model families adaptd trains, in C — the ids that
 * transformers' apply_chat_template + the family's processor produce, plus the loss mask and the
 * positions of image placeholders.
 *
 * The one idea: render the conversation as text between images (so special tokens written in the
 * template and in user text are matched by tok_encode exactly as Hugging Face tokenizes the
 * rendered string), insert each image's placeholder run as ids, and carry a per-byte "trained"
 * mask through encoding: a token is trained when any of its bytes is.
 *
 * Families:
 *   TOK_CHAT_QWEN2_VL      Qwen2-VL ChatML, its published template: the default system prompt
 *                          when the first message is not a system one; an image is
 *                          <|vision_start|> + N x <|image_pad|> + <|vision_end|>.
 *   TOK_CHAT_LLAVA_LLAMA_3 the llava_llama_3 conversation of LLaVA-v1.6-Llama3:
 *                          <|begin_of_text|>, Llama-3 headers, <|eot_id|> after each turn; an
 *                          image is N x image_token_id where the data has "<image>". */
#ifndef ADAPT_TOK_CHAT_H
#define ADAPT_TOK_CHAT_H

#include "tok.h"

typedef enum tok_chat_family {
    TOK_CHAT_QWEN2_VL,
    TOK_CHAT_LLAVA_LLAMA_3,
} tok_chat_family;

typedef enum tok_chat_mask_mode {
    TOK_CHAT_MASK_ASSISTANT,        /* loss on each assistant turn's content and end marker */
    TOK_CHAT_MASK_AFTER_FIRST_TURN, /* synthesizer fine-tuning: loss on every token after the
                                       first assistant turn, user turns included */
} tok_chat_mask_mode;

/* One part of a message: text (len bytes, UTF-8), or an image when n_image_tokens > 0. */
typedef struct tok_chat_part {
    const char *text;
    size_t      len;
    int32_t     n_image_tokens;
} tok_chat_part;

typedef struct tok_chat_message {
    const char          *role;      /* "system", "user", "assistant" */
    const tok_chat_part *parts;
    size_t               n_parts;
} tok_chat_message;

typedef struct tok_chat_options {
    tok_chat_family    family;
    tok_chat_mask_mode mask_mode;
    const char *generation_role;    /* open a turn of this role at the end (NULL: none); the
                                       synthesizer prompt opens "user" */
    const char *default_system;     /* NULL: the family's default system prompt */
    int32_t     image_token_id;     /* LLAVA_LLAMA_3: the model's image placeholder id, needed
                                       when a message holds an image */
} tok_chat_options;

typedef struct tok_chat_image {
    size_t start, n;                /* placeholder run: ids[start .. start + n) */
} tok_chat_image;

/* A rendered conversation. Zeroed is empty; free with tok_chat_free. */
typedef struct tok_chat {
    int32_t        *ids;
    uint8_t        *mask;           /* 1: the token is a training target */
    size_t          n, cap;
    tok_chat_image *images;
    size_t          n_images, images_cap;
} tok_chat;

/* The family's default system prompt. */
const char *tok_chat_default_system(tok_chat_family family);

/* Placeholder count of a Qwen2-VL image of grid (t, h, w) patches, after the merge_size x
 * merge_size merge (2 in every Qwen2-VL model); -1 if the grid does not divide. */
int64_t tok_qwen2_vl_image_tokens(int64_t t, int64_t h, int64_t w, int64_t merge_size);

/* Renders msgs into out (emptied first). enc must come from the family's tokenizer. */
int  tok_chat_render(tok_encoder *enc, const tok_tokenizer *tok, const tok_chat_message *msgs,
                     size_t n_msgs, const tok_chat_options *opt, tok_chat *out, adapt_error *err);
void tok_chat_free(tok_chat *c);

/* Parses tok_chat_family / tok_chat_mask_mode names ("qwen2_vl", "llava_llama_3";
 * "assistant", "synthesizer"); -1 if unknown. */
int tok_chat_family_parse(const char *name);
int tok_chat_mask_mode_parse(const char *name);

#endif
