/* ops_cpu: the CPU twins of the op table (fp32, OpenMP where the loop is long enough to pay). */
#include "adapt_config.h"
#include "ops.h"

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

static const ops_table cpu_table = {
    .backend  = "cpu",
    .add_f32  = cpu_add_f32,
    .axpy_f32 = cpu_axpy_f32,
};

const ops_table *ops_cpu(void) { return &cpu_table; }
