#!/bin/sh
# run_python: runs a reference test script with the pinned Python of the test set-up.
#   run_python.sh DEFAULT_PYTHON SCRIPT ARGS...
# The Python is $ADAPT_TEST_PYTHON, else DEFAULT_PYTHON (the repository's .venv). When it is
# missing the test is skipped (exit 77) on a developer machine, and fails in CI (CI=true), where
# .ci/run must have created it.
py=${ADAPT_TEST_PYTHON:-$1}
shift
if [ ! -x "$py" ] || ! "$py" -c 'import tokenizers, transformers' 2>/dev/null; then
    if [ "${CI:-}" = true ]; then
        echo "reference Python $py (with tokenizers, transformers) is missing in CI: run .ci/run" >&2
        exit 1
    fi
    echo "reference Python $py (with tokenizers, transformers) is missing: skipped" >&2
    exit 77
fi
exec "$py" "$@"
