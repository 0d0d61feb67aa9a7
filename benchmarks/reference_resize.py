"""An independent float64 NumPy bicubic resize, written from the definition.

Deliberately unlike ``amms_lib.resize``: it pads the image explicitly (NumPy's
'symmetric' or 'edge' mode) and evaluates, output pixel by output pixel, the kernel
at every input pixel inside its support. Used by the tests and the speed benchmark.
"""
from __future__ import annotations

import math

import numpy as np


def keys(x, a=-0.5):
    """Keys' cubic convolution kernel."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def resize_1d(img: np.ndarray, out_len: int, scale: float, axis: int, pad_mode: str,
              antialias: bool = True) -> np.ndarray:
    """Resize float64 ``img`` along ``axis`` to ``out_len`` samples."""
    img = np.moveaxis(img, axis, 0)
    stretch = scale if (scale < 1 and antialias) else 1.0  # kernel x -> stretch * x
    radius = 2.0 / stretch
    pad = int(math.ceil(radius)) + 2
    padded = np.pad(img, [(pad, pad)] + [(0, 0)] * (img.ndim - 1), mode=pad_mode)
    out = np.empty((out_len,) + img.shape[1:])
    for i in range(out_len):
        centre = (i + 0.5) / scale - 0.5  # 0-based position of output pixel i
        first, last = math.floor(centre - radius), math.ceil(centre + radius)
        js = range(first, last + 1)
        w = np.array([stretch * keys(stretch * (centre - j)) for j in js])
        w /= w.sum()
        out[i] = sum(wk * padded[j + pad] for wk, j in zip(w, js))
    return np.moveaxis(out, 0, axis)


def reference_resize(img: np.ndarray, out_size: tuple[int, int],
                     scales: tuple[float, float], border: str = "symmetric",
                     round_each_pass: bool = False) -> np.ndarray:
    """Resize (H, W[, C]) float64 rows first unless the width scale is smaller."""
    mode = {"symmetric": "symmetric", "clamp": "edge"}[border]
    x = img.astype(np.float64)
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for axis in order:
        x = resize_1d(x, out_size[axis], scales[axis], axis, mode)
        if round_each_pass:
            x = np.clip(np.floor(x + 0.5), 0, 255)  # half away from zero for x >= 0
    return x
