/* image_process: smart_resize, Pillow-exact bicubic resize, and patch flattening; see
 * image_process.h.
 *
 * The resize follows Pillow's Resample.c (read for the facts, written anew here): per output
 * column a window of input columns centred on (x + 0.5) * scale, of half-width 2 * max(scale, 1);
 * weights from the a = -0.5 cubic, normalised to sum 1, then rounded to 22-bit fixed point; one
 * pass's result is clipped to 8 bits before the other pass reads it. Every
 * double expression below keeps Pillow's operand order, because the rounding of the fixed-point
 * weights, and so the last bit of a pixel, depends on it. */
#include "image_process.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Pillow is built without fused multiply-add; a compiler allowed to fuse `a * b + c` (GCC is by
 * default, given an -march with FMA) could round a weight differently and move a pixel by one. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Pillow's 8-bit weights: 32 bits minus 8 for the pixel minus 2 for overshoot of the filter. */
#define IMGPROC_PRECISION_BITS 22
/* A side above this is not an image adaptd will see; keeps every product inside 64 bits and
 * pixel counts exact in a double, as smart_resize's float arithmetic needs. */
#define IMGPROC_MAX_SIDE (1 << 20)

void imgproc_params_default(imgproc_params *p)
{
    p->patch_size = 14;
    p->merge_size = 2;
    p->temporal_patch_size = 2;
    p->min_pixels = 56 * 56;
    p->max_pixels = 28 * 28 * 1280;
    p->rescale_factor = 1.0 / 255.0;
    /* OPENAI_CLIP_MEAN / OPENAI_CLIP_STD of transformers' image_utils. */
    p->mean[0] = 0.48145466f, p->mean[1] = 0.4578275f, p->mean[2] = 0.40821073f;
    p->std[0] = 0.26862954f, p->std[1] = 0.26130258f, p->std[2] = 0.27577711f;
}

/* ---- preprocessor_config.json ---------------------------------------------------------------- */

/* A positive integer field, left as it is when absent or null. */
static int pp_int(const cJSON *root, const char *key, const char *field, int64_t *v, const char *src,
                  adapt_error *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) return ADAPT_OK;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < 1 ||
        j->valuedouble > 9007199254740992.0)
        return adapt_fail(err, ADAPT_EINVAL, "%s: field '%s' must be a positive integer", src, field);
    *v = (int64_t)j->valuedouble;
    return ADAPT_OK;
}

/* image_mean / image_std: three numbers, or one for every channel; cast to float32 as numpy does. */
static int pp_triple(const cJSON *root, const char *key, float out[3], const char *src, adapt_error *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) return ADAPT_OK;
    if (cJSON_IsNumber(j)) { out[0] = out[1] = out[2] = (float)j->valuedouble; return ADAPT_OK; }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 3)
        return adapt_fail(err, ADAPT_EINVAL, "%s: field '%s' must be a number or 3 numbers", src, key);
    for (int c = 0; c < 3; c++) {
        const cJSON *v = cJSON_GetArrayItem(j, c);
        if (!cJSON_IsNumber(v)) return adapt_fail(err, ADAPT_EINVAL, "%s: field '%s[%d]' is not a number", src, key, c);
        out[c] = (float)v->valuedouble;
    }
    return ADAPT_OK;
}

/* A switch that must stay on: adaptd always resizes, rescales and normalizes. */
static int pp_on(const cJSON *root, const char *key, const char *src, adapt_error *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j) || cJSON_IsTrue(j)) return ADAPT_OK;
    return adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: field '%s' is not true: adaptd's Qwen2-VL processor always "
                      "resizes, rescales and normalizes", src, key);
}

static int pp_read(imgproc_params *p, const cJSON *root, const char *src, adapt_error *err)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "image_processor_type");
    if (cJSON_IsString(type) && strncmp(type->valuestring, "Qwen2VLImageProcessor", 21) != 0)
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: field 'image_processor_type' = \"%s\" is not a "
                          "Qwen2VLImageProcessor", src, type->valuestring);
    int rc = pp_on(root, "do_resize", src, err);
    if (!rc) rc = pp_on(root, "do_rescale", src, err);
    if (!rc) rc = pp_on(root, "do_normalize", src, err);
    if (rc) return rc;
    const cJSON *resample = cJSON_GetObjectItemCaseSensitive(root, "resample");
    if (resample && !cJSON_IsNull(resample) && !(cJSON_IsNumber(resample) && resample->valuedouble == 3))
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "%s: field 'resample' is not 3 (bicubic), the only filter "
                          "adaptd implements", src);
    int64_t ps = p->patch_size, ms = p->merge_size, tp = p->temporal_patch_size;
    rc = pp_int(root, "patch_size", "patch_size", &ps, src, err);
    if (!rc) rc = pp_int(root, "merge_size", "merge_size", &ms, src, err);
    if (!rc) rc = pp_int(root, "temporal_patch_size", "temporal_patch_size", &tp, src, err);
    if (!rc && (ps > 1024 || ms > 64 || tp > 64))
        rc = adapt_fail(err, ADAPT_EINVAL, "%s: patch_size, merge_size or temporal_patch_size out of range", src);
    if (rc) return rc;
    p->patch_size = (int)ps, p->merge_size = (int)ms, p->temporal_patch_size = (int)tp;
    /* size first (both edges needed, as transformers' resize demands), then the top-level
     * min_pixels / max_pixels over it. */
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
    if (size && !cJSON_IsNull(size)) {
        if (!cJSON_IsObject(size) || !cJSON_GetObjectItemCaseSensitive(size, "shortest_edge") ||
            !cJSON_GetObjectItemCaseSensitive(size, "longest_edge"))
            return adapt_fail(err, ADAPT_EINVAL, "%s: field 'size' must hold 'shortest_edge' and 'longest_edge' "
                              "(transformers refuses it otherwise)", src);
        rc = pp_int(size, "shortest_edge", "size.shortest_edge", &p->min_pixels, src, err);
        if (!rc) rc = pp_int(size, "longest_edge", "size.longest_edge", &p->max_pixels, src, err);
    }
    if (!rc) rc = pp_int(root, "min_pixels", "min_pixels", &p->min_pixels, src, err);
    if (!rc) rc = pp_int(root, "max_pixels", "max_pixels", &p->max_pixels, src, err);
    if (!rc) rc = pp_triple(root, "image_mean", p->mean, src, err);
    if (!rc) rc = pp_triple(root, "image_std", p->std, src, err);
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "rescale_factor");
    if (!rc && rf && !cJSON_IsNull(rf)) {
        if (!cJSON_IsNumber(rf) || !(rf->valuedouble > 0))
            rc = adapt_fail(err, ADAPT_EINVAL, "%s: field 'rescale_factor' must be a positive number", src);
        else p->rescale_factor = rf->valuedouble;
    }
    for (int c = 0; c < 3 && !rc; c++)
        if (!(p->std[c] != 0.0f))
            rc = adapt_fail(err, ADAPT_EINVAL, "%s: field 'image_std[%d]' is zero", src, c);
    return rc;
}

int imgproc_params_parse(imgproc_params *p, const char *json, size_t len, const char *source,
                         adapt_error *err)
{
    imgproc_params_default(p);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    int rc = root && cJSON_IsObject(root)
                 ? pp_read(p, root, source, err)
                 : adapt_fail(err, ADAPT_EINVAL, "%s: not a JSON object (parse stops at byte %ld)", source,
                              end ? (long)(end - json) : 0L);
    cJSON_Delete(root);
    return rc;
}

int imgproc_params_load(imgproc_params *p, const char *path, adapt_error *err)
{
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(file, sizeof file, "%s/preprocessor_config.json", path);
    else
        snprintf(file, sizeof file, "%s", path);
    FILE *fp = fopen(file, "rb");
    if (!fp) return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO, "%s: cannot open: %s", file,
                               strerror(errno));
    static const size_t cap = 1 << 20;   /* a preprocessor config is a few hundred bytes */
    char *buf = malloc(cap);
    size_t n = buf ? fread(buf, 1, cap, fp) : 0;
    bool bad = ferror(fp) || n == cap;
    fclose(fp);
    int rc = !buf ? adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", file)
           : bad  ? adapt_fail(err, ADAPT_EIO, "%s: read error, or over 1 MiB", file)
                  : imgproc_params_parse(p, buf, n, file, err);
    free(buf);
    return rc;
}

/* ---- smart_resize ---------------------------------------------------------------------------- */

int imgproc_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                         int *out_height, int *out_width, adapt_error *err)
{
    if (height <= 0 || width <= 0 || height > IMGPROC_MAX_SIDE || width > IMGPROC_MAX_SIDE || factor <= 0)
        return adapt_fail(err, ADAPT_EINVAL, "image of %dx%d (factor %d): sides must be in 1..%d", width,
                          height, factor, IMGPROC_MAX_SIDE);
    double ratio = (double)(height > width ? height : width) / (double)(height < width ? height : width);
    if (ratio > 200)
        return adapt_fail(err, ADAPT_EINVAL, "image of %dx%d: absolute aspect ratio must be smaller than 200, "
                          "got %.17g", width, height, ratio);
    /* Python's round() is round-half-even; so is nearbyint in the default rounding mode. */
    int64_t h = (int64_t)nearbyint((double)height / factor) * factor;
    int64_t w = (int64_t)nearbyint((double)width / factor) * factor;
    double pixels = (double)((int64_t)height * width);   /* exact: below 2^41 */
    if (h * w > max_pixels) {
        double beta = sqrt(pixels / (double)max_pixels);
        h = (int64_t)floor((double)height / beta / factor) * factor;
        w = (int64_t)floor((double)width / beta / factor) * factor;
        if (h < factor) h = factor;
        if (w < factor) w = factor;
    } else if (h * w < min_pixels) {
        double beta = sqrt((double)min_pixels / pixels);
        h = (int64_t)ceil((double)height * beta / factor) * factor;
        w = (int64_t)ceil((double)width * beta / factor) * factor;
    }
    if (h <= 0 || w <= 0 || h > IMGPROC_MAX_SIDE || w > IMGPROC_MAX_SIDE)
        return adapt_fail(err, ADAPT_EINVAL, "image of %dx%d: resizes to %lldx%lld with min_pixels %lld and "
                          "max_pixels %lld; check those settings", width, height, (long long)w, (long long)h,
                          (long long)min_pixels, (long long)max_pixels);
    *out_height = (int)h;
    *out_width = (int)w;
    return ADAPT_OK;
}

int imgproc_plan_image(const imgproc_params *p, int width, int height, imgproc_plan *plan,
                       adapt_error *err)
{
    if (p->patch_size <= 0 || p->merge_size <= 0 || p->temporal_patch_size <= 0)
        return adapt_fail(err, ADAPT_EINVAL, "image processor: patch_size, merge_size and temporal_patch_size "
                          "must be positive");
    memset(plan, 0, sizeof *plan);
    plan->width = width;
    plan->height = height;
    int rc = imgproc_smart_resize(height, width, p->patch_size * p->merge_size, p->min_pixels, p->max_pixels,
                                  &plan->resized_height, &plan->resized_width, err);
    if (rc) return rc;
    plan->grid_t = 1;
    plan->grid_h = plan->resized_height / p->patch_size;
    plan->grid_w = plan->resized_width / p->patch_size;
    plan->n_patches = (size_t)plan->grid_t * (size_t)plan->grid_h * (size_t)plan->grid_w;
    plan->patch_dim = (size_t)3 * (size_t)p->temporal_patch_size * (size_t)p->patch_size * (size_t)p->patch_size;
    return ADAPT_OK;
}

/* ---- Pillow's bicubic resampling ------------------------------------------------------------- */

/* The cubic convolution kernel with a = -0.5, written as Pillow evaluates it. */
static double bicubic_weight(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* One pass's taps: output i reads `count[i]` inputs from `first[i]` with fixed-point weights
 * `weight[i * ksize ...]`. */
typedef struct imgproc_taps {
    int      ksize;
    int     *first;
    int     *count;
    int32_t *weight;
} imgproc_taps;

static void taps_free(imgproc_taps *t)
{
    free(t->first);
    free(t->count);
    free(t->weight);
}

static int taps_compute(int in_size, int out_size, imgproc_taps *t)
{
    /* Pillow passes the box edges as floats: scale = (double)(in1 - in0) / out_size. */
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = malloc((size_t)out_size * sizeof *t->first);
    t->count = malloc((size_t)out_size * sizeof *t->count);
    t->weight = malloc((size_t)out_size * (size_t)t->ksize * sizeof *t->weight);
    double *w = malloc((size_t)t->ksize * sizeof *w);
    if (!t->first || !t->count || !t->weight || !w) { free(w); taps_free(t); return ADAPT_ENOMEM; }
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);       /* truncation, as Pillow's (int) cast */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = bicubic_weight((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = &t->weight[(size_t)xx * (size_t)t->ksize];
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << IMGPROC_PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << IMGPROC_PRECISION_BITS));
        }
        t->first[xx] = xmin;
        t->count[xx] = xmax;
    }
    free(w);
    return ADAPT_OK;
}

/* Pillow's clip8: drop the fraction (arithmetic shift), then clamp to a byte. */
static inline uint8_t clip8(int32_t acc)
{
    int32_t v = acc >> IMGPROC_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* The sums are exact in 32-bit integers (|weights| sum below 1.3, pixels below 256), so their
 * order is free: the loops below are arranged for the cache and the vectoriser, and still give
 * Pillow's bytes. */
static void pass_horizontal(const uint8_t *src, int src_w, int rows, int ch, const imgproc_taps *t,
                            uint8_t *dst, int dst_w)
{
    const int32_t half = 1 << (IMGPROC_PRECISION_BITS - 1);
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)y * (size_t)src_w * (size_t)ch;
        uint8_t *out = dst + (size_t)y * (size_t)dst_w * (size_t)ch;
        for (int xx = 0; xx < dst_w; xx++) {
            const int32_t *k = &t->weight[(size_t)xx * (size_t)t->ksize];
            const uint8_t *p = in + (size_t)t->first[xx] * (size_t)ch;
            int n = t->count[xx];
            if (ch == 3) {      /* the case that matters: RGB, one pass over the window */
                int32_t r = half, g = half, b = half;
                for (int x = 0; x < n; x++) {
                    r += p[3 * x] * k[x];
                    g += p[3 * x + 1] * k[x];
                    b += p[3 * x + 2] * k[x];
                }
                out[3 * xx] = clip8(r), out[3 * xx + 1] = clip8(g), out[3 * xx + 2] = clip8(b);
                continue;
            }
            for (int c = 0; c < ch; c++) {
                int32_t acc = half;
                for (int x = 0; x < n; x++) acc += p[x * ch + c] * k[x];
                out[xx * ch + c] = clip8(acc);
            }
        }
    }
}

/* src rows are numbered from `row0` of the taps' input (the horizontal pass only produced the
 * rows the vertical taps read). acc is scratch of width * ch sums, a whole row at a time. */
static void pass_vertical(const uint8_t *src, int width, int ch, int row0, const imgproc_taps *t,
                          uint8_t *dst, int dst_h, int32_t *acc)
{
    size_t stride = (size_t)width * (size_t)ch;
    for (int yy = 0; yy < dst_h; yy++) {
        const int32_t *k = &t->weight[(size_t)yy * (size_t)t->ksize];
        const uint8_t *in = src + (size_t)(t->first[yy] - row0) * stride;
        for (size_t i = 0; i < stride; i++) acc[i] = 1 << (IMGPROC_PRECISION_BITS - 1);
        for (int y = 0; y < t->count[yy]; y++) {
            const uint8_t *row = in + (size_t)y * stride;
            int32_t ky = k[y];
            for (size_t i = 0; i < stride; i++) acc[i] += row[i] * ky;
        }
        uint8_t *out = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) out[i] = clip8(acc[i]);
    }
}

int imgproc_resize_bicubic(const uint8_t *src, int src_width, int src_height, int channels,
                           uint8_t *dst, int dst_width, int dst_height, adapt_error *err)
{
    if (src_width <= 0 || src_height <= 0 || dst_width <= 0 || dst_height <= 0 || channels < 1 || channels > 4 ||
        src_width > IMGPROC_MAX_SIDE || src_height > IMGPROC_MAX_SIDE || dst_width > IMGPROC_MAX_SIDE ||
        dst_height > IMGPROC_MAX_SIDE)
        return adapt_fail(err, ADAPT_EINVAL, "bicubic resize %dx%d -> %dx%d with %d channels: sizes must be "
                          "in 1..%d, channels in 1..4", src_width, src_height, dst_width, dst_height, channels,
                          IMGPROC_MAX_SIDE);
    size_t src_stride = (size_t)src_width * (size_t)channels;
    bool need_h = dst_width != src_width, need_v = dst_height != src_height;
    if (!need_h && !need_v) {             /* Pillow returns a copy for the same size */
        memcpy(dst, src, src_stride * (size_t)src_height);
        return ADAPT_OK;
    }
    imgproc_taps tv = {0}, th = {0};
    uint8_t *tmp = NULL;
    int rc = taps_compute(src_height, dst_height, &tv);
    if (rc == ADAPT_OK && need_h) rc = taps_compute(src_width, dst_width, &th);
    if (rc) { taps_free(&tv); return adapt_fail(err, ADAPT_ENOMEM, "bicubic resize: out of memory"); }
    /* Pillow 13 (its PR 9549) runs the vertical pass first when the height shrinks by more than
     * twice as many pixels as the width does; the passes clip to 8 bits in between, so the order
     * shows in the result. The rule was read off Pillow 13.0.0's output (1478 random size pairs,
     * all agreeing); Pillow 12 and older always go horizontal first. */
    bool vertical_first = need_h && need_v && dst_height < src_height &&
                          (int64_t)src_height - dst_height > 2 * ((int64_t)src_width - dst_width);
    /* Horizontal first: only the input rows some output row reads go through that pass. */
    int row0 = tv.first[0], row1 = tv.first[dst_height - 1] + tv.count[dst_height - 1];
    if (need_h && !need_v) row0 = 0, row1 = src_height;
    size_t tmp_bytes = vertical_first ? src_stride * (size_t)dst_height
                                      : (size_t)dst_width * (size_t)channels * (size_t)(row1 - row0);
    /* Row sums for the vertical pass, as wide as the row it runs on. */
    size_t acc_len = vertical_first || !need_h ? src_stride : (size_t)dst_width * (size_t)channels;
    int32_t *acc = need_v ? malloc(acc_len * sizeof *acc) : NULL;
    if ((need_h && need_v && !(tmp = malloc(tmp_bytes ? tmp_bytes : 1))) || (need_v && !acc)) {
        rc = adapt_fail(err, ADAPT_ENOMEM, "bicubic resize: out of memory");
    } else if (vertical_first) {
        pass_vertical(src, src_width, channels, 0, &tv, tmp, dst_height, acc);
        pass_horizontal(tmp, src_width, dst_height, channels, &th, dst, dst_width);
    } else if (need_h && need_v) {
        pass_horizontal(src + (size_t)row0 * src_stride, src_width, row1 - row0, channels, &th, tmp, dst_width);
        pass_vertical(tmp, dst_width, channels, row0, &tv, dst, dst_height, acc);
    } else if (need_h) {
        pass_horizontal(src, src_width, src_height, channels, &th, dst, dst_width);
    } else {
        pass_vertical(src, src_width, channels, 0, &tv, dst, dst_height, acc);
    }
    free(acc);
    free(tmp);
    taps_free(&th);
    taps_free(&tv);
    return rc;
}

/* ---- rescale, normalize, patchify ------------------------------------------------------------ */

int imgproc_patchify(const imgproc_params *p, const uint8_t *rgb, int width, int height, float *out,
                     adapt_error *err)
{
    int ps = p->patch_size, ms = p->merge_size, tp = p->temporal_patch_size, f = ps * ms;
    if (ps <= 0 || ms <= 0 || tp <= 0 || width <= 0 || height <= 0 || width % f || height % f)
        return adapt_fail(err, ADAPT_EINVAL, "patchify: image of %dx%d is not a positive multiple of "
                          "patch_size x merge_size = %d on each side", width, height, f);
    /* transformers: uint8 -> float64 x rescale_factor -> float32, then (x - mean) / std in float32
     * with mean and std cast to float32. Computed once per byte value and channel. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)((double)v * p->rescale_factor);
            lut[c][v] = (x - p->mean[c]) / p->std[c];
        }
    int gh = height / ps, gw = width / ps;
    size_t dim = (size_t)3 * (size_t)tp * (size_t)ps * (size_t)ps, row = 0;
    for (int by = 0; by < gh / ms; by++)
        for (int bx = 0; bx < gw / ms; bx++)
            for (int my = 0; my < ms; my++)
                for (int mx = 0; mx < ms; mx++, row++) {
                    int y0 = (by * ms + my) * ps, x0 = (bx * ms + mx) * ps;
                    float *o = out + row * dim;
                    for (int c = 0; c < 3; c++) {
                        float *frame0 = o + (size_t)c * (size_t)tp * (size_t)ps * (size_t)ps;
                        for (int py = 0; py < ps; py++) {
                            const uint8_t *in = rgb + ((size_t)(y0 + py) * (size_t)width + (size_t)x0) * 3 + c;
                            for (int px = 0; px < ps; px++) frame0[py * ps + px] = lut[c][in[px * 3]];
                        }
                        /* A still image is the same frame repeated temporal_patch_size times. */
                        for (int t = 1; t < tp; t++)
                            memcpy(frame0 + (size_t)t * (size_t)ps * (size_t)ps, frame0,
                                   (size_t)ps * (size_t)ps * sizeof *frame0);
                    }
                }
    return ADAPT_OK;
}

int imgproc_process(const imgproc_params *p, const uint8_t *rgb, int width, int height, float *out,
                    size_t out_cap, imgproc_plan *plan, adapt_error *err)
{
    int rc = imgproc_plan_image(p, width, height, plan, err);
    if (rc) return rc;
    if (plan->n_patches * plan->patch_dim > out_cap)
        return adapt_fail(err, ADAPT_ERANGE, "image of %dx%d needs %zu x %zu floats for its patches, the buffer "
                          "holds %zu", width, height, plan->n_patches, plan->patch_dim, out_cap);
    size_t bytes = (size_t)plan->resized_width * (size_t)plan->resized_height * 3;
    uint8_t *resized = malloc(bytes);
    if (!resized) return adapt_fail(err, ADAPT_ENOMEM, "image of %dx%d: out of memory resizing", width, height);
    rc = imgproc_resize_bicubic(rgb, width, height, 3, resized, plan->resized_width, plan->resized_height, err);
    if (rc == ADAPT_OK) rc = imgproc_patchify(p, resized, plan->resized_width, plan->resized_height, out, err);
    free(resized);
    return rc;
}
