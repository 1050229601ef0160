#!/usr/bin/env bash
# quickstart.sh: the main job on the embedded default corpus, from a fresh machine.
# Today (foundation) that is: set up and build, generate the embedded sample corpus, import it,
# verify it and print its summary. Later issues extend it to synthesize → filter → train →
# evaluate through adaptd.
#   ADAPT_SAMPLES  number of samples (default 1000)    ADAPT_OUT  where to write (default ./out)
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
echo
echo "The corpus is in $corpus (inspect one record: $adaptctl data inspect $corpus --record 0)"
