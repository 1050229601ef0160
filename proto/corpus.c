/* corpus: the corpus directory — a manifest naming every shard with its size and checksum.
 *
 * The one idea: the manifest is the commit record. A corpus is built in "<dir>.partial/", the
 * manifest is written last, and the directory only then takes its final name; a reader trusts
 * nothing the manifest does not vouch for (its own crc32c trailer, the counts adding up, each
 * shard present with the recorded size and record count). */
#include "corpus.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "crc32c.h"
#include "file_io.h"

/* The manifest's trailer: protobuf field 15, wire type fixed32 (tag byte (15 << 3) | 5). */
#define CORPUS_TRAILER_TAG   0x7Du
#define CORPUS_TRAILER_SIZE  5u
/* A manifest lists shards, not records: even a million shards stay far below this. */
#define CORPUS_MANIFEST_MAX  (256u << 20)
#define CORPUS_SHARD_PATH_MAX 48

/* --- paths and files ------------------------------------------------------------------------- */

static int path_join(char *out, const char *a, const char *b, adapt_error *err)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= PATH_MAX)
        return adapt_fail(err, ADAPT_EINVAL, "path too long: %s/%s", a, b);
    return 0;
}

/* Unlinks every non-directory entry of dir, then dir itself; only what the builder put there. */
static void remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* --- manifest file --------------------------------------------------------------------------- */

int corpus_manifest_save(const char *path, const Adaptd__Manifest *m, uint32_t *file_crc,
                         adapt_error *err)
{
    size_t n = adaptd__manifest__get_packed_size(m);
    uint8_t *buf = malloc(n + CORPUS_TRAILER_SIZE);
    if (!buf) return adapt_fail(err, ADAPT_ENOMEM, "no memory for manifest %s", path);
    adaptd__manifest__pack(m, buf);
    uint32_t crc = crc32c(buf, n);
    buf[n] = CORPUS_TRAILER_TAG;
    for (int k = 0; k < 4; k++) buf[n + 1 + k] = (uint8_t)(crc >> (8 * k));
    n += CORPUS_TRAILER_SIZE;

    int rc = file_io_write_atomic(path, buf, n, err);
    if (rc == 0 && file_crc) *file_crc = crc32c(buf, n);
    free(buf);
    return rc;
}

static int manifest_path_ok(const char *p)
{
    if (!p || !p[0] || p[0] == '/') return 0;
    for (const char *c = p; *c;) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (len == 0 || (len == 2 && c[0] == '.' && c[1] == '.')) return 0;
        c += len + (slash ? 1 : 0);
        if (slash && !*c) return 0;
    }
    return 1;
}

/* What can be checked without the shard files: version, counts, offsets, paths. */
static int manifest_check(const Adaptd__Manifest *m, const char *path, adapt_error *err)
{
    if (m->format_version != CORPUS_FORMAT_VERSION)
        return adapt_fail(err, ADAPT_EVERSION,
                          "manifest %s: corpus format version %u, this build reads version %u",
                          path, m->format_version, CORPUS_FORMAT_VERSION);
    uint64_t total = 0;
    for (size_t s = 0; s < m->n_shards; s++) {
        const Adaptd__ShardInfo *si = m->shards[s];
        const char *why = NULL;
        if (!si || !manifest_path_ok(si->path))
            why = "has no path, an absolute path or one with '..'";
        else if (si->records == 0)
            why = "holds no records";
        else if (si->first_record != total)
            why = "has a first_record that does not follow the previous shard";
        else if (si->bytes < SHARD_HEADER_SIZE + SHARD_FOOTER_SIZE ||
                 si->records > (si->bytes - SHARD_HEADER_SIZE - SHARD_FOOTER_SIZE) /
                                   (SHARD_INDEX_ENTRY_SIZE + 1))
            why = "is too small for its record count";
        if (why)
            return adapt_fail(err, ADAPT_ECORRUPT, "manifest %s: shard %zu (%s) %s", path, s,
                              si && si->path ? si->path : "?", why);
        total += si->records;
    }
    if (total != m->record_count)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "manifest %s: shards hold %" PRIu64 " records, record_count says %"
                          PRIu64, path, total, m->record_count);
    return 0;
}

int corpus_manifest_load(const char *path, Adaptd__Manifest **out, uint32_t *file_crc,
                         adapt_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO, "opening %s: %s",
                          path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "stat of %s: %s", path, strerror(errno));
    else if (st.st_size < (off_t)CORPUS_TRAILER_SIZE || st.st_size > (off_t)CORPUS_MANIFEST_MAX)
        rc = adapt_fail(err, ADAPT_ECORRUPT, "manifest %s: implausible size of %lld bytes", path,
                        (long long)st.st_size);
    size_t n = rc ? 0 : (size_t)st.st_size;
    uint8_t *buf = rc ? NULL : malloc(n);
    if (rc == 0 && !buf) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory for manifest %s", path);
    size_t got = 0;
    while (rc == 0 && got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) rc = adapt_fail(err, ADAPT_EIO, "reading %s: %s", path, strerror(errno));
        else if (k == 0) rc = adapt_fail(err, ADAPT_ECORRUPT, "manifest %s shrank while read",
                                         path);
        else got += (size_t)k;
    }
    close(fd);
    if (rc == 0) {
        size_t body = n - CORPUS_TRAILER_SIZE;
        uint32_t stored = 0;
        for (int k = 3; k >= 0; k--) stored = (stored << 8) | buf[body + 1 + k];
        uint32_t actual = crc32c(buf, body);
        if (buf[body] != CORPUS_TRAILER_TAG || stored != actual)
            rc = adapt_fail(err, ADAPT_ECORRUPT,
                            "manifest %s: checksum mismatch (trailer at byte offset %zu: stored "
                            "0x%08x, computed 0x%08x); the file is damaged or truncated", path,
                            body, stored, actual);
    }
    Adaptd__Manifest *m = NULL;
    if (rc == 0 && !(m = adaptd__manifest__unpack(NULL, n, buf)))
        rc = adapt_fail(err, ADAPT_ECORRUPT, "manifest %s: not a valid Manifest protobuf", path);
    if (rc == 0) rc = manifest_check(m, path, err);
    if (rc == 0 && file_crc) *file_crc = crc32c(buf, n);
    free(buf);
    if (rc) {
        if (m) adaptd__manifest__free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return 0;
}

/* --- builder --------------------------------------------------------------------------------- */

typedef struct corpus_shard_entry {
    char     path[CORPUS_SHARD_PATH_MAX];  /* relative to the corpus directory */
    uint64_t records;
    uint64_t bytes;
    uint32_t crc32c;
    uint64_t first_record;
} corpus_shard_entry;

struct corpus_builder {
    char    *dir;       /* final name, trailing slashes removed */
    char    *partial;   /* "<dir>.partial" */
    char    *name;
    uint64_t shard_size;
    int      level;
    int64_t  created;
    shard_writer *w;    /* the shard being filled; NULL between shards */
    corpus_shard_entry *shards;
    size_t   n_shards;
    size_t   shards_cap;
    uint64_t count;
};

static void builder_free(corpus_builder *b)
{
    free(b->dir);
    free(b->partial);
    free(b->name);
    free(b->shards);
    free(b);
}

int corpus_builder_open(corpus_builder **out, const char *dir, const char *name,
                        uint64_t shard_size, int zstd_level, adapt_error *err)
{
    *out = NULL;
    if (shard_size == 0)
        return adapt_fail(err, ADAPT_EINVAL, "corpus %s: shard size must be at least 1 record",
                          dir);
    if (zstd_level < ZSTD_minCLevel() || zstd_level > ZSTD_maxCLevel())
        return adapt_fail(err, ADAPT_EINVAL, "corpus %s: zstd level %d is outside %d..%d", dir,
                          zstd_level, ZSTD_minCLevel(), ZSTD_maxCLevel());
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    if (len == 0 || (len == 1 && dir[0] == '/'))
        return adapt_fail(err, ADAPT_EINVAL, "corpus directory \"%s\" is not usable", dir);
    /* Room for "<dir>.partial/shards/NNNNN.shard.tmp" in every PATH_MAX buffer below. */
    if (len > PATH_MAX - 64)
        return adapt_fail(err, ADAPT_EINVAL, "corpus directory path is too long (%zu bytes)", len);
    corpus_builder *b = calloc(1, sizeof *b);
    if (!b) return adapt_fail(err, ADAPT_ENOMEM, "no memory for corpus builder %s", dir);
    b->dir = strndup(dir, len);
    if (b->dir && asprintf(&b->partial, "%s.partial", b->dir) < 0) b->partial = NULL;
    if (b->dir && !name) {
        const char *slash = strrchr(b->dir, '/');
        name = slash ? slash + 1 : b->dir;
    }
    b->name = name ? strdup(name) : NULL;
    if (!b->dir || !b->partial || !b->name) {
        builder_free(b);
        return adapt_fail(err, ADAPT_ENOMEM, "no memory for corpus builder %s", dir);
    }
    b->shard_size = shard_size;
    b->level = zstd_level;
    b->created = (int64_t)time(NULL);

    struct stat st;
    int rc = 0;
    char shards[PATH_MAX];
    if (lstat(b->dir, &st) == 0)
        rc = adapt_fail(err, ADAPT_EINVAL, "corpus directory %s already exists; choose another "
                        "output directory or remove it", b->dir);
    else if (lstat(b->partial, &st) == 0)
        rc = adapt_fail(err, ADAPT_EINVAL, "%s exists: an earlier build of corpus %s was "
                        "interrupted; remove it (rm -r '%s') and run again", b->partial, b->dir,
                        b->partial);
    else if (mkdir(b->partial, 0755) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "creating %s: %s", b->partial, strerror(errno));
    else if ((rc = path_join(shards, b->partial, "shards", err)) == 0 && mkdir(shards, 0755) != 0) {
        rc = adapt_fail(err, ADAPT_EIO, "creating %s: %s", shards, strerror(errno));
        rmdir(b->partial);
    }
    if (rc) {
        builder_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

/* Opens the next shard on first use, so a record count that is a multiple of the shard size
 * leaves no empty shard behind. */
static int builder_shard_start(corpus_builder *b, adapt_error *err)
{
    if (b->w) return 0;
    if (b->n_shards == b->shards_cap) {
        size_t cap = b->shards_cap ? b->shards_cap * 2 : 16;
        corpus_shard_entry *grown = realloc(b->shards, cap * sizeof *grown);
        if (!grown) return adapt_fail(err, ADAPT_ENOMEM, "corpus %s: no memory", b->dir);
        b->shards = grown;
        b->shards_cap = cap;
    }
    corpus_shard_entry *e = &b->shards[b->n_shards];
    memset(e, 0, sizeof *e);
    snprintf(e->path, sizeof e->path, "shards/%05zu.shard", b->n_shards);
    e->first_record = b->count;
    char path[PATH_MAX];
    int rc = path_join(path, b->partial, e->path, err);
    if (rc == 0) rc = shard_writer_open(&b->w, path, b->level, err);
    return rc;
}

static int builder_shard_finish(corpus_builder *b, adapt_error *err)
{
    shard_summary sum;
    shard_writer *w = b->w;
    b->w = NULL;
    int rc = shard_writer_finish(w, &sum, err);
    if (rc) return rc;
    corpus_shard_entry *e = &b->shards[b->n_shards++];
    e->records = sum.records;
    e->bytes = sum.bytes;
    e->crc32c = sum.crc32c;
    return 0;
}

/* After a record went in: closes the shard once it is full. */
static int builder_after_add(corpus_builder *b, adapt_error *err)
{
    b->count++;
    if (shard_writer_count(b->w) < b->shard_size) return 0;
    return builder_shard_finish(b, err);
}

int corpus_builder_add(corpus_builder *b, const Adaptd__Sample *sample, adapt_error *err)
{
    int rc = builder_shard_start(b, err);
    if (rc == 0) rc = shard_writer_add(b->w, sample, err);
    if (rc == 0) rc = builder_after_add(b, err);
    return rc;
}

int corpus_builder_add_frame(corpus_builder *b, const uint8_t *frame, size_t len,
                             adapt_error *err)
{
    int rc = builder_shard_start(b, err);
    if (rc == 0) rc = shard_writer_add_frame(b->w, frame, len, err);
    if (rc == 0) rc = builder_after_add(b, err);
    return rc;
}

uint64_t corpus_builder_count(const corpus_builder *b)
{
    return b->count;
}

static int builder_write_manifest(corpus_builder *b, const Adaptd__ImportProvenance *provenance,
                                  adapt_error *err)
{
    Adaptd__ShardInfo *infos = calloc(b->n_shards ? b->n_shards : 1, sizeof *infos);
    Adaptd__ShardInfo **ptrs = calloc(b->n_shards ? b->n_shards : 1, sizeof *ptrs);
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        return adapt_fail(err, ADAPT_ENOMEM, "corpus %s: no memory for the manifest", b->dir);
    }
    for (size_t s = 0; s < b->n_shards; s++) {
        adaptd__shard_info__init(&infos[s]);
        infos[s].path = b->shards[s].path;
        infos[s].records = b->shards[s].records;
        infos[s].bytes = b->shards[s].bytes;
        infos[s].crc32c = b->shards[s].crc32c;
        infos[s].first_record = b->shards[s].first_record;
        ptrs[s] = &infos[s];
    }
    Adaptd__Manifest m = ADAPTD__MANIFEST__INIT;
    m.corpus_name = b->name;
    m.format_version = CORPUS_FORMAT_VERSION;
    m.created_unix = b->created;
    m.record_count = b->count;
    m.n_shards = b->n_shards;
    m.shards = ptrs;
    /* Packing only reads the provenance, so the caller's message is used as it is. */
    m.provenance = (Adaptd__ImportProvenance *)provenance;
    char path[PATH_MAX];
    int rc = path_join(path, b->partial, CORPUS_MANIFEST_NAME, err);
    if (rc == 0) rc = corpus_manifest_save(path, &m, NULL, err);
    free(infos);
    free(ptrs);
    return rc;
}

/* Renames "<dir>.partial" to dir, refusing to replace anything that appeared there meanwhile
 * (plain rename would silently replace an empty directory). */
static int builder_publish(corpus_builder *b, adapt_error *err)
{
    if (renameat2(AT_FDCWD, b->partial, AT_FDCWD, b->dir, RENAME_NOREPLACE) != 0) {
        if (errno == EEXIST)
            return adapt_fail(err, ADAPT_EINVAL, "corpus directory %s appeared while it was "
                              "being built; the finished corpus is left in %s", b->dir,
                              b->partial);
        if (errno != EINVAL && errno != ENOSYS)
            return adapt_fail(err, ADAPT_EIO, "renaming %s to %s: %s", b->partial, b->dir,
                              strerror(errno));
        /* A file system without RENAME_NOREPLACE: check, then rename. */
        struct stat st;
        if (lstat(b->dir, &st) == 0)
            return adapt_fail(err, ADAPT_EINVAL, "corpus directory %s appeared while it was "
                              "being built", b->dir);
        if (rename(b->partial, b->dir) != 0)
            return adapt_fail(err, ADAPT_EIO, "renaming %s to %s: %s", b->partial, b->dir,
                              strerror(errno));
    }
    return file_io_fsync_parent(b->dir, err);
}

int corpus_builder_finish(corpus_builder *b, const Adaptd__ImportProvenance *provenance,
                          adapt_error *err)
{
    int rc = 0;
    if (b->w) rc = builder_shard_finish(b, err);
    if (rc == 0) rc = builder_write_manifest(b, provenance, err);
    if (rc == 0) rc = builder_publish(b, err);
    if (rc) {
        adapt_error_prefix(err, "finishing corpus %s: ", b->dir);
        corpus_builder_abort(b);
        return rc;
    }
    builder_free(b);
    return 0;
}

void corpus_builder_abort(corpus_builder *b)
{
    if (!b) return;
    shard_writer_abort(b->w);
    char shards[PATH_MAX];
    if (path_join(shards, b->partial, "shards", NULL) == 0) remove_flat_dir(shards);
    remove_flat_dir(b->partial);
    builder_free(b);
}

/* --- reading --------------------------------------------------------------------------------- */

struct corpus {
    char  *dir;
    Adaptd__Manifest *m;
    uint32_t manifest_crc;
    shard_reader **readers;   /* one per shard, NULL until first use */
    pthread_mutex_t lock;     /* guards readers[] while shards open lazily */
};

/* Every shard the manifest lists must exist with the recorded size: a missing or cut file is
 * found at open, not hours into a job. */
static int corpus_check_files(const corpus *c, adapt_error *err)
{
    for (size_t s = 0; s < c->m->n_shards; s++) {
        const Adaptd__ShardInfo *si = c->m->shards[s];
        char path[PATH_MAX];
        int rc = path_join(path, c->dir, si->path, err);
        if (rc) return rc;
        struct stat st;
        if (stat(path, &st) != 0)
            return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                              "corpus %s: shard %zu (%s): %s", c->dir, s, path, strerror(errno));
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != si->bytes)
            return adapt_fail(err, ADAPT_ECORRUPT,
                              "corpus %s: shard %zu (%s) is %lld bytes, the manifest says %"
                              PRIu64, c->dir, s, path, (long long)st.st_size, si->bytes);
    }
    return 0;
}

int corpus_open(corpus **out, const char *dir, adapt_error *err)
{
    *out = NULL;
    corpus *c = calloc(1, sizeof *c);
    if (!c) return adapt_fail(err, ADAPT_ENOMEM, "no memory for corpus %s", dir);
    pthread_mutex_init(&c->lock, NULL);
    c->dir = strdup(dir);
    char path[PATH_MAX];
    int rc = c->dir ? path_join(path, dir, CORPUS_MANIFEST_NAME, err)
                    : adapt_fail(err, ADAPT_ENOMEM, "no memory for corpus %s", dir);
    if (rc == 0) {
        rc = corpus_manifest_load(path, &c->m, &c->manifest_crc, err);
        if (rc == ADAPT_ENOTFOUND)
            rc = adapt_fail(err, ADAPT_ENOTFOUND, "corpus %s: no %s: not a corpus directory, or "
                            "a build of it never finished", dir, CORPUS_MANIFEST_NAME);
    }
    if (rc == 0) rc = corpus_check_files(c, err);
    if (rc == 0) {
        c->readers = calloc(c->m->n_shards ? c->m->n_shards : 1, sizeof *c->readers);
        if (!c->readers) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory for corpus %s", dir);
    }
    if (rc) {
        corpus_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void corpus_close(corpus *c)
{
    if (!c) return;
    if (c->readers && c->m)
        for (size_t s = 0; s < c->m->n_shards; s++) shard_reader_close(c->readers[s]);
    free(c->readers);
    if (c->m) adaptd__manifest__free_unpacked(c->m, NULL);
    pthread_mutex_destroy(&c->lock);
    free(c->dir);
    free(c);
}

const Adaptd__Manifest *corpus_manifest(const corpus *c)
{
    return c->m;
}

uint32_t corpus_manifest_crc32c(const corpus *c)
{
    return c->manifest_crc;
}

uint64_t corpus_count(const corpus *c)
{
    return c->m->record_count;
}

static int corpus_shard_open(corpus *c, uint64_t s, shard_reader **out, adapt_error *err)
{
    const Adaptd__ShardInfo *si = c->m->shards[s];
    char path[PATH_MAX];
    shard_reader *r = NULL;
    int rc = path_join(path, c->dir, si->path, err);
    if (rc == 0) rc = shard_reader_open(&r, path, err);
    if (rc == 0 && (shard_reader_count(r) != si->records || shard_reader_size(r) != si->bytes))
        rc = adapt_fail(err, ADAPT_ECORRUPT,
                        "corpus %s: shard %" PRIu64 " (%s) holds %" PRIu64 " records in %" PRIu64
                        " bytes, the manifest says %" PRIu64 " in %" PRIu64, c->dir, s, path,
                        shard_reader_count(r), shard_reader_size(r), si->records, si->bytes);
    if (rc) {
        shard_reader_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int corpus_shard(corpus *c, uint64_t s, shard_reader **out, adapt_error *err)
{
    *out = NULL;
    if (s >= c->m->n_shards)
        return adapt_fail(err, ADAPT_ERANGE, "corpus %s: shard %" PRIu64 " requested, it has %zu",
                          c->dir, s, c->m->n_shards);
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    if (!c->readers[s]) rc = corpus_shard_open(c, s, &c->readers[s], err);
    *out = c->readers[s];
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int corpus_locate(const corpus *c, uint64_t global, uint64_t *shard, uint64_t *record,
                  adapt_error *err)
{
    if (global >= c->m->record_count)
        return adapt_fail(err, ADAPT_ERANGE, "corpus %s: record %" PRIu64 " requested, it has %"
                          PRIu64, c->dir, global, c->m->record_count);
    /* Largest shard whose first_record <= global; manifest_check made them ascending. */
    size_t lo = 0, hi = c->m->n_shards;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->m->shards[mid]->first_record <= global) lo = mid;
        else hi = mid;
    }
    *shard = lo;
    *record = global - c->m->shards[lo]->first_record;
    return 0;
}

int corpus_read(corpus *c, uint64_t global, Adaptd__Sample **out, adapt_error *err)
{
    *out = NULL;
    uint64_t s, i;
    shard_reader *r;
    int rc = corpus_locate(c, global, &s, &i, err);
    if (rc == 0) rc = corpus_shard(c, s, &r, err);
    if (rc == 0) rc = shard_reader_read(r, i, out, err);
    if (rc && rc != ADAPT_ERANGE)
        adapt_error_prefix(err, "corpus %s: record %" PRIu64 ": ", c->dir, global);
    return rc;
}
