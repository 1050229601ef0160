/* cmd_data_generate: `adaptctl data generate`, the command line of the sample corpus generator
 * (sample_corpus.h does the work).
 *
 * The one design idea: a table of options drives both parsing and --help, so the two cannot
 * drift apart; every value is parsed strictly and range-checked by the library, and any bad
 * usage exits 2 with one line naming the option. */
#include "commands.h"
#include "sample_corpus.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum gen_option_id {
    GEN_OPT_OUT, GEN_OPT_COUNT, GEN_OPT_SEED, GEN_OPT_SIZE, GEN_OPT_MIN_SIZE, GEN_OPT_MAX_SIZE,
    GEN_OPT_FORMAT, GEN_OPT_JPEG_QUALITY, GEN_OPT_JOBS, GEN_OPT_NO_ANTIALIAS, GEN_OPT_HELP,
};

typedef struct gen_option {
    enum gen_option_id id;
    const char *name;
    const char *value;   /* NULL for a flag */
    const char *help;
} gen_option;

static const gen_option gen_options[] = {
    {GEN_OPT_OUT,          "--out",          "DIR", "where to write; must not exist, or be empty"},
    {GEN_OPT_COUNT,        "--count",        "N",   "samples, 100 to 100000 (default 1000)"},
    {GEN_OPT_SEED,         "--seed",         "S",   "0 to 2^64-1 (default 1); fixes every byte"},
    {GEN_OPT_SIZE,         "--size",         "N",   "image side, 64 to 4096 pixels (default 448)"},
    {GEN_OPT_MIN_SIZE,     "--min-size",     "N",   "smallest side, when sides vary (default 448)"},
    {GEN_OPT_MAX_SIZE,     "--max-size",     "N",   "largest side; each image draws one between"},
    {GEN_OPT_FORMAT,       "--format",       "F",   "jpeg, png or mixed (default: per image)"},
    {GEN_OPT_JPEG_QUALITY, "--jpeg-quality", "Q",   "1 to 100 (default 90)"},
    {GEN_OPT_JOBS,         "--jobs",         "N",   "threads (default: CPUs); output is the same"},
    {GEN_OPT_NO_ANTIALIAS, "--no-antialias", NULL,  "hard shape edges"},
    {GEN_OPT_HELP,         "--help",         NULL,  "this text"},
};
#define N_GEN_OPTIONS (sizeof gen_options / sizeof gen_options[0])

static void usage_print(FILE *out)
{
    fprintf(out, "usage: adaptctl data generate --out DIR [OPTIONS]\n\n"
                 "Writes the embedded sample corpus: synthetic images of coloured shapes\n"
                 "with true captions and question-answer pairs, as\n"
                 "DIR/images/NNNNNNNN.{jpg,png}, DIR/llava.json (LLaVA conversations,\n"
                 "the caption first) and DIR/captions.jsonl. It writes DIR.partial and\n"
                 "renames it to DIR when complete.\n\n");
    for (size_t i = 0; i < N_GEN_OPTIONS; i++) {
        char left[40];
        snprintf(left, sizeof left, "%s%s%s", gen_options[i].name, gen_options[i].value ? " " : "",
                 gen_options[i].value ? gen_options[i].value : "");
        fprintf(out, "  %-20s %s\n", left, gen_options[i].help);
    }
}

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "adaptctl data generate: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see adaptctl data generate --help)\n");
    va_end(ap);
    return ADAPTCTL_EXIT_USAGE;
}

/* Whole-string decimal numbers only: "12x", "", "-" and overflow are errors. */
static int number_parse(const char *text, unsigned long long max, unsigned long long *value)
{
    if (!text[0] || text[0] == '-' || text[0] == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v > max) return -1;
    *value = v;
    return 0;
}

static int option_apply(const gen_option *o, const char *value, samplegen_options *opt,
                        int *size_given)
{
    unsigned long long v = 0;
    switch (o->id) {
    case GEN_OPT_OUT:          opt->out_dir = value; return 0;
    case GEN_OPT_NO_ANTIALIAS: opt->antialias = 0; return 0;
    case GEN_OPT_HELP:         return 0;
    case GEN_OPT_FORMAT:
        if (!strcmp(value, "jpeg") || !strcmp(value, "jpg")) opt->format = SAMPLEGEN_FORMAT_JPEG;
        else if (!strcmp(value, "png")) opt->format = SAMPLEGEN_FORMAT_PNG;
        else if (!strcmp(value, "mixed")) opt->format = SAMPLEGEN_FORMAT_MIXED;
        else return usage_error("%s '%s' is not a format: give jpeg, png or mixed", o->name, value);
        return 0;
    case GEN_OPT_SEED:
        if (number_parse(value, UINT64_MAX, &v))
            return usage_error("%s '%s' is not a number from 0 to 2^64-1", o->name, value);
        opt->seed = v;
        return 0;
    default:
        break;
    }
    /* The rest are ints; the library checks their ranges, a huge value fails there too. */
    if (number_parse(value, 1000000000ULL, &v))
        return usage_error("%s '%s' is not a whole number", o->name, value);
    switch (o->id) {
    case GEN_OPT_COUNT:        opt->count = (long)v; break;
    case GEN_OPT_SIZE:         opt->min_size = opt->max_size = (int)v; (*size_given)++; break;
    case GEN_OPT_MIN_SIZE:     opt->min_size = (int)v; break;
    case GEN_OPT_MAX_SIZE:     opt->max_size = (int)v; break;
    case GEN_OPT_JPEG_QUALITY: opt->jpeg_quality = (int)v; break;
    case GEN_OPT_JOBS:         opt->jobs = (int)v; break;
    default:                   break;
    }
    return 0;
}

/* Fills opt from argv (argv[0] is "generate"); returns -1 for --help, else an exit code. */
static int options_parse(int argc, char **argv, samplegen_options *opt)
{
    int size_given = 0, range_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '='), *value = NULL;
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const gen_option *o = NULL;
        for (size_t k = 0; k < N_GEN_OPTIONS && !o; k++)
            if (strlen(gen_options[k].name) == name_len &&
                !strncmp(arg, gen_options[k].name, name_len))
                o = &gen_options[k];
        if (!o) return usage_error("unknown option '%s'", arg);
        if (o->id == GEN_OPT_HELP) return -1;
        if (o->value) {
            value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value) return usage_error("%s needs a value %s", o->name, o->value);
        } else if (eq) {
            return usage_error("%s takes no value", o->name);
        }
        range_given += o->id == GEN_OPT_MIN_SIZE || o->id == GEN_OPT_MAX_SIZE;
        int rc = option_apply(o, value, opt, &size_given);
        if (rc) return rc;
    }
    if (size_given && range_given)
        return usage_error("give either --size or --min-size/--max-size, not both");
    return ADAPTCTL_EXIT_OK;
}

int cmd_data_generate(int argc, char **argv)
{
    samplegen_options opt;
    samplegen_options_init(&opt);
    int rc = options_parse(argc, argv, &opt);
    if (rc < 0) {
        usage_print(stdout);
        return ADAPTCTL_EXIT_OK;
    }
    if (rc) return rc;
    adapt_error err;
    adapt_error_clear(&err);
    if (samplegen_options_check(&opt, &err))
        return usage_error("%s", err.message);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    samplegen_stats stats;
    if (samplegen_generate(&opt, &stats, &err)) {
        fprintf(stderr, "adaptctl data generate: %s\n", err.message);
        return err.code == ADAPT_EINVAL ? ADAPTCTL_EXIT_USAGE : ADAPTCTL_EXIT_FAULT;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("adaptctl data generate: wrote %ld samples (%ld JPEG, %ld PNG, %.1f MB of images) to %s "
           "in %.2f s\n", opt.count, stats.n_jpeg, stats.n_png, (double)stats.image_bytes / 1e6,
           opt.out_dir, seconds);
    return ADAPTCTL_EXIT_OK;
}
