"""Reconstructions to compare: every method's SR of one image, with scores and timings.

``reconstruct`` takes a benchmark image (LR and HR from the data folder); ``reconstruct_lr``
a user's own image, which is the LR input itself and has no HR, so no scores. Networks
come from registered checkpoints (``amms_lib.checkpoint``); one without a checkpoint is
listed under ``missing`` instead of failing. A user's image has budgets (its size is
anyone's): a method estimated over ``UPLOAD_SECONDS`` or the free memory, or one that runs
out of memory, is listed under ``refused`` with the reason. Drawing them is
``amms_lib.compare``'s job.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from amms_lib import data
from amms_lib.checkpoint import find_checkpoint, load_registered
from amms_lib.errors import AmmsError
from amms_lib.inference import upscale
from amms_lib.metrics import evaluate
from amms_lib.models import METHODS
from amms_lib.resize import imresize

UPLOADS = "your image"  # the set name of a user's own images (no HR)
UPLOAD_SECONDS = 120.0  # a method estimated slower on a user's image is refused


def parse_methods(methods) -> list[str]:
    """``"bicubic, vdsr"`` or a sequence -> a checked list without repeats, in order."""
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    names = list(dict.fromkeys(m.strip().lower() for m in names if m.strip()))
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise AmmsError(f"unknown method(s) {', '.join(bad)}; "
                        f"choose from {', '.join(METHODS)}")
    return names


# what quick mode leaves out of a notebook's "auto" methods, and why: MemNet runs 80
# convolutions at HR resolution, so Set5 at x2, x3 and x4 took 194 s on 2 AVX2 cores where VDSR
# took 33 s and AMMS 28 s (python -m amms_lib.benchmark --datasets Set5 --scales 2 3 4)
QUICK_SKIPS = {"memnet": "80 convolutions at HR resolution: about 6x VDSR's time per image"}


def notebook_methods(methods, quick: bool) -> tuple[list[str], dict[str, str]]:
    """A notebook's ``methods`` parameter -> (methods to run, {left out: why}). ``"auto"``:
    every method, less ``QUICK_SKIPS`` in quick mode; anything else runs as named, checked."""
    if methods != "auto":
        return parse_methods(methods), {}
    skips = QUICK_SKIPS if quick else {}
    return [m for m in METHODS if m not in skips], dict(skips)


def reconstruct(set_name: str, image: str, scale: int, methods=METHODS, device="cpu",
                folder=None, nets: dict | None = None) -> dict:
    """LR, HR and every method's SR of one image, with (PSNR, SSIM) and timings.

    Returns ``{set, image, scale, lr_source, lr, hr, sr: {method: uint8},
    scores: {method: (psnr, ssim)}, seconds: {method: s}, missing: [method],
    refused: {method: why}}``;
    ``missing`` holds the networks with no registered checkpoint in ``folder``
    (default ``checkpoints/``). ``nets`` caches loaded networks across calls.
    """
    pair = data.load_pair(set_name, image, scale)
    rec = dict(set=set_name, image=pair.name, scale=scale, lr_source=pair.lr_source,
               lr=pair.lr, hr=pair.hr, sr={}, scores={}, seconds={}, missing=[], refused={})
    return _run_methods(rec, methods, device, folder, nets)


def reconstruct_lr(lr_img: np.ndarray, name: str, scale: int, methods=METHODS,
                   device="cpu", folder=None, nets: dict | None = None, say=None,
                   max_seconds: float = UPLOAD_SECONDS) -> dict:
    """``reconstruct`` for a user's own image, the LR input itself: no HR, so ``hr`` is
    None and ``scores`` empty. A network runs tiled when the memory estimate asks for it
    (``inference.plan``, tile "auto"); ``say(text)`` hears each method's estimated
    seconds before it runs (the status line of the explorer). A method over the budgets
    (``max_seconds``, free memory) is refused, not run: ``refused[method]`` says why."""
    if not (isinstance(lr_img, np.ndarray) and lr_img.dtype == np.uint8
            and (lr_img.ndim == 2 or lr_img.ndim == 3 and lr_img.shape[2] == 3)):
        what = (f"{lr_img.dtype} {lr_img.shape}" if isinstance(lr_img, np.ndarray)
                else type(lr_img).__name__)
        raise AmmsError(f"{name}: expected a uint8 grey (H, W) or RGB (H, W, 3) image, got "
                        f"{what}; read it with amms_lib.images.read_image")
    data.check_scale(scale)
    if not max_seconds > 0:  # nan and <= 0 refused; inf: no time limit
        raise AmmsError(f"max_seconds must be a positive number of seconds, got {max_seconds}")
    rec = dict(set=UPLOADS, image=name, scale=scale, lr_source="your upload", lr=lr_img,
               hr=None, sr={}, scores={}, seconds={}, missing=[], refused={})
    return _run_methods(rec, methods, device, folder, nets, say=say, tile="auto",
                        max_seconds=max_seconds)


def _run_methods(rec: dict, methods, device, folder, nets, say=None, tile=None,
                 max_seconds: float | None = None) -> dict:
    """Fill ``rec``'s sr, scores (when it has an HR), seconds, missing and refused (with
    ``max_seconds``: a user's image, run within budgets)."""
    if folder is not None and not Path(folder).is_dir():
        raise AmmsError(f"checkpoint folder {folder} not found; pass the folder that holds "
                        "metadata.json (default: checkpoints/)")
    for m in parse_methods(methods):
        _run_method(rec, m, device, folder, nets, say, tile, max_seconds)
    return rec


def _run_method(rec, m, device, folder, nets, say, tile, max_seconds) -> None:
    from amms_lib.inference import available_memory, check_bicubic_memory, plan

    nets, folder = ({} if nets is None else nets), folder and Path(folder)
    lr_img, scale, hr_img = rec["lr"], rec["scale"], rec["hr"]
    budgeted = max_seconds is not None
    t0 = time.perf_counter()
    try:
        if m == "bicubic":
            if budgeted:
                check_bicubic_memory(*lr_img.shape[:2], lr_img.shape[2] if lr_img.ndim == 3
                                     else 1, scale, available_memory("cpu"))
            sr_img = imresize(lr_img, scale)
        else:
            key = (m, scale, str(Path(folder).resolve()) if folder else None)
            if key not in nets:  # None: no checkpoint, remembered as such (per folder)
                found = find_checkpoint(m, scale, folder)
                nets[key] = found and load_registered(m, scale, device, folder)[0]
            net = nets[key]
            if net is None:
                rec["missing"].append(m)
                return
            t = tile
            if say is not None or budgeted:
                t, seconds = plan(net, *lr_img.shape[:2], tile, max_bytes=available_memory(
                    next(net.parameters()).device),
                    max_seconds=float("inf") if max_seconds is None else max_seconds)
                if say is not None:
                    how = f"tiles of {t}" if t else "whole image"
                    say(f"{m} x{scale} on {rec['image']}: about {seconds:.0f} s ({how}) ...")
                t0 = time.perf_counter()  # the time column: the upscale, not the estimate
            sr_img = upscale(net, lr_img, tile=t)
    except AmmsError as exc:
        if not budgeted:
            raise
        rec["refused"][m] = str(exc)
        return
    except (RuntimeError, MemoryError) as exc:  # out of memory despite the estimate
        if not budgeted:
            raise
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        rec["refused"][m] = f"ran out of memory ({why})"
        return
    rec["sr"][m], rec["seconds"][m] = sr_img, time.perf_counter() - t0
    if hr_img is not None:
        rec["scores"][m] = evaluate(sr_img, hr_img, scale)


def sr_shape(rec: dict) -> tuple:
    """Shape of the SR images of a reconstruction: the HR's, or scale x the LR's."""
    if rec["hr"] is not None:
        return rec["hr"].shape
    h, w = rec["lr"].shape[:2]
    return (rec["scale"] * h, rec["scale"] * w, *rec["lr"].shape[2:])
