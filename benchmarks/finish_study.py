"""Does a late finish pay on 2 CPU cores? The shipped x2's weights trained on, for equal
one-core minutes, with its own 64-px patches or with 128-px ones. Resumable.

    python benchmarks/finish_study.py [--minutes 25] [--lr 1e-4] [--jobs 2] [--register]
        [--stop-minutes N] [--json benchmarks/results/finish_study_cpu.json]
    python benchmarks/finish_study.py --markdown [RESULTS.json]   # the README's table

Larger patches late in training are a common finish in SR (EDSR, RCAN and SwinIR train on
96-192 px HR patches; the config study's runs saw 64 px, so a non-local block never saw
more than 32 x 32 LR positions at once). Each variant starts from the config study's x2
winner (``config_study_cpu_x2/c48m2.pt``, the shipped ``amms_x2``) with a fresh Adam and a
second fast-recipe cycle (warm-up, cosine to 0, peak ``--lr``) over the steps its measured
seconds per step buys in ``--minutes`` of one core; both run side by side, one thread each,
bf16 autocast where native (as the config study), the same seed, hence the same patch
positions in the same order (the larger patch holds the smaller one's pixels and more).

Nothing is chosen on a test set: the start and each finished run are scored on the whole
held-out split (``data.HELDOUT``, 15 images, per image); the highest wins, and
``--register`` offers it to ``scripts/register_run.py`` only if it is a new run (which
also refuses weights below the registered ones on the first 5 held-out images); the
record says what was shipped (``shipped``). Paired per-image differences (variant
minus start, 128 minus 64) get a 95% t interval over the 15 images: it measures how
consistently the images move, within one training seed, not the spread between seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amms_lib import data
from amms_lib.runtime import ArgumentParser, atomic_write, cpu_name, repo_root
from amms_lib.stats import paired_interval
from amms_lib.studies import (
    SIZE_CONFIGS,
    beside,
    check_study_args,
    drop_state,
    heldout_curve,
    markdown_or_main,
    precision,
    read_results,
    register_run_dir,
    run_training,
    score_sets,
    seconds_per_step,
    stamp,
    train_command,
)

RESULTS = repo_root() / "benchmarks" / "results"
START = beside(RESULTS / "config_study_cpu.json", "x2") / "c48m2.pt"
CONFIG = "c48m2"
VARIANTS = {"p64": 64, "p128": 128}  # name -> HR patch side
TEST_SETS = ("Set5", "Set14", "BSD100")
RUNS = repo_root() / "runs" / "finish_study"
POINTS = 5  # validations per run (5 held-out images each): the curves


def command(name: str, steps: int, out: Path, lr: float, points: int = POINTS) -> list[str]:
    return train_command("amms", 2, SIZE_CONFIGS[CONFIG], lr, steps, out, init_from=START,
                         val_every=max(1, steps // points), patch=VARIANTS[name])


def scores(weights: Path) -> dict:
    """Whole held-out split per image (the choice) and the test sets (reported only)."""
    held, _, _ = score_sets(weights, 2, [data.HELDOUT], per_image=True)
    return {"heldout": held[data.HELDOUT], "sets": score_sets(weights, 2, TEST_SETS)[0]}


def paired(a: dict, b: dict) -> dict:
    """Per-image held-out PSNR of ``a`` minus ``b``: mean, sd, 95% t interval (images)."""
    pa, pb = a["heldout"]["per_image"], b["heldout"]["per_image"]
    return paired_interval([pa[k][0] - pb[k][0] for k in pa])


def stage(name: str, steps: int, args, deadline: float, record: dict, save) -> bool:
    """Train (or resume) one variant to its last step and score it; False if stopped."""
    from amms_lib.checkpoint import read_checkpoint

    if name in record["runs"]:
        return True
    out, kept = RUNS / name, beside(args.json, "state") / name
    if not run_training(command(name, steps, out, args.lr), out, steps, deadline, kept):
        return False
    ckpt = read_checkpoint(out / "last.pt")
    result = {"patch": VARIANTS[name], "steps": ckpt["step"],
              "train_minutes": round(ckpt["seconds"] / 60, 2),
              "core_hours": round(ckpt["seconds"] / 3600, 3), "precision": precision(ckpt),
              "curve": {"steps_heldout5_psnr": heldout_curve(out)}, **scores(out / "last.pt")}
    record["runs"][name] = result
    save()
    drop_state(kept)
    print(f"{name}: {result['steps']} steps, {result['train_minutes']:.1f} min; held-out "
          f"{result['heldout']['psnr']:.3f}; " + ", ".join(
              f"{s} {v['psnr']:.2f}" for s, v in result["sets"].items()), flush=True)
    return True


def analyse(record: dict) -> dict:
    """The paired effects and the choice, from the finished runs."""
    runs, start = record["runs"], record["start"]
    effects = {f"{n} - start": paired(r, start) for n, r in runs.items()}
    if set(VARIANTS) <= set(runs):
        effects["p128 - p64"] = paired(runs["p128"], runs["p64"])
    psnr = {"start": start["heldout"]["psnr"], **{n: r["heldout"]["psnr"] for n, r in runs.items()}}
    best = max(psnr, key=psnr.get)
    return {"effects": effects, "winner": best, "why": "highest whole held-out PSNR ("
            + ", ".join(f"{n} {v:.3f}" for n, v in psnr.items()) + " dB)"}


def markdown(record: dict) -> str:
    """The README's table: budget, held-out and test-set PSNR per run, and the effects."""
    head = "| run | patch | steps | one-core min | held-out dB | " + " | ".join(
        f"{s} dB" for s in TEST_SETS) + " |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    rows = {"start (shipped)": record["start"], **record["runs"]}
    for name, r in rows.items():
        budget = (f"{r['steps']:,} | {r['train_minutes']:.1f}" if "steps" in r
                  else "its run's | its run's")  # the start: the config study's budget
        lines.append(f"| {name} | {r.get('patch', 64)} | {budget} | {r['heldout']['psnr']:.3f} | "
                     + " | ".join(f"{r['sets'][s]['psnr']:.2f}" for s in TEST_SETS) + " |")
    lines.append("")
    for key, e in record.get("analysis", {}).get("effects", {}).items():
        lo, hi = e["ci95"]
        verdict = "resolved" if e["resolved"] else "not resolved"
        lines.append(f"- {key}: {e['mean']:+.3f} dB [{lo:+.3f}, {hi:+.3f}] over "
                     f"{e['n']} held-out images ({verdict})")
    return "\n".join(lines)


def main() -> None:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=25.0,
                    help="training budget per variant, in minutes of one core")
    ap.add_argument("--lr", type=float, default=1e-4, help="peak lr of the second cycle")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--stop-minutes", type=float, default=0.0)
    ap.add_argument("--register", action="store_true")
    ap.add_argument("--json", default=str(RESULTS / "finish_study_cpu.json"))
    args = ap.parse_args()
    check_study_args(args)
    path = Path(args.json)
    record = stamp(read_results(path, budget={k: getattr(args, k) for k in ("minutes", "lr")})
                   or {"runs": {}}, threads=1)
    deadline = time.time() + 60 * args.stop_minutes if args.stop_minutes else float("inf")
    costs = record.get("seconds_per_step") or seconds_per_step(
        {n: (lambda out, k, n=n: command(n, k, out, args.lr, points=1)) for n in VARIANTS})
    steps = {n: max(1, round(60 * args.minutes / costs[n])) for n in VARIANTS}
    print("seconds per step (1 thread): " + ", ".join(f"{n} {c:.3f}" for n, c in costs.items())
          + "; steps: " + ", ".join(f"{n} {k}" for n, k in steps.items()), flush=True)
    if "start" not in record:  # its test sets as the config study scored the same file
        held, _, _ = score_sets(START, 2, [data.HELDOUT], per_image=True)
        study = json.loads((RESULTS / "config_study_cpu.json").read_text())
        record["start"] = {"heldout": held[data.HELDOUT],
                           "sets": study["runs"][f"{CONFIG}_x2"]["sets"]}
    lock = threading.Lock()  # the stages run in threads: one writer at a time

    def save():
        with lock:
            _save()

    def _save():
        record.update(command="python benchmarks/finish_study.py " + " ".join(sys.argv[1:]),
                      minutes=args.minutes, lr=args.lr, start_weights=str(START.relative_to(
                          repo_root())), cpu=cpu_name(), seconds_per_step=costs, steps=steps)
        atomic_write(path, lambda f: f.write(json.dumps(record, indent=1)), "w")

    save()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda n: stage(n, steps[n], args, deadline, record, save),
                             VARIANTS))
    if not all(done):
        return
    record["analysis"] = result = analyse(record)
    save()
    print(markdown(record), f"\nwinner: {result['winner']}: {result['why']}", sep="\n")
    if args.register and result["winner"] != "start" and "shipped" not in record:
        selection = ("a second cosine cycle from the config study's x2 winner; chosen against "
                     "the start and the other finish on the whole held-out split")
        ok = register_run_dir(RUNS / result["winner"], "last",
                              "python benchmarks/finish_study.py " + " ".join(sys.argv[1:]),
                              selection)
        # the registry also refuses weights below the registered ones on its own
        # validation images (the first 5 held-out): say which way it went
        record["shipped"] = result["winner"] if ok else "none: refused by register_run.py"
        save()


if __name__ == "__main__":
    markdown_or_main(markdown, main, "finish_study_cpu.json")
