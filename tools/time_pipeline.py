"""Time the PyTorch reference pipeline (tools/pipeline.py) doing the work of
`easel "red apple" --candidates K` on the same weights: K images, 50 DDIM steps
with classifier-free guidance (batch 2K through the UNet), then the x4 upscaler.
(easel additionally runs its scoring rounds; PyTorch here does not.)

    tools/.venv/bin/python tools/time_pipeline.py [--model DIR] [--threads 1] [--k 1 4 8]
Prints one JSON line per K: seconds, images/s.
"""

import argparse
import json
import time

import torch

from pipeline import Pipeline


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    # 1 thread: with other work on a 2-core machine, 2 threads wait on each other
    # (measured up to 14x slower), see docs/benchmarks.md.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = Pipeline(args.model)
    for k in args.k:
        start = time.perf_counter()
        with torch.inference_mode():
            imgs = p.generate(["red apple"] * k, seed=7, steps=args.steps)
            p.upscale(imgs)
        seconds = time.perf_counter() - start
        print(json.dumps(dict(k=k, steps=args.steps, threads=args.threads, seconds=round(seconds, 3),
                              images_per_s=round(k / seconds, 4))))


if __name__ == "__main__":
    main()
