/* tiny_steps: a few training steps of a saved Qwen2-VL on a saved packed batch, on any backend:
 * the adaptd side of tests/gpu/hf_tiny_steps.py, which runs the same steps in transformers.
 *
 * Each step: zero the gradients, forward + backward over the batch, then worker/optim's AdamW
 * with the hyperparameters below (decay on tensors of two or more dimensions only, the global
 * grad-norm clip, a constant learning rate), the same code adapt-worker train runs. One JSON line
 * per step on stdout: {"step": k, "loss": L, "grad_norm": N}; the weights after the last step go
 * to OUT_DIR/model.safetensors (F32, save_pretrained's names).
 *
 * The batch file holds F32 tensors (integers are exact at these sizes), as
 * tests/reference/qwen2vl_ref.py writes them: input_ids, labels, cu_seqlens, image_grid_thw
 * (may be empty), pixel_values, loss_normaliser.
 *
 * Usage: tiny_steps BACKEND MODEL_DIR BATCH.safetensors OUT_DIR STEPS LR WEIGHT_DECAY MAX_GRAD_NORM
 *        BACKEND: cpu | cpu-guarded | cuda (ops_by_name). Exit 0, 1 on a failure (named), 2 usage,
 *        77 cuda without a CUDA device. */
#include "adapt_config.h"
#include "model_config.h"
#include "ops.h"
#include "optim.h"
#include "qwen2vl.h"
#include "safetensors.h"
#include "train.h"
#if ADAPT_HAVE_CUDA
#include "ops_cuda.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "tiny_steps: %s: %s\n", what, detail);
    return 1;
}

/* tensor `name` of st as floats (*count of them); NULL with err set when absent */
static float *read_floats(const safetensors_t *st, const char *name, uint64_t *count,
                          adapt_error *err)
{
    const safetensors_tensor *t = safetensors_find(st, name);
    if (!t) {
        adapt_fail(err, ADAPT_EINVAL, "the batch file has no tensor %s", name);
        return NULL;
    }
    float *p = malloc((t->nelem ? t->nelem : 1) * sizeof *p);
    if (!p || safetensors_read_f32(st, name, p, t->nelem, err)) {
        if (p) free(p);
        else adapt_fail(err, ADAPT_ENOMEM, "no memory for %s", name);
        return NULL;
    }
    *count = t->nelem;
    return p;
}

static int *to_ints(const float *f, uint64_t n)
{
    int *p = malloc((n ? n : 1) * sizeof *p);
    for (uint64_t i = 0; p && i < n; i++) p[i] = (int)f[i];
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: tiny_steps BACKEND MODEL_DIR BATCH.safetensors OUT_DIR STEPS LR "
                "WEIGHT_DECAY MAX_GRAD_NORM\n");
        return 2;
    }
    const ops_table *ops = ops_by_name(argv[1]);
#if ADAPT_HAVE_CUDA
    if (!strcmp(argv[1], "cuda")) ops = ops_cuda();  /* the same table; not through the lookup */
#endif
    if (!ops) {
        fprintf(stderr, "tiny_steps: backend '%s' is unknown or not in this build (cpu, "
                "cpu-guarded, cuda)\n", argv[1]);
        return 2;
    }
#if ADAPT_HAVE_CUDA
    char msg[300];
    if (!strcmp(argv[1], "cuda") && ops_cuda_set_device(0, msg, sizeof msg)) {
        fail("ops_cuda_set_device", msg);
        return strstr(msg, "no CUDA device") ? 77 : 1;  /* skipped where there is no GPU */
    }
#endif
    int steps = atoi(argv[5]);
    double lr = atof(argv[6]), wd = atof(argv[7]), clip = atof(argv[8]);
    adapt_error err = {0};
    model_config cfg;
    if (model_config_load(&cfg, argv[2], &err)) return fail(argv[2], err.message);
    safetensors_t *st;
    if (safetensors_open(&st, argv[3], &err)) return fail(argv[3], err.message);
    uint64_t n_tok = 0, n_lab = 0, n_cu = 0, n_grid = 0, n_pix = 0, one = 0;
    float *f_ids = read_floats(st, "input_ids", &n_tok, &err);
    float *f_lab = f_ids ? read_floats(st, "labels", &n_lab, &err) : NULL;
    float *f_cu = f_lab ? read_floats(st, "cu_seqlens", &n_cu, &err) : NULL;
    float *f_grid = f_cu ? read_floats(st, "image_grid_thw", &n_grid, &err) : NULL;
    float *pix = f_grid ? read_floats(st, "pixel_values", &n_pix, &err) : NULL;
    float *norm = pix ? read_floats(st, "loss_normaliser", &one, &err) : NULL;
    if (!norm) return fail(argv[3], err.message);
    if (n_lab != n_tok || n_cu < 2 || n_grid % 3 || one != 1)
        return fail(argv[3], "inconsistent batch (labels vs input_ids, cu_seqlens, grid, normaliser)");
    int *ids = to_ints(f_ids, n_tok), *labels = to_ints(f_lab, n_tok);
    int *cu = to_ints(f_cu, n_cu), *grid = to_ints(f_grid, n_grid);
    qwen2vl_batch b = { .n_tokens = (int)n_tok, .input_ids = ids, .labels = labels,
                        .n_seqs = (int)n_cu - 1, .cu_seqlens = cu, .n_images = (int)n_grid / 3,
                        .image_grid_thw = grid, .pixel_values = pix, .loss_normaliser = norm[0] };
    int patch_dim = cfg.vision.in_channels * cfg.vision.temporal_patch_size *
                    cfg.vision.patch_size * cfg.vision.patch_size;
    qwen2vl_budget bud = { .max_tokens = b.n_tokens, .max_patches = (int)(n_pix / patch_dim),
                           .max_seqs = b.n_seqs, .max_images = b.n_images ? b.n_images : 1 };
    qwen2vl_model *m;
    if (qwen2vl_create(&m, &cfg, &bud, ops, &err)) return fail("qwen2vl_create", err.message);
    if (qwen2vl_load_weights(m, argv[2], &err)) return fail("qwen2vl_load_weights", err.message);

    size_t nt = qwen2vl_num_tensors(m);
    optim_tensor *ot = train_optim_tensors(m, 0, 0, NULL);  /* the worker's, nothing frozen */
    if (!ot) return fail("optimizer table", "out of memory");
    optim_config oc = { .lr = { lr, lr }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = wd, .max_grad_norm = clip, .warmup_ratio = 0,
                        .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = (uint64_t)steps };
    optim o;
    if (optim_init(&o, ops, &oc, ot, nt, qwen2vl_num_params(m), &err))
        return fail("optim_init", err.message);
    free(ot);
    for (int k = 1; k <= steps; k++) {
        float loss = 0, gn = 0;
        double used_lr = 0;
        qwen2vl_zero_grads(m);
        if (qwen2vl_forward_backward(m, &b, &loss, &err)) return fail("forward_backward", err.message);
        if (optim_step(&o, qwen2vl_param_buffer(m), qwen2vl_grad_buffer(m), &gn, &used_lr, &err))
            return fail("optim_step", err.message);
        char smsg[600] = "";
        if (ops->sync && ops->sync(smsg, sizeof smsg)) return fail("backend", smsg);
        printf("{\"step\": %d, \"loss\": %.9g, \"grad_norm\": %.9g, \"lr\": %.9g}\n", k, loss, gn,
               used_lr);
        fflush(stdout);
    }
    if (qwen2vl_save_weights(m, argv[4], 0, &err)) return fail("qwen2vl_save_weights", err.message);
    optim_close(&o);
    qwen2vl_free(m);
    safetensors_close(st);
    free(f_ids); free(f_lab); free(f_cu); free(f_grid); free(pix); free(norm);
    free(ids); free(labels); free(cu); free(grid);
    return 0;
}
