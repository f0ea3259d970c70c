"""Golden outputs for easel's model parity tests.

Builds tiny, randomly initialised models with diffusers / transformers (and the
upscaler's PyTorch definition in train_upscaler.py), runs them on seeded inputs,
and writes, per model, a folder in the Hugging Face layout the engine loads
(config.json + weights) plus `golden.safetensors` with the inputs and outputs:

    tests/golden/unet/            UNet2DConditionModel, every block type, SD-1.x style
    tests/golden/unet_linear/     same family with use_linear_projection and head-count config
    tests/golden/clip/            CLIPModel (text + vision towers, projections)
    tests/golden/text_encoder/    CLIPTextModel as transformers 5 saves it (no `text_model.`)
    tests/golden/text_encoder_v4/ the same tensors with transformers 4's `text_model.` prefix
    tests/golden/vae/             AutoencoderKL (decoder and encoder)
    tests/golden/upscaler/        SRVGGNetCompact
    tests/golden/pipeline/        a whole tiny pixel-space pipeline folder (f16) for the
                                  generation-loop tests; its tokenizer/ is the default
                                  model's, copied in by the tests
    tests/golden/latent_pipeline/ a tiny latent pipeline (UNet over latents + VAE, SD 1.x
                                  scheduler settings); text encoder, scorer and tokenizer
                                  come from pipeline/ (`--latent-pipeline` writes only it;
                                  `--vae` only vae/)

With `--default`, it instead runs the shipped default model (weights/easel-emoji) on
fixed inputs and writes tests/golden/default_model.safetensors, recording each weight
file's sha256 so the test can say when the weights changed and this must be rerun.

Weights are perturbed away from their initialisation (norm scales != 1, biases != 0)
so a swapped or skipped tensor shows up in the output. Everything is f32 and small
(the whole folder is a few MB). Run: tools/.venv/bin/python tools/make_golden.py
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")


def perturb(model, seed):
    """Move every parameter off its initial value, deterministically."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("logit_scale"):
                continue
            if p.ndim == 1 and ("norm" in name or "weight" in name):
                p.add_(0.1 * noise)  # norm scales, PReLU slopes, biases
            else:
                p.add_(0.02 * noise)
    model.eval()
    return model


def write(name, model_dir_writer, golden):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model_dir_writer(folder)
    tensors = {k: v.detach().contiguous().float() for k, v in golden.items()}
    save_file(tensors, os.path.join(folder, "golden.safetensors"))
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"{name}: {size / 1e6:.2f} MB, " + ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items()))


def save_diffusers(model):
    def writer(folder):
        model.save_pretrained(folder, safe_serialization=True)

    return writer


def unet(name, seed, **config):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    model = perturb(UNet2DConditionModel(**config), seed)
    g = torch.Generator().manual_seed(seed + 1)
    batch, size = 2, config["sample_size"]
    sample = torch.randn(batch, config["in_channels"], size, size, generator=g)
    timestep = torch.tensor([999.0, 17.0])  # one per batch item, far apart
    context = torch.randn(batch, 7, config["cross_attention_dim"], generator=g)
    with torch.no_grad():
        out = model(sample, timestep, encoder_hidden_states=context).sample
    write(name, save_diffusers(model), dict(sample=sample, timestep=timestep, encoder_hidden_states=context, out=out))


def clip(seed):
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel

    torch.manual_seed(seed)
    text = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
                eos_token_id=999, bos_token_id=998, pad_token_id=999, projection_dim=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8, hidden_act="quick_gelu", projection_dim=16)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = perturb(CLIPModel(config), seed)

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, 998, (3, 16), generator=g)
    ids[:, 0] = 998
    for row, eos in enumerate([5, 15, 1]):  # EOS early, last, right after BOS
        ids[row, eos:] = 999
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        text_out = model.text_model(input_ids=ids)
        vision_out = model.vision_model(pixel_values=pixels)
    # The last hidden state is after final_layer_norm; check the pooled row is at the first EOS.
    assert torch.allclose(text_out.pooler_output[0], text_out.last_hidden_state[0, 5])
    golden = dict(
        input_ids=ids.float(), pixel_values=pixels,
        text_last_hidden_state=text_out.last_hidden_state, text_pooler_output=text_out.pooler_output,
        text_embeds=out.text_embeds, vision_last_hidden_state=vision_out.last_hidden_state,
        vision_pooler_output=vision_out.pooler_output, image_embeds=out.image_embeds,
        logits_per_image=out.logits_per_image,
    )
    write("clip", lambda f: model.save_pretrained(f, safe_serialization=True), golden)

    # The text tower alone, as transformers 5 writes CLIPTextModel (no prefix) ...
    # (In transformers 5, CLIPModel.text_model is itself a CLIPTextModel.)
    text_model = CLIPTextModel(config.text_config)
    text_model.load_state_dict(model.text_model.state_dict())
    text_model.eval()
    text_golden = dict(input_ids=ids.float(), last_hidden_state=text_out.last_hidden_state,
                       pooler_output=text_out.pooler_output)
    write("text_encoder", lambda f: text_model.save_pretrained(f, safe_serialization=True), text_golden)

    # ... and with transformers 4's / SD 1.x's `text_model.` prefix.
    def v4_writer(folder):
        text_model.config.save_pretrained(folder)
        state = {("text_model." + k if not k.startswith("text_model.") else k): v.contiguous()
                 for k, v in text_model.state_dict().items()}
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

    write("text_encoder_v4", v4_writer, text_golden)
    prefixes = {k.split(".")[0] for k in text_model.state_dict()}
    print(f"text_encoder: transformers {__import__('transformers').__version__} top-level names: {sorted(prefixes)}")


def vae(seed):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    model = perturb(AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=16, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, scaling_factor=0.18215,
    ), seed)
    g = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        out = model.decode(latents).sample  # raw decode: the caller divides by scaling_factor first
    # The encoder (img2img's start): an image in [-1, 1], drawn after the decoder's inputs so
    # those stay as they were; `moments` is quant_conv's output (mean, then log-variance).
    image = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        moments = model.quant_conv(model.encoder(image))
        mean = model.encode(image).latent_dist.mean
    assert torch.equal(mean, moments[:, :4])
    golden = dict(latents=latents, out=out, image=image, moments=moments,
                  encoded_latents=mean * model.config.scaling_factor)
    write("vae", save_diffusers(model), golden)


def upscaler(seed):
    from train_upscaler import SRVGGNetCompact

    config = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4, act_type="prelu")
    torch.manual_seed(seed)
    model = perturb(SRVGGNetCompact(**config), seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    with torch.no_grad():
        out = model(x)

    def writer(folder):
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(dict(_class_name="SRVGGNetCompact", **config), f, indent=2)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

    write("upscaler", writer, dict(input=x, out=out))


def pipeline(seed):
    """A complete, tiny, random pixel-space pipeline in the default model's layout."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel
    from train_upscaler import SRVGGNetCompact

    folder = os.path.join(OUT, "pipeline")
    torch.manual_seed(seed)
    text = dict(vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=8)
    vision = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                  image_size=16, patch_size=4, hidden_act="quick_gelu", projection_dim=8)
    f16 = lambda m: m.to(torch.float16)  # noqa: E731
    text_encoder = perturb(CLIPTextModel(CLIPTextConfig(**text)), seed)
    f16(text_encoder).save_pretrained(os.path.join(folder, "text_encoder"), safe_serialization=True)
    scorer = perturb(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)), seed + 1)
    f16(scorer).save_pretrained(os.path.join(folder, "scorer"), safe_serialization=True)
    unet = perturb(UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2), seed + 2)
    f16(unet).save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
    DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, set_alpha_to_one=True,
                  timestep_spacing="trailing").save_pretrained(os.path.join(folder, "scheduler"))
    up_config = dict(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=4, act_type="prelu")
    upscaler = perturb(SRVGGNetCompact(**up_config), seed + 3)
    os.makedirs(os.path.join(folder, "upscaler"), exist_ok=True)
    with open(os.path.join(folder, "upscaler", "config.json"), "w") as f:
        json.dump(dict(_class_name="SRVGGNetCompact", **up_config), f, indent=2)
    save_file({k: v.half().contiguous() for k, v in upscaler.state_dict().items()},
              os.path.join(folder, "upscaler", "model.safetensors"), metadata={"format": "pt"})
    index = {"_class_name": "EaselPixelPipeline", "_easel": {"default_guidance": 3.0, "default_steps": 8},
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "scorer": ["transformers", "CLIPModel"], "upscaler": ["easel", "SRVGGNetCompact"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"pipeline: {size / 1e6:.2f} MB")


def latent_pipeline(seed):
    """A tiny latent (SD 1.x-shaped) pipeline: a 4-channel UNet over 8x8 latents and a
    VAE decoding them to 16x16, with Stable Diffusion's scheduler settings. Its text
    encoder, scorer and tokenizer are the pixel pipeline's, copied in by the tests."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    folder = os.path.join(OUT, "latent_pipeline")
    torch.manual_seed(seed)
    f16 = lambda m: m.to(torch.float16)  # noqa: E731
    unet = perturb(UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2), seed)
    f16(unet).save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
    vae = perturb(AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=16, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, scaling_factor=0.18215), seed + 1)
    f16(vae).save_pretrained(os.path.join(folder, "vae"), safe_serialization=True)
    # Stable Diffusion 1.x's scheduler_config.json (PNDM class; easel samples it with DDIM).
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(os.path.join(folder, "scheduler"))
    index = {"_class_name": "StableDiffusionPipeline", "_easel": {"default_guidance": 7.5, "default_steps": 6},
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDIMScheduler"], "scorer": ["transformers", "CLIPModel"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"latent_pipeline: {size / 1e6:.2f} MB")


def default_model():
    """The shipped model's four networks on fixed inputs, in f32 (weights are f16 on disk)."""
    import hashlib

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPModel, CLIPTextModel
    from train_upscaler import SRVGGNetCompact

    root = os.environ.get("EASEL_MODEL", os.path.join(os.path.dirname(__file__), "..", "weights", "easel-emoji"))
    g = torch.Generator().manual_seed(60)
    meta, golden = {}, {}
    for part, fname in [("text_encoder", "model.safetensors"), ("scorer", "model.safetensors"),
                        ("upscaler", "model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors")]:
        with open(os.path.join(root, part, fname), "rb") as f:
            meta[f"sha256.{part}"] = hashlib.sha256(f.read()).hexdigest()
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(root, "tokenizer"))
    ids = tokenizer(["red apple", "a cat with a hat"], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    golden["input_ids"] = ids.float()
    with torch.no_grad():
        text = CLIPTextModel.from_pretrained(os.path.join(root, "text_encoder"), torch_dtype=torch.float32).eval()
        hidden = text(input_ids=ids).last_hidden_state
        golden["text_last_hidden_state"] = hidden
        scorer = CLIPModel.from_pretrained(os.path.join(root, "scorer"), torch_dtype=torch.float32).eval()
        pixels = torch.randn(2, 3, 32, 32, generator=g)
        golden["pixel_values"] = pixels
        golden["text_embeds"] = scorer(input_ids=ids, pixel_values=pixels).text_embeds
        golden["image_embeds"] = scorer(input_ids=ids, pixel_values=pixels).image_embeds
        unet = UNet2DConditionModel.from_pretrained(os.path.join(root, "unet"), torch_dtype=torch.float32).eval()
        sample = torch.randn(2, 3, 32, 32, generator=g)
        timestep = torch.tensor([900.0, 120.0])
        golden.update(sample=sample, timestep=timestep,
                      unet_out=unet(sample, timestep, encoder_hidden_states=hidden).sample)
        with open(os.path.join(root, "upscaler", "config.json")) as f:
            full = json.load(f)
        cfg = {k: full[k] for k in ("num_in_ch", "num_out_ch", "num_feat", "num_conv", "upscale", "act_type")}
        up = SRVGGNetCompact(**cfg)
        up.load_state_dict({k: v.float() for k, v in load_file(os.path.join(root, "upscaler", "model.safetensors")).items()})
        low = torch.rand(2, 3, 32, 32, generator=g)
        golden.update(upscaler_input=low, upscaler_out=up.eval()(low))
    path = os.path.join(OUT, "default_model.safetensors")
    save_file({k: v.detach().contiguous().float() for k, v in golden.items()}, path, metadata=meta)
    print(f"default model goldens: {os.path.getsize(path) / 1e6:.2f} MB, " + ", ".join(sorted(golden)))


def main():
    torch.set_num_threads(1)
    if "--default" in sys.argv:
        default_model()
        return
    if "--latent-pipeline" in sys.argv:
        latent_pipeline(60)
        return
    if "--vae" in sys.argv:
        vae(30)
        return
    common = dict(sample_size=16, in_channels=4, out_channels=4, norm_num_groups=8,
                  cross_attention_dim=16, layers_per_block=2)
    # SD 1.x style: conv proj_in/proj_out, legacy `attention_head_dim` = head count.
    unet("unet", 10, block_out_channels=(16, 32),
         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
         attention_head_dim=2, use_linear_projection=False, flip_sin_to_cos=True, freq_shift=0,
         **common)
    # SD 2.x style: linear proj_in/proj_out, explicit per-block head dims, freq_shift 1.
    unet("unet_linear", 11, block_out_channels=(16, 32, 32),
         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
         up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
         attention_head_dim=(4, 8, 8), use_linear_projection=True, flip_sin_to_cos=False,
         freq_shift=1, transformer_layers_per_block=1, **common)
    clip(20)
    vae(30)
    upscaler(40)
    pipeline(50)
    latent_pipeline(60)


if __name__ == "__main__":
    main()
