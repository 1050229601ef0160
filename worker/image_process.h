/* image_process: Qwen2-VL's image preprocessing, pixel for pixel what transformers'
 * Qwen2VLImageProcessor (PIL backend) feeds the vision tower.
 *
 * The one idea: match the reference exactly rather than approximately. smart_resize repeats
 * transformers' float arithmetic and Python's rounding; the resize is Pillow's separable bicubic
 * convolution with its own coefficient construction, 22-bit fixed point and 8-bit clipping after
 * each pass; rescale and normalize repeat numpy's float64-then-float32 steps. So the patches equal
 * the reference bit for bit, and a model trained here sees what it sees in transformers. */
#ifndef ADAPT_IMAGE_PROCESS_H
#define ADAPT_IMAGE_PROCESS_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct imgproc_params {
    int     patch_size;            /* 14 */
    int     merge_size;            /* 2: the resize factor is patch_size * merge_size = 28 */
    int     temporal_patch_size;   /* 2: a still image is repeated to this many frames */
    int64_t min_pixels;            /* 56 * 56 (size["shortest_edge"]) */
    int64_t max_pixels;            /* 28 * 28 * 1280 (size["longest_edge"]) */
    double  rescale_factor;        /* 1 / 255 */
    float   mean[3];               /* OpenAI CLIP mean */
    float   std[3];                /* OpenAI CLIP std */
} imgproc_params;

/* transformers' class defaults. (The published Qwen2-VL checkpoints' preprocessor_config.json
 * raises max_pixels to 28 * 28 * 16384; set it from there when a checkpoint says so.) */
void imgproc_params_default(imgproc_params *p);

/* Reads a checkpoint's preprocessor_config.json (PATH is the file or its directory) the way
 * transformers' Qwen2VLImageProcessor does: class defaults, then `size` (shortest_edge,
 * longest_edge), then `min_pixels` / `max_pixels` over it. A setting adaptd does not implement
 * (another resample filter, do_resize / do_rescale / do_normalize off, another processor type)
 * is refused with its field named. */
int imgproc_params_load(imgproc_params *p, const char *path, adapt_error *err);
int imgproc_params_parse(imgproc_params *p, const char *json, size_t len, const char *source,
                         adapt_error *err);

/* What one image becomes: sizes, image_grid_thw and the patch matrix shape. */
typedef struct imgproc_plan {
    int    width, height;                  /* the input */
    int    resized_width, resized_height;  /* multiples of patch_size * merge_size */
    int    grid_t, grid_h, grid_w;         /* image_grid_thw: (1, resized_h / 14, resized_w / 14) */
    size_t n_patches;                      /* grid_t * grid_h * grid_w rows */
    size_t patch_dim;                      /* 3 * temporal_patch_size * patch_size^2 columns */
} imgproc_plan;

/* transformers' smart_resize: both sides multiples of factor, pixel count within
 * [min_pixels, max_pixels], aspect ratio kept as well as that allows. Fails (naming the ratio)
 * when the long side exceeds 200 times the short side, or for an empty image. */
int imgproc_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                         int *out_height, int *out_width, adapt_error *err);

int imgproc_plan_image(const imgproc_params *p, int width, int height, imgproc_plan *plan,
                       adapt_error *err);

/* Pillow 13's Image.resize(size, Image.BICUBIC), byte for byte (its choice of which pass runs
 * first included), for 8-bit images of 1 to 4 interleaved channels
 * (rows tightly packed). src and dst must not overlap. */
int imgproc_resize_bicubic(const uint8_t *src, int src_width, int src_height, int channels,
                           uint8_t *dst, int dst_width, int dst_height, adapt_error *err);

/* Rescale, normalize, repeat in time and flatten an RGB8 image whose sides are already multiples
 * of patch_size * merge_size, into out[n_patches][patch_dim], rows in transformers' order: 2x2
 * merge blocks in raster order, the four patches of a block in raster order within it; columns
 * (channel, frame, row, column) of the patch. */
int imgproc_patchify(const imgproc_params *p, const uint8_t *rgb, int width, int height, float *out,
                     adapt_error *err);

/* The whole processor for one RGB8 image: plan, bicubic resize, patchify. out holds out_cap
 * floats; the plan (image_grid_thw included) is returned in *plan. */
int imgproc_process(const imgproc_params *p, const uint8_t *rgb, int width, int height, float *out,
                    size_t out_cap, imgproc_plan *plan, adapt_error *err);

#endif
