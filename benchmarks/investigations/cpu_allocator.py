"""How repeatable is a CPU latency measurement under each host-allocator policy?

``hwnas latency`` times a CPU network by building it and running it under ``torch.inference_mode``
(``time_network``). With glibc's default malloc, large activations are sometimes mapped afresh (page faults
on every call) and sometimes reused, depending on the history of the process, so one network's median can
change by tens of per cent from one build to the next while each measurement looks tight (p10-p90 +-2 %).
This benchmark measures it: the same random networks, each built ``--builds`` times (fresh weights, as
``hwnas latency`` does) in each of ``--rounds`` fresh processes per policy (policies interleaved), and
reports per network the spread of its medians (max/min - 1) and their coefficient of variation.

Policies (``hwnas.latency.measure.steady_host_allocator``): ``default`` (glibc as it comes; the baseline),
``threshold`` (mmap threshold fixed at 32 MiB, no trim), ``reuse`` (no mmap, no trim: what hwnas uses).

    python benchmarks/investigations/cpu_allocator.py --networks 12 --builds 3 --rounds 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py, one folder up
from _common import RESULTS, environment, load_data, write_json

POLICIES = ("default", "threshold", "reuse")


def worker(args: argparse.Namespace) -> None:
    import torch

    from hwnas.latency.measure import CpuTimer, Setup, steady_host_allocator, time_network
    from hwnas.latency.table import random_genotypes
    from hwnas.space import SearchSpace

    setting = "default" if args.worker == "default" else steady_host_allocator(args.worker)
    torch.set_num_threads(args.threads)
    nets = random_genotypes(SearchSpace.default(), args.networks, args.seed)
    setup, timer = Setup("cpu", "fp32", 1, threads=args.threads), CpuTimer()
    out: list[list[float]] = []
    for g in nets:
        out.append([time_network(g, args.resolution, 1000, setup, timer).ms for _ in range(args.builds)])
    print(json.dumps({"setting": setting, "genotypes": [g.to_string() for g in nets], "ms": out}))


def train_worker(args: argparse.Namespace) -> None:
    """Images/s of the proxy trainer on CPU (embedded real CIFAR-10 subset, 1 epoch per network)."""
    import torch

    from hwnas.latency.measure import steady_host_allocator
    from hwnas.references import reference
    from hwnas.scaling import scale
    from hwnas.train import Budget, Evaluator, Recipe

    setting = "default" if args.train_worker == "default" else steady_host_allocator(args.train_worker)
    torch.set_num_threads(args.train_threads)
    tx, ty, vx, vy = load_data(None, None).split_validation(500)
    ev = Evaluator((tx, ty), (vx, vy), 10, Budget(epochs=1), Recipe(batch_size=128, lr=0.4), "cpu")
    m = [ev.evaluate(scale(reference(name), width=0.5)) for name in TRAIN_NETS]
    print(json.dumps({"setting": setting, "img_per_s": [x.images_per_s for x in m]}))


TRAIN_NETS = ("efficientnet-b0", "mobilenetv2", "mnasnet-a1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=12)
    ap.add_argument("--builds", type=int, default=3, help="builds of each network per process")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per policy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--train", action="store_true", help="also time proxy training (1 epoch of the embedded "
                    "CIFAR-10 subset per network, width x0.5) under each policy")
    ap.add_argument("--train-threads", type=int, default=2)
    ap.add_argument("--worker", choices=POLICIES, help=argparse.SUPPRESS)
    ap.add_argument("--train-worker", choices=POLICIES, help=argparse.SUPPRESS)
    ap.add_argument("-o", "--output", default=str(RESULTS / "cpu_allocator.json"))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.train_worker:
        train_worker(args)
        return
    policies = args.policies.split(",")
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    t0 = time.monotonic()
    for r in range(args.rounds):
        for p in policies:
            cmd = [sys.executable, __file__, "--worker", p, *(f"--{k}={getattr(args, k)}" for k in
                   ("networks", "builds", "threads", "resolution", "seed"))]
            runs[p].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
            print(f"round {r + 1}/{args.rounds} {p}: done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    summary: dict[str, Any] = {}
    for p in policies:
        per_net = [[ms for run in runs[p] for ms in run["ms"][i]] for i in range(args.networks)]
        spread = [max(v) / min(v) - 1 for v in per_net]
        cv = [statistics.pstdev(v) / statistics.mean(v) for v in per_net]
        summary[p] = {"setting": runs[p][0]["setting"],
                      "median_spread_pct": round(100 * statistics.median(spread), 2),
                      "max_spread_pct": round(100 * max(spread), 2),
                      "median_cv_pct": round(100 * statistics.median(cv), 2),
                      "mean_ms": round(statistics.mean(statistics.median(v) for v in per_net), 3),
                      "per_network_ms": [[round(x, 3) for x in v] for v in per_net]}
    base = summary.get("default")
    for p in policies:
        s = summary[p]
        if base and p != "default":
            s["spread_ratio_vs_default"] = round(s["median_spread_pct"] / max(base["median_spread_pct"], 1e-9), 3)
            s["mean_ms_ratio_vs_default"] = round(s["mean_ms"] / base["mean_ms"], 3)
        print(f"{p:10s} median spread {s['median_spread_pct']:6.2f}%  max {s['max_spread_pct']:6.2f}%  "
              f"median CV {s['median_cv_pct']:5.2f}%  mean {s['mean_ms']:7.2f} ms"
              + (f"  spread x{s['spread_ratio_vs_default']:.2f}, latency x{s['mean_ms_ratio_vs_default']:.2f} "
                 "vs default" if "spread_ratio_vs_default" in s else ""))
    training: dict[str, Any] = {}
    if args.train:
        train_runs: dict[str, list[list[float]]] = {p: [] for p in policies}
        for r in range(args.rounds):
            for p in policies:
                cmd = [sys.executable, __file__, "--train-worker", p, f"--train-threads={args.train_threads}"]
                out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                train_runs[p].append(out["img_per_s"])
                print(f"training round {r + 1}/{args.rounds} {p}: {out['img_per_s']}", file=sys.stderr)
        for p in policies:
            per_net = [statistics.median(run[i] for run in train_runs[p]) for i in range(len(TRAIN_NETS))]
            training[p] = {"img_per_s": dict(zip(TRAIN_NETS, [round(x, 1) for x in per_net], strict=True)),
                           "runs": train_runs[p]}
            if "default" in train_runs and p != "default":
                base_net = training["default"]["img_per_s"]
                training[p]["speedup_vs_default"] = round(statistics.geometric_mean(
                    per_net[i] / base_net[n] for i, n in enumerate(TRAIN_NETS)), 3)
            print(f"training {p:10s} img/s " + ", ".join(f"{n} {v:.0f}" for n, v in training[p]["img_per_s"].items())
                  + (f"  x{training[p]['speedup_vs_default']:.2f} vs default"
                     if "speedup_vs_default" in training[p] else ""))
    write_json(Path(args.output), {
        **environment("cpu"), "networks": args.networks, "builds": args.builds, "rounds": args.rounds,
        "threads": args.threads, "resolution": args.resolution, "seed": args.seed,
        "genotypes": runs[policies[0]][0]["genotypes"], "policies": summary,
        **({"training": {"networks": [f"{n} width x0.5" for n in TRAIN_NETS], "threads": args.train_threads,
                         "recipe": "1 epoch, batch 128, embedded CIFAR-10 subset", "policies": training}}
           if training else {}),
        "seconds": round(time.monotonic() - t0, 1)})
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
