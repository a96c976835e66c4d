"""``hwnas export``: ONNX (+ JSON sidecar) of an architecture, a trained checkpoint, or a study's winners."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hwnas.cli.common import (
    CLASSES,
    FLOPS_HELP,
    RESOLUTION,
    RUNS,
    UsageError,
    check_output_file,
    dumps_strict,
    load_arch,
    load_torch_file,
    non_negative_int,
    open_study,
)
from hwnas.genotype import Genotype, GenotypeError
from hwnas.references import REFERENCE_NAMES
from hwnas.units import is_integer, is_number, shown
from hwnas.urls import mask_url
from hwnas.walker import SMALL_INPUT_MAX, stem_stride_for


def onnx_target(arg: str) -> Path:
    """A single-file target: ``NAME.onnx``, not an existing directory, its parent not a file."""
    p = Path(arg)
    if p.suffix.lower() != ".onnx":
        raise UsageError(f"output {arg} must end in .onnx (the sidecar goes next to it as .json)")
    check_output_file(p.with_suffix(".json"), "sidecar")
    return check_output_file(p)


def export_dir(arg: str) -> Path:
    """A directory target: created if missing; an existing file (or a file on the way) is an error."""
    p = Path(arg)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise UsageError(f"export directory {arg} is not a directory ({q} is a file)")
    return p


def load_table_arg(arg: str | None) -> Any:
    if not arg:
        return None
    from hwnas.cli.latency import load_table

    return load_table(arg)


def load_checkpoint(path: str) -> dict[str, Any]:
    ckpt = load_torch_file(path)  # a missing file is said before torch loads (seconds)
    import torch

    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UsageError(f"{path} is not an hwnas checkpoint (no state_dict; write one with hwnas train -o)")

    checks: dict[str, tuple[Any, str]] = {  # what export reads, as hwnas train writes it (None: not recorded)
        "state_dict": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                               for k, t in v.items()), "a mapping name -> tensor"),
        "genotype": (lambda v: isinstance(v, dict), "a genotype object"),
        "num_classes": (lambda v: is_integer(v, low=1, high=1 << 20), "a positive integer (at most 1048576)"),
        "input_size": (lambda v: is_integer(v, low=1, high=8192), "a positive integer (at most 8192)"),
        "metrics": (lambda v: isinstance(v, dict) and (v.get("val_acc") is None or is_number(v["val_acc"], low=0,
                                                                                             high=1)),
                    "an object with a numeric val_acc (in [0, 1])"),
        "dataset": (lambda v: isinstance(v, str), "a string"),
    }
    for key, (ok, what) in checks.items():
        if ckpt.get(key) is not None and not ok(ckpt[key]):
            raise UsageError(f"checkpoint {path}: {key} must be {what}, got {type(ckpt[key]).__name__} "
                             f"{shown(ckpt[key]) if isinstance(ckpt[key], int) else repr(str(ckpt[key])[:40])}")
    return ckpt


def _report(sidecar: dict[str, Any], path: Path) -> str:
    par = sidecar["parity"]
    parts = [f"{path}: checker passed, parity max rel error {par['max_rel_error']:.2e} "
             f"({'ok' if par['ok'] else 'FAILED'}, tolerance {par['tolerance']:g})"]
    m = sidecar.get("measured_latency")
    if m:
        parts.append(f"bs1 latency: onnxruntime {m['onnxruntime']['provider'].removesuffix('ExecutionProvider')} "
                     f"{m['onnxruntime']['median_ms']:.2f} ms, PyTorch CPU {m['torch_cpu']['median_ms']:.2f} ms")
    p = sidecar.get("predicted_latency")
    if p:
        parts.append(f"predicted {p['ms']:.3f} ms" if p["ms"] is not None else f"predicted: n/a ({p['reason']})")
    parts.append(f"{sidecar['flops'] / 1e6:.1f}M multiply-adds at {sidecar['resolution']} px, "
                 f"{sidecar['params'] / 1e6:.2f}M params")
    return "; ".join(parts)


def _export(g: Genotype, path: Path, resolution: int, num_classes: int, args: argparse.Namespace, table: Any,
            **kw: Any) -> dict[str, Any]:
    from hwnas.export import ExportError, export_genotype

    if not args.no_latency:  # PyTorch CPU is timed as the latency tables time it
        from hwnas.cli.latency import apply_host_allocator

        kw["info"] = {**(kw.get("info") or {}), **apply_host_allocator("cpu")}
    try:
        return export_genotype(g, path, resolution, num_classes, table=table, runs=args.runs,
                               measure=not args.no_latency, **kw)
    except ExportError as e:
        raise UsageError(str(e)) from None


def _finish(results: list[tuple[Path, dict[str, Any]]], as_json: bool) -> int:
    for path, s in results:
        print(_report(s, path), file=sys.stderr)
    if as_json:
        print(dumps_strict([s for _, s in results] if len(results) != 1 else results[0][1], indent=2))
    bad = [str(p) for p, s in results if not s["parity"]["ok"]]
    if bad:
        print(f"hwnas: parity check failed (max rel error > {results[0][1]['parity']['tolerance']:g}) for: "
              f"{', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


# ---- study winners --------------------------------------------------------------------------------
def trial_accuracy(t: Any) -> float | None:
    """The proxy accuracy a trial measured (or reused from an identical trained one), else None."""
    a = t.user_attrs
    if t.state.name != "COMPLETE" or not a.get("feasible") or a.get("acc") is None:
        return None
    return float(a["acc"]) if a.get("trained") or "cached_from" in a else None


def study_winners(study: Any, trial: int | None) -> list[Any]:
    """The trial numbered ``trial``, or every Pareto-optimal (``study.best_trials``) feasible trial with a
    genotype, one per distinct genotype (the lowest trial number)."""
    trials = study.get_trials(deepcopy=False)
    if trial is not None:
        found = [t for t in trials if t.number == trial]
        if not found:
            raise UsageError(f"no trial {trial} in study {study.study_name!r} (trials 0..{len(trials) - 1})")
        t = found[0]
        if "genotype" not in t.user_attrs:
            raise UsageError(f"trial {trial} of study {study.study_name!r} has no genotype (state {t.state.name})")
        return [t]
    seen: dict[str, Any] = {}
    for t in sorted(study.best_trials, key=lambda t: t.number):
        g = t.user_attrs.get("genotype")
        if g and t.user_attrs.get("feasible") and g not in seen:
            seen[g] = t
    if not seen:
        raise UsageError(f"study {study.study_name!r} has no completed feasible trials to export")
    return list(seen.values())


def cmd_export_study(args: argparse.Namespace, table: Any) -> int:
    if args.arch or args.weights:
        raise UsageError("--storage exports a study's trials: drop ARCH and --weights")
    if args.trial is None and not args.pareto:
        raise UsageError("with --storage, pass --trial N or --pareto")
    if not args.study_name:
        raise UsageError("with --storage, pass --study-name")
    out_dir = export_dir(args.output)
    study = open_study(args.storage, args.study_name)
    problem = (study.user_attrs.get("hwnas") or {}).get("problem") or {}
    resolution = args.resolution or int(problem.get("resolution", 224))
    num_classes = args.num_classes or int(problem.get("num_classes", 1000))
    results = []
    for t in study_winners(study, args.trial):
        g = Genotype.from_string(t.user_attrs["genotype"])
        info = {"source": {"storage": mask_url(args.storage), "study": args.study_name, "trial": t.number,
                           "objectives": dict(zip(problem.get("objectives", []), t.values or [], strict=False))},
                "accuracy": trial_accuracy(t), "accuracy_note": "proxy accuracy of the search (validation split)"}
        path = out_dir / f"trial-{t.number}.onnx"
        results.append((path, _export(g, path, resolution, num_classes, args, table, info=info)))
    return _finish(results, args.json)


# ---- one architecture -----------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    table = load_table_arg(args.table)
    if args.storage:
        return cmd_export_study(args, table)
    if args.trial is not None or args.pareto or args.study_name:
        raise UsageError("--trial, --pareto and --study-name need --storage")
    if not args.arch and not args.weights:
        raise UsageError("give ARCH (reference, genotype string or JSON file), --weights CKPT, or --storage")
    path = onnx_target(args.output)
    ckpt = load_checkpoint(args.weights) if args.weights else None
    name, g = load_arch(args.arch) if args.arch else ("checkpoint", None)
    info: dict[str, Any] = {"source": {"arch": name}}
    num_classes, resolution = args.num_classes or 1000, args.resolution or 224
    state_dict = None
    if ckpt is not None:
        try:
            ck_g = Genotype.from_dict(ckpt["genotype"]) if "genotype" in ckpt else None
        except GenotypeError as e:
            raise UsageError(f"checkpoint {args.weights}: {e}") from None
        if g is None:
            if ck_g is None:
                raise UsageError(f"checkpoint {args.weights} carries no genotype: pass ARCH")
            g = ck_g
        elif ck_g is not None and ck_g.normalized() != g.normalized():
            raise UsageError(f"checkpoint {args.weights} holds {ck_g.to_string()}, not ARCH {g.to_string()}")
        elif ck_g is None:
            print(f"hwnas: warning: checkpoint {args.weights} carries no genotype: its weights are matched to ARCH "
                  "by parameter names and shapes only (activation and skips cannot be checked)", file=sys.stderr)
        ck_classes = ckpt.get("num_classes")
        if args.num_classes and ck_classes and args.num_classes != ck_classes:
            raise UsageError(f"--num-classes {args.num_classes} but checkpoint {args.weights} has {ck_classes}")
        num_classes = int(ck_classes or num_classes)
        trained_at = ckpt.get("input_size")
        resolution = args.resolution or int(trained_at or 224)
        if trained_at and stem_stride_for(resolution) != stem_stride_for(int(trained_at)):
            raise UsageError(f"checkpoint {args.weights} was trained at {trained_at} px (stem stride "
                             f"{stem_stride_for(int(trained_at))}); at {resolution} px the stem strides "
                             f"{stem_stride_for(resolution)}: another network, which these weights were not trained "
                             f"for (small inputs <= {SMALL_INPUT_MAX} px keep stride 1)")
        state_dict = ckpt["state_dict"]
        metrics = ckpt.get("metrics") or {}
        info = {"source": {"arch": name, "checkpoint": str(args.weights), "dataset": ckpt.get("dataset")},
                "accuracy": metrics.get("val_acc"), "accuracy_note": "held-out accuracy recorded by hwnas train"}
    assert g is not None
    s = _export(g, path, resolution, num_classes, args, table, state_dict=state_dict, info=info)
    return _finish([(path, s)], args.json)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export an architecture (or a study's winners) to ONNX, checked",
        description="Export ARCH (or --weights CKPT, or --storage/--study-name winners) to ONNX opset 17 with a "
        "dynamic batch axis (input 'input', output 'logits'), then check it: onnx.checker, onnxruntime vs PyTorch "
        "parity on random inputs (max relative error = max|ort - torch| / max|torch| must be <= 1e-4, else exit 1) "
        "and batch-1 latency (onnxruntime, PyTorch CPU). A sidecar NAME.json holds genotype, resolution, FLOPs, "
        f"params, latencies and accuracy if known. {FLOPS_HELP}.")
    p.add_argument("arch", metavar="ARCH", nargs="?",
                   help=f"a reference ({', '.join(REFERENCE_NAMES)}), a genotype string or a JSON file; optional with "
                   "--weights (taken from the checkpoint)")
    p.add_argument("-o", "--output", required=True,
                   help="NAME.onnx (sidecar NAME.json); with --storage, a directory for trial-N.onnx files")
    p.add_argument("--resolution", type=RESOLUTION, default=None,
                   help="input size in pixels (default 224; the checkpoint's or study's when exporting those)")
    p.add_argument("--num-classes", type=CLASSES, default=None,
                   help="classifier outputs (default 1000; the checkpoint's or study's when exporting those)")
    p.add_argument("--weights", metavar="CKPT", help="a checkpoint written by hwnas train -o (its genotype must "
                   "match ARCH)")
    p.add_argument("--storage", help="Optuna storage URL of a search (e.g. sqlite:///search/runs/NAME.db)")
    p.add_argument("--study-name", help="the study in --storage")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--trial", type=non_negative_int, default=None, help="export this trial number")
    w.add_argument("--pareto", action="store_true", help="export every Pareto-optimal feasible trial")
    p.add_argument("--table", help="latency table (file or shipped name) for the predicted latency in the sidecar")
    p.add_argument("--runs", type=RUNS, default=20, help="timed runs per latency figure (default 20, "
                   "fewer after 3 s)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print the sidecar(s) on stdout")
    p.set_defaults(func=cmd_export)
