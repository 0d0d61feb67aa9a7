"""amms_lib.data and amms_lib.images: sets, pairs, mod-crop, fallbacks, errors."""
from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from amms_lib import data, download
from amms_lib.errors import AmmsError
from amms_lib.images import read_image, write_image


def test_lists_the_four_sets(use_data):
    assert data.list_sets() == ["Set5", "Set14", "BSD100", "Urban100"]
    assert data.list_images("Set5") == ["baby", "bird", "butterfly", "head", "woman"]
    assert len(data.list_images("BSD100")) == 100


def test_b100_is_another_name_for_bsd100(data_dir, tmp_path, monkeypatch):
    (tmp_path / "benchmark").mkdir()
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/B100")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.list_sets() == ["BSD100"]
    assert data.set_dir("B100") == data.set_dir("BSD100") == tmp_path / "benchmark/B100"


def test_sets_directly_in_the_data_folder(data_dir, tmp_path, monkeypatch):
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.list_sets() == ["Set5"]


def test_published_pair_is_modcropped_and_consistent(use_data):
    pair = data.load_pair("Set5", "butterfly", 3)
    assert pair.lr_source == "published"
    assert pair.hr.shape == (255, 255, 3)  # 256 mod-cropped to a multiple of 3
    assert pair.lr.shape == (85, 85, 3) and pair.lr.dtype == np.uint8


def test_missing_lr_is_generated_like_the_published_files(use_data):
    pair = data.load_pair("Urban100", "img_001", 2)
    assert pair.lr_source == "generated"
    assert pair.lr.shape[:2] == (pair.hr.shape[0] // 2, pair.hr.shape[1] // 2)
    # same code path on a set with published LR gives the published file exactly
    hr = data.modcrop(data.load_hr("Set14", "zebra"), 4)
    from amms_lib.resize import imresize
    published = read_image(data.lr_path("Set14", "zebra", 4))
    assert np.array_equal(imresize(hr, 1 / 4, border="clamp"), published)


def test_grey_image_stays_grey(use_data):
    pair = data.load_pair("Set14", "bridge", 2)
    assert pair.hr.ndim == 2 and pair.lr.ndim == 2


def test_modcrop():
    img = np.zeros((10, 13, 3))
    assert data.modcrop(img, 4).shape == (8, 12, 3)
    assert data.modcrop(img, 2).shape == (10, 12, 3)


def test_builtin_fallback_without_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("AMMS_DATA", raising=False)
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)  # no data/ there
    assert data.data_root() is None
    assert data.list_sets() == [data.BUILTIN]
    pair = data.load_pair(data.BUILTIN, "camera", 4)
    assert pair.hr.shape == (512, 512) and pair.lr.shape == (128, 128)
    assert pair.lr_source == "generated"


def test_default_data_folder_is_data_in_the_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("AMMS_DATA", raising=False)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)
    assert data.data_root() == tmp_path / "data"


def test_errors_are_one_clear_line(tmp_path, monkeypatch, use_data):
    with pytest.raises(AmmsError, match="'Set6' not found.*available: Set5, Set14"):
        data.set_dir("Set6")
    with pytest.raises(AmmsError, match="scale 5 is not supported"):
        data.load_pair("Set5", "baby", 5)
    monkeypatch.setenv("AMMS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(AmmsError, match="no such folder"):
        data.list_sets()


def test_no_data_folder_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("AMMS_DATA", raising=False)
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)
    with pytest.raises(AmmsError, match="fetch"):
        data.set_dir("Set5")


def test_truncated_image_in_a_set(data_dir, tmp_path, monkeypatch):
    shutil.copytree(data_dir / "benchmark/Set5/HR", tmp_path / "Set5/HR")
    raw = (tmp_path / "Set5/HR/bird.png").read_bytes()
    (tmp_path / "Set5/HR/bird.png").write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    with pytest.raises(AmmsError, match=r"bird\.png: unreadable or truncated"):
        data.load_pair("Set5", "bird", 2)


def test_read_image_errors(tmp_path):
    with pytest.raises(AmmsError, match="no such image"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(AmmsError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(AmmsError, match="not an image"):
        read_image(tmp_path / "notes.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(AmmsError, match="16-bit"):
        read_image(tmp_path / "deep.png")


def png_16bit(path, channels: int) -> None:
    """A 16-bit-per-sample colour PNG, written by hand: Pillow cannot write one."""
    h, w, color_type = 3, 4, {3: 2, 4: 6}[channels]
    rows = np.full((h, w * channels), 40000, ">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_is_refused_not_quietly_cut_to_8_bits(tmp_path, channels):
    # Pillow opens these as RGB(A) and keeps only the high byte of each sample
    png_16bit(tmp_path / "deep.png", channels)
    assert Image.open(tmp_path / "deep.png").mode in ("RGB", "RGBA")
    with pytest.raises(AmmsError, match=r"RGBA?;16B images \(16-bit"):
        read_image(tmp_path / "deep.png", keep_alpha=True)


def test_read_image_modes(tmp_path):
    Image.new("L", (5, 4), 9).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "a.png")
    Image.new("P", (5, 4)).save(tmp_path / "p.png")
    assert read_image(tmp_path / "g.png").shape == (4, 5)
    assert read_image(tmp_path / "a.png").shape == (4, 5, 3)
    assert read_image(tmp_path / "a.png", keep_alpha=True)[0, 0].tolist() == [1, 2, 3, 4]
    assert read_image(tmp_path / "p.png").shape == (4, 5, 3)


def test_write_image_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    write_image(target, np.full((3, 3), 5, np.uint8))
    before = target.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_image(target, np.zeros((3, 3), np.uint8))
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left
    with pytest.raises(AmmsError, match="uint8"):
        write_image(target, np.zeros((3, 3)))


def test_data_cli_list(use_data, capsys):
    assert download.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Urban100" in out and "published LR: x4" in out
    assert download.main([]) == 2


def test_read_image_honours_exif_orientation(tmp_path):
    img = Image.new("RGB", (6, 4), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").shape == (6, 4, 3)


def test_written_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_incomplete_sets_are_named_and_flagged_by_list(data_dir, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    assert data.incomplete("Set5") == []
    assert download.main(["list"]) == 0
    capsys.readouterr()
    (tmp_path / "benchmark/Set5/HR/bird.png").unlink()
    (tmp_path / "benchmark/Set5/LR_bicubic/X3/babyx3.png").unlink()
    assert data.incomplete("Set5") == [
        "4 of 5 HR images", "x3 LR missing for 1 image(s): baby",
        "HR missing for 1 image(s): bird (LR files are there)"]
    assert data.incomplete("Set5", [2]) == [
        "4 of 5 HR images", "HR missing for 1 image(s): bird (LR files are there)"]
    assert download.main(["list"]) == 1
    out, err = capsys.readouterr()
    assert "NOT STANDARD: 4 of 5 HR images" in out
    assert err.startswith("warning: non-standard set(s) Set5") and err.count("\n") == 1


def test_a_set_of_the_right_size_with_other_images_is_not_standard(data_dir, tmp_path,
                                                                   monkeypatch):
    """Set5 with baby removed and a copy of bird named zebra: five images, not Set5's."""
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    hr = tmp_path / "benchmark/Set5/HR"
    (hr / "baby.png").unlink()
    shutil.copy(hr / "bird.png", hr / "zebra.png")
    problems = data.incomplete("Set5", [])
    assert problems == ["not the standard images: 1 image(s): zebra unknown, "
                        "1 image(s): baby missing"]


def test_standard_sets_are_complete(use_data):
    assert all(data.incomplete(name) == [] for name in data.STANDARD_SETS)


def test_upper_case_suffixes_load_and_an_empty_data_folder_is_flagged(data_dir, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert download.main(["list"]) == 1  # nothing there: say so, exit 1
    assert "no benchmark sets" in capsys.readouterr().err
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    hr = tmp_path / "benchmark/Set5/HR"
    (hr / "baby.png").rename(hr / "baby.PNG")
    assert "baby" in data.list_images("Set5")
    assert data.load_hr("Set5", "baby").shape == (512, 512, 3)


def test_swapped_lr_files_of_the_right_size_are_refused(data_dir, tmp_path, monkeypatch):
    """Two 512x512 images with their x2 LR files swapped: right shapes, wrong content.
    Scoring them would print a wrong mean with exit 0; the content check (LR = bicubic of
    its HR) refuses them in a standard set and in a set of the user's own."""
    for name in ("Set14", "Mine"):
        shutil.copytree(data_dir / "benchmark/Set14", tmp_path / "benchmark" / name)
        lr = tmp_path / "benchmark" / name / "LR_bicubic/X2"
        (lr / "lennax2.png").rename(lr / "tmp.png")
        (lr / "pepperx2.png").rename(lr / "lennax2.png")
        (lr / "tmp.png").rename(lr / "pepperx2.png")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    for name in ("Set14", "Mine"):
        with pytest.raises(AmmsError, match="not MATLAB bicubic of its HR"):
            data.load_pair(name, "lenna", 2)
    assert data.load_pair("Mine", "bridge", 2).lr_source == "published"  # others unaffected


def test_matlab_imresize_output_is_accepted_as_published_lr(data_dir, tmp_path, monkeypatch):
    """MATLAB pads symmetrically where the published files clamp: the outer LR pixels
    differ (up to 10 grey levels) and the file is still the set's bicubic LR."""
    ref = data_dir / "matlab_reference/Set5/X2/butterflyx2.png"
    if not ref.is_file():
        pytest.skip(f"{ref} not in this data folder")
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    target = tmp_path / "benchmark/Set5/LR_bicubic/X2/butterflyx2.png"
    assert not np.array_equal(read_image(ref), read_image(target))  # they do differ
    shutil.copy(ref, target)
    assert data.load_pair("Set5", "butterfly", 2).lr_source == "published"


def _copy_with_sums(data_dir, tmp_path, *sets):
    """A data folder holding ``sets`` and the lines of SHA256SUMS that name them."""
    for name in sets:
        shutil.copytree(data_dir / "benchmark" / name, tmp_path / "benchmark" / name)
    lines = [line for line in (data_dir / "SHA256SUMS").read_text().splitlines()
             if any(f"benchmark/{name}/" in line for name in sets)]
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_an_edited_image_differs_from_the_folders_checksums(data_dir, tmp_path, monkeypatch):
    """A 3-px black frame on every Set5 HR (LR untouched) had been scored as Set5 (26.16
    dB instead of 33.67) with exit 0; Urban100 has no x2 LR to compare with at all."""
    if not (data_dir / "SHA256SUMS").is_file():
        pytest.skip("the data folder has no SHA256SUMS")
    _copy_with_sums(data_dir, tmp_path, "Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.incomplete("Set5") == []
    hr = tmp_path / "benchmark/Set5/HR/bird.png"
    img = read_image(hr)
    img[:3] = 0
    write_image(hr, img)
    problems = data.incomplete("Set5", [2])
    assert f"1 image(s): benchmark/Set5/HR/bird.png differ from {tmp_path / 'SHA256SUMS'} " \
        "(edited or replaced)" in problems
    from amms_lib import benchmark

    assert benchmark.main(["--datasets", "Set5", "--scales", "2"]) == 2
    assert download.main(["list"]) == 1


@pytest.mark.parametrize("edit,why", [
    (lambda lr: lr.__setitem__((slice(0, 3),), 0), "on its border"),  # a black top border
    (lambda lr: np.add(lr, 1, out=lr, where=lr < 255), "inside the border"),  # +1 everywhere
])
def test_an_lr_edited_on_its_border_or_shifted_by_one_is_refused(data_dir, tmp_path,
                                                                  monkeypatch, edit, why):
    """Both had passed the content check: Set5 x2 32.30 and 33.52 dB instead of 33.67."""
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    path = tmp_path / "benchmark/Set5/LR_bicubic/X2/butterflyx2.png"
    lr = read_image(path)
    edit(lr)
    write_image(path, lr)
    with pytest.raises(AmmsError, match=f"not MATLAB bicubic of its HR .*{why}"):
        data.load_pair("Set5", "butterfly", 2)


def _sha_lines(data_dir, name):
    return [line for line in (data_dir / "SHA256SUMS").read_text().splitlines()
            if f"benchmark/{name}/" in line]


@pytest.mark.parametrize("fmt", [
    lambda h, p: f"{h} *{p}",  # sha256sum -b
    lambda h, p: f"{h}  ./{p}",
    lambda h, p: f"{h.upper()}\t{p}\r",
    lambda h, p: f"SHA256 ({p}) = {h}",  # shasum --tag
    None,  # the edited image's line left out
], ids=["binary", "dot-slash", "upper-tab-crlf", "bsd-tag", "line-missing"])
def test_every_checksum_format_catches_an_edited_image(data_dir, tmp_path, monkeypatch, fmt):
    """Sums in another format, or without the image's line, had been skipped without a
    word and an edited Set5 scored as Set5."""
    if not (data_dir / "SHA256SUMS").is_file():
        pytest.skip("the data folder has no SHA256SUMS")
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    lines = [line.split("  ", 1) for line in _sha_lines(data_dir, "Set5")]
    if fmt is None:
        text = "\n".join(f"{h}  {p}" for h, p in lines if "HR/bird.png" not in p)
    else:
        text = "\ufeff" + "\n".join(fmt(h, p) for h, p in lines)
    (tmp_path / "SHA256SUMS").write_text(text + "\n", encoding="utf-8")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    if fmt is not None:
        assert data.incomplete("Set5") == []  # read right: the untouched set passes
    hr = tmp_path / "benchmark/Set5/HR/bird.png"
    img = read_image(hr)
    img[:3] = 0
    write_image(hr, img)
    assert any("HR/bird.png" in p for p in data.incomplete("Set5", [2]))


def test_linked_or_renamed_sets_are_checked_like_copies(data_dir, tmp_path, monkeypatch):
    """A set linked from outside the data folder, the data folder's benchmark/ as
    AMMS_DATA, an image renamed .PNG: each had skipped the check."""
    if not (data_dir / "SHA256SUMS").is_file():
        pytest.skip("the data folder has no SHA256SUMS")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data_dir / "benchmark/Set5", elsewhere)
    root = tmp_path / "data"
    (root / "benchmark").mkdir(parents=True)
    (root / "benchmark/Set5").symlink_to(elsewhere)
    (root / "SHA256SUMS").write_text("\n".join(_sha_lines(data_dir, "Set5")) + "\n")
    monkeypatch.setenv("AMMS_DATA", str(root))
    assert data.incomplete("Set5") == []
    img = read_image(elsewhere / "HR/bird.png")
    img[:3] = 0
    write_image(elsewhere / "HR/bird.png", img)
    assert any("differ from" in p for p in data.incomplete("Set5"))
    monkeypatch.setenv("AMMS_DATA", str(root / "benchmark"))  # the sums one folder up
    assert any("differ from" in p for p in data.incomplete("Set5"))
    shutil.copy(data_dir / "benchmark/Set5/HR/bird.png", elsewhere / "HR/bird.png")
    (elsewhere / "HR/baby.png").rename(elsewhere / "HR/baby.PNG")
    assert any("baby.PNG not in" in p for p in data.incomplete("Set5"))
    (root / "SHA256SUMS").write_text(
        "\n".join(line.replace("benchmark/", "") for line in _sha_lines(data_dir, "Set5")))
    (elsewhere / "HR/baby.PNG").rename(elsewhere / "HR/baby.png")
    monkeypatch.setenv("AMMS_DATA", str(root))  # sums relative to another folder
    assert any("lists none of its files" in p for p in data.incomplete("Set5"))


@pytest.mark.parametrize("edit", [
    lambda img: np.add(img, np.where(np.arange(img.shape[1]) % 2, 2, -2)[:, None],
                       out=img, casting="unsafe"),  # +-2 by column: x2 and x4 LR cancel it
    lambda img: img.mean(axis=2).astype(np.uint8) if img.ndim == 3 else np.stack([img] * 3, 2),
], ids=["pattern", "grey-colour"])
def test_the_standard_sets_pixels_are_known_without_a_checksum_file(data_dir, tmp_path,
                                                                     monkeypatch, edit):
    """No SHA256SUMS: an HR edited so that its LR still matches, or an image converted
    between grey and colour with its LR files, had been scored as the set (Set5 33.55
    instead of 33.67; Set14 30.33 instead of 30.23)."""
    from amms_lib.resize import imresize

    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.incomplete("Set5") == []
    folder = tmp_path / "benchmark/Set5"
    img = edit(read_image(folder / "HR/head.png"))
    write_image(folder / "HR/head.png", img)
    for s in (2, 3, 4):  # the LR files made again from the edited HR: consistent
        write_image(folder / f"LR_bicubic/X{s}/headx{s}.png",
                    imresize(data.modcrop(img, s), 1 / s, border="clamp"))
    assert any("HR/head" in p and "differ from the standard release's pixels" in p
               for p in data.incomplete("Set5", [2]))


def test_conflicting_checksum_lines_are_not_resolved_silently(tmp_path):
    """Two lines for one file with other hashes: the last had won without a word."""
    good = "a" * 64
    (tmp_path / "SHA256SUMS").write_text(f"{good}  x.png\n{'b' * 64}  x.png\n{good}  y.png\n"
                                         f"{good}  y.png\n")
    sums = data.read_sums(tmp_path / "SHA256SUMS")
    assert sums == {"x.png": "conflicting lines", "y.png": good}


def test_every_loader_refuses_an_edited_standard_image(data_dir, tmp_path, monkeypatch):
    """Notebooks 05 and 08 load single images (load_pair, example_image): a JPEG re-save of
    Set5's butterfly had been printed as 'Set5/butterfly bicubic PSNR 24.33 dB'."""
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.example_image()[1] == "Set5/butterfly"
    hr = tmp_path / "benchmark/Set5/HR/butterfly.png"
    Image.open(hr).save(tmp_path / "b.jpg", quality=90)
    Image.open(tmp_path / "b.jpg").save(hr)  # a lossy round trip under the same name
    with pytest.raises(AmmsError, match="not the standard Set5 image 'butterfly'"):
        data.load_pair("Set5", "butterfly", 2)
    img, label = data.example_image()
    assert label.startswith("skimage/astronaut (") and "not the standard Set5 image" in label


def test_bsd100_under_berkeley_ids_is_matched_by_its_pixels(data_dir, tmp_path, monkeypatch,
                                                              capsys):
    """BSD100 named by Berkeley-style ids (b001.png...) had skipped every pixel check: with
    10 images replaced by copies of another, no LR and no sums, it scored 25.65/0.6472 as
    BSD100 at x4 (standard 25.96/0.6681) and `data list` said nothing."""
    from amms_lib import benchmark

    hr = tmp_path / "benchmark/BSD100/HR"
    hr.mkdir(parents=True)
    for p in sorted((data_dir / "benchmark/BSD100/HR").glob("img_*.png")):
        shutil.copy(p, hr / f"b{p.stem[4:]}.png")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.incomplete("BSD100") == []  # the standard images under other names: fine
    for i in range(2, 12):
        shutil.copy(hr / "b001.png", hr / f"b{i:03d}.png")
    assert data.incomplete("BSD100") == [
        "10 image(s): HR/b002, HR/b003, HR/b004, ... not among the standard BSD100 images' "
        "pixels (other or repeated images; 10 standard image(s) absent)"]
    assert download.main(["list"]) == 1
    assert "NOT STANDARD: 10 image(s): HR/b002" in capsys.readouterr().out
    with pytest.raises(AmmsError, match="BSD100 x4 is not the standard set"):
        benchmark.evaluate_set(benchmark.bicubic_upscaler(4), "BSD100", 4)


def test_a_set_named_like_a_standard_one_in_other_case_is_checked_as_it(data_dir, tmp_path,
                                                                        monkeypatch):
    """A folder `set5` with an edited image and no LR had been scored as `set5 33.67/0.9303`
    with no standard check; a set of another name stays a custom set."""
    from amms_lib import benchmark

    for name in ("set5", "Mine"):
        shutil.copytree(data_dir / "benchmark/Set5/HR", tmp_path / f"benchmark/{name}/HR")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert data.standard_name("set5") == "Set5" and data.standard_name("b100") == "BSD100"
    assert data.standard_name("Mine") is None
    assert data.incomplete("set5") == [] == data.incomplete("Mine")
    for name in ("set5", "Mine"):
        path = tmp_path / f"benchmark/{name}/HR/baby.png"
        img = read_image(path)
        img[:8] = 0
        write_image(path, img)
    assert data.incomplete("set5") == ["1 image(s): HR/baby differ from the standard "
                                       "release's pixels (edited, converted or another version)"]
    with pytest.raises(AmmsError, match="set5 x2 is not the standard set"):
        benchmark.evaluate_set(benchmark.bicubic_upscaler(2), "set5", 2)
    with pytest.raises(AmmsError, match="not the standard Set5 image 'baby'"):
        data.load_hr("set5", "baby")
    marked = benchmark.evaluate_set(benchmark.bicubic_upscaler(2), "set5", 2, allow_partial=True)
    assert marked["n_images"] == 5  # scored only when asked for, as an edited Set5 is
    assert data.incomplete("Mine") == []  # a custom set: its own images, scored as they are
    assert benchmark.evaluate_set(benchmark.bicubic_upscaler(2), "Mine", 2)["n_images"] == 5


def test_a_broken_link_in_a_set_is_one_clear_error(data_dir, tmp_path, monkeypatch, capsys):
    """A dangling symlink in Set5/HR had given a FileNotFoundError traceback in benchmark,
    `data list` and `train --val-set Set5`."""
    from amms_lib import benchmark
    from amms_lib.train_config import TrainConfig

    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    link = tmp_path / "benchmark/Set5/HR/baby.png"
    link.unlink()
    link.symlink_to("/nonexistent/baby.png")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    why = r"Set5/HR/baby\.png is a broken link \(its target /nonexistent/baby\.png"
    with pytest.raises(AmmsError, match=why):
        data.incomplete("Set5")
    with pytest.raises(AmmsError, match=why):
        benchmark.run("bicubic", ["Set5"], [2], log=lambda *a: None)
    with pytest.raises(AmmsError, match=why):
        TrainConfig(val_set="Set5").check()
    capsys.readouterr()
    assert download.main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "broken link" in err
