/* corpus: a corpus directory — manifest.pb plus shards/NNNNN.shard.
 *
 * A corpus under construction lives in "<dir>.partial/"; corpus_builder_finish writes
 * manifest.pb last (temp + fsync + rename) and only then renames the directory to its final
 * name, so an interrupted import never leaves a directory that looks like a complete corpus.
 * corpus_builder_open refuses to start when "<dir>.partial" is left over from an interrupted
 * run, and says to remove it: deleting a directory the user did not name is not its call.
 *
 * manifest.pb is a serialized adaptd.Manifest followed by a 5-byte checksum trailer: protobuf
 * field 15 as fixed32 (tag byte 0x7D, then the crc32c of every byte before the trailer, little
 * endian). Any protobuf parser still reads the file as a Manifest (field 15 is an unknown field
 * to it); corpus_manifest_load refuses a manifest whose trailer is missing or wrong, so a flipped
 * byte in a name or a count is caught. Always write manifests with corpus_manifest_save.
 *
 * Shards are numbered from 00000 and hold shard_size records each, the last one fewer. A shard is
 * started only when a record arrives, so a corpus of 0 records has 0 shards (valid: it opens,
 * corpus_count is 0) and a record count that is a multiple of shard_size has no empty shard.
 * The manifest lists no shard with 0 records.
 *
 * Threads: a corpus_builder is used by one thread (importers compress frames on many threads
 * with shard_frame_encode and add them, in order, with corpus_builder_add_frame). A corpus may be
 * shared: corpus_shard and corpus_read may be called from several threads at once as long as no
 * two threads use the same shard at the same time (each shard_reader is one-thread-at-a-time;
 * opening shards lazily is locked). A thread that wants its own pass over a shard opens its own
 * shard_reader on the path from the manifest. corpus_close must not race with anything. */
#ifndef ADAPT_CORPUS_H
#define ADAPT_CORPUS_H

#include <stdint.h>

#include "error.h"
#include "manifest.pb-c.h"
#include "sample.pb-c.h"
#include "shard.h"

#define CORPUS_FORMAT_VERSION 1u
#define CORPUS_MANIFEST_NAME  "manifest.pb"

typedef struct corpus_builder corpus_builder;
typedef struct corpus corpus;

/* Starts a corpus at dir (refuses an existing dir, or a leftover "<dir>.partial"); shards rotate
 * every shard_size records (>= 1). name NULL means the last component of dir. */
int  corpus_builder_open(corpus_builder **out, const char *dir, const char *name,
                         uint64_t shard_size, int zstd_level, adapt_error *err);
/* A record refused for bad input (EINVAL: no id, too large) leaves the builder usable. */
int  corpus_builder_add(corpus_builder *b, const Adaptd__Sample *sample, adapt_error *err);
/* Appends one record given as a frame from shard_frame_encode (see shard_writer_add_frame). */
int  corpus_builder_add_frame(corpus_builder *b, const uint8_t *frame, size_t len,
                              adapt_error *err);
uint64_t corpus_builder_count(const corpus_builder *b);
/* Provenance is copied into the manifest; may be NULL. Frees b. On failure the partial
 * directory is removed as by corpus_builder_abort. */
int  corpus_builder_finish(corpus_builder *b, const Adaptd__ImportProvenance *provenance,
                           adapt_error *err);
/* Deletes the partial directory and frees b; safe on NULL. */
void corpus_builder_abort(corpus_builder *b);

/* Opens a finished corpus: reads and checks the manifest (checksum trailer, format version,
 * shard record counts adding up to record_count, first_record of each shard following the one
 * before, relative paths without "..", every shard file present with the recorded size); shards
 * are opened lazily, and then must hold the recorded number of records. The whole-file crc32c of
 * each shard is checked by shard_reader_check (adaptctl data verify), not here. */
int  corpus_open(corpus **out, const char *dir, adapt_error *err);
void corpus_close(corpus *c);
const Adaptd__Manifest *corpus_manifest(const corpus *c);
/* crc32c of the whole manifest.pb file, for an overlay's BaseCorpusRef.manifest_crc32c. */
uint32_t corpus_manifest_crc32c(const corpus *c);
uint64_t corpus_count(const corpus *c);
/* The reader for shard s, opened on first use and owned by c. */
int  corpus_shard(corpus *c, uint64_t s, shard_reader **out, adapt_error *err);
/* Global record index → (shard, record in shard). */
int  corpus_locate(const corpus *c, uint64_t global, uint64_t *shard, uint64_t *record,
                   adapt_error *err);
int  corpus_read(corpus *c, uint64_t global, Adaptd__Sample **out, adapt_error *err);

/* --- the manifest file on its own ------------------------------------------------------------ */

/* Writes m with its checksum trailer atomically (path.tmp, fsync, rename, fsync of the
 * directory); file_crc (optional) receives the crc32c of the whole file written. */
int  corpus_manifest_save(const char *path, const Adaptd__Manifest *m, uint32_t *file_crc,
                          adapt_error *err);
/* Reads a manifest and checks what needs no shard file: trailer, protobuf, format version,
 * counts, first_record, paths. Free *out with adaptd__manifest__free_unpacked(*out, NULL). */
int  corpus_manifest_load(const char *path, Adaptd__Manifest **out, uint32_t *file_crc,
                          adapt_error *err);

#endif
