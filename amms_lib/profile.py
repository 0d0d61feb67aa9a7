"""Parameters and FLOPs of a network, per part, with ``torch.utils.flop_counter``.

FLOPs count a multiply-add as 2. The flop counter of torch 2.13 does not count the
CPU kernel behind ``scaled_dot_product_attention``, so its formula is registered here
(2 N M d for Q K^T plus 2 N M d_v for the weighted sum).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from amms_lib.non_local import NonLocalBlock
from amms_lib.second_order import SecondOrderChannelAttention


def _sdpa_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    *batch, n, d = q_shape
    m, dv = k_shape[-2], v_shape[-1]
    b = 1
    for x in batch:
        b *= x
    return 2 * b * n * m * (d + dv)


_SDPA_OPS = [getattr(torch.ops.aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu",
) if hasattr(torch.ops.aten, name)]


@torch.no_grad()
def module_inputs(model: nn.Module, x: torch.Tensor, kind: type) -> list[torch.Tensor]:
    """What every module of type ``kind`` in ``model`` receives on input ``x``: one
    forward pass with hooks (removed afterwards); tensors in module order."""
    caught: dict[int, torch.Tensor] = {}
    blocks = [m for m in model.modules() if isinstance(m, kind)]
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: caught.__setitem__(i, inp[0]))
             for i, m in enumerate(blocks)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return [caught[i] for i in range(len(blocks))]


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (buffers such as the mean shift are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def flops_by_part(model: nn.Module, lr_shape: tuple[int, int] = (48, 48),
                  parts: list[str] | None = None) -> dict[str, int]:
    """Forward FLOPs for one (1, 3, *lr_shape) input: ``{"total": ..., part: ...}``.

    ``parts`` are names of direct children (default: all of them).
    """
    x = torch.rand(1, 3, *lr_shape)
    counter = FlopCounterMode(display=False, depth=2,
                              custom_mapping={op: _sdpa_flops for op in _SDPA_OPS})
    with torch.no_grad(), counter:
        model(x)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    parts = parts or [name for name, _ in model.named_children()]
    out = {"total": sum(counts.get("Global", {}).values())}
    for name in parts:
        out[name] = sum(counts.get(f"{root}.{name}", {}).values())
    return out


def summary(model: nn.Module, lr_shape: tuple[int, int] = (48, 48)) -> list[dict]:
    """One row per direct child that has parameters or FLOPs, then the total."""
    flops = flops_by_part(model, lr_shape)
    rows = [{"part": name, "params": count_parameters(child), "gflops": flops[name] / 1e9}
            for name, child in model.named_children()
            if count_parameters(child) or flops[name]]
    rows.append({"part": "total", "params": count_parameters(model),
                 "gflops": flops["total"] / 1e9})
    return rows


# -- FLOPs by operator type ---------------------------------------------------------

OPERATOR_TYPES = (
    "non-local attention",  # Q K^T and the weighted sum A V (grows as N^2)
    "non-local 1x1",  # theta, phi, g and W of the non-local blocks
    "SOCA",  # covariance, Newton-Schulz and the gate MLP
    "5x5 conv",
    "3x3 conv",  # every 3x3 conv but the upsampler's
    "1x1 conv",  # every 1x1 conv outside the non-local and SOCA blocks
    "upsampler",  # the conv(s) before PixelShuffle
    "other",
)


def _operator_type(module: nn.Module, parent: nn.Module | None) -> str | None:
    """The bucket of a module's *own* FLOPs (those not inside one of its children)."""
    if isinstance(module, NonLocalBlock):
        return "non-local attention"
    if isinstance(module, SecondOrderChannelAttention):
        return "SOCA"
    if isinstance(module, nn.Conv2d):
        if isinstance(parent, NonLocalBlock):
            return "non-local 1x1"
        k = module.kernel_size
        by_size = {(5, 5): "5x5 conv", (3, 3): "3x3 conv", (1, 1): "1x1 conv"}
        return by_size.get(k, "other")
    return None  # containers: their own FLOPs (if any) go to "other"


def flops_by_operator(model: nn.Module, lr_shape: tuple[int, int] = (48, 48),
                      fake: bool = True) -> dict[str, int]:
    """Forward FLOPs of one (1, 3, *lr_shape) input split by operator type.

    Returns ``{"total": ..., **{t: ... for t in OPERATOR_TYPES}}``; the types add up
    to the total. Each module's own FLOPs (its count minus its children's) go to its
    type: a non-local block's own FLOPs are its attention products, everything inside
    a SOCA block is "SOCA", a conv goes by its kernel size, and convs inside an
    ``Upsampler`` (any module of that class name) count as "upsampler". With
    ``fake=True`` (default) the pass runs on fake tensors (shapes only, no arithmetic),
    so a 200x200 input costs a second, not minutes.
    """
    counter = FlopCounterMode(display=False,
                              custom_mapping={op: _sdpa_flops for op in _SDPA_OPS})
    device = next(model.parameters()).device
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else nullcontext()
    with torch.no_grad(), fake_mode, counter:
        model(torch.zeros(1, 3, *lr_shape, device=device))
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    out = dict.fromkeys(OPERATOR_TYPES, 0)
    out["total"] = counts.get("Global", 0)
    parents = {name: parent for parent_name, parent in model.named_modules()
               for name in (f"{parent_name}.{c}" if parent_name else c
                            for c, _ in parent.named_children())}
    upsampler = {name for name, m in model.named_modules()
                 if type(m).__name__ == "Upsampler"}
    owned = {}  # module name -> FLOPs of the module minus those of its children
    for name, module in model.named_modules():
        key = f"{root}.{name}" if name else root
        total = counts.get(key, 0) if name else out["total"]
        owned[name] = total - sum(counts.get(f"{key}.{c}", 0)
                                  for c, _ in module.named_children())
    soca = {name for name, m in model.named_modules()
            if isinstance(m, SecondOrderChannelAttention)}
    for name, module in model.named_modules():
        if not owned[name]:
            continue
        if _inside(name, soca):  # the gate MLP of a SOCA block is SOCA too
            kind = "SOCA"
        elif _inside(name, upsampler) and isinstance(module, nn.Conv2d):
            kind = "upsampler"
        else:
            kind = _operator_type(module, parents.get(name))
        out[kind or "other"] += owned[name]
    return out


def _inside(name: str, owners: set[str]) -> bool:
    """Whether module ``name`` is a descendant of one of ``owners``."""
    return any(name.startswith(owner + ".") for owner in owners)
