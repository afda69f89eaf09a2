"""IResNet face backbones (ArcFace), state_dict-compatible with InsightFace arcface_torch.

The module names, parameter shapes and buffers follow InsightFace
``recognition/arcface_torch/backbones/iresnet.py`` exactly, so its model-zoo
``backbone.pth`` files load with ``strict=True``; the code is our own.

Layout (input 3x112x112, output ``num_features``)::

    conv1 3x3/1 (64) -> bn1 -> prelu
    layer1..layer4: stages of 64/128/256/512 channels; the first block of every
        stage halves the resolution (112 -> 56 -> 28 -> 14 -> 7) and has a
        ``downsample`` = Sequential(conv 1x1/2, BatchNorm2d)
    bn2 -> flatten (512*7*7) -> dropout -> fc -> features (BatchNorm1d, frozen gamma)

Each block is the "improved" pre-activation unit:
``bn1 -> conv1 3x3/1 -> bn2 -> prelu -> conv2 3x3/s -> bn3`` plus the shortcut.
Every BatchNorm uses eps=1e-5; every PReLU has one slope per channel.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from faceaudit.models.registry import ModelSpec, register

#: blocks per stage for each depth (InsightFace ``iresnet18`` ... ``iresnet200``)
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
STAGE_WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5


class IRBlock(nn.Module):
    """Improved residual unit; ``stride`` sits on the second convolution."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        # attribute order fixes the state_dict key order: bn1, conv1, bn2, prelu, conv2, bn3, downsample
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return residual + shortcut


def _stage(in_ch: int, out_ch: int, n_blocks: int) -> nn.Sequential:
    blocks = [IRBlock(in_ch, out_ch, stride=2)]
    blocks += [IRBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class IResNet(nn.Module):
    """IResNet for 112x112 faces.

    Args:
        blocks: number of units in each of the four stages.
        num_features: embedding size.
        dropout: dropout probability before ``fc`` (0 in InsightFace's configs).

    arcface_torch's ``fp16`` flag only wraps its training forward in autocast; it
    changes no weights, so it is left to the caller (the embedding pipeline's AMP).
    """

    feature_map = 7  # spatial size after the four stride-2 stages on a 112x112 input

    def __init__(self, blocks: Sequence[int], num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"IResNet needs four stages of >= 1 block, got {tuple(blocks)}")
        width = STAGE_WIDTHS[0]
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.prelu = nn.PReLU(width)
        self.layer1 = _stage(width, STAGE_WIDTHS[0], blocks[0])
        self.layer2 = _stage(STAGE_WIDTHS[0], STAGE_WIDTHS[1], blocks[1])
        self.layer3 = _stage(STAGE_WIDTHS[1], STAGE_WIDTHS[2], blocks[2])
        self.layer4 = _stage(STAGE_WIDTHS[2], STAGE_WIDTHS[3], blocks[3])
        self.bn2 = nn.BatchNorm2d(STAGE_WIDTHS[3], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(STAGE_WIDTHS[3] * self.feature_map ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        # the embedding BatchNorm keeps gamma at 1: a parameter (so it is saved), never trained
        self.features.weight.requires_grad_(False)
        if self.fc.weight.is_meta:  # built on the meta device to read its layout or to be loaded
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet(depth: int, num_features: int = 512, dropout: float = 0.0) -> IResNet:
    """The IResNet of ``depth`` (18, 34, 50, 100 or 200 layers)."""
    if depth not in DEPTHS:
        raise ValueError(f"no IResNet of depth {depth}; known depths: {sorted(DEPTHS)}")
    return IResNet(DEPTHS[depth], num_features=num_features, dropout=dropout)


def _register(depth: int) -> None:
    if depth in (18, 34, 50, 100):  # published in arcface_torch's model zoo
        weights_file = f"ArcFace_R{depth}_MS1MV3.pth"
        download = (f'download backbone.pth from the InsightFace model zoo (arcface_torch, folder '
                    f'"ms1mv3_arcface_r{depth}_fp16")')
    else:
        weights_file = f"ArcFace_R{depth}.pth"
        download = f'use the backbone.pth of an arcface_torch training of get_model("r{depth}")'
    register(ModelSpec(
        name=f"iresnet{depth}",
        build=lambda: iresnet(depth),
        weights_file=weights_file,
        description=f'IResNet-{depth} (ArcFace; InsightFace arcface_torch get_model("r{depth}")), 512-d',
        download=download,
    ))


for _depth in DEPTHS:
    _register(_depth)
del _depth
