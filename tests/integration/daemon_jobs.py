"""daemon_jobs: adaptd running real 2-rank train jobs end to end (Python standard library only).

Each case starts adaptd on a temporary state dir (--slots 2, the build's adapt-worker and
mpirun), with a tiny Qwen2-VL from `adaptctl model init` and a generated corpus:
  run        a 2-rank job runs to succeeded with every step in its metrics series while a
             second 2-rank job waits queued (slots) and then runs; logs (rank, tail, offset,
             X-Log-Offset, 400/404) and checkpoint (202 running and a checkpoint written,
             409 queued or finished) endpoints
  cancel     a queued job is cancelled at once (200); a running one is stopped (202) and reads
             cancelled with no process of it left
  kill_rank  kill -9 of one rank: attempt 1 fails, attempt 2 starts with --resume from the
             newest complete checkpoint (its first step follows a checkpoint) and succeeds
  daemon     kill -9 of adaptd mid-job, restart on the same state dir: the job completes
             (re-adopted or retried) and never runs two attempts at once
  heartbeat  kill -STOP of the job's processes: killed after --heartbeat-timeout, retried,
             succeeded
  preempt    SIGTERM to the ranks from outside (a time limit's warning): they checkpoint and
             stop, the job is preempted and resumes right after that step in attempt 2, which
             max_restarts 0 does not forbid
Usage: daemon_jobs.py CASE ADAPTD ADAPTCTL ADAPT_WORKER TOKENIZER_DIR MPIRUN
"""
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

from daemon_fixture import (CASE, FAILURES, Daemon, check, make_fixture, wait_for)


def spec(tmp, name, steps, every, max_restarts=0):
    return {"name": name, "kind": "train", "ranks": 2, "max_restarts": max_restarts,
            "train": {"model_path": os.path.join(tmp, "model"),
                      "corpus": os.path.join(tmp, "corpus"),
                      "output_dir": os.path.join(tmp, "out-" + name), "max_steps": steps,
                      "global_batch": 4, "micro_batch_tokens": 256, "max_seq_len": 160,
                      "lr_llm": 0.01, "warmup_ratio": 0.1, "schedule": "cosine",
                      "image_min_pixels": 3136, "image_max_pixels": 3136,
                      "checkpoint_every": every, "keep_last": 2, "seed": 5}}


def job_processes(jid):
    """Live (not zombie) processes whose command line names this job's folder (mpirun and
    every rank), or any path holding jid."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        key = (jid if jid.startswith("/") else "jobs/%s/" % jid).encode()
        if state not in ("Z", "X") and any(key in a for a in argv):
            found.append((int(pid), argv[0].decode(errors="replace")))
    return found
def wait_state(d, jid, states, timeout, watch=None):
    last = {}

    def pred():
        last["doc"] = d.job(jid)
        if last["doc"]["state"] in ("succeeded", "failed", "cancelled"):
            return last["doc"]   # final: no use waiting longer
        return last["doc"] if last["doc"]["state"] in states else None
    doc = wait_for("job %s to be %s" % (jid, "/".join(states)), timeout, pred, watch=watch)
    if doc is None or doc["state"] not in states:
        check(False, "job %s is %s, wanted %s" % (jid, last["doc"]["state"], "/".join(states)))
        print("last:", json.dumps(last.get("doc"))[:800], file=sys.stderr)
        for q in ("rank=launcher&tail=30", "rank=0&tail=30"):
            print("logs?%s:\n" % q, log_text(d, jid, q)[2], file=sys.stderr)
        raise SystemExit(1)
    return doc


def wait_step(d, jid, step, timeout):
    return wait_for("job %s to pass step %d" % (jid, step), timeout,
                    lambda: (lambda j: j if j["progress"] and j["progress"]["step"] >= step else None)(d.job(jid)))


def metric_steps(d, jid):
    status, _, doc = d.request("GET", "/v1/jobs/%s/metrics" % jid)
    check(status == 200, "metrics: %s" % status)
    return [p["step"] for p in doc["points"]]


def log_text(d, jid, query):
    status, headers, body = d.request("GET", "/v1/jobs/%s/logs?%s" % (jid, query))
    return status, headers, body.decode() if isinstance(body, bytes) else body


def steps_in(text):
    return [int(m) for m in re.findall(r'"step": (\d+)', text)]


# ---- cases -----------------------------------------------------------------------------------

def case_run(tmp):
    d = Daemon(tmp, "adaptd-1.log")
    a = d.submit(spec(tmp, "a", 10, 0))   # no periodic checkpoints: only asked-for and final
    b = d.submit(spec(tmp, "b", 4, 0))
    check(d.job(b)["state"] == "queued", "job b waits while a holds both slots")
    status, _, _ = d.request("POST", "/v1/jobs/%s/checkpoint" % b)
    check(status == 409, "checkpoint of a queued job: 409, got %s" % status)
    wait_state(d, a, ("running",), 60)
    status, _, prom = d.request("GET", "/metrics")
    prom = prom.decode() if isinstance(prom, bytes) else prom
    check("adaptd_slots 2\n" in prom and "adaptd_slots_used 2\n" in prom, "/metrics: 2 of 2 slots used")
    code = wait_for("checkpoint request accepted", 20,
                    lambda: d.request("POST", "/v1/jobs/%s/checkpoint" % a)[0] == 202)
    check(code, "checkpoint of a running job with its rank 0 connected: 202")
    ja = wait_state(d, a, ("succeeded", "failed"), 90)
    check(ja["state"] == "succeeded", "job a succeeded: %s" % ja["error"])
    check(ja["attempt"] == 1, "one attempt: %s" % ja["attempt"])
    check(metric_steps(d, a) == list(range(1, 11)), "metrics of a: steps 1..10: %s" % metric_steps(d, a))
    check(ja["last_checkpoint"].endswith("step-00000010"), "last checkpoint recorded: %r" % ja["last_checkpoint"])
    ckpts = sorted(os.listdir(os.path.join(tmp, "out-a", "checkpoints")))
    check(any(c.startswith("step-") and int(c[5:]) < 10 for c in ckpts),
          "the checkpoint asked for through the API was written: %s" % ckpts)
    jb = wait_state(d, b, ("succeeded", "failed"), 90)
    check(jb["state"] == "succeeded", "job b succeeded: %s" % jb["error"])
    check(jb["started_ms"] >= ja["finished_ms"], "b started after a finished (2 slots, 2 ranks each)")
    check(not job_processes(a) and not job_processes(b), "no process of a or b left")

    # rank 0 writes its stdout and stderr (a JSON progress line per step) to rank-0.log
    status, headers, text = log_text(d, a, "rank=0")
    check(status == 200 and steps_in(text) and steps_in(text)[-1] == 10, "rank 0's log reaches step 10")
    size = int(headers.get("X-Log-Offset", "-1"))
    check(size == len(text.encode()), "X-Log-Offset %d = bytes sent %d" % (size, len(text.encode())))
    status, headers, tail = log_text(d, a, "rank=0&tail=1")
    check(status == 200 and tail.count("\n") == 1 and text.endswith(tail),
          "tail=1 is the last line: %r" % tail[:200])
    check(int(headers.get("X-Log-Offset", "-1")) == size, "tail's X-Log-Offset is the size")
    status, headers, tail3 = log_text(d, a, "tail=3")
    check(status == 200 and tail3.count("\n") == 3 and text.endswith(tail3), "tail=3 of rank 0 (the default)")
    status, headers, rest = log_text(d, a, "rank=0&offset=10")
    check(status == 200 and rest == text.encode()[10:].decode(errors="replace"), "offset=10")
    check(int(headers.get("X-Log-Offset", "-1")) == size, "offset's X-Log-Offset is the size")
    status, headers, rest = log_text(d, a, "rank=0&offset=%d" % size)
    check(status == 200 and rest == "" and int(headers["X-Log-Offset"]) == size, "offset=end: empty")
    for q in ("rank=1", "rank=launcher", "rank=0&attempt=1"):
        check(log_text(d, a, q)[0] == 200, "logs?%s: 200" % q)
    for q, want in (("rank=0&offset=%d" % (size + 1), 400), ("rank=2", 404),
                    ("rank=x", 400), ("rank=launcher&attempt=2", 404), ("tail=1&offset=0", 400),
                    ("rank=0&tail=-1", 400), ("attempt=0", 404)):
        check(log_text(d, a, q)[0] == want, "logs?%s: %d" % (q, want))
    check(d.request("GET", "/v1/jobs/%s/logs" % ("0" * 32))[0] == 404, "logs of an unknown job: 404")
    check(d.request("POST", "/v1/jobs/%s/checkpoint" % a)[0] == 409, "checkpoint of a finished job: 409")
    d.stop()


def case_cancel(tmp):
    d = Daemon(tmp, "adaptd-1.log")
    a = d.submit(spec(tmp, "a", 400, 0))
    b = d.submit(spec(tmp, "b", 4, 0))
    status, _, doc = d.request("POST", "/v1/jobs/%s/cancel" % b)
    check(status == 200 and doc["state"] == "cancelled", "queued job cancelled at once: %s" % status)
    wait_state(d, a, ("running",), 60)
    wait_step(d, a, 1, 60)
    check(job_processes(a), "job a has processes while running")
    status, _, doc = d.request("POST", "/v1/jobs/%s/cancel" % a)
    check(status == 202 and doc["state"] == "running", "running job: 202, still running: %s" % status)
    ja = wait_state(d, a, ("cancelled", "failed", "succeeded"), 30)
    check(ja["state"] == "cancelled", "cancelled: %s %s" % (ja["state"], ja["error"]))
    check(not job_processes(a), "no process of the cancelled job left: %s" % job_processes(a))
    check(d.request("POST", "/v1/jobs/%s/cancel" % a)[0] == 409, "cancel of a cancelled job: 409")
    d.stop()


def resumed_from_checkpoint(d, jid, every, steps):
    status, _, text = log_text(d, jid, "rank=0&attempt=2")
    got = steps_in(text)
    check(status == 200 and got, "attempt 2's log has progress lines")
    if got:
        first = got[0]
        check(first > 1 and (first - 1) % every == 0,
              "attempt 2 resumed after a checkpoint (first step %d, checkpoint every %d)" % (first, every))
        check(got[-1] == steps, "attempt 2 ran to step %d: %s" % (steps, got[-1]))
    check(metric_steps(d, jid) == list(range(1, steps + 1)), "metrics: every step 1..%d" % steps)


def case_kill_rank(tmp):
    d = Daemon(tmp, "adaptd-1.log")
    a = d.submit(spec(tmp, "a", 16, 3, max_restarts=1))
    wait_for("a complete checkpoint", 90, lambda: d.job(a)["last_checkpoint"])
    ranks = [p for p, exe in job_processes(a) if os.path.basename(exe) == "adapt-worker"]
    check(len(ranks) == 2, "two ranks found: %s" % job_processes(a))
    os.kill(ranks[-1], signal.SIGKILL)
    wait_for("attempt 2", 30, lambda: d.job(a)["attempt"] == 2)
    ja = wait_state(d, a, ("succeeded", "failed"), 90)
    check(ja["state"] == "succeeded", "succeeded after a retry: %s" % ja["error"])
    check("attempt 1 of 2 failed" in ja["error"], "the retry is on record: %r" % ja["error"])
    resumed_from_checkpoint(d, a, 3, 16)
    log = open(d.log).read()
    check(re.search(r"attempt 2 started: .*--resume", log), "attempt 2 ran with --resume")
    d.stop()


def case_daemon(tmp):
    d = Daemon(tmp, "adaptd-1.log")
    a = d.submit(spec(tmp, "a", 20, 4, max_restarts=2))
    wait_step(d, a, 3, 90)
    d.stop(signal.SIGKILL)
    most = {"n": 0}
    check(job_processes(a), "the job runs on after adaptd's kill -9")

    def watch():
        # mpirun (orterun) leads each attempt: more than one at a time is two attempts
        n = sum(1 for _, exe in job_processes(a) if os.path.basename(exe) != "adapt-worker")
        most["n"] = max(most["n"], n)
    watch()
    time.sleep(1)
    watch()
    d2 = Daemon(tmp, "adaptd-2.log")
    ja = wait_state(d2, a, ("succeeded", "failed"), 120, watch=watch)
    check(ja["state"] == "succeeded", "completed after adaptd's kill -9: %s" % ja["error"])
    check(most["n"] <= 1, "never two attempts at once (%d mpirun seen)" % most["n"])
    steps = metric_steps(d2, a)
    check(steps and steps[-1] == 20, "metrics reach step 20: %s" % steps[-3:])
    log = open(d2.log).read()
    check("adopted" in log or "attempt 2 started" in log, "re-adopted or retried:\n" + log[-800:])
    print("after the restart the job was %s; %d attempt(s)" %
          ("adopted" if "adopted" in log else "retried", ja["attempt"]))
    check(not job_processes(a), "no process of the job left")
    d2.stop()


def case_heartbeat(tmp):
    d = Daemon(tmp, "adaptd-1.log", ("--heartbeat-timeout", "4"))
    a = d.submit(spec(tmp, "a", 12, 3, max_restarts=1))
    wait_step(d, a, 4, 90)
    procs = job_processes(a)
    for pid, _ in procs:
        os.kill(pid, signal.SIGSTOP)
    wait_for("attempt 2", 30, lambda: d.job(a)["attempt"] == 2)
    check(not any(p in [q for q, _ in job_processes(a)] for p, _ in procs),
          "the stopped attempt's processes were killed")
    ja = wait_state(d, a, ("succeeded", "failed"), 90)
    check(ja["state"] == "succeeded", "succeeded after the heartbeat retry: %s" % ja["error"])
    check("heartbeat" in ja["error"], "the error says heartbeat: %r" % ja["error"])
    resumed_from_checkpoint(d, a, 3, 12)
    d.stop()


def case_preempt(tmp):
    d = Daemon(tmp, "adaptd-1.log")
    a = d.submit(spec(tmp, "a", 10, 0, max_restarts=0))
    wait_step(d, a, 2, 90)
    for pid, exe in job_processes(a):
        if os.path.basename(exe) == "adapt-worker":
            os.kill(pid, signal.SIGTERM)   # as Slurm's time-limit warning would
    wait_for("attempt 2", 60, lambda: d.job(a)["attempt"] == 2)
    ja = wait_state(d, a, ("succeeded", "failed"), 90)
    check(ja["state"] == "succeeded", "succeeded after a preemption with max_restarts 0: %s" % ja["error"])
    check("preempted" in ja["error"], "the preemption is on record: %r" % ja["error"])
    status, _, text = log_text(d, a, "rank=0&attempt=2")
    first = steps_in(text)[:1]
    stopped_at = steps_in(log_text(d, a, "rank=0&attempt=1")[2])[-1:]
    check(first and stopped_at and first[0] == stopped_at[0] + 1,
          "attempt 2 resumed right after the step attempt 1 stopped at: %s, %s" % (stopped_at, first))
    check(metric_steps(d, a) == list(range(1, 11)), "metrics: every step 1..10")
    d.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="adapt-jobs-")
    try:
        make_fixture(tmp)
        {"run": case_run, "cancel": case_cancel, "kill_rank": case_kill_rank,
         "daemon": case_daemon, "heartbeat": case_heartbeat, "preempt": case_preempt}[CASE](tmp)
    finally:
        if FAILURES:
            for log in sorted(f for f in os.listdir(tmp) if f.startswith("adaptd-")):
                print("---- %s (last 3000 bytes)" % log, file=sys.stderr)
                print(open(os.path.join(tmp, log)).read()[-3000:], file=sys.stderr)
        for pid, _ in job_processes(tmp):   # a failed case may leave a job running
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    print("daemon_jobs %s: %s" % (CASE, "FAILED (%d)" % len(FAILURES) if FAILURES else "ok"))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
