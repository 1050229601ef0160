/* generate: batched autoregressive generation with a Qwen2-VL model: prompts (text with special
 * tokens written out, and an optional image) in, generated text and ids out; greedy or seeded
 * temperature / top-p sampling, stop ids and strings, max new tokens.
 *
 * The one idea: a batch is a set of cache slots, not a rectangle. Each prompt is prefilled into a
 * free slot, every step decodes one token for every live slot, and a sequence that stops frees its
 * slot for the next prompt at once, so no step computes padding and a sequence's tokens depend on
 * its own prompt, options and (seed, index) alone, never on which others share its steps. */
#ifndef ADAPT_GENERATE_H
#define ADAPT_GENERATE_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gen gen_t;

enum gen_stop_reason {
    GEN_STOP_EOS    = 1,  /* one of the model's eos ids (config / generation_config.json) */
    GEN_STOP_ID     = 2,  /* one of gen_options.stop_ids */
    GEN_STOP_STRING = 3,  /* the text reached one of gen_options.stop_strings */
    GEN_STOP_LENGTH = 4,  /* max_new_tokens */
};

typedef struct gen_options {
    uint32_t max_new_tokens;
    float    temperature;            /* 0 = greedy */
    float    top_p;                  /* 1 = off */
    uint64_t seed;                   /* sampling: the stream of sequence i depends only on (seed, i) */
    const int32_t *stop_ids;   size_t n_stop_ids;     /* in addition to the model's eos ids */
    const char *const *stop_strings; size_t n_stop_strings;  /* output cut before the match */
    int      keep_special;           /* special tokens kept in the decoded text */
    int      ignore_eos;             /* the model's eos ids do not stop (benchmarks: fixed length) */
} gen_options;
/* Stop strings are looked for in the generated text with special tokens written out (as
 * transformers' StopStringCriteria matches token strings), whatever keep_special says; the text
 * returned is cut where the match starts. The ids keep the token that completed the match. */

typedef struct gen_prompt {
    const char    *text;             /* the whole prompt, special tokens written out; each "<|image_pad|>"
                                        (one per image, inside <|vision_start|>…<|vision_end|>) is expanded
                                        to the image's merged token count, as transformers' processor does */
    const uint8_t *image; size_t image_len;   /* encoded JPEG/PNG, or NULL for text-only */
} gen_prompt;

/* A prompt given as ids, image tokens already expanded (one run of grid_h * grid_w / merge^2
 * image tokens), with the image already preprocessed: for callers without a tokenizer
 * (benchmarks, tests on models with a made-up vocabulary). */
typedef struct gen_token_prompt {
    const int32_t *ids;  size_t n_ids;
    const float   *pixel_values;     /* [grid_h * grid_w, patch_dim] as image_process writes, or NULL */
    int            grid_thw[3];
} gen_token_prompt;

typedef struct gen_result {
    char    *text;                   /* NUL-terminated; NULL when the generator has no tokenizer */
    int32_t *ids;                    /* the new tokens, the stopping one included */
    size_t   n_ids;
    int      stop_reason;            /* GEN_STOP_EOS|ID|STRING|LENGTH */
} gen_result;

/* Loads model_dir's config.json, weights, tokenizer.json (+ tokenizer_config.json), and when
 * present generation_config.json (its eos_token_id, an int or a list, replaces the config's) and
 * preprocessor_config.json. A gen_t is used by one thread at a time (its calls thread with
 * OpenMP inside); runs allocate their KV cache per call and free it before returning. CPU
 * backend only for now: the cached attention and the decode product have no op-table entry. */
int  gen_open(gen_t **out, const char *model_dir, adapt_error *err);
/* The same without a tokenizer: only gen_run_tokens works, and results carry no text. */
int  gen_open_no_tokenizer(gen_t **out, const char *model_dir, adapt_error *err);
/* At most this many sequences decode together (default 32); more prompts wait for free slots. */
void gen_set_max_batch(gen_t *g, int max_batch);
/* Runs every prompt; results[i] belongs to prompts[i] (clear each with gen_result_clear). On an
 * error no result is set. */
int  gen_run(gen_t *g, const gen_prompt *prompts, size_t n, const gen_options *o,
             gen_result *results, adapt_error *err);
int  gen_run_tokens(gen_t *g, const gen_token_prompt *prompts, size_t n, const gen_options *o,
                    gen_result *results, adapt_error *err);
void gen_result_clear(gen_result *r);
void gen_close(gen_t *g);

/* The model the generator runs (tests compare it with a full forward pass). */
struct qwen2vl_model;
struct qwen2vl_model *gen_model(gen_t *g);

#endif
