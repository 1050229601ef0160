"""pipeline_daemon: the paper's generation jobs run by adaptd with its work queue (issue 8 item 5;
Python standard library only).

adaptd on a temporary state dir (--slots 2, the build's adapt-worker and mpirun), a tiny random
Qwen2-VL from `adaptctl model init`, the generated sample corpus imported in shards of 2:
  queue_kill  a 2-rank synthesize job whose shards the ranks take from the daemon's queue; once
              some are done, kill -9 of rank 1: attempt 1 fails, attempt 2 redoes only the
              unfinished shards, the job succeeds; in the daemon's shards table every shard is
              done exactly once (done_count 1), some by attempt 1 and the rest by attempt 2, both
              ranks took shards; no shard was generated twice (the ranks' logs); GET
              /v1/jobs/{id} shows the shard counts; the overlay equals a 1-rank run of
              adapt-worker outside the daemon, byte for byte
  queue_daemon  the same job with kill -9 of adaptd instead, once some shards are done, and a
              restart on the same state dir: the ranks reconnect and ask again, the job
              completes in its first attempt (re-adopted), every shard done exactly once
  pipeline    a pipeline job (synthesize → filter → train → evaluate, 2 ranks) end to end
              through the daemon: each stage runs as an attempt of the one job with its own
              spec file, GET /v1/jobs/{id} shows the stage running and then every stage done in
              order with its shard counts, the job succeeds with attempt = 4, its metrics
              series is the train stage's loss curve alone, the outputs of
              every stage are there (overlays, the trained model, the scores); then kill -9 of
              adaptd and a restart: the finished job stays succeeded and no stage reruns.
              The job is submitted with POST /v1/jobs, which checks every stage (the train
              stage by proto/train_rules) and stores the normalized spec the stages run from.
  resume      the same pipeline resumed stage by stage: kill -9 of a rank in the train stage →
              only that stage is retried; kill -9 of adaptd in the evaluate stage and a restart →
              the job completes; synthesize and filter ran once each (one attempt, every shard
              done once)
Usage: pipeline_daemon.py CASE ADAPTD ADAPTCTL ADAPT_WORKER TOKENIZER_DIR MPIRUN
"""
import collections
import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from daemon_fixture import (CASE, FAILURES, WORKER, Daemon, check, make_fixture, wait_for)


def wait_final(d, jid, timeout):
    doc = wait_for("job %s to finish" % jid, timeout,
                   lambda: (lambda j: j if j["state"] in ("succeeded", "failed", "cancelled")
                            else None)(d.job(jid)), step=0.3)
    if doc is None:
        print(open(d.log).read()[-3000:], file=sys.stderr)
        raise SystemExit(1)
    return doc


def rank_pids(jid):
    """{rank: pid} of the live adapt-worker processes of job jid (ADAPTD_JOB_ID in their
    environment, the rank from Open MPI's)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state in ("Z", "X") or os.path.basename(argv[0]) != b"adapt-worker":
            continue
        if env.get(b"ADAPTD_JOB_ID") == jid.encode() and b"OMPI_COMM_WORLD_RANK" in env:
            found[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
    return found


def shard_rows(state_dir, jid):
    db = sqlite3.connect("file:%s/adaptd.db?mode=ro" % state_dir, uri=True, timeout=10)
    try:
        return db.execute("SELECT shard, state, rank, attempt, output, records, done_count "
                          "FROM shards WHERE job_id = ? AND stage = 0 ORDER BY shard",
                          (jid,)).fetchall()
    finally:
        db.close()


def overlay_files(root):
    """Relative path → bytes of every shard file of an overlay (not its manifest or report)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n == "manifest.pb" or n.endswith(".json") or n.endswith(".tmp"):
                continue
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def synth_body(tmp, out, ranks, max_restarts):
    return {"name": "syn", "kind": "synthesize", "ranks": ranks, "max_restarts": max_restarts,
            "synthesize": {"model_path": os.path.join(tmp, "model"),
                           "corpus": os.path.join(tmp, "corpus"), "output_dir": out,
                           "max_new_tokens": 24, "batch_size": 2}}


def case_queue_kill(tmp):
    n_records, shard_size = 24, 2
    n_shards = n_records // shard_size
    make_fixture(tmp, n_records, shard_size)
    d = Daemon(tmp)
    out = os.path.join(tmp, "syn")
    jid = d.submit(synth_body(tmp, out, 2, 2))
    # some shards done, not all: then rank 1 dies
    rows = wait_for("two shards done", 60, lambda: (lambda r: r if sum(
        1 for x in r if x[1] == "done") >= 2 else None)(shard_rows(d.state, jid)), step=0.05)
    pids = rank_pids(jid)
    check(sorted(pids) == [0, 1], "both ranks found: %s" % pids)
    done_before = sum(1 for x in shard_rows(d.state, jid) if x[1] == "done")
    if 1 in pids:
        os.kill(pids[1], signal.SIGKILL)
    check(done_before < n_shards, "the kill came mid-job (%d of %d shards done)"
          % (done_before, n_shards))
    doc = wait_final(d, jid, 90)
    check(doc["state"] == "succeeded", "succeeded: %s %s" % (doc["state"], doc["error"]))
    check(doc["attempt"] == 2, "a second attempt finished it: attempt %s" % doc["attempt"])
    rows = shard_rows(d.state, jid)
    check(len(rows) == n_shards, "%d shards in the table: %d" % (n_shards, len(rows)))
    check(all(r[1] == "done" for r in rows), "every shard done: %s" % rows)
    check(all(r[6] == 1 for r in rows), "every shard done exactly once: %s"
          % [(r[0], r[6]) for r in rows])
    attempts = collections.Counter(r[3] for r in rows)
    check(attempts[1] >= 2 and attempts[2] >= 1 and set(attempts) == {1, 2},
          "shards done by attempt 1 kept, the rest by attempt 2: %s" % dict(attempts))
    check({r[2] for r in rows} == {0, 1}, "both ranks took shards: %s" % [r[2] for r in rows])
    check(all(r[5] == shard_size and os.path.isfile(r[4]) and r[4].startswith(out) for r in rows),
          "each row names its output shard and record count: %s" % rows[:2])
    shards = doc.get("shards") or {}
    check(shards.get("total") == n_shards and shards.get("done") == n_shards and
          shards.get("records") == n_records, "GET /v1/jobs/{id} shards: %s" % shards)
    # no shard generated twice: a shard generated by attempt 1 is skipped by attempt 2 at most
    generated = collections.Counter()
    logs = glob.glob(os.path.join(d.state, "jobs", jid, "logs", "attempt-*", "rank-*.log"))
    for path in logs:
        for line in open(path, errors="replace"):
            if line.startswith("{") and '"kind": "synthesize"' in line and '"shard"' in line:
                rec = json.loads(line)
                if not rec["skipped"]:
                    generated[rec["shard"]] += 1
    check(all(v == 1 for v in generated.values()) and len(generated) >= n_shards - 2,
          "each shard generated at most once across attempts: %s" % dict(generated))
    d.stop()
    # the same job outside the daemon, 1 rank, static assignment: the same bytes
    ref = os.path.join(tmp, "syn-ref")
    with open(os.path.join(tmp, "ref.json"), "w") as f:
        json.dump(synth_body(tmp, ref, 1, 0), f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    subprocess.run([WORKER, "synthesize", "--spec", os.path.join(tmp, "ref.json")], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    a, b = overlay_files(out), overlay_files(ref)
    check(len(a) == n_shards and a == b, "the queued overlay equals a 1-rank run (%d vs %d files, "
          "differing: %s)" % (len(a), len(b), [k for k in a if a.get(k) != b.get(k)][:3]))
    check(os.path.isfile(os.path.join(out, "manifest.pb")), "the overlay's manifest is written")


def case_queue_daemon(tmp):
    n_records, shard_size = 24, 2
    n_shards = n_records // shard_size
    make_fixture(tmp, n_records, shard_size)
    d = Daemon(tmp)
    out = os.path.join(tmp, "syn")
    jid = d.submit(synth_body(tmp, out, 2, 2))
    wait_for("two shards done", 60, lambda: sum(1 for x in shard_rows(d.state, jid)
                                                if x[1] == "done") >= 2, step=0.05)
    d.proc.kill()
    d.proc.wait()
    done_before = sum(1 for x in shard_rows(d.state, jid) if x[1] == "done")
    check(done_before < n_shards, "the kill came mid-job (%d of %d)" % (done_before, n_shards))
    time.sleep(1.0)         # the ranks meet a dead link and retry meanwhile
    d = Daemon(tmp)
    doc = wait_final(d, jid, 90)
    check(doc["state"] == "succeeded", "succeeded: %s %s" % (doc["state"], doc["error"]))
    check(doc["attempt"] == 1, "the first attempt, re-adopted, finished it: %s" % doc["attempt"])
    rows = shard_rows(d.state, jid)
    check(len(rows) == n_shards and all(r[1] == "done" and r[6] == 1 for r in rows),
          "every shard done exactly once: %s" % [(r[0], r[1], r[6]) for r in rows])
    check(len(overlay_files(out)) == n_shards and
          os.path.isfile(os.path.join(out, "manifest.pb")), "the overlay is whole")
    d.stop()


def pipeline_body(tmp, train_steps=2, every=0, max_restarts=0):
    make_fixture(tmp, 8, 2)
    items = json.load(open(os.path.join(tmp, "gen", "llava.json")))[:2]
    with open(os.path.join(tmp, "bench.jsonl"), "w") as f:
        for it in items:
            conv = it["conversations"]
            for q, a in list(zip(conv[2::2], conv[3::2]))[:2]:
                f.write(json.dumps({"image": it["image"], "question": q["value"],
                                    "answer": a["value"], "task": "shapes",
                                    "type": "closed" if a["value"] in ("yes", "no") else "open"})
                        + "\n")
    work = os.path.join(tmp, "work")
    model = os.path.join(tmp, "model")
    return work, {"name": "pipe", "kind": "pipeline", "ranks": 2, "max_restarts": max_restarts,
            "pipeline": {
                "work_dir": work,
                "synthesize": {"model_path": model, "corpus": os.path.join(tmp, "corpus"),
                               "max_new_tokens": 6, "batch_size": 2},
                "filter": {"model_path": model, "batch_size": 4},
                "train": {"model_path": model, "max_steps": train_steps, "global_batch": 2,
                          "micro_batch_tokens": 256, "max_seq_len": 160,
                          "image_min_pixels": 3136, "image_max_pixels": 3136,
                          "checkpoint_every": every, "seed": 5},
                "evaluate": [{"benchmark": os.path.join(tmp, "bench.jsonl"),
                              "images_root": os.path.join(tmp, "gen"), "max_new_tokens": 4,
                              "batch_size": 4}]}}


def case_pipeline(tmp):
    work, body = pipeline_body(tmp)
    d = Daemon(tmp)
    jid = d.submit(body)    # POST /v1/jobs: the API checks the pipeline and its train stage
    tr = d.job(jid)["spec"]["pipeline"]["train"]
    check(tr.get("pack_window") == 1024 and tr.get("seed") == 5 and
          tr.get("overlays") == [os.path.join(os.path.realpath(work), "filtered")],
          "the stored train stage holds its effective values: %s" % tr)
    seen = []               # stage names in the order GET showed them running

    def watch():
        doc = d.job(jid)
        st = doc.get("stage") or {}
        if doc["state"] in ("starting", "running") and st.get("name") and \
                (not seen or seen[-1] != st["name"]):
            seen.append(st["name"])
        return doc if doc["state"] in ("succeeded", "failed", "cancelled") else None
    doc = wait_for("the pipeline to finish", 100, watch, step=0.1)
    if doc is None:
        print(open(d.log).read()[-3000:], file=sys.stderr)
        raise SystemExit(1)
    check(doc["state"] == "succeeded", "succeeded: %s %s" % (doc["state"], doc["error"]))
    names = ["synthesize", "filter", "train", "evaluate-0"]
    check(doc.get("stage", {}).get("count") == 4, "four stages: %s" % doc.get("stage"))
    stages = doc.get("stages") or []
    check([x["name"] for x in stages] == names, "the stages in order: %s" % stages)
    check(all(x["state"] == "done" and x["attempts"] == 1 for x in stages),
          "every stage done by one attempt: %s" % [(x["name"], x["state"], x["attempts"])
                                                   for x in stages])
    check([x["attempt"] for x in stages] == [1, 2, 3, 4] and doc["attempt"] == 4,
          "stage k ran as attempt k+1: %s" % [x["attempt"] for x in stages])
    check(all(stages[i]["finished_ms"] <= stages[i + 1]["started_ms"] for i in range(len(stages) - 1)),
          "each stage started after the one before finished")
    check(seen and seen == [n for n in names if n in seen] and len(seen) >= 2,
          "the running stage was visible as it moved on: %s" % seen)
    status, _, m = d.request("GET", "/v1/jobs/%s/metrics" % jid)
    pts = m.get("points", []) if status == 200 else []
    check([p["step"] for p in pts] == [1, 2] and all(p["loss"] > 0 for p in pts),
          "the metrics series is the train stage's loss curve: %s" % pts)
    by = {x["name"]: x for x in stages}
    check((by.get("synthesize", {}).get("shards") or {}).get("done") == 4 and
          (by.get("filter", {}).get("shards") or {}).get("done") == 4,
          "synthesize and filter took their 4 shards from the queue: %s"
          % [(x["name"], x.get("shards")) for x in stages])
    for sub in ("synthesized/manifest.pb", "filtered/manifest.pb", "model/config.json",
                "eval-0/scores.json"):
        check(os.path.isfile(os.path.join(work, sub)), "stage output %s is there" % sub)
    jobdir = os.path.join(d.state, "jobs", jid)
    for k, kind in enumerate(["synthesize", "filter", "train", "evaluate"]):
        spec = json.load(open(os.path.join(jobdir, "stage-%d.json" % k)))
        check(spec["kind"] == kind and kind in spec and "pipeline" not in spec,
              "stage-%d.json is a %s spec" % (k, kind))
    train = json.load(open(os.path.join(jobdir, "stage-2.json")))["train"]
    check(train["overlays"] == [os.path.join(work, "filtered")] and
          train["corpus"] == os.path.join(tmp, "corpus"),
          "train runs on the base corpus + the filtered overlay: %s" % train)
    # a restart finds the job finished: nothing runs again
    d.proc.kill()
    d.proc.wait()
    mtime = os.path.getmtime(os.path.join(work, "eval-0", "scores.json"))
    d = Daemon(tmp)
    time.sleep(1.5)
    doc = d.job(jid)
    check(doc["state"] == "succeeded" and doc["attempt"] == 4, "still succeeded after a restart")
    check(not os.path.isdir(os.path.join(jobdir, "logs", "attempt-5")), "no stage reran")
    check(os.path.getmtime(os.path.join(work, "eval-0", "scores.json")) == mtime,
          "the outputs were not rewritten")
    d.stop()


def case_resume(tmp):
    work, body = pipeline_body(tmp, train_steps=16, every=4, max_restarts=2)
    d = Daemon(tmp)
    jid = d.submit(body)    # POST /v1/jobs: the API checks the pipeline and its train stage

    def at_stage(name):
        def pred():
            doc = d.job(jid)
            if doc["state"] in ("succeeded", "failed", "cancelled"):
                raise SystemExit("the job ended early: %s %s" % (doc["state"], doc["error"]))
            return doc if doc["state"] == "running" and (doc.get("stage") or {}).get("name") == name \
                else None
        return pred
    wait_for("the train stage", 60, at_stage("train"), step=0.05)
    wait_for("a train checkpoint", 30, lambda: d.job(jid)["last_checkpoint"], step=0.05)
    pids = wait_for("the train ranks", 10, lambda: (lambda p: p if len(p) == 2 else None)(rank_pids(jid)), step=0.1)
    if pids:
        os.kill(pids[1], signal.SIGKILL)
    wait_for("the evaluate stage", 90, at_stage("evaluate-0"), step=0.05)
    d.proc.kill()           # kill -9 of adaptd mid-stage, then a restart on the same state dir
    d.proc.wait()
    d = Daemon(tmp)
    doc = wait_final(d, jid, 90)
    check(doc["state"] == "succeeded", "succeeded: %s %s" % (doc["state"], doc["error"]))
    by = {x["name"]: x for x in doc.get("stages") or []}
    check(by.get("synthesize", {}).get("attempts") == 1 and by.get("filter", {}).get("attempts") == 1,
          "synthesize and filter ran once: %s" % [(x["name"], x["attempts"]) for x in by.values()])
    check(by.get("train", {}).get("attempts") == 2, "only the train stage was retried: %s"
          % by.get("train"))
    check(all(x["state"] == "done" for x in by.values()) and len(by) == 4, "every stage done")
    rows = shard_rows(d.state, jid)
    check(len(rows) == 4 and all(r[1] == "done" and r[6] == 1 for r in rows),
          "synthesize's shards each done once: %s" % rows)
    logs = os.listdir(os.path.join(d.state, "jobs", jid, "logs"))
    check(len(logs) == doc["attempt"] and doc["attempt"] in (5, 6),
          "attempts: 1 synthesize, 1 filter, 2 train, 1-2 evaluate: %s %s" % (doc["attempt"], logs))
    check(os.path.isfile(os.path.join(work, "eval-0", "scores.json")), "the scores are there")
    d.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="adapt-pipeline-daemon-")
    try:
        {"queue_kill": case_queue_kill, "queue_daemon": case_queue_daemon,
         "pipeline": case_pipeline,
         "resume": case_resume}[CASE](tmp)
    finally:
        if FAILURES:
            print("adaptd log tail:\n" + open(os.path.join(tmp, "adaptd.log")).read()[-4000:]
                  if os.path.exists(os.path.join(tmp, "adaptd.log")) else "", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES), file=sys.stderr)
        sys.exit(1)
    print("pipeline_daemon %s: ok" % CASE)


if __name__ == "__main__":
    main()
