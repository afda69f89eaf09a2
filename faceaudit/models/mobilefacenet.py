"""MobileFaceNet, state_dict-compatible with InsightFace arcface_torch ``get_model("mbf")``.

``get_model("mbf")`` builds ``get_mbf(fp16=False, num_features=512)``, whose
defaults are ``blocks=(1, 4, 6, 2)`` and ``scale=2`` (stem width 128). Our
module tree reproduces its key names (``layers.N...``, ``conv_sep``,
``features.layers...``), shapes and buffers, so its ``backbone.pth`` loads with
``strict=True``; the code is our own.

Building blocks (every BatchNorm has eps=1e-5, every PReLU one slope per channel):

- ``ConvBN(act=True)``: ``layers`` = Sequential(conv, BatchNorm2d, PReLU)
- ``ConvBN(act=False)``: ``layers`` = Sequential(conv, BatchNorm2d) (linear bottleneck)
- ``ConvBN(folded=True)``: the BatchNorm folded into the conv: Sequential(conv with bias[, PReLU]),
  as in exported inference graphs (``faceaudit.models.arcface_mbf`` builds its trunk so)
- ``Bottleneck``: ``layers`` = 1x1 expand (PReLU) -> kxk depthwise (PReLU) -> 1x1 project
  (linear), with an identity shortcut when ``residual``
- ``BottleneckStack``: ``layers`` = Sequential of residual bottlenecks
- ``GDCHead``: global depthwise 7x7 conv -> flatten -> Linear (no bias) -> BatchNorm1d

Input 3x112x112 -> 56 (stem) -> 28 -> 14 -> 7 -> 512x7x7 -> embedding.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from faceaudit.models.registry import ModelSpec, register


class ConvBN(nn.Module):
    """Conv2d (no bias) + BatchNorm2d, followed by a per-channel PReLU when ``act``.

    ``folded``: the BatchNorm is folded into the conv, which then has a bias and no BatchNorm follows.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, act: bool = True, folded: bool = False):
        super().__init__()
        parts: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=folded)]
        if not folded:
            parts.append(nn.BatchNorm2d(out_ch))
        if act:
            parts.append(nn.PReLU(out_ch))
        self.layers = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Bottleneck(nn.Module):
    """Inverted bottleneck: expand to ``hidden`` channels, depthwise conv, project to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int, stride: int = 1, residual: bool = False,
                 folded: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBN(in_ch, hidden, 1, folded=folded),
            ConvBN(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, folded=folded),
            ConvBN(hidden, out_ch, 1, act=False, folded=folded),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class BottleneckStack(nn.Module):
    """``n`` residual stride-1 bottlenecks at constant width."""

    def __init__(self, channels: int, n: int, hidden: int, folded: bool = False):
        super().__init__()
        self.layers = nn.Sequential(*[Bottleneck(channels, channels, hidden, residual=True, folded=folded)
                                      for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDCHead(nn.Module):
    """Global depthwise convolution over the 7x7 map, then a linear embedding and BatchNorm1d."""

    def __init__(self, num_features: int, channels: int = 512):
        super().__init__()
        self.layers = nn.Sequential(
            ConvBN(channels, channels, 7, groups=channels, act=False),
            nn.Flatten(),
            nn.Linear(channels, num_features, bias=False),
            nn.BatchNorm1d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet as trained by arcface_torch.

    Args:
        num_features: embedding size.
        blocks: residual bottlenecks in the four stacks; with ``blocks[0] == 1``
            the second stem layer is a grouped 3x3 ConvBN (groups=64), as in "mbf".
        scale: width multiplier (stem has ``64 * scale`` channels).
        folded: every BatchNorm2d of the trunk folded into its conv (see :class:`ConvBN`).
        head: what turns the 512x7x7 map into the embedding (default: :class:`GDCHead`).

    arcface_torch's ``fp16`` flag (training autocast) changes no weights; AMP is the caller's.
    """

    def __init__(self, num_features: int = 512, blocks: Sequence[int] = (1, 4, 6, 2), scale: int = 2,
                 folded: bool = False, head: nn.Module | None = None):
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"MobileFaceNet needs four block counts, got {tuple(blocks)}")
        c1, c2 = 64 * scale, 128 * scale
        if blocks[0] == 1:
            second: nn.Module = ConvBN(c1, c1, 3, padding=1, groups=64, folded=folded)
        else:
            second = BottleneckStack(c1, blocks[0], hidden=128, folded=folded)
        self.layers = nn.ModuleList([
            ConvBN(3, c1, 3, stride=2, padding=1, folded=folded),
            second,
            Bottleneck(c1, c1, hidden=128, stride=2, folded=folded),
            BottleneckStack(c1, blocks[1], hidden=128, folded=folded),
            Bottleneck(c1, c2, hidden=256, stride=2, folded=folded),
            BottleneckStack(c2, blocks[2], hidden=256, folded=folded),
            Bottleneck(c2, c2, hidden=512, stride=2, folded=folded),
            BottleneckStack(c2, blocks[3], hidden=256, folded=folded),
        ])
        self.conv_sep = ConvBN(c2, 512, 1, folded=folded)
        self.features = head if head is not None else GDCHead(num_features)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.conv_sep.layers[0].weight.is_meta:  # built on the meta device: nothing to initialise
            return
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


def mobilefacenet(num_features: int = 512) -> MobileFaceNet:
    """arcface_torch's ``get_model("mbf")``: blocks (1, 4, 6, 2), scale 2."""
    return MobileFaceNet(num_features=num_features, blocks=(1, 4, 6, 2), scale=2)


register(ModelSpec(
    name="mobilefacenet",
    build=mobilefacenet,
    weights_file="ArcFace_MBF_MS1MV3.pth",
    description='MobileFaceNet (ArcFace, InsightFace arcface_torch get_model("mbf"): blocks 1-4-6-2, scale 2), 512-d',
    download='download backbone.pth from the InsightFace model zoo (arcface_torch, MS1MV3 "mobilefacenet-0.45G")',
))
