"""Zero-cost proxies against long training on the MBConv space: does anything that needs no training rank
the space's architectures as well as the trained proxies do?

For every architecture with a long (30-epoch) result in a proxy-fidelity result file (the H100 runs), at
initialisation and at 32 px (the CIFAR stem adaptation, full width, no training), every proxy of
``hwnas.evaluators.zero_cost`` (definitions in docs/evaluators.md) plus a one-bit baseline:

* ``swish``: 1 if the candidate's activation is swish, else 0 (how much of the long ranking the activation
  alone explains; Kendall's tau-b counts the ties).

Each score is computed for ``--seeds`` seeds (initialisation and minibatch); Kendall tau and Spearman
against the long test accuracy are reported per seed and for the mean score, beside the trained proxies'
figures from the same file. Scores are taken on the CPU (the ranking does not depend on the device):

    python benchmarks/zero_cost.py --from benchmarks/results/proxy_fidelity-cuda.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, load_data, write_json

SCORES = ("synflow", "naswot", "jacov", "snip", "grad_norm", "grasp", "fisher", "zico", "zen", "flops", "params",
          "swish")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", default=str(RESULTS / "proxy_fidelity-cuda.json"),
                   help="proxy-fidelity result file with long results (and trained proxies to compare)")
    p.add_argument("--data-dir", help="CIFAR-10 (folder or archive); default: the embedded subset")
    p.add_argument("--cache")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64, help="images per minibatch (ZiCo uses two)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--output", default="zero_cost.json")
    a = p.parse_args()

    import numpy as np
    import torch
    from scipy.stats import kendalltau, spearmanr

    from hwnas.genotype import parse_genotype

    if a.threads:
        torch.set_num_threads(a.threads)
    src = json.loads(Path(a.source).read_text())
    long = {g: m["val_acc"] for g, m in src.get("long", {}).items() if m.get("val_acc") is not None}
    if len(long) < 3:
        raise SystemExit(f"zero_cost: {a.source} has {len(long)} long results; at least 3 are needed")
    from hwnas.evaluators.zero_cost import ZeroCostScorer, cost_groups
    from hwnas.space import SearchSpace

    data = load_data(a.data_dir, a.cache)
    names = sorted(long)
    scores: dict[str, dict[str, list[float]]] = {g: {k: [] for k in SCORES} for g in names}
    seconds: dict[str, float] = {}
    zc = [k for k in SCORES if k != "swish"]
    scorers = [ZeroCostScorer(SearchSpace.default(), data.train_x, data.train_y, data.num_classes,
                              batch_size=a.batch_size, seed=seed, device=a.device) for seed in range(a.seeds)]
    for g in names:
        gt = parse_genotype(g)
        for scorer in scorers:
            for group in cost_groups(zc):
                t0 = time.perf_counter()
                for k, v in scorer.score(gt, group).items():
                    scores[g][k].append(v)
                seconds["+".join(group)] = seconds.get("+".join(group), 0.0) + time.perf_counter() - t0
            scores[g]["swish"].append(float(gt.activation == "swish"))
        print(f"{g[:60]}...: " + ", ".join(f"{k} {np.mean(v):.4g}" for k, v in scores[g].items()), flush=True)

    acc = [long[g] for g in names]
    table: dict[str, Any] = {}
    def finite(v: list[float]) -> list[float]:  # NaN (jacov of a network that ignores its input) ranks lowest
        return [x if math.isfinite(x) else -math.inf for x in v]

    for k in SCORES:
        per_seed = [float(kendalltau(finite([scores[g][k][s] for g in names]), acc).statistic)
                    for s in range(a.seeds)]
        mean = finite([float(np.mean(scores[g][k])) for g in names])
        table[k] = {"kendall_tau": round(float(kendalltau(mean, acc).statistic), 3),
                    "spearman": round(float(spearmanr(mean, acc).statistic), 3),
                    "kendall_tau_per_seed": [round(t, 3) for t in per_seed]}
    trained = {k: {"kendall_tau": r.get("kendall_tau"), "spearman": r.get("spearman"), "n": r.get("n"),
                   "candidates_per_gpu_hour": r.get("candidates_per_gpu_hour")}
               for k, r in src.get("table", {}).items() if r.get("kendall_tau") is not None}
    res = {**environment(a.device), "benchmark": "zero_cost", "source": str(a.source), "n": len(names),
           "batch_size": a.batch_size, "seeds": a.seeds, "resolution": data.resolution,
           "long_budget": src.get("long_budget"), "table": table, "trained_proxies": trained,
           "seconds_per_candidate": {k: round(v / (len(names) * a.seeds), 4) for k, v in seconds.items()},
           "scores": scores, "long_acc": long}
    out = RESULTS / a.output
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    for k, row in table.items():
        print(f"{k:9s} kendall tau {row['kendall_tau']:+.3f} (per seed {row['kendall_tau_per_seed']}) "
              f"spearman {row['spearman']:+.3f}")
    for k, v in res["seconds_per_candidate"].items():
        print(f"{k}: {v:.3f} s per candidate and seed")
    for k, row in trained.items():
        print(f"trained {k}: kendall tau {row['kendall_tau']} (n={row['n']})")
    print(f"{len(names)} architectures; written to {out}")


def plot(res: dict[str, Any], path: Path) -> None:
    """Kendall tau against long training: zero-cost scores, counts and the trained proxies, one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, r["kendall_tau"], "tab:gray" if k in ("flops", "params", "swish") else "tab:blue")
            for k, r in res["table"].items()]
    rows += [(f"trained {k} (n={r['n']})", r["kendall_tau"], "tab:green") for k, r in res["trained_proxies"].items()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    ax.axvline(0.7, color="k", ls="--", lw=1, label="issue's goal (0.7)")
    ax.axvline(0, color="k", lw=0.5)
    ax.invert_yaxis()
    ax.set_xlabel(f"Kendall tau vs {res['long_budget'].get('epochs', '?'):g}-epoch test accuracy "
                  f"(n={res['n']})" if res.get("long_budget") else "Kendall tau")
    ax.set_title(f"zero-cost scores (blue), counts (grey), trained proxies (green)\n"
                 f"zero-cost scores computed on {res['device_name']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
