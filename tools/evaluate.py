"""Evaluate the exported model folder against held-out art and a judge.

    python tools/evaluate.py                  # scorer retrieval + denoiser samples
    python tools/evaluate.py --skip-samples   # scorer retrieval only
    python tools/evaluate.py --labels 100 --per-label 4 --steps 50 --guidance 2

Scorer: top-1 / top-5 retrieval (image -> label among all base-emoji labels) on the
held-out Twemoji art (never trained on by the scorer), and on the Noto training art.
Denoiser: for a fixed set of 100 labels (data.eval_labels: seed 0, no flags), sample
`per-label` images each with DDIM (eta 0, 50 steps, guidance 2); the *judge* (a second
CLIP trained only on Twemoji with another seed, tools/judge/, never shipped) classifies
each sample among the 100 labels.  Reported: its top-1 / top-5; the shipped scorer's
own top-1 as a second opinion; best of 4 (per-label a multiple of 4: the judge's grade
of the sample the scorer picks from each 4, as easel's loop picks); and the judge's
top-1 on the real art of the other styles for the same labels (the ceiling a perfect
copy of that art would reach).  Denoising loss: the training objective on fixed
batches of each art style (data.STYLES; Twemoji is held out).  Writes a contact sheet
and a JSON of the figures.

On a machine without the judge's weights (tools/judge/model.safetensors is untracked)
or with only some art styles (`--data FILE.npz`), the figures that need them are left
out.  `--device cuda` samples and computes the losses on a GPU; the starting noise is
drawn on the CPU either way.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
from common import REPO, TOOLS, TRAIN_DIR, WEIGHTS, set_threads  # noqa: E402
from pipeline import Pipeline, clip_similarity, load_clip  # noqa: E402


def retrieval(model, tok, style):
    """(top1, top5, n) for base images of `style` against all distinct base labels."""
    images, ents = data.load(style)
    base = [i for i, e in enumerate(ents) if e["skin"] is None]
    labels = sorted({ents[i]["label"] for i in base})
    index = {l: j for j, l in enumerate(labels)}
    x = F.avg_pool2d(data.to_float(images[base]), 2)  # 64 -> 32, area
    target = torch.tensor([index[ents[i]["label"]] for i in base])
    return (*top1_top5(clip_similarity(model, tok, x, labels), target), len(base), len(labels))


def real_art_top1(model, tok, style, labels):
    """(top-1 among `labels`, count) for the real `style` images of those labels it has."""
    images, ents = data.load(style)
    idx = {e["label"]: i for i, e in enumerate(ents) if e["skin"] is None}
    have = [j for j, l in enumerate(labels) if l in idx]
    real = F.avg_pool2d(data.to_float(images[[idx[labels[j]] for j in have]]), 2)
    return top1_top5(clip_similarity(model, tok, real, labels), torch.tensor(have))[0], len(have)


def top1_top5(sims, target):
    """(top-1, top-5) accuracy of similarity rows [N, labels] against target label indices."""
    top5 = sims.topk(min(5, sims.shape[1]), 1).indices
    return (top5[:, 0] == target).float().mean().item(), (top5 == target[:, None]).any(1).float().mean().item()


def best_of(scorer_sims, target, k):
    """Indices of the sample the scorer likes best (its similarity to the prompt's own
    label) in each consecutive group of k samples of one label: what easel's loop
    sends on with `--candidates k`, simulated on the PyTorch samples."""
    own = scorer_sims[torch.arange(len(target)), target].view(-1, k)
    return own.argmax(1) + torch.arange(0, len(target), k)


@torch.no_grad()
def denoising_loss(pipe, style, batches=16, seed=7):
    """The denoiser's training objective (train_unet.v_loss) on fixed noisy batches of one
    art style (single emoji, no compositions): a low-noise measure of fit, and on the
    held-out Twemoji one of generalisation."""
    from train_unet import v_loss

    src = data.Batches([style], pipe.unet.config.sample_size, seed, comp_frac=0.0)
    g = torch.Generator().manual_seed(seed)
    dev = pipe.device
    acp = pipe.scheduler.alphas_cumprod.to(dev)
    total = 0.0
    for _ in range(batches):
        x01, caps = src.sample(32)
        t = torch.randint(0, len(acp), (len(caps),), generator=g)
        noise = torch.randn(x01.shape, generator=g)
        total += v_loss(pipe.unet, x01.to(dev) * 2 - 1, t.to(dev), noise.to(dev), pipe.encode(caps), acp).mean().item()
    return total / batches


def contact_sheet(imgs, labels, per_label, path, cols=10):
    """One cell per label: its samples in a row at their size, the label below (truncated)."""
    from PIL import Image, ImageDraw

    n, s = len(labels), imgs.shape[-1]
    cell_w, cell_h = max(s * min(per_label, 4), 96) + 4, s + 14
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    arr = (imgs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i, label in enumerate(labels):
        cx, cy = (i % cols) * cell_w, (i // cols) * cell_h
        for k in range(min(per_label, 4)):
            sheet.paste(Image.fromarray(arr[i * per_label + k]), (cx + 2 + s * k, cy))
        draw.text((cx + 2, cy + s + 1), label[:22] if s < 64 else label[:40], fill=(0, 0, 0))
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # small to commit


def upscale_sheet(pipe, imgs, path):
    """Top: 32 px samples enlarged x4 (nearest); bottom: the upscaler's 128 px output."""
    from PIL import Image

    big = pipe.upscale(imgs)
    near = F.interpolate(imgs, scale_factor=4, mode="nearest")
    grid = torch.cat([torch.cat(list(near), 2), torch.cat(list(big), 2)], 1)
    img = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def have(style):
    """Whether this style's art is at hand (a .npz given with --data may hold only some)."""
    if not data.NPZ:
        return True
    with np.load(data.NPZ) as z:
        return f"{style}_images" in z


def retrieval_figures(res, graders, tok):
    for name, model in graders.items():
        for style in (s for s in ("twemoji", "noto") if have(s)):
            t1, t5, n, nl = retrieval(model, tok, style)
            res[f"{name}_{style}_top1"], res[f"{name}_{style}_top5"] = t1, t5
            print(f"{name} on {style}: top-1 {t1:.3f}, top-5 {t5:.3f} ({n} images, {nl} labels)", flush=True)


def sample_figures(res, pipe, judge, args):
    """Samples of the fixed labels, graded by the judge (if any) and the scorer."""
    tok = pipe.tok
    _, ents = data.load("noto")
    labels = data.eval_labels(ents, args.labels)
    prompts = [l for l in labels for _ in range(args.per_label)]
    imgs = pipe.generate(prompts, seed=args.seed, steps=args.steps, guidance=args.guidance)
    target = torch.arange(len(labels)).repeat_interleave(args.per_label)
    graders = {name: m for name, m in (("judge", judge), ("scorer", pipe.scorer)) if m is not None}
    sims = {name: clip_similarity(model, tok, imgs, labels) for name, model in graders.items()}
    for name, s in sims.items():
        res[f"samples_{name}_top1"], res[f"samples_{name}_top5"] = top1_top5(s, target)
        print(f"samples judged by {name}: top-1 {res[f'samples_{name}_top1']:.3f}, "
              f"top-5 {res[f'samples_{name}_top5']:.3f} among {len(labels)} labels", flush=True)
    if args.per_label % 4 == 0 and "judge" in sims and "scorer" in sims:
        pick = best_of(sims["scorer"], target, 4)
        res["best_of_4_judge_top1"], res["best_of_4_judge_top5"] = top1_top5(sims["judge"][pick], target[pick])
        print(f"best of 4 (scorer picks, judge grades): top-1 {res['best_of_4_judge_top1']:.3f}, "
              f"top-5 {res['best_of_4_judge_top5']:.3f} ({len(pick)} picks)", flush=True)
    # Reference: the judge on the real training art of the same labels (what a
    # perfect copy of that art would score; Fluent and EmojiOne lack some labels).
    for style in (s for s in data.STYLES if s != "twemoji" and judge is not None and have(s)):
        res[f"real_{style}_judge_top1"], n = real_art_top1(judge, tok, style, labels)
        print(f"real {style} images of these labels judged: top-1 {res[f'real_{style}_judge_top1']:.3f} ({n})")
    res.update(labels=args.labels, per_label=args.per_label, steps=args.steps, guidance=args.guidance)
    contact_sheet(imgs, labels, args.per_label, args.sheet)
    if pipe.upscaler is not None:
        upscale_sheet(pipe, imgs[:: args.per_label][:8], Path(args.sheet).with_name("upscaler_sheet.png"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.save({"imgs": imgs, "labels": labels}, Path(args.out) / "samples.pt")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(WEIGHTS))
    ap.add_argument("--judge", default=str(TOOLS / "judge"))
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--per-label", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-samples", action="store_true")
    ap.add_argument("--sheet", default=str(REPO / "weights" / "contact_sheet.png"))
    ap.add_argument("--out", default=str(TRAIN_DIR / "eval"))
    ap.add_argument("--data", metavar="FILE", help="read the art from this .npz (data.py --npz)")
    ap.add_argument("--device", default="cpu", help="where the UNet and text encoder run (cpu, cuda)")
    args = ap.parse_args()
    set_threads()
    if args.data:
        data.use_file(args.data)
    t0 = time.time()
    pipe = Pipeline(args.model, args.device)
    judge = None
    if (Path(args.judge) / "model.safetensors").is_file():
        judge = load_clip(args.judge)
    else:
        print(f"{args.judge}: no model.safetensors (tools/judge/README.md): no judge figures", flush=True)
    res = {"model": Path(args.model).name}
    retrieval_figures(res, {n: m for n, m in (("scorer", pipe.scorer), ("judge", judge)) if m is not None}, pipe.tok)
    for style in (s for s in data.STYLES if have(s)):
        res[f"denoising_loss_{style}"] = denoising_loss(pipe, style)
        print(f"denoising loss on {style}: {res[f'denoising_loss_{style}']:.5f}", flush=True)
    if not args.skip_samples:
        sample_figures(res, pipe, judge, args)
    for f in ("unet", "text_encoder", "upscaler"):
        p = Path(args.model) / f / "config.json"
        if p.exists():
            res[f"{f}_training"] = json.load(open(p)).get("_easel_training")
    res["eval_minutes"] = (time.time() - t0) / 60
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(Path(args.out) / f"eval-{stamp}.json", "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
