#!/usr/bin/env bash
# Packs what tools/gpu_bench.sh needs on a GPU machine that has no Rust toolchain and no
# network into .gpu/ (add it to .git/info/exclude): easel built without the embedded model
# (it reads weights/ from the checkout), stripped and xz-compressed; the Vulkan loader
# .debs from DEBS_DIR; diffusers as one importable zip (tools/pack_diffusers.py: the
# machine's image has torch and transformers, not diffusers).
#
#   bash tools/gpu_pack.sh DEBS_DIR
#
# Then, on the GPU machine, from the checkout with .gpu/ beside it:
#   for f in .gpu/*.deb; do dpkg -x $f /; done; ldconfig; OUT=$OUT bash tools/gpu_bench.sh
#
# What travels (tracked files plus .gpu/) must stay under 64 MiB; the script prints the
# total and fails above it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 1 ] && [ -d "$1" ] || { echo "usage: tools/gpu_pack.sh DEBS_DIR (the Vulkan loader .debs)" >&2; exit 2; }
PY=${PY:-tools/.venv/bin/python}
"$PY" -c "import diffusers" 2> /dev/null || { echo "gpu_pack: $PY cannot import diffusers (tools/setup.sh makes the venv)" >&2; exit 2; }
rm -rf .gpu
mkdir -p .gpu
cargo build --release --no-default-features --target-dir target/gpu-pack
strip -o .gpu/easel target/gpu-pack/release/easel
xz -9 -T0 .gpu/easel
cp "$1"/*.deb .gpu/
"$PY" tools/pack_diffusers.py .gpu/diffusers.zip
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
packed=$(du -cb .gpu/* | tail -1 | cut -f1)
total=$((tracked + packed))
echo "gpu_pack: tracked $tracked B + .gpu $packed B = $total B (limit $((64 << 20)) B)"
[ "$total" -le $((64 << 20)) ] || { echo "gpu_pack: over 64 MiB; carry less" >&2; exit 1; }
