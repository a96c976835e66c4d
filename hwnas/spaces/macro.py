"""NAS-Bench-Macro (Su et al., 2021, github.com/xiusu/NAS-Bench-Macro) as hwnas genotypes, exactly.

The benchmark's 6,561 = 3^8 CIFAR-10 networks: a 3x3 stem conv (32 channels, stride 1) + BN + ReLU, eight
searchable layers in three stages of 2, 3 and 3 layers, a 1x1 conv to 1280 channels + BN + ReLU, global
pooling and a linear classifier. The first layer of each stage has stride 2 and doubles the width (64, 128,
256); the others keep both. Each layer (dimension ``l1`` .. ``l8``) is one of

===  ==================================================================================================
0    identity: a 1x1 conv (stride s, no bias) + BN where it strides or changes the width, else nothing
1    MBConv, kernel 3, expansion 3: 1x1 expand + BN + ReLU, 3x3 depthwise + BN + ReLU, 1x1 project + BN
2    MBConv, kernel 5, expansion 6 (the same with 5x5 and 6x the input channels)
===  ==================================================================================================

No SE, ReLU everywhere, a residual exactly where an MBConv layer has stride 1 and equal widths (never on
an identity). As a genotype each layer is one stage of one block, in order (``id_r1_s2_c64``,
``ir_r1_k3_s1_e3_c64``, ``ir_r1_k5_s1_e6_c64``, ...), so ``decode`` and ``encode`` are inverse bijections
between the 6,561 vectors and their genotypes, and the benchmark's code is the vector's digits
(``code``/``from_code``: ``"02012100"``). FLOPs and params come from ``hwnas.walker`` and equal the
benchmark's ``flops`` (multiply-adds at 32x32, 10 classes) and ``params`` for every network
(``tests/test_macro.py``); the walker strides the stem 1 up to 64 px, as the benchmark does at 32 px
(at larger inputs hwnas strides it 2, the benchmark would not).

An identity in a stage's later layers is a plain identity wherever it sits, so codes that differ only in
where a stage's later identities sit are one network (``canonical_code``: the benchmark trained 3,969 and
copied each result to its equivalent codes). ``decode`` keeps the code's order all the same.

No torch here; ``build`` imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hwnas import walker
from hwnas.genotype import Genotype, Stage, parse_genotype
from hwnas.spaces.base import CategoricalSpace, SpaceError
from hwnas.spaces.mbconv import GenotypeCosts

STEM: int = 32
HEAD: int = 1280
ACTIVATION: str = "relu"
STAGE_LAYERS: tuple[int, ...] = (2, 3, 3)
STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256)
N_LAYERS: int = sum(STAGE_LAYERS)
CHOICES: tuple[int, ...] = (0, 1, 2)
CHOICE_NAMES: tuple[str, ...] = ("id", "ir_3x3_t3", "ir_5x5_t6")  # the benchmark's ``candidate_OP``
_MBCONV: dict[int, tuple[int, int]] = {1: (3, 3), 2: (5, 6)}  # choice -> (kernel, expansion)


def _positions() -> tuple[tuple[int, int], ...]:
    """(stride, channels) of each of the eight layers."""
    out = []
    for n, c in zip(STAGE_LAYERS, STAGE_CHANNELS, strict=True):
        out += [(2 if i == 0 else 1, c) for i in range(n)]
    return tuple(out)


POSITIONS: tuple[tuple[int, int], ...] = _positions()


def layer_stage(choice: int, stride: int, channels: int) -> Stage:
    """The hwnas stage (one block) of one benchmark layer."""
    if choice == 0:
        return Stage.identity(1, stride, channels)
    kernel, expansion = _MBCONV[choice]
    return Stage("ir", 1, kernel, stride, expansion, channels)


_CANDIDATES: tuple[tuple[Stage, ...], ...] = tuple(tuple(layer_stage(c, s, ch) for c in CHOICES) for s, ch in POSITIONS)


def canonical_code(code: str) -> str:
    """The benchmark's representative of ``code``'s network (its ``get_real_arch``): in each stage, the
    identities after the first layer move to the stage's end. Equivalent codes have one network."""
    _check_code(code)
    out, i = "", 0
    for n in STAGE_LAYERS:
        first, rest = code[i], code[i + 1:i + n]
        out += first + rest.replace("0", "") + "0" * rest.count("0")
        i += n
    return out


def _check_code(code: Any) -> None:
    if not isinstance(code, str) or len(code) != N_LAYERS or not all(ch in "012" for ch in code):
        shown = repr(code) if len(repr(code)) <= 40 else repr(code)[:37] + "..."
        raise SpaceError(f"a NAS-Bench-Macro code is {N_LAYERS} digits 0-2 (0 id, 1 MBConv k3e3, 2 MBConv k5e6), "
                         f"got {shown}")


@dataclass(frozen=True)
class MacroSpace(GenotypeCosts, CategoricalSpace):
    """NAS-Bench-Macro's space (see the module docstring): dimensions ``l1`` .. ``l8``, choices 0/1/2."""

    name: ClassVar[str] = "nas-bench-macro"
    kind: ClassVar[str] = "macro"
    dims: ClassVar[tuple[tuple[str, tuple[Any, ...]], ...]] = tuple((f"l{i}", CHOICES) for i in range(1, N_LAYERS + 1))
    default_resolution: ClassVar[int] = 32
    default_num_classes: ClassVar[int] = 10
    dropout: ClassVar[float] = 0.0  # the benchmark's network has none

    # ---- codec ------------------------------------------------------------------------------------
    def decode(self, vector: Sequence[int]) -> Genotype:
        v = self.validate(vector)
        return Genotype(activation=ACTIVATION, stem=STEM, head=HEAD,
                        stages=tuple(cands[int(c)] for cands, c in zip(_CANDIDATES, v, strict=True)))

    def encode(self, arch: Genotype) -> np.ndarray:
        """The vector that decodes to ``arch.normalized()``; ``SpaceError`` saying why if there is none."""
        if not isinstance(arch, Genotype):
            raise SpaceError(f"expected a Genotype, got {type(arch).__name__}")
        g = arch.normalized()  # e.g. noskip on a strided layer is the same network
        where = f"genotype is not in space {self.name!r}"
        if g.activation != ACTIVATION:
            raise SpaceError(f"{where}: activation {g.activation!r}, the space has {ACTIVATION!r}")
        if (g.stem, g.head) != (STEM, HEAD):
            raise SpaceError(f"{where}: stem/head {g.stem}/{g.head}, the space has {STEM}/{HEAD}")
        if len(g.stages) != N_LAYERS:
            raise SpaceError(f"{where}: {len(g.stages)} stages, the space has {N_LAYERS} (one stage per layer)")
        out = []
        for i, (st, cands) in enumerate(zip(g.stages, _CANDIDATES, strict=True), start=1):
            if st not in cands:
                raise SpaceError(f"{where}: stage {i} {st.to_string()} is none of "
                                 f"{', '.join(c.to_string() for c in cands)}")
            out.append(cands.index(st))
        return np.array(out, dtype=np.int64)

    def code(self, arch: Genotype) -> str:
        """The benchmark's key of ``arch``: its 8 choices as digits, e.g. ``"02012100"``."""
        return "".join(str(int(c)) for c in self.encode(arch))

    def from_code(self, code: str) -> Genotype:
        """The genotype of a benchmark key (``SpaceError`` unless 8 digits 0-2)."""
        _check_code(code)
        return self.decode([int(ch) for ch in code])

    def parse(self, text: str) -> Genotype:
        """An 8-digit benchmark code (any all-digit text is read as one), a genotype string or a genotype JSON
        object; a string or JSON is not checked against the space (``encode`` does that)."""
        if not isinstance(text, str):
            raise SpaceError(f"expected a string, got {type(text).__name__}")
        t = text.strip()
        if t.isascii() and t.isdigit():
            return self.from_code(t)
        if t.startswith("{"):
            return Genotype.from_json(t)
        return parse_genotype(t)

    # ---- the network: costs and builder are GenotypeCosts' (the walker, build_model) ---------------------------
    def layers(self, resolution: int | None = None, num_classes: int | None = None) -> Iterator[walker.Layer]:
        """Every distinct layer (by key) a network of the space runs at ``resolution``, in network order,
        without the plain identities (they run nothing; latency tables price them at 0). Each position's
        input shape is fixed, so the networks of all-0, all-1 and all-2 choices hold them all."""
        res, nc = resolution or self.default_resolution, num_classes or self.default_num_classes
        walks = [list(walker.walk(self.decode([c] * N_LAYERS), res, nc)) for c in CHOICES]
        seen: set[str] = set()
        for column in zip(*walks, strict=True):
            for layer in column:
                if not layer.noop and layer.key() not in seen:
                    seen.add(layer.key())
                    yield layer

    def info(self) -> dict[str, Any]:
        return {**super().info(), "choice_ops": list(CHOICE_NAMES), "stem": STEM, "head": HEAD,
                "stage_layers": list(STAGE_LAYERS), "stage_channels": list(STAGE_CHANNELS)}
