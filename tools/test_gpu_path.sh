#!/usr/bin/env bash
# The GPU training path, run on the CPU at tiny scale: tools/gpu_train.sh with
# --device cpu --amp bf16 (the same code as on CUDA: bf16 autocast, f32 loss, foreach EMA,
# the art kept and augmented on the training device, periodic export), a second run
# warm-started from the first's export, a run with no minutes left, the scorer's trainer
# on the same path, then the export assembled into a model folder that easel (release
# build) loads and draws from.
#
#   bash tools/test_gpu_path.sh            # EASEL_DATA=FILE.npz to reuse a packed data file
#
# Takes a few minutes on two shared cores; prints "test_gpu_path: ok" at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-tools/.venv/bin/python}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export EASEL_THREADS=1
fail() { echo "test_gpu_path: $*" >&2; exit 1; }
data=${EASEL_DATA:-$T/data.npz}
[ -f "$data" ] || "$PY" tools/data.py --npz "$data" --styles noto,fluent
# The packed file holds what data.py prepared (where the prepared arrays are at hand).
"$PY" - "$data" <<'PY' || fail "the .npz differs from the prepared data"
import sys
sys.path.insert(0, "tools")
import data
if (data.DATA / "fluent.json").exists():
    a, e = data.load("fluent")
    b, f = data.load_file(sys.argv[1], "fluent")
    assert (a == b).all() and e == f
PY
tiny=(DATA=$data PY=$PY DEVICE=cpu AMP=bf16 CHANNELS=8,8,16,16 BATCH=4 CKPT_MINUTES=0
      EVAL_LABELS=4 EVAL_PER_LABEL=4 EVAL_STEPS=2)
step() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['_easel_training']['step'])" "$1/unet/config.json"; }

env "${tiny[@]}" EASEL_TRAIN_DIR="$T/train1" OUT="$T/run1" STEPS=6 bash tools/gpu_train.sh > "$T/run1.log" 2>&1 || { cat "$T/run1.log"; fail "run 1 failed"; }
[ "$(step "$T/run1")" = 6 ] || fail "run 1 exported step $(step "$T/run1"), expected 6"
grep -q "amp bf16" "$T/run1/train.log" || fail "run 1 did not use bf16 autocast"
for f in unet/config.json unet/diffusion_pytorch_model.safetensors train.log eval.json contact_sheet.png; do
  [ -s "$T/run1/$f" ] || fail "run 1 left no $f"
done

env "${tiny[@]}" EASEL_TRAIN_DIR="$T/train2" EVAL=0 OUT="$T/run2" PREV="$T/run1/unet" STEPS=9 bash tools/gpu_train.sh > "$T/run2.log" 2>&1 || { cat "$T/run2.log"; fail "run 2 failed"; }
grep -q "warm start from $T/run1/unet at step 6" "$T/run2/train.log" || fail "run 2 did not go on from run 1"
[ "$(step "$T/run2")" = 9 ] || fail "run 2 exported step $(step "$T/run2"), expected 9"

env "${tiny[@]}" EASEL_TRAIN_DIR="$T/train3" EVAL=0 OUT="$T/run3" PREV="$T/run2/unet" MINUTES=0 bash tools/gpu_train.sh > "$T/run3.log" 2>&1 || { cat "$T/run3.log"; fail "run 3 failed"; }
grep -q "done: step 9, 0 steps" "$T/run3/train.log" || fail "run 3 (no minutes) trained anyway"

EASEL_TRAIN_DIR=$T/scorer "$PY" tools/train_scorer.py --steps 3 --batch 8 --device cpu --amp bf16 --data "$data" \
  --styles fluent > "$T/scorer.log" 2>&1 || { cat "$T/scorer.log"; fail "the scorer's bf16 path failed"; }
[ -f "$T/scorer/ckpt/scorer/step_3.pt" ] || fail "the scorer saved no checkpoint at step 3"

"$PY" tools/export.py --assemble "$T/model" --unet "$T/run2/unet" > /dev/null
./target/release/easel --model "$T/model" "cat" --steps 2 --seed 1 -o "$T/cat.png" -q
size=$("$PY" -c "from PIL import Image; import sys; print('x'.join(map(str, Image.open(sys.argv[1]).size)))" "$T/cat.png")
[ "$size" = 256x256 ] || fail "easel drew $size from the 64x64 model, expected 256x256 (x4 upscale)"
echo "test_gpu_path: ok"
