/* import_webdataset: WebDataset tar shards — KEY.jpg|jpeg|png with KEY.txt and/or KEY.json.
 *
 * The tar reader is our own (POSIX ustar, GNU long names 'L', pax 'x' path and size, base-256
 * sizes): it streams the archive once, reads into memory only the members a Sample uses (images,
 * .txt, .json) and seeks over the rest. As WebDataset defines it, a sample is a run of adjacent
 * members with the same key, and the key is the member name up to the first dot of its base name
 * ("dir/x.y.json" is key "dir/x", extension "y.json"); the Sample id is the key. A caption comes
 * from KEY.txt (trailing newlines dropped), else from KEY.json's "caption" or first "gpt" turn;
 * KEY.json's "conversations" become the turns. */
#ifndef ADAPT_IMPORT_WEBDATASET_H
#define ADAPT_IMPORT_WEBDATASET_H

#include <stddef.h>

#include "import.h"

/* Splits a member name: *key_len is the length of its key, *ext points after the first dot of
 * the base name ("" when there is none). */
void import_wds_split(const char *name, size_t *key_len, const char **ext);

int import_webdataset_reader_open(import_reader *r, const char *path, adapt_error *err);

#endif
