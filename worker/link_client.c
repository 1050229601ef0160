/* link_client: the worker link's client thread, per-rank logs, exit codes; see link_client.h.
 *
 * Design: a queue of encoded frames under one mutex. Producers (the training thread) append and
 * poke a self-pipe; the link thread is the only one that connects, writes, reads and closes, so
 * no two threads ever race on the socket and a frame is never interleaved with another. */
#include "link_client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The signal handler writes the same flag the link thread does: that is only defined for a
 * lock-free atomic. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal flag must be a lock-free atomic");

/* Values of the flag (train.h's TRAIN_SIGNAL_*; repeated so this module needs no train.h). */
enum { FLAG_NONE = 0, FLAG_CHECKPOINT = 1, FLAG_STOP = 2 };

typedef enum qkind { Q_HELLO, Q_PROGRESS, Q_CHECKPOINT, Q_DONE, Q_HEARTBEAT } qkind;

typedef struct qframe {
    struct qframe *next;
    qkind          kind;
    size_t         len;
    uint8_t        bytes[];
} qframe;

struct link_client {
    link_client_options o;
    char           *path, *job_id;
    pthread_t       thread;
    int             thread_started;
    pthread_mutex_t mu;
    pthread_cond_t  cond;          /* signalled when Done has been written */
    int             wake[2];       /* self-pipe: producers → link thread */
    /* everything below is guarded by mu */
    int             fd;            /* -1 while the link is down */
    int             stopping;
    int             done_queued;   /* no heartbeats after Done */
    int             done_written;
    int             broke_reported;
    uint64_t        dropped_at_break; /* progress_dropped when the link went down */
    uint64_t        connected_at;  /* monotonic ms of the last connect */
    int             flapping;      /* connections end right after Hello: log once, not per try */
    qframe         *head, *tail;
    size_t          head_off;      /* bytes of head already written */
    size_t          queued;        /* bytes in the queue */
    qframe         *last_ckpt;     /* the newest Checkpoint, re-sent after each reconnect */
    uint64_t        next_connect, next_heartbeat;  /* monotonic ms */
    link_client_stats st;
    /* the link thread's alone */
    uint8_t        *rbuf;
    size_t          rlen;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- environment --------------------------------------------------------------------------- */

static int env_u64(const char *name, uint64_t dflt, uint64_t max, uint64_t *out, adapt_error *err)
{
    const char *s = getenv(name);
    *out = dflt;
    if (!s || !*s) return ADAPT_OK;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-' || v > max)
        return adapt_fail(err, ADAPT_EINVAL, "%s=\"%s\": expected a whole number from 0 to %llu",
                          name, s, (unsigned long long)max);
    *out = v;
    return ADAPT_OK;
}

int link_client_env(link_client_options *o, int *have, adapt_error *err)
{
    memset(o, 0, sizeof *o);
    *have = 0;
    const char *path = getenv("ADAPTD_LINK");
    if (!path || !*path) return ADAPT_OK;
    uint64_t attempt;
    int rc;
    if ((rc = env_u64("ADAPTD_ATTEMPT", 0, UINT32_MAX, &attempt, err)) ||
        (rc = env_u64("ADAPTD_HEARTBEAT_MS", 5000, 3600000, &o->heartbeat_ms, err)) ||
        (rc = env_u64("ADAPTD_DONE_WAIT_MS", 30000, 3600000, &o->done_wait_ms, err)))
        return rc;
    if (o->heartbeat_ms == 0)
        return adapt_fail(err, ADAPT_EINVAL, "ADAPTD_HEARTBEAT_MS=0: heartbeats need a period");
    o->path = path;
    o->job_id = getenv("ADAPTD_JOB_ID") ? getenv("ADAPTD_JOB_ID") : "";
    o->attempt = (uint32_t)attempt;
    o->reconnect_ms = 1000;
    *have = 1;
    return ADAPT_OK;
}

int link_client_env_rank(void)
{
    static const char *const names[] = { "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                         "SLURM_PROCID" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = getenv(names[i]);
        if (s && *s) return atoi(s);
    }
    return 0;
}

int link_client_error_fatal(int code)
{
    switch (code) {
    case ADAPT_EINVAL:       /* a bad argument or spec field, a configuration refused */
    case ADAPT_ECORRUPT:     /* a damaged model, corpus or checkpoint file */
    case ADAPT_EVERSION:     /* a file of a format this build does not read */
    case ADAPT_EUNSUPPORTED: /* valid input adaptd does not implement */
    case ADAPT_ENOTFOUND:    /* a model, corpus or checkpoint that is not there */
        return 1;
    default:                 /* EIO, ENOMEM, ERANGE, MPI failures: the next attempt may pass */
        return 0;
    }
}

/* ---- per-rank logs ------------------------------------------------------------------------- */

/* mkdir -p: every rank races to create the same folders, so EEXIST is success. */
static int mkdir_parents(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) { errno = ENAMETOOLONG; return -1; }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int link_client_logs(const char *dir, int rank, adapt_error *err)
{
    if (!dir || !*dir) return ADAPT_OK;
    if (mkdir_parents(dir) != 0)
        return adapt_fail(err, ADAPT_EIO, "ADAPTD_LOG_DIR %s: cannot create it: %s", dir,
                          strerror(errno));
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/rank-%d.log", dir, rank) >= (int)sizeof path)
        return adapt_fail(err, ADAPT_EINVAL, "ADAPTD_LOG_DIR %s: path too long", dir);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return adapt_fail(err, ADAPT_EIO, "opening %s: %s", path, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    /* dup2 clears FD_CLOEXEC on 1 and 2, so children (none today) would inherit the log */
    int bad = dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0;
    int e = errno;
    close(fd);
    if (bad) return adapt_fail(err, ADAPT_EIO, "redirecting output to %s: %s", path, strerror(e));
    /* line-buffered: the daemon's logs endpoint shows whole lines as they happen */
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IOLBF, 0);
    return ADAPT_OK;
}

/* ---- the queue (called with mu held) ------------------------------------------------------- */

static qframe *frame_encode(qkind kind, const Adaptd__LinkFrame *f)
{
    size_t n = adaptd__link_frame__get_packed_size(f);
    qframe *q = malloc(sizeof *q + 4 + n);
    if (!q) return NULL;
    q->next = NULL;
    q->kind = kind;
    q->len = 4 + n;
    q->bytes[0] = (uint8_t)(n >> 24);
    q->bytes[1] = (uint8_t)(n >> 16);
    q->bytes[2] = (uint8_t)(n >> 8);
    q->bytes[3] = (uint8_t)n;
    adaptd__link_frame__pack(f, q->bytes + 4);
    return q;
}

static qframe *frame_copy(const qframe *src)
{
    qframe *q = malloc(sizeof *q + src->len);
    if (q) {
        memcpy(q, src, sizeof *q + src->len);
        q->next = NULL;
    }
    return q;
}

static void queue_push(link_client_t *c, qframe *q)
{
    if (c->tail) c->tail->next = q; else c->head = q;
    c->tail = q;
    c->queued += q->len;
}

static void queue_push_front(link_client_t *c, qframe *q)
{
    q->next = c->head;
    c->head = q;
    if (!c->tail) c->tail = q;
    c->queued += q->len;
}

static void wake_thread(link_client_t *c)
{
    ssize_t w = write(c->wake[1], "x", 1);
    (void)w;   /* a full pipe already holds a wake-up */
}

/* The link went down: what only mattered on that connection goes (Hello, Progress, Heartbeat);
 * Checkpoint and Done stay, to be sent whole on the next one. */
static void link_down(link_client_t *c, const char *why)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->head_off = 0;
    c->rlen = 0;
    c->next_connect = now_ms() + c->o.reconnect_ms;
    /* A daemon that closes every connection at once (it refuses this job's Hello) would make a
     * line per reconnect; one line says it. */
    int brief = now_ms() - c->connected_at < LINK_CLIENT_BRIEF_MS;
    if (brief && !c->flapping)
        fprintf(stderr, "adapt-worker: the daemon link %s closed %llu ms after connecting (%s): "
                "the daemon may refuse this job; retrying every %llu ms without further notes\n",
                c->path, (unsigned long long)(now_ms() - c->connected_at), why,
                (unsigned long long)c->o.reconnect_ms);
    else if (!brief && !c->broke_reported)
        fprintf(stderr, "adapt-worker: the daemon link %s is down (%s); reconnecting every "
                "%llu ms, progress goes to stdout only meanwhile\n", c->path, why,
                (unsigned long long)c->o.reconnect_ms);
    if (!c->broke_reported) c->dropped_at_break = c->st.progress_dropped;
    c->flapping = brief;
    c->broke_reported = 1;
    qframe **pp = &c->head;
    c->tail = NULL;
    while (*pp) {
        qframe *q = *pp;
        if (q->kind == Q_CHECKPOINT || q->kind == Q_DONE) {
            c->tail = q;
            pp = &q->next;
            continue;
        }
        if (q->kind == Q_PROGRESS) c->st.progress_dropped++;
        *pp = q->next;
        c->queued -= q->len;
        free(q);
    }
}

static qframe *hello_frame(link_client_t *c)
{
    Adaptd__Hello h = ADAPTD__HELLO__INIT;
    h.job_id = c->job_id;
    h.rank = 0;
    h.world_size = c->o.world;
    h.pid = getpid();
    h.attempt = c->o.attempt;
    h.worker_version = "1";
    h.protocol = LINK_CLIENT_PROTOCOL;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_HELLO;
    f.hello = &h;
    return frame_encode(Q_HELLO, &f);
}

/* Tries one connect; on success queues Hello first, then the newest Checkpoint (the daemon may
 * have lost it with its previous life) unless one is queued already. */
static void link_try_connect(link_client_t *c)
{
    c->next_connect = now_ms() + c->o.reconnect_ms;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(c->path) >= sizeof sa.sun_path) return;   /* refused in link_client_start */
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    /* non-blocking: a stopped daemon's full backlog answers EAGAIN instead of holding us */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->st.connects++;
    c->connected_at = now_ms();
    if (c->broke_reported && !c->flapping)
        fprintf(stderr, "adapt-worker: the daemon link %s is back (%llu progress frames dropped "
                "meanwhile)\n", c->path,
                (unsigned long long)(c->st.progress_dropped - c->dropped_at_break));
    c->broke_reported = 0;
    int ckpt_queued = 0;
    for (qframe *q = c->head; q; q = q->next) ckpt_queued |= q->kind == Q_CHECKPOINT;
    if (c->last_ckpt && !ckpt_queued) {
        qframe *q = frame_copy(c->last_ckpt);
        if (q) queue_push_front(c, q);
    }
    qframe *h = hello_frame(c);
    if (h) queue_push_front(c, h);
    c->next_heartbeat = now_ms() + c->o.heartbeat_ms;
}

static void heartbeat_queue(link_client_t *c)
{
    Adaptd__Heartbeat hb = ADAPTD__HEARTBEAT__INIT;
    hb.job_id = c->job_id;
    hb.rank = 0;
    hb.unix_time_ms = wall_ms();
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_HEARTBEAT;
    f.heartbeat = &hb;
    qframe *q = frame_encode(Q_HEARTBEAT, &f);
    if (q) queue_push(c, q);
}

/* Writes as much of the queue as the socket takes now. */
static void queue_flush(link_client_t *c)
{
    while (c->fd >= 0 && c->head) {
        qframe *q = c->head;
        ssize_t w = send(c->fd, q->bytes + c->head_off, q->len - c->head_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            link_down(c, strerror(errno));
            return;
        }
        c->head_off += (size_t)w;
        if (c->head_off < q->len) continue;
        c->head = q->next;
        if (!c->head) c->tail = NULL;
        c->head_off = 0;
        c->queued -= q->len;
        c->st.frames_sent++;
        if (q->kind == Q_DONE) {
            c->done_written = 1;
            pthread_cond_broadcast(&c->cond);
        }
        free(q);
    }
}

/* ---- daemon → worker ----------------------------------------------------------------------- */

static void control_apply(link_client_t *c, const Adaptd__Control *m)
{
    c->st.controls++;
    if (!c->o.signal) return;
    if (m->action == ADAPTD__CONTROL__ACTION__CONTROL_STOP) {
        atomic_store(c->o.signal, FLAG_STOP);
    } else if (m->action == ADAPTD__CONTROL__ACTION__CONTROL_CHECKPOINT) {
        int expect = FLAG_NONE;   /* a pending STOP outranks it */
        atomic_compare_exchange_strong(c->o.signal, &expect, FLAG_CHECKPOINT);
    }
}

/* Reads what the daemon sent; frames other than Control are ignored. */
static void link_read(link_client_t *c)
{
    for (;;) {
        uint8_t tmp[4096];
        ssize_t n = recv(c->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0) { link_down(c, "the daemon closed it"); return; }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            link_down(c, strerror(errno));
            return;
        }
        if (c->rlen + (size_t)n > 4 + LINK_CLIENT_MAX_FRAME) {
            link_down(c, "a daemon frame exceeds the size limit");
            return;
        }
        memcpy(c->rbuf + c->rlen, tmp, (size_t)n);
        c->rlen += (size_t)n;
        while (c->rlen >= 4) {
            size_t len = (size_t)c->rbuf[0] << 24 | (size_t)c->rbuf[1] << 16 |
                         (size_t)c->rbuf[2] << 8 | c->rbuf[3];
            if (len > LINK_CLIENT_MAX_FRAME) { link_down(c, "a daemon frame is too large"); return; }
            if (c->rlen < 4 + len) break;
            Adaptd__LinkFrame *f = adaptd__link_frame__unpack(NULL, len, c->rbuf + 4);
            memmove(c->rbuf, c->rbuf + 4 + len, c->rlen - 4 - len);
            c->rlen -= 4 + len;
            if (!f) { link_down(c, "a daemon frame does not decode"); return; }
            if (f->body_case == ADAPTD__LINK_FRAME__BODY_CONTROL) control_apply(c, f->control);
            adaptd__link_frame__free_unpacked(f, NULL);
        }
    }
}

/* ---- the link thread ----------------------------------------------------------------------- */

static void *link_thread(void *arg)
{
    link_client_t *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        uint64_t now = now_ms();
        if (c->fd < 0 && now >= c->next_connect) link_try_connect(c);
        if (c->fd >= 0 && !c->done_queued && now >= c->next_heartbeat) {
            /* a daemon that does not read (stopped) gets no backlog of heartbeats either */
            if (c->queued < LINK_CLIENT_QUEUE_BYTES) heartbeat_queue(c);
            c->next_heartbeat = now + c->o.heartbeat_ms;
        }
        queue_flush(c);
        uint64_t until = c->fd >= 0 ? c->next_heartbeat : c->next_connect;
        int timeout = until > now ? (int)(until - now) : 0;
        struct pollfd pf[2] = { { .fd = c->wake[0], .events = POLLIN },
                                { .fd = c->fd, .events = POLLIN } };
        if (c->fd >= 0 && c->head) pf[1].events |= POLLOUT;
        int nfds = c->fd >= 0 ? 2 : 1;
        pthread_mutex_unlock(&c->mu);
        int r = poll(pf, (nfds_t)nfds, timeout);
        pthread_mutex_lock(&c->mu);
        if (r <= 0) continue;
        if (pf[0].revents) {
            char drain[64];
            while (read(c->wake[0], drain, sizeof drain) > 0) {}
        }
        if (nfds == 2 && c->fd == pf[1].fd && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            link_read(c);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int link_client_start(link_client_t **out, const link_client_options *o, adapt_error *err)
{
    *out = NULL;
    struct sockaddr_un sa;
    if (strlen(o->path) >= sizeof sa.sun_path)
        return adapt_fail(err, ADAPT_EINVAL, "ADAPTD_LINK %s: longer than a Unix socket path "
                          "may be (%zu bytes)", o->path, sizeof sa.sun_path - 1);
    link_client_t *c = calloc(1, sizeof *c);
    if (!c) return adapt_fail(err, ADAPT_ENOMEM, "out of memory");
    c->o = *o;
    if (!c->o.heartbeat_ms) c->o.heartbeat_ms = 5000;
    if (!c->o.reconnect_ms) c->o.reconnect_ms = 1000;
    c->fd = -1;
    c->wake[0] = c->wake[1] = -1;
    c->path = strdup(o->path);
    c->job_id = strdup(o->job_id ? o->job_id : "");
    c->rbuf = malloc(4 + LINK_CLIENT_MAX_FRAME);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    if (!c->path || !c->job_id || !c->rbuf || pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        link_client_close(c);
        return adapt_fail(err, ADAPT_ENOMEM, "worker link: cannot set up: %s", strerror(errno));
    }
    link_try_connect(c);
    if (c->fd < 0)
        fprintf(stderr, "adapt-worker: cannot connect to ADAPTD_LINK %s yet; retrying every "
                "%llu ms\n", c->path, (unsigned long long)c->o.reconnect_ms);
    c->broke_reported = c->fd < 0;
    /* The link thread must not take SIGTERM / SIGUSR1: they are for the training thread. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(&c->thread, NULL, link_thread, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        link_client_close(c);
        return adapt_fail(err, ADAPT_EIO, "worker link: cannot start its thread: %s", strerror(rc));
    }
    c->thread_started = 1;
    *out = c;
    return ADAPT_OK;
}

/* ---- producers ----------------------------------------------------------------------------- */

void link_client_progress(link_client_t *c, const Adaptd__Progress *p)
{
    if (!c) return;
    Adaptd__Progress copy = *p;
    copy.job_id = c->job_id;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_PROGRESS;
    f.progress = &copy;
    pthread_mutex_lock(&c->mu);
    qframe *q = NULL;
    if (c->fd >= 0 && c->queued < LINK_CLIENT_QUEUE_BYTES) q = frame_encode(Q_PROGRESS, &f);
    if (q) queue_push(c, q);
    else c->st.progress_dropped++;
    pthread_mutex_unlock(&c->mu);
    if (q) wake_thread(c);
}

void link_client_checkpoint(link_client_t *c, uint64_t step, const char *dir)
{
    if (!c) return;
    Adaptd__Checkpoint m = ADAPTD__CHECKPOINT__INIT;
    m.job_id = c->job_id;
    m.step = step;
    m.path = (char *)dir;
    m.complete = 1;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_CHECKPOINT;
    f.checkpoint = &m;
    qframe *keep = frame_encode(Q_CHECKPOINT, &f);
    qframe *send = keep ? frame_copy(keep) : NULL;
    pthread_mutex_lock(&c->mu);
    if (keep) {
        free(c->last_ckpt);
        c->last_ckpt = keep;
    }
    /* an older Checkpoint still queued (link down) is superseded by this one */
    for (qframe **pp = &c->head; *pp;) {
        qframe *q = *pp;
        if (q->kind == Q_CHECKPOINT && !(q == c->head && c->head_off > 0)) {
            *pp = q->next;
            c->queued -= q->len;
            free(q);
        } else {
            pp = &q->next;
        }
    }
    c->tail = NULL;
    for (qframe *q = c->head; q; q = q->next) c->tail = q;
    if (send) queue_push(c, send);
    pthread_mutex_unlock(&c->mu);
    wake_thread(c);
}

int link_client_done(link_client_t *c, int ok, int fatal, int stopped, const char *error,
                     const char *output_dir, uint64_t step)
{
    if (!c) return 0;
    Adaptd__Done d = ADAPTD__DONE__INIT;
    d.job_id = c->job_id;
    d.ok = ok;
    d.fatal = fatal;
    d.stopped = stopped;
    d.error = (char *)(error ? error : "");
    d.output_dir = (char *)(output_dir ? output_dir : "");
    d.step = step;
    Adaptd__LinkFrame f = ADAPTD__LINK_FRAME__INIT;
    f.body_case = ADAPTD__LINK_FRAME__BODY_DONE;
    f.done = &d;
    qframe *q = frame_encode(Q_DONE, &f);
    if (!q) return 0;
    uint64_t deadline = now_ms() + c->o.done_wait_ms;
    pthread_mutex_lock(&c->mu);
    queue_push(c, q);
    c->done_queued = 1;
    /* a link that is down retries at once instead of after the rest of its back-off */
    if (c->fd < 0) c->next_connect = now_ms();
    pthread_mutex_unlock(&c->mu);
    wake_thread(c);
    pthread_mutex_lock(&c->mu);
    while (!c->done_written && now_ms() < deadline) {
        uint64_t left = deadline - now_ms();
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(left / 1000);
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    int delivered = c->done_written;
    pthread_mutex_unlock(&c->mu);
    if (!delivered)
        fprintf(stderr, "adapt-worker: the daemon link %s: Done not delivered within %llu ms "
                "(ADAPTD_DONE_WAIT_MS); the exit code tells the outcome\n", c->path,
                (unsigned long long)c->o.done_wait_ms);
    return delivered;
}

link_client_stats link_client_stats_get(link_client_t *c)
{
    link_client_stats s = {0};
    if (!c) return s;
    pthread_mutex_lock(&c->mu);
    s = c->st;
    pthread_mutex_unlock(&c->mu);
    return s;
}

int link_client_connected(link_client_t *c)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    int up = c->fd >= 0;
    pthread_mutex_unlock(&c->mu);
    return up;
}

void link_client_close(link_client_t *c)
{
    if (!c) return;
    if (c->thread_started) {
        pthread_mutex_lock(&c->mu);
        c->stopping = 1;
        pthread_mutex_unlock(&c->mu);
        wake_thread(c);
        pthread_join(c->thread, NULL);
    }
    if (c->fd >= 0) close(c->fd);
    for (qframe *q = c->head, *n; q; q = n) { n = q->next; free(q); }
    free(c->last_ckpt);
    if (c->wake[0] >= 0) close(c->wake[0]);
    if (c->wake[1] >= 0) close(c->wake[1]);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    free(c->rbuf);
    free(c->path);
    free(c->job_id);
    free(c);
}
