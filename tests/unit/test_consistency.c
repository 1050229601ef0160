/* test_consistency: the filter's text logic (worker/consistency.c): the judge's label, the
 * built-in few-shot prompt and placeholder filling, and the response composition rules
 * (conclusion keywords with their trailing spaces, last sentence only, informative + precise,
 * chain-of-thought template picked by task id from a configurable pool). */
#include "check.h"
#include "consistency.h"
#include "conversation.h"
#include "job_kinds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_labels(void)
{
    CHECK(consistency_label_parse(" Yes") == CONSISTENCY_YES);
    CHECK(consistency_label_parse("yes\n") == CONSISTENCY_YES);
    CHECK(consistency_label_parse("YES") == CONSISTENCY_YES);
    CHECK(consistency_label_parse(" No") == CONSISTENCY_NO);
    CHECK(consistency_label_parse("\topen ") == CONSISTENCY_OPEN);
    /* only the exact word: the reference keeps "yes" alone */
    CHECK(consistency_label_parse("Yes.") == CONSISTENCY_OTHER);
    CHECK(consistency_label_parse("Yesno") == CONSISTENCY_OTHER);
    CHECK(consistency_label_parse("") == CONSISTENCY_OTHER);
    CHECK(consistency_label_parse("ye") == CONSISTENCY_OTHER);
    CHECK(!strcmp(consistency_label_name(CONSISTENCY_YES), "yes"));
    CHECK(!strcmp(consistency_label_name(CONSISTENCY_OTHER), "other"));
}

static void test_prompt(void)
{
    const char *d = consistency_default_prompt;
    CHECK(consistency_prompt_check(d, "built-in", NULL) == ADAPT_OK);
    /* six worked examples plus the item under test, which ends the prompt */
    CHECK(count(d, "## Question: ") == 7);
    CHECK(count(d, "## Informative Answer: ") == 7);
    CHECK(count(d, "## Precise Answer: ") == 7);
    CHECK(count(d, "## Consistent:") == 7);
    CHECK(count(d, "## Consistent: Yes\n") == 2);
    CHECK(count(d, "## Consistent: No\n") == 2);
    CHECK(count(d, "## Consistent: Open\n") == 2);
    size_t n = strlen(d);
    CHECK(n > 14 && !strcmp(d + n - 14, "## Consistent:"));
    CHECK_STR_CONTAINS(d, "- Yes:");
    CHECK_STR_CONTAINS(d, "- No:");
    CHECK_STR_CONTAINS(d, "- Open:");

    char *p = NULL;
    CHECK(consistency_prompt_build(d, "How many?", "I count two {precise} things.", "2", &p,
                                   NULL) == ADAPT_OK);
    CHECK(p != NULL);
    const char *tail = "## Question: How many?\n## Informative Answer: I count two {precise} "
                       "things.\n## Precise Answer: 2\n## Consistent:";
    /* values are not scanned again: the braces in the answer stay as written */
    CHECK_MSG(strlen(p) > strlen(tail) && !strcmp(p + strlen(p) - strlen(tail), tail), "%s",
              p + strlen(p) - strlen(tail));
    free(p);

    CHECK(consistency_prompt_build("Q={question}|{other}|{question}", "x", "i", "p", &p, NULL) ==
          ADAPT_OK);
    CHECK(!strcmp(p, "Q=x|{other}|x"));
    free(p);

    adapt_error err = {0};
    CHECK(consistency_prompt_check("{question} {informative}", "my.txt", &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "my.txt");
    CHECK_STR_CONTAINS(err.message, "{precise}");
    CHECK(consistency_cot_check("{informative} so", "pool", &err) == ADAPT_EINVAL);
    CHECK(consistency_cot_check("{informative} so {precise}", "pool", NULL) == ADAPT_OK);
}

static void compose(const char *inf, const char *pre, const char *id, const char *const *pool,
                    size_t n_pool, const char *want, consistency_rule want_rule)
{
    char *out = NULL;
    consistency_rule rule = CONSISTENCY_RULE_COT;
    CHECK(consistency_compose(inf, pre, id, pool, n_pool, &out, &rule, NULL) == ADAPT_OK);
    CHECK_MSG(out && !strcmp(out, want), "got \"%s\", want \"%s\"", out ? out : "(null)", want);
    CHECK_MSG(rule == want_rule, "rule %d, want %d for \"%s\"", (int)rule, (int)want_rule, inf);
    free(out);
}

static void test_compose(void)
{
    static const char *const one[] = { "{informative} => {precise}" };
    /* the informative answer's last sentence concludes: it alone */
    compose("The lesion is round. Therefore it could be a cyst.", "cyst", "t1", one, 1,
            "The lesion is round. Therefore it could be a cyst.", CONSISTENCY_RULE_INFORMATIVE);
    /* case does not matter */
    compose("Red dots. THUS it is measles", "measles", "t1", one, 1, "Red dots. THUS it is measles",
            CONSISTENCY_RULE_INFORMATIVE);
    /* a keyword in an earlier sentence does not count: only the last one */
    compose("So many cells are here. The nucleus is large", "large", "t1", one, 1,
            "So many cells are here. The nucleus is large => large", CONSISTENCY_RULE_COT);
    /* the keywords carry their trailing space: "also." and "answer." are not conclusions */
    compose("It is pink, also.", "pink", "t1", one, 1, "It is pink, also. => pink",
            CONSISTENCY_RULE_COT);
    compose("It is pink.", "the answer", "t1", one, 1, "It is pink. => the answer",
            CONSISTENCY_RULE_COT);
    /* the precise answer concludes: informative + " " + precise */
    compose("The cells are stained pink", "The final answer is B", "t1", one, 1,
            "The cells are stained pink The final answer is B", CONSISTENCY_RULE_APPEND);
    compose("Pink.", "Result is eosin", "t1", one, 1, "Pink. Result is eosin",
            CONSISTENCY_RULE_APPEND);
    /* each keyword of the list */
    static const char *const kw[] = { "could be ", "so ", "thus ", "therefore ", "final ",
                                      "answer ", "result " };
    for (size_t k = 0; k < 7; k++) {
        char inf[128];
        snprintf(inf, sizeof inf, "First. Then %sx", kw[k]);
        compose(inf, "x", "t", one, 1, inf, CONSISTENCY_RULE_INFORMATIVE);
    }

    /* the chain-of-thought pick depends on the task id only, and spreads over the pool */
    static const char *const pool[] = { "A:{informative}|{precise}", "B:{informative}|{precise}",
                                        "C:{informative}|{precise}" };
    int seen[3] = {0};
    for (int i = 0; i < 60; i++) {
        char id[32];
        snprintf(id, sizeof id, "task-%d", i);
        size_t k = consistency_cot_pick(id, 3);
        CHECK(k < 3 && consistency_cot_pick(id, 3) == k);
        seen[k] = 1;
        char want[64];
        snprintf(want, sizeof want, "%c:why|it", 'A' + (int)k);
        compose("why", "it", id, pool, 3, want, CONSISTENCY_RULE_COT);
    }
    CHECK(seen[0] && seen[1] && seen[2]);
    /* the built-in pool: every template fills both answers */
    CHECK(consistency_n_default_cot >= 3);
    for (size_t i = 0; i < consistency_n_default_cot; i++)
        CHECK(consistency_cot_check(consistency_default_cot[i], "built-in", NULL) == ADAPT_OK);
    char *out = NULL;
    CHECK(consistency_compose("why", "it", "x", pool, 0, &out, NULL, NULL) == ADAPT_EINVAL);
}

/* The filter job's overlay record, read back as training reads it. */
static void test_record(void)
{
    Adaptd__Sample *syn = malloc(sizeof *syn);
    adaptd__sample__init(syn);
    syn->id = strdup("img-3");
    CHECK(job_sample_extra(syn, "instruction", "What organ?", NULL) == ADAPT_OK);
    CHECK(job_sample_extra(syn, "precise", "liver", NULL) == ADAPT_OK);
    CHECK(job_sample_extra(syn, "informative", "A large lobed organ.", NULL) == ADAPT_OK);
    static const char *const one[] = { "{informative} So: {precise}" };
    Adaptd__Sample *o = NULL;
    CHECK(job_filter_record(syn, " Yes", one, 1, &o, NULL) == ADAPT_OK);
    CHECK(o && !strcmp(o->id, "img-3") && !strcmp(o->source->format, "filter"));
    CHECK(!strcmp(job_sample_extra_get(o, "label"), "yes"));
    CHECK(!strcmp(job_sample_extra_get(o, "judge"), " Yes"));
    CHECK(!strcmp(job_sample_extra_get(o, "rule"), "cot"));
    conv_task *t = NULL;
    size_t n = 0;
    CHECK(conv_tasks_from_overlay(o, &t, &n, NULL) == ADAPT_OK && n == 1);
    CHECK(n == 1 && !strcmp(t[0].question, "What organ?") &&
          !strcmp(t[0].answer, "A large lobed organ. So: liver"));
    free(t);
    job_sample_free(o);
    /* dropped labels: no turns, so no task; the label is kept for the report */
    const char *judges[] = { "No", "open", "Maybe", "" };
    const char *labels[] = { "no", "open", "other", "other" };
    for (int i = 0; i < 4; i++) {
        CHECK(job_filter_record(syn, judges[i], one, 1, &o, NULL) == ADAPT_OK);
        CHECK(o->n_turns == 0 && !strcmp(job_sample_extra_get(o, "label"), labels[i]));
        CHECK(!job_sample_extra_get(o, "rule"));
        CHECK(conv_tasks_from_overlay(o, &t, &n, NULL) == ADAPT_OK && n == 0);
        job_sample_free(o);
    }
    /* no triplet: not judged */
    CHECK(job_filter_record(syn, NULL, one, 1, &o, NULL) == ADAPT_OK);
    CHECK(!strcmp(job_sample_extra_get(o, "label"), "none") && o->n_turns == 0);
    job_sample_free(o);
    job_sample_free(syn);
}

int main(void)
{
    test_record();
    test_labels();
    test_prompt();
    test_compose();
    return check_report("test_consistency");
}
