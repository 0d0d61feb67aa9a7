"""The SR evaluation protocol: PSNR and SSIM on the luminance (Y) channel.

What the published tables (SRCNN ... SAN, and the AMMS paper's Table 2) compute:

* RGB images are measured on Y of ITU-R BT.601 *studio-range* YCbCr,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for 8-bit R, G, B,
  kept as float (not rounded to uint8);
* single-channel images are measured on their grey values directly;
* ``scale`` pixels are shaved from every border before measuring;
* PSNR with a peak of 255; SSIM as Wang et al. (2004): 11x11 Gaussian window,
  sigma 1.5, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, 'valid' filtering, mean of
  the SSIM map. Per-image values are averaged over a set.

Inputs are NumPy images (H, W) or (H, W, 3) with values on the 0..255 scale.
"""
from __future__ import annotations

import numpy as np

from amms_lib.errors import AmmsError

PEAK = 255.0
Y_WEIGHTS = np.array([65.481, 128.553, 24.966])  # BT.601, per unit of R, G, B in [0, 1]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB on 0..255 -> (H, W) float64 Y on 16..235 (BT.601 studio range)."""
    return 16.0 + img[..., :3].astype(np.float64) @ Y_WEIGHTS / 255.0


def to_y(img: np.ndarray) -> np.ndarray:
    """The channel the protocol measures: Y for RGB, the grey values for grey."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim == 3 and img.shape[2] == 3:
        return rgb_to_y(img)
    raise AmmsError(f"expected an image (H, W) or (H, W, 3), got shape {img.shape}")


def _prepare(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise AmmsError(
            f"SR and HR shapes differ: {sr.shape} vs {hr.shape}; mod-crop the HR image "
            "to a multiple of the scale (amms_lib.data.modcrop)"
        )
    y_sr, y_hr = to_y(sr), to_y(hr)
    if shave:
        y_sr, y_hr = y_sr[shave:-shave, shave:-shave], y_hr[shave:-shave, shave:-shave]
    if y_sr.size == 0:
        raise AmmsError(f"image {sr.shape[:2]} is too small to shave {shave} pixels")
    return y_sr, y_hr


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int = 0) -> float:
    """PSNR in dB on Y after shaving ``shave`` pixels per border (use the scale)."""
    y_sr, y_hr = _prepare(sr, hr, shave)
    mse = np.mean((y_sr - y_hr) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(PEAK**2 / mse))


def gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product with itself is MATLAB's
    ``fspecial('gaussian', size, sigma)``, so SSIM filters rows, then columns."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (..., H, W) with ``outer(g, g)``.

    (..., H, W) -> (..., H - n + 1, W - n + 1); shifted slices, no padding.
    """
    n = len(g)
    h = img.shape[-2] - n + 1
    img = sum(g[k] * img[..., k : k + h, :] for k in range(n))  # rows
    w = img.shape[-1] - n + 1
    return sum(g[k] * img[..., k : k + w] for k in range(n))  # columns


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int = 0) -> float:
    """SSIM (Wang et al. 2004) on Y after shaving ``shave`` pixels per border."""
    y_sr, y_hr = _prepare(sr, hr, shave)
    if min(y_sr.shape) < 11:
        raise AmmsError(f"SSIM needs at least 11x11 pixels after shaving, got {y_sr.shape}")
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    x, y = y_sr, y_hr
    # the five local moments at once: (5, H, W) -> (5, H-10, W-10)
    mu_x, mu_y, xx, yy, xy = filter_valid(
        np.stack([x, y, x * x, y * y, x * y]), gaussian_1d()
    )
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((num / den).mean())


def evaluate(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """(PSNR, SSIM) of one image under the protocol: Y channel, ``scale`` shaved."""
    return psnr(sr, hr, shave=scale), ssim(sr, hr, shave=scale)
