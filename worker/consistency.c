/* consistency: judge prompt, label, response composition; see consistency.h. */
#include "consistency.h"

#include "data_order.h"

#include <stdlib.h>
#include <string.h>

/* The judge's few-shot prompt, written for adaptd: six examples spread over the three labels
 * and over kinds of question (counting, choice, yes/no, reading, description, measurement). */
const char consistency_default_prompt[] =
    "You will see a question about an image together with two answers to it: an informative "
    "answer that explains its reasoning, and a precise answer that states the result briefly. "
    "Decide whether the precise answer is consistent with the informative answer.\n"
    "\n"
    "Reply with one of three labels:\n"
    "- Yes: consistent; the precise answer can be inferred from the informative answer.\n"
    "- No: inconsistent; the precise answer cannot be inferred from the informative answer, or "
    "contradicts it.\n"
    "- Open: the question is open-ended, asks for a description or a caption, or admits several "
    "readings, so no single precise answer can be checked against the informative one.\n"
    "\n"
    "Examples:\n"
    "\n"
    "## Question: How many boats are moored at the pier?\n"
    "## Informative Answer: Along the wooden pier there are three small boats tied up: a red "
    "rowing boat at the near end, a white motorboat in the middle and a blue sailboat with its "
    "sail furled at the far end. No other vessels are moored there, so the count is three.\n"
    "## Precise Answer: 3\n"
    "## Consistent: Yes\n"
    "\n"
    "## Question: Which instrument is the musician on the left playing?\n"
    "Options: (A) violin (B) trumpet (C) guitar (D) drums\n"
    "## Informative Answer: The musician on the left holds a long-necked instrument with six "
    "strings against the body and strums it with the right hand while the left hand presses the "
    "frets. That is a guitar, option (C).\n"
    "## Precise Answer: (B) trumpet\n"
    "## Consistent: No\n"
    "\n"
    "## Question: Describe the atmosphere of this street market.\n"
    "## Informative Answer: The market is crowded and lively: stalls under striped awnings are "
    "piled with fruit and spices, shoppers squeeze between them carrying bags, and the warm "
    "evening light gives the whole scene a festive feel.\n"
    "## Precise Answer: busy\n"
    "## Consistent: Open\n"
    "\n"
    "## Question: Is the patient in the X-ray wearing any metal jewellery?\n"
    "## Informative Answer: A bright, sharply outlined ring shape projects over the base of the "
    "neck, denser than the surrounding bone; such an opacity is typical of a metal necklace "
    "clasp, which indicates that the patient is wearing metal jewellery.\n"
    "## Precise Answer: yes\n"
    "## Consistent: Yes\n"
    "\n"
    "## Question: What is the temperature shown on the oven display?\n"
    "## Informative Answer: The digital display on the oven door reads 180 followed by the "
    "degree sign and the letter C, which means the oven is set to 180 degrees Celsius.\n"
    "## Precise Answer: 220 degrees Celsius\n"
    "## Consistent: No\n"
    "\n"
    "## Question: What could this building be used for?\n"
    "## Informative Answer: The building has a tall tower with a clock, a wide entrance with "
    "columns and a flag above the door. It might be a town hall, a railway station or a museum; "
    "the image alone does not settle which.\n"
    "## Precise Answer: a town hall\n"
    "## Consistent: Open\n"
    "\n"
    "## Question: {question}\n"
    "## Informative Answer: {informative}\n"
    "## Precise Answer: {precise}\n"
    "## Consistent:";

const char *const consistency_default_cot[] = {
    "{informative} Therefore, the answer is {precise}.",
    "{informative} So the answer is: {precise}",
    "{informative} Thus, the final answer is {precise}.",
    "{informative}\nAnswer: {precise}",
    "{informative} In short, {precise}.",
};
const size_t consistency_n_default_cot =
    sizeof consistency_default_cot / sizeof *consistency_default_cot;

/* The pick's own PRNG stream, so it never correlates with the training draws of the same id. */
#define CONSISTENCY_STREAM_COT UINT64_C(0x434f545000000101)

static const char *const label_names[CONSISTENCY_N_LABELS] = { "yes", "no", "open", "other" };

const char *consistency_label_name(consistency_label l)
{
    return (unsigned)l < CONSISTENCY_N_LABELS ? label_names[l] : "other";
}

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

consistency_label consistency_label_parse(const char *s)
{
    size_t n = strlen(s);
    while (n && is_space(*s)) { s++; n--; }
    while (n && is_space(s[n - 1])) n--;
    for (int l = CONSISTENCY_YES; l < CONSISTENCY_OTHER; l++) {
        const char *name = label_names[l];
        if (strlen(name) != n) continue;
        size_t i = 0;
        while (i < n && lower(s[i]) == name[i]) i++;
        if (i == n) return (consistency_label)l;
    }
    return CONSISTENCY_OTHER;
}

static int template_needs(const char *tmpl, const char *const *keys, size_t n, const char *what,
                          const char *src, adapt_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (!strstr(tmpl, keys[i]))
            return adapt_fail(err, ADAPT_EINVAL, "%s %s: no %s placeholder (a template needs "
                              "{question}, {informative} and {precise} where the text goes)",
                              what, src, keys[i]);
    return ADAPT_OK;
}

int consistency_prompt_check(const char *tmpl, const char *src, adapt_error *err)
{
    static const char *const keys[] = { "{question}", "{informative}", "{precise}" };
    return template_needs(tmpl, keys, 3, "consistency prompt", src, err);
}

int consistency_cot_check(const char *tmpl, const char *src, adapt_error *err)
{
    static const char *const keys[] = { "{informative}", "{precise}" };
    return template_needs(tmpl, keys, 2, "chain-of-thought template", src, err);
}

/* Replaces each of keys[i] by values[i] in one left-to-right pass (a value is never rescanned,
 * so a placeholder written inside an answer stays text). */
static int fill(const char *tmpl, const char *const *keys, const char *const *values, size_t n,
                char **out, adapt_error *err)
{
    size_t len = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *d = pass ? *out : NULL;
        size_t k = 0;
        for (const char *p = tmpl; *p;) {
            size_t i = 0;
            while (i < n && strncmp(p, keys[i], strlen(keys[i])) != 0) i++;
            if (i < n) {
                size_t lv = strlen(values[i]);
                if (d) memcpy(d + k, values[i], lv);
                k += lv;
                p += strlen(keys[i]);
            } else {
                if (d) d[k] = *p;
                k++;
                p++;
            }
        }
        if (pass) d[k] = '\0';
        else {
            len = k;
            *out = malloc(len + 1);
            if (!*out) return adapt_fail(err, ADAPT_ENOMEM, "consistency: no memory");
        }
    }
    return ADAPT_OK;
}

int consistency_prompt_build(const char *tmpl, const char *question, const char *informative,
                             const char *precise, char **out, adapt_error *err)
{
    static const char *const keys[] = { "{question}", "{informative}", "{precise}" };
    const char *const values[] = { question, informative, precise };
    return fill(tmpl, keys, values, 3, out, err);
}

size_t consistency_cot_pick(const char *task_id, size_t n_pool)
{
    data_order_rng r;
    data_order_rng_init(&r, data_order_key(0, CONSISTENCY_STREAM_COT,
                                           data_order_hash_str(task_id)));
    return (size_t)data_order_rng_below(&r, n_pool);
}

static const char *const conclusion_keywords[] = {
    "could be ", "so ", "thus ", "therefore ", "final ", "answer ", "result ",
};

/* Whether s[0..n), lower-cased, contains a conclusion keyword. */
static int concludes(const char *s, size_t n)
{
    for (size_t k = 0; k < sizeof conclusion_keywords / sizeof *conclusion_keywords; k++) {
        const char *w = conclusion_keywords[k];
        size_t lw = strlen(w);
        for (size_t i = 0; i + lw <= n; i++) {
            size_t j = 0;
            while (j < lw && lower(s[i + j]) == w[j]) j++;
            if (j == lw) return 1;
        }
    }
    return 0;
}

/* The last sentence as the reference finds it: strip, then what follows the last ". ". */
static void last_sentence(const char *s, const char **p, size_t *n)
{
    size_t len = strlen(s);
    while (len && is_space(*s)) { s++; len--; }
    while (len && is_space(s[len - 1])) len--;
    size_t start = 0;
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == '.' && s[i + 1] == ' ') start = i + 2;
    *p = s + start;
    *n = len - start;
}

int consistency_compose(const char *informative, const char *precise, const char *task_id,
                        const char *const *pool, size_t n_pool, char **out,
                        consistency_rule *rule, adapt_error *err)
{
    const char *ls;
    size_t ln;
    last_sentence(informative, &ls, &ln);
    consistency_rule r = concludes(ls, ln) ? CONSISTENCY_RULE_INFORMATIVE
                       : concludes(precise, strlen(precise)) ? CONSISTENCY_RULE_APPEND
                       : CONSISTENCY_RULE_COT;
    if (rule) *rule = r;
    if (r == CONSISTENCY_RULE_INFORMATIVE) {
        *out = strdup(informative);
        return *out ? ADAPT_OK : adapt_fail(err, ADAPT_ENOMEM, "consistency: no memory");
    }
    static const char *const keys[] = { "{informative}", "{precise}" };
    const char *const values[] = { informative, precise };
    if (r == CONSISTENCY_RULE_APPEND) return fill("{informative} {precise}", keys, values, 2, out, err);
    if (n_pool == 0)
        return adapt_fail(err, ADAPT_EINVAL, "consistency: the chain-of-thought pool is empty");
    return fill(pool[consistency_cot_pick(task_id, n_pool)], keys, values, 2, out, err);
}
