"""How much does best-of-K raise the judge's score over K = 1? Runs easel itself.

    python tools/best_of_k.py                          # 100 labels, K = 1, 4, 8
    python tools/best_of_k.py --labels 50 --k 1 4 --steps 25
    python tools/best_of_k.py --model DIR --k 1 4 --steps 25 --pairs 20   # + 20 `a:: b::` pairs

For the fixed evaluation labels (data.eval_labels, as tools/evaluate.py uses), writes
one `easel batch` job file with a job per (label, K), the same seed for every K, and
runs it with the release binary (jobs grouped by K, so each K plans once). Then the
judge (tools/judge/: a CLIP trained only on Twemoji, never shipped, so the scorer
that picks the winners is not the one that grades them) classifies every image among
the labels. Prints top-1 / top-5 per K, the judge's mean similarity to the right
label, the shipped scorer's top-1 (it chose the winners, so it is biased upwards),
the wall time per image, and writes the figures as JSON.

Pairs (`--pairs N`, default 20; 0: none): N fixed pairs of different evaluation labels
(seeded), each drawn as the two sub-prompts `a:: b::` at every K; a pair counts when
both of its labels are in the judge's top 5 among the labels.
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
from common import REPO, TOOLS, TRAIN_DIR, WEIGHTS, load_tokenizer, set_threads  # noqa: E402
from pipeline import clip_similarity, load_clip  # noqa: E402


def label_pairs(labels, n, seed=0):
    """n fixed pairs (a, b) of different labels, for `a:: b::` prompts."""
    rng = random.Random(seed + 1)
    return [tuple(rng.sample(labels, 2)) for _ in range(n)]


def write_jobs(path, labels, pairs, ks, args):
    """One job per (K, label) and per (K, pair); seed = the label's or pair's index, so
    every K starts from the same noise."""
    with open(path, "w") as f:
        for k in ks:
            prompts = [(label, f"k{k}") for label in labels]
            prompts += [(f"{a}:: {b}::", f"pairs_k{k}") for a, b in pairs]
            for i, (prompt, folder) in enumerate(prompts):
                index = i if i < len(labels) else i - len(labels)
                job = {"prompt": prompt, "seed": args.seed + index, "candidates": k, "steps": args.steps,
                       "guidance": args.guidance, "upscale": 1, "out": f"{folder}/{index:03d}"}
                f.write(json.dumps(job) + "\n")


def run_batch(jobs, out, args):
    """easel batch over the job file; returns the manifest's finished rows by output."""
    cmd = [str(args.easel), "batch", str(jobs), "--out", str(out), "--model", str(args.model), "-q"]
    subprocess.run(cmd, check=True)
    rows = {}
    for line in open(out / "manifest.jsonl"):
        row = json.loads(line)
        if row.get("status") == "done":
            rows[row["output"]] = row
    return rows


def load_images(folder, n):
    """[n, 3, H, W] floats in [0, 1] from FOLDER/000.png ..."""
    from PIL import Image

    arr = [np.asarray(Image.open(folder / f"{i:03d}.png").convert("RGB")) for i in range(n)]
    return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255.0


def grade(model, tok, imgs, labels):
    """(top-1, top-5, mean similarity to the right label) among `labels`."""
    sims = clip_similarity(model, tok, imgs, labels)
    target = torch.arange(len(labels))
    top5 = sims.topk(5, 1).indices
    return ((top5[:, 0] == target).float().mean().item(), (top5 == target[:, None]).any(1).float().mean().item(),
            sims[target, target].mean().item())


def both_parts(model, tok, imgs, labels, pairs):
    """Share of pair images with both labels in the model's top 5 among `labels`."""
    top5 = clip_similarity(model, tok, imgs, labels).topk(min(5, len(labels)), 1).indices
    index = {label: j for j, label in enumerate(labels)}
    hits = [bool((top5[i] == index[a]).any() and (top5[i] == index[b]).any()) for i, (a, b) in enumerate(pairs)]
    return sum(hits) / max(len(hits), 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--easel", default=str(REPO / "target" / "release" / "easel"))
    ap.add_argument("--model", default=str(WEIGHTS))
    ap.add_argument("--judge", default=str(TOOLS / "judge"))
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=20, help="`a:: b::` pairs to draw at each K (0: none)")
    ap.add_argument("--out", default=str(TRAIN_DIR / "best_of_k"))
    args = ap.parse_args()
    set_threads()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, ents = data.load("noto")
    labels = data.eval_labels(ents, args.labels)
    pairs = label_pairs(labels, args.pairs)
    jobs = out / "jobs.jsonl"
    write_jobs(jobs, labels, pairs, args.k, args)
    t0 = time.time()
    rows = run_batch(jobs, out, args)
    wall = time.time() - t0
    tok = load_tokenizer(Path(args.model) / "tokenizer")
    judge, scorer = load_clip(args.judge), load_clip(Path(args.model) / "scorer")
    res = {"labels": len(labels), "pairs": len(pairs), "steps": args.steps, "guidance": args.guidance,
           "batch_wall_s": wall, "k": {}}
    print(f"{'K':>3} {'judge top-1':>11} {'top-5':>6} {'judge sim':>9} {'scorer top-1':>12} {'s/image':>8} "
          f"{'pairs both':>10}")
    for k in args.k:
        imgs = load_images(out / f"k{k}", len(labels))
        j1, j5, jsim = grade(judge, tok, imgs, labels)
        s1, _, _ = grade(scorer, tok, imgs, labels)
        secs = [r["seconds"] for o, r in rows.items() if Path(o).parent.name == f"k{k}"]
        per = float(np.median(secs)) if secs else float("nan")
        both = both_parts(judge, tok, load_images(out / f"pairs_k{k}", len(pairs)), labels, pairs) if pairs else None
        res["k"][k] = {"judge_top1": j1, "judge_top5": j5, "judge_sim": jsim, "scorer_top1": s1, "median_s": per,
                       "pairs_both_top5": both}
        print(f"{k:>3} {j1:>11.3f} {j5:>6.3f} {jsim:>9.4f} {s1:>12.3f} {per:>8.2f} "
              f"{'-' if both is None else f'{both:.3f}':>10}")
    with open(out / f"best_of_k-{time.strftime('%Y%m%d-%H%M%S')}.json", "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
