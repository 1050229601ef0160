/* import_llava: LLaVA-style annotations — a top-level JSON array (llava_json) or one object per
 * line (llava_jsonl) with "image" and "conversations".
 *
 * Each record is {"id"?, "image", "conversations": [{"from": "human"|"gpt"|..., "value"}],
 * "caption"?}. Every turn is kept with its role and its text exactly as written ("<image>" tokens
 * included); the caption is the "caption" field, or else the first "gpt" turn. The one idea: the
 * file is scanned, not parsed whole (import_json), so records keep their line and byte offset. */
#ifndef ADAPT_IMPORT_LLAVA_H
#define ADAPT_IMPORT_LLAVA_H

#include <stddef.h>

#include "import.h"
#include "import_json.h"

/* Reads records from data (the whole annotation file, kept alive by the caller until the reader
 * is closed). array: 1 for a JSON array, 0 for JSONL. */
int import_llava_reader_open(import_reader *r, const char *source, const char *data, size_t len,
                             int array, adapt_error *err);

/* Fills rec from one record's text; a malformed record leaves rec marked bad. ADAPT_OK or
 * ADAPT_ENOMEM. */
int import_llava_record_parse(const import_json_span *span, import_record *rec);

#endif
