/* safetensors: Hugging Face weight files in and out (one file, or shards with an index).
 *
 * The one idea: a checkpoint is read by mapping each file and trusting nothing in it until the
 * whole header has been checked (offsets inside the data section, tensors tiling it with no gap
 * and no overlap, byte size = dtype size x elements), so every later access is a plain pointer
 * into the map. Writing produces the bytes the reference `safetensors` writer produces for the
 * same tensors (same JSON, same padding, same order), so transformers and vLLM load the result
 * unchanged. Only F32, BF16 and F16 are read or written; the host must be little-endian. */
#ifndef ADAPT_SAFETENSORS_H
#define ADAPT_SAFETENSORS_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 8
/* The reference reader refuses headers above 100 MB; so does adaptd. */
#define SAFETENSORS_MAX_HEADER 100000000u

typedef enum safetensors_dtype {
    SAFETENSORS_F16,
    SAFETENSORS_BF16,
    SAFETENSORS_F32,
} safetensors_dtype;

typedef struct safetensors_tensor {
    const char        *name;
    safetensors_dtype  dtype;
    int                ndim;                        /* 0 for a scalar */
    int64_t            shape[SAFETENSORS_MAX_DIMS];
    uint64_t           nelem;                       /* product of shape (1 for a scalar) */
    uint64_t           nbytes;                      /* nelem x dtype size */
    const void        *data;                        /* into the read-only map; valid until close */
    const char        *file;                        /* the file that holds it */
    uint64_t           file_offset;                 /* where its bytes start in that file */
} safetensors_tensor;

/* An open checkpoint: every file mapped, every tensor indexed by name. */
typedef struct safetensors_t safetensors_t;

/* Opens PATH: a .safetensors file, a model.safetensors.index.json, or a directory holding one of
 * those (model.safetensors wins when both exist, as in transformers). Every header is validated
 * here. */
int safetensors_open(safetensors_t **out, const char *path, adapt_error *err);
void safetensors_close(safetensors_t *st);

size_t safetensors_count(const safetensors_t *st);
/* Tensors in name order (byte-wise), i < safetensors_count. */
const safetensors_tensor *safetensors_at(const safetensors_t *st, size_t i);
/* NULL when absent. */
const safetensors_tensor *safetensors_find(const safetensors_t *st, const char *name);
/* A `__metadata__` string of the first file (e.g. "format" -> "pt"); NULL when absent. */
const char *safetensors_metadata(const safetensors_t *st, const char *key);

/* Copies a tensor into dst as float32 (BF16 and F16 widened exactly). count must equal nelem:
 * a shape mismatch is reported with the tensor's name and both shapes' element counts. */
int safetensors_read_f32(const safetensors_t *st, const char *name, float *dst, uint64_t count,
                         adapt_error *err);

/* Checks that the checkpoint holds exactly the names given: the error lists every missing and
 * every unexpected tensor (as many as fit in the message, then a count). */
int safetensors_check_names(const safetensors_t *st, const char *const *names, size_t n,
                            adapt_error *err);

const char *safetensors_dtype_name(safetensors_dtype dtype);
size_t safetensors_dtype_size(safetensors_dtype dtype);

/* Exact widening, and narrowing with round-to-nearest-even (NaN stays NaN, as torch does). */
float    safetensors_bf16_to_f32(uint16_t h);
float    safetensors_f16_to_f32(uint16_t h);
uint16_t safetensors_f32_to_bf16(float f);
uint16_t safetensors_f32_to_f16(float f);

/* One tensor to write: data holds nelem x dtype-size bytes, little-endian, row-major. */
typedef struct safetensors_entry {
    const char        *name;
    safetensors_dtype  dtype;
    int                ndim;
    int64_t            shape[SAFETENSORS_MAX_DIMS];
    const void        *data;
} safetensors_entry;

/* Writes one file atomically (a temporary in the same directory, fsync, rename, fsync of the
 * directory). The file carries `{"format":"pt"}` metadata and its tensors sorted as the
 * reference writer sorts them (F32 before BF16 before F16, then by name). Names must be unique. */
int safetensors_write_file(const char *path, const safetensors_entry *entries, size_t n,
                           adapt_error *err);

/* Writes a model directory the way transformers' save_pretrained does: model.safetensors when
 * everything fits in max_shard_bytes (0 = no limit), else model-0000i-of-0000n.safetensors
 * filled in the given entry order (a tensor larger than the limit gets a shard of its own)
 * plus model.safetensors.index.json, written after them. Weight files of an earlier save that
 * this one does not replace are removed last, so a loader (which prefers model.safetensors to
 * an index) sees the old save or the new one, never a mix. */
int safetensors_write_dir(const char *dir, const safetensors_entry *entries, size_t n,
                          uint64_t max_shard_bytes, adapt_error *err);

#endif
