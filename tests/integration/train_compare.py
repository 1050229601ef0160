"""train_compare: are two F32 safetensors files the same weights within a tolerance?

Usage: train_compare.py A.safetensors B.safetensors ATOL
       train_compare.py --relative A.safetensors B.safetensors RTOL
Absolute (the default): prints the largest absolute difference (and the tensor holding it) and
exits 1 when it is above ATOL. --relative: each weight may differ by RTOL times the larger of
|a|, |b| and 1% of its tensor's largest magnitude (so a weight near zero is judged at its
tensor's scale, not its own; runs whose sums are reordered, such as ZeRO-1's, need this); prints
the worst ratio of difference to allowance and exits 1 when it is above 1. Either way it exits 1
when the files do not hold the same tensors of the same shapes. Standard library only, so it runs
with any Python 3."""
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


def compare_absolute(a, b, atol):
    worst, where, total = 0.0, "", 0
    for name in sorted(a):
        for x, y in zip(a[name][1], b[name][1]):
            d = abs(x - y)
            if d > worst:
                worst, where = d, name
        total += len(a[name][1])
    print(f"max abs diff {worst:.3g} in {where or '-'} over {total} weights (tolerance {atol:g})")
    return worst <= atol


def compare_relative(a, b, rtol):
    worst, where, total, differ = 0.0, "-", 0, 0
    for name in sorted(a):
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
    return worst <= 1.0


def main():
    args = sys.argv[1:]
    relative = bool(args) and args[0] == "--relative"
    if relative:
        args = args[1:]
    if len(args) != 3:
        sys.exit("usage: train_compare.py [--relative] A.safetensors B.safetensors TOLERANCE")
    a, b, tol = read(args[0]), read(args[1]), float(args[2])
    if a.keys() != b.keys():
        sys.exit(f"tensor names differ: {sorted(a.keys() ^ b.keys())[:5]}")
    for name in sorted(a):
        if a[name][0] != b[name][0]:
            sys.exit(f"{name}: shape {a[name][0]} vs {b[name][0]}")
    ok = compare_relative(a, b, tol) if relative else compare_absolute(a, b, tol)
    sys.exit(0 if ok else 1)


main()
