"""Differentiable architecture search with a hardware cost term, on NAS-Bench-201's cell space and MBConv spaces.

On NB201, two methods on one search network (``hwnas.supernet.darts.DartsNetwork``: NB201's macro structure, a
mixed op on every edge, one architecture parameter ``alpha`` (6 edges x 5 ops) shared by every cell):

* ``darts``: DARTS, first order (Liu et al., ICLR 2019): each edge is the softmax(alpha)-weighted sum of its ops;
* ``gdas``: GDAS (Dong & Yang, CVPR 2019): one hard Gumbel-softmax sample per edge per step, straight-through
  gradient, only the sampled op computed; the temperature falls linearly per epoch from ``tau_max`` to
  ``tau_min``.

On an MBConv space, ``gdas`` over the space's elastic supernet (``hwnas.supernet.gumbel.MBConvGumbelNetwork``):
one ``alpha`` per dimension of the space, one hard Gumbel-softmax sample per dimension per step, the sampled
network alone run (single-path, as ProxylessNAS), its straight-through weights gating the stage they belong to.

Training alternates, every step, a weight step on a training batch (SGD, Nesterov momentum 0.9, weight decay
5e-4, cosine learning rate 0.025 -> 0.001 over all steps, gradient norm clipped at 5: NB201's DARTS/GDAS
config) and an alpha step on a validation batch (Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3), first
order. Both batches are augmented (4-px reflect-padded random crop, horizontal flip), as NB201's search data.

The cost term (FBNet, Wu et al. 2019; ProxylessNAS, Cai et al. 2019) is an expectation under softmax(alpha).
On NB201, ``E[cost] = base + sum_e sum_o softmax(alpha_e)_o * per_op[e, o]``, with a ``CostModel`` that prices
the *deployed* NB201 network (C=16, N=5, 32 px, CIFAR-10's 10 classes, as the benchmark published it),
whatever ``C``/``N`` the search network uses. On an MBConv space, ``MBConvCostModel``: the exact expectation of
the latency table's prediction (or of the multiply-adds) at the deployment resolution under the per-dimension
distribution, whatever ``width`` the supernet uses. The architecture loss is

* ``linear``: ``CE + cost_coef * E[cost] / ref``, ``ref`` the model's cost of the largest network (NB201: the
  all-``nor_conv_3x3`` cell, for the fitted latency the model's estimate of it; MBConv: ``SearchSpace.extreme``);
* ``target`` (MnasNet's soft constraint as a loss): ``CE * (E[cost] / T) ** beta``, ``beta = cost_coef``
  where ``E[cost] > T`` and 0 otherwise (``T = cost_target``, in the model's unit).

Cost models are pure numpy: ``flops_cost_model`` is exact (NB201's multiply-add count is additive over edges);
``latency_cost_model`` is a least-squares fit of the same additive form to the 15,625 published latencies of a
device setting (``hwnas.latency.tabular.BenchmarkLatency``), with its R^2 and mean absolute error stored;
``MBConvCostModel`` tabulates each layer's entries over the few dimensions it depends on.

This module does not import torch at module level: ``run_differentiable`` and ``expected_torch`` import it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from hwnas.spaces.nb201 import EDGES, NB201_OPS, CellArch, NB201Space

METHODS: tuple[str, ...] = ("darts", "gdas")
COST_FORMS: tuple[str, ...] = ("linear", "target")
_REFERENCE_OP = "nor_conv_3x3"


# ---- settings -------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DifferentiableSettings:
    """Everything a differentiable search run needs besides the data, the cost model and the seed.

    Defaults are NB201's DARTS/GDAS search configs (batch 64, C=16, N=5; NB201 ran DARTS 50 epochs and GDAS
    250). ``max_train_images`` / ``max_val_images`` keep a seeded random subset of each split (None: all)."""

    method: str = "gdas"
    epochs: int = 50
    batch_size: int = 64
    C: int = 16
    N: int = 5
    width: float = 1.0
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_weight_decay: float = 1e-3
    tau_max: float = 10.0
    tau_min: float = 0.1
    cost_coef: float = 0.0
    cost_form: str = "linear"
    cost_target: float | None = None
    augment: bool = True
    max_train_images: int | None = None
    max_val_images: int | None = None

    def check(self) -> DifferentiableSettings:
        """``self``, or ``ValueError`` (one line) naming the first bad setting."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r} (methods: {', '.join(METHODS)})")
        for name in ("epochs", "batch_size", "C", "N"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lr", "lr_min", "alpha_lr", "grad_clip", "tau_max", "tau_min", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("weight_decay", "alpha_weight_decay", "cost_coef"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must not exceed tau_max ({self.tau_max})")
        if self.cost_form not in COST_FORMS:
            raise ValueError(f"unknown cost form {self.cost_form!r} (forms: {', '.join(COST_FORMS)})")
        if self.cost_form == "target":
            t = self.cost_target
            if t is None or isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
                raise ValueError(f"cost form 'target' needs a positive cost_target, got {t!r}")
        for name in ("max_train_images", "max_val_images"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        return self

    def check_for(self, kind: str) -> DifferentiableSettings:
        """``self``, or ``ValueError`` (one line) for a setting the ``kind`` of space does not take: NB201's
        network is sized by ``C`` and ``N`` and runs DARTS or GDAS; an MBConv space's elastic supernet is
        sized by ``width`` and runs GDAS only (a softmax mixture of every network of it is not one forward)."""
        defaults = DifferentiableSettings()
        if kind == "mbconv":
            if self.method != "gdas":
                raise ValueError(f"{self.method} mixes every op of an edge; on an MBConv space (an elastic "
                                 "supernet) the differentiable search is gdas")
            if (self.C, self.N) != (defaults.C, defaults.N):
                raise ValueError("C and N size NB201's search network; the MBConv supernet is sized by width")
        elif self.width != defaults.width:
            raise ValueError("width narrows the MBConv supernet; NB201's search network is sized by C and N")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- cost models ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CostModel:
    """An additive cost of an NB201 network: ``base + sum_e per_op[e, op_e]`` (``per_op`` (6, 5), op order
    ``NB201_OPS``, edge order ``EDGES``; ``none`` costs 0). ``reference`` is the all-``nor_conv_3x3`` cell's
    cost (the ``linear`` loss divides by it); ``r2`` / ``mae`` describe a fitted model's fit (None when exact)."""

    name: str
    unit: str
    base: float
    per_op: np.ndarray
    r2: float | None = None
    mae: float | None = None
    reference: float = field(init=False)

    def __post_init__(self) -> None:
        per_op = np.array(self.per_op, dtype=np.float64)
        if per_op.shape != (len(EDGES), len(NB201_OPS)) or not np.isfinite(per_op).all():
            raise ValueError(f"per_op must be a finite ({len(EDGES)}, {len(NB201_OPS)}) array, got {per_op.shape}")
        per_op.setflags(write=False)
        object.__setattr__(self, "per_op", per_op)
        object.__setattr__(self, "base", float(self.base))
        ref = self.base + float(per_op[:, NB201_OPS.index(_REFERENCE_OP)].sum())
        if not ref > 0:
            raise ValueError(f"{self.name}: the reference (all-{_REFERENCE_OP}) cost must be positive, got {ref}")
        object.__setattr__(self, "reference", ref)

    def expected(self, probs: Any) -> float:
        """``base + sum(probs * per_op)`` for probabilities ``probs`` (6, 5) (rows sum to 1)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != self.per_op.shape:
            raise ValueError(f"probabilities must be shaped {self.per_op.shape}, got {p.shape}")
        return self.base + float((p * self.per_op).sum())

    def expected_torch(self, probs: Any) -> Any:
        """The same for a torch tensor (differentiable in ``probs``), on its device and dtype."""
        import torch

        return self.base + (probs * torch.tensor(self.per_op, dtype=probs.dtype, device=probs.device)).sum()

    def cost(self, arch: CellArch | str) -> float:
        v = NB201Space().encode(arch)
        return self.base + float(self.per_op[np.arange(len(EDGES)), v].sum())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "base": self.base, "per_op": self.per_op.tolist(),
                "reference": self.reference, "r2": self.r2, "mae": self.mae}


def flops_cost_model(space: NB201Space | None = None, resolution: int = 32, num_classes: int = 10) -> CostModel:
    """Exact multiply-adds (in M) of the deployed NB201 network from ``space.flops``: ``base`` = all-``none``
    cell, ``per_op[e, o]`` = (only edge ``e`` set to ``o``) - base."""
    space = space or NB201Space()
    none = ("none",) * len(EDGES)
    base = space.flops(CellArch(none), resolution, num_classes)
    per_op = np.zeros((len(EDGES), len(NB201_OPS)))
    for e in range(len(EDGES)):
        for o, op in enumerate(NB201_OPS):
            ops = list(none)
            ops[e] = op
            per_op[e, o] = space.flops(CellArch(tuple(ops)), resolution, num_classes) - base
    return CostModel(name=f"flops@{resolution}px", unit="MFLOPs", base=base / 1e6, per_op=per_op / 1e6)


@functools.cache
def _table_vectors() -> np.ndarray:
    """The choice vector of every NB201 table row (official index order), (15625, 6)."""
    from hwnas import tabular

    space = NB201Space()
    return np.stack([space.encode(a) for a in tabular.nb201().archs])


def latency_cost_model(device: str) -> CostModel:
    """Least-squares fit of ``base + per-op costs`` (ms) to the 15,625 published latencies on ``device`` (an
    NB201 device setting, e.g. ``pixel3``): a one-hot design matrix without the ``none`` columns (``none``
    costs 0, which removes the collinearity with the intercept), solved by ``numpy.linalg.lstsq``."""
    from hwnas.latency.tabular import BenchmarkLatency

    y = np.asarray(BenchmarkLatency(device).values, dtype=np.float64)
    v = _table_vectors()
    n_ops = len(NB201_OPS)
    cols = [(e, o) for e in range(len(EDGES)) for o in range(1, n_ops)]
    design = np.zeros((len(y), 1 + len(cols)))
    design[:, 0] = 1.0
    for k, (e, o) in enumerate(cols, start=1):
        design[:, k] = v[:, e] == o
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    pred = design @ coef
    r2 = 1.0 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    per_op = np.zeros((len(EDGES), n_ops))
    for k, (e, o) in enumerate(cols, start=1):
        per_op[e, o] = coef[k]
    return CostModel(name=f"latency:{device}", unit="ms", base=float(coef[0]), per_op=per_op, r2=r2,
                     mae=float(np.abs(y - pred).mean()))


def cost_model(spec: str) -> CostModel:
    """``flops`` -> ``flops_cost_model()``; ``nb201:DEVICE`` or ``latency:DEVICE`` -> ``latency_cost_model``."""
    if spec == "flops":
        return flops_cost_model()
    kind, sep, device = spec.partition(":")
    if sep and kind in ("nb201", "latency") and device:
        return latency_cost_model(device)
    raise ValueError(f"unknown cost model {spec!r} (flops, nb201:DEVICE)")


# ---- the MBConv space: an expectation over every dimension's own distribution ------------------------------
@dataclass(frozen=True, eq=False)
class _Factor:
    """``values`` (an array over the choices of ``dims``, in that axis order): its expectation under independent
    per-dimension probabilities is ``values`` contracted with each dimension's probability vector."""

    dims: tuple[int, ...]  # indices into the space's ``dims``
    values: np.ndarray


class MBConvCostModel:
    """The expected cost of an MBConv ``SearchSpace``'s network under independent per-dimension choice
    probabilities (one softmax per dimension of ``space.dims``: the factorized distribution a Gumbel search
    over the space keeps), exact: ``a + b * E[sum of the layers' values] + c * E[number of layers]``.

    A layer's value is its latency-table entry (ms; ``a``, ``b``, ``c`` the table's calibration at
    ``resolution``, so a point mass gives ``LatencyTable.predict``) or its multiply-adds in millions (``a = c =
    0``, ``b = 1``: ``space.flops / 1e6``). The sum is linear, so its expectation is a sum of per-layer
    expectations, and each layer depends on few dimensions (``hwnas.latency.table.space_layers``'s reasoning):

    * the stem on (activation, width factor); the classifier on the width factor; the head on (activation,
      width factor, the last stage's width);
    * a stage's first block on (activation, width factor, the previous stage's width, and the stage's op,
      expansion, kernel, SE, skip and width): at most a few tens of thousands of entries, tabulated once;
    * its later blocks (stride 1, the stage's width in and out; all alike) on the same without the previous
      width, times ``E[repeats - 1]``, which depends only on (layers, depth factor): independent of the rest.

    ``expected(probs)`` takes numpy arrays, ``expected_torch(probs)`` torch tensors (differentiable), one per
    dimension in ``space.dims`` order; ``cost(genotype)`` is the same value for one network. ``reference`` is
    the cost of the space's largest network (``SearchSpace.extreme``: every dimension's largest choice), which
    the ``linear`` loss divides by."""

    def __init__(self, space: Any, resolution: int, num_classes: int, table: Any = None) -> None:
        from hwnas.latency.table import MissingKeyError
        from hwnas.spaces.mbconv import make_divisible
        from hwnas.walker import Layer, conv_out, se_channels, stem_stride_for

        self.space, self.resolution, self.num_classes, self.table = space, int(resolution), int(num_classes), table
        if table is not None:
            table.check_space(space)
            table.check_resolution(self.resolution)
            o = table.overhead.get(str(self.resolution))
            if o is None:
                raise ValueError(f"latency table {table.source} has no calibration at {self.resolution} px")
            self.a, self.b, self.c = float(o.a), float(o.b), float(o.c)
            self.name, self.unit = f"latency:{PurePath(table.source).stem}@{self.resolution}px", "ms"
            n_classes = table.num_classes
        else:
            self.a, self.b, self.c = 0.0, 1.0, 0.0
            self.name, self.unit = f"flops@{self.resolution}px", "MFLOPs"
            n_classes = self.num_classes
        names = [name for name, _ in space.dims]
        at = {name: i for i, name in enumerate(names)}
        memo: dict[Layer, float] = {}

        def value(layer: Layer) -> float:
            v = memo.get(layer)
            if v is None:
                if table is None:
                    v = layer.macs() / 1e6
                else:
                    e = table.entries.get(layer.key())
                    if e is None:
                        raise MissingKeyError(f"latency table {table.source} has no entry for layer "
                                              f"{layer.key()!r} of the space {space.name!r}")
                    v = float(e["ms"])
                memo[layer] = v
            return v

        acts, wfs, div = space.activations, space.width_factors, space.divisor
        stride = stem_stride_for(self.resolution)
        stems = [make_divisible(space.stem * wf, div) for wf in wfs]
        heads = [make_divisible(space.head * wf, div) for wf in wfs]
        sums: list[list[_Factor]] = []  # terms of E[sum]: each a product of independent factors
        counts: list[list[_Factor]] = []  # terms of E[n] beyond the stem, head and classifier
        g = (at["activation"], at["width_factor"])
        sums.append([_Factor(g, np.array([[value(Layer("stem", self.resolution, 3, c, 3, stride, activation=a))
                                            for c in stems] for a in acts]))])
        sums.append([_Factor((at["width_factor"],), np.array([value(Layer("classifier", 1, c, n_classes))
                                                               for c in heads]))])
        size = conv_out(self.resolution, 3, stride)
        prev_dim: int | None = None  # the previous stage's width dimension (None: the stem's, by width factor)
        prev_base: float = space.stem
        for i, st in enumerate(space.stages, start=1):
            d = {k: at[f"s{i}_{k}"] for k in ("op", "kernel", "expansion", "se", "skip", "layers", "width")}
            out_size = conv_out(size, 1, st.stride)

            def chans(base: float, w: float, wf: float) -> int:
                return make_divisible(base * w * wf, div)

            prevs = () if prev_dim is None else space.stages[i - 2].widths  # stage 1 reads the stem
            first = np.zeros((len(acts), len(wfs), max(1, len(prevs)), len(st.widths),
                              len(st.ops), len(st.expansions), len(st.kernels), len(st.se_ratios), len(st.skips)))
            later = np.zeros(first.shape[:2] + first.shape[3:])
            for ia, act in enumerate(acts):
                for iw, wf in enumerate(wfs):
                    ins = [make_divisible(space.stem * wf, div)] if prev_dim is None else \
                        [chans(prev_base, pw, wf) for pw in prevs]
                    for ic, w in enumerate(st.widths):
                        c = chans(st.channels, w, wf)
                        for io, op in enumerate(st.ops):
                            for ie, e in enumerate(st.expansions):
                                kind, ex = ("ds", 1) if (op == "ds" or e == 1) else ("ir", e)
                                for ik, k in enumerate(st.kernels):
                                    for isx, se in enumerate(st.se_ratios):
                                        for ir, skip in enumerate(st.skips):
                                            for ip, in_c in enumerate(ins):
                                                first[ia, iw, ip, ic, io, ie, ik, isx, ir] = value(Layer(
                                                    kind, size, in_c, c, k, st.stride, ex,
                                                    se_channels(in_c, float(se)),
                                                    skip and st.stride == 1 and in_c == c, act))
                                            later[ia, iw, ic, io, ie, ik, isx, ir] = value(Layer(
                                                kind, out_size, c, c, k, 1, ex, se_channels(c, float(se)), skip,
                                                act))
            tail = (d["width"], d["op"], d["expansion"], d["kernel"], d["se"], d["skip"])
            if prev_dim is None:
                sums.append([_Factor(g + tail, first[:, :, 0])])
            else:
                sums.append([_Factor((*g, prev_dim, *tail), first)])
            repeats = np.array([[math.ceil(n * df - 1e-9) for df in space.depth_factors] for n in st.layers],
                               dtype=np.float64)
            dl = (d["layers"], at["depth_factor"])
            if repeats.max() > 1:
                sums.append([_Factor(g + tail, later), _Factor(dl, repeats - 1)])
            counts.append([_Factor(dl, repeats)])
            size, prev_dim, prev_base = out_size, d["width"], st.channels
        last = space.stages[-1]
        sums.append([_Factor((*g, prev_dim), np.array([[[value(Layer("head", size, make_divisible(
            last.channels * w * wf, div), hc, activation=a)) for w in last.widths]
            for wf, hc in zip(wfs, heads, strict=True)] for a in acts]))])
        self._sums, self._counts = sums, counts
        self._tensors: dict[Any, dict[int, Any]] = {}  # (dtype, device) -> the factors' values as torch tensors
        for terms in (sums, counts):
            for term in terms:
                for f in term:
                    f.values.setflags(write=False)
        self.n_dims = len(names)
        self.reference = self.cost(space.extreme(largest=True))
        if not self.reference > 0:
            raise ValueError(f"{self.name}: the largest network's cost must be positive, got {self.reference}")

    @staticmethod
    def _contract(values: Any, probs: list[Any]) -> Any:
        for p in reversed(probs):  # the last axis first: a matrix-vector product each
            values = values @ p
        return values

    def _expect(self, probs: Sequence[Any], as_array: Callable[[np.ndarray], Any]) -> Any:
        if len(probs) != self.n_dims:
            raise ValueError(f"need one probability vector per dimension ({self.n_dims}), got {len(probs)}")

        def term(factors: list[_Factor]) -> Any:
            out = 1.0
            for f in factors:
                out = out * self._contract(as_array(f.values), [probs[k] for k in f.dims])
            return out

        total = sum(term(t) for t in self._sums)
        n = 3 + sum(term(t) for t in self._counts)  # stem, head, classifier and every block
        return self.a + self.b * total + self.c * n

    def expected(self, probs: Sequence[Any]) -> float:
        """The expected cost for numpy probability vectors (one per dimension, in ``space.dims`` order)."""
        return float(self._expect([np.asarray(p, dtype=np.float64) for p in probs], lambda v: v))

    def expected_torch(self, probs: Sequence[Any]) -> Any:
        """The same for torch tensors (differentiable in ``probs``), on their device and dtype."""
        import torch

        ref = probs[0]
        key = (ref.dtype, ref.device)
        if key not in self._tensors:  # the tables on that device, once (a search prices every step)
            self._tensors[key] = {id(f.values): torch.tensor(f.values, dtype=ref.dtype, device=ref.device)
                                  for terms in (self._sums, self._counts) for t in terms for f in t}
        tensors = self._tensors[key]
        return self._expect(list(probs), lambda v: tensors[id(v)])

    def cost(self, arch: Any) -> float:
        """The cost of one network (a genotype of the space): ``LatencyTable.predict`` or MFLOPs."""
        if isinstance(arch, str):
            arch = self.space.parse(arch)
        if self.table is not None:
            return float(self.table.predict(arch, self.resolution))
        return self.space.flops(arch, self.resolution, self.num_classes) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "reference": self.reference, "a": self.a, "b": self.b,
                "c": self.c, "resolution": self.resolution}


# ---- the search -----------------------------------------------------------------------------------------
@dataclass
class DifferentiableResult:
    """What a run found: the derived architecture, softmax(alpha) (final and per epoch; NB201: 6 edges x 5 ops,
    MBConv: one list per dimension of ``space.dims``), per-epoch records."""

    arch: Any
    probabilities: list[list[float]]
    alpha: list[list[float]]
    alpha_history: list[list[list[float]]]
    history: list[dict[str, Any]]
    expected_cost: float | None
    derived_cost: float | None
    seconds: float
    steps: int
    stopped: bool
    seed: int
    settings: dict[str, Any]
    cost_model: dict[str, Any] | None
    space: str = "nb201"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arch": self.arch.to_string()}


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    keep = np.sort(rng.permutation(len(y))[:n])
    return x[keep], y[keep]


def _check_split(name: str, split: Sequence[np.ndarray], multiple: int) -> tuple[np.ndarray, np.ndarray]:
    if len(split) != 2:
        raise ValueError(f"{name} must be (images, labels)")
    x, y = np.asarray(split[0]), np.asarray(split[1])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"{name} images must be uint8 (N, H, H, 3), got {x.dtype} {x.shape}")
    if x.shape[1] % multiple:
        raise ValueError(f"{name} images are {x.shape[1]} px; NB201's network needs a multiple of {multiple}")
    if y.ndim != 1 or len(y) != len(x) or len(y) == 0:
        raise ValueError(f"{name} labels must be (N,) with N = {len(x)} > 0, got {y.shape}")
    return x, y


def run_differentiable(space: Any, train: Sequence[np.ndarray], val: Sequence[np.ndarray],
                       settings: DifferentiableSettings, cost: CostModel | MBConvCostModel | None = None,
                       seed: int = 0, device: str = "cpu", progress: Callable[[dict[str, Any]], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> DifferentiableResult:
    """Search ``space`` with ``settings``: weights on ``train``, alpha on ``val`` (each (uint8 NHWC images, int
    labels)), with the cost term of ``cost`` (needed when ``settings.cost_coef > 0``; a ``CostModel`` on NB201,
    an ``MBConvCostModel`` of the same space on an MBConv space).

    NB201: ``DartsNetwork(C, N)``, DARTS or GDAS. MBConv: ``MBConvGumbelNetwork`` (the elastic supernet at
    ``width``, at the images' size), GDAS only (a softmax mixture of every network of an elastic supernet is
    not one forward).

    ``progress(record)`` is called after every epoch with that epoch's record; ``should_stop()`` is checked
    before every step, and a True answer ends the run with what it has (``stopped=True``). Deterministic for a
    ``seed`` on the CPU (same thread count)."""
    s = settings.check()
    kind = getattr(space, "kind", None)
    if kind not in ("nb201", "mbconv"):
        raise ValueError(f"differentiable search runs on the nb201 and mbconv spaces, not {kind or space!r}")
    s.check_for(kind)
    if kind == "mbconv" and cost is not None and not (isinstance(cost, MBConvCostModel) and cost.space == space):
        raise ValueError("the cost model prices another space: build MBConvCostModel(space, ...) of this one")
    if kind == "nb201" and cost is not None and not isinstance(cost, CostModel):
        raise ValueError("the cost model prices an MBConv space, not NB201's cells")
    if s.cost_coef > 0 and cost is None:
        raise ValueError("cost_coef > 0 needs a cost model")
    tx, ty = _check_split("train", train, 4 if kind == "nb201" else 1)
    vx, vy = _check_split("val", val, 4 if kind == "nb201" else 1)
    if tx.shape[1:] != vx.shape[1:]:
        raise ValueError(f"train and val images differ in size: {tx.shape[1:]} vs {vx.shape[1:]}")
    num_classes = int(max(ty.max(), vy.max())) + 1
    rng = np.random.default_rng(seed)
    tx, ty = _subset(tx, ty, s.max_train_images, rng)
    vx, vy = _subset(vx, vy, s.max_val_images, rng)

    import torch
    import torch.nn.functional as F

    from hwnas.evaluators.training import DeviceData

    t0 = time.perf_counter()
    dev = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    gumbel_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    net: Any
    if kind == "nb201":
        from hwnas.supernet.darts import DartsNetwork

        net = DartsNetwork(s.C, s.N, num_classes, mode=s.method, generator=gumbel_gen).to(dev)
    else:
        from hwnas.supernet import SupernetError
        from hwnas.supernet.gumbel import MBConvGumbelNetwork

        try:
            net = MBConvGumbelNetwork(space, num_classes, int(tx.shape[1]), width=s.width,
                                      generator=gumbel_gen).to(dev)
        except SupernetError as e:
            raise ValueError(str(e)) from None
    pad = 4 if s.augment and tx.shape[1] > 4 else 0
    tdata, vdata = DeviceData(tx, ty, dev, pad=pad), DeviceData(vx, vy, dev, pad=pad)
    w_params = net.weight_parameters()
    w_opt = torch.optim.SGD(w_params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=True)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=s.alpha_lr, betas=(0.5, 0.999),
                             weight_decay=s.alpha_weight_decay)
    batch = min(s.batch_size, len(tdata))
    steps_per_epoch = max(1, len(tdata) // batch)
    total_steps = s.epochs * steps_per_epoch
    vbatch = min(s.batch_size, len(vdata))

    def expected_cost() -> torch.Tensor:
        assert cost is not None
        return cost.expected_torch(net.soft_probabilities())

    def probabilities() -> Any:  # NB201: an array (6, 5); MBConv: one array per dimension
        p = net.probabilities()
        return p.cpu().numpy() if isinstance(p, torch.Tensor) else [q.cpu().numpy() for q in p]

    def as_lists(p: Any) -> list[Any]:
        return p.tolist() if isinstance(p, np.ndarray) else [q.tolist() for q in p]

    def arch_loss(ce: torch.Tensor) -> torch.Tensor:
        if s.cost_coef == 0 or cost is None:
            return ce
        ec = expected_cost()
        if s.cost_form == "linear":
            return ce + s.cost_coef * ec / cost.reference
        target = float(s.cost_target)  # type: ignore[arg-type]
        return ce * (ec / target) ** s.cost_coef if float(ec.detach()) > target else ce

    alpha_history: list[list[list[float]]] = []
    history: list[dict[str, Any]] = []
    step, stopped = 0, False
    vperm, vpos = torch.randperm(len(vdata), device=dev, generator=gen), 0
    net.train()
    for epoch in range(s.epochs):
        if s.method == "gdas":
            net.tau = s.tau_max - (s.tau_max - s.tau_min) * epoch / max(1, s.epochs - 1)
        perm = torch.randperm(len(tdata), device=dev, generator=gen)
        sums = {"train_loss": 0.0, "train_acc": 0.0, "val_loss": 0.0, "val_acc": 0.0}
        done = 0
        for k in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                stopped = True
                break
            lr = s.lr_min + 0.5 * (s.lr - s.lr_min) * (1 + math.cos(math.pi * step / total_steps))
            for g in w_opt.param_groups:
                g["lr"] = lr
            idx = perm[k * batch:(k + 1) * batch]
            x, y = tdata.augmented(idx, gen, flip=s.augment), tdata.y[idx]
            w_opt.zero_grad(set_to_none=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(w_params, s.grad_clip)
            w_opt.step()
            sums["train_loss"] += float(loss.detach())
            sums["train_acc"] += float((logits.argmax(1) == y).float().mean())

            if vpos + vbatch > len(vdata):
                vperm, vpos = torch.randperm(len(vdata), device=dev, generator=gen), 0
            vidx = vperm[vpos:vpos + vbatch]
            vpos += vbatch
            x, y = vdata.augmented(vidx, gen, flip=s.augment), vdata.y[vidx]
            a_opt.zero_grad(set_to_none=True)
            logits = net(x)
            ce = F.cross_entropy(logits, y)
            arch_loss(ce).backward()
            a_opt.step()
            sums["val_loss"] += float(ce.detach())
            sums["val_acc"] += float((logits.argmax(1) == y).float().mean())
            step += 1
            done += 1
        if done == 0:
            break
        probs = probabilities()
        alpha_history.append(as_lists(probs))
        record: dict[str, Any] = {"epoch": epoch + 1, "steps": done, "lr": lr,
                                  **{key: v / done for key, v in sums.items()},
                                  "arch": net.derive().to_string(),
                                  "seconds": round(time.perf_counter() - t0, 3)}
        if s.method == "gdas":
            record["tau"] = net.tau
        if cost is not None:
            record["expected_cost"] = cost.expected(probs)
        history.append(record)
        if progress is not None:
            progress(record)
        if stopped:
            break
    probs = probabilities()
    arch = net.derive()
    alpha = [a.detach().cpu().numpy() for a in net.arch_parameters()]
    return DifferentiableResult(
        arch=arch, probabilities=as_lists(probs), alpha=as_lists(alpha[0] if kind == "nb201" else alpha),
        alpha_history=alpha_history, history=history,
        expected_cost=cost.expected(probs) if cost is not None else None,
        derived_cost=cost.cost(arch) if cost is not None else None,
        seconds=time.perf_counter() - t0, steps=step, stopped=stopped, seed=seed, settings=s.to_dict(),
        cost_model={k: v for k, v in cost.to_dict().items() if k != "per_op"} if cost is not None else None,
        space=kind)


__all__ = [
    "COST_FORMS",
    "METHODS",
    "CostModel",
    "DifferentiableResult",
    "DifferentiableSettings",
    "MBConvCostModel",
    "cost_model",
    "flops_cost_model",
    "latency_cost_model",
    "run_differentiable",
]
