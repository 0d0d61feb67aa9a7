"""Initialisations: He et al. (ICCV 2015) for the plain deep comparison networks, and
initial weights seeded by layer name (``reset_by_name``) for paired variants of AMMS.

VDSR and LapSRN initialise their convolutions this way (their papers cite He et al.).
PyTorch's default (uniform, ``a = sqrt(5)``: variance 1 / (3 fan_in)) makes each conv-ReLU
layer scale the signal's variance by 1/6, so a plain stack of 20 (VDSR) starts with its
deep layers silent (tests/test_network.py): at that init the equal-budget VDSR moved less than
0.005 dB from bicubic in 409 steps. MemNet, residual and without its BN, keeps the default.
"""
from __future__ import annotations

import math
import zlib

import torch
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


def reset_by_name(module: nn.Module, base: int) -> nn.Module:
    """Re-draw every layer's initial weights from a seed made of ``base`` and the layer's
    name (its ``reset_parameters``, as at construction), children before their parents (a
    block's own ``reset_parameters``, such as zeroing its output conv, comes last). Layers
    of the same name and shape then start equal in any two networks built from one
    ``base``, whatever else each holds: without it, an optional block built early shifts
    the random stream of every layer after it. The global RNG is left as it was."""
    named = [(n, m) for n, m in module.named_modules() if hasattr(m, "reset_parameters")]
    with torch.random.fork_rng(devices=[]):
        for name, m in reversed(named):  # named_modules lists parents first
            torch.manual_seed((base + 1_000_003 * zlib.crc32(name.encode())) % 2**63)
            m.reset_parameters()
    return module
