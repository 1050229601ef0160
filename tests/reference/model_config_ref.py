"""The Python side of tests/unit/test_model_config.c: transformers' own reading of Qwen2-VL
configs is the reference.

  python model_config_ref.py DIR

For each config below writes DIR/NAME.flat.json (the layout of the published checkpoints),
DIR/NAME.nested.json (what transformers 5 writes after loading it: text_config / vision_config,
rope_parameters) and DIR/NAME.expect.txt ("field value" lines: every value adaptd keeps, as
transformers' config objects hold it). Also DIR/names.txt, one NAME a line.
"""
import json
import os
import sys

from transformers import Qwen2VLConfig

# Qwen/Qwen2-VL-2B-Instruct's config.json as published.
QWEN2_VL_2B = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_vl",
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}

# Qwen/Qwen2-VL-7B-Instruct: untied, wider, GQA 28/4.
QWEN2_VL_7B = dict(
    QWEN2_VL_2B,
    hidden_size=3584,
    intermediate_size=18944,
    num_attention_heads=28,
    num_key_value_heads=4,
    tie_word_embeddings=False,
    vocab_size=152064,
    vision_config=dict(QWEN2_VL_2B["vision_config"], hidden_size=3584),
)

# The shape of transformers' own Qwen2-VL test model: tiny, odd vocabulary, mrope [2, 1, 1].
TINY = {
    "model_type": "qwen2_vl",
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 99,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000,
    "bos_token_id": 0,
    "eos_token_id": [1, 7],
    "pad_token_id": 2,
    "image_token_id": 4,
    "video_token_id": 5,
    "vision_start_token_id": 3,
    "vision_end_token_id": 6,
    "tie_word_embeddings": True,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},
    "vision_config": {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 32,
        "mlp_ratio": 2,
        "num_heads": 4,
        "in_chans": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}

# Fields left out and nulls: transformers' defaults fill them.
DEFAULTS = {
    "model_type": "qwen2_vl",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": None,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "vision_config": {"hidden_size": 64, "depth": 1},
}

CONFIGS = {"qwen2_vl_2b": QWEN2_VL_2B, "qwen2_vl_7b": QWEN2_VL_7B, "tiny": TINY, "defaults": DEFAULTS}


def expectations(cfg):
    t, v = cfg.text_config, cfg.vision_config
    eos = t.eos_token_id if isinstance(t.eos_token_id, list) else ([] if t.eos_token_id is None else [t.eos_token_id])
    rope = t.rope_parameters
    return {
        "text.vocab_size": t.vocab_size,
        "text.hidden_size": t.hidden_size,
        "text.intermediate_size": t.intermediate_size,
        "text.num_hidden_layers": t.num_hidden_layers,
        "text.num_attention_heads": t.num_attention_heads,
        "text.num_key_value_heads": t.num_key_value_heads,
        "text.head_dim": t.hidden_size // t.num_attention_heads,
        "text.max_position_embeddings": t.max_position_embeddings,
        "text.rms_norm_eps": repr(float(t.rms_norm_eps)),
        "text.rope_theta": repr(float(rope["rope_theta"])),
        "text.mrope_section": " ".join(str(x) for x in rope.get("mrope_section", [16, 24, 24])),
        "text.initializer_range": repr(float(t.initializer_range)),
        "text.bos_token_id": -1 if t.bos_token_id is None else t.bos_token_id,
        "text.eos_token_ids": " ".join(str(x) for x in eos),
        "text.pad_token_id": -1 if t.pad_token_id is None else t.pad_token_id,
        "vision.depth": v.depth,
        "vision.embed_dim": v.embed_dim,
        "vision.num_heads": v.num_heads,
        "vision.head_dim": v.embed_dim // v.num_heads,
        "vision.mlp_dim": int(v.embed_dim * v.mlp_ratio),
        "vision.out_hidden_size": v.hidden_size,
        "vision.in_channels": v.in_channels,
        "vision.patch_size": v.patch_size,
        "vision.temporal_patch_size": v.temporal_patch_size,
        "vision.spatial_merge_size": v.spatial_merge_size,
        "vision.rope_theta": repr(float(v.rope_parameters["rope_theta"])),
        "vision.initializer_range": repr(float(v.initializer_range)),
        "tie_word_embeddings": int(bool(cfg.tie_word_embeddings)),
        "image_token_id": cfg.image_token_id,
        "video_token_id": cfg.video_token_id,
        "vision_start_token_id": cfg.vision_start_token_id,
        "vision_end_token_id": cfg.vision_end_token_id,
    }


def main(root):
    os.makedirs(root, exist_ok=True)
    for name, flat in CONFIGS.items():
        flat_path = os.path.join(root, f"{name}.flat.json")
        with open(flat_path, "w") as f:
            json.dump(flat, f, indent=2)
        cfg = Qwen2VLConfig.from_json_file(flat_path)
        nested_dir = os.path.join(root, f"{name}.nested")
        cfg.save_pretrained(nested_dir)
        os.replace(os.path.join(nested_dir, "config.json"), os.path.join(root, f"{name}.nested.json"))
        os.rmdir(nested_dir)
        # The nested file must mean the same to transformers as the flat one.
        again = Qwen2VLConfig.from_json_file(os.path.join(root, f"{name}.nested.json"))
        assert expectations(again) == expectations(cfg), name
        with open(os.path.join(root, f"{name}.expect.txt"), "w") as f:
            for k, val in expectations(cfg).items():
                f.write(f"{k} {val}\n")
    with open(os.path.join(root, "names.txt"), "w") as f:
        f.write("\n".join(CONFIGS) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: model_config_ref.py DIR")
    main(sys.argv[1])
