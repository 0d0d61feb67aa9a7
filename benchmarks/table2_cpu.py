"""Table 2 at an equal CPU budget: SRCNN, VDSR, LapSRN, MemNet and the compact AMMS,
every row trained here on the same data for the same CPU time. Resumable.

    python benchmarks/table2_cpu.py [--minutes 20] [--models srcnn vdsr lapsrn memnet amms]
        [--lrs 2e-4 5e-4 1e-3] [--jobs 2] [--stop-minutes 150] [--register]
        [--json benchmarks/results/table2_cpu.json]
    python benchmarks/table2_cpu.py --markdown [RESULTS.json]   # the README's table

The budget is ``--minutes`` of the 2-core machine per network at x2, i.e. 2 x minutes of
one core: the runs are single-threaded, two side by side (``--jobs 2``). Wall-clock
minutes of runs that share cores are not comparable, so each network's budget is turned
into steps by its own measured seconds per step (``measure_step_costs``: the runs' own
command, one thread, short runs of all networks alternating so that all see the same
load). Stages per network, each a finished run (fast recipe: warm-up, cosine to 0 over
its steps):

1. learning rate: each of ``--lrs`` for 1/8 of the budget, x2; the one with the best
   final PSNR on the held-out split (``data.HELDOUT``, 5 images) wins. No test set is
   ever used to choose;
2. x2: the whole budget at that rate; the final weights are the result (no selection);
3. x3 and x4: a quarter of the budget's minutes each, from the x2 weights (``--init-from``:
   every tensor of matching shape; the upsampler is new). A step at x3 or x4 costs more than
   at x2 by the network's ratio of FLOPs per patch (``up_ratios``: 2.25 and 4 for networks
   that work at HR resolution, about 1.1 and 1.5 for AMMS, 1.1 and 5 for LapSRN's pyramid),
   so each gets a quarter of its x2 steps divided by that ratio. LapSRN's x4 is two x2
   pyramid levels: its second level starts from scratch, and its x3 level has a new
   transposed conv.

Every final network is scored on whole Set5, Set14 and BSD100 (and written with its
budget: steps, minutes, CPU-hours, parameters) in the results file, rewritten after
every stage. ``--register`` then copies every finished row's final weights not yet there into
``checkpoints/`` (``ship``: from the run, or at x2 from the kept copy), keeping better weights
already there; not AMMS's (``SHIPPED``: the shipped AMMS is the size study's).
Runs go to ``runs/table2/<model>_x<s>[_lr<lr>]/``; every finished stage is in the results
file and each x2 network's weights beside it (``table2_cpu_x2/``: its record, and the file
unless ``checkpoints/`` ships the same bytes, which the record's sha256 then names), and a
run stopped by
``--stop-minutes`` leaves its exact state in ``table2_cpu_state/``, so the study goes on
across machines (commit all three). Every row trains in float32 (no ``--cpu-amp``): the
first rows were trained on an AVX2-only CPU, where bf16 is not native, and a machine with
AVX512-BF16 would otherwise train the rest in bf16 autocast, a second difference between
rows beside the network; the record says which CPU scored each row and its precision.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amms_lib import data
from amms_lib.amms import AMMSConfig
from amms_lib.checkpoint import register
from amms_lib.equal_budget import MODELS, SETS, markdown, registered
from amms_lib.runtime import ArgumentParser, atomic_write, cpu_name, relative, repo_root
from amms_lib.studies import (
    beside,
    bicubic_rows,
    check_study_args,
    drop_state,
    heldout_curve,
    kept_file,
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

KWARGS = {"amms": AMMSConfig.small_kwargs()}  # the others at their papers' sizes
# registered by --register; the shipped AMMS comes from benchmarks/config_study.py (hours,
# not this table's minutes), so this table's AMMS row is never shipped over it
SHIPPED = ("srcnn", "vdsr", "lapsrn", "memnet")
RUNS = repo_root() / "runs" / "table2"
SWEEP, UP = 1 / 8, 1 / 4  # fractions of the x2 budget: each lr tried; x3 and x4 each


def run_dir(model: str, scale: int, lr: float | None = None) -> Path:
    return RUNS / (f"{model}_x{scale}" + (f"_lr{lr:g}" if lr is not None else ""))


def command(model: str, scale: int, lr: float, steps: int, out: Path,
            init_from: Path | None = None) -> list[str]:
    """The training command of one finished run of ``steps`` (one thread)."""
    return train_command(model, scale, KWARGS.get(model, {}), lr, steps, out,
                         init_from=init_from, bf16=False)  # every row in float32


def measure_step_costs(models) -> dict[str, float]:
    """Seconds per training step of each network at x2, one thread, by the runs' own
    command (``studies.seconds_per_step``: short runs alternating; median)."""
    return seconds_per_step({m: (lambda out, n, m=m: command(m, 2, 5e-4, n, out))
                             for m in models})


def up_ratios(models) -> dict[str, dict[str, float]]:
    """How much more a training step costs at x3 and x4 than at x2, per network: the
    ratio of its FLOPs on the same LR patch (32 x 32; ``profile.flops_by_part``)."""
    from amms_lib.models import build_model
    from amms_lib.profile import flops_by_part

    def flops(m, s):
        return flops_by_part(build_model(m, s, **KWARGS.get(m, {})), (32, 32))["total"]

    return {m: {f"x{s}": flops(m, s) / flops(m, 2) for s in (3, 4)} for m in models}


def heldout_psnr(out: Path) -> float:
    """The run's final validation on the held-out split (its last metrics line)."""
    return heldout_curve(out)[-1][1]


def score(model: str, scale: int, out: Path) -> dict:
    """Whole-image scores of a finished run's final weights, with its budget."""
    from amms_lib.profile import count_parameters

    t0 = time.perf_counter()
    sets, net, ckpt = score_sets(out / "last.pt", scale, SETS, model=model)
    return {"model": model, "scale": scale, "lr": ckpt["config"]["lr"],
            "steps": ckpt["step"], "train_minutes": round(ckpt["seconds"] / 60, 2),
            "core_hours": round(ckpt["seconds"] / 3600, 3), "params": count_parameters(net),
            "init_from": relative(ckpt["config"].get("init_from", "")),
            "seconds_per_image_1_thread": {s: v.pop("seconds_per_image")
                                           for s, v in sets.items()},
            "score_seconds": round(time.perf_counter() - t0, 1),
            "cpu": cpu_name(), "precision": precision(ckpt), "sets": sets}


def kept_dir(results_file) -> Path:
    """Where each x2 network is kept beside the results (``table2_cpu.json`` ->
    ``table2_cpu_x2/``), so that a new machine goes on where the committed results stop."""
    return beside(results_file, "x2")


def state_dir(results_file, out: Path) -> Path:
    """Where a run stopped by the deadline keeps its resumable state, beside the results
    (``table2_cpu_state/<run>/``: commit it, and a new machine resumes the run exactly)."""
    return beside(results_file, "state") / out.name


def kept_x2(model: str, kept: Path) -> Path | None:
    """The x2 weights x3 and x4 start from: the run's, else the one kept for ``kept``
    (the shipped file where the kept record's hash names it)."""
    if (run_dir(model, 2) / "last.pt").is_file():
        return run_dir(model, 2) / "last.pt"
    return kept_file(kept, f"{model}_x2.pt")


def one_model(model: str, args, steps: dict, deadline: float, results: dict, save) -> None:
    """The three stages of one network (each skipped when already done); ``steps``:
    ``{"x2": n, "x3": n, "x4": n}``."""
    row = results.setdefault(model, {})
    if "lr_sweep" not in row:
        sweep_steps = max(1, round(steps["x2"] * SWEEP))
        tried = row.setdefault("lr_tried", {})  # each finished rate, saved as it finishes
        for lr in args.lrs:
            out = run_dir(model, 2, lr)
            if f"{lr:g}" in tried:
                continue
            state = state_dir(args.json, out)
            if not run_training(command(model, 2, lr, sweep_steps, out), out, sweep_steps,
                                deadline, state):
                return
            tried[f"{lr:g}"] = heldout_psnr(out)
            save()
            drop_state(state)
        row["lr_sweep"] = {"steps": sweep_steps, "chosen": float(max(tried, key=tried.get)),
                           "heldout_psnr": row.pop("lr_tried")}
        save()
    best = row["lr_sweep"]["chosen"]
    for scale in (2, 3, 4):
        key, out, n = f"x{scale}", run_dir(model, scale), steps[f"x{scale}"]
        if key in row:
            continue
        init = None if scale == 2 else kept_x2(model, kept_dir(args.json))
        if scale > 2 and init is None:
            print(f"{model} x{scale}: no x2 weights to start from (neither {run_dir(model, 2)} "
                  f"nor {kept_dir(args.json)}); delete its x2 row to train it again", flush=True)
            return
        state = state_dir(args.json, out)
        if not run_training(command(model, scale, best, n, out, init), out, n, deadline, state):
            return
        row[key] = score(model, scale, out)
        if scale == 2:  # kept with its record, for x3 and x4 on another machine
            register(out / "last.pt", command="python benchmarks/table2_cpu.py",
                     folder=kept_dir(args.json), data=f"T91+BSD200 without {data.HELDOUT}",
                     notes="the start of x3 and x4", train_minutes=row[key]["train_minutes"])
        save()
        drop_state(state)  # only now: the row is in the record
        print(f"{model} x{scale}: {row[key]['steps']} steps, {row[key]['train_minutes']:.1f} "
              "min, " + ", ".join(f"{s} {v['psnr']:.2f}" for s, v in row[key]["sets"].items()),
              flush=True)


def ship(model: str, scale: int, row: dict, args) -> None:
    """Register one finished row's final weights in ``checkpoints/``: from its run when this
    machine has it (``register_run.py --last``: with the run's curve), else, at x2, from the
    copy kept beside the results, with the row's budget; else say what is missing."""
    from amms_lib.checkpoint import read_checkpoint

    command = "python benchmarks/table2_cpu.py " + " ".join(sys.argv[1:])
    selection = "final weights of a fixed-step cosine run; lr chosen on the held-out split"
    out = run_dir(model, scale)
    if (out / "last.pt").is_file() and read_checkpoint(out / "last.pt")["step"] == row["steps"]:
        register_run_dir(out, "last", command, selection)
        return
    kept = kept_file(kept_dir(args.json), f"{model}_x{scale}.pt")
    if kept is None:
        print(f"{model} x{scale}: its weights are not on this machine ({out} is gone and only "
              f"x2 is kept); delete its row from {args.json} and run again to retrain it",
              flush=True)
        return
    psnr = register_kept(kept, scale, command=command, selection=selection,
                         notes=f"registered from the copy kept in {kept_dir(args.json).name}/",
                         lr=row["lr"], precision=row.get("precision"),
                         train_minutes=row["train_minutes"], core_hours=row["core_hours"])
    print(f"registered {model}_x{scale}.pt from {kept} (held-out {psnr:.2f} dB)", flush=True)


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0,
                    help="x2 budget per network, in minutes of the 2-core machine")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--lrs", nargs="+", type=float, default=[2e-4, 5e-4, 1e-3])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--stop-minutes", type=float, default=0.0)
    ap.add_argument("--register", action="store_true")
    ap.add_argument("--json", default=str(repo_root() / "benchmarks" / "results"
                                          / "table2_cpu.json"))
    args = ap.parse_args()
    path = Path(args.json)
    check_study_args(args)
    record = stamp(read_results(path, budget={"minutes": args.minutes}), threads=1)
    deadline = time.time() + 60 * args.stop_minutes if args.stop_minutes else float("inf")
    costs = record.get("seconds_per_step") or measure_step_costs(args.models)
    ratios = record.get("up_ratios") or up_ratios(MODELS)
    steps = dict(record.get("steps", {}))  # the other networks' rows keep theirs
    for m in args.models:
        x2 = max(1, round(2 * 60 * args.minutes / costs[m]))
        steps[m] = {"x2": x2, **{k: max(1, round(x2 * UP / r)) for k, r in ratios[m].items()}}
    print("seconds per step (1 thread): " + ", ".join(f"{m} {costs[m]:.3f}" for m in costs)
          + "; steps x2/x3/x4: " + ", ".join(f"{m} {'/'.join(map(str, n.values()))}"
                                              for m, n in steps.items()), flush=True)
    results = record.get("models", {})

    def save():  # the study's keys rewritten, every other key of the record kept
        atomic_write(path, lambda f: f.write(json.dumps({**record,
            "command": "python benchmarks/table2_cpu.py " + " ".join(sys.argv[1:]),
            "minutes": args.minutes, "budget": "x2: minutes of 2 cores (2 x minutes of one "
            "core, single-threaded runs), turned into steps by each network's measured "
            f"seconds per step; lr sweep {SWEEP:g} of it per rate; x3, x4 {UP:g} of its "
            f"minutes each (x2 steps x {UP:g} / the network's FLOPs ratio at that scale)",
            "seconds_per_step": costs, "up_ratios": ratios, "steps": steps,
            "bicubic": bicubic,
            "models": results}, indent=1)), "w")

    bicubic = record.get("bicubic") or bicubic_rows(SETS)
    save()
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda m: one_model(m, args, steps[m], deadline, results, save),
                      args.models))
    if args.register:  # every finished row not yet in checkpoints/, on this machine or not
        for m in SHIPPED:
            for scale in (2, 3, 4):
                row = results.get(m, {}).get(f"x{scale}")
                if m in args.models and row and not registered(m, scale, row):
                    ship(m, scale, row, args)


if __name__ == "__main__":
    markdown_or_main(markdown, main, "table2_cpu.json")
