/* ops_cpu_guarded: the "cpu-guarded" test backend, the CPU ops over memory the host cannot touch.
 *
 * Why it exists: CI has no GPU, yet the CUDA path has a rule that only a GPU would enforce — host
 * code never reads or writes device memory except through the table's mem_upload / mem_download /
 * mem_copy, and every pointer an op takes is device memory. This table breaks the same way a GPU
 * would, on every CI run: its mem_alloc returns anonymous mappings that stay PROT_NONE except
 * for the pages of an entry's arguments while that entry runs, so a host dereference of backend
 * memory anywhere else (the model, the optimizer, the training loop, the gradient sync) is a
 * SIGSEGV at the faulting line. The other direction is checked too: each entry verifies, before
 * it runs, that its backend pointers lie inside a live allocation (with the extent the shapes
 * imply) and that the host pointers (copy sources and targets, descriptor structs, grad_norm's
 * arrays) do not: the mistakes a GPU reports as an illegal address. A violation prints the entry
 * and the argument and aborts: this is a test harness, the equivalent of a device fault, not a
 * recoverable error.
 *
 * The one idea: every entry is "check the arguments, open their pages (one mprotect per argument,
 * the page-rounded extent its shapes imply), run the CPU table's entry, lock them again". Only
 * what an entry was given is open while it runs, so the cost follows the op's own data: a
 * tiny-model training run takes about as long as on cpu (unlocking every region per call instead
 * was measured 20x slower, all of it in the kernel's page-table updates). The results are the
 * CPU table's, bit for bit.
 *
 * Graphs: the table emulates CUDA graphs (graph_begin ... graph_end, graph_launch) faithfully
 * enough to catch on the CPU what breaks a replayed graph on a GPU: a capture records each entry
 * with its arguments instead of running it, a launch replays them as recorded (see "graphs"
 * below), and the memory entries and sync abort inside a capture, naming the call. Attention's
 * host copies of its launch shapes (total_tokens, max_seqlen) are checked against cu_seqlens on
 * every call, so a stale one (as a graph replayed for the wrong batch carries) stops the run.
 *
 * Threads: the table's entries are serialised by one recursive mutex (a depth counter keeps what
 * a nested entry opened open until the outermost one returns), so callers on several threads are
 * safe but run one entry at a time; the ops themselves may use OpenMP inside. While an entry runs,
 * its arguments' pages are readable by every thread, so a host access to them from another thread
 * at that moment goes unnoticed: the guarantee is meant for single-threaded callers of the table.
 * The registry is process-wide state on purpose: it plays the device driver's part. */
#include "ops.h"
#include "bf16_cpu.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct guard_region {
    uintptr_t base;
    size_t    bytes;    /* as asked for: the extent checks use it */
    size_t    mapped;   /* page-rounded length of the mapping */
} guard_region;

/* a page range opened for the running entry */
typedef struct guard_range {
    uintptr_t lo, hi;
} guard_range;

static struct {
    pthread_mutex_t lock;      /* recursive: the registry and the entries, one call at a time */
    guard_region   *regions;
    size_t          n, cap;
    guard_range    *open;      /* ranges made accessible for the running entry */
    size_t          n_open, cap_open;
    int             depth;     /* entries running on the holding thread (nesting) */
    uintptr_t       page;
    /* ADAPT_GUARDED_STATS: what a run did on this backend, printed at exit, so a test can tell a
     * run that really lived in guarded memory from one that silently ran elsewhere */
    int             stats;     /* 0 not yet looked up, 1 off, 2 on */
    size_t          allocs, live, peak;
    unsigned long   calls;
    unsigned long   graphs, launches;  /* graphs captured, graph launches */
} guard = { .lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP };

static void guard_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void guard_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cpu-guarded: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (the host/device discipline of kernels/ops.h is broken: on a GPU this is an "
                    "illegal address or a segfault)\n");
    abort();
}

static void guard_protect(uintptr_t lo, uintptr_t hi, int prot)
{
    if (mprotect((void *)lo, hi - lo, prot) != 0) {
        fprintf(stderr, "cpu-guarded: mprotect(%p, %zu): %s\n", (void *)lo, (size_t)(hi - lo),
                strerror(errno));
        abort();
    }
}

static void guard_enter(void)
{
    pthread_mutex_lock(&guard.lock);
    guard.depth++;
    guard.calls++;
}

static void guard_stats_print(void)
{
    fprintf(stderr, "cpu-guarded: %zu allocations, peak %zu bytes live, %lu entry calls, %lu "
            "graph launches of %lu graphs captured\n", guard.allocs, guard.peak, guard.calls,
            guard.launches, guard.graphs);
}

/* The outermost entry returning locks again every range its arguments opened. */
static void guard_leave(void)
{
    if (--guard.depth == 0) {
        for (size_t i = 0; i < guard.n_open; i++)
            guard_protect(guard.open[i].lo, guard.open[i].hi, PROT_NONE);
        guard.n_open = 0;
    }
    pthread_mutex_unlock(&guard.lock);
}

/* the region holding [p, p + bytes), or NULL */
static const guard_region *guard_find(const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p;
    for (size_t i = 0; i < guard.n; i++) {
        const guard_region *r = &guard.regions[i];
        if (a >= r->base && a < r->base + (r->bytes ? r->bytes : 1))
            return bytes <= r->base + r->bytes - a ? r : NULL;
    }
    return NULL;
}

/* A backend argument: inside one live allocation, whole; then its pages are opened for the
 * entry. Opening only the arguments' pages (not every region) keeps the cost proportional to the
 * op's own data — unlocking the whole model per op made a tiny training step 20x slower — and
 * is stricter: an op can reach nothing it was not given. NULL passes (optional outputs). */
static void guard_dev(const void *p, size_t bytes, const char *op, const char *arg)
{
    if (!p || bytes == 0) return;
    if (!guard_find(p, bytes))
        guard_die("%s: %s = %p [%zu bytes] is not inside one cpu-guarded allocation (host memory, "
                  "freed, or past its end)", op, arg, p, bytes);
    if (guard.n_open == guard.cap_open) {
        size_t cap = guard.cap_open ? 2 * guard.cap_open : 64;
        guard_range *r = realloc(guard.open, cap * sizeof *r);
        if (!r) guard_die("%s: out of host memory for the open ranges", op);
        guard.open = r;
        guard.cap_open = cap;
    }
    uintptr_t lo = (uintptr_t)p & ~(guard.page - 1);
    uintptr_t hi = ((uintptr_t)p + bytes + guard.page - 1) & ~(guard.page - 1);
    guard_protect(lo, hi, PROT_READ | PROT_WRITE);
    guard.open[guard.n_open++] = (guard_range){ lo, hi };
}

/* A host argument: overlaps no allocation. */
static void guard_host(const void *p, size_t bytes, const char *op, const char *arg)
{
    if (!p) return;
    uintptr_t a = (uintptr_t)p, e = a + (bytes ? bytes : 1);
    for (size_t i = 0; i < guard.n; i++) {
        const guard_region *r = &guard.regions[i];
        if (a < r->base + r->mapped && e > r->base)
            guard_die("%s: %s = %p [%zu bytes] is cpu-guarded backend memory where the entry "
                      "takes host memory", op, arg, p, bytes);
    }
}

#define F32 sizeof(float)
#define I32 sizeof(int)
#define DEV(op, p, bytes)  guard_dev((p), (bytes), (op), #p)
#define HOST(op, p, bytes) guard_host((p), (bytes), (op), #p)

/* bytes of a row-major [rows, cols] view with row stride ld (elements of size elt) */
static size_t guard_span(int rows, int cols, int ld, size_t elt)
{
    if (rows <= 0 || cols <= 0) return 0;
    return ((size_t)(rows - 1) * (size_t)ld + (size_t)cols) * elt;
}

/* ---- graphs: capture and replay, as CUDA's stream capture does it -----------------------------
 * Between graph_begin and graph_end an entry called on the capturing thread RUNS NOTHING: it
 * records itself and a copy of its arguments (scalars and pointers by value, the ops_rope /
 * ops_attn descriptors by value, grad_norm's host arrays copied), exactly what a CUDA graph keeps
 * of a kernel launch. graph_launch replays the recorded calls through the same entries (checks,
 * page opening, the CPU op). So a host value the caller computes per batch and passes to an op
 * is frozen at its capture-time value on every replay, as on a GPU: a caller that replays a graph
 * for a batch whose host values differ gets wrong results here too, which is what the model's
 * graph tests catch. The memory entries and sync abort inside a capture (stream capture fails
 * there: a copy from pageable host memory or a wait cannot be captured). Capture is per thread
 * (cudaStreamCaptureModeThreadLocal): other threads' entries run as usual. */
typedef union graph_arg {
    void  *p;
    int    i;
    size_t z;
    float  f;
    double d;
} graph_arg;

#define GRAPH_MAX_ARGS 14

typedef struct graph_call {
    void     (*replay)(const struct graph_call *c);
    graph_arg  a[GRAPH_MAX_ARGS];
    ops_rope   rope;           /* the descriptor, copied at capture */
    ops_attn   attn;
    float    **tensors;        /* grad_norm_f32's arrays, copied at capture (else NULL) */
    size_t    *lens;
} graph_call;

typedef struct guard_graph {
    graph_call *calls;
    size_t      n, cap;
} guard_graph;

/* the graph this thread is capturing, or NULL */
static __thread guard_graph *graph_capture;

#define GP(x) { .p = (void *)(x) }
#define GI(x) { .i = (x) }
#define GZ(x) { .z = (x) }
#define GF(x) { .f = (x) }
#define GD(x) { .d = (x) }

static void graph_free_calls(guard_graph *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->calls[i].tensors);
        free(g->calls[i].lens);
    }
    free(g->calls);
}

/* Appends one call to the graph being captured; its slot is returned for the caller's extras. */
static graph_call *graph_record(void (*replay)(const graph_call *), const graph_arg *args,
                                size_t n_args, const ops_rope *rope, const ops_attn *attn)
{
    guard_graph *g = graph_capture;
    if (n_args > GRAPH_MAX_ARGS) guard_die("graph capture: %zu arguments", n_args);
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 256;
        graph_call *c = realloc(g->calls, cap * sizeof *c);
        if (!c) guard_die("graph capture: out of host memory for %zu calls", cap);
        g->calls = c;
        g->cap = cap;
    }
    graph_call *c = &g->calls[g->n++];
    memset(c, 0, sizeof *c);
    c->replay = replay;
    memcpy(c->a, args, n_args * sizeof *args);
    if (rope) c->rope = *rope;
    if (attn) c->attn = *attn;
    return c;
}

/* Inside an entry, first: record it and return when this thread is capturing. The argument
 * checks run at each replay, as a device faults when the graph runs, not when it is captured. */
#define GRAPH_RECORD(replay, rope, attn, ...)                                             \
    do {                                                                                  \
        if (graph_capture) {                                                              \
            const graph_arg args_[] = { __VA_ARGS__ };                                    \
            graph_record(replay, args_, sizeof args_ / sizeof args_[0], rope, attn);      \
            return;                                                                       \
        }                                                                                 \
    } while (0)

/* The calls that cannot be captured: on CUDA the capture fails, here the run stops, naming it. */
static void graph_refuse(const char *call)
{
    if (!graph_capture) return;
    fprintf(stderr, "cpu-guarded: %s inside a graph capture (between graph_begin and graph_end "
                    "only ops may be issued: no mem_alloc, mem_free, mem_upload, mem_download, "
                    "mem_copy or sync; a CUDA stream capture fails there)\n", call);
    abort();
}

/* the replays (after the entries, each of which records its own): one per entry */
static void r_add_f32(const graph_call *c);
static void r_axpy_f32(const graph_call *c);
static void r_fill_f32(const graph_call *c);
static void r_matmul_f32(const graph_call *c);
static void r_bias_add_f32(const graph_call *c);
static void r_bias_backward_f32(const graph_call *c);
static void r_embedding_forward_f32(const graph_call *c);
static void r_embedding_backward_f32(const graph_call *c);
static void r_scatter_rows_forward_f32(const graph_call *c);
static void r_scatter_rows_backward_f32(const graph_call *c);
static void r_layernorm_forward_f32(const graph_call *c);
static void r_layernorm_backward_f32(const graph_call *c);
static void r_rmsnorm_forward_f32(const graph_call *c);
static void r_rmsnorm_backward_f32(const graph_call *c);
static void r_rope_forward_f32(const graph_call *c);
static void r_rope_backward_f32(const graph_call *c);
static void r_attention_forward_f32(const graph_call *c);
static void r_attention_backward_f32(const graph_call *c);
static void r_swiglu_forward_f32(const graph_call *c);
static void r_swiglu_backward_f32(const graph_call *c);
static void r_quickgelu_forward_f32(const graph_call *c);
static void r_quickgelu_backward_f32(const graph_call *c);
static void r_gelu_forward_f32(const graph_call *c);
static void r_gelu_backward_f32(const graph_call *c);
static void r_lmhead_xent_f32(const graph_call *c);
static void r_adamw_step_f32(const graph_call *c);
static void r_f32_to_bf16(const graph_call *c);
static void r_bf16_to_f32(const graph_call *c);
static void r_add_bf16(const graph_call *c);
static void r_axpy_bf16(const graph_call *c);
static void r_fill_bf16(const graph_call *c);
static void r_matmul_bf16(const graph_call *c);
static void r_matmul_bf16_f32out(const graph_call *c);
static void r_bias_add_bf16(const graph_call *c);
static void r_bias_backward_bf16(const graph_call *c);
static void r_embedding_forward_bf16(const graph_call *c);
static void r_embedding_backward_bf16(const graph_call *c);
static void r_scatter_rows_forward_bf16(const graph_call *c);
static void r_scatter_rows_backward_bf16(const graph_call *c);
static void r_layernorm_forward_bf16(const graph_call *c);
static void r_layernorm_backward_bf16(const graph_call *c);
static void r_rmsnorm_forward_bf16(const graph_call *c);
static void r_rmsnorm_backward_bf16(const graph_call *c);
static void r_rope_forward_bf16(const graph_call *c);
static void r_rope_backward_bf16(const graph_call *c);
static void r_attention_forward_bf16(const graph_call *c);
static void r_attention_backward_bf16(const graph_call *c);
static void r_swiglu_forward_bf16(const graph_call *c);
static void r_swiglu_backward_bf16(const graph_call *c);
static void r_quickgelu_forward_bf16(const graph_call *c);
static void r_quickgelu_backward_bf16(const graph_call *c);
static void r_gelu_forward_bf16(const graph_call *c);
static void r_gelu_backward_bf16(const graph_call *c);
static void r_lmhead_xent_bf16(const graph_call *c);
static void r_adamw_step_mixed(const graph_call *c);
static void r_grad_norm_f32(const graph_call *c);

/* ---- memory ------------------------------------------------------------------------------- */

static void *guard_alloc(size_t bytes)
{
    graph_refuse("mem_alloc");
    pthread_mutex_lock(&guard.lock);
    if (!guard.page) guard.page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!guard.stats) {
        const char *e = getenv("ADAPT_GUARDED_STATS");
        guard.stats = e && *e && strcmp(e, "0") != 0 ? 2 : 1;
        if (guard.stats == 2) atexit(guard_stats_print);
    }
    size_t mapped = ((bytes ? bytes : 1) + guard.page - 1) / guard.page * guard.page;
    void *p = mmap(NULL, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = NULL;
    if (p && guard.n == guard.cap) {
        size_t cap = guard.cap ? 2 * guard.cap : 64;
        guard_region *r = realloc(guard.regions, cap * sizeof *r);
        if (!r) {
            munmap(p, mapped);
            p = NULL;
        } else {
            guard.regions = r;
            guard.cap = cap;
        }
    }
    if (p) {
        guard.regions[guard.n++] = (guard_region){ (uintptr_t)p, bytes, mapped };
        guard.allocs++;
        guard.live += bytes;
        if (guard.live > guard.peak) guard.peak = guard.live;
    }
    pthread_mutex_unlock(&guard.lock);
    return p;  /* anonymous mappings are zeroed; page alignment covers the 64 bytes promised */
}

static void guard_free(void *p)
{
    graph_refuse("mem_free");
    if (!p) return;
    pthread_mutex_lock(&guard.lock);
    size_t i = 0;
    while (i < guard.n && guard.regions[i].base != (uintptr_t)p) i++;
    if (i == guard.n)
        guard_die("mem_free: %p was not returned by mem_alloc (or is freed twice)", p);
    munmap(p, guard.regions[i].mapped);
    guard.live -= guard.regions[i].bytes;
    guard.regions[i] = guard.regions[--guard.n];
    pthread_mutex_unlock(&guard.lock);
}

static void guard_upload(void *dst, const void *src_host, size_t bytes)
{
    graph_refuse("mem_upload");
    guard_enter();
    DEV("mem_upload", dst, bytes);
    HOST("mem_upload", src_host, bytes);
    if (bytes) memcpy(dst, src_host, bytes);
    guard_leave();
}

static void guard_download(void *dst_host, const void *src, size_t bytes)
{
    graph_refuse("mem_download");
    guard_enter();
    DEV("mem_download", src, bytes);
    HOST("mem_download", dst_host, bytes);
    if (bytes) memcpy(dst_host, src, bytes);
    guard_leave();
}

static void guard_copy(void *dst, const void *src, size_t bytes)
{
    graph_refuse("mem_copy");
    guard_enter();
    DEV("mem_copy", dst, bytes);
    DEV("mem_copy", src, bytes);
    if (bytes) memcpy(dst, src, bytes);
    guard_leave();
}

/* Every entry finished when it returned: nothing is ever pending. What the CPU table's twins
 * recorded (a bf16 twin's failed scratch allocation) is reported as the cpu table reports it. */
static int guard_sync(char *msg, size_t len)
{
    graph_refuse("sync");
    if (ops_cpu()->sync(msg, len) != 0) return -1;
    return ops_cpu_bf16_error(msg, len);
}

/* ---- the ops: check, unlock, the CPU entry, lock -------------------------------------------- */

static void g_add_f32(float *y, const float *a, const float *b, size_t n)
{
    GRAPH_RECORD(r_add_f32, NULL, NULL, GP(y), GP(a), GP(b), GZ(n));
    guard_enter();
    DEV("add_f32", y, n * F32); DEV("add_f32", a, n * F32); DEV("add_f32", b, n * F32);
    ops_cpu()->add_f32(y, a, b, n);
    guard_leave();
}

static void g_axpy_f32(float *y, float alpha, const float *x, size_t n)
{
    GRAPH_RECORD(r_axpy_f32, NULL, NULL, GP(y), GF(alpha), GP(x), GZ(n));
    guard_enter();
    DEV("axpy_f32", y, n * F32); DEV("axpy_f32", x, n * F32);
    ops_cpu()->axpy_f32(y, alpha, x, n);
    guard_leave();
}

static void g_fill_f32(float *y, float value, size_t n)
{
    GRAPH_RECORD(r_fill_f32, NULL, NULL, GP(y), GF(value), GZ(n));
    guard_enter();
    DEV("fill_f32", y, n * F32);
    ops_cpu()->fill_f32(y, value, n);
    guard_leave();
}

/* matmul's operands: C of element size ec, A and B of eab */
static void guard_matmul_args(const char *op, const void *c, const void *a, const void *b, int m,
                              int n, int k, int trans_a, int trans_b, int lda, int ldb, int ldc,
                              size_t ec, size_t eab)
{
    if (k > 0) {
        DEV(op, a, trans_a ? guard_span(k, m, lda, eab) : guard_span(m, k, lda, eab));
        DEV(op, b, trans_b ? guard_span(n, k, ldb, eab) : guard_span(k, n, ldb, eab));
    }
    DEV(op, c, guard_span(m, n, ldc, ec));
}

static void g_matmul_f32(float *c, const float *a, const float *b, int m, int n, int k,
                         int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                         float beta)
{
    GRAPH_RECORD(r_matmul_f32, NULL, NULL,
                 GP(c), GP(a), GP(b), GI(m), GI(n), GI(k), GI(trans_a), GI(trans_b), GI(lda),
                 GI(ldb), GI(ldc), GF(alpha), GF(beta));
    guard_enter();
    guard_matmul_args("matmul_f32", c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, F32, F32);
    ops_cpu()->matmul_f32(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta);
    guard_leave();
}

static void g_bias_add_f32(float *y, const float *bias, int rows, int n, int ldy)
{
    GRAPH_RECORD(r_bias_add_f32, NULL, NULL, GP(y), GP(bias), GI(rows), GI(n), GI(ldy));
    guard_enter();
    DEV("bias_add_f32", y, guard_span(rows, n, ldy, F32));
    DEV("bias_add_f32", bias, rows > 0 ? guard_span(1, n, n, F32) : 0);
    ops_cpu()->bias_add_f32(y, bias, rows, n, ldy);
    guard_leave();
}

static void g_bias_backward_f32(float *dbias, const float *dy, int rows, int n, int ldy)
{
    GRAPH_RECORD(r_bias_backward_f32, NULL, NULL, GP(dbias), GP(dy), GI(rows), GI(n), GI(ldy));
    guard_enter();
    DEV("bias_backward_f32", dbias, guard_span(1, n, n, F32));
    DEV("bias_backward_f32", dy, guard_span(rows, n, ldy, F32));
    ops_cpu()->bias_backward_f32(dbias, dy, rows, n, ldy);
    guard_leave();
}

/* The embedding table's row count is not an argument: its first row is checked, and each
 * looked-up row (the ids are read inside the entry, after their own check opened them). */
static void guard_rows_elt(const void *w, const int *ids, int T, int d, size_t elt, const char *op,
                           const char *arg)
{
    guard_dev(w, guard_span(1, d, d, elt), op, arg);
    for (int t = 0; t < T && d > 0; t++)
        guard_dev((const char *)w + (size_t)ids[t] * (size_t)d * elt, (size_t)d * elt, op, arg);
}

static void g_embedding_forward_f32(float *y, const float *w, const int *ids, int T, int d)
{
    GRAPH_RECORD(r_embedding_forward_f32, NULL, NULL, GP(y), GP(w), GP(ids), GI(T), GI(d));
    guard_enter();
    DEV("embedding_forward_f32", y, guard_span(T, d, d, F32));
    DEV("embedding_forward_f32", ids, guard_span(1, T, T, I32));
    if (T > 0) guard_rows_elt(w, ids, T, d, F32, "embedding_forward_f32", "w[ids[t]]");
    ops_cpu()->embedding_forward_f32(y, w, ids, T, d);
    guard_leave();
}

static void g_embedding_backward_f32(float *dw, const float *dy, const int *ids, int T, int d)
{
    GRAPH_RECORD(r_embedding_backward_f32, NULL, NULL, GP(dw), GP(dy), GP(ids), GI(T), GI(d));
    guard_enter();
    DEV("embedding_backward_f32", dy, guard_span(T, d, d, F32));
    DEV("embedding_backward_f32", ids, guard_span(1, T, T, I32));
    if (T > 0) guard_rows_elt(dw, ids, T, d, F32, "embedding_backward_f32", "dw[ids[t]]");
    ops_cpu()->embedding_backward_f32(dw, dy, ids, T, d);
    guard_leave();
}

static void g_scatter_rows_forward_f32(float *y, const float *src, const int *pos, int n, int d)
{
    GRAPH_RECORD(r_scatter_rows_forward_f32, NULL, NULL, GP(y), GP(src), GP(pos), GI(n), GI(d));
    guard_enter();
    DEV("scatter_rows_forward_f32", src, guard_span(n, d, d, F32));
    DEV("scatter_rows_forward_f32", pos, guard_span(1, n, n, I32));
    if (n > 0) guard_rows_elt(y, pos, n, d, F32, "scatter_rows_forward_f32", "y[pos[i]]");
    ops_cpu()->scatter_rows_forward_f32(y, src, pos, n, d);
    guard_leave();
}

static void g_scatter_rows_backward_f32(float *dsrc, float *dy, const int *pos, int n, int d)
{
    GRAPH_RECORD(r_scatter_rows_backward_f32, NULL, NULL, GP(dsrc), GP(dy), GP(pos), GI(n), GI(d));
    guard_enter();
    DEV("scatter_rows_backward_f32", dsrc, guard_span(n, d, d, F32));
    DEV("scatter_rows_backward_f32", pos, guard_span(1, n, n, I32));
    if (n > 0) guard_rows_elt(dy, pos, n, d, F32, "scatter_rows_backward_f32", "dy[pos[i]]");
    ops_cpu()->scatter_rows_backward_f32(dsrc, dy, pos, n, d);
    guard_leave();
}

static void g_layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x,
                                    const float *w, const float *b, int T, int d, float eps)
{
    GRAPH_RECORD(r_layernorm_forward_f32, NULL, NULL,
                 GP(y), GP(mean), GP(rstd), GP(x), GP(w), GP(b), GI(T), GI(d), GF(eps));
    guard_enter();
    size_t td = guard_span(T, d, d, F32), t1 = guard_span(1, T, T, F32);
    size_t d1 = T > 0 ? guard_span(1, d, d, F32) : 0;
    DEV("layernorm_forward_f32", y, td); DEV("layernorm_forward_f32", x, td);
    DEV("layernorm_forward_f32", mean, t1); DEV("layernorm_forward_f32", rstd, t1);
    DEV("layernorm_forward_f32", w, d1); DEV("layernorm_forward_f32", b, d1);
    ops_cpu()->layernorm_forward_f32(y, mean, rstd, x, w, b, T, d, eps);
    guard_leave();
}

static void g_layernorm_backward_f32(float *dx, float *dw, float *db, const float *dy,
                                     const float *x, const float *w, const float *mean,
                                     const float *rstd, int T, int d)
{
    GRAPH_RECORD(r_layernorm_backward_f32, NULL, NULL,
                 GP(dx), GP(dw), GP(db), GP(dy), GP(x), GP(w), GP(mean), GP(rstd), GI(T), GI(d));
    guard_enter();
    size_t td = guard_span(T, d, d, F32), t1 = guard_span(1, T, T, F32);
    size_t d1 = T > 0 ? guard_span(1, d, d, F32) : 0;
    DEV("layernorm_backward_f32", dx, td); DEV("layernorm_backward_f32", dy, td);
    DEV("layernorm_backward_f32", x, td);
    DEV("layernorm_backward_f32", dw, d1); DEV("layernorm_backward_f32", db, d1);
    DEV("layernorm_backward_f32", w, d1);
    DEV("layernorm_backward_f32", mean, t1); DEV("layernorm_backward_f32", rstd, t1);
    ops_cpu()->layernorm_backward_f32(dx, dw, db, dy, x, w, mean, rstd, T, d);
    guard_leave();
}

static void g_rmsnorm_forward_f32(float *y, float *rstd, float *res, const float *x,
                                  const float *w, int T, int d, float eps)
{
    GRAPH_RECORD(r_rmsnorm_forward_f32, NULL, NULL,
                 GP(y), GP(rstd), GP(res), GP(x), GP(w), GI(T), GI(d), GF(eps));
    guard_enter();
    size_t td = guard_span(T, d, d, F32);
    DEV("rmsnorm_forward_f32", y, td); DEV("rmsnorm_forward_f32", res, td);
    DEV("rmsnorm_forward_f32", x, td);
    DEV("rmsnorm_forward_f32", rstd, guard_span(1, T, T, F32));
    DEV("rmsnorm_forward_f32", w, T > 0 ? guard_span(1, d, d, F32) : 0);
    ops_cpu()->rmsnorm_forward_f32(y, rstd, res, x, w, T, d, eps);
    guard_leave();
}

static void g_rmsnorm_backward_f32(float *du, float *dw, const float *dy, const float *u,
                                   const float *w, const float *rstd, int T, int d)
{
    GRAPH_RECORD(r_rmsnorm_backward_f32, NULL, NULL,
                 GP(du), GP(dw), GP(dy), GP(u), GP(w), GP(rstd), GI(T), GI(d));
    guard_enter();
    size_t td = guard_span(T, d, d, F32), d1 = T > 0 ? guard_span(1, d, d, F32) : 0;
    DEV("rmsnorm_backward_f32", du, td); DEV("rmsnorm_backward_f32", dy, td);
    DEV("rmsnorm_backward_f32", u, td);
    DEV("rmsnorm_backward_f32", dw, d1); DEV("rmsnorm_backward_f32", w, d1);
    DEV("rmsnorm_backward_f32", rstd, guard_span(1, T, T, F32));
    ops_cpu()->rmsnorm_backward_f32(du, dw, dy, u, w, rstd, T, d);
    guard_leave();
}

static void guard_rope_args(const char *op, const void *x, size_t elt, const int *pos, int T,
                            int n_heads, int ldx, const ops_rope *rope)
{
    HOST(op, rope, sizeof *rope);
    int n_ids = rope->kind == OPS_ROPE_1D ? 1 : rope->kind == OPS_ROPE_VISION_2D ? 2 : 3;
    guard_dev(x, guard_span(T, n_heads * rope->head_dim, ldx, elt), op, "x");
    DEV(op, pos, guard_span(1, n_ids * T, n_ids * T, I32));
}

static void g_rope_forward_f32(float *x, const int *pos, int T, int n_heads, int ldx,
                               const ops_rope *rope)
{
    GRAPH_RECORD(r_rope_forward_f32, rope, NULL, GP(x), GP(pos), GI(T), GI(n_heads), GI(ldx));
    guard_enter();
    guard_rope_args("rope_forward_f32", x, F32, pos, T, n_heads, ldx, rope);
    ops_cpu()->rope_forward_f32(x, pos, T, n_heads, ldx, rope);
    guard_leave();
}

static void g_rope_backward_f32(float *dx, const int *pos, int T, int n_heads, int ldx,
                                const ops_rope *rope)
{
    GRAPH_RECORD(r_rope_backward_f32, rope, NULL, GP(dx), GP(pos), GI(T), GI(n_heads), GI(ldx));
    guard_enter();
    guard_rope_args("rope_backward_f32", dx, F32, pos, T, n_heads, ldx, rope);
    ops_cpu()->rope_backward_f32(dx, pos, T, n_heads, ldx, rope);
    guard_leave();
}

/* the extents of an attention call's q, k, v, o and lse shaped arguments (elements of elt bytes,
 * lse fp32) */
static void guard_attn_args(const char *op, const ops_attn *a, size_t elt, size_t *q, size_t *k,
                            size_t *v, size_t *o, size_t *lse)
{
    guard_host(a, sizeof *a, op, "attn");
    guard_dev(a->cu_seqlens, guard_span(1, a->num_seqs + 1, a->num_seqs + 1, I32), op,
              "attn->cu_seqlens");
    /* The host copies are launch shapes on a GPU (grid size, tile loops): one that disagrees
     * with the device's cu_seqlens (a value kept from another batch, a replayed graph's) drops
     * or invents work there, though the CPU twin reads only cu_seqlens. Checked here, the
     * segments being open now. */
    if (a->num_seqs > 0) {
        int longest = 0;
        for (int s = 0; s < a->num_seqs; s++)
            if (a->cu_seqlens[s + 1] - a->cu_seqlens[s] > longest)
                longest = a->cu_seqlens[s + 1] - a->cu_seqlens[s];
        if (a->cu_seqlens[0] != 0 || a->cu_seqlens[a->num_seqs] != a->total_tokens ||
            longest != a->max_seqlen)
            guard_die("%s: attn->total_tokens %d and max_seqlen %d, but cu_seqlens runs from %d "
                      "to %d with a longest segment of %d (a launch shape out of date)", op,
                      a->total_tokens, a->max_seqlen, a->cu_seqlens[0],
                      a->cu_seqlens[a->num_seqs], longest);
    }
    int T = a->total_tokens, kv = a->num_kv_heads * a->head_dim;
    *q = guard_span(T, a->num_heads * a->head_dim, a->ldq, elt);
    *k = guard_span(T, kv, a->ldk, elt);
    *v = guard_span(T, kv, a->ldv, elt);
    *o = guard_span(T, a->num_heads * a->head_dim, a->ldo, elt);
    *lse = guard_span(T, a->num_heads, a->num_heads, F32);
}

static void g_attention_forward_f32(float *o, float *lse, const float *q, const float *k,
                                    const float *v, const ops_attn *attn)
{
    GRAPH_RECORD(r_attention_forward_f32, NULL, attn, GP(o), GP(lse), GP(q), GP(k), GP(v));
    guard_enter();
    size_t sq, skv, sv, so, sl;
    guard_attn_args("attention_forward_f32", attn, F32, &sq, &skv, &sv, &so, &sl);
    DEV("attention_forward_f32", o, so); DEV("attention_forward_f32", lse, sl);
    DEV("attention_forward_f32", q, sq); DEV("attention_forward_f32", k, skv);
    DEV("attention_forward_f32", v, sv);
    ops_cpu()->attention_forward_f32(o, lse, q, k, v, attn);
    guard_leave();
}

static void g_attention_backward_f32(float *dq, float *dk, float *dv, const float *dout,
                                     const float *q, const float *k, const float *v, const float *o,
                                     const float *lse, const ops_attn *attn)
{
    GRAPH_RECORD(r_attention_backward_f32, NULL, attn,
                 GP(dq), GP(dk), GP(dv), GP(dout), GP(q), GP(k), GP(v), GP(o), GP(lse));
    guard_enter();
    size_t sq, skv, sv, so, sl;
    guard_attn_args("attention_backward_f32", attn, F32, &sq, &skv, &sv, &so, &sl);
    DEV("attention_backward_f32", dq, sq); DEV("attention_backward_f32", q, sq);
    DEV("attention_backward_f32", dk, skv); DEV("attention_backward_f32", k, skv);
    DEV("attention_backward_f32", dv, sv); DEV("attention_backward_f32", v, sv);
    DEV("attention_backward_f32", dout, so); DEV("attention_backward_f32", o, so);
    DEV("attention_backward_f32", lse, sl);
    ops_cpu()->attention_backward_f32(dq, dk, dv, dout, q, k, v, o, lse, attn);
    guard_leave();
}

static void g_swiglu_forward_f32(float *y, const float *gate, const float *up, int T, int n,
                                 int ld_in)
{
    GRAPH_RECORD(r_swiglu_forward_f32, NULL, NULL,
                 GP(y), GP(gate), GP(up), GI(T), GI(n), GI(ld_in));
    guard_enter();
    size_t si = guard_span(T, n, ld_in, F32);
    DEV("swiglu_forward_f32", y, guard_span(T, n, n, F32));
    DEV("swiglu_forward_f32", gate, si); DEV("swiglu_forward_f32", up, si);
    ops_cpu()->swiglu_forward_f32(y, gate, up, T, n, ld_in);
    guard_leave();
}

static void g_swiglu_backward_f32(float *dgate, float *dup, const float *dy, const float *gate,
                                  const float *up, int T, int n, int ld_in)
{
    GRAPH_RECORD(r_swiglu_backward_f32, NULL, NULL,
                 GP(dgate), GP(dup), GP(dy), GP(gate), GP(up), GI(T), GI(n), GI(ld_in));
    guard_enter();
    size_t si = guard_span(T, n, ld_in, F32);
    DEV("swiglu_backward_f32", dgate, si); DEV("swiglu_backward_f32", dup, si);
    DEV("swiglu_backward_f32", gate, si); DEV("swiglu_backward_f32", up, si);
    DEV("swiglu_backward_f32", dy, guard_span(T, n, n, F32));
    ops_cpu()->swiglu_backward_f32(dgate, dup, dy, gate, up, T, n, ld_in);
    guard_leave();
}

static void g_quickgelu_forward_f32(float *y, const float *x, size_t n)
{
    GRAPH_RECORD(r_quickgelu_forward_f32, NULL, NULL, GP(y), GP(x), GZ(n));
    guard_enter();
    DEV("quickgelu_forward_f32", y, n * F32); DEV("quickgelu_forward_f32", x, n * F32);
    ops_cpu()->quickgelu_forward_f32(y, x, n);
    guard_leave();
}

static void g_quickgelu_backward_f32(float *dx, const float *dy, const float *x, size_t n)
{
    GRAPH_RECORD(r_quickgelu_backward_f32, NULL, NULL, GP(dx), GP(dy), GP(x), GZ(n));
    guard_enter();
    DEV("quickgelu_backward_f32", dx, n * F32); DEV("quickgelu_backward_f32", dy, n * F32);
    DEV("quickgelu_backward_f32", x, n * F32);
    ops_cpu()->quickgelu_backward_f32(dx, dy, x, n);
    guard_leave();
}

static void g_gelu_forward_f32(float *y, const float *x, size_t n)
{
    GRAPH_RECORD(r_gelu_forward_f32, NULL, NULL, GP(y), GP(x), GZ(n));
    guard_enter();
    DEV("gelu_forward_f32", y, n * F32); DEV("gelu_forward_f32", x, n * F32);
    ops_cpu()->gelu_forward_f32(y, x, n);
    guard_leave();
}

static void g_gelu_backward_f32(float *dx, const float *dy, const float *x, size_t n)
{
    GRAPH_RECORD(r_gelu_backward_f32, NULL, NULL, GP(dx), GP(dy), GP(x), GZ(n));
    guard_enter();
    DEV("gelu_backward_f32", dx, n * F32); DEV("gelu_backward_f32", dy, n * F32);
    DEV("gelu_backward_f32", x, n * F32);
    ops_cpu()->gelu_backward_f32(dx, dy, x, n);
    guard_leave();
}

static void g_lmhead_xent_f32(float *loss, float *dh, float *dw, const float *h, const float *w,
                              const int *labels, int T, int d, int V, float normaliser,
                              float *work, size_t work_len)
{
    GRAPH_RECORD(r_lmhead_xent_f32, NULL, NULL,
                 GP(loss), GP(dh), GP(dw), GP(h), GP(w), GP(labels), GI(T), GI(d), GI(V),
                 GF(normaliser), GP(work), GZ(work_len));
    guard_enter();
    size_t td = guard_span(T, d, d, F32), vd = guard_span(V, d, d, F32);
    DEV("lmhead_xent_f32", loss, F32);
    DEV("lmhead_xent_f32", dh, td); DEV("lmhead_xent_f32", h, td);
    DEV("lmhead_xent_f32", dw, vd); DEV("lmhead_xent_f32", w, vd);
    DEV("lmhead_xent_f32", labels, guard_span(1, T, T, I32));
    DEV("lmhead_xent_f32", work, work_len * F32);
    ops_cpu()->lmhead_xent_f32(loss, dh, dw, h, w, labels, T, d, V, normaliser, work, work_len);
    guard_leave();
}

static void g_grad_norm_f32(float *norm, float *scale, const float *const *tensors,
                            const size_t *lens, int count, float max_norm)
{
    if (graph_capture) {  /* the arrays are host memory the caller may reuse: copied */
        const graph_arg args[] = { GP(norm), GP(scale), GI(count), GF(max_norm) };
        graph_call *c = graph_record(r_grad_norm_f32, args, 4, NULL, NULL);
        if (count > 0) {
            c->tensors = malloc((size_t)count * sizeof *c->tensors);
            c->lens = malloc((size_t)count * sizeof *c->lens);
            if (!c->tensors || !c->lens) guard_die("grad_norm_f32: out of host memory in capture");
            memcpy(c->tensors, tensors, (size_t)count * sizeof *c->tensors);
            memcpy(c->lens, lens, (size_t)count * sizeof *c->lens);
        }
        return;
    }
    guard_enter();
    DEV("grad_norm_f32", norm, F32); DEV("grad_norm_f32", scale, F32);
    if (count > 0) {
        HOST("grad_norm_f32", tensors, (size_t)count * sizeof *tensors);
        HOST("grad_norm_f32", lens, (size_t)count * sizeof *lens);
        for (int i = 0; i < count; i++)
            guard_dev(tensors[i], lens[i] * F32, "grad_norm_f32", "tensors[i]");
    }
    ops_cpu()->grad_norm_f32(norm, scale, tensors, lens, count, max_norm);
    guard_leave();
}

static void g_adamw_step_f32(float *p, float *m, float *v, const float *g, const float *grad_scale,
                             size_t n, double lr, double beta1, double beta2, double eps,
                             double weight_decay, int step)
{
    GRAPH_RECORD(r_adamw_step_f32, NULL, NULL,
                 GP(p), GP(m), GP(v), GP(g), GP(grad_scale), GZ(n), GD(lr), GD(beta1), GD(beta2),
                 GD(eps), GD(weight_decay), GI(step));
    guard_enter();
    DEV("adamw_step_f32", p, n * F32); DEV("adamw_step_f32", m, n * F32);
    DEV("adamw_step_f32", v, n * F32); DEV("adamw_step_f32", g, n * F32);
    DEV("adamw_step_f32", grad_scale, F32);
    ops_cpu()->adamw_step_f32(p, m, v, g, grad_scale, n, lr, beta1, beta2, eps, weight_decay, step);
    guard_leave();
}

/* ---- bf16 storage: the same checks with 2-byte elements where the entry stores bf16 ---------- */
#define B16 sizeof(ops_bf16)

static void g_f32_to_bf16(ops_bf16 *y, const float *x, size_t n)
{
    GRAPH_RECORD(r_f32_to_bf16, NULL, NULL, GP(y), GP(x), GZ(n));
    guard_enter();
    DEV("f32_to_bf16", y, n * B16); DEV("f32_to_bf16", x, n * F32);
    ops_cpu()->f32_to_bf16(y, x, n);
    guard_leave();
}

static void g_bf16_to_f32(float *y, const ops_bf16 *x, size_t n)
{
    GRAPH_RECORD(r_bf16_to_f32, NULL, NULL, GP(y), GP(x), GZ(n));
    guard_enter();
    DEV("bf16_to_f32", y, n * F32); DEV("bf16_to_f32", x, n * B16);
    ops_cpu()->bf16_to_f32(y, x, n);
    guard_leave();
}

static void g_add_bf16(ops_bf16 *y, const ops_bf16 *a, const ops_bf16 *b, size_t n)
{
    GRAPH_RECORD(r_add_bf16, NULL, NULL, GP(y), GP(a), GP(b), GZ(n));
    guard_enter();
    DEV("add_bf16", y, n * B16); DEV("add_bf16", a, n * B16); DEV("add_bf16", b, n * B16);
    ops_cpu()->add_bf16(y, a, b, n);
    guard_leave();
}

static void g_axpy_bf16(ops_bf16 *y, float alpha, const ops_bf16 *x, size_t n)
{
    GRAPH_RECORD(r_axpy_bf16, NULL, NULL, GP(y), GF(alpha), GP(x), GZ(n));
    guard_enter();
    DEV("axpy_bf16", y, n * B16); DEV("axpy_bf16", x, n * B16);
    ops_cpu()->axpy_bf16(y, alpha, x, n);
    guard_leave();
}

static void g_fill_bf16(ops_bf16 *y, float value, size_t n)
{
    GRAPH_RECORD(r_fill_bf16, NULL, NULL, GP(y), GF(value), GZ(n));
    guard_enter();
    DEV("fill_bf16", y, n * B16);
    ops_cpu()->fill_bf16(y, value, n);
    guard_leave();
}

static void g_matmul_bf16(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                          int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                          float beta, const ops_bf16 *bias)
{
    GRAPH_RECORD(r_matmul_bf16, NULL, NULL,
                 GP(c), GP(a), GP(b), GI(m), GI(n), GI(k), GI(trans_a), GI(trans_b), GI(lda),
                 GI(ldb), GI(ldc), GF(alpha), GF(beta), GP(bias));
    guard_enter();
    guard_matmul_args("matmul_bf16", c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, B16, B16);
    DEV("matmul_bf16", bias, m > 0 ? guard_span(1, n, n, B16) : 0);
    ops_cpu()->matmul_bf16(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta, bias);
    guard_leave();
}

static void g_matmul_bf16_f32out(float *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n,
                                 int k, int trans_a, int trans_b, int lda, int ldb, int ldc,
                                 float alpha, float beta)
{
    GRAPH_RECORD(r_matmul_bf16_f32out, NULL, NULL,
                 GP(c), GP(a), GP(b), GI(m), GI(n), GI(k), GI(trans_a), GI(trans_b), GI(lda),
                 GI(ldb), GI(ldc), GF(alpha), GF(beta));
    guard_enter();
    guard_matmul_args("matmul_bf16_f32out", c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc,
                      F32, B16);
    ops_cpu()->matmul_bf16_f32out(c, a, b, m, n, k, trans_a, trans_b, lda, ldb, ldc, alpha, beta);
    guard_leave();
}

static void g_bias_add_bf16(ops_bf16 *y, const ops_bf16 *bias, int rows, int n, int ldy)
{
    GRAPH_RECORD(r_bias_add_bf16, NULL, NULL, GP(y), GP(bias), GI(rows), GI(n), GI(ldy));
    guard_enter();
    DEV("bias_add_bf16", y, guard_span(rows, n, ldy, B16));
    DEV("bias_add_bf16", bias, rows > 0 ? guard_span(1, n, n, B16) : 0);
    ops_cpu()->bias_add_bf16(y, bias, rows, n, ldy);
    guard_leave();
}

static void g_bias_backward_bf16(float *dbias, const ops_bf16 *dy, int rows, int n, int ldy)
{
    GRAPH_RECORD(r_bias_backward_bf16, NULL, NULL, GP(dbias), GP(dy), GI(rows), GI(n), GI(ldy));
    guard_enter();
    DEV("bias_backward_bf16", dbias, guard_span(1, n, n, F32));
    DEV("bias_backward_bf16", dy, guard_span(rows, n, ldy, B16));
    ops_cpu()->bias_backward_bf16(dbias, dy, rows, n, ldy);
    guard_leave();
}

static void g_embedding_forward_bf16(ops_bf16 *y, const ops_bf16 *w, const int *ids, int T, int d)
{
    GRAPH_RECORD(r_embedding_forward_bf16, NULL, NULL, GP(y), GP(w), GP(ids), GI(T), GI(d));
    guard_enter();
    DEV("embedding_forward_bf16", y, guard_span(T, d, d, B16));
    DEV("embedding_forward_bf16", ids, guard_span(1, T, T, I32));
    if (T > 0) guard_rows_elt(w, ids, T, d, B16, "embedding_forward_bf16", "w[ids[t]]");
    ops_cpu()->embedding_forward_bf16(y, w, ids, T, d);
    guard_leave();
}

static void g_embedding_backward_bf16(float *dw, const ops_bf16 *dy, const int *ids, int T, int d)
{
    GRAPH_RECORD(r_embedding_backward_bf16, NULL, NULL, GP(dw), GP(dy), GP(ids), GI(T), GI(d));
    guard_enter();
    DEV("embedding_backward_bf16", dy, guard_span(T, d, d, B16));
    DEV("embedding_backward_bf16", ids, guard_span(1, T, T, I32));
    if (T > 0) guard_rows_elt(dw, ids, T, d, F32, "embedding_backward_bf16", "dw[ids[t]]");
    ops_cpu()->embedding_backward_bf16(dw, dy, ids, T, d);
    guard_leave();
}

static void g_scatter_rows_forward_bf16(ops_bf16 *y, const ops_bf16 *src, const int *pos, int n,
                                        int d)
{
    GRAPH_RECORD(r_scatter_rows_forward_bf16, NULL, NULL, GP(y), GP(src), GP(pos), GI(n), GI(d));
    guard_enter();
    DEV("scatter_rows_forward_bf16", src, guard_span(n, d, d, B16));
    DEV("scatter_rows_forward_bf16", pos, guard_span(1, n, n, I32));
    if (n > 0) guard_rows_elt(y, pos, n, d, B16, "scatter_rows_forward_bf16", "y[pos[i]]");
    ops_cpu()->scatter_rows_forward_bf16(y, src, pos, n, d);
    guard_leave();
}

static void g_scatter_rows_backward_bf16(ops_bf16 *dsrc, ops_bf16 *dy, const int *pos, int n,
                                         int d)
{
    GRAPH_RECORD(r_scatter_rows_backward_bf16, NULL, NULL,
                 GP(dsrc), GP(dy), GP(pos), GI(n), GI(d));
    guard_enter();
    DEV("scatter_rows_backward_bf16", dsrc, guard_span(n, d, d, B16));
    DEV("scatter_rows_backward_bf16", pos, guard_span(1, n, n, I32));
    if (n > 0) guard_rows_elt(dy, pos, n, d, B16, "scatter_rows_backward_bf16", "dy[pos[i]]");
    ops_cpu()->scatter_rows_backward_bf16(dsrc, dy, pos, n, d);
    guard_leave();
}

static void g_layernorm_forward_bf16(ops_bf16 *y, float *mean, float *rstd, const ops_bf16 *x,
                                     const ops_bf16 *w, const ops_bf16 *b, int T, int d, float eps)
{
    GRAPH_RECORD(r_layernorm_forward_bf16, NULL, NULL,
                 GP(y), GP(mean), GP(rstd), GP(x), GP(w), GP(b), GI(T), GI(d), GF(eps));
    guard_enter();
    size_t td = guard_span(T, d, d, B16), t1 = guard_span(1, T, T, F32);
    size_t d1 = T > 0 ? guard_span(1, d, d, B16) : 0;
    DEV("layernorm_forward_bf16", y, td); DEV("layernorm_forward_bf16", x, td);
    DEV("layernorm_forward_bf16", mean, t1); DEV("layernorm_forward_bf16", rstd, t1);
    DEV("layernorm_forward_bf16", w, d1); DEV("layernorm_forward_bf16", b, d1);
    ops_cpu()->layernorm_forward_bf16(y, mean, rstd, x, w, b, T, d, eps);
    guard_leave();
}

static void g_layernorm_backward_bf16(ops_bf16 *dx, float *dw, float *db, const ops_bf16 *dy,
                                      const ops_bf16 *x, const ops_bf16 *w, const float *mean,
                                      const float *rstd, int T, int d)
{
    GRAPH_RECORD(r_layernorm_backward_bf16, NULL, NULL,
                 GP(dx), GP(dw), GP(db), GP(dy), GP(x), GP(w), GP(mean), GP(rstd), GI(T), GI(d));
    guard_enter();
    size_t td = guard_span(T, d, d, B16), t1 = guard_span(1, T, T, F32);
    size_t d16 = T > 0 ? guard_span(1, d, d, B16) : 0, d32 = T > 0 ? guard_span(1, d, d, F32) : 0;
    DEV("layernorm_backward_bf16", dx, td); DEV("layernorm_backward_bf16", dy, td);
    DEV("layernorm_backward_bf16", x, td);
    DEV("layernorm_backward_bf16", dw, d32); DEV("layernorm_backward_bf16", db, d32);
    DEV("layernorm_backward_bf16", w, d16);
    DEV("layernorm_backward_bf16", mean, t1); DEV("layernorm_backward_bf16", rstd, t1);
    ops_cpu()->layernorm_backward_bf16(dx, dw, db, dy, x, w, mean, rstd, T, d);
    guard_leave();
}

static void g_rmsnorm_forward_bf16(ops_bf16 *y, float *rstd, ops_bf16 *res, const ops_bf16 *x,
                                   const ops_bf16 *w, int T, int d, float eps)
{
    GRAPH_RECORD(r_rmsnorm_forward_bf16, NULL, NULL,
                 GP(y), GP(rstd), GP(res), GP(x), GP(w), GI(T), GI(d), GF(eps));
    guard_enter();
    size_t td = guard_span(T, d, d, B16);
    DEV("rmsnorm_forward_bf16", y, td); DEV("rmsnorm_forward_bf16", res, td);
    DEV("rmsnorm_forward_bf16", x, td);
    DEV("rmsnorm_forward_bf16", rstd, guard_span(1, T, T, F32));
    DEV("rmsnorm_forward_bf16", w, T > 0 ? guard_span(1, d, d, B16) : 0);
    ops_cpu()->rmsnorm_forward_bf16(y, rstd, res, x, w, T, d, eps);
    guard_leave();
}

static void g_rmsnorm_backward_bf16(ops_bf16 *du, float *dw, const ops_bf16 *dy, const ops_bf16 *u,
                                    const ops_bf16 *w, const float *rstd, int T, int d)
{
    GRAPH_RECORD(r_rmsnorm_backward_bf16, NULL, NULL,
                 GP(du), GP(dw), GP(dy), GP(u), GP(w), GP(rstd), GI(T), GI(d));
    guard_enter();
    size_t td = guard_span(T, d, d, B16);
    DEV("rmsnorm_backward_bf16", du, td); DEV("rmsnorm_backward_bf16", dy, td);
    DEV("rmsnorm_backward_bf16", u, td);
    DEV("rmsnorm_backward_bf16", dw, T > 0 ? guard_span(1, d, d, F32) : 0);
    DEV("rmsnorm_backward_bf16", w, T > 0 ? guard_span(1, d, d, B16) : 0);
    DEV("rmsnorm_backward_bf16", rstd, guard_span(1, T, T, F32));
    ops_cpu()->rmsnorm_backward_bf16(du, dw, dy, u, w, rstd, T, d);
    guard_leave();
}

static void g_rope_forward_bf16(ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                                const ops_rope *rope)
{
    GRAPH_RECORD(r_rope_forward_bf16, rope, NULL, GP(x), GP(pos), GI(T), GI(n_heads), GI(ldx));
    guard_enter();
    guard_rope_args("rope_forward_bf16", x, B16, pos, T, n_heads, ldx, rope);
    ops_cpu()->rope_forward_bf16(x, pos, T, n_heads, ldx, rope);
    guard_leave();
}

static void g_rope_backward_bf16(ops_bf16 *dx, const int *pos, int T, int n_heads, int ldx,
                                 const ops_rope *rope)
{
    GRAPH_RECORD(r_rope_backward_bf16, rope, NULL, GP(dx), GP(pos), GI(T), GI(n_heads), GI(ldx));
    guard_enter();
    guard_rope_args("rope_backward_bf16", dx, B16, pos, T, n_heads, ldx, rope);
    ops_cpu()->rope_backward_bf16(dx, pos, T, n_heads, ldx, rope);
    guard_leave();
}

static void g_attention_forward_bf16(ops_bf16 *o, float *lse, const ops_bf16 *q, const ops_bf16 *k,
                                     const ops_bf16 *v, const ops_attn *attn)
{
    GRAPH_RECORD(r_attention_forward_bf16, NULL, attn, GP(o), GP(lse), GP(q), GP(k), GP(v));
    guard_enter();
    size_t sq, sk, sv, so, sl;
    guard_attn_args("attention_forward_bf16", attn, B16, &sq, &sk, &sv, &so, &sl);
    DEV("attention_forward_bf16", o, so); DEV("attention_forward_bf16", lse, sl);
    DEV("attention_forward_bf16", q, sq); DEV("attention_forward_bf16", k, sk);
    DEV("attention_forward_bf16", v, sv);
    ops_cpu()->attention_forward_bf16(o, lse, q, k, v, attn);
    guard_leave();
}

static void g_attention_backward_bf16(ops_bf16 *dq, ops_bf16 *dk, ops_bf16 *dv,
                                      const ops_bf16 *dout, const ops_bf16 *q, const ops_bf16 *k,
                                      const ops_bf16 *v, const ops_bf16 *o, const float *lse,
                                      const ops_attn *attn)
{
    GRAPH_RECORD(r_attention_backward_bf16, NULL, attn,
                 GP(dq), GP(dk), GP(dv), GP(dout), GP(q), GP(k), GP(v), GP(o), GP(lse));
    guard_enter();
    size_t sq, sk, sv, so, sl;
    guard_attn_args("attention_backward_bf16", attn, B16, &sq, &sk, &sv, &so, &sl);
    DEV("attention_backward_bf16", dq, sq); DEV("attention_backward_bf16", q, sq);
    DEV("attention_backward_bf16", dk, sk); DEV("attention_backward_bf16", k, sk);
    DEV("attention_backward_bf16", dv, sv); DEV("attention_backward_bf16", v, sv);
    DEV("attention_backward_bf16", dout, so); DEV("attention_backward_bf16", o, so);
    DEV("attention_backward_bf16", lse, sl);
    ops_cpu()->attention_backward_bf16(dq, dk, dv, dout, q, k, v, o, lse, attn);
    guard_leave();
}

static void g_swiglu_forward_bf16(ops_bf16 *y, const ops_bf16 *gate, const ops_bf16 *up, int T,
                                  int n, int ld_in)
{
    GRAPH_RECORD(r_swiglu_forward_bf16, NULL, NULL,
                 GP(y), GP(gate), GP(up), GI(T), GI(n), GI(ld_in));
    guard_enter();
    size_t si = guard_span(T, n, ld_in, B16);
    DEV("swiglu_forward_bf16", y, guard_span(T, n, n, B16));
    DEV("swiglu_forward_bf16", gate, si); DEV("swiglu_forward_bf16", up, si);
    ops_cpu()->swiglu_forward_bf16(y, gate, up, T, n, ld_in);
    guard_leave();
}

static void g_swiglu_backward_bf16(ops_bf16 *dgate, ops_bf16 *dup, const ops_bf16 *dy,
                                   const ops_bf16 *gate, const ops_bf16 *up, int T, int n,
                                   int ld_in)
{
    GRAPH_RECORD(r_swiglu_backward_bf16, NULL, NULL,
                 GP(dgate), GP(dup), GP(dy), GP(gate), GP(up), GI(T), GI(n), GI(ld_in));
    guard_enter();
    size_t si = guard_span(T, n, ld_in, B16);
    DEV("swiglu_backward_bf16", dgate, si); DEV("swiglu_backward_bf16", dup, si);
    DEV("swiglu_backward_bf16", gate, si); DEV("swiglu_backward_bf16", up, si);
    DEV("swiglu_backward_bf16", dy, guard_span(T, n, n, B16));
    ops_cpu()->swiglu_backward_bf16(dgate, dup, dy, gate, up, T, n, ld_in);
    guard_leave();
}

static void g_quickgelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n)
{
    GRAPH_RECORD(r_quickgelu_forward_bf16, NULL, NULL, GP(y), GP(x), GZ(n));
    guard_enter();
    DEV("quickgelu_forward_bf16", y, n * B16); DEV("quickgelu_forward_bf16", x, n * B16);
    ops_cpu()->quickgelu_forward_bf16(y, x, n);
    guard_leave();
}

static void g_quickgelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n)
{
    GRAPH_RECORD(r_quickgelu_backward_bf16, NULL, NULL, GP(dx), GP(dy), GP(x), GZ(n));
    guard_enter();
    DEV("quickgelu_backward_bf16", dx, n * B16); DEV("quickgelu_backward_bf16", dy, n * B16);
    DEV("quickgelu_backward_bf16", x, n * B16);
    ops_cpu()->quickgelu_backward_bf16(dx, dy, x, n);
    guard_leave();
}

static void g_gelu_forward_bf16(ops_bf16 *y, const ops_bf16 *x, size_t n)
{
    GRAPH_RECORD(r_gelu_forward_bf16, NULL, NULL, GP(y), GP(x), GZ(n));
    guard_enter();
    DEV("gelu_forward_bf16", y, n * B16); DEV("gelu_forward_bf16", x, n * B16);
    ops_cpu()->gelu_forward_bf16(y, x, n);
    guard_leave();
}

static void g_gelu_backward_bf16(ops_bf16 *dx, const ops_bf16 *dy, const ops_bf16 *x, size_t n)
{
    GRAPH_RECORD(r_gelu_backward_bf16, NULL, NULL, GP(dx), GP(dy), GP(x), GZ(n));
    guard_enter();
    DEV("gelu_backward_bf16", dx, n * B16); DEV("gelu_backward_bf16", dy, n * B16);
    DEV("gelu_backward_bf16", x, n * B16);
    ops_cpu()->gelu_backward_bf16(dx, dy, x, n);
    guard_leave();
}

static void g_lmhead_xent_bf16(float *loss, ops_bf16 *dh, float *dw, const ops_bf16 *h,
                               const ops_bf16 *w, const int *labels, int T, int d, int V,
                               float normaliser, float *work, size_t work_len)
{
    GRAPH_RECORD(r_lmhead_xent_bf16, NULL, NULL,
                 GP(loss), GP(dh), GP(dw), GP(h), GP(w), GP(labels), GI(T), GI(d), GI(V),
                 GF(normaliser), GP(work), GZ(work_len));
    guard_enter();
    size_t td = guard_span(T, d, d, B16);
    DEV("lmhead_xent_bf16", loss, F32);
    DEV("lmhead_xent_bf16", dh, td); DEV("lmhead_xent_bf16", h, td);
    DEV("lmhead_xent_bf16", dw, guard_span(V, d, d, F32));
    DEV("lmhead_xent_bf16", w, guard_span(V, d, d, B16));
    DEV("lmhead_xent_bf16", labels, guard_span(1, T, T, I32));
    DEV("lmhead_xent_bf16", work, work_len * F32);
    ops_cpu()->lmhead_xent_bf16(loss, dh, dw, h, w, labels, T, d, V, normaliser, work, work_len);
    guard_leave();
}

static void g_adamw_step_mixed(float *p, ops_bf16 *p16, float *m, float *v, const float *g,
                               const float *grad_scale, size_t n, double lr, double beta1,
                               double beta2, double eps, double weight_decay, int step)
{
    GRAPH_RECORD(r_adamw_step_mixed, NULL, NULL,
                 GP(p), GP(p16), GP(m), GP(v), GP(g), GP(grad_scale), GZ(n), GD(lr), GD(beta1),
                 GD(beta2), GD(eps), GD(weight_decay), GI(step));
    guard_enter();
    DEV("adamw_step_mixed", p, n * F32); DEV("adamw_step_mixed", p16, n * B16);
    DEV("adamw_step_mixed", m, n * F32); DEV("adamw_step_mixed", v, n * F32);
    DEV("adamw_step_mixed", g, n * F32); DEV("adamw_step_mixed", grad_scale, F32);
    ops_cpu()->adamw_step_mixed(p, p16, m, v, g, grad_scale, n, lr, beta1, beta2, eps,
                                weight_decay, step);
    guard_leave();
}

/* ---- graph replays: each calls its entry with the recorded arguments ------------------- */

static void r_add_f32(const graph_call *c)
{
    g_add_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].z);
}

static void r_axpy_f32(const graph_call *c)
{
    g_axpy_f32(c->a[0].p, c->a[1].f, c->a[2].p, c->a[3].z);
}

static void r_fill_f32(const graph_call *c)
{
    g_fill_f32(c->a[0].p, c->a[1].f, c->a[2].z);
}

static void r_matmul_f32(const graph_call *c)
{
    g_matmul_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i, c->a[5].i, c->a[6].i,
                 c->a[7].i, c->a[8].i, c->a[9].i, c->a[10].i, c->a[11].f, c->a[12].f);
}

static void r_bias_add_f32(const graph_call *c)
{
    g_bias_add_f32(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i);
}

static void r_bias_backward_f32(const graph_call *c)
{
    g_bias_backward_f32(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i);
}

static void r_embedding_forward_f32(const graph_call *c)
{
    g_embedding_forward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_embedding_backward_f32(const graph_call *c)
{
    g_embedding_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_scatter_rows_forward_f32(const graph_call *c)
{
    g_scatter_rows_forward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_scatter_rows_backward_f32(const graph_call *c)
{
    g_scatter_rows_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_layernorm_forward_f32(const graph_call *c)
{
    g_layernorm_forward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                            c->a[6].i, c->a[7].i, c->a[8].f);
}

static void r_layernorm_backward_f32(const graph_call *c)
{
    g_layernorm_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                             c->a[6].p, c->a[7].p, c->a[8].i, c->a[9].i);
}

static void r_rmsnorm_forward_f32(const graph_call *c)
{
    g_rmsnorm_forward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].i,
                          c->a[6].i, c->a[7].f);
}

static void r_rmsnorm_backward_f32(const graph_call *c)
{
    g_rmsnorm_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                           c->a[6].i, c->a[7].i);
}

static void r_rope_forward_f32(const graph_call *c)
{
    g_rope_forward_f32(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i, &c->rope);
}

static void r_rope_backward_f32(const graph_call *c)
{
    g_rope_backward_f32(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i, &c->rope);
}

static void r_attention_forward_f32(const graph_call *c)
{
    g_attention_forward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, &c->attn);
}

static void r_attention_backward_f32(const graph_call *c)
{
    g_attention_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                             c->a[6].p, c->a[7].p, c->a[8].p, &c->attn);
}

static void r_swiglu_forward_f32(const graph_call *c)
{
    g_swiglu_forward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i, c->a[5].i);
}

static void r_swiglu_backward_f32(const graph_call *c)
{
    g_swiglu_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].i,
                          c->a[6].i, c->a[7].i);
}

static void r_quickgelu_forward_f32(const graph_call *c)
{
    g_quickgelu_forward_f32(c->a[0].p, c->a[1].p, c->a[2].z);
}

static void r_quickgelu_backward_f32(const graph_call *c)
{
    g_quickgelu_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].z);
}

static void r_gelu_forward_f32(const graph_call *c)
{
    g_gelu_forward_f32(c->a[0].p, c->a[1].p, c->a[2].z);
}

static void r_gelu_backward_f32(const graph_call *c)
{
    g_gelu_backward_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].z);
}

static void r_lmhead_xent_f32(const graph_call *c)
{
    g_lmhead_xent_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p, c->a[6].i,
                      c->a[7].i, c->a[8].i, c->a[9].f, c->a[10].p, c->a[11].z);
}

static void r_adamw_step_f32(const graph_call *c)
{
    g_adamw_step_f32(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].z, c->a[6].d,
                     c->a[7].d, c->a[8].d, c->a[9].d, c->a[10].d, c->a[11].i);
}

static void r_f32_to_bf16(const graph_call *c)
{
    g_f32_to_bf16(c->a[0].p, c->a[1].p, c->a[2].z);
}

static void r_bf16_to_f32(const graph_call *c)
{
    g_bf16_to_f32(c->a[0].p, c->a[1].p, c->a[2].z);
}

static void r_add_bf16(const graph_call *c)
{
    g_add_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].z);
}

static void r_axpy_bf16(const graph_call *c)
{
    g_axpy_bf16(c->a[0].p, c->a[1].f, c->a[2].p, c->a[3].z);
}

static void r_fill_bf16(const graph_call *c)
{
    g_fill_bf16(c->a[0].p, c->a[1].f, c->a[2].z);
}

static void r_matmul_bf16(const graph_call *c)
{
    g_matmul_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i, c->a[5].i, c->a[6].i,
                  c->a[7].i, c->a[8].i, c->a[9].i, c->a[10].i, c->a[11].f, c->a[12].f, c->a[13].p);
}

static void r_matmul_bf16_f32out(const graph_call *c)
{
    g_matmul_bf16_f32out(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i, c->a[5].i,
                         c->a[6].i, c->a[7].i, c->a[8].i, c->a[9].i, c->a[10].i, c->a[11].f,
                         c->a[12].f);
}

static void r_bias_add_bf16(const graph_call *c)
{
    g_bias_add_bf16(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i);
}

static void r_bias_backward_bf16(const graph_call *c)
{
    g_bias_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i);
}

static void r_embedding_forward_bf16(const graph_call *c)
{
    g_embedding_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_embedding_backward_bf16(const graph_call *c)
{
    g_embedding_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_scatter_rows_forward_bf16(const graph_call *c)
{
    g_scatter_rows_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_scatter_rows_backward_bf16(const graph_call *c)
{
    g_scatter_rows_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i);
}

static void r_layernorm_forward_bf16(const graph_call *c)
{
    g_layernorm_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                             c->a[6].i, c->a[7].i, c->a[8].f);
}

static void r_layernorm_backward_bf16(const graph_call *c)
{
    g_layernorm_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                              c->a[6].p, c->a[7].p, c->a[8].i, c->a[9].i);
}

static void r_rmsnorm_forward_bf16(const graph_call *c)
{
    g_rmsnorm_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].i,
                           c->a[6].i, c->a[7].f);
}

static void r_rmsnorm_backward_bf16(const graph_call *c)
{
    g_rmsnorm_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                            c->a[6].i, c->a[7].i);
}

static void r_rope_forward_bf16(const graph_call *c)
{
    g_rope_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i, &c->rope);
}

static void r_rope_backward_bf16(const graph_call *c)
{
    g_rope_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].i, c->a[3].i, c->a[4].i, &c->rope);
}

static void r_attention_forward_bf16(const graph_call *c)
{
    g_attention_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, &c->attn);
}

static void r_attention_backward_bf16(const graph_call *c)
{
    g_attention_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                              c->a[6].p, c->a[7].p, c->a[8].p, &c->attn);
}

static void r_swiglu_forward_bf16(const graph_call *c)
{
    g_swiglu_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].i, c->a[4].i, c->a[5].i);
}

static void r_swiglu_backward_bf16(const graph_call *c)
{
    g_swiglu_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].i,
                           c->a[6].i, c->a[7].i);
}

static void r_quickgelu_forward_bf16(const graph_call *c)
{
    g_quickgelu_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].z);
}

static void r_quickgelu_backward_bf16(const graph_call *c)
{
    g_quickgelu_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].z);
}

static void r_gelu_forward_bf16(const graph_call *c)
{
    g_gelu_forward_bf16(c->a[0].p, c->a[1].p, c->a[2].z);
}

static void r_gelu_backward_bf16(const graph_call *c)
{
    g_gelu_backward_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].z);
}

static void r_lmhead_xent_bf16(const graph_call *c)
{
    g_lmhead_xent_bf16(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                       c->a[6].i, c->a[7].i, c->a[8].i, c->a[9].f, c->a[10].p, c->a[11].z);
}

static void r_adamw_step_mixed(const graph_call *c)
{
    g_adamw_step_mixed(c->a[0].p, c->a[1].p, c->a[2].p, c->a[3].p, c->a[4].p, c->a[5].p,
                       c->a[6].z, c->a[7].d, c->a[8].d, c->a[9].d, c->a[10].d, c->a[11].d,
                       c->a[12].i);
}

static void r_grad_norm_f32(const graph_call *c)
{
    g_grad_norm_f32(c->a[0].p, c->a[1].p, (const float *const *)c->tensors, c->lens, c->a[2].i,
                    c->a[3].f);
}

/* ---- graph entries ------------------------------------------------------------------------- */

static int guard_graph_begin(char *msg, size_t len)
{
    if (graph_capture) {
        if (msg && len) snprintf(msg, len, "graph_begin: this thread is already capturing");
        return -1;
    }
    guard_graph *g = calloc(1, sizeof *g);
    if (!g) {
        if (msg && len) snprintf(msg, len, "graph_begin: out of host memory");
        return -1;
    }
    graph_capture = g;
    return 0;
}

static int guard_graph_end(void **graph, char *msg, size_t len)
{
    if (!graph_capture) {
        if (msg && len) snprintf(msg, len, "graph_end: no graph_begin on this thread");
        return -1;
    }
    *graph = graph_capture;
    graph_capture = NULL;
    pthread_mutex_lock(&guard.lock);
    guard.graphs++;
    pthread_mutex_unlock(&guard.lock);
    return 0;
}

/* Replays the recorded calls in order with their recorded arguments, each through its entry. */
static int guard_graph_launch(void *graph, char *msg, size_t len)
{
    if (graph_capture) {
        if (msg && len) snprintf(msg, len, "graph_launch inside a graph capture");
        return -1;
    }
    const guard_graph *g = graph;
    pthread_mutex_lock(&guard.lock);
    guard.launches++;
    pthread_mutex_unlock(&guard.lock);
    for (size_t i = 0; i < g->n; i++) g->calls[i].replay(&g->calls[i]);
    return 0;
}

static void guard_graph_free(void *graph)
{
    if (!graph) return;
    graph_free_calls(graph);
    free(graph);
}

static const ops_table guarded_table = {
    .backend                   = "cpu-guarded",
    .host_accessible           = 0,
    .mem_alloc                 = guard_alloc,
    .mem_free                  = guard_free,
    .mem_upload                = guard_upload,
    .mem_download              = guard_download,
    .mem_copy                  = guard_copy,
    .sync                      = guard_sync,
    .add_f32                   = g_add_f32,
    .axpy_f32                  = g_axpy_f32,
    .fill_f32                  = g_fill_f32,
    .matmul_f32                = g_matmul_f32,
    .bias_add_f32              = g_bias_add_f32,
    .bias_backward_f32         = g_bias_backward_f32,
    .embedding_forward_f32     = g_embedding_forward_f32,
    .embedding_backward_f32    = g_embedding_backward_f32,
    .scatter_rows_forward_f32  = g_scatter_rows_forward_f32,
    .scatter_rows_backward_f32 = g_scatter_rows_backward_f32,
    .layernorm_forward_f32     = g_layernorm_forward_f32,
    .layernorm_backward_f32    = g_layernorm_backward_f32,
    .rmsnorm_forward_f32       = g_rmsnorm_forward_f32,
    .rmsnorm_backward_f32      = g_rmsnorm_backward_f32,
    .rope_forward_f32          = g_rope_forward_f32,
    .rope_backward_f32         = g_rope_backward_f32,
    .attention_forward_f32     = g_attention_forward_f32,
    .attention_backward_f32    = g_attention_backward_f32,
    .swiglu_forward_f32        = g_swiglu_forward_f32,
    .swiglu_backward_f32       = g_swiglu_backward_f32,
    .quickgelu_forward_f32     = g_quickgelu_forward_f32,
    .quickgelu_backward_f32    = g_quickgelu_backward_f32,
    .gelu_forward_f32          = g_gelu_forward_f32,
    .gelu_backward_f32         = g_gelu_backward_f32,
    .lmhead_xent_f32           = g_lmhead_xent_f32,
    .grad_norm_f32             = g_grad_norm_f32,
    .adamw_step_f32            = g_adamw_step_f32,
    .f32_to_bf16                = g_f32_to_bf16,
    .bf16_to_f32                = g_bf16_to_f32,
    .add_bf16                   = g_add_bf16,
    .axpy_bf16                  = g_axpy_bf16,
    .fill_bf16                  = g_fill_bf16,
    .matmul_bf16                = g_matmul_bf16,
    .matmul_bf16_f32out         = g_matmul_bf16_f32out,
    .bias_add_bf16              = g_bias_add_bf16,
    .bias_backward_bf16         = g_bias_backward_bf16,
    .embedding_forward_bf16     = g_embedding_forward_bf16,
    .embedding_backward_bf16    = g_embedding_backward_bf16,
    .scatter_rows_forward_bf16  = g_scatter_rows_forward_bf16,
    .scatter_rows_backward_bf16 = g_scatter_rows_backward_bf16,
    .layernorm_forward_bf16     = g_layernorm_forward_bf16,
    .layernorm_backward_bf16    = g_layernorm_backward_bf16,
    .rmsnorm_forward_bf16       = g_rmsnorm_forward_bf16,
    .rmsnorm_backward_bf16      = g_rmsnorm_backward_bf16,
    .rope_forward_bf16          = g_rope_forward_bf16,
    .rope_backward_bf16         = g_rope_backward_bf16,
    .attention_forward_bf16     = g_attention_forward_bf16,
    .attention_backward_bf16    = g_attention_backward_bf16,
    .swiglu_forward_bf16        = g_swiglu_forward_bf16,
    .swiglu_backward_bf16       = g_swiglu_backward_bf16,
    .quickgelu_forward_bf16     = g_quickgelu_forward_bf16,
    .quickgelu_backward_bf16    = g_quickgelu_backward_bf16,
    .gelu_forward_bf16          = g_gelu_forward_bf16,
    .gelu_backward_bf16         = g_gelu_backward_bf16,
    .lmhead_xent_bf16           = g_lmhead_xent_bf16,
    .adamw_step_mixed           = g_adamw_step_mixed,
    .graph_begin                = guard_graph_begin,
    .graph_end                  = guard_graph_end,
    .graph_launch               = guard_graph_launch,
    .graph_free                 = guard_graph_free,
};

const ops_table *ops_cpu_guarded(void) { return &guarded_table; }
