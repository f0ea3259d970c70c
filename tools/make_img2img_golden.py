"""Goldens for img2img and inpainting: diffusers' own pipelines on the tiny latent
pipeline (tests/golden/latent_pipeline, with tests/golden/pipeline's text encoder and
CLIP's full tokenizer, as tests/common/files.rs assembles it).

Writes tests/golden/img2img/:
    init.png, mask.png      a 16x16 start picture and a mask (white 8x8 square: repaint)
    golden.safetensors      `img2img` and `inpaint`: the pipelines' images [3, 16, 16] in
                            [0, 1]; `inpaint9` and `inpaint9_half`: the inpainting
                            pipeline's with the 9-channel UNet below at strength 1 and
                            0.5; `noise`: the start noise [1, 4, 8, 8] all used
    unet9/                  a dedicated inpainting UNet (in_channels 9: latents, mask,
                            masked-image latents, as SD-1.5-inpainting): the tiny latent
                            UNet with conv_in widened, the 5 new input channels' weights
                            seeded random at the scale of the others
    levels.json             each scheduler's `add_noise` at the first timestep that
                            `get_timesteps` keeps, for a few (steps, strength)

So that the comparison is deterministic, the pipelines get easel's start noise (Philox
4x32-10 keyed by (seed, candidate 0, step 0, stream 0), then Box-Muller, as
wgsl/noise.wgsl and tests/reference/noise.rs) instead of torch's, the VAE's mean instead
of a sample of it (`retrieve_latents(sample_mode="argmax")`, easel's documented choice),
and DDIM with eta 0, which draws no other noise. easel returns the decoded x0 of its last
step (blended with the start in the kept region for inpainting), so that is what is
recorded here too, captured from the scheduler's `pred_original_sample`.

Run: tools/.venv/bin/python tools/make_img2img_golden.py
"""

import copy
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(__file__), "..")
GOLDEN = os.path.join(ROOT, "tests", "golden")
OUT = os.path.join(GOLDEN, "img2img")
PROMPT, SEED, STEPS, GUIDANCE = "red apple", 3, 6, 7.5


def philox4x32_10(counter, key):
    """Philox 4x32-10 on uint64 numpy arrays holding uint32 values (counter: 4 arrays)."""
    m0, m1, w0, w1, mask = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF
    c = [np.asarray(v, dtype=np.uint64) for v in counter]
    k = [np.uint64(key[0]), np.uint64(key[1])]
    for r in range(10):
        if r > 0:
            k = [(k[0] + np.uint64(w0)) & np.uint64(mask), (k[1] + np.uint64(w1)) & np.uint64(mask)]
        p0 = np.uint64(m0) * c[0]
        p1 = np.uint64(m1) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k[0], p1 & np.uint64(mask),
             (p0 >> np.uint64(32)) ^ c[3] ^ k[1], p0 & np.uint64(mask)]
    return c


def easel_noise(seed, n, candidate=0, step=0, stream=0):
    """easel's `noise::gaussian` for one candidate of n values (f64 Box-Muller)."""
    i = np.arange(n)
    block = (i // 4).astype(np.uint64)
    bits = philox4x32_10([block, np.full(n, candidate), np.full(n, step), np.full(n, stream)],
                         (seed & 0xFFFFFFFF, seed >> 32))
    pair = (i % 4) // 2
    a = np.where(pair == 0, bits[0], bits[2])
    b = np.where(pair == 0, bits[1], bits[3])
    unit = lambda x: ((x >> np.uint64(8)).astype(np.float64) + 0.5) / 16777216.0  # noqa: E731
    r = np.sqrt(-2.0 * np.log(unit(a)))
    theta = 2.0 * np.pi * unit(b)
    return np.where(i % 2 == 0, r * np.cos(theta), r * np.sin(theta))


def pictures():
    """A smooth colourful 16x16 start picture and a mask with a white 8x8 square."""
    y, x = np.mgrid[0:16, 0:16] / 15.0
    rgb = np.stack([0.2 + 0.6 * x, 0.8 - 0.5 * y, 0.5 + 0.4 * np.sin(6 * x * y)], -1)
    init = Image.fromarray((rgb * 255).round().astype(np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    return init, Image.fromarray(mask).convert("RGB")


def inpainting_unet():
    """The tiny latent UNet with conv_in widened to 9 input channels; the weights of
    the 5 new ones (mask, masked-image latents) seeded random at the others' scale."""
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(os.path.join(GOLDEN, "latent_pipeline", "unet"),
                                                torch_dtype=torch.float32)
    config = {k: v for k, v in base.config.items() if k != "_name_or_path"}
    unet = UNet2DConditionModel.from_config({**config, "in_channels": 9})
    state = base.state_dict()
    w = state["conv_in.weight"]  # [C, 4, 3, 3]
    extra = torch.randn(w.shape[0], 5, *w.shape[2:], generator=torch.Generator().manual_seed(9)) * w.std()
    extra = extra.half().float()  # stored in f16 like the rest: the golden runs what is saved
    state["conv_in.weight"] = torch.cat([w, extra], 1)  # [C, 9, 3, 3]
    unet.load_state_dict(state)
    return unet


def components():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    latent = os.path.join(GOLDEN, "latent_pipeline")
    f32 = dict(torch_dtype=torch.float32)
    return dict(
        vae=AutoencoderKL.from_pretrained(os.path.join(latent, "vae"), **f32),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(latent, "unet"), **f32),
        scheduler=DDIMScheduler.from_pretrained(os.path.join(latent, "scheduler")),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(GOLDEN, "pipeline", "text_encoder"), **f32),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(ROOT, "weights", "easel-emoji", "clip_tokenizer")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def run(pipe_class, module, noise, unet=None, **inputs):
    """Run a pipeline with easel's noise and the VAE's mean (and `unet` if given);
    return (x0 of the last step, pipe)."""
    pipe = pipe_class(**{**components(), **({"unet": unet} if unet is not None else {})})
    original = module.retrieve_latents
    module.retrieve_latents = lambda out, generator=None, sample_mode="sample": original(out, generator, "argmax")
    module.randn_tensor = lambda shape, generator=None, device=None, dtype=None, layout=None: noise.to(dtype)
    x0s = []
    step = pipe.scheduler.step

    def recording_step(*args, return_dict=True, **kwargs):
        out = step(*args, return_dict=True, **kwargs)
        x0s.append(out.pred_original_sample)
        return out if return_dict else (out.prev_sample,)

    pipe.scheduler.step = recording_step
    with torch.no_grad():
        pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=GUIDANCE,
             output_type="latent", **inputs)
    return x0s[-1], pipe


def decode(pipe, latents):
    with torch.no_grad():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return ((image[0] + 1) / 2).clamp(0, 1)


def levels():
    """add_noise(1, 0) and add_noise(0, 1) at the first kept timestep of each scheduler."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    config = os.path.join(GOLDEN, "latent_pipeline", "scheduler")
    out = []
    for cls in (DDIMScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler):
        for steps, strength in ((6, 0.5), (10, 0.3), (4, 1.0)):
            s = cls.from_pretrained(config)
            s.set_timesteps(steps)
            run_steps = min(int(steps * strength), steps)
            t_start = max(steps - run_steps, 0)
            timesteps = s.timesteps[t_start * s.order:]
            if hasattr(s, "set_begin_index"):
                s.set_begin_index(t_start * s.order)
            t = timesteps[:1]
            one, zero = torch.ones(1, 1), torch.zeros(1, 1)
            level_x = s.add_noise(one, zero, t).item()
            s = cls.from_pretrained(config)
            s.set_timesteps(steps)
            if hasattr(s, "set_begin_index"):
                s.set_begin_index(t_start * s.order)
            level_noise = s.add_noise(zero, one, t).item()
            out.append(dict(scheduler=cls.__name__, steps=steps, strength=strength, run=len(timesteps),
                            timestep=float(t[0]), level_x=level_x, level_noise=level_noise))
    return out


def main():
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as img2img_module
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint_module
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    init, mask = pictures()
    init.save(os.path.join(OUT, "init.png"))
    mask.save(os.path.join(OUT, "mask.png"))
    noise = torch.tensor(easel_noise(SEED, 4 * 8 * 8), dtype=torch.float32).reshape(1, 4, 8, 8)

    x0, pipe = run(StableDiffusionImg2ImgPipeline, img2img_module, noise, image=init, strength=0.5)
    img2img = decode(pipe, x0)

    x0, pipe = run(StableDiffusionInpaintPipeline, inpaint_module, noise, image=init, mask_image=mask,
                   strength=0.75, height=16, width=16)
    pixels = pipe.image_processor.preprocess(init, height=16, width=16)
    with torch.no_grad():
        start = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., 2:6, 2:6] = 1  # the mask at the latents' size: 1 repaints
    inpaint = decode(pipe, keep * x0 + (1 - keep) * start)

    # The 9-channel UNet: no blend with the start after a step (diffusers blends only for
    # a 4-channel UNet), so the image is the decoded x0 itself. Strength 1 starts from
    # the noise alone (`is_strength_max`), 0.5 from the start noised (3 of 6 steps).
    unet9 = inpainting_unet()
    copy.deepcopy(unet9).half().save_pretrained(os.path.join(OUT, "unet9"))
    inpaint9 = {}
    for key, strength in (("inpaint9", 1.0), ("inpaint9_half", 0.5)):
        x0, pipe = run(StableDiffusionInpaintPipeline, inpaint_module, noise, unet=unet9, image=init,
                       mask_image=mask, strength=strength, height=16, width=16)
        inpaint9[key] = decode(pipe, x0).contiguous()

    save_file(dict(img2img=img2img.contiguous(), inpaint=inpaint.contiguous(), noise=noise, **inpaint9),
              os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "levels.json"), "w") as f:
        json.dump(dict(prompt=PROMPT, seed=SEED, steps=STEPS, guidance=GUIDANCE, levels=levels()), f, indent=1)
    print("img2img golden:", {k: list(v.shape) for k, v in dict(img2img=img2img, inpaint=inpaint, **inpaint9).items()})


if __name__ == "__main__":
    main()
