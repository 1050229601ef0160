/* Forward values of the CPU ops against straightforward reference loops in double: the
 * element-wise ops; matmul on every transpose combination through all three paths (the table's,
 * i.e. BLAS when built with it, the blocked fallback, its serial variant) at sizes that cross
 * every blocking edge; attention forward and backward against a naive softmax(QK^T)V with segment
 * and causal masks, and its results on 1 and 2 threads bit for bit;
 * the three rotary kinds against a line-by-line transcription of transformers' formulas; the
 * fused loss against full logits; norms, activations, embedding, scatter, AdamW against torch's
 * update rule, and the clipped global norm. Gradients are test_ops_grad.c's business. */
#include "../check.h"
#include "kernels_cpu.h"
#include "test_ops_util.h"

#include <stdio.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const ops_table *OPS;

static void test_elementwise(void)
{
    size_t lengths[] = {0, 1, 7, 65536, 65537, 200003};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        size_t n = lengths[li];
        float *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
        float *y = malloc((n + 1) * sizeof *y);
        for (size_t i = 0; i < n; i++) { a[i] = (float)i * 0.5f; b[i] = 3.0f - (float)(i % 11); }
        OPS->add_f32(y, a, b, n);
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != a[i] + b[i];
        CHECK_MSG(bad == 0, "add_f32 n=%zu: %d wrong", n, bad);
        OPS->axpy_f32(y, -2.0f, b, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != (a[i] + b[i]) + -2.0f * b[i];
        CHECK_MSG(bad == 0, "axpy_f32 n=%zu: %d wrong", n, bad);
        OPS->fill_f32(y, 0.0f, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != 0.0f;
        CHECK_MSG(bad == 0, "fill_f32 n=%zu: %d wrong", n, bad);
        free(a); free(b); free(y);
    }
}

/* ---- matmul ---------------------------------------------------------------------------------- */
typedef void (*mm_fn)(float *, const float *, const float *, int, int, int, int, int, int, int, int,
                      float, float);

/* returns the worst relative error of the three paths */
static double matmul_case(int m, int n, int k, int ta, int tb, float alpha, float beta, uint64_t seed)
{
    static const char *const names[] = {"table", "blocked", "serial"};
    mm_fn fns[] = {OPS->matmul_f32, cpu_matmul_blocked_f32, cpu_matmul_serial_f32};
    tu_rng rng = {seed};
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
    size_t la = (size_t)(ta ? k : m) * lda, lb = (size_t)(tb ? n : k) * ldb, lc = (size_t)m * ldc;
    double *a = tu_rand(&rng, la, 1.0), *b = tu_rand(&rng, lb, 1.0), *c0 = tu_rand(&rng, lc, 1.0);
    double *ref = tu_dup(c0, lc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++)
                acc += (ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]) *
                       (tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j]);
            ref[(size_t)i * ldc + j] = alpha * acc + (beta == 0 ? 0 : beta * c0[(size_t)i * ldc + j]);
        }
    float *af = tu_to_f32(a, la), *bf = tu_to_f32(b, lb);
    double worst = 0;
    for (int f = 0; f < 3; f++) {
        float *cf = tu_to_f32(c0, lc);
        if (beta == 0) for (size_t i = 0; i < lc; i++) cf[i] = NAN;  /* beta 0 must ignore C */
        for (int i = 0; i < m; i++)  /* padding columns must survive untouched */
            for (int j = n; j < ldc; j++) cf[(size_t)i * ldc + j] = (float)ref[(size_t)i * ldc + j];
        fns[f](cf, af, bf, m, n, k, ta, tb, lda, ldb, ldc, alpha, beta);
        double e = tu_rel_err_f32(cf, ref, lc, 1.0);
        CHECK_MSG(e < 2e-6, "matmul %s %dx%dx%d ta=%d tb=%d beta=%g: rel err %.3g", names[f], m, n, k,
                  ta, tb, beta, e);
        worst = e > worst ? e : worst;
        free(cf);
    }
    free(a); free(b); free(c0); free(ref); free(af); free(bf);
    return worst;
}

static void test_matmul(void)
{
    /* 1 x 1 x 1; below the BLAS threshold; crossing MR/NR edges; crossing MC (72), NC (256) and
     * KC (256) with ragged remainders; a wide short one (a single row block: sliver split) */
    static const int shapes[][3] = {{1, 1, 1}, {5, 7, 9}, {13, 33, 17}, {150, 270, 300},
                                    {3, 300, 70}, {20, 700, 40}, {80, 17, 513}};
    int cases = 0;
    double worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            float beta = (t == 0) ? 0.0f : (t == 1 ? 1.0f : -0.5f);
            double e = matmul_case(shapes[s][0], shapes[s][1], shapes[s][2], t & 1, t >> 1, 0.75f,
                                   beta, 1000 + 10 * s + t);
            worst = e > worst ? e : worst;
            cases++;
        }
    fprintf(stderr, "  matmul: %d cases x 3 paths (table%s, blocked, serial): worst %.2e (tol 2e-6)\n",
            cases, ADAPT_HAVE_BLAS ? " = OpenBLAS" : " = blocked", worst);
}

static void test_bias(void)
{
    enum { R = 9, N = 300, LD = 301 };
    tu_rng rng = {5};
    double *y = tu_rand(&rng, R * LD, 1.0), *bias = tu_rand(&rng, N, 1.0), *db = tu_rand(&rng, N, 1.0);
    float *yf = tu_to_f32(y, R * LD), *bf = tu_to_f32(bias, N), *dbf = tu_to_f32(db, N);
    OPS->bias_add_f32(yf, bf, R, N, LD);
    OPS->bias_backward_f32(dbf, yf, R, N, LD);
    double worst = 0;
    for (int j = 0; j < N; j++) {
        double col = 0;
        for (int r = 0; r < R; r++) {
            double want = y[r * LD + j] + bias[j];
            worst = fmax(worst, fabs(yf[r * LD + j] - want));
            col += want;
        }
        worst = fmax(worst, fabs(dbf[j] - (db[j] + col)));
    }
    CHECK_MSG(worst < 1e-5, "bias add / backward: %.3g", worst);
    free(y); free(bias); free(db); free(yf); free(bf); free(dbf);
}

/* ---- attention ------------------------------------------------------------------------------- */
/* softmax(scale q k^T + mask) v one query row at a time, in double: the definition, with the
 * whole row of scores materialised */
static void attention_naive(double *o, double *lse, const double *q, const double *k, const double *v,
                            const ops_attn *a)
{
    int D = a->head_dim, group = a->num_heads / a->num_kv_heads;
    double *sc = malloc(sizeof(double) * (a->max_seqlen + 1));
    for (int s = 0; s < a->num_seqs; s++) {
        int t0 = a->cu_seqlens[s], t1 = a->cu_seqlens[s + 1];
        for (int h = 0; h < a->num_heads; h++)
            for (int i = t0; i < t1; i++) {
                int kv = h / group, last = a->causal ? i : t1 - 1;
                double mx = -INFINITY, sum = 0;
                for (int j = t0; j <= last; j++) {
                    double d = 0;
                    for (int x = 0; x < D; x++)
                        d += q[(size_t)i * a->ldq + h * D + x] * k[(size_t)j * a->ldk + kv * D + x];
                    sc[j - t0] = d * a->scale;
                    mx = fmax(mx, sc[j - t0]);
                }
                for (int j = t0; j <= last; j++) sum += exp(sc[j - t0] - mx);
                for (int x = 0; x < D; x++) {
                    double acc = 0;
                    for (int j = t0; j <= last; j++)
                        acc += exp(sc[j - t0] - mx) / sum * v[(size_t)j * a->ldv + kv * D + x];
                    o[(size_t)i * a->ldo + h * D + x] = acc;
                }
                lse[(size_t)i * a->num_heads + h] = mx + log(sum);
            }
    }
    free(sc);
}

static void attention_case(const char *name, const int *lens, int nseq, int H, int HK, int D,
                           int causal, uint64_t seed)
{
    tu_rng rng = {seed};
    int cu[16] = {0}, maxlen = 0;
    for (int s = 0; s < nseq; s++) {
        cu[s + 1] = cu[s] + lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    }
    int T = cu[nseq];
    /* q, k, v as slices of one fused qkv row, as the vision tower's single projection gives */
    int ld = (H + 2 * HK) * D;
    ops_attn a = {.cu_seqlens = cu, .num_seqs = nseq, .total_tokens = T, .max_seqlen = maxlen,
                  .num_heads = H, .num_kv_heads = HK, .head_dim = D, .ldq = ld, .ldk = ld,
                  .ldv = ld, .ldo = H * D, .scale = 1.0f / sqrtf((float)D), .causal = causal};
    double *qkv = tu_rand(&rng, (size_t)T * ld, 2.0);
    double *o = tu_zeros((size_t)T * H * D), *lse = tu_zeros((size_t)T * H);
    attention_naive(o, lse, qkv, qkv + H * D, qkv + (H + HK) * D, &a);
    float *qf = tu_to_f32(qkv, (size_t)T * ld);
    float *of = calloc((size_t)T * H * D + 1, sizeof(float)), *lf = calloc((size_t)T * H + 1, sizeof(float));
    OPS->attention_forward_f32(of, lf, qf, qf + H * D, qf + (H + HK) * D, &a);
    double eo = tu_rel_err_f32(of, o, (size_t)T * H * D, 1.0);
    double el = tu_rel_err_f32(lf, lse, (size_t)T * H, 1.0);
    CHECK_MSG(eo < 2e-6 && el < 2e-6, "%s: out err %.3g, lse err %.3g", name, eo, el);
    fprintf(stderr, "  %-44s out %.2e  lse %.2e (tol 2e-6)\n", name, eo, el);
    free(qkv); free(o); free(lse); free(qf); free(of); free(lf);
}

static void test_attention(void)
{
    static const int lm[] = {1, 64, 65, 0, 130, 7};
    static const int vis[] = {64, 16, 100};
    static const int single[] = {200};
    attention_case("attention causal GQA 8/2 d64, 6 segs", lm, 6, 8, 2, 64, 1, 11);
    attention_case("attention bidirectional 4/4 d80 (vision)", vis, 3, 4, 4, 80, 0, 12);
    attention_case("attention causal MQA 3/1 d5 (odd), one seg", single, 1, 3, 1, 5, 1, 13);
    attention_case("attention causal d256 (max), 2 segs", vis, 2, 2, 1, 256, 1, 14);
}

/* ---- attention backward, and thread-count independence ----------------------------------------
 * test_ops_grad checks attention's gradients by finite differences, on head dims small enough for
 * thousands of passes; here the float forward + backward at the model's head dims goes against
 * the definition in double, on segment lengths on both sides of every tile edge (the tiles are
 * 64 up to head_dim 64, 48 at 80, 32 at 128, 16 at 256), both masks and GQA groups 1, 2, 4, and
 * runs on 1 and 2 threads must agree bit for bit (one owner per output row). */
static void attention_backward_naive(double *dq, double *dk, double *dv, const double *dout,
                                     const double *q, const double *k, const double *v,
                                     const ops_attn *a)
{
    int D = a->head_dim, group = a->num_heads / a->num_kv_heads;
    double *p = malloc(sizeof(double) * (a->max_seqlen + 1)), *dp = malloc(sizeof(double) * (a->max_seqlen + 1));
    for (int s = 0; s < a->num_seqs; s++) {
        int t0 = a->cu_seqlens[s], t1 = a->cu_seqlens[s + 1];
        for (int h = 0; h < a->num_heads; h++)
            for (int i = t0; i < t1; i++) {
                int kv = h / group, last = a->causal ? i : t1 - 1;
                const double *qi = q + (size_t)i * a->ldq + h * D, *gi = dout + (size_t)i * a->ldo + h * D;
                double mx = -INFINITY, sum = 0, rowdot = 0;
                for (int j = t0; j <= last; j++) {
                    const double *kj = k + (size_t)j * a->ldk + kv * D, *vj = v + (size_t)j * a->ldv + kv * D;
                    double d = 0, e = 0;
                    for (int x = 0; x < D; x++) { d += qi[x] * kj[x]; e += gi[x] * vj[x]; }
                    p[j - t0] = d * a->scale;
                    dp[j - t0] = e;
                    mx = fmax(mx, p[j - t0]);
                }
                for (int j = t0; j <= last; j++) sum += exp(p[j - t0] - mx);
                for (int j = t0; j <= last; j++) {
                    p[j - t0] = exp(p[j - t0] - mx) / sum;
                    rowdot += p[j - t0] * dp[j - t0];
                }
                for (int j = t0; j <= last; j++) {
                    double ds = p[j - t0] * (dp[j - t0] - rowdot) * a->scale;
                    const double *kj = k + (size_t)j * a->ldk + kv * D;
                    double *dkj = dk + (size_t)j * a->ldk + kv * D, *dvj = dv + (size_t)j * a->ldv + kv * D;
                    for (int x = 0; x < D; x++) {
                        dq[(size_t)i * a->ldq + h * D + x] += ds * kj[x];
                        dkj[x] += ds * qi[x];
                        dvj[x] += p[j - t0] * gi[x];
                    }
                }
            }
    }
    free(p); free(dp);
}

/* forward + backward in float on `threads` threads; d [T, ld] receives dq | dk | dv */
static void attention_f32_run(float *o, float *lse, float *d, const float *qkv, const float *g,
                              const ops_attn *a, int threads)
{
    int H = a->num_heads, HK = a->num_kv_heads, D = a->head_dim;
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    OPS->attention_forward_f32(o, lse, qkv, qkv + H * D, qkv + (H + HK) * D, a);
    OPS->attention_backward_f32(d, d + H * D, d + (H + HK) * D, g, qkv, qkv + H * D,
                                qkv + (H + HK) * D, o, lse, a);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}

static void attention_backward_case(const char *name, const int *lens, int nseq, int H, int HK,
                                    int D, int causal, uint64_t seed)
{
    tu_rng rng = {seed};
    int cu[16] = {0}, maxlen = 0;
    for (int s = 0; s < nseq; s++) {
        cu[s + 1] = cu[s] + lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    }
    int T = cu[nseq], ld = (H + 2 * HK) * D;
    ops_attn a = {.cu_seqlens = cu, .num_seqs = nseq, .total_tokens = T, .max_seqlen = maxlen,
                  .num_heads = H, .num_kv_heads = HK, .head_dim = D, .ldq = ld, .ldk = ld,
                  .ldv = ld, .ldo = H * D, .scale = 1.0f / sqrtf((float)D), .causal = causal};
    size_t nqkv = (size_t)T * ld, no = (size_t)T * H * D;
    double *qkv = tu_rand(&rng, nqkv, 2.0), *g = tu_rand(&rng, no, 1.0);
    /* dq, dk, dv accumulate: start from a non-zero gradient, as a fused qkv's would be */
    double *d = tu_rand(&rng, nqkv, 0.5), *d0 = tu_dup(d, nqkv);
    attention_backward_naive(d, d + H * D, d + (H + HK) * D, g, qkv, qkv + H * D,
                             qkv + (H + HK) * D, &a);
    float *qf = tu_to_f32(qkv, nqkv), *gf = tu_to_f32(g, no);
    float *o1 = calloc(no, sizeof(float)), *l1 = calloc((size_t)T * H, sizeof(float));
    float *o2 = calloc(no, sizeof(float)), *l2 = calloc((size_t)T * H, sizeof(float));
    float *d1 = tu_to_f32(d0, nqkv), *d2 = tu_to_f32(d0, nqkv);
    attention_f32_run(o1, l1, d1, qf, gf, &a, 1);
    attention_f32_run(o2, l2, d2, qf, gf, &a, 2);
    double *o = tu_zeros(no), *lse = tu_zeros((size_t)T * H);
    attention_naive(o, lse, qkv, qkv + H * D, qkv + (H + HK) * D, &a);
    double eo = tu_rel_err_f32(o1, o, no, 1.0), ed = tu_rel_err_f32(d1, d, nqkv, 1.0);
    int same = !memcmp(o1, o2, no * sizeof(float)) && !memcmp(l1, l2, (size_t)T * H * sizeof(float)) &&
               !memcmp(d1, d2, nqkv * sizeof(float));
    CHECK_MSG(eo < 2e-6 && ed < 2e-6, "%s: out err %.3g, dq|dk|dv err %.3g", name, eo, ed);
    CHECK_MSG(same, "%s: 1 and 2 threads differ", name);
    fprintf(stderr, "  %-44s out %.2e grad %.2e (tol 2e-6), 1 vs 2 threads %s\n", name, eo, ed,
            same ? "identical" : "DIFFER");
    free(qkv); free(g); free(d); free(d0); free(o); free(lse); free(qf); free(gf);
    free(o1); free(l1); free(o2); free(l2); free(d1); free(d2);
}

static void test_attention_backward(void)
{
    static const int edges[] = {1, 63, 65, 127, 129, 194, 256, 300};
    static const int vis[] = {256, 63, 129, 300};
    attention_backward_case("attention bwd causal GQA 8/2 d64, 8 segs", edges, 8, 8, 2, 64, 1, 21);
    attention_backward_case("attention bwd bidir 4/4 d64 (vision), 8 segs", edges, 8, 4, 4, 64, 0, 22);
    attention_backward_case("attention bwd causal GQA 4/2 d80, 4 segs", vis, 4, 4, 2, 80, 1, 23);
    attention_backward_case("attention bwd bidir 2/2 d16, 8 segs", edges, 8, 2, 2, 16, 0, 24);
    attention_backward_case("attention bwd causal MQA 2/1 d128, 4 segs", vis, 4, 2, 1, 128, 1, 25);
    attention_backward_case("attention bwd bidir 2/1 d256, 4 segs", vis, 4, 2, 1, 256, 0, 26);
    attention_backward_case("attention bwd causal MQA 8/1 d32, 4 segs", vis, 4, 8, 1, 32, 1, 27);
}

/* ---- rotary embeddings: transformers transcribed ---------------------------------------------- */
/* The angle as transformers forms it, in float32: inv_freq = 1.0 / (base ** (arange(0, dim, 2) /
 * dim)), then freqs = position * inv_freq (one float product); only cos/sin are then exact. */
static double tf_angle(float base, int two_j, int dim, int position)
{
    float inv = 1.0f / powf(base, (float)two_j / (float)dim);
    return (double)((float)position * inv);
}

/* q * cos + rotate_half(q) * sin with per-token cos/sin rows [T, D] built by the caller */
static void rope_reference(double *y, const double *x, const double *cosv, const double *sinv, int T,
                           int H, int D)
{
    int half = D / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const double *xr = x + ((size_t)t * H + h) * D;
            double *yr = y + ((size_t)t * H + h) * D;
            for (int j = 0; j < D; j++) {
                double rot = j < half ? -xr[j + half] : xr[j - half];  /* rotate_half */
                yr[j] = xr[j] * cosv[(size_t)t * D + j] + rot * sinv[(size_t)t * D + j];
            }
        }
}

static void rope_check(const char *name, const ops_rope *rope, const int *pos, const double *cosv,
                       const double *sinv, int T, int H, double tol, uint64_t seed)
{
    tu_rng rng = {seed};
    int D = rope->head_dim;
    size_t n = (size_t)T * H * D;
    double *x = tu_rand(&rng, n, 1.0), *y = tu_zeros(n);
    rope_reference(y, x, cosv, sinv, T, H, D);
    float *xf = tu_to_f32(x, n);
    OPS->rope_forward_f32(xf, pos, T, H, H * D, rope);
    double e = tu_rel_err_f32(xf, y, n, 1.0);
    CHECK_MSG(e < tol, "%s: err %.3g", name, e);
    fprintf(stderr, "  %-44s %.2e (tol %.0e)\n", name, e, tol);
    free(x); free(y); free(xf);
}

/* Qwen2VLRotaryEmbedding + apply_multimodal_rotary_pos_emb: inv_freq over head_dim, one freqs row
 * per component, emb = cat(freqs, freqs), then the last axis split by mrope_section * 2 and chunk
 * i taken from component i % 3 */
static void test_mrope(void)
{
    enum { T = 37, H = 3, D = 32 };
    ops_rope rope = {OPS_ROPE_MROPE, D, 1e6f, {4, 6, 6}};
    tu_rng rng = {21};
    int pos[3 * T];
    for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&rng, 300);
    double cos3[3][T][D], sin3[3][T][D], cosv[T * D], sinv[T * D];
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < T; t++)
            for (int j = 0; j < D; j++) {
                double ang = tf_angle(1e6f, 2 * (j % (D / 2)), D, pos[c * T + t]);
                cos3[c][t][j] = cos(ang);
                sin3[c][t][j] = sin(ang);
            }
    int sections[6] = {4, 6, 6, 4, 6, 6}, start = 0;
    for (int i = 0; i < 6; i++) {
        for (int j = start; j < start + sections[i]; j++)
            for (int t = 0; t < T; t++) {
                cosv[t * D + j] = cos3[i % 3][t][j];
                sinv[t * D + j] = sin3[i % 3][t][j];
            }
        start += sections[i];
    }
    rope_check("M-RoPE [4,6,6] vs transformers", &rope, pos, cosv, sinv, T, H, 1e-6, 22);

    /* text-only tokens have t = h = w: M-RoPE must then equal 1-D RoPE */
    ops_rope one = {OPS_ROPE_1D, D, 1e6f, {0, 0, 0}};
    for (int t = 0; t < T; t++) pos[T + t] = pos[2 * T + t] = pos[t];
    double *x = tu_rand(&rng, T * H * D, 1.0);
    float *a = tu_to_f32(x, T * H * D), *b = tu_to_f32(x, T * H * D);
    OPS->rope_forward_f32(a, pos, T, H, H * D, &rope);
    OPS->rope_forward_f32(b, pos, T, H, H * D, &one);
    CHECK_MSG(memcmp(a, b, sizeof(float) * T * H * D) == 0, "M-RoPE with t=h=w differs from 1-D");
    free(x); free(a); free(b);
}

/* Qwen2VisionTransformer.rot_pos_emb for one image of grid (1, gh, gw) with spatial merge 2:
 * position ids in 2x2-merge-major order, VisionRotaryEmbedding(head_dim / 2) frequencies,
 * rotary_pos_emb = cat(freqs[h], freqs[w]), emb = cat(rotary_pos_emb, rotary_pos_emb) */
static void test_vision_rope(void)
{
    enum { GH = 6, GW = 4, T = GH * GW, H = 2, D = 16, Q = D / 4 };
    ops_rope rope = {OPS_ROPE_VISION_2D, D, 1e4f, {0, 0, 0}};
    int pos[2 * T], n = 0;
    for (int bh = 0; bh < GH / 2; bh++)
        for (int bw = 0; bw < GW / 2; bw++)
            for (int ih = 0; ih < 2; ih++)
                for (int iw = 0; iw < 2; iw++, n++) {
                    pos[n] = 2 * bh + ih;
                    pos[T + n] = 2 * bw + iw;
                }
    double cosv[T * D], sinv[T * D];
    for (int t = 0; t < T; t++) {
        double rpe[D / 2];
        for (int j = 0; j < Q; j++) {
            rpe[j] = tf_angle(1e4f, 2 * j, D / 2, pos[t]);
            rpe[Q + j] = tf_angle(1e4f, 2 * j, D / 2, pos[T + t]);
        }
        for (int j = 0; j < D; j++) {
            cosv[t * D + j] = cos(rpe[j % (D / 2)]);
            sinv[t * D + j] = sin(rpe[j % (D / 2)]);
        }
    }
    rope_check("vision 2-D rope vs rot_pos_emb (6x4 grid)", &rope, pos, cosv, sinv, T, H, 1e-6, 31);
}

/* The position table (rope_cpu.c: cos/sin once per distinct position value when the values fit
 * in [0, T)) gives the very bits of the per-token path: the same rows, each turned alone (T = 1,
 * so every position but 0 is past the table's range), must match bit for bit, forward and back. */
static void test_rope_table(void)
{
    enum { T = 64, H = 3, D = 32 };
    ops_rope rope = {OPS_ROPE_MROPE, D, 1e6f, {4, 6, 6}};
    tu_rng rng = {51};
    int pos[3 * T];
    for (int i = 0; i < 3 * T; i++) pos[i] = tu_int(&rng, T);
    double *x = tu_rand(&rng, T * H * D, 1.0);
    float *a = tu_to_f32(x, T * H * D), *b = tu_to_f32(x, T * H * D);
    for (int dir = 0; dir < 2; dir++) {
        if (dir) OPS->rope_backward_f32(a, pos, T, H, H * D, &rope);
        else OPS->rope_forward_f32(a, pos, T, H, H * D, &rope);
        for (int t = 0; t < T; t++) {
            int p1[3] = {pos[t], pos[T + t], pos[2 * T + t]};
            if (dir) OPS->rope_backward_f32(b + (size_t)t * H * D, p1, 1, H, H * D, &rope);
            else OPS->rope_forward_f32(b + (size_t)t * H * D, p1, 1, H, H * D, &rope);
        }
        CHECK_MSG(memcmp(a, b, sizeof(float) * T * H * D) == 0,
                  "rope %s: the position table's bits differ from the per-token path",
                  dir ? "backward" : "forward");
    }
    free(x); free(a); free(b);
}

static void test_rope_1d(void)
{
    enum { T = 50, H = 2, D = 8 };
    ops_rope rope = {OPS_ROPE_1D, D, 1e4f, {0, 0, 0}};
    int pos[T];
    double cosv[T * D], sinv[T * D];
    for (int t = 0; t < T; t++) {
        pos[t] = 3 * t + 1;
        for (int j = 0; j < D; j++) {
            double ang = tf_angle(1e4f, 2 * (j % (D / 2)), D, pos[t]);
            cosv[t * D + j] = cos(ang);
            sinv[t * D + j] = sin(ang);
        }
    }
    rope_check("1-D rope vs Qwen2 apply_rotary_pos_emb", &rope, pos, cosv, sinv, T, H, 1e-6, 41);
}

/* ---- fused loss against full logits ---------------------------------------------------------- */
static void test_xent_forward(void)
{
    enum { T = 100, D = 24, V = 301 };
    tu_rng rng = {51};
    double *h = tu_rand(&rng, T * D, 1.0), *w = tu_rand(&rng, V * D, 1.0);
    int labels[T], count = 0;
    for (int t = 0; t < T; t++) {
        labels[t] = t % 3 == 0 ? OPS_LABEL_IGNORE : tu_int(&rng, V);
        count += labels[t] != OPS_LABEL_IGNORE;
    }
    double total = 0;
    for (int t = 0; t < T; t++) {
        if (labels[t] == OPS_LABEL_IGNORE) continue;
        double logit[V], mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) {
            logit[v] = 0;
            for (int j = 0; j < D; j++) logit[v] += h[t * D + j] * w[v * D + j];
            mx = fmax(mx, logit[v]);
        }
        for (int v = 0; v < V; v++) sum += exp(logit[v] - mx);
        total += mx + log(sum) - logit[labels[t]];
    }
    double want = total / (count + 3);
    float *hf = tu_to_f32(h, T * D), *wf = tu_to_f32(w, V * D);
    size_t lens[] = {64 * (2 * D + 3 + V), 64 * (2 * D + 3 + 50), 2 * D + 4};
    for (int i = 0; i < 3; i++) {
        float *work = calloc(lens[i], sizeof(float)), loss = 0;
        OPS->lmhead_xent_f32(&loss, NULL, NULL, hf, wf, labels, T, D, V, (float)(count + 3), work, lens[i]);
        double e = fabs(loss - want) / want;
        CHECK_MSG(e < 1e-6, "xent work %zu: loss %.9g want %.9g", lens[i], loss, want);
        fprintf(stderr, "  xent forward, work %-6zu (%s) rel err %.2e (tol 1e-6)\n", lens[i],
                i == 0 ? "whole vocab" : (i == 1 ? "vocab chunks" : "1 x 1 tiles"), e);
        free(work);
    }
    free(h); free(w); free(hf); free(wf);
}

/* ---- norms, activations, embedding ----------------------------------------------------------- */
static void test_norms_forward(void)
{
    enum { T = 7, D = 300 };
    tu_rng rng = {61};
    double *x = tu_rand(&rng, T * D, 3.0), *w = tu_rand(&rng, D, 1.0), *b = tu_rand(&rng, D, 1.0);
    double *res = tu_rand(&rng, T * D, 1.0), *yl = tu_zeros(T * D), *yr = tu_zeros(T * D);
    for (int t = 0; t < T; t++) {
        double mu = 0, var = 0, ss = 0;
        for (int j = 0; j < D; j++) mu += x[t * D + j] / D;
        for (int j = 0; j < D; j++) var += (x[t * D + j] - mu) * (x[t * D + j] - mu) / D;
        for (int j = 0; j < D; j++) {
            yl[t * D + j] = (x[t * D + j] - mu) / sqrt(var + 1e-6) * w[j] + b[j];
            double u = x[t * D + j] + res[t * D + j];
            ss += u * u / D;
        }
        for (int j = 0; j < D; j++) yr[t * D + j] = (x[t * D + j] + res[t * D + j]) / sqrt(ss + 1e-6) * w[j];
    }
    float *xf = tu_to_f32(x, T * D), *wf = tu_to_f32(w, D), *bf = tu_to_f32(b, D);
    float *rf = tu_to_f32(res, T * D), *y = calloc(T * D, sizeof(float));
    float mean[T], rstd[T];
    OPS->layernorm_forward_f32(y, mean, rstd, xf, wf, bf, T, D, 1e-6f);
    double el = tu_rel_err_f32(y, yl, T * D, 1.0);
    OPS->rmsnorm_forward_f32(y, rstd, rf, xf, wf, T, D, 1e-6f);
    double er = tu_rel_err_f32(y, yr, T * D, 1.0);
    CHECK_MSG(el < 1e-6 && er < 1e-6, "layernorm %.3g, rmsnorm+residual %.3g", el, er);
    fprintf(stderr, "  layernorm %.2e, rmsnorm+residual %.2e (tol 1e-6)\n", el, er);
    free(x); free(w); free(b); free(res); free(yl); free(yr);
    free(xf); free(wf); free(bf); free(rf); free(y);
}

/* The norms' backward sums dw / db over rows in fixed chunks whose partials are added in chunk
 * order (norm_cpu.c): the bits must not depend on how many threads share the chunks. */
static void test_norms_backward_threads(void)
{
#ifdef _OPENMP
    enum { T = 301, D = 256 };  /* T * D over the ops' parallel threshold; T not a chunk multiple */
    tu_rng rng = {91};
    double *x64 = tu_rand(&rng, (size_t)T * D, 2.0), *dy64 = tu_rand(&rng, (size_t)T * D, 1.0);
    double *w64 = tu_rand(&rng, D, 1.0);
    float *x = tu_to_f32(x64, (size_t)T * D), *dy = tu_to_f32(dy64, (size_t)T * D);
    float *w = tu_to_f32(w64, D), *y = calloc((size_t)T * D, sizeof(float));
    float mean[T], rstd[T];
    OPS->layernorm_forward_f32(y, mean, rstd, x, w, w, T, D, 1e-6f);
    float *out[2][3];
    int threads[2] = {1, 3}, saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 3; i++) out[k][i] = calloc(i ? D : (size_t)T * D, sizeof(float));
        omp_set_num_threads(threads[k]);
        OPS->layernorm_backward_f32(out[k][0], out[k][1], out[k][2], dy, x, w, mean, rstd, T, D);
        OPS->rmsnorm_backward_f32(out[k][0], out[k][1], dy, x, w, rstd, T, D);
    }
    omp_set_num_threads(saved);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(memcmp(out[0][i], out[1][i], sizeof(float) * (i ? D : (size_t)T * D)) == 0,
                  "norm backward %s: 1 and 3 threads differ", i == 0 ? "dx" : i == 1 ? "dw" : "db");
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 3; i++) free(out[k][i]);
    free(x64); free(dy64); free(w64); free(x); free(dy); free(w); free(y);
#endif
}

static void test_activations_forward(void)
{
    enum { N = 2001 };
    tu_rng rng = {71};
    double *x = tu_rand(&rng, 2 * N, 12.0);  /* wide range: saturated sigmoid tails included */
    double *ys = tu_zeros(N), *yq = tu_zeros(N), *yg = tu_zeros(N);
    for (int i = 0; i < N; i++) {
        double g = x[i], u = x[N + i];
        ys[i] = g / (1 + exp(-g)) * u;
        yq[i] = g / (1 + exp(-1.702 * g));
        yg[i] = 0.5 * g * (1 + erf(g / sqrt(2.0)));
    }
    float *xf = tu_to_f32(x, 2 * N), *y = calloc(N, sizeof(float));
    OPS->swiglu_forward_f32(y, xf, xf + N, 1, N, 2 * N);
    double es = tu_rel_err_f32(y, ys, N, 1.0);
    OPS->quickgelu_forward_f32(y, xf, N);
    double eq = tu_rel_err_f32(y, yq, N, 1.0);
    OPS->gelu_forward_f32(y, xf, N);
    double eg = tu_rel_err_f32(y, yg, N, 1.0);
    CHECK_MSG(es < 1e-6 && eq < 1e-6 && eg < 1e-6, "swiglu %.3g quickgelu %.3g gelu %.3g", es, eq, eg);
    fprintf(stderr, "  swiglu %.2e, quickgelu %.2e, gelu %.2e (tol 1e-6)\n", es, eq, eg);
    free(x); free(ys); free(yq); free(yg); free(xf); free(y);
}

static void test_embedding_forward(void)
{
    enum { T = 12, D = 5, V = 9 };
    float w[V * D], y[T * D], feat[3 * D];
    int ids[T], pos[3] = {2, 3, 10};
    for (int i = 0; i < V * D; i++) w[i] = (float)i;
    for (int i = 0; i < 3 * D; i++) feat[i] = -1.0f - (float)i;
    for (int t = 0; t < T; t++) ids[t] = (t * 5) % V;
    OPS->embedding_forward_f32(y, w, ids, T, D);
    OPS->scatter_rows_forward_f32(y, feat, pos, 3, D);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        int k = t == 2 ? 0 : (t == 3 ? 1 : (t == 10 ? 2 : -1));
        for (int j = 0; j < D; j++)
            bad += y[t * D + j] != (k >= 0 ? feat[k * D + j] : w[ids[t] * D + j]);
    }
    CHECK_MSG(bad == 0, "embedding + image scatter: %d wrong", bad);
}

/* ---- optimizer ------------------------------------------------------------------------------- */
static void test_optimizer(void)
{
    enum { N = 1000, STEPS = 3 };
    tu_rng rng = {81};
    double *p = tu_rand(&rng, N, 1.0), *m = tu_zeros(N), *v = tu_zeros(N);
    float *pf = tu_to_f32(p, N), *mf = calloc(N, sizeof(float)), *vf = calloc(N, sizeof(float));
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, clip = 0.5;
    for (int step = 1; step <= STEPS; step++) {
        double *g = tu_rand(&rng, N, 1.0), *g2 = tu_rand(&rng, 7, 1.0);
        float *gf = tu_to_f32(g, N), *g2f = tu_to_f32(g2, 7);
        const float *tensors[2] = {gf, g2f};
        size_t lens[2] = {N, 7};
        float norm, scale;
        OPS->grad_norm_f32(&norm, &scale, tensors, lens, 2, (float)clip);
        double ss = 0;
        for (int i = 0; i < N; i++) ss += g[i] * g[i];
        for (int i = 0; i < 7; i++) ss += g2[i] * g2[i];
        double want_norm = sqrt(ss), want_scale = fmin(1.0, clip / (want_norm + 1e-6));
        CHECK_MSG(fabs(norm - want_norm) < 1e-5 * want_norm && fabs(scale - want_scale) < 1e-6,
                  "grad norm %g (want %g), scale %g (want %g)", norm, want_norm, scale, want_scale);
        /* torch.optim.AdamW, single-tensor path */
        for (int i = 0; i < N; i++) {
            double gi = g[i] * want_scale;
            p[i] *= 1 - lr * wd;
            m[i] += (1 - b1) * (gi - m[i]);
            v[i] = v[i] * b2 + (1 - b2) * gi * gi;
            double denom = sqrt(v[i]) / sqrt(1 - pow(b2, step)) + eps;
            p[i] -= lr / (1 - pow(b1, step)) * m[i] / denom;
        }
        OPS->adamw_step_f32(pf, mf, vf, gf, &scale, N, lr, b1, b2, eps, wd, step);
        free(g); free(g2); free(gf); free(g2f);
    }
    double ep = tu_rel_err_f32(pf, p, N, 1.0), em = tu_rel_err_f32(mf, m, N, 1e-3);
    double ev = tu_rel_err_f32(vf, v, N, 1e-6);
    CHECK_MSG(ep < 1e-6 && em < 1e-5 && ev < 1e-5, "adamw: p %.3g m %.3g v %.3g", ep, em, ev);
    fprintf(stderr, "  adamw 3 steps with clip: p %.2e m %.2e v %.2e\n", ep, em, ev);

    float norm = 0, scale = 0, big = 3.0f;
    const float *one[1] = {&big};
    size_t len1 = 1;
    OPS->grad_norm_f32(&norm, &scale, one, &len1, 1, 0.0f);
    CHECK_MSG(norm == 3.0f && scale == 1.0f, "no clipping when max_norm <= 0: %g %g", norm, scale);
    free(p); free(m); free(v); free(pf); free(mf); free(vf);
}

int main(void)
{
    OPS = ops_cpu();
    CHECK(strcmp(OPS->backend, "cpu") == 0);
    fprintf(stderr, "forward values against reference loops (errors relative to each tensor's max)\n");
    test_elementwise();
    test_matmul();
    test_bias();
    test_attention();
    test_attention_backward();
    test_mrope();
    test_vision_rope();
    test_rope_1d();
    test_rope_table();
    test_xent_forward();
    test_norms_forward();
    test_norms_backward_threads();
    test_activations_forward();
    test_embedding_forward();
    test_optimizer();
    return check_report("ops_cpu");
}
