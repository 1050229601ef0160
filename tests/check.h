/* check: the minimal unit-test harness of adaptd's C tests.
 * CHECK records a failure with file and line and goes on; a test binary returns non-zero when
 * any check failed, and meson counts it. */
#ifndef ADAPT_CHECK_H
#define ADAPT_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failures;
static int check_count;

#define CHECK(cond) do {                                                              \
        check_count++;                                                                \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...) do {                                                     \
        check_count++;                                                                \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

#define CHECK_STR_CONTAINS(haystack, needle) \
    CHECK_MSG(strstr((haystack), (needle)) != NULL, "\"%s\" lacks \"%s\"", (haystack), (needle))

/* The reference Python (the pinned venv of tests/requirements.txt): $ADAPT_TEST_PYTHON, else
 * fallback. Returns NULL when it is missing, with *exit_code set to 77 (meson's "skipped") on a
 * developer's machine and to 1 under CI=true, where a missing reference is a broken set-up. */
static inline const char *check_reference_python(const char *fallback, int *exit_code)
{
    const char *python = getenv("ADAPT_TEST_PYTHON");
    if (!python || !*python) python = fallback;
    if (python && access(python, X_OK) == 0) return python;
    const char *ci = getenv("CI");
    fprintf(stderr, "reference python %s is missing (make the venv from tests/requirements.txt)\n",
            python ? python : "(none)");
    *exit_code = ci && strcmp(ci, "true") == 0 ? 1 : 77;
    return NULL;
}

static inline int check_report(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
