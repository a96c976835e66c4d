"""How fast a latency table is measured, and where the host time goes: times the first ``-n`` layer keys
of the default space (half at 224 px, half at 32 px) with the table command's timer, prints layers/s and
host seconds per phase (build, warm-up, capture, upload, replay), then times the same keys again (cuDNN's
caches warm) to separate the first call of each new shape from the rest, and projects the time of a
whole table.

    python benchmarks/measure_speed.py --device cuda --precision fp16 --batch-size 1 -n 2000
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
    p.add_argument("-o", "--output")
    a = p.parse_args()

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


if __name__ == "__main__":
    main()
