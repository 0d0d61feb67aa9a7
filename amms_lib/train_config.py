"""What a training run depends on: ``TrainConfig`` and its checks (one clear error per
setting that cannot train, before any data loads), the learning-rate schedule
(``lr_factor``), the validation set a run scores and the precision it computes in."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import torch

from amms_lib import data
from amms_lib.errors import AmmsError
from amms_lib.models import MODELS, build_model
from amms_lib.patches import TRAIN_SETS, builtin_only
from amms_lib.runtime import cpu_bf16

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

    def check(self, with_data: bool = True) -> None:
        """One clear error for a setting that cannot train (before any data loads);
        ``with_data=False``: the settings alone, not whether the validation set exists."""
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
        if with_data:
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
            if problems := data.incomplete(data.HELDOUT):  # a part would pass for the whole
                raise AmmsError(f"the held-out split is not whole ({'; '.join(problems)}): "
                                "its scores would not compare with other runs'; fetch "
                                "train/T91 and train/BSD200 (python -m amms_lib.data fetch), "
                                "or pass --val-set with a set of your own held out of training")
        elif problems := data.incomplete(data.canonical(self.val_set), [self.scale]):
            raise AmmsError(f"val_set {self.val_set}: not the standard set "
                            f"({'; '.join(problems)}); its scores would pass for the set's: "
                            "re-fetch it, or validate on the held-out split")


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


def val_images_used(cfg: TrainConfig, asked: int | None = None) -> int:
    """How many validation images ``asked`` (default ``cfg.val_images``) scores: 0 (the
    whole set) stays 0; more than ``val_set_name(cfg)`` holds is all of them, as a number."""
    asked = cfg.val_images if asked is None else asked
    return min(asked, len(data.list_images(val_set_name(cfg)))) if asked else 0


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
