/* shard: round trips (random access, streaming and the whole-file check agree with what was
 * written, byte for byte), and every kind of damage a shard can suffer — each byte flipped, each
 * truncation, forged headers, footers, indexes and zstd frames with valid checksums — must be an
 * error naming the file and record, never different data and never a crash. */
#include "../check.h"
#include "crc32c.h"
#include "shard.h"
#include "shard_fixture.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <zstd.h>

static char tmpdir[64];

static void path_in_tmp(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

/* Writes n records with image sizes from size_of(i); returns 0 on success. */
static int write_shard(const char *path, uint64_t n, size_t (*size_of)(uint64_t),
                       shard_summary *sum)
{
    adapt_error err = {0};
    shard_writer *w;
    if (shard_writer_open(&w, path, 3, &err) != 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        fixture_sample f;
        fixture_sample_make(&f, i, size_of(i));
        int rc = shard_writer_add(w, &f.s, &err);
        fixture_sample_free(&f);
        if (rc) {
            fprintf(stderr, "%s\n", err.message);
            shard_writer_abort(w);
            return -1;
        }
    }
    if (shard_writer_finish(w, sum, &err) != 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    return 0;
}

static size_t size_small(uint64_t i) { return 16 + (size_t)(i % 7) * 5; }
static size_t size_medium(uint64_t i) { return i % 5 == 0 ? 0 : 1000 + (size_t)i * 37; }
/* Around 0.3 MiB each, one of 5 MiB: streams cross the 4 MiB buffer and must grow it. */
static size_t size_large(uint64_t i) { return i == 7 ? (5u << 20) : 300000 + (size_t)i * 1001; }

/* Reads everything back three ways and compares with fixture records 0..n-1. */
static void verify_shard(const char *path, uint64_t n, size_t (*size_of)(uint64_t),
                         const shard_summary *sum)
{
    adapt_error err = {0};
    shard_reader *r;
    int rc = shard_reader_open(&r, path, &err);
    CHECK_MSG(rc == 0, "open %s: %s", path, err.message);
    if (rc) return;
    CHECK(shard_reader_count(r) == n);
    CHECK(shard_reader_size(r) == sum->bytes);
    CHECK(strcmp(shard_reader_path(r), path) == 0);

    int bad = 0;
    /* Random access in a scrambled order: every read seeks. */
    for (uint64_t k = 0; k < n; k++) {
        uint64_t i = (k * 7919) % n;   /* 7919 is prime: a permutation for these n */
        fixture_sample f;
        fixture_sample_make(&f, i, size_of(i));
        Adaptd__Sample *s = NULL;
        if (shard_reader_read(r, i, &s, &err) != 0 || !fixture_sample_equal(&f.s, s)) {
            bad++;
            fprintf(stderr, "record %llu: %s\n", (unsigned long long)i, err.message);
        }
        if (s) adaptd__sample__free_unpacked(s, NULL);
        fixture_sample_free(&f);
    }
    CHECK_MSG(bad == 0, "%d records differ on random access", bad);

    shard_stream *st;
    CHECK(shard_stream_open(&st, r, &err) == 0);
    uint64_t seen = 0, rec;
    const uint8_t *pb;
    size_t len;
    bad = 0;
    while ((rc = shard_stream_next(st, &rec, &pb, &len, &err)) == 1) {
        fixture_sample f;
        fixture_sample_make(&f, seen, size_of(seen));
        Adaptd__Sample *s = NULL;
        if (rec != seen || shard_sample_unpack(r, rec, pb, len, &s, &err) != 0 ||
            !fixture_sample_equal(&f.s, s))
            bad++;
        if (s) adaptd__sample__free_unpacked(s, NULL);
        fixture_sample_free(&f);
        seen++;
    }
    CHECK_MSG(rc == 0, "stream: %s", err.message);
    CHECK(seen == n);
    CHECK_MSG(bad == 0, "%d records differ when streamed", bad);
    CHECK(shard_stream_next(st, &rec, &pb, &len, &err) == 0);   /* the end stays the end */
    shard_stream_close(st);

    uint32_t crc = 0;
    CHECK_MSG(shard_reader_check(r, &crc, &err) == 0, "check: %s", err.message);
    CHECK(crc == sum->crc32c);
    size_t flen;
    uint8_t *file = fixture_read_file(path, &flen);
    CHECK(file && flen == sum->bytes && crc32c(file, flen) == sum->crc32c);
    free(file);

    const uint8_t *raw;
    CHECK(shard_reader_read_raw(r, n, &raw, &len, &err) == ADAPT_ERANGE);
    CHECK_STR_CONTAINS(err.message, path);
    shard_reader_close(r);
}

static void test_round_trips(void)
{
    static const struct { uint64_t n; size_t (*size_of)(uint64_t); const char *name; } cases[] = {
        { 0,  size_small,  "empty.shard" },
        { 1,  size_small,  "one.shard" },
        { 3,  size_small,  "three.shard" },
        { 64, size_medium, "medium.shard" },
        { 20, size_large,  "large.shard" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[256], tmp[300];
        path_in_tmp(path, sizeof path, cases[c].name);
        shard_summary sum = {0};
        CHECK(write_shard(path, cases[c].n, cases[c].size_of, &sum) == 0);
        CHECK(sum.records == cases[c].n);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CHECK(!fixture_exists(tmp));
        verify_shard(path, cases[c].n, cases[c].size_of, &sum);
    }
}

/* Frames encoded on other threads and appended in order must make the same file as add. */
typedef struct encode_job {
    uint64_t first, step, n;
    uint8_t **frames;
    size_t   *lens;
    int       failed;
} encode_job;

static void *encode_thread(void *arg)
{
    encode_job *j = arg;
    for (uint64_t i = j->first; i < j->n; i += j->step) {
        fixture_sample f;
        fixture_sample_make(&f, i, size_medium(i));
        adapt_error err;
        if (shard_frame_encode(&f.s, 3, &j->frames[i], &j->lens[i], &err) != 0) j->failed = 1;
        fixture_sample_free(&f);
    }
    return NULL;
}

static void test_frames_and_encoded(void)
{
    enum { N = 40 };
    uint8_t *frames[N] = {0};
    size_t lens[N] = {0};
    encode_job jobs[2] = { { 0, 2, N, frames, lens, 0 }, { 1, 2, N, frames, lens, 0 } };
    pthread_t th[2];
    for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, encode_thread, &jobs[t]);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    CHECK(!jobs[0].failed && !jobs[1].failed);

    char a[256], b[256];
    path_in_tmp(a, sizeof a, "frames.shard");
    path_in_tmp(b, sizeof b, "added.shard");
    adapt_error err;
    shard_writer *w;
    shard_summary sa = {0}, sb = {0};
    CHECK(shard_writer_open(&w, a, 3, &err) == 0);
    for (int i = 0; i < N; i++) {
        /* Mix the three ways in: frames, serialized bytes, and whole samples. */
        if (i % 3 == 0) {
            CHECK(shard_writer_add_frame(w, frames[i], lens[i], &err) == 0);
        } else {
            fixture_sample f;
            fixture_sample_make(&f, (uint64_t)i, size_medium((uint64_t)i));
            if (i % 3 == 1) {
                size_t n = adaptd__sample__get_packed_size(&f.s);
                uint8_t *pb = malloc(n);
                adaptd__sample__pack(&f.s, pb);
                CHECK(shard_writer_add_encoded(w, pb, n, &err) == 0);
                free(pb);
            } else {
                CHECK(shard_writer_add(w, &f.s, &err) == 0);
            }
            fixture_sample_free(&f);
        }
        CHECK(shard_writer_count(w) == (uint64_t)i + 1);
    }
    CHECK(shard_writer_finish(w, &sa, &err) == 0);
    CHECK(write_shard(b, N, size_medium, &sb) == 0);
    /* Same level, same input: the files are identical, so the three paths store the same. */
    CHECK(sa.bytes == sb.bytes && sa.crc32c == sb.crc32c);
    verify_shard(a, N, size_medium, &sa);
    for (int i = 0; i < N; i++) free(frames[i]);
}

static void test_writer_refusals(void)
{
    char path[256];
    path_in_tmp(path, sizeof path, "refuse.shard");
    adapt_error err;
    shard_writer *w;
    CHECK(shard_writer_open(&w, path, 1000, &err) == ADAPT_EINVAL);
    CHECK(shard_writer_open(&w, path, 3, &err) == 0);

    fixture_sample f;
    fixture_sample_make(&f, 0, 10);
    f.s.id = (char *)"";
    CHECK(shard_writer_add(w, &f.s, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "no id");
    uint8_t *frame;
    size_t flen;
    CHECK(shard_frame_encode(&f.s, 3, &frame, &flen, &err) == ADAPT_EINVAL && frame == NULL);

    /* Bytes that are not a Sample, or a Sample without id, are refused as serialized input. */
    static const uint8_t junk[] = { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F };
    CHECK(shard_writer_add_encoded(w, junk, sizeof junk, &err) == ADAPT_EINVAL);
    size_t n = adaptd__sample__get_packed_size(&f.s);
    uint8_t *pb = malloc(n);
    adaptd__sample__pack(&f.s, pb);
    CHECK(shard_writer_add_encoded(w, pb, n, &err) == ADAPT_EINVAL);
    free(pb);
    /* Frames that are not one zstd frame with a declared size are refused. */
    CHECK(shard_writer_add_frame(w, junk, sizeof junk, &err) == ADAPT_EINVAL);
    CHECK(shard_frame_encode_raw(junk, sizeof junk, 3, &frame, &flen, &err) == 0);
    uint8_t *twice = malloc(2 * flen);
    memcpy(twice, frame, flen);
    memcpy(twice + flen, frame, flen);
    CHECK(shard_writer_add_frame(w, twice, 2 * flen, &err) == ADAPT_EINVAL);
    free(twice);
    free(frame);

    /* Larger than SHARD_MAX_RECORD_BYTES: refused before any byte of it is touched. */
    uint8_t *huge = calloc(SHARD_MAX_RECORD_BYTES + 1u, 1);
    f.s.id = f.id;
    f.s.image.data = huge;
    f.s.image.len = SHARD_MAX_RECORD_BYTES + 1u;
    CHECK(shard_writer_add(w, &f.s, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "limit");
    free(huge);
    f.s.image.data = f.image;
    f.s.image.len = 10;

    /* After refusals the writer is intact: one good record, and the file reads back. */
    CHECK(shard_writer_count(w) == 0);
    CHECK(shard_writer_add(w, &f.s, &err) == 0);
    shard_summary sum;
    CHECK(shard_writer_finish(w, &sum, &err) == 0);
    fixture_sample_free(&f);
    shard_reader *r;
    CHECK(shard_reader_open(&r, path, &err) == 0 && shard_reader_count(r) == 1);
    shard_reader_close(r);

    /* A writer in a directory that does not exist fails at open, naming the path. */
    char missing[256];
    path_in_tmp(missing, sizeof missing, "no/such/dir.shard");
    CHECK(shard_writer_open(&w, missing, 3, &err) == ADAPT_EIO);
    CHECK_STR_CONTAINS(err.message, "no/such/dir.shard.tmp");
}

/* Aborted and never-finished writers leave nothing under the final name. */
static void test_atomicity(void)
{
    char path[256], tmp[300];
    path_in_tmp(path, sizeof path, "atomic.shard");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    adapt_error err;
    shard_writer *w;
    CHECK(shard_writer_open(&w, path, 3, &err) == 0);
    fixture_sample f;
    fixture_sample_make(&f, 0, 100);
    CHECK(shard_writer_add(w, &f.s, &err) == 0);
    CHECK(fixture_exists(tmp) && !fixture_exists(path));
    shard_writer_abort(w);
    CHECK(!fixture_exists(tmp) && !fixture_exists(path));
    shard_writer_abort(NULL);

    /* A process that dies mid-write: the final name never appears. */
    pid_t pid = fork();
    if (pid == 0) {
        shard_writer *cw;
        if (shard_writer_open(&cw, path, 3, NULL) != 0) _exit(2);
        for (int i = 0; i < 50; i++) shard_writer_add(cw, &f.s, NULL);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(!fixture_exists(path));
    shard_reader *r;
    CHECK(shard_reader_open(&r, path, &err) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, path);
    CHECK(shard_reader_open(&r, tmp, &err) == ADAPT_ECORRUPT);   /* unfinished: no footer */
    CHECK_STR_CONTAINS(err.message, "footer");
    unlink(tmp);
    fixture_sample_free(&f);
}

/* Write errors, injected with a file size limit: the writer reports EIO naming the file, and
 * neither the final name nor the temporary file is left behind. Runs in a child so that the
 * limit does not outlive the test. */
static void test_write_failure(void)
{
    char path[256], tmp[300];
    path_in_tmp(path, sizeof path, "full.shard");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = { 3u << 20, 3u << 20 };
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(10);
        adapt_error err = {0};
        shard_writer *w;
        if (shard_writer_open(&w, path, 1, &err) != 0) _exit(11);
        int rc = 0;
        for (uint64_t i = 0; rc == 0 && i < 100; i++) {
            fixture_sample f;
            fixture_sample_make(&f, i, 200000);
            rc = shard_writer_add(w, &f.s, &err);
            fixture_sample_free(&f);
        }
        if (rc != ADAPT_EIO || !strstr(err.message, tmp)) _exit(12);
        fixture_sample f;
        fixture_sample_make(&f, 0, 10);
        rc = shard_writer_add(w, &f.s, &err);       /* a failed writer stays failed */
        fixture_sample_free(&f);
        if (rc != ADAPT_EIO) _exit(13);
        if (shard_writer_finish(w, NULL, &err) != ADAPT_EIO) _exit(14);
        _exit(fixture_exists(path) || fixture_exists(tmp) ? 15 : 0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

/* A shard cut short while a reader has it open: reads past the cut are errors, not short data. */
static void test_shrunk_while_open(void)
{
    char path[256];
    path_in_tmp(path, sizeof path, "shrinks.shard");
    shard_summary sum;
    CHECK(write_shard(path, 10, size_medium, &sum) == 0);
    adapt_error err;
    shard_reader *r;
    CHECK(shard_reader_open(&r, path, &err) == 0);
    if (!r) return;
    CHECK(truncate(path, (off_t)(sum.bytes / 2)) == 0);
    const uint8_t *pb;
    size_t len;
    CHECK(shard_reader_read_raw(r, 0, &pb, &len, &err) == 0);
    CHECK(shard_reader_read_raw(r, 9, &pb, &len, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "record 9");
    CHECK_STR_CONTAINS(err.message, "cut short");
    CHECK(shard_reader_check(r, NULL, &err) == ADAPT_ECORRUPT);
    shard_stream *st;
    CHECK(shard_stream_open(&st, r, &err) == 0);
    uint64_t rec;
    int rc;
    while ((rc = shard_stream_next(st, &rec, &pb, &len, &err)) == 1) {}
    CHECK(rc == ADAPT_ECORRUPT);
    shard_stream_close(st);
    shard_reader_close(r);
}

/* Opens the image at path and reads everything; returns the number of operations that
 * reported an error, and counts in *wrong any record returned with bytes other than want's. */
static int read_all_against(const char *path, uint8_t **want, size_t *want_len, uint64_t n,
                            int *wrong, int *unnamed)
{
    adapt_error err = {0};
    shard_reader *r;
    int errors = 0;
    if (shard_reader_open(&r, path, &err) != 0) {
        if (!strstr(err.message, path)) (*unnamed)++;
        return 1;
    }
    if (shard_reader_count(r) != n) (*wrong)++;
    for (uint64_t i = 0; i < shard_reader_count(r); i++) {
        const uint8_t *pb;
        size_t len;
        if (shard_reader_read_raw(r, i, &pb, &len, &err) != 0) {
            char rec[48];
            snprintf(rec, sizeof rec, "record %llu", (unsigned long long)i);
            if (!strstr(err.message, path) || !strstr(err.message, rec)) (*unnamed)++;
            errors++;
        } else if (i >= n || len != want_len[i] || memcmp(pb, want[i], len) != 0) {
            (*wrong)++;
        }
        Adaptd__Sample *s;
        if (shard_reader_read(r, i, &s, &err) == 0) adaptd__sample__free_unpacked(s, NULL);
    }
    shard_stream *st;
    if (shard_stream_open(&st, r, &err) == 0) {
        uint64_t rec;
        const uint8_t *pb;
        size_t len;
        int rc;
        while ((rc = shard_stream_next(st, &rec, &pb, &len, &err)) == 1)
            if (rec >= n || len != want_len[rec] || memcmp(pb, want[rec], len) != 0) (*wrong)++;
        if (rc < 0) errors++;
        shard_stream_close(st);
    }
    uint32_t crc;
    if (shard_reader_check(r, &crc, &err) != 0) errors++;
    shard_reader_close(r);
    return errors;
}

/* Flips each byte of a small shard with several masks and truncates it at every length. */
static void test_every_byte(void)
{
    char path[256], bad[256];
    path_in_tmp(path, sizeof path, "small.shard");
    path_in_tmp(bad, sizeof bad, "damaged.shard");
    shard_summary sum;
    CHECK(write_shard(path, 3, size_small, &sum) == 0);
    size_t len;
    uint8_t *image = fixture_read_file(path, &len);
    CHECK(image != NULL && len == sum.bytes);

    uint8_t *want[3];
    size_t want_len[3];
    adapt_error err;
    shard_reader *r;
    CHECK(shard_reader_open(&r, path, &err) == 0);
    for (uint64_t i = 0; i < 3; i++) {
        const uint8_t *pb;
        CHECK(shard_reader_read_raw(r, i, &pb, &want_len[i], &err) == 0);
        want[i] = malloc(want_len[i]);
        memcpy(want[i], pb, want_len[i]);
    }
    shard_reader_close(r);

    static const uint8_t masks[] = { 0x01, 0x80, 0xFF, 0x5A };
    int undetected = 0, wrong = 0, unnamed = 0;
    uint8_t *copy = malloc(len);
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(copy, image, len);
            copy[pos] ^= masks[m];
            fixture_write_file(bad, copy, len);
            /* Every byte is under some checksum, so every flip must be reported somewhere. */
            if (read_all_against(bad, want, want_len, 3, &wrong, &unnamed) == 0) {
                undetected++;
                fprintf(stderr, "flip 0x%02x at byte %zu went unnoticed\n", masks[m], pos);
            }
        }
    }
    CHECK_MSG(undetected == 0, "%d flips undetected", undetected);
    CHECK_MSG(wrong == 0, "%d reads returned different data", wrong);
    CHECK_MSG(unnamed == 0, "%d errors did not name the file and record", unnamed);

    int opened = 0;
    for (size_t cut = 0; cut < len; cut++) {
        fixture_write_file(bad, image, cut);
        int rc = shard_reader_open(&r, bad, &err);
        if (rc == 0) {
            opened++;
            shard_reader_close(r);
        } else {
            CHECK_MSG(rc == ADAPT_ECORRUPT && strstr(err.message, bad),
                      "cut at %zu: %d %s", cut, rc, err.message);
        }
    }
    CHECK_MSG(opened == 0, "%d truncations opened", opened);
    /* Junk appended after the footer is damage too. */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, image, len);
    longer[len] = 0;
    fixture_write_file(bad, longer, len + 1);
    CHECK(shard_reader_open(&r, bad, &err) == ADAPT_ECORRUPT);
    free(longer);
    free(copy);
    free(image);
    for (int i = 0; i < 3; i++) free(want[i]);
}

/* --- forged files: every checksum valid, something else wrong -------------------------------- */

typedef struct forge_entry { uint64_t off; uint32_t len; uint32_t crc; } forge_entry;

typedef struct forge {
    uint8_t  buf[1 << 16];
    size_t   len;
    forge_entry e[16];
    uint64_t n;
    uint32_t header_version, header_flags, footer_version;
} forge;

static void le32(uint8_t *p, uint32_t v) { for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> 8 * k); }
static void le64(uint8_t *p, uint64_t v) { for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> 8 * k); }

static void forge_begin(forge *f)
{
    memset(f, 0, sizeof *f);
    f->header_version = SHARD_VERSION;
    f->footer_version = SHARD_VERSION;
    f->len = SHARD_HEADER_SIZE;
}

static void forge_frame(forge *f, const uint8_t *frame, size_t len)
{
    memcpy(f->buf + f->len, frame, len);
    f->e[f->n] = (forge_entry){ f->len, (uint32_t)len, crc32c(frame, len) };
    f->n++;
    f->len += len;
}

/* Header, index and footer with valid checksums over whatever the entries say. */
static void forge_write(forge *f, const char *path)
{
    uint8_t *h = f->buf;
    memcpy(h, SHARD_MAGIC, 8);
    le32(h + 8, f->header_version);
    le32(h + 12, f->header_flags);
    memset(h + 16, 0, 12);
    le32(h + 28, crc32c(h, 28));
    uint64_t index_at = f->len;
    uint8_t *ix = f->buf + index_at;
    for (uint64_t i = 0; i < f->n; i++) {
        le64(ix + 16 * i, f->e[i].off);
        le32(ix + 16 * i + 8, f->e[i].len);
        le32(ix + 16 * i + 12, f->e[i].crc);
    }
    uint8_t *ft = ix + 16 * f->n;
    memset(ft, 0, SHARD_FOOTER_SIZE);
    le64(ft, index_at);
    le64(ft + 8, f->n);
    le32(ft + 16, crc32c(ix, 16 * f->n));
    le32(ft + 20, f->footer_version);
    le32(ft + 28, crc32c(ft, 28));
    memcpy(ft + 32, SHARD_FOOTER_MAGIC, 8);
    fixture_write_file(path, f->buf, index_at + 16 * f->n + SHARD_FOOTER_SIZE);
}

/* A zstd frame by hand (RFC 8878): single segment, 4-byte content size, one raw block. */
static size_t raw_frame(uint8_t *out, const uint8_t *payload, size_t len, uint32_t declared)
{
    le32(out, ZSTD_MAGICNUMBER);
    out[4] = 0xA0;                              /* FCS 4 bytes, single segment */
    le32(out + 5, declared);
    uint32_t bh = ((uint32_t)len << 3) | 1u;    /* last block, raw */
    out[9] = (uint8_t)bh;
    out[10] = (uint8_t)(bh >> 8);
    out[11] = (uint8_t)(bh >> 16);
    memcpy(out + 12, payload, len);
    return 12 + len;
}

/* The same without a content size (a window descriptor instead). */
static size_t raw_frame_unsized(uint8_t *out, const uint8_t *payload, size_t len)
{
    le32(out, ZSTD_MAGICNUMBER);
    out[4] = 0x00;
    out[5] = 0x00;                              /* window 1 KiB */
    uint32_t bh = ((uint32_t)len << 3) | 1u;
    out[6] = (uint8_t)bh;
    out[7] = (uint8_t)(bh >> 8);
    out[8] = (uint8_t)(bh >> 16);
    memcpy(out + 9, payload, len);
    return 9 + len;
}

/* Expects opening to fail with code, the path and fragment in the message. */
static void expect_open_fails(const char *path, int code, const char *fragment)
{
    adapt_error err = {0};
    shard_reader *r;
    int rc = shard_reader_open(&r, path, &err);
    CHECK_MSG(rc == code, "%s: want %d, got %d (%s)", fragment, code, rc, err.message);
    if (rc == 0) shard_reader_close(r);
    CHECK_STR_CONTAINS(err.message, path);
    CHECK_STR_CONTAINS(err.message, fragment);
}

/* Expects the file to open and record `bad` to fail with fragment in the message, by random
 * access, unpacking and streaming, while record 0 (good) reads fine. */
static void expect_record_fails(const char *path, uint64_t bad, const char *fragment,
                                int raw_ok)
{
    adapt_error err = {0};
    shard_reader *r;
    int rc = shard_reader_open(&r, path, &err);
    CHECK_MSG(rc == 0, "%s: %s", fragment, err.message);
    if (rc) return;
    char rec[48];
    snprintf(rec, sizeof rec, "record %llu", (unsigned long long)bad);
    const uint8_t *pb;
    size_t len;
    Adaptd__Sample *s = NULL;
    CHECK(shard_reader_read(r, 0, &s, &err) == 0);
    if (s) adaptd__sample__free_unpacked(s, NULL);
    rc = shard_reader_read_raw(r, bad, &pb, &len, &err);
    if (!raw_ok) {
        CHECK_MSG(rc == ADAPT_ECORRUPT, "%s: raw read gave %d", fragment, rc);
        CHECK_STR_CONTAINS(err.message, fragment);
        CHECK_STR_CONTAINS(err.message, rec);
    }
    s = NULL;
    rc = shard_reader_read(r, bad, &s, &err);
    CHECK_MSG(rc == ADAPT_ECORRUPT && s == NULL, "%s: read gave %d", fragment, rc);
    CHECK_STR_CONTAINS(err.message, fragment);
    CHECK_STR_CONTAINS(err.message, rec);
    CHECK_STR_CONTAINS(err.message, path);
    if (!raw_ok) {
        shard_stream *st;
        CHECK(shard_stream_open(&st, r, &err) == 0);
        uint64_t got;
        while ((rc = shard_stream_next(st, &got, &pb, &len, &err)) == 1) CHECK(got < bad);
        CHECK(rc == ADAPT_ECORRUPT);
        CHECK_STR_CONTAINS(err.message, rec);
        CHECK(shard_stream_next(st, &got, &pb, &len, &err) < 0);   /* stays failed */
        shard_stream_close(st);
    }
    CHECK(shard_reader_check(r, NULL, &err) == 0);   /* checksums are all valid */
    shard_reader_close(r);
}

/* Headers, footers and indexes with valid checksums that are wrong all the same. */
static void test_forged_layout(void)
{
    char path[256];
    path_in_tmp(path, sizeof path, "forged.shard");
    fixture_sample fs;
    fixture_sample_make(&fs, 0, 40);
    uint8_t pb[1024], good[2048];
    size_t pb_len = adaptd__sample__pack(&fs.s, pb);
    fixture_sample_free(&fs);
    size_t good_len = raw_frame(good, pb, pb_len, (uint32_t)pb_len);

    forge *f = malloc(sizeof *f);
    /* Sanity: the hand-made frames make a valid shard. */
    forge_begin(f);
    forge_frame(f, good, good_len);
    forge_frame(f, good, good_len);
    forge_write(f, path);
    adapt_error err;
    shard_reader *r;
    CHECK(shard_reader_open(&r, path, &err) == 0);
    Adaptd__Sample *s = NULL;
    CHECK(shard_reader_read(r, 1, &s, &err) == 0 && s && strcmp(s->id, "rec-000000") == 0);
    if (s) adaptd__sample__free_unpacked(s, NULL);
    shard_reader_close(r);

    /* Wrong magic with a valid header checksum. */
    forge_write(f, path);
    size_t len;
    uint8_t *img = fixture_read_file(path, &len);
    img[0] = 'X';
    le32(img + 28, crc32c(img, 28));
    fixture_write_file(path, img, len);
    free(img);
    expect_open_fails(path, ADAPT_ECORRUPT, "bad magic");

    f->header_version = 2;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_EVERSION, "version 2");
    f->header_version = SHARD_VERSION;
    f->header_flags = 1;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_EUNSUPPORTED, "reserved");
    f->header_flags = 0;
    f->footer_version = 7;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "footer version");
    f->footer_version = SHARD_VERSION;

    /* Index entries that lie about where frames are. */
    forge_entry saved[2] = { f->e[0], f->e[1] };
    f->e[1].off = f->e[0].off + 1;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "overlaps");
    f->e[1] = saved[0];
    f->e[0] = saved[1];
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "record 0");
    f->e[0] = saved[0];
    f->e[1] = saved[1];
    f->e[1].len += 1000;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "past the end");
    f->e[1].len = saved[1].len - 1;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "frames end at byte");
    f->e[0].len = 0;
    f->e[1] = saved[1];
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "length 0");
    f->e[0] = saved[0];
    f->e[1].off = (uint64_t)1 << 62;
    forge_write(f, path);
    expect_open_fails(path, ADAPT_ECORRUPT, "record 1");
    f->e[1] = saved[1];

    /* A footer whose record count does not fit the file (and would be a huge allocation). */
    forge_write(f, path);
    img = fixture_read_file(path, &len);
    uint8_t *ft = img + len - SHARD_FOOTER_SIZE;
    le64(ft + 8, (uint64_t)1 << 40);
    le32(ft + 28, crc32c(ft, 28));
    fixture_write_file(path, img, len);
    expect_open_fails(path, ADAPT_ECORRUPT, "does not fit");
    le64(ft + 8, 2);
    le64(ft, 33);
    le32(ft + 28, crc32c(ft, 28));
    fixture_write_file(path, img, len);
    expect_open_fails(path, ADAPT_ECORRUPT, "does not fit");
    free(img);

    free(f);
}

/* Frames with valid checksums but bad content: record 1 of 2 each time. */
static void test_forged_frames(void)
{
    char path[256];
    path_in_tmp(path, sizeof path, "forged-frame.shard");
    fixture_sample fs;
    fixture_sample_make(&fs, 0, 40);
    uint8_t pb[1024], good[2048];
    size_t pb_len = adaptd__sample__pack(&fs.s, pb);
    fixture_sample_free(&fs);
    size_t good_len = raw_frame(good, pb, pb_len, (uint32_t)pb_len);
    forge *f = malloc(sizeof *f);
    adapt_error err;

    static const struct { const char *what; const char *fragment; int raw_ok; } kinds[] = {
        { "declares more than it holds", "",          0 },
        { "declares less than it holds", "",          0 },
        { "declares above the limit",    "limit",     0 },
        { "declares more than possible", "more than it can hold", 0 },
        { "no content size",             "content size", 0 },
        { "not zstd",                    "not a zstd frame", 0 },
        { "skippable frame",             "not a zstd frame", 0 },
        { "two frames in one",           "index says", 0 },
        { "not a protobuf",              "not a valid Sample", 1 },
        { "sample without id",           "no id",     1 },
        { "empty protobuf",              "no id",     1 },
        { "truncated block",             "zstd",      0 },
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        uint8_t bad[4096];
        size_t bad_len = 0;
        static const uint8_t junk[] = { 0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01 };
        switch (k) {
        case 0: bad_len = raw_frame(bad, pb, pb_len, (uint32_t)pb_len + 1); break;
        case 1: bad_len = raw_frame(bad, pb, pb_len, (uint32_t)pb_len - 1); break;
        case 2: bad_len = raw_frame(bad, pb, pb_len, SHARD_MAX_RECORD_BYTES + 1u); break;
        case 3: bad_len = raw_frame(bad, pb, 1, 100u << 20); break;
        case 4: bad_len = raw_frame_unsized(bad, pb, pb_len); break;
        case 5: memcpy(bad, pb, pb_len); bad_len = pb_len; break;
        case 6:
            le32(bad, 0x184D2A50u);
            le32(bad + 4, 8);
            memset(bad + 8, 0, 8);
            bad_len = 16;
            break;
        case 7:
            memcpy(bad, good, good_len);
            memcpy(bad + good_len, good, good_len);
            bad_len = 2 * good_len;
            break;
        case 8: bad_len = raw_frame(bad, junk, sizeof junk, sizeof junk); break;
        case 9: {
            fixture_sample g;
            fixture_sample_make(&g, 1, 8);
            g.s.id = (char *)"";
            uint8_t nid[1024];
            size_t n = adaptd__sample__pack(&g.s, nid);
            fixture_sample_free(&g);
            bad_len = raw_frame(bad, nid, n, (uint32_t)n);
            break;
        }
        case 10: bad_len = raw_frame(bad, pb, 0, 0); break;
        case 11:
            bad_len = raw_frame(bad, pb, pb_len, (uint32_t)pb_len);
            bad[9] = (uint8_t)(((pb_len + 50) << 3) | 1);   /* block longer than the frame */
            bad[10] = (uint8_t)((((pb_len + 50) << 3) | 1) >> 8);
            break;
        }
        forge_begin(f);
        forge_frame(f, good, good_len);
        forge_frame(f, bad, bad_len);
        forge_write(f, path);
        fprintf(stderr, "forged frame: %s\n", kinds[k].what);
        expect_record_fails(path, 1, kinds[k].fragment, kinds[k].raw_ok);
    }

    /* A real zstd frame whose content size field is patched to lie. */
    uint8_t *zf;
    size_t zlen;
    CHECK(shard_frame_encode_raw(pb, pb_len, 3, &zf, &zlen, &err) == 0);
    unsigned long long fcs = ZSTD_getFrameContentSize(zf, zlen);
    CHECK(fcs == pb_len);
    /* Find the content size byte(s) from the header descriptor and add one to the low byte. */
    uint8_t fhd = zf[4];
    size_t at = 5 + ((fhd & 0x20) ? 0 : 1) + ((fhd & 3) ? (1u << ((fhd & 3) - 1)) : 0);
    zf[at] = (uint8_t)(zf[at] + 1);
    forge_begin(f);
    forge_frame(f, good, good_len);
    forge_frame(f, zf, zlen);
    forge_write(f, path);
    expect_record_fails(path, 1, "", 0);
    free(zf);
    free(f);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/adaptd-test-shard-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trips();
    test_frames_and_encoded();
    test_writer_refusals();
    test_atomicity();
    test_write_failure();
    test_shrunk_while_open();
    test_every_byte();
    test_forged_layout();
    test_forged_frames();
    fixture_rm_tree(tmpdir);
    return check_report("shard");
}
