"""Reference for `adaptctl model generate`: transformers' Qwen2VLForConditionalGeneration.generate.

Usage: generate_ref.py ADAPTCTL TOKENIZER_DIR
Builds a tiny Qwen2-VL with random weights (every tensor random, so the logits are far from
uniform), writes it with save_pretrained next to the tokenizer, and for several prompts (one image
with text before and after it, an image of another size, text only) runs greedy generate in fp32
on the CPU and `adaptctl model generate --json`: the new token ids must be identical. The image
goes through transformers' Qwen2VLImageProcessorPil and the prompt through the tokenizer with its
<|image_pad|> expanded to the merged token count, as the processor does. A step whose two best
logits lie within MARGIN of each other would make the comparison a coin toss, so the script picks
the first weight seed with no such step (and says so).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

NEW_TOKENS = 20
MARGIN = 1e-3
IMAGE, VIDEO, VSTART, VEND, EOS = 151655, 151656, 151652, 151653, 151645


def tiny_config():
    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[2, 3, 3]),
            tie_word_embeddings=False, bos_token_id=151643, eos_token_id=EOS,
        ),
        vision_config=dict(depth=2, embed_dim=32, num_heads=4, mlp_ratio=2, hidden_size=64,
                           patch_size=14, temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
        vision_end_token_id=VEND, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=EOS,
    )


def randomize(model, gen):
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
                p.copy_(r / p[0].numel() ** 0.5)


def prompts(tmp):
    rng = np.random.RandomState(7)
    paths = []
    for i, (h, w) in enumerate([(100, 140), (60, 60)]):
        path = os.path.join(tmp, f"img{i}.png")
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(path)
        paths.append(path)
    vis = "<|vision_start|><|image_pad|><|vision_end|>"
    return [
        ("<|im_start|>user\nWhat is in the picture? " + vis + "Describe it.<|im_end|>\n"
         "<|im_start|>assistant\n", paths[0]),
        ("<|im_start|>user\n" + vis + "A small one.<|im_end|>\n<|im_start|>assistant\n", paths[1]),
        ("<|im_start|>user\nTell me a story about a lighthouse.<|im_end|>\n<|im_start|>assistant\n",
         None),
    ]


def hf_generate(model, tok, proc, text, image):
    ids = tok.encode(text, add_special_tokens=False).ids
    kw = {}
    if image:
        feats = proc(images=[Image.open(image).convert("RGB")], return_tensors="pt")
        grid = feats["image_grid_thw"]
        n = int(grid.prod()) // 4
        at = ids.index(IMAGE)
        ids = ids[:at] + [IMAGE] * n + ids[at + 1:]
        kw = dict(pixel_values=feats["pixel_values"], image_grid_thw=grid)
    input_ids = torch.tensor([ids])
    if image:
        kw["mm_token_type_ids"] = (input_ids == IMAGE).int()
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, **kw)
    new = out.sequences[0, len(ids):].tolist()
    margin = min(float((s[0].topk(2).values[0] - s[0].topk(2).values[1])) for s in out.scores)
    return new, margin


def main():
    adaptctl, tokdir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    tok = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))
    proc = Qwen2VLImageProcessorPil()
    with tempfile.TemporaryDirectory() as tmp:
        cases = prompts(tmp)
        mdir = os.path.join(tmp, "model")
        for seed in range(1, 20):
            torch.manual_seed(seed)
            model = Qwen2VLForConditionalGeneration(tiny_config()).float().eval()
            randomize(model, torch.Generator().manual_seed(seed))
            with torch.no_grad():
                ref = [hf_generate(model, tok, proc, t, im) for t, im in cases]
            worst = min(m for _, m in ref)
            if worst > MARGIN:
                break
            print(f"seed {seed}: a step has a near-tie (top-2 margin {worst:.2e}), next seed")
        else:
            sys.exit("no weight seed without near-ties")
        model.save_pretrained(mdir)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if os.path.exists(os.path.join(tokdir, f)):
                shutil.copy(os.path.join(tokdir, f), mdir)
        fails = 0
        for (text, image), (want, margin) in zip(cases, ref):
            cmd = [adaptctl, "model", "generate", "--model", mdir, "--prompt", text,
                   "--max-new-tokens", str(NEW_TOKENS), "--json"]
            if image:
                cmd += ["--image", image]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(res.stderr, file=sys.stderr)
                sys.exit(f"adaptctl model generate failed ({res.returncode})")
            got = json.loads(res.stdout)["ids"]
            ok = got == want
            fails += not ok
            print(f"{'ok  ' if ok else 'FAIL'} image={image is not None} seed={seed} "
                  f"min top-2 margin {margin:.3f}: {len(want)} tokens"
                  + ("" if ok else f"\n  transformers {want}\n  adaptd       {got}"))
        if fails:
            sys.exit(f"{fails} of {len(cases)} prompts differ from transformers' generate")
        print(f"all {len(cases)} prompts: identical {NEW_TOKENS}-token greedy continuations")


if __name__ == "__main__":
    main()
