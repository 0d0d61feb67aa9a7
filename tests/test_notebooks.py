"""Parameter paths of the notebooks, run through papermill (nbval runs the defaults)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _stdout(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"]
                   for o in c.get("outputs", []) if o.get("name") == "stdout")


@pytest.mark.parametrize("scale", [3, 4])
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


def test_train_notebook_at_x4(tmp_path, monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # keep figures/ curated
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "05_train.ipynb"), str(out), kernel_name="python3",
        parameters=dict(scale=4, iters_per_epoch=40, compare_recipes=False,
                        out_dir=str(tmp_path / "run")),
        progress_bar=False, cwd=str(tmp_path))
    text = _stdout(out)
    assert '"scale": 4' in text and '"patch_size": 96' in text
    assert (tmp_path / "run" / "best.pt").is_file()


def test_compare_notebook_at_x2(tmp_path, monkeypatch):
    monkeypatch.setenv("AMMS_MODE", "quick")
    monkeypatch.setenv("AMMS_FIGURES", str(tmp_path / "figures"))  # keep figures/ curated
    out = tmp_path / "08.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "08_compare.ipynb"), str(out),
                               kernel_name="python3", parameters=dict(scale=2),
                               progress_bar=False, cwd=str(tmp_path))
    assert "bicubic" in _stdout(out)
