/* error: the one error type every library module of adaptd reports through.
 *
 * Library code never prints and never exits: a failing call fills an adapt_error with a code and
 * one line naming what failed and where (file, record, field, byte offset), and returns the
 * negative code. Binaries print that line and exit non-zero. */
#ifndef ADAPT_ERROR_H
#define ADAPT_ERROR_H

#include <stddef.h>

enum adapt_error_code {
    ADAPT_OK        =  0,
    ADAPT_EIO       = -1,  /* the operating system refused a read, write, open, rename or fsync */
    ADAPT_ECORRUPT  = -2,  /* a file is damaged: bad magic, checksum, truncated, bad protobuf */
    ADAPT_EVERSION  = -3,  /* a file is of a format version this build does not read */
    ADAPT_EINVAL    = -4,  /* bad input from the user: argument, spec field, annotation record */
    ADAPT_ENOMEM    = -5,
    ADAPT_ERANGE    = -6,  /* an index or size out of range */
    ADAPT_EUNSUPPORTED = -7, /* valid input that adaptd does not implement */
    ADAPT_ENOTFOUND = -8,
};

typedef struct adapt_error {
    int  code;            /* one of adapt_error_code, ADAPT_OK when nothing failed */
    char message[1024];
} adapt_error;

/* Fills err (when non-NULL) and returns code, so callers can write `return adapt_fail(...)`. */
int adapt_fail(adapt_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("reading corpus X: ") to an error already set, keeping its code. */
int adapt_error_prefix(adapt_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void adapt_error_clear(adapt_error *err);
const char *adapt_strerror(int code);

#endif
