/* file_io: durable-file helpers; see file_io.h. */
#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* write() of more than SSIZE_MAX bytes is implementation-defined; Linux caps a call near 2 GiB. */
#define FILE_IO_WRITE_CHUNK ((size_t)1 << 30)

int file_io_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t k = write(fd, p, len < FILE_IO_WRITE_CHUNK ? len : FILE_IO_WRITE_CHUNK);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        if (k == 0) {           /* never for files or pipes; looping on it would never end */
            errno = EIO;
            return -1;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

int file_io_parent_dir(char *out, size_t cap, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dir = !slash ? "." : slash == path ? "/" : path;
    size_t n = !slash || slash == path ? 1 : (size_t)(slash - path);
    if (cap == 0) return -1;
    if (n >= cap) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, dir, n);
    out[n] = '\0';
    return 0;
}

int file_io_fsync_dir(const char *dir, adapt_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return adapt_fail(err, ADAPT_EIO, "opening directory %s to fsync it: %s", dir,
                          strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0)
        return adapt_fail(err, ADAPT_EIO, "fsync of directory %s: %s", dir, strerror(saved));
    return 0;
}

int file_io_fsync_parent(const char *path, adapt_error *err)
{
    char dir[PATH_MAX];
    if (file_io_parent_dir(dir, sizeof dir, path) != 0)
        return adapt_fail(err, ADAPT_EINVAL, "path too long: %s", path);
    return file_io_fsync_dir(dir, err);
}

int file_io_write_atomic(const char *path, const void *buf, size_t len, adapt_error *err)
{
    char tmp[PATH_MAX];
    int rc = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        rc = adapt_fail(err, ADAPT_EINVAL, "path too long: %s", path);
    int fd = rc ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rc == 0 && fd < 0)
        rc = adapt_fail(err, ADAPT_EIO, "creating %s: %s", tmp, strerror(errno));
    if (rc == 0 && file_io_write_all(fd, buf, len) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "writing %s: %s", tmp, strerror(errno));
    if (rc == 0 && fsync(fd) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "fsync of %s: %s", tmp, strerror(errno));
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = adapt_fail(err, ADAPT_EIO, "closing %s: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = adapt_fail(err, ADAPT_EIO, "renaming %s to %s: %s", tmp, path, strerror(errno));
    if (rc && fd >= 0) unlink(tmp);
    return rc ? rc : file_io_fsync_parent(path, err);
}
