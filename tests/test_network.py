"""Multi-scale fusion, the AMMS network, the comparison models and the FLOP counter."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amms_lib.amms import AMMSConfig, AMMSNet, MeanShift
from amms_lib.errors import AmmsError
from amms_lib.models import MODELS, build_model
from amms_lib.multiscale import MultiScaleFusion, SingleScaleConv
from amms_lib.non_local import NonLocalBlock
from amms_lib.profile import count_parameters, flops_by_part, summary
from amms_lib.resize import imresize
from amms_lib.second_order import SecondOrderChannelAttention

TINY = AMMSConfig.tiny_kwargs()
TINY_COMPARISON = {"srcnn": dict(n1=8, n2=4), "vdsr": dict(depth=3, channels=8),
                   "lapsrn": dict(depth=1, channels=8),
                   "memnet": dict(n_blocks=2, n_recursions=2, channels=8)}


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# -- multi-scale fusion ---------------------------------------------------------------

def test_msff_matches_float64_reference():
    m = MultiScaleFusion(4).double()
    x = torch.rand(2, 4, 9, 7, generator=_g(), dtype=torch.float64)
    feats = []
    for branch, k in zip(m.branches, (1, 3, 5)):
        conv = branch[0]
        feats.append(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=k // 2)))
    want = x + F.conv2d(torch.cat(feats, 1), m.fuse.weight, m.fuse.bias)
    torch.testing.assert_close(m(x), want)


def test_msff_branches_see_1_3_and_5_pixels():
    m = MultiScaleFusion(2).double()
    x = torch.rand(1, 2, 11, 11, dtype=torch.float64, requires_grad=True)
    for branch, k in zip(m.branches, (1, 3, 5)):
        conv = branch[0]
        y = F.conv2d(x, conv.weight, conv.bias, padding=k // 2)[0, :, 5, 5].sum()
        (grad,) = torch.autograd.grad(y, x)
        rows, cols = torch.nonzero(grad[0].abs().sum(0), as_tuple=True)
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (k, k)


def test_msff_errors_and_single_scale():
    with pytest.raises(AmmsError, match="odd kernel"):
        MultiScaleFusion(4, kernel_sizes=(1, 2))
    assert SingleScaleConv(4)(torch.zeros(1, 4, 5, 5)).shape == (1, 4, 5, 5)


# -- the AMMS network -----------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
def test_amms_shapes(scale):
    net = AMMSNet(scale=scale, **TINY)
    assert net(torch.rand(2, 3, 12, 10)).shape == (2, 3, 12 * scale, 10 * scale)


def test_mean_shift_is_a_buffer_and_never_trains():
    net = AMMSNet(scale=2, **TINY)
    names = [n for n, _ in net.named_parameters()]
    assert not any("mean" in n for n in names)
    assert "sub_mean.mean" in net.state_dict()
    # count_parameters counts trainable parameters: no buffers, nothing frozen
    total = sum(p.numel() for p in net.parameters())
    assert count_parameters(net) == total
    net.head.requires_grad_(False)
    head = sum(p.numel() for p in net.head.parameters())
    assert count_parameters(net) == total - head
    x = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(MeanShift(+1)(MeanShift(-1)(x)), x)
    torch.testing.assert_close(MeanShift(-1)(torch.zeros(1, 3, 1, 1)).flatten(),
                               -torch.tensor([0.4488, 0.4371, 0.4040]))


def _count(net, cls):
    return sum(isinstance(m, cls) for m in net.modules())


def test_ablation_switches_swap_components():
    full = AMMSNet(scale=2, **TINY)
    assert _count(full, NonLocalBlock) == _count(full, SecondOrderChannelAttention) == 1
    assert _count(full, MultiScaleFusion) == 2
    no_nl = AMMSNet(scale=2, non_local=False, **TINY)
    no_so = AMMSNet(scale=2, second_order=False, **TINY)
    no_ms = AMMSNet(scale=2, multiscale=False, **TINY)
    assert _count(no_nl, NonLocalBlock) == 0 and _count(no_nl, SecondOrderChannelAttention) == 1
    assert _count(no_so, SecondOrderChannelAttention) == 0 and _count(no_so, NonLocalBlock) == 1
    assert _count(no_ms, MultiScaleFusion) == 0 and _count(no_ms, SingleScaleConv) == 2
    for net in (no_nl, no_so, no_ms):
        assert count_parameters(net) < count_parameters(full)
        assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)


def test_the_tail_sf_block_is_an_option_that_changes_nothing_when_off():
    """Sec. 2.2's tail SF block: off by default (no new state-dict keys, so the shipped
    weights load); on, one more SF block between DF and RE that changes the output."""
    torch.manual_seed(0)
    plain = AMMSNet(scale=2, **TINY)
    torch.manual_seed(0)
    tail = AMMSNet(scale=2, sf_tail=True, **TINY)
    extra = set(tail.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("sf_tail.") for k in extra)
    assert count_parameters(tail) - count_parameters(plain) == count_parameters(plain.sf)
    tail.load_state_dict({**tail.state_dict(), **plain.state_dict()})
    x = torch.rand(1, 3, 8, 8)
    assert not torch.allclose(tail(x), plain(x))
    with torch.no_grad():  # a tail block whose convs output zero is the identity
        tail.sf_tail.body[-1].weight.zero_()
        tail.sf_tail.body[-1].bias.zero_()
    torch.testing.assert_close(tail(x), plain(x))


def test_config_is_recorded_and_validated():
    net = AMMSNet(AMMSConfig(scale=3, channels=8), n_amms=1)
    assert (net.cfg.scale, net.cfg.channels, net.cfg.n_amms) == (3, 8, 1)
    for bad, match in [(dict(scale=5), "scale 5"), (dict(fusion="sum"), "fusion"),
                       (dict(n_am=0), "n_am")]:
        with pytest.raises(AmmsError, match=match):
            AMMSNet(**bad)
    with pytest.raises(AmmsError, match=r"\(B, 3, H, W\)"):
        AMMSNet(**TINY)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("fusion", ["parallel", "sequential"])
@pytest.mark.parametrize("nl_mode", ["full", "region", "naive"])
def test_float32_agrees_with_float64(fusion, nl_mode):
    torch.manual_seed(0)
    net = AMMSNet(scale=2, fusion=fusion, nl_mode=nl_mode, **TINY)
    for m in net.modules():  # wake the zero-initialised non-local outputs
        if isinstance(m, NonLocalBlock):
            for p in m.parameters():
                nn.init.normal_(p, std=0.1)
    x = torch.rand(1, 3, 8, 6, generator=_g())
    y32 = net(x)
    y64 = net.double()(x.double())
    torch.testing.assert_close(y32, y64.float(), atol=1e-4, rtol=1e-4)


def test_every_parameter_gets_a_gradient():
    # W of the non-local block starts at zero, so at initialisation theta, phi and g
    # get gradients of exactly zero; one optimiser step makes W non-zero (Adam moves
    # every parameter with a non-zero gradient by about lr), after which every
    # parameter must get a non-zero gradient: a detached or dead path fails here.
    torch.manual_seed(0)
    net = AMMSNet(scale=2, **TINY)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.rand(2, 3, 8, 8, generator=_g())
    for _ in range(2):
        opt.zero_grad()
        net(x).abs().mean().backward()
        opt.step()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (16, 16)])
def test_no_nan_from_constant_or_tiny_images(size):
    net = AMMSNet(scale=2, **TINY)
    x = torch.full((1, 3, *size), 0.5, requires_grad=True)
    y = net(x)
    y.mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    net = AMMSNet(scale=2, **TINY)
    x = torch.rand(1, 3, 10, 10, generator=_g())
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
    # bf16 keeps 8 mantissa bits (rounding 2^-9 = 0.2% per value) and the output itself
    # is bf16; the convs add their own rounding. Measured 0.24% here; 1% allows it.
    assert y.dtype == torch.bfloat16  # autocast took effect (its speed is the point)
    assert torch.isfinite(y.float()).all()
    err = (y.float() - ref).norm() / ref.norm()
    assert err < 0.01, err.item()


# -- comparison models ----------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(TINY_COMPARISON))
def test_comparison_model_shapes(name, scale):
    net = build_model(name, scale, **TINY_COMPARISON[name])
    y = net(torch.rand(1, 3, 7, 9))
    assert y.shape == (1, 3, 7 * scale, 9 * scale) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["vdsr", "memnet"])
def test_residual_models_start_from_bicubic(name):
    from amms_lib.resize import imresize

    net = build_model(name, 2, **TINY_COMPARISON[name])
    last = net.body[-1] if name == "vdsr" else net.recon[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(net(x), imresize(x, 2))


def _w(c_in, c_out, k):
    """Weights of one k x k (transposed) conv, without its bias."""
    return c_in * c_out * k * k


# Published sizes, in thousands as the papers' comparison tables print them: SRCNN
# 9-5-5 57K, VDSR 665K, LapSRN x4 812K, MemNet M6R6 677K. Each fits the conv weights
# of the original network on the Y channel, without biases (with biases VDSR would be
# 666K and MemNet 678K). Per model: (published, scale, the original's count, the
# suite's deviations, each as the parameters it adds).
PUBLISHED = {
    "srcnn": (57_000, 2, _w(1, 64, 9) + _w(64, 32, 5) + _w(32, 1, 5), {
        # original: valid convs (no change in count); here zero padding
        "RGB in and out instead of Y": _w(2, 64, 9) + _w(32, 2, 5),
        "biases": 64 + 32 + 3,
    }),
    "vdsr": (665_000, 2, _w(1, 64, 3) + 18 * _w(64, 64, 3) + _w(64, 1, 3), {
        "RGB in and out instead of Y": _w(2, 64, 3) + _w(64, 2, 3),
        "biases": 19 * 64 + 3,
    }),
    # the released code (init_LapSRN.m): input conv; per x2 level 10 convs, a 3x3
    # transposed conv for the features, a residual conv, a 4x4 transposed conv for the
    # image; 812,768 weights (4x4 feature transposed convs would make it 870K)
    "lapsrn": (812_000, 4, _w(1, 64, 3) + 2 * (10 * _w(64, 64, 3) + _w(64, 64, 3)
                                              + _w(64, 1, 3) + _w(1, 1, 4)), {
        "RGB in and out instead of Y": _w(2, 64, 3) + 2 * _w(64, 2, 3),
        "3 -> 3 image transposed conv, not 1 -> 1": 2 * (_w(3, 3, 4) - _w(1, 1, 4)),
        "4x4 feature transposed convs, not 3x3": 2 * (_w(64, 64, 4) - _w(64, 64, 3)),
        "biases": 64 + 2 * (10 * 64 + 64 + 3 + 3),
    }),
    # FENet; 6 memory blocks of one recursive unit (2 convs, shared by 6 recursions)
    # and a 1x1 gate over (6 + m) * 64 channels for block m; one shared ReconNet
    "memnet": (677_000, 2, _w(1, 64, 3) + 6 * 2 * _w(64, 64, 3)
               + sum(_w((6 + m) * 64, 64, 1) for m in range(1, 7)) + _w(64, 1, 3), {
        "RGB in and out instead of Y": _w(2, 64, 3) + _w(64, 2, 3),
        "biases": 64 + 6 * (2 * 64 + 64) + 3,
        "learned weights of the 6 block outputs": 6,
        # the original's BN (BN-ReLU-conv) is dropped here: nothing to add
    }),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes(name):
    from amms_lib.published import PARAMS

    published, scale, original, deviations = PUBLISHED[name]
    assert published == PARAMS[name]  # the library's table says the same
    # the published figure is the original's count to the thousand (rounded or cut)
    assert abs(original - published) < 1000, original
    # the suite's version: the original plus its stated deviations, exactly
    want = original + sum(deviations.values())
    assert count_parameters(build_model(name, scale)) == want


def test_build_model_errors():
    assert set(MODELS) == {"amms", "srcnn", "vdsr", "lapsrn", "memnet"}
    with pytest.raises(AmmsError, match="unknown model 'edsr'"):
        build_model("edsr", 2)
    with pytest.raises(AmmsError, match="scale 8"):
        build_model("vdsr", 8)
    with pytest.raises(AmmsError, match="bad option"):
        build_model("vdsr", 2, width=3)


# -- parameters and FLOPs -------------------------------------------------------------

def test_flops_of_a_conv_match_the_formula():
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1))
    assert flops_by_part(net, (4, 6))["total"] == 2 * 3 * 5 * 9 * 4 * 6


def test_attention_flops_are_counted_like_the_explicit_matrix():
    n = 6 * 6
    convs = 4 * 2 * 3 * 3 * n  # theta, phi, g and the output 1x1 conv, 3 -> 3 channels
    attention = 2 * n * n * (3 + 3)  # Q K^T and the weighted sum of V
    full = flops_by_part(nn.Sequential(NonLocalBlock(3, reduction=1)), (6, 6))["total"]
    naive = flops_by_part(nn.Sequential(NonLocalBlock(3, 1, "naive")), (6, 6))["total"]
    assert full == naive
    assert convs + attention <= full <= 1.1 * (convs + attention)  # + softmax etc.


def test_summary_parts_add_up():
    net = AMMSNet(scale=2, **TINY)
    rows = summary(net, (12, 12))
    parts = {r["part"]: r for r in rows}
    assert {"head", "sf", "df", "re", "total"} <= set(parts)
    assert sum(r["params"] for r in rows[:-1]) == parts["total"]["params"]
    assert sum(r["gflops"] for r in rows[:-1]) == pytest.approx(parts["total"]["gflops"])


@pytest.mark.parametrize("s", [2, 3])
def test_lapsrn_transposed_convs_start_as_bilinear_upsampling(s):
    """Against torch's bilinear interpolation (align_corners=False), float64, away from the
    border: a new LapSRN level's image branch interpolates, it does not add noise."""
    from amms_lib.lapsrn import up_conv

    conv = up_conv(3, 3, s).double()
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    with torch.no_grad():
        got = conv(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got[..., s:-s, s:-s], ref[..., s:-s, s:-s])
    net = build_model("lapsrn", s, depth=1, channels=8)
    assert torch.count_nonzero(net.levels[0].up_image.bias) == 0


def test_vdsr_and_lapsrn_start_from_he_init_and_keep_the_signal_through_their_depth():
    """He et al.'s formula (std sqrt(2 / (1 + a^2) / fan_in), bias 0) for every conv; through
    VDSR's 19 conv-ReLU layers the activations keep their scale (PyTorch's default init
    shrinks the variance 6x a layer: a standard deviation of 4.5e-8 after 19 without the
    biases, about 0.014 with them, against 0.50 here)."""
    torch.manual_seed(0)
    vdsr, lap = build_model("vdsr", 2), build_model("lapsrn", 2)
    for net, slope, out in ((vdsr, 0.0, vdsr.body[-1]), (lap, 0.2, lap.levels[0].to_residual)):
        convs = [m for m in net.modules() if type(m) is nn.Conv2d and m is not out]
        assert not out.weight.any() and not out.bias.any()  # the residual starts at 0
        for m in convs:
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            want = (2 / (1 + slope**2) / fan_in) ** 0.5
            assert abs(m.weight.double().std().item() / want - 1) < 0.1 and not m.bias.any()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        h = vdsr.body[:-1](x)  # after the last ReLU
        lr = torch.rand(1, 3, 12, 12)
        bic, bil = imresize(lr, 2), F.interpolate(lr, scale_factor=2, mode="bilinear")
        torch.testing.assert_close(vdsr(lr), bic)  # a new VDSR is bicubic
        torch.testing.assert_close(lap(lr)[..., 2:-2, 2:-2], bil[..., 2:-2, 2:-2])  # bilinear
    for m in vdsr.body:  # PyTorch's default init, for comparison
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    with torch.no_grad():
        h_default = vdsr.body[:-1](x)
    assert 0.45 < h.std().item() < 0.55 and h_default.std().item() < 0.03


def test_a_configuration_label_names_its_width_depth_and_m():
    """``AMMSConfig.label``: the legend name of a checkpoint's configuration (defaults for
    what its kwargs leave out; the scale is not part of it)."""
    assert AMMSConfig.label(AMMSConfig.small_kwargs()) == "AMMS 32 ch, 2 modules, M=1"
    assert AMMSConfig.label({"channels": 48, "scale": 3}) == "AMMS 48 ch, 4 modules, M=2"
