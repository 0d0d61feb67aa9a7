"""The benchmark command: the bicubic baseline reproduces the published table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from amms_lib import benchmark, data

# Published bicubic PSNR / SSIM on Y (SRCNN, VDSR ... AMMS tables)
PUBLISHED = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104), ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}


def test_bicubic_matches_published_table(use_data):
    results = benchmark.run("bicubic", ["Set5", "Set14"], [2, 3, 4], log=lambda m: None)
    assert len(results) == 6
    for r in results:
        psnr, ssim = PUBLISHED[(r["dataset"], r["scale"])]
        assert abs(r["psnr"] - psnr) <= 0.03, r
        assert abs(r["ssim"] - ssim) <= 0.001, r
        assert r["n_images"] == {"Set5": 5, "Set14": 14}[r["dataset"]]
        assert r["lr_source"] == "published"


def test_cli_prints_table_and_writes_json(use_data, tmp_path, capsys):
    out = tmp_path / "res" / "b.json"
    rc = benchmark.main(["--model", "bicubic", "--datasets", "Set5", "--scales", "2",
                         "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Set5" in text and "x2" in text and "33.6" in text
    res = json.loads(out.read_text())["results"]
    assert [(r["model"], r["dataset"], r["scale"], r["n_images"]) for r in res] == [
        ("bicubic", "Set5", 2, 5)]
    assert {"psnr", "ssim"} <= set(res[0])


def test_generated_lr_is_announced(tmp_path, monkeypatch, capsys):
    hr = tmp_path / "Mine" / "HR"
    hr.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(hr / "a.png")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    assert benchmark.main(["--datasets", "Mine", "--scales", "2"]) == 0
    assert "Mine x2 has no published LR" in capsys.readouterr().out


def test_builtin_fallback_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AMMS_DATA", raising=False)
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)
    assert benchmark.main(["--scales", "4"]) == 0
    out = capsys.readouterr().out
    assert "built-in 'skimage' images" in out and "skimage" in out.splitlines()[-1]


@pytest.mark.parametrize("argv,match", [
    (["--datasets", "Set6"], "'Set6' not found"),
    (["--datasets", "Set5", "--scales", "8"], "scale 8 is not supported"),
    (["--model", "srgan", "--datasets", "Set5"], "unknown model 'srgan'"),
])
def test_cli_errors_are_one_line(use_data, capsys, argv, match):
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and match in err and "\n" not in err


def test_missing_data_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AMMS_DATA", str(tmp_path / "nope"))
    assert benchmark.main(["--datasets", "Set5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such folder" in err and "\n" not in err


def test_tiled_rows_are_marked_and_tiling_needs_a_network(use_data, tmp_path, capsys):
    import torch

    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.models import build_model

    kw = dict(channels=8, n_amms=1, n_am=1, so_reduction=4)
    torch.manual_seed(0)
    net = build_model("amms", 4, **kw)
    path = save_checkpoint(tmp_path / "n.pt", net, name="amms", scale=4, model_kwargs=kw)
    out = tmp_path / "r.json"
    assert benchmark.main(["--model", "amms", "--checkpoint", str(path), "--datasets", "Set5",
                           "Set14", "--scales", "4", "--tile", "24", "--tile-sets", "Set14",
                           "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    rows = {r["dataset"]: r for r in saved["results"]}
    assert "tile" not in rows["Set5"] and rows["Set14"]["tile"] == 24
    # which weights were scored, and which row was tiled, is said (it had read like the
    # shipped network's row, and the tiled row was printed unmarked)
    from amms_lib.checkpoint import file_sha256

    assert (saved["checkpoint"], saved["sha256"]) == (str(path.resolve()), file_sha256(path))
    table = capsys.readouterr().out
    assert [line.endswith("t") for line in table.splitlines() if line[:4] in ("Set5", "Set1")
            ] == [False, True] and "t scored in tiles of 24 LR px" in table
    for argv in (["--tile", "16"], ["--model", "amms", "--checkpoint", str(path), "--tile", "0"],
                 ["--model", "amms", "--checkpoint", str(path), "--tile-sets", "Set5"]):
        assert benchmark.main(["--datasets", "Set5", "--scales", "4", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "--tile" in err and "\n" not in err


def _set5_without_bird(data_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    (tmp_path / "benchmark/Set5/HR/bird.png").unlink()
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))


def test_incomplete_set_is_refused_unless_partial_is_allowed(data_dir, tmp_path,
                                                            monkeypatch, capsys):
    _set5_without_bird(data_dir, tmp_path, monkeypatch)
    out = tmp_path / "r.json"
    argv = ["--datasets", "Set5", "--scales", "2", "--json", str(out)]
    assert benchmark.main(argv) == 2  # 32.8 dB instead of 33.66: never silently
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Set5 x2 is not the standard set: 4 of 5 HR images")
    assert "--allow-partial" in err and "\n" not in err and not out.exists()
    assert benchmark.main([*argv, "--allow-partial"]) == 0
    text = capsys.readouterr().out
    assert "Set5 x2 is partial" in text and "0.9197*" in text
    (row,) = json.loads(out.read_text())["results"]
    assert row["n_images"] == 4 and "bird" in row["partial"]


def test_unwritable_json_fails_before_any_work(tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(benchmark, "evaluate_set", no_work)
    (tmp_path / "file").write_text("")
    for target in (tmp_path / "file" / "r.json", tmp_path):
        assert benchmark.main(["--datasets", "skimage", "--scales", "2",
                               "--json", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --json {target}: cannot write there")
        assert "\n" not in err


def test_a_repeated_or_extra_image_is_refused_unless_partial_is_allowed(data_dir, tmp_path,
                                                                       monkeypatch, capsys):
    import shutil

    from PIL import Image

    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    hr = tmp_path / "benchmark/Set5/HR"
    Image.open(hr / "baby.png").save(hr / "baby.jpg", quality=95)  # baby twice
    argv = ["--datasets", "Set5", "--scales", "2"]
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "two HR files for 1 image(s): baby" in err and "\n" not in err
    assert benchmark.main([*argv, "--allow-partial"]) == 0  # scored once, and marked
    out = capsys.readouterr().out
    assert "Set5 x2 is partial" in out and "33.6" in out  # 34.24 when baby counted twice
    (hr / "baby.jpg").unlink()
    shutil.copy(hr / "bird.png", hr / "bird2.png")  # a sixth image
    for s in (2, 3, 4):
        lr = tmp_path / f"benchmark/Set5/LR_bicubic/X{s}"
        shutil.copy(lr / f"birdx{s}.png", lr / f"bird2x{s}.png")
    assert benchmark.main(argv) == 2
    assert "6 HR images, the standard set has 5" in capsys.readouterr().err
    from amms_lib import download

    assert download.main(["list"]) == 1
    assert "NOT STANDARD: 6 HR images" in capsys.readouterr().out


def test_everything_checkable_fails_before_work_and_finished_rows_are_kept(
        use_data, tmp_path, monkeypatch, capsys):
    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.models import build_model

    ckpt = tmp_path / "srcnn_x2.pt"
    save_checkpoint(ckpt, build_model("srcnn", 2), name="srcnn", scale=2)
    calls = []
    real = benchmark.evaluate_set
    monkeypatch.setattr(benchmark, "evaluate_set",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    out = tmp_path / "r.json"
    # a checkpoint that cannot serve the second scale: refused before any image is scored
    assert benchmark.main(["--model", "srcnn", "--checkpoint", str(ckpt), "--datasets",
                           "Set5", "--scales", "2", "3", "--json", str(out)]) == 2
    assert "not x3" in capsys.readouterr().err and calls == [] and not out.exists()
    assert benchmark.main(["--datasets", "Set5", "--tile", "8", "--tile-sets", "Set6",
                           "--model", "srcnn", "--checkpoint", str(ckpt), "--scales",
                           "2"]) == 2
    assert "--tile-sets Set6: not among" in capsys.readouterr().err and calls == []

    def interrupted(*a, **k):  # Ctrl-C during the second set
        if a[1] == "Set14":
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(benchmark, "evaluate_set", interrupted)
    assert benchmark.main(["--datasets", "Set5", "Set14", "--scales", "2", "--json",
                           str(out)]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith("benchmark interrupted")
    saved = json.loads(Path(f"{out}.partial").read_text())  # beside, not over, the file
    assert [r["dataset"] for r in saved["results"]] == ["Set5"] and "stopped" in saved
    assert not out.exists()
    # an existing file is refused before any work unless --overwrite; a complete earlier
    # file survives an interrupted --overwrite rerun; a finished one replaces it, saying so
    monkeypatch.setattr(benchmark, "evaluate_set", real)
    assert benchmark.main(["--datasets", "Set5", "--scales", "2", "--json", str(out)]) == 0
    complete = out.read_text()
    calls.clear()
    monkeypatch.setattr(benchmark, "evaluate_set",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert benchmark.main(["--datasets", "Set5", "--scales", "2", "--json", str(out)]) == 2
    assert "exists (earlier results?)" in capsys.readouterr().err and calls == []
    assert out.read_text() == complete
    monkeypatch.setattr(benchmark, "evaluate_set", interrupted)
    assert benchmark.main(["--datasets", "Set5", "Set14", "--scales", "2", "--json",
                           str(out), "--overwrite"]) == 130
    assert out.read_text() == complete
    first = Path(f"{out}.partial").read_text()  # the first interruption's rows ...
    assert json.loads(Path(f"{out}.partial-2").read_text())["results"]  # ... the second's
    monkeypatch.setattr(benchmark, "evaluate_set", real)
    assert benchmark.main(["--datasets", "Set5", "--scales", "2", "--json", str(out),
                           "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "replacing its earlier results" in printed and ".partial" in printed
    assert Path(f"{out}.partial").read_text() == first  # kept: never replaced or deleted


def test_repeated_sets_or_scales_are_scored_once(capsys):
    assert benchmark.main(["--datasets", "skimage", "skimage", "--scales", "2", "2"]) == 0
    table = capsys.readouterr().out.split("bicubic", 1)[1]  # below any note
    assert table.count("skimage") == 1 and table.count("x2") == 1, table


def test_an_lr_of_another_kind_says_so(data_dir, tmp_path, monkeypatch):
    """A colour LR beside a grey HR: the message says grey and colour, not two equal
    shapes."""
    import shutil

    from amms_lib.errors import AmmsError

    shutil.copytree(data_dir / "benchmark/Set14", tmp_path / "benchmark/Set14")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    lr = tmp_path / "benchmark/Set14/LR_bicubic/X2/bridgex2.png"
    Image.open(lr).convert("RGB").save(lr)
    with pytest.raises(AmmsError, match=r"LR is \d+x\d+ colour, expected \d+x\d+ grey"):
        data.load_pair("Set14", "bridge", 2)


def test_bad_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--scales", "two"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "usage" not in err


def test_swapped_lr_files_end_the_benchmark_with_one_line(data_dir, tmp_path, monkeypatch,
                                                           capsys):
    """Before: Set14 x2 with two same-size LR files swapped printed a mean with exit 0."""
    import shutil

    shutil.copytree(data_dir / "benchmark/Set14", tmp_path / "benchmark/Set14")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    lr = tmp_path / "benchmark/Set14/LR_bicubic/X2"
    lenna, pepper = (lr / "lennax2.png").read_bytes(), (lr / "pepperx2.png").read_bytes()
    (lr / "lennax2.png").write_bytes(pepper)
    (lr / "pepperx2.png").write_bytes(lenna)
    assert benchmark.main(["--datasets", "Set14", "--scales", "2"]) == 2
    out, err = capsys.readouterr()
    assert "lennax2.png: the LR is not MATLAB bicubic" in err and "\n" not in err.strip()
    assert "Set14" not in out  # no table, no mean


def test_every_scorer_refuses_a_partial_set(data_dir, tmp_path, monkeypatch):
    """The studies score through evaluate_set: an Urban100 of 3 images had been written as
    the Urban100 cell (24.14 dB for srcnn x4, true 23.60) with exit 0."""
    import shutil

    from amms_lib.errors import AmmsError

    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    for name in ("baby", "bird"):
        (tmp_path / f"benchmark/Set5/HR/{name}.png").unlink()
        for s in (2, 3, 4):
            (tmp_path / f"benchmark/Set5/LR_bicubic/X{s}/{name}x{s}.png").unlink()
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    with pytest.raises(AmmsError, match="Set5 x4 is not the standard set: 3 of 5 HR images"):
        benchmark.evaluate_set(benchmark.bicubic_upscaler(4), "Set5", 4)
    part = benchmark.evaluate_set(benchmark.bicubic_upscaler(4), "Set5", 4, allow_partial=True)
    assert part["n_images"] == 3


def test_a_results_file_made_by_another_run_meanwhile_is_kept(tmp_path, monkeypatch, capsys):
    """Two runs with one --json at once: the second had replaced the first's rows after it
    had printed 'wrote'. The later one now writes beside it."""
    out = tmp_path / "r.json"
    real = benchmark.evaluate_set

    def other_run_finishes_first(*a, **k):
        out.write_text('{"results": ["the other run"]}')
        return real(*a, **k)

    monkeypatch.setattr(benchmark, "evaluate_set", other_run_finishes_first)
    assert benchmark.main(["--datasets", "skimage", "--scales", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"results": ["the other run"]}
    assert json.loads(Path(f"{out}-2").read_text())["results"][0]["dataset"] == "skimage"
    assert f"wrote {out}-2 ({out} appeared while this ran" in capsys.readouterr().out


def test_overwrite_replaces_only_earlier_results(tmp_path, monkeypatch, capsys):
    """`--json X.pt --overwrite` had replaced the checkpoint being scored, `--json
    checkpoints/metadata.json --overwrite` the registry; a dangling link as --json had
    looped for ever. A checkpoint replaced while it is scored is not recorded."""
    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.models import build_model

    torch.manual_seed(0)  # SRCNN: what is scored does not matter here, and it is fast
    ckpt = save_checkpoint(tmp_path / "n.pt", build_model("srcnn", 2), name="srcnn", scale=2)
    registry = tmp_path / "metadata.json"
    registry.write_text('{"amms_x2.pt": {"sha256": "0"}}')
    dangling = tmp_path / "gone.json"
    dangling.symlink_to(tmp_path / "nowhere" / "r.json")
    kept = {p: p.read_bytes() for p in (ckpt, registry)}
    base = ["--model", "srcnn", "--checkpoint", str(ckpt), "--datasets", "skimage",
            "--scales", "2"]
    for target in (ckpt, registry, dangling):
        assert benchmark.main([*base, "--json", str(target), "--overwrite"]) == 2
        assert "not a benchmark results file" in capsys.readouterr().err
    assert benchmark.main([*base, "--json", str(dangling)]) == 2
    assert "exists" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in kept.items()) and dangling.is_symlink()
    out = tmp_path / "r.json"
    real = benchmark.evaluate_set

    def replaced_meanwhile(*a, **k):  # a training run writes a new best.pt
        result = real(*a, **k)
        torch.manual_seed(1)
        save_checkpoint(ckpt, build_model("srcnn", 2), name="srcnn", scale=2)
        return result

    monkeypatch.setattr(benchmark, "evaluate_set", replaced_meanwhile)
    assert benchmark.main([*base, "--json", str(out)]) == 2
    assert "changed while it was scored" in capsys.readouterr().err and not out.exists()


def test_overwrite_leaves_a_curated_record_that_holds_results(tmp_path, capsys):
    """A study's record with a `results` list and keys of its own (shipped_checkpoints.json)
    had been replaced by `--overwrite`."""
    curated = tmp_path / "shipped.json"
    curated.write_text(json.dumps({"what": "curated", "commands": ["x"], "results": [
        {"model": "amms", "dataset": "Set5", "scale": 2, "psnr": 37.0}]}))
    before = curated.read_text()
    assert benchmark.main(["--datasets", "skimage", "--scales", "2", "--json", str(curated),
                           "--overwrite"]) == 2
    assert "not a benchmark results file" in capsys.readouterr().err
    assert curated.read_text() == before
