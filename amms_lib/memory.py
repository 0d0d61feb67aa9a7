"""Peak memory of one call, measured where it is clean: Linux's VmHWM reset through
``/proc/self/clear_refs`` (elsewhere the process's max RSS), in a fresh Python process
(``fresh_process``). ``measure`` runs a non-local block's step that way (notebook 01,
``benchmarks/nonlocal_memory.py``); the other memory benchmarks use the same two tools.

    python -m amms_lib.memory --worker full:64 naive:64 [--channels 64] [--forward-only]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from amms_lib.non_local import NonLocalBlock
from amms_lib.runtime import ArgumentParser

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


def fresh_process(argv: list, show_stderr: bool = False, **env) -> list[dict] | str:
    """Run ``python argv...`` (a script and its arguments, or ``-m module ...``) in a fresh
    process (clean peak memory, failures contained) with glibc returning freed blocks to
    the OS (``MALLOC_MMAP_THRESHOLD_``) and ``env`` added; its JSON stdout lines, or the
    last stderr line when it failed."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", **env}
    out = subprocess.run([sys.executable, *map(str, argv)], env=env, text=True,
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
    """Run ``worker`` in a fresh Python process (``python -m amms_lib.memory --worker``);
    one dict per ``mode:side``.

    Without /proc (the peak cannot be reset) every spec gets its own process.
    """
    args = ["--channels", str(channels), "--repeat", str(repeat)] + (
        [] if backward else ["--forward-only"])
    results = []
    for group in [specs] if CLEAR_REFS.exists() else [[s] for s in specs]:
        rows = fresh_process(["-m", "amms_lib.memory", *args, "--worker", *group])
        if isinstance(rows, str):
            raise SystemExit(f"measuring {group} failed: {rows}")
        results += rows
    return results


def main() -> None:
    """The worker's command line: one JSON line per ``mode:side`` (``measure`` parses them)."""
    ap = ArgumentParser(prog="python -m amms_lib.memory")
    ap.add_argument("--worker", nargs="+", metavar="MODE:SIDE", required=True)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    worker(args.worker, args.channels, not args.forward_only, args.repeat)


if __name__ == "__main__":
    main()
