"""EAT-NAS elastic architecture transfer (Fang et al., 2019) on hwnas's search machinery. No torch.

A search on a small dataset (the *source* study, e.g. CIFAR-10) picks the *basic architecture*; the
search on the target dataset starts from it instead of from random samples:

* ``select_basic``: the basic architecture from the source study's trained, feasible trials -- by the
  MnasNet reward under the target's budget (``reward``, default), the knee of the accuracy/cost Pareto
  front under that budget (``knee``), or plain best accuracy under it (``acc``).
* ``OffspringGenerator``: one *transformation* per child over EAT-NAS's five elements -- conv op
  (``ir``/``ds`` and expansion), kernel size, skip connection, width (a stage's width multiplier or the
  global width factor) and depth (a stage's layer count or the global depth factor). The width and depth
  factors are thus searched jointly with the op-level changes, so the basic architecture can grow (or
  shrink) to the target's capacity. SE ratio and activation are inherited from the basic architecture.
* ``EATEvolution``: the initial population is the basic architecture plus offspring of it (not random
  samples); then aging evolution whose parents are chosen by *population quality*: with fitness ``f``
  (accuracy, or the reward in reward mode) over the population, ``Q = mean(f) - quality_lambda * std(f)``;
  only members with ``f >= Q`` may reproduce, and a tournament of ``sample`` of them picks the parent.
  So selection uses the population's mean and spread, not only its best member.

In a space without stages (a cell space such as NAS-Bench-201's or TransNAS-Bench-101's), the one
transformation is ``op``: one edge's operation changed.

Every proposal carries its lineage (parent genotype, transformation, generation), which the search loop
stores on the trial (``lineage_attrs``), so it shows in optuna-dashboard.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnas.search.problem import Problem
from hwnas.spaces.base import CategoricalSpace, SpaceError

ELEMENTS: tuple[str, ...] = ("op", "kernel", "skip", "width", "depth")
SELECTIONS: tuple[str, ...] = ("reward", "knee", "acc")


class TransferError(ValueError):
    """The source study cannot seed a transfer (one line)."""


# ---- the basic architecture -----------------------------------------------------------------------
@dataclass(frozen=True)
class SourceTrial:
    number: int
    genotype: str
    acc: float
    costs: dict[str, float]


def select_basic(trials: Sequence[SourceTrial], problem: Problem, how: str = "reward") -> SourceTrial:
    """The basic architecture among the source study's trained trials, priced by the *target* problem
    (its resolution and budgets): its hard budgets must hold (a reward's target is soft); ``reward`` ranks by
    the target's own reward (``mnas-soft``/``mnas-hard``), or for a Pareto target by the MnasNet soft reward
    with its main budget as target (plain accuracy if it has none)."""
    if how not in SELECTIONS:
        raise TransferError(f"unknown selection {how!r} (choose from {', '.join(SELECTIONS)})")
    priced = []
    for t in trials:
        try:
            g = problem.space.parse(t.genotype)
            problem.space.encode(g)
        except (ValueError, SpaceError):
            continue  # outside the target's space: cannot seed it
        costs = problem.costs(g)
        if problem.feasible(costs):
            priced.append((t, costs))
    if not priced:
        raise TransferError(f"no trained trial of the source study is in the target space and within the target "
                            f"budget(s) {problem.budgets or ''}".rstrip())
    if how == "acc":
        return max(priced, key=lambda p: (p[0].acc, -p[0].number))[0]
    cost = problem.reward_cost or next(iter(problem.budgets), None) or problem.cost_axes[0]
    if how == "reward":
        if problem.reward != "pareto":
            return max(priced, key=lambda p: (problem.reward_value(p[0].acc, p[1]), -p[0].number))[0]
        target = problem.budgets.get(cost)
        if target is None:
            return max(priced, key=lambda p: (p[0].acc, -p[0].number))[0]
        return max(priced, key=lambda p: (p[0].acc * (p[1][cost] / target) ** -0.07, -p[0].number))[0]
    return _knee([(t, c[cost]) for t, c in priced])


def _knee(points: list[tuple[SourceTrial, float]]) -> SourceTrial:
    """The Pareto-front member farthest from the line through the front's two ends (normalised axes)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    vals = np.array([[-t.acc, c] for t, c in points], dtype=float)
    front = [points[int(i)] for i in NonDominatedSorting().do(vals, only_non_dominated_front=True)]
    if len(front) <= 2:
        return max(front, key=lambda p: p[0].acc)[0]
    f = np.array([[t.acc, c] for t, c in front], dtype=float)
    f = (f - f.min(0)) / np.maximum(f.max(0) - f.min(0), 1e-12)
    a, b = f[np.argmin(f[:, 1])], f[np.argmax(f[:, 1])]
    u, v = b - a, a - f
    d = np.abs(u[0] * v[:, 1] - u[1] * v[:, 0]) / max(float(np.linalg.norm(u)), 1e-12)  # distance to the line
    return front[int(np.argmax(d))][0]


# ---- offspring --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transformation:
    element: str
    where: str  # "s3" or "global"
    before: Any
    after: Any

    def describe(self) -> str:
        return f"{self.where} {self.element}: {self.before} -> {self.after}"


class OffspringGenerator:
    """Children of a choice vector, one transformation over EAT-NAS's five elements each, retried (bounded)
    until the child is a new network (after normalisation) and ``feasible``."""

    def __init__(self, space: CategoricalSpace, rng: np.random.Generator, feasible: Callable[[np.ndarray], bool],
                 elements: Sequence[str] = ELEMENTS, max_attempts: int = 200) -> None:
        bad = [e for e in elements if e not in ELEMENTS]
        if bad or not elements:
            raise SpaceError(f"unknown transformation element(s) {', '.join(bad) or '(none)'} "
                             f"(choose from {', '.join(ELEMENTS)})")
        self.space, self.rng, self.feasible = space, rng, feasible
        self.elements, self.max_attempts = tuple(elements), max_attempts
        self.index = {name: i for i, (name, _) in enumerate(space.dims)}
        self.options = dict(space.dims)
        self.cell = not hasattr(space, "stages")  # a cell space: every dimension is an edge's op

    def _dims_for(self, element: str, stage: int) -> list[str]:
        s = f"s{stage}_"
        return {"op": [s + "op", s + "expansion"], "kernel": [s + "kernel"], "skip": [s + "skip"],
                "width": [s + "width"], "depth": [s + "layers"]}[element]

    def _propose(self, x: np.ndarray) -> tuple[np.ndarray, Transformation]:
        if self.cell:
            i = int(self.rng.integers(len(self.space.dims)))
            name, opts = self.space.dims[i]
            new = int(self.rng.choice([j for j in range(len(opts)) if j != int(x[i])]))
            child = x.copy()
            child[i] = new
            return child, Transformation("op", name, _plain(opts[int(x[i])]), _plain(opts[new]))
        element = str(self.rng.choice(self.elements))
        n_stages = len(self.space.stages)
        glob = {"width": "width_factor", "depth": "depth_factor"}.get(element)
        # the global factor is one more place a width/depth change can land (EAT-NAS's scale search)
        where = int(self.rng.integers(n_stages + (1 if glob else 0))) + 1
        name = glob if where > n_stages else str(self.rng.choice(self._dims_for(element, where)))
        assert name is not None
        i, opts = self.index[name], self.options[name]
        cur = int(x[i])
        if len(opts) < 2:
            return x.copy(), Transformation(element, "none", None, None)
        if element in ("width", "depth"):  # ordered choices: one step up or down in value, whatever their listed order
            order = sorted(range(len(opts)), key=lambda j: opts[j])
            pos = order.index(cur)
            new = int(self.rng.choice([order[p] for p in (pos - 1, pos + 1) if 0 <= p < len(order)]))
        else:
            new = int(self.rng.choice([j for j in range(len(opts)) if j != cur]))
        child = x.copy()
        child[i] = new
        label = "global" if name == glob else f"s{where}"
        return child, Transformation(element, label, _plain(opts[cur]), _plain(opts[new]))

    def offspring(self, x: np.ndarray) -> tuple[np.ndarray, Transformation]:
        parent = self.space.decode(x).to_string()
        for _ in range(self.max_attempts):
            child, tr = self._propose(np.asarray(x, dtype=np.int64))
            if self.space.decode(child).to_string() != parent and self.feasible(child):
                return child, tr
        raise SpaceError(f"no feasible, new offspring of {parent} in {self.max_attempts} attempts: the budget is "
                         f"too tight around the basic architecture")


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# ---- the evolution ------------------------------------------------------------------------------------
@dataclass
class Member:
    x: np.ndarray
    fitness: float
    violation: float


class EATEvolution:
    """The ask/tell strategy of an EAT-NAS transfer (see the module doc). ``fitness_of(f)`` maps the
    minimisation values told for a trial to the scalar fitness (higher is better)."""

    def __init__(self, space: CategoricalSpace, seed: int, feasible: Callable[[np.ndarray], bool], basic: np.ndarray,
                 fitness_of: Callable[[Sequence[float]], float], population: int = 20, sample: int = 3,
                 quality_lambda: float = 0.5, elements: Sequence[str] = ELEMENTS) -> None:
        if population < 2:
            raise SpaceError("an EAT-NAS population needs at least 2 members")
        self.space, self.rng = space, np.random.default_rng(seed)
        self.gen = OffspringGenerator(space, self.rng, feasible, elements)
        self.basic = space.validate(basic)
        self.fitness_of, self.population, self.sample = fitness_of, population, sample
        self.quality_lambda = quality_lambda
        self.members: deque[Member] = deque()
        self.asked = 0
        self.lineage: dict[bytes, dict[str, Any]] = {}
        self.quality: float | None = None

    def ask(self) -> np.ndarray:
        self.asked += 1
        if self.asked == 1:
            x, info = self.basic.copy(), {"transformation": "basic architecture", "parent_genotype": None}
        elif len(self.members) < self.population and self.asked <= self.population:
            x, tr = self.gen.offspring(self.basic)  # the seeded population: offspring of the basic architecture
            info = {"transformation": tr.describe(), "parent_genotype": self.space.decode(self.basic).to_string()}
        else:
            parent = self._parent()
            x, tr = self.gen.offspring(parent)
            info = {"transformation": tr.describe(), "parent_genotype": self.space.decode(parent).to_string()}
        info["generation"] = (self.asked - 1) // self.population
        self.lineage[x.tobytes()] = info  # this proposal's (a vector asked again has another parent)
        return x

    def _parent(self) -> np.ndarray:
        if not self.members:
            return self.basic
        pool = [m for m in self.members if m.violation <= 0] or list(self.members)
        fit = np.array([m.fitness for m in pool])
        q = float(fit.mean() - self.quality_lambda * fit.std())
        eligible = [m for m in pool if m.fitness >= q - 1e-12] or pool
        k = min(self.sample, len(eligible))
        picks = self.rng.choice(len(eligible), size=k, replace=False)
        return max((eligible[int(i)] for i in picks), key=lambda m: m.fitness).x

    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float]) -> None:
        fit = self.fitness_of(f)
        self.members.append(Member(np.asarray(x), fit if math.isfinite(fit) else -math.inf,
                                   float(sum(max(0.0, v) for v in g))))
        while len(self.members) > self.population:
            self.members.popleft()
        ok = [m.fitness for m in self.members if m.violation <= 0 and math.isfinite(m.fitness)]
        if ok:
            self.quality = float(np.mean(ok) - self.quality_lambda * np.std(ok))

    def lineage_attrs(self, x: np.ndarray) -> dict[str, Any]:
        """What the search stores on the trial proposing ``x``."""
        info = dict(self.lineage.get(np.asarray(x, dtype=np.int64).tobytes(), {}))
        if self.quality is not None:
            info["population_quality"] = self.quality
        return info


def source_trials(trials: Sequence[Any]) -> list[SourceTrial]:
    """Trained, completed trials of a source study (Optuna ``FrozenTrial``s written by hwnas search)."""
    out = []
    for t in trials:
        a = t.user_attrs
        if t.state.name == "COMPLETE" and a.get("trained") and "genotype" in a and a.get("acc") is not None:
            costs = {k: float(a[k]) for k in ("flops", "params") if k in a}
            out.append(SourceTrial(t.number, str(a["genotype"]), float(a["acc"]), costs))
    return out
