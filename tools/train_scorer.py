"""Train the small CLIP (scorer + text encoder) contrastively on emoji images and captions.

    python tools/train_scorer.py                       # Noto art -> ckpt/scorer, resumes
    python tools/train_scorer.py --export              # EMA weights -> weights/easel-emoji/{scorer,text_encoder}
    python tools/train_scorer.py --judge               # the evaluation judge: Twemoji art, seed 1 -> ckpt/judge
    python tools/train_scorer.py --judge --export      # judge -> tools/judge/ (never used by the engine)
    python tools/train_scorer.py --judge --styles noto,fluent,emojione,twemoji   # a judge of every style
    python tools/train_scorer.py --tune-vision --styles noto,fluent --steps 1500
                                                       # go on from the exported scorer with its text
                                                       # tower frozen (the denoiser conditions on it):
    python tools/train_scorer.py --tune-vision --export   # -> weights/easel-emoji/scorer only

The scorer is a transformers `CLIPModel` (ViT on 32x32 images, patch 4); the text
encoder is its text tower, saved alone as a `CLIPTextModel`.  Images are in [0, 1]
and normalised with OpenAI CLIP's mean/std (common.CLIP_MEAN / CLIP_STD).
Checkpoints go to $EASEL_TRAIN_DIR/ckpt/<run>/ every few minutes; a rerun resumes.
On a CUDA GPU it runs as train_unet.py does (tools/accel.py: `--device`, `--amp` bf16
autocast with the contrastive loss in f32, `--max-minutes`, `--data FILE.npz`).
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accel  # noqa: E402
import data  # noqa: E402
from common import (CLIP_MEAN, CLIP_STD, CONTEXT, TRAIN_DIR, TOOLS, WEIGHTS, Log,  # noqa: E402
                    cosine_decay, latest_checkpoint, load_tokenizer, save_checkpoint, set_threads,
                    to_f16_safetensors, tokenize, write_json)

TRAIN_TOKENS = 32  # captions are short: train on the first 32 positions (EOS always falls inside)


def clip_config():
    """The scorer's shapes; its vocabulary is the tokenizer's (CLIP's 49,408 ids, or the
    default model's pruned set: tools/prune_vocab.py), BOS and EOS its last two ids."""
    from transformers import CLIPConfig

    vocab = len(load_tokenizer())
    text = dict(vocab_size=vocab, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=CONTEXT, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, projection_dim=128, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1)
    vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  image_size=32, patch_size=4, num_channels=3, hidden_act="quick_gelu",
                  layer_norm_eps=1e-5, projection_dim=128)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128, logit_scale_init_value=2.6592)


def normalise(x):
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def embed(model, pixels01, ids):
    img = model.get_image_features(pixel_values=normalise(pixels01))
    txt = model.get_text_features(input_ids=ids)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def contrastive_loss(model, x, caps, tok, dev):
    """(symmetric InfoNCE loss, logits, logit scale) of one batch; the towers under
    `dev`'s autocast, the similarities and the loss in f32."""
    ids = tokenize(tok, caps, TRAIN_TOKENS).to(dev.device)
    with dev.autocast():
        img, txt = embed(model, x.to(dev.device), ids)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * img.float() @ txt.float().t()
    # Identical captions in one batch are both right answers.
    same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32, device=dev.device)
    target = same / same.sum(1, keepdim=True)
    loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
    return loss, logits, scale


def run_name(args):
    return "judge" if args.judge else "scorer_vision" if args.tune_vision else "scorer"


def freeze_text_tower(model):
    """Load the exported scorer and freeze what text_encoder/ shares with it.

    The denoiser was trained on the text tower's hidden states: changing them would
    mean retraining the denoiser.  The vision tower, both projections and the
    temperature still learn (the projections do not reach the denoiser).
    """
    from safetensors.torch import load_file

    sd = {k: v.float() for k, v in load_file(WEIGHTS / "scorer" / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    for p in model.text_model.parameters():
        p.requires_grad_(False)


def export(args, log):
    from transformers import CLIPModel, CLIPTextModel

    ck = latest_checkpoint(TRAIN_DIR / "ckpt" / run_name(args))
    state = torch.load(ck, map_location="cpu", weights_only=False)
    model = CLIPModel(clip_config())
    model.load_state_dict(state["ema"])
    model.eval()
    if args.judge:
        out = TOOLS / "judge"
        folders = [(out, model)]
    elif args.tune_vision:  # text_encoder/ stays as it is: its weights were frozen
        folders = [(WEIGHTS / "scorer", model)]
    else:
        # transformers 5: CLIPModel.text_model *is* a CLIPTextModel, whose tensor names
        # have no `text_model.` prefix (transformers 4 and SD 1.x write one).
        text = CLIPTextModel(model.config.text_config)
        target = text.text_model if hasattr(text, "text_model") else text
        target.load_state_dict(model.text_model.state_dict())
        folders = [(WEIGHTS / "scorer", model), (WEIGHTS / "text_encoder", text)]
    for folder, m in folders:
        folder.mkdir(parents=True, exist_ok=True)
        m.config.architectures = [type(m).__name__]
        m.config.dtype = "float16"
        m.config.to_json_file(folder / "config.json")
        sd = m.state_dict()
        # Tied or derived buffers (position_ids) are not weights.
        sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
        to_f16_safetensors(sd, folder / "model.safetensors")
        log(f"exported {ck.name} -> {folder} ({len(sd)} tensors, first: {sorted(sd)[0]})")
    record = {"step": state["step"], "hours": state["hours"], "style": state["style"], "seed": state["seed"],
              "augmentation": "robust" if args.judge else "standard"}
    if args.tune_vision:  # what the text tower had, and what the vision tower added
        record = {**json.load(open(WEIGHTS / "scorer" / "easel_training.json")), "vision_tuning": record}
    write_json((TOOLS / "judge" if args.judge else WEIGHTS / "scorer") / "easel_training.json", record)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", action="store_true", help="train the evaluation judge on Twemoji, seed 1")
    ap.add_argument("--tune-vision", action="store_true",
                    help="go on from weights/easel-emoji/scorer, text tower frozen; export writes scorer/ only")
    ap.add_argument("--styles", help="art styles to train on (data.py; default: noto, or twemoji for the judge)")
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--data", metavar="FILE", help="read the art from this .npz (data.py --npz) instead of data/")
    ap.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu or cuda")
    ap.add_argument("--amp", default="auto", help="auto (bf16 on cuda), none or bf16")
    ap.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this many minutes")
    args = ap.parse_args()
    style, seed = (args.styles or "twemoji", 1) if args.judge else (args.styles or "noto", 0)
    log = Log(TRAIN_DIR / "logs" / f"{run_name(args)}.log")
    if args.export:
        return export(args, log)

    dev = accel.Device(args.device, args.amp)
    threads = set_threads() if not dev.cuda else torch.get_num_threads()
    torch.manual_seed(seed)
    if args.data:
        data.use_file(args.data)
    tok = load_tokenizer()
    # The judge grades another art style's samples, often blurry or noisy: robust augmentation.
    batches = data.Batches(style.split(","), 32, seed, comp_frac=0.25, robust=args.judge, device=dev.device)
    from transformers import CLIPModel

    model = CLIPModel(clip_config())
    if args.tune_vision:
        freeze_text_tower(model)
    model.to(dev.device)  # before the optimizer: its state follows the parameters' device
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.98),
                            eps=1e-6, weight_decay=0.1)
    step, hours = 0, 0.0
    ck_dir = TRAIN_DIR / "ckpt" / run_name(args)
    ck = latest_checkpoint(ck_dir)
    if ck:
        state = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, hours = state["step"], state["hours"]
        batches.rng = state["rng"]
        log(f"resumed {ck} at step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{run_name(args)}: style {style}, seed {seed}, {n_params/1e6:.2f}M params, batch {args.batch}, "
        f"device {dev}, threads {threads}")

    def save():
        save_checkpoint(ck_dir, step, dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                                           step=step, hours=hours, rng=batches.rng, style=style, seed=seed))

    warmup = 300
    t_last, t_ck, loss_avg, acc_avg = time.time(), time.time(), 0.0, 0.0
    budget = accel.Budget(args.max_minutes)
    while step < args.steps and not budget.over():
        lr = args.lr * min(1.0, (step + 1) / warmup) * cosine_decay(step, 0, args.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x, caps = batches.sample(args.batch)
        loss, logits, scale = contrastive_loss(model, x, caps, tok, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        accel.ema_update(ema, model, min(0.999, (1 + step) / (10 + step)))
        with torch.no_grad():
            acc = (logits.argmax(1) == torch.arange(len(caps), device=logits.device)).float().mean().item()
        step += 1
        now = time.time()
        hours += min(now - t_last, 60.0) / 3600  # a paused process (SIGSTOP) does not count
        t_last = now
        loss_avg = 0.98 * loss_avg + 0.02 * loss.item() if step > 1 else loss.item()
        acc_avg = 0.98 * acc_avg + 0.02 * acc if step > 1 else acc
        if step % 100 == 0:
            log(f"step {step} loss {loss_avg:.3f} batch-acc {acc_avg:.3f} lr {lr:.2e} scale {scale.item():.1f} hours {hours:.3f}")
        if now - t_ck > args.ckpt_minutes * 60 or step == args.steps:
            save()
            t_ck = now
    save()
    log("done")


if __name__ == "__main__":
    main()
