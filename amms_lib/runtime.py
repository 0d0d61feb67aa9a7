"""Where things are and how a run is set up: repository root, mode, device, seed.

Notebooks and scripts share these so that a notebook started by nbval (in
``notebooks/``) and by papermill (in the caller's folder) resolve the same paths.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from amms_lib.errors import AmmsError


def repo_root() -> Path:
    """The checkout holding ``amms_lib`` (or the current folder for an installed copy)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def resolve_mode(mode: str = "auto") -> str:
    """``quick`` or ``full``: AMMS_MODE=quick wins, then a CUDA device means full."""
    if mode not in ("auto", "quick", "full"):
        raise AmmsError(f"mode must be 'auto', 'quick' or 'full', got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("AMMS_MODE", "").lower() == "quick":
        return "quick"
    return "full" if torch.cuda.is_available() else "quick"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is checked and returned."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise AmmsError(f"unknown device {device!r}; use auto, cpu, cuda or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AmmsError("device 'cuda' asked for, but torch sees no CUDA GPU; use auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
        raise AmmsError("device 'mps' asked for, but this machine has no Apple GPU; use "
                        "auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise AmmsError(f"device {device!r} is not supported; use auto, cpu, cuda or mps")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices) with one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Elsewhere (AVX2-only
    CPUs) PyTorch emulates bf16 and autocast runs slower, not faster: a training step of the
    compact AMMS ran 7x slower than float32 on a 2-core AVX2 EPYC (benchmarks/results/
    train_speed_avx2.json)."""
    caps = _cpu_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def cpu_name() -> str:
    """The CPU's model name as torch reads it (recorded beside machine-dependent results)."""
    return str(_cpu_capabilities().get("cpu_name", "unknown"))


def _cpu_capabilities() -> dict:
    return torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}


def relative(path) -> str:
    """``path`` relative to the checkout when it lies inside it (records that travel between
    machines and worktrees), else as it is; "" stays ""."""
    if not path:
        return ""
    p = Path(path).resolve()
    return str(p.relative_to(repo_root())) if p.is_relative_to(repo_root()) else str(path)


def figures_dir() -> Path:
    """Where the notebooks save their figures: ``AMMS_FIGURES``, else ``runs/figures/`` (git
    ignores it, so a run leaves the checkout clean). The curated ``figures/`` the docs show
    are regenerated on purpose: ``make figures`` (``AMMS_FIGURES=figures``)."""
    path = Path(os.environ.get("AMMS_FIGURES") or repo_root() / "runs" / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(notebook: str, run_name: str = "default") -> Path:
    """``runs/<notebook>/<run_name>/`` (git-ignored): a run's outputs."""
    path = repo_root() / "runs" / notebook / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe(**settings) -> str:
    """One line per resolved setting, for the notebooks' settings cell."""
    return "\n".join(f"{k:>10}: {v}" for k, v in settings.items())


def probe_writable(folder) -> None:
    """Make ``folder`` and write and delete a probe file there; OSError if that fails.
    A real write, because ``os.access`` says yes to root even on a read-only disk."""
    import tempfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".amms-probe.", dir=folder)
    os.close(fd)
    os.unlink(probe)


TEMP_TAG = "amms-tmp-"  # atomic_write's temp: .<name>.amms-tmp-<pid>.<mkstemp's 8>
_TEMP = re.compile(r"\.(?P<name>.+)\." + TEMP_TAG + r"(?P<pid>\d+)\.[A-Za-z0-9_]{8}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_temp_files(folder, names=None) -> list[Path]:
    """Temp files of ``atomic_write`` in ``folder`` whose writing process is gone (a
    killed run left them), optionally only those of targets whose name ``names(name)``
    accepts. A file merely named like one (``.photo_x2.png.original``) is never one:
    the name carries the writer's pid, and a live writer's temps are left alone."""
    found = []
    for p in Path(folder).iterdir():
        m = _TEMP.fullmatch(p.name)
        if (m and p.is_file() and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]))
                and (names is None or names(m["name"]))):
            found.append(p)
    return found


def atomic_write(path, write, mode: str = "wb", replace: bool = True) -> Path:
    """Write a file all-or-nothing: ``write(f)`` fills a temp file in the same folder,
    which is flushed, synced and renamed over ``path``; on any error it is removed and
    an existing ``path`` is left as it was. Permissions follow the umask, as ``open``.
    With ``replace=False`` an existing ``path`` (even one made meanwhile by another
    process) is never replaced: ``FileExistsError``."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TEMP_TAG}{os.getpid()}.",
                               dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        if replace:
            os.replace(tmp, path)
        else:  # a hard link fails if the name exists: no window between check and write
            os.link(tmp, path)
            Path(tmp).unlink()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def free_name(path) -> str:
    """``path``, or ``path-2``, ``path-3``, ... : the first name not taken (a dangling
    link takes its name too)."""
    name, n = str(path), 1
    while os.path.lexists(name):
        n += 1
        name = f"{path}-{n}"
    return name


def write_free(path, write, mode: str = "w") -> Path:
    """``atomic_write`` to ``path`` or, where that name is taken (even by a file made a
    moment ago), to the first free ``path-2``, ``path-3``, ...: never over anything.
    Returns the path written."""
    target = path
    while True:
        try:
            return atomic_write(target, write, mode, replace=False)
        except FileExistsError:
            target = free_name(path)


def _identity(path) -> tuple | None:
    """What tells one version of a file from another (replaced: another inode; edited in
    place: another size or time); None when there is nothing at ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_record(path) -> dict | None:
    """The JSON object a plain file (not a link) holds; None for anything else."""
    try:
        if os.path.islink(path) or not Path(path).is_file():
            return None
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@dataclass(frozen=True)
class ResultsKind:
    """What one script's ``--json`` file holds: its own top-level ``keys`` and no other,
    with ``rows`` a list of objects that each have ``row_keys``. The only file its
    ``--overwrite`` may replace: never a checkpoint, a registry or another script's record."""
    name: str
    keys: frozenset
    row_keys: frozenset
    rows: str = "rows"

    def holds(self, record: dict | None) -> bool:
        rows = (record or {}).get(self.rows)
        return (isinstance(rows, list) and set(record) <= self.keys
                and all(isinstance(r, dict) and self.row_keys <= set(r) for r in rows))


def require_at_least(args, **least) -> None:
    """Refuse, in one line (``AmmsError``) and before any work, a command-line number below
    its least value, or NaN (``require_at_least(args, steps=1, overlap=0)``; None: unset).
    A bad value had been measured as a failed row, or replaced a results file."""
    for name, low in least.items():
        value = getattr(args, name)
        if value is not None and not value >= low:  # NaN compares false
            raise AmmsError(f"--{name.replace('_', '-')} {value:g}: must be at least {low:g}")


def json_arg(path, example: str = "results") -> Path:
    """A ``--json`` argument as a Path, refused in one line (``AmmsError``) when it is
    empty (an unset variable: not "no --json") or names a folder (``DIR/``, ``DIR/.``:
    Path() would drop the slash or the dot and write a file named DIR)."""
    if not str(path).strip():
        raise AmmsError("--json is empty (an unset variable?): give a file name, or "
                        "leave --json out")
    if str(path).endswith(("/", os.sep)) or os.path.basename(str(path)) in (".", ".."):
        raise AmmsError(f"--json {path} names a folder; give a file name, e.g. "
                        f"{Path(path) / (example + '.json')}")
    return Path(path)


class ResultsFile:
    """A script's ``--json`` file, checked before any work and written after it without
    losing anything: an existing file is refused unless ``overwrite``, which replaces only
    results of the script's ``kind``; a write replaces only the file checked (or the one
    this run wrote last), so a file made or changed while the script ran is kept and the
    rows go beside it (``path-2``, ...), which ``said`` reports. The check raises
    ``AmmsError`` (one line)."""

    def __init__(self, path, kind: ResultsKind, overwrite: bool = False):
        self.asked = self.path = json_arg(path, kind.name)
        self.kind, self.overwrite = kind, overwrite
        self._replaceable = self._check()
        self.existed = self._replaceable is not None

    def _check(self) -> tuple | None:
        """The identity of the earlier results to replace (None: a new file)."""
        path = self.asked
        try:
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "it is a folder")
            probe_writable(path.parent)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            raise AmmsError(f"--json {path}: cannot write there ({e.strerror or e}{where}); "
                            "choose another path") from None
        if not os.path.lexists(path):
            return None
        if not self.overwrite:
            raise AmmsError(f"--json {path} exists (earlier results?): choose another path, "
                            "or pass --overwrite to replace it")
        identity = _identity(path)
        if not self.kind.holds(read_record(path)):
            article = "an" if self.kind.name[0] in "aeiou" else "a"
            raise AmmsError(f"--json {path} is not {article} {self.kind.name} results file (a "
                            "checkpoint, a registry, a link?): --overwrite replaces only "
                            "earlier results; choose another path")
        return identity

    def earlier(self) -> dict:
        """The earlier results ``--overwrite`` replaces, as they are now ({} if none), for a
        script that keeps some of them: ``write`` then replaces the file only if it is
        still what was read."""
        identity = _identity(self.path)
        record = read_record(self.path) if self.overwrite else None
        if identity is None or not self.kind.holds(record):
            return {}
        self._replaceable = identity
        return record

    def write(self, record: dict, indent: int = 1) -> Path:
        """Write ``record`` as JSON, all or nothing (``atomic_write``); where it went."""
        def dump(f):
            f.write(json.dumps(record, indent=indent))

        try:
            if self._replaceable is not None and _identity(self.path) == self._replaceable:
                atomic_write(self.path, dump, "w")
            else:
                self.path = write_free(self.asked, dump)
        except OSError as e:
            raise AmmsError(f"--json {self.path}: cannot write it ({e.strerror or e})") from None
        self._replaceable = _identity(self.path)
        return self.path

    def keep_partial(self, record: dict, why: str) -> str:
        """After a failure or Ctrl-C: ``record`` (the rows finished so far) beside the file,
        as ``path.partial`` (never over an earlier one), the file left as it was; the line
        that says so."""
        def dump(f):
            f.write(json.dumps({**record, "stopped": why}, indent=1))

        try:
            partial = write_free(Path(f"{self.asked}.partial"), dump)
        except OSError as e:
            return f"could not keep the finished rows ({e.strerror or e})"
        return f"wrote the finished rows to {partial} ({self.asked} is left as it was)"

    def said(self) -> str:
        """One line: where the rows went, and why there if not to ``--json``."""
        if self.path != self.asked:
            how = "changed" if self.existed else "appeared"
            return f"wrote {self.path} ({self.asked} {how} while this ran and is left as it was)"
        return f"wrote {self.path}" + " (replacing its earlier results)" * self.existed


def atomic_save(obj, path) -> Path:
    """``torch.save`` through ``atomic_write``: all or nothing."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def as_bool(value, name: str = "value") -> bool:
    """A notebook's yes/no parameter: True/False, 1/0, or the strings true/false, yes/no,
    on/off, 1/0 (papermill's ``-p resume no`` gives the string "no", which Python would
    take as true). Anything else is an AmmsError."""
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise AmmsError(f"{name}: {value!r} is not yes or no; give True or False")


def as_list(value, item=str, name: str = "value") -> list:
    """A notebook parameter naming one or more values, as a list of ``item``:
    ``4``, ``"Set5"``, ``"2,3,4"`` and ``[2, 3]`` all work (papermill's
    ``-p scales 4`` gives an int, ``-p scales 2,3`` a string). Blank items are
    dropped; a bad one is an AmmsError."""
    parts = value.split(",") if isinstance(value, str) else (
        list(value) if isinstance(value, (list, tuple)) else [value])
    out = []
    for part in parts:
        part = part.strip() if isinstance(part, str) else part
        if part == "":
            continue
        try:
            got = item(part)
        except (TypeError, ValueError):
            got = None
        if got is None or (item is int and not isinstance(part, str) and got != part):
            raise AmmsError(f"{name}: {part!r} is not a valid {item.__name__}; give "
                            "one value, a list or a comma-separated string")
        out.append(got)
    return out


class FolderLock:
    """One writer per folder: an exclusive ``fcntl.flock`` on the folder itself.

    A second process that asks for the same folder gets one clear error, or with ``wait``
    waits its turn (a read-modify-write of a shared file). The kernel drops the lock when
    its holder exits, killed or not, and it lives on the folder's file descriptor, so
    nothing is left behind in the folder. (POSIX only, like the tools.)
    """

    def __init__(self, folder, what: str = "process", wait: bool = False):
        import fcntl

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise AmmsError(f"{folder} is in use by another {what}; wait for it to "
                            "finish, or choose another folder") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def progress_off() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no progress bars. Passed to every bar explicitly:
    tqdm's notebook bars ignore the variable, and a bar executed by papermill is stored as a
    frozen "0%" that reads as if nothing ran (``make run`` sets it)."""
    return os.environ.get("TQDM_DISABLE", "0") not in ("", "0")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose bad-argument message is one line (no usage dump), exit 2, and which
    takes no shortened option (``--lr`` had silently meant ``--lr-patch``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str):
        print(f"error: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def cli(run: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a command-line entry point the suite's way: an ``AmmsError`` is one
    ``error: ...`` line and exit 2, Ctrl-C one line (``interrupted``) and exit 130, as
    a shell reports SIGINT; never a traceback for either. argparse's exit (bad
    arguments, ``--help``) becomes the return code."""
    try:
        return run()
    except SystemExit as exc:
        if isinstance(exc.code, str):  # sys.exit("error: ..."): say it, as Python would
            print(exc.code, file=sys.stderr)
            return 1
        return exc.code if isinstance(exc.code, int) else 0
    except AmmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


# what ``code_commit`` calls code (git pathspecs): a change elsewhere (results, registries,
# figures, prose) does not change what a run computes
CODE = ("*.py", "*.ipynb", "amms_lib/", "Makefile", "environment.yml", "pyproject.toml")


def code_commit(root: Path, short: bool = True) -> str:
    """The commit checked out at ``root``, ``+dirty`` with uncommitted changes to tracked
    code (``CODE``; a results file or registry a study is writing is not code), ``unknown``
    outside git: which code a study ran or a checkpoint was trained by."""
    import subprocess

    sha = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
                         cwd=root, capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE],
                           cwd=root, capture_output=True, text=True).stdout.strip()
    return sha + "+dirty" * bool(dirty)


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 1 MB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
