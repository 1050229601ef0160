/* pack: first-fit micro-batch packing over shuffled windows; see pack.h.
 *
 * Batches are built in two passes so no sample is moved twice: pass one assigns each sample of a
 * window to a bin (first fit, bins scanned in creation order), pass two lays the samples out bin
 * by bin, in the order they joined it, into plan->order. */
#include "pack.h"

#include "data_order.h"

#include <stdlib.h>
#include <string.h>

void pack_plan_free(pack_plan *plan)
{
    free(plan->order);
    free(plan->length);
    free(plan->batches);
    memset(plan, 0, sizeof *plan);
}

static int pack_check_args(const uint32_t *lengths, size_t n, uint64_t budget, uint32_t max_len,
                           size_t window, adapt_error *err)
{
    if (max_len == 0)
        return adapt_fail(err, ADAPT_EINVAL, "pack: max length must be at least 1");
    if (budget < max_len)
        return adapt_fail(err, ADAPT_EINVAL,
                          "pack: token budget %llu is below the max sequence length %u, so a "
                          "long sample could not fit; raise micro_batch_tokens",
                          (unsigned long long)budget, max_len);
    if (window == 0)
        return adapt_fail(err, ADAPT_EINVAL, "pack: window must be at least 1");
    for (size_t i = 0; i < n; i++)
        if (lengths[i] == 0)
            return adapt_fail(err, ADAPT_EINVAL, "pack: sample %zu has no tokens", i);
    return ADAPT_OK;
}

/* Packs positions win[0..w) (sample indices, already shuffled) into new bins appended to plan;
 * bin_of and fill are scratch of at least w entries. */
static void pack_window(pack_plan *plan, const uint64_t *win, size_t w, uint64_t budget,
                        size_t *bin_of, uint64_t *fill, size_t *out_pos)
{
    size_t bins = 0;
    for (size_t k = 0; k < w; k++) {
        uint32_t len = plan->length[win[k]];
        size_t b = 0;
        while (b < bins && fill[b] + len > budget) b++;
        if (b == bins) fill[bins++] = 0;
        fill[b] += len;
        bin_of[k] = b;
    }
    for (size_t b = 0; b < bins; b++) {
        pack_batch *pb = &plan->batches[plan->n_batches++];
        pb->begin = *out_pos;
        pb->tokens = fill[b];
        for (size_t k = 0; k < w; k++)
            if (bin_of[k] == b) plan->order[(*out_pos)++] = (size_t)win[k];
        pb->end = *out_pos;
    }
}

int pack_plan_build(pack_plan *plan, const uint32_t *lengths, size_t n, uint64_t budget,
                    uint32_t max_len, size_t window, uint64_t key, adapt_error *err)
{
    memset(plan, 0, sizeof *plan);
    int rc = pack_check_args(lengths, n, budget, max_len, window, err);
    if (rc) return rc;
    size_t w_max = window < n ? window : n;
    size_t cap = n ? n : 1;
    plan->order   = malloc(cap * sizeof *plan->order);
    plan->length  = malloc(cap * sizeof *plan->length);
    plan->batches = malloc(cap * sizeof *plan->batches);
    uint64_t *win   = malloc((w_max ? w_max : 1) * sizeof *win);
    size_t   *bin_of = malloc((w_max ? w_max : 1) * sizeof *bin_of);
    uint64_t *fill  = malloc((w_max ? w_max : 1) * sizeof *fill);
    if (!plan->order || !plan->length || !plan->batches || !win || !bin_of || !fill) {
        free(win); free(bin_of); free(fill);
        pack_plan_free(plan);
        return adapt_fail(err, ADAPT_ENOMEM, "pack: no memory to plan %zu samples", n);
    }
    plan->n = n;
    for (size_t i = 0; i < n; i++) {
        plan->length[i] = lengths[i];
        if (lengths[i] > max_len) {
            plan->truncated++;
            plan->truncated_tokens += lengths[i] - max_len;
            plan->length[i] = max_len;
        }
    }
    data_order_rng rng;
    data_order_rng_init(&rng, data_order_key(key, DATA_ORDER_STREAM_PACK, 0));
    size_t out_pos = 0;
    for (size_t start = 0; start < n; start += window) {
        size_t w = n - start < window ? n - start : window;
        for (size_t k = 0; k < w; k++) win[k] = start + k;
        data_order_shuffle(win, w, &rng);
        pack_window(plan, win, w, budget, bin_of, fill, &out_pos);
    }
    free(win); free(bin_of); free(fill);
    return ADAPT_OK;
}
