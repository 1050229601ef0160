"""transformers' side of issue 8's generation benchmark (tools/scripts/bench_generate.sh).

Usage: bench_generate_hf.py MODEL_DIR [--batch N] [--new N] [--seed S] [--threads N]
Loads MODEL_DIR (written by `adaptctl model init`) into Qwen2VLForConditionalGeneration in fp32,
rebuilds tools/bench_generate.c's prompts from the same LCG (same ids and pixel values), and times
one greedy `generate` of exactly --new tokens per sequence (eos does not stop it) after a two-token
warm-up, with torch.set_num_threads(threads). All prompts have the same length, so the batch needs
no padding. Prints the wall time, the process's CPU time, tokens/s and every sequence's new ids in
the C program's format.
"""
import argparse
import time

import numpy as np
import torch
from transformers import Qwen2VLForConditionalGeneration

TEXT_HEAD, TEXT_TAIL, IMAGE, PATCH = 32, 32, 224, 14
MASK = (1 << 64) - 1


def lcg_next(s):
    s = (s * 6364136223846793005 + 1442695040888963407) & MASK
    return s, s >> 33


def make_inputs(cfg, batch, seed):
    merge = cfg.vision_config.spatial_merge_size
    grid = IMAGE // PATCH
    patch_dim = cfg.vision_config.in_channels * cfg.vision_config.temporal_patch_size * PATCH * PATCH
    n_img = grid * grid // (merge * merge)
    vstart, vend, img = cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.image_token_id
    length = TEXT_HEAD + 2 + n_img + TEXT_TAIL
    s = seed
    ids = np.zeros((batch, length), dtype=np.int64)
    for b in range(batch):
        for t in range(length):
            q = t - TEXT_HEAD
            if q == 0:
                ids[b, t] = vstart
            elif 0 < q <= n_img:
                ids[b, t] = img
            elif q == n_img + 1:
                ids[b, t] = vend
            else:
                s, v = lcg_next(s)
                ids[b, t] = v % vstart
    n_pix = batch * grid * grid * patch_dim
    draws = np.empty(n_pix, dtype=np.int64)
    for j in range(n_pix):
        s = (s * 6364136223846793005 + 1442695040888963407) & MASK
        draws[j] = s >> 40
    pixels = (draws.astype(np.float64) / 4194304.0 - 2.0).astype(np.float32)
    input_ids = torch.from_numpy(ids)
    return dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=torch.from_numpy(pixels.reshape(batch * grid * grid, patch_dim)),
        image_grid_thw=torch.tensor([[1, grid, grid]] * batch),
        mm_token_type_ids=(input_ids == img).int(),
    ), length, n_img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = Qwen2VLForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    inputs, length, n_img = make_inputs(model.config, args.batch, args.seed)
    # exactly --new tokens: no eos stops a sequence (adaptd runs with ignore_eos)
    gen = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    model.generation_config.eos_token_id = None
    print(f"hf: batch {args.batch}, prompt {length} tokens ({n_img} image), {args.new} new tokens, "
          f"{torch.get_num_threads()} threads, attn {model.config._attn_implementation}, "
          f"torch {torch.__version__}")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, **gen)
        t0, c0 = time.perf_counter(), time.process_time()
        out = model.generate(**inputs, max_new_tokens=args.new, **gen)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    new = out[:, length:]
    assert new.shape[1] == args.new, f"generated {new.shape[1]} tokens, wanted {args.new}"
    print(f"hf wall_s {wall:.4f}")
    print(f"hf cpu_s {cpu:.4f}")
    print(f"hf tokens_per_s {args.batch * args.new / wall:.2f}")
    for b in range(args.batch):
        print(f"hf ids {b} " + " ".join(str(int(x)) for x in new[b]))


if __name__ == "__main__":
    main()
