/* train_data: from corpus records to packed micro-batches the model can run — the data loader of
 * training.
 *
 * The one idea: a step's input is a pure function of (spec, the step's sample indices, the pack
 * key). Records are read in index order on the calling thread (a shard reader is one thread's),
 * then each sample's decode → resize → patchify → conversation → chat render runs on one of two
 * worker threads, each with its own decoder and encoder and writing only its own slots; so the
 * result is the same bytes whatever thread did what, and a resumed or re-sharded run sees the same
 * tokens. Labels are transformers' (unshifted) labels, and the first token of every sample is
 * never a label, so the number of non-ignored labels is exactly the number of tokens the loss
 * scores: the count that is summed over ranks to normalise the loss. */
#ifndef ADAPT_TRAIN_DATA_H
#define ADAPT_TRAIN_DATA_H

#include "error.h"
#include "job.pb-c.h"
#include "model_config.h"
#include "pack.h"
#include "qwen2vl.h"

#include <stddef.h>
#include <stdint.h>

#define TRAIN_DATA_THREADS 2

typedef struct train_data train_data;

/* Opens the corpus (corpus_path, or spec->corpus when NULL) and the spec's overlays, the
 * tokenizer in spec->model_path and the image processor settings (the model's
 * preprocessor_config.json when present, then the spec's pixel bounds). cfg is the model's:
 * its image token id must be the tokenizer's <|image_pad|>. */
int  train_data_open(train_data **out, const Adaptd__TrainSpec *spec, const char *corpus_path,
                     const model_config *cfg, adapt_error *err);
void train_data_close(train_data *d);

uint64_t train_data_count(const train_data *d);
/* two_stage: which conversation the samples become — CONV_MODE_CAPTION_ONLY (stage 1) or
 * CONV_MODE_TASKS_ONLY (stage 2); the mode given at open for the other modes. */
void train_data_set_stage(train_data *d, int stage);
/* two_stage's stage 2 trains on the records with at least one kept task: their indices, in
 * order, into *out (free()); every overlay record is read once. */
int  train_data_task_records(train_data *d, uint64_t **out, uint64_t *n, adapt_error *err);
/* The model budget that every micro-batch of this loader fits. */
void train_data_budget(const train_data *d, qwen2vl_budget *b);

/* Prepares samples indices[0..n) (n may be 0) and packs them with key (pack.h). Errors name the
 * sample (index, id) and what failed. */
int  train_data_prepare(train_data *d, const uint64_t *indices, size_t n, uint64_t key,
                        adapt_error *err);
/* After prepare: micro-batches, and the totals of the prepared samples. */
size_t   train_data_batches(const train_data *d);
uint64_t train_data_loss_tokens(const train_data *d);   /* non-ignored labels */
uint64_t train_data_tokens(const train_data *d);        /* all tokens after truncation */
uint64_t train_data_truncated(const train_data *d);     /* samples cut to max_seq_len */
/* Fills b with micro-batch i (its arrays live in d until the next build or prepare). */
int  train_data_build(train_data *d, size_t i, float loss_normaliser, qwen2vl_batch *b,
                      adapt_error *err);

#endif
