"""What a fresh candidate costs the default proxy, and whether evaluator processes hide its set-up.

On an H100 a candidate the process has not seen before spends ~7.5 s in set-up (the first call of each
new convolution shape: cuDNN heuristics, host work; graph capture) against ~2.5 s of training
(proxy_fidelity-cuda.json: groups of 4 at width x0.5, 4 epochs, 42 s of wall time for 10 s of training).
Threads do not run that host work in parallel (measure_speed); separate processes might, while another
process trains. This trains ``4 x --groups x P`` fresh random candidates with P = 1 (the in-process
``Evaluator`` that ``hwnas search`` uses by default: the baseline, measured in the same run) and with
``EvaluatorPool`` of P processes (``hwnas search --eval-processes P``), and reports candidates per
GPU-hour (wall time of ``evaluate_many``, after the processes hold their data) and the share of it the
GPU spent training.

    python benchmarks/proxy_cost.py --device cuda --data-dir data/cifar10-jpg.tar.xz --processes 1,3
"""

from __future__ import annotations

import argparse
import time

from _common import RESULTS, environment, load_data, write_json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir")
    p.add_argument("--cache")
    p.add_argument("--processes", default="1,3")
    p.add_argument("--groups", type=int, default=2, help="groups of 4 candidates per process")
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("-o", "--output")
    a = p.parse_args()

    import numpy as np

    from hwnas.scaling import scale
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, EvaluatorPool, Recipe

    data = load_data(a.data_dir, a.cache)
    tx, ty, vx, vy = data.split_validation(a.val_size)
    budget, recipe = Budget(epochs=a.epochs), Recipe(batch_size=512, lr=0.4)
    space = SearchSpace.default()
    rows = []
    for i, n in enumerate(int(x) for x in a.processes.split(",")):
        rng = np.random.default_rng(1000 * a.seed + i)  # candidates no other row trains
        cands = [scale(space.decode(space.sample(rng)), width=a.width) for _ in range(4 * a.groups * n)]
        ev = Evaluator((tx, ty), (vx, vy), 10, budget, recipe, a.device) if n == 1 else \
            EvaluatorPool((tx, ty), (vx, vy), 10, budget, recipe, a.device, processes=n)
        try:
            t0 = time.perf_counter()
            ms = ev.evaluate_many(cands, 0)
            wall = time.perf_counter() - t0
        finally:
            ev.close()
        row = {"processes": n, "candidates": len(ms), "wall_s": round(wall, 2),
               "candidates_per_gpu_hour": round(3600 * len(ms) / wall, 1),
               "training_share": round(sum(m.train_seconds / m.extra.get("group_size", 1) for m in ms) / wall, 3),
               "failures": [m.failure for m in ms if m.failure]}
        rows.append(row)
        base = rows[0]["candidates_per_gpu_hour"]
        print(f"{n} process(es): {len(ms)} fresh candidates in {wall:.1f} s = {row['candidates_per_gpu_hour']:.0f} "
              f"per GPU-hour ({row['candidates_per_gpu_hour'] / base:.2f}x one process), training "
              f"{row['training_share']:.0%} of the time", flush=True)
    write_json(RESULTS / (a.output or f"proxy_cost-{a.device}.json"),
               {**environment(a.device), "benchmark": "proxy_cost", "proxy": {"epochs": a.epochs, "width": a.width,
                "batch_size": 512, "lr": 0.4, "val_images": a.val_size}, "groups_per_process": a.groups, "rows": rows})


if __name__ == "__main__":
    main()
