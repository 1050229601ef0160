/* data_order: per-epoch global permutations and per-rank step slices; see data_order.h for the
 * PRNG and the remainder rule, which are part of the format of a run (a resumed or re-run job
 * must draw the same numbers). */
#include "data_order.h"

#include <stdlib.h>
#include <string.h>

uint64_t data_order_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

uint64_t data_order_key(uint64_t seed, uint64_t stream, uint64_t x)
{
    return data_order_mix64(data_order_mix64(seed ^ stream) + x);
}

uint64_t data_order_hash_str(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= UINT64_C(0x100000001b3);
    }
    return data_order_mix64(h);
}

uint64_t data_order_rng_next(data_order_rng *r)
{
    r->state += UINT64_C(0x9E3779B97F4A7C15);
    return data_order_mix64(r->state);
}

uint64_t data_order_rng_below(data_order_rng *r, uint64_t n)
{
    /* Values below (2^64 - n) mod n would make the low residues one draw more likely. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = data_order_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

double data_order_rng_unit(data_order_rng *r)
{
    return (double)(data_order_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

void data_order_shuffle(uint64_t *a, uint64_t n, data_order_rng *r)
{
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = data_order_rng_below(r, i);
        uint64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void data_order_permutation(uint64_t seed, uint64_t epoch, uint64_t *perm, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) perm[i] = i;
    data_order_rng r;
    data_order_rng_init(&r, data_order_key(seed, DATA_ORDER_STREAM_EPOCH, epoch));
    data_order_shuffle(perm, n, &r);
}

uint64_t data_order_steps_per_epoch(uint64_t n, uint64_t global_batch)
{
    return n / global_batch + (n % global_batch != 0);
}

void data_order_rank_range(uint64_t n, uint64_t global_batch, uint32_t world, uint32_t rank,
                           uint64_t step, uint64_t *begin, uint64_t *end)
{
    uint64_t s0 = step * global_batch;
    uint64_t s1 = s0 + global_batch < n ? s0 + global_batch : n;
    if (s0 > n) s0 = s1 = n;
    uint64_t b = s1 - s0;
    /* b * rank stays far below 2^64: b <= global_batch and both are spec-bounded. */
    *begin = s0 + b * rank / world;
    *end   = s0 + b * (rank + (uint64_t)1) / world;
}

uint64_t data_order_total_steps(uint64_t n, uint64_t global_batch, uint64_t epochs,
                                uint64_t max_steps)
{
    return max_steps ? max_steps : epochs * data_order_steps_per_epoch(n, global_batch);
}

void data_order_position(uint64_t n, uint64_t global_batch, uint64_t g, uint64_t *epoch,
                         uint64_t *step)
{
    uint64_t per = data_order_steps_per_epoch(n, global_batch);
    *epoch = g / per;
    *step = g % per;
}

int data_order_init(data_order *o, uint64_t n, uint64_t global_batch, uint32_t world,
                    uint32_t rank, uint64_t seed, adapt_error *err)
{
    memset(o, 0, sizeof *o);
    if (n == 0)
        return adapt_fail(err, ADAPT_EINVAL, "data order: the data set has no samples");
    if (global_batch == 0)
        return adapt_fail(err, ADAPT_EINVAL, "data order: global batch must be at least 1");
    if (world == 0 || rank >= world)
        return adapt_fail(err, ADAPT_EINVAL, "data order: rank %u outside a world of %u",
                          rank, world);
    if (n > SIZE_MAX / sizeof(uint64_t))
        return adapt_fail(err, ADAPT_ENOMEM, "data order: %llu samples do not fit in memory",
                          (unsigned long long)n);
    o->perm = malloc((size_t)n * sizeof *o->perm);
    if (!o->perm)
        return adapt_fail(err, ADAPT_ENOMEM, "data order: no memory for %llu sample indices",
                          (unsigned long long)n);
    o->n = n;
    o->global_batch = global_batch;
    o->world = world;
    o->rank = rank;
    o->seed = seed;
    data_order_set_epoch(o, 0);
    return ADAPT_OK;
}

void data_order_set_epoch(data_order *o, uint64_t epoch)
{
    o->epoch = epoch;
    data_order_permutation(o->seed, epoch, o->perm, o->n);
}

int data_order_step(const data_order *o, uint64_t step, const uint64_t **ids, uint64_t *count,
                    adapt_error *err)
{
    uint64_t steps = data_order_steps_per_epoch(o->n, o->global_batch);
    if (step >= steps)
        return adapt_fail(err, ADAPT_ERANGE,
                          "data order: step %llu of epoch %llu is past its end (%llu steps)",
                          (unsigned long long)step, (unsigned long long)o->epoch,
                          (unsigned long long)steps);
    uint64_t b, e;
    data_order_rank_range(o->n, o->global_batch, o->world, o->rank, step, &b, &e);
    *ids = o->perm + b;
    *count = e - b;
    return ADAPT_OK;
}

void data_order_close(data_order *o)
{
    free(o->perm);
    o->perm = NULL;
}
