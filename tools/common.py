"""Shared paths, tokenizer and small helpers for the easel training scripts.

Everything downloaded or trained lives outside the repository, in
`$EASEL_TRAIN_DIR` (default: `../easel-train` next to the repository root):

    npm/        pinned npm tarballs (checked against sha256 in data.py)
    raw/        the tarballs unpacked
    data/       prepared arrays + caption tables (data.py)
    ckpt/<run>/ training checkpoints (resume automatically)
    logs/       training logs

The exported model goes to `weights/easel-emoji/` inside the repository.
"""

import os
import json
import math
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN_DIR = Path(os.environ.get("EASEL_TRAIN_DIR", REPO.parent / "easel-train"))
WEIGHTS = Path(os.environ.get("EASEL_WEIGHTS", REPO / "weights" / "easel-emoji"))
TOOLS = REPO / "tools"

# CLIP BPE special tokens in the full vocabulary (same ids as Stable Diffusion 1.x's
# tokenizer: weights/easel-emoji/clip_tokenizer).  The default model's pruned vocabulary
# (tools/prune_vocab.py) ends with the same two tokens at other ids.
BOS_ID = 49406
EOS_ID = 49407
CLIP_TOKENIZER = REPO / "weights" / "easel-emoji" / "clip_tokenizer"
CONTEXT = 77  # the tokenizer pads/truncates to this; the text encoder's max positions

# The scorer's image normalisation (applied to images in [0, 1]).  We keep
# OpenAI CLIP's constants so a real CLIP ViT-B/32 scorer uses the same preprocessing.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def set_threads(default=1):
    """Use EASEL_THREADS threads (default 1: the machine is shared with compiles)."""
    import torch

    n = int(os.environ.get("EASEL_THREADS", default))
    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)
    return n


def load_tokenizer(path=None):
    """transformers' CLIPTokenizer built from our vocab.json + merges.txt.

    transformers 5 takes `vocab=` / `merges=` (file paths or objects); the old
    `vocab_file=` / `merges_file=` keywords are ignored there and give garbage ids.
    """
    from transformers import CLIPTokenizer

    path = Path(path or WEIGHTS / "tokenizer")
    try:
        tok = CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    except TypeError:
        tok = CLIPTokenizer(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"))
    tokens = tok.convert_ids_to_tokens(tok("red apple")["input_ids"])
    want = ["<|startoftext|>", "red</w>", "apple</w>", "<|endoftext|>"]
    assert tokens == want, f"tokenizer gives {tokens}: wrong files or keywords"
    return tok


def byte_table():
    """GPT-2/CLIP's reversible byte -> printable character table: (bytes, characters), both
    in the order of the vocabulary's first 256 ids."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


def bytes_to_unicode():
    """The vocabulary's first 256 tokens."""
    return byte_table()[1]


def read_bpe(folder):
    """A CLIP BPE tokenizer folder's vocab.json ({token: id}) and merges.txt (pairs, in rank order)."""
    with open(Path(folder) / "vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    with open(Path(folder) / "merges.txt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return vocab, [tuple(m.split()) for m in lines[1:] if m.strip()]


def write_bpe(folder, tokens, merges):
    """vocab.json (`tokens` in id order) and merges.txt (`merges` pairs, in rank order)."""
    with open(Path(folder) / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(Path(folder) / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def tokenize(tok, texts, length=CONTEXT):
    """Token ids [N, length]: <|startoftext|> ... <|endoftext|>, padded with <|endoftext|>."""
    enc = tok(list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return enc["input_ids"]


class Log:
    """Append lines to a log file and stdout, with wall-clock time."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()

    def __call__(self, *msg):
        line = time.strftime("%Y-%m-%d %H:%M:%S ") + " ".join(str(m) for m in msg)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def latest_checkpoint(folder):
    folder = Path(folder)
    cks = sorted(folder.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return cks[-1] if cks else None


def save_checkpoint(folder, step, state, keep=2):
    """Atomic save as step_<n>.pt; keeps the newest `keep` files."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp_step_{step}.pt"
    torch.save(state, tmp)
    os.replace(tmp, folder / f"step_{step}.pt")
    cks = sorted(folder.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    for p in cks[:-keep]:
        p.unlink()


def to_f16_safetensors(state_dict, path, metadata=None):
    """Write a state dict as f16 safetensors (contiguous, cloned: no shared storage)."""
    import torch
    from safetensors.torch import save_file

    out = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in state_dict.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=metadata or {"format": "pt"})


def cosine_decay(step, start, end):
    """Learning-rate factor: 1 until `start`, then a cosine down to 0 at `end`."""
    if step <= start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / (end - start))))


def write_json(path, obj):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
