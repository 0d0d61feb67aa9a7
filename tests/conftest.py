"""Shared fixtures: where the real benchmark images are.

The data folder comes from AMMS_DATA (CI points it at ../shared/data), else the
shared folder beside the checkout. Tests that need it skip when it is absent, unless
AMMS_REQUIRE_DATA=1 (set by .ci/run), where a missing folder is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def find_data() -> Path:
    return Path(os.environ.get("AMMS_DATA") or SHARED)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding ``benchmark/`` with the real images."""
    root = find_data()
    if not (root / "benchmark" / "Set5" / "HR").is_dir():
        msg = f"benchmark images not found under {root} (set AMMS_DATA)"
        if os.environ.get("AMMS_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture
def use_data(data_dir, monkeypatch) -> Path:
    """Point the library's data setting at the real images for one test."""
    monkeypatch.setenv("AMMS_DATA", str(data_dir))
    return data_dir


def pytest_configure(config):
    # the speed cache (amms_lib.speed) of this run, not the user's ~/.cache; notebook
    # kernels started by nbval inherit it
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="amms-test-cache-")
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU; skipped without one (AMMS_REQUIRE_CUDA=1: "
        "fails instead, as scripts/gpu_run.py sets it)")
    config.addinivalue_line(
        "markers", "slow: executes notebooks, drives a browser, runs the tools as "
        "subprocesses or trains; `make test-fast` (-m 'not slow') leaves these out")


# the one place that says what is slow: whole files, then single tests elsewhere
SLOW_FILES = {"test_notebooks.py", "test_browser.py", "test_gpu_run.py", "test_cuda.py"}


def pytest_collection_modifyitems(config, items):
    """Mark the slow tier (notebook cells, SLOW_FILES); skip ``cuda`` tests where torch
    sees no GPU, saying why; on the lent GPU a broken CUDA set-up must not pass as
    skipped: AMMS_REQUIRE_CUDA=1 stops the run."""
    for item in items:
        if item.path.suffix == ".ipynb" or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    why = f"no CUDA GPU visible to torch {torch.__version__} (cuda {torch.version.cuda})"
    if os.environ.get("AMMS_REQUIRE_CUDA") == "1":
        raise pytest.UsageError(f"AMMS_REQUIRE_CUDA=1 but {why}")
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=why))


def chromium_path() -> str:
    """Chromium for tests/test_browser.py (AMMS_CHROMIUM, else chromium on PATH), with
    Playwright. Without them the whole module skips in one line saying how to enable
    it, unless AMMS_REQUIRE_BROWSER=1 (set by .ci/run): then it fails."""
    import importlib.util
    import shutil

    path = shutil.which(os.environ.get("AMMS_CHROMIUM") or "chromium")
    missing = [what for what, ok in [("Chromium", path),
                                     ("playwright", importlib.util.find_spec("playwright"))]
               if not ok]
    if missing:
        msg = (f"browser test needs {' and '.join(missing)}: enable it with "
               "`apt-get install chromium` (or AMMS_CHROMIUM=PATH) and "
               "`pip install -e '.[test]'`; .ci/run does both")
        if os.environ.get("AMMS_REQUIRE_BROWSER") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)
    return path
