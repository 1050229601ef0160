/* qwen2vl_fixture: the tiny Qwen2-VL and the packed batch the model's unit tests share
 * (test_qwen2vl, test_qwen2vl_guarded, test_qwen2vl_bf16), with the helpers that compare two
 * models' buffers. One idea: the tests build their model and data from one definition, so they
 * test the same thing and a change to the fixture is made once. Nothing here records a check:
 * check.h's counters are per test file, so the helpers return what they found and the tests
 * CHECK it. */
#ifndef ADAPT_QWEN2VL_FIXTURE_H
#define ADAPT_QWEN2VL_FIXTURE_H

#include "qwen2vl.h"

#include <stddef.h>

/* The tiny model's special tokens (its config's image / vision start / vision end ids). */
#define FIXTURE_IMAGE_TOKEN 250
#define FIXTURE_VISION_START 252
#define FIXTURE_VISION_END 253

/* fixture_config_parse: the tiny model's config (vocab 256, hidden 64, 2 layers, 2 vision blocks
 * of 32, pad_token_id 3, M-RoPE sections 2/3/3), its LM head tied to the embedding or not. */
int fixture_config_parse(model_config *cfg, int tied, adapt_error *err);

/* Three packed samples over 40 tokens: a 4x4-patch image; a 4x6 and a 2x8 image in one sample;
 * text only. Labels ignored at image tokens and sequence starts (23 scored). Two micro-batches
 * of it share b's loss normaliser: `first`, the first sample alone (11 tokens, its image), and
 * `text`, the text-only sample alone (10 tokens, no image). */
typedef struct fixture_batch {
    int           ids[64], labels[64], cu[4], grid[9];
    int           cu_first[2], cu_text[2];
    float         pix[56 * 1176];
    qwen2vl_batch b, first, text;
} fixture_batch;

void fixture_batch_make(fixture_batch *t);

/* A budget fixture_batch fits in (with room: 64 tokens, 128 patches, 4 sequences, 4 images). */
extern const qwen2vl_budget fixture_batch_budget;

/* fixture_buffer_copy: the model's whole parameter (grads 0) or gradient (grads 1) buffer, slack
 * included, read through qwen2vl_copy_out into malloc'd memory (the caller frees it); prefilled
 * with NaN, so a float copy_out misses never compares equal. */
float *fixture_buffer_copy(qwen2vl_model *m, int grads);

/* fixture_buffers_diff: how many tensors' floats differ between a and b (a's layout; *first
 * names the first such tensor, NULL when none), and in *slack how many floats past n_params are
 * not zero in either. */
size_t fixture_buffers_diff(qwen2vl_model *a, qwen2vl_model *b, int grads, const char **first,
                            size_t *slack);

/* fixture_read_faults: 1 when a forked child reading the byte at p dies of SIGSEGV (under
 * AddressSanitizer, which may keep its own handler: reports it and exits non-zero), i.e. p is
 * guarded backend memory, not host memory. */
int fixture_read_faults(const void *p);

/* fixture_ready_run: zeroes m's gradients and runs qwen2vl_forward_backward_ready on b (loss
 * into *loss), downloading each gradients-ready range as it is reported, as a gradient sync
 * would read it. *reported: the floats reported; *final: 1 when every float of the gradient
 * buffer was downloaded with its final value (a range changed after its report, or never
 * reported, makes it 0). Returns forward_backward_ready's result (ADAPT_ENOMEM, in err, when the
 * snapshot cannot be allocated). */
int fixture_ready_run(qwen2vl_model *m, const qwen2vl_batch *b, float *loss, size_t *reported,
                      int *final, adapt_error *err);

/* fixture_dir_remove: rm -rf DIR; system()'s status */
int fixture_dir_remove(const char *dir);

#endif
