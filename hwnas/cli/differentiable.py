"""``hwnas search --strategy darts|gdas``: differentiable search, one gradient run per trial, in a study.

Each trial is one run of ``hwnas.search.differentiable.run_differentiable`` (seed = the search's seed + the
run's index): it trains the search network on images (NB201's cell network, or an MBConv space's elastic
supernet with ``gdas``), derives an architecture (argmax per edge or per dimension), and that architecture is
the trial's, evaluated like any proposal -- looked up in the benchmark (``--benchmark``), proxy-trained, scored
by a supernet -- and priced, so budgets, reports, exports and the dashboard work as for any search. The run's
record (softmax(alpha) per epoch, losses, the expected and derived cost, the cost model and its fit) is the
trial's ``differentiable`` attribute; ``alphas.png`` in the run's folder draws the last run's alpha history.

The images: with ``--benchmark``, the whole training split, halved (weights on one half, alpha on the other,
as NB201's DARTS/GDAS); otherwise the search's training split (never the evaluator's validation images),
halved. The cost term prices the deployed network: latency when the problem has a latency objective or
budget (NB201: fitted to the ``--table nb201:DEVICE`` it uses; MBConv: the exact expectation of the MBConv
``--table``'s prediction), else FLOPs; its weight and form are the recipe's ``[differentiable]`` table
(``cost_coef`` 0: no cost term).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwnas import interrupts
from hwnas.cli.common import UsageError

ATTR = "differentiable"  # trial user attribute: the run's record


def settings_of(table: dict[str, Any], recipe: Any, method: str, kind: str = "nb201") -> Any:
    """The recipe's ``[differentiable]`` table as checked ``DifferentiableSettings`` (method from --strategy)
    for the ``kind`` of space searched."""
    from hwnas.search.differentiable import DifferentiableSettings

    known = set(DifferentiableSettings().to_dict()) - {"method"}
    bad = sorted(set(table) - known)
    if bad:
        raise UsageError(f"recipe {recipe}: unknown key(s) in [differentiable]: {', '.join(bad)} (known: "
                         f"{', '.join(sorted(known))})")
    try:
        settings = DifferentiableSettings(method=method, **table)
        if settings.cost_form == "target" and settings.cost_target is None:  # the budget's, by cost_model_of
            from dataclasses import replace

            return replace(settings, cost_target=1.0).check().check_for(kind) and settings
        return settings.check().check_for(kind)
    except (TypeError, ValueError) as e:
        raise UsageError(f"recipe {recipe}: [differentiable]: {e}") from None


def cost_model_of(problem: Any, settings: Any) -> Any:
    """Latency when latency is an objective or a budget (NB201: fitted to the problem's NB201 device table;
    MBConv: the problem's latency table, exact), else FLOPs (exact); the ``target`` form's target defaults to
    that cost's budget."""
    from hwnas.search.differentiable import MBConvCostModel, flops_cost_model, latency_cost_model

    wants_latency = "latency" in problem.objectives or "latency" in problem.budgets
    if problem.space.kind == "mbconv":
        from hwnas.latency.table import TableError

        try:  # the problem's table was checked against its space and resolution
            model = MBConvCostModel(problem.space, problem.resolution, problem.num_classes,
                                    problem.table if wants_latency else None)
        except (TableError, ValueError) as e:
            raise UsageError(str(e)) from None
        budget = problem.budgets.get("latency" if wants_latency else "flops")
        if budget is not None and not wants_latency:
            budget = budget / 1e6  # the model counts MFLOPs
    elif wants_latency:
        source = problem.table.source if problem.table is not None else ""
        if not source.startswith("nb201:"):
            raise UsageError("the differentiable search's latency term is fitted to a NAS-Bench-201 device's "
                             f"published latencies: give --table nb201:DEVICE (got {source or 'none'})")
        model, budget = latency_cost_model(source.removeprefix("nb201:")), problem.budgets.get("latency")
    else:
        model = flops_cost_model(problem.space, problem.resolution, problem.num_classes)
        budget = problem.budgets.get("flops")
        budget = budget / 1e6 if budget is not None else None  # the model counts MFLOPs
    if settings.cost_form == "target" and settings.cost_target is None:
        if budget is None:
            raise UsageError(f"[differentiable] cost_form target needs cost_target (in {model.unit}) or a "
                             f"{'latency' if wants_latency else 'FLOPs'} budget")
        from dataclasses import replace

        settings = replace(settings, cost_target=float(budget))
    return model, settings.check()


def halves(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
    """A seeded 50/50 split: (weights' half, alpha's half)."""
    order = np.random.default_rng([seed, 0xDA]).permutation(len(y))
    a, b = np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2:])
    return (x[a], y[a]), (x[b], y[b])


class DerivedProposals:
    """The ask/tell strategy of a differentiable search: the k-th ask is the cell the k-th run derives (runs
    done before a resume are read back from the study, not repeated); tell is ignored (runs are independent)."""

    def __init__(self, space: Any, run: Any) -> None:
        self.space, self.run = space, run
        self.k = 0
        self.done: dict[int, str] = {}  # run index -> derived cell, from the study (resume)
        self.records: dict[str, dict[str, Any]] = {}  # derived cell -> the run's record (this process's runs)

    def ask(self) -> np.ndarray:
        k, self.k = self.k, self.k + 1
        if k in self.done:
            return self.space.encode(self.space.parse(self.done[k]))
        with interrupts.interruptible():  # minutes of training: Ctrl-C stops it now (the trial is failed)
            result = self.run(k)
        record = {"index": k, **result.to_dict()}
        self.records[record["arch"]] = record
        return self.space.encode(result.arch)

    def tell(self, x: np.ndarray, f: Any, g: Any) -> None:
        pass

    def annotate(self, x: np.ndarray) -> dict[str, Any]:
        arch = self.space.decode(x).to_string()
        record = self.records.pop(arch, None)
        return {ATTR: record} if record is not None else {}


def plot_alphas(trials: list[Any], path: Path, space: Any = None) -> None:
    """softmax(alpha) over the epochs of the last run recorded: one panel per NB201 edge, or for an MBConv
    ``space`` a heatmap per stage (and one of the global dimensions)."""
    recs = [t.user_attrs[ATTR] for t in trials if isinstance(t.user_attrs.get(ATTR), dict)]
    recs = [r for r in recs if r.get("alpha_history")]
    if not recs:
        return
    import matplotlib

    matplotlib.use("Agg")
    rec = max(recs, key=lambda r: r["index"])
    hist = rec["alpha_history"]  # epochs x (6 x 5 | one list per dimension)
    title = (f"{rec['settings']['method']} run {rec['index']} (seed {rec['seed']}): softmax(alpha); derived "
             f"{rec['arch']}")
    if rec.get("space", "nb201") == "nb201":
        _plot_edges(np.asarray(hist, dtype=float), title, path)
    else:
        _plot_dimensions(hist, space, title, path)


def _plot_edges(hist: np.ndarray, title: str, path: Path) -> None:
    """NB201: one panel per edge, a line per op."""
    import matplotlib.pyplot as plt

    from hwnas.atomic import save_figure
    from hwnas.spaces.nb201 import EDGES, NB201_OPS

    fig, axes = plt.subplots(2, 3, figsize=(11, 5.5), sharex=True, sharey=True)
    epochs = np.arange(1, hist.shape[0] + 1)
    for e, ax in enumerate(axes.flat):
        for o, op in enumerate(NB201_OPS):
            ax.plot(epochs, hist[:, e, o], label=op, marker="." if len(epochs) < 20 else None)
        ax.set_title(f"edge {EDGES[e][0]}<-{EDGES[e][1]}", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _plot_dimensions(hist: list[Any], space: Any, title: str, path: Path) -> None:
    """An MBConv space: a heatmap per stage (and one for the global dimensions), a row per choice of each of
    its dimensions, a column per epoch; the derived (argmax) choice of each dimension is marked."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from hwnas.atomic import save_figure

    dims = list(space.dims)
    groups = [("global", [k for k, (name, _) in enumerate(dims) if not name.startswith("s")])]
    groups += [(f"stage {i}", [k for k, (name, _) in enumerate(dims) if name.startswith(f"s{i}_")])
               for i in range(1, len(space.stages) + 1)]
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.2 * rows), squeeze=False)
    image = None
    for ax, (label, ks) in zip(axes.flat, groups, strict=False):
        values, names, bounds, derived = [], [], [], []
        for k in ks:
            name, opts = dims[k]
            short = name.split("_", 1)[1] if name.startswith("s") else name
            final = int(np.argmax(hist[-1][k]))
            for o, opt in enumerate(opts):
                values.append([epoch[k][o] for epoch in hist])
                names.append(f"{short} {opt}")
                if o == final:
                    derived.append(len(names) - 1)
            bounds.append(len(names))
        image = ax.imshow(np.asarray(values, dtype=float), aspect="auto", vmin=0, vmax=1, cmap="viridis",
                          interpolation="nearest")
        ax.set_yticks(range(len(names)), names, fontsize=6)
        for r in derived:
            ax.get_yticklabels()[r].set_fontweight("bold")
        for b in bounds[:-1]:
            ax.axhline(b - 0.5, color="white", linewidth=0.8)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))  # columns 0.. are epochs 1..
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v) + 1}"))
        ax.tick_params(axis="x", labelsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.subplots_adjust(left=0.07, right=0.93, top=0.93, bottom=0.05, wspace=0.55, hspace=0.25)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), fraction=0.015, pad=0.01, label="softmax(alpha)")
    fig.suptitle(title, fontsize=7)
    save_figure(fig, path, dpi=100)
    plt.close(fig)


__all__ = ["ATTR", "DerivedProposals", "cost_model_of", "halves", "plot_alphas", "settings_of"]
