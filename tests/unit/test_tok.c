/* test_tok: the tokenizer and chat renderer on the real Qwen3 and Llama 3 tokenizers — ids
 * Hugging Face `tokenizers` gives (recorded from tokenizers 0.23.3), bos/eos/pad, errors that name
 * what and where, decode flags, one tokenizer shared by threads, the chat loss mask and image
 * positions. The 2 MB comparison against tokenizers itself is tests/reference/tok_reference.py.
 *
 *   test_tok FIXTURES_DIR      (FIXTURES_DIR/tokenizers/{qwen3,llama3}) */
#include "../check.h"
#include "tok.h"
#include "tok_chat.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool ids_equal(const tok_ids *got, const int32_t *want, size_t n)
{
    if (got->n != n) return false;
    for (size_t i = 0; i < n; i++) if (got->ids[i] != want[i]) return false;
    return true;
}

static void encode_expect(tok_encoder *enc, const char *text, const int32_t *want, size_t n)
{
    tok_ids ids = {0};
    adapt_error err = {0};
    CHECK_MSG(tok_encode(enc, text, strlen(text), &ids, &err) == 0, "%s", err.message);
    CHECK_MSG(ids_equal(&ids, want, n), "ids of \"%s\" differ (%zu tokens, want %zu)", text, ids.n, n);
    tok_ids_free(&ids);
}

static void test_qwen3(const tok_tokenizer *tok, tok_encoder *enc)
{
    static const int32_t hello[] = {9707, 1879, 11, 419, 374, 220, 264, 1273, 220, 16, 17, 18, 19,
                                    20, 220, 151644, 71, 18503, 385, 220, 108386};
    encode_expect(enc, "Hello world, this is  a test 12345 <|im_start|>h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD",
                  hello, sizeof hello / sizeof *hello);
    /* NFD input is composed before BPE: "e" + U+0301 tokenizes as "é" */
    tok_ids a = {0}, b = {0};
    adapt_error err = {0};
    CHECK(tok_encode(enc, "caf\xC3\xA9", 5, &a, &err) == 0);
    CHECK(tok_encode(enc, "cafe\xCC\x81", 6, &b, &err) == 0);
    CHECK(a.n == b.n && a.n > 0 && !memcmp(a.ids, b.ids, a.n * sizeof *a.ids));
    CHECK(b.ends[b.n - 1] == 6);   /* offsets refer to the text given, not the normalized one */
    tok_ids_free(&a);
    tok_ids_free(&b);

    CHECK(tok_bos_id(tok) == -1);
    CHECK(tok_eos_id(tok) == 151645);   /* <|im_end|> */
    CHECK(tok_pad_id(tok) == 151643);   /* <|endoftext|> */
    CHECK(tok_token_id(tok, "<|image_pad|>") == 151655);
    CHECK(tok_is_special(tok, 151655) && !tok_is_special(tok, 151668));   /* </think> is not */
    CHECK(tok_vocab_size(tok) == 151669);
}

static void test_errors(const tok_tokenizer *tok, tok_encoder *enc)
{
    tok_ids ids = {0};
    adapt_error err = {0};
    /* invalid UTF-8 is refused with its byte offset: a lone continuation byte, a surrogate */
    CHECK(tok_encode(enc, "ab\x80", 3, &ids, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "byte 2");
    CHECK(tok_encode(enc, "x\xED\xA0\x80", 4, &ids, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "byte 1");
    CHECK(ids.n == 0);

    tok_bytes out = {0};
    int32_t bad[] = {9707, 999999};
    CHECK(tok_decode(tok, bad, 2, 0, &out, &err) == ADAPT_ERANGE);
    CHECK_STR_CONTAINS(err.message, "position 1");
    int32_t neg = -3;
    CHECK(tok_decode(tok, &neg, 1, 0, &out, &err) == ADAPT_ERANGE);
    tok_bytes_free(&out);

    tok_tokenizer *none = NULL;
    CHECK(tok_load(&none, "/nonexistent-dir", &err) == ADAPT_EIO && none == NULL);
    CHECK_STR_CONTAINS(err.message, "/nonexistent-dir/tokenizer.json");
}

static void test_decode(const tok_tokenizer *tok)
{
    adapt_error err = {0};
    tok_bytes out = {0};
    int32_t ids[] = {151644, 9707, 151645};
    CHECK(tok_decode(tok, ids, 3, 0, &out, &err) == 0);
    CHECK(out.len == strlen("<|im_start|>Hello<|im_end|>") && !strcmp(out.data, "<|im_start|>Hello<|im_end|>"));
    out.len = 0;
    CHECK(tok_decode(tok, ids, 3, TOK_DECODE_SKIP_SPECIAL, &out, &err) == 0);
    CHECK(!strcmp(out.data, "Hello"));
    /* half of a character decodes to its bytes, or to U+FFFD when lossy */
    int32_t half[] = {129, 9707};   /* byte 0xC5 alone, then Hello */
    out.len = 0;
    CHECK(tok_decode(tok, half, 2, 0, &out, &err) == 0);
    CHECK(out.len == 6 && (uint8_t)out.data[0] == 0xC5);
    out.len = 0;
    CHECK(tok_decode(tok, half, 2, TOK_DECODE_LOSSY, &out, &err) == 0);
    CHECK(!strcmp(out.data, "\xEF\xBF\xBDHello"));
    tok_bytes_free(&out);
}

static void test_llama3(const tok_tokenizer *tok, tok_encoder *enc)
{
    static const int32_t hello[] = {9906, 1917, 11, 420, 374, 220, 264, 1296, 220, 4513, 1774, 220,
                                    128000, 71, 19010, 385, 118195, 53901};
    encode_expect(enc, "Hello world, this is  a test 12345 <|begin_of_text|>h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD",
                  hello, sizeof hello / sizeof *hello);
    CHECK(tok_bos_id(tok) == 128000);
    CHECK(tok_eos_id(tok) == 128001);
    CHECK(tok_pad_id(tok) == -1);
    CHECK(tok_token_id(tok, "<|eot_id|>") == 128009);
}

typedef struct thread_job {
    const tok_tokenizer *tok;
    const char *text;
    size_t len;
    tok_ids ids;
    int rc;
} thread_job;

static void *thread_encode(void *arg)
{
    thread_job *j = arg;
    tok_encoder *enc = NULL;
    adapt_error err = {0};
    j->rc = tok_encoder_new(&enc, j->tok, &err);
    for (int round = 0; !j->rc && round < 3; round++) {
        j->ids.n = 0;
        j->rc = tok_encode(enc, j->text, j->len, &j->ids, &err);
    }
    tok_encoder_free(enc);
    return NULL;
}

/* One tokenizer, four threads each with its own encoder: every thread gets the same ids. */
static void test_threads(const tok_tokenizer *tok)
{
    size_t len = 200000;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i++) text[i] = "the quick brown fox, 12 jumps\n over  lazy dogs\t"[i % 47];
    thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){tok, text, len, {0}, 0};
        pthread_create(&th[i], NULL, thread_encode, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        CHECK(jobs[i].rc == 0 && jobs[i].ids.n == jobs[0].ids.n && jobs[i].ids.n > 0);
        CHECK(!memcmp(jobs[i].ids.ids, jobs[0].ids.ids, jobs[0].ids.n * sizeof(int32_t)));
    }
    for (int i = 0; i < 4; i++) tok_ids_free(&jobs[i].ids);
    free(text);
}

/* The mask covers exactly the assistant content and "<|im_end|>\n"; images sit after
 * <|vision_start|>, as many as the grid gives. */
static void test_chat_qwen(const tok_tokenizer *tok, tok_encoder *enc)
{
    CHECK(tok_qwen2_vl_image_tokens(1, 28, 40, 2) == 280);
    CHECK(tok_qwen2_vl_image_tokens(1, 27, 40, 2) == -1);
    tok_chat_part user[] = {{NULL, 0, 280}, {"Describe.", 9, 0}};
    tok_chat_part answer[] = {{"A cat.", 6, 0}};
    tok_chat_message msgs[] = {{"user", user, 2}, {"assistant", answer, 1}};
    tok_chat_options opt = {TOK_CHAT_QWEN2_VL, TOK_CHAT_MASK_ASSISTANT, NULL, NULL, -1};
    tok_chat chat = {0};
    adapt_error err = {0};
    CHECK_MSG(tok_chat_render(enc, tok, msgs, 2, &opt, &chat, &err) == 0, "%s", err.message);
    CHECK(chat.n_images == 1 && chat.images[0].n == 280);
    size_t s = chat.images[0].start;
    CHECK(s > 0 && chat.ids[s - 1] == tok_token_id(tok, "<|vision_start|>"));
    CHECK(chat.ids[s] == 151655 && chat.ids[s + 279] == 151655 && chat.ids[s + 280] == 151653);
    tok_ids trained = {0};
    for (size_t i = 0; i < chat.n; i++) if (chat.mask[i]) tok_ids_push(&trained, chat.ids[i], 0);
    tok_bytes text = {0};
    CHECK(tok_decode(tok, trained.ids, trained.n, 0, &text, &err) == 0);
    CHECK_MSG(text.data && !strcmp(text.data, "A cat.<|im_end|>\n"), "trained text \"%s\"", text.data);
    /* the default system prompt opens the conversation */
    text.len = 0;
    CHECK(tok_decode(tok, chat.ids, 12, 0, &text, &err) == 0);
    CHECK(!strncmp(text.data, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", 57));
    tok_bytes_free(&text);
    tok_ids_free(&trained);
    tok_chat_free(&chat);
}

/* Synthesizer mode on llava_llama_3: nothing trained up to the end of the first answer, every
 * non-image token after it. */
static void test_chat_llava(const tok_tokenizer *tok, tok_encoder *enc)
{
    tok_chat_part u1[] = {{NULL, 0, 16}, {"\nDescribe the image.", 20, 0}};
    tok_chat_part a1[] = {{"A liver CT.", 11, 0}};
    tok_chat_part u2[] = {{"Which organ?", 12, 0}};
    tok_chat_part a2[] = {{"The liver.", 10, 0}};
    tok_chat_message msgs[] = {{"user", u1, 2}, {"assistant", a1, 1}, {"user", u2, 1}, {"assistant", a2, 1}};
    tok_chat_options opt = {TOK_CHAT_LLAVA_LLAMA_3, TOK_CHAT_MASK_AFTER_FIRST_TURN, NULL, NULL, 128256};
    tok_chat chat = {0};
    adapt_error err = {0};
    CHECK_MSG(tok_chat_render(enc, tok, msgs, 4, &opt, &chat, &err) == 0, "%s", err.message);
    CHECK(chat.ids[0] == 128000 && chat.n_images == 1 && chat.images[0].n == 16);
    int32_t eot = tok_token_id(tok, "<|eot_id|>");
    size_t eots = 0, first_trained = chat.n, answer_end = 0;
    for (size_t i = 0; i < chat.n; i++) {
        if (chat.mask[i] && first_trained == chat.n) first_trained = i;
        if (chat.ids[i] == eot && ++eots == 3) answer_end = i;   /* system, user, first answer */
    }
    CHECK(answer_end > 0 && first_trained == answer_end + 1);
    for (size_t i = first_trained; i < chat.n; i++) CHECK(chat.mask[i] == 1);
    CHECK(chat.ids[chat.n - 1] == eot);
    /* text only: no image placeholder id needed */
    tok_chat_options text_only = {TOK_CHAT_LLAVA_LLAMA_3, TOK_CHAT_MASK_ASSISTANT, "assistant", NULL, -1};
    CHECK_MSG(tok_chat_render(enc, tok, msgs + 2, 2, &text_only, &chat, &err) == 0, "%s", err.message);
    CHECK(chat.n_images == 0 && chat.n > 0);
    /* a tokenizer without the family's tokens is refused, not spelled out */
    tok_chat_options q = {TOK_CHAT_QWEN2_VL, TOK_CHAT_MASK_ASSISTANT, NULL, NULL, -1};
    CHECK(tok_chat_render(enc, tok, msgs, 4, &q, &chat, &err) == ADAPT_EINVAL);
    CHECK_STR_CONTAINS(err.message, "<|im_start|>");
    tok_chat_free(&chat);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tok FIXTURES_DIR\n");
        return 2;
    }
    char dir[4096];
    adapt_error err = {0};
    tok_tokenizer *qwen = NULL, *llama = NULL;
    tok_encoder *qenc = NULL, *lenc = NULL;
    snprintf(dir, sizeof dir, "%s/tokenizers/qwen3", argv[1]);
    CHECK_MSG(tok_load(&qwen, dir, &err) == 0, "%s", err.message);
    snprintf(dir, sizeof dir, "%s/tokenizers/llama3", argv[1]);
    CHECK_MSG(tok_load(&llama, dir, &err) == 0, "%s", err.message);
    if (!qwen || !llama) return check_report("tok");
    CHECK(tok_encoder_new(&qenc, qwen, &err) == 0);
    CHECK(tok_encoder_new(&lenc, llama, &err) == 0);
    test_qwen3(qwen, qenc);
    test_errors(qwen, qenc);
    test_decode(qwen);
    test_llama3(llama, lenc);
    test_threads(qwen);
    test_chat_qwen(qwen, qenc);
    test_chat_llava(llama, lenc);
    tok_encoder_free(qenc);
    tok_encoder_free(lenc);
    tok_free(qwen);
    tok_free(llama);
    return check_report("tok");
}
