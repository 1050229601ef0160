/* bf16_extra_cuda: the CUDA entries of ops.h's bf16 section that the kernel families lacked
 * (kernels/cuda/bf16_extra_cuda.cu), declared for the table in ops_cuda.cu. Argument meanings
 * are those of the ops.h entry of the same stem. */
#ifndef ADAPT_BF16_EXTRA_CUDA_CUH
#define ADAPT_BF16_EXTRA_CUDA_CUH

#include "kernels_cuda.cuh"

void cuda_add_bf16(ops_bf16 *y, const ops_bf16 *a, const ops_bf16 *b, size_t n);
void cuda_axpy_bf16(ops_bf16 *y, float alpha, const ops_bf16 *x, size_t n);
void cuda_fill_bf16(ops_bf16 *y, float value, size_t n);
/* the table's matmul_bf16: ops_cuda_matmul_bf16 with bias NULL-able instead of an epilogue */
void cuda_matmul_bf16_entry(ops_bf16 *c, const ops_bf16 *a, const ops_bf16 *b, int m, int n, int k,
                            int trans_a, int trans_b, int lda, int ldb, int ldc, float alpha,
                            float beta, const ops_bf16 *bias);
void cuda_bias_add_bf16(ops_bf16 *y, const ops_bf16 *bias, int rows, int n, int ldy);
void cuda_bias_backward_bf16(float *dbias, const ops_bf16 *dy, int rows, int n, int ldy);

#endif
