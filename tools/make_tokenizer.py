"""Write the CLIP BPE tokenizer (vocab.json + merges.txt) into weights/easel-emoji/clip_tokenizer/.

Derived from `bpe_simple_vocab_16e6.txt.gz` (MIT licence) shipped in the open_clip_torch
wheel: the same vocabulary as OpenAI CLIP and Stable Diffusion 1.x.  48,894 merges; ids:
256 byte tokens, the same 256 with `</w>`, one per merge, then `<|startoftext|>` (49406)
and `<|endoftext|>` (49407): 49,408 ids.  Checks the ids against open_clip's tokenizer.
The default model's tokenizer/ is this one restricted to its captions (tools/prune_vocab.py);
the full one serves the test pipelines and random Stable Diffusion folders.
"""

import gzip
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIP_TOKENIZER, BOS_ID, EOS_ID, CONTEXT, bytes_to_unicode, load_tokenizer, write_bpe, write_json  # noqa: E402

CHECK = [
    "red apple", "a red apple, fruit, food", "Cat:: hat::", "cat with a hat",
    "face with tears of joy", "flag: United Kingdom", "keycap: #", "woman's hat",
    "thumbs up: medium-dark skin tone", "  Upside-Down   FACE!! ", "e-mail 123 ❤️ café",
]


def main():
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(merges) == 48894 and len(vocab) == 49408
    out = CLIP_TOKENIZER
    out.mkdir(parents=True, exist_ok=True)
    write_bpe(out, vocab, merges)
    write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
    })
    write_json(out / "special_tokens_map.json", {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    })

    ref = open_clip.get_tokenizer("ViT-B-32")
    tok = load_tokenizer(out)
    bad = 0
    for text in CHECK:
        a = [int(i) for i in ref([text])[0].tolist()]
        b = tok(text, padding="max_length", max_length=CONTEXT, truncation=True)["input_ids"]
        # open_clip pads with 0, the HF/SD convention pads with <|endoftext|>.
        n = a.index(EOS_ID) + 1
        ok = a[:n] == b[:n] and all(i == EOS_ID for i in b[n:])
        bad += not ok
        print("ok " if ok else "BAD", text, b[:n])
    assert b[0] == BOS_ID
    if bad:
        raise SystemExit(f"{bad} mismatches against open_clip")
    print(f"tokenizer written to {out}: {len(vocab)} ids, {len(merges)} merges")


if __name__ == "__main__":
    main()
