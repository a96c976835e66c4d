"""The one architecture type that flows through hwnas: a frozen, validated ``Genotype``.

A genotype is a concrete network: every channel count and repeat count is final (width/depth factors of
the search space are already applied) and it carries no input resolution. Two codecs round-trip exactly:

String form (comma-separated tokens, no spaces, so it needs no shell quoting)::

    swish,stem32,ds_r1_k3_s1_c16_se0.25,ir_r2_k3_s2_e6_c24_se0.25,...,head1280

* ``relu`` | ``relu6`` | ``swish``  -- activation used everywhere (stem, blocks, SE, head)
* ``stem<C>``                      -- 3x3 stride-2 stem convolution with C output channels
* one stage token per stage, in the spirit of timm's block strings: ``<op>_<opt>_<opt>...`` with

  ==========  ===========================================================================
  ``op``      ``ir`` (MBConv, inverted residual), ``ds`` (depthwise-separable conv) or
              ``id`` (identity layer, see below)
  ``r<N>``    repeats: number of blocks in the stage (required)
  ``k<K>``    depthwise kernel size, odd (required; not for ``id``)
  ``s<S>``    stride of the stage's first block, 1 or 2 (required)
  ``e<E>``    expansion ratio, integer >= 2 for ``ir`` (required there); ``ds`` takes only ``e1``
  ``c<C>``    output channels (required)
  ``se<R>``   squeeze-excitation ratio in (0, 1], relative to the block's input channels
  ``noskip``  no residual connections in this stage (by default a block adds its input
              whenever stride is 1 and input and output channels agree)
  ==========  ===========================================================================

  ``ir`` with ``e1`` *is* ``ds`` (no expansion conv), so it is rejected with a hint, keeping one
  spelling per network.

  ``id_r<N>_s<S>_c<C>`` is a stage of identity layers (NAS-Bench-Macro's "skip this layer" choice). Its
  first block, where it strides or changes the width, is a projection: a 1x1 convolution (stride S, no
  bias) + BN, no activation, no residual; every other block is a plain identity (no parameters, no
  FLOPs, no kernel). ``r``, ``s`` and ``c`` are all it takes: ``k``, ``e``, ``se`` and ``noskip`` mean
  nothing for it and are rejected (in Python an ``id`` stage has kernel 1, expansion 1, no SE and
  ``skip`` True: ``Stage.identity(repeats, stride, channels)``).
* ``head<C>``                      -- final 1x1 convolution before pooling and the classifier

JSON form: ``{"activation": ..., "stem": ..., "stages": [{...}], "head": ...}`` (see ``to_json``). An
``ir``/``ds`` stage is written with all eight fields; an ``id`` stage as ``{"op": "id", "repeats": N,
"stride": S, "channels": C}`` (read back also with the neutral ``kernel`` 1, ``expansion`` 1, ``se_ratio``
0 and ``skip`` true, and with nothing else).

``Genotype.normalized`` has no rule for ``id``: a stage of plain identities is kept (spaces encode stages by
position, and the blocks count in the stochastic-depth ramp of ``hwnas.model``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from hwnas.units import NumberError, dumps_strict, number

ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "swish")
OPS: tuple[str, ...] = ("ir", "ds")
"""The MBConv-family block ops, the ones a search space's stage may offer (``hwnas.spaces.mbconv``)."""
STAGE_OPS: tuple[str, ...] = (*OPS, "id")
"""Every op a genotype stage may have: ``OPS`` and ``id``, the identity layer (see the module docstring)."""


class GenotypeError(ValueError):
    """An invalid genotype or an unparsable genotype string/JSON. The message is one line."""


@dataclass(frozen=True)
class Stage:
    """A stage: ``repeats`` identical blocks; only the first one strides and changes width."""

    op: str
    repeats: int
    kernel: int
    stride: int
    expansion: int
    channels: int
    se_ratio: float = 0.0
    skip: bool = True

    def __post_init__(self) -> None:
        problem = _stage_problem(self)
        if problem:
            raise GenotypeError(problem)

    @classmethod
    def identity(cls, repeats: int, stride: int, channels: int) -> Stage:
        """An ``id`` stage: ``repeats`` identity layers, the first a 1x1 conv + BN projection where it strides
        or changes the width."""
        return cls("id", repeats, 1, stride, 1, channels)

    def to_string(self) -> str:
        if self.op == "id":
            return f"id_r{self.repeats}_s{self.stride}_c{self.channels}"
        parts = [self.op, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.op == "ir":
            parts.append(f"e{self.expansion}")
        parts.append(f"c{self.channels}")
        if self.se_ratio:
            parts.append(f"se{_fmt_float(self.se_ratio)}")
        if not self.skip:
            parts.append("noskip")
        return "_".join(parts)


def _fmt_float(x: float) -> str:
    return repr(float(x))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


MAX_REPEATS = 1000  # far above any real network (EfficientNet-B7: 13), low enough that walking one is instant
MAX_CHANNELS = 1 << 18  # far above any real network (EfficientNet-L2's head: 5504); 100x width of a 1280 head fits
MAX_KERNEL = 63
MAX_STAGES = 100  # EfficientNet has 7; 100 stages of 1000 blocks still walk in about a second
MAX_EXPANSION = 64


def _shown(v: int) -> str:
    """An integer for a message: a 200-digit one as 1e+200, a 5000-digit one by its length."""
    s = str(v)
    return s if len(s) <= 12 else f"{float(v):.3g}" if len(s) < 300 else f"{s[:6]}... ({len(s)} digits)"


def _stage_problem(s: Stage) -> str | None:
    if not isinstance(s.op, str) or s.op not in STAGE_OPS:
        return f"unknown op {_short(str(s.op))} (expected one of {', '.join(STAGE_OPS)})"
    for name in ("repeats", "kernel", "stride", "expansion", "channels"):
        if not _is_int(getattr(s, name)):
            return f"{name} must be an integer, got {getattr(s, name)!r}"
    if not 1 <= s.repeats <= MAX_REPEATS:
        return f"repeats must be 1 to {MAX_REPEATS}, got {_shown(s.repeats)}"
    if s.kernel < 1 or s.kernel % 2 == 0 or s.kernel > MAX_KERNEL:
        return f"kernel must be odd, 1 to {MAX_KERNEL}, got {_shown(s.kernel)}"
    if s.stride not in (1, 2):
        return f"stride must be 1 or 2, got {_shown(s.stride)}"
    if not 1 <= s.channels <= MAX_CHANNELS:
        return f"channels must be 1 to {MAX_CHANNELS}, got {_shown(s.channels)}"
    if s.op == "id":
        return _id_problem(s)
    if s.expansion > MAX_EXPANSION:
        return f"expansion must be at most {MAX_EXPANSION}, got {_shown(s.expansion)}"
    if s.op == "ds" and s.expansion != 1:
        return f"ds blocks have no expansion (e1), got e{s.expansion}"
    if s.op == "ir" and s.expansion < 2:
        if s.expansion == 1:
            return "ir with expansion 1 is a ds block: write ds_... instead"
        return f"expansion must be >= 2 for ir, got {s.expansion}"
    if isinstance(s.se_ratio, bool) or not isinstance(s.se_ratio, (int, float)):
        return f"se ratio must be a number, got {s.se_ratio!r}"
    if not (0.0 <= s.se_ratio <= 1.0) or math.isnan(s.se_ratio):
        return f"se ratio must be in [0, 1], got {s.se_ratio}"
    if not isinstance(s.skip, bool):
        return f"skip must be a boolean, got {s.skip!r}"
    return None


def _id_problem(s: Stage) -> str | None:
    """An ``id`` stage has no kernel, expansion, SE or residual option: only their neutral values."""
    if s.kernel != 1:
        return f"id stages have no kernel option (kernel 1), got k{_shown(s.kernel)}"
    if s.expansion != 1:
        return f"id stages have no expansion option (expansion 1), got e{_shown(s.expansion)}"
    if isinstance(s.se_ratio, bool) or not isinstance(s.se_ratio, (int, float)) or s.se_ratio != 0:
        return f"id stages have no SE option (se_ratio 0), got {str(s.se_ratio)[:20]!r}"
    if s.skip is not True:
        return f"id stages have no skip option (skip true), got {str(s.skip)[:20]!r}"
    return None


@dataclass(frozen=True)
class Genotype:
    """stem conv -> stages of MBConv/DS/identity blocks -> 1x1 head conv -> global pool -> linear classifier."""

    activation: str
    stem: int
    stages: tuple[Stage, ...]
    head: int
    _str: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise GenotypeError(
                f"unknown activation {self.activation!r} (expected one of {', '.join(ACTIVATIONS)})"
            )
        for name in ("stem", "head"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise GenotypeError(f"{name} channels must be a positive integer, got {v!r}")
            if v > MAX_CHANNELS:
                raise GenotypeError(f"{name} channels must be at most {MAX_CHANNELS}, got {_shown(v)}")
        if not isinstance(self.stages, tuple):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise GenotypeError("a genotype needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise GenotypeError(f"a genotype has at most {MAX_STAGES} stages, got {len(self.stages)}")
        for i, s in enumerate(self.stages):
            if not isinstance(s, Stage):
                raise GenotypeError(f"stage {i} is not a Stage: {s!r}")

    # ---- string codec -------------------------------------------------------------------------
    def to_string(self) -> str:
        if not self._str:
            tokens = [self.activation, f"stem{self.stem}", *(s.to_string() for s in self.stages),
                      f"head{self.head}"]
            object.__setattr__(self, "_str", ",".join(tokens))
        return self._str

    __str__ = to_string

    @classmethod
    def from_string(cls, text: str) -> Genotype:
        return parse_genotype(text)

    # ---- JSON codec ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "activation": self.activation,
            "stem": self.stem,
            "stages": [
                {"op": s.op, "repeats": s.repeats, "stride": s.stride, "channels": s.channels} if s.op == "id" else
                {
                    "op": s.op, "repeats": s.repeats, "kernel": s.kernel, "stride": s.stride,
                    "expansion": s.expansion, "channels": s.channels, "se_ratio": s.se_ratio,
                    "skip": s.skip,
                }
                for s in self.stages
            ],
            "head": self.head,
        }

    def to_json(self, indent: int | None = None) -> str:
        return dumps_strict(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Any) -> Genotype:
        if not isinstance(d, dict):
            raise GenotypeError(f"genotype JSON must be an object, got {type(d).__name__}")
        d = dict(d)
        if "genotype" in d and "activation" not in d:  # accept `hwnas describe --json` output too
            inner = d["genotype"]
            return parse_genotype(inner) if isinstance(inner, str) else cls.from_dict(inner)
        missing = [k for k in ("activation", "stem", "stages", "head") if k not in d]
        if missing:
            raise GenotypeError(f"genotype JSON lacks key(s): {', '.join(missing)}")
        extra = sorted(set(d) - {"activation", "stem", "stages", "head"})
        if extra:
            raise GenotypeError(f"genotype JSON has unknown key(s): {', '.join(extra)}")
        if not isinstance(d["stages"], list):
            raise GenotypeError("genotype JSON 'stages' must be a list")
        stages = []
        fields = ("op", "repeats", "kernel", "stride", "expansion", "channels", "se_ratio", "skip")
        for i, sd in enumerate(d["stages"]):
            if not isinstance(sd, dict):
                raise GenotypeError(f"stage {i}: must be an object")
            unknown = sorted(set(sd) - set(fields))
            if unknown:
                raise GenotypeError(f"stage {i}: unknown key(s): {', '.join(unknown)}")
            optional = {"expansion"} if sd.get("op") == "ds" else {"kernel", "expansion"} if sd.get("op") == "id" \
                else set()
            need = [k for k in fields[:6] if k not in sd and k not in optional]
            if need:
                raise GenotypeError(f"stage {i}: missing key(s): {', '.join(need)}")
            kw = {k: sd[k] for k in fields if k in sd}
            kw.setdefault("expansion", 1)
            if sd.get("op") == "id":
                kw.setdefault("kernel", 1)
            if isinstance(kw.get("se_ratio"), int) and not isinstance(kw.get("se_ratio"), bool):
                try:  # the checked conversion: float() of a 400-digit integer raises OverflowError
                    kw["se_ratio"] = number(kw["se_ratio"], "se ratio", low=0, high=1, must="in [0, 1]")
                except NumberError as e:
                    raise GenotypeError(f"stage {i}: {e}") from None
            try:
                stages.append(Stage(**kw))
            except GenotypeError as e:
                raise GenotypeError(f"stage {i}: {e}") from None
        return cls(activation=d["activation"], stem=d["stem"], stages=tuple(stages), head=d["head"])

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"invalid genotype JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_dict(d)

    # ---- helpers ------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    def normalized(self) -> Genotype:
        """The same network with one spelling: ``noskip`` is dropped on stages where no block could have
        a residual anyway (e.g. a single block that strides or changes width)."""
        stages, in_c = [], self.stem
        for s in self.stages:
            can_skip = s.repeats > 1 or (s.stride == 1 and in_c == s.channels)
            stages.append(s if s.skip or can_skip else replace(s, skip=True))
            in_c = s.channels
        return replace(self, stages=tuple(stages))


_STAGE_OPTS = {"r": "repeats", "k": "kernel", "s": "stride", "e": "expansion", "c": "channels"}


def _short(text: str) -> str:
    """A token for a message: its repr, cut to 60 characters."""
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _parse_int(text: str, what: str, where: str) -> int:
    if not (text.isascii() and text.isdigit()):  # isdigit alone takes "²", which int() refuses
        raise GenotypeError(f"{where}: {what} needs a non-negative integer, got {text!r}")
    if len(text.lstrip("0")) > 18:  # beyond any limit below (and int() refuses 4300 digits)
        raise GenotypeError(f"{where}: {what} {text[:12]}... ({len(text)} digits) is too large")
    return int(text)


def _parse_stage(token: str, where: str) -> Stage:
    parts = token.split("_")
    op = parts[0]
    if op not in STAGE_OPS:
        raise GenotypeError(f"{where}: unknown op {_short(op)} in {_short(token)} "
                            f"(expected one of {', '.join(STAGE_OPS)})")
    kw: dict[str, Any] = {"op": op}
    for p in parts[1:]:
        if op == "id" and (p == "noskip" or p.startswith("se") or p[:1] in ("k", "e")):
            raise GenotypeError(f"{where}: {_short(token)}: an id stage takes only r<N>, s<S> and c<C>, "
                                f"not {_short(p)}")
        if p == "noskip":
            key, value = "skip", False
        elif p.startswith("se"):
            key = "se_ratio"
            try:
                value = float(p[2:])
            except ValueError:
                raise GenotypeError(f"{where}: bad SE ratio {_short(p)} in {_short(token)}") from None
        elif p[:1] in _STAGE_OPTS:
            key = _STAGE_OPTS[p[0]]
            value = _parse_int(p[1:], key, f"{where} ({_short(token)})")
        else:
            raise GenotypeError(f"{where}: unknown option {_short(p)} in {_short(token)}")
        if key in kw:
            raise GenotypeError(f"{where}: option {_short(p)} given twice in {_short(token)}")
        kw[key] = value
    if op == "ds":
        kw.setdefault("expansion", 1)
    if op == "id":
        kw.update(kernel=1, expansion=1)
    missing = [f"{k}<{v}>" for k, v in _STAGE_OPTS.items() if v not in kw]
    if missing:
        raise GenotypeError(f"{where}: {_short(token)} lacks {', '.join(missing)}")
    try:
        return Stage(**kw)
    except GenotypeError as e:
        raise GenotypeError(f"{where}: {_short(token)}: {e}") from None


def parse_genotype(text: str) -> Genotype:
    """Parse the string form. Errors name the offending token, its index and character offset."""
    if not isinstance(text, str) or not text.strip():
        raise GenotypeError("empty genotype string")
    text = text.strip()
    tokens = text.split(",")
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t) + 1

    def where(i: int) -> str:
        return f"token {i + 1} at character {offsets[i] + 1}"

    if len(tokens) < 4:
        raise GenotypeError(
            f"genotype string needs '<activation>,stem<C>,<stage>...,head<C>', got {len(tokens)} token(s)"
        )
    for i, t in enumerate(tokens):
        if not t:
            raise GenotypeError(f"{where(i)}: empty token")
    act = tokens[0]
    if act not in ACTIVATIONS:
        raise GenotypeError(f"{where(0)}: unknown activation {_short(act)} (expected one of {', '.join(ACTIVATIONS)})")
    if not tokens[1].startswith("stem"):
        raise GenotypeError(f"{where(1)}: expected stem<C>, got {_short(tokens[1])}")
    stem = _parse_int(tokens[1][4:], "stem", where(1))
    if stem < 1:
        raise GenotypeError(f"{where(1)}: stem channels must be >= 1, got {stem}")
    if not tokens[-1].startswith("head"):
        raise GenotypeError(f"{where(len(tokens) - 1)}: expected head<C>, got {_short(tokens[-1])}")
    head = _parse_int(tokens[-1][4:], "head", where(len(tokens) - 1))
    if head < 1:
        raise GenotypeError(f"{where(len(tokens) - 1)}: head channels must be >= 1, got {head}")
    stages = tuple(_parse_stage(tokens[i], where(i)) for i in range(2, len(tokens) - 1))
    return Genotype(activation=act, stem=stem, stages=stages, head=head)
