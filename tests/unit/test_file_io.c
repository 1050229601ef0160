/* file_io: the write loop against a pipe drained by another thread, fsync of a missing
 * directory, parent directories of edge-case paths, and atomic replacement surviving a writer
 * that dies mid-file (a file-size limit cuts the write short). */
#include "../check.h"
#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PIPE_BYTES (8u << 20)   /* far above a pipe's buffer: write must return short */

typedef struct pipe_reader {
    int      fd;
    uint8_t *got;
    size_t   n;
} pipe_reader;

static void *pipe_drain(void *arg)
{
    pipe_reader *r = arg;
    for (;;) {
        ssize_t k = read(r->fd, r->got + r->n, PIPE_BYTES + 1 - r->n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        r->n += (size_t)k;
    }
    return NULL;
}

static void test_write_all_pipe(void)
{
    uint8_t *buf = malloc(PIPE_BYTES);
    pipe_reader r = {.got = malloc(PIPE_BYTES + 1)};
    CHECK(buf && r.got);
    if (!buf || !r.got) return;
    for (size_t i = 0; i < PIPE_BYTES; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
    int fds[2];
    CHECK(pipe(fds) == 0);
    r.fd = fds[0];
    pthread_t t;
    CHECK(pthread_create(&t, NULL, pipe_drain, &r) == 0);
    CHECK(file_io_write_all(fds[1], buf, PIPE_BYTES) == 0);
    close(fds[1]);
    pthread_join(t, NULL);
    close(fds[0]);
    CHECK_MSG(r.n == PIPE_BYTES, "read %zu bytes of %u", r.n, PIPE_BYTES);
    CHECK(r.n == PIPE_BYTES && memcmp(buf, r.got, PIPE_BYTES) == 0);
    CHECK(file_io_write_all(fds[1], buf, 1) == -1 && errno == EBADF);
    free(buf);
    free(r.got);
}

static void test_parent_dir(void)
{
    static const struct { const char *path, *parent; } cases[] = {
        {"a",     "."},
        {"/a",    "/"},
        {"a/b/c", "a/b"},
        {"/",     "/"},
        {"/x/y",  "/x"},
    };
    char out[16];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(file_io_parent_dir(out, sizeof out, cases[i].path) == 0);
        CHECK_MSG(strcmp(out, cases[i].parent) == 0, "parent of '%s' is '%s', not '%s'",
                  cases[i].path, out, cases[i].parent);
    }
    char tiny[3];
    CHECK(file_io_parent_dir(tiny, sizeof tiny, "abc/d") == -1 && tiny[0] == '\0');
    CHECK(file_io_parent_dir(tiny, sizeof tiny, "ab/d") == 0 && strcmp(tiny, "ab") == 0);
}

static void test_fsync_dir(const char *root)
{
    adapt_error e = {0};
    CHECK(file_io_fsync_dir(root, &e) == ADAPT_OK);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such-dir", root);
    CHECK(file_io_fsync_dir(missing, &e) == ADAPT_EIO);
    CHECK_STR_CONTAINS(e.message, missing);
    char file[512];
    snprintf(file, sizeof file, "%s/missing-parent/f", root);
    CHECK(file_io_fsync_parent(file, &e) == ADAPT_EIO);
    CHECK_STR_CONTAINS(e.message, "missing-parent");
}

static int file_is(const char *path, const void *want, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t *got = malloc(n + 1);
    size_t k = got ? fread(got, 1, n + 1, f) : 0;
    int same = got && k == n && memcmp(got, want, n) == 0;
    free(got);
    fclose(f);
    return same;
}

/* A child writes a big file under a 64 KiB file-size limit: write fails with EFBIG part-way,
 * as it would on a full disk. The old content must stay and no temporary file remain. */
static void test_write_atomic(const char *root)
{
    char path[512], tmp[600];
    snprintf(path, sizeof path, "%s/target", root);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    adapt_error e = {0};
    static const char old[] = "the old content\n";
    CHECK(file_io_write_atomic(path, old, sizeof old - 1, &e) == ADAPT_OK);
    CHECK(file_is(path, old, sizeof old - 1));

    size_t big = 4u << 20;
    uint8_t *buf = malloc(big);
    CHECK(buf != NULL);
    if (!buf) return;
    memset(buf, 0xA5, big);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit lim = {64u << 10, 64u << 10};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(3);
        adapt_error ce = {0};
        int rc = file_io_write_atomic(path, buf, big, &ce);
        _exit(rc == ADAPT_EIO && strstr(ce.message, "writing") ? 0 : 2);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    CHECK(file_is(path, old, sizeof old - 1));
    CHECK(access(tmp, F_OK) != 0 && errno == ENOENT);

    CHECK(file_io_write_atomic(path, buf, big, &e) == ADAPT_OK);
    CHECK(file_is(path, buf, big));
    CHECK(access(tmp, F_OK) != 0);
    free(buf);

    char nodir[512];
    snprintf(nodir, sizeof nodir, "%s/no-such-dir/f", root);
    CHECK(file_io_write_atomic(nodir, "x", 1, &e) == ADAPT_EIO);
    CHECK_STR_CONTAINS(e.message, "no-such-dir");
}

int main(void)
{
    char root[] = "/tmp/adaptd-file-io-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    test_write_all_pipe();
    test_parent_dir();
    test_fsync_dir(root);
    test_write_atomic(root);
    char path[600];
    snprintf(path, sizeof path, "%s/target", root);
    unlink(path);
    rmdir(root);
    return check_report("file_io");
}
