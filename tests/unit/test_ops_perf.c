/* Throughput of the hot CPU ops, printed for the record (BENCHMARKS.md takes its numbers from
 * here), with only loose sanity bounds checked: the machine is shared, so timings are noisy and
 * a slow run must not fail CI. What is checked hard is that the two matmul paths (BLAS and the
 * blocked fallback) agree on a large product.
 *   - 1024 x 1024 x 1024 sgemm: BLAS (when built with one) and the blocked fallback, GFLOP/s;
 *   - attention forward + backward on the 20M benchmark's two shapes, q, k, v as slices of one
 *     fused projection as the model lays them out: the vision tower's (8 images of 256 patches,
 *     4 heads of 64, bidirectional) and the decoder's (8 sequences of 194 tokens, 8 query / 2 kv
 *     heads of 64, causal), GFLOP/s counting only the causal half of the decoder's products. */
#include "../check.h"
#include "kernels_cpu.h"
#include "test_ops_util.h"

#include <stdio.h>

static double best_of(int reps, void (*fn)(void *), void *arg)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = tu_seconds();
        fn(arg);
        double dt = tu_seconds() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

typedef struct { float *a, *b, *c; int n; } mm_args;

#if ADAPT_HAVE_BLAS
static void run_blas(void *p)
{
    mm_args *m = p;
    cpu_matmul_f32(m->c, m->a, m->b, m->n, m->n, m->n, 0, 0, m->n, m->n, m->n, 1, 0);
}
#endif

static void run_blocked(void *p)
{
    mm_args *m = p;
    cpu_matmul_blocked_f32(m->c, m->a, m->b, m->n, m->n, m->n, 0, 0, m->n, m->n, m->n, 1, 0);
}

static void bench_matmul(void)
{
    enum { N = 1024 };
    tu_rng rng = {7};
    double *a64 = tu_rand(&rng, (size_t)N * N, 1.0), *b64 = tu_rand(&rng, (size_t)N * N, 1.0);
    mm_args m = {tu_to_f32(a64, (size_t)N * N), tu_to_f32(b64, (size_t)N * N),
                 calloc((size_t)N * N, sizeof(float)), N};
    float *ref = calloc((size_t)N * N, sizeof(float));
    double flop = 2.0 * N * N * N;
    double t_blocked = best_of(3, run_blocked, &m);
    memcpy(ref, m.c, (size_t)N * N * sizeof(float));
    fprintf(stderr, "  matmul %dx%dx%d blocked fallback: %6.1f GFLOP/s\n", N, N, N, flop / t_blocked * 1e-9);
#if ADAPT_HAVE_BLAS
    double t_blas = best_of(3, run_blas, &m);
    fprintf(stderr, "  matmul %dx%dx%d BLAS (OpenBLAS):  %6.1f GFLOP/s\n", N, N, N, flop / t_blas * 1e-9);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < (size_t)N * N; i++) {
        double e = fabs((double)m.c[i] - ref[i]);
        worst = e > worst ? e : worst;
        scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    }
    CHECK_MSG(worst <= 1e-5 * scale, "BLAS vs blocked: %.3g of %.3g", worst, scale);
#else
    fprintf(stderr, "  matmul BLAS: not built (no OpenBLAS found)\n");
#endif
    CHECK_MSG(flop / t_blocked > 1e8, "blocked matmul below 0.1 GFLOP/s: broken, not slow");
    free(a64); free(b64); free(m.a); free(m.b); free(m.c); free(ref);
}

typedef struct { float *q, *k, *v, *o, *lse, *dq, *dk, *dv, *dout; ops_attn a; } att_args;

static void run_att_fwd(void *p)
{
    att_args *x = p;
    cpu_attention_forward_f32(x->o, x->lse, x->q, x->k, x->v, &x->a);
}

static void run_att_bwd(void *p)
{
    att_args *x = p;
    cpu_attention_backward_f32(x->dq, x->dk, x->dv, x->dout, x->q, x->k, x->v, x->o, x->lse, &x->a);
}

static void bench_attention_shape(const char *name, int S, int L, int H, int HK, int causal)
{
    enum { D = 64 };
    int T = S * L, ld = (H + 2 * HK) * D;
    int *cu = malloc(sizeof(int) * (S + 1));
    for (int s = 0; s <= S; s++) cu[s] = s * L;
    tu_rng rng = {11};
    size_t nqkv = (size_t)T * ld, no = (size_t)T * H * D;
    double *qkv = tu_rand(&rng, nqkv, 1.0), *g = tu_rand(&rng, no, 1.0);
    float *qkvf = tu_to_f32(qkv, nqkv), *dqkv = calloc(nqkv, sizeof(float));
    att_args x = {qkvf, qkvf + H * D, qkvf + (H + HK) * D, calloc(no, sizeof(float)),
                  calloc((size_t)T * H, sizeof(float)), dqkv, dqkv + H * D, dqkv + (H + HK) * D,
                  tu_to_f32(g, no),
                  {.cu_seqlens = cu, .num_seqs = S, .total_tokens = T, .max_seqlen = L,
                   .num_heads = H, .num_kv_heads = HK, .head_dim = D, .ldq = ld, .ldk = ld,
                   .ldv = ld, .ldo = H * D, .scale = 0.125f, .causal = causal}};
    /* scores per head: L x L, or the causal L (L + 1) / 2; forward 2 products, backward 5 */
    double pair_flop = 2.0 * D * S * H * (causal ? (double)L * (L + 1) / 2 : (double)L * L);
    double tf = best_of(3, run_att_fwd, &x), tb = best_of(3, run_att_bwd, &x);
    fprintf(stderr, "  attention %-40s fwd %6.1f GFLOP/s %5.1f ms, bwd %6.1f GFLOP/s %5.1f ms\n",
            name, 2 * pair_flop / tf * 1e-9, tf * 1e3, 5 * pair_flop / tb * 1e-9, tb * 1e3);
    int finite = 1;
    for (size_t i = 0; i < no; i++) finite &= isfinite(x.o[i]);
    for (size_t i = 0; i < nqkv; i++) finite &= isfinite(dqkv[i]);
    CHECK(finite);
    free(qkv); free(g); free(qkvf); free(dqkv); free(x.o); free(x.lse); free(x.dout); free(cu);
}

static void bench_attention(void)
{
    bench_attention_shape("vision (8 x 256, 4 heads x 64, bidir)", 8, 256, 4, 4, 0);
    bench_attention_shape("decoder (8 x 194, 8/2 heads x 64, causal)", 8, 194, 8, 2, 1);
}

int main(void)
{
    fprintf(stderr, "CPU op throughput (shared machine: indicative only)\n");
    bench_matmul();
    bench_attention();
    return check_report("ops_perf");
}
