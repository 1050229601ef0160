/* ops: the op table. Model code is written once against it; each backend fills one table.
 *
 * Every op has a CPU twin in kernels/cpu/ and a CUDA twin in kernels/cuda/ under the same name,
 * and the CPU twin is the reference the CUDA one is tested against. Pointers passed to a backend's
 * ops live in that backend's memory (host for cpu, device for cuda). The table grows with the
 * model issues; for now it holds the element-wise ops the foundation needs to prove that both
 * backends build and link. */
#ifndef ADAPT_OPS_H
#define ADAPT_OPS_H

#include <stddef.h>

typedef struct ops_table {
    const char *backend;  /* "cpu" or "cuda" */
    /* y[i] = a[i] + b[i] */
    void (*add_f32)(float *y, const float *a, const float *b, size_t n);
    /* y[i] += alpha * x[i] */
    void (*axpy_f32)(float *y, float alpha, const float *x, size_t n);
} ops_table;

const ops_table *ops_cpu(void);
#if defined(ADAPT_HAVE_CUDA) && ADAPT_HAVE_CUDA
const ops_table *ops_cuda(void);
#endif

#endif
