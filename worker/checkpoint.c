/* checkpoint: writing, finding, checking and reading checkpoints; see checkpoint.h for the
 * layout. Paths are built into fixed CKPT_PATH_MAX buffers and refused when too long, so no
 * path is ever silently cut. */
#include "checkpoint.h"

#include "crc32c.h"
#include "file_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- small helpers ------------------------------------------------------------------------- */

static int ckpt_path(char *buf, const char *err_what, adapt_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int ckpt_path(char *buf, const char *err_what, adapt_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, CKPT_PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= CKPT_PATH_MAX)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint: path of %s is too long", err_what);
    return ADAPT_OK;
}

void ckpt_dir_path(char *buf, size_t cap, const char *root, uint64_t step)
{
    snprintf(buf, cap, "%s/step-%08" PRIu64, root, step);
}

static void ckpt_put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void ckpt_put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t ckpt_get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t ckpt_get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static int ckpt_host_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static int ckpt_fsync_dir(const char *dir, adapt_error *err)
{
    int rc = file_io_fsync_dir(dir, err);
    if (rc) adapt_error_prefix(err, "checkpoint: ");
    return rc;
}

static int ckpt_write_fail(const char *path, adapt_error *err)
{
    return adapt_fail(err, ADAPT_EIO, "checkpoint: writing %s: %s", path, strerror(errno));
}

static int ckpt_read_at(int fd, void *buf, size_t len, uint64_t off, const char *path,
                        adapt_error *err)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return adapt_fail(err, r < 0 ? ADAPT_EIO : ADAPT_ECORRUPT,
                              "checkpoint: %s: %s at offset %" PRIu64, path,
                              r < 0 ? strerror(errno) : "file ends early", off);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return ADAPT_OK;
}

/* Closes fd after fsync, renames tmp to path. */
static int ckpt_finish_file(int fd, const char *tmp, const char *path, adapt_error *err)
{
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return adapt_fail(err, ADAPT_EIO, "checkpoint: fsync of %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return adapt_fail(err, ADAPT_EIO, "checkpoint: rename %s -> %s: %s", tmp, path,
                          strerror(e));
    }
    return ADAPT_OK;
}

static int ckpt_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

static int ckpt_rm_tree(const char *path, adapt_error *err)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? ADAPT_OK :
        adapt_fail(err, ADAPT_EIO, "checkpoint: %s: %s", path, strerror(errno));
    if (nftw(path, ckpt_rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return adapt_fail(err, ADAPT_EIO, "checkpoint: removing %s: %s", path, strerror(errno));
    return ADAPT_OK;
}

/* --- writing --------------------------------------------------------------------------------- */

int ckpt_begin(const char *root, uint64_t step, adapt_error *err)
{
    char tmp[CKPT_PATH_MAX];
    int rc = ckpt_path(tmp, "the checkpoint", err, "%s/.step-%08" PRIu64 ".tmp", root, step);
    if (rc) return rc;
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        return adapt_fail(err, ADAPT_EIO, "checkpoint: cannot create %s: %s", root,
                          strerror(errno));
    if ((rc = ckpt_rm_tree(tmp, err))) return rc;
    if (mkdir(tmp, 0755) != 0)
        return adapt_fail(err, ADAPT_EIO, "checkpoint: cannot create %s: %s", tmp,
                          strerror(errno));
    return ckpt_fsync_dir(root, err);
}

static void ckpt_header_encode(uint8_t h[CKPT_HEADER_SIZE], const ckpt_state *st,
                               uint32_t table_crc)
{
    memset(h, 0, CKPT_HEADER_SIZE);
    memcpy(h, CKPT_STATE_MAGIC, 8);
    ckpt_put32(h + 8, CKPT_VERSION);
    ckpt_put32(h + 12, CKPT_HEADER_SIZE);
    ckpt_put32(h + 16, st->rank);
    ckpt_put32(h + 20, st->world);
    ckpt_put64(h + 24, st->step);
    ckpt_put64(h + 32, st->epoch);
    ckpt_put64(h + 40, st->epoch_step);
    ckpt_put64(h + 48, st->samples);
    ckpt_put64(h + 56, st->tokens);
    for (int i = 0; i < 4; i++) ckpt_put64(h + 64 + 8 * i, st->rng[i]);
    ckpt_put64(h + 96, st->n_params);
    ckpt_put32(h + 104, CKPT_CHUNK_BYTES);
    ckpt_put32(h + 108, table_crc);
    ckpt_put32(h + 112, st->stage);
    ckpt_put32(h + 116, st->zero_stage);
    ckpt_put32(h + 124, crc32c(h, 124));
}

static uint64_t ckpt_n_chunks(uint64_t n_params)
{
    uint64_t bytes = n_params * 8;
    return bytes / CKPT_CHUNK_BYTES + (bytes % CKPT_CHUNK_BYTES != 0);
}

/* The chunk table of m then v seen as one byte stream. */
static uint32_t *ckpt_chunk_table(const ckpt_state *st, uint64_t n_chunks)
{
    uint32_t *t = malloc((n_chunks ? n_chunks : 1) * sizeof *t);
    if (!t) return NULL;
    const uint8_t *part[2] = { (const uint8_t *)st->m, (const uint8_t *)st->v };
    uint64_t half = st->n_params * 4;
    for (uint64_t c = 0; c < n_chunks; c++) {
        uint64_t b = c * CKPT_CHUNK_BYTES, e = b + CKPT_CHUNK_BYTES;
        if (e > 2 * half) e = 2 * half;
        uint32_t crc = 0;
        for (uint64_t at = b; at < e;) {
            int k = at >= half;
            uint64_t stop = k ? e : (e < half ? e : half);
            crc = crc32c_update(crc, part[k] + (at - (uint64_t)k * half), (size_t)(stop - at));
            at = stop;
        }
        t[c] = crc;
    }
    return t;
}

static int ckpt_write_state_file(const char *dir, const ckpt_state *st, adapt_error *err)
{
    char path[CKPT_PATH_MAX], tmp[CKPT_PATH_MAX];
    int rc = ckpt_path(path, "a rank file", err, "%s/rank-%05u.state", dir, st->rank);
    if (!rc) rc = ckpt_path(tmp, "a rank file", err, "%s/rank-%05u.state.tmp", dir, st->rank);
    if (rc) return rc;
    uint64_t n_chunks = ckpt_n_chunks(st->n_params);
    uint32_t *table = ckpt_chunk_table(st, n_chunks);
    if (!table) return adapt_fail(err, ADAPT_ENOMEM, "checkpoint: no memory for %s", path);
    uint8_t *tbytes = (uint8_t *)table;   /* little-endian host: the table is its own bytes */
    uint8_t h[CKPT_HEADER_SIZE];
    ckpt_header_encode(h, st, crc32c(tbytes, n_chunks * 4));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(table);
        return adapt_fail(err, ADAPT_EIO, "checkpoint: cannot create %s: %s", tmp, strerror(errno));
    }
    if (file_io_write_all(fd, h, sizeof h) || file_io_write_all(fd, st->m, st->n_params * 4) ||
        file_io_write_all(fd, st->v, st->n_params * 4) ||
        file_io_write_all(fd, tbytes, n_chunks * 4))
        rc = ckpt_write_fail(tmp, err);
    free(table);
    if (rc) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    return ckpt_finish_file(fd, tmp, path, err);
}

int ckpt_write_rank(const char *root, const ckpt_state *st, ckpt_write_weights_fn write_weights,
                    void *ctx, adapt_error *err)
{
    if (!ckpt_host_le())
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "checkpoint: big-endian hosts are not supported");
    if (st->world == 0 || st->rank >= st->world)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint: rank %u outside a world of %u",
                          st->rank, st->world);
    char dir[CKPT_PATH_MAX];
    int rc = ckpt_path(dir, "the checkpoint", err, "%s/.step-%08" PRIu64 ".tmp", root, st->step);
    if (rc) return rc;
    if ((rc = ckpt_write_state_file(dir, st, err))) return rc;
    if (st->rank == 0 && write_weights) {
        rc = write_weights(ctx, dir, err);
        if (rc) return adapt_error_prefix(err, "checkpoint %s: writing the weights: ", dir);
    }
    return ADAPT_OK;
}

/* DONE's text for a checkpoint whose rank files have the given sizes. */
static int ckpt_done_text(char *buf, size_t cap, uint64_t step, uint32_t world,
                          const uint64_t *sizes)
{
    size_t n = (size_t)snprintf(buf, cap, "adaptd checkpoint %u\nstep %" PRIu64 "\nworld %u\n",
                                CKPT_VERSION, step, world);
    for (uint32_t r = 0; r < world && n < cap; r++)
        n += (size_t)snprintf(buf + n, cap - n, "rank %u bytes %" PRIu64 "\n", r, sizes[r]);
    if (n >= cap) return -1;
    uint32_t crc = crc32c(buf, n);
    n += (size_t)snprintf(buf + n, cap - n, "crc32c %08x\n", crc);
    return n < cap ? (int)n : -1;
}

static int ckpt_check_state_header(const char *path, uint64_t step, uint32_t rank,
                                   uint32_t world, uint64_t *n_params, uint64_t *size,
                                   adapt_error *err);

static int ckpt_write_done(const char *dir, uint64_t step, uint32_t world, adapt_error *err)
{
    uint64_t *sizes = calloc(world, sizeof *sizes);
    size_t cap = 128 + (size_t)world * 48;
    char *text = malloc(cap);
    int rc = !sizes || !text ? adapt_fail(err, ADAPT_ENOMEM, "checkpoint: no memory") : 0;
    for (uint32_t r = 0; r < world && !rc; r++) {
        char path[CKPT_PATH_MAX];
        uint64_t np;
        rc = ckpt_path(path, "a rank file", err, "%s/rank-%05u.state", dir, r);
        if (!rc) rc = ckpt_check_state_header(path, step, r, world, &np, &sizes[r], err);
        if (rc) adapt_error_prefix(err, "checkpoint %s cannot be completed: ", dir);
    }
    int len = rc ? 0 : ckpt_done_text(text, cap, step, world, sizes);
    if (len < 0) rc = adapt_fail(err, ADAPT_EINVAL, "checkpoint: DONE text too long");
    char path[CKPT_PATH_MAX], tmp[CKPT_PATH_MAX];
    if (!rc) rc = ckpt_path(path, "DONE", err, "%s/" CKPT_DONE_NAME, dir);
    if (!rc) rc = ckpt_path(tmp, "DONE", err, "%s/" CKPT_DONE_NAME ".tmp", dir);
    int fd = rc ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!rc && fd < 0)
        rc = adapt_fail(err, ADAPT_EIO, "checkpoint: cannot create %s: %s", tmp, strerror(errno));
    if (!rc && file_io_write_all(fd, text, (size_t)len)) rc = ckpt_write_fail(tmp, err);
    if (!rc) rc = ckpt_finish_file(fd, tmp, path, err);
    else if (fd >= 0) close(fd);
    free(sizes);
    free(text);
    return rc;
}

int ckpt_commit(const char *root, uint64_t step, uint32_t world, uint32_t keep_last,
                adapt_error *err)
{
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX], old[CKPT_PATH_MAX];
    int rc = ckpt_path(tmp, "the checkpoint", err, "%s/.step-%08" PRIu64 ".tmp", root, step);
    if (!rc) rc = ckpt_path(dir, "the checkpoint", err, "%s/step-%08" PRIu64, root, step);
    if (!rc) rc = ckpt_path(old, "the checkpoint", err, "%s/.step-%08" PRIu64 ".replaced", root,
                            step);
    if (!rc) rc = ckpt_write_done(tmp, step, world, err);
    if (!rc) rc = ckpt_fsync_dir(tmp, err);
    if (rc) return rc;
    /* A checkpoint of this step from a history that a resume from an older one abandoned. */
    struct stat sb;
    int replacing = stat(dir, &sb) == 0;
    if (replacing && ((rc = ckpt_rm_tree(old, err)) || rename(dir, old) != 0))
        return rc ? rc : adapt_fail(err, ADAPT_EIO, "checkpoint: moving aside %s: %s", dir,
                                    strerror(errno));
    if (rename(tmp, dir) != 0)
        return adapt_fail(err, ADAPT_EIO, "checkpoint: rename %s -> %s: %s", tmp, dir,
                          strerror(errno));
    if ((rc = ckpt_fsync_dir(root, err))) return rc;
    if (replacing && (rc = ckpt_rm_tree(old, err))) return rc;
    return keep_last ? ckpt_prune(root, keep_last, err) : ADAPT_OK;
}

int ckpt_save(const char *root, const ckpt_state *st, ckpt_write_weights_fn write_weights,
              void *ctx, uint32_t keep_last, adapt_error *err)
{
    if (st->world != 1)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint: ckpt_save is for a world of one, "
                          "not %u: use begin / write_rank / commit with barriers", st->world);
    int rc = ckpt_begin(root, st->step, err);
    if (!rc) rc = ckpt_write_rank(root, st, write_weights, ctx, err);
    if (!rc) rc = ckpt_commit(root, st->step, 1, keep_last, err);
    return rc;
}

/* --- checking and reading -------------------------------------------------------------------- */

/* Reads and checks the header of a state file; fills st (all but m, v) and *size. */
static int ckpt_read_header(int fd, const char *path, ckpt_state *st, uint32_t *table_crc,
                            uint64_t *size, adapt_error *err)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return adapt_fail(err, ADAPT_EIO, "checkpoint: %s: %s", path, strerror(errno));
    uint8_t h[CKPT_HEADER_SIZE];
    if (sb.st_size < (off_t)CKPT_HEADER_SIZE)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s is truncated at offset %lld, "
                          "shorter than its %u-byte header", path, (long long)sb.st_size,
                          CKPT_HEADER_SIZE);
    int rc = ckpt_read_at(fd, h, sizeof h, 0, path, err);
    if (rc) return rc;
    if (memcmp(h, CKPT_STATE_MAGIC, 8))
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s: bad magic at offset 0, not a "
                          "rank state file", path);
    if (ckpt_get32(h + 124) != crc32c(h, 124))
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s: header checksum mismatch "
                          "(bytes 0..127 at offset 0 are damaged)", path);
    if (ckpt_get32(h + 8) != CKPT_VERSION || ckpt_get32(h + 12) != CKPT_HEADER_SIZE ||
        ckpt_get32(h + 104) != CKPT_CHUNK_BYTES)
        return adapt_fail(err, ADAPT_EVERSION, "checkpoint: %s: format version %u, this build "
                          "reads version %u", path, ckpt_get32(h + 8), CKPT_VERSION);
    st->rank = ckpt_get32(h + 16);
    st->world = ckpt_get32(h + 20);
    st->step = ckpt_get64(h + 24);
    st->epoch = ckpt_get64(h + 32);
    st->epoch_step = ckpt_get64(h + 40);
    st->samples = ckpt_get64(h + 48);
    st->tokens = ckpt_get64(h + 56);
    for (int i = 0; i < 4; i++) st->rng[i] = ckpt_get64(h + 64 + 8 * i);
    st->n_params = ckpt_get64(h + 96);
    *table_crc = ckpt_get32(h + 108);
    st->stage = ckpt_get32(h + 112);
    st->zero_stage = ckpt_get32(h + 116);
    if (st->n_params > (UINT64_MAX - CKPT_HEADER_SIZE) / 16)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s: absurd parameter count %" PRIu64
                          " at offset 96", path, st->n_params);
    uint64_t want = CKPT_HEADER_SIZE + st->n_params * 8 + ckpt_n_chunks(st->n_params) * 4;
    if ((uint64_t)sb.st_size != want)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s is %lld bytes, its header says "
                          "%" PRIu64 " (truncated or extended at offset %lld)", path,
                          (long long)sb.st_size, want,
                          (long long)((uint64_t)sb.st_size < want ? sb.st_size : (off_t)want));
    *size = want;
    return ADAPT_OK;
}

static int ckpt_check_state_header(const char *path, uint64_t step, uint32_t rank,
                                   uint32_t world, uint64_t *n_params, uint64_t *size,
                                   adapt_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ECORRUPT : ADAPT_EIO,
                          "checkpoint: rank %u's file %s: %s", rank, path, strerror(errno));
    ckpt_state st;
    uint32_t tcrc;
    int rc = ckpt_read_header(fd, path, &st, &tcrc, size, err);
    close(fd);
    if (rc) return rc;
    if (st.step != step || st.rank != rank || st.world != world)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s holds step %" PRIu64 " rank %u "
                          "of %u, expected step %" PRIu64 " rank %u of %u", path, st.step,
                          st.rank, st.world, step, rank, world);
    *n_params = st.n_params;
    return ADAPT_OK;
}

/* Reads DONE (at most 1 MiB) into a NUL-terminated buffer. */
static int ckpt_read_done(const char *dir, char **text, adapt_error *err)
{
    char path[CKPT_PATH_MAX];
    int rc = ckpt_path(path, "DONE", err, "%s/" CKPT_DONE_NAME, dir);
    if (rc) return rc;
    FILE *f = fopen(path, "rb");
    if (!f)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint %s is incomplete: no " CKPT_DONE_NAME
                          " marker (%s), it was interrupted while being written; resume from "
                          "an earlier checkpoint", dir, strerror(errno));
    size_t cap = 1 << 20;
    char *b = malloc(cap + 1);
    size_t n = b ? fread(b, 1, cap, f) : 0;
    fclose(f);
    if (!b) return adapt_fail(err, ADAPT_ENOMEM, "checkpoint: no memory");
    b[n] = '\0';
    *text = b;
    return ADAPT_OK;
}

/* Parses DONE: checksum line last, then the fields it covers. sizes[world] malloc'd. */
static int ckpt_parse_done(const char *dir, char *t, ckpt_info *info, uint64_t **sizes,
                           adapt_error *err)
{
    size_t len = strlen(t);
    /* Exactly "crc32c " + 8 lower-case hex digits + "\n": sscanf alone would let a damaged
     * last byte through (a "\n" in its format matches no white space at all). */
    char *crc_line = len > 16 ? t + len - 16 : NULL;
    int well_formed = crc_line && crc_line[-1] == '\n' && !strncmp(crc_line, "crc32c ", 7) &&
                      strspn(crc_line + 7, "0123456789abcdef") == 8 && crc_line[15] == '\n';
    if (!well_formed ||
        (uint32_t)strtoul(crc_line + 7, NULL, 16) != crc32c(t, (size_t)(crc_line - t)))
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint %s: " CKPT_DONE_NAME " is damaged "
                          "(checksum line missing or wrong)", dir);
    unsigned version, world;
    uint64_t step;
    int used = 0;
    if (sscanf(t, "adaptd checkpoint %u\nstep %" SCNu64 "\nworld %u\n%n", &version, &step,
               &world, &used) != 3 || used == 0)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint %s: " CKPT_DONE_NAME " is not "
                          "readable", dir);
    if (version != CKPT_VERSION)
        return adapt_fail(err, ADAPT_EVERSION, "checkpoint %s: version %u, this build reads %u",
                          dir, version, CKPT_VERSION);
    if (world == 0 || world > 1000000)
        return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint %s: world %u in " CKPT_DONE_NAME,
                          dir, world);
    uint64_t *s = calloc(world, sizeof *s);
    if (!s) return adapt_fail(err, ADAPT_ENOMEM, "checkpoint: no memory");
    const char *p = t + used;
    for (unsigned r = 0; r < world; r++) {
        unsigned rr;
        int n = 0;
        if (sscanf(p, "rank %u bytes %" SCNu64 "\n%n", &rr, &s[r], &n) != 2 || rr != r || !n) {
            free(s);
            return adapt_fail(err, ADAPT_ECORRUPT, "checkpoint %s: " CKPT_DONE_NAME " lacks "
                              "rank %u's line", dir, r);
        }
        p += n;
    }
    info->step = step;
    info->world = world;
    *sizes = s;
    return ADAPT_OK;
}

int ckpt_check(const char *dir, ckpt_info *info, adapt_error *err)
{
    if (strlen(dir) >= sizeof info->dir)
        return adapt_fail(err, ADAPT_EINVAL, "checkpoint: path %s is too long", dir);
    char *text = NULL;
    uint64_t *sizes = NULL;
    int rc = ckpt_read_done(dir, &text, err);
    if (!rc) rc = ckpt_parse_done(dir, text, info, &sizes, err);
    for (uint32_t r = 0; !rc && r < info->world; r++) {
        char path[CKPT_PATH_MAX];
        uint64_t np, size;
        rc = ckpt_path(path, "a rank file", err, "%s/rank-%05u.state", dir, r);
        if (!rc) rc = ckpt_check_state_header(path, info->step, r, info->world, &np, &size, err);
        if (!rc && size != sizes[r])
            rc = adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s is %" PRIu64 " bytes, "
                            CKPT_DONE_NAME " recorded %" PRIu64, path, size, sizes[r]);
    }
    if (!rc) strcpy(info->dir, dir);
    free(text);
    free(sizes);
    return rc;
}

/* Step of a directory entry named step-NNNNNNNN (8 or more digits), or -1. */
static int ckpt_parse_name(const char *name, uint64_t *step)
{
    if (strncmp(name, "step-", 5)) return -1;
    const char *d = name + 5;
    size_t n = strspn(d, "0123456789");
    if (n < 8 || n > 19 || d[n]) return -1;
    *step = strtoull(d, NULL, 10);
    return 0;
}

static int ckpt_cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Steps of every step-N directory name under root, newest first. */
static int ckpt_list(const char *root, uint64_t **steps, size_t *n, adapt_error *err)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                          "checkpoint: cannot read %s: %s", root, strerror(errno));
    size_t cap = 0;
    int rc = ADAPT_OK;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        uint64_t s;
        if (ckpt_parse_name(e->d_name, &s)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *ns = realloc(*steps, cap * sizeof *ns);
            if (!ns) { rc = adapt_fail(err, ADAPT_ENOMEM, "checkpoint: no memory"); break; }
            *steps = ns;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    if (rc) { free(*steps); *steps = NULL; *n = 0; return rc; }
    if (*n) qsort(*steps, *n, sizeof **steps, ckpt_cmp_desc);
    return ADAPT_OK;
}

int ckpt_find_latest(const char *root, ckpt_info *info, adapt_error *err)
{
    uint64_t *steps;
    size_t n;
    int rc = ckpt_list(root, &steps, &n, err);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        char dir[CKPT_PATH_MAX];
        adapt_error skip;
        if (ckpt_path(dir, "the checkpoint", err, "%s/step-%08" PRIu64, root, steps[i])) break;
        if (ckpt_check(dir, info, &skip) == ADAPT_OK && info->step == steps[i]) {
            free(steps);
            return ADAPT_OK;
        }
    }
    free(steps);
    return adapt_fail(err, ADAPT_ENOTFOUND, "checkpoint: no complete checkpoint under %s", root);
}

int ckpt_resolve_resume(const char *root, const char *requested, uint32_t world,
                        ckpt_info *info, adapt_error *err)
{
    int rc = requested ? ckpt_check(requested, info, err) : ckpt_find_latest(root, info, err);
    if (rc) {
        if (requested) adapt_error_prefix(err, "--resume refused: ");
        return rc;
    }
    if (info->world != world)
        return adapt_fail(err, ADAPT_EINVAL, "--resume refused: checkpoint %s was written by "
                          "%u ranks, this run has %u; resume with the same number of ranks",
                          info->dir, info->world, world);
    return ADAPT_OK;
}

/* Reads the moments chunk by chunk, each checked against the table before it is copied. */
static int ckpt_read_moments(int fd, const char *path, ckpt_state *st, uint32_t table_crc,
                             adapt_error *err)
{
    uint64_t n_chunks = ckpt_n_chunks(st->n_params), half = st->n_params * 4;
    uint64_t table_at = CKPT_HEADER_SIZE + 2 * half;
    uint8_t *table = malloc(n_chunks ? n_chunks * 4 : 1), *buf = malloc(CKPT_CHUNK_BYTES);
    int rc = !table || !buf ? adapt_fail(err, ADAPT_ENOMEM, "checkpoint: no memory") : 0;
    if (!rc) rc = ckpt_read_at(fd, table, n_chunks * 4, table_at, path, err);
    if (!rc && crc32c(table, n_chunks * 4) != table_crc)
        rc = adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s: chunk table damaged (offset %"
                        PRIu64 ")", path, table_at);
    uint8_t *part[2] = { (uint8_t *)st->m, (uint8_t *)st->v };
    for (uint64_t c = 0; c < n_chunks && !rc; c++) {
        uint64_t b = c * CKPT_CHUNK_BYTES, e = b + CKPT_CHUNK_BYTES;
        if (e > 2 * half) e = 2 * half;
        rc = ckpt_read_at(fd, buf, (size_t)(e - b), CKPT_HEADER_SIZE + b, path, err);
        if (!rc && crc32c(buf, (size_t)(e - b)) != ckpt_get32(table + 4 * c))
            rc = adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s: optimizer moments damaged at "
                            "offset %" PRIu64 " (the %" PRIu64 "-byte chunk there fails its "
                            "crc32c); resume from an earlier checkpoint", path,
                            CKPT_HEADER_SIZE + b, e - b);
        for (uint64_t at = b; !rc && at < e;) {
            int k = at >= half;
            uint64_t stop = k ? e : (e < half ? e : half);
            memcpy(part[k] + (at - (uint64_t)k * half), buf + (at - b), (size_t)(stop - at));
            at = stop;
        }
    }
    free(table);
    free(buf);
    return rc;
}

int ckpt_read_rank(const char *dir, ckpt_state *st, adapt_error *err)
{
    if (!ckpt_host_le())
        return adapt_fail(err, ADAPT_EUNSUPPORTED, "checkpoint: big-endian hosts are not supported");
    char path[CKPT_PATH_MAX];
    int rc = ckpt_path(path, "a rank file", err, "%s/rank-%05u.state", dir, st->rank);
    if (rc) return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return adapt_fail(err, errno == ENOENT ? ADAPT_ECORRUPT : ADAPT_EIO,
                          "checkpoint: %s: %s", path, strerror(errno));
    ckpt_state got = { 0 };
    uint32_t table_crc;
    uint64_t size;
    rc = ckpt_read_header(fd, path, &got, &table_crc, &size, err);
    if (!rc && (got.rank != st->rank || got.world != st->world))
        rc = adapt_fail(err, ADAPT_ECORRUPT, "checkpoint: %s holds rank %u of %u, expected "
                        "rank %u of %u", path, got.rank, got.world, st->rank, st->world);
    /* before the length: a changed zero_stage changes the length too, and this says why */
    if (!rc && got.zero_stage != st->zero_stage)
        rc = adapt_fail(err, ADAPT_EINVAL, "checkpoint: %s holds %s optimizer moments "
                        "(zero_stage %u), this run has zero_stage %u: resume with the "
                        "zero_stage that wrote the checkpoint", path,
                        got.zero_stage ? "sharded" : "whole", got.zero_stage, st->zero_stage);
    if (!rc && got.n_params != st->n_params)
        rc = adapt_fail(err, ADAPT_EINVAL, "checkpoint: %s holds moments for %" PRIu64
                        " parameters, the model being trained has %" PRIu64 "", path,
                        got.n_params, st->n_params);
    if (!rc) {
        got.m = st->m;
        got.v = st->v;
        rc = ckpt_read_moments(fd, path, &got, table_crc, err);
    }
    close(fd);
    if (!rc) *st = got;
    return rc;
}

int ckpt_prune(const char *root, uint32_t keep_last, adapt_error *err)
{
    if (keep_last == 0) return ADAPT_OK;
    uint64_t *steps;
    size_t n;
    int rc = ckpt_list(root, &steps, &n, err);
    if (rc) return rc;
    uint32_t kept = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        char dir[CKPT_PATH_MAX], gone[CKPT_PATH_MAX];
        ckpt_info info;
        adapt_error skip;
        rc = ckpt_path(dir, "the checkpoint", err, "%s/step-%08" PRIu64, root, steps[i]);
        if (!rc) rc = ckpt_path(gone, "the checkpoint", err, "%s/.step-%08" PRIu64 ".deleting",
                                root, steps[i]);
        if (rc || ckpt_check(dir, &info, &skip) != ADAPT_OK) continue;   /* not complete */
        if (kept++ < keep_last) continue;
        if ((rc = ckpt_rm_tree(gone, err))) break;
        if (rename(dir, gone) != 0) {
            rc = adapt_fail(err, ADAPT_EIO, "checkpoint: moving %s aside: %s", dir, strerror(errno));
            break;
        }
        rc = ckpt_fsync_dir(root, err);
        if (!rc) rc = ckpt_rm_tree(gone, err);
    }
    free(steps);
    return rc;
}
