"""Strategies compared at equal evaluations: hypervolume of every strategy vs random, median over seeds.

The objective must be cheap enough for (strategies x seeds x evaluations) runs, so accuracy comes from a
SURROGATE fitted to real proxy-training results (labelled as such in every output):

1. ``collect``: train random feasible architectures of the default space with the default CPU proxy
   (embedded CIFAR-10 subset, the search's own evaluator) and store their validation accuracy
   (resumable, incremental);
2. ``run``: fit a ridge regression on architecture features (log FLOPs, log params, depth, mean kernel,
   mean expansion, shares of SE/ds/skip blocks, activation, width), report its cross-validated Kendall
   tau, then run every strategy through hwnas's real search loop (``create_search``) with the surrogate as
   the evaluator, budget FLOPs <= 400M, objectives (acc, FLOPs), and compare hypervolumes.

    python benchmarks/strategies.py collect -n 60
    python benchmarks/strategies.py run --evals 120 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import RESULTS, environment, load_data, write_json


def features(g: Any) -> list[float]:
    import math

    from hwnas.walker import flops, params

    blocks = [(s, s.repeats) for s in g.stages]
    n = sum(r for _, r in blocks)
    mean = lambda f: sum(f(s) * r for s, r in blocks) / n  # noqa: E731
    return [math.log(flops(g, 224)), math.log(params(g, 10)), n, mean(lambda s: s.kernel),
            mean(lambda s: s.expansion), mean(lambda s: float(s.se_ratio > 0)), mean(lambda s: float(s.op == "ds")),
            mean(lambda s: float(s.skip)), float(g.activation == "relu"), float(g.activation == "relu6"),
            math.log(g.head), math.log(sum(s.channels * r for s, r in blocks) / n)]


def collect(a: argparse.Namespace) -> None:
    import numpy as np

    from hwnas.scaling import scale
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, Recipe
    from hwnas.walker import flops

    out = RESULTS / f"surrogate_data.part{a.part}.json"
    state = json.loads(out.read_text()) if out.exists() else {"rows": []}
    data = load_data(None, None)
    tx, ty, vx, vy = data.split_validation(1000)
    ev = Evaluator((tx, ty), (vx, vy), 10, Budget(epochs=a.epochs), Recipe(batch_size=32, lr=0.8), "cpu")
    space, rng = SearchSpace.default(), np.random.default_rng(a.seed)
    archs = [space.decode(space.sample_where(rng, lambda g: flops(g, 224) <= 400e6)) for _ in range(a.n)]
    done = {r["genotype"] for r in state["rows"]}
    for i, g in enumerate(archs[a.part::a.parts]):
        if g.to_string() in done:
            continue
        t0 = time.perf_counter()
        m = ev.evaluate(scale(g, width=0.25), 0)
        state["rows"].append({"genotype": g.to_string(), "val_acc": m.val_acc, "seconds": time.perf_counter() - t0})
        state.update({"proxy": f"{a.epochs} epochs, width x0.25, 32 px, batch 32, lr 0.8/512, embedded CIFAR-10 "
                      "subset (4000 train / 1000 val)", **environment("cpu")})
        write_json(out, state)  # parallel collectors (--part/--parts) write one file each; `run` merges them
        print(f"{i + 1}: {m.val_acc}", flush=True)


def run(a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy.stats import kendalltau

    from hwnas.genotype import parse_genotype
    from hwnas.search.problem import STRATEGIES, Problem
    from hwnas.search.report import feasible_rows, hypervolume
    from hwnas.search.run import EvalResult, create_search
    from hwnas.space import SearchSpace

    parts = sorted(RESULTS.glob("surrogate_data.part*.json"))
    rows = [r for part in parts for r in json.loads(part.read_text())["rows"]]
    rows = list({r["genotype"]: r for r in rows if r["val_acc"] is not None}.values())
    X = np.array([features(parse_genotype(r["genotype"])) for r in rows])
    y = np.array([r["val_acc"] for r in rows])
    mu, sd = X.mean(0), X.std(0) + 1e-9

    def fit(idx: np.ndarray, lam: float = 3.0) -> np.ndarray:
        Z = np.column_stack([np.ones(len(idx)), (X[idx] - mu) / sd])
        reg = lam * np.eye(Z.shape[1])
        reg[0, 0] = 0
        return np.linalg.solve(Z.T @ Z + reg, Z.T @ y[idx])

    folds = np.array_split(np.random.default_rng(0).permutation(len(y)), 5)
    pred = np.empty_like(y)
    for f in folds:
        w = fit(np.setdiff1d(np.arange(len(y)), f))
        pred[f] = np.column_stack([np.ones(len(f)), (X[f] - mu) / sd]) @ w
    cv_tau = float(kendalltau(pred, y).statistic)
    w = fit(np.arange(len(y)))

    def surrogate(g: Any) -> EvalResult:
        z = (np.array(features(g)) - mu) / sd
        return EvalResult(float(np.clip(w[0] + z @ w[1:], 0.0, 1.0)))

    space = SearchSpace.default()
    problem = Problem(space, ("acc", "flops"), "pareto", {"flops": 400e6}, 224, 10)
    out = RESULTS / "strategies.json"
    prev = json.loads(out.read_text()) if out.exists() else {}
    same = (prev.get("evaluations"), prev.get("seeds"), prev.get("n_training_results")) == (a.evals, a.seeds, len(y))
    results: dict[str, list[float]] = {k: v["all"] for k, v in prev.get("hypervolume", {}).items()} if same else {}
    curves: dict[str, list[list[float]]] = prev.get("curves", {}) if same else {}
    seconds: dict[str, float] = prev.get("seconds", {}) if same else {}
    for strategy in a.strategies or STRATEGIES:
        hvs, cs, t0 = [], [], time.perf_counter()
        for seed in range(a.seeds):
            s = create_search(problem, None, f"{strategy}-{seed}", strategy, surrogate, seed=seed,
                              population=a.population)
            s.seed_population(a.evals)
            s.run(a.evals)
            trials = s.study.get_trials(deepcopy=False)
            hvs.append(hypervolume(feasible_rows(trials), problem))
            evaluated = [t for t in trials if t.user_attrs.get("trained")]
            cs.append([hypervolume(feasible_rows(evaluated[:k]), problem) for k in range(10, a.evals + 1, 10)])
        results[strategy], curves[strategy] = hvs, cs
        seconds[strategy] = round(time.perf_counter() - t0, 1)
        print(f"{strategy:14s} median HV {np.median(hvs):.4f} ({seconds[strategy]} s)", flush=True)
    base = float(np.median(results["random"])) if "random" in results else float("nan")
    summary = {
        **environment("cpu"), "benchmark": "strategies", "objective": "SURROGATE accuracy: ridge regression fitted "
        f"to {len(y)} real proxy-training results (benchmarks/results/surrogate_data.part*.json), cross-validated "
        f"Kendall tau {cv_tau:.3f}", "surrogate_cv_kendall_tau": cv_tau, "n_training_results": len(y),
        "evaluations": a.evals, "seeds": a.seeds, "population": a.population, "budget_flops": 400e6,
        "hypervolume": {k: {"median": float(np.median(v)), "all": v, "vs_random_pct":
                            (float(np.median(v)) / base - 1) * 100} for k, v in results.items()},
        "seconds": seconds, "curves": curves,
    }
    best = max(results, key=lambda k: float(np.median(results[k])))
    summary["best"] = {"strategy": best, "vs_random_pct": summary["hypervolume"][best]["vs_random_pct"]}
    write_json(out, summary)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = list(range(10, a.evals + 1, 10))
    for k, cs in curves.items():
        ax.plot(xs, np.median(np.array(cs), axis=0), label=f"{k} ({np.median(results[k]):.3f})",
                lw=2.2 if k == best else 1.2, ls="--" if k == "random" else "-")
    ax.set(xlabel="evaluations", ylabel="hypervolume (1-acc, FLOPs/400M)",
           title=f"median over {a.seeds} seeds; SURROGATE accuracy (ridge on {len(y)} real proxy results, "
                 f"CV tau {cv_tau:.2f})")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "strategies.png")
    print(f"best: {best}, {summary['best']['vs_random_pct']:+.1f}% hypervolume vs random")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("-n", type=int, default=60)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--epochs", type=float, default=1.5)
    c.add_argument("--part", type=int, default=0)
    c.add_argument("--parts", type=int, default=1)
    r = sub.add_parser("run")
    r.add_argument("--evals", type=int, default=120)
    r.add_argument("--seeds", type=int, default=5)
    r.add_argument("--population", type=int, default=20)
    r.add_argument("--strategies", nargs="*")
    a = p.parse_args()
    collect(a) if a.cmd == "collect" else run(a)


if __name__ == "__main__":
    main()
