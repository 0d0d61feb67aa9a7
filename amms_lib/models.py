"""Every network of the suite by name: AMMS and the paper's comparison models.

All map (B, 3, h, w) RGB in [0, 1] to (B, 3, s*h, s*w), so training, the benchmark and
the upscaling tool treat them alike.
"""
from __future__ import annotations

from torch import nn

from amms_lib.amms import AMMSNet
from amms_lib.errors import AmmsError
from amms_lib.lapsrn import LapSRN
from amms_lib.memnet import MemNet
from amms_lib.scales import check_scale
from amms_lib.srcnn import SRCNN
from amms_lib.vdsr import VDSR

MODELS = {"amms": AMMSNet, "srcnn": SRCNN, "vdsr": VDSR, "lapsrn": LapSRN, "memnet": MemNet}
METHODS = ("bicubic", *MODELS)  # what the benchmark and the comparison can run


def build_model(name: str, scale: int, **kwargs) -> nn.Module:
    """``build_model("amms", 4, channels=32)``: keyword arguments go to the constructor."""
    if name not in MODELS:
        raise AmmsError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    check_scale(scale)
    try:
        return MODELS[name](scale=scale, **kwargs)
    except TypeError as exc:
        raise AmmsError(f"bad option for model {name!r}: {exc}") from None
