/* shard: writer and reader of the corpus shard file; the layout is in shard.h.
 *
 * The one idea of the reader: nothing read from the file is trusted before a checksum has
 * vouched for it, and no length read from the file sizes an allocation before it has been
 * bounded by the real file size (index, frames) or by SHARD_MAX_RECORD_BYTES and the most a zstd
 * frame of that compressed length can expand to (decompressed records). The index must tile the
 * frame area exactly — first frame right after the header, each next one right after the
 * previous, the last one ending where the index starts — so every byte of a valid file is
 * covered by exactly one checksum and a flipped byte anywhere is reported, never returned. */
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "crc32c.h"
#include "file_io.h"

/* RFC 8878: a block never expands to more than 128 KiB, and a block that produces any output
 * takes at least 4 bytes of the frame (3-byte block header + at least 1 byte of content). So a
 * frame of n bytes decompresses to at most n / 4 * 128 KiB, whatever its header claims. */
#define SHARD_ZSTD_BLOCK_MAX      (128u << 10)
#define SHARD_ZSTD_MIN_BLOCK      4u
#define SHARD_WRITE_BUFFER        (1u << 20)
#define SHARD_STREAM_BUFFER       (4u << 20)

typedef struct shard_index_entry {
    uint64_t offset;
    uint32_t length;
    uint32_t crc;
} shard_index_entry;

/* --- little-endian fields and whole-buffer I/O ------------------------------------------------ */

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int k = 3; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

/* Reads up to n bytes at off, retrying short reads; returns the count read (< n only at end of
 * file) or -1 with errno set. */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(off + done));
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (k == 0) break;
        done += (size_t)k;
    }
    return (ssize_t)done;
}

/* Grows a scratch buffer to hold need bytes; the old contents are not kept. */
static int scratch_reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap && *buf) return 0;
    free(*buf);
    *cap = 0;
    *buf = malloc(need ? need : 1);
    if (!*buf) return -1;
    *cap = need;
    return 0;
}

/* --- frames ---------------------------------------------------------------------------------- */

static int level_check(int level, adapt_error *err)
{
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return adapt_fail(err, ADAPT_EINVAL, "zstd level %d is outside %d..%d", level,
                          ZSTD_minCLevel(), ZSTD_maxCLevel());
    return 0;
}

/* Compresses pb into *frame (grown as needed); cctx may be NULL for a one-off context. */
static int frame_compress(ZSTD_CCtx *cctx, int level, const uint8_t *pb, size_t pb_len,
                          uint8_t **frame, size_t *frame_cap, size_t *frame_len, adapt_error *err)
{
    if (pb_len > SHARD_MAX_RECORD_BYTES)
        return adapt_fail(err, ADAPT_EINVAL,
                          "record of %zu bytes exceeds the shard limit of %u bytes", pb_len,
                          SHARD_MAX_RECORD_BYTES);
    size_t bound = ZSTD_compressBound(pb_len);
    if (scratch_reserve(frame, frame_cap, bound) != 0)
        return adapt_fail(err, ADAPT_ENOMEM, "no memory for a %zu-byte zstd frame", bound);
    /* Both calls write the content size into the frame header: the reader relies on it. */
    size_t n = cctx ? ZSTD_compressCCtx(cctx, *frame, bound, pb, pb_len, level)
                    : ZSTD_compress(*frame, bound, pb, pb_len, level);
    if (ZSTD_isError(n))
        return adapt_fail(err, ADAPT_EINVAL, "zstd compression failed: %s", ZSTD_getErrorName(n));
    *frame_len = n;
    return 0;
}

static int sample_pack(const Adaptd__Sample *s, uint8_t **pb, size_t *pb_cap, size_t *pb_len,
                       adapt_error *err)
{
    if (!s || !s->id || !s->id[0])
        return adapt_fail(err, ADAPT_EINVAL, "sample has no id; every record needs one");
    size_t n = adaptd__sample__get_packed_size(s);
    if (n > SHARD_MAX_RECORD_BYTES)
        return adapt_fail(err, ADAPT_EINVAL,
                          "sample %s is %zu bytes serialized, above the shard limit of %u bytes",
                          s->id, n, SHARD_MAX_RECORD_BYTES);
    if (scratch_reserve(pb, pb_cap, n) != 0)
        return adapt_fail(err, ADAPT_ENOMEM, "no memory to serialize sample %s (%zu bytes)",
                          s->id, n);
    *pb_len = adaptd__sample__pack(s, *pb);
    return 0;
}

int shard_frame_encode_raw(const uint8_t *pb, size_t pb_len, int zstd_level, uint8_t **frame,
                           size_t *frame_len, adapt_error *err)
{
    *frame = NULL;
    *frame_len = 0;
    int rc = level_check(zstd_level, err);
    if (rc) return rc;
    size_t cap = 0;
    rc = frame_compress(NULL, zstd_level, pb, pb_len, frame, &cap, frame_len, err);
    if (rc) {
        free(*frame);
        *frame = NULL;
    }
    return rc;
}

int shard_frame_encode(const Adaptd__Sample *s, int zstd_level, uint8_t **frame,
                       size_t *frame_len, adapt_error *err)
{
    *frame = NULL;
    *frame_len = 0;
    uint8_t *pb = NULL;
    size_t cap = 0, len = 0;
    int rc = sample_pack(s, &pb, &cap, &len, err);
    if (rc == 0) rc = shard_frame_encode_raw(pb, len, zstd_level, frame, frame_len, err);
    free(pb);
    return rc;
}

/* Checks what a reader checks of a frame's shape before it decompresses: one zstd frame filling
 * exactly len bytes, its content size declared, within the record limit and the expansion bound.
 * Returns 0 and the declared content size, or a message fragment in *why. */
static int frame_shape(const uint8_t *frame, size_t len, uint64_t *content, const char **why,
                       char *detail, size_t detail_len)
{
    *why = NULL;
    detail[0] = '\0';
    if (len < 4 || get_le32(frame) != ZSTD_MAGICNUMBER) {
        *why = "not a zstd frame (bad frame magic)";
        return -1;
    }
    size_t whole = ZSTD_findFrameCompressedSize(frame, len);
    if (ZSTD_isError(whole)) {
        snprintf(detail, detail_len, "malformed zstd frame: %s", ZSTD_getErrorName(whole));
        *why = detail;
        return -1;
    }
    if (whole != len) {
        snprintf(detail, detail_len, "zstd frame is %zu bytes but the index says %zu", whole, len);
        *why = detail;
        return -1;
    }
    unsigned long long fcs = ZSTD_getFrameContentSize(frame, len);
    if (fcs == ZSTD_CONTENTSIZE_ERROR) {
        *why = "malformed zstd frame header";
        return -1;
    }
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN) {
        *why = "zstd frame does not declare its content size";
        return -1;
    }
    if (fcs > SHARD_MAX_RECORD_BYTES) {
        snprintf(detail, detail_len, "zstd frame declares %llu bytes, above the limit of %u", fcs,
                 SHARD_MAX_RECORD_BYTES);
        *why = detail;
        return -1;
    }
    if (fcs > (uint64_t)(len / SHARD_ZSTD_MIN_BLOCK) * SHARD_ZSTD_BLOCK_MAX) {
        snprintf(detail, detail_len,
                 "zstd frame of %zu bytes declares %llu bytes, more than it can hold", len, fcs);
        *why = detail;
        return -1;
    }
    *content = fcs;
    return 0;
}

/* --- writer ---------------------------------------------------------------------------------- */

struct shard_writer {
    int       fd;
    char     *path;
    char     *tmp_path;
    int       level;
    ZSTD_CCtx *cctx;
    uint8_t  *buf;          /* pending output, flushed in big writes */
    size_t    buf_len;
    uint64_t  offset;       /* file offset of the next byte appended */
    uint32_t  file_crc;     /* crc32c of every byte appended so far */
    shard_index_entry *index;
    uint64_t  count;
    uint64_t  index_cap;
    uint8_t  *pb;           /* scratch: serialized sample */
    size_t    pb_cap;
    uint8_t  *frame;        /* scratch: compressed frame */
    size_t    frame_cap;
    int       failed;       /* a write failed: the file is unusable, only abort remains */
};

static int writer_flush(shard_writer *w, adapt_error *err)
{
    if (w->buf_len == 0) return 0;
    if (file_io_write_all(w->fd, w->buf, w->buf_len) != 0) {
        w->failed = 1;
        return adapt_fail(err, ADAPT_EIO, "writing shard %s: %s", w->tmp_path, strerror(errno));
    }
    w->buf_len = 0;
    return 0;
}

/* Appends bytes through the buffer; a piece larger than the buffer goes straight to the file. */
static int writer_append(shard_writer *w, const uint8_t *p, size_t n, adapt_error *err)
{
    w->file_crc = crc32c_update(w->file_crc, p, n);
    w->offset += n;
    if (w->buf_len + n <= SHARD_WRITE_BUFFER) {
        memcpy(w->buf + w->buf_len, p, n);
        w->buf_len += n;
        return 0;
    }
    int rc = writer_flush(w, err);
    if (rc) return rc;
    if (n >= SHARD_WRITE_BUFFER) {
        if (file_io_write_all(w->fd, p, n) != 0) {
            w->failed = 1;
            return adapt_fail(err, ADAPT_EIO, "writing shard %s: %s", w->tmp_path,
                              strerror(errno));
        }
        return 0;
    }
    memcpy(w->buf, p, n);
    w->buf_len = n;
    return 0;
}

static void writer_free(shard_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    ZSTD_freeCCtx(w->cctx);
    free(w->buf);
    free(w->index);
    free(w->pb);
    free(w->frame);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

int shard_writer_open(shard_writer **out, const char *path, int zstd_level, adapt_error *err)
{
    *out = NULL;
    int rc = level_check(zstd_level, err);
    if (rc) return rc;
    shard_writer *w = calloc(1, sizeof *w);
    if (!w) return adapt_fail(err, ADAPT_ENOMEM, "no memory for shard writer %s", path);
    w->fd = -1;
    w->level = zstd_level;
    w->path = strdup(path);
    w->buf = malloc(SHARD_WRITE_BUFFER);
    w->cctx = ZSTD_createCCtx();
    if (w->path && asprintf(&w->tmp_path, "%s.tmp", path) < 0) w->tmp_path = NULL;
    if (!w->path || !w->tmp_path || !w->buf || !w->cctx) {
        writer_free(w);
        return adapt_fail(err, ADAPT_ENOMEM, "no memory for shard writer %s", path);
    }
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = adapt_fail(err, ADAPT_EIO, "creating shard %s: %s", w->tmp_path, strerror(errno));
        writer_free(w);
        return rc;
    }
    uint8_t header[SHARD_HEADER_SIZE] = {0};
    memcpy(header, SHARD_MAGIC, 8);
    put_le32(header + 8, SHARD_VERSION);
    put_le32(header + 28, crc32c(header, 28));
    rc = writer_append(w, header, sizeof header, err);
    if (rc) {
        shard_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

int shard_writer_add_frame(shard_writer *w, const uint8_t *frame, size_t len, adapt_error *err)
{
    if (w->failed)
        return adapt_fail(err, ADAPT_EIO, "shard %s: an earlier write failed", w->tmp_path);
    uint64_t content;
    const char *why;
    char detail[160];
    if (len > UINT32_MAX) {
        snprintf(detail, sizeof detail, "frame of %zu bytes does not fit the index", len);
        why = detail;
    } else {
        frame_shape(frame, len, &content, &why, detail, sizeof detail);
    }
    if (why)
        return adapt_fail(err, ADAPT_EINVAL, "shard %s: record %" PRIu64 ": refusing frame: %s",
                          w->path, w->count, why);
    if (w->count == w->index_cap) {
        uint64_t cap = w->index_cap ? w->index_cap * 2 : 1024;
        shard_index_entry *grown = realloc(w->index, cap * sizeof *grown);
        if (!grown)
            return adapt_fail(err, ADAPT_ENOMEM, "no memory for the index of shard %s", w->path);
        w->index = grown;
        w->index_cap = cap;
    }
    shard_index_entry e = { w->offset, (uint32_t)len, crc32c(frame, len) };
    int rc = writer_append(w, frame, len, err);
    if (rc) return rc;
    w->index[w->count++] = e;
    return 0;
}

int shard_writer_add_encoded(shard_writer *w, const uint8_t *pb, size_t pb_len, adapt_error *err)
{
    /* Unpacking costs a copy, but it keeps a writer from storing a record no reader accepts. */
    Adaptd__Sample *s = adaptd__sample__unpack(NULL, pb_len, pb);
    if (!s)
        return adapt_fail(err, ADAPT_EINVAL,
                          "shard %s: record %" PRIu64 ": bytes are not a serialized Sample",
                          w->path, w->count);
    int has_id = s->id && s->id[0];
    adaptd__sample__free_unpacked(s, NULL);
    if (!has_id)
        return adapt_fail(err, ADAPT_EINVAL, "shard %s: record %" PRIu64 ": sample has no id",
                          w->path, w->count);
    size_t n;
    int rc = frame_compress(w->cctx, w->level, pb, pb_len, &w->frame, &w->frame_cap, &n, err);
    if (rc) return adapt_error_prefix(err, "shard %s: record %" PRIu64 ": ", w->path, w->count);
    return shard_writer_add_frame(w, w->frame, n, err);
}

int shard_writer_add(shard_writer *w, const Adaptd__Sample *sample, adapt_error *err)
{
    size_t pb_len, n;
    int rc = sample_pack(sample, &w->pb, &w->pb_cap, &pb_len, err);
    if (rc == 0)
        rc = frame_compress(w->cctx, w->level, w->pb, pb_len, &w->frame, &w->frame_cap, &n, err);
    if (rc) return adapt_error_prefix(err, "shard %s: record %" PRIu64 ": ", w->path, w->count);
    return shard_writer_add_frame(w, w->frame, n, err);
}

uint64_t shard_writer_count(const shard_writer *w)
{
    return w->count;
}

/* Index and footer through the buffer, then flush, fsync and close: the file is complete. */
static int writer_seal(shard_writer *w, adapt_error *err)
{
    uint64_t index_offset = w->offset;
    uint32_t index_crc = 0;
    for (uint64_t i = 0; i < w->count; i++) {
        uint8_t e[SHARD_INDEX_ENTRY_SIZE];
        put_le64(e, w->index[i].offset);
        put_le32(e + 8, w->index[i].length);
        put_le32(e + 12, w->index[i].crc);
        index_crc = crc32c_update(index_crc, e, sizeof e);
        int rc = writer_append(w, e, sizeof e, err);
        if (rc) return rc;
    }
    uint8_t footer[SHARD_FOOTER_SIZE] = {0};
    put_le64(footer, index_offset);
    put_le64(footer + 8, w->count);
    put_le32(footer + 16, index_crc);
    put_le32(footer + 20, SHARD_VERSION);
    put_le32(footer + 28, crc32c(footer, 28));
    memcpy(footer + 32, SHARD_FOOTER_MAGIC, 8);
    int rc = writer_append(w, footer, sizeof footer, err);
    if (rc == 0) rc = writer_flush(w, err);
    if (rc) return rc;
    if (fsync(w->fd) != 0)
        return adapt_fail(err, ADAPT_EIO, "fsync of shard %s: %s", w->tmp_path, strerror(errno));
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0)
        return adapt_fail(err, ADAPT_EIO, "closing shard %s: %s", w->tmp_path, strerror(errno));
    return 0;
}

int shard_writer_finish(shard_writer *w, shard_summary *summary, adapt_error *err)
{
    int rc;
    if (w->failed)
        rc = adapt_fail(err, ADAPT_EIO, "shard %s: an earlier write failed", w->tmp_path);
    else
        rc = writer_seal(w, err);
    if (rc == 0 && rename(w->tmp_path, w->path) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "renaming %s to %s: %s", w->tmp_path, w->path,
                        strerror(errno));
    if (rc) {
        shard_writer_abort(w);
        return rc;
    }
    rc = file_io_fsync_parent(w->path, err);
    if (rc == 0 && summary) {
        summary->records = w->count;
        summary->bytes = w->offset;
        summary->crc32c = w->file_crc;
    }
    writer_free(w);
    return rc;
}

void shard_writer_abort(shard_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->tmp_path) unlink(w->tmp_path);
    writer_free(w);
}

/* --- reader ---------------------------------------------------------------------------------- */

struct shard_reader {
    int       fd;
    char     *path;
    uint64_t  size;          /* file size at open */
    uint64_t  index_offset;  /* = end of the frame area */
    uint64_t  count;
    shard_index_entry *index;
    ZSTD_DCtx *dctx;         /* reused by every decompression on this reader */
    uint8_t  *frame;         /* compressed bytes of the record being read */
    size_t    frame_cap;
    uint8_t  *out;           /* decompressed record: what read_raw hands out */
    size_t    out_cap;
};

static int reader_open_file(shard_reader *r, adapt_error *err)
{
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int code = errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO;
        return adapt_fail(err, code, "opening shard %s: %s", r->path, strerror(errno));
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        return adapt_fail(err, ADAPT_EIO, "stat of shard %s: %s", r->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return adapt_fail(err, ADAPT_EINVAL, "shard %s is not a regular file", r->path);
    r->size = (uint64_t)st.st_size;
    if (r->size < SHARD_HEADER_SIZE + SHARD_FOOTER_SIZE)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: truncated: %" PRIu64 " bytes, a shard has at least %u "
                          "(header and footer)", r->path, r->size,
                          SHARD_HEADER_SIZE + SHARD_FOOTER_SIZE);
    return 0;
}

static int reader_read_at(shard_reader *r, void *buf, size_t n, uint64_t off, const char *what,
                          adapt_error *err)
{
    ssize_t k = pread_full(r->fd, buf, n, off);
    if (k < 0)
        return adapt_fail(err, ADAPT_EIO, "shard %s: reading %s at byte offset %" PRIu64 ": %s",
                          r->path, what, off, strerror(errno));
    if ((size_t)k != n)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: %s at byte offset %" PRIu64 " is cut short (file shrank "
                          "to %" PRIu64 " bytes while open)", r->path, what, off,
                          off + (uint64_t)k);
    return 0;
}

static int reader_check_header(shard_reader *r, adapt_error *err)
{
    uint8_t h[SHARD_HEADER_SIZE];
    int rc = reader_read_at(r, h, sizeof h, 0, "header", err);
    if (rc) return rc;
    if (memcmp(h, SHARD_MAGIC, 8) != 0)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: not a shard file (bad magic at byte offset 0)", r->path);
    uint32_t stored = get_le32(h + 28), actual = crc32c(h, 28);
    if (stored != actual)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: header checksum mismatch (bytes 0-27: stored 0x%08x, "
                          "computed 0x%08x)", r->path, stored, actual);
    uint32_t version = get_le32(h + 8);
    if (version != SHARD_VERSION)
        return adapt_fail(err, ADAPT_EVERSION,
                          "shard %s: format version %u, this build reads version %u only",
                          r->path, version, SHARD_VERSION);
    if (get_le32(h + 12) != 0 || get_le64(h + 16) != 0 || get_le32(h + 24) != 0)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "shard %s: header flags or reserved fields are set (byte offset 12); "
                          "written by a newer adaptd?", r->path);
    return 0;
}

static int reader_check_footer(shard_reader *r, adapt_error *err)
{
    uint8_t f[SHARD_FOOTER_SIZE];
    uint64_t at = r->size - SHARD_FOOTER_SIZE;
    int rc = reader_read_at(r, f, sizeof f, at, "footer", err);
    if (rc) return rc;
    if (memcmp(f + 32, SHARD_FOOTER_MAGIC, 8) != 0)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: no footer (bad end magic at byte offset %" PRIu64 "): the "
                          "file is truncated or was never finished", r->path, at + 32);
    uint32_t stored = get_le32(f + 28), actual = crc32c(f, 28);
    if (stored != actual)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: footer checksum mismatch (byte offset %" PRIu64 ": stored "
                          "0x%08x, computed 0x%08x)", r->path, at, stored, actual);
    uint32_t version = get_le32(f + 20);
    if (version != SHARD_VERSION || get_le32(f + 24) != 0)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: footer version %u or reserved field disagrees with the "
                          "header (byte offset %" PRIu64 ")", r->path, version, at + 20);
    uint64_t index_offset = get_le64(f), count = get_le64(f + 8);
    uint64_t room = at - SHARD_HEADER_SIZE;
    /* Bounding count by the bytes actually present keeps the index allocation within the file
     * size, whatever the footer says. */
    if (count > room / SHARD_INDEX_ENTRY_SIZE ||
        index_offset != at - count * SHARD_INDEX_ENTRY_SIZE)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: footer (byte offset %" PRIu64 ") says %" PRIu64 " records "
                          "with the index at byte %" PRIu64 ", which does not fit a file of %"
                          PRIu64 " bytes", r->path, at, count, index_offset, r->size);
    r->count = count;
    r->index_offset = index_offset;
    uint32_t index_crc = get_le32(f + 16);
    size_t index_bytes = (size_t)(count * SHARD_INDEX_ENTRY_SIZE);
    uint8_t *raw = malloc(index_bytes ? index_bytes : 1);
    r->index = malloc(count ? count * sizeof *r->index : 1);
    if (!raw || !r->index) {
        free(raw);
        return adapt_fail(err, ADAPT_ENOMEM, "shard %s: no memory for an index of %" PRIu64
                          " records", r->path, count);
    }
    rc = reader_read_at(r, raw, index_bytes, index_offset, "index", err);
    if (rc == 0 && (actual = crc32c(raw, index_bytes)) != index_crc)
        rc = adapt_fail(err, ADAPT_ECORRUPT,
                        "shard %s: index checksum mismatch (bytes %" PRIu64 "-%" PRIu64
                        ": stored 0x%08x, computed 0x%08x)", r->path, index_offset,
                        at - 1, index_crc, actual);
    for (uint64_t i = 0; rc == 0 && i < count; i++) {
        const uint8_t *e = raw + i * SHARD_INDEX_ENTRY_SIZE;
        r->index[i].offset = get_le64(e);
        r->index[i].length = get_le32(e + 8);
        r->index[i].crc = get_le32(e + 12);
    }
    free(raw);
    return rc;
}

/* The frames must tile [header end, index offset) in record order with no gap or overlap. */
static int reader_check_index(shard_reader *r, adapt_error *err)
{
    uint64_t expect = SHARD_HEADER_SIZE;
    for (uint64_t i = 0; i < r->count; i++) {
        const shard_index_entry *e = &r->index[i];
        uint64_t entry_at = r->index_offset + i * SHARD_INDEX_ENTRY_SIZE;
        const char *why = NULL;
        if (e->length == 0)
            why = "has length 0";
        else if (e->offset < expect)
            why = "overlaps the previous frame or is out of order";
        else if (e->offset > expect)
            why = "leaves a gap after the previous frame";
        else if (e->length > r->index_offset - e->offset)
            why = "extends past the end of the frame area";
        if (why)
            return adapt_fail(err, ADAPT_ECORRUPT,
                              "shard %s: record %" PRIu64 ": index entry (byte offset %" PRIu64
                              ") places the frame at byte %" PRIu64 " with %u bytes, which %s "
                              "(expected byte %" PRIu64 ", frame area ends at %" PRIu64 ")",
                              r->path, i, entry_at, e->offset, e->length, why, expect,
                              r->index_offset);
        expect = e->offset + e->length;
    }
    if (expect != r->index_offset)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "shard %s: the frames end at byte %" PRIu64 " but the index starts at "
                          "byte %" PRIu64, r->path, expect, r->index_offset);
    return 0;
}

int shard_reader_open(shard_reader **out, const char *path, adapt_error *err)
{
    *out = NULL;
    shard_reader *r = calloc(1, sizeof *r);
    if (!r) return adapt_fail(err, ADAPT_ENOMEM, "no memory for shard reader %s", path);
    r->fd = -1;
    r->path = strdup(path);
    r->dctx = ZSTD_createDCtx();
    if (!r->path || !r->dctx) {
        shard_reader_close(r);
        return adapt_fail(err, ADAPT_ENOMEM, "no memory for shard reader %s", path);
    }
    int rc = reader_open_file(r, err);
    if (rc == 0) rc = reader_check_header(r, err);
    if (rc == 0) rc = reader_check_footer(r, err);
    if (rc == 0) rc = reader_check_index(r, err);
    if (rc) {
        shard_reader_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

void shard_reader_close(shard_reader *r)
{
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    ZSTD_freeDCtx(r->dctx);
    free(r->index);
    free(r->frame);
    free(r->out);
    free(r->path);
    free(r);
}

uint64_t shard_reader_count(const shard_reader *r)
{
    return r->count;
}

const char *shard_reader_path(const shard_reader *r)
{
    return r->path;
}

uint64_t shard_reader_size(const shard_reader *r)
{
    return r->size;
}

static int reader_frame_crc(const shard_reader *r, uint64_t i, uint32_t actual, adapt_error *err)
{
    const shard_index_entry *e = &r->index[i];
    if (actual == e->crc) return 0;
    return adapt_fail(err, ADAPT_ECORRUPT,
                      "shard %s: record %" PRIu64 ": frame checksum mismatch (byte offset %"
                      PRIu64 ", %u bytes: stored 0x%08x, computed 0x%08x)", r->path, i,
                      e->offset, e->length, e->crc, actual);
}

/* Checks record i's frame bytes and decompresses them into *out (grown to the declared size). */
static int reader_decode(shard_reader *r, uint64_t i, const uint8_t *frame, uint8_t **out,
                         size_t *out_cap, size_t *pb_len, adapt_error *err)
{
    const shard_index_entry *e = &r->index[i];
    int rc = reader_frame_crc(r, i, crc32c(frame, e->length), err);
    if (rc) return rc;
    uint64_t content;
    const char *why;
    char detail[160];
    if (frame_shape(frame, e->length, &content, &why, detail, sizeof detail) != 0)
        return adapt_fail(err, ADAPT_ECORRUPT, "shard %s: record %" PRIu64 " (byte offset %"
                          PRIu64 "): %s", r->path, i, e->offset, why);
    if (scratch_reserve(out, out_cap, (size_t)content) != 0)
        return adapt_fail(err, ADAPT_ENOMEM, "shard %s: record %" PRIu64 ": no memory for %"
                          PRIu64 " bytes", r->path, i, content);
    /* Capacity is exactly the declared size: a frame holding more fails with dstSize_tooSmall,
     * one holding less returns fewer bytes; both are a lying header. */
    size_t n = ZSTD_decompressDCtx(r->dctx, *out, (size_t)content, frame, e->length);
    if (ZSTD_isError(n))
        return adapt_fail(err, ADAPT_ECORRUPT, "shard %s: record %" PRIu64 " (byte offset %"
                          PRIu64 "): zstd: %s", r->path, i, e->offset, ZSTD_getErrorName(n));
    if (n != content)
        return adapt_fail(err, ADAPT_ECORRUPT, "shard %s: record %" PRIu64 " (byte offset %"
                          PRIu64 "): zstd frame declares %" PRIu64 " bytes but holds %zu",
                          r->path, i, e->offset, content, n);
    *pb_len = n;
    return 0;
}

int shard_reader_read_raw(shard_reader *r, uint64_t i, const uint8_t **pb, size_t *pb_len,
                          adapt_error *err)
{
    *pb = NULL;
    *pb_len = 0;
    if (i >= r->count)
        return adapt_fail(err, ADAPT_ERANGE, "shard %s: record %" PRIu64 " requested, the shard "
                          "holds %" PRIu64, r->path, i, r->count);
    const shard_index_entry *e = &r->index[i];
    if (scratch_reserve(&r->frame, &r->frame_cap, e->length) != 0)
        return adapt_fail(err, ADAPT_ENOMEM, "shard %s: record %" PRIu64 ": no memory for %u "
                          "bytes", r->path, i, e->length);
    char what[64];
    snprintf(what, sizeof what, "record %" PRIu64, i);
    int rc = reader_read_at(r, r->frame, e->length, e->offset, what, err);
    if (rc == 0) rc = reader_decode(r, i, r->frame, &r->out, &r->out_cap, pb_len, err);
    if (rc) {
        *pb_len = 0;
        return rc;
    }
    *pb = r->out;
    return 0;
}

/* Unpacks a record's protobuf; a Sample without an id is as corrupt as one that fails to parse,
 * since no writer stores one. */
static int reader_unpack(const shard_reader *r, uint64_t i, const uint8_t *pb, size_t len,
                         Adaptd__Sample **out, adapt_error *err)
{
    Adaptd__Sample *s = adaptd__sample__unpack(NULL, len, pb);
    if (!s)
        return adapt_fail(err, ADAPT_ECORRUPT, "shard %s: record %" PRIu64 " (byte offset %"
                          PRIu64 "): not a valid Sample protobuf (%zu bytes)", r->path, i,
                          r->index[i].offset, len);
    if (!s->id || !s->id[0]) {
        adaptd__sample__free_unpacked(s, NULL);
        return adapt_fail(err, ADAPT_ECORRUPT, "shard %s: record %" PRIu64 " (byte offset %"
                          PRIu64 "): Sample has no id", r->path, i, r->index[i].offset);
    }
    *out = s;
    return 0;
}

int shard_reader_read(shard_reader *r, uint64_t i, Adaptd__Sample **out, adapt_error *err)
{
    *out = NULL;
    const uint8_t *pb;
    size_t len;
    int rc = shard_reader_read_raw(r, i, &pb, &len, err);
    if (rc) return rc;
    return reader_unpack(r, i, pb, len, out, err);
}

int shard_sample_unpack(const shard_reader *r, uint64_t i, const uint8_t *pb, size_t len,
                        Adaptd__Sample **out, adapt_error *err)
{
    *out = NULL;
    if (i >= r->count)
        return adapt_fail(err, ADAPT_ERANGE, "shard %s: record %" PRIu64 " requested, the shard "
                          "holds %" PRIu64, r->path, i, r->count);
    return reader_unpack(r, i, pb, len, out, err);
}

/* --- streaming ------------------------------------------------------------------------------- */

struct shard_stream {
    shard_reader *r;
    uint8_t  *buf;        /* file bytes [buf_start, buf_start + buf_len) */
    size_t    cap;
    uint64_t  buf_start;
    size_t    buf_len;
    uint64_t  next;       /* next record to return */
    uint8_t  *out;        /* decompressed record handed out by shard_stream_next */
    size_t    out_cap;
    int       failed;     /* after an error the stream only repeats that it failed */
};

static size_t stream_buffer_size(const shard_reader *r)
{
    uint64_t area = r->index_offset - SHARD_HEADER_SIZE;
    return area < SHARD_STREAM_BUFFER ? (size_t)(area ? area : 1) : SHARD_STREAM_BUFFER;
}

int shard_stream_open(shard_stream **out, shard_reader *r, adapt_error *err)
{
    *out = NULL;
    shard_stream *s = calloc(1, sizeof *s);
    if (s) {
        s->cap = stream_buffer_size(r);
        s->buf = malloc(s->cap);
    }
    if (!s || !s->buf) {
        free(s);
        return adapt_fail(err, ADAPT_ENOMEM, "shard %s: no memory for a stream buffer",
                          r->path);
    }
    s->r = r;
    s->buf_start = SHARD_HEADER_SIZE;
    posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    *out = s;
    return 0;
}

/* Makes [off, off + len) resident in the buffer: keeps the unread tail, refills behind it with
 * one large read, and grows the buffer only for a frame larger than it. */
static int stream_fill(shard_stream *s, uint64_t off, size_t len, adapt_error *err)
{
    shard_reader *r = s->r;
    if (off >= s->buf_start && off + len <= s->buf_start + s->buf_len) return 0;
    size_t keep = 0;
    if (off >= s->buf_start && off < s->buf_start + s->buf_len) {
        keep = (size_t)(s->buf_start + s->buf_len - off);
        memmove(s->buf, s->buf + (off - s->buf_start), keep);
    }
    if (len > s->cap) {
        uint8_t *grown = realloc(s->buf, len);
        if (!grown)
            return adapt_fail(err, ADAPT_ENOMEM, "shard %s: no memory for a %zu-byte frame",
                              r->path, len);
        s->buf = grown;
        s->cap = len;
    }
    s->buf_start = off;
    s->buf_len = keep;
    uint64_t end = r->index_offset;
    size_t want = s->cap - keep;
    if (want > end - (off + keep)) want = (size_t)(end - (off + keep));
    int rc = reader_read_at(r, s->buf + keep, want, off + keep, "frames", err);
    if (rc) return rc;
    s->buf_len = keep + want;
    return 0;
}

int shard_stream_next(shard_stream *s, uint64_t *record, const uint8_t **pb, size_t *pb_len,
                      adapt_error *err)
{
    shard_reader *r = s->r;
    *pb = NULL;
    *pb_len = 0;
    if (s->failed)
        return adapt_fail(err, ADAPT_EINVAL, "shard %s: stream already failed at record %"
                          PRIu64, r->path, s->next);
    if (s->next >= r->count) return 0;
    uint64_t i = s->next;
    const shard_index_entry *e = &r->index[i];
    int rc = stream_fill(s, e->offset, e->length, err);
    if (rc == 0)
        rc = reader_decode(r, i, s->buf + (e->offset - s->buf_start), &s->out, &s->out_cap,
                           pb_len, err);
    if (rc) {
        s->failed = 1;
        *pb_len = 0;
        return rc;
    }
    s->next++;
    if (record) *record = i;
    *pb = s->out;
    return 1;
}

void shard_stream_close(shard_stream *s)
{
    if (!s) return;
    /* Back to normal readahead, so later random reads on r do not fetch twice what they need. */
    posix_fadvise(s->r->fd, 0, 0, POSIX_FADV_NORMAL);
    free(s->buf);
    free(s->out);
    free(s);
}

/* --- whole-file check ------------------------------------------------------------------------ */

int shard_reader_check(shard_reader *r, uint32_t *file_crc, adapt_error *err)
{
    size_t cap = r->size < SHARD_STREAM_BUFFER ? (size_t)r->size : SHARD_STREAM_BUFFER;
    uint8_t *buf = malloc(cap);
    if (!buf) return adapt_fail(err, ADAPT_ENOMEM, "shard %s: no memory to check it", r->path);
    posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint32_t whole = 0, frame = 0;
    uint64_t i = 0;   /* the frame being summed */
    int rc = 0;
    for (uint64_t pos = 0; rc == 0 && pos < r->size;) {
        size_t n = r->size - pos < cap ? (size_t)(r->size - pos) : cap;
        rc = reader_read_at(r, buf, n, pos, "data", err);
        if (rc) break;
        whole = crc32c_update(whole, buf, n);
        /* The same buffer feeds the per-frame checksums: a frame may start or end mid-buffer
         * and span several buffers, so each one is summed piecewise. */
        uint64_t end = pos + n;
        while (rc == 0 && i < r->count) {
            const shard_index_entry *e = &r->index[i];
            uint64_t from = e->offset > pos ? e->offset : pos;
            uint64_t to = e->offset + e->length < end ? e->offset + e->length : end;
            if (from >= end) break;
            frame = crc32c_update(frame, buf + (from - pos), (size_t)(to - from));
            if (to < e->offset + e->length) break;
            rc = reader_frame_crc(r, i, frame, err);
            frame = 0;
            i++;
        }
        pos = end;
    }
    free(buf);
    posix_fadvise(r->fd, 0, 0, POSIX_FADV_NORMAL);
    if (rc) return rc;
    if (file_crc) *file_crc = whole;
    return 0;
}
