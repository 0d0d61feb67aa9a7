"""How long upscaling takes, known before the work: FLOPs over measured throughput.

For one network call on an h x w LR window (N = h*w positions):

    FLOPs(N)   = a N + c  +  b N^2          (convolutions etc.; the non-local products)
    seconds(N) = t_call + (a N + c) / R_conv + b N^2 / R_att

``a``, ``c`` and ``b`` come from ``amms_lib.profile.flops_by_operator`` on fake tensors
at two sizes (exact: a convolution's FLOPs grow as N, attention's as N^2; the
Newton-Schulz steps of second-order pooling are the constant). ``R_att`` is timed on
the attention kernel itself (a slice of queries against many keys: its time per FLOP
hardly moves with N), then ``R_conv`` and ``t_call`` are fitted to the network's own
forward times at a few small sizes with the attention's share taken out. A fit from
the forward times alone cannot tell the two rates apart (it read 118 GFLOP/s for
attention that runs at 70). All of it is measured once per network shape, device,
thread count and torch version, about a second, and cached in
``$XDG_CACHE_HOME/amms_lib/speed.json`` (``~/.cache`` by default). The rates are fitted
to warm calls; a network's first call at a new input shape also sets up its kernels, a
fixed ``shape`` cost (the median, over the probe sizes, of first call minus warm call),
counted once per distinct window shape.
Measured on a machine that other jobs share, the rates are theirs: the estimate is
then on the slow side. ``python -m amms_lib.speed CHECKPOINT`` prints the fit and its
estimates; ``benchmarks/upscale_time.py`` checks them against measured times.

A tiled upscale (``amms_lib.inference.forward_tiled``) is the sum over its windows,
and the x8 self-ensemble is eight of those.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amms_lib.non_local import NonLocalBlock
from amms_lib.tiles import OVERLAP, spans

PROBE_SIDES = (24, 48, 96, 128)  # LR sides timed by ``calibrate`` (about 1 s in all)
PROBE_SLOW = 0.5  # seconds: a probe slower is timed once and, from the second on, ends probing
REPEATS = 2  # timed calls of the attention probe after one warm-up; the fastest counts
SHOW_ABOVE = 5.0  # seconds: estimates above this are printed by the upscaler


@dataclass(frozen=True)
class FlopModel:
    """FLOPs of one call on N positions: ``conv_per_pixel * N + const + att * N^2``."""
    conv_per_pixel: float
    const: float
    att: float

    def conv(self, n: int) -> float:
        return self.conv_per_pixel * n + self.const

    def attention(self, n: int) -> float:
        return self.att * n * n


@dataclass(frozen=True)
class Rates:
    """Fitted speed of one network on one device: FLOP/s and seconds per call."""
    conv: float  # FLOP/s of everything but the attention products
    att: float  # FLOP/s of the non-local attention products (inf: the net has none)
    call: float  # seconds of overhead per network call
    shape: float = 0.0  # extra seconds of the first call at a new input shape (kernel set-up)

    def seconds(self, flops: FlopModel, n: int) -> float:
        att = flops.attention(n) / self.att if flops.att else 0.0
        return self.call + flops.conv(n) / self.conv + att


_FLOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> FlopModel
_RATES: dict[str, Rates] = {}  # signature -> Rates, this process's copy of the cache
_MEASURED: set[str] = set()  # signatures timed by this process (not read from the cache)
MAX_RATE = 1e16  # FLOP/s: a cache entry faster than this (10 PFLOP/s) is not a measurement


def flop_model(net: nn.Module) -> FlopModel:
    """The FLOP coefficients of ``net``, from fake-tensor counts at 16x16 and 32x32
    (counted once per network object)."""
    if net not in _FLOPS:
        _FLOPS[net] = _count_flops(net)
    return _FLOPS[net]


def _count_flops(net: nn.Module) -> FlopModel:
    from amms_lib.profile import flops_by_operator

    counts = {s: flops_by_operator(net, (s, s)) for s in (16, 32)}
    conv = {s: c["total"] - c["non-local attention"] for s, c in counts.items()}
    per_pixel = (conv[32] - conv[16]) / (32 * 32 - 16 * 16)
    return FlopModel(conv_per_pixel=per_pixel, const=max(conv[16] - per_pixel * 256, 0.0),
                     att=counts[32]["non-local attention"] / (32 * 32) ** 2)


def windows(h: int, w: int, tile: int | None, overlap: int) -> list[tuple[int, int]]:
    """The (rows, cols) input of every network call of an (h, w) LR image, whole or
    tiled (``inference.forward_tiled``'s windows, core plus overlap)."""
    if tile is None:
        return [(h, w)]
    rows = [i1 - i0 for *_, i0, i1 in spans(h, tile, overlap)]
    cols = [j1 - j0 for *_, j0, j1 in spans(w, tile, overlap)]
    return [(r, c) for r in rows for c in cols]


def signature(net: nn.Module, device: torch.device) -> str:
    """Cache key: the network's class and parameter shapes, attention modes, device,
    threads, torch version and CPU; what changes a network's speed."""
    shapes = [(name, tuple(p.shape)) for name, p in net.named_parameters()]
    modes = [m.mode for m in net.modules() if isinstance(m, NonLocalBlock)]
    what = json.dumps([type(net).__name__, shapes, modes, str(next(net.parameters()).dtype)])
    net_id = hashlib.sha1(what.encode()).hexdigest()[:12]
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()}")
    return f"{type(net).__name__}-{net_id} {device.type} {where} torch {torch.__version__}"


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "amms_lib" / "speed.json"


def _valid(entry) -> Rates | None:
    """A cache entry as Rates, or None unless every rate is a positive number (att may
    be inf: no attention) and the overheads are finite and not negative."""
    try:
        r = Rates(**{k: float(entry[k]) for k in ("conv", "att", "call", "shape")})
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if any(isinstance(entry[k], bool) for k in ("conv", "att", "call", "shape")):
        return None
    ok = (0 < r.conv < MAX_RATE and (0 < r.att < MAX_RATE or r.att == math.inf)
          and all(math.isfinite(v) and 0 <= v < 60 for v in (r.call, r.shape)))
    return r if ok else None


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}  # missing or damaged: measured again and rewritten


def fit_rates(flops: FlopModel, sides, seconds, att_rate: float, call: float) -> Rates:
    """``R_conv`` by least squares on relative error, from the forward times with the
    attention's share (at ``att_rate`` FLOP/s) and the per-call overhead ``call``
    (measured on a 4x4 input, where the arithmetic is nothing) taken out."""
    n = [s * s for s in sides]
    c = np.array([flops.conv(k) for k in n])
    t = np.array(seconds, dtype=float)
    rest = t - call - np.array([flops.attention(k) / att_rate for k in n])
    inv_rate = float((c * rest / t**2).sum() / (c**2 / t**2).sum())
    if not inv_rate > 0:  # noise: all the time to the convolutions
        inv_rate = float(t.sum() / c.sum())
    return Rates(conv=1 / inv_rate, att=att_rate, call=call)


@torch.no_grad()
def attention_rate(net: nn.Module) -> float:
    """FLOP/s of the non-local products of ``net`` (inf: it has none), timed on 2,048
    queries against 65,536 keys of the first block's widths and attention kernel (16,384
    for the naive kernel, whose score matrix is stored): the time per FLOP barely
    changes with the number of positions, so a slice of queries tells the whole map's."""
    from amms_lib.non_local import fused_attention, naive_attention

    block = next((m for m in net.modules() if isinstance(m, NonLocalBlock)), None)
    if block is None:
        return float("inf")
    p = block.theta.weight
    naive = block.mode == "naive"
    nq, nk = 2048, 16384 if naive else 65536
    d, dv = block.theta.out_channels, block.g.out_channels
    q, k = (torch.rand(1, m, d, device=p.device, dtype=p.dtype) for m in (nq, nk))
    v = torch.rand(1, nk, dv, device=p.device, dtype=p.dtype)
    attend = naive_attention if naive else fused_attention
    seconds = _fastest(lambda: attend(q, k, v), p.device)
    return 2 * nq * nk * (d + dv) / seconds


def _fastest(fn, device: torch.device, repeats: int = REPEATS, warm: bool = True) -> float:
    """Fastest of ``repeats`` calls of ``fn`` (after one uncounted warm-up call if
    ``warm``), in seconds."""
    best = float("inf")
    for i in range(repeats + warm):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t) if i or not warm else best
    return best


@torch.no_grad()
def calibrate(net: nn.Module, refresh: bool = False) -> Rates:
    """``net``'s rates on its device: from the cache, else timed (about a second) and
    cached (written atomically; an unwritable cache only costs the re-measurement)."""
    from amms_lib.runtime import atomic_write

    device = next(net.parameters()).device
    key, path = signature(net, device), cache_path()
    if not refresh and key in _RATES:
        return _RATES[key]
    cache = _read_cache(path)
    if not refresh and (cached := _valid(cache.get(key))) is not None:
        _RATES[key] = cached
        return cached
    was_training = net.training
    net.eval()
    try:
        att = attention_rate(net)
        dtype = next(net.parameters()).dtype
        net(torch.rand(1, 3, 16, 16, device=device, dtype=dtype))  # one-off set-up
        tiny = torch.rand(1, 3, 4, 4, device=device, dtype=dtype)
        call = _fastest(lambda: net(tiny), device, repeats=3)  # overhead, no arithmetic
        # per size: its first call, then the fastest of three more; a network that works at
        # HR resolution (MemNet, VDSR at x4) is slow already at the small sizes, so a slow
        # probe is timed once and the second slow one ends the probing (seconds, not minutes)
        sides, cold, seconds = [], [], []
        for s in PROBE_SIDES:
            x = torch.rand(1, 3, s, s, device=device, dtype=dtype)
            cold.append(_fastest(lambda: net(x), device, repeats=1, warm=False))
            seconds.append(_fastest(lambda: net(x), device, warm=False,
                                    repeats=1 if cold[-1] > PROBE_SLOW else 3))
            sides.append(s)
            if len(sides) >= 2 and seconds[-1] > PROBE_SLOW:
                break
    finally:
        net.train(was_training)
    rates = fit_rates(flop_model(net), sides, seconds, att, call)
    shape = float(np.median([max(c - t, 0.0) for c, t in zip(cold, seconds)]))
    rates = Rates(rates.conv, rates.att, rates.call, shape)
    cache[key] = {**asdict(rates), "sides": sides, "seconds": seconds,
                  "first_call_seconds": cold, "measured": time.strftime("%Y-%m-%d %H:%M")}
    try:
        atomic_write(path, lambda f: f.write(json.dumps(cache, indent=1)), mode="w")
    except OSError as exc:
        print(f"warning: cannot write the speed cache {path} ({exc.strerror or exc}); "
              "every run will time the network again", file=sys.stderr)
    _RATES[key] = rates
    _MEASURED.add(key)
    return rates


def remeasure(net: nn.Module) -> bool:
    """Time ``net`` again unless this process already did; True if it did now. Called
    before refusing work over a time budget: a cached measurement may have been taken
    while other jobs shared the machine, which makes every estimate too slow."""
    if signature(net, next(net.parameters()).device) in _MEASURED:
        return False
    calibrate(net, refresh=True)
    return True


def estimate_seconds(net: nn.Module, h: int, w: int, tile: int | None = None,
                     overlap: int = OVERLAP, ensemble: bool = False,
                     rates: Rates | None = None, flops: FlopModel | None = None) -> float:
    """Estimated seconds to upscale an (h, w) LR image (see the module doc)."""
    rates = rates or calibrate(net)
    flops = flops or flop_model(net)
    shapes = windows(h, w, tile, overlap)
    total = sum(rates.seconds(flops, r * c) for r, c in shapes)
    distinct = set(shapes) | ({(c, r) for r, c in shapes} if ensemble else set())
    return total * (8 if ensemble else 1) + rates.shape * len(distinct)


@contextmanager
def progress(net: nn.Module, seconds: float | None, desc: str = "upscaling", bar=None):
    """A bar in estimated seconds of work while ``net`` runs (nothing if ``seconds`` is
    None): each non-local block advances it by its attention's share of the estimate
    and each network call (a tile, an ensemble member) by the rest, so it fills at one
    unit per second when the estimate is right and its ETA reads in seconds.
    ``bar``: any object with ``update(n)`` and ``close()`` (default: a tqdm bar)."""
    if seconds is None:
        yield None
        return
    from tqdm.auto import tqdm

    rates, flops = calibrate(net), flop_model(net)
    blocks = [m for m in net.modules() if isinstance(m, NonLocalBlock)]
    from amms_lib.runtime import progress_off

    bar = bar or tqdm(total=seconds, desc=desc, unit="s", leave=False, disable=progress_off(),
                      bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, "
                                 "about {remaining} left")

    def positions(inputs) -> int:
        return inputs[0].shape[-2] * inputs[0].shape[-1]

    def advance(seconds_done: float) -> None:  # never past the total: tqdm would warn
        bar.update(max(min(seconds_done, bar.total - bar.n), 0))

    def after_block(module, inputs, output):
        advance(flops.attention(positions(inputs)) / rates.att / len(blocks))

    seen = set()

    def after_call(module, inputs, output):
        shape = tuple(inputs[0].shape[-2:])
        first = rates.shape if shape not in seen else 0.0
        seen.add(shape)
        advance(first + rates.call + flops.conv(positions(inputs)) / rates.conv)

    hooks = [b.register_forward_hook(after_block) for b in blocks]
    hooks.append(net.register_forward_hook(after_call))
    try:
        yield bar
    finally:
        for h in hooks:
            h.remove()
        bar.close()


def main(argv: list[str] | None = None) -> int:
    """Print a checkpoint's fitted rates and its estimates for square LR sizes."""
    from amms_lib.checkpoint import load_model
    from amms_lib.runtime import ArgumentParser, cli, resolve_device

    ap = ArgumentParser(prog="python -m amms_lib.speed", description=main.__doc__)
    ap.add_argument("checkpoint")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--refresh", action="store_true", help="measure again")
    args = ap.parse_args(argv)

    def run() -> int:
        net, _ = load_model(args.checkpoint, device=resolve_device(args.device))
        rates, flops = calibrate(net, args.refresh), flop_model(net)
        print(f"{signature(net, next(net.parameters()).device)}  (cache: {cache_path()})")
        att = (f"attention {rates.att / 1e9:.1f} GFLOP/s" if flops.att
               else "no attention")
        print(f"convolutions {rates.conv / 1e9:.1f} GFLOP/s, {att}, "
              f"{rates.call * 1e3:.1f} ms per call")
        for side in (64, 128, 256, 512, 1000):
            print(f"{side}x{side} LR: about "
                  f"{estimate_seconds(net, side, side, rates=rates, flops=flops):.1f} s")
        return 0
    return cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
