#!/bin/sh
# bench_train_step: issue 4's benchmark, adaptd vs transformers, side by side in one run.
#   tools/scripts/bench_train_step.sh [BUILD_DIR] [ROUNDS] [STEPS]
# One training step (forward + backward, no optimizer) of the ~20M-parameter Qwen2-VL of
# tests/data/bench_qwen2vl_20m.json on a batch of 8 samples (one 224x224 image, 128 text tokens
# each), 2 threads on both sides, the same weights (adaptctl model init, loaded by both) and the
# same batch (both build it from one LCG). The two programs run alternately, ROUNDS times each
# (adaptd, hf, adaptd, hf, ...), each time WARMUP + STEPS steps, so load on this shared machine
# falls on both alike; the medians are over every timed step of a side, and each round's pair gives
# a ratio of its own (the per-round ratios' median and range are the figure least moved by load
# that drifts between rounds). Their losses must agree to 1e-4 relative, or the comparison is of
# different work and the script fails.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-bench}
rounds=${2:-3}
steps=${3:-3}
warmup=1
py=${ADAPT_TEST_PYTHON:-$root/.venv/bin/python}
config=$root/tests/data/bench_qwen2vl_20m.json
if [ ! -x "$build/tools/bench-train-step" ] || [ ! -x "$build/tools/adaptctl" ]; then
    echo "bench_train_step: $build has no bench-train-step/adaptctl (meson setup $build && ninja -C $build)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/tools/adaptctl" model init --config "$config" --out "$work/model" --seed 1 >/dev/null
"$build/tools/adaptctl" model info "$work/model" | grep -i -E 'param|vision|merger|llm' || true

# Both sides: two threads on the two cores. adaptd splits products over OpenMP threads and keeps
# OpenBLAS single-threaded itself; torch gets set_num_threads(2) (its intra-op pool).
export OMP_NUM_THREADS=2 OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=2
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OMP_PROC_BIND=$OMP_PROC_BIND" \
     "OMP_WAIT_POLICY=$OMP_WAIT_POLICY OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS" \
     "(adaptd: OpenMP split, OpenBLAS 1 thread per part); torch.set_num_threads(2)"
echo "load before: $(cat /proc/loadavg)"
: >"$work/a.txt"
: >"$work/h.txt"
: >"$work/ac.txt"
: >"$work/hc.txt"
r=1
while [ "$r" -le "$rounds" ]; do
    "$build/tools/bench-train-step" "$work/model" --steps "$steps" --warmup "$warmup" >"$work/a.out"
    "$py" "$root/tools/scripts/bench_train_step_hf.py" "$work/model" --steps "$steps" \
        --warmup "$warmup" --threads 2 >"$work/h.out" 2>"$work/h.err" || { cat "$work/h.err" >&2; exit 1; }
    [ "$r" = 1 ] && head -1 "$work/a.out" && head -1 "$work/h.out"
    sed -n 's/^adaptd step_s //p' "$work/a.out" >>"$work/a.txt"
    sed -n 's/^hf step_s //p' "$work/h.out" >>"$work/h.txt"
    sed -n 's/^adaptd cpu_s_per_step //p' "$work/a.out" >>"$work/ac.txt"
    sed -n 's/^hf cpu_s_per_step //p' "$work/h.out" >>"$work/hc.txt"
    echo "round $r: adaptd $(sed -n 's/^adaptd step_s //p' "$work/a.out") s |" \
         "hf $(sed -n 's/^hf step_s //p' "$work/h.out") s | load $(cut -d' ' -f1-3 /proc/loadavg)"
    r=$((r + 1))
done
la=$(sed -n 's/^adaptd loss //p' "$work/a.out")
lh=$(sed -n 's/^hf loss //p' "$work/h.out")
"$py" - "$work/a.txt" "$work/h.txt" "$la" "$lh" "$work/ac.txt" "$work/hc.txt" <<'PY'
import statistics, sys
# one line per round: that round's timed steps
ar = [[float(x) for x in line.split()] for line in open(sys.argv[1]) if line.strip()]
hr = [[float(x) for x in line.split()] for line in open(sys.argv[2]) if line.strip()]
a = [x for r in ar for x in r]
h = [x for r in hr for x in r]
la, lh = float(sys.argv[3]), float(sys.argv[4])
ac = [float(x) for x in open(sys.argv[5]).read().split()]
hc = [float(x) for x in open(sys.argv[6]).read().split()]
rel = abs(la - lh) / abs(lh)
ma, mh = statistics.median(a), statistics.median(h)
print(f"loss: adaptd {la:.7f}  hf {lh:.7f}  rel diff {rel:.2e}")
print(f"median step ({len(a)} / {len(h)} steps): adaptd {ma:.3f} s  hf {mh:.3f} s  "
      f"ratio hf/adaptd {mh / ma:.2f}x")
print(f"fastest step: adaptd {min(a):.3f} s  hf {min(h):.3f} s  ratio {min(h) / min(a):.2f}x")
# Paired by round: each round's two runs sat next to each other in time, so their ratio is the
# one least moved by load that drifts over minutes; its spread is the honest error bar.
pr = sorted(statistics.median(y) / statistics.median(x) for x, y in zip(ar, hr))
print(f"per-round ratio (median hf / median adaptd, {len(pr)} rounds): median "
      f"{statistics.median(pr):.2f}x  min {pr[0]:.2f}x  max {pr[-1]:.2f}x  "
      f"[{' '.join(f'{x:.2f}' for x in pr)}]")
print(f"CPU time per step (median over rounds): adaptd {statistics.median(ac):.3f} s  "
      f"hf {statistics.median(hc):.3f} s  ratio {statistics.median(hc) / statistics.median(ac):.2f}x")
if rel > 1e-4:
    sys.exit("losses differ by more than 1e-4 relative: not the same work")
PY
echo "load after: $(cat /proc/loadavg)"
