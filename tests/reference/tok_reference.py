"""tok_reference: adaptd's tokenizer against Hugging Face `tokenizers`, on the varied test text.

    python tok_reference.py ADAPTCTL TOKENIZER_DIR WORKDIR

Checks, for every text of tok_text.build() (≥ 2 MB; big chunks and single lines):
  1. ids: `adaptctl tokenize --batch` == Tokenizer.encode(text, add_special_tokens=False).ids
  2. round trip: adaptd's decode of those ids == the text, byte for byte, wherever NFC leaves the
     text unchanged (the normalizer rewrites the rest, as it should)
  3. decode: adaptd's lossy decode == Tokenizer.decode(ids) for random id sequences (which split
     UTF-8 characters and mix special tokens), with and without skip_special_tokens.
Prints one summary line per check; exits 1 on any mismatch, showing the first ones.
"""
import os
import random
import subprocess
import sys
import unicodedata

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tok_text  # noqa: E402


def run_adaptctl(adaptctl, args, records):
    p = subprocess.run([adaptctl, "tokenize"] + args, input=records, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"adaptctl tokenize {' '.join(args)} failed ({p.returncode}): "
                 f"{p.stderr.decode(errors='replace')}")
    return p.stdout


def records_of(blobs):
    return b"".join(b"%d\n%s" % (len(b), b) for b in blobs)


def parse_records(data):
    out, i = [], 0
    while i < len(data):
        j = data.index(b"\n", i)
        n = int(data[i:j])
        out.append(data[j + 1:j + 1 + n])
        i = j + 1 + n
    return out


def show_mismatch(tok, text, want, got):
    k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    lo = max(0, k - 3)
    print(f"  text ({len(text)} chars) first differs at token {k}:", file=sys.stderr)
    print(f"    hf      {want[lo:k + 4]} {[tok.id_to_token(i) for i in want[lo:k + 4]]}", file=sys.stderr)
    print(f"    adaptd  {got[lo:k + 4]} {[tok.id_to_token(i) for i in got[lo:k + 4]]}", file=sys.stderr)
    ctx = tok.decode(want[max(0, k - 8):k + 8])
    print(f"    around: {ctx!r}", file=sys.stderr)


def check_encode(adaptctl, tdir, tok, texts):
    out = run_adaptctl(adaptctl, ["--tokenizer", tdir, "--batch"],
                       records_of([t.encode() for t in texts]))
    lines = out.decode().split("\n")[:-1]
    assert len(lines) == len(texts), (len(lines), len(texts))
    bad, want_all = 0, []
    for text, line in zip(texts, lines):
        want = tok.encode(text, add_special_tokens=False).ids
        got = [int(x) for x in line.split()]
        want_all.append(want)
        if want != got:
            bad += 1
            if bad <= 5:
                show_mismatch(tok, text, want, got)
    nbytes = sum(len(t.encode()) for t in texts)
    ntok = sum(len(w) for w in want_all)
    print(f"encode: {len(texts)} texts, {nbytes} bytes, {ntok} tokens: {bad} mismatching texts")
    return bad, want_all


def check_round_trip(adaptctl, tdir, texts, ids, nfc):
    keep = [i for i, t in enumerate(texts) if not nfc or unicodedata.normalize("NFC", t) == t]
    inp = "".join(" ".join(map(str, ids[i])) + "\n" for i in keep).encode()
    got = parse_records(run_adaptctl(adaptctl, ["--tokenizer", tdir, "--decode", "--batch"], inp))
    bad = 0
    for i, g in zip(keep, got):
        if g != texts[i].encode():
            bad += 1
            if bad <= 5:
                print(f"  round trip differs for text {i}: {texts[i][:80]!r} -> {g[:80]!r}", file=sys.stderr)
    nbytes = sum(len(texts[i].encode()) for i in keep)
    print(f"round trip: {len(keep)} texts NFC leaves unchanged, {nbytes} bytes: {bad} differ")
    return bad + (len(got) != len(keep))


def check_decode(adaptctl, tdir, tok, n_ids):
    rng = random.Random(7)
    size = tok.get_vocab_size(with_added_tokens=True)
    specials = [i for i in range(size) if tok.id_to_token(i) and i >= size - 300]
    seqs = []
    for _ in range(2000):
        seq = [rng.randrange(size) if rng.random() < .9 else rng.choice(specials)
               for _ in range(rng.randint(0, 40))]
        seqs.append([i for i in seq if tok.id_to_token(i) is not None])
    bad = 0
    for skip in (False, True):
        inp = "".join(" ".join(map(str, s)) + "\n" for s in seqs).encode()
        args = ["--tokenizer", tdir, "--decode", "--batch", "--lossy"] + (["--skip-special"] if skip else [])
        got = parse_records(run_adaptctl(adaptctl, args, inp))
        for s, g in zip(seqs, got):
            want = tok.decode(s, skip_special_tokens=skip).encode()
            if g != want:
                bad += 1
                if bad <= 5:
                    print(f"  decode {s} skip={skip}: hf {want!r} adaptd {g!r}", file=sys.stderr)
    print(f"decode: {2 * len(seqs)} random id sequences (with/without skip_special_tokens): {bad} differ")
    return bad


def main():
    adaptctl, tdir = sys.argv[1], sys.argv[2]
    tok = tokenizers.Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    texts = tok_text.build()
    bad, ids = check_encode(adaptctl, tdir, tok, texts)
    nfc = '"NFC"' in open(os.path.join(tdir, "tokenizer.json"), encoding="utf-8").read(4096) or \
        (tok.normalizer is not None)
    bad += check_round_trip(adaptctl, tdir, texts, ids, nfc)
    bad += check_decode(adaptctl, tdir, tok, ids)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
