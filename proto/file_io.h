/* file_io: durable-file helpers shared by every module that writes files.
 *
 * The one idea: a file is published by writing it under a temporary name, fsyncing it, renaming
 * it over the final name and fsyncing the directory that holds it; a reader then sees the old
 * file or the complete new one, and a power cut cannot undo the rename. */
#ifndef ADAPT_FILE_IO_H
#define ADAPT_FILE_IO_H

#include <stddef.h>

#include "error.h"

/* Writes all len bytes, retrying on EINTR and short writes. Returns 0, or -1 with errno set
 * (EIO when write makes no progress); the caller words the message. */
int file_io_write_all(int fd, const void *buf, size_t len);

/* The directory that holds path into out: "." for a bare name, "/" for a name in the root.
 * Returns 0, or -1 when it does not fit in cap bytes (out is then the empty string). */
int file_io_parent_dir(char *out, size_t cap, const char *path);

/* fsyncs directory dir, so that a rename or create inside it survives a power cut. */
int file_io_fsync_dir(const char *dir, adapt_error *err);

/* fsyncs the directory that holds path. */
int file_io_fsync_parent(const char *path, adapt_error *err);

/* Replaces path with len bytes of buf atomically: writes "<path>.tmp" (mode 0644), fsyncs and
 * closes it, renames it to path and fsyncs the parent directory. On failure the old file is
 * untouched and the temporary file is removed. */
int file_io_write_atomic(const char *path, const void *buf, size_t len, adapt_error *err);

#endif
