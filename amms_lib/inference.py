"""Running a trained network on uint8 images: the bridge between NumPy and torch.

Images are uint8 (H, W) or (H, W, 3); networks take (B, 3, h, w) floats in [0, 1].
A grey image is run as three equal channels and its output averaged back to grey.

Large inputs (EDSR, Lim et al. 2017, Sec. 4.1 for the self-ensemble; tiling as in
their ``forward_chop``):

- **Tiling** cuts the LR image into ``tile x tile`` cores, runs each with ``overlap``
  extra pixels of context on every side and keeps only the core of each output, so
  seams are invisible once ``overlap`` covers the convolutions' receptive field.
  Attention is the exception: the non-local blocks attend only within their tile and
  the second-order statistics are pooled over the tile, not the whole image.
- **Self-ensemble (x8)**: the mean of the outputs for the 8 flips and rotations of the
  input, each mapped back.
- **Memory estimate**: activations of the largest tile (the largest layer output,
  measured on a small probe, times ``LIVE``), plus the N x N matrices of naive
  attention and the SR canvas. ``upscale`` refuses an input over ``max_bytes``
  with an error that suggests a ``--tile``. The bicubic path (``amms_lib.resize``)
  has its own per-pixel estimate, ``estimate_bicubic_memory``.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from amms_lib.errors import AmmsError
from amms_lib.non_local import NonLocalBlock
from amms_lib.tiles import OVERLAP, TILES, spans  # inference.OVERLAP etc. stay importable

MIN_SIDE = 2  # smallest LR side accepted: a 1-pixel row or column has no neighbours
LIVE = 4  # tensors alive at the peak, in units of the largest layer output
GB = 1e9


def to_tensor(img: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img)).to(device)
    t = t[..., None].expand(*t.shape, 3) if t.ndim == 2 else t  # grey -> 3 channels
    return t.permute(2, 0, 1)[None].float().div(255)  # (H, W, 3) -> (1, 3, H, W)


def to_image(t: torch.Tensor, grey: bool = False) -> np.ndarray:
    """float (1, 3, H, W) -> uint8 (H, W, 3), or (H, W) when ``grey``; round, clip."""
    t = t[0].float().clamp(0, 1).mul(255)
    t = t.mean(0) if grey else t.permute(1, 2, 0)  # (3, H, W) -> (H, W[, 3])
    return t.round().byte().cpu().numpy()


def forward_tiled(net: nn.Module, x: torch.Tensor, tile: int,
                  overlap: int = OVERLAP) -> torch.Tensor:
    """``net(x)`` tile by tile: (B, 3, h, w) -> (B, 3, s*h, s*w), the cores pasted."""
    out = None
    for r0, r1, i0, i1 in spans(x.shape[-2], tile, overlap):
        for c0, c1, j0, j1 in spans(x.shape[-1], tile, overlap):
            y = net(x[..., i0:i1, j0:j1])  # (B, 3, s*(i1-i0), s*(j1-j0))
            s = y.shape[-2] // (i1 - i0)
            if out is None:
                out = y.new_zeros(*y.shape[:2], s * x.shape[-2], s * x.shape[-1])
            core = y[..., s * (r0 - i0):s * (r1 - i0), s * (c0 - j0):s * (c1 - j0)]
            out[..., s * r0:s * r1, s * c0:s * c1] = core  # drop the overlap margins
    return out


def self_ensemble(fn, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``fn`` over the 8 flips/rotations of x, each undone on the output.

    x: (B, 3, h, w) -> (B, 3, s*h, s*w); fn maps LR to SR of any orientation.
    """
    out = 0
    for k in range(4):
        for flip in (False, True):
            t = (x.flip(-1) if flip else x).rot90(k, (-2, -1)).contiguous()
            y = fn(t).rot90(-k, (-2, -1))  # back to the input's orientation
            out = out + (y.flip(-1) if flip else y)
    return out / 8


@torch.no_grad()
def _elements_per_pixel(net: nn.Module) -> float:
    """Largest layer output, in elements per LR pixel, measured on an 8x8 probe."""
    sizes = []
    hooks = [m.register_forward_hook(
        lambda m, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
        for m in net.modules() if not list(m.children())]  # leaf layers
    try:
        p = next(net.parameters())
        net(torch.rand(1, 3, 8, 8, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return max(sizes) / 64


def estimate_memory(net: nn.Module, h: int, w: int, tile: int | None = None,
                    overlap: int = OVERLAP) -> int:
    """Rough peak bytes to upscale an (h, w) LR image, whole or with ``tile``.

    activations of the largest input window: LIVE * largest layer output, plus
    2 N^2 (scores and weights) for naive non-local blocks (N = window positions),
    plus the float SR canvas (B=1, 3 channels) when tiling.
    """
    p = next(net.parameters())
    s = getattr(net, "scale", 1)
    span = h + w if tile is None else tile + 2 * overlap  # largest window side
    n = min(span, h) * min(span, w)  # positions per network call
    nbytes = LIVE * _elements_per_pixel(net) * n * p.element_size()
    if any(isinstance(m, NonLocalBlock) and m.mode == "naive" for m in net.modules()):
        nbytes += 2 * n * n * 4  # softmax runs in float32 at least
    if tile is not None:
        nbytes += 3 * s * s * h * w * p.element_size()
    return int(nbytes)


def suggest_tile(net: nn.Module, h: int, w: int, max_bytes: float,
                 overlap: int = OVERLAP) -> int | None:
    """The largest of ``TILES`` whose estimate fits ``max_bytes`` (None: none fits)."""
    return next((t for t in TILES if t < max(h, w)
                 and estimate_memory(net, h, w, t, overlap) <= max_bytes), None)


def check_memory(net: nn.Module, h: int, w: int, max_bytes: float,
                 tile: int | None = None, overlap: int = OVERLAP) -> None:
    """AmmsError suggesting a ``--tile`` when the estimate exceeds ``max_bytes``."""
    need = estimate_memory(net, h, w, tile, overlap)
    if need <= max_bytes:
        return
    how = f"with --tile {tile}" if tile else "untiled"
    fit = suggest_tile(net, h, w, max_bytes, overlap)
    hint = (f"use --tile {fit}" if fit else
            "no --tile fits it: free memory or raise --max-memory")
    _refuse(need, max_bytes, h, w, how, hint)


def estimate_bicubic_memory(h: int, w: int, channels: int, scale: int) -> int:
    """Rough peak bytes of ``imresize`` on a uint8 (h, w, channels) image by ``scale``.

    Per output value: the float64 output and its gathered input rows (2 x 8 B), the
    float64 image after the first pass (8 / scale B) and two uint8 copies. Measured
    (peak RSS of ``upscale --model bicubic``'s read-resize-write, one thread):
    19.9-20.1 B per output value at x2 (1500x1500 RGB, 2000x2000 grey), 18.9 at x3
    (800x800 RGB), 18.0 at x4 (1200x1200 RGB); this formula gives 22, 20.7, 20.
    """
    return int((8 * (2 + 1 / scale) + 2) * channels * scale * h * scale * w)


def check_bicubic_memory(h: int, w: int, channels: int, scale: int,
                         max_bytes: float) -> None:
    """AmmsError when the bicubic estimate exceeds ``max_bytes`` (it cannot be tiled)."""
    need = estimate_bicubic_memory(h, w, channels, scale)
    if need > max_bytes:
        _refuse(need, max_bytes, h, w, f"through bicubic x{scale}",
                "free memory, raise --max-memory or cut the image into parts")


def _refuse(need: float, max_bytes: float, h: int, w: int, how: str, hint: str) -> None:
    raise AmmsError(f"{w}x{h} input needs about {_bytes(need)} {how}, over the "
                    f"{_bytes(max_bytes)} memory budget; {hint}")


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes free for one run: 90% of free GPU memory, or 80% of MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(0.9 * torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f
                      if line.startswith("MemAvailable"))
        return int(0.8 * kb * 1024)
    except (OSError, StopIteration):
        return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_size(h: int, w: int) -> None:
    """Refuse images too small to upscale (a side under ``MIN_SIDE`` pixels)."""
    if min(h, w) < MIN_SIDE:
        raise AmmsError(f"{w}x{h} image is too small to upscale; "
                        f"need at least {MIN_SIDE}x{MIN_SIDE} pixels")


def plan(net: nn.Module, h: int, w: int, tile: int | str | None = None,
         overlap: int = OVERLAP, ensemble: bool = False, max_bytes: float | None = None,
         max_seconds: float | None = None) -> tuple[int | None, float | None]:
    """How to run an (h, w) LR image: ``(tile, estimated seconds)``.

    tile: an LR tile size, None (the whole image) or ``"auto"``: of the whole image and
    ``TILES``, the one estimated fastest among those that fit both budgets (measured by
    ``benchmarks/upscale_tiles.py``: on 10 images each of BSD100 and Urban100 at x2 and x4,
    no tile of 32-256 lost a resolved amount against whole-image attention (lowest 95% bound
    -0.04 dB), while 64-px tiles ran 6.6x faster on Urban100 x2, so speed decides). A given
    tile (or None)
    over a budget raises AmmsError saying what it needs and what fits both budgets (no
    ``--tile``, a ``--tile``, or nothing). The seconds are ``amms_lib.speed``'s estimate
    (None when ``max_seconds`` is None: no timing). Before refusing, a network timed from
    the cache is timed again once (``speed.remeasure``) and the plan made again.
    """
    from amms_lib import speed

    try:
        return _plan(net, h, w, tile, overlap, ensemble, max_bytes, max_seconds)
    except AmmsError:
        if max_seconds is None or not speed.remeasure(net):
            raise
    return _plan(net, h, w, tile, overlap, ensemble, max_bytes, max_seconds)


def _plan(net, h, w, tile, overlap, ensemble, max_bytes, max_seconds):
    from amms_lib import speed

    def seconds(t):
        return speed.estimate_seconds(net, h, w, t, overlap, ensemble)

    def memory(t):
        return estimate_memory(net, h, w, t, overlap)

    def fits(t):
        return ((max_bytes is None or memory(t) <= max_bytes)
                and (max_seconds is None or seconds(t) <= max_seconds))

    timed = max_seconds is not None
    candidates = [None, *(t for t in TILES if t < max(h, w))]
    fitting = [t for t in candidates if fits(t)]  # each setting estimated once
    fit = fitting[0] if fitting else "none"  # the hint: the least tiling that fits
    if tile == "auto":  # the fastest that fits; the whole image when nothing is timed
        if fitting and timed:
            fit = min(fitting, key=seconds)
        if fit == "none":  # the nearest miss: fastest within memory, else least memory
            in_memory = [t for t in candidates
                         if max_bytes is None or memory(t) <= max_bytes]
            near = (min(in_memory, key=seconds) if in_memory and timed else
                    in_memory[0] if in_memory else candidates[-1])
            over_mem = max_bytes is not None and memory(near) > max_bytes
            over_time = timed and seconds(near) > max_seconds
            needs = ", ".join(([_bytes(memory(near))] if over_mem else [])
                              + ([_secs(seconds(near))] if over_time else []))
            what = f"--tile {near}" if near else "the whole image"
            raise AmmsError(f"{w}x{h} input fits no tile within the budgets "
                            f"({_budgets(max_bytes, max_seconds)}); the nearest, {what}, "
                            f"needs about {needs}: "
                            f"{_raise_hint(over_mem, over_time, ensemble)}")
        tile = fit
    how = f"with --tile {tile}" if tile else "untiled"
    over = []
    if max_bytes is not None and memory(tile) > max_bytes:
        over.append(f"needs about {_bytes(memory(tile))} {how}, over the "
                    f"{_bytes(max_bytes)} memory budget")
    if timed and seconds(tile) > max_seconds:
        over.append(f"would take about {_secs(seconds(tile))} {how}, over the "
                    f"{max_seconds:g} s time budget")
    if over:
        about = (lambda t: f" (about {_secs(seconds(t))})") if timed else (lambda t: "")
        if fit is None:
            hint = f"use --tile whole{about(None)}"
        elif fit == "none":
            hint = ("no --tile fits: " + _raise_hint(
                max_bytes is not None and all(memory(t) > max_bytes for t in candidates),
                timed and all(seconds(t) > max_seconds for t in candidates), ensemble))
        else:
            hint = f"use --tile {fit}{about(fit)} or --tile auto"
        raise AmmsError(f"{w}x{h} input " + ", and ".join(over) + f"; {hint}")
    return tile, (seconds(tile) if timed else None)


def _raise_hint(over_memory: bool, over_time: bool, ensemble: bool) -> str:
    """What a user can change when nothing fits: only the budgets that are short."""
    ways = (["free memory or raise --max-memory"] if over_memory else []) + (
        ["raise --max-seconds"] if over_time else []) + (
        ["drop --ensemble (8x the time)"] if ensemble and over_time else [])
    return ", ".join(ways) or "make the image smaller"


def _secs(x: float) -> str:
    """``12 s``, ``0.42 s``: an estimate never reads as 0 s."""
    return f"{x:.0f} s" if x >= 10 else f"{x:.2g} s"


def _bytes(n: float) -> str:
    """``1.5 GB``, ``12 MB`` or ``10 kB``: a budget never reads as 0.0 GB or 0.1 MB."""
    if n >= GB:
        return f"{n / GB:.1f} GB"
    return f"{n / 1e6:.3g} MB" if n >= 1e5 else f"{n / 1e3:.3g} kB"


def _budgets(max_bytes, max_seconds) -> str:
    parts = ([_bytes(max_bytes)] if max_bytes is not None else []) + \
        ([f"{max_seconds:g} s"] if max_seconds is not None else [])
    return ", ".join(parts)


@torch.no_grad()
def upscale(net: nn.Module, lr_img: np.ndarray, tile: int | str | None = None,
            overlap: int = OVERLAP, ensemble: bool = False,
            max_bytes: float | None = None, max_seconds: float | None = None,
            progress: bool = False, bf16: bool = False) -> np.ndarray:
    """SR image of one uint8 LR image (H, W) or (H, W, 3), on the network's device.

    tile: LR core size for tiled inference (None: the whole image at once; "auto": see
    ``plan``); overlap: LR context pixels around each tile; ensemble: x8 self-ensemble;
    max_bytes, max_seconds: refuse (AmmsError suggesting ``--tile``) inputs estimated
    above them; progress: a bar in estimated seconds (``speed.progress``) for an image
    estimated over ``speed.SHOW_ABOVE`` seconds; bf16: channels-last and bf16 autocast for
    the convolutions (the non-local attention and second-order statistics stay float32),
    faster on CPUs with AVX512-BF16 (``benchmarks/inference_options.py`` measures it);
    the network is left channels-last.
    """
    from amms_lib import speed

    h, w = lr_img.shape[:2]
    check_size(h, w)
    if tile not in (None, "auto") and (not isinstance(tile, int) or tile < 1) \
            or overlap < 0:
        raise AmmsError(f"tile must be >= 1 and overlap >= 0, got {tile}, {overlap}")
    tile, seconds = plan(net, h, w, tile, overlap, ensemble, max_bytes,
                         max_seconds if max_seconds is not None or not progress
                         else float("inf"))
    device = next(net.parameters()).device
    fn = net if tile is None else (lambda x: forward_tiled(net, x, tile, overlap))
    x = to_tensor(lr_img, device)
    if bf16:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    show = progress and seconds is not None and seconds > speed.SHOW_ABOVE
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with amp, speed.progress(net, seconds if show else None):
        y = self_ensemble(fn, x) if ensemble else fn(x)
    if not torch.isfinite(y).all():  # clamping would turn NaN into a black image, silently
        raise AmmsError("the network's output holds NaN or infinite values: its weights are "
                        "broken (a diverged run or a damaged checkpoint); nothing was written")
    return to_image(y.float(), grey=lr_img.ndim == 2)
