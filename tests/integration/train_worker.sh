#!/bin/sh
# train_worker: adapt-worker train end to end on a tiny Qwen2-VL (hidden 32, the Qwen3 tokenizer
# fixture, whose vision special tokens are Qwen2-VL's) and a generated corpus of 64x64 images.
# Usage: train_worker.sh CASE ADAPTCTL ADAPT_WORKER TOKENIZER_DIR MPIRUN PYTHON COMPARE_PY
#   loss    24 steps lower the held-out loss (32 unseen records) by at least LOSS_MARGIN nats
#   resume  8 steps straight vs kill -9 at a random step after a checkpoint + --resume:
#           model.safetensors byte for byte equal; the same after SIGTERM + --resume
#   ranks   1 rank vs `mpirun -np 2` on the same global batch: weights within RANKS_ATOL
#   modes   single_stage with an overlay of tasks, synthesizer with blank images, two_stage
#           (stage by stage, bit-identical when resumed inside stage 2)
#   link    with ADAPTD_LINK naming a socket (a stand-in listener, link_listen.py), rank 0 sends
#           Hello, one Progress frame per step, a Checkpoint frame per checkpoint, then Done
#   link_daemon  link_listen.py plays a daemon that is killed and restarted twice: Hello again,
#           the newest Checkpoint re-sent, heartbeats, Control CHECKPOINT writes one, Done after
#           a late reconnect; Control STOP (Done stopped, exit 0); a bad spec (Done fatal, exit 2)
#   logs    ADAPTD_LOG_DIR under mpirun -np 2: each rank's output in its own rank-R.log; a bad
#           spec exits 2 with the error in both ranks' logs
#   errors  bad spec, missing corpus, shards damaged mid-run: one clear line naming what and
#           where, exit 2 (an input error: not retried), the last complete checkpoint intact; an
#           incomplete checkpoint and a fresh run over old checkpoints refused
# MPIRUN may be empty (ranks is then skipped); COMPARE_PY (train_compare.py, standard library
# only) runs with $ADAPT_TEST_PYTHON, else PYTHON, else python3.
# OMP_NUM_THREADS=1: the machine's cores are shared, and two ranks must not fight over them.
set -eu
CASE=$1 A=$2 W=$3 TOKDIR=$4
LOSS_MARGIN=3.0
RANKS_ATOL=1e-4
. "$(dirname "$0")/tiny_fixture.sh"
fixture_scratch adapt-train
tiny_fixture_make "$A" "$T" "$TOKDIR" --size 64

# spec OUT STEPS EVERY [EXTRA]: a spec training the tiny model on the corpus (images of 56x56)
spec() { tiny_train_spec "$1" "$2" "$3" 3136 "${4:-}"; }
json_field() { sed -n "s/.*\"$1\": \([-0-9.e]*\).*/\1/p" "$2" | tail -n 1; }

case_loss() {
    tiny_images_make "$A" "$T/hgen" 100 99 --size 64
    head -n 32 "$T/hgen/captions.jsonl" >"$T/hgen/held.jsonl"
    tiny_corpus_import "$A" "$T/held" "$T/hgen/held.jsonl"
    spec run 24 0
    expect 0 "$W" loss --spec "$T/run.json" --model "$T/model" --corpus "$T/held"
    before=$(json_field loss "$T/out")
    expect 0 "$W" train --spec "$T/run.json"
    [ "$(grep -c '"step":' "$T/out")" -eq 24 ] || fail "expected 24 progress lines"
    for k in step total epoch samples tokens loss lr grad_norm step_seconds tokens_per_second; do
        grep -q "\"$k\": " "$T/out" || fail "progress line lacks $k"
    done
    expect 0 "$W" loss --spec "$T/run.json" --model "$T/run" --corpus "$T/held"
    after=$(json_field loss "$T/out")
    echo "held-out loss $before -> $after (margin required $LOSS_MARGIN)"
    awk -v a="$before" -v b="$after" -v m="$LOSS_MARGIN" 'BEGIN { exit !(a - b >= m) }' ||
        fail "held-out loss $before -> $after: less than $LOSS_MARGIN lower"
}

case_resume() {
    spec straight 8 2
    expect 0 "$W" train --spec "$T/straight.json"
    cp "$T/out" "$T/straight.out"
    spec cut 8 2
    # kill -9 once step S (3..6) is printed: the checkpoint of step 2 is complete by then, and
    # the one of step 4 may be anything from absent to half written to done
    S=$(( $(od -An -N1 -tu1 /dev/urandom) % 4 + 3 ))
    run_until_step cut "$S" "" "$W" train --spec "$T/cut.json"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    [ ! -e "$T/cut/model.safetensors" ] || fail "killed run wrote final weights"
    expect 0 "$W" train --spec "$T/cut.json" --resume
    cp "$T/out" "$T/resumed.out"
    first=$(sed -n '1s/.*"step": \([0-9]*\).*/\1/p' "$T/out")
    echo "killed after step $S, resumed at step $first"
    [ "$first" -ge 3 ] || fail "resumed at step $first, before the last checkpoint"
    cmp "$T/straight/model.safetensors" "$T/cut/model.safetensors" ||
        fail "resumed weights differ from the uninterrupted run's"
    # SIGTERM at step 3: a checkpoint at the next step boundary, exit 0, and --resume ends
    # with the same bytes again
    spec term 8 0
    run_until_step term 3 "SIGTERM: " "$W" train --spec "$T/term.json"
    kill -TERM "$pid"
    wait "$pid" || fail "SIGTERM: exit $?: $(cat "$T/term.err")"
    ls -d "$T"/term/checkpoints/step-* >/dev/null 2>&1 || fail "SIGTERM: no checkpoint"
    [ ! -e "$T/term/model.safetensors" ] || fail "SIGTERM: the run went on to the end"
    expect 0 "$W" train --spec "$T/term.json" --resume
    cmp "$T/straight/model.safetensors" "$T/term/model.safetensors" ||
        fail "weights after SIGTERM + --resume differ from the uninterrupted run's"
    # the last step reports the same loss as in the uninterrupted run
    [ "$(progress_steps "$T/resumed.out" 8)" = \
      "$(progress_steps "$T/straight.out" 8)" ] ||
        fail "step 8 reports differ after the resume"
}

case_ranks() {
    MPIRUN=$5 PY=${ADAPT_TEST_PYTHON:-$6}
    [ -x "$PY" ] || PY=$(command -v python3 || true)
    if [ -z "$PY" ] || [ ! -x "$MPIRUN" ]; then
        echo "SKIP: needs mpirun and a python" >&2
        exit 77
    fi
    spec one 4 0
    expect 0 "$W" train --spec "$T/one.json"
    cp "$T/out" "$T/one.out"
    spec two 4 0
    expect 0 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS \
        "$W" train --spec "$T/two.json"
    [ "$(grep -c '"step":' "$T/out")" -eq 4 ] || fail "2 ranks: expected 4 progress lines (rank 0)"
    l1=$(grep '"step": 4,' "$T/one.out" | sed 's/.*"loss": \([-0-9.e]*\).*/\1/')
    l2=$(grep '"step": 4,' "$T/out" | sed 's/.*"loss": \([-0-9.e]*\).*/\1/')
    echo "step 4 loss: 1 rank $l1, 2 ranks $l2"
    awk -v a="$l1" -v b="$l2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4) }' ||
        fail "step 4 loss $l1 (1 rank) vs $l2 (2 ranks)"
    "$PY" "$7" "$T/one/model.safetensors" "$T/two/model.safetensors" "$RANKS_ATOL" ||
        fail "1 rank and 2 ranks reached different weights"
}

case_errors() {
    # a bad spec: an out-of-range value, named by its key
    spec bad 4 2 ', "warmup_ratio": 2'
    sed -i 's/"warmup_ratio": 0.1, //' "$T/bad.json"
    expect 2 "$W" train --spec "$T/bad.json"
    grep -q "warmup_ratio" "$T/err" || fail "bad spec: $(cat "$T/err")"
    [ "$(wc -l <"$T/err")" -eq 1 ] || fail "bad spec: more than one line: $(cat "$T/err")"
    # an unknown key
    spec bad 4 2 ', "learning_rate": 0.1'
    expect 2 "$W" train --spec "$T/bad.json"
    grep -q "learning_rate" "$T/err" || fail "unknown key: $(cat "$T/err")"
    # an output_dir whose parent is missing: the spec's fault, exit 2
    spec noparent 2 0
    sed -i "s#\"output_dir\": \"$T/noparent\"#\"output_dir\": \"$T/nowhere/out\"#" "$T/noparent.json"
    expect 2 "$W" train --spec "$T/noparent.json"
    grep -q "$T/nowhere/out" "$T/err" || fail "missing output parent: $(cat "$T/err")"
    # an I/O failure mid-run (the checkpoint folder cannot be made: a file is in its way) is
    # worth a retry: exit 1
    spec iofail 3 2
    mkdir -p "$T/iofail"
    : >"$T/iofail/checkpoints"
    expect 1 "$W" train --spec "$T/iofail.json"
    grep -q "checkpoint" "$T/err" || fail "checkpoint I/O failure: $(cat "$T/err")"
    # a missing corpus, named
    spec nocorpus 4 2
    sed -i "s#$T/corpus#$T/nowhere#" "$T/nocorpus.json"
    expect 2 "$W" train --spec "$T/nocorpus.json"
    grep -q "$T/nowhere" "$T/err" || fail "missing corpus: $(cat "$T/err")"
    # shards damaged after step 2's checkpoint: the resumed run stops at the first step that
    # reads a damaged record, naming step, shard and record, and step 2's checkpoint stays
    # complete
    spec run 2 2
    expect 0 "$W" train --spec "$T/run.json"
    for f in "$T"/corpus/shards/*.shard; do
        size=$(wc -c <"$f")
        printf '\377' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
    done
    spec run 6 2
    expect 2 "$W" train --spec "$T/run.json" --resume
    N=$(sed -n 's/.*: step \([0-9]*\) (epoch.*/\1/p' "$T/err")
    [ -n "$N" ] && [ "$N" -ge 3 ] || fail "damaged shard: no step after 2 named: $(cat "$T/err")"
    grep -q "record" "$T/err" || fail "damaged shard: no record named: $(cat "$T/err")"
    grep -q "\.shard" "$T/err" || fail "damaged shard: no shard file named: $(cat "$T/err")"
    echo "damaged shard: $(cat "$T/err")"
    ck="$T/run/checkpoints/step-00000002"
    [ -f "$ck/DONE" ] || fail "step 2's checkpoint lost its DONE"
    bytes=$(sed -n 's/^rank 0 bytes //p' "$ck/DONE")
    [ "$(wc -c <"$ck/rank-00000.state")" -eq "$bytes" ] || fail "step 2's rank file changed size"
    for d in "$T"/run/checkpoints/step-*; do
        [ "${d##*/step-}" -lt "$N" ] || fail "a checkpoint at or after the failed step $N: $d"
    done
    # a checkpoint without DONE is refused when named, and a fresh run will not start over an
    # old run's checkpoints
    cp -r "$ck" "$T/run/checkpoints/step-00000009"
    rm "$T/run/checkpoints/step-00000009/DONE"
    expect 2 "$W" train --spec "$T/run.json" --resume-from "$T/run/checkpoints/step-00000009"
    grep -q "step-00000009" "$T/err" || fail "incomplete checkpoint: $(cat "$T/err")"
    expect 2 "$W" train --spec "$T/run.json"
    grep -q "already holds" "$T/err" || fail "fresh run over checkpoints: $(cat "$T/err")"
}

case_modes() {
    # the generated LLaVA conversations imported on their own align record for record with the
    # caption corpus, so they serve as an overlay of kept tasks
    tiny_corpus_import "$A" "$T/tasks" "$T/gen/llava.json"
    spec plain 2 0
    expect 0 "$W" train --spec "$T/plain.json"
    plain=$(json_field tokens "$T/out")
    spec tasks 2 0 ", \"overlays\": [\"$T/tasks\"]"
    expect 0 "$W" train --spec "$T/tasks.json"
    tasks=$(json_field tokens "$T/out")
    [ "$tasks" -gt "$plain" ] || fail "with tasks $tasks tokens, captions only $plain"
    spec synth 2 0 ", \"overlays\": [\"$T/tasks\"], \"mode\": \"synthesizer\", \"blank_image_ratio\": 0.5"
    expect 0 "$W" train --spec "$T/synth.json"
    [ "$(grep -c '"step":' "$T/out")" -eq 2 ] || fail "synthesizer: expected 2 progress lines"
    # two_stage: 2 caption steps, then 2 task steps on their own schedule with fresh moments;
    # resumed inside stage 2 it ends with the same bytes
    spec two 1 1 ", \"overlays\": [\"$T/tasks\"], \"mode\": \"two_stage\", \"keep_last\": 0,
 \"stages\": [{\"max_steps\": 2}, {\"max_steps\": 2, \"lr_llm\": 0.001, \"schedule\": \"constant\"}]"
    sed -i 's/"keep_last": 2, //' "$T/two.json"
    expect 0 "$W" train --spec "$T/two.json"
    [ "$(grep -c '"stage": 1}' "$T/out")" -eq 2 ] && [ "$(grep -c '"stage": 2}' "$T/out")" -eq 2 ] ||
        fail "two_stage: expected 2 steps of each stage: $(cat "$T/out")"
    grep '"step": 4,' "$T/out" | grep -q '"lr": 0.001,' || fail "two_stage: stage 2's lr"
    cp "$T/two/model.safetensors" "$T/two.straight"
    expect 0 "$W" train --spec "$T/two.json" --resume-from "$T/two/checkpoints/step-00000003"
    cmp "$T/two.straight" "$T/two/model.safetensors" || fail "two_stage: resume in stage 2 differs"
    echo "tokens in 2 steps: captions $plain, with tasks $tasks"
}

case_link() {
    PY=${ADAPT_TEST_PYTHON:-$6}
    [ -x "$PY" ] || PY=$(command -v python3)
    spec run 6 3
    "$PY" "$(dirname "$0")/link_listen.py" count "$T/link.sock" "$T/link.json" &
    listener=$!
    i=0
    while [ ! -S "$T/link.sock" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$T/link.sock" ] || fail "the link listener did not start"
    export ADAPTD_LINK="$T/link.sock" ADAPTD_JOB_ID=job-link-test
    expect 0 "$W" train --spec "$T/run.json"
    unset ADAPTD_LINK ADAPTD_JOB_ID
    wait "$listener" || fail "the link listener refused the stream"
    echo "link frames: $(cat "$T/link.json")"
    for want in '"hello": 1' '"progress": 6' '"checkpoint": 2' '"done": 1'; do
        grep -q "$want" "$T/link.json" || fail "link frames $(cat "$T/link.json") lack $want"
    done
}

# the link client against a daemon that dies and comes back, Control frames, a fatal spec
case_link_daemon() {
    PY=${ADAPT_TEST_PYTHON:-$6}
    [ -x "$PY" ] || PY=$(command -v python3)
    L="$(dirname "$0")/link_listen.py"
    mkdir -p "$T/o"
    spec re 40 0
    "$PY" "$L" reconnect "$T/d.sock" "$T/o" -- "$W" train --spec "$T/re.json" ||
        fail "reconnect: $(tail -n 5 "$T/o/worker.log")"
    # "is down", or, when the first life was shorter than the client's brief-connection limit,
    # the "closed N ms after connecting" note: either says the worker saw the link go
    grep -Eq "is down|closed [0-9]+ ms after connecting" "$T/o/worker.log" ||
        fail "reconnect: the worker did not notice the link go"
    spec stop 40 0
    "$PY" "$L" stop "$T/d.sock" "$T/o" -- "$W" train --spec "$T/stop.json" ||
        fail "stop: $(tail -n 5 "$T/o/worker.log")"
    ls -d "$T"/stop/checkpoints/step-* >/dev/null 2>&1 || fail "stop: no checkpoint"
    [ ! -e "$T/stop/model.safetensors" ] || fail "stop: the run went on to the end"
    spec bad 4 0 ', "learning_rate": 0.1'
    "$PY" "$L" fatal "$T/d.sock" "$T/o" -- "$W" train --spec "$T/bad.json" ||
        fail "fatal: $(tail -n 5 "$T/o/worker.log")"
}

# per-rank log files under mpirun -np 2
case_logs() {
    MPIRUN=$5
    if [ ! -x "$MPIRUN" ]; then echo "SKIP: needs mpirun" >&2; exit 77; fi
    spec two 3 0
    expect 0 env ADAPTD_LOG_DIR="$T/logs/a" "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 \
        -x OMP_NUM_THREADS -x ADAPTD_LOG_DIR "$W" train --spec "$T/two.json"
    [ "$(grep -c '"step":' "$T/out" || true)" -eq 0 ] || fail "progress lines still on mpirun's stdout"
    [ "$(grep -c '"step":' "$T/logs/a/rank-0.log")" -eq 3 ] ||
        fail "rank-0.log lacks the 3 progress lines: $(cat "$T/logs/a/rank-0.log")"
    [ -f "$T/logs/a/rank-1.log" ] || fail "no rank-1.log"
    [ "$(stat -c %a "$T/logs/a/rank-0.log")" = 644 ] || fail "rank-0.log is not mode 0644"
    # a bad spec: exit 2, each rank's error in its own log
    spec bad 3 0 ', "learning_rate": 0.1'
    expect 2 env ADAPTD_LOG_DIR="$T/logs/b" "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 \
        -x OMP_NUM_THREADS -x ADAPTD_LOG_DIR "$W" train --spec "$T/bad.json"
    for r in 0 1; do
        grep -q "rank $r: .*learning_rate" "$T/logs/b/rank-$r.log" ||
            fail "rank-$r.log lacks its error: $(cat "$T/logs/b/rank-$r.log" 2>&1)"
    done
    echo "rank-0.log: $(wc -l <"$T/logs/a/rank-0.log") lines; bad spec under mpirun: exit 2"
}

case "$CASE" in
    loss)   case_loss ;;
    link)   case_link "$@" ;;
    link_daemon) case_link_daemon "$@" ;;
    logs)   case_logs "$@" ;;
    resume) case_resume ;;
    ranks)  case_ranks "$@" ;;
    errors) case_errors ;;
    modes)  case_modes ;;
    *)      fail "unknown case $CASE" ;;
esac
echo "PASS ($CASE)"
