"""Genotype -> ``torch.nn.Module``. The layers come from ``hwnas.walker.walk``, the walker that also
prices them, so the built network and its analytic FLOPs/params cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from hwnas.genotype import Genotype
from hwnas.walker import Layer, walk

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
}


def _conv_bn(in_c: int, out_c: int, kernel: int, stride: int = 1, groups: int = 1,
             act: str | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_c, out_c, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_c),
    ]
    if act:
        layers.append(_ACTIVATIONS[act]())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int, act: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = _ACTIVATIONS[act]()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Block(nn.Module):
    """MBConv (``ir``: 1x1 expand, kxk depthwise, SE, 1x1 project) or depthwise-separable (``ds``: the
    same without the expansion), with an optional residual and stochastic depth on it; or an identity
    layer (``id``): a 1x1 conv (stride s, no bias) + BN projection where it strides or changes the width,
    else ``nn.Identity`` (NAS-Bench-Macro's ``Identity``), never a residual."""

    def __init__(self, layer: Layer, drop_path: float = 0.0) -> None:
        super().__init__()
        if layer.kind == "id":
            self.body: nn.Module = nn.Identity() if layer.noop else _conv_bn(layer.in_c, layer.out_c, 1, layer.stride)
            self.residual = False
            self.drop_path: nn.Module = nn.Identity()
            return
        act, mid = layer.activation, layer.mid_c
        parts: list[nn.Module] = []
        if layer.kind == "ir":
            parts.append(_conv_bn(layer.in_c, mid, 1, act=act))
        parts.append(_conv_bn(mid, mid, layer.kernel, layer.stride, groups=mid, act=act))
        if layer.se_c:
            parts.append(SqueezeExcite(mid, layer.se_c, act))
        parts.append(_conv_bn(mid, layer.out_c, 1))
        self.body = nn.Sequential(*parts)
        self.residual = layer.residual
        self.drop_path = StochasticDepth(drop_path, "row") if layer.residual and drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + self.drop_path(out) if self.residual else out


class Network(nn.Module):
    def __init__(self, genotype: Genotype, num_classes: int, input_size: int, dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.genotype = genotype
        layers = list(walk(genotype, input_size, num_classes))
        stem, blocks, head, fc = layers[0], layers[1:-2], layers[-2], layers[-1]
        self.stem = _conv_bn(stem.in_c, stem.out_c, stem.kernel, stem.stride, act=stem.activation)
        n = len(blocks)
        self.blocks = nn.Sequential(*(Block(b, drop_path * b.block / n) for b in blocks))
        self.head = _conv_bn(head.in_c, head.out_c, 1, act=head.activation)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout, inplace=True) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(fc.in_c, fc.out_c)
        _init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


CLASSIFIER_INIT = "fan_in"
"""Name of the classifier initialisation ``_init_weights`` uses, recorded by the benchmarks beside what they
train: results trained before 2026-11-22 used torchvision's (``"torchvision"``, U(+-1/sqrt(classes)))."""


def _init_weights(model: nn.Module) -> None:
    """torchvision's EfficientNet initialisation, except the classifier's scale.

    torchvision draws the classifier from U(+-1/sqrt(out_features)): fine for 1000 classes, but for 10
    it starts CIFAR-10 networks with logits of std 1.9-3.4 and a loss of 2.9-5.9 instead of ln 10 = 2.3
    (measured on real CIFAR-10 images, six random networks of the space), and a short proxy training
    spends its budget undoing that. U(+-1/sqrt(in_features)) does not depend on the class count and is
    within 12 % of torchvision's scale in the 1000-class, 1280-feature case (0.028 vs 0.032)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.in_features ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def build_model(genotype: Genotype, num_classes: int = 1000, *, input_size: int = 224, dropout: float = 0.2,
                drop_path: float = 0.0, zero_init_last: bool = False) -> Network:
    """Build the network. ``input_size`` only selects the small-input stem stride
    (``hwnas.walker.stem_stride_for``); the network itself accepts any input size.
    ``drop_path`` is the stochastic-depth rate of the last block (linear ramp from 0, as torchvision).
    ``zero_init_last`` zeroes the last BN scale of every residual block, so each starts as the identity
    (timm's ``zero_init_last``; it steadies short trainings of deep candidates)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    net = Network(genotype, num_classes, input_size, dropout, drop_path)
    if zero_init_last:
        for block in net.blocks:
            if block.residual:
                nn.init.zeros_(block.body[-1][1].weight)
    return net
