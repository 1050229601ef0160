/* import_llava: the LLaVA JSON / JSONL reader; see import_llava.h. */
#include "import_llava.h"

int import_llava_record_parse(const import_json_span *span, import_record *rec)
{
    cJSON *obj = import_json_parse(span, rec);
    if (!obj) return rec->reason ? ADAPT_OK : ADAPT_ENOMEM;
    int rc = ADAPT_OK;
    if (!cJSON_IsObject(obj))
        rc = import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "", "a record must be a JSON "
                                "object with \"image\" and \"conversations\"");
    if (!rc) rc = import_json_take_id(obj, rec);
    if (!rc) rc = import_json_take_image(obj, rec);
    if (!rc) rc = import_json_take_conversations(obj, rec);
    if (!rc) rc = import_json_take_caption(obj, rec);
    if (!rc) rc = import_json_default_caption(rec);
    cJSON_Delete(obj);
    return rc;
}

int import_llava_reader_open(import_reader *r, const char *source, const char *data, size_t len,
                             int array, adapt_error *err)
{
    return import_json_reader_open(r, source, data, len, array, import_llava_record_parse, err);
}
