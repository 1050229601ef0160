/* fuzz_shard: libFuzzer harness for the shard reader (and the manifest loader).
 *
 * Input: one flag byte, then a file image. The one idea: checksums stop almost every random
 * mutation at the door, so with flag bit 0 the harness first recomputes every checksum it can
 * locate (header, each in-range index entry's frame, index, footer; the manifest trailer), which
 * lets mutated frames reach zstd and protobuf-c. Flag bit 1 feeds the image to
 * corpus_manifest_load instead. The file lives in a memfd, opened by its /proc path.
 *
 * Beyond "no crash, no sanitizer report, no leak", the harness demands that the three ways of
 * reading agree: a record the stream returns was returned with the same bytes by random access;
 * the stream stops exactly at the first record random access refuses; the whole-file check
 * passes when every record read, and its crc is the crc of the image; every error names the
 * file (and the record, for a record error). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "corpus.h"
#include "crc32c.h"
#include "shard.h"

#define FUZZ_FLAG_REPAIR   1u
#define FUZZ_FLAG_MANIFEST 2u

static void fuzz_le32(uint8_t *p, uint32_t v)
{
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static uint64_t fuzz_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static uint32_t fuzz_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int k = 3; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

/* Rewrites every checksum that can be located, leaving all other bytes as the fuzzer made them. */
static void repair_shard(uint8_t *b, size_t len)
{
    if (len >= SHARD_HEADER_SIZE) fuzz_le32(b + 28, crc32c(b, 28));
    if (len < SHARD_HEADER_SIZE + SHARD_FOOTER_SIZE) return;
    uint8_t *ft = b + len - SHARD_FOOTER_SIZE;
    uint64_t index_at = fuzz_get64(ft), count = fuzz_get64(ft + 8);
    uint64_t footer_at = len - SHARD_FOOTER_SIZE;
    if (count <= footer_at / SHARD_INDEX_ENTRY_SIZE &&
        index_at == footer_at - count * SHARD_INDEX_ENTRY_SIZE) {
        for (uint64_t i = 0; i < count; i++) {
            uint8_t *e = b + index_at + i * SHARD_INDEX_ENTRY_SIZE;
            uint64_t off = fuzz_get64(e);
            uint32_t n = fuzz_get32(e + 8);
            if (off <= len && n <= len - off) fuzz_le32(e + 12, crc32c(b + off, n));
        }
        fuzz_le32(ft + 16, crc32c(b + index_at, count * SHARD_INDEX_ENTRY_SIZE));
    }
    fuzz_le32(ft + 28, crc32c(ft, 28));
}

static void repair_manifest(uint8_t *b, size_t len)
{
    if (len < 5) return;
    b[len - 5] = 0x7D;
    fuzz_le32(b + len - 4, crc32c(b, len - 5));
}

static void require(int cond, const char *what, const adapt_error *err)
{
    if (cond) return;
    fprintf(stderr, "fuzz_shard: invariant broken: %s (last error: %s)\n", what,
            err ? err->message : "");
    abort();
}

static void fuzz_manifest(const char *path)
{
    adapt_error err = {0};
    Adaptd__Manifest *m = NULL;
    uint32_t crc;
    int rc = corpus_manifest_load(path, &m, &crc, &err);
    if (rc != 0) {
        require(rc < 0 && m == NULL && strstr(err.message, path), "manifest error named", &err);
        return;
    }
    uint64_t total = 0;
    for (size_t s = 0; s < m->n_shards; s++) {
        require(m->shards[s]->first_record == total, "first_record checked", &err);
        total += m->shards[s]->records;
    }
    require(total == m->record_count, "record_count checked", &err);
    adaptd__manifest__free_unpacked(m, NULL);
}

static void fuzz_shard(const char *path, const uint8_t *image, size_t len)
{
    adapt_error err = {0};
    shard_reader *r = NULL;
    int rc = shard_reader_open(&r, path, &err);
    if (rc != 0) {
        require(rc < 0 && r == NULL && strstr(err.message, path), "open error named", &err);
        return;
    }
    uint64_t n = shard_reader_count(r);
    uint8_t **got = calloc(n ? n : 1, sizeof *got);
    size_t *got_len = calloc(n ? n : 1, sizeof *got_len);
    int *ok = calloc(n ? n : 1, sizeof *ok);
    require(got && got_len && ok, "memory", NULL);
    uint64_t good = 0;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *pb;
        size_t pl;
        rc = shard_reader_read_raw(r, i, &pb, &pl, &err);
        if (rc == 0) {
            ok[i] = 1;
            good++;
            got[i] = malloc(pl ? pl : 1);
            memcpy(got[i], pb, pl);
            got_len[i] = pl;
        } else {
            char rec[40];
            snprintf(rec, sizeof rec, "record %llu", (unsigned long long)i);
            require(rc == ADAPT_ECORRUPT && strstr(err.message, path) && strstr(err.message, rec),
                    "record error is ECORRUPT naming file and record", &err);
        }
        Adaptd__Sample *s = NULL;
        rc = shard_reader_read(r, i, &s, &err);
        require(rc == 0 || rc == ADAPT_ECORRUPT, "unpack error is ECORRUPT", &err);
        require(rc != 0 || ok[i], "unpack succeeds only where the raw read did", &err);
        if (s) {
            require(s->id && s->id[0], "an unpacked sample has an id", &err);
            adaptd__sample__free_unpacked(s, NULL);
        }
    }

    shard_stream *st;
    require(shard_stream_open(&st, r, &err) == 0, "stream opens", &err);
    uint64_t seen = 0, rec;
    const uint8_t *pb;
    size_t pl;
    while ((rc = shard_stream_next(st, &rec, &pb, &pl, &err)) == 1) {
        require(rec == seen && ok[rec], "stream returns what random access returned", &err);
        require(pl == got_len[rec] && memcmp(pb, got[rec], pl) == 0, "stream bytes agree", &err);
        seen++;
    }
    if (rc == 0) require(seen == n && good == n, "stream ends only when all records read", &err);
    else require(seen < n && !ok[seen], "stream fails where random access fails", &err);
    shard_stream_close(st);

    uint32_t crc = 0;
    rc = shard_reader_check(r, &crc, &err);
    if (good == n) require(rc == 0, "check passes when every record read", &err);
    if (rc == 0) require(crc == crc32c(image, len), "check's crc is the file's", &err);
    else require(strstr(err.message, path) != NULL, "check error named", &err);

    for (uint64_t i = 0; i < n; i++) free(got[i]);
    free(got);
    free(got_len);
    free(ok);
    shard_reader_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz_shard", 0);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (size < 1) return 0;
    unsigned flags = data[0];
    size_t len = size - 1;
    uint8_t *image = malloc(len ? len : 1);
    if (!image) abort();
    memcpy(image, data + 1, len);
    if (flags & FUZZ_FLAG_REPAIR) {
        if (flags & FUZZ_FLAG_MANIFEST) repair_manifest(image, len);
        else repair_shard(image, len);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, image, len, 0) != (ssize_t)len) abort();
    if (flags & FUZZ_FLAG_MANIFEST) fuzz_manifest(path);
    else fuzz_shard(path, image, len);
    free(image);
    return 0;
}
