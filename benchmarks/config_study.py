"""Which compact AMMS is the strongest that 1-2 hours of 2 CPU cores can train? Resumable.

    python benchmarks/config_study.py [--hours 1.5] [--configs c32m2 c48m2] [--ema 0.999]
        [--lr 5e-4] [--jobs 2] [--stop-minutes 150] [--register]
        [--json benchmarks/results/config_study_cpu.json]
    python benchmarks/config_study.py --markdown [RESULTS.json]   # the README's table

Each configuration trains x2 from scratch for the same budget: ``--hours`` of the 2-core
machine, as single-thread runs side by side (so 2 x hours of one core each), turned into
steps by each configuration's measured seconds per step (``amms_lib.studies``); the fast recipe
(warm-up, cosine to 0) over those steps, batches of 16 HR patches of 64 x 64, seed 0, on
T91 + BSD200 without the held-out images. Every run also keeps an exponential moving average
of its weights (``--ema``, ``train --ema``): validated beside the weights at the same steps,
so the two are compared on the same run for free.

Nothing is chosen on a test set. The final weights and the final average of every run are
scored on the whole held-out split (``data.HELDOUT``, 15 images); the higher of the two is
that configuration's result, and the configuration with the best held-out result wins. Its
x2 weights then start x3 and x4 (a quarter of the budget each, ``--init-from``: the body
kept, the upsampler new), again weights or average by held-out. Only the chosen weights of
each run are scored on whole Set5, Set14 and BSD100 (reported, never used to choose).
``--register`` ships the winner's x2/x3/x4 (``scripts/register_run.py``, which refuses
weights that score below the registered ones on the run's validation images).

Runs go to ``runs/config_study/<config>_x<s>/``; the results file is rewritten after every
finished stage and holds the step budgets, so the study goes on where it stopped, on this
machine or another: a run stopped by ``--stop-minutes`` leaves its exact state (weights, Adam,
average, data position) in ``config_study_cpu_state/`` and a finished x2 run its chosen
weights in ``config_study_cpu_x2/`` (for x3 and x4), both beside the results file: commit
them, and a new machine resumes.
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
from amms_lib.studies import (
    SIZE_CONFIGS,
    VAL_IMAGES,
    beside,
    bicubic_rows,
    bicubic_validation,
    check_study_args,
    drop_state,
    heldout_curve,
    markdown_or_main,
    precision,
    read_results,
    register_kept,
    register_run_dir,
    run_training,
    score_sets,
    seconds_per_step,
    stamp,
    train_command,
)

TEST_SETS = ("Set5", "Set14", "BSD100")
RUNS = repo_root() / "runs" / "config_study"
UP = 1 / 4  # x3 and x4 each: this fraction of the x2 budget
POINTS = 10  # validations per run (5 held-out images each): the curves


def run_dir(name: str, scale: int) -> Path:
    return RUNS / f"{name}_x{scale}"


def command(name: str, scale: int, steps: int, out: Path, args,
            init_from: Path | None = None, points: int = POINTS) -> list[str]:
    return train_command("amms", scale, SIZE_CONFIGS[name], args.lr, steps, out,
                         init_from=init_from, val_every=max(1, steps // points),
                         extra=("--ema", str(args.ema)))


def score(name: str, scale: int, out: Path) -> dict:
    """A finished run: both candidates on the whole held-out split, the better one (the
    run's result) on the test sets, and the run's budget and curves."""
    from amms_lib.checkpoint import read_checkpoint
    from amms_lib.models import build_model
    from amms_lib.profile import count_parameters

    t0 = time.perf_counter()
    heldout = {w: score_sets(out / f"{w}.pt", scale, [data.HELDOUT])[0][data.HELDOUT]
               for w in ("last", "ema")}
    chosen = max(heldout, key=lambda w: heldout[w]["psnr"])
    ckpt = read_checkpoint(out / "last.pt")
    return {"config": name, "model_kwargs": SIZE_CONFIGS[name], "scale": scale,
            "params": count_parameters(build_model("amms", scale, **SIZE_CONFIGS[name])),
            "steps": ckpt["step"], "train_minutes": round(ckpt["seconds"] / 60, 2),
            "core_hours": round(ckpt["seconds"] / 3600, 3),
            "init_from": ckpt["config"].get("init_from", ""),
            "curve": {"steps_heldout5_psnr": heldout_curve(out),
                      "steps_heldout5_psnr_ema": heldout_curve(out, "psnr_ema")},
            "heldout": heldout, "chosen": chosen,
            "sets": score_sets(out / f"{chosen}.pt", scale, TEST_SETS)[0],
            "score_seconds": round(time.perf_counter() - t0, 1), "cpu": cpu_name(),
            "precision": precision(ckpt)}


def kept(args) -> Path:
    """Where each finished x2 run's chosen weights are kept beside the results."""
    return beside(args.json, "x2")


def state(args, key: str) -> Path:
    """Where an unfinished run's resumable state is kept beside the results (to commit)."""
    return beside(args.json, "state") / key


def stage(name: str, scale: int, steps: int, args, deadline: float, results: dict, save,
          init_from: Path | None = None) -> bool:
    """Train and score one run (skipped when its result is in the file), and with
    ``--register`` ship it at x3/x4 (x2: once it has won); False if stopped."""
    key = f"{name}_x{scale}"
    if key in results:
        if args.register and scale > 2:
            ship(name, scale, results, args, save)
        return True
    out = run_dir(name, scale)
    if not run_training(command(name, scale, steps, out, args, init_from), out, steps,
                        deadline, state(args, key)):
        return False
    scored = score(name, scale, out)
    with RECORD_LOCK:  # not while another thread writes the record
        results[key] = scored
    if scale == 2:  # x3 and x4 start here, on this machine or the next
        kept(args).mkdir(parents=True, exist_ok=True)
        src = out / f"{results[key]['chosen']}.pt"
        atomic_write(kept(args) / f"{name}.pt", lambda f: f.write(src.read_bytes()))
    save()
    drop_state(state(args, key))  # only now: the result is in the record
    r = results[key]
    print(f"{key}: {r['steps']} steps, {r['train_minutes']:.1f} min; held-out "
          + ", ".join(f"{w} {v['psnr']:.2f}" for w, v in r["heldout"].items())
          + f"; {r['chosen']}: " + ", ".join(f"{s} {v['psnr']:.2f}" for s, v in r["sets"].items()),
          flush=True)
    if args.register and scale > 2:
        ship(name, scale, results, args, save)
    return True


RECORD_LOCK = threading.RLock()  # stages run in parallel threads: one writer at a time


def ship(name: str, scale: int, results: dict, args, save) -> None:
    """Register a winner's chosen weights at ``scale`` in ``checkpoints/``, once: from its run
    (``register_run.py``, with the run's curve), or at x2 from the kept copy when the run
    finished on another machine; else say what is missing."""
    from amms_lib.checkpoint import read_checkpoint

    key = f"{name}_x{scale}"
    r = results[key]
    if r.get("registered"):
        return
    command = "python benchmarks/config_study.py " + " ".join(sys.argv[1:])
    selection = (f"configuration and its {r['chosen']} weights chosen on the whole held-out "
                 "split; a fixed-step cosine run, no checkpoint selection")
    src, copy = run_dir(name, scale) / f"{r['chosen']}.pt", kept(args) / f"{name}.pt"
    with RECORD_LOCK:
        if src.is_file() and read_checkpoint(src)["step"] == r["steps"]:
            ok = register_run_dir(run_dir(name, scale), r["chosen"], command, selection)
        elif scale == 2 and copy.is_file():
            per_step = r["train_minutes"] / r["steps"]
            curve = r["curve"]["steps_heldout5_psnr" + ("_ema" if r["chosen"] == "ema" else "")]
            register_kept(copy, 2, command=command, selection=selection,
                          notes=f"registered from {kept(args).name}/{copy.name}", lr=args.lr,
                          precision=r.get("precision"), train_minutes=r["train_minutes"],
                          core_hours=r["core_hours"],
                          curve=[[round(k * per_step, 2), round(v, 4)] for k, v in curve])
            ok = True
        else:
            print(f"{key}: its weights are not on this machine (the run finished on another "
                  "and only x2 is kept); nothing registered", flush=True)
            ok = False
        if ok:
            r["registered"] = True
            save()


def winner(results: dict, names) -> dict:
    """The configuration whose x2 result scores highest on the held-out split."""
    best = max(names, key=lambda n: results[f"{n}_x2"]["heldout"][
        results[f"{n}_x2"]["chosen"]]["psnr"])
    return {"config": best, "weights": results[f"{best}_x2"]["chosen"],
            "why": "highest whole held-out PSNR at x2 (" + ", ".join(
                f"{n} {results[f'{n}_x2']['heldout'][results[f'{n}_x2']['chosen']]['psnr']:.3f}"
                for n in names) + " dB)"}


def precision_refusal(record: dict, here: str) -> str | None:
    """Why this machine should not go on with a study begun in another precision (``here``:
    ``train.precision_name`` of this CPU), or None: the remaining steps would train in
    another precision than the first (float32 instead of bf16 autocast takes about 3.5x the
    time per step on these CPUs) and the record would name only the last one."""
    began = record.get("costs_measured_on", {}).get("precision")
    win = record.get("winner", {}).get("config")
    finished = win and all(f"{win}_x{s}" in record.get("runs", {}) for s in (3, 4))
    if began in (None, here) or finished:
        return None
    return (f"this study trains in {began} (its step costs and first steps were measured so) "
            f"but this CPU gives {here}: run it on a CPU with native bf16 (AVX512-BF16 or AMX), "
            "or pass --any-precision to go on in this one")


def markdown(record: dict) -> str:
    """The README's table of the study: each finished run with its budget, its held-out
    scores (both candidates; the kept one in bold) and its test-set scores with the gain
    over bicubic on the same images."""
    head = ("| run | params | from | steps | one-core h | held-out dB (weights / average) | "
            + " | ".join(f"{s} dB" for s in TEST_SETS) + " |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    runs = record.get("runs", {})
    for key in sorted(runs, key=lambda k: (runs[k]["scale"], k)):
        r = runs[key]
        bic = record.get("bicubic", {}).get(f"x{r['scale']}", {})
        held = " / ".join((f"**{r['heldout'][w]['psnr']:.3f}**" if w == r["chosen"]
                           else f"{r['heldout'][w]['psnr']:.3f}") for w in ("last", "ema"))
        cells = [f"{r['sets'][s]['psnr']:.2f}" + (f" ({r['sets'][s]['psnr'] - bic[s]['psnr']:+.2f})"
                                                  if s in bic else "") for s in TEST_SETS]
        start = "x2 body" if r.get("init_from") else "scratch"
        lines.append(f"| {key} | {r['params']:,} | {start} | {r['steps']:,} | "
                     f"{r['train_minutes'] / 60:.2f} | {held} | " + " | ".join(cells) + " |")
    for key, sets in sorted(record.get("bicubic", {}).items()):
        lines.append(f"| bicubic {key} | | | | | {sets[data.HELDOUT]['psnr']:.3f} | "
                     + " | ".join(f"{sets[s]['psnr']:.2f}" for s in TEST_SETS) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.5,
                    help="x2 budget per configuration, in hours of the 2-core machine")
    ap.add_argument("--configs", nargs="+", default=["c32m2", "c48m2"], choices=list(SIZE_CONFIGS))
    ap.add_argument("--ema", type=float, default=0.999, help="weight-average decay per step")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--stop-minutes", type=float, default=0.0)
    ap.add_argument("--register", action="store_true")
    ap.add_argument("--any-precision", action="store_true",
                    help="go on with a study begun in another precision than this CPU's")
    ap.add_argument("--json", default=str(repo_root() / "benchmarks" / "results"
                                          / "config_study_cpu.json"))
    args = ap.parse_args()
    check_study_args(args)
    path = Path(args.json)
    record = stamp(read_results(path, budget={k: getattr(args, k) for k in ("hours", "ema", "lr")}),
                   threads=1)
    from amms_lib.runtime import cpu_bf16
    from amms_lib.train_config import precision_name

    here = precision_name(cpu_bf16())
    refusal = None if args.any_precision else precision_refusal(record, here)
    if refusal:
        raise SystemExit(f"{path}: {refusal}")
    deadline = time.time() + 60 * args.stop_minutes if args.stop_minutes else float("inf")
    if "seconds_per_step" not in record:  # measured here: say on what, in which precision
        record["costs_measured_on"] = {"cpu": cpu_name(), "precision": here}
    costs = record.get("seconds_per_step") or seconds_per_step(
        {n: (lambda out, k, n=n: command(n, 2, k, out, args, points=1))  # 1 validation: fast
         for n in args.configs})
    steps = {n: max(1, round(2 * 3600 * args.hours / costs[n])) for n in args.configs}
    print("seconds per step (1 thread): " + ", ".join(f"{n} {costs[n]:.3f}" for n in costs)
          + "; x2 steps: " + ", ".join(f"{n} {k}" for n, k in steps.items()), flush=True)
    results = record.get("runs", {})

    bicubic = record.get("bicubic") or bicubic_rows((data.HELDOUT, *TEST_SETS))
    # the curves' baseline: bicubic on the images the runs validate on
    bicubic_val = record.get("bicubic_validation") or bicubic_validation(2)

    def save():
        with RECORD_LOCK:
            _save()

    def _save():
        record.update(command="python benchmarks/config_study.py " + " ".join(sys.argv[1:]),
                      hours=args.hours, ema=args.ema, lr=args.lr,
                      budget="x2: hours of 2 cores (2 x hours of one core, single-threaded "
                      f"runs), turned into steps by each configuration's measured seconds "
                      f"per step; x3, x4: {UP:g} of it each", seconds_per_step=costs,
                      val_images=VAL_IMAGES, steps_x2=steps, bicubic=bicubic,
                      bicubic_validation=bicubic_val, runs=results)
        atomic_write(path, lambda f: f.write(json.dumps(record, indent=1)), "w")

    save()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda n: stage(n, 2, steps[n], args, deadline, results, save),
                             args.configs))
    if not all(done):
        return
    record["winner"] = win = winner(results, args.configs)
    save()
    print(f"winner: {win['config']} ({win['weights']}): {win['why']}", flush=True)
    if args.register:
        ship(win["config"], 2, results, args, save)
    init = kept(args) / f"{win['config']}.pt"
    up = max(1, round(steps[win["config"]] * UP))
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda s: stage(win["config"], s, up, args, deadline, results, save,
                                      init), (3, 4)))


if __name__ == "__main__":
    markdown_or_main(markdown, main, "config_study_cpu.json")
