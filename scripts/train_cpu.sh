#!/usr/bin/env bash
# Train the compact AMMS (AMMSConfig.small()) on the CPU, the way the shipped weights were made.
#
#   SCALE=2 MINUTES=60 scripts/train_cpu.sh                                # x2 from scratch
#   SCALE=3 MINUTES=15 INIT=checkpoints/amms_x2.pt scripts/train_cpu.sh    # x3 from the x2 body
#   SCALE=2 MINUTES=240 STOP=50 scripts/train_cpu.sh                       # 50 minutes now ...
#   SCALE=2 MINUTES=240 STOP=50 scripts/train_cpu.sh                       # ... and again later
#
# MINUTES is the training-time budget the learning-rate schedule spans (warm-up, peak, cosine
# down to 0 when it is spent), counted over every resume; STOP ends this process earlier
# (saved, resumable: the next call with the same OUT continues exactly where it stopped).
# bf16 autocast + channels-last: the fastest safe CPU setting (benchmarks/train_speed.py).
# HR patches of 32 * SCALE pixels (32x32 LR) instead of the paper's 192: same LR work per step at
# every scale, and what 2 CPU cores can afford. Then benchmarks the best checkpoint on Set5/Set14.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-2}
MINUTES=${MINUTES:-60}
STOP=${STOP:-0}
INIT=${INIT:-}
LR=${LR:-5e-4}
OUT=${OUT:-runs/train/amms_small_x${SCALE}}
PY=${PY:-python}
KWARGS=${KWARGS:-$($PY -c 'import json; from amms_lib.amms import AMMSConfig; print(json.dumps(AMMSConfig.small_kwargs()))')}
if [ -z "${AMMS_DATA:-}" ]; then  # the data folder as the Makefile finds it
    for d in "$PWD/data" "$PWD/../shared/data"; do [ -d "$d" ] && export AMMS_DATA=$d && break; done
fi
$PY -m amms_lib.train --model amms --scale "$SCALE" --model-kwargs "$KWARGS" \
    --recipe fast --lr "$LR" --max-minutes "$MINUTES" --stop-minutes "$STOP" \
    --batch-size 16 --patch-size $((32 * SCALE)) --val-every 1000 --workers 0 \
    --cpu-amp --channels-last --resume ${INIT:+--init-from "$INIT"} --out-dir "$OUT" ${EXTRA:-}
$PY -m amms_lib.benchmark --model amms --checkpoint "$OUT/best.pt" --scales "$SCALE" \
    --datasets Set5 Set14 --overwrite --json "$OUT/benchmark.json"
