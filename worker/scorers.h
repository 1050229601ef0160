/* scorers: the paper's benchmark scorers, each a pure function of (prediction, reference).
 *
 * The one idea: each scorer is a port of the exact code the paper's numbers came from (the
 * QA-Synthesizer evaluation, which copies LLaVA-Med's and MMMU's), quirks included, so a score
 * computed here is the score the paper's scripts would give; where this module departs from
 * them it says so below.
 *
 *   open          token recall after LLaVA-Med's normalize_word (punctuation, periods, articles,
 *                 number words, contractions), counted as LLaVA-Med's calculate_f1score counts it
 *                 (tp sums the prediction's counts of shared words; fn the reference's counts of
 *                 the words the prediction lacks).
 *   closed        yes/no: a hit when the normalised prediction contains "yes" or "no" and
 *                 contains the normalised answer (substring tests, as the reference).
 *   multi_choice  MMMU's parse_multi_choice_response as the paper's code has it: "(A)" forms
 *                 first, then " A " forms, then (when the padded response is longer than 5
 *                 characters) the option texts; several candidates → the one found last; none →
 *                 a choice drawn from a PRNG keyed by the caller's seed (the reference seeds
 *                 Python's random with the item id: the same idea, another generator).
 *   classification the same parser with the choices "0", "1", … and the class names as option
 *                 texts (the reference's Food101 scoring).
 *   multi_label   the reference's parse_multi_label_response (longest label first, each match
 *                 removed from the text) then F1 over the label set (sklearn's f1_score with
 *                 zero_division=1: no true and no predicted label scores 1).
 *   rouge_l       ROUGE-L F1 on lower-cased tokens (runs of letters, digits and non-ASCII bytes):
 *                 sentence-level LCS, F = 2PR / (P + R). The reference calls the `rouge` package,
 *                 whose summary-level union LCS splits on "." first; for one-sentence texts the
 *                 two agree.
 * Scores are in [0, 1]. */
#ifndef ADAPT_SCORERS_H
#define ADAPT_SCORERS_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef enum scorer_kind {
    SCORER_OPEN,
    SCORER_CLOSED,
    SCORER_MULTI_CHOICE,
    SCORER_CLASSIFICATION,
    SCORER_MULTI_LABEL,
    SCORER_ROUGE_L,
    SCORER_N_KINDS,
} scorer_kind;

/* "open", "closed", "multi_choice", "classification", "multi_label", "rouge_l". */
const char *scorer_kind_name(scorer_kind k);
/* -1 when name is none of them. */
int scorer_kind_parse(const char *name);
/* The column name of the kind's score in the tables ("recall", "yes/no accuracy", ...). */
const char *scorer_metric_name(scorer_kind k);

/* LLaVA-Med's normalize_word (malloc'd; NULL on no memory). */
char *scorer_normalize(const char *text);

/* LLaVA-Med's (f1, precision, recall) of candidate against reference, both normalised inside
 * as calculate_f1score does (the caller passes the raw texts: they are lower-cased and
 * normalised once more first, as the reference's evaluate loop does). */
int scorer_token_prf(const char *prediction, const char *answer, double *f1, double *precision,
                     double *recall, adapt_error *err);
int scorer_open_recall(const char *prediction, const char *answer, double *score,
                       adapt_error *err);
int scorer_closed(const char *prediction, const char *answer, double *score, adapt_error *err);

/* parse_multi_choice_response: the index into choices[0..n) of the predicted option;
 * option_text[i] is choice i's text. *random_pick (optional) is 1 when nothing matched and the
 * seeded fallback chose. n >= 1. */
int scorer_parse_choice(const char *response, const char *const *choices,
                        const char *const *option_text, size_t n, uint64_t seed, size_t *index,
                        int *random_pick, adapt_error *err);

/* parse_multi_label_response: marks in picked[0..n) the labels the response names. */
int scorer_parse_labels(const char *response, const char *const *labels, size_t n,
                        unsigned char *picked, adapt_error *err);
/* F1 of a predicted against a true label set (0/1 arrays over the same n labels). */
double scorer_f1(const unsigned char *truth, const unsigned char *pred, size_t n);

int scorer_rouge_l(const char *prediction, const char *answer, double *score, adapt_error *err);

#endif
