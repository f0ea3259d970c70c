"""Train the text-conditioned pixel-space denoiser (diffusers UNet2DConditionModel).

    python tools/train_unet.py            # trains, checkpoints every 10 min, resumes
    python tools/train_unet.py --warm-start weights/easel-emoji/unet   # no checkpoint yet: go on
                                          # from exported weights (model = EMA = them, fresh AdamW)
    python tools/train_unet.py --export   # EMA weights -> weights/easel-emoji/{unet,scheduler}
    python tools/train_unet.py --flops    # print params and GFLOP per 32x32 image
    python tools/train_unet.py --run unet_wide --channels 32,32,64,112   # another width, its own checkpoints
    python tools/train_unet.py --run unet_wide --channels 32,32,64,112 --warm-start weights/easel-emoji/unet
                                          # a wider net from narrower weights (Net2WiderNet, `widen`)
    python tools/train_unet.py --decay 12130 20000   # cosine lr decay from step 12,130 to 0 at
                                          # 20,000, then stop (pass the same on resume)

32x32 RGB in [-1, 1] (white background = +1), v prediction (v = sqrt(a) eps - sqrt(1-a) x0),
cosine (`squaredcos_cap_v2`) noise schedule over 1000 steps, min-SNR-5 loss weighting,
10 % caption dropout (empty prompt) for classifier-free guidance, EMA of weights.
Conditioning: the last hidden state [77, 128] of the frozen CLIP text encoder in
weights/easel-emoji/text_encoder (after its final layer norm), all 77 positions,
padded with <|endoftext|>, as Stable Diffusion does.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
from common import (TRAIN_DIR, WEIGHTS, Log, cosine_decay, latest_checkpoint, load_tokenizer,  # noqa: E402
                    save_checkpoint, set_threads, to_f16_safetensors, tokenize, write_json)

SIZE = 32
HEADS = 4

UNET = dict(
    sample_size=SIZE,
    in_channels=3,
    out_channels=3,
    # 32x32 -> 16 -> 8 -> 4; attention (self + cross) only at 8x8 and 4x4 (and the
    # 4x4 mid block): self-attention at 32x32 or 16x16 would dominate the cost.
    # The 32x32 level had 16 channels up to step 27,000 (widened then: `widen`).
    block_out_channels=(32, 32, 64, 112),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=128,
    # diffusers' legacy name: with num_attention_heads null, attention_head_dim is the
    # NUMBER OF HEADS (as in Stable Diffusion 1.x).  diffusers refuses num_attention_heads
    # for this class, so we write the count here and state it again in `_easel_note`.
    attention_head_dim=HEADS,
    norm_num_groups=8,
    use_linear_projection=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)

SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
    # v, not epsilon: the cosine schedule ends near zero SNR (t = 999 is pure noise with
    # "trailing" spacing), where x0 = (x - sqrt(1-a) eps) / sqrt(a) amplifies any epsilon
    # error ~10^4 times; an epsilon model trained for a few thousand steps sampled only
    # coloured noise here.  With v, x0 = sqrt(a) x - sqrt(1-a) v stays bounded.
    prediction_type="v_prediction",
    clip_sample=True,
    clip_sample_range=1.0,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="trailing",
)


def make_unet(channels=None):
    """The denoiser; `channels` ("32,32,64,112") overrides block_out_channels."""
    from diffusers import UNet2DConditionModel

    cfg = dict(UNET)
    if channels:
        cfg["block_out_channels"] = tuple(int(c) for c in str(channels).split(","))
    return UNet2DConditionModel(**cfg)


def make_scheduler():
    from diffusers import DDIMScheduler, DDPMScheduler

    return DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k not in ("set_alpha_to_one", "steps_offset")}), \
        DDIMScheduler(**SCHEDULER)


def load_text_encoder():
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(WEIGHTS / "text_encoder", torch_dtype=torch.float32).eval()
    for p in te.parameters():
        p.requires_grad_(False)
    return te


class TextCache:
    """caption -> last hidden state [77, 128] of the frozen text encoder (kept in f16)."""

    def __init__(self, tok, te, limit=60000):
        self.tok, self.te, self.cache, self.limit = tok, te, {}, limit

    @torch.no_grad()
    def __call__(self, caps):
        todo = sorted({c for c in caps if c not in self.cache})
        if len(self.cache) + len(todo) > self.limit:
            # Full: start over, and encode every caption of this batch (clearing only
            # before the update lost this batch's cached ones: a KeyError at ~13k steps).
            self.cache.clear()
            todo = sorted(set(caps))
        if todo:
            h = self.te(input_ids=tokenize(self.tok, todo)).last_hidden_state.to(torch.float16)
            self.cache.update(zip(todo, h))
        return torch.stack([self.cache[c] for c in caps]).float()


def v_loss(unet, x0, t, noise, ctx, acp):
    """The training objective per image [B]: v-prediction MSE with min-SNR-5 weighting."""
    a = acp[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = unet(xt, t, encoder_hidden_states=ctx).sample
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    snr = acp[t] / (1 - acp[t])
    w = torch.clamp(snr, max=5.0) / (snr + 1)
    return w * F.mse_loss(pred, v, reduction="none").mean((1, 2, 3))


def gflops_per_image(unet):
    """Exact forward FLOPs (2 x multiply-adds, from torch's flop counter) for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, SIZE, SIZE)
    ctx = torch.randn(1, 77, UNET["cross_attention_dim"])
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(x, torch.tensor([500]), encoder_hidden_states=ctx)
    return fc.get_total_flops() / 1e9


def warm_start(unet, ema, folder):
    """Load exported (f16) weights into model and EMA; (step, hours) from their config.json.

    Checkpoints live outside the repository and may not outlive a machine; the exported
    EMA is what every session keeps, so training can always go on from it.
    """
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    sd = {k: v.float() for k, v in load_file(folder / "diffusion_pytorch_model.safetensors").items()}
    wide = unet.state_dict()
    if any(v.shape != sd[k].shape for k, v in wide.items()):
        if any(v.shape[a] < sd[k].shape[a] for k, v in wide.items() for a in range(min(2, v.dim()))):
            raise SystemExit(f"{folder}: its weights are wider than --channels; a warm start only widens")
        sd = widen(sd, wide)
    unet.load_state_dict(sd)
    ema.load_state_dict(sd)
    rec = json.load(open(folder / "config.json")).get("_easel_training", {})
    return rec.get("step", 0), rec.get("hours", 0.0)


def _widen_index(n, w):
    """Wide channel -> (narrow channel, copies of it) along an axis that grew from n to w.

    Either the whole axis doubled (a widened level, or a concatenation of widened ones),
    or it is a concatenation [A unchanged | B widened] (an up block's [hidden, skip]
    input), w - n = B.  Each widened channel c becomes the pair 2c, 2c+1 (interleaved,
    so GroupNorm's groups hold the copies of the same narrow channels).
    """
    grown = w - n
    kept = n - grown
    src = [i if i < kept else kept + (i - kept) // 2 for i in range(w)]
    copies = [1 if i < kept else 2 for i in range(w)]
    return torch.tensor(src), torch.tensor(copies, dtype=torch.float32)


def widen(narrow, wide, noise=0.2, seed=0):
    """Net2WiderNet: narrow weights in the wide model's shapes, close to the same function.

    A producer's output channels are copied (axis 0: weights, biases, norms); a consumer
    splits each copied input channel's weight into w (1/2 + d) and w (1/2 - d) with a
    random d, so the sum is unchanged but the copies get different gradients.
    The sinusoidal time embedding doubles its frequencies (10000^(-j/16) vs -k/8), so the
    narrow frequency k is the wide 2k: linear_1 reads only those, zeros elsewhere.
    Exact up to the first resnet whose in and out widths become equal: its 1x1
    conv_shortcut becomes an identity (diffusers has no shortcut then), so from there on
    the function differs (16 -> 32 at the first level: relative error ~0.4 at the
    output), as do GroupNorms over an [unchanged | widened] concatenation.  The deeper
    levels keep their trained weights; training repaired the rest in ~3,000 steps
    (32, 32, 64, 112 from step 27,000: EMA denoising loss back to the narrow net's by 30,200).
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, t in wide.items():
        x = narrow[k]
        if k == "time_embedding.linear_1.weight" and x.shape[1] != t.shape[1]:
            half_n, half_w = x.shape[1] // 2, t.shape[1] // 2
            y = torch.zeros(x.shape[0], t.shape[1])
            for part in range(2):  # [cos | sin]
                y[:, part * half_w:(part + 1) * half_w:2] = x[:, part * half_n:(part + 1) * half_n]
            x = y  # its inputs now match; its outputs widen below like any producer's
        for axis in range(min(2, x.dim())):
            n, w = x.shape[axis], t.shape[axis]
            if n == w:
                continue
            src, copies = _widen_index(n, w)
            x = x.index_select(axis, src)
            if axis == 1:  # consumer: split the copied inputs' weights, sum unchanged
                x = x / copies.view([1, w] + [1] * (x.dim() - 2))
                first = torch.arange(2 * n - w, w, 2)  # first copy of each pair
                half = x[:, first]
                d = (torch.rand(half.shape, generator=g) - 0.5) * noise * half
                x[:, first] += d
                x[:, first + 1] -= d
        assert x.shape == t.shape, (k, x.shape, t.shape)
        out[k] = x.contiguous()
    return out


def export(log, run="unet"):
    ck = latest_checkpoint(TRAIN_DIR / "ckpt" / run)
    state = torch.load(ck, map_location="cpu", weights_only=False)
    unet = make_unet(state.get("args", {}).get("channels"))
    unet.load_state_dict(state["ema"])
    out = WEIGHTS / "unet"
    out.mkdir(parents=True, exist_ok=True)
    unet.save_config(out)
    import json

    cfg = json.load(open(out / "config.json"))
    cfg["_easel_note"] = (f"attention_head_dim is the number of heads ({HEADS} in every attention block; "
                          "head size = channels / heads), diffusers' legacy name, as in Stable Diffusion 1.x. "
                          "Input: 32x32 RGB in [-1, 1]; output: v prediction (see scheduler prediction_type).")
    targs = state.get("args", {})
    cfg["_easel_training"] = {"step": state["step"], "hours": round(state["hours"], 3), "ema": True,
                              "styles": targs.get("styles", "noto"), "decay": targs.get("decay")}
    write_json(out / "config.json", cfg)
    to_f16_safetensors(unet.state_dict(), out / "diffusion_pytorch_model.safetensors")
    _, ddim = make_scheduler()
    ddim.save_config(WEIGHTS / "scheduler")
    log(f"exported EMA of {ck.name} (step {state['step']}, {state['hours']:.2f} h) -> {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--flops", action="store_true")
    ap.add_argument("--steps", type=int, default=1_000_000, help="stop after this many steps in total")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--dropout", type=float, default=0.1, help="caption dropout (empty prompt)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm-start", metavar="DIR", help="without a checkpoint, start from these exported weights")
    ap.add_argument("--channels", help="block_out_channels, e.g. 32,32,64,112 (default: UNET's 32,32,64,112)")
    ap.add_argument("--styles", default=",".join(data.TRAIN_STYLES), help="art styles to train on (data.py)")
    ap.add_argument("--run", default="unet", help="checkpoint folder name under ckpt/ (and the export's source)")
    ap.add_argument("--decay", nargs=2, type=int, metavar=("START", "END"),
                    help="cosine lr decay from START to zero at END, then stop")
    args = ap.parse_args()
    log = Log(TRAIN_DIR / "logs" / "unet.log")
    if args.export:
        return export(log, args.run)
    if args.flops:
        unet = make_unet(args.channels)
        print(f"{sum(p.numel() for p in unet.parameters())/1e6:.3f} M params, "
              f"{gflops_per_image(unet):.4f} GFLOP per {SIZE}x{SIZE} forward")
        return

    threads = set_threads()
    torch.manual_seed(args.seed)
    tok = load_tokenizer()
    text = TextCache(tok, load_text_encoder())
    batches = data.Batches(args.styles.split(","), SIZE, args.seed + 100, comp_frac=0.2)
    ddpm, _ = make_scheduler()
    acp = ddpm.alphas_cumprod
    ck_dir = TRAIN_DIR / "ckpt" / args.run
    ck = latest_checkpoint(ck_dir)
    state = torch.load(ck, map_location="cpu", weights_only=False) if ck else None
    if state and not args.channels:  # a resumed run keeps its width
        args.channels = state.get("args", {}).get("channels")
    unet = make_unet(args.channels)
    ema = copy.deepcopy(unet).eval()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    step, hours = 0, 0.0
    first = 0  # the step this optimizer started at: its lr warm-up counts from there
    if state:
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, hours = state["step"], state["hours"]
        batches.rng = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed {ck} at step {step} ({hours:.2f} h)")
    elif args.warm_start:
        step, hours = warm_start(unet, ema, args.warm_start)
        first = step
        log(f"warm start from {args.warm_start} at step {step} ({hours:.2f} h); fresh optimizer")
    log(f"unet: {sum(p.numel() for p in unet.parameters())/1e6:.2f}M params, batch {args.batch}, "
        f"channels {args.channels or UNET['block_out_channels']}, lr {args.lr}, decay {args.decay}, "
        f"styles {args.styles} ({len(batches.ents)} images), threads {threads}")

    def save():
        save_checkpoint(ck_dir, step, dict(model=unet.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                                           step=step, hours=hours, rng=batches.rng, torch_rng=torch.get_rng_state(),
                                           args=vars(args)))

    warmup = 500
    t_last = t_ck = time.time()
    loss_avg = None
    end = min(args.steps, args.decay[1]) if args.decay else args.steps
    while step < end:
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step - first + 1) / warmup) * (cosine_decay(step, *args.decay)
                                                                          if args.decay else 1.0)
        x01, caps = batches.sample(args.batch)
        x0 = x01 * 2 - 1
        drop = torch.rand(len(caps)) < args.dropout
        caps = ["" if d else c for c, d in zip(caps, drop.tolist())]
        t = torch.randint(0, ddpm.config.num_train_timesteps, (len(caps),))
        loss = v_loss(unet, x0, t, torch.randn_like(x0), text(caps), acp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pm, 1 - d)
        step += 1
        now = time.time()
        hours += min(now - t_last, 60.0) / 3600  # a paused process (SIGSTOP) does not count
        t_last = now
        loss_avg = loss.item() if loss_avg is None else 0.99 * loss_avg + 0.01 * loss.item()
        if step % 50 == 0:
            log(f"step {step} loss {loss_avg:.4f} lr {opt.param_groups[0]['lr']:.2e} hours {hours:.3f} "
                f"({3600 * hours / max(step, 1):.2f} s/step avg)")
        if now - t_ck > args.ckpt_minutes * 60:
            save()
            t_ck = now
    save()
    log("done")


if __name__ == "__main__":
    main()
