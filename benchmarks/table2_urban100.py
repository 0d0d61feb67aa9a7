"""Urban100 cells of the equal-budget table and of the shipped AMMS, where affordable here.

    python benchmarks/table2_urban100.py lapsrn:2 lapsrn:3 vdsr:4 shipped:4 [--max-minutes 20]
        [--tile N] [--json benchmarks/results/table2_cpu.json]
        [--study-json benchmarks/results/config_study_cpu.json]

Urban100's 100 images are large (HR about 1024 x 768), and VDSR and MemNet run at HR
resolution, so a cell can cost hours. Each MODEL:SCALE cell is first estimated: the first
image is upscaled and timed (one thread), times the set's pixels over that image's. A cell
estimated over ``--max-minutes`` of the 2-core machine (the one-thread minutes / 2: two
cells run side by side) is refused with its estimate, which is recorded
(``urban100_estimate_minutes``), so the table can say which cells are left and why. Else the
whole set is scored (``score_sets``: Y, shaved, whole images, one thread) with the shipped
checkpoint, which must be that row's weights, and written into the row's ``sets`` (the
results file re-read just before the write, so runs side by side keep each other's cells).

A MODEL is a row of the equal-budget table (``table2_cpu.registered``: its weights are
``checkpoints/MODEL_xS.pt``), or ``shipped``: ``checkpoints/amms_xS.pt``, the size study's
winner, whose cell goes into that study's run in ``--study-json``. ``--tile N`` scores with
tiles of N LR pixels (``inference.upscale``; attention then sees only its tile): a different
computation from the whole image, recorded as ``tile`` (and ``overlap``, the default) in
the cell so that a table marks it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from amms_lib import data
from amms_lib.checkpoint import load_model
from amms_lib.equal_budget import URBAN, registered
from amms_lib.errors import AmmsError
from amms_lib.inference import OVERLAP, upscale
from amms_lib.models import MODELS
from amms_lib.runtime import ArgumentParser, FolderLock, atomic_write, cli, json_arg, repo_root
from amms_lib.studies import read_results, score_sets, shipped_by, stamp

SHIPPED = "shipped"  # the cell name of checkpoints/amms_xS.pt, the size study's winner
RESULTS = repo_root() / "benchmarks" / "results"


def estimate_minutes(model: str, scale: int, path: Path, tile: int | None = None) -> float:
    """One-thread minutes for the whole set: the first image's time x pixel ratio."""
    import torch

    torch.set_num_threads(1)
    net, _ = load_model(path, model=model, scale=scale)
    names = data.list_images(URBAN)
    lr = data.load_pair(URBAN, names[0], scale).lr
    t = time.perf_counter()
    upscale(net, lr, tile=tile)
    first = time.perf_counter() - t
    hr_pixels = sum(int(np.prod(data.modcrop(data.load_hr(URBAN, n), scale).shape[:2]))
                    for n in names)  # each LR image's pixels x scale^2
    return first * hr_pixels / (lr.shape[0] * lr.shape[1] * scale**2) / 60


def row_of(record: dict, model: str, scale: int) -> dict | None:
    """The record a cell's keys go into: a table row, or the size study's run for ``shipped``."""
    if model == SHIPPED:
        return record.get("runs", {}).get(f"{record.get('winner', {}).get('config')}_x{scale}")
    return record.get("models", {}).get(model, {}).get(f"x{scale}")


def shipped_is(row: dict, scale: int) -> bool:
    """Whether ``checkpoints/amms_xS.pt`` holds this size-study run's weights."""
    return shipped_by(f"amms_x{scale}.pt", "config_study.py", row["steps"])


_STAMPED: list = []  # this process has added its invocation


def update(path: Path, model: str, scale: int, **cells) -> None:
    """Write one row's new keys, and bicubic's Urban100 at that scale (its baseline); one
    process at a time (cells side by side had lost each other's keys between read and
    write)."""
    from amms_lib.benchmark import bicubic_upscaler, evaluate_set

    with FolderLock(path.parent, "results writer", wait=True):
        record = json.loads(path.read_text())  # re-read: another cell may have landed
        if not _STAMPED:  # this invocation, once
            record = stamp(record, threads=1)
            _STAMPED.append(True)
        row_of(record, model, scale).update(cells)
        bic = record["bicubic"][f"x{scale}"]
        if URBAN not in bic:
            bic[URBAN] = {k: v for k, v in evaluate_set(bicubic_upscaler(scale), URBAN,
                                                        scale).items() if k in ("psnr", "ssim")}
        atomic_write(path, lambda f: f.write(json.dumps(record, indent=1)), "w")


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cells", nargs="+", help=f"MODEL:SCALE, e.g. lapsrn:2 or {SHIPPED}:4")
    ap.add_argument("--max-minutes", type=float, default=20.0,
                    help="refuse a cell estimated over this, in minutes of the 2-core machine")
    ap.add_argument("--tile", type=int, default=None,
                    help="score with tiles of this many LR pixels (default: whole images)")
    ap.add_argument("--json", default=RESULTS / "table2_cpu.json")
    ap.add_argument("--study-json", default=RESULTS / "config_study_cpu.json")
    args = ap.parse_args()
    args.json, args.study_json = json_arg(args.json), json_arg(args.study_json)
    cells = []
    for cell in args.cells:  # all checked before any is scored
        model, _, scale = cell.partition(":")
        if scale not in {str(s) for s in data.SCALES} or model not in (*MODELS, SHIPPED):
            raise AmmsError(f"cell {cell!r}: write MODEL:SCALE with MODEL one of "
                            f"{', '.join((*MODELS, SHIPPED))} and SCALE one of "
                            f"{', '.join(map(str, data.SCALES))}, e.g. lapsrn:2")
        cells.append((cell, model, int(scale)))
    for cell, model, scale in cells:
        path = args.study_json if model == SHIPPED else args.json
        row = row_of(read_results(path, missing_ok=False), model, scale)
        net = "amms" if model == SHIPPED else model
        ckpt = repo_root() / "checkpoints" / f"{net}_x{scale}.pt"
        if row is None or not (shipped_is(row, scale) if model == SHIPPED
                               else registered(model, scale, row)):
            print(f"{cell}: skipped: no finished row of {path.name} whose weights are "
                  f"{ckpt.name} (register it first)", flush=True)
            continue
        if "psnr" in row["sets"].get(URBAN, {}):
            print(f"{cell}: already scored ({row['sets'][URBAN]['psnr']:.2f} dB)", flush=True)
            continue
        est = estimate_minutes(net, scale, ckpt, args.tile) / 2
        update(path, model, scale, urban100_estimate_minutes=round(est, 1))
        if est > args.max_minutes:
            print(f"{cell}: refused: estimated {est:.0f} minutes of 2 cores, over "
                  f"--max-minutes {args.max_minutes:g}", flush=True)
            continue
        t = time.perf_counter()
        sets, _, _ = score_sets(ckpt, scale, [URBAN], model=net, tile=args.tile)
        scored = {k: v for k, v in sets[URBAN].items() if k != "seconds_per_image"}
        if args.tile:
            scored |= {"tile": args.tile, "overlap": OVERLAP}
        update(path, model, scale, sets={**row["sets"], URBAN: scored},
               urban100_seconds_per_image_1_thread=sets[URBAN]["seconds_per_image"])
        print(f"{cell}: Urban100 {sets[URBAN]['psnr']:.2f} dB / {sets[URBAN]['ssim']:.4f} in "
              f"{(time.perf_counter() - t) / 60:.1f} min (estimated {2 * est:.1f} of one core)",
              flush=True)


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C and an AmmsError: one line
