"""Write a full-size Stable Diffusion 1.5 folder (diffusers layout) with seeded random weights.

    tools/.venv/bin/python tools/make_random_sd15.py --out DIR [--dtype f16|f32] [--seed 0]

The folder has SD-1.5's real shapes (UNet 859.5M parameters, VAE 83.7M, CLIP text encoder
123.1M), so memory and speed measured on it are SD-1.5's; only the values are random, so
its images are noise. It is for `easel bench models|generate --model DIR` and for tests of
memory limits, never for judging images.

Every component comes from the diffusers / transformers class's own constructor with the
values of SD-1.5's published config files written out here (no model hub is needed):
`unet/` UNet2DConditionModel, `vae/` AutoencoderKL (both halves: diffusers checkpoints
ship the encoder; easel loads only the decoder), `text_encoder/` CLIPTextModel (CLIP
ViT-L/14's text tower), `scheduler/` PNDMScheduler. Weights are PyTorch's default
initialisation after `torch.manual_seed(seed)`, one seed per component, saved as
safetensors in `--dtype` (f16: the f32 values rounded, as the `fp16` variant of the real
checkpoint is).

The tokenizer: the real CLIP BPE files (vocab.json, merges.txt) cannot be downloaded
here, so the folder reuses weights/easel-emoji/clip_tokenizer, whose ids fit the same
49,408-row table (BOS 49406, EOS 49407). Prompts tokenize differently from real SD-1.5;
with random weights that changes nothing measured. model_index.json and README.md in the
folder say so.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from common import REPO, set_threads

# SD-1.5's unet/config.json (runwayml/stable-diffusion-v1-5), every non-default value.
UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

# SD-1.5's vae/config.json.
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# SD-1.5's text_encoder/config.json (CLIP ViT-L/14's text tower). The special-token ids
# are the file's legacy ones (eos 2): transformers and easel then pool at the highest id.
TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# SD-1.5's scheduler/scheduler_config.json.
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    trained_betas=None,
)

TOKENIZER_NOTE = (
    "tokenizer/ is weights/easel-emoji/clip_tokenizer's CLIP BPE (the same 49,408-id table, BOS 49406, EOS 49407), "
    "not SD-1.5's: the real files cannot be downloaded where this folder was made"
)

README = """# Stable Diffusion 1.5 shapes, RANDOM weights ({dtype})

Written by `tools/make_random_sd15.py --dtype {dtype} --seed {seed}`. Every tensor has the
shape of the real SD-1.5 checkpoint (diffusers layout), but the values are PyTorch's default
random initialisation: images from this folder are noise. It exists to measure memory and
speed (`easel bench models --model DIR`, `easel bench generate --model DIR`,
`easel "a prompt" --model DIR --upscale 1`).

- unet/: UNet2DConditionModel, {unet:,} parameters
- vae/: AutoencoderKL, {vae:,} parameters (encoder and decoder; easel loads the decoder)
- text_encoder/: CLIPTextModel, {text:,} parameters
- scheduler/: PNDMScheduler with SD-1.5's config
- {tokenizer}
"""


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def build(cls, seed, **config):
    """`cls(**config)` with PyTorch's default initialisation after `manual_seed(seed)`."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return cls(**config).eval()


def save(model, folder, dtype):
    model.to(dtype).save_pretrained(folder, safe_serialization=True)


def model_index(out):
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "_easel": {
            "note": "random weights with SD-1.5's shapes (tools/make_random_sd15.py); " + TOKENIZER_NOTE,
            "default_guidance": 7.5,
            "default_steps": 50,
        },
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write (must not exist)")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists; choose a new folder")
    set_threads(2)
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    dtype = {"f16": torch.float16, "f32": torch.float32}[args.dtype]
    # Written beside the destination and renamed at the end: no half-written model folder.
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {}
    for name, make in [
        ("unet", lambda: build(UNet2DConditionModel, args.seed, **UNET)),
        ("vae", lambda: build(AutoencoderKL, args.seed + 1, **VAE)),
        ("text_encoder", lambda: build(CLIPTextModel, args.seed + 2, config=CLIPTextConfig(**TEXT))),
    ]:
        start = time.time()
        model = make()
        counts[name] = parameters(model)
        save(model, tmp / name, dtype)
        print(f"{name}: {counts[name]:,} parameters, {time.time() - start:.0f} s", flush=True)
        del model
    PNDMScheduler(**SCHEDULER).save_pretrained(tmp / "scheduler")
    shutil.copytree(REPO / "weights" / "easel-emoji" / "clip_tokenizer", tmp / "tokenizer")
    model_index(tmp)
    (tmp / "README.md").write_text(
        README.format(
            dtype=args.dtype, seed=args.seed, tokenizer=TOKENIZER_NOTE,
            unet=counts["unet"], vae=counts["vae"], text=counts["text_encoder"],
        )
    )
    tmp.rename(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
