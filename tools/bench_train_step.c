/* bench_train_step: the time of one Qwen2-VL training step (forward + backward, no optimizer)
 * on the CPU backend, for issue 4's side-by-side benchmark against transformers
 * (tools/scripts/bench_train_step.sh runs both).
 *
 * The one idea: the batch is made from integers alone (a 64-bit LCG whose draws become token ids
 * and pixel values that are exact in fp32), so tools/scripts/bench_train_step_hf.py rebuilds the
 * very same batch without a file passing between the two, and the two losses can be compared. */
#include "model_config.h"
#include "ops.h"
#include "qwen2vl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

enum { BENCH_TEXT_HEAD = 32, BENCH_TEXT_TAIL = 96, BENCH_PROMPT = 16 };

/* The batch's shape and the model's special token ids. */
typedef struct bench_shape {
    int samples;     /* sequences, one image each */
    int grid;        /* patches per image side (224 / 14 = 16) */
    int image_tok;   /* <|image_pad|> */
    int vstart, vend;
    int patch_dim;
    int merge;
} bench_shape;

/* The batch and the memory behind it. */
typedef struct bench_batch {
    int          *ids, *labels, *cu, *grid_thw;
    float        *pixels;
    qwen2vl_batch b;
} bench_batch;

/* Knuth's MMIX LCG: the Python side draws the same numbers. */
static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;   /* 31 bits */
}

/* Sample: 32 text tokens, <|vision_start|>, grid^2/merge^2 image pads, <|vision_end|>, 96 text
 * tokens. Labels are the ids, masked (-100) on the first 16 tokens (a prompt) and on the vision
 * tokens, as a chat-formatted caption sample would be. */
static int bench_batch_make(bench_batch *bb, const bench_shape *s, uint64_t seed)
{
    int n_img_tok = s->grid * s->grid / (s->merge * s->merge);
    int len = BENCH_TEXT_HEAD + 2 + n_img_tok + BENCH_TEXT_TAIL;
    int T = s->samples * len;
    size_t n_pix = (size_t)s->samples * s->grid * s->grid * s->patch_dim;
    bb->ids = malloc((size_t)T * sizeof(int));
    bb->labels = malloc((size_t)T * sizeof(int));
    bb->cu = malloc((size_t)(s->samples + 1) * sizeof(int));
    bb->grid_thw = malloc((size_t)s->samples * 3 * sizeof(int));
    bb->pixels = malloc(n_pix * sizeof(float));
    if (!bb->ids || !bb->labels || !bb->cu || !bb->grid_thw || !bb->pixels) return -1;
    uint64_t st = seed;
    int scored = 0;
    for (int i = 0; i < s->samples; i++) {
        int *id = bb->ids + (size_t)i * len, *lab = bb->labels + (size_t)i * len;
        for (int t = 0; t < len; t++) {
            int pos_img = t - BENCH_TEXT_HEAD;
            if (pos_img == 0) id[t] = s->vstart;
            else if (pos_img > 0 && pos_img <= n_img_tok) id[t] = s->image_tok;
            else if (pos_img == n_img_tok + 1) id[t] = s->vend;
            else id[t] = (int)(lcg_next(&st) % (uint64_t)(s->vstart));  /* ordinary text ids */
            int vision = pos_img >= 0 && pos_img <= n_img_tok + 1;
            lab[t] = (t < BENCH_PROMPT || vision) ? OPS_LABEL_IGNORE : id[t];
            if (t > 0 && lab[t] != OPS_LABEL_IGNORE) scored++;
        }
        bb->cu[i] = i * len;
        bb->grid_thw[3 * i] = 1;
        bb->grid_thw[3 * i + 1] = s->grid;
        bb->grid_thw[3 * i + 2] = s->grid;
    }
    bb->cu[s->samples] = T;
    /* k / 2^22 - 2 for a 24-bit k: in [-2, 2) on a 2^-22 grid, so exact in fp32 and in Python */
    for (size_t j = 0; j < n_pix; j++)
        bb->pixels[j] = (float)((double)(lcg_next(&st) >> 7) / 4194304.0 - 2.0);
    bb->b = (qwen2vl_batch){ .n_tokens = T, .input_ids = bb->ids, .labels = bb->labels,
                             .n_seqs = s->samples, .cu_seqlens = bb->cu, .n_images = s->samples,
                             .image_grid_thw = bb->grid_thw, .pixel_values = bb->pixels,
                             .loss_normaliser = (float)scored };
    return 0;
}

static void bench_batch_free(bench_batch *bb)
{
    free(bb->ids); free(bb->labels); free(bb->cu); free(bb->grid_thw); free(bb->pixels);
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: bench-train-step MODEL_DIR [--samples N] [--steps N] [--warmup N] [--seed S]\n"
        "  one forward + backward of a Qwen2-VL model (adaptctl model init makes one) on a\n"
        "  deterministic batch: N samples, each one 224x224 image and 128 text tokens; prints the\n"
        "  loss, the median step time and the CPU time per step. Threads: OMP_NUM_THREADS.\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int samples = 8, steps = 5, warmup = 1;
    uint64_t seed = 42;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--samples") && has) samples = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && has) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && has) seed = strtoull(argv[++i], NULL, 10);
        else if (a[0] != '-' && !dir) dir = a;
        else { fprintf(stderr, "bench-train-step: unknown argument '%s'\n", a); usage(stderr); return 2; }
    }
    if (!dir || samples < 1 || steps < 1 || warmup < 0) { usage(stderr); return 2; }

    adapt_error err = {0};
    model_config cfg;
    if (model_config_load(&cfg, dir, &err)) {
        fprintf(stderr, "bench-train-step: %s\n", err.message);
        return 1;
    }
    bench_shape s = {
        .samples = samples, .grid = 224 / cfg.vision.patch_size, .image_tok = cfg.image_token_id,
        .vstart = cfg.vision_start_token_id, .vend = cfg.vision_end_token_id,
        .merge = cfg.vision.spatial_merge_size,
        .patch_dim = cfg.vision.in_channels * cfg.vision.temporal_patch_size *
                     cfg.vision.patch_size * cfg.vision.patch_size,
    };
    bench_batch bb;
    if (bench_batch_make(&bb, &s, seed)) {
        fprintf(stderr, "bench-train-step: out of memory for the batch\n");
        return 1;
    }
    qwen2vl_budget budget = { .max_tokens = bb.b.n_tokens, .max_patches = samples * s.grid * s.grid,
                              .max_seqs = samples, .max_images = samples };
    qwen2vl_model *m = NULL;
    if (qwen2vl_create(&m, &cfg, &budget, ops_cpu(), &err) ||
        qwen2vl_load_weights(m, dir, &err)) {
        fprintf(stderr, "bench-train-step: %s\n", err.message);
        qwen2vl_free(m);
        bench_batch_free(&bb);
        return 1;
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("adaptd: %zu params, %d tokens, %d patches, %d threads\n", qwen2vl_num_params(m),
           bb.b.n_tokens, budget.max_patches, threads);

    /* wall time is the benchmark; the process's CPU time per step is printed beside it, since
     * on a shared machine it moves far less with other people's load */
    double *times = malloc((size_t)steps * sizeof(double)), cpu = 0;
    float loss = 0;
    int rc = 0;
    for (int i = 0; i < warmup + steps && !rc; i++) {
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        qwen2vl_zero_grads(m);
        rc = qwen2vl_forward_backward(m, &bb.b, &loss, &err);
        double dt = clock_s(CLOCK_MONOTONIC) - t0;
        if (i >= warmup) {
            times[i - warmup] = dt;
            cpu += clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    if (rc) {
        fprintf(stderr, "bench-train-step: %s\n", err.message);
    } else {
        printf("adaptd loss %.7f\n", (double)loss);
        printf("adaptd step_s");
        for (int i = 0; i < steps; i++) printf(" %.4f", times[i]);
        printf("\n");
        qsort(times, (size_t)steps, sizeof(double), cmp_double);
        printf("adaptd median_s %.4f\n", times[steps / 2]);
        printf("adaptd cpu_s_per_step %.4f\n", cpu / steps);
    }
    free(times);
    qwen2vl_free(m);
    bench_batch_free(&bb);
    return rc ? 1 : 0;
}
