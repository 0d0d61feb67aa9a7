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
for a run started from another checkpoint, which one and how many minutes that one had trained.

A checkpoint already registered under that name is scored on this run's validation set first,
and weights that score lower are refused unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amms_lib import data
from amms_lib.checkpoint import load_model, read_checkpoint, read_metadata, register
from amms_lib.errors import AmmsError
from amms_lib.runlog import read_metrics
from amms_lib.runtime import cli, relative
from amms_lib.train_config import TrainConfig, val_set_name
from amms_lib.validation import validate


def record(out: Path, args) -> tuple[Path, dict, dict]:
    """(the checkpoint to register, its run's config, the metadata fields of the run)."""
    src = out / ("ema.pt" if args.ema else "last.pt" if args.last else "best.pt")
    key = "psnr_ema" if args.ema else "psnr"  # the validations of the registered weights
    ckpt = read_checkpoint(src)
    try:
        cfg = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AmmsError(f"{out}/config.json: {exc}") from None
    if not isinstance(cfg, dict):
        raise AmmsError(f"{out}/config.json holds no run configuration (a JSON object); "
                        "is this a training run's folder?")
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
    scores = [r[key] for r in read_metrics(out) if key in r]
    if not (args.ema or args.last) and scores and \
            (ckpt.get("metrics") or {}).get("psnr") != max(scores):
        raise AmmsError(f"{src} scores {(ckpt.get('metrics') or {}).get('psnr')} dB but the "
                        f"run's best validation in metrics.jsonl is {max(scores):.4f} dB: it "
                        "was stopped between writes; finish it with --resume, then register")
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
    if cfg.get("init_from"):  # where it started: the path (repo-relative inside the
        # checkout), that checkpoint's steps and training minutes (its own record when the
        # starting point was never registered, e.g. a study's kept x2 weights)
        init_path = Path(cfg["init_from"]).resolve()
        if not init_path.is_file():
            raise AmmsError(f"the run started from {init_path} (its --init-from), which is not "
                            "there any more: its record needs that file; restore it first")
        init = read_checkpoint(init_path)
        meta = read_metadata(init_path.parent).get(init_path.name, {}) \
            if (init_path.parent / "metadata.json").is_file() else {}
        init_minutes = (meta["train_minutes"] if meta.get("train_minutes") is not None
                        else round(init["seconds"] / 60, 1) if "seconds" in init else None)
        extra.update(init_from=relative(init_path), init_step=init.get("step"),
                     init_minutes=init_minutes)
    return src, cfg, extra


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
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
