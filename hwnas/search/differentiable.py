"""Differentiable architecture search on NAS-Bench-201's cell space, with a hardware cost term.

Two methods on one search network (``hwnas.supernet.darts.DartsNetwork``: NB201's macro structure, a mixed op
on every edge, one architecture parameter ``alpha`` (6 edges x 5 ops) shared by every cell):

* ``darts``: DARTS, first order (Liu et al., ICLR 2019): each edge is the softmax(alpha)-weighted sum of its ops;
* ``gdas``: GDAS (Dong & Yang, CVPR 2019): one hard Gumbel-softmax sample per edge per step, straight-through
  gradient, only the sampled op computed; the temperature falls linearly per epoch from ``tau_max`` to
  ``tau_min``.

Training alternates, every step, a weight step on a training batch (SGD, Nesterov momentum 0.9, weight decay
5e-4, cosine learning rate 0.025 -> 0.001 over all steps, gradient norm clipped at 5: NB201's DARTS/GDAS
config) and an alpha step on a validation batch (Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3), first
order. Both batches are augmented (4-px reflect-padded random crop, horizontal flip), as NB201's search data.

The cost term (FBNet, Wu et al. 2019; ProxylessNAS, Cai et al. 2019) is an expectation under softmax(alpha):
``E[cost] = base + sum_e sum_o softmax(alpha_e)_o * per_op[e, o]``, with a ``CostModel`` that prices the
*deployed* NB201 network (C=16, N=5, 32 px, CIFAR-10's 10 classes, as the benchmark published it), whatever
``C``/``N`` the search network uses. The architecture loss is

* ``linear``: ``CE + cost_coef * E[cost] / ref``, ``ref`` the model's cost of the all-``nor_conv_3x3`` cell
  (the largest network in FLOPs; for the fitted latency it is the model's estimate of that network);
* ``target`` (MnasNet's soft constraint as a loss): ``CE * (E[cost] / T) ** beta``, ``beta = cost_coef``
  where ``E[cost] > T`` and 0 otherwise (``T = cost_target``, in the model's unit).

Cost models are pure numpy: ``flops_cost_model`` is exact (NB201's multiply-add count is additive over edges);
``latency_cost_model`` is a least-squares fit of the same additive form to the 15,625 published latencies of a
device setting (``hwnas.latency.tabular.BenchmarkLatency``), with its R^2 and mean absolute error stored.

This module does not import torch at module level: ``run_differentiable`` imports it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
        for name in ("lr", "lr_min", "alpha_lr", "grad_clip", "tau_max", "tau_min"):
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


# ---- the search -----------------------------------------------------------------------------------------
@dataclass
class DifferentiableResult:
    """What a run found: the derived cell, softmax(alpha) (final and per epoch), per-epoch records."""

    arch: CellArch
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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arch": self.arch.to_string()}


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    keep = np.sort(rng.permutation(len(y))[:n])
    return x[keep], y[keep]


def _check_split(name: str, split: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if len(split) != 2:
        raise ValueError(f"{name} must be (images, labels)")
    x, y = np.asarray(split[0]), np.asarray(split[1])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"{name} images must be uint8 (N, H, H, 3), got {x.dtype} {x.shape}")
    if x.shape[1] % 4:
        raise ValueError(f"{name} images are {x.shape[1]} px; NB201's network needs a multiple of 4")
    if y.ndim != 1 or len(y) != len(x) or len(y) == 0:
        raise ValueError(f"{name} labels must be (N,) with N = {len(x)} > 0, got {y.shape}")
    return x, y


def run_differentiable(space: Any, train: Sequence[np.ndarray], val: Sequence[np.ndarray],
                       settings: DifferentiableSettings, cost: CostModel | None = None, seed: int = 0,
                       device: str = "cpu", progress: Callable[[dict[str, Any]], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> DifferentiableResult:
    """Search ``space`` (NB201) with ``settings``: weights on ``train``, alpha on ``val`` (each (uint8 NHWC
    images, int labels)), with the cost term of ``cost`` (needed when ``settings.cost_coef > 0``).

    ``progress(record)`` is called after every epoch with that epoch's record; ``should_stop()`` is checked
    before every step, and a True answer ends the run with what it has (``stopped=True``). Deterministic for a
    ``seed`` on the CPU (same thread count)."""
    s = settings.check()
    if getattr(space, "kind", None) != "nb201":
        raise ValueError(f"differentiable search runs on the nb201 space, not {getattr(space, 'kind', space)!r}")
    if s.cost_coef > 0 and cost is None:
        raise ValueError("cost_coef > 0 needs a cost model")
    tx, ty = _check_split("train", train)
    vx, vy = _check_split("val", val)
    if tx.shape[1:] != vx.shape[1:]:
        raise ValueError(f"train and val images differ in size: {tx.shape[1:]} vs {vx.shape[1:]}")
    num_classes = int(max(ty.max(), vy.max())) + 1
    rng = np.random.default_rng(seed)
    tx, ty = _subset(tx, ty, s.max_train_images, rng)
    vx, vy = _subset(vx, vy, s.max_val_images, rng)

    import torch
    import torch.nn.functional as F

    from hwnas.evaluators.training import DeviceData
    from hwnas.supernet.darts import DartsNetwork

    t0 = time.perf_counter()
    dev = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    gumbel_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    net = DartsNetwork(s.C, s.N, num_classes, mode=s.method, generator=gumbel_gen).to(dev)
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
    per_op = torch.tensor(cost.per_op, dtype=torch.float32, device=dev) if cost is not None else None

    def expected_cost() -> torch.Tensor:
        assert cost is not None and per_op is not None
        return cost.base + (torch.softmax(net.alpha, dim=-1) * per_op).sum()

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
        probs = net.probabilities().cpu().numpy()
        alpha_history.append(probs.tolist())
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
    probs = net.probabilities().cpu().numpy()
    arch = net.derive()
    return DifferentiableResult(
        arch=arch, probabilities=probs.tolist(), alpha=net.alpha.detach().cpu().numpy().tolist(),
        alpha_history=alpha_history, history=history,
        expected_cost=cost.expected(probs) if cost is not None else None,
        derived_cost=cost.cost(arch) if cost is not None else None,
        seconds=time.perf_counter() - t0, steps=step, stopped=stopped, seed=seed, settings=s.to_dict(),
        cost_model={k: v for k, v in cost.to_dict().items() if k != "per_op"} if cost is not None else None)


__all__ = [
    "COST_FORMS",
    "METHODS",
    "CostModel",
    "DifferentiableResult",
    "DifferentiableSettings",
    "cost_model",
    "flops_cost_model",
    "latency_cost_model",
    "run_differentiable",
]
