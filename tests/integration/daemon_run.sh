#!/bin/sh
# daemon_run: runs the end-to-end adaptd test (daemon_api.py, standard library only) with the
# project's venv python, or $ADAPT_TEST_PYTHON. Without that python the test is skipped
# (exit 77), except under CI=true, where it fails.
# Usage: daemon_run.sh PATH/TO/adaptd PATH/TO/daemon_api.py
set -eu
PY=${ADAPT_TEST_PYTHON:-${ADAPT_SOURCE_ROOT:-.}/.venv/bin/python}
if [ ! -x "$PY" ]; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL: no python at $PY (set ADAPT_TEST_PYTHON or run tools/scripts/setup.sh)" >&2
        exit 1
    fi
    echo "SKIP: no python at $PY (set ADAPT_TEST_PYTHON)" >&2
    exit 77
fi
exec "$PY" "$2" "$1"
