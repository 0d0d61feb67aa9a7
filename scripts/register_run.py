"""Register a training run's best checkpoint in checkpoints/, with its record.

    python scripts/register_run.py runs/train/amms_small_x2 --command "SCALE=2 ... train_cpu.sh" \
        [--data "T91+BSD200"] [--notes "..."]

Copies ``OUT/best.pt`` (weights only) to ``checkpoints/<model>_x<scale>.pt`` and records in
``checkpoints/metadata.json``: the command, commit, data, iterations, best Set5 PSNR, the
validation curve ``[[training minutes, PSNR], ...]``, the training minutes the registered
checkpoint took (validation excluded), the device, and on a CPU the torch threads and CPU-hours
(hours of a 2-core machine: minutes / 60 * threads / 2); for a run started from another
checkpoint, which one and how many minutes that one had trained.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amms_lib.checkpoint import read_checkpoint, read_metadata, register
from amms_lib.errors import AmmsError
from amms_lib.train import read_metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--command", required=True, help="the command that trained it")
    ap.add_argument("--data", default="T91+BSD200")
    ap.add_argument("--notes", default="")
    ap.add_argument("--device", default="cpu", help="what trained it: cpu, or e.g. 'H100'")
    args = ap.parse_args()
    out = Path(args.out_dir)
    try:
        best = read_checkpoint(out / "best.pt")
        cfg = json.loads((out / "config.json").read_text())
        log = read_metrics(out)
    except (AmmsError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    curve = [[round(r["seconds"] / 60, 2), round(r["psnr"], 4)]
             for r in log if "psnr" in r and "seconds" in r]
    if "seconds" not in best or not curve:
        print(f"error: {out} has no training times (trained before they were logged); "
              "register it with amms_lib.checkpoint.register", file=sys.stderr)
        return 2
    minutes = best["seconds"] / 60
    extra = {"curve": curve, "train_minutes": round(minutes, 1), "device": args.device}
    if args.device == "cpu":
        threads = cfg.get("threads") or 2
        extra.update(threads=threads, cpu_hours=round(minutes / 60 * threads / 2, 3))
    if cfg.get("init_from"):
        src = read_checkpoint(cfg["init_from"])
        meta = read_metadata().get(Path(cfg["init_from"]).name, {})
        extra.update(init_from=cfg["init_from"], init_step=src.get("step"),
                     init_minutes=meta.get("train_minutes"))
    path = register(out / "best.pt", command=args.command, data=args.data, notes=args.notes,
                    **extra)
    print(f"registered {path} (step {best['step']}, Set5 {best['metrics']['psnr']:.2f} dB, "
          f"{minutes:.1f} training minutes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
