"""Write tests/golden/tokens.json: transformers' CLIPTokenizer ids for awkward prompts.

Run with tools/.venv/bin/python.  The tokenizer is loaded with
`CLIPTokenizer.from_pretrained(weights/easel-emoji/clip_tokenizer)` (transformers 5 ignores
`vocab_file=`, which gives garbage ids).  For each prompt the file holds `ids`
(`tok(p)["input_ids"]`: neither truncated nor padded) and `padded`
(`tok(p, padding="max_length", max_length=77, truncation=True)`, as diffusers calls it).

Also compares with open_clip's tokenizer (ftfy + html unescape + whitespace clean; pads
with 0) and prints the prompts where the two disagree: that is expected for HTML
entities, and is why `open_clip_agrees` is recorded per prompt.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "weights" / "easel-emoji" / "clip_tokenizer"
OUT = ROOT / "tests" / "golden" / "tokens.json"

LONG = "a very detailed painting of a red apple on a wooden table, " * 8

PROMPTS = [
    "",
    " ",
    "   \t\n  ",
    "red apple",
    "Red APPLE",
    "  red   apple  ",
    "red\tapple\nwith\r\nleaves",
    "!!!",
    "...,,,;;;",
    "hello, world!!! ?!",
    "woman's hat",
    "don't stop",
    "they're we've I'm you'll he'd",
    "''s 's' it 'S",
    "IT'S DON'T",
    "2024",
    "year 2024: 3.14159",
    "½ ² ٣ Ⅻ",
    "café",
    "cafe\u0301",
    "naïve Ångström",
    "ΟΔΟΣ straße",
    "İstanbul",
    "東京タワー",
    "한국어 프롬프트",
    "🍎",
    "🍎🍏 apple emoji 👍🏽",
    "❤️ heart",
    "👨‍👩‍👧 family",
    "z\u0335\u0331a\u0301lgo",
    "&amp; &lt;b&gt; &quot;",
    "fish &amp; chips",
    "apple:: tart::",
    "apple:: tart::2",
    "cat::2 hat::1 --no dog",
    "a--b__c~~d",
    "e-mail 123 ❤️ café",
    "keycap: #",
    "a<|endoftext|>b",
    "<|startoftext|>",
    "<|ENDOFTEXT|>",
    "\u00a0nbsp\u3000ideographic\u200bzero-width",
    "x\u0085y",
    "tab\t\t\ttab",
    "new\n\n\nlines",
    LONG,
    "word " * 80,
    "1 2 3 4 5 6 7 8 9 0 " * 10,
    "🍎" * 40,
]


def main():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(FOLDER))
    assert tok("red apple")["input_ids"] == [49406, 736, 3055, 49407], "wrong files or keywords"
    try:
        import open_clip

        oc = open_clip.get_tokenizer("ViT-B-32")
    except ImportError:
        oc = None

    rows = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        padded = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True)["input_ids"]
        row = {"prompt": p, "ids": ids, "padded": padded}
        if oc is not None:
            # open_clip pads with 0 and has no notion of special tokens in the text.
            o = [int(i) for i in oc([p])[0].tolist()]
            real = padded[: padded.index(49407, 1) + 1]
            agrees = o[: len(real)] == real
            row["open_clip_agrees"] = agrees
            if not agrees:
                print(f"open_clip differs: {p[:40]!r}")
        rows.append(row)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n")
    print(f"{len(rows)} prompts -> {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
