"""What the attentions of a trained AMMS learned: numbers for the question "is this idea
doing anything?", used by the studies (``benchmarks/ideas_cpu.py``) and notebooks 01/02.

- ``moved``: how far each attention's parameters went from their initial values
  (``||w - w0|| / ||w0||``; for tensors that start at zero, their RMS);
- ``attention_spread``: how many positions a query attends to, ``1 / sum_j w_j^2`` as a
  fraction of the map (1: uniform, a global average; near 0: a few pixels);
- ``gate_spread``: how much each channel gate varies across images against across channels
  (a gate that never varies across images is a constant, whatever its formula).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from amms_lib.non_local import ContextBlock, NonLocalBlock
from amms_lib.second_order import ConstantChannelGate, SecondOrderChannelAttention

SPATIAL = (NonLocalBlock, ContextBlock)
CHANNEL = (SecondOrderChannelAttention, ConstantChannelGate)


def moved(net: nn.Module, init: nn.Module, kinds=SPATIAL + CHANNEL) -> dict:
    """Per kind of attention block (class name): relative change of the parameters that
    started non-zero, and RMS of those that started at zero (both 0 at the start)."""
    start = dict(init.named_parameters())
    out: dict = {}
    for name, m in net.named_modules():
        if not isinstance(m, kinds):
            continue
        acc = out.setdefault(type(m).__name__, {"d2": 0.0, "w2": 0.0, "z2": 0.0, "zn": 0})
        for pname, p in m.named_parameters():
            w, w0 = p.detach().double(), start[f"{name}.{pname}"].detach().double()
            if torch.count_nonzero(w0) == 0:
                acc["z2"] += float((w ** 2).sum())
                acc["zn"] += w.numel()
            else:
                acc["d2"] += float(((w - w0) ** 2).sum())
                acc["w2"] += float((w0 ** 2).sum())
    return {k: {"relative_change": (a["d2"] / a["w2"]) ** 0.5 if a["w2"] else None,
                "zero_init_rms": (a["z2"] / a["zn"]) ** 0.5 if a["zn"] else None}
            for k, a in out.items()}


@torch.no_grad()
def attention_spread(block: nn.Module, x: torch.Tensor, queries: int = 64) -> float:
    """Mean effective share of positions attended to, on one map x (1, C, H, W): over
    ``queries`` random query pixels for a non-local block (its own logits, cosine or dot),
    the one pooling softmax for a context block."""
    n = x.shape[2] * x.shape[3]
    if isinstance(block, ContextBlock):
        w = block.pooling_weights(x).double()  # (1, N)
    else:
        q, k = block._embed(block.theta(x), block.phi(x))
        q, k = q.flatten(2)[0], k.flatten(2)[0]  # (c, N)
        picks = torch.randint(0, n, (queries,), generator=torch.Generator().manual_seed(0))
        w = (q[:, picks].T @ k).double().softmax(dim=1)  # (queries, N)
    return float((1 / (w ** 2).sum(dim=1)).mean() / n)


def gate_spread(gates: np.ndarray) -> dict:
    """Gates of one block, (images, C): their mean, their spread across images (std over
    images, averaged over channels) and across channels (std over channels, averaged over
    images), and the largest distance from 1 (the identity)."""
    return {"mean": float(gates.mean()),
            "across_images": float(gates.std(axis=0).mean()),
            "across_channels": float(gates.std(axis=1).mean()),
            "max_from_1": float(np.abs(gates - 1).max())}


@torch.no_grad()
def diagnose(net: nn.Module, init: nn.Module, images: list[torch.Tensor]) -> dict:
    """All three for one network: ``images`` are LR tensors (1, 3, h, w) in [0, 1]; the
    inputs each attention block sees are caught by forward hooks."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, args, out, n=name: seen.setdefault(n, []).append(
        args[0].detach())) for name, m in net.named_modules() if isinstance(m, SPATIAL + CHANNEL)]
    try:
        for lr in images:
            net(lr)
    finally:
        for h in hooks:
            h.remove()
    blocks = dict(net.named_modules())
    spread, gates = {}, {}
    for name, xs in seen.items():
        m = blocks[name]
        if isinstance(m, SPATIAL):
            spread[name] = float(np.mean([attention_spread(m, x) for x in xs]))
        else:
            g = torch.cat([m.weights(x) for x in xs]).double().numpy()  # (images, C)
            gates[name] = gate_spread(g)
    return {"moved": moved(net, init), "attention_spread": spread, "gates": gates}
