"""The equal-budget table (the paper's Table 2 at one CPU budget): reading the results
file ``benchmarks/table2_cpu.py`` writes (``benchmarks/results/table2_cpu.json``) into rows,
the rows still missing, and the README's markdown table. Notebook 07 and the study's
``--markdown`` read it here; the study itself trains and scores.
"""
from __future__ import annotations

import json
from pathlib import Path

from amms_lib.errors import AmmsError
from amms_lib.runtime import repo_root
from amms_lib.studies import shipped_by

MODELS = ("srcnn", "vdsr", "lapsrn", "memnet", "amms")
SETS = ("Set5", "Set14", "BSD100")
URBAN = "Urban100"  # scored apart, where affordable (benchmarks/table2_urban100.py)
RESULTS = Path("benchmarks") / "results" / "table2_cpu.json"  # the study's, in the repository


def read(path: str = "") -> dict:
    """The equal-budget results file as a dict. Empty ``path``: the committed study's
    (``RESULTS``), and while it is absent nothing is trained yet (``{"models": {}}``). A
    relative ``path`` is read from the current folder where it exists there, else from the
    repository root (a notebook runs in notebooks/). A given file that is missing, or not
    a results file of ``benchmarks/table2_cpu.py``, is one AmmsError line: it is never
    read as a study with nothing trained."""
    if not path and not (repo_root() / RESULTS).is_file():
        return {"models": {}}
    p = Path(path).expanduser() if path else repo_root() / RESULTS
    if not p.is_absolute() and not p.exists():
        p = repo_root() / p
    if not p.is_file():
        raise AmmsError(f"table2_file {path}: no such file (a relative path is read from "
                        f"{Path.cwd()}, else from the repository {repo_root()})")
    try:
        record = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AmmsError(f"{p}: not readable JSON ({exc}); pass table2_file another file, "
                        "or restore it (git checkout)") from None
    if not (isinstance(record, dict) and isinstance(record.get("models"), dict)
            and isinstance(record.get("bicubic"), dict)
            and (not record["models"] or all(k in record for k in
                                             ("budget", "minutes", "seconds_per_step")))):
        raise AmmsError(f"{p} is not an equal-budget results file (benchmarks/table2_cpu.py "
                        "writes those: its models, bicubic, budget, minutes and seconds per "
                        "step); pass table2_file such a file")
    return record


def rows(record: dict) -> list[dict]:
    """One flat row per trained network and scale, in MODELS order, with its budget."""
    return [{"model": m, "scale": int(key[1:]), **record["models"][m][key]}
            for scale in (2, 3, 4) for m in MODELS
            if (key := f"x{scale}") in record.get("models", {}).get(m, {})]


def missing(record: dict) -> list[str]:
    """"model xS" for every row of the design that has no result yet: named, not dropped."""
    done = {(r["model"], r["scale"]) for r in rows(record)}
    return [f"{m} x{s}" for s in (2, 3, 4) for m in MODELS if (m, s) not in done]


def markdown(record: dict) -> str:
    """The README's equal-budget table: PSNR/SSIM per set, with each row's budget."""
    if not isinstance(record.get("models"), dict):
        raise KeyError("models")  # another study's file: said in one line
    head = ("| x | method | params | steps | train min | lr | "
            + " | ".join(f"{s} dB" for s in SETS) + " | Urban100 dB | s/image (Set14, 1 thread) |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows(record):
        bic = record.get("bicubic", {}).get(f"x{r['scale']}", {})
        cells = [gain_cell(r["sets"][s]["psnr"], bic, s) for s in SETS]
        lines.append(f"| {r['scale']} | {r['model']} | {r['params']:,} | {r['steps']:,} | "
                     f"{r['train_minutes']:.1f} | {r['lr']:g} | " + " | ".join(cells)
                     + f" | {urban100_cell(r, bic)} | "
                     f"{r['seconds_per_image_1_thread']['Set14']:.2f} |")
    for key, sets in sorted(record.get("bicubic", {}).items()):
        lines.append(f"| {key[1:]} | bicubic | | | | | "
                     + " | ".join(f"{sets[s]['psnr']:.2f}" if s in sets else ""
                                  for s in (*SETS, URBAN)) + " | |")
    return "\n".join(lines)


def gain_cell(psnr: float, bic: dict, s: str) -> str:
    """A table cell: PSNR and, where bicubic's is known on that set, the gain over it."""
    return f"{psnr:.2f}" + (f" ({psnr - bic[s]['psnr']:+.2f})" if s in bic else "")


def urban100_cell(r: dict, bic: dict) -> str:
    """Urban100 PSNR (gain over bicubic) where scored (``table2_urban100.py``); else why not:
    the 2-core minutes it was estimated to cost, or that it was not tried."""
    if URBAN in r["sets"]:
        return gain_cell(r["sets"][URBAN]["psnr"], bic, URBAN)
    est = r.get("urban100_estimate_minutes")
    return f"left (~{est:.0f} min)" if est is not None else "not tried"


def registered(model: str, scale: int, row: dict) -> bool:
    """Whether ``checkpoints/`` already holds this row's weights (this study, same steps)."""
    return shipped_by(f"{model}_x{scale}.pt", "table2_cpu.py", row["steps"])
