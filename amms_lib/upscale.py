"""Upscale your own images: files or folders in, ``<stem>_x<scale>.png`` files out.

    python -m amms_lib.upscale INPUT... --scale {2,3,4}
        [--checkpoint PATH | --model bicubic] [--tile auto|whole|N] [--overlap N] [--ensemble]
        [--bf16] [--device auto] [--max-memory GB] [--max-seconds S]
        [--format png|same|jpg|bmp|tif] [--overwrite] -o OUT

- Inputs: image files (PNG, JPEG, BMP, TIFF; a GIF or WebP named as a file) and
  folders (their PNG, JPEG, BMP and TIFF files, not recursive; a ``note:`` line names the
  other files skipped, and outputs of ours in a folder that is also OUT are not inputs).
  Grey stays grey; an alpha channel is upscaled with MATLAB bicubic
  (``amms_lib.resize``) beside the network's colour and kept. 16-bit and float
  images are refused with a message (convert them to 8-bit first).
- Outputs go to the folder OUT (created, and checked writable before any work),
  written atomically (temp file + rename); temp files a killed run left there are
  removed. An output that would replace an input, another output of the same run, or
  (without ``--overwrite``) a file already there, is refused. ``--format same`` keeps
  each input's format. Only the first frame of an animated file is used
  (a ``warning:`` line says so).
- Memory: each image's peak is estimated first (``amms_lib.inference``); one over
  ``--max-memory`` (default: 80% of available RAM, 90% of free GPU memory) fails
  with the ``--tile`` that fits (bicubic runs on the CPU and cannot be tiled).
- Time: each image's seconds are estimated first (``amms_lib.speed``: FLOPs over this
  machine's measured throughput, timed once per network and cached); an estimate over
  a few seconds is printed, and the work shows a bar in estimated seconds. One over
  ``--max-seconds`` (default 300) fails with the ``--tile`` that fits. A refusal made with a
  cached measurement measures again first (the cache may have been timed on a busy machine).
- Tiles: ``--tile auto`` (the default) runs the whole image or the tile size estimated
  fastest among those that fit both budgets, and says which: no tile size lost a resolved
  amount of PSNR against the whole image (``benchmarks/upscale_tiles.py``, docs/upscaling.md)
  while 64-px tiles ran 6.6x faster on Urban100 x2. ``--tile whole`` runs whole-image
  attention (the paper's protocol, as ``amms_lib.benchmark`` scores); ``--tile N`` a given
  size (at least ``MIN_TILE``: smaller tiles are all overhead).
- ``--bf16``: bf16 autocast for the convolutions, channels-last; the non-local attention
  and the second-order statistics stay float32 (``benchmarks/inference_options.py``
  measures its speed and how far it moves PSNR). The time estimate stays float32's.
- Exit status: 0 all written; 1 some inputs failed (one ``failed: FILE: why`` line
  each, the others still processed); 2 a setup error (``error: why``), e.g. a
  checkpoint for another scale, NaN weights, an output folder that cannot be made
  or written; 130 interrupted (Ctrl-C), after a summary of what was written.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from amms_lib.data import IMAGE_SUFFIXES, SCALES
from amms_lib.errors import AmmsError
from amms_lib.images import read_image, write_image
from amms_lib.inference import (
    GB,
    OVERLAP,
    available_memory,
    check_bicubic_memory,
    check_size,
    plan,
    upscale,
)
from amms_lib.resize import imresize
from amms_lib.runtime import (
    ArgumentParser,
    FolderLock,
    cli,
    cpu_bf16,
    probe_writable,
    progress_off,
    resolve_device,
    stale_temp_files,
)
from amms_lib.speed import SHOW_ABOVE

FORMATS = ("png", "same", "jpg", "bmp", "tif")
NO_ALPHA = (".jpg", ".jpeg")  # fail before the work (BMP fails at writing LA)
MAX_SECONDS = 300.0  # default --max-seconds: longer than this, a user should choose
MIN_TILE = 16  # LR pixels: below it a tile is mostly overlap and per-call overhead
OUTPUT_NAME = re.compile(r".+_x[234]\.(png|jpe?g|bmp|tiff?)")  # what out_path makes


def collect(inputs: list[str], out_dir: Path | None = None
            ) -> tuple[list[Path], list[tuple[str, str]], list[str]]:
    """Image files named or inside the named folders; (path, why) for bad ones; one note
    per folder that held other files (skipped, named). In a folder that is also OUT, the
    files named like our outputs are skipped (upscaling them again made ``x_x2_x2.png``)."""
    files, bad, notes = [], [], []
    out = out_dir.resolve() if out_dir is not None else None
    for name in inputs:
        p = Path(name)
        if p.is_dir():
            ours = p.resolve() == out
            found, other, outputs = [], [], []
            for q in sorted(p.iterdir()):
                if q.is_symlink() and not q.exists():  # a failed item, as when named
                    bad.append((str(q), f"a broken link (its target {q.readlink()} does "
                                        "not exist)"))
                    continue
                if not q.is_file():
                    continue
                if ours and OUTPUT_NAME.fullmatch(q.name):
                    outputs.append(q)
                    continue
                (found if q.suffix.lower() in IMAGE_SUFFIXES else other).append(q)
            files += found
            if outputs:
                shown = ", ".join(q.name for q in outputs[:3]) + (" ..." * (len(outputs) > 3))
                notes.append(f"{name}: skipped {len(outputs)} file(s) named like outputs of "
                             f"this tool ({shown}), as the folder is also -o; name one to "
                             "upscale it")
            if not found and not outputs:
                bad.append((name, "folder holds no PNG, JPEG, BMP or TIFF images"))
            if other:
                shown = ", ".join(q.name for q in other[:3]) + (" ..." if len(other) > 3 else "")
                notes.append(f"{name}: skipped {len(other)} file(s) not PNG, JPEG, BMP or TIFF "
                             f"({shown}); name one to upscale it (a GIF: its first frame)")
        elif p.is_file():
            files.append(p)
        elif p.exists():
            bad.append((name, "not a regular file or folder (a pipe or device?); save the "
                              "image to a file first"))
        else:
            bad.append((name, "no such file or folder"))
    return list(dict.fromkeys(files)), bad, notes  # drop duplicates, keep the order


def out_path(src: Path, out_dir: Path, scale: int, fmt: str) -> Path:
    suffix = src.suffix.lower() if fmt == "same" else f".{fmt}"
    return out_dir / f"{src.stem}_x{scale}{suffix}"


def file_upscaler(args, device: torch.device):
    """``fn(img, name)``: uint8 (H, W[, 3]) -> uint8 SR image; setup errors raise
    AmmsError, and so does an image over a budget (memory, time)."""
    if args.checkpoint is None:  # NumPy in, so imresize runs on the CPU
        ignored = [f for f, on in (("--tile", args.tile is not None),
                                   ("--ensemble", args.ensemble), ("--bf16", args.bf16)) if on]
        if ignored:
            print(f"warning: {', '.join(ignored)} ignored: bicubic has no network",
                  file=sys.stderr)
        budget = available_memory("cpu") if args.max_memory is None else args.max_memory * GB

        def bicubic(img, name: str):
            check_bicubic_memory(*img.shape[:2], img.shape[2] if img.ndim == 3 else 1,
                                 args.scale, budget)
            return imresize(img, args.scale)
        return bicubic
    from amms_lib.checkpoint import load_model

    net, _ = load_model(args.checkpoint, scale=args.scale, device=device)
    if args.bf16 and device.type == "cpu" and not cpu_bf16():
        print("warning: --bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where it "
              "is emulated and runs slower than float32; upscaling in float32",
              file=sys.stderr)
        args.bf16 = False
    budget = (available_memory(device) if args.max_memory is None
              else args.max_memory * GB)
    quiet = progress_off()
    asked = {None: "auto", "whole": None}.get(args.tile, args.tile)  # plan's tile

    def network(img, name: str):
        h, w = img.shape[:2]
        tile, seconds = plan(net, h, w, asked, args.overlap, args.ensemble, budget,
                             args.max_seconds)
        auto = asked == "auto" and tile is not None
        if seconds > SHOW_ABOVE or auto:
            how = (f"tiled automatically: --tile {tile}" if auto
                   else f"--tile {tile}" if tile else "whole image")
            tqdm.write(f"{name}: {w}x{h} -> {args.scale * w}x{args.scale * h}, about "
                       f"{seconds:.0f} s ({how})", file=sys.stderr)
        return upscale(net, img, tile=tile, overlap=args.overlap, ensemble=args.ensemble,
                       progress=not quiet, bf16=args.bf16)
    network.tiles = True
    return network


def upscale_file(src: Path, dst: Path, fn, scale: int) -> None:
    """Read, upscale (colour by ``fn``, alpha by bicubic), write atomically."""
    img = read_image(src, keep_alpha=True)  # (H, W), (H, W, 2) LA, (H, W, 3) or RGBA
    check_size(*img.shape[:2])
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):
        img, alpha = img[..., :-1], img[..., -1]
        img = img[..., 0] if img.shape[2] == 1 else img  # (H, W, 1) -> (H, W)
        if dst.suffix in NO_ALPHA:
            raise AmmsError(f"{dst.suffix} cannot store the alpha channel; "
                            "use --format png or tif")
    sr = fn(img, src.name)
    if alpha is not None:
        a = imresize(alpha, scale)  # (H, W) -> (s*H, s*W), uint8 rounded and clipped
        sr = np.dstack([sr, a])  # (sH, sW[, 3]) + (sH, sW) -> (sH, sW, 2 or 4)
    try:
        write_image(dst, sr)
    except (OSError, ValueError, KeyError) as exc:
        raise AmmsError(f"cannot write {dst}: {exc}") from None


def report(name: str, why: str, kind: str = "failed") -> None:
    """One line per failure or warning, printed as it happens (above the progress bar)."""
    why = why.removeprefix(f"{name}: ")  # read_image already names the file
    tqdm.write(f"{kind}: {name}: {why}", file=sys.stderr)


def prepare_output(out_dir: Path) -> FolderLock:
    """Make OUT, prove it writable and lock it before any work (one upscaler per
    folder), and remove the temp files of our outputs whose writer was killed."""
    if out_dir.exists() and not out_dir.is_dir():
        raise AmmsError(f"-o {out_dir} is a file, not a folder; -o names the folder the "
                        "outputs go to")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmmsError(f"cannot create the output folder {out_dir}: "
                        f"{exc.strerror or exc}") from None
    try:
        probe_writable(out_dir)
    except OSError as exc:
        raise AmmsError(f"cannot write to the output folder {out_dir}: "
                        f"{exc.strerror or exc}; fix its permissions or choose another -o") \
            from None
    lock = FolderLock(out_dir, "upscale")
    stale = stale_temp_files(out_dir, OUTPUT_NAME.fullmatch)
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        print(f"removed {len(stale)} temporary file(s) an interrupted run left in {out_dir}",
              file=sys.stderr)
    return lock


def run(args) -> int:
    device = resolve_device(args.device)
    fn = file_upscaler(args, device)
    out_dir = Path(args.output)
    with prepare_output(out_dir):
        return _run_locked(args, fn, out_dir)


def _run_locked(args, fn, out_dir: Path) -> int:
    files, bad, notes = collect(args.inputs, out_dir)
    for note in notes:
        tqdm.write(f"note: {note}", file=sys.stderr)
    for name, why in bad:
        report(name, why)
    inputs = {p.resolve() for p in files}
    written: dict[Path, Path] = {}  # output -> its input
    quiet = progress_off()
    n_failed = len(bad)
    try:
        for src in tqdm(files, desc=f"x{args.scale}", unit="img", disable=quiet or None):
            dst = out_path(src, out_dir, args.scale, args.format)
            n_failed += not process(src, dst, fn, args.scale, inputs, written,
                                    args.overwrite)
    except KeyboardInterrupt:  # the temp file of the image in hand is already removed
        left = len(bad) + len(files) - len(written) - n_failed
        print(f"interrupted: {len(written)} written to {out_dir}, {n_failed} failed, "
              f"{left} not done", file=sys.stderr)
        return 130
    print(f"{len(written)} written to {out_dir}, {n_failed} failed", file=sys.stderr)
    return 1 if n_failed else 0


def not_an_output(src: Path, dst: Path, scale: int) -> str | None:
    """Why ``dst`` cannot be an earlier xscale output of ``src`` (another size, not an
    image), or None: ``--overwrite`` replaces earlier outputs, never a user's own file
    that happens to have the output's name."""
    from PIL import Image

    try:
        with Image.open(src) as a, Image.open(dst) as b:
            want, got = (a.width * scale, a.height * scale), b.size
            turned = a.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF: written upright
    except Exception:  # noqa: BLE001 - any file PIL cannot read is not our output
        return "not an image this tool reads"
    if got == (want[::-1] if turned else want):
        return None
    return f"{got[0]}x{got[1]}, not the {want[0]}x{want[1]} of x{scale}"


def process(src: Path, dst: Path, fn, scale: int, inputs: set, written: dict,
            overwrite: bool = False) -> bool:
    """One input: written (True, recorded in ``written``) or one ``failed:`` line; warnings
    (e.g. only an animation's first frame) become one ``warning:`` line each."""
    with warnings.catch_warnings():  # restores the filters and showwarning
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *_, **__: report(
            str(src), (str(msg).strip() or type(msg).__name__).splitlines()[0], "warning")
        try:
            if dst.resolve() in inputs:
                raise AmmsError(f"output {dst} would overwrite an input; "
                                "choose another -o")
            if dst.resolve() in written:
                raise AmmsError(f"output {dst} would overwrite the output of "
                                f"{written[dst.resolve()]}")
            if dst.is_symlink() and not dst.exists():  # a user's link, not our output
                raise AmmsError(f"{dst} is a broken link (to {dst.readlink()}): not an "
                                "earlier output of this upscale; move it or choose another -o")
            if dst.exists() and not overwrite:
                raise AmmsError(f"{dst} already exists (an earlier result?); pass "
                                "--overwrite to replace it, or choose another -o")
            if dst.exists() and (why := not_an_output(src, dst, scale)):
                raise AmmsError(f"{dst} is {why}: not an earlier output of this upscale, so "
                                "--overwrite leaves it; move it or choose another -o")
            upscale_file(src, dst, fn, scale)
            written[dst.resolve()] = src
            return True
        except AmmsError as exc:
            report(str(src), str(exc))
        except (RuntimeError, MemoryError) as exc:  # out of memory, device errors
            msg = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            hint = "try --tile 64" if getattr(fn, "tiles", False) else "try a smaller image"
            report(str(src), f"{msg[:200]}; {hint}")
        except Exception as exc:  # a bug or an unforeseen file: say so, go on
            msg = (str(exc).strip() or "no message").splitlines()[0]
            report(str(src), f"unexpected {type(exc).__name__}: {msg[:200]}; "
                             "please report it")
    return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = ArgumentParser(
        prog="python -m amms_lib.upscale", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    ap.add_argument("--scale", type=int, required=True, choices=SCALES)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--checkpoint", metavar="PATH", help="trained weights (any model)")
    how.add_argument("--model", choices=("bicubic",), help="no network: MATLAB bicubic")
    ap.add_argument("--tile", type=tile_arg, metavar="auto|whole|N",
                    help="auto (default): the whole image or the fastest tile size that fits "
                         "the budgets; whole: whole-image attention; N: LR tile side")
    ap.add_argument("--overlap", type=int, default=OVERLAP,
                    help=f"LR context pixels around each tile (default {OVERLAP})")
    ap.add_argument("--ensemble", action="store_true",
                    help="x8 self-ensemble (8x slower)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast for the convolutions (attention stays float32): "
                         "faster where the processor has bf16 (1.3x with --tile 64 on a Zen 4); "
                         "outputs move slightly (-0.007 dB on Set14)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--max-memory", type=float, metavar="GB",
                    help="refuse images estimated above it (default: free memory)")
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS, metavar="S",
                    help=f"refuse images estimated above it (default {MAX_SECONDS:g}; "
                         "inf: no limit)")
    ap.add_argument("--format", choices=FORMATS, default="png",
                    help="output format; 'same' keeps the input's")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace files already in OUT (else each is refused)")
    ap.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output folder")
    args = ap.parse_args(argv)
    if args.tile not in (None, "auto", "whole") and args.tile < MIN_TILE or args.overlap < 0:
        ap.error(f"--tile must be auto, whole or at least {MIN_TILE} (smaller tiles are "
                 "almost all overhead), and --overlap 0 or more")
    if not args.max_seconds > 0:  # nan and <= 0 are refused; inf means no time limit
        ap.error(f"--max-seconds must be a positive number of seconds (inf: no limit), got "
                 f"{args.max_seconds}")
    if args.max_memory is not None and not (math.isfinite(args.max_memory)
                                            and args.max_memory > 0):
        ap.error(f"--max-memory must be a positive number of GB, got {args.max_memory}")
    return args


def tile_arg(text: str) -> int | str:
    """``--tile``: a number of LR pixels, ``auto`` or ``whole``."""
    if text in ("auto", "whole"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, whole or a number, got {text!r}") \
            from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # before the first image, Ctrl-C writes nothing (the loop
    return cli(lambda: run(args), interrupted="interrupted: nothing written")  # says its own)


if __name__ == "__main__":
    sys.exit(main())
