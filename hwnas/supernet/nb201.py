"""NAS-Bench-201's supernet: the TinyNetwork with every op on every edge, one active per edge (SPOS).

The macro structure is ``hwnas.spaces.nb201_net.TinyNetwork``'s (stem, 3 stages of ``N`` cells at ``C``,
``2C``, ``4C`` joined by ``ResNetBasicblock``\\ s, BN-ReLU, pooling, linear). Each edge of each cell holds
all five ops (``NB201_OPS``); the two convolutions are the only ones with weights. ``activate(arch)`` picks
one op per edge, the same in every cell, as the benchmark's networks repeat one cell; ``forward`` runs only
those (single-path one-shot, Guo et al. 2020; random search with weight sharing, Li & Talwalkar 2019).

Each edge's convs are its own (not shared between edges or cells), as in NB201's weight-sharing baselines
(RSWS, SETN, ENAS on NB201). One difference: their search cells use BatchNorm without affine parameters or
running statistics; here BN is affine with running statistics, as in the benchmark's networks, and the
evaluator recalibrates the statistics per subnet (SPOS), so ``extract`` gives exactly
``TinyNetwork(arch, num_classes, C, N)`` holding the inherited weights.

Settings: ``C`` (default 16) and ``N`` (default 5) are the benchmark's; a CPU trains a smaller one
(e.g. ``C=8, N=1``) in minutes, at the cost of rank fidelity (``docs/evaluators.md`` has the measurements).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hwnas.spaces.nb201 import EDGES, N_NODES, NB201_OPS, CellArch
from hwnas.spaces.nb201_net import TinyNetwork, make_op, tiny_network_parts
from hwnas.supernet import SupernetError
from hwnas.supernet.base import Supernet

MAX_C = 1024  # widest C a checkpoint may ask for (64x the benchmark's)
MAX_N = 64


class SearchCell(nn.Module):
    """A cell whose edge ``e`` holds every op (``edges[e][k]`` is ``NB201_OPS[k]``); ``ops`` picks one each."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(nn.ModuleList(make_op(op, channels) for op in NB201_OPS) for _ in EDGES)
        self.node_inputs = [[(e, i) for e, (j, i) in enumerate(EDGES) if j == node] for node in range(1, N_NODES)]
        self.ops: tuple[int, ...] = (0,) * len(EDGES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for inputs in self.node_inputs:
            nodes.append(sum(self.edges[e][self.ops[e]](nodes[i]) for e, i in inputs))  # type: ignore[index, arg-type]
        return nodes[-1]


class NB201Supernet(Supernet):
    kind = "nb201"

    def __init__(self, space: Any, num_classes: int, input_size: int, C: int = 16, N: int = 5) -> None:
        super().__init__(space, num_classes, input_size)
        for name, v, top in (("C", C, MAX_C), ("N", N, MAX_N)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                raise SupernetError(f"NB201 supernet setting {name} must be an integer in 1..{top}, got {v!r}"[:120])
        if input_size % 4:
            raise SupernetError(f"NB201 networks take inputs whose size is a multiple of 4, not {input_size}")
        self.C, self.N = C, N
        self.stem, self.cells, self.lastact, self.global_pooling, self.classifier = tiny_network_parts(
            C, N, num_classes, SearchCell)
        self.active: CellArch | None = None

    def _ops_of(self, arch: Any) -> tuple[int, ...]:
        if not isinstance(arch, CellArch):
            raise SupernetError(f"the NB201 supernet runs NB201 cells, not a {type(arch).__name__}")
        bad = [op for op in arch.ops if op not in NB201_OPS]
        if bad:
            raise SupernetError(f"op {bad[0]!r} is not one of the NB201 supernet's ({', '.join(NB201_OPS)})")
        return tuple(NB201_OPS.index(op) for op in arch.ops)

    def activate(self, arch: Any) -> None:
        ops = self._ops_of(arch)
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                cell.ops = ops
        self.active = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise SupernetError("activate an architecture before running the supernet")
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))

    def extract(self, arch: Any) -> nn.Module:
        ops = self._ops_of(arch)
        net = TinyNetwork(arch, self.num_classes, C=self.C, N=self.N)
        state = {}
        for key, value in self.state_dict().items():
            parts = key.split(".")
            if parts[0] == "cells" and parts[2] == "edges":  # cells.K.edges.E.O.rest -> cells.K.layers.E.rest
                if int(parts[4]) != ops[int(parts[3])]:
                    continue
                key = ".".join([parts[0], parts[1], "layers", parts[3], *parts[5:]])
            state[key] = value
        net.load_state_dict(state, strict=True)
        return net

    def settings(self) -> dict[str, Any]:
        return {"C": self.C, "N": self.N}


__all__ = ["NB201Supernet", "SearchCell"]
