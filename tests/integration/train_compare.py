"""train_compare: are two F32 safetensors files the same weights within a tolerance?

Usage: train_compare.py A.safetensors B.safetensors ATOL
Prints the largest absolute difference (and the tensor holding it) and exits 1 when it is above
ATOL, or when the files do not hold the same tensors of the same shapes. Standard library only,
so it runs with any Python 3."""
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
    a, b, atol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
    if a.keys() != b.keys():
        sys.exit(f"tensor names differ: {sorted(a.keys() ^ b.keys())[:5]}")
    worst, where, total = 0.0, "", 0
    for name in sorted(a):
        if a[name][0] != b[name][0]:
            sys.exit(f"{name}: shape {a[name][0]} vs {b[name][0]}")
        for x, y in zip(a[name][1], b[name][1]):
            d = abs(x - y)
            if d > worst:
                worst, where = d, name
        total += len(a[name][1])
    print(f"max abs diff {worst:.3g} in {where or '-'} over {total} weights (tolerance {atol:g})")
    sys.exit(1 if worst > atol else 0)


main()
