"""Quick mode and what a run costs: the notebooks' small, fast settings (``mode_config``,
``quick_start``), and a run's training time measured before it starts (``check_cost``)."""
from __future__ import annotations

import math
import time

import torch

from amms_lib import data
from amms_lib.checkpoint import checkpoints_dir, read_checkpoint
from amms_lib.errors import AmmsError
from amms_lib.models import build_model
from amms_lib.patches import TRAIN_SETS
from amms_lib.runtime import cpu_bf16, resolve_device
from amms_lib.train import train_step
from amms_lib.train_config import TrainConfig, use_autocast


def measure_step_seconds(cfg: TrainConfig, steps: int = 3) -> float:
    """Seconds one training step of ``cfg`` takes on its device, measured on random
    batches of its shape after one warm-up step (the network, optimizer and settings of
    the run; data loading and validation not included): a run's cost is known before it
    starts, as ``total_steps * measure_step_seconds(cfg)``."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net = build_model(cfg.model, cfg.scale, **cfg.model_kwargs).to(device)
    channels_last = device.type == "cuda" or cfg.channels_last
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    p = cfg.patch_size
    lr_b = torch.rand(cfg.batch_size, 3, p // cfg.scale, p // cfg.scale, device=device)
    hr_b = torch.rand(cfg.batch_size, 3, p, p, device=device)
    if channels_last:
        lr_b = lr_b.contiguous(memory_format=torch.channels_last)
    amp = use_autocast(cfg, device)
    train_step(net, opt, lr_b, hr_b, amp)  # warm-up: allocations, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(net, opt, lr_b, hr_b, amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


# notebook 05's small comparison networks for a quick run (AMMS uses AMMSConfig.small())
QUICK_MODEL_KWARGS = {"srcnn": {}, "vdsr": dict(depth=6), "lapsrn": dict(depth=3),
                      "memnet": dict(n_blocks=2, n_recursions=2)}


# a quick run's steps, 16 patches each: 150; the compact AMMS from scratch (x2) 300, since at
# 150 it ended only 0.005 dB above bicubic on the built-in images (+0.30 and +0.24 dB with the
# data, seeds 0 and 1); at 300 +0.65 and +0.55 on the built-in images, in about 100 s on 2 cores
QUICK_STEPS, QUICK_STEPS_AMMS = 150, 300


# the quick learning rate: AMMSConfig.small()'s, chosen on the held-out split by the
# equal-budget sweep (2e-4 / 5e-4 / 1e-3 over 329 steps: benchmarks/results/table2_cpu.json);
# the quick comparison networks are smaller than the swept ones and keep 5e-4
QUICK_LR = {"amms": 1e-3}


# a quick AMMS run at x3 or x4 starts from the shipped x2 network's body (its configuration,
# a new upsampler), as the shipped x3 and x4 did: from scratch, 150 steps at x4 ended under
# bicubic (28.36 against 28.39 dB on 2 held-out images); from the x2 body +1.17 dB. The lr is
# the one the shipped x3/x4 runs used from that body
QUICK_INIT, QUICK_INIT_LR = "amms_x2.pt", 5e-4


def quick_start(scale: int, ideas: dict | None) -> tuple[dict, str] | None:
    """(model_kwargs, init_from) of a quick AMMS run at x3/x4 that starts from the shipped x2
    body; None at x2, with an idea switched off (another network) or without the file."""
    path = checkpoints_dir() / QUICK_INIT
    if scale == 2 or not all((ideas or {}).values()) or not path.is_file():
        return None
    return dict(read_checkpoint(path)["model_kwargs"]), str(path)


def mode_config(quick: bool, model: str = "amms", scale: int = 2, *, channels: int = 0,
                n_amms: int = 0, ideas: dict | None = None, epochs: int = 0,
                iters_per_epoch: int = 0, batch_size: int = 0, patch_size: int = 0,
                lr: float = 0.0, recipe: str = "auto", amp: bool = True, **fields
                ) -> TrainConfig:
    """Notebook 05's run in quick or full mode, checked; a 0 or "auto" takes the mode's
    default. Quick (a minute or two on 2 CPU cores): ``AMMSConfig.small()`` (or a small
    comparison network), ``QUICK_STEPS`` steps (``QUICK_STEPS_AMMS`` for AMMS from scratch)
    of 16 patches of 32*scale HR pixels, the fast
    recipe at ``QUICK_LR`` (else 5e-4), bf16 autocast (on CPUs with native bf16) and
    channels-last on the CPU, validation every 100 steps on 2 whole held-out images; AMMS at
    x3/x4 starts from the shipped x2 body (``quick_start``). Full:
    the paper's (64 channels, 4 AMMS, M = 2, 1000 epochs of 1000 steps of 16 x 192 px, lr
    1e-4 halved every 200 epochs), validated every 1000 steps on the whole held-out split.
    ``ideas``: the ablation switches (AMMS only); ``fields``: any other TrainConfig field
    (seed, device, out_dir, resume, ...)."""
    if min(channels, n_amms) < 0:
        raise AmmsError(f"channels and n_amms: 0 (the mode's default) or more, got "
                        f"{channels} and {n_amms}")
    recipe = {"auto": "fast" if quick else "paper"}.get(recipe, recipe)
    kwargs = QUICK_MODEL_KWARGS.get(model, {}) if quick else {}
    start = (quick_start(scale, ideas) if quick and model == "amms" and not channels
             and not n_amms and "init_from" not in fields else None)
    if model == "amms":
        kwargs = dict(channels=channels or (32 if quick else 64),
                      n_amms=n_amms or (2 if quick else 4), n_am=1 if quick else 2,
                      **(ideas or {}))
    if start is not None:
        kwargs, fields["init_from"] = start
        lr = lr or QUICK_INIT_LR
    cfg = TrainConfig(
        model=model, scale=scale, model_kwargs=kwargs,
        epochs=epochs or (1 if quick else 1000),
        iters_per_epoch=iters_per_epoch or (
            (QUICK_STEPS_AMMS if model == "amms" and start is None else QUICK_STEPS)
            if quick else 1000),
        batch_size=batch_size or 16, patch_size=patch_size or (32 * scale if quick else 192),
        lr=lr or (1e-4 if recipe == "paper" else QUICK_LR.get(model, 5e-4) if quick else 5e-4),
        recipe=recipe, lr_step_epochs=200,
        val_every=100 if quick else 1000, val_images=2 if quick else 0,
        cpu_amp=amp and quick and cpu_bf16(), channels_last=quick,
        workers=0 if quick else 4, amp=amp,
        log_every=5, train_sets=TRAIN_SETS if data.data_root() else (data.BUILTIN,), **fields)
    cfg.check()
    return cfg


def check_cost(cfg: TrainConfig, runs: int = 1, max_hours: float = 1.0) -> float:
    """Hours ``runs`` runs of ``cfg`` will train, known before they start: measured seconds
    per step (``measure_step_seconds``) x steps x runs, printed (validation and data
    loading not included). Over ``max_hours``: AmmsError saying how to run it anyway."""
    if not max_hours > 0:
        raise AmmsError(f"max_hours must be a positive number of hours, got {max_hours}")
    step_s = measure_step_seconds(cfg, steps=2)
    hours = runs * cfg.total_steps * step_s / 3600
    print(f"estimated training time on {cfg.device}: {runs} x {cfg.total_steps:,} steps x "
          f"{step_s:.3f} s = {hours * 60:.1f} minutes (validation and data loading not "
          "included)")
    if hours > max_hours:
        raise AmmsError(f"estimated at {hours:.1f} hours on {cfg.device}, over max_hours "
                        f"{max_hours:g}: pass -p max_hours {math.ceil(hours * 1.2)} to run it "
                        "anyway, or train on a GPU (notebook 05, 'On a GPU')")
    return hours
