/* cmd_data_import: `adaptctl data import` — options in, import_run, one summary line out.
 *
 * All the work is in import.c; this file only turns the command line into import_options and the
 * result into exit codes: 0 imported, 1 a fault in the data (named on stderr, no corpus left),
 * 2 bad usage. */
#include "commands.h"
#include "import.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IMPORT_DEFAULT_SHARD_SIZE 1000
/* JPEG and PNG bytes barely compress; level 1 keeps nearly all of level 3's saving at less CPU. */
#define IMPORT_DEFAULT_ZSTD_LEVEL 1

static void import_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl data import [OPTIONS] --out DIR INPUT...\n"
        "\n"
        "Imports LLaVA JSON / JSONL, caption JSONL or WebDataset tar shards into a corpus.\n"
        "\n"
        "  --out DIR            corpus directory to create (must not exist)\n"
        "  --format F           auto (default), llava, llava_json, llava_jsonl, caption_jsonl,\n"
        "                       webdataset\n"
        "  --images ROOT        where image paths are resolved (default: each annotation\n"
        "                       file's directory); paths may not leave ROOT\n"
        "  --name NAME          corpus name (default: DIR's base name)\n"
        "  --shard-size N       records per shard (default %d)\n"
        "  --jobs N             worker threads (default: the CPUs online)\n"
        "  --validate full|header  full (default) decodes every image; header reads its size\n"
        "  --on-bad fail|skip   fail (default): the first bad record stops the import;\n"
        "                       skip: bad records are counted in the manifest and listed in\n"
        "                       DIR.skipped.jsonl (source, record, line, offset, id, reason)\n"
        "  --zstd-level N       compression level of the frames (default %d)\n"
        "\n"
        "Sample ids: the record's \"id\", else \"FILE:RECORD\" (WebDataset: the key); a\n"
        "repeated id is a bad record (duplicate_id). Skip reasons: missing_file,\n"
        "undecodable_image, empty_caption, no_image, bad_record, image_outside_root,\n"
        "duplicate_id.\n",
        IMPORT_DEFAULT_SHARD_SIZE, IMPORT_DEFAULT_ZSTD_LEVEL);
}

static int parse_count(const char *opt, const char *text, long long min, long long max,
                       long long *out)
{
    char *end;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || v < min || v > max) {
        fprintf(stderr, "adaptctl data import: %s %s: expected a number from %lld to %lld\n",
                opt, text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Fills opt from argv; returns 0, or ADAPTCTL_EXIT_USAGE after printing why. */
static int import_parse_args(int argc, char **argv, import_options *opt, int *help)
{
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},     {"format", required_argument, NULL, 'f'},
        {"images", required_argument, NULL, 'i'},  {"name", required_argument, NULL, 'n'},
        {"shard-size", required_argument, NULL, 's'}, {"jobs", required_argument, NULL, 'j'},
        {"validate", required_argument, NULL, 'v'}, {"on-bad", required_argument, NULL, 'b'},
        {"zstd-level", required_argument, NULL, 'z'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *opt = (import_options){.shard_size = IMPORT_DEFAULT_SHARD_SIZE, .jobs = cpus > 0 ? (int)cpus : 1,
                            .validate_full = 1, .zstd_level = IMPORT_DEFAULT_ZSTD_LEVEL};
    long long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:j:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': opt->out_dir = optarg; break;
        case 'i': opt->images_root = optarg; break;
        case 'n': opt->name = optarg; break;
        case 'f':
            if (import_format_parse(optarg, &opt->format)) {
                fprintf(stderr, "adaptctl data import: unknown --format %s\n", optarg);
                return ADAPTCTL_EXIT_USAGE;
            }
            break;
        case 's':
            if (parse_count("--shard-size", optarg, 1, 1LL << 40, &v)) return ADAPTCTL_EXIT_USAGE;
            opt->shard_size = (uint64_t)v;
            break;
        case 'j':
            if (parse_count("--jobs", optarg, 1, 256, &v)) return ADAPTCTL_EXIT_USAGE;
            opt->jobs = (int)v;
            break;
        case 'z':
            if (parse_count("--zstd-level", optarg, -7, 22, &v)) return ADAPTCTL_EXIT_USAGE;
            opt->zstd_level = (int)v;
            break;
        case 'v':
            if (strcmp(optarg, "full") && strcmp(optarg, "header")) {
                fprintf(stderr, "adaptctl data import: --validate must be full or header\n");
                return ADAPTCTL_EXIT_USAGE;
            }
            opt->validate_full = !strcmp(optarg, "full");
            break;
        case 'b':
            if (strcmp(optarg, "fail") && strcmp(optarg, "skip")) {
                fprintf(stderr, "adaptctl data import: --on-bad must be fail or skip\n");
                return ADAPTCTL_EXIT_USAGE;
            }
            opt->skip_bad = !strcmp(optarg, "skip");
            break;
        case 'h': *help = 1; return 0;
        default: return ADAPTCTL_EXIT_USAGE;
        }
    }
    opt->inputs = (const char *const *)argv + optind;
    opt->n_inputs = (size_t)(argc - optind);
    if (!opt->out_dir || opt->n_inputs == 0) {
        fprintf(stderr, "adaptctl data import: %s\n",
                !opt->out_dir ? "--out DIR is required" : "no input files given");
        import_usage(stderr);
        return ADAPTCTL_EXIT_USAGE;
    }
    return 0;
}

static void import_print_summary(const import_options *opt, const import_stats *st)
{
    double mb = (double)st->image_bytes / 1e6;
    double secs = st->seconds > 0 ? st->seconds : 1e-9;
    printf("imported %llu of %llu records from %zu file%s (%.1f MB) into %s: %.1f MB of images "
           "in %.2f s (%.0f samples/s, %.1f MB/s, %d jobs, validate %s)\n",
           (unsigned long long)st->records_written, (unsigned long long)st->records_read,
           opt->n_inputs, opt->n_inputs == 1 ? "" : "s", (double)st->source_bytes / 1e6,
           opt->out_dir, mb, st->seconds,
           (double)st->records_written / secs, mb / secs, opt->jobs,
           opt->validate_full ? "full" : "header");
    if (!opt->skip_bad) return;
    printf("skipped %llu records", (unsigned long long)st->records_skipped);
    const char *sep = ": ";
    for (int r = 1; r < IMPORT_REASON_COUNT; r++) {
        if (!st->skips[r]) continue;
        printf("%s%s %llu", sep, import_reason_name((import_reason)r),
               (unsigned long long)st->skips[r]);
        sep = ", ";
    }
    printf(" (listed in %s)\n", st->report_path);
}

int cmd_data_import(int argc, char **argv)
{
    import_options opt;
    int help = 0;
    int rc = import_parse_args(argc, argv, &opt, &help);
    if (rc) return rc;
    if (help) {
        import_usage(stdout);
        return ADAPTCTL_EXIT_OK;
    }
    import_stats stats;
    adapt_error err = {0};
    if (import_run(&opt, &stats, &err)) {
        fprintf(stderr, "adaptctl data import: %s\n", err.message);
        return ADAPTCTL_EXIT_FAULT;
    }
    import_print_summary(&opt, &stats);
    return ADAPTCTL_EXIT_OK;
}
