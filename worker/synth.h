/* synth: the visual-instruction synthesizer's prompt and the parser of what it writes.
 *
 * The one idea: every piece of chat markup the synthesizer depends on (the prompt, the user
 * header that opens each synthesized question, the separator between a question and its answer,
 * the end-of-turn marker, the two answer-style hints, the image placeholder, the stop string) is
 * one row of a per-family table, so the parser is written once and a LLaVA-v1.6-Llama3
 * synthesizer (the paper's) and a Qwen2-VL-based one are parsed by the same code.
 *
 * Parsing follows the reference code (QA-Synthesizer, process/syn_utils.py parse_pred and
 * vllm_inference/utils/task.py consistency_filter.get_prompt):
 *   1. a trailing stop string (when the generator left it in) is removed;
 *   2. the output is split on the user header; each piece is one question/answer round;
 *   3. when the output does not end with the end-of-turn marker, the last round was cut off by
 *      the token limit and is dropped;
 *   4. a round must split on the question/answer separator into exactly two parts; the answer
 *      must end with the end-of-turn marker (a round that does not is malformed and dropped: the
 *      reference cuts the marker's length off blindly, which would eat answer text), which is
 *      removed; question and answer are whitespace-trimmed and must both be non-empty;
 *   5. a question that starts with the precise hint ("Answer with a precise response.\n") or the
 *      informative hint is filed, without the hint, under that style; the first question (in
 *      output order) that has both a precise and an informative answer becomes the triplet
 *      {instruction, precise, informative}. A question with neither hint is not part of any
 *      triplet. None found: the image keeps no task (it stays a caption-only sample). */
#ifndef ADAPT_SYNTH_H
#define ADAPT_SYNTH_H

#include "error.h"

#include <stddef.h>

typedef struct synth_template {
    const char *family;            /* "llava_next", "qwen2_vl" */
    const char *prompt;            /* contains "{caption}" once and the image placeholder once */
    const char *user_header;       /* opens every synthesized question */
    const char *qa_separator;      /* between a question and its answer */
    const char *end_of_turn;       /* closes every answer */
    const char *turn_gap;          /* text between end_of_turn and the next header ("\n" or "") */
    const char *precise_hint;      /* prefix of a precise question, newline included */
    const char *informative_hint;  /* prefix of an informative question, newline included */
    const char *image_placeholder; /* where the image's tokens go in the prompt */
    const char *stop;              /* generation stops at this string */
} synth_template;

/* The template of a model family (the config's model_type: "llava_next" or "llava" for the
 * Llama-3 LLaVA-v1.6, "qwen2_vl"); NULL when there is none. */
const synth_template *synth_template_find(const char *family);
/* The families with a template, "a, b" (for error messages). */
const char *synth_template_families(void);

/* The prompt for one caption (malloc'd into *out). EINVAL for an empty caption. */
int synth_prompt_build(const synth_template *t, const char *caption, char **out,
                       adapt_error *err);

typedef struct synth_pair {
    char *question;   /* hint still in place */
    char *answer;
} synth_pair;

typedef struct synth_result {
    synth_pair *pairs;        /* every well-formed round, in output order */
    size_t      n_pairs;
    int         has_triplet;  /* 1: the three strings below are set */
    char       *instruction;  /* the question without its hint */
    char       *precise;
    char       *informative;
} synth_result;

/* Parses one synthesizer output. Only ENOMEM fails: an output with nothing usable gives
 * n_pairs 0 and has_triplet 0. Free with synth_result_free. */
int  synth_parse(const synth_template *t, const char *output, synth_result *out,
                 adapt_error *err);
void synth_result_free(synth_result *r);

#endif
