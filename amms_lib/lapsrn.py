"""LapSRN (Lai et al., CVPR 2017): a Laplacian pyramid of x2 levels.

Each level has a feature branch (``depth`` 3x3 convs with leaky ReLU, then a
transposed conv that doubles the resolution and a conv that predicts the residual
image) and an image branch (a transposed conv that doubles the image); the level's
output is their sum. Published size: depth 10, 64 channels (x4 = two levels).
x3 is not a power of two: it uses a single x3 level (documented deviation). The feature
branch's transposed convs are 4x4 (5x5 at x3), not the released code's 3x3, so that the
size doubles exactly: 875k parameters at x4 instead of 812k (tests/test_network.py). Every
transposed conv starts as bilinear upsampling (``up_conv``) and every conv as He et al.'s
normal (``weight_init.he_init``, leaky slope 0.2), as the paper's, but for the residual
conv of each level, which starts at 0: a new network is bilinear upsampling.
"""
from __future__ import annotations

import torch
from torch import nn

from amms_lib.weight_init import he_init


def bilinear_kernel(s: int, k: int) -> torch.Tensor:
    """(k, k) weights of bilinear interpolation by ``s`` as a stride-``s`` transposed conv
    (the FCN construction; k = 2s - s % 2): 4x4 for x2, 5x5 for x3."""
    f = (k + 1) // 2
    centre = f - 1 if k % 2 else f - 0.5
    taps = 1 - (torch.arange(k, dtype=torch.float64) - centre).abs() / f
    return torch.outer(taps, taps).float()


def up_conv(c_in: int, c_out: int, s: int) -> nn.ConvTranspose2d:
    """Transposed conv that multiplies the size by exactly s (s = 2 or 3), initialised as
    bilinear upsampling of each channel by itself, bias 0, as the LapSRN paper initialises
    its transposed convs (from a bilinear filter): the image branch of a new level starts
    as an interpolation of its input, not as noise."""
    k, p = {2: (4, 1), 3: (5, 1)}[s]
    conv = nn.ConvTranspose2d(c_in, c_out, k, stride=s, padding=p)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(min(c_in, c_out)):
            conv.weight[c, c] = bilinear_kernel(s, k)
        conv.bias.zero_()
    return conv


class LapSRNLevel(nn.Module):
    def __init__(self, s: int, depth: int, channels: int, first: bool):
        super().__init__()
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2, True)] if first else []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True)]
        layers += [up_conv(channels, channels, s), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.to_residual = nn.Conv2d(channels, 3, 3, padding=1)
        self.up_image = up_conv(3, 3, s)
        he_init(self, negative_slope=0.2, zero=self.to_residual)  # transposed: bilinear

    def forward(self, feat, img):
        feat = self.features(feat)
        return feat, self.up_image(img) + self.to_residual(feat)


class LapSRN(nn.Module):
    """(B, 3, h, w) LR -> (B, 3, s*h, s*w); ``forward_pyramid`` gives every level."""

    def __init__(self, scale: int, depth: int = 10, channels: int = 64):
        super().__init__()
        self.scale = scale
        steps = {2: [2], 3: [3], 4: [2, 2]}[scale]
        self.levels = nn.ModuleList(
            LapSRNLevel(s, depth, channels, first=(i == 0)) for i, s in enumerate(steps)
        )

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feat, img, outs = x, x, []
        for level in self.levels:
            feat, img = level(feat, img)
            outs.append(img)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[-1]
