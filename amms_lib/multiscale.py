"""Multi-scale feature fusion (MSFF), paper section 2.3.1 and Figure 2.

Three parallel convolutions see the same features at three scales: 1x1 (keeps the
previous layer's features), 3x3 and 5x5 (wider context). Each is followed by a
nonlinearity; the branches are concatenated, fused by a 1x1 convolution and added
to the input (local residual)::

    y = x + W_fuse [ relu(W1 x), relu(W3 x), relu(W5 x) ]

The paper does not give branch widths; each branch keeps ``channels`` here.
"""
from __future__ import annotations

import torch
from torch import nn

from amms_lib.errors import AmmsError


class MultiScaleFusion(nn.Module):
    """MSFF: parallel 1x1 / 3x3 / 5x5 convs + ReLU, concat, 1x1 fuse, residual."""

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        if channels < 1 or not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise AmmsError(f"MultiScaleFusion needs channels >= 1 and odd kernel sizes, "
                            f"got channels={channels}, kernel_sizes={kernel_sizes}")
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, k, padding=k // 2), nn.ReLU(True))
            for k in kernel_sizes
        )
        self.fuse = nn.Conv2d(channels * len(kernel_sizes), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [branch(x) for branch in self.branches]  # each (B, C, H, W)
        return x + self.fuse(torch.cat(feats, dim=1))  # (B, 3C, H, W) -> (B, C, H, W)


class SingleScaleConv(nn.Module):
    """The ablation's neutral replacement for MSFF: one 3x3 conv + ReLU, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
