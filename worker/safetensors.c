/* safetensors: mapping, validating and writing Hugging Face weight files; see safetensors.h.
 *
 * Reading validates each file's header completely before a single tensor is handed out: once
 * safetensors_open returns, every tensor's bytes lie inside its map. Writing rebuilds exactly the
 * header the reference (Rust) writer emits: compact JSON, `__metadata__` first, tensors ordered
 * by dtype (widest first) then name, offsets contiguous, the header padded with spaces to a
 * multiple of 8 so every tensor starts 8-byte aligned. */
#include "safetensors.h"

#include "file_io.h"

#include <cjson/cJSON.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors stores little-endian data; adaptd maps it in place and needs a little-endian host"
#endif

#define ST_INDEX_NAME  "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"
/* The largest integer a JSON number (read as a double) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0

typedef struct st_meta {
    char *key, *value;
} st_meta;

typedef struct st_file {
    char    *path;
    void    *map;
    size_t   size;
    uint64_t data_start;   /* 8 + header length */
} st_file;

struct safetensors_t {
    st_file            *files;
    size_t              nfiles;
    safetensors_tensor *tensors;   /* sorted by name */
    size_t              ntensors;
    st_meta            *meta;      /* `__metadata__` of the first file */
    size_t              nmeta;
};

/* ---- dtypes and conversions ------------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t      size;
} st_dtypes[] = {
    [SAFETENSORS_F16]  = {"F16", 2},
    [SAFETENSORS_BF16] = {"BF16", 2},
    [SAFETENSORS_F32]  = {"F32", 4},
};

const char *safetensors_dtype_name(safetensors_dtype dtype) { return st_dtypes[dtype].name; }
size_t safetensors_dtype_size(safetensors_dtype dtype) { return st_dtypes[dtype].size; }

static int dtype_parse(const char *s, safetensors_dtype *out)
{
    for (int d = 0; d < (int)(sizeof st_dtypes / sizeof st_dtypes[0]); d++)
        if (strcmp(s, st_dtypes[d].name) == 0) { *out = (safetensors_dtype)d; return 0; }
    return -1;
}

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float safetensors_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

float safetensors_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13));     /* inf, NaN */
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return bits_f32(sign);
    /* Subnormal half: renormalise into a normal float (every half subnormal is one). */
    int e = -1;
    do { man <<= 1; e++; } while (!(man & 0x400));
    return bits_f32(sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13));
}

uint16_t safetensors_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040);  /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1);                                             /* to nearest even */
    return (uint16_t)(u >> 16);
}

uint16_t safetensors_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000, a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00 | ((a >> 13) & 0x3FF));  /* NaN */
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00);  /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* Result is subnormal (or zero): scale so the half's unit is 2^-24 and round to even. */
        if (a < 0x33000000u) return (uint16_t)sign;           /* below half the smallest subnormal */
        uint32_t man = (a & 0x7FFFFF) | 0x800000;
        int shift = 126 - (int)(a >> 23);                     /* 14..24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xFFFu + ((a >> 13) & 1);               /* to nearest even at bit 13 */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* ---- small helpers --------------------------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a && dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

/* Directory part of a path ("." when there is none), malloc'd. */
static char *path_dir(const char *path)
{
    size_t cap = strlen(path) + 2;
    char *d = malloc(cap);
    if (d) file_io_parent_dir(d, cap, path);
    return d;
}

static bool is_json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The reference reader requires the header to be UTF-8; so does adaptd (a NUL byte too is
 * refused: no JSON text contains one raw). Returns the offset of the first bad byte or -1. */
static long utf8_first_invalid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0) return (long)i;
        if (c < 0x80) { i++; continue; }
        size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        if (len == 0 || c > 0xF4 || i + len > n) return (long)i;
        uint32_t cp = c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return (long)i;
        i += len;
    }
    return -1;
}

/* A JSON number that is a non-negative integer exactly representable; -1 otherwise. */
static int json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!(v >= 0.0 && v <= ST_MAX_JSON_INT) || v != (double)(uint64_t)v) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* ---- reading one file ------------------------------------------------------------------------ */

static void file_unmap(st_file *f)
{
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int file_map(st_file *f, const char *path, adapt_error *err)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                          "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return adapt_fail(err, ADAPT_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return adapt_fail(err, ADAPT_EINVAL, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: file is %lld bytes, shorter than the 8-byte header length at byte 0",
                          path, (long long)sb.st_size);
    }
    f->size = (size_t)sb.st_size;
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return adapt_fail(err, ADAPT_EIO, "%s: cannot map %zu bytes: %s", path, f->size, strerror(e));
    }
    f->path = dup_str(path);
    if (!f->path) { file_unmap(f); return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path); }
    return ADAPT_OK;
}

/* Parses one tensor entry of a header into t and checks it against the data section of
 * data_size bytes; t->name is set by the caller. */
static int entry_parse(const st_file *f, const cJSON *e, uint64_t data_size, safetensors_tensor *t,
                       adapt_error *err)
{
    const char *p = f->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: tensor '%s': header entry is not a JSON object",
                          p, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: tensor '%s': field 'dtype' missing or not a string",
                          p, name);
    if (dtype_parse(dt->valuestring, &t->dtype) != 0)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "%s: tensor '%s': dtype %s is not read by adaptd (F32, BF16 and F16 are); "
                          "convert the checkpoint to one of those", p, name, dt->valuestring);
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > SAFETENSORS_MAX_DIMS)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: tensor '%s': field 'shape' missing, not an array, or over %d dims",
                          p, name, SAFETENSORS_MAX_DIMS);
    t->ndim = 0;
    t->nelem = 1;
    bool overflow = false;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh) {
        uint64_t v;
        if (json_uint(d, &v) != 0 || v > INT64_MAX)
            return adapt_fail(err, ADAPT_ECORRUPT,
                              "%s: tensor '%s': shape[%d] is not a non-negative integer", p, name, t->ndim);
        t->shape[t->ndim++] = (int64_t)v;
        if (v && t->nelem > UINT64_MAX / v) overflow = true;
        t->nelem *= v;
    }
    size_t es = safetensors_dtype_size(t->dtype);
    if (overflow || (t->nelem && t->nelem > UINT64_MAX / es))
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: tensor '%s': shape overflows 64 bits", p, name);
    t->nbytes = t->nelem * es;
    uint64_t s, end;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        json_uint(cJSON_GetArrayItem(off, 0), &s) != 0 || json_uint(cJSON_GetArrayItem(off, 1), &end) != 0)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: tensor '%s': field 'data_offsets' is not two non-negative integers", p, name);
    if (end < s)
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: tensor '%s': data_offsets [%llu, %llu] end before start",
                          p, name, (unsigned long long)s, (unsigned long long)end);
    if (end > data_size)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] run past the data section "
                          "(%llu bytes, file bytes %llu..%llu); the file is truncated or the header wrong",
                          p, name, (unsigned long long)s, (unsigned long long)end,
                          (unsigned long long)data_size, (unsigned long long)f->data_start,
                          (unsigned long long)(f->data_start + data_size));
    if (end - s != t->nbytes)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s x %llu "
                          "elements need %llu (file byte %llu)", p, name, (unsigned long long)s,
                          (unsigned long long)end, (unsigned long long)(end - s), dt->valuestring,
                          (unsigned long long)t->nelem, (unsigned long long)t->nbytes,
                          (unsigned long long)(f->data_start + s));
    t->file_offset = f->data_start + s;
    t->file = f->path;
    t->data = (const char *)f->map + t->file_offset;
    return ADAPT_OK;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const safetensors_tensor *x = a, *y = b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* The tensors must tile the data section exactly, as the reference reader demands: sorted by
 * offset, each starts where the previous ends and the last ends at the end of the file. */
static int tiling_check(const st_file *f, safetensors_tensor *ts, size_t n, adapt_error *err)
{
    if (n > 1) qsort(ts, n, sizeof *ts, cmp_by_offset);
    uint64_t at = f->data_start;
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        if (ts[i].file_offset < at)
            return adapt_fail(err, ADAPT_ECORRUPT,
                              "%s: tensor '%s' (file bytes %llu..%llu) overlaps tensor '%s' (ending at %llu)",
                              f->path, ts[i].name, (unsigned long long)ts[i].file_offset,
                              (unsigned long long)(ts[i].file_offset + ts[i].nbytes), prev,
                              (unsigned long long)at);
        if (ts[i].file_offset > at)
            return adapt_fail(err, ADAPT_ECORRUPT,
                              "%s: tensor '%s' starts at file byte %llu, leaving a gap at %llu..%llu "
                              "that no tensor covers", f->path, ts[i].name,
                              (unsigned long long)ts[i].file_offset, (unsigned long long)at,
                              (unsigned long long)ts[i].file_offset);
        at += ts[i].nbytes;
        prev = ts[i].name;
    }
    if (at != f->size)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: %llu bytes after the last tensor (file bytes %llu..%zu) that no tensor covers",
                          f->path, (unsigned long long)(f->size - at), (unsigned long long)at, f->size);
    return ADAPT_OK;
}

static void meta_free(st_meta *m, size_t n)
{
    for (size_t i = 0; i < n; i++) { free(m[i].key); free(m[i].value); }
    free(m);
}

/* `__metadata__` must map strings to strings, as the reference reader requires. */
static int meta_parse(const st_file *f, const cJSON *m, st_meta **out, size_t *nout, adapt_error *err)
{
    if (!cJSON_IsObject(m))
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: field '__metadata__' is not a JSON object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(m), i = 0;
    st_meta *mv = calloc(n ? n : 1, sizeof *mv);
    if (!mv) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", f->path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m) {
        if (!cJSON_IsString(kv)) {
            meta_free(mv, i);
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: field '__metadata__.%s' is not a string",
                              f->path, kv->string);
        }
        mv[i].key = dup_str(kv->string);
        mv[i].value = dup_str(kv->valuestring);
        i++;
        if (!mv[i - 1].key || !mv[i - 1].value) {
            meta_free(mv, i);
            return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", f->path);
        }
    }
    *out = mv;
    *nout = n;
    return ADAPT_OK;
}

/* Parses and validates the header of a mapped file; appends its tensors to *ts (names owned). */
static int header_read(st_file *f, safetensors_tensor **ts, size_t *nts, size_t *cap,
                       st_meta **meta, size_t *nmeta, adapt_error *err)
{
    uint64_t n;
    memcpy(&n, f->map, 8);
    if (n > SAFETENSORS_MAX_HEADER || n > f->size - 8)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s: header length %llu at byte 0 is out of range (file is %zu bytes, limit %u)",
                          f->path, (unsigned long long)n, f->size, SAFETENSORS_MAX_HEADER);
    f->data_start = 8 + n;
    const char *h = (const char *)f->map + 8;
    long bad = utf8_first_invalid((const unsigned char *)h, n);
    if (bad >= 0)
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: header is not UTF-8 text at file byte %ld",
                          f->path, bad + 8);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, n, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        long at = end ? (long)(end - h) + 8 : 8;
        cJSON_Delete(root);
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: header is not a JSON object (parse stops at file byte %ld)",
                          f->path, at);
    }
    for (const char *c = end; c < h + n; c++)
        if (!is_json_ws(*c)) {
            cJSON_Delete(root);
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: text after the header's JSON at file byte %ld",
                              f->path, (long)(c - h) + 8);
        }
    int rc = ADAPT_OK;
    size_t first = *nts;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            st_meta *m = NULL;
            size_t nm = 0;
            if ((rc = meta_parse(f, e, &m, &nm, err)) != 0) break;
            /* Every file's is checked; a checkpoint reports its first file's. */
            if (*meta) meta_free(m, nm);
            else *meta = m, *nmeta = nm;
            continue;
        }
        if (*nts == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            safetensors_tensor *g = realloc(*ts, nc * sizeof *g);
            if (!g) { rc = adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", f->path); break; }
            *ts = g;
            *cap = nc;
        }
        safetensors_tensor *t = &(*ts)[*nts];
        memset(t, 0, sizeof *t);
        if ((rc = entry_parse(f, e, f->size - f->data_start, t, err)) != 0) break;
        if (!(t->name = dup_str(e->string))) { rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory"); break; }
        (*nts)++;
    }
    cJSON_Delete(root);
    if (rc == ADAPT_OK) rc = tiling_check(f, *nts > first ? *ts + first : NULL, *nts - first, err);
    return rc;
}

/* ---- the checkpoint: files, index, lookup ---------------------------------------------------- */

void safetensors_close(safetensors_t *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->ntensors; i++) free((char *)st->tensors[i].name);
    for (size_t i = 0; i < st->nfiles; i++) file_unmap(&st->files[i]);
    meta_free(st->meta, st->nmeta);
    free(st->tensors);
    free(st->files);
    free(st);
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const safetensors_tensor *)a)->name, ((const safetensors_tensor *)b)->name);
}

/* Maps and validates the given files (paths), then sorts all tensors by name and refuses a name
 * that appears twice, within one file or across shards. */
static int files_load(safetensors_t *st, char **paths, size_t n, adapt_error *err)
{
    st->files = calloc(n ? n : 1, sizeof *st->files);
    if (!st->files) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = file_map(&st->files[i], paths[i], err);
        if (rc) return rc;
        st->nfiles++;
        rc = header_read(&st->files[i], &st->tensors, &st->ntensors, &cap, &st->meta, &st->nmeta, err);
        if (rc) return rc;
    }
    if (st->ntensors > 1) qsort(st->tensors, st->ntensors, sizeof *st->tensors, cmp_by_name);
    for (size_t i = 1; i < st->ntensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return adapt_fail(err, ADAPT_ECORRUPT, "tensor '%s' appears twice: in %s and in %s",
                              st->tensors[i].name, st->tensors[i - 1].file, st->tensors[i].file);
    return ADAPT_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the whole of a small text file (an index), NUL-terminated. */
static int text_read(const char *path, char **out, size_t *len, adapt_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return adapt_fail(err, ADAPT_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, fp);
        if (n < cap - 1) break;
        if (cap > (size_t)1 << 30) { free(buf); buf = NULL; break; }
        char *g = realloc(buf, cap * 2);
        if (!g) { free(buf); buf = NULL; break; }
        buf = g;
        cap *= 2;
    }
    bool bad = ferror(fp);
    fclose(fp);
    if (!buf) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory or over 1 GiB", path);
    if (bad) { free(buf); return adapt_fail(err, ADAPT_EIO, "%s: read error", path); }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return ADAPT_OK;
}

/* A shard name from an index must stay inside the checkpoint's directory. */
static bool shard_name_ok(const char *s)
{
    return s[0] && s[0] != '/' && !strstr(s, "..") && !strchr(s, '\\');
}

/* Every name in weight_map must be in the shard it names, and every tensor of every shard must
 * be listed there: an index that disagrees with its shards is refused, naming the tensor. */
static int index_verify(const safetensors_t *st, const char *index_path, const cJSON *wm, const char *dir,
                        adapt_error *err)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        const safetensors_tensor *t = safetensors_find(st, e->string);
        char *want = path_join(dir, e->valuestring);
        if (!want) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        int bad = !t ? 1 : strcmp(t->file, want) != 0 ? 2 : 0;
        free(want);
        if (bad == 1)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: weight_map lists tensor '%s' in %s, which lacks it",
                              index_path, e->string, e->valuestring);
        if (bad == 2)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: weight_map puts tensor '%s' in %s but it is in %s",
                              index_path, e->string, e->valuestring, t->file);
    }
    if ((size_t)cJSON_GetArraySize(wm) != st->ntensors)
        for (size_t i = 0; i < st->ntensors; i++)
            if (!cJSON_GetObjectItemCaseSensitive(wm, st->tensors[i].name))
                return adapt_fail(err, ADAPT_ECORRUPT, "%s: tensor '%s' of %s is missing from weight_map",
                                  index_path, st->tensors[i].name, st->tensors[i].file);
    return ADAPT_OK;
}

static int index_open(safetensors_t *st, const char *index_path, adapt_error *err)
{
    char *text = NULL, *dir = NULL, **paths = NULL;
    size_t len = 0, np = 0;
    int rc = text_read(index_path, &text, &len, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        rc = adapt_fail(err, ADAPT_ECORRUPT, "%s: not JSON with a 'weight_map' object", index_path);
        goto out;
    }
    dir = path_dir(index_path);
    paths = calloc((size_t)cJSON_GetArraySize(wm) + 1, sizeof *paths);
    if (!dir || !paths) { rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory"); goto out; }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            rc = adapt_fail(err, ADAPT_ECORRUPT, "%s: field 'weight_map.%s' is not a shard file name in %s",
                            index_path, e->string, dir);
            goto out;
        }
        if (!(paths[np++] = path_join(dir, e->valuestring))) { rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory"); goto out; }
    }
    /* Distinct shard files, in name order (deterministic metadata source, open order). */
    qsort(paths, np, sizeof *paths, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < np; i++) {
        if (u && strcmp(paths[u - 1], paths[i]) == 0) { free(paths[i]); continue; }
        paths[u++] = paths[i];
    }
    np = u;
    if ((rc = files_load(st, paths, np, err)) == 0) rc = index_verify(st, index_path, wm, dir, err);
out:
    for (size_t i = 0; paths && i < np; i++) free(paths[i]);
    free(paths);
    free(dir);
    cJSON_Delete(root);
    free(text);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int safetensors_open(safetensors_t **out, const char *path, adapt_error *err)
{
    *out = NULL;
    safetensors_t *st = calloc(1, sizeof *st);
    if (!st) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    struct stat sb;
    int rc;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char *idx = path_join(path, ST_INDEX_NAME), *one = path_join(path, ST_SINGLE_NAME);
        if (!idx || !one) rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        else if (access(one, F_OK) == 0) rc = files_load(st, &one, 1, err);
        else if (access(idx, F_OK) == 0) rc = index_open(st, idx, err);
        else rc = adapt_fail(err, ADAPT_ENOTFOUND, "%s: neither %s nor %s is there; is this a model directory?",
                             path, ST_INDEX_NAME, ST_SINGLE_NAME);
        free(idx);
        free(one);
    } else if (ends_with(path, ".json")) {
        rc = index_open(st, path, err);
    } else {
        char *p = (char *)path;
        rc = files_load(st, &p, 1, err);
    }
    if (rc) { safetensors_close(st); return rc; }
    *out = st;
    return ADAPT_OK;
}

size_t safetensors_count(const safetensors_t *st) { return st->ntensors; }

const safetensors_tensor *safetensors_at(const safetensors_t *st, size_t i)
{
    return i < st->ntensors ? &st->tensors[i] : NULL;
}

const safetensors_tensor *safetensors_find(const safetensors_t *st, const char *name)
{
    size_t lo = 0, hi = st->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

const char *safetensors_metadata(const safetensors_t *st, const char *key)
{
    for (size_t i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

int safetensors_read_f32(const safetensors_t *st, const char *name, float *dst, uint64_t count,
                         adapt_error *err)
{
    const safetensors_tensor *t = safetensors_find(st, name);
    if (!t) return adapt_fail(err, ADAPT_ENOTFOUND, "tensor '%s' is not in the checkpoint", name);
    if (t->nelem != count)
        return adapt_fail(err, ADAPT_EINVAL, "%s: tensor '%s' has %llu elements, the model expects %llu",
                          t->file, name, (unsigned long long)t->nelem, (unsigned long long)count);
    const uint16_t *h = t->data;
    switch (t->dtype) {
    case SAFETENSORS_F32:  memcpy(dst, t->data, t->nbytes); break;
    case SAFETENSORS_BF16: for (uint64_t i = 0; i < count; i++) dst[i] = safetensors_bf16_to_f32(h[i]); break;
    case SAFETENSORS_F16:  for (uint64_t i = 0; i < count; i++) dst[i] = safetensors_f16_to_f32(h[i]); break;
    }
    return ADAPT_OK;
}

/* Appends "'name', " to buf while it fits, counting what did not. */
static void list_append(char *buf, size_t cap, size_t *len, size_t *dropped, const char *name)
{
    int n = snprintf(buf + *len, cap - *len, "%s'%s'", *len ? ", " : "", name);
    if (n < 0 || (size_t)n >= cap - *len) { buf[*len] = '\0'; (*dropped)++; return; }
    *len += (size_t)n;
}

int safetensors_check_names(const safetensors_t *st, const char *const *names, size_t n,
                            adapt_error *err)
{
    const char **want = malloc((n ? n : 1) * sizeof *want);
    if (!want) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    if (n) memcpy(want, names, n * sizeof *want);
    if (n > 1) qsort(want, n, sizeof *want, cmp_str);
    char miss[400] = "", extra[400] = "";
    size_t lm = 0, le = 0, dm = 0, de = 0, nm = 0, ne = 0, i = 0, j = 0;
    /* Merge walk of two sorted lists. */
    while (i < n || j < st->ntensors) {
        int c = i == n ? 1 : j == st->ntensors ? -1 : strcmp(want[i], st->tensors[j].name);
        if (c < 0) { list_append(miss, sizeof miss, &lm, &dm, want[i++]); nm++; }
        else if (c > 0) { list_append(extra, sizeof extra, &le, &de, st->tensors[j++].name); ne++; }
        else { i++; j++; }
    }
    const char *where = st->nfiles ? st->files[0].path : "checkpoint";
    free(want);
    if (!nm && !ne) return ADAPT_OK;
    return adapt_fail(err, ADAPT_EINVAL,
                      "%s: %zu missing tensor(s) [%s%s] and %zu unexpected tensor(s) [%s%s]; "
                      "is the checkpoint of this model family and config?",
                      where, nm, miss, dm ? ", ..." : "", ne, extra, de ? ", ..." : "");
}

/* ---- writing --------------------------------------------------------------------------------- */

/* A growable text buffer; `failed` sticks after the first allocation failure. */
typedef struct st_buf {
    char  *p;
    size_t len, cap;
    bool   failed;
} st_buf;

static void buf_put(st_buf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1) nc *= 2;
        char *g = realloc(b->p, nc);
        if (!g) { b->failed = true; return; }
        b->p = g;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_fmt_u64(st_buf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    buf_put(b, t, (size_t)n);
}

/* A JSON string as serde_json writes it: `"` and `\` escaped, control characters as \b \f \n
 * \r \t or \u00xx, everything else (UTF-8 included) raw. */
static void buf_json_serde(st_buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        switch (*c) {
        case '"':  buf_put(b, "\\\"", 2); break;
        case '\\': buf_put(b, "\\\\", 2); break;
        case '\b': buf_put(b, "\\b", 2); break;
        case '\f': buf_put(b, "\\f", 2); break;
        case '\n': buf_put(b, "\\n", 2); break;
        case '\r': buf_put(b, "\\r", 2); break;
        case '\t': buf_put(b, "\\t", 2); break;
        default:
            if (*c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", *c); buf_put(b, esc, 6); }
            else buf_put(b, (const char *)c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

/* A JSON string as Python's json.dumps writes it (ensure_ascii): anything outside ' '..'~'
 * becomes an escape, code points above U+FFFF as a surrogate pair. */
static void buf_json_python(st_buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    const unsigned char *c = (const unsigned char *)s;
    while (*c) {
        uint32_t cp = *c;
        int len = cp >= 0xF0 ? 4 : cp >= 0xE0 ? 3 : cp >= 0xC0 ? 2 : 1;
        if (len > 1) {
            cp &= 0x7Fu >> len;
            for (int k = 1; k < len && (c[k] & 0xC0) == 0x80; k++) cp = (cp << 6) | (c[k] & 0x3F);
        }
        char esc[16];
        if (cp == '"') buf_put(b, "\\\"", 2);
        else if (cp == '\\') buf_put(b, "\\\\", 2);
        else if (cp == '\n') buf_put(b, "\\n", 2);
        else if (cp == '\r') buf_put(b, "\\r", 2);
        else if (cp == '\t') buf_put(b, "\\t", 2);
        else if (cp == '\b') buf_put(b, "\\b", 2);
        else if (cp == '\f') buf_put(b, "\\f", 2);
        else if (cp >= 0x20 && cp <= 0x7E) buf_put(b, (const char *)c, 1);
        else if (cp < 0x10000) { snprintf(esc, sizeof esc, "\\u%04x", cp); buf_put(b, esc, 6); }
        else {
            uint32_t v = cp - 0x10000;
            snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            buf_put(b, esc, 12);
        }
        for (int k = 0; k < len && *c; k++) c++;
    }
    buf_put(b, "\"", 1);
}

static uint64_t entry_nelem(const safetensors_entry *e)
{
    uint64_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (uint64_t)e->shape[d];
    return n;
}

static uint64_t entry_nbytes(const safetensors_entry *e)
{
    return entry_nelem(e) * safetensors_dtype_size(e->dtype);
}

/* The reference writer's order: dtype descending (F32, BF16, F16), then name. */
static int cmp_entry_ref(const void *a, const void *b)
{
    const safetensors_entry *x = *(const safetensors_entry *const *)a, *y = *(const safetensors_entry *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const safetensors_entry *const *)a)->name, (*(const safetensors_entry *const *)b)->name);
}

/* Refuses what would make a file the reference reader rejects, or one adaptd cannot write. */
static int entries_check(const char *path, const safetensors_entry **es, size_t n, adapt_error *err)
{
    for (size_t i = 0; i < n; i++) {
        const safetensors_entry *e = es[i];
        if (!e->name || !e->name[0])
            return adapt_fail(err, ADAPT_EINVAL, "%s: tensor %zu has no name", path, i);
        if ((unsigned)e->dtype > SAFETENSORS_F32)
            return adapt_fail(err, ADAPT_EINVAL, "%s: tensor '%s': unknown dtype %d", path, e->name, (int)e->dtype);
        if (e->ndim < 0 || e->ndim > SAFETENSORS_MAX_DIMS)
            return adapt_fail(err, ADAPT_EINVAL, "%s: tensor '%s': %d dims (0..%d allowed)", path, e->name,
                              e->ndim, SAFETENSORS_MAX_DIMS);
        uint64_t nel = 1;
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0 || (e->shape[d] && nel > (UINT64_MAX >> 3) / (uint64_t)e->shape[d]))
                return adapt_fail(err, ADAPT_EINVAL, "%s: tensor '%s': shape[%d] = %lld is negative or overflows",
                                  path, e->name, d, (long long)e->shape[d]);
            nel *= (uint64_t)e->shape[d];
        }
        if (nel && !e->data)
            return adapt_fail(err, ADAPT_EINVAL, "%s: tensor '%s' has no data", path, e->name);
    }
    const safetensors_entry **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    memcpy(sorted, es, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_entry_name);
    int rc = ADAPT_OK;
    for (size_t i = 1; i < n && rc == ADAPT_OK; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            rc = adapt_fail(err, ADAPT_EINVAL, "%s: tensor '%s' given twice", path, sorted[i]->name);
    free(sorted);
    return rc;
}

/* The header JSON for entries already in file order, padded with spaces to a multiple of 8. */
static int header_build(st_buf *b, const safetensors_entry **es, size_t n)
{
    buf_str(b, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const safetensors_entry *e = es[i];
        buf_str(b, ",");
        buf_json_serde(b, e->name);
        buf_str(b, ":{\"dtype\":\"");
        buf_str(b, safetensors_dtype_name(e->dtype));
        buf_str(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) buf_str(b, ",");
            buf_fmt_u64(b, (uint64_t)e->shape[d]);
        }
        buf_str(b, "],\"data_offsets\":[");
        buf_fmt_u64(b, off);
        buf_str(b, ",");
        off += entry_nbytes(e);
        buf_fmt_u64(b, off);
        buf_str(b, "]}");
    }
    buf_str(b, "}");
    while (!b->failed && b->len % 8) buf_put(b, " ", 1);
    return b->failed ? ADAPT_ENOMEM : ADAPT_OK;
}

static int write_fail(const char *path, adapt_error *err)
{
    return adapt_fail(err, ADAPT_EIO, "%s: write failed: %s", path, strerror(errno));
}

/* Writes bytes produced by `emit` to path through a temporary file in the same directory, so a
 * reader sees the old file or the complete new one, never a part. */
typedef int (*st_emit_fn)(int fd, const char *path, const void *ctx, adapt_error *err);

static int atomic_write(const char *path, st_emit_fn emit, const void *ctx, adapt_error *err)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp.XXXXXX", 12);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int rc = adapt_fail(err, ADAPT_EIO, "%s: cannot create a temporary file: %s", path, strerror(errno));
        free(tmp);
        return rc;
    }
    int rc = emit(fd, path, ctx, err);
    if (rc == 0 && fchmod(fd, 0644) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "%s: fchmod failed: %s", tmp, strerror(errno));
    if (rc == 0 && fsync(fd) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = adapt_fail(err, ADAPT_EIO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (rc) unlink(tmp);
    free(tmp);
    return rc ? rc : file_io_fsync_parent(path, err);
}

typedef struct st_file_job {
    const safetensors_entry **es;   /* in file order */
    size_t                    n;
    const st_buf             *header;
} st_file_job;

static int emit_tensors(int fd, const char *path, const void *ctx, adapt_error *err)
{
    const st_file_job *job = ctx;
    uint64_t hl = job->header->len;
    int bad = file_io_write_all(fd, &hl, 8) || file_io_write_all(fd, job->header->p, hl);
    for (size_t i = 0; i < job->n && !bad; i++)
        bad = file_io_write_all(fd, job->es[i]->data, entry_nbytes(job->es[i]));
    return bad ? write_fail(path, err) : ADAPT_OK;
}

/* Writes the given entries (pointers) as one file. */
static int file_write(const char *path, const safetensors_entry **es, size_t n, adapt_error *err)
{
    int rc = entries_check(path, es, n, err);
    if (rc) return rc;
    const safetensors_entry **order = malloc((n ? n : 1) * sizeof *order);
    if (!order) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    memcpy(order, es, n * sizeof *order);
    qsort(order, n, sizeof *order, cmp_entry_ref);
    st_buf header = {0};
    if (header_build(&header, order, n) != 0) rc = adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    else if (header.len > SAFETENSORS_MAX_HEADER)
        rc = adapt_fail(err, ADAPT_EINVAL, "%s: header of %zu bytes exceeds the %u-byte limit readers accept",
                        path, header.len, SAFETENSORS_MAX_HEADER);
    else {
        st_file_job job = {order, n, &header};
        rc = atomic_write(path, emit_tensors, &job, err);
    }
    free(header.p);
    free(order);
    return rc;
}

int safetensors_write_file(const char *path, const safetensors_entry *entries, size_t n,
                           adapt_error *err)
{
    const safetensors_entry **es = malloc((n ? n : 1) * sizeof *es);
    if (!es) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) es[i] = &entries[i];
    int rc = file_write(path, es, n, err);
    free(es);
    return rc;
}

static int emit_text(int fd, const char *path, const void *ctx, adapt_error *err)
{
    const st_buf *b = ctx;
    return file_io_write_all(fd, b->p, b->len) ? write_fail(path, err) : ADAPT_OK;
}

/* "model-00002-of-00005.safetensors": transformers' shard file name. */
static void shard_name(char *out, size_t cap, size_t i, size_t n)
{
    snprintf(out, cap, "model-%05zu-of-%05zu.safetensors", i + 1, n);
}

/* Is `name` a weight file of an earlier save: model.safetensors, its index, or a shard? */
static bool is_weight_file(const char *name)
{
    unsigned a, b;
    int end = 0;
    if (strcmp(name, ST_SINGLE_NAME) == 0 || strcmp(name, ST_INDEX_NAME) == 0) return true;
    return sscanf(name, "model-%5u-of-%5u.safetensors%n", &a, &b, &end) == 2 && end == (int)strlen(name) &&
           strlen(name) == strlen("model-00001-of-00001.safetensors");
}

/* Removes weight files that `keep` (a NULL-terminated list of names) does not contain. */
static int stale_remove(const char *dir, const char *const *keep, adapt_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return adapt_fail(err, ADAPT_EIO, "%s: cannot list: %s", dir, strerror(errno));
    int rc = ADAPT_OK;
    struct dirent *de;
    while ((de = readdir(d)) && rc == ADAPT_OK) {
        if (!is_weight_file(de->d_name)) continue;
        bool kept = false;
        for (const char *const *k = keep; *k && !kept; k++) kept = strcmp(*k, de->d_name) == 0;
        if (kept) continue;
        char *p = path_join(dir, de->d_name);
        if (!p) rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        else if (unlink(p) != 0 && errno != ENOENT)
            rc = adapt_fail(err, ADAPT_EIO, "%s: cannot remove a stale weight file: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    return rc;
}

/* The index as transformers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n". */
static int index_build(st_buf *b, const safetensors_entry *entries, size_t n, const size_t *shard_of,
                       size_t nshards)
{
    uint64_t params = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) { params += entry_nelem(&entries[i]); bytes += entry_nbytes(&entries[i]); }
    buf_str(b, "{\n  \"metadata\": {\n    \"total_parameters\": ");
    buf_fmt_u64(b, params);
    buf_str(b, ",\n    \"total_size\": ");
    buf_fmt_u64(b, bytes);
    buf_str(b, "\n  },\n  \"weight_map\": {");
    const safetensors_entry **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted) return ADAPT_ENOMEM;
    for (size_t i = 0; i < n; i++) sorted[i] = &entries[i];
    qsort(sorted, n, sizeof *sorted, cmp_entry_name);
    for (size_t i = 0; i < n; i++) {
        char name[64];
        shard_name(name, sizeof name, shard_of[sorted[i] - entries], nshards);
        buf_str(b, i ? ",\n    " : "\n    ");
        buf_json_python(b, sorted[i]->name);
        buf_str(b, ": ");
        buf_json_python(b, name);
    }
    buf_str(b, n ? "\n  }\n}\n" : "}\n}\n");
    free(sorted);
    return b->failed ? ADAPT_ENOMEM : ADAPT_OK;
}

/* huggingface_hub's split: walk the entries in order; one larger than the limit becomes a shard
 * of its own at once, otherwise a shard is closed when the next entry would overflow it. Shards
 * are numbered in the order they are closed, as the hub appends them to its list, so a large
 * tensor's shard can come before the one that was open when it was met. Returns the number of
 * shards (at least 1), 0 when out of memory. */
static size_t shards_plan(const safetensors_entry *entries, size_t n, uint64_t max_bytes, size_t *shard_of)
{
    size_t *closed_as = malloc((n + 1) * sizeof *closed_as);
    if (!closed_as) return 0;
    size_t ngroups = 0, nclosed = 0, cur = SIZE_MAX;
    uint64_t fill = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t sz = entry_nbytes(&entries[i]);
        if (max_bytes && sz > max_bytes) {
            closed_as[ngroups] = nclosed++;
            shard_of[i] = ngroups++;
            continue;
        }
        if (cur != SIZE_MAX && max_bytes && fill + sz > max_bytes) { closed_as[cur] = nclosed++; cur = SIZE_MAX; }
        if (cur == SIZE_MAX) { cur = ngroups++; fill = 0; }
        shard_of[i] = cur;
        fill += sz;
    }
    if (cur != SIZE_MAX) closed_as[cur] = nclosed++;
    for (size_t i = 0; i < n; i++) shard_of[i] = closed_as[shard_of[i]];
    free(closed_as);
    return nclosed ? nclosed : 1;
}

static int shards_write(const char *dir, const safetensors_entry *entries, size_t n, const size_t *shard_of,
                        size_t nshards, adapt_error *err)
{
    const safetensors_entry **es = malloc((n ? n : 1) * sizeof *es);
    if (!es) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    int rc = ADAPT_OK;
    for (size_t s = 0; s < nshards && rc == ADAPT_OK; s++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) if (shard_of[i] == s) es[k++] = &entries[i];
        char name[64];
        shard_name(name, sizeof name, s, nshards);
        char *path = path_join(dir, name);
        rc = path ? file_write(path, es, k, err) : adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        free(path);
    }
    free(es);
    return rc;
}

int safetensors_write_dir(const char *dir, const safetensors_entry *entries, size_t n,
                          uint64_t max_shard_bytes, adapt_error *err)
{
    size_t *shard_of = malloc((n ? n : 1) * sizeof *shard_of);
    if (!shard_of) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    const safetensors_entry **all = malloc((n ? n : 1) * sizeof *all);
    if (!all) { free(shard_of); return adapt_fail(err, ADAPT_ENOMEM, "out of memory"); }
    for (size_t i = 0; i < n; i++) all[i] = &entries[i];
    /* Names unique across shards too, before anything is written. */
    int rc = entries_check(dir, all, n, err);
    free(all);
    if (rc) { free(shard_of); return rc; }
    size_t nshards = shards_plan(entries, n, max_shard_bytes, shard_of);
    if (!nshards) { free(shard_of); return adapt_fail(err, ADAPT_ENOMEM, "out of memory"); }
    if (nshards == 1) {
        char *path = path_join(dir, ST_SINGLE_NAME);
        rc = path ? safetensors_write_file(path, entries, n, err) : adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        free(path);
        const char *keep[] = {ST_SINGLE_NAME, NULL};
        if (rc == 0) rc = stale_remove(dir, keep, err);
        free(shard_of);
        return rc;
    }
    char **keep = calloc(nshards + 2, sizeof *keep);
    st_buf index = {0};
    char *index_path = path_join(dir, ST_INDEX_NAME);
    if (!keep || !index_path) { rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory"); goto out; }
    rc = shards_write(dir, entries, n, shard_of, nshards, err);
    if (rc) goto out;
    if (index_build(&index, entries, n, shard_of, nshards) != 0) { rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory"); goto out; }
    if ((rc = atomic_write(index_path, emit_text, &index, err)) != 0) goto out;
    for (size_t s = 0; s < nshards; s++) {
        if (!(keep[s] = malloc(64))) { rc = adapt_fail(err, ADAPT_ENOMEM, "out of memory"); goto out; }
        shard_name(keep[s], 64, s, nshards);
    }
    keep[nshards] = (char *)ST_INDEX_NAME;
    rc = stale_remove(dir, (const char *const *)keep, err);
out:
    for (size_t s = 0; keep && s < nshards; s++) free(keep[s]);
    free(keep);
    free(index.p);
    free(index_path);
    free(shard_of);
    return rc;
}
