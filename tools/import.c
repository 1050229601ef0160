/* import: records, paths, format detection and the threaded pipeline; see import.h.
 *
 * The pipeline is a ring of slots. The main thread fills the slot after the newest with the next
 * record from the current reader, workers take filled slots in order and leave a result in them
 * (a compressed frame, or a reason the record is bad), and the main thread consumes the oldest
 * slot once it is done: appends its frame, or fails, or counts and reports the skip. One mutex
 * guards the three counters (produced, taken, consumed) and the slot states; slot contents are
 * only touched by the thread that owns the slot's current stage. */
#include "import.h"

#include "corpus.h"
#include "image_decode.h"
#include "import_caption_jsonl.h"
#include "import_llava.h"
#include "import_webdataset.h"
#include "shard.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* An image file larger than this is not read (a bad record): no corpus image needs 64 MiB. */
#define IMPORT_MAX_IMAGE_BYTES ((size_t)64 << 20)

/* --- names ----------------------------------------------------------------------------------- */

static const char *const reason_names[IMPORT_REASON_COUNT] = {
    [IMPORT_REASON_OK]                = "ok",
    [IMPORT_REASON_MISSING_FILE]      = "missing_file",
    [IMPORT_REASON_UNDECODABLE_IMAGE] = "undecodable_image",
    [IMPORT_REASON_EMPTY_CAPTION]     = "empty_caption",
    [IMPORT_REASON_NO_IMAGE]          = "no_image",
    [IMPORT_REASON_BAD_RECORD]        = "bad_record",
    [IMPORT_REASON_OUTSIDE_ROOT]      = "image_outside_root",
    [IMPORT_REASON_DUPLICATE_ID]      = "duplicate_id",
};

const char *import_reason_name(import_reason reason)
{
    return (unsigned)reason < IMPORT_REASON_COUNT ? reason_names[reason] : "unknown";
}

static const struct { const char *name; import_format format; } format_names[] = {
    {"auto",          IMPORT_FORMAT_AUTO},
    {"llava",         IMPORT_FORMAT_LLAVA},
    {"llava_json",    IMPORT_FORMAT_LLAVA_JSON},
    {"llava_jsonl",   IMPORT_FORMAT_LLAVA_JSONL},
    {"caption_jsonl", IMPORT_FORMAT_CAPTION_JSONL},
    {"caption",       IMPORT_FORMAT_CAPTION_JSONL},
    {"webdataset",    IMPORT_FORMAT_WEBDATASET},
    {"wds",           IMPORT_FORMAT_WEBDATASET},
};

const char *import_format_name(import_format format)
{
    for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
        if (format_names[i].format == format) return format_names[i].name;
    return "unknown";
}

int import_format_parse(const char *name, import_format *out)
{
    for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
        if (!strcmp(name, format_names[i].name)) {
            *out = format_names[i].format;
            return ADAPT_OK;
        }
    return ADAPT_EINVAL;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* JSONL: LLaVA when the first record that parses has "conversations", plain captions else. */
static import_format jsonl_flavour(const char *head, size_t len)
{
    import_json_cursor c;
    import_json_span span;
    import_json_cursor_init(&c, "", head, len, 0);
    while (import_json_next(&c, &span, NULL) == 1) {
        cJSON *obj = cJSON_ParseWithLength(span.text, span.len);
        if (!obj) continue;
        int llava = cJSON_IsObject(obj) && cJSON_GetObjectItemCaseSensitive(obj, "conversations");
        cJSON_Delete(obj);
        return llava ? IMPORT_FORMAT_LLAVA_JSONL : IMPORT_FORMAT_CAPTION_JSONL;
    }
    /* No whole line in the head (a huge first record, or all malformed): look for the key. */
    return memmem(head, len, "\"conversations\"", 15) ? IMPORT_FORMAT_LLAVA_JSONL
                                                      : IMPORT_FORMAT_CAPTION_JSONL;
}

int import_format_detect(const char *path, const char *head, size_t head_len,
                         import_format requested, import_format *out, adapt_error *err)
{
    if (requested != IMPORT_FORMAT_AUTO && requested != IMPORT_FORMAT_LLAVA) {
        *out = requested;
        return ADAPT_OK;
    }
    int ustar = head_len >= 263 && !memcmp(head + 257, "ustar", 5);
    if (requested == IMPORT_FORMAT_AUTO && (ustar || has_suffix(path, ".tar"))) {
        *out = IMPORT_FORMAT_WEBDATASET;
        return ADAPT_OK;
    }
    size_t i = head_len >= 3 && !memcmp(head, "\xEF\xBB\xBF", 3) ? 3 : 0;
    while (i < head_len && (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' ||
                            head[i] == '\r'))
        i++;
    if (i == head_len) {   /* empty: zero records of the format its name suggests */
        *out = has_suffix(path, ".json") ? IMPORT_FORMAT_LLAVA_JSON
               : requested == IMPORT_FORMAT_LLAVA ? IMPORT_FORMAT_LLAVA_JSONL
                                                  : IMPORT_FORMAT_CAPTION_JSONL;
        return ADAPT_OK;
    }
    if (head[i] == '[') {
        *out = IMPORT_FORMAT_LLAVA_JSON;
        return ADAPT_OK;
    }
    if (head[i] == '{') {
        *out = requested == IMPORT_FORMAT_LLAVA ? IMPORT_FORMAT_LLAVA_JSONL
                                                : jsonl_flavour(head, head_len);
        return ADAPT_OK;
    }
    return adapt_fail(err, ADAPT_EINVAL,
                      "%s: cannot tell its format (not a JSON array, not JSONL, not a tar file); "
                      "name it with --format", path);
}

/* --- records --------------------------------------------------------------------------------- */

void import_record_clear(import_record *r)
{
    free(r->id);
    free(r->image_path);
    free(r->image);
    free(r->image_member);
    free(r->caption);
    for (size_t i = 0; i < r->n_turns; i++) free(r->turns[i].text);
    free(r->turns);
    memset(r, 0, sizeof *r);
}

int import_record_fail(import_record *r, import_reason reason, const char *field,
                       const char *fmt, ...)
{
    if (r->reason) return ADAPT_OK;
    r->reason = reason;
    snprintf(r->field, sizeof r->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
    return ADAPT_OK;
}

int import_record_add_turn(import_record *r, import_role role, const char *text, size_t len)
{
    if (r->n_turns == r->turns_cap) {
        size_t cap = r->turns_cap ? r->turns_cap * 2 : 4;
        import_turn *t = realloc(r->turns, cap * sizeof *t);
        if (!t) return ADAPT_ENOMEM;
        r->turns = t;
        r->turns_cap = cap;
    }
    char *copy = strndup(text, len);
    if (!copy) return ADAPT_ENOMEM;
    r->turns[r->n_turns].role = role;
    r->turns[r->n_turns].text = copy;
    r->n_turns++;
    return ADAPT_OK;
}

void import_reader_close(import_reader *r)
{
    if (r->close && r->state) r->close(r->state);
    r->state = NULL;
}

/* --- paths ----------------------------------------------------------------------------------- */

/* Appends the components of path to out[0..*n) with "." dropped and ".." popping one; returns
 * -1 when ".." would climb above out's start (base is the length that may not be popped). */
static int path_append(char *out, size_t *n, size_t base, size_t cap, const char *path)
{
    const char *p = path;
    while (*p) {
        while (*p == '/') p++;
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (*n <= base) return -1;
            while (*n > base && out[*n - 1] != '/') (*n)--;
            if (*n > base) (*n)--;   /* the slash before the popped component */
        } else {
            int slash = *n > 0 && out[*n - 1] != '/';
            if (*n + (size_t)slash + len + 1 > cap) return -1;
            if (slash) out[(*n)++] = '/';
            memcpy(out + *n, p, len);
            *n += len;
        }
        p = end;
    }
    out[*n] = '\0';
    return 0;
}

int import_path_absolute(const char *path, char *out, size_t cap, adapt_error *err)
{
    char cwd[PATH_MAX];
    if (cap < 2) return adapt_fail(err, ADAPT_EINVAL, "path buffer too small");
    size_t n = 1;
    out[0] = '/';
    out[1] = '\0';
    if (path[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return adapt_fail(err, ADAPT_EIO, "getcwd: %s", strerror(errno));
        if (path_append(out, &n, 1, cap, cwd))
            return adapt_fail(err, ADAPT_EINVAL, "path too long: %s", cwd);
    }
    /* ".." above "/" stays at "/", as the kernel resolves it. */
    char *tmp = strdup(path);
    if (!tmp) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    int rc = ADAPT_OK;
    for (char *p = tmp, *end; *p; p = end) {
        end = strchrnul(p, '/');
        char saved = *end;
        *end = '\0';
        if (path_append(out, &n, 1, cap, p) && strcmp(p, "..") != 0)
            rc = adapt_fail(err, ADAPT_EINVAL, "path too long: %s", path);
        *end = saved;
        while (*end == '/') end++;
        if (rc) break;
    }
    free(tmp);
    return rc;
}

import_reason import_path_resolve(const char *root, const char *root_abs, const char *image,
                                  char *out, size_t cap)
{
    if (image[0] == '/') {
        char norm[PATH_MAX];
        if (import_path_absolute(image, norm, sizeof norm, NULL)) return IMPORT_REASON_OUTSIDE_ROOT;
        size_t rl = strlen(root_abs);
        int under = rl == 1 ? 1 : !strncmp(norm, root_abs, rl) && norm[rl] == '/';
        if (!under || strlen(norm) + 1 > cap) return IMPORT_REASON_OUTSIDE_ROOT;
        memcpy(out, norm, strlen(norm) + 1);
        return IMPORT_REASON_OK;
    }
    size_t n = strlen(root);
    if (n + 2 > cap) return IMPORT_REASON_OUTSIDE_ROOT;
    memcpy(out, root, n);
    while (n > 1 && out[n - 1] == '/') n--;
    if (n > 0 && out[n - 1] != '/') out[n++] = '/';
    out[n] = '\0';
    if (path_append(out, &n, n, cap, image)) return IMPORT_REASON_OUTSIDE_ROOT;
    return IMPORT_REASON_OK;
}

/* --- sources --------------------------------------------------------------------------------- */

/* One input file while it is being read. */
typedef struct import_source {
    const char   *path;
    import_format format;
    char         *root;           /* where relative image paths are resolved */
    char          root_abs[PATH_MAX];
    const char   *base;           /* file name, for derived ids */
    char         *map;            /* the whole annotation file (JSON formats) */
    size_t        map_len;
    import_reader reader;
} import_source;

/* Ends reading; records already taken from the source keep pointing at its path and root. */
static void source_finish(import_source *s)
{
    import_reader_close(&s->reader);
    if (s->map && s->map_len) munmap(s->map, s->map_len);
    s->map = NULL;
    s->map_len = 0;
}

static void source_close(import_source *s)
{
    source_finish(s);
    free(s->root);
    s->root = NULL;
}

static int source_map(import_source *s, int fd, size_t len, adapt_error *err)
{
    if (len == 0) return ADAPT_OK;
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return adapt_fail(err, ADAPT_EIO, "reading %s: %s", s->path, strerror(errno));
    madvise(p, len, MADV_SEQUENTIAL);
    s->map = p;
    s->map_len = len;
    return ADAPT_OK;
}

static int source_root(import_source *s, const char *images_root, adapt_error *err)
{
    if (images_root) {
        s->root = strdup(images_root);
    } else {
        const char *slash = strrchr(s->path, '/');
        s->root = slash ? strndup(s->path, slash == s->path ? 1 : (size_t)(slash - s->path))
                        : strdup(".");
    }
    if (!s->root) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    return import_path_absolute(s->root, s->root_abs, sizeof s->root_abs, err);
}

/* Opens input path: detects its format and starts the matching reader. */
static int source_open(import_source *s, const char *path, const import_options *opt,
                       uint64_t *bytes, adapt_error *err)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    const char *slash = strrchr(path, '/');
    s->base = slash ? slash + 1 : path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO, "opening %s: %s",
                          path, strerror(errno));
    struct stat st = {0};
    char head[65536];
    ssize_t got = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? pread(fd, head, sizeof head, 0) : -1;
    int rc = got < 0 ? adapt_fail(err, ADAPT_EIO, "reading %s: %s", path,
                                  S_ISREG(st.st_mode) ? strerror(errno) : "not a regular file")
                     : import_format_detect(path, head, (size_t)got, opt->format, &s->format, err);
    if (!rc) rc = source_root(s, opt->images_root, err);
    if (!rc) *bytes += (uint64_t)st.st_size;
    if (!rc && s->format == IMPORT_FORMAT_WEBDATASET) {
        rc = import_webdataset_reader_open(&s->reader, path, err);
    } else if (!rc) {
        rc = source_map(s, fd, (size_t)st.st_size, err);
        if (!rc && s->format == IMPORT_FORMAT_CAPTION_JSONL)
            rc = import_caption_reader_open(&s->reader, path, s->map, s->map_len, err);
        else if (!rc)
            rc = import_llava_reader_open(&s->reader, path, s->map, s->map_len,
                                          s->format == IMPORT_FORMAT_LLAVA_JSON, err);
    }
    close(fd);
    if (rc) source_close(s);
    return rc;
}

/* --- the work of one record (on a worker thread) --------------------------------------------- */

typedef enum slot_state { SLOT_FREE = 0, SLOT_READY, SLOT_BUSY, SLOT_DONE } slot_state;

typedef struct import_slot {
    import_record        rec;
    const import_source *src;
    slot_state           state;
    int                  fatal;        /* negative: the import cannot go on (out of memory) */
    adapt_error          err;
    char                *id;           /* the Sample id, derived when the record has none */
    uint8_t             *frame;
    size_t               frame_len;
    uint64_t             image_bytes;
} import_slot;

static void slot_clear(import_slot *s)
{
    import_record_clear(&s->rec);
    free(s->id);
    free(s->frame);
    memset(s, 0, sizeof *s);
}

static int caption_is_empty(const char *c)
{
    if (!c) return 1;
    for (; *c; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') return 0;
    return 1;
}

/* Reads the image a record names into *bytes; a failure is the record's fault, never fatal. */
static void slot_read_image(import_slot *s, uint8_t **bytes, size_t *len)
{
    import_record *rec = &s->rec;
    char path[PATH_MAX];
    if (import_path_resolve(s->src->root, s->src->root_abs, rec->image_path, path, sizeof path)) {
        import_record_fail(rec, IMPORT_REASON_OUTSIDE_ROOT, "image",
                           "%s is not under the images root %s", rec->image_path, s->src->root);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        import_record_fail(rec, IMPORT_REASON_MISSING_FILE, "image", "%s (%s): %s",
                           rec->image_path, path, fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0) close(fd);
        return;
    }
    if ((size_t)st.st_size > IMPORT_MAX_IMAGE_BYTES) {
        import_record_fail(rec, IMPORT_REASON_UNDECODABLE_IMAGE, "image",
                           "%s is %lld bytes, over the %zu-byte limit", rec->image_path,
                           (long long)st.st_size, IMPORT_MAX_IMAGE_BYTES);
        close(fd);
        return;
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    size_t n = 0;
    while (buf && n < (size_t)st.st_size) {
        ssize_t got = read(fd, buf + n, (size_t)st.st_size - n);
        if (got <= 0) {
            import_record_fail(rec, IMPORT_REASON_MISSING_FILE, "image", "%s: %s",
                               rec->image_path, got < 0 ? strerror(errno) : "shrank while read");
            break;
        }
        n += (size_t)got;
    }
    close(fd);
    if (!buf) {
        s->fatal = adapt_fail(&s->err, ADAPT_ENOMEM, "out of memory reading %s", path);
    } else if (rec->reason) {
        free(buf);
    } else {
        *bytes = buf;
        *len = n;
    }
}

/* Packs the record as a Sample and compresses its frame into the slot. */
static void slot_encode(import_slot *s, const uint8_t *image, size_t len, const imgdec_info *info,
                        int zstd_level)
{
    const import_record *rec = &s->rec;
    Adaptd__Turn *turns = calloc(rec->n_turns ? rec->n_turns : 1, sizeof *turns);
    Adaptd__Turn **ptrs = calloc(rec->n_turns ? rec->n_turns : 1, sizeof *ptrs);
    if (!turns || !ptrs) {
        s->fatal = adapt_fail(&s->err, ADAPT_ENOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < rec->n_turns; i++) {
            adaptd__turn__init(&turns[i]);
            turns[i].role = (Adaptd__Turn__Role)rec->turns[i].role;
            turns[i].text = rec->turns[i].text;
            ptrs[i] = &turns[i];
        }
        Adaptd__SourceMeta src = ADAPTD__SOURCE_META__INIT;
        src.format = (char *)import_format_name(s->src->format);
        src.file = (char *)s->src->path;
        src.record = rec->record;
        src.image = rec->image_path ? rec->image_path : rec->image_member;
        Adaptd__Sample smp = ADAPTD__SAMPLE__INIT;
        smp.id = s->id;
        smp.image.data = (uint8_t *)image;
        smp.image.len = len;
        smp.media_type = (char *)imgdec_media_type(info->format);
        smp.width = info->width;
        smp.height = info->height;
        smp.caption = rec->caption;
        smp.n_turns = rec->n_turns;
        smp.turns = ptrs;
        smp.source = &src;
        s->fatal = shard_frame_encode(&smp, zstd_level, &s->frame, &s->frame_len, &s->err);
        s->image_bytes = len;
    }
    free(turns);
    free(ptrs);
}

static void slot_process(import_slot *s, imgdec_decoder *dec, const import_options *opt)
{
    import_record *rec = &s->rec;
    if (rec->id) {
        s->id = strdup(rec->id);
    } else if (asprintf(&s->id, "%s:%llu", s->src->base, (unsigned long long)rec->record) < 0) {
        s->id = NULL;
    }
    if (!s->id || !dec) {
        s->fatal = adapt_fail(&s->err, ADAPT_ENOMEM, "out of memory");
        return;
    }
    if (rec->reason) return;
    if (!rec->has_image) {
        import_record_fail(rec, IMPORT_REASON_NO_IMAGE, "image", "the record names no image");
        return;
    }
    if (caption_is_empty(rec->caption)) {
        import_record_fail(rec, IMPORT_REASON_EMPTY_CAPTION, "caption",
                           rec->caption ? "only whitespace"
                                        : "no caption and no assistant (\"gpt\") turn");
        return;
    }
    uint8_t *owned = NULL;
    const uint8_t *image = rec->image;
    size_t len = rec->image_len;
    if (!image) {
        slot_read_image(s, &owned, &len);
        if (rec->reason || s->fatal) return;
        image = owned;
    }
    imgdec_info info;
    adapt_error derr;
    if (imgdec_decoder_validate(dec, image, len, opt->validate_full, &info, &derr)) {
        import_record_fail(rec, IMPORT_REASON_UNDECODABLE_IMAGE, "image", "%s: %s",
                           rec->image_path ? rec->image_path : rec->image_member, derr.message);
    } else {
        slot_encode(s, image, len, &info, opt->zstd_level);
    }
    free(owned);
}

/* --- ids seen so far (main thread) ----------------------------------------------------------- */

typedef struct id_set {
    char  **slots;   /* open addressing, NULL = empty; the strings are owned */
    size_t  cap;     /* a power of two */
    size_t  count;
} id_set;

static uint64_t id_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void id_set_free(id_set *set)
{
    for (size_t i = 0; i < set->cap; i++) free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof *set);
}

static int id_set_grow(id_set *set)
{
    size_t cap = set->cap ? set->cap * 2 : 1024;
    char **slots = calloc(cap, sizeof *slots);
    if (!slots) return ADAPT_ENOMEM;
    for (size_t i = 0; i < set->cap; i++) {
        if (!set->slots[i]) continue;
        size_t j = id_hash(set->slots[i]) & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = set->slots[i];
    }
    free(set->slots);
    set->slots = slots;
    set->cap = cap;
    return ADAPT_OK;
}

/* 1 when id was new (and is now in the set), 0 when seen before, ENOMEM. */
static int id_set_add(id_set *set, const char *id)
{
    if ((set->count + 1) * 2 > set->cap && id_set_grow(set)) return ADAPT_ENOMEM;
    size_t j = id_hash(id) & (set->cap - 1);
    for (; set->slots[j]; j = (j + 1) & (set->cap - 1))
        if (!strcmp(set->slots[j], id)) return 0;
    if (!(set->slots[j] = strdup(id))) return ADAPT_ENOMEM;
    set->count++;
    return 1;
}

/* --- the pipeline ---------------------------------------------------------------------------- */

typedef struct import_pipeline {
    const import_options *opt;
    import_slot          *slots;
    size_t                cap;
    uint64_t              produced, taken, consumed;
    int                   stop;
    pthread_mutex_t       mu;
    pthread_cond_t        work;    /* a slot became READY, or stop */
    pthread_cond_t        done;    /* a slot became DONE */
    /* main thread only */
    corpus_builder       *builder;
    id_set                ids;
    FILE                 *report;
    char                  report_tmp[PATH_MAX + 8];
    import_stats         *stats;
} import_pipeline;

static void *worker_main(void *arg)
{
    import_pipeline *p = arg;
    imgdec_decoder *dec = imgdec_decoder_new();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->taken == p->produced) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        import_slot *s = &p->slots[p->taken++ % p->cap];
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&p->mu);
        slot_process(s, dec, p->opt);
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_DONE;
        pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    imgdec_decoder_free(dec);
    return NULL;
}

/* "file: record 3 (line 5, byte 210)" — what a user needs to find the record. */
static void record_where(const import_slot *s, char *out, size_t cap)
{
    const import_record *r = &s->rec;
    if (r->line)
        snprintf(out, cap, "%s: record %llu (line %llu, byte %llu)", s->src->path,
                 (unsigned long long)r->record, (unsigned long long)r->line,
                 (unsigned long long)r->offset);
    else
        snprintf(out, cap, "%s: record %llu (byte %llu, key %s)", s->src->path,
                 (unsigned long long)r->record, (unsigned long long)r->offset,
                 r->id ? r->id : "?");
}

static int report_write(import_pipeline *p, const import_slot *s, adapt_error *err)
{
    const import_record *r = &s->rec;
    cJSON *o = cJSON_CreateObject();
    if (!o) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    cJSON_AddStringToObject(o, "source", s->src->path);
    cJSON_AddNumberToObject(o, "record", (double)r->record);
    if (r->line) cJSON_AddNumberToObject(o, "line", (double)r->line);
    cJSON_AddNumberToObject(o, "offset", (double)r->offset);
    cJSON_AddStringToObject(o, "id", s->id ? s->id : "");
    cJSON_AddStringToObject(o, "reason", import_reason_name(r->reason));
    cJSON_AddStringToObject(o, "field", r->field);
    cJSON_AddStringToObject(o, "detail", r->detail);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    int ok = fputs(line, p->report) >= 0 && fputc('\n', p->report) != EOF;
    free(line);
    if (!ok) return adapt_fail(err, ADAPT_EIO, "writing %s: %s", p->report_tmp, strerror(errno));
    return ADAPT_OK;
}

/* Takes the oldest slot's result into the corpus (or the report). */
static int slot_consume(import_pipeline *p, import_slot *s, adapt_error *err)
{
    if (s->fatal) {
        *err = s->err;
        return s->fatal;
    }
    import_record *r = &s->rec;
    p->stats->records_read++;
    if (!r->reason) {
        int fresh = id_set_add(&p->ids, s->id);
        if (fresh < 0) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        if (!fresh)
            import_record_fail(r, IMPORT_REASON_DUPLICATE_ID, "id",
                               "\"%s\" is the id of an earlier record", s->id);
    }
    if (!r->reason) {
        p->stats->records_written++;
        p->stats->image_bytes += s->image_bytes;
        return corpus_builder_add_frame(p->builder, s->frame, s->frame_len, err);
    }
    char where[PATH_MAX + 128];
    record_where(s, where, sizeof where);
    if (!p->opt->skip_bad)
        return adapt_fail(err, ADAPT_EINVAL, "%s: %s%s%s: %s (use --on-bad skip to import the "
                          "other records and list the bad ones)", where, r->field,
                          r->field[0] ? ": " : "", import_reason_name(r->reason), r->detail);
    p->stats->records_skipped++;
    p->stats->skips[r->reason]++;
    return report_write(p, s, err);
}

/* Waits for the oldest slot, consumes and frees it. */
static int pipeline_consume_one(import_pipeline *p, adapt_error *err)
{
    import_slot *s = &p->slots[p->consumed % p->cap];
    pthread_mutex_lock(&p->mu);
    while (s->state != SLOT_DONE) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    int rc = slot_consume(p, s, err);
    slot_clear(s);
    p->consumed++;
    return rc;
}

/* Reads source s to its end through the ring. */
static int pipeline_feed(import_pipeline *p, import_source *src, adapt_error *err)
{
    for (;;) {
        if (p->produced - p->consumed == p->cap) {
            int rc = pipeline_consume_one(p, err);
            if (rc) return rc;
            continue;
        }
        import_slot *s = &p->slots[p->produced % p->cap];
        int rc = src->reader.next(src->reader.state, &s->rec, err);
        if (rc <= 0) {
            import_record_clear(&s->rec);
            return rc;
        }
        s->src = src;
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_READY;
        p->produced++;
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
    }
}

static void pipeline_stop(import_pipeline *p, pthread_t *threads, int n)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
}

/* --- the run --------------------------------------------------------------------------------- */

static int report_open(import_pipeline *p, adapt_error *err)
{
    size_t n = strlen(p->opt->out_dir);
    while (n > 1 && p->opt->out_dir[n - 1] == '/') n--;
    int w = snprintf(p->stats->report_path, sizeof p->stats->report_path, "%.*s.skipped.jsonl",
                     (int)n, p->opt->out_dir);
    if (w < 0 || (size_t)w >= sizeof p->stats->report_path ||
        snprintf(p->report_tmp, sizeof p->report_tmp, "%s.tmp", p->stats->report_path) < 0)
        return adapt_fail(err, ADAPT_EINVAL, "output path too long: %s", p->opt->out_dir);
    p->report = fopen(p->report_tmp, "w");
    if (!p->report)
        return adapt_fail(err, ADAPT_EIO, "creating %s: %s", p->report_tmp, strerror(errno));
    return ADAPT_OK;
}

/* Makes the report final (fsync, rename) before the corpus is: a finished corpus never names a
 * report that is not there. */
static int report_finish(import_pipeline *p, adapt_error *err)
{
    FILE *f = p->report;
    p->report = NULL;
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(p->report_tmp, p->stats->report_path) != 0) {
        int rc = adapt_fail(err, ADAPT_EIO, "writing %s: %s", p->stats->report_path,
                            strerror(errno));
        unlink(p->report_tmp);
        return rc;
    }
    return ADAPT_OK;
}

/* Unique source formats, comma-separated, into out. */
static void formats_joined(const import_source *srcs, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *name = import_format_name(srcs[i].format);
        int seen = 0;
        for (size_t j = 0; j < i; j++) seen |= srcs[j].format == srcs[i].format;
        if (seen) continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? "," : "", name);
    }
}

static int pipeline_finish(import_pipeline *p, const import_source *srcs, int64_t started,
                           adapt_error *err)
{
    const import_options *opt = p->opt;
    Adaptd__SkipCount counts[IMPORT_REASON_COUNT], *count_ptrs[IMPORT_REASON_COUNT];
    size_t n_counts = 0;
    for (int r = 1; r < IMPORT_REASON_COUNT; r++) {
        if (!p->stats->skips[r]) continue;
        adaptd__skip_count__init(&counts[n_counts]);
        counts[n_counts].reason = (char *)import_reason_name((import_reason)r);
        counts[n_counts].count = p->stats->skips[r];
        count_ptrs[n_counts] = &counts[n_counts];
        n_counts++;
    }
    char formats[256], host[256] = "";
    formats_joined(srcs, opt->n_inputs, formats, sizeof formats);
    gethostname(host, sizeof host - 1);
    const char *slash = strrchr(p->stats->report_path, '/');
    Adaptd__ImportProvenance prov = ADAPTD__IMPORT_PROVENANCE__INIT;
    prov.tool = "adaptctl data import";
    prov.tool_version = ADAPT_VERSION;
    prov.source_format = formats;
    prov.n_sources = opt->n_inputs;
    prov.sources = (char **)opt->inputs;
    prov.images_root = (char *)(opt->images_root ? opt->images_root : "");
    prov.validate = opt->validate_full ? "full" : "header";
    prov.on_bad = opt->skip_bad ? "skip" : "fail";
    prov.records_read = p->stats->records_read;
    prov.records_skipped = p->stats->records_skipped;
    prov.n_skips = n_counts;
    prov.skips = count_ptrs;
    prov.skip_report = (char *)(!opt->skip_bad ? "" : slash ? slash + 1 : p->stats->report_path);
    prov.started_unix = started;
    prov.finished_unix = (int64_t)time(NULL);
    prov.hostname = host;
    int rc = p->report ? report_finish(p, err) : ADAPT_OK;
    if (rc) return rc;
    corpus_builder *b = p->builder;
    p->builder = NULL;
    rc = corpus_builder_finish(b, &prov, err);
    if (rc && opt->skip_bad) unlink(p->stats->report_path);
    return rc;
}

static int options_check(const import_options *opt, adapt_error *err)
{
    if (opt->n_inputs == 0) return adapt_fail(err, ADAPT_EINVAL, "no input files");
    if (opt->jobs < 1 || opt->jobs > 256)
        return adapt_fail(err, ADAPT_EINVAL, "--jobs %d: must be 1..256", opt->jobs);
    if (opt->shard_size == 0) return adapt_fail(err, ADAPT_EINVAL, "--shard-size must be >= 1");
    if (!opt->out_dir || !opt->out_dir[0]) return adapt_fail(err, ADAPT_EINVAL, "no --out DIR");
    return ADAPT_OK;
}

/* Feeds every source through the started pipeline and drains it. */
static int pipeline_run(import_pipeline *p, import_source *srcs, adapt_error *err)
{
    int rc = ADAPT_OK;
    for (size_t i = 0; i < p->opt->n_inputs && !rc; i++) {
        rc = source_open(&srcs[i], p->opt->inputs[i], p->opt, &p->stats->source_bytes, err);
        if (!rc) rc = pipeline_feed(p, &srcs[i], err);
        source_finish(&srcs[i]);
    }
    while (!rc && p->consumed < p->produced) rc = pipeline_consume_one(p, err);
    return rc;
}

int import_run(const import_options *opt, import_stats *stats, adapt_error *err)
{
    memset(stats, 0, sizeof *stats);
    int rc = options_check(opt, err);
    if (rc) return rc;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t started = (int64_t)time(NULL);
    import_pipeline p = {.opt = opt, .stats = stats, .cap = 32 * (size_t)opt->jobs};
    p.slots = calloc(p.cap, sizeof *p.slots);
    import_source *srcs = calloc(opt->n_inputs, sizeof *srcs);
    pthread_t *threads = calloc((size_t)opt->jobs, sizeof *threads);
    if (!p.slots || !srcs || !threads) rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    if (!rc) rc = corpus_builder_open(&p.builder, opt->out_dir, opt->name, opt->shard_size,
                                      opt->zstd_level, err);
    if (!rc && opt->skip_bad) rc = report_open(&p, err);
    int started_threads = 0;
    if (!rc) {
        pthread_mutex_init(&p.mu, NULL);
        pthread_cond_init(&p.work, NULL);
        pthread_cond_init(&p.done, NULL);
        for (; started_threads < opt->jobs && !rc; started_threads++)
            if (pthread_create(&threads[started_threads], NULL, worker_main, &p)) {
                rc = adapt_fail(err, ADAPT_EIO, "cannot start worker thread %d",
                                started_threads);
                break;
            }
        if (!rc) rc = pipeline_run(&p, srcs, err);
        pipeline_stop(&p, threads, started_threads);
        pthread_cond_destroy(&p.done);
        pthread_cond_destroy(&p.work);
        pthread_mutex_destroy(&p.mu);
    }
    if (!rc) rc = pipeline_finish(&p, srcs, started, err);
    if (rc) {
        corpus_builder_abort(p.builder);
        if (p.report) {
            fclose(p.report);
            unlink(p.report_tmp);
        }
        stats->report_path[0] = '\0';
    }
    for (size_t i = 0; p.slots && i < p.cap; i++) slot_clear(&p.slots[i]);
    for (size_t i = 0; srcs && i < opt->n_inputs; i++) source_close(&srcs[i]);
    id_set_free(&p.ids);
    free(p.slots);
    free(srcs);
    free(threads);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    stats->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    return rc;
}
