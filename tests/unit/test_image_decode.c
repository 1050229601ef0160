/* image_decode: identification, header probes and strict decoding of JPEG and PNG images made in
 * the test with turbojpeg and libpng — every colour model, interlacing and progressive coding —
 * and the damage an importer must catch: truncation (JPEG and PNG), a flipped byte in PNG image
 * data, garbage, empty input, absurd sizes. */
#include "../check.h"
#include "image_decode.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* A smooth gradient so that JPEG artefacts stay small and colours are checkable. */
static uint8_t *make_pixels(int w, int h, int channels)
{
    uint8_t *p = malloc((size_t)w * h * channels);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++)
                p[((size_t)y * w + x) * channels + c] =
                    (uint8_t)(c == 0 ? x * 255 / (w - 1) : c == 1 ? y * 255 / (h - 1) : 128);
    return p;
}

static uint8_t *make_jpeg(int w, int h, int gray, int progressive, size_t *len)
{
    tjhandle tj = tjInitCompress();
    uint8_t *pixels = make_pixels(w, h, gray ? 1 : 3);
    unsigned char *jpeg = NULL;
    unsigned long jlen = 0;
    int flags = progressive ? TJFLAG_PROGRESSIVE : 0;
    int rc = tjCompress2(tj, pixels, w, 0, h, gray ? TJPF_GRAY : TJPF_RGB, &jpeg, &jlen,
                         gray ? TJSAMP_GRAY : TJSAMP_420, 90, flags);
    CHECK(rc == 0);
    free(pixels);
    tjDestroy(tj);
    uint8_t *out = malloc(jlen);
    memcpy(out, jpeg, jlen);
    tjFree(jpeg);
    *len = jlen;
    return out;
}

static uint8_t *make_png(int w, int h, png_uint_32 format, size_t *len)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    uint8_t *pixels = make_pixels(w, h, (int)PNG_IMAGE_PIXEL_CHANNELS(format));
    size_t size = 0;
    CHECK(png_image_write_to_memory(&img, NULL, &size, 0, pixels, 0, NULL));
    uint8_t *out = malloc(size);
    CHECK(png_image_write_to_memory(&img, out, &size, 0, pixels, 0, NULL));
    free(pixels);
    *len = size;
    return out;
}

typedef struct mem_sink { uint8_t *p; size_t len, cap; } mem_sink;

static void sink_write(png_structp png, png_bytep data, size_t n)
{
    mem_sink *s = png_get_io_ptr(png);
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
}

static void sink_flush(png_structp png) { (void)png; }

/* png_image cannot interlace, so an Adam7 16-bit RGB PNG goes through the low-level writer. */
static uint8_t *make_png_interlaced16(int w, int h, size_t *len)
{
    mem_sink sink = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    uint16_t *row = malloc((size_t)w * 6);
    if (setjmp(png_jmpbuf(png))) {
        CHECK(!"libpng write failed");
        exit(1);
    }
    png_set_write_fn(png, &sink, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 16, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_ADAM7, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_set_swap(png);  /* rows below are host-order little-endian samples */
    int passes = png_set_interlace_handling(png);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                row[3 * x] = (uint16_t)(x * 65535 / (w - 1));
                row[3 * x + 1] = (uint16_t)(y * 65535 / (h - 1));
                row[3 * x + 2] = 0x8080;
            }
            png_write_row(png, (png_bytep)row);
        }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    *len = sink.len;
    return sink.p;
}

/* PNG's chunk CRC (ISO 3309, reflected 0xEDB88320), bit by bit: only a few bytes are summed. */
static uint32_t png_crc(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* Decoded gradient pixels agree with what was encoded, within JPEG's error. */
static int rgb_close(const uint8_t *rgb, int w, int h, int tolerance)
{
    int worst = 0;
    uint8_t *want = make_pixels(w, h, 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        int d = abs((int)rgb[i] - (int)want[i]);
        if (d > worst) worst = d;
    }
    free(want);
    return worst <= tolerance;
}

static void test_identify(void)
{
    const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    CHECK(imgdec_identify(jpg, sizeof jpg) == IMGDEC_FORMAT_JPEG);
    CHECK(imgdec_identify(png, sizeof png) == IMGDEC_FORMAT_PNG);
    CHECK(imgdec_identify(png, 7) == IMGDEC_FORMAT_UNKNOWN);
    CHECK(imgdec_identify((const uint8_t *)"GIF89a", 6) == IMGDEC_FORMAT_UNKNOWN);
    CHECK(imgdec_identify(NULL, 0) == IMGDEC_FORMAT_UNKNOWN);
    CHECK(!strcmp(imgdec_media_type(IMGDEC_FORMAT_JPEG), "image/jpeg"));
    CHECK(!strcmp(imgdec_media_type(IMGDEC_FORMAT_PNG), "image/png"));
    CHECK(imgdec_media_type(IMGDEC_FORMAT_UNKNOWN) == NULL);
}

/* Offset of the first byte after the first start-of-scan marker's segment. */
static size_t find_scan(const uint8_t *jpg, size_t len)
{
    for (size_t i = 2; i + 3 < len; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA) return i + 2 + ((size_t)jpg[i + 2] << 8 | jpg[i + 3]);
    return len;
}

/* Offset of the data of the first chunk of the given type. */
static size_t find_chunk(const uint8_t *png, size_t len, const char *type)
{
    for (size_t i = 8; i + 8 <= len;) {
        size_t n = (size_t)png[i] << 24 | (size_t)png[i + 1] << 16 | (size_t)png[i + 2] << 8 | png[i + 3];
        if (!memcmp(png + i + 4, type, 4)) return i + 8;
        i += 12 + n;
    }
    return len;
}

static void test_jpeg(int gray, int progressive)
{
    size_t len;
    uint8_t *jpg = make_jpeg(97, 61, gray, progressive, &len);
    imgdec_info info;
    adapt_error err = {0};
    CHECK(imgdec_validate(jpg, len, 0, &info, &err) == 0);
    CHECK(info.format == IMGDEC_FORMAT_JPEG && info.width == 97 && info.height == 61);
    CHECK(info.channels == (gray ? 1u : 3u));
    CHECK_MSG(imgdec_validate(jpg, len, 1, &info, &err) == 0, "%s", err.message);
    uint8_t *rgb = NULL;
    CHECK_MSG(imgdec_decode_rgb(jpg, len, &rgb, &info, &err) == 0, "%s", err.message);
    if (rgb && !gray) CHECK(rgb_close(rgb, 97, 61, 24));
    if (rgb && gray) CHECK(rgb[0] == rgb[1] && rgb[1] == rgb[2]);
    free(rgb);

    /* Cut at several points inside the entropy-coded data: the header still probes, but full
     * validation must fail — libjpeg alone would pad the missing rows with grey. */
    size_t scan = find_scan(jpg, len);
    CHECK(scan < len);
    for (size_t cut = scan + 4; cut < len - 2; cut += (len - scan) / 5 + 1) {
        adapt_error e2 = {0};
        CHECK(imgdec_validate(jpg, cut, 0, &info, &e2) == 0);
        CHECK_MSG(imgdec_validate(jpg, cut, 1, &info, &e2) == ADAPT_ECORRUPT,
                  "truncated at %zu of %zu validated", cut, len);
        CHECK_STR_CONTAINS(e2.message, "JPEG data");
        uint8_t *px = NULL;
        CHECK(imgdec_decode_rgb(jpg, cut, &px, &info, &e2) == ADAPT_ECORRUPT && px == NULL);
    }
    /* Without the EOI marker alone (the last two bytes). */
    CHECK(imgdec_validate(jpg, len - 2, 1, &info, &err) == ADAPT_ECORRUPT);
    /* A header cut short cannot even be probed. */
    CHECK(imgdec_validate(jpg, 40, 0, &info, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "JPEG header");
    free(jpg);
}

static void test_png_formats(void)
{
    const png_uint_32 formats[] = {PNG_FORMAT_RGB, PNG_FORMAT_RGBA, PNG_FORMAT_GRAY,
                                   PNG_FORMAT_GA};
    const uint32_t channels[] = {3, 4, 1, 2};
    for (size_t i = 0; i < 4; i++) {
        size_t len;
        uint8_t *png = make_png(50, 33, formats[i], &len);
        imgdec_info info;
        adapt_error err = {0};
        CHECK_MSG(imgdec_validate(png, len, 1, &info, &err) == 0, "%s", err.message);
        CHECK(info.format == IMGDEC_FORMAT_PNG && info.width == 50 && info.height == 33);
        CHECK(info.channels == channels[i]);
        uint8_t *rgb = NULL;
        CHECK_MSG(imgdec_decode_rgb(png, len, &rgb, &info, &err) == 0, "%s", err.message);
        if (rgb && channels[i] >= 3) CHECK(rgb_close(rgb, 50, 33, 0));
        if (rgb && channels[i] < 3) CHECK(rgb[3 * 49] == 255 && rgb[3 * 49 + 2] == 255);
        free(rgb);
        free(png);
    }
    size_t len;
    uint8_t *png = make_png_interlaced16(40, 30, &len);
    uint8_t *rgb = NULL;
    imgdec_info info;
    adapt_error err = {0};
    CHECK_MSG(imgdec_validate(png, len, 1, &info, &err) == 0, "%s", err.message);
    CHECK_MSG(imgdec_decode_rgb(png, len, &rgb, &info, &err) == 0, "%s", err.message);
    if (rgb) CHECK(rgb_close(rgb, 40, 30, 1));
    free(rgb);
    free(png);
}

static void test_png_damage(void)
{
    size_t len;
    uint8_t *png = make_png(64, 64, PNG_FORMAT_RGB, &len);
    imgdec_info info;
    adapt_error err = {0};

    /* A flipped byte inside IDAT breaks the chunk's CRC (a critical chunk: an error). */
    uint8_t *bad = malloc(len);
    memcpy(bad, png, len);
    size_t idat = find_chunk(png, len, "IDAT");
    CHECK(idat + 10 < len);
    bad[idat + 10] ^= 0x40;
    CHECK(imgdec_validate(bad, len, 0, &info, &err) == 0);  /* the header is intact */
    CHECK(imgdec_validate(bad, len, 1, &info, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "PNG data");

    /* Cut inside IDAT, and cut just before IEND. */
    CHECK(imgdec_validate(png, len / 2, 1, &info, &err) == ADAPT_ECORRUPT);
    CHECK(imgdec_validate(png, len - 6, 1, &info, &err) == ADAPT_ECORRUPT);
    CHECK(imgdec_validate(png, len - 6, 0, &info, &err) == 0);
    /* Cut inside IHDR. */
    CHECK(imgdec_validate(png, 20, 0, &info, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "PNG header");

    /* A header claiming 60000×60000 is refused before any allocation. */
    memcpy(bad, png, len);
    bad[16] = 0; bad[17] = 0; bad[18] = 0xEA; bad[19] = 0x60;
    bad[20] = 0; bad[21] = 0; bad[22] = 0xEA; bad[23] = 0x60;
    /* Fix IHDR's CRC so that the size, not the checksum, is what is rejected. */
    uint32_t crc = png_crc(bad + 12, 17);
    bad[29] = (uint8_t)(crc >> 24); bad[30] = (uint8_t)(crc >> 16);
    bad[31] = (uint8_t)(crc >> 8);  bad[32] = (uint8_t)crc;
    CHECK(imgdec_validate(bad, len, 0, &info, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "over the limit");
    free(bad);
    free(png);
}

static void test_garbage(void)
{
    imgdec_info info;
    adapt_error err = {0};
    CHECK(imgdec_validate((const uint8_t *)"", 0, 1, &info, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "empty");
    const uint8_t junk[] = "hello, this is not an image";
    CHECK(imgdec_validate(junk, sizeof junk, 0, &info, &err) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(err.message, "not a JPEG or PNG");
    const uint8_t soi_only[] = {0xFF, 0xD8, 0xFF};
    CHECK(imgdec_validate(soi_only, sizeof soi_only, 1, &info, &err) == ADAPT_ECORRUPT);

    /* One decoder reused across good and bad images keeps working. */
    imgdec_decoder *d = imgdec_decoder_new();
    size_t jl, pl;
    uint8_t *jpg = make_jpeg(32, 32, 0, 0, &jl), *png = make_png(16, 16, PNG_FORMAT_RGB, &pl);
    for (int i = 0; i < 3; i++) {
        CHECK(imgdec_decoder_validate(d, jpg, jl, 1, &info, &err) == 0);
        CHECK(imgdec_decoder_validate(d, jpg, jl / 2, 1, &info, &err) == ADAPT_ECORRUPT);
        CHECK(imgdec_decoder_validate(d, png, pl, 1, &info, &err) == 0);
        CHECK(imgdec_decoder_validate(d, png, pl - 20, 1, &info, &err) == ADAPT_ECORRUPT);
        CHECK(imgdec_decoder_probe(d, png, pl, &info, &err) == 0 && info.width == 16);
    }
    imgdec_decoder_free(d);
    free(jpg);
    free(png);
}

int main(void)
{
    test_identify();
    test_jpeg(0, 0);
    test_jpeg(1, 0);
    test_jpeg(0, 1);
    test_png_formats();
    test_png_damage();
    test_garbage();
    return check_report("image_decode");
}
