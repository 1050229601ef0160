/* ops_cpu: the CPU op table (fp32). The kernels live one family per file (matmul_cpu.c,
 * norm_cpu.c, rope_cpu.c, attention_cpu.c, activation_cpu.c, loss_cpu.c, embedding_cpu.c,
 * optim_cpu.c) and are written over kernels_cpu.h's `real`; this file only binds their float
 * build to the table, plus the element-wise ops too small for a family of their own. */
#include "kernels_cpu.h"

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

static const ops_table cpu_table = {
    .backend                   = "cpu",
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
};

const ops_table *ops_cpu(void) { return &cpu_table; }
