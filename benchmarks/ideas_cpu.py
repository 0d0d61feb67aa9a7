"""Each idea against the control that could explain it away: 2^3 factorial + controls, x2.

    python benchmarks/ideas_cpu.py [--seeds 0 1 2 3] [--jobs 2] [--stop-minutes 150]
        [--json benchmarks/results/ideas_cpu.json] [--markdown]

The plan (``PLAN``, written into the results file before the first run) says what is
compared and what counts as resolved. Every run is the compact AMMS (``FAIR``) trained for
3000 steps (the ablation's budget: batch 16, 64-px HR patches, lr 5e-4, 2% warm-up and a
cosine to 0), float32, one thread, and scored with its final weights (nothing selected) on
whole Set5, Set14, BSD100 and the held-out split. A seed is a block: it fixes the patches and
their order, and, since ``AMMSNet`` seeds each layer's initial weights by its name, the
initial weights of every layer two variants share. Each run records its machine (CPU,
torch, threads, precision, the commit of the code that ran it, seconds per step) and the
diagnostics of its final weights (``amms_lib.diagnose``: how far the attention parameters
moved from their initial values, how much the gates vary across images, how spread the
attention is).

Runs go to ``runs/ideas/<variant>_s<seed>/`` and resume from their last save; a run cut by
``--stop-minutes`` also keeps its state in ``--state`` (commit it: the next session may get
another machine); a run in the results file is done. Run it from a committed worktree and
point ``--json``/``--state`` at the checkout that commits the results.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amms_lib import data, stats
from amms_lib.runtime import ArgumentParser, atomic_write, cli, cpu_name, repo_root
from amms_lib.studies import (
    FAIR,
    check_study_args,
    code_commit,
    drop_state,
    read_results,
    require_data,
    run_training,
    score_sets,
    seconds_per_step,
    seed_0_only,
)
from amms_lib.studies import train_command as study_command

# each idea's version in the factorial: the paper's non-local and multi-scale blocks and the
# second-order gate that can learn (SAN's cannot: amms_lib.second_order's module doc)
IDEA_ON = {"non_local": {"non_local": True, "nl_attention": "dot"},
           "second_order": {"second_order": True, "so_mode": "normalised"},
           "multiscale": {"multiscale": True}}
OFF = {"non_local": False, "second_order": False, "multiscale": False}
FACTORIAL = {"none": (), "nl": ("non_local",), "so": ("second_order",),
             "ms": ("multiscale",), "nl+so": ("non_local", "second_order"),
             "nl+ms": ("non_local", "multiscale"), "so+ms": ("second_order", "multiscale"),
             "all": ("non_local", "second_order", "multiscale")}
CONTROLS = {  # variant -> (overrides of the all-off network, what it controls for)
    "wide": ({"single_scale": "matched"},
             "plain network with MSFF's parameter count: one 3x3 branch of 122 channels in "
             "place of the 1/3/5 branches (ms's parameters; 98% of all's)"),
    "so-const": ({"second_order": True, "so_mode": "constant"},
                 "a learned per-channel constant gate (1 + tanh b): the gate without the "
                 "statistic"),
    "so-san": ({"second_order": True, "so_mode": "san"},
               "SAN's second-order formula (the paper's), beside the normalised one"),
    "nl-context": ({"non_local": True, "nl_attention": "context"},
                   "GCNet's query-independent context block: one softmax-pooled vector added "
                   "at every position"),
    "nl-cosine": ({"non_local": True, "nl_attention": "cosine"},
                  "selective non-local: cosine logits with a learned scale (starts at 10)"),
}
EQUAL_MINUTES = "none@all-minutes"  # all-off for as long as all-on trains (more steps)
VARIANTS = (*FACTORIAL, *CONTROLS, EQUAL_MINUTES)
PAIRS = {  # comparison -> (variant, its control), paired by seed
    "multi-scale vs capacity (equal parameters)": ("ms", "wide"),
    "all three vs capacity (98% of the parameters)": ("all", "wide"),
    "all three vs plain at equal minutes": ("all", EQUAL_MINUTES),
    "second-order (normalised) vs constant gate": ("so", "so-const"),
    "second-order (SAN's) vs constant gate": ("so-san", "so-const"),
    "second-order normalised vs SAN's": ("so", "so-san"),
    "non-local (dot) vs context block": ("nl", "nl-context"),
    "non-local (cosine) vs context block": ("nl-cosine", "nl-context"),
    "non-local cosine vs dot": ("nl-cosine", "nl"),
}
STEPS, LR, PATCH = 3000, 5e-4, 64
TEST_SETS = ("Set5", "Set14", "BSD100")
PRIMARY = "BSD100"
PLAN = {
    "question": "Is each idea worth anything against the control that could explain it away?",
    "design": "2^3 factorial over non-local, second-order and multi-scale in seed blocks, "
              "plus controls, x2, each variant trained once per seed",
    "factorial": {v: list(on) for v, on in FACTORIAL.items()},
    "idea_versions": IDEA_ON,
    "controls": {v: {"overrides": o, "controls_for": why} for v, (o, why) in CONTROLS.items()},
    "equal_minutes": f"{EQUAL_MINUTES}: all-off trained for STEPS x the measured ratio of "
                     "seconds per step of all over none (one process, alternating runs)",
    "budget": f"{STEPS} steps of 16 x {PATCH}-px HR patches, lr {LR}, fast recipe, float32, "
              "one thread per run; about 10 hours of a 2-core machine for 4 seeds",
    "seeds": [0, 1, 2, 3],
    "primary_outcome": f"{PRIMARY} x2 PSNR (Y, shaved, whole images) of the final weights",
    "secondary_outcomes": "Set5, Set14, held-out split PSNR; diagnostics of the final weights",
    "model": "factorial: variant x seed ANOVA (seed a block; every main effect and "
             "interaction; 95% t intervals on the residual df). Idea vs control: paired by "
             "seed, 95% t interval over seeds (df = seeds - 1)",
    "resolved": "the 95% interval excludes 0",
    "pilot": "benchmarks/results/ablation_cpu.json (seeds 0-2) is a pilot, not pooled: SAN's "
             "second-order formula, bf16 autocast for most runs, unpaired initial weights",
    "comparisons": {k: list(v) for k, v in PAIRS.items()},
}
RUNS = repo_root() / "runs" / "ideas"


def model_kwargs(variant: str) -> dict:
    """The AMMSConfig overrides of one variant."""
    kw = {**FAIR, **OFF}
    if variant in FACTORIAL:
        for idea in FACTORIAL[variant]:
            kw |= IDEA_ON[idea]
    elif variant in CONTROLS:
        kw |= CONTROLS[variant][0]
    elif variant != EQUAL_MINUTES:
        raise KeyError(variant)
    return kw


def command(variant: str, seed: int, steps: int, out: Path) -> list[str]:
    """One run's training command: float32 (no autocast), one thread, validated on one
    held-out crop every 1000 steps (a save point; nothing is selected by it)."""
    return study_command("amms", 2, model_kwargs(variant), LR, steps, out, val_every=1000,
                         val_images=1, bf16=False, patch=PATCH,
                         extra=("--val-max-side", "32", "--seed", str(seed)))


@functools.cache
def machine() -> dict:
    """What this process runs on and which code it runs (the worktree's commit)."""
    import torch

    return {"cpu": cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
            "commit": code_commit(Path(__file__).resolve().parent.parent, short=False),
            "threads": 1, "precision": "float32"}


def diagnostics(variant: str, seed: int, net) -> dict:
    """``amms_lib.diagnose`` of the final weights against the initial ones (rebuilt from the
    seed, as the run built them), on the first 5 held-out images (LR, whole)."""
    import torch

    from amms_lib.diagnose import diagnose
    from amms_lib.inference import to_tensor
    from amms_lib.models import build_model
    from amms_lib.runtime import seed_everything

    seed_everything(seed)
    init = build_model("amms", 2, **model_kwargs(variant))
    names = data.list_images(data.HELDOUT)[:5]
    lrs = [to_tensor(data.load_pair(data.HELDOUT, n, 2).lr) for n in names]
    torch.set_num_threads(1)
    return diagnose(net.float().eval(), init, lrs)


def score(variant: str, seed: int, out: Path) -> dict:
    from amms_lib.profile import count_parameters
    from amms_lib.runlog import read_metrics

    t0 = time.perf_counter()
    sets, net, ckpt = score_sets(out / "last.pt", 2, (*TEST_SETS, data.HELDOUT), per_image=True)
    score_s = time.perf_counter() - t0
    rates = [r["it_s"] for r in read_metrics(out) if "it_s" in r]
    return {"variant": variant, "seed": seed, "model_kwargs": model_kwargs(variant),
            "params": count_parameters(net), "steps": ckpt["step"],
            "train_minutes": round(ckpt["seconds"] / 60, 3),
            "seconds_per_step": ckpt["seconds"] / ckpt["step"], "last_it_s": rates[-1],
            "score_seconds": round(score_s, 1), "machine": machine(),
            "command": " ".join(command(variant, seed, ckpt["step"], out)[1:]),
            "sets": sets, "diagnostics": diagnostics(variant, seed, net)}


def run_one(variant: str, seed: int, args, deadline: float) -> dict | None:
    """Train (or resume) one run, then score it; None when stopped before the end."""
    if (variant, seed) in args.known:
        return args.known[variant, seed]
    out, state = RUNS / f"{variant}_s{seed}", Path(args.state) / f"{variant}_s{seed}"
    steps = args.equal_steps if variant == EQUAL_MINUTES else args.steps
    if not run_training(command(variant, seed, steps, out), out, steps, deadline, state):
        return None
    result = score(variant, seed, out)
    print(f"{out.name}: {result['steps']} steps, {result['train_minutes']:.1f} min, "
          + ", ".join(f"{k} {v['psnr']:.3f}" for k, v in result["sets"].items()), flush=True)
    args.known[variant, seed] = result
    save(args)
    drop_state(state)
    return result


@functools.cache
def bicubic_scores() -> dict:
    from amms_lib.benchmark import bicubic_upscaler, evaluate_set

    return {name: {k: v for k, v in evaluate_set(bicubic_upscaler(2), name, 2).items()
                   if k in ("psnr", "ssim")} for name in (*TEST_SETS, data.HELDOUT)}


def analyse(record: dict) -> dict:
    """The factorial ANOVA and the paired idea-vs-control intervals, on every set."""
    runs = {(r["variant"], r["seed"]): r for r in record["runs"]}
    out: dict = {"factorial": {}, "pairs": {}}
    for s in (*TEST_SETS, data.HELDOUT):
        values = {k: r["sets"][s]["psnr"] for k, r in runs.items() if k[0] in FACTORIAL}
        try:
            out["factorial"][s] = stats.factorial_anova(values, FACTORIAL)
        except ValueError as exc:  # fewer than 2 complete seeds
            out["factorial"][s] = {"not_yet": str(exc)}
        for name, (a, b) in PAIRS.items():
            seeds = sorted(k for v, k in runs if v == a and (b, k) in runs)
            d = [runs[a, k]["sets"][s]["psnr"] - runs[b, k]["sets"][s]["psnr"] for k in seeds]
            if d:
                out["pairs"].setdefault(name, {})[s] = {**stats.paired_interval(d),
                                                        "seeds": seeds, "per_seed": d}
    return out


def save(args) -> None:
    """Rewrite the results file: the plan, every finished run, the analysis (one writer)."""
    with args.lock:
        runs = [args.known[k] for k in sorted(args.known, key=lambda k: (k[1], k[0]))]
        record = {**args.head, "runs": runs}
        record["analysis"] = analyse(record)
        atomic_write(args.json, lambda f: f.write(json.dumps(record, indent=1)), "w")


def markdown(record: dict) -> str:
    """The per-variant table (mean over seeds) and every comparison on the primary set."""
    from statistics import mean

    lines = ["| variant | params | seeds | min | " + " | ".join(TEST_SETS) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in TEST_SETS) + " |"]
    for v in VARIANTS:
        rs = [r for r in record["runs"] if r["variant"] == v]
        if rs:
            lines.append(f"| {v} | {rs[0]['params']:,} | {len(rs)} | "
                         f"{mean(r['train_minutes'] for r in rs):.1f} | " + " | ".join(
                             f"{mean(r['sets'][s]['psnr'] for r in rs):.3f}" for s in TEST_SETS)
                         + " |")
    a = analyse(record)  # from the runs, by the code of today (the stored one may be older)
    lines.append(f"\nOn {PRIMARY} (dB, 95% interval; p of the paired t test):")
    for name, e in a["factorial"][PRIMARY].get("effects", {}).items():
        lines.append(f"- factorial {name}: {e['effect']:+.3f} [{e['ci95'][0]:+.3f}, "
                     f"{e['ci95'][1]:+.3f}]{' resolved' if e['resolved'] else ''}")
    if "effects" not in a["factorial"][PRIMARY]:
        lines.append("- factorial: needs two complete seed blocks")
    for name, sets in a["pairs"].items():
        e = sets.get(PRIMARY)
        if e and e["ci95"]:
            lines.append(f"- {name}: {e['mean']:+.3f} [{e['ci95'][0]:+.3f}, "
                         f"{e['ci95'][1]:+.3f}], p = {e['p']:.3f}, over seeds {e['seeds']}"
                         f"{' resolved' if e['resolved'] else ''}")
        elif e:
            cut = seed_0_only(record["plan"]) & set(record["plan"]["comparisons"][name])
            lines.append(f"- {name}: {e['mean']:+.3f} on seed {e['seeds'][0]} alone ("
                         + ("seed 0 only by the plan's amendment: a diagnostic, no interval)"
                            if cut else "no interval yet)"))
    # the plan judges each comparison alone; read together, Holm's correction
    kept = stats.holm_of({n: sets.get(PRIMARY) for n, sets in a["pairs"].items()})
    if kept:
        lines.append(f"- read together (Holm over the {len(kept)} comparisons with an interval), "
                     "still resolved: "
                     + (", ".join(n for n in a["pairs"] if kept.get(n)) or "none"))
    return "\n".join(lines + ["", diagnostics_table(record)])


def _num(x, digits: int) -> str:
    """A number to ``digits`` decimals, or "-" where the diagnosis has none (no parameter of
    that kind: a constant gate has no zero-started weights)."""
    return "-" if x is None else f"{x:.{digits}f}"


def diagnostics_table(record: dict) -> str:
    """Per run: seconds per step and ``amms_lib.diagnose`` of the final weights."""
    lines = ["| variant | seed | s/step | moved (relative / zero-started RMS) | gates across "
             "images / channels | attention spread |", "| --- | --- | --- | --- | --- | --- |"]
    for r in sorted(record["runs"], key=lambda r: (r["seed"], VARIANTS.index(r["variant"]))):
        d = r.get("diagnostics", {})
        moved = "; ".join(f"{k}: {_num(v['relative_change'], 3)} / {_num(v['zero_init_rms'], 4)}"
                          for k, v in d.get("moved", {}).items()) or "-"
        gates = "; ".join(f"{g['across_images']:.4f} / {g['across_channels']:.3f}"
                          for g in d.get("gates", {}).values()) or "-"
        spread = "; ".join(f"{x:.3f}" for x in d.get("attention_spread", {}).values()) or "-"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['seconds_per_step']:.3f} | {moved} "
                     f"| {gates} | {spread} |")
    return "\n".join(lines)


def main() -> None:
    import threading

    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=PLAN["seeds"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--jobs", type=int, default=2, help="single-thread runs side by side")
    ap.add_argument("--stop-minutes", type=float, default=0,
                    help="stop (resumable) after so many minutes; 0: run to the end")
    ap.add_argument("--json", default="benchmarks/results/ideas_cpu.json")
    ap.add_argument("--state", default="benchmarks/results/ideas_cpu_state",
                    help="where a stopped run keeps its state (commit it)")
    ap.add_argument("--markdown", action="store_true", help="print the tables and stop")
    ap.add_argument("--steps", type=int, default=STEPS, help="the plan's; others: dry runs")
    args = ap.parse_args()
    check_study_args(args)
    args.json, args.lock = Path(args.json), threading.Lock()
    old = read_results(args.json, budget=None if args.markdown else {"steps": args.steps})
    if args.markdown:
        if not old:
            print(f"{args.json}: no results yet")
        elif "plan" not in old or "runs" not in old:
            sys.exit(f"error: {args.json} does not hold the ideas study's results (no plan "
                     "or runs); pass the study's own file")
        else:
            print(markdown(old))
        return
    if args.jobs < 1 or args.stop_minutes < 0 or args.steps < 1:
        sys.exit("ideas_cpu: --jobs and --steps must be at least 1, --stop-minutes 0 or more")
    require_data("ideas_cpu.py")
    args.known = {(r["variant"], r["seed"]): r for r in old.get("runs", [])}
    invocation = "python benchmarks/ideas_cpu.py " + " ".join(sys.argv[1:])
    args.head = {"plan": old.get("plan", PLAN), "steps": args.steps,
                 "commands": [*old.get("commands", []),
                              {"command": invocation, "started": time.strftime("%Y-%m-%d %H:%M"),
                               **machine()}],
                 "bicubic": old.get("bicubic") or bicubic_scores()}
    if "equal_minutes" not in old:  # measured once, shared by every seed
        med = seconds_per_step({v: lambda out, n, v=v: command(v, 0, n, out)
                                for v in ("all", "none")}, steps=60, rounds=2)
        old["equal_minutes"] = {"seconds_per_step": med, "ratio": med["all"] / med["none"],
                                "how": "2 alternating runs of 60 steps each by the runs' own "
                                       "command, one thread, float32", **machine()}
    args.head["equal_minutes"] = old["equal_minutes"]
    args.equal_steps = round(args.steps * old["equal_minutes"]["ratio"])
    args.head["equal_minutes"]["steps"] = args.equal_steps
    save(args)  # the plan is in the file before any run
    print(f"equal minutes: {EQUAL_MINUTES} trains {args.equal_steps} steps", flush=True)
    deadline = time.time() + 60 * args.stop_minutes if args.stop_minutes else float("inf")
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    os.environ.setdefault("TQDM_DISABLE", "1")
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda j: run_one(*j, args, deadline), jobs))
    save(args)
    print(markdown(json.loads(args.json.read_text())))


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C and an AmmsError: one line
