"""Reading and writing 8-bit images as NumPy arrays, with clear errors.

Images are uint8 arrays (H, W) for grey and (H, W, 3) for colour: a single-channel
file stays single-channel, because the evaluation protocol measures grey images on
their grey values, not on Y of a fake RGB image.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from amms_lib.errors import AmmsError
from amms_lib.runtime import atomic_write

ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")  # modes whose last band is alpha
GREY_MODES = {"L", "1", "LA"}


def read_image(path: str | os.PathLike, keep_alpha: bool = False) -> np.ndarray:
    """Load an image file as uint8 (H, W) grey or (H, W, 3) RGB (RGBA with keep_alpha).

    Raises AmmsError for a missing, empty, truncated, non-image or 16-bit file, and for
    one whose header claims more pixels than Pillow allows (a decompression bomb); warns
    when the file holds several frames (animation, pages), as only the first is read.
    """
    path = Path(path)
    if not path.is_file():
        raise AmmsError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise AmmsError(f"{path}: the file is empty")
    try:
        with Image.open(path) as im:
            deep = im.mode in ("I;16", "I;16B", "I;16L", "I", "F") or _packed_16bit(im)
            if deep:
                raise AmmsError(
                    f"{path}: {deep if isinstance(deep, str) else im.mode} images "
                    "(16-bit or float) are not supported; convert to 8-bit first"
                )
            if getattr(im, "n_frames", 1) > 1:
                warnings.warn(f"{path}: holds {im.n_frames} frames (animation or pages); "
                              "only the first frame is used", stacklevel=2)
            im.load()  # decode now, so a truncated file fails here
            im = ImageOps.exif_transpose(im)  # phone photos: honour the EXIF orientation
            alpha = im.mode in ALPHA_MODES or "transparency" in im.info  # LAB's A is colour
            if im.mode in GREY_MODES:
                im = im.convert("LA" if keep_alpha and alpha else "L")
            elif keep_alpha and alpha:
                im = im.convert("RGBA")
            else:
                im = im.convert("RGB")
            return np.asarray(im).copy()
    except AmmsError:
        raise
    except Image.DecompressionBombError as exc:
        raise AmmsError(f"{path}: refused, over Pillow's pixel limit ({exc}); if the "
                        "image is genuine, cut it into smaller images first") from None
    except UnidentifiedImageError:
        raise AmmsError(f"{path}: not an image file PIL can read") from None
    except (OSError, EOFError, SyntaxError, ValueError) as exc:
        raise AmmsError(f"{path}: unreadable or truncated image ({exc})") from None


def _packed_16bit(im: Image.Image) -> str | None:
    """The raw mode of a 16-bit colour file (PNG, TIFF), which Pillow would quietly cut
    to 8 bits as mode RGB(A); None otherwise. Read before ``load()`` clears ``tile``."""
    for tile in im.tile:
        raw = tile.args[0] if isinstance(tile.args, tuple) else tile.args
        if isinstance(raw, str) and ";16" in raw:
            return raw
    return None


def as_rgb(img: np.ndarray) -> np.ndarray:
    """Grey (H, W) -> (H, W, 3) with three equal channels; colour unchanged."""
    img = np.asarray(img)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write a uint8 image atomically (temp file + rename): no half-written file."""
    path = Path(path)
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise AmmsError(f"write_image expects uint8 pixels, got {img.dtype}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise AmmsError(f"{path}: unknown image extension; use .png, .jpg, .bmp or .tif")
    atomic_write(path, lambda f: Image.fromarray(img).save(f, format=fmt))
    return path
