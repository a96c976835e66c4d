"""The NASNet/DARTS cell search space (kind ``darts``): a normal and a reduction cell of 4 blocks each.

Zoph et al. 2018 (NASNet) defined the cell; Liu et al. 2019 (DARTS) searched its 7-op version, and this is
DARTS's *discrete* space, the one a derived DARTS genotype lives in (reference code: quark0/darts
``cnn/genotypes.py``, ``cnn/operations.py``, ``cnn/model.py``).

A cell has two inputs, ``c_{k-2}`` (node 0) and ``c_{k-1}`` (node 1), and 4 blocks (nodes 2..5). Block
``b`` (0..3, node ``b + 2``) picks two (input, op) pairs, each input one of nodes ``0 .. b + 1``, and sums
the two ops' outputs; the cell's output concatenates nodes 2..5 (every intermediate node, as DARTS:
``concat = [2, 3, 4, 5]``). Ops (``DARTS_OPS``, DARTS's ``PRIMITIVES`` without ``none``):
``max_pool_3x3``, ``avg_pool_3x3``, ``skip_connect``, ``sep_conv_3x3``, ``sep_conv_5x5``, ``dil_conv_3x3``,
``dil_conv_5x5``. In a reduction cell an op reading node 0 or 1 has stride 2 (``skip_connect`` there is a
``FactorizedReduce``).

A choice vector has 32 dims, per cell type (``normal``, ``reduce``) and block ``b``: ``{cell}_b{b}_in0``,
``{cell}_b{b}_op0``, ``{cell}_b{b}_in1``, ``{cell}_b{b}_op1`` (inputs ``0..b+1``, ops ``DARTS_OPS``).
``decode``/``encode`` are inverse bijections between vectors and ``DartsArch`` (the pairs in the order
written). Two vectors spell one network when they only swap the two pairs of a block (the sum commutes):
``DartsArch.normalized()`` sorts each block's pairs (by input, then op order) to the representative. Both
pairs may read the same input (NASNet allows it; DARTS's derivation always picks two distinct inputs,
``DartsArch.darts_derivable``). Sizes: 6.9e21 vectors, 3.8e19 networks up to the swap, 1.1e18 with
distinct inputs (DARTS's "about 10^18").

String forms, all accepted by ``parse`` (``DartsArch.to_string`` is the first and round-trips exactly):

* hwnas compact: ``darts:sep3~0+sep3~1,sep3~0+sep3~1,sep3~1+skip~0,skip~0+dil3~2/max3~0+max3~1,...``:
  the normal cell, ``/``, the reduction cell; blocks separated by ``,``, a block's two pairs by ``+``, a pair
  ``op~input`` with the short op names of ``SHORT_OPS``; no whitespace inside;
* DARTS's ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
  reduce_concat=[2, 3, 4, 5])`` (the namedtuple's repr; ``range(2, 6)`` for a concat, any whitespace, a
  trailing comma and either quote as in Python source) (``DartsArch.to_genotype``);
* JSON ``{"normal": [["sep_conv_3x3", 0], ...], "reduce": [...]}`` with optional ``normal_concat`` and
  ``reduce_concat`` (``DartsArch.to_json``).

The network (DARTS's ``NetworkCIFAR`` without the auxiliary head; ``hwnas/spaces/darts_net.py``), for
``channels`` C, ``cells`` L and ``stem_multiplier`` m (a space's settings; default C=16, L=8, m=3, DARTS's
search network; its CIFAR evaluation network is C=36, L=20):

* stem Conv3x3(3 -> mC, no bias) + BN; ``s0 = s1 = stem(x)``;
* cells ``i = 0..L-1``; cells ``L//3`` and ``2L//3`` are reduction cells and double C; each cell first
  preprocesses ``s0`` with ReLU-Conv1x1-BN, or with ``FactorizedReduce`` when the previous cell reduced
  (``s0`` is then twice ``s1``'s size), and ``s1`` with ReLU-Conv1x1-BN, both to C channels; the cell's
  output has 4C channels; then ``s0, s1 = s1, cell(s0, s1)``;
* global average pooling, Linear(4C_last, num_classes) (with bias).

Ops (DARTS ``operations.py``, affine BN everywhere): ``sep_conv_k`` = twice ReLU - depthwise k x k - 1x1 - BN
(the first depthwise carries the stride); ``dil_conv_k`` = ReLU - depthwise k x k dilation 2 - 1x1 - BN;
pools have no BN in the evaluation network (avg pool ``count_include_pad=False``); ``FactorizedReduce(C_in,
C_out)`` = ReLU, two 1x1 stride-2 convs to C_out/2 (the second on the input shifted by one pixel),
concatenated, BN. No auxiliary head; drop-path is a training detail and not modelled.

Costs, pure and torch-free, from one shape walker (``walk``) that serves both:

* FLOPs are hwnas multiply-adds: convolutions (depthwise ones at ``k*k`` per output element and channel) and
  the linear layer only; no BN, pooling, ReLU, sums or concatenations; what
  ``torch.utils.flop_counter.FlopCounterMode`` counts for the built module, divided by 2;
* params are ``sum(p.numel() for p in module.parameters())`` of the built module (BN affine, the classifier's
  bias);
* the two reductions halve the size with paths that agree only on even sizes (``FactorizedReduce`` shifts by
  a pixel), so the resolution must be a positive multiple of 4.

No torch here: ``build`` imports ``hwnas.spaces.darts_net`` (torch) lazily.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hwnas.spaces.base import CategoricalSpace, SpaceError

DARTS_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                              "dil_conv_3x3", "dil_conv_5x5")
SHORT_OPS: dict[str, str] = {"max_pool_3x3": "max3", "avg_pool_3x3": "avg3", "skip_connect": "skip",
                             "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3",
                             "dil_conv_5x5": "dil5"}
_LONG_OPS: dict[str, str] = {v: k for k, v in SHORT_OPS.items()}
# ops of DARTS's code or of NASNet/AmoebaNet genotypes that this space does not have (named in messages)
OTHER_OPS: tuple[str, ...] = ("none", "sep_conv_7x7", "conv_7x1_1x7", "max_pool_5x5", "max_pool_7x7",
                              "avg_pool_5x5", "conv_1x1", "conv_3x3")
CELL_TYPES: tuple[str, ...] = ("normal", "reduce")
N_BLOCKS = 4  # intermediate nodes 2..5
N_PAIRS = 2 * N_BLOCKS
CONCAT: tuple[int, ...] = tuple(range(2, 2 + N_BLOCKS))  # every intermediate node
PREFIX = "darts:"

DEFAULT_CHANNELS = 16  # DARTS's search network: C=16, 8 cells
DEFAULT_CELLS = 8
DEFAULT_STEM_MULTIPLIER = 3
_LIMITS: dict[str, tuple[int, int]] = {"channels": (1, 512), "cells": (3, 64), "stem_multiplier": (1, 8)}

_MAX_TEXT = 4000  # longest string parse looks at (a multi-line Genotype(...) is about 1,000 characters)
_SNIP = 24  # longest piece of bad input quoted back in an error message

Pair = tuple[str, int]


def _snip(text: str, limit: int = _SNIP) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters, so an error message stays one short line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _check_op(op: Any, where: str) -> str:
    if not isinstance(op, str):
        raise SpaceError(f"{where}: op must be a string, not {type(op).__name__}")
    if op not in DARTS_OPS:
        if op in _LONG_OPS:
            raise SpaceError(f"{where}: {op!r} is the compact form's short name; write {_LONG_OPS[op]!r} here")
        what = "is not in the darts space" if op in OTHER_OPS else "is unknown"
        raise SpaceError(f"{where}: op {_snip(op)} {what} (ops: {', '.join(DARTS_OPS)})")
    return op


def _check_input(idx: Any, block: int, where: str) -> int:
    if not _is_int(idx):
        raise SpaceError(f"{where}: input must be an integer, not {type(idx).__name__}")
    i = int(idx)
    if not 0 <= i <= block + 1:
        raise SpaceError(f"{where}: input {i} out of range 0..{block + 1} (block {block} reads c_k-2 = 0, "
                         f"c_k-1 = 1 or an earlier block)")
    return i


def _check_cell(cell: str, pairs: Any) -> tuple[Pair, ...]:
    """A cell's 8 (op, input) pairs as a tuple of tuples, or ``SpaceError`` saying what is wrong."""
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise SpaceError(f"the {cell} cell must be a sequence of {N_PAIRS} (op, input) pairs")
    if len(pairs) != N_PAIRS:
        raise SpaceError(f"the {cell} cell has {N_BLOCKS} blocks of 2 (op, input) pairs ({N_PAIRS}), "
                         f"got {len(pairs)} pairs")
    out: list[Pair] = []
    for k, pair in enumerate(pairs):
        b = k // 2
        where = f"{cell} block {b} pair {k % 2}"
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise SpaceError(f"{where}: expected an (op, input) pair")
        out.append((_check_op(pair[0], where), _check_input(pair[1], b, where)))
    return tuple(out)


@dataclass(frozen=True)
class DartsArch:
    """A DARTS genotype of this space: the normal and reduction cells' 8 ``(op, input)`` pairs each, DARTS's
    order (block ``b`` is pairs ``2b`` and ``2b + 1``); the concat is always nodes 2..5. Frozen, hashable;
    ``SpaceError`` for anything outside the space."""

    normal: tuple[Pair, ...]
    reduce: tuple[Pair, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _check_cell("normal", self.normal))
        object.__setattr__(self, "reduce", _check_cell("reduce", self.reduce))

    def cell(self, cell: str) -> tuple[Pair, ...]:
        """The pairs of the ``"normal"`` or ``"reduce"`` cell."""
        if cell not in CELL_TYPES:
            raise SpaceError(f"a cell is 'normal' or 'reduce', not {_snip(str(cell))}")
        return self.normal if cell == "normal" else self.reduce

    def to_string(self) -> str:
        """The compact hwnas form, ``darts:sep3~0+sep3~1,...,skip~0+dil3~2/max3~0+max3~1,...``."""
        cells = []
        for pairs in (self.normal, self.reduce):
            blocks = ("+".join(f"{SHORT_OPS[op]}~{i}" for op, i in pairs[2 * b:2 * b + 2]) for b in range(N_BLOCKS))
            cells.append(",".join(blocks))
        return PREFIX + "/".join(cells)

    def __str__(self) -> str:
        return self.to_string()

    def to_genotype(self) -> str:
        """DARTS's ``Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[...])``,
        as the namedtuple prints it (``parse`` reads it back)."""
        concat = repr(list(CONCAT))
        return (f"Genotype(normal={list(self.normal)!r}, normal_concat={concat}, "
                f"reduce={list(self.reduce)!r}, reduce_concat={concat})")

    def to_json(self) -> dict[str, Any]:
        """``{"normal": [[op, input] x 8], "normal_concat": [2, 3, 4, 5], "reduce": ..., "reduce_concat": ...}``."""
        return {"normal": [list(p) for p in self.normal], "normal_concat": list(CONCAT),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(CONCAT)}

    def normalized(self) -> DartsArch:
        """The same network with each block's two pairs sorted (by input, then ``DARTS_OPS`` order): two
        architectures are one network exactly when their ``normalized()`` are equal (up to the swap; graph
        isomorphisms that reorder blocks are not considered)."""
        def sort(pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
            out: list[Pair] = []
            for b in range(N_BLOCKS):
                out += sorted(pairs[2 * b:2 * b + 2], key=lambda p: (p[1], DARTS_OPS.index(p[0])))
            return tuple(out)

        return DartsArch(sort(self.normal), sort(self.reduce))

    def darts_derivable(self) -> bool:
        """Whether every block reads two distinct inputs, as DARTS's derivation (top-2 incoming edges from
        distinct nodes) always gives; the space also holds blocks with both pairs on one input."""
        return all(p[2 * b][1] != p[2 * b + 1][1] for p in (self.normal, self.reduce) for b in range(N_BLOCKS))


# ---- parsing ----------------------------------------------------------------------------------------
def parse_arch(text: Any) -> DartsArch:
    """The architecture a compact ``darts:...`` string, a DARTS ``Genotype(...)`` or a JSON object spells.

    Strict: the compact form exactly as ``DartsArch.to_string`` writes it (surrounding whitespace ignored);
    the Genotype form with its four keywords once each; JSON with exactly its keys. Anything else raises a
    one-line ``SpaceError`` naming the problem; work is bounded (input over 4,000 characters is refused unread).
    """
    if not isinstance(text, str):
        raise SpaceError(f"a DARTS architecture must be a str, not {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise SpaceError(f"DARTS architecture string too long ({len(text)} characters; at most {_MAX_TEXT})")
    s = text.strip()
    if not s:
        raise SpaceError("empty DARTS architecture string")
    if s.startswith(PREFIX):
        return _parse_compact(s)
    if s.startswith("Genotype"):
        return _parse_genotype(s)
    if s.startswith("{"):
        return _parse_json(s)
    raise SpaceError(f"a DARTS architecture is 'darts:...', 'Genotype(...)' or a JSON object, got {_snip(s)}")


def _parse_compact(s: str) -> DartsArch:
    body = s[len(PREFIX):]
    cells = body.split("/")
    if len(cells) != 2:
        raise SpaceError(f"'darts:' is followed by the normal and the reduction cell separated by one '/', "
                         f"got {len(cells)} part(s)")
    arch: list[tuple[Pair, ...]] = []
    for cell, text in zip(CELL_TYPES, cells, strict=True):
        blocks = text.split(",")
        if len(blocks) != N_BLOCKS:
            raise SpaceError(f"the {cell} cell has {N_BLOCKS} blocks separated by ',', got {len(blocks)} in "
                             f"{_snip(text)}")
        pairs: list[Pair] = []
        for b, block in enumerate(blocks):
            tokens = block.split("+")
            if len(tokens) != 2:
                raise SpaceError(f"{cell} block {b}: expected two pairs op~input joined by '+', got {_snip(block)}")
            for k, token in enumerate(tokens):
                where = f"{cell} block {b} pair {k}"
                short, sep, idx = token.partition("~")
                if not sep or not short:
                    raise SpaceError(f"{where}: bad token {_snip(token)} (expected op~input, e.g. sep3~0)")
                if short not in _LONG_OPS:
                    hint = f"; the short name is {SHORT_OPS[short]!r}" if short in SHORT_OPS else ""
                    raise SpaceError(f"{where}: op {_snip(short)} is not a short op name (ops: "
                                     f"{', '.join(_LONG_OPS)}){hint}")
                if idx not in {str(i) for i in range(b + 2)}:
                    raise SpaceError(f"{where}: input {_snip(idx)} is not one of 0..{b + 1}")
                pairs.append((_LONG_OPS[short], int(idx)))
        arch.append(tuple(pairs))
    return DartsArch(arch[0], arch[1])


_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([0-9]+)|'([A-Za-z0-9_]*)'|\"([A-Za-z0-9_]*)\"|([()\[\],=]))",
                    re.ASCII)
_GENOTYPE_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")


class _Tokens:
    """The tokens of a ``Genotype(...)`` text: ``(kind, value)`` with kind ``name``, ``int``, ``str`` or the
    punctuation itself. Flat and bounded: the grammar is fixed, so no recursion."""

    def __init__(self, s: str) -> None:
        self.items: list[tuple[str, str]] = []
        pos = 0
        while pos < len(s):
            m = _TOKEN.match(s, pos)
            if m is None:
                rest = s[pos:].lstrip()
                if not rest:
                    break
                raise SpaceError(f"Genotype: unexpected text at {_snip(rest, 16)}")
            name, num, sq, dq, punct = m.groups()
            if name is not None:
                self.items.append(("name", name))
            elif num is not None:
                if len(num) > 3:
                    raise SpaceError(f"Genotype: number {_snip(num, 8)} too large")
                self.items.append(("int", num))
            elif sq is not None or dq is not None:
                self.items.append(("str", sq if sq is not None else dq))
            else:
                self.items.append((punct, punct))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.items[self.i] if self.i < len(self.items) else ("end", "")

    def take(self, kind: str, what: str) -> str:
        k, v = self.peek()
        if k != kind:
            shown = "the end" if k == "end" else _snip(v, 16)
            raise SpaceError(f"Genotype: expected {what}, got {shown}")
        self.i += 1
        return v

    def accept(self, kind: str) -> bool:
        if self.peek()[0] == kind:
            self.i += 1
            return True
        return False


def _parse_genotype(s: str) -> DartsArch:
    t = _Tokens(s)
    if t.take("name", "'Genotype'") != "Genotype":
        raise SpaceError("a DARTS genotype starts with 'Genotype('")
    t.take("(", "'('")
    got: dict[str, Any] = {}
    while not t.accept(")"):
        key = t.take("name", f"a keyword ({', '.join(_GENOTYPE_KEYS)})")
        if key not in _GENOTYPE_KEYS:
            raise SpaceError(f"Genotype: unknown keyword {_snip(key, 16)} (keywords: {', '.join(_GENOTYPE_KEYS)})")
        if key in got:
            raise SpaceError(f"Genotype: {key} given twice")
        t.take("=", f"'=' after {key}")
        got[key] = _genotype_concat(t, key) if key.endswith("_concat") else _genotype_pairs(t, key)
        if not t.accept(","):
            t.take(")", "',' or ')'")
            break
    if t.peek()[0] != "end":
        raise SpaceError(f"Genotype: unexpected text after ')': {_snip(t.peek()[1], 16)}")
    missing = [k for k in _GENOTYPE_KEYS if k not in got]
    if missing:
        raise SpaceError(f"Genotype: missing {', '.join(missing)}")
    for key in ("normal_concat", "reduce_concat"):
        _check_concat(got[key], key)
    return DartsArch(got["normal"], got["reduce"])


def _genotype_pairs(t: _Tokens, key: str) -> list[tuple[str, int]]:
    t.take("[", f"'[' opening {key}")
    pairs: list[tuple[str, int]] = []
    while not t.accept("]"):
        if len(pairs) >= N_PAIRS:
            raise SpaceError(f"Genotype: {key} has more than {N_PAIRS} (op, input) pairs")
        t.take("(", f"'(' opening a pair of {key}")
        op = t.take("str", f"a quoted op name in {key}")
        t.take(",", "',' inside a pair")
        idx = t.take("int", f"an input index in {key}")
        t.take(")", "')' closing a pair")
        pairs.append((op, int(idx)))
        if not t.accept(","):
            t.take("]", f"',' or ']' in {key}")
            break
    return pairs


def _genotype_concat(t: _Tokens, key: str) -> list[int]:
    if t.accept("name"):
        if t.items[t.i - 1][1] != "range":
            raise SpaceError(f"Genotype: {key} must be a list or range(2, 6)")
        t.take("(", "'(' after range")
        lo = int(t.take("int", "range's start"))
        t.take(",", "',' in range")
        hi = int(t.take("int", "range's stop"))
        t.take(")", "')' closing range")
        return list(range(lo, hi))
    t.take("[", f"'[' opening {key}")
    out: list[int] = []
    while not t.accept("]"):
        if len(out) >= 16:
            raise SpaceError(f"Genotype: {key} is too long")
        out.append(int(t.take("int", f"a node index in {key}")))
        if not t.accept(","):
            t.take("]", f"',' or ']' in {key}")
            break
    return out


def _check_concat(value: Any, key: str) -> None:
    if not isinstance(value, list) or not all(_is_int(x) for x in value) or [int(x) for x in value] != list(CONCAT):
        shown = _snip(json.dumps(value) if isinstance(value, list) else type(value).__name__, 20)
        raise SpaceError(f"{key} must be {list(CONCAT)} (the space concatenates every intermediate node), "
                         f"got {shown}")


def _parse_json(s: str) -> DartsArch:
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError) as e:
        raise SpaceError(f"bad JSON DARTS architecture: {(str(e).splitlines() or [type(e).__name__])[0][:80]}") \
            from None
    if not isinstance(obj, dict):
        raise SpaceError("a JSON DARTS architecture must be an object")
    unknown = [str(k) for k in obj if k not in _GENOTYPE_KEYS]
    if unknown or "normal" not in obj or "reduce" not in obj:
        keys = ", ".join(_snip(str(k), 12) for k in list(obj)[:4])
        raise SpaceError(f'a JSON DARTS architecture is {{"normal": [[op, input], ...], "reduce": [...]}} with '
                         f"optional normal_concat, reduce_concat; got keys {keys or 'none'}")
    for key in ("normal_concat", "reduce_concat"):
        if key in obj:
            _check_concat(obj[key], key)
    return DartsArch(_json_pairs(obj["normal"], "normal"), _json_pairs(obj["reduce"], "reduce"))


def _json_pairs(value: Any, cell: str) -> tuple[Pair, ...]:
    if not isinstance(value, list):
        raise SpaceError(f'JSON "{cell}" must be a list of [op, input] pairs')
    for k, pair in enumerate(value[:N_PAIRS]):
        if not isinstance(pair, list) or len(pair) != 2:
            raise SpaceError(f'JSON "{cell}" pair {k}: expected [op, input]')
    return _check_cell(cell, [tuple(p) if isinstance(p, list) else p for p in value])


# ---- the shape walker and costs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One module of the network as the walker sees it: where it sits, what it is, its input and output
    (channels, square size), and its multiply-adds and parameters."""

    where: str  # "stem", "cell3.preprocess0", "cell3.op5", "classifier"
    op: str  # "conv_3x3_bn", "relu_conv_1x1_bn", "factorized_reduce", a DARTS op, "linear"
    c_in: int
    c_out: int
    size_in: int
    size_out: int
    stride: int
    macs: int
    params: int


def _factorized_reduce(c_in: int, c_out: int, size_out: int) -> tuple[int, int]:
    """(macs, params) of FactorizedReduce: two 1x1 stride-2 convs c_in -> c_out/2, BN over c_out."""
    w = 2 * (c_out // 2) * c_in
    return size_out * size_out * w, w + 2 * c_out


def _op_costs(op: str, c: int, stride: int, size_out: int) -> tuple[int, int]:
    """(macs, params) of a cell op at ``c`` channels (``C_in == C_out``) with output size ``size_out``."""
    hw = size_out * size_out
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return 0, 0
    if op == "skip_connect":
        return (0, 0) if stride == 1 else _factorized_reduce(c, c, size_out)
    k = int(op[-1])
    w = c * k * k + c * c  # a depthwise k x k and a pointwise conv
    if op.startswith("sep_conv"):  # two of them, a BN after each
        return 2 * hw * w, 2 * w + 4 * c
    return hw * w, w + 2 * c  # dil_conv


def check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise SpaceError(f"resolution must be an integer, not {type(resolution).__name__}")
    r = int(resolution)
    if r < 4 or r % 4:
        raise SpaceError(f"resolution {r} does not fit the DARTS network: it must be a positive multiple of 4 "
                         "(two reductions, each of whose paths agree only on even sizes)")
    return r


def check_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise SpaceError(f"num_classes must be a positive integer, got {_snip(repr(num_classes))}")
    return int(num_classes)


def reduction_cells(cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells of an ``cells``-cell network (DARTS: ``cells//3`` and ``2*cells//3``)."""
    return tuple(sorted({cells // 3, 2 * cells // 3}))


def walk(arch: DartsArch, resolution: int, num_classes: int, channels: int = DEFAULT_CHANNELS,
         cells: int = DEFAULT_CELLS, stem_multiplier: int = DEFAULT_STEM_MULTIPLIER) -> Iterator[Layer]:
    """Every module with weights or multiply-adds of the network, in order (parameter-free pools and
    identities included with zero costs). ``resolution`` must be a multiple of 4 (``check_resolution``)."""
    h = resolution
    c_stem = stem_multiplier * channels
    yield Layer("stem", "conv_3x3_bn", 3, c_stem, h, h, 1, h * h * 27 * c_stem, 27 * c_stem + 2 * c_stem)
    (c_pp, h_pp), (c_p, h_p) = (c_stem, h), (c_stem, h)
    c = channels
    reductions = reduction_cells(cells)
    reduction_prev = False
    for i in range(cells):
        reduction = i in reductions
        if reduction:
            c *= 2
        if reduction_prev:  # s0 is twice s1's size
            macs, params = _factorized_reduce(c_pp, c, h_pp // 2)
            yield Layer(f"cell{i}.preprocess0", "factorized_reduce", c_pp, c, h_pp, h_pp // 2, 2, macs, params)
        else:
            yield Layer(f"cell{i}.preprocess0", "relu_conv_1x1_bn", c_pp, c, h_pp, h_pp, 1, h_pp * h_pp * c_pp * c,
                        c_pp * c + 2 * c)
        yield Layer(f"cell{i}.preprocess1", "relu_conv_1x1_bn", c_p, c, h_p, h_p, 1, h_p * h_p * c_p * c,
                    c_p * c + 2 * c)
        h_out = h_p // 2 if reduction else h_p
        for j, (op, idx) in enumerate(arch.reduce if reduction else arch.normal):
            stride = 2 if reduction and idx < 2 else 1
            size_in = h_p if idx < 2 else h_out
            macs, params = _op_costs(op, c, stride, size_in // stride)
            yield Layer(f"cell{i}.op{j}", op, c, c, size_in, size_in // stride, stride, macs, params)
        (c_pp, h_pp), (c_p, h_p) = (c_p, h_p), (len(CONCAT) * c, h_out)
        reduction_prev = reduction
    yield Layer("classifier", "linear", c_p, num_classes, 1, 1, 1, c_p * num_classes, c_p * num_classes + num_classes)


# ---- the space ----------------------------------------------------------------------------------------------
def _dims() -> tuple[tuple[str, tuple[Any, ...]], ...]:
    out: list[tuple[str, tuple[Any, ...]]] = []
    for cell in CELL_TYPES:
        for b in range(N_BLOCKS):
            for k in (0, 1):
                out.append((f"{cell}_b{b}_in{k}", tuple(range(b + 2))))
                out.append((f"{cell}_b{b}_op{k}", DARTS_OPS))
    return tuple(out)


DIMS: tuple[tuple[str, tuple[Any, ...]], ...] = _dims()


def distinct_networks(distinct_inputs: bool = False) -> int:
    """Networks of the space up to swapping a block's two pairs (``distinct_inputs``: only blocks whose two
    pairs read different inputs, DARTS's own count, about 1e18)."""
    per_cell = 1
    n_ops = len(DARTS_OPS)
    for b in range(N_BLOCKS):
        n_in = b + 2
        if distinct_inputs:
            per_cell *= math.comb(n_in, 2) * n_ops * n_ops
        else:
            n = n_in * n_ops
            per_cell *= n * (n + 1) // 2
    return per_cell ** len(CELL_TYPES)


@dataclass(frozen=True)
class DartsSpace(CategoricalSpace):
    """The DARTS cell space: 32 dims (see the module docstring); the network's shape (``channels``, ``cells``,
    ``stem_multiplier``) is the space's setting, default DARTS's search network (C=16, 8 cells), 32 px, 10
    classes (CIFAR-10). ``get_space("darts", {"channels": 36, "cells": 20})`` is DARTS's evaluation shape."""

    channels: int = DEFAULT_CHANNELS
    cells: int = DEFAULT_CELLS
    stem_multiplier: int = DEFAULT_STEM_MULTIPLIER

    kind: ClassVar[str] = "darts"
    name: ClassVar[str] = "darts"
    dims: ClassVar[tuple[tuple[str, tuple[Any, ...]], ...]] = DIMS
    default_resolution: ClassVar[int] = 32
    default_num_classes: ClassVar[int] = 10
    has_costs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for key, (lo, hi) in _LIMITS.items():
            v = getattr(self, key)
            if not _is_int(v) or not lo <= int(v) <= hi:
                raise SpaceError(f"darts {key} must be an integer in {lo}..{hi}, got {_snip(repr(v))}")
            object.__setattr__(self, key, int(v))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> DartsSpace:
        """From a recipe's ``[space]`` settings (``channels``, ``cells``, ``stem_multiplier``); ``SpaceError``
        for any other key or a bad value."""
        if not isinstance(config, Mapping):
            raise SpaceError("the darts [space] settings must be a table")
        unknown = sorted(str(k) for k in config if k not in _LIMITS)
        if unknown:
            shown = ", ".join(unknown)
            raise SpaceError(f"the darts space takes {', '.join(_LIMITS)}; unknown setting(s): "
                             f"{shown if len(shown) <= 40 else shown[:40] + '...'}")
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """The settings ``from_dict`` takes (what a study's problem record keeps)."""
        return {key: getattr(self, key) for key in _LIMITS}

    # ---- codec --------------------------------------------------------------------------------------
    def decode(self, vector: Sequence[int]) -> DartsArch:
        c = self.to_choices(vector)
        cells = []
        for cell in CELL_TYPES:
            cells.append(tuple((c[f"{cell}_b{b}_op{k}"], c[f"{cell}_b{b}_in{k}"])
                               for b in range(N_BLOCKS) for k in (0, 1)))
        return DartsArch(cells[0], cells[1])

    def encode(self, arch: DartsArch | str) -> np.ndarray:
        """The choice vector of ``arch`` (a ``DartsArch`` or a string ``parse`` takes), its pairs in the order
        written (``encode(arch.normalized())`` for the representative of its network)."""
        if isinstance(arch, str):
            arch = self.parse(arch)
        if not isinstance(arch, DartsArch):
            raise SpaceError(f"the darts space encodes a DartsArch, not {type(arch).__name__}")
        out: list[int] = []
        for cell in CELL_TYPES:
            pairs = arch.cell(cell)
            for b in range(N_BLOCKS):
                for k in (0, 1):
                    op, idx = pairs[2 * b + k]
                    out += [idx, DARTS_OPS.index(op)]
        return np.array(out, dtype=np.int64)

    def canonical(self, arch: DartsArch) -> DartsArch:
        """``arch.normalized()``: a search trains a network once, however its blocks' pairs are ordered."""
        return arch.normalized()

    def parse(self, text: str) -> DartsArch:
        """A compact ``darts:...`` string, a DARTS ``Genotype(...)`` or a JSON object (``parse_arch``)."""
        return parse_arch(text)

    # ---- costs --------------------------------------------------------------------------------------
    def _arch(self, arch: DartsArch | str) -> DartsArch:
        if isinstance(arch, str):
            return self.parse(arch)
        if not isinstance(arch, DartsArch):
            raise SpaceError(f"the darts space takes a DartsArch, not {type(arch).__name__}")
        return arch

    def walk(self, arch: DartsArch | str, resolution: int | None = None,
             num_classes: int | None = None) -> Iterator[Layer]:
        """The network's modules with their shapes and costs (``walk``) at this space's shape."""
        a = self._arch(arch)
        r = check_resolution(self.default_resolution if resolution is None else resolution)
        k = check_classes(self.default_num_classes if num_classes is None else num_classes)
        return walk(a, r, k, self.channels, self.cells, self.stem_multiplier)

    def flops(self, arch: DartsArch | str, resolution: int | None = None, num_classes: int | None = None) -> int:
        """Multiply-adds of the conv and linear layers of the built network at ``resolution``."""
        return sum(layer.macs for layer in self.walk(arch, resolution, num_classes))

    def params(self, arch: DartsArch | str, num_classes: int | None = None) -> int:
        """Trainable parameters of the built network (BN affine, classifier bias)."""
        return sum(layer.params for layer in self.walk(arch, self.default_resolution, num_classes))

    def build(self, arch: DartsArch | str, num_classes: int | None = None, input_size: int | None = None) -> Any:
        """DARTS's ``NetworkCIFAR`` (no auxiliary head) at this space's shape; ``forward`` returns logits.
        ``input_size`` is only checked (the network takes any multiple of 4)."""
        a = self._arch(arch)
        k = check_classes(self.default_num_classes if num_classes is None else num_classes)
        check_resolution(self.default_resolution if input_size is None else input_size)
        from hwnas.spaces.darts_net import NetworkCIFAR  # torch

        return NetworkCIFAR(a, num_classes=k, C=self.channels, layers=self.cells,
                            stem_multiplier=self.stem_multiplier)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "channels": self.channels, "cells": self.cells,
                "stem_multiplier": self.stem_multiplier, "reduction_cells": list(reduction_cells(self.cells)),
                "ops": list(DARTS_OPS), "short_ops": dict(SHORT_OPS), "concat": list(CONCAT),
                "networks": distinct_networks(), "networks_distinct_inputs": distinct_networks(True)}


def _arch(normal: Sequence[Pair], reduce: Sequence[Pair]) -> DartsArch:
    return DartsArch(tuple(normal), tuple(reduce))


# DARTS's published cells (quark0/darts cnn/genotypes.py): V1 first-order, V2 second-order (the paper's
# 2.76 % CIFAR-10 network, 3.3M params at C=36 and 20 cells).
DARTS_V1 = _arch(
    [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 0),
     ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0), ("max_pool_3x3", 0),
     ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
)
DARTS_V2 = _arch(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0),
     ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
)

__all__ = [
    "CELL_TYPES",
    "CONCAT",
    "DARTS_OPS",
    "DARTS_V1",
    "DARTS_V2",
    "DIMS",
    "SHORT_OPS",
    "DartsArch",
    "DartsSpace",
    "Layer",
    "distinct_networks",
    "parse_arch",
    "reduction_cells",
    "walk",
]
