"""VDSR (Kim et al., CVPR 2016): 20 3x3 conv layers learning the residual of bicubic.

Published size: 20 layers of 64 channels. On RGB here (the original uses Y). Initialised as
the paper's (He et al.; ``weight_init.he_init``), but for the last conv, which starts at 0.
"""
from __future__ import annotations

import torch
from torch import nn

from amms_lib.resize import imresize
from amms_lib.weight_init import he_init


class VDSR(nn.Module):
    """(B, 3, h, w) LR -> (B, 3, s*h, s*w) = bicubic + a 20-layer residual."""

    def __init__(self, scale: int, depth: int = 20, channels: int = 64):
        super().__init__()
        self.scale = scale
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(True)]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = he_init(nn.Sequential(*layers), zero=layers[-1])  # starts as bicubic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = imresize(x, self.scale)
        return up + self.body(up)
