"""The AMMS architecture drawn from its module tree, each part coloured by provenance.

Notebook 04 shows the figure. The boxes are the network's own named children
(``net.named_children()`` and those of one AMMS module, one MSFF, one LS_AM and one
AM), so the drawing follows the code; ``PROVENANCE`` says, per module path, whether
the paper's text fixes the part's form, only names the part, or says nothing of it
(this suite's reconstruction), with a short note drawn in the box.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from amms_lib.amms import AMMSNet
from amms_lib.profile import count_parameters

FIXED, NAMED = "fixed by the paper's text", "named, form reconstructed"
OURS = "reconstructed"
COLOURS = {FIXED: "#b7e4c7", NAMED: "#fde2a7", OURS: "#f4a6a6"}
# where each child's form comes from (key: the module's path in one AMMSNet)
PROVENANCE = {
    "sub_mean": (FIXED, "Sec. 4.2: DIV2K mean subtracted"),
    "head": (NAMED, "'a convolution layer'; 3x3 ours"),
    "sf": (FIXED, "'several 1x1 convs + local residual'"),
    "df": (FIXED, "AMMS modules; how many ours"),
    "df_conv": (OURS, "conv + global residual"),
    "sf_tail": (NAMED, "'correct the feature in the tail'"),
    "re": (NAMED, "'reconstruction'; sub-pixel ours"),
    "add_mean": (OURS, "mean added back"),
    "df.0.msff1": (FIXED, "Sec. 2.3.1, first MSFF"),
    "df.0.msff2": (FIXED, "second MSFF; order from Fig. 1"),
    "df.0.ls_am": (FIXED, "Sec. 2.3.2"),
    "df.0.msff1.branches": (FIXED, "1x1, 3x3, 5x5 + ReLU"),
    "df.0.msff1.fuse": (OURS, "concat + 1x1, residual"),
    "df.0.ls_am.ams": (FIXED, "M attention modules"),
    "df.0.ls_am.conv": (OURS, "conv before the long skip"),
    "df.0.ls_am.ams.0.body": (OURS, "the AM's conv body"),
    "df.0.ls_am.ams.0.nl": (FIXED, "non-local (Wang et al.)"),
    "df.0.ls_am.ams.0.so": (FIXED, "second order (SAN's SOCA)"),
    "df.0.ls_am.ams.0.fuse": (NAMED, "'fuse': concat + 1x1 ours"),
}
# rows: (title, parent's path, children side by side in parallel fusion, skip)
ROWS = [("AMMSNet", "", (), "global residual: SF block -> + after DF conv"),
        ("one AMMS module (net.df[0])", "df.0", (), None),
        ("one MSFF (net.df[0].msff1)", "df.0.msff1", (), "local residual"),
        ("LS_AM (net.df[0].ls_am)", "df.0.ls_am", (), "long skip connection"),
        ("one AM (net.df[0].ls_am.ams[0])", "df.0.ls_am.ams.0", ("nl", "so"),
         "local residual")]


def short(module: torch.nn.Module) -> str:
    """A box's kind: ``conv3x3`` for a convolution, else the class name."""
    if isinstance(module, torch.nn.Conv2d):
        return f"conv{module.kernel_size[0]}x{module.kernel_size[1]}"
    return type(module).__name__


def box_label(path: str, module: torch.nn.Module) -> str:
    """Name, kind (a Sequential lists its parts) and parameters of one box."""
    name = path.rsplit(".", 1)[-1]
    kind = short(module)
    if isinstance(module, torch.nn.Sequential) and len(module):
        kinds = {type(m).__name__ for m in module}
        kind = (f"{len(module)} x {kinds.pop()}" if len(kinds) == 1 and len(module) > 1
                else "-".join(short(m) for m in module))
    n = count_parameters(module)
    return f"{name}\n{kind}\n{n / 1e3:,.1f}k params" if n else f"{name}\n{kind}"


def draw_architecture(net: AMMSNet):
    """One row of boxes per entry of ``ROWS``, coloured by ``PROVENANCE``, from the
    network's own module tree. Returns (figure, the PROVENANCE keys drawn)."""
    fig, axes = plt.subplots(len(ROWS), 1, figsize=(14, 2.6 * len(ROWS)),
                             layout="constrained")
    drawn = []
    for ax, (title, prefix, parallel, skip) in zip(axes, ROWS):
        parent = net.get_submodule(prefix) if prefix else net
        children = list(parent.named_children())
        if isinstance(parent, AMMSNet):  # data-flow order, not definition order
            order = ["sub_mean", "head", "sf", "df", "df_conv", "sf_tail", "re", "add_mean"]
            children = sorted(children, key=lambda c: order.index(c[0]))
        columns = []  # children side by side; parallel ones share a column
        for name, child in children:
            stack = name in parallel and net.cfg.fusion == "parallel"  # NL and SO
            if stack and columns and columns[-1][0][0] in parallel:
                columns[-1].append((name, child))
            elif name == "branches":
                columns.append([(f"{name}.{i}", b) for i, b in enumerate(child)])
            else:
                columns.append([(name, child)])
        for x, column in enumerate(columns):
            for k, (name, child) in enumerate(column):
                path = f"{prefix}.{name}" if prefix else name
                key = path if path in PROVENANCE else path.rsplit(".", 1)[0]
                source, note = PROVENANCE[key]
                drawn.append(key)
                y = ((len(column) - 1) / 2 - k) * 1.15
                ax.text(x, y, box_label(path, child) + f"\n{note}", ha="center",
                        va="center", fontsize=7.5,
                        bbox=dict(boxstyle="round", fc=COLOURS[source], ec="gray"))
            if x:
                ax.annotate("", (x - 0.42, 0), (x - 0.58, 0),
                            arrowprops=dict(arrowstyle="->", color="gray"))
        if skip:
            ax.annotate(skip, (len(columns) - 0.5, -1.9), (-0.5, -1.9), fontsize=8,
                        va="center", color="tab:blue",
                        arrowprops=dict(arrowstyle="->", color="tab:blue"))
        ax.set(xlim=(-0.6, 7 - 0.4), ylim=(-2.1, 1.8), title=title)
        ax.title.set_fontsize(10)
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="gray") for c in COLOURS.values()]
    fig.legend(handles, COLOURS, loc="outside lower center", fontsize=9, ncols=3)
    fig.suptitle(f"AMMS as built by amms_lib: {net.cfg.n_amms} AMMS modules, "
                 f"M = {net.cfg.n_am}, {net.cfg.channels} channels, x{net.scale}, "
                 f"fusion={net.cfg.fusion!r}")
    return fig, drawn
