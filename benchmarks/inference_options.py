"""Inference options on this CPU, measured against eager float32 in one process.

    python benchmarks/inference_options.py [--checkpoint checkpoints/amms_x2.pt]
        [--set Set14] [--rounds 2] [--tile N]
        [--json benchmarks/results/inference_options_MACHINE.json]

Each option upscales the whole set (published LR, scale from the checkpoint) and is
scored on Y: ``fp32`` (eager, the default), ``cl`` (channels-last), ``bf16`` (autocast:
the convolutions in bf16; the non-local attention and the second-order statistics stay
float32 by design, ``amms_lib.non_local``), ``cl+bf16``. Rounds alternate the options
so that both see the same load; the fastest round counts. An option is worth keeping
when it is faster and moves the set's PSNR by less than 0.01 dB (the issue's bar); the
last column says so. ``--tile N`` runs every option in tiles of N LR pixels
(``inference.forward_tiled``, default overlap), as ``--tile auto`` does for large images:
there the convolutions, which bf16 speeds up, are most of the work, and the attention less.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from amms_lib import data
from amms_lib.checkpoint import load_model
from amms_lib.inference import OVERLAP, forward_tiled, to_image, to_tensor
from amms_lib.metrics import psnr
from amms_lib.runtime import ArgumentParser, cli, cpu_name
from amms_lib.studies import check_new_results, measurement_kind, stamp

OPTIONS = ("fp32", "cl", "bf16", "cl+bf16")
KIND = measurement_kind("inference_options", {
    "checkpoint", "set", "scale", "tile", "cpu", "threads", "rows"}, {"option", "seconds",
                                                                      "psnr"})


@torch.no_grad()
def run(net, lrs: list[np.ndarray], option: str,
        tile: int | None = None) -> tuple[float, list[np.ndarray]]:
    """Seconds to upscale every LR image with ``option``, and the SR images."""
    cl, bf16 = "cl" in option, "bf16" in option
    model = net.to(memory_format=torch.channels_last) if cl else net.to(
        memory_format=torch.contiguous_format)
    out, t0 = [], time.perf_counter()
    for lr in lrs:
        x = to_tensor(lr)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            y = forward_tiled(model, x, tile, OVERLAP) if tile else model(x)
        out.append(to_image(y.float(), grey=lr.ndim == 2))
    return time.perf_counter() - t0, out


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/amms_x2.pt")
    ap.add_argument("--set", default="Set14")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tile", type=int, default=None, help="LR tile side (default: whole)")
    ap.add_argument("--json")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json replace an existing file")
    args = ap.parse_args()
    out = check_new_results(args.json, args.overwrite, KIND)
    net, meta = load_model(args.checkpoint)
    scale = meta["scale"]
    pairs = list(data.iter_pairs(args.set, scale))
    lrs = [p.lr for p in pairs]
    run(net, [lrs[0][:16, :16]], "cl+bf16")  # one-off set-up of every kernel kind
    best = {o: float("inf") for o in OPTIONS}
    scores = {}
    for _ in range(args.rounds):
        for option in OPTIONS:
            seconds, srs = run(net, lrs, option, args.tile)
            best[option] = min(best[option], seconds)
            scores[option] = float(np.mean([psnr(sr, p.hr, scale) for sr, p in zip(srs, pairs)]))
    rows = []
    print(f"{args.set} x{scale}, {len(pairs)} images, "
          f"{f'tiles of {args.tile}' if args.tile else 'whole images'}, "
          f"{torch.get_num_threads()} threads, "
          f"fastest of {args.rounds} rounds")
    print(f"{'option':<9}{'seconds':>9}{'speed-up':>10}{'PSNR':>9}{'vs fp32':>10}  keep?")
    for option in OPTIONS:
        gain, moved = best["fp32"] / best[option], scores[option] - scores["fp32"]
        keep = option != "fp32" and gain > 1 and abs(moved) < 0.01
        rows.append({"option": option, "seconds": best[option], "speedup": gain,
                     "psnr": scores[option], "psnr_vs_fp32": moved, "keep": keep})
        print(f"{option:<9}{best[option]:>9.2f}{gain:>9.2f}x{scores[option]:>9.3f}"
              f"{moved:>+10.4f}  {'yes' if keep else '-'}")
    if out:
        out.write(stamp({"checkpoint": args.checkpoint, "set": args.set, "scale": scale,
                         "tile": args.tile, "cpu": cpu_name(),
                         "threads": torch.get_num_threads(), "rows": rows},
                        precision="per row (float32, bf16 autocast)"))
        print(out.said())


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C, an AmmsError: one line
