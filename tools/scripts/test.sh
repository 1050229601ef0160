#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it.
#   1. setup.sh (packages, reference venv, build/ with CUDA compiled where nvcc exists);
#   2. meson test on build/ (unit, integration, reference tests);
#   3. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/,
#      CUDA disabled, which also proves the build works without CUDA);
#   4. the libFuzzer harnesses built with clang and run briefly over their seeds (build-fuzz/),
#      so they cannot rot; the long fuzzing runs are done by hand (see README);
#   5. one closing line "N passed, N failed, N skipped" over everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bash tools/scripts/setup.sh
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
export ADAPT_TEST_PYTHON="$root/.venv/bin/python"

results=()
run_suite() {  # run_suite BUILD_DIR [meson test args...]
  local dir=$1; shift
  local rc=0
  meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" || rc=$?
  results+=("$dir/meson-logs/testlog.json")
  return 0
}

run_suite build

if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debug
fi
ninja -C build-asan
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
  run_suite build-asan --suite unit

if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dcuda=disabled -Dmpi=disabled -Dfuzz=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
fi
# only the harnesses: the rest of this build dir is what build-asan already checks
ninja -C build-fuzz tests/fuzz/fuzz_shard tests/fuzz/fuzz_tok tests/fuzz/fuzz_llava_json \
  tests/fuzz/fuzz_job_yaml
run_suite build-fuzz --suite fuzz --no-rebuild

"$ADAPT_TEST_PYTHON" tools/scripts/test_summary.py "${results[@]}"
