"""EAT-NAS transfer vs a target search from scratch, at equal evaluations, on real target images.

Both arms run the real CLI on the same target data with the same proxy (width x0.25 on CPU, x1 on GPU, at
--target-resolution, checked from the studies), budget, population and seed:
``hwnas transfer`` (population seeded from the source study's basic architecture) and ``hwnas search
--strategy evolution`` (the same aging evolution, seeded by random feasible samples). Reported per arm and
seed: best accuracy and hypervolume (accuracy vs FLOPs, as ``hwnas search`` reports it) after each
evaluation; the median over seeds goes to ``results/transfer.json`` and ``results/transfer.png``.

    python benchmarks/transfer.py --source-storage sqlite:///search/runs/src.db --source-study src \\
        --target-data data/imagenette-2k.tar.xz --trials 8 --seeds 0,1,2 --device cpu
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, environment, write_json


def curves(storage: str, study: str, budget_flops: float, resolution: int) -> dict[str, list[float]]:
    """Best accuracy and hypervolume after each trained evaluation (repeats and infeasible proposals cost none)."""
    import optuna

    from hwnas.search.problem import Problem
    from hwnas.search.report import hypervolume_curve
    from hwnas.space import SearchSpace

    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    problem = Problem(SearchSpace.default(), ("acc", "flops"), "pareto", {"flops": budget_flops}, resolution, 10)
    hv_after = dict(hypervolume_curve(trials, problem))
    trained = sorted((t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("trained")),
                     key=lambda t: t.number)
    accs = [float(t.user_attrs["acc"]) for t in trained]
    return {"best_acc": [max(accs[:i + 1]) for i in range(len(accs))],
            "hypervolume": [hv_after[t.number] for t in trained]}


def _proxy(storage: str, study: str) -> tuple[float, int]:
    import optuna

    settings = optuna.load_study(study_name=study, storage=storage).user_attrs["hwnas"]
    return float(settings["proxy_width"]), int(settings["proxy_resolution"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--source-storage", required=True)
    p.add_argument("--source-study", required=True)
    p.add_argument("--target-data", required=True)
    p.add_argument("--target-resolution", type=int, default=32,
                   help="proxy resolution of both arms (the search recipes' proxy_resolution is 32)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.8)
    p.add_argument("--budget-flops", default="400M")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", default="transfer")
    a = p.parse_args()

    import numpy as np

    from hwnas.units import parse_count

    seeds = [int(x) for x in a.seeds.split(",")]
    common = ["--data-dir", a.target_data, "--trials", str(a.trials), "--population", str(a.population),
              "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
              "--budget-flops", a.budget_flops, "--device", a.device, "--dataset", "target"]
    runs: dict[str, dict[int, Any]] = {"transfer": {}, "scratch": {}}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for arm in ("transfer", "scratch"):
                name, storage = f"{arm}-{seed}", f"sqlite:///{tmp}/{arm}-{seed}.db"
                if arm == "transfer":  # proxy at --target-resolution, like the search recipe's proxy_resolution
                    cmd = ["transfer", "--source-storage", a.source_storage, "--source-study", a.source_study,
                           "--target-resolution", str(a.target_resolution)]
                else:
                    cmd = ["search", "--strategy", "evolution"]
                cmd += [*common, "--seed", str(seed), "--storage", storage, "--study-name", name, "--run-dir", tmp]
                t1 = time.monotonic()
                r = subprocess.run([sys.executable, "-m", "hwnas", *cmd], capture_output=True, text=True, cwd=ROOT)
                if r.returncode != 0:
                    sys.exit(f"{arm} seed {seed} failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
                proxy = _proxy(storage, name)
                if proxy != (0.25 if a.device == "cpu" else 1.0, a.target_resolution):
                    sys.exit(f"{arm} trained its proxy at (width, resolution) {proxy}: the arms must match")
                runs[arm][seed] = {**curves(storage, name, parse_count(a.budget_flops), 224),
                                   "seconds": round(time.monotonic() - t1, 1)}
                write_json(RESULTS / f"{a.output}.partial.json", {"runs": runs})  # survives an interrupted run
                print(f"{arm} seed {seed}: best acc {runs[arm][seed]['best_acc'][-1]:.4f}, hypervolume "
                      f"{runs[arm][seed]['hypervolume'][-1]:.4f} ({runs[arm][seed]['seconds']:.0f} s)", flush=True)

    def median_curve(arm: str, key: str) -> list[float]:
        n = min(len(v[key]) for v in runs[arm].values())
        return [float(np.median([v[key][i] for v in runs[arm].values()])) for i in range(n)]

    summary = {arm: {"median_best_acc": median_curve(arm, "best_acc"),
                     "median_hypervolume": median_curve(arm, "hypervolume")} for arm in runs}
    final = {arm: {k: v[-1] for k, v in s.items()} for arm, s in summary.items()}
    result = {**environment(a.device), "benchmark": "transfer", "source": {"storage": a.source_storage,
              "study": a.source_study}, "target_data": a.target_data, "target_resolution": a.target_resolution,
              "trials": a.trials, "population": a.population, "epochs": a.epochs, "seeds": seeds,
              "budget_flops": a.budget_flops, "seconds": round(time.monotonic() - t0, 1), "final": final,
              "curves": summary, "runs": {arm: {str(k): v for k, v in r.items()} for arm, r in runs.items()}}
    write_json(RESULTS / f"{a.output}.json", result)
    (RESULTS / f"{a.output}.partial.json").unlink(missing_ok=True)
    _plot(summary, RESULTS / f"{a.output}.png", result)
    print(f"median over {len(seeds)} seeds after {a.trials} evaluations: transfer best acc "
          f"{final['transfer']['median_best_acc']:.4f}, HV {final['transfer']['median_hypervolume']:.4f}; scratch "
          f"best acc {final['scratch']['median_best_acc']:.4f}, HV {final['scratch']['median_hypervolume']:.4f}")


def _plot(summary: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm, s in summary.items():
        for ax, key in zip(axes, ("median_best_acc", "median_hypervolume"), strict=True):
            ax.plot(range(1, len(s[key]) + 1), s[key], marker="o", label=arm)
            ax.set_xlabel("evaluations")
            ax.set_ylabel(key.replace("median_", "median ").replace("_", " "))
    axes[0].legend()
    fig.suptitle(f"EAT-NAS transfer vs scratch, {meta['target_data']}, {len(meta['seeds'])} seeds, "
                 f"{meta['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
