#!/usr/bin/env bash
# The benchmark run for a GPU machine that has CUDA and PyTorch but no Rust toolchain and
# no network: easel (a release build brought along) against diffusers on the same random
# Stable Diffusion 1.5 folder, made there by tools/make_random_sd15.py.
#
#   OUT=DIR bash tools/gpu_bench.sh        # EASEL=path/to/easel (default .gpu/easel)
#
# What to bring: .gpu/ as tools/gpu_pack.sh makes it (easel without the embedded model,
# stripped and xz-compressed; the Vulkan loader .debs, to unpack first: for f in
# .gpu/*.deb; do dpkg -x $f /; done; ldconfig; diffusers as an importable zip).
#
# Writes into OUT (8 files): log.txt (every table: devices, peak, kernels, generate,
# diffusers), kernels_{coop,gpu}.json (easel bench kernels --model at SD-1.5's shapes,
# with and without cooperative matrices), generate_{coop,tiled}.json (easel bench generate
# 256x256 and 512x512, K = 1, 20 steps; tiled = EASEL_COOPERATIVE=off; `--precision auto`,
# which on a GPU with these f16 weights is f16 activations; with f32 activations in
# log.txt), diffusers_{fp32,fp16}.json (tools/bench_diffusers.py, the same work in
# diffusers on CUDA), tuning.json (`easel tune` at SD-1.5's launches: this GPU's table,
# for src/ops/tuning.json; a 512x512 generation with it follows, in log.txt).
# Each step has its own time limit (LIMIT seconds, default 150) so one slow step cannot
# take the others' time; a step that fails leaves its message in log.txt and the rest go on.
set -uo pipefail
cd "$(dirname "$0")/.."
EASEL=${EASEL:-.gpu/easel}
OUT=${OUT:-target/gpu-bench}
LIMIT=${LIMIT:-150}
PY=${PY:-python3}
SD=${SD:-/tmp/easel-sd15-f16}
mkdir -p "$OUT"
log="$OUT/log.txt"
if [ -f "$EASEL.xz" ] && [ ! -f "$EASEL" ]; then  # Python's lzma where xz is missing
  xz -dk "$EASEL.xz" 2> /dev/null || "$PY" -c "import lzma, shutil, sys
shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$EASEL.xz" "$EASEL"
  chmod +x "$EASEL"
fi
step() {
  local name=$1
  shift
  echo "== $name: $*" >> "$log"
  local start=$SECONDS
  timeout "$LIMIT" "$@" >> "$log" 2>&1
  echo "== $name: exit $?, $((SECONDS - start)) s" >> "$log"
}

if ! "$PY" -c "import diffusers" 2> /dev/null && [ -f .gpu/diffusers.zip ]; then
  export PYTHONPATH=$PWD/.gpu/diffusers.zip${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d "$SD" ] || step sd15 "$PY" tools/make_random_sd15.py --out "$SD" --dtype f16
step devices "$EASEL" devices
step peak "$EASEL" bench peak
# --model times each launch as the model records it, with the kernels easel chooses:
# the tiled ones are those it chooses with the cooperative matrices turned off.
step kernels-coop "$EASEL" bench kernels --model "$SD" --json "$OUT/kernels_coop.json"
step kernels-gpu env EASEL_COOPERATIVE=off "$EASEL" bench kernels --model "$SD" \
  --json "$OUT/kernels_gpu.json"
# auto is f16 activations here (f16 weights, a GPU): the f32 kernels' table, in log.txt.
step kernels-coop-f32 "$EASEL" bench kernels --model "$SD" --precision f32
sizes=(--sizes 256x256,512x512 --candidates 1 --steps 20 --runs 2)
step generate-coop "$EASEL" bench generate --model "$SD" "${sizes[@]}" --json "$OUT/generate_coop.json"
step generate-tiled env EASEL_COOPERATIVE=off "$EASEL" bench generate --model "$SD" "${sizes[@]}" \
  --json "$OUT/generate_tiled.json"
step generate-coop-f32 "$EASEL" bench generate --model "$SD" "${sizes[@]}" --precision f32
for precision in fp32 fp16; do
  step "diffusers-$precision" "$PY" tools/bench_diffusers.py --model "$SD" --precision "$precision" \
    --sizes 256x256,512x512 --steps 20 --json "$OUT/diffusers_$precision.json"
done
# Every GEMM and attention variant at SD-1.5's launches, winners per shape class: the
# table to build in. --quick (the UNet at CFG batch 2, 2 rounds) to stay within LIMIT:
# the Cpu kernels are slow on a GPU, and every variant runs every pass twice a round.
step tune "$EASEL" tune --quick --model "$SD" --out "$OUT/tuning.json"
step generate-tuned env EASEL_TUNING="$OUT/tuning.json" "$EASEL" bench generate --model "$SD" \
  --sizes 512x512 --candidates 1 --steps 20 --runs 2
# The VAE decoder at 512x512 with its group norms split into chunks (auto, on a GPU)
# and whole (one workgroup per segment): whether group_norm_chunks' rule pays (log.txt).
for split in auto off; do
  step "vae-split-norms-$split" env EASEL_SPLIT_NORMS=$split "$EASEL" bench models --model "$SD" \
    vae --batches 1
done
# The tiled GEMM's two tiles at the same shapes (log.txt), last so
# that a run out of time loses only these: what EASEL_WIDE_TILES=auto's
# 128-workgroup rule (src/ops/matmul.rs, MIN_WIDE_GROUPS) should be set from.
for wide in off always; do
  step "kernels-gpu-wide-$wide" env EASEL_COOPERATIVE=off EASEL_WIDE_TILES=$wide \
    "$EASEL" bench kernels --model "$SD"
done
echo "gpu_bench: done, $SECONDS s" >> "$log"
