"""Table 1 at CPU scale: what each idea is worth, 8 variants x seeds, paired, resumable.

    python benchmarks/ablation_cpu.py [--steps 3000] [--seeds 0 1 2] [--jobs 2]
        [--stop-minutes 150] [--json benchmarks/results/ablation_cpu.json]

The compact AMMS (``FAIR``: 32 channels, 2 AMMS modules, M = 1) with each idea switched on
or off (``amms.AMMSConfig``: ``non_local``, ``second_order``, ``multiscale``):

- ``none``: all three off, a plain residual network (the baseline the paper lacks);
- ``nl``, ``so``, ``ms``: one idea on (the paper's Table 1 rows);
- ``all``: all three on (the AMMS row);
- ``all-nl``, ``all-so``, ``all-ms``: all on but one (leave-one-out).

Every variant trains for the same ``--steps`` (the paper's design) with the fast recipe
(warm-up, cosine to 0) laid over those steps, and ``none@all-minutes`` trains the all-off
network for as many minutes as ``all`` needs (the cost a user pays), as steps: ``--steps``
times the ratio of their seconds per step, measured once in one process, alternating the
two networks so that both see the same load (``measure_cost_ratio``; wall-clock minutes
of runs sharing two cores with other jobs would not be comparable). Its cosine is laid over
its own steps, so it is a finished run, not a midpoint of a longer one. A seed fixes the
patches and their order, so every
variant of a seed sees the same data: differences are paired. Nothing is selected: the
final weights are scored on whole Set5, Set14 and BSD100 (x2, Y, shaved), per image, and
on the held-out split (``data.HELDOUT``).

Runs go to ``runs/ablation/<variant>_s<seed>/``: a run cut short (``--stop-minutes``, a
killed process, the end of a session) resumes from its last save (every 1000 steps); one that is
done (``scores.json``, or already in the results file, so a new machine goes on where the
committed results stop) is skipped. ``--jobs 2`` runs two single-thread trainings side by side
(see ``--measure-threads``, which times that against one two-thread run). The results
file is rewritten after every finished run, with the analysis of ``amms_lib.ablation_stats``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amms_lib import data
from amms_lib.ablation_stats import analyse
from amms_lib.runtime import ArgumentParser, atomic_write, cli, cpu_name, repo_root
from amms_lib.studies import (
    FAIR,
    check_study_args,
    precision,
    read_results,
    require_data,
    run_training,
    score_sets,
    seconds_per_step,
    stamp,
)
from amms_lib.train_config import precision_name

# FAIR (amms_lib.studies): the compact width with each idea given a fair size; SAN's
# reduction 16 would leave 2 hidden units at 32 channels
IDEAS = ("non_local", "second_order", "multiscale")
SHORT = {"non_local": "nl", "second_order": "so", "multiscale": "ms"}
VARIANTS = {  # name -> the ideas switched on
    "none": (),
    "nl": ("non_local",), "so": ("second_order",), "ms": ("multiscale",),
    "all": IDEAS,
    "all-nl": ("second_order", "multiscale"),
    "all-so": ("non_local", "multiscale"),
    "all-ms": ("non_local", "second_order"),
}
EQUAL_MINUTES = "none@all-minutes"  # all-off for the minutes all-on took (same seed)
TEST_SETS = ("Set5", "Set14", "BSD100")
RUNS = repo_root() / "runs" / "ablation"


def model_kwargs(variant: str) -> dict:
    """The AMMSConfig overrides of one variant (``EQUAL_MINUTES`` is ``none``'s)."""
    on = VARIANTS["none" if variant == EQUAL_MINUTES else variant]
    return {**FAIR, **{idea: idea in on for idea in IDEAS}}


def run_dir(variant: str, seed: int) -> Path:
    return RUNS / f"{variant}_s{seed}"


def train_command(variant: str, seed: int, args, steps: int, out: Path | None = None
                  ) -> list[str]:
    """The training command of one run of ``steps`` (cosine over them, no selection), into
    ``out`` (default: the run's folder)."""
    cmd = [sys.executable, "-m", "amms_lib.train", "--model", "amms", "--scale", "2",
           "--model-kwargs", json.dumps(model_kwargs(variant)), "--recipe", "fast",
           "--lr", str(args.lr), "--batch-size", "16", "--patch-size", "64",
           "--val-set", data.HELDOUT, "--val-images", "1",
           "--val-max-side", "32", "--workers", "0",
           "--threads", str(args.threads), "--cpu-amp", "--channels-last",
           "--seed", str(seed), "--log-every", "50", "--resume", "--val-every", "1000",
           "--out-dir", str(out or run_dir(variant, seed))]
    return cmd + ["--epochs", "1", "--iters-per-epoch", str(steps)]


def score(variant: str, seed: int) -> dict:
    """Whole-image scores of a finished run's final weights (no selection), per image."""
    from amms_lib.profile import count_parameters, flops_by_part
    from amms_lib.runlog import read_metrics

    out = run_dir(variant, seed)
    t0 = time.perf_counter()
    sets, net, ckpt = score_sets(out / "last.pt", 2, (*TEST_SETS, data.HELDOUT),
                                 per_image=True)
    return {"variant": variant, "seed": seed, "model_kwargs": model_kwargs(variant),
            "params": count_parameters(net), "steps": ckpt["step"],
            "gflops_48": flops_by_part(net, (48, 48))["total"] / 1e9,  # one 48x48 LR input
            "train_minutes": round(ckpt["seconds"] / 60, 3),
            "it_s": [r["it_s"] for r in read_metrics(out) if "it_s" in r][-1],
            "score_seconds": round(time.perf_counter() - t0, 1),
            "precision": precision(ckpt), "cpu": cpu_name(), "sets": sets}


def run_one(variant: str, seed: int, args, deadline: float) -> dict | None:
    """Train (or resume) one run, then score it; None when stopped before the end."""
    out = run_dir(variant, seed)
    done = out / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    if (variant, seed) in args.known:  # finished on another machine: in the results file
        return args.known[variant, seed]
    steps = args.equal_steps if variant == EQUAL_MINUTES else args.steps
    if not run_training(train_command(variant, seed, args, steps), out, steps, deadline):
        return None  # stopped by the deadline (resumes next time) or failed (said why)
    result = score(variant, seed)
    atomic_write(done, lambda f: f.write(json.dumps(result, indent=1)), "w")
    print(f"{out.name}: {result['steps']} steps, {result['train_minutes']:.1f} min, "
          + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in result["sets"].items()), flush=True)
    return result


@functools.cache
def bicubic_scores() -> dict:
    """Bicubic on the same images, per image: the line every variant must clear (computed
    once per process: collect() runs after every finished run)."""
    from amms_lib.benchmark import bicubic_upscaler, evaluate_set

    return {name: evaluate_set(bicubic_upscaler(2), name, 2, per_image=True)
            for name in (*TEST_SETS, data.HELDOUT)}


def collect(args) -> dict:
    """Every finished run, the bicubic baseline and the analysis, as one record."""
    local = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*/scores.json"))]
    merged = {**args.known, **{(r["variant"], r["seed"]): r for r in local}}
    runs = [merged[k] for k in sorted(merged, key=lambda k: (k[1], k[0]))]
    record = {"invocations": args.invocations,
              "command": "python benchmarks/ablation_cpu.py " + " ".join(sys.argv[1:]),
              "steps": args.steps, "lr": args.lr, "fair_config": FAIR,
              "variants": {k: list(v) for k, v in VARIANTS.items()},
              "equal_minutes_variant": EQUAL_MINUTES,
              "recipe": "fast (2% warm-up, cosine to 0), batch 16, 64x64 HR patches, "
                        "channels-last, x2; bf16 autocast on CPUs with native bf16, float32 "
                        "elsewhere (each run's precision field)",
              "bicubic": {k: {"psnr": v["psnr"], "ssim": v["ssim"],
                              "per_image": v["per_image"]}
                          for k, v in bicubic_scores().items()},
              "runs": runs}
    if args.threads_record:
        record["threads"] = args.threads_record
    record["equal_minutes"] = {**args.cost, "steps": args.equal_steps}
    record["analysis"] = analyse(record)
    return record


def measure_cost_ratio(steps: int = 100, rounds: int = 2) -> dict:
    """Training seconds per step of ``all`` over ``none``, by the runs' own command, one
    thread (``studies.seconds_per_step``: short runs alternating; the median of each)."""
    args = argparse.Namespace(lr=5e-4, threads=1)
    med = seconds_per_step({v: lambda out, n, v=v: train_command(v, 0, args, n, out)
                            for v in ("all", "none")}, steps, rounds)
    return {"seconds_per_step": med, "ratio": med["all"] / med["none"],
            "how": f"{rounds} alternating runs of {steps} steps each by the runs' own "
                   "command, 1 thread"}


def measure_threads(steps: int = 60) -> dict:
    """Steps/s of the all-on variant: one 2-thread run against two 1-thread runs at once."""
    import tempfile

    def cmd(out, threads):
        return [sys.executable, "-m", "amms_lib.train", "--model", "amms", "--scale", "2",
                "--model-kwargs", json.dumps(model_kwargs("all")), "--batch-size", "16",
                "--patch-size", "64", "--epochs", "1", "--iters-per-epoch", str(steps),
                "--val-every", "0", "--val-set", data.BUILTIN, "--workers", "0",
                "--threads", str(threads), "--cpu-amp", "--channels-last",
                "--out-dir", out]

    def rate(out):
        from amms_lib.runlog import read_metrics
        return [r["it_s"] for r in read_metrics(out) if "it_s" in r][-1]

    env = {**os.environ, "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(cmd(f"{tmp}/two", 2), env=env, check=True, capture_output=True)
        procs = [subprocess.Popen(cmd(f"{tmp}/one{i}", 1), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(2)]
        for p in procs:
            p.wait()
        two, ones = rate(f"{tmp}/two"), [rate(f"{tmp}/one{i}") for i in range(2)]
    return {"steps": steps, "one_run_2_threads_it_s": two,
            "two_runs_1_thread_it_s": ones, "ratio_side_by_side": sum(ones) / two}


def main() -> None:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=[*VARIANTS, EQUAL_MINUTES],
                    choices=[*VARIANTS, EQUAL_MINUTES])
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--stop-minutes", type=float, default=0,
                    help="stop (resumable) after so many minutes; 0: run to the end")
    ap.add_argument("--measure-threads", action="store_true",
                    help="first time 2 single-thread runs against one 2-thread run")
    ap.add_argument("--json", default="benchmarks/results/ablation_cpu.json")
    args = ap.parse_args()
    results = Path(args.json)
    check_study_args(args)
    old = stamp(read_results(results, budget={"steps": args.steps, "lr": args.lr}),
                threads=args.threads, precision="per run (its field)")
    require_data("ablation_cpu.py")
    args.invocations = old["invocations"]
    args.threads_record = old.get("threads")
    # runs already in the results file count as done, so the study resumes on a new machine
    args.known = {(r["variant"], r["seed"]): r for r in old.get("runs", [])}
    for r in args.known.values():  # runs before this field: all trained on AVX512-BF16 CPUs
        r.setdefault("precision", precision_name(True))
    # the equal-minutes budget is measured once and kept, so that every seed shares it
    args.cost = old.get("equal_minutes") or measure_cost_ratio()
    args.equal_steps = round(args.steps * args.cost["ratio"])
    print(f"equal minutes: all-on costs {args.cost['ratio']:.2f}x all-off per step, so "
          f"{EQUAL_MINUTES} trains {args.equal_steps} steps", flush=True)
    if args.measure_threads:
        args.threads_record = measure_threads()
        print(f"threads: {args.threads_record}", flush=True)
    deadline = time.time() + 60 * args.stop_minutes if args.stop_minutes else float("inf")
    # seed-major, all-on and all-off first within a seed: partial results stay balanced
    order = sorted(args.variants, key=lambda v: (v not in ("all", "none"), v == EQUAL_MINUTES))
    jobs = [(v, s) for s in args.seeds for v in order]

    def work(job):
        variant, seed = job
        result = run_one(variant, seed, args, deadline)
        if result is not None:
            record = collect(args)
            atomic_write(results, lambda f: f.write(json.dumps(record, indent=1)), "w")
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(work, jobs))
    record = collect(args)
    atomic_write(results, lambda f: f.write(json.dumps(record, indent=1)), "w")
    print(json.dumps(record["analysis"]["summary"], indent=1))


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C and an AmmsError: one line
