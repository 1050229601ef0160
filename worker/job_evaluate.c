/* job_evaluate: `adapt-worker evaluate` — runs a model on a VQA benchmark given as a local JSONL
 * and scores it with the paper's scorers (scorers.h).
 *
 * The benchmark: one JSON object per line —
 *   "question" (string, required)      sent as written, after the image
 *   "answer"   (required)              a string; for multi_label an array of label strings
 *   "type"     (required)              open | closed | multi_choice | classification |
 *                                      multi_label | rouge_l
 *   "options"  (array of strings)      required for multi_choice (2..26, choices A, B, …),
 *                                      classification (class names, choices 0, 1, …) and
 *                                      multi_label (the label set)
 *   "image"    (string)                path, relative to images_root (default: the JSONL's
 *                                      folder); absent for a text-only item
 *   "task"     (string)                the table row the item counts in (default: the type)
 *   "id"       (string or number)      default: the 0-based line number
 * A multi_choice answer is a choice letter or an option's text; a classification answer is a
 * class name. Anything else is refused naming the line and the field.
 *
 * The one idea: items are cut into chunks of JOB_EVAL_CHUNK; a rank takes chunks from
 * work_source.h (the daemon's queue, else chunks r, r + W, …) and writes each as
 * OUTPUT/parts/NNNNN.jsonl atomically (a rerun skips finished chunks, as the overlay jobs skip
 * finished shards); rank 0 then scores everything in one place, so the scores
 * never depend on the number of ranks. Outputs: predictions.jsonl (each item with its prediction
 * and score), scores.json and scores.txt (one row per task and type). */
#include "job_kinds.h"

#include "data_order.h"
#include "file_io.h"
#include "generate.h"
#include "scorers.h"
#include "work_source.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define JOB_EVAL_CHUNK 64u
#define EVAL_STREAM_CHOICE UINT64_C(0x4556414c00000201)   /* the multiple-choice fallback draw */

typedef struct eval_item {
    char        *id, *task, *image, *question, *answer;
    scorer_kind  type;
    char       **labels;     /* multi_label: the true labels */
    size_t       n_labels;
    char       **options;
    size_t       n_options;
    size_t       answer_index;  /* multi_choice / classification: the true option */
    char        *prediction;
} eval_item;

typedef struct eval_job {
    const Adaptd__EvaluateSpec *spec;
    eval_item                  *items;
    size_t                      n;
    char                        images_root[PATH_MAX];
    char                       *family;
    gen_t                      *gen;
} eval_job;

static void item_free(eval_item *it)
{
    free(it->id);
    free(it->task);
    free(it->image);
    free(it->question);
    free(it->answer);
    for (size_t i = 0; i < it->n_labels; i++) free(it->labels[i]);
    free(it->labels);
    for (size_t i = 0; i < it->n_options; i++) free(it->options[i]);
    free(it->options);
    free(it->prediction);
}

static char *json_strdup(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

static int string_array(const cJSON *v, char ***out, size_t *n)
{
    if (!cJSON_IsArray(v)) return -1;
    size_t k = (size_t)cJSON_GetArraySize(v);
    char **a = calloc(k + 1, sizeof *a);
    if (!a) return -1;
    *out = a;
    *n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e) || !(a[*n] = strdup(e->valuestring))) return -1;
        (*n)++;
    }
    return 0;
}

/* One benchmark line into it; where names the line in errors. */
static int item_parse(eval_item *it, const cJSON *o, size_t line, const char *where,
                      adapt_error *err)
{
    const char *bad = NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
    const cJSON *opts = cJSON_GetObjectItemCaseSensitive(o, "options");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    int k = cJSON_IsString(type) ? scorer_kind_parse(type->valuestring) : -1;
    char idbuf[32];
    if (k < 0) return adapt_fail(err, ADAPT_EINVAL, "%s line %zu: field \"type\": expected one of "
                                 "open, closed, multi_choice, classification, multi_label, rouge_l",
                                 where, line + 1);
    it->type = (scorer_kind)k;
    if (!(it->question = json_strdup(o, "question"))) bad = "question";
    snprintf(idbuf, sizeof idbuf, "%zu", line);
    it->id = cJSON_IsString(id) ? strdup(id->valuestring)
           : cJSON_IsNumber(id) ? (snprintf(idbuf, sizeof idbuf, "%.17g", id->valuedouble), strdup(idbuf))
           : strdup(idbuf);
    it->task = json_strdup(o, "task");
    if (!it->task) it->task = strdup(scorer_kind_name(it->type));
    it->image = json_strdup(o, "image");
    if (!bad && cJSON_GetObjectItemCaseSensitive(o, "image") && !it->image) bad = "image";
    int needs_options = k == SCORER_MULTI_CHOICE || k == SCORER_CLASSIFICATION ||
                        k == SCORER_MULTI_LABEL;
    if (!bad && needs_options && (string_array(opts, &it->options, &it->n_options) ||
                                  it->n_options < (k == SCORER_MULTI_LABEL ? 1u : 2u) ||
                                  (k == SCORER_MULTI_CHOICE && it->n_options > 26)))
        bad = "options";
    if (!bad && k == SCORER_MULTI_LABEL) {
        if (string_array(ans, &it->labels, &it->n_labels)) bad = "answer";
        for (size_t i = 0; !bad && i < it->n_labels; i++) {
            size_t j = 0;
            while (j < it->n_options && strcmp(it->options[j], it->labels[i])) j++;
            if (j == it->n_options) bad = "answer";
        }
    } else if (!bad && !(it->answer = json_strdup(o, "answer"))) {
        bad = "answer";
    }
    if (!bad && (k == SCORER_MULTI_CHOICE || k == SCORER_CLASSIFICATION)) {
        size_t j = it->n_options;
        if (k == SCORER_MULTI_CHOICE && strlen(it->answer) == 1 &&
            it->answer[0] >= 'A' && it->answer[0] < 'A' + (int)it->n_options)
            j = (size_t)(it->answer[0] - 'A');
        for (size_t i = 0; j == it->n_options && i < it->n_options; i++)
            if (!strcmp(it->options[i], it->answer)) j = i;
        if (j == it->n_options) bad = "answer";
        it->answer_index = j;
    }
    if (bad)
        return adapt_fail(err, ADAPT_EINVAL, "%s line %zu: field \"%s\": missing or not valid for "
                          "type %s%s", where, line + 1, bad, scorer_kind_name(it->type),
                          !strcmp(bad, "answer") && needs_options
                              ? " (it must name one of the options)" : "");
    if (!it->id || !it->task) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    return ADAPT_OK;
}

static int eval_load(eval_job *j, adapt_error *err)
{
    const char *path = j->spec->benchmark;
    FILE *f = fopen(path, "r");
    if (!f) return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                              "evaluate.benchmark %s: cannot open it: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0, n_cap = 0;
    ssize_t len;
    int rc = ADAPT_OK;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        size_t this_line = lineno++;
        size_t k = (size_t)len;
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r' || line[k - 1] == ' ')) k--;
        if (k == 0) continue;
        cJSON *o = cJSON_ParseWithLength(line, k);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            rc = adapt_fail(err, ADAPT_EINVAL, "%s line %zu: not a JSON object", path, this_line + 1);
            break;
        }
        if (j->n == n_cap) {
            n_cap = n_cap ? 2 * n_cap : 64;
            eval_item *g = realloc(j->items, n_cap * sizeof *g);
            if (!g) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
            else j->items = g;
        }
        if (!rc) {
            memset(&j->items[j->n], 0, sizeof *j->items);
            rc = item_parse(&j->items[j->n++], o, this_line, path, err);
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    if (!rc && j->n == 0) rc = adapt_fail(err, ADAPT_EINVAL, "%s: no items", path);
    return rc;
}

/* The chat prompt of one item for the model family. */
static int eval_prompt(const eval_job *j, const eval_item *it, char **out, adapt_error *err)
{
    const char *sys = j->spec->system_prompt[0] ? j->spec->system_prompt : NULL;
    int llama = !strcmp(j->family, "llava_next") || !strcmp(j->family, "llava");
    const char *fmt;
    if (llama) {
        if (!sys) sys = "You are a helpful language and vision assistant. You are able to "
                        "understand the visual content that the user provides, and assist the "
                        "user with a variety of tasks using natural language.";
        fmt = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n%s<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\n%s%s<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n";
    } else {
        if (!sys) sys = "You are a helpful assistant.";
        fmt = "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s%s<|im_end|>\n"
              "<|im_start|>assistant\n";
    }
    const char *image = !it->image ? "" : llama ? "<image>\n"
                                            : "<|vision_start|><|image_pad|><|vision_end|>";
    size_t n = strlen(fmt) + strlen(sys) + strlen(image) + strlen(it->question) + 1;
    if (!(*out = malloc(n))) return adapt_fail(err, ADAPT_ENOMEM, "no memory");
    snprintf(*out, n, fmt, sys, image, it->question);
    return ADAPT_OK;
}

static int read_bytes(const char *path, uint8_t **buf, size_t *len, adapt_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return adapt_fail(err, errno == ENOENT ? ADAPT_ENOTFOUND : ADAPT_EIO,
                              "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = fstat(fileno(f), &st) ? adapt_fail(err, ADAPT_EIO, "%s: cannot stat", path) : 0;
    *buf = rc ? NULL : malloc((size_t)st.st_size + 1);
    if (!rc && !*buf) rc = adapt_fail(err, ADAPT_ENOMEM, "%s: no memory", path);
    if (!rc && fread(*buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        rc = adapt_fail(err, ADAPT_EIO, "%s: short read", path);
    fclose(f);
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    *len = rc ? 0 : (size_t)st.st_size;
    return rc;
}

static void chunk_path(const eval_job *j, size_t c, char *buf, size_t size)
{
    snprintf(buf, size, "%s/parts/%05zu.jsonl", j->spec->output_dir, c);
}

/* Reads chunk c's predictions into the items; 0 when complete, else an error. */
static int chunk_read(eval_job *j, size_t c, adapt_error *err)
{
    char path[PATH_MAX];
    chunk_path(j, c, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return adapt_fail(err, ADAPT_ENOTFOUND, "%s: missing", path);
    size_t first = c * JOB_EVAL_CHUNK, last = first + JOB_EVAL_CHUNK;
    if (last > j->n) last = j->n;
    char *line = NULL;
    size_t cap = 0, got = 0;
    int rc = ADAPT_OK;
    while (!rc && getline(&line, &cap, f) >= 0) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(o, "index");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prediction");
        if (!cJSON_IsNumber(ix) || !cJSON_IsString(p) || ix->valuedouble < (double)first ||
            ix->valuedouble >= (double)last)
            rc = adapt_fail(err, ADAPT_ECORRUPT, "%s line %zu: not a prediction of this chunk",
                            path, got + 1);
        else {
            eval_item *it = &j->items[(size_t)ix->valuedouble];
            free(it->prediction);
            if (!(it->prediction = strdup(p->valuestring))) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
            got++;
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    if (!rc && got != last - first)
        rc = adapt_fail(err, ADAPT_ECORRUPT, "%s: %zu predictions, expected %zu", path, got,
                        last - first);
    return rc;
}

static int chunk_generate(eval_job *j, size_t c, adapt_error *err)
{
    size_t first = c * JOB_EVAL_CHUNK, last = first + JOB_EVAL_CHUNK;
    if (last > j->n) last = j->n;
    size_t n = last - first;
    gen_prompt *prompts = calloc(n, sizeof *prompts);
    gen_result *results = calloc(n, sizeof *results);
    char **texts = calloc(n, sizeof *texts);
    uint8_t **images = calloc(n, sizeof *images);
    int rc = prompts && results && texts && images ? ADAPT_OK
                                                   : adapt_fail(err, ADAPT_ENOMEM, "no memory");
    if (!rc && !j->gen) rc = gen_open(&j->gen, j->spec->model_path, err);
    for (size_t k = 0; !rc && k < n; k++) {
        eval_item *it = &j->items[first + k];
        size_t len = 0;
        rc = eval_prompt(j, it, &texts[k], err);
        if (!rc && it->image) {
            char path[PATH_MAX];
            int w = it->image[0] == '/' ? snprintf(path, sizeof path, "%s", it->image)
                                        : snprintf(path, sizeof path, "%s/%s", j->images_root,
                                                   it->image);
            if (w < 0 || (size_t)w >= sizeof path)
                rc = adapt_fail(err, ADAPT_EINVAL, "image path too long");
            else rc = read_bytes(path, &images[k], &len, err);
            if (rc)
                rc = adapt_error_prefix(err, "%s item %s: field \"image\": ", j->spec->benchmark,
                                        it->id);
        }
        prompts[k] = (gen_prompt){ .text = texts[k], .image = images[k], .image_len = len };
    }
    gen_options go = { .max_new_tokens = j->spec->max_new_tokens, .top_p = 1 };
    /* in batches, so one huge chunk never holds every KV cache at once */
    size_t done = 0;
    for (size_t b = 0; !rc && b < n; b += j->spec->batch_size) {
        size_t m = n - b < j->spec->batch_size ? n - b : j->spec->batch_size;
        rc = gen_run(j->gen, prompts + b, m, &go, results + b, err);
        if (!rc) done = b + m;
    }
    char *text = NULL;
    size_t tlen = 0;
    for (size_t k = 0; !rc && k < n; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", (double)(first + k));
        cJSON_AddStringToObject(o, "prediction", results[k].text ? results[k].text : "");
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        size_t ls = s ? strlen(s) : 0;
        char *g = s ? realloc(text, tlen + ls + 2) : NULL;
        if (!g) {
            free(s);
            rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
            break;
        }
        text = g;
        memcpy(text + tlen, s, ls);
        text[tlen + ls] = '\n';
        tlen += ls + 1;
        free(s);
    }
    if (!rc) {
        char path[PATH_MAX];
        chunk_path(j, c, path, sizeof path);
        rc = file_io_write_atomic(path, text ? text : "", tlen, err);
    }
    free(text);
    for (size_t k = 0; k < done; k++) gen_result_clear(&results[k]);
    for (size_t k = 0; texts && k < n; k++) free(texts[k]);
    for (size_t k = 0; images && k < n; k++) free(images[k]);
    free(prompts);
    free(results);
    free(texts);
    free(images);
    return rc;
}

/* Scores one item; parsed (optional) receives the parsed option index or -1. */
static int eval_score(const eval_job *j, const eval_item *it, double *score, long *parsed,
                      int *random_pick, adapt_error *err)
{
    const char *pred = it->prediction ? it->prediction : "";
    *parsed = -1;
    *random_pick = 0;
    switch (it->type) {
    case SCORER_OPEN: return scorer_open_recall(pred, it->answer, score, err);
    case SCORER_CLOSED: return scorer_closed(pred, it->answer, score, err);
    case SCORER_ROUGE_L: return scorer_rouge_l(pred, it->answer, score, err);
    case SCORER_MULTI_CHOICE:
    case SCORER_CLASSIFICATION: {
        char (*names)[24] = calloc(it->n_options, sizeof *names);
        const char **choices = calloc(it->n_options, sizeof *choices);
        int rc = names && choices ? 0 : adapt_fail(err, ADAPT_ENOMEM, "no memory");
        for (size_t i = 0; !rc && i < it->n_options; i++) {
            if (it->type == SCORER_MULTI_CHOICE) snprintf(names[i], sizeof *names, "%c", (char)('A' + i));
            else snprintf(names[i], sizeof *names, "%zu", i);
            choices[i] = names[i];
        }
        size_t idx = 0;
        uint64_t seed = data_order_key(j->spec->seed, EVAL_STREAM_CHOICE,
                                       data_order_hash_str(it->id));
        if (!rc) rc = scorer_parse_choice(pred, choices, (const char *const *)it->options,
                                          it->n_options, seed, &idx, random_pick, err);
        if (!rc) {
            *parsed = (long)idx;
            *score = idx == it->answer_index;
        }
        free(names);
        free(choices);
        return rc;
    }
    case SCORER_MULTI_LABEL: {
        unsigned char *truth = calloc(it->n_options, 1), *picked = calloc(it->n_options, 1);
        int rc = truth && picked ? 0 : adapt_fail(err, ADAPT_ENOMEM, "no memory");
        for (size_t i = 0; !rc && i < it->n_options; i++)
            for (size_t l = 0; l < it->n_labels; l++)
                truth[i] |= !strcmp(it->options[i], it->labels[l]);
        if (!rc) rc = scorer_parse_labels(pred, (const char *const *)it->options, it->n_options,
                                          picked, err);
        if (!rc) *score = scorer_f1(truth, picked, it->n_options);
        free(truth);
        free(picked);
        return rc;
    }
    default:
        return adapt_fail(err, ADAPT_EINVAL, "item %s: unknown type", it->id);
    }
}

typedef struct eval_row {
    const char *task;
    scorer_kind type;
    size_t      n, random_picks;
    double      sum;
} eval_row;

static int write_text(const char *dir, const char *name, const char *text, adapt_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return file_io_write_atomic(path, text, strlen(text), err);
}

/* Rank 0: scores every item, writes predictions.jsonl, scores.json and scores.txt. */
static int eval_report(eval_job *j, FILE *progress, adapt_error *err)
{
    eval_row *rows = calloc(j->n, sizeof *rows);
    size_t n_rows = 0;
    char *plines = NULL;
    size_t plen = 0;
    int rc = rows ? ADAPT_OK : adapt_fail(err, ADAPT_ENOMEM, "no memory");
    for (size_t i = 0; !rc && i < j->n; i++) {
        eval_item *it = &j->items[i];
        double score = 0;
        long parsed;
        int rnd;
        if ((rc = eval_score(j, it, &score, &parsed, &rnd, err))) break;
        size_t r = 0;
        while (r < n_rows && (strcmp(rows[r].task, it->task) || rows[r].type != it->type)) r++;
        if (r == n_rows) rows[n_rows++] = (eval_row){ .task = it->task, .type = it->type };
        rows[r].n++;
        rows[r].sum += score;
        rows[r].random_picks += (size_t)rnd;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", (double)i);
        cJSON_AddStringToObject(o, "id", it->id);
        cJSON_AddStringToObject(o, "task", it->task);
        cJSON_AddStringToObject(o, "type", scorer_kind_name(it->type));
        cJSON_AddStringToObject(o, "question", it->question);
        if (it->answer) cJSON_AddStringToObject(o, "answer", it->answer);
        else cJSON_AddItemToObject(o, "answer", cJSON_CreateStringArray(
                                       (const char *const *)it->labels, (int)it->n_labels));
        cJSON_AddStringToObject(o, "prediction", it->prediction ? it->prediction : "");
        if (parsed >= 0) {
            cJSON_AddNumberToObject(o, "parsed_option", (double)parsed);
            cJSON_AddBoolToObject(o, "random_pick", rnd);
        }
        cJSON_AddNumberToObject(o, "score", score * 100);
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        size_t ls = s ? strlen(s) : 0;
        char *g = s ? realloc(plines, plen + ls + 2) : NULL;
        if (!g) {
            free(s);
            rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
            break;
        }
        plines = g;
        memcpy(plines + plen, s, ls);
        plines[plen + ls] = '\n';
        plen += ls + 1;
        plines[plen] = '\0';
        free(s);
    }
    if (!rc) rc = write_text(j->spec->output_dir, "predictions.jsonl", plines ? plines : "", err);
    /* the tables */
    cJSON *doc = cJSON_CreateObject(), *tasks = cJSON_CreateArray();
    size_t tcap = 256 + 128 * (n_rows + 1);
    char *table = malloc(tcap);
    if (!rc && (!doc || !tasks || !table)) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
    if (!rc) {
        size_t t = (size_t)snprintf(table, tcap, "%-24s %-15s %7s  %-16s %8s\n", "task", "type",
                                    "n", "metric", "score");
        for (size_t r = 0; r < n_rows; r++) {
            double mean = rows[r].n ? 100.0 * rows[r].sum / (double)rows[r].n : 0;
            t += (size_t)snprintf(table + t, tcap - t, "%-24.24s %-15s %7zu  %-16s %8.2f\n",
                                  rows[r].task, scorer_kind_name(rows[r].type), rows[r].n,
                                  scorer_metric_name(rows[r].type), mean);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "task", rows[r].task);
            cJSON_AddStringToObject(o, "type", scorer_kind_name(rows[r].type));
            cJSON_AddStringToObject(o, "metric", scorer_metric_name(rows[r].type));
            cJSON_AddNumberToObject(o, "n", (double)rows[r].n);
            cJSON_AddNumberToObject(o, "score", mean);
            if (rows[r].type == SCORER_MULTI_CHOICE || rows[r].type == SCORER_CLASSIFICATION)
                cJSON_AddNumberToObject(o, "random_picks", (double)rows[r].random_picks);
            cJSON_AddItemToArray(tasks, o);
        }
        cJSON_AddStringToObject(doc, "kind", "evaluate");
        cJSON_AddStringToObject(doc, "benchmark", j->spec->benchmark);
        cJSON_AddStringToObject(doc, "model", j->spec->model_path);
        cJSON_AddNumberToObject(doc, "items", (double)j->n);
        cJSON_AddItemToObject(doc, "tasks", tasks);
        tasks = NULL;
        char *json = cJSON_PrintUnformatted(doc);
        if (!json) rc = adapt_fail(err, ADAPT_ENOMEM, "no memory");
        if (!rc) rc = write_text(j->spec->output_dir, "scores.txt", table, err);
        if (!rc) {
            size_t lj = strlen(json);
            char *withnl = realloc(json, lj + 2);
            if (withnl) {
                json = withnl;
                memcpy(json + lj, "\n", 2);
            }
            rc = write_text(j->spec->output_dir, "scores.json", json, err);
        }
        if (!rc && progress) {
            fputs(json, progress);
            fflush(progress);
            fputs(table, stderr);
        }
        free(json);
    }
    cJSON_Delete(tasks);
    cJSON_Delete(doc);
    free(table);
    free(plines);
    free(rows);
    return rc;
}

int job_evaluate_run(const job_run_options *o, const Adaptd__EvaluateSpec *spec,
                     adapt_error *err)
{
    eval_job j = { .spec = spec };
    int rc = ADAPT_OK;
    if (spec->images_root[0]) snprintf(j.images_root, sizeof j.images_root, "%s", spec->images_root);
    else {
        snprintf(j.images_root, sizeof j.images_root, "%s", spec->benchmark);
        char *slash = strrchr(j.images_root, '/');
        if (slash) *slash = '\0';
        else snprintf(j.images_root, sizeof j.images_root, ".");
    }
    rc = job_kinds_model_type(spec->model_path, &j.family, err);
    if (!rc && strcmp(j.family, "qwen2_vl") && strcmp(j.family, "llava_next") &&
        strcmp(j.family, "llava"))
        rc = adapt_fail(err, ADAPT_EUNSUPPORTED, "evaluate.model_path %s: model_type \"%s\" has "
                        "no evaluation chat template (qwen2_vl, llava_next)", spec->model_path,
                        j.family);
    if (!rc) rc = eval_load(&j, err);
    char parts[PATH_MAX];
    snprintf(parts, sizeof parts, "%s/parts", spec->output_dir);
    if (!rc && ((mkdir(spec->output_dir, 0755) && errno != EEXIST) ||
                (mkdir(parts, 0755) && errno != EEXIST)))
        rc = adapt_fail(err, ADAPT_EIO, "evaluate.output_dir %s: cannot create it: %s",
                        spec->output_dir, strerror(errno));
    int rank = comm_rank(o->c), world = comm_world(o->c);
    size_t n_chunks = (j.n + JOB_EVAL_CHUNK - 1) / JOB_EVAL_CHUNK;
    work_source *ws = NULL;
    if (!rc) rc = work_source_open(&ws, rank, world, "evaluate", n_chunks, err);
    uint64_t units = 0, records = 0, c = 0;
    uint64_t mine = work_source_queued(ws) ? n_chunks : job_rank_units(n_chunks, rank, world);
    int more = 1;
    while (!rc && !(rc = work_source_next(ws, &c, &more, err)) && more) {
        adapt_error ignore;
        char path[PATH_MAX];
        size_t n = (c + 1) * JOB_EVAL_CHUNK <= j.n ? JOB_EVAL_CHUNK : j.n - c * JOB_EVAL_CHUNK;
        int done = chunk_read(&j, c, &ignore) == 0;
        if (!done) rc = chunk_generate(&j, c, err);
        chunk_path(&j, c, path, sizeof path);
        if (!rc) rc = work_source_done(ws, c, path, n, err);
        if (rc) break;
        records += n;
        if (o->progress) {
            fprintf(o->progress, "{\"kind\": \"evaluate\", \"rank\": %d, \"chunk\": %llu, "
                    "\"chunks\": %zu, \"skipped\": %s}\n", rank, (unsigned long long)c,
                    n_chunks, done ? "true" : "false");
            fflush(o->progress);
        }
        if (o->unit_done) o->unit_done(o->ctx, ++units, mine, records);
    }
    work_source_close(ws);
    if (j.gen) gen_close(j.gen);
    rc = job_ranks_agree(o->c, rc, err);
    for (size_t k = 0; !rc && rank == 0 && k < n_chunks; k++) rc = chunk_read(&j, k, err);
    if (!rc && rank == 0) rc = eval_report(&j, o->progress, err);
    for (size_t i = 0; i < j.n; i++) item_free(&j.items[i]);
    free(j.items);
    free(j.family);
    return rc;
}
