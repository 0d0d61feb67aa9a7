"""Checkpoints: weights plus what is needed to rebuild and trust them.

A checkpoint is one ``torch.save`` file holding ``format``, ``model`` (a name from
``amms_lib.models``), ``scale``, ``model_kwargs``, ``state_dict`` and, for training,
``step``, ``optimizer``, ``scheduler``, ``rng`` and ``metrics``. Files are written
atomically (temp file, fsync, rename), so a crash never leaves half a checkpoint,
and read with ``weights_only=True``, so loading one runs no code from it.
"""
from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import torch
from torch import nn

from amms_lib.errors import AmmsError
from amms_lib.models import build_model
from amms_lib.runtime import FolderLock, atomic_save, atomic_write, file_sha256

FORMAT = "amms-sr-checkpoint/1"


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
    """Load a checkpoint's dictionary and check its fields' types; one clear error for a
    missing, corrupt or hand-made bad file (garbage makes torch's unpickler raise
    almost anything: IndexError, KeyError, ...)."""
    path = Path(path)
    if path.is_dir():
        raise AmmsError(f"{path} is a folder; pass the checkpoint file (a .pt) inside it")
    if not path.is_file():
        raise AmmsError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 103" on garbage
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  any failure here means a bad file
        why = type(exc).__name__ + (f": {str(exc).strip().splitlines()[0][:120]}"
                                    if str(exc).strip() else "")
        raise AmmsError(f"{path}: corrupt or not an AMMS-SR checkpoint ({why}); "
                        "pass a .pt file written by amms_lib (train or save_checkpoint)") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise AmmsError(f"{path}: not an AMMS-SR checkpoint (no '{FORMAT}' marker)")
    if problem := _bad_field(ckpt):
        raise AmmsError(f"{path}: damaged AMMS-SR checkpoint: {problem}; re-save it with "
                        "amms_lib.checkpoint.save_checkpoint")
    return ckpt


def _bad_field(ckpt: dict) -> str | None:
    """What is wrong with the fields every checkpoint needs, or None."""
    for key, kind, what in (("model", str, "a name"), ("scale", int, "an integer"),
                            ("model_kwargs", dict, "a dict"), ("state_dict", dict, "a dict")):
        if key not in ckpt:
            return f"no '{key}' field"
        if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
            return f"'{key}' is {type(ckpt[key]).__name__} {ckpt[key]!r:.40}, not {what}"
    if not all(isinstance(k, str) for k in ckpt["model_kwargs"]):
        return "'model_kwargs' has keys that are not names"
    odd = [k for k, v in ckpt["state_dict"].items() if not torch.is_tensor(v)]
    if odd:
        return f"'state_dict' holds non-tensors ({', '.join(map(str, odd[:3]))})"
    sparse = [k for k, v in ckpt["state_dict"].items() if v.layout != torch.strided]
    return f"'state_dict' holds sparse tensors ({', '.join(sparse[:3])})" if sparse else None


def check_compatible(ckpt: dict, path, model: str | None = None,
                     scale: int | None = None) -> None:
    """Fail clearly when a checkpoint is for another architecture or scale."""
    if model is not None and ckpt["model"] != model:
        raise AmmsError(f"{path}: holds '{ckpt['model']}' weights, not '{model}'")
    if scale is not None and ckpt["scale"] != scale:
        raise AmmsError(f"{path}: trained for x{ckpt['scale']}, not x{scale}; "
                        f"use a x{scale} checkpoint")


def load_weights(net: nn.Module, state_dict: dict, path) -> None:
    """``load_state_dict`` with a one-line error when the shapes or dtypes do not fit
    (``load_state_dict`` would quietly cast int64 weights into float parameters). Keys of a
    ``torch.compile``d model (``_orig_mod.`` prefix) load into a plain one."""
    state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
    bad = [k for k, v in state_dict.items() if v.is_floating_point()
           and not torch.isfinite(v).all()]
    if bad:
        raise AmmsError(f"{path}: NaN or Inf in the weights ({', '.join(bad[:3])}); "
                        "the training run diverged: use an earlier checkpoint")
    own = net.state_dict()
    cast = [f"{k} is {v.dtype}" for k, v in state_dict.items()
            if k in own and own[k].is_floating_point() and not v.is_floating_point()]
    if cast:
        raise AmmsError(f"{path}: weights are not floating point ({', '.join(cast[:2])}); "
                        "re-save them as float with save_checkpoint")
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise AmmsError(f"{path}: weights do not fit the architecture ({detail[:160]})") \
            from None


def load_model(path, model: str | None = None, scale: int | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint was trained as and load its weights (eval mode).
    A registered file (in ``checkpoints/`` and its metadata) must match its sha256."""
    check_registered_hash(path)
    ckpt = read_checkpoint(path)
    check_compatible(ckpt, path, model, scale)
    try:
        net = build_model(ckpt["model"], ckpt["scale"], **ckpt["model_kwargs"])
    except AmmsError as exc:
        raise AmmsError(f"{path}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a negative channel count
        raise AmmsError(f"{path}: model_kwargs {ckpt['model_kwargs']} do not build a "
                        f"'{ckpt['model']}' ({str(exc).splitlines()[0][:120]})") from None
    load_weights(net, ckpt["state_dict"], path)
    return net.to(device).eval(), ckpt


# -- the checkpoints/ folder: trained weights the suite ships or finds ---------------------

def checkpoints_dir() -> Path:
    """``checkpoints/`` in the repository: ``<model>_x<scale>.pt`` + ``metadata.json``."""
    from amms_lib.runtime import repo_root

    return repo_root() / "checkpoints"


def read_metadata(folder: Path | None = None) -> dict:
    """``{file name: {model, scale, command, commit, data, iterations, metrics, sha256}}``;
    one clear error when the file is not that (bad bytes, a list, a null entry)."""
    path = Path(folder or checkpoints_dir()) / "metadata.json"
    if not path.is_file():
        return {}
    import json

    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmmsError(f"{path}: not valid JSON ({str(exc)[:80]}); restore it from git") \
            from None
    if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
        raise AmmsError(f"{path}: not an object of one record per checkpoint; restore it "
                        "from git")
    return meta


def register(src, *, command: str, data: str, folder: Path | None = None,
             commit: str = "", notes: str = "", score=None, force: bool = False,
             **extra) -> Path:
    """Copy a training checkpoint into ``checkpoints/`` (weights only) and record it;
    ``extra`` (e.g. ``cpu_hours``, ``device``, ``init_from``) goes into the metadata as is.

    Nothing registered is replaced by worse weights: with ``score`` (path -> PSNR on one
    validation set), a checkpoint already registered under the same name is scored too,
    and a lower new score is refused unless ``force``; except a checkpoint whose record
    says it trained on the held-out images (``heldout_note``), which the held-out split
    cannot judge, so it is replaced (and the caller told). The metadata is read and checked
    before anything is written, and the new weights are renamed into place only after the
    metadata holding their hash is written: a failure leaves both as they were. One
    registration per folder at a time (``FolderLock``, waiting its turn): the metadata is
    read, checked and rewritten under the lock, so two at once cannot lose a record.
    """
    folder = Path(folder or checkpoints_dir())
    ckpt = read_checkpoint(src)
    if folder.exists() and not folder.is_dir():
        raise AmmsError(f"--folder {folder} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmmsError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    with FolderLock(folder, "registration", wait=True):
        return _register(src, ckpt, folder, command, data, commit, notes, score, force,
                         extra)


def _register(src, ckpt, folder, command, data, commit, notes, score, force, extra) -> Path:
    import json
    import os
    import sys

    name = f"{ckpt['model']}_x{ckpt['scale']}.pt"
    meta = read_metadata(folder)  # a damaged record fails here, before any write
    if name in meta and not (folder / name).exists() and not force:
        raise AmmsError(f"metadata.json records {name} but the file is not in {folder}, so "
                        "nothing can say whether the new weights are better: restore it, or "
                        "pass --force to replace the record")
    if (folder / name).exists() and name not in meta and not force:
        raise AmmsError(f"{folder / name} is there but metadata.json has no record of it, so "
                        "nothing can say whether the new weights are better: move it away, or "
                        "pass --force to replace it")
    unfair = name in meta and "heldout_note" in meta[name]
    if unfair:
        print(f"{name}: the registered weights trained on the held-out images "
              "(heldout_note), so no validation score can rank them: replacing them")
    if score is not None and not force and not unfair and (folder / name).is_file() \
            and name in meta:
        check_registered_hash(folder / name, folder)  # score the recorded weights only
        old, new = score(folder / name), score(Path(src))
        if new < old:
            raise AmmsError(f"{src} scores {new:.2f} dB on the validation set, below the "
                            f"registered {name} ({old:.2f} dB): nothing replaced; pass "
                            "--force to replace it anyway")
    keep = {k: ckpt[k] for k in ("format", "model", "scale", "model_kwargs", "state_dict",
                                 "torch", "saved_at", "step", "metrics", "config")
            if k in ckpt}  # no optimizer state: shipped checkpoints stay small
    from amms_lib.runtime import code_commit, repo_root

    if not commit:  # this library's checkout (not the folder's: it may be another repo)
        commit = code_commit(repo_root())
    if commit == "unknown":
        print(f"warning: {repo_root()} is not a git checkout and no commit was given: the "
              "record says commit 'unknown' (pass --commit SHA)", file=sys.stderr)
    staged = folder / f".{name}.staged-{os.getpid()}"
    try:
        atomic_save(keep, staged)
        meta[name] = {"model": ckpt["model"], "scale": ckpt["scale"], "command": command,
                      "commit": commit, "data": data, "iterations": ckpt.get("step"),
                      "metrics": ckpt.get("metrics", {}), "model_kwargs": ckpt["model_kwargs"],
                      "notes": notes, **extra, "sha256": file_sha256(staged)}
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        atomic_write(folder / "metadata.json", lambda f: f.write(text), mode="w")
        os.replace(staged, folder / name)
    finally:
        staged.unlink(missing_ok=True)
    return folder / name


def check_registered_hash(path, folder: Path | None = None) -> None:
    """A checkpoint that sits in the checkpoints folder and is named in its metadata must
    have the recorded sha256: a changed or damaged shipped file is refused, wherever it is
    loaded from (benchmark, upscaler, explorer). Other files are not checked."""
    path, folder = Path(path), Path(folder or checkpoints_dir())
    if not path.is_file() or path.resolve().parent != folder.resolve():
        return
    meta = read_metadata(folder).get(path.resolve().name)  # a link: the file it names
    if meta is not None and meta.get("sha256") != file_sha256(path):
        raise AmmsError(f"{path}: contents do not match metadata.json (sha256); the file "
                        "was changed or is damaged: restore it from git")


def origin_record(path) -> dict:
    """What a run starts from, recorded when it starts (the file may change later): the
    file (absolute path), its sha256, steps and training minutes (those of its registry
    record when it is a registered checkpoint, else its own ``seconds``; None when neither
    says). A registered file must match its recorded sha256."""
    path = Path(path).resolve()
    check_registered_hash(path, path.parent)
    ckpt = read_checkpoint(path)
    meta = read_metadata(path.parent).get(path.name, {})
    minutes = (meta["train_minutes"] if meta.get("train_minutes") is not None
               else round(ckpt["seconds"] / 60, 1) if "seconds" in ckpt else None)
    return {"path": str(path), "sha256": file_sha256(path), "step": ckpt.get("step"),
            "minutes": minutes}


def find_checkpoint(model: str, scale: int, folder: Path | None = None) -> Path | None:
    """The registered checkpoint for ``model`` at ``scale``, or None when there is none."""
    folder = Path(folder or checkpoints_dir())
    name = f"{model}_x{scale}.pt"
    return folder / name if (folder / name).is_file() and name in read_metadata(folder) else None


def load_registered(model: str, scale: int, device="cpu", folder: Path | None = None):
    """Load ``checkpoints/<model>_x<scale>.pt`` after checking it against its metadata."""
    folder = Path(folder or checkpoints_dir())
    path = find_checkpoint(model, scale, folder)
    if path is None:
        raise AmmsError(f"no registered checkpoint for {model} x{scale} in {folder}; train "
                        "one (scripts/train_gpu.sh) or pass --checkpoint PATH")
    meta = read_metadata(folder)[path.name]
    check_registered_hash(path, folder)
    if (meta.get("model"), meta.get("scale")) != (model, scale):
        raise AmmsError(f"{path}: metadata says {meta.get('model')} x{meta.get('scale')}, "
                        f"not {model} x{scale}")
    net, ckpt = load_model(path, model=model, scale=scale, device=device)
    return net, {**ckpt, "metadata": meta}
