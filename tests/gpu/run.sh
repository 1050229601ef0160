#!/usr/bin/env bash
# run.sh: the CUDA backend's checks in one go on the GPU machine (../shared/device/README.md):
# builds build-gpu with CUDA, runs the op-table check, the GPU-vs-CPU parity of every op and the
# NCCL bootstrap on one GPU, times each op, and prints a short table last. Full logs go to $OUT (the device tool brings them back) or out/gpu.
#
#   here:   bash ../shared/device/pack-debs.sh
#   device: command "bash tests/gpu/run.sh [SEED]" with carry [".dev"]
#
# Exit status: 0 all checks passed, 1 a build failure or a failed check, 77 no CUDA device.
# Also times each op at the Qwen2-VL-2B step's shapes (bench_ops_gpu). Not yet here: the
# training-step benchmark against .dev/hf_qwen2vl_step.py (it needs adapt-worker --backend cuda,
# a later part of issue 7).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/out/gpu}
mkdir -p "$out"
if [ -f .dev/env.sh ]; then source .dev/env.sh; fi
export PATH=/usr/local/cuda/bin:$PATH
seed=${1:-$(date +%s)}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "run.sh: nvidia-smi failed (see $out/nvidia-smi.txt)"
if [ ! -f build-gpu/build.ninja ]; then
  if ! meson setup build-gpu -Dcuda=enabled > "$out/setup.log" 2>&1; then
    tail -30 "$out/setup.log"; echo "run.sh: meson setup failed (log: $out/setup.log)"; exit 1
  fi
fi
# only what this visit runs: the whole build costs device minutes and CI already builds it
t0=$(date +%s)
if ! ninja -C build-gpu tests/gpu/test_ops_cuda_table tests/gpu/test_ops_gpu tests/gpu/bench_ops_gpu \
     tests/gpu/test_comm_nccl \
     > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "run.sh: build failed (log: $out/build.log)"; exit 1
fi
echo "run.sh: built in $(( $(date +%s) - t0 )) s"

build-gpu/tests/gpu/test_ops_cuda_table > "$out/ops_cuda_table.txt" 2>&1
table_rc=$?
build-gpu/tests/gpu/test_ops_gpu "$seed" > "$out/ops_gpu.txt" 2> "$out/ops_gpu.err"
gpu_rc=$?
head -40 "$out/ops_gpu.err"
timeout 120 build-gpu/tests/gpu/test_comm_nccl > "$out/comm_nccl.txt" 2>&1
nccl_rc=$?
# per-op timings at the Qwen2-VL-2B step's shapes (informative; a CUDA error fails the run)
timeout 240 build-gpu/tests/gpu/bench_ops_gpu 10 > "$out/bench_ops.txt" 2>&1
bench_rc=$?

echo
echo "=== per-op timings (bench_ops_gpu, exit $bench_rc) ==="
cat "$out/bench_ops.txt"
echo
echo "=== GPU checks (seed $seed; full table: $out/ops_gpu.txt) ==="
head -1 "$out/ops_gpu.txt"
printf '%-28s %s\n' "check" "result"
printf '%-28s %s\n' "op table complete" "$([ $table_rc = 0 ] && echo ok || echo "FAIL ($table_rc)")"
printf '%-28s %s\n' "NCCL init + all-reduce (1 GPU)" \
  "$(case $nccl_rc in 0) echo ok ;; 77) echo skipped ;; *) echo "FAIL ($nccl_rc, $out/comm_nccl.txt)" ;; esac)"
if [ -s "$out/ops_gpu.txt" ]; then
  # one line per op: its worst error over every case and whether all its cases passed
  awk 'NR > 2 && $1 != "" {
         op = $1; e = $(NF - 2) + 0; b = $(NF - 1) + 0; r = $NF;
         if (!(op in worst)) order[n++] = op;
         q = b > 0 ? e / b : (e > 0 ? 1e300 : 0);  # exact checks have bound 0
         if (!(op in worst) || q > ratio[op]) { worst[op] = e; bnd[op] = b; ratio[op] = q }
         if (r != "ok") bad[op] = 1
       }
       END { for (i = 0; i < n; i++) { op = order[i];
               printf "%-28s %s (worst %.2e, bound %.0e)\n", op, (op in bad) ? "FAIL" : "ok", worst[op], bnd[op] } }' \
      "$out/ops_gpu.txt"
fi
echo

case $gpu_rc in
  0) echo "ops_gpu: all passed" ;;
  77) echo "ops_gpu: skipped (no CUDA device)"; exit 77 ;;
  *) echo "ops_gpu: FAILED (exit $gpu_rc)"; exit 1 ;;
esac
[ $table_rc = 0 ] && [ $bench_rc = 0 ] && { [ $nccl_rc = 0 ] || [ $nccl_rc = 77 ]; } || exit 1
