/* error: formatting of adapt_error; see error.h. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int adapt_fail(adapt_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int adapt_error_prefix(adapt_error *err, const char *fmt, ...)
{
    if (!err) return ADAPT_OK;
    char old[sizeof err->message];
    memcpy(old, err->message, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->message) {
        size_t room = sizeof err->message - (size_t)n;
        size_t len = strnlen(old, room - 1);
        memcpy(err->message + n, old, len);
        err->message[(size_t)n + len] = '\0';
    }
    return err->code;
}

void adapt_error_clear(adapt_error *err)
{
    if (!err) return;
    err->code = ADAPT_OK;
    err->message[0] = '\0';
}

const char *adapt_strerror(int code)
{
    switch (code) {
    case ADAPT_OK:           return "ok";
    case ADAPT_EIO:          return "I/O error";
    case ADAPT_ECORRUPT:     return "corrupt data";
    case ADAPT_EVERSION:     return "unsupported format version";
    case ADAPT_EINVAL:       return "invalid input";
    case ADAPT_ENOMEM:       return "out of memory";
    case ADAPT_ERANGE:       return "out of range";
    case ADAPT_EUNSUPPORTED: return "not supported";
    case ADAPT_ENOTFOUND:    return "not found";
    }
    return "unknown error";
}
