#!/bin/sh
# status_page: adaptd's status page (GET /, daemon/status_page.html) in headless Chromium.
#
# seed_jobs writes three jobs into a fresh state dir before adaptd starts: a finished one with a
# 37-step metrics series, a failed one with an error, and a 10,050-step one (more than one
# metrics page). The page must list them, draw one curve point per metrics row, show the
# failed job's error, fetch the long series in two pages (the second with since=) and not fetch
# an unchanged finished series again on its 2 s refreshes. A fourth, a pipeline job left failed
# in its filter stage, must show its current stage in the list and its stage table in the
# details (from GET /v1/jobs/{id}, which alone has "stage" and "stages"). The headers (CSP, ETag, 304) are
# checked with curl. A screenshot is kept in ARTIFACT_DIR and its path printed.
#
# Without chromium the test is skipped (exit 77), except under CI=true, where it fails
# (tools/scripts/setup.sh installs it).
# Usage: status_page.sh PATH/TO/adaptd PATH/TO/seed_jobs ARTIFACT_DIR
set -eu
ADAPTD=$1 SEED=$2 ARTIFACTS=$3

need() {  # need TOOL: the path of TOOL, or skip / fail as the header says
    path=$(command -v "$1" 2>/dev/null || true)
    if [ -n "$path" ]; then echo "$path"; return; fi
    if [ "${CI:-}" = true ]; then echo "FAIL: $1 is not installed (tools/scripts/setup.sh installs it)" >&2; exit 1; fi
    echo "SKIP: $1 is not installed" >&2
    exit 77
}
CHROMIUM=${CHROMIUM:-$(need chromium)}
CURL=$(need curl)
PYTHON=$(need python3)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/adaptd-status-page.XXXXXX")
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$tmp/data" "$ARTIFACTS"
done_id=$("$SEED" "$tmp/state" --steps 37 --name page-finished)
failed_id=$("$SEED" "$tmp/state" --steps 5 --state failed --name page-failed \
            --error "rank 1 exited with status 3")
long_id=$("$SEED" "$tmp/state" --steps 10050 --name page-long)
pipe_id=$("$SEED" "$tmp/state" --kind pipeline --state failed --name page-pipeline \
          --error "filter: rank 0 exited with status 1")

"$ADAPTD" --listen 127.0.0.1:0 --state-dir "$tmp/state" --data-root "$tmp/data" \
    >"$tmp/adaptd.out" 2>"$tmp/adaptd.err" &
daemon_pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's|^adaptd: listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/adaptd.out")
    [ -n "$port" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] || fail "adaptd did not start: $(cat "$tmp/adaptd.err")"
base=http://127.0.0.1:$port

# ---- headers ---------------------------------------------------------------------------------
"$CURL" -sS -D "$tmp/head" -o "$tmp/page.html" "$base/"
grep -qi '^HTTP/1.1 200' "$tmp/head" || fail "GET / is not 200: $(cat "$tmp/head")"
grep -qi '^Content-Type: text/html; charset=utf-8' "$tmp/head" || fail "GET /: wrong Content-Type"
grep -qi '^Cache-Control: no-cache' "$tmp/head" || fail "GET /: no Cache-Control: no-cache"
grep -qi "^Content-Security-Policy: default-src 'none'; script-src 'sha256-" "$tmp/head" ||
    fail "GET /: no strict Content-Security-Policy"
grep -q '<svg id="curve"' "$tmp/page.html" || fail "GET / did not return the status page"
etag=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *\("[^"]*"\).*/\1/p' "$tmp/head")
[ -n "$etag" ] || fail "GET /: no ETag"
code=$("$CURL" -sS -o "$tmp/304.body" -w '%{http_code}' -H "If-None-Match: $etag" "$base/")
[ "$code" = 304 ] && [ ! -s "$tmp/304.body" ] || fail "If-None-Match $etag: got $code, want an empty 304"
code=$("$CURL" -sS -o /dev/null -w '%{http_code}' -H 'If-None-Match: "stale"' "$base/index.html")
[ "$code" = 200 ] || fail "a stale If-None-Match on /index.html: got $code, want 200"
code=$("$CURL" -sS -o /dev/null -w '%{http_code}' -X POST "$base/")
[ "$code" = 405 ] || fail "POST /: got $code, want 405"

# ---- the page in Chromium --------------------------------------------------------------------
# The virtual time budget lets the page run 7 s of its own time (its first load and three
# refreshes); Chromium's virtual clock waits for pending fetches, so the DOM is complete.
browse() {  # browse OUTPUT_FLAG URL_SUFFIX: run headless Chromium on the page
    "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$tmp/profile" --hide-scrollbars --window-size=1280,900 \
        --log-net-log="$tmp/netlog.json" --virtual-time-budget=7000 "$1" "$base/$2" 2>>"$tmp/chromium.err"
}
browse --dump-dom "#job=$done_id" >"$tmp/done.html" || fail "chromium failed: $(tail -5 "$tmp/chromium.err")"
browse --dump-dom "#job=$failed_id" >"$tmp/failed.html" || fail "chromium failed on the failed job"
browse --dump-dom "#job=$long_id" >"$tmp/long.html" || fail "chromium failed on the long job"
cp "$tmp/netlog.json" "$tmp/netlog.long.json"
browse --dump-dom "#job=$pipe_id" >"$tmp/pipe.html" || fail "chromium failed on the pipeline job"
rm -f "$ARTIFACTS/status_page.png"
(cd "$tmp" && browse --screenshot="$ARTIFACTS/status_page.png" "#job=$done_id" >/dev/null)
[ -s "$ARTIFACTS/status_page.png" ] || fail "no screenshot at $ARTIFACTS/status_page.png"

"$PYTHON" - "$tmp" "$done_id" "$failed_id" "$long_id" "$pipe_id" <<'EOF'
import json, re, sys
from html.parser import HTMLParser

tmp, done_id, failed_id, long_id, pipe_id = sys.argv[1:6]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Dom(HTMLParser):
    """Elements by id and the text inside each, from Chromium's --dump-dom."""
    def __init__(self, text):
        super().__init__()
        self.byid, self.text, self.open, self.rows = {}, {}, [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.byid[a["id"]] = a
            self.text[a["id"]] = ""
        if tag == "tr" and "data-job-id" in a:
            self.rows[a["data-job-id"]] = a
        if tag not in VOID:
            self.open.append((tag, a.get("id")))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, i in self.open:
            if i:
                self.text[i] += data


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)


def page(name):
    with open(f"{tmp}/{name}.html", encoding="utf-8") as f:
        return Dom(f.read())


def vertices(d):
    return len(re.findall(r"[ML]\s*-?[0-9.]+\s+-?[0-9.]+", d))


done = page("done")
check(done.byid.get("curve") is not None, "no <svg id=curve> in the DOM")
check("jobs" in done.text.get("status", ""), "status line not updated: %r" % done.text.get("status"))
for jid, state in ((done_id, "succeeded"), (failed_id, "failed"), (long_id, "succeeded")):
    row = done.rows.get(jid)
    check(row is not None, f"job {jid} is not listed")
    check(row.get("data-state") == state, f"job {jid}: row state {row.get('data-state')}, want {state}")
check("succeeded" in done.text["job-" + done_id], "the state is not shown in the row")
check(done.rows[done_id].get("aria-selected") == "true", "#job= did not select the job")
curve = done.byid["curve"]
check(curve.get("data-job-id") == done_id, "the curve is not the selected job's")
check(curve.get("data-points") == "37", f"curve has {curve.get('data-points')} points, want 37")
d = done.byid["curve-line"].get("d", "")
check(vertices(d) == 37, f"curve path has {vertices(d)} vertices, want 37: {d[:80]}")
check("at step 37" in done.text.get("curve-last-label", ""), "last value not labelled")
check("class" not in curve or "hidden" not in curve["class"], "curve hidden")
check(done_id in done.text.get("detail-fields", ""), "detail panel does not show the job")

failed = page("failed")
check(failed.byid["curve"].get("data-points") == "5", "failed job: want 5 curve points")
check("rank 1 exited with status 3" in failed.text.get("detail-error", ""),
      "failed job: error not shown: %r" % failed.text.get("detail-error"))

long = page("long")
check(long.byid["curve"].get("data-points") == "10050", "long job: want 10050 curve points, got "
      + str(long.byid["curve"].get("data-points")))
check(vertices(long.byid["curve-line"].get("d", "")) == 10050, "long job: path vertex count")

# The pipeline job: synthesize done by attempt 1, filter started by attempt 2 (seed_jobs).
with open(f"{tmp}/pipe.html", encoding="utf-8") as f:
    pipe_html = f.read()
pipe = Dom(pipe_html)
check("filter (2/4)" in pipe.text.get("job-" + pipe_id, ""),
      "the pipeline's row does not show its stage: %r" % pipe.text.get("job-" + pipe_id))
check("filter (2/4)" in pipe.text.get("detail-fields", ""), "the details do not show the stage")
stages = re.findall(r'<tr data-stage="([^"]*)" data-state="([^"]*)"', pipe_html)
check(stages == [("synthesize", "done"), ("filter", "running"), ("train", "pending"),
                 ("evaluate-0", "pending")], "the stage table: %s" % stages)
wrap = pipe.byid.get("detail-stages-wrap", {})
check("hidden" not in wrap.get("class", ""), "the stage table is hidden")
check("hidden" in done.byid.get("detail-stages-wrap", {}).get("class", ""),
      "a train job shows a stage table")

# Requests the page made for the long job: one URL_REQUEST source per fetch in the net log.
with open(f"{tmp}/netlog.long.json", encoding="utf-8") as f:
    log = json.load(f)
url_request = log["constants"]["logSourceType"]["URL_REQUEST"]
fetches = {}
for ev in log.get("events", []):
    url = (ev.get("params") or {}).get("url", "")
    if "/v1/" in url and ev["source"]["type"] == url_request:
        fetches.setdefault(url.split("//", 1)[1].split("/", 1)[1], set()).add(ev["source"]["id"])
first = f"v1/jobs/{long_id}/metrics?limit=10000"
second = first + "&since=10000"
lists = len(fetches.get("v1/jobs?limit=100", ()))
check(lists >= 3, f"the page refreshed the job list {lists} times in 7 s, want >= 3 (every 2 s)")
check(len(fetches.get(first, ())) == 1, f"{first}: fetched {len(fetches.get(first, ()))} times, want 1")
check(len(fetches.get(second, ())) == 1, f"{second}: fetched {len(fetches.get(second, ()))} times, want 1")
check(len([u for u in fetches if "/metrics" in u]) == 2,
      "unexpected metrics fetches: " + ", ".join(u for u in fetches if "/metrics" in u))
print(f"status page: 4 jobs listed (one pipeline with 4 stages), curves of 37, 5 and 10050 points, {lists} list refreshes")
EOF
echo "status page screenshot: $ARTIFACTS/status_page.png"
