#!/bin/sh
# train_graphs: adapt-worker train with the training passes replayed as graphs (ADAPT_GRAPHS=1)
# on the cpu-guarded backend, whose graph entries emulate CUDA graphs (ops recorded with their
# arguments at capture, replayed as recorded), gives exactly what --backend cpu gives op by op:
# every progress line (loss, lr, grad_norm, counts) and the final weights byte for byte; and the
# run really replayed graphs (the backend's stats line counts the launches). The fixture is
# train_guarded.sh's: the tiny Qwen2-VL and a generated corpus of images of varied sizes.
# Usage: train_graphs.sh ADAPTCTL ADAPT_WORKER TOKENIZER_DIR
set -eu
A=$1 W=$2 TOKDIR=$3
T=$(mktemp -d /tmp/adapt-graphs-XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1

fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$T/config.json" <<'JSON'
{"model_type": "qwen2_vl", "image_token_id": 151655, "video_token_id": 151656,
 "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": true,
 "bos_token_id": 151643, "eos_token_id": 151645,
 "text_config": {"vocab_size": 151936, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]}},
 "vision_config": {"depth": 1, "embed_dim": 32, "num_heads": 4, "mlp_ratio": 2, "hidden_size": 32}}
JSON
"$A" model init --config "$T/config.json" --out "$T/model" --seed 1 --tokenizer "$TOKDIR" >/dev/null
"$A" data generate --out "$T/gen" --count 100 --seed 3 --min-size 64 --max-size 120 --jobs 2 >/dev/null
"$A" data import --out "$T/corpus" --jobs 2 --shard-size 10 "$T/gen/captions.jsonl" >/dev/null

# several micro-batches per step (global batch 8, 256 tokens each), so the step's loss is read
# once from the backend after passes that kept theirs there
spec() {
    cat >"$T/$1.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/$1",
 "max_steps": 5, "global_batch": 8, "micro_batch_tokens": 256, "max_seq_len": 160,
 "lr_llm": 0.01, "warmup_ratio": 0.1, "schedule": "cosine", "weight_decay": 0.01,
 "freeze_vision": false, "freeze_merger": false, "image_min_pixels": 3136,
 "image_max_pixels": 12544, "checkpoint_every": 0, "keep_last": 2, "seed": 5}
JSON
}
steps() { grep '"step":' "$1" | sed 's/, "step_seconds.*//'; }

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
steps "$T/cpu.out" >"$T/a.steps"
steps "$T/graphs.out" >"$T/b.steps"
[ "$(wc -l <"$T/a.steps")" -eq 5 ] || fail "expected 5 progress lines: $(cat "$T/cpu.out")"
diff "$T/a.steps" "$T/b.steps" >&2 ||
    fail "progress lines differ (< cpu, > cpu-guarded with graphs)"
cmp "$T/cpu/model.safetensors" "$T/graphs/model.safetensors" ||
    fail "cpu and cpu-guarded with graphs trained different weights"
grep '"step": 5,' "$T/graphs.out" | sed 's/, "step_seconds.*//'
