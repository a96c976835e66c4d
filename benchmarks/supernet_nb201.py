"""How well a CPU-trained NAS-Bench-201 supernet ranks networks, and what an evolution over it finds.

Trains the NB201 supernet (uniform single-path sampling, ``hwnas.supernet``) on CIFAR-10, then:

* scores ``--archs`` uniformly drawn architectures with inherited weights (BatchNorm recalibrated per subnet)
  and reports Kendall's tau and Spearman's rho against the benchmark's CIFAR-10 test accuracy (200 epochs);
* runs regularized evolution over the supernet (``--trials`` candidates, the normal search loop with the
  supernet evaluator) and looks up the table accuracy of the architecture it picks;
* times candidates per CPU-hour: the supernet's per-candidate cost (and its training, amortised) against the
  proxy trainer's (the search's default CPU profile, 2 epochs of the training split, on the NB201 network).

    python benchmarks/supernet_nb201.py                     # C=8, N=1, 10 epochs of 20,000 images: ~15 min
    python benchmarks/supernet_nb201.py --epochs 30 --out benchmarks/results/supernet_nb201-e30.json
    python benchmarks/supernet_nb201.py --C 16 --N 5 --epochs 50 --train-images 45000   # the real thing (GPU)

Writes ``benchmarks/results/supernet_nb201.{json,png}``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, environment, image_subset, load_data, write_json

OUT = RESULTS / "supernet_nb201.json"
PUBLISHED = {"note": "NAS-Bench-201 paper, CIFAR-10 test accuracy, 3-seed means", "RSWS": "87.66 +- 1.69",
             "ENAS": "54.30 +- 0.00", "SETN": "87.64 +- 0.00", "optimum": "94.37"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.xz"))
    ap.add_argument("--cache", default=None)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--N", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=20_000)
    ap.add_argument("--val-images", type=int, default=2_000, help="held-out images each subnet is scored on")
    ap.add_argument("--archs", type=int, default=200)
    ap.add_argument("--trials", type=int, default=200, help="evolution candidates scored with the supernet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(OUT), help="results JSON (the plot goes beside it, .png)")
    args = ap.parse_args()
    out = Path(args.out)

    import numpy as np
    import optuna
    import torch
    from scipy.stats import kendalltau, spearmanr

    from hwnas.cli.common import val_size_of
    from hwnas.cli.supernet import VAL_FRACTION
    from hwnas.evaluators.supernet import BN_IMAGES, SupernetEvaluator
    from hwnas.evaluators.tabular import TabularEvaluator
    from hwnas.search.problem import Problem
    from hwnas.search.run import create_search
    from hwnas.spaces import get_space
    from hwnas.supernet import build_supernet
    from hwnas.supernet.train import TrainSettings, train_supernet

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_data(args.data_dir, args.cache)
    val_size = val_size_of(len(data.train_y), VAL_FRACTION)  # hwnas supernet train's split
    tx, ty, vx, vy = data.split_validation(val_size)
    tx, ty = image_subset(data, tx, ty, args.train_images, args.seed)
    vx, vy = image_subset(data, vx, vy, args.val_images, args.seed)
    space, table = get_space("nb201"), TabularEvaluator("nb201:cifar10")
    torch.manual_seed(args.seed)
    net = build_supernet(space, data.num_classes, data.resolution, {"C": args.C, "N": args.N})
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size)
    print(f"training the supernet C={args.C} N={args.N} on {len(ty)} images, {args.epochs} epochs", flush=True)
    t0 = time.perf_counter()

    def progress(step: int, total: int, loss: float) -> None:
        if step % 200 == 0 or step == total:
            print(f"  step {step}/{total} loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    tr = train_supernet(net, (tx, ty), settings, seed=args.seed, device=args.device, progress=progress)
    train_s = time.perf_counter() - t0
    ev = SupernetEvaluator(net, (tx, ty), (vx, vy), device=args.device, seed=args.seed)

    rng = np.random.default_rng(args.seed + 1)
    archs: list[Any] = []
    seen: set[str] = set()
    while len(archs) < args.archs:  # distinct architectures, uniformly drawn
        a = space.decode(space.sample(rng))
        if a.to_string() not in seen:
            seen.add(a.to_string())
            archs.append(a)
    t1 = time.perf_counter()
    inherited = [ev.accuracy(a) for a in archs]
    eval_s = (time.perf_counter() - t1) / len(archs)
    truth = [float(table.evaluate(a).acc) for a in archs]  # type: ignore[arg-type]
    tau, rho = float(kendalltau(inherited, truth)[0]), float(spearmanr(inherited, truth)[0])
    live = [i for i, a in enumerate(archs) if a.is_connected()]  # a cell whose output is 0 is 10 % for both
    tau_live = float(kendalltau([inherited[i] for i in live], [truth[i] for i in live])[0])
    best_by_supernet = int(np.argmax(inherited))
    print(f"Kendall tau {tau:.3f}, Spearman {rho:.3f} over {len(archs)} archs; {eval_s:.2f} s per subnet", flush=True)

    problem = Problem(space, ("acc",), "pareto", {}, 32, data.num_classes)
    search = create_search(problem, None, "evo", "evolution", ev.evaluate, seed=args.seed, population=20)
    t2 = time.perf_counter()
    search.run(args.trials)
    evo_s = time.perf_counter() - t2
    trials = [t for t in search.study.get_trials(deepcopy=False) if t.user_attrs.get("trained")]
    picked = max(trials, key=lambda t: t.user_attrs["acc"])
    picked_arch = space.parse(picked.user_attrs["genotype"])
    evo_curve = []
    best = -1.0
    for t in sorted(trials, key=lambda t: t.number):  # the table accuracy of the supernet's pick so far
        if t.user_attrs["acc"] > best:
            best, pick = t.user_attrs["acc"], float(table.evaluate(space.parse(t.user_attrs["genotype"])).acc)
        evo_curve.append(pick)

    proxy = proxy_seconds(data, tx, ty, vx, vy, args.device)
    cand_per_hour = {"supernet_scoring_only": 3600 / eval_s,
                     "supernet_with_training_amortised_over_1000": 3600 / (eval_s + train_s / 1000),
                     "proxy_trainer_default_cpu_profile": 3600 / proxy["seconds_per_candidate"]}
    res = {
        "env": environment(args.device),
        "scale": {"C": args.C, "N": args.N, "train_images": len(ty), "epochs": args.epochs,
                  "batch_size": args.batch_size, "steps": tr.step, "paths_per_step": settings.paths,
                  "val_images": len(vy), "bn_images": min(BN_IMAGES, len(ty)), "data": str(data.source)},
        "train_seconds": round(train_s, 1), "epoch_losses": [round(v, 4) for v in tr.epoch_losses],
        "eval_seconds_per_subnet": round(eval_s, 3),
        "ranking": {"archs": len(archs), "kendall_tau": round(tau, 4), "spearman": round(rho, 4),
                    "connected_archs": len(live), "kendall_tau_connected": round(tau_live, 4),
                    "supernet_top1_table_acc": truth[best_by_supernet], "best_table_acc_of_sample": max(truth),
                    "mean_table_acc_of_sample": round(float(np.mean(truth)), 3)},
        "evolution": {"trials": len(trials), "seconds": round(evo_s, 1), "picked": picked_arch.to_string(),
                      "picked_supernet_acc": round(picked.user_attrs["acc"], 4),
                      "picked_table_acc": float(table.evaluate(picked_arch).acc)},  # type: ignore[arg-type]
        "candidates_per_cpu_hour": {k: round(v, 1) for k, v in cand_per_hour.items()},
        "proxy_trainer": proxy, "published": PUBLISHED,
        "points": [[round(i, 4), t] for i, t in zip(inherited, truth, strict=True)], "evolution_curve": evo_curve,
    }
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    print({k: res[k] for k in ("ranking", "evolution", "candidates_per_cpu_hour")})


def proxy_seconds(data: Any, tx: Any, ty: Any, vx: Any, vy: Any, device: str) -> dict[str, Any]:
    """Seconds the proxy trainer spends per NB201 candidate with ``hwnas search``'s default CPU profile (2 epochs
    of the full training split, batch 128): timed on 8 steps of the benchmark network, scaled to the steps."""
    import numpy as np

    from hwnas.cli.common import val_size_of
    from hwnas.cli.supernet import VAL_FRACTION
    from hwnas.evaluators.training import Budget, Evaluator, Recipe
    from hwnas.spaces import get_space

    space = get_space("nb201")
    arch = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                       "nor_conv_3x3~2|")
    recipe = Recipe(batch_size=128, lr=0.2)
    sub = slice(0, 128 * 8)
    ev = Evaluator((tx[sub], ty[sub]), (vx[:512], vy[:512]), data.num_classes, Budget(epochs=1.0), recipe, device,
                   space=space)
    m = ev.evaluate(arch)  # 8 steps and a 512-image validation pass
    steps = 2 * (len(data.train_y) - val_size_of(len(data.train_y), VAL_FRACTION)) // 128
    per_step = m.train_seconds / 8
    return {"arch": arch.to_string(), "timed_steps": 8, "seconds_per_step": round(per_step, 3),
            "steps_per_candidate": int(steps), "seconds_per_candidate": round(float(np.float64(per_step * steps)), 1)}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = res["points"]
    a.scatter([p[0] * 100 for p in pts], [p[1] * 100 for p in pts], s=9, alpha=0.6)
    a.set_xlabel("accuracy with inherited weights (%)")
    a.set_ylabel("NAS-Bench-201 CIFAR-10 test accuracy (%)")
    r, sc = res["ranking"], res["scale"]
    a.set_title(f"{r['archs']} archs: Kendall tau {r['kendall_tau']:.2f}  (C={sc['C']}, N={sc['N']}, "
                f"{sc['epochs']} ep x {sc['train_images']} img)", fontsize=9)
    curve = res["evolution_curve"]
    b.plot(range(1, len(curve) + 1), [c * 100 for c in curve])
    b.axhline(94.37, ls="--", c="gray", lw=0.8, label="optimum 94.37")
    b.axhline(87.66, ls=":", c="tab:red", lw=0.8, label="RSWS (published) 87.66")
    b.set_xlabel("candidates scored with the supernet")
    b.set_ylabel("table accuracy of the supernet's best so far (%)")
    b.set_title("regularized evolution over the supernet", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
