"""Which AMMS size buys the most Set5 PSNR per CPU-minute? Train each for the same minutes.

    python benchmarks/config_study.py [--minutes 8] [--scale 2] [--configs c32m2 c48m2 c48m4]

Each configuration trains from scratch with the same recipe, patches, seed and time budget
(the fast recipe laid over the budget, so each ends its schedule when the time is up;
bf16 autocast and channels-last, the fastest safe CPU setting: see train_speed.py),
validating on the whole of Set5 every ``--val-every`` steps (validation time is not
counted). Runs go to ``runs/study/<name>/``; the table is printed and, with ``--json``,
saved with every validation point (PSNR against training minutes) for notebook 04.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from amms_lib.models import build_model
from amms_lib.profile import count_parameters
from amms_lib.runtime import atomic_write, repo_root
from amms_lib.train import read_metrics

CONFIGS = {  # name -> AMMSConfig overrides (paper-sized default: 64 channels, 4 x AMMS, M=2)
    "c32m2": dict(channels=32, n_amms=2, n_am=1),
    "c48m2": dict(channels=48, n_amms=2, n_am=1),
    "c48m4": dict(channels=48, n_amms=4, n_am=1),
}


def run(name: str, args) -> dict:
    out = repo_root() / "runs" / "study" / name
    cmd = [sys.executable, "-m", "amms_lib.train", "--model", "amms", "--scale", str(args.scale),
           "--model-kwargs", json.dumps(CONFIGS[name]), "--recipe", "fast", "--lr", str(args.lr),
           "--max-minutes", str(args.minutes), "--batch-size", "16",
           "--patch-size", str(32 * args.scale), "--val-every", str(args.val_every),
           "--workers", "0", "--cpu-amp", "--channels-last", "--no-resume",
           "--out-dir", str(out)]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={"TQDM_DISABLE": "1", **os.environ})
    log = read_metrics(out)
    curve = [(r["seconds"] / 60, r["psnr"]) for r in log if "psnr" in r]
    rates = [r["it_s"] for r in log if "it_s" in r]
    params = count_parameters(build_model("amms", args.scale, **CONFIGS[name]))
    return {"name": name, "config": CONFIGS[name], "params": params, "it_s": rates[-1],
            "steps": log[-1]["step"], "curve": curve, "final_psnr": curve[-1][1]}


def run_bicubic(scale: int) -> float:
    """Set5 PSNR of MATLAB bicubic at ``scale``: the line every curve must clear."""
    from amms_lib.benchmark import bicubic_upscaler, evaluate_set

    return evaluate_set(bicubic_upscaler(scale), "Set5", scale)["psnr"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--val-every", type=int, default=300)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--json", help="save the table and curves here")
    args = ap.parse_args()
    rows = [run(name, args) for name in args.configs]
    print(f"\n{args.minutes:g} training minutes each, x{args.scale}, Set5 PSNR (Y, shaved)")
    print(f"{'config':<8}{'params':>10}{'it/s':>7}{'steps':>7}{'Set5 dB':>9}")
    for r in rows:
        print(f"{r['name']:<8}{r['params']:>10,}{r['it_s']:>7.2f}{r['steps']:>7}"
              f"{r['final_psnr']:>9.2f}")
    bicubic = run_bicubic(args.scale)
    print(f"{'bicubic':<8}{'':>10}{'':>7}{'':>7}{bicubic:>9.2f}")
    if args.json:
        record = {"minutes": args.minutes, "scale": args.scale, "lr": args.lr,
                  "bicubic_set5": bicubic,
                  "command": "python benchmarks/config_study.py " + " ".join(sys.argv[1:]),
                  "rows": rows}
        atomic_write(Path(args.json), lambda f: f.write(json.dumps(record, indent=1)), "w")


if __name__ == "__main__":
    main()
