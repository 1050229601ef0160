/* rope_cpu: rotary position embedding, in place, for the three kinds Qwen2-VL uses: 1-D (text),
 * the vision tower's 2-D (h, w) and the decoder's M-RoPE (t, h, w).
 *
 * Design: all three are one rotation. Band j of a head (the pair x[j], x[j + head_dim/2], the
 * rotate_half convention) turns by pos[sel_j][t] * inv_freq_j; the kinds differ only in which
 * position component sel_j a band reads and in its inverse frequency. So a kind is reduced to a
 * per-band (component, inv_freq) table once per call, cos/sin are computed once per token (not
 * per head), and backward is the same code turning the other way. In the float build the angle
 * is formed in float exactly as transformers forms it (inv_freq = 1 / theta^(2j/dim) in float,
 * then one float product), so positions in the thousands round the same way.
 *
 * An angle depends only on (position value, band), and a batch has far fewer distinct position
 * values than tokens (the vision tower's (h, w) ids run to the grid side, the decoder's restart
 * with every sequence): when the values fit a table no longer than T, cos/sin are computed once
 * per (value, band) and every token gathers its bands from the table, the very values the
 * per-token computation gives (same angle, same libm call), so the table changes no bit. The
 * rotation itself runs in a CPU_VEC_CLONES helper (AVX2+FMA where the machine has it). */
#include "kernels_cpu.h"

#include <assert.h>
#include <stdlib.h>

enum { ROPE_MAX_BANDS = OPS_ATTN_MAX_HEAD_DIM / 2 };

/* Band table: comp[j] is the position component band j reads, inv[j] its inverse frequency. */
static void rope_bands(const ops_rope *rope, int *comp, real *inv)
{
    int half = rope->head_dim / 2;
    for (int j = 0; j < half; j++) {
        int dim = rope->head_dim, idx = j;
        comp[j] = 0;
        if (rope->kind == OPS_ROPE_VISION_2D) {
            /* VisionRotaryEmbedding(head_dim/2): head_dim/4 frequencies, first for h then for w */
            dim = half;
            comp[j] = j < half / 2 ? 0 : 1;
            idx = j % (half / 2);
        } else if (rope->kind == OPS_ROPE_MROPE) {
            int s0 = rope->mrope_section[0], s1 = rope->mrope_section[1];
            comp[j] = j < s0 ? 0 : (j < s0 + s1 ? 1 : 2);
        }
        real e = (real)(2 * idx) / (real)dim;
#ifdef ADAPT_CPU_F64
        inv[j] = 1.0 / pow((double)rope->theta, e);
#else
        inv[j] = 1.0f / powf(rope->theta, e);
#endif
    }
}

/* cos and sin of band j at angle pos * inv[j]: the one place angles are formed (table or not) */
static inline void rope_cs(real *c, real *s, int pos, real inv)
{
    real ang = (real)pos * inv;
    *c = cos(ang);
    *s = sin(ang);
}

/* Rotate the n_heads heads of one token's row by its bands' (c, s); s already carries the
 * direction's sign. */
CPU_VEC_CLONES
static void rope_row(real *x, const real *c, const real *s, int n_heads, int head_dim, int half)
{
    for (int h = 0; h < n_heads; h++) {
        real *x1 = x + (size_t)h * head_dim, *x2 = x1 + half;
        for (int j = 0; j < half; j++) {
            real a = x1[j], b = x2[j];
            x1[j] = a * c[j] - b * s[j];
            x2[j] = b * c[j] + a * s[j];
        }
    }
}

/* Rotate every head of every token by +angle (dir = 1, forward) or -angle (dir = -1, backward). */
static void rope_apply(real *x, const int *pos, int T, int n_heads, int ldx, const ops_rope *rope,
                       real dir)
{
    int half = rope->head_dim / 2;
    assert(rope->head_dim % 2 == 0 && half <= ROPE_MAX_BANDS);
    assert(rope->kind != OPS_ROPE_VISION_2D || half % 2 == 0);
    assert(rope->kind != OPS_ROPE_MROPE || rope->mrope_section[0] + rope->mrope_section[1] +
                                               rope->mrope_section[2] == half);
    int comp[ROPE_MAX_BANDS];
    real inv[ROPE_MAX_BANDS];
    rope_bands(rope, comp, inv);
    /* The position table: rows 0..max_pos of (cos | sin) per band, when every position the
     * bands read is in [0, T) (then the table is no bigger than the per-token work it saves);
     * NULL otherwise (negative or sparse large ids: each token computes its own). */
    int n_comp = comp[half - 1] + 1, max_pos = -1;  /* comp is non-decreasing in j */
    for (size_t i = 0; i < (size_t)n_comp * T && max_pos < T; i++)
        max_pos = pos[i] < 0 ? T : (pos[i] > max_pos ? pos[i] : max_pos);
    real *tab = NULL;
    if (max_pos < T) tab = malloc((size_t)(max_pos + 1) * 2 * half * sizeof(real));
    if (tab) {
#pragma omp parallel for if ((size_t)(max_pos + 1) * half > (1u << 12))
        for (int p = 0; p <= max_pos; p++)
            for (int j = 0; j < half; j++)
                rope_cs(tab + (size_t)p * 2 * half + j, tab + (size_t)p * 2 * half + half + j, p,
                        inv[j]);
    }
#pragma omp parallel for if ((size_t)T * n_heads * rope->head_dim > (1u << 15))
    for (int t = 0; t < T; t++) {
        real c[ROPE_MAX_BANDS], s[ROPE_MAX_BANDS];
        for (int j = 0; j < half; j++) {
            int p = pos[(size_t)comp[j] * T + t];
            if (tab) {
                c[j] = tab[(size_t)p * 2 * half + j];
                s[j] = tab[(size_t)p * 2 * half + half + j];
            } else {
                rope_cs(&c[j], &s[j], p, inv[j]);
            }
            s[j] *= dir;
        }
        rope_row(x + (size_t)t * ldx, c, s, n_heads, rope->head_dim, half);
    }
    free(tab);
}

void CPU_FN(rope_forward)(real *x, const int *pos, int T, int n_heads, int ldx,
                          const ops_rope *rope)
{
    rope_apply(x, pos, T, n_heads, ldx, rope, 1);
}

void CPU_FN(rope_backward)(real *dx, const int *pos, int T, int n_heads, int ldx,
                           const ops_rope *rope)
{
    rope_apply(dx, pos, T, n_heads, ldx, rope, -1);
}
