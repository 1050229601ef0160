/* bench_loader: the throughput of adapt-worker's training data loader alone (issue 5's benchmark,
 * tools/scripts/bench_loader.sh runs it beside a training run).
 *
 * It drives worker/train_data.c exactly as the training loop does — train_data_prepare over a
 * step's sample indices (read records, then decode → resize → patchify → conversation → chat
 * render → tokens on the loader's TRAIN_DATA_THREADS threads, then the pack plan), and
 * train_data_build of every micro-batch (the copy into the model's batch arrays) — but with no
 * model, so the time is the loader's and nothing else's. Steps take consecutive indices, wrapping
 * at the corpus end; one untimed warm-up pass reads the whole corpus into the page cache first.
 *
 *   bench-loader --spec JOB.json [--batch B] [--samples N] [--rounds R]
 *
 * Prints one line per round ("round R samples N seconds S samples_per_second X cpu_seconds C")
 * and a summary line ("loader median_samples_per_second X best Y ..."). */
#include "error.h"
#include "model_config.h"
#include "train_data.h"
#include "train_spec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One pass of n samples in steps of batch; *batches counts the micro-batches built. */
static int pass(train_data *d, uint64_t *cursor, uint64_t n, uint64_t batch, uint64_t *idx,
                size_t *batches, uint64_t *tokens, adapt_error *err)
{
    uint64_t count = train_data_count(d);
    for (uint64_t done = 0; done < n; done += batch) {
        uint64_t k = n - done < batch ? n - done : batch;
        for (uint64_t i = 0; i < k; i++) idx[i] = (*cursor + i) % count;
        if (train_data_prepare(d, idx, (size_t)k, *cursor, err)) return -1;
        *cursor = (*cursor + k) % count;
        *tokens += train_data_tokens(d);
        for (size_t b = 0; b < train_data_batches(d); b++) {
            qwen2vl_batch mb;
            if (train_data_build(d, b, 1.0f, &mb, err)) return -1;
            (*batches)++;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *spec_path = NULL;
    uint64_t batch = 8, samples = 512;
    int rounds = 3;
    for (int i = 1; i < argc; i++) {
        int has = i + 1 < argc;
        if (!strcmp(argv[i], "--spec") && has) spec_path = argv[++i];
        else if (!strcmp(argv[i], "--batch") && has) batch = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--samples") && has) samples = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rounds") && has) rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-loader --spec JOB.json [--batch B] [--samples N] "
                            "[--rounds R]\n");
            return 2;
        }
    }
    if (!spec_path || batch == 0 || samples == 0 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "bench-loader: --spec is required; batch, samples and rounds > 0\n");
        return 2;
    }
    adapt_error err = {0};
    Adaptd__JobSpec *job = NULL;
    Adaptd__TrainSpec *spec = NULL;
    if (train_spec_load(spec_path, &job, &spec, &err)) {
        fprintf(stderr, "bench-loader: %s: %s\n", spec_path, err.message);
        return 1;
    }
    model_config cfg;
    train_data *d = NULL;
    int rc = model_config_load(&cfg, spec->model_path, &err);
    if (!rc) rc = train_data_open(&d, spec, NULL, &cfg, &err);
    uint64_t *idx = rc ? NULL : malloc(batch * sizeof *idx);
    if (!rc && !idx) {
        rc = -1;
        snprintf(err.message, sizeof err.message, "no memory");
    }
    double *rate = calloc((size_t)rounds, sizeof *rate);
    uint64_t cursor = 0, tokens = 0;
    size_t batches = 0;
    /* warm-up: the whole corpus once (page cache, allocator, tokenizer caches) */
    if (!rc) rc = pass(d, &cursor, train_data_count(d), batch, idx, &batches, &tokens, &err);
    if (!rc)
        printf("corpus %llu records, batch %llu, %d loader threads, warm-up %zu micro-batches\n",
               (unsigned long long)train_data_count(d), (unsigned long long)batch,
               TRAIN_DATA_THREADS, batches);
    for (int r = 0; !rc && r < rounds; r++) {
        batches = 0;
        tokens = 0;
        double w0 = clock_of(CLOCK_MONOTONIC), c0 = clock_of(CLOCK_PROCESS_CPUTIME_ID);
        rc = pass(d, &cursor, samples, batch, idx, &batches, &tokens, &err);
        double w = clock_of(CLOCK_MONOTONIC) - w0, c = clock_of(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (rc) break;
        rate[r] = (double)samples / w;
        printf("round %d samples %llu seconds %.4f samples_per_second %.1f cpu_seconds %.4f "
               "cpu_ms_per_sample %.3f tokens_per_sample %.1f micro_batches %zu\n", r + 1,
               (unsigned long long)samples, w, rate[r], c, 1e3 * c / (double)samples,
               (double)tokens / (double)samples, batches);
        fflush(stdout);
    }
    if (!rc) {
        double best = 0.0;
        for (int r = 0; r < rounds; r++) best = rate[r] > best ? rate[r] : best;
        qsort(rate, (size_t)rounds, sizeof *rate, cmp_double);
        double med = rounds % 2 ? rate[rounds / 2] : 0.5 * (rate[rounds / 2 - 1] + rate[rounds / 2]);
        printf("loader median_samples_per_second %.1f best %.1f rounds %d\n", med, best, rounds);
    } else {
        fprintf(stderr, "bench-loader: %s\n", err.message);
    }
    free(rate);
    free(idx);
    train_data_close(d);
    if (job) train_spec_free_job(job);
    else train_spec_free(spec);
    return rc ? 1 : 0;
}
