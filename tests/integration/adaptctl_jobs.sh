#!/bin/sh
# adaptctl_jobs: adaptctl's job commands against a real adaptd on a temporary state dir.
# Usage: adaptctl_jobs.sh CASE ADAPTCTL ADAPTD [ADAPT_WORKER TOKENIZER_DIR MPIRUN]
#   cli    adaptd with --require-token, a stand-in mpirun that only sleeps (so a job that takes
#          every slot stays running and the others stay queued): submit YAML and JSON over the
#          Unix socket and TCP, the token from --token-file / $ADAPTD_TOKEN / $ADAPTD_TOKEN_FILE
#          (none → exit 4), list across pages and with --limit / --state, status, --json parsed
#          by python3, a bad field → exit 4 naming it, a bad YAML → exit 1 naming line:column,
#          cancel of a queued job → cancelled, cancel of a running one → watch exits 1,
#          bad ids and options → exit 2, adaptd gone → exit 3
#   train  a tiny Qwen2-VL train job (real adapt-worker under MPIRUN, 1 rank): `submit --watch`
#          to success (exit 0, one line per change), status, logs of rank 0 (whole, --tail,
#          -f on the finished job), the launcher's log, checkpoint of a finished job → exit 4
set -eu
CASE=$1 A=$2 D=$3
T=$(mktemp -d /tmp/adaptctl-jobs-XXXXXX)
DPID=
cleanup() {
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
    # adaptd leaves running jobs running when it stops: end the stand-in workers it started
    [ -f "$T/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done <"$T/pids"
    rm -rf "$T"
}
trap cleanup EXIT
export OMP_NUM_THREADS=1
unset ADAPTD_URL ADAPTD_TOKEN ADAPTD_TOKEN_FILE

. "$(dirname "$0")/tiny_fixture.sh"
# fail, redefined after the fixture's: adaptd's last log lines say why a job went wrong
fail() { echo "FAIL ($CASE): $*" >&2; [ -f "$T/daemon.err" ] && tail -n 20 "$T/daemon.err" >&2; exit 1; }
grep_out() { grep -q -- "$1" "$T/$2" || { cat "$T/out" "$T/err" >&2; fail "$2 lacks '$1'"; }; }
json() { python3 -c "import json, sys; d = json.load(open('$T/out')); print($1)"; }

# start_daemon ARGS...: adaptd on $T/state, a Unix socket and an ephemeral TCP port ($PORT)
start_daemon() {
    "$D" --listen unix:"$T/api.sock" --listen 127.0.0.1:0 --state-dir "$T/state" --data-root "$T" \
        "$@" >"$T/daemon.out" 2>"$T/daemon.err" &
    DPID=$!
    # wait for the whole line, port digits included (the grep of the prefix alone once let an
    # empty PORT through after a restart)
    i=0 PORT=
    while [ -z "$PORT" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || fail "adaptd did not start"
        sleep 0.1
        PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' \
               "$T/daemon.out" 2>/dev/null | head -n 1)
    done
}

case_cli() {
    mkdir -p "$T/model" "$T/corpus" "$T/runs"
    printf '#!/bin/sh\necho $$ >>"%s/pids"\nexec sleep 120\n' "$T" >"$T/mpirun"
    chmod +x "$T/mpirun"
    start_daemon --slots 2 --require-token --mpirun "$T/mpirun" --heartbeat-timeout 600 --kill-grace-ms 2000
    TOK="$T/state/token"
    export ADAPTD_URL="unix:$T/api.sock"

    cat >"$T/big.yaml" <<'YAML'
# takes both slots: the stand-in mpirun keeps it running
name: big
kind: train
ranks: 2
defaults: &d {model_path: model, corpus: corpus, epochs: 1}
YAML
    # an unknown top-level key is the daemon's to refuse: exit 4 naming it
    expect 4 "$A" --token-file "$TOK" submit "$T/big.yaml"
    grep_out 'defaults' err
    cat >"$T/big.yaml" <<'YAML'
name: big
kind: train
ranks: 2
train: &t
  model_path: model
  corpus: corpus
  output_dir: runs/big
  epochs: 1
  global_batch: 8
  lr_llm: 1.5e-3
  freeze_vision: true
YAML
    expect 4 "$A" submit "$T/big.yaml"                      # no token
    grep_out '401' err
    grep_out 'token-file' err
    expect 0 "$A" --token-file "$TOK" submit "$T/big.yaml"
    BIG=$(cat "$T/out")
    expr "$BIG" : '[0-9a-f]\{32\}$' >/dev/null || fail "submit printed '$BIG', not a job id"
    expect 0 "$A" status "$BIG" --json
    [ "$(json 'd["spec"]["train"]["lr_llm"]')" = "0.0015" ] || fail "lr_llm did not arrive as 1.5e-3"
    [ "$(json 'd["spec"]["train"]["freeze_vision"]')" = "True" ] || fail "freeze_vision not a bool"

    # JSON spec over TCP, token from the environment
    cat >"$T/small.json" <<'JSON'
{"name": "small", "kind": "train", "ranks": 1,
 "train": {"model_path": "model", "corpus": "corpus", "output_dir": "runs/small", "epochs": 1}}
JSON
    expect 0 env ADAPTD_TOKEN="$(cat "$TOK")" "$A" --server "http://127.0.0.1:$PORT" submit "$T/small.json" --json
    SMALL=$(json 'd["id"]')
    [ "$(json 'd["state"]')" = queued ] || fail "small is not queued behind big"
    expect 0 env ADAPTD_TOKEN_FILE="$TOK" "$A" submit "$T/small.json"
    SMALL2=$(cat "$T/out")

    # bad specs: the daemon names the field (exit 4); the YAML reader names line:column (exit 1)
    printf 'name: bad\nkind: train\nranks: 1\ntrain:\n  model_path: model\n  corpus: corpus\n  output_dir: o\n  epochs: "one"\n' >"$T/bad.yaml"
    expect 4 "$A" --token-file "$TOK" submit "$T/bad.yaml"
    grep_out 'train.epochs' err
    printf 'name: a\nranks: 1\nname: b\n' >"$T/dup.yaml"
    expect 1 "$A" --token-file "$TOK" submit "$T/dup.yaml"
    grep_out 'dup.yaml:3:1: duplicate key' err
    printf 'name: [a\n' >"$T/broken.yml"
    expect 1 "$A" --token-file "$TOK" submit "$T/broken.yml"
    grep_out 'broken.yml:2:1' err
    printf -- '- just\n- a list\n' >"$T/list.yaml"
    expect 1 "$A" --token-file "$TOK" submit "$T/list.yaml"
    grep_out 'mapping at the top level' err
    expect 1 "$A" --token-file "$TOK" submit "$T/missing.yaml"

    # the big job holds both slots; wait until the daemon has started it
    i=0
    while :; do
        expect 0 "$A" status "$BIG" --json
        st=$(json 'd["state"]')
        [ "$st" = queued ] || break
        i=$((i + 1)); [ $i -lt 100 ] || fail "big job never left queued"
        sleep 0.1
    done
    case $st in starting|running) ;; *) fail "big job is $st, expected starting or running";; esac

    # list: a table, --json, --state, --limit, and paging past the daemon's 100 per page
    expect 0 "$A" list
    grep_out "$BIG" out
    grep_out 'ID  *STATE' out
    n=0
    while [ $n -lt 100 ]; do
        "$A" --token-file "$TOK" submit "$T/small.json" >/dev/null || fail "submit $n"
        n=$((n + 1))
    done
    expect 0 "$A" list --json
    [ "$(json 'len(d["jobs"])')" = 103 ] || fail "list --json: $(json 'len(d["jobs"])') jobs, expected 103"
    [ "$(json 'len(set(j["id"] for j in d["jobs"]))')" = 103 ] || fail "list pages overlap"
    [ "$(json 'd["jobs"][0]["id"]')" = "$BIG" ] || fail "list is not in submission order"
    expect 0 "$A" list --limit 101 --json
    [ "$(json 'len(d["jobs"])')" = 101 ] || fail "--limit 101"
    expect 0 "$A" list --state queued --limit 3
    [ "$(grep -c ' queued ' "$T/out")" = 3 ] || fail "--state queued --limit 3"
    expect 4 "$A" list --state bogus
    grep_out 'state' err

    # status, human
    expect 0 "$A" status "$SMALL"
    grep_out 'state       queued' out
    grep_out "output      $T/runs/small" out

    # cancel: a queued job at once; a running one is stopped and watch then exits 1
    expect 0 "$A" --token-file "$TOK" cancel "$SMALL"
    grep_out "$SMALL cancelled" out
    expect 4 "$A" --token-file "$TOK" cancel "$SMALL"      # already cancelled: 409
    grep_out 'already cancelled' err
    expect 4 "$A" cancel "$SMALL2"                          # no token
    expect 0 "$A" --token-file "$TOK" cancel "$SMALL2" --json
    [ "$(json 'd["state"]')" = cancelled ] || fail "cancel --json"
    # watch rides out an adaptd restart (same state dir and socket; the job keeps running),
    # then ends with exit 1 when the running job is cancelled
    "$A" watch "$BIG" --interval 0.2 >"$T/watch.out" 2>"$T/watch.err" &
    WPID=$!
    sleep 0.5
    kill "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=
    sleep 1
    start_daemon --slots 2 --require-token --mpirun "$T/mpirun" --heartbeat-timeout 600 --kill-grace-ms 2000
    expect 0 "$A" --token-file "$TOK" cancel "$BIG"
    set +e; wait "$WPID"; got=$?; set -e
    cat "$T/watch.out" "$T/watch.err" >"$T/out"
    [ "$got" -eq 1 ] || { cat "$T/out" >&2; fail "watch across a restart then cancel: exit $got, wanted 1"; }
    grep_out 'does not answer; retrying' out
    grep_out "job $BIG cancelled" out
    expect 1 "$A" watch "$BIG" --interval 0.2
    grep_out 'cancelled' out
    expect 1 "$A" watch "$SMALL" --json
    [ "$(json 'd["state"]')" = cancelled ] || fail "watch --json"
    expect 4 "$A" --token-file "$TOK" checkpoint "$BIG"   # not running any more
    expect 4 "$A" logs "$SMALL"                             # never started: no logs
    grep_out 'not started' err

    # usage errors
    expect 2 "$A" status not-an-id
    expect 2 "$A" status
    expect 2 "$A" list --limit 0
    expect 2 "$A" logs "$BIG" --rank two
    expect 2 "$A" --server ftp://x list
    expect 2 "$A" --server "http://127.0.0.1:$PORT" data verify "$T"
    expect 4 "$A" status 0123456789abcdef0123456789abcdef  # unknown: 404

    # adaptd gone: exit 3 on every command
    kill "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=
    expect 3 "$A" list
    grep_out 'cannot connect' err
    expect 3 "$A" --server "http://127.0.0.1:$PORT" status "$BIG"
    expect 3 "$A" --token-file "$TOK" submit "$T/small.json"
}

case_train() {
    W=$(cd "$(dirname "$4")" && pwd)/$(basename "$4") TOKDIR=$5 MPIRUN=$6
    [ -x "$MPIRUN" ] || { echo "SKIP: no mpirun"; exit 77; }
    tiny_fixture_make "$A" "$T" "$TOKDIR" --size 64
    start_daemon --slots 1 --mpirun "$MPIRUN" --worker "$W"
    export ADAPTD_URL="http://127.0.0.1:$PORT"
    cat >"$T/train.yaml" <<'YAML'
name: tiny
kind: train
ranks: 1
train:
  model_path: model
  corpus: corpus
  output_dir: run
  max_steps: 6
  global_batch: 4
  micro_batch_tokens: 256
  max_seq_len: 160
  lr_llm: 0.01
  warmup_ratio: 0.1
  image_min_pixels: 3136
  image_max_pixels: 3136
  checkpoint_every: 3
  keep_last: 1
  seed: 5
YAML
    expect 0 "$A" submit "$T/train.yaml" --watch
    ID=$(head -n 1 "$T/out")
    grep_out 'succeeded  *6/6' out
    [ "$(grep -c 'queued\|starting\|running\|succeeded' "$T/out")" -ge 2 ] || fail "watch printed one line only"
    expect 0 "$A" status "$ID"
    grep_out 'state       succeeded' out
    grep_out 'step 6 / 6' out
    [ -f "$T/run/model.safetensors" ] || fail "no model.safetensors in the output dir"
    expect 0 "$A" logs "$ID" --rank 0
    [ "$(grep -c '"step":' "$T/out")" -eq 6 ] || fail "rank 0's log lacks its 6 progress lines"
    expect 0 "$A" logs "$ID" --tail 1
    [ "$(wc -l <"$T/out")" -eq 1 ] || fail "--tail 1 gave $(wc -l <"$T/out") lines"
    expect 0 "$A" logs "$ID" -f --interval 0.1                # finished: prints all and ends
    [ "$(grep -c '"step":' "$T/out")" -eq 6 ] || fail "logs -f of a finished job"
    # -f on a job just submitted: waits for it to start, then follows the growing log by offset
    # until the job ends — every progress line exactly once
    sed 's/output_dir: run/output_dir: run2/' "$T/train.yaml" >"$T/train2.yaml"
    expect 0 "$A" submit "$T/train2.yaml"
    ID2=$(cat "$T/out")
    expect 0 "$A" logs "$ID2" -f --interval 0.2
    for k in 1 2 3 4 5 6; do
        [ "$(grep -c "\"step\": $k," "$T/out")" -eq 1 ] || fail "logs -f: step $k not exactly once"
    done
    expect 0 "$A" status "$ID2" --json
    [ "$(json 'd["state"]')" = succeeded ] || fail "second job: $(json 'd["state"]')"
    expect 0 "$A" logs "$ID" --rank launcher --json
    json 'd["rank"]' >/dev/null
    expect 4 "$A" logs "$ID" --rank 3
    expect 4 "$A" checkpoint "$ID"
    expect 0 "$A" watch "$ID"                                 # succeeded: exit 0 at once
    # on a terminal (script(1) gives it one): the redrawn line with its bar, then a newline
    if command -v script >/dev/null; then
        script -qec "'$A' watch $ID" /dev/null >"$T/tty" </dev/null ||
            fail "watch on a terminal: exit $?"
        grep -q "$(printf '\r')succeeded  *6/6  *\[#\{10,\}\] 100%  loss [0-9.]*  [0-9]* tok/s  ETA 0:00" "$T/tty" ||
            { cat -A "$T/tty" >&2; fail "watch on a terminal: no progress bar line"; }
    fi
}

case "$CASE" in
    cli)   case_cli ;;
    train) case_train "$@" ;;
    *)     echo "unknown case $CASE" >&2; exit 2 ;;
esac
echo "adaptctl_jobs $CASE: ok"
