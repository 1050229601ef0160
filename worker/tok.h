/* tok: the tokenizer of adaptd, a byte-level BPE that gives the ids Hugging Face `tokenizers`
 * gives for the same tokenizer.json (Qwen2 / Qwen2.5 / Qwen3, Llama-3 families).
 *
 * The one idea: a loaded tok_tokenizer is immutable and shared by every thread; everything that
 * changes while encoding (the regex match data, the word cache, scratch buffers) lives in a
 * tok_encoder, one per thread. Anything in tokenizer.json that this module does not implement is
 * refused at load with the JSON field named, so a tokenizer is never silently applied differently.
 *
 * Pipeline of tok_encode, as tokenizers does it with add_special_tokens=False:
 *   added tokens with normalized=false split the raw text -> each remaining piece is normalized
 *   (NFC, by ICU) -> added tokens with normalized=true split it -> the Split regex (PCRE2,
 *   UTF+UCP, JIT) cuts words -> each word is BPE-merged over raw bytes (byte-level).
 *
 * Known limit: the regex classes \p{L}, \p{N}, \s come from PCRE2's Unicode tables (14.0 in
 * Debian 12's PCRE2 10.42) where tokenizers' Oniguruma has newer ones, so a character first
 * assigned in Unicode 15.0 or later (rare scripts, CJK extension H) can split differently. */
#ifndef ADAPT_TOK_H
#define ADAPT_TOK_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tok_tokenizer tok_tokenizer;  /* immutable after tok_load, thread-shareable */
typedef struct tok_encoder   tok_encoder;    /* per-thread encoding state */

/* A growing list of ids; tok_encode appends to it. ends[i] is the byte offset in the encoded
 * text just past token i (exact wherever normalization left the text unchanged; inside a run
 * that NFC rewrote, tokens are placed at the end of that run). The caller owns it and frees it
 * with tok_ids_free; a zeroed struct is an empty list. */
typedef struct tok_ids {
    int32_t  *ids;
    uint32_t *ends;
    size_t    n, cap;
} tok_ids;

/* A growing byte buffer, for decoded text. Zeroed is empty; free with tok_bytes_free. */
typedef struct tok_bytes {
    char  *data;
    size_t len, cap;
} tok_bytes;

enum tok_decode_flags {
    TOK_DECODE_SKIP_SPECIAL = 1,  /* drop ids of added tokens marked special */
    TOK_DECODE_LOSSY        = 2,  /* replace invalid UTF-8 by U+FFFD as tokenizers' decode does */
};

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos/eos/pad). */
int  tok_load(tok_tokenizer **out, const char *dir, adapt_error *err);
/* The same from explicit paths; config_path may be NULL. */
int  tok_load_files(tok_tokenizer **out, const char *json_path, const char *config_path,
                    adapt_error *err);
void tok_free(tok_tokenizer *tok);

int  tok_encoder_new(tok_encoder **out, const tok_tokenizer *tok, adapt_error *err);
void tok_encoder_free(tok_encoder *enc);

/* Appends the ids of text[0..len) to out. The text must be valid UTF-8 (ADAPT_EINVAL names the
 * byte offset otherwise). Added tokens in the text (special or not) become their ids, as in
 * tokenizers' encode(text, add_special_tokens=False); no bos/eos is added. */
int  tok_encode(tok_encoder *enc, const char *text, size_t len, tok_ids *out, adapt_error *err);

/* Appends the bytes of ids to out (see tok_decode_flags). An id outside the vocabulary is
 * ADAPT_ERANGE, named with its position. */
int  tok_decode(const tok_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                tok_bytes *out, adapt_error *err);

/* The id of an added token or vocabulary entry spelled exactly `content` (plain UTF-8, not the
 * byte-level alphabet), or -1. */
int32_t tok_token_id(const tok_tokenizer *tok, const char *content);
int     tok_is_special(const tok_tokenizer *tok, int32_t id);
size_t  tok_vocab_size(const tok_tokenizer *tok);   /* highest id + 1 */
int32_t tok_bos_id(const tok_tokenizer *tok);       /* from tokenizer_config.json; -1 if none */
int32_t tok_eos_id(const tok_tokenizer *tok);
int32_t tok_pad_id(const tok_tokenizer *tok);

int  tok_ids_push(tok_ids *l, int32_t id, uint32_t end);
void tok_ids_free(tok_ids *l);
int  tok_bytes_append(tok_bytes *b, const void *data, size_t len);
int  tok_bytes_reserve(tok_bytes *b, size_t extra);   /* room for extra more bytes */
void tok_bytes_free(tok_bytes *b);

/* Byte offset of the first invalid UTF-8 sequence in s, or len when s is valid. Surrogates and
 * overlong forms are invalid, as in Rust's str. */
size_t tok_utf8_check(const uint8_t *s, size_t len);

#endif
