#!/bin/sh
# run_brief: one short libFuzzer run of a harness over its committed seeds, as a CI test that
# keeps the harnesses building and their seeds crash-free. The corpus directory the fuzzer
# writes into is a temporary one: the seeds in the tree stay untouched.
#   run_brief.sh HARNESS SEED_DIR SECONDS
set -eu
harness=$1 seeds=$2 seconds=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec "$harness" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -seed=1 \
  -print_final_stats=1 "$work" "$seeds"
