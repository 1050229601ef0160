/* import_caption_jsonl: plain caption annotations, one {"image", "caption", "id"?} per line.
 *
 * The simplest format: no conversation, so the Sample has a caption and no turns. The one idea
 * is the same as LLaVA JSONL's (import_json): lines are records, and a malformed line is one bad
 * record named by its line and byte offset, never a failed file. */
#ifndef ADAPT_IMPORT_CAPTION_JSONL_H
#define ADAPT_IMPORT_CAPTION_JSONL_H

#include <stddef.h>

#include "import.h"
#include "import_json.h"

/* data is the whole file, kept alive by the caller until the reader is closed. */
int import_caption_reader_open(import_reader *r, const char *source, const char *data,
                               size_t len, adapt_error *err);
int import_caption_record_parse(const import_json_span *span, import_record *rec);

#endif
