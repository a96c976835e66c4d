"""NAS-Bench-201's cell space, and TransNAS-Bench-101's micro cell space (the same cell, 4 ops).

The cell (Dong & Yang, ICLR 2020) is a DAG of 4 nodes; node ``j`` is the sum over ``i < j`` of
``op_{j<-i}(node i)``, and the cell's output is node 3. Its 6 edges, in the official string order
``1<-0 | 2<-0, 2<-1 | 3<-0, 3<-1, 3<-2``, each take one op:

* ``none``: zero (NB201's ``Zero``: ``x.mul(0.0)``; it holds no weights and does no multiply-add);
* ``skip_connect``: identity (inside a cell ``C_in == C_out`` and stride 1, so never ``FactorizedReduce``);
* ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU - Conv(k, stride 1, padding k//2, no bias) - BatchNorm (affine,
  running stats);
* ``avg_pool_3x3``: ``AvgPool2d(3, stride 1, padding 1, count_include_pad=False)`` (no 1x1 preprocessing
  conv, since ``C_in == C_out``). NB201 only; TransNAS-Bench-101's micro cell has the first four ops.

A choice vector is one op index per edge (dims ``edge_1_0, edge_2_0, edge_2_1, edge_3_0, edge_3_1,
edge_3_2``: ``edge_j_i`` is the edge into node ``j`` from node ``i``), op order as in ``NB201_OPS``; every
vector is a distinct string (15,625 for NB201, 4,096 for TransNAS micro). Vector order is *not* NB201's
official index order: map through the benchmark's ``configs.txt`` for that.

The network (``TinyNetwork`` in D-X-Y/AutoDL-Projects ``xautodl/models/cell_infers/tiny_network.py``;
cells in ``cells.py``, ops in ``xautodl/models/cell_operations.py``), for ``C=16, N=5``:

* stem: Conv3x3(3 -> 16, padding 1, no bias) + BN;
* 3 stages of 5 cells at 16, 32, 64 channels, joined by 2 ``ResNetBasicblock(C, 2C, stride 2)``:
  ``conv_a`` = ReLU-Conv3x3(stride 2)-BN, ``conv_b`` = ReLU-Conv3x3-BN, shortcut = AvgPool2d(2, 2) then
  Conv1x1(no bias) (no BN, no ReLU); output = shortcut + conv_b;
* BN + ReLU, global average pooling, Linear(64, num_classes) (with bias).

Costs, pure and torch-free (``flops``, ``params``):

* FLOPs are hwnas multiply-adds: convolutions and the linear layer only (no bias adds, no BN, pooling,
  ReLU or sums). *Every* edge is computed in NB201's forward, so a conv on an edge whose output is unused
  (a node that only feeds ``none`` edges, or a cell whose output is all-zero) still counts: the count is
  what the module executes, as ``torch.utils.flop_counter.FlopCounterMode`` sees it (its total / 2).
* Params are what ``sum(p.numel() for p in module.parameters())`` gives for the built module: every
  edge's conv and BN (affine), dead or not; the reduction blocks' shortcut convs; the classifier's bias.
* NB201's published ``flop`` (in M) is this count plus ``num_classes`` (its counter adds the linear bias),
  divided by 1e6; its ``params`` (in M) is this count / 1e6.
* The reduction block adds a stride-2 conv path (``ceil(H/2)``) and a 2x2 pooling path (``floor(H/2)``);
  they agree only for even sizes, so the resolution must be a positive multiple of 4.

No torch here: ``build`` imports ``hwnas.spaces.nb201_net`` (torch) lazily.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hwnas.spaces.base import CategoricalSpace, SpaceError

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
TRANSNAS_MICRO_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
KNOWN_OPS: tuple[str, ...] = NB201_OPS  # every op a CellArch may hold; a space may allow fewer

N_NODES = 4  # input node 0, intermediate nodes 1 and 2, output node 3
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), string order
EDGE_NAMES: tuple[str, ...] = tuple(f"edge_{j}_{i}" for j, i in EDGES)

NB201_C = 16  # TinyNetwork's C: stage widths 16, 32, 64
NB201_N = 5  # cells per stage

_MAX_TEXT = 1000  # longest string parse looks at (an NB201 string is at most 95 characters)
_SNIP = 24  # longest piece of bad input quoted back in an error message
_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def _snip(text: str, limit: int = _SNIP) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters, so an error message stays one short line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


@dataclass(frozen=True)
class CellArch:
    """One cell: the ops of its 6 edges in NB201 string order (``EDGES``). Frozen and hashable.

    Any op in ``KNOWN_OPS`` is allowed here; whether a space has the op is the space's ``encode``'s
    business. ``SpaceError`` for a wrong edge count or an unknown op."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
            raise SpaceError(f"CellArch ops must be a sequence of {len(EDGES)} op names")
        ops = tuple(self.ops)
        if len(ops) != len(EDGES):
            raise SpaceError(f"a cell has {len(EDGES)} edges, got {len(ops)} ops")
        for (j, i), op in zip(EDGES, ops, strict=True):
            if not isinstance(op, str) or op not in KNOWN_OPS:
                shown = _snip(op) if isinstance(op, str) else type(op).__name__
                raise SpaceError(f"edge {j}<-{i}: unknown op {shown} (ops: {', '.join(KNOWN_OPS)})")
        object.__setattr__(self, "ops", ops)

    def op(self, to: int, frm: int) -> str:
        """The op on edge ``to <- frm``."""
        return self.ops[EDGES.index((to, frm))]

    def to_string(self) -> str:
        """The official NB201 string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...~2|``."""
        nodes = []
        for j in range(1, N_NODES):
            tokens = [f"{self.op(j, i)}~{i}" for i in range(j)]
            nodes.append("|" + "|".join(tokens) + "|")
        return "+".join(nodes)

    def to_json(self) -> dict[str, Any]:
        """JSON form ``{"cell": <NB201 string>}`` (``parse`` also takes ``{"ops": [6 names]}``)."""
        return {"cell": self.to_string()}

    def __str__(self) -> str:
        return self.to_string()

    def live_nodes(self) -> tuple[bool, ...]:
        """For each node, whether it can be nonzero (a path of non-``none`` edges from node 0): NB201's
        ``Structure.check_valid`` idea. ``live_nodes()[3]`` False means the cell outputs zeros."""
        live = [True]
        for j in range(1, N_NODES):
            live.append(any(live[i] and self.op(j, i) != "none" for i in range(j)))
        return tuple(live)

    def is_connected(self) -> bool:
        """Whether the cell's output depends on its input (False: all-zero output, a degenerate network)."""
        return self.live_nodes()[-1]


def parse_cell(text: Any, ops_allowed: Sequence[str] = NB201_OPS) -> CellArch:
    """The cell an NB201 string (or a JSON object ``{"cell": str}`` / ``{"ops": [6 names]}``) spells.

    Strict: exactly 3 ``+``-separated nodes, node ``j`` written ``|op~0|...|op~(j-1)|`` with its inputs in
    order, each op in ``ops_allowed``; surrounding whitespace is ignored. So ``parse_cell(a.to_string())
    == a`` and ``parse_cell(s).to_string() == s`` for every valid ``s``. Anything else raises a one-line
    ``SpaceError`` naming the problem; work is bounded (input over 1,000 characters is refused unread).
    """
    allowed = tuple(ops_allowed)
    if not isinstance(text, str):
        raise SpaceError(f"a cell string must be a str, not {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise SpaceError(f"cell string too long ({len(text)} characters; an NB201 string has at most 95)")
    s = text.strip()
    if not s:
        raise SpaceError("empty cell string")
    if s.startswith("{"):
        return _parse_json(s, allowed)
    parts = s.split("+")
    if len(parts) != N_NODES - 1:
        raise SpaceError(f"a cell string has {N_NODES - 1} nodes separated by '+', got {len(parts)} in {_snip(s)}")
    ops: list[str] = []
    for j, part in enumerate(parts, start=1):
        if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
            raise SpaceError(f"node {j}: expected '|op~0|...|', got {_snip(part)}")
        tokens = part[1:-1].split("|")
        if len(tokens) != j:
            raise SpaceError(f"node {j} must have {j} input(s), got {len(tokens)} in {_snip(part)}")
        for i, token in enumerate(tokens):
            op, sep, idx = token.partition("~")
            if not sep or not op:
                raise SpaceError(f"node {j}: bad token {_snip(token)} (expected op~index)")
            if idx != str(i):
                raise SpaceError(f"node {j}: input {_snip(idx)} where {i} expected (inputs in order 0..{j - 1})")
            ops.append(_check_op(op, allowed, f"edge {j}<-{i}"))
    return CellArch(tuple(ops))


def _check_op(op: Any, allowed: tuple[str, ...], where: str) -> str:
    if not isinstance(op, str):
        raise SpaceError(f"{where}: op must be a string, not {type(op).__name__}")
    if op not in allowed:
        what = "is not in this space" if op in KNOWN_OPS else "is unknown"
        raise SpaceError(f"{where}: op {_snip(op)} {what} (ops: {', '.join(allowed)})")
    return op


def _parse_json(s: str, allowed: tuple[str, ...]) -> CellArch:
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError) as e:
        raise SpaceError(f"bad JSON cell: {(str(e).splitlines() or [type(e).__name__])[0][:80]}") from None
    if not isinstance(obj, dict):
        raise SpaceError("a JSON cell must be an object")
    if set(obj) == {"cell"} and isinstance(obj["cell"], str):
        if obj["cell"].lstrip().startswith("{"):
            raise SpaceError('JSON "cell" must be an NB201 string, not JSON')
        return parse_cell(obj["cell"], allowed)
    if set(obj) == {"ops"} and isinstance(obj["ops"], list):
        if len(obj["ops"]) != len(EDGES):
            raise SpaceError(f'JSON "ops" must list {len(EDGES)} ops, got {len(obj["ops"])}')
        return CellArch(tuple(_check_op(op, allowed, f"edge {j}<-{i}")
                              for (j, i), op in zip(EDGES, obj["ops"], strict=True)))
    keys = ", ".join(_snip(str(k), 12) for k in list(obj)[:4])
    raise SpaceError(f'a JSON cell is {{"cell": "<NB201 string>"}} or {{"ops": [6 names]}}; got keys {keys}')


# ---- costs ------------------------------------------------------------------------------------------
def _check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise SpaceError(f"resolution must be an integer, not {type(resolution).__name__}")
    r = int(resolution)
    if r < 4 or r % 4:
        raise SpaceError(f"resolution {r} does not fit NB201's network: it must be a positive multiple of 4 "
                         "(each reduction block halves it with a conv and a 2x2 pooling that must agree)")
    return r


def _check_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise SpaceError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _cell_conv_weights(arch: CellArch, c: int) -> int:
    """Weights of a cell's convolutions at ``c`` channels (``c -> c``, every edge, dead or not)."""
    return sum(_KERNEL[op] ** 2 * c * c for op in arch.ops if op in _KERNEL)


def _cell_bn_params(arch: CellArch, c: int) -> int:
    return sum(2 * c for op in arch.ops if op in _KERNEL)


def cell_network_flops(arch: CellArch, resolution: int, num_classes: int, c: int = NB201_C,
                       n: int = NB201_N) -> int:
    """Multiply-adds of NB201's TinyNetwork (convs + linear) at ``resolution`` (a multiple of 4)."""
    h = resolution
    total = h * h * 9 * 3 * c  # stem
    for stage in range(3):
        cs = c * 2**stage
        if stage:  # ResNetBasicblock(cs // 2, cs, stride 2): outputs at h (already halved)
            ci = cs // 2
            total += h * h * (9 * ci * cs + 9 * cs * cs + ci * cs)  # conv_a, conv_b, shortcut 1x1
        total += n * h * h * _cell_conv_weights(arch, cs)
        h //= 2
    return total + 4 * c * num_classes


def cell_network_params(arch: CellArch, num_classes: int, c: int = NB201_C, n: int = NB201_N) -> int:
    """Trainable parameters of NB201's TinyNetwork, as torch counts them."""
    total = 27 * c + 2 * c  # stem conv + BN
    for stage in range(3):
        cs = c * 2**stage
        if stage:
            ci = cs // 2
            total += 9 * ci * cs + 2 * cs + 9 * cs * cs + 2 * cs + ci * cs  # conv_a+BN, conv_b+BN, shortcut
        total += n * (_cell_conv_weights(arch, cs) + _cell_bn_params(arch, cs))
    c_last = 4 * c
    return total + 2 * c_last + c_last * num_classes + num_classes  # last BN, classifier


@functools.cache
def _dims(ops: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((name, ops) for name in EDGE_NAMES)


# ---- spaces -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellSpace(CategoricalSpace):
    """A space of NB201-style cells over the op tuple ``ops`` (a class attribute); one dim per edge.

    Subclasses set ``kind``, ``name``, ``ops`` and ``has_costs``; the codec is shared."""

    ops: ClassVar[tuple[str, ...]] = NB201_OPS
    kind = "nb201"
    name = "nb201"
    default_resolution = 32
    default_num_classes = 10

    @property
    def dims(self) -> tuple[tuple[str, tuple[str, ...]], ...]:  # type: ignore[override]
        """One dimension per edge (``edge_j_i``: into node ``j`` from node ``i``), choices ``ops``."""
        return _dims(self.ops)

    # ---- codec --------------------------------------------------------------------------------------
    def decode(self, vector: Sequence[int]) -> CellArch:
        v = self.validate(vector)
        return CellArch(tuple(self.ops[int(k)] for k in v))

    def encode(self, arch: CellArch | str) -> np.ndarray:
        """The choice vector of ``arch`` (a ``CellArch`` or a string ``parse`` takes); ``SpaceError`` if an
        op is not in this space."""
        if isinstance(arch, str):
            arch = self.parse(arch)
        if not isinstance(arch, CellArch):
            raise SpaceError(f"{self.name} encodes a CellArch, not {type(arch).__name__}")
        return np.array([self.ops.index(_check_op(op, self.ops, f"edge {j}<-{i}"))
                         for (j, i), op in zip(EDGES, arch.ops, strict=True)], dtype=np.int64)

    def parse(self, text: str) -> CellArch:
        """An NB201 string, or JSON ``{"cell": ...}`` / ``{"ops": [...]}``, with ops of this space."""
        return parse_cell(text, self.ops)

    # ---- costs --------------------------------------------------------------------------------------
    def _costed(self, arch: CellArch | str) -> CellArch:
        if not self.has_costs:
            raise SpaceError(f"the {self.kind} space has no cost model (the benchmark's networks differ per "
                             "task): no FLOPs, params or network")
        return self.decode(self.encode(arch))  # checks the ops are in the space

    def flops(self, arch: CellArch | str, resolution: int | None = None, num_classes: int | None = None) -> int:
        """Multiply-adds of conv and linear layers of the built network (every edge, dead or not)."""
        a = self._costed(arch)
        r = _check_resolution(self.default_resolution if resolution is None else resolution)
        k = _check_classes(self.default_num_classes if num_classes is None else num_classes)
        return cell_network_flops(a, r, k)

    def params(self, arch: CellArch | str, num_classes: int | None = None) -> int:
        """Trainable parameters of the built network (BN affine included, every edge, dead or not)."""
        a = self._costed(arch)
        return cell_network_params(a, _check_classes(self.default_num_classes if num_classes is None
                                                     else num_classes))

    def build(self, arch: CellArch | str, num_classes: int | None = None, input_size: int | None = None) -> Any:
        """NB201's TinyNetwork (C=16, N=5) for ``arch``; ``forward`` returns logits. ``input_size`` is only
        checked (the network takes any multiple of 4)."""
        a = self._costed(arch)
        k = _check_classes(self.default_num_classes if num_classes is None else num_classes)
        _check_resolution(self.default_resolution if input_size is None else input_size)
        from hwnas.spaces.nb201_net import TinyNetwork  # torch

        return TinyNetwork(a, num_classes=k, C=NB201_C, N=NB201_N)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "ops": list(self.ops), "edges": [f"{j}<-{i}" for j, i in EDGES],
                "has_costs": self.has_costs}


@dataclass(frozen=True)
class NB201Space(CellSpace):
    """NAS-Bench-201: 6 edges x {none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3}, 15,625
    cells; the TinyNetwork (C=16, N=5) at 32 px, 10 classes by default (CIFAR-10; ImageNet16-120 is 16 px,
    120 classes)."""

    ops: ClassVar[tuple[str, ...]] = NB201_OPS
    kind = "nb201"
    name = "nb201"
    has_costs = True


@dataclass(frozen=True)
class TransNASMicroSpace(CellSpace):
    """TransNAS-Bench-101's micro cell: NB201's cell with {none, skip_connect, nor_conv_1x1, nor_conv_3x3},
    4,096 cells. No cost model (``has_costs`` False): the benchmark's networks differ per task, so ``flops``,
    ``params`` and ``build`` raise ``SpaceError``; the codec works as for NB201."""

    ops: ClassVar[tuple[str, ...]] = TRANSNAS_MICRO_OPS
    kind = "transnas-micro"
    name = "transnas-micro"
    has_costs = False


__all__ = [
    "EDGES",
    "EDGE_NAMES",
    "KNOWN_OPS",
    "NB201_OPS",
    "TRANSNAS_MICRO_OPS",
    "CellArch",
    "CellSpace",
    "NB201Space",
    "TransNASMicroSpace",
    "cell_network_flops",
    "cell_network_params",
    "parse_cell",
]
