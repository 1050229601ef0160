/* cmd_data_inspect: `adaptctl data inspect DIR` — what a corpus holds, for people and for scripts.
 *
 * Three views: the summary (manifest: name, counts, shards, provenance and skip counts), one
 * record (--record N: its fields as JSON, the image as type/size/bytes rather than bytes), and
 * histograms (--histograms: caption length in characters and words, image area and file size,
 * read by streaming every shard). The one idea: every view is built as a cJSON tree first, so
 * --json prints exactly the tree and the text form is a rendering of the same numbers. */
#include "commands.h"
#include "corpus.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Power-of-two bins: bin 0 holds 0, bin b >= 1 holds [2^(b-1), 2^b). */
#define HIST_BINS 65

typedef struct histogram {
    const char *name;
    const char *unit;
    uint64_t    bins[HIST_BINS];
    uint64_t    n, min, max;
    double      sum;
} histogram;

static void hist_add(histogram *h, uint64_t v)
{
    int b = 0;
    while (b < HIST_BINS - 1 && v >> b) b++;
    h->bins[b]++;
    if (h->n == 0 || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->n++;
    h->sum += (double)v;
}

static uint64_t bin_lo(int b) { return b == 0 ? 0 : (uint64_t)1 << (b - 1); }
static uint64_t bin_hi(int b) { return b == 0 ? 0 : b == 64 ? UINT64_MAX : ((uint64_t)1 << b) - 1; }

static cJSON *hist_json(const histogram *h)
{
    cJSON *o = cJSON_CreateObject(), *bins = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "unit", h->unit);
    cJSON_AddNumberToObject(o, "count", (double)h->n);
    cJSON_AddNumberToObject(o, "min", (double)h->min);
    cJSON_AddNumberToObject(o, "max", (double)h->max);
    cJSON_AddNumberToObject(o, "mean", h->n ? h->sum / (double)h->n : 0);
    for (int b = 0; b < HIST_BINS; b++) {
        if (!h->bins[b]) continue;
        cJSON *bin = cJSON_CreateObject();
        cJSON_AddNumberToObject(bin, "lo", (double)bin_lo(b));
        cJSON_AddNumberToObject(bin, "hi", (double)bin_hi(b));
        cJSON_AddNumberToObject(bin, "count", (double)h->bins[b]);
        cJSON_AddItemToArray(bins, bin);
    }
    cJSON_AddItemToObject(o, "bins", bins);
    return o;
}

/* Image area is binned by the side of the square of the same area, labelled "W×H". */
static void hist_print(const histogram *h, int square)
{
    printf("\n%s (%s): %llu values, min %llu, mean %.1f, max %llu\n", h->name, h->unit,
           (unsigned long long)h->n, (unsigned long long)h->min,
           h->n ? h->sum / (double)h->n : 0.0, (unsigned long long)h->max);
    uint64_t top = 0;
    int first = HIST_BINS, last = -1;
    for (int b = 0; b < HIST_BINS; b++)
        if (h->bins[b]) {
            if (h->bins[b] > top) top = h->bins[b];
            if (b < first) first = b;
            last = b;
        }
    for (int b = first; b <= last; b++) {
        char label[64];
        if (square)
            snprintf(label, sizeof label, "%llu×%llu .. %llu×%llu", (unsigned long long)bin_lo(b),
                     (unsigned long long)bin_lo(b), (unsigned long long)bin_hi(b),
                     (unsigned long long)bin_hi(b));
        else
            snprintf(label, sizeof label, "%llu .. %llu", (unsigned long long)bin_lo(b),
                     (unsigned long long)bin_hi(b));
        int bar = top ? (int)((h->bins[b] * 50 + top - 1) / top) : 0;
        printf("  %26s | %-50.*s %llu\n", label, bar,
               "##################################################",
               (unsigned long long)h->bins[b]);
    }
}

/* Characters are UTF-8 code points (bytes that are not continuation bytes); words are runs of
 * non-whitespace. */
static void text_lengths(const char *s, uint64_t *chars, uint64_t *words)
{
    int in_word = 0;
    *chars = *words = 0;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        *chars += (c & 0xC0) != 0x80;
        int space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        if (!space && !in_word) (*words)++;
        in_word = !space;
    }
}

/* --- views ----------------------------------------------------------------------------------- */

static cJSON *provenance_json(const Adaptd__ImportProvenance *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tool", p->tool);
    cJSON_AddStringToObject(o, "tool_version", p->tool_version);
    cJSON_AddStringToObject(o, "source_format", p->source_format);
    cJSON *srcs = cJSON_AddArrayToObject(o, "sources");
    for (size_t i = 0; i < p->n_sources; i++)
        cJSON_AddItemToArray(srcs, cJSON_CreateString(p->sources[i]));
    cJSON_AddStringToObject(o, "images_root", p->images_root);
    cJSON_AddStringToObject(o, "validate", p->validate);
    cJSON_AddStringToObject(o, "on_bad", p->on_bad);
    cJSON_AddNumberToObject(o, "records_read", (double)p->records_read);
    cJSON_AddNumberToObject(o, "records_skipped", (double)p->records_skipped);
    cJSON *skips = cJSON_AddObjectToObject(o, "skips");
    for (size_t i = 0; i < p->n_skips; i++)
        cJSON_AddNumberToObject(skips, p->skips[i]->reason, (double)p->skips[i]->count);
    cJSON_AddStringToObject(o, "skip_report", p->skip_report);
    cJSON_AddNumberToObject(o, "started_unix", (double)p->started_unix);
    cJSON_AddNumberToObject(o, "finished_unix", (double)p->finished_unix);
    cJSON_AddStringToObject(o, "hostname", p->hostname);
    return o;
}

static cJSON *summary_json(const char *dir, const Adaptd__Manifest *m)
{
    cJSON *o = cJSON_CreateObject();
    uint64_t bytes = 0;
    cJSON_AddStringToObject(o, "dir", dir);
    cJSON_AddStringToObject(o, "name", m->corpus_name);
    cJSON_AddNumberToObject(o, "format_version", m->format_version);
    cJSON_AddNumberToObject(o, "created_unix", (double)m->created_unix);
    cJSON_AddNumberToObject(o, "records", (double)m->record_count);
    cJSON *shards = cJSON_AddArrayToObject(o, "shards");
    for (size_t s = 0; s < m->n_shards; s++) {
        const Adaptd__ShardInfo *si = m->shards[s];
        cJSON *sh = cJSON_CreateObject();
        char crc[16];
        snprintf(crc, sizeof crc, "%08x", si->crc32c);
        cJSON_AddStringToObject(sh, "path", si->path);
        cJSON_AddNumberToObject(sh, "records", (double)si->records);
        cJSON_AddNumberToObject(sh, "bytes", (double)si->bytes);
        cJSON_AddStringToObject(sh, "crc32c", crc);
        cJSON_AddNumberToObject(sh, "first_record", (double)si->first_record);
        cJSON_AddItemToArray(shards, sh);
        bytes += si->bytes;
    }
    cJSON_AddNumberToObject(o, "bytes", (double)bytes);
    if (m->provenance) cJSON_AddItemToObject(o, "provenance", provenance_json(m->provenance));
    if (m->base_corpus) {
        cJSON *b = cJSON_AddObjectToObject(o, "base_corpus");
        cJSON_AddStringToObject(b, "path", m->base_corpus->path);
        cJSON_AddStringToObject(b, "corpus_name", m->base_corpus->corpus_name);
        cJSON_AddNumberToObject(b, "record_count", (double)m->base_corpus->record_count);
    }
    return o;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void summary_print(const cJSON *o)
{
    time_t created = (time_t)json_num(o, "created_unix");
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&created));
    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(o, "shards");
    int n = cJSON_GetArraySize(shards);
    printf("corpus     %s (%s)\n", json_str(o, "name"), json_str(o, "dir"));
    printf("format     version %.0f, created %s\n", json_num(o, "format_version"), when);
    printf("records    %.0f in %d shard%s, %.1f MB\n", json_num(o, "records"), n,
           n == 1 ? "" : "s", json_num(o, "bytes") / 1e6);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "provenance");
    if (p) {
        printf("imported   by %s %s on %s: %s from", json_str(p, "tool"),
               json_str(p, "tool_version"), json_str(p, "hostname"), json_str(p, "source_format"));
        const cJSON *src;
        cJSON_ArrayForEach(src, cJSON_GetObjectItemCaseSensitive(p, "sources"))
            printf(" %s", src->valuestring);
        printf("\n           images root %s, validate %s, on-bad %s\n",
               json_str(p, "images_root")[0] ? json_str(p, "images_root") : "(annotation dirs)",
               json_str(p, "validate"), json_str(p, "on_bad"));
        printf("           %.0f records read, %.0f skipped", json_num(p, "records_read"),
               json_num(p, "records_skipped"));
        const cJSON *sk;
        const char *sep = ": ";
        cJSON_ArrayForEach(sk, cJSON_GetObjectItemCaseSensitive(p, "skips")) {
            printf("%s%s %.0f", sep, sk->string, sk->valuedouble);
            sep = ", ";
        }
        if (json_str(p, "skip_report")[0]) printf(" (report: %s)", json_str(p, "skip_report"));
        printf("\n");
    }
    /* Up to ten shards; of more, the first eight, a count, and the last. */
    for (int i = 0; i < n; i++) {
        if (n > 10 && i == 8) {
            printf("  ... %d more shards\n", n - 9);
            i = n - 1;
        }
        const cJSON *sh = cJSON_GetArrayItem(shards, i);
        printf("  %-22s %8.0f records %10.1f MB  crc32c %s\n", json_str(sh, "path"),
               json_num(sh, "records"), json_num(sh, "bytes") / 1e6, json_str(sh, "crc32c"));
    }
}

static const char *role_name(Adaptd__Turn__Role role)
{
    switch (role) {
    case ADAPTD__TURN__ROLE__ROLE_SYSTEM:    return "system";
    case ADAPTD__TURN__ROLE__ROLE_USER:      return "user";
    case ADAPTD__TURN__ROLE__ROLE_ASSISTANT: return "assistant";
    default:                                 return "unspecified";
    }
}

static cJSON *record_json(const Adaptd__Sample *s, uint64_t index, uint64_t shard,
                          uint64_t in_shard)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", (double)index);
    cJSON_AddNumberToObject(o, "shard", (double)shard);
    cJSON_AddNumberToObject(o, "record_in_shard", (double)in_shard);
    cJSON_AddStringToObject(o, "id", s->id);
    cJSON *img = cJSON_AddObjectToObject(o, "image");
    cJSON_AddStringToObject(img, "media_type", s->media_type);
    cJSON_AddNumberToObject(img, "width", s->width);
    cJSON_AddNumberToObject(img, "height", s->height);
    cJSON_AddNumberToObject(img, "bytes", (double)s->image.len);
    cJSON_AddStringToObject(o, "caption", s->caption);
    cJSON *turns = cJSON_AddArrayToObject(o, "turns");
    for (size_t i = 0; i < s->n_turns; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "role", role_name(s->turns[i]->role));
        cJSON_AddStringToObject(t, "text", s->turns[i]->text);
        cJSON_AddItemToArray(turns, t);
    }
    if (s->source) {
        cJSON *src = cJSON_AddObjectToObject(o, "source");
        cJSON_AddStringToObject(src, "format", s->source->format);
        cJSON_AddStringToObject(src, "file", s->source->file);
        cJSON_AddNumberToObject(src, "record", (double)s->source->record);
        cJSON_AddStringToObject(src, "image", s->source->image);
    }
    return o;
}

/* Streams every record of every shard into the four histograms. */
static int histograms_collect(corpus *c, histogram h[4], adapt_error *err)
{
    const Adaptd__Manifest *m = corpus_manifest(c);
    for (size_t s = 0; s < m->n_shards; s++) {
        shard_reader *r;
        shard_stream *st = NULL;
        int rc = corpus_shard(c, s, &r, err);
        if (!rc) rc = shard_stream_open(&st, r, err);
        uint64_t i;
        const uint8_t *pb;
        size_t len;
        while (!rc && (rc = shard_stream_next(st, &i, &pb, &len, err)) == 1) {
            Adaptd__Sample *smp;
            rc = shard_sample_unpack(r, i, pb, len, &smp, err);
            if (rc) break;
            uint64_t chars, words;
            text_lengths(smp->caption, &chars, &words);
            hist_add(&h[0], chars);
            hist_add(&h[1], words);
            hist_add(&h[2], (uint64_t)smp->width * smp->height);
            hist_add(&h[3], smp->image.len);
            adaptd__sample__free_unpacked(smp, NULL);
        }
        shard_stream_close(st);
        if (rc < 0) return rc;
    }
    return ADAPT_OK;
}

static void inspect_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl data inspect [--record N] [--histograms] [--json] DIR\n"
        "\n"
        "  (no option)     summary: name, records, shards, bytes, provenance, skip counts\n"
        "  --record N      record N (0-based, whole corpus) as JSON; the image as type, size, bytes\n"
        "  --histograms    caption length (characters, words), image area and file size\n"
        "  --json          machine-readable output\n");
}

/* Prints o as JSON (json) or through its text renderer; takes ownership of o. */
static void view_emit(cJSON *o, int json, void (*text)(const cJSON *))
{
    if (json || !text) {
        char *s = cJSON_Print(o);
        if (s) puts(s);
        free(s);
    } else {
        text(o);
    }
    cJSON_Delete(o);
}

static int inspect_record(corpus *c, uint64_t n, adapt_error *err)
{
    uint64_t shard, in_shard;
    Adaptd__Sample *s = NULL;
    int rc = corpus_locate(c, n, &shard, &in_shard, err);
    if (!rc) rc = corpus_read(c, n, &s, err);
    if (rc) return rc;
    view_emit(record_json(s, n, shard, in_shard), 1, NULL);
    adaptd__sample__free_unpacked(s, NULL);
    return ADAPT_OK;
}

static int inspect_histograms(corpus *c, int json, adapt_error *err)
{
    histogram h[4] = {{.name = "caption length", .unit = "characters"},
                      {.name = "caption length", .unit = "words"},
                      {.name = "image size", .unit = "width×height pixels"},
                      {.name = "image file size", .unit = "bytes"}};
    int rc = histograms_collect(c, h, err);
    if (rc) return rc;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "caption_chars", hist_json(&h[0]));
        cJSON_AddItemToObject(o, "caption_words", hist_json(&h[1]));
        cJSON_AddItemToObject(o, "image_pixels", hist_json(&h[2]));
        cJSON_AddItemToObject(o, "image_bytes", hist_json(&h[3]));
        view_emit(o, 1, NULL);
        return ADAPT_OK;
    }
    hist_print(&h[0], 0);
    hist_print(&h[1], 0);
    /* Area bin b holds [2^(b-1), 2^b) pixels: squares with sides in side bin (b+1)/2. The mean
     * shown is the side of the mean area. */
    histogram side = {.name = "image size", .unit = "width×height, as the square of equal area"};
    for (int b = 0; b < HIST_BINS; b++) side.bins[(b + 1) / 2] += h[2].bins[b];
    side.n = h[2].n;
    side.min = (uint64_t)sqrt((double)h[2].min);
    side.max = (uint64_t)sqrt((double)h[2].max);
    side.sum = h[2].n ? sqrt(h[2].sum / (double)h[2].n) * (double)h[2].n : 0;
    hist_print(&side, 1);
    hist_print(&h[3], 0);
    return ADAPT_OK;
}

int cmd_data_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"record", required_argument, NULL, 'r'}, {"histograms", no_argument, NULL, 'H'},
        {"json", no_argument, NULL, 'J'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, histograms = 0, have_record = 0, c;
    unsigned long long record = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'r':
            record = strtoull(optarg, &end, 10);
            if (!*optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "adaptctl data inspect: --record %s: expected a number\n", optarg);
                return ADAPTCTL_EXIT_USAGE;
            }
            have_record = 1;
            break;
        case 'H': histograms = 1; break;
        case 'J': json = 1; break;
        case 'h': inspect_usage(stdout); return ADAPTCTL_EXIT_OK;
        default: inspect_usage(stderr); return ADAPTCTL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        inspect_usage(stderr);
        return ADAPTCTL_EXIT_USAGE;
    }
    const char *dir = argv[optind];
    corpus *cp = NULL;
    adapt_error err = {0};
    int rc = corpus_open(&cp, dir, &err);
    if (!rc && have_record) {
        rc = inspect_record(cp, record, &err);
    } else if (!rc && histograms) {
        rc = inspect_histograms(cp, json, &err);
    } else if (!rc) {
        view_emit(summary_json(dir, corpus_manifest(cp)), json, summary_print);
    }
    corpus_close(cp);
    if (rc) {
        fprintf(stderr, "adaptctl data inspect: %s\n", err.message);
        return rc == ADAPT_ERANGE ? ADAPTCTL_EXIT_USAGE : ADAPTCTL_EXIT_FAULT;
    }
    return ADAPTCTL_EXIT_OK;
}
