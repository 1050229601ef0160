/* image_decode: JPEG through turbojpeg, PNG through libpng, both strict; see image_decode.h.
 *
 * turbojpeg runs with TJFLAG_STOPONWARNING, so libjpeg's "premature end of data" (which it would
 * otherwise paper over with grey rows) fails the call. libpng reports errors by longjmp; the
 * handler copies its message into the cursor and jumps back to the one setjmp in png_run. PNG
 * warnings stay warnings: they concern ancillary chunks (colour profiles, text), never pixels. */
#include "image_decode.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

struct imgdec_decoder {
    tjhandle tj;
    uint8_t *scratch;      /* decode target of validation; its pixels are never read */
    size_t   scratch_cap;
};

/* What a decode call should do after reading the header. */
typedef enum imgdec_mode {
    IMGDEC_MODE_PROBE = 0,
    IMGDEC_MODE_VALIDATE,
    IMGDEC_MODE_RGB,
} imgdec_mode;

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

imgdec_format imgdec_identify(const uint8_t *bytes, size_t len)
{
    if (len >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        return IMGDEC_FORMAT_JPEG;
    if (len >= sizeof png_signature && !memcmp(bytes, png_signature, sizeof png_signature))
        return IMGDEC_FORMAT_PNG;
    return IMGDEC_FORMAT_UNKNOWN;
}

const char *imgdec_media_type(imgdec_format format)
{
    switch (format) {
    case IMGDEC_FORMAT_JPEG:    return "image/jpeg";
    case IMGDEC_FORMAT_PNG:     return "image/png";
    case IMGDEC_FORMAT_UNKNOWN: break;
    }
    return NULL;
}

imgdec_decoder *imgdec_decoder_new(void)
{
    imgdec_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->tj = tjInitDecompress();
    if (!d->tj) {
        free(d);
        return NULL;
    }
    return d;
}

void imgdec_decoder_free(imgdec_decoder *d)
{
    if (!d) return;
    tjDestroy(d->tj);
    free(d->scratch);
    free(d);
}

static uint8_t *decoder_scratch(imgdec_decoder *d, size_t need)
{
    if (need > d->scratch_cap) {
        uint8_t *p = realloc(d->scratch, need);
        if (!p) return NULL;
        d->scratch = p;
        d->scratch_cap = need;
    }
    return d->scratch;
}

static int check_dimensions(const char *what, uint64_t w, uint64_t h, adapt_error *err)
{
    if (w == 0 || h == 0)
        return adapt_fail(err, ADAPT_ECORRUPT, "%s header: zero size %llux%llu", what,
                          (unsigned long long)w, (unsigned long long)h);
    if (w * h > IMGDEC_MAX_PIXELS)
        return adapt_fail(err, ADAPT_ECORRUPT,
                          "%s header: %llux%llu is over the limit of %llu pixels", what,
                          (unsigned long long)w, (unsigned long long)h,
                          (unsigned long long)IMGDEC_MAX_PIXELS);
    return ADAPT_OK;
}

/* --- JPEG ------------------------------------------------------------------------------------ */

/* Adobe CMYK JPEGs store inverted ink values, so ink × key / 255 gives the colour. */
static void cmyk_to_rgb(const uint8_t *cmyk, uint8_t *rgb, size_t pixels)
{
    for (size_t i = 0; i < pixels; i++) {
        unsigned k = cmyk[4 * i + 3];
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = (uint8_t)((cmyk[4 * i + c] * k + 127) / 255);
    }
}

/* turbojpeg 2.1 leaves its decompressor mid-header when tjDecompressHeader3 fails, and the next
 * call on that handle then reports a 0x0 image; a fresh handle after any failure avoids it. */
static int jpeg_fail(imgdec_decoder *d, int code)
{
    tjhandle fresh = tjInitDecompress();
    if (fresh) {
        tjDestroy(d->tj);
        d->tj = fresh;
    }
    return code;
}

/* Validation decodes every block of every component — all entropy-coded data, every inverse DCT
 * — into the file's own planes (YCbCr or gray) without upsampling or colour conversion, which
 * only rearrange pixels that are already known to be sound; libjpeg's fast integer IDCT is
 * enough for that. Other colour models (RGB-coded, CMYK) decode to pixels in their own model. */
static int jpeg_validate_pixels(imgdec_decoder *d, const uint8_t *bytes, size_t len, int w, int h,
                                int subsamp, int colorspace, adapt_error *err)
{
    int flags = TJFLAG_STOPONWARNING | TJFLAG_FASTDCT;
    int planar = (colorspace == TJCS_YCbCr || colorspace == TJCS_GRAY) && subsamp >= 0;
    int pf = colorspace == TJCS_GRAY ? TJPF_GRAY
             : colorspace == TJCS_CMYK || colorspace == TJCS_YCCK ? TJPF_CMYK : TJPF_RGB;
    size_t need = planar ? tjBufSizeYUV2(w, 1, h, subsamp)
                         : (size_t)w * (size_t)h * (size_t)tjPixelSize[pf];
    uint8_t *out = need != (size_t)-1 ? decoder_scratch(d, need) : NULL;
    if (!out) return adapt_fail(err, ADAPT_ENOMEM, "JPEG %dx%d: out of memory", w, h);
    int rc = planar ? tjDecompressToYUV2(d->tj, bytes, (unsigned long)len, out, w, 1, h, flags)
                    : tjDecompress2(d->tj, bytes, (unsigned long)len, out, w, 0, h, pf,
                                    flags | TJFLAG_FASTUPSAMPLE);
    if (rc) return adapt_fail(err, ADAPT_ECORRUPT, "JPEG data: %s", tjGetErrorStr2(d->tj));
    return ADAPT_OK;
}

static int jpeg_run(imgdec_decoder *d, const uint8_t *bytes, size_t len, imgdec_mode mode,
                    uint8_t **rgb, imgdec_info *info, adapt_error *err)
{
    int w = 0, h = 0, subsamp = 0, colorspace = 0;
    if (len > (unsigned long)-1 ||
        tjDecompressHeader3(d->tj, bytes, (unsigned long)len, &w, &h, &subsamp, &colorspace))
        return jpeg_fail(d, adapt_fail(err, ADAPT_ECORRUPT, "JPEG header: %s",
                                       tjGetErrorStr2(d->tj)));
    int rc = check_dimensions("JPEG", (uint64_t)w, (uint64_t)h, err);
    if (rc) return rc;
    int cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
    info->format = IMGDEC_FORMAT_JPEG;
    info->width = (uint32_t)w;
    info->height = (uint32_t)h;
    info->channels = colorspace == TJCS_GRAY ? 1 : cmyk ? 4 : 3;
    if (mode == IMGDEC_MODE_PROBE) return ADAPT_OK;

    if (mode == IMGDEC_MODE_VALIDATE) {
        rc = jpeg_validate_pixels(d, bytes, len, w, h, subsamp, colorspace, err);
        return rc ? jpeg_fail(d, rc) : ADAPT_OK;
    }
    /* The loader's RGB keeps libjpeg's accurate IDCT and fancy upsampling. */
    int pf = cmyk ? TJPF_CMYK : TJPF_RGB;
    size_t pixels = (size_t)w * (size_t)h;
    uint8_t *out = malloc(pixels * (size_t)tjPixelSize[pf]);
    if (!out) return adapt_fail(err, ADAPT_ENOMEM, "JPEG %dx%d: out of memory", w, h);
    if (tjDecompress2(d->tj, bytes, (unsigned long)len, out, w, 0, h, pf, TJFLAG_STOPONWARNING)) {
        rc = adapt_fail(err, ADAPT_ECORRUPT, "JPEG data: %s", tjGetErrorStr2(d->tj));
        free(out);
        return jpeg_fail(d, rc);
    }
    if (cmyk) {
        uint8_t *conv = malloc(pixels * 3);
        if (!conv) {
            free(out);
            return adapt_fail(err, ADAPT_ENOMEM, "JPEG %dx%d: out of memory", w, h);
        }
        cmyk_to_rgb(out, conv, pixels);
        free(out);
        out = conv;
    }
    *rgb = out;
    return ADAPT_OK;
}

/* --- PNG ------------------------------------------------------------------------------------- */

typedef struct png_cursor {
    const uint8_t *bytes;
    size_t         len;
    size_t         pos;
    char           message[256];  /* libpng's complaint, copied before its longjmp */
} png_cursor;

static void png_read_memory(png_structp png, png_bytep out, size_t n)
{
    png_cursor *cur = png_get_io_ptr(png);
    if (n > cur->len - cur->pos) {
        snprintf(cur->message, sizeof cur->message, "file ends at byte %zu, inside a chunk",
                 cur->len);
        png_longjmp(png, 1);
    }
    memcpy(out, cur->bytes + cur->pos, n);
    cur->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_cursor *cur = png_get_error_ptr(png);
    snprintf(cur->message, sizeof cur->message, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Sets the transforms that turn any PNG into 8-bit RGB. */
static void png_request_rgb(png_structp png, png_infop pinfo)
{
    int color = png_get_color_type(png, pinfo);
    png_set_expand(png);                           /* palette → RGB, gray < 8 bits, tRNS → alpha */
    png_set_strip_16(png);
    if (color & PNG_COLOR_MASK_ALPHA || png_get_valid(png, pinfo, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (!(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
}

/* Everything after png_read_info; runs under png_run's setjmp. Validation reads each row into one
 * scratch row (interlaced passes overwrite it); RGB reads into the caller's image. */
static void png_read_pixels(png_structp png, png_infop pinfo, imgdec_decoder *d, imgdec_mode mode,
                            uint8_t *volatile *image, png_cursor *cur)
{
    uint32_t w = png_get_image_width(png, pinfo), h = png_get_image_height(png, pinfo);
    if (mode == IMGDEC_MODE_RGB) png_request_rgb(png, pinfo);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);
    size_t rowbytes = png_get_rowbytes(png, pinfo);
    uint8_t *row = NULL;
    if (mode == IMGDEC_MODE_RGB) {
        if (rowbytes != (size_t)w * 3) {
            snprintf(cur->message, sizeof cur->message, "transforms gave %zu bytes per row, not %u",
                     rowbytes, w * 3);
            png_longjmp(png, 1);
        }
        *image = malloc((size_t)h * rowbytes);
        if (!*image) {
            snprintf(cur->message, sizeof cur->message, "out of memory for %ux%u", w, h);
            png_longjmp(png, 1);
        }
    } else {
        row = decoder_scratch(d, rowbytes);
        if (!row) {
            snprintf(cur->message, sizeof cur->message, "out of memory for a %zu-byte row",
                     rowbytes);
            png_longjmp(png, 1);
        }
    }
    for (int pass = 0; pass < passes; pass++)
        for (uint32_t y = 0; y < h; y++)
            png_read_row(png, row ? row : *image + (size_t)y * rowbytes, NULL);
    png_read_end(png, NULL);   /* reads to IEND: catches a file cut after the image data */
}

static int png_run(imgdec_decoder *d, const uint8_t *bytes, size_t len, imgdec_mode mode,
                   uint8_t **rgb, imgdec_info *info, adapt_error *err)
{
    png_cursor cur = {.bytes = bytes, .len = len};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &cur, png_on_error,
                                             png_on_warning);
    png_infop pinfo = png ? png_create_info_struct(png) : NULL;
    if (!pinfo) {
        png_destroy_read_struct(&png, NULL, NULL);
        return adapt_fail(err, ADAPT_ENOMEM, "PNG: out of memory");
    }
    uint8_t *volatile image = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(image);
        png_destroy_read_struct(&png, &pinfo, NULL);
        return adapt_fail(err, ADAPT_ECORRUPT, "PNG %s: %s",
                          info->width ? "data" : "header", cur.message);
    }
    png_set_read_fn(png, &cur, png_read_memory);
    png_read_info(png, pinfo);
    uint32_t w = png_get_image_width(png, pinfo), h = png_get_image_height(png, pinfo);
    int rc = check_dimensions("PNG", w, h, err);
    if (rc) {
        png_destroy_read_struct(&png, &pinfo, NULL);
        return rc;
    }
    int color = png_get_color_type(png, pinfo);
    info->format = IMGDEC_FORMAT_PNG;
    info->width = w;
    info->height = h;
    info->channels = (color & PNG_COLOR_MASK_COLOR ? 3u : 1u) +
                     (color & PNG_COLOR_MASK_ALPHA ? 1u : 0u);
    if (mode != IMGDEC_MODE_PROBE) png_read_pixels(png, pinfo, d, mode, &image, &cur);
    png_destroy_read_struct(&png, &pinfo, NULL);
    if (mode == IMGDEC_MODE_RGB) *rgb = image;
    return ADAPT_OK;
}

/* --- entry points ---------------------------------------------------------------------------- */

static int decoder_run(imgdec_decoder *d, const uint8_t *bytes, size_t len, imgdec_mode mode,
                       uint8_t **rgb, imgdec_info *info, adapt_error *err)
{
    imgdec_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if (!bytes || len == 0) return adapt_fail(err, ADAPT_ECORRUPT, "empty image file");
    switch (imgdec_identify(bytes, len)) {
    case IMGDEC_FORMAT_JPEG: return jpeg_run(d, bytes, len, mode, rgb, info, err);
    case IMGDEC_FORMAT_PNG:  return png_run(d, bytes, len, mode, rgb, info, err);
    case IMGDEC_FORMAT_UNKNOWN: break;
    }
    return adapt_fail(err, ADAPT_ECORRUPT,
                      "not a JPEG or PNG (first bytes %02x %02x %02x %02x)", bytes[0],
                      len > 1 ? bytes[1] : 0, len > 2 ? bytes[2] : 0, len > 3 ? bytes[3] : 0);
}

int imgdec_decoder_probe(imgdec_decoder *d, const uint8_t *bytes, size_t len, imgdec_info *info,
                         adapt_error *err)
{
    return decoder_run(d, bytes, len, IMGDEC_MODE_PROBE, NULL, info, err);
}

int imgdec_decoder_validate(imgdec_decoder *d, const uint8_t *bytes, size_t len, int full,
                            imgdec_info *info, adapt_error *err)
{
    return decoder_run(d, bytes, len, full ? IMGDEC_MODE_VALIDATE : IMGDEC_MODE_PROBE, NULL,
                       info, err);
}

int imgdec_decoder_rgb(imgdec_decoder *d, const uint8_t *bytes, size_t len, uint8_t **rgb,
                       imgdec_info *info, adapt_error *err)
{
    *rgb = NULL;
    return decoder_run(d, bytes, len, IMGDEC_MODE_RGB, rgb, info, err);
}

int imgdec_validate(const uint8_t *bytes, size_t len, int full, imgdec_info *info,
                    adapt_error *err)
{
    imgdec_decoder *d = imgdec_decoder_new();
    if (!d) return adapt_fail(err, ADAPT_ENOMEM, "image decoder: out of memory");
    int rc = imgdec_decoder_validate(d, bytes, len, full, info, err);
    imgdec_decoder_free(d);
    return rc;
}

int imgdec_decode_rgb(const uint8_t *bytes, size_t len, uint8_t **rgb, imgdec_info *info,
                      adapt_error *err)
{
    imgdec_decoder *d = imgdec_decoder_new();
    if (!d) return adapt_fail(err, ADAPT_ENOMEM, "image decoder: out of memory");
    int rc = imgdec_decoder_rgb(d, bytes, len, rgb, info, err);
    imgdec_decoder_free(d);
    return rc;
}
