/* test_safetensors: the weight-file reader and writer.
 *
 * Without arguments (suite unit, also under ASan): dtype conversions against the formats'
 * definitions (every half and bf16, a stride through all floats); write -> read bit-exact for
 * F32, BF16 and F16 (scalars, empty and 5-D tensors included); writer determinism; sharded save
 * and re-save over it; name checks; every header corruption refused with file and tensor named.
 * With `--reference SCRIPT PYTHON` (suite reference): the Python `safetensors` package is the
 * reference. Files it writes (one file, and shards + index laid out as transformers'
 * save_pretrained does) are read here bit-exactly and written back byte-identical; files written
 * here are read there with identical names, dtypes, shapes and bits. */
#include "../check.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- deterministic element bits, the same formula as safetensors_ref.py ---------------------- */

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 0x811C9DC5u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x01000193u;
    return h;
}

static uint32_t mix32(uint32_t seed, uint64_t i)
{
    uint32_t x = (uint32_t)((uint64_t)seed * 0x9E3779B1u + i * 0x85EBCA77u + 0x165667B1u);
    x ^= x >> 15; x *= 0x2C1B3C6Du; x ^= x >> 12; x *= 0x297A2D39u; x ^= x >> 15;
    return x;
}

static uint64_t nelem_of(int ndim, const int64_t *shape)
{
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (uint64_t)shape[d];
    return n;
}

/* Fills data with the formula's bits for tensor `name`. */
static void *bits_make(const char *name, safetensors_dtype dt, uint64_t n)
{
    size_t es = safetensors_dtype_size(dt);
    uint8_t *p = malloc(n * es + 1);
    uint32_t seed = fnv1a(name);
    for (uint64_t i = 0; i < n; i++) {
        uint32_t x = mix32(seed, i);
        if (es == 4) memcpy(p + i * 4, &x, 4);
        else { uint16_t h = (uint16_t)(x >> 16); memcpy(p + i * 2, &h, 2); }
    }
    return p;
}

static int bits_equal(const safetensors_tensor *t)
{
    void *want = bits_make(t->name, t->dtype, t->nelem);
    int ok = memcmp(want, t->data, t->nbytes) == 0;
    free(want);
    return ok;
}

/* ---- files ----------------------------------------------------------------------------------- */

static char tmp_root[256];

static void path_make(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmp_root, name);
}

static void raw_write(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static uint8_t *raw_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) { *n = 0; return NULL; }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n + 1);
    if (fread(p, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return p;
}

/* A file of an 8-byte length, then `header`, then `data_len` bytes of data. */
static void header_write(const char *path, uint64_t declared_len, const char *header, size_t data_len)
{
    size_t hl = strlen(header);
    uint8_t *p = calloc(1, 8 + hl + data_len);
    memcpy(p, &declared_len, 8);
    memcpy(p + 8, header, hl);
    raw_write(path, p, 8 + hl + data_len);
    free(p);
}

static int files_same(const char *a, const char *b)
{
    size_t na, nb;
    uint8_t *pa = raw_read(a, &na), *pb = raw_read(b, &nb);
    int same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    if (!same) fprintf(stderr, "%s (%zu bytes) and %s (%zu bytes) differ\n", a, na, b, nb);
    free(pa);
    free(pb);
    return same;
}

static int dir_count_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) n += strstr(de->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* ---- conversions ----------------------------------------------------------------------------- */

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float ffrom(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* A half's value by its definition (sign, 5-bit exponent, 10-bit fraction), in double. */
static double half_value(uint16_t h)
{
    int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

/* The nearest half to f by search over the ordered finite halves, ties to an even fraction,
 * overflow to infinity from 65520 (the midpoint past the largest half) on. */
static uint16_t half_nearest(float f)
{
    double a = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (a >= 65520.0) return sign | 0x7C00;
    unsigned lo = 0, hi = 0x7BFF;              /* largest half <= a lies in [lo, hi] */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (half_value((uint16_t)mid) <= a) lo = mid; else hi = mid - 1;
    }
    if (lo == 0x7BFF) return sign | (uint16_t)lo;
    double below = a - half_value((uint16_t)lo), above = half_value((uint16_t)(lo + 1)) - a;
    unsigned r = below < above ? lo : above < below ? lo + 1 : (lo & 1 ? lo + 1 : lo);
    return sign | (uint16_t)r;
}

static void test_conversions(void)
{
    int bad_bf = 0, bad_h = 0, bad_rt = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hh = (uint16_t)h;
        bad_bf += fbits(safetensors_bf16_to_f32(hh)) != h << 16;
        double want = half_value(hh);
        float got = safetensors_f16_to_f32(hh);
        bad_h += want == want ? (double)got != want || !signbit(got) != !signbit(want) : got == got;
        /* Every half survives f16 -> f32 -> f16; a NaN stays a NaN. */
        uint16_t back = safetensors_f32_to_f16(got);
        bad_rt += got == got ? back != hh : (back & 0x7C00) != 0x7C00 || (back & 0x3FF) == 0;
    }
    CHECK_MSG(bad_bf == 0, "%d bf16 values widen wrongly", bad_bf);
    CHECK_MSG(bad_h == 0, "%d f16 values widen to other values than their definition", bad_h);
    CHECK_MSG(bad_rt == 0, "%d f16 values do not survive f16 -> f32 -> f16", bad_rt);

    /* Narrowing over a stride through all 2^32 patterns, each with its neighbours. */
    int bad_nh = 0, bad_nb = 0, checked = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
        for (int k = 0; k < 4; k++) {
            uint32_t v = (uint32_t)(u + (uint64_t)k);
            float f = ffrom(v);
            uint16_t got = safetensors_f32_to_f16(f);
            if (f == f) bad_nh += got != half_nearest(f);
            else bad_nh += (got & 0x7C00) != 0x7C00 || (got & 0x3FF) == 0;
            /* bf16: round the low half to nearest, ties to an even high half. */
            uint32_t hi = v >> 16, lo = v & 0xFFFF;
            if (lo > 0x8000 || (lo == 0x8000 && (hi & 1))) hi++;
            uint16_t gb = safetensors_f32_to_bf16(f);
            if (f == f) bad_nb += gb != (uint16_t)hi;
            else bad_nb += (gb & 0x7F80) != 0x7F80 || (gb & 0x7F) == 0;
            checked++;
        }
    }
    /* Where the rounding changes regime: overflow, the subnormal range and its bottom, ties. */
    static const uint32_t edges[] = {0x477FEFFFu, 0x477FF000u, 0x477FE000u, 0x33000000u, 0x33000001u,
                                     0x32FFFFFFu, 0x387FFFFFu, 0x38800000u, 0x387FE000u, 0x387FF000u,
                                     0x7F7FFFFFu, 0x7F800000u, 0x00000001u, 0x80000000u, 0x3F800000u,
                                     0x3F801000u, 0x3F803000u, 0xC77FF000u, 0xB3000001u};
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++)
        bad_nh += safetensors_f32_to_f16(ffrom(edges[i])) != half_nearest(ffrom(edges[i]));
    CHECK_MSG(bad_nh == 0, "%d of %d f32 -> f16 roundings are not to the nearest half", bad_nh, checked);
    CHECK_MSG(bad_nb == 0, "%d of %d f32 -> bf16 roundings disagree with round-half-even", bad_nb, checked);
}

/* ---- write -> read --------------------------------------------------------------------------- */

typedef struct spec {
    const char *name;
    safetensors_dtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
} spec;

static const spec gen_specs[] = {
    {"model.embed_tokens.weight",              SAFETENSORS_BF16, 2, {41, 24}},
    {"model.layers.0.self_attn.k_proj.weight", SAFETENSORS_F32,  2, {8, 24}},
    {"model.layers.0.self_attn.k_proj.bias",   SAFETENSORS_F16,  1, {8}},
    {"model.norm.weight",                      SAFETENSORS_F32,  1, {24}},
    {"visual.patch_embed.proj.weight",         SAFETENSORS_BF16, 5, {16, 3, 2, 14, 14}},
    {"visual.merger.ln_q.weight",              SAFETENSORS_F16,  1, {64}},
    {"a.scalar",                               SAFETENSORS_F32,  0, {0}},
    {"b.empty",                                SAFETENSORS_BF16, 3, {4, 0, 2}},
    {"lm_head.weight",                         SAFETENSORS_F16,  2, {41, 24}},
    {"weird \"name\"\\with\tescapes",          SAFETENSORS_F32,  1, {3}},
};
#define N_GEN (sizeof gen_specs / sizeof gen_specs[0])

static void entries_make(safetensors_entry *es, const spec *ss, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        es[i].name = ss[i].name;
        es[i].dtype = ss[i].dtype;
        es[i].ndim = ss[i].ndim;
        memcpy(es[i].shape, ss[i].shape, sizeof es[i].shape);
        es[i].data = bits_make(ss[i].name, ss[i].dtype, nelem_of(ss[i].ndim, ss[i].shape));
    }
}

static void entries_free(safetensors_entry *es, size_t n)
{
    for (size_t i = 0; i < n; i++) free((void *)es[i].data);
}

/* Every tensor of `st` is one of specs with the same dtype, shape and bits. */
static void check_against(const safetensors_t *st, const spec *ss, size_t n, const char *what)
{
    CHECK_MSG(safetensors_count(st) == n, "%s: %zu tensors, expected %zu", what, safetensors_count(st), n);
    for (size_t i = 0; i < n; i++) {
        const safetensors_tensor *t = safetensors_find(st, ss[i].name);
        CHECK_MSG(t != NULL, "%s: '%s' missing", what, ss[i].name);
        if (!t) continue;
        CHECK(t->dtype == ss[i].dtype && t->ndim == ss[i].ndim);
        CHECK(memcmp(t->shape, ss[i].shape, (size_t)t->ndim * sizeof *t->shape) == 0);
        CHECK_MSG(bits_equal(t), "%s: '%s' bits differ", what, t->name);
        /* F32 first, then the 2-byte types, after an 8-aligned header: every element aligned. */
        CHECK(t->file_offset % safetensors_dtype_size(t->dtype) == 0);
    }
}

static void test_roundtrip(void)
{
    safetensors_entry es[N_GEN];
    entries_make(es, gen_specs, N_GEN);
    char p1[512], p2[512];
    path_make(p1, sizeof p1, "rt1.safetensors");
    path_make(p2, sizeof p2, "rt2.safetensors");
    adapt_error err = {0};
    CHECK(safetensors_write_file(p1, es, N_GEN, &err) == 0);
    /* The same tensors given in another order make the same bytes. */
    safetensors_entry rev[N_GEN];
    for (size_t i = 0; i < N_GEN; i++) rev[i] = es[N_GEN - 1 - i];
    CHECK(safetensors_write_file(p2, rev, N_GEN, &err) == 0);
    CHECK(files_same(p1, p2));
    CHECK(dir_count_tmp(tmp_root) == 0);

    safetensors_t *st = NULL;
    int rc = safetensors_open(&st, p1, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc) { entries_free(es, N_GEN); return; }
    check_against(st, gen_specs, N_GEN, "roundtrip");
    CHECK(safetensors_metadata(st, "format") && strcmp(safetensors_metadata(st, "format"), "pt") == 0);
    CHECK(safetensors_metadata(st, "nothing") == NULL);
    /* Names come back sorted; the header is padded so the data starts 8-byte aligned. */
    for (size_t i = 1; i < safetensors_count(st); i++)
        CHECK(strcmp(safetensors_at(st, i - 1)->name, safetensors_at(st, i)->name) < 0);
    CHECK(safetensors_at(st, safetensors_count(st)) == NULL);
    size_t n;
    uint8_t *raw = raw_read(p1, &n);
    uint64_t hl;
    memcpy(&hl, raw, 8);
    CHECK(hl % 8 == 0 && raw[8 + hl - 1] != '\0');
    /* The F32 tensors come first, then BF16, then F16, each group by name. */
    const safetensors_tensor *f32 = safetensors_find(st, "a.scalar"), *bf = safetensors_find(st, "b.empty");
    const safetensors_tensor *f16 = safetensors_find(st, "lm_head.weight");
    CHECK(f32->file_offset == 8 + hl && f32->file_offset < bf->file_offset + 1 && bf->file_offset <= f16->file_offset);
    free(raw);

    /* read_f32 widens each dtype exactly. */
    for (size_t i = 0; i < N_GEN; i++) {
        const safetensors_tensor *t = safetensors_find(st, gen_specs[i].name);
        float *buf = malloc((t->nelem + 1) * sizeof *buf);
        CHECK(safetensors_read_f32(st, t->name, buf, t->nelem, &err) == 0);
        int bad = 0;
        for (uint64_t k = 0; k < t->nelem; k++) {
            uint16_t h = 0;
            uint32_t w = 0;
            if (t->dtype == SAFETENSORS_F32) memcpy(&w, (const uint8_t *)t->data + 4 * k, 4);
            else memcpy(&h, (const uint8_t *)t->data + 2 * k, 2);
            float want = t->dtype == SAFETENSORS_F32 ? ffrom(w)
                       : t->dtype == SAFETENSORS_BF16 ? safetensors_bf16_to_f32(h) : safetensors_f16_to_f32(h);
            bad += fbits(want) != fbits(buf[k]);
        }
        CHECK_MSG(bad == 0, "read_f32 of '%s': %d elements differ", t->name, bad);
        if (t->nelem) {
            CHECK(safetensors_read_f32(st, t->name, buf, t->nelem + 1, &err) == ADAPT_EINVAL);
            CHECK_STR_CONTAINS(err.message, t->name);
        }
        free(buf);
    }
    CHECK(safetensors_read_f32(st, "no.such", NULL, 0, &err) == ADAPT_ENOTFOUND);

    /* Names: exact set passes; the error lists missing and unexpected ones. */
    const char *names[N_GEN + 1];
    for (size_t i = 0; i < N_GEN; i++) names[i] = gen_specs[i].name;
    CHECK(safetensors_check_names(st, names, N_GEN, &err) == 0);
    names[0] = "model.layers.1.mlp.up_proj.weight";
    names[N_GEN] = "model.visual.extra";
    CHECK(safetensors_check_names(st, names, N_GEN + 1, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "model.layers.1.mlp.up_proj.weight");
    CHECK_STR_CONTAINS(err.message, "model.visual.extra");
    CHECK_STR_CONTAINS(err.message, "model.embed_tokens.weight");
    CHECK_STR_CONTAINS(err.message, "2 missing");
    CHECK_STR_CONTAINS(err.message, "1 unexpected");
    safetensors_close(st);
    entries_free(es, N_GEN);
}

static void test_sharded(void)
{
    safetensors_entry es[N_GEN];
    entries_make(es, gen_specs, N_GEN);
    char dir[512], p[600];
    path_make(dir, sizeof dir, "model");
    mkdir(dir, 0755);
    adapt_error err = {0};
    CHECK(safetensors_write_dir(dir, es, N_GEN, 2000, &err) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(access(p, F_OK) != 0);
    safetensors_t *st = NULL;
    int rc = safetensors_open(&st, dir, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc == 0) {
        check_against(st, gen_specs, N_GEN, "sharded");
        /* The 5-D tensor (18816 bytes) is over the limit: a shard of its own. */
        const safetensors_tensor *big = safetensors_find(st, "visual.patch_embed.proj.weight");
        CHECK(big && strstr(big->file, "-of-") != NULL);
        safetensors_close(st);
    }
    /* Opening the index file itself works too. */
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(safetensors_open(&st, p, &err) == 0);
    safetensors_close(st);

    /* With both a model.safetensors and an index there, transformers loads the single file. */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(safetensors_write_file(p, es, 1, &err) == 0);
    CHECK(safetensors_open(&st, dir, &err) == 0 && safetensors_count(st) == 1);
    safetensors_close(st);

    /* Re-saving as one file removes the shards and the index. */
    CHECK(safetensors_write_dir(dir, es, N_GEN, 0, &err) == 0);
    DIR *d = opendir(dir);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d))) files += de->d_name[0] != '.';
    closedir(d);
    CHECK_MSG(files == 1, "%d files left after re-saving as one file", files);
    CHECK(safetensors_open(&st, dir, &err) == 0);
    check_against(st, gen_specs, N_GEN, "single");
    safetensors_close(st);

    /* Writing refuses duplicate names before touching the directory. */
    es[1].name = es[0].name;
    CHECK(safetensors_write_dir(dir, es, N_GEN, 2000, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "given twice");
    es[1].name = gen_specs[1].name;
    es[2].shape[0] = -1;
    CHECK(safetensors_write_file(p, es, N_GEN, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, gen_specs[2].name);
    es[2].shape[0] = gen_specs[2].shape[0];
    /* A directory that is not there: an I/O error and no temporary left behind. */
    CHECK(safetensors_write_file("/nonexistent-adaptd-dir/x.safetensors", es, N_GEN, &err) == ADAPT_EIO);
    CHECK(dir_count_tmp(dir) == 0);
    entries_free(es, N_GEN);
}

/* ---- corruptions ----------------------------------------------------------------------------- */

static void expect_refused(const char *name, int code, const char *needle1, const char *needle2)
{
    char p[512];
    path_make(p, sizeof p, name);
    safetensors_t *st = NULL;
    adapt_error err = {0};
    int rc = safetensors_open(&st, p, &err);
    CHECK_MSG(rc == code, "%s: rc %d, expected %d (%s)", name, rc, code, err.message);
    CHECK(st == NULL);
    CHECK_STR_CONTAINS(err.message, p);
    if (needle1) CHECK_STR_CONTAINS(err.message, needle1);
    if (needle2) CHECK_STR_CONTAINS(err.message, needle2);
    safetensors_close(st);
}

static void corrupt(const char *name, const char *header, size_t data_len)
{
    char p[512];
    path_make(p, sizeof p, name);
    header_write(p, strlen(header), header, data_len);
}

static void test_corruptions(void)
{
    char p[512];
    path_make(p, sizeof p, "short.safetensors");
    raw_write(p, "\x08\x00\x00", 3);
    expect_refused("short.safetensors", ADAPT_ECORRUPT, "shorter than the 8-byte", NULL);

    path_make(p, sizeof p, "longlen.safetensors");
    header_write(p, 4096, "{}", 0);
    expect_refused("longlen.safetensors", ADAPT_ECORRUPT, "header length 4096", "out of range");
    path_make(p, sizeof p, "hugelen.safetensors");
    header_write(p, 200000000, "{}", 0);
    expect_refused("hugelen.safetensors", ADAPT_ECORRUPT, "header length 200000000", NULL);

    corrupt("badjson.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4);
    expect_refused("badjson.safetensors", ADAPT_ECORRUPT, "not a JSON object", "file byte");
    corrupt("array.safetensors", "[1,2,3] ", 0);
    expect_refused("array.safetensors", ADAPT_ECORRUPT, "not a JSON object", NULL);
    corrupt("trail.safetensors", "{} x", 0);
    expect_refused("trail.safetensors", ADAPT_ECORRUPT, "text after", "file byte 11");
    corrupt("utf8.safetensors", "{\"\xC3\x28\":{}}", 0);
    expect_refused("utf8.safetensors", ADAPT_ECORRUPT, "not UTF-8", "file byte 10");

    corrupt("range.safetensors",
            "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 12);
    expect_refused("range.safetensors", ADAPT_ECORRUPT, "'w.b'", "run past the data section");
    corrupt("overlap.safetensors",
            "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    expect_refused("overlap.safetensors", ADAPT_ECORRUPT, "'w.b'", "overlaps tensor 'w.a'");
    corrupt("gap.safetensors",
            "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"w.b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12);
    expect_refused("gap.safetensors", ADAPT_ECORRUPT, "'w.b'", "gap");
    corrupt("extra.safetensors", "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9);
    expect_refused("extra.safetensors", ADAPT_ECORRUPT, "5 bytes after the last tensor", NULL);
    corrupt("size.safetensors", "{\"w.size\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[0,8]}}", 8);
    expect_refused("size.safetensors", ADAPT_ECORRUPT, "'w.size'", "hold 8 bytes but BF16 x 6 elements need 12");
    corrupt("dtype.safetensors", "{\"w.ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    expect_refused("dtype.safetensors", ADAPT_EUNSUPPORTED, "'w.ids'", "dtype I64");
    corrupt("backwards.safetensors", "{\"w.r\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4);
    expect_refused("backwards.safetensors", ADAPT_ECORRUPT, "'w.r'", "end before start");
    corrupt("shape.safetensors", "{\"w.s\":{\"dtype\":\"F16\",\"shape\":[-2],\"data_offsets\":[0,4]}}", 4);
    expect_refused("shape.safetensors", ADAPT_ECORRUPT, "'w.s'", "shape[0]");
    corrupt("frac.safetensors", "{\"w.f\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4.5]}}", 4);
    expect_refused("frac.safetensors", ADAPT_ECORRUPT, "'w.f'", "data_offsets");
    corrupt("nodtype.safetensors", "{\"w.n\":{\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    expect_refused("nodtype.safetensors", ADAPT_ECORRUPT, "'w.n'", "dtype");
    corrupt("overflow.safetensors",
            "{\"w.o\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4);
    expect_refused("overflow.safetensors", ADAPT_ECORRUPT, "'w.o'", "overflows");
    corrupt("dup.safetensors",
            "{\"w.d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"w.d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_refused("dup.safetensors", ADAPT_ECORRUPT, "'w.d'", "twice");
    corrupt("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0);
    expect_refused("meta.safetensors", ADAPT_ECORRUPT, "__metadata__.format", NULL);

    /* `__metadata__` alone, an empty file of tensors, and zero-size tensors are all valid. */
    corrupt("okmeta.safetensors",
            "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},\"e\":{\"dtype\":\"F16\",\"shape\":[0],"
            "\"data_offsets\":[0,0]},\"f\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2);
    path_make(p, sizeof p, "okmeta.safetensors");
    safetensors_t *st = NULL;
    adapt_error err = {0};
    CHECK_MSG(safetensors_open(&st, p, &err) == 0, "%s", err.message);
    if (st) {
        CHECK(safetensors_count(st) == 2 && strcmp(safetensors_metadata(st, "x"), "y") == 0);
        safetensors_close(st);
    }

    /* An index that disagrees with its shards. */
    char dir[512], f[700];
    path_make(dir, sizeof dir, "badindex");
    mkdir(dir, 0755);
    snprintf(f, sizeof f, "%s/model-00001-of-00001.safetensors", dir);
    const char *h1 = "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    header_write(f, strlen(h1), h1, 4);
    snprintf(f, sizeof f, "%s/model.safetensors.index.json", dir);
    const char *idx1 = "{\"weight_map\":{\"w.a\":\"model-00001-of-00001.safetensors\",\"w.b\":\"model-00001-of-00001.safetensors\"}}";
    raw_write(f, idx1, strlen(idx1));
    CHECK(safetensors_open(&st, dir, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "'w.b'");
    CHECK_STR_CONTAINS(err.message, "model.safetensors.index.json");
    const char *idx2 = "{\"weight_map\":{}}";
    raw_write(f, idx2, strlen(idx2));
    /* A shard listed by no one is never opened, so an empty map opens no tensor... */
    CHECK(safetensors_open(&st, dir, &err) == 0 && safetensors_count(st) == 0);
    safetensors_close(st);
    const char *idx3 = "{\"weight_map\":{\"w.a\":\"model-00002-of-00002.safetensors\"}}";
    raw_write(f, idx3, strlen(idx3));
    CHECK(safetensors_open(&st, dir, &err) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "model-00002-of-00002.safetensors");
    const char *idx4 = "{\"weight_map\":{\"w.a\":\"../../etc/passwd\"}}";
    raw_write(f, idx4, strlen(idx4));
    CHECK(safetensors_open(&st, dir, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "weight_map.w.a");
    /* ...but one that holds a tensor its index does not list is refused. */
    snprintf(f, sizeof f, "%s/model-00002-of-00002.safetensors", dir);
    const char *h2 = "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"w.z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    header_write(f, strlen(h2), h2, 8);
    snprintf(f, sizeof f, "%s/model.safetensors.index.json", dir);
    raw_write(f, idx3, strlen(idx3));
    CHECK(safetensors_open(&st, dir, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "'w.z'");
    CHECK_STR_CONTAINS(err.message, "missing from weight_map");

    CHECK(safetensors_open(&st, tmp_root, &err) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "model.safetensors");
}

/* ---- against the Python reference ------------------------------------------------------------ */

/* Runs `python script verb dir`; returns its exit status, or -1 when it could not start. */
static int python_run(const char *python, const char *script, const char *verb)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s' %s '%s'", python, script, verb, tmp_root);
    fflush(stdout);
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* Entries pointing into an open checkpoint, in the order of py/order.txt. */
static size_t order_read(const safetensors_t *st, const char *path, safetensors_entry *es, size_t cap,
                         uint64_t *limit)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1024];
    size_t n = 0;
    unsigned long long lim = 0;
    if (!fgets(line, sizeof line, f) || sscanf(line, "%llu", &lim) != 1) { fclose(f); return 0; }
    *limit = lim;
    while (n < cap && fgets(line, sizeof line, f)) {
        char name[512];
        if (sscanf(line, "%511s", name) != 1) continue;
        const safetensors_tensor *t = safetensors_find(st, name);
        CHECK_MSG(t != NULL, "'%s' of order.txt is not in the reference file", name);
        if (!t) continue;
        es[n].name = t->name;
        es[n].dtype = t->dtype;
        es[n].ndim = t->ndim;
        memcpy(es[n].shape, t->shape, sizeof es[n].shape);
        es[n].data = t->data;
        n++;
    }
    fclose(f);
    return n;
}

static void compare_dirs(const char *a, const char *b)
{
    DIR *d = opendir(a);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, de->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, de->d_name);
        CHECK_MSG(files_same(pa, pb), "%s differs from the reference's", de->d_name);
        n++;
    }
    if (d) closedir(d);
    CHECK_MSG(n >= 3, "only %d files in %s", n, a);
}

static void reference_read_and_rewrite(void)
{
    char p[512], q[512], order[512];
    safetensors_entry es[64];
    uint64_t limit = 0;
    adapt_error err = {0};
    safetensors_t *st = NULL;
    path_make(p, sizeof p, "py/one.safetensors");
    path_make(order, sizeof order, "py/order.txt");
    int rc = safetensors_open(&st, p, &err);
    CHECK_MSG(rc == 0, "reading the reference's file: %s", err.message);
    if (rc) return;
    size_t n = order_read(st, order, es, 64, &limit);
    CHECK(n == safetensors_count(st) && n > 0);
    int bad = 0;
    for (size_t i = 0; i < safetensors_count(st); i++) bad += !bits_equal(safetensors_at(st, i));
    CHECK_MSG(bad == 0, "%d tensors of the reference's file read with wrong bits", bad);
    path_make(q, sizeof q, "c");
    mkdir(q, 0755);
    path_make(q, sizeof q, "c/one.safetensors");
    CHECK(safetensors_write_file(q, es, n, &err) == 0);
    CHECK_MSG(files_same(p, q), "adaptd's rewrite of the reference's file is not byte-identical");
    safetensors_close(st);

    path_make(p, sizeof p, "py/sharded");
    rc = safetensors_open(&st, p, &err);
    CHECK_MSG(rc == 0, "reading the reference's shards: %s", err.message);
    if (rc) return;
    n = order_read(st, order, es, 64, &limit);
    bad = 0;
    for (size_t i = 0; i < safetensors_count(st); i++) bad += !bits_equal(safetensors_at(st, i));
    CHECK_MSG(bad == 0, "%d tensors of the reference's shards read with wrong bits", bad);
    path_make(q, sizeof q, "c/sharded");
    mkdir(q, 0755);
    CHECK(safetensors_write_dir(q, es, n, limit, &err) == 0);
    compare_dirs(p, q);
    safetensors_close(st);
    printf("read the reference's one file and 3 shards bit-exactly; rewrote both byte-identically\n");
}

static void reference_write(void)
{
    safetensors_entry es[N_GEN];
    entries_make(es, gen_specs, N_GEN);
    char p[512];
    adapt_error err = {0};
    path_make(p, sizeof p, "c/gen.safetensors");
    CHECK(safetensors_write_file(p, es, N_GEN, &err) == 0);
    path_make(p, sizeof p, "c/gen_sharded");
    mkdir(p, 0755);
    CHECK(safetensors_write_dir(p, es, N_GEN, 2000, &err) == 0);
    path_make(p, sizeof p, "c/expect.txt");
    FILE *f = fopen(p, "w");
    for (size_t i = 0; i < N_GEN; i++) {
        /* The name in hex: one token a field whatever characters it holds. */
        for (const char *c = es[i].name; *c; c++) fprintf(f, "%02x", (unsigned char)*c);
        fprintf(f, " %s %d", safetensors_dtype_name(es[i].dtype), es[i].ndim);
        for (int d = 0; d < es[i].ndim; d++) fprintf(f, " %lld", (long long)es[i].shape[d]);
        fputc('\n', f);
    }
    fclose(f);
    entries_free(es, N_GEN);
}

static int reference_main(const char *script, const char *python_default)
{
    int missing_code;
    const char *python = check_reference_python(python_default, &missing_code);
    if (!python) return missing_code;
    CHECK(python_run(python, script, "make") == 0);
    reference_read_and_rewrite();
    reference_write();
    return -1;
}

static int rm_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

int main(int argc, char **argv)
{
    snprintf(tmp_root, sizeof tmp_root, "%s/adapt-st-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return 1; }
    int rc;
    if (argc == 4 && strcmp(argv[1], "--reference") == 0) {
        rc = reference_main(argv[2], argv[3]);
        if (rc == -1) {
            int missing_code;
            const char *python = check_reference_python(argv[3], &missing_code);
            CHECK_MSG(python && python_run(python, argv[2], "check") == 0, "the reference rejected adaptd's files");
            rc = check_report("safetensors (reference)");
        }
    } else {
        test_conversions();
        test_roundtrip();
        test_sharded();
        test_corruptions();
        rc = check_report("safetensors");
    }
    rm_tree(tmp_root);
    return rc;
}
