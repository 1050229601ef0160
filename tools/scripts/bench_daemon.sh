#!/usr/bin/env bash
# bench_daemon.sh: adaptd's HTTP API under load, against the daemon issue's bar: GET
# /v1/jobs/{id} and GET /metrics at >= 10,000 requests/s with p99 < 20 ms (wrk, 2 threads,
# 64 connections), while a training job run by adaptd slows down by less than 5%.
#
# Phase 1 (no training): a state dir seeded with finished jobs (tests/seed_jobs), adaptd alone on
# one CPU and wrk on another. Phase 2 (training): adaptd's scheduler runs a 1-rank tiny train
# job (adaptctl model init + a generated corpus); its step time (the step_seconds of its metrics
# series) is compared between quiet windows and the wrk windows, and with a control window where
# the client CPU is kept busy without any HTTP. On a 2-CPU machine the worker gets CPU 0 and
# adaptd and wrk share CPU 1; the pinning is printed with the results.
#
# Usage: tools/scripts/bench_daemon.sh [--build DIR] [--duration SECONDS] [--no-train]
#   --build DIR     a release build (default build-release; configured with
#                   --buildtype=release -Dcuda=disabled and built when adaptd is missing)
#   --duration S    seconds per wrk run and per quiet window (default 30)
#   --no-train      phase 1 only
#   ADAPT_TOKENIZER a tokenizer dir for the train job (default ../shared/fixtures/tokenizers/qwen3)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

build=build-release duration=30 train=1
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --no-train) train=0; shift ;;
    *) echo "usage: $0 [--build DIR] [--duration SECONDS] [--no-train]" >&2; exit 2 ;;
  esac
done
for tool in wrk taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "bench_daemon: $tool is missing (tools/scripts/setup.sh installs it)" >&2; exit 1; }
done
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dcuda=disabled >/dev/null
fi
ninja -C "$build" -j2 daemon/adaptd tests/seed_jobs tools/adaptctl worker/adapt-worker >/dev/null

ncpu=$(nproc)
server_cpu=0 client_cpu=$((ncpu > 1 ? 1 : 0))
tmp=$(mktemp -d "${TMPDIR:-/tmp}/adaptd-bench.XXXXXX")
daemon_pid= train_id= base=
pids=()
# adaptd leaves running jobs running when it stops (the next one adopts them): cancel the train
# job first, and kill what is left of its processes by pid.
cleanup() {
  if [ -n "$train_id" ]; then
    curl -sS -o /dev/null -X POST "$base/v1/jobs/$train_id/cancel" 2>/dev/null || true
    for _ in $(seq 50); do
      curl -sS "$base/v1/jobs/$train_id" 2>/dev/null | grep -q '"state":"\(cancelled\|failed\|succeeded\)"' && break
      sleep 0.2
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  fi
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

echo "== adaptd benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p'), $ncpu CPUs, $build"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

job_id=$("$build/tests/seed_jobs" "$tmp/state" --steps 1000 --name bench-finished)
"$build/tests/seed_jobs" "$tmp/state" --steps 50 --state failed --error "bench: a failed job" >/dev/null

extra=()
if ((train)) && "$build/daemon/adaptd" --help 2>&1 | grep -q -- '--worker'; then
  extra=(--worker "$build/worker/adapt-worker" --mpirun "$(command -v mpirun)" --slots 1)
elif ((train)); then
  echo "   this adaptd has no --worker option (no scheduler yet): training phase skipped"
  train=0
fi
OMP_NUM_THREADS=1 taskset -c "$server_cpu" "$build/daemon/adaptd" --listen 127.0.0.1:0 \
  --state-dir "$tmp/state" --data-root "$tmp" "${extra[@]}" >"$tmp/adaptd.out" 2>"$tmp/adaptd.err" &
daemon_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's|^adaptd: listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/adaptd.out")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "adaptd did not start: $(cat "$tmp/adaptd.err")" >&2; exit 1; }
base=http://127.0.0.1:$port

# load LABEL PATH: one wrk run pinned to the client CPU; prints one summary line.
load() {
  local out="$tmp/wrk.$(printf '%s' "$1" | tr -c 'a-zA-Z0-9' _)" rps p99 errs reqs t0 t1
  t0=$(cpu_ticks "$daemon_pid")
  taskset -c "$client_cpu" wrk -t2 -c64 -d"${duration}s" --latency "$base$2" >"$out" 2>&1
  t1=$(cpu_ticks "$daemon_pid")
  rps=$(sed -n 's/^Requests\/sec: *//p' "$out")
  p99=$(awk '$1 == "99%" { print $2 }' "$out")
  reqs=$(awk '/requests in/ { print $1 }' "$out")
  errs=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p; s/^ *Socket errors: *//p' "$out" | tr '\n' ' ')
  # adaptd's own CPU time per request (user + system) is what other tenants of a shared machine
  # do not change much; 1 s divided by it is what one whole core would serve.
  printf '   %-26s %9s req/s   p99 %-9s adaptd CPU %s us/request%s\n' "$1" "$rps" "$p99" \
    "$(awk -v t=$((t1 - t0)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')" \
    "${errs:+   errors: $errs}"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "== phase 1: no training; adaptd on CPU $server_cpu, wrk -t2 -c64 -d${duration}s on CPU $client_cpu"
load "GET /v1/jobs/{id}" "/v1/jobs/$job_id"
load "GET /metrics" "/metrics"

if ((train)); then
  tok=${ADAPT_TOKENIZER:-$root/../shared/fixtures/tokenizers/qwen3}
  cat >"$tmp/config.json" <<'JSON'
{"model_type": "qwen2_vl", "image_token_id": 151655, "video_token_id": 151656,
 "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": true,
 "bos_token_id": 151643, "eos_token_id": 151645,
 "text_config": {"vocab_size": 151936, "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}},
 "vision_config": {"depth": 2, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 2, "hidden_size": 64}}
JSON
  ctl="$build/tools/adaptctl"
  "$ctl" model init --config "$tmp/config.json" --out "$tmp/model" --seed 1 --tokenizer "$tok" >/dev/null
  "$ctl" data generate --out "$tmp/gen" --count 200 --seed 3 --size 64 --jobs 2 >/dev/null
  "$ctl" data import --out "$tmp/corpus" --jobs 2 "$tmp/gen/captions.jsonl" >/dev/null
  cat >"$tmp/job.json" <<JSON
{"name": "bench-train", "kind": "train", "ranks": 1, "max_restarts": 0,
 "train": {"model_path": "$tmp/model", "corpus": "$tmp/corpus", "output_dir": "$tmp/run",
           "max_steps": 1000000, "global_batch": 4, "micro_batch_tokens": 256, "max_seq_len": 160,
           "lr_llm": 0.005, "warmup_ratio": 0.01, "schedule": "constant",
           "image_min_pixels": 3136, "image_max_pixels": 3136, "checkpoint_every": 1000000, "seed": 5}}
JSON
  train_id=$(curl -sS -f -H 'Content-Type: application/json' --data-binary @"$tmp/job.json" "$base/v1/jobs" |
             python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  step_of() { curl -sS "$base/v1/jobs/$train_id" | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(j["state"], (j["progress"] or {}).get("step", 0))'; }
  for _ in $(seq 600); do
    read -r state step < <(step_of)
    [ "$state" = running ] && [ "$step" -ge 5 ] && break
    case $state in failed|cancelled|succeeded) echo "train job $train_id ended $state:"; curl -sS "$base/v1/jobs/$train_id"; echo; exit 1 ;; esac
    sleep 0.2
  done
  # The worker (mpirun and its rank) gets CPU 0; adaptd moves next to wrk on the client CPU.
  mapfile -t pids < <(pgrep -f "jobs/$train_id/" || true)
  for p in "${pids[@]}"; do taskset -a -p -c "$server_cpu" "$p" >/dev/null || true; done
  taskset -a -p -c "$client_cpu" "$daemon_pid" >/dev/null
  echo "== phase 2: train job $train_id (1 rank, ${#pids[@]} processes) on CPU $server_cpu;" \
       "adaptd and wrk on CPU $client_cpu"
  mark() { date +%s%3N >>"$tmp/windows"; }
  : >"$tmp/windows"
  # quiet and loaded windows alternate, and each loaded one is compared with the quiet ones on
  # either side of it: other tenants of a shared machine drift over minutes
  # The control window keeps the client CPU as busy as wrk does, with two spinning shells and no
  # HTTP: on a shared machine a saturated CPU pushes other tenants' work onto the trainer's,
  # which slows it whatever the load is.
  spin() { taskset -c "$client_cpu" timeout "$duration" sh -c 'while :; do :; done' || true; }
  mark; sleep "$duration"; mark
  mark; load "GET /v1/jobs/{id} +train" "/v1/jobs/$job_id"; mark
  mark; sleep "$duration"; mark
  mark; load "GET /metrics +train" "/metrics"; mark
  mark; sleep "$duration"; mark
  mark; spin & s1=$!; spin & s2=$!; wait "$s1" "$s2"; mark
  mark; sleep "$duration"; mark
  python3 - "$base/v1/jobs/$train_id/metrics" "$tmp/windows" <<'EOF'
import json, statistics, sys, urllib.request
points, since = [], None
while True:   # every page of the series
    url = sys.argv[1] + "?limit=10000" + ("" if since is None else "&since=%d" % since)
    doc = json.load(urllib.request.urlopen(url))
    points += doc["points"]
    since = doc["next_since"]
    if since is None:
        break
t = [int(x) for x in open(sys.argv[2]).read().split()]
names = ["quiet 1", "under GET /v1/jobs/{id}", "quiet 2", "under GET /metrics", "quiet 3",
         "control: client CPU busy", "quiet 4"]
med = []
for i, name in enumerate(names):
    lo, hi = t[2 * i], t[2 * i + 1]
    s = [p["step_seconds"] for p in points if lo <= p["unix_time_ms"] <= hi and p["step_seconds"] > 0]
    med.append(statistics.median(s) if s else float("nan"))
    print("   step time %-24s median %.4f s over %d steps" % (name, med[-1], len(s)))
for i in (1, 3, 5):
    quiet = (med[i - 1] + med[i + 1]) / 2
    print("   training slowed %-24s %+.1f%% (against the quiet windows around it)"
          % (names[i], 100 * (med[i] / quiet - 1)))
EOF
fi
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
