/* import: the pipeline behind `adaptctl data import` — annotation records in, a corpus out.
 *
 * A format module (import_llava, import_caption_jsonl, import_webdataset) is an import_reader: it
 * turns its source file into import_records, one at a time, on the main thread (parsing JSON is
 * cheap next to decoding an image, and cJSON is not thread-safe in its error reporting). The
 * pipeline hands each record to --jobs worker threads, which read the image file, validate it,
 * build the Sample and compress its frame; the main thread appends the finished frames in record
 * order, so the corpus is the same whatever the thread count. The one idea: a bad record is never
 * an error code lost on a worker — it travels in its slot as a reason (import_reason) to the
 * in-order appender, which either fails the import naming file, record, line, byte and field, or
 * counts it and writes it to the skip report.
 *
 * Decisions (documented for users in `adaptctl data import --help`):
 * - Sample ids: the record's "id" (a string, or a number written in decimal) when present; else
 *   "<source file name>:<record number>" (WebDataset: the sample key). A repeated id is the bad
 *   record reason "duplicate_id": the first record keeps it.
 * - Image paths are resolved under ROOT (--images, default the annotation file's directory).
 *   After lexical normalization a relative path may not climb out of ROOT with "..", and an
 *   absolute path is accepted only when it lies under ROOT; otherwise "image_outside_root".
 *   Symbolic links inside ROOT are followed: the rule guards against what annotation files name,
 *   not against links the owner of ROOT made.
 * - With --on-bad skip the report is "<out dir>.skipped.jsonl", next to the corpus, one JSON
 *   object per skipped record: source, record, line, offset, id, reason, field, detail.
 * - A file that is not a JSON array / tar archive at all (unbalanced brackets, truncated tar) is
 *   fatal in both modes: records cannot be told apart, so they cannot be skipped one by one. */
#ifndef ADAPT_IMPORT_H
#define ADAPT_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum import_reason {
    IMPORT_REASON_OK = 0,
    IMPORT_REASON_MISSING_FILE,       /* the image file does not exist or cannot be read */
    IMPORT_REASON_UNDECODABLE_IMAGE,  /* not a JPEG/PNG, damaged, truncated */
    IMPORT_REASON_EMPTY_CAPTION,      /* no caption and no assistant turn, or only whitespace */
    IMPORT_REASON_NO_IMAGE,           /* the record names no image */
    IMPORT_REASON_BAD_RECORD,         /* malformed JSON, a field of the wrong type, unknown role */
    IMPORT_REASON_OUTSIDE_ROOT,       /* the image path leaves the --images root */
    IMPORT_REASON_DUPLICATE_ID,       /* the id of an earlier record */
    IMPORT_REASON_COUNT
} import_reason;

/* "missing_file", "undecodable_image", ... as in the manifest and the report. */
const char *import_reason_name(import_reason reason);

typedef enum import_format {
    IMPORT_FORMAT_AUTO = 0,
    IMPORT_FORMAT_LLAVA,          /* LLaVA JSON or JSONL, told apart by the first character */
    IMPORT_FORMAT_LLAVA_JSON,
    IMPORT_FORMAT_LLAVA_JSONL,
    IMPORT_FORMAT_CAPTION_JSONL,
    IMPORT_FORMAT_WEBDATASET,
} import_format;

const char *import_format_name(import_format format);
/* Accepts the names above ("llava_json", ...) and "llava", "caption", "wds". */
int import_format_parse(const char *name, import_format *out);
/* Picks the format of one source from its first bytes (and name, for tar files). head holds
 * up to the first 64 KiB of the file. */
int import_format_detect(const char *path, const char *head, size_t head_len,
                         import_format requested, import_format *out, adapt_error *err);

typedef enum import_role {
    IMPORT_ROLE_SYSTEM = 1,       /* same numbers as Adaptd__Turn__Role */
    IMPORT_ROLE_USER = 2,
    IMPORT_ROLE_ASSISTANT = 3,
} import_role;

typedef struct import_turn {
    import_role role;
    char       *text;
} import_turn;

/* One annotation record as a reader hands it over. All pointers are owned by the record. */
typedef struct import_record {
    uint64_t     record;      /* 0-based record number within its source */
    uint64_t     line;        /* 1-based line where it starts; 0 for tar members */
    uint64_t     offset;      /* byte offset where it starts */
    char        *id;          /* NULL: derived from source and record number */
    int          has_image;   /* the record names an image (path or tar member) */
    char        *image_path;  /* as written in the annotation */
    uint8_t     *image;       /* inline bytes (tar member); NULL for a path */
    size_t       image_len;
    char        *image_member;  /* the tar member's name */
    char        *caption;
    import_turn *turns;
    size_t       n_turns;
    size_t       turns_cap;
    /* A fault the reader found; IMPORT_REASON_OK when the record parsed. */
    import_reason reason;
    char         field[96];
    char         detail[512];
} import_record;

void import_record_clear(import_record *r);
/* Marks r bad (the first fault wins) and returns ADAPT_OK: a bad record is data, not an error. */
int  import_record_fail(import_record *r, import_reason reason, const char *field,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Appends a turn, taking a copy of text; ENOMEM on failure. */
int  import_record_add_turn(import_record *r, import_role role, const char *text, size_t len);

/* A source of records. next returns 1 with *rec filled, 0 at the end, negative on a fatal
 * error (I/O, a file whose structure is broken) with err set. */
typedef struct import_reader {
    void *state;
    int  (*next)(void *state, import_record *rec, adapt_error *err);
    void (*close)(void *state);
} import_reader;

void import_reader_close(import_reader *r);

/* Resolves an annotation's image path under root into out (see the rules above). Returns
 * IMPORT_REASON_OK or IMPORT_REASON_OUTSIDE_ROOT; an over-long path is outside too. root_abs is
 * the lexically normalized absolute form of root. */
import_reason import_path_resolve(const char *root, const char *root_abs, const char *image,
                                  char *out, size_t cap);
/* Lexically normalizes an absolute form of path (cwd joined when relative) into out. */
int import_path_absolute(const char *path, char *out, size_t cap, adapt_error *err);

typedef struct import_options {
    const char *const *inputs;     /* annotation files or tar shards */
    size_t       n_inputs;
    import_format format;          /* IMPORT_FORMAT_AUTO: detected per input */
    const char  *images_root;      /* NULL: each annotation file's directory */
    const char  *out_dir;
    const char  *name;             /* NULL: the out dir's base name */
    uint64_t     shard_size;       /* records per shard */
    int          jobs;             /* worker threads, >= 1 */
    int          validate_full;    /* decode every image completely (else header only) */
    int          skip_bad;         /* --on-bad skip */
    int          zstd_level;
} import_options;

typedef struct import_stats {
    uint64_t records_read;
    uint64_t records_written;
    uint64_t records_skipped;
    uint64_t skips[IMPORT_REASON_COUNT];
    uint64_t image_bytes;          /* encoded image bytes stored */
    uint64_t source_bytes;         /* annotation and tar bytes read */
    double   seconds;
    char     report_path[4096];    /* empty unless skipping */
} import_stats;

/* Runs an import. On failure nothing that looks like a corpus is left behind (the corpus
 * builder's "<dir>.partial" is removed, as is the report). */
int import_run(const import_options *opt, import_stats *stats, adapt_error *err);

#endif
