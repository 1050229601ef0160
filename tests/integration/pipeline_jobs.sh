#!/bin/sh
# pipeline_jobs: adapt-worker synthesize / filter / evaluate end to end on a tiny random Qwen2-VL
# (the Qwen3 tokenizer fixture) and 12 generated image-caption pairs in 3 shards of 4.
# Usage: pipeline_jobs.sh CASE ADAPTCTL ADAPT_WORKER OVERLAY_TOOL TOKENIZER_DIR MPIRUN PYTHON
#   synthesize  the overlay: aligned with the base (ids, shards), every record prompted, the raw
#               gibberish kept, no triplet (so every image stays caption-only); a rerun skips
#               every shard; a deleted shard (and a stale .tmp) is redone alone, byte-identical;
#               shards of another corpus are redone; training reads the overlay
#   ranks       mpirun -np 2: rank r takes shards r, r+2; the shards equal the 1-rank ones
#   filter      on a fixture overlay with a triplet for every even record: every triplet judged,
#               the label counts add up in filter_report.json, only "yes" records carry turns,
#               a rerun skips; a bad prompt file and a misaligned overlay are refused (exit 2);
#               training reads the filtered overlay
#   evaluate    a benchmark of every question type built from the generator's QA pairs:
#               predictions, scores.json and scores.txt with one row per task and type; a rerun
#               skips the chunk and scores the same; a bad line is refused naming line and field
#   link        under a stand-in daemon: Hello, one Progress frame per shard, Done
#   errors      spec refusals (unknown key, wrong kind, missing model, unknown family): exit 2
# MPIRUN may be empty (ranks is then skipped). PYTHON (standard library only): $ADAPT_TEST_PYTHON,
# else the argument, else python3.
set -eu
CASE=$1 A=$2 W=$3 TOOL=$4 TOKDIR=$5 MPIRUN=${6:-} PY=${ADAPT_TEST_PYTHON:-${7:-}}
[ -n "$PY" ] && [ -x "$PY" ] || PY=python3
. "$(dirname "$0")/tiny_fixture.sh"
fixture_scratch adapt-pipeline

# pycheck SCRIPT ARGS...: a standard-library check; its assertion message is the failure
pycheck() { "$PY" -c "$@" || fail "check failed"; }

tiny_model_make "$A" "$T/config.json" "$T/model" "$TOKDIR"
tiny_images_make "$A" "$T/gen" 100 3 --size 64
head -n 12 "$T/gen/captions.jsonl" >"$T/gen/small.jsonl"
tiny_corpus_import "$A" "$T/corpus" "$T/gen/small.jsonl" 4

synth_spec() {   # synth_spec NAME OUT
    cat >"$T/$1.json" <<JSON
{"kind": "synthesize", "name": "s", "synthesize": {"model_path": "$T/model", "corpus": "$T/corpus",
 "output_dir": "$2", "max_new_tokens": 6, "batch_size": 3, "family": null}}
JSON
}
# train_on OVERLAY: one training step of the tiny model on the corpus with that overlay
train_on() {
    cat >"$T/train.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "overlays": ["$1"], "output_dir": "$T/trained-$(basename "$1")",
 "max_steps": 1, "global_batch": 2, "micro_batch_tokens": 256, "max_seq_len": 200,
 "image_min_pixels": 3136, "image_max_pixels": 3136, "checkpoint_every": 0}
JSON
    expect 0 "$W" train --spec "$T/train.json"
}
skipped_count() { grep -c "\"skipped\": $1" "$T/out" || true; }

case_synthesize() {
    synth_spec synth "$T/syn"
    expect 0 "$W" synthesize --spec "$T/synth.json"
    [ "$(skipped_count false)" -eq 3 ] || fail "expected 3 shards generated"
    grep -q '"records": 12, "prompted": 12, "triplets": 0' "$T/syn/synthesize_report.json" ||
        fail "report: $(cat "$T/syn/synthesize_report.json")"
    "$TOOL" dump "$T/corpus" >"$T/base.jsonl"
    "$TOOL" dump "$T/syn" >"$T/syn.jsonl"
    pycheck '
import json, sys
base = [json.loads(l) for l in open(sys.argv[1])]
syn = [json.loads(l) for l in open(sys.argv[2])]
assert [b["id"] for b in base] == [s["id"] for s in syn], "ids differ from the base"
for s in syn:
    assert s["turns"] == [], "a synthesized record has turns: %r" % s
    assert "raw" in s["extra"] and s["extra"]["pairs"] == "0", s
    assert "instruction" not in s["extra"], s
' "$T/base.jsonl" "$T/syn.jsonl"
    expect 0 "$A" data verify "$T/syn" --no-decode
    cp -r "$T/syn" "$T/syn-first"
    expect 0 "$W" synthesize --spec "$T/synth.json"
    [ "$(skipped_count true)" -eq 3 ] || fail "a rerun should skip every shard"
    rm "$T/syn/shards/00001.shard"
    rm "$T/syn/shards/00002.shard"
    printf 'half-written' >"$T/syn/shards/00002.shard.tmp"
    expect 0 "$W" synthesize --spec "$T/synth.json"
    [ "$(skipped_count true)" -eq 1 ] && [ "$(skipped_count false)" -eq 2 ] ||
        fail "only the two missing shards should be redone"
    grep -q '"shard": 0, "shards": 3, "records": 4, "skipped": true' "$T/out" || fail "shard 0 redone"
    for s in 00000 00001 00002; do
        cmp -s "$T/syn/shards/$s.shard" "$T/syn-first/shards/$s.shard" || fail "shard $s differs after a rerun"
    done
    [ ! -e "$T/syn/shards/00002.shard.tmp" ] || fail "the stale temporary file is left"
    # shards left by a run over another corpus with the same shard sizes are not taken as done
    cp "$T/gen/small.jsonl" "$T/gen/other.jsonl"
    tiny_corpus_import "$A" "$T/corpus-b" "$T/gen/other.jsonl" 4
    cp -r "$T/syn-first" "$T/syn-b"
    sed "s#\"$T/corpus\"#\"$T/corpus-b\"#; s#\"$T/syn\"#\"$T/syn-b\"#" "$T/synth.json" >"$T/synth-b.json"
    expect 0 "$W" synthesize --spec "$T/synth-b.json"
    [ "$(skipped_count false)" -eq 3 ] || fail "another corpus's shards were taken as done"
    train_on "$T/syn"
}

case_ranks() {
    [ -n "$MPIRUN" ] || { echo "no mpirun: skipped"; exit 77; }
    synth_spec one "$T/syn1"
    expect 0 "$W" synthesize --spec "$T/one.json"
    synth_spec two "$T/syn2"
    expect 0 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$W" synthesize --spec "$T/two.json"
    grep -q '"rank": 0, "shard": 0' "$T/out" && grep -q '"rank": 1, "shard": 1' "$T/out" &&
        grep -q '"rank": 0, "shard": 2' "$T/out" || { cat "$T/out"; fail "static shard assignment"; }
    for s in 00000 00001 00002; do
        cmp -s "$T/syn1/shards/$s.shard" "$T/syn2/shards/$s.shard" || fail "shard $s differs: 1 vs 2 ranks"
    done
    expect 0 "$A" data verify "$T/syn2" --no-decode
}

filter_spec() {   # filter_spec NAME SYNTHESIZED OUT [EXTRA]
    cat >"$T/$1.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "synthesized": "$2", "output_dir": "$3",
 "batch_size": 4${4:-}}
JSON
}

case_filter() {
    expect 0 "$TOOL" fixture "$T/corpus" "$T/fix"
    filter_spec filt "$T/fix" "$T/filtered"
    expect 0 "$W" filter --spec "$T/filt.json"
    [ "$(skipped_count false)" -eq 3 ] || fail "expected 3 shards filtered"
    "$TOOL" dump "$T/filtered" >"$T/filtered.jsonl"
    pycheck '
import json, sys
rep = json.load(open(sys.argv[1]))
recs = [json.loads(l) for l in open(sys.argv[2])]
assert rep["records"] == 12 and rep["triplets"] == 6, rep
labels = rep["labels"]
assert sum(labels.values()) == 6 and rep["kept"] == labels["yes"], rep
assert abs(rep["pass_rate"] - labels["yes"] / 6) < 1e-6, rep
seen = {"yes": 0, "no": 0, "open": 0, "other": 0}
for i, r in enumerate(recs):
    e = r["extra"]
    if i % 2:
        assert e["label"] == "none" and "judge" not in e and r["turns"] == [], r
        continue
    assert e["label"] in seen and "judge" in e, r
    assert e["instruction"] == "How many shapes are there in image %d?" % i, r
    seen[e["label"]] += 1
    if e["label"] == "yes":
        assert [t["role"] for t in r["turns"]] == ["user", "assistant"], r
        assert r["turns"][0]["text"] == e["instruction"], r
    else:
        assert r["turns"] == [], r
assert seen == labels, (seen, labels)
' "$T/filtered/filter_report.json" "$T/filtered.jsonl"
    expect 0 "$W" filter --spec "$T/filt.json"
    [ "$(skipped_count true)" -eq 3 ] || fail "a rerun should skip every shard"
    train_on "$T/filtered"
    # a prompt file without {precise}
    printf 'Q: {question}\nA: {informative}\nConsistent:' >"$T/prompt.txt"
    filter_spec badprompt "$T/fix" "$T/f2" ", \"prompt_file\": \"$T/prompt.txt\""
    expect 2 "$W" filter --spec "$T/badprompt.json"
    grep -q "prompt.txt: no {precise} placeholder" "$T/err" || fail "prompt error: $(cat "$T/err")"
    # an overlay of another corpus
    tiny_corpus_import "$A" "$T/other" "$T/gen/small.jsonl" 6
    expect 0 "$TOOL" fixture "$T/other" "$T/fix-other"
    filter_spec misaligned "$T/fix-other" "$T/f3"
    expect 2 "$W" filter --spec "$T/misaligned.json"
    grep -q "another corpus\|shard for shard" "$T/err" || fail "alignment error: $(cat "$T/err")"
}

case_evaluate() {
    "$PY" - "$T/gen/llava.json" "$T/bench.jsonl" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))[:6]
out = open(sys.argv[2], "w")
def put(**kw): out.write(json.dumps(kw) + "\n")
for it in items:
    conv = it["conversations"]
    caption = conv[1]["value"]
    for q, a in zip(conv[2::2], conv[3::2]):
        kind = "closed" if a["value"] in ("yes", "no") else "open"
        put(image=it["image"], question=q["value"], answer=a["value"], type=kind, task="shapes")
    put(image=it["image"], question="Which colour? (A) red (B) blue", answer="B",
        options=["red", "blue"], type="multi_choice", task="colour-mc")
    put(image=it["image"], question="Which class?", answer="grid",
        options=["grid", "plain", "noise"], type="classification", task="background")
    put(image=it["image"], question="Which shapes?", answer=["star", "square"],
        options=["star", "square", "circle"], type="multi_label", task="shapes-ml")
    put(image=it["image"], question="Describe the image.", answer=caption, type="rouge_l",
        task="caption")
put(question="A text-only question?", answer="yes", type="closed", task="text", id="t1")
PY
    n=$(wc -l <"$T/bench.jsonl")
    cat >"$T/eval.json" <<JSON
{"kind": "evaluate", "evaluate": {"model_path": "$T/model", "benchmark": "$T/bench.jsonl",
 "images_root": "$T/gen", "output_dir": "$T/eval", "max_new_tokens": 4, "batch_size": 8}}
JSON
    expect 0 "$W" evaluate --spec "$T/eval.json"
    pycheck '
import json, sys
n = int(sys.argv[3])
s = json.load(open(sys.argv[1]))
preds = [json.loads(l) for l in open(sys.argv[2])]
assert s["items"] == n and len(preds) == n, (s["items"], len(preds), n)
rows = {(r["task"], r["type"]): r for r in s["tasks"]}
for key in [("shapes", "open"), ("shapes", "closed"), ("colour-mc", "multi_choice"),
            ("background", "classification"), ("shapes-ml", "multi_label"),
            ("caption", "rouge_l"), ("text", "closed")]:
    assert key in rows, (key, sorted(rows))
assert sum(r["n"] for r in s["tasks"]) == n
for p in preds:
    assert 0 <= p["score"] <= 100, p
    if p["type"] in ("closed", "multi_choice", "classification"):
        assert p["score"] in (0, 100), p
    if p["type"] in ("multi_choice", "classification"):
        assert "parsed_option" in p and "random_pick" in p, p
for key, r in rows.items():
    mine = [p["score"] for p in preds if (p["task"], p["type"]) == key]
    assert abs(sum(mine) / len(mine) - r["score"]) < 1e-6, (key, r)
assert preds[-1]["id"] == "t1"
' "$T/eval/scores.json" "$T/eval/predictions.jsonl" "$n"
    grep -q "^task .*metric .*score" "$T/eval/scores.txt" || fail "scores.txt header"
    grep -q "^caption .*rouge_l .*rouge-l f" "$T/eval/scores.txt" || fail "scores.txt rouge row"
    cp "$T/eval/scores.json" "$T/scores-first.json"
    expect 0 "$W" evaluate --spec "$T/eval.json"
    grep -q '"skipped": true' "$T/out" || fail "a rerun should skip the finished chunk"
    cmp -s "$T/eval/scores.json" "$T/scores-first.json" || fail "a rerun scored differently"
    # bad lines: named by line and field
    sed -n '1,2p' "$T/bench.jsonl" >"$T/bad.jsonl"
    echo '{"question": "q", "type": "open"}' >>"$T/bad.jsonl"
    sed "s#$T/bench.jsonl#$T/bad.jsonl#; s#$T/eval\"#$T/eval-bad\"#" "$T/eval.json" >"$T/evalbad.json"
    expect 2 "$W" evaluate --spec "$T/evalbad.json"
    grep -q 'bad.jsonl line 3: field "answer"' "$T/err" || fail "bad line error: $(cat "$T/err")"
    echo '{"question": "q", "type": "multi_choice", "options": ["a", "b"], "answer": "C"}' >"$T/bad.jsonl"
    expect 2 "$W" evaluate --spec "$T/evalbad.json"
    grep -q 'line 1: field "answer".*one of the options' "$T/err" || fail "option error: $(cat "$T/err")"
}

# with ADAPTD_LINK naming a stand-in daemon (link_listen.py): Hello, a Progress frame per shard
# and Done from rank 0
case_link() {
    synth_spec lnk "$T/syn-link"
    "$PY" "$(dirname "$0")/link_listen.py" count "$T/link.sock" "$T/frames.json" &
    listener=$!
    i=0
    while [ ! -S "$T/link.sock" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$T/link.sock" ] || fail "the link listener did not start"
    ADAPTD_LINK="$T/link.sock" ADAPTD_JOB_ID=job-synth-link expect 0 "$W" synthesize --spec "$T/lnk.json"
    wait "$listener" || fail "the link listener refused the stream"
    for want in '"hello": 1' '"progress": 3' '"done": 1'; do
        grep -q "$want" "$T/frames.json" || fail "link frames $(cat "$T/frames.json") lack $want"
    done
}

case_errors() {
    cat >"$T/bad.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/x", "bogus": 1}
JSON
    expect 2 "$W" synthesize --spec "$T/bad.json"
    grep -q "synthesize.bogus: unknown key" "$T/err" || fail "unknown key: $(cat "$T/err")"
    synth_spec kind "$T/x"
    expect 2 "$W" filter --spec "$T/kind.json"
    grep -q 'kind: "synthesize", but this is adapt-worker filter' "$T/err" || fail "kind: $(cat "$T/err")"
    cat >"$T/nomodel.json" <<JSON
{"model_path": "$T/nothing", "corpus": "$T/corpus", "output_dir": "$T/x"}
JSON
    expect 2 "$W" synthesize --spec "$T/nomodel.json"
    grep -q "nothing/config.json" "$T/err" || fail "missing model: $(cat "$T/err")"
    cat >"$T/family.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/x", "family": "mllama"}
JSON
    expect 2 "$W" synthesize --spec "$T/family.json"
    grep -q 'family "mllama": no synthesizer template' "$T/err" || fail "family: $(cat "$T/err")"
    cat >"$T/range.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/x", "top_p": 2}
JSON
    expect 2 "$W" synthesize --spec "$T/range.json"
    grep -q "synthesize.top_p: 2 is outside" "$T/err" || fail "range: $(cat "$T/err")"
}

case_"$CASE"
echo "ok: $CASE"
