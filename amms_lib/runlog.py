"""A run folder's files: what a run writes (``OUT_FILES``), its metrics log (one JSON
object per logged step or validation: appended, read, cut back on resume), the temp files a
killed run leaves, and whether a folder may take a run without losing an earlier one."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from amms_lib.errors import AmmsError
from amms_lib.runtime import FolderLock, atomic_write, stale_temp_files
from amms_lib.train_config import TrainConfig

OUT_FILES = ("last.pt", "best.pt", "ema.pt", "config.json", "metrics.jsonl")  # what a run writes


def append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    """The records of a metrics log. A partial last line (the run was cut off while
    writing it: disk full, power loss) is skipped with one warning; a bad line before
    the end means the file is damaged."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise AmmsError(f"{path}: not a text file; the log is damaged: move it away "
                        "(a new run starts a fresh one)") from None
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with a step")
            records.append(record)
        except ValueError:  # json.JSONDecodeError included
            if i < len(lines) - 1:
                raise AmmsError(f"{path}: record {i + 1} is not a JSON object with a "
                                "step; the log is damaged: move it away (a new run "
                                "starts a fresh one)") from None
            print(f"warning: {path}: skipped a partial last line (the run was cut off "
                  "while writing it)", file=sys.stderr)
    return records


def truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so the log reads as one run."""
    if path.is_file():
        keep = [r for r in read_log(path) if r["step"] <= step]
        lines = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write(path, lambda f: f.write(lines), "w")


def remove_temp_files(out: Path) -> None:
    """Delete the temp files (``.last.pt.amms-tmp-<pid>.*``, ...) of atomic writes that a
    killed run left behind (each can be as large as a checkpoint): only those of this
    tool's files whose writer is gone (``runtime.stale_temp_files``)."""
    left = stale_temp_files(out, lambda name: name in OUT_FILES)
    for p in left:
        p.unlink(missing_ok=True)
    if left:
        print(f"removed {len(left)} temp file(s) left in {out} by an interrupted run",
              file=sys.stderr)


def read_metrics(out_dir) -> list[dict]:
    """The records of ``metrics.jsonl``."""
    return read_log(Path(out_dir) / "metrics.jsonl")


def run_dir_problem(cfg: TrainConfig, out: Path) -> str | None:
    """Why this run may not use ``out`` (an earlier run's results would be lost), or
    None. Read-only: every rank checks it before any rank writes."""
    if out.exists() and not out.is_dir():
        return f"--out-dir {out} is a file, not a folder; choose a folder"
    odd = [n for n in OUT_FILES if (out / n).exists() and not (out / n).is_file()]
    if odd:
        return (f"{out}: {', '.join(odd)} should be a file but is not (a folder?); move it "
                "away or choose another --out-dir")
    earlier = [n for n in OUT_FILES if (out / n).exists()]
    if cfg.resume and not (out / "last.pt").is_file() and earlier:
        return (f"{out}: --resume, but there is no last.pt to continue from (it holds "
                f"{', '.join(earlier)} of an earlier run); start over with --overwrite, "
                "or choose another --out-dir")
    if not cfg.resume and earlier and not cfg.overwrite:
        return (f"{out} holds an earlier run ({', '.join(earlier)}); continue it with "
                "--resume, start over with --overwrite (deletes those files), or choose "
                "another --out-dir")
    return None


def still_training(out: Path) -> str | None:
    """Why ``out``'s files are not a run's final ones: a training process holds the folder's
    ``FolderLock`` (named by pid where ``/proc/locks`` says which), or None when none does."""
    if not out.is_dir():
        return None
    try:
        FolderLock(out, "training").release()  # free: no run writes there now
        return None
    except AmmsError:
        pid = _flock_holder(out)
    return (f"{out} is still training (held by {f'pid {pid}' if pid else 'another process'}"
            "): wait for it to finish, or stop it (--resume continues it later) and register "
            "what it saved")


def _flock_holder(folder: Path) -> int | None:
    """The pid holding a ``flock`` on ``folder`` as Linux lists it in /proc/locks, or None."""
    st = os.stat(folder)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:  # not Linux
        return None
    for line in lines:
        parts = line.split()
        if "FLOCK" in parts and where in parts:
            return int(parts[parts.index(where) - 1])
    return None
