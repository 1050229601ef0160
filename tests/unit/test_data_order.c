/* test_data_order: the epoch permutation and the per-rank step slices (worker/data_order.c).
 * Checks determinism, that epochs differ, that every sample is taken exactly once per epoch
 * across ranks for many (N, B, W), the remainder rule, that a step's samples do not depend on the
 * world size, and pins the PRNG to known values so a change of the stated algorithm is caught. */
#include "check.h"
#include "data_order.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_prng_pinned(void)
{
    /* splitmix64 from state 0: the first outputs of the published reference generator. */
    data_order_rng r;
    data_order_rng_init(&r, 0);
    CHECK(data_order_rng_next(&r) == UINT64_C(0xe220a8397b1dcdaf));
    CHECK(data_order_rng_next(&r) == UINT64_C(0x6e789e6aa1b965f4));
    CHECK(data_order_rng_next(&r) == UINT64_C(0x06c45d188009454f));
    /* rng_below stays in range and reaches every value. */
    int hit[7] = { 0 };
    for (int i = 0; i < 1000; i++) {
        uint64_t x = data_order_rng_below(&r, 7);
        CHECK(x < 7);
        if (x < 7) hit[x] = 1;
    }
    for (int i = 0; i < 7; i++) CHECK(hit[i]);
    double u = data_order_rng_unit(&r);
    CHECK(u >= 0.0 && u < 1.0);
    CHECK(data_order_hash_str("a") != data_order_hash_str("b"));
    CHECK(data_order_hash_str("sample-1") == data_order_hash_str("sample-1"));
}

static int is_permutation(const uint64_t *p, uint64_t n)
{
    unsigned char *seen = calloc(n ? n : 1, 1);
    int ok = 1;
    for (uint64_t i = 0; i < n && ok; i++) {
        if (p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_permutation(void)
{
    enum { N = 1000 };
    uint64_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *c = malloc(N * sizeof *c);
    data_order_permutation(7, 0, a, N);
    data_order_permutation(7, 0, b, N);
    data_order_permutation(7, 1, c, N);
    CHECK(is_permutation(a, N));
    CHECK(is_permutation(c, N));
    CHECK(memcmp(a, b, N * sizeof *a) == 0);          /* same seed, epoch: same order */
    CHECK(memcmp(a, c, N * sizeof *a) != 0);          /* another epoch: another order */
    data_order_permutation(8, 0, b, N);
    CHECK(memcmp(a, b, N * sizeof *a) != 0);          /* another seed: another order */
    size_t fixed = 0;
    for (uint64_t i = 0; i < N; i++) fixed += a[i] == i;
    CHECK_MSG(fixed < 20, "%zu fixed points: not shuffled", fixed);
    /* pinned: seed 42, n 10, epochs 0 and 1, as a separate Python transcription of the rule
     * in data_order.h computes them (a change of the rule would break resuming old runs) */
    static const uint64_t want0[10] = { 4, 9, 5, 6, 8, 1, 2, 3, 0, 7 };
    static const uint64_t want1[10] = { 9, 3, 2, 6, 1, 8, 0, 7, 5, 4 };
    uint64_t p[10], q[10];
    data_order_permutation(42, 0, p, 10);
    CHECK(memcmp(p, want0, sizeof p) == 0);
    data_order_permutation(42, 1, p, 10);
    CHECK(memcmp(p, want1, sizeof p) == 0);
    data_order_permutation(1, 0, q, 1);
    CHECK(q[0] == 0);
    free(a); free(b); free(c);
}

/* Every sample exactly once per epoch, all ranks the same step count, balanced slices. */
static void check_cover(uint64_t n, uint64_t batch, uint32_t world, uint64_t seed)
{
    unsigned char *seen = calloc(n, 1);
    uint64_t steps = data_order_steps_per_epoch(n, batch);
    CHECK(steps == (n + batch - 1) / batch);
    for (uint32_t r = 0; r < world; r++) {
        data_order o;
        CHECK(data_order_init(&o, n, batch, world, r, seed, NULL) == ADAPT_OK);
        data_order_set_epoch(&o, 3);
        for (uint64_t s = 0; s < steps; s++) {
            const uint64_t *ids;
            uint64_t cnt;
            CHECK(data_order_step(&o, s, &ids, &cnt, NULL) == ADAPT_OK);
            uint64_t step_size = s + 1 < steps || n % batch == 0 ? batch : n % batch;
            CHECK(cnt == step_size / world || cnt == step_size / world + 1);
            for (uint64_t k = 0; k < cnt; k++) {
                CHECK_MSG(!seen[ids[k]], "n %llu b %llu w %u: sample %llu twice",
                          (unsigned long long)n, (unsigned long long)batch, world,
                          (unsigned long long)ids[k]);
                seen[ids[k]] = 1;
            }
        }
        adapt_error e;
        const uint64_t *ids;
        uint64_t cnt;
        CHECK(data_order_step(&o, steps, &ids, &cnt, &e) == ADAPT_ERANGE);
        data_order_close(&o);
    }
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) total += seen[i];
    CHECK_MSG(total == n, "n %llu b %llu w %u: %llu samples seen", (unsigned long long)n,
              (unsigned long long)batch, world, (unsigned long long)total);
    free(seen);
}

static void test_cover(void)
{
    const uint64_t ns[] = { 1, 2, 7, 64, 100, 1001 };
    const uint64_t bs[] = { 1, 3, 8, 64, 200 };
    const uint32_t ws[] = { 1, 2, 3, 8 };
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (size_t j = 0; j < sizeof bs / sizeof *bs; j++)
            for (size_t k = 0; k < sizeof ws / sizeof *ws; k++)
                check_cover(ns[i], bs[j], ws[k], 11);
}

/* The remainder: N = 10, B = 4, W = 2 -> steps of 4, 4, 2; the last split 1 + 1. With W = 4 the
 * last step gives 2 ranks nothing, and they still have that step. */
static void test_remainder(void)
{
    CHECK(data_order_steps_per_epoch(10, 4) == 3);
    CHECK(data_order_steps_per_epoch(8, 4) == 2);
    uint64_t b, e;
    data_order_rank_range(10, 4, 2, 0, 2, &b, &e);
    CHECK(b == 8 && e == 9);
    data_order_rank_range(10, 4, 2, 1, 2, &b, &e);
    CHECK(b == 9 && e == 10);
    uint64_t empty = 0;
    for (uint32_t r = 0; r < 4; r++) {
        data_order_rank_range(10, 4, 4, r, 2, &b, &e);
        empty += b == e;
    }
    CHECK(empty == 2);
}

/* A step's samples (as a set) are the same for any world size: 1 rank vs 3 ranks. */
static void test_world_independent(void)
{
    enum { N = 103, B = 10 };
    data_order one;
    CHECK(data_order_init(&one, N, B, 1, 0, 5, NULL) == ADAPT_OK);
    data_order_set_epoch(&one, 2);
    for (uint64_t s = 0; s < data_order_steps_per_epoch(N, B); s++) {
        const uint64_t *ids;
        uint64_t cnt;
        data_order_step(&one, s, &ids, &cnt, NULL);
        uint64_t got = 0;
        for (uint32_t r = 0; r < 3; r++) {
            data_order o;
            data_order_init(&o, N, B, 3, r, 5, NULL);
            data_order_set_epoch(&o, 2);
            const uint64_t *rid;
            uint64_t rc;
            data_order_step(&o, s, &rid, &rc, NULL);
            CHECK(memcmp(rid, ids + got, rc * sizeof *rid) == 0);
            got += rc;
            data_order_close(&o);
        }
        CHECK(got == cnt);
    }
    data_order_close(&one);
}

static void test_position(void)
{
    CHECK(data_order_total_steps(10, 4, 3, 0) == 9);
    CHECK(data_order_total_steps(10, 4, 3, 5) == 5);
    CHECK(data_order_total_steps(10, 4, 1, 20) == 20);   /* max_steps past the epochs */
    uint64_t e, s;
    data_order_position(10, 4, 0, &e, &s);
    CHECK(e == 0 && s == 0);
    data_order_position(10, 4, 2, &e, &s);
    CHECK(e == 0 && s == 2);
    data_order_position(10, 4, 3, &e, &s);
    CHECK(e == 1 && s == 0);
    data_order_position(10, 4, 8, &e, &s);
    CHECK(e == 2 && s == 2);
}

static void test_bad_args(void)
{
    data_order o;
    adapt_error e;
    CHECK(data_order_init(&o, 0, 4, 1, 0, 1, &e) == ADAPT_EINVAL);
    CHECK(data_order_init(&o, 4, 0, 1, 0, 1, &e) == ADAPT_EINVAL);
    CHECK(data_order_init(&o, 4, 4, 2, 2, 1, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "rank 2");
}

int main(void)
{
    test_prng_pinned();
    test_permutation();
    test_cover();
    test_remainder();
    test_world_independent();
    test_position();
    test_bad_args();
    return check_report("data_order");
}
