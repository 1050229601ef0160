/* qwen2vl_fixture: the tiny Qwen2-VL config, the three-sample packed batch and the buffer
 * helpers shared by the model's unit tests (see qwen2vl_fixture.h). */
#include "qwen2vl_fixture.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *TINY_CONFIG =
    "{\"model_type\": \"qwen2_vl\", \"image_token_id\": 250, \"video_token_id\": 251,"
    " \"vision_start_token_id\": 252, \"vision_end_token_id\": 253, \"tie_word_embeddings\": %s,"
    " \"text_config\": {\"vocab_size\": 256, \"hidden_size\": 64, \"intermediate_size\": 96,"
    "  \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    "  \"pad_token_id\": 3, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0,"
    "  \"mrope_section\": [2, 3, 3]}},"
    " \"vision_config\": {\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 4, \"mlp_ratio\": 2,"
    "  \"hidden_size\": 64}}";

int fixture_config_parse(model_config *cfg, int tied, adapt_error *err)
{
    char json[2048];
    snprintf(json, sizeof json, TINY_CONFIG, tied ? "true" : "false");
    return model_config_parse(cfg, json, strlen(json), "tiny", err);
}

const qwen2vl_budget fixture_batch_budget = { .max_tokens = 64, .max_patches = 128, .max_seqs = 4,
                                              .max_images = 4 };

void fixture_batch_make(fixture_batch *t)
{
    enum { IMG = FIXTURE_IMAGE_TOKEN, VS = FIXTURE_VISION_START, VE = FIXTURE_VISION_END };
    static const int ids[] = {
        5, 6, VS, IMG, IMG, IMG, IMG, VE, 7, 8, 9,                                     /* 11 */
        10, VS, IMG, IMG, IMG, IMG, IMG, IMG, VE, 11, 12, VS, IMG, IMG, IMG, IMG, VE, 13, 14,  /* 19 */
        20, 21, 22, 23, 24, 25, 26, 27, 28, 29,                                         /* 10 */
    };
    int n = (int)(sizeof ids / sizeof ids[0]), scored = 0;
    memcpy(t->ids, ids, sizeof ids);
    for (int i = 0; i < n; i++) {
        int ignore = ids[i] == IMG || i == 0 || i == 11 || i == 30;
        t->labels[i] = ignore ? OPS_LABEL_IGNORE : ids[i];
        scored += !ignore;
    }
    static const int cu[4] = { 0, 11, 30, 40 }, grid[9] = { 1, 4, 4, 1, 4, 6, 1, 2, 8 };
    memcpy(t->cu, cu, sizeof cu);
    memcpy(t->grid, grid, sizeof grid);
    for (int i = 0; i < 56 * 1176; i++)
        t->pix[i] = sinf(0.37f * (float)i) + 0.1f * cosf(0.011f * (float)i);
    t->b = (qwen2vl_batch){ .n_tokens = n, .input_ids = t->ids, .labels = t->labels, .n_seqs = 3,
                            .cu_seqlens = t->cu, .n_images = 3, .image_grid_thw = t->grid,
                            .pixel_values = t->pix, .loss_normaliser = (float)scored };
    t->cu_first[0] = 0;
    t->cu_first[1] = 11;
    t->cu_text[0] = 0;
    t->cu_text[1] = 10;
    t->first = t->b;
    t->first.n_tokens = 11;
    t->first.n_seqs = 1;
    t->first.cu_seqlens = t->cu_first;
    t->first.n_images = 1;
    t->text = t->b;
    t->text.n_tokens = 10;
    t->text.n_seqs = 1;
    t->text.cu_seqlens = t->cu_text;
    t->text.n_images = 0;
    t->text.input_ids = t->ids + 30;
    t->text.labels = t->labels + 30;
    t->text.pixel_values = NULL;
}

float *fixture_buffer_copy(qwen2vl_model *m, int grads)
{
    size_t n = qwen2vl_buffer_floats(m);
    float *h = malloc(n * sizeof *h);
    if (!h) return NULL;
    memset(h, 0xff, n * sizeof *h);  /* NaN: a float copy_out misses does not compare equal */
    qwen2vl_copy_out(m, grads, 0, n, h);
    return h;
}

size_t fixture_buffers_diff(qwen2vl_model *a, qwen2vl_model *b, int grads, const char **first,
                            size_t *slack)
{
    float *x = fixture_buffer_copy(a, grads), *y = fixture_buffer_copy(b, grads);
    size_t diff = 0, n = qwen2vl_num_params(a), total = qwen2vl_buffer_floats(a);
    *first = NULL;
    *slack = 0;
    if (!x || !y) {  /* out of memory: report everything as different rather than pass */
        free(x);
        free(y);
        *first = "(out of memory)";
        return qwen2vl_num_tensors(a);
    }
    for (size_t k = 0; k < qwen2vl_num_tensors(a); k++) {
        const qwen2vl_tensor *t = qwen2vl_tensor_at(a, k);
        if (memcmp(x + t->offset, y + t->offset, t->numel * sizeof *x) != 0) {
            diff++;
            if (!*first) *first = t->name;
        }
    }
    for (size_t i = n; i < total; i++) *slack += x[i] != 0.0f || y[i] != 0.0f;
    free(x);
    free(y);
    return diff;
}

int fixture_read_faults(const void *p)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGSEGV, &sa, NULL);
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        volatile unsigned char x = *(const volatile unsigned char *)p;
        (void)x;
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
}

typedef struct ready_snap {
    qwen2vl_model *m;
    float         *snap;
    size_t         n, reported;
} ready_snap;

static void ready_download(void *ctx, size_t offset, size_t count)
{
    ready_snap *r = ctx;
    if (offset > r->n || count > r->n - offset) return;
    qwen2vl_copy_out(r->m, 1, offset, count, r->snap + offset);
    r->reported += count;
}

int fixture_ready_run(qwen2vl_model *m, const qwen2vl_batch *b, float *loss, size_t *reported,
                      int *final, adapt_error *err)
{
    size_t n = qwen2vl_num_params(m);
    ready_snap rs = { .m = m, .snap = malloc(n * sizeof(float)), .n = n };
    *reported = 0;
    *final = 0;
    if (!rs.snap) return adapt_fail(err, ADAPT_ENOMEM, "gradients-ready snapshot: %zu floats", n);
    memset(rs.snap, 0xff, n * sizeof(float));  /* NaN where nothing was reported */
    qwen2vl_zero_grads(m);
    int rc = qwen2vl_forward_backward_ready(m, b, loss, ready_download, &rs, err);
    float *fin = fixture_buffer_copy(m, 1);
    *reported = rs.reported;
    *final = fin && memcmp(rs.snap, fin, n * sizeof(float)) == 0;
    free(fin);
    free(rs.snap);
    return rc;
}

int fixture_dir_remove(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}
