"""IResNet backbones, insightface-compatible.

Module structure, ``state_dict`` key names and tensor shapes match
insightface ``recognition/arcface_torch/backbones/iresnet.py``, so its
``backbone.pth`` checkpoints load here with ``strict=True``. The forward pass is
the same computation in FP32; insightface's training-time ``fp16`` autocast
switch is left out on purpose (precision is the engines' business).

Each block is pre-activation: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride)
-> BN, plus the (optionally downsampled) identity. The head flattens the 7x7
map of the last stage, applies a fully connected layer and a BatchNorm1d
whose scale is fixed to 1 at init.
"""

from __future__ import annotations

import torch
from torch import nn

from arcface_lab.errors import InputError

__all__ = ["ARCH_LAYERS", "IBasicBlock", "IResNet", "build_iresnet"]

#: Blocks per stage for each architecture name.
ARCH_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}

_STAGE_WIDTHS = (64, 128, 256, 512)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """The improved residual block of IResNet (no activation after the sum)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet for 112x112 face crops, returning ``num_features``-d embeddings (not normalized)."""

    fc_scale = 7 * 7

    def __init__(
        self,
        layers: tuple[int, int, int, int] | list[int],
        dropout: float = 0.0,
        num_features: int = 512,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"IResNet: expected 4 stage depths >= 1, got {list(layers)}")
        self.layers_config = tuple(int(n) for n in layers)
        self.num_features = num_features
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(_STAGE_WIDTHS[0], layers[0])
        self.layer2 = self._make_layer(_STAGE_WIDTHS[1], layers[1])
        self.layer3 = self._make_layer(_STAGE_WIDTHS[2], layers[2])
        self.layer4 = self._make_layer(_STAGE_WIDTHS[3], layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        stage: list[nn.Module] = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        stage += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        x = self.fc(self.dropout(x))
        return self.features(x)


def build_iresnet(arch: str, num_features: int = 512) -> IResNet:
    """An untrained IResNet by name (``r18``, ``r34``, ``r50``, ``r100``, ``r200``)."""
    key = arch.lower().removeprefix("iresnet")
    key = key if key.startswith("r") else f"r{key}"
    try:
        layers = ARCH_LAYERS[key]
    except KeyError:
        raise InputError(
            f"unknown architecture {arch!r}: expected one of {', '.join(ARCH_LAYERS)}"
        ) from None
    return IResNet(layers, num_features=num_features)
