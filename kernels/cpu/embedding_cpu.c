/* embedding_cpu: token-embedding lookup and the scatter of image features into the
 * <|image_pad|> rows, each with its backward.
 *
 * Design: the lookup's backward is a scatter-add where several tokens may hit one row; rather
 * than atomics, threads split the embedding *columns*, so every dw element has exactly one
 * writer and the result does not depend on the thread count. */
#include "kernels_cpu.h"

void CPU_FN(embedding_forward)(real *y, const real *w, const int *ids, int T, int d)
{
#pragma omp parallel for if ((size_t)T * d > (1u << 16))
    for (int t = 0; t < T; t++)
        memcpy(y + (size_t)t * d, w + (size_t)ids[t] * d, (size_t)d * sizeof(real));
}

void CPU_FN(embedding_backward)(real *dw, const real *dy, const int *ids, int T, int d)
{
    enum { CB = 64 };
    int nblocks = (d + CB - 1) / CB;
#pragma omp parallel for if ((size_t)T * d > (1u << 16))
    for (int bj = 0; bj < nblocks; bj++) {
        int j0 = bj * CB, nc = d - j0 < CB ? d - j0 : CB;
        for (int t = 0; t < T; t++) {
            real *dst = dw + (size_t)ids[t] * d + j0;
            const real *src = dy + (size_t)t * d + j0;
            for (int j = 0; j < nc; j++) dst[j] += src[j];
        }
    }
}

void CPU_FN(scatter_rows_forward)(real *y, const real *src, const int *pos, int n, int d)
{
#pragma omp parallel for if ((size_t)n * d > (1u << 16))
    for (int i = 0; i < n; i++)
        memcpy(y + (size_t)pos[i] * d, src + (size_t)i * d, (size_t)d * sizeof(real));
}

/* pos holds distinct rows, so rows i of dsrc and pos[i] of dy have one writer each */
void CPU_FN(scatter_rows_backward)(real *dsrc, real *dy, const int *pos, int n, int d)
{
#pragma omp parallel for if ((size_t)n * d > (1u << 16))
    for (int i = 0; i < n; i++) {
        real *g = dy + (size_t)pos[i] * d, *dst = dsrc + (size_t)i * d;
        for (int j = 0; j < d; j++) dst[j] += g[j];
        memset(g, 0, (size_t)d * sizeof(real));
    }
}
