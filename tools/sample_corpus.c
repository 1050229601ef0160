/* sample_corpus: the embedded sample corpus generator (see sample_corpus.h).
 *
 * The one design idea: a sample is a pure function of (seed, index, options). Its scene comes
 * from one random stream and its text from another, both seeded by (seed, index), so image
 * workers can take samples in any order on any number of threads while the main thread writes
 * the JSON by re-deriving each scene, and the bytes never depend on --jobs.
 *
 * Shapes are rasterized by scanline: each pixel row is cut by four sub-scanlines, each gives
 * exact spans of the shape, and spans are added to the row with fractional end pixels. That
 * is exact horizontal and 4x vertical antialiasing at the cost of a few multiplications per
 * row, so the JPEG encoder, not the painter, sets the speed. */
#include "sample_corpus.h"

#include "file_io.h"

#include <png.h>
#include <turbojpeg.h>

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- tables ------------------------------------------------------------------------------- */

typedef struct rgb_colour {
    uint8_t r, g, b;
} rgb_colour;

static const char *const kind_names[SAMPLEGEN_KIND_COUNT] = {
    "circle", "square", "triangle", "star", "ellipse", "rectangle",
};

static const struct {
    const char *name;
    rgb_colour  rgb;
} shape_colours[SAMPLEGEN_COLOUR_COUNT] = {
    {"red",    {220,  30,  30}},   /* hue   0 */
    {"orange", {245, 140,  20}},   /* hue  32 */
    {"yellow", {245, 220,  30}},   /* hue  53 */
    {"green",  { 40, 170,  60}},   /* hue 129 */
    {"cyan",   { 30, 200, 210}},   /* hue 183 */
    {"blue",   { 40,  70, 220}},   /* hue 230 */
    {"purple", {130,  50, 180}},   /* hue 277 */
    {"pink",   {240, 100, 180}},   /* hue 326 */
};

/* Backgrounds are grey or nearly so (saturation under 0.2), so that shapes are the only
 * saturated pixels; `step` is the luminance offset of the second tone of a texture. */
static const struct {
    const char *name;
    rgb_colour  base;
    int         step;
} backgrounds[] = {
    {"grey",       {140, 140, 140},  30},
    {"light grey", {200, 200, 200}, -28},
    {"white",      {246, 246, 246}, -26},
    {"dark grey",  { 64,  64,  64},  28},
    {"beige",      {226, 214, 186}, -24},
};
#define N_BACKGROUNDS ((int)(sizeof backgrounds / sizeof backgrounds[0]))

static const char *const texture_names[SAMPLEGEN_TEXTURE_COUNT] = {
    "plain", "stripes", "checker", "noise-gradient",
};
static const char *const texture_adjectives[SAMPLEGEN_TEXTURE_COUNT] = {
    "plain", "striped", "checkered", "mottled",
};
static const char *const texture_answers[SAMPLEGEN_TEXTURE_COUNT] = {
    "none, it is plain", "stripes", "a checkerboard", "a mottled gradient",
};

static const char *const region_names[SAMPLEGEN_REGION_COUNT] = {
    "top left",    "top",    "top right",
    "left",        "center", "right",
    "bottom left", "bottom", "bottom right",
};
static const char *const region_phrases[SAMPLEGEN_REGION_COUNT] = {
    "in the top left",    "at the top",    "in the top right",
    "on the left",        "in the center", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right",
};

static const char *const number_words[] = {
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
};

static const char *const caption_instructions[] = {
    "Describe the image.",
    "Describe this image briefly.",
    "What is shown in this picture?",
    "Write a short caption for the image.",
    "Give a one-sentence description of the scene.",
    "What do you see in this image?",
};
#define N_INSTRUCTIONS ((int)(sizeof caption_instructions / sizeof caption_instructions[0]))

#define STAR_INNER_RATIO 0.4     /* inner over outer radius: thin enough to tell from a triangle */
#define LARGEST_MARGIN   1.3     /* the largest shape has at least this times any other's area */
#define COMPARE_MARGIN   1.3     /* "which is larger" is asked only past this area ratio */
#define WORK_CHUNK       8       /* samples a worker claims at once */

const char *samplegen_kind_name(enum samplegen_kind kind) { return kind_names[kind]; }
const char *samplegen_colour_name(enum samplegen_colour colour)
{
    return shape_colours[colour].name;
}
const char *samplegen_region_name(enum samplegen_region region) { return region_names[region]; }
const char *samplegen_texture_name(enum samplegen_texture texture)
{
    return texture_names[texture];
}

/* ---- random streams ------------------------------------------------------------------------ */

/* splitmix64: tiny state, so a stream per sample costs nothing to create. */
typedef struct rng {
    uint64_t state;
} rng;

enum rng_stream_id { RNG_STREAM_SCENE = 1, RNG_STREAM_TEXT = 2 };

static uint64_t hash64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static rng rng_stream(uint64_t seed, long index, enum rng_stream_id stream)
{
    rng r = {hash64(hash64(seed + 0x9e3779b97f4a7c15ULL * (uint64_t)stream) ^
                    hash64((uint64_t)index + 0x632be59bd9b4e019ULL))};
    return r;
}

static uint64_t rng_next(rng *r)
{
    r->state += 0x9e3779b97f4a7c15ULL;
    return hash64(r->state);
}

static int rng_below(rng *r, int n)
{
    assert(n > 0);
    return (int)((rng_next(r) >> 32) % (uint64_t)n);
}

static double rng_range(rng *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- options ------------------------------------------------------------------------------- */

void samplegen_options_init(samplegen_options *opt)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *opt = (samplegen_options){
        .out_dir = NULL, .count = 1000, .seed = 1, .min_size = 448, .max_size = 448,
        .format = SAMPLEGEN_FORMAT_MIXED, .jpeg_quality = 90,
        .jobs = cpus < 1 ? 1 : cpus > SAMPLEGEN_JOBS_MAX ? SAMPLEGEN_JOBS_MAX : (int)cpus,
        .antialias = 1,
    };
}

int samplegen_options_check(const samplegen_options *opt, adapt_error *err)
{
    if (!opt->out_dir || !opt->out_dir[0])
        return adapt_fail(err, ADAPT_EINVAL, "--out DIR is required: where to write the corpus");
    if (opt->count < SAMPLEGEN_COUNT_MIN || opt->count > SAMPLEGEN_COUNT_MAX)
        return adapt_fail(err, ADAPT_EINVAL, "--count %ld is out of range: give %d to %d samples",
                          opt->count, SAMPLEGEN_COUNT_MIN, SAMPLEGEN_COUNT_MAX);
    if (opt->min_size < SAMPLEGEN_SIZE_MIN || opt->max_size > SAMPLEGEN_SIZE_MAX)
        return adapt_fail(err, ADAPT_EINVAL,
                          "image size %d..%d is out of range: give sides of %d to %d pixels",
                          opt->min_size, opt->max_size, SAMPLEGEN_SIZE_MIN, SAMPLEGEN_SIZE_MAX);
    if (opt->min_size > opt->max_size)
        return adapt_fail(err, ADAPT_EINVAL, "--min-size %d is larger than --max-size %d",
                          opt->min_size, opt->max_size);
    if (opt->jpeg_quality < 1 || opt->jpeg_quality > 100)
        return adapt_fail(err, ADAPT_EINVAL, "--jpeg-quality %d is out of range: give 1 to 100",
                          opt->jpeg_quality);
    if (opt->jobs < 1 || opt->jobs > SAMPLEGEN_JOBS_MAX)
        return adapt_fail(err, ADAPT_EINVAL, "--jobs %d is out of range: give 1 to %d",
                          opt->jobs, SAMPLEGEN_JOBS_MAX);
    if (opt->format != SAMPLEGEN_FORMAT_JPEG && opt->format != SAMPLEGEN_FORMAT_PNG &&
        opt->format != SAMPLEGEN_FORMAT_MIXED)
        return adapt_fail(err, ADAPT_EINVAL, "unknown image format %d", (int)opt->format);
    return ADAPT_OK;
}

/* ---- shape geometry ------------------------------------------------------------------------ */

#define POLY_MAX (2 * SAMPLEGEN_STAR_POINTS)

static int kind_is_polygon(enum samplegen_kind kind)
{
    return kind != SAMPLEGEN_KIND_CIRCLE && kind != SAMPLEGEN_KIND_ELLIPSE;
}

/* Vertices of a polygonal shape, clockwise on screen (y down); returns their number. */
static int shape_polygon(const samplegen_shape *sh, double *vx, double *vy)
{
    double cx = sh->cx, cy = sh->cy, rx = sh->rx, ry = sh->ry;
    switch (sh->kind) {
    case SAMPLEGEN_KIND_SQUARE:
    case SAMPLEGEN_KIND_RECTANGLE:
        vx[0] = cx - rx; vy[0] = cy - ry;
        vx[1] = cx + rx; vy[1] = cy - ry;
        vx[2] = cx + rx; vy[2] = cy + ry;
        vx[3] = cx - rx; vy[3] = cy + ry;
        return 4;
    case SAMPLEGEN_KIND_TRIANGLE:
        vx[0] = cx;      vy[0] = cy - ry;
        vx[1] = cx + rx; vy[1] = cy + ry;
        vx[2] = cx - rx; vy[2] = cy + ry;
        return 3;
    case SAMPLEGEN_KIND_STAR:
        for (int k = 0; k < POLY_MAX; k++) {
            double angle = -M_PI / 2 + k * M_PI / SAMPLEGEN_STAR_POINTS;
            double radius = (k & 1) ? rx * STAR_INNER_RATIO : rx;
            vx[k] = cx + radius * cos(angle);
            vy[k] = cy + radius * sin(angle);
        }
        return POLY_MAX;
    default:
        assert(!"not a polygon");
        return 0;
    }
}

/* Area, centroid and bounding box from the size and centre, exactly (shoelace for polygons). */
static void shape_measure(samplegen_shape *sh)
{
    if (!kind_is_polygon(sh->kind)) {
        sh->area = M_PI * sh->rx * sh->ry;
        sh->centroid_x = sh->cx;
        sh->centroid_y = sh->cy;
        sh->x0 = sh->cx - sh->rx; sh->x1 = sh->cx + sh->rx;
        sh->y0 = sh->cy - sh->ry; sh->y1 = sh->cy + sh->ry;
        return;
    }
    double vx[POLY_MAX], vy[POLY_MAX], twice_area = 0, mx = 0, my = 0;
    int n = shape_polygon(sh, vx, vy);
    sh->x0 = sh->x1 = vx[0];
    sh->y0 = sh->y1 = vy[0];
    for (int i = 0; i < n; i++) {
        int j = (i + 1) % n;
        double cross = vx[i] * vy[j] - vx[j] * vy[i];
        twice_area += cross;
        mx += (vx[i] + vx[j]) * cross;
        my += (vy[i] + vy[j]) * cross;
        sh->x0 = fmin(sh->x0, vx[i]); sh->x1 = fmax(sh->x1, vx[i]);
        sh->y0 = fmin(sh->y0, vy[i]); sh->y1 = fmax(sh->y1, vy[i]);
    }
    sh->area = fabs(twice_area) / 2;
    sh->centroid_x = mx / (3 * twice_area);
    sh->centroid_y = my / (3 * twice_area);
}

/* Size from a nominal radius. Stars get more reach because their points cover little area;
 * ellipses and rectangles keep the area of a circle or square of that radius. */
static void shape_size(samplegen_shape *sh, double radius, rng *r)
{
    double aspect = rng_range(r, 1.6, 2.0);
    int wide = rng_below(r, 2);
    sh->cx = sh->cy = 0;
    sh->rx = sh->ry = radius;
    if (sh->kind == SAMPLEGEN_KIND_STAR) {
        sh->rx = sh->ry = radius * 1.3;
    } else if (sh->kind == SAMPLEGEN_KIND_ELLIPSE || sh->kind == SAMPLEGEN_KIND_RECTANGLE) {
        double major = radius * sqrt(aspect), minor = radius / sqrt(aspect);
        sh->rx = wide ? major : minor;
        sh->ry = wide ? minor : major;
    }
    shape_measure(sh);
}

static void shape_move(samplegen_shape *sh, double cx, double cy)
{
    sh->cx = cx;
    sh->cy = cy;
    shape_measure(sh);
}

static enum samplegen_region region_of(double x, double y, int size)
{
    int col = x < size / 3.0 ? 0 : x < 2 * size / 3.0 ? 1 : 2;
    int row = y < size / 3.0 ? 0 : y < 2 * size / 3.0 ? 1 : 2;
    return (enum samplegen_region)(row * 3 + col);
}

/* ---- scenes --------------------------------------------------------------------------------- */

static int group_find(const samplegen_group *groups, int n, enum samplegen_kind kind,
                      enum samplegen_colour colour)
{
    for (int g = 0; g < n; g++)
        if (groups[g].kind == kind && groups[g].colour == colour) return g;
    return -1;
}

static void scene_draw_background(samplegen_scene *s, rng *r)
{
    s->background = rng_below(r, N_BACKGROUNDS);
    s->texture = (enum samplegen_texture)rng_below(r, SAMPLEGEN_TEXTURE_COUNT);
    s->texture_direction = rng_below(r, 4);
    int step = rng_below(r, 8);
    s->texture_seed = rng_next(r);
    switch (s->texture) {
    case SAMPLEGEN_TEXTURE_STRIPES: s->texture_period = s->size * (4 + step) / 100; break;
    case SAMPLEGEN_TEXTURE_CHECKER: s->texture_period = s->size * (5 + step) / 100; break;
    default:                        s->texture_period = s->size / (3 + step / 2); break;
    }
    /* even, because stripes take half a period of each tone */
    s->texture_period = (s->texture_period < 4 ? 4 : s->texture_period) & ~1;
}

static void scene_draw_groups(samplegen_scene *s, rng *r)
{
    s->n_groups = 1 + rng_below(r, SAMPLEGEN_MAX_GROUPS);
    for (int g = 0; g < s->n_groups; g++) {
        samplegen_group *gr = &s->groups[g];
        do {
            gr->kind = (enum samplegen_kind)rng_below(r, SAMPLEGEN_KIND_COUNT);
            gr->colour = (enum samplegen_colour)rng_below(r, SAMPLEGEN_COLOUR_COUNT);
        } while (group_find(s->groups, g, gr->kind, gr->colour) >= 0);
        gr->count = 1 + rng_below(r, SAMPLEGEN_MAX_PER_GROUP);
    }
}

/* A crowded draw that would not fit: one shape fewer (never below one). */
static void scene_drop_shape(samplegen_scene *s)
{
    for (int g = s->n_groups - 1; g >= 0; g--)
        if (s->groups[g].count > 1) {
            s->groups[g].count--;
            return;
        }
    if (s->n_groups > 1) s->n_groups--;
}

static int scene_find_largest(const samplegen_scene *s, int *second)
{
    int best = 0;
    *second = -1;
    for (int i = 1; i < s->n_shapes; i++) {
        if (s->shapes[i].area > s->shapes[best].area) {
            *second = best;
            best = i;
        } else if (*second < 0 || s->shapes[i].area > s->shapes[*second].area) {
            *second = i;
        }
    }
    return best;
}

/* Shapes of every group, radii shrinking with their number; the largest is then grown until it
 * is unambiguously the largest, so that the caption can name it. */
static void scene_draw_sizes(samplegen_scene *s, rng *r, double shrink)
{
    s->n_shapes = 0;
    for (int g = 0; g < s->n_groups; g++)
        for (int c = 0; c < s->groups[g].count; c++) {
            samplegen_shape *sh = &s->shapes[s->n_shapes++];
            sh->kind = s->groups[g].kind;
            sh->colour = s->groups[g].colour;
        }
    double rmin = fmax(0.05 * s->size, 8);   /* under 8 pixels a star is a blot */
    double rmax = fmax(rmin, (0.07 + 0.13 / sqrt(s->n_shapes)) * s->size * shrink);
    for (int i = 0; i < s->n_shapes; i++) shape_size(&s->shapes[i], rng_range(r, rmin, rmax), r);
    int second, best = scene_find_largest(s, &second);
    if (second >= 0 && s->shapes[best].area < LARGEST_MARGIN * s->shapes[second].area) {
        double grow = sqrt(LARGEST_MARGIN * 1.02 * s->shapes[second].area / s->shapes[best].area);
        samplegen_shape *sh = &s->shapes[best];
        sh->rx *= grow;
        sh->ry *= grow;
        shape_measure(sh);
    }
}

static int boxes_apart(const samplegen_shape *a, const samplegen_shape *b, double gap)
{
    return a->x1 + gap <= b->x0 || b->x1 + gap <= a->x0 ||
           a->y1 + gap <= b->y0 || b->y1 + gap <= a->y0;
}

/* Far enough from the lines of the 3x3 grid that "top left" is not a matter of a pixel. */
static int clear_of_grid(double v, int size)
{
    double margin = 0.03 * size;
    return fabs(v - size / 3.0) >= margin && fabs(v - 2 * size / 3.0) >= margin;
}

/* Tries a spot for shape i among the placed ones; returns 1 when it found one. */
static int scene_place_one(samplegen_scene *s, int i, const int *placed, int n_placed, rng *r)
{
    samplegen_shape *sh = &s->shapes[i];
    double border = fmax(2, 0.02 * s->size), gap = fmax(4, 0.025 * s->size);
    double lo_x = border + (sh->cx - sh->x0), hi_x = s->size - border - (sh->x1 - sh->cx);
    double lo_y = border + (sh->cy - sh->y0), hi_y = s->size - border - (sh->y1 - sh->cy);
    if (hi_x <= lo_x || hi_y <= lo_y) return 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        shape_move(sh, rng_range(r, lo_x, hi_x), rng_range(r, lo_y, hi_y));
        if (!clear_of_grid(sh->centroid_x, s->size) || !clear_of_grid(sh->centroid_y, s->size))
            continue;
        int ok = 1;
        for (int k = 0; k < n_placed && ok; k++) ok = boxes_apart(sh, &s->shapes[placed[k]], gap);
        if (ok) return 1;
    }
    return 0;
}

/* Places shapes largest first, bounding boxes apart by a gap, so no two shapes touch and each
 * colour's connected regions are exactly its shapes. */
static int scene_place(samplegen_scene *s, rng *r)
{
    int order[SAMPLEGEN_MAX_SHAPES];
    for (int i = 0; i < s->n_shapes; i++) {
        int k = i;
        for (; k > 0 && s->shapes[order[k - 1]].area < s->shapes[i].area; k--)
            order[k] = order[k - 1];
        order[k] = i;
    }
    for (int k = 0; k < s->n_shapes; k++)
        if (!scene_place_one(s, order[k], order, k, r)) return 0;
    for (int i = 0; i < s->n_shapes; i++) {
        samplegen_shape *sh = &s->shapes[i];
        sh->region = region_of(sh->centroid_x, sh->centroid_y, s->size);
    }
    return 1;
}

static void scene_layout(samplegen_scene *s, rng *r)
{
    /* Shrink the shapes on each failed layout; after a dozen, the scene is too crowded for its
     * image (small sides): drop a shape and start again from full size. */
    for (int attempt = 0;; attempt++) {
        if (attempt > 0 && attempt % 12 == 0) scene_drop_shape(s);
        scene_draw_sizes(s, r, pow(0.9, attempt % 12));
        if (scene_place(s, r)) break;
    }
    int second;
    s->largest = scene_find_largest(s, &second);
}

/* Caption order: most numerous group first, ties in the order drawn. */
static void scene_order_groups(samplegen_scene *s)
{
    for (int i = 1; i < s->n_groups; i++) {
        samplegen_group g = s->groups[i];
        int k = i;
        for (; k > 0 && s->groups[k - 1].count < g.count; k--) s->groups[k] = s->groups[k - 1];
        s->groups[k] = g;
    }
}

void samplegen_scene_make(const samplegen_options *opt, long index, samplegen_scene *s)
{
    rng r = rng_stream(opt->seed, index, RNG_STREAM_SCENE);
    memset(s, 0, sizeof *s);
    s->seed = opt->seed;
    s->index = index;
    s->size = opt->min_size + rng_below(&r, opt->max_size - opt->min_size + 1);
    int png_coin = rng_below(&r, 2);   /* drawn for every format, so scenes do not depend on it */
    s->is_png = opt->format == SAMPLEGEN_FORMAT_PNG ||
                (opt->format == SAMPLEGEN_FORMAT_MIXED && png_coin);
    scene_draw_background(s, &r);
    scene_draw_groups(s, &r);
    scene_layout(s, &r);
    scene_order_groups(s);
}

/* ---- painting: backgrounds ------------------------------------------------------------------ */

static rgb_colour tone_shift(rgb_colour c, int delta)
{
    int v[3] = {c.r + delta, c.g + delta, c.b + delta};
    for (int i = 0; i < 3; i++) v[i] = v[i] < 0 ? 0 : v[i] > 255 ? 255 : v[i];
    return (rgb_colour){(uint8_t)v[0], (uint8_t)v[1], (uint8_t)v[2]};
}

static void put_pixel(uint8_t *p, rgb_colour c)
{
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
}

/* A row where pixel x has tone b when (x + phase) / half is odd: stripes and checker rows.
 * A running counter instead of a division per pixel. */
static void row_two_tone(uint8_t *row, int n, int half, int phase, rgb_colour a, rgb_colour b)
{
    int k = phase % (2 * half);
    for (int x = 0; x < n; x++) {
        put_pixel(row + 3 * x, k < half ? a : b);
        if (++k == 2 * half) k = 0;
    }
}

static void paint_stripes(const samplegen_scene *s, rgb_colour a, rgb_colour b, uint8_t *rgb)
{
    int n = s->size, period = s->texture_period, half = period / 2;
    size_t stride = (size_t)n * 3;
    if (s->texture_direction == 0) {   /* horizontal bands: each row is one tone */
        for (int y = 0; y < n; y++) {
            rgb_colour t = (y / half) & 1 ? b : a;
            row_two_tone(rgb + y * stride, n, half, 0, t, t);
        }
        return;
    }
    row_two_tone(rgb, n, half, 0, a, b);
    for (int y = 1; y < n; y++) {
        /* Vertical bands repeat row 0; diagonal ones shift it by y. Row 0 is periodic and at
         * least one period long, so a shifted row is two copies out of it. */
        int shift = s->texture_direction == 1 ? 0
                  : s->texture_direction == 2 ? y % period
                                              : (period - y % period) % period;
        uint8_t *row = rgb + y * stride;
        memcpy(row, rgb + (size_t)shift * 3, (size_t)(n - shift) * 3);
        memcpy(row + (size_t)(n - shift) * 3, rgb + (size_t)(n - period) * 3, (size_t)shift * 3);
    }
}

static void paint_checker(const samplegen_scene *s, rgb_colour a, rgb_colour b, uint8_t *rgb)
{
    int n = s->size, cell = s->texture_period;
    size_t stride = (size_t)n * 3;
    for (int y = 0; y < n; y++) {
        if (y % cell == 0) row_two_tone(rgb + y * stride, n, cell, 0, (y / cell) & 1 ? b : a,
                                        (y / cell) & 1 ? a : b);
        else memcpy(rgb + y * stride, rgb + (y - 1) * stride, stride);
    }
}

/* Smooth value noise on a coarse lattice plus a linear ramp; only luminance moves, so the
 * background stays grey. Every lattice cell has the same size, so the smoothstep weights across
 * a cell and the ramp along x are tabled once (in `scratch`, 2n floats) and a pixel costs a
 * multiply-add. */
#define NOISE_LATTICE_MAX 10   /* cells are at least a seventh of the side: at most 9 points */
#define NOISE_DELTA_MAX   40   /* |noise| <= 12 plus |ramp| <= 24, rounded, with room */

static void paint_noise_gradient(const samplegen_scene *s, rgb_colour base, uint8_t *rgb,
                                 float *scratch)
{
    const float noise_amp = 12, ramp_amp = 24;
    int n = s->size, cell = s->texture_period, points = n / cell + 2, dir = s->texture_direction;
    assert(points <= NOISE_LATTICE_MAX);
    float lattice[NOISE_LATTICE_MAX][NOISE_LATTICE_MAX], column[NOISE_LATTICE_MAX];
    for (int j = 0; j < points; j++)
        for (int i = 0; i < points; i++) {
            uint64_t h = hash64(s->texture_seed ^ hash64((uint64_t)(j * NOISE_LATTICE_MAX + i)));
            lattice[j][i] = noise_amp * (float)((double)(h >> 11) * 0x1.0p-53 * 2 - 1);
        }
    rgb_colour tones[2 * NOISE_DELTA_MAX + 1];   /* base shifted by -max .. +max */
    for (int d = -NOISE_DELTA_MAX; d <= NOISE_DELTA_MAX; d++)
        tones[d + NOISE_DELTA_MAX] = tone_shift(base, d);
    float *weight = scratch, *ramp_x = scratch + n;   /* weight: cell entries; ramp_x: n */
    for (int t = 0; t < cell; t++) {
        float u = (float)t / (float)cell;
        weight[t] = u * u * (3 - 2 * u);
    }
    float ramp_scale = dir < 2 ? ramp_amp * 2 / (float)n : ramp_amp / (float)n;
    for (int x = 0; x < n; x++) ramp_x[x] = dir == 1 ? 0 : ramp_scale * (float)x;
    for (int y = 0; y < n; y++) {
        int j = y / cell;
        float ty = weight[y - j * cell];
        for (int i = 0; i < points; i++)
            column[i] = lattice[j][i] + (lattice[j + 1][i] - lattice[j][i]) * ty;
        float ramp_y = dir == 0 ? -ramp_amp
                     : dir == 1 ? ramp_scale * (float)y - ramp_amp
                     : dir == 2 ? ramp_scale * (float)y - ramp_amp
                                : ramp_scale * (float)(n - y) - ramp_amp;
        uint8_t *row = rgb + (size_t)y * n * 3;
        for (int x0 = 0, i = 0; x0 < n; x0 += cell, i++) {
            float c0 = column[i], dc = column[i + 1] - column[i];
            int end = x0 + cell < n ? x0 + cell : n;
            for (int x = x0; x < end; x++) {
                float delta = c0 + dc * weight[x - x0] + ramp_x[x] + ramp_y;
                put_pixel(row + 3 * x, tones[(int)(delta + (NOISE_DELTA_MAX + 0.5f))]);
            }
        }
    }
}

static void background_paint(const samplegen_scene *s, uint8_t *rgb, float *scratch)
{
    rgb_colour a = backgrounds[s->background].base;
    rgb_colour b = tone_shift(a, backgrounds[s->background].step);
    size_t stride = (size_t)s->size * 3;
    switch (s->texture) {
    case SAMPLEGEN_TEXTURE_PLAIN:
        row_two_tone(rgb, s->size, 1, 0, a, a);
        for (int y = 1; y < s->size; y++) memcpy(rgb + y * stride, rgb, stride);
        break;
    case SAMPLEGEN_TEXTURE_STRIPES:        paint_stripes(s, a, b, rgb); break;
    case SAMPLEGEN_TEXTURE_CHECKER:        paint_checker(s, a, b, rgb); break;
    case SAMPLEGEN_TEXTURE_NOISE_GRADIENT: paint_noise_gradient(s, a, rgb, scratch); break;
    default: assert(!"unknown texture");
    }
}

/* ---- painting: shapes ----------------------------------------------------------------------- */

/* Spans of the shape on the horizontal line y, as sorted [start, end) pairs in xs; returns the
 * number of values (twice the spans). Even-odd rule, so the concave star works too. */
static int shape_spans(const samplegen_shape *sh, const double *vx, const double *vy, int nv,
                       double y, double *xs)
{
    if (!kind_is_polygon(sh->kind)) {
        double dy = (y - sh->cy) / sh->ry;
        if (fabs(dy) >= 1) return 0;
        double half = sh->rx * sqrt(1 - dy * dy);
        xs[0] = sh->cx - half;
        xs[1] = sh->cx + half;
        return 2;
    }
    int n = 0;
    for (int i = 0; i < nv; i++) {
        int j = (i + 1) % nv;
        if ((vy[i] <= y) == (vy[j] <= y)) continue;   /* the edge does not cross this line */
        double x = vx[i] + (y - vy[i]) * (vx[j] - vx[i]) / (vy[j] - vy[i]);
        int k = n++;
        for (; k > 0 && xs[k - 1] > x; k--) xs[k] = xs[k - 1];
        xs[k] = x;
    }
    return n & ~1;
}

/* Adds weight w times the coverage of [a, b) to a row: fractional end pixels go to `part`, the
 * whole pixels between them to the difference array `run` (summed when the row is blended). */
static void cover_add(float *part, float *run, double a, double b, float w)
{
    if (b <= a) return;
    int ia = (int)floor(a), ib = (int)floor(b);
    if (ia == ib) {
        part[ia] += (float)(b - a) * w;
        return;
    }
    part[ia] += (float)(ia + 1 - a) * w;
    run[ia + 1] += w;
    run[ib] -= w;
    part[ib] += (float)(b - ib) * w;
}

static void row_blend(uint8_t *row, const float *part, const float *run, int from, int to,
                      rgb_colour c)
{
    float acc = 0;
    for (int x = from; x < to; x++) {
        acc += run[x];
        float cover = acc + part[x];
        if (cover <= 0.002f) continue;
        uint8_t *p = row + 3 * x;
        if (cover >= 0.998f) {
            put_pixel(p, c);
            continue;
        }
        int w = (int)(cover * 256 + 0.5f);
        p[0] = (uint8_t)((p[0] * (256 - w) + c.r * w + 128) >> 8);
        p[1] = (uint8_t)((p[1] * (256 - w) + c.g * w + 128) >> 8);
        p[2] = (uint8_t)((p[2] * (256 - w) + c.b * w + 128) >> 8);
    }
}

/* Paints one shape over its bounding box. With antialiasing, four sub-scanlines per row each
 * add exact horizontal coverage; without it, one line through the pixel centres and spans
 * snapped to the pixels whose centres they hold. `part` and `run` hold n + 2 floats each. */
static void shape_paint(const samplegen_shape *sh, int n, int antialias, uint8_t *rgb,
                        float *part, float *run)
{
    double vx[POLY_MAX], vy[POLY_MAX], xs[POLY_MAX];
    int nv = kind_is_polygon(sh->kind) ? shape_polygon(sh, vx, vy) : 0;
    int subs = antialias ? 4 : 1;
    int ya = (int)fmax(0, floor(sh->y0)), yb = (int)fmin(n, ceil(sh->y1) + 1);
    int xa = (int)fmax(0, floor(sh->x0)), xb = (int)fmin(n, ceil(sh->x1) + 1);
    rgb_colour c = shape_colours[sh->colour].rgb;
    for (int y = ya; y < yb; y++) {
        memset(part + xa, 0, (size_t)(xb - xa + 1) * sizeof *part);
        memset(run + xa, 0, (size_t)(xb - xa + 1) * sizeof *run);
        for (int k = 0; k < subs; k++) {
            int m = shape_spans(sh, vx, vy, nv, y + (k + 0.5) / subs, xs);
            for (int i = 0; i < m; i += 2) {
                double a = xs[i], b = xs[i + 1];
                if (!antialias) {
                    a = ceil(a - 0.5);
                    b = ceil(b - 0.5);
                }
                cover_add(part, run, fmax(a, xa), fmin(b, xb), 1.0f / subs);
            }
        }
        row_blend(rgb + (size_t)y * n * 3, part, run, xa, xb, c);
    }
}

int samplegen_scene_render(const samplegen_scene *s, int antialias, uint8_t *rgb, adapt_error *err)
{
    float *rows = calloc(2 * ((size_t)s->size + 2), sizeof *rows);   /* also the noise tables */
    if (!rows)
        return adapt_fail(err, ADAPT_ENOMEM, "painting sample %ld: out of memory", s->index + 1);
    background_paint(s, rgb, rows);
    for (int i = 0; i < s->n_shapes; i++)
        shape_paint(&s->shapes[i], s->size, antialias, rgb, rows, rows + s->size + 2);
    free(rows);
    return ADAPT_OK;
}

/* ---- text: caption and question-answer pairs ------------------------------------------------ */

/* Appends to a fixed buffer; the texts are short by construction, so running out is a bug. */
typedef struct text_buf {
    char  *data;
    size_t cap, len;
} text_buf;

__attribute__((format(printf, 2, 3)))
static void text_add(text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    assert(n >= 0 && (size_t)n < b->cap - b->len);
    b->len += (size_t)n;
}

static const char *article(const char *word)
{
    return strchr("aeiou", word[0]) ? "an" : "a";
}

static int count_shapes(const samplegen_scene *s, int kind, int colour)
{
    int n = 0;
    for (int i = 0; i < s->n_shapes; i++)
        n += (kind < 0 || (int)s->shapes[i].kind == kind) &&
             (colour < 0 || (int)s->shapes[i].colour == colour);
    return n;
}

/* The one shape of a group of one. */
static const samplegen_shape *group_shape(const samplegen_scene *s, const samplegen_group *g)
{
    for (int i = 0; i < s->n_shapes; i++)
        if (s->shapes[i].kind == g->kind && s->shapes[i].colour == g->colour) return &s->shapes[i];
    assert(!"group without a shape");
    return NULL;
}

static void caption_write(const samplegen_scene *s, char *out, size_t cap)
{
    text_buf b = {out, cap, 0};
    for (int g = 0; g < s->n_groups; g++) {
        const samplegen_group *gr = &s->groups[g];
        const char *word = number_words[gr->count];
        text_add(&b, "%s%c%s %s %s%s", g == 0 ? "" : g == s->n_groups - 1 ? " and " : ", ",
                 g == 0 ? word[0] - 'a' + 'A' : word[0], word + 1, shape_colours[gr->colour].name,
                 kind_names[gr->kind], gr->count > 1 ? "s" : "");
    }
    const char *bg = backgrounds[s->background].name;
    if (s->texture == SAMPLEGEN_TEXTURE_NOISE_GRADIENT)
        text_add(&b, " on a mottled %s gradient background", bg);
    else
        text_add(&b, " on a %s %s background", texture_adjectives[s->texture], bg);

    const samplegen_shape *big = &s->shapes[s->largest];
    const char *colour = shape_colours[big->colour].name, *kind = kind_names[big->kind];
    if (s->n_shapes == 1) {
        text_add(&b, "; the %s %s is %s.", colour, kind, region_phrases[big->region]);
        return;
    }
    int alone = count_shapes(s, (int)big->kind, (int)big->colour) == 1;
    text_add(&b, "; the largest shape is %s %s %s %s.", alone ? "the" : article(colour), colour,
             kind, region_phrases[big->region]);
    int told = 0;   /* say where up to two other single shapes are */
    for (int g = 0; g < s->n_groups && told < 2; g++) {
        const samplegen_group *gr = &s->groups[g];
        if (gr->count != 1 || (gr->kind == big->kind && gr->colour == big->colour)) continue;
        text_add(&b, " The %s %s is %s.", shape_colours[gr->colour].name, kind_names[gr->kind],
                 region_phrases[group_shape(s, gr)->region]);
        told++;
    }
}

/* Every question that is true and unambiguous of the scene goes into a pool; a few are drawn. */
#define QA_POOL_MAX 64

typedef struct qa_pool {
    int n;
    samplegen_qa items[QA_POOL_MAX];
} qa_pool;

__attribute__((format(printf, 3, 4)))
static void qa_add(qa_pool *p, const char *answer, const char *fmt, ...)
{
    assert(p->n < QA_POOL_MAX);
    samplegen_qa *qa = &p->items[p->n++];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(qa->question, sizeof qa->question, fmt, ap);
    va_end(ap);
    assert(n > 0 && (size_t)n < sizeof qa->question);
    n = snprintf(qa->answer, sizeof qa->answer, "%s", answer);
    assert(n > 0 && (size_t)n < sizeof qa->answer);
}

static const char *yes_no(int truth) { return truth ? "yes" : "no"; }

static const char *number_text(int n, char *buf) { sprintf(buf, "%d", n); return buf; }

/* Counting questions, including one about a kind that is absent (answer 0). */
static void qa_counts(const samplegen_scene *s, qa_pool *p, rng *r)
{
    char num[16];
    qa_add(p, number_text(s->n_shapes, num), "How many shapes are there in the image?");
    int absent[SAMPLEGEN_KIND_COUNT], n_absent = 0;
    for (int k = 0; k < SAMPLEGEN_KIND_COUNT; k++) {
        int n = count_shapes(s, k, -1);
        if (n) qa_add(p, number_text(n, num), "How many %ss are there?", kind_names[k]);
        else absent[n_absent++] = k;
    }
    qa_add(p, "0", "How many %ss are there?", kind_names[absent[rng_below(r, n_absent)]]);
    for (int c = 0; c < SAMPLEGEN_COLOUR_COUNT; c++) {
        int n = count_shapes(s, -1, c);
        if (n)
            qa_add(p, number_text(n, num), "How many %s shapes are there?", shape_colours[c].name);
    }
    for (int g = 0; g < s->n_groups; g++)
        qa_add(p, number_text(s->groups[g].count, num), "How many %s %ss are in the image?",
               shape_colours[s->groups[g].colour].name, kind_names[s->groups[g].kind]);
}

/* "What colour is the X" when all X share one colour; "what shape" when a colour has one kind. */
static void qa_attributes(const samplegen_scene *s, qa_pool *p)
{
    for (int k = 0; k < SAMPLEGEN_KIND_COUNT; k++) {
        int n = count_shapes(s, k, -1), g = 0;
        for (; g < s->n_groups && s->groups[g].kind != (enum samplegen_kind)k; g++) {}
        if (!n || count_shapes(s, k, (int)s->groups[g].colour) != n) continue;
        const char *colour = shape_colours[s->groups[g].colour].name;
        if (n == 1) qa_add(p, colour, "What colour is the %s?", kind_names[k]);
        else qa_add(p, colour, "What colour are the %ss?", kind_names[k]);
    }
    for (int c = 0; c < SAMPLEGEN_COLOUR_COUNT; c++) {
        int n = count_shapes(s, -1, c), g = 0;
        for (; g < s->n_groups && s->groups[g].colour != (enum samplegen_colour)c; g++) {}
        if (!n || count_shapes(s, (int)s->groups[g].kind, c) != n) continue;
        char answer[32];
        snprintf(answer, sizeof answer, "%s%s", kind_names[s->groups[g].kind], n > 1 ? "s" : "");
        if (n == 1) qa_add(p, answer, "What shape is the %s object?", shape_colours[c].name);
        else qa_add(p, answer, "What shape are the %s objects?", shape_colours[c].name);
    }
    qa_add(p, backgrounds[s->background].name, "What colour is the background?");
    qa_add(p, texture_answers[s->texture], "What pattern does the background have?");
}

/* Where single shapes are: the grid cell, and left/right or upper/lower half when clear. */
static void qa_positions(const samplegen_scene *s, qa_pool *p)
{
    for (int g = 0; g < s->n_groups; g++) {
        const samplegen_group *gr = &s->groups[g];
        if (gr->count != 1) continue;
        const samplegen_shape *sh = group_shape(s, gr);
        const char *colour = shape_colours[gr->colour].name, *kind = kind_names[gr->kind];
        int row = (int)sh->region / 3, col = (int)sh->region % 3;
        qa_add(p, region_names[sh->region], "Where is the %s %s?", colour, kind);
        if (col != 1)
            qa_add(p, col == 0 ? "left" : "right",
                   "Is the %s %s on the left or on the right side of the image?", colour, kind);
        if (row != 1)
            qa_add(p, yes_no(row == 0), "Is the %s %s in the upper half of the image?", colour,
                   kind);
    }
}

/* Comparisons between groups: size of single shapes, and which group is more numerous. */
static void qa_comparisons(const samplegen_scene *s, qa_pool *p, rng *r)
{
    for (int i = 0; i < s->n_groups; i++)
        for (int j = i + 1; j < s->n_groups; j++) {
            const samplegen_group *a = &s->groups[i], *b = &s->groups[j];
            if (rng_below(r, 2)) {
                const samplegen_group *t = a; a = b; b = t;
            }
            const char *ca = shape_colours[a->colour].name, *ka = kind_names[a->kind];
            const char *cb = shape_colours[b->colour].name, *kb = kind_names[b->kind];
            qa_add(p, yes_no(a->count > b->count), "Are there more %s %ss than %s %ss?",
                   ca, ka, cb, kb);
            if (a->count != 1 || b->count != 1) continue;
            double area_a = group_shape(s, a)->area, area_b = group_shape(s, b)->area;
            if (fmax(area_a, area_b) < COMPARE_MARGIN * fmin(area_a, area_b)) continue;
            char answer[64];
            int first = area_a > area_b;
            snprintf(answer, sizeof answer, "the %s %s", first ? ca : cb, first ? ka : kb);
            qa_add(p, answer, "Which is larger, the %s %s or the %s %s?", ca, ka, cb, kb);
        }
}

/* Yes/no presence questions (one about an absent colour-kind pair), largest, same colour. */
static void qa_presence(const samplegen_scene *s, qa_pool *p, rng *r)
{
    for (int g = 0; g < s->n_groups; g++) {
        const char *colour = shape_colours[s->groups[g].colour].name;
        qa_add(p, "yes", "Is there %s %s %s in the image?", article(colour), colour,
               kind_names[s->groups[g].kind]);
    }
    int kind, colour;
    do {
        kind = rng_below(r, SAMPLEGEN_KIND_COUNT);
        colour = rng_below(r, SAMPLEGEN_COLOUR_COUNT);
    } while (count_shapes(s, kind, colour) > 0);
    const char *cname = shape_colours[colour].name;
    qa_add(p, "no", "Is there %s %s %s in the image?", article(cname), cname, kind_names[kind]);
    if (s->n_shapes < 2) return;
    const samplegen_shape *big = &s->shapes[s->largest];
    const char *bc = shape_colours[big->colour].name;
    char answer[64];
    snprintf(answer, sizeof answer, "%s %s %s",
             count_shapes(s, (int)big->kind, (int)big->colour) == 1 ? "the" : article(bc), bc,
             kind_names[big->kind]);
    qa_add(p, answer, "Which shape is the largest?");
    qa_add(p, yes_no(count_shapes(s, -1, (int)s->shapes[0].colour) == s->n_shapes),
           "Are all the shapes the same colour?");
}

void samplegen_scene_describe(const samplegen_scene *s, samplegen_text *t)
{
    rng r = rng_stream(s->seed, s->index, RNG_STREAM_TEXT);
    memset(t, 0, sizeof *t);
    t->instruction = caption_instructions[rng_below(&r, N_INSTRUCTIONS)];
    caption_write(s, t->caption, sizeof t->caption);

    qa_pool pool;
    pool.n = 0;
    qa_counts(s, &pool, &r);
    qa_attributes(s, &pool);
    qa_positions(s, &pool);
    qa_comparisons(s, &pool, &r);
    qa_presence(s, &pool, &r);
    int want = 3 + rng_below(&r, SAMPLEGEN_MAX_QA - 2);
    for (int k = 0; k < want && k < pool.n; k++) {   /* partial Fisher-Yates draw */
        int pick = k + rng_below(&r, pool.n - k);
        samplegen_qa chosen = pool.items[pick];
        pool.items[pick] = pool.items[k];
        t->qa[t->n_qa++] = chosen;
    }
}

/* ---- encoding ------------------------------------------------------------------------------- */

/* One per worker thread: the pixel buffer and both encoders' output buffers, reused. */
typedef struct encoder {
    tjhandle       tj;
    uint8_t       *rgb;         /* max_size * max_size * 3 */
    unsigned char *jpeg;
    unsigned long  jpeg_cap;    /* tjBufSize of the largest image: never reallocated */
    uint8_t       *png;
    size_t         png_len, png_cap;
} encoder;

static void encoder_close(encoder *e)
{
    if (e->tj) tjDestroy(e->tj);
    free(e->rgb);
    tjFree(e->jpeg);
    free(e->png);
    memset(e, 0, sizeof *e);
}

static int encoder_init(encoder *e, int max_size, adapt_error *err)
{
    memset(e, 0, sizeof *e);
    size_t pixels = (size_t)max_size * max_size;
    e->tj = tjInitCompress();
    e->rgb = malloc(pixels * 3);
    e->jpeg_cap = tjBufSize(max_size, max_size, TJSAMP_420);
    e->jpeg = tjAlloc((int)e->jpeg_cap);
    e->png_cap = pixels + 4096;
    e->png = malloc(e->png_cap);
    if (!e->tj || !e->rgb || !e->jpeg || !e->png) {
        encoder_close(e);
        return adapt_fail(err, ADAPT_ENOMEM, "out of memory for the image buffers of a %d-pixel "
                          "side; try a smaller --max-size or fewer --jobs", max_size);
    }
    return ADAPT_OK;
}

static int jpeg_encode(encoder *e, int size, int quality, const char *name, unsigned long *len,
                       adapt_error *err)
{
    *len = e->jpeg_cap;
    if (tjCompress2(e->tj, e->rgb, size, 0, size, TJPF_RGB, &e->jpeg, len, TJSAMP_420, quality,
                    TJFLAG_NOREALLOC) != 0)
        return adapt_fail(err, ADAPT_EIO, "encoding %s as JPEG: %s", name, tjGetErrorStr2(e->tj));
    return ADAPT_OK;
}

/* libpng reports errors by calling back; the message is kept and control jumps back to
 * png_encode, which turns it into an adapt_error. */
static void png_on_error(png_structp png, png_const_charp message)
{
    snprintf((char *)png_get_error_ptr(png), 200, "%s", message);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp message) { (void)png; (void)message; }

static void png_sink_write(png_structp png, png_bytep data, png_size_t len)
{
    encoder *e = png_get_io_ptr(png);
    if (e->png_len + len > e->png_cap) {
        size_t cap = 2 * (e->png_len + len);
        uint8_t *grown = realloc(e->png, cap);
        if (!grown) png_error(png, "out of memory for the encoded image");
        e->png = grown;
        e->png_cap = cap;
    }
    memcpy(e->png + e->png_len, data, len);
    e->png_len += len;
}

static void png_sink_flush(png_structp png) { (void)png; }

static int png_encode(encoder *e, int size, const char *name, adapt_error *err)
{
    char message[200] = "out of memory";
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, png_on_error,
                                              png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return adapt_fail(err, ADAPT_ENOMEM, "encoding %s as PNG: out of memory", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return adapt_fail(err, ADAPT_EIO, "encoding %s as PNG: %s", name, message);
    }
    e->png_len = 0;
    png_set_write_fn(png, e, png_sink_write, png_sink_flush);
    png_set_IHDR(png, info, (png_uint_32)size, (png_uint_32)size, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* Flat shapes on smooth backgrounds: the UP filter and a fast zlib level cost a third of
     * the default (all filters, level 6) for files about a third larger. */
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
    png_set_compression_level(png, 3);
    png_write_info(png, info);
    for (int y = 0; y < size; y++) png_write_row(png, e->rgb + (size_t)y * size * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return ADAPT_OK;
}

/* ---- files ---------------------------------------------------------------------------------- */

/* The longest name this module appends to the output directory, "images/NNNNNNNN.jpg" and the
 * partial marker included; samplegen_generate checks the directory's length against it once,
 * so that joining paths cannot truncate afterwards. */
#define NAME_ROOM 64

static void path_join(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_MAX, "%s/%s", dir, name);
    assert(n > 0 && n < PATH_MAX);
    (void)n;
}

static void sample_image_path(const samplegen_scene *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "images/%08ld.%s", s->index + 1, s->is_png ? "png" : "jpg");
}

static int file_write_new(const char *path, const void *data, size_t len, adapt_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return adapt_fail(err, ADAPT_EIO, "creating %s: %s", path, strerror(errno));
    if (file_io_write_all(fd, data, len) != 0) {
        int e = errno;
        close(fd);
        return adapt_fail(err, ADAPT_EIO, "writing %s: %s", path, strerror(e));
    }
    if (close(fd) != 0) return adapt_fail(err, ADAPT_EIO, "closing %s: %s", path, strerror(errno));
    return ADAPT_OK;
}

/* Paints, encodes and writes sample `index` under dir. */
static int sample_write(const samplegen_options *opt, const char *dir, long index, encoder *e,
                        samplegen_stats *stats, adapt_error *err)
{
    samplegen_scene scene;
    samplegen_scene_make(opt, index, &scene);
    char name[32], path[PATH_MAX];
    sample_image_path(&scene, name, sizeof name);
    path_join(path, dir, name);
    int rc = samplegen_scene_render(&scene, opt->antialias, e->rgb, err);
    if (rc) return rc;
    const void *bytes;
    size_t len;
    if (scene.is_png) {
        if ((rc = png_encode(e, scene.size, path, err))) return rc;
        bytes = e->png;
        len = e->png_len;
        stats->n_png++;
    } else {
        unsigned long jpeg_len;
        if ((rc = jpeg_encode(e, scene.size, opt->jpeg_quality, path, &jpeg_len, err))) return rc;
        bytes = e->jpeg;
        len = jpeg_len;
        stats->n_jpeg++;
    }
    stats->image_bytes += len;
    return file_write_new(path, bytes, len, err);
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void json_put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void json_put_turn(FILE *f, const char *from, const char *value, int first)
{
    fprintf(f, "%s{\"from\":\"%s\",\"value\":", first ? "" : ",", from);
    json_put_string(f, value);
    fputc('}', f);
}

/* One LLaVA record (the caption is the first gpt turn) and one caption JSONL line. */
static void json_put_sample(FILE *llava, FILE *captions, const samplegen_scene *s,
                            const samplegen_text *t)
{
    char image[32], id[24], prompt[96];
    sample_image_path(s, image, sizeof image);
    snprintf(id, sizeof id, "%08ld", s->index + 1);
    snprintf(prompt, sizeof prompt, "<image>\n%s", t->instruction);
    fputs("{\"id\":", llava);
    json_put_string(llava, id);
    fputs(",\"image\":", llava);
    json_put_string(llava, image);
    fputs(",\"conversations\":[", llava);
    json_put_turn(llava, "human", prompt, 1);
    json_put_turn(llava, "gpt", t->caption, 0);
    for (int i = 0; i < t->n_qa; i++) {
        json_put_turn(llava, "human", t->qa[i].question, 0);
        json_put_turn(llava, "gpt", t->qa[i].answer, 0);
    }
    fputs("]}", llava);

    fputs("{\"image\":", captions);
    json_put_string(captions, image);
    fputs(",\"caption\":", captions);
    json_put_string(captions, t->caption);
    fputs("}\n", captions);
}

/* Flushes, syncs and closes; any earlier write error shows up here through ferror. */
static int file_finish(FILE *f, const char *path, adapt_error *err)
{
    int bad = ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    return bad ? adapt_fail(err, ADAPT_EIO, "writing %s: %s", path, strerror(e)) : ADAPT_OK;
}

/* ---- the run: worker threads paint images while the calling thread writes the JSON ---------- */

typedef struct gen_run {
    const samplegen_options *opt;
    const char     *dir;          /* the .partial directory being filled */
    atomic_long     next;         /* first sample not yet claimed */
    atomic_int      stop;         /* set on the first failure anywhere */
    pthread_mutex_t lock;
    adapt_error     first_error;  /* under lock */
} gen_run;

typedef struct gen_worker {
    gen_run        *run;
    pthread_t       thread;
    samplegen_stats stats;
} gen_worker;

static void run_fail(gen_run *run, const adapt_error *e)
{
    pthread_mutex_lock(&run->lock);
    if (run->first_error.code == ADAPT_OK) run->first_error = *e;
    atomic_store(&run->stop, 1);
    pthread_mutex_unlock(&run->lock);
}

static int worker_loop(gen_worker *w, encoder *e, adapt_error *err)
{
    gen_run *run = w->run;
    while (!atomic_load(&run->stop)) {
        long first = atomic_fetch_add(&run->next, WORK_CHUNK);
        long last = first + WORK_CHUNK < run->opt->count ? first + WORK_CHUNK : run->opt->count;
        if (first >= last) break;
        for (long i = first; i < last; i++) {
            int rc = sample_write(run->opt, run->dir, i, e, &w->stats, err);
            if (rc) return rc;
        }
    }
    return ADAPT_OK;
}

static void *worker_main(void *arg)
{
    gen_worker *w = arg;
    adapt_error err;
    adapt_error_clear(&err);
    encoder e;
    if (encoder_init(&e, w->run->opt->max_size, &err) == ADAPT_OK) {
        worker_loop(w, &e, &err);
        encoder_close(&e);
    }
    if (err.code != ADAPT_OK) run_fail(w->run, &err);
    return NULL;
}

static int json_write_all(gen_run *run, adapt_error *err)
{
    char llava_path[PATH_MAX], captions_path[PATH_MAX];
    path_join(llava_path, run->dir, "llava.json");
    path_join(captions_path, run->dir, "captions.jsonl");
    FILE *llava = fopen(llava_path, "wxe");
    if (!llava) return adapt_fail(err, ADAPT_EIO, "creating %s: %s", llava_path, strerror(errno));
    FILE *captions = fopen(captions_path, "wxe");
    if (!captions) {
        int e = errno;
        fclose(llava);
        return adapt_fail(err, ADAPT_EIO, "creating %s: %s", captions_path, strerror(e));
    }
    fputs("[\n", llava);
    for (long i = 0; i < run->opt->count && !atomic_load(&run->stop); i++) {
        samplegen_scene scene;
        samplegen_text text;
        samplegen_scene_make(run->opt, i, &scene);
        samplegen_scene_describe(&scene, &text);
        if (i) fputs(",\n", llava);
        json_put_sample(llava, captions, &scene, &text);
    }
    fputs("\n]\n", llava);
    int rc = file_finish(llava, llava_path, err);
    int rc2 = file_finish(captions, captions_path, rc ? NULL : err);
    return rc ? rc : rc2;
}

/* ---- the output directory ------------------------------------------------------------------- */

static int out_dir_check(const char *out, adapt_error *err)
{
    struct stat st;
    if (stat(out, &st) != 0)
        return errno == ENOENT ? ADAPT_OK : adapt_fail(err, ADAPT_EIO, "checking --out %s: %s",
                                                       out, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return adapt_fail(err, ADAPT_EINVAL,
                          "--out %s exists and is not a directory; choose a new path", out);
    DIR *d = opendir(out);
    if (!d) return adapt_fail(err, ADAPT_EIO, "reading --out %s: %s", out, strerror(errno));
    struct dirent *ent;
    int empty = 1;
    while (empty && (ent = readdir(d)))
        empty = !strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..");
    closedir(d);
    if (!empty)
        return adapt_fail(err, ADAPT_EINVAL, "--out %s exists and is not empty; refusing to "
                          "overwrite it: choose a new directory or remove it", out);
    return ADAPT_OK;
}

static int name_is_image(const char *name)
{
    if (strlen(name) != 12) return 0;
    for (int i = 0; i < 8; i++)
        if (name[i] < '0' || name[i] > '9') return 0;
    return !strcmp(name + 8, ".jpg") || !strcmp(name + 8, ".png");
}

static int unlink_if_there(const char *path, adapt_error *err)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return adapt_fail(err, ADAPT_EIO, "removing %s: %s", path, strerror(errno));
    return ADAPT_OK;
}

/* Removes an unfinished output: only the files this module writes, so that a directory holding
 * anything else fails to go away instead of losing it. */
static int partial_remove(const char *dir, adapt_error *err)
{
    char images[PATH_MAX], path[PATH_MAX];
    path_join(images, dir, "images");
    DIR *d = opendir(images);
    if (d) {
        struct dirent *ent;
        while ((ent = readdir(d)))
            if (name_is_image(ent->d_name)) {
                path_join(path, images, ent->d_name);
                unlink(path);   /* a failure shows as rmdir failing below */
            }
        closedir(d);
    }
    const char *files[] = {"llava.json", "captions.jsonl", SAMPLEGEN_PARTIAL_MARKER};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        path_join(path, dir, files[i]);
        int rc = unlink_if_there(path, err);
        if (rc) return rc;
    }
    if ((rmdir(images) != 0 && errno != ENOENT) || rmdir(dir) != 0)
        return adapt_fail(err, ADAPT_EIO, "removing the unfinished output %s: %s (it holds files "
                          "that adaptctl data generate did not write; remove it by hand)",
                          dir, strerror(errno));
    return ADAPT_OK;
}

/* Makes the .partial directory, first clearing one left by an interrupted run (recognised by
 * its marker file), but never one that something else made. */
static int partial_prepare(const char *dir, adapt_error *err)
{
    char path[PATH_MAX];
    path_join(path, dir, SAMPLEGEN_PARTIAL_MARKER);
    struct stat st;
    if (lstat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode) || access(path, F_OK) != 0)
            return adapt_fail(err, ADAPT_EINVAL, "%s exists and is not an unfinished output of "
                              "adaptctl data generate; remove it or choose another --out", dir);
        int rc = partial_remove(dir, err);
        if (rc) return rc;
    } else if (errno != ENOENT) {
        return adapt_fail(err, ADAPT_EIO, "checking %s: %s", dir, strerror(errno));
    }
    if (mkdir(dir, 0755) != 0)
        return adapt_fail(err, ADAPT_EIO, "creating %s: %s", dir, strerror(errno));
    static const char note[] = "unfinished output of adaptctl data generate\n";
    int rc = file_write_new(path, note, sizeof note - 1, err);
    if (rc) return rc;
    path_join(path, dir, "images");
    if (mkdir(path, 0755) != 0)
        return adapt_fail(err, ADAPT_EIO, "creating %s: %s", path, strerror(errno));
    return ADAPT_OK;
}

/* Makes the finished output durable, then gives it its name: one syncfs flushes every image
 * at once (a fsync per file would cost more than writing them), then the rename is the commit. */
static int partial_commit(const char *dir, const char *out, adapt_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return adapt_fail(err, ADAPT_EIO, "flushing %s to disk: %s", dir, strerror(e));
    }
    close(fd);
    char path[PATH_MAX];
    path_join(path, dir, SAMPLEGEN_PARTIAL_MARKER);
    int rc = unlink_if_there(path, err);
    if (rc) return rc;
    if (rename(dir, out) != 0)
        return adapt_fail(err, ADAPT_EIO, "renaming %s to %s: %s", dir, out, strerror(errno));
    /* dirname, not file_io_parent_dir: out may end in '/', and its parent is wanted then too */
    memcpy(path, out, strlen(out) + 1);
    return file_io_fsync_dir(dirname(path), err);
}

/* Starts the workers, writes the JSON meanwhile, waits; returns the first failure of any. */
static int run_all(gen_run *run, samplegen_stats *stats, adapt_error *err)
{
    int jobs = run->opt->jobs, started = 0;
    gen_worker *workers = calloc((size_t)jobs, sizeof *workers);
    if (!workers) return adapt_fail(err, ADAPT_ENOMEM, "out of memory for %d workers", jobs);
    adapt_error e;
    adapt_error_clear(&e);
    for (; started < jobs; started++) {
        workers[started].run = run;
        int rc = pthread_create(&workers[started].thread, NULL, worker_main, &workers[started]);
        if (rc) {
            adapt_fail(&e, ADAPT_ENOMEM, "starting worker thread %d: %s", started + 1,
                       strerror(rc));
            run_fail(run, &e);
            break;
        }
    }
    if (json_write_all(run, &e) != ADAPT_OK) run_fail(run, &e);
    for (int i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        stats->n_jpeg += workers[i].stats.n_jpeg;
        stats->n_png += workers[i].stats.n_png;
        stats->image_bytes += workers[i].stats.image_bytes;
    }
    free(workers);
    if (run->first_error.code == ADAPT_OK) return ADAPT_OK;
    if (err) *err = run->first_error;
    return run->first_error.code;
}

int samplegen_generate(const samplegen_options *opt, samplegen_stats *stats, adapt_error *err)
{
    memset(stats, 0, sizeof *stats);
    int rc = samplegen_options_check(opt, err);
    if (rc) return rc;
    char out[PATH_MAX], dir[PATH_MAX];
    size_t len = strlen(opt->out_dir);
    while (len > 1 && opt->out_dir[len - 1] == '/') len--;   /* "out/" names "out" */
    if (len + sizeof ".partial" + NAME_ROOM > sizeof out)
        return adapt_fail(err, ADAPT_EINVAL, "--out %s: path too long", opt->out_dir);
    memcpy(out, opt->out_dir, len);
    out[len] = '\0';
    memcpy(dir, out, len);
    memcpy(dir + len, ".partial", sizeof ".partial");
    if ((rc = out_dir_check(out, err)) || (rc = partial_prepare(dir, err))) return rc;

    gen_run run = {.opt = opt, .dir = dir};
    atomic_init(&run.next, 0);
    atomic_init(&run.stop, 0);
    pthread_mutex_init(&run.lock, NULL);
    rc = run_all(&run, stats, err);
    pthread_mutex_destroy(&run.lock);
    if (rc == ADAPT_OK) rc = partial_commit(dir, out, err);
    if (rc) partial_remove(dir, NULL);   /* best effort: a leftover is cleared by the next run */
    return rc;
}
