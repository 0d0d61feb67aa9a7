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

This module is the step (``train_step``), the loop, resume and the command line; what a run
depends on is ``amms_lib.train_config``, its folder's files ``amms_lib.runlog``, what it
scores ``amms_lib.validation``, and quick mode's settings and a run's cost ``amms_lib.quick``.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from amms_lib import data
from amms_lib.checkpoint import (
    check_compatible,
    load_weights,
    origin_record,
    read_checkpoint,
    save_checkpoint,
)
from amms_lib.errors import AmmsError
from amms_lib.models import build_model
from amms_lib.patches import (
    PatchDataset,
    StepBatchSampler,
    builtin_only,
    load_pairs,
    train_files,
)
from amms_lib.runlog import (
    OUT_FILES,
    append_log,
    remove_temp_files,
    run_dir_problem,
    truncate_log,
)
from amms_lib.runtime import (
    ArgumentParser,
    FolderLock,
    atomic_write,
    cli,
    code_commit,
    progress_off,
    repo_root,
    resolve_device,
    seed_everything,
)
from amms_lib.train_config import (
    RESUME_FIXED,
    TrainConfig,
    lr_factor,
    precision_name,
    use_autocast,
    val_images_used,
    val_set_name,
)
from amms_lib.validation import pairs_id, validate, validation_pairs


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


def _run_origin(cfg: TrainConfig, out: Path) -> TrainConfig:
    """Where the run starts from, as its records will say. A resumed run keeps the origin it
    started from (another ``--init-from`` would not change its weights, so it is refused);
    ``--overwrite`` cannot start from a file it is about to delete."""
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        was = ((read_checkpoint(last).get("config") or {}).get("init_from")) or ""
        if cfg.init_from and Path(cfg.init_from).resolve() != Path(was or ".").resolve():
            raise AmmsError(f"--resume continues the run in {out}, which started from "
                            f"{was or 'scratch'}: --init-from {cfg.init_from} would not change "
                            "its weights; drop --init-from, or start over with --overwrite")
        return replace(cfg, init_from=was)
    init = Path(cfg.init_from or ".").resolve()
    if cfg.overwrite and cfg.init_from and init.parent == out.resolve() and init.name in OUT_FILES:
        raise AmmsError(f"--init-from {cfg.init_from} is a file of the run --overwrite would "
                        f"delete; copy it out of {out} first, or choose another --out-dir")
    return cfg


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


def _open_run_dir(cfg: TrainConfig, out: Path, main_proc: bool, world: int,
                  device: torch.device) -> FolderLock | None:
    """Refuse a folder holding results this run would destroy, lock it against a
    second writer, and (``overwrite``) clear the earlier run. The lock is rank 0's."""
    problem = run_dir_problem(cfg, out)
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
        remove_temp_files(out)
        if cfg.resume and not (out / "last.pt").is_file():
            print(f"--resume: {out} holds no run yet; starting a new one", file=sys.stderr)
        if cfg.overwrite:
            for name in OUT_FILES:
                (out / name).unlink(missing_ok=True)
    return lock


def _resume(cfg: TrainConfig, net, opt, ema, last: Path,
            device: torch.device) -> tuple[int, float, float, dict]:
    """Load ``last.pt`` into ``net``, ``opt`` and ``ema`` (None: no average kept):
    (step, best PSNR, seconds spent, the run's ``origin_record`` or None)."""
    ckpt = read_checkpoint(last)
    now = precision_name(use_autocast(cfg, device))
    if ckpt.get("precision", now) != now:  # a record of one precision for weights of two
        raise AmmsError(f"{last}: the run computed in {ckpt['precision']}, this one would in "
                        f"{now} (--cpu-amp/--amp, or the device); resume with the same "
                        "precision, or start over with --overwrite")
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
        if key == "val_images" and was:  # as used (a number above the set's size: all)
            was = val_images_used(cfg, was)
        if key in old and (tuple(was) if isinstance(was, list) else was) != now:
            raise AmmsError(f"{last}: the run was trained with {key}={was!r}, not {now!r}; "
                            "a resumed run continues exactly only with the same settings: "
                            "pass the same value, or start over with --overwrite")
    if ckpt.get("commit"):
        _EARLIER_COMMITS[str(last.parent)] = ckpt["commit"]
    done = ckpt.get("metrics") or {}
    was, now = done.get("val_set"), val_set_name(cfg)
    if was and was != now:  # e.g. resumed without AMMS_DATA: the built-in images stand in
        raise AmmsError(f"{last}: the run validated on {was!r}, this one would on {now!r} "
                        f"(data folder: {data.data_root() or 'none'}); resume with the data "
                        "folder it started with, or start over with --overwrite")
    if done.get("val_pixels") and done["val_pixels"] != pairs_id(validation_pairs(cfg)[1]):
        raise AmmsError(f"{last}: the run validated on other {was} images than this data "
                        f"folder's ({data.data_root()}): edited or another copy; resume with "
                        "the data folder it started with, or start over with --overwrite")
    load_weights(net, ckpt["state_dict"], last)
    opt.load_state_dict(ckpt["optimizer"])
    if ema is not None and "ema" in ckpt:  # else the average restarts from these weights
        ema.load_state_dict(ckpt["ema"])
    torch.set_rng_state(ckpt["rng"])
    return (ckpt["step"], ckpt.get("best_psnr", -math.inf), float(ckpt.get("seconds", 0.0)),
            ckpt.get("init"))


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    return code_commit(repo_root())


_EARLIER_COMMITS: dict[str, str] = {}  # out_dir -> the commit(s) a resumed run trained with


def _commits(out: Path) -> str:
    """The code that trained this run: ``a`` or, across resumes, ``a, then b``."""
    now, before = _commit(), _EARLIER_COMMITS.get(str(out))
    return now if not before or before.rsplit(", then ", 1)[-1] == now \
        else f"{before}, then {now}"


def _save(out: Path, net, opt, ema, cfg: TrainConfig, step: int, best: float, spent: float,
          metrics: dict, precision: str = "float32", origin: dict | None = None) -> None:
    """``last.pt``, ``best.pt`` when this validation is the best so far, and the averaged
    weights as ``ema.pt`` when ``ema`` keeps them (atomic, each); ``origin``: what the run
    started from (``origin_record``), recorded as ``init``."""
    last = out / "last.pt"
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        kept = f"{last} is from before it" if last.is_file() else "nothing was saved"
        raise AmmsError(f"the weights became NaN or Inf by step {step}: training "
                        f"diverged; {kept}. Lower --lr")
    state = dict(name=cfg.model, scale=cfg.scale, model_kwargs=cfg.model_kwargs,
                 step=step, best_psnr=best, metrics=metrics, config=asdict(cfg),
                 optimizer=opt.state_dict(), seconds=spent, rng=torch.get_rng_state(),
                 precision=precision,  # what this process computed in, not what was asked
                 commit=_commits(out),  # the code that trained it (registration reads it)
                 **({"init": origin} if origin else {}))
    try:
        # best.pt first: a stop between the two writes leaves last.pt behind it, and the
        # resumed run redoes the step and rewrites best.pt; the other order had left a
        # best.pt older than the best that last.pt records, never to be replaced
        if "psnr" in metrics and metrics["psnr"] >= best:
            save_checkpoint(out / "best.pt", net, **state)
        save_checkpoint(last, net, **state, **({"ema": ema.state_dict()} if ema else {}))
        if ema is not None:  # weights and record only: what a benchmark or register reads
            keep = {k: v for k, v in state.items() if k not in ("optimizer", "rng")}
            keep["metrics"] = {"val_set": metrics.get("val_set"),
                               "val_pixels": metrics.get("val_pixels"), **{
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
    cfg.check(with_data=False)  # the settings first: a typo is its own error, data or not
    if not builtin_only(cfg.train_sets) and data.data_root() is None:
        raise AmmsError("no training data: set AMMS_DATA to a folder with train/T91 and "
                        "train/BSD200 (see the README), or pass --train-sets skimage to "
                        "train on the four built-in skimage images (a demo, not comparable)")
    files = train_files(cfg.train_sets)  # before any work: a missing set fails now
    cfg.check()  # the validation set too, now that the training sets are there
    rank, world = _dist_info()
    main_proc = rank == 0
    if (used := val_images_used(cfg)) != cfg.val_images:  # records say what was scored
        if main_proc:
            print(f"--val-images {cfg.val_images}: {val_set_name(cfg)} holds only {used} "
                  f"images; validating on all {used} (recorded as {used})", file=sys.stderr)
        cfg = replace(cfg, val_images=used)
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    out = Path(cfg.out_dir)
    cfg = _run_origin(cfg, out)
    if cfg.init_from and not (cfg.resume and (out / "last.pt").is_file()):
        # a bad --init-from fails here, before --overwrite clears the earlier run
        load_init_weights(build_model(cfg.model, cfg.scale, **cfg.model_kwargs), cfg)
    # the data before the folder is opened: a refused image (a held-out copy, a damaged
    # file) or Ctrl-C while the LR cache builds finds the earlier run still there (not yet
    # cleared by --overwrite) and leaves no config.json in a new folder
    pairs = load_pairs(files, cfg.scale) if run_dir_problem(cfg, out) is None else None
    lock = _open_run_dir(cfg, out, main_proc, world, device)  # a problem: refused here
    _OPENED.add(str(out))
    try:
        return _train_locked(cfg, files, pairs, out, rank, world, device, stop_after)
    finally:
        if lock:
            lock.release()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _prepare(cfg: TrainConfig, out: Path, main_proc: bool, world: int, device):
    """The network (and its DDP/compiled wrapper), Adam, the weight average (or None),
    and where the run stands: (net, model, opt, ema, step, best PSNR, seconds spent,
    origin), resumed or started anew. ``origin`` (``origin_record`` of ``--init-from``,
    taken as the weights load, or the one a resumed run recorded; None from scratch or for
    a run begun before runs recorded it) goes into ``config.json`` as ``init``."""
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
    step, best, spent, origin = 0, -math.inf, 0.0, None  # spent: seconds of the budget used
    _EARLIER_COMMITS.pop(str(out), None)  # a new run's, or set again by _resume
    if cfg.resume and (out / "last.pt").is_file():
        step, best, spent, origin = _resume(cfg, net, opt, ema, out / "last.pt", device)
    elif cfg.init_from:
        origin = origin_record(cfg.init_from)
        kept = load_init_weights(net, cfg)
        if main_proc:
            print(f"started from {cfg.init_from}: {kept}", file=sys.stderr)
    if main_proc:  # the log first: a damaged one is refused before config.json changes
        if step == 0:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        truncate_log(out / "metrics.jsonl", step)
        config = json.dumps({**asdict(cfg), **({"init": origin} if origin else {})}, indent=2)
        atomic_write(out / "config.json", lambda f: f.write(config), "w")
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return net, model, opt, ema, step, best, spent, origin


def _loader(cfg: TrainConfig, files, pairs, step: int, stop: int, spent: float, rank: int,
            world: int, device) -> DataLoader:
    """Batches of steps ``step .. stop-1`` of this rank (``pairs``: ``load_pairs`` of
    ``files``), saying what feeds them."""
    hrs, lrs, _ = pairs
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


def _train_locked(cfg, files, pairs, out: Path, rank: int, world: int, device, stop_after):
    """The loop of ``train``, once the run folder is ours. About 60 lines: each step sets
    the lr, runs ``train_step``, agrees with the other ranks on time and divergence, logs,
    and validates and saves on schedule; split further, those would share eight locals."""
    main_proc = rank == 0
    net, model, opt, ema, step, best, spent, origin = _prepare(cfg, out, main_proc, world,
                                                               device)
    log = out / "metrics.jsonl"
    channels_last = device.type == "cuda" or cfg.channels_last
    last_step = 2**62 if cfg.max_minutes else cfg.total_steps  # a budget ends by time alone
    stop = last_step if stop_after is None else min(last_step, step + stop_after)
    if cfg.max_minutes and spent >= 60 * cfg.max_minutes:
        if main_proc:
            print(f"{out / 'last.pt'}: its {cfg.max_minutes:g}-minute budget is spent (step "
                  f"{step}); raise --max-minutes to train on", file=sys.stderr)
        return {"step": step, "best_psnr": best, "seconds": round(spent, 1)}
    loader = _loader(cfg, files, pairs, step, stop, spent, rank, world, device)
    amp = use_autocast(cfg, device, say=main_proc)
    bar = tqdm(total=None if cfg.max_minutes else stop - step, desc=f"{cfg.model} x{cfg.scale}",
               disable=progress_off() or not main_proc)
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
            append_log(log, {"step": step, "loss": loss, "lr": opt.param_groups[0]["lr"],
                       "it_s": seen / trained, "seconds": round(spent, 2)})
            bar.set_postfix(loss=f"{loss:.4f}")
        if (cfg.val_every and step % cfg.val_every == 0) or end:
            tv = time.perf_counter()
            if main_proc:
                metrics = validate(net, cfg) | ({f"{k}_ema": v for k, v in validate(
                    ema.module, cfg).items() if k not in ("val_set", "val_pixels")} if ema else {})
                best = max(best, metrics["psnr"])
                append_log(log, {"step": step, "seconds": round(spent, 2), **metrics})
                bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{metrics['psnr']:.2f}")
                _save(out, net, opt, ema, cfg, step, best, spent, metrics,  # with validations
                      precision_name(amp), origin)
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


_OPENED: set[str] = set()  # run folders this process opened (and --overwrite cleared)


def _interrupted(out: Path) -> str:
    """What a Ctrl-C left in ``out``, and how to go on from it."""
    if str(out) not in _OPENED:  # stopped while the data loaded: the folder is untouched
        return (f"training interrupted before it began (while the training data loaded): "
                f"{out} is as it was; run the same command again")
    if (out / "last.pt").is_file():
        return (f"training interrupted: {out / 'last.pt'} holds the last checkpoint (saved "
                "with each validation); --resume continues from it")
    left = [n for n in OUT_FILES if (out / n).exists()]
    return ("training interrupted before its first checkpoint: there is no last.pt in "
            f"{out} to resume from; " + (f"start again with --overwrite (it holds only "
                                        f"{', '.join(left)})" if left else
                                        "run the same command again"))


def main(argv=None) -> int:
    def run() -> int:
        cfg = _parse(argv)
        try:
            print(json.dumps(train(cfg)))
        except KeyboardInterrupt:
            print(_interrupted(Path(cfg.out_dir)), file=sys.stderr)
            return 130
        return 0

    return cli(run, interrupted="training interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
