"""Write a diffusers Stable Diffusion folder as one single-file checkpoint in the
original (ldm / A1111) layout: `model.diffusion_model.*`, `first_stage_model.*`,
and `cond_stage_model.transformer.*` (SD 1.x, OpenAI CLIP) or, with `--open-clip`,
`cond_stage_model.model.*` (SD 2.x, OpenCLIP: q, k, v fused into `in_proj`, plus a
last block and a projection the pipeline does not use, as SD 2.x files hold them).

The names are an explicit inverse of diffusers' single-file loader, and every file
written is checked against it: diffusers' own `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` and
`convert_open_clip_checkpoint` must turn it back into the folder's exact tensors.

    tools/.venv/bin/python tools/make_single_file.py
        the tiny golden: tests/golden/latent_pipeline's UNet and VAE with
        tests/golden/pipeline's text encoder -> tests/golden/single_file/tiny_sd1.safetensors
    tools/.venv/bin/python tools/make_single_file.py --from DIR --out FILE.safetensors [--open-clip]
        any SD 1.x-shaped diffusers folder (unet/, vae/, text_encoder/)
"""

import argparse
import json
import os
import re

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..")
GOLDEN = os.path.join(ROOT, "tests", "golden")

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_LAYERS = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
               "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}


def rename_first(leaf, table):
    head, _, tail = leaf.partition(".")
    head = table.get(head, head)
    return f"{head}.{tail}" if tail else head


def unet_name(name, layers, up_attentions):
    """diffusers UNet2DConditionModel name -> ldm UNetModel name."""
    for new, old in UNET_LAYERS.items():
        if name.startswith(new):
            return old + name[len(new):]
    per = layers + 1
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        b, kind, j, leaf = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"input_blocks.{1 + b * per + j}.0.{rename_first(leaf, RESNET)}"
        return f"input_blocks.{1 + b * per + j}.1.{leaf}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", name):
        return f"middle_block.{2 * int(m[1])}.{rename_first(m[2], RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", name):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        b, kind, j, leaf = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"output_blocks.{b * per + j}.0.{rename_first(leaf, RESNET)}"
        return f"output_blocks.{b * per + j}.1.{leaf}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name):
        b = int(m[1])
        return f"output_blocks.{b * per + layers}.{2 if up_attentions[b] else 1}.conv.{m[2]}"
    raise ValueError(f"no ldm name for UNet tensor {name}")


def vae_name(name, blocks):
    """diffusers AutoencoderKL name -> ldm AutoencoderKL name, and whether it is a
    mid-attention weight ldm stores as a 1x1 conv."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    half, _, rest = name.partition(".")
    if half not in ("encoder", "decoder"):
        return name, False
    resnet = lambda leaf: rename_first(leaf, {"conv_shortcut": "nin_shortcut"})  # noqa: E731
    if rest.startswith("conv_norm_out."):
        return f"{half}.norm_out.{rest[len('conv_norm_out.'):]}", False
    if rest.startswith(("conv_in.", "conv_out.")):
        return name, False
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        return f"{half}.mid.block_{int(m[1]) + 1}.{resnet(m[2])}", False
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", rest):
        leaf = m[1].replace("to_out.0.", "to_out.")
        conv = not leaf.startswith("group_norm.") and leaf.endswith(".weight")
        return f"{half}.mid.attn_1.{rename_first(leaf, attention)}", conv
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(.*)", rest):
        kind, i, leaf = m[1], int(m[2]), m[3]
        level = i if kind == "down" else blocks - 1 - i
        if r := re.match(r"resnets\.(\d+)\.(.*)", leaf):
            return f"{half}.{kind}.{level}.block.{r[1]}.{resnet(r[2])}", False
        sampler = "downsample" if kind == "down" else "upsample"
        return f"{half}.{kind}.{level}.{sampler}.{leaf.split('.', 2)[2]}", False
    raise ValueError(f"no ldm name for VAE tensor {name}")


def open_clip_tensors(text, layers, hidden):
    """transformers CLIPTextModel tensors -> OpenCLIP's text tower (prefix-less)."""
    out = {"token_embedding.weight": text["embeddings.token_embedding.weight"],
           "positional_embedding": text["embeddings.position_embedding.weight"],
           "ln_final.weight": text["final_layer_norm.weight"], "ln_final.bias": text["final_layer_norm.bias"],
           # The contrastive head, unused by SD 2.x (stored [hidden, projection] in OpenCLIP).
           "text_projection": torch.eye(hidden, dtype=text["final_layer_norm.weight"].dtype)}
    block = {"layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.", "mlp.fc1.": "mlp.c_fc.",
             "mlp.fc2.": "mlp.c_proj.", "self_attn.out_proj.": "attn.out_proj."}
    for i in range(layers + 1):
        # The last block: a copy of the first, as a stand-in for the layer SD 2.x skips.
        src = f"encoder.layers.{i if i < layers else 0}."
        dst = f"transformer.resblocks.{i}."
        for new, old in block.items():
            for leaf in ("weight", "bias"):
                out[dst + old + leaf] = text[src + new + leaf].clone()
        for leaf in ("weight", "bias"):
            out[dst + f"attn.in_proj_{leaf}"] = torch.cat([text[src + f"self_attn.{p}_proj.{leaf}"] for p in "qkv"])
    return out


def single_file(folder_unet, folder_vae, folder_text, open_clip):
    unet_cfg = json.load(open(os.path.join(folder_unet, "config.json")))
    vae_cfg = json.load(open(os.path.join(folder_vae, "config.json")))
    text_cfg = json.load(open(os.path.join(folder_text, "config.json")))
    unet = load_file(os.path.join(folder_unet, "diffusion_pytorch_model.safetensors"))
    vae = load_file(os.path.join(folder_vae, "diffusion_pytorch_model.safetensors"))
    text = load_file(os.path.join(folder_text, "model.safetensors"))
    text = {k.removeprefix("text_model."): v for k, v in text.items()}
    layers = unet_cfg["layers_per_block"]
    up_attentions = [t.startswith("CrossAttn") for t in unet_cfg["up_block_types"]]
    ckpt = {"model.diffusion_model." + unet_name(k, layers, up_attentions): v for k, v in unet.items()}
    blocks = len(vae_cfg["block_out_channels"])
    for k, v in vae.items():
        name, conv = vae_name(k, blocks)
        ckpt["first_stage_model." + name] = v[:, :, None, None] if conv else v
    if open_clip:
        tower = open_clip_tensors(text, text_cfg["num_hidden_layers"], text_cfg["hidden_size"])
        ckpt.update({"cond_stage_model.model." + k: v for k, v in tower.items()})
    else:
        ckpt.update({"cond_stage_model.transformer.text_model." + k: v for k, v in text.items()})
        positions = text_cfg["max_position_embeddings"]
        ckpt["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    check(ckpt, (unet, unet_cfg), (vae, vae_cfg), text, text_cfg, open_clip)
    return {k: v.contiguous() for k, v in ckpt.items()}


def check(ckpt, unet, vae, text, text_cfg, open_clip):
    """diffusers' single-file loader must read the folder's exact tensors back."""
    from diffusers.loaders import single_file_utils as sfu

    def same(got, want, what):
        assert set(got) == set(want), f"{what}: {sorted(set(got) ^ set(want))[:5]}"
        for k in want:
            assert torch.equal(got[k], want[k]), f"{what}: {k}"

    same(sfu.convert_ldm_unet_checkpoint(ckpt, unet[1]), unet[0], "unet")
    same(sfu.convert_ldm_vae_checkpoint(ckpt, vae[1]), vae[0], "vae")
    if open_clip:
        from transformers import CLIPTextConfig, CLIPTextModel
        model = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text_cfg.items() if not k.startswith("_")}))
        got = sfu.convert_open_clip_checkpoint(model, ckpt)
        got = {k.removeprefix("text_model."): v for k, v in got.items() if "text_projection" not in k}
        layers = text_cfg["num_hidden_layers"]
        got = {k: v for k, v in got.items() if not k.startswith(f"encoder.layers.{layers}.")}
    else:
        got = sfu.convert_ldm_clip_checkpoint(ckpt)
        got = {k.removeprefix("text_model."): v for k, v in got.items() if "position_ids" not in k}
    same(got, text, "text encoder")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", help="a diffusers SD folder (default: the tiny golden)")
    parser.add_argument("--out", help="the .safetensors to write")
    parser.add_argument("--open-clip", action="store_true", help="SD 2.x layout for the text encoder")
    args = parser.parse_args()
    if args.source:
        parts = [os.path.join(args.source, c) for c in ("unet", "vae", "text_encoder")]
        out = args.out or os.path.basename(os.path.normpath(args.source)) + ".safetensors"
    else:
        latent = os.path.join(GOLDEN, "latent_pipeline")
        parts = [os.path.join(latent, "unet"), os.path.join(latent, "vae"),
                 os.path.join(GOLDEN, "pipeline", "text_encoder")]
        name = "tiny_sd2.safetensors" if args.open_clip else "tiny_sd1.safetensors"
        out = args.out or os.path.join(GOLDEN, "single_file", name)
    ckpt = single_file(*parts, args.open_clip)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(ckpt, out)
    print(f"{out}: {len(ckpt)} tensors, {os.path.getsize(out) / 1e6:.2f} MB; diffusers reads it back exactly")


if __name__ == "__main__":
    main()
