/* tok: byte-level BPE tokenizer equal to Hugging Face `tokenizers` (see tok.h for the pipeline).
 *
 * Design: the vocabulary is kept over raw bytes, not over the byte-level alphabet (Ġ, Ċ, ...) of
 * tokenizer.json, so a word goes from the regex straight into BPE without re-spelling it; the
 * byte-level alphabet is undone once, at load. BPE merges a word with a rank array for short
 * words and a binary heap for long ones, and each encoder remembers the ids of the words it
 * has already merged. */
#include "tok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uset.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- growing buffers ------------------------------------------------------------------------ */

int tok_ids_push(tok_ids *l, int32_t id, uint32_t end)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        int32_t *ids = realloc(l->ids, cap * sizeof *ids);
        if (!ids) return ADAPT_ENOMEM;
        l->ids = ids;
        uint32_t *ends = realloc(l->ends, cap * sizeof *ends);
        if (!ends) return ADAPT_ENOMEM;
        l->ends = ends;
        l->cap = cap;
    }
    l->ids[l->n] = id;
    l->ends[l->n] = end;
    l->n++;
    return ADAPT_OK;
}

void tok_ids_free(tok_ids *l)
{
    free(l->ids);
    free(l->ends);
    memset(l, 0, sizeof *l);
}

int tok_bytes_reserve(tok_bytes *b, size_t extra)
{
    if (b->len + extra <= b->cap) return ADAPT_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return ADAPT_ENOMEM;
    b->data = d;
    b->cap = cap;
    return ADAPT_OK;
}

int tok_bytes_append(tok_bytes *b, const void *data, size_t len)
{
    if (tok_bytes_reserve(b, len + 1)) return ADAPT_ENOMEM;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';   /* keeps the buffer usable as a C string */
    return ADAPT_OK;
}

void tok_bytes_free(tok_bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s (n > 0 bytes left). Sets *valid; an invalid sequence's length
 * is that of its longest prefix of a valid sequence, at least 1 — the unit that Rust's
 * from_utf8_lossy replaces with one U+FFFD. */
static size_t utf8_seq(const uint8_t *s, size_t n, bool *valid)
{
    uint8_t c = s[0];
    *valid = true;
    if (c < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;       /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *valid = false;
        return 1;
    }
    size_t i = 1;
    for (; i < need && i < n; i++) {
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    if (i < need) *valid = false;
    return i;
}

size_t tok_utf8_check(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        bool ok;
        size_t k = utf8_seq(s + i, len - i, &ok);
        if (!ok) return i;
        i += k;
    }
    return len;
}

/* Appends s with each invalid sequence replaced by U+FFFD (EF BF BD). */
static int utf8_append_lossy(tok_bytes *out, const uint8_t *s, size_t n)
{
    size_t i = 0, run = 0;
    while (i < n) {
        bool ok;
        size_t k = s[i] < 0x80 ? (ok = true, 1) : utf8_seq(s + i, n - i, &ok);
        if (ok) { i += k; continue; }
        if (tok_bytes_append(out, s + run, i - run)) return ADAPT_ENOMEM;
        if (tok_bytes_append(out, "\xEF\xBF\xBD", 3)) return ADAPT_ENOMEM;
        i += k;
        run = i;
    }
    return tok_bytes_append(out, s + run, n - run);
}

/* ---- hashing -------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 32);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

/* ---- the tokenizer -------------------------------------------------------------------------- */

typedef struct tok_added {
    uint32_t off, len;         /* content in the arena; NFC-normalized when normalized is set */
    int32_t  id;
    bool     special, lstrip, rstrip, single_word, normalized;
} tok_added;

/* The added tokens matched in one pass: those with normalized=false (on the raw text) or those
 * with normalized=true (on normalized text). by_first lists indices into tok->added grouped by
 * first byte, longest first, so the first hit at a position is the leftmost-longest match. */
typedef struct added_set {
    uint32_t *order;
    uint32_t  start[257];      /* by_first range of first byte b: order[start[b] .. start[b+1]) */
    size_t    n;
} added_set;

struct tok_tokenizer {
    size_t    n_ids;           /* highest id + 1 */
    size_t    n_model;         /* entries of model.vocab */
    uint8_t  *arena;           /* bytes of every token, then of added contents */
    size_t    arena_len, arena_cap;
    uint32_t *tok_off;         /* [n_ids] where id's decoded bytes start in arena */
    uint32_t *tok_len;         /* [n_ids] their length; UINT32_MAX for an unused id */
    uint8_t  *is_special;      /* [n_ids] */

    int32_t  *vocab_slots;     /* open addressing over model vocab bytes -> id, -1 empty */
    size_t    vocab_mask;
    uint64_t *merge_keys;      /* open addressing (left << 32 | right) -> rank, new id */
    uint32_t *merge_rank;
    int32_t  *merge_new;
    size_t    merge_mask;
    int32_t   byte_id[256];    /* the token of each single byte */

    tok_added *added;
    size_t     n_added;
    added_set  raw_set, norm_set;

    pcre2_code *split_re;
    bool        nfc;
    bool        ignore_merges;
    const UNormalizer2 *nfc_norm;   /* the NFC that tokenizers applies (see load_normalizer) */
    UNormalizer2       *nfc_filtered;
    USet               *nfc_age;

    int32_t bos_id, eos_id, pad_id;
};

static int arena_put(tok_tokenizer *t, const void *p, size_t n, uint32_t *off)
{
    if (t->arena_len + n > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 20;
        while (cap < t->arena_len + n) cap *= 2;
        uint8_t *a = realloc(t->arena, cap);
        if (!a) return ADAPT_ENOMEM;
        t->arena = a;
        t->arena_cap = cap;
    }
    if (t->arena_len + n > UINT32_MAX) return ADAPT_ERANGE;
    memcpy(t->arena + t->arena_len, p, n);
    *off = (uint32_t)t->arena_len;
    t->arena_len += n;
    return ADAPT_OK;
}

static int32_t vocab_find(const tok_tokenizer *t, const uint8_t *p, size_t n)
{
    size_t i = hash_bytes(p, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && !memcmp(t->arena + t->tok_off[id], p, n)) return id;
    }
}

static void vocab_insert(tok_tokenizer *t, int32_t id)
{
    size_t i = hash_bytes(t->arena + t->tok_off[id], t->tok_len[id]) & t->vocab_mask;
    while (t->vocab_slots[i] >= 0) i = (i + 1) & t->vocab_mask;
    t->vocab_slots[i] = id;
}

/* The merge of tokens (left, right): its rank, and the merged id through *new_id; UINT32_MAX if
 * the pair does not merge. Hot: called once per adjacent pair while merging. */
static inline uint32_t merge_find(const tok_tokenizer *t, int32_t left, int32_t right,
                                  int32_t *new_id)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = hash_pair(key) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        uint64_t k = t->merge_keys[i];
        if (k == key) { *new_id = t->merge_new[i]; return t->merge_rank[i]; }
        if (k == UINT64_MAX) return UINT32_MAX;
    }
}

/* ---- byte-level alphabet -------------------------------------------------------------------- */

/* GPT-2's reversible map of bytes to printable code points: printable Latin-1 bytes stand for
 * themselves, the rest take code points 256, 257, ... in byte order. Returns the byte of code
 * point cp, or -1 when cp is not in the alphabet. */
static int bytelevel_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    uint32_t k = cp - 256;     /* the k-th byte outside the printable ranges */
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        if (!printable && k-- == 0) return b;
    }
    return -1;
}

/* Undoes the byte-level alphabet of s (UTF-8) into out (room for strlen(s) bytes). Returns the
 * byte count, or -1 when s holds a character outside the alphabet. */
static long bytelevel_decode(const char *s, size_t n, uint8_t *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        UChar32 cp;
        U8_NEXT((const uint8_t *)s, i, n, cp);
        int b = cp < 0 ? -1 : bytelevel_byte((uint32_t)cp);
        if (b < 0) return -1;
        out[o++] = (uint8_t)b;
    }
    return (long)o;
}

/* ---- loading tokenizer.json ----------------------------------------------------------------- */

static int read_file(const char *path, char **data, size_t *len, adapt_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return adapt_fail(err, ADAPT_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0) {
        fclose(f);
        return adapt_fail(err, ADAPT_EIO, "%s: cannot stat", path);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) { fclose(f); return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path); }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        free(buf);
        return adapt_fail(err, ADAPT_EIO, "%s: short read", path);
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return ADAPT_OK;
}

/* Refuses any key of obj that is not in allowed (NULL-terminated), naming it. */
static int json_only_keys(const cJSON *obj, const char *const *allowed, const char *where,
                          const char *path, adapt_error *err)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        bool known = false;
        for (size_t i = 0; allowed[i]; i++) known |= !strcmp(c->string, allowed[i]);
        if (!known)
            return adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: field %s.%s is not supported by adaptd",
                              path, where, c->string);
    }
    return ADAPT_OK;
}

static bool json_is_null_or_absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

static bool json_is_false_or_absent(const cJSON *v) { return !v || cJSON_IsFalse(v); }

static bool json_is_empty_string_or_null(const cJSON *v)
{
    return json_is_null_or_absent(v) || (cJSON_IsString(v) && !v->valuestring[0]);
}

static const char *json_type(const cJSON *obj)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(ty) ? ty->valuestring : "";
}

#define REFUSE(field, ...) \
    adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: " field " is not supported by adaptd", path, __VA_ARGS__)

static int load_normalizer(tok_tokenizer *t, const cJSON *n, const char *path, adapt_error *err)
{
    if (json_is_null_or_absent(n)) return ADAPT_OK;
    static const char *const keys[] = {"type", NULL};
    if (!cJSON_IsObject(n) || strcmp(json_type(n), "NFC"))
        return REFUSE("normalizer.type '%s'", cJSON_IsObject(n) ? json_type(n) : "?");
    if (json_only_keys(n, keys, "normalizer", path, err)) return err->code;
    /* tokenizers' NFC (the unicode-normalization-alignments crate) carries Unicode 9.0 data:
     * a character assigned later is, to it, an unassigned starter that neither reorders nor
     * composes (measured against tokenizers 0.23: U+1E944 of 9.0 reorders, U+1DF6 of 10.0 does
     * not). ICU's filtered normalizer over [:age=9.0:] is exactly that, and normalization
     * stability guarantees older characters behave the same in ICU's newer data. */
    UErrorCode uerr = U_ZERO_ERROR;
    const UNormalizer2 *nfc = unorm2_getNFCInstance(&uerr);
    static const UChar age_pattern[] = u"[:age=9.0:]";
    if (U_SUCCESS(uerr)) t->nfc_age = uset_openPattern(age_pattern, -1, &uerr);
    if (U_SUCCESS(uerr)) t->nfc_filtered = unorm2_openFiltered(nfc, t->nfc_age, &uerr);
    if (U_FAILURE(uerr))
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: normalizer NFC: ICU has no NFC data (%s)",
                          path, u_errorName(uerr));
    t->nfc_norm = t->nfc_filtered;
    t->nfc = true;
    return ADAPT_OK;
}

static int compile_split(tok_tokenizer *t, const char *pattern, bool literal, const char *path,
                         adapt_error *err)
{
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    t->split_re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &code, &at, NULL);
    if (!t->split_re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "%s: pre_tokenizer Split pattern: PCRE2 refuses it at offset %zu: %s",
                          path, (size_t)at, (const char *)msg);
    }
    /* JIT makes matching several times faster; without it PCRE2's interpreter gives the same
     * matches, so a failure here only costs speed. */
    pcre2_jit_compile(t->split_re, PCRE2_JIT_COMPLETE);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->split_re, NULL);
    if (!md) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    int rc = pcre2_match(t->split_re, (PCRE2_SPTR)"", 0, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    if (rc >= 0)
        return adapt_fail(err, ADAPT_EUNSUPPORTED,
                          "%s: pre_tokenizer Split pattern matches the empty string, which adaptd "
                          "does not split like tokenizers", path);
    return ADAPT_OK;
}

/* GPT-2's pre-tokenizer regex, used by a ByteLevel pre-tokenizer with use_regex=true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pretok_one(tok_tokenizer *t, const cJSON *p, bool *have_bytelevel,
                           const char *path, adapt_error *err)
{
    const char *ty = json_type(p);
    if (!strcmp(ty, "Split")) {
        static const char *const keys[] = {"type", "pattern", "behavior", "invert", NULL};
        if (json_only_keys(p, keys, "pre_tokenizer(Split)", path, err)) return err->code;
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
            return REFUSE("pre_tokenizer Split.behavior '%s'",
                          cJSON_IsString(beh) ? beh->valuestring : "?");
        if (!json_is_false_or_absent(cJSON_GetObjectItemCaseSensitive(p, "invert")))
            return REFUSE("pre_tokenizer Split.invert %s", "true");
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (t->split_re) return REFUSE("a second regex pre_tokenizer (%s)", "Split");
        if (cJSON_IsString(re)) return compile_split(t, re->valuestring, false, path, err);
        if (cJSON_IsString(lit)) return compile_split(t, lit->valuestring, true, path, err);
        return REFUSE("pre_tokenizer Split.pattern %s", "without Regex or String");
    }
    if (!strcmp(ty, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets",
                                           "use_regex", NULL};
        if (json_only_keys(p, keys, "pre_tokenizer(ByteLevel)", path, err)) return err->code;
        if (!json_is_false_or_absent(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space")))
            return REFUSE("pre_tokenizer ByteLevel.add_prefix_space %s", "true");
        /* trim_offsets changes offsets only, never ids. */
        const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        if (!use_regex || cJSON_IsTrue(use_regex)) {
            if (t->split_re) return REFUSE("a second regex pre_tokenizer (%s)", "ByteLevel.use_regex");
            if (compile_split(t, gpt2_pattern, false, path, err)) return err->code;
        }
        if (*have_bytelevel) return REFUSE("a second pre_tokenizer %s", "ByteLevel");
        *have_bytelevel = true;
        return ADAPT_OK;
    }
    return REFUSE("pre_tokenizer type '%s'", ty);
}

static int load_pre_tokenizer(tok_tokenizer *t, const cJSON *p, const char *path, adapt_error *err)
{
    bool have_bytelevel = false;
    if (!cJSON_IsObject(p)) return REFUSE("pre_tokenizer %s", "null (a byte-level BPE needs one)");
    if (!strcmp(json_type(p), "Sequence")) {
        static const char *const keys[] = {"type", "pretokenizers", NULL};
        if (json_only_keys(p, keys, "pre_tokenizer", path, err)) return err->code;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list)) return REFUSE("pre_tokenizer.pretokenizers %s", "not a list");
        bool bytelevel_seen = false;
        for (const cJSON *e = list->child; e; e = e->next) {
            /* ByteLevel must come last: a Split after it would see the byte-level alphabet. */
            if (bytelevel_seen) return REFUSE("pre_tokenizer '%s' after ByteLevel", json_type(e));
            if (load_pretok_one(t, e, &have_bytelevel, path, err)) return err->code;
            bytelevel_seen = have_bytelevel;
        }
    } else if (load_pretok_one(t, p, &have_bytelevel, path, err)) {
        return err->code;
    }
    if (!have_bytelevel) return REFUSE("pre_tokenizer %s", "without ByteLevel");
    if (!t->split_re) return REFUSE("pre_tokenizer %s", "without a regex split");
    return ADAPT_OK;
}

static int load_post_and_decoder(const cJSON *root, const char *path, adapt_error *err)
{
    /* The post-processor only adds bos/eos when encoding with add_special_tokens=True, which
     * adaptd never does (chat rendering places them itself), and ByteLevel's changes offsets
     * only: both are accepted and have no effect on ids. */
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (!json_is_null_or_absent(post) && strcmp(json_type(post), "ByteLevel") &&
        strcmp(json_type(post), "TemplateProcessing"))
        return REFUSE("post_processor type '%s'", json_type(post));
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!cJSON_IsObject(dec) || strcmp(json_type(dec), "ByteLevel"))
        return REFUSE("decoder type '%s'", cJSON_IsObject(dec) ? json_type(dec) : "null");
    static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
    return json_only_keys(dec, keys, "decoder", path, err);
}

/* Stores the model vocabulary: bytes of each id in the arena, and the lookup table. */
static int load_vocab(tok_tokenizer *t, const cJSON *vocab, const char *path, adapt_error *err)
{
    size_t n = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX - 1)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.vocab[\"%s\"]: not an id", path, e->string);
        if ((size_t)e->valueint + 1 > t->n_ids) t->n_ids = (size_t)e->valueint + 1;
        n++;
    }
    t->n_model = n;
    t->vocab_mask = pow2_at_least(n * 2) - 1;
    t->vocab_slots = malloc((t->vocab_mask + 1) * sizeof *t->vocab_slots);
    if (!t->vocab_slots) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    memset(t->vocab_slots, 0xFF, (t->vocab_mask + 1) * sizeof *t->vocab_slots);
    return ADAPT_OK;
}

static int alloc_ids(tok_tokenizer *t, const char *path, adapt_error *err)
{
    if (t->n_ids > (1u << 24))   /* real vocabularies stay under a million; this is a typo */
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: token id %zu is beyond the 16M ids adaptd "
                          "accepts", path, t->n_ids - 1);
    t->tok_off = calloc(t->n_ids, sizeof *t->tok_off);
    t->tok_len = malloc(t->n_ids * sizeof *t->tok_len);
    t->is_special = calloc(t->n_ids, 1);
    if (!t->tok_off || !t->tok_len || !t->is_special)
        return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    memset(t->tok_len, 0xFF, t->n_ids * sizeof *t->tok_len);
    return ADAPT_OK;
}

static int fill_vocab(tok_tokenizer *t, const cJSON *vocab, const char *path, adapt_error *err)
{
    uint8_t buf[1024];
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = e->valueint;
        size_t sl = strlen(e->string);
        if (t->tok_len[id] != UINT32_MAX)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.vocab: id %d given twice", path, id);
        long bl = sl < sizeof buf ? bytelevel_decode(e->string, sl, buf) : -1;
        /* A token outside the byte-level alphabet can never come out of the byte-level
         * pre-tokenizer; tokenizers' decoder emits such a token's text as it is. */
        bool bytelevel = bl >= 0;
        const void *bytes = bytelevel ? (const void *)buf : e->string;
        size_t len = bytelevel ? (size_t)bl : sl;
        if (arena_put(t, bytes, len, &t->tok_off[id]))
            return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
        t->tok_len[id] = (uint32_t)len;
        if (bytelevel && vocab_find(t, bytes, len) < 0) vocab_insert(t, id);
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
        if (t->byte_id[b] < 0)
            return adapt_fail(err, ADAPT_EUNSUPPORTED,
                              "%s: model.vocab lacks the byte-level token of byte 0x%02X, which "
                              "adaptd's byte-level BPE needs", path, b);
    }
    return ADAPT_OK;
}

/* Looks up one side of a merge ("a" of "a b") spelled in the byte-level alphabet. */
static int32_t merge_side(const tok_tokenizer *t, const char *s, size_t n)
{
    uint8_t buf[1024];
    long bl = n < sizeof buf ? bytelevel_decode(s, n, buf) : -1;
    return bl < 0 ? -1 : vocab_find(t, buf, (size_t)bl);
}

static int load_merges(tok_tokenizer *t, const cJSON *merges, const char *path, adapt_error *err)
{
    size_t n = (size_t)cJSON_GetArraySize(merges);
    t->merge_mask = pow2_at_least(n * 2) - 1;
    size_t cap = t->merge_mask + 1;
    t->merge_keys = malloc(cap * sizeof *t->merge_keys);
    t->merge_rank = malloc(cap * sizeof *t->merge_rank);
    t->merge_new = malloc(cap * sizeof *t->merge_new);
    if (!t->merge_keys || !t->merge_rank || !t->merge_new)
        return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    memset(t->merge_keys, 0xFF, cap * sizeof *t->merge_keys);
    uint32_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(m)) {   /* "a b" (older files) */
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.merges[%u]: not \"a b\"", path, rank);
            a = m->valuestring; al = (size_t)(sp - a);
            b = sp + 1;         bl = strlen(b);
        } else if (cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {   /* ["a", "b"] */
            a = m->child->valuestring;       al = strlen(a);
            b = m->child->next->valuestring; bl = strlen(b);
        } else {
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.merges[%u]: not a pair", path, rank);
        }
        int32_t left = merge_side(t, a, al), right = merge_side(t, b, bl);
        if (left < 0 || right < 0)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.merges[%u]: '%.*s' not in model.vocab",
                              path, rank, left < 0 ? (int)al : (int)bl, left < 0 ? a : b);
        uint8_t both[2048];
        uint32_t ll = t->tok_len[left], rl = t->tok_len[right];
        if (ll + rl > sizeof both)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.merges[%u]: too long", path, rank);
        memcpy(both, t->arena + t->tok_off[left], ll);
        memcpy(both + ll, t->arena + t->tok_off[right], rl);
        int32_t merged = vocab_find(t, both, ll + rl);
        if (merged < 0)
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.merges[%u]: the merged token is not in "
                              "model.vocab", path, rank);
        uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
        size_t i = hash_pair(key) & t->merge_mask;
        while (t->merge_keys[i] != UINT64_MAX && t->merge_keys[i] != key) i = (i + 1) & t->merge_mask;
        /* a repeated merge takes its last rank, as tokenizers' map of merges does */
        t->merge_keys[i] = key;
        t->merge_rank[i] = rank;
        t->merge_new[i] = merged;
    }
    return ADAPT_OK;
}

static int load_model(tok_tokenizer *t, const cJSON *m, const char *path, adapt_error *err)
{
    if (!cJSON_IsObject(m) || strcmp(json_type(m), "BPE"))
        return REFUSE("model.type '%s'", cJSON_IsObject(m) ? json_type(m) : "?");
    static const char *const keys[] = {"type", "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges", NULL};
    if (json_only_keys(m, keys, "model", path, err)) return err->code;
    if (!json_is_null_or_absent(cJSON_GetObjectItemCaseSensitive(m, "dropout")))
        return REFUSE("model.dropout %s", "other than null");
    if (!json_is_null_or_absent(cJSON_GetObjectItemCaseSensitive(m, "unk_token")))
        return REFUSE("model.unk_token %s", "other than null");
    if (!json_is_empty_string_or_null(cJSON_GetObjectItemCaseSensitive(m, "continuing_subword_prefix")))
        return REFUSE("model.continuing_subword_prefix %s", "other than empty");
    if (!json_is_empty_string_or_null(cJSON_GetObjectItemCaseSensitive(m, "end_of_word_suffix")))
        return REFUSE("model.end_of_word_suffix %s", "other than empty");
    if (!json_is_false_or_absent(cJSON_GetObjectItemCaseSensitive(m, "byte_fallback")))
        return REFUSE("model.byte_fallback %s", "true");
    /* fuse_unk only joins unknown tokens, and a byte-level BPE without unk_token has none. */
    const cJSON *im = cJSON_GetObjectItemCaseSensitive(m, "ignore_merges");
    t->ignore_merges = cJSON_IsTrue(im);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsObject(vocab)) return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.vocab: not an object", path);
    if (!cJSON_IsArray(merges)) return adapt_fail(err, ADAPT_ECORRUPT, "%s: model.merges: not a list", path);
    return load_vocab(t, vocab, path, err);
}

static int parse_added(tok_tokenizer *t, const cJSON *list, const char *path, adapt_error *err)
{
    if (json_is_null_or_absent(list)) return ADAPT_OK;
    if (!cJSON_IsArray(list)) return adapt_fail(err, ADAPT_ECORRUPT, "%s: added_tokens: not a list", path);
    t->added = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof *t->added);
    if (!t->added) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    static const char *const keys[] = {"id", "content", "single_word", "lstrip", "rstrip",
                                       "normalized", "special", NULL};
    size_t k = 0;
    for (const cJSON *e = list->child; e; e = e->next, k++) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", k);
        if (json_only_keys(e, keys, where, path, err)) return err->code;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > INT32_MAX - 1 ||
            !cJSON_IsString(content) || !content->valuestring[0])
            return adapt_fail(err, ADAPT_ECORRUPT, "%s: %s: needs an id and a non-empty content",
                              path, where);
        tok_added *a = &t->added[t->n_added++];
        a->id = id->valueint;
        a->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        a->single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word"));
        a->normalized = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "normalized"));
        if ((size_t)a->id + 1 > t->n_ids) t->n_ids = (size_t)a->id + 1;
    }
    return ADAPT_OK;
}

static int nfc_utf8(const UNormalizer2 *norm, const uint8_t *s, size_t n, tok_bytes *out,
                    UChar **u1, UChar **u2, size_t *ucap);

/* The id tokenizers' AddedVocabulary gives added token k when it loads the list in order: that of
 * an earlier added token with the same content, else that of the model's vocabulary entry
 * (in_vocab, -1 if none), else the next id after the model's and the added ones so far. */
static int32_t added_expected_id(const tok_tokenizer *t, const char *const *contents, size_t k,
                                 int32_t in_vocab, size_t vocab_n)
{
    for (size_t i = 0; i < k; i++)
        if (!strcmp(contents[i], contents[k])) return t->added[i].id;
    if (in_vocab >= 0) return in_vocab;
    int64_t max = -1;
    for (size_t i = 0; i < k; i++) if (t->added[i].id > max) max = t->added[i].id;
    return max >= (int64_t)vocab_n ? (int32_t)(max + 1) : (int32_t)vocab_n;
}

/* Gives each added token its bytes for decoding (as tokenizers' ByteLevel decoder spells it) and
 * its content for matching (NFC-normalized when normalized=true). */
static int store_added(tok_tokenizer *t, const cJSON *list, size_t vocab_n, const char *path,
                       adapt_error *err)
{
    uint8_t buf[1024];
    tok_bytes norm = {0};
    UChar *u1 = NULL, *u2 = NULL;
    size_t ucap = 0;
    int rc = ADAPT_OK;
    const char **contents = calloc(t->n_added + 1, sizeof *contents);
    if (!contents) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    const cJSON *e = list ? list->child : NULL;
    for (size_t k = 0; k < t->n_added; k++, e = e->next) {
        tok_added *a = &t->added[k];
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        contents[k] = c;
        size_t cl = strlen(c);
        long bl = cl < sizeof buf ? bytelevel_decode(c, cl, buf) : -1;
        int32_t in_vocab = bl >= 0 ? vocab_find(t, buf, (size_t)bl) : -1;
        int32_t want = added_expected_id(t, contents, k, in_vocab, vocab_n);
        if (want != a->id) {
            rc = adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: added_tokens[%zu] '%s' has id %d where "
                            "tokenizers would give it %d; adaptd does not load a tokenizer.json "
                            "whose added-token ids disagree with tokenizers'", path, k, c, a->id, want);
            break;
        }
        uint32_t off;
        if (arena_put(t, bl >= 0 ? (const void *)buf : c, bl >= 0 ? (size_t)bl : cl, &off)) {
            rc = adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
            break;
        }
        t->tok_off[a->id] = off;
        t->tok_len[a->id] = bl >= 0 ? (uint32_t)bl : (uint32_t)cl;
        t->is_special[a->id] = a->special;
        const uint8_t *m = (const uint8_t *)c;
        size_t ml = cl;
        if (a->normalized && t->nfc) {
            norm.len = 0;
            if (nfc_utf8(t->nfc_norm, m, ml, &norm, &u1, &u2, &ucap)) {
                rc = adapt_fail(err, ADAPT_EINVAL, "%s: added_tokens[%zu]: NFC failed", path, k);
                break;
            }
            m = (const uint8_t *)norm.data;
            ml = norm.len;
        }
        if (arena_put(t, m, ml, &a->off)) {
            rc = adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
            break;
        }
        a->len = (uint32_t)ml;
    }
    tok_bytes_free(&norm);
    free(u1);
    free(u2);
    free(contents);
    return rc;
}

static int build_added_set(tok_tokenizer *t, added_set *set, bool normalized)
{
    set->order = malloc((t->n_added + 1) * sizeof *set->order);
    if (!set->order) return ADAPT_ENOMEM;
    set->n = 0;
    memset(set->start, 0, sizeof set->start);
    for (size_t k = 0; k < t->n_added; k++)
        if (t->added[k].normalized == normalized) set->start[t->arena[t->added[k].off] + 1]++;
    for (int b = 0; b < 256; b++) set->start[b + 1] += set->start[b];
    uint32_t fill[256];
    memcpy(fill, set->start, sizeof fill);
    for (size_t k = 0; k < t->n_added; k++) {
        if (t->added[k].normalized != normalized) continue;
        uint8_t b = t->arena[t->added[k].off];
        uint32_t i = fill[b]++;
        /* insertion by length, longest first: the first that matches is the longest */
        while (i > set->start[b] && t->added[set->order[i - 1]].len < t->added[k].len) {
            set->order[i] = set->order[i - 1];
            i--;
        }
        set->order[i] = (uint32_t)k;
        set->n++;
    }
    return ADAPT_OK;
}

static int load_tokenizer_json(tok_tokenizer *t, const cJSON *root, const char *path, adapt_error *err)
{
    static const char *const keys[] = {"version", "truncation", "padding", "added_tokens",
        "normalizer", "pre_tokenizer", "post_processor", "decoder", "model", NULL};
    if (!cJSON_IsObject(root)) return adapt_fail(err, ADAPT_ECORRUPT, "%s: not a JSON object", path);
    if (json_only_keys(root, keys, "(top level)", path, err)) return err->code;
    if (!json_is_null_or_absent(cJSON_GetObjectItemCaseSensitive(root, "truncation")))
        return REFUSE("truncation %s", "other than null");
    if (!json_is_null_or_absent(cJSON_GetObjectItemCaseSensitive(root, "padding")))
        return REFUSE("padding %s", "other than null");
    if (load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, err) ||
        load_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path, err) ||
        load_post_and_decoder(root, path, err))
        return err->code;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (load_model(t, model, path, err) || parse_added(t, added, path, err) ||
        alloc_ids(t, path, err) ||
        fill_vocab(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path, err) ||
        load_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), path, err) ||
        store_added(t, added, t->n_model, path, err))
        return err->code;
    if (build_added_set(t, &t->raw_set, false) || build_added_set(t, &t->norm_set, true))
        return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path);
    return ADAPT_OK;
}

/* bos_token / eos_token / pad_token of tokenizer_config.json: null, a string, or an AddedToken
 * object with "content". */
static int config_token(tok_tokenizer *t, const cJSON *cfg, const char *field, int32_t *id,
                        const char *path, adapt_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, field);
    *id = -1;
    if (json_is_null_or_absent(v)) return ADAPT_OK;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: %s: not a string or token object", path, field);
    *id = tok_token_id(t, v->valuestring);
    if (*id < 0)
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: %s '%s' is not a token of tokenizer.json",
                          path, field, v->valuestring);
    return ADAPT_OK;
}

static int load_config(tok_tokenizer *t, const char *path, adapt_error *err)
{
    char *data;
    size_t len;
    if (read_file(path, &data, &len, err)) return err->code;
    cJSON *cfg = cJSON_ParseWithLength(data, len);
    free(data);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return adapt_fail(err, ADAPT_ECORRUPT, "%s: not a JSON object", path);
    }
    int rc = config_token(t, cfg, "bos_token", &t->bos_id, path, err);
    if (!rc) rc = config_token(t, cfg, "eos_token", &t->eos_id, path, err);
    if (!rc) rc = config_token(t, cfg, "pad_token", &t->pad_id, path, err);
    cJSON_Delete(cfg);
    return rc;
}

int tok_load_files(tok_tokenizer **out, const char *json_path, const char *config_path,
                   adapt_error *err)
{
    *out = NULL;
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", json_path);
    t->bos_id = t->eos_id = t->pad_id = -1;
    char *data;
    size_t len;
    int rc = read_file(json_path, &data, &len, err);
    if (rc) { free(t); return rc; }
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    if (!root) rc = adapt_fail(err, ADAPT_ECORRUPT, "%s: not valid JSON", json_path);
    else rc = load_tokenizer_json(t, root, json_path, err);
    cJSON_Delete(root);
    if (!rc && config_path) rc = load_config(t, config_path, err);
    if (rc) { tok_free(t); return rc; }
    *out = t;
    return ADAPT_OK;
}

int tok_load(tok_tokenizer **out, const char *dir, adapt_error *err)
{
    char json_path[4096], config_path[4096];
    snprintf(json_path, sizeof json_path, "%s/tokenizer.json", dir);
    snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", dir);
    struct stat st;
    bool have_config = stat(config_path, &st) == 0;
    return tok_load_files(out, json_path, have_config ? config_path : NULL, err);
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    free(t->arena);
    free(t->tok_off);
    free(t->tok_len);
    free(t->is_special);
    free(t->vocab_slots);
    free(t->merge_keys);
    free(t->merge_rank);
    free(t->merge_new);
    free(t->added);
    free(t->raw_set.order);
    free(t->norm_set.order);
    pcre2_code_free(t->split_re);
    if (t->nfc_filtered) unorm2_close(t->nfc_filtered);
    if (t->nfc_age) uset_close(t->nfc_age);
    free(t);
}

int32_t tok_token_id(const tok_tokenizer *t, const char *content)
{
    size_t n = strlen(content);
    for (size_t k = 0; k < t->n_added; k++) {
        /* compare with the spelling given in tokenizer.json, i.e. the decode bytes */
        const tok_added *a = &t->added[k];
        if (t->tok_len[a->id] == n && !memcmp(t->arena + t->tok_off[a->id], content, n)) return a->id;
        if (a->len == n && !memcmp(t->arena + a->off, content, n)) return a->id;
    }
    return vocab_find(t, (const uint8_t *)content, n);
}

int     tok_is_special(const tok_tokenizer *t, int32_t id) { return id >= 0 && (size_t)id < t->n_ids && t->is_special[id]; }
size_t  tok_vocab_size(const tok_tokenizer *t) { return t->n_ids; }
int32_t tok_bos_id(const tok_tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const tok_tokenizer *t) { return t->eos_id; }
int32_t tok_pad_id(const tok_tokenizer *t) { return t->pad_id; }

/* ---- the encoder ---------------------------------------------------------------------------- */

/* Word cache: words seen before and their ids, so frequent words skip BPE. Flushed whole when
 * full; bounded so a long run never grows memory. */
#define CACHE_SLOTS     (1u << 16)
#define CACHE_MAX_WORD  64
#define CACHE_ARENA     (1u << 20)

typedef struct cache_slot {
    uint64_t hash;
    uint32_t key_off;       /* in key arena */
    uint32_t ids_off;       /* in ids arena */
    uint16_t key_len;       /* 0: empty */
    uint16_t n_ids;
} cache_slot;

typedef struct merge_item { uint32_t rank, pos; int32_t new_id; } merge_item;

typedef struct tok_span { uint32_t start, end; int32_t added; } tok_span;  /* added < 0: text */

typedef struct span_list { tok_span *v; size_t n, cap; } span_list;

struct tok_encoder {
    const tok_tokenizer *tok;
    pcre2_match_data    *md;
    pcre2_jit_stack     *jit_stack;
    pcre2_match_context *mctx;

    cache_slot *slots;
    size_t      n_cached;
    uint8_t    *cache_keys;
    int32_t    *cache_ids;
    size_t      keys_len, ids_len;

    /* BPE scratch, sized to the longest word seen */
    size_t      sym_cap;
    int32_t    *sym_id;
    int32_t    *sym_prev, *sym_next;
    uint32_t   *sym_rank;
    merge_item *heap;
    int32_t    *word_ids;

    /* normalization scratch */
    tok_bytes   norm;
    UChar      *u1, *u2;
    size_t      ucap;

    span_list   raw_spans;    /* the text cut by raw added tokens */
    span_list   norm_spans;   /* one normalized piece cut by normalized added tokens */
};

int tok_encoder_new(tok_encoder **out, const tok_tokenizer *tok, adapt_error *err)
{
    tok_encoder *e = calloc(1, sizeof *e);
    *out = NULL;
    if (!e) return adapt_fail(err, ADAPT_ENOMEM, "tokenizer encoder: out of memory");
    e->tok = tok;
    e->md = pcre2_match_data_create_from_pattern(tok->split_re, NULL);
    e->mctx = pcre2_match_context_create(NULL);
    /* The JIT's default 32 KiB stack can run out on long runs of one character class. */
    e->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    e->slots = calloc(CACHE_SLOTS, sizeof *e->slots);
    e->cache_keys = malloc(CACHE_ARENA);
    e->cache_ids = malloc(CACHE_ARENA * sizeof *e->cache_ids);
    if (!e->md || !e->mctx || !e->jit_stack || !e->slots || !e->cache_keys || !e->cache_ids) {
        tok_encoder_free(e);
        return adapt_fail(err, ADAPT_ENOMEM, "tokenizer encoder: out of memory");
    }
    pcre2_jit_stack_assign(e->mctx, NULL, e->jit_stack);
    *out = e;
    return ADAPT_OK;
}

void tok_encoder_free(tok_encoder *e)
{
    if (!e) return;
    pcre2_match_data_free(e->md);
    pcre2_match_context_free(e->mctx);
    pcre2_jit_stack_free(e->jit_stack);
    free(e->slots);
    free(e->cache_keys);
    free(e->cache_ids);
    free(e->sym_id);
    free(e->sym_prev);
    free(e->sym_next);
    free(e->sym_rank);
    free(e->heap);
    free(e->word_ids);
    tok_bytes_free(&e->norm);
    free(e->u1);
    free(e->u2);
    free(e->raw_spans.v);
    free(e->norm_spans.v);
    free(e);
}

static int scratch_reserve(tok_encoder *e, size_t n)
{
    if (n <= e->sym_cap) return ADAPT_OK;
    size_t cap = pow2_at_least(n);
    int32_t *a = realloc(e->sym_id, cap * sizeof *a);       if (!a) return ADAPT_ENOMEM; e->sym_id = a;
    a = realloc(e->sym_prev, cap * sizeof *a);              if (!a) return ADAPT_ENOMEM; e->sym_prev = a;
    a = realloc(e->sym_next, cap * sizeof *a);              if (!a) return ADAPT_ENOMEM; e->sym_next = a;
    a = realloc(e->word_ids, cap * sizeof *a);              if (!a) return ADAPT_ENOMEM; e->word_ids = a;
    uint32_t *r = realloc(e->sym_rank, cap * sizeof *r);    if (!r) return ADAPT_ENOMEM; e->sym_rank = r;
    /* each merge pushes at most two pairs, on top of the n - 1 initial ones */
    merge_item *h = realloc(e->heap, 3 * cap * sizeof *h);  if (!h) return ADAPT_ENOMEM; e->heap = h;
    e->sym_cap = cap;
    return ADAPT_OK;
}

/* ---- BPE ------------------------------------------------------------------------------------ */

/* Short words: the rank of each adjacent pair in an array; each round merges the leftmost pair
 * of lowest rank, which is the order tokenizers' heap gives. */
static size_t bpe_short(tok_encoder *e, const uint8_t *w, size_t n)
{
    const tok_tokenizer *t = e->tok;
    int32_t *id = e->sym_id, nid = -1;
    uint32_t *rank = e->sym_rank;
    int32_t *merged = e->sym_prev;   /* the new id of pair i, alongside its rank */
    for (size_t i = 0; i < n; i++) id[i] = t->byte_id[w[i]];
    for (size_t i = 0; i + 1 < n; i++) { rank[i] = merge_find(t, id[i], id[i + 1], &nid); merged[i] = nid; }
    size_t cnt = n;
    while (cnt > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < cnt; i++) if (rank[i] < rank[best]) best = i;
        if (rank[best] == UINT32_MAX) break;
        id[best] = merged[best];
        cnt--;
        memmove(id + best + 1, id + best + 2, (cnt - best - 1) * sizeof *id);
        if (best + 1 < cnt) {
            memmove(rank + best + 1, rank + best + 2, (cnt - best - 2) * sizeof *rank);
            memmove(merged + best + 1, merged + best + 2, (cnt - best - 2) * sizeof *merged);
        }
        if (best + 1 < cnt) { rank[best] = merge_find(t, id[best], id[best + 1], &nid); merged[best] = nid; }
        if (best > 0) { rank[best - 1] = merge_find(t, id[best - 1], id[best], &nid); merged[best - 1] = nid; }
    }
    memcpy(e->word_ids, id, cnt * sizeof *id);
    return cnt;
}

static bool heap_less(const merge_item *a, const merge_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge_item *h, size_t *n, merge_item x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static merge_item heap_pop(merge_item *h, size_t *n)
{
    merge_item top = h[0], x = h[--(*n)];
    if (*n == 0) return top;
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

static void heap_push_pair(tok_encoder *e, size_t *hn, int32_t left)
{
    int32_t nid = -1;
    uint32_t r = merge_find(e->tok, e->sym_id[left], e->sym_id[e->sym_next[left]], &nid);
    if (r != UINT32_MAX) heap_push(e->heap, hn, (merge_item){r, (uint32_t)left, nid});
}

/* Long words (long runs of spaces, digits, one script): a linked list of symbols and a heap of
 * candidate merges ordered by (rank, position), O(n log n); stale entries are skipped on pop. */
static size_t bpe_long(tok_encoder *e, const uint8_t *w, size_t n)
{
    const tok_tokenizer *t = e->tok;
    int32_t *id = e->sym_id, *prev = e->sym_prev, *next = e->sym_next;
    for (size_t i = 0; i < n; i++) {
        id[i] = t->byte_id[w[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) heap_push_pair(e, &hn, (int32_t)i);
    while (hn > 0) {
        merge_item m = heap_pop(e->heap, &hn);
        int32_t l = (int32_t)m.pos, r = next[l];
        if (id[l] < 0 || r < 0) continue;
        int32_t nid = -1;
        if (merge_find(t, id[l], id[r], &nid) != m.rank || nid != m.new_id) continue;
        id[l] = nid;
        id[r] = -1;                       /* r is merged away */
        next[l] = next[r];
        if (next[r] >= 0) prev[next[r]] = l;
        if (prev[l] >= 0) heap_push_pair(e, &hn, prev[l]);
        if (next[l] >= 0) heap_push_pair(e, &hn, l);
    }
    size_t cnt = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) e->word_ids[cnt++] = id[i];
    return cnt;
}

/* The ids of one pre-tokenized word, left in e->word_ids (or pointed to in the cache). */
static int bpe_word(tok_encoder *e, const uint8_t *w, size_t n, const int32_t **ids, size_t *cnt)
{
    const tok_tokenizer *t = e->tok;
    uint64_t h = 0;
    cache_slot *slot = NULL;
    if (n <= CACHE_MAX_WORD) {
        h = hash_bytes(w, n);
        size_t i = h & (CACHE_SLOTS - 1);
        for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
            slot = &e->slots[i];
            if (!slot->key_len) break;
            if (slot->hash == h && slot->key_len == n && !memcmp(e->cache_keys + slot->key_off, w, n)) {
                *ids = e->cache_ids + slot->ids_off;
                *cnt = slot->n_ids;
                return ADAPT_OK;
            }
        }
    }
    if (scratch_reserve(e, n)) return ADAPT_ENOMEM;
    int32_t whole = t->ignore_merges ? vocab_find(t, w, n) : -1;
    if (whole >= 0) { e->word_ids[0] = whole; *cnt = 1; }
    else *cnt = n <= 48 ? bpe_short(e, w, n) : bpe_long(e, w, n);
    *ids = e->word_ids;
    if (!slot) return ADAPT_OK;
    if (e->n_cached >= CACHE_SLOTS / 2 || e->keys_len + n > CACHE_ARENA || e->ids_len + *cnt > CACHE_ARENA) {
        memset(e->slots, 0, CACHE_SLOTS * sizeof *e->slots);
        e->n_cached = e->keys_len = e->ids_len = 0;
        size_t i = h & (CACHE_SLOTS - 1);
        slot = &e->slots[i];
    }
    memcpy(e->cache_keys + e->keys_len, w, n);
    memcpy(e->cache_ids + e->ids_len, e->word_ids, *cnt * sizeof(int32_t));
    *slot = (cache_slot){h, (uint32_t)e->keys_len, (uint32_t)e->ids_len, (uint16_t)n, (uint16_t)*cnt};
    e->keys_len += n;
    e->ids_len += *cnt;
    e->n_cached++;
    return ADAPT_OK;
}

/* ---- NFC ------------------------------------------------------------------------------------ */

/* NFC of UTF-8 s into out, through ICU's UTF-16 API. u1/u2 are reused scratch. */
static int nfc_utf8(const UNormalizer2 *norm, const uint8_t *s, size_t n, tok_bytes *out,
                    UChar **u1, UChar **u2, size_t *ucap)
{
    if (n > INT32_MAX / 4) return ADAPT_ERANGE;
    size_t need = 3 * n + 16;   /* NFC of UTF-16 grows by at most 3x */
    if (need > *ucap) {
        UChar *a = realloc(*u1, need * sizeof *a), *b;
        if (!a) return ADAPT_ENOMEM;
        *u1 = a;
        if (!(b = realloc(*u2, need * sizeof *b))) return ADAPT_ENOMEM;
        *u2 = b;
        *ucap = need;
    }
    UErrorCode st = U_ZERO_ERROR;
    int32_t l1;
    u_strFromUTF8(*u1, (int32_t)*ucap, &l1, (const char *)s, (int32_t)n, &st);
    if (U_FAILURE(st)) return ADAPT_EINVAL;
    int32_t l2 = unorm2_normalize(norm, *u1, l1, *u2, (int32_t)*ucap, &st);
    if (U_FAILURE(st)) return ADAPT_EINVAL;
    if (tok_bytes_reserve(out, (size_t)l2 * 3 + 1)) return ADAPT_ENOMEM;
    int32_t l3;
    u_strToUTF8(out->data + out->len, (int32_t)(out->cap - out->len), &l3, *u2, l2, &st);
    if (U_FAILURE(st)) return ADAPT_EINVAL;
    out->len += (size_t)l3;
    return ADAPT_OK;
}

/* Characters below U+0300 are NFC-stable and never compose with what follows them; a text
 * without a lead byte of U+0300 or above is its own NFC, which spares most ASCII and Latin text
 * the round trip through UTF-16. */
static bool nfc_trivial(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) if (s[i] >= 0xCC) return false;
    return true;
}

/* ---- splitting on added tokens -------------------------------------------------------------- */

static bool cp_is_whitespace(UChar32 c) { return u_isUWhiteSpace(c); }

/* A "word" character as tokenizers decides single_word: the regex crate's Unicode \w, i.e.
 * Alphabetic, marks, decimal digits, connector punctuation and the joiners. */
static bool cp_is_word(UChar32 c)
{
    if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL))
        return true;
    int8_t ty = u_charType(c);
    return ty == U_NON_SPACING_MARK || ty == U_COMBINING_SPACING_MARK || ty == U_ENCLOSING_MARK ||
           ty == U_DECIMAL_DIGIT_NUMBER || ty == U_CONNECTOR_PUNCTUATION;
}

static bool ends_with_word(const uint8_t *s, size_t n)
{
    if (n == 0) return false;
    int32_t i = (int32_t)n;
    UChar32 c;
    U8_PREV(s, 0, i, c);
    return c >= 0 && cp_is_word(c);
}

static bool starts_with_word(const uint8_t *s, size_t n)
{
    if (n == 0) return false;
    int32_t i = 0;
    UChar32 c;
    U8_NEXT(s, i, (int32_t)n, c);
    return c >= 0 && cp_is_word(c);
}

static int spans_push(span_list *l, uint32_t start, uint32_t end, int32_t added)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        tok_span *v = realloc(l->v, cap * sizeof *v);
        if (!v) return ADAPT_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (tok_span){start, end, added};
    return ADAPT_OK;
}

/* Leftmost-longest match of set in s[from..n), as aho-corasick's LeftmostLongest finds it. */
static bool added_find(const tok_tokenizer *t, const added_set *set, const uint8_t *s, size_t n,
                       size_t from, size_t *at, uint32_t *which)
{
    for (size_t i = from; i < n; i++) {
        uint32_t b = s[i], lo = set->start[b], hi = set->start[b + 1];
        for (uint32_t k = lo; k < hi; k++) {
            const tok_added *a = &t->added[set->order[k]];
            if (a->len <= n - i && !memcmp(t->arena + a->off, s + i, a->len)) {
                *at = i;
                *which = set->order[k];
                return true;
            }
        }
    }
    return false;
}

/* Cuts s[0..n) into text and added-token spans (into l, emptied first), with the single_word /
 * lstrip / rstrip rules of tokenizers' AddedVocabulary::find_matches. */
static int added_split(const tok_tokenizer *t, const added_set *set, const uint8_t *s, size_t n,
                       span_list *l)
{
    l->n = 0;
    size_t start_offset = 0, from = 0, at;
    uint32_t k;
    while (set->n && from < n && added_find(t, set, s, n, from, &at, &k)) {
        const tok_added *a = &t->added[k];
        size_t start = at, stop = at + a->len;
        from = stop;     /* the search goes on after the match even when the match is dropped */
        if (a->single_word && ((start > 0 && ends_with_word(s, start)) ||
                               (stop < n && starts_with_word(s + stop, n - stop))))
            continue;
        if (a->lstrip) {
            size_t ns_ = start;
            while (ns_ > 0) {
                int32_t i = (int32_t)ns_;
                UChar32 c;
                U8_PREV(s, 0, i, c);
                if (c < 0 || !cp_is_whitespace(c)) break;
                ns_ = (size_t)i;
            }
            start = ns_ > start_offset ? ns_ : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int32_t i = (int32_t)stop;
                UChar32 c;
                U8_NEXT(s, i, (int32_t)n, c);
                if (c < 0 || !cp_is_whitespace(c)) break;
                stop = (size_t)i;
            }
        }
        if (start_offset < start && spans_push(l, (uint32_t)start_offset, (uint32_t)start, -1))
            return ADAPT_ENOMEM;
        if (spans_push(l, (uint32_t)start, (uint32_t)stop, (int32_t)k)) return ADAPT_ENOMEM;
        start_offset = stop;
    }
    if (start_offset < n && spans_push(l, (uint32_t)start_offset, (uint32_t)n, -1))
        return ADAPT_ENOMEM;
    return ADAPT_OK;
}

/* ---- encoding ------------------------------------------------------------------------------- */

/* Where offsets of a normalized piece land in the original text: exact in the common prefix and
 * suffix of the two, the end of the rewritten run in between. */
typedef struct offset_map {
    size_t orig_start, orig_len, norm_len, prefix, suffix;
} offset_map;

static uint32_t offset_map_end(const offset_map *m, size_t e)
{
    size_t o;
    if (e <= m->prefix) o = e;
    else if (e >= m->norm_len - m->suffix) o = m->orig_len - (m->norm_len - e);
    else o = m->orig_len - m->suffix;
    return (uint32_t)(m->orig_start + o);
}

/* Pre-tokenizes s[0..n) (normalized text at normalized offset base) and appends the ids. */
static int encode_words(tok_encoder *e, const uint8_t *s, size_t base, size_t n,
                        const offset_map *m, tok_ids *out)
{
    const tok_tokenizer *t = e->tok;
    size_t pos = 0, search = 0;
    while (pos < n) {
        size_t ms = n, me = n;
        if (search < n) {
            int rc = pcre2_match(t->split_re, s, n, search, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
            if (rc >= 0) {
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
                ms = ov[0];
                me = ov[1];
            } else if (rc != PCRE2_ERROR_NOMATCH) {
                return ADAPT_EINVAL;
            }
        }
        /* the gap before a match is a word of its own (Isolated behavior), then the match */
        size_t cut[2][2] = {{pos, ms}, {ms, me}};
        for (int k = 0; k < 2; k++) {
            size_t ws = cut[k][0], wl = cut[k][1] - ws, at = base + ws;
            if (wl == 0) continue;
            const int32_t *ids;
            size_t cnt;
            if (bpe_word(e, s + ws, wl, &ids, &cnt)) return ADAPT_ENOMEM;
            for (size_t i = 0; i < cnt; i++) {
                at += t->tok_len[ids[i]];
                if (tok_ids_push(out, ids[i], offset_map_end(m, at))) return ADAPT_ENOMEM;
            }
        }
        if (me == ms) {   /* an empty match: step one character so the search moves on */
            bool ok;
            search = ms < n ? ms + utf8_seq(s + ms, n - ms, &ok) : n + 1;
        } else {
            search = me;
        }
        pos = me;
    }
    return ADAPT_OK;
}

/* One text span between raw added tokens: normalize, split on normalized added tokens, encode. */
static int encode_piece(tok_encoder *e, const uint8_t *s, size_t n, size_t orig_start, tok_ids *out)
{
    const tok_tokenizer *t = e->tok;
    const uint8_t *p = s;
    size_t pn = n;
    offset_map m = {orig_start, n, n, n, 0};
    if (t->nfc && !nfc_trivial(s, n)) {
        e->norm.len = 0;
        if (nfc_utf8(t->nfc_norm, s, n, &e->norm, &e->u1, &e->u2, &e->ucap)) return ADAPT_EINVAL;
        p = (const uint8_t *)e->norm.data;
        pn = e->norm.len;
        size_t lim = pn < n ? pn : n, pre = 0, suf = 0;
        while (pre < lim && p[pre] == s[pre]) pre++;
        while (suf < lim - pre && p[pn - 1 - suf] == s[n - 1 - suf]) suf++;
        m = (offset_map){orig_start, n, pn, pre, suf};
    }
    if (!t->norm_set.n) return encode_words(e, p, 0, pn, &m, out);
    if (added_split(t, &t->norm_set, p, pn, &e->norm_spans)) return ADAPT_ENOMEM;
    for (size_t i = 0; i < e->norm_spans.n; i++) {
        tok_span sp = e->norm_spans.v[i];
        int rc = sp.added >= 0 ? tok_ids_push(out, t->added[sp.added].id, offset_map_end(&m, sp.end))
                               : encode_words(e, p + sp.start, sp.start, sp.end - sp.start, &m, out);
        if (rc) return rc;
    }
    return ADAPT_OK;
}

int tok_encode(tok_encoder *e, const char *text, size_t len, tok_ids *out, adapt_error *err)
{
    const tok_tokenizer *t = e->tok;
    const uint8_t *s = (const uint8_t *)text;
    if (len > UINT32_MAX - 1)
        return adapt_fail(err, ADAPT_ERANGE, "tokenize: text of %zu bytes is over the 4 GiB limit", len);
    size_t bad = tok_utf8_check(s, len);
    if (bad < len)
        return adapt_fail(err, ADAPT_EINVAL, "tokenize: invalid UTF-8 at byte %zu", bad);
    if (added_split(t, &t->raw_set, s, len, &e->raw_spans))
        return adapt_fail(err, ADAPT_ENOMEM, "tokenize: out of memory");
    for (size_t i = 0; i < e->raw_spans.n; i++) {
        tok_span sp = e->raw_spans.v[i];
        int rc = sp.added >= 0 ? tok_ids_push(out, t->added[sp.added].id, sp.end)
                               : encode_piece(e, s + sp.start, sp.end - sp.start, sp.start, out);
        if (rc == ADAPT_ENOMEM) return adapt_fail(err, rc, "tokenize: out of memory");
        if (rc) return adapt_fail(err, rc, "tokenize: text at bytes %u..%u could not be normalized "
                                  "or split", sp.start, sp.end);
    }
    return ADAPT_OK;
}

/* ---- decoding ------------------------------------------------------------------------------- */

int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
               tok_bytes *out, adapt_error *err)
{
    tok_bytes raw = {0};
    tok_bytes *dst = flags & TOK_DECODE_LOSSY ? &raw : out;
    int rc = ADAPT_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || t->tok_len[id] == UINT32_MAX) {
            rc = adapt_fail(err, ADAPT_ERANGE, "detokenize: id %d at position %zu is not in the "
                            "vocabulary (size %zu)", id, i, t->n_ids);
            break;
        }
        if ((flags & TOK_DECODE_SKIP_SPECIAL) && t->is_special[id]) continue;
        if (tok_bytes_append(dst, t->arena + t->tok_off[id], t->tok_len[id]))
            rc = adapt_fail(err, ADAPT_ENOMEM, "detokenize: out of memory");
    }
    if (!rc && (flags & TOK_DECODE_LOSSY) && utf8_append_lossy(out, (const uint8_t *)raw.data, raw.len))
        rc = adapt_fail(err, ADAPT_ENOMEM, "detokenize: out of memory");
    if (!rc && !out->data) rc = tok_bytes_append(out, "", 0);
    tok_bytes_free(&raw);
    return rc;
}
