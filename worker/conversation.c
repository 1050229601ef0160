/* conversation: building the turn list of one sample for each training mode; see
 * conversation.h. Turns are appended to a list sized up front (2 per caption round, 4 per
 * synthesizer task), so building never reallocates. */
#include "conversation.h"

#include "data_order.h"

#include <stdlib.h>
#include <string.h>

size_t conv_pick_instruction(uint64_t seed, const char *id, size_t n_instructions)
{
    data_order_rng r;
    data_order_rng_init(&r, data_order_key(seed, DATA_ORDER_STREAM_INSTRUCT,
                                           data_order_hash_str(id)));
    return (size_t)data_order_rng_below(&r, n_instructions);
}

int conv_caption_last(uint64_t seed, const char *id)
{
    data_order_rng r;
    data_order_rng_init(&r, data_order_key(seed, DATA_ORDER_STREAM_TURN_ORDER,
                                           data_order_hash_str(id)));
    return (int)(data_order_rng_next(&r) >> 63);
}

int conv_is_blank(uint64_t seed, const char *id, double blank_ratio)
{
    data_order_rng r;
    data_order_rng_init(&r, data_order_key(seed, DATA_ORDER_STREAM_BLANK,
                                           data_order_hash_str(id)));
    return data_order_rng_unit(&r) < blank_ratio;
}

void conv_free(conv *c)
{
    for (size_t i = 0; i < c->n_turns; i++) free(c->turns[i].text);
    free(c->turns);
    memset(c, 0, sizeof *c);
}

/* Appends a turn whose text is a + (b ? " " + b : ""); returns ENOMEM on failure. */
static int conv_push(conv *c, conv_role role, int loss, const char *a, const char *b,
                     adapt_error *err)
{
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *text = malloc(la + (b ? lb + 1 : 0) + 1);
    if (!text) return adapt_fail(err, ADAPT_ENOMEM, "conversation: no memory for a turn");
    memcpy(text, a, la);
    if (b) {
        text[la] = ' ';
        memcpy(text + la + 1, b, lb);
        la += lb + 1;
    }
    text[la] = '\0';
    c->turns[c->n_turns++] = (conv_turn){ .role = role, .text = text, .loss = loss };
    return ADAPT_OK;
}

static int conv_push_caption(conv *c, const conv_options *opt, const char *id,
                             const char *caption, int loss, adapt_error *err)
{
    const char *instr = opt->instructions[conv_pick_instruction(opt->seed, id,
                                                                opt->n_instructions)];
    int rc = conv_push(c, CONV_ROLE_USER, 0, instr, NULL, err);
    if (!rc) rc = conv_push(c, CONV_ROLE_ASSISTANT, loss, caption, NULL, err);
    return rc;
}

static int conv_push_tasks(conv *c, const conv_task *tasks, size_t n, adapt_error *err)
{
    int rc = ADAPT_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = conv_push(c, CONV_ROLE_USER, 0, tasks[i].question, NULL, err);
        if (!rc) rc = conv_push(c, CONV_ROLE_ASSISTANT, 1, tasks[i].answer, NULL, err);
    }
    return rc;
}

static int conv_push_synth_tasks(conv *c, const conv_task *tasks, size_t n, adapt_error *err)
{
    int rc = ADAPT_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = conv_push(c, CONV_ROLE_USER, 1, tasks[i].question, CONV_PRECISE_HINT, err);
        if (!rc) rc = conv_push(c, CONV_ROLE_ASSISTANT, 1, tasks[i].answer, NULL, err);
        if (!rc && tasks[i].informative && tasks[i].informative[0]) {
            rc = conv_push(c, CONV_ROLE_USER, 1, tasks[i].question, CONV_INFORMATIVE_HINT, err);
            if (!rc) rc = conv_push(c, CONV_ROLE_ASSISTANT, 1, tasks[i].informative, NULL, err);
        }
    }
    return rc;
}

static int conv_check_input(const conv_options *opt, const char *id, int has_caption,
                            const conv_task *tasks, size_t n_tasks, adapt_error *err)
{
    if (!id || !id[0])
        return adapt_fail(err, ADAPT_EINVAL, "conversation: sample without an id");
    if (opt->n_instructions == 0 || !opt->instructions)
        return adapt_fail(err, ADAPT_EINVAL,
                          "conversation: sample %s: the caption-instruction pool is empty", id);
    for (size_t i = 0; i < opt->n_instructions; i++)
        if (!opt->instructions[i] || !opt->instructions[i][0])
            return adapt_fail(err, ADAPT_EINVAL,
                              "conversation: caption instruction %zu of the pool is empty", i);
    for (size_t i = 0; i < n_tasks; i++)
        if (!tasks[i].question || !tasks[i].question[0] || !tasks[i].answer ||
            !tasks[i].answer[0])
            return adapt_fail(err, ADAPT_EINVAL,
                              "conversation: sample %s: task %zu has an empty %s", id, i,
                              !tasks[i].question || !tasks[i].question[0] ? "question"
                                                                          : "answer");
    int needs_caption = opt->mode == CONV_MODE_SYNTHESIZER || opt->mode == CONV_MODE_CAPTION_ONLY
                        || (opt->mode == CONV_MODE_SINGLE_STAGE && n_tasks == 0);
    if (needs_caption && !has_caption)
        return adapt_fail(err, ADAPT_EINVAL,
                          "conversation: sample %s has no caption%s", id,
                          opt->mode == CONV_MODE_SINGLE_STAGE ? " and no kept task" : "");
    if (opt->mode == CONV_MODE_SYNTHESIZER && n_tasks == 0)
        return adapt_fail(err, ADAPT_EINVAL,
                          "conversation: sample %s has no task to train the synthesizer on", id);
    return ADAPT_OK;
}

int conv_build(conv *out, const conv_options *opt, const char *id, const char *caption,
               const conv_task *tasks, size_t n_tasks, adapt_error *err)
{
    memset(out, 0, sizeof *out);
    int has_caption = caption && caption[0];
    int rc = conv_check_input(opt, id, has_caption, tasks, n_tasks, err);
    if (rc) return rc;
    out->turns = calloc(2 + 4 * n_tasks, sizeof *out->turns);
    if (!out->turns) return adapt_fail(err, ADAPT_ENOMEM, "conversation: no memory");
    switch (opt->mode) {
    case CONV_MODE_SINGLE_STAGE: {
        int last = n_tasks > 0 && conv_caption_last(opt->seed, id);
        if (has_caption && !last) rc = conv_push_caption(out, opt, id, caption, 1, err);
        if (!rc) rc = conv_push_tasks(out, tasks, n_tasks, err);
        if (!rc && has_caption && last) rc = conv_push_caption(out, opt, id, caption, 1, err);
        break;
    }
    case CONV_MODE_SYNTHESIZER:
        out->blank_image = conv_is_blank(opt->seed, id, opt->blank_ratio);
        rc = conv_push_caption(out, opt, id, caption, 0, err);
        if (!rc) rc = conv_push_synth_tasks(out, tasks, n_tasks, err);
        break;
    case CONV_MODE_CAPTION_ONLY:
        rc = conv_push_caption(out, opt, id, caption, 1, err);
        break;
    case CONV_MODE_TASKS_ONLY:
        rc = conv_push_tasks(out, tasks, n_tasks, err);
        break;
    default:
        rc = adapt_fail(err, ADAPT_EINVAL, "conversation: unknown mode %d", (int)opt->mode);
    }
    if (rc) conv_free(out);
    return rc;
}

int conv_tasks_from_overlay(const Adaptd__Sample *overlay, conv_task **tasks, size_t *n,
                            adapt_error *err)
{
    *tasks = NULL;
    *n = 0;
    size_t nt = overlay->n_turns;
    if (nt == 0) return ADAPT_OK;
    if (nt % 2)
        return adapt_fail(err, ADAPT_EINVAL,
                          "overlay record %s: %zu turns, expected (user, assistant) pairs",
                          overlay->id, nt);
    for (size_t i = 0; i < nt; i++) {
        Adaptd__Turn__Role want = i % 2 ? ADAPTD__TURN__ROLE__ROLE_ASSISTANT
                                        : ADAPTD__TURN__ROLE__ROLE_USER;
        if (overlay->turns[i]->role != want)
            return adapt_fail(err, ADAPT_EINVAL,
                              "overlay record %s: turn %zu should be the %s turn", overlay->id, i,
                              i % 2 ? "assistant" : "user");
    }
    conv_task *t = calloc(nt / 2, sizeof *t);
    if (!t) return adapt_fail(err, ADAPT_ENOMEM, "overlay record %s: no memory", overlay->id);
    for (size_t i = 0; i < nt / 2; i++) {
        t[i].question = overlay->turns[2 * i]->text;
        t[i].answer = overlay->turns[2 * i + 1]->text;
    }
    *tasks = t;
    *n = nt / 2;
    return ADAPT_OK;
}
