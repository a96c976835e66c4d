"""NAS-Bench-201's network in torch: ``TinyNetwork`` with infer cells, built from a ``CellArch``.

Follows D-X-Y/AutoDL-Projects: ``xautodl/models/cell_infers/tiny_network.py`` (macro structure),
``xautodl/models/cell_infers/cells.py`` (``InferCell``) and ``xautodl/models/cell_operations.py`` (ops and
``ResNetBasicblock``), with the same module layout and attribute names, so the state-dict keys are the
reference's (``stem``, ``cells.K.layers.E.op.1.weight``, ``cells.5.conv_a``, ``cells.5.downsample.1``,
``lastact``, ``classifier``). Modelling choices, all the reference's:

* every edge of the cell is a module and runs in ``forward``, dead or not (a node that only feeds ``none``
  edges is still computed); ``none`` is ``x.mul(0.0)`` (no weights);
* convs inside ReLU-Conv-BN have no bias (``bias = not affine``, affine True); BN affine with running
  stats everywhere;
* ``avg_pool_3x3`` in a cell is ``AvgPool2d(3, 1, 1, count_include_pad=False)`` with no preprocessing conv
  (``C_in == C_out``);
* the reduction ``ResNetBasicblock(C, 2C, stride=2)``: ``conv_a`` ReLU-Conv3x3(s2)-BN, ``conv_b``
  ReLU-Conv3x3-BN, ``downsample`` AvgPool2d(2, 2) + Conv1x1 (no bias, no BN); output ``downsample(x) +
  conv_b(conv_a(x))`` with no activation after the sum.

One deliberate difference: ``forward`` returns the logits only (the reference returns
``(pooled features, logits)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hwnas.spaces.nb201 import EDGES, N_NODES, CellArch


class ReLUConvBN(nn.Module):
    """ReLU - Conv(k, no bias) - BN (affine). Held in ``self.op`` as in the reference (keys ``op.1.weight``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the input (stride 1, ``C_in == C_out`` inside a cell)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class Pooling(nn.Module):
    """``avg_pool_3x3`` inside a cell (stride 1, no preprocessing conv since ``C_in == C_out``)."""

    def __init__(self) -> None:
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(name: str, channels: int) -> nn.Module:
    """The module of a cell edge (``C_in == C_out == channels``, stride 1)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return Pooling()
    raise ValueError(f"unknown op {name!r}")


class InferCell(nn.Module):
    """NB201's cell: ``layers[e]`` is edge ``EDGES[e]``; node j = sum of its edges; the output is node 3."""

    def __init__(self, arch: CellArch, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(make_op(op, channels) for op in arch.ops)
        self.node_inputs: list[list[tuple[int, int]]] = [
            [(e, i) for e, (j, i) in enumerate(EDGES) if j == node] for node in range(1, N_NODES)
        ]  # per node: (layer index, input node)
        self.in_dim = self.out_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for inputs in self.node_inputs:
            nodes.append(sum(self.layers[e](nodes[i]) for e, i in inputs))  # type: ignore[arg-type]
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    """NB201's reduction block (stride 2): two ReLU-Conv3x3-BN and an AvgPool2d(2) + Conv1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )
        self.in_dim, self.out_dim = c_in, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def tiny_network_parts(C: int, N: int, num_classes: int, make_cell: Callable[[int], nn.Module]
                       ) -> tuple[nn.Sequential, nn.ModuleList, nn.Sequential, nn.AdaptiveAvgPool2d, nn.Linear]:
    """TinyNetwork's modules around its cells: stem, the 3 stages of ``N`` cells (``make_cell(channels)``) at
    ``C``, ``2C``, ``4C`` joined by reduction blocks, BN-ReLU, pooling, classifier. Shared by the benchmark's
    network, the weight-sharing supernet and the differentiable search network (``hwnas.supernet``)."""
    stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
    channels = [C] * N + [C * 2] + [C * 2] * N + [C * 4] + [C * 4] * N
    reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
    cells = nn.ModuleList()
    c_prev = C
    for c, reduction in zip(channels, reductions, strict=True):
        cells.append(ResNetBasicblock(c_prev, c) if reduction else make_cell(c))
        c_prev = c
    lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
    return stem, cells, lastact, nn.AdaptiveAvgPool2d(1), nn.Linear(c_prev, num_classes)


class TinyNetwork(nn.Module):
    """NB201's network: stem, 3 stages of ``N`` cells (``C``, ``2C``, ``4C``) joined by reduction blocks,
    BN-ReLU, global average pooling, linear classifier. ``forward`` returns logits."""

    def __init__(self, arch: CellArch, num_classes: int = 10, C: int = 16, N: int = 5) -> None:
        super().__init__()
        self.arch = arch
        self.stem, self.cells, self.lastact, self.global_pooling, self.classifier = tiny_network_parts(
            C, N, num_classes, lambda c: InferCell(arch, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))


__all__ = ["InferCell", "ResNetBasicblock", "TinyNetwork", "make_op", "tiny_network_parts"]
