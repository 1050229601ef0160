/* import_json: record boundaries in JSON annotation files, and the fields LLaVA-style records share.
 *
 * The one idea: a small scanner finds where each record starts and ends — a line of JSONL, or an
 * element of a top-level JSON array, tracking only strings and bracket depth — and cJSON parses
 * that one record. A 1 GB LLaVA file is never one tree in memory, every record knows its line and
 * byte offset for error messages, and a malformed record is one bad record, not a failed file. */
#ifndef ADAPT_IMPORT_JSON_H
#define ADAPT_IMPORT_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "import.h"

typedef struct import_json_span {
    const char *text;    /* points into the cursor's data */
    size_t      len;
    uint64_t    line;    /* 1-based line of text[0] */
    uint64_t    offset;  /* byte offset of text[0] in the file */
} import_json_span;

typedef struct import_json_cursor {
    const char *source;  /* for messages */
    const char *data;
    size_t      len;
    size_t      pos;
    uint64_t    line;        /* line number at pos */
    int         array;       /* 1: elements of a top-level array; 0: lines of JSONL */
    int         state;       /* array: 0 before '[', 1 inside, 2 after ']' */
} import_json_cursor;

/* data must outlive the cursor and the spans it returns. */
void import_json_cursor_init(import_json_cursor *c, const char *source, const char *data,
                             size_t len, int array);
/* 1 with *span set, 0 at the end, ECORRUPT when the array's structure is broken (message names
 * source, line and byte). Blank JSONL lines are not records. */
int  import_json_next(import_json_cursor *c, import_json_span *span, adapt_error *err);

/* Parses one record. On malformed JSON marks rec bad (field "" and a detail naming line, column
 * and byte of the fault) and returns NULL; NULL with rec untouched only when out of memory. */
cJSON *import_json_parse(const import_json_span *span, import_record *rec);

/* Field extraction: each copies what it finds into rec, marks rec bad on a field of the wrong
 * type, and returns ADAPT_OK or ADAPT_ENOMEM. */
/* Fills rec from one record's text; a malformed record leaves rec marked bad. ADAPT_OK or
 * ADAPT_ENOMEM. Each JSON format (import_llava, import_caption_jsonl) supplies one. */
typedef int (*import_json_record_parse_fn)(const import_json_span *span, import_record *rec);

/* An import_reader over a JSON array (array = 1) or JSONL file held in data (kept alive by the
 * caller until the reader is closed): numbers the records and hands each one's text to parse. */
int import_json_reader_open(import_reader *r, const char *source, const char *data, size_t len,
                            int array, import_json_record_parse_fn parse, adapt_error *err);

int import_json_take_id(const cJSON *obj, import_record *rec);
int import_json_take_image(const cJSON *obj, import_record *rec);
int import_json_take_caption(const cJSON *obj, import_record *rec);
int import_json_take_conversations(const cJSON *obj, import_record *rec);
/* When rec has no caption: the first assistant turn's text (LLaVA's convention). */
int import_json_default_caption(import_record *rec);

#endif
