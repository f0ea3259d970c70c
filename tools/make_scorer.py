"""A random transformers CLIPModel folder, laid out as one downloaded from the Hub
(config.json, model.safetensors, vocab.json + merges.txt + tokenizer files,
preprocessor_config.json), for `easel --scorer DIR`.

    tools/.venv/bin/python tools/make_scorer.py
        writes tests/golden/scorer/: a tiny CLIPModel with its own small BPE
        vocabulary (the first 200 merges of CLIP's; 714 ids, so the pipeline's
        tokenizer cannot stand in for it), a 24-token context, image_size 12 with
        its own mean/std, and golden.safetensors: the token ids of PROMPTS, pixel
        values made by transformers' CLIPImageProcessor from two fixed 12x18 images
        (a centre crop; no resize), and the model's text/image embeddings and
        logits_per_image for them.

    tools/.venv/bin/python tools/make_scorer.py --shape vit-b-32 --out DIR
        writes a random CLIPModel of ViT-B/32's shape (12+12 layers, 512/768 wide,
        224 px, patch 32) with CLIP's full tokenizer, for measurements.

Weights are perturbed away from their initialisation, as in make_golden.py.
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_golden import perturb  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
CLIP_TOKENIZER = os.path.join(ROOT, "weights", "easel-emoji", "clip_tokenizer")
PROMPTS = ["red apple", "a cat in a hat", "tiny"]
MERGES = 200


def small_vocabulary(folder):
    """CLIP's 512 byte tokens, its first MERGES merges, then BOS and EOS."""
    with open(os.path.join(CLIP_TOKENIZER, "vocab.json")) as f:
        full = json.load(f)
    with open(os.path.join(CLIP_TOKENIZER, "merges.txt")) as f:
        lines = f.read().split("\n")
    merges = lines[1:1 + MERGES]
    by_id = sorted(full.items(), key=lambda kv: kv[1])
    vocab = {token: i for token, i in by_id[:512 + MERGES]}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("\n".join([lines[0]] + merges) + "\n")
    return vocab


def save_processor(folder, size, mean, std, context, tokenizer_dir):
    from transformers import CLIPImageProcessor, CLIPTokenizer

    tokenizer = CLIPTokenizer(os.path.join(tokenizer_dir, "vocab.json"),
                              os.path.join(tokenizer_dir, "merges.txt"), model_max_length=context)
    tokenizer.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                   image_mean=mean, image_std=std)
    processor.save_pretrained(folder)
    # Hub folders carry the BPE files; keep them whatever this version writes.
    for name in ("vocab.json", "merges.txt"):
        src = os.path.join(tokenizer_dir, name)
        if os.path.abspath(src) != os.path.abspath(os.path.join(folder, name)):
            with open(src, "rb") as a, open(os.path.join(folder, name), "wb") as b:
                b.write(a.read())
    return tokenizer, processor


def tiny(folder):
    from transformers import CLIPConfig, CLIPModel

    vocab = small_vocabulary(folder)
    context, size = 24, 12
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.3, 0.2]
    tokenizer, processor = save_processor(folder, size, mean, std, context, folder)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=context, hidden_act="quick_gelu",
                bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"], projection_dim=8)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  image_size=size, patch_size=4, hidden_act="quick_gelu", projection_dim=8)
    torch.manual_seed(70)
    model = perturb(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)), 70)
    model.save_pretrained(folder, safe_serialization=True)

    ids = tokenizer(PROMPTS, padding="max_length", max_length=context, return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(71)
    images = torch.rand(2, 3, size, size * 3 // 2, generator=g) * 2.2 - 1.1  # [-1.1, 1.1): some clamp
    unit = ((images + 1) / 2).clamp(0, 1)  # what easel's scorer sees: [0, 1]
    pixels = processor(images=list(unit), do_rescale=False, return_tensors="pt").pixel_values
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    golden = dict(input_ids=ids.float(), images=images, pixel_values=pixels, text_embeds=out.text_embeds,
                  image_embeds=out.image_embeds, logits_per_image=out.logits_per_image)
    save_file({k: v.detach().contiguous().float() for k, v in golden.items()},
              os.path.join(folder, "golden.safetensors"))
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"{folder}: {total / 1e6:.2f} MB; logits_per_image {out.logits_per_image.tolist()}")


def vit_b_32(folder):
    from transformers import CLIPConfig, CLIPModel

    os.makedirs(folder, exist_ok=True)
    save_processor(folder, 224, [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711],
                   77, CLIP_TOKENIZER)
    text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                max_position_embeddings=77, projection_dim=512)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32, projection_dim=512)
    torch.manual_seed(80)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).eval()
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    print(f"{folder}: ViT-B/32-shaped random CLIPModel (f16)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=["tiny", "vit-b-32"], default="tiny")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "scorer"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.shape == "tiny":
        tiny(args.out)
    else:
        vit_b_32(args.out)


if __name__ == "__main__":
    main()
