"""Estimated against measured seconds of upscaling, on this machine (``amms_lib.speed``).

    python benchmarks/upscale_time.py [--checkpoint checkpoints/amms_x2.pt]
        [--sides 64 128 256 512] [--tiled 512:128 1000:128] [--json PATH]

Calibrates the network afresh (``speed.calibrate(refresh=True)``), then for each square
LR side runs ``amms_lib.inference.upscale`` once on a random uint8 image (after a
16x16 warm-up) and prints the estimate, the measured seconds and their ratio; ``--tiled
SIDE:TILE`` rows run tiled with the default overlap, and ``SIDE:auto`` with the tile that
``--tile auto`` picks (``inference.plan``, no budget). The issue's bar: every ratio within
1.5x (measured / estimated between 0.67 and 1.5) on 2 cores. Other jobs on the same cores
move both numbers; the calibration is measured under the same load as the rows.

Each row also gives the achieved GFLOP/s of the whole network (its FLOPs, attention
included, over the measured seconds), and the attention kernel's rate beside the
machine's estimated fp32 peak: cores x clock x FLOPs per cycle per core. The clock is the
max clock where Linux exposes it (cpufreq), else /proc/cpuinfo's (cpu MHz or BogoMIPS / 2,
the base clock: boost raises the real peak, and a share over 100% says so), and a
core's FLOPs per cycle are FMAs per cycle x fp32 lanes x 2: 2 x 16 x 2 = 64 on Intel server
cores with two AVX-512 FMA units and on Zen 5; 32 on Zen 4, which runs an AVX-512 FMA on
its two 256-bit FMA units (2 x 8 x 2, as AVX2 on Zen 2/3 and Intel client cores), read
from the CPU's flags and family (``--flops-per-cycle`` to override, e.g. 32 for a Xeon
with one AVX-512 FMA unit). A large fp32 matrix
product (torch.mm, 2048^2) is printed too: the ceiling a real kernel reaches here.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from amms_lib import speed
from amms_lib.checkpoint import load_model
from amms_lib.inference import OVERLAP, plan, upscale
from amms_lib.machine import OVER_PEAK, flops_per_cycle, gemm_gflops, of_peak, peak_gflops
from amms_lib.runtime import ArgumentParser, cli, cpu_name
from amms_lib.studies import check_new_results, measurement_kind, stamp

KIND = measurement_kind("upscale_time", {
    "checkpoint", "threads", "cpu", "overlap", "peak_gflops", "peak_how", "gemm_gflops",
    "rates", "rows", "worst"}, {"side", "tile", "estimate_s", "measured_s"})


def measure(net, side: int, tile: int | None) -> float:
    img = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    t = time.perf_counter()
    upscale(net, img, tile=tile)
    return time.perf_counter() - t


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/amms_x2.pt")
    ap.add_argument("--sides", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--tiled", nargs="*", default=["512:128", "1000:128"],
                    help="SIDE:TILE or SIDE:auto rows")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json replace an existing file")
    ap.add_argument("--flops-per-cycle", type=int, default=flops_per_cycle(),
                    help="fp32 FLOPs per cycle per core (default from the CPU's flags and "
                         "family: 64 with two 512-bit FMA units, 32 with AVX2 or on Zen 4)")
    args = ap.parse_args()
    out = check_new_results(args.json, args.overwrite, KIND)
    net, _ = load_model(args.checkpoint)
    t = time.perf_counter()
    rates = speed.calibrate(net, refresh=True)
    print(f"calibration {time.perf_counter() - t:.1f} s: convolutions "
          f"{rates.conv / 1e9:.1f} GFLOP/s, attention {rates.att / 1e9:.1f} GFLOP/s, "
          f"{rates.call * 1e3:.1f} ms per call; {torch.get_num_threads()} threads")
    peak, how = peak_gflops(args.flops_per_cycle)
    gemm = gemm_gflops()
    print(f"fp32 peak {peak:.0f} GFLOP/s ({how}); a 2048^2 matrix product reaches {gemm:.0f} "
          f"({of_peak(gemm, peak)}); the attention kernel {rates.att / 1e9:.0f} "
          f"({of_peak(rates.att / 1e9, peak)})")
    flops = speed.flop_model(net)
    upscale(net, np.zeros((16, 16, 3), np.uint8))  # one-off allocations
    rows = [(side, None, False) for side in args.sides]  # (LR side, tile, picked by auto)
    for spec in args.tiled:
        side, tile = spec.split(":")
        auto = tile == "auto"
        tile = (plan(net, int(side), int(side), "auto", OVERLAP, max_seconds=float("inf"))[0]
                if auto else int(tile))
        rows.append((int(side), tile, auto))
    rows_out = []
    print(f"{'LR side':>8} {'tile':>5} {'estimate s':>11} {'measured s':>11} {'ratio':>6}"
          f"{'GFLOP/s':>9}{'of peak':>8}")
    for side, tile, auto in rows:
        est = speed.estimate_seconds(net, side, side, tile, OVERLAP)
        got = measure(net, side, tile)
        work = sum(flops.conv(r * c) + flops.attention(r * c)
                   for r, c in speed.windows(side, side, tile, OVERLAP))
        rows_out.append({"side": side, "tile": tile, "auto": auto, "estimate_s": est,
                         "measured_s": got, "ratio": got / est, "gflops": work / got / 1e9})
        name = f"{tile or '-'}{'*' if auto else ''}"
        share = work / got / 1e9 / peak
        print(f"{side:>8} {name:>5} {est:>11.2f} {got:>11.2f} {got / est:>6.2f}"
              f"{work / got / 1e9:>9.1f}{share:>8.0%}" + "!" * (share > 1))
    worst = max(max(r["ratio"], 1 / r["ratio"]) for r in rows_out)
    print(f"worst ratio {worst:.2f}x (bar: 1.5x); *: the tile --tile auto picks; "
          f"overlap {OVERLAP}"
          + (f"; !: {OVER_PEAK}" if any(r["gflops"] > peak for r in rows_out) else ""))
    if out:
        out.write(stamp({
            "checkpoint": args.checkpoint, "threads": torch.get_num_threads(),
            "cpu": cpu_name(), "overlap": OVERLAP, "peak_gflops": peak, "peak_how": how,
            "gemm_gflops": gemm, "rates": {"conv_gflops": rates.conv / 1e9,
                                           "att_gflops": rates.att / 1e9,
                                           "call_ms": rates.call * 1e3},
            "rows": rows_out, "worst": worst}))
        print(out.said())


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C, an AmmsError: one line
