"""Side-by-side forward times: easel (`easel bench models`, `cargo bench --bench
models`) against PyTorch (tools/bench_torch.py), from their saved outputs.

    easel bench models --json target/bench/easel.json
    tools/.venv/bin/python tools/bench_torch.py --json target/bench/torch.json
    tools/.venv/bin/python tools/compare.py target/bench/easel.json target/bench/torch.json [--markdown]

Each file is a JSON report (`--json`: a document whose `models` list holds the rows)
or a whole printed output, whose lines that are JSON objects are read: model rows
(`engine`, `model`, `batch`) or a whole report (cargo bench prints one as its last
line). Ratios use the medians; `easel/torch` > 1 means easel is slower,
`torch/easel` is easel's speed-up (< 1: a slow-down).
"""

import argparse
import json


def rows(path):
    text = open(path).read()
    try:
        objects = [json.loads(text)]
    except json.JSONDecodeError:
        objects = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    objects.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    out = {}
    for obj in objects:
        for r in obj.get("models", [obj]):
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
