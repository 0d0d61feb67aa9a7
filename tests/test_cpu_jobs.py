"""The CPU studies' run helper (amms_lib.studies): a run stopped by its deadline
resumes to its last step, a finished run is not trained again, a failure is one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the benchmark scripts are on pytest's pythonpath

import pytest  # noqa: E402
import torch  # noqa: E402

from amms_lib.amms import AMMSConfig  # noqa: E402
from amms_lib.checkpoint import read_checkpoint  # noqa: E402
from amms_lib.inference import OVERLAP  # noqa: E402
from amms_lib.runtime import cpu_bf16, repo_root  # noqa: E402
from amms_lib.studies import (  # noqa: E402
    drop_state,
    heldout_curve,
    last_step,
    precision,
    run_training,
    train_command,
)


def _script(script: str, *argv, env: dict | None = None, cwd: Path | None = None):
    """``python benchmarks/SCRIPT ARGV`` run in this process (as ``__main__``) for the
    refusal tests: its exit status, stdout and stderr as ``subprocess.run`` gives them,
    without a new interpreter (importing torch: about 2 s a call). What it lets out is a
    traceback in stderr, as Python would print; argv, the environment, the working folder
    and torch's thread count are restored after it."""
    import contextlib
    import io
    import runpy
    import traceback
    from types import SimpleNamespace

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, dict(os.environ), torch.get_num_threads(), os.getcwd()
    sys.argv = [str(ROOT / "benchmarks" / script), *map(str, argv)]
    os.environ.update(env or {})
    code = 0
    try:
        os.chdir(cwd or saved[3])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(sys.argv[0], run_name="__main__")
            except SystemExit as exc:
                if isinstance(exc.code, str):  # Python prints it and exits 1
                    print(exc.code, file=sys.stderr)
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except Exception:  # noqa: BLE001  what a user would see: a traceback
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])
        torch.set_num_threads(saved[2])
        os.chdir(saved[3])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_a_run_stops_at_its_deadline_resumes_and_is_not_trained_twice(use_data, tmp_path,
                                                                       capsys):
    out = tmp_path / "run"

    def cmd_of(steps, out):  # the paper recipe: a 2-step run is the first 2 steps of 4
        return train_command("amms", 2, AMMSConfig.tiny_kwargs(), 5e-4, steps, out,
                             val_every=2, val_images=1, extra=(
                                 "--train-sets", "T91", "--val-max-side", "24",
                                 "--recipe", "paper"))

    cmd = cmd_of(4, out)
    assert not run_training(cmd, out, 4, deadline=time.time() + 30)  # under a minute left
    assert not out.exists()
    assert run_training(cmd, out, 4, deadline=float("inf"))
    assert last_step(out) == 4 and [s for s, _ in heldout_curve(out)] == [2, 4]
    log = (out / "train.log").read_text()
    assert run_training(cmd, out, 4, deadline=float("inf"))  # done: nothing runs
    assert (out / "train.log").read_text() == log
    assert read_checkpoint(out / "last.pt")["config"]["threads"] == 1
    # a run stopped half-way keeps its state; on a "new machine" (its folder gone) it resumes
    # from that state, ends where the uninterrupted run ended, and the state is removed
    half, state = tmp_path / "half", tmp_path / "state" / "half"
    assert not run_training(cmd_of(2, half), half, 4, float("inf"), state=state)
    assert sorted(p.name for p in state.iterdir()) == ["last.pt", "metrics.jsonl"]
    shutil.rmtree(half)
    assert run_training(cmd_of(4, half), half, 4, float("inf"), state=state)
    assert "resumed from the state kept in" in capsys.readouterr().out
    assert "steps 2..4" in (half / "train.log").read_text()  # trained from the kept step
    assert state.exists()  # until the caller has saved the result
    drop_state(state)
    assert not state.exists()
    for k, v in read_checkpoint(out / "last.pt")["state_dict"].items():
        assert torch.equal(read_checkpoint(half / "last.pt")["state_dict"][k], v), k
    bad = train_command("amms", 2, {"channels": -1}, 5e-4, 4, tmp_path / "bad")
    assert not run_training(bad, tmp_path / "bad", 4, deadline=float("inf"))
    assert "bad: training failed (exit 2); see" in capsys.readouterr().out
    assert "channels" in (tmp_path / "bad" / "train.log").read_text()


def test_a_float32_run_says_so_and_a_bf16_run_only_where_the_cpu_computes_it(tmp_path):
    """table2_cpu trains every row in float32 (``bf16=False``: no ``--cpu-amp``); the
    record's precision is what a run did on this CPU, not what it asked for."""
    for bf16 in (False, True):
        cmd = train_command("amms", 2, {}, 5e-4, 1, tmp_path, bf16=bf16)
        assert ("--cpu-amp" in cmd) == bf16
    assert precision({"config": {"cpu_amp": False}}) == "float32"
    assert precision({"config": {"cpu_amp": True}}) == (
        "bfloat16 autocast" if cpu_bf16() else "float32")


def test_table2_registers_a_finished_row_from_its_kept_copy(use_data, tmp_path, monkeypatch,
                                                            capsys):
    """A row finished on another machine: at x2 its kept copy is registered with the row's
    budget (once), at x3 the missing weights are named, not invented."""
    from types import SimpleNamespace

    import table2_cpu

    import amms_lib.checkpoint as ck
    from amms_lib import studies as cpu_jobs

    monkeypatch.setattr(ck, "checkpoints_dir", lambda: tmp_path / "checkpoints")
    monkeypatch.setattr(table2_cpu, "RUNS", tmp_path / "runs")  # no run on "this machine"
    monkeypatch.setattr(cpu_jobs, "VAL_IMAGES", 1)  # the study's 5, but quicker
    (tmp_path / "checkpoints").mkdir()
    out = tmp_path / "run"
    cmd = train_command("srcnn", 2, {}, 5e-4, 2, out, val_images=1,
                        extra=("--train-sets", "T91", "--val-max-side", "24"))
    assert run_training(cmd, out, 2, deadline=float("inf"))
    args = SimpleNamespace(json=str(tmp_path / "table2_cpu.json"))
    table2_cpu.kept_dir(args.json).mkdir()
    ck.register(out / "last.pt", command="kept", data="d", folder=table2_cpu.kept_dir(args.json))
    row = {"steps": 2, "lr": 5e-4, "train_minutes": 0.5, "core_hours": 0.008,
           "precision": "float32"}
    assert not table2_cpu.registered("srcnn", 2, row)
    table2_cpu.ship("srcnn", 2, row, args)
    meta = ck.read_metadata()["srcnn_x2.pt"]
    assert table2_cpu.registered("srcnn", 2, row)
    assert (meta["val_set"], meta["val_images"], meta["threads"], meta["cpu_hours"]) == (
        "heldout", 1, 1, 0.004)
    assert meta["curve"][0][0] == 0.5 and meta["selection"].startswith("final weights")
    table2_cpu.ship("srcnn", 3, row, args)
    assert "srcnn x3: its weights are not on this machine" in capsys.readouterr().out
    assert "srcnn_x3.pt" not in ck.read_metadata()


def test_size_study_ships_a_winner_finished_elsewhere_from_its_kept_copy(use_data, tmp_path,
                                                                       monkeypatch):
    """config_study.ship at x2 without the run on this machine: the kept copy, once, with
    the record's budget and its curve in minutes; at x3 without the run: nothing."""
    from types import SimpleNamespace

    import config_study

    import amms_lib.checkpoint as ck

    monkeypatch.setattr(ck, "checkpoints_dir", lambda: tmp_path / "checkpoints")
    monkeypatch.setattr(config_study, "RUNS", tmp_path / "runs")
    (tmp_path / "checkpoints").mkdir()
    out = tmp_path / "run"
    assert run_training(train_command("amms", 2, AMMSConfig.tiny_kwargs(), 5e-4, 2, out,
                                      val_images=1, extra=("--train-sets", "T91",
                                                           "--val-max-side", "24")),
                        out, 2, float("inf"))
    args = SimpleNamespace(json=str(tmp_path / "study.json"), lr=5e-4)
    config_study.kept(args).mkdir()
    shutil.copy(out / "last.pt", config_study.kept(args) / "tiny.pt")
    results = {"tiny_x2": {"steps": 2, "train_minutes": 0.5, "core_hours": 0.008,
                           "chosen": "last", "precision": "float32",
                           "curve": {"steps_heldout5_psnr": [[1, 30.0], [2, 31.0]]}},
               "tiny_x3": {"steps": 1, "chosen": "last"}}
    saved = []
    config_study.ship("tiny", 2, results, args, lambda: saved.append(1))
    meta = ck.read_metadata()["amms_x2.pt"]
    assert meta["curve"] == [[0.25, 30.0], [0.5, 31.0]] and meta["cpu_hours"] == 0.004
    assert meta["selection"].startswith("configuration and its last weights chosen")
    assert results["tiny_x2"]["registered"] and saved == [1]
    config_study.ship("tiny", 2, results, args, lambda: saved.append(2))  # once
    assert saved == [1]
    config_study.ship("tiny", 3, results, args, lambda: saved.append(3))
    assert "amms_x3.pt" not in ck.read_metadata() and saved == [1]


def test_a_study_scores_the_checkpoint_it_names_on_whole_images(tmp_path, monkeypatch):
    """``score_sets`` (every study's scorer) against the same weights scored here, image by
    image, with the metric itself: the checkpoint, the scale and the mean are the ones named
    (a set of two small images: whole-image attention on the built-in 512 px ones took a minute)."""
    import numpy as np
    from PIL import Image

    from amms_lib.studies import score_sets

    hr = tmp_path / "data" / "Mine" / "HR"
    hr.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, shape in (("a", (48, 40, 3)), ("b", (64, 56, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(hr / f"{name}.png")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path / "data"))

    from amms_lib import data, metrics
    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.inference import upscale
    from amms_lib.models import build_model

    torch.manual_seed(0)
    net = build_model("amms", 2, **AMMSConfig.tiny_kwargs()).eval()
    path = save_checkpoint(tmp_path / "w.pt", net, name="amms", scale=2,
                           model_kwargs=AMMSConfig.tiny_kwargs(), step=3, seconds=1.0)
    import amms_lib.inference as inference

    seen, real = [], inference.upscale  # the threads each image is upscaled with
    monkeypatch.setattr(inference, "upscale",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scores, loaded, ckpt = score_sets(path, 2, ["Mine"], per_image=True)
        assert seen == [1, 1] and torch.get_num_threads() == 2  # one thread, then the caller's
    finally:
        torch.set_num_threads(before)
    assert ckpt["step"] == 3
    torch.set_num_threads(1)  # as score_sets runs: another count sums convolutions in another
    try:  # order, which can move a PSNR in its sixth decimal
        mine = [metrics.evaluate(upscale(net, p.lr), p.hr, 2)
                for p in data.iter_pairs("Mine", 2)]
    finally:
        torch.set_num_threads(before)
    assert len(mine) == 2
    got = scores["Mine"]
    assert got["psnr"] == np.mean([p for p, _ in mine])
    assert got["ssim"] == np.mean([s for _, s in mine])
    assert [v[0] for v in got["per_image"].values()] == [p for p, _ in mine]
    assert got["seconds_per_image"] > 0


def test_the_size_study_goes_on_only_in_the_precision_it_began_in():
    """A bf16 study resumed on a float32-only CPU would mix precisions (and run 3.5x
    slower): refused with what to do, unless it is finished or began in this precision."""
    import config_study

    bf16 = {"costs_measured_on": {"precision": "bfloat16 autocast"}, "runs": {}}
    line = config_study.precision_refusal(bf16, "float32")
    assert "bfloat16 autocast" in line and "--any-precision" in line
    assert config_study.precision_refusal(bf16, "bfloat16 autocast") is None
    assert config_study.precision_refusal({}, "float32") is None  # nothing measured yet
    done = {**bf16, "winner": {"config": "c32m2"},
            "runs": {"c32m2_x3": {}, "c32m2_x4": {}}}
    assert config_study.precision_refusal(done, "float32") is None
    assert config_study.precision_refusal({**done, "runs": {"c32m2_x3": {}}}, "float32")


def test_the_size_study_table_shows_each_run_with_its_budget_and_gain():
    """``config_study.markdown``: x2 rows before x3, the kept candidate in bold, and each
    test-set cell with its gain over bicubic on the same images."""
    import config_study

    def sets(p):
        return {s: {"psnr": p} for s in ("heldout", *config_study.TEST_SETS)}

    run = {"params": 1000, "steps": 120, "train_minutes": 30.0,
           "heldout": {"last": {"psnr": 31.0}, "ema": {"psnr": 31.5}}, "chosen": "ema"}
    record = {"bicubic": {"x2": sets(30.0), "x3": sets(27.0)},
              "runs": {"a_x3": {**run, "scale": 3, "init_from": "k.pt", "sets": sets(28.0)},
                       "a_x2": {**run, "scale": 2, "sets": sets(32.25)}}}
    lines = config_study.markdown(record).splitlines()
    assert lines[2] == ("| a_x2 | 1,000 | scratch | 120 | 0.50 | 31.000 / **31.500** | "
                        "32.25 (+2.25) | 32.25 (+2.25) | 32.25 (+2.25) |")
    assert lines[3].startswith("| a_x3 | 1,000 | x2 body |") and lines[3].endswith("(+1.00) |")
    assert lines[4].startswith("| bicubic x2 |") and len(lines) == 6


def test_the_equal_budget_table_says_why_an_urban100_cell_is_empty():
    """``table2_cpu.markdown``: a scored Urban100 cell with its gain over bicubic, a refused
    one with its estimated cost, an untried one named so; bicubic's Urban100 on its row."""
    import table2_cpu

    def row(**extra):
        return {"params": 10, "steps": 5, "train_minutes": 1.0, "lr": 1e-3,
                "seconds_per_image_1_thread": {"Set14": 0.5},
                "sets": {s: {"psnr": 30.0} for s in table2_cpu.SETS}, **extra}

    scored = row()
    scored["sets"]["Urban100"] = {"psnr": 27.5}
    record = {"bicubic": {"x2": {s: {"psnr": 29.0} for s in (*table2_cpu.SETS, "Urban100")}},
              "models": {"srcnn": {"x2": scored},
                         "vdsr": {"x2": row(urban100_estimate_minutes=41.6)},
                         "lapsrn": {"x2": row()}}}
    lines = table2_cpu.markdown(record).splitlines()
    assert lines[2].endswith("| 27.50 (-1.50) | 0.50 |")
    assert lines[3].endswith("| left (~42 min) | 0.50 |")
    assert lines[4].endswith("| not tried | 0.50 |")
    assert lines[5] == "| 2 | bicubic | | | | | 29.00 | 29.00 | 29.00 | 29.00 | |"


def test_an_urban100_cell_over_budget_is_refused_with_its_estimate_recorded(tmp_path, monkeypatch,
                                                                           capsys):
    """``table2_urban100``: an unregistered row is skipped, a cell estimated over
    ``--max-minutes`` is not scored but its estimate is written into its row."""
    import json

    import table2_urban100 as tu

    results = tmp_path / "table2_cpu.json"
    rows = {"x2": {"steps": 5, "sets": {}}, "x3": {"steps": 5, "sets": {}}}
    results.write_text(json.dumps({"bicubic": {"x2": {"Urban100": {"psnr": 1.0}}},
                                   "models": {"vdsr": rows}}))
    monkeypatch.setattr(tu, "registered", lambda m, s, r: s == 2)
    monkeypatch.setattr(tu, "estimate_minutes", lambda *a: 90.0)  # one core: 45 of two
    monkeypatch.setattr(tu, "score_sets", lambda *a, **k: 1 / 0)  # must not be reached
    monkeypatch.setattr(sys, "argv", ["x", "vdsr:2", "vdsr:3", "--json", str(results)])
    tu.main()
    out = capsys.readouterr().out
    assert "vdsr:3: skipped" in out and "vdsr:2: refused: estimated 45 minutes" in out
    after = json.loads(results.read_text())["models"]["vdsr"]
    assert after["x2"]["urban100_estimate_minutes"] == 45.0
    assert "Urban100" not in after["x2"]["sets"]
    assert "urban100_estimate_minutes" not in after["x3"]


def test_a_shipped_urban100_cell_lands_in_the_size_studys_run_with_its_tile(tmp_path,
                                                                            monkeypatch):
    """``table2_urban100 shipped:S``: the cell goes into the size study's winning run (not
    the equal-budget table), with the tile it was scored with; a run whose weights are not
    the shipped ones is skipped."""
    import json

    import table2_urban100 as tu

    study, table = tmp_path / "study.json", tmp_path / "table.json"
    runs = {f"c48m2_x{s}": {"steps": 5, "sets": {"Set5": {"psnr": 30.0}}} for s in (2, 4)}
    bicubic = {f"x{s}": {"Urban100": {"psnr": 1.0}} for s in (2, 4)}
    study.write_text(json.dumps({"winner": {"config": "c48m2"}, "runs": runs, "bicubic": bicubic}))
    table.write_text(json.dumps({"models": {}, "bicubic": {}}))
    monkeypatch.setattr(tu, "shipped_is", lambda row, s: s == 2)
    monkeypatch.setattr(tu, "estimate_minutes", lambda *a: 10.0)
    seen = {}

    def fake_score(path, scale, sets, *, model, tile):
        seen.update(path=path.name, model=model, tile=tile)
        return {"Urban100": {"psnr": 31.5, "ssim": 0.9, "seconds_per_image": 3.0}}, None, None

    monkeypatch.setattr(tu, "score_sets", fake_score)
    monkeypatch.setattr(sys, "argv", ["x", "shipped:2", "shipped:4", "--tile", "64",
                                      "--json", str(table), "--study-json", str(study)])
    tu.main()
    after = json.loads(study.read_text())["runs"]
    assert seen == {"path": "amms_x2.pt", "model": "amms", "tile": 64}
    assert after["c48m2_x2"]["sets"]["Urban100"] == {"psnr": 31.5, "ssim": 0.9, "tile": 64,
                                                   "overlap": OVERLAP}
    assert after["c48m2_x2"]["sets"]["Set5"] == {"psnr": 30.0}  # the other sets kept
    assert after["c48m2_x2"]["urban100_estimate_minutes"] == 5.0
    assert "Urban100" not in after["c48m2_x4"]["sets"]
    assert json.loads(table.read_text()) == {"models": {}, "bicubic": {}}


def test_the_diagnostics_file_keeps_reports_of_checkpoints_not_named_again(use_data, tmp_path):
    """``attention_diagnostics.main``: a second checkpoint adds its report beside the first
    (whose weights may be on another machine); naming the first again replaces its report."""
    import json

    import attention_diagnostics

    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.models import build_model

    paths = []
    for step in (1, 2):
        torch.manual_seed(step)
        net = build_model("amms", 2, **AMMSConfig.tiny_kwargs())
        paths.append(str(save_checkpoint(tmp_path / f"w{step}.pt", net, name="amms", scale=2,
                                         model_kwargs=AMMSConfig.tiny_kwargs(), step=step)))
    out = str(tmp_path / "diag.json")

    def run(*ckpts, images=2, overwrite=True):
        assert attention_diagnostics.main([*ckpts, "--images", str(images), "--json", out,
                                           *["--overwrite"] * overwrite]) == 0
        record = json.loads(Path(out).read_text())
        assert "images" not in record  # one line for all reports had relabelled kept ones
        return record["reports"]

    # one image: no spread across images (it had written NaN into the results file)
    with pytest.raises(SystemExit) as exc:
        attention_diagnostics.main([paths[0], "--images", "1", "--json", out])
    assert exc.value.code == 2 and not Path(out).exists()

    assert [r["step"] for r in run(paths[0], overwrite=False)] == [1]
    assert sorted(r["step"] for r in run(paths[1], images=3)) == [1, 2]
    again = run(paths[0])
    assert sorted(r["step"] for r in again) == [1, 2] and len(again) == 2
    assert all(r["command"].startswith("python benchmarks/attention_diagnostics.py")
               for r in again)
    of = {r["step"]: r for r in again}
    assert len(of[2]["images"]) == 3 and of[2]["images_from"].startswith("the first 3 ")
    assert len(of[1]["images"]) == 2 and of[1]["images_from"].startswith("the first 2 ")


def test_the_diagnostics_never_replace_a_report_unasked(tmp_path, capsys):
    """`attention_diagnostics.py CKPT --images 2` had replaced the committed 6-image report
    of the shipped network with no --overwrite; a checkpoint as --json too. Both are refused
    in one line before any work (no checkpoint is loaded: the one named does not exist)."""
    import attention_diagnostics

    kept = tmp_path / "diag.json"
    kept.write_text('{"reports": []}')
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"weights")
    for argv, says in [(["--json", str(kept)], "exists (earlier results"),
                       (["--json", str(victim), "--overwrite"],
                        "is not an attention_diagnostics results file")]:
        assert attention_diagnostics.main([str(tmp_path / "none.pt"), *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert kept.read_text() == '{"reports": []}' and victim.read_bytes() == b"weights"


def test_the_committed_diagnostics_record_each_reports_images():
    """The committed file's image count was one top-level string that a later run
    rewrote for every kept report; each report now says which images it was computed on,
    and the notebooks' fields are all there."""
    import attention_diagnostics

    record = json.loads((ROOT / "benchmarks/results/attention_diagnostics.json").read_text())
    assert "images" not in record
    for r in record["reports"]:
        assert r["images_from"] == f"the first {len(r['images'])} of the held-out split, x2 LR"
        assert {"checkpoint", "step", "non_local", "second_order", "command"} <= set(r)
    old = {"images": "the first 6 of the held-out split, x2 LR",
           "reports": [{"images": list("abcdef"), "step": 3}]}
    assert attention_diagnostics.migrate(old) == {"reports": [{
        "images": list("abcdef"), "step": 3,
        "images_from": "the first 6 of the held-out split, x2 LR"}]}


def _write_cells(path, first, n):
    import table2_urban100 as tu

    for k in range(first, first + n):
        tu.update(path, "vdsr", 2, **{f"cell{k}": k})


def test_urban100_cells_written_side_by_side_keep_each_other(tmp_path):
    """Two processes writing cells into one results file (as two cells scored side by
    side do) lose none: each read-modify-write holds the results folder's lock."""
    import json
    import multiprocessing

    path = tmp_path / "table2_cpu.json"
    path.write_text(json.dumps({"bicubic": {"x2": {"Urban100": {"psnr": 1.0}}},
                                "models": {"vdsr": {"x2": {"sets": {}}}}}))
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_write_cells, args=(path, first, 60)) for first in (0, 60)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    row = json.loads(path.read_text())["models"]["vdsr"]["x2"]
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(k for k in row if k.startswith("cell")) == sorted(f"cell{k}" for k in range(120))


def test_the_finish_study_pairs_images_by_name_and_chooses_on_the_held_out_split():
    """``finish_study.analyse``: per-image differences matched by image name (not order),
    a t interval over the images, and the winner by whole held-out PSNR, whatever the
    test sets say."""
    import finish_study as fs

    def scored(held, per_image, set5):
        return {"heldout": {"psnr": held, "per_image": {k: [v, 0.9] for k, v in per_image.items()}},
                "sets": {s: {"psnr": set5} for s in fs.TEST_SETS}}

    start = scored(30.0, {"a": 30.0, "b": 31.0, "c": 29.0}, 37.0)
    p64 = scored(30.1, {"c": 29.1, "a": 30.1, "b": 31.1}, 36.0)  # other order, +0.1 each
    p128 = scored(29.9, {"a": 30.0, "b": 30.8, "c": 29.0}, 38.0)  # best on Set5: not chosen
    record = {"start": start, "runs": {"p64": {**p64, "patch": 64, "steps": 9, "train_minutes": 1},
                                       "p128": {**p128, "patch": 128, "steps": 2,
                                                "train_minutes": 1}}}
    result = fs.analyse(record)
    e = result["effects"]["p64 - start"]
    assert e["mean"] == pytest.approx(0.1) and e["sd"] == pytest.approx(0, abs=1e-12)
    assert e["n"] == 3 and e["resolved"]
    assert result["effects"]["p128 - p64"]["mean"] == pytest.approx((-0.1 - 0.3 - 0.1) / 3)
    assert result["winner"] == "p64"
    record["analysis"] = result
    table = fs.markdown(record)
    assert "| p128 | 128 | 2 |" in table and "p64 - start: +0.100 dB" in table


@pytest.mark.parametrize("script", ["ablation_cpu.py", "table2_cpu.py"])
@pytest.mark.parametrize("content, says", [
    ('{"runs": [', "is not readable JSON"),
    ("[1, 2]", "holds a JSON list"),
])
def test_a_damaged_results_file_is_one_line_before_any_work(tmp_path, script, content, says):
    """Truncated or list-valued results: one line, exit 1, the file untouched (a study
    that went on would have written its rows over it)."""
    results = tmp_path / "r.json"
    results.write_text(content)
    markdown = ([["--markdown", str(results)], ["--markdown", "--json", str(results)]]
                if script == "table2_cpu.py" else [])  # ablation_cpu has no table of its own
    for argv in (["--json", str(results)], *markdown):
        run = _script(script, *argv)
        assert run.returncode == 1, run.stderr[-1500:]
        assert run.stderr.strip().startswith("error:") and says in run.stderr
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert results.read_text() == content
    run = _script(script, "--jobs", "0", "--json", tmp_path / "new.json")
    assert run.returncode == 2 and "--jobs 0: must be at least 1" in run.stderr
    assert not (tmp_path / "new.json").exists()


@pytest.mark.parametrize("script, argv, held", [
    ("ablation_cpu.py", ["--steps", "5", "--seeds", "0", "--variants", "none", "--jobs", "1"],
     {"steps": 3000, "lr": 5e-4}),
    ("x4_init.py", ["--steps", "2"], {"steps": 1000, "config": "c48m2", "lr": 5e-4}),
    ("ideas_cpu.py", ["--steps", "5"], {"steps": 3000}),
    ("table2_cpu.py", ["--minutes", "1"], {"minutes": 30}),
    ("config_study.py", ["--hours", "0.01"], {"hours": 1.5, "ema": 0.999, "lr": 5e-4}),
    ("finish_study.py", ["--minutes", "1"], {"minutes": 25.0, "lr": 1e-4}),
])
def test_a_trial_budget_never_replaces_a_studys_record(tmp_path, script, argv, held):
    """`ablation_cpu.py --steps 5` had rewritten the committed file's steps (notebook 06
    then said '5 iterations per run'); `x4_init.py --steps 2` had replaced the 1000-step
    result. A file of another budget is refused before any work."""
    results = tmp_path / "r.json"
    results.write_text(json.dumps({**held, "runs": []}))
    before = results.read_text()
    run = _script(script, *argv, "--json", results, env={"AMMS_DATA": str(tmp_path / "none")})
    assert run.returncode == 1, run.stderr[-1500:]
    assert "pass --json another file for another budget" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and results.read_text() == before
    # a file without its budget (or with null): whose runs they are is unknown
    key = next(iter(held))
    for blank in ({**held, key: None}, {k: v for k, v in held.items() if k != key}):
        results.write_text(json.dumps({**blank, "runs": []}))
        before = results.read_text()
        run = _script(script, *argv, "--json", results,
                      env={"AMMS_DATA": str(tmp_path / "none")})
        assert run.returncode == 1 and f"without their {key}" in run.stderr, run.stderr[-500:]
        assert results.read_text() == before


def test_another_studys_file_or_a_folder_is_one_line(tmp_path):
    """table2_cpu --markdown given the ablation's results, or a table2 record of the wrong
    shape; ablation_cpu --json given a folder (it had taken it for 'no results yet')."""
    ablation = ROOT / "benchmarks" / "results" / "ablation_cpu.json"
    shaped = tmp_path / "shape.json"
    shaped.write_text('{"minutes": 20, "models": {"srcnn": {"x2": {}}}}')
    folder = tmp_path / "adir.json"
    folder.mkdir()
    for script, argv, says in [
            ("table2_cpu.py", ["--markdown", str(ablation)], "does not hold the results"),
            ("table2_cpu.py", ["--markdown", "--json", str(shaped)], "malformed: sets"),
            ("ablation_cpu.py", ["--json", str(folder), "--jobs", "1"], "is not a file")]:
        run = _script(script, *argv)
        assert run.returncode == 1 and says in run.stderr, run.stderr[-1500:]
        assert len(run.stderr.strip().splitlines()) == 1 and not run.stdout.strip()


def test_every_results_file_says_how_it_was_made():
    """Each committed result carries its invocations (command, commit, CPU, torch, threads,
    precision: studies.stamp), the ideas study's commands, or a note of what was not kept."""
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        record = json.loads(path.read_text())
        assert isinstance(record, dict) and {"invocations", "commands", "provenance"} & set(
            record), f"{path.name} does not say how it was made"


def test_stamp_appends_this_invocation(monkeypatch):
    from amms_lib.studies import stamp

    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--json", "r.json"])
    once = stamp({"rows": [1]}, threads=1, precision="float32")
    twice = stamp(once, threads=1)
    assert twice["rows"] == [1] and len(twice["invocations"]) == 2
    here = twice["invocations"][-1]
    assert here["command"] == "python benchmarks/x.py --json r.json"
    assert {"commit", "cpu", "torch", "python", "threads", "precision", "when"} <= set(here)
    assert here["commit"] not in ("", "unknown")  # the checkout's


def test_ideas_markdown_on_a_wrong_or_truncated_file_is_one_line(tmp_path):
    ablation = ROOT / "benchmarks" / "results" / "ablation_cpu.json"
    truncated = tmp_path / "t.json"
    truncated.write_text((ROOT / "benchmarks" / "results" / "ideas_cpu.json").read_text()[:400])
    for path, says in ((ablation, "does not hold the ideas study"), (truncated, "not readable")):
        run = _script("ideas_cpu.py", "--markdown", "--json", path, "--state", tmp_path)
        assert run.returncode == 1 and says in run.stderr, run.stderr[-1000:]
        assert len(run.stderr.strip().splitlines()) == 1


def test_kept_weights_are_the_shipped_file_their_record_names(tmp_path, monkeypatch):
    """A study keeps no second copy of weights checkpoints/ ships: the kept record's sha256
    names the shipped file; a shipped file with other bytes is not taken for it."""
    from amms_lib import checkpoint as ck
    from amms_lib.studies import kept_file

    kept = ROOT / "benchmarks" / "results" / "table2_cpu_x2"
    assert not (kept / "srcnn_x2.pt").exists()  # the duplicate copies are gone
    assert kept_file(kept, "srcnn_x2.pt") == ck.checkpoints_dir() / "srcnn_x2.pt"
    other = tmp_path / "checkpoints"
    other.mkdir()
    (other / "srcnn_x2.pt").write_bytes(b"other bytes")
    monkeypatch.setattr(ck, "checkpoints_dir", lambda: other)
    assert kept_file(kept, "srcnn_x2.pt") is None


def test_ideas_markdown_renders_the_committed_results():
    run = _script("ideas_cpu.py", "--markdown", cwd=ROOT)
    assert run.returncode == 0, run.stderr[-1500:]
    assert "| variant | params |" in run.stdout and "| variant | seed | s/step |" in run.stdout
    assert ", p = 0." in run.stdout and "read together (Holm over the" in run.stdout


@pytest.mark.parametrize("script", ["inference_options.py", "upscale_tiles.py",
                                    "upscale_time.py", "attention_rate.py", "train_speed.py"])
def test_a_measurement_never_replaces_an_earlier_record_unasked(tmp_path, script):
    """`--json` onto another machine's record (or a checkpoint) had replaced it; with
    --overwrite a checkpoint was replaced by JSON, and a folder let the whole measurement
    run into an IsADirectoryError traceback. Each is one line, before any work."""
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"weights")
    tiny = [a.replace("{ckpt}", str(victim)) for a in TINY[script]]  # never reached

    def run(*args):
        return _script(script, *tiny, *args)

    for args, says in [(["--json", str(victim)], "exists (earlier results"),
                       (["--json", str(victim), "--overwrite"],
                        f"{script[:-3]} results file (a checkpoint"),
                       (["--json", str(tmp_path), "--overwrite"], "cannot write there (it is "
                                                                  "a folder)")]:
        got = run(*args)
        assert got.returncode == 1 and says in got.stderr, (args, got.stderr[-800:])
        assert len(got.stderr.strip().splitlines()) == 1 and not got.stdout, got.stderr[-800:]
    assert victim.read_bytes() == b"weights" and os.listdir(tmp_path) == ["victim.pt"]


# tiny arguments per measurement script: what its own --json rows need, in seconds
TINY = {"attention_rate.py": ["--sides", "8", "--dims", "4"],
        "upscale_time.py": ["--checkpoint", "{ckpt}", "--sides", "16", "--tiled"],
        "inference_options.py": ["--checkpoint", "{ckpt}", "--set", "Set5", "--rounds", "1",
                                 "--tile", "16"],
        "upscale_tiles.py": ["--sets", "Set5", "--scales", "2", "--tiles", "16", "--images",
                             "1", "--no-whole"],
        "train_speed.py": ["--device", "cpu", "--rows", "full:eager"]}


def _tiny_script(script, tmp_path, monkeypatch):
    """``script``'s module and a function running its ``main`` in this process on TINY
    arguments (plus ``extra``), the heavy parts it does not write replaced by constants."""
    import importlib

    from amms_lib import speed
    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.models import build_model

    mod = importlib.import_module(script[:-3])
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "amms_x2.pt", build_model("amms", 2, **AMMSConfig.
                                                                 tiny_kwargs()),
                           name="amms", scale=2, model_kwargs=AMMSConfig.tiny_kwargs())
    monkeypatch.setattr(speed, "calibrate", lambda net, refresh=False: speed.Rates(
        conv=1e9, att=1e9, call=1e-3))
    for name, value in [("gemm_gflops", lambda: 100.0), ("checkpoints_dir", lambda: tmp_path),
                        ("fresh_process", lambda argv: [{
                            "mode": argv[-1], "warmup_s": 0.0, "it_s": 1.0, "patches_s": 16.0,
                            "peak_mb": 1.0, "params": 1, "finite": True}])]:
        if hasattr(mod, name):
            monkeypatch.setattr(mod, name, value)
    if script == "inference_options.py":  # its options' timing is not what is tested here
        monkeypatch.setattr(mod, "run", lambda net, lrs, option, tile=None: (
            1.0, [lr.repeat(2, axis=0).repeat(2, axis=1) for lr in lrs]))

    def run(*extra):
        args = [a.format(ckpt=ckpt) for a in TINY[script]]
        monkeypatch.setattr(sys, "argv", [f"benchmarks/{script}", *args, *extra])
        mod.main()

    return mod, run


@pytest.mark.parametrize("script", list(TINY))
def test_a_measurement_keeps_a_results_file_made_while_it_ran(use_data, tmp_path, monkeypatch,
                                                               capsys, script):
    """Two runs with one --json at once: the later one had replaced the earlier one's rows
    (the check is at the start, the write at the end), both exit 0. A file made (or, under
    --overwrite, replaced) meanwhile is kept and the rows go beside it, said in one line;
    --overwrite replaces the script's own earlier results."""
    mod, run = _tiny_script(script, tmp_path, monkeypatch)
    real_stamp, other = mod.stamp, {"target": None}

    def another_run_writes_first(record, **kw):  # just before this run writes its rows
        target = other["target"]
        if target and not (target.is_file() and target.read_text() == "the other run's rows"):
            target.write_text("the other run's rows")
        return real_stamp(record, **kw)

    monkeypatch.setattr(mod, "stamp", another_run_writes_first)
    out = tmp_path / "r.json"
    other["target"] = out
    run("--json", str(out))
    assert out.read_text() == "the other run's rows"
    mine = json.loads(Path(f"{out}-2").read_text())
    assert mine["rows"] and mine["invocations"][-1]["command"].endswith(f"{out}")
    assert f"wrote {out}-2 ({out} appeared while this ran" in capsys.readouterr().out
    # --overwrite replaces its own earlier results, saying so ...
    other["target"] = None
    run("--json", f"{out}-2", "--overwrite")
    assert "(replacing its earlier results)" in capsys.readouterr().out
    assert json.loads(Path(f"{out}-2").read_text())["rows"]
    # ... but not a file put there while it ran
    other["target"] = Path(f"{out}-2")
    run("--json", f"{out}-2", "--overwrite")
    assert Path(f"{out}-2").read_text() == "the other run's rows"
    assert json.loads(Path(f"{out}-2-2").read_text())["rows"]
    assert f"wrote {out}-2-2 ({out}-2 changed while this ran" in capsys.readouterr().out


def test_train_speed_takes_json_in_either_form(tmp_path):
    """`--json=FILE` ended in a traceback (`list.remove(x)`): the parent rebuilt its
    children's command by removing the `--json` and FILE tokens."""
    out = tmp_path / "speed.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--channels", "4",
         "--n-amms", "1", "--n-am", "1", "--batch-size", "1", "--lr-patch", "6", "--steps",
         "1", "--warmup", "1", "--device", "cpu", "--rows", "full:eager", f"--json={out}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["mode"] == "full:eager" and row["it_s"] > 0
    assert f"wrote {out}" in run.stdout


def test_a_measurement_stopped_with_ctrl_c_says_one_line(tmp_path):
    """Ctrl-C on a measurement script had printed a KeyboardInterrupt traceback."""
    import signal

    proc = subprocess.Popen(  # SIGINT as a terminal sends it (a background job ignores it)
        [sys.executable, "benchmarks/attention_rate.py", "--sides", "256", "--dims", "64",
         "128", "--json", str(tmp_path / "a.json")], cwd=repo_root(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().startswith("fp32 peak")  # measuring now, inside main
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "interrupted", err
    assert not (tmp_path / "a.json").exists()


def test_a_measurement_stopped_after_a_row_keeps_the_earlier_results(tmp_path):
    """train_speed --overwrite had written its file after every row: Ctrl-C after the first
    replaced a complete earlier record with one row, saying only "interrupted"."""
    import signal

    out = tmp_path / "speed.json"
    earlier = json.dumps({"header": "an earlier machine", "rows": [{"mode": "full:eager"},
                                                                    {"mode": "full:bf16"}]})
    out.write_text(earlier)
    proc = subprocess.Popen(  # SIGINT as a terminal sends it (a background job ignores it)
        [sys.executable, "benchmarks/train_speed.py", "--channels", "4", "--n-amms", "1",
         "--n-am", "1", "--batch-size", "1", "--lr-patch", "6", "--steps", "1", "--warmup",
         "1", "--device", "cpu", "--rows", "full:eager", "naive:eager", "--json", str(out),
         "--overwrite"], cwd=repo_root(), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    try:
        while not (line := proc.stdout.readline()).startswith("full:eager"):
            assert line, proc.stderr.read()[-2000:]  # the first row, then Ctrl-C in the 2nd
        proc.send_signal(signal.SIGINT)
        said, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "interrupted", err
    assert out.read_text() == earlier  # kept whole
    partial = json.loads(Path(f"{out}.partial").read_text())
    assert [r["mode"] for r in partial["rows"]] == ["full:eager"]
    assert partial["stopped"] == "interrupted"
    assert f"wrote the finished rows to {out}.partial ({out} is left as it was)" in said


def test_a_results_path_ending_in_a_slash_is_refused(tmp_path):
    """`--json newdir/` (or `newdir/.`) had written a file named newdir."""
    from amms_lib.errors import AmmsError
    from amms_lib.runtime import ResultsFile, ResultsKind

    with pytest.raises(AmmsError, match=r"names a folder; give a file name, e.g. .*newdir/t"):
        ResultsFile(f"{tmp_path}/newdir/", ResultsKind("t", frozenset(), frozenset()))
    with pytest.raises(AmmsError, match="names a folder"):
        ResultsFile(f"{tmp_path}/newdir/.", ResultsKind("t", frozenset(), frozenset()))
    assert not (tmp_path / "newdir").exists()


def test_cli_says_a_string_exit_and_ctrl_c_in_one_line(capsys):
    from amms_lib.runtime import cli

    assert cli(lambda: sys.exit("error: --json x exists")) == 1  # it had been swallowed
    assert capsys.readouterr().err == "error: --json x exists\n"

    def stopped():
        raise KeyboardInterrupt
    assert cli(stopped) == 130 and capsys.readouterr().err == "interrupted\n"
    assert cli(lambda: None) is None and cli(lambda: sys.exit()) == 0


def test_an_empty_json_or_no_data_folder_is_one_line(tmp_path):
    """`--json ""` (an unset variable) had been taken as no --json: exit 0, nothing
    written; x4_init without a data folder started both runs and failed each alone."""
    got = _script("train_speed.py", "--device", "cpu", "--rows", "full:eager", "--json", "")
    assert got.returncode == 1 and "--json is empty (an unset variable?)" in got.stderr
    if (ROOT / "data").is_dir():
        pytest.skip("a data/ folder beside the checkout is the data folder")
    got = _script("x4_init.py", "--steps", "2", "--json", tmp_path / "x4.json",
                  env={"AMMS_DATA": ""})
    assert got.returncode == 1 and "x4_init.py trains on T91 + BSD200 and needs the data" \
        in got.stderr, got.stderr[-800:]
    assert not (tmp_path / "x4.json").exists()



def test_every_benchmark_script_ends_through_the_cli_wrapper():
    """Ctrl-C in resize_speed.py had ended in a traceback: each script's __main__ block
    runs its main through runtime.cli (Ctrl-C and AmmsError in one line)."""
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if '__name__ == "__main__"' in text:
            block = text.split('__name__ == "__main__"', 1)[1]
            through = ("cli(", "markdown_or_main(")  # (studies.markdown_or_main calls cli)
            assert any(t in block for t in through) or "return cli(" in text, path.name


@pytest.mark.parametrize("script,argv,said", [
    ("train_speed.py", ["--device", "cpu", "--nl-modes", "full", "bogus"],
     "row 'bogus:eager': write NL_MODE:VARIANT"),
    ("train_speed.py", ["--device", "cpu", "--rows", "full:eager+fast"],
     "row 'full:eager+fast'"),
    ("upscale_memory.py", ["--tile", "0"], "--tile 0: must be at least 1"),
    ("upscale_memory.py", ["--images", "0"], "--images 0: must be at least 1"),
    ("table2_urban100.py", ["srcnn4"], "cell 'srcnn4': write MODEL:SCALE"),
    ("table2_urban100.py", ["srcnn:5"], "cell 'srcnn:5'"),
    ("table2_urban100.py", ["srcnn:²"], "cell 'srcnn:²'"),
    ("table2_urban100.py", ["bogus:2"], "cell 'bogus:2': write MODEL:SCALE with MODEL one of"),
    ("upscale_memory.py", ["--tile", "16", "--overlap", "40"], "--overlap 40 must be smaller"),
    ("upscale_memory.py", ["--naive-cap", "nan"], "--naive-cap nan: must be at least 0"),
    ("train_speed.py", ["--device", "cpu", "--steps", "0"], "--steps 0: must be at least 1"),
    ("train_speed.py", ["--device", "cpu", "--batch-size", "0"], "--batch-size 0: must be"),
    ("train_speed.py", ["--device", "cpu", "--lr-patch", "0"], "--lr-patch 0: must be"),
    ("x4_init.py", ["--lr", "-1"], "--lr -1: a learning rate must be above 0"),
    ("x4_init.py", ["--lr", "inf"], "--lr inf: a learning rate must be above 0"),
    ("ablation_cpu.py", ["--lr", "5"], "--lr 5: a learning rate must be above 0 and at most 1"),
    ("table2_cpu.py", ["--lrs", "-1", "nan"], "--lrs -1: a learning rate"),
    ("train_speed.py", ["--device", "cpu", "--rows", "full:eager", "full:eager"],
     "rows full:eager named twice"),
    ("ablation_cpu.py", ["--seeds", "0", "0"], "--seeds 0 0: name each seed once"),
    ("ablation_cpu.py", ["--threads", "0"], "--threads 0: must be at least 1"),
    ("config_study.py", ["--hours", "-1"], "--hours -1: a budget must be above 0"),
    ("config_study.py", ["--ema", "1.5"], "--ema 1.5: a weight-average decay"),
    ("finish_study.py", ["--minutes", "0"], "--minutes 0: a budget must be above 0"),
    ("x4_init.py", ["--init", "/nonexistent/x2.pt"], "--init /nonexistent/x2.pt: no such"),
    ("train_speed.py", ["--device", "cpu", "--lr", "7"], "unrecognized arguments: --lr 7"),
    ("table2_urban100.py", ["srcnn:2", "--json", ""], "--json is empty (an unset variable?)"),
])
def test_a_bad_argument_is_refused_before_any_work(tmp_path, script, argv, said):
    """These had been measured as failed rows with exit 0 (train_speed's misspelt mode, a
    0 px tile) or ended in a traceback (IndexError, IsADirectoryError); the results file
    is never touched."""
    out = tmp_path / "r.json"
    extra = ["--json", out] if "--json" not in argv and script == "train_speed.py" else []
    got = _script(script, *argv, *extra)
    assert got.returncode in (1, 2) and said in got.stderr, got.stderr[-800:]
    assert "Traceback" not in got.stderr and not out.exists()


def test_a_study_needs_both_training_sets(tmp_path):
    """x4_init with a data folder that lacked train/ started both runs, each failed alone,
    and it said 'run again to resume'."""
    root = tmp_path / "bonly"
    root.mkdir()
    (root / "benchmark").mkdir()
    got = _script("x4_init.py", "--steps", "2", "--json", tmp_path / "x4.json",
                  env={"AMMS_DATA": str(root)})
    assert got.returncode == 1 and "has no train/T91 or train/BSD200" in got.stderr, \
        got.stderr[-800:]
    assert not (tmp_path / "x4.json").exists()


def test_failed_rows_never_replace_measured_ones(tmp_path, monkeypatch):
    """train_speed --overwrite whose every row failed (there: --steps 0) had replaced the
    file's measured rows with one error row, exit 0."""
    import amms_lib.memory

    earlier = tmp_path / "ts.json"
    got = _script("train_speed.py", "--device", "cpu", "--rows", "full:eager", "--channels",
                  "4", "--n-amms", "1", "--n-am", "1", "--lr-patch", "8", "--batch-size", "1",
                  "--steps", "1", "--warmup", "0", "--json", earlier)
    assert got.returncode == 0 and '"it_s"' in earlier.read_text(), got.stderr[-800:]
    before = earlier.read_bytes()
    monkeypatch.setattr(amms_lib.memory, "fresh_process", lambda argv: "exit 1: boom")
    got = _script("train_speed.py", "--device", "cpu", "--rows", "full:eager",
                  "--json", earlier, "--overwrite")
    assert got.returncode != 0 and "no row was measured" in got.stderr, got.stderr[-800:]
    assert earlier.read_bytes() == before
