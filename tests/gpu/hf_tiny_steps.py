"""hf_tiny_steps: the loss of the first optimizer steps of transformers against adaptd's, on the
tiny Qwen2-VL config and the same data.

Usage: hf_tiny_steps.py TINY_STEPS BACKEND [OUT_DIR]
  TINY_STEPS  the tests/gpu/tiny_steps executable (adaptd's model + worker/optim)
  BACKEND     cpu | cpu-guarded | cuda: the op table adaptd runs on

It builds a tiny Qwen2-VL (tied LM head) with random weights of a usable scale, writes it with
save_pretrained, and writes a packed batch of four samples (images of different sizes, two images
in one sample, a text-only sample) as tests/reference/qwen2vl_ref.py does. Then STEPS optimizer
steps on that batch, each: zero grads, forward + backward (loss = masked cross-entropy summed over
the samples / the count of scored tokens, as adaptd normalises), clip_grad_norm_(MAX_NORM),
AdamW (weight decay only on tensors of two or more dimensions, constant lr), once in transformers
(fp32, eager attention, on the CPU: the reference) and once by TINY_STEPS on BACKEND.

Passes when every step's loss and pre-clip grad norm agree within a relative 1e-4 (the bound of
the CPU model against transformers in tests/unit/test_qwen2vl.c) and the loss moved between steps
(the update was applied). The weights after the last step are compared for information only: Adam's
first step moves each weight by about lr * sign(g), so a gradient within rounding of zero may flip
and move a weight by 2 lr on one side only, which says nothing about correctness.
Prints a short table last. Exit 0 pass, 1 fail, 77 BACKEND cuda without a device.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Qwen2VLForConditionalGeneration

try:  # save_pretrained's progress bars would bury the table in run.sh's log
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
except (ImportError, AttributeError):
    pass

# the tiny config, its random weights and its four samples: the CPU reference test's own
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from qwen2vl_ref import IMAGE, PATCH_DIM, randomize, samples, tiny_config  # noqa: E402

STEPS, LR, WEIGHT_DECAY, MAX_NORM = 2, 1e-3, 0.01, 1.0
TOL = 1e-4


def make_batch(gen):
    """[(ids, grids, labels, pixels)] of four samples."""
    out = []
    for ids, grids in samples(gen):
        lab = torch.tensor(ids)
        lab[: len(ids) // 3] = -100  # a masked prompt
        lab[torch.tensor(ids) == IMAGE] = -100
        pix = torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=gen)
        out.append((ids, grids, lab, pix))
    return out


def write_batch(batch, n_scored, path):
    """adaptd's packed form; integers as F32 (exact at these sizes)."""
    lens = [len(ids) for ids, _, _, _ in batch]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    save_file({
        "input_ids": torch.tensor(sum((ids for ids, _, _, _ in batch), [])).float(),
        "labels": torch.cat([lab for _, _, lab, _ in batch]).float(),
        "cu_seqlens": torch.tensor(cu).float(),
        "image_grid_thw": torch.tensor(sum((g for _, g, _, _ in batch), [])).float().reshape(-1),
        "pixel_values": torch.cat([pix for _, _, _, pix in batch]).contiguous(),
        "loss_normaliser": torch.tensor([float(n_scored)]),
    }, path)


def hf_steps(model, batch, n_scored):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    rows = []
    for step in range(1, STEPS + 1):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for ids, grids, lab, pix in batch:
            input_ids = torch.tensor([ids])
            kwargs = {}
            if grids:
                kwargs = dict(pixel_values=pix, image_grid_thw=torch.tensor(grids),
                              mm_token_type_ids=(input_ids == IMAGE).int())
            logits = model(input_ids=input_ids, **kwargs).logits[0]
            loss = F.cross_entropy(logits[:-1], lab[1:], ignore_index=-100, reduction="sum") / n_scored
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item()
        opt.step()
        rows.append({"step": step, "loss": total, "grad_norm": norm})
    return rows


def canonical(name):
    """save_pretrained's names, whichever layout a transformers version writes"""
    if name.startswith("model.visual."):
        return name[len("model."):]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    return name


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    exe, backend = sys.argv[1], sys.argv[2]
    keep = len(sys.argv) > 3
    out = sys.argv[3] if keep else tempfile.mkdtemp(prefix="hf-tiny-steps-")
    try:
        return compare(exe, backend, out)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)


def compare(exe, backend, out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2026)
    model = Qwen2VLForConditionalGeneration(tiny_config(True)).float()
    model.config._attn_implementation = "eager"
    for sub in (model.model.visual, model.model.language_model):
        sub.config._attn_implementation = "eager"
    randomize(model, gen)
    model.train()
    model.save_pretrained(os.path.join(out, "model"))
    batch = make_batch(gen)
    n_scored = sum(int((lab[1:] != -100).sum()) for _, _, lab, _ in batch)
    write_batch(batch, n_scored, os.path.join(out, "batch.safetensors"))

    ref = hf_steps(model, batch, n_scored)
    model.save_pretrained(os.path.join(out, "hf_after"))

    os.makedirs(os.path.join(out, "adaptd_after"), exist_ok=True)
    cmd = [exe, backend, os.path.join(out, "model"), os.path.join(out, "batch.safetensors"),
           os.path.join(out, "adaptd_after"), str(STEPS), repr(LR), repr(WEIGHT_DECAY), repr(MAX_NORM)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode == 77:
        print(run.stderr + f"hf_tiny_steps: backend {backend} is not available here: skipped")
        return 77
    if run.returncode != 0:
        print(run.stdout + run.stderr)
        print(f"hf_tiny_steps: {' '.join(cmd)} failed (exit {run.returncode})")
        return 1
    ours = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if len(ours) != STEPS:
        print(run.stdout + run.stderr)
        print(f"hf_tiny_steps: expected {STEPS} step lines from tiny_steps")
        return 1

    ok = True
    for r, o in zip(ref, ours):
        r["loss_err"], r["norm_err"] = rel(o["loss"], r["loss"]), rel(o["grad_norm"], r["grad_norm"])
        ok &= r["loss_err"] <= TOL and r["norm_err"] <= TOL
    moved = rel(ref[-1]["loss"], ref[0]["loss"]) > 1e-3 and rel(ours[-1]["loss"], ours[0]["loss"]) > 1e-3
    ok &= moved

    a = {canonical(k): v for k, v in load_file(os.path.join(out, "hf_after", "model.safetensors")).items()}
    b = {canonical(k): v for k, v in load_file(os.path.join(out, "adaptd_after", "model.safetensors")).items()}
    a.pop("lm_head.weight", None)  # tied: the embedding
    b.pop("lm_head.weight", None)
    if a.keys() != b.keys():
        print(f"weights after the steps: names differ: {sorted(a.keys() ^ b.keys())[:5]}")
        ok = False
        worst, far, total = float("nan"), 0, 0
    else:
        worst, far, total = 0.0, 0, 0
        for k in a:
            d = (a[k].float() - b[k].float()).abs()
            if not torch.isfinite(d).all():
                ok = False
            worst = max(worst, d.max().item())
            far += int((d > 0.1 * LR).sum())
            total += d.numel()

    print(f"hf_tiny_steps: transformers {__import__('transformers').__version__} (fp32, CPU) vs adaptd "
          f"backend {backend}; lr {LR}, weight decay {WEIGHT_DECAY}, clip {MAX_NORM}; files in {out}")
    print(f"{'step':>4} {'transformers loss':>18} {'adaptd loss':>14} {'rel err':>9} "
          f"{'hf grad norm':>13} {'adaptd norm':>12} {'rel err':>9}")
    for r, o in zip(ref, ours):
        print(f"{r['step']:>4} {r['loss']:>18.8f} {o['loss']:>14.8f} {r['loss_err']:>9.2e} "
              f"{r['grad_norm']:>13.6f} {o['grad_norm']:>12.6f} {r['norm_err']:>9.2e}")
    print(f"weights after {STEPS} steps: max |diff| {worst:.3g} ({worst / LR:.3g} lr), "
          f"{far} of {total} differ by more than 0.1 lr (information only)")
    print(f"hf_tiny_steps: {'PASS' if ok else 'FAIL'} (bound {TOL:g} on each step's loss and grad norm"
          f"{'' if moved else '; the loss did not move between steps'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
