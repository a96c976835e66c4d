"""Width/depth scaling of a genotype (pure): the building block of proxies and compound scaling.

Channels = ``make_divisible(c * width, divisor)`` (EfficientNet rounding), repeats = ``ceil(r * depth)``,
as timm's ``round_chs_fn`` and ``ceil(repeats x d)``. Resolution is not part of a genotype.
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
    stages = tuple(replace(s, channels=make_divisible(s.channels * width, divisor),
                           repeats=math.ceil(s.repeats * depth - 1e-9)) for s in genotype.stages)
    return replace(genotype, stem=make_divisible(genotype.stem * width, divisor), stages=stages,
                   head=make_divisible(genotype.head * width, divisor)).normalized()
