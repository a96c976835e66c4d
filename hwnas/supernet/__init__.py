"""Weight sharing: supernets that hold every architecture of a space in one set of weights.

=====================  ===================================================================================
``base.py``            ``Supernet``: the torch contract every space's supernet keeps (below)
``nb201.py``           NAS-Bench-201's cell space: every edge holds all 5 ops, one active per edge (SPOS)
``mbconv.py``          the MBConv spaces, elastic in the Once-for-All sense: kernel, expansion, depth and
                       width choices share (slices of) the largest block's weights
``train.py``           uniform single-path training (SPOS), optionally with the sandwich rule; resumable
                       checkpoints read with ``torch.load(weights_only=True)``
=====================  ===================================================================================

A subnet is evaluated by ``hwnas.evaluators.supernet`` (inherit the weights, recalibrate BatchNorm on a few
training batches, score the validation split); differentiable search (DARTS, GDAS) is
``hwnas.search.differentiable``.

Every module here but this one imports torch; ``build_supernet`` imports the space's module lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUPERNET_KINDS: tuple[str, ...] = ("nb201", "mbconv")


class SupernetError(ValueError):
    """A supernet that cannot serve: a checkpoint of another space, an architecture outside it (one line)."""


def build_supernet(space: Any, num_classes: int, input_size: int, settings: Mapping[str, Any] | None = None) -> Any:
    """The supernet of ``space`` (an ``hwnas.spaces`` space) for ``num_classes`` at ``input_size``;
    ``settings`` are the supernet's own (``Supernet.settings()`` gives them back). ``SupernetError`` for a
    space without one."""
    settings = dict(settings or {})
    if space.kind == "nb201":
        from hwnas.supernet.nb201 import NB201Supernet

        return NB201Supernet(space, num_classes, input_size, **settings)
    if space.kind == "mbconv":
        from hwnas.supernet.mbconv import MBConvSupernet

        return MBConvSupernet(space, num_classes, input_size, **settings)
    raise SupernetError(f"the {space.kind} space has no supernet (supernets: {', '.join(SUPERNET_KINDS)})")


__all__ = ["SUPERNET_KINDS", "SupernetError", "build_supernet"]
