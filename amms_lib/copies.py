"""Finding a held-out picture inside a training image, or a training image cut from one.

A copy padded to a multiple of the patch size, framed, trimmed by a few pixels or mod-cropped
keeps a held-out image's pixels at their own scale, but its whole-image thumbnail
(``data.near_heldout``) moves. Here a 64x64 window from near the middle of each held-out
image (one that a mod-crop to 48 or 64 px keeps) is looked for anywhere in a training image,
under the 8 flips and rotations: first at quarter scale (one FFT correlation per window),
then the best spot at full scale. Both images are contrast-normalised (each pixel less its
neighbourhood's mean, over its spread), so a strong edge or a sky gradient matches only
itself, not any other edge.
"""
from __future__ import annotations

import numpy as np
from scipy import fft
from scipy.ndimage import gaussian_filter

WINDOW, COARSE = 64, 4  # the window's side in pixels; the coarse stage's downscale
# correlation of the window at full scale: copies of the 15 held-out images (trimmed 1-10 px,
# mod-cropped to 2-64 px, centre-cropped to 12 or 48, reflect- or edge-padded, framed,
# letterboxed; lossless or JPEG q75) gave 0.92 or more, the 495 other images of the training
# and benchmark sets at most 0.61 (tests/test_train.py checks seven copies and 150 of those
# images); the coarse stage only picks the spot to check
SAME, CANDIDATE = 0.8, 0.4


def _grey(img: np.ndarray) -> np.ndarray:
    g = np.asarray(img, np.float64)
    return g.mean(-1) if g.ndim == 3 else g


def _normalised(g: np.ndarray, sigma: float) -> np.ndarray:
    """Local contrast normalisation: ``(g - local mean) / (local spread + 2 grey levels)``."""
    mean = gaussian_filter(g, sigma)
    spread = np.sqrt(gaussian_filter((g - mean) ** 2, sigma))
    return (g - mean) / (spread + 2.0)


def _coarse(g: np.ndarray) -> np.ndarray:
    h, w = g.shape[0] // COARSE * COARSE, g.shape[1] // COARSE * COARSE
    small = g[:h, :w].reshape(h // COARSE, COARSE, w // COARSE, COARSE).mean((1, 3))
    return _normalised(small, 2.0)


def _unit(w: np.ndarray) -> np.ndarray:
    w = w - w.mean()
    return w / (np.linalg.norm(w) + 1e-12)


def windows(img: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(full-scale window, quarter-scale window)`` under each of the 8 flips and
    rotations, each zero-mean and unit-norm: the most textured 64x64 window near the
    image's middle that a mod-crop to 48 or 64 px keeps (``_corners``; none if the image is
    under 64 px)."""
    g = _grey(img)
    if min(g.shape) < WINDOW:
        return []
    fine = _normalised(g, 8.0)
    # texture: the window's weaker direction of change, so one straight edge scores low
    gy, gx = np.abs(np.diff(g, axis=0))[:, :-1], np.abs(np.diff(g, axis=1))[:-1]
    m = WINDOW - 1
    score = np.minimum(_box(gy, m), _box(gx, m))
    (y0, y1), (x0, x1) = _corners(g.shape[0]), _corners(g.shape[1])
    y, x = np.unravel_index(np.argmax(score[y0:y1 + 1, x0:x1 + 1]), (y1 - y0 + 1, x1 - x0 + 1))
    y, x = y + y0, x + x0
    win = fine[y:y + WINDOW, x:x + WINDOW]
    out = []
    for t in (win, np.fliplr(win)):
        for k in range(4):
            full = np.rot90(t, k)
            small = full.reshape(WINDOW // COARSE, COARSE, WINDOW // COARSE, COARSE).mean((1, 3))
            out.append((_unit(full), _unit(small)))
    return out


def _corners(n: int) -> tuple[int, int]:
    """The first and last top-left corner, along an axis of ``n`` pixels, of a window that
    a crop to multiples of 48 or 64 px (keeping the top-left, as a mod-crop to the patch
    size does) leaves whole; in the middle half of the axis where that allows."""
    kept = min(k for k in (n // 48 * 48, n // 64 * 64, n) if k >= WINDOW)
    last = kept - WINDOW
    first = min(n // 4, max(last - n // 8, 0))
    return first, min(3 * n // 4, last)


def _box(g: np.ndarray, m: int) -> np.ndarray:
    """Sums of ``g`` over every m x m window (valid positions only)."""
    c = np.pad(g, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[m:, m:] - c[:-m, m:] - c[m:, :-m] + c[:-m, :-m]


def _ncc_map(g: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Correlation of each unit-norm kernel (k, m, m) with every m x m window of ``g``."""
    m = kernels.shape[-1]
    sums, squares = _box(g, m), _box(g * g, m)
    spread = np.sqrt(np.maximum(squares - sums * sums / (m * m), 0.0))
    size = [fft.next_fast_len(s + m, real=True) for s in g.shape]
    prod = fft.rfft2(g, size)[None] * fft.rfft2(kernels[:, ::-1, ::-1], size)
    num = fft.irfft2(prod, size)[:, m - 1:g.shape[0], m - 1:g.shape[1]]
    return np.where(spread > 1e-3 * m, num / np.maximum(spread, 1e-12), 0.0)


def match(img: np.ndarray, found: list[tuple[str, list]]) -> tuple[float, str | None]:
    """(best full-scale correlation, its held-out image) of the ``windows`` in ``found``
    ((image, windows) pairs) at their best spots in ``img``; (0, None) if none is a
    candidate there."""
    g = _grey(img)
    pairs = [(image, w) for image, ws in found for w in ws]
    k = WINDOW // COARSE
    if not pairs or min(g.shape) < WINDOW or min(g.shape) // COARSE < k:
        return 0.0, None
    scores = _ncc_map(_coarse(g), np.stack([s for _, (_, s) in pairs]))
    best, fine = (0.0, None), None
    for i in np.flatnonzero(scores.reshape(len(pairs), -1).max(1) > CANDIDATE):
        fine = _normalised(g, 8.0) if fine is None else fine
        y, x = np.unravel_index(np.argmax(scores[i]), scores[i].shape)
        # the spot at full scale, give or take the coarse stage's rounding
        y0, x0 = max(y * COARSE - COARSE, 0), max(x * COARSE - COARSE, 0)
        patch = fine[y0:y0 + WINDOW + 2 * COARSE, x0:x0 + WINDOW + 2 * COARSE]
        if min(patch.shape) >= WINDOW:
            image, (full, _) = pairs[i]
            best = max(best, (float(_ncc_map(patch, full[None]).max()), image),
                       key=lambda b: b[0])
    return best


def contains(img: np.ndarray, found: list[tuple[str, list]]) -> str | None:
    """The held-out image of ``found`` ((image, windows) pairs) that lies in ``img`` at
    full scale (``match`` scores ``SAME`` or more), or None."""
    score, image = match(img, found)
    return image if score >= SAME else None
