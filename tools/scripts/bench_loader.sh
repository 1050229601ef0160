#!/bin/sh
# bench_loader: issue 5's benchmark — the training data loader's throughput against what the CPU
# training step consumes, and 2-rank data-parallel scaling, in one run.
#   tools/scripts/bench_loader.sh [BUILD_DIR] [ROUNDS] [STEPS]
# Corpus: COUNT (256; BENCH_LOADER_COUNT) generated 224x224 JPEGs (adaptctl data generate
# --size 224 --format jpeg), imported; image_min_pixels = image_max_pixels = 50176 so every
# image stays 224x224 (16x16 patches, 64 image tokens); caption-only conversations rendered
# with Qwen2-VL's chat format by the Qwen3 tokenizer fixture.
#
# The model issue's benchmark config (tests/data/bench_qwen2vl_20m.json) has an 8192-token
# vocabulary whose <|image_pad|> is 8188; the Qwen3 tokenizer's is 151655 and its ids reach
# 151935, so adapt-worker refuses that pair (train_data_open: "tokenizer and model do not
# match"; the script shows it). So two models are made:
#   20m     the config as it is: its training step is timed by bench-train-step (issue 4's
#           benchmark: forward + backward of 8 samples, 64 image + 128 text tokens each)
#   20m-q3  the same config with the Qwen2-VL special ids and a 151936-token vocabulary (tied
#           embeddings: ~74M more parameters, all in the embedding / LM head) — the nearest
#           model adapt-worker can train with the Qwen3 tokenizer; it runs the full training
#           step (loader + forward + backward + AdamW) and the 2-rank comparison.
# The loader's cost does not depend on the model (bench-loader drives worker/train_data.c with
# 20m-q3's spec and no model). The ratio is taken against the larger consumption of the two.
#
# Order, ROUNDS times: bench-loader, bench-train-step (20m), adapt-worker 1 rank, adapt-worker
# 2 ranks, so the shared machine's load falls on all alike. Every adapt-worker run does
# STEPS + 1 steps of global batch 8; its first step is not counted.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-ld}
rounds=${2:-2}
steps=${3:-3}
count=${BENCH_LOADER_COUNT:-256}
tok=${ADAPT_TOKENIZER:-$root/../shared/fixtures/tokenizers/qwen3}
A=$build/tools/adaptctl W=$build/worker/adapt-worker L=$build/tools/bench-loader
B=$build/tools/bench-train-step
for x in "$A" "$W" "$L" "$B"; do
    [ -x "$x" ] || { echo "bench_loader: no $x (meson setup $build && ninja -C $build)" >&2; exit 1; }
done
mpirun=$(command -v mpirun || true)
work=$(mktemp -d /tmp/bench-loader-XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "load before: $(cat /proc/loadavg)"
"$A" data generate --out "$work/gen" --count "$count" --seed 7 --size 224 --format jpeg \
    --jobs 2 >/dev/null
"$A" data import --out "$work/corpus" --jobs 2 "$work/gen/captions.jsonl" >/dev/null
echo "corpus: $count records, 224x224 JPEG, $(du -sk "$work/corpus" | cut -f1) KiB"

config=$root/tests/data/bench_qwen2vl_20m.json
"$A" model init --config "$config" --out "$work/20m" --seed 1 --tokenizer "$tok" >/dev/null
# 20m-q3: the same numbers with the Qwen2-VL special ids the Qwen3 tokenizer uses
sed -e 's/"image_token_id": 8188/"image_token_id": 151655/' \
    -e 's/"video_token_id": 8189/"video_token_id": 151656/' \
    -e 's/"vision_start_token_id": 8186/"vision_start_token_id": 151652/' \
    -e 's/"vision_end_token_id": 8187/"vision_end_token_id": 151653/' \
    -e 's/"bos_token_id": 8190/"bos_token_id": 151643/g' \
    -e 's/"eos_token_id": 8191/"eos_token_id": 151645/g' \
    -e 's/"vocab_size": 8192/"vocab_size": 151936/' "$config" >"$work/config-q3.json"
"$A" model init --config "$work/config-q3.json" --out "$work/20m-q3" --seed 1 \
    --tokenizer "$tok" >/dev/null

# spec NAME MODEL: global batch 8, one micro-batch per rank and step, no checkpoints
spec() {
    cat >"$work/$1.json" <<JSON
{"model_path": "$2", "corpus": "$work/corpus", "output_dir": "$work/out-$1",
 "max_steps": $((steps + 1)), "global_batch": 8, "micro_batch_tokens": 4096, "max_seq_len": 1024,
 "lr_llm": 0.0001, "lr_vision": 0.0001, "warmup_ratio": 0.0, "schedule": "constant",
 "image_min_pixels": 50176, "image_max_pixels": 50176, "checkpoint_every": 0, "seed": 5}
JSON
    rm -rf "$work/out-$1"
}
spec check "$work/20m"
if "$W" train --spec "$work/check.json" >/dev/null 2>"$work/check.err"; then
    echo "note: adapt-worker trains the unmodified 20m config with the Qwen3 tokenizer"
else
    echo "20m + Qwen3 tokenizer refused by adapt-worker: $(tail -n 1 "$work/check.err")"
fi

export OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OPENBLAS_NUM_THREADS=1
echo "env: OMP_PROC_BIND=$OMP_PROC_BIND OMP_WAIT_POLICY=$OMP_WAIT_POLICY OPENBLAS_NUM_THREADS=1;" \
     "1 rank OMP_NUM_THREADS=2, 2 ranks OMP_NUM_THREADS=1 each; loader: 2 pthreads per rank"

# steps_of FILE: "step_seconds data_seconds" of every step after the first (rank 0's lines)
steps_of() { sed -n 's/.*"step": \([0-9]*\),.*"step_seconds": \([0-9.]*\),.*"data_seconds": \([0-9.]*\),.*/\1 \2 \3/p' "$1" |
             awk '$1 > 1 { print $2, $3 }'; }
: >"$work/loader.txt"; : >"$work/bts.txt"; : >"$work/r1.txt"; : >"$work/r2.txt"
r=1
while [ "$r" -le "$rounds" ]; do
    spec r1 "$work/20m-q3"
    OMP_NUM_THREADS=2 "$L" --spec "$work/r1.json" --batch 8 --samples $((count * 4)) --rounds 3 \
        >"$work/l.out"
    [ "$r" = 1 ] && sed -n '1p;2p' "$work/l.out"
    sed -n 's/^round .* samples_per_second \([0-9.]*\) .*/\1/p' "$work/l.out" >>"$work/loader.txt"
    OMP_NUM_THREADS=2 "$B" "$work/20m" --steps "$steps" --warmup 1 >"$work/b.out"
    sed -n 's/^adaptd step_s //p' "$work/b.out" | tr ' ' '\n' | sed '/^$/d' >>"$work/bts.txt"
    spec r1 "$work/20m-q3"
    OMP_NUM_THREADS=2 "$W" train --spec "$work/r1.json" >"$work/r1.out"
    steps_of "$work/r1.out" >>"$work/r1.txt"
    if [ -n "$mpirun" ]; then
        spec r2 "$work/20m-q3"
        OMP_NUM_THREADS=1 "$mpirun" --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS \
            -x OMP_PROC_BIND -x OMP_WAIT_POLICY -x OPENBLAS_NUM_THREADS \
            "$W" train --spec "$work/r2.json" >"$work/r2.out"
        steps_of "$work/r2.out" >>"$work/r2.txt"
    fi
    echo "round $r: loader $(sed -n 's/^loader median_samples_per_second \([0-9.]*\).*/\1/p' "$work/l.out") samples/s |" \
         "bench-train-step (20m) $(sed -n 's/^adaptd step_s //p' "$work/b.out") s |" \
         "1 rank step $(cut -d' ' -f1 "$work/r1.txt" | tail -n "$steps" | tr '\n' ' ')s |" \
         "2 ranks step $(cut -d' ' -f1 "$work/r2.txt" | tail -n "$steps" | tr '\n' ' ')s |" \
         "load $(cut -d' ' -f1-3 /proc/loadavg)"
    r=$((r + 1))
done
grep -m1 '"step": 2,' "$work/r1.out" | sed 's/^/1-rank step line: /'

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
loader=$(median <"$work/loader.txt")
bts=$(median <"$work/bts.txt")
s1=$(cut -d' ' -f1 "$work/r1.txt" | median); d1=$(cut -d' ' -f2 "$work/r1.txt" | median)
c1=$(awk '{ print $1 - $2 }' "$work/r1.txt" | median)
if [ -s "$work/r2.txt" ]; then
    s2=$(cut -d' ' -f1 "$work/r2.txt" | median); d2=$(cut -d' ' -f2 "$work/r2.txt" | median)
    c2=$(awk '{ print $1 - $2 }' "$work/r2.txt" | median)
else
    s2=nan d2=nan c2=nan
fi
awk -v L="$loader" -v bts="$bts" -v s1="$s1" -v d1="$d1" -v c1="$c1" -v s2="$s2" -v d2="$d2" \
    -v c2="$c2" -v n1="$(wc -l <"$work/r1.txt")" -v n2="$(wc -l <"$work/r2.txt")" \
    -v CNT="$count" -v nb="$(wc -l <"$work/bts.txt")" -v nl="$(wc -l <"$work/loader.txt")" 'BEGIN {
    cb = 8 / bts; cw = 8 / c1; c = cb > cw ? cb : cw
    printf "\n%-58s %12s %s\n", "measure (medians)", "samples/s", "detail"
    printf "%-58s %12.1f %s\n", "loader, 2 threads (bench-loader)", L, nl " rounds of " 4 * CNT " samples"
    printf "%-58s %12.2f %s\n", "consumed: bench-train-step 20m fwd+bwd, 2 threads", cb, bts " s/step of 8, " nb " steps"
    printf "%-58s %12.2f %s\n", "consumed: adapt-worker 20m-q3, 1 rank, step minus data", cw, c1 " s/step of 8"
    printf "%-58s %12.2f %s\n", "adapt-worker 20m-q3, 1 rank x 2 threads, whole step", 8 / s1, s1 " s/step (data " d1 " s), " n1 " steps"
    if (s2 != "nan") {
        printf "%-58s %12.2f %s\n", "adapt-worker 20m-q3, 2 ranks x 1 thread, whole step", 8 / s2, s2 " s/step (data " d2 " s), " n2 " steps"
        printf "%-58s %12.2f %s\n", "2 ranks, step minus data", 8 / c2, c2 " s/step"
    }
    printf "%-58s %12.1f %s\n", "loader inside adapt-worker train, 1 rank (8 / data_seconds)", 8 / d1, d1 " s per step of 8"
    if (s2 != "nan")
        printf "%-58s %12.1f %s\n", "loader inside adapt-worker train, 2 ranks (8 / data_seconds)", 8 / d2, d2 " s per step (4 per rank)"
    met = (L / c >= 5) ? "met" : "NOT met"
    printf "\nloader / consumption (larger of the two): %.1fx (bar >= 5x: %s)\n", L / c, met
    printf "loader / adapt-worker 1-rank whole-step rate: %.1fx\n", L / (8 / s1)
    if (s2 != "nan") {
        printf "2-rank scaling efficiency (whole step, same 2 cores): %.2f\n", s1 / s2
        printf "2-rank scaling efficiency (step minus data): %.2f\n", c1 / c2
    }
}'
echo "load after: $(cat /proc/loadavg)"
