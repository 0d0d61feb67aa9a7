"""What tiling costs and buys: whole-image attention against LR tiles, on real images.

    python benchmarks/upscale_tiles.py [--sets BSD100 Urban100] [--scales 2 4]
        [--tiles 32 64 128 256] [--overlap 8] [--no-whole] [--images 3]
        [--json benchmarks/results/upscale_tiles.json]

For the shipped ``checkpoints/amms_x<s>.pt`` and the first ``--images`` images of each
set, every setting (the whole image, then each tile with ``--overlap`` LR pixels of context
per side, by default ``inference.OVERLAP``)
upscales the published LR once, timed, with its peak memory above the resident set before
the call (``amms_lib.memory.peak_memory``: Linux's VmHWM), and scored on Y. A row gives,
per setting, the mean seconds per image, the largest peak, the mean PSNR and its mean
difference from the whole image's on the same images (``--no-whole``: tiles only, to pair
with another run's per-image scores) with a 95% t interval over images
(paired: the unit of noise is the image): what global attention buys over attention
within a tile, in dB, against what it costs, in seconds. ``--tile auto``'s rule
is read from this table (README). The estimate of ``amms_lib.speed`` is printed beside
each time. Whole-image attention grows as N^2: the first Urban100 image at x2 is about
a minute on 2 cores; start with ``--images 1``.
"""
from __future__ import annotations

import numpy as np
import torch

from amms_lib import data, speed
from amms_lib.checkpoint import checkpoints_dir, load_model
from amms_lib.inference import OVERLAP, upscale
from amms_lib.memory import peak_memory
from amms_lib.metrics import psnr
from amms_lib.runtime import ArgumentParser, cli, cpu_name
from amms_lib.stats import paired_interval
from amms_lib.studies import check_new_results, measurement_kind, stamp

MB = 1e6
KIND = measurement_kind("upscale_tiles", {"overlap", "cpu", "threads", "rows"},
                        {"set", "scale", "tile", "seconds", "psnr"})


def measure(net, lr: np.ndarray, hr: np.ndarray, scale: int, tile: int | None,
            overlap: int = OVERLAP) -> dict:
    """One upscale: seconds, peak bytes, PSNR, and the estimate for it."""
    out = {}
    seconds, peak = peak_memory(
        lambda: out.setdefault("sr", upscale(net, lr, tile=tile, overlap=overlap)))
    return {"seconds": seconds, "peak_mb": peak / MB, "psnr": psnr(out["sr"], hr, scale),
            "estimate_s": speed.estimate_seconds(net, *lr.shape[:2], tile, overlap)}


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=["BSD100", "Urban100"])
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--tiles", nargs="+", type=int, default=[32, 64, 128, 256])
    ap.add_argument("--overlap", type=int, default=OVERLAP, help="LR context per tile side")
    ap.add_argument("--no-whole", action="store_true", help="tiles only (no whole-image row)")
    ap.add_argument("--images", type=int, default=3, help="first N images of each set")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json replace an existing file")
    args = ap.parse_args()
    out = check_new_results(args.json, args.overwrite, KIND)
    rows = []
    for scale in args.scales:
        net, _ = load_model(checkpoints_dir() / f"amms_x{scale}.pt", scale=scale)
        upscale(net, np.zeros((16, 16, 3), np.uint8))  # one-off allocations
        speed.calibrate(net)
        for set_name in args.sets:
            names = data.list_images(set_name)[: args.images]
            per = {t: [] for t in [*([] if args.no_whole else [None]), *args.tiles]}
            for name in names:
                pair = data.load_pair(set_name, name, scale)
                for tile in per:
                    per[tile].append(measure(net, pair.lr, pair.hr, scale, tile, args.overlap))
            whole = np.array([r["psnr"] for r in per.get(None, [])])
            for tile, rs in per.items():
                row = {"set": set_name, "scale": scale, "tile": tile, "images": names,
                       "seconds": float(np.mean([r["seconds"] for r in rs])),
                       "estimate_s": float(np.mean([r["estimate_s"] for r in rs])),
                       "peak_mb": float(max(r["peak_mb"] for r in rs)),
                       "psnr": float(np.mean([r["psnr"] for r in rs])),
                       "psnr_per_image": [r["psnr"] for r in rs]}
                diff = (paired_interval(list(np.array(row["psnr_per_image"]) - whole))  # paired
                        if len(whole) else {"mean": None, "ci95": None})
                row |= {"psnr_vs_whole": diff["mean"], "psnr_vs_whole_ci95": diff["ci95"]}
                rows.append(row)
                ci = "" if diff["ci95"] is None else " [{:+.4f}, {:+.4f}]".format(*diff["ci95"])
                vs = "no whole" if diff["mean"] is None else f"{diff['mean']:+.4f}{ci} vs whole"
                print(f"{set_name:>9} x{scale} {str(tile or 'whole'):>6}: "
                      f"{row['seconds']:7.2f} s/image (estimate {row['estimate_s']:6.2f}), "
                      f"peak {row['peak_mb']:6.0f} MB, PSNR {row['psnr']:.3f} dB "
                      f"({vs})", flush=True)
    if out:
        out.write(stamp({"overlap": args.overlap, "cpu": cpu_name(),
                         "threads": torch.get_num_threads(), "rows": rows}))
        print(out.said())


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C, an AmmsError: one line
