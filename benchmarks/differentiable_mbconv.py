"""Differentiable search on the MBConv space (GDAS over the elastic supernet) with the latency table in the loss:
a coefficient sweep, the derived networks' table latency and their latency measured on this CPU.

    python benchmarks/differentiable_mbconv.py                    # about 20 minutes on 2 shared cores, 1 thread
    python benchmarks/differentiable_mbconv.py --epochs 1 --coefs 0 1 --train-images 256 --val-images 256  # smoke

For each of ``--coefs``, one GDAS run (seed 0, the same images) over the default MBConv space (EfficientNet-B0's
stages, 52 dimensions): the elastic supernet at ``--width`` trains on ``--train-images`` CIFAR-10 images at
32 px, alpha on ``--val-images`` others (NB201's 50/50 split of the training set), and the loss is
``CE + coef * E[latency] / ref``: ``E[latency]`` the exact expectation, under the per-dimension softmax(alpha),
of the latency table's prediction at 224 px (``--table``: measured on this kind of machine, one thread, batch 1;
``ref`` the space's largest network). Each derived network (argmax of every dimension) is then priced by the
table and timed here (torch eager, one thread, batch 1, 224 px, median of at least 5 runs), with EfficientNet-B0
and MnasNet-A1 timed alongside as references. No accuracy ground truth exists for this space on CIFAR-10: the
run's own validation accuracy of the sampled networks is recorded, not claimed as the derived network's.
Writes ``benchmarks/results/differentiable_mbconv.{json,png}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, gradient_search_arguments, gradient_search_split, write_json

OUT = RESULTS / "differentiable_mbconv.json"


def one_run(coef: float, args: argparse.Namespace, split: tuple[Any, ...], space: Any, cost: Any) -> dict[str, Any]:
    from hwnas.search.differentiable import DifferentiableSettings, run_differentiable

    s = DifferentiableSettings(method="gdas", epochs=args.epochs, batch_size=args.batch_size, width=args.width,
                               alpha_lr=args.alpha_lr, cost_coef=coef, max_train_images=args.train_images,
                               max_val_images=args.val_images)
    tx, ty, vx, vy = split

    def report(rec: dict[str, Any]) -> None:
        print(f"  coef {coef:g} epoch {rec['epoch']}: train {rec['train_acc']:.3f} val {rec['val_acc']:.3f} "
              f"E[lat] {rec.get('expected_cost', float('nan')):.2f} ms {rec['seconds']:.0f}s {rec['arch']}",
              file=sys.stderr, flush=True)

    r = run_differentiable(space, (tx, ty), (vx, vy), s, cost, seed=0, progress=report)
    g = r.arch
    out = {"coef": coef, "arch": g.to_string(), "table_ms": r.derived_cost, "expected_ms": r.expected_cost,
           "mflops": space.flops(g, 224, 1000) / 1e6, "mparams": space.params(g, 1000) / 1e6,
           "seconds": round(r.seconds, 1), "steps": r.steps, "final_val_acc": r.history[-1]["val_acc"],
           "history": r.history, "probabilities": r.probabilities}
    print(f"coef {coef:g}: table {out['table_ms']:.2f} ms, E {out['expected_ms']:.2f} ms, {out['mflops']:.0f} MFLOPs "
          f"({r.seconds:.0f} s) {out['arch']}", flush=True)
    return out


def measure(genotype: Any) -> dict[str, Any]:
    from hwnas.latency.measure import CpuTimer, Setup, time_network

    t = time_network(genotype, 224, 1000, Setup(threads=1), CpuTimer(min_repeats=9, target_s=1.0))
    return t.to_dict()


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.atomic import save_figure

    sweep = sorted(res["sweep"], key=lambda r: r["coef"])
    xs = [r["coef"] for r in sweep]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    ax = axes[0]
    ax.plot(xs, [r["table_ms"] for r in sweep], "o-", label="derived network: table prediction")
    ax.plot(xs, [r["measured"]["ms"] for r in sweep], "D-", label="derived network: measured here")
    ax.plot(xs, [r["expected_ms"] for r in sweep], "s--", label="E[latency] under softmax(alpha)")
    for name, ref in res["references"].items():
        ax.axhline(ref["measured"]["ms"], color="grey", lw=0.8, ls=":")
        ax.annotate(f"{name} (measured)", (xs[0], ref["measured"]["ms"]), fontsize=6, xytext=(2, 2),
                    textcoords="offset points", color="grey")
    ax.set_xscale("symlog", linthresh=0.03)
    ax.set_xlim(0, max(xs) * 1.5 if max(xs) > 0 else 1)
    ax.set(xlabel="latency coefficient (linear form)", ylabel="latency at 224 px, batch 1, 1 thread (ms)")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot([r["table_ms"] for r in sweep], [r["measured"]["ms"] for r in sweep], "o", label="derived networks")
    for r in sweep:
        ax.annotate(f"{r['coef']:g}", (r["table_ms"], r["measured"]["ms"]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")
    for name, ref in res["references"].items():
        ax.plot(ref["table_ms"], ref["measured"]["ms"], "x", color="grey")
        ax.annotate(name, (ref["table_ms"], ref["measured"]["ms"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points", color="grey")
    top = max([r["table_ms"] for r in sweep] + [r["measured"]["ms"] for r in sweep]
              + [v for ref in res["references"].values() for v in (ref["table_ms"], ref["measured"]["ms"])])
    ax.plot([0, top * 1.05], [0, top * 1.05], "k:", lw=0.8, label="y = x")
    ax.set(xlabel="table prediction (ms)", ylabel="measured here (ms)")
    ax.legend(fontsize=7)
    c = res["config"]
    fig.suptitle(f"GDAS on the MBConv space with {c['table']} in the loss (supernet width {c['width']}, "
                 f"{c['train_images']}+{c['val_images']} CIFAR-10 images, {c['epochs']} epochs)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gradient_search_arguments(ap, OUT)  # --threads: the search's; the timings always use one thread, as the table
    ap.add_argument("--table", default="cpu-epyc-2core-t1-fp32-bs1-r224")
    ap.add_argument("--width", type=float, default=0.25, help="the supernet's width multiplier (proxy_width)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--coefs", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0, 3.0])
    args = ap.parse_args()
    out = Path(args.out)

    import torch

    from hwnas.cli.latency import load_table
    from hwnas.references import reference
    from hwnas.search.differentiable import MBConvCostModel
    from hwnas.space import SearchSpace

    t0 = time.perf_counter()
    split = gradient_search_split(args)
    space = SearchSpace()
    table = load_table(args.table)
    cost = MBConvCostModel(space, 224, 1000, table)
    res: dict[str, Any] = {
        "environment": environment("cpu") | {"torch_threads": torch.get_num_threads()},
        "config": {k: v for k, v in vars(args).items() if k not in ("data", "cache", "out")},
        "cost_model": cost.to_dict(), "sweep": [], "references": {}}
    for coef in args.coefs:
        res["sweep"].append(one_run(coef, args, split, space, cost))
        write_json(out, res)
    torch.set_num_threads(1)  # timed as the table was measured
    for r in res["sweep"]:
        r["measured"] = measure(space.parse(r["arch"]))
        print(f"coef {r['coef']:g}: measured {r['measured']['ms']:.2f} ms (table {r['table_ms']:.2f})", flush=True)
    for name in ("efficientnet-b0", "mnasnet-a1"):
        g = reference(name)
        res["references"][name] = {"arch": g.to_string(), "table_ms": table.predict(g, 224),
                                   "mflops": space.flops(g, 224, 1000) / 1e6, "measured": measure(g)}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
