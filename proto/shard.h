/* shard: the corpus shard file — one zstd frame per record, a checksummed index at the end.
 *
 * Layout (all integers little-endian):
 *
 *   header  32 bytes   magic "ADSHARD1" | u32 version | u32 flags (0) | u64 reserved (0)
 *                      | u32 reserved (0) | u32 crc32c of the preceding 28 bytes
 *   frames             record i: one zstd frame whose content is a serialized adaptd.Sample
 *   index   16 × N     per record: u64 offset | u32 length | u32 crc32c of the frame bytes
 *   footer  40 bytes   u64 index offset | u64 record count | u32 crc32c of the index
 *                      | u32 version | u32 reserved (0) | u32 crc32c of the preceding 28 bytes
 *                      | magic "ADSHEND1"
 *
 * The one idea: the index and footer come last so that a writer streams records without knowing
 * their count, and a reader finds any record with one seek. Every byte that a reader trusts is
 * covered by a crc32c, so a flipped bit is reported with the file and record number instead of
 * being returned as wrong data. The writer writes to "<path>.tmp", fsyncs, renames and fsyncs the
 * directory: a shard that exists under its final name is complete.
 *
 * Validity beyond the checksums: the frames tile the bytes between header and index exactly, in
 * record order; each frame is one zstd frame that declares its content size, at most
 * SHARD_MAX_RECORD_BYTES; a record unpacks to a Sample with a non-empty id (the writer refuses a
 * Sample without one, the reader reports one as corrupt).
 *
 * Threads: a shard_writer, a shard_reader and the streams opened on a reader are used by one
 * thread at a time (each owns buffers and a zstd context). Different readers, even of the same
 * file, are independent. shard_frame_encode is thread-safe: importers compress on many threads
 * and hand the frames, in order, to one writer with shard_writer_add_frame.
 *
 * Errors: every failure returns a negative adapt_error_code and fills err with one line naming
 * the file, the record number and, where it helps, the byte offset. */
#ifndef ADAPT_SHARD_H
#define ADAPT_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sample.pb-c.h"

#define SHARD_MAGIC        "ADSHARD1"
#define SHARD_FOOTER_MAGIC "ADSHEND1"
#define SHARD_VERSION      1u
#define SHARD_HEADER_SIZE  32u
#define SHARD_INDEX_ENTRY_SIZE 16u
#define SHARD_FOOTER_SIZE  40u
/* A record's decompressed protobuf may not exceed this (a 64 MiB image is already absurd). */
#define SHARD_MAX_RECORD_BYTES (256u << 20)

typedef struct shard_writer shard_writer;
typedef struct shard_reader shard_reader;

typedef struct shard_summary {
    uint64_t records;
    uint64_t bytes;   /* file size */
    uint32_t crc32c;  /* of the whole file, as the manifest records it */
} shard_summary;

/* --- encoding (thread-safe) ------------------------------------------------------------------ */

/* Serializes s and compresses it into one zstd frame, as shard_writer_add would store it.
 * *frame is malloc'd and owned by the caller. EINVAL for a Sample without id or one larger than
 * SHARD_MAX_RECORD_BYTES serialized, or a level outside ZSTD_minCLevel()..ZSTD_maxCLevel(). */
int  shard_frame_encode(const Adaptd__Sample *s, int zstd_level, uint8_t **frame,
                        size_t *frame_len, adapt_error *err);
/* The same for an already serialized Sample (not parsed: the caller vouches for it). */
int  shard_frame_encode_raw(const uint8_t *pb, size_t pb_len, int zstd_level, uint8_t **frame,
                            size_t *frame_len, adapt_error *err);

/* --- writing --------------------------------------------------------------------------------- */

/* Opens "<path>.tmp" for writing; nothing appears under path until shard_writer_finish. */
int  shard_writer_open(shard_writer **out, const char *path, int zstd_level, adapt_error *err);
/* Serializes, compresses and appends one record. */
int  shard_writer_add(shard_writer *w, const Adaptd__Sample *sample, adapt_error *err);
/* Appends one record given as an already serialized Sample (parsed once to refuse bytes that are
 * not a Sample with an id). */
int  shard_writer_add_encoded(shard_writer *w, const uint8_t *pb, size_t pb_len, adapt_error *err);
/* Appends one record given as a frame from shard_frame_encode; the frame is copied. Its shape is
 * checked (one zstd frame, content size declared and within the limit), not its content. */
int  shard_writer_add_frame(shard_writer *w, const uint8_t *frame, size_t len, adapt_error *err);
uint64_t shard_writer_count(const shard_writer *w);
/* Writes index and footer, fsyncs, renames to path, fsyncs the directory, frees w. A record that
 * failed to be added leaves the writer usable; a failed write to the file does not (finish then
 * fails). On failure the temporary file is removed and w is freed all the same. */
int  shard_writer_finish(shard_writer *w, shard_summary *summary, adapt_error *err);
/* Removes the temporary file and frees w; safe on NULL. */
void shard_writer_abort(shard_writer *w);

/* --- reading --------------------------------------------------------------------------------- */

/* Opens a shard, validates header, footer and index (offsets in order, in range, checksums).
 * ECORRUPT for a damaged file, EVERSION for another format version, ENOTFOUND if absent. */
int  shard_reader_open(shard_reader **out, const char *path, adapt_error *err);
void shard_reader_close(shard_reader *r);
uint64_t    shard_reader_count(const shard_reader *r);
const char *shard_reader_path(const shard_reader *r);
uint64_t    shard_reader_size(const shard_reader *r);   /* file size in bytes, as opened */

/* Random access: record i, decompressed protobuf bytes. *pb stays owned by the reader and is
 * valid until the next read call on r. Checks the frame's crc32c first. */
int  shard_reader_read_raw(shard_reader *r, uint64_t i, const uint8_t **pb, size_t *pb_len,
                           adapt_error *err);
/* Random access: record i unpacked; free with adaptd__sample__free_unpacked(*out, NULL). */
int  shard_reader_read(shard_reader *r, uint64_t i, Adaptd__Sample **out, adapt_error *err);
/* Unpacks bytes of record i (from read_raw or a stream) with read's checks and error message. */
int  shard_sample_unpack(const shard_reader *r, uint64_t i, const uint8_t *pb, size_t len,
                         Adaptd__Sample **out, adapt_error *err);

/* Streaming mode: reads the frames front to back with large sequential reads (no per-record
 * seek), for verify and the data loader's epoch pass. Returns 1 with *out set, 0 at the end,
 * negative on error. *pb is owned by the stream, valid until its next call. A stream keeps
 * its own buffers but shares r's zstd context: use r and its streams from one thread. After an
 * error the stream stays failed. */
typedef struct shard_stream shard_stream;
int  shard_stream_open(shard_stream **out, shard_reader *r, adapt_error *err);
int  shard_stream_next(shard_stream *s, uint64_t *record, const uint8_t **pb, size_t *pb_len,
                       adapt_error *err);
void shard_stream_close(shard_stream *s);

/* Checks the crc32c of every frame and of the whole file without decompressing, in one
 * sequential pass of 4 MiB reads; file_crc (optional) receives the whole-file crc32c to compare
 * with the manifest. */
int  shard_reader_check(shard_reader *r, uint32_t *file_crc, adapt_error *err);

#endif
