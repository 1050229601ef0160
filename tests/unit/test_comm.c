/* test_comm: ranks and collectives (worker/comm.c).
 * Without arguments (a plain process): a world of one, collectives leave buffers as they are,
 * launcher variables are read as stated. With --mpi, run under `mpirun -np 2`: blocking and
 * bucketed (MPI_Iallreduce) sums equal the sum over ranks, u64/f64 sums, broadcast, barrier.
 * Values are small integers so float sums are exact and the comparison can be ==. */
#include "adapt_config.h"
#include "check.h"
#include "comm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_env(void)
{
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("SLURM_LOCALID");
    CHECK(comm_env_local_rank() == -1);
    setenv("SLURM_LOCALID", "2", 1);
    CHECK(comm_env_local_rank() == 2);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);   /* Open MPI's wins */
    CHECK(comm_env_local_rank() == 3);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x", 1);
    CHECK(comm_env_local_rank() == 2);
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("SLURM_LOCALID");
    CHECK(comm_env_launched_tasks() == 0);
    setenv("SLURM_NTASKS", "4", 1);                 /* an allocation, not a launch */
    CHECK(comm_env_launched_tasks() == 0);
    setenv("SLURM_STEP_NUM_TASKS", "4", 1);
    CHECK(comm_env_launched_tasks() == 4);
    unsetenv("SLURM_STEP_NUM_TASKS");
    unsetenv("SLURM_NTASKS");
}

static void test_single(void)
{
    setenv("SLURM_LOCALID", "1", 1);
    comm *c;
    adapt_error e = { 0 };
    CHECK_MSG(comm_init(&c, NULL, NULL, &e) == ADAPT_OK, "%s", e.message);
    if (!c) return;
    unsetenv("SLURM_LOCALID");
    CHECK(comm_rank(c) == 0 && comm_world(c) == 1 && comm_local_rank(c) == 1);
    CHECK(!comm_uses_mpi(c));
    float f[3] = { 1, 2, 3 };
    CHECK(comm_allreduce_sum_f32(c, f, 3, &e) == ADAPT_OK);
    CHECK(comm_allreduce_start(c, f, 3, &e) == ADAPT_OK);
    CHECK(comm_allreduce_wait_all(c, &e) == ADAPT_OK);
    CHECK(f[0] == 1 && f[1] == 2 && f[2] == 3);
    CHECK(comm_barrier(c, &e) == ADAPT_OK);
    CHECK(comm_broadcast(c, f, sizeof f, 0, &e) == ADAPT_OK);
    CHECK(comm_broadcast(c, f, sizeof f, 1, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "root 1");
    comm_close(c);
#if !ADAPT_HAVE_MPI
    /* built without MPI but started as one of 2 tasks: refused, not 2 lone trainings */
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CHECK(comm_init(&c, NULL, NULL, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "2 tasks");
    unsetenv("OMPI_COMM_WORLD_SIZE");
#endif
}

/* Under mpirun -np 2: every sum checked against the closed form over ranks. */
static void test_mpi(int *argc, char ***argv)
{
    comm *c;
    adapt_error e = { 0 };
    CHECK_MSG(comm_init(&c, argc, argv, &e) == ADAPT_OK, "%s", e.message);
    if (!c) return;
    int rank = comm_rank(c), world = comm_world(c);
    CHECK_MSG(world == 2, "world %d: run under mpirun -np 2", world);
    CHECK(comm_uses_mpi(c));
    CHECK(comm_local_rank(c) == rank);   /* one node */
    /* buckets of several sizes in flight at once, as backward would start them */
    const size_t sizes[] = { 1, 17, 1000, 65536, 3 };
    enum { NB = 5 };
    float *b[NB];
    for (int k = 0; k < NB; k++) {
        b[k] = malloc(sizes[k] * sizeof *b[k]);
        for (size_t i = 0; i < sizes[k]; i++) b[k][i] = (float)((rank + 1) * (int)(i % 1000) + k);
        CHECK(comm_allreduce_start(c, b[k], sizes[k], &e) == ADAPT_OK);
    }
    CHECK_MSG(comm_allreduce_wait_all(c, &e) == ADAPT_OK, "%s", e.message);
    int tri = world * (world + 1) / 2;   /* sum of rank + 1 */
    for (int k = 0; k < NB; k++) {
        size_t bad = 0;
        for (size_t i = 0; i < sizes[k]; i++)
            bad += b[k][i] != (float)(tri * (int)(i % 1000) + world * k);
        CHECK_MSG(bad == 0, "bucket %d: %zu wrong sums", k, bad);
        free(b[k]);
    }
    float f[4] = { 1.5f, -2, (float)rank, 1e6f };
    CHECK(comm_allreduce_sum_f32(c, f, 4, &e) == ADAPT_OK);
    CHECK(f[0] == 3.0f && f[1] == -4 && f[2] == 1 && f[3] == 2e6f);
    double d[2] = { 0.25, (double)rank * 1e12 };
    CHECK(comm_allreduce_sum_f64(c, d, 2, &e) == ADAPT_OK);
    CHECK(d[0] == 0.5 && d[1] == 1e12);
    uint64_t u[2] = { UINT64_C(1) << 40, (uint64_t)rank };
    CHECK(comm_allreduce_sum_u64(c, u, 2, &e) == ADAPT_OK);
    CHECK(u[0] == UINT64_C(1) << 41 && u[1] == 1);
    char msg[16] = "";
    if (rank == 1) strcpy(msg, "from rank 1");
    CHECK(comm_broadcast(c, msg, sizeof msg, 1, &e) == ADAPT_OK);
    CHECK(!strcmp(msg, "from rank 1"));
    CHECK(comm_barrier(c, &e) == ADAPT_OK);
    comm_close(c);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--mpi")) {
        test_mpi(&argc, &argv);
        return check_report("comm (mpi)");
    }
    test_env();
    test_single();
    return check_report("comm");
}
