#!/bin/sh
# train_graphs: adapt-worker train with the training passes replayed as graphs (ADAPT_GRAPHS=1)
# on the cpu-guarded backend, whose graph entries emulate CUDA graphs (ops recorded with their
# arguments at capture, replayed as recorded), gives exactly what --backend cpu gives op by op:
# every progress line (loss, lr, grad_norm, counts) and the final weights byte for byte; and the
# run really replayed graphs (the backend's stats line counts the launches). The fixture is
# tiny_fixture.sh's: the tiny Qwen2-VL and a generated corpus of images of varied sizes.
# Usage: train_graphs.sh ADAPTCTL ADAPT_WORKER TOKENIZER_DIR
set -eu
A=$1 W=$2 TOKDIR=$3
. "$(dirname "$0")/tiny_fixture.sh"
fixture_scratch adapt-graphs
tiny_fixture_make "$A" "$T" "$TOKDIR" --min-size 64 --max-size 120

# several micro-batches per step (global batch 8, 256 tokens each), so the step's loss is read
# once from the backend after passes that kept theirs there
spec() {
    tiny_train_spec "$1" 5 0 12544
    sed -i 's/"global_batch": 4/"global_batch": 8/' "$T/$1.json"
}

spec cpu
"$W" train --spec "$T/cpu.json" --backend cpu >"$T/cpu.out" 2>"$T/cpu.err" ||
    fail "cpu run: $(cat "$T/cpu.err")"
spec graphs
ADAPT_GRAPHS=1 ADAPT_GUARDED_STATS=1 "$W" train --spec "$T/graphs.json" --backend cpu-guarded \
    >"$T/graphs.out" 2>"$T/graphs.err" || fail "cpu-guarded run with graphs: $(cat "$T/graphs.err")"
stats=$(grep '^cpu-guarded:.*graph launches' "$T/graphs.err" || true)
echo "$stats"
launches=$(echo "$stats" | sed -n 's/.* \([0-9]*\) graph launches of .*/\1/p')
[ -n "$launches" ] && [ "$launches" -gt 0 ] || fail "the run replayed no graph: $stats"
progress_steps "$T/cpu.out" >"$T/a.steps"
progress_steps "$T/graphs.out" >"$T/b.steps"
[ "$(wc -l <"$T/a.steps")" -eq 5 ] || fail "expected 5 progress lines: $(cat "$T/cpu.out")"
diff "$T/a.steps" "$T/b.steps" >&2 ||
    fail "progress lines differ (< cpu, > cpu-guarded with graphs)"
cmp "$T/cpu/model.safetensors" "$T/graphs/model.safetensors" ||
    fail "cpu and cpu-guarded with graphs trained different weights"
progress_steps "$T/graphs.out" 5
