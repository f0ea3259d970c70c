"""Restrict a model folder's CLIP vocabulary to the tokens its training captions use.

    python tools/prune_vocab.py                  # weights/easel-emoji (or EASEL_WEIGHTS)
    python tools/prune_vocab.py --check          # only report what it would keep

The default model learnt its token embeddings from the captions in `tools/data.py`
(CLDR names and keywords, the composition templates): of CLIP's 49,408 rows, the rest
were never trained and only cost 12.6 MB per text tower (the text encoder's and the
scorer's), in the repository and in every executable that embeds the model.

What is kept: the 512 byte tokens (so every text still tokenizes), every merge that
byte-pair encoding applies to some caption word (with the token it makes), and
`<|startoftext|>` / `<|endoftext|>` last. Merges keep their relative order, so a
caption word takes the same merges as before and ends as the same tokens; only the
ids change, and each kept row of `token_embedding.weight` moves with its token. The
tokenizer files stay CLIP BPE files (vocab.json + merges.txt) that transformers and
easel read as before; configs get the new `vocab_size` and special-token ids.

Checked here, before anything is written: the pruned tokenizer gives every caption the
same tokens as the full one, and both text towers give the same hidden states (bit for
bit) on a sample of captions. A word that no caption has (so no trained row) now splits
into smaller known pieces instead of one untrained row. Idempotent: a second run keeps
everything.
"""

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WEIGHTS, byte_table, read_bpe, write_bpe, write_json  # noqa: E402

SPECIALS = ("<|startoftext|>", "<|endoftext|>")
EMBEDDING = "embeddings.token_embedding.weight"  # CLIPTextModel's name; CLIPModel's has `text_model.`
TOWERS = (("text_encoder", "model.safetensors"), ("scorer", "model.safetensors"))
PARTS = ("tokenizer", "text_encoder", "scorer")  # what pruning rewrites


def caption_texts():
    """Every caption the default model trains on: the entries' captions and the
    composition templates (their labels are entry labels, so only the template words)."""
    import data

    data.fetch(("emoji-datasource-google", "cldr-annotations-full"))
    texts = {c for e in data.entries() for c in e["captions"]}
    texts |= {t.format(a="x", b="y", A="x", B="y") for _, t in data.PAIR_TEMPLATES}
    return sorted(texts)


def words(text):
    """CLIP's pre-tokenisation (lower case, whitespace collapsed, its regex)."""
    import regex

    pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    return regex.findall(pattern, re.sub(r"\s+", " ", text).strip().lower())


def byte_encoder():
    """byte -> its printable character (CLIP's table)."""
    return dict(zip(*byte_table()))


def bpe(word, ranks, used):
    """CLIP's byte-pair encoding of one byte-encoded word; adds the merges it applies to `used`."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        used.add(best)
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def prune(vocab, merges, texts):
    """The kept tokens in their new id order, the kept merges, and each new id's old id."""
    ranks = {m: i for i, m in enumerate(merges)}
    enc = byte_encoder()
    used = set()
    for text in texts:
        for w in words(text):
            bpe("".join(enc[b] for b in w.encode("utf-8")), ranks, used)
    base = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i < 512]
    kept = [m for m in merges if m in used]
    tokens = base + ["".join(m) for m in kept] + list(SPECIALS)
    old_ids = [vocab[t] for t in tokens]
    return tokens, kept, old_ids


def check_tokens(old_dir, new_dir, texts, old_ids):
    """The pruned tokenizer gives each caption the same tokens (via the id map)."""
    from common import load_tokenizer

    old, new = load_tokenizer(old_dir), load_tokenizer(new_dir)
    for text in texts:
        a = old(text)["input_ids"]
        b = [old_ids[i] for i in new(text)["input_ids"]]
        if a != b:
            raise SystemExit(f"{text!r}: pruned tokens {b} differ from {a}")


def gather_rows(folder, name, old_ids, out):
    """Write `folder/name` with only the kept rows of the token embedding, to `out`."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(folder / name, "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in tensors if k in (EMBEDDING, "text_model." + EMBEDDING))
    tensors[key] = np.ascontiguousarray(tensors[key][np.array(old_ids)])
    save_file(tensors, out, metadata=meta)


def set_ids(config, n, bos, eos):
    config.update(vocab_size=n, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)


def write_configs(model, n):
    bos, eos = n - 2, n - 1
    cfg = json.load(open(model / "text_encoder" / "config.json"))
    set_ids(cfg, n, bos, eos)
    write_json(model / "text_encoder" / "config.json", cfg)
    cfg = json.load(open(model / "scorer" / "config.json"))
    set_ids(cfg["text_config"], n, bos, eos)
    write_json(model / "scorer" / "config.json", cfg)


def check_hidden(old_model, new_model, texts):
    """Both text towers: the same outputs, bit for bit, on a sample of captions."""
    import torch
    from transformers import CLIPModel, CLIPTextModel

    from common import load_tokenizer, tokenize

    sample = texts[:: max(1, len(texts) // 256)]
    ids = {m: tokenize(load_tokenizer(m / "tokenizer"), sample) for m in (old_model, new_model)}
    with torch.no_grad():
        for cls, part in ((CLIPTextModel, "text_encoder"), (CLIPModel, "scorer")):
            got = []
            for m in (old_model, new_model):
                model = cls.from_pretrained(m / part, torch_dtype=torch.float32).eval()
                if part == "scorer":  # the projected, pooled text embedding the scorer compares
                    got.append(model.text_projection(model.text_model(input_ids=ids[m]).pooler_output))
                else:
                    got.append(model(input_ids=ids[m]).last_hidden_state)
            if not torch.equal(got[0], got[1]):
                raise SystemExit(f"{part}: pruned outputs differ (max {(got[0] - got[1]).abs().max():.3g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=WEIGHTS, help="model folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="report only; write nothing")
    args = ap.parse_args()
    model = args.model
    vocab, merges = read_bpe(model / "tokenizer")
    texts = caption_texts()
    tokens, kept, old_ids = prune(vocab, merges, texts)
    print(f"{len(texts)} captions: {len(tokens)} of {len(vocab)} ids kept ({len(kept)} of {len(merges)} merges)")
    if args.check:
        return
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / model.name
        for part in PARTS:  # all the checks read; the rest of the folder stays as it is
            shutil.copytree(model / part, new / part)
        tok = new / "tokenizer"
        write_bpe(tok, tokens, kept)
        for part, name in TOWERS:
            gather_rows(model / part, name, old_ids, new / part / name)
        write_configs(new, len(tokens))
        check_tokens(model / "tokenizer", tok, texts, old_ids)
        check_hidden(model, new, texts)
        before = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
        for part in PARTS:
            shutil.rmtree(model / part)
            shutil.copytree(new / part, model / part)
        after = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    print(f"{model}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB; same tokens and hidden states for every caption")


if __name__ == "__main__":
    main()
