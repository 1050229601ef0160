#!/bin/sh
# bench_tokenizer: single-thread encode throughput and load time of adaptd's tokenizer against
# Hugging Face `tokenizers` (RAYON_NUM_THREADS=1), both tokenizers, on the ≥ 2 MB reference text
# of tests/reference/tok_text.py, in one run on one machine.
#
#   tools/scripts/bench_tokenizer.sh [BUILD_DIR] [FIXTURES_DIR]
# BUILD_DIR defaults to build, FIXTURES_DIR to ../shared/fixtures; the Python is
# $ADAPT_TEST_PYTHON or .venv/bin/python. Each side is timed three times; the best run counts.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
fixtures=${2:-$root/../shared/fixtures}
py=${ADAPT_TEST_PYTHON:-$root/.venv/bin/python}
adaptctl=$build/tools/adaptctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export RAYON_NUM_THREADS=1
"$py" "$root/tests/reference/tok_text.py" "$work/text.records"

for name in qwen3 llama3; do
    dir=$fixtures/tokenizers/$name
    "$py" - "$dir" "$work/text.records" <<'EOF'
import sys, time, tokenizers
d, path = sys.argv[1], sys.argv[2]
data, texts, i = open(path, "rb").read(), [], 0
while i < len(data):
    j = data.index(b"\n", i); n = int(data[i:j]); texts.append(data[j + 1:j + 1 + n].decode()); i = j + 1 + n
size = sum(len(t.encode()) for t in texts)
loads, encs = [], []
for _ in range(3):
    t0 = time.perf_counter(); tok = tokenizers.Tokenizer.from_file(d + "/tokenizer.json"); loads.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t in texts:
        tok.encode(t, add_special_tokens=False)
    encs.append(time.perf_counter() - t0)
print(f"{d.rsplit('/', 1)[-1]:7s} hf-tokenizers {tokenizers.__version__}: load {min(loads):.3f} s, "
      f"encode {size} bytes in {min(encs):.3f} s = {size / min(encs) / 1e6:.2f} MB/s")
EOF
    best_load=; best_mbs=
    for run in 1 2 3; do
        "$adaptctl" tokenize --tokenizer "$dir" --batch --time <"$work/text.records" >/dev/null 2>"$work/time"
        load=$(sed -n 's/^load: \([0-9.]*\) s$/\1/p' "$work/time")
        mbs=$(sed -n 's/.*: \([0-9.]*\) MB\/s$/\1/p' "$work/time")
        best_load=$(printf '%s\n%s\n' "$load" "${best_load:-$load}" | sort -g | head -1)
        best_mbs=$(printf '%s\n%s\n' "$mbs" "${best_mbs:-$mbs}" | sort -g | tail -1)
    done
    echo "$name  adaptd:                   load $best_load s, encode $(sed -n 's/.*texts, \([0-9]*\) bytes.*/\1/p' "$work/time") bytes = $best_mbs MB/s"
done
