/* adapt-worker: the MPI program every job kind runs in; `train` runs the training loop on each
 * rank, `loss` measures a model's held-out loss on a corpus.
 *
 * The one idea: main owns the only process-wide state — MPI (through comm) and the signal flag —
 * and hands both down; a signal handler only records which signal came, and the loop acts on it
 * at the next step boundary, where a checkpoint is consistent. Under mpirun every rank runs this
 * same main; without a launcher it is a world of one. Rank 0 also reports to the daemon over the
 * worker link when ADAPTD_LINK names one. */
#include "comm.h"
#include "error.h"
#include "train.h"
#include "train_spec.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t signal_flag = TRAIN_SIGNAL_NONE;

static void signal_record(int signo)
{
    /* SIGTERM (Slurm's time limit, a cancel) outranks SIGUSR1 (checkpoint and go on). */
    if (signo == SIGTERM) signal_flag = TRAIN_SIGNAL_STOP;
    else if (signal_flag == TRAIN_SIGNAL_NONE) signal_flag = TRAIN_SIGNAL_CHECKPOINT;
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

/* The daemon's worker link (ADAPTD_LINK names its Unix socket): rank 0 sends Hello, then a
 * Progress frame per step, a Checkpoint frame per checkpoint and Done at the end, each as a
 * 4-byte big-endian length + a packed LinkFrame. The link only reports: when it breaks,
 * training goes on and the JSON lines on stdout remain. */
typedef struct worker_link {
    int         fd;         /* -1: no link */
    const char *job_id;
    uint64_t    step;       /* the last step reported */
} worker_link;

static void link_send(worker_link *l, Adaptd__LinkFrame *f)
{
    if (l->fd < 0) return;
    size_t n = adaptd__link_frame__get_packed_size(f);
    uint8_t *buf = malloc(n + 4);
    int ok = buf != NULL;
    if (ok) {
        uint32_t be = htonl((uint32_t)n);
        memcpy(buf, &be, 4);
        adaptd__link_frame__pack(f, buf + 4);
        for (size_t off = 0; ok && off < n + 4;) {
            ssize_t w = send(l->fd, buf + off, n + 4 - off, MSG_NOSIGNAL);
            ok = w > 0;
            off += ok ? (size_t)w : 0;
        }
    }
    free(buf);
    if (!ok) {
        fprintf(stderr, "adapt-worker: the daemon link broke; progress goes to stdout only\n");
        close(l->fd);
        l->fd = -1;
    }
}

static void link_open(worker_link *l, int rank, int world)
{
    const char *path = getenv("ADAPTD_LINK");
    l->fd = -1;
    l->job_id = getenv("ADAPTD_JOB_ID") ? getenv("ADAPTD_JOB_ID") : "";
    l->step = 0;
    if (!path || !*path || rank != 0) return;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "adapt-worker: ADAPTD_LINK %s: path too long for a Unix socket\n", path);
        return;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    l->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (l->fd < 0 || connect(l->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "adapt-worker: cannot connect to ADAPTD_LINK %s; progress goes to "
                "stdout only\n", path);
        if (l->fd >= 0) close(l->fd);
        l->fd = -1;
        return;
    }
    Adaptd__Hello h = ADAPTD__HELLO__INIT;
    h.job_id = (char *)l->job_id;
    h.world_size = (uint32_t)world;
    h.pid = getpid();
    h.worker_version = "1";
    h.protocol = 1;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO;
    f.hello = &h;
    link_send(l, &f);
}

static void link_progress(void *ctx, const Adaptd__Progress *p)
{
    worker_link *l = ctx;
    Adaptd__Progress copy = *p;
    copy.job_id = (char *)l->job_id;
    l->step = p->step;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_PROGRESS;
    f.progress = &copy;
    link_send(l, &f);
}

static void link_checkpoint(void *ctx, uint64_t step, const char *dir)
{
    worker_link *l = ctx;
    Adaptd__Checkpoint c = ADAPTD__CHECKPOINT__INIT;
    c.job_id = (char *)l->job_id;
    c.step = step;
    c.path = (char *)dir;
    c.complete = 1;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_CHECKPOINT;
    f.checkpoint = &c;
    link_send(l, &f);
}

static void link_close(worker_link *l, int ok, const char *error, const char *output_dir)
{
    if (l->fd < 0) return;
    Adaptd__Done d = ADAPTD__DONE__INIT;
    d.job_id = (char *)l->job_id;
    d.ok = ok;
    d.error = (char *)(error ? error : "");
    d.output_dir = (char *)output_dir;
    d.step = l->step;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_DONE;
    f.done = &d;
    link_send(l, &f);
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: adapt-worker train --spec JOB.json [--resume | --resume-from CHECKPOINT]\n"
        "       adapt-worker loss --spec JOB.json --model DIR [--corpus DIR]\n"
        "  train   trains as the spec says (a JobSpec or a bare TrainSpec), one JSON progress\n"
        "          line per step on stdout; under mpirun each rank takes its part of every step.\n"
        "          SIGUSR1 checkpoints at the next step, SIGTERM checkpoints and exits 0;\n"
        "          --resume continues from the newest complete checkpoint in OUTPUT/checkpoints,\n"
        "          --resume-from from the one named, refused unless complete\n"
        "  loss    prints {\"loss\": L, \"tokens\": N}: the mean masked cross-entropy of the model\n"
        "          in DIR over every record of the corpus (default: the spec's)\n");
}

typedef struct worker_args {
    const char *command, *spec, *model, *corpus, *resume_from;
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
        else {
            fprintf(stderr, "adapt-worker: unknown or incomplete argument '%s'\n", s);
            return -1;
        }
    }
    if (!a->spec) {
        fprintf(stderr, "adapt-worker: --spec is required\n");
        return -1;
    }
    return 0;
}

static int command_loss(const worker_args *a, const Adaptd__TrainSpec *spec)
{
    if (!a->model) {
        fprintf(stderr, "adapt-worker loss: --model is required\n");
        return 2;
    }
    adapt_error err = {0};
    double loss;
    uint64_t tokens;
    if (train_eval_loss(spec, a->model, a->corpus, &loss, &tokens, &err)) {
        fprintf(stderr, "adapt-worker loss: %s\n", err.message);
        return 1;
    }
    printf("{\"loss\": %.7g, \"tokens\": %llu}\n", loss, (unsigned long long)tokens);
    return 0;
}

static int command_train(const worker_args *a, const Adaptd__TrainSpec *spec, int *argc,
                         char ***argv)
{
    adapt_error err = {0};
    comm *c = NULL;
    if (comm_init(&c, argc, argv, &err)) {
        fprintf(stderr, "adapt-worker train: %s\n", err.message);
        return 1;
    }
    signals_install();
    worker_link link;
    link_open(&link, comm_rank(c), comm_world(c));
    train_options opt = { .spec = spec, .resume = a->resume, .resume_from = a->resume_from,
                          .signal = &signal_flag,
                          .progress = stdout,
                          .events = { link_progress, link_checkpoint, &link } };
    int rc = train_run(c, &opt, &err);
    link_close(&link, rc >= 0, rc < 0 ? err.message : NULL, spec->output_dir);
    if (rc < 0)
        fprintf(stderr, "adapt-worker train: rank %d: %s: %s\n", comm_rank(c), a->spec,
                err.message);
    else if (rc == TRAIN_STOPPED && comm_rank(c) == 0)
        fprintf(stderr, "adapt-worker train: stopped by SIGTERM after a checkpoint\n");
    comm_close(c);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    worker_args a;
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (args_parse(argc, argv, &a) ||
        (strcmp(a.command, "train") != 0 && strcmp(a.command, "loss") != 0)) {
        usage(stderr);
        return 2;
    }
    Adaptd__JobSpec *job = NULL;
    Adaptd__TrainSpec *spec = NULL;
    adapt_error err = {0};
    if (train_spec_load(a.spec, &job, &spec, &err)) {
        fprintf(stderr, "adapt-worker %s: %s\n", a.command, err.message);
        return 1;
    }
    int rc = !strcmp(a.command, "loss") ? command_loss(&a, spec)
                                        : command_train(&a, spec, &argc, &argv);
    if (job) train_spec_free_job(job);
    else train_spec_free(spec);
    return rc;
}
