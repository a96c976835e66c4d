"""The search problem: space + objectives + budgets + reward. Pure Python (no torch).

Objectives: ``acc`` (maximise, from the evaluator), ``latency`` (ms, from a latency source: a table measured
on real hardware, or a benchmark's published per-architecture latencies), ``flops`` (multiply-adds),
``params`` (all minimised; costs are priced by the space at the deployment resolution). Any space of
``hwnas.spaces`` works; one without a cost model (``has_costs`` false) takes only ``acc`` and latency.

Reward modes:

* ``pareto``: the listed objectives are optimised jointly; every budget is a hard constraint, checked
  before any training (a candidate over budget is recorded as infeasible and never trained).
* ``mnas-soft`` / ``mnas-hard``: one objective, the MnasNet/EfficientNet reward
  ``ACC x (cost/target)^w`` with ``w = alpha`` if cost <= target else ``beta``; soft: alpha = beta =
  -0.07, hard: alpha = 0, beta = -1. The cost is latency when a latency budget is given, else FLOPs;
  its budget is the target (a soft constraint). Other budgets stay hard constraints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hwnas.spaces.base import CategoricalSpace

OBJECTIVES: dict[str, str] = {"acc": "maximize", "latency": "minimize", "flops": "minimize", "params": "minimize"}
COSTS: tuple[str, ...] = ("latency", "flops", "params")
REWARDS: dict[str, tuple[float, float]] = {"mnas-soft": (-0.07, -0.07), "mnas-hard": (0.0, -1.0)}
STRATEGIES: tuple[str, ...] = ("nsga2", "nsga3", "tpe", "gp", "random", "pymoo-nsga2", "pymoo-agemoea",
                               "evolution", "reinforce", "reinforce-factorised")
# differentiable search (hwnas.search.differentiable): each trial is one gradient run's derived cell, proposed by
# an ask/tell strategy the CLI builds around the run (hwnas.cli.differentiable), not a sampler of make_sampler
GRADIENT_STRATEGIES: tuple[str, ...] = ("darts", "gdas")
UNITS = {"latency": "ms", "flops": "multiply-adds", "params": "parameters"}


class ProblemError(ValueError):
    """An inconsistent search problem (one line)."""


class LatencySource(Protocol):
    """What prices latency: ``hwnas.latency.table.LatencyTable`` (measured layer tables) or
    ``hwnas.latency.tabular.BenchmarkLatency`` (a benchmark's published per-network latencies)."""

    source: str
    metadata: dict[str, Any]

    def predict(self, arch: Any, resolution: int) -> float: ...

    def check_space(self, space: Any) -> None: ...

    def check_resolution(self, resolution: int) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Problem:
    space: CategoricalSpace
    objectives: tuple[str, ...] = ("acc", "flops")
    reward: str = "pareto"
    budgets: dict[str, float] = field(default_factory=dict)  # cost name -> upper bound
    resolution: int = 224
    num_classes: int = 1000
    table: LatencySource | None = None

    def __post_init__(self) -> None:
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise ProblemError(f"unknown objective(s) {', '.join(bad)} (choose from {', '.join(OBJECTIVES)})")
        if len(set(self.objectives)) != len(self.objectives) or not self.objectives:
            raise ProblemError("objectives must be a non-empty list without repeats")
        if "acc" not in self.objectives:
            raise ProblemError("objectives must include acc")
        if self.reward != "pareto" and self.reward not in REWARDS:
            raise ProblemError(f"unknown reward {self.reward!r} (choose pareto, mnas-soft, mnas-hard)")
        for k, v in self.budgets.items():
            if k not in COSTS:
                raise ProblemError(f"unknown budget {k!r}")
            if not v > 0:
                raise ProblemError(f"the {k} budget must be positive, got {v}")
        if not self.space.has_costs:
            no_model = [c for c in ("flops", "params") if c in self.objectives or c in self.budgets]
            if no_model:
                raise ProblemError(f"the {self.space.kind} space has no {no_model[0]} model (objectives: acc"
                                   f"{', latency' if self.table is not None else ''})")
        needs_table = "latency" in self.objectives or "latency" in self.budgets
        if needs_table and self.table is None:
            raise ProblemError("a latency objective or budget needs a latency table (--table)")
        if self.table is not None and needs_table:
            self.table.check_space(self.space)
            self.table.check_resolution(self.resolution)
        if self.reward != "pareto" and self.reward_cost is None:
            raise ProblemError(f"reward {self.reward} needs a FLOPs or latency budget as its target")

    # ---- description ----------------------------------------------------------------------------
    @property
    def reward_cost(self) -> str | None:
        if self.reward == "pareto":
            return None
        return "latency" if "latency" in self.budgets else ("flops" if "flops" in self.budgets else None)

    @property
    def hard_budgets(self) -> dict[str, float]:
        return {k: v for k, v in self.budgets.items() if k != self.reward_cost}

    @property
    def directions(self) -> list[str]:
        return ["maximize"] if self.reward != "pareto" else [OBJECTIVES[o] for o in self.objectives]

    @property
    def value_names(self) -> list[str]:
        return ["reward"] if self.reward != "pareto" else list(self.objectives)

    @property
    def cost_axes(self) -> list[str]:
        """Costs shown against accuracy (the first is the main one)."""
        axes = [o for o in self.objectives if o != "acc"]
        if axes or self.reward_cost:
            return axes or [str(self.reward_cost)]
        return ["flops"] if self.space.has_costs else []

    # ---- pricing ------------------------------------------------------------------------------------
    def costs(self, g: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.space.has_costs:
            out["flops"] = float(self.space.flops(g, self.resolution, self.num_classes))
            out["params"] = float(self.space.params(g, self.num_classes))
        if self.table is not None:
            out["latency"] = self.table.predict(g, self.resolution)
        return out

    def violations(self, costs: dict[str, float]) -> dict[str, float]:
        """Per hard budget, the relative excess ``cost / budget - 1``: <= 0 is feasible (Optuna's convention)."""
        return {k: costs[k] / v - 1.0 for k, v in sorted(self.hard_budgets.items())}

    def feasible(self, costs: dict[str, float]) -> bool:
        return all(v <= 0 for v in self.violations(costs).values())

    def reward_value(self, acc: float, costs: dict[str, float]) -> float:
        cost = self.reward_cost
        assert cost is not None
        alpha, beta = REWARDS[self.reward]
        ratio = costs[cost] / self.budgets[cost]
        return acc * ratio ** (alpha if ratio <= 1 else beta)

    def values(self, acc: float, costs: dict[str, float]) -> list[float]:
        """Objective values in ``directions`` order."""
        if self.reward != "pareto":
            return [self.reward_value(acc, costs)]
        return [acc if o == "acc" else costs[o] for o in self.objectives]

    def describe(self) -> dict[str, Any]:
        out = {"objectives": list(self.objectives), "reward": self.reward, "budgets": dict(self.budgets),
               "resolution": self.resolution, "num_classes": self.num_classes, "space": self.space.name,
               "table": self.table.source if self.table else None}
        if self.space.kind != "mbconv":  # studies of the MBConv space made before spaces had kinds still resume
            out["space_kind"] = self.space.kind
            to_dict = getattr(self.space, "to_dict", None)
            if callable(to_dict):  # the network shape of a cell space (darts): another shape is another problem
                out["space_config"] = to_dict()
        return out

    def record(self) -> dict[str, Any]:
        """What rebuilds this problem (``problem_from_record``), kept in its study: any worker, and
        ``hwnas report``, can then price, sort and plot the study's trials as the search did. The latency source
        is named (a table's file or shipped name, ``nb201:DEVICE``), not copied."""
        to_dict = getattr(self.space, "to_dict", None)  # the MBConv space's settings; the others have none
        return {"space_kind": self.space.kind, "space": to_dict() if callable(to_dict) else None,
                "objectives": list(self.objectives), "reward": self.reward, "budgets": dict(self.budgets),
                "resolution": self.resolution, "num_classes": self.num_classes,
                "table": self.table.source if self.table else None}


def problem_from_record(d: Any, table: Callable[[str], LatencySource] | None = None) -> Problem:
    """The problem ``Problem.record`` described; ``table`` loads its latency source by name (the caller reads
    files). Also takes the ``problem`` of a study's settings (``Problem.describe``) of a study made before records
    were kept: its space is then the default one of its kind. ``ProblemError`` names what is wrong."""
    from hwnas.spaces import SpaceError, get_space

    def damaged(why: str) -> ProblemError:
        return ProblemError(f"the study's problem record is damaged ({why[:200]})")

    def whole(key: str, high: int) -> int:
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
            raise damaged(f"{key} is not an integer from 1 to {high}: {repr(v)[:40]}")
        return v

    if not isinstance(d, dict):
        raise damaged(f"a {type(d).__name__}, not an object")
    kind, objectives, reward, budgets = d.get("space_kind", "mbconv"), d.get("objectives"), d.get("reward"), \
        d.get("budgets")
    if not isinstance(kind, str) or not isinstance(reward, str):
        raise damaged("space_kind and reward must be names")
    if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
        raise damaged("objectives must be a list of names")
    if not isinstance(budgets, dict) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                and math.isfinite(v) for v in budgets.values()):
        raise damaged("budgets must map costs to finite numbers")
    source = d.get("table")
    if not isinstance(source, str | None):
        raise damaged("table must be the name of a latency source")
    if source is not None and table is None:
        raise ProblemError(f"the problem prices latency with {source}: a table loader is needed")
    config = d.get("space")  # describe()'s is the space's name: then the default space of its kind
    try:
        space = get_space(kind, config if isinstance(config, dict) else None)
    except (SpaceError, TypeError, ValueError, OverflowError) as e:
        raise damaged(f"its space: {e}") from None
    return Problem(space, tuple(objectives), reward, {str(k): float(v) for k, v in budgets.items()},
                   whole("resolution", 8192), whole("num_classes", 1 << 20),
                   table(source) if source is not None and table is not None else None)
