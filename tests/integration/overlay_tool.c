/* overlay_tool: the pipeline job tests' helper (tests/integration/pipeline_jobs.sh).
 *   overlay_tool dump DIR          one JSON line per record of a corpus: id, turns, source extras
 *   overlay_tool fixture BASE OUT  a synthesized overlay aligned with BASE as the synthesize job
 *                                  would write it for a synthesizer that found a triplet for
 *                                  every even record (hand-written Qwen2-VL outputs), so the filter
 *                                  job has triplets to judge whatever the tiny model writes. */
#include "corpus.h"
#include "job_kinds.h"
#include "shard.h"
#include "synth.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dump(const char *dir)
{
    corpus *c = NULL;
    adapt_error err = {0};
    if (corpus_open(&c, dir, &err)) {
        fprintf(stderr, "overlay_tool: %s\n", err.message);
        return 1;
    }
    for (uint64_t i = 0; i < corpus_count(c); i++) {
        Adaptd__Sample *s = NULL;
        if (corpus_read(c, i, &s, &err)) {
            fprintf(stderr, "overlay_tool: %s\n", err.message);
            corpus_close(c);
            return 1;
        }
        cJSON *o = cJSON_CreateObject(), *turns = cJSON_AddArrayToObject(o, "turns");
        cJSON_AddStringToObject(o, "id", s->id);
        for (size_t t = 0; t < s->n_turns; t++) {
            cJSON *tt = cJSON_CreateObject();
            cJSON_AddStringToObject(tt, "role", s->turns[t]->role == ADAPTD__TURN__ROLE__ROLE_USER
                                                    ? "user" : "assistant");
            cJSON_AddStringToObject(tt, "text", s->turns[t]->text);
            cJSON_AddItemToArray(turns, tt);
        }
        cJSON *extra = cJSON_AddObjectToObject(o, "extra");
        for (size_t k = 0; s->source && k < s->source->n_extra; k++)
            cJSON_AddStringToObject(extra, s->source->extra[k]->key, s->source->extra[k]->value);
        char *line = cJSON_PrintUnformatted(o);
        puts(line);
        free(line);
        cJSON_Delete(o);
        adaptd__sample__free_unpacked(s, NULL);
    }
    corpus_close(c);
    return 0;
}

static int fixture(const char *base_dir, const char *out_dir)
{
    const synth_template *t = synth_template_find("qwen2_vl");
    corpus *base = NULL;
    adapt_error err = {0};
    int rc = corpus_open(&base, base_dir, &err);
    job_overlay ov = { .base = base, .base_path = base_dir, .out_dir = out_dir };
    if (!rc) rc = job_overlay_prepare(&ov, &err);
    const Adaptd__Manifest *m = rc ? NULL : corpus_manifest(base);
    for (size_t s = 0; !rc && m && s < m->n_shards; s++) {
        char path[PATH_MAX];
        shard_writer *w = NULL;
        rc = job_overlay_shard_path(&ov, s, path, sizeof path, &err);
        if (!rc) rc = shard_writer_open(&w, path, 3, &err);
        for (uint64_t r = 0; !rc && r < m->shards[s]->records; r++) {
            uint64_t g = m->shards[s]->first_record + r, triplets = 0;
            Adaptd__Sample *b = NULL, *o = NULL;
            char out[512];
            snprintf(out, sizeof out,
                     "Answer with a precise response.\nHow many shapes are there in image %llu?"
                     "<|im_end|>\n<|im_start|>assistant\n%llu<|im_end|>\n<|im_start|>user\n"
                     "Answer with an informative response.\nHow many shapes are there in image "
                     "%llu?<|im_end|>\n<|im_start|>assistant\nCounting them one by one gives "
                     "%llu shapes.<|im_end|>", (unsigned long long)g, (unsigned long long)g % 5,
                     (unsigned long long)g, (unsigned long long)g % 5);
            rc = corpus_read(base, g, &b, &err);
            if (!rc) rc = job_synth_record(t, b, g % 2 ? "no triplet here" : out, &o, &triplets, &err);
            if (!rc) rc = shard_writer_add(w, o, &err);
            job_sample_free(o);
            if (b) adaptd__sample__free_unpacked(b, NULL);
        }
        if (rc) shard_writer_abort(w);
        else rc = shard_writer_finish(w, NULL, &err);
    }
    if (!rc) rc = job_overlay_finish(&ov, "overlay_tool fixture", &err);
    corpus_close(base);
    if (rc) fprintf(stderr, "overlay_tool: %s\n", err.message);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "dump")) return dump(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "fixture")) return fixture(argv[2], argv[3]);
    fprintf(stderr, "usage: overlay_tool dump DIR | fixture BASE OUT\n");
    return 2;
}
