"""daemon_fixture: what the integration tests that drive adaptd end to end share (Python
standard library only): the command-line layout, the failure list, the tiny Qwen2-VL config,
one adaptd process on a temporary state dir, polling, and the model + corpus fixture.

Every script importing it is run as `SCRIPT CASE ADAPTD ADAPTCTL ADAPT_WORKER TOKENIZER_DIR
MPIRUN` (tests/meson.build)."""
import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

CASE, ADAPTD, ADAPTCTL, WORKER, TOKDIR, MPIRUN = sys.argv[1:7]
FAILURES = []

CONFIG = {
    "model_type": "qwen2_vl", "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": True,
    "bos_token_id": 151643, "eos_token_id": 151645,
    "text_config": {"vocab_size": 151936, "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                        "mrope_section": [1, 1, 2]}},
    "vision_config": {"depth": 1, "embed_dim": 32, "num_heads": 4, "mlp_ratio": 2,
                      "hidden_size": 32},
}


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)
    return cond


class Daemon:
    """One adaptd process on the test's state dir; its stderr goes to a file shown on failure."""

    def __init__(self, tmp, log_name="adaptd.log", extra=()):
        self.log = os.path.join(tmp, log_name)
        self.state = os.path.join(tmp, "state")
        args = [ADAPTD, "--listen", "127.0.0.1:0", "--state-dir", self.state, "--data-root", tmp,
                "--slots", "2", "--worker", WORKER, "--mpirun", MPIRUN, "--kill-grace-ms", "3000",
                *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env=env)
        self.port, deadline = None, time.time() + 15
        while self.port is None and time.time() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
        if self.port is None:
            raise SystemExit("adaptd did not start:\n" + open(self.log).read())

    def request(self, method, path, body=None):
        """(status, headers, body): the body parsed when it is JSON, else bytes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = json.dumps(body) if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        ctype = r.getheader("Content-Type") or ""
        return r.status, dict(r.getheaders()), (json.loads(raw) if "json" in ctype and raw else raw)

    def job(self, jid):
        status, _, doc = self.request("GET", "/v1/jobs/" + jid)
        check(status == 200, "GET job %s: %s" % (jid, status))
        return doc

    def submit(self, body):
        status, _, doc = self.request("POST", "/v1/jobs", body)
        if not check(status == 201, "submit: %s %s" % (status, doc)):
            raise SystemExit(1)
        return doc["id"]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        if sig == signal.SIGTERM:
            check(self.proc.returncode == 0, "adaptd exits 0 on SIGTERM: %s" % self.proc.returncode)
        # a sanitizer build of adaptd reports here
        log = open(self.log).read()
        check("runtime error:" not in log and "Sanitizer" not in log, "adaptd's log is clean of "
              "sanitizer reports")


def wait_for(what, timeout, pred, step=0.2, watch=None):
    """pred()'s first true value within timeout seconds (watch() runs before each try), or
    None with a failure recorded."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if watch:
            watch()
        v = pred()
        if v:
            return v
        time.sleep(step)
    check(False, "timed out after %ds waiting for %s" % (timeout, what))
    return None


def make_fixture(tmp, records=None, shard_size=10):
    """A tiny random Qwen2-VL in tmp/model and the generated sample corpus in tmp/corpus: the
    first `records` of 100 generated captions (all when None) in shards of shard_size."""
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    run = lambda *a: subprocess.run([ADAPTCTL, *a], check=True, stdout=subprocess.DEVNULL)
    run("model", "init", "--config", os.path.join(tmp, "config.json"), "--out",
        os.path.join(tmp, "model"), "--seed", "1", "--tokenizer", TOKDIR)
    run("data", "generate", "--out", os.path.join(tmp, "gen"), "--count", "100", "--seed", "3",
        "--size", "64", "--jobs", "2")
    captions = os.path.join(tmp, "gen", "captions.jsonl")
    if records is not None:
        small = os.path.join(tmp, "gen", "small.jsonl")
        with open(captions) as src, open(small, "w") as dst:
            for i, line in enumerate(src):
                if i < records:
                    dst.write(line)
        captions = small
    run("data", "import", "--out", os.path.join(tmp, "corpus"), "--jobs", "2", "--shard-size",
        str(shard_size), captions)
