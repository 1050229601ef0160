/* rope_cuda: rotary position embedding in place, 1-D (text), the vision tower's 2-D (h, w) and
 * the decoder's M-RoPE (t, h, w) (twin of kernels/cpu/rope_cpu.c), fp32 and bf16 storage.
 *
 * Design: as on the CPU, a kind is reduced on the host to a per-band table (which position
 * component band j reads, its inverse frequency formed in float exactly as transformers forms
 * it), passed to the kernel by value. One thread per (token, band) computes the angle once and
 * turns that band of every head; neighbouring threads take neighbouring bands, so the loads of
 * a head's two halves are contiguous. cos and sin are taken in double, as the CPU twin does,
 * so positions in the thousands round the same way. */
#include "kernels_cuda.cuh"

enum { ROPE_MAX_BANDS = OPS_ATTN_MAX_HEAD_DIM / 2 };

typedef struct rope_bands {
    int   comp[ROPE_MAX_BANDS];  /* position component band j reads */
    float inv[ROPE_MAX_BANDS];   /* its inverse frequency */
    int   half;                  /* head_dim / 2 */
    int   head_dim;
} rope_bands;

/* kernels/cpu/rope_cpu.c's rope_bands, float build: the same expressions in the same order */
static int rope_bands_make(const ops_rope *rope, rope_bands *t)
{
    int half = rope->head_dim / 2;
    if (rope->head_dim % 2 || half > ROPE_MAX_BANDS || half < 1 ||
        (rope->kind == OPS_ROPE_VISION_2D && half % 2) ||
        (rope->kind == OPS_ROPE_MROPE && rope->mrope_section[0] + rope->mrope_section[1] +
                                                 rope->mrope_section[2] != half))
        return -1;
    t->half = half;
    t->head_dim = rope->head_dim;
    for (int j = 0; j < half; j++) {
        int dim = rope->head_dim, idx = j;
        t->comp[j] = 0;
        if (rope->kind == OPS_ROPE_VISION_2D) {
            dim = half;
            t->comp[j] = j < half / 2 ? 0 : 1;
            idx = j % (half / 2);
        } else if (rope->kind == OPS_ROPE_MROPE) {
            int s0 = rope->mrope_section[0], s1 = rope->mrope_section[1];
            t->comp[j] = j < s0 ? 0 : (j < s0 + s1 ? 1 : 2);
        }
        float e = (float)(2 * idx) / (float)dim;
        t->inv[j] = 1.0f / powf(rope->theta, e);
    }
    return 0;
}

template <typename X>
static __global__ void rope_kernel(X *x, const int *pos, int T, int n_heads, int ldx,
                                   rope_bands b, float dir)
{
    size_t total = (size_t)T * b.half, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int t = (int)(i / b.half), j = (int)(i % b.half);
        float ang = (float)pos[(size_t)b.comp[j] * T + t] * b.inv[j];
        double sd, cd;
        sincos((double)ang, &sd, &cd);
        float c = (float)cd, s = dir * (float)sd;
        for (int h = 0; h < n_heads; h++) {
            X *x1 = x + (size_t)t * ldx + (size_t)h * b.head_dim, *x2 = x1 + b.half;
            float a0 = cuda_ld(x1 + j), b0 = cuda_ld(x2 + j);
            cuda_st(x1 + j, a0 * c - b0 * s);
            cuda_st(x2 + j, b0 * c + a0 * s);
        }
    }
}

template <typename X>
static void rope_run(X *x, const int *pos, int T, int n_heads, int ldx, const ops_rope *rope,
                     float dir)
{
    if (T <= 0 || n_heads <= 0) return;
    rope_bands b;
    if (rope_bands_make(rope, &b)) {
        cuda_fail(__FILE__, __LINE__, "rope", "bad ops_rope: head_dim must be even and <= "
                  "OPS_ATTN_MAX_HEAD_DIM (a multiple of 4 for VISION_2D), mrope_section must sum "
                  "to head_dim/2");
        return;
    }
    rope_kernel<X><<<cuda_grid((size_t)T * b.half, 256), 256, 0, cuda_stream()>>>(x, pos, T, n_heads,
                                                                               ldx, b, dir);
    CUDA_LAUNCHED();
}

void cuda_rope_forward_f32(float *x, const int *pos, int T, int n_heads, int ldx,
                           const ops_rope *rope)
{
    rope_run(x, pos, T, n_heads, ldx, rope, 1.0f);
}

void cuda_rope_backward_f32(float *dx, const int *pos, int T, int n_heads, int ldx,
                            const ops_rope *rope)
{
    rope_run(dx, pos, T, n_heads, ldx, rope, -1.0f);
}

/* bf16 storage (ops_cuda.h): the same rotation, rounded once per element on the way out */
extern "C" void ops_cuda_rope_forward_bf16(ops_bf16 *x, const int *pos, int T, int n_heads, int ldx,
                                           const ops_rope *rope)
{
    rope_run(BF(x), pos, T, n_heads, ldx, rope, 1.0f);
}

extern "C" void ops_cuda_rope_backward_bf16(ops_bf16 *dx, const int *pos, int T, int n_heads,
                                            int ldx, const ops_rope *rope)
{
    rope_run(BF(dx), pos, T, n_heads, ldx, rope, -1.0f);
}
