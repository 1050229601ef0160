/* import_json: the JSON record scanner and field extraction; see import_json.h.
 *
 * The scanner never interprets values: it only needs to know when it is inside a string (where
 * brackets and newlines do not count) and how deep the brackets are. Whether the record between
 * the boundaries is valid JSON is cJSON's judgement, per record. */
#include "import_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void import_json_cursor_init(import_json_cursor *c, const char *source, const char *data,
                             size_t len, int array)
{
    memset(c, 0, sizeof *c);
    c->source = source;
    c->data = data;
    c->len = len;
    c->line = 1;
    c->array = array;
    /* A UTF-8 byte order mark is not part of the JSON text. */
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) c->pos = 3;
}

/* Moves pos forward to to, counting the newlines passed. */
static void cursor_advance(import_json_cursor *c, size_t to)
{
    const char *p = c->data + c->pos, *end = c->data + to;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        c->line++;
        p++;
    }
    c->pos = to;
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static void cursor_skip_space(import_json_cursor *c)
{
    size_t i = c->pos;
    while (i < c->len && is_space(c->data[i])) i++;
    cursor_advance(c, i);
}

static int cursor_broken(const import_json_cursor *c, size_t at, const char *what,
                         adapt_error *err)
{
    /* The line of a later position is counted without moving the cursor. */
    uint64_t line = c->line;
    for (size_t i = c->pos; i < at && i < c->len; i++) line += c->data[i] == '\n';
    return adapt_fail(err, ADAPT_ECORRUPT,
                      "%s: not a JSON array of records: %s at line %llu, byte %zu; the records "
                      "after it cannot be separated, so the file cannot be imported (fix it, or "
                      "convert it to JSONL)", c->source, what, (unsigned long long)line, at);
}

/* End (exclusive) of the JSON value starting at start, or 0 when the data ends inside it. */
static size_t value_end(const char *d, size_t len, size_t start)
{
    char first = d[start];
    if (first != '{' && first != '[' && first != '"') {
        size_t i = start;
        while (i < len && !is_space(d[i]) && d[i] != ',' && d[i] != ']' && d[i] != '}') i++;
        return i;
    }
    size_t depth = 0;
    int in_string = 0;
    for (size_t i = start; i < len; i++) {
        char ch = d[i];
        if (in_string) {
            if (ch == '\\') i++;
            else if (ch == '"') {
                in_string = 0;
                if (depth == 0) return i + 1;
            }
        } else if (ch == '"') {
            in_string = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth == 0) return i + 1;
        }
    }
    return 0;
}

static int array_next(import_json_cursor *c, import_json_span *span, adapt_error *err)
{
    cursor_skip_space(c);
    if (c->state == 0) {
        if (c->pos == c->len) {   /* an empty file: no records */
            c->state = 2;
            return 0;
        }
        if (c->data[c->pos] != '[') return cursor_broken(c, c->pos, "expected '['", err);
        cursor_advance(c, c->pos + 1);
        cursor_skip_space(c);
        c->state = 1;
        if (c->pos < c->len && c->data[c->pos] == ']') {
            cursor_advance(c, c->pos + 1);
            c->state = 2;
        }
    }
    if (c->state == 2) {
        cursor_skip_space(c);
        if (c->pos != c->len) return cursor_broken(c, c->pos, "text after the closing ']'", err);
        return 0;
    }
    if (c->pos == c->len) return cursor_broken(c, c->pos, "the file ends before ']'", err);
    if (c->data[c->pos] == ',' || c->data[c->pos] == ']')
        return cursor_broken(c, c->pos, "a missing record between commas", err);
    size_t end = value_end(c->data, c->len, c->pos);
    if (end == 0) return cursor_broken(c, c->pos, "a record that never ends", err);
    span->text = c->data + c->pos;
    span->len = end - c->pos;
    span->line = c->line;
    span->offset = c->pos;
    cursor_advance(c, end);
    cursor_skip_space(c);
    if (c->pos == c->len) return cursor_broken(c, c->pos, "the file ends before ']'", err);
    char sep = c->data[c->pos];
    if (sep != ',' && sep != ']')
        return cursor_broken(c, c->pos, "expected ',' or ']' after a record", err);
    cursor_advance(c, c->pos + 1);
    if (sep == ']') c->state = 2;
    return 1;
}

static int lines_next(import_json_cursor *c, import_json_span *span)
{
    while (c->pos < c->len) {
        const char *start = c->data + c->pos;
        const char *nl = memchr(start, '\n', c->len - c->pos);
        size_t n = nl ? (size_t)(nl - start) : c->len - c->pos;
        size_t trimmed = n;
        if (trimmed > 0 && start[trimmed - 1] == '\r') trimmed--;
        size_t i = 0;
        while (i < trimmed && is_space(start[i])) i++;
        uint64_t line = c->line;
        size_t offset = c->pos;
        c->pos += n + (nl ? 1 : 0);
        if (nl) c->line++;
        if (i == trimmed) continue;   /* a blank line */
        span->text = start;
        span->len = trimmed;
        span->line = line;
        span->offset = offset;
        return 1;
    }
    return 0;
}

int import_json_next(import_json_cursor *c, import_json_span *span, adapt_error *err)
{
    return c->array ? array_next(c, span, err) : lines_next(c, span);
}

cJSON *import_json_parse(const import_json_span *span, import_record *rec)
{
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(span->text, span->len, &end, 0);
    if (obj) {
        /* cJSON stops after the first value; anything but spaces after it is a second value. */
        const char *p = end, *stop = span->text + span->len;
        while (p < stop && is_space(*p)) p++;
        if (p == stop) return obj;
        cJSON_Delete(obj);
        end = p;
    }
    if (!end || end < span->text || end > span->text + span->len) end = span->text;
    size_t at = (size_t)(end - span->text);
    uint64_t line = span->line, column = 1;
    for (size_t i = 0; i < at; i++) {
        if (span->text[i] == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    char near[24];
    size_t n = 0;
    for (size_t i = at; i < span->len && n < 16; i++)
        near[n++] = span->text[i] >= 0x20 && span->text[i] < 0x7F ? span->text[i] : '?';
    near[n] = '\0';
    import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "",
                       "malformed JSON at line %llu, column %llu, byte %llu%s%s%s",
                       (unsigned long long)line, (unsigned long long)column,
                       (unsigned long long)(span->offset + at), n ? " near \"" : " (at its end)",
                       near, n ? "\"" : "");
    return NULL;
}

static char *copy_string(const char *s)
{
    return strdup(s ? s : "");
}

int import_json_take_id(const cJSON *obj, import_record *rec)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
    if (!id || cJSON_IsNull(id)) return ADAPT_OK;
    char buf[64];
    const char *text;
    if (cJSON_IsString(id)) {
        text = id->valuestring;
    } else if (cJSON_IsNumber(id)) {
        double v = id->valuedouble;
        /* The range test comes first: casting a double beyond long long is undefined. */
        if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(long long)v)
            snprintf(buf, sizeof buf, "%lld", (long long)v);
        else if (snprintf(buf, sizeof buf, "%.15g", v) > 0 && strtod(buf, NULL) != v)
            snprintf(buf, sizeof buf, "%.17g", v);   /* 15 digits did not round-trip */
        text = buf;
    } else {
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "id",
                                  "must be a string or a number");
    }
    if (!text[0]) return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "id", "is empty");
    rec->id = copy_string(text);
    return rec->id ? ADAPT_OK : ADAPT_ENOMEM;
}

int import_json_take_image(const cJSON *obj, import_record *rec)
{
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(obj, "image");
    if (!img || cJSON_IsNull(img)) return ADAPT_OK;   /* no image: the pipeline's "no_image" */
    if (cJSON_IsArray(img)) {
        int n = cJSON_GetArraySize(img);
        if (n == 0) return ADAPT_OK;
        if (n > 1)
            return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "image",
                                      "names %d images; a Sample holds one", n);
        img = cJSON_GetArrayItem(img, 0);
    }
    if (!cJSON_IsString(img))
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "image",
                                  "must be a string (a path under the images root)");
    if (!img->valuestring[0]) return ADAPT_OK;
    rec->image_path = copy_string(img->valuestring);
    if (!rec->image_path) return ADAPT_ENOMEM;
    rec->has_image = 1;
    return ADAPT_OK;
}

int import_json_take_caption(const cJSON *obj, import_record *rec)
{
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(obj, "caption");
    if (!cap || cJSON_IsNull(cap)) return ADAPT_OK;
    if (!cJSON_IsString(cap))
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "caption", "must be a string");
    rec->caption = copy_string(cap->valuestring);
    return rec->caption ? ADAPT_OK : ADAPT_ENOMEM;
}

static int role_parse(const char *from, import_role *role)
{
    static const struct { const char *name; import_role role; } roles[] = {
        {"human", IMPORT_ROLE_USER},      {"user", IMPORT_ROLE_USER},
        {"gpt", IMPORT_ROLE_ASSISTANT},   {"assistant", IMPORT_ROLE_ASSISTANT},
        {"system", IMPORT_ROLE_SYSTEM},
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(from, roles[i].name)) {
            *role = roles[i].role;
            return 1;
        }
    return 0;
}

int import_json_take_conversations(const cJSON *obj, import_record *rec)
{
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(obj, "conversations");
    if (!conv || cJSON_IsNull(conv)) return ADAPT_OK;
    if (!cJSON_IsArray(conv))
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, "conversations",
                                  "must be an array of {\"from\", \"value\"} turns");
    int i = 0;
    const cJSON *turn;
    cJSON_ArrayForEach(turn, conv) {
        char field[64];
        const cJSON *from = cJSON_GetObjectItemCaseSensitive(turn, "from");
        const cJSON *value = cJSON_GetObjectItemCaseSensitive(turn, "value");
        import_role role;
        if (!cJSON_IsObject(turn)) {
            snprintf(field, sizeof field, "conversations[%d]", i);
            return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, field, "must be an object");
        }
        if (!cJSON_IsString(from) || !role_parse(from->valuestring, &role)) {
            snprintf(field, sizeof field, "conversations[%d].from", i);
            return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, field,
                                      "must be \"human\", \"gpt\", \"system\", \"user\" or "
                                      "\"assistant\"");
        }
        if (!cJSON_IsString(value)) {
            snprintf(field, sizeof field, "conversations[%d].value", i);
            return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, field, "must be a string");
        }
        int rc = import_record_add_turn(rec, role, value->valuestring, strlen(value->valuestring));
        if (rc) return rc;
        i++;
    }
    return ADAPT_OK;
}

int import_json_default_caption(import_record *rec)
{
    if (rec->caption) return ADAPT_OK;
    for (size_t i = 0; i < rec->n_turns; i++)
        if (rec->turns[i].role == IMPORT_ROLE_ASSISTANT) {
            rec->caption = copy_string(rec->turns[i].text);
            return rec->caption ? ADAPT_OK : ADAPT_ENOMEM;
        }
    return ADAPT_OK;
}

/* --- the record reader shared by the JSON formats -------------------------------------------- */

typedef struct json_reader {
    import_json_cursor          cursor;
    uint64_t                    record;
    import_json_record_parse_fn parse;
} json_reader;

static int json_reader_next(void *state, import_record *rec, adapt_error *err)
{
    json_reader *r = state;
    import_json_span span;
    int rc = import_json_next(&r->cursor, &span, err);
    if (rc <= 0) return rc;
    rec->record = r->record++;
    rec->line = span.line;
    rec->offset = span.offset;
    if (r->parse(&span, rec))
        return adapt_fail(err, ADAPT_ENOMEM, "%s: record %llu: out of memory", r->cursor.source,
                          (unsigned long long)rec->record);
    return 1;
}

static void json_reader_close(void *state)
{
    free(state);
}

int import_json_reader_open(import_reader *r, const char *source, const char *data, size_t len,
                            int array, import_json_record_parse_fn parse, adapt_error *err)
{
    json_reader *s = calloc(1, sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", source);
    import_json_cursor_init(&s->cursor, source, data, len, array);
    s->parse = parse;
    r->state = s;
    r->next = json_reader_next;
    r->close = json_reader_close;
    return ADAPT_OK;
}
