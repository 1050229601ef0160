/* ops: picks an op table by its backend name, for command lines and job specs (--backend).
 *
 * The one idea: the name a user types is the table's own `backend` string, so what a run reports
 * (ops->backend) is what it was asked for; a backend this build lacks is NULL, not a fallback. */
/* first: ops.h declares ops_cuda() only when ADAPT_HAVE_CUDA is set */
#include "adapt_config.h"

#include "ops.h"

#include <string.h>

const ops_table *ops_by_name(const char *name)
{
    if (!name) return NULL;
    if (strcmp(name, "cpu") == 0) return ops_cpu();
    if (strcmp(name, "cpu-guarded") == 0) return ops_cpu_guarded();
#if ADAPT_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return ops_cuda();
#endif
    return NULL;
}
