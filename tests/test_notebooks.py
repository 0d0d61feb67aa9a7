"""Parameter paths of the notebooks, run through papermill (nbval runs the defaults)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from amms_lib.checkpoint import read_checkpoint
from amms_lib.runtime import cpu_bf16

papermill = pytest.importorskip("papermill")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _stdout(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"]
                   for o in c.get("outputs", []) if o.get("name") == "stdout")


def test_list_parameters_take_one_value_a_list_or_a_comma_string():
    from amms_lib.errors import AmmsError
    from amms_lib.runtime import as_list

    assert as_list(4, int) == as_list("4", int) == [4]
    assert as_list("2, 3,4", int) == as_list([2, 3, 4], int) == [2, 3, 4]
    assert as_list((2, "3"), int) == [2, 3]
    assert as_list("Set5") == as_list(["Set5"]) == ["Set5"] and as_list("") == []
    for bad in ("2,x", 2.5, None):
        with pytest.raises(AmmsError, match="scales: .* is not a valid int"):
            as_list(bad, int, "scales")


def test_yes_no_parameters_take_a_bool_or_a_yes_no_word():
    """`-p rescore_shipped no` arrives as the string "no", which Python takes as true."""
    from amms_lib.errors import AmmsError
    from amms_lib.runtime import as_bool

    assert as_bool("no") is as_bool("False") is as_bool(0) is as_bool(" off ") is False
    assert as_bool("Yes") is as_bool(True) is as_bool("1") is True
    for bad in ("maybe", 2, None, ""):
        with pytest.raises(AmmsError, match="resume: .* is not yes or no"):
            as_bool(bad, "resume")


def _run(name: str, tmp_path, **parameters) -> Path:
    out = tmp_path / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), kernel_name="python3",
                               parameters=parameters, progress_bar=False,
                               cwd=str(tmp_path))
    return out


def _srcnn05(tmp_path, **parameters) -> Path:
    """05 on a small SRCNN, for the run-folder tests; the shipped checkpoint's re-score
    (about 40 s; nbval and the x4 test run it) left out."""
    return _run("05_train.ipynb", tmp_path, model="srcnn", rescore_shipped=False, **parameters)


def test_benchmark_notebook_takes_a_single_scale(use_data, tmp_path, monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # not figures/
    # `-p scales 4` arrives as an int; a list and a one-name string work as well
    out = _run("07_benchmark.ipynb", tmp_path, scales=4, datasets=["Set5"],
               methods="bicubic", run_name=str(tmp_path / "run"))  # absolute: not runs/
    text = _stdout(out)
    assert "scales: [4]" in text and "datasets: ['Set5']" in text
    rows = json.loads((tmp_path / "run" / "table.json").read_text())["results"]
    assert [(r["dataset"], r["scale"], r["n_images"]) for r in rows] == [("Set5", 4, 5)]
    # another name of a set (it had ended in a KeyError), and a rerun into the same folder
    _run("07_benchmark.ipynb", tmp_path, scales=4, datasets="B100", methods="bicubic",
         run_name=str(tmp_path / "run"))
    rows = json.loads((tmp_path / "run" / "table.json").read_text())["results"]
    assert [(r["dataset"], r["scale"], r["n_images"]) for r in rows] == [("BSD100", 4, 100)]


def test_train_notebook_checks_its_parameters_before_loading_data(tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("05_train.ipynb", tmp_path, scale=5, out_dir=str(tmp_path / "run"))
    assert err.value.ename == "AmmsError"
    assert "scale 5 is not supported" in err.value.evalue
    cells = json.loads((tmp_path / "05_train.ipynb").read_text())["cells"]
    failed = next(i for i, c in enumerate(cells)
                  if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    assert "".join(cells[failed]["source"]).startswith("mode = runtime.resolve_mode")
    assert not any(c.get("execution_count") for c in cells[failed + 1:])


@pytest.mark.parametrize("scale", [4])  # x3: 08 runs at x3 by default, 07 at every scale
def test_network_notebook_at_other_scales(tmp_path, scale, monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # keep figures/ curated
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "04_amms_network.ipynb"), str(out), kernel_name="python3",
        parameters=dict(scale=scale, channels=16, n_amms=1, lr_size=12, fusion="sequential"),
        progress_bar=False, cwd=str(tmp_path))
    text = _stdout(out)
    assert f"output (+ mean)            (1, 3, {12 * scale}, {12 * scale})" in text
    assert "fusion='sequential'" in text


def test_train_notebook_beats_bicubic_at_x4_without_a_data_folder(tmp_path, monkeypatch):
    """The mission's command, `papermill notebooks/05_train.ipynb out.ipynb -p scale 4`,
    with quick defaults and no data folder (as `make run` without one): 05 starts from the
    shipped x2 body, trains on the built-in images and ends clearly above bicubic on them.
    One run for both paths (x2 from scratch with data: nbval's run of 05)."""
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.delenv("AMMS_DATA", raising=False)
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # keep figures/ curated
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "05_train.ipynb"), str(out), kernel_name="python3",
        parameters=dict(scale=4, out_dir=str(tmp_path / "run")), progress_bar=False,
        cwd=str(tmp_path))
    text = _stdout(out)
    assert '"scale": 4' in text and f'"patch_size": {32 * 4}' in text
    assert "amms_x2.pt" in text  # it said where it started
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert all(i.startswith("skimage/") for i in summary["images"]), summary
    assert summary["psnr"] > summary["bicubic_psnr"] + 0.5, summary


def test_compare_notebook_at_x2(tmp_path, monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # keep figures/ curated
    out = tmp_path / "08.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "08_compare.ipynb"), str(out),
                               kernel_name="python3",  # the scale is under test: cheap
                               parameters=dict(scale=2, methods="bicubic,srcnn"),
                               progress_bar=False, cwd=str(tmp_path))
    assert "bicubic" in _stdout(out)


def test_ablation_notebook_runs_other_seeds_and_budgets(use_data, tmp_path, monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # not figures/
    run = tmp_path / "run"  # absolute: not runs/
    _run("06_ablation.ipynb", tmp_path, seeds="3,4", iterations=2, run_name=str(run))
    saved = json.loads(next(run.rglob("*.json")).read_text()) if run.exists() else None
    text = _stdout(tmp_path / "06_ablation.ipynb")
    assert "seeds" in text and "[3, 4]" in text
    assert (tmp_path / "figures" / "06_ablation.png").is_file()
    assert len(saved["runs"]) == 8  # 4 variants x 2 seeds
    # another budget into the same folder: refused before any training (it had retrained
    # all 8 runs over the old ones and replaced results.json without a word)
    results = next(run.rglob("results.json"))
    before = results.read_text()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("06_ablation.ipynb", tmp_path, seeds="3,4", iterations=3, run_name=str(run))
    assert err.value.ename == "AmmsError" and "holds 8 runs of another budget" in err.value.evalue
    assert results.read_text() == before
    # the same budget without the data folder: the training sets are a setting (a named
    # study had been retrained on the built-in images, rc 0)
    monkeypatch.delenv("AMMS_DATA")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("06_ablation.ipynb", tmp_path, seeds="3,4", iterations=2, run_name=str(run))
    assert "holds 8 runs of another budget" in err.value.evalue
    assert results.read_text() == before


def test_ablation_notebook_never_lists_runs_a_cut_retrain_replaced(use_data, tmp_path,
                                                                   monkeypatch):
    """A retrain cut short (Ctrl-C, a crash) had left results.json describing the runs it
    was replacing, and a rerun of the old budget printed their old numbers ("8 runs, 0
    trained now") over the new weights."""
    from amms_lib.runtime import FolderLock

    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    run = tmp_path / "run"  # absolute: not runs/
    _run("06_ablation.ipynb", tmp_path, seeds="0,1", iterations=2, run_name=str(run))
    with FolderLock(run / "only_non-local_seed1", "test"):  # cut after the first new run
        with pytest.raises(papermill.PapermillExecutionError) as err:
            _run("06_ablation.ipynb", tmp_path, seeds="0,1", iterations=3, retrain=True,
                 run_name=str(run))
    assert "only_non-local_seed1 is in use" in err.value.evalue
    saved = json.loads((run / "results.json").read_text())
    for r in saved["runs"]:  # each run listed is the run its folder holds
        config = json.loads((run / f"{r['variant'].replace(' ', '_')}_seed{r['seed']}"
                             / "config.json").read_text())
        assert config["iters_per_epoch"] == saved["budget"]["iters_per_epoch"], r
    assert [(r["variant"], r["seed"]) for r in saved["runs"]] == [("only non-local", 0)]
    with pytest.raises(papermill.PapermillExecutionError) as err:  # not read back as the old
        _run("06_ablation.ipynb", tmp_path, seeds="0,1", iterations=2, run_name=str(run))
    assert "holds 1 runs of another budget" in err.value.evalue


def test_benchmark_notebook_reads_a_table2_file_from_the_repository(use_data, tmp_path,
                                                                     monkeypatch):
    """A relative table2_file (papermill runs the notebook elsewhere), a typo or another
    study's file had all been read as a study with nothing trained ("15 of 15")."""
    from amms_lib import equal_budget

    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    cheap = dict(scales=2, datasets="Set5", methods="bicubic", run_name=str(tmp_path / "run"))
    for name, says in (("benchmarks/results/table2_cpu.jsn", "no such file"),
                       ("benchmarks/results/ablation_cpu.json", "not an equal-budget results")):
        with pytest.raises(papermill.PapermillExecutionError) as err:
            _run("07_benchmark.ipynb", tmp_path, table2_file=name, **cheap)
        assert err.value.ename == "AmmsError" and says in err.value.evalue
    out = _run("07_benchmark.ipynb", tmp_path, table2_file="benchmarks/results/table2_cpu.json",
               **cheap)  # relative to the repository; the notebook ran in tmp_path
    left = equal_budget.missing(equal_budget.read())
    assert f"not trained yet ({len(left)} of 15)" in _stdout(out) and len(left) < 15


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_valid_nbformat(path):
    """Schema-valid (e.g. no cell ids in a 4.4 notebook): editors and nbconvert refuse others."""
    import nbformat

    nbformat.validate(nbformat.read(path, as_version=4))


def test_ablation_full_mode_states_its_cost_and_refuses_it(use_data, tmp_path, monkeypatch):
    """Full mode's runs are estimated before any trains, and refused over max_hours."""
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    run = tmp_path / "run"
    with pytest.raises(papermill.PapermillExecutionError) as err:  # small nets: fast to time
        _run("06_ablation.ipynb", tmp_path, mode="full", device="cpu", channels=8, n_amms=1,
             batch_size=2, patch_size=48, run_name=str(run))
    assert err.value.ename == "AmmsError" and "over max_hours 1" in err.value.evalue
    text = _stdout(tmp_path / "06_ablation.ipynb")
    assert "estimated training time on cpu: 12 x 50,000 steps" in text
    assert not list(run.rglob("*.pt"))  # nothing trained


def test_train_notebook_never_replaces_a_run_of_other_settings(use_data, tmp_path,
                                                               monkeypatch):
    """A rerun into the same run_name with other parameters had replaced the earlier run's
    weights and curve; a folder beside a given out_dir (its step check) had been deleted."""
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    beside = tmp_path / "run_step_check"
    beside.mkdir()
    (beside / "config.json").write_text("{}")
    (beside / "last.pt").write_bytes(b"an earlier run")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _srcnn05(tmp_path, iters_per_epoch=5, out_dir=str(tmp_path / "run"))
    assert "holds an earlier run" in err.value.evalue
    assert (beside / "last.pt").read_bytes() == b"an earlier run"


def test_train_notebook_keeps_a_named_run_of_other_settings(use_data, tmp_path, monkeypatch):
    """A rerun into the same run_name with other settings had replaced the earlier run's
    best.pt, last.pt and curve without a word."""
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    run = tmp_path / "named"  # absolute: not runs/
    _srcnn05(tmp_path, iters_per_epoch=40, run_name=str(run))
    kept = (run / "last.pt").read_bytes()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _srcnn05(tmp_path, iters_per_epoch=41, run_name=str(run))
    assert "holds a run with other iters_per_epoch" in err.value.evalue
    assert (run / "last.pt").read_bytes() == kept
    # the precision is a setting too (bf16 autocast or float32 train other weights): amp=False
    # had replaced the run; on a CPU without native bf16 both runs compute in float32
    if cpu_bf16():
        with pytest.raises(papermill.PapermillExecutionError) as err:
            _srcnn05(tmp_path, iters_per_epoch=40, amp=False, run_name=str(run))
        assert "holds a run with other precision" in err.value.evalue
        assert (run / "last.pt").read_bytes() == kept


def test_train_notebook_trains_beside_its_run_only_over_its_own(use_data, tmp_path,
                                                                 monkeypatch):
    """Its step check (<run>_step_check) and the other recipe's run (<run>_<recipe>) had
    been trained over whatever run was there whenever no out_dir was given: a user's own
    run named h9_paper lost its weights, its summary.json left beside the new ones."""
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    mine = tmp_path / "mine_step_check"  # a run of the command line, named so by its user
    mine.mkdir()
    (mine / "config.json").write_text(json.dumps({"model": "srcnn", "out_dir": str(mine)}))
    (mine / "last.pt").write_bytes(b"a run of the command line")
    (mine / "summary.json").write_text("{}")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _srcnn05(tmp_path, iters_per_epoch=20, run_name=str(tmp_path / "mine"))
    assert err.value.ename == "AmmsError"
    assert "holds an earlier run, not this notebook's step check" in err.value.evalue
    assert "retrain=True to replace it" in err.value.evalue
    assert (mine / "last.pt").read_bytes() == b"a run of the command line"
    # asked to: replaced, and no summary.json of the old weights is left beside the new ones
    _srcnn05(tmp_path, iters_per_epoch=20, retrain=True, run_name=str(tmp_path / "mine"))
    assert (mine / "last.pt").read_bytes() != b"a run of the command line"
    assert not (mine / "summary.json").exists()
    # a user's own notebook run named h9_paper (unmarked, with its summary.json), then h9
    # comparing the recipes: h9_paper is kept whole
    theirs = tmp_path / "h9_paper"
    theirs.mkdir()
    (theirs / "config.json").write_text(json.dumps({"model": "srcnn", "recipe": "paper",
                                                     "out_dir": str(theirs)}))
    (theirs / "last.pt").write_bytes(b"a notebook run named h9_paper")
    (theirs / "summary.json").write_text("{}")
    kept = {p.name: p.read_bytes() for p in theirs.iterdir()}
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _srcnn05(tmp_path, iters_per_epoch=30, compare_recipes=True, run_name=str(tmp_path / "h9"))
    assert "holds an earlier run, not this notebook's paper-recipe run" in err.value.evalue
    assert not (tmp_path / "h9").exists()  # refused before its own run trained (or made)
    assert {p.name: p.read_bytes() for p in (tmp_path / "h9_paper").iterdir()} == kept


def test_train_notebook_resumes_a_given_out_dir(use_data, tmp_path, monkeypatch):
    """resume=True with a given out_dir had stopped at its earlier step check beside it,
    with advice in command-line flags; its own step check is rerun in place."""
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))
    out = tmp_path / "run"
    _srcnn05(tmp_path, iters_per_epoch=20, out_dir=str(out))
    with pytest.raises(papermill.PapermillExecutionError) as err:  # never replaced ...
        _srcnn05(tmp_path, iters_per_epoch=20, out_dir=str(out))
    assert "resume=True continues it" in err.value.evalue and "--" not in err.value.evalue
    _srcnn05(tmp_path, iters_per_epoch=40, resume=True,
             out_dir=str(out))  # ... but continued: 20 more steps
    assert read_checkpoint(out / "last.pt")["step"] == 40
    assert json.loads((out / "summary.json").read_text())["iterations"] == 40
