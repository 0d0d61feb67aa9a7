"""Checkpoints: weights plus what is needed to rebuild and trust them.

A checkpoint is one ``torch.save`` file holding ``format``, ``model`` (a name from
``amms_lib.models``), ``scale``, ``model_kwargs``, ``state_dict`` and, for training,
``step``, ``optimizer``, ``scheduler``, ``rng`` and ``metrics``. Files are written
atomically (temp file, fsync, rename), so a crash never leaves half a checkpoint,
and read with ``weights_only=True``, so loading one runs no code from it.
"""
from __future__ import annotations

import datetime as dt
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from amms_lib.errors import AmmsError
from amms_lib.models import build_model

FORMAT = "amms-sr-checkpoint/1"


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path, model: nn.Module, *, name: str, scale: int,
                    model_kwargs: dict | None = None, **fields) -> Path:
    """Write a checkpoint; ``fields`` (step, optimizer, metrics, ...) are stored as is."""
    net = getattr(model, "module", model)  # unwrap DistributedDataParallel
    net = getattr(net, "_orig_mod", net)  # unwrap torch.compile
    payload = {
        "format": FORMAT, "model": name, "scale": int(scale),
        "model_kwargs": dict(model_kwargs or {}), "state_dict": net.state_dict(),
        "torch": str(torch.__version__),
        "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
    return atomic_save(payload, path)


def read_checkpoint(path) -> dict:
    """Load a checkpoint's dictionary; one clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise AmmsError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AmmsError(f"{path}: corrupt or not an AMMS-SR checkpoint ({first[:120]})") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise AmmsError(f"{path}: not an AMMS-SR checkpoint (no '{FORMAT}' marker)")
    return ckpt


def check_compatible(ckpt: dict, path, model: str | None = None,
                     scale: int | None = None) -> None:
    """Fail clearly when a checkpoint is for another architecture or scale."""
    if model is not None and ckpt["model"] != model:
        raise AmmsError(f"{path}: holds '{ckpt['model']}' weights, not '{model}'")
    if scale is not None and ckpt["scale"] != scale:
        raise AmmsError(f"{path}: trained for x{ckpt['scale']}, not x{scale}; "
                        f"use a x{scale} checkpoint")


def load_weights(net: nn.Module, state_dict: dict, path) -> None:
    """``load_state_dict`` with a one-line error when the shapes do not fit."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point()
           and not torch.isfinite(v).all()]
    if bad:
        raise AmmsError(f"{path}: NaN or Inf in the weights ({', '.join(bad[:3])}); "
                        "the training run diverged: use an earlier checkpoint")
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise AmmsError(f"{path}: weights do not fit the architecture ({detail[:160]})") \
            from None


def load_model(path, model: str | None = None, scale: int | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint was trained as and load its weights (eval mode)."""
    ckpt = read_checkpoint(path)
    check_compatible(ckpt, path, model, scale)
    net = build_model(ckpt["model"], ckpt["scale"], **ckpt["model_kwargs"])
    load_weights(net, ckpt["state_dict"], path)
    return net.to(device).eval(), ckpt
