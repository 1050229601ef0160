/* job_spec: a JobSpec (proto/job.proto) read from the JSON a client submits, validated.
 *
 * The one idea: the JSON is mapped onto the message through protobuf-c's own descriptors, so the
 * field names and types accepted are exactly those of job.proto (a field added there is accepted
 * here without a change). A train job's defaults, ranges and rules are proto/train_rules' — the
 * same function adapt-worker runs on the normalized text — and only the daemon's own limits
 * (--slots, Slurm set up, paths inside --data-root) are written out here; the other kinds' rules
 * are job_spec_kinds'. */
#ifndef ADAPT_JOB_SPEC_H
#define ADAPT_JOB_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job.pb-c.h"

typedef struct job_spec_policy {
    const char *data_root;   /* canonical (realpath) folder every spec path must resolve inside */
    uint32_t    max_ranks;   /* the daemon's --slots: a job needing more can never start */
    int         slurm;       /* whether launcher "slurm" can run (adaptd --slurm-template) */
} job_spec_policy;

enum { JOB_SPEC_FIELD_MAX = 128 };

/* Parses and validates json[0..len). On success *spec holds the message (free it with
 * adaptd__job_spec__free_unpacked(spec, NULL)) with every path made canonical and every default
 * filled in, and *normalized its JSON text (malloc'd; the caller frees it): every member with
 * its effective value (what GET /v1/jobs/{id} shows and adapt-worker runs; a uint64 above 2^53
 * as a decimal string), only the sub-spec of the job's kind. On failure field names the
 * offending field ("train.pack_window", "" for the document itself) and err says why
 * ("train.pack_window: 0 is outside [1, 1048576]"). */
int job_spec_parse(const char *json, size_t len, const job_spec_policy *pol,
                   Adaptd__JobSpec **spec, char **normalized, char field[JOB_SPEC_FIELD_MAX],
                   adapt_error *err);

/* Whether path resolves (symlinks followed) inside root; the canonical path goes to out.
 * A path that does not exist yet is accepted when must_exist is 0 and its deepest existing
 * ancestor is inside root. */
int job_spec_resolve_path(const char *root, const char *path, int must_exist, char *out,
                          size_t size, adapt_error *err);

#endif
