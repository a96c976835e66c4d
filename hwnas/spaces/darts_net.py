"""DARTS's evaluation network in torch: ``NetworkCIFAR`` (no auxiliary head), built from a ``DartsArch``.

Follows quark0/darts ``cnn/model.py`` (``Cell``, ``NetworkCIFAR``) and ``cnn/operations.py`` (``OPS``,
``ReLUConvBN``, ``SepConv``, ``DilConv``, ``FactorizedReduce``) with the same module layout and attribute
names, so the state-dict keys are the reference's (``stem.0.weight``, ``cells.K.preprocess0.op.1.weight``,
``cells.K._ops.J.op.1.weight``, ``classifier.weight``) and a DARTS checkpoint without the auxiliary head
loads. Modelling choices, all the reference's:

* every op has affine BN with running stats; convs have no bias; the classifier has one;
* pools have no BN (``MaxPool2d(3, s, 1)``, ``AvgPool2d(3, s, 1, count_include_pad=False)``);
* in a reduction cell ops reading node 0 or 1 have stride 2, ``skip_connect`` there is ``FactorizedReduce``;
* ``s0`` is preprocessed by ``FactorizedReduce`` after a reduction cell, else ReLU-Conv1x1-BN.

Deliberate differences: no auxiliary head and no drop-path (a training detail), so ``forward(x)`` returns
the logits only (the reference returns ``(logits, logits_aux)``) and a cell's forward takes no
``drop_prob``.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.spaces.darts import CONCAT, DartsArch, reduction_cells
from hwnas.spaces.nb201_net import ReLUConvBN  # the same module (ReLU - Conv - BN, in ``op``) in both references


class DilConv(nn.Module):
    """ReLU - depthwise k x k (dilation ``dilation``, the stride) - pointwise 1x1 - BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Twice ReLU - depthwise k x k - pointwise 1x1 - BN; the first depthwise carries the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_in, affine=True),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=1, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the size: ReLU, two 1x1 stride-2 convs to ``c_out // 2`` (the second on the input shifted by a
    pixel), concatenated, BN. Needs an even input size and an even ``c_out``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """The module of a cell op at ``channels`` (``C_in == C_out``) and ``stride`` (DARTS's ``OPS``)."""
    c = channels
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2)
    raise ValueError(f"unknown DARTS op {name!r}")


class Cell(nn.Module):
    """One cell: preprocess both inputs to ``C`` channels, 4 blocks each summing two ops, concat nodes 2..5."""

    def __init__(self, arch: DartsArch, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0: nn.Module = (FactorizedReduce(c_prev_prev, c) if reduction_prev
                                       else ReLUConvBN(c_prev_prev, c, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        pairs = arch.reduce if reduction else arch.normal
        self._ops = nn.ModuleList(make_op(op, c, 2 if reduction and idx < 2 else 1) for op, idx in pairs)
        self._indices: tuple[int, ...] = tuple(idx for _, idx in pairs)
        self._concat: tuple[int, ...] = CONCAT
        self._steps = len(pairs) // 2
        self.multiplier = len(CONCAT)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            h1 = self._ops[2 * i](states[self._indices[2 * i]])
            h2 = self._ops[2 * i + 1](states[self._indices[2 * i + 1]])
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class NetworkCIFAR(nn.Module):
    """DARTS's CIFAR network: stem, ``layers`` cells (reductions at ``layers//3`` and ``2*layers//3``, each
    doubling ``C``), global average pooling, linear classifier. ``forward`` returns logits."""

    def __init__(self, arch: DartsArch, num_classes: int = 10, C: int = 16, layers: int = 8,
                 stem_multiplier: int = 3) -> None:
        super().__init__()
        self.arch = arch
        self._layers = layers
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reductions = reduction_cells(layers)
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(arch, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))


__all__ = ["Cell", "DilConv", "FactorizedReduce", "NetworkCIFAR", "ReLUConvBN", "SepConv", "make_op"]
