"""Do two tables of the same device but different runtimes (or batch sizes) rank the space alike?

Compares the predictions of two latency tables (e.g. PyTorch eager vs onnxruntime on the same CPU, or
batch 1 vs batch 64 on the same GPU, all measured with ``hwnas latency measure``) on the reference networks
and on random networks of the space:
the ratio of their predictions, rank agreement over the whole space, and rank agreement among networks
the first table puts in the same narrow latency band -- which is what a latency-constrained search
compares. No device needed: only the tables' stored measurements and fitted models.

    python benchmarks/runtime_tables.py latency_tables/cpu-epyc-2core-t1-fp32-bs1-r224.json \\
        latency_tables/cpu-epyc-2core-t1-onnxruntime-fp32-bs1-r224.json
    python benchmarks/runtime_tables.py latency_tables/h100-fp16-bs1-r224-32.json \\
        latency_tables/h100-fp16-bs64-r224-32.json -o batch_tables.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import RESULTS, environment, write_json
from scipy.stats import kendalltau, spearmanr

from hwnas.latency.table import LatencyTable, random_genotypes
from hwnas.references import reference

REFERENCES = ("efficientnet-b0", "mobilenetv2", "mnasnet-a1", "mnasnet-b1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", type=Path, help="baseline table")
    p.add_argument("other", type=Path, help="table to compare")
    p.add_argument("-n", type=int, default=2000, help="random networks (default 2000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--band", type=float, default=0.1, help="half-width of the latency band, relative (0.1)")
    p.add_argument("-o", "--output", default="runtime_tables.json")
    a = p.parse_args()
    base, other = (LatencyTable.from_json(t.read_text(), str(t)) for t in (a.base, a.other))
    other.check_space(base.space)
    res = base.resolutions[0]
    other.check_resolution(res)

    refs = {}
    for name in REFERENCES:
        b, o = base.predict(reference(name), res), other.predict(reference(name), res)
        refs[name] = {"base_ms": b, "other_ms": o, "ratio": b / o}
        print(f"{name:16s} {base.describe()}: {b:7.2f} ms   {other.describe()}: {o:6.2f} ms   x{b / o:.2f}")

    gs = random_genotypes(base.space, a.n, a.seed)
    b = np.array([base.predict(g, res) for g in gs])
    o = np.array([other.predict(g, res) for g in gs])
    r = b / o
    centre = float(np.median(b))
    band = (b > centre * (1 - a.band)) & (b < centre * (1 + a.band))
    report = {
        "benchmark": "runtime_tables", **environment("cpu"), "base": str(a.base), "other": str(a.other),
        "resolution": res, "n": a.n, "seed": a.seed, "references": refs,
        "ratio": {"median": float(np.median(r)), "p10": float(np.percentile(r, 10)),
                  "p90": float(np.percentile(r, 90)), "min": float(r.min()), "max": float(r.max())},
        "spearman": float(spearmanr(b, o).statistic), "kendall_tau": float(kendalltau(b, o).statistic),
        "band": {"centre_ms": centre, "half_width": a.band, "n": int(band.sum()),
                 "other_min_ms": float(o[band].min()), "other_max_ms": float(o[band].max()),
                 "spearman": float(spearmanr(b[band], o[band]).statistic)},
    }
    print(f"{a.n} random networks: base/other x{report['ratio']['median']:.2f} median "
          f"(p10 {report['ratio']['p10']:.2f}, p90 {report['ratio']['p90']:.2f}, range "
          f"{report['ratio']['min']:.2f}-{report['ratio']['max']:.2f}); Spearman {report['spearman']:.4f}, "
          f"Kendall {report['kendall_tau']:.4f}")
    bd = report["band"]
    lo, hi = bd["other_min_ms"], bd["other_max_ms"]
    print(f"{bd['n']} networks the base table puts within +-{a.band * 100:.0f}% of {centre:.2f} ms: the other "
          f"table spans {lo:.2f}-{hi:.2f} ms (x{hi / lo:.2f}), Spearman {bd['spearman']:.3f} within the band")
    write_json(RESULTS / a.output, report)
    png = (RESULTS / a.output).with_suffix(".png")
    _plot(b, o, band, base.describe(), other.describe(), report, png)
    print(f"written to {RESULTS / a.output} and {png.name}")


def _plot(b: np.ndarray, o: np.ndarray, band: np.ndarray, base_name: str, other_name: str, report: dict,
          path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    ax.scatter(b[~band], o[~band], s=4, c="0.6", alpha=0.5, label=f"{len(b)} random networks "
               f"(Spearman {report['spearman']:.3f})")
    bd = report["band"]
    ax.scatter(b[band], o[band], s=6, c="tab:red", alpha=0.8,
               label=f"±{bd['half_width'] * 100:.0f} % band of the base table (Spearman {bd['spearman']:.2f})")
    for i, (name, r) in enumerate(report["references"].items()):  # labels stacked: the references sit close
        ax.scatter([r["base_ms"]], [r["other_ms"]], s=30, marker="x", c="k")
        ax.annotate(name, (r["base_ms"], r["other_ms"]), fontsize=7, xytext=(40, -12 - 10 * i),
                    textcoords="offset points", arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.5})
    ax.set(xlabel=f"{base_name}: predicted ms", ylabel=f"{other_name}: predicted ms",
           title=f"Same networks, two tables ({report['resolution']} px)")
    ax.title.set_fontsize(10)
    ax.xaxis.label.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
