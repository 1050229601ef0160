/* test_image_process: Qwen2-VL's image preprocessing.
 *
 * Without arguments (suite unit): smart_resize on values taken from transformers (Python's
 * half-even rounding, the min and max paths, the aspect-ratio error); the bicubic resize on a
 * small image against bytes Pillow produced, plus identity and constant-image properties; the
 * patch order and normalisation on an image whose pixels encode their position; the published
 * preprocessor_config.json and every refused setting of it.
 * With `--reference SCRIPT PYTHON` (suite reference): the script writes transformers'
 * smart_resize over a sweep of sizes, scikit-image's photographs and synthetic images with
 * Pillow's bicubic resize of each and the Qwen2VLImageProcessor's pixel_values and grid (also
 * with processors from_pretrained loads from preprocessor_config.json files); this
 * test requires smart_resize identical, every resized pixel within +-1 of Pillow (and reports
 * the largest difference and the share of exact pixels), and patches from Pillow's pixels equal
 * to the processor's within 1e-6. */
#include "../check.h"
#include "image_process.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_smart_resize(void)
{
    /* (h, w) -> (H, W) as transformers' smart_resize returns them with the default limits. */
    static const int cases[][4] = {
        {42, 42, 56, 56},     {70, 70, 56, 56},     /* 1.5 -> 2 but 2.5 -> 2: half-even */
        {70, 98, 56, 112},    {98, 70, 112, 56},    {512, 512, 504, 504}, {600, 400, 588, 392},
        {1, 200, 28, 812},    {1, 1, 56, 56},       {5000, 3000, 1288, 756}, {13, 13, 56, 56},
        {14, 2000, 28, 672},
    };
    adapt_error err = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int H = 0, W = 0;
        int rc = imgproc_smart_resize(cases[i][0], cases[i][1], 28, 56 * 56, 28 * 28 * 1280, &H, &W, &err);
        CHECK_MSG(rc == 0 && H == cases[i][2] && W == cases[i][3], "smart_resize(%d, %d) = (%d, %d), expected (%d, %d)",
                  cases[i][0], cases[i][1], H, W, cases[i][2], cases[i][3]);
    }
    int H, W;
    CHECK(imgproc_smart_resize(1, 201, 28, 3136, 1003520, &H, &W, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "aspect ratio must be smaller than 200, got 201");
    CHECK(imgproc_smart_resize(1, 200, 28, 3136, 1003520, &H, &W, &err) == 0);
    CHECK(imgproc_smart_resize(0, 5, 28, 3136, 1003520, &H, &W, &err) == ADAPT_EINVAL);
    CHECK(imgproc_smart_resize(10, 10, 28, 0, 1003520, &H, &W, &err) == ADAPT_EINVAL);  /* rounds to 0 */
    CHECK_STR_CONTAINS(err.message, "resizes to 0x0");

    imgproc_params p;
    imgproc_params_default(&p);
    imgproc_plan plan;
    CHECK(imgproc_plan_image(&p, 600, 400, &plan, &err) == 0);
    CHECK(plan.resized_width == 588 && plan.resized_height == 392);
    CHECK(plan.grid_t == 1 && plan.grid_h == 28 && plan.grid_w == 42);
    CHECK(plan.n_patches == 28 * 42 && plan.patch_dim == 1176);
}

static void test_bicubic(void)
{
    /* A 5x4 RGB image and Pillow 13's Image.resize(..., BICUBIC) of it. */
    static const uint8_t src[] = {
        0, 255, 0, 13, 244, 255, 26, 233, 0, 39, 222, 255, 52, 211, 0, 65, 200, 255, 78, 189, 0, 91, 178, 255,
        104, 167, 0, 117, 156, 255, 130, 145, 0, 143, 134, 255, 156, 123, 0, 169, 112, 255, 182, 101, 0, 195, 90,
        255, 208, 79, 0, 221, 68, 255, 234, 57, 0, 247, 46, 255};
    static const uint8_t to_3x7[] = {
        0, 255, 103, 21, 237, 126, 42, 219, 103, 22, 236, 121, 43, 218, 127, 64, 200, 121, 65, 200, 148, 86, 182,
        129, 107, 164, 148, 103, 169, 128, 124, 151, 128, 145, 133, 128, 140, 137, 107, 161, 119, 126, 182, 101,
        107, 183, 101, 134, 204, 83, 128, 225, 65, 134, 205, 82, 152, 226, 64, 129, 247, 46, 152};
    static const uint8_t to_8x2[] = {
        37, 224, 104, 42, 219, 125, 52, 211, 148, 60, 204, 117, 68, 198, 117, 76, 191, 148, 86, 183, 125, 91, 178,
        104, 156, 123, 151, 161, 118, 130, 171, 110, 107, 179, 103, 138, 187, 97, 138, 195, 90, 107, 205, 82, 130,
        210, 77, 151};
    static const uint8_t to_1x1[] = {124, 151, 128};
    uint8_t out[256];
    adapt_error err = {0};
    CHECK(imgproc_resize_bicubic(src, 5, 4, 3, out, 3, 7, &err) == 0 && memcmp(out, to_3x7, sizeof to_3x7) == 0);
    CHECK(imgproc_resize_bicubic(src, 5, 4, 3, out, 8, 2, &err) == 0 && memcmp(out, to_8x2, sizeof to_8x2) == 0);
    CHECK(imgproc_resize_bicubic(src, 5, 4, 3, out, 1, 1, &err) == 0 && memcmp(out, to_1x1, sizeof to_1x1) == 0);
    CHECK(imgproc_resize_bicubic(src, 5, 4, 3, out, 5, 4, &err) == 0 && memcmp(out, src, sizeof src) == 0);
    CHECK(imgproc_resize_bicubic(src, 5, 4, 3, out, 0, 4, &err) == ADAPT_EINVAL);

    /* A constant image stays constant through any resize, and one channel works like three. */
    static uint8_t flat[97 * 61], big[211 * 13];
    memset(flat, 255, sizeof flat);
    int bad = 0;
    for (int dw = 1; dw < 211; dw += 7)
        for (int dh = 1; dh < 13; dh += 3) {
            CHECK(imgproc_resize_bicubic(flat, 97, 61, 1, big, dw, dh, &err) == 0);
            for (int i = 0; i < dw * dh; i++) bad += big[i] != 255;
        }
    CHECK_MSG(bad == 0, "%d pixels of a white image changed", bad);
}

/* Pixel (x, y) of a 56x84 image: R = patch column, G = patch row, B = position in the patch. */
static void test_patchify(void)
{
    enum { W = 56, H = 84 };
    static uint8_t img[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *px = img + (y * W + x) * 3;
            px[0] = (uint8_t)(x / 14 * 10);
            px[1] = (uint8_t)(y / 14 * 10);
            px[2] = (uint8_t)((y % 14) * 14 + x % 14);
        }
    imgproc_params p;
    imgproc_params_default(&p);
    size_t dim = 1176, n = (W / 14) * (H / 14);
    float *out = malloc(n * dim * sizeof *out);
    adapt_error err = {0};
    CHECK(imgproc_patchify(&p, img, W, H, out, &err) == 0);
    /* transformers' order: 2x2 blocks in raster order, the block's 4 patches in raster order. */
    static const int order[][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {2, 0}, {3, 0}, {2, 1}, {3, 1},
                                   {0, 2}, {1, 2}, {0, 3}, {1, 3}, {2, 2}, {3, 2}, {2, 3}, {3, 3}};
    double worst = 0;
    for (size_t r = 0; r < 16; r++) {
        const float *row = out + r * dim;
        for (int c = 0; c < 3; c++)
            for (int t = 0; t < 2; t++)
                for (int k = 0; k < 196; k++) {
                    int v = c == 0 ? order[r][0] * 10 : c == 1 ? order[r][1] * 10 : k;
                    double want = ((double)v / 255.0 - p.mean[c]) / p.std[c];
                    double d = fabs(row[(c * 2 + t) * 196 + k] - want);
                    if (d > worst) worst = d;
                }
    }
    CHECK_MSG(worst < 1e-5, "patch values off by %g", worst);
    CHECK(imgproc_patchify(&p, img, 50, H, out, &err) == ADAPT_EINVAL);

    imgproc_plan plan;
    CHECK(imgproc_process(&p, img, W, H, out, n * dim, &plan, &err) == 0);
    CHECK(plan.resized_width == W && plan.resized_height == H && plan.grid_h == 6 && plan.grid_w == 4);
    CHECK(imgproc_process(&p, img, W, H, out, n * dim - 1, &plan, &err) == ADAPT_ERANGE);
    CHECK_STR_CONTAINS(err.message, "24 x 1176");
    free(out);
}

/* ---- against transformers and Pillow --------------------------------------------------------- */

static char ref_dir[] = "/tmp/adapt-ip-XXXXXX";

static void *file_load(const char *name, const char *ext, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s%s", ref_dir, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f) { *n = 0; return NULL; }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*n + 1);
    if (fread(p, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return p;
}

static void reference_smart_resize(void)
{
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/smart_resize.txt", ref_dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    int total = 0, refused = 0, wrong = 0;
    while (f && fgets(line, sizeof line, f)) {
        int h, w, factor, H = 0, W = 0;
        long long mn, mx;
        char a[16], b[16];
        int got = sscanf(line, "%d %d %d %lld %lld %15s %15s", &h, &w, &factor, &mn, &mx, a, b);
        if (got < 6) continue;
        adapt_error err = {0};
        int rc = imgproc_smart_resize(h, w, factor, mn, mx, &H, &W, &err);
        int ok = strcmp(a, "E") == 0 ? rc != 0 : rc == 0 && got == 7 && H == atoi(a) && W == atoi(b);
        if (!ok && wrong++ < 10)
            fprintf(stderr, "smart_resize(%d, %d, %d, %lld, %lld): reference %s %s, adaptd rc %d %dx%d\n", h, w,
                    factor, mn, mx, a, got == 7 ? b : "", rc, H, W);
        refused += strcmp(a, "E") == 0;
        total++;
    }
    if (f) fclose(f);
    CHECK_MSG(wrong == 0, "%d of %d smart_resize cases differ from transformers", wrong, total);
    CHECK(total > 10000);
    printf("smart_resize: %d cases (%d refused by both), %d differ\n", total, refused, wrong);
}

typedef struct stats {
    long long pixels, exact, channels_off;
    int max_diff;
} stats;

static void reference_image(const char *name, const char *kind, int iw, int ih, int ow, int oh, long long mn,
                            long long mx, stats *all)
{
    size_t nin, npil;
    uint8_t *in = file_load(name, ".in.rgb", &nin), *pil = file_load(name, ".pil.rgb", &npil);
    CHECK_MSG(in && pil && nin == (size_t)iw * ih * 3 && npil == (size_t)ow * oh * 3, "%s: bad reference files", name);
    if (!in || !pil) { free(in); free(pil); return; }
    uint8_t *mine = malloc(npil);
    adapt_error err = {0};
    CHECK_MSG(imgproc_resize_bicubic(in, iw, ih, 3, mine, ow, oh, &err) == 0, "%s", err.message);
    stats s = {0};
    for (size_t i = 0; i < npil; i += 3) {
        int px_exact = 1;
        for (int c = 0; c < 3; c++) {
            int d = abs((int)mine[i + c] - (int)pil[i + c]);
            if (d > s.max_diff) s.max_diff = d;
            s.channels_off += d != 0;
            px_exact &= d == 0;
        }
        s.exact += px_exact;
        s.pixels++;
    }
    CHECK_MSG(s.max_diff <= 1, "%s: a pixel differs from Pillow by %d", name, s.max_diff);
    printf("  %-14s %-6s %5dx%-5d -> %5dx%-5d  max |diff| %d, exact pixels %.4f%%\n", name, kind, iw, ih, ow, oh,
           s.max_diff, 100.0 * (double)s.exact / (double)s.pixels);
    all->pixels += s.pixels;
    all->exact += s.exact;
    all->channels_off += s.channels_off;
    if (s.max_diff > all->max_diff) all->max_diff = s.max_diff;

    if (strcmp(kind, "proc") == 0 || strcmp(kind, "cfg") == 0) {
        imgproc_params p;
        imgproc_params_default(&p);
        p.min_pixels = mn;
        p.max_pixels = mx;
        if (strcmp(kind, "cfg") == 0) {
            char pre[512];
            snprintf(pre, sizeof pre, "%s/%s.pre", ref_dir, name);
            CHECK_MSG(imgproc_params_load(&p, pre, &err) == 0, "%s", err.message);
            CHECK(p.min_pixels == mn && p.max_pixels == mx);
        }
        imgproc_plan plan;
        CHECK_MSG(imgproc_plan_image(&p, iw, ih, &plan, &err) == 0, "%s: %s", name, err.message);
        CHECK_MSG(plan.resized_width == ow && plan.resized_height == oh, "%s: planned %dx%d, reference %dx%d", name,
                  plan.resized_width, plan.resized_height, ow, oh);
        size_t npv, ngrid;
        float *pv = file_load(name, ".pv.f32", &npv);
        char *grid = file_load(name, ".grid", &ngrid);
        int gt = 0, gh = 0, gw = 0;
        if (grid) { grid[ngrid] = '\0'; sscanf(grid, "%d %d %d", &gt, &gh, &gw); }
        CHECK_MSG(gt == plan.grid_t && gh == plan.grid_h && gw == plan.grid_w, "%s: grid (%d, %d, %d), reference "
                  "(%d, %d, %d)", name, plan.grid_t, plan.grid_h, plan.grid_w, gt, gh, gw);
        size_t count = plan.n_patches * plan.patch_dim;
        CHECK_MSG(pv && npv == count * sizeof(float), "%s: pixel_values of %zu bytes, expected %zu", name, npv,
                  count * sizeof(float));
        float *patches = malloc(count * sizeof *patches);
        if (pv && npv == count * sizeof(float) && patches) {
            /* Given Pillow's pixels, the patches must be the processor's. */
            CHECK(imgproc_patchify(&p, pil, ow, oh, patches, &err) == 0);
            double worst = 0;
            size_t bitwise = 0;
            for (size_t i = 0; i < count; i++) {
                double d = fabs((double)patches[i] - (double)pv[i]);
                if (d > worst) worst = d;
                bitwise += memcmp(&patches[i], &pv[i], sizeof(float)) == 0;
            }
            CHECK_MSG(worst <= 1e-6, "%s: patches differ from pixel_values by %g", name, worst);
            /* The whole pipeline from the original image. */
            CHECK(imgproc_process(&p, in, iw, ih, patches, count, &plan, &err) == 0);
            double worst_all = 0;
            for (size_t i = 0; i < count; i++) worst_all = fmax(worst_all, fabs((double)patches[i] - (double)pv[i]));
            printf("  %-14s patches %zux%zu grid (%d,%d,%d): from Pillow's pixels max |diff| %g (%.4f%% bit-equal), "
                   "end to end max |diff| %g\n", name, plan.n_patches, plan.patch_dim, gt, gh, gw, worst,
                   100.0 * (double)bitwise / (double)count, worst_all);
        }
        free(patches);
        free(pv);
        free(grid);
    }
    free(mine);
    free(in);
    free(pil);
}

static int reference_main(const char *script, const char *python_default)
{
    int missing_code;
    const char *python = check_reference_python(python_default, &missing_code);
    if (!python) return missing_code;
    if (!mkdtemp(ref_dir)) return 1;
    char cmd[2048], path[512], line[512];
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", python, script, ref_dir);
    fflush(stdout);
    int st = system(cmd);
    CHECK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed", cmd);
    reference_smart_resize();
    snprintf(path, sizeof path, "%s/cases.txt", ref_dir);
    FILE *f = fopen(path, "r");
    stats all = {0};
    int images = 0;
    while (f && fgets(line, sizeof line, f)) {
        char name[128], kind[16];
        int iw, ih, ow, oh;
        long long mn, mx;
        if (sscanf(line, "%127s %15s %d %d %d %d %lld %lld", name, kind, &iw, &ih, &ow, &oh, &mn, &mx) != 8) continue;
        reference_image(name, kind, iw, ih, ow, oh, mn, mx, &all);
        images++;
    }
    if (f) fclose(f);
    CHECK(images >= 70);
    printf("bicubic vs Pillow over %d images: %lld pixels, max |diff| %d, exact pixels %.4f%%, channel values off "
           "%lld\n", images, all.pixels, all.max_diff, 100.0 * (double)all.exact / (double)(all.pixels ? all.pixels : 1),
           all.channels_off);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ref_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", ref_dir);
    return check_report("image_process (reference)");
}

static void test_params(void)
{
    /* Qwen/Qwen2-VL-2B-Instruct's preprocessor_config.json. */
    static const char *published =
        "{\"min_pixels\": 3136, \"max_pixels\": 12845056, \"patch_size\": 14, \"temporal_patch_size\": 2,"
        " \"merge_size\": 2, \"image_mean\": [0.48145466, 0.4578275, 0.40821073],"
        " \"image_std\": [0.26862954, 0.26130258, 0.27577711], \"image_processor_type\": \"Qwen2VLImageProcessor\","
        " \"processor_class\": \"Qwen2VLProcessor\"}";
    imgproc_params p, d;
    adapt_error err = {0};
    imgproc_params_default(&d);
    CHECK_MSG(imgproc_params_parse(&p, published, strlen(published), "pre.json", &err) == 0, "%s", err.message);
    CHECK(p.min_pixels == 3136 && p.max_pixels == 12845056 && p.patch_size == 14 && p.merge_size == 2);
    CHECK(memcmp(p.mean, d.mean, sizeof p.mean) == 0 && memcmp(p.std, d.std, sizeof p.std) == 0);
    CHECK(p.rescale_factor == d.rescale_factor);

    /* size, then min_pixels / max_pixels over it; a scalar mean is every channel's. */
    const char *custom = "{\"size\": {\"shortest_edge\": 784, \"longest_edge\": 200704}, \"max_pixels\": 150000,"
                         " \"image_mean\": 0.5}";
    CHECK(imgproc_params_parse(&p, custom, strlen(custom), "pre.json", &err) == 0);
    CHECK(p.min_pixels == 784 && p.max_pixels == 150000 && p.mean[0] == 0.5f && p.mean[2] == 0.5f);

    static const struct { const char *json; int code; const char *field; } bad[] = {
        {"{\"resample\": 2}", ADAPT_EUNSUPPORTED, "'resample'"},
        {"{\"do_normalize\": false}", ADAPT_EUNSUPPORTED, "'do_normalize'"},
        {"{\"do_resize\": false}", ADAPT_EUNSUPPORTED, "'do_resize'"},
        {"{\"image_processor_type\": \"CLIPImageProcessor\"}", ADAPT_EUNSUPPORTED, "'image_processor_type'"},
        {"{\"size\": {\"min_pixels\": 1000, \"max_pixels\": 5000}}", ADAPT_EINVAL, "'size'"},
        {"{\"size\": {\"shortest_edge\": 1000}}", ADAPT_EINVAL, "'size'"},
        {"{\"max_pixels\": -5}", ADAPT_EINVAL, "'max_pixels'"},
        {"{\"image_std\": [1, 0, 1]}", ADAPT_EINVAL, "'image_std[1]'"},
        {"{\"image_mean\": [1, 2]}", ADAPT_EINVAL, "'image_mean'"},
        {"{\"patch_size\": 14.5}", ADAPT_EINVAL, "'patch_size'"},
        {"[1]", ADAPT_EINVAL, "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = imgproc_params_parse(&p, bad[i].json, strlen(bad[i].json), "pre.json", &err);
        CHECK_MSG(rc == bad[i].code, "%s: rc %d (%s)", bad[i].json, rc, err.message);
        CHECK_STR_CONTAINS(err.message, bad[i].field);
        CHECK_STR_CONTAINS(err.message, "pre.json");
    }
    CHECK(imgproc_params_load(&p, "/nonexistent-adaptd", &err) == ADAPT_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "/nonexistent-adaptd");
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--reference") == 0) return reference_main(argv[2], argv[3]);
    test_smart_resize();
    test_bicubic();
    test_patchify();
    test_params();
    return check_report("image_process");
}
