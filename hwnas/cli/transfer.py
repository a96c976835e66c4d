"""``hwnas transfer``: EAT-NAS elastic architecture transfer from a source study to a target dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hwnas.cli.common import (
    FLOPS_HELP,
    MAX_COUNT,
    TRAIN_RESOLUTION,
    UsageError,
    check_output_dir,
    int_in,
    non_negative_int,
    open_study,
    positive_float,
)
from hwnas.cli.search import (
    add_search_options,
    build_problem,
    drive,
    evaluators,
    located_study,
    proxy_fingerprint,
    settings_from,
)
from hwnas.space import SpaceError
from hwnas.units import NumberError, integer, number
from hwnas.urls import mask_url

DEFAULT_RECIPE = "transfer-imagenette"
EMBEDDED_TARGET = Path(__file__).resolve().parents[1] / "datasets" / "imagenette-mini.tar.xz"
EMBEDDED_TARGET_NOTE = ("the embedded Imagenette subset (600 train + 200 val real ImageNet images of 10 classes, "
                        "64 px): LOW fidelity, for trying the command; pass --target-data for a real transfer")
STRATEGY = "eat-nas"
MAX_TOURNAMENT = 10_000  # a population's size at most


def transfer_settings(args: argparse.Namespace) -> dict[str, Any]:
    s = settings_from(args, DEFAULT_RECIPE, extra_tables=("transfer",))
    if s["zero_cost"]:  # transfer's elastic search ranks trained candidates
        raise UsageError("transfer trains its candidates: --evaluator zero-cost is for hwnas search")
    t = s.pop("transfer")
    known = {"source_storage", "source_study", "source_trial", "select", "quality_lambda", "tournament", "elements"}
    if set(t) - known:
        raise UsageError(f"recipe {s['recipe']}: unknown key(s) in [transfer]: {', '.join(sorted(set(t) - known))} "
                         f"(known: {', '.join(sorted(known))})")
    for key in ("source_storage", "source_study", "source_trial", "select", "quality_lambda", "tournament"):
        v = getattr(args, key)
        if v is not None:
            t[key] = v
    if args.elements is not None:
        t["elements"] = [e.strip() for e in args.elements.split(",") if e.strip()]
    from hwnas.search.transfer import ELEMENTS, SELECTIONS

    for key in ("source_storage", "source_study"):  # recipe values of the wrong type, before anything opens
        if not isinstance(t.get(key, ""), str):
            raise UsageError(f"[transfer] {key} must be a string, got {t[key]!r}")
    if not isinstance(t.get("elements", []), list) or not all(isinstance(e, str) for e in t.get("elements", [])):
        raise UsageError(f"[transfer] elements must be a list of names ({', '.join(ELEMENTS)}), got "
                         f"{t['elements']!r}")
    if t.get("select", "reward") not in SELECTIONS:
        raise UsageError(f"[transfer] select must be one of {', '.join(SELECTIONS)}, got {t['select']!r}")

    bad = [e for e in t.get("elements", ELEMENTS) if e not in ELEMENTS]
    if bad or not t.get("elements", ELEMENTS):
        raise UsageError(f"unknown transformation element(s) {', '.join(bad) or '(none)'} "
                         f"(choose from {', '.join(ELEMENTS)})")
    if args.target_resolution is not None:
        s["proxy_resolution"] = args.target_resolution
    for key in ("source_storage", "source_study"):
        if not t.get(key):
            raise UsageError(f"--{key.replace('_', '-')} is required (or [transfer] {key} in the recipe)")
    t.setdefault("select", "reward")
    t.setdefault("quality_lambda", 0.5)
    t.setdefault("tournament", 3)
    t.setdefault("elements", ["op", "kernel", "skip", "width", "depth"])
    if t.get("source_trial") in ("", None):  # the recipe's empty string: no trial named
        t.pop("source_trial", None)
    checks = (("source_trial", integer, {"low": 0, "high": MAX_COUNT}),
              ("tournament", integer, {"low": 1, "high": MAX_TOURNAMENT}), ("quality_lambda", number, {"low": 0}))
    for key, convert, bounds in checks:  # recipe values get the checks the flags have
        if t.get(key) is not None:
            try:
                convert(t[key], f"[transfer] {key}", **bounds)
            except NumberError as e:
                raise UsageError(str(e)) from None
    s["transfer"] = t
    s["strategy"] = STRATEGY
    if s.get("dataset") in (None, "", "cifar10") and not s.get("data_dir") and not s.get("benchmark"):
        s["dataset"] = "imagenette"
    return s


def cmd_transfer(args: argparse.Namespace) -> int:
    check_output_dir(args.run_dir, "--run-dir")  # found now, not after loading the data
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from hwnas.search.run import create_search
    from hwnas.search.transfer import EATEvolution, TransferError, select_basic, source_trials

    s = transfer_settings(args)
    t = s["transfer"]
    source = open_study(t["source_storage"], t["source_study"])
    trials = source_trials(source.get_trials(deepcopy=False))
    if t.get("source_trial") is not None:
        trials = [x for x in trials if x.number == int(t["source_trial"])]
        if not trials:
            raise UsageError(f"trial {t['source_trial']} of study {t['source_study']!r} is not a trained, "
                             f"completed trial")
    low_fidelity = not s["data_dir"] and not s["benchmark"]  # a benchmark target looks accuracies up
    if low_fidelity:
        s["data_dir"] = str(EMBEDDED_TARGET)
    problem, data, val_size = build_problem(args, s)
    space = problem.space
    try:
        basic = select_basic(trials, problem, str(t["select"]))
    except TransferError as e:
        raise UsageError(str(e)) from None
    basic_x = space.encode(space.parse(basic.genotype))
    lineage = {"source_storage": mask_url(t["source_storage"]), "source_study": t["source_study"],
               "source_trial": basic.number, "basic_genotype": basic.genotype, "basic_source_acc": basic.acc,
               "select": t["select"], "quality_lambda": float(t["quality_lambda"]),
               "tournament": int(t["tournament"]), "elements": list(t["elements"])}
    fingerprint = {**proxy_fingerprint(s, data), "transfer": lineage}
    acc_index = problem.objectives.index("acc")

    def fitness_of(f: Any) -> float:
        return -float(f[0]) if problem.reward != "pareto" else -float(f[acc_index])

    holder: dict[str, Any] = {}

    def strategy(feasible: Any) -> EATEvolution:
        holder["eat"] = EATEvolution(space, int(s["seed"]), feasible, basic_x, fitness_of, int(s["population"]),
                                     int(t["tournament"]), float(t["quality_lambda"]), t["elements"])
        return holder["eat"]

    with located_study(args, s) as place, evaluators(data, val_size, s) as (evaluate, evaluate_many):
        run_root, study_name, storage = place.run_root, place.study_name, place.storage
        try:
            search = create_search(problem, storage, study_name, STRATEGY, evaluate, seed=int(s["seed"]),
                                   population=int(s["population"]), resume=args.resume, settings=fingerprint,
                                   custom=strategy, evaluate_many=evaluate_many, parallel=int(s["parallel"]))
        except (ValueError, SpaceError) as e:
            raise UsageError(str(e)) from None
        place.created = not args.resume
        search.study.set_user_attr("transfer", lineage)

        def annotate(x: Any) -> dict[str, Any]:
            info = holder["eat"].lineage_attrs(x)
            parent = info.get("parent_genotype")
            if parent is None:
                info |= {"source_study": t["source_study"], "source_trial": basic.number}
            else:
                known = search.cache().get(parent)
                info["parent_trial"] = known.number if known is not None else None
            return {k: v for k, v in info.items() if v is not None}

        search.annotate = annotate
        print(f"hwnas transfer: basic architecture = trial {basic.number} of {t['source_study']} (select "
              f"{t['select']}, source acc {basic.acc:.4f}): {basic.genotype}", file=sys.stderr)
        if low_fidelity:
            print(f"  fidelity: LOW. {EMBEDDED_TARGET_NOTE}", file=sys.stderr)
        status = drive(search, problem, s, data, storage, study_name, run_root, args, what="hwnas transfer")
        _print_lineage(search.study.get_trials(deepcopy=False))
        return status


def _print_lineage(trials: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    done = [x for x in trials if x.state.name == "COMPLETE" and x.user_attrs.get("trained")]
    if not done:
        return
    table = Table(title="lineage (trained trials)")
    for col in ("trial", "acc", "FLOPs (M)", "parent", "transformation", "quality"):
        table.add_column(col, justify="right" if col not in ("transformation",) else "left")
    for x in done:
        a = x.user_attrs
        parent = f"source {a['source_trial']}" if "source_trial" in a else str(a.get("parent_trial", "-"))
        q = a.get("population_quality")
        fl = f"{a['flops'] / 1e6:.1f}" if a.get("flops") is not None else "-"
        table.add_row(str(x.number), f"{a['acc']:.4f}", fl, parent,
                      str(a.get("transformation", "-")), f"{q:.4f}" if q is not None else "-")
    Console(stderr=True).print(table)


def register(sub: Any) -> None:
    p = sub.add_parser("transfer", help="EAT-NAS transfer of a CIFAR-10 study to an ImageNet-style dataset",
                       description="Seed a search on a target dataset from a source study's basic architecture "
                       "(EAT-NAS): offspring over op, kernel, skip, width and depth; parents chosen by population "
                       "quality. Costs are priced at --resolution (default 224). " + FLOPS_HELP + ".")
    p.add_argument("--recipe", help=f"recipe file or shipped name (default {DEFAULT_RECIPE})")
    p.add_argument("--source-storage", help="Optuna storage URL of the source (e.g. CIFAR-10) study")
    p.add_argument("--source-study", help="name of the source study")
    p.add_argument("--source-trial", type=non_negative_int, default=None,
                   help="use this trial as the basic architecture")
    p.add_argument("--select", choices=["reward", "knee", "acc"], default=None,
                   help="how to pick the basic architecture (default reward: ACC x (cost/target)^-0.07)")
    p.add_argument("--target-data", dest="data_dir", default=None,
                   help="target ImageFolder folder or archive (train/ + val/ or test/); default: embedded subset")
    p.add_argument("--target-resolution", type=TRAIN_RESOLUTION, default=None,
                   help="resolution the target proxy trains at (default: the target images' own)")
    p.add_argument("--quality-lambda", type=positive_float, default=None,
                   help="population quality Q = mean - lambda x std of fitness; only members >= Q reproduce")
    p.add_argument("--tournament", type=int_in(1, MAX_TOURNAMENT), default=None,
                   help=f"parents drawn per tournament (at most {MAX_TOURNAMENT})")
    p.add_argument("--elements", default=None, help="comma list of op,kernel,skip,width,depth to transform")
    add_search_options(p, (STRATEGY,), data_help="the same as --target-data")
    p.set_defaults(func=cmd_transfer)
