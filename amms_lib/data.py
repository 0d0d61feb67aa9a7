"""Benchmark images: where they are, which sets and images exist, LR/HR pairs.

One setting names the data folder: the environment variable ``AMMS_DATA``
(default: ``data/`` in the repository root). It holds the EDSR/BasicSR layout::

    benchmark/<Set>/HR/<name>.png
    benchmark/<Set>/LR_bicubic/X<s>/<name>x<s>.png

(the sets may also sit directly in the folder). ``B100`` is accepted for ``BSD100``.
With no data folder at all, a few images shipped in ``skimage.data`` form the
built-in set ``skimage``, so that everything still runs (numbers are then not
comparable with published tables).

Command line: ``python -m amms_lib.data list`` (exit 1 when a set is incomplete) and
``python -m amms_lib.data fetch --dest DIR`` (downloads the standard archive).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from amms_lib.errors import AmmsError
from amms_lib.images import read_image
from amms_lib.resize import imresize
from amms_lib.runtime import file_sha256, repo_root
from amms_lib.scales import SCALES, check_scale  # data.SCALES etc. stay importable

ENV_VAR = "AMMS_DATA"
STANDARD_SETS = ("Set5", "Set14", "BSD100", "Urban100")
EXPECTED_IMAGES = {"Set5": 5, "Set14": 14, "BSD100": 100, "Urban100": 100}
# the standard sets' image names (BSD100's when its files follow EDSR's img_NNN naming; under
# its Berkeley ids, as some copies ship it, its images are matched by their pixels)
NUMBERED = {f"img_{i:03d}" for i in range(1, 101)}
EXPECTED_NAMES = {
    "Set5": {"baby", "bird", "butterfly", "head", "woman"},
    "Set14": {"baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers",
              "foreman", "lenna", "man", "monarch", "pepper", "ppt3", "zebra"},
    "Urban100": NUMBERED,
}
ALIASES = {"B100": "BSD100", "builtin": "skimage"}  # other spellings -> canonical name
BUILTIN = "skimage"
BUILTIN_IMAGES = ("astronaut", "camera", "chelsea", "coffee")
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
# The validation split: 15 training images held out of T91 + BSD200 (every 18th of T91's
# sorted names, the first five; every 20th of BSD200's), never cut into training patches.
# Validation curves and checkpoint selection use it; Set5, Set14, BSD100 and Urban100 are
# only ever test sets. Listed by name, so that adding files never moves it.
HELDOUT = "heldout"
HELDOUT_IMAGES = {
    "T91": ("t1", "t26", "t43", "t6", "tt17"),
    "BSD200": ("100075", "12074", "151087", "176035", "198023", "232038", "268002",
               "317080", "376020", "65010"),
}
# training images the standard release itself holds twice (the same pixels under two names):
# T91 (SRCNN's, as the data folder holds it) has t65 equal to t36; both are trained on, as shipped
STANDARD_TWINS = {"T91": {frozenset({"t36", "t65"})}}


class Pair(NamedTuple):
    """One evaluation sample: uint8 LR input, mod-cropped uint8 HR, where LR came from."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    lr_source: str  # "published" (file on disk) or "generated" (amms_lib.resize)


def data_root() -> Path | None:
    """The configured data folder; None when AMMS_DATA is unset and data/ is absent.

    An AMMS_DATA that names a missing folder is an error, not a silent fallback.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise AmmsError(
                f"{ENV_VAR}={env}: no such folder; point {ENV_VAR} at a folder holding "
                "benchmark/<Set>/HR, or run: python -m amms_lib.data fetch --dest DIR"
            )
        return root
    root = repo_root() / "data"
    return root if root.is_dir() else None


def _benchmark_dir(root: Path | None = None) -> Path | None:
    root = data_root() if root is None else Path(root)
    if root is None:
        return None
    return root / "benchmark" if (root / "benchmark").is_dir() else root


def _set_folders(root: Path | None = None) -> dict[str, Path]:
    """Canonical set name -> folder, for every folder with an ``HR`` subfolder."""
    bench = _benchmark_dir(root)
    if bench is None:
        return {}
    found = {}
    for d in sorted(bench.iterdir()):
        if (d / "HR").is_dir():
            found[ALIASES.get(d.name, d.name)] = d
    return found


def canonical(name: str) -> str:
    """``B100`` -> ``BSD100``; other names unchanged."""
    return ALIASES.get(name, name)


def standard_name(name: str) -> str | None:
    """The standard set a set's name stands for, in any case or alias (``set5``, ``b100``),
    or None for a custom set: a near-standard name is checked as that set, so that it cannot
    pass an edited copy off as a standard result."""
    names = {s.lower(): s for s in STANDARD_SETS}
    names |= {a.lower(): c for a, c in ALIASES.items() if c in STANDARD_SETS}
    return names.get(name.lower())


def list_sets(root: Path | None = None) -> list[str]:
    """Sets available under the data folder, or ``["skimage"]`` without one."""
    folders = _set_folders(root)
    if not folders and (root is None and data_root() is None):
        return [BUILTIN]
    order = {s: i for i, s in enumerate(STANDARD_SETS)}
    return sorted(folders, key=lambda s: (order.get(s, len(order)), s))


def set_dir(name: str, root: Path | None = None) -> Path:
    """Folder of one set; a clear error naming the available sets when it is missing."""
    folders = _set_folders(root)
    if canonical(name) in folders:
        return folders[canonical(name)]
    where = _benchmark_dir(root)
    if where is None:
        raise AmmsError(
            f"set {name!r}: no data folder ({ENV_VAR} is unset and data/ is missing); "
            f"set {ENV_VAR}, or run: python -m amms_lib.data fetch --dest data"
        )
    have = ", ".join(list_sets(root)) or "none"
    raise AmmsError(f"set {name!r} not found under {where}; available: {have}")


def _heldout_file(image: str, root: Path | None = None) -> Path | None:
    """The training-set file of one held-out image, or None when it is missing."""
    root = data_root() if root is None else Path(root)
    for train_set, names in HELDOUT_IMAGES.items():
        if image in names and root is not None:
            return _find(root / "train" / train_set, image)
    return None


def list_images(name: str, root: Path | None = None) -> list[str]:
    """Image names (file stems) of a set, sorted."""
    if name == BUILTIN:
        return list(BUILTIN_IMAGES)
    if name == HELDOUT:
        names = [n for names in HELDOUT_IMAGES.values() for n in names]
        found = sorted(n for n in names if _heldout_file(n, root) is not None)
        if not found:
            raise AmmsError(f"the held-out split needs train/T91 and train/BSD200 under "
                            f"the data folder ({ENV_VAR}); none of its images was found")
        return found
    return sorted(set(_hr_files(name, root)))  # an image twice (a.png, a.jpg) counts once


def _hr_files(name: str, root: Path | None = None) -> list[str]:
    """The stem of every HR image file of a set, repeated where two files share one."""
    return [p.stem for p in image_files(set_dir(name, root) / "HR")]


def image_files(folder: Path) -> list[Path]:
    """A folder's image files (``IMAGE_SUFFIXES``), sorted; a broken link among them is one
    clear error naming it."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for p in files:
        check_link(p)
    return files


def check_link(path: Path, what: str = "") -> None:
    """Refuse, in one line, a symbolic link whose target is gone (``what``: how the
    message names it, e.g. "training set 'T91': ")."""
    if path.is_symlink() and not path.exists():
        raise AmmsError(f"{what}{path} is a broken link (its target {os.readlink(path)} does "
                        "not exist); restore its target or remove the link")


def two_files(kind: str, names) -> str:
    """``two HR files for 1 image(s): baby``: one image held in more than one file."""
    return f"two {kind} files for {_few(set(names))}"


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Drop the last ``h % scale`` rows and ``w % scale`` columns (the benchmark rule)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for case in (suffix, suffix.upper()):  # a.PNG is a PNG too
            if (folder / (stem + case)).is_file():
                return folder / (stem + case)
    return None


def load_hr(name: str, image: str, root: Path | None = None, standard: bool = True
            ) -> np.ndarray:
    """The HR image as uint8 (H, W) or (H, W, 3), not yet mod-cropped; a standard set's
    image is refused unless its pixels are the standard release's (``standard=False``: an
    explicitly partial benchmark, its rows marked)."""
    if name == BUILTIN:
        import skimage.data

        if image not in BUILTIN_IMAGES:
            raise AmmsError(f"{image!r} is not in the built-in set; use {BUILTIN_IMAGES}")
        return np.ascontiguousarray(getattr(skimage.data, image)())
    if name == HELDOUT:
        path = _heldout_file(image, root)
        if path is None:
            raise AmmsError(f"{HELDOUT}: no training image named {image!r}")
        img = read_image(path)
        return _standard(img, HELDOUT, "HR", image, path) if standard else img
    path = _find(set_dir(name, root) / "HR", image)
    if path is None:
        raise AmmsError(f"{name}: no HR image named {image!r}")
    img = read_image(path)
    return _standard(img, standard_name(name) or name, "HR", image, path) if standard else img


def _standard(img: np.ndarray, name: str, kind: str, image: str, path: Path) -> np.ndarray:
    """``img``, once checked against the standard release's pixels when it is one of its
    images (``standard_pixels.json``): every loader, not only the set checks, refuses an
    edited, converted or other version of a standard image."""
    want = _standard_pixels().get(name, {}).get(kind, {}).get(image)
    if want is not None and array_id(img) != want:
        raise AmmsError(f"{path}: not the standard {name} image {image!r} (its pixels differ: "
                        "edited, converted or another version); re-fetch the set")
    return img


def lr_path(name: str, image: str, scale: int, root: Path | None = None) -> Path | None:
    """The published LR file, or None when the set has none at this scale."""
    if name in (BUILTIN, HELDOUT):
        return None
    return _find(set_dir(name, root) / "LR_bicubic" / f"X{scale}", f"{image}x{scale}")


def load_pair(name: str, image: str, scale: int, root: Path | None = None,
              standard: bool = True) -> Pair:
    """LR input and mod-cropped HR truth for one image at one scale.

    The published LR file is used when it exists, and refused unless it is MATLAB
    bicubic of its HR (so a swapped or edited file is never scored); otherwise the LR
    is made from the HR with MATLAB-style bicubic and clamp-to-edge borders, exactly as
    the published files were made (tests check that bit for bit).
    """
    check_scale(scale)
    hr = modcrop(load_hr(name, image, root, standard), scale)
    if min(hr.shape[:2]) < scale:
        raise AmmsError(f"{name}/{image}: {hr.shape[:2]} is too small for x{scale}")
    path = lr_path(name, image, scale, root)
    if path is None:
        return Pair(image, imresize(hr, 1 / scale, border="clamp"), hr, "generated")
    lr = read_image(path)
    want = (hr.shape[0] // scale, hr.shape[1] // scale, *hr.shape[2:])
    if lr.shape != want:
        def kind(shape):
            return f"{shape[1]}x{shape[0]} " + ("colour" if len(shape) == 3 else "grey")
        raise AmmsError(
            f"{path}: LR is {kind(lr.shape)}, expected {kind(want)} for the x{scale} HR "
            f"{kind(hr.shape)}; the data folder is inconsistent (re-fetch it)"
        )
    # swapped, edited or another degradation
    if why := _lr_mismatch(lr, imresize(hr, 1 / scale, border="clamp")):
        raise AmmsError(
            f"{path}: the LR is not MATLAB bicubic of its HR ({why}); the data folder is "
            f"inconsistent (re-fetch it), or delete {path.parent} to have the LR made from "
            "the HR"
        )
    return Pair(image, lr, hr, "published")


def _lr_mismatch(lr: np.ndarray, made: np.ndarray, border: int = 3) -> str | None:
    """Why a published LR is not bicubic of its HR, or None. Inside the outer ``border``
    pixels a file matches bit for bit (a rounding difference is allowed in under 1% of
    pixels); on the border MATLAB's symmetric padding differs from the clamp used here by
    up to about 10 grey levels (data README), so up to 24 is allowed there."""
    diff = np.abs(lr.astype(np.int16) - made.astype(np.int16))
    inner = diff[border:-border, border:-border] if min(diff.shape[:2]) > 2 * border + 2 \
        else diff
    if inner.max() > 1 or (inner > 0).mean() > 0.01:
        return (f"differs by up to {inner.max()} grey levels in {(inner > 0).mean():.0%} of "
                "the pixels inside the border")
    if diff.max() > 24:
        return f"differs by up to {diff.max()} grey levels on its border"
    return None


def incomplete(name: str, scales=SCALES, root: Path | None = None) -> list[str]:
    """What makes a set's mean differ from the published one: fewer or more HR images
    than the standard set has, two HR files for one image (``baby.png`` and
    ``baby.jpg``), LR files whose HR image is gone, images without the LR file at a
    scale that has published LR, and pixels other than the standard release's (a set named
    like a standard one in any case, ``set5``, is checked as it). Empty when the set is
    exactly the standard one."""
    if name == BUILTIN:
        return []
    if name == HELDOUT:
        names = {n for names in HELDOUT_IMAGES.values() for n in names}
        missing = names - set(list_images(HELDOUT, root))
        files = {f"HR/{n}": f for n in sorted(names - missing) if (f := _heldout_file(n, root))}
        return ([f"{_few(missing)} of the held-out split missing"] if missing else []) + \
            _changed(list(files.values()), root) + _not_standard_pixels(HELDOUT, files)
    folder, images = set_dir(name, root), set(list_images(name, root))
    std = standard_name(name)
    want = EXPECTED_IMAGES.get(std)
    problems, unknown = [], set()
    if want and len(images) < want:
        problems.append(f"{len(images)} of {want} HR images")
    elif want and len(images) > want:
        problems.append(f"{len(images)} HR images, the standard set has {want}")
    known = EXPECTED_NAMES.get(std)
    if known is None and std == "BSD100" and any(n.startswith("img_") for n in images):
        known = NUMBERED
    if known and want and len(images) == want and images != known:  # right count, other images
        unknown = images - known  # said here: not matched by their pixels again below
        problems.append(f"not the standard images: {_few(unknown)} unknown, "
                        f"{_few(known - images)} missing")
    stems = _hr_files(name, root)
    if twice := {s for s in stems if stems.count(s) > 1}:
        problems.append(f"{two_files('HR', twice)} (keep one of each)")
    orphans = set()
    for s in scales:
        lr_dir = folder / "LR_bicubic" / f"X{s}"
        if not lr_dir.is_dir():
            continue  # no published LR at all: it is made from the HR, as documented
        stems = {p.stem[: -len(f"x{s}")] for p in image_files(lr_dir)
                 if p.stem.endswith(f"x{s}")}
        orphans |= stems - images
        if images - stems:
            problems.append(f"x{s} LR missing for {_few(images - stems)}")
    if orphans:
        problems.append(f"HR missing for {_few(orphans)} (LR files are there)")
    files = [p for sub in ["HR", *(f"LR_bicubic/X{s}" for s in scales)]
             if (folder / sub).is_dir() for p in image_files(folder / sub)]
    named = {f"HR/{p.stem}": p for p in files  # LR: load_pair
             if p.parent.name == "HR" and p.stem not in unknown}
    return problems + _changed(files, root) + _not_standard_pixels(std or name, named)


_PER_FILE: dict = {}  # (what, path, size, mtime) -> value: a set is read once per process


def _per_file(what, path: Path):
    """``what(path)``, computed once per version of the file."""
    stat = path.stat()
    key = (what, os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _PER_FILE:
        _PER_FILE[key] = what(path)
    return _PER_FILE[key]


def pixels_id(path: Path) -> str:
    """A short sha256 of an image's decoded pixels (shape, dtype, bytes): the same for any
    lossless re-encoding, different for any edited, converted or other version."""
    return _per_file(_decoded_id, path)


def _decoded_id(path: Path) -> str:  # one function object: the cache's key
    return array_id(read_image(path))


def heldout_ids(root: Path | None = None) -> dict[str, str]:
    """``{pixels_id: held-out image}`` for the held-out split's standard pixels and its
    data-folder files under each of the 8 flips and 90-degree rotations that training
    augments with: a training image with one of these ids is a held-out image."""
    ids = {v: k for k, v in _standard_pixels()[HELDOUT]["HR"].items()}
    for names in HELDOUT_IMAGES.values():
        for image in names:
            if (path := _heldout_file(image, root)) is not None:
                ids.update(dict.fromkeys(_per_file(_transformed_ids, path), image))
    return ids


# a copy that is re-encoded (JPEG q50-q95), rescaled (50-90%, or by 5-8% in one direction),
# made grey or (on BSD200's 481x321 images) trimmed by up to 10 px has other pixels but nearly
# the same 12x12 grey thumbnail: correlation 0.95 or more, while two different images of T91,
# BSD200 and the benchmark sets correlate at most 0.77 (tests/test_train.py measures both)
THUMB_SIDE, NEAR = 12, 0.93


def thumbnail(img: np.ndarray) -> np.ndarray | None:
    """The image's grey ``THUMB_SIDE`` x ``THUMB_SIDE`` area means, zero-mean and unit-norm
    (None if it is smaller): nearly the same for any re-encoding, rescale or small trim
    of one picture."""
    g = np.asarray(img, np.float64)
    g = g.mean(-1) if g.ndim == 3 else g
    if min(g.shape) < THUMB_SIDE:
        return None
    for axis in (0, 1):  # area means over THUMB_SIDE nearly equal spans of each axis
        edges = np.linspace(0, g.shape[axis], THUMB_SIDE + 1).astype(int)
        g = np.add.reduceat(g, edges[:-1], axis=axis) / np.expand_dims(np.diff(edges),
                                                                      1 - axis)
    g = (g - g.mean()).ravel()
    return g / (np.linalg.norm(g) + 1e-12)


def heldout_thumbnails(root: Path | None = None) -> list[tuple[str, np.ndarray]]:
    """``(held-out image, thumbnail)`` of its data-folder file under each of the 8 flips
    and rotations, for ``near_heldout``."""
    out = []
    for names in HELDOUT_IMAGES.values():
        for image in names:
            if (path := _heldout_file(image, root)) is not None:
                out += [(image, t) for t in _per_file(_transformed_thumbnails, path)]
    return out


def _transformed_thumbnails(path: Path) -> list[np.ndarray]:
    img = read_image(path)
    return [thumbnail(np.rot90(t, k)) for t in (img, np.fliplr(img)) for k in range(4)]


def heldout_windows(root: Path | None = None) -> list[tuple[str, list]]:
    """``(held-out image, copies.windows of its data-folder file)``, for ``copies.contains``:
    a held-out picture padded, framed, trimmed or mod-cropped."""
    return [(image, _per_file(_windows, path)) for names in HELDOUT_IMAGES.values()
            for image in names if (path := _heldout_file(image, root)) is not None]


def _windows(path: Path) -> list:  # one function object: the cache's key
    from amms_lib import copies

    return copies.windows(read_image(path))


def near_heldout(img: np.ndarray, thumbs: list) -> str | None:
    """The held-out image ``img`` is a re-encoded, rescaled or trimmed copy of (its
    thumbnail's correlation above ``NEAR``), or None. Trimmed or padded copies of small images
    move their thumbnail: ``copies.contains`` finds those."""
    if (t := thumbnail(img)) is None:
        return None
    return next((image for image, h in thumbs if h is not None and float(t @ h) > NEAR), None)


def _transformed_ids(path: Path) -> tuple[str, ...]:  # one function object: the cache's key
    img = read_image(path)
    return tuple(array_id(np.rot90(t, k)) for t in (img, np.fliplr(img)) for k in range(4))


def array_id(img: np.ndarray) -> str:
    """``pixels_id`` of an image already decoded."""
    import hashlib

    h = hashlib.sha256(f"{img.shape}{img.dtype}".encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()[:16]


_STANDARD: dict = {}


def _standard_pixels() -> dict:
    """``{set: {"HR": {image: pixels_id}}}`` of the standard release (the held-out split as
    ``heldout``); its LR files are checked as bicubic of these HR images (``load_pair``)."""
    if not _STANDARD:
        import json

        _STANDARD.update(json.loads((Path(__file__).parent / "standard_pixels.json")
                                    .read_text())["pixels"])
    return _STANDARD


def standard_ids(name: str) -> list[str]:
    """The pixels ids of a standard set's (or the held-out split's) HR images."""
    return list(_standard_pixels().get(name, {}).get("HR", {}).values())


def _not_standard_pixels(name: str, files: dict[str, Path]) -> list[str]:
    """Images of a standard set (or the held-out split) whose pixels are not the standard
    release's (``standard_pixels.json``; ``files``: ``{"HR/baby": path, ...}``). An image
    under a name the release does not have (BSD100 under its Berkeley ids) must be, by its
    pixels, one of the standard images no other file is: other or repeated images are named."""
    ref = _standard_pixels().get(name, {}).get("HR", {})
    if not ref:
        return []
    ids = {}
    for k, path in files.items():
        try:
            ids[k] = pixels_id(path)
        except AmmsError:  # unreadable: not the standard image either
            ids[k] = None
    bad = {k for k in ids if k[3:] in ref and ids[k] != ref[k[3:]]}
    left = Counter(ref.values())  # the standard images no file holds yet
    left.subtract(ids[k] for k in ids if k[3:] in ref and k not in bad)
    other = set()
    for k in sorted(k for k in ids if k[3:] not in ref):
        if left[ids[k]] > 0:
            left[ids[k]] -= 1
        else:
            other.add(k)
    problems = [f"{_few(bad)} differ from the standard release's pixels (edited, converted "
                "or another version)"] if bad else []
    if other:
        problems.append(f"{_few(other)} not among the standard {name} images' pixels (other "
                        f"or repeated images; {sum(left.values())} standard image(s) "
                        "absent)")
    return problems


_SUM_LINE = re.compile(r"^(?:SHA256 \((?P<tag_path>.+)\) = (?P<tag_hash>[0-9a-fA-F]{64})|"
                       r"(?P<hash>[0-9a-fA-F]{64})[ \t]+\*?(?P<path>.+))$")


def read_sums(path: Path) -> dict[str, str]:
    """``SHA256SUMS`` as {path relative to its folder: lower-case hash}; every format
    ``sha256sum`` and BSD ``shasum --tag`` write (text or ``*`` binary marker, ``./``
    paths, CRLF, a byte-order mark). An absolute path is kept as it is."""
    sums = {}
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        if m := _SUM_LINE.match(line.strip()):
            rel = (m["path"] or m["tag_path"]).strip()
            rel = rel[2:] if rel.startswith("./") else rel
            digest = (m["hash"] or m["tag_hash"]).lower()
            sums[rel] = digest if sums.get(rel, digest) == digest else "conflicting lines"
    return sums


def _sums_file(root: Path) -> Path | None:
    """The data folder's SHA256SUMS (or, for AMMS_DATA=<folder>/benchmark, the folder's)."""
    for folder in (root, root.parent) if root.name == "benchmark" else (root,):
        if (folder / "SHA256SUMS").is_file():
            return folder / "SHA256SUMS"
    return None


def _changed(files: list[Path], root: Path | None = None) -> list[str]:
    """What differs from the data folder's ``SHA256SUMS``, when it has one: files whose
    sha256 is not the listed one (edited, re-encoded or replaced), and files it does
    not list (renamed, added) once it lists any of them. Paths are taken as the data
    folder names them, links not followed, so a linked set is checked like a copy."""
    root = data_root() if root is None else Path(root)
    sums_file = _sums_file(root) if root is not None else None
    if sums_file is None or not files:
        return []
    sums, base = read_sums(sums_file), sums_file.parent
    changed, unlisted = set(), set()
    for f in files:
        rel = os.path.relpath(os.path.abspath(f), os.path.abspath(base)).replace(os.sep, "/")
        want = sums.get(rel) or sums.get(os.path.abspath(f))
        if want is None:
            unlisted.add(rel)
            continue
        if _per_file(file_sha256, f) != want:
            changed.add(rel)
    problems = [f"{_few(changed)} differ from {sums_file} (edited or replaced)"] if changed \
        else []
    if unlisted and len(unlisted) < len(files):  # a set it covers, with files it never saw
        problems.append(f"{_few(unlisted)} not in {sums_file} (renamed or added)")
    elif unlisted and any(standard_name(f.parent.parent.name if f.parent.name == "HR" else "")
                          for f in files):  # a standard set it never lists
        problems.append(f"{sums_file} lists none of its files: its paths do not match this "
                        "layout; regenerate it (sha256sum) or remove it")
    return problems


def _few(names: set) -> str:
    """``2 image(s): a, b`` (at most three names shown)."""
    shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} image(s): {shown}"


def iter_pairs(name: str, scale: int, root: Path | None = None, standard: bool = True
               ) -> Iterator[Pair]:
    """Every (LR, HR) pair of a set at one scale, in name order."""
    for image in list_images(name, root):
        yield load_pair(name, image, scale, root, standard)


def example_image(name: str = "Set5", image: str = "butterfly") -> tuple[np.ndarray, str]:
    """An HR image for demonstrations and where it came from.

    From the data folder when it has the set, else ``skimage.data.astronaut``.
    """
    why = "no data folder"
    try:
        if name in list_sets():
            return load_hr(name, image), f"{name}/{image}"
        why = f"no {name} in the data folder"
    except AmmsError as exc:  # e.g. an edited image: said, never scored as the set's
        why = str(exc)
    return load_hr(BUILTIN, "astronaut"), f"{BUILTIN}/astronaut ({why})"


if __name__ == "__main__":  # the command line (list, fetch) lives in amms_lib.download
    from amms_lib.download import main

    raise SystemExit(main())
