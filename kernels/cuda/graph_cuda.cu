/* graph_cuda: the op table's graph entries on CUDA: stream capture of the compute stream,
 * instantiation, launch.
 *
 * The one idea: every op of the table runs on the one compute stream and none allocates or
 * waits (ops_cuda.cu; the cuBLASLt workspace is made with the handle, before any capture), so a
 * whole training pass can be captured from that stream as issued and replayed with one
 * cudaGraphLaunch instead of thousands of kernel launches. The capture is thread-local
 * (cudaStreamCaptureModeThreadLocal): another thread's CUDA calls (an MPI progress thread, say)
 * do not invalidate it, while this thread's forbidden calls (a sync, a copy from pageable host
 * memory, cudaMalloc) do — graph_end then fails, naming CUDA's reason. The model keeps the
 * memory entries and sync out of a capture (kernels/ops.h). */
#include "kernels_cuda.cuh"

#include <stdio.h>

static int graph_error(char *msg, size_t len, const char *call, cudaError_t e)
{
    if (msg && len) snprintf(msg, len, "%s failed: %s", call, cudaGetErrorString(e));
    cudaGetLastError();  /* a capture error is not sticky: keep it from the next launch's check */
    return -1;
}

extern "C" int ops_cuda_graph_begin(char *msg, size_t len)
{
    cudaStream_t s = cuda_stream();
    if (!s) {
        if (msg && len) snprintf(msg, len, "graph_begin: the CUDA backend has no stream (its "
                                           "set-up failed: see sync's error)");
        return -1;
    }
    cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    return e == cudaSuccess ? 0 : graph_error(msg, len, "cudaStreamBeginCapture", e);
}

extern "C" int ops_cuda_graph_end(void **graph, char *msg, size_t len)
{
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(cuda_stream(), &g);
    if (e != cudaSuccess) {
        if (g) cudaGraphDestroy(g);
        return graph_error(msg, len, "cudaStreamEndCapture (an op synced, copied from pageable "
                                     "memory or allocated inside the capture?)", e);
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);  /* the executable graph keeps what it needs */
    if (e != cudaSuccess) return graph_error(msg, len, "cudaGraphInstantiate", e);
    *graph = (void *)exec;
    return 0;
}

extern "C" int ops_cuda_graph_launch(void *graph, char *msg, size_t len)
{
    cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)graph, cuda_stream());
    return e == cudaSuccess ? 0 : graph_error(msg, len, "cudaGraphLaunch", e);
}

/* cudaGraphExecDestroy does not wait for a launch in flight to finish: the driver keeps the
 * graph's resources until it has */
extern "C" void ops_cuda_graph_free(void *graph)
{
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}
