"""Training: the paper's recipe (section 4.2), resumable, on CPU, one GPU or many.

L1 loss, Adam(0.9, 0.999, 1e-8), lr 1e-4 halved every 200 epochs of 1000 iterations,
batches of 16 random 192x192 HR patches (``amms_lib.patches``). The ``fast`` recipe
(linear warm-up, then cosine decay from a higher lr) is for short budgets. With
``--max-minutes`` it is laid over the time budget, not over ``epochs x iters_per_epoch``
(which then no longer caps the run): the lr follows the fraction of the budget already
spent, so a run reaches its peak after ``warmup`` of the budget and its floor (0) when
the budget ends, whatever the machine's speed. The budget counts training time
(validation excluded) across resumes; ``--stop-minutes`` ends one process earlier
(saved, resumable) without changing the schedule, for runs spread over several sessions.

    python -m amms_lib.train --model amms --scale 2 --out-dir runs/train/x2
    torchrun --nproc_per_node 2 -m amms_lib.train ...   # DistributedDataParallel

``out_dir`` receives ``last.pt`` and ``best.pt`` (atomic), ``config.json`` and
``metrics.jsonl`` (one JSON object per logged step or validation). Validation, and so
``best.pt``, uses the held-out split of the training images (``data.HELDOUT``) by default.
``--ema D`` also keeps an exponential moving average of the weights (decay ``D`` per
step, e.g. 0.999), validated beside them (``psnr_ema``) and saved as ``ema.pt``.
``--resume`` continues from ``last.pt`` exactly: weights, optimizer, scheduler, step and
the data position (patches are a function of (seed, sample index)); it refuses settings
that would change the run (seed, batch, lr, recipe, ...). A folder that holds an earlier
run is never overwritten unless ``--overwrite`` says so, and one process at a time
writes to it (``runtime.FolderLock``: a ``flock`` on the folder).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from amms_lib import data
from amms_lib.checkpoint import (
    check_compatible,
    checkpoints_dir,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from amms_lib.errors import AmmsError
from amms_lib.inference import upscale
from amms_lib.metrics import evaluate
from amms_lib.models import MODELS, build_model
from amms_lib.patches import (
    TRAIN_SETS,
    PatchDataset,
    StepBatchSampler,
    builtin_only,
    load_pairs,
    train_files,
)
from amms_lib.runtime import (
    ArgumentParser,
    FolderLock,
    atomic_write,
    cli,
    cpu_bf16,
    resolve_device,
    seed_everything,
    stale_temp_files,
)

OUT_FILES = ("last.pt", "best.pt", "ema.pt", "config.json", "metrics.jsonl")  # what a run writes
# what a resumed run must share with the run it continues, or it would not continue it
# (the validation too: best.pt is chosen by it, so one curve must score one set of pixels)
RESUME_FIXED = ("seed", "batch_size", "patch_size", "lr", "recipe", "warmup",
                "lr_step_epochs", "train_sets", "ema", "val_set", "val_images", "val_max_side")
SSIM_WINDOW = 11  # metrics.ssim's Gaussian window: a validation crop must hold it
# bounds that catch a typo before it reaches the allocator: 64 patches of 512 px per step is
# far above the paper's 16 x 192 (and any batch this suite trains)
MAX_WORKERS, MAX_PATCH, MAX_STEP_PIXELS = 64, 2048, 64 * 512 ** 2


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in ``config.json`` and in checkpoints."""

    model: str = "amms"
    scale: int = 2
    model_kwargs: dict = field(default_factory=dict)  # e.g. {"channels": 32, "non_local": False}
    epochs: int = 1000
    iters_per_epoch: int = 1000
    batch_size: int = 16
    patch_size: int = 192  # HR patch side
    lr: float = 1e-4
    recipe: str = "paper"  # paper: halve every lr_step_epochs; fast: warm-up + cosine
    lr_step_epochs: int = 200
    warmup: float = 0.02  # fast recipe: fraction of the run spent warming up
    val_every: int = 1000  # iterations between validations (0: only at the end)
    val_set: str = data.HELDOUT  # held out of the training sets; test sets never select
    val_images: int = 0  # 0: the whole set
    val_max_side: int = 0  # >0: validate on centre crops of at most this many LR pixels
    train_sets: tuple = TRAIN_SETS
    init_from: str = ""  # a checkpoint to start from: its tensors of matching shape
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on the CPU too (AVX512-BF16 / AMX processors)
    channels_last: bool = False  # channels-last memory format on the CPU (always on CUDA)
    compile: bool = False
    workers: int = 2
    threads: int = 0  # >0: torch CPU threads (torch.set_num_threads); 0: torch's default
    seed: int = 0
    out_dir: str = "runs/train/default"
    resume: bool = False
    overwrite: bool = False  # a new run may replace an earlier run's files in out_dir
    log_every: int = 10
    max_minutes: float = 0.0  # >0: the time budget (all resumes together) the schedule spans
    stop_minutes: float = 0.0  # >0: save and stop this process after so many minutes
    ema: float = 0.0  # >0: also average the weights, w_ema <- ema w_ema + (1 - ema) w, per step

    @property
    def total_steps(self) -> int:
        return self.epochs * self.iters_per_epoch

    def check(self) -> None:
        """One clear error for a setting that cannot train (before any data loads)."""
        if self.model not in MODELS:
            raise AmmsError(f"unknown model {self.model!r}; available: "
                            f"{', '.join(MODELS)}")
        data.check_scale(self.scale)
        positive = ("epochs", "iters_per_epoch", "batch_size", "patch_size", "scale",
                    "lr_step_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise AmmsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise AmmsError(f"lr must be a number in (0, 1], got {self.lr}")
        for name in ("workers", "threads", "val_every", "val_images", "val_max_side", "log_every"):
            if getattr(self, name) < 0:
                raise AmmsError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.threads > (os.cpu_count() or 1):
            raise AmmsError(f"threads {self.threads}: this machine has {os.cpu_count()} "
                            "cores; use at most that many (0: torch's default)")
        for name in ("max_minutes", "stop_minutes", "warmup"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise AmmsError(f"{name} must be 0 or more, got {value}")
        if self.workers > MAX_WORKERS:
            raise AmmsError(f"workers {self.workers}: at most {MAX_WORKERS} data-loading "
                            "processes (each holds the training images); 2-4 keep a GPU fed")
        pixels = self.batch_size * self.patch_size ** 2
        if self.patch_size > MAX_PATCH or pixels > MAX_STEP_PIXELS:
            raise AmmsError(f"a batch of {self.batch_size} patches of {self.patch_size} px is "
                            f"{pixels / 1e6:.1f} megapixels per step: at most "
                            f"{MAX_STEP_PIXELS / 1e6:.1f} (and patches of at most {MAX_PATCH} "
                            "px); lower --batch-size or --patch-size")
        if self.patch_size % self.scale:
            raise AmmsError(f"patch_size {self.patch_size} must be a multiple of scale "
                            f"{self.scale}")
        if not (math.isfinite(self.ema) and 0 <= self.ema < 1):
            raise AmmsError(f"ema is a decay per step in [0, 1), e.g. 0.999; got {self.ema}")
        if self.warmup >= 1:
            raise AmmsError(f"warmup is a fraction of the run, below 1; got {self.warmup}")
        if self.recipe not in ("paper", "fast"):
            raise AmmsError(f"recipe must be 'paper' or 'fast', got {self.recipe!r}")
        if self.resume and self.overwrite:
            raise AmmsError("--resume continues a run and --overwrite replaces it: "
                            "choose one")
        self._check_model_kwargs()
        self._check_validation()

    def _check_model_kwargs(self) -> None:
        """The options build this model (a bad width fails now, not after data loads)."""
        if not isinstance(self.model_kwargs, dict):
            raise AmmsError(f"model_kwargs must be a JSON object such as "
                            f"'{{\"channels\": 32}}', got {self.model_kwargs!r}")
        if "scale" in self.model_kwargs:
            raise AmmsError("model_kwargs must not set 'scale': use --scale")
        try:
            build_model(self.model, self.scale, **self.model_kwargs)
        except AmmsError as exc:
            raise AmmsError(f"model_kwargs {self.model_kwargs}: {exc}") from None
        except (TypeError, ValueError, RuntimeError) as exc:
            raise AmmsError(f"model_kwargs {self.model_kwargs} do not build a "
                            f"{self.model!r} ({str(exc).splitlines()[0][:120]})") from None

    def _check_validation(self) -> None:
        """The validation set exists and its crops hold the SSIM window after shaving."""
        least = 2 + math.ceil(SSIM_WINDOW / self.scale)  # (m - 2) * s >= 11 HR pixels
        if self.val_max_side and self.val_max_side < least:
            raise AmmsError(f"val_max_side {self.val_max_side} is too small for SSIM at "
                            f"x{self.scale}: use at least {least} LR pixels (or 0: whole "
                            "images)")
        if val_set_name(self) == data.BUILTIN:
            return  # the built-in images stand in (validation_pairs)
        if self.val_set != data.HELDOUT and data.canonical(self.val_set) not in data.list_sets():
            raise AmmsError(f"val_set {self.val_set!r} not found; use {data.HELDOUT!r} "
                            f"(held out of the training images) or one of "
                            f"{', '.join(data.list_sets())}")
        if self.val_set == data.HELDOUT:
            data.list_images(data.HELDOUT)  # one clear error if the split is missing


def lr_factor(cfg: TrainConfig, step: int, progress: float | None = None) -> float:
    """Multiplier of ``cfg.lr`` at ``step``; for the fast recipe under a time budget,
    ``progress`` is the fraction of the budget spent (0..1) and sets the schedule."""
    if cfg.recipe == "paper":
        return 0.5 ** (step // (cfg.lr_step_epochs * cfg.iters_per_epoch))
    if progress is None:  # laid over the steps
        warm = max(1, int(cfg.warmup * cfg.total_steps))
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg.total_steps - warm)))
    p = min(max(progress, 0.0), 1.0)  # laid over the time budget
    if p < cfg.warmup:
        return max(p / cfg.warmup, 0.01)
    return 0.5 * (1 + math.cos(math.pi * (p - cfg.warmup) / (1 - cfg.warmup)))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, lr_b: torch.Tensor,
               hr_b: torch.Tensor, amp: bool = False) -> float:
    """One optimisation step of section 4.2; returns the batch's L1 loss.

    lr_b (B, 3, p/s, p/s) -> model -> (B, 3, p, p), L1 against hr_b (the mean of |SR - HR|
    over every value), backward, Adam. ``amp``: the forward in bf16 autocast, the loss
    in float32.
    """
    with torch.autocast(lr_b.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.l1_loss(model(lr_b).float(), hr_b)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def val_set_name(cfg: TrainConfig) -> str:
    """The set validation scores: ``cfg.val_set``, or the built-in images when there is no
    data folder, or for a built-in demo run whose data folder lacks the training sets
    (so no held-out split)."""
    if data.data_root() is None:
        return data.BUILTIN
    if (cfg.val_set == data.HELDOUT and builtin_only(cfg.train_sets)
            and not (data.data_root() / "train").is_dir()):
        return data.BUILTIN
    return cfg.val_set


def use_autocast(cfg: TrainConfig, device: torch.device, say: bool = False) -> bool:
    """bf16 autocast for this run: on CUDA whenever ``cfg.amp``; on the CPU only with
    ``cfg.cpu_amp`` and a CPU that computes bf16 natively (``runtime.cpu_bf16``), since
    emulated bf16 is several times slower than float32 (``say``: print that once)."""
    if not cfg.amp or (device.type != "cuda" and not cfg.cpu_amp):
        return False
    if device.type == "cuda" or cpu_bf16():
        return True
    if say:
        print("--cpu-amp: this CPU has no native bf16 (AVX512-BF16 or AMX), where autocast "
              "runs several times slower than float32; training in float32", file=sys.stderr)
    return False


def precision_name(bf16: bool) -> str:
    """How records name what a run computed in (``use_autocast``'s answer)."""
    return "bfloat16 autocast" if bf16 else "float32"


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


def validation_pairs(cfg: TrainConfig) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    """(set name, [(LR, HR), ...]): exactly the pixels ``validate`` scores, so that a
    baseline (bicubic) can be scored on the same ones: the first ``val_images`` of the
    set (the built-in images without a data folder), as centre crops of at most
    ``val_max_side`` LR pixels when that is set."""
    name = val_set_name(cfg)
    pairs = []
    for image in data.list_images(name)[: cfg.val_images or None]:
        pair = data.load_pair(name, image, cfg.scale)
        lr_img, hr_img = pair.lr, pair.hr
        if cfg.val_max_side:  # quick runs: a centre crop, aligned in LR and HR
            (h, w), m, s = lr_img.shape[:2], cfg.val_max_side, cfg.scale
            y, x = max(0, (h - m) // 2), max(0, (w - m) // 2)
            lr_img = lr_img[y : y + m, x : x + m]
            hr_img = hr_img[y * s : (y + m) * s, x * s : (x + m) * s]
        pairs.append((lr_img, hr_img))
    return name, pairs


def validate(net, cfg: TrainConfig) -> dict:
    """Mean PSNR/SSIM (Y, shaved) of the current network on the validation set."""
    name, pairs = validation_pairs(cfg)
    was_training = net.training
    net.eval()
    scores = [evaluate(upscale(net, lr_img), hr_img, cfg.scale) for lr_img, hr_img in pairs]
    net.train(was_training)
    return {"val_set": name, "psnr": float(np.mean([s[0] for s in scores])),
            "ssim": float(np.mean([s[1] for s in scores]))}


def load_init_weights(net: torch.nn.Module, cfg: TrainConfig) -> str:
    """Load the tensors of ``cfg.init_from`` whose name and shape fit ``net``; says what
    stayed new. From x2 to x3 that is all but the sub-pixel conv; to x4 (two x2 stages) the
    x2 sub-pixel conv also fits, and starts the first stage."""
    ckpt = read_checkpoint(cfg.init_from)
    check_compatible(ckpt, cfg.init_from, cfg.model, None)
    if {**ckpt["model_kwargs"], "scale": 0} != {**cfg.model_kwargs, "scale": 0}:
        raise AmmsError(f"{cfg.init_from}: model options {ckpt['model_kwargs']} differ "
                        f"from this run's {cfg.model_kwargs}")
    own = net.state_dict()
    take = {k: v for k, v in ckpt["state_dict"].items()
            if k in own and own[k].shape == v.shape}
    load_weights(net, {**own, **take}, cfg.init_from)
    fresh = sorted({k.rsplit(".", 2)[0] for k in own if k not in take})
    return (f"{len(take)} of {len(own)} tensors (x{ckpt['scale']}, step "
            f"{ckpt.get('step', 'not recorded')}); new: {', '.join(fresh) or 'none'}")


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (so that all ranks stop together)."""
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_log(path: Path) -> list[dict]:
    """The records of a metrics log. A partial last line (the run was cut off while
    writing it: disk full, power loss) is skipped with one warning; a bad line before
    the end means the file is damaged."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise AmmsError(f"{path}: not a text file; the log is damaged: move it away "
                        "(a new run starts a fresh one)") from None
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with a step")
            records.append(record)
        except ValueError:  # json.JSONDecodeError included
            if i < len(lines) - 1:
                raise AmmsError(f"{path}: record {i + 1} is not a JSON object with a "
                                "step; the log is damaged: move it away (a new run "
                                "starts a fresh one)") from None
            print(f"warning: {path}: skipped a partial last line (the run was cut off "
                  "while writing it)", file=sys.stderr)
    return records


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so the log reads as one run."""
    if path.is_file():
        keep = [r for r in _read_log(path) if r["step"] <= step]
        lines = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write(path, lambda f: f.write(lines), "w")


def _remove_temp_files(out: Path) -> None:
    """Delete the temp files (``.last.pt.amms-tmp-<pid>.*``, ...) of atomic writes that a
    killed run left behind (each can be as large as a checkpoint): only those of this
    tool's files whose writer is gone (``runtime.stale_temp_files``)."""
    left = stale_temp_files(out, lambda name: name in OUT_FILES)
    for p in left:
        p.unlink(missing_ok=True)
    if left:
        print(f"removed {len(left)} temp file(s) left in {out} by an interrupted run",
              file=sys.stderr)


def read_metrics(out_dir) -> list[dict]:
    """The records of ``metrics.jsonl``."""
    return _read_log(Path(out_dir) / "metrics.jsonl")


def _run_dir_problem(cfg: TrainConfig, out: Path) -> str | None:
    """Why this run may not use ``out`` (an earlier run's results would be lost), or
    None. Read-only: every rank checks it before any rank writes."""
    if out.exists() and not out.is_dir():
        return f"--out-dir {out} is a file, not a folder; choose a folder"
    odd = [n for n in OUT_FILES if (out / n).exists() and not (out / n).is_file()]
    if odd:
        return (f"{out}: {', '.join(odd)} should be a file but is not (a folder?); move it "
                "away or choose another --out-dir")
    earlier = [n for n in OUT_FILES if (out / n).exists()]
    if cfg.resume and not (out / "last.pt").is_file() and earlier:
        return (f"{out}: --resume, but there is no last.pt to continue from (it holds "
                f"{', '.join(earlier)} of an earlier run); start over with --overwrite, "
                "or choose another --out-dir")
    if not cfg.resume and earlier and not cfg.overwrite:
        return (f"{out} holds an earlier run ({', '.join(earlier)}); continue it with "
                "--resume, start over with --overwrite (deletes those files), or choose "
                "another --out-dir")
    return None


def _open_run_dir(cfg: TrainConfig, out: Path, main_proc: bool, world: int,
                  device: torch.device) -> FolderLock | None:
    """Refuse a folder holding results this run would destroy, lock it against a
    second writer, and (``overwrite``) clear the earlier run. The lock is rank 0's."""
    problem = _run_dir_problem(cfg, out)
    lock = None
    if problem is None and main_proc:
        out.mkdir(parents=True, exist_ok=True)
        try:
            lock = FolderLock(out, "training")
        except AmmsError as exc:
            problem = str(exc)
    if _any_rank(problem is not None, world, device):
        if lock:
            lock.release()
        raise AmmsError(problem or "another rank refused the run folder (see its message)")
    if main_proc:
        _remove_temp_files(out)
        if cfg.resume and not (out / "last.pt").is_file():
            print(f"--resume: {out} holds no run yet; starting a new one", file=sys.stderr)
        if cfg.overwrite:
            for name in OUT_FILES:
                (out / name).unlink(missing_ok=True)
    return lock


def _resume(cfg: TrainConfig, net, opt, ema, last: Path) -> tuple[int, float, float]:
    """Load ``last.pt`` into ``net``, ``opt`` and ``ema`` (None: no average kept):
    (step, best PSNR, seconds spent)."""
    ckpt = read_checkpoint(last)
    check_compatible(ckpt, last, cfg.model, cfg.scale)
    if ckpt["model_kwargs"] != cfg.model_kwargs:
        raise AmmsError(f"{last}: trained with model options {ckpt['model_kwargs']}, "
                        f"not {cfg.model_kwargs}; use another out_dir")
    missing = [k for k in ("optimizer", "step", "rng") if k not in ckpt]
    if missing:
        raise AmmsError(f"{last}: holds weights only (no {', '.join(missing)}), so it cannot "
                        "be resumed; start from it with --init-from in a new --out-dir")
    old = ckpt.get("config") or {}
    for key in RESUME_FIXED:
        was, now = old.get(key), getattr(cfg, key)
        if key in old and (tuple(was) if isinstance(was, list) else was) != now:
            raise AmmsError(f"{last}: the run was trained with {key}={was!r}, not {now!r}; "
                            "a resumed run continues exactly only with the same settings: "
                            "pass the same value, or start over with --overwrite")
    load_weights(net, ckpt["state_dict"], last)
    opt.load_state_dict(ckpt["optimizer"])
    if ema is not None and "ema" in ckpt:  # else the average restarts from these weights
        ema.load_state_dict(ckpt["ema"])
    torch.set_rng_state(ckpt["rng"])
    return ckpt["step"], ckpt.get("best_psnr", -math.inf), float(ckpt.get("seconds", 0.0))


def _save(out: Path, net, opt, ema, cfg: TrainConfig, step: int, best: float, spent: float,
          metrics: dict, precision: str = "float32") -> None:
    """``last.pt``, ``best.pt`` when this validation is the best so far, and the averaged
    weights as ``ema.pt`` when ``ema`` keeps them (atomic, each)."""
    last = out / "last.pt"
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        kept = f"{last} is from before it" if last.is_file() else "nothing was saved"
        raise AmmsError(f"the weights became NaN or Inf by step {step}: training "
                        f"diverged; {kept}. Lower --lr")
    state = dict(name=cfg.model, scale=cfg.scale, model_kwargs=cfg.model_kwargs,
                 step=step, best_psnr=best, metrics=metrics, config=asdict(cfg),
                 optimizer=opt.state_dict(), seconds=spent, rng=torch.get_rng_state(),
                 precision=precision)  # what this process computed in, not what was asked
    try:
        save_checkpoint(last, net, **state, **({"ema": ema.state_dict()} if ema else {}))
        if "psnr" in metrics and metrics["psnr"] >= best:
            save_checkpoint(out / "best.pt", net, **state)
        if ema is not None:  # weights and record only: what a benchmark or register reads
            keep = {k: v for k, v in state.items() if k not in ("optimizer", "rng")}
            keep["metrics"] = {"val_set": metrics.get("val_set"), **{
                k[:-4]: v for k, v in metrics.items() if k.endswith("_ema")}}
            save_checkpoint(out / "ema.pt", ema.module, **keep)
    except OSError as exc:
        raise AmmsError(f"could not write a checkpoint to {out} ({exc.strerror or exc}); "
                        "the files already there are as they were: free space and "
                        "--resume") from None


def train(cfg: TrainConfig, stop_after: int | None = None) -> dict:
    """Run (or resume) training; returns the final metrics. ``stop_after`` ends this call
    after that many steps without saving, as if the process had been killed. The loop is
    longer than most functions here because DDP needs every rank to agree, each step, on
    the time spent and on when to stop; the step itself is ``train_step``."""
    cfg.check()  # the settings first: a typo is its own error, with or without data
    if not builtin_only(cfg.train_sets) and data.data_root() is None:
        raise AmmsError("no training data: set AMMS_DATA to a folder with train/T91 and "
                        "train/BSD200 (see the README), or pass --train-sets skimage to "
                        "train on the four built-in skimage images (a demo, not comparable)")
    files = train_files(cfg.train_sets)  # before any work: a missing set fails now
    rank, world = _dist_info()
    main_proc = rank == 0
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    out = Path(cfg.out_dir)
    lock = _open_run_dir(cfg, out, main_proc, world, device)
    try:
        return _train_locked(cfg, files, out, rank, world, device, stop_after)
    finally:
        if lock:
            lock.release()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _prepare(cfg: TrainConfig, out: Path, main_proc: bool, world: int, device):
    """The network (and its DDP/compiled wrapper), Adam, the weight average (or None),
    and where the run stands: (net, model, opt, ema, step, best PSNR, seconds spent),
    resumed or started anew."""
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net = build_model(cfg.model, cfg.scale, **cfg.model_kwargs).to(device)
    if device.type == "cuda" or cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    # the average's first update copies the weights (init_from or resumed ones included)
    ema = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
           if cfg.ema else None)
    step, best, spent = 0, -math.inf, 0.0  # spent: seconds of the time budget used
    if cfg.resume and (out / "last.pt").is_file():
        step, best, spent = _resume(cfg, net, opt, ema, out / "last.pt")
    elif cfg.init_from:
        kept = load_init_weights(net, cfg)
        if main_proc:
            print(f"started from {cfg.init_from}: {kept}", file=sys.stderr)
    if main_proc:  # the log first: a damaged one is refused before config.json changes
        if step == 0:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        _truncate_log(out / "metrics.jsonl", step)
        config = json.dumps(asdict(cfg), indent=2)
        atomic_write(out / "config.json", lambda f: f.write(config), "w")
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return net, model, opt, ema, step, best, spent


def _loader(cfg: TrainConfig, files, step: int, stop: int, spent: float, rank: int,
            world: int, device) -> DataLoader:
    """Batches of steps ``step .. stop-1`` of this rank, saying what feeds them."""
    hrs, lrs, _ = load_pairs(files, cfg.scale)
    dataset = PatchDataset(hrs, lrs, cfg.scale, cfg.patch_size, cfg.seed)
    if rank == 0:
        sets = "+".join(cfg.train_sets) if files else "built-in skimage images"
        budget = (f"a {cfg.max_minutes:g}-minute budget ({spent / 60:.1f} spent)"
                  if cfg.max_minutes else f"steps {step}..{stop}")
        print(f"training data: {sets}: {dataset.describe()}; {cfg.batch_size * world} "
              f"patches per step, {budget}", file=sys.stderr)
    sampler = StepBatchSampler(step, stop, cfg.batch_size, rank, world)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                      pin_memory=device.type == "cuda", persistent_workers=False)


def _train_locked(cfg, files, out: Path, rank: int, world: int, device, stop_after):
    """The loop of ``train``, once the run folder is ours. About 60 lines: each step sets
    the lr, runs ``train_step``, agrees with the other ranks on time and divergence, logs,
    and validates and saves on schedule; split further, those would share eight locals."""
    main_proc = rank == 0
    net, model, opt, ema, step, best, spent = _prepare(cfg, out, main_proc, world, device)
    log = out / "metrics.jsonl"
    channels_last = device.type == "cuda" or cfg.channels_last
    last_step = 2**62 if cfg.max_minutes else cfg.total_steps  # a budget ends by time alone
    stop = last_step if stop_after is None else min(last_step, step + stop_after)
    if cfg.max_minutes and spent >= 60 * cfg.max_minutes:
        if main_proc:
            print(f"{out / 'last.pt'}: its {cfg.max_minutes:g}-minute budget is spent (step "
                  f"{step}); raise --max-minutes to train on", file=sys.stderr)
        return {"step": step, "best_psnr": best, "seconds": round(spent, 1)}
    loader = _loader(cfg, files, step, stop, spent, rank, world, device)
    amp = use_autocast(cfg, device, say=main_proc)
    bar = tqdm(total=None if cfg.max_minutes else stop - step, desc=f"{cfg.model} x{cfg.scale}",
               **({} if main_proc else {"disable": True}))  # TQDM_DISABLE=1 works too
    t0, seen, val_seconds = time.perf_counter(), 0, 0.0  # validation is not training time
    spent0, metrics = spent, {}
    for lr_b, hr_b in loader:
        progress = spent / (60 * cfg.max_minutes) if cfg.max_minutes else None
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, step, progress)
        lr_b = lr_b.to(device, non_blocking=True)
        hr_b = hr_b.to(device, non_blocking=True)
        if channels_last:
            lr_b = lr_b.contiguous(memory_format=torch.channels_last)
        loss = train_step(model, opt, lr_b, hr_b, amp)
        if ema is not None:
            ema.update_parameters(net)
        step, seen = step + 1, seen + 1
        bar.update()
        # every rank must agree on the time spent (it sets the lr) and on when to stop
        wall = time.perf_counter() - t0
        now = torch.tensor([wall - val_seconds, wall, float(not math.isfinite(loss))],
                           dtype=torch.float64, device=device if world > 1 else "cpu")
        if world > 1:
            dist.all_reduce(now, op=dist.ReduceOp.MAX)
        trained, wall = float(now[0]), float(now[1])
        if now[2]:  # every rank stops together; nothing diverged is ever saved
            kept = (f"{out / 'last.pt'} is from before it" if (out / "last.pt").is_file()
                    else "nothing was saved")
            raise AmmsError(f"the loss became {loss} at step {step}: training diverged; "
                            f"{kept}. Lower --lr, or drop --compile (with bf16 and "
                            "channels-last on the CPU it gave NaN gradients in torch 2.13)")
        spent = spent0 + trained
        end = (step == last_step
               or (cfg.max_minutes and spent >= 60 * cfg.max_minutes)
               or (cfg.stop_minutes and wall >= 60 * cfg.stop_minutes))
        if main_proc and ((cfg.log_every and step % cfg.log_every == 0) or end):
            _log(log, {"step": step, "loss": loss, "lr": opt.param_groups[0]["lr"],
                       "it_s": seen / trained, "seconds": round(spent, 2)})
            bar.set_postfix(loss=f"{loss:.4f}")
        if (cfg.val_every and step % cfg.val_every == 0) or end:
            tv = time.perf_counter()
            if main_proc:
                metrics = validate(net, cfg) | ({f"{k}_ema": v for k, v in validate(
                    ema.module, cfg).items() if k != "val_set"} if ema else {})
                best = max(best, metrics["psnr"])
                _log(log, {"step": step, "seconds": round(spent, 2), **metrics})
                bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{metrics['psnr']:.2f}")
                _save(out, net, opt, ema, cfg, step, best, spent, metrics,  # with validations
                      precision_name(amp))
            if world > 1:
                dist.barrier()
            val_seconds += time.perf_counter() - tv
        if end:
            break
    bar.close()
    return {"step": step, "best_psnr": best, "seconds": round(spent, 1), **metrics}


def _parse(argv) -> TrainConfig:
    ap = ArgumentParser(prog="python -m amms_lib.train", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            ap.add_argument(name, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, dict):
            ap.add_argument(name, type=_json_object, default=value,
                            help='JSON, e.g. \'{"channels": 32}\'')
        elif isinstance(value, tuple):
            ap.add_argument(name, nargs="+", default=list(value))
        else:  # the annotation, not the default's type: max_minutes 0.5 is a float
            ap.add_argument(name, type={"int": int, "float": float, "str": str}[f.type],
                            default=value)
    args = vars(ap.parse_args(argv))
    args["train_sets"] = tuple(args["train_sets"])
    return TrainConfig(**args)


def _json_object(text: str) -> dict:
    """--model-kwargs: a JSON object (argparse turns the ValueError into one line)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {text}")
    return value


_json_object.__name__ = "JSON object"  # argparse names the type in its message


def main(argv=None) -> int:
    def run() -> int:
        print(json.dumps(train(_parse(argv))))
        return 0

    return cli(run, interrupted="training interrupted: last.pt holds the last checkpoint "
                                "(saved with each validation); --resume continues from it")


if __name__ == "__main__":
    raise SystemExit(main())
