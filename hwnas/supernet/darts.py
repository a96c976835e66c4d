"""NAS-Bench-201's search network for differentiable search (DARTS, GDAS): every edge a mixed op (torch).

The macro structure is NB201's ``TinyNetwork`` (``hwnas.spaces.nb201_net``): stem Conv3x3 + BN, 3 stages of
``N`` cells at ``C``, ``2C``, ``4C`` channels joined by two ``ResNetBasicblock(stride 2)``, BN-ReLU, global
average pooling, linear classifier. Each cell's 6 edges (``EDGES``) hold all 5 ops of ``NB201_OPS`` (built
with ``make_op``, so ReLU-Conv-BN with affine BN and running statistics, as in the deployed network; NB201's
own search cells used non-affine BN, a small difference). One architecture parameter ``alpha`` of shape
(6, 5) is shared by every cell, as in NB201's ``TinyNetworkDarts`` / ``TinyNetworkGDAS``
(D-X-Y/AutoDL-Projects ``xautodl/models/cell_searchs/``). Forward modes:

* ``"darts"``: each edge is ``sum_o softmax(alpha_e)_o * op_o(x)`` (Liu et al., ICLR 2019); every op runs;
* ``"gdas"`` (Dong & Yang, CVPR 2019, ``forward_gdas``): once per forward, one Gumbel-softmax sample per edge,
  ``h = softmax((log_softmax(alpha) + g) / tau)``, hard one-hot ``onehot(argmax h)`` forward with the
  straight-through gradient ``onehot - h.detach() + h``; only the sampled op runs, the other ops contribute
  their (zero-valued) weight so that every alpha entry of the edge still gets a gradient. The same sample is
  used by every cell of the network. ``tau`` (``self.tau``) is annealed by the caller.

``derive()`` is the argmax of ``alpha`` per edge (``none`` included, as NB201's ``genotype``).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.spaces.nb201 import EDGES, N_NODES, NB201_OPS, CellArch
from hwnas.spaces.nb201_net import make_op, tiny_network_parts

MODES: tuple[str, ...] = ("darts", "gdas")


class MixedEdge(nn.Module):
    """One edge holding every op of ``NB201_OPS`` (``C_in == C_out == channels``, stride 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(op, channels) for op in NB201_OPS)

    def forward_darts(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))  # type: ignore[return-value]

    def forward_gdas(self, x: torch.Tensor, hardwts: torch.Tensor, index: int) -> torch.Tensor:
        """``hardwts`` one-hot in value; only op ``index`` runs, the others add their zero weight (gradient)."""
        return sum(hardwts[o] * op(x) if o == index else hardwts[o]  # type: ignore[return-value]
                   for o, op in enumerate(self.ops))


class SearchCell(nn.Module):
    """NB201's search cell: node j = sum over i < j of ``edges[e](node i)``; the output is node 3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedEdge(channels) for _ in EDGES)
        self.node_inputs: list[list[tuple[int, int]]] = [
            [(e, i) for e, (j, i) in enumerate(EDGES) if j == node] for node in range(1, N_NODES)
        ]

    def forward_darts(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for inputs in self.node_inputs:
            nodes.append(sum(self.edges[e].forward_darts(nodes[i], weights[e])  # type: ignore[arg-type]
                             for e, i in inputs))
        return nodes[-1]

    def forward_gdas(self, x: torch.Tensor, hardwts: torch.Tensor, index: list[int]) -> torch.Tensor:
        nodes = [x]
        for inputs in self.node_inputs:
            nodes.append(sum(self.edges[e].forward_gdas(nodes[i], hardwts[e], index[e])  # type: ignore[arg-type]
                             for e, i in inputs))
        return nodes[-1]


class DartsNetwork(nn.Module):
    """NB201's search network (``C`` channels in the first stage, ``N`` cells per stage) with ``alpha`` (6, 5).

    ``forward(x)`` returns logits in ``self.mode`` (``"darts"`` or ``"gdas"``); ``weight_parameters()`` and
    ``arch_parameters()`` split the parameters for the two optimizers. In GDAS mode, ``generator`` (a
    ``torch.Generator`` on the input's device, or None for torch's global one) draws the Gumbel noise and
    ``last_sample`` holds the last forward's sampled op per edge."""

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, mode: str = "darts",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        if C < 1 or N < 1 or num_classes < 1:
            raise ValueError(f"C, N and num_classes must be positive, got C={C}, N={N}, num_classes={num_classes}")
        self.C, self.N, self.num_classes, self.mode = C, N, num_classes, mode
        self.tau = 10.0
        self.generator = generator
        self.last_sample: list[int] = []
        self.stem, self.cells, self.lastact, self.global_pooling, self.classifier = tiny_network_parts(
            C, N, num_classes, SearchCell)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(NB201_OPS)))  # NB201's init

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def probabilities(self) -> torch.Tensor:
        """softmax(alpha) per edge, (6, 5), detached."""
        return torch.softmax(self.alpha.detach(), dim=-1)

    def soft_probabilities(self) -> torch.Tensor:
        """softmax(alpha) per edge, (6, 5), differentiable (the cost term's input)."""
        return torch.softmax(self.alpha, dim=-1)

    def derive(self) -> CellArch:
        """The argmax op of every edge."""
        return CellArch(tuple(NB201_OPS[int(k)] for k in self.alpha.detach().argmax(dim=-1).tolist()))

    def gumbel_sample(self) -> tuple[torch.Tensor, list[int]]:
        """(hard weights (6, 5): one-hot values, straight-through gradient to alpha; sampled op per edge)."""
        for _ in range(100):  # GDAS resamples the (vanishingly rare) draws that overflow
            u = torch.empty_like(self.alpha).exponential_(generator=self.generator)
            gumbels = -u.log()
            logits = (self.alpha.log_softmax(dim=-1) + gumbels) / self.tau
            probs = logits.softmax(dim=-1)
            index = probs.max(dim=-1, keepdim=True)[1]
            one_h = torch.zeros_like(logits).scatter_(-1, index, 1.0)
            hardwts = one_h - probs.detach() + probs
            if torch.isfinite(gumbels).all() and torch.isfinite(probs).all() and torch.isfinite(hardwts).all():
                return hardwts, index.view(-1).tolist()
        raise FloatingPointError("100 Gumbel samples in a row overflowed: alpha or tau is not finite")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "darts":
            weights = torch.softmax(self.alpha, dim=-1)
        else:
            hardwts, index = self.gumbel_sample()
            self.last_sample = index
        x = self.stem(x)
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                x = cell.forward_darts(x, weights) if self.mode == "darts" else cell.forward_gdas(x, hardwts, index)
            else:
                x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))


__all__ = ["MODES", "DartsNetwork", "MixedEdge", "SearchCell"]
