/* test_ops_cuda_table: the CUDA op table is complete: every entry (memory entries, ops, and the
 * graph entries the CPU table leaves NULL) is filled with its own function, it names its backend,
 * says its memory is not host-accessible, and ops_by_name finds it. Needs no GPU (it only reads the
 * static tables), so it runs in suite 'unit' wherever the CUDA backend is built; the numerical
 * checks are test_ops_gpu and test_model_gpu (suite 'gpu'). */
#include "adapt_config.h"
#include "check.h"
#include "ops.h"
#include "ops_cuda.h"

#include <stddef.h>
#include <string.h>

/* ops_table is the backend name and host_accessible, then function pointers only, from mem_alloc
 * to the end */
_Static_assert((sizeof(ops_table) - offsetof(ops_table, mem_alloc)) % sizeof(void (*)(void)) == 0,
               "ops_table ends in function pointers only");

int main(void)
{
    const ops_table *cpu = ops_cpu(), *gpu = ops_cuda();
    CHECK(gpu != NULL);
    CHECK(strcmp(gpu->backend, "cuda") == 0);
    CHECK(gpu->host_accessible == 0);
    CHECK(cpu->host_accessible == 1);
    CHECK(ops_by_name("cuda") == gpu);
    CHECK(ops_by_name("cpu") == cpu);
    CHECK(gpu->sync == ops_cuda_sync);  /* one error record, whichever way it is asked */
    size_t first = offsetof(ops_table, mem_alloc);
    size_t n = (sizeof(ops_table) - first) / sizeof(void (*)(void)), n_cpu = 0;
    const unsigned char *pc = (const unsigned char *)cpu + first;
    const unsigned char *pg = (const unsigned char *)gpu + first;
    for (size_t i = 0; i < n; i++) {
        void (*fc)(void), (*fg)(void);
        memcpy(&fc, pc + i * sizeof fc, sizeof fc);
        memcpy(&fg, pg + i * sizeof fg, sizeof fg);
        /* the CUDA table fills every entry, those the CPU has none of (the graph entries) too */
        CHECK_MSG(fg != NULL, "CUDA table entry %zu is NULL (see ops.h for its name)", i);
        CHECK_MSG(fg != fc, "CUDA table entry %zu is the CPU function", i);
        n_cpu += fc != NULL;
    }
    CHECK(n >= 6 + 27);  /* at least the 6 memory entries and the 27 fp32 ops */
    /* the entries ops.h lets a host backend leave NULL: the four graph entries, no other */
    CHECK(cpu->graph_begin == NULL && cpu->graph_end == NULL && cpu->graph_launch == NULL &&
          cpu->graph_free == NULL);
    CHECK_MSG(n_cpu == n - 4, "the CPU table leaves %zu entries NULL, ops.h allows the 4 graph "
              "entries only", n - n_cpu);
    return check_report("test_ops_cuda_table");
}
