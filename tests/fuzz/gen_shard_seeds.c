/* gen_shard_seeds: writes the seed inputs of fuzz_shard into a directory (tests/fuzz/seeds/shard).
 *
 * Each seed is fuzz_shard's input format — one flag byte, then a file image — made with the real
 * writer so that the fuzzer starts from valid shards and a valid manifest: shards of 0, 1 and 3
 * records, raw and with checksum repair (flag 1), and a 3-shard corpus manifest (flags 2 and 3).
 * Usage: gen_shard_seeds OUT_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "corpus.h"

static int add_record(corpus_builder *b, int i, adapt_error *err)
{
    Adaptd__Sample s = ADAPTD__SAMPLE__INIT;
    Adaptd__Turn q = ADAPTD__TURN__INIT, a = ADAPTD__TURN__INIT;
    Adaptd__Turn *turns[2] = { &q, &a };
    char id[32];
    uint8_t image[24];
    snprintf(id, sizeof id, "seed-%d", i);
    for (size_t k = 0; k < sizeof image; k++) image[k] = (uint8_t)(k * 37 + (size_t)i);
    s.id = id;
    s.caption = (char *)"two red circles \u2014 \u00e9t\u00e9";
    s.media_type = (char *)"image/png";
    s.width = 4;
    s.height = 2;
    if (i % 2 == 0) {
        s.image.data = image;
        s.image.len = sizeof image;
    }
    q.role = ADAPTD__TURN__ROLE__ROLE_USER;
    q.text = (char *)"<image>\nHow many circles?";
    a.role = ADAPTD__TURN__ROLE__ROLE_ASSISTANT;
    a.text = (char *)"Two.";
    s.n_turns = 2;
    s.turns = turns;
    return corpus_builder_add(b, &s, err);
}

/* Copies file `from` to out/name with the flag byte in front. */
static int emit(const char *from, const char *out, const char *name, unsigned char flag)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out, name);
    FILE *in = fopen(from, "rb"), *o = fopen(path, "wb");
    if (!in || !o) {
        fprintf(stderr, "gen_shard_seeds: cannot copy %s to %s\n", from, path);
        if (in) fclose(in);
        if (o) fclose(o);
        return -1;
    }
    fputc(flag, o);
    int c;
    while ((c = fgetc(in)) != EOF) fputc(c, o);
    fclose(in);
    return fclose(o) == 0 ? 0 : -1;
}

/* Builds a corpus of n records, shard_size per shard, in dir. */
static int build(const char *dir, int n, int shard_size)
{
    adapt_error err;
    corpus_builder *b;
    if (corpus_builder_open(&b, dir, "seed", (uint64_t)shard_size, 3, &err) != 0) goto fail;
    for (int i = 0; i < n; i++)
        if (add_record(b, i, &err) != 0) {
            corpus_builder_abort(b);
            goto fail;
        }
    if (corpus_builder_finish(b, NULL, &err) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "gen_shard_seeds: %s\n", err.message);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_shard_seeds OUT_DIR\n");
        return 2;
    }
    char tmp[] = "/tmp/gen_shard_seeds-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char one[64], three[64], multi[64], path[128];
    snprintf(one, sizeof one, "%s/one", tmp);
    snprintf(three, sizeof three, "%s/three", tmp);
    snprintf(multi, sizeof multi, "%s/multi", tmp);
    int rc = build(one, 1, 10) || build(three, 3, 10) || build(multi, 5, 2);
    if (rc == 0) {
        /* An empty shard: what a writer makes when finished with no record. */
        adapt_error err;
        shard_writer *w;
        snprintf(path, sizeof path, "%s/empty.shard", tmp);
        rc = shard_writer_open(&w, path, 3, &err) || shard_writer_finish(w, NULL, &err);
        rc = rc || emit(path, argv[1], "empty-raw", 0) || emit(path, argv[1], "empty-repair", 1);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/shards/00000.shard", one);
    rc = rc || emit(path, argv[1], "one-raw", 0) || emit(path, argv[1], "one-repair", 1);
    snprintf(path, sizeof path, "%s/shards/00000.shard", three);
    rc = rc || emit(path, argv[1], "three-raw", 0) || emit(path, argv[1], "three-repair", 1);
    snprintf(path, sizeof path, "%s/manifest.pb", multi);
    rc = rc || emit(path, argv[1], "manifest-raw", 2) || emit(path, argv[1], "manifest-repair", 3);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "gen_shard_seeds: could not remove %s\n", tmp);
    return rc ? 1 : 0;
}
