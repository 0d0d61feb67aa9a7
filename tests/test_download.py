"""Tests for amms_lib.download against a local HTTP server on 127.0.0.1.

Archives are built from the real Set5 images (AMMS_DATA, or ../shared/data).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from amms_lib import download
from amms_lib.data import EXPECTED_IMAGES
from amms_lib.download import check_benchmark, fetch, main
from amms_lib.errors import AmmsError


@pytest.fixture(scope="session")
def set5(data_dir) -> Path:
    return data_dir / "benchmark" / "Set5"


def _tar(files: dict[str, Path], extra=(), top="benchmark", mode="w") -> bytes:
    """A tar archive of ``files`` ({arcname under top: source}), then ``extra``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for arc, src in sorted(files.items()):
            tf.add(src, arcname=f"{top}/{arc}" if top else arc)
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _part(dest: Path, server) -> Path:
    """Where a download of the test server's benchmark.tar is kept while incomplete."""
    return dest / ".downloads" / (download.archive_name(server.url("benchmark.tar")) + ".part")


def _set_files(set_dir: Path) -> dict[str, Path]:
    return {f"{set_dir.name}/{p.relative_to(set_dir).as_posix()}": p
            for p in set_dir.rglob("*.png")}


@pytest.fixture(scope="session")
def set5_tar(set5) -> bytes:
    return _tar(_set_files(set5))


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours Range; can cut a response short once."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.seen.append((self.path, dict(self.headers)))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, total = 0, len(body)
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not srv.ignore_range:
            start = int(m[1])
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        cut = srv.cuts.pop(self.path, None)  # one-shot: cut only this response
        self.wfile.write(chunk if cut is None else chunk[:cut])
        self.close_connection = True


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.cuts, srv.seen, srv.ignore_range = {}, {}, [], False
    srv.url = lambda name: f"http://127.0.0.1:{srv.server_address[1]}/{name}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    """Never go through a proxy nor pick up a URL from the environment."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.delenv("AMMS_BENCHMARK_URL", raising=False)


def _assert_clean(dest: Path):
    assert not (dest / "benchmark").exists()
    assert not list(dest.glob(".extract-*"))


def _assert_same_hr(dest: Path, set5: Path):
    got = sorted((dest / "benchmark" / "Set5" / "HR").glob("*.png"))
    assert [p.name for p in got] == sorted(p.name for p in (set5 / "HR").glob("*.png"))
    assert len(got) == 5
    for p in got:
        assert p.read_bytes() == (set5 / "HR" / p.name).read_bytes()


def test_fetch_end_to_end_and_idempotent(server, set5, set5_tar, tmp_path, capsys):
    server.files["/benchmark.tar"] = set5_tar
    dest = tmp_path / "dest"
    out = fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"])
    assert out == dest / "benchmark"
    _assert_same_hr(dest, set5)
    assert check_benchmark(out, sets=["Set5"]) == {"Set5": 5}
    archive = dest / ".downloads" / download.archive_name(server.url("benchmark.tar"))
    assert not archive.exists()  # removed once installed
    assert not list(dest.glob(".extract-*"))
    assert "100%" in capsys.readouterr().err
    n = len(server.seen)
    assert fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"]) == out
    assert len(server.seen) == n == 1
    assert "already" in capsys.readouterr().err
    # another set asked for: the message never advises removing the valid sets there
    with pytest.raises(AmmsError, match="holds valid sets but not Set14: fetch into another"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5", "Set14"])
    _assert_same_hr(dest, set5)


def test_url_from_env_and_gzip_with_sets_at_top_level(server, set5, tmp_path,
                                                      monkeypatch):
    server.files["/sr.tar.gz"] = _tar(_set_files(set5), top="", mode="w:gz")
    monkeypatch.setenv("AMMS_BENCHMARK_URL", server.url("sr.tar.gz"))
    dest = tmp_path / "dest"
    assert fetch(dest, sets=["Set5"], progress=False) == dest / "benchmark"
    _assert_same_hr(dest, set5)
    assert server.seen[0][0] == "/sr.tar.gz"


def test_cli_success_and_unreachable(server, set5_tar, tmp_path, capsys):
    server.files["/benchmark.tar"] = set5_tar
    dest = tmp_path / "dest"
    argv = ["fetch", "--dest", str(dest), "--url", server.url("benchmark.tar"),
            "--sets", "Set5", "--no-progress"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert cap.err == ""
    assert "Set5 5" in cap.out and str(dest / "benchmark") in cap.out

    with socket.socket() as s:  # a port that nothing listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["fetch", "--dest", str(tmp_path / "other"), "--url",
            f"http://127.0.0.1:{port}/benchmark.tar", "--sets", "Set5",
            "--no-progress"]
    assert main(argv) == 2
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert cap.out == ""
    _assert_clean(tmp_path / "other")


def test_cli_unknown_set(tmp_path, capsys):
    assert main(["fetch", "--dest", str(tmp_path), "--sets", "Set6"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown set 'Set6'")


def test_cut_download_resumes(server, set5, set5_tar, tmp_path):
    half = len(set5_tar) // 2
    server.files["/benchmark.tar"] = set5_tar
    server.cuts["/benchmark.tar"] = half
    dest = tmp_path / "dest"
    with pytest.raises(AmmsError, match="resume") as err:
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    assert f"{half} of {len(set5_tar)} bytes" in str(err.value)
    _assert_clean(dest)
    part = dest / ".downloads" / (download.archive_name(server.url("benchmark.tar")) + ".part")
    assert part.stat().st_size == half
    assert "Range" not in server.seen[0][1]

    fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    assert server.seen[-1][1].get("Range") == f"bytes={half}-"
    assert half > 0
    _assert_same_hr(dest, set5)
    assert not part.exists()


def test_server_ignoring_range_starts_over(server, set5, set5_tar, tmp_path):
    server.files["/benchmark.tar"] = set5_tar
    server.ignore_range = True
    dest = tmp_path / "dest"
    (dest / ".downloads").mkdir(parents=True)
    _part(dest, server).write_bytes(b"junk" * 100)
    fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    assert server.seen[0][1].get("Range") == "bytes=400-"
    _assert_same_hr(dest, set5)  # the junk prefix was discarded, not kept


def test_complete_part_file_is_used(server, set5, set5_tar, tmp_path):
    server.files["/benchmark.tar"] = set5_tar
    dest = tmp_path / "dest"
    (dest / ".downloads").mkdir(parents=True)
    _part(dest, server).write_bytes(set5_tar)
    fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    assert len(server.seen) == 1  # answered 416, nothing re-sent
    _assert_same_hr(dest, set5)


def test_truncated_archive(server, set5_tar, tmp_path):
    server.files["/benchmark.tar"] = set5_tar[: len(set5_tar) // 2]
    dest = tmp_path / "dest"
    with pytest.raises(AmmsError, match="damaged.*delete"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    _assert_clean(dest)


def test_archive_cut_at_member_boundary_is_damaged(server, set5, tmp_path):
    files = _set_files(set5)
    whole = _tar(files)
    with tarfile.open(fileobj=io.BytesIO(whole)) as tf:
        last = tf.getmembers()[-1]  # cut right before the last member's header
    server.files["/benchmark.tar"] = whole[: last.offset]
    dest = tmp_path / "dest"
    with pytest.raises(AmmsError, match="damaged"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    _assert_clean(dest)


def _info(name, type=tarfile.REGTYPE, linkname="", data=b"evil"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type, linkname
    info.size = len(data) if type == tarfile.REGTYPE else 0
    return info, data if type == tarfile.REGTYPE else None


@pytest.mark.parametrize("kind", ["dotdot", "deep-dotdot", "absolute", "symlink",
                                  "hardlink", "fifo"])
def test_malicious_archive_refused(kind, server, set5, tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside.txt"
    member = {
        "dotdot": lambda: _info("../evil.txt"),
        "deep-dotdot": lambda: _info("benchmark/../../../outside.txt"),
        "absolute": lambda: _info(str(outside)),
        "symlink": lambda: _info("benchmark/Set5/HR/passwd.png", tarfile.SYMTYPE,
                                 "/etc/passwd"),
        "hardlink": lambda: _info("benchmark/Set5/HR/passwd.png", tarfile.LNKTYPE,
                                  "/etc/passwd"),
        "fifo": lambda: _info("benchmark/Set5/fifo", tarfile.FIFOTYPE),
    }[kind]()
    server.files["/benchmark.tar"] = _tar(_set_files(set5), extra=[member])
    with pytest.raises(AmmsError, match="unsafe"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    _assert_clean(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert sorted(p.name for p in dest.iterdir()) == [".downloads"]
    archive = download.archive_name(server.url("benchmark.tar"))
    assert [p.name for p in (dest / ".downloads").iterdir()] == [archive]
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("name, type, link", [
    ("../evil.txt", tarfile.REGTYPE, ""),
    ("benchmark/Set5/HR/passwd.png", tarfile.SYMTYPE, "/etc/passwd"),
], ids=["dotdot", "symlink"])
def test_tar_data_filter_is_second_defence(name, type, link, server, set5, tmp_path,
                                           monkeypatch):
    monkeypatch.setattr(download, "_unsafe", lambda member: None)
    server.files["/benchmark.tar"] = _tar(_set_files(set5),
                                          extra=[_info(name, type, link)])
    dest = tmp_path / "dest"
    with pytest.raises(AmmsError, match="unsafe"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    _assert_clean(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_python_dash_m_cli(server, set5, set5_tar, tmp_path):
    server.files["/benchmark.tar"] = set5_tar
    dest = tmp_path / "dest"
    env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "amms_lib.download", "fetch", "--dest", str(dest),
         "--url", server.url("benchmark.tar"), "--sets", "Set5"],
        env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "100%" in run.stderr
    assert run.stdout.count("\n") == 1 and "Set5 5" in run.stdout
    _assert_same_hr(dest, set5)


def test_archive_without_the_set(server, set5, tmp_path):
    server.files["/benchmark.tar"] = _tar(_set_files(set5))
    dest = tmp_path / "dest"
    with pytest.raises(AmmsError, match="Set14 is missing"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set14"], progress=False)
    _assert_clean(dest)


def test_existing_invalid_benchmark_is_not_replaced(server, set5, tmp_path):
    dest = tmp_path / "dest"
    shutil.copytree(set5, dest / "benchmark" / "Set5")
    (dest / "benchmark" / "Set5" / "HR" / "baby.png").unlink()
    with pytest.raises(AmmsError, match="remove it"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    assert server.seen == []


@pytest.fixture
def bench_copy(set5, tmp_path) -> Path:
    shutil.copytree(set5, tmp_path / "benchmark" / "Set5")
    return tmp_path / "benchmark"


def test_check_benchmark_real_data(data_dir):
    assert check_benchmark(data_dir / "benchmark") == EXPECTED_IMAGES


def test_check_benchmark_missing_hr_image(bench_copy):
    (bench_copy / "Set5" / "HR" / "bird.png").unlink()
    (bench_copy / "Set5" / "LR_bicubic" / "X2" / "birdx2.png").unlink()
    with pytest.raises(AmmsError, match="Set5: 4 of 5 HR images"):
        check_benchmark(bench_copy, sets=["Set5"])


def test_check_benchmark_wrong_lr_size(bench_copy):
    Image.new("RGB", (7, 9)).save(bench_copy / "Set5" / "LR_bicubic" / "X3"
                                  / "headx3.png")
    with pytest.raises(AmmsError, match=r"headx3\.png is \(7, 9\)"):
        check_benchmark(bench_copy, sets=["Set5"])


def test_check_benchmark_orphan_lr_missing_set_and_alias(bench_copy, data_dir):
    shutil.copy(bench_copy / "Set5" / "LR_bicubic" / "X4" / "babyx4.png",
                bench_copy / "Set5" / "LR_bicubic" / "X4" / "ghostx4.png")
    with pytest.raises(AmmsError, match=r"Set5: HR missing for 1 image\(s\): ghost"):
        check_benchmark(bench_copy, sets=["Set5"])
    with pytest.raises(AmmsError, match="Set14 is missing"):
        check_benchmark(bench_copy, sets=["Set14"])
    b100 = bench_copy / "B100" / "HR"
    b100.mkdir(parents=True)
    for i in range(100):  # 100 images, but not BSD100's (other names: matched by pixels)
        Image.new("L", (4, 4)).save(b100 / f"{i}.png")
    with pytest.raises(AmmsError, match="BSD100: 100 image.*not among the standard BSD100"):
        check_benchmark(bench_copy, sets=["BSD100"])
    for i, p in enumerate(sorted((data_dir / "benchmark/BSD100/HR").glob("img_*.png"))):
        shutil.copy(p, b100 / f"{i}.png")  # BSD100's own images under other names
    assert check_benchmark(bench_copy, sets=["BSD100"]) == {"BSD100": 100}


def test_default_url():
    assert download.DEFAULT_URL == "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"


def test_truncated_image_in_the_archive_is_not_installed(server, set5, tmp_path):
    # its PNG header is intact, so reading only headers would call the benchmark ready
    files = _set_files(set5)
    cut = tmp_path / "bird.png"
    raw = (set5 / "HR" / "bird.png").read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    files["Set5/HR/bird.png"] = cut
    server.files["/benchmark.tar"] = _tar(files)
    dest = tmp_path / "dest"
    with pytest.raises(AmmsError, match=r"HR/bird\.png cannot be read"):
        fetch(dest, url=server.url("benchmark.tar"), sets=["Set5"], progress=False)
    _assert_clean(dest)


def test_a_local_archive_path_is_installed_and_kept(set5_tar, tmp_path, capsys):
    archive = tmp_path / "benchmark.tar"
    archive.write_bytes(set5_tar)
    dest = tmp_path / "data"
    assert main(["fetch", "--dest", str(dest), "--url", str(archive), "--sets", "Set5",
                 "--no-progress"]) == 0
    assert (dest / "benchmark" / "Set5" / "HR" / "baby.png").is_file() and archive.is_file()
    assert main(["fetch", "--dest", str(tmp_path / "d2"), "--url", str(tmp_path / "nope.tar"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --url") and "no such archive" in err[0]


def test_a_killed_extraction_is_cleared_and_a_second_fetch_is_refused(server, set5_tar,
                                                                      tmp_path, capsys):
    from amms_lib.runtime import FolderLock

    server.files["/benchmark.tar"] = set5_tar
    dest = tmp_path / "data"
    left = dest / ".extract-k1ll3d00" / "content" / "benchmark"
    left.mkdir(parents=True)  # what a fetch killed while extracting leaves
    (left / "half.png").write_bytes(b"x" * 100)
    argv = ["fetch", "--dest", str(dest), "--url", server.url("benchmark.tar"), "--sets",
            "Set5", "--no-progress"]
    with FolderLock(dest, "fetch"):  # another fetch into the same --dest
        assert main(argv) == 2
    assert "in use by another fetch" in capsys.readouterr().err
    assert main(argv) == 0
    assert not list(dest.glob(".extract-*"))  # nothing partial left behind


def test_ctrl_c_during_fetch_is_one_line_and_130(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "fetch", interrupted)
    assert main(["fetch", "--dest", str(tmp_path), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]


def test_a_full_disk_during_download_says_so(server, set5_tar, tmp_path, monkeypatch):
    import builtins
    import errno

    server.files["/benchmark.tar"] = set5_tar
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Full(f) if str(path).endswith(".part") else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(AmmsError, match="disk is full.*free space"):
        fetch(tmp_path / "d", url=server.url("benchmark.tar"), sets=["Set5"], progress=False)


def test_the_layout_module_imports_no_command_line_code():
    """amms_lib.data owns the layout and imports nothing of the CLI (no import cycle)."""
    code = ("import sys, amms_lib.data; "
            "assert 'amms_lib.download' not in sys.modules, 'data imports download'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_check_benchmark_and_data_list_agree_on_what_an_image_file_is(bench_copy):
    """One rule (data.IMAGE_SUFFIXES): an HR image kept as .bmp counts for both."""
    from amms_lib import data

    hr = bench_copy / "Set5" / "HR"
    Image.open(hr / "bird.png").save(hr / "bird.bmp")
    (hr / "bird.png").unlink()
    assert check_benchmark(bench_copy, sets=["Set5"]) == {"Set5": 5}
    assert data.incomplete("Set5", root=bench_copy) == []
