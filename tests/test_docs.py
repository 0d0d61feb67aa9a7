"""The README is user documentation: short, and every link in it and in docs/ resolves."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_stays_within_its_word_budget():
    words = len((ROOT / "README.md").read_text().split())
    assert words <= 3000, f"README.md has {words} words; move records to docs/ (budget 3,000)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files {broken}"


def test_no_commit_hashes_or_session_logs_in_the_readme():
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"\b(commit|at) [0-9a-f]{7,40}\b", text)
    assert "session" not in text.lower()
