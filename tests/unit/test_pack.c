/* test_pack: micro-batch packing (worker/pack.c). Invariants over many random inputs: the budget
 * is never exceeded, every sample appears exactly once and whole, batches tile the order, the
 * plan is deterministic in its key; plus truncation counting, first-fit behaviour and refusals. */
#include "check.h"
#include "data_order.h"
#include "pack.h"

#include <stdlib.h>
#include <string.h>

static void check_invariants(const pack_plan *p, const uint32_t *lengths, size_t n,
                             uint64_t budget, uint32_t max_len)
{
    CHECK(p->n == n);
    unsigned char *seen = calloc(n ? n : 1, 1);
    size_t pos = 0;
    uint64_t truncated = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t want = lengths[i] > max_len ? max_len : lengths[i];
        CHECK(p->length[i] == want);
        truncated += lengths[i] > max_len;
    }
    CHECK(p->truncated == truncated);
    for (size_t b = 0; b < p->n_batches; b++) {
        const pack_batch *pb = &p->batches[b];
        CHECK(pb->begin == pos && pb->end > pb->begin);
        uint64_t sum = 0;
        for (size_t k = pb->begin; k < pb->end; k++) {
            size_t s = p->order[k];
            CHECK(s < n);
            if (s >= n) continue;
            CHECK_MSG(!seen[s], "sample %zu in two batches", s);
            seen[s] = 1;
            sum += p->length[s];
        }
        CHECK(sum == pb->tokens);
        CHECK_MSG(pb->tokens <= budget, "batch %zu holds %llu tokens > budget %llu", b,
                  (unsigned long long)pb->tokens, (unsigned long long)budget);
        pos = pb->end;
    }
    CHECK(pos == n);
    for (size_t i = 0; i < n; i++) CHECK_MSG(seen[i], "sample %zu missing", i);
    free(seen);
}

static void test_random_invariants(void)
{
    data_order_rng r;
    data_order_rng_init(&r, 99);
    for (int trial = 0; trial < 200; trial++) {
        size_t n = (size_t)data_order_rng_below(&r, 300);
        uint32_t max_len = 64 + (uint32_t)data_order_rng_below(&r, 512);
        uint64_t budget = max_len + data_order_rng_below(&r, 2048);
        size_t window = 1 + (size_t)data_order_rng_below(&r, 64);
        uint32_t *len = malloc((n ? n : 1) * sizeof *len);
        for (size_t i = 0; i < n; i++) len[i] = 1 + (uint32_t)data_order_rng_below(&r, max_len + 100);
        pack_plan a, b;
        CHECK(pack_plan_build(&a, len, n, budget, max_len, window, (uint64_t)trial, NULL) == 0);
        check_invariants(&a, len, n, budget, max_len);
        CHECK(pack_plan_build(&b, len, n, budget, max_len, window, (uint64_t)trial, NULL) == 0);
        CHECK(a.n_batches == b.n_batches);
        CHECK(n == 0 || memcmp(a.order, b.order, n * sizeof *a.order) == 0);
        CHECK(a.n_batches == 0 || memcmp(a.batches, b.batches, a.n_batches * sizeof *a.batches) == 0);
        pack_plan_free(&a);
        pack_plan_free(&b);
        free(len);
    }
}

/* Another key shuffles the windows differently (with enough samples the orders differ). */
static void test_key_matters(void)
{
    uint32_t len[64];
    for (int i = 0; i < 64; i++) len[i] = 10 + (uint32_t)i;
    pack_plan a, b;
    pack_plan_build(&a, len, 64, 200, 100, 64, 1, NULL);
    pack_plan_build(&b, len, 64, 200, 100, 64, 2, NULL);
    CHECK(memcmp(a.order, b.order, sizeof(size_t) * 64) != 0);
    pack_plan_free(&a);
    pack_plan_free(&b);
}

/* window 1 = no shuffle, first fit degenerates to next fit per sample: one batch per sample
 * here since bins close at the end of each window. A full window fills bins first-fit. */
static void test_first_fit(void)
{
    const uint32_t len[] = { 60, 60, 30, 30, 40 };
    pack_plan p;
    CHECK(pack_plan_build(&p, len, 5, 100, 100, 1, 0, NULL) == 0);
    CHECK(p.n_batches == 5);
    pack_plan_free(&p);
    CHECK(pack_plan_build(&p, len, 5, 100, 100, 5, 0, NULL) == 0);
    check_invariants(&p, len, 5, 100, 100);
    /* 220 tokens in bins of 100: first fit needs 3 whatever the order. */
    CHECK(p.n_batches == 3);
    pack_plan_free(&p);
}

static void test_truncation(void)
{
    const uint32_t len[] = { 10, 500, 128, 129 };
    pack_plan p;
    CHECK(pack_plan_build(&p, len, 4, 256, 128, 8, 3, NULL) == 0);
    CHECK(p.truncated == 2);
    CHECK(p.truncated_tokens == (500 - 128) + 1);
    check_invariants(&p, len, 4, 256, 128);
    pack_plan_free(&p);
}

static void test_refusals(void)
{
    const uint32_t len[] = { 10, 0 };
    pack_plan p;
    adapt_error e;
    CHECK(pack_plan_build(&p, len, 2, 100, 50, 4, 0, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "sample 1");
    CHECK(pack_plan_build(&p, len, 1, 40, 50, 4, 0, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "micro_batch_tokens");
    CHECK(pack_plan_build(&p, len, 1, 100, 50, 0, 0, &e) == ADAPT_EINVAL);
    CHECK(pack_plan_build(&p, len, 0, 100, 50, 4, 0, &e) == ADAPT_OK);
    CHECK(p.n_batches == 0);
    pack_plan_free(&p);
}

int main(void)
{
    test_random_invariants();
    test_key_matters();
    test_first_fit();
    test_truncation();
    test_refusals();
    return check_report("pack");
}
