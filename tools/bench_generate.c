/* bench_generate: greedy generation tokens/s of worker/generate.c on the CPU, for issue 8's
 * side-by-side benchmark against transformers' generate (tools/scripts/bench_generate.sh runs
 * both).
 *
 * The one idea: as bench_train_step, the prompts are made from integers alone (a 64-bit LCG
 * whose draws become token ids and pixel values exact in fp32), so
 * tools/scripts/bench_generate_hf.py rebuilds the very same prompts and images without a file
 * passing between the two, and the generated ids can be compared. Every sequence generates
 * exactly --new tokens (the eos ids do not stop it), so both sides do the same work. */
#include "generate.h"
#include "model_config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

enum { BENCH_TEXT_HEAD = 32, BENCH_TEXT_TAIL = 32, BENCH_IMAGE = 224, BENCH_PATCH = 14 };

static uint64_t bench_lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static double bench_now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: bench-generate MODEL_DIR [--batch N] [--new N] [--seed S]\n"
        "  N prompts of %d random text tokens, one %dx%d image (random pixels), %d more text\n"
        "  tokens; greedy, exactly --new tokens each (default 64); prints the wall time, tokens/s\n"
        "  and every sequence's ids\n", BENCH_TEXT_HEAD, BENCH_IMAGE, BENCH_IMAGE, BENCH_TEXT_TAIL);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int batch = 1, n_new = 64;
    uint64_t seed = 42;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--batch") && has) batch = atoi(argv[++i]);
        else if (!strcmp(a, "--new") && has) n_new = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && has) seed = strtoull(argv[++i], NULL, 10);
        else if (a[0] != '-' && !dir) dir = a;
        else { usage(stderr); return 2; }
    }
    if (!dir || batch < 1 || n_new < 1) { usage(stderr); return 2; }
    adapt_error err = {0};
    model_config cfg;
    gen_t *g = NULL;
    if (model_config_load(&cfg, dir, &err) || gen_open_no_tokenizer(&g, dir, &err)) {
        fprintf(stderr, "bench-generate: %s\n", err.message);
        return 1;
    }
    int merge = cfg.vision.spatial_merge_size, grid = BENCH_IMAGE / BENCH_PATCH;
    int n_img = grid * grid / (merge * merge);
    int len = BENCH_TEXT_HEAD + 2 + n_img + BENCH_TEXT_TAIL;
    int pd = cfg.vision.in_channels * cfg.vision.temporal_patch_size * BENCH_PATCH * BENCH_PATCH;
    size_t n_pix = (size_t)grid * grid * pd;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)batch * len);
    float *pix = malloc(sizeof(float) * (size_t)batch * n_pix);
    gen_token_prompt *p = calloc((size_t)batch, sizeof *p);
    gen_result *r = calloc((size_t)batch, sizeof *r);
    if (!ids || !pix || !p || !r) {
        fprintf(stderr, "bench-generate: out of memory\n");
        return 1;
    }
    /* the same draws, in the same order, as bench_generate_hf.py: all ids, then all pixels */
    uint64_t s = seed;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < len; t++) {
            int q = t - BENCH_TEXT_HEAD, *dst = (int *)&ids[(size_t)b * len + t];
            if (q == 0) *dst = cfg.vision_start_token_id;
            else if (q > 0 && q <= n_img) *dst = cfg.image_token_id;
            else if (q == n_img + 1) *dst = cfg.vision_end_token_id;
            else *dst = (int)(bench_lcg(&s) % (uint64_t)cfg.vision_start_token_id);
        }
    for (size_t j = 0; j < (size_t)batch * n_pix; j++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        pix[j] = (float)((double)(s >> 40) / 4194304.0 - 2.0);
    }
    for (int b = 0; b < batch; b++) {
        p[b].ids = ids + (size_t)b * len;
        p[b].n_ids = (size_t)len;
        p[b].pixel_values = pix + (size_t)b * n_pix;
        p[b].grid_thw[0] = 1;
        p[b].grid_thw[1] = grid;
        p[b].grid_thw[2] = grid;
    }
    gen_set_max_batch(g, batch);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("adaptd: batch %d, prompt %d tokens (%d image), %d new tokens, %d threads\n", batch,
           len, n_img, n_new, threads);
    /* warm-up: two tokens (page in the weights, start the thread pool) */
    gen_options o = { .max_new_tokens = 2, .top_p = 1.0f, .ignore_eos = 1 };
    if (gen_run_tokens(g, p, (size_t)batch, &o, r, &err)) {
        fprintf(stderr, "bench-generate: %s\n", err.message);
        return 1;
    }
    for (int b = 0; b < batch; b++) gen_result_clear(&r[b]);
    o.max_new_tokens = (uint32_t)n_new;
    double t0 = bench_now(CLOCK_MONOTONIC), c0 = bench_now(CLOCK_PROCESS_CPUTIME_ID);
    int rc = gen_run_tokens(g, p, (size_t)batch, &o, r, &err);
    double wall = bench_now(CLOCK_MONOTONIC) - t0, cpu = bench_now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (rc) {
        fprintf(stderr, "bench-generate: %s\n", err.message);
        return 1;
    }
    printf("adaptd wall_s %.4f\n", wall);
    printf("adaptd cpu_s %.4f\n", cpu);
    printf("adaptd tokens_per_s %.2f\n", (double)batch * n_new / wall);
    for (int b = 0; b < batch; b++) {
        printf("adaptd ids %d", b);
        for (size_t i = 0; i < r[b].n_ids; i++) printf(" %d", r[b].ids[i]);
        printf("\n");
        gen_result_clear(&r[b]);
    }
    gen_close(g);
    free(ids);
    free(pix);
    free(p);
    free(r);
    return 0;
}
