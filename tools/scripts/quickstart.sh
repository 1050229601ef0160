#!/usr/bin/env bash
# quickstart.sh: the main job on the embedded default corpus, from a fresh machine.
# Today that is: set up and build, generate the embedded sample corpus, import it, verify it,
# print its summary, then fine-tune a tiny random Qwen2-VL on it with adapt-worker (single stage,
# captions + generated QA) and show the held-out loss before and after. Later issues run it as
# synthesize → filter → train → evaluate through adaptd.
#   ADAPT_SAMPLES  number of samples (default 1000)    ADAPT_OUT  where to write (default ./out)
#   ADAPT_STEPS    training steps (default 40)
#   ADAPT_TOKENIZER  a Hugging Face tokenizer dir with Qwen2-VL's vision tokens (default: the
#                    Qwen3 tokenizer of ../shared/fixtures/tokenizers/qwen3)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bash tools/scripts/setup.sh

samples=${ADAPT_SAMPLES:-1000}
out=${ADAPT_OUT:-$root/out}
raw=$out/sample-raw
corpus=$out/sample-corpus
rm -rf "$raw" "$corpus" "$corpus.skipped.jsonl"
mkdir -p "$out"
adaptctl=build/tools/adaptctl

echo "== generating the embedded sample corpus ($samples samples) in $raw"
$adaptctl data generate --out "$raw" --count "$samples" --seed 1 --jobs 2
echo "== importing it into $corpus"
$adaptctl data import "$raw/llava.json" --images "$raw" --out "$corpus" --name sample --jobs 2
echo "== verifying every checksum and image"
$adaptctl data verify "$corpus" --jobs 2
echo "== summary"
$adaptctl data inspect "$corpus"
$adaptctl data inspect "$corpus" --histograms

tokenizer=${ADAPT_TOKENIZER:-$root/../shared/fixtures/tokenizers/qwen3}
if [ ! -f "$tokenizer/tokenizer.json" ]; then
  echo "no tokenizer at $tokenizer (set ADAPT_TOKENIZER): stopping before training"
  exit 1
fi
steps=${ADAPT_STEPS:-40}
model=$out/tiny-qwen2vl
run=$out/tiny-run
rm -rf "$model" "$run" "$out/held-raw" "$out/held-corpus"
echo "== a tiny random Qwen2-VL (hidden 64, 2 layers) with the tokenizer of $tokenizer"
cat > "$out/tiny-config.json" <<'JSON'
{"model_type": "qwen2_vl", "image_token_id": 151655, "video_token_id": 151656,
 "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": true,
 "bos_token_id": 151643, "eos_token_id": 151645,
 "text_config": {"vocab_size": 151936, "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}},
 "vision_config": {"depth": 2, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 2, "hidden_size": 64}}
JSON
$adaptctl model init --config "$out/tiny-config.json" --out "$model" --seed 1 --tokenizer "$tokenizer"
$adaptctl model info "$model"
$adaptctl data generate --out "$out/held-raw" --count 100 --seed 2 --jobs 2 >/dev/null
$adaptctl data import "$out/held-raw/llava.json" --images "$out/held-raw" --out "$out/held-corpus" --jobs 2 >/dev/null
cat > "$out/tiny-train.json" <<JSON
{"model_path": "$model", "corpus": "$corpus", "output_dir": "$run", "mode": "single_stage",
 "max_steps": $steps, "global_batch": 8, "micro_batch_tokens": 512, "max_seq_len": 320,
 "lr_llm": 0.005, "lr_vision": 0.005, "warmup_ratio": 0.1, "schedule": "cosine",
 "weight_decay": 0.01, "freeze_vision": false, "freeze_merger": false,
 "image_min_pixels": 3136, "image_max_pixels": 12544, "checkpoint_every": 20, "keep_last": 2,
 "seed": 1}
JSON
echo "== held-out loss of the random model"
build/worker/adapt-worker loss --spec "$out/tiny-train.json" --model "$model" --corpus "$out/held-corpus"
echo "== training $steps steps (one JSON line per step)"
build/worker/adapt-worker train --spec "$out/tiny-train.json"
echo "== held-out loss after training"
build/worker/adapt-worker loss --spec "$out/tiny-train.json" --model "$run" --corpus "$out/held-corpus"
echo
echo "The corpus is in $corpus (inspect one record: $adaptctl data inspect $corpus --record 0)"
echo "The fine-tuned model (Hugging Face layout) is in $run; checkpoints in $run/checkpoints"
