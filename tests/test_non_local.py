"""NonLocalBlock against a from-scratch float64 reference, and its memory scaling."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.testing import assert_close

from amms_lib.errors import AmmsError
from amms_lib.non_local import NonLocalBlock, naive_attention

ROOT = Path(__file__).resolve().parents[1]
MODES = ("full", "naive", "region")


def make(channels=6, mode="full", region=2, seed=0) -> NonLocalBlock:
    """A double block with random weights everywhere, W included (zero W = identity)."""
    torch.manual_seed(seed)
    net = NonLocalBlock(channels, mode=mode, region=region).double()
    torch.nn.init.normal_(net.out.weight, std=0.5)
    torch.nn.init.normal_(net.out.bias, std=0.1)
    return net


def rand(*shape, seed=1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def conv1x1(conv, x):  # (B, C, N) -> (B, C', N)
    return torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], x) + conv.bias[:, None]


def reference(net, x):
    """z = x + W softmax(theta^T phi) g, written out with einsum."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    q, k, v = (conv1x1(m, flat) for m in (net.theta, net.phi, net.g))
    weights = torch.einsum("bci,bcj->bij", q, k).softmax(dim=-1)
    y = torch.einsum("bij,bcj->bci", weights, v)
    return x + conv1x1(net.out, y).reshape(b, c, h, w)


def region_reference(net, x, region):
    """The reference on each cell of a region x region grid (cells as tensor_split)."""
    bands = []
    for band in x.tensor_split(region, dim=2):
        cells = [reference(net, cell) for cell in band.tensor_split(region, dim=3)
                 if cell.numel()]
        if cells:
            bands.append(torch.cat(cells, dim=3))
    return torch.cat(bands, dim=2)


@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (1, 1), (2, 9)])
def test_full_and_naive_match_reference(hw):
    x = rand(2, 6, *hw)
    want = reference(make(), x)
    for mode in ("full", "naive"):
        assert_close(make(mode=mode)(x), want)


def test_naive_attention_function():
    q, k, v = rand(2, 10, 3, seed=1), rand(2, 10, 3, seed=2), rand(2, 10, 4, seed=3)
    want = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v  # no 1/sqrt(d)
    assert_close(naive_attention(q, k, v), want)


def test_full_mode_uses_the_fused_kernel():
    # with only the flash kernel allowed, torch raises instead of falling back to the
    # math kernel (which builds the N x N matrix): 3-d or strided inputs would fail
    x = rand(1, 6, 9, 7)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        for mode in ("full", "region"):
            make(mode=mode)(x)


@pytest.mark.parametrize("mode", MODES)
def test_identity_at_construction(mode):
    net = NonLocalBlock(4, mode=mode).double()
    x = rand(2, 4, 5, 6)
    assert_close(net(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("hw", [(7, 5), (6, 6), (1, 1)])
def test_region_one_equals_full(hw):
    x = rand(2, 6, *hw)
    assert_close(make(mode="region", region=1)(x), make(mode="full")(x))


@pytest.mark.parametrize("hw,region", [((8, 8), 2), ((7, 5), 2), ((7, 5), 3),
                                       ((3, 2), 4), ((1, 1), 2)])
def test_region_matches_per_region_reference(hw, region):
    x = rand(2, 6, *hw)
    assert_close(make(mode="region", region=region)(x),
                 region_reference(make(), x, region))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    net = make(channels=3, mode=mode)
    x = rand(1, 3, 3, 2).requires_grad_()
    assert torch.autograd.gradcheck(net, (x,))


# (input scale, bound): at scale 2 the logits have std 2.5, a soft attention whose
# weights follow every logit, and bf16 costs 0.2-0.3% of the output (measured); at
# scale 20 (std 240, no 1/sqrt(d)) they carry bf16 rounding of about one unit, the
# softmax is nearly one-hot and must stay finite: 1.2-2.6% measured
@pytest.mark.parametrize("amp, bound", [(2, 0.01), (20, 0.05)])
@pytest.mark.parametrize("mode", MODES)
def test_bf16_stays_close_to_float64(mode, amp, bound):
    net = make(channels=8, mode=mode).to(torch.bfloat16)
    x = amp * rand(1, 8, 12, 12).to(torch.bfloat16)
    out = net(x)
    assert torch.isfinite(out).all()
    ref = net.double()(x.double())  # the same bf16 weights and input, in float64
    err = (out.double() - ref).norm() / ref.norm()
    assert err < bound, err.item()
    # a float32 block under autocast opts out of it: float32 results, not bf16 ones
    net32 = make(channels=8, mode=mode).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = net32(x.float())
    assert got.dtype == torch.float32
    assert_close(got, net32(x.float()))


@pytest.mark.parametrize("std", [3.0, 10.0])
def test_autocast_bf16_computes_the_float32_attention(std):
    """Training (bf16 autocast) and evaluation (float32) must see the same attention.
    Unscaled logits in bf16 were 1.7% (std 3) and 6% (std 10) off before the fix."""
    torch.manual_seed(0)
    net = NonLocalBlock(64)
    torch.nn.init.normal_(net.out.weight, std=0.05)  # a trained-looking W, not zero
    x = (std * torch.randn(2, 64, 20, 20)).to(torch.bfloat16)  # as a bf16 conv hands it on
    with torch.no_grad():
        ref = net(x.float()) - x.float()  # the non-local term in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        assert out.dtype == torch.bfloat16  # hands bf16 on, as autocast expects
        got = out.float() - x.float()
    # what is left is the rounding of the bf16 output itself (2^-9 of z, not of W y)
    err = (got - ref).norm() / ref.norm()
    assert err < 0.01 * (1 + std / 10), err.item()


def test_attention_map():
    net, x = make(), rand(2, 6, 7, 5)
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    q, k = conv1x1(net.theta, flat), conv1x1(net.phi, flat)
    weights = torch.einsum("bci,bcj->bij", q, k).softmax(dim=-1)  # (B, N, N)
    amap = net.attention_map(x, (3, 4))
    assert amap.shape == (b, h, w)
    assert_close(amap.reshape(b, -1), weights[:, 3 * w + 4])

    amap = make(mode="region").attention_map(x, (1, 1))  # cell rows 0:4, cols 0:3
    assert_close(amap.sum(dim=(1, 2)), torch.ones(b, dtype=x.dtype))
    assert (amap[:, 4:] == 0).all() and (amap[:, :, 3:] == 0).all()
    assert (amap[:, :4, :3] > 0).all()


def test_errors():
    with pytest.raises(AmmsError, match="mode must be one of"):
        NonLocalBlock(4, mode="local")
    with pytest.raises(AmmsError, match="channels must be a positive integer"):
        NonLocalBlock(0)
    with pytest.raises(AmmsError, match="region must be a positive integer"):
        NonLocalBlock(4, mode="region", region=0)
    with pytest.raises(AmmsError, match="reduction"):
        NonLocalBlock(4, reduction=0)
    with pytest.raises(AmmsError, match=r"expected input \(B, 4, H, W\)"):
        NonLocalBlock(4)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(AmmsError, match="outside the 5x5 map"):
        NonLocalBlock(4).attention_map(torch.zeros(1, 4, 5, 5), (5, 0))


def test_small_channel_counts():
    net = NonLocalBlock(1, reduction=4)
    assert net.theta.out_channels == 1
    assert net(torch.randn(1, 1, 4, 4)).shape == (1, 1, 4, 4)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                    reason="needs Linux /proc to reset the peak-RSS mark")
def test_memory_grows_linearly_for_full_quadratically_for_naive():
    # 4,096 -> 16,384 positions: 4x linear, 16x quadratic; fresh process, forward only
    from amms_lib.memory import measure

    specs = ["full:64", "full:128", "naive:64", "naive:128"]
    peak = {(r["mode"], r["side"]): r["peak_bytes"]
            for r in measure(specs, channels=64, backward=False, repeat=1)}
    full_ratio = peak["full", 128] / max(peak["full", 64], 1)
    naive_ratio = peak["naive", 128] / peak["naive", 64]
    assert full_ratio < 6, peak
    assert naive_ratio > 10, peak
    assert peak["full", 128] < peak["naive", 128] / 4, peak
    assert peak["naive", 128] > 16384**2 * 4  # the matrix really was materialised


def test_effective_positions_of_uniform_and_one_hot_weights():
    from amms_lib.non_local import effective_positions

    assert effective_positions(torch.full((4, 5), 1 / 20)) == pytest.approx(20)
    one = torch.zeros(4, 5)
    one[1, 2] = 1
    assert effective_positions(one) == pytest.approx(1)
    half = torch.tensor([0.5, 0.5, 0.0])
    assert effective_positions(half) == pytest.approx(2)
