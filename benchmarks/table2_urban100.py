"""Urban100 cells of the equal-budget table, where a cell is affordable on this machine.

    python benchmarks/table2_urban100.py lapsrn:2 lapsrn:3 vdsr:4 [--max-minutes 20]
        [--json benchmarks/results/table2_cpu.json]

Urban100's 100 images are large (HR about 1024 x 768), and VDSR and MemNet run at HR
resolution, so a cell can cost hours. Each MODEL:SCALE cell is first estimated: the first
image is upscaled and timed (one thread), times the set's pixels over that image's. A cell
estimated over ``--max-minutes`` of the 2-core machine (the one-thread minutes / 2: two
cells run side by side) is refused with its estimate, which is recorded
(``urban100_estimate_minutes``), so the table can say which cells are left and why. Else the
whole set is scored (``score_sets``: Y, shaved, whole images, one thread) with the shipped
checkpoint, which must be that row's weights (``table2_cpu.registered``), and written into
the row's ``sets`` (the results file re-read just before the write, so runs side by side
keep each other's cells).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_jobs import score_sets  # noqa: E402
from table2_cpu import URBAN, registered  # noqa: E402

from amms_lib import data  # noqa: E402
from amms_lib.checkpoint import load_model  # noqa: E402
from amms_lib.inference import upscale  # noqa: E402
from amms_lib.runtime import atomic_write, repo_root  # noqa: E402


def estimate_minutes(model: str, scale: int, path: Path) -> float:
    """One-thread minutes for the whole set: the first image's time x pixel ratio."""
    import torch

    torch.set_num_threads(1)
    net, _ = load_model(path, model=model, scale=scale)
    names = data.list_images(URBAN)
    lr = data.load_pair(URBAN, names[0], scale).lr
    t = time.perf_counter()
    upscale(net, lr)
    first = time.perf_counter() - t
    hr_pixels = sum(int(np.prod(data.modcrop(data.load_hr(URBAN, n), scale).shape[:2]))
                    for n in names)  # each LR image's pixels x scale^2
    return first * hr_pixels / (lr.shape[0] * lr.shape[1] * scale**2) / 60


def update(path: Path, model: str, scale: int, **cells) -> None:
    """Write one row's new keys, and bicubic's Urban100 at that scale (its baseline)."""
    from amms_lib.benchmark import bicubic_upscaler, evaluate_set

    record = json.loads(path.read_text())  # re-read: another cell may have landed
    record["models"][model][f"x{scale}"].update(cells)
    bic = record["bicubic"][f"x{scale}"]
    if URBAN not in bic:
        bic[URBAN] = {k: v for k, v in evaluate_set(bicubic_upscaler(scale), URBAN, scale).items()
                    if k in ("psnr", "ssim")}
    atomic_write(path, lambda f: f.write(json.dumps(record, indent=1)), "w")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cells", nargs="+", help="MODEL:SCALE, e.g. lapsrn:2")
    ap.add_argument("--max-minutes", type=float, default=20.0,
                    help="refuse a cell estimated over this, in minutes of the 2-core machine")
    ap.add_argument("--json", type=Path,
                    default=repo_root() / "benchmarks" / "results" / "table2_cpu.json")
    args = ap.parse_args()
    for cell in args.cells:
        model, scale = cell.split(":")[0], int(cell.split(":")[1])
        row = json.loads(args.json.read_text())["models"].get(model, {}).get(f"x{scale}")
        ckpt = repo_root() / "checkpoints" / f"{model}_x{scale}.pt"
        if row is None or not registered(model, scale, row):
            print(f"{cell}: skipped: no finished row whose weights are {ckpt.name} "
                  "(run benchmarks/table2_cpu.py --register first)", flush=True)
            continue
        if "psnr" in row["sets"].get(URBAN, {}):
            print(f"{cell}: already scored ({row['sets'][URBAN]['psnr']:.2f} dB)", flush=True)
            continue
        est = estimate_minutes(model, scale, ckpt) / 2
        update(args.json, model, scale, urban100_estimate_minutes=round(est, 1))
        if est > args.max_minutes:
            print(f"{cell}: refused: estimated {est:.0f} minutes of 2 cores, over "
                  f"--max-minutes {args.max_minutes:g}", flush=True)
            continue
        t = time.perf_counter()
        sets, _, _ = score_sets(ckpt, scale, [URBAN], model=model)
        row_sets = {**row["sets"], URBAN: {k: v for k, v in sets[URBAN].items()
                                         if k != "seconds_per_image"}}
        update(args.json, model, scale, sets=row_sets,
               urban100_seconds_per_image_1_thread=sets[URBAN]["seconds_per_image"])
        print(f"{cell}: Urban100 {sets[URBAN]['psnr']:.2f} dB / {sets[URBAN]['ssim']:.4f} in "
              f"{(time.perf_counter() - t) / 60:.1f} min (estimated {2 * est:.1f} of one core)",
              flush=True)


if __name__ == "__main__":
    main()
