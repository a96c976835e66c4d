"""Width/depth scaling of a genotype (pure): the building block of proxies and compound scaling.

Channels = ``make_divisible(c * width, divisor)`` (EfficientNet rounding), repeats = ``ceil(r * depth)``,
as timm's ``round_chs_fn`` and ``ceil(repeats x d)``. Resolution is not part of a genotype.
Width 1.0 keeps every channel count as it is (a genotype typed with channels off the divisor, e.g. ``c20``,
keeps them when only its depth is scaled, as EfficientNet-B1 is of B0).
"""

from __future__ import annotations

import math
from dataclasses import replace

from hwnas.genotype import Genotype
from hwnas.space import make_divisible


def scale(genotype: Genotype, width: float = 1.0, depth: float = 1.0, divisor: int = 8) -> Genotype:
    if width <= 0 or depth <= 0:
        raise ValueError(f"width and depth multipliers must be positive, got {width}, {depth}")
    if width == 1.0 and depth == 1.0:
        return genotype

    def chs(c: int) -> int:
        return c if width == 1.0 else make_divisible(c * width, divisor)

    stages = tuple(replace(s, channels=chs(s.channels), repeats=math.ceil(s.repeats * depth - 1e-9))
                   for s in genotype.stages)
    return replace(genotype, stem=chs(genotype.stem), stages=stages, head=chs(genotype.head)).normalized()
