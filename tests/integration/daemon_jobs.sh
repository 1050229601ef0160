#!/bin/sh
# daemon_jobs: runs one case of daemon_jobs.py (adaptd with real 2-rank train jobs; standard
# library only) with $ADAPT_TEST_PYTHON, else the project's venv python, else python3.
# Usage: daemon_jobs.sh CASE ADAPTD ADAPTCTL ADAPT_WORKER TOKENIZER_DIR MPIRUN DAEMON_JOBS_PY
set -eu
PY=${ADAPT_TEST_PYTHON:-${ADAPT_SOURCE_ROOT:-.}/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export OMP_NUM_THREADS=1
exec "$PY" "$7" "$1" "$2" "$3" "$4" "$5" "$6"
