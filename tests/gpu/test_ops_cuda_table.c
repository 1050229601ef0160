/* test_ops_cuda_table: the CUDA op table is complete: every entry the CPU table fills, the CUDA
 * table fills too, and it names its backend. Needs no GPU (it only reads the static table), so
 * it runs in suite 'unit' wherever the CUDA backend is built; the numerical checks are
 * test_ops_gpu (suite 'gpu'). */
#include "adapt_config.h"
#include "check.h"
#include "ops.h"

#include <string.h>

/* ops_table is the backend name followed by function pointers only */
_Static_assert(sizeof(ops_table) % sizeof(void (*)(void)) == 0, "ops_table holds pointers only");

int main(void)
{
    const ops_table *cpu = ops_cpu(), *gpu = ops_cuda();
    CHECK(gpu != NULL);
    CHECK(strcmp(gpu->backend, "cuda") == 0);
    size_t n = (sizeof(ops_table) - sizeof(const char *)) / sizeof(void (*)(void));
    const unsigned char *pc = (const unsigned char *)cpu + sizeof(const char *);
    const unsigned char *pg = (const unsigned char *)gpu + sizeof(const char *);
    for (size_t i = 0; i < n; i++) {
        void (*fc)(void), (*fg)(void);
        memcpy(&fc, pc + i * sizeof fc, sizeof fc);
        memcpy(&fg, pg + i * sizeof fg, sizeof fg);
        CHECK_MSG(fc != NULL, "CPU table entry %zu is NULL", i);
        CHECK_MSG(fg != NULL, "CUDA table entry %zu is NULL (see ops.h for its name)", i);
        CHECK_MSG(fg != fc, "CUDA table entry %zu is the CPU function", i);
    }
    CHECK(n == 27);  /* the entries of ops.h today: update with the table */
    return check_report("test_ops_cuda_table");
}
