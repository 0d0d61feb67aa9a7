"""Checkpoints: round trip, atomic writes, and one clear error per bad file."""
from __future__ import annotations

import pytest
import torch

from amms_lib import benchmark
from amms_lib.amms import AMMSConfig
from amms_lib.checkpoint import load_model, read_checkpoint, save_checkpoint
from amms_lib.errors import AmmsError
from amms_lib.inference import to_image, to_tensor, upscale
from amms_lib.models import build_model

KW = AMMSConfig.tiny_kwargs()


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    net = build_model("amms", 2, **KW)
    path = save_checkpoint(tmp_path / "amms_x2.pt", net, name="amms", scale=2,
                           model_kwargs=KW, step=7, metrics={"psnr": 30.0})
    return path, net


def test_round_trip_gives_the_same_network(ckpt):
    path, net = ckpt
    loaded, meta = load_model(path, model="amms", scale=2)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    assert meta["step"] == 7 and meta["metrics"]["psnr"] == 30.0 and not loaded.training


def test_save_is_atomic(ckpt, monkeypatch):
    path, net = ckpt
    before = path.read_bytes()

    def dies_half_way(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, net, name="amms", scale=2, model_kwargs=KW)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_corrupt_and_foreign_files(ckpt, tmp_path):
    path, net = ckpt
    raw = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "noise.pt").write_bytes(b"\x00garbage" * 50)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    for name, match in [("cut.pt", "corrupt"), ("noise.pt", "corrupt"),
                        ("plain.pt", "not an AMMS-SR checkpoint"),
                        ("missing.pt", "no such checkpoint")]:
        with pytest.raises(AmmsError, match=match):
            read_checkpoint(tmp_path / name)


def test_other_scale_other_model_nan_and_misfit(ckpt, tmp_path):
    path, net = ckpt
    with pytest.raises(AmmsError, match="trained for x2, not x4"):
        load_model(path, scale=4)
    with pytest.raises(AmmsError, match="holds 'amms' weights, not 'vdsr'"):
        load_model(path, model="vdsr")
    bad = build_model("amms", 2, **KW)
    with torch.no_grad():
        bad.head.weight[0, 0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", bad, name="amms", scale=2, model_kwargs=KW)
    with pytest.raises(AmmsError, match="NaN or Inf"):
        load_model(tmp_path / "nan.pt")
    save_checkpoint(tmp_path / "misfit.pt", net, name="amms", scale=2,
                    model_kwargs={**KW, "channels": 16})
    with pytest.raises(AmmsError, match="do not fit"):
        load_model(tmp_path / "misfit.pt")


def test_grey_and_colour_images_round_trip():
    import numpy as np

    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    assert np.array_equal(to_image(to_tensor(rgb)), rgb)
    assert np.array_equal(to_image(to_tensor(grey), grey=True), grey)
    net = build_model("srcnn", 2, n1=4, n2=4)
    assert upscale(net, grey).shape == (10, 12)


def test_benchmark_runs_a_checkpoint(use_data, tmp_path, capsys, monkeypatch):
    import amms_lib.checkpoint as ck

    (tmp_path / "none").mkdir()  # a checkpoints folder without memnet, whatever is shipped
    monkeypatch.setattr(ck, "checkpoints_dir", lambda: tmp_path / "none")
    net = build_model("srcnn", 2, n1=4, n2=4)
    path = save_checkpoint(tmp_path / "srcnn.pt", net, name="srcnn", scale=2,
                           model_kwargs=dict(n1=4, n2=4))
    assert benchmark.main(["--model", "srcnn", "--checkpoint", str(path),
                           "--datasets", "Set5", "--scales", "2"]) == 0
    assert "Set5" in capsys.readouterr().out
    assert benchmark.main(["--model", "memnet", "--datasets", "Set5"]) == 2
    assert "no registered checkpoint for memnet x2" in capsys.readouterr().err
    assert benchmark.main(["--model", "srcnn", "--checkpoint", str(path),
                           "--datasets", "Set5", "--scales", "3"]) == 2
    assert "trained for x2, not x3" in capsys.readouterr().err


def test_registered_checkpoints_are_found_and_checked(ckpt, tmp_path):
    from amms_lib.checkpoint import find_checkpoint, load_registered, read_metadata, register

    path, net = ckpt
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shipped = register(path, command="python -m amms_lib.train ...", data="T91+BSD200",
                       folder=folder, commit="abc123")
    meta = read_metadata(folder)["amms_x2.pt"]
    assert meta["iterations"] == 7 and meta["commit"] == "abc123" and meta["scale"] == 2
    assert "optimizer" not in read_checkpoint(shipped)
    assert find_checkpoint("amms", 2, folder) == shipped
    assert find_checkpoint("amms", 3, folder) is None
    loaded, info = load_registered("amms", 2, folder=folder)
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    assert info["metadata"]["data"] == "T91+BSD200"
    with pytest.raises(AmmsError, match="no registered checkpoint for amms x4"):
        load_registered("amms", 4, folder=folder)
    shipped.write_bytes(shipped.read_bytes() + b"x")  # changed after registration
    with pytest.raises(AmmsError, match="sha256"):
        load_registered("amms", 2, folder=folder)


def test_garbage_with_any_first_byte_is_one_clear_error(tmp_path):
    """torch's unpickler raises IndexError, KeyError, ... on garbage: all become AmmsError."""
    path = tmp_path / "garbage.pt"
    for b in range(256):
        path.write_bytes(bytes([b]) + b"hello, I am a text file\nnot a checkpoint\n")
        with pytest.raises(AmmsError, match="corrupt or not an AMMS-SR checkpoint"):
            read_checkpoint(path)


@pytest.mark.parametrize("change, match", [
    (lambda c: c.pop("scale"), "no 'scale' field"),
    (lambda c: c.pop("state_dict"), "no 'state_dict' field"),
    (lambda c: c.update(model_kwargs="n1=4"), "'model_kwargs' is str 'n1=4', not a dict"),
    (lambda c: c.update(model=["srcnn"]), "'model' is list"),
    (lambda c: c.update(scale="2"), "'scale' is str '2', not an integer"),
    (lambda c: c.update(state_dict={"body.0.weight": 1}), "holds non-tensors"),
    (lambda c: c.update(model_kwargs={1: 4}), "keys that are not names"),
    (lambda c: c.update(model_kwargs={"n1": -1}), "do not build a 'srcnn'"),
    (lambda c: c.update(state_dict={k: v.long() for k, v in c["state_dict"].items()}),
     "not floating point"),  # load_state_dict would cast them quietly
])
def test_hand_made_bad_checkpoints(tmp_path, change, match):
    net = build_model("srcnn", 2, n1=4, n2=4)
    ckpt = torch.load(save_checkpoint(tmp_path / "ok.pt", net, name="srcnn", scale=2,
                                      model_kwargs=dict(n1=4, n2=4)), weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(AmmsError, match=match):
        load_model(tmp_path / "bad.pt")


def test_benchmark_with_a_text_file_as_checkpoint(use_data, tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not weights\n")
    assert benchmark.main(["--model", "srcnn", "--checkpoint", str(text),
                           "--datasets", "Set5", "--scales", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corrupt or not an AMMS-SR checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def test_registration_never_replaces_better_weights_and_fails_whole(ckpt, tmp_path):
    from amms_lib.checkpoint import read_metadata, register

    path, _ = ckpt
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    scores = {}
    score = lambda p: scores[p.name]  # noqa: E731
    shipped = register(path, command="good", data="d", folder=folder, commit="a")
    before = shipped.read_bytes(), (folder / "metadata.json").read_text()
    worse = tmp_path / "worse.pt"
    worse.write_bytes(path.read_bytes())
    scores.update({"amms_x2.pt": 30.0, "worse.pt": 6.8})
    with pytest.raises(AmmsError, match="below the registered amms_x2.pt.*--force"):
        register(worse, command="bad", data="d", folder=folder, commit="b", score=score)
    assert (shipped.read_bytes(), (folder / "metadata.json").read_text()) == before
    register(worse, command="bad", data="d", folder=folder, commit="b", score=score,
             force=True)  # asked for: replaced
    assert read_metadata(folder)["amms_x2.pt"]["command"] == "bad"
    # weights whose record says they trained on the held-out images are not judged by it
    register(path, command="good", data="d", folder=folder, commit="a", heldout_note="x")
    assert "heldout_note" in read_metadata(folder)["amms_x2.pt"]
    register(worse, command="bad", data="d", folder=folder, commit="b", score=score)
    assert read_metadata(folder)["amms_x2.pt"]["command"] == "bad"
    assert "heldout_note" not in read_metadata(folder)["amms_x2.pt"]
    for bad in ("{not json", "[1, 2]", '{"amms_x2.pt": null}'):
        (folder / "metadata.json").write_text(bad)
        weights = shipped.read_bytes()
        with pytest.raises(AmmsError, match="metadata.json"):
            register(path, command="x", data="d", folder=folder, commit="c")
        assert shipped.read_bytes() == weights and (folder / "metadata.json").read_text() == bad
    (folder / "metadata.json").write_bytes(b"\xff\xfe")
    with pytest.raises(AmmsError, match="not valid JSON"):
        read_metadata(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["amms_x2.pt", "metadata.json"]


def test_two_registrations_at_once_keep_both_records(ckpt, tmp_path, monkeypatch):
    """Each reads metadata.json, copies weights, writes it back: without one writer at a
    time, the second write drops the first's record (or keeps an old one beside new
    weights). Forked writers with a pause between read and write make them overlap."""
    import multiprocessing
    import time as _time

    from amms_lib import checkpoint

    path, _ = ckpt
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "srcnn.pt", build_model("srcnn", 2), name="srcnn",
                            scale=2, model_kwargs={})
    folder = tmp_path / "checkpoints"
    real = checkpoint.read_metadata

    def slow_read(f):
        meta = real(f)
        _time.sleep(0.5)  # the window a second registration would fall into
        return meta
    monkeypatch.setattr(checkpoint, "read_metadata", slow_read)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=checkpoint.register, args=(p,),
                         kwargs=dict(command=p.name, data="d", folder=folder, commit="c"))
             for p in (path, other)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    monkeypatch.setattr(checkpoint, "read_metadata", real)
    meta = real(folder)
    assert set(meta) == {"amms_x2.pt", "srcnn_x2.pt"}
    for name in meta:
        checkpoint.check_registered_hash(folder / name, folder)  # records match weights


def test_a_link_to_a_changed_registered_file_is_refused(ckpt, tmp_path):
    """The recorded hash is looked up under the file a link names, not the link's name;
    and a registration never scores a changed registered file as 'the old weights'."""
    from amms_lib.checkpoint import check_registered_hash, register

    path, _ = ckpt
    folder = tmp_path / "checkpoints"
    shipped = register(path, command="c", data="d", folder=folder, commit="a")
    link = tmp_path / "mine.pt"
    link.symlink_to(shipped)
    check_registered_hash(link, folder)  # intact: fine
    blob = bytearray(shipped.read_bytes())
    blob[-100] ^= 0xFF
    shipped.write_bytes(bytes(blob))
    with pytest.raises(AmmsError, match="do not match metadata.json"):
        check_registered_hash(link, folder)
    with pytest.raises(AmmsError, match="do not match metadata.json"):
        register(path, command="c", data="d", folder=folder, commit="a",
                 score=lambda p: 30.0)


def test_a_record_whose_file_is_gone_is_not_replaced_unasked(ckpt, tmp_path):
    from amms_lib.checkpoint import read_metadata, register

    path, _ = ckpt
    folder = tmp_path / "checkpoints"
    register(path, command="first", data="d", folder=folder, commit="a")
    (folder / "amms_x2.pt").unlink()  # the record stays, its weights are gone
    with pytest.raises(AmmsError, match="records amms_x2.pt but the file is not in"):
        register(path, command="second", data="d", folder=folder, commit="b")
    assert read_metadata(folder)["amms_x2.pt"]["command"] == "first"
    register(path, command="second", data="d", folder=folder, commit="b", force=True)
    assert read_metadata(folder)["amms_x2.pt"]["command"] == "second"
