/* test_train_spec: adapt-worker's spec reader (worker/train_spec.c): defaults, every kind of
 * refusal as "FILE: MEMBER: reason" with the member named as adaptd names it, two_stage stages
 * with inheritance, 64-bit seeds, and loading from a file with and without the envelope. (The
 * rules themselves, and the worker against adaptd, are test_train_rules'.) */
#include "check.h"
#include "train_spec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BASE "\"model_path\": \"/m\", \"corpus\": \"/c\", \"output_dir\": \"/o\""

static Adaptd__TrainSpec *parse_ok(const char *json)
{
    Adaptd__TrainSpec *t = NULL;
    adapt_error e = { 0 };
    int rc = train_spec_parse(json, strlen(json), "t.json", &t, &e);
    CHECK_MSG(rc == ADAPT_OK, "%s -> %s", json, e.message);
    return t;
}

/* The spec is refused and the message holds each of the needles. */
static void refused(const char *json, const char *needle1, const char *needle2)
{
    Adaptd__TrainSpec *t = NULL;
    adapt_error e = { 0 };
    int rc = train_spec_parse(json, strlen(json), "t.json", &t, &e);
    CHECK_MSG(rc == ADAPT_EINVAL, "accepted: %s", json);
    CHECK(t == NULL);
    if (needle1) CHECK_STR_CONTAINS(e.message, needle1);
    if (needle2) CHECK_STR_CONTAINS(e.message, needle2);
    train_spec_free(t);
}

static void test_defaults(void)
{
    Adaptd__TrainSpec *t = parse_ok("{" BASE "}");
    if (!t) return;
    CHECK(!strcmp(t->model_path, "/m") && !strcmp(t->corpus, "/c") && !strcmp(t->output_dir, "/o"));
    CHECK(!strcmp(t->mode, "single_stage") && !strcmp(t->schedule, "cosine"));
    CHECK(t->epochs == 3 && t->max_steps == 0 && t->global_batch == 16);
    CHECK(t->micro_batch_tokens == 4096 && t->max_seq_len == 2048);
    CHECK(t->lr_llm == 1e-5f && t->lr_vision == 1e-5f);
    CHECK(t->weight_decay == 0.0f && t->warmup_ratio == 0.1f && t->max_grad_norm == 1.0f);
    CHECK(t->seed == 42 && t->freeze_vision && t->freeze_merger);
    CHECK(t->checkpoint_every == 500 && t->keep_last == 0);
    CHECK(t->image_min_pixels == 1024 && t->image_max_pixels == 589824);
    CHECK(t->n_caption_instructions == train_spec_n_default_instructions);
    CHECK(t->n_overlays == 0 && t->n_stages == 0 && t->pack_window == 1024);
    CHECK(t->adam_beta1 == 0.9f && t->adam_beta2 == 0.999f && t->adam_epsilon == 1e-8f);
    train_spec_free(t);
}

static void test_values(void)
{
    Adaptd__TrainSpec *t = parse_ok("{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"synthesizer\","
        "\"lr_llm\": 2e-5, \"epochs\": 1, \"max_steps\": 100, \"global_batch\": 128,"
        "\"seed\": \"18446744073709551615\", \"freeze_vision\": false,"
        "\"caption_instructions\": [\"Describe.\", \"Caption.\"], \"blank_image_ratio\": 0.1,"
        "\"keep_last\": 2, \"schedule\": \"linear\"}");
    if (!t) return;
    CHECK(t->n_overlays == 1 && !strcmp(t->overlays[0], "/ov"));
    CHECK(t->lr_llm == 2e-5f && t->lr_vision == 2e-5f);   /* lr_vision follows lr_llm */
    CHECK(t->seed == UINT64_MAX && !t->freeze_vision && t->global_batch == 128);
    CHECK(t->n_caption_instructions == 2 && !strcmp(t->caption_instructions[1], "Caption."));
    CHECK(fabsf(t->blank_image_ratio - 0.1f) < 1e-7f && t->keep_last == 2);
    train_spec_free(t);
}

/* proto3 JSON: null is the default, an empty stages array is none */
static void test_nulls(void)
{
    Adaptd__TrainSpec *t = parse_ok("{" BASE ", \"epochs\": null, \"lr_vision\": null,"
                                    "\"lr_llm\": 3e-5, \"stages\": [], \"overlays\": null}");
    if (!t) return;
    CHECK(t->epochs == 3 && t->lr_vision == 3e-5f && t->n_stages == 0 && t->n_overlays == 0);
    train_spec_free(t);
    refused("{\"model_path\": null, \"corpus\": \"/c\", \"output_dir\": \"/o\"}",
            "model_path", "required");
    refused("{" BASE ", \"epochs\": null, \"epochs\": 2}", "epochs", "given twice");
}

static void test_refusals(void)
{
    refused("{" BASE ", \"learning_rate\": 1e-5}", "t.json: learning_rate: unknown field", NULL);
    refused("{" BASE ", \"lr_llm\": 5}", "t.json: lr_llm: 5 is outside (0, 1]", NULL);
    refused("{" BASE ", \"lr_llm\": 0}", "lr_llm: 0 is outside (0, 1]", NULL);
    refused("{" BASE ", \"epochs\": 1.5}", "epochs: expected a non-negative 32-bit integer", NULL);
    refused("{" BASE ", \"global_batch\": 0}", "global_batch: 0 is outside [1, 1048576]", NULL);
    refused("{" BASE ", \"global_batch\": \"8\"}", "global_batch", "32-bit integer");
    refused("{" BASE ", \"mode\": \"three_stage\"}", "mode", "single_stage | two_stage");
    refused("{" BASE ", \"schedule\": \"step\"}", "schedule", "cosine");
    refused("{" BASE ", \"freeze_vision\": 1}", "freeze_vision", "true or false");
    refused("{" BASE ", \"seed\": -1}", "seed", "non-negative");
    refused("{" BASE ", \"seed\": \"12x\"}", "seed", "decimal");
    refused("{" BASE ", \"epochs\": 0}", "epochs", "max_steps");
    refused("{" BASE ", \"max_seq_len\": 8192}", "micro_batch_tokens", "max_seq_len");
    refused("{" BASE ", \"image_min_pixels\": 1000000}", "image_min_pixels", "image_max_pixels");
    refused("{" BASE ", \"blank_image_ratio\": 0.2}", "blank_image_ratio", "synthesizer");
    refused("{" BASE ", \"blank_image_ratio\": 1.5, \"mode\": \"synthesizer\"}",
            "blank_image_ratio: 1.5 is outside [0, 1]", NULL);
    refused("{" BASE ", \"adam_beta2\": 1}", "adam_beta2", ")");
    refused("{" BASE ", \"caption_instructions\": []}", "caption_instructions", "entries");
    refused("{" BASE ", \"caption_instructions\": [\"a\", \"\"]}",
            "caption_instructions[1]: must not be empty", NULL);
    refused("{" BASE ", \"overlays\": \"/ov\"}", "overlays", "array");
    refused("{\"model_path\": \"/m\", \"corpus\": \"/c\"}", "output_dir: required", NULL);
    refused("{" BASE ", \"model_path\": \"/x\"}", "model_path", "given twice");
    refused("{" BASE "} {}", "t.json", "after the JSON value");
    refused("{" BASE ", \"epochs\": 1e400}", "epochs", "32-bit integer");
    refused("{" BASE ", \"pack_window\": 0}", "t.json: pack_window: 0 is outside [1, 1048576]", NULL);
    refused("{\"model_path\": \"\", \"corpus\": \"/c\", \"output_dir\": \"/o\"}", "model_path",
            "empty");
    refused("{" BASE ", \"stages\": [{}, {}]}", "stages", "two_stage");
    refused("[1, 2]", "t.json", "object");
    refused("{" BASE ",", "t.json", "JSON");
}

static void test_two_stage(void)
{
    Adaptd__TrainSpec *t = parse_ok("{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"two_stage\","
        "\"lr_llm\": 1e-5, \"max_steps\": 50, \"stages\": ["
        "{\"epochs\": 1, \"lr_llm\": 2e-5, \"schedule\": \"constant\"}, {\"warmup_ratio\": 0}]}");
    if (!t) return;
    CHECK(t->n_stages == 2);
    if (t->n_stages == 2) {
        CHECK(t->stages[0]->epochs == 1 && t->stages[0]->max_steps == 0);
        CHECK(t->stages[0]->lr_llm == 2e-5f && t->stages[0]->lr_vision == 1e-5f);
        CHECK(!strcmp(t->stages[0]->schedule, "constant"));
        CHECK(t->stages[1]->epochs == 3 && t->stages[1]->max_steps == 50);   /* inherited */
        CHECK(t->stages[1]->warmup_ratio == 0.0f && !strcmp(t->stages[1]->schedule, "cosine"));
    }
    train_spec_free(t);
    refused("{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"two_stage\"}", "stages", "2 stage");
    refused("{" BASE ", \"mode\": \"two_stage\", \"stages\": [{}, {}]}", "overlays", NULL);
    refused("{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"two_stage\", \"stages\": [{}]}",
            "stages", "exactly 2");
    refused("{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"two_stage\", \"stages\": "
            "[{}, {\"lr_llm\": 3}]}", "stages[1].lr_llm: 3 is outside (0, 1]", NULL);
    refused("{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"two_stage\", \"stages\": "
            "[{\"epoch\": 1}, {}]}", "stages[0].epoch: unknown field", NULL);
}

static void test_job(void)
{
    const char *ok = "{\"name\": \"j\", \"kind\": \"train\", \"ranks\": 2, \"train\": {" BASE "}}";
    Adaptd__JobSpec *j = NULL;
    adapt_error e = { 0 };
    CHECK_MSG(train_spec_parse_job(ok, strlen(ok), "job.json", &j, &e) == ADAPT_OK, "%s", e.message);
    if (j) {
        CHECK(j->ranks == 2 && !strcmp(j->backend, "cpu") && !strcmp(j->launcher, "local"));
        CHECK(j->max_restarts == 0 && j->train && !strcmp(j->train->corpus, "/c"));
    }
    train_spec_free_job(j);
    const char *bad = "{\"kind\": \"train\", \"train\": {" BASE ", \"epochs\": -1}}";
    CHECK(train_spec_parse_job(bad, strlen(bad), "job.json", &j, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "job.json: train.epochs: expected");
    const char *bad2 = "{\"kind\": \"train\", \"ranks\": 0, \"train\": {" BASE "}}";
    CHECK(train_spec_parse_job(bad2, strlen(bad2), "job.json", &j, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "job.json: ranks: 0 is outside [1, 65536]");
    const char *bad3 = "{\"kind\": \"evaluate\", \"train\": {" BASE "}}";
    CHECK(train_spec_parse_job(bad3, strlen(bad3), "job.json", &j, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "kind");
    const char *bad4 = "{\"kind\": \"train\"}";
    CHECK(train_spec_parse_job(bad4, strlen(bad4), "job.json", &j, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "train");
    /* another kind's sub-spec: null is "not given" (as adaptd reads it), anything else refused */
    const char *nul = "{\"kind\": \"train\", \"synthesize\": null, \"train\": {" BASE "}}";
    CHECK_MSG(train_spec_parse_job(nul, strlen(nul), "job.json", &j, &e) == ADAPT_OK, "%s", e.message);
    train_spec_free_job(j);
    const char *other = "{\"kind\": \"train\", \"filter\": {}, \"train\": {" BASE "}}";
    CHECK(train_spec_parse_job(other, strlen(other), "job.json", &j, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "job.json: filter: only for kind \"filter\"");
    const char *longname = "{\"kind\": \"train\", \"name\": \""
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", \"train\": {" BASE "}}";
    CHECK(train_spec_parse_job(longname, strlen(longname), "job.json", &j, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "name: longer than 127 bytes");
}

/* Every truncation and many byte changes of a valid spec: never a crash, and either a spec or
 * EINVAL with a message (the parser's own fuzz pass; run it under ASan in build-*-asan). */
static void test_mangled(void)
{
    const char *good = "{" BASE ", \"overlays\": [\"/ov\"], \"mode\": \"two_stage\", "
                       "\"stages\": [{\"epochs\": 1}, {\"lr_llm\": 2e-5}], \"seed\": \"7\"}";
    size_t len = strlen(good);
    char *buf = malloc(len + 1);
    unsigned x = 12345;
    for (size_t cut = 0; cut <= len + 3 * len; cut++) {
        memcpy(buf, good, len + 1);
        size_t n = len;
        if (cut < len) {
            n = cut;
        } else {
            x = x * 1103515245u + 12345u;
            buf[(x >> 8) % len] = "{}[]\",:0-e.nulltrx \\"[(x >> 20) % 20];
        }
        Adaptd__TrainSpec *t = NULL;
        adapt_error e = { 0 };
        int rc = train_spec_parse(buf, n, "m.json", &t, &e);
        CHECK(rc == ADAPT_OK || (rc == ADAPT_EINVAL && e.message[0] && t == NULL));
        train_spec_free(t);
    }
    free(buf);
}

static void test_load(void)
{
    char path[] = "/tmp/adapt_train_spec_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *job = "{\"kind\": \"train\", \"train\": {" BASE ", \"seed\": 7}}";
    CHECK(write(fd, job, strlen(job)) == (ssize_t)strlen(job));
    close(fd);
    Adaptd__JobSpec *j = NULL;
    Adaptd__TrainSpec *t = NULL;
    adapt_error e;
    CHECK(train_spec_load(path, &j, &t, &e) == ADAPT_OK);
    CHECK(j && t && t == j->train && t->seed == 7);
    train_spec_free_job(j);
    FILE *f = fopen(path, "w");
    fputs("{" BASE ", \"seed\": 9}", f);
    fclose(f);
    CHECK(train_spec_load(path, &j, &t, &e) == ADAPT_OK);
    CHECK(!j && t && t->seed == 9);
    train_spec_free(t);
    unlink(path);
    CHECK(train_spec_load(path, &j, &t, &e) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(e.message, path);
}

int main(void)
{
    test_defaults();
    test_values();
    test_nulls();
    test_refusals();
    test_two_stage();
    test_job();
    test_mangled();
    test_load();
    return check_report("train_spec");
}
