"""Where does a network's time depart from the sum of its layers' table entries?

Each layer of a table is timed alone; a network runs them back to back. This script times growing prefixes
of real networks end to end -- the stem, the stem and the first block, the stem and the first two blocks,
..., the whole network -- so the difference between consecutive prefixes is what each block costs *inside*
the network, and sets it beside the block's table entry. The ratio (in-network / alone), summarised by
where the block sits (the first block after the stem, other blocks by input size) and whether it expands,
shows which layers the table misjudges. For the first block it also compares its input untouched since
the last replay (as the table times it) with its input just rewritten by a copy (as in a network, where
the stem writes it right before). Motivation, from the shipped H100 fp16/bs1 validation at 224 px:
networks whose first block is an expanded inverted residual at 112x112 are under-predicted by 4.4 % on
average (MAPE 5.3 % on those 41 of 100 networks, 1.9 % on the others), and no network-level model removes
it (``latency_overhead.py``).

Networks: the first ``-n``/2 networks of the table's validation report whose first block is an expanded
inverted residual, and the first ``-n``/2 whose first block is not. Same timer as the table's networks
(CUDA graph + events, or the CPU repeat-median).

    python benchmarks/investigations/layer_context.py --table latency_tables/h100-fp16-bs1-r224-32.json -n 16
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py, one folder up
from _common import RESULTS, environment, write_json


def group_of(index: int, layer: Any, top: int) -> str:
    if index == 0:
        return "first block, " + ("expanded ir" if layer.kind == "ir" and layer.expansion > 1 else layer.kind)
    return f"other blocks at {layer.size} px" + (" (top)" if layer.size == top else "")


def first_block_input_state(model: Any, x: Any, timer: Any, torch: Any) -> dict[str, float]:
    """The first block alone, its input (the stem's output, a fixed tensor) either untouched since the last
    replay or rewritten by a copy kernel just before it, as the stem writes it inside a network. Each is
    the time of a graph with the block minus the same graph without it (a one-element add, or the copy),
    so graph launch cancels out. If "just written" is what makes the block slow in a network, isolated
    timing needs the same warm-up of its input."""
    with torch.inference_mode():
        inp = model.stem(x)
        src, tick = inp.clone(), torch.zeros(1, device=inp.device, dtype=inp.dtype)
    block = model.blocks[0]

    def untouched(t: Any) -> Any:
        tick.add_(1)
        return block(t)

    def just_written(t: Any) -> Any:
        t.copy_(src)
        return block(t)

    def t_of(fn: Any) -> float:
        return float(timer.time(fn, inp).ms)

    return {"untouched_ms": t_of(untouched) - t_of(lambda t: tick.add_(1)),
            "just_written_ms": t_of(just_written) - t_of(lambda t: t.copy_(src))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True)
    p.add_argument("--resolution", type=int, default=None, help="default: the table's first")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("-o", "--output", default=None)
    a = p.parse_args()

    import torch
    from torch import nn

    from hwnas.cli.latency import _timer_from, load_table
    from hwnas.genotype import parse_genotype
    from hwnas.latency.measure import Setup, steady_host_allocator
    from hwnas.model import build_model

    table = load_table(a.table)
    md = table.metadata
    res = a.resolution or table.resolutions[0]
    device = md["device"]
    setup = Setup(device, md["precision"], int(md["batch_size"]), channels_last=bool(md.get("channels_last")),
                  threads=md.get("threads") if device == "cpu" else None)
    if device == "cpu":
        torch.set_num_threads(setup.threads or torch.get_num_threads())
        if str(md.get("host_allocator", "default")).startswith("glibc"):
            steady_host_allocator()
    timer = _timer_from(table, setup)
    src = Path(table.source)
    report = src.with_name(src.stem + (".validation.csv" if res == 224 else f".validation-r{res}.csv"))
    with report.open() as fh:
        rows = list(csv.DictReader(fh))

    def ir_first(g: str) -> bool:
        first = table.layer_times(parse_genotype(g), res)[1][0]
        return first.kind == "ir" and first.expansion > 1

    pick = [r for r in rows if ir_first(r["genotype"])][: a.n // 2] + \
        [r for r in rows if not ir_first(r["genotype"])][: a.n // 2]
    out: dict[str, Any] = {**environment(device), "benchmark": "layer_context", "table": str(a.table),
                           "resolution": res, "networks": []}
    torch.manual_seed(0)
    t_start = time.perf_counter()
    for i, r in enumerate(pick):
        g = parse_genotype(r["genotype"])
        entries = table.layer_times(g, res)  # stem, blocks..., head, classifier
        model = build_model(g, table.num_classes, input_size=res, dropout=0.0)
        model, x = setup.prepare(model, torch.randn(setup.batch_size, 3, res, res))
        prefixes = [timer.time(nn.Sequential(model.stem, *model.blocks[:k]), x).ms
                    for k in range(len(model.blocks) + 1)]
        whole = timer.time(model, x).ms
        first = first_block_input_state(model, x, timer, torch)
        top = entries[1][0].size
        blocks = [{"layer": layer.key(), "group": group_of(k, layer, top), "entry_ms": round(ms, 5),
                   "in_network_ms": round(prefixes[k + 1] - prefixes[k], 5)}
                  for k, (layer, ms) in enumerate(entries[1:-2])]
        out["networks"].append({"genotype": r["genotype"], "validation_error_pct": float(r["error_pct"]),
                                "measured_ms": whole, "predicted_ms": float(r["predicted_ms"]),
                                "stem_alone_ms": prefixes[0], "stem_entry_ms": entries[0][1],
                                "tail_in_network_ms": whole - prefixes[-1],
                                "tail_entries_ms": entries[-2][1] + entries[-1][1],
                                "first_block_input": first, "blocks": blocks})
        print(f"[{i + 1}/{len(pick)}] {time.perf_counter() - t_start:.0f} s  error {float(r['error_pct']):+.1f} %  "
              f"{r['genotype'][:70]}", flush=True)
    groups: dict[str, list[float]] = {}
    for net in out["networks"]:
        for b in net["blocks"]:
            if b["entry_ms"] > 0:
                groups.setdefault(b["group"], []).append(b["in_network_ms"] / b["entry_ms"])
    out["summary"] = {k: {"n": len(v), "median_ratio": round(statistics.median(v), 3),
                          "p10": round(statistics.quantiles(v, n=10)[0], 3) if len(v) > 1 else None,
                          "p90": round(statistics.quantiles(v, n=10)[-1], 3) if len(v) > 1 else None}
                      for k, v in sorted(groups.items())}
    hot: dict[str, list[float]] = {}
    for net in out["networks"]:
        f = net["first_block_input"]
        if f["untouched_ms"] > 0:
            hot.setdefault(net["blocks"][0]["group"], []).append(f["just_written_ms"] / f["untouched_ms"])
    out["first_block_input_summary"] = {k: {"n": len(v), "median_ratio_just_written_to_untouched":
                                            round(statistics.median(v), 3)} for k, v in sorted(hot.items())}
    print("block time in the network / its table entry (median over blocks):")
    for k, s in out["summary"].items():
        print(f"  {k:36s} n={s['n']:4d}  x{s['median_ratio']:.3f}  (p10 {s['p10']}, p90 {s['p90']})")
    print("first block with its input just written by a copy / untouched since the last replay (median):")
    for k, s in out["first_block_input_summary"].items():
        print(f"  {k:36s} n={s['n']:4d}  x{s['median_ratio_just_written_to_untouched']:.3f}")
    name = a.output or f"layer_context-{src.stem}-r{res}.json"
    write_json(RESULTS / name, out)
    plot(out, RESULTS / Path(name).with_suffix(".png"))


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    blocks = [b for n in out["networks"] for b in n["blocks"] if b["entry_ms"] > 0 and b["in_network_ms"] > 0]
    for grp in sorted({b["group"] for b in blocks}):  # log axes: prefix differences <= 0 (noise) are left out
        pts = [(b["entry_ms"], b["in_network_ms"]) for b in blocks if b["group"] == grp]
        ax.scatter(*zip(*pts, strict=True), s=12, label=f"{grp} ({len(pts)})", alpha=0.8)
    lo = min(min(b["entry_ms"], b["in_network_ms"]) for b in blocks) / 1.2
    hi = max(max(b["entry_ms"], b["in_network_ms"]) for b in blocks) * 1.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("table entry (block timed alone), ms")
    ax.set_ylabel("block inside the network (prefix difference), ms")
    ax.set_title(f"{out['device_name']}: {Path(out['table']).name} at {out['resolution']} px", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"written to {path.with_suffix('.json')} and {path}")


if __name__ == "__main__":
    main()
