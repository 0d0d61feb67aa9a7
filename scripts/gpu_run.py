"""The first GPU run: check, time and train in one prepared script, within a budget.

    python scripts/gpu_run.py OUT [--budget-s 540] [--data DIR] [--work DIR]
    python scripts/gpu_run.py OUT --dry-run      # the same stages, tiny, on the CPU

Stages, each in its own process under a time limit (a stuck one is killed with its
children and recorded; the next stage still runs):

  env        torch, CUDA and device facts; nvidia-smi
  tests      pytest -m cuda tests/test_cuda.py (AMMS_REQUIRE_CUDA=1: no silent skips)
  speed      benchmarks/train_speed.py: default AMMS, batch 16 of 96x96 LR at x2;
             fused vs naive attention, eager vs torch.compile
  train      AMMS x2, fast recipe, --max-minutes set to what the budget leaves (at most
             6), so the schedule ends with it
  benchmark  Set5 and Set14 x2 of the best checkpoint, full-image attention
  register   scripts/register_run.py into OUT: the weights-only checkpoint + metadata

OUT receives at most five files, rewritten after every stage so that a run cut short
still returns what it measured: ``summary.json``, ``gpu_run.tar.gz`` (every log, the
JSON results, tests.xml, the training log and config), ``amms_x2.pt`` and
``metadata.json``. The summary is also printed. How to run it on a lent machine:
``scripts/gpu_run.sh``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# AMMSConfig.tiny_kwargs(), spelled out: this driver imports nothing of amms_lib, so that a
# broken install cannot stop it recording (tests/test_gpu_run.py checks the two agree)
TINY = {"channels": 8, "n_amms": 1, "n_am": 1, "so_reduction": 4}
AFTER_TRAIN_S = 75  # kept back for benchmark + register + packing
TRAIN_OVERHEAD_S = 60  # start-up, LR of 291 images, validations: not training time

ENV_INFO = """
import json, os, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if cuda else None,
    "device": torch.cuda.get_device_name() if cuda else "cpu",
    "capability": torch.cuda.get_device_capability() if cuda else None,
    "bf16": cuda and torch.cuda.is_bf16_supported(), "cpus": os.cpu_count(),
    "threads": torch.get_num_threads()}))
"""


class Run:
    """Stages under one deadline; what they measure goes to ``report``, packed."""

    def __init__(self, args):
        self.args, self.t0 = args, time.monotonic()
        self.out, self.work = Path(args.out).resolve(), Path(args.work).resolve()
        self.report = self.work / "report"
        for d in (self.report, self.work / "train"):  # this script's own folders only
            shutil.rmtree(d, ignore_errors=True)
        (self.report / "logs").mkdir(parents=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.py = sys.executable
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
        data = Path(args.data or os.environ.get("AMMS_DATA") or ROOT / "gpu_data")
        if data.is_dir():
            self.env["AMMS_DATA"] = str(data.resolve())
        else:
            self.env.pop("AMMS_DATA", None)
        self.summary = {"dry_run": args.dry_run, "budget_s": args.budget_s,
                        "commit": commit(), "data": self.env.get("AMMS_DATA"),
                        "stages": []}
        self.proc: subprocess.Popen | None = None

    def handle_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # stopped from outside: stop it
            signal.signal(sig, self._stopped)

    def _stopped(self, signum, frame):
        """Killed from outside (a timeout around the whole script): unwind to the running
        stage, which ends its process group (or it would outlive us) and keeps the record.
        Only an exception here: waiting on the stage inside a signal handler could deadlock
        on the lock its interrupted wait() holds."""
        self.summary["stopped_by"] = signal.Signals(signum).name
        if self.proc is None:  # between stages: nothing to end
            self.pack()
        raise Stopped(128 + signum)

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def stage(self, name: str, argv: list[str], limit: float, **env) -> str:
        """Run one stage with its output in logs/<name>.log; returns its status:
        ok, failed, timeout, missing (no such program) or skipped (no time left)."""
        if self.args.dry_run:  # a busy CPU, not the script, is slow: more room
            limit *= 2
        limit = min(limit, self.left())
        log = self.report / "logs" / f"{name}.log"
        rec = {"name": name, "limit_s": round(limit), "log": f"logs/{name}.log"}
        t = time.monotonic()
        print(f"[{time.monotonic() - self.t0:5.0f} s] {name} (limit {limit:.0f} s)",
              flush=True)
        with open(log, "w") as f:
            f.write(f"$ {shlex.join(argv)}\n")
            f.flush()
            if limit < 1:
                rec["status"] = "skipped"
            else:
                env = {**self.env, **env}
                try:
                    rec["status"], rec["rc"] = self._wait(argv, limit, f, env)
                except Stopped:
                    rec.update(status="stopped", seconds=round(time.monotonic() - t, 1))
                    self.summary["stages"].append(rec)
                    self.pack()
                    raise
        rec["seconds"] = round(time.monotonic() - t, 1)
        self.summary["stages"].append(rec)
        self.pack()
        return rec["status"]

    def _wait(self, argv, limit, f, env) -> tuple[str, int | None]:
        try:  # a new session: a timeout ends the stage's workers and compilers too
            proc = self.proc = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                start_new_session=True)
        except FileNotFoundError:
            f.write(f"{argv[0]}: not found\n")
            return "missing", None
        try:
            rc = proc.wait(timeout=limit)
            return ("ok" if rc == 0 else "failed"), rc
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            f.write(f"\n[gpu_run] killed after {limit:.0f} s\n")
            return "timeout", proc.returncode
        except Stopped:
            _kill_group(proc)
            f.write("\n[gpu_run] stopped from outside\n")
            raise
        finally:
            self.proc = None

    def pack(self) -> None:
        """summary.json and gpu_run.tar.gz in OUT, rewritten whole after each stage."""
        train = self.work / "train"
        for name in ("metrics.jsonl", "config.json"):
            if (train / name).is_file():
                shutil.copy(train / name, self.report / f"train_{name}")
        self.summary["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        text = json.dumps(self.summary, indent=2)
        (self.report / "summary.json").write_text(text)
        tmp = self.out / ".gpu_run.tar.gz"
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.report, arcname="gpu_run")
        tmp.replace(self.out / "gpu_run.tar.gz")
        (self.out / "summary.json").write_text(text)


class Stopped(SystemExit):
    """SIGTERM/SIGINT from outside; exits with 128 + the signal's number."""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the stage's process group, SIGKILL after 10 s if it is still there."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def commit() -> str:
    """The commit being run: git where there is a .git, else $AMMS_COMMIT. (Not
    ``runtime.code_commit``: this supervisor never imports torch, so a broken install is
    recorded as a stage's failure instead of ending the run.)"""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        sha = ""
    return sha or os.environ.get("AMMS_COMMIT", "unknown")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for what comes back (at most five files)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny network and budgets: checks the script only")
    ap.add_argument("--budget-s", type=float, help="all stages together (default: 540, "
                    "a dry run 900)")
    ap.add_argument("--train-minutes", type=float, default=6.0, help="at most this")
    ap.add_argument("--data", help="data folder (default: $AMMS_DATA, else gpu_data/)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "gpu_run"),
                    help="the training run and the unpacked report")
    args = ap.parse_args(argv)
    args.budget_s = args.budget_s or (900 if args.dry_run else 540)
    run, py, dry = Run(args), sys.executable, args.dry_run
    run.handle_signals()
    dev = ["--device", "cpu"] if dry else []
    report, train_dir = run.report, run.work / "train"

    run.stage("env", [py, "-c", ENV_INFO], 60)
    run.stage("nvidia-smi", ["nvidia-smi"], 30)
    run.stage("tests", [py, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py",
                        "-p", "no:cacheprovider", f"--junitxml={report / 'tests.xml'}"],
              90, **({} if dry else {"AMMS_REQUIRE_CUDA": "1"}))
    size = (["--channels", "8", "--n-amms", "1", "--n-am", "1", "--batch-size", "2",
             "--lr-patch", "8", "--steps", "1", "--warmup", "1"] if dry else
            ["--batch-size", "16", "--lr-patch", "96", "--steps", "10",
             "--warmup", "2"])
    rows = (["naive:cl+bf16"] if dry else  # compile last: a timeout loses only it
            ["full:cl+bf16", "naive:cl+bf16", "full:cl+bf16+compile"])
    run.stage("speed", [py, "benchmarks/train_speed.py", *size, *dev, "--rows", *rows,
                        "--json", str(report / "speed.json")], 120)

    spare = run.left() - AFTER_TRAIN_S - TRAIN_OVERHEAD_S
    minutes = 0.05 if dry else round(max(0.5, min(args.train_minutes, spare / 60)), 2)
    run.summary["train_minutes"] = minutes
    net = (["--model-kwargs", json.dumps(TINY), "--batch-size", "2",
            "--patch-size", "16",
            "--val-every", "0", "--val-images", "1", "--val-max-side", "24",
            "--workers", "0", "--train-sets", "skimage"] if dry else
           ["--batch-size", "16", "--patch-size", "192", "--val-every", "500",
            "--workers", "8"])
    train_cmd = [py, "-m", "amms_lib.train", "--model", "amms", "--scale", "2",
                 "--recipe", "fast", "--lr", "2e-4", "--max-minutes", str(minutes),
                 *net, *dev, "--out-dir", str(train_dir), "--no-resume"]
    run.stage("train", train_cmd, run.left() - AFTER_TRAIN_S)
    best = train_dir / "best.pt"
    run.stage("benchmark", [py, "-m", "amms_lib.benchmark", "--model", "amms",
                            "--checkpoint", str(best), "--scales", "2",
                            "--datasets", "Set5", "Set14", *dev,
                            *(["--allow-partial"] if args.dry_run else []),  # its tiny sets
                            "--json", str(report / "benchmark.json")], 90)
    device = json.loads((report / "logs" / "env.log").read_text().splitlines()[-1]
                        if run.summary["stages"][0]["status"] == "ok" else '{}')
    command = (f"scripts/gpu_run.sh ({args.budget_s:g} s budget): " + shlex.join(
        ["python", *train_cmd[1:]]).replace(str(train_dir), "runs/gpu_run/train"))
    run.stage("register", [py, "scripts/register_run.py", str(train_dir),
                           "--folder", str(run.out), "--commit", run.summary["commit"],
                           "--command", command,
                           "--device", device.get("device", "unknown"),
                           "--data", "builtin (dry run)" if dry else "T91+BSD200",
                           "--notes", "the first GPU run"], 60)
    return report_summary(run, device)


def report_summary(run: Run, device: dict) -> int:
    """Print what the run measured (the lent machine's reply shows the tail)."""
    s = run.summary
    s["device"] = device
    print(f"\n== gpu_run on {device.get('device', '?')}, torch "
          f"{device.get('torch', '?')}, commit {s['commit']}, "
          f"{time.monotonic() - run.t0:.0f} s of {s['budget_s']:g}")
    for st in s["stages"]:
        print(f"  {st['name']:<11}{st['status']:<9}{st['seconds']:>7.1f} s "
              f"(limit {st['limit_s']} s)")
    for name in ("speed", "benchmark"):
        path = run.report / f"{name}.json"
        if path.is_file():
            s[name] = json.loads(path.read_text())
    for r in s.get("speed", {}).get("rows", []):
        print(f"  speed {r['mode']:<22}" + (
            f"{r['it_s']:.2f} it/s, {r['peak_mb']:.0f} MB, "
            f"warm-up {r['warmup_s']:.0f} s"
            if "it_s" in r else f"failed: {r['error']}"))
    for r in s.get("benchmark", {}).get("results", []):
        print(f"  {r['dataset']} x{r['scale']}: {r['psnr']:.2f} dB / {r['ssim']:.4f}")
    bad = [st for st in s["stages"] if st["status"] not in ("ok", "missing")]
    for st in bad:  # the reply shows only the output's tail: put the errors in it
        lines = (run.report / st["log"]).read_text(errors="replace").splitlines()
        print(f"-- {st['name']}: {st['status']}; last lines of {st['log']}:")
        print("\n".join("   " + line[:200] for line in lines[-12:]))
    run.pack()
    print(f"wrote {', '.join(sorted(p.name for p in run.out.iterdir()))} in {run.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
