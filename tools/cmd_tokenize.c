/* cmd_tokenize: `adaptctl tokenize`, the tokenizer and chat renderer from the command line, for
 * people debugging a corpus and for the reference tests that compare adaptd with Hugging Face.
 *
 * The one idea: every mode reads plain input and writes plain, line-oriented output, so a shell
 * pipe or a test script can drive it; --batch frames texts by length so a text may hold any byte
 * sequence (newlines, NUL) and thousands of texts share one tokenizer load. */
#include "commands.h"
#include "tok.h"
#include "tok_chat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct tokenize_args {
    const char *tokenizer_dir;
    const char *chat_file;
    bool decode, batch, skip_special, lossy, json, timing;
    int first_text;   /* argv index of the first positional argument, argc if none */
} tokenize_args;

static void tokenize_usage(FILE *out)
{
    fprintf(out,
        "usage: adaptctl tokenize --tokenizer DIR [options] [TEXT...]\n"
        "  text (arguments, or stdin when none) in, ids out (one line, space separated)\n"
        "  --tokenizer DIR   directory with tokenizer.json (and tokenizer_config.json)\n"
        "  --decode          ids in (arguments or stdin), text out\n"
        "  --skip-special    with --decode: drop special tokens\n"
        "  --lossy           with --decode: invalid UTF-8 becomes U+FFFD, as tokenizers decodes\n"
        "  --chat FILE.json  render a conversation; prints each id with its loss mask\n"
        "  --json            with --chat: print {\"ids\", \"mask\", \"images\"} as JSON\n"
        "  --batch           stdin holds records \"LENGTH\\nBYTES\"; one line of ids per record\n"
        "                    (with --decode: a line of ids in, a record out)\n"
        "  --time            print the load time and the encode throughput on stderr\n"
        "chat file: {\"template\": \"qwen2_vl\" | \"llava_llama_3\", \"mask\": \"assistant\" | "
        "\"synthesizer\",\n"
        "  \"generation_role\": \"assistant\", \"image_token_id\": N, \"system\": \"...\",\n"
        "  \"messages\": [{\"role\": \"user\", \"content\": \"text\" | [{\"type\": \"text\", "
        "\"text\": \"...\"},\n"
        "  {\"type\": \"image\", \"grid_thw\": [1, 28, 28]} | {\"type\": \"image\", \"tokens\": N}]}]}\n");
}

static int parse_args(int argc, char **argv, tokenize_args *a)
{
    memset(a, 0, sizeof *a);
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--")) { i++; break; }
        if (!strcmp(s, "--tokenizer") && i + 1 < argc) a->tokenizer_dir = argv[++i];
        else if (!strcmp(s, "--chat") && i + 1 < argc) a->chat_file = argv[++i];
        else if (!strcmp(s, "--decode")) a->decode = true;
        else if (!strcmp(s, "--batch")) a->batch = true;
        else if (!strcmp(s, "--skip-special")) a->skip_special = true;
        else if (!strcmp(s, "--lossy")) a->lossy = true;
        else if (!strcmp(s, "--json")) a->json = true;
        else if (!strcmp(s, "--time")) a->timing = true;
        else if (!strcmp(s, "--help") || !strcmp(s, "-h")) { tokenize_usage(stdout); return 1; }
        else {
            fprintf(stderr, "adaptctl tokenize: unknown or incomplete option '%s'\n", s);
            tokenize_usage(stderr);
            return -1;
        }
    }
    a->first_text = i;
    if (!a->tokenizer_dir) {
        fprintf(stderr, "adaptctl tokenize: --tokenizer DIR is required\n");
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int read_stream(FILE *f, tok_bytes *out)
{
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        if (tok_bytes_append(out, buf, n)) return ADAPT_ENOMEM;
    if (!out->data && tok_bytes_append(out, "", 0)) return ADAPT_ENOMEM;
    return ferror(f) ? ADAPT_EIO : ADAPT_OK;
}

static void print_ids(const tok_ids *ids)
{
    for (size_t i = 0; i < ids->n; i++) printf(i ? " %d" : "%d", ids->ids[i]);
    putchar('\n');
}

/* Encodes each argument, or stdin as one text. */
static int run_encode(tok_encoder *enc, int argc, char **argv, const tokenize_args *a)
{
    adapt_error err = {0};
    tok_ids ids = {0};
    tok_bytes in = {0};
    int rc = ADAPTCTL_EXIT_OK;
    if (a->first_text == argc && read_stream(stdin, &in)) {
        fprintf(stderr, "adaptctl tokenize: reading stdin: %s\n", strerror(errno));
        return ADAPTCTL_EXIT_FAULT;
    }
    for (int i = a->first_text; i < argc || (i == argc && in.data); i++) {
        const char *text = i < argc ? argv[i] : in.data;
        size_t len = i < argc ? strlen(argv[i]) : in.len;
        ids.n = 0;
        if (tok_encode(enc, text, len, &ids, &err)) {
            fprintf(stderr, "adaptctl tokenize: %s\n", err.message);
            rc = ADAPTCTL_EXIT_FAULT;
            break;
        }
        print_ids(&ids);
        if (i == argc) break;
    }
    tok_ids_free(&ids);
    tok_bytes_free(&in);
    return rc;
}

/* Reads one record "LENGTH\nBYTES" of --batch; 0 at a clean end of input, 1 for a record. */
static int read_record(FILE *f, tok_bytes *rec, size_t index)
{
    unsigned long long len;
    int c = fscanf(f, "%llu", &len);
    if (c == EOF) return 0;
    if (c != 1 || fgetc(f) != '\n') {
        fprintf(stderr, "adaptctl tokenize: --batch record %zu: expected \"LENGTH\\n\"\n", index);
        return -1;
    }
    rec->len = 0;
    if (len > (1ull << 32) || tok_bytes_reserve(rec, (size_t)len + 1)) {
        fprintf(stderr, "adaptctl tokenize: --batch record %zu: %llu bytes is too long\n", index, len);
        return -1;
    }
    if (fread(rec->data, 1, len, f) != len) {
        fprintf(stderr, "adaptctl tokenize: --batch record %zu: truncated (%llu bytes announced)\n",
                index, len);
        return -1;
    }
    rec->len = len;
    return 1;
}

static int run_encode_batch(tok_encoder *enc, const tokenize_args *a)
{
    adapt_error err = {0};
    tok_ids ids = {0};
    tok_bytes rec = {0};
    int rc = ADAPTCTL_EXIT_OK, got;
    size_t index = 0, bytes = 0;
    double encode_s = 0;
    while ((got = read_record(stdin, &rec, index)) > 0) {
        ids.n = 0;
        double t0 = now_s();
        int e = tok_encode(enc, rec.data, rec.len, &ids, &err);
        encode_s += now_s() - t0;
        if (e) {
            fprintf(stderr, "adaptctl tokenize: --batch record %zu: %s\n", index, err.message);
            rc = ADAPTCTL_EXIT_FAULT;
            break;
        }
        print_ids(&ids);
        bytes += rec.len;
        index++;
    }
    if (got < 0) rc = ADAPTCTL_EXIT_FAULT;
    if (a->timing && encode_s > 0)
        fprintf(stderr, "encode: %zu texts, %zu bytes in %.3f s: %.2f MB/s\n", index, bytes,
                encode_s, bytes / encode_s / 1e6);
    tok_ids_free(&ids);
    tok_bytes_free(&rec);
    return rc;
}

/* Parses a line (or argument) of ids separated by spaces or commas, appending to ids. */
static int parse_ids(const char *s, tok_ids *ids)
{
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '[' || *s == ']') {
            s++;
            continue;
        }
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < INT32_MIN || v > INT32_MAX) return -1;
        if (tok_ids_push(ids, (int32_t)v, 0)) return -1;
        s = end;
    }
    return 0;
}

static int decode_one(const tok_tokenizer *tok, const tok_ids *ids, const tokenize_args *a, bool record)
{
    adapt_error err = {0};
    tok_bytes out = {0};
    unsigned flags = (a->skip_special ? TOK_DECODE_SKIP_SPECIAL : 0) | (a->lossy ? TOK_DECODE_LOSSY : 0);
    if (tok_decode(tok, ids->ids, ids->n, flags, &out, &err)) {
        fprintf(stderr, "adaptctl tokenize --decode: %s\n", err.message);
        tok_bytes_free(&out);
        return ADAPTCTL_EXIT_FAULT;
    }
    if (record) printf("%zu\n", out.len);
    fwrite(out.data, 1, out.len, stdout);
    if (!record) putchar('\n');
    tok_bytes_free(&out);
    return ADAPTCTL_EXIT_OK;
}

static int run_decode(const tok_tokenizer *tok, int argc, char **argv, const tokenize_args *a)
{
    tok_ids ids = {0};
    int rc = ADAPTCTL_EXIT_OK;
    char *line = NULL;
    size_t cap = 0;
    if (a->first_text < argc) {
        for (int i = a->first_text; i < argc && !rc; i++)
            if (parse_ids(argv[i], &ids)) {
                fprintf(stderr, "adaptctl tokenize --decode: argument '%s' is not a list of ids\n", argv[i]);
                rc = ADAPTCTL_EXIT_USAGE;
            }
        if (!rc) rc = decode_one(tok, &ids, a, false);
    } else {
        /* one line of ids per text; without --batch all lines are one text */
        size_t lineno = 0;
        while (!rc && getline(&line, &cap, stdin) > 0) {
            lineno++;
            if (parse_ids(line, &ids)) {
                fprintf(stderr, "adaptctl tokenize --decode: stdin line %zu is not a list of ids\n", lineno);
                rc = ADAPTCTL_EXIT_FAULT;
            } else if (a->batch) {
                rc = decode_one(tok, &ids, a, true);
                ids.n = 0;
            }
        }
        if (!rc && !a->batch) rc = decode_one(tok, &ids, a, false);
    }
    free(line);
    tok_ids_free(&ids);
    return rc;
}

/* ---- --chat --------------------------------------------------------------------------------- */

typedef struct chat_input {
    tok_chat_options  opt;
    tok_chat_message *msgs;
    tok_chat_part    *parts;   /* all messages' parts, in order */
    size_t            n_msgs;
} chat_input;

static int chat_part_parse(const cJSON *p, tok_chat_part *out, const char *path, size_t mi, size_t pi)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "";
    memset(out, 0, sizeof *out);
    if (!strcmp(ty, "text")) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(t)) goto bad;
        out->text = t->valuestring;
        out->len = strlen(t->valuestring);
        return 0;
    }
    if (!strcmp(ty, "image")) {
        const cJSON *grid = cJSON_GetObjectItemCaseSensitive(p, "grid_thw");
        const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(p, "tokens");
        int64_t n = -1;
        if (cJSON_GetArraySize(grid) == 3)
            n = tok_qwen2_vl_image_tokens((int64_t)cJSON_GetArrayItem(grid, 0)->valuedouble,
                                          (int64_t)cJSON_GetArrayItem(grid, 1)->valuedouble,
                                          (int64_t)cJSON_GetArrayItem(grid, 2)->valuedouble, 2);
        else if (cJSON_IsNumber(tokens))
            n = (int64_t)tokens->valuedouble;
        if (n <= 0 || n > INT32_MAX) goto bad;
        out->n_image_tokens = (int32_t)n;
        return 0;
    }
bad:
    fprintf(stderr, "adaptctl tokenize: %s: messages[%zu].content[%zu]: expected {\"type\": \"text\", "
            "\"text\": ...} or {\"type\": \"image\", \"grid_thw\": [t, h, w] (h, w even) or "
            "\"tokens\": N}\n", path, mi, pi);
    return -1;
}

static int chat_options_parse(const cJSON *root, tok_chat_options *opt, const char *path)
{
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "template");
    const cJSON *mask = cJSON_GetObjectItemCaseSensitive(root, "mask");
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(root, "generation_role");
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(root, "image_token_id");
    const cJSON *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
    int fam = cJSON_IsString(tpl) ? tok_chat_family_parse(tpl->valuestring) : -1;
    int mm = cJSON_IsString(mask) ? tok_chat_mask_mode_parse(mask->valuestring)
                                  : (mask ? -1 : TOK_CHAT_MASK_ASSISTANT);
    if (fam < 0 || mm < 0 || (gen && !cJSON_IsString(gen)) || (img && !cJSON_IsNumber(img)) ||
        (sys && !cJSON_IsString(sys))) {
        fprintf(stderr, "adaptctl tokenize: %s: needs \"template\" (qwen2_vl | llava_llama_3); "
                "\"mask\" is assistant | synthesizer, \"generation_role\" and \"system\" strings, "
                "\"image_token_id\" a number\n", path);
        return -1;
    }
    *opt = (tok_chat_options){(tok_chat_family)fam, (tok_chat_mask_mode)mm,
                              gen ? gen->valuestring : NULL, sys ? sys->valuestring : NULL,
                              img ? (int32_t)img->valuedouble : -1};
    return 0;
}

static int chat_input_parse(const cJSON *root, chat_input *in, const char *path)
{
    if (chat_options_parse(root, &in->opt, path)) return -1;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(msgs)) {
        fprintf(stderr, "adaptctl tokenize: %s: \"messages\" must be a list\n", path);
        return -1;
    }
    size_t n_parts = 0, mi = 0, pi = 0;
    for (const cJSON *m = msgs->child; m; m = m->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        n_parts += cJSON_IsArray(c) ? (size_t)cJSON_GetArraySize(c) : 1;
    }
    in->n_msgs = (size_t)cJSON_GetArraySize(msgs);
    in->msgs = calloc(in->n_msgs + 1, sizeof *in->msgs);
    in->parts = calloc(n_parts + 1, sizeof *in->parts);
    if (!in->msgs || !in->parts) return -1;
    for (const cJSON *m = msgs->child; m; m = m->next, mi++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role) || !(cJSON_IsString(c) || cJSON_IsArray(c))) {
            fprintf(stderr, "adaptctl tokenize: %s: messages[%zu]: needs \"role\" and \"content\" "
                    "(a string or a list of parts)\n", path, mi);
            return -1;
        }
        in->msgs[mi] = (tok_chat_message){role->valuestring, &in->parts[pi], 0};
        if (cJSON_IsString(c)) {
            in->parts[pi++] = (tok_chat_part){c->valuestring, strlen(c->valuestring), 0};
            in->msgs[mi].n_parts = 1;
            continue;
        }
        size_t k = 0;
        for (const cJSON *p = c->child; p; p = p->next, k++)
            if (chat_part_parse(p, &in->parts[pi++], path, mi, k)) return -1;
        in->msgs[mi].n_parts = k;
    }
    return 0;
}

static void print_chat_json(const tok_chat *c)
{
    printf("{\"ids\": [");
    for (size_t i = 0; i < c->n; i++) printf(i ? ", %d" : "%d", c->ids[i]);
    printf("], \"mask\": [");
    for (size_t i = 0; i < c->n; i++) printf(i ? ", %d" : "%d", c->mask[i]);
    printf("], \"images\": [");
    for (size_t i = 0; i < c->n_images; i++)
        printf(i ? ", [%zu, %zu]" : "[%zu, %zu]", c->images[i].start, c->images[i].n);
    printf("]}\n");
}

/* One line per token: position, id, mask, the token's text with control bytes escaped; an image
 * run is one line. */
static void print_chat_table(const tok_tokenizer *tok, const tok_chat *c)
{
    size_t trained = 0, img = 0;
    printf("%6s %8s %4s  %s\n", "pos", "id", "loss", "token");
    for (size_t i = 0; i < c->n; i++) {
        if (img < c->n_images && c->images[img].start == i) {
            printf("%6zu %8d %4d  [image %zu: %zu placeholder tokens]\n", i, c->ids[i], 0, img,
                   c->images[img].n);
            i += c->images[img++].n - 1;
            continue;
        }
        trained += c->mask[i];
        tok_bytes b = {0};
        adapt_error err = {0};
        tok_decode(tok, &c->ids[i], 1, 0, &b, &err);
        printf("%6zu %8d %4d  ", i, c->ids[i], c->mask[i]);
        for (size_t k = 0; k < b.len; k++) {
            unsigned char ch = (unsigned char)b.data[k];
            if (ch == '\n') fputs("\\n", stdout);
            else if (ch < 0x20 || ch == 0x7F) printf("\\x%02X", ch);
            else putchar(ch);
        }
        putchar('\n');
        tok_bytes_free(&b);
    }
    printf("%zu tokens, %zu with loss, %zu images\n", c->n, trained, c->n_images);
}

static int run_chat(const tok_tokenizer *tok, tok_encoder *enc, const tokenize_args *a)
{
    FILE *f = fopen(a->chat_file, "rb");
    if (!f) {
        fprintf(stderr, "adaptctl tokenize: %s: %s\n", a->chat_file, strerror(errno));
        return ADAPTCTL_EXIT_FAULT;
    }
    tok_bytes data = {0};
    int rd = read_stream(f, &data);
    fclose(f);
    cJSON *root = rd ? NULL : cJSON_ParseWithLength(data.data, data.len);
    tok_bytes_free(&data);
    if (!root) {
        fprintf(stderr, "adaptctl tokenize: %s: not valid JSON\n", a->chat_file);
        return ADAPTCTL_EXIT_FAULT;
    }
    chat_input in = {0};
    tok_chat chat = {0};
    adapt_error err = {0};
    int rc = ADAPTCTL_EXIT_FAULT;
    if (!chat_input_parse(root, &in, a->chat_file)) {
        if (tok_chat_render(enc, tok, in.msgs, in.n_msgs, &in.opt, &chat, &err)) {
            fprintf(stderr, "adaptctl tokenize: %s: %s\n", a->chat_file, err.message);
        } else {
            if (a->json) print_chat_json(&chat);
            else print_chat_table(tok, &chat);
            rc = ADAPTCTL_EXIT_OK;
        }
    }
    tok_chat_free(&chat);
    free(in.msgs);
    free(in.parts);
    cJSON_Delete(root);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    tokenize_args a;
    int p = parse_args(argc, argv, &a);
    if (p) return p > 0 ? ADAPTCTL_EXIT_OK : ADAPTCTL_EXIT_USAGE;
    adapt_error err = {0};
    tok_tokenizer *tok = NULL;
    tok_encoder *enc = NULL;
    double t0 = now_s();
    if (tok_load(&tok, a.tokenizer_dir, &err) || tok_encoder_new(&enc, tok, &err)) {
        fprintf(stderr, "adaptctl tokenize: %s\n", err.message);
        tok_free(tok);
        return ADAPTCTL_EXIT_FAULT;
    }
    if (a.timing) fprintf(stderr, "load: %.3f s\n", now_s() - t0);
    int rc;
    if (a.chat_file) rc = run_chat(tok, enc, &a);
    else if (a.decode) rc = run_decode(tok, argc, argv, &a);
    else if (a.batch) rc = run_encode_batch(enc, &a);
    else rc = run_encode(enc, argc, argv, &a);
    if (fflush(stdout)) rc = ADAPTCTL_EXIT_FAULT;
    tok_encoder_free(enc);
    tok_free(tok);
    return rc;
}
