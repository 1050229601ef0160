/* test_scorers: every benchmark scorer (worker/scorers.c) on hand-computed cases: LLaVA-Med's
 * normalisation and token recall (its counting quirks included), closed yes/no, MMMU's
 * multiple-choice parser (brackets, bare letters, option texts, last match, seeded fallback),
 * classification, multi-label parsing and F1, ROUGE-L F. */
#include "check.h"
#include "scorers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

static void norm(const char *in, const char *want)
{
    char *got = scorer_normalize(in);
    CHECK_MSG(got && !strcmp(got, want), "normalize(\"%s\") = \"%s\", want \"%s\"", in,
              got ? got : "(null)", want);
    free(got);
}

static void test_normalize(void)
{
    /* values computed by hand from LLaVA-Med's glossary.normalize_word */
    norm("The x-ray, shows 2 lesions. None.", "x ray shows 2 lesions 0");   /* "," touches a space */
    norm("a.b.c 1.5 end.", "abc 1.5 end");               /* periods go unless a digit follows */
    norm("1,000 cells (approx)", "1000 cells approx");    /* digit,digit: every mark is dropped */
    norm("left/right", "left right");                     /* a mark not next to a space: a space */
    norm("I dont know", "i don't know");                  /* contractions, after lower-casing */
    norm("An apple and THE pear", "apple and pear");      /* articles */
    norm("two or three", "2 or 3");
    norm("", "");
    /* the reference passes re.UNICODE (32) where re.sub takes its count: only 32 periods go */
    char in[80], want[80];
    memset(in, '.', 40);
    in[40] = '\0';
    strcat(in, "x");
    memset(want, '.', 8);
    want[8] = '\0';
    strcat(want, "x");
    norm(in, want);
}

static void test_open(void)
{
    double r = -1, f1, p;
    CHECK(scorer_open_recall("The liver", "liver", &r, NULL) == ADAPT_OK && NEAR(r, 1));
    CHECK(scorer_open_recall("kidney", "left kidney", &r, NULL) == ADAPT_OK && NEAR(r, 0.5));
    CHECK(scorer_open_recall("two", "2", &r, NULL) == ADAPT_OK && NEAR(r, 1));
    CHECK(scorer_open_recall("", "x", &r, NULL) == ADAPT_OK && NEAR(r, 0));
    CHECK(scorer_open_recall("heart", "", &r, NULL) == ADAPT_OK && NEAR(r, 0));
    CHECK(scorer_open_recall("spleen", "liver", &r, NULL) == ADAPT_OK && NEAR(r, 0));
    /* tp sums the prediction's counts: "lung" twice counts 2 */
    CHECK(scorer_token_prf("left lung and right lung", "right lung", &f1, &p, &r, NULL) == ADAPT_OK);
    CHECK(NEAR(r, 1) && NEAR(p, 3.0 / 5.0) && NEAR(f1, 2 * 0.6 / 1.6));
    /* tp = 2 (b twice in the prediction), fn = 1 (c): recall 2/3 although 1 of 2 words matched */
    CHECK(scorer_token_prf("a b b", "b c", &f1, &p, &r, NULL) == ADAPT_OK);
    CHECK(NEAR(r, 2.0 / 3.0) && NEAR(p, 2.0 / 2.0));   /* "a" is an article: gone */
    CHECK(scorer_open_recall("x-ray, chest", "X ray", &r, NULL) == ADAPT_OK && NEAR(r, 1));
}

static void test_closed(void)
{
    double s = -1;
    CHECK(scorer_closed("Yes, it is.", "yes", &s, NULL) == ADAPT_OK && NEAR(s, 1));
    CHECK(scorer_closed("No.", "yes", &s, NULL) == ADAPT_OK && NEAR(s, 0));
    CHECK(scorer_closed("No, there is none", "No", &s, NULL) == ADAPT_OK && NEAR(s, 1));
    CHECK(scorer_closed("It is unclear", "yes", &s, NULL) == ADAPT_OK && NEAR(s, 0));
    /* substring tests, as the reference: "unknown" contains "no" */
    CHECK(scorer_closed("unknown", "no", &s, NULL) == ADAPT_OK && NEAR(s, 1));
}

static const char *const abcd[] = { "A", "B", "C", "D" };
static const char *const animals[] = { "cat", "dog", "bird", "fish" };

static size_t choice(const char *resp, int *rnd)
{
    size_t idx = 99;
    CHECK(scorer_parse_choice(resp, abcd, animals, 4, 7, &idx, rnd, NULL) == ADAPT_OK);
    return idx;
}

static void test_choice(void)
{
    int rnd = -1;
    CHECK(choice("(B)", &rnd) == 1 && rnd == 0);
    CHECK(choice("The answer is (C) bird", &rnd) == 2 && rnd == 0);
    CHECK(choice("A", &rnd) == 0);
    CHECK(choice("B.", &rnd) == 1);                       /* end punctuation stripped */
    CHECK(choice("'D'", &rnd) == 3);
    CHECK(choice("A B", &rnd) == 1);                      /* both bare: the last one */
    CHECK(choice("(A) or (B) or A", &rnd) == 1);          /* brackets first, then the last */
    CHECK(choice("I think it is a dog", &rnd) == 1 && rnd == 0);   /* option text */
    CHECK(choice("cat or dog, probably dog", &rnd) == 1); /* the option found last */
    CHECK(choice("Dog and CAT", &rnd) == 0);              /* case-insensitive texts, last: cat */
    /* nothing matches: the seeded draw, the same every time, flagged */
    size_t a = choice("xyz", &rnd);
    CHECK(rnd == 1 && a < 4);
    CHECK(choice("xyz", &rnd) == a);
    size_t b = choice("none", &rnd);                      /* long enough, but no text matches */
    CHECK(rnd == 1 && b < 4);
    /* "dog" is in the response but it is not longer than 5 characters padded: no text pass */
    CHECK(choice("dog", &rnd) < 4 && rnd == 1);
    /* different seeds spread over the choices */
    int seen[4] = {0};
    for (uint64_t seed = 0; seed < 64; seed++) {
        size_t idx;
        CHECK(scorer_parse_choice("zz", abcd, animals, 4, seed, &idx, &rnd, NULL) == ADAPT_OK);
        if (idx < 4) seen[idx] = 1;
    }
    CHECK(seen[0] && seen[1] && seen[2] && seen[3]);
    size_t idx;
    CHECK(scorer_parse_choice("A", abcd, animals, 0, 1, &idx, NULL, NULL) == ADAPT_EINVAL);

    /* classification: choices are the indices, texts the class names */
    static const char *const idx3[] = { "0", "1", "2" };
    static const char *const food[] = { "apple pie", "pizza", "sushi" };
    CHECK(scorer_parse_choice("It looks like pizza", idx3, food, 3, 1, &idx, &rnd, NULL) == 0);
    CHECK(idx == 1 && rnd == 0);
    CHECK(scorer_parse_choice("2", idx3, food, 3, 1, &idx, &rnd, NULL) == 0 && idx == 2);
    CHECK(scorer_parse_choice("Apple Pie.", idx3, food, 3, 1, &idx, &rnd, NULL) == 0 && idx == 0);
}

static void test_labels(void)
{
    static const char *const labels[] = { "egg", "egg tart", "tomato", "rice" };
    unsigned char picked[4], truth[4] = { 0, 1, 0, 0 };
    /* longest first, and a match is removed: "egg tart" does not also count as "egg" */
    CHECK(scorer_parse_labels("An Egg tart and tomato", labels, 4, picked, NULL) == ADAPT_OK);
    CHECK(!picked[0] && picked[1] && picked[2] && !picked[3]);
    CHECK(NEAR(scorer_f1(truth, picked, 4), 2.0 / 3.0));   /* tp 1, fp 1, fn 0 */
    CHECK(scorer_parse_labels("egg, egg tart", labels, 4, picked, NULL) == ADAPT_OK);
    CHECK(picked[0] && picked[1]);
    unsigned char none[4] = {0};
    CHECK(NEAR(scorer_f1(none, none, 4), 1.0));            /* zero_division = 1 */
    CHECK(NEAR(scorer_f1(truth, none, 4), 0.0));
    unsigned char t2[4] = { 1, 1, 0, 1 }, p2[4] = { 1, 0, 1, 1 };
    CHECK(NEAR(scorer_f1(t2, p2, 4), 4.0 / 6.0));          /* tp 2, fp 1, fn 1 */
}

static void test_rouge(void)
{
    double s = -1;
    CHECK(scorer_rouge_l("the cat sat on the mat", "the cat is on the mat", &s, NULL) == 0);
    CHECK(NEAR(s, 5.0 / 6.0));                              /* LCS 5 of 6 and 6 */
    CHECK(scorer_rouge_l("a b c d", "b d", &s, NULL) == 0 && NEAR(s, 2 * 0.5 * 1 / 1.5));
    CHECK(scorer_rouge_l("The Cat", "the cat.", &s, NULL) == 0 && NEAR(s, 1));
    CHECK(scorer_rouge_l("x y", "z", &s, NULL) == 0 && NEAR(s, 0));
    CHECK(scorer_rouge_l("", "z", &s, NULL) == 0 && NEAR(s, 0));
    /* order matters: LCS of (d c b a) and (a b c d) is 1 */
    CHECK(scorer_rouge_l("d c b a", "a b c d", &s, NULL) == 0 && NEAR(s, 0.25));
}

static void test_kinds(void)
{
    for (int k = 0; k < SCORER_N_KINDS; k++)
        CHECK(scorer_kind_parse(scorer_kind_name((scorer_kind)k)) == k);
    CHECK(scorer_kind_parse("OPEN") == -1);
    CHECK(!strcmp(scorer_metric_name(SCORER_OPEN), "recall"));
}

int main(void)
{
    test_normalize();
    test_open();
    test_closed();
    test_choice();
    test_labels();
    test_rouge();
    test_kinds();
    return check_report("test_scorers");
}
