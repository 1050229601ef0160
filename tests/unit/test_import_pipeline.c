/* import_run end to end: each format into a corpus and back (ids, captions, turns, original
 * image bytes, sizes, source), Unicode paths (NFC and NFD names side by side) and captions byte
 * for byte, every bad record in --on-bad fail (message names file, record, line, byte, field; no
 * corpus left) and in skip (counts in the manifest, the report), header vs full validation,
 * 0 and 1 records, shard sizes that divide the count and that do not, WebDataset across two tar
 * files with a duplicate key, and the same corpus whatever --jobs. */
#include "../check.h"
#include "corpus.h"
#include "import.h"
#include "test_import_fixtures.h"

#include <limits.h>

static char tmp[] = "/tmp/adapt-import-pipe-XXXXXX";
static int run_no;  /* names each run's output directory */

#define NFC_E "\xC3\xA9"        /* é as one code point */
#define NFD_E "e\xCC\x81"       /* é as e + combining acute */

typedef struct fixture_images {
    uint8_t *good_jpg, *good_png, *nfc, *nfd, *big;
    size_t   good_jpg_len, good_png_len, nfc_len, nfd_len, big_len;
} fixture_images;

static fixture_images img;

static void path_in(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s/%s", tmp, rel);
}

static void write_rel(const char *rel, const void *data, size_t len)
{
    char p[PATH_MAX];
    path_in(p, sizeof p, rel);
    fx_write(p, data, len);
}

static void write_text(const char *rel, const char *text)
{
    write_rel(rel, text, strlen(text));
}

static void make_images(void)
{
    char p[PATH_MAX];
    path_in(p, sizeof p, "img");
    mkdir(p, 0755);
    img.good_jpg = fx_jpeg(32, 24, &img.good_jpg_len);
    img.good_png = fx_png(20, 10, &img.good_png_len);
    img.nfc = fx_jpeg(40, 40, &img.nfc_len);
    img.nfd = fx_jpeg(48, 16, &img.nfd_len);
    write_rel("img/good.jpg", img.good_jpg, img.good_jpg_len);
    write_rel("img/good.png", img.good_png, img.good_png_len);
    write_rel("img/caf" NFC_E ".jpg", img.nfc, img.nfc_len);
    write_rel("img/caf" NFD_E ".jpg", img.nfd, img.nfd_len);
    /* Cut in the entropy-coded data: the header (tables, size) is intact. */
    img.big = fx_jpeg(160, 120, &img.big_len);
    write_rel("img/trunc.jpg", img.big, img.big_len * 9 / 10);
    uint8_t *bad = malloc(img.good_png_len);
    memcpy(bad, img.good_png, img.good_png_len);
    uint8_t *idat = memmem(bad, img.good_png_len, "IDAT", 4);
    idat[8] ^= 0x55;
    write_rel("img/corrupt.png", bad, img.good_png_len);
    free(bad);
    write_rel("img/text.jpg", "not an image", 12);
    write_rel("outside.jpg", img.good_jpg, img.good_jpg_len);
}

typedef struct run_result {
    int          rc;
    adapt_error  err;
    import_stats stats;
    char         out[PATH_MAX];
} run_result;

/* Imports the given annotation files (relative to tmp) into a fresh output directory. */
static void run(run_result *r, const char *const *inputs, size_t n, import_format format,
                int skip, int full, int jobs, uint64_t shard_size)
{
    char paths[8][PATH_MAX];
    const char *ptrs[8];
    for (size_t i = 0; i < n; i++) {
        path_in(paths[i], sizeof paths[i], inputs[i]);
        ptrs[i] = paths[i];
    }
    char root[PATH_MAX];
    path_in(root, sizeof root, "img");
    snprintf(r->out, sizeof r->out, "%s/out%d", tmp, run_no++);
    import_options opt = {.inputs = ptrs, .n_inputs = n, .format = format, .images_root = root,
                          .out_dir = r->out, .shard_size = shard_size, .jobs = jobs,
                          .validate_full = full, .skip_bad = skip, .zstd_level = 3};
    memset(&r->err, 0, sizeof r->err);
    r->rc = import_run(&opt, &r->stats, &r->err);
}

static corpus *open_out(const run_result *r)
{
    corpus *c = NULL;
    adapt_error err = {0};
    CHECK_MSG(corpus_open(&c, r->out, &err) == 0, "%s", err.message);
    return c;
}

static Adaptd__Sample *read_rec(corpus *c, uint64_t i)
{
    Adaptd__Sample *s = NULL;
    adapt_error err = {0};
    CHECK_MSG(corpus_read(c, i, &s, &err) == 0, "%s", err.message);
    return s;
}

static int image_is(const Adaptd__Sample *s, const uint8_t *bytes, size_t len)
{
    return s && s->image.len == len && !memcmp(s->image.data, bytes, len);
}

/* A failed run leaves no corpus, no partial directory and no report. */
static void check_nothing_left(const run_result *r)
{
    char p[PATH_MAX + 32];
    CHECK(!fx_exists(r->out));
    snprintf(p, sizeof p, "%s.partial", r->out);
    CHECK(!fx_exists(p));
    snprintf(p, sizeof p, "%s.skipped.jsonl", r->out);
    CHECK(!fx_exists(p));
    snprintf(p, sizeof p, "%s.skipped.jsonl.tmp", r->out);
    CHECK(!fx_exists(p));
}

static void test_llava_json(void)
{
    write_text("ann.json",
        "[\n"
        " {\"id\": \"a\", \"image\": \"good.jpg\", \"conversations\": ["
        "{\"from\": \"human\", \"value\": \"<image>\\nDescribe.\"}, {\"from\": \"gpt\", \"value\": \"A grad.\"}]},\n"
        " {\"image\": \"good.png\", \"caption\": \"cap two\", \"conversations\": []},\n"
        " {\"id\": \"nfc\", \"image\": \"caf" NFC_E ".jpg\", \"conversations\": ["
        "{\"from\": \"gpt\", \"value\": \"caf" NFC_E " \xE6\xBC\xA2\xE5\xAD\x97 \xE2\x98\x95\"}]},\n"
        " {\"id\": \"nfd\", \"image\": \"caf" NFD_E ".jpg\", \"caption\": \"caf" NFD_E "\"}\n"
        "]\n");
    run_result r;
    const char *in[] = {"ann.json"};
    run(&r, in, 1, IMPORT_FORMAT_AUTO, 0, 1, 2, 3);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);
    CHECK(r.stats.records_read == 4 && r.stats.records_written == 4);
    corpus *c = open_out(&r);
    if (!c) return;
    const Adaptd__Manifest *m = corpus_manifest(c);
    CHECK(m->record_count == 4 && m->n_shards == 2);
    CHECK(m->n_shards == 2 && m->shards[0]->records == 3 && m->shards[1]->records == 1);
    CHECK(m->provenance && !strcmp(m->provenance->source_format, "llava_json"));
    CHECK(m->provenance && !strcmp(m->provenance->on_bad, "fail") &&
          !strcmp(m->provenance->validate, "full"));
    Adaptd__Sample *s = read_rec(c, 0);
    CHECK(s && !strcmp(s->id, "a") && image_is(s, img.good_jpg, img.good_jpg_len));
    CHECK(s && !strcmp(s->media_type, "image/jpeg") && s->width == 32 && s->height == 24);
    CHECK(s && !strcmp(s->caption, "A grad.") && s->n_turns == 2);
    CHECK(s && s->n_turns == 2 && s->turns[0]->role == ADAPTD__TURN__ROLE__ROLE_USER &&
          !strcmp(s->turns[0]->text, "<image>\nDescribe.") &&
          s->turns[1]->role == ADAPTD__TURN__ROLE__ROLE_ASSISTANT);
    CHECK(s && s->source && !strcmp(s->source->format, "llava_json") &&
          s->source->record == 0 && !strcmp(s->source->image, "good.jpg"));
    adaptd__sample__free_unpacked(s, NULL);
    s = read_rec(c, 1);
    CHECK(s && !strcmp(s->id, "ann.json:1") && image_is(s, img.good_png, img.good_png_len));
    CHECK(s && !strcmp(s->media_type, "image/png") && s->width == 20 && s->height == 10);
    CHECK(s && !strcmp(s->caption, "cap two") && s->n_turns == 0);
    adaptd__sample__free_unpacked(s, NULL);
    s = read_rec(c, 2);
    CHECK(s && image_is(s, img.nfc, img.nfc_len) && s->width == 40);
    CHECK(s && !strcmp(s->caption, "caf" NFC_E " \xE6\xBC\xA2\xE5\xAD\x97 \xE2\x98\x95"));
    CHECK(s && s->source && !strcmp(s->source->image, "caf" NFC_E ".jpg"));
    adaptd__sample__free_unpacked(s, NULL);
    s = read_rec(c, 3);
    CHECK(s && image_is(s, img.nfd, img.nfd_len) && s->width == 48);
    CHECK(s && !strcmp(s->caption, "caf" NFD_E) && !strcmp(s->source->image, "caf" NFD_E ".jpg"));
    adaptd__sample__free_unpacked(s, NULL);
    corpus_close(c);
}

/* One bad record after a good one, in --on-bad fail: the message says where and why. */
static void expect_fail(const char *name, const char *content, const char *const *needles)
{
    write_rel(name, content, strlen(content));
    run_result r;
    const char *in[] = {name};
    run(&r, in, 1, IMPORT_FORMAT_AUTO, 0, 1, 2, 100);
    CHECK_MSG(r.rc == ADAPT_EINVAL, "%s: rc %d %s", name, r.rc, r.err.message);
    for (const char *const *n = needles; *n; n++) CHECK_STR_CONTAINS(r.err.message, *n);
    check_nothing_left(&r);
}

#define GOOD_LINE "{\"image\": \"good.jpg\", \"caption\": \"ok\"}\n"

static void test_fail_mode(void)
{
    expect_fail("f1.jsonl", GOOD_LINE "{\"image\": \"nope.jpg\", \"caption\": \"x\"}\n",
                (const char *[]){"f1.jsonl: record 1 (line 2, byte 39)", "image: missing_file",
                                 "nope.jpg", "No such file", "--on-bad skip", NULL});
    expect_fail("f2.jsonl", GOOD_LINE "{\"image\": \"trunc.jpg\", \"caption\": \"x\"}\n",
                (const char *[]){"record 1", "image: undecodable_image", "trunc.jpg",
                                 "JPEG data", NULL});
    expect_fail("f3.jsonl", GOOD_LINE "{\"image\": \"corrupt.png\", \"caption\": \"x\"}\n",
                (const char *[]){"record 1", "undecodable_image", "PNG data", NULL});
    expect_fail("f4.jsonl", GOOD_LINE "{\"image\": \"text.jpg\", \"caption\": \"x\"}\n",
                (const char *[]){"undecodable_image", "not a JPEG or PNG", NULL});
    expect_fail("f5.jsonl", GOOD_LINE "{\"image\": \"good.png\", \"caption\": \" \\n\"}\n",
                (const char *[]){"record 1", "caption: empty_caption", NULL});
    expect_fail("f6.jsonl", GOOD_LINE "{\"caption\": \"no picture\"}\n",
                (const char *[]){"record 1", "image: no_image", NULL});
    expect_fail("f7.jsonl", GOOD_LINE "\n{\"image\": \"good.jpg\", \"caption\": \"x\"\n",
                (const char *[]){"f7.jsonl: record 1 (line 3, byte 40)", "bad_record",
                                 "malformed JSON at line 3, column 36, byte 75", NULL});
    expect_fail("f8.jsonl", GOOD_LINE "{\"image\": \"../outside.jpg\", \"caption\": \"x\"}\n",
                (const char *[]){"image: image_outside_root", "../outside.jpg", NULL});
    expect_fail("f9.jsonl", "{\"id\": \"x\", \"image\": \"good.jpg\", \"caption\": \"a\"}\n"
                            "{\"id\": \"x\", \"image\": \"good.png\", \"caption\": \"b\"}\n",
                (const char *[]){"record 1", "id: duplicate_id", "\"x\"", NULL});
    expect_fail("f10.json", "[" GOOD_LINE ", {\"image\": \"good.jpg\", \"caption\": 3}]",
                (const char *[]){"f10.json: record 1 (line 2, byte 42)", "caption: bad_record",
                                 NULL});
    /* A broken array cannot be skipped past: fatal even with skip. */
    write_rel("f11.json", "[" GOOD_LINE ", {\"image\": \"good.jpg\"", 60);
    run_result r;
    const char *in[] = {"f11.json"};
    run(&r, in, 1, IMPORT_FORMAT_AUTO, 1, 1, 2, 100);
    CHECK(r.rc == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(r.err.message, "not a JSON array");
    check_nothing_left(&r);
    /* A missing annotation file. */
    const char *missing[] = {"absent.jsonl"};
    run(&r, missing, 1, IMPORT_FORMAT_AUTO, 0, 1, 1, 100);
    CHECK(r.rc == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(r.err.message, "absent.jsonl");
    check_nothing_left(&r);
}

static void test_skip_mode(void)
{
    write_text("mixed.jsonl",
              "{\"id\": \"g1\", \"image\": \"good.jpg\", \"caption\": \"one\"}\n"
              "{\"image\": \"nope.jpg\", \"caption\": \"x\"}\n"
              "{\"image\": \"trunc.jpg\", \"caption\": \"x\"}\n"
              "{\"image\": \"corrupt.png\", \"caption\": \"x\"}\n"
              "{\"id\": \"g2\", \"image\": \"good.png\", \"caption\": \"two\"}\n"
              "{\"image\": \"good.png\", \"caption\": \"\"}\n"
              "{\"caption\": \"no picture\"}\n"
              "{not json at all\n"
              "{\"image\": \"/etc/passwd\", \"caption\": \"x\"}\n"
              "{\"id\": \"g1\", \"image\": \"good.png\", \"caption\": \"dup\"}\n"
              "{\"id\": \"g3\", \"image\": \"caf" NFD_E ".jpg\", \"caption\": \"three\"}\n");
    run_result r;
    const char *in[] = {"mixed.jsonl"};
    run(&r, in, 1, IMPORT_FORMAT_AUTO, 1, 1, 3, 2);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);
    CHECK(r.stats.records_read == 11 && r.stats.records_written == 3 &&
          r.stats.records_skipped == 8);
    CHECK(r.stats.skips[IMPORT_REASON_MISSING_FILE] == 1);
    CHECK(r.stats.skips[IMPORT_REASON_UNDECODABLE_IMAGE] == 2);
    CHECK(r.stats.skips[IMPORT_REASON_EMPTY_CAPTION] == 1);
    CHECK(r.stats.skips[IMPORT_REASON_NO_IMAGE] == 1);
    CHECK(r.stats.skips[IMPORT_REASON_BAD_RECORD] == 1);
    CHECK(r.stats.skips[IMPORT_REASON_OUTSIDE_ROOT] == 1);
    CHECK(r.stats.skips[IMPORT_REASON_DUPLICATE_ID] == 1);
    corpus *c = open_out(&r);
    if (!c) return;
    const Adaptd__Manifest *m = corpus_manifest(c);
    CHECK(m->record_count == 3 && m->n_shards == 2);
    const Adaptd__ImportProvenance *p = m->provenance;
    CHECK(p && p->records_read == 11 && p->records_skipped == 8 && p->n_skips == 7);
    CHECK(p && !strcmp(p->on_bad, "skip") && !strcmp(p->source_format, "caption_jsonl"));
    uint64_t sum = 0;
    for (size_t i = 0; p && i < p->n_skips; i++) {
        sum += p->skips[i]->count;
        if (!strcmp(p->skips[i]->reason, "undecodable_image")) CHECK(p->skips[i]->count == 2);
    }
    CHECK(sum == 8);
    char base[PATH_MAX];
    snprintf(base, sizeof base, "out%d.skipped.jsonl", run_no - 1);
    CHECK(p && !strcmp(p->skip_report, base));
    const char *ids[] = {"g1", "g2", "g3"};
    for (int i = 0; i < 3; i++) {
        Adaptd__Sample *s = read_rec(c, (uint64_t)i);
        CHECK(s && !strcmp(s->id, ids[i]));
        adaptd__sample__free_unpacked(s, NULL);
    }
    corpus_close(c);

    size_t len;
    char *report = (char *)fx_read(r.stats.report_path, &len);
    CHECK(report != NULL);
    if (!report) return;
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += report[i] == '\n';
    CHECK(lines == 8);
    CHECK_STR_CONTAINS(report, "\"record\":1,\"line\":2,");
    CHECK_STR_CONTAINS(report, "\"reason\":\"missing_file\",\"field\":\"image\"");
    CHECK_STR_CONTAINS(report, "\"reason\":\"undecodable_image\"");
    CHECK_STR_CONTAINS(report, "\"reason\":\"empty_caption\"");
    CHECK_STR_CONTAINS(report, "\"reason\":\"no_image\"");
    CHECK_STR_CONTAINS(report, "\"reason\":\"bad_record\"");
    CHECK_STR_CONTAINS(report, "malformed JSON at line 8");
    CHECK_STR_CONTAINS(report, "\"reason\":\"image_outside_root\"");
    CHECK_STR_CONTAINS(report, "\"id\":\"g1\",\"reason\":\"duplicate_id\"");
    CHECK_STR_CONTAINS(report, "\"id\":\"mixed.jsonl:1\"");
    free(report);
}

static void test_validate_header(void)
{
    write_text("hdr.jsonl", "{\"image\": \"trunc.jpg\", \"caption\": \"cut\"}\n");
    run_result r;
    const char *in[] = {"hdr.jsonl"};
    run(&r, in, 1, IMPORT_FORMAT_CAPTION_JSONL, 0, 0, 1, 10);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);   /* the header is intact */
    corpus *c = open_out(&r);
    if (c) {
        Adaptd__Sample *s = read_rec(c, 0);
        CHECK(s && s->width == 160 && s->height == 120 && s->image.len == img.big_len * 9 / 10);
        CHECK(s && s->source && !strcmp(s->source->format, "caption_jsonl"));
        adaptd__sample__free_unpacked(s, NULL);
        corpus_close(c);
    }
    run(&r, in, 1, IMPORT_FORMAT_CAPTION_JSONL, 0, 1, 1, 10);
    CHECK(r.rc == ADAPT_EINVAL);
}

static void test_sizes(void)
{
    run_result r;
    write_rel("zero.json", "[]", 2);
    const char *z[] = {"zero.json"};
    run(&r, z, 1, IMPORT_FORMAT_AUTO, 0, 1, 2, 10);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);
    corpus *c = open_out(&r);
    if (c) CHECK(corpus_count(c) == 0 && corpus_manifest(c)->n_shards == 0);
    corpus_close(c);
    write_rel("zero.jsonl", "\n\n", 2);
    const char *zl[] = {"zero.jsonl"};
    run(&r, zl, 1, IMPORT_FORMAT_AUTO, 1, 1, 2, 10);
    CHECK_MSG(r.rc == 0 && r.stats.records_read == 0, "%s", r.err.message);

    write_rel("one.jsonl", GOOD_LINE, strlen(GOOD_LINE));
    const char *o[] = {"one.jsonl"};
    run(&r, o, 1, IMPORT_FORMAT_AUTO, 0, 1, 4, 1);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);
    c = open_out(&r);
    if (c) CHECK(corpus_count(c) == 1 && corpus_manifest(c)->n_shards == 1);
    corpus_close(c);

    /* 4 records in shards of 2: exactly two full shards, no empty third. */
    write_rel("four.jsonl", GOOD_LINE GOOD_LINE GOOD_LINE GOOD_LINE, 4 * strlen(GOOD_LINE));
    const char *f[] = {"four.jsonl"};
    run(&r, f, 1, IMPORT_FORMAT_AUTO, 0, 1, 2, 2);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);
    c = open_out(&r);
    if (c) {
        const Adaptd__Manifest *m = corpus_manifest(c);
        CHECK(m->n_shards == 2 && m->shards[0]->records == 2 && m->shards[1]->records == 2);
        Adaptd__Sample *s = read_rec(c, 3);
        CHECK(s && !strcmp(s->id, "four.jsonl:3"));
        adaptd__sample__free_unpacked(s, NULL);
    }
    corpus_close(c);
}

static void test_webdataset(void)
{
    fx_tar a = {0}, b = {0};
    const char *json = "{\"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nQ?\"}, "
                       "{\"from\": \"gpt\", \"value\": \"ans " NFC_E "\"}]}";
    fx_tar_file(&a, "k1.jpg", img.good_jpg, img.good_jpg_len);
    fx_tar_file(&a, "k1.txt", "caption one\n", 12);
    fx_tar_file(&a, "d/k2.png", img.good_png, img.good_png_len);
    fx_tar_file(&a, "d/k2.json", json, strlen(json));
    fx_tar_file(&a, "k3.b.c.jpg", img.good_jpg, img.good_jpg_len);
    fx_tar_file(&a, "k3.b.c.txt", "x", 1);
    fx_tar_end(&a);
    fx_tar_file(&b, "k4.jpeg", img.nfd, img.nfd_len);
    fx_tar_file(&b, "k4.txt", "four", 4);
    fx_tar_file(&b, "k1.jpg", img.good_jpg, img.good_jpg_len);
    fx_tar_file(&b, "k1.txt", "again", 5);
    fx_tar_end(&b);
    write_rel("a.tar", a.p, a.len);
    write_rel("b.tar", b.p, b.len);
    free(a.p);
    free(b.p);
    run_result r;
    const char *in[] = {"a.tar", "b.tar"};
    run(&r, in, 2, IMPORT_FORMAT_AUTO, 1, 1, 2, 1000);
    CHECK_MSG(r.rc == 0, "%s", r.err.message);
    CHECK(r.stats.records_read == 5 && r.stats.records_written == 3);
    CHECK(r.stats.skips[IMPORT_REASON_NO_IMAGE] == 1 && r.stats.skips[IMPORT_REASON_DUPLICATE_ID] == 1);
    corpus *c = open_out(&r);
    if (!c) return;
    Adaptd__Sample *s = read_rec(c, 0);
    CHECK(s && !strcmp(s->id, "k1") && !strcmp(s->caption, "caption one") &&
          image_is(s, img.good_jpg, img.good_jpg_len));
    CHECK(s && s->source && !strcmp(s->source->format, "webdataset") &&
          !strcmp(s->source->image, "k1.jpg"));
    adaptd__sample__free_unpacked(s, NULL);
    s = read_rec(c, 1);
    CHECK(s && !strcmp(s->id, "d/k2") && !strcmp(s->caption, "ans " NFC_E) && s->n_turns == 2);
    CHECK(s && !strcmp(s->media_type, "image/png"));
    adaptd__sample__free_unpacked(s, NULL);
    s = read_rec(c, 2);
    CHECK(s && !strcmp(s->id, "k4") && image_is(s, img.nfd, img.nfd_len));
    CHECK(s && s->source && s->source->record == 0 && strstr(s->source->file, "b.tar"));
    adaptd__sample__free_unpacked(s, NULL);
    CHECK(!strcmp(corpus_manifest(c)->provenance->source_format, "webdataset"));
    corpus_close(c);

    /* In fail mode the key with no image stops the import, named by tar file and key. */
    run(&r, in, 2, IMPORT_FORMAT_AUTO, 0, 1, 2, 1000);
    CHECK(r.rc == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(r.err.message, "a.tar: record 2");
    CHECK_STR_CONTAINS(r.err.message, "key k3");
    CHECK_STR_CONTAINS(r.err.message, "no_image");
}

/* The corpus does not depend on the number of threads. */
static void test_jobs_deterministic(void)
{
    char lines[4096] = "";
    for (int i = 0; i < 40; i++)
        strcat(lines, i % 3 ? GOOD_LINE : "{\"image\": \"good.png\", \"caption\": \"p\"}\n");
    write_rel("many.jsonl", lines, strlen(lines));
    const char *in[] = {"many.jsonl"};
    run_result r1, r4;
    run(&r1, in, 1, IMPORT_FORMAT_AUTO, 0, 1, 1, 7);
    run(&r4, in, 1, IMPORT_FORMAT_AUTO, 0, 1, 4, 7);
    CHECK(r1.rc == 0 && r4.rc == 0);
    corpus *c1 = open_out(&r1), *c4 = open_out(&r4);
    if (c1 && c4) {
        const Adaptd__Manifest *m1 = corpus_manifest(c1), *m4 = corpus_manifest(c4);
        CHECK(m1->n_shards == 6 && m4->n_shards == 6);
        for (size_t s = 0; s < m1->n_shards && s < m4->n_shards; s++)
            CHECK(m1->shards[s]->crc32c == m4->shards[s]->crc32c);
    }
    corpus_close(c1);
    corpus_close(c4);
    /* An output directory that exists is refused before anything is read. */
    import_options opt = {.inputs = (const char *[]){"x"}, .n_inputs = 1, .out_dir = r1.out,
                          .shard_size = 1, .jobs = 1, .zstd_level = 3};
    import_stats st;
    adapt_error err = {0};
    CHECK(import_run(&opt, &st, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "already exists");
}

int main(void)
{
    if (!mkdtemp(tmp)) return 2;
    make_images();
    test_llava_json();
    test_fail_mode();
    test_skip_mode();
    test_validate_header();
    test_sizes();
    test_webdataset();
    test_jobs_deterministic();
    fx_rm_tree(tmp);
    free(img.good_jpg);
    free(img.good_png);
    free(img.nfc);
    free(img.nfd);
    free(img.big);
    return check_report("import_pipeline");
}
