"""transformers' side of issue 4's training-step benchmark (tools/scripts/bench_train_step.sh).

Usage: bench_train_step_hf.py MODEL_DIR [--samples N] [--steps N] [--warmup N] [--seed S]
         [--threads N]
Loads MODEL_DIR (written by `adaptctl model init`) into Qwen2VLForConditionalGeneration in fp32,
rebuilds tools/bench_train_step.c's batch from the same LCG (same ids, labels and pixel values),
and times forward + backward (no optimizer) with torch.set_num_threads(threads). Prints the loss
(transformers' own: mean cross-entropy over the shifted, unmasked labels of the whole batch, which
is adaptd's sum / loss_normaliser), the median step time and the process's CPU time per step,
in the C program's format.
"""
import argparse
import statistics
import time

import numpy as np
import torch
from transformers import Qwen2VLForConditionalGeneration

TEXT_HEAD, TEXT_TAIL, PROMPT = 32, 96, 16
MASK = (1 << 64) - 1


class Lcg:
    """Knuth's MMIX LCG, as bench_train_step.c draws it (31-bit outputs)."""

    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & MASK
        return self.s >> 33


def make_batch(cfg, samples, seed):
    merge = cfg.vision_config.spatial_merge_size
    patch = cfg.vision_config.patch_size
    grid = 224 // patch
    patch_dim = cfg.vision_config.in_channels * cfg.vision_config.temporal_patch_size * patch * patch
    n_img = grid * grid // (merge * merge)
    vstart, vend, img = cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.image_token_id
    length = TEXT_HEAD + 2 + n_img + TEXT_TAIL
    rng = Lcg(seed)
    ids = np.zeros((samples, length), dtype=np.int64)
    labels = np.zeros((samples, length), dtype=np.int64)
    for i in range(samples):
        for t in range(length):
            p = t - TEXT_HEAD
            if p == 0:
                ids[i, t] = vstart
            elif 0 < p <= n_img:
                ids[i, t] = img
            elif p == n_img + 1:
                ids[i, t] = vend
            else:
                ids[i, t] = rng.next() % vstart
            vision = 0 <= p <= n_img + 1
            labels[i, t] = -100 if (t < PROMPT or vision) else ids[i, t]
    n_pix = samples * grid * grid * patch_dim
    draws = np.empty(n_pix, dtype=np.int64)
    s = rng.s
    for j in range(n_pix):
        s = (s * 6364136223846793005 + 1442695040888963407) & MASK
        draws[j] = s >> 40
    pixels = (draws.astype(np.float64) / 4194304.0 - 2.0).astype(np.float32)
    input_ids = torch.from_numpy(ids)
    return dict(
        input_ids=input_ids,
        labels=torch.from_numpy(labels),
        pixel_values=torch.from_numpy(pixels.reshape(samples * grid * grid, patch_dim)),
        image_grid_thw=torch.tensor([[1, grid, grid]] * samples),
        mm_token_type_ids=(input_ids == img).int(),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = Qwen2VLForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32)
    model.train()
    batch = make_batch(model.config, args.samples, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"hf: {n_params} params, {batch['input_ids'].numel()} tokens, "
          f"{batch['pixel_values'].shape[0]} patches, {torch.get_num_threads()} threads, "
          f"attn {model.config._attn_implementation}, torch {torch.__version__}")
    times, cpu, loss = [], 0.0, None
    for i in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        dt = time.perf_counter() - t0
        loss = out.loss.item()
        if i >= args.warmup:
            times.append(dt)
            cpu += time.process_time() - c0
    print(f"hf loss {loss:.7f}")
    print("hf step_s " + " ".join(f"{t:.4f}" for t in times))
    print(f"hf median_s {statistics.median(times):.4f}")
    print(f"hf cpu_s_per_step {cpu / args.steps:.4f}")


if __name__ == "__main__":
    main()
