"""link_listen: a stand-in for adaptd's end of the worker link, for adapt-worker's tests.

Usage:
  link_listen.py count SOCKET OUT.json
      Listens on a Unix socket, takes one connection, reads frames until the worker closes it
      and writes the count of each frame kind as JSON.
  link_listen.py SCENARIO SOCKET OUTPUT_DIR -- WORKER_COMMAND...
      Runs the worker itself (with ADAPTD_LINK=SOCKET, a short heartbeat) and plays the daemon:
      reconnect  Hello; Control CHECKPOINT at step 2 → a Checkpoint frame and its directory;
                 the listener goes away (daemon killed) and comes back → Hello again from the
                 same pid, the newest Checkpoint re-sent, heartbeats; it goes away again until
                 the training has ended → the worker waits, reconnects and delivers Done(ok)
      stop       Control STOP at step 2 → a Checkpoint, Done(ok=false, stopped), exit 0
      fatal      (a bad spec) → Hello, Done(ok=false, fatal, the error), exit 2
Frames are a 4-byte big-endian length and a packed adaptd.LinkFrame, decoded here with a small
protobuf reader (standard library only). Exits 1 naming the first broken expectation."""
import json
import os
import socket
import subprocess
import sys
import time

KINDS = {1: "hello", 2: "progress", 3: "checkpoint", 4: "done", 5: "heartbeat", 6: "control"}
TIMEOUT = 60


def fail(msg):
    sys.exit(f"link_listen: {msg}")


def varint(b, i):
    v = shift = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        v |= (b[i] & 0x7F) << shift
        i += 1
        if b[i - 1] < 0x80:
            return v, i
        shift += 7


def fields(b):
    """A protobuf message as {field number: last value} (ints, or bytes for wire type 2)."""
    out, i = {}, 0
    while i < len(b):
        key, i = varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], i = varint(b, i)
        elif wire == 2:
            n, i = varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field")
            out[num], i = bytes(b[i:i + n]), i + n
        elif wire == 1:
            out[num], i = b[i:i + 8], i + 8
        elif wire == 5:
            out[num], i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


def frame_decode(body):
    """(kind, fields of the body message)."""
    f = fields(body)
    if len(f) != 1:
        raise ValueError(f"a LinkFrame with {len(f)} bodies")
    num, sub = next(iter(f.items()))
    if num not in KINDS or not isinstance(sub, bytes):
        raise ValueError(f"LinkFrame field {num} is no body")
    return KINDS[num], fields(sub)


def control_frame(action):
    """LinkFrame{control: Control{action}} (1 checkpoint, 2 stop)."""
    body = bytes([0x08, action])
    frame = bytes([0x32, len(body)]) + body
    return len(frame).to_bytes(4, "big") + frame


def text(f, num):
    return f.get(num, b"").decode("utf-8", "replace")


class Listener:
    """One life of the daemon's socket."""

    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.server.settimeout(TIMEOUT)
        self.conn, self.buf = None, bytearray()

    def accept(self):
        self.conn, _ = self.server.accept()
        self.conn.settimeout(TIMEOUT)

    def next(self):
        """The next frame as (kind, fields); None at end of stream."""
        while True:
            if len(self.buf) >= 4:
                n = int.from_bytes(self.buf[:4], "big")
                if n == 0 or n > 65536:
                    fail(f"frame length {n}")
                if len(self.buf) >= 4 + n:
                    body = self.buf[4:4 + n]
                    del self.buf[:4 + n]
                    try:
                        return frame_decode(body)
                    except ValueError as e:
                        fail(f"undecodable frame: {e}")
            chunk = self.conn.recv(65536)
            if not chunk:
                if self.buf:
                    fail(f"stream ends inside a frame ({len(self.buf)} bytes)")
                return None
            self.buf += chunk

    def until(self, kind, pred=lambda f: True, seen=None):
        """Frames up to the first of kind satisfying pred; seen counts every kind read."""
        while True:
            fr = self.next()
            if fr is None:
                fail(f"the link closed before a {kind} frame; saw {seen}")
            if seen is not None:
                seen[fr[0]] = seen.get(fr[0], 0) + 1
            if fr[0] == kind and pred(fr[1]):
                return fr[1]

    def close(self):
        """The daemon dies: the connection and the socket go."""
        if self.conn:
            self.conn.close()
        self.server.close()
        os.unlink(self.path)


def hello_check(h, pid, job, attempt):
    if text(h, 1) != job or h.get(3) != 1 or h.get(4) != pid or h.get(5) != attempt or h.get(7) != 1:
        fail(f"Hello {h}: wanted job {job}, world 1, pid {pid}, attempt {attempt}, protocol 1")


def worker_start(sock, out_dir, cmd):
    env = dict(os.environ, ADAPTD_LINK=sock, ADAPTD_JOB_ID="jobtest0000000000000000000000001",
               ADAPTD_ATTEMPT="3", ADAPTD_HEARTBEAT_MS="200", ADAPTD_DONE_WAIT_MS="30000")
    log = open(os.path.join(out_dir, "worker.log"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def worker_wait(p, want, out_dir):
    rc = p.wait(timeout=TIMEOUT * 3)
    if rc != want:
        with open(os.path.join(out_dir, "worker.log")) as f:
            sys.stderr.write(f.read())
        fail(f"the worker exited {rc}, wanted {want}")


def scenario_reconnect(sock, out_dir, cmd, job):
    lst = Listener(sock)
    p = worker_start(sock, out_dir, cmd)
    lst.accept()
    hello_check(lst.until("hello"), p.pid, job, 3)
    lst.until("progress", lambda f: f.get(3, 0) >= 2)
    lst.conn.sendall(control_frame(1))
    ck = lst.until("checkpoint")
    step, path = ck.get(2, 0), text(ck, 3)
    if not ck.get(4) or not os.path.isfile(os.path.join(path, "DONE")):
        fail(f"Control CHECKPOINT: Checkpoint frame {ck}, but no complete checkpoint at {path}")
    print(f"life 1: Control CHECKPOINT → checkpoint of step {step} at {path}")
    lst.close()
    time.sleep(1.5)          # the daemon is down: progress is dropped, training goes on

    lst = Listener(sock)
    lst.accept()
    seen = {}
    hello_check(lst.until("hello", seen=seen), p.pid, job, 3)
    if seen != {"hello": 1}:
        fail(f"life 2: Hello is not the first frame: {seen}")
    ck2 = lst.until("checkpoint", seen=seen)
    if ck2.get(2) != step or text(ck2, 3) != path:
        fail(f"life 2: re-sent Checkpoint {ck2}, wanted step {step} at {path}")
    beats = 0
    t0 = time.monotonic()
    while beats < 3:
        fr = lst.next()
        if fr is None:
            fail("life 2: the link closed while waiting for heartbeats")
        beats += fr[0] == "heartbeat"
        if fr[0] == "heartbeat" and text(fr[1], 1) != job:
            fail(f"heartbeat {fr[1]} names another job")
        if fr[0] == "done":
            fail("life 2: the training ended before the test could take the link down again")
    print(f"life 2: Hello again, Checkpoint re-sent, 3 heartbeats in {time.monotonic() - t0:.2f} s")
    lst.close()

    # down until the training is over: the worker must hold on to Done and reconnect
    final = os.path.join(os.path.dirname(path.rstrip("/")), "..", "model.safetensors")
    deadline = time.monotonic() + TIMEOUT * 3
    while not os.path.exists(final):
        if p.poll() is not None:
            fail(f"the worker exited {p.returncode} before its Done could be delivered")
        if time.monotonic() > deadline:
            fail("the training did not end")
        time.sleep(0.1)
    time.sleep(2.0)
    if p.poll() is not None:
        fail("the worker exited without waiting to deliver Done")
    lst = Listener(sock)
    lst.accept()
    seen = {}
    hello_check(lst.until("hello", seen=seen), p.pid, job, 3)
    done = lst.until("done", seen=seen)
    if not done.get(2) or done.get(6) or done.get(7) or text(done, 1) != job:
        fail(f"life 3: Done {done}: wanted ok for job {job}")
    if seen.get("progress"):
        fail(f"life 3: progress after the end: {seen}")
    worker_wait(p, 0, out_dir)
    lst.close()
    print(f"life 3: Done(ok, step {done.get(5)}) delivered after the late reconnect; frames {seen}")


def scenario_stop(sock, out_dir, cmd, job):
    lst = Listener(sock)
    p = worker_start(sock, out_dir, cmd)
    lst.accept()
    hello_check(lst.until("hello"), p.pid, job, 3)
    lst.until("progress", lambda f: f.get(3, 0) >= 2)
    lst.conn.sendall(control_frame(2))
    ck = lst.until("checkpoint")
    done = lst.until("done")
    if done.get(2) or not done.get(7) or done.get(6) or done.get(5) != ck.get(2):
        fail(f"Control STOP: Done {done} after Checkpoint {ck}: wanted ok=false, stopped, same step")
    worker_wait(p, 0, out_dir)
    lst.close()
    print(f"Control STOP: checkpoint of step {ck.get(2)}, Done(stopped), exit 0")


def scenario_fatal(sock, out_dir, cmd, job):
    lst = Listener(sock)
    p = worker_start(sock, out_dir, cmd)
    lst.accept()
    hello_check(lst.until("hello"), p.pid, job, 3)
    done = lst.until("done")
    if done.get(2) or not done.get(6) or not text(done, 3):
        fail(f"bad spec: Done {done}: wanted ok=false, fatal, an error")
    worker_wait(p, 2, out_dir)
    lst.close()
    print(f"bad spec: Done(fatal, \"{text(done, 3)}\"), exit 2")


def count(path, out):
    lst = Listener(path)
    lst.accept()
    counts = {name: 0 for name in KINDS.values()}
    while (fr := lst.next()) is not None:
        counts[fr[0]] += 1
    lst.close()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(counts, f)


def main():
    if sys.argv[1] == "count":
        count(sys.argv[2], sys.argv[3])
        return
    name, sock, out_dir = sys.argv[1:4]
    if sys.argv[4] != "--":
        fail("usage: link_listen.py SCENARIO SOCKET OUTPUT_DIR -- WORKER_COMMAND...")
    scenarios = {"reconnect": scenario_reconnect, "stop": scenario_stop, "fatal": scenario_fatal}
    scenarios[name](sock, out_dir, sys.argv[5:], "jobtest0000000000000000000000001")


if __name__ == "__main__":
    main()
