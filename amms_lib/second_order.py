"""Second-order channel attention: global covariance pooling and its matrix root.

The AMMS paper's second-order branch (Sec. 2.3.3, Fig. 5) is SAN's second-order
channel attention, SOCA (Dai et al., CVPR 2019, "Second-order Channel Attention"
and "Covariance Normalization Acceleration"). Where squeeze-and-excitation pools
each channel to its mean (first order), SOCA pools the feature map to the
channel covariance (second order: how channels vary together):

    Sigma = Xc Xc^T / M       Xc: the (C, M) map, each channel minus its mean
    Y     = Sigma^(1/2)       normalised by its root, approximated by Newton-Schulz
    z_c   = mean_j Y[c, j]    one number per channel
    w     = sigmoid(W_U relu(W_D z)),   out = w * x

SAN writes the centring as X I_hat X^T with an M x M matrix I_hat; subtracting the
mean gives the same matrix without it (M = 921,600 on a 720p map: I_hat alone
would take 3.4 TB in float32). The root follows iSQRT-COV (Li et al., CVPR 2018):
a few coupled Newton-Schulz iterations, matrix products only, GPU-friendly.
"""
from __future__ import annotations

import torch
from torch import nn

from amms_lib.errors import AmmsError

# added to the trace before dividing by it. For any scale s > 0 the exact root is
# unchanged, sqrt(a / s) * sqrt(s) = sqrt(a), so for ordinary features (trace far
# above 1e-8, and 1e-8 is below float32 resolution near 1) this is a no-op. For a
# zero covariance (a constant image, a 1x1 map) it replaces 0 / 0 and the infinite
# slope of sqrt at 0 with finite values: the root is then exactly 0 and gradients
# with respect to the covariance are about 1.5**iters / sqrt(eps) (8e4 at 5 steps);
# those reaching x are 0 there, since d(cov)/dx vanishes when x is constant.
EPS = 1e-8


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """Channel covariance of each map: (B, C, H, W) -> (B, C, C), population (1/M).

    Same as SAN's X I_hat X^T with I_hat = (I - 11^T / M) / M, never building I_hat.
    """
    if x.dim() != 4:
        raise AmmsError(f"covariance_pool expects (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    m = h * w
    feats = x.reshape(b, c, m)  # (B, C, H, W) -> (B, C, M)
    centred = feats - feats.mean(dim=2, keepdim=True)  # (B, C, M) - (B, C, 1)
    return centred @ centred.transpose(1, 2) / m  # (B, C, M) @ (B, M, C) -> (B, C, C)


def sqrtm_newton_schulz(
    a: torch.Tensor, iters: int = 5, eps: float = EPS
) -> torch.Tensor:
    """Approximate square root of symmetric positive semi-definite (B, C, C) matrices.

    Divide by the trace (eigenvalues then lie in [0, 1], where the iteration
    converges), run the coupled Newton-Schulz iteration

        T = (3I - Z_k Y_k) / 2,   Y_{k+1} = Y_k T,   Z_{k+1} = T Z_k,
        Y_0 = A / tr(A),  Z_0 = I,   Y_k -> (A / tr A)^(1/2),  Z_k -> its inverse,

    and multiply by sqrt(tr(A)). SAN uses 5 iterations: an approximation the
    network learns around, not the exact root; small eigenvalues converge slowest
    (the error after k steps is largest for ill-conditioned matrices). Raise
    ``iters`` (about 30) to match an eigendecomposition closely.
    ``eps`` is added to the trace so that a zero matrix gives 0, not NaN (see EPS).
    """
    if iters < 1:
        raise AmmsError(f"iters must be at least 1, got {iters}")
    if a.dim() != 3 or a.shape[1] != a.shape[2]:
        raise AmmsError(f"sqrtm_newton_schulz expects (B, C, C), got {tuple(a.shape)}")
    eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device).expand_as(a)
    norm = a.diagonal(dim1=1, dim2=2).sum(dim=1).view(-1, 1, 1) + eps  # (B, 1, 1)
    y, z = a / norm, eye
    for _ in range(iters):
        t = 0.5 * (3.0 * eye - z @ y)  # (B, C, C) @ (B, C, C) -> (B, C, C)
        y, z = y @ t, t @ z  # (B, C, C) @ (B, C, C) -> (B, C, C)
    return y * norm.sqrt()


class SecondOrderChannelAttention(nn.Module):
    """SOCA: gate each channel by an MLP of its row of the covariance's root.

    Covariance and root are computed in float32 even under ``torch.autocast``
    (a bf16 matrix product over M positions, and Newton-Schulz in bf16, lose too
    much); the output has the input's dtype.
    """

    def __init__(self, channels: int, reduction: int = 16, iters: int = 5):
        super().__init__()
        if channels < 1:
            raise AmmsError(f"channels must be at least 1, got {channels}")
        if reduction < 1:
            raise AmmsError(f"reduction must be at least 1, got {reduction}")
        if iters < 1:
            raise AmmsError(f"iters must be at least 1, got {iters}")
        self.channels, self.reduction, self.iters = channels, reduction, iters
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(  # W_D, relu, W_U, sigmoid as 1x1 convs (as in SAN)
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """The second-order statistic z, (B, C, H, W) -> (B, C), in float32 or wider."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise AmmsError(
                f"expected (B, {self.channels}, H, W), got shape {tuple(x.shape)}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            wide = torch.promote_types(x.dtype, torch.float32)  # bf16 -> f32, f64 stays
            cov = covariance_pool(x.to(wide))  # (B, C, H, W) -> (B, C, C)
            root = sqrtm_newton_schulz(cov, self.iters)  # (B, C, C)
            return root.mean(dim=2)  # (B, C, C) -> (B, C)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate w in (0, 1): (B, C, H, W) -> (B, C)."""
        z = self.descriptor(x)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        z = z.to(self.mlp[0].weight.dtype)  # autocast re-casts it anyway
        return self.mlp(z).flatten(1)  # (B, C, 1, 1) -> (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x).to(x.dtype)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        return x * w

    def extra_repr(self) -> str:
        return f"{self.channels}, reduction={self.reduction}, iters={self.iters}"
