#!/usr/bin/env bash
# Train AMMS on a GPU with a time budget, then benchmark the best checkpoint.
#
#   SCALE=2 MINUTES=8 scripts/train_gpu.sh            # new run in runs/train/amms_x2
#   SCALE=2 MINUTES=8 RESUME=1 scripts/train_gpu.sh   # continue that run
#
# Writes OUT/{last,best}.pt, OUT/metrics.jsonl and OUT/benchmark.json (Set5, Set14).
# RECIPE=paper gives the paper's schedule (lr 1e-4 halved every 200 epochs of 1000
# iterations); the default fast recipe (warm-up + cosine from 2e-4) suits short budgets.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-2}
MINUTES=${MINUTES:-8}
RECIPE=${RECIPE:-fast}
LR=${LR:-$([ "$RECIPE" = fast ] && echo 2e-4 || echo 1e-4)}
EPOCHS=${EPOCHS:-10}
OUT=${OUT:-runs/train/amms_x${SCALE}}
PY=${PY:-python}
PATCH=${PATCH:-192}  # HR patch side: the paper's 192 at every scale
# the data folder as the Makefile finds it; without one, training refuses to start
if [ -z "${AMMS_DATA:-}" ]; then
    for d in "$PWD/data" "$PWD/../shared/data"; do [ -d "$d" ] && export AMMS_DATA=$d && break; done
fi
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || echo --no-resume)
$PY -m amms_lib.train --model amms --scale "$SCALE" --recipe "$RECIPE" --lr "$LR" \
    --epochs "$EPOCHS" --iters-per-epoch 1000 --batch-size 16 --patch-size "$PATCH" \
    --val-every 1000 --max-minutes "$MINUTES" --workers "${WORKERS:-8}" \
    --out-dir "$OUT" $RESUME_FLAG ${EXTRA:-}
$PY -m amms_lib.benchmark --model amms --checkpoint "$OUT/best.pt" --scales "$SCALE" \
    --datasets Set5 Set14 --overwrite --json "$OUT/benchmark.json"
