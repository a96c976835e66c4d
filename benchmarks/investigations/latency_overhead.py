"""Which network-level model turns the sum of a table's per-layer entries into the best latency prediction?

Uses only measurements already in the repository: each table's calibration networks (end-to-end times stored
in the table, what ``hwnas latency`` fits its overhead term on) and the networks of its validation reports
(``NAME.validation.csv``, ``NAME.validation-r32.csv``: measured end to end by ``hwnas latency validate``,
never used for fitting). Every model is fitted on the calibration networks by relative least squares (as
``LatencyTable.fit_overhead``) and scored on the validation networks; leave-one-out error on the calibration
networks is printed beside it, since that is all a model could be chosen by without a validation set.
The shipped model's errors are also split by the network's first block (an expanded inverted residual or
not), on both sets: where the batch-1 H100 table goes wrong (see ``layer_context.py``).

    python benchmarks/investigations/latency_overhead.py latency_tables/h100-fp16-bs1-r224-32.json

Models (per resolution; S = sum of entries, n = number of layers, _kind = restricted to ir / ds layers):
  naive            S
  shipped          a + b S + c n                 (what hwnas predicts with)
  per-op           a + b_ir S_ir + b_ds S_ds + b_o S_other + c_ir n_ir + c_ds n_ds
  per-op-size      a + sum over (op, input size) of b S + c n, ridge-shrunk towards the shipped model
  activation       shipped + c_act n for swish and relu6 networks
  early-expanded   shipped + b_e S_e, S_e over expanded inverted residuals at >= half the input size
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py, one folder up
from _common import RESULTS, write_json

from hwnas.genotype import parse_genotype
from hwnas.latency.table import LatencyTable, error_stats
from hwnas.walker import Layer

Features = Callable[[list[tuple[Layer, float]], str], dict[str, float]]


def shipped(layers: list[tuple[Layer, float]], act: str) -> dict[str, float]:
    return {"S": sum(ms for _, ms in layers), "n": float(len(layers))}


def per_op(layers: list[tuple[Layer, float]], act: str) -> dict[str, float]:
    f: dict[str, float] = {}
    for L, ms in layers:
        op = L.kind if L.kind in ("ir", "ds") else "other"
        f[f"S_{op}"] = f.get(f"S_{op}", 0.0) + ms
        if op != "other":
            f[f"n_{op}"] = f.get(f"n_{op}", 0.0) + 1
    return f


def per_op_size(layers: list[tuple[Layer, float]], act: str) -> dict[str, float]:
    f = shipped(layers, act)
    for L, ms in layers:
        if L.kind in ("ir", "ds"):
            f[f"S_{L.kind}{L.size}"] = f.get(f"S_{L.kind}{L.size}", 0.0) + ms
            f[f"n_{L.kind}{L.size}"] = f.get(f"n_{L.kind}{L.size}", 0.0) + 1
    return f


def activation(layers: list[tuple[Layer, float]], act: str) -> dict[str, float]:
    f = shipped(layers, act)
    f["n_swish"], f["n_relu6"] = f["n"] * (act == "swish"), f["n"] * (act == "relu6")
    return f


def early_expanded(layers: list[tuple[Layer, float]], act: str) -> dict[str, float]:
    """shipped + a slope of its own for expanded inverted residuals at >= half the input size (112x112 and
    up at 224 px: the blocks the batch-1 H100 table under-predicts)."""
    f = shipped(layers, act)
    res = layers[0][0].size
    f["S_early_ir"] = sum(ms for L, ms in layers if L.kind == "ir" and L.expansion > 1 and 2 * L.size >= res)
    return f


MODELS: dict[str, tuple[Features, float]] = {  # name -> (features, ridge strength on non-shipped terms)
    "shipped": (shipped, 0.0), "per-op": (per_op, 0.0), "per-op-size": (per_op_size, 1e-2),
    "activation": (activation, 0.0), "early-expanded": (early_expanded, 0.0)}


def fit(x: np.ndarray, y: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    xw = x / y[:, None]
    return np.linalg.lstsq(xw.T @ xw + np.diag(ridge), xw.sum(0), rcond=None)[0]


def score(table: LatencyTable, cal: list[tuple[str, float]], val: list[tuple[str, float]],
          res: int) -> dict[str, Any]:
    def layers(g: str) -> tuple[list[tuple[Layer, float]], str]:
        gt = parse_genotype(g)
        return table.layer_times(gt, res), gt.activation

    cal_l = [layers(g) for g, _ in cal]
    val_l = [layers(g) for g, _ in val]
    yc, yv = np.array([y for _, y in cal]), np.array([y for _, y in val])
    out: dict[str, Any] = {"n_calibration": len(cal), "n_validation": len(val),
                           "naive": error_stats([sum(ms for _, ms in ls) for ls, _ in val_l], yv)}
    for name, (feats, lam) in MODELS.items():
        fc = [feats(ls, a) for ls, a in cal_l]
        cols = ["1", *sorted({k for f in fc for k in f})]
        xc = np.array([[1.0] + [f.get(c, 0.0) for c in cols[1:]] for f in fc])
        xv = np.array([[1.0] + [feats(ls, a).get(c, 0.0) for c in cols[1:]] for ls, a in val_l])
        ridge = np.array([0.0 if c in ("1", "S", "n") else lam for c in cols])
        loo = [xc[i] @ fit(np.delete(xc, i, 0), np.delete(yc, i), ridge) for i in range(len(yc))]
        coef = fit(xc, yc, ridge)
        out[name] = {"parameters": len(cols), "calibration_loo_mape": error_stats(loo, yc)["mape"],
                     **error_stats(xv @ coef, yv)}
        if name == "shipped":  # where its errors are: by the first block (after the stem)
            out["shipped_by_first_block"] = {
                split: {kind: by_first_block(ls_, xs @ coef, ys, kind) for kind in ("expanded ir", "other")}
                for split, ls_, xs, ys in (("calibration", cal_l, xc, yc), ("validation", val_l, xv, yv))}
    return out


def by_first_block(nets: list[tuple[list[tuple[Layer, float]], str]], pred: np.ndarray, y: np.ndarray,
                   kind: str) -> dict[str, float]:
    first = np.array([ls[1][0].kind == "ir" and ls[1][0].expansion > 1 for ls, _ in nets])
    sel = first if kind == "expanded ir" else ~first
    err = (pred[sel] - y[sel]) / y[sel] * 100
    return {"n": int(sel.sum()), "mean_error_pct": round(float(err.mean()), 2) if sel.any() else float("nan"),
            "mape": round(float(np.abs(err).mean()), 2) if sel.any() else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path)
    p.add_argument("-o", "--output", default="latency_overhead.json")
    a = p.parse_args()
    report: dict[str, Any] = {"benchmark": "latency_overhead",
                              "command": "python benchmarks/investigations/latency_overhead.py "
                              + " ".join(map(str, a.tables)), "tables": {}}
    for path in a.tables:
        table = LatencyTable.from_json(path.read_text(), str(path))
        for res in table.resolutions:
            rep = path.with_name(path.stem + (".validation.csv" if res == 224 else f".validation-r{res}.csv"))
            if not rep.exists():
                continue
            cal = [(r["genotype"], float(r["ms"])) for r in table.calibration if int(r["resolution"]) == res]
            with rep.open() as fh:
                val = [(r["genotype"], float(r["measured_ms"])) for r in csv.DictReader(fh)]
            got = score(table, cal, val, res)
            report["tables"][f"{path.name}@{res}"] = got
            print(f"{path.name} at {res}: {len(cal)} calibration, {len(val)} validation networks")
            for name in ["naive", *MODELS]:
                s = got[name]
                loo = f"LOO {s['calibration_loo_mape']:.2f}%" if "calibration_loo_mape" in s else ""
                print(f"  {name:14s} {loo:>11s}  validation MAPE {s['mape']:.2f}%  max {s['max_error']:.1f}%  "
                      f"within 5% {s['within_5pct']:.0f}%  Spearman {s['spearman']:.4f}")
            for split, d in got["shipped_by_first_block"].items():
                print(f"  shipped, {split}, by first block: " + "; ".join(
                    f"{k}: n={v['n']} mean error {v['mean_error_pct']:+.2f}% MAPE {v['mape']:.2f}%"
                    for k, v in d.items()))
    write_json(RESULTS / a.output, report)
    print(f"written to {RESULTS / a.output}")


if __name__ == "__main__":
    main()
