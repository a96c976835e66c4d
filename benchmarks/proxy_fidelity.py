"""Proxy fidelity and cost: Kendall tau between each proxy's validation accuracy and long-training test
accuracy on random architectures of the space, and how many candidates each proxy evaluates per GPU-hour
(wall time of its groups, build + graph capture + training + evaluation, over the candidates they held).
Also the residual noise of the default proxy (the same architectures, three seeds) and the references
(EfficientNet-B0, MnasNet-A1, MobileNetV2) under the long recipe.

Proxies train on 45k training images and are scored on the 5k held-out ones (what a search sees); the
long recipe trains on all 50k and is scored on the 10k test images. The first of ``--proxies`` is reported
as the default proxy; by default that is the search recipes' GPU profile (search/cifar10-400m.toml: 4
epochs at width x0.5, batch 512, lr 0.4, 32 px).

Resumable: every finished group is written to the result file at once, and ``--max-minutes`` stops
cleanly, so the work can be spread over several calls of a time-limited GPU machine. The long runs and the
references are trained before the proxies:

    python benchmarks/proxy_fidelity.py --device cuda --data-dir data/cifar10-jpg.tar.xz --max-minutes 9

A proxy is named by its budget: dash-separated tokens ``e<epochs>``, ``w<width factor>``, ``b<batch>``,
``lr<peak lr per 512 images>``, ``i<training images>`` (``i20k`` = the first 20,000 of a seeded stratified
shuffle of the 45k), ``r<pixels>`` (training and held-out images resized to that side, antialiased), e.g.
``w0.5-e1-b128-lr0.2-i20k``; left out: full width, ``--batch-size``, ``--proxy-lr``, all 45k images, the
data's resolution. ``--long-from FILE`` starts from the long results of another run (only the
missing ones are trained); with ``--skip-long`` none are, and only architectures with one are scored, e.g.
proxies trained on a CPU against the GPU's long runs (a proxy's ranking does not depend on the device that
trained it, its cost does and is reported for this device).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, image_subset, load_data, resize_images, write_json

# the proxies measured by default; the first is the default proxy
PROXIES = ("w0.5-e4", "e2", "e1", "w0.5-e2")


@dataclass(frozen=True)
class Proxy:
    """A proxy budget parsed from its name (see the module docstring); None: the command-line default."""

    epochs: float
    width: float = 1.0
    batch: int | None = None
    lr: float | None = None
    images: int | None = None
    resolution: int | None = None

    @classmethod
    def parse(cls, name: str) -> Proxy:
        got: dict[str, Any] = {}
        for tok in name.split("-"):
            m = re.fullmatch(r"(lr|e|w|b|i|r)(\d+(?:\.\d+)?)(k?)", tok)
            if not m or m.group(1) in got or (m.group(3) and m.group(1) != "i"):
                raise SystemExit(f"proxy_fidelity: bad proxy name {name!r} (token {tok!r}); "
                                 "expected e.g. e2, w0.5-e4, w0.5-e1-b128-lr0.2-i20k")
            v = float(m.group(2)) * (1000 if m.group(3) else 1)
            got[m.group(1)] = int(v) if m.group(1) in ("b", "i", "r") else v
        if "e" not in got:
            raise SystemExit(f"proxy_fidelity: proxy {name!r} names no epochs (e<N>)")
        return cls(got["e"], got.get("w", 1.0), got.get("b"), got.get("lr"), got.get("i"), got.get("r"))


REFERENCES = ("efficientnet-b0", "mnasnet-a1", "mobilenetv2")


def init_of(budget: dict[str, Any] | None) -> str:
    """The classifier init a result file's budget was trained with; files written before the init was
    recorded (2026-11-22) used torchvision's."""
    return str((budget or {}).get("classifier_init", "torchvision"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir")
    p.add_argument("--cache")
    p.add_argument("-n", type=int, default=20, help="random architectures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated proxy names (module docstring)")
    p.add_argument("--long-from", help="start from the long results (and references) of this result file")
    p.add_argument("--skip-long", action="store_true",
                   help="train no long runs; score only the architectures that have one")
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

    from hwnas.model import CLASSIFIER_INIT
    from hwnas.references import reference
    from hwnas.scaling import scale
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, Recipe

    saved: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    state: dict[str, Any] = {k: saved.get(k, {}) for k in ("proxies", "long", "references", "noise")}
    # one recipe for the long runs, the references and every proxy: what another classifier init
    # (hwnas.model.CLASSIFIER_INIT) trained is trained again, another long budget is refused
    mine = {"epochs": a.long_epochs, "batch_size": a.batch_size, "lr": a.long_lr}

    def same_long(source: str, res: dict[str, Any], hint: str = "") -> bool:
        theirs = res.get("long_budget", {})
        if any(theirs.get(k) != v for k, v in mine.items()):
            raise SystemExit(f"proxy_fidelity: {source} has long runs of {theirs}, not {mine}{hint}")
        return init_of(theirs) == CLASSIFIER_INIT

    if (state["long"] or state["references"]) and not same_long(str(out), saved, "; write to another file (-o)"):
        print(f"proxy_fidelity: the {len(state['long'])} long runs and {len(state['references'])} references in "
              f"{out} were trained with the {init_of(saved.get('long_budget'))} classifier init, not "
              f"{CLASSIFIER_INIT}: trained again")
        state["long"], state["references"] = {}, {}
    kept_budgets = {k: b for k, b in saved.get("proxy_budgets", {}).items() if init_of(b) == CLASSIFIER_INIT}
    for k in [k for k in state["proxies"] if k not in kept_budgets]:
        print(f"proxy_fidelity: proxy {k} in {out} was trained with the "
              f"{init_of(saved.get('proxy_budgets', {}).get(k))} classifier init, not {CLASSIFIER_INIT}: trained again")
        del state["proxies"][k]
    if saved.get("default_proxy") not in state["proxies"]:
        state["noise"] = {}
    elif state["noise"] and saved["default_proxy"] != a.proxies.split(",")[0]:
        raise SystemExit(f"proxy_fidelity: {out} holds seed-noise runs of {saved['default_proxy']}: list it first "
                         "in --proxies (the first proxy is the default one), or write to another file (-o)")
    if a.long_from:
        long_from = json.loads(Path(a.long_from).read_text())
        if not same_long(a.long_from, long_from):
            raise SystemExit(f"proxy_fidelity: {a.long_from}'s long runs were trained with the "
                             f"{init_of(long_from.get('long_budget'))} classifier init, not {CLASSIFIER_INIT}")
        for k in ("long", "references"):
            state[k] = {**long_from.get(k, {}), **state[k]}
    data = load_data(a.data_dir, a.cache)
    tx, ty, vx, vy = data.split_validation(a.val_size)
    space, rng = SearchSpace.default(), np.random.default_rng(a.seed)
    archs = [space.decode(space.sample(rng)) for _ in range(a.n)]
    names = [g.to_string() for g in archs]
    proxies = [x for x in a.proxies.split(",") if x]
    spec = {k: Proxy.parse(k) for k in proxies}
    deadline = time.monotonic() + a.max_minutes * 60
    long_recipe = Recipe(batch_size=a.batch_size, lr=a.long_lr)
    if a.skip_long:
        if not any(n in state["long"] for n in names):
            raise SystemExit("proxy_fidelity: no long result for these architectures (--long-from FILE, with "
                             "the -n/--seed of the run that produced it)")
        names, archs = map(list, zip(*[(n, g) for n, g in zip(names, archs, strict=True) if n in state["long"]],
                                     strict=True))

    def recipe(k: str) -> Any:
        return Recipe(batch_size=spec[k].batch or a.batch_size, lr=spec[k].lr or a.proxy_lr)

    def train_subset(k: str) -> tuple[Any, Any]:
        x, y = image_subset(data, tx, ty, spec[k].images, a.seed)
        return resize_images(x, spec[k].resolution), y

    def summary() -> dict[str, Any]:
        res: dict[str, Any] = {
            **environment(a.device), "benchmark": "proxy_fidelity", "n_planned": a.n, "default_proxy": proxies[0],
            "proxy_budgets": {**{k: b for k, b in kept_budgets.items() if k in state["proxies"]},
                              **{k: {"epochs": spec[k].epochs, "width": spec[k].width,
                                     "train_images": min(spec[k].images or len(ty), len(ty)), "val_images": len(vy),
                                     "batch_size": recipe(k).batch_size, "lr": recipe(k).lr,
                                     "resolution": spec[k].resolution or int(tx.shape[1]),
                                     "classifier_init": CLASSIFIER_INIT} for k in proxies}},
            "long_budget": {"epochs": a.long_epochs, "train_images": len(data.train_y),
                            "test_images": len(data.test_y), "batch_size": a.batch_size, "lr": a.long_lr,
                            "classifier_init": CLASSIFIER_INIT},
            "table": {},
            "note": "proxies run in the order listed; candidates_per_gpu_hour counts the whole group (build, "
                    "capture, training, evaluation), so a proxy whose layer shapes an earlier proxy already "
                    "ran (e1 after e2, w0.5-e4 after w0.5-e2) has warm cuDNN caches and looks cheaper than a "
                    "search's fresh candidates; training_only_candidates_per_gpu_hour leaves set-up out"}
        lg = state["long"]
        for k in [*proxies, *(k for k in state["proxies"] if k not in proxies)]:  # listed, then earlier runs'
            got = state["proxies"].get(k, {})
            done = [g for g in names if g in got and g in lg and got[g]["val_acc"] is not None
                    and lg[g]["val_acc"] is not None]
            row: dict[str, Any] = {"n": len(done)}
            timed = [m for m in got.values() if "group_wall_seconds" in m["extra"]]  # a group failed whole: none
            if timed:  # a candidate that failed to build has no group size: it cost its group's time alone
                walls = [m["extra"]["group_wall_seconds"] / m["extra"].get("group_size", 1) for m in timed]
                row["candidates_per_gpu_hour"] = round(3600 / float(np.mean(walls)), 1)
                train = [m["train_seconds"] / m["extra"].get("group_size", 1) for m in timed]
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
            runs = [[x for x in v if x is not None] for v in state["noise"].values()]
            stds = [float(np.std(v, ddof=1)) for v in runs if len(v) >= 2]
            res["proxy_noise_std"] = round(float(np.mean(stds)), 4) if stds else None
        return res | state

    def save() -> None:
        write_json(out, summary())

    def run(ev: Evaluator, todo: list[tuple[str, Any]], store: dict[str, Any], seed: int,
            keep_failures: bool = True) -> None:
        """Train ``todo`` in groups of 4, saving after each; failed long runs and references are not stored
        (``keep_failures`` False: a later start trains them again rather than leaving n short for good)."""
        while todo and time.monotonic() < deadline:
            batch, todo = todo[:4], todo[4:]
            for (key, _), m in zip(batch, ev.evaluate_many([g for _, g in batch], seed), strict=True):
                if m.failure and not keep_failures:
                    print(f"{key}: failed ({m.failure}); not stored, trained again by the next start", flush=True)
                    continue
                store[key] = m.to_dict()
            save()

    # long runs and references first: every proxy is scored against the former, the latter are the yardstick
    # a search must beat, and a time-limited run should end with proxies missing rather than those
    if not a.skip_long:
        long = Evaluator((data.train_x, data.train_y), (data.test_x, data.test_y), 10,
                         Budget(epochs=a.long_epochs), long_recipe, a.device)
        run(long, [(n, g) for n, g in zip(names, archs, strict=True) if n not in state["long"]], state["long"],
            a.seed, keep_failures=False)
        run(long, [(n, reference(n)) for n in REFERENCES if n not in state["references"]], state["references"],
            a.seed, keep_failures=False)
        del long
    for k in proxies:
        ev = Evaluator(train_subset(k), (resize_images(vx, spec[k].resolution), vy), 10,
                       Budget(epochs=spec[k].epochs), recipe(k), a.device)
        store = state["proxies"].setdefault(k, {})
        run(ev, [(n, scale(g, width=spec[k].width)) for n, g in zip(names, archs, strict=True) if n not in store],
            store, a.seed)
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
