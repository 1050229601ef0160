/* test_import_fixtures: what the importer tests build their inputs from — small real JPEG and
 * PNG images (turbojpeg, libpng), tar archives written header by header (ustar, GNU long names,
 * pax paths), temporary directories, whole-file reads. Header-only: each test binary includes it
 * once. The one idea: every fixture is made by the test itself, so a test reads as the story of
 * its input. */
#ifndef ADAPT_TEST_IMPORT_FIXTURES_H
#define ADAPT_TEST_IMPORT_FIXTURES_H

#include <ftw.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

/* A w×h gradient JPEG (4:2:0, quality 90). */
static inline uint8_t *fx_jpeg(int w, int h, size_t *len)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++) {
        px[3 * i] = (uint8_t)(i % w * 255 / w);
        px[3 * i + 1] = (uint8_t)(i / w * 255 / h);
        px[3 * i + 2] = 77;
    }
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long jl = 0;
    tjCompress2(tj, px, w, 0, h, TJPF_RGB, &jpg, &jl, TJSAMP_420, 90, 0);
    tjDestroy(tj);
    free(px);
    uint8_t *out = malloc(jl);
    memcpy(out, jpg, jl);
    tjFree(jpg);
    *len = jl;
    return out;
}

static inline uint8_t *fx_png(int w, int h, size_t *len)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = PNG_FORMAT_RGB;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(i * 7);
    size_t size = 0;
    png_image_write_to_memory(&img, NULL, &size, 0, px, 0, NULL);
    uint8_t *out = malloc(size);
    png_image_write_to_memory(&img, out, &size, 0, px, 0, NULL);
    free(px);
    *len = size;
    return out;
}

static inline void fx_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

static inline void fx_write_str(const char *path, const char *text)
{
    fx_write(path, text, strlen(text));
}

static inline uint8_t *fx_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static inline int fx_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static inline int fx_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static inline void fx_rm_tree(const char *path)
{
    nftw(path, fx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- tar ------------------------------------------------------------------------------------ */

typedef struct fx_tar { uint8_t *p; size_t len, cap; } fx_tar;

static inline void tar_append(fx_tar *t, const void *data, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = (t->len + n) * 2 + 4096;
        t->p = realloc(t->p, t->cap);
    }
    memcpy(t->p + t->len, data, n);
    t->len += n;
}

static inline void tar_pad(fx_tar *t)
{
    static const uint8_t zero[512];
    if (t->len % 512) tar_append(t, zero, 512 - t->len % 512);
}

/* One header block; name goes to the name field (truncated at 100) and prefix to prefix. */
static inline void tar_header(fx_tar *t, const char *name, const char *prefix, size_t size, char type)
{
    uint8_t h[512];
    memset(h, 0, sizeof h);
    strncpy((char *)h, name, 100);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011zo", size);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    if (prefix) strncpy((char *)h + 345, prefix, 155);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    tar_append(t, h, 512);
}

/* A regular file; names over 100 bytes go through a GNU 'L' long-name member first. */
static inline void fx_tar_file(fx_tar *t, const char *name, const void *data, size_t len)
{
    if (strlen(name) > 100) {
        tar_header(t, "././@LongLink", NULL, strlen(name) + 1, 'L');
        tar_append(t, name, strlen(name) + 1);
        tar_pad(t);
    }
    tar_header(t, name, NULL, len, '0');
    tar_append(t, data, len);
    tar_pad(t);
}

/* A regular file named through a pax extended header ('x', "path=" record). */
static inline void fx_tar_file_pax(fx_tar *t, const char *name, const void *data, size_t len)
{
    char rec[1024];
    size_t body = strlen(" path=\n") + strlen(name), n = body + 1;
    while (snprintf(rec, sizeof rec, "%zu", n) + body != n) n++;
    snprintf(rec, sizeof rec, "%zu path=%s\n", n, name);
    tar_header(t, "PaxHeader", NULL, strlen(rec), 'x');
    tar_append(t, rec, strlen(rec));
    tar_pad(t);
    tar_header(t, "short-placeholder", NULL, len, '0');
    tar_append(t, data, len);
    tar_pad(t);
}

static inline void fx_tar_dir(fx_tar *t, const char *name)
{
    tar_header(t, name, NULL, 0, '5');
}

static inline void fx_tar_end(fx_tar *t)
{
    static const uint8_t zero[1024];
    tar_append(t, zero, sizeof zero);
}

#endif
