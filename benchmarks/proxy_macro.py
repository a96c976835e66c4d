"""Proxy training against ground truth on a CPU: Kendall tau and Spearman rho between the proxy trainer's
held-out accuracy and NAS-Bench-Macro's published 50-epoch CIFAR-10 accuracy (the mean of its three runs),
for several proxy budgets, with the CPU-seconds each candidate costs. FLOPs and params are scored too (the
baselines every zero-cost paper reports; they cost nothing).

The networks are drawn stratified over the benchmark's accuracy distribution: the 3,969 distinct networks
(``canonical_code``) sorted by mean accuracy, cut into ``-n`` equal-count strata, one network drawn from each
(seeded). The proxies train exactly as ``hwnas search`` trains a candidate (``hwnas.train.Evaluator``,
``hwnas.scaling.scale`` for the width) on the same data split: by default the embedded 5,000-image CIFAR-10
subset with 1,000 images held out (what the default search sees); ``--data-dir`` for the full CIFAR-10.

A proxy is named as in ``proxy_fidelity.py``: ``e<epochs>``, ``w<width>``, ``b<batch>``, ``lr<peak lr per
512 images>``, ``i<training images>``, ``r<pixels>`` (training and held-out images resized); left out: width
1, ``--batch-size``, ``--proxy-lr``, all training images, the data's 32 px. The first proxy listed is the
default one (the CPU profile of search/cifar10-400m.toml) and is retrained with two more seeds on
``--noise-archs`` networks: the seed noise that bounds any proxy's tau.

Resumable (every finished network is written at once; ``--max-minutes`` stops cleanly):

    python benchmarks/proxy_macro.py -n 32 --max-minutes 60
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import RESULTS, environment, image_subset, load_data, resize_images, write_json
from proxy_fidelity import Proxy

# the CPU profile (search/cifar10-400m.toml) first, then cheaper and dearer budgets
PROXIES = ("e1.5-w0.25", "e0.75-w0.25", "e1.5-w0.25-i2k", "e3-w0.25", "e1.5-w0.5", "e1.5-w0.25-r24",
           "e3-w0.25-r16")


def stratified(n: int, seed: int) -> list[str]:
    """``n`` canonical NAS-Bench-Macro codes, one from each of ``n`` equal-count accuracy strata."""
    import numpy as np

    from hwnas import tabular
    from hwnas.spaces.macro import canonical_code

    t = tabular.macro()
    codes = sorted({canonical_code(c) for c in t.codes}, key=lambda c: (float(t.mean_acc[t.index[c]]), c))
    rng = np.random.default_rng(seed)
    return [str(s[rng.integers(len(s))]) for s in np.array_split(np.array(codes), n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="an image archive/folder (default: the embedded 5k CIFAR-10 subset)")
    p.add_argument("--cache")
    p.add_argument("-n", type=int, default=32, help="networks (accuracy strata)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated proxy names (module docstring)")
    p.add_argument("--noise-archs", type=int, default=8, help="networks the default proxy retrains with 2 more seeds")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--proxy-lr", type=float, default=0.8)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("--retime", type=int, default=0, metavar="K",
                   help="train K networks per proxy again for their CPU-seconds only (run on an idle machine: the "
                        "stored runs' times include whatever else ran); the cost reported is then their median")
    p.add_argument("-o", "--output", default="proxy_macro-cpu.json")
    p.add_argument("--zero-cost", action="store_true",
                   help="also score the networks with every zero-cost proxy and compare picking 1 of 4 by zero-cost "
                        "score, by proxy training, and by both (a zero-cost prefilter keeping 2, then training)")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from the result file, train nothing")
    a = p.parse_args()
    out = RESULTS / a.output
    if a.plot_only:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return

    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from hwnas import tabular
    from hwnas.scaling import scale
    from hwnas.spaces.macro import MacroSpace
    from hwnas.train import Budget, Evaluator, Recipe

    saved: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    setup = {"data": a.data_dir or "embedded", "val_size": a.val_size, "seed": a.seed, "n": a.n}
    if saved and saved.get("setup") != setup:
        raise SystemExit(f"proxy_macro: {out} was measured with {saved.get('setup')}, not {setup}: write to another "
                         "file (-o)")
    runs: dict[str, dict[str, Any]] = saved.get("runs", {})
    retimed: dict[str, list[float]] = saved.get("retimed", {})
    zero_cost: dict[str, dict[str, float]] = saved.get("zero_cost", {})
    noise: dict[str, list[float]] = saved.get("noise", {})
    space, table = MacroSpace(), tabular.macro()
    codes = stratified(a.n, a.seed)
    truth = {c: float(table.mean_acc[table.index[c]]) for c in codes}
    data = load_data(a.data_dir, a.cache)
    tx, ty, vx, vy = data.split_validation(a.val_size)
    proxies = [x for x in a.proxies.split(",") if x]
    spec = {k: Proxy.parse(k) for k in proxies}
    deadline = time.monotonic() + a.max_minutes * 60

    def subset(k: str) -> tuple[Any, Any]:
        x, y = image_subset(data, tx, ty, spec[k].images, a.seed)
        return resize_images(x, spec[k].resolution), y

    def summary() -> dict[str, Any]:
        res: dict[str, Any] = {**environment("cpu"), "benchmark": "proxy_macro", "setup": setup,
                               "default_proxy": proxies[0], "truth": "NAS-Bench-Macro mean test accuracy (3 runs, "
                               "50 epochs, full CIFAR-10), %", "table": {}}
        ys = [truth[c] for c in codes]
        for name, vals in (("flops", table.flops), ("params", table.params)):
            xs = [float(vals[table.index[c]]) for c in codes]
            res["table"][name] = {"n": len(codes), "kendall_tau": round(float(kendalltau(xs, ys).statistic), 3),
                                  "spearman": round(float(spearmanr(xs, ys).statistic), 3), "cpu_seconds": 0.0}
        for k in [*proxies, *(k for k in runs if k not in proxies)]:
            got = runs.get(k, {})
            done = [c for c in codes if got.get(c, {}).get("val_acc") is not None]
            row: dict[str, Any] = {"n": len(done), "budget": got.get("_budget")}
            if retimed.get(k):  # timed on an idle machine
                row["cpu_seconds"] = round(float(np.median(retimed[k])), 2)
                row["cpu_seconds_from"] = f"median of {len(retimed[k])} retimed networks"
            elif done:
                row["cpu_seconds"] = round(float(np.median([got[c]["seconds"] for c in done])), 2)
                row["cpu_seconds_from"] = "median of the stored runs"
            if len(done) >= 3:
                xs, ys = [got[c]["val_acc"] for c in done], [truth[c] for c in done]
                row["kendall_tau"] = round(float(kendalltau(xs, ys).statistic), 3)
                row["spearman"] = round(float(spearmanr(xs, ys).statistic), 3)
            res["table"][k] = row
        if noise:
            stds = [float(np.std(v, ddof=1)) for v in noise.values() if len(v) >= 2]
            res["default_proxy_seed_std"] = round(float(np.mean(stds)), 4) if stds else None
        if zero_cost and all(isinstance(zero_cost.get(c, {}).get("_seconds"), dict) for c in codes):  # all scored
            res["zero_cost_table"], res["selection"] = zero_cost_analysis(zero_cost, truth, runs.get(proxies[0], {}),
                                                                          res["table"].get(proxies[0], {}))
        return res | {"truth_acc": truth, "runs": runs, "noise": noise, "retimed": retimed, "zero_cost": zero_cost}

    def train(ev: Evaluator, code: str, width: float, seed: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        m = ev.evaluate(scale(space.from_code(code), width=width), seed)
        return {"val_acc": m.val_acc, "seconds": round(time.perf_counter() - t0, 2), "failure": m.failure}

    for k in proxies:
        pr = spec[k]
        ev = Evaluator(subset(k), (resize_images(vx, pr.resolution), vy), data.num_classes, Budget(epochs=pr.epochs),
                       Recipe(batch_size=pr.batch or a.batch_size, lr=pr.lr or a.proxy_lr), "cpu")
        store = runs.setdefault(k, {})
        store["_budget"] = {"epochs": pr.epochs, "width": pr.width, "train_images": len(ev.train),
                            "val_images": len(vy), "batch_size": ev.recipe.batch_size, "lr": ev.recipe.lr,
                            "resolution": ev.resolution}
        for i, c in enumerate(codes):
            if c in store or time.monotonic() > deadline:
                continue
            store[c] = train(ev, c, pr.width, a.seed)
            print(f"{k} {i + 1}/{len(codes)} {c}: proxy {store[c]['val_acc']} truth {truth[c]:.2f} "
                  f"({store[c]['seconds']} s)", flush=True)
            write_json(out, summary())
        if a.retime:
            retimed[k] = [train(ev, c, pr.width, a.seed)["seconds"] for c in codes[: a.retime]]
            write_json(out, summary())
        if k == proxies[0] and not a.retime:
            for c in codes[:: max(1, len(codes) // max(1, a.noise_archs))][: a.noise_archs]:
                have = noise.setdefault(c, [])
                if not have and store.get(c, {}).get("val_acc") is not None:
                    have.append(store[c]["val_acc"])
                for s in (a.seed + 1, a.seed + 2)[max(0, len(have) - 1):]:
                    if time.monotonic() > deadline or not have:
                        break
                    have.append(train(ev, c, pr.width, s)["val_acc"])
                    write_json(out, summary())
    if a.zero_cost:
        from hwnas.evaluators.zero_cost import PROXIES as ZC_PROXIES
        from hwnas.evaluators.zero_cost import ZeroCostScorer, cost_groups

        scorer = ZeroCostScorer(space, tx, ty, data.num_classes, seed=a.seed)
        for c in codes:  # each group of proxies sharing passes timed alone (seeded: a rescore gives the same values)
            if not isinstance(zero_cost.get(c, {}).get("_seconds"), dict) and time.monotonic() < deadline:
                row: dict[str, Any] = {"_seconds": {}}
                for group in cost_groups(ZC_PROXIES):
                    t0 = time.perf_counter()
                    row |= scorer.score(space.from_code(c), group)
                    row["_seconds"]["+".join(group)] = round(time.perf_counter() - t0, 3)
                zero_cost[c] = row
                write_json(out, summary())
    res = summary()
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    for k, row in res.get("zero_cost_table", {}).items():
        print(f"zero-cost {k}: kendall tau {row['kendall_tau']} spearman {row['spearman']}")
    for k, row in res.get("selection", {}).items():
        print(f"pick 1 of 4 by {k}: mean true accuracy {row['mean_truth']:.2f} %, {row['seconds']:.1f} s a pick")
    for k, row in res["table"].items():
        print(f"{k}: n={row['n']} kendall tau {row.get('kendall_tau')} spearman {row.get('spearman')} "
              f"{row.get('cpu_seconds')} CPU-s per candidate")
    print(f"seed std of the default proxy {res.get('default_proxy_seed_std')}; written to {out}")


def zero_cost_analysis(zero_cost: dict[str, dict[str, Any]], truth: dict[str, float], proxy: dict[str, Any],
                       proxy_row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each zero-cost proxy's rank correlation with the truth over the scored networks (and that of a hybrid:
    the rank sum of a zero-cost score and the proxy training's accuracy), and the mean true accuracy of the
    network picked from every batch of 4 of them by each rule: at random, the best by a zero-cost score, the best
    by proxy training (4 trainings), the best by the hybrid rank sum (4 scores, 4 trainings), a zero-cost
    prefilter keeping 2 then the best trained (2 trainings), and the best there is. 20,000 batches drawn (seeded)
    from the scored networks; the vote and the hybrid order a batch by rank sums over all the scored networks. A
    rule's seconds: the median time of each group of proxies it needs (a group shares its passes over the
    network), plus the proxy training's median CPU-seconds per trained network."""
    import math

    import numpy as np
    from scipy.stats import kendalltau, rankdata, spearmanr

    from hwnas.evaluators.zero_cost import VOTE_DEFAULT, vote_ranks

    codes = [c for c in truth if c in zero_cost and proxy.get(c, {}).get("val_acc") is not None]
    names = [k for k in next(iter(zero_cost.values())) if not k.startswith("_")]
    col = {k: np.array([zero_cost[c][k] if math.isfinite(zero_cost[c][k]) else -np.inf for c in codes]) for k in names}
    col["vote"] = vote_ranks({k: col[k] for k in VOTE_DEFAULT})
    acc = np.array([proxy[c]["val_acc"] for c in codes])
    hybrids = ("naswot", "flops", "vote")
    for k in hybrids:
        col[f"{k} + training"] = rankdata(col[k]) + rankdata(acc)
    y = np.array([truth[c] for c in codes])
    train_s = float(proxy_row.get("cpu_seconds") or np.median([proxy[c]["seconds"] for c in codes]))
    groups = zero_cost[codes[0]]["_seconds"]
    group_s = {g: float(np.median([zero_cost[c]["_seconds"][g] for c in codes])) for g in groups}

    def score_s(rule: str) -> float:  # one network's zero-cost scoring for ``rule``
        members = set(VOTE_DEFAULT) if rule.startswith("vote") else {rule.split(" ")[0]}
        return sum(t for g, t in group_s.items() if members & set(g.split("+")))

    table = {k: {"n": len(codes), "kendall_tau": round(float(kendalltau(v, y).statistic), 3),
                 "spearman": round(float(spearmanr(v, y).statistic), 3),
                 "cpu_seconds": round(score_s(k) + (train_s if k.endswith("+ training") else 0.0), 3)}
             for k, v in col.items()}

    picks: dict[str, list[float]] = {"random": [], "oracle": [], "proxy training": []}
    rules = ("synflow", "zico", "naswot", "fisher", "flops", "vote")
    rng = np.random.default_rng(0)
    for _ in range(20000):
        ix = rng.choice(len(codes), size=4, replace=False)
        picks["random"].append(float(y[ix].mean()))
        picks["oracle"].append(float(y[ix].max()))
        picks["proxy training"].append(float(y[ix[np.argmax(acc[ix])]]))
        for k in rules:
            z = col[k][ix]
            picks.setdefault(k, []).append(float(y[ix[np.argmax(z)]]))
            top2 = ix[np.argsort(-z, kind="stable")[:2]]
            picks.setdefault(f"{k} keeps 2, then training", []).append(float(y[top2[np.argmax(acc[top2])]]))
        for k in hybrids:
            picks.setdefault(f"{k} + training", []).append(float(y[ix[np.argmax(col[f'{k} + training'][ix])]]))
    cost = {"random": 0.0, "oracle": float("nan"), "proxy training": 4 * train_s}
    selection = {}
    for k, v in picks.items():
        trained = 2 if "then training" in k else 4 if k.endswith("+ training") else 0
        c = cost.get(k, 4 * score_s(k) + trained * train_s)
        selection[k] = {"mean_truth": round(float(np.mean(v)), 3), "seconds": round(c, 2)}
    return table, selection


def plot(res: dict[str, Any], path: Any) -> None:
    """Kendall tau against CPU-seconds per candidate, one point per proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = [(k, r, "C1" if k == res["default_proxy"] else "C0") for k, r in res["table"].items()
             if r.get("kendall_tau") is not None and r.get("cpu_seconds")]
    best_zc = ("naswot", "fisher", "vote", "synflow", "naswot + training")  # the others crowd the plot
    shown += [(f"zero-cost {k}" if "+" not in k else k, r, "C2" if "+" not in k else "C3")
              for k, r in res.get("zero_cost_table", {}).items() if k in best_zc and r.get("cpu_seconds")]
    for i, (k, row, colour) in enumerate(sorted(shown, key=lambda kr: kr[1]["cpu_seconds"])):
        ax.scatter(row["cpu_seconds"], row["kendall_tau"], color=colour)
        ax.annotate(f"{k} (n={row['n']})", (row["cpu_seconds"], row["kendall_tau"]), fontsize=7,
                    xytext=(4, 3 if i % 2 else -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.axhline(0.7, color="k", ls="--", lw=0.8)
    ax.text(ax.get_xlim()[1], 0.7, "goal 0.7 ", fontsize=8, va="bottom", ha="right")
    for k in ("flops", "params"):
        if k in res["table"]:
            ax.axhline(res["table"][k]["kendall_tau"], ls=":", color="grey")
            ax.text(ax.get_xlim()[0], res["table"][k]["kendall_tau"], f" {k} (free)", fontsize=8, va="bottom")
    ax.set_xlabel("seconds per candidate (wall, 2-core build VM, idle)")
    ax.set_ylabel("Kendall tau vs NAS-Bench-Macro accuracy")
    std = res.get("default_proxy_seed_std")
    ax.set_title(f"Proxy training (blue; orange: the CPU profile{f', seed std {std * 100:.1f} points' if std else ''})"
                 f",\nzero-cost scores (green), rank sum of both (red) vs {res['setup']['n']} stratified "
                 "NAS-Bench-Macro networks", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
