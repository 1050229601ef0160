/* fuzz_tok: libFuzzer harness of the tokenizer — random bytes (invalid UTF-8 included) into
 * encode, random ids into decode, random conversations into chat rendering, on both real
 * tokenizers. Invariants beyond "no crash, no hang": encode refuses exactly the invalid UTF-8,
 * the token offsets rise to the text's end, and with Llama 3 (no normalizer) decoding the ids
 * gives the text back byte for byte.
 *
 * Build and run (see meson.build here for the build dir):
 *   ninja -C build-fuzz tests/fuzz/fuzz_tok
 *   ADAPT_FUZZ_TOKENIZERS=../shared/fixtures/tokenizers build-fuzz/tests/fuzz/fuzz_tok \
 *       -max_total_time=600 -timeout=10 -max_len=65536 /tmp/fuzz-tok
 * ADAPT_FUZZ_TOKENIZERS holds qwen3/ and llama3/; its default is that path, relative to the
 * repository root. The first input byte picks the mode and the tokenizer. */
#include "../../worker/tok.h"
#include "../../worker/tok_chat.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer gives the harness no context pointer, so the loaded tokenizers live here; they are
 * written once in LLVMFuzzerInitialize and only read afterwards. */
typedef struct fuzz_state {
    tok_tokenizer *tok[2];
    tok_encoder   *enc[2];
} fuzz_state;
static fuzz_state fz;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *root = getenv("ADAPT_FUZZ_TOKENIZERS");
    if (!root) root = "../shared/fixtures/tokenizers";
    const char *names[2] = {"qwen3", "llama3"};
    for (int i = 0; i < 2; i++) {
        char dir[4096];
        adapt_error err = {0};
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        if (tok_load(&fz.tok[i], dir, &err) || tok_encoder_new(&fz.enc[i], fz.tok[i], &err)) {
            fprintf(stderr, "fuzz_tok: %s (set ADAPT_FUZZ_TOKENIZERS)\n", err.message);
            exit(1);
        }
    }
    return 0;
}

static void fuzz_encode(int which, const uint8_t *data, size_t size)
{
    tok_ids ids = {0};
    adapt_error err = {0};
    int rc = tok_encode(fz.enc[which], (const char *)data, size, &ids, &err);
    bool valid = tok_utf8_check(data, size) == size;
    if (rc != 0) {
        if (valid || rc != ADAPT_EINVAL) abort();   /* only invalid UTF-8 may be refused */
        tok_ids_free(&ids);
        return;
    }
    if (!valid) abort();
    for (size_t i = 1; i < ids.n; i++) if (ids.ends[i] < ids.ends[i - 1]) abort();
    if (ids.n && ids.ends[ids.n - 1] != size) abort();
    /* without normalization (llama3) the round trip is exact */
    tok_bytes back = {0};
    if (tok_decode(fz.tok[which], ids.ids, ids.n, 0, &back, &err)) abort();
    if (which == 1 && (back.len != size || memcmp(back.data, data, size))) abort();
    tok_bytes_free(&back);
    tok_ids_free(&ids);
}

static void fuzz_decode(int which, const uint8_t *data, size_t size)
{
    size_t n = size / 4;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    size_t vocab = tok_vocab_size(fz.tok[which]);
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        /* mostly in range, sometimes out of it or negative */
        ids[i] = (v & 0xF0000000u) ? (int32_t)v : (int32_t)(v % (vocab + 16));
    }
    tok_bytes out = {0};
    adapt_error err = {0};
    unsigned flags = size ? data[0] & 3 : 0;
    int rc = tok_decode(fz.tok[which], ids, n, flags, &out, &err);
    if (rc && rc != ADAPT_ERANGE) abort();
    if (!rc && (flags & TOK_DECODE_LOSSY) && tok_utf8_check((const uint8_t *)out.data, out.len) != out.len)
        abort();
    tok_bytes_free(&out);
    free(ids);
}

/* The input cut at 0x00 bytes into message parts; a part starting with 0x01 is an image. */
static void fuzz_chat(int which, const uint8_t *data, size_t size)
{
    tok_chat_part parts[16];
    tok_chat_message msgs[16];
    static const char *roles[4] = {"user", "assistant", "system", "tool"};
    size_t np = 0, start = 0;
    for (size_t i = 0; i <= size && np < 16; i++) {
        if (i < size && data[i]) continue;
        const uint8_t *p = data + start;
        size_t len = i - start;
        if (len && p[0] == 1) parts[np] = (tok_chat_part){NULL, 0, 1 + (len > 1 ? p[1] % 64 : 0)};
        else parts[np] = (tok_chat_part){(const char *)p, len, 0};
        msgs[np] = (tok_chat_message){roles[(len ? p[len - 1] : np) % 4], &parts[np], 1};
        np++;
        start = i + 1;
    }
    tok_chat_options opt = {which ? TOK_CHAT_LLAVA_LLAMA_3 : TOK_CHAT_QWEN2_VL,
                            size && (data[0] & 1) ? TOK_CHAT_MASK_AFTER_FIRST_TURN : TOK_CHAT_MASK_ASSISTANT,
                            size && (data[0] & 2) ? "assistant" : NULL, NULL, 128256};
    tok_chat chat = {0};
    adapt_error err = {0};
    int rc = tok_chat_render(fz.enc[which], fz.tok[which], msgs, np, &opt, &chat, &err);
    if (rc && rc != ADAPT_EINVAL) abort();
    for (size_t i = 0; !rc && i < chat.n_images; i++)
        if (chat.images[i].start + chat.images[i].n > chat.n) abort();
    tok_chat_free(&chat);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0] % 6, which = mode & 1;
    data++;
    size--;
    if (mode < 2) fuzz_encode(which, data, size);
    else if (mode < 4) fuzz_decode(which, data, size);
    else fuzz_chat(which, data, size);
    return 0;
}
