"""Zero-cost proxies against a tabular benchmark's published accuracies: Spearman rho and Kendall tau of
each proxy of ``hwnas.evaluators.zero_cost`` (and of the synflow + jacov + snip rank vote) against the test
accuracy over ``-n`` architectures drawn uniformly (seeded) from the benchmark's space, with the CPU-seconds
each proxy costs an architecture. The published figures (``PUBLISHED``) are printed beside ours.

Every proxy scores real CIFAR-10 training images (by default one seeded minibatch of 64 from the embedded
5,000-image subset; ``--data-dir`` for another copy of CIFAR-10): the scores need one minibatch, not the
data set. Only CIFAR-10 images are here, so only the CIFAR-10 tables are scored (``nb201:cifar10``,
``macro``). Resumable (the scores are written every 10 architectures; ``--max-minutes`` stops cleanly):

    python benchmarks/zero_cost_tabular.py --benchmark nb201:cifar10 -n 1000
    python benchmarks/zero_cost_tabular.py --benchmark macro -n 500
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import RESULTS, environment, load_data, write_json

# Spearman rho over NAS-Bench-201 CIFAR-10 (Abdelfattah et al., ICLR 2021, Table 1; ZiCo: Li et al., ICLR 2023)
PUBLISHED = {"nb201:cifar10": {"synflow": 0.74, "jacov": 0.73, "snip": 0.60, "grad_norm": 0.59, "grasp": 0.51,
                               "fisher": 0.36, "zico": 0.80}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", default="nb201:cifar10", choices=("nb201:cifar10", "macro"))
    p.add_argument("-n", type=int, default=1000, help="architectures drawn uniformly from the space")
    p.add_argument("--seed", type=int, default=0, help="draws the architectures (and, by default, the minibatch and "
                   "the init)")
    p.add_argument("--score-seed", type=int, default=None, help="draws the minibatch and seeds the init (default "
                   "--seed): the same architectures scored with another seed")
    p.add_argument("--proxies", default="all", help="comma-separated, or all")
    p.add_argument("--data-dir", help="CIFAR-10 (folder or archive); default: the embedded subset")
    p.add_argument("--cache")
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("--rescore", default="", help="comma-separated proxies to score again on every architecture "
                   "(after a change to their definition)")
    p.add_argument("-o", "--output")
    p.add_argument("--plot-only", action="store_true")
    a = p.parse_args()
    out = RESULTS / (a.output or f"zero_cost-{a.benchmark.replace(':', '-')}.json")
    if a.plot_only:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return

    import numpy as np
    import torch

    from hwnas.evaluators.tabular import TabularEvaluator
    from hwnas.evaluators.zero_cost import ZeroCostScorer, cost_groups, parse_proxies
    from hwnas.spaces import get_space

    proxies = parse_proxies(a.proxies)
    tab = TabularEvaluator(a.benchmark)
    space = get_space(tab.spec.space)
    rng = np.random.default_rng(a.seed)
    if a.benchmark == "macro":  # one per distinct network (equivalent codes share one result)
        from hwnas.spaces.macro import canonical_code

        vectors = [space.sample(rng) for _ in range(20 * a.n)]
        seen: dict[str, Any] = {}
        for v in vectors:
            seen.setdefault(canonical_code("".join(map(str, v))), v)
        vectors = list(seen.values())[: a.n]
    else:
        picks = rng.choice(space.size(), size=a.n, replace=False)
        vectors = [np.array(np.unravel_index(int(i), tuple(space.upper_bounds + 1))) for i in picks]
    archs = [space.decode(v) for v in vectors]
    keys = [tab.key(g) for g in archs]
    saved = json.loads(out.read_text()) if out.exists() else {}
    score_seed = a.seed if a.score_seed is None else a.score_seed
    setup = {"benchmark": a.benchmark, "seed": a.seed, "data": a.data_dir or "embedded", "batch_size": 64}
    if score_seed != a.seed:  # recorded only when it differs: result files made before it stay valid
        setup["score_seed"] = score_seed
    if saved and saved.get("setup") != setup:
        raise SystemExit(f"zero_cost_tabular: {out} holds {saved.get('setup')}, not {setup}: write elsewhere (-o)")
    scores: dict[str, dict[str, float]] = saved.get("scores", {})
    seconds: dict[str, dict[str, float]] = saved.get("seconds", {})
    data = load_data(a.data_dir, a.cache)
    scorer = ZeroCostScorer(space, data.train_x, data.train_y, tab.spec.num_classes, seed=score_seed)
    deadline = time.monotonic() + a.max_minutes * 60
    truth = {k: float(tab.evaluate(g).acc) * 100 for k, g in zip(keys, archs, strict=True)}

    def summary() -> dict[str, Any]:
        from scipy.stats import kendalltau, spearmanr

        from hwnas.evaluators.zero_cost import VOTE_DEFAULT, vote_ranks

        done = [k for k in keys if k in scores and all(p in scores[k] for p in proxies)]
        ys = [truth[k] for k in done]
        table: dict[str, Any] = {}
        cols = {p: [scores[k][p] for k in done] for p in proxies}
        if all(p in cols for p in VOTE_DEFAULT):
            cols["vote"] = list(vote_ranks({p: cols[p] for p in VOTE_DEFAULT}))
        for p, xs in cols.items():  # a NaN or infinite score (e.g. a cell whose output ignores its input) ranks lowest
            x = np.asarray(xs, dtype=float)
            ok = np.isfinite(x)
            row: dict[str, Any] = {"n": len(x), "not_finite": int((~ok).sum())}
            if len(x) >= 3:
                xx = np.where(ok, x, -np.inf)
                row["spearman"] = round(float(spearmanr(xx, ys).statistic), 3)
                row["kendall_tau"] = round(float(kendalltau(xx, ys).statistic), 3)
            if p in PUBLISHED.get(a.benchmark, {}):
                row["published_spearman"] = PUBLISHED[a.benchmark][p]
            table[p] = row
        # the median: robust to the minutes another job shared the two cores
        cost = {g: round(float(np.median([seconds[k][g] for k in done if g in seconds.get(k, {})])), 4)
                 for g in {g for k in done for g in seconds.get(k, {})}}
        return {**environment("cpu"), "benchmark": "zero_cost_tabular", "setup": setup, "n": len(done),
                "seconds_per_architecture": cost,
                "threads": torch.get_num_threads(), "truth": f"{tab.spec.description}, %", "table": table,
                "truth_acc": {k: truth[k] for k in done}, "scores": scores, "seconds": seconds}

    for p in parse_proxies(a.rescore) if a.rescore else ():
        for k in scores:
            scores[k].pop(p, None)
            seconds.get(k, {}).pop(p, None)
    todo = [(k, g) for k, g in zip(keys, archs, strict=True) if not all(p in scores.get(k, {}) for p in proxies)]
    for i, (k, g) in enumerate(todo):
        if time.monotonic() > deadline:
            break
        row, secs = scores.setdefault(k, {}), seconds.setdefault(k, {})
        # the proxies sharing passes over one network are timed together; only what is missing is scored
        for group in cost_groups([p for p in proxies if p not in row]):
            t0 = time.perf_counter()
            row |= scorer.score(g, group)
            secs["+".join(group)] = round(time.perf_counter() - t0, 4)
        if (i + 1) % 10 == 0 or i + 1 == len(todo):
            write_json(out, summary())
            print(f"{len(keys) - len(todo) + i + 1}/{len(keys)} scored", flush=True)
    res = summary()
    write_json(out, res)
    plot(res, out.with_suffix(".png"))
    for p, r in res["table"].items():
        pub = f" (published {r['published_spearman']:.2f})" if "published_spearman" in r else ""
        print(f"{p:10s} spearman {r.get('spearman')}{pub} kendall {r.get('kendall_tau')}, {r['not_finite']} not finite")
    for g, sec in res["seconds_per_architecture"].items():
        print(f"{g}: {sec:.3f} s per architecture")
    print(f"{res['n']} architectures; written to {out}")


def plot(res: dict[str, Any], path: Any) -> None:
    """Spearman rho per proxy (blue), with the published figure (black tick) where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(p, r) for p, r in res["table"].items() if r.get("spearman") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.4))
    ax.barh([p for p, _ in rows], [r["spearman"] for _, r in rows], color="tab:blue", label="hwnas")
    pubs = [(i, r["published_spearman"]) for i, (_, r) in enumerate(rows) if "published_spearman" in r]
    if pubs:
        ax.scatter([v for _, v in pubs], [i for i, _ in pubs], marker="|", s=300, color="k", label="published")
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlim(min(0.0, *(r["spearman"] for _, r in rows)) - 0.02, 1.15)  # room for the legend on the right
    ax.invert_yaxis()
    ax.set_xlabel(f"Spearman rho vs {res['truth']} (n={res['n']})".replace(" (", "\n(", 1), fontsize=9)
    ax.set_title(f"Zero-cost proxies on {res['setup']['benchmark']}, scored on {res['device_name']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
