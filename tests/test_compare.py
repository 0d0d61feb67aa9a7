"""Comparing reconstructions: wipe, synchronized crops, missing checkpoints, widgets."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import find_data  # noqa: E402
from PIL import Image  # noqa: E402

from amms_lib import compare, data  # noqa: E402
from amms_lib.checkpoint import register, save_checkpoint  # noqa: E402
from amms_lib.errors import AmmsError  # noqa: E402
from amms_lib.explorer import explorer  # noqa: E402
from amms_lib.inference import upscale  # noqa: E402
from amms_lib.metrics import evaluate  # noqa: E402
from amms_lib.models import build_model  # noqa: E402
from amms_lib.resize import imresize  # noqa: E402

TINY = dict(n1=4, n2=4)


@pytest.fixture
def sample(monkeypatch) -> tuple[str, str]:
    """A small real image (Set5/butterfly) when the data is here, else a built-in."""
    root = find_data()
    if (root / "benchmark" / "Set5" / "HR").is_dir():
        monkeypatch.setenv("AMMS_DATA", str(root))
        return "Set5", "butterfly"
    return data.BUILTIN, "chelsea"


@pytest.fixture
def folder(tmp_path):
    """A checkpoints folder holding one registered tiny SRCNN x2."""
    torch.manual_seed(0)
    net = build_model("srcnn", 2, **TINY)
    src = save_checkpoint(tmp_path / "run" / "best.pt", net, name="srcnn", scale=2,
                          model_kwargs=TINY)
    register(src, command="test", data="test", folder=tmp_path / "ckpt", commit="x")
    return tmp_path / "ckpt"


def test_wipe_splices_sr_left_and_hr_right():
    sr = np.zeros((5, 12, 3), np.uint8)
    hr = np.full((5, 12, 3), 200, np.uint8)
    out = compare.wipe(sr, hr, 6, line=2)
    assert out.shape == hr.shape and out.dtype == np.uint8
    assert (out[:, :5] == 0).all() and (out[:, 7:] == 200).all()
    assert (out[:, 5:7] == compare.MARK).all()  # the seam marker
    exact = compare.wipe(sr, hr, 6, line=0)
    assert (exact[:, :6] == 0).all() and (exact[:, 6:] == 200).all()
    assert (compare.wipe(sr, hr, 0, line=0) == hr).all()
    assert (compare.wipe(sr, hr, 99, line=0) == sr).all()  # clipped to the width
    grey = compare.wipe(sr[..., 0], hr[..., 0], 3)  # grey in, RGB out
    assert grey.shape == (5, 12, 3)
    with pytest.raises(AmmsError, match="equal shapes"):
        compare.wipe(sr[:, :10], hr, 3)


def test_crops_are_synchronized():
    hr = np.arange(40 * 60).reshape(40, 60)
    box = compare.make_box(hr.shape, top=0.5, left=1.0, size=16)
    y, x, h, w = box
    assert (h, w) == (16, 16) and y + h <= 40 and x + w == 60  # left=1: at the edge
    crops = compare.zoom_crops({"a": hr, "b": 2 * hr}, box)
    assert (crops["b"] == 2 * crops["a"]).all() and crops["a"][0, 0] == hr[y, x]
    lr = np.arange(10 * 15).reshape(10, 15)
    up = compare.nearest_up(lr, 4)  # LR panels: pixel (r, c) shows lr[r // 4, c // 4]
    assert up.shape == (40, 60) and up[y + 3, x + 5] == lr[(y + 3) // 4, (x + 5) // 4]
    assert compare.make_box((30, 20), 0.3, 0.3, 64)[2:] == (20, 20)  # never outside


def test_parse_methods():
    assert compare.parse_methods(" bicubic, VDSR,,bicubic") == ["bicubic", "vdsr"]
    with pytest.raises(AmmsError, match="unknown method"):
        compare.parse_methods("bicubic,edsr")


def test_quick_mode_leaves_memnet_out_of_auto_and_says_why():
    """A notebook's ``methods="auto"``: every method in full mode; in quick mode all but
    MemNet, which is returned with its reason (the notebooks print it and put it in the
    figure's title); named methods always run as named, MemNet included."""
    quick, why = compare.notebook_methods("auto", quick=True)
    assert "memnet" not in quick and set(why) == {"memnet"} and "HR resolution" in why["memnet"]
    assert quick == [m for m in compare.METHODS if m != "memnet"]
    assert compare.notebook_methods("auto", quick=False) == (list(compare.METHODS), {})
    assert compare.notebook_methods("bicubic,memnet", quick=True) == (["bicubic", "memnet"], {})
    assert compare.notebook_methods(["amms"], quick=True) == (["amms"], {})
    with pytest.raises(AmmsError, match="unknown method"):
        compare.notebook_methods("auto,memnet", quick=True)


def check_bicubic(rec, scale):
    bicubic = imresize(rec["lr"], scale)
    assert rec["scores"]["bicubic"] == evaluate(bicubic, rec["hr"], scale)
    assert rec["sr"]["bicubic"].shape == rec["hr"].shape
    assert 15 < rec["scores"]["bicubic"][0] < 50


def test_reconstruct_builtin_lists_missing_networks(tmp_path):
    rec = compare.reconstruct(data.BUILTIN, "camera", 2, "bicubic,vdsr,amms",
                              folder=tmp_path)  # grey image, empty checkpoint folder
    check_bicubic(rec, 2)
    assert list(rec["sr"]) == ["bicubic"] and rec["missing"] == ["vdsr", "amms"]


def test_reconstruct_real_data(use_data, tmp_path):
    rec = compare.reconstruct("Set5", "butterfly", 3, "bicubic,srcnn", folder=tmp_path)
    check_bicubic(rec, 3)
    assert (rec["hr"] == data.load_pair("Set5", "butterfly", 3).hr).all()
    assert rec["lr_source"] == "published" and rec["missing"] == ["srcnn"]


def test_registered_checkpoint_is_reconstructed(folder, sample):
    nets = {}
    rec = compare.reconstruct(*sample, 2, "bicubic,srcnn,vdsr", folder=folder,
                              nets=nets)
    assert list(rec["sr"]) == ["bicubic", "srcnn"] and rec["missing"] == ["vdsr"]
    net = nets["srcnn", 2, str(Path(folder).resolve())]  # cached per folder
    assert (rec["sr"]["srcnn"] == upscale(net, rec["lr"])).all()
    assert rec["scores"]["srcnn"] == evaluate(rec["sr"]["srcnn"], rec["hr"], 2)


def fake_rec(methods=("bicubic", "srcnn", "vdsr")):
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    hr = compare.nearest_up(lr, 2)
    sr = {m: hr for m in methods}
    return dict(set="fake", image="noise", scale=2, lr_source="generated", lr=lr, hr=hr,
                sr=sr, scores={m: (30.0 + i, 0.9) for i, m in enumerate(methods)},
                seconds=dict.fromkeys(methods, 0.0), missing=["amms"])


@pytest.mark.parametrize("methods, n_axes", [(None, 6), (["vdsr"], 4), ([], 3)])
def test_plot_comparison_axes(methods, n_axes):
    fig = compare.plot_comparison(fake_rec(), (2, 4, 16, 16), methods)
    assert len(fig.axes) == n_axes  # HR with box + LR + methods + HR crops
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1].startswith("LR") and titles[-1].startswith("HR")
    plt.close(fig)


def test_table_html_lists_scores_and_missing():
    html = compare.table_html(fake_rec())
    assert "30.00" in html and "+2.00" in html
    assert "amms</td><td colspan=4>no checkpoint" in html


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_centred_box_is_inside_and_round_trips():
    shape = (40, 60)
    assert compare.centred_box(shape, 0.5, 0.5, 10) == (15, 25, 10, 10)
    assert compare.centred_box(shape, 0.0, 1.0, 10) == (0, 50, 10, 10)  # clipped
    assert compare.centred_box(shape, 0.5, 0.5, 99)[2:] == (40, 40)
    box = compare.make_box(shape, 0.45, 0.85, 16)
    assert compare.centred_box(shape, *compare.box_centre(shape, box), 16) == box


def test_explorer_builds_and_its_callbacks_update_the_images(folder, sample):
    pytest.importorskip("ipywidgets")
    name, image = sample
    ui = explorer(name, image, 2, "bicubic,srcnn,vdsr", folder=folder,
                          box=(0.45, 0.85, 32))
    assert ui.parts["set"].value == name and ui.parts["image"].value == image
    p, rec = ui.parts, ui.cache[name, image, 2]
    assert p["figure"].value and p["wipe"].value and "no checkpoint" in p["table"].value
    assert "vdsr" in p["status"].value
    box = compare.make_box(rec["hr"].shape, 0.45, 0.85, 32)  # the sliders start there
    assert compare.centred_box(rec["hr"].shape, p["cy"].value, p["cx"].value, 32) == box
    assert list(p["left"].options) == ["bicubic", "srcnn", "HR"]
    assert p["left"].value != p["right"].value  # two methods, one either side
    p["left"].value, p["right"].value, p["column"].value = "srcnn", "bicubic", 0.25
    col = round(0.25 * rec["hr"].shape[1])
    expect = compare.wipe(rec["sr"]["srcnn"], rec["sr"]["bicubic"], col)
    assert (decode(p["wipe"].value) == expect).all()
    assert "srcnn" in p["caption"].value and "bicubic" in p["caption"].value
    p["right"].value = "HR"
    assert (decode(p["wipe"].value) == compare.wipe(rec["sr"]["srcnn"], rec["hr"],
                                                    col)).all()
    p["wipe"].value = p["figure"].value = b""
    ui.callbacks["view"]()  # called directly: redraws the figure, table and wipe
    assert p["figure"].value and p["wipe"].value
    p["in_box"].value = True  # the wipe now shows the zoom box, enlarged
    assert decode(p["wipe"].value).shape[0] > p["size"].value
    before = p["wipe"].value
    p["cx"].value = 0.1  # the box moves: the enlarged wipe follows it
    assert p["wipe"].value != before
    assert plt.get_fignums() == []  # rendered figures are closed, not left to display


def test_explorer_reconstructs_once_per_image(folder, sample, monkeypatch):
    """Changing only the view (box, panels, wipe) reuses the cached reconstruction."""
    pytest.importorskip("ipywidgets")
    calls = []
    real = compare.reconstruct

    def counting(*args, **kwargs):
        calls.append(args[:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "reconstruct", counting)
    name, image = sample
    ui = explorer(name, image, 2, "bicubic,srcnn", folder=folder)
    p = ui.parts
    assert calls == [(name, image, 2)]
    figure = p["figure"].value
    p["cx"].value, p["cy"].value, p["size"].value = 0.2, 0.7, 24
    p["methods"].value = ("srcnn",)
    p["left"].value, p["right"].value = "bicubic", "HR"
    p["column"].value, p["in_box"].value = 0.8, True
    assert p["figure"].value != figure  # the view did change ...
    assert calls == [(name, image, 2)]  # ... from the one reconstruction
    other = next(i for i in p["image"].options if i != image)
    p["image"].value = other
    p["image"].value = image  # back to the first image: from the cache
    assert calls == [(name, image, 2), (name, other, 2)]
    assert set(ui.cache) == {(name, image, 2), (name, other, 2)}


@pytest.mark.parametrize("top,left,size", [(5, 0.5, 48), (0.5, -0.1, 48), (0.5, 0.5, 2)])
def test_a_zoom_box_that_cannot_be_placed_is_one_clear_error(top, left, size):
    from amms_lib import compare
    from amms_lib.errors import AmmsError

    with pytest.raises(AmmsError, match="box_"):
        compare.check_box(top, left, size)
    with pytest.raises(AmmsError, match="box_"):
        compare.make_box((100, 100), top, left, size)


def _upload(ui, name: str, img=None, content: bytes | None = None):
    """What JupyterLab's FileUpload sets when a user picks a file."""
    import datetime

    if content is None:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        content = buf.getvalue()
    ui.parts["upload"].value = ({"name": name, "type": "image/png", "size": len(content),
                                 "content": memoryview(content),
                                 "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_an_uploaded_image_runs_every_network_and_shows_without_scores(folder, sample):
    """Your own image: listed as a set, run through bicubic and the shipped network at the
    chosen scale, shown in the same panels and wipe; no HR, so no PSNR, and it says so."""
    pytest.importorskip("ipywidgets")
    from amms_lib.explorer import UPLOADS

    name, image = sample
    ui = explorer(name, image, 2, "bicubic,srcnn,vdsr", folder=folder)
    p = ui.parts
    mine = np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    figure = p["figure"].value
    _upload(ui, "holiday.png", mine)
    assert p["set"].value == UPLOADS and p["image"].value == "holiday.png"
    rec = ui.cache[UPLOADS, "holiday.png", 2]
    assert rec["hr"] is None and rec["scores"] == {}
    assert (rec["lr"] == mine).all() and set(rec["sr"]) == {"bicubic", "srcnn"}
    assert rec["sr"]["srcnn"].shape == (60, 88, 3)
    assert p["figure"].value != figure and "no HR" in p["status"].value
    assert p["table"].value.count("no HR: no PSNR") == 2  # bicubic and srcnn, unscored
    assert list(p["left"].options) == ["bicubic", "srcnn"]  # no HR to wipe against
    p["left"].value, p["right"].value, p["column"].value = "srcnn", "bicubic", 0.5
    assert (decode(p["wipe"].value) == compare.wipe(rec["sr"]["srcnn"], rec["sr"]["bicubic"],
                                                    44)).all()
    p["scale"].value = 4  # no x4 checkpoint here: bicubic only, from the same LR
    assert ui.cache[UPLOADS, "holiday.png", 4]["sr"]["bicubic"].shape == (120, 176, 3)
    p["set"].value = name  # back to a benchmark set, and to the upload again
    p["set"].value = UPLOADS
    assert p["image"].value == "holiday.png"
    assert plt.get_fignums() == []


def test_a_bad_upload_is_one_status_line_and_the_view_stays(folder, sample):
    pytest.importorskip("ipywidgets")
    name, image = sample
    ui = explorer(name, image, 2, "bicubic,srcnn", folder=folder)
    p = ui.parts
    figure = p["figure"].value
    _upload(ui, "notes.png", content=b"this is not an image")
    assert "cannot use notes.png" in p["status"].value and "notes.png" in p["status"].value
    assert p["set"].value == name and p["figure"].value == figure


def test_an_upload_over_the_budgets_is_refused_per_method_not_run(folder, sample,
                                                                  monkeypatch):
    """A user's image of any size: a network estimated over the time budget is refused
    with its estimate (not run for hours, not a torch error), the others still shown;
    when nothing fits, the status says so and the last picture stays."""
    pytest.importorskip("ipywidgets")
    from amms_lib import reconstruct, speed

    slow = speed.Rates(conv=1e3, att=1e3, call=0.0)  # every network: hours
    monkeypatch.setattr(speed, "calibrate", lambda net, refresh=False: slow)
    name, image = sample
    ui = explorer(name, image, 2, "bicubic,srcnn", folder=folder)
    p = ui.parts
    mine = np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    _upload(ui, "big.png", mine)
    rec = ui.cache[reconstruct.UPLOADS, "big.png", 2]
    assert set(rec["sr"]) == {"bicubic"} and "srcnn" in rec["refused"]
    assert "120 s" in rec["refused"]["srcnn"]  # the budget, with the estimate
    assert "srcnn refused:" in p["status"].value
    figure = p["figure"].value
    monkeypatch.setattr(reconstruct, "imresize", lambda *a: (_ for _ in ()).throw(
        MemoryError("out of memory")))  # now bicubic fails too: nothing to show
    _upload(ui, "huge.png", mine)
    rec = ui.cache[reconstruct.UPLOADS, "huge.png", 2]
    assert rec["sr"] == {} and "nothing shown" in p["status"].value
    assert "bicubic refused: ran out of memory" in p["status"].value
    assert p["figure"].value == figure


def test_a_missing_checkpoint_folder_is_named_not_taken_for_missing_networks(tmp_path):
    from amms_lib.reconstruct import reconstruct_lr

    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(AmmsError, match="checkpoint folder .* not found"):
        reconstruct_lr(img, "t", 2, "bicubic,srcnn", folder=tmp_path / "nope")


def test_the_network_cache_is_per_checkpoint_folder(folder, tmp_path):
    """Two folders with a srcnn_x2 each: one cache must not answer for the other."""
    from amms_lib.checkpoint import register
    from amms_lib.reconstruct import reconstruct_lr

    torch.manual_seed(7)
    other_src = save_checkpoint(tmp_path / "o.pt", build_model("srcnn", 2), name="srcnn", scale=2)
    other = tmp_path / "other"
    register(other_src, command="t", data="t", folder=other, commit="x")
    img = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    nets = {}
    a = reconstruct_lr(img, "i", 2, "srcnn", folder=folder, nets=nets)["sr"]["srcnn"]
    b = reconstruct_lr(img, "i", 2, "srcnn", folder=other, nets=nets)["sr"]["srcnn"]
    assert not (a == b).all()
