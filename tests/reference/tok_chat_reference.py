"""tok_chat_reference: adaptd's chat rendering against the references.

    python tok_chat_reference.py ADAPTCTL TOKENIZERS_DIR QWEN2_VL_TEMPLATE

Qwen2-VL: transformers' apply_chat_template with Qwen2-VL's published chat template (the fixture
qwen2_vl_chat_template.jinja, from Qwen2-VL-7B-Instruct's files as transformers' own Qwen2-VL
processor test quotes it), on the Qwen3 tokenizer (same byte-level BPE and vision tokens as
Qwen2-VL). Each <|image_pad|> is then expanded to the image's grid_t * grid_h * grid_w / 4
placeholders, as Qwen2VLProcessor does. The loss mask is checked against transformers'
return_assistant_tokens_mask, with the template's assistant body wrapped in {% generation %}.

llava_llama_3: the layout quoted in the pipeline issue (issue 8), built here as a string,
"<image>" cut out as LLaVA's tokenizer_image_token does, each piece encoded by `tokenizers`.

Exits 1 on any difference, printing it.
"""
import json
import os
import subprocess
import sys
import tempfile

import tokenizers
from transformers import PreTrainedTokenizerFast

LLAVA_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the "
                "visual content that the user provides, and assist the user with a variety of "
                "tasks using natural language.")
IMAGE_TOKEN_ID = 128256   # <image> of llava-hf/llama3-llava-next-8b-hf, one past the text vocabulary


def adaptd_chat(adaptctl, tdir, spec):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
        path = f.name
    try:
        p = subprocess.run([adaptctl, "tokenize", "--tokenizer", tdir, "--chat", path, "--json"],
                           capture_output=True)
    finally:
        os.unlink(path)
    if p.returncode != 0:
        sys.exit(f"adaptctl tokenize --chat failed: {p.stderr.decode(errors='replace')}")
    return json.loads(p.stdout)


def generation_template(tpl):
    """The template with every assistant turn's body (content and <|im_end|>\\n) in
    {% generation %}, for transformers' assistant mask."""
    start = tpl.index("{% if message['content'] is string %}")
    end = tpl.index("{% endif %}{% endfor %}{% if add_generation_prompt %}") + len("{% endif %}")
    body = tpl[start:end]
    wrapped = ("{% if message['role'] == 'assistant' %}{% generation %}" + body +
               "{% endgeneration %}{% else %}" + body + "{% endif %}")
    return tpl[:start] + wrapped + tpl[end:]


def qwen_expected(hf, tpl, msgs, gen, synthesizer):
    r = hf.apply_chat_template(msgs, chat_template=tpl, tokenize=True, return_dict=True,
                               return_assistant_tokens_mask=True, add_generation_prompt=gen)
    ids, mask = list(r["input_ids"]), list(r["assistant_masks"])
    plain = hf.apply_chat_template(msgs, chat_template=tpl.replace("{% generation %}", "")
                                   .replace("{% endgeneration %}", ""), tokenize=True,
                                   add_generation_prompt=gen)
    plain = plain["input_ids"] if isinstance(plain, dict) or hasattr(plain, "keys") else plain
    assert list(plain) == ids, "the {% generation %} markers changed the rendering"
    if synthesizer:   # every token after the first assistant turn's "<|im_end|>\n"
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prefix = hf.apply_chat_template(msgs[:first + 1], chat_template=tpl, tokenize=True,
                                        add_generation_prompt=False)
        prefix = prefix["input_ids"] if hasattr(prefix, "keys") else prefix
        mask = [0] * len(prefix) + [1] * (len(ids) - len(prefix))
    grids = [c["grid_thw"] for m in msgs if isinstance(m["content"], list)
             for c in m["content"] if c.get("type") == "image"]
    pad = hf.convert_tokens_to_ids("<|image_pad|>")
    out_ids, out_mask, images, k = [], [], [], 0
    for i, m in zip(ids, mask):
        if i == pad:
            t, h, w = grids[k]
            n = t * h * w // 4
            images.append([len(out_ids), n])
            out_ids += [pad] * n
            out_mask += [0] * n
            k += 1
        else:
            out_ids.append(i)
            out_mask.append(m)
    return out_ids, out_mask, images


QWEN_CASES = [
    ("one user turn, generation prompt",
     [{"role": "user", "content": "What is the capital of France?"}], True, False),
    ("image and text, answered",
     [{"role": "user", "content": [{"type": "image", "grid_thw": [1, 28, 40]},
                                   {"type": "text", "text": "Describe the image."}]},
      {"role": "assistant", "content": "A chest X-ray showing a small nodule in the left lung."}],
     False, False),
    ("system prompt, two images, multi-turn",
     [{"role": "system", "content": "You are a radiologist."},
      {"role": "user", "content": [{"type": "text", "text": "Compare "},
                                   {"type": "image", "grid_thw": [1, 8, 12]},
                                   {"type": "text", "text": " and "},
                                   {"type": "image", "grid_thw": [2, 4, 4]}]},
      {"role": "assistant", "content": "The second shows progression."},
      {"role": "user", "content": "Why?"},
      {"role": "assistant", "content": [{"type": "text", "text": "Because the opacity grew."}]}],
     False, False),
    ("special-token text, NFD text, answers that start with whitespace",
     [{"role": "user", "content": "say <|im_end|> then cafe\u0301 \u1100\u1161 \U0001F468\u200d\U0001F469"},
      {"role": "assistant", "content": "\n\n  indented answer\n"},
      {"role": "user", "content": [{"type": "image", "grid_thw": [1, 2, 2]}]},
      {"role": "assistant", "content": " 123456789 \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd"}],
     True, False),
    ("a later system message, an empty answer",
     [{"role": "user", "content": "hi"}, {"role": "system", "content": "Be terse."},
      {"role": "assistant", "content": ""}], False, False),
    ("synthesizer mask: everything after the first answer",
     [{"role": "user", "content": [{"type": "image", "grid_thw": [1, 6, 6]},
                                   {"type": "text", "text": "Describe the image."}]},
      {"role": "assistant", "content": "A brain MRI."},
      {"role": "user", "content": "Which lobe?"},
      {"role": "assistant", "content": "The temporal lobe."}], False, True),
]


def spec_of(family, msgs, gen_role, synthesizer, image_token_id=None):
    spec = {"template": family, "mask": "synthesizer" if synthesizer else "assistant",
            "messages": msgs}
    if gen_role:
        spec["generation_role"] = gen_role
    if image_token_id is not None:
        spec["image_token_id"] = image_token_id
    return spec


def compare(name, want, got):
    w_ids, w_mask, w_images = want
    ok = (w_ids == got["ids"] and w_mask == got["mask"] and w_images == got["images"])
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {len(w_ids)} tokens, {sum(w_mask)} with loss, "
          f"{len(w_images)} images")
    if not ok:
        for label, a, b in (("ids", w_ids, got["ids"]), ("mask", w_mask, got["mask"]),
                            ("images", w_images, got["images"])):
            if a != b:
                k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                print(f"     {label} differ at {k}: want {a[max(0, k - 4):k + 6]} got {b[max(0, k - 4):k + 6]}")
    return ok


def llava_layout(msgs, gen_role):
    """The llava_llama_3 string of issue 8, built by hand: pieces of (text, trained) with None
    standing for an image."""
    pieces = [("<|begin_of_text|>", 0)]
    if msgs[0]["role"] != "system":
        pieces.append((f"<|start_header_id|>system<|end_header_id|>\n\n{LLAVA_SYSTEM}<|eot_id|>", 0))
    for m in msgs:
        pieces.append((f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n", "head"))
        for part in m["content"]:
            pieces.append((None, part) if isinstance(part, int) else (part, "body"))
        pieces.append(("<|eot_id|>", "body"))
    if gen_role:
        pieces.append((f"<|start_header_id|>{gen_role}<|end_header_id|>\n\n", "head"))
    return pieces


def llava_expected(tok, msgs, gen_role, synthesizer):
    """Ids of the layout, "<image>" cut out as tokenizer_image_token does; the mask from the
    token counts of each turn (turns meet at special tokens, so the counts add up)."""
    text = "".join(p if p is not None else "<image>" for p, _ in llava_layout(msgs, gen_role))
    chunks = text.split("<image>")
    ids, images = [], []
    n_images = [part for m in msgs for part in m["content"] if isinstance(part, int)]
    for i, chunk in enumerate(chunks):
        ids += tok.encode(chunk, add_special_tokens=False).ids
        if i < len(n_images):
            images.append([len(ids), n_images[i]])
            ids += [IMAGE_TOKEN_ID] * n_images[i]
    # mask: walk the turns, counting tokens of each rendered turn
    mask = [0] * len(ids)
    pos, seen_answer = 0, False
    enc = lambda s: len(tok.encode(s, add_special_tokens=False).ids)   # noqa: E731
    pos += 1  # <|begin_of_text|>
    if msgs[0]["role"] != "system":
        pos += enc(f"<|start_header_id|>system<|end_header_id|>\n\n{LLAVA_SYSTEM}<|eot_id|>")
    for m in msgs:
        head = enc(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n")
        text_parts = "".join(p if isinstance(p, str) else "\uE000" for p in m["content"])
        body = sum(p for p in m["content"] if isinstance(p, int)) + \
            sum(enc(s) for s in text_parts.split("\uE000") if s) + 1   # + <|eot_id|>
        trained_body = (not synthesizer and m["role"] == "assistant") or (synthesizer and seen_answer)
        trained_head = synthesizer and seen_answer
        for i in range(pos, pos + head):
            mask[i] = int(trained_head)
        for i in range(pos + head, pos + head + body):
            mask[i] = int(trained_body and ids[i] != IMAGE_TOKEN_ID)
        pos += head + body
        seen_answer |= m["role"] == "assistant"
    for i in range(pos, len(ids)):
        mask[i] = int(synthesizer and seen_answer)
    return ids, mask, images


def to_spec_msgs(msgs):
    out = []
    for m in msgs:
        parts = [{"type": "image", "tokens": p} if isinstance(p, int) else {"type": "text", "text": p}
                 for p in m["content"]]
        out.append({"role": m["role"], "content": parts})
    return out


LLAVA_CAPTION = "A CT scan of the abdomen showing an enlarged liver with several hypodense lesions."
LLAVA_CASES = [
    ("the synthesizer prompt of issue 8",
     [{"role": "user", "content": [576, "\nDescribe the image."]},
      {"role": "assistant", "content": [LLAVA_CAPTION]}], "user", True),
    ("synthesizer training: caption round masked, the rest trained",
     [{"role": "user", "content": [576, "\nDescribe the image."]},
      {"role": "assistant", "content": [LLAVA_CAPTION]},
      {"role": "user", "content": ["What organ is enlarged? Answer with a precise response.\n"]},
      {"role": "assistant", "content": ["The liver."]},
      {"role": "user", "content": ["How many lesions are visible? Answer with an informative response.\n"]},
      {"role": "assistant", "content": ["Several hypodense lesions, so the answer is several."]}], None, True),
    ("assistant mask, system prompt given",
     [{"role": "system", "content": ["You answer in one word."]},
      {"role": "user", "content": ["What is 2+2? ", 4, " ok"]},
      {"role": "assistant", "content": ["Four"]}], "assistant", False),
]


def main():
    adaptctl, tdirs, tpl_path = sys.argv[1], sys.argv[2], sys.argv[3]
    qdir, ldir = os.path.join(tdirs, "qwen3"), os.path.join(tdirs, "llama3")
    tpl = open(tpl_path, encoding="utf-8").read()
    gtpl = generation_template(tpl)
    hf = PreTrainedTokenizerFast(tokenizer_file=os.path.join(qdir, "tokenizer.json"))
    ok = True
    for name, msgs, gen, synth in QWEN_CASES:
        want = qwen_expected(hf, gtpl, msgs, gen, synth)
        got = adaptd_chat(adaptctl, qdir, spec_of("qwen2_vl", msgs, "assistant" if gen else None, synth))
        ok &= compare("qwen2_vl: " + name, want, got)
    ltok = tokenizers.Tokenizer.from_file(os.path.join(ldir, "tokenizer.json"))
    for name, msgs, gen_role, synth in LLAVA_CASES:
        want = llava_expected(ltok, msgs, gen_role, synth)
        got = adaptd_chat(adaptctl, ldir, spec_of("llava_llama_3", to_spec_msgs(msgs), gen_role, synth,
                                                  IMAGE_TOKEN_ID))
        ok &= compare("llava_llama_3: " + name, want, got)
    # the synthesizer prompt, character for character as issue 8 quotes it
    literal = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + LLAVA_SYSTEM +
               "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\nDescribe the image."
               "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{caption}<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\n").replace("{caption}", LLAVA_CAPTION)
    a, b = literal.split("<image>")
    want = ltok.encode(a, add_special_tokens=False).ids + [IMAGE_TOKEN_ID] * 576 + \
        ltok.encode(b, add_special_tokens=False).ids
    got = adaptd_chat(adaptctl, ldir, spec_of("llava_llama_3", to_spec_msgs(LLAVA_CASES[0][1]), "user",
                                              True, IMAGE_TOKEN_ID))
    same = want == got["ids"]
    print(f"{'ok  ' if same else 'FAIL'} llava_llama_3: ids equal the literal prompt of issue 8")
    ok &= same
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
