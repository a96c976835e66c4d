"""Training throughput: hwnas's evaluator vs the naive loop, in the same run, on the same candidates.

Naive baseline: one process, fp32, eager, contiguous memory, torch.optim.SGD, the data already on the
device, no augmentation (the issue's "plain fp32 eager loop"), each candidate trained in turn; its
aggregate is all images over all time. hwnas: channels_last, bf16 autocast, the whole step (augmentation
outside) in a CUDA graph, several candidates in lock-step on separate streams (``--concurrency``); also
the same with one candidate at a time, and in fp32 (graphs and channels_last alone). Candidates:
EfficientNet-B0 and random genotypes within +-20 % of its FLOPs, at 32 px.

    python benchmarks/train_throughput.py --device cuda --data-dir data/cifar10-jpg.tar.xz
"""

from __future__ import annotations

import argparse
import time

from _common import RESULTS, environment, load_data, write_json


def naive_img_per_s(genotype, data, device: str, batch: int, steps: int) -> float:  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    from hwnas.model import build_model
    from hwnas.train import DeviceData

    torch.manual_seed(0)
    model = build_model(genotype, 10, input_size=32).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    d = DeviceData(data.train_x, data.train_y, torch.device(device))
    n = len(d)

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch, device=device) % n
        loss = F.cross_entropy(model(d.normalize(d.x[idx])), d.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir")
    p.add_argument("--cache")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=60, help="timed steps of the naive loop")
    p.add_argument("--epochs", type=float, default=1.0, help="hwnas budget per candidate")
    p.add_argument("--candidates", type=int, default=4, help="B0-class candidates trained by hwnas")
    p.add_argument("--concurrency", default="auto")
    p.add_argument("-o", "--output")
    a = p.parse_args()

    import numpy as np

    from hwnas.references import reference
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, Recipe
    from hwnas.walker import flops

    data = load_data(a.data_dir, a.cache)
    b0 = reference("efficientnet-b0")
    space, rng = SearchSpace.default(), np.random.default_rng(0)
    target = flops(b0, 224)
    cands = [b0] + [space.decode(space.sample_where(rng, lambda g: 0.8 * target <= flops(g, 224) <= 1.2 * target))
                    for _ in range(a.candidates - 1)]
    naive_each = [naive_img_per_s(g, data, a.device, a.batch_size, a.steps) for g in cands]
    naive = len(cands) / sum(1 / v for v in naive_each)  # equal images per candidate, one after another
    conc = a.concurrency if a.concurrency == "auto" else int(a.concurrency)

    def hwnas_run(concurrency: int | str, precision: str = "auto") -> tuple[float, float, list]:  # type: ignore[type-arg]
        ev = Evaluator((data.train_x, data.train_y), (data.test_x[:1000], data.test_y[:1000]), 10,
                       Budget(epochs=a.epochs), Recipe(batch_size=a.batch_size, precision=precision), a.device,
                       concurrency=concurrency)
        t0 = time.perf_counter()
        ms = ev.evaluate_many(cands, 0)
        wall = time.perf_counter() - t0
        images = sum(m.steps for m in ms) * a.batch_size
        train_s = sum(m.train_seconds / m.extra.get("group_size", 1) for m in ms)
        return images / train_s, images / wall, ms

    fp32_single, _, ms32 = hwnas_run(1, "fp32")
    single, _, ms1 = hwnas_run(1)
    agg, agg_incl_setup, ms = hwnas_run(conc)
    result = {
        **environment(a.device), "benchmark": "train_throughput", "batch_size": a.batch_size,
        "naive_img_per_s": round(naive, 1), "hwnas_img_per_s": round(agg, 1), "speedup": round(agg / naive, 3),
        "naive_img_per_s_each": [round(v, 1) for v in naive_each],
        "hwnas_single_img_per_s": round(single, 1), "single_speedup": round(single / naive, 3),
        "hwnas_single_img_per_s_each": [round(m.images_per_s, 1) for m in ms1],
        "hwnas_fp32_single_img_per_s": round(fp32_single, 1),
        "hwnas_fp32_single_img_per_s_each": [round(m.images_per_s, 1) for m in ms32],
        "precision": ms[0].extra.get("precision"), "epochs_per_candidate": a.epochs,
        "hwnas_img_per_s_incl_setup": round(agg_incl_setup, 1),
        "group_sizes": [m.extra.get("group_size") for m in ms], "candidates": [m.genotype for m in ms],
        "failures": [m.failure for m in ms if m.failure],
    }
    write_json(RESULTS / (a.output or f"train_throughput-{a.device}.json"), result)
    print(f"naive {naive:.0f} img/s, hwnas fp32 {fp32_single:.0f} img/s one at a time ({fp32_single / naive:.2f}x), "
          f"hwnas {single:.0f} img/s one at a time ({single / naive:.2f}x), "
          f"{agg:.0f} img/s aggregate ({agg / naive:.2f}x) ({result['device_name']})")


if __name__ == "__main__":
    main()
