/* job_yaml: YAML or JSON job spec → cJSON; see job_yaml.h.
 *
 * Design: libyaml's event parser drives a recursive descent (one call per node), so every value
 * is built where its start mark is still at hand for the error message. Anchored nodes are
 * recorded once complete; an alias is a deep copy, counted against JOB_YAML_MAX_NODES so a
 * small file cannot expand into gigabytes. */
#include "job_yaml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

typedef struct yaml_anchor {
    char  *name;
    cJSON *node;   /* owned: aliases copy it */
} yaml_anchor;

typedef struct yaml_ctx {
    yaml_parser_t parser;
    const char   *name;
    yaml_anchor  *anchors;
    size_t        n_anchors, cap_anchors;
    size_t        nodes;
    adapt_error  *err;
} yaml_ctx;

static int fail_at(yaml_ctx *c, yaml_mark_t m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_at(yaml_ctx *c, yaml_mark_t m, const char *fmt, ...)
{
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return adapt_fail(c->err, ADAPT_EINVAL, "%s:%zu:%zu: %s", c->name, m.line + 1, m.column + 1, msg);
}

static int fail_parser(yaml_ctx *c)
{
    const yaml_parser_t *p = &c->parser;
    if (p->error == YAML_MEMORY_ERROR) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->context)
        return fail_at(c, p->problem_mark, "%s (%s at line %zu, column %zu)", problem, p->context,
                       p->context_mark.line + 1, p->context_mark.column + 1);
    return fail_at(c, p->problem_mark, "%s", problem);
}

static int next_event(yaml_ctx *c, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&c->parser, ev)) return fail_parser(c);
    return ADAPT_OK;
}

static int count_node(yaml_ctx *c, yaml_mark_t m, size_t n)
{
    c->nodes += n;
    if (c->nodes > JOB_YAML_MAX_NODES)
        return fail_at(c, m, "more than %d values (aliases included): not a job spec", JOB_YAML_MAX_NODES);
    return ADAPT_OK;
}

static size_t tree_size(const cJSON *n)
{
    size_t s = 1;
    for (const cJSON *ch = n->child; ch; ch = ch->next) s += tree_size(ch);
    return s;
}

/* ---- scalars: the YAML 1.2 core schema ------------------------------------------------------ */

static int all_in(const char *s, const char *set)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!strchr(set, *s)) return 0;
    return 1;
}

static int is_null(const char *s)
{
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static int bool_value(const char *s)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return 1;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return 0;
    return -1;
}

/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+ */
static int is_int(const char *s)
{
    if (!strncmp(s, "0o", 2)) return all_in(s + 2, "01234567");
    if (!strncmp(s, "0x", 2)) return all_in(s + 2, "0123456789abcdefABCDEF");
    if (*s == '-' || *s == '+') s++;
    return all_in(s, "0123456789");
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN) */
static int is_float(const char *s, int *special)
{
    *special = 0;
    const char *p = s;
    if (!strcmp(p, ".nan") || !strcmp(p, ".NaN") || !strcmp(p, ".NAN")) return *special = 1;
    if (*p == '-' || *p == '+') p++;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) return *special = 1;
    size_t int_digits = strspn(p, "0123456789");
    p += int_digits;
    size_t frac_digits = 0;
    if (*p == '.') {
        p++;
        frac_digits = strspn(p, "0123456789");
        p += frac_digits;
    }
    if (int_digits == 0 && frac_digits == 0) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+') p++;
        size_t e = strspn(p, "0123456789");
        if (!e) return 0;
        p += e;
    }
    return *p == '\0';
}

/* JSON numbers are doubles to most readers: an integer that a double cannot hold exactly would
 * reach the daemon as a different number, so it is refused here. */
static int int_value(yaml_ctx *c, yaml_mark_t m, const char *s, double *out)
{
    const double limit = 9007199254740992.0;  /* 2^53 */
    errno = 0;
    char *end;
    double v;
    if (!strncmp(s, "0o", 2) || !strncmp(s, "0x", 2)) {
        unsigned long long u = strtoull(s + 2, &end, s[1] == 'o' ? 8 : 16);
        v = (double)u;
        if (errno == ERANGE || u > (unsigned long long)limit) v = INFINITY;
    } else {
        long long i = strtoll(s, &end, 10);
        v = (double)i;
        if (errno == ERANGE || i > (long long)limit || i < -(long long)limit) v = INFINITY;
    }
    if (isinf(v)) return fail_at(c, m, "integer %s is beyond 2^53: JSON cannot carry it exactly (quote it for a string)", s);
    *out = v;
    return ADAPT_OK;
}

static int float_value(yaml_ctx *c, yaml_mark_t m, const char *s, double *out)
{
    errno = 0;
    double v = strtod(s, NULL);
    if (errno == ERANGE && isinf(v)) return fail_at(c, m, "number %s is out of range of a double", s);
    *out = v;
    return ADAPT_OK;
}

enum scalar_kind { SCALAR_STR, SCALAR_NULL, SCALAR_BOOL, SCALAR_INT, SCALAR_FLOAT, SCALAR_ANY };

static int scalar_kind_of_tag(yaml_ctx *c, yaml_mark_t m, const char *tag, int *kind)
{
    static const struct { const char *name; int kind; } tags[] = {
        { "str", SCALAR_STR }, { "null", SCALAR_NULL }, { "bool", SCALAR_BOOL },
        { "int", SCALAR_INT }, { "float", SCALAR_FLOAT },
    };
    if (!strcmp(tag, "!")) { *kind = SCALAR_STR; return ADAPT_OK; }
    size_t pl = strlen(YAML_TAG_PREFIX);
    if (!strncmp(tag, YAML_TAG_PREFIX, pl))
        for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
            if (!strcmp(tag + pl, tags[i].name)) { *kind = tags[i].kind; return ADAPT_OK; }
    return fail_at(c, m, "tag %s has no JSON meaning (use !!str, !!int, !!float, !!bool or !!null)", tag);
}

/* One scalar event to a cJSON value. Untagged plain scalars are resolved by the core schema;
 * quoted and block scalars are strings; a tag asks for one type and must match it. */
static int scalar_build(yaml_ctx *c, const yaml_event_t *ev, cJSON **out)
{
    const char *s = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;
    yaml_mark_t m = ev->start_mark;
    if (strlen(s) != ev->data.scalar.length)
        return fail_at(c, m, "a NUL byte inside a scalar has no JSON string form");
    int kind = SCALAR_STR;
    if (tag) {
        int rc = scalar_kind_of_tag(c, m, tag, &kind);
        if (rc != ADAPT_OK) return rc;
    } else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        kind = SCALAR_ANY;
    }
    int special;
    double d;
    int rc = ADAPT_OK;
    cJSON *v = NULL;
    if (kind == SCALAR_ANY) {
        kind = is_null(s) ? SCALAR_NULL : bool_value(s) >= 0 ? SCALAR_BOOL : is_int(s) ? SCALAR_INT
             : is_float(s, &special) ? SCALAR_FLOAT : SCALAR_STR;
    }
    switch (kind) {
    case SCALAR_STR:
        v = cJSON_CreateString(s);
        break;
    case SCALAR_NULL:
        if (!is_null(s)) return fail_at(c, m, "!!null wants null, ~ or nothing, got '%s'", s);
        v = cJSON_CreateNull();
        break;
    case SCALAR_BOOL:
        if (bool_value(s) < 0) return fail_at(c, m, "!!bool wants true or false, got '%s'", s);
        v = cJSON_CreateBool(bool_value(s));
        break;
    case SCALAR_INT:
        if (!is_int(s)) return fail_at(c, m, "!!int wants an integer, got '%s'", s);
        if ((rc = int_value(c, m, s, &d)) != ADAPT_OK) return rc;
        v = cJSON_CreateNumber(d);
        break;
    case SCALAR_FLOAT:
        if (!is_float(s, &special) && !is_int(s)) return fail_at(c, m, "!!float wants a number, got '%s'", s);
        if (special) return fail_at(c, m, "%s has no JSON form: JSON numbers are finite (quote it for a string)", s);
        if (is_int(s) && !is_float(s, &special)) rc = int_value(c, m, s, &d);  /* 0x10 as !!float */
        else rc = float_value(c, m, s, &d);
        if (rc != ADAPT_OK) return rc;
        v = cJSON_CreateNumber(d);
        break;
    }
    if (!v) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
    *out = v;
    return ADAPT_OK;
}

/* ---- anchors ------------------------------------------------------------------------------- */

static int anchor_add(yaml_ctx *c, const char *name, const cJSON *node)
{
    if (c->n_anchors == c->cap_anchors) {
        size_t cap = c->cap_anchors ? 2 * c->cap_anchors : 8;
        yaml_anchor *a = realloc(c->anchors, cap * sizeof *a);
        if (!a) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
        c->anchors = a;
        c->cap_anchors = cap;
    }
    yaml_anchor *a = &c->anchors[c->n_anchors];
    a->name = strdup(name);
    a->node = cJSON_Duplicate(node, 1);
    if (!a->name || !a->node) {
        free(a->name);
        cJSON_Delete(a->node);
        return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
    }
    c->n_anchors++;
    return ADAPT_OK;
}

/* The newest anchor of that name wins: YAML lets a later &x redefine an earlier one. */
static const cJSON *anchor_find(const yaml_ctx *c, const char *name)
{
    for (size_t i = c->n_anchors; i-- > 0;)
        if (!strcmp(c->anchors[i].name, name)) return c->anchors[i].node;
    return NULL;
}

static int alias_build(yaml_ctx *c, const yaml_event_t *ev, cJSON **out)
{
    const char *name = (const char *)ev->data.alias.anchor;
    const cJSON *node = anchor_find(c, name);
    if (!node)
        return fail_at(c, ev->start_mark, "alias *%s names no complete anchor before it "
                       "(an alias cannot refer to a node that contains it)", name);
    int rc = count_node(c, ev->start_mark, tree_size(node));
    if (rc != ADAPT_OK) return rc;
    if (!(*out = cJSON_Duplicate(node, 1))) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
    return ADAPT_OK;
}

/* ---- collections --------------------------------------------------------------------------- */

static int node_build(yaml_ctx *c, yaml_event_t *ev, int depth, cJSON **out);

static int collection_tag_check(yaml_ctx *c, const yaml_event_t *ev, const char *want)
{
    const char *tag = (const char *)(ev->type == YAML_SEQUENCE_START_EVENT ? ev->data.sequence_start.tag
                                                                          : ev->data.mapping_start.tag);
    if (!tag || !strcmp(tag, "!")) return ADAPT_OK;
    if (!strncmp(tag, YAML_TAG_PREFIX, strlen(YAML_TAG_PREFIX)) && !strcmp(tag + strlen(YAML_TAG_PREFIX), want))
        return ADAPT_OK;
    return fail_at(c, ev->start_mark, "tag %s has no JSON meaning here (a %s)", tag,
                   !strcmp(want, "seq") ? "sequence" : "mapping");
}

static int sequence_build(yaml_ctx *c, int depth, cJSON *arr)
{
    for (;;) {
        yaml_event_t ev;
        int rc = next_event(c, &ev);
        if (rc != ADAPT_OK) return rc;
        if (ev.type == YAML_SEQUENCE_END_EVENT) { yaml_event_delete(&ev); return ADAPT_OK; }
        cJSON *item = NULL;
        rc = node_build(c, &ev, depth + 1, &item);
        yaml_event_delete(&ev);
        if (rc != ADAPT_OK) return rc;
        cJSON_AddItemToArray(arr, item);
    }
}

/* A key must be a scalar (or an alias of one): JSON keys are strings. Its text is used as
 * written, so `1: x` gives the key "1". */
static int key_text(yaml_ctx *c, const yaml_event_t *ev, char **out)
{
    const char *s = NULL;
    if (ev->type == YAML_SCALAR_EVENT) {
        s = (const char *)ev->data.scalar.value;
        if (strlen(s) != ev->data.scalar.length) return fail_at(c, ev->start_mark, "a NUL byte inside a key");
    } else if (ev->type == YAML_ALIAS_EVENT) {
        const cJSON *n = anchor_find(c, (const char *)ev->data.alias.anchor);
        if (n && cJSON_IsString(n)) s = n->valuestring;
        else if (n) return fail_at(c, ev->start_mark, "alias *%s as a key must name a string",
                                   (const char *)ev->data.alias.anchor);
        else return fail_at(c, ev->start_mark, "alias *%s names no complete anchor before it",
                            (const char *)ev->data.alias.anchor);
    } else {
        return fail_at(c, ev->start_mark, "a mapping key must be a scalar: JSON keys are strings");
    }
    if (!(*out = strdup(s))) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
    if (ev->type == YAML_SCALAR_EVENT && ev->data.scalar.anchor) {
        cJSON *k = cJSON_CreateString(s);
        int rc = k ? anchor_add(c, (const char *)ev->data.scalar.anchor, k)
                   : adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
        cJSON_Delete(k);
        if (rc != ADAPT_OK) { free(*out); return rc; }
    }
    return ADAPT_OK;
}

static int mapping_build(yaml_ctx *c, int depth, cJSON *obj)
{
    size_t *key_lines = NULL, n_keys = 0, cap = 0;  /* line of each key, in insertion order */
    int rc = ADAPT_OK;
    for (;;) {
        yaml_event_t ev;
        if ((rc = next_event(c, &ev)) != ADAPT_OK) break;
        if (ev.type == YAML_MAPPING_END_EVENT) { yaml_event_delete(&ev); break; }
        char *key = NULL;
        yaml_mark_t km = ev.start_mark;
        /* `<<: *base` merges in YAML 1.1 but is an ordinary key in 1.2: neither reading is
         * what the daemon would accept, so say so here rather than pass a key named "<<" */
        if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            !ev.data.scalar.tag && !strcmp((const char *)ev.data.scalar.value, "<<")) {
            yaml_event_delete(&ev);
            rc = fail_at(c, km, "merge keys (<<) are YAML 1.1, not 1.2: write the keys out, or alias a "
                         "whole mapping");
            break;
        }
        rc = key_text(c, &ev, &key);
        yaml_event_delete(&ev);
        if (rc != ADAPT_OK) break;
        size_t idx = 0;
        const cJSON *ch;
        for (ch = obj->child; ch && strcmp(ch->string, key); ch = ch->next) idx++;
        if (ch) {
            rc = fail_at(c, km, "duplicate key '%s' (first at line %zu)", key, key_lines[idx] + 1);
            free(key);
            break;
        }
        if (n_keys == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            size_t *nl = realloc(key_lines, ncap * sizeof *nl);
            if (!nl) { free(key); rc = adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name); break; }
            key_lines = nl;
            cap = ncap;
        }
        key_lines[n_keys++] = km.line;
        cJSON *val = NULL;
        if ((rc = next_event(c, &ev)) != ADAPT_OK) { free(key); break; }
        rc = node_build(c, &ev, depth + 1, &val);
        yaml_event_delete(&ev);
        if (rc != ADAPT_OK) { free(key); break; }
        cJSON_AddItemToObject(obj, key, val);
        free(key);
    }
    free(key_lines);
    return rc;
}

/* Builds the node that starts with ev (the caller still owns and deletes ev). */
static int node_build(yaml_ctx *c, yaml_event_t *ev, int depth, cJSON **out)
{
    const yaml_char_t *anchor = NULL;
    cJSON *v = NULL;
    int rc;
    if (depth > JOB_YAML_MAX_DEPTH)
        return fail_at(c, ev->start_mark, "nested deeper than %d levels", JOB_YAML_MAX_DEPTH);
    if ((rc = count_node(c, ev->start_mark, 1)) != ADAPT_OK) return rc;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return alias_build(c, ev, out);
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        rc = scalar_build(c, ev, &v);
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        if ((rc = collection_tag_check(c, ev, "seq")) != ADAPT_OK) return rc;
        if (!(v = cJSON_CreateArray())) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
        rc = sequence_build(c, depth, v);
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        if ((rc = collection_tag_check(c, ev, "map")) != ADAPT_OK) return rc;
        if (!(v = cJSON_CreateObject())) return adapt_fail(c->err, ADAPT_ENOMEM, "%s: out of memory", c->name);
        rc = mapping_build(c, depth, v);
        break;
    default:
        return fail_at(c, ev->start_mark, "unexpected YAML event %d", (int)ev->type);
    }
    if (rc == ADAPT_OK && anchor) rc = anchor_add(c, (const char *)anchor, v);
    if (rc != ADAPT_OK) { cJSON_Delete(v); return rc; }
    *out = v;
    return ADAPT_OK;
}

/* stream-start, document-start, node, document-end, then stream-end and nothing else. A failed
 * yaml_parser_parse leaves the event zeroed, so deleting it is always safe. */
static int stream_build(yaml_ctx *c, cJSON **out)
{
    yaml_event_t ev;
    cJSON *root = NULL;
    int rc = ADAPT_OK;
    for (int step = 0; rc == ADAPT_OK; step++) {
        if ((rc = next_event(c, &ev)) != ADAPT_OK) break;
        if (step == 1 && ev.type == YAML_STREAM_END_EVENT)
            rc = adapt_fail(c->err, ADAPT_EINVAL, "%s: no YAML document (the file is empty or only comments)", c->name);
        else if (step == 2)
            rc = node_build(c, &ev, 0, &root);
        else if (step == 4 && ev.type != YAML_STREAM_END_EVENT)
            rc = fail_at(c, ev.start_mark, "a second YAML document: a job spec file holds exactly one");
        yaml_event_delete(&ev);
        if (step == 4) break;
    }
    if (rc != ADAPT_OK) { cJSON_Delete(root); return rc; }
    *out = root;
    return ADAPT_OK;
}

int job_yaml_parse(const char *text, size_t len, const char *name, cJSON **out, adapt_error *err)
{
    yaml_ctx c = { .name = name ? name : "<yaml>", .err = err };
    *out = NULL;
    if (!yaml_parser_initialize(&c.parser)) return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", c.name);
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)text, len);
    int rc = stream_build(&c, out);
    yaml_parser_delete(&c.parser);
    for (size_t i = 0; i < c.n_anchors; i++) {
        free(c.anchors[i].name);
        cJSON_Delete(c.anchors[i].node);
    }
    free(c.anchors);
    return rc;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static void line_col(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') { (*line)++; *col = 1; }
        else (*col)++;
    }
}

/* cJSON keeps duplicate keys (and lookups see the first), so they are found here and named by
 * their path (train.lr_llm, stages[1].epochs). */
static int json_duplicates(const cJSON *n, char *path, size_t path_len, size_t cap)
{
    size_t index = 0;
    for (const cJSON *a = n->child; a; a = a->next, index++) {
        int l;
        if (cJSON_IsObject(n)) {
            for (const cJSON *b = a->next; b; b = b->next)
                if (!strcmp(a->string, b->string)) {
                    snprintf(path + path_len, cap - path_len, "%s%s", path_len ? "." : "", a->string);
                    return 1;
                }
            l = snprintf(path + path_len, cap - path_len, "%s%s", path_len ? "." : "", a->string);
        } else {
            l = snprintf(path + path_len, cap - path_len, "[%zu]", index);
        }
        size_t sub = l < 0 || path_len + (size_t)l >= cap ? cap - 1 : path_len + (size_t)l;
        if (json_duplicates(a, path, sub, cap)) return 1;
        path[path_len] = '\0';
    }
    return 0;
}

int job_yaml_parse_json(const char *text, size_t len, const char *name, cJSON **out, adapt_error *err)
{
    const char *end = NULL;
    name = name ? name : "<json>";
    *out = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    int trailing = 0;
    if (doc) {
        while (off < len && text[off] && strchr(" \t\r\n", text[off])) off++;
        trailing = off < len;
    }
    if (!doc || trailing) {
        size_t line, col;
        cJSON_Delete(doc);
        line_col(text, off, &line, &col);
        return adapt_fail(err, ADAPT_EINVAL, "%s:%zu:%zu: %s", name, line, col,
                          trailing ? "text after the JSON value" : "malformed JSON");
    }
    char path[512] = "";
    if (json_duplicates(doc, path, 0, sizeof path)) {
        cJSON_Delete(doc);
        return adapt_fail(err, ADAPT_EINVAL, "%s: duplicate key %s", name, path);
    }
    *out = doc;
    return ADAPT_OK;
}

/* ---- printing ------------------------------------------------------------------------------ */

static void number_text(double d, char *buf, size_t size)
{
    if (floor(d) == d && fabs(d) <= 9007199254740992.0) {
        snprintf(buf, size, "%.0f", d);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return;
    }
}

/* Turns every number of a private copy into raw text, so cJSON's printer copies it verbatim. */
static int numbers_to_raw(cJSON *n)
{
    for (cJSON *ch = n->child; ch; ch = ch->next)
        if (!numbers_to_raw(ch)) return 0;
    if (!cJSON_IsNumber(n)) return 1;
    char buf[40];
    if (!isfinite(n->valuedouble)) snprintf(buf, sizeof buf, "null");
    else number_text(n->valuedouble, buf, sizeof buf);
    if (!(n->valuestring = strdup(buf))) return 0;
    n->type = cJSON_Raw;
    return 1;
}

char *job_yaml_print(const cJSON *doc)
{
    cJSON *copy = cJSON_Duplicate(doc, 1);
    char *text = copy && numbers_to_raw(copy) ? cJSON_PrintUnformatted(copy) : NULL;
    cJSON_Delete(copy);
    return text;
}

/* ---- files --------------------------------------------------------------------------------- */

job_yaml_format job_yaml_sniff(const char *path, const char *text, size_t len)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (dot && !strcasecmp(dot, ".json")) return JOB_YAML_FORMAT_JSON;
    if (dot && (!strcasecmp(dot, ".yaml") || !strcasecmp(dot, ".yml"))) return JOB_YAML_FORMAT_YAML;
    size_t i = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) i = 3;
    while (i < len && text[i] && strchr(" \t\r\n", text[i])) i++;
    return i < len && (text[i] == '{' || text[i] == '[') ? JOB_YAML_FORMAT_JSON : JOB_YAML_FORMAT_YAML;
}

int job_yaml_load_file(const char *path, cJSON **out, adapt_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return adapt_fail(err, ADAPT_EIO, "%s: %s", path, strerror(errno));
    char *buf = malloc(JOB_YAML_MAX_FILE + 1);
    if (!buf) { fclose(f); return adapt_fail(err, ADAPT_ENOMEM, "%s: out of memory", path); }
    size_t n = fread(buf, 1, JOB_YAML_MAX_FILE + 1, f);
    int read_err = ferror(f);
    fclose(f);
    int rc;
    if (read_err) rc = adapt_fail(err, ADAPT_EIO, "%s: read error", path);
    else if (n > JOB_YAML_MAX_FILE) rc = adapt_fail(err, ADAPT_EINVAL, "%s: larger than %d bytes: not a job spec", path, JOB_YAML_MAX_FILE);
    else if (job_yaml_sniff(path, buf, n) == JOB_YAML_FORMAT_JSON) rc = job_yaml_parse_json(buf, n, path, out, err);
    else rc = job_yaml_parse(buf, n, path, out, err);
    free(buf);
    return rc;
}
