"""CPU proxy training step: NCHW (contiguous) vs channels_last, on the default recipe's CPU proxies.

The candidates are those `hwnas search --budget-flops 400M` trains on a CPU: feasible random genotypes of the
default space, scaled to the CPU profile's proxy width (x0.25), at 32 px, batch 32. Each is timed in both memory
formats in the same process (fp32, SGD, forward + backward + step), alternating, after warm-up steps; the result
is the median time per step and the ratio NCHW / channels_last.

    python benchmarks/cpu_proxy_step.py --candidates 8
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import RESULTS, environment, write_json


def step_ms(genotype, channels_last: bool, batch: int, steps: int) -> float:  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    from hwnas.model import build_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(genotype, 10, input_size=32).to(memory_format=fmt)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(steps + 5):
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 5:  # warm-up: first calls choose kernels
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25, help="proxy width (the CPU profile's)")
    p.add_argument("-o", "--output", default=str(RESULTS / "cpu_proxy_step.json"))
    a = p.parse_args()
    import numpy as np

    from hwnas.scaling import scale
    from hwnas.search.problem import Problem
    from hwnas.space import SearchSpace

    problem = Problem(SearchSpace.default(), budgets={"flops": 400e6}, resolution=224, num_classes=10)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(a.candidates):
        g = problem.space.decode(problem.space.sample_where(rng, lambda g: problem.feasible(problem.costs(g))))
        proxy = scale(g, width=a.width)
        nchw = step_ms(proxy, False, a.batch_size, a.steps)
        cl = step_ms(proxy, True, a.batch_size, a.steps)
        rows.append({"genotype": g.to_string(), "nchw_ms": round(nchw, 2), "channels_last_ms": round(cl, 2),
                     "ratio": round(nchw / cl, 3)})
        print(f"candidate {i}: NCHW {nchw:.1f} ms/step, channels_last {cl:.1f} ms/step, x{nchw / cl:.2f}")
    ratios = [r["ratio"] for r in rows]
    summary = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios)}
    print(f"NCHW / channels_last: median x{summary['median_ratio']:.2f} (min {summary['min_ratio']:.2f}, "
          f"max {summary['max_ratio']:.2f})")
    write_json(__import__("pathlib").Path(a.output), {"environment": environment("cpu"), "settings": vars(a),
                                                       "summary": summary, "candidates": rows})


if __name__ == "__main__":
    main()
