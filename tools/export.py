"""Export the latest checkpoints into weights/easel-emoji/ and write model_index.json.

    python tools/export.py          # scorer + text_encoder, unet + scheduler, upscaler, index
    python tools/export.py --only unet
    python tools/export.py --assemble DIR --unet OUT/unet   # a whole model folder around a
                                    # trained unet/ (a GPU run's): the other components copied
                                    # from weights/easel-emoji, the scheduler, model_index.json

Every export writes the EMA weights as f16 safetensors with diffusers'/transformers'
tensor names and config.json; the folder must stay <= 40 MB.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, TOOLS, WEIGHTS, write_json  # noqa: E402

LIMIT = 40_000_000


def model_index(folder=WEIGHTS):
    """model_index.json for a model folder; sample size and default steps follow its unet."""
    import diffusers
    from train_unet import DEFAULT_STEPS

    unet = json.load(open(Path(folder) / "unet" / "config.json"))
    config = unet.get("_easel_training", {}).get("config", "emoji32")
    write_json(Path(folder) / "model_index.json", {
        "_class_name": "EaselPixelPipeline",
        "_diffusers_version": diffusers.__version__,
        "_easel": {
            "note": "pixel-space text-to-image model: no vae/; the unet denoises RGB directly",
            "sample_size": unet["sample_size"],
            "unet_image_range": [-1.0, 1.0],
            "scorer_image_range": [0.0, 1.0],
            "scorer_image_mean": [0.48145466, 0.4578275, 0.40821073],
            "scorer_image_std": [0.26862954, 0.26130258, 0.27577711],
            "upscaler_image_range": [0.0, 1.0],
            "conditioning": "text_encoder last_hidden_state (after final_layer_norm), 77 tokens",
            "unconditional_prompt": "",
            "default_guidance": 2.0,
            "default_steps": DEFAULT_STEPS[config],
        },
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scorer": ["transformers", "CLIPModel"],
        "upscaler": ["easel", "SRVGGNetCompact"],
    })


def folder_bytes(folder=WEIGHTS):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def check_size(folder):
    size = folder_bytes(folder)
    print(f"{folder}: {size / 1e6:.2f} MB")
    if size > LIMIT:
        raise SystemExit(f"model folder is {size / 1e6:.2f} MB, over the {LIMIT / 1e6:.0f} MB limit")


def assemble(out, unet_dir, base=WEIGHTS):
    """A model folder at `out`: `unet_dir` as its unet/, the DDIM scheduler, and the other
    components (tokenizer, text encoder, scorer, upscaler) copied from `base`."""
    from train_unet import make_scheduler

    out, unet_dir = Path(out), Path(unet_dir)
    if not (unet_dir / "config.json").is_file():
        raise SystemExit(f"{unet_dir}: no config.json (an exported unet folder has one)")
    for part in ("tokenizer", "text_encoder", "scorer", "upscaler"):
        if (base / part).is_dir() and (base / part).resolve() != (out / part).resolve():
            shutil.copytree(base / part, out / part, dirs_exist_ok=True)
    if unet_dir.resolve() != (out / "unet").resolve():
        shutil.copytree(unet_dir, out / "unet", dirs_exist_ok=True)
    make_scheduler()[1].save_config(out / "scheduler")
    model_index(out)
    check_size(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["scorer", "unet", "upscaler"], action="append")
    ap.add_argument("--assemble", metavar="DIR", help="write a whole model folder here around --unet")
    ap.add_argument("--unet", metavar="DIR", help="with --assemble: the exported unet folder")
    args = ap.parse_args()
    if args.assemble:
        if not args.unet:
            raise SystemExit("--assemble needs --unet DIR")
        return assemble(args.assemble, args.unet)
    py = sys.executable
    jobs = {"scorer": "train_scorer.py", "unet": "train_unet.py", "upscaler": "train_upscaler.py"}
    for name in args.only or jobs:
        subprocess.run([py, str(TOOLS / jobs[name]), "--export"], check=True)
    model_index()
    # A text tower trained from the whole CLIP tokenizer has 49,408 rows; the shipped
    # folder keeps only those its captions reach (a no-op when already pruned).
    subprocess.run([py, str(TOOLS / "prune_vocab.py"), "--model", str(WEIGHTS)], check=True)
    check_size(WEIGHTS)
    # The engine's parity test pins the shipped weights by sha256: refresh its goldens
    # (only for the shipped folder, not an EASEL_WEIGHTS elsewhere).
    if WEIGHTS.resolve() == (REPO / "weights" / "easel-emoji").resolve():
        subprocess.run([py, str(TOOLS / "make_golden.py"), "--default"], check=True)


if __name__ == "__main__":
    main()
