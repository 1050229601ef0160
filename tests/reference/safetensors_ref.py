"""The Python side of tests/unit/test_safetensors.c: the reference `safetensors` package writes
files for adaptd to read, and reads back what adaptd wrote.

  make DIR   writes DIR/py/one.safetensors (every dtype adaptd reads, odd shapes, metadata) and
             DIR/py/sharded/ (shards + index exactly as transformers' save_pretrained lays them
             out: huggingface_hub's split, safetensors files, json.dumps(index, indent=2,
             sort_keys=True)), plus DIR/py/order.txt: the entry order and the shard limit.
  check DIR  reads DIR/c/gen.safetensors and DIR/c/gen_sharded/ written by adaptd and checks
             names, dtypes, shapes, metadata and every element's bits against DIR/c/expect.txt
             (one tensor a line: the name in hex, dtype, ndim, dims).

Element bits come from a hash of (tensor name, index) that the C test computes identically, so
both sides know every value without shipping data.
"""
import json
import os
import sys

import numpy as np
import safetensors
from huggingface_hub import split_state_dict_into_shards_factory

DTYPES = {"F32": (np.uint32, 4, "float32"), "BF16": (np.uint16, 2, "bfloat16"), "F16": (np.uint16, 2, "float16")}

# name, dtype, shape: scalars, empty tensors, 1-D to 4-D, names with dots and digits as in
# transformers' state dicts, and all three dtypes mixed so the writer's order matters.
TENSORS = [
    ("model.embed_tokens.weight", "BF16", [37, 16]),
    ("model.layers.0.self_attn.q_proj.weight", "F32", [16, 16]),
    ("model.layers.0.self_attn.q_proj.bias", "F32", [16]),
    ("model.layers.0.mlp.down_proj.weight", "F16", [16, 40]),
    ("model.layers.10.input_layernorm.weight", "BF16", [16]),
    ("model.layers.2.post_attention_layernorm.weight", "F16", [16]),
    ("visual.patch_embed.proj.weight", "F32", [32, 3, 2, 14, 14]),
    ("visual.blocks.0.attn.qkv.bias", "BF16", [96]),
    ("scalar", "F32", []),
    ("empty", "F16", [0, 5]),
    ("lm_head.weight", "F32", [37, 16]),
    ("z.last", "BF16", [3, 1, 2, 1]),
]
SHARD_LIMIT = 4000


def fnv1a(name):
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def bits(name, n):
    """uint32 mix of (fnv1a(name), i) for i < n, as mix32 in the C test."""
    i = np.arange(n, dtype=np.uint64)
    x = (np.uint64(fnv1a(name)) * np.uint64(0x9E3779B1) + i * np.uint64(0x85EBCA77) + np.uint64(0x165667B1))
    x = (x & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x2C1B3C6D)
        x ^= x >> np.uint32(12)
        x *= np.uint32(0x297A2D39)
        x ^= x >> np.uint32(15)
    return x


def values(name, dtype, shape):
    n = int(np.prod(shape)) if shape else 1
    x = bits(name, n)
    if DTYPES[dtype][1] == 2:
        x = (x >> np.uint32(16)).astype(np.uint16)
    return x.reshape(shape).copy()  # (ascontiguousarray would turn a scalar into shape [1])


def serialize_file(arrays, path):
    """Writes {name: (dtype, raw array)} with the reference writer and `{"format": "pt"}`."""
    specs = {
        name: safetensors.TensorSpec(dtype=DTYPES[dt][2], shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, (dt, a) in arrays.items()
    }
    safetensors.serialize_file(specs, path, metadata={"format": "pt"})


def make(root):
    out = os.path.join(root, "py")
    os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
    arrays = {name: (dt, values(name, dt, shape)) for name, dt, shape in TENSORS}
    serialize_file(arrays, os.path.join(out, "one.safetensors"))

    # transformers' save_pretrained with max_shard_size=SHARD_LIMIT, torch-free.
    split = split_state_dict_into_shards_factory(
        {name: a for name, (_, a) in arrays.items()},
        get_storage_size=lambda a: a.nbytes,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=SHARD_LIMIT,
    )
    assert split.is_sharded
    for filename, names in split.filename_to_tensors.items():
        serialize_file({n: arrays[n] for n in names}, os.path.join(out, "sharded", filename))
    total_parameters = sum(a.size for _, a in arrays.values())
    index = {"metadata": {"total_parameters": total_parameters, **split.metadata}, "weight_map": split.tensor_to_filename}
    with open(os.path.join(out, "sharded", "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(out, "order.txt"), "w") as f:
        f.write(f"{SHARD_LIMIT}\n")
        for name, dt, shape in TENSORS:
            f.write(" ".join([name, dt, str(len(shape))] + [str(d) for d in shape]) + "\n")


def check_file(path, expect, failures):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if header.get("__metadata__") != {"format": "pt"}:
        failures.append(f"{path}: __metadata__ is {header.get('__metadata__')}, transformers wants format pt")
    if n % 8:
        failures.append(f"{path}: header length {n} is not a multiple of 8")
    # The reference reader validates the whole file here; any disagreement raises.
    got = dict(safetensors.deserialize(raw))
    for name, t in got.items():
        if name not in expect:
            failures.append(f"{path}: unexpected tensor {name}")
            continue
        dt, shape = expect[name]
        if t["dtype"] != dt or list(t["shape"]) != shape:
            failures.append(f"{path}: {name}: {t['dtype']} {t['shape']}, expected {dt} {shape}")
            continue
        want = values(name, dt, shape)
        have = np.frombuffer(bytes(t["data"]), dtype=DTYPES[dt][0]).reshape(shape)
        if not np.array_equal(want, have):
            failures.append(f"{path}: {name}: {int(np.sum(want != have))} elements differ in their bits")
    return set(got)


def check(root):
    expect = {}
    with open(os.path.join(root, "c", "expect.txt")) as f:
        for line in f:
            p = line.split()
            expect[bytes.fromhex(p[0]).decode()] = (p[1], [int(d) for d in p[3 : 3 + int(p[2])]])
    failures = []
    seen = check_file(os.path.join(root, "c", "gen.safetensors"), expect, failures)
    if seen != set(expect):
        failures.append(f"gen.safetensors: names {sorted(seen ^ set(expect))} differ")

    sharded = os.path.join(root, "c", "gen_sharded")
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        index = json.load(f)
    names = set()
    for filename in sorted(set(index["weight_map"].values())):
        in_file = check_file(os.path.join(sharded, filename), expect, failures)
        names |= in_file
        for n in in_file:
            if index["weight_map"].get(n) != filename:
                failures.append(f"index puts {n} in {index['weight_map'].get(n)}, it is in {filename}")
    if names != set(expect) or set(index["weight_map"]) != set(expect):
        failures.append("sharded: the set of names differs from the expected one")
    total = sum(int(np.prod(s)) * DTYPES[d][1] for d, s in expect.values())
    if index["metadata"].get("total_size") != total:
        failures.append(f"index total_size {index['metadata'].get('total_size')}, expected {total}")
    for line in failures:
        print("FAIL:", line)
    print(f"safetensors_ref check: {len(expect)} tensors, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "check"):
        sys.exit("usage: safetensors_ref.py make|check DIR")
    if sys.argv[1] == "make":
        make(sys.argv[2])
        sys.exit(0)
    sys.exit(check(sys.argv[2]))
