#!/bin/sh
# train_zero1: ZeRO-1 (TrainSpec.zero_stage 1: optimizer moments sharded over the ranks,
# gradients reduce-scattered, parameters all-gathered after each step) against the plain
# all-reduce, with adapt-worker train on a tiny Qwen2-VL and a generated corpus.
# Usage: train_zero1.sh CASE ADAPTCTL ADAPT_WORKER TOKENIZER_DIR MPIRUN PYTHON COMPARE_PY
#   ranks   2 ranks zero_stage 1 vs 2 ranks zero_stage 0, with everything trained and with the
#           vision tower frozen (the shards then start after it): without the clip, 4 steps end
#           with the same bytes (a two-rank sum is a + b in either order, and each shard's AdamW
#           is the unsharded one's); with the clip active, one step ends within RTOL (relative:
#           the sharded norm is summed in another order). Later clipped steps are not compared:
#           AdamW divides each gradient by its own running size, so a last-bit difference in the
#           clip grows without bound in parameters whose gradients nearly cancel (the k_proj
#           biases: a shift of every key moves no softmax), and how far it grows depends on the
#           rounding of every product before it. 1 rank zero_stage 1 ends with the same bytes as
#           zero_stage 0 (one shard, the same clip)
#   resume  2 ranks zero_stage 1, resumed from its step-2 checkpoint (each rank reads its own
#           shard's moments back), ends with the same bytes as the uninterrupted run; a resume
#           with zero_stage 0 from that checkpoint is refused, naming zero_stage (exit 2)
# COMPARE_PY (integration/train_compare.py, run --relative; standard library only) runs with
# $ADAPT_TEST_PYTHON, else PYTHON, else python3. OMP_NUM_THREADS=1: the machine's cores are
# shared between the ranks. The model and corpus: tests/integration/tiny_fixture.sh.
set -eu
CASE=$1 A=$2 W=$3 TOKDIR=$4 MPIRUN=$5 PY=${ADAPT_TEST_PYTHON:-$6} CMP=$7
RTOL=1e-6
[ -x "$PY" ] || PY=$(command -v python3 || true)
if [ -z "$PY" ] || [ ! -x "$MPIRUN" ]; then
    echo "SKIP: needs mpirun and a python" >&2
    exit 77
fi
. "$(dirname "$0")/../integration/tiny_fixture.sh"
fixture_scratch adapt-zero1
tiny_fixture_make "$A" "$T" "$TOKDIR" --size 64

# spec OUT STEPS EVERY ZERO [EXTRA]: a spec training the tiny model on the corpus. max_grad_norm
# 0.5 keeps the clip active, so the summed norm matters.
spec() {
    cat >"$T/$1.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/$1",
 "max_steps": $2, "global_batch": 4, "micro_batch_tokens": 256, "max_seq_len": 160,
 "lr_llm": 0.01, "lr_vision": 0.002, "warmup_ratio": 0.1, "schedule": "cosine",
 "weight_decay": 0.01, "max_grad_norm": 0.5, "freeze_vision": false, "freeze_merger": false,
 "image_min_pixels": 3136, "image_max_pixels": 3136, "checkpoint_every": $3, "keep_last": 0,
 "seed": 5, "zero_stage": $4${5:-}}
JSON
}
# two CODE ARGS...: adapt-worker ARGS on 2 ranks, expecting exit CODE
two() {
    code=$1; shift
    expect "$code" "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS "$W" "$@"
}
# the largest grad_norm of a run's progress lines
max_norm() { sed -n 's/.*"grad_norm": \([-0-9.e]*\).*/\1/p' "$1" | sort -g | tail -n 1; }
# n_params (floats of moments) in a rank state file's header, offset 96
state_floats() { od -An -t u8 -j 96 -N 8 "$1" | tr -d ' '; }

case_ranks() {
    for frozen in false true; do
        extra=", \"freeze_vision\": $frozen"
        # no clip (max_grad_norm 0): the same bytes after 4 steps
        spec "n0$frozen" 4 0 0 "$extra"
        spec "n1$frozen" 4 0 1 "$extra"
        sed -i 's/"freeze_vision": false, //; s/"max_grad_norm": 0.5/"max_grad_norm": 0/' \
            "$T/n0$frozen.json" "$T/n1$frozen.json"
        two 0 train --spec "$T/n0$frozen.json"
        [ "$(grep -c '"step":' "$T/out")" -eq 4 ] || fail "zero_stage 0: expected 4 progress lines"
        two 0 train --spec "$T/n1$frozen.json"
        [ "$(grep -c '"step":' "$T/out")" -eq 4 ] || fail "zero_stage 1: expected 4 progress lines"
        cmp "$T/n0$frozen/model.safetensors" "$T/n1$frozen/model.safetensors" ||
            fail "freeze_vision $frozen, no clip: zero_stage 1 and 0 reached different weights"
        echo "freeze_vision $frozen, no clip: the same bytes after 4 steps"
        # clip active: one step within RTOL
        spec "z0$frozen" 1 0 0 "$extra"
        spec "z1$frozen" 1 0 1 "$extra"
        sed -i 's/"freeze_vision": false, //' "$T/z0$frozen.json" "$T/z1$frozen.json"
        two 0 train --spec "$T/z0$frozen.json"
        two 0 train --spec "$T/z1$frozen.json"
        [ "$(grep -c '"step":' "$T/out")" -eq 1 ] || fail "zero_stage 1: expected 1 progress line"
        awk -v n="$(max_norm "$T/out")" 'BEGIN { exit !(n > 0.5) }' ||
            fail "the clip was not active (grad_norm <= 0.5): $(cat "$T/out")"
        echo "freeze_vision $frozen, clipped:"
        "$PY" "$CMP" --relative "$T/z0$frozen/model.safetensors" "$T/z1$frozen/model.safetensors" "$RTOL" ||
            fail "freeze_vision $frozen, clipped: zero_stage 1 and 0 reached different weights"
    done
    # one rank: the one shard is the whole trainable suffix, and the clip the table's own
    spec one0 3 0 0
    spec one1 3 0 1
    expect 0 "$W" train --spec "$T/one0.json"
    expect 0 "$W" train --spec "$T/one1.json"
    cmp "$T/one0/model.safetensors" "$T/one1/model.safetensors" ||
        fail "1 rank: zero_stage 1 differs from zero_stage 0"
}

case_resume() {
    spec straight 6 2 1
    two 0 train --spec "$T/straight.json"
    cp "$T/straight/model.safetensors" "$T/straight.weights"
    for r in 0 1; do
        [ -s "$T/straight/checkpoints/step-00000002/rank-0000$r.state" ] ||
            fail "no rank $r state in the checkpoint of step 2"
    done
    # each rank saved its own shard's moments: equal halves of the trainable floats (the second
    # one float shorter when their count is odd)
    n0=$(state_floats "$T/straight/checkpoints/step-00000002/rank-00000.state")
    n1=$(state_floats "$T/straight/checkpoints/step-00000002/rank-00001.state")
    echo "moments per rank at step 2: $n0 and $n1 floats"
    [ "$n0" -gt 0 ] && { [ "$n0" -eq "$n1" ] || [ "$n0" -eq $((n1 + 1)) ]; } ||
        fail "rank state files hold $n0 and $n1 floats of moments, not two halves"
    # the rest of the run again from step 2's checkpoint: the same bytes at the end
    two 0 train --spec "$T/straight.json" --resume-from "$T/straight/checkpoints/step-00000002"
    first=$(sed -n '1s/.*"step": \([0-9]*\).*/\1/p' "$T/out")
    [ "$first" = 3 ] || fail "resumed at step $first, not 3"
    cmp "$T/straight.weights" "$T/straight/model.safetensors" ||
        fail "zero_stage 1 resumed from step 2 differs from the uninterrupted run"
    # the same checkpoint under zero_stage 0: refused by name, not retried
    sed 's/"zero_stage": 1/"zero_stage": 0/' "$T/straight.json" >"$T/other.json"
    two 2 train --spec "$T/other.json" --resume-from "$T/straight/checkpoints/step-00000002"
    grep -q "zero_stage" "$T/err" || fail "zero_stage change: $(cat "$T/err")"
    echo "zero_stage change refused: $(grep -m1 zero_stage "$T/err")"
}

case "$CASE" in
    ranks)  case_ranks ;;
    resume) case_resume ;;
    *)      fail "unknown case $CASE" ;;
esac
echo "PASS ($CASE)"
