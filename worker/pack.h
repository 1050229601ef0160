/* pack: a rank's samples of one step packed into micro-batches under a token budget.
 *
 * The one idea: first-fit over a shuffled window. Samples are taken in windows of `window`
 * consecutive samples; each window is shuffled with the stated PRNG (data_order.h, stream
 * DATA_ORDER_STREAM_PACK, key x = the caller's step key) and each sample, in that shuffled order,
 * goes into the first still-open micro-batch of this window with room for it, else opens a new
 * one. A window's micro-batches are closed when the window ends, so memory and the look-ahead of
 * the loader are bounded by the window and the result depends on nothing but (lengths, budget,
 * max length, window, key). A sample is never split: one longer than max_len is truncated to
 * max_len (and counted), and the budget must be at least max_len, so every sample fits somewhere.
 *
 * Because the loss is normalised by the global count of unmasked tokens, how samples are grouped
 * into micro-batches changes no gradient: packing is purely a memory/throughput plan. */
#ifndef ADAPT_PACK_H
#define ADAPT_PACK_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pack_batch {
    size_t   begin, end;   /* positions [begin, end) of pack_plan.order */
    uint64_t tokens;       /* sum of the (truncated) lengths of its samples, <= budget */
} pack_batch;

typedef struct pack_plan {
    size_t     *order;      /* [n]: sample indices (0..n-1 of the input) in micro-batch order */
    uint32_t   *length;     /* [n]: the length of input sample i after truncation */
    pack_batch *batches;    /* [n_batches] */
    size_t      n, n_batches;
    uint64_t    truncated;          /* samples that were longer than max_len */
    uint64_t    truncated_tokens;   /* tokens cut from them */
} pack_plan;

/* Plans micro-batches for lengths[0..n) (n may be 0: no batch). key is any value the caller
 * derives from (seed, epoch, step in epoch, rank) alone, e.g.
 * data_order_key(seed, epoch, step * world + rank), so a resumed step packs as it did.
 * EINVAL when budget < max_len, max_len == 0, window == 0, or a sample has length 0. */
int  pack_plan_build(pack_plan *plan, const uint32_t *lengths, size_t n, uint64_t budget,
                     uint32_t max_len, size_t window, uint64_t key, adapt_error *err);
void pack_plan_free(pack_plan *plan);

#endif
