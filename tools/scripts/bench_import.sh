#!/usr/bin/env bash
# bench_import.sh: the foundation's benchmark (BENCHMARKS.md): import of N generated 448×448 JPEG
# samples with --jobs 2 --validate full (samples/s, MB/s), then verify --no-decode (MB/s) and a
# full verify. Usage: bench_import.sh [N=20000] [WORKDIR=/tmp/adaptd-bench]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-20000}
work=${2:-/tmp/adaptd-bench}
adaptctl=${ADAPTCTL:-$root/build/tools/adaptctl}
rm -rf "$work"; mkdir -p "$work"

now() { date +%s.%N; }
"$adaptctl" data generate --out "$work/raw" --count "$n" --size 448 --format jpeg --seed 7 --jobs 2 >/dev/null
input_bytes=$(du -sb "$work/raw/images" | cut -f1)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

t0=$(now)
"$adaptctl" data import "$work/raw/llava.json" --images "$work/raw" --out "$work/corpus" \
  --jobs 2 --validate full >/dev/null
t1=$(now)
corpus_bytes=$(du -sb "$work/corpus" | cut -f1)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t2=$(now)
"$adaptctl" data verify "$work/corpus" --no-decode >/dev/null
t3=$(now)
"$adaptctl" data verify "$work/corpus" --jobs 2 >/dev/null
t4=$(now)

python3 - "$n" "$input_bytes" "$corpus_bytes" "$t0" "$t1" "$t2" "$t3" "$t4" <<'PY'
import sys
n, inb, cb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t0, t1, t2, t3, t4 = map(float, sys.argv[4:9])
imp, ver, full = t1 - t0, t3 - t2, t4 - t3
print(f"import   {n} samples, {inb/1e6:.1f} MB of JPEG: {imp:.2f} s = {n/imp:.0f} samples/s, {inb/1e6/imp:.1f} MB/s")
print(f"verify --no-decode {cb/1e6:.1f} MB: {ver:.2f} s = {cb/1e6/ver:.0f} MB/s")
print(f"verify (decode every image, --jobs 2): {full:.2f} s = {n/full:.0f} samples/s")
PY
