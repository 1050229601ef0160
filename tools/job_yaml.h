/* job_yaml: a job spec file, YAML or JSON, read into one cJSON tree for the daemon's API.
 *
 * The one idea: YAML is mapped to JSON faithfully or not at all. Plain scalars are typed by the
 * YAML 1.2 core schema (ints, floats, true/false, null), quoted and block scalars stay strings,
 * anchors and aliases are expanded, and anything JSON cannot say the same way (duplicate keys,
 * .inf / .nan, integers beyond 2^53, non-scalar keys, unknown tags, several documents) is an
 * error naming FILE:LINE:COLUMN instead of a silent guess. */
#ifndef ADAPT_JOB_YAML_H
#define ADAPT_JOB_YAML_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "error.h"

typedef enum job_yaml_format {
    JOB_YAML_FORMAT_YAML,
    JOB_YAML_FORMAT_JSON,
} job_yaml_format;

enum {
    JOB_YAML_MAX_DEPTH = 128,         /* nesting of sequences and mappings */
    JOB_YAML_MAX_NODES = 1 << 20,     /* values built, alias copies included ("billion laughs") */
    JOB_YAML_MAX_FILE  = 16 << 20,    /* bytes of a spec file */
};

/* YAML text (one document) to a cJSON tree. name prefixes error messages ("FILE:LINE:COL: ...").
 * On success *out is a new tree the caller frees with cJSON_Delete. */
int job_yaml_parse(const char *text, size_t len, const char *name, cJSON **out, adapt_error *err);

/* JSON text to a cJSON tree, with the same errors as YAML where JSON allows them: a syntax error
 * names LINE:COL, a duplicate key names its path, trailing text is refused. */
int job_yaml_parse_json(const char *text, size_t len, const char *name, cJSON **out,
                        adapt_error *err);

/* The tree as compact JSON text (malloc'd, NULL when out of memory). Unlike cJSON's own printer,
 * which keeps 15 significant digits, every number is printed so that it reads back as the same
 * double: integers up to 2^53 digit for digit, other numbers in the shortest exact form. */
char *job_yaml_print(const cJSON *doc);

/* Which parser a file wants: .json → JSON, .yaml / .yml → YAML, otherwise its first
 * non-blank character decides ('{' or '[' → JSON, anything else → YAML). */
job_yaml_format job_yaml_sniff(const char *path, const char *text, size_t len);

/* Reads path (at most JOB_YAML_MAX_FILE bytes) and parses it as job_yaml_sniff says. */
int job_yaml_load_file(const char *path, cJSON **out, adapt_error *err);

#endif
