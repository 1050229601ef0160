#!/bin/sh
# worker_backend: adapt-worker's --backend option (issue 7). An unknown name, or one this build
# lacks (cuda without -Dcuda), is refused before anything is loaded: exit 2 (not retried) with
# one line naming it and the backends the build has, for train and loss; the generation kinds
# refuse any backend but cpu; --help documents the option and the build's list.
# Usage: worker_backend.sh ADAPT_WORKER
set -eu
W=$1
T=$(mktemp -d /tmp/adapt-backend-XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tiny_fixture.sh"     # fail, expect

expect 0 "$W" --help
grep -q -- "--backend NAME" "$T/out" || fail "--help lacks --backend"
list=$(sed -n 's/.*this build has: \(.*\)$/\1/p' "$T/out")
echo "built-in backends: $list"
case "$list" in "cpu, cpu-guarded"*) ;; *) fail "--help's backend list: '$list'" ;; esac

for cmd in train loss; do
    expect 2 "$W" $cmd --spec "$T/none.json" --model "$T/m" --backend tpu
    grep -q "backend tpu: not built in / unknown (this build has: $list)" "$T/err" ||
        fail "$cmd --backend tpu: $(cat "$T/err")"
done
case "$list" in
    *cuda*) ;;
    *)  expect 2 "$W" train --spec "$T/none.json" --backend cuda
        grep -q "backend cuda: not built in" "$T/err" || fail "cuda in a CPU build: $(cat "$T/err")" ;;
esac
# a missing value is an incomplete argument, not the default
expect 2 "$W" train --spec "$T/none.json" --backend
grep -q "incomplete argument '--backend'" "$T/err" || fail "bare --backend: $(cat "$T/err")"
# generation runs on the host's memory: any other backend is refused before MPI or the spec
expect 2 "$W" synthesize --spec "$T/none.json" --backend cpu-guarded
grep -q "runs on cpu only" "$T/err" || fail "synthesize --backend cpu-guarded: $(cat "$T/err")"
echo "PASS"
