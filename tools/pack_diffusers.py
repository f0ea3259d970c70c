"""Pack the installed diffusers into one small zip that Python imports directly, for a
GPU machine whose image lacks diffusers and cannot fetch it (docs/training.md).

    python tools/pack_diffusers.py .whl/diffusers.zip

The wheel is 6.4 MB; without its pipelines (which the training tools never import) the
zip is about 2.1 MB, which matters where everything that travels must fit in 64 MiB.
`tools/gpu_train.sh` puts the zip on PYTHONPATH (zipimport).  The zip is checked here:
a fresh interpreter imports the UNet and both schedulers from it and runs the UNet.
"""

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SKIP = ("diffusers/pipelines/", "diffusers/modular_pipelines/")

CHECK = """
import torch, diffusers
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
assert diffusers.__file__.startswith(%r), diffusers.__file__
u = UNet2DConditionModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=8, cross_attention_dim=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1, attention_head_dim=2)
u(torch.randn(1, 4, 16, 16), 1, encoder_hidden_states=torch.randn(1, 3, 8))
DDIMScheduler(); DDPMScheduler()
"""


def pack(out):
    import diffusers

    root = Path(diffusers.__file__).parent.parent
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for p in sorted((root / "diffusers").rglob("*")):
            name = p.relative_to(root).as_posix()
            if p.is_file() and "__pycache__" not in name and not name.startswith(SKIP):
                z.write(p, name)
    os.replace(tmp, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the zip to write, e.g. .whl/diffusers.zip")
    out = Path(ap.parse_args().out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pack(out)
    env = dict(os.environ, PYTHONPATH=f"{out.resolve()}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    subprocess.run([sys.executable, "-c", CHECK % str(out.resolve())], env=env, check=True)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, imports and runs")


if __name__ == "__main__":
    main()
