/* conversation: the training conversation of one image, as role/text turns with loss flags.
 *
 * The one idea: every random choice about a sample (which caption instruction, caption turn
 * first or last, blank image or not) is drawn from the stated PRNG (data_order.h) keyed by
 * (run seed, purpose, hash of the sample id) and nothing else, so a sample's conversation is the
 * same in every epoch, on every rank, in a resumed run and in any world size; and the output is
 * plain text turns, so this module knows no tokenizer: the chat renderer turns them into tokens
 * and turns each turn's loss flag into a per-token mask.
 *
 * Modes:
 *   CONV_MODE_SINGLE_STAGE  caption task (user: instruction from the pool, assistant: caption)
 *                           plus the kept synthesized tasks; the caption pair comes first or
 *                           last (one draw); caption-only when no task was kept. Loss on
 *                           assistant turns only.
 *   CONV_MODE_SYNTHESIZER   fine-tuning a synthesizer on seed data: round 1 is the caption task
 *                           and carries no loss; then for each task a precise round
 *                           (user: question + " Answer with a precise response.") and, when the
 *                           task has one, an informative round (user: question +
 *                           " Answer with an informative response."); every turn after round 1,
 *                           user turns included, carries loss. A share `blank_ratio` of images is
 *                           replaced by a blank image: sample i is blank when
 *                           rng_unit(key(seed, STREAM_BLANK, hash(id))) < blank_ratio (a
 *                           per-sample draw, so the share is blank_ratio in expectation and the
 *                           choice never depends on order or world size).
 *   CONV_MODE_CAPTION_ONLY  two-stage stage 1: the caption task alone.
 *   CONV_MODE_TASKS_ONLY    two-stage stage 2: the kept tasks alone; a sample with none yields a
 *                           conversation of 0 turns, which the caller leaves out of the stage.
 *
 * The image goes with the first user turn (image_turn), as in LLaVA-style data, whatever the
 * order of the rounds. */
#ifndef ADAPT_CONVERSATION_H
#define ADAPT_CONVERSATION_H

#include "error.h"
#include "sample.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define CONV_PRECISE_HINT     "Answer with a precise response."
#define CONV_INFORMATIVE_HINT "Answer with an informative response."

typedef enum conv_mode {
    CONV_MODE_SINGLE_STAGE,
    CONV_MODE_SYNTHESIZER,
    CONV_MODE_CAPTION_ONLY,
    CONV_MODE_TASKS_ONLY,
} conv_mode;

typedef enum conv_role {
    CONV_ROLE_USER,
    CONV_ROLE_ASSISTANT,
} conv_role;

typedef struct conv_turn {
    conv_role role;
    char     *text;    /* owned by the conversation */
    int       loss;    /* 1: the turn's tokens count in the loss */
} conv_turn;

typedef struct conv {
    conv_turn *turns;
    size_t     n_turns;
    size_t     image_turn;   /* index of the turn that carries the image */
    int        blank_image;  /* 1: feed a blank image instead of the sample's */
} conv;

/* One task. In single-stage and tasks-only modes `answer` is the kept response (the filter's
 * combined chain-of-thought answer) and `informative` is unused. In synthesizer mode `answer` is
 * the precise answer and `informative` (may be NULL or empty) the informative one. */
typedef struct conv_task {
    const char *question;
    const char *answer;
    const char *informative;
} conv_task;

typedef struct conv_options {
    conv_mode          mode;
    uint64_t           seed;             /* the run seed */
    const char *const *instructions;     /* caption-instruction pool, >= 1 entry */
    size_t             n_instructions;
    double             blank_ratio;      /* synthesizer mode: share of blank images, [0, 1] */
} conv_options;

/* Builds the conversation of sample `id`. caption may be NULL or empty when there are tasks.
 * EINVAL (naming the sample id) for an empty pool, empty question or answer, or a sample that
 * would have no turn at all in a mode that needs one. Free with conv_free. */
int  conv_build(conv *out, const conv_options *opt, const char *id, const char *caption,
                const conv_task *tasks, size_t n_tasks, adapt_error *err);
void conv_free(conv *c);

/* The kept tasks of an overlay record: its turns read as (user, assistant) pairs. An overlay
 * record with no turns has no kept task (*n = 0). EINVAL, naming the record id and turn, for an
 * odd count or roles out of order. *tasks points into the record (valid while it lives); free
 * the array with free(). */
int  conv_tasks_from_overlay(const Adaptd__Sample *overlay, conv_task **tasks, size_t *n,
                             adapt_error *err);

/* The draws, exposed so tests and tools can show them. */
size_t conv_pick_instruction(uint64_t seed, const char *id, size_t n_instructions);
int    conv_caption_last(uint64_t seed, const char *id);
int    conv_is_blank(uint64_t seed, const char *id, double blank_ratio);

#endif
