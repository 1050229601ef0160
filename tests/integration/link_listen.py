"""link_listen: a stand-in for adaptd's end of the worker link, for the worker's tests.

Usage: link_listen.py SOCKET_PATH OUT.json
Listens on a Unix socket, takes one connection, reads frames (4-byte big-endian length, then a
packed adaptd.LinkFrame) until the worker closes it, and writes the count of each frame kind as
JSON. The kind is the LinkFrame oneof's field number, the first tag byte >> 3 (every body is a
length-delimited message, wire type 2). Standard library only. Exits 1 on a malformed stream."""
import json
import socket
import sys

KINDS = {1: "hello", 2: "progress", 3: "checkpoint", 4: "done", 5: "heartbeat", 6: "control"}


def main():
    path, out = sys.argv[1], sys.argv[2]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(240)
    conn, _ = server.accept()
    conn.settimeout(240)
    data = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    counts = {name: 0 for name in KINDS.values()}
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            sys.exit(f"link_listen: truncated length prefix at byte {i}")
        n = int.from_bytes(data[i:i + 4], "big")
        body = data[i + 4:i + 4 + n]
        if len(body) != n or n == 0:
            sys.exit(f"link_listen: frame at byte {i} holds {len(body)} of {n} bytes")
        field, wire = body[0] >> 3, body[0] & 7
        if wire != 2 or field not in KINDS:
            sys.exit(f"link_listen: frame at byte {i}: tag {body[0]:#x} is no LinkFrame body")
        counts[KINDS[field]] += 1
        i += 4 + n
    with open(out, "w", encoding="utf-8") as f:
        json.dump(counts, f)


if __name__ == "__main__":
    main()
