/* train: the training loop; see train.h. */
#include "train.h"

#include "adapt_config.h"
#include "checkpoint.h"
#include "data_order.h"
#include "grad_sync.h"
#include "model_config.h"
#include "optim.h"
#include "qwen2vl.h"
#include "train_data.h"

#if ADAPT_HAVE_CUDA
#include "ops_cuda.h"
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct train_state {
    comm                    *c;
    const Adaptd__TrainSpec *spec;
    const char              *backend;     /* NULL: cpu */
    int                      rank, world;
    model_config             cfg;
    const ops_table         *ops;
    qwen2vl_model           *m;
    grad_sync               *gs;
    float                   *host_m, *host_v;  /* checkpoint staging of the moments when the
                                                * backend's memory is not the host's (lazy) */
    train_data              *data;
    optim                    opt;
    int                      opt_open;
    data_order               order;
    int                      order_open;
    uint64_t                 total;       /* optimizer steps of the run */
    uint64_t                 step;        /* optimizer steps done */
    int                      stage;       /* two_stage: 1 or 2; 0 for the other modes */
    uint64_t                 stage_total[2];  /* two_stage: steps of each stage */
    uint64_t                 stage_base;  /* steps of the run before the current stage */
    uint64_t                *stage2;      /* two_stage: the records stage 2 trains on (owned) */
    uint64_t                 n_stage2;
    uint64_t                 samples, tokens;
    uint64_t                 truncated;   /* samples cut to max_seq_len, this run's life */
    size_t                   grad_begin;  /* first float of the trainable suffix */
    uint32_t                 zero_stage;  /* spec->zero_stage: 0, or 1 for ZeRO-1 */
    char                     ckpt_root[CKPT_PATH_MAX];
} train_state;

/* What one step reports. */
typedef struct train_step_stats {
    uint64_t epoch, samples, tokens, loss_tokens;
    double   loss, lr, seconds;
    double   data_seconds;   /* of seconds, this rank's loading and packing */
    float    grad_norm;
} train_step_stats;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Copies src to dst; a missing optional src is not an error. */
static int file_copy(const char *src, const char *dst, int optional, adapt_error *err)
{
    FILE *in = fopen(src, "rb");
    if (!in) {
        if (optional && errno == ENOENT) return 0;
        return adapt_fail(err, ADAPT_EIO, "cannot read %s: %s", src, strerror(errno));
    }
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return adapt_fail(err, ADAPT_EIO, "cannot write %s: %s", dst, strerror(errno));
    }
    char buf[65536];
    size_t r;
    int bad = 0;
    while ((r = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, r, out) != r) bad = 1;
    bad |= ferror(in);
    bad |= fclose(out) != 0;
    fclose(in);
    return bad ? adapt_fail(err, ADAPT_EIO, "copying %s to %s failed", src, dst) : 0;
}

/* The model in the Hugging Face layout: weights, plus the source model's config, tokenizer and
 * processor files, so the directory loads in transformers and in qwen2vl_load_weights as is. */
static int model_dir_write(void *ctx, const char *dir, adapt_error *err)
{
    const train_state *st = ctx;
    static const char *const files[] = {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
        "chat_template.json", "chat_template.jinja", "preprocessor_config.json",
    };
    if (qwen2vl_save_weights(st->m, dir, 0, err)) return -1;
    char src[CKPT_PATH_MAX], dst[CKPT_PATH_MAX];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", st->spec->model_path, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        if (file_copy(src, dst, i > 0, err)) return -1;
    }
    return 0;
}

const char *train_backend_list(void)
{
    /* ops_by_name's names, cuda where the build has it */
#if ADAPT_HAVE_CUDA
    return "cpu, cpu-guarded, cuda";
#else
    return "cpu, cpu-guarded";
#endif
}

int train_backend_open(const char *name, int local_rank, const ops_table **out, adapt_error *err)
{
    if (!name) name = "cpu";
    const ops_table *ops = ops_by_name(name);
    *out = NULL;
    if (!ops)
        return adapt_fail(err, ADAPT_EINVAL, "backend %s is not built in / unknown (this build "
                          "has: %s)", name, train_backend_list());
#if ADAPT_HAVE_CUDA
    /* one GPU per rank, by local rank, before the table's first allocation */
    if (!strcmp(name, "cuda")) {
        char msg[256] = "";
        if (ops_cuda_set_device(local_rank, msg, sizeof msg))
            return adapt_fail(err, ADAPT_EIO, "backend cuda: GPU %d: %s", local_rank, msg);
    }
#else
    (void)local_rank;
#endif
    *out = ops;
    return 0;
}

/* Waits for the backend's queued work; a failure it recorded (late CUDA errors) becomes err. */
static int backend_sync(const train_state *st, const char *what, adapt_error *err)
{
    char msg[256] = "";
    if (st->ops->sync && st->ops->sync(msg, sizeof msg))
        return adapt_fail(err, ADAPT_EIO, "%s: backend %s failed: %s", what, st->ops->backend,
                          msg[0] ? msg : "(no message)");
    return 0;
}

/* Config, data loader (whose budget sizes the model), model on the backend, weights from
 * weights_path. */
static int model_open(train_state *st, const char *corpus, const char *weights_path,
                      adapt_error *err)
{
    const Adaptd__TrainSpec *spec = st->spec;
    int local = st->c ? comm_local_rank(st->c) : comm_env_local_rank();
    if (train_backend_open(st->backend, local < 0 ? 0 : local, &st->ops, err)) return -1;
    if (model_config_load(&st->cfg, spec->model_path, err))
        return adapt_error_prefix(err, "model %s: ", spec->model_path);
    if (train_data_open(&st->data, spec, corpus, &st->cfg, err)) return -1;
    qwen2vl_budget b;
    train_data_budget(st->data, &b);
    /* bf16: activations and a working copy of the weights in bf16, fp32 master weights,
     * gradients and moments (train_rules allows fp32 | bf16) */
    b.precision = spec->precision && !strcmp(spec->precision, "bf16") ? QWEN2VL_BF16
                                                                       : QWEN2VL_FP32;
    if (qwen2vl_create(&st->m, &st->cfg, &b, st->ops, err) ||
        qwen2vl_load_weights(st->m, weights_path, err))
        return adapt_error_prefix(err, "model %s: ", weights_path);
    if (qwen2vl_set_frozen(st->m, QWEN2VL_TOWER_VISION, spec->freeze_vision, err) ||
        qwen2vl_set_frozen(st->m, QWEN2VL_TOWER_MERGER, spec->freeze_merger, err))
        return -1;
    return 0;
}

/* The schedule of a stage: the spec's top level, or two_stage's stage object (whose learning
 * rates, warmup and schedule the spec parser already filled from the top level). */
static int stage_optim_config(const train_state *st, int stage, optim_config *oc,
                              adapt_error *err)
{
    const Adaptd__TrainSpec *spec = st->spec;
    *oc = (optim_config){ .lr = { spec->lr_vision, spec->lr_llm }, .beta1 = spec->adam_beta1,
                          .beta2 = spec->adam_beta2, .eps = spec->adam_epsilon,
                          .weight_decay = spec->weight_decay,
                          .max_grad_norm = spec->max_grad_norm,
                          .warmup_ratio = spec->warmup_ratio, .total_steps = st->total };
    const char *schedule = spec->schedule;
    if (stage > 0) {
        const Adaptd__StageSchedule *ss = spec->stages[stage - 1];
        oc->lr[OPTIM_GROUP_VISION] = ss->lr_vision;
        oc->lr[OPTIM_GROUP_MAIN] = ss->lr_llm;
        oc->warmup_ratio = ss->warmup_ratio;
        oc->total_steps = st->stage_total[stage - 1];
        schedule = ss->schedule;
    }
    return optim_schedule_parse(schedule, &oc->schedule, err);
}

/* The gradient sums across ranks over the trainable suffix; with ZeRO-1 the optimizer narrowed
 * to this rank's shard (clipped to the parameters: the last shards reach into the buffer's
 * slack) and its clip norm summed over the ranks' shards. */
static int grads_open(train_state *st, adapt_error *err)
{
    size_t n_params = qwen2vl_num_params(st->m);
    if (st->zero_stage > 1)
        return adapt_fail(err, ADAPT_EINVAL, "zero_stage %u: 0 (all-reduce) or 1 (ZeRO-1)",
                          st->zero_stage);
    grad_sync_mode mode = st->zero_stage == 1 ? GRAD_SYNC_ZERO1 : GRAD_SYNC_ALLREDUCE;
    if (grad_sync_open(&st->gs, st->c, st->ops, mode, qwen2vl_param_buffer(st->m),
                       qwen2vl_grad_buffer(st->m), st->grad_begin, n_params,
                       qwen2vl_buffer_floats(st->m), err))
        return adapt_error_prefix(err, "gradient sums (zero_stage %u): ", st->zero_stage);
    if (mode != GRAD_SYNC_ZERO1) return 0;
    size_t lo, hi;
    grad_sync_shard(st->gs, &lo, &hi);
    if (hi > n_params) hi = n_params;
    if (lo > hi) lo = hi;
    if (optim_set_shard(&st->opt, lo, hi, err)) return -1;
    /* the shards' sums of squares summed over the ranks; a world of one has the whole norm
     * locally: the table's own clip, as zero_stage 0 */
    if (st->world > 1) optim_set_norm_sum(&st->opt, grad_sync_norm_sum, st->gs);
    return 0;
}

optim_tensor *train_optim_tensors(const qwen2vl_model *m, int freeze_vision, int freeze_merger,
                                  size_t *grad_begin)
{
    size_t n = qwen2vl_num_tensors(m), begin = qwen2vl_num_params(m);
    optim_tensor *t = calloc(n ? n : 1, sizeof *t);
    if (!t) return NULL;
    for (size_t i = 0; i < n; i++) {
        const qwen2vl_tensor *q = qwen2vl_tensor_at(m, i);
        int frozen = (q->tower == QWEN2VL_TOWER_VISION && freeze_vision) ||
                     (q->tower == QWEN2VL_TOWER_MERGER && freeze_merger);
        t[i] = (optim_tensor){ .offset = q->offset, .numel = q->numel, .ndim = q->ndim,
                               .group = q->tower == QWEN2VL_TOWER_VISION ? OPTIM_GROUP_VISION
                                                                         : OPTIM_GROUP_MAIN,
                               .frozen = frozen };
        if (!frozen && q->offset < begin) begin = q->offset;
    }
    if (grad_begin) *grad_begin = begin;
    return t;
}

static int optimizer_open(train_state *st, adapt_error *err)
{
    const Adaptd__TrainSpec *spec = st->spec;
    size_t n = qwen2vl_num_tensors(st->m);
    optim_tensor *t = train_optim_tensors(st->m, spec->freeze_vision, spec->freeze_merger,
                                          &st->grad_begin);
    if (!t) return adapt_fail(err, ADAPT_ENOMEM, "no memory for the optimizer's tensor table");
    optim_config oc;
    int rc = stage_optim_config(st, st->stage, &oc, err);
    if (!rc) rc = optim_init(&st->opt, st->ops, &oc, t, n, qwen2vl_num_params(st->m), err);
    st->opt_open = rc == 0;
    free(t);
    if (!rc) rc = grads_open(st, err);
    return rc;
}

/* The moments as host arrays for the checkpoint module: the optimizer's own on a host backend,
 * else staging buffers (download: filled from the backend for a save). */
static int moments_host(train_state *st, int download, float **m, float **v, adapt_error *err)
{
    if (st->ops->host_accessible) {
        *m = st->opt.m;
        *v = st->opt.v;
        return 0;
    }
    size_t n = st->opt.n_moments;
    if (!st->host_m) {
        st->host_m = malloc((n ? n : 1) * sizeof(float));
        st->host_v = malloc((n ? n : 1) * sizeof(float));
        if (!st->host_m || !st->host_v)
            return adapt_fail(err, ADAPT_ENOMEM, "no memory to stage %zu moments for a "
                              "checkpoint", n);
    }
    if (download) {
        st->ops->mem_download(st->host_m, st->opt.m, n * sizeof(float));
        st->ops->mem_download(st->host_v, st->opt.v, n * sizeof(float));
    }
    *m = st->host_m;
    *v = st->host_v;
    return 0;
}

static void ckpt_state_fill(const train_state *st, ckpt_state *cs, float *m, float *v)
{
    uint64_t epoch, estep;
    data_order_position(st->order.n, st->order.global_batch, st->step - st->stage_base, &epoch,
                        &estep);
    /* rng[0] keeps the run seed: every draw of the loop is keyed by (seed, position), so the
     * seed is the whole RNG state, and a resume under another seed is refused. */
    *cs = (ckpt_state){ .step = st->step, .rank = (uint32_t)st->rank,
                        .world = (uint32_t)st->world, .epoch = epoch, .epoch_step = estep,
                        .samples = st->samples, .tokens = st->tokens,
                        .rng = { st->spec->seed, 0, 0, 0 }, .stage = (uint32_t)st->stage,
                        .zero_stage = st->zero_stage, .n_params = st->opt.n_moments,
                        .m = m, .v = v };
}

/* Makes stage the current one: its data order (stage 2: over the records with kept tasks), its
 * conversations, and its schedule (fresh: new moments, as a separate run would start). */
static int stage_enter(train_state *st, int stage, int fresh, adapt_error *err)
{
    st->stage = stage;
    st->stage_base = stage == 2 ? st->stage_total[0] : 0;
    uint64_t n = stage == 2 ? st->n_stage2 : train_data_count(st->data);
    if (st->order_open) data_order_close(&st->order);
    st->order_open = 0;
    if (data_order_init(&st->order, n, st->spec->global_batch, (uint32_t)st->world,
                        (uint32_t)st->rank, st->spec->seed, err))
        return -1;
    st->order_open = 1;
    train_data_set_stage(st->data, stage);
    if (!st->opt_open) return 0;
    optim_config oc;
    if (stage_optim_config(st, stage, &oc, err)) return -1;
    optim_restart(&st->opt, &oc, fresh);
    return 0;
}

static int checkpoint_save(train_state *st, adapt_error *err)
{
    ckpt_state cs;
    float *m, *v;
    if (moments_host(st, 1, &m, &v, err)) return -1;
    ckpt_state_fill(st, &cs, m, v);
    if (st->rank == 0 && ckpt_begin(st->ckpt_root, st->step, err)) return -1;
    if (comm_barrier(st->c, err)) return -1;
    if (ckpt_write_rank(st->ckpt_root, &cs, st->rank == 0 ? model_dir_write : NULL, st, err))
        return -1;
    if (comm_barrier(st->c, err)) return -1;
    if (st->rank == 0 &&
        ckpt_commit(st->ckpt_root, st->step, (uint32_t)st->world, st->spec->keep_last, err))
        return -1;
    return comm_barrier(st->c, err);
}

/* --resume: weights from the checkpoint directory, then this rank's moments and position. */
static int state_resume(train_state *st, const char *dir, adapt_error *err)
{
    float *m, *v;
    if (moments_host(st, 0, &m, &v, err)) return -1;
    ckpt_state cs = { .rank = (uint32_t)st->rank, .world = (uint32_t)st->world,
                      .zero_stage = st->zero_stage, .n_params = st->opt.n_moments, .m = m,
                      .v = v };
    if (ckpt_read_rank(dir, &cs, err)) return -1;
    if (!st->ops->host_accessible) {
        st->ops->mem_upload(st->opt.m, m, st->opt.n_moments * sizeof(float));
        st->ops->mem_upload(st->opt.v, v, st->opt.n_moments * sizeof(float));
    }
    if ((cs.stage != 0) != (st->stage != 0) || cs.stage > 2)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint %s is of stage %u, the spec's mode is "
                          "%s: resume with the spec that started the run", dir, cs.stage,
                          st->spec->mode);
    if (cs.stage == 2 && stage_enter(st, 2, 0, err)) return -1;
    if (cs.rng[0] != st->spec->seed)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint %s was trained with seed %llu, the "
                          "spec says %llu: resume with the spec that started the run", dir,
                          (unsigned long long)cs.rng[0], (unsigned long long)st->spec->seed);
    if (cs.step > st->total)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint %s is at step %llu, past the run's %llu "
                          "steps", dir, (unsigned long long)cs.step,
                          (unsigned long long)st->total);
    st->step = cs.step;
    st->samples = cs.samples;
    st->tokens = cs.tokens;
    if (cs.step < st->stage_base)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint %s: stage 2 at step %llu, before the "
                          "stage starts", dir, (unsigned long long)cs.step);
    st->opt.step = cs.step - st->stage_base;
    return 0;
}

/* This rank's forward and backward over its micro-batches; loss is its share of the global
 * mean (every micro-batch divides by the global count). With more than one rank, the last
 * micro-batch's backward hands finished gradient ranges to grad_sync as it goes (its all-reduce
 * buckets start while backward goes on; earlier micro-batches only accumulate here), and a rank
 * with no batch reports them all after, so every rank starts the same buckets in the same
 * order. grad_sync_reduce then completes the sums (ZeRO-1: reduce-scatters the shards). */
static int step_accumulate(train_state *st, float normaliser, double *loss, adapt_error *err)
{
    int share = st->world > 1;
    /* Only the bucketed all-reduce acts on the ready ranges (ZeRO-1's grad_sync_ready returns
     * at once): passing none otherwise lets the model replay its passes as graphs, which a
     * host callback between ops would rule out (qwen2vl_set_graphs). */
    int overlap = share && st->zero_stage == 0;
    qwen2vl_zero_grads(st->m);
    *loss = 0.0;
    size_t n = normaliser > 0.0f ? train_data_batches(st->data) : 0;
    for (size_t i = 0; i < n; i++) {
        qwen2vl_batch b;
        int last = overlap && i + 1 == n;
        /* loss NULL: the model keeps each pass's loss on the backend, read once below */
        if (train_data_build(st->data, i, normaliser, &b, err) ||
            qwen2vl_forward_backward_ready(st->m, &b, NULL, last ? grad_sync_ready : NULL, st->gs,
                                           err))
            return adapt_error_prefix(err, "step %llu micro-batch %zu: ",
                                      (unsigned long long)st->step + 1, i);
    }
    /* the passes' float losses summed in a double in pass order, as a += per pass did */
    if (n && qwen2vl_loss_read(st->m, loss))
        return adapt_fail(err, ADAPT_EINVAL, "step %llu: no loss on an inference-only model",
                          (unsigned long long)st->step + 1);
    if (share && n == 0) qwen2vl_grads_ready_all(st->m, grad_sync_ready, st->gs);
    if (grad_sync_reduce(st->gs, err))
        return adapt_error_prefix(err, "step %llu: gradient sum: ",
                                  (unsigned long long)st->step + 1);
    return 0;
}

static int step_run(train_state *st, train_step_stats *s, adapt_error *err)
{
    double t0 = now_seconds();
    uint64_t estep;
    data_order_position(st->order.n, st->order.global_batch, st->step - st->stage_base,
                        &s->epoch, &estep);
    if (s->epoch != st->order.epoch) data_order_set_epoch(&st->order, s->epoch);
    const uint64_t *pos;
    uint64_t count;
    if (data_order_step(&st->order, estep, &pos, &count, err)) return -1;
    /* stage 2 orders positions in its list of records with tasks */
    uint64_t *ids = malloc((count ? count : 1) * sizeof *ids);
    if (!ids) return adapt_fail(err, ADAPT_ENOMEM, "no memory for a step's indices");
    for (uint64_t i = 0; i < count; i++) ids[i] = st->stage == 2 ? st->stage2[pos[i]] : pos[i];
    uint64_t key = data_order_key(st->spec->seed,
                                  DATA_ORDER_STREAM_PACK ^ s->epoch ^ ((uint64_t)st->stage << 32),
                                  estep * (uint64_t)st->world + (uint64_t)st->rank);
    int rc = train_data_prepare(st->data, ids, (size_t)count, key, err);
    free(ids);
    if (rc)
        return adapt_error_prefix(err, "step %llu (epoch %llu): ",
                                  (unsigned long long)st->step + 1, (unsigned long long)s->epoch);
    s->data_seconds = now_seconds() - t0;
    uint64_t counts[4] = { train_data_loss_tokens(st->data), train_data_tokens(st->data), count,
                           train_data_truncated(st->data) };
    if (comm_allreduce_sum_u64(st->c, counts, 4, err)) return -1;
    st->truncated += counts[3];
    s->loss_tokens = counts[0];
    s->tokens = counts[1];
    s->samples = counts[2];
    double loss = 0.0;
    if (step_accumulate(st, (float)counts[0], &loss, err) ||
        comm_allreduce_sum_f64(st->c, &loss, 1, err))
        return -1;
    char what[64];
    snprintf(what, sizeof what, "step %llu", (unsigned long long)st->step + 1);
    /* ZeRO-1: the step updates this rank's shard, the all-gather brings every rank's shard */
    if (optim_step(&st->opt, qwen2vl_param_buffer(st->m), qwen2vl_grad_buffer(st->m),
                   &s->grad_norm, &s->lr, err) ||
        grad_sync_gather_params(st->gs, err))
        return adapt_error_prefix(err, "%s: optimizer: ", what);
    /* bf16: the passes read a rounded copy of the fp32 master, stale until refreshed (after the
     * all-gather under ZeRO-1, which brings back fp32 only); fp32: nothing */
    qwen2vl_weights_changed(st->m);
    /* once per step: device errors of the step's ops surface here, not steps later */
    if (backend_sync(st, what, err)) return -1;
    st->step++;
    st->samples += s->samples;
    st->tokens += s->tokens;
    s->loss = loss;
    s->seconds = now_seconds() - t0;
    return 0;
}

/* The same numbers as a Progress message, for the daemon's link. */
static void progress_send(const train_state *st, const train_step_stats *s,
                          const train_events *ev)
{
    if (!ev->progress || st->rank != 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    Adaptd__Progress p = ADAPTD__PROGRESS__INIT;
    p.rank = 0;
    p.step = st->step;
    p.total_steps = st->total;
    p.epoch = (uint32_t)s->epoch;
    p.samples = st->samples;
    p.tokens = st->tokens;
    p.loss = (float)s->loss;
    p.lr = (float)s->lr;
    p.grad_norm = s->grad_norm;
    p.step_seconds = s->seconds;
    p.tokens_per_second = s->seconds > 0 ? (double)s->tokens / s->seconds : 0.0;
    p.unix_time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    p.truncated_samples = st->truncated;
    p.stage = (uint32_t)st->stage;
    ev->progress(ev->ctx, &p);
}

static void progress_print(const train_state *st, const train_step_stats *s, FILE *out)
{
    if (!out || st->rank != 0) return;
    fprintf(out, "{\"step\": %llu, \"total\": %llu, \"epoch\": %llu, \"samples\": %llu, "
            "\"tokens\": %llu, \"loss\": %.7g, \"lr\": %.7g, \"grad_norm\": %.7g, "
            "\"step_seconds\": %.4f, \"tokens_per_second\": %.1f, \"data_seconds\": %.4f, "
            "\"truncated\": %llu, \"stage\": %d}\n",
            (unsigned long long)st->step, (unsigned long long)st->total,
            (unsigned long long)s->epoch, (unsigned long long)st->samples,
            (unsigned long long)st->tokens, s->loss, s->lr, (double)s->grad_norm, s->seconds,
            s->seconds > 0 ? (double)s->tokens / s->seconds : 0.0, s->data_seconds,
            (unsigned long long)st->truncated, st->stage);
    fflush(out);
}

/* The signal flag, agreed on by every rank (a signal may reach the ranks at different steps):
 * the largest value any rank saw. */
static int signal_agree(train_state *st, atomic_int *flag, int *value,
                        adapt_error *err)
{
    uint64_t seen[2] = { 0, 0 };
    if (flag && *flag == TRAIN_SIGNAL_STOP) seen[0] = 1;
    else if (flag && *flag == TRAIN_SIGNAL_CHECKPOINT) seen[1] = 1;
    if (st->world > 1 && comm_allreduce_sum_u64(st->c, seen, 2, err)) return -1;
    *value = seen[0] ? TRAIN_SIGNAL_STOP : seen[1] ? TRAIN_SIGNAL_CHECKPOINT : TRAIN_SIGNAL_NONE;
    /* compare-and-swap: a STOP arriving meanwhile must not be reset with the CHECKPOINT */
    int expect = TRAIN_SIGNAL_CHECKPOINT;
    if (flag && *value == TRAIN_SIGNAL_CHECKPOINT)
        atomic_compare_exchange_strong(flag, &expect, TRAIN_SIGNAL_NONE);
    return 0;
}

static int output_dirs_make(train_state *st, adapt_error *err)
{
    const char *out = st->spec->output_dir;
    snprintf(st->ckpt_root, sizeof st->ckpt_root, "%s/checkpoints", out);
    if (st->rank != 0) return 0;
    /* a missing parent is the spec's fault (exit 2), anything else the file system's (exit 1) */
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return adapt_fail(err, errno == ENOENT || errno == ENOTDIR ? ADAPT_ENOTFOUND : ADAPT_EIO,
                          "output_dir %s: cannot create it: %s (its parent must exist)", out,
                          strerror(errno));
    return 0;
}

/* Steps of the run; two_stage: of each stage, stage 2 over the records with kept tasks. */
static int run_length(train_state *st, adapt_error *err)
{
    const Adaptd__TrainSpec *spec = st->spec;
    uint64_t n = train_data_count(st->data);
    if (strcmp(spec->mode, "two_stage") != 0) {
        st->total = data_order_total_steps(n, spec->global_batch, spec->epochs, spec->max_steps);
        return 0;
    }
    st->stage = 1;
    if (train_data_task_records(st->data, &st->stage2, &st->n_stage2, err)) return -1;
    if (st->n_stage2 == 0)
        return adapt_fail(err, ADAPT_EINVAL, "two_stage: no record of %s has a kept task in "
                          "the overlays, so stage 2 has nothing to train on", spec->corpus);
    st->stage_total[0] = data_order_total_steps(n, spec->global_batch, spec->stages[0]->epochs,
                                                spec->stages[0]->max_steps);
    st->stage_total[1] = data_order_total_steps(st->n_stage2, spec->global_batch,
                                                spec->stages[1]->epochs,
                                                spec->stages[1]->max_steps);
    st->total = st->stage_total[0] + st->stage_total[1];
    return 0;
}

/* Opens everything; on --resume the weights come from the checkpoint. */
static int state_open(train_state *st, const train_options *opt, adapt_error *err)
{
    const Adaptd__TrainSpec *spec = opt->spec;
    if (output_dirs_make(st, err)) return -1;
    ckpt_info info;
    int resume = opt->resume || opt->resume_from;
    if (resume &&
        ckpt_resolve_resume(st->ckpt_root, opt->resume_from, (uint32_t)st->world, &info, err))
        return adapt_error_prefix(err, "--resume: ");
    /* A fresh run over an old one's checkpoints would leave newer steps of the old history
     * for a later --resume to pick up as if they were this run's. */
    if (!resume && ckpt_find_latest(st->ckpt_root, &info, NULL) == 0)
        return adapt_fail(err, ADAPT_EINVAL, "%s already holds checkpoint %s: continue it with "
                          "--resume, or choose another output_dir", st->ckpt_root, info.dir);
    if (model_open(st, NULL, resume ? info.dir : spec->model_path, err)) return -1;
    if (run_length(st, err) || stage_enter(st, st->stage ? 1 : 0, 1, err) ||
        optimizer_open(st, err))
        return -1;
    return resume ? state_resume(st, info.dir, err) : 0;
}

static void state_close(train_state *st)
{
    if (st->gs) grad_sync_close(st->gs);
    free(st->host_m);
    free(st->host_v);
    if (st->opt_open) optim_close(&st->opt);
    if (st->order_open) data_order_close(&st->order);
    free(st->stage2);
    qwen2vl_free(st->m);
    train_data_close(st->data);
}

static int loop_run(train_state *st, const train_options *opt, adapt_error *err)
{
    uint32_t every = st->spec->checkpoint_every;
    while (st->step < st->total) {
        train_step_stats s;
        if (st->stage == 1 && st->step == st->stage_total[0] && stage_enter(st, 2, 1, err))
            return -1;
        if (step_run(st, &s, err)) return -1;
        progress_print(st, &s, opt->progress);
        progress_send(st, &s, &opt->events);
        int sig;
        if (signal_agree(st, opt->signal, &sig, err)) return -1;
        int due = (every > 0 && st->step % every == 0) || st->step == st->total;
        if (due || sig != TRAIN_SIGNAL_NONE) {
            if (checkpoint_save(st, err))
                return adapt_error_prefix(err, "checkpoint at step %llu: ",
                                          (unsigned long long)st->step);
            if (st->rank == 0 && opt->events.checkpoint) {
                char dir[CKPT_PATH_MAX];
                ckpt_dir_path(dir, sizeof dir, st->ckpt_root, st->step);
                opt->events.checkpoint(opt->events.ctx, st->step, dir);
            }
        }
        if (sig == TRAIN_SIGNAL_STOP) return TRAIN_STOPPED;
    }
    return 0;
}

int train_run(comm *c, const train_options *opt, adapt_error *err)
{
    train_state st = { .c = c, .spec = opt->spec, .backend = opt->backend, .rank = comm_rank(c),
                       .world = comm_world(c), .zero_stage = opt->spec->zero_stage };
    int rc = state_open(&st, opt, err);
    if (!rc) rc = loop_run(&st, opt, err);
    if (rc == 0 && st.rank == 0 && model_dir_write(&st, opt->spec->output_dir, err))
        rc = adapt_error_prefix(err, "final weights in %s: ", opt->spec->output_dir);
    state_close(&st);
    return rc;
}

int train_eval_loss(const Adaptd__TrainSpec *spec, const char *backend, const char *model_dir,
                    const char *corpus, double *loss, uint64_t *tokens, adapt_error *err)
{
    train_state st = { .spec = spec, .backend = backend, .world = 1 };
    int rc = model_open(&st, corpus, model_dir, err);
    uint64_t n = rc ? 0 : train_data_count(st.data), scored = 0;
    double sum = 0.0;
    uint64_t *ids = malloc(spec->global_batch * sizeof *ids);
    if (!rc && !ids) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
    for (uint64_t at = 0; !rc && at < n; at += spec->global_batch) {
        size_t k = 0;
        for (uint64_t i = at; i < n && k < spec->global_batch; i++) ids[k++] = i;
        rc = train_data_prepare(st.data, ids, k, 0, err);
        for (size_t b = 0; !rc && b < train_data_batches(st.data); b++) {
            qwen2vl_batch batch;
            float l = 0.0f;
            /* normaliser 1: the loss is the plain sum, divided once at the end */
            rc = train_data_build(st.data, b, 1.0f, &batch, err);
            if (!rc) rc = qwen2vl_forward(st.m, &batch, &l, err);
            sum += l;
        }
        scored += train_data_loss_tokens(st.data);
    }
    if (!rc) rc = backend_sync(&st, "loss", err);
    free(ids);
    state_close(&st);
    *loss = scored ? sum / (double)scored : 0.0;
    *tokens = scored;
    return rc;
}
