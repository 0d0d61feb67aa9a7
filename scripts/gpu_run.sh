#!/usr/bin/env bash
# The first GPU run: tests, speed, a timed x2 training, its benchmark, packed.
# On a GPU machine with a copy of the checkout (system python with torch + CUDA; nothing
# needs to be fetched there):
#   1. here:  scripts/stage_gpu_data.sh          # train/ + Set5/Set14 (HR, X2) -> gpu_data/,
#                                                # ~31 MiB, excluded via .git/info/exclude
#   2. there, with gpu_data/ copied beside the checkout:
#         AMMS_COMMIT=<sha> bash scripts/gpu_run.sh OUT   # the sha literally: no .git there
#      AMMS_DATA defaults to gpu_data/; the run keeps to 540 s (--budget-s), training gets
#      what the checks leave, at most 6 minutes (--train-minutes).
#   3. back under files_at: summary.json, gpu_run.tar.gz (logs, JSON, tests.xml),
#      amms_x2.pt + metadata.json (copy into checkpoints/ after review); the summary and
#      the tail of any failed stage's log are in the reply's output.
#   4. here:  scripts/stage_gpu_data.sh --clean
# CPU rehearsal (tests/test_gpu_run.py): scripts/gpu_run.sh --dry-run OUT
set -u
cd "$(dirname "$0")/.."
PY=${PY:-$(command -v python || command -v python3)}
exec "$PY" scripts/gpu_run.py "$@"
