"""LoRA goldens for easel's `--lora` tests (tests/lora.rs).

Makes a tiny LoRA for the tiny pixel pipeline in tests/golden/pipeline/ with peft
(adapters on the UNet's attention projections, feed-forwards, 1x1 and 3x3
convolutions ("LoCon") and time-embedding projections, and on every Linear layer of
the CLIP text encoder), and writes it in the two file formats easel reads:

    tests/golden/lora/peft.safetensors   diffusers/peft: `unet.*.lora_A.weight` /
                                         `lora_B.weight`, `text_encoder.*`, f32, alpha in
                                         the `lora_adapter_metadata` header (as diffusers'
                                         `save_lora_weights` writes it)
    tests/golden/lora/kohya.safetensors  kohya / A1111: `lora_unet_*`, `lora_te_*`,
                                         `.lora_down.weight` / `.lora_up.weight` and a
                                         `.alpha` per module, f16
    tests/golden/lora/golden.safetensors inputs, and the UNet's and text encoder's outputs
                                         after diffusers' `load_lora_weights` +
                                         `fuse_lora(lora_scale=...)` of each file (f32)

The kohya file is loaded through diffusers' own kohya converter, so the goldens
check that easel maps kohya names as diffusers does. Run:
tools/.venv/bin/python tools/make_lora_golden.py
"""

import os

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import CLIPTextModel

# transformers 5.24 asks for peft >= 0.22 in `add_adapter` / `load_adapter`; the
# newest peft on the package index is 0.21.2, whose LoRA layers are the same for
# nn.Linear (all a text encoder has), so the version gate is lifted here.
import transformers.integrations.peft as _transformers_peft  # noqa: E402

_transformers_peft.check_peft_version = lambda **_: None

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
PIPE = os.path.join(ROOT, "pipeline")
OUT = os.path.join(ROOT, "lora")

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut", "time_emb_proj"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
RANK, ALPHA = 4, 2.0  # peft file: scale alpha / rank = 0.5
KOHYA_ALPHA = 1.0  # kohya file: scale 0.25
WEIGHTS = {"peft": 1.0, "kohya": 0.7}  # the `--lora FILE:WEIGHT` each golden was fused with


class Components(StableDiffusionLoraLoaderMixin):
    """The two models a Stable Diffusion pipeline loads LoRAs into, without the rest."""

    hf_device_map = None  # nothing is offloaded

    def __init__(self):
        self.unet = UNet2DConditionModel.from_pretrained(os.path.join(PIPE, "unet"), torch_dtype=torch.float32)
        self.text_encoder = CLIPTextModel.from_pretrained(os.path.join(PIPE, "text_encoder"),
                                                          torch_dtype=torch.float32)
        self.unet.eval()
        self.text_encoder.eval()

    @property
    def components(self):
        return {"unet": self.unet, "text_encoder": self.text_encoder}


def make_lora(seed):
    """peft adapters on both models with random (non-zero) A and B; their state dicts."""
    models = Components()
    g = torch.Generator().manual_seed(seed)
    config = dict(r=RANK, lora_alpha=ALPHA, init_lora_weights=False)
    models.unet.add_adapter(LoraConfig(target_modules=UNET_TARGETS, **config))
    models.text_encoder.add_adapter(LoraConfig(target_modules=TEXT_TARGETS, **config))
    with torch.no_grad():
        for model in (models.unet, models.text_encoder):
            for name, p in sorted(model.named_parameters()):
                if "lora_" in name:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return models, get_peft_model_state_dict(models.unet), get_peft_model_state_dict(models.text_encoder)


def write_peft(models, unet_layers, text_layers):
    meta = lambda m: m.peft_config["default"].to_dict()  # noqa: E731
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        OUT, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers,
        unet_lora_adapter_metadata=meta(models.unet), text_encoder_lora_adapter_metadata=meta(models.text_encoder),
        weight_name="peft.safetensors")


def write_kohya(unet_layers, text_layers):
    """The same matrices under kohya's names (the text encoder's with transformers 4's
    `text_model.` path, as kohya writes them whatever transformers saved the model), f16.

    One alpha for every module: diffusers 0.42's kohya converter files per-module
    alphas under names that miss the attention modules (it warns "alpha_pattern keys
    did not match any targeted module"), so varied alphas would make a wrong golden.
    easel's per-module scale is checked against the CPU reference instead."""
    state = {}
    for prefix, layers in (("lora_unet_", unet_layers), ("lora_te_text_model_", text_layers)):
        for module in sorted({k.rsplit(".lora_", 1)[0] for k in layers}):
            kohya = prefix + module.replace(".", "_")
            state[f"{kohya}.lora_down.weight"] = layers[f"{module}.lora_A.weight"].half().contiguous()
            state[f"{kohya}.lora_up.weight"] = layers[f"{module}.lora_B.weight"].half().contiguous()
            state[f"{kohya}.alpha"] = torch.tensor(KOHYA_ALPHA, dtype=torch.float16)
    save_file(state, os.path.join(OUT, "kohya.safetensors"), metadata={"format": "pt"})


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((2, 77), 49407, dtype=torch.long)
    ids[:, 0] = 49406
    ids[0, 1:6] = torch.randint(0, 49406, (5,), generator=g)
    ids[1, 1:12] = torch.randint(0, 49406, (11,), generator=g)
    sample = torch.randn(2, 3, 16, 16, generator=g)
    timestep = torch.tensor([999.0, 17.0])
    context = torch.randn(2, 7, 8, generator=g)
    return dict(input_ids=ids, sample=sample, timestep=timestep, encoder_hidden_states=context)


def outputs(models, x):
    with torch.no_grad():
        unet = models.unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"]).sample
        text = models.text_encoder(input_ids=x["input_ids"]).last_hidden_state
    return unet, text


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    models, unet_layers, text_layers = make_lora(70)
    write_peft(models, unet_layers, text_layers)
    write_kohya(unet_layers, text_layers)
    x = inputs(71)
    golden = {k: v.float() for k, v in x.items()}
    for fmt, weight in WEIGHTS.items():
        fused = Components()
        fused.load_lora_weights(os.path.join(OUT, f"{fmt}.safetensors"))
        fused.fuse_lora(lora_scale=weight)
        golden[f"{fmt}_unet_out"], golden[f"{fmt}_text_last_hidden_state"] = outputs(fused, x)
    base_unet, base_text = outputs(Components(), x)
    for fmt in WEIGHTS:  # the LoRA must move the outputs well beyond the tolerance
        print(f"{fmt}: unet moved {(golden[f'{fmt}_unet_out'] - base_unet).abs().max():.3f} "
              f"(scale {base_unet.abs().max():.3f}), text moved "
              f"{(golden[f'{fmt}_text_last_hidden_state'] - base_text).abs().max():.3f}")
    save_file({k: v.contiguous() for k, v in golden.items()}, os.path.join(OUT, "golden.safetensors"))
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"lora: {size / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
