"""A Gumbel-softmax search network over an MBConv space: the elastic supernet with one architecture distribution.

The search counterpart, on the MBConv spaces, of NAS-Bench-201's GDAS network (``hwnas.supernet.darts``):

* the weights are an elastic ``MBConvSupernet`` (every network of the space in one set of weights; depth,
  width, expansion, kernel and SE shared by slicing), so a sampled network costs one single-path forward;
* the architecture distribution is factorized: one parameter vector ``alpha_d`` per dimension ``d`` of
  ``space.dims`` (the space's own encoding: per stage op, kernel, expansion, SE, skip, layers, width; the
  activation and the width and depth factors), ``P(x) = prod_d softmax(alpha_d)[x_d]``;
* every forward draws one hard Gumbel-softmax sample per dimension, as GDAS does per edge:
  ``h_d = softmax((log_softmax(alpha_d) + g) / tau)``, ``onehot(argmax h_d)`` in value with the
  straight-through gradient ``onehot - h_d.detach() + h_d``; the sampled vector is decoded
  (``space.decode``) and activated in the supernet, and only that network runs;
* the straight-through weights reach the loss where their choice acts: stage ``i``'s output is multiplied by
  the product of the sampled weights of its dimensions (one joint op per stage: the product is the joint
  one-hot's entry) and the pooled features by those of the global dimensions; the unsampled choices add
  their zero-valued weights, as GDAS's edges do, so every entry of ``alpha_d`` gets a gradient. A
  dimension that does not change the sampled network (the expansion of a ``ds`` stage) is gated all the
  same: its gradient is then noise that averages out.

This is single-path search in the sense of ProxylessNAS (Cai et al., ICLR 2019: one sampled path per step,
gradients through its gates) and Single-Path NAS (Stamoulis et al., 2019: choices share one "superkernel")
with GDAS's estimator; FBNet (Wu et al., CVPR 2019) runs every candidate block of a layer and mixes them by
Gumbel-softmax, which an elastic supernet whose candidates share weights cannot do in one forward. The
hardware term (``hwnas.search.differentiable.MBConvCostModel``) is FBNet's and ProxylessNAS's: the expected
latency from the latency table under the distribution, exact and differentiable.

``derive()`` decodes the argmax of every ``alpha_d``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from hwnas.genotype import Genotype
from hwnas.supernet.mbconv import MBConvSupernet

_STAGE_DIM = re.compile(r"s(\d+)_")


class MBConvGumbelNetwork(nn.Module):
    """The elastic supernet of ``space`` (width-scaled by ``width``) with ``alpha``: one parameter vector per
    dimension of ``space.dims``. ``forward(x)`` samples a network (``last_sample``: its choice vector) and
    returns its logits; ``generator`` (a ``torch.Generator`` on the input's device, or None for torch's global
    one) draws the Gumbel noise; ``tau`` is annealed by the caller."""

    def __init__(self, space: Any, num_classes: int, input_size: int, width: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.space = space
        self.supernet = MBConvSupernet(space, num_classes, input_size, width=width)
        self.alpha = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(opts))) for _, opts in space.dims)
        self.tau = 10.0
        self.generator = generator
        self.last_sample: list[int] = []
        n_stages = len(space.stages)
        # where each dimension's choice acts: stage i-1 for s{i}_*, the pooled features (n_stages) otherwise
        gate_of: list[int] = []
        for name, _ in space.dims:
            m = _STAGE_DIM.match(name)
            gate_of.append(int(m.group(1)) - 1 if m else n_stages)
        # the alphas side by side in one (dimensions x most choices) matrix, -inf past a dimension's choices
        sizes = [len(opts) for _, opts in space.dims]
        valid = torch.arange(max(sizes))[None, :] < torch.tensor(sizes)[:, None]
        self.register_buffer("_valid", valid, persistent=False)
        for gate in range(n_stages + 1):
            self.register_buffer(f"_dims_of_{gate}", torch.tensor([d for d, at in enumerate(gate_of) if at == gate],
                                                                  dtype=torch.long), persistent=False)
        self._gates: list[tuple[torch.Tensor, torch.Tensor]] = []

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha)

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.supernet.parameters())

    def probabilities(self) -> list[torch.Tensor]:
        """softmax(alpha_d) per dimension, detached."""
        return [torch.softmax(a.detach(), dim=-1) for a in self.alpha]

    def soft_probabilities(self) -> list[torch.Tensor]:
        """softmax(alpha_d) per dimension, differentiable (the cost term's input)."""
        return [torch.softmax(a, dim=-1) for a in self.alpha]

    def derive(self) -> Genotype:
        """The decode of every dimension's argmax."""
        return self.space.decode([int(a.detach().argmax()) for a in self.alpha])

    def _padded(self) -> torch.Tensor:
        """log_softmax(alpha_d) of every dimension, one row each, -inf past its choices."""
        rows = self._valid.new_full(self._valid.shape, float("-inf"), dtype=self.alpha[0].dtype)
        rows = rows.masked_scatter(self._valid, torch.cat(list(self.alpha)))
        return rows.log_softmax(dim=-1)

    def gumbel_sample(self) -> tuple[torch.Tensor, list[int]]:
        """(hard weights (dimensions x most choices): one-hot values, straight-through gradient, 0 past a
        dimension's choices; the sampled choice vector)."""
        for _ in range(100):  # resample the (vanishingly rare) draws that overflow, as GDAS does
            logp = self._padded()
            u = torch.empty_like(logp).exponential_(generator=self.generator)
            gumbels = -u.log()
            probs = ((logp + gumbels) / self.tau).softmax(dim=-1)
            index = probs.detach().argmax(dim=-1, keepdim=True)
            one_h = torch.zeros_like(probs).scatter_(-1, index, 1.0)
            hard = one_h - probs.detach() + probs
            valid = self._valid
            if bool(torch.isfinite(gumbels[valid]).all() & torch.isfinite(hard).all()):
                return hard, index.view(-1).tolist()
        raise FloatingPointError("100 Gumbel samples in a row overflowed: alpha or tau is not finite")

    def _gate(self, i: int, x: torch.Tensor) -> torch.Tensor:
        mul, add = self._gates[i]
        return x * mul + add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hard, index = self.gumbel_sample()
        self.last_sample = index
        self.supernet.activate(self.space.decode(index))
        chosen = hard.gather(1, torch.tensor(index, device=hard.device)[:, None]).squeeze(1)  # 1 in value
        unchosen = hard.sum(dim=1) - chosen  # the unsampled choices' zero-valued weights
        gates = []
        for gate in range(len(self.space.stages) + 1):
            dims = getattr(self, f"_dims_of_{gate}")
            gates.append((chosen[dims].prod(), unchosen[dims].sum()))
        self._gates = gates
        self.supernet.stage_hook = self._gate
        try:
            return self.supernet(x)
        finally:
            self.supernet.stage_hook = None


__all__ = ["MBConvGumbelNetwork"]
