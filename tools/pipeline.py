"""The PyTorch reference pipeline for a model folder in easel's layout (weights/easel-emoji).

Loads the exported files exactly as the engine does (tokenizer/, text_encoder/, unet/,
scheduler/, scorer/, upscaler/), so figures and golden outputs come from the shipped
weights, not from training checkpoints.

    from pipeline import Pipeline
    p = Pipeline()                                    # default: weights/easel-emoji
    imgs = p.generate(["red apple"], seed=0)          # [N, 3, 32, 32] in [0, 1]
    big = p.upscale(imgs)                             # [N, 3, 128, 128] in [0, 1]
    sims = p.score(imgs, ["red apple", "cat"])        # cosine similarities [N, 2]
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIP_MEAN, CLIP_STD, WEIGHTS, load_tokenizer, tokenize  # noqa: E402


def load_clip(folder):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(folder, torch_dtype=torch.float32).eval()


class Pipeline:
    def __init__(self, folder=None, device="cpu"):
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel

        from train_upscaler import SRVGGNetCompact
        from safetensors.torch import load_file

        self.folder, self.device = Path(folder or WEIGHTS), torch.device(device)
        self.tok = load_tokenizer(self.folder / "tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(self.folder / "text_encoder", torch_dtype=torch.float32).eval()
        self.unet = UNet2DConditionModel.from_pretrained(self.folder / "unet", torch_dtype=torch.float32).eval()
        self.scheduler = DDIMScheduler.from_pretrained(self.folder / "scheduler")
        self.scorer = load_clip(self.folder / "scorer") if (self.folder / "scorer").exists() else None
        self.upscaler = None
        if (self.folder / "upscaler" / "model.safetensors").exists():
            cfg = json.load(open(self.folder / "upscaler" / "config.json"))
            keys = ("num_in_ch", "num_out_ch", "num_feat", "num_conv", "upscale", "act_type")
            self.upscaler = SRVGGNetCompact(**{k: cfg[k] for k in keys}).eval()
            sd = load_file(self.folder / "upscaler" / "model.safetensors")
            self.upscaler.load_state_dict({k: v.float() for k, v in sd.items()})
        self.text_encoder.to(self.device)
        self.unet.to(self.device)

    @torch.no_grad()
    def encode(self, prompts):
        """Last hidden state [N, 77, 128] (the UNet's conditioning)."""
        return self.text_encoder(input_ids=tokenize(self.tok, prompts).to(self.device)).last_hidden_state

    @torch.no_grad()
    def generate(self, prompts, seed=0, steps=50, guidance=2.0, batch=200):
        """DDIM (eta 0) with classifier-free guidance; one image per prompt, images in [0, 1].
        Image i starts from noise drawn with torch.Generator seeded `seed + i` (on the CPU,
        whatever the device: the same seeds give the same starting noise everywhere)."""
        size = self.unet.config.sample_size
        out = []
        uncond = self.encode([""])
        for s in range(0, len(prompts), batch):
            chunk = prompts[s:s + batch]
            cond = self.encode(chunk)
            n = len(chunk)
            x = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed + s + i))
                             for i in range(n)]).to(self.device)
            self.scheduler.set_timesteps(steps)
            ctx = torch.cat([uncond.expand(n, -1, -1), cond])
            for t in self.scheduler.timesteps:
                eps_u, eps_c = self.unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
                x = self.scheduler.step(eps, t, x, eta=0.0).prev_sample
            out.append(((x + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def upscale(self, imgs01):
        return self.upscaler(imgs01).clamp(0, 1)

    @torch.no_grad()
    def score(self, imgs01, texts, model=None):
        return clip_similarity(model or self.scorer, self.tok, imgs01, texts)


@torch.no_grad()
def clip_similarity(model, tok, imgs01, texts, batch=512):
    """Cosine similarities [N_images, N_texts]; images in [0, 1] at the model's size."""
    size = model.config.vision_config.image_size
    if imgs01.shape[-1] != size:
        imgs01 = F.interpolate(imgs01, size=(size, size), mode="area")
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    feats = []
    for s in range(0, len(imgs01), batch):
        f = model.get_image_features(pixel_values=(imgs01[s:s + batch] - mean) / std)
        feats.append(getattr(f, "pooler_output", f))
    img = F.normalize(torch.cat(feats), dim=-1)
    tf = []
    for s in range(0, len(texts), batch):
        f = model.get_text_features(input_ids=tokenize(tok, texts[s:s + batch]))
        tf.append(getattr(f, "pooler_output", f))
    txt = F.normalize(torch.cat(tf), dim=-1)
    return img @ txt.t()
