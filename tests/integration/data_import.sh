#!/bin/sh
# data_import: the data commands end to end through the adaptctl binary — generate a small
# corpus, import it as LLaVA JSON and as caption JSONL (skip mode, with damage added), verify,
# inspect in every view, then flip one byte of a shard and expect verify to exit 1 naming the
# shard and the record. Usage: data_import.sh PATH/TO/adaptctl
set -eu
A=$1
T=$(mktemp -d /tmp/adapt-data-import-XXXXXX)
trap 'rm -rf "$T"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# expect CODE CMD...: runs CMD, fails the test unless it exits with CODE
expect() {
    want=$1; shift
    set +e; "$@" >"$T/out" 2>"$T/err"; got=$?; set -e
    [ "$got" -eq "$want" ] || { cat "$T/out" "$T/err" >&2; fail "exit $got, wanted $want: $*"; }
}

"$A" data generate --out "$T/gen" --count 100 --seed 7 --jobs 2 >/dev/null

# LLaVA JSON, 100 records in shards of 30: 4 shards, the last one short.
expect 0 "$A" data import --out "$T/c" --jobs 2 --shard-size 30 "$T/gen/llava.json"
grep -q "imported 100 of 100 records" "$T/out" || fail "import summary: $(cat "$T/out")"
expect 0 "$A" data verify --jobs 2 "$T/c"
grep -q "0 faults" "$T/out" || fail "verify: $(cat "$T/out")"
expect 0 "$A" data verify --no-decode "$T/c"
expect 0 "$A" data inspect "$T/c"
grep -q "100 in 4 shards" "$T/out" || fail "inspect summary: $(cat "$T/out")"
expect 0 "$A" data inspect --json "$T/c"
grep -q '"source_format":[[:space:]]*"llava_json"' "$T/out" || fail "inspect --json"
expect 0 "$A" data inspect --record 99 "$T/c"
grep -q '"role":[[:space:]]*"assistant"' "$T/out" || fail "inspect --record"
grep -q '"bytes":' "$T/out" || fail "inspect --record image"
expect 0 "$A" data inspect --histograms "$T/c"
grep -q "caption length (words)" "$T/out" || fail "histograms"
expect 0 "$A" data inspect --histograms --json "$T/c"
grep -q '"image_pixels"' "$T/out" || fail "histograms --json"
expect 2 "$A" data inspect --record 100 "$T/c"

# Caption JSONL with damage, skip mode: a missing file, a truncated image, a malformed line.
cp "$T/gen/captions.jsonl" "$T/gen/damaged.jsonl"
first=$(ls "$T/gen/images" | head -1)
head -c 2000 "$T/gen/images/$first" > "$T/gen/images/cut_$first"
printf '{"image": "images/none.jpg", "caption": "gone"}\n' >> "$T/gen/damaged.jsonl"
printf '{"image": "images/cut_%s", "caption": "cut"}\n' "$first" >> "$T/gen/damaged.jsonl"
printf '{"image": "images/%s", "caption": \n' "$first" >> "$T/gen/damaged.jsonl"
expect 1 "$A" data import --out "$T/d" "$T/gen/damaged.jsonl"
grep -q "damaged.jsonl: record 100 (line 101" "$T/err" || fail "fail mode message: $(cat "$T/err")"
[ ! -e "$T/d" ] && [ ! -e "$T/d.partial" ] || fail "a failed import left a corpus behind"
expect 0 "$A" data import --out "$T/d" --on-bad skip --format caption_jsonl "$T/gen/damaged.jsonl"
grep -q "skipped 3 records" "$T/out" || fail "skip summary: $(cat "$T/out")"
[ "$(wc -l < "$T/d.skipped.jsonl")" -eq 3 ] || fail "report lines"
grep -q '"reason":"missing_file"' "$T/d.skipped.jsonl" || fail "report: missing_file"
grep -q '"reason":"undecodable_image"' "$T/d.skipped.jsonl" || fail "report: undecodable"
grep -q '"line":103' "$T/d.skipped.jsonl" || fail "report: malformed line"
expect 0 "$A" data inspect "$T/d"
grep -q "missing_file 1" "$T/out" || fail "inspect skip counts: $(cat "$T/out")"

# Usage errors exit 2.
expect 2 "$A" data import "$T/gen/llava.json"
expect 2 "$A" data import --out "$T/e" --on-bad maybe "$T/gen/llava.json"
expect 2 "$A" data verify

# One flipped byte inside the first frame of the second shard (its header is 32 bytes).
shard="$T/c/shards/00001.shard"
b=$(od -An -tu1 -j40 -N1 "$shard" | tr -d ' ')
printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$shard" bs=1 seek=40 conv=notrunc 2>/dev/null
expect 1 "$A" data verify "$T/c"
grep -q "00001.shard: record 0" "$T/err" || fail "verify did not name the shard and record: $(cat "$T/err")"
expect 1 "$A" data verify --no-decode "$T/c"
grep -q "00001.shard: record 0" "$T/err" || fail "verify --no-decode: $(cat "$T/err")"
echo "data_import: ok"
