/* test_optim: worker/optim.c — the schedules against transformers' formulas, warmup rounding,
 * AdamW's first bias-corrected step, decay only on tensors of two or more dimensions, the two
 * learning-rate groups, frozen tensors, the clip norm over trainable tensors only, and a restart
 * for a new stage. */
#include "check.h"
#include "optim.h"

#include <math.h>

static void test_schedules(void)
{
    optim_config c = { .warmup_ratio = 0.1, .total_steps = 10, .schedule = OPTIM_SCHEDULE_COSINE };
    CHECK(optim_warmup_steps(0.1, 10) == 1);
    CHECK(optim_warmup_steps(0.25, 10) == 3);   /* ceil, as transformers' get_warmup_steps */
    CHECK(optim_warmup_steps(0.0, 10) == 0);
    CHECK(optim_lr_factor(&c, 0) == 0.0);
    CHECK(fabs(optim_lr_factor(&c, 1) - 1.0) < 1e-12);
    CHECK(fabs(optim_lr_factor(&c, 6) - 0.5 * (1.0 + cos(M_PI * 5.0 / 9.0))) < 1e-12);
    CHECK(fabs(optim_lr_factor(&c, 10)) < 1e-12);
    c.schedule = OPTIM_SCHEDULE_LINEAR;
    CHECK(fabs(optim_lr_factor(&c, 4) - 6.0 / 9.0) < 1e-12);
    CHECK(optim_lr_factor(&c, 10) == 0.0);
    c.schedule = OPTIM_SCHEDULE_CONSTANT;
    c.warmup_ratio = 0.3;
    CHECK(fabs(optim_lr_factor(&c, 1) - 1.0 / 3.0) < 1e-12);
    CHECK(optim_lr_factor(&c, 3) == 1.0 && optim_lr_factor(&c, 9) == 1.0);
    optim_schedule s;
    adapt_error err = {0};
    CHECK(optim_schedule_parse("linear", &s, &err) == 0 && s == OPTIM_SCHEDULE_LINEAR);
    CHECK(optim_schedule_parse("step", &s, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "'step'");
}

/* Tensors: 0 a 2x2 vision matrix, 1 a vision bias of 2, 2 a main 2x2 matrix, 3 a main norm of
 * 2, 4 a frozen main matrix of 2x1. */
static const optim_tensor TENSORS[] = {
    { 0, 4, 2, OPTIM_GROUP_VISION, 0 },
    { 4, 2, 1, OPTIM_GROUP_VISION, 0 },
    { 6, 4, 2, OPTIM_GROUP_MAIN, 0 },
    { 10, 2, 1, OPTIM_GROUP_MAIN, 0 },
    { 12, 2, 2, OPTIM_GROUP_MAIN, 1 },
};
#define NP 14

static void test_step(void)
{
    optim_config c = { .lr = { 0.01, 0.1 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .weight_decay = 0.5, .max_grad_norm = 0.0, .warmup_ratio = 0.0,
                       .schedule = OPTIM_SCHEDULE_CONSTANT, .total_steps = 4 };
    optim o;
    adapt_error err = {0};
    CHECK_MSG(optim_init(&o, ops_cpu(), &c, TENSORS, 5, NP, &err) == 0, "%s", err.message);
    float p[NP], g[NP];
    for (int i = 0; i < NP; i++) {
        p[i] = 1.0f;
        g[i] = (i % 2) ? -2.0f : 0.0f;   /* zero gradient on even slots: only decay moves them */
    }
    g[13] = 100.0f;                       /* frozen: must not count in the norm */
    float norm = 0.0f;
    double lr = 0.0;
    optim_step(&o, p, g, &norm, &lr);
    CHECK(fabs(lr - 0.1) < 1e-12);
    /* 6 trainable odd slots of |g| = 2: the norm is sqrt(6 * 4) */
    CHECK_MSG(fabs(norm - sqrtf(24.0f)) < 1e-5, "norm %g", norm);
    /* first step: m_hat / sqrt(v_hat) = sign(g), decoupled decay lr * wd * p first */
    CHECK(fabs(p[0] - (1.0 - 0.01 * 0.5)) < 1e-6);              /* vision matrix, g = 0 */
    CHECK(fabs(p[1] - (1.0 - 0.01 * 0.5 + 0.01)) < 1e-6);       /* vision matrix, g < 0 */
    CHECK(p[4] == 1.0f);                                         /* bias, g = 0: no decay */
    CHECK(fabs(p[5] - (1.0 + 0.01)) < 1e-6);                     /* bias, g < 0 */
    CHECK(fabs(p[6] - (1.0 - 0.1 * 0.5)) < 1e-6);               /* main matrix */
    CHECK(fabs(p[7] - (1.0 - 0.1 * 0.5 + 0.1)) < 1e-6);
    CHECK(p[10] == 1.0f);                                        /* norm weight: no decay */
    CHECK(fabs(p[11] - 1.1) < 1e-6);
    CHECK(p[12] == 1.0f && p[13] == 1.0f);                       /* frozen */
    CHECK(o.m[13] == 0.0f && o.v[13] == 0.0f);
    CHECK(o.step == 1);
    /* a resume inside a stage keeps the moments; a new stage starts them afresh */
    c.total_steps = 7;
    optim_restart(&o, &c, 0);
    CHECK(o.step == 1 && o.m[1] != 0.0f && o.cfg.total_steps == 7);
    optim_restart(&o, &c, 1);
    CHECK(o.step == 0 && o.m[1] == 0.0f && o.v[1] == 0.0f);
    optim_close(&o);
}

static void test_clip(void)
{
    /* With clipping, the second step sees g scaled: m and v keep the clipped gradient. */
    optim_config c = { .lr = { 0.0, 0.0 }, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                       .max_grad_norm = 1.0, .schedule = OPTIM_SCHEDULE_CONSTANT,
                       .total_steps = 1 };
    optim_tensor t = { 0, 2, 1, OPTIM_GROUP_MAIN, 0 };
    optim o;
    adapt_error err = {0};
    CHECK(optim_init(&o, ops_cpu(), &c, &t, 1, 2, &err) == 0);
    float p[2] = { 0, 0 }, g[2] = { 3, 4 }, norm;
    optim_step(&o, p, g, &norm, NULL);
    CHECK(fabs(norm - 5.0f) < 1e-5);
    /* m = (1 - beta1) * g * min(1, 1 / (5 + 1e-6)) */
    CHECK_MSG(fabs(o.m[0] - 0.1f * 3.0f / 5.0f) < 1e-6, "m %g", o.m[0]);
    CHECK(fabs(o.m[1] - 0.1f * 4.0f / 5.0f) < 1e-6);
    optim_close(&o);
    CHECK(optim_init(&o, ops_cpu(), &c, &t, 1, 1, &err) == ADAPT_EINVAL);
    c.total_steps = 0;
    CHECK(optim_init(&o, ops_cpu(), &c, &t, 1, 2, &err) == ADAPT_EINVAL);
}

int main(void)
{
    test_schedules();
    test_step();
    test_clip();
    printf("test_optim: %d checks, %d failed\n", check_count, check_failures);
    return check_failures != 0;
}
