"""Time and peak memory of upscaling Urban100 images at x2 with AMMSNet on this machine.

    python benchmarks/upscale_memory.py [--images 1] [--modes full region tiled naive]
        [--crop N] [--tile 128] [--overlap 16] [--naive-cap 8] [--checkpoint PATH]
    python benchmarks/upscale_memory.py --all-tiled [--images N] [--tile 128]

The network is the default AMMSNet (64 channels, 4 AMMS, M = 2) with random weights
(time and memory do not depend on trained weights) unless ``--checkpoint`` is given.
Rows, each measured in a fresh subprocess (peak resident memory during the forward
pass minus the memory just before it, ``amms_lib.memory.peak_memory``):

- ``full``: whole-image non-local attention through the fused, O(N)-memory kernel;
- ``region``: SAN's region non-local (2 x 2 cells), also fused;
- ``tiled``: ``--tile`` LR tiles with ``--overlap`` context, full attention per tile;
- ``naive``: the explicit N x N matrix, on the largest centre crop whose estimate
  (``amms_lib.inference.estimate_memory``) stays under ``--naive-cap`` GB.

Whole-image attention at ~180,000 positions is ~4 TFLOP per block, 8 blocks: many
minutes per image on 2 cores; try ``--crop 128`` first. ``--all-tiled`` runs the set
(or its first ``--images``) through the command-line tool's code path
(``amms_lib.upscale.main`` with ``--tile``) and prints total time and peak memory.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from amms_lib import data
from amms_lib.checkpoint import load_model, save_checkpoint
from amms_lib.errors import AmmsError
from amms_lib.images import write_image
from amms_lib.inference import estimate_memory, upscale
from amms_lib.memory import fresh_process, peak_memory
from amms_lib.models import build_model
from amms_lib.non_local import NonLocalBlock
from amms_lib.runtime import ArgumentParser, cli, require_at_least

MODES = ("full", "region", "tiled", "naive")
SIDES = range(32, 1025, 16)  # naive: square crops tried, smallest first
MB, GB = 1e6, 1e9


def make_net(nl_mode: str, checkpoint: str | None = None) -> torch.nn.Module:
    """Default AMMSNet x2 (random, non-local W not zero) or a checkpoint's network."""
    if checkpoint:
        net, _ = load_model(checkpoint, scale=2)
    else:
        torch.manual_seed(0)
        net = build_model("amms", 2).eval()
    for m in net.modules():
        if isinstance(m, NonLocalBlock):
            m.mode = nl_mode
            if not checkpoint:
                m.out.reset_parameters()  # a trained block is not the identity
    return net


def lr_image(name: str, crop: int | None = None):
    """Urban100 LR at x2 (generated from HR, as the benchmark does), centre-cropped."""
    lr = data.load_pair("Urban100", name, 2).lr  # (H, W, 3) uint8
    if crop:
        h, w = lr.shape[:2]
        top, left = max(h - crop, 0) // 2, max(w - crop, 0) // 2
        lr = lr[top:top + crop, left:left + crop]
    return lr


def naive_side(net: torch.nn.Module, h: int, w: int, cap: float) -> int | None:
    """Largest square crop side whose naive-attention estimate fits ``cap`` bytes."""
    fits = [s for s in SIDES if s <= min(h, w) and estimate_memory(net, s, s) <= cap]
    return fits[-1] if fits else None


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process: a network forward or the CLI."""
    if spec["mode"] == "cli":
        from amms_lib.upscale import main
        argv = [spec["folder"], "--scale", "2", "--checkpoint", spec["checkpoint"],
                "--tile", str(spec["tile"]), "--overlap", str(spec["overlap"]),
                "-o", spec["out"]]
        status = []
        seconds, peak = peak_memory(lambda: status.append(main(argv)))
        return {**spec, "seconds": seconds, "peak_bytes": peak, "exit": status[0]}
    nl_mode = "full" if spec["mode"] == "tiled" else spec["mode"]
    net = make_net(nl_mode, spec.get("checkpoint"))
    lr = lr_image(spec["image"], spec.get("crop"))
    tile = spec["tile"] if spec["mode"] == "tiled" else None
    upscale(net, lr[:16, :16])  # one-off allocations: threads, kernels
    seconds, peak = peak_memory(lambda: upscale(net, lr, tile=tile,
                                                overlap=spec["overlap"]))
    h, w = lr.shape[:2]
    return {**spec, "h": h, "w": w, "seconds": seconds, "peak_bytes": peak,
            "estimate_bytes": estimate_memory(net, h, w, tile, spec["overlap"])}


def measure(spec: dict) -> dict:
    """``worker(spec)`` in a fresh Python process; the tool's progress bar is shown."""
    cli = spec["mode"] == "cli"
    quiet = {} if cli else {"TQDM_DISABLE": "1"}
    rows = fresh_process([Path(__file__).resolve(), "--worker", json.dumps(spec)],
                         show_stderr=cli, **quiet)
    return {**spec, "error": rows} if isinstance(rows, str) else rows[-1]


def row(r: dict) -> str:
    if "error" in r:
        return f"{r['mode']:>7}  {r.get('image', ''):>8}  failed: {r['error']}"
    size = f"{r['w']}x{r['h']}"
    label = r["mode"] + (f" {r['tile']}" if r["mode"] == "tiled" else "")
    return (f"{label:>10} {r['image']:>8} {size:>9} {r['h'] * r['w']:>8,} "
            f"{r['seconds']:>9.1f} {r['peak_bytes'] / MB:>9.0f} "
            f"{r['estimate_bytes'] / MB:>9.0f}")


def table(args) -> None:
    names = data.list_images("Urban100")[: args.images or 1]
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; "
          f"AMMSNet x2 {'from ' + args.checkpoint if args.checkpoint else '(random)'}"
          f"{f', centre crop {args.crop} (or the whole image, if smaller)' if args.crop else ''}")
    print(f"{'config':>10} {'image':>8} {'LR size':>9} {'N':>8} {'seconds':>9} "
          f"{'peak MB':>9} {'est. MB':>9}")
    base = dict(tile=args.tile, overlap=args.overlap, checkpoint=args.checkpoint)
    probe = make_net("naive", args.checkpoint)
    for name in names:
        for mode in args.modes:
            spec = {**base, "mode": mode, "image": name, "crop": args.crop}
            if mode == "naive":
                h, w = lr_image(name, args.crop).shape[:2]
                full = 2 * (h * w) ** 2 * 4
                spec["crop"] = naive_side(probe, h, w, args.naive_cap * GB)
                print(f"{'':>10} naive on the whole {w}x{h}: two N x N float32 "
                      f"matrices = {full / GB:,.0f} GB; largest crop under "
                      f"{args.naive_cap:g} GB: {spec['crop']}", flush=True)
                if spec["crop"] is None:
                    continue
            print(row(measure(spec)), flush=True)


def all_tiled(args) -> None:
    """The whole set (or ``--images``) through ``python -m amms_lib.upscale --tile``."""
    names = data.list_images("Urban100")
    names = names[: args.images] if args.images else names
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lr"
        for name in names:  # LR made first: not part of the timing
            write_image(folder / f"{name}.png", lr_image(name))
        ckpt = args.checkpoint or str(save_checkpoint(
            Path(tmp) / "random.pt", make_net("full"), name="amms", scale=2))
        r = measure({"mode": "cli", "folder": str(folder), "checkpoint": ckpt,
                     "tile": args.tile, "overlap": args.overlap,
                     "out": str(Path(tmp) / "sr")})
    if "error" in r:
        print(f"failed: {r['error']}")
        return
    n = len(names)
    print(f"Urban100 x2, {n} images, --tile {args.tile} --overlap {args.overlap}: "
          f"{r['seconds']:.0f} s in all, {r['seconds'] / n:.1f} s per image, peak "
          f"{r['peak_bytes'] / MB:.0f} MB (torch {torch.get_num_threads()} threads); "
          f"the tool exited {r['exit']}")


def main() -> None:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, help="first N Urban100 images (table: 1)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--crop", type=int, help="centre-crop each LR image to N x N")
    ap.add_argument("--tile", type=int, default=128, help="LR tile for tiled rows")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--naive-cap", type=float, default=8.0, metavar="GB")
    ap.add_argument("--checkpoint", help="an x2 AMMS checkpoint instead of random")
    ap.add_argument("--all-tiled", action="store_true",
                    help="the whole set through the upscale tool with --tile")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    require_at_least(args, images=1, crop=1, tile=1, overlap=0, naive_cap=0)
    if args.overlap >= args.tile:  # a tile's context wider than the tile itself
        raise AmmsError(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
    elif args.all_tiled:
        all_tiled(args)
    else:
        table(args)


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C and an AmmsError: one line
