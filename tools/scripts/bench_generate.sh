#!/bin/sh
# bench_generate: issue 8's benchmark, adaptd vs transformers' generate, side by side in one run.
#   tools/scripts/bench_generate.sh [BUILD_DIR] [ROUNDS] [NEW_TOKENS]
# Greedy generation with the ~20M-parameter Qwen2-VL of tests/data/bench_qwen2vl_20m.json (random
# weights from adaptctl model init, loaded by both sides) at batch 1 and batch 16: each prompt is
# 32 random text tokens, one 224x224 image of random pixels (64 image tokens), 32 more text
# tokens, built by both programs from one LCG (no tokenizer: the config's vocabulary of 8192 ids
# matches none, so ids are drawn directly, as bench_train_step does). Each sequence generates
# exactly NEW_TOKENS tokens (eos does not stop it). 2 threads on both sides. The two programs run
# alternately, ROUNDS times each per batch size, so load on this shared machine falls on both
# alike; the medians are over rounds. tokens/s = batch x NEW_TOKENS / wall time of the whole
# generate call (vision tower, prefill and decode). The script also counts how many generated ids
# agree (greedy on the same weights must give the same tokens unless two logits nearly tie).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-bench}
rounds=${2:-3}
new=${3:-64}
py=${ADAPT_TEST_PYTHON:-$root/.venv/bin/python}
config=$root/tests/data/bench_qwen2vl_20m.json
if [ ! -x "$build/tools/bench-generate" ] || [ ! -x "$build/tools/adaptctl" ]; then
    echo "bench_generate: $build has no bench-generate/adaptctl (meson setup $build && ninja -C $build)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/tools/adaptctl" model init --config "$config" --out "$work/model" --seed 1 >/dev/null

export OMP_NUM_THREADS=2 OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=2
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OMP_PROC_BIND=$OMP_PROC_BIND" \
     "OMP_WAIT_POLICY=$OMP_WAIT_POLICY OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS; torch.set_num_threads(2)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "load before: $(cat /proc/loadavg)"
for batch in 1 16; do
    : >"$work/a.txt"
    : >"$work/h.txt"
    r=1
    while [ "$r" -le "$rounds" ]; do
        "$build/tools/bench-generate" "$work/model" --batch "$batch" --new "$new" >"$work/a.out"
        "$py" "$root/tools/scripts/bench_generate_hf.py" "$work/model" --batch "$batch" \
            --new "$new" --threads 2 >"$work/h.out" 2>"$work/h.err" || { cat "$work/h.err" >&2; exit 1; }
        [ "$r" = 1 ] && head -1 "$work/a.out" && head -1 "$work/h.out"
        echo "$(sed -n 's/^adaptd wall_s //p' "$work/a.out") $(sed -n 's/^adaptd cpu_s //p' "$work/a.out")" >>"$work/a.txt"
        echo "$(sed -n 's/^hf wall_s //p' "$work/h.out") $(sed -n 's/^hf cpu_s //p' "$work/h.out")" >>"$work/h.txt"
        echo "batch $batch round $r: adaptd $(sed -n 's/^adaptd tokens_per_s //p' "$work/a.out") tok/s |" \
             "hf $(sed -n 's/^hf tokens_per_s //p' "$work/h.out") tok/s | load $(cut -d' ' -f1-3 /proc/loadavg)"
        r=$((r + 1))
    done
    sed -n 's/^adaptd ids //p' "$work/a.out" >"$work/a.ids"
    sed -n 's/^hf ids //p' "$work/h.out" >"$work/h.ids"
    "$py" - "$work/a.txt" "$work/h.txt" "$work/a.ids" "$work/h.ids" "$batch" "$new" <<'PY'
import statistics, sys
a = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
h = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
batch, new = int(sys.argv[5]), int(sys.argv[6])
ai = [l.split()[1:] for l in open(sys.argv[3])]
hi = [l.split()[1:] for l in open(sys.argv[4])]
agree = sum(sum(1 for x, y in zip(p, q) if x == y) for p, q in zip(ai, hi))
prefix = sum(next((i for i, (x, y) in enumerate(zip(p, q)) if x != y), len(p)) for p, q in zip(ai, hi))
wa, wh = statistics.median(x[0] for x in a), statistics.median(x[0] for x in h)
ca, ch = statistics.median(x[1] for x in a), statistics.median(x[1] for x in h)
tok = batch * new
print(f"batch {batch}: median wall ({len(a)} rounds): adaptd {wa:.3f} s = {tok / wa:.1f} tok/s, "
      f"hf {wh:.3f} s = {tok / wh:.1f} tok/s, ratio adaptd/hf {wh / wa:.2f}x")
fa, fh = min(x[0] for x in a), min(x[0] for x in h)
print(f"batch {batch}: fastest round: adaptd {tok / fa:.1f} tok/s, hf {tok / fh:.1f} tok/s")
print(f"batch {batch}: median CPU time: adaptd {ca:.3f} s  hf {ch:.3f} s  ratio {ch / ca:.2f}x")
print(f"batch {batch}: ids agreeing {agree}/{tok}, identical prefix {prefix}/{tok} tokens")
PY
done
echo "load after: $(cat /proc/loadavg)"
