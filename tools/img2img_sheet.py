"""Starting from a picture, shown and timed: a contact sheet of img2img and
inpainting with easel's default model, and the time of a txt2img run against an
img2img run at strength 0.5 (which runs half the steps).

    tools/.venv/bin/python tools/img2img_sheet.py [--easel target/release/easel]
        writes docs/img2img_sheet.png: the start picture (easel's own "red apple",
        seed 7), "green apple" from it at --strength 0.3 / 0.6 / 0.9, and a square in
        its middle repainted as "cat" (--mask, strength 1), then prints the timings.

    tools/.venv/bin/python tools/img2img_sheet.py --model DIR --size 64x64 --no-sheet
        only the timings, for another model (a full-size random SD-1.5 folder, say):
        txt2img and img2img at 0.5 with one candidate and no upscaling.

Every image is easel's, through its command line; the times are `seconds` of its
`--json` (load excluded), one run each.
"""

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent


def easel(exe, prompt, out, *flags):
    """One easel run; its --json summary."""
    cmd = [exe, prompt, "-o", str(out), "--json", "--quiet", *map(str, flags)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def square_mask(size, path):
    """White (repaint) in the middle third, black elsewhere."""
    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([w // 3, h // 3, 2 * w // 3, 2 * h // 3], fill=255)
    mask.save(path)


def sheet(tiles, path):
    """One row of labelled tiles."""
    size = max(t.width for t, _ in tiles)
    pad = 16
    out = Image.new("RGB", (size * len(tiles), size + pad), "white")
    draw = ImageDraw.Draw(out)
    for i, (tile, label) in enumerate(tiles):
        out.paste(tile.convert("RGB").resize((size, size)), (i * size, 0))
        draw.text((i * size + 3, size + 2), label, fill="black")
    out.save(path, optimize=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--easel", default=str(REPO / "target" / "release" / "easel"))
    ap.add_argument("--model", help="a model folder (default: easel's own)")
    ap.add_argument("--size", help="WxH to denoise at (default: the model's)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sheet", default=str(REPO / "docs" / "img2img_sheet.png"))
    ap.add_argument("--no-sheet", action="store_true")
    args = ap.parse_args()

    common = ["--seed", 7, "--steps", args.steps]
    if args.model:
        common += ["--model", args.model, "--candidates", 1, "--upscale", 1]
    if args.size:
        common += ["--size", args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        init = tmp / "init.png"
        txt = easel(args.easel, "red apple", init, *common)
        if not args.size:
            # The start picture is upscaled; the runs from it denoise at its size before.
            common += ["--size", f"{txt['denoised_width']}x{txt['denoised_height']}"]
        half = easel(args.easel, "green apple", tmp / "half.png", *common,
                     "--init", init, "--strength", 0.5)
        print(f"txt2img: {txt['seconds']:.2f} s ({txt['steps_run']} steps); "
              f"img2img at strength 0.5: {half['seconds']:.2f} s ({half['steps_run']} steps)")
        if args.no_sheet:
            return
        tiles = [(Image.open(init), "start")]
        for s in (0.3, 0.6, 0.9):
            out = tmp / f"s{s}.png"
            easel(args.easel, "green apple", out, *common, "--init", init, "--strength", s)
            tiles.append((Image.open(out), f"green apple {s}"))
        mask = tmp / "mask.png"
        square_mask(Image.open(init).size, mask)
        out = tmp / "inpaint.png"
        easel(args.easel, "cat", out, *common, "--init", init, "--mask", mask,
              "--strength", 1)
        tiles.append((Image.open(out), "cat in the square"))
        sheet(tiles, args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
