"""Peak memory and time of NonLocalBlock: fused ("full") against explicit ("naive").

    python benchmarks/nonlocal_memory.py [--channels 64] [--sides 64 128 256]

Prints, for a 64-channel block (reduction 2) on CPU, the forward+backward time and
peak memory at side^2 positions, each measured in a fresh subprocess: peak resident
memory (RSS) during the step minus the RSS just before it. "naive" is skipped where
its N x N float32 matrices would need more than ~8 GB; the matrix size is printed
instead. The notebook and the tests use ``measure()``, which runs the worker

    python benchmarks/nonlocal_memory.py --worker full:64 naive:64 [--forward-only]
        [--repeat 1]

(one JSON line per mode:side, measured one after another in that process).

How peak RSS is measured on Linux: writing "5" to /proc/self/clear_refs resets the
high-water mark VmHWM to the current RSS; MALLOC_MMAP_THRESHOLD_ makes malloc give
every buffer over 64 KiB back to the OS when freed, so one measurement does not hide
the next. Elsewhere: ru_maxrss after minus before the step, one process per step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from amms_lib.non_local import NonLocalBlock

LIMIT_BYTES = 8e9  # skip naive above this
MATRICES = 3  # naive fwd+bwd holds ~3 N x N matrices: scores, weights, their gradient
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak_memory(fn) -> tuple[float, int]:
    """(seconds, peak bytes above the RSS before) of one call of ``fn``."""
    linux = CLEAR_REFS.exists()
    if linux:
        base = _status_bytes("VmRSS")
        CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
    else:
        base = _maxrss_bytes()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    top = _status_bytes("VmHWM") if linux else _maxrss_bytes()
    return seconds, max(0, top - base)


def fresh_process(script: str, args: list[str], show_stderr: bool = False,
                  **env) -> list[dict] | str:
    """Run ``script args`` in a fresh Python process (clean peak memory, failures
    contained) with glibc returning freed blocks to the OS (``MALLOC_MMAP_THRESHOLD_``)
    and ``env`` added; its JSON stdout lines, or the last stderr line when it failed."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", **env}
    out = subprocess.run([sys.executable, str(script), *args], env=env, text=True,
                         stdout=subprocess.PIPE,
                         stderr=None if show_stderr else subprocess.PIPE)
    if out.returncode != 0:
        lines = (out.stderr or "").strip().splitlines()
        return f"exit {out.returncode}: {lines[-1] if lines else 'see above'}"[:300]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def step(net: NonLocalBlock, side: int, backward: bool):
    x = torch.randn(1, net.channels, side, side, requires_grad=backward)

    def run():
        if backward:
            net(x).sum().backward()
        else:
            with torch.no_grad():
                net(x)
    return run


def worker(specs: list[str], channels: int, backward: bool, repeat: int) -> None:
    torch.manual_seed(0)
    nets = {}
    for spec in specs:
        mode, side = spec.split(":")
        if mode not in nets:
            net = nets[mode] = NonLocalBlock(channels, reduction=2, mode=mode)
            torch.nn.init.normal_(net.out.weight, std=0.1)  # trained, not identity
            for warm in (64, 16):  # one-off allocations: threads, kernels, grads
                step(net, warm, backward)()
        run = step(nets[mode], int(side), backward)
        seconds, peak = peak_memory(run)
        for _ in range(repeat - 1 if seconds < 10 else 0):  # best of several if cheap
            t0 = time.perf_counter()
            run()
            seconds = min(seconds, time.perf_counter() - t0)
        print(json.dumps({"mode": mode, "side": int(side), "seconds": seconds,
                          "peak_bytes": peak}), flush=True)


def measure(specs: list[str], channels: int = 64, backward: bool = True,
            repeat: int = 3) -> list[dict]:
    """Run ``worker`` in a fresh Python process; one dict per ``mode:side``.

    Without /proc (the peak cannot be reset) every spec gets its own process.
    """
    args = ["--channels", str(channels), "--repeat", str(repeat)] + (
        [] if backward else ["--forward-only"])
    results = []
    for group in [specs] if CLEAR_REFS.exists() else [[s] for s in specs]:
        rows = fresh_process(Path(__file__).resolve(), args + ["--worker", *group])
        if isinstance(rows, str):
            raise SystemExit(f"measuring {group} failed: {rows}")
        results += rows
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
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
    main()
