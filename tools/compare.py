"""Side-by-side forward times: easel (benches/models.rs) against PyTorch
(tools/bench_torch.py), from their saved outputs.

    cargo bench --bench models > target/bench/easel.txt
    tools/.venv/bin/python tools/bench_torch.py > target/bench/torch.txt
    tools/.venv/bin/python tools/compare.py target/bench/easel.txt target/bench/torch.txt [--markdown]

Each file may hold the whole printed output: only lines that are JSON objects with
`engine`, `model` and `batch` are read. Ratios use the medians; `easel/torch` > 1
means easel is slower, `torch/easel` is easel's speed-up (< 1: a slow-down).
"""

import argparse
import json


def rows(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if {"engine", "model", "batch"} <= r.keys():
            out[(r["model"], r["batch"])] = r
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("easel")
    ap.add_argument("torch")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    easel, torch = rows(args.easel), rows(args.torch)
    keys = [k for k in easel if k in torch]
    if not keys:
        raise SystemExit("no (model, batch) rows in common")
    head = ["model", "batch", "easel ms", "easel min", "easel GFLOP/s", "torch ms", "torch min",
            "torch GFLOP/s", "easel/torch", "torch/easel"]
    table = []
    for k in keys:
        e, t = easel[k], torch[k]
        table.append([k[0], str(k[1]), f"{e['median_ms']:.1f}", f"{e['min_ms']:.1f}", f"{e['gflops']:.2f}",
                      f"{t['median_ms']:.1f}", f"{t['min_ms']:.1f}", f"{t['gflops']:.2f}",
                      f"{e['median_ms'] / t['median_ms']:.2f}", f"{t['median_ms'] / e['median_ms']:.2f}"])
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in table:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
        for r in table:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    e0, t0 = next(iter(easel.values())), next(iter(torch.values()))
    print(f"\neasel: {e0.get('device')}\ntorch: {t0.get('device')}")


if __name__ == "__main__":
    main()
