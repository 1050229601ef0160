/* adaptctl: the command line of adaptd. Offline commands (data, tokenize) run here; job commands
 * (submit, list, status, watch, cancel, logs) talk to the daemon once it exists. This file only
 * dispatches: each subcommand is its own module (commands.h). */
#include "commands.h"

#include <stdio.h>
#include <string.h>

typedef struct adaptctl_command {
    const char *group;  /* "data", or NULL for a top-level command */
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} adaptctl_command;

static const adaptctl_command commands[] = {
    {"data", "generate", cmd_data_generate, "write the embedded sample corpus (images + LLaVA JSON)"},
    {"data", "import",   cmd_data_import,   "import LLaVA JSON/JSONL, caption JSONL or WebDataset tars"},
    {"data", "inspect",  cmd_data_inspect,  "summary, one record as JSON, histograms"},
    {"data", "verify",   cmd_data_verify,   "read everything, check every checksum, decode every image"},
    {NULL,   "tokenize", cmd_tokenize,      "text to ids, ids to text, render a chat"},
    {"model", "info",    cmd_model_info,    "config summary, parameters per tower, training memory"},
    {"model", "init",    cmd_model_init,    "random weights in the Hugging Face layout"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: adaptctl COMMAND [ARGS...]   (adaptctl COMMAND --help for its options)\n\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s%s", commands[i].group ? commands[i].group : "",
                 commands[i].group ? " " : "", commands[i].name);
        fprintf(out, "  %-16s %s\n", name, commands[i].summary);
    }
    fprintf(out, "\nexit codes: 0 success, 1 a fault in the data (named on stderr), 2 bad usage\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? ADAPTCTL_EXIT_USAGE : ADAPTCTL_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("adaptctl %s\n", ADAPT_VERSION);
        return ADAPTCTL_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const adaptctl_command *c = &commands[i];
        if (c->group) {
            if (strcmp(argv[1], c->group) || argc < 3 || strcmp(argv[2], c->name)) continue;
            return c->run(argc - 2, argv + 2);
        }
        if (!strcmp(argv[1], c->name)) return c->run(argc - 1, argv + 1);
    }
    fprintf(stderr, "adaptctl: unknown command '%s%s%s'\n", argv[1], argc > 2 ? " " : "",
            argc > 2 && !strcmp(argv[1], "data") ? argv[2] : "");
    usage(stderr);
    return ADAPTCTL_EXIT_USAGE;
}
