"""What a search leaves behind: the Pareto front (CSV, JSON, plot) and hypervolume per trial (plot).

Pareto sorting and hypervolume come from pymoo. The hypervolume is taken over (1 - accuracy, cost /
scale) for the problem's first cost axis, both minimised, with reference point (1, 1): ``scale`` is the
budget of that cost when there is one; else, in the MBConv space, twice EfficientNet-B0's cost (for
latency, the first of EfficientNet-B0, MnasNet-A1, MobileNetV2 the problem's table can price; else 1 ms),
and in a benchmark space (enumerable) the largest cost of any of its architectures; so numbers compare
across runs and strategies of the same problem. A problem with no cost axis (accuracy alone) reports the
best accuracy as its hypervolume (the one-dimensional hypervolume of 1 - accuracy from 1).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from hwnas.atomic import save_figure, write_text_atomic
from hwnas.search.problem import Problem
from hwnas.units import dumps_strict

COST_ATTR = {"flops": "flops", "params": "params", "latency": "latency_ms"}


@dataclass(frozen=True)
class Row:
    trial: int
    genotype: str
    acc: float
    flops: float | None
    params: float | None
    latency_ms: float | None
    values: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "genotype": self.genotype, "acc": self.acc, "flops": self.flops,
                "params": self.params, "latency_ms": self.latency_ms, "objectives": self.values}


def feasible_rows(trials: list[FrozenTrial]) -> list[Row]:
    """Completed, feasible trials with an accuracy (cached repeats included once)."""
    seen: set[str] = set()
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        if t.state != TrialState.COMPLETE or not a.get("feasible") or a["genotype"] in seen:
            continue
        seen.add(a["genotype"])
        rows.append(Row(t.number, a["genotype"], float(a["acc"]), _opt(a.get("flops")), _opt(a.get("params")),
                        a.get("latency_ms"), list(t.values)))
    return rows


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


_SPACE_MAX: dict[tuple[Any, ...], float] = {}  # (space kind, cost, resolution, classes, source): a few entries


def scale_of(problem: Problem, cost: str) -> float:
    if cost in problem.budgets:
        return problem.budgets[cost]
    if problem.space.kind != "mbconv":
        return _space_max(problem, cost)
    from hwnas.references import reference
    from hwnas.walker import flops, params

    b0 = reference("efficientnet-b0")
    if cost == "flops":
        return 2.0 * flops(b0, problem.resolution, problem.num_classes)
    if cost == "params":
        return 2.0 * params(b0, problem.num_classes)
    from hwnas.latency.table import TableError

    for name in ("efficientnet-b0", "mnasnet-a1", "mobilenetv2") if problem.table else ():
        try:  # a table of another space may lack some
            return 2.0 * problem.table.predict(reference(name), problem.resolution)
        except TableError:
            continue
    return 1.0


ENUMERABLE = 100_000  # a space this small is walked whole for its largest cost; a larger one is sampled


def _space_max(problem: Problem, cost: str) -> float:
    """The largest ``cost`` of any architecture of an enumerable (benchmark) space, computed once; for a space
    too large to walk (darts), twice the largest of 256 architectures drawn with a fixed seed."""
    sp, table = problem.space, problem.table
    config = getattr(sp, "to_dict", None)
    key = (sp.kind, repr(config()) if callable(config) else None, cost, problem.resolution, problem.num_classes,
           table.source if table else None)
    if key not in _SPACE_MAX:
        if cost == "latency" and table is not None and hasattr(table, "values"):
            worst = float(np.max(table.values))
        elif sp.size() > ENUMERABLE:
            rng = np.random.default_rng(0)
            worst = 2.0 * max(problem.costs(sp.decode(sp.sample(rng)))[cost] for _ in range(256))
        else:
            worst = max(problem.costs(sp.decode(np.array(np.unravel_index(i, [len(o) for _, o in sp.dims]))))[cost]
                        for i in range(sp.size()))
        _SPACE_MAX[key] = worst if worst > 0 else 1.0
    return _SPACE_MAX[key]


def _points(rows: list[Row], problem: Problem) -> np.ndarray:
    """(1 - acc, cost_1/scale_1, ...) for every cost axis: all minimised."""
    axes = problem.cost_axes
    scales = [scale_of(problem, c) for c in axes]
    return np.array([[1 - r.acc, *[_cost(r, c) / k for c, k in zip(axes, scales, strict=True)]] for r in rows],
                    dtype=float)


def _cost(r: Row, c: str) -> float:
    v = r.latency_ms if c == "latency" else getattr(r, c)
    return float(v) if v is not None else float("nan")


def pareto_front(rows: list[Row], problem: Problem) -> list[Row]:
    """Non-dominated rows over accuracy and every cost axis, sorted by the first cost."""
    if not rows:
        return []
    if not problem.cost_axes:  # accuracy alone: the best one(s)
        best = max(r.acc for r in rows)
        return [r for r in rows if r.acc == best]
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    front = NonDominatedSorting().do(_points(rows, problem), only_non_dominated_front=True)
    return sorted((rows[i] for i in front), key=lambda r: _cost(r, problem.cost_axes[0]))


def hypervolume(rows: list[Row], problem: Problem) -> float:
    """Hypervolume of (1 - acc, first cost / scale) with reference point (1, 1); 0 for no rows."""
    if not rows:
        return 0.0
    if not problem.cost_axes:
        return max(r.acc for r in rows)
    from pymoo.indicators.hv import HV

    pts = _points(rows, problem)[:, :2]
    pts = pts[np.all(pts < 1.0, axis=1)]
    return float(HV(ref_point=np.ones(2))(pts)) if len(pts) else 0.0


def hypervolume_curve(trials: list[FrozenTrial], problem: Problem) -> list[tuple[int, float]]:
    """Hypervolume after each trial (by trial number)."""
    ordered = sorted(trials, key=lambda t: t.number)
    rows: list[Row] = []
    curve, seen = [], set()
    for t in ordered:
        for r in feasible_rows([t]):
            if r.genotype not in seen:
                seen.add(r.genotype)
                rows.append(r)
        curve.append((t.number, hypervolume(rows, problem)))
    return curve


def write_outputs(trials: list[FrozenTrial], problem: Problem, run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """pareto.csv, pareto.json, pareto.png, hypervolume.png in ``run_dir``; returns a summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = feasible_rows(trials)
    front = pareto_front(rows, problem)
    curve = hypervolume_curve(trials, problem)
    n_infeasible = sum(1 for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("feasible"))
    n_failed = sum(1 for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("interrupted")
                   and "cached_from" not in t.user_attrs)  # a failed genotype asked twice failed once
    n_dropped = sum(t.state == TrialState.PRUNED and bool(t.user_attrs.get("prefiltered")) for t in trials)
    summary = {**meta, "problem": problem.describe(), "trials": len(trials), "evaluated": len(rows),
               "infeasible": n_infeasible, "failed": n_failed, "prefiltered": n_dropped,
               "hypervolume": curve[-1][1] if curve else 0.0, "hypervolume_axes": hypervolume_axes(problem),
               "pareto": [r.to_dict() for r in front]}
    write_text_atomic(run_dir / "pareto.json", dumps_strict(summary, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    extra = [i for i, n in enumerate(problem.value_names) if n not in ("acc", "flops", "params", "latency")]
    w.writerow(["trial", "genotype", "acc", "flops", "params", "latency_ms", *(problem.value_names[i] for i in extra)])
    for r in front:
        w.writerow([r.trial, r.genotype, r.acc, _int(r.flops), _int(r.params), r.latency_ms,
                    *(r.values[i] for i in extra)])
    write_text_atomic(run_dir / "pareto.csv", buf.getvalue())
    _plot_front(trials, rows, front, problem, run_dir / "pareto.png", meta)
    _plot_hv(curve, run_dir / "hypervolume.png", meta, summary["hypervolume_axes"])
    return summary


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def _label(cost: str) -> str:
    return {"flops": "FLOPs (M multiply-adds)", "params": "params (M)", "latency": "latency (ms)"}[cost]


def _shown(cost: str, v: float) -> float:
    return v / 1e6 if cost in ("flops", "params") else v


def _plot_front(trials: list[FrozenTrial], rows: list[Row], front: list[Row], problem: Problem, path: Path,
                meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = problem.cost_axes[0] if problem.cost_axes else None
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    if cost is None:  # accuracy alone: accuracy per trial
        ax.scatter([r.trial for r in rows], [r.acc for r in rows], s=14, c="tab:blue", alpha=0.5,
                   label=f"evaluated ({len(rows)})")
        ax.scatter([r.trial for r in front], [r.acc for r in front], s=30, c="tab:red", label="best")
        ax.set(xlabel="trial", ylabel="accuracy", title=f"{meta.get('study', '')}: {meta.get('strategy', '')}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        save_figure(fig, path)
        plt.close(fig)
        return
    infeasible = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("feasible")]
    if infeasible:
        xs = [_shown(cost, t.user_attrs.get(COST_ATTR[cost]) or float("nan")) for t in infeasible]
        ax.scatter(xs, [0.0] * len(xs), marker="x", c="0.6", s=14, label=f"infeasible, not trained ({len(xs)})")
    if rows:
        ax.scatter([_shown(cost, _cost(r, cost)) for r in rows], [r.acc for r in rows], s=14, c="tab:blue",
                   alpha=0.5, label=f"evaluated ({len(rows)})")
    if front:
        ax.plot([_shown(cost, _cost(r, cost)) for r in front], [r.acc for r in front], "o-", c="tab:red", ms=5,
                label="Pareto front")
    if cost in problem.budgets:
        ax.axvline(_shown(cost, problem.budgets[cost]), color="k", ls="--", lw=1, label="budget")
    for name in ("efficientnet-b0", "mnasnet-a1", "mobilenetv2") if problem.space.kind == "mbconv" else ():
        from hwnas.references import reference

        try:
            c = problem.costs(reference(name))[cost]
        except Exception:  # e.g. a reference outside the latency table's space
            continue
        ax.axvline(_shown(cost, c), color="tab:green", ls=":", lw=1)
        ax.annotate(name, (_shown(cost, c), 0.02), rotation=90, fontsize=7, color="tab:green", va="bottom")
    ylabel = "proxy accuracy (validation)" if problem.space.kind == "mbconv" else "accuracy"
    ax.set(xlabel=_label(cost) + f" at {problem.resolution} px", ylabel=ylabel,
           title=f"{meta.get('study', '')}: {meta.get('strategy', '')}, {len(rows)} evaluated")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def hypervolume_axes(problem: Problem) -> str:
    """What the hypervolume is taken over, in words: its axes, scale and reference point."""
    if not problem.cost_axes:
        return "accuracy alone: the best accuracy"
    cost = problem.cost_axes[0]
    k = scale_of(problem, cost)
    unit = {"latency": f"{k:.4g} ms", "flops": f"{k / 1e6:.4g}M multiply-adds", "params": f"{k / 1e6:.4g}M params"}
    why = "its budget" if cost in problem.budgets else "the scale"
    return f"(1 - acc, {cost} / {unit.get(cost, f'{k:.4g}')} ({why})), reference point (1, 1)"


def _plot_hv(curve: list[tuple[int, float]], path: Path, meta: dict[str, Any], axes: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    if curve:
        ax.step([n for n, _ in curve], [h for _, h in curve], where="post")
    ax.set(xlabel="trial", ylabel="hypervolume", title=f"{meta.get('study', '')}\nover {axes}")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
