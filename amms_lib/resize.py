"""MATLAB-compatible bicubic resize (``imresize(img, scale, 'bicubic')``) in torch.

Every SR benchmark makes its LR inputs, and its bicubic baseline, with MATLAB's
``imresize``; a resize that differs by one grey level shifts PSNR tables by
hundredths of a dB. This module reproduces MATLAB's semantics:

* cubic kernel with a = -0.5 (Keys), support 4 pixels;
* antialiasing when shrinking: the kernel is stretched by 1/scale;
* MATLAB's coordinate mapping ``u = x / scale + 0.5 * (1 - 1 / scale)`` (1-based);
* the dimension with the smaller scale first, rows (height) first on a tie;
* uint8 input: round half away from zero and clip to [0, 255] after *each* pass;
* borders: ``"symmetric"`` (MATLAB's own padding) or ``"clamp"`` (repeat the edge
  pixel, which is how the published benchmark LR files were made).

Each 1-D pass is a dense (out, in) weight matrix applied with a matmul, so it is
batched, runs on any device and is differentiable for float input.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from amms_lib.errors import AmmsError

BORDERS = ("symmetric", "clamp")


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def contributions(
    in_len: int, out_len: int, scale: float, border: str = "symmetric",
    antialias: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Taps of one 1-D bicubic pass: (out_len, taps) input indices and weights.

    Output pixel i is ``sum_k weights[i, k] * x[indices[i, k]]``, following MATLAB's
    ``contributions``; out-of-range taps are folded back by the border rule.
    """
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * cubic(scale * t)  # noqa: E731  stretched kernel
        kernel_width /= scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coords
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # (out, taps), 1-based
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    idx = idx.astype(np.int64) - 1  # 0-based, may lie outside [0, in_len)
    if border == "symmetric":  # mirror with the edge pixel repeated: ...1 0 | 0 1...
        period = np.mod(idx, 2 * in_len)
        idx = np.where(period < in_len, period, 2 * in_len - 1 - period)
    else:
        idx = np.clip(idx, 0, in_len - 1)
    used = np.any(w != 0, axis=0)  # drop taps that are zero for every output pixel
    return idx[:, used], w[:, used]


def weight_matrix(in_len: int, out_len: int, scale: float, border: str = "symmetric",
                  antialias: bool = True) -> np.ndarray:
    """The same pass as a dense (out_len, in_len) matrix: ``y = W @ x`` (for teaching)."""
    idx, w = contributions(in_len, out_len, scale, border, antialias)
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), idx.shape[1]), idx.ravel()), w.ravel())
    return mat


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's ``ceil(in_len * scale)``, robust to 1/3-style float rounding."""
    return max(1, math.ceil(round(in_len * scale, 8)))


def _check_args(shape, scale, size, border):
    if border not in BORDERS:
        raise AmmsError(f"border must be one of {BORDERS}, got {border!r}")
    if (scale is None) == (size is None):
        raise AmmsError("give exactly one of scale (e.g. 0.5) or size (height, width)")
    h, w = shape[-2], shape[-1]
    if h < 1 or w < 1:
        raise AmmsError(f"cannot resize an empty image of size {h}x{w}")
    if size is not None:
        out_h, out_w = (size, size) if isinstance(size, int) else size
        if out_h < 1 or out_w < 1:
            raise AmmsError(f"output size must be positive, got {size}")
        return (out_h / h, out_w / w), (int(out_h), int(out_w))
    sh, sw = (scale, scale) if np.isscalar(scale) else scale
    if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
        raise AmmsError(f"scale must be a positive number, got {scale}")
    return (float(sh), float(sw)), (output_size(h, sh), output_size(w, sw))


def imresize(img, scale=None, size=None, border: str = "symmetric",
             antialias: bool = True):
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Args:
        img: a torch tensor (..., H, W) of any float dtype or uint8, on any device;
            or a NumPy image (H, W) or (H, W, C), returned as NumPy in the same layout.
        scale: factor (``1/3`` shrinks by 3) or a (height, width) pair of factors.
        size: output (height, width) instead of ``scale``; factors become out / in.
        border: ``"symmetric"`` (MATLAB) or ``"clamp"`` (published benchmark LR).
        antialias: stretch the kernel when shrinking, as MATLAB does by default.

    uint8 input is computed in float64 and rounded after each pass, which makes the
    result bit-identical to MATLAB; float input stays float (float32 at least) and
    is differentiable.
    """
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise AmmsError(f"a NumPy image must be (H, W) or (H, W, C), got {img.shape}")
        t = torch.tensor(img)  # a copy: NumPy images may be read-only
        t = t if img.ndim == 2 else t.permute(2, 0, 1).contiguous()  # -> (C, H, W)
        out = imresize(t, scale, size, border, antialias)
        return (out if img.ndim == 2 else out.permute(1, 2, 0)).numpy()
    if not isinstance(img, torch.Tensor) or img.ndim < 2:
        raise AmmsError("imresize expects a tensor (..., H, W) or a NumPy image")
    is_uint8 = img.dtype == torch.uint8
    if not (is_uint8 or img.is_floating_point()):
        raise AmmsError(f"imresize supports uint8 or float images, got {img.dtype}")
    scales, sizes = _check_args(img.shape, scale, size, border)
    if is_uint8:  # float64 keeps MATLAB's rounding exact (MPS has no float64)
        work = torch.float32 if img.device.type == "mps" else torch.float64
    else:
        work = torch.promote_types(img.dtype, torch.float32)
    x = img.to(work)
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)  # smaller scale first
    for dim in order:
        if dim == 1:  # resize along rows only: gathering whole rows is fast
            x = x.transpose(-1, -2).contiguous()  # (..., H, W) -> (..., W, H)
        idx, w = contributions(x.shape[-2], sizes[dim], scales[dim], border, antialias)
        idx_t = torch.from_numpy(idx.T.copy()).to(x.device)  # (taps, out)
        w_t = torch.from_numpy(w).to(device=x.device, dtype=work)
        out = x.new_zeros(x.shape[:-2] + (sizes[dim], x.shape[-1]))
        for k in range(idx.shape[1]):  # few taps: 4 up, 4 / scale + 2 down
            # (..., L, W) -> (..., out, W): k-th input row of every output row
            out.addcmul_(x.index_select(-2, idx_t[k]), w_t[:, k, None])
        x = out.transpose(-1, -2) if dim == 1 else out
        if is_uint8:
            # round half away from zero, then clip: for the values that survive the
            # clip (x >= -0.5) that is floor(x + 0.5), done in place
            x = x.add_(0.5).floor_().clamp_(0, 255)
    return x.to(torch.uint8) if is_uint8 else x.to(img.dtype)
