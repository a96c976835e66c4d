"""Zero-cost and counting proxies against long training: does anything that needs no training rank the
space's architectures as well as the trained proxies do?

For every architecture with a long (30-epoch) result in a proxy-fidelity result file, at initialisation
and at 32 px (the CIFAR stem adaptation, full width, no training):

* ``naswot``: log-determinant of the kernel of binary activation codes (Mellor et al., "Neural
  Architecture Search without Training", ICML 2021) over one minibatch of real training images; a unit's
  code is the sign of its activation's input (ReLU, ReLU6 and swish alike);
* ``synflow``: log of the summed |theta * dR/dtheta| of all conv and linear weights, with |theta|, batch
  norm removed, float64 and an all-ones input (Tanaka et al., NeurIPS 2020, as the zero-cost proxies of
  Abdelfattah et al., ICLR 2021). Every pre-activation is then positive, where ReLU is the identity, so
  ReLU, ReLU6 and swish are all replaced by the identity (run as they are, ReLU6 clips at 6 and zeroes
  the flow: every ReLU6 network scored ~7 against 33-79 for the others); SE gates stay;
* ``zico``: sum over conv and linear layers of log(sum(mean |g| / std g)) of the weight gradients of
  two minibatches (Li et al., "ZiCo", ICLR 2023; gradients are zeroed between the two);
* ``flops`` and ``params`` of the candidate itself (what a search already knows for free);
* ``swish``: 1 if the candidate's activation is swish, else 0 (a one-bit baseline: how much of the long
  ranking the activation alone explains; Kendall's tau-b counts the ties).

Each score is computed for ``--seeds`` seeds (initialisation and minibatch); Kendall tau and Spearman
against the long test accuracy are reported per seed and for the mean score, beside the trained proxies'
figures from the same file. Scores are taken on the CPU by default (they need one or two forward and
backward passes; the ranking does not depend on the device):

    python benchmarks/zero_cost.py --from benchmarks/results/proxy_fidelity-cuda.json \\
        --data-dir data/cifar10-jpg.tar.xz
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, load_data, write_json

SCORES = ("naswot", "synflow", "zico", "flops", "params", "swish")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", default=str(RESULTS / "proxy_fidelity-cuda.json"),
                   help="proxy-fidelity result file with long results (and trained proxies to compare)")
    p.add_argument("--data-dir", help="CIFAR-10 (folder or archive); default: the embedded subset")
    p.add_argument("--cache")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64, help="images per minibatch (ZiCo uses two)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--output", default="zero_cost.json")
    a = p.parse_args()

    import numpy as np
    import torch
    from scipy.stats import kendalltau, spearmanr

    from hwnas.genotype import parse_genotype

    if a.threads:
        torch.set_num_threads(a.threads)
    src = json.loads(Path(a.source).read_text())
    long = {g: m["val_acc"] for g, m in src.get("long", {}).items() if m.get("val_acc") is not None}
    if len(long) < 3:
        raise SystemExit(f"zero_cost: {a.source} has {len(long)} long results; at least 3 are needed")
    data = load_data(a.data_dir, a.cache)
    names = sorted(long)
    scores: dict[str, dict[str, list[float]]] = {g: {k: [] for k in SCORES} for g in names}
    seconds: dict[str, float] = {k: 0.0 for k in SCORES}
    for g in names:
        gt = parse_genotype(g)
        for seed in range(a.seeds):
            x, y = minibatch(data, 2 * a.batch_size, seed, a.device)
            for k in SCORES:
                t0 = time.perf_counter()
                scores[g][k].append(score(k, gt, x, y, seed, a.batch_size, data.num_classes, a.device))
                seconds[k] += time.perf_counter() - t0
        print(f"{g[:60]}...: " + ", ".join(f"{k} {np.mean(v):.4g}" for k, v in scores[g].items()), flush=True)

    acc = [long[g] for g in names]
    table: dict[str, Any] = {}
    for k in SCORES:
        per_seed = [float(kendalltau([scores[g][k][s] for g in names], acc).statistic) for s in range(a.seeds)]
        mean = [float(np.mean(scores[g][k])) for g in names]
        table[k] = {"kendall_tau": round(float(kendalltau(mean, acc).statistic), 3),
                    "spearman": round(float(spearmanr(mean, acc).statistic), 3),
                    "kendall_tau_per_seed": [round(t, 3) for t in per_seed],
                    "seconds_per_candidate": round(seconds[k] / (len(names) * a.seeds), 4)}
    trained = {k: {"kendall_tau": r.get("kendall_tau"), "spearman": r.get("spearman"), "n": r.get("n"),
                   "candidates_per_gpu_hour": r.get("candidates_per_gpu_hour")}
               for k, r in src.get("table", {}).items() if r.get("kendall_tau") is not None}
    res = {**environment(a.device), "benchmark": "zero_cost", "source": str(a.source), "n": len(names),
           "batch_size": a.batch_size, "seeds": a.seeds, "resolution": data.resolution,
           "long_budget": src.get("long_budget"), "table": table, "trained_proxies": trained,
           "scores": scores, "long_acc": long}
    out = RESULTS / a.output
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    for k, row in table.items():
        print(f"{k:8s} kendall tau {row['kendall_tau']:+.3f} (per seed {row['kendall_tau_per_seed']}) "
              f"spearman {row['spearman']:+.3f}  {row['seconds_per_candidate'] * 1e3:.0f} ms per candidate")
    for k, row in trained.items():
        print(f"trained {k}: kendall tau {row['kendall_tau']} (n={row['n']})")
    print(f"{len(names)} architectures; written to {out}")


def minibatch(data: Any, n: int, seed: int, device: str) -> tuple[Any, Any]:
    """``n`` training images (seeded draw), normalised by the trainer's code, and their labels."""
    import numpy as np
    import torch

    from hwnas.train import DeviceData

    ix = np.random.default_rng(seed).choice(len(data.train_y), size=n, replace=False)
    batch = DeviceData(data.train_x[ix], data.train_y[ix], torch.device(device))
    return batch.plain(0, n), batch.y


def score(kind: str, genotype: Any, x: Any, y: Any, seed: int, batch: int, num_classes: int, device: str) -> float:
    import torch

    from hwnas.model import build_model
    from hwnas.walker import flops, params

    res = int(x.shape[-1])
    if kind == "flops":
        return float(flops(genotype, res, num_classes))
    if kind == "params":
        return float(params(genotype, num_classes))
    if kind == "swish":
        return float(genotype.activation == "swish")
    torch.manual_seed(seed)
    net = build_model(genotype, num_classes, input_size=res, dropout=0.0).to(device).train()
    if kind == "naswot":
        return naswot(net, x[:batch])
    if kind == "synflow":
        return synflow(net, x)
    return zico(net, x, y, batch)


def naswot(net: Any, x: Any) -> float:
    import torch
    from torch import nn

    kernel = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)

    def hook(_m: Any, inp: tuple[Any, ...], _out: Any) -> None:
        c = (inp[0].detach().flatten(1) > 0).double()
        kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU | nn.ReLU6 | nn.SiLU)]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    return float(torch.linalg.slogdet(kernel).logabsdet)


def synflow(net: Any, x: Any) -> float:
    import torch
    from torch import nn

    def strip_bn(m: nn.Module) -> None:  # and the activations: ReLU on an all-positive network is the identity
        for name, child in m.named_children():
            if isinstance(child, nn.BatchNorm2d | nn.ReLU | nn.ReLU6 | nn.SiLU):
                setattr(m, name, nn.Identity())
            else:
                strip_bn(child)

    strip_bn(net)
    net = net.double()
    with torch.no_grad():
        for prm in net.parameters():
            prm.abs_()
    net.zero_grad()
    net(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)).sum().backward()
    total = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in net.modules()
                if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.grad is not None)
    return math.log(total) if total > 0 and math.isfinite(total) else float("nan")


def zico(net: Any, x: Any, y: Any, batch: int) -> float:
    import torch
    from torch import nn

    mods = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    grads: list[list[Any]] = [[] for _ in mods]
    for i in range(2):
        net.zero_grad()
        nn.functional.cross_entropy(net(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch]).backward()
        for j, m in enumerate(mods):
            grads[j].append(m.weight.grad.detach().flatten().double().clone())
    total = 0.0
    for g in grads:
        stack = torch.stack(g)
        std, mean_abs = stack.std(0), stack.abs().mean(0)
        keep = std > 0
        s = float((mean_abs[keep] / std[keep]).sum())
        if s > 0:
            total += math.log(s)
    return total


def plot(res: dict[str, Any], path: Path) -> None:
    """Kendall tau against long training: zero-cost scores, counts and the trained proxies, one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, r["kendall_tau"], "tab:blue" if k in ("naswot", "synflow", "zico") else "tab:gray")
            for k, r in res["table"].items()]
    rows += [(f"trained {k} (n={r['n']})", r["kendall_tau"], "tab:green") for k, r in res["trained_proxies"].items()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    ax.axvline(0.7, color="k", ls="--", lw=1, label="issue's goal (0.7)")
    ax.axvline(0, color="k", lw=0.5)
    ax.invert_yaxis()
    ax.set_xlabel(f"Kendall tau vs {res['long_budget'].get('epochs', '?'):g}-epoch test accuracy "
                  f"(n={res['n']})" if res.get("long_budget") else "Kendall tau")
    ax.set_title(f"zero-cost scores (blue), counts (grey), trained proxies (green)\n"
                 f"zero-cost scores computed on {res['device_name']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
