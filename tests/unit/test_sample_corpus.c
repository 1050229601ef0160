/* test_sample_corpus: the promises of `adaptctl data generate` (tools/sample_corpus.c): same seed
 * and options give the same bytes for any --jobs; the images are real PNG and JPEG files of the
 * stated size; captions and answers are true of the pixels; the LLaVA layout; clear usage errors.
 *
 * The one design idea: truth is checked from decoded PNG pixels alone, with this file's own
 * notion of what "red" or "a star" looks like (hue windows; how much of its bounding box a
 * shape fills), never from the generator's scene records, so the generator's bookkeeping cannot
 * vouch for itself. */
#include "check.h"
#include "../../tools/commands.h"
#include "../../tools/sample_corpus.h"

#include <cJSON.h>
#include <png.h>
#include <turbojpeg.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files and runs -------------------------------------------------------------------------- */

static char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) data[n] = '\0';
    if (len) *len = (size_t)n;
    return data;
}

static int path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void tree_remove(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs `adaptctl data generate ARGS...` in-process; stderr is caught into `errors`. */
static int generate(char *errors, size_t cap, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"generate";
    for (; args[argc - 1]; argc++) argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;
    char capture[] = "/tmp/adaptd-samplegen-stderr-XXXXXX";
    int fd = mkstemp(capture);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    int rc = cmd_data_generate(argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, errors, cap - 1, 0);
    errors[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(capture);
    if (errors[0]) fprintf(stderr, "  generate said: %s", errors);
    return rc;
}

/* Every file of dir b is in dir a with the same bytes, and the other way round. */
static int dirs_identical(const char *a, const char *b)
{
    const char *top[] = {"llava.json", "captions.jsonl"};
    char pa[PATH_MAX], pb[PATH_MAX];
    for (int i = 0; i < 2; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, top[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, top[i]);
        size_t la, lb;
        char *da = file_read(pa, &la), *db = file_read(pb, &lb);
        int same = da && db && la == lb && !memcmp(da, db, la);
        free(da);
        free(db);
        if (!same) return 0;
    }
    int files[2] = {0, 0};
    for (int side = 0; side < 2; side++) {
        snprintf(pa, sizeof pa, "%s/images", side ? b : a);
        DIR *d = opendir(pa);
        if (!d) return 0;
        struct dirent *ent;
        while ((ent = readdir(d))) {
            if (ent->d_name[0] == '.') continue;
            files[side]++;
            if (side) continue;
            char fa[PATH_MAX + 300], fb[PATH_MAX + 300];
            snprintf(fa, sizeof fa, "%s/images/%s", a, ent->d_name);
            snprintf(fb, sizeof fb, "%s/images/%s", b, ent->d_name);
            size_t la, lb;
            char *da = file_read(fa, &la), *db = file_read(fb, &lb);
            int same = da && db && la == lb && !memcmp(da, db, la);
            free(da);
            free(db);
            if (!same) {
                closedir(d);
                return 0;
            }
        }
        closedir(d);
    }
    return files[0] == files[1] && files[0] > 0;
}

/* ---- decoding -------------------------------------------------------------------------------- */

static uint8_t *png_load(const char *path, int *width, int *height)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path)) return NULL;
    image.format = PNG_FORMAT_RGB;
    uint8_t *rgb = malloc(PNG_IMAGE_SIZE(image));
    if (!rgb || !png_image_finish_read(&image, NULL, rgb, 0, NULL)) {
        png_image_free(&image);
        free(rgb);
        return NULL;
    }
    *width = (int)image.width;
    *height = (int)image.height;
    return rgb;
}

static uint8_t *jpeg_load(const char *path, int *width, int *height)
{
    size_t len;
    char *data = file_read(path, &len);
    tjhandle tj = tjInitDecompress();
    uint8_t *rgb = NULL;
    int subsamp, colorspace;
    if (data && tj &&
        !tjDecompressHeader3(tj, (unsigned char *)data, len, width, height, &subsamp,
                             &colorspace)) {
        rgb = malloc((size_t)*width * *height * 3);
        if (rgb && tjDecompress2(tj, (unsigned char *)data, len, rgb, *width, 0, *height,
                                 TJPF_RGB, 0)) {
            free(rgb);
            rgb = NULL;
        }
    }
    if (tj) tjDestroy(tj);
    free(data);
    return rgb;
}

/* ---- what the pixels show -------------------------------------------------------------------- */

/* The vocabulary the captions must use, in this file's own order. */
static const char *const colour_words[] = {"red", "orange", "yellow", "green", "cyan", "blue",
                                           "purple", "pink"};
static const int hue_upper[] = {16, 42, 90, 156, 206, 253, 302, 345};   /* red wraps past 345 */
#define N_COLOURS 8
static const char *const kind_words[] = {"circle", "square", "triangle", "star", "ellipse",
                                         "rectangle"};
#define N_KINDS 6
enum { K_CIRCLE, K_SQUARE, K_TRIANGLE, K_STAR, K_ELLIPSE, K_RECTANGLE };
static const char *const region_words[] = {"top left", "top", "top right", "left", "center",
                                           "right", "bottom left", "bottom", "bottom right"};
static const char *const region_phrase_words[] = {
    "in the top left", "at the top", "in the top right", "on the left", "in the center",
    "on the right", "in the bottom left", "at the bottom", "in the bottom right"};
static const char *const number_word_list[] = {"zero", "one", "two", "three", "four", "five",
                                               "six", "seven", "eight", "nine", "ten"};

static int word_find(const char *const *table, int n, const char *word)
{
    for (int i = 0; i < n; i++)
        if (!strcasecmp(table[i], word)) return i;
    return -1;
}

/* A saturated pixel's colour by hue, or -1 for background and soft edges. */
static int pixel_colour(const uint8_t *p)
{
    int r = p[0], g = p[1], b = p[2];
    int max = r > g ? (r > b ? r : b) : (g > b ? g : b);
    int min = r < g ? (r < b ? r : b) : (g < b ? g : b);
    if (max < 80 || (max - min) < 0.45 * max) return -1;
    double d = max - min, hue;
    if (max == r) hue = 60 * (g - b) / d;
    else if (max == g) hue = 120 + 60 * (b - r) / d;
    else hue = 240 + 60 * (r - g) / d;
    if (hue < 0) hue += 360;
    for (int c = 0; c < N_COLOURS; c++)
        if (hue < hue_upper[c]) return c;
    return 0;
}

typedef struct blob {
    int colour, kind;
    long pixels;
    int x0, y0, x1, y1;       /* inclusive */
    double cx, cy;            /* centroid of pixel centres */
} blob;

typedef struct picture {
    int size;
    int n;
    blob blobs[32];
} picture;

/* Which shape a blob is, from how much of its box it fills and how long the box is; a triangle
 * and a star (both point up) differ also at the bottom: a triangle's middle column reaches its
 * base, a star's stops at the notch between its two lower points. `colour`: pixel colours. */
static int blob_kind(const blob *b, const signed char *colour, int size)
{
    int w = b->x1 - b->x0 + 1, h = b->y1 - b->y0 + 1;
    double fill = (double)b->pixels / ((double)w * h);
    double aspect = (double)(w > h ? w : h) / (w > h ? h : w);
    if (aspect > 1.3) return fill > 0.88 ? K_RECTANGLE : K_ELLIPSE;
    if (fill > 0.88) return K_SQUARE;
    if (fill > 0.64) return K_CIRCLE;
    int mid = (b->x0 + b->x1) / 2, y = b->y1;
    while (y > b->y0 && colour[(size_t)y * size + mid] != b->colour) y--;
    int notch = b->y1 - y >= 2;   /* the middle column stops short of the bottom */
    if (!notch && fill > 0.40) return K_TRIANGLE;   /* 0.5 when large */
    if (notch && fill < 0.50) return K_STAR;        /* 0.34 when large, more when small */
    return -1;   /* neither: a shape this file cannot name */
}

static int region_at(double x, double y, int size)
{
    int col = x < size / 3.0 ? 0 : x < 2 * size / 3.0 ? 1 : 2;
    int row = y < size / 3.0 ? 0 : y < 2 * size / 3.0 ? 1 : 2;
    return row * 3 + col;
}

/* Grows the blob of one colour from `start` (4-neighbours), marking its pixels in `seen`. */
static blob blob_grow(const signed char *colour, unsigned char *seen, int *stack, int size,
                      int start)
{
    blob b = {colour[start], 0, 0, size, size, -1, -1, 0, 0};
    int top = 0;
    stack[top++] = start;
    seen[start] = 1;
    while (top) {
        int p = stack[--top], x = p % size, y = p / size;
        b.pixels++;
        b.cx += x + 0.5;
        b.cy += y + 0.5;
        if (x < b.x0) b.x0 = x;
        if (x > b.x1) b.x1 = x;
        if (y < b.y0) b.y0 = y;
        if (y > b.y1) b.y1 = y;
        int next[4] = {x > 0 ? p - 1 : -1, x < size - 1 ? p + 1 : -1, y > 0 ? p - size : -1,
                       y < size - 1 ? p + size : -1};
        for (int k = 0; k < 4; k++)
            if (next[k] >= 0 && !seen[next[k]] && colour[next[k]] == b.colour) {
                seen[next[k]] = 1;
                stack[top++] = next[k];
            }
    }
    b.cx /= (double)b.pixels;
    b.cy /= (double)b.pixels;
    return b;
}

/* Connected regions of one colour; specks under 24 pixels are antialiasing noise. */
static void picture_analyse(const uint8_t *rgb, int size, picture *pic)
{
    size_t npix = (size_t)size * size;
    signed char *colour = malloc(npix);
    unsigned char *seen = calloc(npix, 1);
    int *stack = malloc(npix * sizeof *stack);
    for (size_t i = 0; i < npix; i++) colour[i] = (signed char)pixel_colour(rgb + 3 * i);
    pic->size = size;
    pic->n = 0;
    for (size_t start = 0; start < npix; start++) {
        if (colour[start] < 0 || seen[start]) continue;
        blob b = blob_grow(colour, seen, stack, size, (int)start);
        if (b.pixels < 24) continue;
        b.kind = blob_kind(&b, colour, size);
        CHECK_MSG(b.kind >= 0, "a %s blob of %ld pixels in a %dx%d box at (%d, %d) that is no "
                  "known shape", colour_words[b.colour], b.pixels, b.x1 - b.x0 + 1, b.y1 - b.y0 + 1,
                  b.x0, b.y0);
        CHECK_MSG(pic->n < 32, "more blobs than any scene has");
        if (pic->n < 32) pic->blobs[pic->n++] = b;
    }
    free(colour);
    free(seen);
    free(stack);
}

/* Whether blob b is of this colour and kind; -1 matches any. */
static int blob_is(const blob *b, int colour, int kind)
{
    return (colour < 0 || b->colour == colour) && (kind < 0 || b->kind == kind);
}

static int picture_count(const picture *pic, int colour, int kind)
{
    int n = 0;
    for (int i = 0; i < pic->n; i++) n += blob_is(&pic->blobs[i], colour, kind);
    return n;
}

static const blob *picture_only(const picture *pic, int colour, int kind)
{
    const blob *found = NULL;
    for (int i = 0; i < pic->n; i++)
        if (blob_is(&pic->blobs[i], colour, kind)) {
            if (found) return NULL;
            found = &pic->blobs[i];
        }
    return found;
}

static const blob *picture_largest(const picture *pic)
{
    const blob *best = NULL;
    for (int i = 0; i < pic->n; i++)
        if (!best || pic->blobs[i].pixels > best->pixels) best = &pic->blobs[i];
    return best;
}

/* ---- reading the text ------------------------------------------------------------------------ */

#define WORD_MAX 24

/* Matches text against a pattern whose "%w" stand for one lower-case word each; returns the
 * number of words captured, or -1. */
static int match(const char *text, const char *pattern, char words[][WORD_MAX])
{
    int n = 0;
    while (*pattern) {
        if (pattern[0] == '%' && pattern[1] == 'w') {
            size_t len = 0;
            while (*text >= 'a' && *text <= 'z' && len + 1 < WORD_MAX) words[n][len++] = *text++;
            if (!len) return -1;
            words[n++][len] = '\0';
            pattern += 2;
        } else if (*pattern++ != *text++) {
            return -1;
        }
    }
    return *text ? -1 : n;
}

/* A kind word, singular or (when plural) with its "s"; -1 when it is not one. */
static int kind_parse(const char *word, int plural)
{
    char base[WORD_MAX];
    size_t len = strlen(word);
    if (plural) {
        if (len < 2 || word[len - 1] != 's') return -1;
        len--;
    }
    snprintf(base, sizeof base, "%.*s", (int)len, word);
    return word_find(kind_words, N_KINDS, base);
}

/* The region phrase at the start of text, followed by '.'; returns the region and moves text. */
static int region_phrase_parse(const char **text)
{
    for (int r = 0; r < 9; r++) {
        size_t len = strlen(region_phrase_words[r]);
        if (!strncmp(*text, region_phrase_words[r], len) && (*text)[len] == '.') {
            *text += len + 1;
            return r;
        }
    }
    return -1;
}

typedef struct truth_tally {
    long captions, answers;
    int kinds_seen[N_KINDS], colours_seen[N_COLOURS];
} truth_tally;

/* "Three red circles, two green stars and one blue square on a ..." against the blobs. */
static void caption_check_groups(const char *caption, const picture *pic, const char *name,
                                 truth_tally *tally)
{
    const char *end = strstr(caption, " on a ");
    CHECK_MSG(end != NULL, "%s: caption without ' on a ': %s", name, caption);
    if (!end) return;
    int stated[N_COLOURS][N_KINDS] = {{0}}, total = 0;
    char list[256];
    snprintf(list, sizeof list, "%.*s", (int)(end - caption), caption);
    char *save = NULL, *word[3];
    int k = 0;
    for (char *w = strtok_r(list, " ,", &save); w; w = strtok_r(NULL, " ,", &save)) {
        if (!strcmp(w, "and")) continue;
        word[k++] = w;
        if (k < 3) continue;
        k = 0;
        int count = word_find(number_word_list, 11, word[0]);
        int colour = word_find(colour_words, N_COLOURS, word[1]);
        int kind = kind_parse(word[2], count > 1);
        CHECK_MSG(count > 0 && colour >= 0 && kind >= 0, "%s: cannot read '%s %s %s' in: %s", name,
                  word[0], word[1], word[2], caption);
        if (count <= 0 || colour < 0 || kind < 0) return;
        stated[colour][kind] += count;
        total += count;
        tally->kinds_seen[kind] = tally->colours_seen[colour] = 1;
    }
    CHECK_MSG(k == 0 && total > 0, "%s: shape list does not parse: %s", name, caption);
    CHECK_MSG(total == pic->n, "%s: caption says %d shapes, the pixels hold %d: %s", name, total,
              pic->n, caption);
    for (int c = 0; c < N_COLOURS; c++)
        for (int s = 0; s < N_KINDS; s++)
            CHECK_MSG(stated[c][s] == picture_count(pic, c, s), "%s: caption says %d %s %s, the "
                      "pixels hold %d: %s", name, stated[c][s], colour_words[c], kind_words[s],
                      picture_count(pic, c, s), caption);
}

/* "(the|a|an) COLOUR KIND": the article fits the count, and the blob it names is `b` (when
 * given). */
static int shape_words_check(const char *article, const char *colour_w, const char *kind_w,
                             const picture *pic, const blob *b, const char *name, const char *text)
{
    int colour = word_find(colour_words, N_COLOURS, colour_w), kind = kind_parse(kind_w, 0);
    int n = colour >= 0 && kind >= 0 ? picture_count(pic, colour, kind) : -1;
    int vowel = strchr("aeiou", colour_w[0]) != NULL;
    int article_ok = !strcmp(article, "the") ? n == 1
                   : !strcmp(article, vowel ? "an" : "a") && n > 1;
    CHECK_MSG(n > 0 && article_ok, "%s: '%s %s %s' does not fit the pixels (%d such shapes): %s",
              name, article, colour_w, kind_w, n, text);
    if (b) CHECK_MSG(b->colour == colour && b->kind == kind, "%s: it is a %s %s, not '%s %s': %s",
                     name, colour_words[b->colour], kind_words[b->kind], colour_w, kind_w, text);
    return n > 0 && article_ok;
}

/* "; the largest shape is a blue square in the top left. The green star is at the bottom." */
static void caption_check_places(const char *caption, const picture *pic, const char *name)
{
    const char *rest = strstr(caption, " background; ");
    CHECK_MSG(rest != NULL, "%s: caption lacks ' background; ': %s", name, caption);
    if (!rest) return;
    rest += strlen(" background; ");
    char w[4][WORD_MAX];
    const blob *big = picture_largest(pic);
    CHECK_MSG(big != NULL, "%s: no shape in the pixels: %s", name, caption);
    if (!big) return;
    int one = pic->n == 1;
    const char *pattern = one ? "the %w %w is " : "the largest shape is %w %w %w ";
    char head[128];
    const char *space = rest;
    for (int words = one ? 4 : 7; words > 0 && space; words--) space = strchr(space + 1, ' ');
    CHECK_MSG(space != NULL, "%s: caption ends early: %s", name, caption);
    if (!space) return;
    snprintf(head, sizeof head, "%.*s", (int)(space - rest + 1), rest);
    int n = match(head, pattern, w);
    CHECK_MSG(n == (one ? 2 : 3), "%s: cannot read the largest shape in: %s", name, caption);
    if (n < 2) return;
    if (one) shape_words_check("the", w[0], w[1], pic, big, name, caption);
    else shape_words_check(w[0], w[1], w[2], pic, big, name, caption);
    for (int i = 0; i < pic->n; i++)
        if (&pic->blobs[i] != big)
            CHECK_MSG(pic->blobs[i].pixels * 1.15 < big->pixels, "%s: the largest shape is not "
                      "clearly the largest (%ld vs %ld pixels)", name, big->pixels,
                      pic->blobs[i].pixels);
    rest = space + 1;
    int region = region_phrase_parse(&rest);
    CHECK_MSG(region >= 0 && region == region_at(big->cx, big->cy, pic->size), "%s: the largest "
              "shape is in the %s, not as stated: %s", name,
              region_words[region_at(big->cx, big->cy, pic->size)], caption);
    while (*rest) {   /* " The COLOUR KIND is PHRASE." */
        space = rest;
        for (int words = 4; words > 0 && space; words--) space = strchr(space + 1, ' ');
        CHECK_MSG(space != NULL, "%s: caption ends early: %s", name, caption);
        if (!space) return;
        snprintf(head, sizeof head, "%.*s", (int)(space - rest + 1), rest);
        CHECK_MSG(match(head, " The %w %w is ", w) == 2, "%s: cannot read '%s' in: %s", name,
                  head, caption);
        int colour = word_find(colour_words, N_COLOURS, w[0]), kind = kind_parse(w[1], 0);
        const blob *b = picture_only(pic, colour, kind);
        rest = space + 1;
        region = region_phrase_parse(&rest);
        CHECK_MSG(b && region >= 0 && region == region_at(b->cx, b->cy, pic->size),
                  "%s: '%s' is not where the pixels put it: %s", name, head, caption);
        if (!b || region < 0) return;
    }
}

static const char *yes_no(int truth) { return truth ? "yes" : "no"; }

static int number_is(const char *answer, int n)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%d", n);
    return !strcmp(answer, buf);
}

/* Count questions; returns 1 when q was one and its answer was checked. */
static int qa_check_counts(const char *q, const char *a, const picture *pic, const char *name)
{
    char w[4][WORD_MAX];
    int colour, kind;
    if (match(q, "How many shapes are there in the image?", w) == 0) {
        CHECK_MSG(number_is(a, pic->n), "%s: '%s' -> '%s', the pixels hold %d", name, q, a, pic->n);
        return 1;
    }
    if (match(q, "How many %w shapes are there?", w) == 1) {
        colour = word_find(colour_words, N_COLOURS, w[0]);
        CHECK_MSG(colour >= 0 && number_is(a, picture_count(pic, colour, -1)), "%s: '%s' -> '%s'",
                  name, q, a);
        return 1;
    }
    if (match(q, "How many %w are there?", w) == 1) {
        kind = kind_parse(w[0], 1);
        CHECK_MSG(kind >= 0 && number_is(a, picture_count(pic, -1, kind)), "%s: '%s' -> '%s'",
                  name, q, a);
        return 1;
    }
    if (match(q, "How many %w %w are in the image?", w) == 2) {
        colour = word_find(colour_words, N_COLOURS, w[0]);
        kind = kind_parse(w[1], 1);
        CHECK_MSG(colour >= 0 && kind >= 0 && number_is(a, picture_count(pic, colour, kind)),
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    if (match(q, "Are there more %w %w than %w %w?", w) == 4) {
        int ca = word_find(colour_words, N_COLOURS, w[0]), ka = kind_parse(w[1], 1);
        int cb = word_find(colour_words, N_COLOURS, w[2]), kb = kind_parse(w[3], 1);
        CHECK_MSG(ca >= 0 && ka >= 0 && cb >= 0 && kb >= 0 &&
                  !strcmp(a, yes_no(picture_count(pic, ca, ka) > picture_count(pic, cb, kb))),
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    return 0;
}

/* Where single shapes are. */
static int qa_check_positions(const char *q, const char *a, const picture *pic, const char *name)
{
    char w[4][WORD_MAX];
    int kind = -1, colour = -1, form = 0;
    if (match(q, "Where is the %w %w?", w) == 2) form = 1;
    else if (match(q, "Is the %w %w on the left or on the right side of the image?", w) == 2)
        form = 2;
    else if (match(q, "Is the %w %w in the upper half of the image?", w) == 2) form = 3;
    if (!form) return 0;
    colour = word_find(colour_words, N_COLOURS, w[0]);
    kind = kind_parse(w[1], 0);
    const blob *b = colour >= 0 && kind >= 0 ? picture_only(pic, colour, kind) : NULL;
    CHECK_MSG(b != NULL, "%s: '%s' is not about one shape of the pixels", name, q);
    if (!b) return 1;
    int region = region_at(b->cx, b->cy, pic->size);
    const char *want = form == 1 ? region_words[region]
                     : form == 2 ? (region % 3 == 0 ? "left" : region % 3 == 2 ? "right" : "-")
                                 : yes_no(b->cy < pic->size / 2.0);
    CHECK_MSG(!strcmp(a, want), "%s: '%s' -> '%s', the pixels say '%s'", name, q, a, want);
    return 1;
}

/* Colours, kinds, presence, size comparisons. */
static int qa_check_attributes(const char *q, const char *a, const picture *pic, const char *name)
{
    char w[5][WORD_MAX], aw[3][WORD_MAX];
    if (match(q, "Is there %w %w %w in the image?", w) == 3) {
        int colour = word_find(colour_words, N_COLOURS, w[1]), kind = kind_parse(w[2], 0);
        CHECK_MSG(colour >= 0 && kind >= 0 &&
                  !strcmp(a, yes_no(picture_count(pic, colour, kind) > 0)),
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    if (match(q, "Which shape is the largest?", w) == 0) {
        CHECK_MSG(match(a, "%w %w %w", aw) == 3 &&
                  shape_words_check(aw[0], aw[1], aw[2], pic, picture_largest(pic), name, a),
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    if (match(q, "Which is larger, the %w %w or the %w %w?", w) == 4) {
        int cx = word_find(colour_words, N_COLOURS, w[0]), kx = kind_parse(w[1], 0);
        int cy = word_find(colour_words, N_COLOURS, w[2]), ky = kind_parse(w[3], 0);
        const blob *x = cx >= 0 && kx >= 0 ? picture_only(pic, cx, kx) : NULL;
        const blob *y = cy >= 0 && ky >= 0 ? picture_only(pic, cy, ky) : NULL;
        const blob *big = x && y ? (x->pixels > y->pixels ? x : y) : NULL;
        CHECK_MSG(big && match(a, "the %w %w", aw) == 2 &&
                  word_find(colour_words, N_COLOURS, aw[0]) == big->colour &&
                  kind_parse(aw[1], 0) == big->kind, "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    int plural = match(q, "What colour are the %w?", w) == 1;
    if (plural || match(q, "What colour is the %w?", w) == 1) {
        int kind = kind_parse(w[0], plural), colour = word_find(colour_words, N_COLOURS, a);
        int n = picture_count(pic, -1, kind);
        CHECK_MSG(kind >= 0 && colour >= 0 && n == picture_count(pic, colour, kind) &&
                  (n > 1) == plural,
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    plural = match(q, "What shape are the %w objects?", w) == 1;
    if (plural || match(q, "What shape is the %w object?", w) == 1) {
        int colour = word_find(colour_words, N_COLOURS, w[0]), kind = kind_parse(a, plural);
        int n = picture_count(pic, colour, -1);
        CHECK_MSG(kind >= 0 && colour >= 0 && n == picture_count(pic, colour, kind) &&
                  (n > 1) == plural,
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    if (match(q, "Are all the shapes the same colour?", w) == 0) {
        CHECK_MSG(pic->n > 0 && !strcmp(a, yes_no(picture_count(pic, pic->blobs[0].colour, -1) ==
                                                  pic->n)),
                  "%s: '%s' -> '%s'", name, q, a);
        return 1;
    }
    return 0;
}

/* Checks one pair against the pixels: 1 checked, 0 a background question (not checked here). */
static int qa_check(const char *q, const char *a, const picture *pic, const char *name)
{
    char w[2][WORD_MAX];
    if (match(q, "What colour is the background?", w) == 0 ||
        match(q, "What pattern does the background have?", w) == 0)
        return 0;
    int known = qa_check_counts(q, a, pic, name) || qa_check_positions(q, a, pic, name) ||
                qa_check_attributes(q, a, pic, name);
    CHECK_MSG(known, "%s: a question of no known form: '%s'", name, q);
    return known;
}

/* ---- whole corpora --------------------------------------------------------------------------- */

static const char *json_string(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* One record's turns: human then gpt, alternating; the first asks for the caption after
 * "<image>\n"; no later turn repeats the image token. */
static void record_check_turns(const char *dir, int i, const cJSON *turns, const char **instruction,
                               int *varied)
{
    int n = cJSON_GetArraySize(turns), t = 0;
    CHECK_MSG(cJSON_IsArray(turns) && n % 2 == 0 && n >= 8 && n <= 2 + 2 * SAMPLEGEN_MAX_QA,
              "%s: record %d has %d turns", dir, i, n);
    for (const cJSON *turn = turns ? turns->child : NULL; turn; turn = turn->next, t++) {
        const char *from = json_string(turn, "from"), *value = json_string(turn, "value");
        CHECK_MSG(from && !strcmp(from, t % 2 ? "gpt" : "human") && value && value[0],
                  "%s: record %d turn %d is not a %s turn with a value", dir, i, t,
                  t % 2 ? "gpt" : "human");
        if (!value) continue;
        if (t > 0) {
            CHECK_MSG(!strstr(value, "<image>"), "%s: record %d turn %d repeats <image>", dir, i,
                      t);
            continue;
        }
        CHECK_MSG(!strncmp(value, "<image>\n", 8) && value[8], "%s: record %d: first turn %s",
                  dir, i, value);
        if (!*instruction) *instruction = value;
        *varied |= strcmp(*instruction, value) != 0;
    }
}

/* The LLaVA layout: an array of {id, image, conversations}, caption first; captions.jsonl the
 * same captions line by line. Returns the parsed llava.json (NULL when unreadable). */
static cJSON *corpus_check_layout(const char *dir, int count)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/llava.json", dir);
    char *text = file_read(path, NULL);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK_MSG(cJSON_IsArray(root) && cJSON_GetArraySize(root) == count, "%s: not an array of %d",
              path, count);
    if (!cJSON_IsArray(root)) return root;
    snprintf(path, sizeof path, "%s/captions.jsonl", dir);
    char *lines = file_read(path, NULL), *save = NULL;
    char *line = lines ? strtok_r(lines, "\n", &save) : NULL;
    int i = 0, varied = 0;
    const char *instruction = NULL;
    for (const cJSON *item = root->child; item; item = item->next, i++) {
        char want_id[16], image_path[PATH_MAX + 64];
        snprintf(want_id, sizeof want_id, "%08d", i + 1);
        const char *id = json_string(item, "id"), *image = json_string(item, "image");
        CHECK_MSG(id && !strcmp(id, want_id), "%s: record %d has id %s", dir, i,
                  id ? id : "(none)");
        CHECK_MSG(image && !strncmp(image, "images/", 7) && !strncmp(image + 7, want_id, 8) &&
                  (!strcmp(image + 15, ".jpg") || !strcmp(image + 15, ".png")),
                  "%s: record %d has image %s", dir, i, image ? image : "(none)");
        snprintf(image_path, sizeof image_path, "%s/%s", dir, image ? image : "");
        CHECK_MSG(image && path_exists(image_path), "%s: %s is missing", dir, image_path);
        const cJSON *turns = cJSON_GetObjectItemCaseSensitive(item, "conversations");
        record_check_turns(dir, i, turns, &instruction, &varied);
        cJSON *jl = line ? cJSON_Parse(line) : NULL;
        const char *caption = json_string(cJSON_GetArrayItem(turns, 1), "value");
        const char *jl_image = json_string(jl, "image"), *jl_caption = json_string(jl, "caption");
        CHECK_MSG(image && caption && jl_image && jl_caption && !strcmp(jl_image, image) &&
                  !strcmp(jl_caption, caption),
                  "%s: captions.jsonl line %d does not match llava.json", dir, i + 1);
        cJSON_Delete(jl);
        line = strtok_r(NULL, "\n", &save);
    }
    CHECK_MSG(line == NULL, "%s: captions.jsonl has more lines than llava.json has records", dir);
    CHECK_MSG(varied, "%s: the caption instruction never varies", dir);
    free(lines);
    return root;
}

/* Every image decodes, square, with a side in [lo, hi]; counts formats and distinct sides. */
static void corpus_check_images(const char *dir, const cJSON *root, int lo, int hi, int *n_png,
                                int *n_jpeg, int *n_sides)
{
    int seen[SAMPLEGEN_SIZE_MAX + 1] = {0};
    *n_png = *n_jpeg = *n_sides = 0;
    for (const cJSON *item = root ? root->child : NULL; item; item = item->next) {
        const char *image = json_string(item, "image");
        if (!image) continue;
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", dir, image);
        int png = strstr(image, ".png") != NULL, w = 0, h = 0;
        uint8_t *rgb = png ? png_load(path, &w, &h) : jpeg_load(path, &w, &h);
        CHECK_MSG(rgb != NULL, "%s does not decode", path);
        CHECK_MSG(w == h && w >= lo && w <= hi, "%s is %dx%d, not square in %d..%d", path, w, h,
                  lo, hi);
        free(rgb);
        *(png ? n_png : n_jpeg) += 1;
        if (w >= 0 && w <= SAMPLEGEN_SIZE_MAX && !seen[w]++) (*n_sides)++;
    }
}

/* Every caption and answer of a PNG corpus against its pixels. */
static void corpus_check_truth(const char *dir, const cJSON *root, truth_tally *tally)
{
    for (const cJSON *item = root ? root->child : NULL; item; item = item->next) {
        const char *image = json_string(item, "image");
        const cJSON *turns = cJSON_GetObjectItemCaseSensitive(item, "conversations");
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", dir, image ? image : "");
        int w = 0, h = 0;
        uint8_t *rgb = image ? png_load(path, &w, &h) : NULL;
        CHECK_MSG(rgb && w == h, "%s: not a square PNG", path);
        if (!rgb) continue;
        picture pic;
        picture_analyse(rgb, w, &pic);
        free(rgb);
        const char *caption = json_string(cJSON_GetArrayItem(turns, 1), "value");
        if (!caption) continue;
        caption_check_groups(caption, &pic, path, tally);
        caption_check_places(caption, &pic, path);
        tally->captions++;
        for (int t = 2; t + 1 < cJSON_GetArraySize(turns); t += 2) {
            const char *q = json_string(cJSON_GetArrayItem(turns, t), "value");
            const char *a = json_string(cJSON_GetArrayItem(turns, t + 1), "value");
            if (q && a) tally->answers += qa_check(q, a, &pic, path);
        }
    }
}

/* ---- the tests ------------------------------------------------------------------------------- */

static char root_dir[256];   /* a mkdtemp directory that holds every corpus of this test */

static const char *dir_in_root(char *buf, const char *name)
{
    int n = snprintf(buf, PATH_MAX, "%s/%s", root_dir, name);
    CHECK(n > 0 && n < PATH_MAX);
    return buf;
}

/* Bad usage exits 2 with one line naming the problem, and touches nothing. */
static void test_usage_errors(void)
{
    char errors[2048], out[PATH_MAX];
    dir_in_root(out, "refused");
    struct { const char *args[12]; const char *says; } cases[] = {
        {{"--out", out, "--count", "99", NULL},      "--count 99 is out of range: give 100 to"},
        {{"--out", out, "--count", "100001", NULL},  "--count 100001 is out of range"},
        {{"--out", out, "--count", "12x", NULL},     "--count '12x' is not a whole number"},
        {{"--count", "100", NULL},                   "--out DIR is required"},
        {{"--out", out, "--colour", "red", NULL},    "unknown option '--colour'"},
        {{"--out", out, "--format", "gif", NULL},    "--format 'gif' is not a format"},
        {{"--out", out, "--size", "10", NULL},       "give sides of 64 to 4096"},
        {{"--out", out, "--min-size", "300", "--max-size", "200", NULL}, "300 is larger"},
        {{"--out", out, "--size", "100", "--min-size", "90", NULL},      "either --size or"},
        {{"--out", out, "--jpeg-quality", "0", NULL}, "--jpeg-quality 0 is out of range"},
        {{"--out", out, "--jobs", "0", NULL},        "--jobs 0 is out of range"},
        {{"--out", out, "--seed", "-1", NULL},       "--seed '-1' is not a number"},
        {{"--out", out, "--count", NULL},            "--count needs a value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = generate(errors, sizeof errors, cases[i].args);
        CHECK_MSG(rc == ADAPTCTL_EXIT_USAGE, "case %zu exits %d, not 2", i, rc);
        CHECK_STR_CONTAINS(errors, cases[i].says);
        CHECK_MSG(strchr(errors, '\n') == errors + strlen(errors) - 1, "case %zu: not one line: %s",
                  i, errors);
    }
    CHECK(!path_exists(out));
    const char *help[] = {"--help", NULL};
    CHECK(generate(errors, sizeof errors, help) == ADAPTCTL_EXIT_OK);
}

/* An existing, non-empty --out is never overwritten, nor a foreign OUT.partial touched. */
static void test_existing_out(void)
{
    char errors[2048], out[PATH_MAX], keep[PATH_MAX + 16];
    dir_in_root(out, "taken");
    mkdir(out, 0755);
    snprintf(keep, sizeof keep, "%s/keep.txt", out);
    FILE *f = fopen(keep, "w");
    fputs("precious\n", f);
    fclose(f);
    const char *taken[] = {"--out", out, "--count", "100", "--size", "64", NULL};
    CHECK(generate(errors, sizeof errors, taken) == ADAPTCTL_EXIT_USAGE);
    CHECK_STR_CONTAINS(errors, "is not empty");
    CHECK_STR_CONTAINS(errors, out);
    CHECK(path_exists(keep));
    char partial[PATH_MAX + 16];
    snprintf(partial, sizeof partial, "%s.partial", out);
    CHECK(!path_exists(partial));

    /* A foreign OUT.partial is refused too; the caller must look at it. */
    dir_in_root(out, "foreign");
    snprintf(partial, sizeof partial, "%s.partial", out);
    mkdir(partial, 0755);
    const char *foreign[] = {"--out", out, "--count", "100", "--size", "64", NULL};
    CHECK(generate(errors, sizeof errors, foreign) == ADAPTCTL_EXIT_USAGE);
    CHECK_STR_CONTAINS(errors, "foreign.partial exists and is not an unfinished output");
    CHECK(!path_exists(out) && path_exists(partial));

    /* A directory that cannot be made is a fault (exit 1), named. */
    const char *unmakeable[] = {"--out", "/proc/self/adaptd-sample", "--count", "100", NULL};
    CHECK(generate(errors, sizeof errors, unmakeable) == ADAPTCTL_EXIT_FAULT);
    CHECK_STR_CONTAINS(errors, "creating /proc/self/adaptd-sample.partial: ");
}

/* What an interrupted run leaves (OUT.partial with the marker) is cleared by the next run; an
 * existing empty --out is filled. */
static void test_partial_and_empty_out(void)
{
    char errors[2048], out[PATH_MAX], path[PATH_MAX + 64];
    dir_in_root(out, "interrupted");
    snprintf(path, sizeof path, "%s.partial", out);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s.partial/images", out);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s.partial/images/00000001.jpg", out);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof path, "%s.partial/%s", out, SAMPLEGEN_PARTIAL_MARKER);
    fclose(fopen(path, "w"));
    const char *again[] = {"--out", out, "--count", "100", "--size", "64", "--jobs", "2", NULL};
    CHECK(generate(errors, sizeof errors, again) == ADAPTCTL_EXIT_OK);
    snprintf(path, sizeof path, "%s.partial", out);
    CHECK(!path_exists(path));
    snprintf(path, sizeof path, "%s/%s", out, SAMPLEGEN_PARTIAL_MARKER);
    CHECK(!path_exists(path));
    snprintf(path, sizeof path, "%s/llava.json", out);
    CHECK(path_exists(path));

    dir_in_root(out, "empty");
    mkdir(out, 0755);
    const char *empty[] = {"--out", out, "--count", "100", "--size", "64", "--format", "png", NULL};
    CHECK(generate(errors, sizeof errors, empty) == ADAPTCTL_EXIT_OK);
    snprintf(path, sizeof path, "%s/images/00000100.png", out);
    CHECK(path_exists(path));
}

/* Scenes straight from the library: inside the image, apart, one clear largest shape. */
static void test_scene_invariants(void)
{
    samplegen_options opt;
    samplegen_options_init(&opt);
    opt.min_size = SAMPLEGEN_SIZE_MIN;
    opt.max_size = 512;
    int bad = 0;
    for (long i = 0; i < 3000; i++) {
        samplegen_scene s;
        samplegen_scene_make(&opt, i, &s);
        bad += s.n_shapes < 1 || s.n_shapes > SAMPLEGEN_MAX_SHAPES || s.size < opt.min_size ||
               s.size > opt.max_size;
        for (int a = 0; a < s.n_shapes; a++) {
            const samplegen_shape *p = &s.shapes[a];
            bad += p->x0 < 0 || p->y0 < 0 || p->x1 > s.size || p->y1 > s.size;
            if (a != s.largest) bad += s.shapes[s.largest].area < 1.29 * p->area;
            for (int b = a + 1; b < s.n_shapes; b++) {
                const samplegen_shape *q = &s.shapes[b];
                bad += !(p->x1 < q->x0 || q->x1 < p->x0 || p->y1 < q->y0 || q->y1 < p->y0);
            }
        }
        samplegen_text t1, t2;
        samplegen_scene_describe(&s, &t1);
        samplegen_scene_describe(&s, &t2);
        bad += t1.n_qa < 3 || t1.n_qa > SAMPLEGEN_MAX_QA || strcmp(t1.caption, t2.caption) != 0;
    }
    CHECK_MSG(bad == 0, "%d broken scene invariants in 3000 scenes", bad);
}

/* PNG corpora: determinism over --jobs and seeds, then every statement against the pixels. */
static void test_png_truth_and_determinism(void)
{
    char errors[2048], a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], hard[PATH_MAX];
    const char *run_a[] = {"--out", dir_in_root(a, "png-a"), "--count", "100", "--seed", "7",
                           "--size", "256", "--format", "png", "--jobs", "1", NULL};
    const char *run_b[] = {"--out", dir_in_root(b, "png-b"), "--count", "100", "--seed", "7",
                           "--size", "256", "--format", "png", "--jobs", "3", NULL};
    const char *run_c[] = {"--out", dir_in_root(c, "png-c"), "--count", "100", "--seed", "8",
                           "--size", "256", "--format", "png", "--jobs", "2", NULL};
    const char *run_hard[] = {"--out", dir_in_root(hard, "png-hard"), "--count", "100",
                              "--seed", "9", "--size", "256", "--format", "png",
                              "--no-antialias", NULL};
    CHECK(generate(errors, sizeof errors, run_a) == ADAPTCTL_EXIT_OK);
    CHECK(generate(errors, sizeof errors, run_b) == ADAPTCTL_EXIT_OK);
    CHECK(generate(errors, sizeof errors, run_c) == ADAPTCTL_EXIT_OK);
    CHECK(generate(errors, sizeof errors, run_hard) == ADAPTCTL_EXIT_OK);
    CHECK_MSG(dirs_identical(a, b), "--jobs 1 and --jobs 3 differ");
    CHECK_MSG(!dirs_identical(a, c), "--seed 7 and --seed 8 give the same corpus");

    truth_tally tally;
    memset(&tally, 0, sizeof tally);
    const char *dirs[] = {a, hard};
    for (int d = 0; d < 2; d++) {
        cJSON *root = corpus_check_layout(dirs[d], 100);
        int n_png, n_jpeg, n_sides;
        corpus_check_images(dirs[d], root, 256, 256, &n_png, &n_jpeg, &n_sides);
        CHECK(n_png == 100 && n_jpeg == 0);
        corpus_check_truth(dirs[d], root, &tally);
        cJSON_Delete(root);
    }
    CHECK_MSG(tally.captions == 200, "%ld captions checked", tally.captions);
    CHECK_MSG(tally.answers >= 500, "only %ld answers checked against the pixels", tally.answers);
    for (int k = 0; k < N_KINDS; k++)
        CHECK_MSG(tally.kinds_seen[k], "no %s in 200 images", kind_words[k]);
    for (int c2 = 0; c2 < N_COLOURS; c2++)
        CHECK_MSG(tally.colours_seen[c2], "no %s shape in 200 images", colour_words[c2]);
}

/* Mixed formats and sizes: both formats, real files of the drawn sizes, same bytes again. */
static void test_mixed_formats(void)
{
    char errors[2048], a[PATH_MAX], b[PATH_MAX];
    const char *run_a[] = {"--out", dir_in_root(a, "mixed-a"), "--count", "100", "--seed", "11",
                           "--min-size", "96", "--max-size", "200", "--jobs", "2", NULL};
    const char *run_b[] = {"--out", dir_in_root(b, "mixed-b"), "--count", "100", "--seed", "11",
                           "--min-size=96", "--max-size=200", "--jobs=1", "--format=mixed", NULL};
    CHECK(generate(errors, sizeof errors, run_a) == ADAPTCTL_EXIT_OK);
    CHECK(generate(errors, sizeof errors, run_b) == ADAPTCTL_EXIT_OK);
    CHECK_MSG(dirs_identical(a, b), "mixed corpora of one seed differ");
    cJSON *root = corpus_check_layout(a, 100);
    int n_png, n_jpeg, n_sides;
    corpus_check_images(a, root, 96, 200, &n_png, &n_jpeg, &n_sides);
    CHECK_MSG(n_png > 20 && n_jpeg > 20, "%d PNG and %d JPEG of 100", n_png, n_jpeg);
    CHECK_MSG(n_sides > 30, "only %d distinct sides in 96..200", n_sides);
    cJSON_Delete(root);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root_dir, sizeof root_dir, "%s/adaptd-samplegen-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(root_dir)) {
        perror(root_dir);
        return 1;
    }
    test_usage_errors();
    test_existing_out();
    test_partial_and_empty_out();
    test_scene_invariants();
    test_png_truth_and_determinism();
    test_mixed_formats();
    tree_remove(root_dir);
    return check_report("sample_corpus");
}
