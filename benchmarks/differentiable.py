"""Differentiable search on NAS-Bench-201 (DARTS, GDAS) at a CPU scale, with and without a latency cost term:
the derived cells, their NB201 CIFAR-10 table accuracy and their published latency.

    python benchmarks/differentiable.py                      # 423 s on 2 shared cores (AMD EPYC, 1 torch thread)
    python benchmarks/differentiable.py --seeds 1 --epochs-gdas 2 --epochs-darts 1 --coefs 1   # a smoke run

(a) DARTS (first order) and GDAS without a cost term, ``--seeds`` seeds each; (b) GDAS with the ``linear``
latency term (``CE + coef * E[latency] / ref``, the fitted additive model of ``--device``'s published latencies,
``ref`` its estimate of the all-conv3x3 network) for each of ``--coefs`` (seed 0; coef 0 is run (a)'s seed 0).
The search network is small (``--C``, ``--N``) and sees a subset of CIFAR-10's training set (NB201's 50/50
split of the 50,000 training images into search-train and search-val, then ``--train-images`` /
``--val-images`` of each); the derived cells are scored by the published tables (C=16, N=5, 200 epochs).
Writes ``benchmarks/results/differentiable.{json,png}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, gradient_search_arguments, gradient_search_split, write_json

OUT = RESULTS / "differentiable.json"
PUBLISHED = {"darts": "54.30 +- 0.00 (DARTS-V1, collapses to all skip_connect)", "gdas": "93.61 +- 0.09",
             "optimum": "94.37"}


def table_row(arch: Any, device: str) -> dict[str, Any]:
    from hwnas import tabular
    from hwnas.latency.tabular import BenchmarkLatency
    from hwnas.spaces.nb201 import NB201Space

    t = tabular.nb201()
    i = t.index[arch.to_string()]
    return {"arch": arch.to_string(), "acc": float(t.acc["cifar10"][i]),
            "latency_ms": BenchmarkLatency(device).predict(arch), "mflops": NB201Space().flops(arch) / 1e6,
            "connected": arch.is_connected()}


def one_run(method: str, seed: int, coef: float, args: argparse.Namespace, split: tuple[Any, ...],
            cost: Any) -> dict[str, Any]:
    from hwnas.search.differentiable import DifferentiableSettings, run_differentiable
    from hwnas.spaces.nb201 import NB201Space

    s = DifferentiableSettings(method=method, epochs=args.epochs_darts if method == "darts" else args.epochs_gdas,
                               batch_size=args.batch_size, C=args.C, N=args.N, alpha_lr=args.alpha_lr,
                               cost_coef=coef, max_train_images=args.train_images, max_val_images=args.val_images)
    tx, ty, vx, vy = split

    def report(rec: dict[str, Any]) -> None:
        print(f"  {method} seed {seed} coef {coef:g} epoch {rec['epoch']}: train {rec['train_acc']:.3f} val "
              f"{rec['val_acc']:.3f} E[lat] {rec.get('expected_cost', float('nan')):.2f} {rec['seconds']:.0f}s "
              f"{rec['arch']}", file=sys.stderr, flush=True)

    r = run_differentiable(NB201Space(), (tx, ty), (vx, vy), s, cost, seed=seed, progress=report)
    out = {"method": method, "seed": seed, "coef": coef, **table_row(r.arch, args.device),
           "expected_latency_ms": r.expected_cost, "fitted_latency_ms": r.derived_cost,
           "seconds": round(r.seconds, 1), "steps": r.steps, "probabilities": r.probabilities,
           "history": r.history, "alpha_history": r.alpha_history}
    print(f"{method} seed {seed} coef {coef:g}: acc {out['acc']:.2f} latency {out['latency_ms']:.2f} ms "
          f"({r.seconds:.0f} s) {out['arch']}", flush=True)
    return out


def table_summary(device: str) -> dict[str, Any]:
    import numpy as np

    from hwnas import tabular
    from hwnas.latency.tabular import BenchmarkLatency

    t = tabular.nb201()
    acc, lat = np.asarray(t.acc["cifar10"]), np.asarray(BenchmarkLatency(device).values)
    best = int(acc.argmax())
    order = np.lexsort((-acc, lat))
    front, top = [], -1.0
    for i in order:
        if acc[i] > top:
            front.append(int(i))
            top = acc[i]
    return {"best": {"arch": t.archs[best], "acc": float(acc[best]), "latency_ms": float(lat[best])},
            "median_acc": float(np.median(acc)), "median_latency_ms": float(np.median(lat)),
            "pareto": [{"arch": t.archs[i], "acc": float(acc[i]), "latency_ms": float(lat[i])} for i in front]}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hwnas import tabular
    from hwnas.atomic import save_figure
    from hwnas.latency.tabular import BenchmarkLatency

    dev = res["config"]["device"]
    t = tabular.nb201()
    acc, lat = np.asarray(t.acc["cifar10"]), np.asarray(BenchmarkLatency(dev).values)
    sweep = sorted(res["sweep"], key=lambda r: r["coef"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    ax = axes[0]
    xs = [r["coef"] for r in sweep]
    ax.plot(xs, [r["latency_ms"] for r in sweep], "o-", label="derived cell: published latency")
    ax.plot(xs, [r["expected_latency_ms"] for r in sweep], "s--", label="E[latency] under softmax(alpha) (fit)")
    ax.axhline(float(np.median(lat)), color="grey", lw=0.8, ls=":", label="median of the space")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(0, max(xs) * 1.5 if max(xs) > 0 else 1)
    ax.set(xlabel="latency coefficient (linear form)", ylabel=f"{dev} latency (ms)")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.scatter(lat, acc, s=1, c="lightgrey", rasterized=True, label="all 15,625 cells")
    pareto = res["table"]["pareto"]
    ax.plot([p["latency_ms"] for p in pareto], [p["acc"] for p in pareto], "k-", lw=0.8, label="Pareto front")
    for method, marker in (("darts", "v"), ("gdas", "^")):
        pts = [r for r in res["no_cost"] if r["method"] == method]
        ax.scatter([r["latency_ms"] for r in pts], [r["acc"] for r in pts], marker=marker, s=40,
                   label=f"{method}, no cost term")
    sc = ax.scatter([r["latency_ms"] for r in sweep], [r["acc"] for r in sweep], c=np.log10(np.array(xs) + 0.1),
                    cmap="viridis", marker="o", s=40, edgecolors="k", label="gdas + latency term")
    for r in sweep:
        ax.annotate(f"{r['coef']:g}", (r["latency_ms"], r["acc"]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")
    fig.colorbar(sc, ax=ax, label="log10(coef + 0.1)")
    ax.set(xlabel=f"{dev} latency (ms, published)", ylabel="CIFAR-10 test accuracy (%, NB201 table)",
           ylim=(max(10.0, float(min([r["acc"] for r in res["no_cost"] + sweep])) - 5), 95))
    ax.legend(fontsize=6, loc="lower right")
    c = res["config"]
    fig.suptitle(f"DARTS / GDAS on NAS-Bench-201 at CPU scale (C={c['C']}, N={c['N']}, "
                 f"{c['train_images']}+{c['val_images']} images)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gradient_search_arguments(ap, OUT)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--gdas-seeds", type=int, default=2)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--N", type=int, default=1)
    ap.add_argument("--epochs-darts", type=int, default=2)
    ap.add_argument("--epochs-gdas", type=int, default=5)
    ap.add_argument("--device", default="pixel3", help="NB201 latency device setting of the cost term")
    ap.add_argument("--coefs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    args = ap.parse_args()
    out = Path(args.out)

    import torch

    from hwnas.search.differentiable import latency_cost_model

    t0 = time.perf_counter()
    split = gradient_search_split(args)
    cost = latency_cost_model(args.device)
    res: dict[str, Any] = {
        "environment": environment("cpu") | {"torch_threads": torch.get_num_threads()},
        "config": {k: v for k, v in vars(args).items() if k not in ("data", "cache", "out")},
        "cost_model": {k: v for k, v in cost.to_dict().items() if k != "per_op"} | {"per_op": cost.per_op.tolist()},
        "published": PUBLISHED, "table": table_summary(args.device), "no_cost": [], "sweep": []}
    for method, seeds in (("darts", args.seeds), ("gdas", args.gdas_seeds)):
        for seed in range(seeds):
            res["no_cost"].append(one_run(method, seed, 0.0, args, split, cost))
            write_json(out, res)
    gdas0 = next((r for r in res["no_cost"] if r["method"] == "gdas" and r["seed"] == 0), None)
    if gdas0 is not None:
        res["sweep"].append(gdas0)
    for coef in args.coefs:
        res["sweep"].append(one_run("gdas", 0, coef, args, split, cost))
        write_json(out, res)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
