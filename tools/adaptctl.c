/* adaptctl: the command line of adaptd. Offline commands (data, tokenize, model) run here; job
 * commands (submit, list, status, watch, cancel, checkpoint, logs) talk to adaptd over HTTP
 * (cmd_job.c). This file only dispatches: each subcommand is its own module (commands.h). */
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
    {"model", "generate", cmd_model_generate, "generate text from a prompt (and an image)"},
    /* adaptd's jobs (tools/cmd_job.c); each also takes --server, --token-file, --json */
    {NULL,   "submit",   cmd_job_submit,    "submit a job spec (YAML or JSON) to adaptd"},
    {NULL,   "list",     cmd_job_list,      "adaptd's jobs, in submission order"},
    {NULL,   "status",   cmd_job_status,    "one job: state, progress, checkpoint, error"},
    {NULL,   "watch",    cmd_job_watch,     "a job's live progress until it ends"},
    {NULL,   "cancel",   cmd_job_cancel,    "cancel a queued or running job"},
    {NULL,   "checkpoint", cmd_job_checkpoint, "ask a running job to checkpoint now"},
    {NULL,   "logs",     cmd_job_logs,      "a job's worker output (-f to follow)"},
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
    fprintf(out, "\nglobal options (job commands): --server URL (default $ADAPTD_URL, else "
                 "http://127.0.0.1:8642;\n  unix:/PATH for a Unix socket), --token-file FILE "
                 "(default $ADAPTD_TOKEN, else $ADAPTD_TOKEN_FILE)\n");
    fprintf(out, "\nexit codes: 0 success (watch: the job succeeded), 1 a fault in the data (named on "
                 "stderr)\n  or the watched job failed or was cancelled, 2 bad usage, 3 cannot reach "
                 "adaptd,\n  4 adaptd refused the request (4xx), 5 adaptd failed (5xx)\n");
}

/* `adaptctl --server URL --token-file F submit ...`: the job commands read the global options
 * themselves, so the command name is moved in front of them ([prog, submit, --server, URL, ...]).
 * Returns the number of leading global-option words, -1 when one lacks its value. */
static int global_options_rotate(int argc, char **argv)
{
    int k = 0;
    while (1 + k < argc) {
        const char *a = argv[1 + k];
        if (!strcmp(a, "--server") || !strcmp(a, "--token-file")) {
            if (2 + k >= argc) return -1;
            k += 2;
        } else if (!strncmp(a, "--server=", 9) || !strncmp(a, "--token-file=", 13)) {
            k += 1;
        } else {
            break;
        }
    }
    if (k && 1 + k < argc) {
        char *cmd = argv[1 + k];
        memmove(argv + 2, argv + 1, (size_t)k * sizeof *argv);
        argv[1] = cmd;
    }
    return k && 1 + k >= argc ? -1 : k;
}

int main(int argc, char **argv)
{
    int globals = argc > 1 ? global_options_rotate(argc, argv) : 0;
    if (globals < 0) {
        fprintf(stderr, "adaptctl: --server and --token-file take a value and come before a job command\n");
        return ADAPTCTL_EXIT_USAGE;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? ADAPTCTL_EXIT_USAGE : ADAPTCTL_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("adaptctl %s\n", ADAPT_VERSION);
        return ADAPTCTL_EXIT_OK;
    }
    for (size_t i = 0; globals && i < N_COMMANDS; i++)
        if (commands[i].group && !strcmp(argv[1], commands[i].group)) {
            fprintf(stderr, "adaptctl: --server and --token-file go with the job commands only\n");
            return ADAPTCTL_EXIT_USAGE;
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
