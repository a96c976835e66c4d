"""Proxy fidelity and cost: Kendall tau between each proxy's validation accuracy and long-training test
accuracy on random architectures of the space, and how many candidates each proxy evaluates per GPU-hour
(wall time of its groups, build + graph capture + training + evaluation, over the candidates they held).
Also the residual noise of the default proxy (the same architectures, three seeds) and the references
(EfficientNet-B0, MnasNet-A1, MobileNetV2) under the long recipe.

Proxies train on 45k training images and are scored on the 5k held-out ones (what a search sees); the
long recipe trains on all 50k and is scored on the 10k test images. The default proxy is the search's GPU
profile (search/cifar10-400m.toml: 2 epochs, batch 512, lr 0.4, full width, 32 px).

Resumable: every finished group is written to the result file at once, and ``--max-minutes`` stops
cleanly, so the work can be spread over several calls of a time-limited GPU machine:

    python benchmarks/proxy_fidelity.py --device cuda --data-dir data/cifar10-jpg.tar.xz --max-minutes 9
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import RESULTS, environment, load_data, write_json

# name -> (epochs, proxy width); the first is the default proxy
PROXIES: dict[str, tuple[float, float]] = {"e2": (2.0, 1.0), "e1": (1.0, 1.0), "w0.5-e2": (2.0, 0.5),
                                           "w0.5-e4": (4.0, 0.5)}
REFERENCES = ("efficientnet-b0", "mnasnet-a1", "mobilenetv2")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir")
    p.add_argument("--cache")
    p.add_argument("-n", type=int, default=20, help="random architectures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxies", default=",".join(PROXIES), help=f"subset of {', '.join(PROXIES)}")
    p.add_argument("--noise-archs", type=int, default=4, help="architectures retrained with two more seeds")
    p.add_argument("--proxy-lr", type=float, default=0.4)
    p.add_argument("--long-epochs", type=float, default=30.0)
    p.add_argument("--long-lr", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("-o", "--output")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from the result file, train nothing")
    a = p.parse_args()
    out = RESULTS / (a.output or f"proxy_fidelity-{a.device}.json")
    if a.plot_only:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return

    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from hwnas.references import reference
    from hwnas.scaling import scale
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, Recipe

    saved: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    state: dict[str, Any] = {k: saved.get(k, {}) for k in ("proxies", "long", "references", "noise")}
    data = load_data(a.data_dir, a.cache)
    tx, ty, vx, vy = data.split_validation(a.val_size)
    space, rng = SearchSpace.default(), np.random.default_rng(a.seed)
    archs = [space.decode(space.sample(rng)) for _ in range(a.n)]
    names = [g.to_string() for g in archs]
    proxies = [x for x in a.proxies.split(",") if x]
    deadline = time.monotonic() + a.max_minutes * 60
    proxy_recipe = Recipe(batch_size=a.batch_size, lr=a.proxy_lr)
    long_recipe = Recipe(batch_size=a.batch_size, lr=a.long_lr)

    def summary() -> dict[str, Any]:
        res: dict[str, Any] = {
            **environment(a.device), "benchmark": "proxy_fidelity", "n_planned": a.n, "default_proxy": proxies[0],
            "proxy_budgets": {k: {"epochs": PROXIES[k][0], "width": PROXIES[k][1], "train_images": len(ty),
                                  "val_images": len(vy), "batch_size": a.batch_size, "lr": a.proxy_lr}
                              for k in proxies},
            "long_budget": {"epochs": a.long_epochs, "train_images": len(data.train_y),
                            "test_images": len(data.test_y), "batch_size": a.batch_size, "lr": a.long_lr},
            "table": {},
            "note": "proxies run in the order listed; candidates_per_gpu_hour counts the whole group (build, "
                    "capture, training, evaluation), so a proxy whose layer shapes an earlier proxy already "
                    "ran (e1 after e2, w0.5-e4 after w0.5-e2) has warm cuDNN caches and looks cheaper than a "
                    "search's fresh candidates; training_only_candidates_per_gpu_hour leaves set-up out"}
        lg = state["long"]
        for k in proxies:
            got = state["proxies"].get(k, {})
            done = [g for g in names if g in got and g in lg and got[g]["val_acc"] is not None
                    and lg[g]["val_acc"] is not None]
            row: dict[str, Any] = {"n": len(done)}
            if got:
                walls = [m["extra"]["group_wall_seconds"] / m["extra"]["group_size"] for m in got.values()]
                row["candidates_per_gpu_hour"] = round(3600 / float(np.mean(walls)), 1)
                train = [m["train_seconds"] / m["extra"]["group_size"] for m in got.values()]
                row["training_only_candidates_per_gpu_hour"] = round(3600 / float(np.mean(train)), 1)
            if len(done) >= 3:
                px = [got[g]["val_acc"] for g in done]
                ly = [lg[g]["val_acc"] for g in done]
                row["kendall_tau"] = round(float(kendalltau(px, ly).statistic), 3)
                row["spearman"] = round(float(spearmanr(px, ly).statistic), 3)
            res["table"][k] = row
        main_row = res["table"].get(proxies[0], {})
        res |= {"n": main_row.get("n", 0), "kendall_tau": main_row.get("kendall_tau"),
                "candidates_per_gpu_hour": main_row.get("candidates_per_gpu_hour")}
        if state["noise"]:
            stds = [float(np.std(v, ddof=1)) for v in state["noise"].values() if len(v) >= 2]
            res["proxy_noise_std"] = round(float(np.mean(stds)), 4) if stds else None
        return res | state

    def save() -> None:
        write_json(out, summary())

    def run(ev: Evaluator, todo: list[tuple[str, Any]], store: dict[str, Any], seed: int) -> None:
        while todo and time.monotonic() < deadline:
            batch, todo = todo[:4], todo[4:]
            for (key, _), m in zip(batch, ev.evaluate_many([g for _, g in batch], seed), strict=True):
                store[key] = m.to_dict()
            save()

    for k in proxies:
        epochs, width = PROXIES[k]
        ev = Evaluator((tx, ty), (vx, vy), 10, Budget(epochs=epochs), proxy_recipe, a.device)
        store = state["proxies"].setdefault(k, {})
        run(ev, [(n, scale(g, width=width)) for n, g in zip(names, archs, strict=True) if n not in store], store,
            a.seed)
        if k == proxies[0] and a.noise_archs:  # the same architectures with two more seeds
            for s in (a.seed + 1, a.seed + 2):
                extra: dict[str, Any] = {}
                have = state["noise"]
                todo = [(n, g) for n, g in zip(names[: a.noise_archs], archs, strict=False)
                        if n in store and len(have.get(n, [])) < s - a.seed + 1]
                run(ev, todo, extra, s)
                for n, m in extra.items():
                    have.setdefault(n, [store[n]["val_acc"]]).append(m["val_acc"])
            save()
    long = Evaluator((data.train_x, data.train_y), (data.test_x, data.test_y), 10, Budget(epochs=a.long_epochs),
                     long_recipe, a.device)
    run(long, [(n, g) for n, g in zip(names, archs, strict=True) if n not in state["long"]], state["long"], a.seed)
    run(long, [(n, reference(n)) for n in REFERENCES if n not in state["references"]], state["references"], a.seed)
    save()
    res = summary()
    plot(res, out.with_suffix(".png"))
    for k, row in res["table"].items():
        print(f"proxy {k}: n={row['n']} kendall tau {row.get('kendall_tau')} spearman {row.get('spearman')} "
              f"candidates/GPU-hour {row.get('candidates_per_gpu_hour')}")
    refs = {n: m["val_acc"] for n, m in state["references"].items()}
    print(f"{res['n']}/{a.n} architectures with long results; references {refs}; noise std "
          f"{res.get('proxy_noise_std')}; written to {out}")


def plot(res: dict[str, Any], path: Any) -> None:
    """Proxy accuracy against long-training accuracy, one panel per proxy (tau and cost in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["proxies"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, k in zip(axes[0], names, strict=True):
        got, lg = res["proxies"][k], res["long"]
        done = [g for g in got if g in lg and got[g]["val_acc"] is not None and lg[g]["val_acc"] is not None]
        ax.scatter([100 * got[g]["val_acc"] for g in done], [100 * lg[g]["val_acc"] for g in done], s=18)
        row = res["table"].get(k, {})
        b = res["proxy_budgets"].get(k, {})
        ax.set_title(f"{k}: {b.get('epochs', '?'):g} ep, width x{b.get('width', 1):g}\n"
                     f"tau {row.get('kendall_tau')}, {row.get('candidates_per_gpu_hour')} cand/GPU-h, n={row['n']}",
                     fontsize=9)
        ax.set_xlabel("proxy val accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{res['long_budget']['epochs']:g}-epoch test accuracy (%)")
    fig.suptitle(f"Proxy fidelity on {res.get('device_name', res.get('device'))}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
