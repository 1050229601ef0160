/* cmd_data_verify: `adaptctl data verify DIR` — read everything, trust nothing.
 *
 * Checks the manifest (corpus_open), then every shard's whole-file crc32c against the manifest
 * and every frame's crc32c (shard_reader_check), and unless --no-decode unpacks every record and
 * decodes its image completely, comparing type and size with what the Sample says. The one idea:
 * the work is a list of independent items — "check shard s" (phase 1), then "decode records a..b
 * of shard s" for the shards that passed (phase 2) — that --jobs threads take in turn, each with
 * its own shard_reader, so one large shard is decoded in parallel too. Every fault is named (shard file, record, what) and counted; the exit
 * code is 1 when there was any. */
#include "commands.h"
#include "corpus.h"
#include "image_decode.h"

#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VERIFY_CHUNK_RECORDS 256
#define VERIFY_MAX_PRINTED   50

typedef struct verify_item {
    uint64_t shard;
    uint64_t first;   /* decode items: records [first, first + count) */
    uint64_t count;
    int      check;   /* 1: checksum item */
} verify_item;

typedef struct verify_run {
    const char              *dir;
    const Adaptd__Manifest  *m;
    verify_item             *items;
    size_t                   n_items;
    size_t                   next;        /* guarded by mu */
    uint64_t                 faults;      /* guarded by mu */
    uint64_t                 decoded;     /* guarded by mu */
    uint8_t                 *shard_bad;   /* per shard: phase 1 found a fault (guarded by mu) */
    pthread_mutex_t          mu;
} verify_run;

static void verify_fault(verify_run *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void verify_fault(verify_run *v, const char *fmt, ...)
{
    pthread_mutex_lock(&v->mu);
    if (v->faults++ < VERIFY_MAX_PRINTED) {
        va_list ap;
        va_start(ap, fmt);
        fputs("adaptctl data verify: FAULT: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    pthread_mutex_unlock(&v->mu);
}

static void shard_path(const verify_run *v, uint64_t s, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", v->dir, v->m->shards[s]->path);
}

static void shard_mark_bad(verify_run *v, uint64_t s)
{
    pthread_mutex_lock(&v->mu);
    v->shard_bad[s] = 1;
    pthread_mutex_unlock(&v->mu);
}

static void verify_check(verify_run *v, shard_reader *r, uint64_t s)
{
    const Adaptd__ShardInfo *info = v->m->shards[s];
    adapt_error err = {0};
    uint32_t crc = 0;
    if (shard_reader_count(r) != info->records) {
        shard_mark_bad(v, s);
        verify_fault(v, "%s: holds %llu records, the manifest says %llu", shard_reader_path(r),
                     (unsigned long long)shard_reader_count(r),
                     (unsigned long long)info->records);
    }
    if (shard_reader_check(r, &crc, &err)) {
        shard_mark_bad(v, s);
        verify_fault(v, "%s", err.message);
    } else if (crc != info->crc32c) {
        shard_mark_bad(v, s);
        verify_fault(v, "%s: whole-file crc32c %08x differs from the manifest's %08x",
                     shard_reader_path(r), crc, info->crc32c);
    }
}

/* One record: unpack, decode the image, compare with the Sample's fields. */
static void verify_record(verify_run *v, shard_reader *r, uint64_t i, imgdec_decoder *dec)
{
    const uint8_t *pb;
    size_t len;
    Adaptd__Sample *smp = NULL;
    adapt_error err = {0};
    if (shard_reader_read_raw(r, i, &pb, &len, &err) ||
        shard_sample_unpack(r, i, pb, len, &smp, &err)) {
        verify_fault(v, "%s", err.message);
        return;
    }
    imgdec_info info;
    if (smp->image.len == 0) {
        verify_fault(v, "%s: record %llu (id %s): image: empty", shard_reader_path(r),
                     (unsigned long long)i, smp->id);
    } else if (imgdec_decoder_validate(dec, smp->image.data, smp->image.len, 1, &info, &err)) {
        verify_fault(v, "%s: record %llu (id %s): image: %s", shard_reader_path(r),
                     (unsigned long long)i, smp->id, err.message);
    } else if (info.width != smp->width || info.height != smp->height ||
               strcmp(imgdec_media_type(info.format), smp->media_type)) {
        verify_fault(v, "%s: record %llu (id %s): image is %s %ux%u, the record says %s %ux%u",
                     shard_reader_path(r), (unsigned long long)i, smp->id,
                     imgdec_media_type(info.format), info.width, info.height, smp->media_type,
                     smp->width, smp->height);
    }
    adaptd__sample__free_unpacked(smp, NULL);
}

static void verify_item_run(verify_run *v, const verify_item *it, imgdec_decoder *dec)
{
    char path[PATH_MAX];
    shard_path(v, it->shard, path, sizeof path);
    shard_reader *r = NULL;
    adapt_error err = {0};
    if (shard_reader_open(&r, path, &err)) {
                if (it->check) {
            shard_mark_bad(v, it->shard);
            verify_fault(v, "%s", err.message);
        }
        return;
    }
    if (it->check) {
        verify_check(v, r, it->shard);
    } else {
        uint64_t end = it->first + it->count, n = shard_reader_count(r);
        for (uint64_t i = it->first; i < end && i < n; i++) verify_record(v, r, i, dec);
        pthread_mutex_lock(&v->mu);
        v->decoded += (end < n ? end : n) - (it->first < n ? it->first : n);
        pthread_mutex_unlock(&v->mu);
    }
    shard_reader_close(r);
}

static void *verify_worker(void *arg)
{
    verify_run *v = arg;
    imgdec_decoder *dec = imgdec_decoder_new();
    for (;;) {
        pthread_mutex_lock(&v->mu);
        size_t k = v->next < v->n_items ? v->next++ : v->n_items;
        pthread_mutex_unlock(&v->mu);
        if (k == v->n_items) break;
        if (!dec && !v->items[k].check) {
            verify_fault(v, "out of memory for an image decoder");
            continue;
        }
        verify_item_run(v, &v->items[k], dec);
    }
    imgdec_decoder_free(dec);
    return NULL;
}

/* Phase 1 checks every shard's checksums; phase 2 decodes the records of the shards that passed,
 * in chunks, so a damaged shard is reported once, by its checksum, and not again by every record
 * read from it. */
static int verify_plan(verify_run *v, int phase)
{
    size_t n = 0;
    for (size_t s = 0; s < v->m->n_shards; s++)
        n += phase == 1 ? 1 : (v->m->shards[s]->records + VERIFY_CHUNK_RECORDS - 1) /
                              VERIFY_CHUNK_RECORDS;
    free(v->items);
    v->items = calloc(n ? n : 1, sizeof *v->items);
    v->n_items = 0;
    v->next = 0;
    if (!v->items) return -1;
    for (size_t s = 0; s < v->m->n_shards; s++) {
        if (phase == 1) {
            v->items[v->n_items++] = (verify_item){.shard = s, .check = 1};
            continue;
        }
        if (v->shard_bad[s]) continue;
        for (uint64_t a = 0; a < v->m->shards[s]->records; a += VERIFY_CHUNK_RECORDS)
            v->items[v->n_items++] = (verify_item){.shard = s, .first = a,
                                                   .count = VERIFY_CHUNK_RECORDS};
    }
    return 0;
}

/* Runs the planned items on up to jobs threads (on this one when none can start). */
static void verify_phase(verify_run *v, int jobs)
{
    pthread_t threads[256];
    int started = 0;
    for (; started < jobs && (size_t)started < v->n_items; started++)
        if (pthread_create(&threads[started], NULL, verify_worker, v)) break;
    if (started == 0) verify_worker(v);
    for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
}

static void verify_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl data verify [--no-decode] [--jobs N] DIR\n"
        "\n"
        "Reads the whole corpus: the manifest, every shard's crc32c against the manifest, every\n"
        "frame's crc32c, and (unless --no-decode) every record, decoding every image in full.\n"
        "Exit 0 when all is well, 1 naming each fault (shard file, record), 2 bad usage.\n");
}

/* Reads the options; returns -1 to go on, else the exit code. */
static int verify_parse_args(int argc, char **argv, int *decode, int *jobs, const char **dir)
{
    static const struct option longopts[] = {
        {"no-decode", no_argument, NULL, 'n'}, {"jobs", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0},
    };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int c;
    *decode = 1;
    *jobs = cpus > 0 ? (int)cpus : 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hj:", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'n': *decode = 0; break;
        case 'j':
            *jobs = (int)strtol(optarg, &end, 10);
            if (*end || *jobs < 1 || *jobs > 256) {
                fprintf(stderr, "adaptctl data verify: --jobs %s: expected 1..256\n", optarg);
                return ADAPTCTL_EXIT_USAGE;
            }
            break;
        case 'h': verify_usage(stdout); return ADAPTCTL_EXIT_OK;
        default: verify_usage(stderr); return ADAPTCTL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        verify_usage(stderr);
        return ADAPTCTL_EXIT_USAGE;
    }
    *dir = argv[optind];
    return -1;
}

/* Both phases; returns -1 when out of memory. */
static int verify_corpus(verify_run *v, int decode, int jobs)
{
    v->shard_bad = calloc(v->m->n_shards ? v->m->n_shards : 1, 1);
    if (!v->shard_bad || verify_plan(v, 1)) return -1;
    verify_phase(v, jobs);
    if (!decode) return 0;
    if (verify_plan(v, 2)) return -1;
    verify_phase(v, jobs);
    for (size_t s = 0; s < v->m->n_shards; s++)
        if (v->shard_bad[s])
            fprintf(stderr, "adaptctl data verify: %s/%s: not decoded (its checksums failed)\n",
                    v->dir, v->m->shards[s]->path);
    return 0;
}

static void verify_print_summary(const verify_run *v, uint64_t records, int decode, double secs)
{
    uint64_t bytes = 0;
    for (size_t s = 0; s < v->m->n_shards; s++) bytes += v->m->shards[s]->bytes;
    double mb = (double)bytes / 1e6;
    if (secs <= 0) secs = 1e-9;
    char what[64];
    if (decode)
        snprintf(what, sizeof what, "checksums and %llu images", (unsigned long long)v->decoded);
    else
        snprintf(what, sizeof what, "checksums only (--no-decode)");
    printf("verified %s: %llu records in %zu shards, %.1f MB in %.2f s (%.1f MB/s, %.0f "
           "records/s), %s: %llu fault%s\n",
           v->dir, (unsigned long long)records, v->m->n_shards, mb, secs, mb / secs,
           (double)records / secs, what, (unsigned long long)v->faults,
           v->faults == 1 ? "" : "s");
    if (v->faults > VERIFY_MAX_PRINTED)
        fprintf(stderr, "adaptctl data verify: %llu more faults not printed\n",
                (unsigned long long)(v->faults - VERIFY_MAX_PRINTED));
}

int cmd_data_verify(int argc, char **argv)
{
    int decode, jobs;
    const char *dir = NULL;
    int rc = verify_parse_args(argc, argv, &decode, &jobs, &dir);
    if (rc >= 0) return rc;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    corpus *cp = NULL;
    adapt_error err = {0};
    if (corpus_open(&cp, dir, &err)) {
        fprintf(stderr, "adaptctl data verify: FAULT: %s\n", err.message);
        return ADAPTCTL_EXIT_FAULT;
    }
    verify_run v = {.dir = dir, .m = corpus_manifest(cp)};
    pthread_mutex_init(&v.mu, NULL);
    if (verify_corpus(&v, decode, jobs)) {
        fprintf(stderr, "adaptctl data verify: out of memory\n");
        rc = ADAPTCTL_EXIT_FAULT;
    } else {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        verify_print_summary(&v, corpus_count(cp), decode,
                             (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        rc = v.faults ? ADAPTCTL_EXIT_FAULT : ADAPTCTL_EXIT_OK;
    }
    pthread_mutex_destroy(&v.mu);
    free(v.items);
    free(v.shard_bad);
    corpus_close(cp);
    return rc;
}
