/* import formats without a corpus: WebDataset key rules, image path rules under the root, the
 * JSON record scanner (arrays and JSONL: boundaries, lines, byte offsets, broken structure),
 * LLaVA and caption record parsing (roles, <image> tokens, caption from the first gpt turn, each
 * bad field named), format detection, and the tar reader (ustar prefix, GNU long names, pax
 * paths, grouping by key, truncation). */
#include "../check.h"
#include "import.h"
#include "import_caption_jsonl.h"
#include "import_json.h"
#include "import_llava.h"
#include "import_webdataset.h"
#include "test_import_fixtures.h"

static void test_wds_keys(void)
{
    static const struct { const char *name, *key, *ext; } cases[] = {
        {"a.b.c.jpg",          "a",          "b.c.jpg"},
        {"dir/x.y.json",       "dir/x",      "y.json"},
        {"dir.v1/x.jpg",       "dir.v1/x",   "jpg"},    /* dots in directories do not count */
        {"s/0001.seg.png",     "s/0001",     "seg.png"},
        {"noext",              "noext",      ""},
        {"d/.hidden",          "d/",         "hidden"},
        {"caf\xC3\xA9.txt",    "caf\xC3\xA9", "txt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t key_len;
        const char *ext;
        import_wds_split(cases[i].name, &key_len, &ext);
        CHECK_MSG(key_len == strlen(cases[i].key) && !strncmp(cases[i].name, cases[i].key, key_len),
                  "%s: key length %zu", cases[i].name, key_len);
        CHECK_MSG(!strcmp(ext, cases[i].ext), "%s: ext %s", cases[i].name, ext);
    }
}

static void test_paths(void)
{
    char out[4096];
    const char *root = "/data/img";
    CHECK(import_path_resolve(root, root, "a/b.jpg", out, sizeof out) == IMPORT_REASON_OK);
    CHECK(!strcmp(out, "/data/img/a/b.jpg"));
    CHECK(import_path_resolve(root, root, "./a//b.jpg", out, sizeof out) == 0);
    CHECK(!strcmp(out, "/data/img/a/b.jpg"));
    CHECK(import_path_resolve(root, root, "a/../b.jpg", out, sizeof out) == 0);
    CHECK(!strcmp(out, "/data/img/b.jpg"));
    CHECK(import_path_resolve(root, root, "../x.jpg", out, sizeof out) == IMPORT_REASON_OUTSIDE_ROOT);
    CHECK(import_path_resolve(root, root, "a/../../x.jpg", out, sizeof out) ==
          IMPORT_REASON_OUTSIDE_ROOT);
    CHECK(import_path_resolve(root, root, "/data/img/a.jpg", out, sizeof out) == 0);
    CHECK(!strcmp(out, "/data/img/a.jpg"));
    CHECK(import_path_resolve(root, root, "/data/img/x/../a.jpg", out, sizeof out) == 0);
    CHECK(import_path_resolve(root, root, "/data/imgX/a.jpg", out, sizeof out) ==
          IMPORT_REASON_OUTSIDE_ROOT);
    CHECK(import_path_resolve(root, root, "/data/img/../etc/passwd", out, sizeof out) ==
          IMPORT_REASON_OUTSIDE_ROOT);
    CHECK(import_path_resolve(root, root, "/etc/passwd", out, sizeof out) ==
          IMPORT_REASON_OUTSIDE_ROOT);
    /* A relative root stays relative; bytes of the name are untouched (NFD stays NFD). */
    CHECK(import_path_resolve("imgs/", "/w/imgs", "e\xCC\x81t\xC3\xA9.jpg", out, sizeof out) == 0);
    CHECK(!strcmp(out, "imgs/e\xCC\x81t\xC3\xA9.jpg"));
    CHECK(import_path_resolve(".", "/w", "a.png", out, sizeof out) == 0);
    CHECK(!strcmp(out, "./a.png"));
    /* Root "/" admits every absolute path. */
    CHECK(import_path_resolve("/", "/", "/etc/x.jpg", out, sizeof out) == 0);

    adapt_error err = {0};
    CHECK(import_path_absolute("/a/./b/../c//d", out, sizeof out, &err) == 0);
    CHECK(!strcmp(out, "/a/c/d"));
    CHECK(import_path_absolute("/../..", out, sizeof out, &err) == 0);
    CHECK(!strcmp(out, "/"));
    CHECK(import_path_absolute("rel/x", out, sizeof out, &err) == 0);
    CHECK(out[0] == '/' && strstr(out, "/rel/x"));
}

static int spans(const char *text, int array, import_json_span *out, int max, adapt_error *err)
{
    import_json_cursor c;
    import_json_cursor_init(&c, "t.json", text, strlen(text), array);
    int n = 0, rc;
    while (n < max && (rc = import_json_next(&c, &out[n], err)) == 1) n++;
    return rc < 0 ? rc : n;
}

static void test_json_scanner(void)
{
    import_json_span sp[8];
    adapt_error err = {0};
    const char *arr = "\xEF\xBB\xBF[\n  {\"a\": \"x]}\\\"{\"},\n  {\"b\": [1, {\"c\": 2}]}\n ,3 ]\n";
    CHECK(spans(arr, 1, sp, 8, &err) == 3);
    CHECK(sp[0].line == 2 && sp[0].offset == (size_t)(strchr(arr, '{') - arr) && sp[0].len == 15);
    CHECK(!strncmp(sp[0].text, "{\"a\": \"x]}\\\"{\"}", sp[0].len));
    CHECK(sp[1].line == 3 && !strncmp(sp[1].text, "{\"b\": [1, {\"c\": 2}]}", sp[1].len));
    CHECK(sp[2].line == 4 && sp[2].len == 1 && sp[2].text[0] == '3');
    CHECK(spans("[]", 1, sp, 8, &err) == 0);
    CHECK(spans("  \n", 1, sp, 8, &err) == 0);
    CHECK(spans(" [ ] ", 1, sp, 8, &err) == 0);

    CHECK(spans("[{\"a\":1},\n{\"b\":\"unterminated}]", 1, sp, 8, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "line 2");
    CHECK_STR_CONTAINS(err.message, "t.json");
    CHECK(spans("[{\"a\":1},]", 1, sp, 8, &err) == ADAPT_ECORRUPT);
    CHECK(spans("[{\"a\":1}] x", 1, sp, 8, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "after the closing");
    CHECK(spans("[{\"a\":1} {\"b\":2}]", 1, sp, 8, &err) == ADAPT_ECORRUPT);
    CHECK(spans("{\"a\":1}", 1, sp, 8, &err) == ADAPT_ECORRUPT);
    CHECK(spans("[{\"a\":1}", 1, sp, 8, &err) == ADAPT_ECORRUPT);

    const char *lines = "{\"a\":1}\r\n\n   \n{\"b\":2}\n{bad\n{\"c\":3}";
    CHECK(spans(lines, 0, sp, 8, &err) == 4);
    CHECK(sp[0].line == 1 && sp[0].offset == 0 && sp[0].len == 7);
    CHECK(sp[1].line == 4 && sp[1].offset == 14);
    CHECK(sp[2].line == 5 && sp[2].offset == 22 && sp[2].len == 4);
    CHECK(sp[3].line == 6 && sp[3].len == 7);
    CHECK(spans("", 0, sp, 8, &err) == 0);
}

static void parse_llava(const char *text, import_record *rec)
{
    import_json_span span = {text, strlen(text), 7, 1000};
    memset(rec, 0, sizeof *rec);
    CHECK(import_llava_record_parse(&span, rec) == 0);
}

static void test_llava_records(void)
{
    import_record r;
    parse_llava("{\"id\": \"s1\", \"image\": \"im/\xC3\xA9.jpg\", \"conversations\": ["
                "{\"from\": \"human\", \"value\": \"<image>\\nWhat is it?\"},"
                "{\"from\": \"gpt\", \"value\": \"A r\\u00e9d circle.\"},"
                "{\"from\": \"human\", \"value\": \"Sure?\"},"
                "{\"from\": \"gpt\", \"value\": \"Yes.\"}]}", &r);
    CHECK(r.reason == IMPORT_REASON_OK);
    CHECK(r.id && !strcmp(r.id, "s1"));
    CHECK(r.has_image && !strcmp(r.image_path, "im/\xC3\xA9.jpg"));
    CHECK(r.n_turns == 4 && r.turns[0].role == IMPORT_ROLE_USER &&
          r.turns[1].role == IMPORT_ROLE_ASSISTANT);
    CHECK(!strcmp(r.turns[0].text, "<image>\nWhat is it?"));
    CHECK(r.caption && !strcmp(r.caption, "A r\xC3\xA9" "d circle."));
    import_record_clear(&r);

    parse_llava("{\"id\": 123, \"image\": [\"a.png\"], \"caption\": \"cap\", \"conversations\": "
                "[{\"from\": \"system\", \"value\": \"s\"}, {\"from\": \"gpt\", \"value\": \"g\"}]}", &r);
    CHECK(r.reason == 0 && !strcmp(r.id, "123") && !strcmp(r.caption, "cap"));
    CHECK(!strcmp(r.image_path, "a.png") && r.turns[0].role == IMPORT_ROLE_SYSTEM);
    import_record_clear(&r);

    /* Ids from numbers: integers in decimal, others (even beyond long long) in the shortest of
     * %.15g and %.17g that reads back as the same double. */
    parse_llava("{\"id\": 5.66667e+72, \"image\": \"a.png\"}", &r);
    CHECK(r.reason == 0 && r.id && !strcmp(r.id, "5.66667e+72"));
    import_record_clear(&r);
    parse_llava("{\"id\": -0.1, \"image\": \"a.png\"}", &r);
    CHECK(r.reason == 0 && r.id && !strcmp(r.id, "-0.1"));
    import_record_clear(&r);
    parse_llava("{\"id\": 0.30000000000000004, \"image\": \"a.png\"}", &r);
    CHECK(r.reason == 0 && r.id && !strcmp(r.id, "0.30000000000000004"));
    import_record_clear(&r);

    parse_llava("{\"image\": \"a.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"q\"}]}", &r);
    CHECK(r.reason == 0 && r.caption == NULL && r.id == NULL);   /* empty_caption later */
    import_record_clear(&r);

    parse_llava("{\"conversations\": []}", &r);
    CHECK(r.reason == 0 && !r.has_image);
    import_record_clear(&r);

    static const struct { const char *text, *field, *detail; } bad[] = {
        {"{\"id\": {}, \"image\": \"a\"}", "id", "string or a number"},
        {"{\"image\": 5}", "image", "must be a string"},
        {"{\"image\": [\"a\", \"b\"]}", "image", "2 images"},
        {"{\"image\": \"a\", \"conversations\": {}}", "conversations", "array"},
        {"{\"image\": \"a\", \"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}",
         "conversations[0].from", "human"},
        {"{\"image\": \"a\", \"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}, "
         "{\"from\": \"gpt\", \"value\": 3}]}", "conversations[1].value", "string"},
        {"{\"image\": \"a\", \"caption\": [1]}", "caption", "string"},
        {"[1, 2]", "", "JSON object"},
        {"{\"image\": \"a\",\n \"caption\": \"x\" oops}", "", "line 8, column 17, byte 1031"},
        {"{\"image\": \"a\"} {\"x\": 1}", "", "byte 1015"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_llava(bad[i].text, &r);
        CHECK_MSG(r.reason == IMPORT_REASON_BAD_RECORD, "case %zu", i);
        CHECK_MSG(!strcmp(r.field, bad[i].field), "case %zu: field %s", i, r.field);
        CHECK_STR_CONTAINS(r.detail, bad[i].detail);
        import_record_clear(&r);
    }
}

static void test_caption_records(void)
{
    import_record r;
    memset(&r, 0, sizeof r);
    const char *t = "{\"image\": \"x.jpg\", \"caption\": \"  \\u6f22\\u5b57 \"}";
    import_json_span span = {t, strlen(t), 1, 0};
    CHECK(import_caption_record_parse(&span, &r) == 0);
    CHECK(r.reason == 0 && r.has_image && !strcmp(r.caption, "  \xE6\xBC\xA2\xE5\xAD\x97 "));
    CHECK(r.n_turns == 0);
    import_record_clear(&r);
    t = "{\"image\": \"x.jpg\", \"caption\": \"unterminated}";
    span = (import_json_span){t, strlen(t), 12, 4096};
    CHECK(import_caption_record_parse(&span, &r) == 0);
    CHECK(r.reason == IMPORT_REASON_BAD_RECORD);
    CHECK_STR_CONTAINS(r.detail, "line 12");
    CHECK_STR_CONTAINS(r.detail, "malformed JSON");
    import_record_clear(&r);
}

static void test_detect(void)
{
    import_format f;
    adapt_error err = {0};
    CHECK(import_format_detect("a.json", " [ {", 4, IMPORT_FORMAT_AUTO, &f, &err) == 0 &&
          f == IMPORT_FORMAT_LLAVA_JSON);
    const char *l = "{\"image\": \"a\", \"conversations\": []}\n";
    CHECK(import_format_detect("a.jsonl", l, strlen(l), IMPORT_FORMAT_AUTO, &f, &err) == 0 &&
          f == IMPORT_FORMAT_LLAVA_JSONL);
    const char *c = "{bad line\n{\"image\": \"a\", \"caption\": \"conversations\"}\n";
    CHECK(import_format_detect("a.jsonl", c, strlen(c), IMPORT_FORMAT_AUTO, &f, &err) == 0 &&
          f == IMPORT_FORMAT_CAPTION_JSONL);
    CHECK(import_format_detect("a.jsonl", c, strlen(c), IMPORT_FORMAT_LLAVA, &f, &err) == 0 &&
          f == IMPORT_FORMAT_LLAVA_JSONL);
    CHECK(import_format_detect("x.tar", "", 0, IMPORT_FORMAT_AUTO, &f, &err) == 0 &&
          f == IMPORT_FORMAT_WEBDATASET);
    CHECK(import_format_detect("x.json", "", 0, IMPORT_FORMAT_AUTO, &f, &err) == 0 &&
          f == IMPORT_FORMAT_LLAVA_JSON);
    CHECK(import_format_detect("x.txt", "hello", 5, IMPORT_FORMAT_AUTO, &f, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "--format");
    CHECK(import_format_detect("x.txt", "hello", 5, IMPORT_FORMAT_CAPTION_JSONL, &f, &err) == 0 &&
          f == IMPORT_FORMAT_CAPTION_JSONL);
    import_format p;
    CHECK(import_format_parse("webdataset", &p) == 0 && p == IMPORT_FORMAT_WEBDATASET);
    CHECK(import_format_parse("nope", &p) == ADAPT_EINVAL);
    CHECK(!strcmp(import_reason_name(IMPORT_REASON_MISSING_FILE), "missing_file"));
    CHECK(!strcmp(import_reason_name(IMPORT_REASON_UNDECODABLE_IMAGE), "undecodable_image"));
}

/* Reads every record of a tar file; returns the count or a negative error. */
static int read_tar(const char *path, import_record *recs, int max, adapt_error *err)
{
    import_reader rd;
    if (import_webdataset_reader_open(&rd, path, err)) return err->code;
    int n = 0, rc;
    while (n < max && (rc = rd.next(rd.state, &recs[n], err)) == 1) n++;
    import_reader_close(&rd);
    return rc < 0 ? rc : n;
}

static void test_tar(const char *tmp)
{
    size_t jl;
    uint8_t *jpg = fx_jpeg(16, 16, &jl);
    char longdir[200];
    memset(longdir, 'd', 120);
    strcpy(longdir + 120, "/longkey");
    char longjpg[220], longtxt[220];
    snprintf(longjpg, sizeof longjpg, "%s.jpg", longdir);
    snprintf(longtxt, sizeof longtxt, "%s.txt", longdir);

    fx_tar t = {0};
    fx_tar_dir(&t, "s/");
    fx_tar_file(&t, "s/0001.jpg", jpg, jl);
    fx_tar_file(&t, "s/0001.txt", "A caption\r\n\n", 12);
    fx_tar_file(&t, "s/0001.cls", "7", 1);
    const char *json2 = "{\"caption\": \"from json\", \"conversations\": [{\"from\": \"human\", "
                        "\"value\": \"<image>\"}, {\"from\": \"gpt\", \"value\": \"g\"}]}";
    fx_tar_file(&t, "s/0002.json", json2, strlen(json2));
    fx_tar_file(&t, "s/0002.png", jpg, jl);
    fx_tar_file(&t, longjpg, jpg, jl);
    fx_tar_file(&t, longtxt, "long", 4);
    fx_tar_file_pax(&t, "pax/\xC3\xA9t\xC3\xA9.b.c.jpg", jpg, jl);
    fx_tar_file_pax(&t, "pax/\xC3\xA9t\xC3\xA9.txt", "\xC3\xA9", 2);
    tar_header(&t, "x.txt", "pre/fix", 3, '0');
    tar_append(&t, "pfx", 3);
    tar_pad(&t);
    fx_tar_file(&t, "s/0003.json", "{broken", 7);
    fx_tar_end(&t);
    char path[512];
    snprintf(path, sizeof path, "%s/a.tar", tmp);
    fx_write(path, t.p, t.len);

    import_record r[10];
    memset(r, 0, sizeof r);
    adapt_error err = {0};
    int n = read_tar(path, r, 10, &err);
    CHECK_MSG(n == 6, "%d records: %s", n, err.message);
    if (n == 6) {
        CHECK(!strcmp(r[0].id, "s/0001") && r[0].has_image && r[0].image_len == jl);
        CHECK(!memcmp(r[0].image, jpg, jl) && !strcmp(r[0].image_member, "s/0001.jpg"));
        CHECK(!strcmp(r[0].caption, "A caption") && r[0].record == 0 && r[0].offset == 512);
        CHECK(!strcmp(r[1].id, "s/0002") && !strcmp(r[1].caption, "from json"));
        CHECK(r[1].n_turns == 2 && !strcmp(r[1].turns[0].text, "<image>"));
        CHECK(!strcmp(r[2].id, longdir) && !strcmp(r[2].caption, "long") && r[2].has_image);
        /* pax: key up to the first dot of the base name, so "b.c.jpg" is not an image field. */
        CHECK(!strcmp(r[3].id, "pax/\xC3\xA9t\xC3\xA9") && !r[3].has_image);
        CHECK(!strcmp(r[3].caption, "\xC3\xA9"));
        CHECK(!strcmp(r[4].id, "pre/fix/x") && !strcmp(r[4].caption, "pfx"));
        CHECK(r[5].reason == IMPORT_REASON_BAD_RECORD && !strcmp(r[5].field, "s/0003.json"));
        CHECK(r[5].record == 5);
    }
    for (int i = 0; i < 10; i++) import_record_clear(&r[i]);

    /* Cut inside a member's data: fatal, named. */
    fx_write(path, t.p, 512 * 4 + 100);
    n = read_tar(path, r, 10, &err);
    CHECK(n == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "a.tar");
    for (int i = 0; i < 10; i++) import_record_clear(&r[i]);
    /* A damaged header checksum. */
    t.p[512 + 10] ^= 1;
    fx_write(path, t.p, t.len);
    n = read_tar(path, r, 10, &err);
    CHECK(n == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "byte 512");
    for (int i = 0; i < 10; i++) import_record_clear(&r[i]);
    /* An empty file and a file of only end blocks: zero samples. */
    fx_write(path, "", 0);
    CHECK(read_tar(path, r, 10, &err) == 0);
    fx_tar e = {0};
    fx_tar_end(&e);
    fx_write(path, e.p, e.len);
    CHECK(read_tar(path, r, 10, &err) == 0);
    free(e.p);
    free(t.p);
    free(jpg);
}

int main(void)
{
    char tmp[] = "/tmp/adapt-import-fmt-XXXXXX";
    if (!mkdtemp(tmp)) return 2;
    test_wds_keys();
    test_paths();
    test_json_scanner();
    test_llava_records();
    test_caption_records();
    test_detect();
    test_tar(tmp);
    fx_rm_tree(tmp);
    return check_report("import_formats");
}
