/* model_config: a Hugging Face config.json of a Qwen2-VL model, read into one flat struct.
 *
 * The one idea: accept both layouts transformers has written for model_type qwen2_vl (the flat
 * one of the published checkpoints, text fields at the top and `vision_config` nested, and the
 * `text_config` / `vision_config` one of transformers >= 4.5x) and reduce them to the same
 * struct, filling absent fields with transformers' own defaults; then refuse, naming the field,
 * every setting that would change the math in a way adaptd does not implement, so a model never
 * silently runs with different semantics than in transformers. */
#ifndef ADAPT_MODEL_CONFIG_H
#define ADAPT_MODEL_CONFIG_H

#include "error.h"

#include <stddef.h>

#define MODEL_CONFIG_MAX_EOS 8

typedef struct model_config_text {
    int    vocab_size;               /* 151936 for Qwen2-VL-2B */
    int    hidden_size;              /* LM width */
    int    intermediate_size;        /* SwiGLU inner width */
    int    num_hidden_layers;
    int    num_attention_heads;
    int    num_key_value_heads;      /* GQA groups; = num_attention_heads when absent or null */
    int    head_dim;                 /* hidden_size / num_attention_heads */
    int    max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    int    mrope_section[3];         /* temporal, height, width halves of head_dim / 2 */
    double initializer_range;
    int    bos_token_id;             /* -1 when null */
    int    eos_token_ids[MODEL_CONFIG_MAX_EOS];
    int    n_eos_token_ids;
    int    pad_token_id;             /* -1 when null */
} model_config_text;

typedef struct model_config_vision {
    int    depth;                    /* vision blocks */
    int    embed_dim;                /* vision width */
    int    num_heads;
    int    head_dim;                 /* embed_dim / num_heads */
    int    mlp_dim;                  /* embed_dim * mlp_ratio, the QuickGELU MLP inner width */
    int    out_hidden_size;          /* `hidden_size`: the merger's output, = the LM width */
    int    in_channels;              /* 3 */
    int    patch_size;               /* 14 */
    int    temporal_patch_size;      /* 2 */
    int    spatial_merge_size;       /* 2: a 2x2 block of patches becomes one LM token */
    double rope_theta;               /* 10000 */
    double initializer_range;
} model_config_vision;

typedef struct model_config {
    model_config_text   text;
    model_config_vision vision;
    int  tie_word_embeddings;        /* 1: lm_head shares embed_tokens' weight */
    int  image_token_id;             /* <|image_pad|> */
    int  video_token_id;
    int  vision_start_token_id;
    int  vision_end_token_id;
    char dtype[16];                  /* the checkpoint's torch dtype ("bfloat16"), "" when absent */
} model_config;

/* Parses config JSON text; `source` names it in messages (a path). */
int model_config_parse(model_config *cfg, const char *json, size_t len, const char *source,
                       adapt_error *err);

/* Reads PATH: a config.json, or a directory holding one. */
int model_config_load(model_config *cfg, const char *path, adapt_error *err);

#endif
