/* qwen2vl_rope_index: M-RoPE position ids of one sequence, as transformers 5.x's
 * Qwen2VLModel.get_rope_index computes them.
 *
 * The one idea: the sequence is a list of runs, text (one id per token, all three components
 * equal, counting on from where the last run stopped) and image (a t x h x w grid of merged
 * tokens whose components are offset by the run's start); an image run moves the counter on by
 * max(h, w) / merge, not by its token count, which is what lets text after an image continue
 * near the image's spatial extent. */
#include "qwen2vl.h"

int qwen2vl_rope_index(const int *ids, int n, int image_token_id, int spatial_merge_size,
                       const int *grid_thw, int n_images, int *image_cursor, int *pos, int ld_pos,
                       adapt_error *err)
{
    int *pt = pos, *ph = pos + ld_pos, *pw = pos + 2 * ld_pos;
    int cur = 0;
    int i = 0;
    while (i < n) {
        if (ids[i] != image_token_id) {
            pt[i] = ph[i] = pw[i] = cur++;
            i++;
            continue;
        }
        int run = 0;
        while (i + run < n && ids[i + run] == image_token_id) run++;
        int k = (*image_cursor)++;
        if (k >= n_images)
            return adapt_fail(err, ADAPT_EINVAL,
                              "qwen2vl: image token run at position %d has no image left "
                              "(%d images given)", i, n_images);
        int gt = grid_thw[3 * k], gh = grid_thw[3 * k + 1] / spatial_merge_size;
        int gw = grid_thw[3 * k + 2] / spatial_merge_size;
        if (run != gt * gh * gw)
            return adapt_fail(err, ADAPT_EINVAL,
                              "qwen2vl: image %d needs %d <|image_pad|> tokens (grid %dx%dx%d / "
                              "merge %d^2) but the run at position %d has %d",
                              k, gt * gh * gw, gt, grid_thw[3 * k + 1], grid_thw[3 * k + 2],
                              spatial_merge_size, i, run);
        int j = i;
        for (int a = 0; a < gt; a++)
            for (int b = 0; b < gh; b++)
                for (int c = 0; c < gw; c++, j++) {
                    pt[j] = a + cur;
                    ph[j] = b + cur;
                    pw[j] = c + cur;
                }
        cur += gh > gw ? gh : gw;
        i += run;
    }
    return 0;
}
