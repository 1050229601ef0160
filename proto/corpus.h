/* corpus: a corpus directory — manifest.pb plus shards/NNNNN.shard.
 *
 * A corpus under construction lives in "<dir>.partial/"; corpus_builder_finish writes
 * manifest.pb last (temp + fsync + rename) and only then renames the directory to its final
 * name, so an interrupted import never leaves a directory that looks like a complete corpus. */
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

/* Starts a corpus at dir (refuses an existing dir); shards rotate every shard_size records. */
int  corpus_builder_open(corpus_builder **out, const char *dir, const char *name,
                         uint64_t shard_size, int zstd_level, adapt_error *err);
int  corpus_builder_add(corpus_builder *b, const Adaptd__Sample *sample, adapt_error *err);
/* Provenance is copied into the manifest; may be NULL. Frees b. */
int  corpus_builder_finish(corpus_builder *b, const Adaptd__ImportProvenance *provenance,
                           adapt_error *err);
/* Deletes the partial directory and frees b; safe on NULL. */
void corpus_builder_abort(corpus_builder *b);

/* Opens a finished corpus: reads and checks the manifest; shards are opened lazily. */
int  corpus_open(corpus **out, const char *dir, adapt_error *err);
void corpus_close(corpus *c);
const Adaptd__Manifest *corpus_manifest(const corpus *c);
uint64_t corpus_count(const corpus *c);
/* The reader for shard s, opened on first use and owned by c. */
int  corpus_shard(corpus *c, uint64_t s, shard_reader **out, adapt_error *err);
/* Global record index → (shard, record in shard). */
int  corpus_locate(const corpus *c, uint64_t global, uint64_t *shard, uint64_t *record,
                   adapt_error *err);
int  corpus_read(corpus *c, uint64_t global, Adaptd__Sample **out, adapt_error *err);

#endif
