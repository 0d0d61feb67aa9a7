"""Non-local block: every position attends to every other one.

Wang et al., 2018, "Non-local Neural Networks" (Sec. 3.2, embedded Gaussian; Sec. 3.3,
the block). With theta, phi, g 1x1 convolutions and N = H*W positions:

    y_i = 1/C(x) * sum_j exp(theta(x_i)^T phi(x_j)) g(x_j),  C(x) = sum_j exp(...)
    z_i = W y_i + x_i

i.e. softmax attention over all positions, with *no* 1/sqrt(d) scaling. A new block is
the identity, as in Sec. 3.3; Wang et al. zero the scale of a BN after W, this block (no BN)
zeroes W itself, and training grows the non-local term from there.

Two more kinds, for the question whether the block does more than pool globally (GCNet, Cao
et al. 2019, found trained non-local blocks attend alike from every query):

- ``logits="cosine"``: the logits are ``s cos(theta_i, phi_j)`` with a learned scale ``s``
  (scaled cosine attention, Swin Transformer V2: s starts at 10 and is capped at 100). Unit
  vectors bound each logit by s, so how peaked the attention can be is one learned number
  instead of the feature norms: a selective block is easy to reach.
- ``ContextBlock``: the query-independent control (GCNet's simplified non-local block): one
  softmax over positions of a 1-channel key, ``y = sum_j softmax(k)_j g(x_j)``, the same
  vector added at every position. Whatever a non-local block gains over it needs the query.

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

import math

import torch
import torch.nn.functional as F
from torch import nn

from amms_lib.errors import AmmsError

MODES = ("full", "naive", "region")
LOGITS = ("dot", "cosine")
COSINE_SCALE_INIT, COSINE_SCALE_MAX = 10.0, 100.0  # Swin V2's 1/tau: starts at 10, capped


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
                 region: int = 2, logits: str = "dot"):
        super().__init__()
        if mode not in MODES:
            raise AmmsError(f"mode must be one of {MODES}, got {mode!r}")
        if logits not in LOGITS:
            raise AmmsError(f"logits must be one of {LOGITS}, got {logits!r}")
        if not isinstance(channels, int) or channels < 1:
            raise AmmsError(f"channels must be a positive integer, got {channels!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise AmmsError(f"reduction must be a positive integer, got {reduction!r}")
        if not isinstance(region, int) or region < 1:
            raise AmmsError(f"region must be a positive integer, got {region!r}")
        self.channels, self.mode, self.region, self.logits = channels, mode, region, logits
        inner = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inner, 1)  # queries
        self.phi = nn.Conv2d(channels, inner, 1)  # keys
        self.g = nn.Conv2d(channels, inner, 1)  # values
        self.out = nn.Conv2d(inner, channels, 1)  # W
        if logits == "cosine":  # log of the logit scale s
            self.log_scale = nn.Parameter(torch.tensor(math.log(COSINE_SCALE_INIT)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W at zero: the block starts as the identity (Sec. 3.3 zeroes a BN scale instead)."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if self.logits == "cosine":
            nn.init.constant_(self.log_scale, math.log(COSINE_SCALE_INIT))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, region={self.region}, logits={self.logits!r}"

    def logit_scale(self) -> torch.Tensor | None:
        """Cosine logits: the learned scale s (at most ``COSINE_SCALE_MAX``); dot: None."""
        if self.logits == "dot":
            return None
        return self.log_scale.clamp(max=math.log(COSINE_SCALE_MAX)).exp()

    def _embed(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys (B, c, ...) whose dot products are the logits: as they are for
        dot logits; unit vectors over c, the queries times s, for cosine ones."""
        scale = self.logit_scale()
        if scale is None:
            return q, k
        return F.normalize(q, dim=1) * scale.to(q.dtype), F.normalize(k, dim=1)

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
        q, k = self._embed(q, k)
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
        q, k = self._embed(self.theta(x[..., i:i + 1, j:j + 1]), self.phi(x[..., rows, cols]))
        q, k = q.flatten(1), k.flatten(2)  # (B, c, 1, 1) -> (B, c); (B, c, h', w') -> (B, c, N')
        scores = torch.einsum("bc,bcn->bn", q, k)  # (B, c) x (B, c, N') -> (B, N')
        dtype = torch.promote_types(scores.dtype, torch.float32)
        weights = scores.softmax(dim=-1, dtype=dtype).to(x.dtype)
        out = x.new_zeros(b, h, w)
        out[:, rows, cols] = weights.view(b, rows.stop - rows.start, -1)  # (B, h', w')
        return out


class ContextBlock(nn.Module):
    """The query-independent control of ``NonLocalBlock`` (GCNet's simplified block):
    ``z_i = x_i + W sum_j softmax_j(k(x_j)) g(x_j)``, with k a 1-channel 1x1 conv, g and W
    as in the non-local block (W at zero: the identity at start). One context vector per
    image, added at every position; O(N) time and memory. Runs in float32 under autocast,
    as the non-local block does."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise AmmsError(f"channels must be a positive integer, got {channels!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise AmmsError(f"reduction must be a positive integer, got {reduction!r}")
        self.channels = channels
        inner = max(1, channels // reduction)
        self.key = nn.Conv2d(channels, 1, 1)  # one logit per position, no query
        self.g = nn.Conv2d(channels, inner, 1)  # values
        self.out = nn.Conv2d(inner, channels, 1)  # W
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def pooling_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax over positions, (B, C, H, W) -> (B, H*W), summing to 1 per image."""
        logits = self.key(x).flatten(1)  # (B, 1, H, W) -> (B, N)
        return logits.softmax(dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise AmmsError(f"expected input (B, {self.channels}, H, W), got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.to(self.key.weight.dtype)
            w = self.pooling_weights(xf).to(xf.dtype)  # (B, N)
            v = self.g(xf).flatten(2)  # (B, c, N)
            context = torch.einsum("bcn,bn->bc", v, w)[:, :, None, None]  # (B, c, 1, 1)
            return (xf + self.out(context)).to(x.dtype)  # broadcast over every position
