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
    python tools/train_unet.py --config emoji64 --data emoji64.npz --batch 256 --max-minutes 8 \
        --export-to OUT/unet              # the 64x64 model on a GPU (bf16, TF32): see docs/training.md
    python tools/train_unet.py --config emoji64 --device cpu --amp bf16 ...   # the same path on CPU

Devices (tools/accel.py): `--device auto` is cuda when torch sees one; there `--amp auto`
is bf16 autocast (the loss in f32) and TF32 is allowed; `--compile` wraps the UNet in
torch.compile.  On the CPU nothing changes unless asked (`--amp bf16` runs the GPU's
arithmetic there).  `--max-minutes` stops a run in time (a checkpoint, and with
`--export-to DIR` the EMA as an exported unet folder, every `--ckpt-minutes` and at the
end); the next run goes on from that folder with `--warm-start DIR`.

Configs (`--config`): emoji32 (the shipped 32x32 model, `UNET`) and emoji64 (`UNET64`).
32x32 (or 64x64) RGB in [-1, 1] (white background = +1), v prediction (v = sqrt(a) eps - sqrt(1-a) x0),
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
import accel  # noqa: E402
import data  # noqa: E402
from common import (TRAIN_DIR, WEIGHTS, Log, cosine_decay, latest_checkpoint, load_tokenizer,  # noqa: E402
                    save_checkpoint, set_threads, to_f16_safetensors, tokenize, write_json)

HEADS = 4

UNET = dict(
    sample_size=32,
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

# The larger model (`--config emoji64`), for GPU training: 64x64 -> 32 -> 16 -> 8, self-
# and cross-attention at 16x16 and 8x8 (and the 8x8 mid block).  3.81 M parameters (7.6 MB
# in f16), 1.084 GFLOP per forward (2.4x emoji32's 0.447): chosen so that the README
# command (K = 4, 25 steps, x4 upscale) stays within 30 s on lavapipe (docs/training.md).
UNET64 = dict(UNET, sample_size=64, block_out_channels=(16, 24, 48, 128))
CONFIGS = {"emoji32": UNET, "emoji64": UNET64}
# DDIM steps the exported model_index.json suggests (`_easel.default_steps`).
DEFAULT_STEPS = {"emoji32": 50, "emoji64": 25}

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


def make_unet(channels=None, config="emoji32"):
    """The denoiser of a config (CONFIGS); `channels` ("32,32,64,112") overrides its
    block_out_channels."""
    from diffusers import UNet2DConditionModel

    if config not in CONFIGS:
        raise SystemExit(f"--config {config}: must be one of {', '.join(CONFIGS)}")
    cfg = dict(CONFIGS[config])
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
        self.device = next(te.parameters()).device

    @torch.no_grad()
    def __call__(self, caps):
        todo = sorted({c for c in caps if c not in self.cache})
        if len(self.cache) + len(todo) > self.limit:
            # Full: start over, and encode every caption of this batch (clearing only
            # before the update lost this batch's cached ones: a KeyError at ~13k steps).
            self.cache.clear()
            todo = sorted(set(caps))
        if todo:
            h = self.te(input_ids=tokenize(self.tok, todo).to(self.device)).last_hidden_state.to(torch.float16)
            self.cache.update(zip(todo, h))
        return torch.stack([self.cache[c] for c in caps]).float()


def v_loss(unet, x0, t, noise, ctx, acp):
    """The training objective per image [B]: v-prediction MSE with min-SNR-5 weighting."""
    a = acp[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = unet(xt, t, encoder_hidden_states=ctx).sample.float()  # f32 loss under bf16 autocast
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    snr = acp[t] / (1 - acp[t])
    w = torch.clamp(snr, max=5.0) / (snr + 1)
    return w * F.mse_loss(pred, v, reduction="none").mean((1, 2, 3))


def gflops_per_image(unet):
    """Exact forward FLOPs (2 x multiply-adds, from torch's flop counter) for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    size = unet.config.sample_size
    x = torch.randn(1, 3, size, size)
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


def write_unet(unet, folder, record):
    """An exported unet folder: diffusers config.json (with `_easel_note` and the training
    `record`) and the weights as f16 safetensors.  Both are written aside and renamed into
    place, so a run killed while exporting leaves the previous export whole."""
    import json
    import os

    folder = Path(folder)
    tmp = folder / ".partial"
    tmp.mkdir(parents=True, exist_ok=True)
    unet.save_config(tmp)
    cfg = json.load(open(tmp / "config.json"))
    size = cfg["sample_size"]
    cfg["_easel_note"] = (f"attention_head_dim is the number of heads ({HEADS} in every attention block; "
                          "head size = channels / heads), diffusers' legacy name, as in Stable Diffusion 1.x. "
                          f"Input: {size}x{size} RGB in [-1, 1]; output: v prediction (see scheduler prediction_type).")
    cfg["_easel_training"] = record
    write_json(tmp / "config.json", cfg)
    to_f16_safetensors(unet.state_dict(), tmp / "diffusion_pytorch_model.safetensors")
    for name in ("diffusion_pytorch_model.safetensors", "config.json"):
        os.replace(tmp / name, folder / name)
    tmp.rmdir()


def training_record(step, hours, targs):
    return {"step": step, "hours": round(hours, 3), "ema": True, "config": targs.get("config", "emoji32"),
            "styles": targs.get("styles", "noto"), "decay": targs.get("decay")}


def export(log, run="unet", ckpt_dir=None):
    ck = latest_checkpoint(ckpt_dir or TRAIN_DIR / "ckpt" / run)
    state = torch.load(ck, map_location="cpu", weights_only=False)
    targs = state.get("args", {})
    unet = make_unet(targs.get("channels"), targs.get("config", "emoji32"))
    unet.load_state_dict(state["ema"])
    write_unet(unet, WEIGHTS / "unet", training_record(state["step"], state["hours"], targs))
    _, ddim = make_scheduler()
    ddim.save_config(WEIGHTS / "scheduler")
    log(f"exported EMA of {ck.name} (step {state['step']}, {state['hours']:.2f} h) -> {WEIGHTS / 'unet'}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--flops", action="store_true")
    ap.add_argument("--config", choices=sorted(CONFIGS), help="the UNet (default: emoji32; a resumed run keeps its own)")
    ap.add_argument("--steps", type=int, default=1_000_000, help="stop after this many steps in total")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--dropout", type=float, default=0.1, help="caption dropout (empty prompt)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm-start", metavar="DIR", help="without a checkpoint, start from these exported weights")
    ap.add_argument("--channels", help="block_out_channels, e.g. 32,32,64,112 (default: the config's)")
    ap.add_argument("--styles", default=",".join(data.TRAIN_STYLES), help="art styles to train on (data.py)")
    ap.add_argument("--data", metavar="FILE", help="read the art from this .npz (data.py --npz) instead of data/")
    ap.add_argument("--run", default="unet", help="checkpoint folder name under ckpt/ (and the export's source)")
    ap.add_argument("--ckpt-dir", metavar="DIR", help="checkpoint folder (default: $EASEL_TRAIN_DIR/ckpt/RUN)")
    ap.add_argument("--decay", nargs=2, type=int, metavar=("START", "END"),
                    help="cosine lr decay from START to zero at END, then stop")
    ap.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu or cuda")
    ap.add_argument("--amp", default="auto", help="auto (bf16 on cuda), none or bf16")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet for the training steps")
    ap.add_argument("--max-minutes", type=float, help="stop (checkpoint, export) after this many minutes")
    ap.add_argument("--export-to", metavar="DIR",
                    help="also write the EMA as an exported unet folder here at every checkpoint and at the end")
    return ap.parse_args()


class Trainer:
    """The model, its EMA and optimizer, the data and the step counter of one run."""

    def __init__(self, args, log):
        self.args, self.log = args, log
        self.dev = accel.Device(args.device, args.amp, args.compile)
        self.threads = set_threads() if not self.dev.cuda else torch.get_num_threads()
        torch.manual_seed(args.seed)
        if args.data:
            data.use_file(args.data)
        self.ck_dir = Path(args.ckpt_dir) if args.ckpt_dir else TRAIN_DIR / "ckpt" / args.run
        ck = latest_checkpoint(self.ck_dir)
        state = torch.load(ck, map_location="cpu", weights_only=False) if ck else None
        if state:  # a resumed run keeps its config and width
            args.config = state.get("args", {}).get("config") or "emoji32"
            args.channels = args.channels or state.get("args", {}).get("channels")
        args.config = args.config or "emoji32"
        self.unet = make_unet(args.channels, args.config)
        self.ema = copy.deepcopy(self.unet).eval()
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=args.lr, weight_decay=0.01)
        size = self.unet.config.sample_size
        self.batches = data.Batches(args.styles.split(","), size, args.seed + 100, comp_frac=0.2, device=self.dev.device)
        self.step, self.hours, self.first = 0, 0.0, 0  # first: the step this optimizer started at
        if state:
            self.resume(ck, state)
        elif args.warm_start:
            self.step, self.hours = warm_start(self.unet, self.ema, args.warm_start)
            self.first = self.step
            log(f"warm start from {args.warm_start} at step {self.step} ({self.hours:.2f} h); fresh optimizer")
        for m in (self.unet, self.ema):
            m.to(self.dev.device)
        self.text = TextCache(load_tokenizer(), load_text_encoder().to(self.dev.device))
        self.acp = make_scheduler()[0].alphas_cumprod.to(self.dev.device)
        self.forward = self.dev.forward(self.unet)

    def resume(self, ck, state):
        self.unet.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.hours = state["step"], state["hours"]
        self.batches.rng = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.log(f"resumed {ck} at step {self.step} ({self.hours:.2f} h)")

    def save(self):
        a = self.args
        save_checkpoint(self.ck_dir, self.step, dict(
            model=self.unet.state_dict(), ema=self.ema.state_dict(), opt=self.opt.state_dict(), step=self.step,
            hours=self.hours, rng=self.batches.rng, torch_rng=torch.get_rng_state(), args=vars(a)))
        if a.export_to:
            write_unet(copy.deepcopy(self.ema).cpu(), a.export_to, training_record(self.step, self.hours, vars(a)))

    def lr(self):
        a = self.args
        warm = min(1.0, (self.step - self.first + 1) / 500)
        return a.lr * warm * (cosine_decay(self.step, *a.decay) if a.decay else 1.0)

    def train_step(self):
        """One optimizer step on a fresh batch; returns the loss (a tensor: no sync)."""
        a, dev = self.args, self.dev.device
        for g in self.opt.param_groups:
            g["lr"] = self.lr()
        x01, caps = self.batches.sample(a.batch)
        x0 = x01.to(dev) * 2 - 1
        drop = torch.rand(len(caps)) < a.dropout
        caps = ["" if d else c for c, d in zip(caps, drop.tolist())]
        t = torch.randint(0, len(self.acp), (len(caps),)).to(dev)
        ctx = self.text(caps)
        with self.dev.autocast():
            loss = v_loss(self.forward, x0, t, torch.randn_like(x0), ctx, self.acp).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        accel.ema_update(self.ema, self.unet, min(a.ema, (1 + self.step) / (10 + self.step)))
        self.step += 1
        return loss.detach()


def train(args, log):
    tr = Trainer(args, log)
    log(f"unet {args.config}: {sum(p.numel() for p in tr.unet.parameters())/1e6:.2f}M params, batch {args.batch}, "
        f"channels {tr.unet.config.block_out_channels}, lr {args.lr}, decay {args.decay}, styles {args.styles} "
        f"({len(tr.batches.ents)} images), device {tr.dev}, threads {tr.threads}")
    budget = accel.Budget(args.max_minutes)
    t_last = t_ck = time.time()
    loss_avg, n_run = None, 0
    end = min(args.steps, args.decay[1]) if args.decay else args.steps
    while tr.step < end and not budget.over():
        loss = tr.train_step()
        n_run += 1
        now = time.time()
        tr.hours += min(now - t_last, 60.0) / 3600  # a paused process (SIGSTOP) does not count
        t_last = now
        if tr.step % 50 == 0:
            value = loss.item()
            loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
            log(f"step {tr.step} loss {loss_avg:.4f} lr {tr.lr():.2e} hours {tr.hours:.3f} "
                f"({n_run * args.batch / max(budget.elapsed_minutes() * 60, 1e-9):.0f} images/s this run)")
        if now - t_ck > args.ckpt_minutes * 60:
            tr.save()
            t_ck = now
    tr.save()
    log(f"done: step {tr.step}, {n_run} steps in {budget.elapsed_minutes():.2f} min")


def main():
    args = parse_args()
    log = Log(TRAIN_DIR / "logs" / "unet.log")
    if args.export:
        return export(log, args.run, args.ckpt_dir)
    if args.flops:
        unet = make_unet(args.channels, args.config or "emoji32")
        size = unet.config.sample_size
        print(f"{sum(p.numel() for p in unet.parameters())/1e6:.3f} M params, "
              f"{gflops_per_image(unet):.4f} GFLOP per {size}x{size} forward")
        return
    train(args, log)


if __name__ == "__main__":
    main()
