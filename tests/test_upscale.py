"""The upscaling tool: tiling, self-ensemble, memory budget and every bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from amms_lib.amms import AMMSConfig
from amms_lib.checkpoint import save_checkpoint
from amms_lib.data import load_pair
from amms_lib.errors import AmmsError
from amms_lib.images import read_image, write_image
from amms_lib.inference import estimate_memory, spans, upscale
from amms_lib.metrics import psnr
from amms_lib.models import build_model
from amms_lib.non_local import NonLocalBlock
from amms_lib.resize import imresize
from amms_lib.upscale import main

KW = AMMSConfig.tiny_kwargs()


def tiny_net(scale: int = 2, seed: int = 0) -> torch.nn.Module:
    """A tiny AMMSNet whose non-local blocks matter (their W is no longer zero)."""
    torch.manual_seed(seed)
    net = build_model("amms", scale, **KW).eval()
    for m in net.modules():
        if isinstance(m, NonLocalBlock):
            torch.nn.init.normal_(m.out.weight, std=1.0)
    return net


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread skips OpenMP overhead (8x faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net():
    return tiny_net()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, net):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_x2.pt", net,
                           name="amms", scale=2, model_kwargs=KW)


def rand_img(h: int, w: int, c: int | None = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path, img, **kw):
    Image.fromarray(img).save(path, **kw)
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    """Run the tool in this process: (exit status, stderr)."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# --- tiling and self-ensemble -----------------------------------------------------


def test_spans_cover_the_axis_once():
    for n, tile, overlap in [(10, 4, 2), (7, 7, 3), (5, 8, 1), (130, 48, 16)]:
        cores = np.zeros(n, int)
        for a, b, i, j in spans(n, tile, overlap):
            cores[a:b] += 1
            assert i == max(a - overlap, 0) and j == min(b + overlap, n)
        assert (cores >= 1).all() and cores.sum() <= n + tile


def test_tiled_matches_untiled_within_0_01_db(use_data, net):
    pair = load_pair("Set5", "butterfly", 2)  # LR 128x128
    ref = upscale(net, pair.lr)
    base = psnr(ref, pair.hr, shave=2)
    tiled = upscale(net, pair.lr, tile=48, overlap=16)
    seams = upscale(net, pair.lr, tile=48, overlap=0)
    assert abs(psnr(tiled, pair.hr, shave=2) - base) < 0.01
    assert psnr(tiled, ref) > 55  # nearly the same image ...
    # ... while without overlap the zero padding at each tile edge shows
    assert abs(psnr(seams, pair.hr, shave=2) - base) > 0.02
    assert psnr(seams, ref) < psnr(tiled, ref) - 15


def test_non_local_attention_matters_in_the_test_network(net):
    img = rand_img(24, 20)
    nl = next(m for m in net.modules() if isinstance(m, NonLocalBlock))
    w = nl.out.weight.detach().clone()
    with torch.no_grad():
        nl.out.weight.zero_()
        plain = upscale(net, img)
        nl.out.weight.copy_(w)
    assert psnr(plain, upscale(net, img)) < 45


def test_image_smaller_than_tile_or_scale():
    net4 = tiny_net(scale=4)
    img = rand_img(3, 3)  # smaller than the scale and than the tile
    out = upscale(net4, img, tile=64)
    assert out.shape == (12, 12, 3)
    np.testing.assert_array_equal(out, upscale(net4, img))


def test_ensemble_shape_differs_and_is_flip_equivariant(net):
    img = rand_img(20, 14)
    plain, ens = upscale(net, img), upscale(net, img, ensemble=True)
    assert ens.shape == plain.shape == (40, 28, 3) and not np.array_equal(ens, plain)
    flipped = upscale(net, img[:, ::-1], ensemble=True)
    assert np.abs(flipped[:, ::-1].astype(int) - ens).max() <= 1  # float rounding
    tiled = upscale(net, img, tile=8, overlap=8, ensemble=True)
    assert tiled.shape == ens.shape


def test_memory_estimate_and_budget(net):
    small, big = estimate_memory(net, 64, 64), estimate_memory(net, 128, 128)
    assert 3.5 < big / small < 4.5  # linear in positions
    naive = build_model("amms", 2, **KW, nl_mode="naive")
    assert estimate_memory(naive, 128, 128) > 2 * (128 * 128) ** 2 * 4  # the N^2 term
    img = rand_img(200, 150)
    budget = estimate_memory(net, 200, 150) / 2
    with pytest.raises(AmmsError, match=r"memory budget; use --tile \d+"):
        upscale(net, img, max_bytes=budget)
    assert estimate_memory(net, 200, 150, tile=32) < budget


# --- the command line: good inputs ------------------------------------------------


def test_grey_colour_alpha_and_formats(tmp_path, capsys, net, ckpt):
    src = tmp_path / "in"
    src.mkdir()
    grey, rgb, rgba = rand_img(16, 12, None), rand_img(16, 12), rand_img(16, 12, 4)
    save(src / "grey.png", grey)
    save(src / "rgba.png", rgba)
    save(src / "photo.jpg", rgb, quality=95)
    save(src / "scan.bmp", rgb)
    save(src / "page.tif", rgb)
    (src / "notes.txt").write_text("not an image, and not picked from a folder")
    rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt,
                  "-o", tmp_path / "out", "--format", "same")
    assert rc == 0, err
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "grey_x2.png", "page_x2.tif", "photo_x2.jpg", "rgba_x2.png", "scan_x2.bmp"]
    with Image.open(out / "grey_x2.png") as im:
        assert im.mode == "L" and im.size == (24, 32)
        np.testing.assert_array_equal(np.asarray(im), upscale(net, grey))
    with Image.open(out / "rgba_x2.png") as im:
        assert im.mode == "RGBA"
        sr = np.asarray(im)
    np.testing.assert_array_equal(sr[..., :3], upscale(net, rgba[..., :3]))
    np.testing.assert_array_equal(sr[..., 3], imresize(rgba[..., 3], 2))
    for name in ("page_x2.tif", "scan_x2.bmp"):
        with Image.open(out / name) as im:
            np.testing.assert_array_equal(np.asarray(im), upscale(net, rgb))


def test_tiled_ensemble_cli(tmp_path, capsys, net, ckpt):
    img = rand_img(40, 40)
    rc, err = cli(capsys, save(tmp_path / "a.png", img), "--scale", 2, "--checkpoint",
                  ckpt, "--tile", 16, "--ensemble", "-o", tmp_path / "out")
    assert rc == 0, err
    with Image.open(tmp_path / "out" / "a_x2.png") as im:
        sr = np.asarray(im)
    np.testing.assert_array_equal(sr, upscale(net, img, tile=16, ensemble=True))


def test_exit_status_of_the_module(tmp_path):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "amms_lib.upscale", "--scale", "2", "--model",
           "bicubic", "-o", str(tmp_path / "out")]
    ok = subprocess.run(cmd + [str(img)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "1 written" in ok.stderr, ok.stderr
    bad = subprocess.run(cmd + ["--overwrite", str(img), str(tmp_path / "nope.png")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "failed: " in bad.stderr
    assert "1 written" in bad.stderr


# --- the command line: bad inputs -------------------------------------------------


def test_bad_files_fail_one_line_each_and_the_rest_go_on(tmp_path, capsys):
    good = save(tmp_path / "good.png", rand_img(8, 8))
    text = tmp_path / "text.png"
    text.write_text("hello, I am not a PNG")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    raw = save(tmp_path / "full.png", rand_img(64, 64)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(raw[: len(raw) // 2])
    one = save(tmp_path / "one.png", rand_img(1, 1))
    deep = save(tmp_path / "deep.png", np.zeros((8, 8), np.uint16))  # I;16
    missing = tmp_path / "missing.png"
    bad = [text, empty, cut, one, deep, missing]
    rc, err = cli(capsys, *bad, good, "--scale", 2, "--model", "bicubic",
                  "-o", tmp_path / "out")
    assert rc == 1
    lines = [x for x in err.splitlines() if x.startswith("failed: ")]
    assert len(lines) == len(bad)
    why = {p: next(x for x in lines if x.startswith(f"failed: {p}: ")) for p in bad}
    assert "not an image" in why[text] and "empty" in why[empty]
    assert "truncated" in why[cut] and "too small" in why[one]
    assert "16-bit" in why[deep] and "no such file" in why[missing]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_x2.png"]


def test_over_the_memory_budget_suggests_tile(tmp_path, capsys, ckpt):
    img = save(tmp_path / "big.png", rand_img(120, 100))
    rc, err = cli(capsys, img, "--scale", 2, "--checkpoint", ckpt, "--max-memory",
                  "0.005", "--tile", "whole", "-o", tmp_path / "out")
    assert rc == 1 and "memory budget; use --tile" in err
    tile = int(err.split("use --tile ")[1].split()[0])
    rc, err = cli(capsys, img, "--scale", 2, "--checkpoint", ckpt, "--max-memory",
                  "0.005", "--tile", tile, "-o", tmp_path / "out")
    assert rc == 0, err


def test_unsupported_scale(tmp_path, capsys):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    with pytest.raises(SystemExit) as exc:
        main([str(img), "--scale", "5", "--model", "bicubic", "-o", str(tmp_path)])
    assert exc.value.code == 2 and "invalid choice: 5" in capsys.readouterr().err


def test_checkpoint_for_another_scale(tmp_path, capsys, ckpt):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    rc, err = cli(capsys, img, "--scale", 3, "--checkpoint", ckpt, "-o", tmp_path / "o")
    assert rc == 2 and err.startswith("error: ") and "trained for x2, not x3" in err
    assert not (tmp_path / "o").exists()


def test_nan_weights(tmp_path, capsys, net):
    bad = tiny_net()
    with torch.no_grad():
        bad.head.weight[0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", bad, name="amms", scale=2,
                           model_kwargs=KW)
    img = save(tmp_path / "a.png", rand_img(8, 8))
    rc, err = cli(capsys, img, "--scale", 2, "--checkpoint", path, "-o", tmp_path / "o")
    assert rc == 2 and "NaN" in err and len(err.strip().splitlines()) == 1


def test_output_that_cannot_be_written(tmp_path, capsys):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic",
                  "-o", blocker / "out")
    assert rc == 2 and err.startswith("error: cannot create the output folder")
    out = tmp_path / "out"
    (out / "a_x2.png").mkdir(parents=True)  # the output name is taken by a folder
    other = save(tmp_path / "b.png", rand_img(8, 8))
    rc, err = cli(capsys, img, other, "--scale", 2, "--model", "bicubic", "--overwrite",
                  "-o", out)
    assert rc == 1 and f"failed: {img}: {out / 'a_x2.png'} is not an image this tool" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]  # no temps
    rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic", "--format", "jpg",
                  "-o", tmp_path / "jpg")
    assert rc == 0 and (tmp_path / "jpg" / "a_x2.jpg").is_file()
    alpha = save(tmp_path / "t.png", rand_img(8, 8, 4))
    rc, err = cli(capsys, alpha, "--scale", 2, "--model", "bicubic", "--format", "jpg",
                  "-o", tmp_path / "jpg")
    assert rc == 1 and "cannot store the alpha channel" in err


def test_inputs_are_never_overwritten(tmp_path, capsys):
    a = save(tmp_path / "a.png", rand_img(8, 8, seed=1))
    a_x2 = save(tmp_path / "a_x2.png", rand_img(8, 8, seed=2))  # a's output name
    before = {p: p.read_bytes() for p in (a, a_x2)}
    rc, err = cli(capsys, a, a_x2, "--scale", 2, "--model", "bicubic", "-o", tmp_path)
    assert rc == 1 and f"failed: {a}: output {a_x2} would overwrite an input" in err
    assert all(p.read_bytes() == b for p, b in before.items())
    assert (tmp_path / "a_x2_x2.png").is_file()  # a_x2.png was named: an input
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temps


def test_earlier_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    """A rerun, or another photo.png, into the same -o: refused per file, kept as it was."""
    a = save(tmp_path / "a.png", rand_img(8, 8, seed=1))
    other = tmp_path / "other"
    other.mkdir()
    a2 = save(other / "a.png", rand_img(8, 8, seed=2))  # another photo of the same name
    out = tmp_path / "out"
    assert cli(capsys, a, "--scale", 2, "--model", "bicubic", "-o", out)[0] == 0
    first = (out / "a_x2.png").read_bytes()
    rc, err = cli(capsys, a2, "--scale", 2, "--model", "bicubic", "-o", out)
    assert rc == 1 and "a_x2.png already exists" in err and "--overwrite" in err
    assert (out / "a_x2.png").read_bytes() == first
    rc, err = cli(capsys, a2, "--scale", 2, "--model", "bicubic", "--overwrite", "-o", out)
    assert rc == 0 and (out / "a_x2.png").read_bytes() != first


def test_a_folder_that_is_also_the_output_is_not_upscaled_twice(tmp_path, capsys):
    a = save(tmp_path / "a.png", rand_img(8, 8, seed=1))
    for _ in range(2):  # the second run sees a_x2.png in the folder: ours, not an input
        rc, err = cli(capsys, tmp_path, "--scale", 2, "--model", "bicubic", "--overwrite",
                      "-o", tmp_path)
        assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x2.png"]
    assert a.is_file()
    # the user's own photo under the output's name is not an earlier output: --overwrite
    # leaves it (it had been replaced, after a note calling it one of the tool's outputs)
    own = save(tmp_path / "a_x2.png", rand_img(12, 12, seed=3))
    before = own.read_bytes()
    rc, err = cli(capsys, tmp_path, "--scale", 2, "--model", "bicubic", "--overwrite",
                  "-o", tmp_path)
    assert rc == 1 and "is 12x12, not the 16x16 of x2: not an earlier output" in err
    assert own.read_bytes() == before


def test_a_folder_names_the_files_it_skips(tmp_path, capsys):
    save(tmp_path / "a.png", rand_img(8, 8))
    Image.fromarray(rand_img(8, 8)).save(tmp_path / "b.gif")
    rc, err = cli(capsys, tmp_path, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    assert rc == 0 and "note:" in err and "skipped 1 file(s)" in err and "b.gif" in err


def test_a_broken_link_in_a_folder_is_a_failed_item(tmp_path, capsys):
    """A broken link photo.png in an input folder had been skipped without a word
    ("1 written, 0 failed"); named on the command line it was already a failed item."""
    save(tmp_path / "a.png", rand_img(8, 8))
    (tmp_path / "photo.png").symlink_to(tmp_path / "moved.png")
    rc, err = cli(capsys, tmp_path, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    assert rc != 0 and "photo.png: a broken link (its target" in err, err
    assert (tmp_path / "o" / "a_x2.png").is_file()  # the batch went on


def test_a_broken_link_at_an_output_name_is_kept(tmp_path, capsys):
    """A dangling link at the output's name had been replaced by the output, unasked."""
    a = save(tmp_path / "a.png", rand_img(8, 8))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a_x2.png").symlink_to(tmp_path / "elsewhere.png")
    for extra in ((), ("--overwrite",)):
        rc, err = cli(capsys, a, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o",
                      *extra)
        assert rc != 0 and "a_x2.png is a broken link" in err, err
        assert (tmp_path / "o" / "a_x2.png").is_symlink()


def test_bicubic_says_which_network_options_it_ignores(tmp_path, capsys):
    a = save(tmp_path / "a.png", rand_img(8, 8))
    rc, err = cli(capsys, a, "--scale", 2, "--model", "bicubic", "--tile", 32, "--bf16",
                  "-o", tmp_path / "o")
    assert rc == 0 and "warning: --tile, --bf16 ignored: bicubic has no network" in err
    rc, err = cli(capsys, a, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "p")
    assert rc == 0 and "ignored" not in err


def test_the_default_tiles_a_large_image_and_whole_does_not(tmp_path, capsys, ckpt, net):
    """--tile auto is the default: the fastest setting that fits (no tile size lost PSNR
    in the tile study); --tile whole keeps whole-image attention."""
    from amms_lib import speed

    img = rand_img(160, 160)
    src = save(tmp_path / "big.png", img)
    rates = speed.Rates(conv=1e9, att=1e8, call=0.0)  # attention slow: tiles win
    speed._RATES[speed.signature(net, torch.device("cpu"))] = rates
    try:
        rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "-o", tmp_path / "a")
        assert rc == 0 and "tiled automatically: --tile" in err, err
        rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "--tile", "whole",
                      "--max-seconds", "inf", "-o", tmp_path / "w")
        assert rc == 0 and "tiled" not in err
    finally:
        speed._RATES.clear()
    with Image.open(tmp_path / "w" / "big_x2.png") as im:
        np.testing.assert_array_equal(np.asarray(im), upscale(net, img))


def test_two_inputs_with_one_output_name(tmp_path, capsys):
    a = save(tmp_path / "a.png", rand_img(8, 8, seed=1))
    b = save(tmp_path / "a.bmp", rand_img(8, 8, seed=2))
    rc, err = cli(capsys, a, b, "--scale", 2, "--model", "bicubic",
                  "-o", tmp_path / "o")
    assert rc == 1 and f"failed: {b}: output" in err and f"output of {a}" in err
    with Image.open(tmp_path / "o" / "a_x2.png") as im:
        np.testing.assert_array_equal(np.asarray(im), imresize(read_image(a), 2))


# --- nothing wrong is ever silent (issue 12) -------------------------------------


def png_bomb(path, w: int = 20000, h: int = 20000):
    """A ~100-byte PNG whose header claims w x h grey pixels (over Pillow's limit)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_one_failed_line_and_the_rest_go_on(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    bomb = png_bomb(src / "a_bomb.png")
    save(src / "b_good.png", rand_img(8, 8))
    with pytest.raises(AmmsError, match="pixel limit"):
        read_image(bomb)
    rc, err = cli(capsys, src, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "out")
    assert rc == 1 and f"failed: {bomb}: refused, over Pillow's pixel limit" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b_good_x2.png"]


def test_an_unforeseen_error_fails_one_file_not_the_batch(tmp_path, capsys, monkeypatch):
    import amms_lib.upscale as up

    a, b = save(tmp_path / "a.png", rand_img(8, 8)), save(tmp_path / "b.png", rand_img(8, 8))
    monkeypatch.setattr(up, "read_image", lambda p, **k: 1 / 0 if p == a else read_image(p, **k))
    rc, err = cli(capsys, a, b, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "out")
    assert rc == 1 and f"failed: {a}: unexpected ZeroDivisionError: division by zero" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b_x2.png"]


def test_bicubic_memory_is_estimated_and_refused(tmp_path, capsys):
    from amms_lib.inference import estimate_bicubic_memory

    # measured: a 6000x6000 RGB image took 8.9 GB through bicubic x2
    assert 8.9e9 <= estimate_bicubic_memory(6000, 6000, 3, 2) < 11e9
    assert estimate_bicubic_memory(100, 100, 1, 4) < estimate_bicubic_memory(100, 100, 3, 4)
    img = save(tmp_path / "a.png", rand_img(100, 80))  # ~2 MB by the estimate
    rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic", "--max-memory",
                  "0.001", "-o", tmp_path / "out")
    assert rc == 1 and f"failed: {img}: 80x100 input needs about" in err
    assert "through bicubic x2, over the 1 MB memory budget" in err  # never "0.0 GB"
    rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic", "--max-memory",
                  "0.01", "-o", tmp_path / "out")
    assert rc == 0, err


def test_text_file_as_checkpoint_is_one_line(tmp_path):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not weights\n")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "amms_lib.upscale", str(img), "--scale",
                          "2", "--checkpoint", str(text), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2 and res.stderr.startswith("error: "), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "corrupt" in res.stderr


def test_unwritable_output_folder_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import tempfile

    import amms_lib.upscale as up

    out = tmp_path / "out"
    out.mkdir()
    img = save(tmp_path / "a.png", rand_img(8, 8))
    real_mkstemp, reads = tempfile.mkstemp, []

    def read_only(*args, dir=None, **kw):  # root ignores chmod, so deny it here
        if dir is not None and Path(dir) == out:
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(up, "read_image",
                        lambda *a, **k: reads.append(a) or read_image(*a, **k))
    rc, err = cli(capsys, img, img, "--scale", 2, "--model", "bicubic", "-o", out)
    assert rc == 2 and reads == []
    assert err == f"error: cannot write to the output folder {out}: Permission denied; " \
                  "fix its permissions or choose another -o\n"


def test_ctrl_c_prints_what_was_written_and_exits_130(tmp_path, capsys, monkeypatch):
    import amms_lib.upscale as up
    from amms_lib.runtime import atomic_write

    src = tmp_path / "in"
    src.mkdir()
    for name in "abc":
        save(src / f"{name}.png", rand_img(8, 8))
    calls = []

    def half_then_ctrl_c(f):
        f.write(b"half")
        raise KeyboardInterrupt

    def write_then_ctrl_c(path, img):
        calls.append(path)
        if len(calls) == 2:  # Ctrl-C half way through writing the second output
            atomic_write(path, half_then_ctrl_c)
        return write_image(path, img)

    monkeypatch.setattr(up, "write_image", write_then_ctrl_c)
    try:
        rc, err = cli(capsys, src, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped the command line (a traceback)")
    assert rc == 130
    assert err.strip().splitlines()[-1] == (
        f"interrupted: 1 written to {tmp_path / 'o'}, 0 failed, 2 not done")
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a_x2.png"]  # no temp left


def test_temp_files_of_a_killed_run_are_removed(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a writer that is gone, as a killed run is
    dead, alive = proc.pid, os.getppid()
    ours = [out / f".a_x2.png.amms-tmp-{dead}.k3_9zq0a",
            out / f".photo_x4.jpg.amms-tmp-{dead}.abcdefgh"]
    theirs = [out / ".a_x2.png.short", out / ".hidden", out / "notes.txt",
              out / ".a.png.abcdefgh", out / ".holiday_x2.png.original",
              out / ".notes_x3.txt.20240101", out / ".a_x2.png.k3_9zq0a",
              out / f".notes_x3.txt.amms-tmp-{dead}.abcdefgh",  # not a name we write
              out / f".b_x2.png.amms-tmp-{alive}.abcdefgh"]  # its writer still runs
    for p in ours + theirs:
        p.write_bytes(b"half")
    img = save(tmp_path / "a.png", rand_img(8, 8))
    rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic", "-o", out)
    assert rc == 0 and "removed 2 temporary file(s)" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in theirs] + ["a_x2.png"])


def test_animated_gif_warns_that_only_the_first_frame_is_used(tmp_path, capsys):
    frames = [Image.fromarray(rand_img(8, 8, seed=s)).convert("P") for s in (1, 2, 3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    rc, err = cli(capsys, gif, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    assert rc == 0, err
    warned = [x for x in err.splitlines() if x.startswith("warning: ")]
    assert warned == [f"warning: {gif}: holds 3 frames (animation or pages); "
                      "only the first frame is used"]
    with pytest.warns(UserWarning, match="only the first frame is used"):
        first = read_image(gif)
    with Image.open(tmp_path / "o" / "anim_x2.png") as im:
        np.testing.assert_array_equal(np.asarray(im), imresize(first, 2))


def test_a_second_upscaler_into_the_same_folder_is_refused(tmp_path, capsys):
    from amms_lib.runtime import FolderLock

    img = save(tmp_path / "a.png", rand_img(8, 8))
    with FolderLock(tmp_path / "o", "upscale"):  # another upscaler writing there
        rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    assert rc == 2 and err.strip().splitlines() == [
        f"error: {tmp_path / 'o'} is in use by another upscale; "
        "wait for it to finish, or choose another folder"]
    assert not (tmp_path / "o" / "a_x2.png").exists()
    rc, _ = cli(capsys, img, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    assert rc == 0 and (tmp_path / "o" / "a_x2.png").is_file()


def test_a_changed_shipped_checkpoint_is_refused(tmp_path, capsys, monkeypatch):
    from amms_lib.checkpoint import register

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    src = tmp_path / "run.pt"
    save_checkpoint(src, build_model("srcnn", 2), name="srcnn", scale=2)
    shipped = register(src, command="test", data="test", folder=folder, commit="x")
    monkeypatch.setattr("amms_lib.checkpoint.checkpoints_dir", lambda: folder)
    img = save(tmp_path / "a.png", rand_img(8, 8))
    rc, _ = cli(capsys, img, "--scale", 2, "--checkpoint", shipped, "-o", tmp_path / "o")
    assert rc == 0
    state = torch.load(shipped, weights_only=True)
    state["state_dict"] = {k: v * 0.5 for k, v in state["state_dict"].items()}
    torch.save(state, shipped)  # tampered: still a valid checkpoint, other weights
    rc, err = cli(capsys, img, "--scale", 2, "--checkpoint", shipped, "-o", tmp_path / "o2")
    assert rc == 2 and "do not match metadata.json (sha256)" in err


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
def test_a_bad_memory_budget_is_one_setup_error(tmp_path, capsys, value):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    with pytest.raises(SystemExit) as exc:
        main([str(img), "--scale", "2", "--model", "bicubic", "--max-memory", value,
              "-o", str(tmp_path / "o")])
    assert exc.value.code == 2 and "--max-memory must be a positive number" in \
        capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_sparse_tensor_checkpoint_is_one_clear_error(tmp_path):
    from amms_lib.checkpoint import read_checkpoint

    net = build_model("srcnn", 2)
    path = tmp_path / "sparse.pt"
    save_checkpoint(path, net, name="srcnn", scale=2)
    state = torch.load(path, weights_only=True)
    key = next(iter(state["state_dict"]))
    state["state_dict"][key] = state["state_dict"][key].to_sparse()
    torch.save(state, path)
    with pytest.raises(AmmsError, match="sparse tensors"):
        read_checkpoint(path)


def test_an_absent_device_is_one_line(tmp_path, capsys):
    img = save(tmp_path / "a.png", rand_img(8, 8))
    for device in ("mps", "tpu"):
        rc, err = cli(capsys, img, "--scale", 2, "--model", "bicubic", "--device", device,
                      "-o", tmp_path / "o")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_a_lab_tiff_is_colour_without_alpha(tmp_path):
    lab = Image.fromarray(rand_img(8, 8)).convert("LAB")
    path = tmp_path / "lab.tif"
    lab.save(path)
    img = read_image(path, keep_alpha=True)
    assert img.shape == (8, 8, 3)  # its 'A' band is a colour axis, not alpha


def test_bf16_inference_stays_close_to_float32(net, tmp_path, capsys, ckpt):
    """--bf16: convolutions in bf16, attention float32; within 40 dB of the fp32 output
    (a bf16 mantissa moves a pixel by at most a few levels), same shape, and the CLI flag."""
    img = rand_img(40, 30)
    exact = upscale(net, img)
    fast = upscale(net, img, bf16=True)
    assert fast.shape == exact.shape and psnr(fast, exact) > 40
    net.to(memory_format=torch.contiguous_format)  # the fixture net, as other tests expect
    src = save(tmp_path / "a.png", img)
    rc, _ = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "--bf16", "-o", tmp_path / "o")
    out = read_image(tmp_path / "o" / "a_x2.png")
    assert rc == 0 and out.shape == exact.shape and psnr(out, exact) > 40


def test_a_network_that_outputs_nan_is_refused_not_written_black(tmp_path, capsys):
    """Weights that overflow (x 1e30) give NaN outputs: one failed line per file and exit 1,
    never an all-black PNG with exit 0."""
    broken = tiny_net()
    with torch.no_grad():
        for p in broken.parameters():
            p.mul_(1e30)
    with pytest.raises(AmmsError, match="NaN or infinite"):
        upscale(broken, rand_img(12, 12))
    path = save_checkpoint(tmp_path / "broken_x2.pt", broken, name="amms", scale=2,
                           model_kwargs=KW)
    src = save(tmp_path / "in.png", rand_img(12, 12))
    rc, err = cli(capsys, src, "--scale", "2", "--checkpoint", path, "-o", tmp_path / "out")
    assert rc == 1 and "NaN or infinite" in err
    assert not (tmp_path / "out" / "in_x2.png").exists()


def test_bf16_without_native_bf16_warns_and_runs_float32(tmp_path, capsys, monkeypatch,
                                                         net, ckpt):
    import amms_lib.upscale as up

    monkeypatch.setattr(up, "cpu_bf16", lambda: False)  # an AVX2-only CPU
    img = rand_img(24, 24)
    rc, err = cli(capsys, save(tmp_path / "a.png", img), "--scale", 2, "--checkpoint", ckpt,
                  "--bf16", "-o", tmp_path / "o")
    assert rc == 0 and "warning: --bf16: this CPU has no native bf16" in err
    with Image.open(tmp_path / "o" / "a_x2.png") as im:
        np.testing.assert_array_equal(np.asarray(im), upscale(net, img))  # float32's


def test_a_pipe_is_not_called_missing(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    rc, err = cli(capsys, fifo, "--scale", 2, "--model", "bicubic", "-o", tmp_path / "o")
    assert rc == 1 and "not a regular file" in err and "no such file" not in err


def test_a_tiny_memory_budget_reads_as_what_it_is(tmp_path, capsys, ckpt):
    img = save(tmp_path / "a.png", rand_img(40, 40))
    rc, err = cli(capsys, img, "--scale", 2, "--checkpoint", ckpt, "--max-memory", "0.00001",
                  "--tile", "whole", "-o", tmp_path / "o")
    assert rc == 1 and "10 kB memory budget" in err, err


def test_an_uploaded_gif_warns_with_its_own_name(tmp_path):
    from amms_lib.explorer import read_upload

    frames = [Image.fromarray(rand_img(8, 8, seed=s)).convert("P") for s in (1, 2)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    with pytest.warns(UserWarning) as caught:
        read_upload("holiday.gif", gif.read_bytes())
    msgs = [str(w.message) for w in caught]
    assert any(m.startswith("holiday.gif: holds 2 frames") for m in msgs), msgs
    assert not any("upload.gif" in m or str(tmp_path) in m for m in msgs)


def test_files_named_like_outputs_in_the_output_folder_are_named_not_hidden(tmp_path, capsys):
    save(tmp_path / "holiday_x2.png", rand_img(8, 8))  # a photo that happens to end in _x2
    rc, err = cli(capsys, tmp_path, "--scale", 2, "--model", "bicubic", "-o", tmp_path)
    assert "note:" in err and "holiday_x2.png" in err and "named like outputs" in err
    assert "folder holds no" not in err and rc == 0


def test_reconstruct_lr_takes_only_uint8_grey_or_rgb_and_a_real_budget():
    from amms_lib.reconstruct import reconstruct_lr

    for bad in (rand_img(8, 8, 4), rand_img(8, 8).astype(np.float64) / 255):
        with pytest.raises(AmmsError, match="expected a uint8 grey"):
            reconstruct_lr(bad, "u.png", 2, ["bicubic"])
    for budget in (0, -1, float("nan")):
        with pytest.raises(AmmsError, match="max_seconds must be a positive"):
            reconstruct_lr(rand_img(8, 8), "u.png", 2, ["bicubic"], max_seconds=budget)


def test_a_file_as_output_or_a_folder_as_checkpoint_says_which(tmp_path, capsys):
    a = save(tmp_path / "a.png", rand_img(8, 8))
    rc, err = cli(capsys, a, "--scale", 2, "--model", "bicubic", "-o", a)
    assert rc == 2 and "is a file, not a folder" in err and a.read_bytes()
    rc, err = cli(capsys, a, "--scale", 2, "--checkpoint", tmp_path, "-o", tmp_path / "o")
    assert rc == 2 and "is a folder; pass the checkpoint file" in err


def test_the_explorer_and_reconstruct_lr_refuse_a_scale_or_set_they_do_not_know():
    pytest.importorskip("ipywidgets")
    from amms_lib.explorer import explorer
    from amms_lib.reconstruct import reconstruct_lr

    with pytest.raises(AmmsError, match="scale 5 is not supported"):
        reconstruct_lr(rand_img(8, 8), "t", 5, ["bicubic"])
    with pytest.raises(AmmsError, match="scale 5 is not supported"):
        explorer(scale=5, methods="bicubic")
    with pytest.raises(AmmsError, match="set 'Nope' not found"):
        explorer(set_name="Nope", methods="bicubic")


def test_overwrite_keeps_a_file_of_the_transposed_size(tmp_path, capsys):
    """A user's own a_x2.png of 100x200 for a 100x50 input (no EXIF rotation) had been
    taken for an earlier output and replaced."""
    save(tmp_path / "a.png", rand_img(50, 100))  # 100 wide, 50 high
    (tmp_path / "out").mkdir()
    own = save(tmp_path / "out" / "a_x2.png", rand_img(200, 100, seed=4))
    before = own.read_bytes()
    rc, err = cli(capsys, tmp_path / "a.png", "--scale", 2, "--model", "bicubic",
                  "--overwrite", "-o", tmp_path / "out")
    assert rc == 1 and "not an earlier output" in err and own.read_bytes() == before
