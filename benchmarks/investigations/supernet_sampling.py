"""Why the MBConv supernet learns nothing in a short CPU gradient search: which sampled dimensions stall it?

``benchmarks/differentiable_mbconv.py`` trains the elastic MBConv supernet with one sampled network per step
and stays at chance accuracy for hundreds of steps. This trains the same supernet (width 0.25, 32 px CIFAR-10)
for ``--steps`` steps of GDAS's weight settings (SGD lr 0.025, Nesterov momentum 0.9, weight decay 5e-4,
gradient norm clipped at 5, batch 64, no augmentation) under each sampling rule, from the same seed:

* ``b0-standalone``: EfficientNet-B0 (scaled to width 0.25) as a plain network, no supernet: the baseline;
* ``b0-supernet``: the supernet with EfficientNet-B0 always active;
* ``DIM``: EfficientNet-B0 with one kind of dimension (``kernel``: every stage's kernel) drawn at random each step;
  ``expansion>1``: the expansion drawn among those above 1 only (an expansion of 1 is a ``ds`` block);
* ``all``: every dimension drawn at random each step (what a search starts with).

It reports the mean training accuracy over the first and the second half of the steps.

    python benchmarks/investigations/supernet_sampling.py      # about 3 minutes on one CPU thread
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import RESULTS, ROOT, environment, load_data, write_json

DIMS = ("activation", "width_factor", "depth_factor", "op", "kernel", "expansion", "se", "skip", "layers", "width")


def train(rule: str, args: argparse.Namespace, x: Any, y: Any) -> list[float]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from hwnas.model import build_model
    from hwnas.references import reference
    from hwnas.scaling import scale
    from hwnas.space import SearchSpace
    from hwnas.supernet.mbconv import MBConvSupernet

    space = SearchSpace()
    b0 = space.to_choices(space.encode(reference("efficientnet-b0")))
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    net: Any
    if rule == "b0-standalone":
        net = build_model(scale(space.decode(space.from_choices(b0)), width=args.width), 10, input_size=32)
    else:
        net = MBConvSupernet(space, 10, 32, width=args.width)
    opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed)
    net.train()
    accs: list[float] = []
    for _ in range(args.steps):
        if rule != "b0-standalone":
            drawn = space.to_choices(space.sample(rng))
            if rule == "expansion>1":  # ir blocks only: the expansions above 1 (an expansion of 1 is a ds block)
                for i, st in enumerate(space.stages, start=1):
                    drawn[f"s{i}_expansion"] = st.expansions[1:][int(rng.integers(len(st.expansions) - 1))]
            dim = rule.removesuffix(">1")
            c = drawn if rule == "all" else {
                k: drawn[k] if dim in DIMS and (k == dim or k.endswith("_" + dim)) else v for k, v in b0.items()}
            net.activate(space.decode(space.from_choices(c)))
        idx = torch.randint(0, len(y), (64,), generator=gen)
        out = net(x[idx])
        loss = F.cross_entropy(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        accs.append(float((out.argmax(1) == y[idx]).float().mean()))
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.xz"))
    ap.add_argument("--cache", default=None)
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "supernet_sampling.json"))
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    data = load_data(args.data, args.cache)
    keep = np.random.default_rng(args.seed).permutation(len(data.train_y))[:args.images]
    x = torch.from_numpy(data.train_x[keep]).permute(0, 3, 1, 2).float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    y = torch.from_numpy(data.train_y[keep].astype(np.int64))
    res: dict[str, Any] = {"environment": environment("cpu"), "config": {k: v for k, v in vars(args).items()
                                                                        if k not in ("data", "cache", "out")},
                           "rules": {}}
    half = args.steps // 2
    for rule in ("b0-standalone", "b0-supernet", *DIMS, "expansion>1", "all"):
        t0 = time.perf_counter()
        accs = train(rule, args, x, y)
        res["rules"][rule] = {"first_half_acc": float(np.mean(accs[:half])),
                              "second_half_acc": float(np.mean(accs[half:])),
                              "seconds": round(time.perf_counter() - t0, 1)}
        r = res["rules"][rule]
        print(f"{rule:14s} training accuracy {r['first_half_acc']:.3f} -> {r['second_half_acc']:.3f} "
              f"({r['seconds']:.0f} s)", flush=True)
        write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
