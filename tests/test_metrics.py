"""The evaluation protocol: Y of BT.601, shave = scale, Wang's SSIM; cross-checked
with scikit-image, and one test for each usual way of getting it wrong."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from amms_lib import data
from amms_lib.errors import AmmsError
from amms_lib.metrics import psnr, rgb_to_y, ssim, to_y
from amms_lib.resize import imresize


def _skimage(sr, hr, s):
    ysr, yhr = to_y(sr)[s:-s, s:-s], to_y(hr)[s:-s, s:-s]
    p = peak_signal_noise_ratio(yhr, ysr, data_range=255)
    q = structural_similarity(yhr, ysr, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=255)
    return p, q


def _bicubic(root, name, scale):
    """Bicubic SR and HR pairs of a real set."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMMS_DATA", str(root))
        return [(imresize(p.lr, scale), p.hr) for p in data.iter_pairs(name, scale)]


@pytest.fixture(scope="module")
def set5_x2(data_dir):
    return _bicubic(data_dir, "Set5", 2)


def test_y_formula():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 20, 30]]], np.uint8)
    y = rgb_to_y(rgb)
    manual = 16 + 65.481 * 10 / 255 + 128.553 * 20 / 255 + 24.966 * 30 / 255
    np.testing.assert_allclose(y[0], [16, 235, 16 + 65.481, manual])
    assert y.dtype == np.float64  # kept as float, not rounded


def test_matches_skimage_on_real_images(set5_x2):
    for sr, hr in set5_x2:
        p, q = _skimage(sr, hr, 2)
        assert psnr(sr, hr, shave=2) == pytest.approx(p, abs=1e-9)
        assert ssim(sr, hr, shave=2) == pytest.approx(q, abs=1e-9)


def test_matches_skimage_on_random_grey_images():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 33), dtype=np.uint8)
    sr = np.clip(hr + rng.normal(0, 8, hr.shape), 0, 255).astype(np.uint8)
    p, q = _skimage(sr, hr, 3)
    assert psnr(sr, hr, 3) == pytest.approx(p, abs=1e-9)
    assert ssim(sr, hr, 3) == pytest.approx(q, abs=1e-9)


def test_grey_images_are_measured_on_grey_values():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + 5, 0, 255).astype(np.uint8)
    direct = 10 * np.log10(255**2 / np.mean((sr.astype(float) - hr) ** 2))
    assert psnr(sr, hr) == pytest.approx(direct)
    as_rgb = np.repeat(sr[..., None], 3, 2), np.repeat(hr[..., None], 3, 2)
    assert abs(psnr(*as_rgb) - direct) > 0.5  # Y of fake RGB compresses the range


def test_identical_images_and_constant_images():
    img = np.full((20, 20, 3), 77, np.uint8)
    assert psnr(img, img) == float("inf")
    assert ssim(img, img) == pytest.approx(1.0)


# -- the usual mistakes, each of which moves the numbers ---------------------------

def _mean(fn, pairs):
    return float(np.mean([fn(sr, hr) for sr, hr in pairs]))


def test_pitfall_rgb_instead_of_y(set5_x2):
    on_y = _mean(lambda a, b: psnr(a, b, 2), set5_x2)
    on_rgb = _mean(lambda a, b: peak_signal_noise_ratio(b[2:-2, 2:-2], a[2:-2, 2:-2],
                                                        data_range=255), set5_x2)
    assert 1.0 < on_y - on_rgb < 3.0  # about 1.9 dB


def test_pitfall_full_range_ycbcr(set5_x2):
    def full_range(a, b):
        w = np.array([0.299, 0.587, 0.114])
        ya, yb = (x[2:-2, 2:-2].astype(float) @ w for x in (a, b))
        return peak_signal_noise_ratio(yb, ya, data_range=255)

    # full-range Y spans 0..255 instead of 16..235: errors grow, PSNR drops ~1.3 dB
    gap = _mean(lambda a, b: psnr(a, b, 2), set5_x2) - _mean(full_range, set5_x2)
    assert 0.5 < gap < 2.5


def test_pitfall_bgr_rgb_swapped(data_dir):
    pairs = _bicubic(data_dir, "Set5", 4)
    swapped = _mean(lambda a, b: psnr(a[..., ::-1], b[..., ::-1], 4), pairs)
    assert abs(swapped - _mean(lambda a, b: psnr(a, b, 4), pairs)) > 0.1  # ~0.17 dB


def test_pitfall_no_shave(data_dir):
    pairs = _bicubic(data_dir, "Set14", 2)
    no_shave = _mean(lambda a, b: psnr(a, b, 0), pairs)
    assert _mean(lambda a, b: psnr(a, b, 2), pairs) - no_shave > 0.1  # ~0.23 dB


def test_shave_hides_border_artifacts_only():
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:2], sr[:, -2:] = 0, 255  # broken borders, as zero padding produces
    assert psnr(sr, hr, shave=2) == float("inf")
    assert psnr(sr, hr, shave=0) < 20


def test_errors():
    a = np.zeros((20, 20), np.uint8)
    with pytest.raises(AmmsError, match="mod-crop"):
        psnr(a, np.zeros((21, 20), np.uint8))
    with pytest.raises(AmmsError, match="11x11"):
        ssim(a[:12, :12], a[:12, :12], shave=2)
    with pytest.raises(AmmsError, match="shape"):
        psnr(np.zeros((5, 5, 4)), np.zeros((5, 5, 4)))
