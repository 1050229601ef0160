/* image_decode: identify, probe and decode the encoded images a corpus stores (JPEG and PNG).
 *
 * The importer validates every image with it, `adaptctl data verify` re-checks them, and the data
 * loader decodes them to RGB8 before resizing. The one idea: a decoder treats every complaint of
 * libjpeg-turbo or libpng about the pixel data — warnings included, such as "premature end of
 * data" — as an error, so an image that validates here decodes to the pixels its file promises,
 * and a truncated download is caught at import instead of hours into training. An imgdec_decoder
 * holds the per-thread state (turbojpeg handle, scratch rows) so a worker that validates thousands
 * of images allocates once. */
#ifndef ADAPT_IMAGE_DECODE_H
#define ADAPT_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Images larger than this many pixels are refused rather than decoded: a 30-byte header may
 * claim 65535×65535 pixels, and a corpus image has no reason to exceed ~134 megapixels. */
#define IMGDEC_MAX_PIXELS ((uint64_t)1 << 27)

typedef enum imgdec_format {
    IMGDEC_FORMAT_UNKNOWN = 0,
    IMGDEC_FORMAT_JPEG,
    IMGDEC_FORMAT_PNG,
} imgdec_format;

typedef struct imgdec_info {
    imgdec_format format;
    uint32_t      width;
    uint32_t      height;
    uint32_t      channels;  /* components in the file: 1 gray, 3 colour, 4 with alpha / CMYK */
} imgdec_info;

typedef struct imgdec_decoder imgdec_decoder;

/* The format from the magic bytes alone (JPEG: FF D8 FF; PNG: the 8-byte signature). */
imgdec_format imgdec_identify(const uint8_t *bytes, size_t len);
/* "image/jpeg", "image/png", or NULL for IMGDEC_FORMAT_UNKNOWN. */
const char   *imgdec_media_type(imgdec_format format);

/* A decoder for one thread; NULL when out of memory. */
imgdec_decoder *imgdec_decoder_new(void);
void            imgdec_decoder_free(imgdec_decoder *d);

/* Reads the header only: format, width, height. Fails with ADAPT_ECORRUPT on an unknown format,
 * a damaged header or a size over IMGDEC_MAX_PIXELS. */
int imgdec_decoder_probe(imgdec_decoder *d, const uint8_t *bytes, size_t len, imgdec_info *info,
                         adapt_error *err);

/* Probes, and when full is non-zero also decodes every scanline (without keeping the pixels),
 * failing on any error or warning of the codec: truncation, a bad Huffman code, a PNG CRC
 * mismatch, missing image data. A YCbCr or gray JPEG is decoded into its own planes with the
 * fast integer IDCT (every block of every component, no upsampling or colour conversion); a PNG
 * row by row, every interlace pass, through IEND. info (may be NULL) receives the header's data. */
int imgdec_decoder_validate(imgdec_decoder *d, const uint8_t *bytes, size_t len, int full,
                            imgdec_info *info, adapt_error *err);

/* Decodes to packed RGB8, rows top to bottom, width*3 bytes each: gray is replicated, palettes
 * expanded, 16-bit samples reduced to 8, alpha dropped. *rgb is malloc'd; the caller frees it. */
int imgdec_decoder_rgb(imgdec_decoder *d, const uint8_t *bytes, size_t len, uint8_t **rgb,
                       imgdec_info *info, adapt_error *err);

/* One-shot forms with a temporary decoder, for callers that decode a handful of images. */
int imgdec_validate(const uint8_t *bytes, size_t len, int full, imgdec_info *info,
                    adapt_error *err);
int imgdec_decode_rgb(const uint8_t *bytes, size_t len, uint8_t **rgb, imgdec_info *info,
                      adapt_error *err);

#endif
