"""Where training throughput comes from: one B0-class network at 32 px, batch 512, the data already on
the GPU, timed under each combination of the levers the evaluator can pull (memory format, cuDNN
autotuning, CUDA graph, autocast dtype, candidates in lock-step on separate streams), against hwnas's
model and torchvision's EfficientNet-B0 (stride-1 stem). Prints a table of img/s and the ratio to the
naive loop measured in the same run; writes benchmarks/results/train_variants-DEVICE.json.

    python benchmarks/train_variants.py --device cuda [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

from _common import RESULTS, environment, write_json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--profile", action="store_true", help="print the top kernels of two variants")
    p.add_argument("-o", "--output")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    import torchvision

    from hwnas.model import build_model
    from hwnas.references import reference

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    xs = torch.randn(4, a.batch_size, 3, a.resolution, a.resolution, device=dev, generator=g)
    ys = torch.randint(0, 10, (4, a.batch_size), device=dev, generator=g)

    def make(kind: str) -> torch.nn.Module:
        torch.manual_seed(0)
        if kind == "hwnas":
            return build_model(reference("efficientnet-b0"), 10, input_size=a.resolution)
        m = torchvision.models.efficientnet_b0(num_classes=10)
        m.features[0][0].stride = (1, 1)  # the same small-input stem as hwnas
        return m

    def run(kind: str = "hwnas", cl: bool = False, bench: bool = False, graph: bool = False,
            amp: str | None = None, k: int = 1, profile: bool = False) -> float:
        torch.backends.cudnn.benchmark = bench
        fmt = torch.channels_last if cl else torch.contiguous_format
        models = [make(kind).to(dev, memory_format=fmt) for _ in range(k)]
        opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                foreach=True) for m in models]
        sx = xs[0].clone().contiguous(memory_format=fmt)
        sy = ys[0].clone()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")

        def step(m: torch.nn.Module, o: torch.optim.Optimizer) -> None:
            ctx = torch.autocast("cuda", dtype, cache_enabled=False) if dtype else contextlib.nullcontext()
            with ctx:
                loss = F.cross_entropy(m(sx), sy, label_smoothing=0.1)
            o.zero_grad(set_to_none=False)
            loss.backward()
            o.step()

        streams = [torch.cuda.Stream(dev) for _ in models] if cuda else [None] * k
        graphs: list[Any] = []
        for m, o, s in zip(models, opts, streams, strict=True):
            if cuda:
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        step(m, o)
                torch.cuda.current_stream().wait_stream(s)
            else:
                step(m, o)
            if graph:
                gr = torch.cuda.CUDAGraph()
                with torch.cuda.graph(gr, stream=s):
                    step(m, o)
                graphs.append(gr)

        def one(i: int) -> None:
            sx.copy_(xs[i % 4])
            sy.copy_(ys[i % 4])
            for j, (m, o, s) in enumerate(zip(models, opts, streams, strict=True)):
                if graph:
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        graphs[j].replay()
                else:
                    step(m, o)
            if graph:
                for s in streams:
                    torch.cuda.current_stream().wait_stream(s)

        for i in range(3):
            one(i)
        if cuda:
            torch.cuda.synchronize()
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as prof

            with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as pr:
                for i in range(5):
                    one(i)
                torch.cuda.synchronize()
            print(pr.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
        t0 = time.perf_counter()
        for i in range(a.steps):
            one(i)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        models.clear()
        opts.clear()
        graphs.clear()
        if cuda:
            torch.cuda.empty_cache()
        return k * a.steps * a.batch_size / dt

    variants: list[tuple[str, dict[str, Any]]] = [
        ("naive: hwnas NCHW eager", {}),
        ("naive again (noise)", {}),
        ("NCHW eager cudnn.benchmark", {"bench": True}),
        ("CL eager", {"cl": True}),
        ("CL eager cudnn.benchmark", {"cl": True, "bench": True}),
        ("CL graph", {"cl": True, "graph": True}),
        ("CL graph cudnn.benchmark", {"cl": True, "graph": True, "bench": True}),
        ("NCHW graph cudnn.benchmark", {"graph": True, "bench": True}),
        ("CL graph bench bf16", {"cl": True, "graph": True, "bench": True, "amp": "bf16"}),
        ("CL graph bench fp16", {"cl": True, "graph": True, "bench": True, "amp": "fp16"}),
        ("CL graph bench x2 streams", {"cl": True, "graph": True, "bench": True, "k": 2}),
        ("CL graph bench x4 streams", {"cl": True, "graph": True, "bench": True, "k": 4}),
        ("CL graph bench fp16 x4", {"cl": True, "graph": True, "bench": True, "amp": "fp16", "k": 4}),
        ("torchvision NCHW eager", {"kind": "torchvision"}),
        ("torchvision CL graph bench", {"kind": "torchvision", "cl": True, "graph": True, "bench": True}),
    ]
    if not cuda:
        variants = [(n, v) for n, v in variants if not v.get("graph") and not v.get("amp")][:4]
    rows = []
    base = None
    for name, kw in variants:
        try:
            v = run(**kw)
        except RuntimeError as e:
            print(f"{name}: failed ({str(e).splitlines()[0][:100]})")
            continue
        base = base or v
        rows.append({"variant": name, **kw, "img_per_s": round(v, 1), "ratio": round(v / base, 3)})
        print(f"{name:34s} {v:9.0f} img/s  {v / base:5.2f}x", flush=True)
    if a.profile and cuda:
        run(cl=False, profile=True)
        run(cl=True, bench=True, profile=True)
    write_json(RESULTS / (a.output or f"train_variants-{a.device}.json"),
               {**environment(a.device), "benchmark": "train_variants", "batch_size": a.batch_size,
                "resolution": a.resolution, "steps": a.steps, "rows": rows})


if __name__ == "__main__":
    main()
