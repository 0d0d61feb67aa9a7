"""Peak memory and time of NonLocalBlock: fused ("full") against explicit ("naive").

    python benchmarks/nonlocal_memory.py [--channels 64] [--sides 64 128 256]

Prints, for a 64-channel block (reduction 2) on CPU, the forward+backward time and
peak memory at side^2 positions, each measured in a fresh subprocess: peak resident
memory (RSS) during the step minus the RSS just before it. "naive" is skipped where
its N x N float32 matrices would need more than ~8 GB; the matrix size is printed
instead. The measurement is ``amms_lib.memory.measure`` (notebook 01 and the tests use it
too), which runs the worker

    python -m amms_lib.memory --worker full:64 naive:64 [--forward-only] [--repeat 1]

(one JSON line per mode:side, measured one after another in that process).

How peak RSS is measured on Linux: writing "5" to /proc/self/clear_refs resets the
high-water mark VmHWM to the current RSS; MALLOC_MMAP_THRESHOLD_ makes malloc give
every buffer over 64 KiB back to the OS when freed, so one measurement does not hide
the next. Elsewhere: ru_maxrss after minus before the step, one process per step.
"""
from __future__ import annotations

import argparse

import torch

from amms_lib.memory import measure, worker
from amms_lib.runtime import ArgumentParser, cli

LIMIT_BYTES = 8e9  # skip naive above this
MATRICES = 3  # naive fwd+bwd holds ~3 N x N matrices: scores, weights, their gradient
def main() -> None:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--sides", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--worker", nargs="+", metavar="MODE:SIDE")
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="timing: best of this many")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.channels, not args.forward_only, args.repeat)
        return
    step_name = "forward" if args.forward_only else "forward+backward"
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; "
          f"NonLocalBlock({args.channels}, reduction=2), batch 1, {step_name}")
    print(f"{'positions':>16} {'full s':>8} {'full MB':>9} {'naive s':>8} "
          f"{'naive MB':>9} {'naive/full':>11}")
    opts = dict(channels=args.channels, backward=not args.forward_only,
                repeat=args.repeat)
    for side in args.sides:
        n = side * side
        (full,) = measure([f"full:{side}"], **opts)
        row = (f"{side:>4}^2 = {n:>7,} {full['seconds']:>8.2f} "
               f"{full['peak_bytes'] / 1e6:>9.1f}")
        if MATRICES * n * n * 4 > LIMIT_BYTES:
            row += f"   skipped: one N*N*4 matrix alone is {n * n * 4 / 1e9:.1f} GB"
        else:
            (naive,) = measure([f"naive:{side}"], **opts)
            ratio = naive["peak_bytes"] / max(full["peak_bytes"], 1)
            row += (f" {naive['seconds']:>8.2f} {naive['peak_bytes'] / 1e6:>9.1f} "
                    f"{ratio:>10.0f}x")
        print(row, flush=True)


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C and an AmmsError: one line
