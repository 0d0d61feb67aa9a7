"""Training runs for the CPU studies (``benchmarks/table2_cpu.py``, ``config_study.py``,
``ablation_cpu.py``, ``ideas_cpu.py``): one command per run, resumable across sessions, budgets
in steps; scoring, results files and the entry points they share.

A study's budget is CPU time, but wall-clock minutes of runs that share 2 cores with other
jobs are not comparable, so a budget is turned into steps once, by each run's own
measured seconds per step (``seconds_per_step``), and every run is a finished cosine
schedule over its steps (the fast recipe): a run cut short by ``deadline`` resumes
exactly from its last save the next time, on this machine or another.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from amms_lib import data
from amms_lib.amms import AMMSConfig
from amms_lib.errors import AmmsError
from amms_lib.patches import TRAIN_SETS
from amms_lib.runtime import (  # noqa: F401 (studies.code_commit)
    ResultsFile,
    ResultsKind,
    atomic_write,
    cli,
    code_commit,
    json_arg,
    repo_root,
    require_at_least,
)

VAL_IMAGES = 5  # held-out images a study's run validates on (the first of data.HELDOUT)
# the compact AMMS of the ablation studies (ablation_cpu, ideas_cpu): 32 channels, 2 AMMS
# modules, M = 1, each idea at a fair size for that width (second-order MLP 32 -> 8 -> 32,
# non-local embedding at half the width)
FAIR = dict(channels=32, n_amms=2, n_am=1, so_reduction=4, nl_reduction=2)
# the size study's configurations (config_study, finish_study, x4_init): name -> AMMSConfig
# overrides (the paper-sized default: 64 channels, 4 x AMMS, M=2)
SIZE_CONFIGS = {
    "c32m2": AMMSConfig.small_kwargs(),  # the lessons' compact size (the first shipped)
    "c48m2": dict(channels=48, n_amms=2, n_am=1),  # wider
    "c32m4": dict(channels=32, n_amms=4, n_am=1),  # deeper
}


def train_command(model: str, scale: int, kwargs: dict, lr: float, steps: int, out: Path, *,
                  init_from: Path | None = None, val_every: int = 0, val_images: int = VAL_IMAGES,
                  bf16: bool = True, patch: int = 0, extra: tuple = ()) -> list[str]:
    """The command of one single-thread run of ``steps`` (fast recipe, batches of 16 HR
    patches of ``patch`` pixels, default 32 x scale, validated on ``val_images`` of the
    held-out split); ``bf16``: bf16 autocast where the CPU computes it natively (else
    float32 anyway)."""
    cmd = [sys.executable, "-m", "amms_lib.train", "--model", model, "--scale", str(scale),
           "--model-kwargs", json.dumps(kwargs), "--recipe", "fast",
           "--lr", str(lr), "--batch-size", "16", "--patch-size", str(patch or 32 * scale),
           "--epochs", "1", "--iters-per-epoch", str(steps), "--val-every", str(val_every),
           "--val-set", data.HELDOUT, "--val-images", str(val_images), "--workers", "0",
           "--threads", "1", *(["--cpu-amp"] if bf16 else []), "--channels-last",
           "--log-every", "50", "--resume", "--out-dir", str(out), *extra]
    return cmd + (["--init-from", str(init_from)] if init_from else [])


def precision(ckpt: dict) -> str:
    """What a run trained in: ``bfloat16 autocast`` or ``float32``, as its checkpoint
    records it (its last process's); older checkpoints: derived on this machine."""
    from amms_lib.runtime import cpu_bf16
    from amms_lib.train_config import precision_name

    if "precision" in ckpt:
        return ckpt["precision"]
    return precision_name(bool(ckpt["config"].get("cpu_amp")) and cpu_bf16())


def _env() -> dict:
    return {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def seconds_per_step(commands: dict, steps: int = 20, rounds: int = 2) -> dict[str, float]:
    """Training seconds per step (validation excluded) of each ``name -> command(out,
    steps)``, by the runs' own command: short runs of all of them alternate, so that all
    see the same load; the median of ``rounds``."""
    from amms_lib.checkpoint import read_checkpoint

    times = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, make in commands.items():
                out = Path(tmp) / f"{name}_{r}"
                subprocess.run(make(out, steps), env=_env(), check=True, capture_output=True)
                times[name].append(read_checkpoint(out / "last.pt")["seconds"] / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def last_step(out: Path) -> int:
    """The last step a run's log records (0 before its first)."""
    from amms_lib.runlog import read_metrics

    log = read_metrics(out) if (out / "metrics.jsonl").is_file() else []
    return log[-1]["step"] if log else 0


def beside(results_file, what: str) -> Path:
    """A folder kept beside a study's results file, to commit with it: ``table2_cpu.json``
    -> ``table2_cpu_<what>/`` (``x2``: the x2 weights x3 and x4 start from; ``state``: the
    resumable state of runs a deadline stopped)."""
    path = Path(results_file)
    return path.with_name(f"{path.stem}_{what}")


def kept_file(folder: Path, name: str) -> Path | None:
    """A study's kept weights ``folder/name``, or, where the copy was dropped because
    ``checkpoints/`` ships the same bytes, the shipped file: the kept record's sha256 names
    it (results refer to shipped weights by hash instead of keeping a second copy)."""
    from amms_lib.checkpoint import checkpoints_dir, file_sha256, read_metadata

    if (folder / name).is_file():
        return folder / name
    record = read_metadata(folder).get(name) if (folder / "metadata.json").is_file() else None
    shipped = checkpoints_dir() / name
    if record and shipped.is_file() and file_sha256(shipped) == record.get("sha256"):
        return shipped
    return None


def register_run_dir(out: Path, weights: str, command: str, selection: str) -> bool:
    """Register a finished run's ``weights`` (``last`` or ``ema``) with its record and curve
    (``scripts/register_run.py``); False if it refused (it says why)."""
    return subprocess.run([sys.executable, str(repo_root() / "scripts" / "register_run.py"),
                           str(out), f"--{weights}", "--command", command,
                           "--selection", selection]).returncode == 0


def shipped_by(file: str, study: str, steps: int) -> bool:
    """Whether ``checkpoints/<file>`` holds the weights a study's run of ``steps`` steps
    registered (its metadata names the study's command and those iterations)."""
    from amms_lib.checkpoint import read_metadata

    info = read_metadata().get(file, {})
    return (info.get("command", "").startswith(f"python benchmarks/{study}")
            and info.get("iterations") == steps)


def register_kept(copy: Path, scale: int, *, command: str, selection: str, notes: str,
                  lr: float, precision: str | None, train_minutes: float, core_hours: float,
                  curve: list | None = None) -> float:
    """Register weights kept beside a study's results, whose run is on another machine, with
    the study's record of that run (one thread; CPU-hours of the 2-core machine; ``curve``:
    ``[[minutes, held-out PSNR], ...]``, else the copy's own final point); better registered
    weights are kept (``checkpoint.register``). Returns the copy's held-out PSNR."""
    from amms_lib.checkpoint import load_model, register
    from amms_lib.train_config import TrainConfig
    from amms_lib.validation import validate

    val = TrainConfig(scale=scale, val_set=data.HELDOUT, val_images=VAL_IMAGES)
    psnr = validate(load_model(copy)[0], val)["psnr"]
    register(copy, command=command, data=f"T91+BSD200 without {data.HELDOUT}",
             score=lambda p: validate(load_model(p)[0], val)["psnr"], selection=selection,
             notes=notes, device="cpu", threads=1, lr=lr, precision=precision,
             train_minutes=round(train_minutes, 1), cpu_hours=round(core_hours / 2, 3),
             val_set=data.HELDOUT, val_images=VAL_IMAGES, val_max_side=0,
             curve=curve or [[round(train_minutes, 2), round(psnr, 4)]])
    return psnr


# what a run resumes from, exactly; the log first, so that a copy cut between the two leaves
# a log ahead of the weights, which the resume truncates to their step (never one behind)
STATE_FILES = ("metrics.jsonl", "last.pt")


def _saved_step(folder: Path) -> int:
    from amms_lib.checkpoint import read_checkpoint

    return read_checkpoint(folder / "last.pt")["step"] if (folder / "last.pt").is_file() else 0


def keep_state(out: Path, state: Path) -> None:
    """Copy an unfinished run's resumable state (weights, Adam, average, data position) to
    ``state``, a folder to commit: a run of hours outlives the machine (sessions end)."""
    state.mkdir(parents=True, exist_ok=True)
    for name in STATE_FILES:
        atomic_write(state / name, lambda f, n=name: f.write((out / n).read_bytes()))


def restore_state(out: Path, state: Path) -> bool:
    """Put a kept state back in ``out`` where it is ahead of what ``out`` holds (a new
    machine: nothing); True if it did."""
    if _saved_step(state) <= _saved_step(out):
        return False
    out.mkdir(parents=True, exist_ok=True)
    for name in STATE_FILES:
        atomic_write(out / name, lambda f, n=name: f.write((state / n).read_bytes()))
    print(f"{out.name}: resumed from the state kept in {state} (step {_saved_step(out)})",
          flush=True)
    return True


def run_training(cmd: list[str], out: Path, steps: int, deadline: float,
                 state: Path | None = None) -> bool:
    """Run (or resume) one training to its last step, its output in ``out/train.log``;
    False when ``deadline`` (a ``time.time()``) stopped it, or it failed (said in one line).
    With ``state``: a run stopped by the deadline leaves its state there (``keep_state``),
    and a run starts from it when it is ahead of ``out``; the caller removes it
    (``drop_state``) once the finished run's result is saved."""
    if state is not None:
        restore_state(out, state)
    done = (out / "last.pt").is_file() and last_step(out) >= steps
    if not done:
        left = (deadline - time.time()) / 60
        if left < 1:
            return False
        out.mkdir(parents=True, exist_ok=True)
        extra = ["--stop-minutes", f"{left:.2f}"] if left != float("inf") else []
        with open(out / "train.log", "a") as log:
            proc = subprocess.run(cmd + extra, stdout=log, stderr=subprocess.STDOUT,
                                  env=_env())
        if proc.returncode != 0:
            print(f"{out.name}: training failed (exit {proc.returncode}); see "
                  f"{out}/train.log", flush=True)
            return False
        done = last_step(out) >= steps
    if state is not None and not done and (out / "last.pt").is_file():
        keep_state(out, state)
    return done


def drop_state(state: Path) -> None:
    """Remove a kept state once its run's result is in the record (commit the removal)."""
    shutil.rmtree(state, ignore_errors=True)


def score_sets(path: Path, scale: int, sets, *, model: str = "amms", per_image: bool = False,
               tile: int | None = None) -> tuple[dict, object, dict]:
    """One checkpoint's weights on whole images (or ``tile``s) of each of ``sets`` (Y, shaved;
    one thread, as the runs): ``({set: {psnr, ssim, seconds_per_image[, per_image]}}, net,
    checkpoint)``; the seconds include scoring, the cost a user pays per image on one core.
    The caller's thread count is restored afterwards."""
    import torch

    from amms_lib.benchmark import evaluate_set
    from amms_lib.checkpoint import load_model
    from amms_lib.inference import upscale

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, ckpt = load_model(path, model=model, scale=scale)
        scores = {}
        for s in sets:
            t = time.perf_counter()
            r = evaluate_set(lambda lr: upscale(net, lr, tile=tile), s, scale,
                             per_image=per_image)
            scores[s] = {k: r[k] for k in ("psnr", "ssim", "per_image") if k in r}
            scores[s]["seconds_per_image"] = (time.perf_counter() - t) / r["n_images"]
    finally:
        torch.set_num_threads(threads)
    return scores, net, ckpt


def measurement_kind(name: str, keys, row_keys, rows: str = "rows") -> ResultsKind:
    """The results of the measurement script ``name``: its top-level ``keys`` with what
    ``stamp`` adds and the ``provenance`` note of records older than it, and its ``rows``'
    ``row_keys`` (``runtime.ResultsKind``)."""
    return ResultsKind(name, frozenset({*keys, rows, "invocations", "provenance"}),
                       frozenset(row_keys), rows)


def check_new_results(path, overwrite: bool, kind: ResultsKind) -> ResultsFile | None:
    """A measurement script's ``--json`` (None without one), checked before any work
    (``runtime.ResultsFile``): a new file, or with ``overwrite`` earlier results of its
    ``kind`` (often another machine's record); anything else ends the script in one line.
    Write the rows with its ``write`` and say where with its ``said``."""
    if path is None:
        return None
    try:
        return ResultsFile(path, kind, overwrite)
    except AmmsError as exc:
        sys.exit(f"error: {exc}")


def require_data(script: str) -> None:
    """End a training study in one line, before any run starts, when there is no data
    folder: its runs train on T91 + BSD200 and validate on their held-out split (each run
    had failed alone, its cause only in its train.log)."""
    try:
        root = data.data_root()
    except AmmsError as exc:
        sys.exit(f"error: {exc}")
    if root is None:
        sys.exit(f"error: {script} trains on T91 + BSD200 and needs the data folder: set "
                 f"{data.ENV_VAR}, or run: python -m amms_lib.data fetch --dest data")
    if missing := [s for s in TRAIN_SETS if not (root / "train" / s).is_dir()]:
        sys.exit(f"error: {script} trains on T91 + BSD200, and the data folder {root} has no "
                 f"train/{' or train/'.join(missing)}: put SRCNN's T91 and the Berkeley "
                 "segmentation set's 200 train images there (the benchmark fetch has neither)")


def read_results(path, missing_ok: bool = True, budget: dict | None = None) -> dict:
    """A study's results file as a dict ({} when absent and ``missing_ok``). A damaged
    or non-object file ends the script with one line, before any work: a study that
    went on would write its new rows over the damaged file's. So does a file whose
    ``budget`` fields (e.g. ``{"steps": 3000}``) hold other values: a trial run would
    replace the study's record and headline (its runs belong in another file)."""
    path = json_arg(path)
    if path.exists() and not path.is_file():
        sys.exit(f"error: {path} is not a file (a folder?); pass --json a results file")
    if not path.is_file():
        if missing_ok:
            return {}
        sys.exit(f"error: {path}: no such results file")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        sys.exit(f"error: {path} is not readable JSON ({exc}); restore it (git checkout) "
                 "or pass --json another file")
    if not isinstance(record, dict):
        sys.exit(f"error: {path} holds a JSON {type(record).__name__}, not a study's "
                 "results object; restore it (git checkout) or pass --json another file")
    if not record:  # a new study (an empty file too): nothing to compare
        return record
    if unknown := [k for k in budget or {} if record.get(k) is None]:
        sys.exit(f"error: {path} holds results without their {', '.join(unknown)}: whose "
                 "budget they are is unknown; pass --json another file")
    other = {k: record[k] for k, v in (budget or {}).items() if record[k] != v}
    if other:
        mine = ", ".join(f"{k} {budget[k]}" for k in other)
        sys.exit(f"error: {path} holds a study of {', '.join(f'{k} {v}' for k, v in other.items())}"
                 f" (this run: {mine}); pass --json another file for another budget")
    return record


def seed_0_only(plan: dict) -> set:
    """Variants a study plan's amendments cut to seed 0 (diagnostics without an interval;
    each amendment is written into the plan before the runs it changes)."""
    return {v for a in plan.get("amendments", []) for v in a.get("seed_0_only", [])}


def stamp(record: dict, *, threads: int | None = None, precision: str = "float32") -> dict:
    """``record`` with this invocation appended to its ``invocations``: the command, the
    commit (``+dirty`` with uncommitted changes), CPU, torch, Python, threads and precision,
    and when. Every results file keeps the list of invocations that built it (a resumed
    study: one per session)."""
    import platform

    import torch

    from amms_lib.runtime import cpu_name

    here = {"command": " ".join(["python", *sys.argv]), "commit": code_commit(repo_root()),
            "cpu": cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": threads or torch.get_num_threads(), "precision": precision,
            "when": time.strftime("%Y-%m-%d %H:%M")}
    return {**record, "invocations": [*record.get("invocations", []), here]}


def check_study_args(args) -> None:
    """A study's numbers, refused in one line before any work (a bad one had started the
    cost measurement, or failed every run alone with its cause only in train.log):
    ``--jobs``, ``--threads``, ``--steps`` at least 1, ``--lr`` (``--lrs``) in (0, 1],
    ``--stop-minutes`` not negative, ``--minutes``/``--hours`` above 0, ``--ema`` in [0, 1),
    ``--init`` an existing file, ``--seeds`` not negative and each
    named once (a seed twice would pair a run with itself). Only the options the script
    has are checked."""
    require_at_least(args, **{k: v for k, v in dict(jobs=1, threads=1, steps=1,
                                                    stop_minutes=0).items()
                              if hasattr(args, k)})
    for name in ("minutes", "hours"):  # a training budget: above 0 (NaN, inf: no)
        if hasattr(args, name) and not 0 < getattr(args, name) < math.inf:
            raise AmmsError(f"--{name} {getattr(args, name):g}: a budget must be above 0")
    if hasattr(args, "ema") and args.ema and not 0 < args.ema < 1:
        raise AmmsError(f"--ema {args.ema:g}: a weight-average decay is between 0 and 1 "
                        "(0: none)")
    if getattr(args, "init", None) and not Path(args.init).is_file():
        raise AmmsError(f"--init {args.init}: no such checkpoint file")
    for name in ("lr", "lrs"):  # Adam's learning rate: above 0, at most 1 (NaN, inf: no)
        for lr in [v for v in np.atleast_1d(getattr(args, name, None) or []) if v is not None]:
            if not 0 < lr <= 1:
                raise AmmsError(f"--{name} {lr:g}: a learning rate must be above 0 and at "
                                "most 1")
    seeds = getattr(args, "seeds", None) or []
    if any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise AmmsError(f"--seeds {' '.join(map(str, seeds))}: name each seed once, "
                        "0 or more")


def markdown_or_main(markdown, main, results: str) -> None:
    """A study's entry point: ``--markdown [RESULTS.json]`` (or ``--markdown --json
    RESULTS.json``) prints the README's table from a results file (default
    ``benchmarks/results/<results>``); anything else runs ``main``."""
    if sys.argv[1:2] == ["--markdown"]:
        rest = [a for a in sys.argv[2:] if a != "--json"]
        if len(rest) > 1:
            sys.exit(f"error: --markdown takes one results file, got {' '.join(rest)}")
        path = Path(rest[0]) if rest else repo_root() / "benchmarks" / "results" / results
        try:
            table = markdown(read_results(path, missing_ok=False))
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            what = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            sys.exit(f"error: {path} does not hold the results {results} holds (missing or "
                     f"malformed: {what}); pass the study's own file")
        print(table)
    else:
        sys.exit(cli(main))  # Ctrl-C and an AmmsError: one line


def bicubic_rows(sets) -> dict:
    """Bicubic PSNR/SSIM on ``sets`` at x2, x3 and x4: the baseline beside every row."""
    from amms_lib.benchmark import bicubic_upscaler, evaluate_set

    return {f"x{scale}": {s: {k: v for k, v in evaluate_set(bicubic_upscaler(scale), s, scale)
                              .items() if k in ("psnr", "ssim")} for s in sets}
            for scale in (2, 3, 4)}


def bicubic_validation(scale: int) -> dict:
    """Bicubic PSNR/SSIM on exactly the pixels a study's runs validate on (the first
    ``VAL_IMAGES`` held-out images, whole): the baseline beside their curves."""
    import numpy as np

    from amms_lib.benchmark import bicubic_upscaler
    from amms_lib.metrics import evaluate
    from amms_lib.train_config import TrainConfig
    from amms_lib.validation import validation_pairs

    _, pairs = validation_pairs(TrainConfig(scale=scale, val_set=data.HELDOUT,
                                            val_images=VAL_IMAGES))
    scores = [evaluate(bicubic_upscaler(scale)(lr), hr, scale) for lr, hr in pairs]
    return {"images": VAL_IMAGES, "psnr": float(np.mean([p for p, _ in scores])),
            "ssim": float(np.mean([q for _, q in scores]))}


def heldout_curve(out: Path, key: str = "psnr") -> list[list[float]]:
    """``[[step, held-out PSNR], ...]`` of a run's validations (``psnr_ema``: its average)."""
    from amms_lib.runlog import read_metrics

    return [[r["step"], r[key]] for r in read_metrics(out) if key in r]


# each idea's factorial switch, and the comparison with the control that could explain it
# away (the names of benchmarks/ideas_cpu.py's plan)
IDEA_CONTROLS = {"non_local": "non-local (dot) vs context block",
                 "second_order": "second-order (normalised) vs constant gate",
                 "multiscale": "multi-scale vs capacity (equal parameters)"}


def idea_evidence(idea: str, path=None) -> dict:
    """What the ideas study (``benchmarks/results/ideas_cpu.json``) says of one idea on its
    primary outcome: the factorial's main effect (blocked ANOVA over the complete seeds;
    None under two) and the paired difference against its control (``IDEA_CONTROLS``),
    each with its 95% interval, and whether that difference stays resolved read together with
    the plan's other comparisons (``control_holm``, Holm's correction); ``said`` puts it in
    two lines. Notebooks 01-03 print it."""
    from amms_lib.stats import factorial_anova, holm_of, paired_interval

    path = Path(path or repo_root() / "benchmarks" / "results" / "ideas_cpu.json")
    record = json.loads(path.read_text())
    plan = record["plan"]
    primary = plan["primary_outcome"].split()[0]  # "BSD100 x2 PSNR (...)" -> "BSD100"
    psnr = {(r["variant"], r["seed"]): r["sets"][primary]["psnr"] for r in record["runs"]}
    complete = [s for s in plan["seeds"] if all((v, s) in psnr for v in plan["factorial"])]
    main = None
    if len(complete) >= 2:
        main = factorial_anova({(v, s): psnr[v, s] for v in plan["factorial"] for s in complete},
                               {v: tuple(f) for v, f in plan["factorial"].items()}
                               )["effects"][idea]
    pairs = {}  # every comparison of the plan, paired by seed
    for n, (a, b) in plan["comparisons"].items():
        d = [psnr[a, s] - psnr[b, s] for s in plan["seeds"] if (a, s) in psnr and (b, s) in psnr]
        pairs[n] = paired_interval(d) if d else None
    name = IDEA_CONTROLS[idea]
    control = pairs[name]
    # read together with the plan's other comparisons that have an interval (Holm)
    together = holm_of(pairs)

    def interval(e, mean):
        if e is None or e.get("ci95") is None:
            return "not enough seeds yet"
        lo, hi = e["ci95"]
        return (f"{mean:+.3f} dB [{lo:+.3f}, {hi:+.3f}], "
                + ("resolved" if e["resolved"] else "not resolved"))

    said = (f"{primary} x2, {record['steps']:,} steps of the compact AMMS, 95% intervals:\n"
            f"  main effect of {idea} (factorial ANOVA, seeds {complete}): "
            f"{interval(main, main['effect'] if main else 0)}\n"
            f"  {name} (paired, {control['n'] if control else 0} seeds): "
            f"{interval(control, control['mean'] if control else 0)}")
    if name in together:
        said += (f"\n    p = {control['p']:.3f}; read together with the study's {len(together)} "
                 f"comparisons that have an interval (Holm): "
                 f"{'still resolved' if together[name] else 'not resolved'}")
    return {"main": main, "control": control, "control_name": name, "seeds": complete,
            "n_control": control["n"] if control else 0, "steps": record["steps"],
            "control_holm": together.get(name, False), "said": said}
