"""Search spaces behind one interface (``hwnas.spaces.base.CategoricalSpace``), found by name.

=================  ==========================================================================================
``mbconv``         MnasNet-style factorized MBConv space with EAT-NAS width/depth factors (``mbconv.py``)
``macro``          NAS-Bench-Macro: 8 layers of identity / MBConv k3e3 / MBConv k5e6, as hwnas genotypes
``nb201``          NAS-Bench-201's cell: 6 edges x {none, skip, conv1x1, conv3x3, avgpool3x3} (``nb201.py``)
``transnas-micro`` TransNAS-Bench-101's micro cell: NB201's cell with 4 ops (no pooling), 7 tasks
``darts``          NASNet/DARTS cells: normal + reduction cell, 4 blocks x 2 (input, op) pairs, 7 ops (``darts.py``)
=================  ==========================================================================================

No torch here; ``space.build`` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hwnas.spaces.base import CategoricalSpace, SpaceError

SPACE_KINDS: tuple[str, ...] = ("mbconv", "macro", "nb201", "transnas-micro", "darts")


def get_space(kind: str = "mbconv", config: Mapping[str, Any] | None = None) -> CategoricalSpace:
    """The space named ``kind``; ``config`` is the rest of a recipe's ``[space]`` table (``mbconv`` and
    ``darts`` take settings: ``darts`` its network shape, ``channels``, ``cells``, ``stem_multiplier``).
    ``SpaceError`` for an unknown kind or settings the space does not take."""
    config = dict(config or {})
    if kind == "mbconv":
        from hwnas.spaces.mbconv import SearchSpace

        return SearchSpace.from_dict(config) if config else SearchSpace()
    if kind == "darts":
        from hwnas.spaces.darts import DartsSpace

        return DartsSpace.from_dict(config)
    if kind not in SPACE_KINDS:
        raise SpaceError(f"unknown space {kind!r} (choose from {', '.join(SPACE_KINDS)})")
    if config:
        raise SpaceError(f"the {kind} space takes no settings (got {', '.join(sorted(config))})")
    if kind == "macro":
        from hwnas.spaces.macro import MacroSpace

        return MacroSpace()
    from hwnas.spaces.nb201 import NB201Space, TransNASMicroSpace

    return NB201Space() if kind == "nb201" else TransNASMicroSpace()


__all__ = ["SPACE_KINDS", "CategoricalSpace", "SpaceError", "get_space"]
