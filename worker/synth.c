/* synth: synthesizer prompt and output parser; see synth.h. The parser works on byte ranges of
 * the output and copies only what it keeps, so a 512-token gibberish output costs one pass. */
#include "synth.h"

#include <stdlib.h>
#include <string.h>

/* LLaVA-v1.6-Llama3 as the reference synthesizer prompts it (llava conv template
 * "llava_llama_3": the Llama-3 chat markup with LLaVA's system prompt, the image token and
 * "Describe the image." as the caption round). */
#define LLAMA3_SYSTEM "You are a helpful language and vision assistant. You are able to " \
    "understand the visual content that the user provides, and assist the user with a variety " \
    "of tasks using natural language."

static const synth_template synth_templates[] = {
    {
        .family = "llava_next",
        .prompt = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" LLAMA3_SYSTEM
                  "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\n"
                  "Describe the image.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                  "{caption}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
        .user_header = "<|start_header_id|>user<|end_header_id|>\n\n",
        .qa_separator = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        .end_of_turn = "<|eot_id|>",
        .turn_gap = "",
        .precise_hint = "Answer with a precise response.\n",
        .informative_hint = "Answer with an informative response.\n",
        .image_placeholder = "<image>",
        .stop = "<|end_of_text|>",
    },
    {
        /* Qwen2-VL's chat markup (its chat template with the default system prompt); the image
         * sits inline before the caption hint, as the template renders an image content part. */
        .family = "qwen2_vl",
        .prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                  "Describe the image.<|im_end|>\n<|im_start|>assistant\n"
                  "{caption}<|im_end|>\n<|im_start|>user\n",
        .user_header = "<|im_start|>user\n",
        .qa_separator = "<|im_end|>\n<|im_start|>assistant\n",
        .end_of_turn = "<|im_end|>",
        .turn_gap = "\n",
        .precise_hint = "Answer with a precise response.\n",
        .informative_hint = "Answer with an informative response.\n",
        .image_placeholder = "<|image_pad|>",
        .stop = "<|endoftext|>",
    },
};

/* Other names a config's model_type may carry for a family above. */
static const struct { const char *alias, *family; } synth_aliases[] = {
    { "llava", "llava_next" },
    { "llava_llama3", "llava_next" },
};

const synth_template *synth_template_find(const char *family)
{
    if (!family) return NULL;
    for (size_t i = 0; i < sizeof synth_aliases / sizeof *synth_aliases; i++)
        if (!strcmp(family, synth_aliases[i].alias)) family = synth_aliases[i].family;
    for (size_t i = 0; i < sizeof synth_templates / sizeof *synth_templates; i++)
        if (!strcmp(family, synth_templates[i].family)) return &synth_templates[i];
    return NULL;
}

const char *synth_template_families(void) { return "llava_next (llava), qwen2_vl"; }

int synth_prompt_build(const synth_template *t, const char *caption, char **out,
                       adapt_error *err)
{
    *out = NULL;
    if (!caption || !caption[0])
        return adapt_fail(err, ADAPT_EINVAL, "synthesizer prompt: empty caption");
    const char *at = strstr(t->prompt, "{caption}");
    size_t head = (size_t)(at - t->prompt), lc = strlen(caption);
    const char *tail = at + strlen("{caption}");
    size_t lt = strlen(tail);
    char *s = malloc(head + lc + lt + 1);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "synthesizer prompt: no memory");
    memcpy(s, t->prompt, head);
    memcpy(s + head, caption, lc);
    memcpy(s + head + lc, tail, lt + 1);
    *out = s;
    return ADAPT_OK;
}

/* Python's str.strip() whitespace, ASCII part (the synthesizer writes ASCII markup). */
static int synth_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

typedef struct span { const char *p; size_t n; } span;

static span span_trim(span s)
{
    while (s.n && synth_space(s.p[0])) { s.p++; s.n--; }
    while (s.n && synth_space(s.p[s.n - 1])) s.n--;
    return s;
}

static int span_ends(span s, const char *suffix)
{
    size_t k = strlen(suffix);
    return s.n >= k && memcmp(s.p + s.n - k, suffix, k) == 0;
}

static int span_starts(span s, const char *prefix)
{
    size_t k = strlen(prefix);
    return s.n >= k && memcmp(s.p, prefix, k) == 0;
}

/* The first occurrence of needle in s, or NULL. */
static const char *span_find(span s, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; k && i + k <= s.n; i++)
        if (s.p[i] == needle[0] && memcmp(s.p + i, needle, k) == 0) return s.p + i;
    return NULL;
}

static int span_eq(span a, span b) { return a.n == b.n && memcmp(a.p, b.p, a.n) == 0; }

static char *span_dup(span s)
{
    char *d = malloc(s.n + 1);
    if (d) {
        memcpy(d, s.p, s.n);
        d[s.n] = '\0';
    }
    return d;
}

/* One round → (question, answer) spans; 0 when malformed (see synth.h step 4). */
static int synth_round(const synth_template *t, span piece, span *q, span *a)
{
    const char *sep = span_find(piece, t->qa_separator);
    if (!sep) return 0;
    size_t ls = strlen(t->qa_separator);
    span rest = { sep + ls, piece.n - (size_t)(sep - piece.p) - ls };
    if (span_find(rest, t->qa_separator)) return 0;   /* more than two parts */
    *q = (span){ piece.p, (size_t)(sep - piece.p) };
    if (t->turn_gap[0] && span_ends(rest, t->turn_gap)) {
        span cut = { rest.p, rest.n - strlen(t->turn_gap) };
        if (span_ends(cut, t->end_of_turn)) rest = cut;
    }
    if (!span_ends(rest, t->end_of_turn)) return 0;
    *a = (span){ rest.p, rest.n - strlen(t->end_of_turn) };
    *q = span_trim(*q);
    *a = span_trim(*a);
    return q->n > 0 && a->n > 0;
}

void synth_result_free(synth_result *r)
{
    for (size_t i = 0; i < r->n_pairs; i++) {
        free(r->pairs[i].question);
        free(r->pairs[i].answer);
    }
    free(r->pairs);
    free(r->instruction);
    free(r->precise);
    free(r->informative);
    memset(r, 0, sizeof *r);
}

/* Step 5: the first question with both answers. Rounds are scanned in order; a later answer of
 * the same style to the same question replaces the earlier one, as a dict assignment does in
 * the reference. */
static int synth_triplet(const synth_template *t, const span *q, const span *a, size_t n,
                         synth_result *out)
{
    size_t lp = strlen(t->precise_hint), li = strlen(t->informative_hint);
    for (size_t i = 0; i < n; i++) {
        int precise = span_starts(q[i], t->precise_hint);
        if (!precise && !span_starts(q[i], t->informative_hint)) continue;
        span key = precise ? (span){ q[i].p + lp, q[i].n - lp } : (span){ q[i].p + li, q[i].n - li };
        const char *other_hint = precise ? t->informative_hint : t->precise_hint;
        size_t lo = precise ? li : lp;
        /* the latest earlier round of the other style with the same question */
        for (size_t j = i; j-- > 0;) {
            if (!span_starts(q[j], other_hint)) continue;
            span k2 = { q[j].p + lo, q[j].n - lo };
            if (!span_eq(key, k2)) continue;
            out->instruction = span_dup(key);
            out->precise = span_dup(precise ? a[i] : a[j]);
            out->informative = span_dup(precise ? a[j] : a[i]);
            if (!out->instruction || !out->precise || !out->informative) return -1;
            out->has_triplet = 1;
            return 0;
        }
    }
    return 0;
}

int synth_parse(const synth_template *t, const char *output, synth_result *out,
                adapt_error *err)
{
    memset(out, 0, sizeof *out);
    span s = { output, strlen(output) };
    if (t->stop[0] && span_ends(s, t->stop)) s.n -= strlen(t->stop);
    span tail = s;
    if (t->turn_gap[0] && span_ends(tail, t->turn_gap)) tail.n -= strlen(t->turn_gap);
    int complete = span_ends(tail, t->end_of_turn);

    size_t cap = 1;
    for (span r = s; ; cap++) {
        const char *h = span_find(r, t->user_header);
        if (!h) break;
        size_t skip = (size_t)(h - r.p) + strlen(t->user_header);
        r = (span){ r.p + skip, r.n - skip };
    }
    span *q = calloc(cap, sizeof *q), *a = calloc(cap, sizeof *a);
    int rc = ADAPT_OK;
    if (!q || !a) rc = adapt_fail(err, ADAPT_ENOMEM, "synthesizer output: no memory");
    size_t n = 0, lh = strlen(t->user_header);
    for (size_t k = 0; !rc && k < cap; k++) {
        const char *h = span_find(s, t->user_header);
        span piece = { s.p, h ? (size_t)(h - s.p) : s.n };
        if (h) s = (span){ h + lh, s.n - (size_t)(h - s.p) - lh };
        if (k == cap - 1 && !complete) break;   /* the last round was cut off */
        if (synth_round(t, piece, &q[n], &a[n])) n++;
    }
    if (!rc && n) {
        out->pairs = calloc(n, sizeof *out->pairs);
        if (!out->pairs) rc = adapt_fail(err, ADAPT_ENOMEM, "synthesizer output: no memory");
        for (size_t i = 0; !rc && i < n; i++) {
            out->pairs[i].question = span_dup(q[i]);
            out->pairs[i].answer = span_dup(a[i]);
            out->n_pairs = i + 1;
            if (!out->pairs[i].question || !out->pairs[i].answer)
                rc = adapt_fail(err, ADAPT_ENOMEM, "synthesizer output: no memory");
        }
    }
    if (!rc && synth_triplet(t, q, a, n, out))
        rc = adapt_fail(err, ADAPT_ENOMEM, "synthesizer output: no memory");
    free(q);
    free(a);
    if (rc) synth_result_free(out);
    return rc;
}
