"""daemon_api: adaptd as a process, end to end, with the Python standard library only.

Starts adaptd on a temporary state dir (TCP on 127.0.0.1, ephemeral port, and a Unix socket,
token required), then: the token file is created 0600; a job is refused without the token and
created with it; it is read back over TCP and over the Unix socket; wrong types, unknown
fields, path escapes, malformed HTTP, huge bodies and slow clients get the right 4xx while the
daemon keeps serving; a stand-in worker speaking the link protocol is refused for a job that was
never started; then adaptd is killed with SIGKILL and restarted on the same state dir, and the
job, its state and the token are all still there; SIGTERM ends it with status 0; and a token
file readable by others stops it from starting.

Usage: daemon_api.py PATH/TO/adaptd
"""
import http.client
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

ADAPTD = sys.argv[1]
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, file=sys.stderr)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.unix_path)


def start(tmp, extra=()):
    args = [ADAPTD, "--listen", "127.0.0.1:0", "--listen", "unix:" + os.path.join(tmp, "api.sock"),
            "--state-dir", os.path.join(tmp, "state"), "--data-root", os.path.join(tmp, "data"),
            "--slots", "4", "--require-token", "--header-timeout-ms", "500",
            "--hold", *extra]   # --hold: jobs stay queued (daemon_jobs.py runs them)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port, deadline = None, time.time() + 10
    while port is None and time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if "listening on http://127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
    if port is None:
        proc.kill()
        raise SystemExit("adaptd did not start: " + proc.stderr.read())
    return proc, port


def call(conn_factory, method, path, body=None, token=None):
    conn = conn_factory()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body) if isinstance(body, (dict, list)) else body
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    return resp.status, text


def raw(port, data, wait_close=True):
    """Sends raw bytes; returns the status line of the answer (or '' when none)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    got = b""
    for _ in range(100):
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        got += chunk
        if not wait_close and b"\r\n\r\n" in got:
            break
    s.close()
    return got.split(b"\r\n", 1)[0].decode(errors="replace")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + varint(payload)


def link_hello(job_id):
    hello = field(1, 2, job_id.encode()) + field(7, 0, 1)
    frame = field(1, 2, hello)
    return struct.pack(">I", len(frame)) + frame


def main():
    tmp = tempfile.mkdtemp(prefix="adapt-daemon-it-")
    data = os.path.join(tmp, "data")
    for d in ("model", "corpus"):
        os.makedirs(os.path.join(data, d))
    proc, port = start(tmp)
    tcp = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    unix = lambda: UnixHTTPConnection(os.path.join(tmp, "api.sock"))
    token_path = os.path.join(tmp, "state", "token")
    check(stat.S_IMODE(os.stat(token_path).st_mode) == 0o600, "token file mode 0600")
    token = open(token_path).read().strip()

    spec = {"name": "it", "kind": "train", "ranks": 2,
            "train": {"model_path": "model", "corpus": "corpus", "output_dir": "out/run1",
                      "epochs": 1, "global_batch": 8}}
    st, _ = call(tcp, "POST", "/v1/jobs", spec)
    check(st == 401, "submit without token -> 401, got %d" % st)
    st, text = call(tcp, "POST", "/v1/jobs", spec, token)
    check(st == 201, "submit -> 201, got %d %s" % (st, text))
    job = json.loads(text)
    jid = job["id"]
    st, text = call(unix, "GET", "/v1/jobs/" + jid)
    check(st == 200 and json.loads(text)["state"] == "queued", "read back over the Unix socket")
    # the spec read back carries every effective value (proto/train_rules' defaults), as
    # adapt-worker will run it
    train = json.loads(text)["spec"]["train"]
    want = {"global_batch": 8, "epochs": 1, "pack_window": 1024, "checkpoint_every": 500,
            "mode": "single_stage", "schedule": "cosine", "freeze_vision": True, "seed": 42,
            "model_path": os.path.realpath(os.path.join(data, "model"))}
    check(all(train.get(k) == v for k, v in want.items()), "effective values in the spec: %s" % train)
    check(len(train.get("caption_instructions", [])) == 8, "the built-in caption pool is shown")

    bad = dict(spec, train=dict(spec["train"], epochs="one"))
    st, text = call(tcp, "POST", "/v1/jobs", bad, token)
    check(st == 400 and "train.epochs" in text, "wrong type -> 400 naming train.epochs: " + text)
    st, text = call(tcp, "POST", "/v1/jobs", dict(spec, colour="red"), token)
    check(st == 400 and "colour" in text, "unknown field -> 400: " + text)
    bad = dict(spec, train=dict(spec["train"], pack_window=0))
    st, text = call(tcp, "POST", "/v1/jobs", bad, token)
    check(st == 400 and "train.pack_window: 0 is outside [1, 1048576]" in text,
          "out of range -> 400 naming train.pack_window and its range: " + text)
    escape = dict(spec, train=dict(spec["train"], corpus="../../etc"))
    st, text = call(tcp, "POST", "/v1/jobs", escape, token)
    check(st == 400 and "train.corpus" in text, "path escape -> 400: " + text)
    st, text = call(tcp, "POST", "/v1/jobs", "{not json", token)
    check(st == 400 and json.loads(text)["error"]["code"] == "invalid_argument", "malformed JSON")

    check(raw(port, b"NONSENSE\r\n\r\n").startswith("HTTP/1.1 400"), "malformed request line -> 400")
    big = b"POST /v1/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 100000
    check(raw(port, big).startswith("HTTP/1.1 413"), "huge body -> 413")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n")
    t0 = time.time()
    answer = s.recv(4096)
    check(answer.startswith(b"HTTP/1.1 408") and time.time() - t0 < 4, "slow client -> 408")
    s.close()
    st, _ = call(tcp, "GET", "/livez")
    check(st == 200, "still serving after the bad clients")

    # a stand-in worker: Hello for a job that was never started is refused (connection closed)
    w = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    w.settimeout(5)
    w.connect(os.path.join(tmp, "state", "link.sock"))
    w.sendall(link_hello(jid))
    try:
        closed = w.recv(16) == b""
    except ConnectionResetError:
        closed = True
    check(closed, "link refuses Hello for a queued job")
    w.close()

    st, text = call(tcp, "GET", "/metrics")
    check(st == 200 and 'adaptd_jobs{state="queued"} 1' in text, "metrics count the job")

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc, port = start(tmp)
    tcp = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    st, text = call(tcp, "GET", "/v1/jobs/" + jid)
    check(st == 200 and json.loads(text)["state"] == "queued", "job survives kill -9 of adaptd")
    st, text = call(tcp, "GET", "/v1/jobs?state=queued")
    check(st == 200 and [j["id"] for j in json.loads(text)["jobs"]] == [jid], "list after restart")
    check(open(token_path).read().strip() == token, "token kept across restarts")
    st, text = call(tcp, "POST", "/v1/jobs/%s/cancel" % jid, None, token)
    check(st == 200 and json.loads(text)["state"] == "cancelled", "cancel after restart")

    proc.send_signal(signal.SIGTERM)
    check(proc.wait(timeout=10) == 0, "SIGTERM -> exit 0")

    # a token file others can read is no secret: adaptd refuses to start with it
    os.chmod(token_path, 0o644)
    res = subprocess.run([ADAPTD, "--listen", "127.0.0.1:0", "--state-dir", os.path.join(tmp, "state"),
                          "--data-root", data, "--require-token"],
                         capture_output=True, text=True, timeout=10)
    check(res.returncode != 0 and "readable by others" in res.stderr,
          "world-readable token refused: %d %s" % (res.returncode, res.stderr))
    subprocess.run(["rm", "-rf", tmp], check=False)
    if FAILURES:
        print("%d failures" % len(FAILURES), file=sys.stderr)
        return 1
    print("daemon_api: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
