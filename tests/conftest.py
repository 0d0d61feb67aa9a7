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
