/* test_checkpoint: checkpoints on disk (worker/checkpoint.c). Write → find → read round trip
 * bit-exact (moments spanning several crc chunks and the m/v boundary, every header field, the
 * weights callback's file); a checkpoint without DONE is never chosen and --resume on it is
 * refused; damaged moments are refused with the file and the offset of the damaged chunk; a
 * damaged header, DONE or truncated file are refused; keep-last-K deletes only older complete
 * checkpoints; two ranks commit together and a missing rank stops the commit; a checkpoint of
 * ZeRO-1 moments (zero_stage 1) round-trips and is refused to a run of the other zero_stage. */
#include "check.h"
#include "checkpoint.h"
#include "safetensors.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { NP = 300000 };   /* 2.4 MB of moments: 3 chunks, the second straddling m and v */

static char root[256];

static int write_weights(void *ctx, const char *dir, adapt_error *err)
{
    const float *w = ctx;
    char path[CKPT_PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    safetensors_entry e = { .name = "w", .dtype = SAFETENSORS_F32, .ndim = 1, .shape = { 4 },
                            .data = w };
    return safetensors_write_file(path, &e, 1, err);
}

static void fill_state(ckpt_state *st, float *m, float *v, uint64_t step, uint32_t rank,
                       uint32_t world)
{
    for (size_t i = 0; i < NP; i++) {
        m[i] = (float)i * 1e-3f + (float)step + (float)rank * 0.5f;
        v[i] = 1.0f / (float)(i + 1 + step);
    }
    *st = (ckpt_state){ .step = step, .rank = rank, .world = world, .epoch = step / 3,
                        .epoch_step = step % 3, .samples = step * 16, .tokens = step * 4096,
                        .rng = { step, ~step, 0x0123456789abcdefULL, rank }, .stage = 2,
                        .n_params = NP, .m = m, .v = v };
}

static int path_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (!f) return;
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
}

static void test_round_trip(float *m, float *v, float *m2, float *v2)
{
    const float w[4] = { 1, 2, 3, 4 };
    ckpt_state st;
    fill_state(&st, m, v, 7, 0, 1);
    adapt_error e = { 0 };
    CHECK_MSG(ckpt_save(root, &st, write_weights, (void *)w, 0, &e) == ADAPT_OK, "%s", e.message);
    ckpt_info info;
    CHECK_MSG(ckpt_find_latest(root, &info, &e) == ADAPT_OK, "%s", e.message);
    CHECK(info.step == 7 && info.world == 1);
    char path[CKPT_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/model.safetensors", info.dir);
    CHECK(path_exists(path));
    safetensors_t *sf;
    if (safetensors_open(&sf, path, &e) == ADAPT_OK) {
        float back[4];
        CHECK(safetensors_read_f32(sf, "w", back, 4, &e) == ADAPT_OK);
        CHECK(memcmp(back, w, sizeof w) == 0);
        safetensors_close(sf);
    } else {
        CHECK_MSG(0, "%s", e.message);
    }
    ckpt_state got = { .rank = 0, .world = 1, .n_params = NP, .m = m2, .v = v2 };
    CHECK_MSG(ckpt_read_rank(info.dir, &got, &e) == ADAPT_OK, "%s", e.message);
    CHECK(memcmp(m, m2, NP * sizeof *m) == 0 && memcmp(v, v2, NP * sizeof *v) == 0);
    CHECK(got.step == 7 && got.epoch == 2 && got.epoch_step == 1 && got.samples == 112);
    CHECK(got.tokens == 7 * 4096 && got.stage == 2);
    CHECK(memcmp(got.rng, st.rng, sizeof st.rng) == 0);
    CHECK(got.zero_stage == 0);
    /* a run of another zero_stage is refused */
    got = (ckpt_state){ .rank = 0, .world = 1, .zero_stage = 1, .n_params = NP, .m = m2, .v = v2 };
    CHECK(ckpt_read_rank(info.dir, &got, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "(zero_stage 0), this run has zero_stage 1");
    /* a model of another size is refused */
    got = (ckpt_state){ .rank = 0, .world = 1, .n_params = NP - 1, .m = m2, .v = v2 };
    CHECK(ckpt_read_rank(info.dir, &got, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "parameters");
}

/* zero_stage is recorded: a sharded checkpoint reads back as such, and a run of the other stage
 * is refused by name (before the length, which also differs). */
static void test_zero_stage(float *m, float *v, float *m2, float *v2)
{
    ckpt_state st;
    fill_state(&st, m, v, 500, 0, 1);
    st.zero_stage = 1;
    st.n_params = NP / 2;
    adapt_error e = { 0 };
    CHECK_MSG(ckpt_save(root, &st, NULL, NULL, 0, &e) == ADAPT_OK, "%s", e.message);
    ckpt_info info;
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_OK && info.step == 500);
    ckpt_state got = { .rank = 0, .world = 1, .zero_stage = 1, .n_params = NP / 2, .m = m2,
                       .v = v2 };
    CHECK_MSG(ckpt_read_rank(info.dir, &got, &e) == ADAPT_OK, "%s", e.message);
    CHECK(got.zero_stage == 1 && memcmp(m, m2, NP / 2 * sizeof *m) == 0 &&
          memcmp(v, v2, NP / 2 * sizeof *v) == 0);
    got = (ckpt_state){ .rank = 0, .world = 1, .n_params = NP, .m = m2, .v = v2 };
    CHECK(ckpt_read_rank(info.dir, &got, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "(zero_stage 1), this run has zero_stage 0");
}

/* An interrupted checkpoint (no DONE) is never chosen, and --resume on it is refused. */
static void test_incomplete(float *m, float *v)
{
    ckpt_state st;
    fill_state(&st, m, v, 9, 0, 1);
    adapt_error e;
    CHECK(ckpt_begin(root, 9, &e) == ADAPT_OK);
    CHECK(ckpt_write_rank(root, &st, NULL, NULL, &e) == ADAPT_OK);
    /* killed here: also make it look finished by name alone, without DONE */
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.step-%08d.tmp", root, 9);
    ckpt_dir_path(dir, sizeof dir, root, 9);
    CHECK(rename(tmp, dir) == 0);
    ckpt_info info;
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_OK);
    CHECK(info.step == 7);
    CHECK(ckpt_resolve_resume(root, dir, 1, &info, &e) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(e.message, "--resume refused");
    CHECK_STR_CONTAINS(e.message, "incomplete");
    CHECK_STR_CONTAINS(e.message, dir);
    CHECK(ckpt_resolve_resume(root, NULL, 1, &info, &e) == ADAPT_OK && info.step == 7);
    CHECK(ckpt_resolve_resume(root, NULL, 2, &info, &e) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(e.message, "same number of ranks");
}

static void copy_ckpt(uint64_t from, uint64_t to)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp -r %s/step-%08" PRIu64 " %s/step-%08" PRIu64, root, from,
             root, to);
    CHECK(system(cmd) == 0);
}

/* Damage at known places: moments (file and offset named), header, DONE, truncation. */
static void test_corruption(float *m2, float *v2)
{
    adapt_error e;
    char dir[CKPT_PATH_MAX], file[CKPT_PATH_MAX + 32];
    ckpt_info info;
    /* moments: byte 1.5 MiB into the data lies in chunk 1, which starts at 128 + 1 MiB */
    copy_ckpt(7, 100);
    ckpt_dir_path(dir, sizeof dir, root, 100);
    snprintf(file, sizeof file, "%s/rank-00000.state", dir);
    flip_byte(file, 128 + 1536 * 1024);
    ckpt_state got = { .rank = 0, .world = 1, .n_params = NP, .m = m2, .v = v2 };
    CHECK(ckpt_read_rank(dir, &got, &e) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(e.message, file);
    CHECK_STR_CONTAINS(e.message, "offset 1048704");
    /* header */
    copy_ckpt(7, 101);
    ckpt_dir_path(dir, sizeof dir, root, 101);
    snprintf(file, sizeof file, "%s/rank-00000.state", dir);
    flip_byte(file, 40);
    CHECK(ckpt_check(dir, &info, &e) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(e.message, "header checksum");
    /* DONE */
    copy_ckpt(7, 102);
    ckpt_dir_path(dir, sizeof dir, root, 102);
    snprintf(file, sizeof file, "%s/DONE", dir);
    flip_byte(file, 25);
    CHECK(ckpt_check(dir, &info, &e) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(e.message, "DONE");
    /* any single damaged byte of DONE or of a state header is caught */
    int missed = 0;
    ckpt_dir_path(dir, sizeof dir, root, 7);
    for (int pass = 0; pass < 2; pass++) {
        snprintf(file, sizeof file, pass ? "%s/rank-00000.state" : "%s/DONE", dir);
        struct stat sb;
        stat(file, &sb);
        long n = pass ? 128 : (long)sb.st_size;
        for (long off = 0; off < n; off++) {
            flip_byte(file, off);
            missed += ckpt_check(dir, &info, &e) == ADAPT_OK;
            flip_byte(file, off);   /* flip back */
        }
    }
    CHECK_MSG(missed == 0, "%d damaged bytes went unnoticed", missed);
    CHECK(ckpt_check(dir, &info, &e) == ADAPT_OK);
    /* truncated state file */
    copy_ckpt(7, 103);
    ckpt_dir_path(dir, sizeof dir, root, 103);
    snprintf(file, sizeof file, "%s/rank-00000.state", dir);
    CHECK(truncate(file, 5000) == 0);
    CHECK(ckpt_check(dir, &info, &e) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(e.message, "truncated");
    /* copies under another step's name are not trusted (DONE and the headers say step 7), and
     * 101..103 are damaged: the newest complete checkpoint is still step 7 */
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_OK && info.step == 7);
    for (uint64_t s = 100; s <= 103; s++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "rm -rf %s/step-%08" PRIu64, root, s);
        CHECK(system(cmd) == 0);
    }
}

static void test_keep_last(float *m, float *v)
{
    adapt_error e;
    for (uint64_t s = 10; s <= 14; s++) {
        ckpt_state st;
        fill_state(&st, m, v, s, 0, 1);
        CHECK_MSG(ckpt_save(root, &st, NULL, NULL, 2, &e) == ADAPT_OK, "%s", e.message);
    }
    char dir[CKPT_PATH_MAX];
    for (uint64_t s = 10; s <= 14; s++) {
        ckpt_dir_path(dir, sizeof dir, root, s);
        CHECK_MSG(path_exists(dir) == (s >= 13), "step %" PRIu64, s);
    }
    /* the complete step 7 is older and deleted; incomplete step 9 stays */
    ckpt_dir_path(dir, sizeof dir, root, 7);
    CHECK(!path_exists(dir));
    ckpt_dir_path(dir, sizeof dir, root, 9);
    CHECK(path_exists(dir));
    /* saving the same step again (an abandoned history) replaces it */
    ckpt_state st;
    fill_state(&st, m, v, 14, 0, 1);
    st.samples = 777;
    CHECK(ckpt_save(root, &st, NULL, NULL, 2, &e) == ADAPT_OK);
    ckpt_info info;
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_OK && info.step == 14);
    float *m2 = malloc(NP * sizeof *m2), *v2 = malloc(NP * sizeof *v2);
    ckpt_state got = { .rank = 0, .world = 1, .n_params = NP, .m = m2, .v = v2 };
    CHECK(ckpt_read_rank(info.dir, &got, &e) == ADAPT_OK && got.samples == 777);
    free(m2);
    free(v2);
}

static void test_two_ranks(float *m, float *v, float *m2, float *v2)
{
    adapt_error e;
    ckpt_state s0, s1;
    CHECK(ckpt_begin(root, 20, &e) == ADAPT_OK);
    fill_state(&s0, m, v, 20, 0, 2);
    CHECK(ckpt_write_rank(root, &s0, NULL, NULL, &e) == ADAPT_OK);
    /* rank 1 has not written: the commit is refused, nothing is published */
    CHECK(ckpt_commit(root, 20, 2, 0, &e) == ADAPT_ECORRUPT);
    CHECK_STR_CONTAINS(e.message, "rank-00001.state");
    ckpt_info info;
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_OK && info.step == 14);
    float *m1 = malloc(NP * sizeof *m1), *v1 = malloc(NP * sizeof *v1);
    fill_state(&s1, m1, v1, 20, 1, 2);
    CHECK(ckpt_write_rank(root, &s1, NULL, NULL, &e) == ADAPT_OK);
    CHECK_MSG(ckpt_commit(root, 20, 2, 0, &e) == ADAPT_OK, "%s", e.message);
    CHECK(ckpt_resolve_resume(root, NULL, 2, &info, &e) == ADAPT_OK && info.step == 20);
    ckpt_state got = { .rank = 1, .world = 2, .n_params = NP, .m = m2, .v = v2 };
    CHECK(ckpt_read_rank(info.dir, &got, &e) == ADAPT_OK);
    CHECK(memcmp(m1, m2, NP * sizeof *m2) == 0 && memcmp(v1, v2, NP * sizeof *v2) == 0);
    CHECK(got.rng[3] == 1);
    free(m1);
    free(v1);
}

static int failing_weights(void *ctx, const char *dir, adapt_error *err)
{
    return adapt_fail(err, ADAPT_EIO, "disk full (injected)");
}

/* Injected faults: a failing weights writer publishes nothing; a root that is a file. */
static void test_faults(float *m, float *v)
{
    adapt_error e;
    ckpt_state st;
    fill_state(&st, m, v, 30, 0, 1);
    CHECK(ckpt_save(root, &st, failing_weights, NULL, 0, &e) == ADAPT_EIO);
    CHECK_STR_CONTAINS(e.message, "writing the weights");
    CHECK_STR_CONTAINS(e.message, "disk full");
    ckpt_info info;
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_OK && info.step == 20);
    char file_root[300];
    snprintf(file_root, sizeof file_root, "%s/not-a-dir", root);
    FILE *f = fopen(file_root, "w");
    if (f) fclose(f);
    CHECK(ckpt_begin(file_root, 1, &e) == ADAPT_EIO);
    CHECK_STR_CONTAINS(e.message, "not-a-dir");
    CHECK(ckpt_find_latest(file_root, &info, &e) != ADAPT_OK);
    st.world = 2;
    CHECK(ckpt_save(root, &st, NULL, NULL, 0, &e) == ADAPT_EINVAL);
}

int main(void)
{
    const char *tmpdir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof root, "%s/adapt_ckpt_XXXXXX", tmpdir);
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    strcat(root, "/ckpt");   /* not there yet: ckpt_begin creates it */
    float *m = malloc(NP * sizeof *m), *v = malloc(NP * sizeof *v);
    float *m2 = malloc(NP * sizeof *m2), *v2 = malloc(NP * sizeof *v2);
    adapt_error e;
    ckpt_info info;
    CHECK(ckpt_find_latest(root, &info, &e) == ADAPT_ENOTFOUND);
    test_round_trip(m, v, m2, v2);
    test_incomplete(m, v);
    test_corruption(m2, v2);
    test_keep_last(m, v);
    test_two_ranks(m, v, m2, v2);
    test_faults(m, v);
    test_zero_stage(m, v, m2, v2);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %.*s", (int)(strlen(root) - 5), root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    free(m); free(v); free(m2); free(v2);
    return check_report("checkpoint");
}
