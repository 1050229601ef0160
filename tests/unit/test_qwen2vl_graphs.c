/* test_qwen2vl_graphs: training passes replayed as graphs give the op-by-op results, bit for bit.
 *
 * No GPU here, so the CUDA graph path is proven on its CPU stand-in: the cpu-guarded backend's
 * graph entries record the ops a capture issues (arguments by value, nothing run) and replay them
 * with those arguments, as cudaGraphLaunch does. A host value the model computed for one batch
 * and baked into a recorded op would then be wrong for a later batch of the same shape key; so:
 *   - the table level: a capture runs nothing, a launch runs the recorded ops with the recorded
 *     scalars on the memory's current content, the memory entries abort inside a capture naming
 *     the call (as CUDA's stream capture fails there), cpu has no graph entries;
 *   - the model: a run of steps of several micro-batches on cpu-guarded with graphs on — batches
 *     of one shape key with different token ids, labels, pixels and sequence splits, and batches
 *     of other keys (a longer longest sequence, fewer scored rows, text only, other lengths,
 *     enough to evict) — gives the loss (qwen2vl_loss_read) and every gradient of the same run
 *     on cpu without graphs (losses downloaded per pass and summed in a double, as train.c did),
 *     bit for bit, with the graph cache's hits and misses each pass expects; in fp32 and in
 *     mixed precision (bf16), and with the vision tower frozen for a pass (another key). */
#include "check.h"
#include "qwen2vl.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the table's graph entries ------------------------------------------------------------- */

/* A forked child runs fn: 1 when it died of SIGABRT with `want` in its stderr. */
static int child_aborts_naming(void (*fn)(void), const char *want)
{
    char path[] = "/tmp/test_qwen2vl_graphs.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        dup2(fd, 2);
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    char text[2048] = "";
    ssize_t got = pread(fd, text, sizeof text - 1, 0);
    text[got > 0 ? got : 0] = 0;
    close(fd);
    unlink(path);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(text, want) != NULL;
}

static void upload_in_capture(void)
{
    const ops_table *ops = ops_cpu_guarded();
    float *d = ops->mem_alloc(64), h[16] = {0};
    ops->graph_begin(NULL, 0);
    ops->mem_upload(d, h, sizeof h);
}

static void download_in_capture(void)
{
    const ops_table *ops = ops_cpu_guarded();
    float *d = ops->mem_alloc(64), h[16];
    ops->graph_begin(NULL, 0);
    ops->mem_download(h, d, sizeof h);
}

static void sync_in_capture(void)
{
    const ops_table *ops = ops_cpu_guarded();
    ops->graph_begin(NULL, 0);
    ops->sync(NULL, 0);
}

static void alloc_in_capture(void)
{
    const ops_table *ops = ops_cpu_guarded();
    ops->graph_begin(NULL, 0);
    ops->mem_alloc(64);
}

static void test_table(void)
{
    const ops_table *cpu = ops_cpu(), *ops = ops_cpu_guarded();
    CHECK(!cpu->graph_begin && !cpu->graph_end && !cpu->graph_launch && !cpu->graph_free);
    CHECK(ops->graph_begin && ops->graph_end && ops->graph_launch && ops->graph_free);
    enum { N = 8 };
    float *x = ops->mem_alloc(N * sizeof(float)), *y = ops->mem_alloc(N * sizeof(float));
    float hx[N], hy[N];
    for (int i = 0; i < N; i++) hx[i] = (float)i;
    ops->mem_upload(x, hx, sizeof hx);
    char msg[200];
    void *graph = NULL;
    float alpha = 2.0f;
    CHECK(ops->graph_begin(msg, sizeof msg) == 0);
    CHECK_MSG(ops->graph_begin(msg, sizeof msg) == -1 && strstr(msg, "already"),
              "a nested graph_begin is refused: %s", msg);
    ops->axpy_f32(y, alpha, x, N);   /* recorded with alpha 2 */
    alpha = 5.0f;                    /* a host value changed after the capture: not seen */
    CHECK(ops->graph_end(&graph, msg, sizeof msg) == 0 && graph);
    CHECK_MSG(ops->graph_end(&graph, msg, sizeof msg) == -1, "graph_end with no capture");
    ops->mem_download(hy, y, sizeof hy);
    CHECK_MSG(hy[3] == 0.0f, "the capture ran the op (y[3] = %g): a CUDA capture runs nothing",
              (double)hy[3]);
    CHECK(ops->graph_launch(graph, msg, sizeof msg) == 0);
    ops->mem_download(hy, y, sizeof hy);
    CHECK_MSG(hy[3] == 6.0f, "one launch: y[3] = %g, want 2 * 3", (double)hy[3]);
    for (int i = 0; i < N; i++) hx[i] = 10.0f * (float)i;  /* new content: seen by the launch */
    ops->mem_upload(x, hx, sizeof hx);
    CHECK(ops->graph_launch(graph, msg, sizeof msg) == 0);
    ops->mem_download(hy, y, sizeof hy);
    CHECK_MSG(hy[3] == 66.0f, "second launch on new content: y[3] = %g, want 6 + 2 * 30",
              (double)hy[3]);
    ops->graph_free(graph);
    ops->graph_free(NULL);
    ops->mem_free(x);
    ops->mem_free(y);
    (void)alpha;
    CHECK_MSG(child_aborts_naming(upload_in_capture, "mem_upload inside a graph capture"),
              "mem_upload inside a capture must abort naming it");
    CHECK_MSG(child_aborts_naming(download_in_capture, "mem_download inside a graph capture"),
              "mem_download inside a capture must abort naming it");
    CHECK_MSG(child_aborts_naming(sync_in_capture, "sync inside a graph capture"),
              "sync inside a capture must abort naming it");
    CHECK_MSG(child_aborts_naming(alloc_in_capture, "mem_alloc inside a graph capture"),
              "mem_alloc inside a capture must abort naming it");
}

/* ---- the model ------------------------------------------------------------------------------ */

static const char *TINY_CONFIG =
    "{\"model_type\": \"qwen2_vl\", \"image_token_id\": 250, \"video_token_id\": 251,"
    " \"vision_start_token_id\": 252, \"vision_end_token_id\": 253, \"tie_word_embeddings\": false,"
    " \"text_config\": {\"vocab_size\": 256, \"hidden_size\": 64, \"intermediate_size\": 96,"
    "  \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    "  \"pad_token_id\": 3, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0,"
    "  \"mrope_section\": [2, 3, 3]}},"
    " \"vision_config\": {\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 4, \"mlp_ratio\": 2,"
    "  \"hidden_size\": 64}}";

static const qwen2vl_budget BUDGET = { .max_tokens = 64, .max_patches = 128, .max_seqs = 4,
                                       .max_images = 4 };

#define IMG 250
#define VS  252
#define VE  253

typedef struct batch {
    int   ids[64], labels[64], cu[5], grid[9];
    float pix[56 * 1176];
    qwen2vl_batch b;
} batch;

/* The kinds of batch: the first four share one shape key (3 sequences over 40 tokens, the
 * longest 19, three images of 4x4, 4x6 and 2x8 patches, 23 scored rows). */
enum {
    B_BASE,      /* splits 11 | 19 | 10 */
    B_CONTENT,   /* other token ids, label values and pixels */
    B_SPLIT,     /* splits 10 | 19 | 11: other cu_seqlens and M-RoPE ids, same lengths' max */
    B_SCORED,    /* other rows scored, as many */
    B_LONGEST,   /* splits 12 | 18 | 10: the longest sequence differs (a launch shape) */
    B_FEWER,     /* fewer rows scored (n_keep) */
    B_TURNED,    /* the 4x6 image as 6x4: other vision (h, w) and M-RoPE ids, same key */
    B_SMALL,     /* the 2x8 image as 2x4 and two text tokens after it, their labels ignored:
                  * only n_patches and n_image_tokens differ (always together: 4 patches per
                  * image token) */
    /* text only, each differing from T_TWO in ONE key field: 16 scored rows, longest 10 */
    T_TWO,       /* 20 tokens, 10 | 10 */
    T_THREE,     /* 20 tokens, 10 | 5 | 5: n_seqs alone */
    T_SHORT,     /* 19 tokens, 10 | 9: n_tokens alone */
};

/* Labels: ignored at image tokens and sequence starts (never a target), and at i % skip_mod == 1
 * when skip_mod is set; elsewhere the token id, shifted by `shift`. */
static void labels_make(batch *t, int n, int shift, int skip_mod)
{
    for (int i = 0; i < n; i++) {
        int start = 0;
        for (int s = 0; s < t->b.n_seqs; s++) start |= t->cu[s] == i;
        int ignore = t->ids[i] == IMG || start || (skip_mod && i % skip_mod == 1);
        t->labels[i] = ignore ? OPS_LABEL_IGNORE : (t->ids[i] + shift) % 250;
    }
}

static void batch_images(batch *t, int kind)
{
    static const int ids[] = {
        5, 6, VS, IMG, IMG, IMG, IMG, VE, 7, 8, 9,
        10, VS, IMG, IMG, IMG, IMG, IMG, IMG, VE, 11, 12, VS, IMG, IMG, IMG, IMG, VE, 13, 14,
        20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
    };
    int n = (int)(sizeof ids / sizeof ids[0]);
    memcpy(t->ids, ids, sizeof ids);
    if (kind == B_CONTENT)
        for (int i = 0; i < n; i++)
            if (t->ids[i] < 200) t->ids[i] = (t->ids[i] * 7 + 31) % 200;
    static const int grid[9] = { 1, 4, 4, 1, 4, 6, 1, 2, 8 };
    memcpy(t->grid, grid, sizeof grid);
    if (kind == B_TURNED) {
        t->grid[4] = 6;
        t->grid[5] = 4;
    }
    if (kind == B_SMALL) {
        t->grid[8] = 4;
        t->ids[25] = 15;
        t->ids[26] = 16;
    }
    int cu_base[4] = { 0, 11, 30, 40 }, cu_split[4] = { 0, 10, 29, 40 },
        cu_long[4] = { 0, 12, 30, 40 };
    memcpy(t->cu, kind == B_SPLIT ? cu_split : kind == B_LONGEST ? cu_long : cu_base,
           sizeof cu_base);
    float phase = kind == B_CONTENT ? 0.9f : 0.0f;
    for (int i = 0; i < 56 * 1176; i++)
        t->pix[i] = sinf(0.37f * (float)i + phase) + 0.1f * cosf(0.011f * (float)i);
    t->b = (qwen2vl_batch){ .n_tokens = n, .input_ids = t->ids, .labels = t->labels, .n_seqs = 3,
                            .cu_seqlens = t->cu, .n_images = 3, .image_grid_thw = t->grid,
                            .pixel_values = t->pix };
    labels_make(t, n, kind == B_CONTENT ? 5 : 0, kind == B_FEWER ? 4 : 0);
    if (kind == B_SMALL) t->labels[25] = t->labels[26] = OPS_LABEL_IGNORE;
    if (kind == B_SCORED) {
        /* as many rows scored, other ones: an image token's label is scored instead of row 8's */
        t->labels[3] = 100;
        t->labels[8] = OPS_LABEL_IGNORE;
    }
}

/* A text-only batch of n tokens in two sequences. */
static void batch_text(batch *t, int n, int salt)
{
    for (int i = 0; i < n; i++) t->ids[i] = (i * 13 + salt * 5 + 1) % 200;
    t->cu[0] = 0;
    t->cu[1] = n / 2;
    t->cu[2] = n;
    t->b = (qwen2vl_batch){ .n_tokens = n, .input_ids = t->ids, .labels = t->labels, .n_seqs = 2,
                            .cu_seqlens = t->cu, .n_images = 0, .image_grid_thw = t->grid,
                            .pixel_values = t->pix };
    labels_make(t, n, salt, 0);
}

/* T_TWO, T_THREE, T_SHORT: labels ignored at rows 0, 10, 15 and 19 (starts or not), so the
 * scored targets are 16 in each */
static void batch_text_key(batch *t, int kind)
{
    int n = kind == T_SHORT ? 19 : 20;
    for (int i = 0; i < n; i++) t->ids[i] = (i * 11 + kind) % 200;
    static const int two[3] = { 0, 10, 20 }, three[4] = { 0, 10, 15, 20 }, shrt[3] = { 0, 10, 19 };
    int n_seqs = kind == T_THREE ? 3 : 2;
    memcpy(t->cu, kind == T_THREE ? three : kind == T_SHORT ? shrt : two,
           sizeof(int) * (size_t)(n_seqs + 1));
    for (int i = 0; i < n; i++)
        t->labels[i] = i == 0 || i == 10 || i == 15 || i == 19 ? OPS_LABEL_IGNORE : t->ids[i];
    t->b = (qwen2vl_batch){ .n_tokens = n, .input_ids = t->ids, .labels = t->labels,
                            .n_seqs = n_seqs, .cu_seqlens = t->cu, .n_images = 0,
                            .image_grid_thw = t->grid, .pixel_values = t->pix };
}

/* the scored targets of a batch (labels shifted within each sequence), its loss normaliser */
static float scored_targets(const batch *t)
{
    int k = 0;
    for (int s = 0; s < t->b.n_seqs; s++)
        for (int i = t->cu[s] + 1; i < t->cu[s + 1]; i++) k += t->labels[i] != OPS_LABEL_IGNORE;
    return (float)k;
}

static float *grads_of(qwen2vl_model *m)
{
    size_t n = qwen2vl_buffer_floats(m);
    float *h = malloc(n * sizeof *h);
    qwen2vl_copy_out(m, 1, 0, n, h);
    return h;
}

/* one pass of the sequence: a batch and the cache event it expects on the graph model */
typedef struct pass {
    int  kind;       /* an enum value above, or -n for a text-only batch of n tokens */
    int  salt;
    char expect;     /* 'M' capture (miss), 'H' replay (hit) */
    int  frozen;     /* the vision tower frozen for this pass (on both models) */
} pass;

static void batch_of(batch *t, const pass *p)
{
    if (p->kind >= T_TWO) batch_text_key(t, p->kind);
    else if (p->kind >= 0) batch_images(t, p->kind);
    else batch_text(t, -p->kind, p->salt);
}

static void test_model(int bf16)
{
    adapt_error err = {0};
    model_config cfg;
    if (model_config_parse(&cfg, TINY_CONFIG, strlen(TINY_CONFIG), "tiny", &err)) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    qwen2vl_model *c = NULL, *g = NULL;
    qwen2vl_budget budget = BUDGET;
    budget.precision = bf16 ? QWEN2VL_BF16 : QWEN2VL_FP32;
    CHECK_MSG(qwen2vl_create(&c, &cfg, &budget, ops_cpu(), &err) == 0, "cpu: %s", err.message);
    CHECK_MSG(qwen2vl_create(&g, &cfg, &budget, ops_cpu_guarded(), &err) == 0, "guarded: %s",
              err.message);
    if (!c || !g) { qwen2vl_free(c); qwen2vl_free(g); return; }
    CHECK_MSG(qwen2vl_set_graphs(c, 1) == 0, "cpu has no graph entries: graphs stay off");
    CHECK_MSG(qwen2vl_set_graphs(g, 1) == 1, "cpu-guarded offers graphs");
    qwen2vl_init_weights(c, 17);
    qwen2vl_init_weights(g, 17);
    /* weights with non-trivial gradients everywhere, the same on both */
    size_t n = qwen2vl_num_params(c);
    float *w = malloc(n * sizeof *w);
    qwen2vl_copy_out(c, 0, 0, n, w);
    for (size_t i = 0; i < n; i++) w[i] = 3.0f * w[i] + 0.02f * sinf(0.61f * (float)i);
    qwen2vl_copy_in(c, 0, 0, n, w);
    qwen2vl_copy_in(g, 0, 0, n, w);
    qwen2vl_weights_changed(c);   /* bf16: the working copy from the new master */
    qwen2vl_weights_changed(g);
    free(w);

    /* steps of micro-batches; the normaliser is per step, as train.c's global count */
    static const pass steps[][12] = {
        { { B_BASE, 0, 'M' }, { B_CONTENT, 0, 'H' }, { B_SPLIT, 0, 'H' }, { B_SCORED, 0, 'H' },
          { B_LONGEST, 0, 'M' }, { B_TURNED, 0, 'H' }, { B_SMALL, 0, 'M' },
          { B_BASE, 0, 'M', 1 }, { B_CONTENT, 0, 'H', 0 } },   /* frozen: another key */
        { { B_BASE, 0, 'M' } },   /* a new step's normaliser: a new key for BASE */
        { { B_FEWER, 0, 'M' }, { B_BASE, 0, 'M' }, { B_CONTENT, 0, 'H' }, { -20, 1, 'M' },
          { -20, 2, 'H' }, { T_TWO, 0, 'M' }, { T_THREE, 0, 'M' }, { T_SHORT, 0, 'M' } },
        /* text of 22..38 tokens: 9 keys over the 8 the cache keeps, full of older ones. The 22
         * replayed early outlives the 24 (least recently used: evicted by the 38) */
        { { -22, 0, 'M' }, { -24, 0, 'M' }, { -22, 1, 'H' }, { -26, 0, 'M' }, { -28, 0, 'M' },
          { -30, 0, 'M' }, { -32, 0, 'M' }, { -34, 0, 'M' }, { -36, 0, 'M' }, { -38, 0, 'M' },
          { -22, 2, 'H' }, { -24, 1, 'M' } },
    };
    static const int n_passes[] = { 9, 1, 8, 12 };
    static batch tb;
    char what[96];
    for (int s = 0; s < (int)(sizeof n_passes / sizeof n_passes[0]); s++) {
        /* the step's normaliser: all its passes' scored targets, as the global batch count */
        float norm = 0.0f;
        for (int i = 0; i < n_passes[s]; i++) {
            batch_of(&tb, &steps[s][i]);
            norm += scored_targets(&tb);
        }
        qwen2vl_zero_grads(c);
        qwen2vl_zero_grads(g);
        double want = 0.0;
        for (int i = 0; i < n_passes[s]; i++) {
            const pass *p = &steps[s][i];
            batch_of(&tb, p);
            tb.b.loss_normaliser = norm;
            float l = 0.0f;
            unsigned long h0, m0, h1, m1;
            CHECK(qwen2vl_set_frozen(c, QWEN2VL_TOWER_VISION, p->frozen, &err) == 0 &&
                  qwen2vl_set_frozen(g, QWEN2VL_TOWER_VISION, p->frozen, &err) == 0);
            qwen2vl_graph_counts(g, &h0, &m0);
            CHECK_MSG(qwen2vl_forward_backward(c, &tb.b, &l, &err) == 0, "cpu: %s", err.message);
            CHECK_MSG(qwen2vl_forward_backward(g, &tb.b, NULL, &err) == 0, "guarded: %s",
                      err.message);
            want += l;
            qwen2vl_graph_counts(g, &h1, &m1);
            char got = h1 == h0 + 1 && m1 == m0 ? 'H' : m1 == m0 + 1 && h1 == h0 ? 'M' : '?';
            CHECK_MSG(got == p->expect,
                      "bf16 %d step %d pass %d (kind %d): graph cache %c, want %c",
                      bf16, s, i, p->kind, got, p->expect);
        }
        double got = -1.0;
        CHECK(qwen2vl_loss_read(g, &got) == 0);
        CHECK_MSG(memcmp(&got, &want, sizeof got) == 0 && want > 0.0,
                  "bf16 %d step %d: loss %.17g with graphs and qwen2vl_loss_read, %.17g per "
                  "pass on cpu",
                  bf16, s, got, want);
        float *a = grads_of(c), *b = grads_of(g);
        size_t diff = 0;
        const char *first = NULL;
        for (size_t k = 0; k < qwen2vl_num_tensors(c); k++) {
            const qwen2vl_tensor *t = qwen2vl_tensor_at(c, k);
            if (memcmp(a + t->offset, b + t->offset, t->numel * sizeof *a) != 0) {
                diff++;
                if (!first) first = t->name;
            }
        }
        snprintf(what, sizeof what, "%s step %d", bf16 ? "bf16" : "fp32", s);
        CHECK_MSG(diff == 0, "%s: %zu gradient tensors differ with graphs (first %s)", what, diff,
                  first);
        free(a);
        free(b);
    }
    unsigned long hits, misses;
    qwen2vl_graph_counts(g, &hits, &misses);
    printf("%s: graph cache: %lu hits, %lu misses over 30 passes\n",
           bf16 ? "bf16" : "fp32", hits, misses);
    CHECK(hits == 9 && misses == 21);
    /* a step of more passes than the model keeps losses on the backend (64): the full slots are
     * folded on the way, the sum still the per-pass one bit for bit; one capture, then replays */
    {
        enum { PASSES = 70 };
        qwen2vl_zero_grads(c);
        qwen2vl_zero_grads(g);
        double want = 0.0, got = -1.0;
        for (int i = 0; i < PASSES; i++) {
            batch_text(&tb, 20, i % 7);   /* other ids and labels, one key */
            tb.b.loss_normaliser = 1000.0f;
            float l = 0.0f;
            CHECK(qwen2vl_forward_backward(c, &tb.b, &l, &err) == 0);
            CHECK(qwen2vl_forward_backward(g, &tb.b, NULL, &err) == 0);
            want += l;
        }
        CHECK(qwen2vl_loss_read(g, &got) == 0);
        CHECK_MSG(memcmp(&got, &want, sizeof got) == 0,
                  "%d passes: loss %.17g through the folded slots, %.17g per pass", PASSES, got,
                  want);
        unsigned long h2, m2;
        qwen2vl_graph_counts(g, &h2, &m2);
        CHECK_MSG(h2 == hits + PASSES - 1 && m2 == misses + 1, "%d passes of one key: %lu hits, "
                  "%lu misses", PASSES, h2 - hits, m2 - misses);
        float *a = grads_of(c), *b = grads_of(g);
        CHECK_MSG(memcmp(a, b, qwen2vl_num_params(c) * sizeof *a) == 0,
                  "%d passes: gradients differ with graphs", PASSES);
        free(a);
        free(b);
    }
    /* loss_read with no pass since zero_grads: 0 */
    double zero = 1.0;
    qwen2vl_zero_grads(g);
    CHECK(qwen2vl_loss_read(g, &zero) == 0 && zero == 0.0);
    qwen2vl_free(c);
    qwen2vl_free(g);
}

/* QWEN2VL_GRAPHS_ON_REPEAT (cuda's default): a key's first pass runs op by op and is
 * remembered, its second is captured, later ones replay; results as without graphs. */
static void test_on_repeat(void)
{
    adapt_error err = {0};
    model_config cfg;
    if (model_config_parse(&cfg, TINY_CONFIG, strlen(TINY_CONFIG), "tiny", &err)) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    qwen2vl_model *c = NULL, *g = NULL;
    qwen2vl_budget budget = BUDGET;
    CHECK_MSG(qwen2vl_create(&c, &cfg, &budget, ops_cpu(), &err) == 0, "cpu: %s", err.message);
    CHECK_MSG(qwen2vl_create(&g, &cfg, &budget, ops_cpu_guarded(), &err) == 0, "guarded: %s",
              err.message);
    if (!c || !g) { qwen2vl_free(c); qwen2vl_free(g); return; }
    CHECK(qwen2vl_set_graphs(g, QWEN2VL_GRAPHS_ON_REPEAT) == QWEN2VL_GRAPHS_ON_REPEAT);
    qwen2vl_init_weights(c, 23);
    qwen2vl_init_weights(g, 23);
    /* keys A (20 text tokens) and B (24): D direct, M capture, H replay */
    static const struct { int len, salt; char expect; } passes[] = {
        { 20, 0, 'D' }, { 20, 1, 'M' }, { 20, 2, 'H' }, { 24, 0, 'D' }, { 20, 3, 'H' },
        { 24, 1, 'M' }, { 24, 2, 'H' },
    };
    static batch tb;
    qwen2vl_zero_grads(c);
    qwen2vl_zero_grads(g);
    double want = 0.0, got = -1.0;
    for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++) {
        batch_text(&tb, passes[i].len, passes[i].salt);
        tb.b.loss_normaliser = 500.0f;
        unsigned long h0, m0, h1, m1, d0 = qwen2vl_graph_direct_passes(g);
        qwen2vl_graph_counts(g, &h0, &m0);
        float l = 0.0f;
        CHECK(qwen2vl_forward_backward(c, &tb.b, &l, &err) == 0);
        CHECK_MSG(qwen2vl_forward_backward(g, &tb.b, NULL, &err) == 0, "%s", err.message);
        want += l;
        qwen2vl_graph_counts(g, &h1, &m1);
        unsigned long d1 = qwen2vl_graph_direct_passes(g);
        char seen = d1 == d0 + 1 && h1 == h0 && m1 == m0   ? 'D'
                  : m1 == m0 + 1 && h1 == h0 && d1 == d0   ? 'M'
                  : h1 == h0 + 1 && m1 == m0 && d1 == d0   ? 'H'
                                                           : '?';
        CHECK_MSG(seen == passes[i].expect, "on repeat, pass %zu: %c, want %c", i, seen,
                  passes[i].expect);
    }
    CHECK(qwen2vl_loss_read(g, &got) == 0);
    CHECK_MSG(memcmp(&got, &want, sizeof got) == 0, "on repeat: loss %.17g vs %.17g", got, want);
    float *a = grads_of(c), *b = grads_of(g);
    CHECK_MSG(memcmp(a, b, qwen2vl_num_params(c) * sizeof *a) == 0,
              "on repeat: gradients differ from the cpu's");
    free(a);
    free(b);
    qwen2vl_free(c);
    qwen2vl_free(g);
}

int main(void)
{
    test_table();
    test_model(0);
    test_model(1);
    test_on_repeat();
    return check_report("qwen2vl_graphs");
}
