"""amms_lib.resize: bit-exact against the published LR files and MATLAB's output,
and equal to an independent NumPy reference on odd/even sizes and factors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from reference_resize import reference_resize

from amms_lib.errors import AmmsError
from amms_lib.resize import imresize, weight_matrix

FACTORS = [1 / 2, 1 / 3, 1 / 4, 2, 3, 4]
SIZES = [(17, 24), (24, 17), (30, 31)]


def _modcrop(a, s):
    return a[: a.shape[0] - a.shape[0] % s, : a.shape[1] - a.shape[1] % s]


def _pairs(folder, hr_dir, scale):
    for lr_file in sorted(folder.glob(f"*x{scale}.png")):
        hr_file = hr_dir / (lr_file.name[: -len(f"x{scale}.png")] + ".png")
        yield lr_file.name, np.asarray(Image.open(hr_file)), np.asarray(Image.open(lr_file))


PUBLISHED = [(s, x) for s in ("Set5", "Set14", "BSD100") for x in (2, 3, 4)]
PUBLISHED += [("Urban100", 4)]


@pytest.mark.parametrize("name,scale", PUBLISHED)
def test_reproduces_published_lr_bit_for_bit(data_dir, name, scale):
    bench = data_dir / "benchmark" / name
    n = 0
    for fname, hr, lr in _pairs(bench / "LR_bicubic" / f"X{scale}", bench / "HR", scale):
        out = imresize(_modcrop(hr, scale), 1 / scale, border="clamp")
        assert out.dtype == np.uint8 and out.shape == lr.shape, fname
        assert np.array_equal(out, lr), f"{fname}: {(out != lr).sum()} pixels differ"
        n += 1
    assert n == {"Set5": 5, "Set14": 14}.get(name, 100)


@pytest.mark.parametrize("name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_matlab_imresize_bit_for_bit(data_dir, name, scale):
    ref_dir = data_dir / "matlab_reference" / name / f"X{scale}"
    hr_dir = data_dir / "benchmark" / name / "HR"
    n = 0
    for fname, hr, ref in _pairs(ref_dir, hr_dir, scale):
        out = imresize(_modcrop(hr, scale), 1 / scale)  # symmetric borders
        if out.ndim == 2 and ref.ndim == 3:  # MATLAB saved the grey bridge as RGB
            out = np.repeat(out[..., None], 3, axis=2)
        assert np.array_equal(out, ref), f"{fname}: {(out != ref).sum()} pixels differ"
        n += 1
    assert n == {"Set5": 5, "Set14": 14}[name]


@pytest.mark.parametrize("border", ["symmetric", "clamp"])
@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("size", SIZES)
def test_float64_matches_numpy_reference(size, factor, border):
    img = np.random.default_rng(0).random(size + (3,)) * 255
    out = imresize(img, factor, border=border)
    want_size = tuple(math.ceil(round(n * factor, 8)) for n in size)
    want = reference_resize(img, want_size, (factor, factor), border)
    assert out.shape == want.shape == want_size + (3,)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("factor", FACTORS)
def test_uint8_rounds_after_each_pass_like_reference(factor):
    img = np.random.default_rng(1).integers(0, 256, (23, 26, 3), dtype=np.uint8)
    out = imresize(img, factor)
    size = tuple(math.ceil(round(n * factor, 8)) for n in img.shape[:2])
    want = reference_resize(img, size, (factor, factor), round_each_pass=True)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, want.astype(np.uint8))


def test_rounding_only_at_the_end_is_not_matlab(data_dir):
    """Why per-pass rounding matters: a float port differs on many pixels."""
    hr = _modcrop(np.asarray(Image.open(data_dir / "benchmark/Set5/HR/butterfly.png")), 4)
    per_pass = imresize(hr, 1 / 4, border="clamp")
    at_end = np.clip(np.floor(imresize(hr.astype(np.float64), 1 / 4, border="clamp")
                              + 0.5), 0, 255).astype(np.uint8)
    published = np.asarray(Image.open(data_dir / "benchmark/Set5/LR_bicubic/X4/"
                                      "butterflyx4.png"))
    assert np.array_equal(per_pass, published)
    assert (at_end != published).mean() > 0.05


def test_output_size_and_unequal_factors_follow_matlab_order():
    img = np.random.default_rng(2).random((20, 30))
    out = imresize(img, size=(7, 45))  # height shrinks, width grows: rows first
    want = reference_resize(img, (7, 45), (7 / 20, 45 / 30))
    np.testing.assert_allclose(out, want, atol=1e-9)
    out = imresize(img, size=(40, 10))  # width has the smaller scale: columns first
    want = reference_resize(img, (40, 10), (2.0, 10 / 30))
    np.testing.assert_allclose(out, want, atol=1e-9)


def test_batched_tensor_any_float_dtype_and_grad():
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64)
    out = imresize(x, 1 / 2)
    assert out.shape == (2, 3, 8, 6)
    single = imresize(x[1, 2], 1 / 2)
    torch.testing.assert_close(out[1, 2], single)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        y = imresize(x.to(dtype), 3)
        assert y.dtype == dtype and torch.isfinite(y.float()).all()
    xg = x[:1, :1, :6, :5].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 2), (xg,))
    z = x.float().requires_grad_(True)
    imresize(z, 1 / 3).square().sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_constant_image_stays_constant_and_matrix_rows_sum_to_one():
    img = np.full((9, 7), 200, dtype=np.uint8)
    for f in FACTORS:
        assert (imresize(img, f) == 200).all()
    for f in FACTORS:
        assert np.allclose(weight_matrix(13, math.ceil(13 * f - 1e-9), f).sum(1), 1)


def test_tiny_images():
    one = np.array([[7]], dtype=np.uint8)
    assert imresize(one, 4).shape == (4, 4) and (imresize(one, 4) == 7).all()
    assert imresize(np.ones((3, 3)), 1 / 4).shape == (1, 1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "exactly one"),
    (dict(scale=2, size=(4, 4)), "exactly one"),
    (dict(scale=-2), "positive"),
    (dict(scale=float("nan")), "positive"),
    (dict(size=(0, 3)), "positive"),
    (dict(scale=2, border="wrap"), "border"),
])
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(AmmsError, match=match):
        imresize(np.zeros((4, 4)), **kwargs)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(AmmsError, match="uint8 or float"):
        imresize(torch.zeros(4, 4, dtype=torch.int16), 2)
    with pytest.raises(AmmsError, match="empty"):
        imresize(np.zeros((0, 4)), 2)
    with pytest.raises(AmmsError, match=r"\(H, W\)"):
        imresize(np.zeros((2, 2, 2, 2)), 2)
