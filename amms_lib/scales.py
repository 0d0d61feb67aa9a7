"""The paper's upscaling factors and their check: owned here, below the networks, so that
building a network (``amms_lib.amms``, ``amms_lib.models``) needs no data or image code."""
from __future__ import annotations

from amms_lib.errors import AmmsError

SCALES = (2, 3, 4)


def check_scale(scale: int) -> int:
    """The paper's scales only: 2, 3 or 4."""
    if scale not in SCALES:
        raise AmmsError(f"scale {scale} is not supported; choose one of 2, 3, 4")
    return int(scale)
