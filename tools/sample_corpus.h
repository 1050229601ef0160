/* sample_corpus: the embedded sample corpus generator behind `adaptctl data generate`.
 *
 * It draws synthetic images of coloured shapes on plain or textured backgrounds, writes them as
 * real PNG and JPEG files, and describes each one with a caption and question-answer pairs that
 * are true of its pixels, in the LLaVA JSON layout (OUT/images/, OUT/llava.json) plus a plain
 * caption JSONL (OUT/captions.jsonl).
 *
 * The one design idea: every sample is a pure function of (seed, index, options). Each sample
 * draws its scene and its text from random streams of its own, so the output is byte-identical
 * for any number of threads, the JSON writer re-derives each scene instead of collecting text
 * from the image workers, and a test can rebuild any scene and check it against the pixels. */
#ifndef ADAPT_SAMPLE_CORPUS_H
#define ADAPT_SAMPLE_CORPUS_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define SAMPLEGEN_COUNT_MIN    100
#define SAMPLEGEN_COUNT_MAX    100000
#define SAMPLEGEN_SIZE_MIN     64
#define SAMPLEGEN_SIZE_MAX     4096
#define SAMPLEGEN_JOBS_MAX     256
#define SAMPLEGEN_MAX_GROUPS   3     /* distinct (colour, kind) groups in one scene */
#define SAMPLEGEN_MAX_PER_GROUP 3
#define SAMPLEGEN_MAX_SHAPES   (SAMPLEGEN_MAX_GROUPS * SAMPLEGEN_MAX_PER_GROUP)
#define SAMPLEGEN_MAX_QA       6     /* question-answer pairs after the caption turn */
#define SAMPLEGEN_STAR_POINTS  5
/* The file that marks OUT.partial as an unfinished run of this generator: a later run may clear
 * such a directory, and no other. */
#define SAMPLEGEN_PARTIAL_MARKER ".adaptctl-generate-partial"

enum samplegen_format {
    SAMPLEGEN_FORMAT_JPEG,
    SAMPLEGEN_FORMAT_PNG,
    SAMPLEGEN_FORMAT_MIXED,   /* each sample picks one from its own random stream */
};

enum samplegen_kind {
    SAMPLEGEN_KIND_CIRCLE,
    SAMPLEGEN_KIND_SQUARE,
    SAMPLEGEN_KIND_TRIANGLE,  /* isosceles, apex up, as wide as it is tall */
    SAMPLEGEN_KIND_STAR,      /* five points, one up */
    SAMPLEGEN_KIND_ELLIPSE,   /* axis-aligned, one axis 1.6 to 2 times the other */
    SAMPLEGEN_KIND_RECTANGLE, /* axis-aligned, one side 1.6 to 2 times the other */
    SAMPLEGEN_KIND_COUNT,
};

/* Saturated colours only, with hues at least 20 degrees apart, so that no background tone and
 * no antialiased edge can be read as a shape colour. */
enum samplegen_colour {
    SAMPLEGEN_COLOUR_RED,
    SAMPLEGEN_COLOUR_ORANGE,
    SAMPLEGEN_COLOUR_YELLOW,
    SAMPLEGEN_COLOUR_GREEN,
    SAMPLEGEN_COLOUR_CYAN,
    SAMPLEGEN_COLOUR_BLUE,
    SAMPLEGEN_COLOUR_PURPLE,
    SAMPLEGEN_COLOUR_PINK,
    SAMPLEGEN_COLOUR_COUNT,
};

enum samplegen_texture {
    SAMPLEGEN_TEXTURE_PLAIN,
    SAMPLEGEN_TEXTURE_STRIPES,
    SAMPLEGEN_TEXTURE_CHECKER,
    SAMPLEGEN_TEXTURE_NOISE_GRADIENT,
    SAMPLEGEN_TEXTURE_COUNT,
};

/* The image is cut into a 3x3 grid; a shape is where its centroid is. Row-major. */
enum samplegen_region {
    SAMPLEGEN_REGION_TOP_LEFT,    SAMPLEGEN_REGION_TOP,    SAMPLEGEN_REGION_TOP_RIGHT,
    SAMPLEGEN_REGION_LEFT,        SAMPLEGEN_REGION_CENTER, SAMPLEGEN_REGION_RIGHT,
    SAMPLEGEN_REGION_BOTTOM_LEFT, SAMPLEGEN_REGION_BOTTOM, SAMPLEGEN_REGION_BOTTOM_RIGHT,
    SAMPLEGEN_REGION_COUNT,
};

typedef struct samplegen_options {
    const char *out_dir;          /* must not exist, or be an empty directory */
    long count;                   /* SAMPLEGEN_COUNT_MIN .. SAMPLEGEN_COUNT_MAX */
    uint64_t seed;
    int min_size, max_size;       /* square side in pixels, drawn per sample in [min, max] */
    enum samplegen_format format;
    int jpeg_quality;             /* 1 .. 100 */
    int jobs;                     /* worker threads; the output does not depend on it */
    int antialias;                /* 0: hard edges */
} samplegen_options;

typedef struct samplegen_shape {
    enum samplegen_kind kind;
    enum samplegen_colour colour;
    double cx, cy;                /* construction centre, pixels from the top-left corner */
    double rx, ry;                /* half width and half height (stars: outer radius in both) */
    double x0, y0, x1, y1;        /* bounding box */
    double area;                  /* exact, in square pixels */
    double centroid_x, centroid_y;
    enum samplegen_region region; /* of the centroid */
} samplegen_shape;

typedef struct samplegen_group {
    enum samplegen_kind kind;
    enum samplegen_colour colour;
    int count;                    /* 1 .. SAMPLEGEN_MAX_PER_GROUP */
} samplegen_group;

typedef struct samplegen_scene {
    uint64_t seed;
    long index;                   /* 0-based; the file is images/%08ld.ext of index + 1 */
    int size;                     /* width == height */
    int is_png;
    int background;               /* index into the background tone table */
    enum samplegen_texture texture;
    int texture_period;           /* stripes and checker: pixels; noise: lattice cell */
    int texture_direction;        /* 0 horizontal, 1 vertical, 2 and 3 the diagonals */
    uint64_t texture_seed;
    int n_groups;                 /* groups in caption order: most numerous first */
    samplegen_group groups[SAMPLEGEN_MAX_GROUPS];
    int n_shapes;
    samplegen_shape shapes[SAMPLEGEN_MAX_SHAPES];
    int largest;                  /* index in shapes; at least 1.3 times the area of any other */
} samplegen_scene;

typedef struct samplegen_qa {
    char question[160];
    char answer[64];
} samplegen_qa;

typedef struct samplegen_text {
    const char *instruction;      /* the human turn that asks for the caption (static string) */
    char caption[640];
    int n_qa;
    samplegen_qa qa[SAMPLEGEN_MAX_QA];
} samplegen_text;

typedef struct samplegen_stats {
    long n_jpeg, n_png;
    uint64_t image_bytes;
} samplegen_stats;

void samplegen_options_init(samplegen_options *opt);
/* Checks ranges; an error names the option as the command line spells it. */
int samplegen_options_check(const samplegen_options *opt, adapt_error *err);

/* The scene of sample `index`, drawn only from (opt->seed, index) and the size and format
 * options. */
void samplegen_scene_make(const samplegen_options *opt, long index, samplegen_scene *scene);
/* Paints the scene into rgb (size * size * 3 bytes, rows top to bottom). */
int samplegen_scene_render(const samplegen_scene *scene, int antialias, uint8_t *rgb,
                           adapt_error *err);
/* Caption, caption instruction and question-answer pairs, all derived from the scene. */
void samplegen_scene_describe(const samplegen_scene *scene, samplegen_text *text);

/* Writes the whole corpus into opt->out_dir, by way of opt->out_dir + ".partial". */
int samplegen_generate(const samplegen_options *opt, samplegen_stats *stats, adapt_error *err);

const char *samplegen_kind_name(enum samplegen_kind kind);
const char *samplegen_colour_name(enum samplegen_colour colour);
const char *samplegen_region_name(enum samplegen_region region);   /* "top left", "center" */
const char *samplegen_texture_name(enum samplegen_texture texture);

#endif
