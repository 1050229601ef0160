/* checkpoint: training checkpoints on disk — written by every rank, trusted only when complete.
 *
 * Layout under the run's checkpoint root:
 *
 *   root/step-NNNNNNNN/          a complete checkpoint (N = optimizer steps done, 8+ digits)
 *       config.json, *.safetensors, ...   the model in the Hugging Face layout (rank 0, through
 *                                         the caller's weights callback), so the directory
 *                                         loads in transformers as it is
 *       rank-RRRRR.state         each rank's optimizer moments, step, data position, RNG state
 *       DONE                     written last, by rank 0, once every rank's file is in place
 *   root/.step-NNNNNNNN.tmp/     a checkpoint being written; renamed to step-NNNNNNNN after DONE
 *
 * The one idea: nothing is trusted by its name alone. Every file is written as temp + fsync +
 * rename, the directory is renamed into place only after DONE, and DONE names the world size and
 * every rank file's size; so a checkpoint is used only when DONE is present and consistent with
 * the files, and the bytes of a state file are checked (header crc32c, then a crc32c per 1 MiB
 * chunk of moments) before a single value is handed back. A damaged file is reported with its
 * path and the byte offset of the damaged chunk.
 *
 * rank-RRRRR.state, all integers little-endian (the host must be little-endian: the moments are
 * stored as the raw float32 the optimizer keeps):
 *
 *   0    8   magic "ADCKPTR1"          64   32  rng[4]
 *   8    4   version (1)               96   8   n_params (floats per moment buffer)
 *   12   4   header size (128)         104  4   chunk bytes (1 MiB)
 *   16   4   rank                      108  4   crc32c of the chunk table
 *   20   4   world                     112  4   stage (two_stage: 1 or 2, else 0)
 *   24   8   step                      116  4   zero_stage (0, or 1: ZeRO-1 moments)
 *                                      120  4   reserved (0)
 *   32   8   epoch                     124  4   crc32c of bytes 0..123
 *   40   8   epoch_step
 *   48   8   samples
 *   56   8   tokens
 *   128       m [n_params] f32, then v [n_params] f32 (with ZeRO-1: this rank's shard of the
 *             moments; n_params is then the shard's length)
 *   then      chunk table: u32 crc32c of each chunk_bytes slice of the moments (the last shorter)
 *
 * DONE is text: "adaptd checkpoint 1\nstep N\nworld W\n", one "rank R bytes B\n" line per rank,
 * then "crc32c XXXXXXXX\n" of everything before that line.
 *
 * Multi-rank protocol (the caller supplies the barriers, so this module needs no MPI; the
 * checkpoint root must be on a file system every rank sees):
 *   rank 0: ckpt_begin → barrier → all ranks: ckpt_write_rank → barrier → rank 0: ckpt_commit.
 * ckpt_save does the three in one process (world of one). */
#ifndef ADAPT_CHECKPOINT_H
#define ADAPT_CHECKPOINT_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define CKPT_STATE_MAGIC   "ADCKPTR1"
#define CKPT_VERSION       1u
#define CKPT_HEADER_SIZE   128u
#define CKPT_CHUNK_BYTES   (1u << 20)
#define CKPT_DONE_NAME     "DONE"
#define CKPT_PATH_MAX      4096

/* What one rank saves and restores. The moment buffers are the caller's (one contiguous buffer
 * each, as the optimizer keeps them); this module never allocates them. */
typedef struct ckpt_state {
    uint64_t step;         /* optimizer steps done */
    uint32_t rank, world;
    uint64_t epoch;        /* data position: the next step is epoch_step of epoch */
    uint64_t epoch_step;
    uint64_t samples;      /* counters shown in progress */
    uint64_t tokens;
    uint64_t rng[4];       /* the loop's RNG state, opaque here */
    uint32_t stage;
    uint32_t zero_stage;   /* 0: whole moments; 1: ZeRO-1, this rank's shard of them (files of
                            * older builds hold 0 there: they read as stage 0) */
    uint64_t n_params;     /* floats in m and in v */
    float   *m, *v;        /* [n_params] each, caller-owned */
} ckpt_state;

/* Writes the model into dir (the checkpoint directory being built), e.g. with
 * safetensors_write_dir plus config.json; returns 0 or a negative adapt_error_code with err set. */
typedef int (*ckpt_write_weights_fn)(void *ctx, const char *dir, adapt_error *err);

/* root/step-NNNNNNNN into buf (cap >= CKPT_PATH_MAX is always enough for a sane root). */
void ckpt_dir_path(char *buf, size_t cap, const char *root, uint64_t step);

/* Rank 0: creates root when missing (its parent must exist) and a fresh root/.step-N.tmp
 * (removing one left over from an interrupted attempt at the same step). */
int ckpt_begin(const char *root, uint64_t step, adapt_error *err);
/* Every rank: writes rank-RRRRR.state into the temporary directory of st->step; rank 0 then
 * calls write_weights (may be NULL) with that directory. */
int ckpt_write_rank(const char *root, const ckpt_state *st, ckpt_write_weights_fn write_weights,
                    void *ctx, adapt_error *err);
/* Rank 0: checks every rank's file is there, writes DONE, renames the directory into place
 * (replacing a checkpoint of the same step from an abandoned later history), then keeps the
 * newest keep_last complete checkpoints (0: all). */
int ckpt_commit(const char *root, uint64_t step, uint32_t world, uint32_t keep_last,
                adapt_error *err);
/* ckpt_begin + ckpt_write_rank + ckpt_commit for a world of one. */
int ckpt_save(const char *root, const ckpt_state *st, ckpt_write_weights_fn write_weights,
              void *ctx, uint32_t keep_last, adapt_error *err);

/* A complete checkpoint, as DONE describes it. */
typedef struct ckpt_info {
    char     dir[CKPT_PATH_MAX];
    uint64_t step;
    uint32_t world;
} ckpt_info;

/* Checks that dir is a complete checkpoint: DONE present, well-formed, its checksum right, and
 * each rank file present with the recorded size and a valid header for (step, rank, world).
 * ECORRUPT with a message saying what is missing or wrong (an incomplete checkpoint: no DONE). */
int ckpt_check(const char *dir, ckpt_info *info, adapt_error *err);
/* The newest complete checkpoint under root; incomplete or damaged ones are passed over.
 * ENOTFOUND when there is none. */
int ckpt_find_latest(const char *root, ckpt_info *info, adapt_error *err);
/* --resume: `requested` NULL means the newest complete checkpoint under root; otherwise that
 * directory, refused unless complete. A checkpoint of another world size is refused (the data
 * slices and RNG streams are per rank). */
int ckpt_resolve_resume(const char *root, const char *requested, uint32_t world,
                        ckpt_info *info, adapt_error *err);
/* Reads rank `st->rank` of a checkpoint into st: the caller sets rank, world, zero_stage,
 * n_params, m, v; everything else is filled. A file of another zero_stage or moment length is
 * refused (EINVAL, saying which). Every byte is checked before it is used. */
int ckpt_read_rank(const char *dir, ckpt_state *st, adapt_error *err);
/* Deletes complete checkpoints older than the newest keep_last (0: none); incomplete ones and
 * the ones being written are left alone. Each is first renamed to a hidden name, so a deletion
 * cut short never leaves something that looks like a checkpoint. */
int ckpt_prune(const char *root, uint32_t keep_last, adapt_error *err);

#endif
