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

# SIGTERM right after "listening on" must shut adaptd down cleanly (exit 0): its handlers are
# installed before any listener prints. stdbuf -oL makes that line reach us when it is printed,
# not at adaptd's later fflush, so the SIGTERM lands in the rest of its setup; ten tries.
if command -v stdbuf >/dev/null 2>&1; then
    "$PY" - "$1" <<'EOF'
import os, signal, subprocess, sys, tempfile
adaptd = sys.argv[1]
for i in range(10):
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "data"))
        p = subprocess.Popen(["stdbuf", "-oL", adaptd, "--listen", "127.0.0.1:0", "--state-dir",
                              os.path.join(tmp, "state"), "--data-root", os.path.join(tmp, "data")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if "listening on" not in line:
            p.kill()
            sys.exit("FAIL: adaptd's first line is not 'listening on': %r %s" % (line, p.stderr.read()))
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            sys.exit("FAIL: adaptd did not exit within 15 s of a SIGTERM right after startup")
        if rc != 0:
            sys.exit("FAIL: SIGTERM right after 'listening on' (try %d): exit %d, want 0; %s"
                     % (i + 1, rc, p.stderr.read()))
print("adaptd: SIGTERM right after startup exits 0 (10 tries)")
EOF
fi
exec "$PY" "$2" "$1"
