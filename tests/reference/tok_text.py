"""tok_text: the varied test text of the tokenizer reference tests, built deterministically.

No network and nothing large committed: the text is taken from what a Debian machine carries
(translations in .mo catalogues for prose in many scripts, Python's standard library for source
code and docstrings, glibc's locale definitions for native names of days and months) and mixed
with generated Unicode (emoji and ZWJ sequences, combining marks, NFD text that NFC changes, long
digit / whitespace / newline runs, control characters, special-token text). Every choice is
seeded and every file list sorted, so one machine gives the same text each run.

    python tok_text.py OUT.records [MIN_BYTES]
writes the texts as length-prefixed records ("LENGTH\\nBYTES"), the --batch input of
`adaptctl tokenize`.
"""
import gettext
import glob
import os
import random
import re
import sys
import sysconfig
import unicodedata

# Languages whose translations supply prose: Latin, Cyrillic, Greek, Georgian, Armenian, CJK,
# Arabic-script and Hebrew (right to left), Indic and South-East Asian scripts, Ethiopic.
LANGS = ["de", "fr", "es", "pl", "tr", "vi", "cs", "ru", "uk", "el", "ka", "hy", "ja", "zh_CN",
         "zh_TW", "ko", "ar", "fa", "ur", "he", "hi", "bn", "ta", "te", "ml", "gu", "pa", "mr",
         "kn", "si", "th", "km", "my", "am", "eo", "ga"]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>",
            "<|vision_end|>", "<think>", "</think>", "<|begin_of_text|>", "<|end_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|reserved_special_token_7|>", "<image>", "<|im_sta", "im_end|>", "<|<|im_end|>|>"]


def mo_messages(lang, budget):
    """Translated strings of one language, from its .mo catalogues, up to budget bytes."""
    out, size = [], 0
    for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except Exception:   # a catalogue Python cannot read is simply not used
            continue
        for key in sorted(catalog, key=repr):
            msg = catalog[key]
            if not isinstance(msg, str) or not msg.strip():
                continue
            out.append(msg)
            size += len(msg.encode())
            if size >= budget:
                return out
    return out


def python_sources(budget):
    """Whole files of Python's standard library (code, comments, docstrings)."""
    libdir = sysconfig.get_paths()["stdlib"]
    out, size = [], 0
    for path in sorted(glob.glob(os.path.join(libdir, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        out.append(text[:40000])
        size += len(out[-1].encode())
        if size >= budget:
            break
    return out


def locale_strings(budget):
    """glibc locale definitions with their <Uxxxx> escapes turned into the characters."""
    out, size = [], 0
    for path in sorted(glob.glob("/usr/share/i18n/locales/*_*")):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        text = re.sub(r"<U([0-9A-Fa-f]{4,6})>", lambda m: chr(int(m.group(1), 16)), text)
        text = "\n".join(l for l in text.splitlines() if '"' in l)
        out.append(text)
        size += len(text.encode())
        if size >= budget:
            break
    return out


def assigned(cats):
    """Code points of the given general categories (by this Python's Unicode database)."""
    return [c for c in range(0x110000) if unicodedata.category(chr(c)) in cats]


def generated(rng, budget):
    """Unicode mixes that prose rarely has but a corpus will."""
    letters = assigned({"Lu", "Ll", "Lo", "Lm", "Lt"})
    marks = assigned({"Mn", "Mc", "Me"})
    numbers = assigned({"Nd", "Nl", "No"})
    symbols = assigned({"So", "Sm", "Sc", "Sk", "Po", "Ps", "Pe", "Pd", "Pc", "Pi", "Pf"})
    astral = [c for c in letters + marks + numbers + symbols if c >= 0x10000]
    spaces = [" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\u2029", "\u000b",
              "\u000c", "\u0085", "\u2003", "\u200b", "\u1680", "\u202f", "\ufeff"]
    controls = [chr(c) for c in list(range(0, 32)) + list(range(0x7f, 0xa0))]
    emoji_base = [0x1F600 + i for i in range(80)] + [0x1F466, 0x1F467, 0x1F468, 0x1F469,
                                                     0x2764, 0x1F91D, 0x1F3F3, 0x1F308]
    tones = [0x1F3FB + i for i in range(5)]
    latin = "aeiouAEIOUnNcCsSzZyYwW"

    def emoji_seq():
        k = rng.random()
        if k < 0.3:   # ZWJ family / couple, with skin tones
            parts = [chr(rng.choice(emoji_base)) + (chr(rng.choice(tones)) if rng.random() < .4 else "")
                     for _ in range(rng.randint(2, 4))]
            return "\u200d".join(parts)
        if k < 0.5:   # flag: two regional indicators; or a tag sequence
            return chr(0x1F1E6 + rng.randrange(26)) + chr(0x1F1E6 + rng.randrange(26))
        if k < 0.6:
            return rng.choice("0123456789#*") + "\ufe0f\u20e3"
        if k < 0.7:
            return "\U0001F3F4" + "".join(chr(0xE0061 + rng.randrange(26)) for _ in range(5)) + "\U000E007F"
        return chr(rng.choice(emoji_base)) + ("\ufe0f" if rng.random() < .5 else "")

    def combining():
        base = rng.choice(latin) if rng.random() < .7 else chr(rng.choice(letters))
        return base + "".join(chr(rng.choice(marks)) for _ in range(rng.randint(1, 4)))

    def nfd_word():
        w = "".join(rng.choice("àáâãäåèéêëìíîïòóôõöùúûüýÿñçÀÉÎÕÜŐőŰűĀāǕǖṩẫệỗ가각갂한국어")
                    for _ in range(rng.randint(1, 8)))
        return unicodedata.normalize("NFD" if rng.random() < .8 else "NFKD", w)

    def contraction():
        return rng.choice(["'s", "'S", "'T", "'re", "'RE", "'Ve", "'m", "'LL", "'d", "'D", "'ſ",
                           "\u2019s", "'x", "''s"]) + rng.choice(["", " ", "word", "\n"])

    makers = [
        lambda: "".join(chr(rng.choice(letters)) for _ in range(rng.randint(1, 12))),
        lambda: "".join(chr(rng.choice(numbers)) for _ in range(rng.randint(1, 6))),
        lambda: "".join(chr(rng.choice(symbols)) for _ in range(rng.randint(1, 5))),
        lambda: "".join(rng.choice(spaces) for _ in range(rng.randint(1, 6))),
        lambda: "".join(rng.choice(controls) for _ in range(rng.randint(1, 3))),
        emoji_seq, combining, nfd_word, contraction,
        lambda: "".join(rng.choice("0123456789") for _ in range(rng.choice([3, 7, 40, 300, 2000]))),
        lambda: rng.choice([" ", "\n", "\t", "\r\n", "  \n"]) * rng.choice([2, 17, 200, 3000]),
        lambda: rng.choice(SPECIALS),
        lambda: rng.choice(["", " ", "  ", "\n"]) + rng.choice(SPECIALS) + rng.choice(["", " ", "\n", "x"]),
        lambda: "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 30))),
        lambda: "".join(chr(rng.randrange(0x0600, 0x06FF)) for _ in range(rng.randint(1, 20))),
        lambda: "".join(chr(rng.randrange(0x0900, 0x097F)) for _ in range(rng.randint(1, 20))),
        lambda: "".join(chr(rng.randrange(0x1100, 0x1176)) for _ in range(rng.randint(1, 9))),
        lambda: "".join(chr(rng.choice(astral)) for _ in range(rng.randint(1, 5))),
    ]
    out, size = [], 0
    while size < budget:
        n = rng.choice([1, 3, 10, 60, 400])
        text = "".join(rng.choice(makers)() for _ in range(n))
        text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
        out.append(text)
        size += len(text.encode())
    return out


def chunks_and_lines(texts, rng, big):
    """The texts as lines (each line one text) and as big chunks (several texts joined)."""
    lines = [l for t in texts for l in t.split("\n") if l]
    chunks, cur = [], []
    for t in texts:
        cur.append(t)
        if sum(len(x) for x in cur) >= big:
            chunks.append(rng.choice(["\n", "\n\n", " ", ""]).join(cur))
            cur = []
    if cur:
        chunks.append("\n".join(cur))
    return lines, chunks


def build(min_bytes=2_600_000, seed=20241126):
    """All test texts: each source once as big chunks, and again split into lines."""
    rng = random.Random(seed)
    per_lang = min_bytes // 3 // len(LANGS)
    prose = [m for lang in LANGS for m in mo_messages(lang, per_lang)]
    code = python_sources(min_bytes // 5)
    loc = locale_strings(min_bytes // 12)
    gen = generated(rng, min_bytes // 4)
    texts = []
    for group, big in ((prose, 16000), (code, 64000), (loc, 32000), (gen, 8000)):
        lines, chunks = chunks_and_lines(group, rng, big)
        texts += chunks + lines[:4000]
    texts += ["", " ", "\n", "a", "\u00e9", "e\u0301", "<|im_start|>", " <|im_end|> ", "\U0001F468\u200d\U0001F469"]
    return texts


def write_records(path, texts):
    with open(path, "wb") as f:
        for t in texts:
            b = t.encode("utf-8")
            f.write(b"%d\n" % len(b))
            f.write(b)


if __name__ == "__main__":
    ts = build(int(sys.argv[2]) if len(sys.argv) > 2 else 2_600_000)
    write_records(sys.argv[1], ts)
    print(f"{len(ts)} texts, {sum(len(t.encode()) for t in ts)} bytes", file=sys.stderr)
