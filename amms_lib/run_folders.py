"""What a notebook may train into without losing a run it did not mean to replace, and a
notebook study's results files.

Notebook 05 trains its run into ``runs/05_train/<run_name>`` (or a given ``out_dir``) and
two runs beside it, ``<run>_step_check`` and ``<run>_<recipe>``. ``check_run_dir`` says
(read-only) whether a folder may take a run; ``claim_run_dir`` checks again where the
run starts and first removes what would describe the replaced weights (``summary.json``)
and marks a run beside (``derived.json``: which run it belongs to), so that a rerun knows
its own. Every refusal is one line naming the notebook parameter that goes on.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from amms_lib import data
from amms_lib.errors import AmmsError
from amms_lib.runlog import OUT_FILES, run_dir_problem
from amms_lib.runtime import atomic_write, repo_root, resolve_device
from amms_lib.train_config import TrainConfig, precision_name, use_autocast

# The settings that make a run what it is: a rerun of other ones never replaces it unasked.
# What a user chooses, plus the precision it computes in (bf16 autocast or float32 give
# other weights: ``amp``, and on the CPU ``cpu_amp``) and the device type (a CPU's and a
# GPU's kernels sum in other orders). Not ``compile``: torch.compile fuses the same
# arithmetic (tests/test_cuda.py checks a compiled step against the eager one), so a
# compiled rerun is the same run, faster. The training sets too (they follow the data
# folder): the default run without one has its own folder (``run_folder``).
RUN_SETTINGS = ("model", "scale", "model_kwargs", "seed", "epochs", "lr", "iters_per_epoch",
                "batch_size", "patch_size", "recipe", "precision", "device", "train_sets")
UNKNOWN = "settings (no readable config.json)"  # a run whose settings cannot be compared
MARK = "derived.json"  # in a run beside: {"role": ..., "of": the run it belongs to}
SUMMARY = "summary.json"  # notebook 05's scores of the weights beside it
NOT_COMPARED = ("out_dir", "resume", "overwrite")  # where and how, not what is trained


def run_folder(notebook: str, run_name: str, out_dir: str = "") -> str:
    """Where a notebook trains: a given ``out_dir`` (``D/`` read as ``D``, so that the runs
    beside it are ``D_step_check``, not ``D/_step_check``), else ``runs/<notebook>/
    <run_name>``, where the default run without a data folder (built-in images) is
    ``default_builtin``: `make run` with and without data each keep their own run."""
    if out_dir:
        return os.path.normpath(out_dir)
    runs = os.path.normpath(repo_root() / "runs" / notebook)
    path = os.path.normpath(os.path.join(runs, str(run_name)))  # absolute: the user's path
    if not os.path.isabs(str(run_name)) and not path.startswith(runs + os.sep):
        raise AmmsError(f"run_name {run_name!r} names no folder inside runs/{notebook}/ "
                        "('', '.', 'x/..', '../..'); give a name, e.g. 'default' or 'mine'")
    if run_name == "default" and data.data_root() is None:
        return path + "_builtin"
    return path  # made when it trains


def run_settings(config: dict) -> dict:
    """``RUN_SETTINGS`` of a configuration (``config.json``, or ``asdict`` of one)."""
    dev = str(config.get("device", "auto"))
    dev = resolve_device("auto").type if dev == "auto" else dev.split(":")[0]
    bf16 = use_autocast(SimpleNamespace(amp=config.get("amp", True),
                                        cpu_amp=config.get("cpu_amp", False)),
                        torch.device(dev))
    plain = json.loads(json.dumps({k: config[k] for k in RUN_SETTINGS if k in config},
                                  default=str))  # tuples as lists, as config.json holds them
    return {**plain, "device": dev,
            "precision": precision_name(bf16)}


def other_settings(cfg: TrainConfig, earlier: dict) -> list[str]:
    """The ``RUN_SETTINGS`` in which ``cfg`` differs from an earlier run's config."""
    mine, theirs = run_settings(_plain(cfg)), run_settings(earlier)
    return sorted(k for k in RUN_SETTINGS if k in theirs and mine[k] != theirs[k])


def check_run_dir(cfg: TrainConfig, *, given: bool, retrain: bool = False, role: str = "",
                  of: str = "") -> TrainConfig:
    """``cfg`` as it may train into ``cfg.out_dir`` (``overwrite`` set), or one AmmsError
    line. Read-only. ``given``: the user chose the folder (``out_dir``); ``role`` (e.g.
    "step check"): a run trained beside the run in ``of``. A folder holding a run is used:

    - the notebook's run: with ``resume`` (train checks the settings); in its own folder,
      to start over with the same ``RUN_SETTINGS``, or with ``retrain``; a given out_dir is
      never replaced;
    - a run beside: when it holds this role's run of ``of`` (``MARK``) with the same
      ``RUN_SETTINGS`` (rerun, or resumed with ``resume``); in the notebook's own folders
      also with ``retrain``, which replaces it. A folder from before the mark counts as
      this role's run only when it holds exactly the run this would train (every setting
      of ``cfg`` but ``NOT_COMPARED``) and no ``SUMMARY`` (which only a notebook's own
      run writes)."""
    out = Path(cfg.out_dir)  # a summary or mark alone is a run's too (a user's, maybe)
    earlier = [n for n in (*OUT_FILES, SUMMARY, MARK) if (out / n).exists()]
    last = (out / "last.pt").is_file()
    start_over = replace(cfg, resume=False, overwrite=True)
    if not earlier:
        return replace(cfg, overwrite=not cfg.resume)
    config = _read_config(out)
    if not role:
        if cfg.resume and last:
            return replace(cfg, overwrite=False)
        if cfg.resume:
            raise AmmsError(f"{out}: resume=True, but it holds no last.pt to continue (only "
                            f"{', '.join(earlier)}): " + (
                                "pass another out_dir, or move it away" if given else
                                "pass resume=False to start over, or another run_name"))
        if given:
            raise AmmsError(f"{out} holds an earlier run ({', '.join(earlier)}), and a given "
                            "out_dir is never replaced: " + ("resume=True continues it, "
                                                             "or " if last else "")
                            + "pass another out_dir")
        other = other_settings(cfg, config) if config is not None else [UNKNOWN]
        if other and not retrain:
            raise AmmsError(f"{out} holds a run with other {', '.join(other)}: pass another "
                            "run_name to keep it, resume=True to continue it, or "
                            "retrain=True to replace it")
        return start_over
    mark = _read_json(out / MARK)
    if mark is not None:
        ours = isinstance(mark, dict) and mark.get("role") == role
    else:  # a folder from before the mark: exactly this run, and no notebook run's summary
        ours = (config is not None and not (out / SUMMARY).exists()
                and all(config.get(k) == v for k, v in _plain(cfg).items()
                        if k not in NOT_COMPARED))
    other = ((other_settings(cfg, config) if config is not None else [UNKNOWN]) if ours
             else [])
    if ours and not other:  # rerun, or continued where it has a last.pt
        return replace(cfg, resume=cfg.resume and last, overwrite=not (cfg.resume and last))
    if retrain and not given:
        return start_over
    why = (f"this notebook's {role} of {of}, with other {', '.join(other)}" if ours else
           f"not this notebook's {role} of {of}")
    then = ("move it away or pass another out_dir (nothing beside a given out_dir is "
            "replaced)" if given else "pass another run_name to keep it, or retrain=True "
            "to replace it")
    raise AmmsError(f"{out} holds an earlier run, {why}: {then}")


def claim_run_dir(cfg: TrainConfig, *, given: bool, retrain: bool = False, role: str = "",
                  of: str = "") -> TrainConfig:
    """``check_run_dir``, then ready the folder for the run about to start: the
    ``SUMMARY`` of the weights it replaces or continues goes first (never left beside other
    weights), and a run beside is marked as this role's run of ``of`` (``MARK``), the
    notebook's own run unmarked."""
    cfg = check_run_dir(cfg, given=given, retrain=retrain, role=role, of=of)
    out = Path(cfg.out_dir)
    problem = run_dir_problem(cfg, out)  # a file where a folder should be, ...
    if problem:
        raise AmmsError(problem)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).unlink(missing_ok=True)
    if role:
        mark = json.dumps({"role": role, "of": str(of)})
        atomic_write(out / MARK, lambda f: f.write(mark), "w")
    else:
        (out / MARK).unlink(missing_ok=True)
    return cfg


def claim_table_folder(folder, notebook: str, own: set[str]) -> Path:
    """A notebook's folder of result tables (07's ``table.json`` and per-method JSON),
    made and marked (``MARK``) as ``notebook``'s. A folder that holds other files is
    refused, so that a ``run_name`` naming a user's folder replaces nothing; an unmarked
    one holding only ``own`` file names (an earlier run of the notebook) is taken over."""
    folder = Path(folder)
    mark = _read_json(folder / MARK)
    held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    ours = (isinstance(mark, dict) and mark.get("role") == notebook) or not (set(held) - own)
    if not ours:
        shown = ", ".join(held[:3]) + (" ..." if len(held) > 3 else "")
        raise AmmsError(f"{folder} holds files this notebook did not write ({shown}): pass "
                        "another run_name (a new or empty folder)")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / MARK, lambda f: f.write(json.dumps({"role": notebook})), "w")
    return folder


def write_results(folder: Path, record: dict, runs: list[dict]) -> None:
    """A notebook study's ``results.json`` (``record`` and its ``runs``, written atomically)
    and ``results.csv`` (one row per run). Rewritten as runs start and end, so that it
    never lists a run whose weights are gone or about to be replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**record, "runs": runs}, indent=2, default=str)
    atomic_write(folder / "results.json", lambda f: f.write(text), "w")

    def rows(f):
        writer = csv.DictWriter(f, fieldnames=list(runs[0]) if runs else [])
        writer.writeheader()
        writer.writerows(runs)
    atomic_write(folder / "results.csv", rows, "w")


def _plain(cfg: TrainConfig) -> dict:
    """``cfg`` as its ``config.json`` reads back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _read_config(out: Path) -> dict | None:
    config = _read_json(out / "config.json")
    return config if isinstance(config, dict) else None
