"""The MnasNet-style factorized hierarchical search space, as data.

Per stage (MnasNet): op (MBConv ``ir`` or depthwise-separable ``ds``), kernel, expansion, SE ratio, skip,
number of layers and an output-width multiplier of the stage's base channels. Global (EAT-NAS): a width
factor on every channel count (stem and head included) and a depth factor on every stage's layers, and
the activation. Strides and base channels are fixed per stage.

A point of the space is a *choice vector*: one integer index per dimension (``dims``), the natural
encoding for pymoo; ``to_choices``/``from_choices`` give the dict-of-values view Optuna samples.
``decode`` turns a vector into a ``Genotype``:

* channels = ``make_divisible(base * width * width_factor, divisor)`` (EfficientNet rounding: nearest
  multiple of ``divisor``, never below 90 % of the exact value);
* repeats = ``ceil(layers * depth_factor)``;
* op ``ds`` ignores the expansion choice and ``ir`` with expansion 1 *is* ``ds``, and ``noskip`` where no
  block could skip anyway is dropped, so several vectors can spell one network (``Genotype.normalized``).

No torch here: strategies use this module directly. Every random operation takes an explicit
``numpy.random.Generator``; every retry loop is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from hwnas import walker
from hwnas.genotype import (
    ACTIVATIONS,
    MAX_CHANNELS,
    MAX_EXPANSION,
    MAX_KERNEL,
    MAX_REPEATS,
    OPS,
    Genotype,
    Stage,
    parse_genotype,
)
from hwnas.spaces.base import CategoricalSpace, SpaceError
from hwnas.units import is_number

STAGE_DIMS: tuple[str, ...] = ("op", "kernel", "expansion", "se", "skip", "layers", "width")
GLOBAL_DIMS: tuple[str, ...] = ("activation", "width_factor", "depth_factor")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """EfficientNet/MobileNet channel rounding: nearest multiple of ``divisor``, never below 90 %."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class StageChoices:
    """Choices of one stage. ``channels`` and ``stride`` are fixed; every tuple is a dimension."""

    channels: int
    stride: int
    layers: tuple[int, ...]
    ops: tuple[str, ...] = ("ir", "ds")
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[int, ...] = (1, 3, 4, 6)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skips: tuple[bool, ...] = (True, False)
    widths: tuple[float, ...] = (0.75, 0.8125, 0.875, 1.0, 1.125, 1.25)

    def options(self) -> dict[str, tuple[Any, ...]]:
        return {"op": self.ops, "kernel": self.kernels, "expansion": self.expansions, "se": self.se_ratios,
                "skip": self.skips, "layers": self.layers, "width": self.widths}


_DEFAULT_STAGES = (  # EfficientNet-B0's stages; layer choices cover B0, MnasNet-A1/B1 and MobileNetV2
    StageChoices(16, 1, (1, 2)),
    StageChoices(24, 2, (1, 2, 3)),
    StageChoices(40, 2, (1, 2, 3, 4)),
    StageChoices(80, 2, (2, 3, 4)),
    StageChoices(112, 1, (2, 3, 4)),
    StageChoices(192, 2, (2, 3, 4, 5)),
    StageChoices(320, 1, (1, 2)),
)


class GenotypeCosts:
    """Costs and builder of a space whose architectures are hwnas genotypes (``mbconv``, ``macro``): the one
    shape walker (``hwnas.walker``) and ``hwnas.model.build_model``."""

    default_resolution: int
    default_num_classes: int
    dropout: ClassVar[float] = 0.2  # the classifier's dropout in built networks (no parameters)

    def flops(self, arch: Genotype, resolution: int | None = None, num_classes: int | None = None) -> int:
        return walker.flops(arch, resolution or self.default_resolution, num_classes or self.default_num_classes)

    def params(self, arch: Genotype, num_classes: int | None = None) -> int:
        return walker.params(arch, num_classes or self.default_num_classes)

    def build(self, arch: Genotype, num_classes: int | None = None, input_size: int | None = None) -> Any:
        from hwnas.model import build_model  # torch

        return build_model(arch, num_classes=num_classes or self.default_num_classes,
                           input_size=input_size or self.default_resolution, dropout=self.dropout)


@dataclass(frozen=True)
class SearchSpace(GenotypeCosts, CategoricalSpace):
    name: str = "mnasnet-b0"
    stem: int = 32
    head: int = 1280
    divisor: int = 8
    activations: tuple[str, ...] = ACTIVATIONS
    width_factors: tuple[float, ...] = (0.75, 1.0, 1.25)
    depth_factors: tuple[float, ...] = (1.0, 1.25, 1.5)
    stages: tuple[StageChoices, ...] = _DEFAULT_STAGES
    dims: tuple[tuple[str, tuple[Any, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_space(self)
        dims: list[tuple[str, tuple[Any, ...]]] = [
            ("activation", self.activations),
            ("width_factor", self.width_factors),
            ("depth_factor", self.depth_factors),
        ]
        for i, st in enumerate(self.stages, start=1):
            dims += [(f"s{i}_{name}", opts) for name, opts in st.options().items()]
        object.__setattr__(self, "dims", tuple(dims))

    # ---- TOML / dict form ---------------------------------------------------------------------------
    @classmethod
    def default(cls) -> SearchSpace:
        return cls()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        """Build from the ``[space]`` table of a recipe. Stage keys missing from a ``[[space.stages]]``
        entry take the space-level value of the same name, then the built-in default."""
        if not isinstance(d, Mapping):
            raise SpaceError("the [space] table must be a table")
        if "kind" in d:  # a recipe names its space; only an MBConv one is built here
            if d["kind"] != "mbconv":
                raise SpaceError(f"the recipe's space is {d['kind']!r}; this needs an MBConv space (kind = \"mbconv\")")
            d = {k: v for k, v in d.items() if k != "kind"}
        stage_keys = {f.name for f in fields(StageChoices)}
        top_keys = {f.name for f in fields(cls) if f.init}
        shared = stage_keys - {"channels", "stride", "layers"}
        unknown = sorted(set(d) - top_keys - shared)
        if unknown:
            raise SpaceError(f"unknown key(s) in [space]: {', '.join(unknown)}")
        kw: dict[str, Any] = {}
        for k in top_keys - {"stages"}:
            if k in d:
                kw[k] = _as_tuple(d[k], k) if k in ("activations", "width_factors", "depth_factors") else d[k]
        if "stages" in d:
            raw = d["stages"]
            if not isinstance(raw, list) or not raw:
                raise SpaceError("[[space.stages]] must be a non-empty list of tables")
            stages = []
            for i, sd in enumerate(raw, start=1):
                if not isinstance(sd, Mapping):
                    raise SpaceError(f"stage {i}: must be a table")
                bad = sorted(set(sd) - stage_keys)
                if bad:
                    raise SpaceError(f"stage {i}: unknown key(s): {', '.join(bad)}")
                missing = [k for k in ("channels", "stride", "layers") if k not in sd]
                if missing:
                    raise SpaceError(f"stage {i}: missing key(s): {', '.join(missing)}")
                skw = {k: d[k] for k in shared if k in d}
                skw.update(sd)
                skw = {k: _as_tuple(v, f"stage {i} {k}") if isinstance(v, list) else v for k, v in skw.items()}
                stages.append(StageChoices(**skw))
            kw["stages"] = tuple(stages)
        elif any(k in d for k in shared):
            kw["stages"] = tuple(
                StageChoices(**{**st.__dict__, **{k: _as_tuple(d[k], k) for k in shared if k in d}})
                for st in _DEFAULT_STAGES
            )
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "stages"}
        out["stages"] = [dict(st.__dict__) for st in self.stages]
        return _lists(out)

    kind = "mbconv"

    # ---- codec ------------------------------------------------------------------------------------
    def parse(self, text: str) -> Genotype:
        """A genotype string or JSON object (``GenotypeError`` saying why not); not checked against the space."""
        return parse_genotype(text)

    def info(self) -> dict[str, Any]:
        return {**super().info(), **self.to_dict()}

    def decode(self, vector: Sequence[int]) -> Genotype:
        c = self.to_choices(vector)
        wf, df = c["width_factor"], c["depth_factor"]
        stages = []
        for i, st in enumerate(self.stages, start=1):
            e = c[f"s{i}_expansion"]
            is_ds = c[f"s{i}_op"] == "ds" or e == 1
            stages.append(Stage(
                op="ds" if is_ds else "ir",
                repeats=math.ceil(c[f"s{i}_layers"] * df - 1e-9),
                kernel=c[f"s{i}_kernel"],
                stride=st.stride,
                expansion=1 if is_ds else e,
                channels=make_divisible(st.channels * c[f"s{i}_width"] * wf, self.divisor),
                se_ratio=float(c[f"s{i}_se"]),
                skip=c[f"s{i}_skip"],
            ))
        return Genotype(
            activation=c["activation"],
            stem=make_divisible(self.stem * wf, self.divisor),
            stages=tuple(stages),
            head=make_divisible(self.head * wf, self.divisor),
        ).normalized()

    def extreme(self, largest: bool) -> Genotype:
        """The smallest or the largest network of the space: the decode of every dimension's smallest or largest
        choice. Op: the smallest is ``ds`` and the largest ``ir`` where the stage offers them; skip: a residual
        where the stage offers it (it costs nothing); activation: none is larger, both take the space's first.
        (The ends of the sandwich rule of BigNAS/OFA; the reference cost of a differentiable search.)"""
        most = max if largest else min
        c: dict[str, Any] = {"activation": self.activations[0], "width_factor": most(self.width_factors),
                             "depth_factor": most(self.depth_factors)}
        for i, st in enumerate(self.stages, start=1):
            want = "ir" if largest else "ds"
            c.update({f"s{i}_op": want if want in st.ops else st.ops[0],
                      f"s{i}_kernel": most(st.kernels), f"s{i}_expansion": most(st.expansions),
                      f"s{i}_se": most(st.se_ratios), f"s{i}_skip": True in st.skips,
                      f"s{i}_layers": most(st.layers), f"s{i}_width": most(st.widths)})
        return self.decode(self.from_choices(c))

    def encode(self, genotype: Genotype) -> np.ndarray:
        """A choice vector that decodes to ``genotype.normalized()``; ``SpaceError`` saying why if none."""
        g = genotype.normalized()
        if len(g.stages) != len(self.stages):
            raise SpaceError(f"genotype has {len(g.stages)} stages, the space {self.name!r} has {len(self.stages)}")
        if g.activation not in self.activations:
            raise SpaceError(f"activation {g.activation!r} is not in the space")
        reasons: list[str] = []
        for wf in self.width_factors:
            if make_divisible(self.stem * wf, self.divisor) != g.stem or make_divisible(
                self.head * wf, self.divisor
            ) != g.head:
                reasons.append(f"width factor {wf}: stem/head {g.stem}/{g.head} not reachable")
                continue
            for df in self.depth_factors:
                choices: dict[str, Any] = {"activation": g.activation, "width_factor": wf, "depth_factor": df}
                try:
                    for i, (st, sc) in enumerate(zip(g.stages, self.stages, strict=True), start=1):
                        choices.update({f"s{i}_{k}": v for k, v in _encode_stage(st, sc, wf, df, self.divisor,
                                                                                    i).items()})
                except SpaceError as e:
                    reasons.append(f"width {wf} depth {df}: {e}")
                    continue
                v = self.from_choices(choices)
                if self.decode(v) == g:
                    return v
                reasons.append(f"width {wf} depth {df}: decodes to another network")  # pragma: no cover
        stage_reasons = [r for r in reasons if "stem/head" not in r]  # the closest misses first
        why = (stage_reasons or reasons or ["no match"])[0]
        raise SpaceError(f"genotype is not in space {self.name!r}: {why}")

def _encode_stage(st: Stage, sc: StageChoices, wf: float, df: float, divisor: int, i: int) -> dict[str, Any]:
    if st.op not in OPS:  # an identity layer (NAS-Bench-Macro's) is no choice of this space
        raise SpaceError(f"stage {i} is an {st.op} layer, not an op of the MBConv space ({', '.join(sc.ops)})")
    if st.stride != sc.stride:
        raise SpaceError(f"stage {i} stride {st.stride} is fixed at {sc.stride}")
    if st.op == "ds":
        if "ds" in sc.ops:
            op, e = "ds", sc.expansions[0]
        elif 1 in sc.expansions:
            op, e = "ir", 1
        else:
            raise SpaceError(f"stage {i} cannot be ds")
    else:
        if "ir" not in sc.ops or st.expansion not in sc.expansions:
            raise SpaceError(f"stage {i} ir with expansion {st.expansion} not available")
        op, e = "ir", st.expansion
    se = [r for r in sc.se_ratios if math.isclose(r, st.se_ratio)]
    layers = [n for n in sc.layers if math.ceil(n * df - 1e-9) == st.repeats]
    widths = [w for w in sc.widths if make_divisible(sc.channels * w * wf, divisor) == st.channels]
    if st.kernel not in sc.kernels:
        raise SpaceError(f"stage {i} kernel {st.kernel} not available")
    if not se:
        raise SpaceError(f"stage {i} SE ratio {st.se_ratio} not available")
    if not layers:
        raise SpaceError(f"stage {i} repeats {st.repeats} not reachable")
    if not widths:
        raise SpaceError(f"stage {i} channels {st.channels} not reachable")
    if not st.skip and False not in sc.skips:
        raise SpaceError(f"stage {i} noskip not available")
    # a skip-only genotype can still match a noskip-only stage when no block could skip (decode checks)
    skip = st.skip and True in sc.skips
    return {"op": op, "kernel": st.kernel, "expansion": e, "se": se[0], "skip": skip, "layers": layers[0],
            "width": widths[0]}


def _as_tuple(v: Any, what: str) -> tuple[Any, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise SpaceError(f"{what} must be a non-empty list")
    return tuple(v)


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x: Any) -> bool:
    return is_number(x)  # finite: a 400-digit integer (valid TOML) overflows the float arithmetic below


def _check_space(s: SearchSpace) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SpaceError(msg)

    need(isinstance(s.name, str) and bool(s.name), "space name must be a non-empty string")
    for k in ("stem", "head", "divisor"):
        v = getattr(s, k)
        need(_int(v) and 1 <= v <= MAX_CHANNELS, f"space {k} must be an integer from 1 to {MAX_CHANNELS}")
    need(bool(s.activations) and all(a in ACTIVATIONS for a in s.activations),
         f"activations must be among {', '.join(ACTIVATIONS)}")
    for k in ("width_factors", "depth_factors"):
        v = getattr(s, k)
        need(bool(v) and all(_num(x) and 0 < x < math.inf for x in v), f"{k} must be positive finite numbers")
    for k in ("activations", "width_factors", "depth_factors"):
        v = getattr(s, k)
        need(len(set(v)) == len(v), f"duplicate {k} {list(v)}")
    need(isinstance(s.stages, tuple) and len(s.stages) > 0, "a space needs at least one stage")
    for i, st in enumerate(s.stages, start=1):
        need(isinstance(st, StageChoices), f"stage {i} must be StageChoices")
        need(_int(st.channels) and 1 <= st.channels <= MAX_CHANNELS,
             f"stage {i}: channels must be an integer from 1 to {MAX_CHANNELS}")
        need(_int(st.stride) and st.stride in (1, 2), f"stage {i}: stride must be 1 or 2")
        for name, opts in st.options().items():
            need(isinstance(opts, tuple) and len(opts) > 0, f"stage {i}: {name} choices must be a non-empty list")
            need(len(set(opts)) == len(opts), f"stage {i}: duplicate {name} choices {list(opts)}")
        need(all(o in OPS for o in st.ops), f"stage {i}: ops must be among {', '.join(OPS)}")
        need(all(_int(k) and k >= 1 and k % 2 == 1 for k in st.kernels),
             f"stage {i}: kernels must be odd positive integers")
        need(all(_int(e) and e >= 1 for e in st.expansions), f"stage {i}: expansions must be integers >= 1")
        need("ds" in st.ops or any(e > 1 for e in st.expansions),
             f"stage {i}: with only op ir, some expansion must be > 1")
        need(all(_num(r) and 0 <= r <= 1 for r in st.se_ratios), f"stage {i}: se_ratios must lie in [0, 1]")
        need(all(isinstance(b, bool) for b in st.skips), f"stage {i}: skips must be true/false")
        need(all(_int(n) and 1 <= n <= MAX_REPEATS for n in st.layers),
             f"stage {i}: layers must be integers from 1 to {MAX_REPEATS}")
        need(all(_num(w) and 0 < w < math.inf for w in st.widths), f"stage {i}: widths must be positive finite numbers")
        need(max(st.kernels) <= MAX_KERNEL, f"stage {i}: kernels must be at most {MAX_KERNEL}")
        need(max(st.expansions) <= MAX_EXPANSION, f"stage {i}: expansions must be at most {MAX_EXPANSION}")
        least = min(st.layers) * min(s.depth_factors)  # repeats = ceil(layers x depth factor): at least 1
        need(least > 1e-6, f"stage {i}: layers x depth_factors can be {least:.3g}, which rounds to no block")
        most = max(st.layers) * max(s.depth_factors)  # the deepest and widest a network of the space gets
        need(most <= MAX_REPEATS, f"stage {i}: layers x depth_factors reach {_big(most)} repeats, more than "
             f"{MAX_REPEATS}")
        most = _channels(st.channels * max(st.widths) * max(s.width_factors), s.divisor)
        need(most <= MAX_CHANNELS, f"stage {i}: channels x widths x width_factors reach {_big(most)}, more than "
             f"{MAX_CHANNELS}")
    for k in ("stem", "head"):
        most = _channels(getattr(s, k) * max(s.width_factors), s.divisor)
        need(most <= MAX_CHANNELS, f"space {k} x width_factors reaches {_big(most)} channels, more than "
             f"{MAX_CHANNELS}")


def _channels(value: float, divisor: int) -> float:
    """The channels ``make_divisible`` builds, where that is finite arithmetic (a 1e300 product is shown as is)."""
    return make_divisible(value, divisor) if value < 1e15 and divisor < 1e15 else max(value, divisor)


def _big(x: float) -> str:
    return f"{x:.4g}" if x >= 1e6 else f"{x:g}"
