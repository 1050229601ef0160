/* scheduler: slots, attempts, retries, heartbeats and re-adoption; see scheduler.h.
 *
 * Design: an in-memory job exists from the start of its first attempt until the last process
 * of its last attempt is gone, in one of three phases: RUN (an attempt's leader is watched —
 * through the launcher's exit callback when this daemon spawned it, by polling /proc when it
 * was adopted), DRAIN (the attempt is over; its leftover processes must end before anything
 * else happens) and READY (drained, a retry may start). An attempt with launcher "slurm" is a
 * Slurm job watched by daemon/slurm.c instead of a process group; its Slurm job id takes the
 * place of the pid in the store. Every decision is written to the job
 * store before it is acted on. Queued jobs are not held in memory: each scheduling pass reads
 * them from the store in creation order. */
#include "scheduler.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "launcher.h"
#include "pipeline.h"
#include "slurm.h"
#include "workqueue.h"

enum { SCHED_PAGE = 64 };

enum sjob_phase { PHASE_RUN, PHASE_DRAIN, PHASE_READY };

typedef struct sjob {
    struct sjob *next;
    scheduler_t *sched;
    char         id[JOB_STORE_ID_LEN + 1];
    char         tag[JOB_STORE_ID_LEN + 16];   /* ADAPTD_JOB_ID=id: in every process it runs */
    uint32_t     ranks, attempt, max_restarts;
    int          phase;
    int          terminal;        /* DRAIN of a finished job: forget it once drained */
    launcher_t  *launcher;        /* RUN and spawned by this daemon */
    slurm_job_t *slurm;           /* RUN as a Slurm job (submitted or adopted) */
    char         slurm_id[64];    /* its id once stored */
    int          heard;           /* a link frame came from this attempt */
    int          adopted;         /* RUN and found running at startup: polled */
    int64_t      pid, pgid;
    uint64_t     pid_start;
    uint64_t     last_frame_ms;   /* loop time of the last link frame (or of the start) */
    uint64_t     kill_at_ms;      /* adopted and stopping: SIGKILL at this loop time */
    int          stopping;
    int          cancel;
    int          done;            /* enum job_store_done */
    char         done_error[512];
    char         stop_reason[256];
    link_peer_t *peer0;           /* rank 0's link connection, for Control */
    int          pipeline;        /* kind "pipeline": each attempt runs one stage (pipeline.h) */
    uint32_t     stage;           /* the stage the current attempt runs; the work queue's key */
    int          stage_train;     /* that stage is the train stage (the one with a loss curve) */
    int          advance;         /* a stage ended well: the next one starts once drained */
} sjob;

struct scheduler {
    scheduler_config cfg;
    char             mpirun[PATH_MAX], worker[PATH_MAX], link_path[PATH_MAX];
    char            *slurm_strings[5];   /* owned copies of the slurm_* paths in cfg */
    uv_loop_t       *loop;
    uv_timer_t       tick, kick;
    int              open_handles;
    int              closing;
    sjob            *jobs;
    workqueue_t     *wq;                 /* shards handed to ranks as they ask (issue 8) */
};

/* ---- the slot rule -------------------------------------------------------------------------- */

size_t scheduler_plan(uint32_t total, uint32_t free, const uint32_t *ranks, size_t n,
                      uint8_t *decision)
{
    size_t started = 0;
    int blocked = 0;
    for (size_t i = 0; i < n; i++) {
        if (ranks[i] > total) {
            decision[i] = SCHEDULER_NEVER;
        } else if (!blocked && ranks[i] <= free) {
            decision[i] = SCHEDULER_START;
            free -= ranks[i];
            started++;
        } else {
            decision[i] = SCHEDULER_WAIT;
            blocked = 1;
        }
    }
    return started;
}

int scheduler_has_checkpoint(const char *output_dir)
{
    char root[PATH_MAX], done[PATH_MAX + 300];
    if (!output_dir || !output_dir[0] ||
        snprintf(root, sizeof root, "%s/checkpoints", output_dir) >= (int)sizeof root)
        return 0;
    DIR *d = opendir(root);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (strncmp(e->d_name, "step-", 5) != 0) continue;
        struct stat st;
        snprintf(done, sizeof done, "%s/%s/DONE", root, e->d_name);
        found = stat(done, &st) == 0 && S_ISREG(st.st_mode);
    }
    closedir(d);
    return found;
}

/* ---- bookkeeping ------------------------------------------------------------------------------ */

static sjob *job_find(scheduler_t *s, const char *id)
{
    for (sjob *j = s->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0) return j;
    return NULL;
}

static sjob *job_add(scheduler_t *s, const job_store_record *r)
{
    sjob *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    memcpy(j->id, r->id, sizeof j->id);
    snprintf(j->tag, sizeof j->tag, "ADAPTD_JOB_ID=%s", r->id);
    j->sched = s;
    j->ranks = r->ranks;
    j->attempt = r->attempt;
    j->max_restarts = r->max_restarts;
    j->cancel = r->cancel_requested;
    j->pipeline = strcmp(r->kind, "pipeline") == 0;
    j->next = s->jobs;
    s->jobs = j;
    return j;
}

static void job_remove(scheduler_t *s, sjob *gone)
{
    for (sjob **p = &s->jobs; *p; p = &(*p)->next)
        if (*p == gone) { *p = gone->next; free(gone); return; }
}

size_t scheduler_active(const scheduler_t *s)
{
    size_t n = 0;
    for (const sjob *j = s->jobs; j; j = j->next) n++;
    return n;
}

uint32_t scheduler_slots_used(const scheduler_t *s)
{
    uint32_t used = 0;
    for (const sjob *j = s->jobs; j; j = j->next) used += j->ranks;
    return used;
}

static void log_store_error(const char *what, const char *id, const adapt_error *err)
{
    fprintf(stderr, "adaptd: job %s: %s: %s\n", id, what, err->message);
}

/* ---- ending an attempt ------------------------------------------------------------------------ */

static void drain_check(scheduler_t *s, sjob *j);

/* slurm.h's outcome codes (negative exit statuses) in words. */
static const char *slurm_outcome(int64_t status)
{
    switch (status) {
    case SLURM_STATUS_CANCELLED:     return "cancelled (scancel or an administrator)";
    case SLURM_STATUS_TIMEOUT:       return "time limit reached";
    case SLURM_STATUS_PREEMPTED:     return "preempted";
    case SLURM_STATUS_NODE_FAIL:     return "node failure";
    case SLURM_STATUS_OUT_OF_MEMORY: return "out of memory";
    case SLURM_STATUS_SUBMIT_FAILED: return "sbatch refused the job";
    default:                         return "the job vanished from squeue and sacct knows nothing of it";
    }
}

/* Why an attempt that did not succeed failed, for the job's error text. */
static void failure_reason(const sjob *j, int known, int64_t status, int sig, char *buf, size_t size)
{
    if (j->stop_reason[0]) snprintf(buf, size, "%s", j->stop_reason);
    else if (j->done == JOB_STORE_DONE_FAILED || j->done == JOB_STORE_DONE_FATAL)
        snprintf(buf, size, "the worker reported: %s", j->done_error[0] ? j->done_error : "failure");
    else if (!known) snprintf(buf, size, "its processes ended without reporting Done (exit status "
                              "unknown: they were started by an earlier adaptd)");
    else if (known && status < 0) snprintf(buf, size, "Slurm ended it: %s", slurm_outcome(status));
    else if (sig) snprintf(buf, size, "killed by signal %d (%s)", sig, strsignal(sig));
    else if (status != 0) snprintf(buf, size, "exited with status %" PRId64 " (see its logs)", status);
    else snprintf(buf, size, "exited with status 0 without reporting Done");
}

/* A pipeline's attempt ended well: the stage it ran is done. 1 when a later stage remains (the
 * job stays running and j->advance starts it once drained), 0 when that was the last one (the
 * job succeeds), -1 when the store could not say (j->stop_reason holds why: the attempt counts
 * as failed, and a retry finds the stage done or reruns it). */
static int pipeline_advance(scheduler_t *s, sjob *j)
{
    adapt_error err = {0};
    job_store_record r;
    pipeline_plan plan;
    uint32_t next = 0;
    int rc = pipeline_stage_finish(s->cfg.store, j->id, j->attempt, &err);
    if (!rc) rc = job_store_get(s->cfg.store, j->id, &r, &err);
    if (rc) {
        snprintf(j->stop_reason, sizeof j->stop_reason, "pipeline stage bookkeeping: %.200s", err.message);
        return -1;
    }
    rc = pipeline_plan_make(r.spec_json, &plan, &err);
    if (!rc) rc = pipeline_next_stage(s->cfg.store, j->id, (uint32_t)plan.n, &next, &err);
    job_store_record_clear(&r);
    int more = 0;
    if (rc) {
        snprintf(j->stop_reason, sizeof j->stop_reason, "pipeline stage bookkeeping: %.200s", err.message);
        more = -1;
    } else if (next < plan.n) {
        fprintf(stderr, "adaptd: job %s attempt %u: stage %s (%u of %zu) finished; %s starts next\n",
                j->id, j->attempt, j->stage < plan.n ? plan.stage[j->stage].name : "?",
                j->stage + 1, plan.n, plan.stage[next].name);
        more = 1;
    }
    pipeline_plan_free(&plan);
    j->advance = more > 0;
    return more;
}

/* The attempt's leader has exited (known = 1, with its status) or was found gone (known = 0,
 * an adopted or lost one): decides the job's next state from the cancel flag, the worker's Done
 * and the exit, writes it, and starts draining what is left of the attempt's processes. */
static void attempt_finish(scheduler_t *s, sjob *j, int known, int64_t status, int sig)
{
    int to;
    char msg[900], why[700];
    /* exit status 2 is adapt-worker's "bad spec or input": no retry can fix it */
    int fatal = j->done == JOB_STORE_DONE_FATAL ||
                (known && !j->stop_reason[0] && sig == 0 && status == 2 && j->done != JOB_STORE_DONE_OK);
    int clean = !j->stop_reason[0] && (!known || (status == 0 && sig == 0));
    /* taken off its slots from outside, not failed: Slurm's preemption, or a worker stopped by
     * SIGTERM (a time limit's warning signal) after a complete checkpoint */
    int preempted = (known && status == SLURM_STATUS_PREEMPTED) ||
                    (j->done == JOB_STORE_DONE_STOPPED &&
                     (clean || (known && status == SLURM_STATUS_TIMEOUT)));
    adapt_error err = {0};
    if (j->pipeline && !j->cancel && j->done == JOB_STORE_DONE_OK && clean) {
        int adv = pipeline_advance(s, j);
        if (adv > 0) {             /* the job stays running; its next stage starts once drained */
            j->terminal = 0;
            goto drain;
        }
        if (adv < 0) clean = 0;    /* the stage bookkeeping failed: stop_reason says why */
    }
    if (j->cancel) {
        to = JOB_STORE_CANCELLED;
        snprintf(msg, sizeof msg, "cancelled by request");
    } else if (j->done == JOB_STORE_DONE_OK && clean) {
        to = JOB_STORE_SUCCEEDED;
        msg[0] = '\0';
    } else if (preempted) {
        to = JOB_STORE_PREEMPTED;
        snprintf(msg, sizeof msg, "attempt %u was preempted (%s); the job resumes from its "
                 "checkpoint in a new attempt, which does not count against max_restarts",
                 j->attempt, status == SLURM_STATUS_PREEMPTED ? "Slurm preempted it"
                 : "its workers stopped after a checkpoint");
    } else {
        failure_reason(j, known, status, sig, why, sizeof why);
        /* preempted attempts are not failures: they widen the budget */
        uint32_t preemptions = 0;
        adapt_error cerr = {0};
        if (job_store_attempt_count(s->cfg.store, j->id, JOB_STORE_PREEMPTED, &preemptions, &cerr) != ADAPT_OK)
            log_store_error("counting preemptions", j->id, &cerr);
        /* a pipeline's stages that ended well are not failures either */
        uint32_t stages_done = 0;
        if (j->pipeline &&
            job_store_attempt_count(s->cfg.store, j->id, JOB_STORE_SUCCEEDED, &stages_done, &cerr) != ADAPT_OK)
            log_store_error("counting finished stages", j->id, &cerr);
        uint32_t attempts = 1 + j->max_restarts + preemptions + stages_done;
        if (fatal) {
            to = JOB_STORE_FAILED;
            snprintf(msg, sizeof msg, "attempt %u failed and is not retried (a spec or input "
                     "error): %s", j->attempt, why);
        } else if (j->attempt < attempts) {
            to = JOB_STORE_RETRYING;
            snprintf(msg, sizeof msg, "attempt %u of %u failed: %s; retrying from the newest "
                     "complete checkpoint", j->attempt, attempts, why);
        } else {
            to = JOB_STORE_FAILED;
            snprintf(msg, sizeof msg, "attempt %u of %u failed: %s", j->attempt, attempts, why);
        }
    }
    if (job_store_transition(s->cfg.store, j->id, to, msg[0] ? msg : NULL, &err) != ADAPT_OK) {
        /* e.g. a Done ok from a worker that never said Hello (still starting): not a success
         * the lifecycle can record, so the job fails with both reasons rather than staying
         * starting forever */
        log_store_error("ending an attempt", j->id, &err);
        snprintf(why, sizeof why, "%.600s", err.message);
        snprintf(msg, sizeof msg, "attempt %u ended in a state adaptd could not record: %s",
                 j->attempt, why);
        to = JOB_STORE_FAILED;
        if (job_store_transition(s->cfg.store, j->id, to, msg, &err) != ADAPT_OK)
            log_store_error("failing", j->id, &err);
    }
    fprintf(stderr, "adaptd: job %s attempt %u: %s%s%s\n", j->id, j->attempt,
            job_store_state_name(to), msg[0] ? ": " : "", msg);
    j->terminal = to != JOB_STORE_RETRYING && to != JOB_STORE_PREEMPTED;
drain:;
    /* the work queue: units this attempt held but did not finish are for the next one */
    uint64_t requeued = 0;
    if (s->wq && workqueue_attempt_end(s->wq, j->id, j->attempt, &requeued, &err) != ADAPT_OK)
        log_store_error("putting the attempt's units of work back", j->id, &err);
    else if (requeued)
        fprintf(stderr, "adaptd: job %s attempt %u: %" PRIu64 " unfinished units of work go back "
                "to the queue\n", j->id, j->attempt, requeued);
    /* whatever the leader left behind goes now: a retry must never meet the last attempt */
    if (j->pgid > 0) launcher_group_signal((int)j->pgid, SIGKILL, j->tag);
    j->phase = PHASE_DRAIN;
    j->launcher = NULL;
    j->slurm = NULL;
    j->slurm_id[0] = '\0';
    j->adopted = j->stopping = j->heard = 0;
    j->kill_at_ms = 0;
    j->done = JOB_STORE_DONE_NONE;
    j->done_error[0] = j->stop_reason[0] = '\0';
    j->peer0 = NULL;
    drain_check(s, j);
}

static void on_slurm_exit(void *ctx, slurm_job_t *sj, int64_t status, int sig)
{
    sjob *j = ctx;
    if (j->slurm != sj) return;
    const char *e = slurm_job_error(sj);
    if (status < 0 && e && e[0] && !j->stop_reason[0])
        snprintf(j->stop_reason, sizeof j->stop_reason, "Slurm ended it: %s", e);
    j->slurm = NULL;
    attempt_finish(j->sched, j, 1, status, sig);
}

static void on_launcher_exit(void *ctx, launcher_t *l, int64_t status, int sig)
{
    sjob *j = ctx;
    if (j->launcher != l) return;
    j->launcher = NULL;
    attempt_finish(j->sched, j, 1, status, sig);
}

/* ---- starting an attempt ---------------------------------------------------------------------- */

/* Writes text to path through a temporary file and a rename, so a reader (the worker, a person)
 * never sees half of it. */
static int write_file_atomic(const char *path, const char *text, adapt_error *err)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t n = strlen(text);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return adapt_fail(err, ADAPT_EIO, "writing %s: %s", tmp, strerror(e));
    }
    if (close(fd) != 0 || rename(tmp, path) != 0)
        return adapt_fail(err, ADAPT_EIO, "writing %s: %s", path, strerror(errno));
    return ADAPT_OK;
}

static int mkdir_one(const char *path, adapt_error *err)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return adapt_fail(err, ADAPT_EIO, "creating %s: %s", path, strerror(errno));
    return ADAPT_OK;
}

/* From the normalized spec JSON: the train spec's output_dir ("" for other kinds) and whether
 * the job runs under Slurm. */
static void spec_fields(const char *spec_json, char *output_dir, size_t size, int *slurm,
                        char *backend, size_t backend_size)
{
    output_dir[0] = '\0';
    cJSON *doc = cJSON_Parse(spec_json);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "train");
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(t, "output_dir");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(doc, "launcher");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(doc, "backend");
    if (cJSON_IsString(o)) snprintf(output_dir, size, "%s", o->valuestring);
    *slurm = cJSON_IsString(l) && strcmp(l->valuestring, "slurm") == 0;
    /* the spec's rules admit cpu | cuda; unset means cpu */
    snprintf(backend, backend_size, "%s",
             cJSON_IsString(b) && b->valuestring[0] ? b->valuestring : "cpu");
    cJSON_Delete(doc);
}

/* What slurm.c needs for both a new and an adopted Slurm job; the caller adds the rest. */
static slurm_spec slurm_spec_base(const scheduler_t *s, sjob *j)
{
    slurm_spec ss = { .sbatch = s->cfg.sbatch, .squeue = s->cfg.squeue, .scancel = s->cfg.scancel,
                      .sacct = s->cfg.sacct, .poll_ms = s->cfg.slurm_poll_ms,
                      .grace_ms = s->cfg.kill_grace_ms, .on_exit = on_slurm_exit, .ctx = j };
    return ss;
}

typedef struct attempt_files {
    char job_dir[PATH_MAX], spec[PATH_MAX + 16], log_dir[PATH_MAX + 64];
} attempt_files;

/* The job folder's spec.json (the normalized spec, rewritten for each attempt) and the
 * attempt's log folder JOBDIR/logs/attempt-N. */
static int attempt_prepare(scheduler_t *s, const job_store_record *r, uint32_t attempt,
                           attempt_files *f, adapt_error *err)
{
    if (job_store_job_dir(s->cfg.store, r->id, f->job_dir, sizeof f->job_dir) != ADAPT_OK)
        return adapt_fail(err, ADAPT_ERANGE, "job %s: folder path too long", r->id);
    snprintf(f->spec, sizeof f->spec, "%s/spec.json", f->job_dir);
    snprintf(f->log_dir, sizeof f->log_dir, "%s/logs", f->job_dir);
    int rc = mkdir_one(f->job_dir, err);
    if (!rc) rc = mkdir_one(f->log_dir, err);
    snprintf(f->log_dir, sizeof f->log_dir, "%s/logs/attempt-%u", f->job_dir, attempt);
    if (!rc) rc = mkdir_one(f->log_dir, err);
    if (!rc) rc = write_file_atomic(f->spec, r->spec_json, err);
    return rc;
}

/* One attempt's command line and environment, and the strings they point into. */
typedef struct attempt_cmd {
    attempt_files f;
    char          np[16], e_link[PATH_MAX + 16], e_job[64], e_attempt[32], e_log[PATH_MAX + 80],
                  e_hb[48], backend[16];
    const char   *argv[18], *env[7];
    int           worker_at;   /* argv[worker_at..]: the worker's own command (srun's, under Slurm) */
    int           resume, slurm;
    /* a pipeline's stage: its kind, its spec file JOBDIR/stage-K.json, its output folder */
    char          stage_kind[16], stage_spec[PATH_MAX + 32], stage_out[PATH_MAX];
} attempt_cmd;

/* mpirun -np N [--allow-run-as-root] --oversubscribe --bind-to none adapt-worker KIND
 * [--backend B] --spec SPEC [--resume], and the ADAPTD_ environment every rank reads. --backend
 * (the JobSpec's, cpu when unset) goes to train only: the generation kinds run on cpu. */
static void attempt_command(const scheduler_t *s, const sjob *j, const job_store_record *r,
                            uint32_t attempt, attempt_cmd *c)
{
    char output_dir[PATH_MAX];
    spec_fields(r->spec_json, output_dir, sizeof output_dir, &c->slurm, c->backend,
                sizeof c->backend);
    const char *kind = c->stage_kind[0] ? c->stage_kind : r->kind;
    const char *spec = c->stage_spec[0] ? c->stage_spec : c->f.spec;
    if (c->stage_kind[0]) snprintf(output_dir, sizeof output_dir, "%s",
                                   strcmp(kind, "train") == 0 ? c->stage_out : "");
    c->resume = attempt > 1 && scheduler_has_checkpoint(output_dir);
    snprintf(c->np, sizeof c->np, "%u", r->ranks);
    int a = 0;
    c->argv[a++] = s->mpirun;
    c->argv[a++] = "-np";
    c->argv[a++] = c->np;
    if (geteuid() == 0) c->argv[a++] = "--allow-run-as-root";
    c->argv[a++] = "--oversubscribe";
    c->argv[a++] = "--bind-to";
    c->argv[a++] = "none";
    c->worker_at = a;
    c->argv[a++] = s->worker;
    c->argv[a++] = kind;
    if (strcmp(kind, "train") == 0) {
        c->argv[a++] = "--backend";
        c->argv[a++] = c->backend;
    }
    c->argv[a++] = "--spec";
    c->argv[a++] = spec;
    if (c->resume) c->argv[a++] = "--resume";
    c->argv[a] = NULL;

    snprintf(c->e_link, sizeof c->e_link, "ADAPTD_LINK=%s", s->link_path);
    snprintf(c->e_job, sizeof c->e_job, "%s", j->tag);
    snprintf(c->e_attempt, sizeof c->e_attempt, "ADAPTD_ATTEMPT=%u", attempt);
    snprintf(c->e_log, sizeof c->e_log, "ADAPTD_LOG_DIR=%s", c->f.log_dir);
    uint64_t hb = s->cfg.heartbeat_timeout_ms ? s->cfg.heartbeat_timeout_ms / 4 : 10000;
    snprintf(c->e_hb, sizeof c->e_hb, "ADAPTD_HEARTBEAT_MS=%" PRIu64, hb < 100 ? 100 : hb);
    /* the kinds whose ranks take their shards from the work queue (daemon/workqueue.h) */
    static const char *const queued_kinds[] = { "synthesize", "filter", "evaluate" };
    const char *wq = NULL;
    for (size_t k = 0; k < sizeof queued_kinds / sizeof queued_kinds[0]; k++)
        if (strcmp(kind, queued_kinds[k]) == 0) wq = "ADAPTD_WORK_QUEUE=1";
    const char *env[] = { c->e_link, c->e_job, c->e_attempt, c->e_log, c->e_hb, wq, NULL };
    memcpy(c->env, env, sizeof env);
}

/* Spawns the command locally, or submits it to Slurm. */
static int attempt_launch(scheduler_t *s, sjob *j, const job_store_record *r, uint32_t attempt,
                          attempt_cmd *c, adapt_error *err)
{
    if (!c->slurm) {
        launcher_spec ls = { .argv = c->argv, .env = c->env, .log_dir = c->f.log_dir,
                             .log_name = "launcher.log", .cwd = c->f.job_dir,
                             .grace_ms = s->cfg.kill_grace_ms, .on_exit = on_launcher_exit, .ctx = j };
        return launcher_start(&j->launcher, s->loop, &ls, err);
    }
    if (!s->cfg.slurm_template)
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "launcher \"slurm\": adaptd runs without "
                          "--slurm-template");
    slurm_spec ss = slurm_spec_base(s, j);
    ss.template_path = s->cfg.slurm_template;
    ss.job_dir = c->f.job_dir;
    ss.job_id = r->id;
    ss.attempt = attempt;
    ss.ranks = r->ranks;
    ss.worker_argv = c->argv + c->worker_at;
    ss.env = c->env;
    ss.log_dir = c->f.log_dir;
    return slurm_job_start(&j->slurm, s->loop, &ss, err);
}

/* A pipeline's attempt: the lowest stage not done yet, its spec written to JOBDIR/stage-K.json
 * and the stage marked running by this attempt in the store. */
static int stage_prepare(scheduler_t *s, sjob *j, const job_store_record *r, uint32_t attempt,
                         attempt_cmd *c, adapt_error *err)
{
    pipeline_plan plan;
    uint32_t next = 0;
    int rc = pipeline_plan_make(r->spec_json, &plan, err);
    if (!rc) rc = pipeline_next_stage(s->cfg.store, r->id, (uint32_t)plan.n, &next, err);
    if (!rc && next >= plan.n)
        rc = adapt_fail(err, ADAPT_EINVAL, "pipeline job %s: every stage is done already", r->id);
    if (!rc) {
        const pipeline_stage *st = &plan.stage[next];
        snprintf(c->stage_spec, sizeof c->stage_spec, "%s/stage-%u.json", c->f.job_dir, next);
        snprintf(c->stage_kind, sizeof c->stage_kind, "%s", st->kind);
        snprintf(c->stage_out, sizeof c->stage_out, "%s", st->output_dir);
        rc = write_file_atomic(c->stage_spec, st->spec_json, err);
        if (!rc) rc = pipeline_stage_begin(s->cfg.store, r->id, next, st->name, attempt, err);
        if (!rc) {
            j->stage = next;
            j->stage_train = strcmp(st->kind, "train") == 0;
            fprintf(stderr, "adaptd: job %s attempt %u runs pipeline stage %s (%u of %zu)\n",
                    r->id, attempt, st->name, next + 1, plan.n);
        }
    }
    pipeline_plan_free(&plan);
    return rc;
}

/* Starts the next attempt of job j (record r: queued, retrying or preempted): the store moves
 * it to starting first, so an attempt is on record before its process exists. */
static void attempt_start(scheduler_t *s, sjob *j, const job_store_record *r)
{
    adapt_error err = {0};
    uint32_t attempt = r->attempt + 1;
    if (job_store_transition(s->cfg.store, r->id, JOB_STORE_STARTING, NULL, &err) != ADAPT_OK) {
        log_store_error("starting", r->id, &err);
        job_remove(s, j);
        return;
    }
    j->attempt = attempt;
    j->phase = PHASE_RUN;
    j->pid = j->pgid = 0;
    j->pid_start = 0;
    /* leases of earlier attempts a daemon crash kept from going back (attempt_finish does it) */
    if (s->wq && workqueue_attempt_end(s->wq, r->id, attempt - 1, NULL, &err) != ADAPT_OK)
        log_store_error("putting earlier attempts' units of work back", r->id, &err);
    j->advance = 0;
    attempt_cmd c;
    c.stage_kind[0] = c.stage_spec[0] = c.stage_out[0] = '\0';
    int rc = attempt_prepare(s, r, attempt, &c.f, &err);
    if (rc == ADAPT_OK && j->pipeline) rc = stage_prepare(s, j, r, attempt, &c, &err);
    if (rc == ADAPT_OK) {
        attempt_command(s, j, r, attempt, &c);
        rc = attempt_launch(s, j, r, attempt, &c, &err);
    }
    if (rc != ADAPT_OK) {
        /* nothing runs: a missing mpirun or worker, an unwritable folder — a retry would meet
         * the same, so the job fails with the reason */
        char msg[sizeof err.message + 64];
        snprintf(msg, sizeof msg, "attempt %u could not start: %s", attempt, err.message);
        adapt_error e2 = {0};
        if (job_store_transition(s->cfg.store, r->id, JOB_STORE_FAILED, msg, &e2) != ADAPT_OK)
            log_store_error("failing", r->id, &e2);
        fprintf(stderr, "adaptd: job %s: %s\n", r->id, msg);
        job_remove(s, j);
        return;
    }
    uv_update_time(s->loop);
    j->last_frame_ms = uv_now(s->loop);
    if (c.slurm) {
        fprintf(stderr, "adaptd: job %s attempt %u submitted to Slurm: %u ranks%s, logs in %s\n",
                r->id, attempt, r->ranks, c.resume ? ", --resume" : "", c.f.log_dir);
        return;
    }
    j->pid = j->pgid = launcher_pid(j->launcher);
    launcher_proc_info((int)j->pid, &j->pid_start, NULL);
    if (job_store_attempt_set_process(s->cfg.store, r->id, attempt, j->pid, j->pid_start, j->pgid,
                                      &err) != ADAPT_OK)
        log_store_error("recording the attempt's process", r->id, &err);
    fprintf(stderr, "adaptd: job %s attempt %u started: pid %" PRId64 ", %u ranks%s, logs in %s\n",
            r->id, attempt, j->pid, r->ranks, c.resume ? ", --resume" : "", c.f.log_dir);
}

/* ---- stopping --------------------------------------------------------------------------------- */

/* SIGTERM to the attempt's processes now, SIGKILL after the grace. */
static void attempt_stop(scheduler_t *s, sjob *j)
{
    if (j->phase != PHASE_RUN || j->stopping) return;
    j->stopping = 1;
    if (j->slurm) {
        slurm_job_stop(j->slurm);
    } else if (j->launcher) {
        launcher_stop(j->launcher);
    } else {
        launcher_group_signal((int)j->pgid, SIGTERM, j->tag);
        uv_update_time(s->loop);
        j->kill_at_ms = uv_now(s->loop) + s->cfg.kill_grace_ms;
    }
}

/* SIGKILL to the attempt's processes now (heartbeat time-out); reason becomes the error. */
static void attempt_kill(sjob *j, const char *reason)
{
    snprintf(j->stop_reason, sizeof j->stop_reason, "%s", reason);
    j->stopping = 1;
    if (j->slurm) slurm_job_stop(j->slurm);   /* scancel: Slurm owns the processes */
    else if (j->launcher) launcher_kill(j->launcher);
    else launcher_group_signal((int)j->pgid, SIGKILL, j->tag);
}

/* ---- the scheduling pass ---------------------------------------------------------------------- */

static void retry_start(scheduler_t *s, sjob *j)
{
    job_store_record r;
    adapt_error err = {0};
    if (job_store_get(s->cfg.store, j->id, &r, &err) != ADAPT_OK) {
        log_store_error("reading for a retry", j->id, &err);
        return;
    }
    if (r.state == JOB_STORE_RETRYING || r.state == JOB_STORE_PREEMPTED ||
        (r.state == JOB_STORE_RUNNING && j->advance))   /* a pipeline's next stage */
        attempt_start(s, j, &r);
    else if (job_store_state_is_terminal(r.state)) job_remove(s, j);   /* cancelled meanwhile */
    job_store_record_clear(&r);
}

static void schedule(scheduler_t *s)
{
    if (s->closing) return;
    for (sjob *j = s->jobs, *next; j; j = next) {
        next = j->next;
        if (j->phase == PHASE_READY) retry_start(s, j);   /* it holds its slots already */
    }
    if (s->cfg.hold) return;
    job_store_record rows[SCHED_PAGE];
    uint32_t ranks[SCHED_PAGE];
    uint8_t decision[SCHED_PAGE];
    int64_t after = 0;
    for (;;) {
        size_t n = 0;
        adapt_error err = {0};
        if (job_store_list(s->cfg.store, JOB_STORE_QUEUED, after, rows, SCHED_PAGE, &n, &err) != ADAPT_OK) {
            fprintf(stderr, "adaptd: scheduler: %s\n", err.message);
            return;
        }
        if (n == 0) return;
        uint32_t used = scheduler_slots_used(s);
        for (size_t i = 0; i < n; i++) ranks[i] = rows[i].ranks;
        scheduler_plan(s->cfg.slots, used < s->cfg.slots ? s->cfg.slots - used : 0, ranks, n, decision);
        int blocked = 0;
        for (size_t i = 0; i < n; i++) {
            if (decision[i] == SCHEDULER_NEVER) {
                char msg[160];
                snprintf(msg, sizeof msg, "needs %u ranks; this adaptd has --slots %u",
                         rows[i].ranks, s->cfg.slots);
                if (job_store_transition(s->cfg.store, rows[i].id, JOB_STORE_FAILED, msg, &err) != ADAPT_OK)
                    log_store_error("failing", rows[i].id, &err);
            } else if (decision[i] == SCHEDULER_START) {
                sjob *j = job_add(s, &rows[i]);
                if (j) attempt_start(s, j, &rows[i]);
            } else {
                blocked = 1;
            }
        }
        after = rows[n - 1].seq;
        for (size_t i = 0; i < n; i++) job_store_record_clear(&rows[i]);
        if (blocked || n < SCHED_PAGE) return;
    }
}

static void on_kick(uv_timer_t *t) { schedule(t->data); }

void scheduler_kick(scheduler_t *s)
{
    if (s && !s->closing) uv_timer_start(&s->kick, on_kick, 0, 0);
}

static void drain_check(scheduler_t *s, sjob *j)
{
    if (j->phase != PHASE_DRAIN || (j->pgid > 0 && launcher_group_alive((int)j->pgid, j->tag))) return;
    if (j->terminal) job_remove(s, j);
    else j->phase = PHASE_READY;
    scheduler_kick(s);
}

/* Every poll_ms: adopted leaders that ended, stops past their grace, silent attempts, groups
 * that finished draining. */
static void on_tick(uv_timer_t *t)
{
    scheduler_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (sjob *j = s->jobs, *next; j; j = next) {
        next = j->next;
        if (j->phase == PHASE_DRAIN) { drain_check(s, j); continue; }
        if (j->phase != PHASE_RUN) continue;
        if (j->slurm && !j->slurm_id[0] && slurm_job_id(j->slurm)[0]) {
            adapt_error err = {0};
            snprintf(j->slurm_id, sizeof j->slurm_id, "%s", slurm_job_id(j->slurm));
            if (job_store_attempt_set_slurm_id(s->cfg.store, j->id, j->attempt, j->slurm_id, &err) != ADAPT_OK)
                log_store_error("recording the Slurm job id", j->id, &err);
            else
                fprintf(stderr, "adaptd: job %s attempt %u is Slurm job %s\n", j->id, j->attempt, j->slurm_id);
        }
        if (j->adopted) {
            uint64_t st = 0;
            if (!launcher_proc_info((int)j->pid, &st, NULL) || st != j->pid_start) {
                attempt_finish(s, j, 0, 0, 0);
                continue;
            }
            if (j->kill_at_ms && now >= j->kill_at_ms) launcher_group_signal((int)j->pgid, SIGKILL, j->tag);
        }
        uint64_t hb = s->cfg.heartbeat_timeout_ms;
        /* a Slurm job may wait in the queue for hours: its clock starts at its first frame */
        if (hb && !j->stop_reason[0] && (!j->slurm || j->heard) && now - j->last_frame_ms > hb) {
            char why[200];
            snprintf(why, sizeof why, "no heartbeat or other link frame from its workers for %.1f s "
                     "(--heartbeat-timeout); its processes were killed", (double)hb / 1000);
            fprintf(stderr, "adaptd: job %s attempt %u: %s\n", j->id, j->attempt, why);
            attempt_kill(j, why);
        }
    }
}

/* ---- link frames ------------------------------------------------------------------------------ */

static const char *frame_job(const Adaptd__LinkFrame *f)
{
    switch (f->body_case) {
    case ADAPTD__LINK_FRAME__BODY_HELLO:      return f->hello->job_id;
    case ADAPTD__LINK_FRAME__BODY_PROGRESS:   return f->progress->job_id;
    case ADAPTD__LINK_FRAME__BODY_CHECKPOINT: return f->checkpoint->job_id;
    case ADAPTD__LINK_FRAME__BODY_DONE:       return f->done->job_id;
    case ADAPTD__LINK_FRAME__BODY_HEARTBEAT:  return f->heartbeat->job_id;
    case ADAPTD__LINK_FRAME__BODY_WORK_REQUEST: return f->work_request->job_id;
    case ADAPTD__LINK_FRAME__BODY_SHARD_DONE:   return f->shard_done->job_id;
    default:                                  return "";
    }
}

/* The work queue's frames (workqueue.h): a WorkRequest is answered with a WorkGrant on the same
 * connection; a ShardDone is recorded. Non-zero closes the connection (a refused request gets
 * its WorkGrant with the error first, so the worker can say why it stops). */
static int work_frame(scheduler_t *s, sjob *j, link_peer_t *peer, const Adaptd__LinkFrame *f)
{
    adapt_error err = {0};
    if (!s->wq) return 1;
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_SHARD_DONE) {
        const Adaptd__ShardDone *d = f->shard_done;
        int dup = 0;
        if (workqueue_done(s->wq, j->id, j->stage, d->shard, d->rank, j->attempt, d->output_path,
                           d->records, &dup, &err) != ADAPT_OK) {
            fprintf(stderr, "adaptd: job %s rank %u: %s; closing its connection\n", j->id,
                    d->rank, err.message);
            return 1;
        }
        if (dup)
            fprintf(stderr, "adaptd: job %s: unit %" PRIu64 " reported done again (rank %u, "
                    "attempt %u)\n", j->id, d->shard, d->rank, j->attempt);
        return 0;
    }
    const Adaptd__WorkRequest *q = f->work_request;
    Adaptd__WorkGrant g = ADAPTD__WORK_GRANT__INIT;
    uint64_t shard = 0;
    int none = 0;
    int rc = workqueue_request(s->wq, j->id, j->stage, q->units, q->rank, j->attempt, &shard, &none, &err);
    g.shard = shard;
    g.none_left = none;
    if (rc != ADAPT_OK) {
        g.error = err.message;
        /* workqueue_request's EINVAL is a unit count its table disagrees with: the input's
         * fault, the same on every attempt; anything else (the store) may pass next time */
        g.fatal = rc == ADAPT_EINVAL;
        fprintf(stderr, "adaptd: job %s: %s\n", j->id, err.message);
    }
    Adaptd__LinkFrame out = ADAPTD__LINK_FRAME__INIT;
    out.body_case = ADAPTD__LINK_FRAME__BODY_WORK_GRANT;
    out.work_grant = &g;
    adapt_error serr = {0};
    if (link_peer_send(peer, &out, &serr) != ADAPT_OK) {
        /* the lease stays until this rank asks again or the attempt ends */
        fprintf(stderr, "adaptd: job %s rank %u: %s\n", j->id, q->rank, serr.message);
        return 1;
    }
    return 0;
}

int scheduler_on_frame(void *ctx, link_peer_t *peer, const Adaptd__LinkFrame *f)
{
    scheduler_t *s = ctx;
    const char *id = frame_job(f);
    sjob *j = id ? job_find(s, id) : NULL;
    if (!j || j->phase != PHASE_RUN) {
        fprintf(stderr, "adaptd: worker link: no attempt of job %s is running; closing the "
                "connection\n", id && id[0] ? id : "(none)");
        return 1;
    }
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_HELLO && f->hello->attempt &&
        f->hello->attempt != j->attempt) {
        fprintf(stderr, "adaptd: worker link: job %s: a worker of attempt %u said hello; attempt "
                "%u is the current one; closing it\n", id, f->hello->attempt, j->attempt);
        return 1;
    }
    j->last_frame_ms = uv_now(s->loop);
    j->heard = 1;
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_WORK_REQUEST ||
        f->body_case == ADAPTD__LINK_FRAME__BODY_SHARD_DONE)
        return work_frame(s, j, peer, f);
    /* a pipeline's metrics series is its train stage's loss curve: the other stages' Progress
     * (units done, keyed by the same step numbers) would overwrite its points; their progress
     * is the work queue's per-stage shard counts */
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_PROGRESS && j->pipeline && !j->stage_train)
        return 0;
    adapt_error err = {0};
    if (link_store_frame(s->cfg.store, f, &err) != ADAPT_OK) {
        fprintf(stderr, "adaptd: worker link (job %s rank %u): %s; closing it\n", id,
                link_peer_rank(peer), err.message);
        return 1;
    }
    /* a rank's work-queue connection is not the one Control frames go to */
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_HELLO && f->hello->rank == 0 &&
        !f->hello->work_queue)
        j->peer0 = peer;
    if (f->body_case == ADAPTD__LINK_FRAME__BODY_DONE) {
        j->done = link_done_outcome(f->done);
        snprintf(j->done_error, sizeof j->done_error, "%s", f->done->error ? f->done->error : "");
    }
    return 0;
}

void scheduler_on_close(void *ctx, link_peer_t *peer, const char *job_id)
{
    scheduler_t *s = ctx;
    sjob *j = job_id && job_id[0] ? job_find(s, job_id) : NULL;
    if (j && j->peer0 == peer) j->peer0 = NULL;
}

/* ---- API actions ------------------------------------------------------------------------------ */

int scheduler_cancel(scheduler_t *s, const char *id, int *pending, adapt_error *err)
{
    *pending = 0;
    job_store_record r;
    int rc = job_store_get(s->cfg.store, id, &r, err);
    if (rc != ADAPT_OK) return rc;
    int state = r.state;
    job_store_record_clear(&r);
    if (job_store_state_is_terminal(state))
        return adapt_fail(err, ADAPT_EINVAL, "job %s is already %s", id, job_store_state_name(state));
    sjob *j = job_find(s, id);
    if (j && j->phase == PHASE_RUN) {
        if ((rc = job_store_request_cancel(s->cfg.store, id, err)) != ADAPT_OK) return rc;
        j->cancel = 1;
        attempt_stop(s, j);
        *pending = 1;
        return ADAPT_OK;
    }
    rc = job_store_transition(s->cfg.store, id, JOB_STORE_CANCELLED, "cancelled by request", err);
    if (rc == ADAPT_OK && j) {
        /* a retry that had not started: its slots go once its old processes are gone */
        j->phase = PHASE_DRAIN;
        j->terminal = 1;
        drain_check(s, j);
    }
    return rc;
}

int scheduler_checkpoint(scheduler_t *s, const char *id, adapt_error *err)
{
    job_store_record r;
    int rc = job_store_get(s->cfg.store, id, &r, err);
    if (rc != ADAPT_OK) return rc;
    int state = r.state;
    job_store_record_clear(&r);
    sjob *j = job_find(s, id);
    if (state != JOB_STORE_RUNNING || !j || j->phase != PHASE_RUN || j->stopping)
        return adapt_fail(err, ADAPT_EINVAL, "job %s is %s: only a running job can checkpoint", id,
                          job_store_state_name(state));
    if (!j->peer0)
        return adapt_fail(err, ADAPT_EINVAL, "job %s: its rank-0 worker is not connected to the "
                          "worker link (yet); try again", id);
    Adaptd__Control c = ADAPTD__CONTROL__INIT;
    c.action = ADAPTD__CONTROL__ACTION__CONTROL_CHECKPOINT;
    c.reason = "requested through the API";
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_CONTROL;
    f.control = &c;
    rc = link_peer_send(j->peer0, &f, err);
    return rc == ADAPT_OK ? ADAPT_OK : adapt_fail(err, ADAPT_EINVAL, "job %s: %s", id, err->message);
}

/* ---- recovery --------------------------------------------------------------------------------- */

static void recover_job(scheduler_t *s, const job_store_record *r)
{
    sjob *j = job_add(s, r);
    if (!j) return;
    job_store_attempt at;
    adapt_error err = {0};
    if (r->attempt == 0 || job_store_attempt_get(s->cfg.store, r->id, r->attempt, &at, &err) != ADAPT_OK)
        memset(&at, 0, sizeof at);
    j->pid = at.pid;
    j->pgid = at.pgid;
    j->pid_start = at.pid_start;
    j->done = at.done;
    snprintf(j->done_error, sizeof j->done_error, "%s", at.done_error);
    if (j->pipeline) {   /* the stage the attempt runs: the lowest one not done */
        pipeline_plan plan;
        uint32_t next = 0;
        if (pipeline_plan_make(r->spec_json, &plan, &err) != ADAPT_OK ||
            pipeline_next_stage(s->cfg.store, r->id, (uint32_t)plan.n, &next, &err) != ADAPT_OK)
            log_store_error("reading the pipeline's stages", r->id, &err);
        j->stage = next;
        j->stage_train = next < plan.n && strcmp(plan.stage[next].kind, "train") == 0;
        pipeline_plan_free(&plan);
    }
    if (r->state == JOB_STORE_RETRYING || r->state == JOB_STORE_PREEMPTED) {
        j->phase = PHASE_DRAIN;
        drain_check(s, j);
        return;
    }
    j->phase = PHASE_RUN;
    if (at.slurm_id[0]) {
        slurm_spec ss = slurm_spec_base(s, j);
        if (slurm_job_adopt(&j->slurm, s->loop, at.slurm_id, &ss, &err) == ADAPT_OK) {
            snprintf(j->slurm_id, sizeof j->slurm_id, "%s", at.slurm_id);
            j->last_frame_ms = uv_now(s->loop);
            fprintf(stderr, "adaptd: job %s attempt %u: adopted its Slurm job %s\n", r->id,
                    r->attempt, at.slurm_id);
            if (j->cancel) attempt_stop(s, j);
            return;
        }
        fprintf(stderr, "adaptd: job %s: Slurm job %s: %s\n", r->id, at.slurm_id, err.message);
        j->slurm = NULL;
    }
    uint64_t st = 0;
    if (at.pid > 0 && launcher_proc_info((int)at.pid, &st, NULL) && st == at.pid_start) {
        j->adopted = 1;
        j->last_frame_ms = uv_now(s->loop);
        fprintf(stderr, "adaptd: job %s attempt %u: adopted its running process %" PRId64 "\n",
                r->id, r->attempt, at.pid);
        if (j->cancel) attempt_stop(s, j);
        return;
    }
    attempt_finish(s, j, 0, 0, 0);
}

int scheduler_recover(scheduler_t *s, adapt_error *err)
{
    static const int states[] = { JOB_STORE_STARTING, JOB_STORE_RUNNING, JOB_STORE_RETRYING,
                                  JOB_STORE_PREEMPTED };
    job_store_record rows[SCHED_PAGE];
    uv_update_time(s->loop);
    for (size_t k = 0; k < sizeof states / sizeof states[0]; k++) {
        int64_t after = 0;
        size_t n;
        do {
            int rc = job_store_list(s->cfg.store, states[k], after, rows, SCHED_PAGE, &n, err);
            if (rc != ADAPT_OK) return rc;
            for (size_t i = 0; i < n; i++) {
                /* a retry decided above moves a job into a later state of this loop: once only */
                if (!job_find(s, rows[i].id)) recover_job(s, &rows[i]);
                after = rows[i].seq;
                job_store_record_clear(&rows[i]);
            }
        } while (n == SCHED_PAGE);
    }
    scheduler_kick(s);
    return ADAPT_OK;
}

/* ---- life of the scheduler -------------------------------------------------------------------- */

static void timer_closed(uv_handle_t *h);

int scheduler_init(scheduler_t **out, uv_loop_t *loop, const scheduler_config *cfg,
                   adapt_error *err)
{
    *out = NULL;
    scheduler_t *s = calloc(1, sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    s->cfg = *cfg;
    s->loop = loop;
    if (snprintf(s->mpirun, sizeof s->mpirun, "%s", cfg->mpirun ? cfg->mpirun : "mpirun") >= (int)sizeof s->mpirun ||
        snprintf(s->worker, sizeof s->worker, "%s", cfg->worker ? cfg->worker : "adapt-worker") >= (int)sizeof s->worker ||
        snprintf(s->link_path, sizeof s->link_path, "%s", cfg->link_path ? cfg->link_path : "") >= (int)sizeof s->link_path) {
        free(s);
        return adapt_fail(err, ADAPT_ERANGE, "scheduler: a path is longer than %d bytes", PATH_MAX);
    }
    if (!s->cfg.poll_ms) s->cfg.poll_ms = 500;
    const char **slurm_paths[5] = { &s->cfg.slurm_template, &s->cfg.sbatch, &s->cfg.squeue,
                                    &s->cfg.scancel, &s->cfg.sacct };
    for (int i = 0; i < 5; i++) {
        if (!*slurm_paths[i]) continue;
        if (!(s->slurm_strings[i] = strdup(*slurm_paths[i]))) {
            for (int k = 0; k < i; k++) free(s->slurm_strings[k]);
            free(s);
            return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
        }
        *slurm_paths[i] = s->slurm_strings[i];
    }
    s->cfg.mpirun = s->mpirun;
    s->cfg.worker = s->worker;
    s->cfg.link_path = s->link_path;
    uv_timer_init(loop, &s->tick);
    uv_timer_init(loop, &s->kick);
    s->tick.data = s->kick.data = s;
    s->open_handles = 2;
    /* the work queue shares the store's database; without a store (unit tests of the slot
     * rule) there is none and work-queue frames are refused */
    int rc = cfg->store ? workqueue_open(&s->wq, cfg->store, err) : ADAPT_OK;
    if (rc != ADAPT_OK) {
        uv_close((uv_handle_t *)&s->tick, timer_closed);
        uv_close((uv_handle_t *)&s->kick, timer_closed);
        return rc;
    }
    uv_timer_start(&s->tick, on_tick, s->cfg.poll_ms, s->cfg.poll_ms);
    *out = s;
    return ADAPT_OK;
}

workqueue_t *scheduler_workqueue(const scheduler_t *s) { return s ? s->wq : NULL; }

static void timer_closed(uv_handle_t *h)
{
    scheduler_t *s = h->data;
    if (--s->open_handles > 0) return;
    for (int i = 0; i < 5; i++) free(s->slurm_strings[i]);
    free(s);
}

int scheduler_slurm_enabled(const scheduler_t *s) { return s && s->cfg.slurm_template != NULL; }

void scheduler_close(scheduler_t *s)
{
    if (!s) return;
    s->closing = 1;
    /* now, not with the timers: the store closes right after this and needs its statements */
    workqueue_close(s->wq);
    s->wq = NULL;
    while (s->jobs) {
        sjob *j = s->jobs;
        if (j->launcher) launcher_detach(j->launcher);
        if (j->slurm) slurm_job_detach(j->slurm);
        s->jobs = j->next;
        free(j);
    }
    uv_close((uv_handle_t *)&s->tick, timer_closed);
    uv_close((uv_handle_t *)&s->kick, timer_closed);
}
