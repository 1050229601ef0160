/* consistency: the filter step — the judge's few-shot prompt, the reading of its label, and the
 * composition of a kept triplet into the one response training sees.
 *
 * The one idea: everything here is a pure function of text and the task id, so the filter job
 * only runs the judge and moves records; what is kept and what it becomes is decided (and
 * tested) here.
 *
 * The prompt: a template with the placeholders {question}, {informative} and {precise} (each
 * replaced wherever it appears; any other brace is left as written, so user text with braces is
 * safe). The built-in one (consistency_default_prompt) opens by asking whether the precise
 * answer is consistent with the informative one, defines Yes / No / Open, gives six worked
 * examples in the layout "## Question: … ## Informative Answer: … ## Precise Answer: …
 * ## Consistent: <label>", and ends at "## Consistent:" for the item under test. A spec may name
 * a file to use instead.
 *
 * The label: the judge's answer (at most 2 new tokens), whitespace-trimmed and lower-cased;
 * "yes" keeps the triplet, "no" and "open" drop it, anything else is counted as "other" and
 * dropped (the reference keeps only an exact "yes").
 *
 * The response (the reference's cook_classified_entry): when the informative answer's last
 * sentence (lower-cased, split on ". ") contains one of the conclusion keywords
 * "could be ", "so ", "thus ", "therefore ", "final ", "answer ", "result " (trailing spaces
 * included), the informative answer alone; else when the precise answer (lower-cased) contains
 * one, informative + " " + precise; else a chain-of-thought template from the pool, picked by
 * the task id (the same id always picks the same template), with {informative} and {precise}
 * replaced. */
#ifndef ADAPT_CONSISTENCY_H
#define ADAPT_CONSISTENCY_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef enum consistency_label {
    CONSISTENCY_YES,
    CONSISTENCY_NO,
    CONSISTENCY_OPEN,
    CONSISTENCY_OTHER,
    CONSISTENCY_N_LABELS,
} consistency_label;

extern const char consistency_default_prompt[];
extern const char *const consistency_default_cot[];
extern const size_t consistency_n_default_cot;

/* "yes", "no", "open", "other". */
const char *consistency_label_name(consistency_label l);
consistency_label consistency_label_parse(const char *judge_output);

/* Checks a prompt template: it must hold {question}, {informative} and {precise}; src names the
 * template (a file path) in the error. */
int consistency_prompt_check(const char *tmpl, const char *src, adapt_error *err);
/* Checks a chain-of-thought template: {informative} and {precise} must both appear. */
int consistency_cot_check(const char *tmpl, const char *src, adapt_error *err);

/* The judge prompt for one triplet (malloc'd). */
int consistency_prompt_build(const char *tmpl, const char *question, const char *informative,
                             const char *precise, char **out, adapt_error *err);

/* Which rule composes the response. */
typedef enum consistency_rule {
    CONSISTENCY_RULE_INFORMATIVE,  /* the informative answer already concludes */
    CONSISTENCY_RULE_APPEND,       /* informative + " " + precise */
    CONSISTENCY_RULE_COT,          /* a chain-of-thought template */
} consistency_rule;

/* Index of the pool template for task_id (n_pool >= 1). */
size_t consistency_cot_pick(const char *task_id, size_t n_pool);
/* The response of a kept triplet (malloc'd into *out); *rule (optional) says which rule. */
int consistency_compose(const char *informative, const char *precise, const char *task_id,
                        const char *const *pool, size_t n_pool, char **out,
                        consistency_rule *rule, adapt_error *err);

#endif
