"""Parameters and FLOPs of a network, per part, with ``torch.utils.flop_counter``.

FLOPs count a multiply-add as 2. The flop counter of torch 2.13 does not count the
CPU kernel behind ``scaled_dot_product_attention``, so its formula is registered here
(2 N M d for Q K^T plus 2 N M d_v for the weighted sum).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
