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


def matched_hidden(channels: int, kernel_sizes: tuple[int, ...] = (1, 3, 5)) -> int:
    """The width H of a single 3x3 branch (C -> H, ReLU, 1x1 H -> C) whose parameter count
    is closest to MSFF's at ``channels``: MSFF has sum(k^2) C^2 + len(k) C^2 weights (branches,
    fuse), the branch 9 C H + H C, so H is about 3.8 C for 1/3/5 (and so are the FLOPs)."""
    c = channels
    target = sum(k * k * c * c + c for k in kernel_sizes) + len(kernel_sizes) * c * c + c
    return min(range(1, 16 * c), key=lambda h: abs(10 * c * h + h + c - target))


class SingleScaleConv(nn.Module):
    """The ablation's neutral replacement for MSFF: one 3x3 conv + ReLU, residual.

    ``hidden``: the capacity control instead: a 3x3 conv to ``hidden`` channels, ReLU, and a
    1x1 conv back (MSFF's shape with its three kernel sizes replaced by one 3x3 branch;
    ``matched_hidden`` gives MSFF's parameter count). What MSFF gains over it is the scales,
    not the size."""

    def __init__(self, channels: int, hidden: int = 0):
        super().__init__()
        if hidden:
            self.body = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(True),
                                      nn.Conv2d(hidden, channels, 1))
        else:
            self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                      nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
