/* ops_cpu: the CPU op table (fp32). The kernels live one family per file (matmul_cpu.c,
 * norm_cpu.c, rope_cpu.c, attention_cpu.c, activation_cpu.c, loss_cpu.c, embedding_cpu.c,
 * optim_cpu.c) and are written over kernels_cpu.h's `real`; this file only binds their float
 * build to the table, plus the element-wise ops too small for a family of their own and the
 * memory entries, which on the CPU are plain host memory: "backend memory" is malloc'd memory,
 * so callers that check host_accessible skip every staging copy and run exactly as before. */
#include "kernels_cpu.h"

#include <stdlib.h>
#include <string.h>

/* 64-byte alignment: a cache line and an AVX-512 vector, what the SIMD loops assume of a
 * buffer's start. Zeroed, as the table promises (gradients and activations start at 0). */
static void *cpu_mem_alloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

static void cpu_mem_free(void *p) { free(p); }

static void cpu_mem_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
}

/* Ops run synchronously on the calling thread: nothing is ever pending, nothing fails late. */
static int cpu_sync(char *msg, size_t len)
{
    if (msg && len) msg[0] = '\0';
    return 0;
}

static void cpu_add_f32(float *y, const float *a, const float *b, size_t n)
{
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void cpu_axpy_f32(float *y, float alpha, const float *x, size_t n)
{
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void cpu_fill_f32(float *y, float value, size_t n)
{
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) y[i] = value;
}

#include "bf16_cpu.h"  /* the bf16 twins bound at the end of the table */

static const ops_table cpu_table = {
    .backend                   = "cpu",
    .host_accessible           = 1,
    .mem_alloc                 = cpu_mem_alloc,
    .mem_free                  = cpu_mem_free,
    .mem_upload                = cpu_mem_copy,
    .mem_download              = cpu_mem_copy,
    .mem_copy                  = cpu_mem_copy,
    .sync                      = cpu_sync,
    .add_f32                   = cpu_add_f32,
    .axpy_f32                  = cpu_axpy_f32,
    .fill_f32                  = cpu_fill_f32,
    .matmul_f32                = cpu_matmul_f32,
    .bias_add_f32              = cpu_bias_add_f32,
    .bias_backward_f32         = cpu_bias_backward_f32,
    .embedding_forward_f32     = cpu_embedding_forward_f32,
    .embedding_backward_f32    = cpu_embedding_backward_f32,
    .scatter_rows_forward_f32  = cpu_scatter_rows_forward_f32,
    .scatter_rows_backward_f32 = cpu_scatter_rows_backward_f32,
    .layernorm_forward_f32     = cpu_layernorm_forward_f32,
    .layernorm_backward_f32    = cpu_layernorm_backward_f32,
    .rmsnorm_forward_f32       = cpu_rmsnorm_forward_f32,
    .rmsnorm_backward_f32      = cpu_rmsnorm_backward_f32,
    .rope_forward_f32          = cpu_rope_forward_f32,
    .rope_backward_f32         = cpu_rope_backward_f32,
    .attention_forward_f32     = cpu_attention_forward_f32,
    .attention_backward_f32    = cpu_attention_backward_f32,
    .swiglu_forward_f32        = cpu_swiglu_forward_f32,
    .swiglu_backward_f32       = cpu_swiglu_backward_f32,
    .quickgelu_forward_f32     = cpu_quickgelu_forward_f32,
    .quickgelu_backward_f32    = cpu_quickgelu_backward_f32,
    .gelu_forward_f32          = cpu_gelu_forward_f32,
    .gelu_backward_f32         = cpu_gelu_backward_f32,
    .lmhead_xent_f32           = cpu_lmhead_xent_f32,
    .grad_norm_f32             = cpu_grad_norm_f32,
    .adamw_step_f32            = cpu_adamw_step_f32,
    /* bf16 storage: the reference twins of kernels/cpu/bf16_cpu.c */
    .f32_to_bf16               = cpu_f32_to_bf16,
    .bf16_to_f32               = cpu_bf16_to_f32,
    .add_bf16                  = cpu_add_bf16,
    .axpy_bf16                 = cpu_axpy_bf16,
    .fill_bf16                 = cpu_fill_bf16,
    .matmul_bf16               = cpu_matmul_bf16,
    .matmul_bf16_f32out        = cpu_matmul_bf16_f32out,
    .bias_add_bf16             = cpu_bias_add_bf16,
    .bias_backward_bf16        = cpu_bias_backward_bf16,
    .embedding_forward_bf16    = cpu_embedding_forward_bf16,
    .embedding_backward_bf16   = cpu_embedding_backward_bf16,
    .scatter_rows_forward_bf16 = cpu_scatter_rows_forward_bf16,
    .scatter_rows_backward_bf16 = cpu_scatter_rows_backward_bf16,
    .layernorm_forward_bf16    = cpu_layernorm_forward_bf16,
    .layernorm_backward_bf16   = cpu_layernorm_backward_bf16,
    .rmsnorm_forward_bf16      = cpu_rmsnorm_forward_bf16,
    .rmsnorm_backward_bf16     = cpu_rmsnorm_backward_bf16,
    .rope_forward_bf16         = cpu_rope_forward_bf16,
    .rope_backward_bf16        = cpu_rope_backward_bf16,
    .attention_forward_bf16    = cpu_attention_forward_bf16,
    .attention_backward_bf16   = cpu_attention_backward_bf16,
    .swiglu_forward_bf16       = cpu_swiglu_forward_bf16,
    .swiglu_backward_bf16      = cpu_swiglu_backward_bf16,
    .quickgelu_forward_bf16    = cpu_quickgelu_forward_bf16,
    .quickgelu_backward_bf16   = cpu_quickgelu_backward_bf16,
    .gelu_forward_bf16         = cpu_gelu_forward_bf16,
    .gelu_backward_bf16        = cpu_gelu_backward_bf16,
    .lmhead_xent_bf16          = cpu_lmhead_xent_bf16,
    .adamw_step_mixed          = cpu_adamw_step_mixed,
    /* no graphs: a launch costs nothing on the host, so there is nothing to replay */
    .graph_begin               = NULL,
    .graph_end                 = NULL,
    .graph_launch              = NULL,
    .graph_free                = NULL,
};

const ops_table *ops_cpu(void) { return &cpu_table; }
