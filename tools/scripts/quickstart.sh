#!/usr/bin/env bash
# quickstart.sh: the main job on the embedded default corpus, from a fresh machine.
# Today that is: set up and build, generate the embedded sample corpus, import it, verify it,
# print its summary, make a tiny random Qwen2-VL (`adaptctl model init`), then start adaptd on a
# temporary state dir and fine-tune the model through it (single stage, captions + generated QA):
# `adaptctl submit` a train job, `adaptctl watch` it to the end, print where the model is and the
# held-out loss before and after, stop adaptd. Later issues run synthesize → filter → train →
# evaluate as one pipeline job.
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
# the training settings as a JSON TrainSpec for `adapt-worker loss` (its tokenization and image
# sizes); the job that adaptd runs is the YAML below, with the same values
cat > "$out/tiny-train.json" <<JSON
{"model_path": "$model", "corpus": "$corpus", "output_dir": "$run", "mode": "single_stage",
 "max_steps": $steps, "global_batch": 8, "micro_batch_tokens": 512, "max_seq_len": 320,
 "lr_llm": 0.005, "lr_vision": 0.005, "warmup_ratio": 0.1, "schedule": "cosine",
 "weight_decay": 0.01, "freeze_vision": false, "freeze_merger": false,
 "image_min_pixels": 3136, "image_max_pixels": 12544, "checkpoint_every": 20, "keep_last": 2,
 "seed": 1}
JSON
# loss_of MODEL: prints adapt-worker loss's JSON line, then sets $loss to its "loss" value
loss_of() {
  local line
  line=$(build/worker/adapt-worker loss --spec "$out/tiny-train.json" --model "$1" --corpus "$out/held-corpus")
  echo "$line"
  loss=$(echo "$line" | sed -n 's/.*"loss": *\([-0-9.eE+]*\).*/\1/p' | tail -n 1)
}
echo "== held-out loss of the random model"
loss_of "$model"
loss_before=$loss

# adaptd on a temporary state dir, reached over a Unix socket (no port to collide with); every
# path of a job must lie inside --data-root, here $out.
state=$(mktemp -d /tmp/adaptd-quickstart-XXXXXX)
export ADAPTD_URL="unix:$state/api.sock"
echo "== starting adaptd (state in $state, API on $ADAPTD_URL)"
# In its own session: a Ctrl-C on the terminal reaches this script and adaptctl, not adaptd, so
# stop_adaptd can still cancel the job through it (adaptd leaves running jobs running when it stops).
setsid build/daemon/adaptd --listen "$ADAPTD_URL" --state-dir "$state" --data-root "$out" --slots 1 \
  --worker "$root/build/worker/adapt-worker" >"$state/adaptd.log" 2>&1 &
adaptd_pid=$!
job=
stop_adaptd() {
  # on an early exit (Ctrl-C, a failed step) a job of ours may still run: cancel it first
  if [ -n "$job" ] && $adaptctl cancel "$job" >/dev/null 2>&1; then
    $adaptctl watch "$job" >/dev/null 2>&1 || true   # until it is cancelled (exit 1)
  fi
  kill "$adaptd_pid" 2>/dev/null || true
  wait "$adaptd_pid" 2>/dev/null || true
  rm -rf "$state"
}
trap stop_adaptd EXIT
for _ in $(seq 100); do
  $adaptctl list >/dev/null 2>&1 && break
  kill -0 "$adaptd_pid" 2>/dev/null || { cat "$state/adaptd.log"; echo "adaptd did not start"; exit 1; }
  sleep 0.1
done
cat > "$out/tiny-job.yaml" <<YAML
# a JobSpec (proto/job.proto): paths are relative to adaptd's --data-root ($out)
name: quickstart
kind: train
ranks: 1
train:
  model_path: tiny-qwen2vl
  corpus: sample-corpus
  output_dir: tiny-run
  mode: single_stage
  max_steps: $steps
  global_batch: 8
  micro_batch_tokens: 512
  max_seq_len: 320
  lr_llm: 0.005
  lr_vision: 0.005
  warmup_ratio: 0.1
  schedule: cosine
  weight_decay: 0.01
  freeze_vision: false
  freeze_merger: false
  image_min_pixels: 3136
  image_max_pixels: 12544
  checkpoint_every: 20
  keep_last: 2
  seed: 1
YAML
echo "== submitting $out/tiny-job.yaml to adaptd and watching it ($steps steps)"
job=$($adaptctl submit "$out/tiny-job.yaml")
echo "job $job"
if ! $adaptctl watch "$job"; then
  echo "== the job did not succeed; the end of its logs:"
  $adaptctl logs "$job" --rank launcher --tail 20 || true
  $adaptctl logs "$job" --rank 0 --tail 20 || true
  exit 1
fi
$adaptctl status "$job"
echo "== held-out loss after training"
loss_of "$run"
loss_after=$loss
echo
echo "Held-out loss (100 unseen samples): $loss_before before, $loss_after after $steps steps"
echo "The corpus is in $corpus (inspect one record: $adaptctl data inspect $corpus --record 0)"
echo "The fine-tuned model (Hugging Face layout) is in $run; checkpoints in $run/checkpoints"
