#!/usr/bin/env bash
# One training run of the 64x64 default model (train_unet.py --config emoji64) on a GPU
# machine, then a quick evaluation there; docs/training.md says what to carry and why.
#
#   DATA=emoji64.npz OUT=/results bash tools/gpu_train.sh                  # first run
#   DATA=emoji64.npz PREV=prev/unet OUT=/results bash tools/gpu_train.sh   # the next ones
#
# Writes to $OUT (at most 6 files, each well under 16 MiB):
#   unet/config.json, unet/diffusion_pytorch_model.safetensors   the EMA, exported (also
#       every CKPT_MINUTES while training, so a run cut short still leaves one); the next
#       run goes on from it (PREV=that folder), `tools/export.py --assemble` makes a model
#   train.log, eval.json, contact_sheet.png, upscaler_sheet.png
#
# Settings (environment): MINUTES of training (7: a command may run 10 minutes), BATCH
# (256), LR (5e-4), STEPS (stop at this total step), DECAY ("START END": cosine lr to
# zero, for the last run), COMPILE=1 (torch.compile), DEVICE/AMP (auto: cuda + bf16),
# CHANNELS (another width: tests), EVAL_LABELS/EVAL_PER_LABEL/EVAL_STEPS (100/4/25; EVAL=0: none),
# PY (python3).  Where the machine lacks diffusers (the GPU image has torch and
# transformers, not diffusers), `.whl/diffusers.zip` (tools/pack_diffusers.py) supplies it.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?DATA=FILE.npz (tools/data.py --npz) is needed}"
: "${OUT:?OUT=DIR (where the results go) is needed}"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 EASEL_THREADS=${EASEL_THREADS:-$(nproc)}
export EASEL_TRAIN_DIR=${EASEL_TRAIN_DIR:-$(mktemp -d)}
mkdir -p "$OUT"

if ! "$PY" -c "import diffusers" 2>/dev/null; then  # the zip of tools/pack_diffusers.py
  [ -f .whl/diffusers.zip ] || { echo "gpu_train: no diffusers here and no .whl/diffusers.zip" >&2; exit 2; }
  export PYTHONPATH=$PWD/.whl/diffusers.zip${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

args=(--config emoji64 --data "$DATA" --batch "${BATCH:-256}" --lr "${LR:-5e-4}"
      --max-minutes "${MINUTES:-7}" --ckpt-minutes "${CKPT_MINUTES:-2}"
      --ckpt-dir "$EASEL_TRAIN_DIR/ckpt" --export-to "$OUT/unet"
      --device "${DEVICE:-auto}" --amp "${AMP:-auto}")
[ -n "${PREV:-}" ] && args+=(--warm-start "$PREV")
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
[ -n "${DECAY:-}" ] && args+=(--decay ${DECAY})
[ -n "${CHANNELS:-}" ] && args+=(--channels "$CHANNELS")
[ -n "${COMPILE:-}" ] && args+=(--compile)
"$PY" tools/train_unet.py "${args[@]}" 2>&1 | tee "$OUT/train.log"

# The quick evaluation (EVAL=0: none): denoising loss on the carried styles, 100 labels x 4
# samples graded by the shipped scorer (the judge's weights do not travel), contact sheets.
[ "${EVAL:-1}" = 0 ] && { echo "gpu_train: done (no evaluation); results in $OUT"; exit 0; }
model=$EASEL_TRAIN_DIR/model
"$PY" tools/export.py --assemble "$model" --unet "$OUT/unet"
dev=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() and '${DEVICE:-auto}' != 'cpu' else 'cpu')")
"$PY" tools/evaluate.py --model "$model" --data "$DATA" --device "$dev" --labels "${EVAL_LABELS:-100}" \
  --per-label "${EVAL_PER_LABEL:-4}" --steps "${EVAL_STEPS:-25}" --sheet "$OUT/contact_sheet.png" \
  --out "$EASEL_TRAIN_DIR/eval" 2>&1 | tail -n 40
cp "$(ls -t "$EASEL_TRAIN_DIR"/eval/eval-*.json | head -n 1)" "$OUT/eval.json"
echo "gpu_train: done; results in $OUT"
