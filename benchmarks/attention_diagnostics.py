"""What the attentions of a trained AMMS do: how peaked each non-local block is, and how
much each second-order gate depends on the image, with the terms that explain it.

    python benchmarks/attention_diagnostics.py CKPT [CKPT ...] [--images 6]
        [--json benchmarks/results/attention_diagnostics.json] [--overwrite]

On the first ``--images`` images of the held-out split (``data.HELDOUT``, LR at x2), with
forward hooks on every ``NonLocalBlock`` and ``SecondOrderChannelAttention``:

- non-local: the effective number of positions a query attends to, ``1 / sum_j w_j^2``,
  as a fraction of the map (1: uniform weights, a global average; near 0: a few pixels),
  and the spread (std) of its logits, averaged over 64 query pixels per image;
- second-order: the gates ``w`` per image and channel; their spread across images next to
  their spread across channels; and why, term by term: how much the descriptor ``z``
  varies across images relative to its size, and ``|W_D z|`` next to the hidden bias
  ``|b_D|`` (when the bias dominates, the hidden layer barely sees the image).

An existing results file is changed only with ``--overwrite``: it keeps the earlier reports
of checkpoints not named this time, each with the command that made it and the images it was
computed on; a checkpoint named again replaces its report.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from amms_lib import data
from amms_lib.checkpoint import load_model
from amms_lib.non_local import NonLocalBlock
from amms_lib.runtime import ArgumentParser, ResultsFile, cli
from amms_lib.second_order import SecondOrderChannelAttention
from amms_lib.studies import measurement_kind, stamp

# "images": older files' one line for all reports (``migrate`` moves it into each report)
KIND = measurement_kind("attention_diagnostics", {"command", "note", "images"},
                        {"checkpoint", "non_local", "second_order"}, rows="reports")


def non_local_stats(block: NonLocalBlock, x: torch.Tensor, queries: int = 64) -> dict:
    """Effective positions (fraction of the map) and logit std, over random queries."""
    _, _, h, w = x.shape
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, h * w, (queries,), generator=gen)
    with torch.no_grad():
        q = block.theta(x).flatten(2)[0]  # (d, N)
        k = block.phi(x).flatten(2)[0]  # (d, N)
        logits = q[:, picks].T @ k  # (queries, N)
        weights = logits.double().softmax(dim=1)
    eff = 1 / (weights**2).sum(dim=1)  # (queries,)
    return {"effective_fraction": float((eff / (h * w)).mean()),
            "logit_std": float(logits.std(dim=1).mean()),
            "out_weight": float(block.out.weight.abs().mean())}


def diagnose(path: str, n_images: int) -> dict:
    net, ckpt = load_model(path, model="amms", scale=2)
    nls = [m for m in net.modules() if isinstance(m, NonLocalBlock)]
    socas = [m for m in net.modules() if isinstance(m, SecondOrderChannelAttention)]
    caught: dict = {}
    named = [(("nl", i), m) for i, m in enumerate(nls)]
    named += [(("so", i), m) for i, m in enumerate(socas)]
    hooks = [m.register_forward_hook(lambda mod, inp, out, k=k: caught.__setitem__(k, inp[0]))
             for k, m in named]
    names = data.list_images(data.HELDOUT)[:n_images]
    nl_rows = [[] for _ in nls]
    gates, zs, wz = [[] for _ in socas], [[] for _ in socas], [[] for _ in socas]
    with torch.no_grad():
        for name in names:
            lr = data.load_pair(data.HELDOUT, name, 2).lr
            lr = np.stack([lr] * 3, -1) if lr.ndim == 2 else lr
            net(torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255))
            for i, block in enumerate(nls):
                nl_rows[i].append(non_local_stats(block, caught["nl", i]))
            for i, block in enumerate(socas):
                x = caught["so", i]
                z = block.descriptor(x)  # (1, C)
                gates[i].append(block.weights(x)[0])
                zs[i].append(z[0])
                wz[i].append(torch.nn.functional.conv2d(
                    z[:, :, None, None], block.mlp[0].weight).abs().mean().item())
    for h in hooks:
        h.remove()
    report = {"checkpoint": path, "model_kwargs": ckpt["model_kwargs"], "step": ckpt["step"],
              "images": names, "images_from": images_from(len(names)),
              "non_local": [], "second_order": []}
    for rows in nl_rows:
        report["non_local"].append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]})
    for i, block in enumerate(socas):
        g, z = torch.stack(gates[i]), torch.stack(zs[i])  # (images, C)
        report["second_order"].append({
            "hidden": block.mlp[0].out_channels,
            "gate_mean": float(g.mean()),
            "gate_spread_channels": float(g.std(dim=1).mean()),
            "gate_spread_images": float(g.std(dim=0).mean()),
            "z_mean_abs": float(z.abs().mean()),
            "z_relative_spread_images": float((z.std(dim=0) / z.abs().mean(dim=0)).mean()),
            "W_D_z": float(np.mean(wz[i])),
            "b_D": float(block.mlp[0].bias.detach().abs().mean()),
        })
    return report


def images_from(n: int) -> str:
    """Which images a report was computed on, in words (its ``images`` names them)."""
    return f"the first {n} of the held-out split, x2 LR"


def migrate(record: dict) -> dict:
    """A results file of before each report said which images it was computed on: the
    file's one ``images`` line (the last run's, which it had rewritten for every kept
    report) goes into each report that lacks its own; every number is kept."""
    record = dict(record)
    said = record.pop("images", None)
    if said is not None:
        record["reports"] = [{**r, "images_from": r.get("images_from", said)}
                             for r in record.get("reports", [])]
    return record


def show(r: dict) -> None:
    print(f"\n{r['checkpoint']} (step {r['step']}, {r['model_kwargs']})")
    for i, s in enumerate(r["non_local"]):
        print(f"  non-local {i}: attends to {s['effective_fraction']:.1%} of the map "
              f"(effective positions), logit std {s['logit_std']:.3f}")
    for i, s in enumerate(r["second_order"]):
        print(f"  SOCA {i} ({s['hidden']} hidden): gates {s['gate_mean']:.3f}, spread over "
              f"channels {s['gate_spread_channels']:.3f}, over images "
              f"{s['gate_spread_images']:.2e}; z varies {s['z_relative_spread_images']:.1%}"
              f" across images; |W_D z| {s['W_D_z']:.1e} vs |b_D| {s['b_D']:.3f}")


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--json", default="benchmarks/results/attention_diagnostics.json")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json update an existing file: the reports of the checkpoints "
                         "named are replaced, the others kept")
    args = ap.parse_args(argv)
    if args.images < 2:
        ap.error(f"--images {args.images}: a spread across images needs at least 2")
    return cli(lambda: run(args, argv))


def run(args, argv) -> int:
    """Diagnose each checkpoint, print its report and merge the reports into --json."""
    out = ResultsFile(args.json, KIND, args.overwrite)  # before any work
    torch.manual_seed(0)
    reports = [diagnose(p, args.images) for p in args.checkpoints]
    for r in reports:
        show(r)
    # earlier reports of other checkpoints stay (their files may be on another machine)
    before = migrate(out.earlier())
    named = {r["checkpoint"] for r in reports}
    kept = [r for r in before.get("reports", []) if r["checkpoint"] not in named]
    command = "python benchmarks/attention_diagnostics.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    for r in reports:
        r["command"] = command
    out.write(stamp({**before, "command": command, "reports": reports + kept}))
    print(out.said())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
