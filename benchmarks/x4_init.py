"""Does x4 pay for starting from the x2 body? Two twins, judged on the held-out split.

    python benchmarks/x4_init.py [--config c48m2] [--init checkpoints/amms_x2.pt]
        [--steps 1000] [--json benchmarks/results/x4_init_vs_scratch.json]

The CPU studies start x3 and x4 from the x2 weights (``--init-from``: the body kept, the
upsampler new). This measures that choice on training images only: two single-thread runs
side by side (one per core, so both see the same load), same configuration, recipe (fast:
warm-up, cosine to 0 over ``--steps``), data, seed and lr as the size study's x4, one from
the x2 body and one from scratch. Curves on the first 5 held-out images (10 points); the
final weights (no selection) of both on the whole held-out split (``data.HELDOUT``, 15
images) with bicubic beside them. No test set is read.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amms_lib import data
from amms_lib.benchmark import bicubic_upscaler, evaluate_set
from amms_lib.checkpoint import read_checkpoint
from amms_lib.runtime import ArgumentParser, atomic_write, cli, cpu_name, json_arg, repo_root
from amms_lib.studies import (
    SIZE_CONFIGS,
    bicubic_validation,
    check_study_args,
    heldout_curve,
    precision,
    read_results,
    require_data,
    run_training,
    score_sets,
    stamp,
    train_command,
)

SCALE = 4
RUNS = repo_root() / "runs" / "x4_init"


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="c48m2", choices=list(SIZE_CONFIGS))
    ap.add_argument("--init", type=Path, default=repo_root() / "checkpoints" / "amms_x2.pt")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-4)  # the size study's
    ap.add_argument("--json",
                    default=repo_root() / "benchmarks" / "results" / "x4_init_vs_scratch.json")
    args = ap.parse_args()
    check_study_args(args)
    args.json = json_arg(args.json, "x4_init_vs_scratch")  # "" (an unset variable) refused
    old = read_results(args.json, budget={"steps": args.steps, "config": args.config,
                                          "lr": args.lr})  # before any work
    require_data("x4_init.py")
    runs = {"from_x2_body": args.init, "from_scratch": None}
    outs = {k: RUNS / f"{args.config}_{k}_{args.steps}" for k in runs}
    cmds = {k: train_command("amms", SCALE, SIZE_CONFIGS[args.config], args.lr, args.steps, outs[k],
                             init_from=runs[k], val_every=max(1, args.steps // 10))
            for k in runs}
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(runs, pool.map(
            lambda k: run_training(cmds[k], outs[k], args.steps, float("inf")), runs)))
    if not all(done.values()):
        sys.exit("x4_init: a run did not finish (see its train.log); run again to resume")
    record = {"what": __doc__.split("\n")[0], "config": args.config,
              "model_kwargs": SIZE_CONFIGS[args.config], "scale": SCALE, "steps": args.steps,
              "lr": args.lr, "init": str(args.init.relative_to(repo_root())
                                         if args.init.is_absolute() else args.init),
              "command": "python benchmarks/x4_init.py " + " ".join(sys.argv[1:]),
              "cpu": cpu_name(),
              "bicubic": {"heldout5": bicubic_validation(SCALE),
                          "heldout": {k: v for k, v in evaluate_set(
                              bicubic_upscaler(SCALE), data.HELDOUT, SCALE).items()
                              if k in ("psnr", "ssim")}}}
    for k, out in outs.items():
        ckpt = read_checkpoint(out / "last.pt")
        t = time.perf_counter()
        record[k] = {"train_minutes": round(ckpt["seconds"] / 60, 2),
                     "precision": precision(ckpt),
                     "steps_heldout5_psnr": heldout_curve(out),
                     "heldout": score_sets(out / "last.pt", SCALE, [data.HELDOUT])[0][data.HELDOUT],
                     "score_seconds": round(time.perf_counter() - t, 1)}
    record["earlier"] = old.get("earlier", old if "from_scratch" in old else None)
    record = stamp({**record, "invocations": old.get("invocations", [])}, threads=1,
                   precision=record["from_x2_body"]["precision"])
    atomic_write(args.json, lambda f: f.write(json.dumps(record, indent=1) + "\n"), "w")
    gap = record["from_x2_body"]["heldout"]["psnr"] - record["from_scratch"]["heldout"]["psnr"]
    print(f"x4 {args.config}, {args.steps} steps each: held-out (15 images) "
          f"from the x2 body {record['from_x2_body']['heldout']['psnr']:.3f} dB, "
          f"from scratch {record['from_scratch']['heldout']['psnr']:.3f} dB "
          f"({gap:+.3f}), bicubic {record['bicubic']['heldout']['psnr']:.3f} dB")


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C and an AmmsError: one line
