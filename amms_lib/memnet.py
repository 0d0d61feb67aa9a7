"""MemNet (Tai et al., ICCV 2017): memory blocks of recursive units and gate units.

FENet (one conv) -> ``n_blocks`` memory blocks -> one reconstruction conv per block,
residual to the bicubic input, and the final output is a learned weighted average of
the per-block reconstructions (multi-supervision). A memory block runs one residual
unit ``n_recursions`` times with shared weights (short-term memory) and fuses those
outputs with the outputs of all earlier blocks (long-term memory) by a 1x1 gate conv.
Published size: 6 blocks x 6 recursions, 64 channels (80 conv layers); the original
uses BN-ReLU-conv, this version drops BN (as EDSR argued for SR). Without BN it keeps
PyTorch's default init, not He et al.'s: with He's, the 36 un-normalised residual additions
start the output of a random 24x24 LR image at a standard deviation of 7e4 to 2e6 (three
seeds; 0.24 with the default; ``weight_init``).
"""
from __future__ import annotations

import torch
from torch import nn

from amms_lib.resize import imresize


def relu_conv(c: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, padding=k // 2))


class MemoryBlock(nn.Module):
    def __init__(self, channels: int, n_recursions: int, n_long: int):
        super().__init__()
        self.unit = nn.Sequential(relu_conv(channels), relu_conv(channels))  # shared weights
        self.n_recursions = n_recursions
        self.gate = nn.Sequential(  # 1x1 fusion of short- and long-term memory
            nn.ReLU(), nn.Conv2d(channels * (n_recursions + n_long), channels, 1))

    def forward(self, x: torch.Tensor, long_memory: list[torch.Tensor]) -> torch.Tensor:
        short, h = [], x
        for _ in range(self.n_recursions):
            h = h + self.unit(h)
            short.append(h)
        return self.gate(torch.cat(short + long_memory, dim=1))  # (B, (R+L)C, H, W) -> (B, C, H, W)


class MemNet(nn.Module):
    """(B, 3, h, w) LR -> (B, 3, s*h, s*w) through memory blocks on the bicubic image."""

    def __init__(self, scale: int, n_blocks: int = 6, n_recursions: int = 6,
                 channels: int = 64):
        super().__init__()
        self.scale = scale
        self.fenet = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            MemoryBlock(channels, n_recursions, n_long=i + 1) for i in range(n_blocks)
        )
        self.recon = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 3, 3, padding=1))
        self.mix = nn.Parameter(torch.full((n_blocks,), 1.0 / n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = imresize(x, self.scale)
        memory = [self.fenet(up)]
        outs = []
        for block in self.blocks:
            memory.append(block(memory[-1], list(memory)))
            outs.append(up + self.recon(memory[-1]))  # shared reconstruction net
        return sum(w * o for w, o in zip(self.mix, outs))
