"""diffusers on the same Stable Diffusion folder as `easel bench generate --model DIR`: the
reference figures for a latent pipeline on CUDA (or the CPU, to try the script).

    python tools/bench_diffusers.py --model DIR [--sizes 256x256,512x512] [--steps 20]
        [--precision fp32|tf32|fp16] [--device cuda|cpu] [--json FILE]

Per size, with the folder's UNet, VAE and text encoder (diffusers / transformers classes,
weights cast to the precision asked), batch 1 image:
  unet_step_ms   one denoising step with classifier-free guidance: the UNet on batch 2
                 (unconditional and prompt), as easel's `bench generate` runs it
  vae_decode_ms  the VAE decoder on one latent (scaled by the config's scaling factor)
  generate_s     the whole generation: text encoder on both prompts, `--steps` DDIM steps
                 with guidance 7.5, the decode, the image brought to the host as 8-bit
  peak_bytes     torch.cuda.max_memory_allocated over the whole generation (CUDA only)

Timing: one warm-up, then the median of `--repeats` runs, each ended by a device sync.
Prompt ids are fixed (BOS, six word ids, EOS padding), so no tokenizer is needed; with
random weights (tools/make_random_sd15.py) the values do not change what is measured.
The JSON document has `engine`, `device`, `precision` and one row per size.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

GUIDANCE = 7.5
CONTEXT = 77
BOS, EOS = 49406, 49407


def parse_sizes(text):
    sizes = []
    for part in text.split(","):
        w, _, h = part.strip().partition("x")
        sizes.append((int(w), int(h or w)))
    return sizes


def prompt_ids(batch, device):
    """[batch, 77]: BOS, six word ids that differ per row, EOS padding."""
    rows = [[BOS] + [320 + 7 * b + i for i in range(6)] + [EOS] * (CONTEXT - 7) for b in range(batch)]
    return torch.tensor(rows, device=device)


class Reference:
    """The folder's models on `device` in `dtype`, and a DDIM schedule of `steps`."""

    def __init__(self, model, device, dtype, steps):
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel

        model = Path(model)
        load = dict(torch_dtype=dtype)
        self.unet = UNet2DConditionModel.from_pretrained(model / "unet", **load).to(device).eval()
        self.vae = AutoencoderKL.from_pretrained(model / "vae", **load).to(device).eval()
        self.text = CLIPTextModel.from_pretrained(model / "text_encoder", **load).to(device).eval()
        self.scheduler = DDIMScheduler.from_pretrained(model / "scheduler")
        self.scheduler.set_timesteps(steps)
        self.device, self.dtype = device, dtype
        self.scale = self.vae.config.scaling_factor
        self.down = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def latents(self, size, batch):
        w, h = size
        g = torch.Generator(device="cpu").manual_seed(0)
        shape = (batch, self.unet.config.in_channels, h // self.down, w // self.down)
        return torch.randn(shape, generator=g).to(self.device, self.dtype)

    def context(self):
        return self.text(prompt_ids(2, self.device))[0]

    def guided(self, x, t, context):
        """One UNet pass on [uncond, cond] and the guided noise prediction."""
        eps = self.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample
        uncond, cond = eps.chunk(2)
        return uncond + GUIDANCE * (cond - uncond)

    def decode(self, x):
        return self.vae.decode(x / self.scale).sample

    def generate(self, size):
        context = self.context()
        x = self.latents(size, 1) * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            x = self.scheduler.step(self.guided(x, t, context), t, x).prev_sample
        image = ((self.decode(x) + 1) * 127.5).clamp(0, 255).to(torch.uint8)
        return image.cpu()


def timed(fn, sync, repeats):
    """Median seconds of `repeats` runs of `fn` after one warm-up."""
    fn()
    sync()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(ref, size, repeats):
    context = ref.context()
    x = ref.latents(size, 1)
    t = ref.scheduler.timesteps[0]
    row = {"size": f"{size[0]}x{size[1]}"}
    row["unet_step_ms"] = 1e3 * timed(lambda: ref.guided(x, t, context), ref.sync, repeats)
    row["vae_decode_ms"] = 1e3 * timed(lambda: ref.decode(x), ref.sync, repeats)
    if ref.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row["generate_s"] = timed(lambda: ref.generate(size), ref.sync, max(1, repeats // 3))
    if ref.device.type == "cuda":
        row["peak_bytes"] = torch.cuda.max_memory_allocated()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a diffusers Stable Diffusion folder")
    ap.add_argument("--sizes", default="256x256,512x512")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", choices=["fp32", "tf32", "fp16"], default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    device = torch.device(args.device)
    # TF32 only when asked: fp32 is the f32 arithmetic easel's f32 kernels do.
    torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    dtype = torch.float16 if args.precision == "fp16" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"engine": "diffusers", "device": name, "precision": args.precision, "steps": args.steps, "rows": []}
    with torch.inference_mode():
        ref = Reference(args.model, device, dtype, args.steps)
        print(f"{'size':>10} {'UNet step (CFG) ms':>20} {'VAE decode ms':>14} {'whole s':>8} {'peak GB':>8}")
        for size in parse_sizes(args.sizes):
            row = measure(ref, size, args.repeats)
            report["rows"].append(row)
            peak = row.get("peak_bytes")
            print(
                f"{row['size']:>10} {row['unet_step_ms']:>20.1f} {row['vae_decode_ms']:>14.1f} "
                f"{row['generate_s']:>8.2f} {peak / 1e9 if peak else float('nan'):>8.2f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
