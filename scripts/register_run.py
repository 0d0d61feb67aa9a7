"""Register a training run's best checkpoint in checkpoints/, with its record.

    python scripts/register_run.py runs/train/amms_small_x2 --command "SCALE=2 ... train_cpu.sh" \
        [--data "T91+BSD200 without heldout"] [--notes "..."] [--selection "..."] \
        [--last | --ema] [--force] [--folder checkpoints] [--commit SHA]

Copies ``OUT/best.pt`` (``--last``: ``OUT/last.pt``, the final weights, for a schedule that
needs no selection; ``--ema``: ``OUT/ema.pt``, the final average of the weights of a run
trained with ``--ema``) as weights only to ``<folder>/<model>_x<scale>.pt`` and records in
``<folder>/metadata.json``: the command, commit, data, iterations, the validation score and
set and which of its pixels (``val_images``, ``val_max_side``: what ``train.validate``
scores), how the weights were selected, the validation curve ``[[training minutes, PSNR], ...]``,
the training minutes the registered checkpoint took (validation excluded), the device, and on
a CPU the torch threads and CPU-hours (hours of a 2-core machine: minutes / 60 * threads / 2);
for a run started from another checkpoint, which one (path and sha256) and how many steps and
minutes that one had trained, as the run recorded when it started (that file may have changed
since; a run from before that record is refused: what it started from is unknown).

A run still training (its process holds the folder) is refused, and so is a best.pt that is
not the best of its folder's curve: stopped between writes, or copied from another run.

A checkpoint already registered under that name is scored on this run's validation set first,
and weights that score lower are refused unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amms_lib import data
from amms_lib.checkpoint import load_model, read_checkpoint, register
from amms_lib.errors import AmmsError
from amms_lib.runlog import read_metrics, still_training
from amms_lib.runtime import ArgumentParser, cli, relative
from amms_lib.train_config import RESUME_FIXED, TrainConfig, val_set_name
from amms_lib.validation import validate


def record(out: Path, args) -> tuple[Path, dict, dict]:
    """(the checkpoint to register, its run's config, the metadata fields of the run)."""
    src = out / ("ema.pt" if args.ema else "last.pt" if args.last else "best.pt")
    key = "psnr_ema" if args.ema else "psnr"  # the validations of the registered weights
    if problem := still_training(out):
        raise AmmsError(problem)
    ckpt = read_checkpoint(src)
    try:
        cfg = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AmmsError(f"{out}/config.json: {exc}") from None
    if not isinstance(cfg, dict):
        raise AmmsError(f"{out}/config.json holds no run configuration (a JSON object); "
                        "is this a training run's folder?")
    asked = cfg  # as config.json says (check_best compares it with the checkpoint's)
    # the set it was validated on, as scored (without a data folder: the built-in images)
    cfg = {**cfg, "val_set": (ckpt.get("metrics") or {}).get("val_set") or cfg.get("val_set")}
    if ckpt.get("scale") != cfg.get("scale"):
        raise AmmsError(f"{src} is an x{ckpt.get('scale')} checkpoint but its folder's run is "
                        f"x{cfg.get('scale')}: its curve and settings would be another run's")
    if not (out / "metrics.jsonl").is_file():
        raise AmmsError(f"{out}/metrics.jsonl is missing: the run's curve and times are "
                        "needed to register it (amms_lib.checkpoint.register takes weights alone)")
    curve = [[round(r["seconds"] / 60, 2), round(r[key], 4)]
             for r in read_metrics(out) if key in r and "seconds" in r]
    if not (args.ema or args.last):
        check_best(src, ckpt, asked, [r for r in read_metrics(out) if "psnr" in r])
    if "seconds" not in ckpt or not curve:
        raise AmmsError(f"{out} has no training times (trained before they were logged); "
                        "register it with amms_lib.checkpoint.register")
    minutes = ckpt["seconds"] / 60
    how = (f"final average of the weights (decay {cfg.get('ema')} per step) after "
           f"{ckpt['step']} steps (no selection)" if args.ema else
           f"final weights after {ckpt['step']} steps (no selection)" if args.last else
           f"best of {len(curve)} validations on {cfg.get('val_set')}")
    extra = {"curve": curve, "train_minutes": round(minutes, 1), "device": args.device,
             "lr": cfg.get("lr"), **({"precision": ckpt["precision"]} if "precision" in ckpt
                                      else {}),
             "selection": args.selection or how, "val_set": cfg.get("val_set"),
             "val_images": cfg.get("val_images", 0), "val_max_side": cfg.get("val_max_side", 0)}
    if args.device == "cpu":
        threads = cfg.get("threads") or 2
        extra.update(threads=threads, cpu_hours=round(minutes / 60 * threads / 2, 3))
    if init := ckpt.get("init"):  # where it started, as the run recorded when it started
        # (checkpoint.origin_record): the file may have been resumed or replaced since
        extra.update(init_from=relative(Path(init["path"])), init_sha256=init["sha256"],
                     init_step=init["step"], init_minutes=init["minutes"])
    elif cfg.get("init_from"):  # trained before runs recorded it: the file may differ now
        raise AmmsError(f"{src} is from before runs recorded what they started from, and its "
                        f"--init-from {cfg['init_from']} may have been resumed or replaced "
                        "since: the steps and minutes it started with are unknown; register "
                        "it with amms_lib.checkpoint.register, giving them yourself")
    return src, cfg, extra


def check_best(src: Path, ckpt: dict, cfg: dict, vals: list[dict]) -> None:
    """``best.pt`` must be the best validation of its folder's curve (``vals``, the records
    of metrics.jsonl with a psnr): one error saying whether the run stopped between writes
    (best.pt behind its curve, or written after last.pt) or the file is another run's (other
    settings, or a validation the curve does not hold)."""
    if not vals:
        return
    psnr, step = (ckpt.get("metrics") or {}).get("psnr"), ckpt.get("step")
    best = max(r["psnr"] for r in vals)
    in_curve = any((r["step"], r["psnr"]) == (step, psnr) for r in vals)
    if in_curve and psnr == best:
        return
    last = src.parent / "last.pt"
    ahead = last.is_file() and isinstance(step, int) and step > read_checkpoint(last)["step"]
    was = ckpt.get("config") or {}

    def same(key) -> bool:  # json (config.json) has lists where checkpoints have tuples
        a, b = was.get(key), cfg.get(key)
        return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

    differ = [k for k in ("model", "model_kwargs", *RESUME_FIXED)
              if k in was and k in cfg and not same(k)]
    other = was.get("out_dir") not in (None, cfg.get("out_dir")) and \
        Path(was["out_dir"]).resolve() != src.parent.resolve()  # it names another folder
    said = (f"step {step}, {psnr:.2f} dB" if isinstance(psnr, float) else f"step {step}, "
            "no score")
    if differ or not (in_curve or (ahead and not other)):
        why = (f"it was trained with {differ[0]}={was[differ[0]]!r}, this run with "
               f"{cfg[differ[0]]!r}" if differ else
               f"its validation ({said}) is not in metrics.jsonl")
        raise AmmsError(f"{src} is not from this run's curve: {why}"
                        + (f" (it names the run in {was['out_dir']})" if other else "")
                        + "; put this run's own best.pt back, or register the run it came from")
    raise AmmsError(f"{src} ({said}) is not the run's best validation in metrics.jsonl "
                    f"({best:.2f} dB): it was stopped between writes; finish it with --resume, "
                    "then register")


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--command", required=True, help="the command that trained it")
    ap.add_argument("--data", default="",
                    help="what it trained on (default: the run's train_sets, which never "
                    "include the held-out split)")
    ap.add_argument("--notes", default="")
    ap.add_argument("--selection", default="", help="how the weights were chosen")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--last", action="store_true", help="register last.pt, not best.pt")
    which.add_argument("--ema", action="store_true",
                       help="register ema.pt (the final weight average), not best.pt")
    ap.add_argument("--device", default="cpu", help="what trained it: cpu, or e.g. 'H100'")
    ap.add_argument("--force", action="store_true",
                    help="replace a registered checkpoint that scores higher")
    ap.add_argument("--folder", type=Path, help="where to register (default checkpoints/)")
    ap.add_argument("--commit", default="",
                    help="the commit that trained it (default: the one the checkpoint records, "
                         "else this checkout's HEAD)")
    args = ap.parse_args(argv)

    def run() -> int:
        src, cfg, extra = record(Path(args.out_dir), args)
        fields = TrainConfig.__dataclass_fields__
        val = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in cfg.items() if k in fields})

        if cfg.get("val_set") and val_set_name(val) != cfg["val_set"]:  # e.g. no AMMS_DATA
            raise AmmsError(f"the run validated on {cfg['val_set']!r}, but here it would be "
                            f"scored on {val_set_name(val)!r}: the comparison with a registered "
                            "checkpoint needs the data folder it trained with (set AMMS_DATA)")

        def score(path: Path) -> float:  # both on this run's validation pixels
            return validate(load_model(path)[0], val)["psnr"]

        trained_on = args.data or ("+".join(cfg.get("train_sets") or ("T91", "BSD200"))
                                   + f" without {data.HELDOUT}")
        path = register(src, command=args.command, data=trained_on, notes=args.notes,
                        folder=args.folder, score=score,
                        commit=args.commit or read_checkpoint(src).get("commit", ""),
                        force=args.force, **extra)
        ckpt = read_checkpoint(src)
        print(f"registered {path} (step {ckpt['step']}, {cfg.get('val_set')} "
              f"{ckpt['metrics']['psnr']:.2f} dB, {extra['train_minutes']:.1f} training "
              f"minutes; {extra['selection']})")
        return 0

    return cli(run)


if __name__ == "__main__":
    sys.exit(main())
