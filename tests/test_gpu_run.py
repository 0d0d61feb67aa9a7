"""scripts/gpu_run.sh, rehearsed on the CPU so that the one GPU run does not fail on
the script itself: every stage in a dry run, time limits, failures recorded, outputs
packed within what comes back (8 files of 16 MiB), and no notebook-only imports."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amms_lib.checkpoint import load_model
from amms_lib.data import EXPECTED_NAMES
from amms_lib.resize import imresize

ROOT = Path(__file__).resolve().parents[1]
# the benchmark refuses a set that is not the standard one: the standard names, tiny pixels
SET_NAMES = {name: sorted(EXPECTED_NAMES[name]) for name in ("Set5", "Set14")}


def _gpu_run_module():
    path = ROOT / "scripts" / "gpu_run.py"
    spec = importlib.util.spec_from_file_location("gpu_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """The staged layout (benchmark/<Set>/HR, LR_bicubic/X2) with small images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name, images in SET_NAMES.items():
        for image in images:
            # blocky noise: a 24x24 image with structure a network can learn a bit of
            hr = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            hr = hr.repeat(4, 0).repeat(4, 1)  # (24, 24, 3)
            lr_img = imresize(hr, 0.5)
            for sub, img, suffix in (("HR", hr, ""), ("LR_bicubic/X2", lr_img, "x2")):
                folder = root / "benchmark" / name / sub
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(folder / f"{image}{suffix}.png")
    return root


def test_dry_run_runs_every_stage_and_packs_what_comes_back(tiny_data, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PY": sys.executable, "AMMS_COMMIT": "abc1234"}
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(out),
                             "--dry-run", "--data", str(tiny_data),
                             "--work", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        stdout, stderr = proc.communicate(timeout=1000)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the script ends its running stage too
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"dry run over 1000 s (a busy machine?):\n{stdout[-3000:]}")
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, stdout[-3000:] + stderr[-2000:]

    files = sorted(p.name for p in out.iterdir())
    assert files == ["amms_x2.pt", "gpu_run.tar.gz", "metadata.json", "summary.json"]
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status.pop("nvidia-smi") in ("ok", "missing")
    assert status == dict.fromkeys(["env", "tests", "speed", "train", "benchmark",
                                    "register"], "ok")
    assert summary["elapsed_s"] < seconds and summary["data"] == str(tiny_data)

    with tarfile.open(out / "gpu_run.tar.gz") as tar:
        names = set(tar.getnames())
        speed, bench = (json.loads(tar.extractfile(f"gpu_run/{n}").read())
                        for n in ("speed.json", "benchmark.json"))
    assert {f"gpu_run/logs/{s}.log" for s in status} | {
        "gpu_run/tests.xml", "gpu_run/train_metrics.jsonl"} <= names
    assert [r["mode"] for r in speed["rows"]] == ["naive:cl+bf16"]
    assert speed["rows"][0]["it_s"] > 0 and speed["rows"][0]["finite"]
    got = {(r["dataset"], r["scale"]): r for r in bench["results"]}
    assert set(got) == {("Set5", 2), ("Set14", 2)}
    assert all(5 < r["psnr"] < 60 and r["n_images"] == len(SET_NAMES[d])
               for (d, _), r in got.items())

    meta = json.loads((out / "metadata.json").read_text())["amms_x2.pt"]
    assert meta["commit"] == summary["commit"] and meta["curve"]
    assert "amms_lib.train" in meta["command"]
    assert "--max-minutes 0.05" in meta["command"]
    net, ckpt = load_model(out / "amms_x2.pt", model="amms", scale=2)
    assert "optimizer" not in ckpt  # weights only: what comes back stays small
    assert "gpu_run" in stdout and "Set14 x2" in stdout


def _run(tmp_path, budget_s):
    args = argparse.Namespace(out=str(tmp_path / "out"), work=str(tmp_path / "work"),
                              data=str(tmp_path), dry_run=True, budget_s=budget_s)
    return _gpu_run_module().Run(args)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in "ZX"  # a reparented zombie is dead too


def test_a_failed_stage_is_recorded_and_the_next_still_runs(tmp_path):
    run = _run(tmp_path, budget_s=60)
    py = sys.executable
    fails = [py, "-c", "print('bad'); raise SystemExit(3)"]
    assert run.stage("fails", fails, 30) == "failed"
    assert run.stage("nothing", ["no-such-program-here"], 30) == "missing"
    assert run.stage("works", [py, "-c", "print('fine')"], 30) == "ok"
    stages = json.loads((tmp_path / "out" / "summary.json").read_text())["stages"]
    assert [(s["name"], s.get("rc")) for s in stages] == [
        ("fails", 3), ("nothing", None), ("works", 0)]
    with tarfile.open(tmp_path / "out" / "gpu_run.tar.gz") as tar:
        assert b"bad" in tar.extractfile("gpu_run/logs/fails.log").read()


def test_a_stuck_stage_is_killed_with_its_children_within_the_budget(tmp_path):
    """Its limit is the smaller of its own and what the budget has left; its workers go
    with it; once the budget is spent, later stages are skipped, not started."""
    run = _run(tmp_path, budget_s=4)
    pid_file = tmp_path / "child.pid"
    stuck = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
             f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    t0 = time.monotonic()
    assert run.stage("stuck", [sys.executable, "-c", stuck], 100) == "timeout"
    assert time.monotonic() - t0 < 15
    time.sleep(0.5)
    assert not _alive(int(pid_file.read_text()))
    assert run.stage("later", [sys.executable, "-c", "pass"], 100) == "skipped"


def test_stopped_from_outside_it_ends_the_running_stage_and_keeps_the_record(tmp_path):
    """SIGTERM (a timeout around the whole script) must not leave a stage running."""
    pid_file, script = tmp_path / "child.pid", ROOT / "scripts" / "gpu_run.py"
    out, work = tmp_path / "out", tmp_path / "w"
    driver = f"""
import argparse, importlib.util, sys
spec = importlib.util.spec_from_file_location("g", {str(script)!r})
g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
run = g.Run(argparse.Namespace(out={str(out)!r}, work={str(work)!r},
                               data=None, dry_run=True, budget_s=100))
run.handle_signals()
run.stage("stuck", ["bash", "-c", "sleep 60 & echo $! > {pid_file}; wait"], 100)
"""
    proc = subprocess.Popen([sys.executable, "-c", driver])
    for _ in range(200):
        if pid_file.is_file() and pid_file.read_text().strip():
            break
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + 15
    time.sleep(0.5)
    assert not _alive(int(pid_file.read_text()))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM"


def test_stopped_while_waiting_holds_its_lock_still_ends(tmp_path):
    """The signal can land while the stage's wait() holds its internal lock; a handler
    that waits on the stage itself would then block forever (it did, once, in CI)."""
    script = ROOT / "scripts" / "gpu_run.py"
    driver = f"""
import argparse, importlib.util, os, signal, subprocess
spec = importlib.util.spec_from_file_location("g", {str(script)!r})
g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
run = g.Run(argparse.Namespace(out={str(tmp_path / "out")!r}, work={str(tmp_path / "w")!r},
                               data=None, dry_run=True, budget_s=100))
run.handle_signals()
real, sent = subprocess.Popen._try_wait, []
def try_wait(self, flags):  # called with the wait lock held
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
    return real(self, flags)
subprocess.Popen._try_wait = try_wait
run.stage("stuck", ["sleep", "60"], 100)
"""
    proc = subprocess.Popen([sys.executable, "-c", driver], start_new_session=True)
    try:
        assert proc.wait(timeout=30) == 128 + 15
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["stages"][-1]["status"] == "stopped"


def test_train_speed_reports_a_failed_row_and_goes_on(tmp_path, monkeypatch, capsys):
    """A row that fails in its own process (here: made to) is reported as failed and the
    next row is measured; both go into the results file."""
    import runpy

    import amms_lib.memory

    out = tmp_path / "speed.json"
    real = amms_lib.memory.fresh_process
    monkeypatch.setattr(amms_lib.memory, "fresh_process", lambda argv: "exit 1: nope"
                        if argv[-1] == "naive:eager" else real(argv))
    monkeypatch.setattr(sys, "argv", [
        str(ROOT / "benchmarks" / "train_speed.py"), "--channels", "4", "--n-amms", "1",
        "--n-am", "1", "--batch-size", "1", "--lr-patch", "6", "--steps", "1", "--warmup",
        "1", "--device", "cpu", "--rows", "naive:eager", "full:eager", "--json", str(out)])
    with pytest.raises(SystemExit) as end:
        runpy.run_path(sys.argv[0], run_name="__main__")
    assert end.value.code in (0, None)
    rows = json.loads(out.read_text())["rows"]
    assert "error" in rows[0] and "nope" in rows[0]["error"]
    assert rows[1]["mode"] == "full:eager" and rows[1]["it_s"] > 0
    printed = capsys.readouterr().out
    assert "naive:eager" in printed and "failed" in printed


NOTEBOOK_ONLY = ("papermill", "nbval", "ipywidgets", "IPython", "ipykernel", "nbformat",
                 "nbclient", "jupyter_client", "jupyterlab", "yaml", "nbstripout",
                 "playwright")


def test_what_the_gpu_run_imports_needs_no_notebook_package():
    """The lent machine has torch, numpy, scikit-image, pillow, matplotlib, tqdm and
    pytest only: import every module the stages use with the notebook stack blocked."""
    code = f"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOTEBOOK_ONLY!r}:
            raise ModuleNotFoundError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
import amms_lib.train, amms_lib.benchmark, amms_lib.checkpoint, test_cuda, conftest
for script in ("scripts/register_run.py", "benchmarks/train_speed.py",
               "scripts/gpu_run.py"):
    runpy.run_path({str(ROOT)!r} + "/" + script, run_name="imported")
print("clean", sorted(m for m in sys.modules if m.split(".")[0] in {NOTEBOOK_ONLY!r}))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "clean []"


def test_the_driver_spells_out_the_library_s_tiny_network():
    from amms_lib.amms import AMMSConfig

    assert _gpu_run_module().TINY == AMMSConfig.tiny_kwargs()
