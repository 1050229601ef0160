"""train_zero1_compare: are two F32 safetensors files the same weights within a relative
tolerance?

Usage: train_zero1_compare.py A.safetensors B.safetensors RTOL
Each weight may differ by RTOL times the larger of |a|, |b| and 1% of its tensor's largest
magnitude (so a weight near zero is judged at its tensor's scale, not its own). Prints the worst
ratio of difference to allowance and exits 1 when it is above 1, or when the files do not hold
the same tensors of the same shapes. Standard library only, so it runs with any Python 3."""
import array
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    header.pop("__metadata__", None)
    base = 8 + hlen
    out = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {t['dtype']}, expected F32")
        a = array.array("f")
        a.frombytes(data[base + t["data_offsets"][0]:base + t["data_offsets"][1]])
        out[name] = (tuple(t["shape"]), a)
    return out


def main():
    a, b, rtol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
    if a.keys() != b.keys():
        sys.exit(f"tensor names differ: {sorted(a.keys() ^ b.keys())[:5]}")
    worst, where, total, differ = 0.0, "-", 0, 0
    for name in sorted(a):
        if a[name][0] != b[name][0]:
            sys.exit(f"{name}: shape {a[name][0]} vs {b[name][0]}")
        xs, ys = a[name][1], b[name][1]
        floor = 0.01 * max((abs(x) for x in xs), default=0.0)
        for x, y in zip(xs, ys):
            if x == y:
                continue
            differ += 1
            allowed = rtol * max(abs(x), abs(y), floor)
            ratio = abs(x - y) / allowed if allowed > 0 else float("inf")
            if ratio > worst:
                worst, where = ratio, f"{name} ({x:.9g} vs {y:.9g})"
        total += len(xs)
    print(f"{differ} of {total} weights differ; worst {worst:.3g} of the allowance "
          f"(rtol {rtol:g}) in {where}")
    sys.exit(1 if worst > 1.0 else 0)


main()
