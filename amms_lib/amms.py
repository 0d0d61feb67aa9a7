"""The AMMS network: shallow features (SF), deep features (DF), reconstruction (RE).

Paper section 3 and Figures 1-5::

    LR -> MeanShift(-) -> conv3x3 -> SF block ---------------------+
                                         |                         |  global residual
                                         +-> AMMS x n_amms -> conv3x3 -(+)-> Upsampler
                                                   -> conv3x3 -> MeanShift(+) -> SR

    AMMS  = MSFF -> MSFF -> LS_AM
    LS_AM = AM x M -> conv3x3, plus a long skip from its input
    AM    = body (conv3x3-ReLU-conv3x3) feeding a non-local path and a second-order path,
            fused (parallel: concat + 1x1; or sequential: NL then SO), plus a local residual

Where the paper is silent we choose, and every choice is an argument of ``AMMSConfig``:
the width (64), the number of AMMS modules (4), M (2), the SF block (two 1x1 convs), the
order inside AMMS, and how AM fuses its two attentions. The ablation switches
``non_local``, ``second_order`` and ``multiscale`` replace a component by its neutral
counterpart: no non-local block (identity), no channel attention (gate of one), and a
single 3x3 conv instead of the 1x1/3x3/5x5 fusion. Their controls and fixes
(``benchmarks/ideas_cpu.py`` measures them) are options too: ``single_scale="matched"``
(one 3x3 branch with MSFF's parameter count), ``so_mode`` ("san", "normalised",
"constant") and ``nl_attention`` ("dot", "cosine", "context").

Initial weights are a function of the global seed and each layer's name
(``weight_init.reset_by_name``): two variants built after the same ``torch.manual_seed``
start from identical weights in every layer they share, so a comparison of variants is
paired in its weights as well as in its patches.

Images go in and out as float RGB in [0, 1]; the DIV2K mean is subtracted on the way in
and added back on the way out (buffers, so it never trains).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from amms_lib.errors import AmmsError
from amms_lib.multiscale import MultiScaleFusion, SingleScaleConv, matched_hidden
from amms_lib.non_local import ContextBlock, NonLocalBlock
from amms_lib.scales import check_scale
from amms_lib.second_order import MODES as SO_FORMULAS
from amms_lib.second_order import ConstantChannelGate, SecondOrderChannelAttention
from amms_lib.weight_init import reset_by_name

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # RGB mean of DIV2K train, on [0, 1]
NL_ATTENTION = ("dot", "cosine", "context")
SO_MODES = (*SO_FORMULAS, "constant")


@dataclass
class AMMSConfig:
    """Hyper-parameters of AMMSNet; the defaults are this suite's choices."""

    scale: int = 2
    channels: int = 64  # feature width everywhere
    n_amms: int = 4  # AMMS modules in the deep-feature part
    n_am: int = 2  # M: attention modules per LS_AM
    sf_layers: int = 2  # 1x1 convs in the SF block
    sf_tail: bool = False  # a second SF block after DF ("correct the feature in the tail")
    nl_reduction: int = 2  # non-local theta/phi/g width = channels / nl_reduction
    nl_mode: str = "full"  # full (memory-efficient), naive or region
    nl_region: int = 2  # regions per side when nl_mode == "region"
    so_reduction: int = 16  # second-order MLP: channels -> channels / 16 -> channels
    so_iters: int = 5  # Newton-Schulz iterations
    fusion: str = "parallel"  # how AM fuses the two attentions: parallel | sequential
    non_local: bool = True  # ablation switches
    second_order: bool = True
    multiscale: bool = True
    nl_attention: str = "dot"  # dot (Wang et al.) | cosine (selective) | context (GCNet control)
    so_mode: str = "san"  # san (SAN's formula) | normalised (able to learn) | constant (control)
    single_scale: str = "plain"  # without multi-scale: plain 3x3 | matched (MSFF's parameters)

    @staticmethod
    def small_kwargs() -> dict:
        """Overrides of the compact configuration of the lessons and quick CPU runs (chosen by
        an 8-minute study on Set5, where the most steps per minute won). The shipped weights
        are the winner of ``benchmarks/config_study.py`` on the held-out split at 1.5 hours of
        2 cores: 48 channels (their ``model_kwargs`` say so)."""
        return dict(channels=32, n_amms=2, n_am=1)

    @staticmethod
    def tiny_kwargs() -> dict:
        """The smallest AMMS with every part (one AMMS module, one AM, 8 channels): for
        tests and dry runs, where only shapes and code paths matter."""
        return dict(channels=8, n_amms=1, n_am=1, so_reduction=4)

    @classmethod
    def label(cls, kwargs: dict) -> str:
        """A short name for a configuration (a checkpoint's ``model_kwargs``), for legends:
        ``"AMMS 32 ch, 2 modules, M=1"``."""
        c = cls(**{k: v for k, v in kwargs.items() if k != "scale"})
        return f"AMMS {c.channels} ch, {c.n_amms} modules, M={c.n_am}"

    @classmethod
    def small(cls, scale: int = 2) -> "AMMSConfig":
        """The compact configuration for CPU training; the defaults stay paper-sized."""
        return cls(scale=scale, **cls.small_kwargs())

    def __post_init__(self):
        check_scale(self.scale)
        choices = {"fusion": ("parallel", "sequential"), "nl_attention": NL_ATTENTION,
                   "so_mode": SO_MODES, "single_scale": ("plain", "matched")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise AmmsError(f"{name} must be one of {', '.join(allowed)}, "
                                f"got {getattr(self, name)!r}")
        for name in ("channels", "n_amms", "n_am", "sf_layers"):
            if getattr(self, name) < 1:
                raise AmmsError(f"{name} must be >= 1, got {getattr(self, name)}")


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class MeanShift(nn.Module):
    """Subtract (sign=-1) or add (sign=+1) the DIV2K mean; a buffer, never trained."""

    def __init__(self, sign: int, mean=DIV2K_MEAN):
        super().__init__()
        self.sign = sign
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sign * self.mean.to(x.dtype)


class SFBlock(nn.Module):
    """Shallow-feature block: ``layers`` 1x1 convs (ReLU between) + local residual."""

    def __init__(self, channels: int, layers: int = 2):
        super().__init__()
        body = []
        for i in range(layers):
            body.append(nn.Conv2d(channels, channels, 1))
            if i < layers - 1:
                body.append(nn.ReLU(True))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def non_local_block(cfg: AMMSConfig) -> nn.Module:
    """The spatial attention of an AM: ``cfg.nl_attention`` picks the kind."""
    c = cfg.channels
    if cfg.nl_attention == "context":
        return ContextBlock(c, cfg.nl_reduction)
    return NonLocalBlock(c, cfg.nl_reduction, cfg.nl_mode, cfg.nl_region, cfg.nl_attention)


def second_order_block(cfg: AMMSConfig) -> nn.Module:
    """The channel attention of an AM: ``cfg.so_mode`` picks the formula (or the control)."""
    if cfg.so_mode == "constant":
        return ConstantChannelGate(cfg.channels)
    return SecondOrderChannelAttention(cfg.channels, cfg.so_reduction, cfg.so_iters,
                                       cfg.so_mode)


class AttentionModule(nn.Module):
    """AM: conv body, then non-local and second-order attention fused, plus residual."""

    def __init__(self, cfg: AMMSConfig):
        super().__init__()
        c = cfg.channels
        self.fusion = cfg.fusion
        self.body = nn.Sequential(conv3x3(c, c), nn.ReLU(True), conv3x3(c, c))
        self.nl = non_local_block(cfg) if cfg.non_local else nn.Identity()
        self.so = second_order_block(cfg) if cfg.second_order else nn.Identity()
        self.fuse = nn.Conv2d(2 * c, c, 1) if cfg.fusion == "parallel" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        if self.fuse is None:  # sequential: attend in space, then re-weight channels
            return x + self.so(self.nl(f))
        both = torch.cat([self.nl(f), self.so(f)], dim=1)  # (B, 2C, H, W)
        return x + self.fuse(both)  # (B, 2C, H, W) -> (B, C, H, W)


class LSAM(nn.Module):
    """LS_AM: M attention modules and a conv, with a long skip connection."""

    def __init__(self, cfg: AMMSConfig):
        super().__init__()
        self.ams = nn.Sequential(*(AttentionModule(cfg) for _ in range(cfg.n_am)))
        self.conv = conv3x3(cfg.channels, cfg.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.ams(x))


class AMMSModule(nn.Module):
    """AMMS: two multi-scale fusion modules, then LS_AM."""

    def __init__(self, cfg: AMMSConfig):
        super().__init__()
        c = cfg.channels
        if cfg.multiscale:
            self.msff1, self.msff2 = MultiScaleFusion(c), MultiScaleFusion(c)
        else:
            hidden = matched_hidden(c) if cfg.single_scale == "matched" else 0
            self.msff1, self.msff2 = SingleScaleConv(c, hidden), SingleScaleConv(c, hidden)
        self.ls_am = LSAM(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls_am(self.msff2(self.msff1(x)))


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: conv to s^2 C channels + PixelShuffle; x4 is two x2 steps."""

    def __init__(self, scale: int, channels: int):
        steps = [2, 2] if scale == 4 else [scale]
        layers = []
        for s in steps:
            layers += [conv3x3(channels, channels * s * s), nn.PixelShuffle(s)]
        super().__init__(*layers)


class AMMSNet(nn.Module):
    """The full network. ``forward``: (B, 3, h, w) in [0, 1] -> (B, 3, s*h, s*w)."""

    def __init__(self, cfg: AMMSConfig | None = None, **overrides):
        super().__init__()
        cfg = AMMSConfig(**{**asdict(cfg or AMMSConfig()), **overrides})
        base = int(torch.randint(0, 2**62, ()))  # one draw: the same for every variant
        self.cfg, self.scale = cfg, cfg.scale
        c = cfg.channels
        self.sub_mean, self.add_mean = MeanShift(-1), MeanShift(+1)
        self.head = conv3x3(3, c)
        self.sf = SFBlock(c, cfg.sf_layers)
        self.df = nn.Sequential(*(AMMSModule(cfg) for _ in range(cfg.n_amms)))
        self.df_conv = conv3x3(c, c)
        # Sec. 2.2 says the SF block also corrects "the feature in the tail of the network",
        # but its equations (I_SF = f_SF(I_LR), I_DF = f_AMMS(I_SF)) have no second block;
        # off by default, as the equations and the shipped weights have it
        self.sf_tail = SFBlock(c, cfg.sf_layers) if cfg.sf_tail else None
        self.re = nn.Sequential(Upsampler(cfg.scale, c), conv3x3(c, 3))
        reset_by_name(self, base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise AmmsError(f"AMMSNet expects (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        shallow = self.sf(self.head(self.sub_mean(x)))  # (B, 3, h, w) -> (B, C, h, w)
        deep = shallow + self.df_conv(self.df(shallow))  # global residual
        deep = deep if self.sf_tail is None else self.sf_tail(deep)
        return self.add_mean(self.re(deep))  # (B, C, h, w) -> (B, 3, s*h, s*w)
