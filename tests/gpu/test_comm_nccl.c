/* test_comm_nccl: worker/comm.c's NCCL collectives on real GPUs: the unique id goes out over
 * comm_broadcast, every rank joins, an in-place all-reduce of device memory sums exactly (small
 * integers), on the default stream and on a stream of its own, and misuse fails with a message
 * instead of hanging. A plain process is a world of one (one GPU); under
 * `mpirun -np N` with N GPUs each rank takes the GPU of its local rank. Exit 77 where there is no
 * CUDA device or the build has no NCCL (>= 2.14). */
#include "adapt_config.h"
#include "check.h"
#include "comm.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

/* all-reduce buf [n] = (rank + 1) * (i % 7) and check the sum world (world + 1) / 2 * (i % 7) */
static void check_sum(comm *c, cudaStream_t stream, size_t n, const char *what)
{
    adapt_error e = {0};
    int rank = comm_rank(c), world = comm_world(c);
    float *h = malloc(n * sizeof *h), *d = NULL;
    for (size_t i = 0; i < n; i++) h[i] = (float)((rank + 1) * (int)(i % 7));
    if (cudaMalloc((void **)&d, n * sizeof *d) != cudaSuccess ||
        cudaMemcpy(d, h, n * sizeof *d, cudaMemcpyHostToDevice) != cudaSuccess) {
        CHECK_MSG(0, "%s: device buffer of %zu floats", what, n);
        free(h);
        return;
    }
    CHECK_MSG(comm_nccl_allreduce_sum_f32(c, d, n, stream, &e) == ADAPT_OK, "%s: %s", what, e.message);
    CHECK_MSG(comm_nccl_wait(c, stream, &e) == ADAPT_OK, "%s: %s", what, e.message);
    CHECK(cudaMemcpy(h, d, n * sizeof *d, cudaMemcpyDeviceToHost) == cudaSuccess);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += h[i] != (float)(world * (world + 1) / 2 * (int)(i % 7));
    CHECK_MSG(bad == 0, "%s: %zu of %zu sums wrong", what, bad, n);
    cudaFree(d);
    free(h);
}

int main(int argc, char **argv)
{
    adapt_error e = {0};
    comm *c = NULL;
    if (comm_init(&c, &argc, &argv, &e) != ADAPT_OK) {
        fprintf(stderr, "test_comm_nccl: %s\n", e.message);
        return 1;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "test_comm_nccl: no CUDA device: skipped\n");
        comm_close(c);
        return 77;
    }
    if (comm_nccl_init(c, 0, 0, &e) == ADAPT_EUNSUPPORTED) {
        fprintf(stderr, "test_comm_nccl: %s: skipped\n", e.message);
        comm_close(c);
        return 77;
    }
    /* misuse: no communicator yet, a time-out of 0 */
    CHECK(comm_nccl_allreduce_sum_f32(c, NULL, 4, NULL, &e) == ADAPT_EINVAL);
    CHECK(comm_nccl_wait(c, NULL, &e) == ADAPT_EINVAL);
    CHECK(comm_nccl_init(c, 0, 0, &e) == ADAPT_EINVAL);
    CHECK(comm_nccl_init(c, ndev + 5, 60, &e) == ADAPT_EIO);  /* no such GPU */
    CHECK_STR_CONTAINS(e.message, "cannot use GPU");

    int dev = comm_local_rank(c) % ndev;
    CHECK_MSG(comm_nccl_init(c, dev, 120, &e) == ADAPT_OK, "%s", e.message);
    CHECK(comm_nccl_init(c, dev, 120, &e) == ADAPT_EINVAL);  /* twice */
    check_sum(c, NULL, ((size_t)1 << 20) + 3, "default stream");
    cudaStream_t s;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess) {
        check_sum(c, s, 1000, "own stream");
        check_sum(c, s, 1, "one float");
        cudaStreamDestroy(s);
    }
    CHECK(comm_nccl_allreduce_sum_f32(c, NULL, 0, NULL, &e) == ADAPT_OK);  /* empty: nothing */
    printf("test_comm_nccl: rank %d of %d on GPU %d\n", comm_rank(c), comm_world(c), dev);
    comm_close(c);
    return check_report("test_comm_nccl");
}
