/* data_order: which samples each rank trains on at each step, and the one PRNG of training data.
 *
 * The one idea: the composition of every optimizer step depends only on (seed, epoch, number of
 * samples, global batch), never on the world size. Each epoch has one global permutation; step s
 * of the epoch is positions [s*B, min((s+1)*B, N)) of it, and a rank takes a contiguous, balanced
 * slice of that step. So 1 rank and 8 ranks sum gradients over exactly the same samples per step,
 * and a resumed run needs nothing but (epoch, step in epoch) to continue exactly.
 *
 * PRNG (portable, stated so other implementations can reproduce it bit for bit):
 *   mix64(z):   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
 *               return z ^ (z >> 31)                                (the splitmix64 finalizer)
 *   rng_next:   state += 0x9E3779B97F4A7C15; return mix64(state)      (splitmix64)
 *   rng_below(n): draw r until r >= (2^64 - n) mod n, return r mod n   (unbiased, no 128-bit math)
 *   key(seed, stream, x) = mix64(mix64(seed ^ stream) + x)
 * all arithmetic modulo 2^64. An epoch's permutation starts from the identity and runs the
 * Fisher-Yates shuffle downwards: for i = N-1 .. 1, j = rng_below(i + 1), swap(p[i], p[j]), with
 * rng state = key(seed, DATA_ORDER_STREAM_EPOCH, epoch).
 *
 * Remainder rule: an epoch has ceil(N / B) steps and the last one holds the N mod B samples left
 * (when B does not divide N). Every sample is seen exactly once per epoch, no sample is repeated
 * as padding, and the last step's gradient is still the exact mean over its samples because the
 * loss is normalised by the global count of unmasked tokens (summed over ranks), not per rank.
 * Within a step of b samples rank r takes [floor(r*b/W), floor((r+1)*b/W)): sizes differ by at
 * most one, and a rank may get none (b < W); it still joins the step's all-reduce with a zero
 * gradient and zero tokens, so all ranks take the same number of steps. */
#ifndef ADAPT_DATA_ORDER_H
#define ADAPT_DATA_ORDER_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

/* Stream constants: independent random streams drawn from one run seed. */
#define DATA_ORDER_STREAM_EPOCH      UINT64_C(0x45504f4348000001)  /* epoch permutation */
#define DATA_ORDER_STREAM_PACK       UINT64_C(0x5041434b00000002)  /* packing window shuffle */
#define DATA_ORDER_STREAM_INSTRUCT   UINT64_C(0x494e535400000003)  /* caption instruction pick */
#define DATA_ORDER_STREAM_TURN_ORDER UINT64_C(0x5455524e00000004)  /* caption first or last */
#define DATA_ORDER_STREAM_BLANK      UINT64_C(0x424c414e00000005)  /* blank image choice */

typedef struct data_order_rng {
    uint64_t state;
} data_order_rng;

uint64_t data_order_mix64(uint64_t z);
uint64_t data_order_key(uint64_t seed, uint64_t stream, uint64_t x);
/* FNV-1a 64 of the bytes, then mix64: how a sample id string becomes a number. */
uint64_t data_order_hash_str(const char *s);
static inline void data_order_rng_init(data_order_rng *r, uint64_t key) { r->state = key; }
uint64_t data_order_rng_next(data_order_rng *r);
/* Uniform in [0, n); n >= 1. */
uint64_t data_order_rng_below(data_order_rng *r, uint64_t n);
/* Uniform double in [0, 1) from the top 53 bits of one draw. */
double   data_order_rng_unit(data_order_rng *r);
/* Shuffles a[0..n) in place with the Fisher-Yates rule above. */
void     data_order_shuffle(uint64_t *a, uint64_t n, data_order_rng *r);

/* The permutation of epoch `epoch`: perm[0..n) receives each of 0..n-1 exactly once. */
void data_order_permutation(uint64_t seed, uint64_t epoch, uint64_t *perm, uint64_t n);

/* Pure step arithmetic (no permutation needed). */
uint64_t data_order_steps_per_epoch(uint64_t n, uint64_t global_batch);
/* Positions [*begin, *end) of the epoch permutation that rank takes at step (in its epoch). */
void data_order_rank_range(uint64_t n, uint64_t global_batch, uint32_t world, uint32_t rank,
                           uint64_t step, uint64_t *begin, uint64_t *end);

/* Steps of a run: max_steps when it is above 0 (it may end mid-epoch, or run past `epochs`),
 * else epochs x steps per epoch. */
uint64_t data_order_total_steps(uint64_t n, uint64_t global_batch, uint64_t epochs,
                                uint64_t max_steps);
/* Where global step g (0-based, optimizer steps done) falls: the epoch and the step in it.
 * A resumed run continues at exactly this position. */
void data_order_position(uint64_t n, uint64_t global_batch, uint64_t g, uint64_t *epoch,
                         uint64_t *step);

/* One rank's view of the order: holds the current epoch's permutation. */
typedef struct data_order {
    uint64_t  n;             /* samples in the data set */
    uint64_t  global_batch;  /* samples per optimizer step, all ranks together */
    uint32_t  world, rank;
    uint64_t  seed;
    uint64_t  epoch;         /* the epoch perm belongs to */
    uint64_t *perm;          /* [n], owned */
} data_order;

/* EINVAL for n == 0, global_batch == 0, world == 0 or rank >= world. Builds epoch 0. */
int  data_order_init(data_order *o, uint64_t n, uint64_t global_batch, uint32_t world,
                     uint32_t rank, uint64_t seed, adapt_error *err);
void data_order_set_epoch(data_order *o, uint64_t epoch);
/* This rank's sample indices at step `step` of the current epoch: *ids points into o->perm,
 * *count may be 0. ERANGE for a step past the epoch's end. */
int  data_order_step(const data_order *o, uint64_t step, const uint64_t **ids, uint64_t *count,
                     adapt_error *err);
void data_order_close(data_order *o);

#endif
