"""The explorer widget of notebook 08: pick an image (or upload your own), a scale and the
methods; move the zoom box; wipe between two methods.

``explorer(...)`` (``Explorer(...).ui``) is the ipywidgets box to display. Its parts are
in ``ui.parts`` (each with the CSS class ``amms-<name>``, stable handles for the browser test), its
callbacks in ``ui.callbacks`` and its reconstructions in ``ui.cache``: each (set, image,
scale) runs once (``compare.reconstruct``), and a view change (box, panels, wipe) only
crops, indexes and splices those arrays. Stock ipywidgets images take no clicks, so the
box is placed with sliders.

An uploaded image is an LR input with no ground truth: it joins the set list as
``UPLOADS``, runs through every shipped network at the chosen scale (tiled when the
memory estimate asks for it, each method's estimated seconds in the status line first),
and shows in the same panels and wipe; with no HR there is no PSNR or SSIM, and the
panels say so.
"""
from __future__ import annotations

import html
import tempfile
import warnings
from pathlib import Path

from amms_lib import compare, data
from amms_lib.errors import AmmsError
from amms_lib.inference import check_size
from amms_lib.models import METHODS

UPLOADS = compare.UPLOADS  # the set name uploaded images are listed under


def read_upload(name: str, content: bytes):
    """uint8 (H, W[, 3]) of an uploaded file, with ``images.read_image``'s checks (bad,
    16-bit or oversized files are one AmmsError naming the file)."""
    from amms_lib.images import read_image

    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            with warnings.catch_warnings(record=True) as caught:  # name the file, not tmp
                warnings.simplefilter("always")
                img = read_image(path)
        except AmmsError as exc:
            raise AmmsError(str(exc).replace(str(path), name)) from None
    for w in caught:
        warnings.warn(str(w.message).replace(str(path), name), stacklevel=2)
    check_size(*img.shape[:2])
    return img


class Explorer:
    """The widget's state and callbacks. ``box`` is (top, left, size) as in
    ``compare.make_box``; ``cache`` maps (set, image, scale) -> ``reconstruct`` result
    (pass one to reuse work already done); ``nets`` caches loaded networks."""

    def __init__(self, set_name: str | None = None, image: str | None = None,
                 scale: int = 3, methods=compare.METHODS, box=(0.3, 0.3, 48), device="cpu",
                 folder=None, cache: dict | None = None, nets: dict | None = None,
                 wipe_px: int = 384):
        import ipywidgets as W

        self.methods = compare.parse_methods(methods)
        self.device, self.folder, self.wipe_px = device, folder, wipe_px
        self.cache = {} if cache is None else cache
        self.nets = {} if nets is None else nets
        self.uploads: dict[str, object] = {}  # file name -> its uint8 LR image
        sets = data.list_sets() or [data.BUILTIN]
        data.check_scale(scale)
        if set_name is not None and data.canonical(set_name) not in sets:
            raise AmmsError(f"set {set_name!r} not found; choose one of {', '.join(sets)}")
        set_name = data.canonical(set_name) if set_name is not None else sets[0]
        images = data.list_images(set_name)
        frac = dict(min=0, max=1, step=0.01, continuous_update=False, readout_format=".0%")
        self.p = p = dict(
            set=W.Dropdown(options=sets, value=set_name, description="set"),
            image=W.Dropdown(options=images, description="image",
                             value=image if image in images else images[0]),
            scale=W.Dropdown(options=list(data.SCALES), value=scale, description="scale"),
            upload=W.FileUpload(accept=",".join(data.IMAGE_SUFFIXES), multiple=False,
                                description="your image"),
            methods=W.SelectMultiple(options=self.methods, value=tuple(self.methods),
                                     rows=len(self.methods), description="panels"),
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
        for name, widget in p.items():
            widget.add_class(f"amms-{name}")
        self.busy = False  # True while options change: ignore the cascade of events
        for names, fn in [("set", self.on_set), ("image scale", self.on_data),
                          ("methods cx cy size", self.on_view),
                          ("left right in_box column", self.on_wipe),
                          ("upload", self.on_upload)]:
            for name in names.split():
                p[name].observe(lambda change, fn=fn: self.busy or fn(), names="value")
        rec = self.current()  # here, in the caller: errors surface
        self.busy = True
        p["cy"].value, p["cx"].value = compare.box_centre(
            compare.sr_shape(rec), compare.make_box(compare.sr_shape(rec), *box))
        self.busy = False
        self.on_data()
        controls = W.HBox([W.VBox([p["set"], p["image"], p["scale"], p["upload"]]),
                           p["methods"], W.VBox([p["cx"], p["cy"], p["size"]])])
        wiper = W.VBox([W.HBox([p["left"], p["right"], p["in_box"]]), p["column"],
                        p["caption"], p["wipe"]])
        self.ui = W.VBox([controls, p["status"], W.HBox([p["figure"], p["table"]]), wiper])
        self.ui.add_class("amms-explorer")
        self.ui.parts, self.ui.cache, self.ui.explorer = p, self.cache, self
        self.ui.callbacks = dict(set=self.on_set, data=self.on_data, view=self.on_view,
                                 wipe=self.on_wipe, upload=self.on_upload)

    # -- what is shown -------------------------------------------------------------

    def key(self) -> tuple:
        return self.p["set"].value, self.p["image"].value, self.p["scale"].value

    def current(self) -> dict:
        """The reconstruction on show, made once per (set, image, scale)."""
        key = self.key()
        if key not in self.cache:
            if key[0] == UPLOADS:
                self.cache[key] = compare.reconstruct_lr(
                    self.uploads[key[1]], key[1], key[2], self.methods, self.device,
                    self.folder, self.nets, say=self.say)
            else:
                self.cache[key] = compare.reconstruct(*key, self.methods, self.device,
                                                      self.folder, self.nets)
        return self.cache[key]

    def box(self, rec: dict) -> tuple:
        return compare.centred_box(compare.sr_shape(rec), self.p["cy"].value,
                                   self.p["cx"].value, self.p["size"].value)

    def say(self, text: str) -> None:
        """A line in the status bar, shown while a callback still runs."""
        self.p["status"].value = html.escape(text)

    # -- callbacks -----------------------------------------------------------------

    def on_set(self) -> None:
        p = self.p
        self.busy = True
        p["image"].options = (list(self.uploads) if p["set"].value == UPLOADS
                              else data.list_images(p["set"].value))
        p["image"].value = p["image"].options[0]
        self.busy = False
        self.on_data()

    def on_upload(self) -> None:
        """Decode the uploaded file, list it under ``UPLOADS`` and show it."""
        p = self.p
        files = p["upload"].value  # ipywidgets 8: a tuple of {name, content, ...}
        if not files:
            return
        name, content = files[0]["name"], bytes(files[0]["content"])
        try:
            img = read_upload(name, content)
        except AmmsError as exc:
            self.say(f"cannot use {name}: {exc}")
            return
        self.uploads[name] = img
        for key in [k for k in self.cache if k[:2] == (UPLOADS, name)]:
            del self.cache[key]  # a new file of the same name replaces the old one
        self.busy = True
        if UPLOADS not in p["set"].options:
            p["set"].options = [*p["set"].options, UPLOADS]
        p["set"].value = UPLOADS
        p["image"].options = list(self.uploads)
        p["image"].value = name
        self.busy = False
        self.on_data()

    def on_data(self) -> None:
        p, rec = self.p, self.current()
        refused = "".join(f"; {html.escape(m)} refused: {html.escape(why)}"
                          for m, why in rec.get("refused", {}).items())
        if not rec["sr"]:  # nothing within the budgets: say so, keep the last picture
            p["status"].value = f"{html.escape(rec['image'])}: nothing shown{refused}"
            return
        ran = list(rec["sr"])  # the wipe: best method left, bicubic (or HR) right
        truth = ["HR"] if rec["hr"] is not None else []
        scored = [m for m in ran if m in rec["scores"]]
        best = max(scored, key=lambda m: rec["scores"][m][0]) if scored else ran[-1]
        old = p["left"].value, p["right"].value
        self.busy = True
        for name in ("left", "right"):
            p[name].options = ran + truth
        p["left"].value = old[0] if old[0] in ran + truth else best
        other = next((m for m in ("bicubic", *ran, *truth) if m != p["left"].value), best)
        p["right"].value = old[1] if old[1] in ran + truth and old[1] != p["left"].value \
            else other
        self.busy = False
        missing = html.escape(", ".join(rec["missing"]) or "none")
        where = (f"{html.escape(rec['set'])}/{html.escape(rec['image'])} x{rec['scale']}")
        no_hr = "; no HR for your image, so no PSNR or SSIM" if rec["hr"] is None else ""
        p["status"].value = f"{where}; no checkpoint, not shown: {missing}{no_hr}{refused}"
        self.on_view()

    def on_view(self) -> None:
        p, rec = self.p, self.current()
        if not rec["sr"]:
            return
        p["figure"].value = compare.png(compare.plot_comparison(rec, self.box(rec),
                                                                p["methods"].value))
        p["table"].value = compare.table_html(rec, p["methods"].value)
        self.on_wipe()

    def on_wipe(self) -> None:
        p, rec = self.p, self.current()
        if not rec["sr"]:
            return
        pick = {**rec["sr"], "HR": rec["hr"]}
        a, b = pick[p["left"].value], pick[p["right"].value]
        if p["in_box"].value:  # the zoom box, blown up with nearest neighbours
            crops = compare.zoom_crops({"a": a, "b": b}, self.box(rec))
            k = max(1, self.wipe_px // max(crops["a"].shape[:2]))
            a, b = compare.nearest_up(crops["a"], k), compare.nearest_up(crops["b"], k)
        column = round(p["column"].value * a.shape[1])
        p["wipe"].value = compare.png(compare.wipe(a, b, column))
        p["caption"].value = compare.caption(rec, p["left"].value, p["right"].value)


def explorer(set_name: str | None = None, image: str | None = None, scale: int = 3,
             methods=METHODS, box=(0.3, 0.3, 48), device="cpu", folder=None,
             cache: dict | None = None, nets: dict | None = None, wipe_px: int = 384):
    """The ipywidgets explorer: pick set/image/scale/methods or upload your own image,
    move the zoom box, wipe two methods. Returns the widget to display; its parts,
    callbacks and cache are ``ui.parts``, ``ui.callbacks`` and ``ui.cache``."""
    return Explorer(set_name, image, scale, methods, box, device, folder, cache, nets,
                    wipe_px).ui
