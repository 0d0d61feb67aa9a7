"""Comparing reconstructions: zoomed crops and a before/after wipe.

The paper's visual comparison figure (x3): the HR image with a box drawn on it,
then that box cut from the LR input, from every method and from the HR truth, each
titled with its PSNR/SSIM (Y channel, ``scale`` pixels shaved: ``amms_lib.metrics``),
and the same as HTML and PNG for the explorer widget (``amms_lib.explorer``, which imports
this module, never the other way). The
reconstructions themselves (``reconstruct``, ``reconstruct_lr``) are made in
``amms_lib.reconstruct`` and importable from here; this module only draws them.
"""
from __future__ import annotations

import html
import io

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from amms_lib.errors import AmmsError
from amms_lib.images import as_rgb
from amms_lib.models import METHODS  # noqa: F401 (compare.METHODS, as before)
from amms_lib.reconstruct import (  # noqa: F401 (compare.reconstruct is the notebooks' name)
    UPLOADS,
    notebook_methods,
    parse_methods,
    reconstruct,
    reconstruct_lr,
    sr_shape,
)

MARK = (255, 255, 0)  # wipe seam colour: yellow shows on most images


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
    # the same box as centred_box's with its centre at top * (h - s) + s / 2 (one rule)
    return centred_box(shape, (top * (h - s) + s / 2) / h, (left * (w - s) + s / 2) / w, s)


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
    truth = rec["hr"]
    if truth is None:  # a user's image: no HR, no scores; the whole view is an SR image
        truth = rec["sr"][methods[-1] if methods else next(iter(rec["sr"]))]
    crops = zoom_crops({"LR": nearest_up(rec["lr"], rec["scale"]),
                        **{m: rec["sr"][m] for m in methods},
                        **({"HR": rec["hr"]} if rec["hr"] is not None else {})}, box)
    scored = [m for m in methods if m in rec["scores"]]
    best = max(scored, key=lambda m: rec["scores"][m][0]) if len(scored) > 1 else None
    rows = 1 if len(crops) <= 4 else 2
    cols = -(-len(crops) // rows)
    h, w = truth.shape[:2]
    hr_inches = min(rows * crop_inches * w / h, 2.5 * rows * crop_inches)
    fig = plt.figure(figsize=(hr_inches + cols * crop_inches,
                              rows * (crop_inches + 0.45)))
    grid = fig.add_gridspec(rows, cols + 1,
                            width_ratios=[hr_inches] + [crop_inches] * cols)
    ax = fig.add_subplot(grid[:, 0])
    whole = "" if rec["hr"] is not None else f"\n(shown: {methods[-1] if methods else 'SR'}; no HR)"
    _show(ax, truth, f"{rec['set']}/{rec['image']}  x{rec['scale']}{whole}")
    y, x, bh, bw = box
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, ec="red", lw=1.5))
    for i, (name, crop) in enumerate(crops.items()):
        title = {"LR": f"LR (nearest x{rec['scale']})",
                 "HR": "HR\nPSNR / SSIM"}.get(name)
        if name in rec["scores"]:
            title = "{}\n{:.2f} dB / {:.4f}".format(name, *rec["scores"][name])
        elif name in rec["sr"]:
            title = f"{name}\nno HR: no PSNR"
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
            for m in methods if m in rec["scores"] for p, s in [rec["scores"][m]]]
    rows += [f"<tr><td>{m}</td><td colspan=3>no HR: no PSNR or SSIM</td>"
             f"<td>{rec['seconds'][m]:.2f}</td></tr>"
             for m in methods if m not in rec["scores"]]
    rows += [f"<tr><td>{m}</td><td colspan=4>no checkpoint</td></tr>"
             for m in rec["missing"]]
    head = "".join(f"<th>{c}</th>" for c in
                   ("method", "PSNR (dB)", "SSIM", "vs bicubic", "time (s)"))
    scoring = (f"Y channel, {rec['scale']} px shaved" if rec["hr"] is not None
               else "no HR to score against")
    cap = html.escape(f"{rec['set']}/{rec['image']} x{rec['scale']} "
                      f"(LR {rec['lr_source']}); {scoring}")
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


def caption(rec: dict, left: str, right: str) -> str:
    """The wipe's caption: each side's method and its scores (HR: the truth)."""
    def one(name):
        if name in rec["scores"]:
            return "<b>{}</b> {:.2f} dB / {:.4f}".format(html.escape(name),
                                                       *rec["scores"][name])
        if name == "HR":
            return "<b>HR</b> (truth)"
        return f"<b>{html.escape(name)}</b> (no HR: no score)"
    return f"left: {one(left)} &nbsp;|&nbsp; right: {one(right)}"
