"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016), the 9-5-5 variant.

Three convolutions on the bicubic-upsampled image: patch extraction (9x9, 64),
non-linear mapping (5x5, 32) and reconstruction (5x5). The original works on Y with
'valid' convolutions; here it works on RGB with zero padding, so that every model in
the suite maps an LR image to a full-size SR image.
"""
from __future__ import annotations

import torch
from torch import nn

from amms_lib.resize import imresize


class SRCNN(nn.Module):
    """(B, 3, h, w) LR in [0, 1] -> (B, 3, s*h, s*w): bicubic, then 9-5-5 convs."""

    def __init__(self, scale: int, n1: int = 64, n2: int = 32):
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(3, n1, 9, padding=4), nn.ReLU(True),
            nn.Conv2d(n1, n2, 5, padding=2), nn.ReLU(True),
            nn.Conv2d(n2, 3, 5, padding=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(imresize(x, self.scale))  # MATLAB bicubic, differentiable
