/* The CPU twins of the element-wise ops against a plain loop, on lengths around the OpenMP
 * threshold. */
#include "../check.h"
#include "ops.h"

#include <stdlib.h>

int main(void)
{
    const ops_table *ops = ops_cpu();
    CHECK(strcmp(ops->backend, "cpu") == 0);
    size_t lengths[] = {0, 1, 7, 65536, 65537, 200003};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        size_t n = lengths[li];
        float *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
        float *y = malloc((n + 1) * sizeof *y);
        for (size_t i = 0; i < n; i++) { a[i] = (float)i * 0.5f; b[i] = 3.0f - (float)(i % 11); }
        ops->add_f32(y, a, b, n);
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != a[i] + b[i];
        CHECK_MSG(bad == 0, "add_f32 n=%zu: %d wrong", n, bad);
        ops->axpy_f32(y, -2.0f, b, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != (a[i] + b[i]) + -2.0f * b[i];
        CHECK_MSG(bad == 0, "axpy_f32 n=%zu: %d wrong", n, bad);
        free(a); free(b); free(y);
    }
    return check_report("ops_cpu");
}
