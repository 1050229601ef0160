"""tok_variants: the tokenizer.json features the two real tokenizers leave unused, against
Hugging Face `tokenizers` on variants of the Qwen3 tokenizer.json.

    python tok_variants.py ADAPTCTL QWEN3_DIR

Variants (written to a temporary directory): added tokens with lstrip / rstrip / single_word /
normalized=true (one whose content NFC changes) and new non-special tokens; a ByteLevel
pre-tokenizer with use_regex=true (GPT-2's regex) alone; a Split on a literal String; no
normalizer. Each is compared on texts built around the added tokens plus a slice of the varied
text. Also checks that adaptd refuses, naming the field, what it does not implement.
"""
import copy
import json
import os
import random
import subprocess
import sys
import tempfile

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tok_reference  # noqa: E402
import tok_text  # noqa: E402


def variants(base):
    out = {}
    v = copy.deepcopy(base)
    flags = {"<|im_start|>": dict(lstrip=True, rstrip=True), "<|im_end|>": dict(single_word=True),
             "<think>": dict(normalized=True), "</think>": dict(lstrip=True, single_word=True),
             "<|vision_start|>": dict(rstrip=True, special=False)}
    for t in v["added_tokens"]:
        t.update(flags.get(t["content"], {}))
    next_id = max(t["id"] for t in v["added_tokens"]) + 1
    # ids as tokenizers assigns them: a content already in model.vocab keeps that id ("abc")
    for content, f in (("cafe\u0301x", dict(normalized=True)), ("\u00e9t\u00e9", dict(normalized=True, single_word=True)),
                       ("<tag>", dict(rstrip=True)), ("ab", dict(single_word=True)), ("abc", dict()),
                       ("[x y]", dict(lstrip=True, special=True))):
        t = dict(id=next_id, content=content, single_word=False, lstrip=False, rstrip=False,
                 normalized=False, special=False)
        t.update(f)
        if content in base["model"]["vocab"]:
            t["id"] = base["model"]["vocab"][content]
        else:
            next_id += 1
        v["added_tokens"].append(t)
    out["added_flags"] = v
    v = copy.deepcopy(base)
    v["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    out["bytelevel_regex"] = v
    v = copy.deepcopy(base)
    v["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"String": "\n"}
    out["split_string"] = v
    v = copy.deepcopy(base)
    v["normalizer"] = None
    out["no_normalizer"] = v
    return out


REFUSED = [
    ("normalizer", {"type": "Lowercase"}, "normalizer.type"),
    ("decoder", None, "decoder"),
    ("truncation", {"max_length": 5}, "truncation"),
    ("model.dropout", 0.1, "model.dropout"),
    ("model.byte_fallback", True, "model.byte_fallback"),
    ("model.type", "WordPiece", "model.type"),
    ("pre_tokenizer", {"type": "Metaspace"}, "pre_tokenizer type 'Metaspace'"),
    ("extra_field", 1, "extra_field"),
    ("added_tokens", [{"id": 5, "content": "<new>", "single_word": False, "lstrip": False,
                       "rstrip": False, "normalized": False, "special": True}], "added_tokens[0]"),
]


def refusal_variants(base):
    for field, value, needle in REFUSED:
        v = copy.deepcopy(base)
        obj, key = (v["model"], field.split(".")[1]) if field.startswith("model.") else (v, field)
        obj[key] = value
        yield field, v, needle


def texts_for(rng):
    pieces = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|vision_start|>", "cafe\u0301x",
              "caf\u00e9x", "\u00e9t\u00e9", "e\u0301te\u0301", "<tag>", "ab", "abc", "[x y]", "word",
              " ", "  ", "\n", "\t", "\u00a0", "x", "9", "\u4f60", "'s", ".", "\u3000"]
    out = []
    for _ in range(3000):
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return out


def main():
    adaptctl, qdir = sys.argv[1], sys.argv[2]
    base = json.load(open(os.path.join(qdir, "tokenizer.json"), encoding="utf-8"))
    rng = random.Random(3)
    texts = texts_for(rng) + tok_text.build(min_bytes=400_000)[:3000]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, v in variants(base).items():
            d = os.path.join(tmp, name)
            os.mkdir(d)
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(v, f, ensure_ascii=False)
            tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            print(f"variant {name}: ", end="", flush=True)
            b, _ = tok_reference.check_encode(adaptctl, d, tok, texts)
            bad += b
        for field, v, needle in refusal_variants(base):
            d = os.path.join(tmp, "refuse")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(v, f, ensure_ascii=False)
            p = subprocess.run([adaptctl, "tokenize", "--tokenizer", d, "x"], capture_output=True)
            msg = p.stderr.decode(errors="replace").strip()
            ok = p.returncode == 1 and needle in msg and msg.count("\n") == 0
            print(f"{'ok  ' if ok else 'FAIL'} refuses {field}: {msg}")
            bad += not ok
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
