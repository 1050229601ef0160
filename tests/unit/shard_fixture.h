/* shard_fixture: what the shard and corpus tests share — deterministic samples whose image bytes
 * cover every byte value and whose text is multi-script Unicode, a field-by-field comparison,
 * and small file helpers for scratch directories under /tmp. */
#ifndef ADAPT_TEST_SHARD_FIXTURE_H
#define ADAPT_TEST_SHARD_FIXTURE_H

#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sample.pb-c.h"

/* A sample and the storage its pointers refer to, freed together by fixture_sample_free. */
typedef struct fixture_sample {
    Adaptd__Sample     s;
    Adaptd__Turn       turn_storage[2];
    Adaptd__Turn      *turns[2];
    Adaptd__SourceMeta source;
    char               id[48];
    char               caption[160];
    char               turn_text[2][96];
    uint8_t           *image;
} fixture_sample;

static uint64_t fixture_rng(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* Record i of a test corpus; image_len bytes of pseudo-random data (0 gives a text-only one). */
static void fixture_sample_make(fixture_sample *f, uint64_t i, size_t image_len)
{
    memset(f, 0, sizeof *f);
    adaptd__sample__init(&f->s);
    snprintf(f->id, sizeof f->id, "rec-%06llu", (unsigned long long)i);
    snprintf(f->caption, sizeof f->caption,
             "caf\u00e9 \u2615 \u65e5\u672c\u8a9e \U0001F41F \u0645\u0631\u062d\u0628\u0627 #%llu",
             (unsigned long long)i);
    f->s.id = f->id;
    f->s.caption = f->caption;
    f->s.media_type = (char *)(i % 2 ? "image/png" : "image/jpeg");
    f->s.width = (uint32_t)(100 + i);
    f->s.height = (uint32_t)(50 + 2 * i);
    f->image = malloc(image_len ? image_len : 1);
    uint64_t st = 0x9E3779B97F4A7C15ull ^ (i + 1);
    for (size_t k = 0; k < image_len; k++) f->image[k] = (uint8_t)fixture_rng(&st);
    if (image_len >= 2) {
        f->image[0] = 0x00;     /* both extremes, so no byte value is special-cased by accident */
        f->image[1] = 0xFF;
    }
    f->s.image.data = f->image;
    f->s.image.len = image_len;
    for (int t = 0; t < 2; t++) {
        adaptd__turn__init(&f->turn_storage[t]);
        f->turn_storage[t].role = t == 0 ? ADAPTD__TURN__ROLE__ROLE_USER
                                         : ADAPTD__TURN__ROLE__ROLE_ASSISTANT;
        snprintf(f->turn_text[t], sizeof f->turn_text[t],
                 t == 0 ? "<image>\nWhat is shown? \u00bfQu\u00e9? %llu" : "A fish \U0001F41F, %llu",
                 (unsigned long long)i);
        f->turn_storage[t].text = f->turn_text[t];
        f->turns[t] = &f->turn_storage[t];
    }
    f->s.n_turns = 2;
    f->s.turns = f->turns;
    adaptd__source_meta__init(&f->source);
    f->source.format = (char *)"llava_json";
    f->source.file = (char *)"/data/\u00fcber/annotations.json";
    f->source.record = i;
    f->source.image = (char *)"images/\u56fe\u7247.jpg";
    f->s.source = &f->source;
}

static void fixture_sample_free(fixture_sample *f)
{
    free(f->image);
    f->image = NULL;
}

static int fixture_str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* 1 when b holds exactly what a holds (byte-exact image, every string, every turn). */
static int fixture_sample_equal(const Adaptd__Sample *a, const Adaptd__Sample *b)
{
    if (!fixture_str_eq(a->id, b->id) || !fixture_str_eq(a->caption, b->caption) ||
        !fixture_str_eq(a->media_type, b->media_type) || a->width != b->width ||
        a->height != b->height || a->image.len != b->image.len ||
        (a->image.len && memcmp(a->image.data, b->image.data, a->image.len) != 0) ||
        a->n_turns != b->n_turns)
        return 0;
    for (size_t t = 0; t < a->n_turns; t++)
        if (a->turns[t]->role != b->turns[t]->role ||
            !fixture_str_eq(a->turns[t]->text, b->turns[t]->text))
            return 0;
    if (!a->source != !b->source) return 0;
    if (a->source && (!fixture_str_eq(a->source->file, b->source->file) ||
                      !fixture_str_eq(a->source->image, b->source->image) ||
                      a->source->record != b->source->record))
        return 0;
    return 1;
}

static int fixture_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static void fixture_rm_tree(const char *path)
{
    nftw(path, fixture_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int fixture_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Whole file into a malloc'd buffer; NULL on failure. */
static uint8_t *fixture_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Replaces path with len bytes. Unlinking first matters: ext4 flushes a file rewritten through
 * truncation when it is closed, which made the thousands of damaged copies crawl. */
static int fixture_write_file(const char *path, const uint8_t *buf, size_t len)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = len ? fwrite(buf, 1, len, f) : 0;
    return (fclose(f) == 0 && n == len) ? 0 : -1;
}

#endif
