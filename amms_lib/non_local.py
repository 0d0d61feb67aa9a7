"""Non-local block: every position attends to every other one.

Wang et al., 2018, "Non-local Neural Networks" (Sec. 3.2, embedded Gaussian; Sec. 3.3,
the block). With theta, phi, g 1x1 convolutions and N = H*W positions:

    y_i = 1/C(x) * sum_j exp(theta(x_i)^T phi(x_j)) g(x_j),  C(x) = sum_j exp(...)
    z_i = W y_i + x_i

i.e. softmax attention over all positions, with *no* 1/sqrt(d) scaling. A new block is
the identity, as in Sec. 3.3; Wang et al. zero the scale of a BN after W, this block (no BN)
zeroes W itself, and training grows the non-local term from there.

Memory: the explicit N x N weight matrix is quadratic (a 128x128 map has 16,384
positions: 16,384^2 float32 = 1 GiB). Three ways to compute y:

- ``"full"``: torch's fused ``scaled_dot_product_attention``, which never stores the
  matrix (flash-style, O(N) memory). Its fused kernels need 4-d (B, heads, N, d) inputs
  whose last dimension is contiguous; otherwise torch silently falls back to the math
  kernel that does build the matrix (measured on CPU, N=16,384, d=32: 21 MB vs 2.3 GB).
- ``"naive"``: the same maths with the explicit matrix (``naive_attention``), to teach
  and to test against.
- ``"region"``: the region-level non-local of SAN (Dai et al., 2019): the map is cut
  into a ``region x region`` grid and positions attend only within their own cell.
  When H or W is not divisible by ``region`` the cells differ in size by at most one
  pixel (the first ones larger, like ``torch.tensor_split``); no padding, so no fake
  positions take part in the softmax. Cells of a map smaller than the grid are empty
  and skipped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amms_lib.errors import AmmsError

MODES = ("full", "naive", "region")


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention with the explicit (B, N, N) matrix, no 1/sqrt(d) scaling.

    q, k: (B, N, d), v: (B, N, dv) -> (B, N, dv). The softmax runs in at least float32
    so that bf16 inputs cannot overflow to inf/NaN.
    """
    scores = q @ k.transpose(-2, -1)  # (B, N, d) @ (B, d, N) -> (B, N, N)
    dtype = torch.promote_types(scores.dtype, torch.float32)
    weights = scores.softmax(dim=-1, dtype=dtype).to(v.dtype)
    return weights @ v  # (B, N, N) @ (B, N, dv) -> (B, N, dv)


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``naive_attention`` without the N x N matrix, through torch's fused kernels.

    q, k: (B, N, d), v: (B, N, dv), each with a contiguous last dimension.
    """
    q, k, v = (t.unsqueeze(1) for t in (q, k, v))  # (B, N, d) -> (B, 1, N, d): 4-d
    y = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, N, dv)
    return y.squeeze(1)  # (B, 1, N, dv) -> (B, N, dv)


def effective_positions(weights: torch.Tensor) -> float:
    """How many positions share attention weights that sum to 1: ``1 / sum w^2`` (N for
    uniform weights over N positions, 1 for all weight on one)."""
    return float(1 / (weights.double() ** 2).sum())


def splits(n: int, parts: int) -> list[slice]:
    """``parts`` near-equal, non-empty index ranges covering ``range(n)``."""
    size, extra = divmod(n, parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def to_tokens(t: torch.Tensor) -> torch.Tensor:
    """Feature map to tokens with a contiguous last dimension, as fused kernels need."""
    return t.flatten(2).transpose(1, 2).contiguous()  # (B, c, h, w) -> (B, h*w, c)


class NonLocalBlock(nn.Module):
    """z = x + W y, with y the embedded-Gaussian non-local operation (see module doc).

    channels: C of the input (B, C, H, W); theta, phi and g map it to
    max(1, C // reduction) channels; ``mode`` is "full", "naive" or "region" and
    ``region`` the grid size used by "region".
    """

    def __init__(self, channels: int, reduction: int = 2, mode: str = "full",
                 region: int = 2):
        super().__init__()
        if mode not in MODES:
            raise AmmsError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(channels, int) or channels < 1:
            raise AmmsError(f"channels must be a positive integer, got {channels!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise AmmsError(f"reduction must be a positive integer, got {reduction!r}")
        if not isinstance(region, int) or region < 1:
            raise AmmsError(f"region must be a positive integer, got {region!r}")
        self.channels, self.mode, self.region = channels, mode, region
        inner = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inner, 1)  # queries
        self.phi = nn.Conv2d(channels, inner, 1)  # keys
        self.g = nn.Conv2d(channels, inner, 1)  # values
        self.out = nn.Conv2d(inner, channels, 1)  # W
        nn.init.zeros_(self.out.weight)  # identity at start (Sec. 3.3 zeroes a BN scale instead)
        nn.init.zeros_(self.out.bias)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, region={self.region}"

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise AmmsError(f"expected input (B, {self.channels}, H, W), "
                            f"got {tuple(x.shape)}")

    def _attend(self, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """Attention over all positions of (B, c, h, w) maps -> y as (B, c, h, w)."""
        b, _, h, w = v.shape
        attend = naive_attention if self.mode == "naive" else fused_attention
        y = attend(to_tokens(q), to_tokens(k), to_tokens(v))  # (B, h*w, c)
        return y.transpose(1, 2).reshape(b, -1, h, w)  # (B, h*w, c) -> (B, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W). Runs in float32 even under ``torch.autocast``:
        the logits q.k are unscaled (as in Wang et al.) and reach tens to hundreds on
        trained features, where bf16's 8-bit mantissa moves a logit by several units
        and the softmax weights by tens of percent; validation and the benchmark run in
        float32, so training in bf16 would learn a different attention than they use.
        The 1x1 convolutions and the attention are a small share of AMMS's cost."""
        self._check(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            # the weights' dtype: f32 for an f32 block under autocast (an f64 block runs
            # in f64; a block converted to bf16 on purpose runs in bf16)
            xf = x.to(self.theta.weight.dtype)
            return self._forward(xf).to(x.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.theta(x), self.phi(x), self.g(x)  # (B, C, H, W) -> (B, c, H, W)
        if self.mode == "region":
            _, _, h, w = x.shape
            rows, cols = splits(h, self.region), splits(w, self.region)
            # 1x1 convs are pointwise: cutting their outputs = running them per cell
            y = torch.cat([
                torch.cat([self._attend(q[..., r, c], k[..., r, c], v[..., r, c])
                           for c in cols], dim=3)  # cells of one band, side by side
                for r in rows], dim=2)  # bands stacked -> (B, c, H, W)
        else:
            y = self._attend(q, k, v)
        return x + self.out(y)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, pos: tuple[int, int]) -> torch.Tensor:
        """Where position ``pos = (row, col)`` looks: weights (B, H, W) summing to 1.

        In region mode, zero outside the cell holding ``pos``. For plots.
        """
        self._check(x)
        b, _, h, w = x.shape
        i, j = pos
        if not (0 <= i < h and 0 <= j < w):
            raise AmmsError(f"pos {pos} is outside the {h}x{w} map")
        rows, cols = slice(0, h), slice(0, w)
        if self.mode == "region":
            rows = next(s for s in splits(h, self.region) if s.start <= i < s.stop)
            cols = next(s for s in splits(w, self.region) if s.start <= j < s.stop)
        q = self.theta(x[..., i:i + 1, j:j + 1]).flatten(1)  # (B, c, 1, 1) -> (B, c)
        k = self.phi(x[..., rows, cols]).flatten(2)  # (B, c, h', w') -> (B, c, h'*w')
        scores = torch.einsum("bc,bcn->bn", q, k)  # (B, c) x (B, c, N') -> (B, N')
        dtype = torch.promote_types(scores.dtype, torch.float32)
        weights = scores.softmax(dim=-1, dtype=dtype).to(x.dtype)
        out = x.new_zeros(b, h, w)
        out[:, rows, cols] = weights.view(b, rows.stop - rows.start, -1)  # (B, h', w')
        return out
