"""Proxy fidelity and cost: Kendall tau between the proxy's validation accuracy and long-training test
accuracy on random architectures of the space, and how many candidates the proxy evaluates per GPU-hour.
Also trains the references (EfficientNet-B0, MnasNet-A1, MobileNetV2) with the long recipe.

Resumable: every finished training is written to the result file at once, and ``--max-minutes`` stops
cleanly, so the work can be spread over several calls of a time-limited GPU machine:

    python benchmarks/proxy_fidelity.py --device cuda --data-dir data/cifar10-jpg --max-minutes 9
"""

from __future__ import annotations

import argparse
import json
import time

from _common import RESULTS, environment, load_data, write_json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir")
    p.add_argument("--cache")
    p.add_argument("-n", type=int, default=24, help="random architectures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxy-epochs", type=float, default=2.0)
    p.add_argument("--long-epochs", type=float, default=30.0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("-o", "--output")
    a = p.parse_args()

    import numpy as np
    from scipy.stats import kendalltau

    from hwnas.references import reference
    from hwnas.space import SearchSpace
    from hwnas.train import Budget, Evaluator, Recipe

    out = RESULTS / (a.output or f"proxy_fidelity-{a.device}.json")
    state = json.loads(out.read_text()) if out.exists() else {"proxy": {}, "long": {}, "references": {}}
    data = load_data(a.data_dir, a.cache)
    tx, ty, vx, vy = data.split_validation(a.val_size)
    space, rng = SearchSpace.default(), np.random.default_rng(a.seed)
    archs = [space.decode(space.sample(rng)) for _ in range(a.n)]
    recipe = Recipe(batch_size=a.batch_size)
    proxy = Evaluator((tx, ty), (vx, vy), 10, Budget(epochs=a.proxy_epochs), recipe, a.device)
    long = Evaluator((data.train_x, data.train_y), (data.test_x, data.test_y), 10, Budget(epochs=a.long_epochs),
                     recipe, a.device)
    deadline = time.monotonic() + a.max_minutes * 60

    def save() -> None:
        done = [g.to_string() for g in archs if g.to_string() in state["proxy"] and g.to_string() in state["long"]]
        res = {**environment(a.device), "benchmark": "proxy_fidelity", "n_planned": a.n, "n": len(done),
               "proxy_budget": {"epochs": a.proxy_epochs, "train_images": len(ty), "batch_size": a.batch_size},
               "long_budget": {"epochs": a.long_epochs, "train_images": len(data.train_y)}, **state}
        if len(done) >= 3:
            px = [state["proxy"][g]["val_acc"] for g in done]
            lg = [state["long"][g]["val_acc"] for g in done]
            res["kendall_tau"] = float(kendalltau(px, lg).statistic)
            per = [state["proxy"][g]["train_seconds"] / state["proxy"][g]["extra"]["group_size"] for g in done]
            res["candidates_per_gpu_hour"] = round(3600 / float(np.mean(per)), 1)
        write_json(out, res)

    for key, ev in (("proxy", proxy), ("long", long)):
        todo = [g for g in archs if g.to_string() not in state[key]]
        while todo and time.monotonic() < deadline:
            batch, todo = todo[:4], todo[4:]
            for m in ev.evaluate_many(batch, a.seed):
                state[key][m.genotype] = m.to_dict()
            save()
    for name in ("efficientnet-b0", "mnasnet-a1", "mobilenetv2"):
        if name not in state["references"] and time.monotonic() < deadline:
            state["references"][name] = long.evaluate(reference(name), a.seed).to_dict()
            save()
    save()
    res = json.loads(out.read_text())
    print(f"{res['n']}/{a.n} architectures done; kendall tau {res.get('kendall_tau')}; "
          f"candidates per GPU-hour {res.get('candidates_per_gpu_hour')}; written to {out}")


if __name__ == "__main__":
    main()
