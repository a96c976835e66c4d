"""How the REINFORCE controllers learn on NAS-Bench-201 CIFAR-10 (accuracy alone), beside random search and
regularized evolution: best test accuracy found at 200 and 1,000 evaluations over seeds, and the controller's
mean reward and policy entropy per update (a plot).

    python benchmarks/rl_controller.py                       # 10 seeds x 1,000 evaluations, ~10 min on 2 cores
    python benchmarks/rl_controller.py --seeds 3 --evaluations 300

Every run is the normal search loop over an in-memory study with accuracies looked up (as ``hwnas bench``).
Writes ``benchmarks/results/rl_controller.{json,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

from _common import RESULTS, environment, write_json

OUT = RESULTS / "rl_controller.json"
STRATEGIES = ("random", "evolution", "reinforce", "reinforce-factorised")
PUBLISHED = {"random": "93.70 +- 0.36", "evolution": "93.92 +- 0.30 (REA)", "reinforce": "93.85 +- 0.37",
             "reinforce-factorised": "93.85 +- 0.37 (the paper's REINFORCE is factorised)"}


def run(strategy: str, seed: int, evaluations: int, checkpoints: list[int]) -> dict[str, Any]:
    import optuna

    from hwnas.search.bench import BenchProblem
    from hwnas.search.run import create_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    problem, ev = BenchProblem("nb201-cifar10-acc", "nb201:cifar10", population=20).build()
    s = create_search(problem, None, "rl", strategy, ev.evaluate, seed=seed, population=20)
    best, t0 = {}, time.perf_counter()
    for n in checkpoints:
        s.run(n)
        trained = [t for t in s.study.get_trials(deepcopy=False) if t.user_attrs.get("trained")]
        best[str(n)] = max(t.user_attrs["acc"] for t in trained)
    out: dict[str, Any] = {"best": best, "seconds": round(time.perf_counter() - t0, 2),
                           "trials": len(s.study.get_trials(deepcopy=False))}
    ctrl = getattr(s.study.sampler, "strategy", None)
    if hasattr(ctrl, "history"):
        out["history"] = ctrl.history
    return out


def plot(res: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hwnas.atomic import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    for strategy in ("reinforce", "reinforce-factorised"):
        runs = [r["history"] for r in res["runs"][strategy]]
        n = min(len(h) for h in runs)
        for ax, key in zip(axes, ("reward", "entropy"), strict=True):
            m = np.array([[u[key] for u in h[:n]] for h in runs])
            told = np.cumsum([u["samples"] for u in runs[0][:n]])
            ax.plot(told, np.median(m, axis=0), label=strategy)
            ax.fill_between(told, np.percentile(m, 25, axis=0), np.percentile(m, 75, axis=0), alpha=0.2)
    axes[0].set(xlabel="samples learnt from", ylabel="mean reward per update (accuracy)")
    axes[1].set(xlabel="samples learnt from", ylabel="policy entropy (nats)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"REINFORCE on NAS-Bench-201 CIFAR-10: median and IQR over {res['seeds']} seeds", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--evaluations", type=int, default=1000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    checkpoints = sorted({n for n in (50, 100, 200, 500, args.evaluations) if n <= args.evaluations})
    res: dict[str, Any] = {"environment": environment("cpu"), "seeds": args.seeds, "evaluations": args.evaluations,
                           "checkpoints": checkpoints, "published": PUBLISHED, "runs": {}}
    for strategy in STRATEGIES:
        for seed in range(args.seeds):
            r = run(strategy, seed, args.evaluations, checkpoints)
            res["runs"].setdefault(strategy, []).append(r)
            print(f"  {strategy} seed {seed}: " + ", ".join(f"@{k} {v * 100:.2f}" for k, v in r["best"].items())
                  + f" ({r['seconds']:.1f} s, {r['trials']} trials)", flush=True)
    res["summary"] = {s: {k: {"mean": round(100 * statistics.mean(r["best"][k] for r in rs), 2),
                              "std": round(100 * statistics.pstdev([r["best"][k] for r in rs]), 2)}
                          for k in map(str, checkpoints)} for s, rs in res["runs"].items()}
    write_json(OUT, res)
    plot(res, OUT.with_suffix(".png"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
