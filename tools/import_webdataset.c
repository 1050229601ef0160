/* import_webdataset: a streaming tar reader and WebDataset's grouping rule; see
 * import_webdataset.h.
 *
 * The reader keeps one member of lookahead: a sample ends when the next member's key differs, so
 * that member is held as pending and starts the next sample. A broken archive (bad header
 * checksum, a member cut short) is fatal: past it, member boundaries cannot be trusted. */
#include "import_webdataset.h"

#include "import_json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define TAR_BLOCK 512u
/* A member a Sample uses is read into memory; one larger than this is a bad record. */
#define WDS_MAX_MEMBER_BYTES ((uint64_t)64 << 20)
/* Long names and pax headers are small; a larger one means a damaged archive. */
#define WDS_MAX_META_BYTES ((uint64_t)1 << 20)

typedef struct tar_member {
    char    *name;
    uint64_t size;
    uint64_t offset;     /* of its first header block (an 'L' or 'x' block when there is one) */
    uint8_t *data;       /* NUL-terminated copy for members a Sample uses, else NULL */
    int      too_large;
} tar_member;

typedef struct wds_reader {
    const char *source;
    FILE       *f;
    uint64_t    pos;          /* offset of the next header block */
    uint64_t    file_size;    /* to catch a member cut short that is skipped, not read */
    uint64_t    record;
    int         at_end;
    tar_member  pending;      /* lookahead: the first member of the next sample */
    int         has_pending;
} wds_reader;

void import_wds_split(const char *name, size_t *key_len, const char **ext)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strchr(base, '.');
    *key_len = dot ? (size_t)(dot - name) : strlen(name);
    *ext = dot ? dot + 1 : "";
}

typedef enum wds_kind { WDS_OTHER = 0, WDS_IMAGE, WDS_TEXT, WDS_JSON } wds_kind;

static wds_kind ext_kind(const char *ext)
{
    if (!strcasecmp(ext, "jpg") || !strcasecmp(ext, "jpeg") || !strcasecmp(ext, "png"))
        return WDS_IMAGE;
    if (!strcasecmp(ext, "txt")) return WDS_TEXT;
    if (!strcasecmp(ext, "json")) return WDS_JSON;
    return WDS_OTHER;
}

static void member_clear(tar_member *m)
{
    free(m->name);
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* --- tar ------------------------------------------------------------------------------------- */

static int tar_fail(wds_reader *r, uint64_t at, const char *what, adapt_error *err)
{
    return adapt_fail(err, ADAPT_ECORRUPT, "%s: not a readable tar archive: %s at byte %llu",
                      r->source, what, (unsigned long long)at);
}

/* Reads exactly n bytes at the current position; ECORRUPT if the file ends first. */
static int tar_read(wds_reader *r, void *buf, size_t n, const char *what, adapt_error *err)
{
    if (fread(buf, 1, n, r->f) == n) return ADAPT_OK;
    if (ferror(r->f))
        return adapt_fail(err, ADAPT_EIO, "%s: reading %s: %s", r->source, what, strerror(errno));
    return adapt_fail(err, ADAPT_ECORRUPT, "%s: the file ends inside %s (truncated archive)",
                      r->source, what);
}

static int tar_seek(wds_reader *r, uint64_t to, adapt_error *err)
{
    if (fseeko(r->f, (off_t)to, SEEK_SET) != 0)
        return adapt_fail(err, ADAPT_EIO, "%s: seeking to byte %llu: %s", r->source,
                          (unsigned long long)to, strerror(errno));
    return ADAPT_OK;
}

/* Octal (NUL/space terminated) or GNU base-256 (high bit of the first byte set). */
static int tar_number(const uint8_t *field, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (field[0] & 0x80) {
        if (field[0] != 0x80) return -1;   /* negative or over 2^63: not a size */
        for (size_t i = 1; i < n; i++) {
            if (v >> 56) return -1;
            v = v << 8 | field[i];
        }
        *out = v;
        return 0;
    }
    size_t i = 0;
    while (i < n && field[i] == ' ') i++;
    int digits = 0;
    for (; i < n && field[i] >= '0' && field[i] <= '7'; i++, digits++) {
        if (v >> 60) return -1;
        v = v << 3 | (uint64_t)(field[i] - '0');
    }
    if (i < n && field[i] != ' ' && field[i] != '\0') return -1;
    *out = v;
    return digits ? 0 : -1;
}

static int tar_checksum_ok(const uint8_t *h)
{
    uint64_t want;
    if (tar_number(h + 148, 8, &want)) return 0;
    uint64_t sum = 0;
    int64_t ssum = 0;   /* some old tars summed signed chars */
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        uint8_t b = i >= 148 && i < 156 ? ' ' : h[i];
        sum += b;
        ssum += (int8_t)b;
    }
    return sum == want || (uint64_t)ssum == want;
}

/* The "path" and "size" records of a pax extended header ("LEN key=value\n" each). */
static void pax_parse(const char *data, size_t len, char **path, uint64_t *size, int *has_size)
{
    size_t i = 0;
    while (i < len) {
        char *end;
        unsigned long long rlen = strtoull(data + i, &end, 10);
        if (end == data + i || *end != ' ' || rlen == 0 || rlen > len - i) return;
        const char *kv = end + 1, *rec_end = data + i + rlen;
        if (rec_end[-1] != '\n') return;
        const char *eq = memchr(kv, '=', (size_t)(rec_end - kv));
        if (eq) {
            size_t klen = (size_t)(eq - kv), vlen = (size_t)(rec_end - 1 - eq - 1);
            if (klen == 4 && !memcmp(kv, "path", 4)) {
                free(*path);
                *path = strndup(eq + 1, vlen);
            } else if (klen == 4 && !memcmp(kv, "size", 4)) {
                char num[32];
                if (vlen < sizeof num) {
                    memcpy(num, eq + 1, vlen);
                    num[vlen] = '\0';
                    *size = strtoull(num, NULL, 10);
                    *has_size = 1;
                }
            }
        }
        i += rlen;
    }
}

/* Reads the data of a metadata member (long name, pax header) as a NUL-terminated string. */
static int tar_read_meta(wds_reader *r, uint64_t size, char **out, adapt_error *err)
{
    if (size > WDS_MAX_META_BYTES) return tar_fail(r, r->pos, "an oversized tar extension", err);
    char *buf = malloc(size + 1);
    if (!buf) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", r->source);
    int rc = tar_read(r, buf, size, "a tar extension header", err);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[size] = '\0';
    *out = buf;
    return ADAPT_OK;
}

/* Name from a ustar header: prefix "/" name, each field NUL-terminated only when short. */
static char *header_name(const uint8_t *h)
{
    char name[100 + 1 + 155 + 1];
    size_t nlen = strnlen((const char *)h, 100);
    size_t plen = !memcmp(h + 257, "ustar", 5) ? strnlen((const char *)h + 345, 155) : 0;
    size_t n = 0;
    if (plen) {
        memcpy(name, h + 345, plen);
        name[plen] = '/';
        n = plen + 1;
    }
    memcpy(name + n, h, nlen);
    name[n + nlen] = '\0';
    return strdup(name);
}

/* Reads the data of a regular member when a Sample uses it, else skips it. */
static int tar_member_data(wds_reader *r, tar_member *m, uint64_t data_at, adapt_error *err)
{
    size_t key_len;
    const char *ext;
    import_wds_split(m->name, &key_len, &ext);
    if (ext_kind(ext) == WDS_OTHER) return ADAPT_OK;
    if (m->size > WDS_MAX_MEMBER_BYTES) {
        m->too_large = 1;
        return ADAPT_OK;
    }
    m->data = malloc(m->size + 1);
    if (!m->data) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", r->source);
    int rc = tar_seek(r, data_at, err);
    if (!rc) rc = tar_read(r, m->data, m->size, "a member's data", err);
    if (rc) return adapt_error_prefix(err, "member %s: ", m->name);
    m->data[m->size] = '\0';
    return ADAPT_OK;
}

/* Reads the header block at r->pos: 1 with h filled and checked, 0 at the end of the archive
 * (zero block, or the file ending on a block boundary with no extension header pending),
 * negative when the archive is broken. */
static int tar_header_read(wds_reader *r, uint8_t *h, int ext_pending, adapt_error *err)
{
    int rc = tar_seek(r, r->pos, err);
    if (rc) return rc;
    size_t got = fread(h, 1, TAR_BLOCK, r->f);
    if (got == 0 && !ferror(r->f) && !ext_pending) return 0;  /* no end blocks: as GNU tar */
    if (got != TAR_BLOCK) return tar_fail(r, r->pos, "a header block cut short", err);
    int zero = 1;
    for (size_t i = 0; i < TAR_BLOCK && zero; i++) zero = h[i] == 0;
    if (zero) return 0;
    if (!tar_checksum_ok(h)) return tar_fail(r, r->pos, "a header block with a bad checksum", err);
    return 1;
}

/* The next regular file of the archive: 1, 0 at its end, negative on a broken archive. Long
 * names ('L', pax "path") and pax sizes apply to the header that follows them. */
static int tar_next(wds_reader *r, tar_member *m, adapt_error *err)
{
    char *long_name = NULL;
    uint64_t pax_size = 0, start = r->pos;
    int has_pax_size = 0, rc = 0;
    uint8_t h[TAR_BLOCK];
    memset(m, 0, sizeof *m);
    while (!r->at_end) {
        rc = tar_header_read(r, h, long_name || has_pax_size, err);
        if (rc <= 0) {
            r->at_end = rc == 0;
            break;
        }
        uint64_t size;
        if (tar_number(h + 124, 12, &size) || size > UINT64_MAX / 2) {
            rc = tar_fail(r, r->pos, "a header block with an impossible size", err);
            break;
        }
        if (has_pax_size) size = pax_size;
        uint8_t type = h[156];
        uint64_t data_at = r->pos + TAR_BLOCK;
        if (data_at + size > r->file_size) {
            rc = tar_fail(r, r->pos, "a member whose data runs past the end of the file "
                          "(truncated archive)", err);
            break;
        }
        r->pos = data_at + (size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
        if (type == 'L' || type == 'x') {
            char *meta = NULL;
            if ((rc = tar_read_meta(r, size, &meta, err))) break;
            if (type == 'L') {
                free(long_name);
                long_name = meta;
            } else {
                pax_parse(meta, size, &long_name, &pax_size, &has_pax_size);
                free(meta);
            }
            continue;
        }
        if (type == '0' || type == '\0' || type == '7') {
            m->name = long_name ? long_name : header_name(h);
            if (!m->name) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", r->source);
            m->size = size;
            m->offset = start;
            rc = tar_member_data(r, m, data_at, err);
            if (rc) member_clear(m);
            return rc ? rc : 1;
        }
        /* Directories, links, devices, global pax headers, GNU 'K': not sample members. */
        free(long_name);
        long_name = NULL;
        has_pax_size = 0;
        start = r->pos;
    }
    free(long_name);
    return rc;
}

/* --- samples --------------------------------------------------------------------------------- */

static int sample_take_text(import_record *rec, tar_member *m)
{
    if (memchr(m->data, '\0', m->size))
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, m->name,
                                  "contains a NUL byte; a caption is text");
    size_t n = m->size;
    while (n > 0 && (m->data[n - 1] == '\n' || m->data[n - 1] == '\r')) n--;
    m->data[n] = '\0';
    free(rec->caption);
    rec->caption = (char *)m->data;   /* ownership moves to the record */
    m->data = NULL;
    return ADAPT_OK;
}

static int sample_take_json(import_record *rec, const tar_member *m, int have_text)
{
    import_json_span span = {(const char *)m->data, m->size, 1, m->offset};
    cJSON *obj = import_json_parse(&span, rec);
    if (!obj) {
        if (!rec->reason) return ADAPT_ENOMEM;
        if (!rec->field[0]) snprintf(rec->field, sizeof rec->field, "%s", m->name);
        return ADAPT_OK;
    }
    int rc = ADAPT_OK;
    if (!cJSON_IsObject(obj))
        rc = import_record_fail(rec, IMPORT_REASON_BAD_RECORD, m->name, "must be a JSON object");
    if (!rc) rc = import_json_take_conversations(obj, rec);
    if (!rc && !have_text) rc = import_json_take_caption(obj, rec);
    cJSON_Delete(obj);
    return rc;
}

static int sample_take_member(import_record *rec, tar_member *m, int have_text)
{
    size_t key_len;
    const char *ext;
    import_wds_split(m->name, &key_len, &ext);
    wds_kind kind = ext_kind(ext);
    if (kind == WDS_OTHER) return ADAPT_OK;
    if (m->too_large)
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, m->name,
                                  "is %llu bytes, over the %llu-byte limit for one member",
                                  (unsigned long long)m->size,
                                  (unsigned long long)WDS_MAX_MEMBER_BYTES);
    if (kind == WDS_TEXT) return sample_take_text(rec, m);
    if (kind == WDS_JSON) return sample_take_json(rec, m, have_text);
    if (rec->has_image)
        return import_record_fail(rec, IMPORT_REASON_BAD_RECORD, m->name,
                                  "a second image for key (the first is %s)", rec->image_member);
    rec->has_image = 1;
    rec->image = m->data;
    rec->image_len = m->size;
    rec->image_member = m->name;
    m->data = NULL;
    m->name = NULL;
    return ADAPT_OK;
}

/* Builds one record from members[0..n): the .txt first, so that it wins over the .json. */
static int sample_build(wds_reader *r, tar_member *members, size_t n, import_record *rec)
{
    size_t key_len;
    const char *ext;
    import_wds_split(members[0].name, &key_len, &ext);
    rec->record = r->record++;
    rec->offset = members[0].offset;
    rec->id = strndup(members[0].name, key_len);
    if (!rec->id) return ADAPT_ENOMEM;
    int have_text = 0;
    for (size_t i = 0; i < n; i++) {
        import_wds_split(members[i].name, &key_len, &ext);
        if (ext_kind(ext) == WDS_TEXT && members[i].data) have_text = 1;
    }
    for (size_t pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            import_wds_split(members[i].name, &key_len, &ext);
            if ((ext_kind(ext) == WDS_TEXT) != (pass == 0)) continue;
            int rc = sample_take_member(rec, &members[i], have_text);
            if (rc) return rc;
        }
    return import_json_default_caption(rec);
}

static int same_key(const char *a, const char *b)
{
    size_t la, lb;
    const char *ea, *eb;
    import_wds_split(a, &la, &ea);
    import_wds_split(b, &lb, &eb);
    return la == lb && !memcmp(a, b, la);
}

static int wds_next(void *state, import_record *rec, adapt_error *err)
{
    wds_reader *r = state;
    tar_member *group = NULL;
    size_t n = 0, cap = 0;
    int rc = 1;
    if (!r->has_pending) {
        rc = tar_next(r, &r->pending, err);
        if (rc <= 0) return rc;
        r->has_pending = 1;
    }
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            tar_member *g = realloc(group, cap * sizeof *g);
            if (!g) {
                rc = adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", r->source);
                break;
            }
            group = g;
        }
        group[n++] = r->pending;
        r->has_pending = 0;
        rc = tar_next(r, &r->pending, err);
        if (rc <= 0) break;
        r->has_pending = 1;
        if (!same_key(group[0].name, r->pending.name)) break;
    }
    if (rc >= 0) {
        rc = sample_build(r, group, n, rec) ? adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory",
                                                          r->source)
                                            : 1;
    }
    for (size_t i = 0; i < n; i++) member_clear(&group[i]);
    free(group);
    return rc;
}

static void wds_close(void *state)
{
    wds_reader *r = state;
    if (r->has_pending) member_clear(&r->pending);
    if (r->f) fclose(r->f);
    free(r);
}

int import_webdataset_reader_open(import_reader *reader, const char *path, adapt_error *err)
{
    wds_reader *r = calloc(1, sizeof *r);
    if (!r) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    r->source = path;
    r->f = fopen(path, "rb");
    if (!r->f) {
        int e = errno;
        free(r);
        return adapt_fail(err, e == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO, "opening %s: %s", path,
                          strerror(e));
    }
    struct stat st;
    if (fstat(fileno(r->f), &st) != 0) {
        int e = errno;
        fclose(r->f);
        free(r);
        return adapt_fail(err, ADAPT_EIO, "reading %s: %s", path, strerror(e));
    }
    r->file_size = (uint64_t)st.st_size;
    reader->state = r;
    reader->next = wds_next;
    reader->close = wds_close;
    return ADAPT_OK;
}
