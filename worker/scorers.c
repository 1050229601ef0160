/* scorers: the benchmark scorers; see scorers.h. Texts are handled as bytes (ASCII case
 * folding, ASCII whitespace), which is what the reference's Python does on the English
 * benchmarks; token lists are short, so counting is by linear search over distinct words. */
#include "scorers.h"

#include "data_order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[SCORER_N_KINDS] = {
    "open", "closed", "multi_choice", "classification", "multi_label", "rouge_l",
};
static const char *const metric_names[SCORER_N_KINDS] = {
    "recall", "yes/no accuracy", "accuracy", "accuracy", "f1", "rouge-l f",
};

const char *scorer_kind_name(scorer_kind k)
{
    return (unsigned)k < SCORER_N_KINDS ? kind_names[k] : "?";
}

const char *scorer_metric_name(scorer_kind k)
{
    return (unsigned)k < SCORER_N_KINDS ? metric_names[k] : "?";
}

int scorer_kind_parse(const char *name)
{
    for (int k = 0; k < SCORER_N_KINDS; k++)
        if (!strcmp(name, kind_names[k])) return k;
    return -1;
}

/* ---- LLaVA-Med's normalize_word ---------------------------------------------------------- */

static const char scorer_punct[] = ";/[]\"{}()=+\\_-><@`,?!";
static const char *const scorer_articles[] = { "a", "an", "the" };
static const struct { const char *word, *digit; } scorer_numbers[] = {
    {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"}, {"three", "3"}, {"four", "4"},
    {"five", "5"}, {"six", "6"}, {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"},
};
/* LLaVA-Med's contraction table, the entries that can match a lower-cased word. */
static const struct { const char *from, *to; } scorer_contractions[] = {
    {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"},
    {"couldnt", "couldn't"}, {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"},
    {"didnt", "didn't"}, {"doesnt", "doesn't"}, {"dont", "don't"}, {"hadnt", "hadn't"},
    {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"},
    {"havent", "haven't"}, {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"},
    {"hes", "he's"}, {"howd", "how'd"}, {"howll", "how'll"}, {"hows", "how's"}, {"isnt", "isn't"},
    {"itd", "it'd"}, {"itd've", "it'd've"}, {"it'dve", "it'd've"}, {"itll", "it'll"},
    {"let's", "let's"}, {"maam", "ma'am"}, {"mightnt", "mightn't"}, {"mightnt've", "mightn't've"},
    {"mightn'tve", "mightn't've"}, {"mightve", "might've"}, {"mustnt", "mustn't"},
    {"mustve", "must've"}, {"neednt", "needn't"}, {"notve", "not've"}, {"oclock", "o'clock"},
    {"oughtnt", "oughtn't"}, {"ow's'at", "'ow's'at"}, {"'ows'at", "'ow's'at"},
    {"'ow'sat", "'ow's'at"}, {"shant", "shan't"}, {"shed've", "she'd've"},
    {"she'dve", "she'd've"}, {"she's", "she's"}, {"shouldve", "should've"},
    {"shouldnt", "shouldn't"}, {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"},
    {"somebody'd", "somebodyd"}, {"somebodyd've", "somebody'd've"},
    {"somebody'dve", "somebody'd've"}, {"somebodyll", "somebody'll"}, {"somebodys", "somebody's"},
    {"someoned", "someone'd"}, {"someoned've", "someone'd've"}, {"someone'dve", "someone'd've"},
    {"someonell", "someone'll"}, {"someones", "someone's"}, {"somethingd", "something'd"},
    {"somethingd've", "something'd've"}, {"something'dve", "something'd've"},
    {"somethingll", "something'll"}, {"thats", "that's"}, {"thered", "there'd"},
    {"thered've", "there'd've"}, {"there'dve", "there'd've"}, {"therere", "there're"},
    {"theres", "there's"}, {"theyd", "they'd"}, {"theyd've", "they'd've"},
    {"they'dve", "they'd've"}, {"theyll", "they'll"}, {"theyre", "they're"},
    {"theyve", "they've"}, {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"},
    {"we'dve", "we'd've"}, {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"},
    {"whatre", "what're"}, {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"},
    {"whered", "where'd"}, {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"},
    {"whod've", "who'd've"}, {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"},
    {"whove", "who've"}, {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"},
    {"wont", "won't"}, {"wouldve", "would've"}, {"wouldnt", "wouldn't"},
    {"wouldnt've", "wouldn't've"}, {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"},
    {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"}, {"yall'd've", "y'all'd've"},
    {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"}, {"youd", "you'd"},
    {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"}, {"youre", "you're"},
    {"youve", "you've"},
};

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++) *p = lower(*p);
    return d;
}

/* Python's re.sub with count=32 (the reference passes re.UNICODE, 32, where the count goes):
 * the first 32 periods not followed by a digit are removed. */
#define SCORER_PERIOD_LIMIT 32

char *scorer_normalize(const char *token)
{
    size_t n = strlen(token);
    int digit_comma = 0;
    for (size_t i = 0; i + 2 < n; i++)
        if (is_digit(token[i]) && token[i + 1] == ',' && is_digit(token[i + 2])) digit_comma = 1;
    /* per punctuation mark: dropped when it touches a space anywhere in the (original) text or
     * the text has a digit,digit; else turned into a space */
    char drop[sizeof scorer_punct] = {0};
    for (size_t k = 0; scorer_punct[k]; k++) {
        char p = scorer_punct[k];
        int touches = 0;
        for (size_t i = 0; i + 1 < n && !touches; i++)
            touches = (token[i] == p && token[i + 1] == ' ') || (token[i] == ' ' && token[i + 1] == p);
        drop[k] = (char)(touches || digit_comma);
    }
    char *t = malloc(n + 1), *out = malloc(n + 2);
    if (!t || !out) {
        free(t);
        free(out);
        return NULL;
    }
    size_t m = 0, periods = 0, cap = n + 2;
    for (size_t i = 0; i < n; i++) {
        char c = token[i];
        const char *at = c ? strchr(scorer_punct, c) : NULL;
        if (at) {
            if (!drop[at - scorer_punct]) t[m++] = ' ';
            continue;
        }
        t[m++] = c;
    }
    t[m] = '\0';
    /* periods, on the text after the punctuation pass */
    size_t k2 = 0;
    for (size_t i = 0; i < m; i++) {
        if (t[i] == '.' && !is_digit(t[i + 1]) && periods < SCORER_PERIOD_LIMIT) {
            periods++;
            continue;
        }
        t[k2++] = lower(t[i]);
    }
    t[k2] = '\0';
    size_t o = 0;
    for (char *w = t; *w;) {
        while (*w && is_space(*w)) w++;
        if (!*w) break;
        char *e = w;
        while (*e && !is_space(*e)) e++;
        char save = *e;
        *e = '\0';
        const char *word = w;
        for (size_t i = 0; i < sizeof scorer_numbers / sizeof *scorer_numbers; i++)
            if (!strcmp(word, scorer_numbers[i].word)) word = scorer_numbers[i].digit;
        int article = 0;
        for (size_t i = 0; i < 3; i++) article |= !strcmp(word, scorer_articles[i]);
        if (!article) {
            for (size_t i = 0; i < sizeof scorer_contractions / sizeof *scorer_contractions; i++)
                if (!strcmp(word, scorer_contractions[i].from)) {
                    word = scorer_contractions[i].to;
                    break;
                }
            size_t lw = strlen(word);
            char *grown = out;
            if (o + lw + 2 > cap) {
                cap = 2 * (o + lw + 2);
                grown = realloc(out, cap);
            }
            if (!grown) {
                free(t);
                free(out);
                return NULL;
            }
            out = grown;
            if (o) out[o++] = ' ';
            memcpy(out + o, word, lw);
            o += lw;
        }
        *e = save;
        w = e;
    }
    out[o] = '\0';
    free(t);
    /* finally every comma goes */
    size_t j = 0;
    for (size_t i = 0; i < o; i++)
        if (out[i] != ',') out[j++] = out[i];
    out[j] = '\0';
    return out;
}

/* ---- word counts (split_sentence with n = 1) --------------------------------------------- */

typedef struct word_counts {
    char  **words;   /* distinct words, pointing into text */
    size_t *count;
    size_t  n;
    char   *text;    /* owned, lower-cased, split in place */
} word_counts;

static void counts_free(word_counts *c)
{
    free(c->words);
    free(c->count);
    free(c->text);
    memset(c, 0, sizeof *c);
}

static size_t counts_find(const word_counts *c, const char *w)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->words[i], w)) return i;
    return c->n;
}

static int counts_build(word_counts *c, const char *s)
{
    memset(c, 0, sizeof *c);
    c->text = lower_dup(s);
    size_t cap = strlen(s) / 2 + 1;
    c->words = malloc(cap * sizeof *c->words);
    c->count = malloc(cap * sizeof *c->count);
    if (!c->text || !c->words || !c->count) return -1;
    for (char *w = c->text; *w;) {
        while (*w && is_space(*w)) w++;
        if (!*w) break;
        char *e = w;
        while (*e && !is_space(*e)) e++;
        int end = !*e;
        *e = '\0';
        size_t i = counts_find(c, w);
        if (i == c->n) {
            c->words[c->n] = w;
            c->count[c->n++] = 0;
        }
        c->count[i]++;
        w = end ? e : e + 1;
    }
    return 0;
}

/* Lower-cases and normalises twice, as the reference's evaluate loop and calculate_f1score
 * each do once. */
static char *normalize_twice(const char *s)
{
    char *l = lower_dup(s);
    char *a = l ? scorer_normalize(l) : NULL;
    char *b = a ? scorer_normalize(a) : NULL;
    free(l);
    free(a);
    return b;
}

int scorer_token_prf(const char *prediction, const char *answer, double *f1, double *precision,
                     double *recall, adapt_error *err)
{
    *f1 = *precision = *recall = 0;
    char *cand = normalize_twice(prediction), *ref = normalize_twice(answer);
    word_counts c = {0}, r = {0};
    int rc = ADAPT_OK;
    if (!cand || !ref || counts_build(&c, cand) || counts_build(&r, ref))
        rc = adapt_fail(err, ADAPT_ENOMEM, "scorer: no memory");
    if (!rc && c.n && r.n) {
        size_t tp = 0, fp = 0, fn = 0;
        for (size_t i = 0; i < c.n; i++) {
            if (counts_find(&r, c.words[i]) < r.n) tp += c.count[i];
            else fp += c.count[i];
        }
        for (size_t i = 0; i < r.n; i++)
            if (counts_find(&c, r.words[i]) == c.n) fn += r.count[i];
        if (tp) {
            *precision = (double)tp / (double)(tp + fp);
            *recall = (double)tp / (double)(tp + fn);
            *f1 = 2 * *precision * *recall / (*precision + *recall);
        }
    }
    counts_free(&c);
    counts_free(&r);
    free(cand);
    free(ref);
    return rc;
}

int scorer_open_recall(const char *prediction, const char *answer, double *score,
                       adapt_error *err)
{
    double f1, p;
    return scorer_token_prf(prediction, answer, &f1, &p, score, err);
}

int scorer_closed(const char *prediction, const char *answer, double *score, adapt_error *err)
{
    char *lp = lower_dup(prediction), *la = lower_dup(answer);
    char *p = lp ? scorer_normalize(lp) : NULL, *a = la ? scorer_normalize(la) : NULL;
    int rc = ADAPT_OK;
    if (!p || !a) rc = adapt_fail(err, ADAPT_ENOMEM, "scorer: no memory");
    else *score = (strstr(p, "yes") || strstr(p, "no")) && strstr(p, a) ? 1.0 : 0.0;
    free(lp);
    free(la);
    free(p);
    free(a);
    return rc;
}

/* ---- multiple choice (MMMU) --------------------------------------------------------------- */

/* Python's str.rfind: the last start of needle in hay, -1 when absent. */
static long rfind(const char *hay, const char *needle)
{
    size_t lh = strlen(hay), ln = strlen(needle);
    if (ln > lh) return -1;
    for (size_t i = lh - ln + 1; i-- > 0;)
        if (!memcmp(hay + i, needle, ln)) return (long)i;
    return -1;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

int scorer_parse_choice(const char *response, const char *const *choices,
                        const char *const *option_text, size_t n, uint64_t seed, size_t *index,
                        int *random_pick, adapt_error *err)
{
    if (n == 0) return adapt_fail(err, ADAPT_EINVAL, "multiple choice: no options");
    /* strip each of , . ! ? ; : ' from both ends, one character class after the other */
    size_t len = strlen(response);
    const char *s = response;
    for (const char *ch = ",.!?;:'"; *ch; ch++) {
        while (len && s[0] == *ch) { s++; len--; }
        while (len && s[len - 1] == *ch) len--;
    }
    size_t maxopt = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l1 = strlen(choices[i]), l2 = strlen(option_text[i]);
        if (l1 > maxopt) maxopt = l1;
        if (l2 > maxopt) maxopt = l2;
    }
    char *resp = malloc(len + 3), *resp_l = malloc(len + 3), *probe = malloc(maxopt + 3);
    size_t *cand = malloc(n * sizeof *cand);
    long *where = malloc(n * sizeof *where);
    int rc = ADAPT_OK;
    if (!resp || !resp_l || !probe || !cand || !where) {
        rc = adapt_fail(err, ADAPT_ENOMEM, "multiple choice: no memory");
        goto done;
    }
    resp[0] = ' ';
    memcpy(resp + 1, s, len);
    resp[len + 1] = ' ';
    resp[len + 2] = '\0';
    for (size_t i = 0; i < len + 3; i++) resp_l[i] = lower(resp[i]);
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {                  /* (A) (B) (C) (D) */
        snprintf(probe, maxopt + 3, "(%s)", choices[i]);
        if ((where[nc] = rfind(resp, probe)) >= 0) cand[nc++] = i;
    }
    if (nc == 0)
        for (size_t i = 0; i < n; i++) {              /* A B C D */
            snprintf(probe, maxopt + 3, " %s ", choices[i]);
            if ((where[nc] = rfind(resp, probe)) >= 0) cand[nc++] = i;
        }
    if (nc == 0 && utf8_chars(resp) > 5) {            /* the option texts */
        for (size_t i = 0; i < n; i++) {
            char *t = lower_dup(option_text[i]);
            if (!t) {
                rc = adapt_fail(err, ADAPT_ENOMEM, "multiple choice: no memory");
                goto done;
            }
            if ((where[nc] = rfind(resp_l, t)) >= 0) cand[nc++] = i;
            free(t);
        }
    }
    if (random_pick) *random_pick = nc == 0;
    if (nc == 0) {
        data_order_rng r;
        data_order_rng_init(&r, seed);
        *index = (size_t)data_order_rng_below(&r, n);
    } else {
        /* the candidate found last; on a tie the first, as numpy's argmax */
        size_t best = 0;
        for (size_t i = 1; i < nc; i++)
            if (where[i] > where[best]) best = i;
        *index = cand[best];
    }
done:
    free(resp);
    free(resp_l);
    free(probe);
    free(cand);
    free(where);
    return rc;
}

/* ---- multi-label ---------------------------------------------------------------------------- */

/* Removes every occurrence of needle from s in place (Python's str.replace(needle, '')). */
static void remove_all(char *s, const char *needle)
{
    size_t ln = strlen(needle);
    if (!ln) return;
    char *w = s;
    for (char *r = s; *r;) {
        if (!strncmp(r, needle, ln)) r += ln;
        else *w++ = *r++;
    }
    *w = '\0';
}

int scorer_parse_labels(const char *response, const char *const *labels, size_t n,
                        unsigned char *picked, adapt_error *err)
{
    char *resp = lower_dup(response);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    int rc = ADAPT_OK;
    if (!resp || !order) {
        rc = adapt_fail(err, ADAPT_ENOMEM, "multi-label: no memory");
        goto done;
    }
    /* longest first; equal lengths keep their order (Python's sort is stable) */
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strlen(labels[order[j - 1]]) < strlen(labels[order[j]]); j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    memset(picked, 0, n);
    for (size_t i = 0; i < n; i++) {
        char *l = lower_dup(labels[order[i]]);
        if (!l) {
            rc = adapt_fail(err, ADAPT_ENOMEM, "multi-label: no memory");
            goto done;
        }
        if (strstr(resp, l)) {
            picked[order[i]] = 1;
            remove_all(resp, l);
        }
        free(l);
    }
done:
    free(resp);
    free(order);
    return rc;
}

double scorer_f1(const unsigned char *truth, const unsigned char *pred, size_t n)
{
    size_t tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < n; i++) {
        tp += truth[i] && pred[i];
        fp += !truth[i] && pred[i];
        fn += truth[i] && !pred[i];
    }
    if (tp + fp + fn == 0) return 1.0;   /* zero_division=1 */
    return 2.0 * (double)tp / (double)(2 * tp + fp + fn);
}

/* ---- ROUGE-L ---------------------------------------------------------------------------- */

static int word_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || (c & 0x80);
}

/* Splits s (lower-cased copy) into tokens: runs of word bytes. */
static char **tokens_split(const char *s, size_t *n, char **buf)
{
    *buf = lower_dup(s);
    char **t = malloc((strlen(s) / 2 + 1) * sizeof *t);
    *n = 0;
    if (!*buf || !t) {
        free(t);
        return NULL;
    }
    for (char *p = *buf; *p;) {
        while (*p && !word_byte(*p)) p++;
        if (!*p) break;
        t[(*n)++] = p;
        while (*p && word_byte(*p)) p++;
        if (*p) *p++ = '\0';
    }
    return t;
}

int scorer_rouge_l(const char *prediction, const char *answer, double *score, adapt_error *err)
{
    char *bp = NULL, *ba = NULL;
    size_t np = 0, na = 0;
    char **tp = tokens_split(prediction, &np, &bp), **ta = tokens_split(answer, &na, &ba);
    size_t *row = tp && ta ? calloc(na + 1, sizeof *row) : NULL;
    int rc = ADAPT_OK;
    *score = 0;
    if (!row) rc = adapt_fail(err, ADAPT_ENOMEM, "rouge-l: no memory");
    else if (np && na) {
        /* one-row LCS table: row[j] = LCS(prediction[0..i), answer[0..j)) */
        for (size_t i = 0; i < np; i++) {
            size_t diag = 0;
            for (size_t j = 1; j <= na; j++) {
                size_t up = row[j];
                row[j] = !strcmp(tp[i], ta[j - 1]) ? diag + 1
                                                   : (row[j - 1] > up ? row[j - 1] : up);
                diag = up;
            }
        }
        size_t lcs = row[na];
        if (lcs) {
            double p = (double)lcs / (double)np, r = (double)lcs / (double)na;
            *score = 2 * p * r / (p + r);
        }
    }
    free(row);
    free(tp);
    free(ta);
    free(bp);
    free(ba);
    return rc;
}
