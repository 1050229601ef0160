/* test_synth: the synthesizer prompt and the output parser (worker/synth.c) on hand-written
 * outputs for the LLaVA-v1.6-Llama3 and Qwen2-VL templates: complete, truncated, no match,
 * several pairs, hints in either order, repeated questions, malformed rounds, stop string. */
#include "check.h"
#include "job_kinds.h"
#include "synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Llama-3 markup pieces, as the synthesizer writes them after the prompt. */
#define L_USER "<|start_header_id|>user<|end_header_id|>\n\n"
#define L_SEP  "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
#define L_EOT  "<|eot_id|>"
#define P_HINT "Answer with a precise response.\n"
#define I_HINT "Answer with an informative response.\n"

/* Qwen2-VL markup pieces. */
#define Q_USER "<|im_start|>user\n"
#define Q_SEP  "<|im_end|>\n<|im_start|>assistant\n"
#define Q_EOT  "<|im_end|>"

static const synth_template *llama(void) { return synth_template_find("llava_next"); }

static void test_prompt(void)
{
    const synth_template *t = llama();
    CHECK(t != NULL);
    CHECK(synth_template_find("llava") == t);
    CHECK(synth_template_find("qwen2_vl") != NULL);
    CHECK(synth_template_find("mllama") == NULL);
    char *p = NULL;
    CHECK(synth_prompt_build(t, "A chest X-ray.", &p, NULL) == ADAPT_OK);
    /* the prompt, byte for byte */
    const char *want =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful language "
        "and vision assistant. You are able to understand the visual content that the user "
        "provides, and assist the user with a variety of tasks using natural language.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nDescribe the image.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA chest X-ray.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n";
    CHECK_MSG(p && !strcmp(p, want), "%s", p ? p : "(null)");
    free(p);
    adapt_error err = {0};
    CHECK(synth_prompt_build(t, "", &p, &err) == ADAPT_EINVAL && p == NULL);
    CHECK_STR_CONTAINS(err.message, "empty caption");

    const synth_template *q = synth_template_find("qwen2_vl");
    CHECK(synth_prompt_build(q, "Cells.", &p, NULL) == ADAPT_OK);
    CHECK_MSG(!strcmp(p, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                         "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the "
                         "image.<|im_end|>\n<|im_start|>assistant\nCells.<|im_end|>\n"
                         "<|im_start|>user\n"), "%s", p);
    /* exactly one image placeholder: gen expands each one into an image */
    const char *pad = strstr(p, "<|image_pad|>");
    CHECK(pad && strstr(pad + 1, "<|image_pad|>") == NULL);
    free(p);
}

static void test_complete(void)
{
    const char *out = P_HINT "What organ is shown?" L_SEP "Liver" L_EOT
                      L_USER I_HINT "What organ is shown?" L_SEP
                      "The image shows a large lobed organ under the diaphragm: the liver." L_EOT;
    synth_result r;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2);
    CHECK(!strcmp(r.pairs[0].question, P_HINT "What organ is shown?"));
    CHECK(!strcmp(r.pairs[0].answer, "Liver"));
    CHECK(r.has_triplet);
    CHECK(!strcmp(r.instruction, "What organ is shown?"));
    CHECK(!strcmp(r.precise, "Liver"));
    CHECK(!strcmp(r.informative,
                  "The image shows a large lobed organ under the diaphragm: the liver."));
    synth_result_free(&r);
    CHECK(r.pairs == NULL && r.instruction == NULL);
}

static void test_either_order(void)
{
    /* informative first, then precise: the same triplet */
    const char *out = I_HINT "How many cells divide?" L_SEP "Two cells are in mitosis." L_EOT
                      L_USER P_HINT "How many cells divide?" L_SEP "2" L_EOT;
    synth_result r;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.has_triplet && !strcmp(r.precise, "2") &&
          !strcmp(r.informative, "Two cells are in mitosis.") &&
          !strcmp(r.instruction, "How many cells divide?"));
    synth_result_free(&r);
}

static void test_truncated(void)
{
    /* the last answer was cut by the token limit: that round is dropped, so no triplet */
    const char *out = P_HINT "Q?" L_SEP "A" L_EOT L_USER I_HINT "Q?" L_SEP "It is A because";
    synth_result r;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 1 && !r.has_triplet);
    synth_result_free(&r);
    /* cut in the middle of the question */
    out = P_HINT "Q?" L_SEP "A" L_EOT L_USER I_HINT "Q?" L_SEP "Because A." L_EOT L_USER "Wh";
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2 && r.has_triplet && !strcmp(r.informative, "Because A."));
    synth_result_free(&r);
    /* a stop string left at the end is removed before the completeness test */
    out = P_HINT "Q?" L_SEP "A" L_EOT L_USER I_HINT "Q?" L_SEP "Because A." L_EOT "<|end_of_text|>";
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2 && r.has_triplet);
    synth_result_free(&r);
}

static void test_no_match(void)
{
    synth_result r;
    /* gibberish, as a random model writes it */
    CHECK(synth_parse(llama(), "qz<|image_pad|> lorem ipsum 123", &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 0 && !r.has_triplet && r.pairs == NULL);
    synth_result_free(&r);
    CHECK(synth_parse(llama(), "", &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 0 && !r.has_triplet);
    synth_result_free(&r);
    /* pairs without hints, or with two different questions: no triplet */
    const char *out = "What is it?" L_SEP "A cat." L_EOT L_USER P_HINT "Colour?" L_SEP "Black"
                      L_EOT L_USER I_HINT "Size?" L_SEP "It is a small cat." L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 3 && !r.has_triplet);
    synth_result_free(&r);
    /* the same style twice is not a triplet */
    out = P_HINT "Q?" L_SEP "A" L_EOT L_USER P_HINT "Q?" L_SEP "B" L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2 && !r.has_triplet);
    synth_result_free(&r);
    /* a hint without its newline is not the hint */
    out = "Answer with a precise response. Q?" L_SEP "A" L_EOT L_USER I_HINT "Q?" L_SEP "B" L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(!r.has_triplet);
    synth_result_free(&r);
}

static void test_several_pairs(void)
{
    /* several questions; the first one with both answers wins (the second pair completes Q2
     * before Q1 completes) and a later informative answer to Q1 changes nothing */
    const char *out = P_HINT "Q1?" L_SEP "a1" L_EOT
                      L_USER P_HINT "Q2?" L_SEP "a2" L_EOT
                      L_USER I_HINT "Q2?" L_SEP "long a2" L_EOT
                      L_USER I_HINT "Q1?" L_SEP "long a1" L_EOT;
    synth_result r;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 4);
    CHECK(r.has_triplet && !strcmp(r.instruction, "Q2?") && !strcmp(r.precise, "a2") &&
          !strcmp(r.informative, "long a2"));
    synth_result_free(&r);
    /* a repeated precise answer replaces the earlier one before the match (dict assignment) */
    out = P_HINT "Q?" L_SEP "old" L_EOT L_USER P_HINT "Q?" L_SEP "new" L_EOT
          L_USER I_HINT "Q?" L_SEP "why" L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.has_triplet && !strcmp(r.precise, "new"));
    synth_result_free(&r);
}

static void test_malformed_rounds(void)
{
    synth_result r;
    /* whitespace is trimmed; an empty answer or question drops the round */
    const char *out = "  " P_HINT "Q?  " L_SEP "  A \n" L_EOT L_USER I_HINT "Q?" L_SEP "  " L_EOT
                      L_USER L_SEP "orphan" L_EOT L_USER I_HINT "Q?" L_SEP " B " L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2);
    CHECK(!strcmp(r.pairs[0].question, P_HINT "Q?") && !strcmp(r.pairs[0].answer, "A"));
    CHECK(r.has_triplet && !strcmp(r.informative, "B"));
    synth_result_free(&r);
    /* a round with two separators, or without one, is dropped */
    out = P_HINT "Q?" L_SEP "A" L_SEP "A2" L_EOT L_USER I_HINT "Q?" "no separator" L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 0);
    synth_result_free(&r);
    /* a middle round whose answer lacks the end-of-turn marker is dropped, not cut */
    out = P_HINT "Q?" L_SEP "Answer text" L_USER I_HINT "Q?" L_SEP "B" L_EOT;
    CHECK(synth_parse(llama(), out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 1 && !r.has_triplet);
    synth_result_free(&r);
}

static void test_qwen(void)
{
    const synth_template *q = synth_template_find("qwen2_vl");
    const char *out = P_HINT "What stain is used?" Q_SEP "H&E" Q_EOT "\n"
                      Q_USER I_HINT "What stain is used?" Q_SEP
                      "Pink cytoplasm and blue nuclei indicate H&E." Q_EOT;
    synth_result r;
    CHECK(synth_parse(q, out, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2 && r.has_triplet);
    CHECK(!strcmp(r.precise, "H&E") && !strcmp(r.instruction, "What stain is used?"));
    synth_result_free(&r);
    /* ending with the turn gap or the stop string still counts as complete */
    char buf[512];
    snprintf(buf, sizeof buf, "%s\n<|endoftext|>", out);
    CHECK(synth_parse(q, buf, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2 && r.has_triplet);
    synth_result_free(&r);
    /* truncated */
    snprintf(buf, sizeof buf, "%s\n" Q_USER P_HINT "Next?" Q_SEP "par", out);
    CHECK(synth_parse(q, buf, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 2 && r.has_triplet);
    synth_result_free(&r);
    /* Llama markup is gibberish to the Qwen template */
    CHECK(synth_parse(q, P_HINT "Q?" L_SEP "A" L_EOT, &r, NULL) == ADAPT_OK);
    CHECK(r.n_pairs == 0);
    synth_result_free(&r);
}

/* The overlay record the synthesize job writes for a base record. */
static void test_record(void)
{
    Adaptd__Sample base = ADAPTD__SAMPLE__INIT;
    uint8_t img[4] = { 0xff, 0xd8, 0xff, 0xd9 };
    base.id = "rec-7";
    base.caption = "A cell.";
    base.image.data = img;
    base.image.len = sizeof img;
    const char *out = P_HINT "Q?" L_SEP "A" L_EOT L_USER I_HINT "Q?" L_SEP "Because A." L_EOT;
    Adaptd__Sample *o = NULL;
    uint64_t triplets = 0;
    CHECK(job_synth_record(llama(), &base, out, &o, &triplets, NULL) == ADAPT_OK);
    CHECK(o && !strcmp(o->id, "rec-7") && o->image.len == 0 && o->n_turns == 0);
    CHECK(o->source && !strcmp(o->source->format, "synthesize"));
    CHECK(!strcmp(job_sample_extra_get(o, "instruction"), "Q?"));
    CHECK(!strcmp(job_sample_extra_get(o, "precise"), "A"));
    CHECK(!strcmp(job_sample_extra_get(o, "informative"), "Because A."));
    CHECK(!strcmp(job_sample_extra_get(o, "raw"), out));
    CHECK(!strcmp(job_sample_extra_get(o, "pairs"), "2"));
    CHECK(triplets == 1);
    job_sample_free(o);
    /* gibberish: the raw output is kept, no triplet */
    CHECK(job_synth_record(llama(), &base, "zz", &o, &triplets, NULL) == ADAPT_OK);
    CHECK(!strcmp(job_sample_extra_get(o, "pairs"), "0") && !job_sample_extra_get(o, "instruction"));
    CHECK(triplets == 1);
    job_sample_free(o);
    /* not prompted */
    CHECK(job_synth_record(llama(), &base, NULL, &o, &triplets, NULL) == ADAPT_OK);
    CHECK(!strcmp(job_sample_extra_get(o, "skipped"), "no_caption") && !job_sample_extra_get(o, "raw"));
    job_sample_free(o);
    base.image.len = 0;
    CHECK(job_synth_record(llama(), &base, NULL, &o, &triplets, NULL) == ADAPT_OK);
    CHECK(!strcmp(job_sample_extra_get(o, "skipped"), "no_image"));
    job_sample_free(o);
}

/* The spec reader of the job kinds (worker/job_kinds.c). */
static void test_spec(void)
{
    Adaptd__JobSpec *job = NULL;
    adapt_error err = {0};
    const char *bare = "{\"model_path\": \"m\", \"corpus\": \"c\", \"output_dir\": \"o\", "
                       "\"seed\": \"18446744073709551615\", \"family\": null}";
    CHECK_MSG(job_kinds_parse(bare, strlen(bare), "s.json", "synthesize", &job, &err) == 0, "%s",
              err.message);
    if (job) {
        CHECK(!strcmp(job->kind, "synthesize") && job->synthesize);
        CHECK(job->synthesize->seed == UINT64_MAX);
        CHECK(job->synthesize->max_new_tokens == 512 && job->synthesize->batch_size == 16);
        CHECK(job->synthesize->top_p == 1.0f && job->synthesize->temperature == 0.0f);
        adaptd__job_spec__free_unpacked(job, NULL);
    }
    const char *daemon = "{\"name\": \"x\", \"kind\": \"evaluate\", \"ranks\": 2, \"train\": null, "
                         "\"evaluate\": {\"model_path\": \"m\", \"benchmark\": \"b.jsonl\", "
                         "\"output_dir\": \"o\", \"seed\": 7}}";
    CHECK(job_kinds_parse(daemon, strlen(daemon), "spec.json", "evaluate", &job, &err) == 0);
    if (job) {
        CHECK(job->ranks == 2 && job->evaluate->seed == 7 && job->evaluate->max_new_tokens == 256);
        adaptd__job_spec__free_unpacked(job, NULL);
    }
    struct { const char *json, *kind, *msg; } bad[] = {
        { "{\"model_path\": \"m\", \"corpus\": \"c\"}", "synthesize", "synthesize.output_dir: required" },
        { "{\"corpus\": \"c\", \"x\": 1}", "filter", "filter.x: unknown key" },
        { "{\"seed\": \"-1\"}", "evaluate", "evaluate.seed: expected a non-negative integer" },
        { "{\"max_new_tokens\": 1.5}", "evaluate", "evaluate.max_new_tokens: expected" },
        { "{\"kind\": \"filter\"}", "synthesize", "but this is adapt-worker synthesize" },
        { "{\"cot_templates\": [\"{precise}\"], \"model_path\": \"m\", \"corpus\": \"c\", "
          "\"synthesized\": \"s\", \"output_dir\": \"o\"}", "filter", "filter.cot_templates[0]" },
        { "[1]", "filter", "not a JSON object" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        job = NULL;
        CHECK_MSG(job_kinds_parse(bad[i].json, strlen(bad[i].json), "s.json", bad[i].kind, &job,
                                  &err) == ADAPT_EINVAL, "accepted %s", bad[i].json);
        CHECK_STR_CONTAINS(err.message, bad[i].msg);
        CHECK(job == NULL);
    }
}

int main(void)
{
    test_spec();
    test_record();
    test_prompt();
    test_complete();
    test_either_order();
    test_truncated();
    test_no_match();
    test_several_pairs();
    test_malformed_rounds();
    test_qwen();
    return check_report("test_synth");
}
