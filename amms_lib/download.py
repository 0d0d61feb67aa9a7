"""The data command line (``python -m amms_lib.data list | fetch``): list the data folder,
or download, safely unpack and check the EDSR super-resolution benchmark. The layout's
rules (set names, aliases, scales, expected counts) are ``amms_lib.data``'s.

Layout: ``benchmark/<Set>/HR/<name>.png``, ``.../LR_bicubic/X<s>/<name>x<s>.png``.
``dest/benchmark`` only appears once the whole benchmark has been checked: every
image decoded (a truncated PNG has a good header), HR counts and LR sizes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from gzip import BadGzipFile
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from amms_lib import data
from amms_lib.data import EXPECTED_IMAGES, SCALES
from amms_lib.errors import AmmsError
from amms_lib.images import read_image
from amms_lib.runtime import ArgumentParser, FolderLock, cli

DEFAULT_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
SET_FOLDERS = (*EXPECTED_IMAGES, *(a for a, c in data.ALIASES.items() if c in EXPECTED_IMAGES))
_CHUNK = 1 << 16
_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4


def _sets(sets) -> list[str]:
    """Normalise requested set names (``data.canonical``: ``B100`` is ``BSD100``)."""
    names = [data.canonical(n) for n in sets or EXPECTED_IMAGES]
    for name in names:
        if name not in EXPECTED_IMAGES:
            raise AmmsError(f"unknown set {name!r}; choose from "
                            + ", ".join(EXPECTED_IMAGES))
    return list(dict.fromkeys(names))


def _set_dir(root: Path, name: str) -> Path | None:
    try:
        return data.set_dir(name, root)
    except AmmsError:
        return None


def _images(folder: Path) -> list[Path]:
    """The image files of a folder (``data.image_files``), none for a missing folder."""
    return data.image_files(folder) if folder.is_dir() else []


def _size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a fully decoded image; None when it cannot be read."""
    try:
        return read_image(path).shape[1::-1]
    except AmmsError:
        return None


def _problems(root: Path, names: list[str]) -> tuple[list[str], dict[str, int]]:
    """What is wrong with the benchmark at ``root``, and the HR count per set: the
    layout's rules (``data.incomplete``: counts, duplicates, LR without HR or HR without
    LR), then what only a fresh download needs checking: every file decodes, and every
    LR image is its HR's size divided by the scale."""
    if not root.is_dir():
        return [f"{root} is not a folder"], {}
    problems, counts = [], {}
    for name in names:
        folder = _set_dir(root, name)
        if folder is None:
            problems.append(f"{name} is missing")
            continue
        problems += [f"{name}: {p}" for p in data.incomplete(name, root=root)]
        hr = _images(folder / "HR")
        sizes = {p.stem: _size(p) for p in hr}
        problems += [f"{p} cannot be read" for p in hr if sizes[p.stem] is None]
        for s in SCALES:
            for lr in _images(folder / "LR_bicubic" / f"X{s}"):
                hr_size = sizes.get(lr.stem.removesuffix(f"x{s}"))
                if hr_size is None:
                    continue  # an LR without its HR: data.incomplete said so
                got, want = _size(lr), (hr_size[0] // s, hr_size[1] // s)
                if got != want:
                    problems.append(f"{lr} is {got}, expected {want} "
                                    f"(HR {hr_size} / {s})")
        counts[name] = len(data.list_images(name, root))
    return problems, counts


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


def check_benchmark(benchmark_dir, sets=None) -> dict[str, int]:
    """Check HR counts and LR/HR size agreement; return ``{set: n_images}``."""
    root = Path(benchmark_dir)
    problems, counts = _problems(root, _sets(sets))
    if problems:
        raise AmmsError(f"benchmark at {root} is not valid: {_summary(problems)}; "
                        "delete it and run fetch again")
    return counts


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _download(url: str, archive: Path, progress: bool) -> None:
    """Download ``url`` to ``archive`` via ``<archive>.part``, resuming if possible."""
    part = archive.with_name(archive.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "amms_lib"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: complete, or stale
            if (e.headers.get("Content-Range") or "").strip() == f"bytes */{have}":
                part.replace(archive)
                return
            part.unlink()
            return _download(url, archive, progress)
        raise AmmsError(f"download of {url} failed with HTTP {e.code} {e.reason}; "
                        "check the URL (or AMMS_BENCHMARK_URL)") from None
    except (urllib.error.URLError, OSError, ValueError, HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise AmmsError(f"cannot download {url} ({reason}); check the network "
                        "connection and the URL (or AMMS_BENCHMARK_URL)") from None
    with resp:
        if resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)",
                             (resp.headers.get("Content-Range") or "").strip())
            if not m or int(m[1]) != have:
                raise AmmsError(f"server sent an unexpected byte range for {url}; "
                                f"delete {part} and run again")
            start, mode = have, "ab"
            total = int(m[3]) if m[3] != "*" else int(m[2]) + 1
            _say(f"resuming {archive.name} at {have} bytes", progress)
        else:  # 200: the whole file again, so start over
            start, mode, length = 0, "wb", resp.headers.get("Content-Length") or ""
            total = int(length) if length.isdigit() else None
            _say(f"downloading {url}", progress)
        done, shown = start, -1
        with open(part, mode) as f:
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    pct = done * 100 // total if total else done >> 20  # or MiB
                    if progress and pct != shown:
                        shown = pct
                        print(f"\r  {archive.name}: {pct}{'%' if total else ' MiB'}",
                              end="", file=sys.stderr, flush=True)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # not a network cut
                    raise AmmsError(f"the disk is full after {done} bytes of {archive.name} "
                                    f"({part}); free space, then run the same command "
                                    "again to resume") from None
            except HTTPException:
                pass  # the length check below reports it
        if progress and shown >= 0:
            print(file=sys.stderr, flush=True)
    if total is not None and done != total:
        raise AmmsError(f"download stopped after {done} of {total} bytes; run the "
                        "same command again to resume" if done < total else
                        f"got {done} bytes, expected {total}; delete {part} and retry")
    part.replace(archive)


def _unsafe(m: tarfile.TarInfo) -> str | None:
    """Why member ``m`` must not be extracted, or None when it is a plain file/dir."""
    if m.name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", m.name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", m.name):
        return "'..' in path"
    if m.issym() or m.islnk():
        return f"link to {m.linkname!r}"
    return None if m.isfile() or m.isdir() else "device, fifo or special file"


def _extract(archive: Path, out: Path) -> None:
    """Extract ``archive`` into ``out`` after checking every member."""
    damaged = (f"archive is damaged or not a tar file: {archive}; "
               "delete it and run again")
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            tf.fileobj.seek(tf.offset)  # a complete tar ends with a zero block
            if len(tf.fileobj.read(tarfile.BLOCKSIZE)) < tarfile.BLOCKSIZE:
                raise AmmsError(damaged)
            for m in members:
                if why := _unsafe(m):
                    raise AmmsError(f"archive member {m.name!r} is unsafe ({why}); "
                                    f"nothing extracted; delete {archive} and check "
                                    "the URL")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(out, members=members, **safe)  # filter: second defence
    except AmmsError:
        raise
    except _FILTER_ERROR as e:
        raise AmmsError(f"archive member is unsafe ({e}); delete {archive} "
                        "and check the URL") from None
    except (tarfile.TarError, EOFError, zlib.error, BadGzipFile):
        raise AmmsError(damaged) from None
    except OSError as e:
        raise AmmsError(f"cannot extract {archive} ({e}); check free disk space, "
                        "or delete the archive and run again") from None


def _find_benchmark(root: Path) -> Path:
    """The extracted folder named ``benchmark``, or the one holding the sets."""
    level = [root]
    for _ in range(4):  # breadth first, a few levels deep
        for d in level:
            if d.name == "benchmark" or any((d / f / "HR").is_dir() for f in SET_FOLDERS):
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    raise AmmsError("the archive holds no benchmark folder; check the URL "
                    "(or AMMS_BENCHMARK_URL)")


def archive_name(url: str) -> str:
    """The download's file name: the URL's base name, tagged by a hash of the whole URL,
    so that a corrected URL with the same base name never reuses a bad archive."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(urlsplit(url).path).name)
    tag = hashlib.sha1(url.encode()).hexdigest()[:8]
    return f"{tag}-{name.lstrip('.') or 'benchmark.tar'}"


def fetch(dest, url=None, sets=None, progress=True) -> Path:
    """Download, check and install the benchmark as ``dest/benchmark``; return it."""
    dest = Path(dest)
    url = url or os.environ.get("AMMS_BENCHMARK_URL") or DEFAULT_URL
    names = _sets(sets)
    target = dest / "benchmark"
    if target.exists():
        problems, _ = _problems(target, names)
        missing = [p.removesuffix(" is missing") for p in problems if p.endswith(" is missing")]
        if problems and len(missing) == len(problems):  # what is there is fine: keep it
            raise AmmsError(f"{target} holds valid sets but not {', '.join(missing)}: fetch "
                            f"into another --dest and move those set folders into {target} "
                            "(removing it would delete the sets it has)")
        if problems:
            raise AmmsError(f"{target} already exists but is not valid: "
                            f"{_summary(problems)}; remove it and run fetch again")
        _say(f"{target} is already in place and valid; nothing to download", progress)
        return target
    downloads = dest / ".downloads"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AmmsError(f"cannot create {downloads} ({e.strerror}); "
                        "choose another --dest") from None
    with FolderLock(dest, "fetch"):  # one fetch per folder: a second one is refused
        for left in dest.glob(".extract-*"):  # a killed fetch's half-extracted copy
            shutil.rmtree(left, ignore_errors=True)
        return _install(url, dest, downloads, names, target, progress)


def _install(url: str, dest: Path, downloads: Path, names, target: Path,
             progress: bool) -> Path:
    """Download (or take a local archive), extract to a temp folder, check, install."""
    local = Path(url).expanduser() if "://" not in url else None
    if local is not None and not local.is_file():
        raise AmmsError(f"--url {url}: no such archive file (a URL needs a scheme, e.g. "
                        "https://)")
    if local is not None:
        archive = local  # the user's own file: read, never moved or deleted
    else:
        archive = downloads / archive_name(url)
        if not archive.exists():
            _download(url, archive, progress)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        _say(f"extracting {archive.name}", progress)
        (tmp / "content").mkdir()
        _extract(archive, tmp / "content")
        found = _find_benchmark(tmp / "content")
        problems, _ = _problems(found, names)
        if problems:
            raise AmmsError(f"{archive} does not hold a valid benchmark: "
                            f"{_summary(problems)}; delete it and check the URL")
        if target.exists():
            raise AmmsError(f"{target} appeared while extracting; "
                            "remove it and run fetch again")
        found.rename(target)
        if local is None:
            archive.unlink()  # installed and checked: no need to keep a second copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def list_data() -> int:
    """``list``: the data folder's sets, their images and published LR scales; exit 1
    (with a warning) when there are none or a set is not the standard one."""
    root = data.data_root()
    if root is None:
        print(f"no data folder ({data.ENV_VAR} unset, data/ missing): built-in set "
              f"{data.BUILTIN!r} with {len(data.BUILTIN_IMAGES)} images from skimage.data")
        return 0
    print(f"data folder: {root}")
    if not data.list_sets():
        print(f"warning: no benchmark sets under {root} (expected benchmark/<Set>/HR/); "
              "fetch them: python -m amms_lib.data fetch --dest DIR", file=sys.stderr)
        return 1
    bad = []
    for name in data.list_sets():
        lr = [f"x{s}" for s in SCALES if (data.set_dir(name) / "LR_bicubic" / f"X{s}").is_dir()]
        print(f"  {name:10s} {len(data.list_images(name)):4d} images, "
              f"published LR: {' '.join(lr) or 'none'}")
        if problems := data.incomplete(name):
            bad.append(name)
            print(f"  {'':10s} NOT STANDARD: {'; '.join(problems)}")
    if bad:
        print(f"warning: non-standard set(s) {', '.join(bad)}: their means are not the "
              "published ones; re-fetch them (python -m amms_lib.data fetch --dest "
              "DIR)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    """Command line: ``list`` and ``fetch --dest DIR [--url URL] [--sets ...]
    [--no-progress]``."""
    parser = ArgumentParser(prog="python -m amms_lib.data",
                            description="See and get the SR benchmark sets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the data folder's sets and whether they are complete")
    p = sub.add_parser("fetch", help="download the benchmark into DEST/benchmark")
    p.add_argument("--dest", required=True, type=Path, help="folder to install into")
    p.add_argument("--url", help="archive URL (default: $AMMS_BENCHMARK_URL or EDSR's)")
    p.add_argument("--sets", nargs="+", metavar="SET", help=" ".join(EXPECTED_IMAGES))
    p.add_argument("--no-progress", action="store_true", help="print no progress")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad or missing command: argparse said why
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "list":
        return cli(list_data)

    def run() -> int:
        existed = (args.dest / "benchmark").is_dir()
        path = fetch(args.dest, url=args.url, sets=args.sets,
                     progress=not args.no_progress)
        counts = {n: len(data.list_images(n, path)) for n in _sets(args.sets)}
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        state = "already in place" if existed else "ready"
        print(f"benchmark {state} at {path} ({summary} images)")
        return 0

    return cli(run, interrupted="fetch interrupted: nothing was installed; run the same "
                                "command again to resume the download")


if __name__ == "__main__":
    raise SystemExit(main())
