"""pyproject.toml and environment.yml list the same dependencies; stripped notebooks."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {Requirement(r).name: Requirement(r) for r in reqs}, project


def _conda_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in env["dependencies"] if isinstance(d, str)
                  and d.startswith("python"))
    return pip, python


def test_environment_yml_lists_the_pyproject_dependencies():
    py, project = _pyproject()
    pip, python = _conda_pip()
    editable = [p for p in pip if p.startswith("-e")]
    conda = {Requirement(p).name: Requirement(p) for p in pip if not p.startswith("-e")}
    assert set(conda) == set(py), set(conda) ^ set(py)
    for name, req in conda.items():
        if name == "torch":  # the pin must satisfy the library's range
            assert str(req.specifier) == "==2.13.0"
            assert py["torch"].specifier.contains("2.13.0")
        else:
            assert req.specifier == py[name].specifier, name
    extras = sorted(project["optional-dependencies"])
    assert editable == [f"-e .[{','.join(extras)}]"]
    assert re.fullmatch(r"python=3\.11", python)


def test_makefile_pins_the_same_torch():
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_notebooks_are_stored_without_outputs_and_have_parameters():
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), nb_path
        assert any("parameters" in c["metadata"].get("tags", []) for c in code), nb_path


def test_notebooks_pass_nbstripout_verify():
    notebooks = sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    done = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", *notebooks],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_parameters_cells_are_literal_and_documented():
    import ast

    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        src = "".join(cell["source"])
        for node in ast.parse(src).body:
            assert isinstance(node, ast.AnnAssign), (nb_path.name, ast.dump(node))
            assert isinstance(node.value, ast.Constant), (nb_path.name, node.target.id)
        for line in src.splitlines():
            # papermill --help-notebook drops a parameter whose comment holds "="
            assert "#" in line and "=" not in line.split("#", 1)[1], (nb_path.name, line)


def test_the_makefile_defines_each_target_once():
    """A bad edit had split a comment into a second `test-fast` recipe and a `clean` target
    that depended on `figures go to runs/figures/`: make warned and `make clean` failed."""
    targets = re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M)
    assert len(targets) == len(set(targets)), targets
    run = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), "clean"],
                         capture_output=True,
                         text=True)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr
    assert run.stdout.strip() == "rm -rf .venv runs"
