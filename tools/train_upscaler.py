"""Train the x4 upscaler: Real-ESRGAN's compact layout (SRVGGNetCompact).

    python tools/train_upscaler.py            # trains, checkpoints, resumes
    python tools/train_upscaler.py --export   # EMA weights -> weights/easel-emoji/upscaler
    python tools/train_upscaler.py --flops

Layout (same tensor names as realesr-general-x4v3 / basicsr's SRVGGNetCompact):
    body.0   conv3x3 3 -> F            body.1  PReLU(F)
    body.2k  conv3x3 F -> F            body.2k+1 PReLU(F)      k = 1..num_conv
    body.2n+2 conv3x3 F -> 3*4*4       then pixel_shuffle(4)
    out = that + nearest_upsample(input, 4)
Images RGB in [0, 1].  Trained on pairs (16x16 input, 64x64 target) cut from the
64x64 Noto art (area downsampling, plus mild blur/noise on the input, as the
denoiser's output is not a clean downscale); being fully convolutional it runs
on the denoiser's 32x32 output to give 128x128.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
from common import TRAIN_DIR, WEIGHTS, Log, latest_checkpoint, save_checkpoint, set_threads, to_f16_safetensors, write_json  # noqa: E402

CONFIG = dict(num_in_ch=3, num_out_ch=3, num_feat=32, num_conv=12, upscale=4, act_type="prelu")


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact SR network (basicsr/archs/srvgg_arch.py), PReLU variant."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu"):
        super().__init__()
        assert act_type == "prelu"
        self.upscale = upscale
        layers = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):  # [B, 3, H, W] in [0, 1] -> [B, 3, 4H, 4W]
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def degrade(hr, rng):
    """64x64 targets -> 16x16 inputs: area downscale, sometimes a light blur, light noise."""
    lr = F.avg_pool2d(hr, 4)
    b = hr.shape[0]
    blur = torch.from_numpy(rng.random(b) < 0.3).view(-1, 1, 1, 1)
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    soft = F.conv2d(F.pad(lr, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3).repeat(3, 1, 1, 1), groups=3)
    lr = torch.where(blur, 0.5 * lr + 0.5 * soft, lr)
    sigma = torch.from_numpy(rng.uniform(0, 0.02, b)).float().view(-1, 1, 1, 1)
    return (lr + sigma * torch.randn_like(lr)).clamp(0, 1)


def gflops_per_image(model, size=32):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.rand(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def export(log):
    ck = latest_checkpoint(TRAIN_DIR / "ckpt" / "upscaler")
    state = torch.load(ck, map_location="cpu", weights_only=False)
    model = SRVGGNetCompact(**CONFIG)
    model.load_state_dict(state["ema"])
    out = WEIGHTS / "upscaler"
    write_json(out / "config.json", dict(
        _class_name="SRVGGNetCompact", architecture="SRVGGNetCompact (Real-ESRGAN compact, realesr-general-x4v3 layout)",
        **CONFIG, input_range=[0.0, 1.0], residual="output + nearest_upsample(input, upscale)",
        _easel_training={"step": state["step"], "hours": round(state["hours"], 3), "ema": True,
                         "pairs": "16x16 -> 64x64 from Noto art; used on 32x32 -> 128x128"}))
    to_f16_safetensors(model.state_dict(), out / "model.safetensors")
    log(f"exported EMA of {ck.name} -> {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--flops", action="store_true")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    log = Log(TRAIN_DIR / "logs" / "upscaler.log")
    if args.export:
        return export(log)
    if args.flops:
        m = SRVGGNetCompact(**CONFIG)
        print(f"{sum(p.numel() for p in m.parameters())/1e3:.1f} k params, {gflops_per_image(m):.4f} GFLOP per 32->128 image")
        return
    threads = set_threads()
    torch.manual_seed(0)
    batches = data.Batches("noto", 64, 200, comp_frac=0.2)
    rng = np.random.default_rng(201)
    model = SRVGGNetCompact(**CONFIG)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, hours = 0, 0.0
    ck_dir = TRAIN_DIR / "ckpt" / "upscaler"
    ck = latest_checkpoint(ck_dir)
    if ck:
        state = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, hours, batches.rng, rng = state["step"], state["hours"], state["rng"], state["rng2"]
        log(f"resumed {ck} at step {step}")
    log(f"upscaler: {sum(p.numel() for p in model.parameters())} params, batch {args.batch}, threads {threads}")
    t_last = t_ck = time.time()
    loss_avg = None
    while step < args.steps:
        lr = args.lr * (0.5 if step > args.steps * 0.6 else 1.0) * (0.2 if step > args.steps * 0.85 else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        hr, _ = batches.sample(args.batch)
        lr_img = degrade(hr, rng)
        loss = F.l1_loss(model(lr_img), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        step += 1
        now = time.time()
        hours += min(now - t_last, 60.0) / 3600  # a paused process (SIGSTOP) does not count
        t_last = now
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 100 == 0:
            base = F.l1_loss(F.interpolate(lr_img, scale_factor=4, mode="bicubic").clamp(0, 1), hr).item()
            log(f"step {step} L1 {loss_avg:.4f} (bicubic {base:.4f}) hours {hours:.3f}")
        if now - t_ck > 300 or step == args.steps:
            save_checkpoint(ck_dir, step, dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                                               step=step, hours=hours, rng=batches.rng, rng2=rng))
            t_ck = now
    log("done")


if __name__ == "__main__":
    main()
