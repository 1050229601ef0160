/* import_caption_jsonl: the caption JSONL reader; see import_caption_jsonl.h. */
#include "import_caption_jsonl.h"

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

int import_caption_reader_open(import_reader *r, const char *source, const char *data,
                               size_t len, adapt_error *err)
{
    return import_json_reader_open(r, source, data, len, 0, import_caption_record_parse, err);
}
