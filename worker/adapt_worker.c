/* adapt-worker: the MPI program every job kind runs in; `train` runs the training loop on each
 * rank, `loss` measures a model's held-out loss on a corpus.
 *
 * The one idea: main owns the only process-wide state — MPI (through comm) and the signal flag —
 * and hands both down; a signal handler only records which signal came, and the loop acts on it
 * at the next step boundary, where a checkpoint is consistent. Under mpirun every rank runs this
 * same main; without a launcher it is a world of one. Rank 0 also reports to the daemon over the
 * worker link (link_client) when ADAPTD_LINK names one; the exit codes (0 done, 1 retry, 2 do not
 * retry) are link_client.h's contract with the daemon. */
#include "comm.h"
#include "error.h"
#include "job_kinds.h"
#include "link_client.h"
#include "train.h"
#include "train_spec.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Atomic, not volatile sig_atomic_t: the handler (on whichever thread the kernel picks) and the
 * link thread (Control frames) write it while the training loop reads it. */
static atomic_int signal_flag = TRAIN_SIGNAL_NONE;

static void signal_record(int signo)
{
    /* SIGTERM (Slurm's time limit, a cancel) outranks SIGUSR1 (checkpoint and go on). */
    if (signo == SIGTERM) {
        atomic_store(&signal_flag, TRAIN_SIGNAL_STOP);
    } else {
        int expect = TRAIN_SIGNAL_NONE;
        atomic_compare_exchange_strong(&signal_flag, &expect, TRAIN_SIGNAL_CHECKPOINT);
    }
}

static void signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = signal_record;
    /* SA_RESTART: a signal must not fail the read or fsync it interrupts; the loop acts on it */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

/* The exit code for a failure (link_client.h has the contract). */
static int exit_code_of(int code)
{
    return link_client_error_fatal(code) ? LINK_CLIENT_EXIT_FATAL : LINK_CLIENT_EXIT_FAILED;
}

/* Rank 0's worker link as train_events' context: the client (NULL without ADAPTD_LINK, and on
 * every other rank) and the last step reported, for Done. */
typedef struct worker_link {
    link_client_t *client;
    uint64_t       step;
} worker_link;

static int worker_link_open(worker_link *l, int rank, int world, adapt_error *err)
{
    link_client_options o;
    int have = 0;
    l->client = NULL;
    l->step = 0;
    if (rank != 0) return ADAPT_OK;
    int rc = link_client_env(&o, &have, err);
    if (rc != ADAPT_OK || !have) return rc;
    o.world = (uint32_t)world;
    o.signal = &signal_flag;
    return link_client_start(&l->client, &o, err);
}

static void worker_link_progress(void *ctx, const Adaptd__Progress *p)
{
    worker_link *l = ctx;
    l->step = p->step;
    link_client_progress(l->client, p);
}

static void worker_link_checkpoint(void *ctx, uint64_t step, const char *dir)
{
    worker_link *l = ctx;
    link_client_checkpoint(l->client, step, dir);
}

/* Done (rc: train_run's result, or a negative code), then the link is closed. */
static void worker_link_close(worker_link *l, int rc, const adapt_error *err,
                              const char *output_dir)
{
    if (!l->client) return;
    char stopped[128];
    const char *msg = NULL;
    if (rc < 0) msg = err->message;
    else if (rc == TRAIN_STOPPED) {
        snprintf(stopped, sizeof stopped, "stopped after the checkpoint of step %llu",
                 (unsigned long long)l->step);
        msg = stopped;
    }
    link_client_done(l->client, rc == 0, rc < 0 && link_client_error_fatal(err->code),
                     rc == TRAIN_STOPPED, msg, output_dir, l->step);
    link_client_close(l->client);
    l->client = NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: adapt-worker train --spec JOB.json [--resume | --resume-from CHECKPOINT]\n"
        "                          [--backend NAME]\n"
        "       adapt-worker loss --spec JOB.json --model DIR [--corpus DIR] [--backend NAME]\n"
        "       adapt-worker synthesize|filter|evaluate --spec JOB.json\n"
        "  train   trains as the spec says (a JobSpec or a bare TrainSpec), one JSON progress\n"
        "          line per step on stdout; under mpirun each rank takes its part of every step.\n"
        "          SIGUSR1 checkpoints at the next step, SIGTERM checkpoints and exits 0;\n"
        "          --resume continues from the newest complete checkpoint in OUTPUT/checkpoints,\n"
        "          --resume-from from the one named, refused unless complete\n"
        "  loss    prints {\"loss\": L, \"tokens\": N}: the mean masked cross-entropy of the model\n"
        "          in DIR over every record of the corpus (default: the spec's)\n"
        "  --backend NAME   where train and loss compute (default cpu; adaptd passes the job's\n"
        "          backend): cpu, cpu-guarded (the CPU ops over memory only they may touch, a\n"
        "          test of device-style memory handling), cuda (one GPU per rank, by local\n"
        "          rank); this build has: %s\n"
        "  synthesize, filter, evaluate   the paper's pipeline steps (worker/job_kinds.h):\n"
        "          synthesize writes instruction tasks from image-caption pairs, filter keeps\n"
        "          the consistent ones, evaluate scores a model on a benchmark. Each rank takes\n"
        "          base shards r, r+N, ... (under adaptd: the next unit from its work queue);\n"
        "          finished output shards are skipped on a rerun; one JSON line per shard\n"
        "exit codes:\n"
        "  0  success, or stopped by SIGTERM (or the daemon's stop) after a complete checkpoint\n"
        "  1  runtime failure (I/O, memory, MPI, a signal): adaptd retries the job\n"
        "  2  usage, spec or input error (bad argument or spec, a missing or damaged model,\n"
        "     corpus or checkpoint, a configuration refused): adaptd does not retry\n"
        "environment (set by adaptd):\n"
        "  ADAPTD_LINK          the daemon's Unix socket: rank 0 reports Hello, progress,\n"
        "                       checkpoints, heartbeats and Done, and takes checkpoint / stop\n"
        "  ADAPTD_JOB_ID, ADAPTD_ATTEMPT   named in every frame / in Hello\n"
        "  ADAPTD_HEARTBEAT_MS  heartbeat period (5000)\n"
        "  ADAPTD_DONE_WAIT_MS  how long the exit waits for a lost link to carry Done (30000)\n"
        "  ADAPTD_LOG_DIR       each rank's stdout and stderr go to DIR/rank-R.log\n"
        "  ADAPTD_WORK_QUEUE    1: synthesize, filter and evaluate ranks ask the daemon (over\n"
        "                       ADAPTD_LINK) for each unit of work instead of r, r+N, ...\n"
        "  ADAPTD_WORK_WAIT_MS  how long a rank waits for the work queue to answer (60000)\n",
        train_backend_list());
}

typedef struct worker_args {
    const char *command, *spec, *model, *corpus, *resume_from;
    const char *backend;   /* --backend, NULL when not given (cpu) */
    int         resume;
} worker_args;

static int args_parse(int argc, char **argv, worker_args *a)
{
    memset(a, 0, sizeof *a);
    if (argc < 2) return -1;
    a->command = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(s, "--spec") && has) a->spec = argv[++i];
        else if (!strcmp(s, "--model") && has) a->model = argv[++i];
        else if (!strcmp(s, "--corpus") && has) a->corpus = argv[++i];
        else if (!strcmp(s, "--resume")) a->resume = 1;
        else if (!strcmp(s, "--resume-from") && has) a->resume_from = argv[++i];
        else if (!strcmp(s, "--backend") && has) a->backend = argv[++i];
        else {
            fprintf(stderr, "adapt-worker: unknown or incomplete argument '%s'\n", s);
            return -1;
        }
    }
    if (!a->spec) {
        fprintf(stderr, "adapt-worker: --spec is required\n");
        return -1;
    }
    if (a->backend && !ops_by_name(a->backend)) {
        fprintf(stderr, "adapt-worker: --backend %s: not built in / unknown (this build has: "
                "%s)\n", a->backend, train_backend_list());
        return -1;
    }
    return 0;
}

static int command_loss(const worker_args *a, int *argc, char ***argv)
{
    if (!a->model) {
        fprintf(stderr, "adapt-worker loss: --model is required\n");
        return LINK_CLIENT_EXIT_FATAL;
    }
    Adaptd__JobSpec *job = NULL;
    Adaptd__TrainSpec *spec = NULL;
    adapt_error err = {0};
    if (train_spec_load(a->spec, &job, &spec, &err)) {
        fprintf(stderr, "adapt-worker loss: %s\n", err.message);
        return exit_code_of(err.code);
    }
    double loss;
    uint64_t tokens;
    int rc = LINK_CLIENT_EXIT_OK;
    if (train_eval_loss(spec, a->backend, a->model, a->corpus, &loss, &tokens, &err)) {
        fprintf(stderr, "adapt-worker loss: %s\n", err.message);
        rc = exit_code_of(err.code);
    } else {
        printf("{\"loss\": %.7g, \"tokens\": %llu}\n", loss, (unsigned long long)tokens);
    }
    if (job) train_spec_free_job(job);
    else train_spec_free(spec);
    return rc;
}

/* MPI first, so that rank 0 can tell the daemon (Done, fatal) about a spec it refuses. */
static int command_train(const worker_args *a, int *argc, char ***argv)
{
    adapt_error err = {0};
    comm *c = NULL;
    if (comm_init(&c, argc, argv, &err)) {
        fprintf(stderr, "adapt-worker train: %s\n", err.message);
        return exit_code_of(err.code);
    }
    int rank = comm_rank(c);
    /* main guessed the rank from the launcher's environment; MPI has the last word */
    if (rank != link_client_env_rank() &&
        link_client_logs(getenv("ADAPTD_LOG_DIR"), rank, &err) != ADAPT_OK) {
        fprintf(stderr, "adapt-worker train: rank %d: %s\n", rank, err.message);
        comm_close(c);
        return LINK_CLIENT_EXIT_FAILED;
    }
    signals_install();
    worker_link link;
    if (worker_link_open(&link, rank, comm_world(c), &err) != ADAPT_OK) {
        fprintf(stderr, "adapt-worker train: %s\n", err.message);
        comm_close(c);
        return exit_code_of(err.code);
    }
    Adaptd__JobSpec *job = NULL;
    Adaptd__TrainSpec *spec = NULL;
    int rc = train_spec_load(a->spec, &job, &spec, &err);
    const char *where = rc == ADAPT_OK ? a->spec : NULL;   /* a spec error names its file */
    if (rc == ADAPT_OK) {
        train_options opt = { .spec = spec, .backend = a->backend, .resume = a->resume,
                              .resume_from = a->resume_from,
                              .signal = &signal_flag, .progress = stdout,
                              .events = { worker_link_progress, worker_link_checkpoint, &link } };
        rc = train_run(c, &opt, &err);
        if (rc < 0 && err.code == ADAPT_OK) err.code = ADAPT_EIO;
    }
    worker_link_close(&link, rc, &err, spec ? spec->output_dir : NULL);
    if (rc < 0)
        fprintf(stderr, "adapt-worker train: rank %d: %s%s%s\n", rank, where ? where : "",
                where ? ": " : "", err.message);
    else if (rc == TRAIN_STOPPED && rank == 0)
        fprintf(stderr, "adapt-worker train: stopped by SIGTERM after a checkpoint\n");
    if (job) train_spec_free_job(job);
    else if (spec) train_spec_free(spec);
    comm_close(c);
    return rc < 0 ? exit_code_of(err.code) : LINK_CLIENT_EXIT_OK;
}

/* A finished shard or chunk as a Progress frame: step = this rank's units done. */
static void job_unit_done(void *ctx, uint64_t done, uint64_t total, uint64_t records)
{
    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    p.step = done;
    p.total_steps = total;
    p.samples = records;
    worker_link_progress(ctx, &p);
}

/* synthesize, filter, evaluate (job_kinds.h): rank 0 reports Hello, a Progress frame per
 * finished shard and Done over the link. */
static int command_job(const worker_args *a, int *argc, char ***argv)
{
    adapt_error err = {0};
    comm *c = NULL;
    /* generation runs on the host's memory (worker/generate.c) */
    if (a->backend && strcmp(a->backend, "cpu") != 0) {
        fprintf(stderr, "adapt-worker %s: --backend %s: this job kind runs on cpu only\n",
                a->command, a->backend);
        return LINK_CLIENT_EXIT_FATAL;
    }
    if (comm_init(&c, argc, argv, &err)) {
        fprintf(stderr, "adapt-worker %s: %s\n", a->command, err.message);
        return exit_code_of(err.code);
    }
    worker_link link;
    char out[4096] = "";
    int rc = worker_link_open(&link, comm_rank(c), comm_world(c), &err);
    job_run_options o = { .progress = stdout, .unit_done = job_unit_done, .ctx = &link };
    if (rc == ADAPT_OK) rc = job_kinds_run(c, a->command, a->spec, &o, out, sizeof out, &err);
    worker_link_close(&link, rc, &err, out);
    if (rc < 0)
        fprintf(stderr, "adapt-worker %s: rank %d: %s\n", a->command, comm_rank(c), err.message);
    comm_close(c);
    return rc < 0 ? exit_code_of(err.code) : LINK_CLIENT_EXIT_OK;
}

/* The subcommands; each loads its own spec and returns the process's exit code. */
typedef int (*worker_command_fn)(const worker_args *a, int *argc, char ***argv);
static const struct worker_command {
    const char       *name;
    worker_command_fn run;
} worker_commands[] = {
    { "train", command_train },
    { "loss",  command_loss  },
    { "synthesize", command_job },   /* the paper's pipeline (issue 8): job_kinds.h */
    { "filter",     command_job },
    { "evaluate",   command_job },
};

int main(int argc, char **argv)
{
    worker_args a;
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return LINK_CLIENT_EXIT_OK;
    }
    const struct worker_command *cmd = NULL;
    int known = args_parse(argc, argv, &a) == 0;
    for (size_t i = 0; known && i < sizeof worker_commands / sizeof worker_commands[0]; i++)
        if (!strcmp(a.command, worker_commands[i].name)) cmd = &worker_commands[i];
    /* Per-rank logs before anything else prints: the launcher's environment names the rank
     * before MPI is up, so even a spec error lands in this rank's file. */
    adapt_error err = {0};
    if (link_client_logs(getenv("ADAPTD_LOG_DIR"), link_client_env_rank(), &err) != ADAPT_OK) {
        fprintf(stderr, "adapt-worker: %s\n", err.message);
        return LINK_CLIENT_EXIT_FAILED;
    }
    if (!cmd) {
        usage(stderr);
        return LINK_CLIENT_EXIT_FATAL;
    }
    return cmd->run(&a, &argc, &argv);
}
