"""PyTorch (CPU, float32) forward time of the default models: the same weights,
shapes, inputs and timing protocol as easel's `cargo bench --bench models`
(benches/models.rs), printed as a table and one JSON line per row in the same schema.

    tools/.venv/bin/python tools/bench_torch.py                 # 2 threads (default)
    tools/.venv/bin/python tools/bench_torch.py --threads 1 --json target/bench/torch.json
    tools/.venv/bin/python tools/bench_torch.py --write-random-unet target/bench/unet-random
    tools/.venv/bin/python tools/compare.py easel.json torch.json  # the ratio table
    easel bench models --vs target/bench/torch.json                 # the same, from easel

`--json FILE` writes one JSON document in the schema of `easel bench --json`
(`engine`, `device`, `clock`, and the `models` rows).

Models (batch B in 1, 4, 8):
  unet          UNet2DConditionModel, sample [B, 3, 32, 32], B timesteps, context [B, 77, 128]
  text_encoder  CLIPTextModel on ids [B, 77]
  scorer        CLIPModel vision tower + visual_projection on pixels [B, 3, 32, 32]
  upscaler      SRVGGNetCompact, [B, 3, 32, 32] -> [B, 3, 128, 128]

The UNet comes from weights/easel-emoji/unet when it exists; until the training job
exports it, from a folder of random weights in the exact default architecture
(`UNET` in tools/train_unet.py), written by `--write-random-unet DIR`: timing does not
depend on trained values.

Inputs are closed-form (`pattern` below, mirrored in benches/models.rs), so both
engines see the same values without sharing files.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONTEXT, REPO, WEIGHTS  # noqa: E402

RANDOM_UNET = REPO / "target" / "bench" / "unet-random"
BATCHES = (1, 4, 8)
MODELS = ("unet", "text_encoder", "scorer", "upscaler")
# Timing protocol (the same constants as benches/models.rs): one warm-up run, then
# repeat until about BUDGET_S has passed, at least MIN_RUNS and at most MAX_RUNS.
BUDGET_S = 3.0
MIN_RUNS = 3
MAX_RUNS = 20


def pattern(n, phase):
    """n values in [0, 1]: 0.5 + 0.5 sin(0.37 i + phase), as benches/models.rs computes them."""
    i = np.arange(n, dtype=np.float64)
    return (0.5 + 0.5 * np.sin(0.37 * i + phase)).astype(np.float32)


def token_ids(batch, vocab_size):
    """[B, 77]: BOS, 6 word tokens that differ per row, EOS, EOS padding (as the tokenizer
    pads); CLIP vocabularies (full or pruned) end with BOS, EOS."""
    bos, eos = vocab_size - 2, vocab_size - 1
    rows = []
    for b in range(batch):
        words = [320 + 7 * b + j for j in range(6)]
        row = [bos] + words + [eos]
        rows.append(row + [eos] * (CONTEXT - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def unet_dir():
    real = WEIGHTS / "unet"
    return real if (real / "config.json").exists() else RANDOM_UNET


def write_random_unet(out):
    """The default UNet architecture with seeded random weights (diffusers' own init)."""
    import train_unet

    torch.manual_seed(0)
    unet = train_unet.make_unet()
    unet.save_pretrained(out, safe_serialization=True)
    cfg_path = Path(out) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_easel_note"] = ("random weights (torch.manual_seed(0)) in the default architecture "
                          "(tools/train_unet.py UNET), for benchmarks only")
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"wrote a random default-architecture UNet to {out}", file=sys.stderr)


def build(name, batch):
    """(module, inputs tuple, weights folder) for one model at one batch."""
    if name == "unet":
        from diffusers import UNet2DConditionModel

        folder = unet_dir()
        model = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)
        cross = model.config.cross_attention_dim
        size = model.config.sample_size
        sample = torch.from_numpy(pattern(batch * 3 * size * size, 0.0) * 2 - 1).view(batch, 3, size, size)
        t = torch.tensor([999.0 - 100.0 * b for b in range(batch)])
        context = torch.from_numpy(pattern(batch * CONTEXT * cross, 1.0) * 2 - 1).view(batch, CONTEXT, cross)

        def run(m=model):
            return m(sample, t, encoder_hidden_states=context, return_dict=False)[0]

        return model, run, folder
    if name == "text_encoder":
        from transformers import CLIPTextModel

        folder = WEIGHTS / "text_encoder"
        model = CLIPTextModel.from_pretrained(folder, dtype=torch.float32)
        ids = token_ids(batch, model.config.vocab_size)

        def run(m=model):
            out = m(input_ids=ids)
            return out.last_hidden_state, out.pooler_output

        return model, run, folder
    if name == "scorer":
        from transformers import CLIPModel

        folder = WEIGHTS / "scorer"
        model = CLIPModel.from_pretrained(folder, dtype=torch.float32)
        size = model.config.vision_config.image_size
        pixels = torch.from_numpy(pattern(batch * 3 * size * size, 2.0) * 2 - 1).view(batch, 3, size, size)

        def run(m=model):
            # image_embeds before normalisation: the vision tower and its projection.
            return m.visual_projection(m.vision_model(pixel_values=pixels).pooler_output)

        return model, run, folder
    if name == "upscaler":
        from safetensors.torch import load_file
        from train_upscaler import SRVGGNetCompact

        folder = WEIGHTS / "upscaler"
        cfg = json.loads((folder / "config.json").read_text())
        keys = ("num_in_ch", "num_out_ch", "num_feat", "num_conv", "upscale", "act_type")
        model = SRVGGNetCompact(**{k: cfg[k] for k in keys})
        model.load_state_dict({k: v.float() for k, v in load_file(folder / "model.safetensors").items()})
        x = torch.from_numpy(pattern(batch * 3 * 32 * 32, 3.0)).view(batch, 3, 32, 32)

        def run(m=model):
            return m(x)

        return model, run, folder
    raise ValueError(name)


def gflop_per_item(run, batch):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        run()
    return fc.get_total_flops() / 1e9 / batch


def time_runs(run):
    """Warm up once, then (median, min, runs) in ms of wall-clock forward time."""
    run()
    times = []
    start = time.perf_counter()
    while len(times) < MIN_RUNS or (time.perf_counter() - start < BUDGET_S and len(times) < MAX_RUNS):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0], len(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--json", metavar="FILE", help="also write the rows as one JSON document (easel bench's schema)")
    ap.add_argument("--write-random-unet", metavar="DIR", help="write the random default UNet to DIR and exit")
    args = ap.parse_args()

    if args.write_random_unet:
        write_random_unet(args.write_random_unet)
        return
    if not (unet_dir() / "config.json").exists():
        write_random_unet(RANDOM_UNET)

    # Loading chatter (progress bars, the `accelerate` hint) would bury the table.
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    device = f"PyTorch {torch.__version__} CPU, {args.threads} thread(s)"
    print(f"device: {device}; clock: wall-clock around the forward call")
    print(f"{'model':<13} {'batch':>5} {'median ms':>10} {'min ms':>9} {'runs':>5} {'GFLOP/item':>11} {'GFLOP/s':>8}")
    rows = []
    for name in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            model, run, folder = build(name, batch)
            model.eval()
            with torch.inference_mode():
                gflop = gflop_per_item(run, batch)
                median, fastest, runs = time_runs(run)
            row = dict(engine="torch", model=name, batch=batch, median_ms=median, min_ms=fastest, gpu_ms=None,
                       runs=runs, gflop_per_item=gflop, gflops=gflop * batch / (median * 1e-3),
                       device=device, weights=str(Path(folder).resolve().relative_to(REPO))
                       if Path(folder).resolve().is_relative_to(REPO) else str(folder))
            print(f"{name:<13} {batch:>5} {median:>10.2f} {fastest:>9.2f} {runs:>5} {gflop:>11.4f} "
                  f"{row['gflops']:>8.2f}", flush=True)
            rows.append(row)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        doc = dict(engine="torch", device=device, clock="wall-clock", models=rows)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
