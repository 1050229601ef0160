/* test_train_rules: the one set of TrainSpec rules (proto/train_rules.c) and its two users.
 *
 * - the table covers every TrainSpec, StageSchedule and JobSpec field of job.proto;
 * - train_rules_fill on its own: every default, a 0 or false given kept as given, each kind of
 *   refusal naming the member;
 * - round trip: a spec adaptd's parser accepts (daemon/job_spec.c), written as its normalized
 *   JSON, is accepted by adapt-worker's reader (worker/train_spec.c) with every field of the
 *   message identical; the normalized JSON names every TrainSpec member (the effective values);
 *   and the worker reading the client's own text gets the same values too;
 * - the same refusals: for each bad spec both refuse, and the worker's message is the daemon's
 *   ("train.pack_window: 0 is outside [1, 1048576]") after the file name. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "job_spec.h"
#include "train_rules.h"
#include "train_spec.h"

static char root[PATH_MAX];   /* the --data-root, canonical */

static void test_table(void)
{
    adapt_error err = {0};
    CHECK_MSG(train_rules_check_table(&err) == ADAPT_OK, "%s", err.message);
    CHECK(train_rules_index("pack_window") >= 0 && train_rules_index("learning_rate") < 0);
    CHECK(train_rules_stage_index("schedule") >= 0 && train_rules_stage_index("mode") < 0);
    CHECK(train_rules_job_index("max_restarts") >= 0);
    uint64_t m = 0;
    CHECK(train_rules_mark(&m, TRAIN_RULES_TRAIN, "seed") == 0 && m != 0);
    CHECK(train_rules_mark(&m, TRAIN_RULES_TRAIN, "nope") == -1);
}

/* A TrainSpec with the required paths set, as a reader leaves it. */
static Adaptd__TrainSpec *bare(void)
{
    Adaptd__TrainSpec *t = malloc(sizeof *t);
    adaptd__train_spec__init(t);
    t->model_path = strdup("/m");
    t->corpus = strdup("/c");
    t->output_dir = strdup("/o");
    return t;
}

static void mark(train_rules_given *g, const char *name)
{
    CHECK(train_rules_mark(&g->top, TRAIN_RULES_TRAIN, name) == 0);
}

static void test_fill_defaults(void)
{
    Adaptd__TrainSpec *t = bare();
    train_rules_given g = {0};
    mark(&g, "model_path"); mark(&g, "corpus"); mark(&g, "output_dir");
    char field[TRAIN_RULES_FIELD_MAX];
    adapt_error err = {0};
    CHECK_MSG(train_rules_fill(t, &g, field, &err) == ADAPT_OK, "%s: %s", field, err.message);
    CHECK(!strcmp(t->mode, "single_stage") && !strcmp(t->schedule, "cosine"));
    CHECK(t->epochs == 3 && t->max_steps == 0 && t->global_batch == 16);
    CHECK(t->micro_batch_tokens == 4096 && t->max_seq_len == 2048 && t->pack_window == 1024);
    CHECK(t->lr_llm == 1e-5f && t->lr_vision == 1e-5f && t->weight_decay == 0);
    CHECK(t->warmup_ratio == 0.1f && t->max_grad_norm == 1.0f && t->seed == 42);
    CHECK(t->freeze_vision && t->freeze_merger && t->checkpoint_every == 500 && t->keep_last == 0);
    CHECK(t->image_min_pixels == 1024 && t->image_max_pixels == 589824);
    CHECK(t->adam_beta1 == 0.9f && t->adam_beta2 == 0.999f && t->adam_epsilon == 1e-8f);
    CHECK(t->n_caption_instructions == TRAIN_RULES_N_DEFAULT_INSTRUCTIONS &&
          !strcmp(t->caption_instructions[0], train_rules_default_instructions[0]));
    adaptd__train_spec__free_unpacked(t, NULL);

    /* given zeros are values, not "the default" */
    t = bare();
    t->freeze_vision = 0;
    t->max_steps = 10;
    t->lr_llm = 2e-5f;
    mark(&g, "freeze_vision"); mark(&g, "epochs"); mark(&g, "max_steps"); mark(&g, "lr_llm");
    CHECK_MSG(train_rules_fill(t, &g, field, &err) == ADAPT_OK, "%s: %s", field, err.message);
    CHECK(!t->freeze_vision && t->freeze_merger && t->epochs == 0 && t->max_steps == 10);
    CHECK(t->lr_vision == 2e-5f);   /* lr_vision follows lr_llm when left out */
    adaptd__train_spec__free_unpacked(t, NULL);
}

/* train_rules_fill on a spec with one member given (set by setter) refuses naming want_field
 * with want_reason. */
static void fill_refuses(void (*setter)(Adaptd__TrainSpec *, train_rules_given *),
                         const char *want_field, const char *want_reason)
{
    Adaptd__TrainSpec *t = bare();
    train_rules_given g = {0};
    setter(t, &g);
    char field[TRAIN_RULES_FIELD_MAX] = "";
    adapt_error err = {0};
    CHECK_MSG(train_rules_fill(t, &g, field, &err) == ADAPT_EINVAL, "accepted: want %s", want_field);
    CHECK_MSG(!strcmp(field, want_field), "field %s, want %s", field, want_field);
    CHECK_MSG(!strcmp(err.message, want_reason), "reason \"%s\", want \"%s\"", err.message,
              want_reason);
    adaptd__train_spec__free_unpacked(t, NULL);
}

static void set_pack0(Adaptd__TrainSpec *t, train_rules_given *g) { t->pack_window = 0; mark(g, "pack_window"); }
static void set_lr5(Adaptd__TrainSpec *t, train_rules_given *g) { t->lr_llm = 5; mark(g, "lr_llm"); }
static void set_beta1(Adaptd__TrainSpec *t, train_rules_given *g) { t->adam_beta2 = 1; mark(g, "adam_beta2"); }
static void set_lr0(Adaptd__TrainSpec *t, train_rules_given *g) { t->lr_llm = 0; mark(g, "lr_llm"); }
static void set_mode(Adaptd__TrainSpec *t, train_rules_given *g)
{
    t->mode = strdup("three_stage");
    mark(g, "mode");
}
static void set_nopath(Adaptd__TrainSpec *t, train_rules_given *g)
{
    (void)g;
    free(t->corpus);
    t->corpus = (char *)protobuf_c_empty_string;
}
static void set_stage(Adaptd__TrainSpec *t, train_rules_given *g)
{
    t->mode = strdup("two_stage");
    mark(g, "mode");
    t->overlays = malloc(sizeof *t->overlays);
    t->overlays[0] = strdup("/ov");
    t->n_overlays = 1;
    t->stages = malloc(2 * sizeof *t->stages);
    for (int k = 0; k < 2; k++) {
        t->stages[k] = malloc(sizeof *t->stages[k]);
        adaptd__stage_schedule__init(t->stages[k]);
    }
    t->n_stages = 2;
    t->stages[1]->lr_llm = 3;
    CHECK(train_rules_mark(&g->stage[1], TRAIN_RULES_STAGE, "lr_llm") == 0);
}

static void test_fill_refusals(void)
{
    fill_refuses(set_pack0, "pack_window", "0 is outside [1, 1048576]");
    fill_refuses(set_lr5, "lr_llm", "5 is outside (0, 1]");
    fill_refuses(set_lr0, "lr_llm", "0 is outside (0, 1]");
    fill_refuses(set_beta1, "adam_beta2", "1 is outside [0, 1)");
    fill_refuses(set_mode, "mode", "\"three_stage\" is not one of single_stage | two_stage | synthesizer");
    fill_refuses(set_nopath, "corpus", "required");
    fill_refuses(set_stage, "stages[1].lr_llm", "3 is outside (0, 1]");
}

/* ---- the daemon and the worker on the same text ------------------------------------------ */

/* Whether two messages of one type hold the same value in every field, recursively; on a
 * difference names it in what. */
static int same_message(const ProtobufCMessage *a, const ProtobufCMessage *b, char *what, size_t n)
{
    const ProtobufCMessageDescriptor *d = a->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *ma = (const char *)a + fd->offset, *mb = (const char *)b + fd->offset;
        int same = 1;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)((const char *)a + fd->quantifier_offset);
            size_t nb = *(const size_t *)((const char *)b + fd->quantifier_offset);
            same = na == nb;
            for (size_t k = 0; same && k < na; k++) {
                void *ea = (*(void *const *const *)ma)[k], *eb = (*(void *const *const *)mb)[k];
                same = fd->type == PROTOBUF_C_TYPE_STRING ? !strcmp(ea, eb)
                                                          : same_message(ea, eb, what, n);
            }
        } else switch (fd->type) {
        case PROTOBUF_C_TYPE_STRING: same = !strcmp(*(char *const *)ma, *(char *const *)mb); break;
        case PROTOBUF_C_TYPE_UINT32: same = *(const uint32_t *)ma == *(const uint32_t *)mb; break;
        case PROTOBUF_C_TYPE_UINT64: same = *(const uint64_t *)ma == *(const uint64_t *)mb; break;
        case PROTOBUF_C_TYPE_FLOAT:  same = *(const float *)ma == *(const float *)mb; break;
        case PROTOBUF_C_TYPE_BOOL:
            same = !*(const protobuf_c_boolean *)ma == !*(const protobuf_c_boolean *)mb;
            break;
        case PROTOBUF_C_TYPE_MESSAGE: {
            const ProtobufCMessage *sa = *(ProtobufCMessage *const *)ma;
            const ProtobufCMessage *sb = *(ProtobufCMessage *const *)mb;
            same = (!sa && !sb) || (sa && sb && same_message(sa, sb, what, n));
            break;
        }
        default: same = 0; break;
        }
        if (!same) {
            if (!what[0]) snprintf(what, n, "%s.%s", d->short_name, fd->name);
            return 0;
        }
    }
    return 1;
}

/* tmpl with each @ replaced by the data root, into json. */
static void expand(const char *tmpl, char *json, size_t size)
{
    size_t k = 0;
    json[0] = '\0';
    for (const char *p = tmpl; *p && k + strlen(root) + 1 < size; p++)
        k += (size_t)(*p == '@' ? snprintf(json + k, size - k, "%s", root)
                                : snprintf(json + k, size - k, "%c", *p));
}

/* Client JSON with @ for the data root: the daemon accepts it; its normalized text names every
 * TrainSpec member and reads back in the worker to the daemon's message; the worker reading the
 * client's text itself gets that message too. */
static void round_trip(const char *tmpl)
{
    char json[4096];
    expand(tmpl, json, sizeof json);
    job_spec_policy pol = { .data_root = root, .max_ranks = 8, .slurm = 1 };
    Adaptd__JobSpec *d = NULL, *w = NULL, *w2 = NULL;
    char *norm = NULL, field[JOB_SPEC_FIELD_MAX] = "";
    adapt_error err = {0};
    CHECK_MSG(job_spec_parse(json, strlen(json), &pol, &d, &norm, field, &err) == ADAPT_OK,
              "daemon refuses %s: %s", json, err.message);
    if (!d) return;
    cJSON *doc = cJSON_Parse(norm);
    const cJSON *train = cJSON_GetObjectItemCaseSensitive(doc, "train");
    const ProtobufCMessageDescriptor *td = &adaptd__train_spec__descriptor;
    for (unsigned i = 0; i < td->n_fields; i++)
        CHECK_MSG(cJSON_GetObjectItemCaseSensitive(train, td->fields[i].name) != NULL,
                  "normalized spec lacks train.%s: %s", td->fields[i].name, norm);
    CHECK(cJSON_GetObjectItemCaseSensitive(doc, "synthesize") == NULL);
    cJSON_Delete(doc);
    CHECK_MSG(train_spec_parse_job(norm, strlen(norm), "spec.json", &w, &err) == ADAPT_OK,
              "worker refuses the daemon's %s: %s", norm, err.message);
    CHECK_MSG(train_spec_parse_job(json, strlen(json), "client.json", &w2, &err) == ADAPT_OK,
              "worker refuses the client's %s: %s", json, err.message);
    char what[128] = "";
    if (w) CHECK_MSG(same_message(&d->base, &w->base, what, sizeof what),
                     "daemon and worker differ at %s for %s", what, norm);
    what[0] = '\0';
    if (w2) CHECK_MSG(same_message(&d->base, &w2->base, what, sizeof what),
                      "daemon and worker (client text) differ at %s for %s", what, json);
    train_spec_free_job(w);
    train_spec_free_job(w2);
    adaptd__job_spec__free_unpacked(d, NULL);
    free(norm);
}

#define PATHS "\"model_path\":\"@/model\",\"corpus\":\"@/corpus\",\"output_dir\":\"@/out/run\""

static void test_round_trip(void)
{
    round_trip("{\"kind\":\"train\",\"train\":{" PATHS "}}");
    round_trip("{\"name\":\"all\",\"kind\":\"train\",\"ranks\":2,\"backend\":\"cuda\","
               "\"launcher\":\"slurm\",\"max_restarts\":3,\"train\":{" PATHS ","
               "\"overlays\":[\"@/tasks\"],\"mode\":\"single_stage\",\"epochs\":1,"
               "\"max_steps\":0,\"global_batch\":128,\"micro_batch_tokens\":8192,"
               "\"max_seq_len\":4096,\"lr_vision\":2e-6,\"lr_llm\":1e-5,\"weight_decay\":0,"
               "\"warmup_ratio\":0.03,\"schedule\":\"linear\",\"max_grad_norm\":0,\"seed\":7,"
               "\"freeze_vision\":false,\"freeze_merger\":false,\"checkpoint_every\":0,"
               "\"keep_last\":2,\"image_min_pixels\":3136,\"image_max_pixels\":1003520,"
               "\"caption_instructions\":[\"Describe.\"],\"pack_window\":1,"
               "\"adam_beta1\":0,\"adam_beta2\":0.95,\"adam_epsilon\":1e-6}}");
    /* two_stage: stages inherit what they leave out; seed above 2^53 as a decimal string */
    round_trip("{\"kind\":\"train\",\"ranks\":null,\"train\":{" PATHS ",\"mode\":\"two_stage\","
               "\"overlays\":[\"@/tasks\"],\"lr_llm\":0.0002,\"max_steps\":50,"
               "\"seed\":\"18446744073709551615\",\"stages\":[{\"epochs\":1,\"schedule\":"
               "\"constant\"},{\"lr_llm\":0.001,\"warmup_ratio\":0}]}}");
    round_trip("{\"kind\":\"train\",\"train\":{" PATHS ",\"mode\":\"synthesizer\","
               "\"blank_image_ratio\":0.25,\"epochs\":null,\"stages\":[]}}");
}

/* Both refuse tmpl's spec; the worker's message is "client.json: " + the daemon's. */
static void same_refusal(const char *tmpl, const char *want)
{
    char json[4096];
    expand(tmpl, json, sizeof json);
    job_spec_policy pol = { .data_root = root, .max_ranks = 65536, .slurm = 1 };
    Adaptd__JobSpec *d = NULL, *w = NULL;
    char *norm = NULL, field[JOB_SPEC_FIELD_MAX] = "";
    adapt_error de = {0}, we = {0};
    CHECK_MSG(job_spec_parse(json, strlen(json), &pol, &d, &norm, field, &de) == ADAPT_EINVAL,
              "daemon accepts %s", json);
    CHECK_MSG(train_spec_parse_job(json, strlen(json), "client.json", &w, &we) == ADAPT_EINVAL,
              "worker accepts %s", json);
    CHECK_MSG(!strcmp(de.message, want), "daemon says \"%s\", want \"%s\"", de.message, want);
    char expect[sizeof we.message];
    snprintf(expect, sizeof expect, "client.json: %s", want);
    CHECK_MSG(!strcmp(we.message, expect), "worker says \"%s\", want \"%s\"", we.message, expect);
    size_t n = strcspn(want, ":");
    CHECK_MSG(strlen(field) == n && !strncmp(field, want, n), "daemon field %s for %s", field, want);
    if (d) adaptd__job_spec__free_unpacked(d, NULL);
    free(norm);
    train_spec_free_job(w);
}

#define JOB(x) "{\"kind\":\"train\",\"train\":{" PATHS x "}}"

static void test_same_refusals(void)
{
    same_refusal(JOB(",\"pack_window\":0"), "train.pack_window: 0 is outside [1, 1048576]");
    same_refusal(JOB(",\"lr_llm\":5"), "train.lr_llm: 5 is outside (0, 1]");
    same_refusal(JOB(",\"adam_beta2\":1"), "train.adam_beta2: 1 is outside [0, 1)");
    same_refusal(JOB(",\"weight_decay\":5"), "train.weight_decay: 5 is outside [0, 1]");
    same_refusal(JOB(",\"max_grad_norm\":2e6"), "train.max_grad_norm: 2000000 is outside [0, 1000000]");
    same_refusal(JOB(",\"global_batch\":0"), "train.global_batch: 0 is outside [1, 1048576]");
    same_refusal(JOB(",\"epochs\":0"), "train.epochs: epochs and max_steps are both 0: give one of them");
    same_refusal(JOB(",\"max_seq_len\":8192"), "train.micro_batch_tokens: 4096 is below max_seq_len "
                 "8192, so a sample of max_seq_len tokens could not fit in a micro-batch");
    same_refusal(JOB(",\"blank_image_ratio\":0.5"),
                 "train.blank_image_ratio: applies only to mode \"synthesizer\"");
    same_refusal(JOB(",\"stages\":[{},{}]"), "train.stages: applies only to mode \"two_stage\"");
    same_refusal(JOB(",\"mode\":\"two_stage\",\"stages\":[{},{}]"), "train.overlays: two_stage needs "
                 "an overlay with the synthesized tasks for its second stage");
    same_refusal(JOB(",\"mode\":\"two_stage\",\"overlays\":[\"@/tasks\"],\"stages\":[{},"
                     "{\"lr_llm\":3}]"), "train.stages[1].lr_llm: 3 is outside (0, 1]");
    same_refusal(JOB(",\"schedule\":\"step\""),
                 "train.schedule: \"step\" is not one of cosine | linear | constant");
    same_refusal(JOB(",\"caption_instructions\":[]"),
                 "train.caption_instructions: has 0 entries, expected 1 to 1024");
    same_refusal(JOB(",\"caption_instructions\":[\"a\",\"\"]"),
                 "train.caption_instructions[1]: must not be empty");
    same_refusal(JOB(",\"epochs\":\"2\""), "train.epochs: expected a non-negative 32-bit integer");
    same_refusal(JOB(",\"learning_rate\":1"), "train.learning_rate: unknown field");
    same_refusal(JOB(",\"seed\":\"12x\""), "train.seed: expected a non-negative integer (up to 2^53 "
                 "as a number, any 64-bit one as a decimal string)");
    same_refusal("{\"kind\":\"train\",\"ranks\":0,\"train\":{" PATHS "}}",
                 "ranks: 0 is outside [1, 65536]");
    same_refusal("{\"kind\":\"train\",\"max_restarts\":101,\"train\":{" PATHS "}}",
                 "max_restarts: 101 is outside [0, 100]");
    same_refusal("{\"kind\":\"train\",\"backend\":\"tpu\",\"train\":{" PATHS "}}",
                 "backend: \"tpu\" is not one of cpu | cuda");
    same_refusal("{\"kind\":\"train\"}", "train: required for kind \"train\"");
    same_refusal("{\"kind\":\"train\",\"evaluate\":{},\"train\":{" PATHS "}}",
                 "evaluate: only for kind \"evaluate\"");
    same_refusal("{\"kind\":\"train\",\"train\":{\"corpus\":\"@/corpus\",\"output_dir\":\"@/o\"}}",
                 "train.model_path: required");
}

/* Whether the daemon's refusal of a member is one of its own limits, not a train rule: a path
 * that does not resolve inside --data-root (adapt-worker checks its files when it opens them). */
static int daemon_only(const char *field)
{
    static const char *const own[] = { "train.model_path", "train.corpus", "train.output_dir",
                                       "train.overlays[" };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strncmp(field, own[i], strlen(own[i]))) return 1;
    return 0;
}

/* Damaged copies of a full spec (fixed seed): whatever the daemon accepts the worker accepts
 * with identical values, and a train member the daemon refuses the worker refuses with the
 * same message. */
static void test_mutations(void)
{
    char good[4096];
    expand("{\"name\":\"m\",\"kind\":\"train\",\"ranks\":2,\"max_restarts\":1,\"train\":{" PATHS
           ",\"overlays\":[\"@/tasks\"],\"mode\":\"two_stage\",\"epochs\":1,\"max_steps\":9,"
           "\"global_batch\":8,\"lr_llm\":0.0002,\"warmup_ratio\":0.5,\"pack_window\":64,"
           "\"seed\":\"77\",\"freeze_vision\":false,\"max_seq_len\":512,\"micro_batch_tokens\":512,"
           "\"stages\":[{\"epochs\":1,\"schedule\":\"linear\"},{\"lr_llm\":0.001}]}}", good, sizeof good);
    size_t len = strlen(good);
    static const char alphabet[] = "{}[]\":,0123456789.-eE truefalsnul";
    uint32_t seed = 4242;
    int accepted = 0, same_refusals = 0;
    job_spec_policy pol = { .data_root = root, .max_ranks = 65536, .slurm = 1 };
    for (int round = 0; round < 4000; round++) {
        char doc[4096];
        memcpy(doc, good, len + 1);
        for (int k = 0; k < 1 + round % 3; k++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1664525u + 1013904223u;
            doc[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        Adaptd__JobSpec *d = NULL, *w = NULL, *wn = NULL;
        char *norm = NULL, field[JOB_SPEC_FIELD_MAX] = "";
        adapt_error de = {0}, we = {0};
        int drc = job_spec_parse(doc, len, &pol, &d, &norm, field, &de);
        int wrc = train_spec_parse_job(doc, len, "c.json", &w, &we);
        if (drc == ADAPT_OK) {
            accepted++;
            CHECK_MSG(wrc == ADAPT_OK, "daemon accepts, worker refuses %s: %s", doc, we.message);
            CHECK_MSG(train_spec_parse_job(norm, strlen(norm), "n.json", &wn, &we) == ADAPT_OK,
                      "worker refuses the daemon's %s: %s", norm, we.message);
            char what[128] = "";
            if (wn) CHECK_MSG(same_message(&d->base, &wn->base, what, sizeof what),
                              "differ at %s: %s", what, norm);
        } else if (field[0] && !daemon_only(field) && strcmp(field, "kind")) {
            char expect[sizeof we.message + 16];
            snprintf(expect, sizeof expect, "c.json: %s", de.message);
            CHECK_MSG(wrc == ADAPT_EINVAL && !strcmp(we.message, expect),
                      "daemon: \"%s\", worker: \"%s\" for %s", de.message,
                      wrc ? we.message : "accepted", doc);
            same_refusals++;
        }
        if (d) adaptd__job_spec__free_unpacked(d, NULL);
        free(norm);
        train_spec_free_job(w);
        train_spec_free_job(wn);
    }
    CHECK(accepted > 0 && same_refusals > 0);
    fprintf(stderr, "mutations: %d accepted by both, %d refused alike\n", accepted, same_refusals);
}

static void mkdir_in(const char *rel)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    CHECK(mkdir(p, 0755) == 0);
}

int main(void)
{
    char tmp[] = "/tmp/adapt-test-rules-XXXXXX";
    if (!mkdtemp(tmp) || !realpath(tmp, root)) return 1;
    mkdir_in("model");
    mkdir_in("corpus");
    mkdir_in("tasks");
    mkdir_in("out");
    test_table();
    test_fill_defaults();
    test_fill_refusals();
    test_round_trip();
    test_same_refusals();
    test_mutations();
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return check_report("train_rules");
}
