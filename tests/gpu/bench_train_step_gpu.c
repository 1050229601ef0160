/* bench_train_step_gpu: one full fine-tuning step of Qwen2-VL on the CUDA backend, timed the way
 * .dev/hf_qwen2vl_step.py (the PyTorch + transformers anchor of ../shared/device/README.md) times
 * it, so the two JSON lines compare directly when run in the same device call.
 *
 * The step: zero the gradients, forward + backward over the packed micro-batch(es), AdamW through
 * worker/optim (global grad-norm clip at 1.0, weight decay 0.01, lr 1e-5, as the anchor's torch
 * AdamW defaults except the clip), then qwen2vl_weights_changed (bf16: the working copy rounded
 * again from the updated fp32 master, as adapt-worker's step does), all on ops_cuda(). The batch
 * is the anchor's: B samples, each one sequence of TEXT_LEN tokens (16 random text tokens,
 * <|vision_start|>, SIDE/28 squared image tokens, <|vision_end|>, random text to TEXT_LEN) with
 * one SIDE x SIDE image ((SIDE/14)^2 patches of random pixels, grid (1, SIDE/14, SIDE/14)), loss
 * on the text after the image, packed back to back as adapt-worker packs them.
 *
 * Precision (--precision, default bf16, the setting): bf16 = the model's mixed path
 * (qwen2vl_budget.precision QWEN2VL_BF16: bf16 working copy of the weights and bf16 activations,
 * cuBLASLt bf16 products with fp32 accumulation; fp32 master weights, gradients and AdamW
 * moments), the anchor's "fp32 master weights + bf16 autocast" counterpart; fp32 = fp32
 * everything (cuBLASLt CUBLAS_COMPUTE_32F, TF32 off), for reference.
 *
 * Micro-batches: the B samples are split into N equal micro-batches whose gradients accumulate
 * (the worker's smaller micro_batch_tokens), N a divisor of B. --micro N forces N. Otherwise the
 * fewest that work are taken: N = 1, 2, 4 ... (the divisors of B in order) until the model and
 * optimizer can be allocated and, with --max-mem-gb X, the peak memory stays at most X. The
 * peak is checked right after set-up (activations are planned there, so a split too big is
 * dropped before any weights are written) and again after the warm-up steps; the timed steps
 * are run only with the split kept.
 *
 * Peak memory, in GiB (2^30 B: hf_qwen2vl_step.py's "peak_mem_gb" is max_memory_allocated /
 * 2**30, so --max-mem-gb takes the anchor's figure as it prints it): cudaMemGetInfo's free memory
 * before the backend set up, minus the lowest free memory seen after set-up, after every
 * micro-batch's forward + backward and after every optimizer step (the backend allocates only
 * with cudaMalloc at set-up, never inside a step, so these samples see its high-water mark):
 * everything the run holds, cuBLASLt workspace included, the CUDA context not — more than the
 * anchor counts (its allocator's tensors only), never less. On a host backend (--backend) there
 * is no cudaMemGetInfo: the figure is the model's resident bytes plus the two AdamW moments, an
 * estimate that lets the micro-batch choice itself be tested without a GPU.
 *
 * Reported, as one JSON line: precision, micro-batches, step time (median of the timed steps),
 * samples/s, model TFLOP/s by the anchor's definition (6 x parameters x tokens for each tower:
 * vision parameters x patches + (LM body + LM head) x TEXT_LEN, attention left out), peak memory,
 * the bf16 matrix-product peak of the card measured in this run (an 8192^3 cuBLASLt bf16 product,
 * as the anchor's gemm_peak measures torch's) and the fp32 one, and the model TFLOP/s as a share
 * of each.
 *
 * Config: tests/data/qwen2vl_2b_config.json, the published config.json of
 * Qwen/Qwen2-VL-2B-Instruct on Hugging Face (the same numbers as the anchor's CFG dict and
 * tests/reference/qwen2vl_ref.py's qwen2_vl_2b_config).
 *
 * Usage: bench_train_step_gpu [--backend NAME] [--precision bf16|fp32] [--micro N]
 *                             [--max-mem-gb X] CONFIG.json [B SIDE TEXT_LEN [STEPS [WARMUP]]]
 *        (defaults cuda, bf16, 8 448 512, 3 timed steps after 1 warm-up step; --backend
 *        cpu-guarded runs the same harness on a host table, a check of this program where there
 *        is no GPU: no matrix-product peaks then, and the memory figure is the estimate above)
 * Exit: 0 done (the JSON line; "mem_limit_met": false when even the largest split exceeds
 * --max-mem-gb), 1 a CUDA or model failure (named on stderr), 2 bad usage, 77 no CUDA device. */
#include "adapt_config.h"
#include "model_config.h"
#include "ops.h"
#include "ops_cuda.h"
#include "optim.h"
#include "qwen2vl.h"
#include "train.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PATCH_DIM = 3 * 2 * 14 * 14, PRE_TEXT = 16 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
/* the backend: ops_cuda(), or (--backend NAME) a host table that stands in for it, to prove this
 * harness where there is no GPU (no matrix-product peaks or memory figures then) */
static const ops_table *ops;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double rng_uniform(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static double rng_normal(void)  /* Box-Muller */
{
    double u = rng_uniform(), v = rng_uniform();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "bench_train_step_gpu: %s: %s\n", what, detail);
    return 1;
}

/* the backend's first recorded failure, if any */
static int cuda_check(const char *where)
{
    char msg[600];
    if (ops->sync(msg, sizeof msg) == 0) return 0;
    return fail(where, msg);
}

static size_t free_bytes(void)
{
    size_t fr = 0, total = 0;
    if (ops != ops_cuda() || cudaMemGetInfo(&fr, &total) != cudaSuccess) return 0;
    return fr;
}

/* ---- matrix-product peaks ------------------------------------------------------------------- */

/* TFLOP/s of n x n x n products through the table's cuBLASLt path (bf16 with fp32 accumulation,
 * or fp32), timed with events on the compute stream over `reps` products after 3 warm-ups. 0 when
 * the buffers do not fit (reported). Random data: all-zero operands would draw less power and
 * clock higher than real ones. */
static double gemm_tflops(int n, int bf16, int reps)
{
    const ops_table *g = ops_cuda();
    size_t elems = (size_t)n * n, esz = bf16 ? 2 : 4;
    void *a = g->mem_alloc(elems * esz), *b = g->mem_alloc(elems * esz), *c = g->mem_alloc(elems * esz);
    double tflops = 0;
    if (!a || !b || !c) {
        fprintf(stderr, "bench_train_step_gpu: no room for the %d^3 %s product\n", n,
                bf16 ? "bf16" : "fp32");
        ops_cuda_clear_error();
        goto out;
    }
    enum { CHUNK = 1 << 20 };
    float *host = malloc(CHUNK * sizeof *host);
    ops_bf16 *host16 = malloc(CHUNK * sizeof *host16);
    for (size_t i = 0; i < CHUNK; i++) {
        host[i] = (float)(rng_uniform() * 2.0 - 1.0);
        host16[i] = ops_bf16_from_f32(host[i]);
    }
    for (size_t off = 0; off < elems; off += CHUNK) {
        size_t len = elems - off < CHUNK ? elems - off : CHUNK;
        g->mem_upload((char *)a + off * esz, bf16 ? (void *)host16 : (void *)host, len * esz);
        g->mem_upload((char *)b + off * esz, bf16 ? (void *)host16 : (void *)host, len * esz);
    }
    free(host);
    free(host16);
    cudaStream_t s = (cudaStream_t)ops_cuda_stream();
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        fprintf(stderr, "bench_train_step_gpu: cudaEventCreate failed\n");
        goto out;
    }
    for (int r = -3; r < reps; r++) {
        if (r == 0) cudaEventRecord(e0, s);
        if (bf16)
            ops_cuda_matmul_bf16(c, a, b, n, n, n, 0, 0, n, n, n, 1.0f, 0.0f, NULL, OPS_CUDA_EPI_NONE);
        else
            g->matmul_f32(c, a, b, n, n, n, 0, 0, n, n, n, 1.0f, 0.0f);
    }
    cudaEventRecord(e1, s);
    float ms = 0;
    if (cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess &&
        ms > 0 && cuda_check("gemm peak") == 0)
        tflops = 2.0 * n * (double)n * n * reps / (ms * 1e-3) / 1e12;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
out:
    g->mem_free(a);
    g->mem_free(b);
    g->mem_free(c);
    return tflops;
}

/* ---- the batch ------------------------------------------------------------------------------ */

typedef struct bench_batch {
    int   *ids, *labels, *cu, *grid;
    float *pix;
    int    samples, text_len, side_patches;
    double scored;  /* positions scored in the whole batch: the global loss normaliser */
} bench_batch;

static void batch_make(bench_batch *bb, const model_config *cfg, int B, int side, int text_len)
{
    int g = side / 14, n_patch = g * g, n_img_tok = n_patch / 4;
    int post = text_len - PRE_TEXT - 2 - n_img_tok;
    size_t n_tok = (size_t)B * text_len;
    bb->samples = B;
    bb->text_len = text_len;
    bb->side_patches = g;
    bb->ids = malloc(n_tok * sizeof *bb->ids);
    bb->labels = malloc(n_tok * sizeof *bb->labels);
    bb->cu = malloc(((size_t)B + 1) * sizeof *bb->cu);
    bb->grid = malloc((size_t)B * 3 * sizeof *bb->grid);
    bb->pix = malloc((size_t)B * n_patch * PATCH_DIM * sizeof *bb->pix);
    int text_vocab = cfg->text.vocab_size < 150000 ? cfg->text.vocab_size / 2 : 150000;
    bb->scored = 0;
    for (int s = 0; s < B; s++) {
        int *ids = bb->ids + (size_t)s * text_len, *lab = bb->labels + (size_t)s * text_len, t = 0;
        for (int i = 0; i < PRE_TEXT; i++) ids[t++] = (int)(rng_next() % (uint64_t)text_vocab);
        ids[t++] = cfg->vision_start_token_id;
        for (int i = 0; i < n_img_tok; i++) ids[t++] = cfg->image_token_id;
        ids[t++] = cfg->vision_end_token_id;
        for (int i = 0; i < post; i++) ids[t++] = (int)(rng_next() % (uint64_t)text_vocab);
        for (int i = 0; i < text_len; i++)
            lab[i] = i < PRE_TEXT + 2 + n_img_tok ? OPS_LABEL_IGNORE : ids[i];
        for (int i = 1; i < text_len; i++) bb->scored += lab[i] != OPS_LABEL_IGNORE;
        bb->cu[s] = s * text_len;
        bb->grid[3 * s] = 1;
        bb->grid[3 * s + 1] = g;
        bb->grid[3 * s + 2] = g;
    }
    bb->cu[B] = B * text_len;
    for (size_t i = 0; i < (size_t)B * n_patch * PATCH_DIM; i++) bb->pix[i] = (float)rng_normal();
}

/* micro-batch k of `micro` (equal runs of whole samples), its cu_seqlens rebased into cu_mb */
static qwen2vl_batch batch_part(const bench_batch *bb, int k, int micro, int *cu_mb)
{
    int per = bb->samples / micro, s0 = k * per, n_patch = bb->side_patches * bb->side_patches;
    for (int s = 0; s <= per; s++) cu_mb[s] = s * bb->text_len;
    return (qwen2vl_batch){ .n_tokens = per * bb->text_len,
                            .input_ids = bb->ids + (size_t)s0 * bb->text_len,
                            .labels = bb->labels + (size_t)s0 * bb->text_len, .n_seqs = per,
                            .cu_seqlens = cu_mb, .n_images = per,
                            .image_grid_thw = bb->grid + 3 * s0,
                            .pixel_values = bb->pix + (size_t)s0 * n_patch * PATCH_DIM,
                            .loss_normaliser = (float)bb->scored };
}

/* Random weights quickly: matrices ~ normal(0, initializer_range) read from one 16M-float table
 * at a random offset per tensor (qwen2vl_init_weights draws all 2.2 billion on the host, seconds
 * of device time for nothing a timing needs), norm weights 1, biases 0. Through qwen2vl_copy_in,
 * so it works on any backend. */
static void weights_fill(qwen2vl_model *m, double std)
{
    enum { TABLE = 1 << 24, CHUNK = TABLE / 2 };
    float *table = malloc((size_t)TABLE * sizeof *table), *ones = malloc(CHUNK * sizeof *ones);
    for (size_t i = 0; i < TABLE; i++) table[i] = (float)(std * rng_normal());
    for (size_t i = 0; i < CHUNK; i++) ones[i] = 1.0f;
    for (size_t i = 0; i < qwen2vl_num_tensors(m); i++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(m, i);
        if (!t->is_matrix && !t->is_norm) continue;  /* biases: the buffer is zeroed at creation */
        for (size_t done = 0; done < t->numel;) {
            size_t len = t->numel - done < CHUNK ? t->numel - done : CHUNK;
            qwen2vl_copy_in(m, 0, t->offset + done, len,
                            t->is_norm ? ones : table + rng_next() % (TABLE - CHUNK));
            done += len;
        }
    }
    free(table);
    free(ones);
}

/* ---- one split: the model and optimizer for B / micro samples per pass ---------------------- */

typedef struct bench_run {
    qwen2vl_model *m;
    optim          opt;
    int            opt_open;
    int            micro;
    size_t         n_vis;      /* vision tower + merger parameters ("visual" in transformers) */
    size_t         free_min;   /* lowest cudaMemGetInfo free memory seen (cuda) */
} bench_run;

static size_t free0;  /* free device memory before the backend set up (cuda), else 0 */

static void run_close(bench_run *r)
{
    if (r->opt_open) optim_close(&r->opt);
    if (r->m) qwen2vl_free(r->m);
    r->opt_open = 0;
    r->m = NULL;
}

/* a memory sample: the high-water mark follows the lowest free memory seen */
static void mem_sample(bench_run *r)
{
    size_t fr = free_bytes();
    if (fr && fr < r->free_min) r->free_min = fr;
}

/* peak memory so far in GiB (see the top of this file: measured on cuda, an estimate on a host
 * backend) */
static double mem_peak_gib(const bench_run *r)
{
    if (ops != ops_cuda())
        return ((double)qwen2vl_resident_bytes(r->m) + 2.0 * sizeof(float) * qwen2vl_num_params(r->m)) /
               1073741824.0;
    return free0 > r->free_min ? (double)(free0 - r->free_min) / 1073741824.0 : 0.0;
}

/* Model and optimizer for `micro` micro-batches of B / micro samples: 0, ADAPT_ENOMEM (does not
 * fit: r is closed), or another code with err set. */
static int run_open(bench_run *r, const model_config *cfg, qwen2vl_precision prec, int B,
                    int micro, int text_len, int g, const optim_config *oc, adapt_error *err)
{
    memset(r, 0, sizeof *r);
    r->micro = micro;
    r->free_min = SIZE_MAX;
    int per = B / micro;
    qwen2vl_budget bud = { .max_tokens = per * text_len, .max_patches = per * g * g,
                           .max_seqs = per, .max_images = per, .precision = prec };
    int rc = qwen2vl_create(&r->m, cfg, &bud, ops, err);
    if (rc) {
        r->m = NULL;
        run_close(r);
        return rc;
    }
    size_t nt = qwen2vl_num_tensors(r->m);
    optim_tensor *ot = train_optim_tensors(r->m, 0, 0, NULL);  /* the worker's, nothing frozen */
    for (size_t i = 0; i < nt; i++)
        if (qwen2vl_tensor_at(r->m, i)->tower != QWEN2VL_TOWER_LLM)
            r->n_vis += qwen2vl_tensor_at(r->m, i)->numel;
    rc = !ot ? adapt_fail(err, ADAPT_ENOMEM, "no memory for the optimizer's tensor table")
            : optim_init(&r->opt, ops, oc, ot, nt, qwen2vl_num_params(r->m), err);
    free(ot);
    if (rc) {
        run_close(r);
        return rc;
    }
    r->opt_open = 1;
    mem_sample(r);
    return 0;
}

/* One training step: zero grads, forward + backward over every micro-batch, AdamW, the bf16
 * working copy refreshed. 0, or 1 with the failure on stderr. */
static int run_step(bench_run *r, const bench_batch *bb, int *cu_mb, float *loss, float *gnorm)
{
    adapt_error err = {0};
    qwen2vl_zero_grads(r->m);
    *loss = 0;
    for (int k = 0; k < r->micro; k++) {
        qwen2vl_batch b = batch_part(bb, k, r->micro, cu_mb);
        float part = 0;
        if (qwen2vl_forward_backward(r->m, &b, &part, &err)) return fail("forward_backward", err.message);
        *loss += part;
        mem_sample(r);
    }
    double lr = 0;
    if (optim_step(&r->opt, qwen2vl_param_buffer(r->m), qwen2vl_grad_buffer(r->m), gnorm, &lr, &err))
        return fail("optim_step", err.message);
    qwen2vl_weights_changed(r->m);
    if (cuda_check("training step")) return 1;
    mem_sample(r);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_train_step_gpu [--backend NAME] [--precision bf16|fp32] "
            "[--micro N] [--max-mem-gb X] CONFIG.json [B SIDE TEXT_LEN [STEPS [WARMUP]]]\n");
    return 2;
}

int main(int argc, char **argv)
{
    ops = ops_cuda();
    qwen2vl_precision prec = QWEN2VL_BF16;
    int micro_forced = 0;
    double max_mem = 0;  /* GiB; 0: no limit */
    int a = 1;
    for (; a + 1 < argc && strncmp(argv[a], "--", 2) == 0; a += 2) {
        const char *opt = argv[a], *val = argv[a + 1];
        char *end = NULL;
        if (strcmp(opt, "--backend") == 0) {
            ops = ops_by_name(val);
            if (!ops) {
                fprintf(stderr, "bench_train_step_gpu: --backend: unknown backend %s\n", val);
                return 2;
            }
        } else if (strcmp(opt, "--precision") == 0) {
            if (strcmp(val, "bf16") == 0) prec = QWEN2VL_BF16;
            else if (strcmp(val, "fp32") == 0) prec = QWEN2VL_FP32;
            else {
                fprintf(stderr, "bench_train_step_gpu: --precision: %s is neither bf16 nor fp32\n", val);
                return 2;
            }
        } else if (strcmp(opt, "--micro") == 0) {
            long v = strtol(val, &end, 10);
            if (*val == 0 || *end || v < 1 || v > 1 << 20) {
                fprintf(stderr, "bench_train_step_gpu: --micro: %s is not a positive count\n", val);
                return 2;
            }
            micro_forced = (int)v;
        } else if (strcmp(opt, "--max-mem-gb") == 0) {
            max_mem = strtod(val, &end);
            if (*val == 0 || *end || !(max_mem > 0)) {
                fprintf(stderr, "bench_train_step_gpu: --max-mem-gb: %s is not a positive size "
                        "in GiB\n", val);
                return 2;
            }
        } else {
            fprintf(stderr, "bench_train_step_gpu: unknown option %s\n", opt);
            return usage();
        }
    }
    argc -= a - 1;
    argv += a - 1;
    if (argc < 2 || argc > 7 || strncmp(argv[1], "--", 2) == 0) return usage();
    int B = argc > 2 ? atoi(argv[2]) : 8, side = argc > 3 ? atoi(argv[3]) : 448;
    int text_len = argc > 4 ? atoi(argv[4]) : 512, steps = argc > 5 ? atoi(argv[5]) : 3;
    int warm = argc > 6 ? atoi(argv[6]) : 1;
    int g = side / 14;
    if (B < 1 || side % 28 || side < 28 || steps < 1 || warm < 0 ||
        text_len < PRE_TEXT + 2 + g * g / 4 + 2) {
        fprintf(stderr, "bench_train_step_gpu: B >= 1, SIDE a multiple of 28, TEXT_LEN >= %d, "
                "STEPS >= 1, WARMUP >= 0\n", PRE_TEXT + 4 + g * g / 4);
        return 2;
    }
    if (micro_forced && B % micro_forced) {
        fprintf(stderr, "bench_train_step_gpu: --micro %d does not divide B = %d\n", micro_forced, B);
        return 2;
    }
    const char *prec_name = prec == QWEN2VL_BF16 ? "bf16" : "fp32";
    adapt_error err = {0};
    model_config cfg;
    if (model_config_load(&cfg, argv[1], &err)) return fail(argv[1], err.message) + 1;
    char device[300];
    snprintf(device, sizeof device, "host (%s)", ops->backend);
    double peak_bf16 = 0, peak_f32 = 0;
    if (ops == ops_cuda()) {
        int ndev = 0;
        cudaError_t ce = cudaGetDeviceCount(&ndev);
        if (ce != cudaSuccess || ndev == 0) {
            fprintf(stderr, "bench_train_step_gpu: no CUDA device (%s): skipped\n",
                    ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
            return 77;
        }
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess)
            return fail("cudaGetDeviceProperties", "failed");
        snprintf(device, sizeof device, "%s", prop.name);
        free0 = free_bytes();  /* the context exists now: it is not counted */
        char msg[300];
        if (ops_cuda_set_device(0, msg, sizeof msg)) return fail("ops_cuda_set_device", msg);
        fprintf(stderr, "bench_train_step_gpu: %s, %.0f GiB; %s path; measuring matrix-product "
                "peaks\n", prop.name, prop.totalGlobalMem / 1073741824.0, prec_name);
        peak_bf16 = gemm_tflops(8192, 1, 10);
        peak_f32 = gemm_tflops(4096, 0, 5);
    }

    bench_batch bb;
    batch_make(&bb, &cfg, B, side, text_len);
    optim_config oc = { .lr = { 1e-5, 1e-5 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = 0.01, .max_grad_norm = 1.0, .warmup_ratio = 0,
                        .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = (uint64_t)(warm + steps) };
    double *times = calloc((size_t)steps, sizeof *times);
    int *cu_mb = malloc(((size_t)B + 1) * sizeof *cu_mb);
    float first_loss = NAN, last_loss = NAN, gnorm = 0;
    bench_run run = {0};
    int have = 0, limit_met = 1;
    /* the splits to try, fewest micro-batches first: the divisors of B, or the forced one */
    for (int micro = micro_forced ? micro_forced : 1; micro <= B && !have; micro++) {
        if (B % micro) continue;
        int next = 0;  /* the next split, 0 when this is the last one */
        for (int k = micro + 1; !micro_forced && k <= B && !next; k++) next = B % k == 0 ? k : 0;
        int rc = run_open(&run, &cfg, prec, B, micro, text_len, g, &oc, &err);
        if (rc == ADAPT_ENOMEM && next) {
            if (ops == ops_cuda()) ops_cuda_clear_error();  /* the failed cudaMalloc, recorded */
            fprintf(stderr, "bench_train_step_gpu: %d micro-batch(es) of %d samples do not fit "
                    "(%s); trying %d\n", micro, B / micro, err.message, next);
            continue;
        }
        if (rc) return fail("model and optimizer", err.message);
        double at_setup = mem_peak_gib(&run);
        fprintf(stderr, "bench_train_step_gpu: %d micro-batch(es) of %d samples: %.4f GiB after "
                "set-up (resident %.4f GiB)\n", micro, B / micro, at_setup,
                qwen2vl_resident_bytes(run.m) / 1073741824.0);
        if (max_mem > 0 && at_setup > max_mem && next) {
            fprintf(stderr, "bench_train_step_gpu: over --max-mem-gb %.3f; trying %d\n", max_mem, next);
            run_close(&run);
            continue;
        }
        weights_fill(run.m, 0.02);
        if (cuda_check("set-up")) return 1;
        int over = 0;
        for (int it = 0; it < warm + steps; it++) {
            double t0 = now_s();
            float loss = 0;
            if (run_step(&run, &bb, cu_mb, &loss, &gnorm)) return 1;
            double dt = now_s() - t0;
            if (it == 0) first_loss = loss;
            last_loss = loss;
            if (it >= warm) times[it - warm] = dt;
            fprintf(stderr, "bench_train_step_gpu: step %d%s: %.3f s, loss %.5f, grad norm %.4g, "
                    "peak %.4f GiB\n", it + 1, it < warm ? " (warm-up)" : "", dt, loss, gnorm,
                    mem_peak_gib(&run));
            /* after the warm-up (or the first step without one): a split over the limit is
             * dropped for the next before the timed steps */
            if (it == (warm ? warm - 1 : 0) && max_mem > 0 && mem_peak_gib(&run) > max_mem && next) {
                fprintf(stderr, "bench_train_step_gpu: peak %.2f GiB over --max-mem-gb %.2f; "
                        "trying %d\n", mem_peak_gib(&run), max_mem, next);
                over = 1;
                break;
            }
        }
        if (over) {
            run_close(&run);
            continue;
        }
        have = 1;
    }
    if (!have) return fail("micro-batches", "no split of the batch was run");
    double peak_gib = mem_peak_gib(&run);
    if (max_mem > 0 && peak_gib > max_mem) {
        limit_met = 0;
        fprintf(stderr, "bench_train_step_gpu: peak %.2f GiB exceeds --max-mem-gb %.2f even with "
                "%d micro-batches\n", peak_gib, max_mem, run.micro);
    }
    if (!isfinite(first_loss) || !isfinite(last_loss)) return fail("loss", "not finite");
    /* median of the timed steps */
    for (int i = 1; i < steps; i++)
        for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
            double t = times[j]; times[j] = times[j - 1]; times[j - 1] = t;
        }
    double dt = times[steps / 2];
    size_t n_params = qwen2vl_num_params(run.m), n_vis = run.n_vis;
    size_t V = (size_t)cfg.text.vocab_size, d = (size_t)cfg.text.hidden_size;
    double n_lm_body = (double)n_params - (double)n_vis - (double)(V * d);
    double flops = 6.0 * (double)n_vis * g * g * B + 6.0 * (n_lm_body + (double)(V * d)) * text_len * B;
    const char *note = prec == QWEN2VL_BF16
        ? "bf16 weights (working copy) and activations, cuBLASLt bf16 with fp32 accumulation; "
          "fp32 master weights, gradients and AdamW moments"
        : "fp32 weights, gradients and activations, cuBLASLt COMPUTE_32F (TF32 off)";
    printf("{\"bench\": \"adaptd train step\", \"device\": \"%s\", \"backend\": \"%s\", "
           "\"precision\": \"%s\", \"note\": \"%s\", "
           "\"B\": %d, \"image\": %d, \"text_len\": %d, \"micro_batches\": %d, \"params\": %zu, "
           "\"vis_params\": %zu, \"model_resident_gb\": %.1f, \"step_s\": %.4f, \"samples_s\": %.2f, "
           "\"lm_tokens_s\": %.0f, \"tflops\": %.1f, \"peak_mem_gb\": %.2f, \"mem_unit\": \"GiB\", "
           "\"peak_mem_source\": \"%s\", \"max_mem_gb\": %.2f, \"mem_limit_met\": %s, "
           "\"gemm_bf16_tflops\": %.1f, \"gemm_f32_tflops\": %.1f, \"share_of_bf16_peak\": %.3f, "
           "\"share_of_f32_peak\": %.3f, \"loss_first\": %.5f, \"loss_last\": %.5f}\n",
           device, ops->backend, prec_name, note, B, side, text_len, run.micro, n_params, n_vis,
           qwen2vl_resident_bytes(run.m) / 1073741824.0, dt, B / dt, (double)B * text_len / dt,
           flops / dt / 1e12, peak_gib,
           ops == ops_cuda() ? "cudaMemGetInfo high-water" : "estimate: resident + moments",
           max_mem, limit_met ? "true" : "false", peak_bf16, peak_f32,
           peak_bf16 > 0 ? flops / dt / 1e12 / peak_bf16 : 0.0,
           peak_f32 > 0 ? flops / dt / 1e12 / peak_f32 : 0.0, first_loss, last_loss);
    fflush(stdout);
    run_close(&run);
    free(cu_mb);
    free(times);
    free(bb.ids); free(bb.labels); free(bb.cu); free(bb.grid); free(bb.pix);
    return cuda_check("teardown");
}
