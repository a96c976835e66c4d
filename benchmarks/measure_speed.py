"""How fast a latency table is measured, and where the host time goes: times the first ``-n`` layer keys
of the default space (half at 224 px, half at 32 px) with the table command's timer, prints layers/s and
host seconds per phase (build, warm-up, capture, upload, replay), then times the same keys again (cuDNN's
caches warm) to separate the first call of each new shape from the rest, and projects the time of a
whole table.

    python benchmarks/measure_speed.py --device cuda --precision fp16 --batch-size 1 -n 2000

``--workers 1,4,8`` compares measuring processes (``hwnas latency measure --workers``) instead: each
count times its own ``-n`` cold keys (every k-th of the first k*n/2 keys at each resolution, so the
samples are alike and no process finds warm caches), speed-up against the first count; then the first
count's keys again with the last count (fresh processes) to see whether the timings agree, beside the
same keys timed once more in this process (the noise floor); and ``--networks`` random networks end to end,
in this process and by the last count (as calibration and validation time them). ``recommended_workers``
is the fastest count at least 1.5x the first whose timings agree: layers within that noise (median ratio
within 1 % plus the noise's, median absolute difference within 1.5x the noise's plus 0.5 %), networks
within 1 % (median ratio) and 2 % (median absolute difference).

    python benchmarks/measure_speed.py --device cuda --precision fp32 --batch-size 1 -n 2000 --workers 1,4,8
"""

from __future__ import annotations

import argparse
import itertools
import time

from _common import RESULTS, environment, write_json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per layer (default: the timer's)")
    p.add_argument("--workers", type=lambda t: [int(x) for x in t.split(",")], default=None,
                   help="compare measuring processes, e.g. 1,4,8 (the first is the baseline)")
    p.add_argument("--networks", type=int, default=24, help="--workers: random networks timed end to end")
    p.add_argument("-o", "--output")
    a = p.parse_args()
    if a.workers:
        compare_workers(a)
        return

    from hwnas.latency.measure import Setup, default_timer, measure_layers
    from hwnas.latency.table import space_layers
    from hwnas.space import SearchSpace

    space = SearchSpace.default()
    all_layers = {r: list(space_layers(space, r)) for r in (224, 32)}
    total_keys = sum(len(v) for v in all_layers.values())
    layers = list(itertools.chain(all_layers[224][: a.n // 2], all_layers[32][: a.n // 2]))
    setup = Setup(a.device, a.precision, a.batch_size, channels_last=a.device == "cuda")
    out = {**environment(a.device), "benchmark": "measure_speed", "precision": a.precision,
           "batch_size": a.batch_size, "layers": len(layers), "space_keys": total_keys, "passes": []}
    for name in ("first pass (cold caches)", "second pass (same keys)"):
        timer = default_timer(setup)
        if a.warmup is not None:
            timer.warmup = a.warmup  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        measure_layers(layers, setup, timer, lambda layer, t: None)
        dt = time.perf_counter() - t0
        rate = len(layers) / dt
        row = {"pass": name, "seconds": round(dt, 2), "layers_per_s": round(rate, 1),
               "profile_s": timer.profile(), "projected_table_s": round(total_keys / rate, 1)}
        out["passes"].append(row)
        print(f"{name}: {len(layers)} layers in {dt:.1f} s = {rate:.0f} layers/s (whole table of {total_keys}: "
              f"~{total_keys / rate:.0f} s); phases {timer.profile()}", flush=True)
    write_json(RESULTS / (a.output or f"measure_speed-{a.device}-{a.precision}-bs{a.batch_size}.json"), out)


def _ratios(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """How timings ``b`` of the same keys compare with ``a``: median ratio, median and p90 |ratio - 1|."""
    import numpy as np

    r = np.array([b[k] / a[k] for k in a if a[k] > 0])
    dev = np.abs(r - 1)
    return {"n": int(r.size), "median_ratio": round(float(np.median(r)), 4),
            "median_abs_diff": round(float(np.median(dev)), 4), "p90_abs_diff": round(float(np.quantile(dev, 0.9)), 4)}


def compare_workers(a: argparse.Namespace) -> None:
    from hwnas.latency.measure import Setup, default_timer, in_workers, measure_layers, time_network
    from hwnas.latency.table import random_genotypes, space_layers
    from hwnas.space import SearchSpace

    space = SearchSpace.default()
    all_layers = {r: list(space_layers(space, r)) for r in (224, 32)}
    total_keys = sum(len(v) for v in all_layers.values())
    k, half = len(a.workers), a.n // 2
    samples = [[x for r in (224, 32) for x in all_layers[r][: k * half][j::k]] for j in range(k)]
    setup = Setup(a.device, a.precision, a.batch_size, channels_last=a.device == "cuda")
    out = {**environment(a.device), "benchmark": "measure_speed_workers", "precision": a.precision,
           "batch_size": a.batch_size, "layers_per_pass": len(samples[0]), "space_keys": total_keys, "passes": []}

    def timed(layers: list, workers: int, name: str) -> dict[str, float]:
        got: dict[str, float] = {}
        timer = default_timer(setup)
        t0 = time.perf_counter()
        measure_layers(layers, setup, timer, lambda layer, t: got.__setitem__(layer.key(), t.ms), workers=workers)
        dt = time.perf_counter() - t0
        row = {"pass": name, "workers": workers, "layers": len(layers), "seconds": round(dt, 2),
               "layers_per_s": round(len(layers) / dt, 1), "profile_s": timer.profile(),
               "projected_table_s": round(total_keys * dt / len(layers), 1)}
        out["passes"].append(row)
        print(f"{name}: {len(layers)} layers in {dt:.1f} s = {row['layers_per_s']:.0f} layers/s (whole table "
              f"~{row['projected_table_s']:.0f} s); host seconds {timer.profile()}", flush=True)
        return got

    base = timed(samples[0], a.workers[0], f"{a.workers[0]} worker(s), cold keys")
    for j, w in enumerate(a.workers[1:], 1):
        timed(samples[j], w, f"{w} worker(s), cold keys")
    rate0 = out["passes"][0]["layers_per_s"]
    for row in out["passes"]:
        row["speedup"] = round(row["layers_per_s"] / rate0, 2)
    again = timed(samples[0], a.workers[0], f"{a.workers[0]} worker(s), the first keys again")
    other = timed(samples[0], a.workers[-1], f"{a.workers[-1]} worker(s), the first keys again")
    noise, agree = _ratios(base, again), _ratios(base, other)
    out["noise"], out["agreement"] = noise, agree
    # whole networks (as calibration and validate time them): one process, then the most workers
    nets = [(g, 224) for g in random_genotypes(space, a.networks, 1)]
    net_times = []
    for w in (a.workers[0], a.workers[-1]):
        timer = default_timer(setup)
        t0 = time.perf_counter()
        got = dict(in_workers(nets, setup, timer, w)) if w > 1 else \
            {i: time_network(g, r, 1000, setup, timer) for i, (g, r) in enumerate(nets)}
        dt = time.perf_counter() - t0
        net_times.append({str(i): t.ms for i, t in got.items()})
        out["passes"].append({"pass": f"{w} worker(s), {len(nets)} networks at 224", "workers": w,
                              "networks": len(nets), "seconds": round(dt, 2), "profile_s": timer.profile()})
        print(f"{len(nets)} networks, {w} worker(s): {dt:.1f} s", flush=True)
    out["network_agreement"] = net_agree = _ratios(*net_times)
    ok = (abs(agree["median_ratio"] - 1) <= 0.01 + abs(noise["median_ratio"] - 1)
          and agree["median_abs_diff"] <= 1.5 * noise["median_abs_diff"] + 0.005
          and abs(net_agree["median_ratio"] - 1) <= 0.01 and net_agree["median_abs_diff"] <= 0.02)
    fast = [row for row in out["passes"][: k] if row["speedup"] >= 1.5]
    out["agree"] = ok
    out["recommended_workers"] = max(fast, key=lambda row: row["speedup"])["workers"] if ok and fast \
        else a.workers[0]
    print(f"timings of the first keys, {a.workers[-1]} workers vs {a.workers[0]}: {agree}; "
          f"{a.workers[0]} again: {noise}; networks: {net_agree}; recommended workers: {out['recommended_workers']}")
    write_json(RESULTS / (a.output or f"measure_workers-{a.device}-{a.precision}-bs{a.batch_size}.json"), out)


if __name__ == "__main__":
    main()
