"""PSNR/SSIM of a method on the benchmark sets, under the protocol of ``metrics``.

    python -m amms_lib.benchmark --model bicubic --datasets Set5 Set14 BSD100 Urban100 \
        --scales 2 3 4 [--json FILE]

prints a table (set x scale, mean PSNR/SSIM on Y) and optionally writes
``{"results": [{"model", "dataset", "scale", "psnr", "ssim", "n_images",
"lr_source"}, ...]}``. A set without published LR at a scale gets LR made by
``amms_lib.resize`` (clamp borders, as the published files were made), and the
output says so. An incomplete set (``data.incomplete``: images or LR files missing)
would give a mean unlike the published one: it is refused unless ``--allow-partial``,
and then its rows say ``"partial"`` (what is missing) and the table marks them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np

from amms_lib import data
from amms_lib.errors import AmmsError
from amms_lib.metrics import evaluate
from amms_lib.models import METHODS, MODELS
from amms_lib.resize import imresize
from amms_lib.runtime import (
    ArgumentParser,
    ResultsFile,
    ResultsKind,
    cli,
    file_sha256,
    resolve_device,
)

Upscaler = Callable[[np.ndarray], np.ndarray]  # uint8 LR image -> uint8 SR image


def bicubic_upscaler(scale: int) -> Upscaler:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` on uint8: the published baseline."""
    return lambda lr: imresize(lr, scale)


def method_upscaler(model: str, scale: int, checkpoint: str | None = None,
                    device: str = "auto") -> Upscaler:
    """The method to evaluate, as a function from LR to SR image. A network's also takes
    ``tile=N``: LR tiles of that side, default overlap (attention then sees one tile)."""
    if model == "bicubic":
        if checkpoint:
            raise AmmsError("--checkpoint makes no sense with --model bicubic")
        return bicubic_upscaler(scale)
    if model not in MODELS:
        raise AmmsError(f"unknown model {model!r}; available: {', '.join(METHODS)}")
    from amms_lib.checkpoint import load_model, load_registered
    from amms_lib.inference import upscale

    if checkpoint:
        net, _ = load_model(checkpoint, model=model, scale=scale, device=resolve_device(device))
    else:  # the checkpoints/ folder, checked against its metadata
        net, _ = load_registered(model, scale, device=resolve_device(device))
    return lambda lr, tile=None: upscale(net, lr, tile=tile)


def evaluate_set(upscale: Upscaler, dataset: str, scale: int, per_image: bool = False,
                 allow_partial: bool = False) -> dict:
    """Mean PSNR/SSIM over one set at one scale, plus where the LR images came from;
    with ``per_image``, also ``"per_image": {name: [psnr, ssim]}`` (for paired tests).
    A set that is not the standard one (``data.incomplete``: missing, extra, renamed or
    edited images) is refused unless ``allow_partial``: its mean would pass for the set's."""
    if not allow_partial and (problems := data.incomplete(dataset, [scale])):
        raise AmmsError(f"{dataset} x{scale} is not the standard set: {'; '.join(problems)}; "
                        "its mean would not be comparable: re-fetch the set (python -m "
                        "amms_lib.data fetch --dest DIR)")
    psnrs, ssims, sources, names = [], [], set(), []
    for pair in data.iter_pairs(dataset, scale, standard=not allow_partial):
        sr = upscale(pair.lr)
        if sr.shape != pair.hr.shape:
            raise AmmsError(
                f"{dataset}/{pair.name}: output {sr.shape} != HR {pair.hr.shape} at x{scale}"
            )
        try:
            p, s = evaluate(sr, pair.hr, scale)
        except AmmsError as exc:  # e.g. an image too small for SSIM: name it
            raise AmmsError(f"{dataset}/{pair.name}: {exc}") from None
        psnrs.append(p)
        ssims.append(s)
        names.append(pair.name)
        sources.add(pair.lr_source)
    if not psnrs:
        raise AmmsError(f"set {dataset!r} has no images")
    result = {
        "dataset": dataset, "scale": scale, "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)), "n_images": len(psnrs),
        "lr_source": "+".join(sorted(sources)),
    }
    if per_image:
        result["per_image"] = {n: [float(p), float(s)] for n, p, s in zip(names, psnrs, ssims)}
    return result


def run(model: str, datasets: list[str], scales: list[int],
        checkpoint: str | None = None, device: str = "auto", log=print,
        tile: int | None = None, tile_sets: tuple = (),
        allow_partial: bool = False, results: list | None = None) -> list[dict]:
    """Evaluate ``model`` on every (dataset, scale); one result dict each, appended to
    ``results`` as each is done (so a caller keeps them if a later one fails). Everything
    that can be checked is checked before any work: scales, sets (missing, empty or not
    the standard set, refused unless ``allow_partial``), tiling, every scale's method."""
    results = [] if results is None else results
    for s in scales:
        data.check_scale(s)
    for d in datasets:
        if not data.list_images(d):
            raise AmmsError(f"set {d!r} has no images")
    unknown = set(tile_sets) - {data.canonical(d) for d in datasets}
    if unknown:
        raise AmmsError(f"--tile-sets {', '.join(sorted(unknown))}: not among the sets "
                        f"benchmarked ({', '.join(datasets)})")
    partial = {}  # (dataset, scale) -> what is missing
    for d in datasets:  # fail before any work if a set is missing or incomplete
        for s in scales:
            if problems := data.incomplete(d, [s]):
                partial[data.canonical(d), s] = "; ".join(problems)
    if partial and not allow_partial:
        (d, s), what = next(iter(partial.items()))
        more = f" (and {len(partial) - 1} more set/scale)" if len(partial) > 1 else ""
        raise AmmsError(f"{d} x{s} is not the standard set: {what}{more}; its mean would not be "
                        "comparable: re-fetch the set (python -m amms_lib.data fetch "
                        "--dest DIR), or pass --allow-partial to score what is there")
    if tile is not None and (model == "bicubic" or tile < 1):
        raise AmmsError(f"--tile needs a network and a size of at least 1, got {model} "
                        f"and {tile}")
    if tile_sets and tile is None:
        raise AmmsError("--tile-sets needs --tile N")
    upscalers = {s: method_upscaler(model, s, checkpoint, device) for s in scales}
    for s in scales:
        upscale = upscalers[s]
        for d in datasets:
            t0 = time.perf_counter()
            use_tile = tile and (not tile_sets or data.canonical(d) in tile_sets)
            fn = (lambda lr: upscale(lr, tile=tile)) if use_tile else upscale
            res = {"model": model, **evaluate_set(fn, data.canonical(d), s,
                                                  allow_partial=True)}  # checked above
            if use_tile:
                res["tile"] = tile
            res["seconds"] = round(time.perf_counter() - t0, 2)
            if (res["dataset"], s) in partial:
                res["partial"] = partial[res["dataset"], s]
                log(f"note: {res['dataset']} x{s} is partial ({res['partial']}): "
                    f"a mean over {res['n_images']} images, not the published set")
            results.append(res)
            if res["lr_source"] != "published":
                log(f"note: {res['dataset']} x{s} has no published LR; "
                    "made it with amms_lib.resize (MATLAB bicubic, clamp borders)")
    return results


def format_table(results: list[dict]) -> str:
    """Rows: datasets; columns: scales; cells: PSNR/SSIM."""
    scales = sorted({r["scale"] for r in results})
    sets = list(dict.fromkeys(r["dataset"] for r in results))
    cell = {(r["dataset"], r["scale"]): r for r in results}
    model = ", ".join(dict.fromkeys(r["model"] for r in results))
    lines = [f"{model:<12}" + "".join(f"{'x' + str(s):>17}" for s in scales)]
    for d in sets:
        row = f"{d:<12}"
        for s in scales:
            r = cell.get((d, s))
            row += f"{r['psnr']:>10.2f}/{r['ssim']:.4f}" if r else f"{'-':>17}"
            row += "*" if r and "partial" in r else ""
            row += "t" if r and "tile" in r else ""
        lines.append(row)
    if any("partial" in r for r in results):
        lines.append("* partial set: not comparable with published numbers")
    if tiles := sorted({r["tile"] for r in results if "tile" in r}):
        lines.append(f"t scored in tiles of {', '.join(map(str, tiles))} LR px (attention "
                     "within a tile, not the whole image)")
    return "\n".join(lines)


# the only file --overwrite replaces: a benchmark's own results (not a checkpoint, a
# registry, or a curated record that holds results beside keys of its own)
KIND = ResultsKind("benchmark", frozenset({"results", "stopped", "checkpoint", "sha256"}),
                   frozenset({"dataset", "scale", "psnr"}), rows="results")


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m amms_lib.benchmark", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bicubic", help=f"one of {', '.join(METHODS)}")
    ap.add_argument("--checkpoint", help="trained weights for a network model")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--datasets", nargs="+", help="default: Set5 Set14 BSD100 Urban100")
    ap.add_argument("--scales", nargs="+", type=int, default=list(data.SCALES))
    ap.add_argument("--json", help="also write the results to this JSON file (a new one)")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json replace an existing file")
    ap.add_argument("--allow-partial", action="store_true",
                    help="score a set with missing images or LR files (rows marked *)")
    ap.add_argument("--tile", type=int,
                    help="networks: LR tiles of this side (default overlap)")
    ap.add_argument("--tile-sets", nargs="+", default=[],
                    help="tile only these sets (default: every set when --tile is given)")
    args = ap.parse_args(argv)
    args.scales = list(dict.fromkeys(args.scales))  # a repeat would be a duplicate row
    if args.datasets:  # the first of each set (B100 and BSD100 are one set)
        first: dict[str, str] = {}
        for d in args.datasets:
            first.setdefault(data.canonical(d), d)
        args.datasets = list(first.values())
    results: list[dict] = []

    def go() -> int:
        out = None if args.json is None else ResultsFile(args.json, KIND, args.overwrite)
        loaded = args.checkpoint and file_sha256(args.checkpoint)  # what is loaded now
        datasets = args.datasets
        if datasets is None:
            if data.data_root() is None:
                print(f"note: no data folder ({data.ENV_VAR} unset, data/ missing); "
                      f"using the built-in '{data.BUILTIN}' images. Their numbers are "
                      "not comparable with published tables.")
                datasets = [data.BUILTIN]
            else:
                datasets = list(data.STANDARD_SETS)
        tile_sets = tuple(data.canonical(d) for d in args.tile_sets)
        try:
            run(args.model, datasets, args.scales, args.checkpoint, args.device,
                tile=args.tile, tile_sets=tile_sets, allow_partial=args.allow_partial,
                results=results)
        except (AmmsError, KeyboardInterrupt) as exc:  # the finished rows shown and kept
            if results:
                print(format_table(results))
                if out:  # beside the file, never over a complete earlier one
                    print(out.keep_partial({"results": results}, str(exc) or "interrupted"))
            raise
        print(format_table(results))
        if loaded and file_sha256(args.checkpoint) != loaded:
            raise AmmsError(f"{args.checkpoint} changed while it was scored (a run still "
                            "writing it?): the rows above may be either file's; score a copy")
        if out:
            weights = {"checkpoint": str(Path(args.checkpoint).resolve()),
                       "sha256": loaded} if args.checkpoint else {}
            out.write({"results": results, **weights}, indent=2)
            print(out.said())
            left = sorted(Path(args.json).parent.glob(Path(args.json).name + ".partial*"))
            if left:  # kept: they may hold rows this run did not compute
                print(f"note: {', '.join(map(str, left))} from interrupted runs kept beside it")
        return 0

    return cli(go, interrupted="benchmark interrupted: the rows above are the finished ones")


if __name__ == "__main__":
    raise SystemExit(main())
