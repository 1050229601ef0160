/* test_conversation: training conversations per mode (worker/conversation.c): turn roles, texts
 * and loss flags; caption first/last and instruction choice seeded by sample id only (same across
 * calls, both outcomes occur over many ids); blank-image share; overlay task reading; refusals. */
#include "check.h"
#include "conversation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const pool[] = { "Describe the image.", "Caption this.", "What is shown?" };

static conv_options opts(conv_mode mode)
{
    return (conv_options){ .mode = mode, .seed = 42, .instructions = pool, .n_instructions = 3,
                           .blank_ratio = 0.0 };
}

static int is_pool(const char *s)
{
    for (int i = 0; i < 3; i++) if (!strcmp(s, pool[i])) return 1;
    return 0;
}

static void test_single_stage(void)
{
    conv_options o = opts(CONV_MODE_SINGLE_STAGE);
    const conv_task task = { "What organ is this?", "The liver. So the answer is liver.", NULL };
    int first = 0, last = 0;
    char id[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "img-%d", i);
        conv c;
        CHECK(conv_build(&c, &o, id, "A CT scan of the abdomen.", &task, 1, NULL) == ADAPT_OK);
        CHECK(c.n_turns == 4);
        CHECK(c.image_turn == 0 && c.turns[0].role == CONV_ROLE_USER);
        for (size_t t = 0; t < c.n_turns; t++) {
            CHECK(c.turns[t].role == (t % 2 ? CONV_ROLE_ASSISTANT : CONV_ROLE_USER));
            CHECK(c.turns[t].loss == (c.turns[t].role == CONV_ROLE_ASSISTANT));
        }
        int cap_last = conv_caption_last(42, id);
        size_t cap = cap_last ? 2 : 0, tsk = cap_last ? 0 : 2;
        CHECK(is_pool(c.turns[cap].text));
        CHECK(!strcmp(c.turns[cap].text, pool[conv_pick_instruction(42, id, 3)]));
        CHECK(!strcmp(c.turns[cap + 1].text, "A CT scan of the abdomen."));
        CHECK(!strcmp(c.turns[tsk].text, task.question));
        CHECK(!strcmp(c.turns[tsk + 1].text, task.answer));
        CHECK(c.blank_image == 0);
        cap_last ? last++ : first++;
        /* the same id gives the same conversation */
        conv d;
        conv_build(&d, &o, id, "A CT scan of the abdomen.", &task, 1, NULL);
        for (size_t t = 0; t < c.n_turns; t++) CHECK(!strcmp(c.turns[t].text, d.turns[t].text));
        conv_free(&d);
        conv_free(&c);
    }
    CHECK_MSG(first > 60 && last > 60, "caption first %d, last %d of 200", first, last);
    /* no kept task: caption only */
    conv c;
    CHECK(conv_build(&c, &o, "img-x", "A photo.", NULL, 0, NULL) == ADAPT_OK);
    CHECK(c.n_turns == 2 && c.turns[1].loss == 1 && !strcmp(c.turns[1].text, "A photo."));
    conv_free(&c);
    /* no caption but a task: the task alone */
    CHECK(conv_build(&c, &o, "img-y", "", &task, 1, NULL) == ADAPT_OK);
    CHECK(c.n_turns == 2 && !strcmp(c.turns[0].text, task.question));
    conv_free(&c);
}

static void test_instruction_spread(void)
{
    int hits[3] = { 0 };
    char id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "s%d", i);
        size_t k = conv_pick_instruction(42, id, 3);
        CHECK(k < 3);
        if (k < 3) hits[k]++;
    }
    for (int i = 0; i < 3; i++) CHECK_MSG(hits[i] > 50, "instruction %d drawn %d times", i, hits[i]);
    CHECK(conv_pick_instruction(42, "s1", 3) == conv_pick_instruction(42, "s1", 3));
}

static void test_synthesizer(void)
{
    conv_options o = opts(CONV_MODE_SYNTHESIZER);
    const conv_task tasks[] = {
        { "How many vessels?", "Two.", "There are two vessels, one on each side." },
        { "Is there a fracture?", "No.", "" },
    };
    conv c;
    CHECK(conv_build(&c, &o, "seed-1", "An X-ray.", tasks, 2, NULL) == ADAPT_OK);
    CHECK(c.n_turns == 2 + 4 + 2);
    CHECK(c.turns[0].loss == 0 && c.turns[1].loss == 0);   /* round 1 masked */
    for (size_t t = 2; t < c.n_turns; t++) CHECK(c.turns[t].loss == 1);
    CHECK(!strcmp(c.turns[1].text, "An X-ray."));
    CHECK(!strcmp(c.turns[2].text, "How many vessels? " CONV_PRECISE_HINT));
    CHECK(!strcmp(c.turns[3].text, "Two."));
    CHECK(!strcmp(c.turns[4].text, "How many vessels? " CONV_INFORMATIVE_HINT));
    CHECK(!strcmp(c.turns[5].text, tasks[0].informative));
    CHECK(!strcmp(c.turns[6].text, "Is there a fracture? " CONV_PRECISE_HINT));
    CHECK(c.turns[6].role == CONV_ROLE_USER && c.turns[7].role == CONV_ROLE_ASSISTANT);
    conv_free(&c);
    /* blank share: 0 -> none, 1 -> all, 0.3 -> about 30% of 2000 ids, chosen by id */
    int blanks = 0;
    char id[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "seed-%d", i);
        CHECK(!conv_is_blank(42, id, 0.0));
        CHECK(conv_is_blank(42, id, 1.0));
        blanks += conv_is_blank(42, id, 0.3);
    }
    CHECK_MSG(blanks > 500 && blanks < 700, "%d blanks of 2000 at 0.3", blanks);
    o.blank_ratio = 1.0;
    CHECK(conv_build(&c, &o, "seed-1", "An X-ray.", tasks, 1, NULL) == ADAPT_OK);
    CHECK(c.blank_image == 1);
    conv_free(&c);
}

static void test_two_stage(void)
{
    const conv_task task = { "Q?", "A.", NULL };
    conv_options o = opts(CONV_MODE_CAPTION_ONLY);
    conv c;
    CHECK(conv_build(&c, &o, "t1", "Cap.", &task, 1, NULL) == ADAPT_OK);
    CHECK(c.n_turns == 2 && !strcmp(c.turns[1].text, "Cap.") && c.turns[1].loss);
    conv_free(&c);
    o = opts(CONV_MODE_TASKS_ONLY);
    CHECK(conv_build(&c, &o, "t1", "Cap.", &task, 1, NULL) == ADAPT_OK);
    CHECK(c.n_turns == 2 && !strcmp(c.turns[0].text, "Q?") && !c.turns[0].loss && c.turns[1].loss);
    conv_free(&c);
    CHECK(conv_build(&c, &o, "t2", "Cap.", NULL, 0, NULL) == ADAPT_OK);
    CHECK(c.n_turns == 0);   /* left out of stage 2 by the caller */
    conv_free(&c);
}

static void test_refusals(void)
{
    conv_options o = opts(CONV_MODE_SINGLE_STAGE);
    conv c;
    adapt_error e;
    CHECK(conv_build(&c, &o, "empty-1", "", NULL, 0, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "empty-1");
    const conv_task bad = { "Q?", "", NULL };
    CHECK(conv_build(&c, &o, "bad-2", "Cap.", &bad, 1, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "answer");
    o.n_instructions = 0;
    CHECK(conv_build(&c, &o, "p", "Cap.", NULL, 0, &e) == ADAPT_EINVAL);
    o = opts(CONV_MODE_SYNTHESIZER);
    CHECK(conv_build(&c, &o, "s", "Cap.", NULL, 0, &e) == ADAPT_EINVAL);
}

static void test_overlay(void)
{
    Adaptd__Turn t[3];
    Adaptd__Turn *tp[3] = { &t[0], &t[1], &t[2] };
    for (int i = 0; i < 3; i++) adaptd__turn__init(&t[i]);
    t[0].role = ADAPTD__TURN__ROLE__ROLE_USER;      t[0].text = "Q1?";
    t[1].role = ADAPTD__TURN__ROLE__ROLE_ASSISTANT; t[1].text = "A1.";
    t[2].role = ADAPTD__TURN__ROLE__ROLE_USER;      t[2].text = "Q2?";
    Adaptd__Sample s;
    adaptd__sample__init(&s);
    s.id = "ov-1";
    s.turns = tp;
    s.n_turns = 2;
    conv_task *tasks;
    size_t n;
    CHECK(conv_tasks_from_overlay(&s, &tasks, &n, NULL) == ADAPT_OK);
    CHECK(n == 1 && !strcmp(tasks[0].question, "Q1?") && !strcmp(tasks[0].answer, "A1."));
    free(tasks);
    adapt_error e;
    s.n_turns = 3;
    CHECK(conv_tasks_from_overlay(&s, &tasks, &n, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "ov-1");
    t[1].role = ADAPTD__TURN__ROLE__ROLE_USER;
    s.n_turns = 2;
    CHECK(conv_tasks_from_overlay(&s, &tasks, &n, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "turn 1");
    s.n_turns = 0;
    CHECK(conv_tasks_from_overlay(&s, &tasks, &n, &e) == ADAPT_OK && n == 0);
}

int main(void)
{
    test_single_stage();
    test_instruction_spread();
    test_synthesizer();
    test_two_stage();
    test_refusals();
    test_overlay();
    return check_report("conversation");
}
