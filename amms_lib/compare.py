"""Comparing reconstructions: zoomed crops, a before/after wipe and an explorer widget.

The paper's visual comparison figure (x3): the HR image with a box drawn on it,
then that box cut from the LR input, from every method and from the HR truth, each
titled with its PSNR/SSIM (Y channel, ``scale`` pixels shaved: ``amms_lib.metrics``).
Networks come from registered checkpoints (``amms_lib.checkpoint``); one without a
checkpoint is listed under ``missing`` instead of failing. Reconstructions are made
once per (set, image, scale); the widgets only crop, index and splice those arrays.
"""
from __future__ import annotations

import html
import io
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from amms_lib import data
from amms_lib.checkpoint import find_checkpoint, load_registered
from amms_lib.errors import AmmsError
from amms_lib.images import as_rgb
from amms_lib.inference import upscale
from amms_lib.metrics import evaluate
from amms_lib.models import MODELS
from amms_lib.resize import imresize

METHODS = ("bicubic", *MODELS)
MARK = (255, 255, 0)  # wipe seam colour: yellow shows on most images


def parse_methods(methods) -> list[str]:
    """``"bicubic, vdsr"`` or a sequence -> a checked list without repeats, in order."""
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    names = list(dict.fromkeys(m.strip().lower() for m in names if m.strip()))
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise AmmsError(f"unknown method(s) {', '.join(bad)}; "
                        f"choose from {', '.join(METHODS)}")
    return names


def reconstruct(set_name: str, image: str, scale: int, methods=METHODS, device="cpu",
                folder=None, nets: dict | None = None) -> dict:
    """LR, HR and every method's SR of one image, with (PSNR, SSIM) and timings.

    Returns ``{set, image, scale, lr_source, lr, hr, sr: {method: uint8},
    scores: {method: (psnr, ssim)}, seconds: {method: s}, missing: [method]}``;
    ``missing`` holds the networks with no registered checkpoint in ``folder``
    (default ``checkpoints/``). ``nets`` caches loaded networks across calls.
    """
    pair = data.load_pair(set_name, image, scale)
    rec = dict(set=set_name, image=pair.name, scale=scale, lr_source=pair.lr_source,
               lr=pair.lr, hr=pair.hr, sr={}, scores={}, seconds={}, missing=[])
    nets, folder = ({} if nets is None else nets), folder and Path(folder)
    for m in parse_methods(methods):
        t0 = time.perf_counter()
        if m == "bicubic":
            sr_img = imresize(pair.lr, scale)
        else:
            if (m, scale) not in nets:  # None: no checkpoint, remembered as such
                found = find_checkpoint(m, scale, folder)
                nets[m, scale] = found and load_registered(m, scale, device, folder)[0]
            if nets[m, scale] is None:
                rec["missing"].append(m)
                continue
            sr_img = upscale(nets[m, scale], pair.lr)
        rec["sr"][m], rec["seconds"][m] = sr_img, time.perf_counter() - t0
        rec["scores"][m] = evaluate(sr_img, pair.hr, scale)
    return rec


def check_box(top: float, left: float, size: int) -> None:
    """One clear error for a zoom box that cannot be placed (before any work)."""
    if not (0 <= top <= 1 and 0 <= left <= 1):
        raise AmmsError(f"box_top and box_left are fractions of the image from 0 to 1, got "
                        f"{top} and {left}")
    if size < 8:
        raise AmmsError(f"box_size is the zoom box side in HR pixels, at least 8; got {size}")


def make_box(shape, top: float = 0.3, left: float = 0.3, size: int = 48) -> tuple:
    """Square zoom box (y, x, h, w) inside an image of ``shape``: ``top``/``left`` in
    [0, 1] place it (0: first row/column, 1: last), ``size`` is its side in pixels."""
    check_box(top, left, size)
    h, w = shape[:2]
    s = int(max(1, min(size, h, w)))
    y = int(round(np.clip(top, 0, 1) * (h - s)))
    x = int(round(np.clip(left, 0, 1) * (w - s)))
    return y, x, s, s


def zoom_crops(images: dict, box) -> dict:
    """The same box (y, x, h, w) cut from every image: crops stay pixel-aligned."""
    y, x, h, w = box
    return {k: np.asarray(v)[y:y + h, x:x + w] for k, v in images.items()}


def nearest_up(img: np.ndarray, k: int) -> np.ndarray:
    """Each pixel as a k x k block (the 'LR' panels): (H, W[, 3]) -> (kH, kW[, 3])."""
    return np.asarray(img).repeat(k, 0).repeat(k, 1)


def wipe(sr_img: np.ndarray, hr_img: np.ndarray, column: int, line: int = 2,
         color=MARK) -> np.ndarray:
    """One (H, W, 3) uint8 image: SR in columns ``< column``, HR from ``column``
    on, and a ``line``-pixel seam marker from column ``column - line // 2``."""
    sr_img, hr_img = as_rgb(sr_img), as_rgb(hr_img)
    if sr_img.shape != hr_img.shape:
        raise AmmsError(f"wipe needs equal shapes: {sr_img.shape}, {hr_img.shape}")
    c = int(np.clip(column, 0, hr_img.shape[1]))
    out = hr_img.copy()
    out[:, :c] = sr_img[:, :c]
    out[:, max(c - line // 2, 0):max(c - line // 2 + line, 0)] = color
    return out


def _show(ax, img, title=None, **kw):
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(title, fontsize=9, **kw)
    ax.axis("off")


def plot_comparison(rec: dict, box, methods=None, crop_inches: float = 1.9):
    """Paper-style figure: full HR with the box, then the boxed crops of LR (nearest),
    each reconstructed method and HR, titled PSNR (dB) / SSIM; the best in red."""
    methods = [m for m in (rec["sr"] if methods is None else methods)
               if m in rec["sr"]]
    crops = zoom_crops({"LR": nearest_up(rec["lr"], rec["scale"]),
                        **{m: rec["sr"][m] for m in methods}, "HR": rec["hr"]}, box)
    best = max(methods, key=lambda m: rec["scores"][m][0]) if len(methods) > 1 else None
    rows = 1 if len(crops) <= 4 else 2
    cols = -(-len(crops) // rows)
    h, w = rec["hr"].shape[:2]
    hr_inches = min(rows * crop_inches * w / h, 2.5 * rows * crop_inches)
    fig = plt.figure(figsize=(hr_inches + cols * crop_inches,
                              rows * (crop_inches + 0.45)))
    grid = fig.add_gridspec(rows, cols + 1,
                            width_ratios=[hr_inches] + [crop_inches] * cols)
    ax = fig.add_subplot(grid[:, 0])
    _show(ax, rec["hr"], f"{rec['set']}/{rec['image']}  x{rec['scale']}")
    y, x, bh, bw = box
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, ec="red", lw=1.5))
    for i, (name, crop) in enumerate(crops.items()):
        title = {"LR": f"LR (nearest x{rec['scale']})",
                 "HR": "HR\nPSNR / SSIM"}.get(name)
        if name in rec["scores"]:
            title = "{}\n{:.2f} dB / {:.4f}".format(name, *rec["scores"][name])
        _show(fig.add_subplot(grid[i // cols, 1 + i % cols]), crop, title,
              color="red" if name == best else "black")
    fig.tight_layout()
    return fig


def table_html(rec: dict, methods=None) -> str:
    """Per-image PSNR/SSIM of the methods (and their gain over bicubic) as HTML."""
    methods = [m for m in (rec["sr"] if methods is None else methods)
               if m in rec["sr"]]
    base = rec["scores"].get("bicubic", (np.nan,))[0]
    rows = [f"<tr><td>{m}</td><td>{p:.2f}</td><td>{s:.4f}</td><td>{p - base:+.2f}</td>"
            f"<td>{rec['seconds'][m]:.2f}</td></tr>"
            for m in methods for p, s in [rec["scores"][m]]]
    rows += [f"<tr><td>{m}</td><td colspan=4>no checkpoint</td></tr>"
             for m in rec["missing"]]
    head = "".join(f"<th>{c}</th>" for c in
                   ("method", "PSNR (dB)", "SSIM", "vs bicubic", "time (s)"))
    cap = html.escape(f"{rec['set']}/{rec['image']} x{rec['scale']} "
                      f"(LR {rec['lr_source']}); Y channel, {rec['scale']} px shaved")
    return f"<table><caption>{cap}</caption><tr>{head}</tr>{''.join(rows)}</table>"


def png(x, dpi: int = 80) -> bytes:
    """PNG bytes of a uint8 image, or of a figure (then closed: no second display)."""
    buf = io.BytesIO()
    if isinstance(x, np.ndarray):
        Image.fromarray(np.ascontiguousarray(x)).save(buf, format="PNG")
    else:
        x.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(x)
    return buf.getvalue()


def centred_box(shape, cy: float, cx: float, size: int) -> tuple:
    """Square box (y, x, h, w) of side ``size`` centred at the fractions ``cy``, ``cx``
    of the image's height and width, shifted inside the image at the borders."""
    h, w = shape[:2]
    s = int(max(1, min(size, h, w)))
    y = int(np.clip(round(cy * h - s / 2), 0, h - s))
    x = int(np.clip(round(cx * w - s / 2), 0, w - s))
    return y, x, s, s


def box_centre(shape, box) -> tuple[float, float]:
    """The centre of a box (y, x, h, w) as fractions of the image's height and width."""
    y, x, bh, bw = box
    return (y + bh / 2) / shape[0], (x + bw / 2) / shape[1]


def _caption(rec: dict, left: str, right: str) -> str:
    def one(name):
        if name in rec["scores"]:
            return "<b>{}</b> {:.2f} dB / {:.4f}".format(html.escape(name),
                                                       *rec["scores"][name])
        return "<b>HR</b> (truth)"
    return f"left: {one(left)} &nbsp;|&nbsp; right: {one(right)}"


def explorer(set_name: str | None = None, image: str | None = None, scale: int = 3,
             methods=METHODS, box=(0.3, 0.3, 48), device="cpu", folder=None,
             cache: dict | None = None, nets: dict | None = None, wipe_px: int = 384):
    """ipywidgets UI: pick set/image/scale/methods, move the zoom box, wipe two methods.

    ``box`` is (top, left, size) as in ``make_box``; the sliders then move its
    centre (stock ipywidgets images take no clicks, so the box is placed with
    sliders, not by clicking on the picture). The wipe splices two of the methods
    that ran, or a method and HR, left and right of a seam. ``cache`` maps
    (set, image, scale) -> ``reconstruct`` result (pass one to reuse work already
    done): a view change only crops, indexes and splices; ``reconstruct`` runs once
    per (set, image, scale). Callbacks are in ``ui.callbacks``, widgets in ``ui.parts``.
    """
    import ipywidgets as W

    methods, sets = parse_methods(methods), data.list_sets() or [data.BUILTIN]
    set_name = set_name if set_name in sets else sets[0]
    images = data.list_images(set_name)
    cache, nets = ({} if cache is None else cache), ({} if nets is None else nets)
    frac = dict(min=0, max=1, step=0.01, continuous_update=False, readout_format=".0%")
    p = dict(
        set=W.Dropdown(options=sets, value=set_name, description="set"),
        image=W.Dropdown(options=images, description="image",
                         value=image if image in images else images[0]),
        scale=W.Dropdown(options=list(data.SCALES), value=scale, description="scale"),
        methods=W.SelectMultiple(options=methods, value=tuple(methods),
                                 rows=len(methods), description="panels"),
        cx=W.FloatSlider(description="box x", **frac),
        cy=W.FloatSlider(description="box y", **frac),
        size=W.IntSlider(value=box[2], min=8, max=256, step=4, description="box size",
                         continuous_update=False),
        left=W.Dropdown(options=[], description="wipe left"),
        right=W.Dropdown(options=[], description="wipe right"),
        in_box=W.Checkbox(value=False, description="wipe inside the box"),
        column=W.FloatSlider(value=0.5, description="seam", **frac),
        status=W.HTML(), figure=W.Image(format="png"), table=W.HTML(),
        caption=W.HTML(), wipe=W.Image(format="png"))
    for name, widget in p.items():  # stable handles for a browser test: .amms-<name>
        widget.add_class(f"amms-{name}")
    busy = [False]  # True while options change: ignore the cascade of events

    def current():
        key = (p["set"].value, p["image"].value, p["scale"].value)
        if key not in cache:
            cache[key] = reconstruct(*key, methods, device, folder, nets)
        return cache[key]

    def box_of(rec):
        return centred_box(rec["hr"].shape, p["cy"].value, p["cx"].value,
                           p["size"].value)

    def on_set():
        busy[0] = True
        p["image"].options = data.list_images(p["set"].value)
        p["image"].value = p["image"].options[0]
        busy[0] = False
        on_data()

    def on_data():
        rec, busy[0] = current(), True
        ran = list(rec["sr"])  # the wipe: best method left, bicubic (or HR) right
        best = max(ran, key=lambda m: rec["scores"][m][0])
        old = p["left"].value, p["right"].value
        for name in ("left", "right"):
            p[name].options = ran + ["HR"]
        p["left"].value = old[0] if old[0] in ran + ["HR"] else best
        p["right"].value = (old[1] if old[1] in ran + ["HR"] else
                            "bicubic" if best != "bicubic" else "HR")
        busy[0] = False
        missing = html.escape(", ".join(rec["missing"]) or "none")
        p["status"].value = (f"{html.escape(rec['set'])}/{html.escape(rec['image'])} "
                             f"x{rec['scale']}; no checkpoint, not shown: {missing}")
        on_view()

    def on_view():
        rec = current()
        p["figure"].value = png(plot_comparison(rec, box_of(rec), p["methods"].value))
        p["table"].value = table_html(rec, p["methods"].value)
        on_wipe()

    def on_wipe():
        rec = current()
        pick = {**rec["sr"], "HR": rec["hr"]}
        a, b = pick[p["left"].value], pick[p["right"].value]
        if p["in_box"].value:  # the zoom box, blown up with nearest neighbours
            crops = zoom_crops({"a": a, "b": b}, box_of(rec))
            k = max(1, wipe_px // max(crops["a"].shape[:2]))
            a, b = nearest_up(crops["a"], k), nearest_up(crops["b"], k)
        column = round(p["column"].value * a.shape[1])
        p["wipe"].value = png(wipe(a, b, column))
        p["caption"].value = _caption(rec, p["left"].value, p["right"].value)

    for names, fn in [("set", on_set), ("image scale", on_data),
                      ("methods cx cy size", on_view),
                      ("left right in_box column", on_wipe)]:
        for name in names.split():
            p[name].observe(lambda change, fn=fn: busy[0] or fn(), names="value")
    rec, busy[0] = current(), True  # here, in the caller: errors surface
    p["cy"].value, p["cx"].value = box_centre(
        rec["hr"].shape, make_box(rec["hr"].shape, *box))
    busy[0] = False
    on_data()
    controls = W.HBox([W.VBox([p["set"], p["image"], p["scale"]]), p["methods"],
                       W.VBox([p["cx"], p["cy"], p["size"]])])
    wiper = W.VBox([W.HBox([p["left"], p["right"], p["in_box"]]), p["column"],
                    p["caption"], p["wipe"]])
    ui = W.VBox([controls, p["status"], W.HBox([p["figure"], p["table"]]), wiper])
    ui.add_class("amms-explorer")
    ui.parts, ui.cache = p, cache
    ui.callbacks = dict(set=on_set, data=on_data, view=on_view, wipe=on_wipe)
    return ui
