#!/usr/bin/env bash
# run.sh: every GPU check of the CUDA backend in one go on the GPU machine
# (../shared/device/README.md), each part under its own time limit and all of them under one
# budget, so a hang costs one part and never the visit; full logs under $OUT (the device tool
# brings them back) or out/gpu; a short table last.
#
#   here, before the device call:
#     bash ../shared/device/pack-debs.sh                     # .dev/: the libraries the machine lacks
#     mkdir -p .dev/tokenizers && cp -r ../shared/fixtures/tokenizers/qwen3 .dev/tokenizers/
#   device: command "bash tests/gpu/run.sh [BUDGET_SECONDS [SEED]]", carry [".dev"], timeout_s 600
#   (BUDGET_SECONDS defaults to 540: the parts left when it runs out are skipped, not started)
#   dry run here, no GPU: OUT=/tmp/g BUILD_DIR=build-x PYTHON=.venv/bin/python \
#       WORKER_BACKEND=cpu-guarded bash tests/gpu/run.sh   (the GPU parts end "skipped (77)")
#   and, to run the benchmark's parsing and table too: BENCH_BACKEND=cpu-guarded
#   BENCH_CONFIG=tests/data/bench_qwen2vl_20m.json BENCH_SHAPE="2 56 64 1 0" ANCHOR=a stand-in
#   script that prints the anchor's two JSON lines (the real anchor needs a GPU)
#
# Parts, in this order (the correctness checks first, then the timings):
#   build        meson setup build-gpu -Dcuda=enabled ($BUILD_DIR); only the targets below
#   table        test_ops_cuda_table: the CUDA table is complete and found by name
#   ops          test_ops_gpu: memory entries, streams, every op against its CPU twin
#   ops_bf16     test_ops_bf16_gpu: every bf16 entry of the table against the CPU's bf16 twin
#   model        test_model_gpu: tiny Qwen2-VL loss, every gradient, one AdamW step, cuda vs cpu
#   hf_steps     hf_tiny_steps.py: 2 AdamW steps, transformers (CPU, fp32) vs adaptd on cuda
#   worker       adapt-worker train --backend cuda vs --backend cpu on a generated tiny corpus,
#                "precision" fp32 and bf16: the same loss at every step (relative 1e-4 in fp32,
#                2e-2 in bf16)
#   nccl         test_comm_nccl: NCCL bootstrap and all-reduce on one GPU
#   anchor       .dev/hf_qwen2vl_step.py 8 448 512 0: PyTorch + transformers, fp32 master weights
#                + bf16 autocast (issue 7's anchor); its samples/s and peak memory are parsed
#   bench_bf16   bench_train_step_gpu --precision bf16 --max-mem-gb <the anchor's peak>: the
#                Qwen2-VL-2B step, B=8, 448x448, 512 tokens, the fewest micro-batches whose peak
#                memory stays at most the anchor's (the bar: >= 1.5x its samples/s, no more memory)
#   bench_fp32   the same step on the fp32 path, for reference (when budget is left)
#   bench_ops    bench_ops_gpu: per-op timings at the 2B step's shapes (when budget is left)
# The correctness parts leave RESERVE seconds (default 200) of the budget to the anchor and the
# bf16 benchmark, which run after them: a slow build or check costs checks, never the bar.
#
# Exit status: 0 every check passed, 1 a build failure or a failed check, 77 no CUDA device.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/out/gpu}
mkdir -p "$out"
budget=${1:-540}
seed=${2:-$(date +%s)}
t_start=$(date +%s)
if [ -f .dev/env.sh ]; then source .dev/env.sh; fi
export PATH=/usr/local/cuda/bin:$PATH
python=${PYTHON:-python3}
bd=${BUILD_DIR:-build-gpu}  # the build directory (another one for a dry run off the GPU machine)
export out python bd        # for the parts that are shell functions (bash -c NAME)

declare -A result secs
order=()
reserve=0   # seconds of the budget the part may not use (kept for the benchmark parts)
# part NAME LIMIT CMD...: runs CMD (a shell function goes as `bash -c NAME`, exported) under
# min(LIMIT, what is left of the budget less 15 s and less $reserve), output to $out/NAME.log;
# records ok, FAIL (rc), TIMEOUT, skipped (77: no device) or skipped (budget spent)
part() {
    local name=$1 limit=$2
    shift 2
    order+=("$name")
    local left=$(( budget - ($(date +%s) - t_start) - 15 - reserve ))
    if [ "$left" -lt 20 ]; then
        result[$name]="skipped (budget spent)"; secs[$name]=0
        echo "run.sh: $name: skipped, the budget is spent"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$(date +%s)
    echo "run.sh: $name (limit ${limit} s)"
    timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    secs[$name]=$(( $(date +%s) - t0 ))
    case $rc in
        0) result[$name]=ok ;;
        77) result[$name]="skipped (77)" ;;
        124|137) result[$name]="TIMEOUT (${limit} s)" ;;
        *) result[$name]="FAIL (exit $rc)" ;;
    esac
    [ "$rc" = 0 ] || tail -15 "$out/$name.log"
    return 0
}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "run.sh: nvidia-smi failed (see $out/nvidia-smi.txt)"
device=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)

build() {
    if [ ! -f $bd/build.ninja ]; then
        meson setup $bd -Dcuda=enabled || return 1
    fi
    # only what this visit runs: the whole build costs device minutes and CI builds it anyway
    ninja -C $bd tests/gpu/test_ops_cuda_table tests/gpu/test_ops_gpu tests/gpu/test_ops_bf16_gpu \
        tests/gpu/test_comm_nccl \
        tests/gpu/test_model_gpu tests/gpu/bench_ops_gpu tests/gpu/bench_train_step_gpu \
        tests/gpu/tiny_steps worker/adapt-worker tools/adaptctl
}
export -f build
part build 360 bash -c build
if [ "${result[build]}" != ok ]; then
    echo "run.sh: build failed (log: $out/build.log)"
    exit 1
fi

# adapt-worker train on cuda and on cpu, same spec: the loss of every step must agree
worker_check() {
    local T=$out/worker A=$bd/tools/adaptctl W=$bd/worker/adapt-worker tok=""
    for d in "${ADAPT_TOKENIZER:-}" .dev/tokenizers/qwen3 ../shared/fixtures/tokenizers/qwen3; do
        if [ -n "$d" ] && [ -f "$d/tokenizer.json" ]; then tok=$d; break; fi
    done
    if [ -z "$tok" ]; then
        echo "no tokenizer (copy ../shared/fixtures/tokenizers/qwen3 to .dev/tokenizers/ before the call)"
        return 1
    fi
    rm -rf "$T" && mkdir -p "$T" || return 1
    cat > "$T/config.json" <<'JSON'
{"model_type": "qwen2_vl", "image_token_id": 151655, "video_token_id": 151656,
 "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": true,
 "bos_token_id": 151643, "eos_token_id": 151645,
 "text_config": {"vocab_size": 151936, "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}},
 "vision_config": {"depth": 2, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 2, "hidden_size": 64}}
JSON
    "$A" model init --config "$T/config.json" --out "$T/model" --seed 1 --tokenizer "$tok" || return 1
    "$A" data generate --out "$T/gen" --count 100 --seed 3 --size 64 --jobs 4 > /dev/null || return 1
    "$A" data import --out "$T/corpus" --jobs 4 --shard-size 16 "$T/gen/captions.jsonl" > /dev/null || return 1
    local b p dev=${WORKER_BACKEND:-cuda}  # cpu-guarded: a dry run of this part off the GPU machine
    local bad=0
    for p in fp32 bf16; do
    for b in $dev cpu; do
        cat > "$T/$b-$p.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/run-$b-$p", "precision": "$p",
 "max_steps": 6, "global_batch": 8, "micro_batch_tokens": 512, "max_seq_len": 256,
 "lr_llm": 0.005, "lr_vision": 0.005, "warmup_ratio": 0.0, "schedule": "cosine",
 "weight_decay": 0.01, "freeze_vision": false, "freeze_merger": false,
 "image_min_pixels": 3136, "image_max_pixels": 3136, "checkpoint_every": 0, "keep_last": 1,
 "seed": 5}
JSON
        echo "== adapt-worker train --backend $b, precision $p"
        "$W" train --spec "$T/$b-$p.json" --backend "$b" > "$T/$b-$p.out" || return 1
        cat "$T/$b-$p.out"
    done
    # fp32: the same arithmetic up to summation order; bf16: the same roundings, but a value
    # near a bf16 boundary may round the other way in another order, and six steps carry it
    local bound=1e-4
    [ $p = bf16 ] && bound=2e-2
    "$python" - "$T/$dev-$p.out" "$T/cpu-$p.out" "$dev" "$p" "$bound" <<'PY' || bad=1
import json, math, sys
def losses(p):
    return [json.loads(l)["loss"] for l in open(p) if l.startswith("{") and '"step"' in l]
g, c = losses(sys.argv[1]), losses(sys.argv[2])
dev, prec, bound = sys.argv[3], sys.argv[4], float(sys.argv[5])
if len(g) != 6 or len(c) != 6:
    sys.exit(f"worker: {prec}: expected 6 progress lines each, got {len(g)} ({dev}) and {len(c)} (cpu)")
# NaN never passes: a NaN difference is not <= the bound, and max() must not drop it
errs = [abs(a - b) / abs(b) if math.isfinite(a) and math.isfinite(b) else math.inf for a, b in zip(g, c)]
worst = max(errs)
print(f"worker: {prec}: losses {dev} {g}\nworker: {prec}: losses cpu {c}\n"
      f"worker: {prec}: worst relative difference {worst:.2e} (bound {bound:.0e}) "
      f"{'ok' if worst <= bound else 'FAIL'}")
sys.exit(0 if worst <= bound else 1)
PY
    done
    return $bad
}

reserve=${RESERVE:-200}
part table 30 $bd/tests/gpu/test_ops_cuda_table
part ops 180 $bd/tests/gpu/test_ops_gpu "$seed"
part ops_bf16 180 $bd/tests/gpu/test_ops_bf16_gpu "$seed"
part model 150 $bd/tests/gpu/test_model_gpu
part hf_steps 150 "$python" tests/gpu/hf_tiny_steps.py $bd/tests/gpu/tiny_steps cuda "$out/hf_tiny_steps"
export -f worker_check
part worker 150 bash -c worker_check
part nccl 60 $bd/tests/gpu/test_comm_nccl

# ---- the benchmark: the anchor first, its peak memory is the bf16 run's limit ----------------
reserve=0
anchor=${ANCHOR:-.dev/hf_qwen2vl_step.py}
if [ -f "$anchor" ]; then
    part anchor 150 "$python" "$anchor" 8 448 512 0
else
    order+=(anchor); result[anchor]="skipped (no $anchor: run pack-debs.sh)"; secs[anchor]=0
fi
# the anchor's peak_mem_gb (GiB: max_memory_allocated / 2**30), as it prints it
anchor_peak=$("$python" - "$out/anchor.log" <<'PY' 2>/dev/null
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows = [r for r in rows if "peak_mem_gb" in r]
print(rows[-1]["peak_mem_gb"] if rows else "")
PY
)
if [ -z "$anchor_peak" ]; then
    anchor_peak=52.5
    echo "run.sh: no anchor result: the bf16 benchmark's memory limit is the README's 52.5 GiB (H200, 2026-11-26)"
    echo "README 52.5" > "$out/anchor_peak.txt"
else
    echo "anchor $anchor_peak" > "$out/anchor_peak.txt"
fi
bench_cfg=${BENCH_CONFIG:-tests/data/qwen2vl_2b_config.json}
read -r -a bench_shape <<< "${BENCH_SHAPE:-8 448 512 3 1}"
bench_be=()
[ -n "${BENCH_BACKEND:-}" ] && bench_be=(--backend "$BENCH_BACKEND")
part bench_bf16 240 $bd/tests/gpu/bench_train_step_gpu "${bench_be[@]}" --precision bf16 \
    --max-mem-gb "$anchor_peak" "$bench_cfg" "${bench_shape[@]}"
part bench_fp32 150 $bd/tests/gpu/bench_train_step_gpu "${bench_be[@]}" --precision fp32 \
    "$bench_cfg" "${bench_shape[@]}"
part bench_ops 100 $bd/tests/gpu/bench_ops_gpu 10

# ---- the short table ------------------------------------------------------------------------
[ -s "$out/bench_ops.log" ] && { echo; echo "=== per-op timings (bench_ops_gpu) ==="; cat "$out/bench_ops.log"; }
if [ -s "$out/ops.log" ]; then
    echo
    echo "=== ops parity, worst case per op (full table: $out/ops.log) ==="
    awk 'NR > 2 && $1 != "" && $NF ~ /^(ok|FAIL)$/ {
           op = $1; e = $(NF - 2) + 0; b = $(NF - 1) + 0; r = $NF;
           if (!(op in worst)) order[n++] = op;
           q = b > 0 ? e / b : (e > 0 ? 1e300 : 0);
           if (!(op in worst) || q > ratio[op]) { worst[op] = e; bnd[op] = b; ratio[op] = q }
           if (r != "ok") bad[op] = 1
         }
         END { for (i = 0; i < n; i++) { op = order[i];
                 printf "  %-28s %s (worst %.2e, bound %.0e)\n", op, (op in bad) ? "FAIL" : "ok", worst[op], bnd[op] } }' \
        "$out/ops.log"
fi
echo
[ -s "$out/model.log" ] && grep -E "LM head|worst|rel |bounds" "$out/model.log" | head -40
[ -s "$out/hf_steps.log" ] && tail -6 "$out/hf_steps.log"
[ -s "$out/worker.log" ] && grep "^worker:" "$out/worker.log"
echo
echo "=== benchmark: Qwen2-VL-2B step, B=8, 448x448 image, 512 tokens per sample, on ${device:-?} ==="
"$python" - "$out/bench_bf16.log" "$out/bench_fp32.log" "$out/anchor.log" "$out/anchor_peak.txt" <<'PY'
import json, sys
def rows(path):
    try:
        return [json.loads(l) for l in open(path) if l.startswith("{")]
    except (OSError, ValueError):
        return []
def last(rs, key):
    rs = [r for r in rs if key in r]
    return rs[-1] if rs else None
bf, fp = last(rows(sys.argv[1]), "step_s"), last(rows(sys.argv[2]), "step_s")
ar = rows(sys.argv[3])
hf, hf_gemm = last(ar, "step_s"), last(ar, "gemm_bf16_tflops")
hf_peak = hf_gemm["gemm_bf16_tflops"] if hf_gemm else None
try:
    limit_src, limit = open(sys.argv[4]).read().split()
except (OSError, ValueError):
    limit_src, limit = "-", "-"
fmt = "  {:<40} {:>8} {:>10} {:>8} {:>10} {:>14}"
print(fmt.format("(peak memory in GiB, as the anchor's)", "step s", "samples/s", "TFLOP/s",
                 "peak GiB", "bf16 GEMM pk"))
if hf:
    print(fmt.format("PyTorch + transformers, fp32 + autocast", hf["step_s"], hf["samples_s"],
                     hf["tflops"], hf["peak_mem_gb"], hf_peak if hf_peak is not None else "-"))
else:
    print("  anchor: no result (see anchor.log)")
for r in (bf, fp):
    if r:
        print(fmt.format(f"adaptd {r['backend']} {r['precision']} ({r['micro_batches']} micro-batch)",
                         r["step_s"], r["samples_s"], r["tflops"], r["peak_mem_gb"],
                         r["gemm_bf16_tflops"]))
if not bf:
    print("  adaptd bf16: no result (see bench_bf16.log)")
print(f"  memory limit given to the bf16 run: {limit} GiB ({'the anchor' if limit_src == 'anchor' else limit_src})")
if hf and hf_peak:
    print(f"  anchor: {hf['tflops'] / hf_peak:.1%} of the bf16 GEMM peak it measured")
for r in (bf, fp):
    if r and r["gemm_bf16_tflops"] > 0:
        print(f"  adaptd {r['precision']}: {r['tflops']} model TFLOP/s = {r['share_of_bf16_peak']:.1%} "
              f"of the bf16 GEMM peak measured in the same run ({r['gemm_bf16_tflops']} TFLOP/s); "
              f"{r['note']}")
if bf and hf:
    ratio = bf["samples_s"] / hf["samples_s"]
    mem_ok = bf["peak_mem_gb"] <= hf["peak_mem_gb"]
    met = ratio >= 1.5 and mem_ok
    print(f"  ratio adaptd bf16 / anchor: {ratio:.2f}x samples/s (bar >= 1.5x), peak memory "
          f"{bf['peak_mem_gb']} vs {hf['peak_mem_gb']} GiB ({'no higher' if mem_ok else 'HIGHER'}): "
          f"bar {'MET' if met else 'NOT MET'}")
else:
    print("  ratio: not measured (both the anchor and the bf16 run are needed, in this call)")
PY
echo
echo "=== GPU checks (seed $seed; logs in $out; $(( $(date +%s) - t_start )) s of a $budget s budget) ==="
status=0
for name in "${order[@]}"; do
    printf '  %-11s %-34s %4s s\n' "$name" "${result[$name]}" "${secs[$name]}"
    case ${result[$name]} in
        ok|"skipped (77)") ;;
        "skipped (budget spent)") case $name in bench_fp32|bench_ops) ;; *) status=1 ;; esac ;;
        *) case $name in bench_ops|anchor) ;; *) status=1 ;; esac ;;
    esac
done
if [ "${result[table]}" = "skipped (77)" ] || [ "${result[ops]}" = "skipped (77)" ]; then
    echo "run.sh: no CUDA device"
    exit 77
fi
exit $status
