#!/usr/bin/env bash
# Stage the data a lent GPU machine needs into gpu_data/ (only the repository travels):
# train/T91, train/BSD200, and Set5/Set14 with HR and X2 LR. gpu_data/ is added to
# .git/info/exclude, so it stays out of git status and is copied to the GPU machine on
# purpose, beside the checkout (kept under 60 MiB, so that a copy with the repository stays
# small).
#   scripts/stage_gpu_data.sh [SRC]     # SRC: $AMMS_DATA, else ../shared/data
#   scripts/stage_gpu_data.sh --clean   # delete the staged copy
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=gpu_data
if [ "${1:-}" = --clean ]; then rm -rf "$DEST"; echo "removed $DEST/"; exit 0; fi
SRC=${1:-${AMMS_DATA:-../shared/data}}
if EXCLUDE=$(git rev-parse --git-path info/exclude 2>/dev/null); then
    mkdir -p "$(dirname "$EXCLUDE")"
    grep -qxF "/$DEST/" "$EXCLUDE" 2>/dev/null || echo "/$DEST/" >> "$EXCLUDE"
fi
rm -rf "$DEST"
mkdir -p "$DEST/train"
cp -r "$SRC/train/T91" "$SRC/train/BSD200" "$DEST/train/"
for s in Set5 Set14; do
    mkdir -p "$DEST/benchmark/$s/LR_bicubic"
    cp -r "$SRC/benchmark/$s/HR" "$DEST/benchmark/$s/"
    cp -r "$SRC/benchmark/$s/LR_bicubic/X2" "$DEST/benchmark/$s/LR_bicubic/"
done
MIB=$(( $(du -sk "$DEST" | cut -f1) / 1024 ))
echo "staged $DEST/: ${MIB} MiB, $(find "$DEST" -type f | wc -l) files"
if [ "$MIB" -ge 60 ]; then echo "error: over 60 MiB; stage fewer sets" >&2; exit 1; fi
