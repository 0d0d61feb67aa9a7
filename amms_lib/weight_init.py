"""He et al. (ICCV 2015) initialisation, for the plain deep comparison networks.

VDSR and LapSRN initialise their convolutions this way (their papers cite He et al.).
PyTorch's default (uniform, ``a = sqrt(5)``: variance 1 / (3 fan_in)) makes each conv-ReLU
layer scale the signal's variance by 1/6, so a plain stack of 20 (VDSR) starts with its
deep layers silent (tests/test_network.py): at that init the equal-budget VDSR moved less than
0.005 dB from bicubic in 409 steps. MemNet, residual and without its BN, keeps the default.
"""
from __future__ import annotations

import math

from torch import nn


def he_init(module: nn.Module, negative_slope: float = 0.0,
            zero: nn.Conv2d | None = None) -> nn.Module:
    """Every ``nn.Conv2d`` in ``module``: normal weights of std gain / sqrt(fan_in), gain
    sqrt(2 / (1 + slope^2)) for a (leaky) ReLU after it, and bias 0 (transposed convs are
    left alone); ``zero``, the conv that outputs the residual image, starts at 0 instead
    (a deviation from the papers, for short budgets: the network starts as its
    interpolation, not as interpolation plus noise of the image's own size). Returns
    ``module``."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2 / (1 + negative_slope**2) / fan_in))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero is not None:
        nn.init.zeros_(zero.weight)
        nn.init.zeros_(zero.bias)
    return module
