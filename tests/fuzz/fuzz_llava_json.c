/* fuzz_llava_json: arbitrary bytes as an annotation file through the importer's record path.
 *
 * The input is read the ways `adaptctl data import` reads an annotation file: format detection on
 * its head, then the LLaVA reader as a JSON array and as JSONL, and the caption JSONL reader; every
 * record that names an image has its path resolved under a root, as the workers do. Nothing may
 * crash, leak or read outside the input, however the JSON is broken: the input is copied into a
 * buffer of exactly its size without a terminating NUL, as a mapped file is, because the scanner
 * and cJSON must work on lengths, never on terminators. */
#include "import.h"
#include "import_caption_jsonl.h"
#include "import_llava.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Reads every record of one reader; returns how many there were. */
static uint64_t drain(import_reader *r)
{
    import_record rec;
    adapt_error err = {0};
    uint64_t n = 0;
    memset(&rec, 0, sizeof rec);
    while (r->next(r->state, &rec, &err) == 1) {
        char path[PATH_MAX];
        if (rec.has_image && rec.image_path)
            import_path_resolve("/data/images", "/data/images", rec.image_path, path, sizeof path);
        if (rec.reason) import_reason_name(rec.reason);
        import_record_clear(&rec);
        n++;
    }
    import_record_clear(&rec);
    import_reader_close(r);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so a read past the end is caught by ASan. */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    import_format f;
    adapt_error err = {0};
    import_format_detect("fuzz.json", text, size < 65536 ? size : 65536, IMPORT_FORMAT_AUTO, &f,
                         &err);
    import_reader r;
    for (int array = 0; array < 2; array++)
        if (import_llava_reader_open(&r, "fuzz.json", text, size, array, &err) == 0) drain(&r);
    if (import_caption_reader_open(&r, "fuzz.jsonl", text, size, &err) == 0) drain(&r);
    free(text);
    return 0;
}
