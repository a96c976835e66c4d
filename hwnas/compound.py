"""EfficientNet compound scaling (pure, no torch): coefficient grids, family members, dropout schedule.

Tan & Le (2019) scale depth by ``alpha**phi``, width by ``beta**phi`` and resolution by ``gamma**phi``
under ``alpha * beta**2 * gamma**2 ~= 2`` (so FLOPs grow by about ``2**phi``). Coefficients are always
written in that order: depth, width, resolution (``--coefficients 1.2,1.1,1.15``).

* width and depth of a member come from ``hwnas.scaling.scale``: channels ``make_divisible(c * w, 8)``
  (nearest multiple of 8, never below 90 % of the exact value), repeats ``ceil(r * d)`` per stage;
* resolution of a coefficient-derived member is ``round8(base * gamma**phi)``: the nearest multiple of 8
  (halves round up), so every stride-2 stage of a 5-stride network sees an integer size up to the last
  few stages and images pack well on accelerators. Explicit ``(width, depth, resolution)`` triples (the
  published EfficientNet table has 260 and 380, not multiples of 8) are used verbatim;
* dropout before the classifier: the published EfficientNet schedule (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5,
  0.5 for B0..B7) for the preset, and for coefficient-derived members ``0.2 + 0.3 * phi / 7`` (linear
  from 0.2 at phi 0 to 0.5 at phi 7, capped at 0.5), rounded to 3 decimals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hwnas.genotype import Genotype
from hwnas.scaling import scale
from hwnas.walker import flops, params

TARGET = 2.0  # alpha * beta**2 * gamma**2 at phi = 1

# EfficientNet B0..B7 as published (width, depth, resolution), timm/torchvision/TF reference code.
EFFICIENTNET_MULTIPLIERS: tuple[tuple[float, float, int], ...] = (
    (1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260), (1.2, 1.4, 300),
    (1.4, 1.8, 380), (1.6, 2.2, 456), (1.8, 2.6, 528), (2.0, 3.1, 600),
)
EFFICIENTNET_DROPOUT: tuple[float, ...] = (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5)
# Tan & Le 2019, Table 2: (params in millions, FLOPs in billions of multiply-adds) of B0..B7.
PAPER_TABLE2: tuple[tuple[float, float], ...] = (
    (5.3, 0.39), (7.8, 0.70), (9.2, 1.0), (12, 1.8), (19, 4.2), (30, 9.9), (43, 19), (66, 37),
)
PRESETS: dict[str, tuple[tuple[float, float, int], ...]] = {"efficientnet": EFFICIENTNET_MULTIPLIERS}


class CompoundError(ValueError):
    """A bad coefficient/multiplier/phi specification. The message is one line."""


@dataclass(frozen=True)
class Coefficients:
    alpha: float  # depth
    beta: float  # width
    gamma: float  # resolution

    @property
    def product(self) -> float:
        """``alpha * beta**2 * gamma**2``: the FLOPs growth per unit of phi."""
        return self.alpha * self.beta ** 2 * self.gamma ** 2

    def to_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "product": round(self.product, 6)}


@dataclass(frozen=True)
class Member:
    """One network of a family: the scaled genotype at its resolution, with its costs."""

    name: str
    phi: int | None
    width: float
    depth: float
    resolution: int
    dropout: float
    genotype: Genotype
    params: int
    flops: int  # multiply-adds at ``resolution``

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "phi": self.phi, "width": round(self.width, 6), "depth": round(self.depth, 6),
                "resolution": self.resolution, "dropout": self.dropout, "params": self.params,
                "flops": self.flops, "flops_unit": "multiply-adds", "genotype": self.genotype.to_string()}


# ---- parsing (one-line errors) -------------------------------------------------------------------
MAX_MULTIPLIER = 100.0  # a coefficient, or a member's width or depth multiplier (EfficientNet-L2: 4.3 and 5.3)
MAX_RESOLUTION = 8192  # a member's input size in pixels


def _float(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise CompoundError(f"{what}: {text.strip()!r} is not a number") from None
    if not 0 < v < math.inf:
        raise CompoundError(f"{what}: {text.strip()!r} must be a positive finite number")
    if v > MAX_MULTIPLIER:
        raise CompoundError(f"{what}: {text.strip()!r} is more than {MAX_MULTIPLIER:g} (EfficientNet-B7 scales "
                            "width 2.0, depth 3.1)")
    return v


def parse_coefficients(text: str) -> Coefficients:
    """``"1.2,1.1,1.15"`` -> alpha (depth), beta (width), gamma (resolution); each >= 1."""
    parts = text.split(",")
    if len(parts) != 3:
        raise CompoundError(f"coefficients must be A,B,G (depth, width, resolution), got {text!r}")
    a, b, g = (_float(p, f"coefficients {text!r}") for p in parts)
    if min(a, b, g) < 1:
        raise CompoundError(f"coefficients must each be >= 1 (they scale a network up), got {text!r}")
    return Coefficients(a, b, g)


def parse_multipliers(text: str) -> list[tuple[float, float, int]]:
    """``"1.0,1.0,224;1.0,1.1,240"`` -> [(width, depth, resolution), ...]."""
    out = []
    items = [t for t in text.split(";") if t.strip()]
    if not items:
        raise CompoundError(f"multipliers must be 'W,D,R;W,D,R;...', got {text!r}")
    for i, item in enumerate(items, start=1):
        parts = item.split(",")
        if len(parts) != 3:
            raise CompoundError(f"multipliers member {i}: expected W,D,R (width, depth, resolution), got {item!r}")
        w = _float(parts[0], f"multipliers member {i} width")
        d = _float(parts[1], f"multipliers member {i} depth")
        r = parts[2].strip()
        if len(r.lstrip("0")) > 9 and r.isascii() and r.isdigit():  # int() refuses 4300 digits
            raise CompoundError(f"multipliers member {i}: resolution {r[:12]}... must be at most {MAX_RESOLUTION}")
        if not (r.isascii() and r.isdigit()) or int(r) < 1:
            raise CompoundError(f"multipliers member {i}: resolution must be a positive integer, got {r[:20]!r}")
        out.append((w, d, int(r)))
    return out


def parse_phis(text: str) -> list[int]:
    """``"0-7"``, ``"3"`` or ``"0,2,4"`` -> sorted distinct phis in 0..20."""
    phis: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        lo, sep, hi = part.partition("-")
        if not (lo.isascii() and lo.isdigit()) or (sep and not (hi.isascii() and hi.isdigit())):
            raise CompoundError(f"phi must look like 0-7, 3 or 0,2,4, got {text[:40]!r}")
        if max(len(lo.lstrip("0")), len(hi.lstrip("0"))) > 2:  # int() refuses 4300 digits
            raise CompoundError(f"phi must be at most 20, got {part[:20]!r}")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a > b:
            raise CompoundError(f"phi range {part!r} is empty")
        if b > 20:
            raise CompoundError(f"phi must be at most 20, got {b}")
        phis.update(range(a, b + 1))
    if max(phis) > 20:
        raise CompoundError(f"phi must be at most 20, got {max(phis)}")
    return sorted(phis)


# ---- the grid of step 1 ----------------------------------------------------------------------------
def round8(x: float) -> int:
    """Nearest multiple of 8 (halves up), at least 8."""
    return max(8, math.floor(x / 8 + 0.5) * 8)


MIN_GRID_STEP = 0.005  # 201 values per axis: 8.1 million triples, under a second


def coefficient_grid(step: float = 0.05, low: float = 1.0, high: float = 2.0, tolerance: float = 0.1,
                     target: float = TARGET) -> list[Coefficients]:
    """Every (alpha, beta, gamma) on a ``step`` grid in [low, high]^3 with
    ``|alpha * beta**2 * gamma**2 - target| <= tolerance``, sorted by (alpha, beta, gamma).
    The default tolerance 0.1 keeps the paper's own choice (1.2, 1.1, 1.15), whose product is 1.92."""
    if not MIN_GRID_STEP <= step <= high - low:
        raise CompoundError(f"grid step must be in [{MIN_GRID_STEP}, {high - low}] (a finer grid has more than "
                            f"{round((high - low) / MIN_GRID_STEP + 1) ** 3:,} points), got {step}")
    if tolerance < 0:
        raise CompoundError(f"tolerance must be >= 0, got {tolerance}")
    n = round((high - low) / step)
    values = [round(low + i * step, 10) for i in range(n + 1) if low + i * step <= high + 1e-9]
    out = [Coefficients(a, b, g) for a in values for b in values for g in values
           if abs(a * b * b * g * g - target) <= tolerance + 1e-12]
    if not out:
        raise CompoundError(f"no coefficients on a {step} grid satisfy |a*b^2*g^2 - {target}| <= {tolerance}")
    return out


def subsample(items: list[Any], n: int | None) -> list[Any]:
    """At most ``n`` items spread evenly over ``items`` (first and last included), order kept."""
    if n is None or n >= len(items):
        return list(items)
    if n == 1:
        return [items[len(items) // 2]]
    idx = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in idx]


# ---- family members ------------------------------------------------------------------------------
def dropout_for_phi(phi: int) -> float:
    """Coefficient-derived members: linear from 0.2 (phi 0) to 0.5 (phi 7), capped at 0.5."""
    return round(min(0.5, 0.2 + 0.3 * phi / 7), 3)


def member(base: Genotype, name: str, phi: int | None, width: float, depth: float, resolution: int,
           dropout: float, num_classes: int = 1000) -> Member:
    if max(width, depth) > MAX_MULTIPLIER or resolution > MAX_RESOLUTION:
        raise CompoundError(f"member {name}: width {width:.4g}, depth {depth:.4g}, resolution {resolution} is "
                            f"beyond any network (width and depth at most {MAX_MULTIPLIER:g}, resolution at most "
                            f"{MAX_RESOLUTION}): smaller coefficients or phi")
    g = scale(base, width=width, depth=depth)
    return Member(name, phi, width, depth, resolution, dropout, g, params(g, num_classes),
                  flops(g, resolution, num_classes))


def family_from_coefficients(base: Genotype, coefficients: Coefficients, phis: list[int],
                             base_resolution: int = 224, num_classes: int = 1000) -> list[Member]:
    c = coefficients
    out = []
    for p in phis:  # coefficients <= MAX_MULTIPLIER and phi <= 20: no overflow
        out.append(member(base, f"B{p}", p, c.beta ** p, c.alpha ** p, round8(base_resolution * c.gamma ** p),
                          dropout_for_phi(p), num_classes))
    return out


def family_from_multipliers(base: Genotype, triples: list[tuple[float, float, int]], num_classes: int = 1000,
                            names: list[str] | None = None,
                            dropouts: tuple[float, ...] | None = None) -> list[Member]:
    """Members from explicit (width, depth, resolution) triples, resolution verbatim. Without
    ``dropouts``, member i gets the EfficientNet schedule's value for B<i> (0.5 beyond B7)."""
    out = []
    for i, (w, d, r) in enumerate(triples):
        drop = (dropouts or EFFICIENTNET_DROPOUT)[min(i, len(dropouts or EFFICIENTNET_DROPOUT) - 1)]
        out.append(member(base, names[i] if names else f"M{i}", None, w, d, r, drop, num_classes))
    return out


def efficientnet_family(base: Genotype, num_classes: int = 1000) -> list[Member]:
    """The published EfficientNet B0..B7 multipliers applied to ``base``, named B0..B7 with phi 0..7."""
    members = family_from_multipliers(base, list(EFFICIENTNET_MULTIPLIERS), num_classes,
                                      [f"B{i}" for i in range(8)], EFFICIENTNET_DROPOUT)
    return [Member(m.name, i, m.width, m.depth, m.resolution, m.dropout, m.genotype, m.params, m.flops)
            for i, m in enumerate(members)]
