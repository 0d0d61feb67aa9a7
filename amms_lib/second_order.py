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

Why SAN's gate barely learns, and the fix offered here (``mode="normalised"``): z_c is a
mean over C entries of a root whose scale is sqrt(trace), so z_c is about sigma_c / C (about
1e-3 on trained features). ``W_D z`` is then hundreds of times smaller than the bias ``b_D``,
the gate is nearly the constant its biases set, and Adam, which moves a weight by about the
learning rate per step, would need entries of ``W_D`` near 100 for the image to matter.
``"normalised"`` standardises z across the channels of each image (zero mean, unit spread:
the MLP sees O(1) inputs whatever the feature scale) and starts every gate at exactly 1 (the
last layer zero, ``gate = 1 + tanh(.)``): the block starts as the identity and moves only
where the image-dependent statistic helps. Its control, ``ConstantChannelGate``, keeps the
gate and drops the statistic: one learned number per channel.

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


MODES = ("san", "normalised")
STD_EPS = 1e-12  # added to the channel spread of z before dividing by it (a constant map)


def standardise(z: torch.Tensor, eps: float = STD_EPS) -> torch.Tensor:
    """Each row of (B, C) to zero mean and unit (population) spread over its C entries."""
    centred = z - z.mean(dim=1, keepdim=True)  # (B, C)
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


class SecondOrderChannelAttention(nn.Module):
    """SOCA: gate each channel by an MLP of its row of the covariance's root.

    ``mode="san"``: SAN's formula, gate = sigmoid(MLP(z)). ``mode="normalised"``: gate =
    1 + tanh(MLP(standardise(z))), the MLP's last layer starting at zero (see the module doc).
    Covariance and root are computed in float32 even under ``torch.autocast``
    (a bf16 matrix product over M positions, and Newton-Schulz in bf16, lose too
    much); the output has the input's dtype.
    """

    def __init__(self, channels: int, reduction: int = 16, iters: int = 5,
                 mode: str = "san"):
        super().__init__()
        if mode not in MODES:
            raise AmmsError(f"second-order mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
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
            nn.Sigmoid() if mode == "san" else nn.Tanh(),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normalised mode: the last layer at zero, so every gate starts at exactly 1."""
        if self.mode == "normalised":
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

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
            z = root.mean(dim=2)  # (B, C, C) -> (B, C)
            return z if self.mode == "san" else standardise(z)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate w, in (0, 1) for SAN's, (0, 2) normalised: (B, C, H, W) -> (B, C)."""
        z = self.descriptor(x)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        z = z.to(self.mlp[0].weight.dtype)  # autocast re-casts it anyway
        w = self.mlp(z).flatten(1)  # (B, C, 1, 1) -> (B, C)
        return w if self.mode == "san" else 1 + w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x).to(x.dtype)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        return x * w

    def extra_repr(self) -> str:
        return (f"{self.channels}, reduction={self.reduction}, iters={self.iters}, "
                f"mode={self.mode!r}")


class ConstantChannelGate(nn.Module):
    """The control of second-order attention: the gate without the statistic, one learned
    number per channel, ``gate = 1 + tanh(b)`` with b starting at 0 (as the normalised
    gate starts). It cannot depend on the image; before a 1x1 conv it is a reparametrisation
    of that conv, so any gain over it is what the image-dependent statistic adds."""

    def __init__(self, channels: int):
        super().__init__()
        if channels < 1:
            raise AmmsError(f"channels must be at least 1, got {channels}")
        self.channels = channels
        self.bias = nn.Parameter(torch.zeros(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate, the same for every image: (B, C, H, W) -> (B, C)."""
        return (1 + torch.tanh(self.bias)).expand(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.tanh(self.bias)).to(x.dtype)[None, :, None, None]
