/* test_job_yaml: YAML → JSON for job specs (tools/job_yaml.c) on hand-written cases: the core
 * schema's types, quoting, nesting, anchors and aliases, tags, and every refusal naming
 * FILE:LINE:COLUMN; the JSON reader's errors; format sniffing; loading a file. */
#include "check.h"
#include "job_yaml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The YAML as compact JSON text (job_yaml_print), or NULL with the error in err. */
static char *yaml_json(const char *yaml, adapt_error *err)
{
    cJSON *doc = NULL;
    if (job_yaml_parse(yaml, strlen(yaml), "t.yaml", &doc, err) != ADAPT_OK) return NULL;
    char *s = job_yaml_print(doc);
    cJSON_Delete(doc);
    return s;
}

#define CHECK_YAML(yaml, want) do {                                                   \
        adapt_error e_ = {0};                                                         \
        char *got_ = yaml_json((yaml), &e_);                                          \
        CHECK_MSG(got_ && !strcmp(got_, (want)), "YAML %s: got %s, want %s",         \
                  (yaml), got_ ? got_ : e_.message, (want));                          \
        free(got_);                                                                   \
    } while (0)

#define CHECK_YAML_ERROR(yaml, where, what) do {                                      \
        adapt_error e_ = {0};                                                         \
        char *got_ = yaml_json((yaml), &e_);                                          \
        CHECK_MSG(!got_, "YAML %s was accepted as %s", (yaml), got_ ? got_ : "");     \
        CHECK(e_.code == ADAPT_EINVAL);                                               \
        CHECK_STR_CONTAINS(e_.message, (where));                                      \
        CHECK_STR_CONTAINS(e_.message, (what));                                       \
        free(got_);                                                                   \
    } while (0)

static void test_scalars(void)
{
    /* the core schema's plain scalars */
    CHECK_YAML("a: 1\nb: -17\nc: +3\nd: 0x1F\ne: 0o17\n", "{\"a\":1,\"b\":-17,\"c\":3,\"d\":31,\"e\":15}");
    CHECK_YAML("a: 1.5\nb: -.25\nc: 1e3\nd: 2.5E-2\ne: 3.\n", "{\"a\":1.5,\"b\":-0.25,\"c\":1000,\"d\":0.025,\"e\":3}");
    CHECK_YAML("a: true\nb: False\nc: TRUE\nd: null\ne: ~\nf:\ng: NULL\n",
               "{\"a\":true,\"b\":false,\"c\":true,\"d\":null,\"e\":null,\"f\":null,\"g\":null}");
    /* what YAML 1.1 typed but 1.2's core schema keeps as strings */
    CHECK_YAML("a: yes\nb: off\nc: 1_000\nd: 0b101\ne: 012x\nf: 1:30\n",
               "{\"a\":\"yes\",\"b\":\"off\",\"c\":\"1_000\",\"d\":\"0b101\",\"e\":\"012x\",\"f\":\"1:30\"}");
    /* quoted and block scalars stay strings */
    CHECK_YAML("a: \"1\"\nb: 'true'\nc: \"null\"\nd: |\n  x\n  y\ne: >-\n  p\n  q\n",
               "{\"a\":\"1\",\"b\":\"true\",\"c\":\"null\",\"d\":\"x\\ny\\n\",\"e\":\"p q\"}");
    CHECK_YAML("s: \"tab\\there \\u00e9\"\n", "{\"s\":\"tab\\there \xc3\xa9\"}");
    /* keys are their text, even when they look like numbers */
    CHECK_YAML("1: a\ntrue: b\n", "{\"1\":\"a\",\"true\":\"b\"}");
    /* tags ask for a type */
    CHECK_YAML("a: !!str 12\nb: !!float 2\nc: !!int \"7\"\nd: ! 5\ne: !!bool true\n",
               "{\"a\":\"12\",\"b\":2,\"c\":7,\"d\":\"5\",\"e\":true}");
    /* 2^53 is the last integer a JSON reader holds exactly */
    CHECK_YAML("n: 9007199254740992\nm: -9007199254740992\n", "{\"n\":9007199254740992,\"m\":-9007199254740992}");
    /* and every double prints back exactly (cJSON's own printer keeps 15 digits) */
    CHECK_YAML("a: 0.1\nb: 0.30000000000000004\nc: 123456789.12345678\nd: 1e-300\ne: -0.0\n",
               "{\"a\":0.1,\"b\":0.30000000000000004,\"c\":123456789.12345678,\"d\":1e-300,\"e\":-0}");
    /* a document that is one scalar, and an empty document */
    CHECK_YAML("42\n", "42");
    CHECK_YAML("---\n", "null");
}

static void test_nesting(void)
{
    CHECK_YAML("name: t\nkind: train\nranks: 2\ntrain:\n  model_path: m\n  stages:\n    - epochs: 1\n"
               "      lr_llm: 0.001\n    - {epochs: 2, schedule: cosine}\n  overlays: [a, b]\n",
               "{\"name\":\"t\",\"kind\":\"train\",\"ranks\":2,\"train\":{\"model_path\":\"m\","
               "\"stages\":[{\"epochs\":1,\"lr_llm\":0.001},{\"epochs\":2,\"schedule\":\"cosine\"}],"
               "\"overlays\":[\"a\",\"b\"]}}");
    CHECK_YAML("- - 1\n  - [2, [3]]\n- {}\n- []\n", "[[1,[2,[3]]],{},[]]");
    /* key order is kept as written */
    CHECK_YAML("z: 1\na: 2\nm: 3\n", "{\"z\":1,\"a\":2,\"m\":3}");
    /* a JSON document is YAML too */
    CHECK_YAML("{\"a\": [1, 2.5, \"x\", null, true]}", "{\"a\":[1,2.5,\"x\",null,true]}");
}

static void test_anchors(void)
{
    CHECK_YAML("base: &b {lr: 0.1, epochs: 2}\none: *b\ntwo: *b\n",
               "{\"base\":{\"lr\":0.1,\"epochs\":2},\"one\":{\"lr\":0.1,\"epochs\":2},\"two\":{\"lr\":0.1,\"epochs\":2}}");
    CHECK_YAML("a: &x 5\nb: *x\nc: &x six\nd: *x\n", "{\"a\":5,\"b\":5,\"c\":\"six\",\"d\":\"six\"}");
    CHECK_YAML("list: &l [1, 2]\nnested: {inner: *l}\n", "{\"list\":[1,2],\"nested\":{\"inner\":[1,2]}}");
    CHECK_YAML("k: &key name\n*key : v\n", "{\"k\":\"name\",\"name\":\"v\"}");
    CHECK_YAML_ERROR("base: &b {x: 1}\nrun:\n  <<: *b\n  y: 2\n", "t.yaml:3:3", "merge keys (<<)");
    CHECK_YAML("\"<<\": 1\n", "{\"<<\":1}");   /* quoted, it is just a key */
    CHECK_YAML_ERROR("a: *nowhere\n", "t.yaml:1:4", "alias *nowhere");
    CHECK_YAML_ERROR("a: &self [1, *self]\n", "t.yaml:1:14", "alias *self");
    /* an alias bomb stops at the node limit instead of eating memory */
    CHECK_YAML_ERROR("a: &a [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                     "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", "t.yaml:5:", "more than");
}

static void test_errors(void)
{
    CHECK_YAML_ERROR("a: 1\nb: 2\na: 3\n", "t.yaml:3:1", "duplicate key 'a' (first at line 1)");
    CHECK_YAML_ERROR("train:\n  lr: 1\n  x: 2\n  lr: 3\n", "t.yaml:4:3", "duplicate key 'lr'");
    CHECK_YAML_ERROR("a: 1\n---\nb: 2\n", "t.yaml:2:1", "second YAML document");
    CHECK_YAML_ERROR("a: [1, 2\n", "t.yaml:", "flow sequence");
    CHECK_YAML_ERROR("a: b: c\n", "t.yaml:1:5", "mapping values are not allowed");
    CHECK_YAML_ERROR("a:\n  - 1\n - 2\n", "t.yaml:3:", "");
    CHECK_YAML_ERROR("a: .inf\n", "t.yaml:1:4", ".inf has no JSON form");
    CHECK_YAML_ERROR("a: -.Inf\n", "t.yaml:1:4", "no JSON form");
    CHECK_YAML_ERROR("b: .nan\n", "t.yaml:1:4", "no JSON form");
    CHECK_YAML_ERROR("n: 9007199254740993\n", "t.yaml:1:4", "beyond 2^53");
    CHECK_YAML_ERROR("n: 0xFFFFFFFFFFFFFFFFFF\n", "t.yaml:1:4", "beyond 2^53");
    CHECK_YAML_ERROR("x: 1e999\n", "t.yaml:1:4", "out of range");
    CHECK_YAML_ERROR("? [a, b]\n: c\n", "t.yaml:1:3", "mapping key must be a scalar");
    CHECK_YAML_ERROR("a: !!int abc\n", "t.yaml:1:4", "!!int wants an integer");
    CHECK_YAML_ERROR("a: !!bool yes\n", "t.yaml:1:4", "!!bool wants");
    CHECK_YAML_ERROR("a: !custom 1\n", "t.yaml:1:4", "tag !custom has no JSON meaning");
    CHECK_YAML_ERROR("a: !!set {x}\n", "t.yaml:1:4", "has no JSON meaning");
    CHECK_YAML_ERROR("", "t.yaml", "no YAML document");
    CHECK_YAML_ERROR("# only a comment\n", "t.yaml", "no YAML document");
    CHECK_YAML_ERROR("a: \"x\ty\x01\"\n", "t.yaml:1:", "");
    /* depth: 200 nested flow sequences */
    char deep[512];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    deep[400] = '\0';
    CHECK_YAML_ERROR(deep, "t.yaml:1:", "nested deeper than");
}

static void test_json(void)
{
    cJSON *doc = NULL;
    adapt_error err = {0};
    const char *ok = "{\"name\": \"x\", \"train\": {\"lr_llm\": 0.5}}\n";
    CHECK(job_yaml_parse_json(ok, strlen(ok), "s.json", &doc, &err) == ADAPT_OK);
    CHECK(doc && cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "train"), "lr_llm")->valuedouble == 0.5);
    cJSON_Delete(doc);
    const char *bad = "{\n  \"name\": \"x\",\n  \"ranks\": ,\n}";
    CHECK(job_yaml_parse_json(bad, strlen(bad), "s.json", &doc, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "s.json:3:12: malformed JSON");
    const char *trail = "{\"a\": 1} x";
    CHECK(job_yaml_parse_json(trail, strlen(trail), "s.json", &doc, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "s.json:1:10: text after the JSON value");
    const char *dup = "{\"train\": {\"stages\": [{}, {\"epochs\": 1, \"epochs\": 2}]}}";
    CHECK(job_yaml_parse_json(dup, strlen(dup), "s.json", &doc, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "duplicate key train.stages[1].epochs");
}

static void test_sniff_and_files(void)
{
    CHECK(job_yaml_sniff("a.json", "x: 1", 4) == JOB_YAML_FORMAT_JSON);
    CHECK(job_yaml_sniff("a.YML", "{}", 2) == JOB_YAML_FORMAT_YAML);
    CHECK(job_yaml_sniff("a.yaml", "{}", 2) == JOB_YAML_FORMAT_YAML);
    CHECK(job_yaml_sniff("spec", "\n  {\"a\":1}", 10) == JOB_YAML_FORMAT_JSON);
    CHECK(job_yaml_sniff("spec", "\xEF\xBB\xBF[1]", 6) == JOB_YAML_FORMAT_JSON);
    CHECK(job_yaml_sniff("spec", "# c\na: 1", 8) == JOB_YAML_FORMAT_YAML);

    char dir[] = "/tmp/test_job_yaml.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/spec", dir);
    FILE *f = fopen(path, "w");
    fputs("name: from-file\nranks: 1\n", f);
    fclose(f);
    cJSON *doc = NULL;
    adapt_error err = {0};
    CHECK(job_yaml_load_file(path, &doc, &err) == ADAPT_OK);
    CHECK(doc && !strcmp(cJSON_GetObjectItem(doc, "name")->valuestring, "from-file"));
    cJSON_Delete(doc);
    f = fopen(path, "w");
    fputs("{\"name\": 1,}", f);
    fclose(f);
    CHECK(job_yaml_load_file(path, &doc, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, path);
    remove(path);
    CHECK(job_yaml_load_file(path, &doc, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "No such file");
    remove(dir);
}

int main(void)
{
    test_scalars();
    test_nesting();
    test_anchors();
    test_errors();
    test_json();
    test_sniff_and_files();
    return check_report("job_yaml");
}
