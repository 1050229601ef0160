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
#
# Parts, in this order (the correctness checks first, then the timings):
#   build        meson setup build-gpu -Dcuda=enabled ($BUILD_DIR); only the targets below
#   table        test_ops_cuda_table: the CUDA table is complete and found by name
#   ops          test_ops_gpu: memory entries, streams, every op against its CPU twin
#   ops_bf16     test_ops_bf16_gpu: every bf16 entry of the table against the CPU's bf16 twin
#   model        test_model_gpu: tiny Qwen2-VL loss, every gradient, one AdamW step, cuda vs cpu
#   hf_steps     hf_tiny_steps.py: 2 AdamW steps, transformers (CPU, fp32) vs adaptd on cuda
#   worker       adapt-worker train --backend cuda vs --backend cpu on a generated tiny corpus:
#                the same loss at every step (relative 1e-4)
#   nccl         test_comm_nccl: NCCL bootstrap and all-reduce on one GPU
#   bench_step   bench_train_step_gpu: the Qwen2-VL-2B step (fp32 path), B=8, 448x448, 512 tokens
#   anchor       .dev/hf_qwen2vl_step.py 8 448 512 0: PyTorch + transformers, fp32 master + autocast
#   bench_ops    bench_ops_gpu: per-op timings at the 2B step's shapes
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
# part NAME LIMIT CMD...: runs CMD (a shell function goes as `bash -c NAME`, exported) under
# min(LIMIT, what is left of the budget less 15 s), output to $out/NAME.log; records ok,
# FAIL (rc), TIMEOUT, skipped (77: no device) or skipped (budget spent)
part() {
    local name=$1 limit=$2
    shift 2
    order+=("$name")
    local left=$(( budget - ($(date +%s) - t_start) - 15 ))
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
    local b dev=${WORKER_BACKEND:-cuda}  # cpu-guarded: a dry run of this part off the GPU machine
    for b in $dev cpu; do
        cat > "$T/$b.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/run-$b",
 "max_steps": 6, "global_batch": 8, "micro_batch_tokens": 512, "max_seq_len": 256,
 "lr_llm": 0.005, "lr_vision": 0.005, "warmup_ratio": 0.0, "schedule": "cosine",
 "weight_decay": 0.01, "freeze_vision": false, "freeze_merger": false,
 "image_min_pixels": 3136, "image_max_pixels": 3136, "checkpoint_every": 0, "keep_last": 1,
 "seed": 5}
JSON
        echo "== adapt-worker train --backend $b"
        "$W" train --spec "$T/$b.json" --backend "$b" > "$T/$b.out" || return 1
        cat "$T/$b.out"
    done
    "$python" - "$T/$dev.out" "$T/cpu.out" "$dev" <<'PY'
import json, sys
def losses(p):
    return [json.loads(l)["loss"] for l in open(p) if l.startswith("{") and '"step"' in l]
g, c = losses(sys.argv[1]), losses(sys.argv[2])
if len(g) != 6 or len(c) != 6:
    sys.exit(f"expected 6 progress lines each, got {len(g)} ({sys.argv[3]}) and {len(c)} (cpu)")
worst = max(abs(a - b) / abs(b) for a, b in zip(g, c))
print(f"worker: losses {sys.argv[3]} {g}\nworker: losses cpu {c}\n"
      f"worker: worst relative difference {worst:.2e} (bound 1e-4)")
sys.exit(0 if worst <= 1e-4 else 1)
PY
}

part table 30 $bd/tests/gpu/test_ops_cuda_table
part ops 180 $bd/tests/gpu/test_ops_gpu "$seed"
part ops_bf16 180 $bd/tests/gpu/test_ops_bf16_gpu "$seed"
part model 150 $bd/tests/gpu/test_model_gpu
part hf_steps 150 "$python" tests/gpu/hf_tiny_steps.py $bd/tests/gpu/tiny_steps cuda "$out/hf_tiny_steps"
export -f worker_check
part worker 150 bash -c worker_check
part nccl 60 $bd/tests/gpu/test_comm_nccl
part bench_step 240 $bd/tests/gpu/bench_train_step_gpu tests/data/qwen2vl_2b_config.json 8 448 512 3 1
if [ -f .dev/hf_qwen2vl_step.py ]; then
    part anchor 200 "$python" .dev/hf_qwen2vl_step.py 8 448 512 0
else
    order+=(anchor); result[anchor]="skipped (no .dev/hf_qwen2vl_step.py: run pack-debs.sh)"; secs[anchor]=0
fi
part bench_ops 120 $bd/tests/gpu/bench_ops_gpu 10

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
[ -s "$out/model.log" ] && grep -E "LM head|worst|rel " "$out/model.log" | head -20
[ -s "$out/hf_steps.log" ] && tail -6 "$out/hf_steps.log"
[ -s "$out/worker.log" ] && grep "^worker:" "$out/worker.log"
echo
echo "=== benchmark: Qwen2-VL-2B step, B=8, 448x448 image, 512 tokens per sample, on ${device:-?} ==="
"$python" - "$out/bench_step.log" "$out/anchor.log" <<'PY'
import json, sys
def last_json(path, key):
    try:
        rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    except (OSError, ValueError):
        return None, None
    peak = next((r.get("gemm_bf16_tflops") for r in rows if "gemm_bf16_tflops" in r and len(r) == 1), None)
    rows = [r for r in rows if key in r]
    return (rows[-1] if rows else None), peak
ours, _ = last_json(sys.argv[1], "step_s")
hf, hf_peak = last_json(sys.argv[2], "step_s")
fmt = "  {:<34} {:>8} {:>10} {:>9} {:>10} {:>12}"
print(fmt.format("", "step s", "samples/s", "TFLOP/s", "peak GB", "bf16 peak"))
if ours:
    print(fmt.format(f"adaptd cuda {ours['precision']} (mb {ours['micro_batches']})", ours["step_s"],
                     ours["samples_s"], ours["tflops"], ours["peak_mem_gb"], ours["gemm_bf16_tflops"]))
    print(f"  adaptd: {ours['share_of_bf16_peak']:.1%} of the bf16 peak, {ours['share_of_f32_peak']:.1%} "
          f"of the fp32 peak ({ours['gemm_f32_tflops']} TFLOP/s); {ours['note']}")
else:
    print("  adaptd: no result (see bench_step.log)")
if hf:
    print(fmt.format("PyTorch + transformers, autocast", hf["step_s"], hf["samples_s"], hf["tflops"],
                     hf["peak_mem_gb"], hf_peak if hf_peak is not None else "-"))
else:
    print("  anchor: no result (see anchor.log)")
if ours and hf:
    print(f"  ratio adaptd / anchor: {ours['samples_s'] / hf['samples_s']:.2f}x samples/s "
          f"(bar: >= 1.5x), memory {ours['peak_mem_gb']} vs {hf['peak_mem_gb']} GB")
PY
echo
echo "=== GPU checks (seed $seed; logs in $out; $(( $(date +%s) - t_start )) s of a $budget s budget) ==="
status=0
for name in "${order[@]}"; do
    printf '  %-11s %-34s %4s s\n' "$name" "${result[$name]}" "${secs[$name]}"
    case ${result[$name]} in
        ok|"skipped (77)") ;;
        *) case $name in bench_ops|anchor) ;; *) status=1 ;; esac ;;
    esac
done
if [ "${result[table]}" = "skipped (77)" ] || [ "${result[ops]}" = "skipped (77)" ]; then
    echo "run.sh: no CUDA device"
    exit 77
fi
exit $status
