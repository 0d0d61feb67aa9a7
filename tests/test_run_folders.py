"""What notebook 05 may train into (amms_lib.run_folders), notebook 06's results files and
notebook 07's equal-budget file: folder logic only, no training (the notebooks' own paths
are in test_notebooks.py)."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from amms_lib import equal_budget
from amms_lib.errors import AmmsError
from amms_lib.run_folders import (
    MARK,
    SUMMARY,
    check_run_dir,
    claim_run_dir,
    other_settings,
    write_results,
)
from amms_lib.runtime import cpu_bf16, repo_root
from amms_lib.train_config import TrainConfig


def _cfg(folder, **fields) -> TrainConfig:
    return TrainConfig(**{"model": "srcnn", "scale": 2, "epochs": 1, "iters_per_epoch": 20,
                          "device": "cpu", "amp": True, "cpu_amp": False,
                          "out_dir": str(folder), **fields})


def _run(cfg: TrainConfig, summary: bool = False, mark: str | None = None) -> bytes:
    """A folder as a finished run leaves it; returns its last.pt's bytes."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), default=str))
    (out / "last.pt").write_bytes(b"weights of " + str(out).encode())
    if summary:
        (out / SUMMARY).write_text('{"psnr": 30}')
    if mark:
        (out / MARK).write_text(json.dumps({"role": mark}))
    return (out / "last.pt").read_bytes()


def test_precision_and_device_are_settings_of_a_run_compile_is_not():
    cfg = _cfg("x", device="cuda")
    assert other_settings(cfg, asdict(cfg)) == []
    assert other_settings(cfg, asdict(replace(cfg, amp=False))) == ["precision"]
    assert other_settings(cfg, asdict(replace(cfg, device="cpu"))) == ["device", "precision"]
    assert other_settings(cfg, asdict(replace(cfg, device="cuda:0"))) == []  # the same device
    assert other_settings(cfg, asdict(replace(cfg, compile=True))) == []  # same arithmetic
    cpu = _cfg("x")  # on the CPU, amp alone is no autocast: cpu_amp decides
    assert other_settings(cpu, asdict(replace(cpu, amp=False))) == []
    assert other_settings(replace(cpu, cpu_amp=True), asdict(replace(cpu, amp=False))) == (
        ["precision"] if cpu_bf16() else [])  # emulated bf16 is not used: float32


def test_a_run_of_other_settings_is_kept_unless_retrain(tmp_path):
    earlier = _cfg(tmp_path / "run", device="cuda")  # bf16 autocast
    kept = _run(earlier, summary=True)
    assert check_run_dir(earlier, given=False).overwrite  # the same run: started over
    with pytest.raises(AmmsError, match="holds a run with other precision: pass another "
                                        "run_name .* retrain=True to replace it"):
        claim_run_dir(replace(earlier, amp=False), given=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == kept
    assert (tmp_path / "run" / SUMMARY).is_file()  # a refusal removes nothing
    cfg = claim_run_dir(replace(earlier, seed=1), given=False, retrain=True)
    assert cfg.overwrite and not (tmp_path / "run" / SUMMARY).exists()  # never stale


def test_a_given_out_dir_is_never_replaced_and_says_which_parameter_goes_on(tmp_path):
    earlier = _cfg(tmp_path / "run")
    _run(earlier)
    for cfg in (earlier, replace(earlier, seed=1)):
        with pytest.raises(AmmsError) as err:
            check_run_dir(cfg, given=True, retrain=True)
        assert "never replaced: resume=True continues it, or pass another out_dir" in str(err.value)
        assert "--" not in str(err.value)  # notebook parameters, not the CLI's flags
    resumed = check_run_dir(replace(earlier, resume=True), given=True)
    assert resumed.resume and not resumed.overwrite
    (tmp_path / "run" / "last.pt").unlink()
    with pytest.raises(AmmsError, match="resume=True, but it holds no last.pt"):
        check_run_dir(replace(earlier, resume=True), given=True)


@pytest.mark.parametrize("given", [False, True])
def test_a_run_beside_is_reused_only_when_it_is_this_notebooks_own(tmp_path, given):
    main = tmp_path / "h9"
    beside = _cfg(tmp_path / "h9_paper", recipe="paper", lr=1e-4)
    users = _run(replace(beside, iters_per_epoch=30), summary=True)  # a user's own h9_paper
    with pytest.raises(AmmsError) as err:
        claim_run_dir(beside, given=given, role="paper-recipe run", of=str(main))
    assert f"holds an earlier run, not this notebook's paper-recipe run of {main}" in str(
        err.value)
    assert ("retrain=True" in str(err.value)) != given  # beside a given out_dir: never
    assert (tmp_path / "h9_paper" / "last.pt").read_bytes() == users
    assert (tmp_path / "h9_paper" / SUMMARY).is_file()
    _run(beside, summary=True)  # the same settings, but the user's own run: still kept
    with pytest.raises(AmmsError, match="not this notebook's paper-recipe run"):
        check_run_dir(beside, given=given, role="paper-recipe run", of=str(main))
    if not given:  # retrain replaces it: marked as the notebook's, its summary gone
        cfg = claim_run_dir(beside, given=given, retrain=True, role="paper-recipe run",
                            of=str(main))
        assert cfg.overwrite and not (tmp_path / "h9_paper" / SUMMARY).exists()
        assert json.loads((tmp_path / "h9_paper" / MARK).read_text())["role"] == (
            "paper-recipe run")


def test_the_notebooks_own_run_beside_is_rerun_or_resumed_of_the_same_settings(tmp_path):
    check = _cfg(tmp_path / "run_step_check", epochs=3, iters_per_epoch=2)
    _run(check, mark="step check")
    for given in (False, True):
        cfg = claim_run_dir(check, given=given, role="step check", of="run")
        assert cfg.overwrite and not cfg.resume
        cfg = check_run_dir(replace(check, resume=True), given=given, role="step check",
                            of="run")
        assert cfg.resume and not cfg.overwrite
    with pytest.raises(AmmsError, match="step check of run, with other lr: move it away"):
        check_run_dir(replace(check, lr=1e-3), given=True, role="step check", of="run")
    # a step check from before the mark: exactly this run, and no summary.json
    (tmp_path / "run_step_check" / MARK).unlink()
    assert check_run_dir(check, given=True, role="step check", of="run").overwrite
    with pytest.raises(AmmsError, match="not this notebook's step check"):
        check_run_dir(replace(check, val_max_side=32), given=True, role="step check", of="run")


def test_a_notebooks_run_unmarks_its_folder(tmp_path):
    """A folder the notebook used as a run beside becomes a run of its own when a run_name
    names it: the mark goes, so the other run's rerun no longer takes it for its own."""
    cfg = _cfg(tmp_path / "h9_paper")
    _run(cfg, mark="paper-recipe run")
    claim_run_dir(cfg, given=False)
    assert not (tmp_path / "h9_paper" / MARK).exists()


def test_results_files_list_the_runs_given(tmp_path):
    write_results(tmp_path, {"budget": {"steps": 2}}, [{"variant": "a", "seed": 0, "psnr": 1.5}])
    assert json.loads((tmp_path / "results.json").read_text())["runs"][0]["psnr"] == 1.5
    assert (tmp_path / "results.csv").read_text().splitlines() == ["variant,seed,psnr", "a,0,1.5"]
    write_results(tmp_path, {"budget": {"steps": 2}}, [])  # none yet: an empty table
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == []


def test_equal_budget_file_relative_to_the_repository_or_one_clear_line(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # as papermill runs a notebook: not the repository
    committed = equal_budget.read("benchmarks/results/table2_cpu.json")
    assert committed == equal_budget.read() and equal_budget.rows(committed)
    with pytest.raises(AmmsError, match="table2_file benchmarks/results/table2_cpu.jsn: no "
                                        "such file"):
        equal_budget.read("benchmarks/results/table2_cpu.jsn")
    with pytest.raises(AmmsError, match="ablation_cpu.json is not an equal-budget results"):
        equal_budget.read("benchmarks/results/ablation_cpu.json")
    (tmp_path / "t2.json").write_text("[1, 2")
    with pytest.raises(AmmsError, match="t2.json: not readable JSON"):
        equal_budget.read("t2.json")  # the working folder's own file first
    monkeypatch.setattr(equal_budget, "RESULTS", tmp_path / "none.json")
    assert equal_budget.read() == {"models": {}}  # the default absent: nothing trained yet
    assert (repo_root() / "benchmarks" / "results" / "table2_cpu.json").is_file()


def test_a_folder_holding_only_a_summary_is_not_free(tmp_path):
    """out_dir naming a user's folder with a summary.json (no weights) had been taken as
    empty, and claiming it deleted the file."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summary.json").write_text('{"mine": 1}')
    with pytest.raises(AmmsError, match=r"holds an earlier run \(summary.json\)"):
        claim_run_dir(_cfg(folder), given=True)
    assert (folder / "summary.json").read_text() == '{"mine": 1}'


def test_a_table_folder_of_other_files_is_refused(tmp_path):
    """Notebook 07 with run_name naming a user's folder had replaced its table.json."""
    from amms_lib.run_folders import MARK, claim_table_folder

    own = {"table.json", "bicubic.json"}
    user = tmp_path / "user"
    user.mkdir()
    (user / "table.json").write_text("mine")
    (user / "notes.txt").write_text("mine")
    with pytest.raises(AmmsError, match=r"holds files this notebook did not write \(notes"):
        claim_table_folder(user, "07_benchmark", own)
    assert (user / "table.json").read_text() == "mine" and not (user / MARK).exists()
    new = claim_table_folder(tmp_path / "new", "07_benchmark", own)  # made and marked
    (new / "other.csv").write_text("a later file of the user's")
    assert claim_table_folder(new, "07_benchmark", own) == new  # marked: its own
    old = tmp_path / "old"  # an earlier run of 07, from before the mark
    old.mkdir()
    (old / "table.json").write_text("{}")
    assert claim_table_folder(old, "07_benchmark", own) == old


def test_where_a_notebook_trains(tmp_path, monkeypatch):
    """A given out_dir with a trailing slash had put the runs beside it inside it
    (``D/_step_check``); the default run without data shares no folder with the one with
    data (each had refused or replaced the other between two `make run`s)."""
    from amms_lib.run_folders import run_folder

    assert run_folder("05_train", "default", str(tmp_path / "D") + "/") == str(tmp_path / "D")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path / "none here"))
    monkeypatch.setattr("amms_lib.data.data_root", lambda: None)
    assert Path(run_folder("05_train", "default")).name == "default_builtin"
    assert Path(run_folder("05_train", "mine")).name == "mine"  # a named run: the user's
    monkeypatch.setattr("amms_lib.data.data_root", lambda: tmp_path)
    assert Path(run_folder("05_train", "default")).name == "default"
    for nothing in ("", ".", "..", "x/..", "../../checkpoints"):  # runs/05_train/ itself
        # or the shipped checkpoints/ folder
        with pytest.raises(AmmsError, match="names no folder inside runs/05_train/"):
            run_folder("05_train", nothing)
    # only named: a notebook refused before training leaves no empty folder behind
    monkeypatch.setattr("amms_lib.run_folders.repo_root", lambda: tmp_path)
    assert run_folder("05_train", "never") == str(tmp_path / "runs" / "05_train" / "never")
    assert not (tmp_path / "runs").exists()


def test_a_run_of_other_training_sets_or_unknown_settings_is_kept(tmp_path):
    """A named run trained with the data folder was retrained on the built-in images when
    the folder went away; a run folder without config.json was taken as the same run."""
    earlier = _cfg(tmp_path / "run", train_sets=("T91", "BSD200"))
    kept = _run(earlier)
    with pytest.raises(AmmsError, match="other train_sets"):
        check_run_dir(replace(earlier, train_sets=("skimage",)), given=False)
    (tmp_path / "run" / "config.json").unlink()
    with pytest.raises(AmmsError, match="no readable config.json"):
        check_run_dir(earlier, given=False)
    (tmp_path / "run" / "config.json").write_text("[1, 2")
    with pytest.raises(AmmsError, match="no readable config.json"):
        check_run_dir(earlier, given=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == kept
    assert check_run_dir(earlier, given=False, retrain=True).overwrite  # asked: replaced
