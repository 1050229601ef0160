/* corpus: building and reading corpus directories — 0, 1, an exact multiple of the shard size
 * and not; a builder that is aborted or dies leaves nothing corpus_open accepts; every byte of a
 * manifest flipped or cut is caught; forged manifests with a valid checksum but wrong counts,
 * offsets, paths or sizes are refused; different shards are read from two threads at once. */
#include "../check.h"
#include "corpus.h"
#include "crc32c.h"
#include "shard_fixture.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

static char tmpdir[64];

static size_t image_size(uint64_t i) { return 200 + (size_t)(i % 13) * 17; }

static int build(const char *dir, uint64_t n, uint64_t shard_size, int use_frames)
{
    adapt_error err = {0};
    corpus_builder *b;
    if (corpus_builder_open(&b, dir, "t\u00e9st corpus", shard_size, 3, &err) != 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        fixture_sample f;
        fixture_sample_make(&f, i, image_size(i));
        int rc;
        if (use_frames) {
            uint8_t *frame;
            size_t len;
            rc = shard_frame_encode(&f.s, 3, &frame, &len, &err);
            if (rc == 0) rc = corpus_builder_add_frame(b, frame, len, &err);
            free(frame);
        } else {
            rc = corpus_builder_add(b, &f.s, &err);
        }
        fixture_sample_free(&f);
        if (rc) {
            fprintf(stderr, "%s\n", err.message);
            corpus_builder_abort(b);
            return -1;
        }
    }
    if (corpus_builder_count(b) != n) return -1;
    Adaptd__ImportProvenance prov = ADAPTD__IMPORT_PROVENANCE__INIT;
    prov.tool = (char *)"test_corpus";
    prov.records_read = n;
    if (corpus_builder_finish(b, &prov, &err) != 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    return 0;
}

static void verify(const char *dir, uint64_t n, uint64_t shard_size)
{
    adapt_error err = {0};
    corpus *c;
    int rc = corpus_open(&c, dir, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc) return;
    const Adaptd__Manifest *m = corpus_manifest(c);
    uint64_t shards = (n + shard_size - 1) / shard_size;
    CHECK(corpus_count(c) == n && m->record_count == n);
    CHECK(m->n_shards == shards);
    CHECK(m->format_version == CORPUS_FORMAT_VERSION);
    CHECK(strcmp(m->corpus_name, "t\u00e9st corpus") == 0);
    CHECK(m->provenance && strcmp(m->provenance->tool, "test_corpus") == 0);
    CHECK(m->created_unix > 0);
    for (size_t s = 0; s < m->n_shards; s++) {
        char want[48];
        snprintf(want, sizeof want, "shards/%05zu.shard", s);
        CHECK(strcmp(m->shards[s]->path, want) == 0);
        CHECK(m->shards[s]->first_record == s * shard_size);
        CHECK(m->shards[s]->records == (s + 1 < shards ? shard_size : n - s * shard_size));
        shard_reader *r;
        CHECK(corpus_shard(c, s, &r, &err) == 0);
        uint32_t crc;
        CHECK(shard_reader_check(r, &crc, &err) == 0 && crc == m->shards[s]->crc32c);
        CHECK(shard_reader_size(r) == m->shards[s]->bytes);
    }
    int bad = 0;
    for (uint64_t g = 0; g < n; g++) {
        fixture_sample f;
        fixture_sample_make(&f, g, image_size(g));
        Adaptd__Sample *s = NULL;
        uint64_t sh, rec;
        if (corpus_locate(c, g, &sh, &rec, &err) != 0 || sh != g / shard_size ||
            rec != g % shard_size)
            bad++;
        if (corpus_read(c, g, &s, &err) != 0 || !fixture_sample_equal(&f.s, s)) bad++;
        if (s) adaptd__sample__free_unpacked(s, NULL);
        fixture_sample_free(&f);
    }
    CHECK_MSG(bad == 0, "%d records wrong in %s", bad, dir);
    Adaptd__Sample *s;
    uint64_t sh, rec;
    CHECK(corpus_read(c, n, &s, &err) == ADAPT_ERANGE);
    CHECK(corpus_locate(c, n, &sh, &rec, &err) == ADAPT_ERANGE);
    shard_reader *r;
    CHECK(corpus_shard(c, shards, &r, &err) == ADAPT_ERANGE);
    corpus_close(c);
}

static void test_sizes(void)
{
    static const struct { uint64_t n, shard_size; int frames; } cases[] = {
        { 0, 4, 0 }, { 1, 4, 0 }, { 1, 1, 1 }, { 12, 4, 0 }, { 13, 4, 1 }, { 12, 5, 1 },
        { 40, 1000, 0 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char dir[256], partial[300];
        snprintf(dir, sizeof dir, "%s/c%zu", tmpdir, k);
        snprintf(partial, sizeof partial, "%s.partial", dir);
        CHECK(build(dir, cases[k].n, cases[k].shard_size, cases[k].frames) == 0);
        CHECK(!fixture_exists(partial));
        verify(dir, cases[k].n, cases[k].shard_size);
    }
}

static void test_builder_refusals(void)
{
    adapt_error err;
    corpus_builder *b;
    char dir[256], partial[300];
    snprintf(dir, sizeof dir, "%s/c1", tmpdir);               /* built by test_sizes */
    CHECK(corpus_builder_open(&b, dir, NULL, 4, 3, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "already exists");
    snprintf(dir, sizeof dir, "%s/fresh", tmpdir);
    CHECK(corpus_builder_open(&b, dir, NULL, 0, 3, &err) == ADAPT_EINVAL);
    CHECK(corpus_builder_open(&b, dir, NULL, 4, 99, &err) == ADAPT_EINVAL);
    CHECK(!fixture_exists(dir));

    /* A bad record leaves the builder usable; trailing slashes name the same directory. */
    char slashed[300];
    snprintf(slashed, sizeof slashed, "%s//", dir);
    CHECK(corpus_builder_open(&b, slashed, NULL, 4, 3, &err) == 0);
    snprintf(partial, sizeof partial, "%s.partial", dir);
    CHECK(fixture_exists(partial));
    fixture_sample f;
    fixture_sample_make(&f, 0, 10);
    f.s.id = NULL;
    CHECK(corpus_builder_add(b, &f.s, &err) == ADAPT_EINVAL);
    f.s.id = f.id;
    CHECK(corpus_builder_add(b, &f.s, &err) == 0);
    fixture_sample_free(&f);
    CHECK(corpus_builder_finish(b, NULL, &err) == 0);
    corpus *c;
    CHECK(corpus_open(&c, dir, &err) == 0);
    if (c) {
        CHECK(corpus_count(c) == 1 && strcmp(corpus_manifest(c)->corpus_name, "fresh") == 0);
        CHECK(corpus_manifest(c)->provenance == NULL);
        corpus_close(c);
    }
}

/* Aborted or dead builders: no directory under the final name, nothing corpus_open accepts. */
static void test_atomicity(void)
{
    adapt_error err;
    char dir[256], partial[300];
    snprintf(dir, sizeof dir, "%s/aborted", tmpdir);
    snprintf(partial, sizeof partial, "%s.partial", dir);
    corpus_builder *b;
    CHECK(corpus_builder_open(&b, dir, NULL, 3, 3, &err) == 0);
    for (uint64_t i = 0; i < 7; i++) {
        fixture_sample f;
        fixture_sample_make(&f, i, 50);
        CHECK(corpus_builder_add(b, &f.s, &err) == 0);
        fixture_sample_free(&f);
    }
    corpus_builder_abort(b);
    CHECK(!fixture_exists(dir) && !fixture_exists(partial));
    corpus_builder_abort(NULL);
    corpus *c;
    CHECK(corpus_open(&c, dir, &err) == ADAPT_ENOTFOUND);

    pid_t pid = fork();
    if (pid == 0) {
        corpus_builder *cb;
        if (corpus_builder_open(&cb, dir, NULL, 3, 3, NULL) != 0) _exit(2);
        for (uint64_t i = 0; i < 7; i++) {
            fixture_sample f;
            fixture_sample_make(&f, i, 50);
            if (corpus_builder_add(cb, &f.s, NULL) != 0) _exit(3);
        }
        _exit(0);   /* dies before finish, with two full shards written */
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(!fixture_exists(dir) && fixture_exists(partial));
    CHECK(corpus_open(&c, dir, &err) == ADAPT_ENOTFOUND);
    CHECK(corpus_open(&c, partial, &err) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "never finished");
    CHECK(corpus_builder_open(&b, dir, NULL, 3, 3, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "interrupted");
    CHECK_STR_CONTAINS(err.message, partial);
    fixture_rm_tree(partial);
    CHECK(build(dir, 2, 3, 0) == 0);
    verify(dir, 2, 3);
}

/* A write error while building (a file size limit, in a child): the builder reports it and,
 * after abort, neither the corpus nor its partial directory is left. */
static void test_write_failure(void)
{
    char dir[256], partial[300];
    snprintf(dir, sizeof dir, "%s/full", tmpdir);
    snprintf(partial, sizeof partial, "%s.partial", dir);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = { 1u << 20, 1u << 20 };
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(10);
        adapt_error err = {0};
        corpus_builder *b;
        if (corpus_builder_open(&b, dir, NULL, 3, 1, &err) != 0) _exit(11);
        int rc = 0;
        for (uint64_t i = 0; rc == 0 && i < 100; i++) {
            fixture_sample f;
            fixture_sample_make(&f, i, 400000);
            rc = corpus_builder_add(b, &f.s, &err);
            fixture_sample_free(&f);
        }
        if (rc != ADAPT_EIO) _exit(12);
        corpus_builder_abort(b);
        _exit(fixture_exists(dir) || fixture_exists(partial) ? 13 : 0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

/* Every flipped byte and every truncation of manifest.pb is refused. */
static void test_manifest_bytes(void)
{
    char dir[256], mpath[300];
    snprintf(dir, sizeof dir, "%s/mbytes", tmpdir);
    snprintf(mpath, sizeof mpath, "%s/manifest.pb", dir);
    CHECK(build(dir, 5, 2, 0) == 0);
    size_t len;
    uint8_t *orig = fixture_read_file(mpath, &len);
    CHECK(orig && len > 10);
    if (!orig) return;
    uint8_t *copy = malloc(len);
    adapt_error err;
    corpus *c;
    int accepted = 0, unnamed = 0;
    static const uint8_t masks[] = { 0x01, 0x80, 0xFF };
    for (size_t pos = 0; pos < len; pos++)
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(copy, orig, len);
            copy[pos] ^= masks[m];
            fixture_write_file(mpath, copy, len);
            if (corpus_open(&c, dir, &err) == 0) {
                accepted++;
                corpus_close(c);
            } else if (!strstr(err.message, mpath)) {
                unnamed++;
            }
        }
    CHECK_MSG(accepted == 0, "%d flipped manifests accepted", accepted);
    CHECK_MSG(unnamed == 0, "%d errors without the manifest path", unnamed);
    accepted = 0;
    for (size_t cut = 0; cut < len; cut++) {
        fixture_write_file(mpath, orig, cut);
        if (corpus_open(&c, dir, &err) == 0) {
            accepted++;
            corpus_close(c);
        }
    }
    CHECK_MSG(accepted == 0, "%d truncated manifests accepted", accepted);
    /* A manifest without the checksum trailer (plain protobuf) is refused as well. */
    fixture_write_file(mpath, orig, len - 5);
    CHECK(corpus_open(&c, dir, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "checksum");
    fixture_write_file(mpath, orig, len);
    CHECK(corpus_open(&c, dir, &err) == 0);
    corpus_close(c);
    uint32_t crc;
    Adaptd__Manifest *m;
    CHECK(corpus_manifest_load(mpath, &m, &crc, &err) == 0 && crc == crc32c(orig, len));
    adaptd__manifest__free_unpacked(m, NULL);
    free(copy);
    free(orig);
}

/* Manifests with a valid checksum that lie about the corpus. */
static void test_manifest_forged(void)
{
    char dir[256], mpath[300], shard1[300], moved[300];
    snprintf(dir, sizeof dir, "%s/mforged", tmpdir);
    snprintf(mpath, sizeof mpath, "%s/manifest.pb", dir);
    snprintf(shard1, sizeof shard1, "%s/shards/00001.shard", dir);
    snprintf(moved, sizeof moved, "%s/moved.shard", dir);
    CHECK(build(dir, 5, 2, 0) == 0);
    adapt_error err;
    Adaptd__Manifest *m;
    CHECK(corpus_manifest_load(mpath, &m, NULL, &err) == 0);
    if (!m) return;
    corpus *c;
    Adaptd__ShardInfo *s1 = m->shards[1];

#define EXPECT_REFUSED(code, fragment) do {                                                  \
        CHECK(corpus_manifest_save(mpath, m, NULL, &err) == 0);                              \
        int rc_ = corpus_open(&c, dir, &err);                                                \
        if (rc_ == 0) {                                                                      \
            shard_reader *r_;                                                                \
            for (uint64_t s_ = 0; rc_ == 0 && s_ < m->n_shards; s_++)                        \
                rc_ = corpus_shard(c, s_, &r_, &err);                                        \
            corpus_close(c);                                                                 \
        }                                                                                    \
        CHECK_MSG(rc_ == (code), "%s: got %d: %s", fragment, rc_, err.message);              \
        CHECK_STR_CONTAINS(err.message, fragment);                                           \
    } while (0)

    m->format_version = 2;
    EXPECT_REFUSED(ADAPT_EVERSION, "version 2");
    m->format_version = CORPUS_FORMAT_VERSION;
    m->record_count = 6;
    EXPECT_REFUSED(ADAPT_ECORRUPT, "record_count");
    m->record_count = 5;
    s1->first_record = 3;
    EXPECT_REFUSED(ADAPT_ECORRUPT, "first_record");
    s1->first_record = 2;
    char *path = s1->path;
    s1->path = (char *)"../mforged/shards/00001.shard";
    EXPECT_REFUSED(ADAPT_ECORRUPT, "'..'");
    s1->path = (char *)"/etc/passwd";
    EXPECT_REFUSED(ADAPT_ECORRUPT, "absolute");
    s1->path = path;
    s1->bytes += 1;
    EXPECT_REFUSED(ADAPT_ECORRUPT, "the manifest says");
    s1->bytes -= 1;
    /* Same size, different record count: caught when the shard is opened. */
    s1->records = 1;
    m->shards[2]->first_record = 3;
    m->record_count = 4;
    EXPECT_REFUSED(ADAPT_ECORRUPT, "holds 2 records");
    s1->records = 0;
    m->shards[2]->first_record = 2;
    m->record_count = 3;
    EXPECT_REFUSED(ADAPT_ECORRUPT, "no records");
    s1->records = 2;
    m->shards[2]->first_record = 4;
    m->record_count = 5;
    CHECK(rename(shard1, moved) == 0);
    EXPECT_REFUSED(ADAPT_ENOTFOUND, "00001.shard");
    CHECK(rename(moved, shard1) == 0);
    EXPECT_REFUSED(ADAPT_OK, "");
#undef EXPECT_REFUSED
    adaptd__manifest__free_unpacked(m, NULL);
    verify(dir, 5, 2);
}

/* Two threads read disjoint sets of shards of one corpus at the same time. */
typedef struct reader_job {
    corpus  *c;
    uint64_t parity;
    uint64_t shard_size;
    int      bad;
} reader_job;

static void *reader_thread(void *arg)
{
    reader_job *j = arg;
    for (int pass = 0; pass < 3; pass++)
        for (uint64_t g = 0; g < corpus_count(j->c); g++) {
            if ((g / j->shard_size) % 2 != j->parity) continue;
            fixture_sample f;
            fixture_sample_make(&f, g, image_size(g));
            Adaptd__Sample *s = NULL;
            adapt_error err;
            if (corpus_read(j->c, g, &s, &err) != 0 || !fixture_sample_equal(&f.s, s)) j->bad++;
            if (s) adaptd__sample__free_unpacked(s, NULL);
            fixture_sample_free(&f);
        }
    return NULL;
}

static void test_threads(void)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/threads", tmpdir);
    CHECK(build(dir, 64, 8, 1) == 0);
    adapt_error err;
    corpus *c;
    CHECK(corpus_open(&c, dir, &err) == 0);
    if (!c) return;
    reader_job jobs[2] = { { c, 0, 8, 0 }, { c, 1, 8, 0 } };
    pthread_t th[2];
    for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, reader_thread, &jobs[t]);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    CHECK(jobs[0].bad == 0 && jobs[1].bad == 0);
    corpus_close(c);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/adaptd-test-corpus-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sizes();
    test_builder_refusals();
    test_atomicity();
    test_write_failure();
    test_manifest_bytes();
    test_manifest_forged();
    test_threads();
    fixture_rm_tree(tmpdir);
    return check_report("corpus");
}
