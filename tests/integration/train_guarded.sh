#!/bin/sh
# train_guarded: the training loop is device-agnostic — adapt-worker train on the cpu-guarded
# backend (the CPU ops over memory that is PROT_NONE outside the op table's entries, the CI's
# stand-in for a GPU: any host access to parameters, gradients, moments or activations behind
# the table's back is a segfault) gives exactly what the cpu backend gives. The fixture is
# train_worker.sh's: a tiny Qwen2-VL (hidden 32, the Qwen3 tokenizer fixture) and a generated
# corpus, here of images of varied sizes.
# Usage: train_guarded.sh CASE ADAPTCTL ADAPT_WORKER TOKENIZER_DIR MPIRUN PYTHON COMPARE_PY
#   backends  6 steps with --backend cpu and --backend cpu-guarded: every step's progress line
#             (loss, lr, grad_norm, counts) identical, model.safetensors byte for byte equal; the
#             held-out loss command equal on both backends
#   resume    under cpu-guarded: kill -9 after a checkpoint + --resume, and SIGTERM + --resume,
#             end with the bytes of an uninterrupted run; a cpu-guarded checkpoint resumed with
#             --backend cpu too (the checkpoint does not depend on the backend)
#   ranks     mpirun -np 2, cpu vs cpu-guarded: the same progress lines and final weights byte
#             for byte (the gradient sum goes through host staging on cpu-guarded: it must not
#             reorder the sum; within 1e-6 is tolerated, and said), with the default all-reduce
#             and with zero_stage 1 (ZeRO-1: sharded optimizer state); and ZeRO-1 within 1e-5 of
#             the all-reduce
# MPIRUN may be empty (ranks is then skipped, exit 77). OMP_NUM_THREADS=1 as in train_worker.sh.
set -eu
CASE=$1 A=$2 W=$3 TOKDIR=$4
. "$(dirname "$0")/tiny_fixture.sh"
fixture_scratch adapt-guarded
tiny_fixture_make "$A" "$T" "$TOKDIR" --min-size 64 --max-size 120

# spec OUT STEPS EVERY [EXTRA]: a spec training the tiny model on the corpus. The images' sides
# vary (64 to 120) and image_max_pixels lets them keep their sizes, so packed batches mix vision
# grids; the vision tower trains, so its backward runs on the backend too.
spec() { tiny_train_spec "$1" "$2" "$3" 12544 "${4:-}"; }
# same_steps A B N WHAT: the two runs' progress lines agree, and there are N of them
same_steps() {
    progress_steps "$1" >"$T/a.steps"
    progress_steps "$2" >"$T/b.steps"
    [ "$(wc -l <"$T/a.steps")" -eq "$3" ] || fail "$4: expected $3 progress lines: $(cat "$1")"
    diff "$T/a.steps" "$T/b.steps" >&2 || fail "$4: progress lines differ (above: < first, > second)"
    grep -q '"grad_norm": ' "$T/a.steps" || fail "$4: no grad_norm in the progress lines"
}

case_backends() {
    spec cpu 6 0
    expect 0 "$W" train --spec "$T/cpu.json" --backend cpu
    cp "$T/out" "$T/cpu.out"
    spec guarded 6 0
    expect 0 env ADAPT_GUARDED_STATS=1 "$W" train --spec "$T/guarded.json" --backend cpu-guarded
    cp "$T/out" "$T/guarded.out"
    # not vacuous: the run lived in guarded memory — parameters, gradients and two moments at
    # least, 4x the weights file — and went through the guarded table
    peak=$(sed -n 's/^cpu-guarded: .* peak \([0-9]*\) bytes live.*/\1/p' "$T/err")
    weights=$(wc -c <"$T/cpu/model.safetensors")
    echo "$(grep '^cpu-guarded:' "$T/err"); weights file $weights bytes"
    [ -n "$peak" ] && [ "$peak" -ge $((4 * weights - 4 * 1048576)) ] ||
        fail "the cpu-guarded run did not keep its model in guarded memory: $(cat "$T/err")"
    same_steps "$T/cpu.out" "$T/guarded.out" 6 "cpu vs cpu-guarded"
    cmp "$T/cpu/model.safetensors" "$T/guarded/model.safetensors" ||
        fail "cpu and cpu-guarded trained different weights"
    progress_steps "$T/guarded.out" 6
    # the held-out loss command on the trained model
    expect 0 "$W" loss --spec "$T/cpu.json" --model "$T/cpu" --corpus "$T/corpus" --backend cpu
    lc=$(cat "$T/out")
    expect 0 "$W" loss --spec "$T/cpu.json" --model "$T/cpu" --corpus "$T/corpus" --backend cpu-guarded
    lg=$(cat "$T/out")
    [ -n "$lc" ] && [ "$lc" = "$lg" ] || fail "loss: cpu says $lc, cpu-guarded says $lg"
    echo "loss command, both backends: $lc"
}

case_resume() {
    spec straight 8 2
    expect 0 "$W" train --spec "$T/straight.json" --backend cpu-guarded
    cp "$T/out" "$T/straight.out"
    # kill -9 once step 5 is printed: step 4's checkpoint may be anything from absent to done,
    # step 2's is complete
    spec cut 8 2
    run_until_step cut 5 "" "$W" train --spec "$T/cut.json" --backend cpu-guarded
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    [ ! -e "$T/cut/model.safetensors" ] || fail "killed run wrote final weights"
    expect 0 "$W" train --spec "$T/cut.json" --backend cpu-guarded --resume
    first=$(sed -n '1s/.*"step": \([0-9]*\).*/\1/p' "$T/out")
    echo "killed after step 5, resumed at step $first"
    [ "$first" -ge 3 ] || fail "resumed at step $first, before the last checkpoint"
    cmp "$T/straight/model.safetensors" "$T/cut/model.safetensors" ||
        fail "cpu-guarded: resumed weights differ from the uninterrupted run's"
    progress_steps "$T/straight.out" 8 >"$T/a.steps"
    progress_steps "$T/out" 8 >"$T/b.steps"
    cmp -s "$T/a.steps" "$T/b.steps" || fail "step 8 reports differ after the resume"
    # SIGTERM at step 3: a checkpoint at the next step boundary (the moments downloaded from the
    # backend), exit 0; then resumed once on cpu-guarded and once on cpu
    spec term 8 0
    run_until_step term 3 "SIGTERM: " "$W" train --spec "$T/term.json" --backend cpu-guarded
    kill -TERM "$pid"
    wait "$pid" || fail "SIGTERM: exit $?: $(cat "$T/term.err")"
    ls -d "$T"/term/checkpoints/step-* >/dev/null 2>&1 || fail "SIGTERM: no checkpoint"
    [ ! -e "$T/term/model.safetensors" ] || fail "SIGTERM: the run went on to the end"
    cp -r "$T/term" "$T/term_cpu"
    sed "s#$T/term\"#$T/term_cpu\"#" "$T/term.json" >"$T/term_cpu.json"
    expect 0 "$W" train --spec "$T/term.json" --backend cpu-guarded --resume
    cmp "$T/straight/model.safetensors" "$T/term/model.safetensors" ||
        fail "cpu-guarded: weights after SIGTERM + --resume differ from the uninterrupted run's"
    expect 0 "$W" train --spec "$T/term_cpu.json" --backend cpu --resume
    cmp "$T/straight/model.safetensors" "$T/term_cpu/model.safetensors" ||
        fail "a cpu-guarded checkpoint resumed on cpu ends with other weights"
}

# ranks_pair NAME EXTRA: 2 ranks on cpu and on cpu-guarded, the same final weights
ranks_pair() {
    spec "$1_cpu" 4 0 "$2"
    expect 0 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS \
        "$W" train --spec "$T/$1_cpu.json" --backend cpu
    cp "$T/out" "$T/$1_cpu.out"
    spec "$1_guarded" 4 0 "$2"
    expect 0 env ADAPT_GUARDED_STATS=1 "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 \
        -x OMP_NUM_THREADS -x ADAPT_GUARDED_STATS "$W" train --spec "$T/$1_guarded.json" \
        --backend cpu-guarded
    cp "$T/out" "$T/$1_guarded.out"
    [ "$(grep -c '^cpu-guarded: .* allocations' "$T/err")" -eq 2 ] ||
        fail "2 ranks, $1: not both ranks ran on cpu-guarded: $(cat "$T/err")"
    same_steps "$T/$1_cpu.out" "$T/$1_guarded.out" 4 "2 ranks, $1: cpu vs cpu-guarded"
    if ! cmp -s "$T/$1_cpu/model.safetensors" "$T/$1_guarded/model.safetensors"; then
        "$PY" "$COMPARE" "$T/$1_cpu/model.safetensors" "$T/$1_guarded/model.safetensors" 1e-6 ||
            fail "2 ranks, $1: cpu and cpu-guarded reached different weights"
        echo "2 ranks, $1: weights not byte-identical but within 1e-6" >&2
    else
        echo "2 ranks, $1: cpu and cpu-guarded weights byte-identical"
    fi
}

case_ranks() {
    MPIRUN=$5 PY=${ADAPT_TEST_PYTHON:-$6} COMPARE=$7
    [ -x "$PY" ] || PY=$(command -v python3 || true)
    if [ -z "$PY" ] || [ ! -x "$MPIRUN" ]; then
        echo "SKIP: needs mpirun and a python" >&2
        exit 77
    fi
    ranks_pair allreduce ''
    ranks_pair zero1 ', "zero_stage": 1'
    # ZeRO-1 on cpu-guarded against the all-reduce on cpu: the same update, sharded; not to the
    # bit, since the clip norm's sum of squares is then summed shard by shard (measured 1.1e-6)
    "$PY" "$COMPARE" "$T/allreduce_cpu/model.safetensors" "$T/zero1_guarded/model.safetensors" 1e-5 ||
        fail "2 ranks: ZeRO-1 on cpu-guarded and the all-reduce on cpu reached different weights"
}

# bf16: precision "bf16" (bf16 activations and working weights, fp32 master weights, gradients
# and moments) through the worker: cpu and cpu-guarded identical (the mixed-precision passes
# never touch backend memory from the host either), every step's loss within 2e-2 of the fp32
# run's and falling as it does, and a resume from a mid-run checkpoint ending byte-identical
# (the bf16 working copy is rebuilt from the checkpoint's fp32 master)
case_bf16() {
    spec fp32 6 0
    expect 0 "$W" train --spec "$T/fp32.json" --backend cpu
    cp "$T/out" "$T/fp32.out"
    spec bf_cpu 6 3 ', "precision": "bf16"'
    expect 0 "$W" train --spec "$T/bf_cpu.json" --backend cpu
    cp "$T/out" "$T/bf_cpu.out"
    spec bf_guarded 6 0 ', "precision": "bf16"'
    expect 0 "$W" train --spec "$T/bf_guarded.json" --backend cpu-guarded
    cp "$T/out" "$T/bf_guarded.out"
    same_steps "$T/bf_cpu.out" "$T/bf_guarded.out" 6 "bf16: cpu vs cpu-guarded"
    cmp "$T/bf_cpu/model.safetensors" "$T/bf_guarded/model.safetensors" ||
        fail "bf16: cpu and cpu-guarded trained different weights"
    cmp -s "$T/fp32/model.safetensors" "$T/bf_cpu/model.safetensors" &&
        fail "bf16 trained exactly the fp32 weights: the precision field did nothing"
    losses() { sed -n 's/.*"loss": \([^,]*\),.*/\1/p' "$1" | tr '\n' ' '; }
    echo "fp32 losses: $(losses "$T/fp32.out")"
    echo "bf16 losses: $(losses "$T/bf_cpu.out")"
    set -- $(losses "$T/fp32.out")
    f1=$1; shift 5; f6=$1
    set -- $(losses "$T/bf_cpu.out")
    b1=$1; shift 5; b6=$1
    awk -v a="$(losses "$T/fp32.out")" -v b="$(losses "$T/bf_cpu.out")" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) { d = x[i] - y[i]; if (d < 0) d = -d
            if (d > 2e-2 * x[i]) { printf "step %d: fp32 %s bf16 %s\n", i, x[i], y[i]; exit 1 } }
    }' >&2 || fail "bf16 losses stray more than 2e-2 from fp32's"
    awk -v f="$f1" -v l="$f6" -v g="$b1" -v m="$b6" 'BEGIN { exit !(l < f && m < g) }' ||
        fail "the loss did not fall over 6 steps (fp32 $f1 -> $f6, bf16 $b1 -> $b6)"
    # resume at step 3 of the bf16 run: the same final weights
    spec bf_resume 6 3 ', "precision": "bf16"'
    mkdir -p "$T/bf_resume"
    cp -r "$T/bf_cpu/checkpoints" "$T/bf_resume/"
    rm -rf "$T"/bf_resume/checkpoints/step-*6
    expect 0 "$W" train --spec "$T/bf_resume.json" --backend cpu-guarded --resume
    first=$(sed -n '1s/.*"step": \([0-9]*\).*/\1/p' "$T/out")
    [ "$first" = 4 ] || fail "bf16 resume began at step $first, not 4"
    cmp "$T/bf_cpu/model.safetensors" "$T/bf_resume/model.safetensors" ||
        fail "bf16: resumed weights differ from the uninterrupted run's"
}

case "$CASE" in
    bf16)     case_bf16 ;;
    backends) case_backends ;;
    resume)   case_resume ;;
    ranks)    case_ranks "$@" ;;
    *)        fail "unknown case $CASE" ;;
esac
echo "PASS ($CASE)"
