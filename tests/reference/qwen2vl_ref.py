"""Reference for tests/unit/test_qwen2vl.c: transformers' Qwen2VLForConditionalGeneration itself.

Usage: qwen2vl_ref.py OUT_DIR
For each variant (tied and untied LM head) it builds a tiny Qwen2-VL with random weights, writes it
with save_pretrained to OUT_DIR/<variant>/model, runs a batch of samples (several with images of
different sizes, one with two images, one text only) one sample at a time in fp32, and writes to
OUT_DIR/<variant>/ref.safetensors the inputs in adaptd's packed form, the logits, the loss (the
masked cross-entropy summed over all samples and divided by the global count of scored tokens)
and the gradient of every parameter. It also writes OUT_DIR/rope.safetensors: get_rope_index on
several layouts. Integers are stored as F32 (exact at these sizes), adaptd reads only floats.
Usage: qwen2vl_ref.py --init ADAPTCTL [TOKENIZER_DIR]  the `adaptctl model init` / `model info`
test: for tiny configs (tied, untied) adaptctl writes a model that transformers must load with
every tensor unchanged and with transformers' initialisation statistics (and, given a tokenizer,
one AutoTokenizer loads from the model directory); `model info`'s parameter counts per tower must
equal transformers' on those and on the Qwen2-VL-2B shape.
"""
import os
import re
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:  # a venv made before torch joined tests/requirements.txt
    print("torch is missing from the reference venv (remake it from tests/requirements.txt)",
          file=sys.stderr)
    sys.exit(1 if os.environ.get("CI") == "true" else 77)
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

IMAGE, VIDEO, VSTART, VEND = 250, 251, 252, 253
VOCAB = 256
PATCH_DIM = 3 * 2 * 14 * 14


def tiny_config(tied):
    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=512,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[2, 3, 3]),
            tie_word_embeddings=tied, bos_token_id=254, eos_token_id=255,
        ),
        vision_config=dict(depth=2, embed_dim=32, num_heads=4, mlp_ratio=2, hidden_size=64,
                           patch_size=14, temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
        vision_end_token_id=VEND, tie_word_embeddings=tied, bos_token_id=254, eos_token_id=255,
    )


def randomize(model, gen):
    """Every parameter random (norms around 1), so every gradient path carries signal."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if "norm" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            elif p.dim() == 1:
                p.copy_(0.1 * r)
            elif "embed_tokens" in name:
                p.copy_(r)
            else:
                fan_in = p[0].numel()
                p.copy_(r / fan_in ** 0.5)


def text(gen, n):
    return torch.randint(0, 200, (n,), generator=gen).tolist()


def image(grid_h, grid_w):
    return [VSTART] + [IMAGE] * (grid_h * grid_w // 4) + [VEND]


def samples(gen):
    """(ids, grids) per sample: images of different sizes, two images in one sample, text only."""
    return [
        (text(gen, 5) + image(4, 6) + text(gen, 7), [(1, 4, 6)]),
        (text(gen, 3) + image(6, 4) + text(gen, 4) + image(2, 2) + text(gen, 6), [(1, 6, 4), (1, 2, 2)]),
        (text(gen, 9), []),
        (image(2, 8) + text(gen, 5), [(1, 2, 8)]),
    ]


def run_variant(out_dir, tied):
    gen = torch.Generator().manual_seed(1234 if tied else 4321)
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(tiny_config(tied)).float()
    model.config._attn_implementation = "eager"
    for sub in (model.model.visual, model.model.language_model):
        sub.config._attn_implementation = "eager"
    randomize(model, gen)
    model.train()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(os.path.join(out_dir, "model"))

    batch = samples(gen)
    labels_all, pixels_all = [], []
    for ids, grids in batch:
        lab = torch.tensor(ids)
        lab[: len(ids) // 3] = -100  # a masked prompt
        lab[torch.tensor(ids) == IMAGE] = -100
        labels_all.append(lab)
        pixels_all.append(torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=gen))
    n_scored = sum(int((lab[1:] != -100).sum()) for lab in labels_all)

    model.zero_grad()
    logits_all, loss_total = [], 0.0
    for (ids, grids), lab, pix in zip(batch, labels_all, pixels_all):
        input_ids = torch.tensor([ids])
        kwargs = {}
        if grids:
            kwargs = dict(pixel_values=pix, image_grid_thw=torch.tensor(grids),
                          mm_token_type_ids=(input_ids == IMAGE).int())
        logits = model(input_ids=input_ids, **kwargs).logits[0]
        loss = F.cross_entropy(logits[:-1], lab[1:], ignore_index=-100, reduction="sum") / n_scored
        loss.backward()
        loss_total += loss.item()
        logits_all.append(logits.detach())

    out = {
        "logits": torch.cat(logits_all),
        "loss": torch.tensor([loss_total]),
        "loss_normaliser": torch.tensor([float(n_scored)]),
        "input_ids": torch.tensor(sum((ids for ids, _ in batch), [])).float(),
        "labels": torch.cat(labels_all).float(),
        "cu_seqlens": torch.tensor([0] + list(torch.tensor([len(i) for i, _ in batch]).cumsum(0))).float(),
        "image_grid_thw": torch.tensor(sum((g for _, g in batch), [])).float().reshape(-1),
        "pixel_values": torch.cat(pixels_all),
    }
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.detach().clone()
    save_file(out, os.path.join(out_dir, "ref.safetensors"))


def rope_cases(out_path):
    """get_rope_index on several layouts of one sequence each."""
    model = Qwen2VLForConditionalGeneration(tiny_config(True))
    gen = torch.Generator().manual_seed(7)
    layouts = [
        (text(gen, 4) + image(4, 4) + text(gen, 3), [(1, 4, 4)]),
        (image(2, 6) + text(gen, 2), [(1, 2, 6)]),
        (text(gen, 2) + image(8, 2) + image(2, 2) + text(gen, 5), [(1, 8, 2), (1, 2, 2)]),
        (text(gen, 3) + image(6, 10) + text(gen, 1) + image(4, 2), [(1, 6, 10), (1, 4, 2)]),
        ([IMAGE] * 4 + text(gen, 3), [(1, 4, 4)]),
    ]
    out = {}
    for k, (ids, grids) in enumerate(layouts):
        input_ids = torch.tensor([ids])
        pos, _ = model.model.get_rope_index(input_ids, (input_ids == IMAGE).int(),
                                            image_grid_thw=torch.tensor(grids))
        out[f"rope.{k}.ids"] = input_ids[0].float()
        out[f"rope.{k}.grid"] = torch.tensor(grids).float().reshape(-1)
        out[f"rope.{k}.pos"] = pos[:, 0, :].float().contiguous()
    save_file(out, out_path)


def check_load(model_dir):
    """adaptd wrote model_dir; transformers must load it with every tensor exactly as written,
    drawn as _init_weights draws them."""
    model = Qwen2VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    written = load_file(os.path.join(model_dir, "model.safetensors"))
    state = model.state_dict()
    def module_name(n):  # save_pretrained's names -> transformers 5.x's module names
        if n.startswith("visual."):
            return "model." + n
        return "model.language_model." + n[len("model."):] if n.startswith("model.") else n

    bad = [n for n, t in written.items()
           if module_name(n) not in state or not torch.equal(state[module_name(n)], t)]
    if bad:
        sys.exit(f"transformers loaded {len(bad)} tensors differently, e.g. {bad[:3]}")
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    for name, t in written.items():
        if "norm" in name or "ln_q" in name:
            want = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(t == want), f"{name} should start at {want}"
        elif t.dim() == 1:
            assert torch.all(t == 0), f"bias {name} should start at 0"
        elif t.numel() >= 4096:
            std = t.std().item()
            assert abs(std - 0.02) < 0.002 and abs(t.mean().item()) < 0.002, f"{name}: std {std}"
    ids = torch.tensor([[1, 2, 3, 4]])
    logits = model(input_ids=ids).logits
    if not torch.isfinite(logits).all():
        sys.exit("non-finite logits from the loaded model")
    print(f"transformers loaded {len(written)} tensors unchanged")


def qwen2_vl_2b_config():
    """The shape of Qwen2-VL-2B-Instruct (its published config.json's numbers)."""
    return Qwen2VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         rope_parameters=dict(rope_type="default", rope_theta=1000000.0,
                                              mrope_section=[16, 24, 24]),
                         tie_word_embeddings=True),
        vision_config=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=1536),
        tie_word_embeddings=True,
    )


def tower_counts(config):
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(config)
    counts = {"vision": 0, "merger": 0, "LLM": 0}
    for name, p in model.named_parameters():
        tower = "merger" if ".merger." in name else "vision" if ".visual." in name else "LLM"
        counts[tower] += p.numel()
    return counts


def check_init_and_info(adaptctl, work, tokenizer):
    configs = {"tied": tiny_config(True), "untied": tiny_config(False), "2b": qwen2_vl_2b_config()}
    for name, config in configs.items():
        cfg_dir = os.path.join(work, "config_" + name)
        config.save_pretrained(cfg_dir)
        info = subprocess.run([adaptctl, "model", "info", cfg_dir], check=True, capture_output=True,
                              text=True).stdout
        m = re.search(r"parameters: vision (\d+), merger (\d+), LLM (\d+)", info)
        got = dict(zip(("vision", "merger", "LLM"), map(int, m.groups())))
        want = tower_counts(config)
        if got != want:
            sys.exit(f"{name}: adaptctl model info counts {got}, transformers {want}")
        print(f"{name}: parameter counts per tower as transformers: {want}")
        if name == "2b":
            continue
        out = os.path.join(work, "init_" + name)
        extra = ["--tokenizer", tokenizer] if tokenizer else []
        subprocess.run([adaptctl, "model", "init", "--config", os.path.join(cfg_dir, "config.json"),
                        "--out", out, "--seed", "5"] + extra, check=True)
        check_load(out)
        if tokenizer:
            from transformers import AutoTokenizer
            want = AutoTokenizer.from_pretrained(tokenizer)("a photo of a cat").input_ids
            got = AutoTokenizer.from_pretrained(out)("a photo of a cat").input_ids
            assert got == want, "the tokenizer copied by model init encodes differently"


def main():
    torch.set_num_threads(2)
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--init":
        with tempfile.TemporaryDirectory(prefix="adapt-q2vl-init-") as work:
            check_init_and_info(sys.argv[2], work, sys.argv[3] if len(sys.argv) == 4 else None)
        return
    out_dir = sys.argv[1]
    run_variant(os.path.join(out_dir, "tied"), True)
    run_variant(os.path.join(out_dir, "untied"), False)
    rope_cases(os.path.join(out_dir, "rope.safetensors"))


if __name__ == "__main__":
    main()
