/* rope_cpu: rotary position embedding, in place, for the three kinds Qwen2-VL uses: 1-D (text),
 * the vision tower's 2-D (h, w) and the decoder's M-RoPE (t, h, w).
 *
 * Design: all three are one rotation. Band j of a head (the pair x[j], x[j + head_dim/2], the
 * rotate_half convention) turns by pos[sel_j][t] * inv_freq_j; the kinds differ only in which
 * position component sel_j a band reads and in its inverse frequency. So a kind is reduced to a
 * per-band (component, inv_freq) table once per call, cos/sin are computed once per token (not
 * per head), and backward is the same code turning the other way. In the float build the angle
 * is formed in float exactly as transformers forms it (inv_freq = 1 / theta^(2j/dim) in float,
 * then one float product), so positions in the thousands round the same way. */
#include "kernels_cpu.h"

#include <assert.h>

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
#pragma omp parallel for if ((size_t)T * n_heads * rope->head_dim > (1u << 15))
    for (int t = 0; t < T; t++) {
        real c[ROPE_MAX_BANDS], s[ROPE_MAX_BANDS];
        for (int j = 0; j < half; j++) {
            real ang = (real)pos[(size_t)comp[j] * T + t] * inv[j];
            c[j] = cos(ang);
            s[j] = dir * (real)sin(ang);
        }
        for (int h = 0; h < n_heads; h++) {
            real *x1 = x + (size_t)t * ldx + (size_t)h * rope->head_dim, *x2 = x1 + half;
            for (int j = 0; j < half; j++) {
                real a = x1[j], b = x2[j];
                x1[j] = a * c[j] - b * s[j];
                x2[j] = b * c[j] + a * s[j];
            }
        }
    }
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
