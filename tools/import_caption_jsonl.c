/* import_caption_jsonl: the caption JSONL reader; see import_caption_jsonl.h. */
#include "import_caption_jsonl.h"

#include <stdlib.h>

typedef struct caption_reader {
    import_json_cursor cursor;
    uint64_t           record;
} caption_reader;

int import_caption_record_parse(const import_json_span *span, import_record *rec)
{
    cJSON *obj = import_json_parse(span, rec);
    if (!obj) return rec->reason ? ADAPT_OK : ADAPT_ENOMEM;
    int rc = ADAPT_OK;
    if (!cJSON_IsObject(obj))
        rc = import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "",
                                "a record must be a JSON object with \"image\" and \"caption\"");
    if (!rc) rc = import_json_take_id(obj, rec);
    if (!rc) rc = import_json_take_image(obj, rec);
    if (!rc) rc = import_json_take_caption(obj, rec);
    cJSON_Delete(obj);
    return rc;
}

static int caption_next(void *state, import_record *rec, adapt_error *err)
{
    caption_reader *r = state;
    import_json_span span;
    int rc = import_json_next(&r->cursor, &span, err);
    if (rc <= 0) return rc;
    rec->record = r->record++;
    rec->line = span.line;
    rec->offset = span.offset;
    if (import_caption_record_parse(&span, rec))
        return adapt_fail(err, ADAPT_ENOMEM, "%s: record %llu: out of memory", r->cursor.source,
                          (unsigned long long)rec->record);
    return 1;
}

static void caption_close(void *state)
{
    free(state);
}

int import_caption_reader_open(import_reader *r, const char *source, const char *data,
                               size_t len, adapt_error *err)
{
    caption_reader *s = calloc(1, sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", source);
    import_json_cursor_init(&s->cursor, source, data, len, 0);
    r->state = s;
    r->next = caption_next;
    r->close = caption_close;
    return ADAPT_OK;
}
