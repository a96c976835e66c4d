"""What a fresh candidate costs the default proxy, and whether worker processes hide its set-up.

On an H100 a candidate the process has not seen before spends ~7.5 s in set-up (the first call of each
new convolution shape: cuDNN heuristics, host work) against ~2 s of training
(proxy_fidelity-cuda-torchvision-init.json).
Threads do not run that host work in parallel (measure_speed); separate processes might, while another
process trains. This runs P processes at once (P = 1 is the baseline, measured in the same run), each
proxy-training its own fresh random candidates in lock-step groups, and reports candidates per GPU-hour
(all candidates over the wall time from the moment every worker had its data on the GPU).

    python benchmarks/proxy_cost.py --device cuda --data-dir data/cifar10-jpg.tar.xz --processes 1,3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

from _common import RESULTS, environment, load_data, write_json


def worker(rank: int, a: dict[str, Any], barrier: Any, out: Any) -> None:
    try:
        out.put(_work(rank, a, barrier))
    except BaseException as e:  # reported to the parent, which must not wait forever
        barrier.abort()
        out.put({"rank": rank, "error": f"{type(e).__name__}: {e}"})


def _work(rank: int, a: dict[str, Any], barrier: Any) -> dict[str, Any]:
    import numpy as np

    from hwnas.scaling import scale
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, Recipe

    data = load_data(a["data_dir"], a["cache"])
    tx, ty, vx, vy = data.split_validation(a["val_size"])
    ev = Evaluator((tx, ty), (vx, vy), 10, Budget(epochs=a["epochs"]), Recipe(batch_size=512, lr=0.4), a["device"])
    rng = np.random.default_rng(1000 * a["seed"] + rank)  # candidates no other worker trains
    space = SearchSpace.default()
    cands = [scale(space.decode(space.sample(rng)), width=a["width"]) for _ in range(4 * a["groups"])]
    barrier.wait()
    t0 = time.time()
    ms = ev.evaluate_many(cands, 0)
    return {"rank": rank, "start": t0, "end": time.time(), "candidates": len(ms),
            "train_seconds": sum(m.train_seconds / m.extra["group_size"] for m in ms),
            "failures": [m.failure for m in ms if m.failure]}


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
    load_data(a.data_dir, a.cache)  # decode once into the cache before the workers start
    ctx = mp.get_context("spawn")
    rows = []
    for i, n in enumerate(int(x) for x in a.processes.split(",")):
        barrier, out = ctx.Barrier(n), ctx.Queue()
        args = {**vars(a), "seed": a.seed + i}
        procs = [ctx.Process(target=worker, args=(r, args, barrier, out)) for r in range(n)]
        for pr in procs:
            pr.start()
        got = [out.get() for _ in procs]
        for pr in procs:
            pr.join()
        if errors := [g["error"] for g in got if "error" in g]:
            raise SystemExit(f"proxy_cost: a worker failed: {errors[0]}")
        wall = max(g["end"] for g in got) - min(g["start"] for g in got)
        cands = sum(g["candidates"] for g in got)
        row = {"processes": n, "candidates": cands, "wall_s": round(wall, 2),
               "candidates_per_gpu_hour": round(3600 * cands / wall, 1),
               "training_share": round(sum(g["train_seconds"] for g in got) / wall, 3),
               "failures": [f for g in got for f in g["failures"]]}
        rows.append(row)
        base = rows[0]["candidates_per_gpu_hour"]
        print(f"{n} process(es): {cands} fresh candidates in {wall:.1f} s = {row['candidates_per_gpu_hour']:.0f} "
              f"per GPU-hour ({row['candidates_per_gpu_hour'] / base:.2f}x one process)", flush=True)
    write_json(RESULTS / (a.output or f"proxy_cost-{a.device}.json"),
               {**environment(a.device), "benchmark": "proxy_cost", "proxy": {"epochs": a.epochs, "width": a.width,
                "batch_size": 512, "lr": 0.4, "val_images": a.val_size}, "groups_per_process": a.groups, "rows": rows})


if __name__ == "__main__":
    main()
