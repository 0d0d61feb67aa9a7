"""Second-order attention: covariance pooling, Newton-Schulz root, the SOCA module."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from amms_lib.amms import AMMSNet
from amms_lib.errors import AmmsError
from amms_lib.second_order import (
    SecondOrderChannelAttention,
    covariance_pool,
    sqrtm_newton_schulz,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spd(c: int, cond: float, scale: float = 3.7, seed: int = 0):
    """A (1, C, C) float64 SPD matrix with condition number ``cond`` and its root."""
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=gen(seed), dtype=torch.float64))
    ev = scale * torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), c,
                                dtype=torch.float64)
    return ((q * ev) @ q.T)[None], ((q * ev.sqrt()) @ q.T)[None]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# SAN's second-order channel attention (Dai et al., CVPR 2019: "Second-order Channel
# Attention", "Covariance Normalization Acceleration"), written from its equations
# alone, in float64 and on small maps only (it builds the (M, M) matrix I_bar).
# What the library does differently, none of it copied here: it centres by
# subtracting the channel means instead of building I_bar (the same matrix, by
# algebra); it adds EPS = 1e-8 to the trace (a relative change of about 1e-11 on
# these inputs, far below the tolerances used); it pools each row of the root where
# SAN pools each column (equal, since the root is symmetric); and it pools the whole
# map where SAN's code crops maps larger than 1000x1000 to their centre first.

def san_sqrtm(sigma: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Root of one (C, C) covariance: pre-normalise, Newton-Schulz, post-compensate."""
    eye = torch.eye(sigma.shape[0], dtype=sigma.dtype)
    tr = torch.trace(sigma)
    y, z = sigma / tr, eye  # Y_0 = A = Sigma / tr(Sigma), Z_0 = I
    for _ in range(steps):  # both updates read Y_{k-1} and Z_{k-1}
        y, z = 0.5 * y @ (3 * eye - z @ y), 0.5 * (3 * eye - z @ y) @ z
    return tr.sqrt() * y  # post-compensation: sqrt(tr(Sigma)) Y_N


def san_soca(x: torch.Tensor, mlp: torch.nn.Module, steps: int = 5):
    """(z, w, out) for a (B, C, H, W) map; ``mlp`` holds W_D, W_U and their biases."""
    b, c, h, w = x.shape
    m = h * w
    i_bar = (torch.eye(m, dtype=x.dtype) - torch.ones(m, m, dtype=x.dtype) / m) / m
    zs = []
    for feats in x.reshape(b, c, m):  # X: (C, M), one column per position
        sigma = feats @ i_bar @ feats.T  # (C, M) @ (M, M) @ (M, C) -> (C, C)
        y_hat = san_sqrtm(sigma, steps)
        zs.append(y_hat.mean(dim=0))  # z_c = (1/C) sum_i y_c(i), y_c the c-th column
    z = torch.stack(zs)  # (B, C)
    w_d = mlp[0].weight[:, :, 0, 0]  # (C/r, C)
    w_u = mlp[2].weight[:, :, 0, 0]  # (C, C/r)
    gate = torch.sigmoid(torch.relu(z @ w_d.T + mlp[0].bias) @ w_u.T + mlp[2].bias)
    return z, gate, x * gate[:, :, None, None]


def uneven_map(seed: int = 7) -> torch.Tensor:
    """(2, 8, 4, 5) float64 whose channel spreads range 0.2 to 3: after 5 Newton-Schulz
    steps its root is still a few percent from the limit, so one step more or less
    changes the result by far more than the tolerances of the tests below."""
    spread = torch.linspace(0.2, 3.0, 8, dtype=torch.float64)[:, None, None]
    return torch.randn(2, 8, 4, 5, generator=gen(seed), dtype=torch.float64) * spread


# covariance pooling

def test_covariance_matches_naive_float64():
    x = torch.randn(3, 5, 4, 6, generator=gen(), dtype=torch.float64) * 2 + 1
    ref = torch.stack([torch.cov(s.reshape(5, -1), correction=0) for s in x])
    torch.testing.assert_close(covariance_pool(x), ref, rtol=1e-12, atol=1e-12)
    # one entry by hand: mean of products of the centred channels
    a, b = x[1, 2].flatten(), x[1, 4].flatten()
    by_hand = ((a - a.mean()) * (b - b.mean())).mean()
    torch.testing.assert_close(covariance_pool(x)[1, 2, 4], by_hand)


def test_covariance_matches_san_centring_matrix():
    x = torch.randn(2, 4, 3, 5, generator=gen(1), dtype=torch.float64)
    m = 15
    i_hat = (torch.eye(m, dtype=torch.float64) - 1.0 / m) / m  # SAN's (M, M) matrix
    feats = x.reshape(2, 4, m)
    ref = feats @ i_hat @ feats.transpose(1, 2)
    torch.testing.assert_close(covariance_pool(x), ref)


def test_covariance_float32_stays_float32_and_is_symmetric():
    x = torch.randn(2, 6, 7, 7, generator=gen(2))
    cov = covariance_pool(x)
    assert cov.dtype == torch.float32 and cov.shape == (2, 6, 6)
    torch.testing.assert_close(cov, cov.transpose(1, 2))


def test_covariance_720p_never_builds_m_by_m():
    # M = 921,600: an (M, M) float32 matrix would take 3.4 TB. Measured in a fresh
    # process so that the peak RSS belongs to this computation only.
    code = textwrap.dedent("""
        import resource, torch
        from amms_lib.second_order import covariance_pool
        x = torch.rand(1, 64, 720, 1280, generator=torch.Generator().manual_seed(0))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cov = covariance_pool(x)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert cov.shape == (1, 64, 64) and bool(torch.isfinite(cov).all())
        print(grown * 1024)
    """)  # memory only: its speed is a benchmark's to measure, not a unit test's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    grown_bytes = float(out.stdout)
    assert grown_bytes < 1e9, f"peak RSS grew by {grown_bytes / 1e9:.2f} GB"


# Newton-Schulz square root

@pytest.mark.parametrize("cond", [1.0, 1e2, 1e4])
def test_newton_schulz_converges_to_eigh_root(cond):
    a, root = spd(8, cond)  # root built from the eigenvalues, not computed
    torch.testing.assert_close(sqrtm_newton_schulz(a, iters=30), root,
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cond", [1.0, 1e2, 1e4])
def test_five_iterations_approximate_the_root(cond):
    # SAN's default: close, not exact; small eigenvalues converge last
    a, root = spd(8, cond)
    err5 = rel_err(sqrtm_newton_schulz(a, iters=5), root)
    err30 = rel_err(sqrtm_newton_schulz(a, iters=30), root)
    assert err5 < 0.1
    assert err5 > 1e3 * err30
    errs = [rel_err(sqrtm_newton_schulz(a, iters=k), root) for k in (1, 3, 5, 10)]
    assert errs == sorted(errs, reverse=True)


def test_newton_schulz_batched_and_scale_invariant():
    a1, r1 = spd(6, 10.0, scale=0.01, seed=1)
    a2, r2 = spd(6, 10.0, scale=50.0, seed=2)
    out = sqrtm_newton_schulz(torch.cat([a1, a2]), iters=30)
    torch.testing.assert_close(out, torch.cat([r1, r2]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("iters", [1, 2, 5, None])
def test_newton_schulz_matches_san_recursion(iters):
    # None: the function's default, which must be SAN's 5
    cov = covariance_pool(uneven_map())
    got = sqrtm_newton_schulz(cov) if iters is None else sqrtm_newton_schulz(cov, iters)
    want = torch.stack([san_sqrtm(c, 5 if iters is None else iters) for c in cov])
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_newton_schulz_gradcheck():
    a, _ = spd(4, 10.0, scale=1.0)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: sqrtm_newton_schulz(m, iters=5), (a,))


def test_newton_schulz_zero_matrix_is_finite():
    a = torch.zeros(2, 5, 5, requires_grad=True)
    out = sqrtm_newton_schulz(a)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(a.grad).all()


# the module

def test_mlp_shapes_and_gate():
    soca = SecondOrderChannelAttention(64)
    assert soca.mlp[0].weight.shape == (4, 64, 1, 1)
    assert soca.mlp[2].weight.shape == (64, 4, 1, 1)
    assert SecondOrderChannelAttention(8, reduction=16).mlp[0].out_channels == 1
    x = torch.randn(2, 64, 6, 5, generator=gen(3))
    z, w, out = soca.descriptor(x), soca.weights(x), soca(x)
    assert z.shape == w.shape == (2, 64) and out.shape == x.shape
    assert ((w > 0) & (w < 1)).all()
    torch.testing.assert_close(out, x * w[:, :, None, None])


@pytest.mark.parametrize("where", ["module", "in_amms"])
def test_module_matches_san_float64_reference(where):
    if where == "module":  # the module's own default iteration count
        soca = SecondOrderChannelAttention(8, reduction=2)
    else:  # the one AMMS builds, with AMMSConfig's default count
        net = AMMSNet(scale=2, channels=8, n_amms=1, n_am=1, so_reduction=2)
        soca = next(m for m in net.modules()
                    if isinstance(m, SecondOrderChannelAttention))
    soca = soca.double()
    g = gen(11)
    with torch.no_grad():  # large weights, so that the gate follows z closely
        for p in soca.mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = uneven_map()
    want = san_soca(x, soca.mlp)
    got = soca.descriptor(x), soca.weights(x), soca(x)
    for name, a, b in zip(("z", "w", "out"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10,
                                   msg=lambda text, name=name: f"{name}: {text}")
    # the tolerance above is far tighter than what 4 or 6 steps would change
    for steps in (4, 6):
        z, w, out = san_soca(x, soca.mlp, steps)
        assert rel_err(z, want[0]) > 1e-2 and rel_err(out, want[2]) > 1e-3, steps


def test_module_gradcheck():
    torch.manual_seed(0)
    soca = SecondOrderChannelAttention(4, reduction=2).double()
    x = torch.randn(1, 4, 3, 3, generator=gen(4), dtype=torch.float64,
                    requires_grad=True)
    assert torch.autograd.gradcheck(soca, (x,))


@pytest.mark.parametrize("value", [0.0, 0.7])
def test_constant_image_is_finite(value):
    soca = SecondOrderChannelAttention(16, reduction=4)
    x = torch.full((2, 16, 9, 9), value, requires_grad=True)
    out = soca(x)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(soca.mlp[0].weight.grad).all()
    assert torch.equal(soca.descriptor(x), torch.zeros(2, 16))


@pytest.mark.parametrize("hw", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_tiny_maps_are_finite(hw):
    soca = SecondOrderChannelAttention(16, reduction=4)
    x = torch.randn(2, 16, *hw, generator=gen(5), requires_grad=True)
    out = soca(x)
    out.square().sum().backward()
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_bf16_autocast_keeps_statistics_in_float32():
    torch.manual_seed(0)
    soca = SecondOrderChannelAttention(32, reduction=4)
    x = torch.randn(2, 32, 12, 12, generator=gen(6))
    ref = soca(x)
    xb = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = soca.descriptor(xb)
        out = soca(xb)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, soca.descriptor(xb.float()))  # no bf16 inside
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=0), "channels"),
    (dict(channels=8, reduction=0), "reduction"),
    (dict(channels=8, iters=0), "iters"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(AmmsError, match=match):
        SecondOrderChannelAttention(**kwargs)


def test_bad_shapes():
    with pytest.raises(AmmsError, match="B, C, H, W"):
        covariance_pool(torch.zeros(3, 4, 4))
    with pytest.raises(AmmsError, match="B, C, C"):
        sqrtm_newton_schulz(torch.zeros(1, 3, 4))
    with pytest.raises(AmmsError, match="iters"):
        sqrtm_newton_schulz(torch.zeros(1, 3, 3), iters=0)
    with pytest.raises(AmmsError, match="8, H, W"):
        SecondOrderChannelAttention(8).descriptor(torch.zeros(1, 4, 3, 3))
