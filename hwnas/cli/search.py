"""``hwnas search``: the main job."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.cli.common import (
    BATCH_SIZE,
    EPOCHS,
    FLOPS_HELP,
    LR,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_LR,
    MAX_SECONDS,
    MAX_TRIALS,
    PARALLEL,
    POPULATION,
    PROCESSES,
    RESOLUTION,
    SEED,
    TRIALS,
    UsageError,
    check_output_dir,
    check_sqlite_study_file,
    first_line,
    load_recipe,
    positive_float_at_most,
    recipe_table,
    shipped_dir,
    val_size_of,
)
from hwnas.cli.train import EMBEDDED_NOTE
from hwnas.compound import MAX_MULTIPLIER
from hwnas.spaces import SPACE_KINDS, SpaceError, get_space
from hwnas.units import NumberError, integer, number, parse_count, parse_ms, parse_seconds, shown
from hwnas.urls import hide_secrets, mask_url, sqlite_path

DEFAULT_RECIPE = "cifar10-400m"
OUTPUT_RESERVE_S = 10.0  # of a time limit, kept for writing the outputs and plots (about 4 s on 2 cores)
PARALLEL_CUDA = 4  # proposals trained together on CUDA (the evaluator's lock-step group, at most 4)
ZERO_COST_REFERENCE = 32  # random architectures of the space that normalise a zero-cost objective


RECIPE_KEYS = {  # every key a recipe's tables may hold ([space] is checked by SearchSpace, [transfer] by transfer)
    "search": {"name", "strategy", "seed", "objectives", "reward", "resolution", "table", "budget_flops",
               "budget_latency", "budget_params", "benchmark", "seed_mode", "evaluator", "prefilter", "prefilter_keep",
               "description"},
    "data": {"dataset", "data_dir", "val_fraction"},
    "profile": {"trials", "population", "epochs", "batch_size", "lr", "proxy_width", "proxy_resolution",
                "time_limit"},
}


def recipes_dir() -> Path:
    return shipped_dir("hwnas.recipes", "search")


def find_recipe(arg: str | None) -> Path:
    name = arg or DEFAULT_RECIPE
    p = Path(name)
    if p.is_file():
        return p
    if p.is_dir():
        raise UsageError(f"recipe {name} is a directory, not a TOML file")
    for cand in (recipes_dir() / name, recipes_dir() / f"{name}.toml"):
        if cand.is_file():
            return cand
    shipped = sorted(x.stem for x in recipes_dir().glob("*.toml"))
    raise UsageError(f"recipe not found: {name} (shipped: {', '.join(shipped)})")


def _get(d: dict[str, Any], section: str, key: str, default: Any = None) -> Any:
    """``[section] key`` of a recipe whose tables ``settings_from`` has checked are tables."""
    return d.get(section, {}).get(key, default)


def settings_from(args: argparse.Namespace, default_recipe: str = DEFAULT_RECIPE,
                  extra_tables: tuple[str, ...] = ()) -> dict[str, Any]:
    """Recipe values overridden by flags: one flat dict of every setting of the run (``extra_tables``:
    further recipe tables the command reads, returned as they are under their names)."""
    benchmark_run = getattr(args, "benchmark", None) or getattr(args, "space", None) not in (None, "mbconv")
    if args.recipe is None and benchmark_run:  # the default recipe is the MBConv proxy-training one: not used
        recipe_path, r = Path("(none)"), {}
    else:
        recipe_path = find_recipe(args.recipe or default_recipe)
        r = load_recipe(str(recipe_path))
    known = {"search", "data", "profile", "space", "controller", *extra_tables}
    unknown = sorted(set(r) - known)
    if unknown:
        raise UsageError(f"recipe {recipe_path}: unknown table(s) [{'], ['.join(unknown)}]")
    for t in ("search", "data", "profile", "space", "controller", *extra_tables):  # `profile = 0` too: said
        recipe_table(r, recipe_path, t)
    for k in recipe_table(r, recipe_path, "profile"):
        recipe_table(r, recipe_path, "profile", k)
    tables = {"search": recipe_table(r, recipe_path, "search"), "data": recipe_table(r, recipe_path, "data"),
              **{f"profile.{k}": v for k, v in recipe_table(r, recipe_path, "profile").items()}}
    for table, d in tables.items():  # a misspelt key (budget_flop, epoch) would be silently left out
        allowed = RECIPE_KEYS.get(table.split(".")[0] if table.startswith("profile.") else table, set())
        if table.startswith("profile.") and table not in ("profile.gpu", "profile.cpu"):
            raise UsageError(f"recipe {recipe_path}: unknown table [{table}] (profiles: [profile.gpu], "
                             "[profile.cpu])")
        bad = sorted(set(d) - allowed)
        if bad:
            raise UsageError(f"recipe {recipe_path}: unknown key(s) in [{table}]: {', '.join(bad)} (known: "
                             f"{', '.join(sorted(allowed))})")
    parsers = (("flops", parse_count), ("latency", parse_ms), ("params", parse_count))
    try:  # before torch loads to look for CUDA (seconds): bad budgets fail at once
        budgets = {k: parse(str(v)) for k, parse in parsers
                   if (v := _get(r, "search", f"budget_{k}")) not in (None, "")}
        cli_budgets = {k: parse(v) for k, parse in parsers if (v := getattr(args, f"budget_{k}")) is not None}
    except ValueError as e:
        raise UsageError(str(e)) from None
    benchmark = getattr(args, "benchmark", None) or _get(r, "search", "benchmark") or None
    device = args.device
    if benchmark and device == "auto":  # nothing is trained: no need to look for CUDA
        device = "cpu"
    if device == "auto":
        from hwnas.cli.train import _has_cuda

        device = "cuda" if _has_cuda() else "cpu"
    profile = dict(_get(r, "profile", "gpu" if device == "cuda" and not benchmark else "cpu", {}) or {})
    s: dict[str, Any] = {
        "recipe": str(recipe_path), "name": _get(r, "search", "name", recipe_path.stem),
        "strategy": _get(r, "search", "strategy", "nsga2"), "seed": _get(r, "search", "seed", 0),
        "objectives": _get(r, "search", "objectives", ["acc", "flops"]),
        "reward": _get(r, "search", "reward", "pareto"), "resolution": _get(r, "search", "resolution"),
        "benchmark": benchmark, "seed_mode": _get(r, "search", "seed_mode", "mean"),
        "evaluator": _get(r, "search", "evaluator", "train"), "prefilter": _get(r, "search", "prefilter") or None,
        "prefilter_keep": _get(r, "search", "prefilter_keep", 0.25),
        "table": _get(r, "search", "table") or None, "device": device,
        "dataset": _get(r, "data", "dataset", "cifar10"), "data_dir": _get(r, "data", "data_dir") or None,
        "val_fraction": _get(r, "data", "val_fraction", 0.2),
        "trials": profile.get("trials", 20), "population": profile.get("population", 10),
        "epochs": profile.get("epochs", 2.0), "batch_size": profile.get("batch_size", 128),
        "lr": profile.get("lr", 0.2),
        "proxy_width": profile.get("proxy_width", 1.0), "proxy_resolution": profile.get("proxy_resolution"),
        "time_limit": profile.get("time_limit"), "eval_processes": args.eval_processes,
        "parallel": args.parallel or (PARALLEL_CUDA if device == "cuda" else 1) * args.eval_processes,
    }
    if cli_budgets:  # budgets on the command line replace the recipe's, and are what gets optimised
        budgets = cli_budgets
        if args.objectives is None:
            s["objectives"] = ["acc", *[k for k in ("latency", "flops", "params") if k in cli_budgets]]
    s["budgets"] = budgets
    for flag in ("strategy", "seed", "reward", "trials", "population", "epochs", "batch_size", "lr", "table",
                 "data_dir", "dataset", "resolution", "seed_mode", "time_limit", "evaluator", "prefilter",
                 "prefilter_keep"):
        v = getattr(args, flag, None)
        if v is not None:
            s[flag] = v
    s["controller"] = _controller_settings(recipe_table(r, recipe_path, "controller"), recipe_path)
    s["explicit"] = []
    if args.objectives is not None:
        s["objectives"] = [o.strip() for o in args.objectives.split(",") if o.strip()]
    if args.objectives is not None or _get(r, "search", "objectives") is not None or cli_budgets:
        s["explicit"].append("objectives")
    _check_settings(s, recipe_path)
    space_table = recipe_table(r, recipe_path, "space")
    s["space"] = {k: v for k, v in space_table.items() if k != "kind"} or None
    s["space_kind"] = getattr(args, "space", None) or space_table.get("kind")
    if s["space_kind"] is not None and s["space_kind"] not in SPACE_KINDS:
        raise UsageError(f"unknown space {s['space_kind']!r} (choose from {', '.join(SPACE_KINDS)})")
    if s["benchmark"]:
        from hwnas.evaluators.tabular import BenchmarkError, spec

        try:
            bspec = spec(str(s["benchmark"]))
        except BenchmarkError as e:
            raise UsageError(str(e)) from None
        if s["space_kind"] not in (None, bspec.space):
            raise UsageError(f"benchmark {s['benchmark']} is over the {bspec.space} space, not {s['space_kind']}")
        s["space_kind"] = bspec.space
        if s["seed_mode"] == "random" and s["benchmark"] != "macro":
            raise UsageError(f"--seed-mode random draws one of NAS-Bench-Macro's 3 seeds; {s['benchmark']} "
                             "publishes one result per architecture")
        if s["data_dir"] and s["strategy"] not in ("darts", "gdas"):  # they train their search network on images
            raise UsageError("--data-dir trains candidates; a --benchmark looks their accuracy up (give one)")
    s["space_kind"] = s["space_kind"] or "mbconv"
    if s["space_kind"] not in ("mbconv", "darts") and s["space"]:
        raise UsageError(f"recipe {recipe_path}: the {s['space_kind']} space takes no [space] settings "
                         f"(got {', '.join(sorted(s['space']))})")
    s["zero_cost"] = _zero_cost_proxies(s, recipe_path)
    if s["space_kind"] == "transnas-micro" and not s["benchmark"]:
        raise UsageError("the transnas-micro space's networks differ per task and hwnas builds none: search it with "
                         "--benchmark transnas:TASK")
    if s["space_kind"] not in ("mbconv", "macro") and float(s["proxy_width"]) != 1.0 and s["evaluator"] == "train":
        raise UsageError(f"proxy_width scales MBConv genotypes; the {s['space_kind']} space's proxies train at "
                         "full width (set its channels in [space] instead, or proxy_width = 1.0)")
    if str(recipe_path) == "(none)":  # no recipe (a benchmark, another space): named after what it searches
        s["name"] = str(s["benchmark"] or s["space_kind"]).replace(":", "-") + ("-zero-cost" if s["zero_cost"] else "")
    for t in extra_tables:
        s[t] = dict(recipe_table(r, recipe_path, t))
    return s


def _controller_settings(table: dict[str, Any], recipe: Path) -> dict[str, Any]:
    """The recipe's ``[controller]`` table (settings of the reinforce strategies), checked."""
    from hwnas.search.rl import ControllerSettings

    known = ControllerSettings().to_dict()
    bad = sorted(set(table) - set(known))
    if bad:
        raise UsageError(f"recipe {recipe}: unknown key(s) in [controller]: {', '.join(bad)} (known: "
                         f"{', '.join(known)})")
    try:
        ControllerSettings(**table).check()
    except ValueError as e:
        raise UsageError(f"recipe {recipe}: {e}") from None
    return dict(table)


def _proxies_named(text: str, what: str) -> tuple[str, ...]:
    """``zico`` / ``synflow,jacov`` / ``vote`` (synflow, jacov, snip) as proxy names, or one line naming the fault."""
    from hwnas.evaluators.zero_cost import VOTE_DEFAULT, ZeroCostError, parse_proxies

    if text.strip() == "all":
        raise UsageError(f"{what} {text[:80]!r}: name the proxies to vote with (e.g. vote, or zico,synflow)")
    try:
        return VOTE_DEFAULT if text.strip() == "vote" else parse_proxies(text)
    except ZeroCostError as e:
        raise UsageError(f"{what} {text[:80]!r}: {e}") from None


def _zero_cost_proxies(s: dict[str, Any], recipe: Path) -> tuple[str, ...]:
    """The proxies of ``evaluator = "zero-cost:..."``; () for training. Also checks ``prefilter`` and
    ``prefilter_keep`` (``s["prefilter_proxies"]``)."""
    from hwnas.evaluators.zero_cost import PROXIES

    ev, pf, keep = s["evaluator"], s["prefilter"], s["prefilter_keep"]
    s["supernet"] = None
    if not isinstance(ev, str) or not (ev == "train" or ev.startswith(("zero-cost:", "supernet:"))):
        raise UsageError(f"recipe {recipe}: evaluator must be train, zero-cost:PROXY[,PROXY...] (proxies "
                         f"{', '.join(PROXIES)}, or vote) or supernet:PATH, got "
                         f"{shown(ev) if not isinstance(ev, str) else ev[:80]!r}")
    if not isinstance(pf, str | None):
        raise UsageError(f"recipe {recipe}: prefilter must be a proxy name (or names, or vote), got {shown(pf)}")
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not 0 < keep <= 1:
        raise UsageError(f"recipe {recipe}: prefilter_keep must be a fraction in (0, 1], got "
                         f"{shown(keep) if isinstance(keep, int | float | None) else repr(keep)[:80]}")
    s["prefilter_proxies"] = _proxies_named(pf, "prefilter") if pf else ()
    if ev.startswith("supernet:"):
        s["supernet"] = ev.removeprefix("supernet:")
        if not s["supernet"]:
            raise UsageError("--evaluator supernet:PATH needs the PATH of a checkpoint hwnas supernet train wrote")
        if s["benchmark"]:
            raise UsageError("--evaluator supernet scores with shared weights, --benchmark looks accuracy up: give one")
        if pf:
            raise UsageError("--prefilter picks which candidates to train; --evaluator supernet trains none")
        return ()
    if ev == "train":
        if pf and s["benchmark"]:
            raise UsageError("--prefilter scores networks before they train; a --benchmark trains none")
        return ()
    proxies = _proxies_named(ev.removeprefix("zero-cost:"), "evaluator")
    if s["benchmark"]:
        raise UsageError("--evaluator zero-cost scores the networks, --benchmark looks their accuracy up: give one")
    if pf:
        raise UsageError("--prefilter picks which candidates to train; --evaluator zero-cost trains none")
    return proxies


def _check_settings(s: dict[str, Any], recipe: Path) -> None:
    """Recipe values of the wrong type or range, named in one line before any data loads."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            v = s[key]
            raise UsageError(f"recipe {recipe}: {key} must be {what}, got "
                             f"{shown(v) if isinstance(v, int | float | None) else repr(v)[:80]}")

    def checked(key: str, convert: Callable[..., Any], **bounds: Any) -> None:  # the one checked conversion
        try:
            convert(s[key], key, **bounds)
        except NumberError as e:
            raise UsageError(f"recipe {recipe}: {e}") from None

    checked("trials", integer, low=1, high=MAX_TRIALS, must=f"a positive integer (at most {MAX_TRIALS})")
    checked("population", integer, low=1, high=10_000, must="a positive integer (at most 10000)")
    checked("batch_size", integer, low=1, high=MAX_BATCH, must=f"a positive integer (at most {MAX_BATCH})")
    if s["resolution"] is not None:
        checked("resolution", integer, low=1, high=8192)
    need(s["benchmark"] is None or isinstance(s["benchmark"], str), "benchmark", 'a name, e.g. "nb201:cifar10"')
    need(s["seed_mode"] in ("mean", "random"), "seed_mode", '"mean" or "random"')
    checked("seed", integer, low=0, high=2**32 - 1, must="an integer from 0 to 2^32 - 1")
    for k, most in (("epochs", MAX_EPOCHS), ("lr", MAX_LR), ("proxy_width", MAX_MULTIPLIER)):
        checked(k, number, positive=True, high=most)
    checked("val_fraction", number, low=0, high=1, must="a number between 0 and 1")
    need(0 < s["val_fraction"] < 1, "val_fraction", "a number between 0 and 1")
    if s["proxy_resolution"] is not None:
        checked("proxy_resolution", integer, low=8, high=8192)
    s["time_limit"] = time_limit(s["time_limit"], f"recipe {recipe}: time_limit")
    for k in ("name", "strategy", "reward", "dataset"):
        need(isinstance(s[k], str) and bool(s[k]), k, "a non-empty string")
    need(not any(c in s["name"] for c in "/\\") and s["name"] not in (".", ".."), "name",
         "a plain name (the study and its folder under --run-dir), without / or \\")
    for k in ("table", "data_dir"):
        need(s[k] is None or isinstance(s[k], str), k, "a string")
    need(isinstance(s["objectives"], list) and all(isinstance(o, str) for o in s["objectives"]), "objectives",
         'a list of names, e.g. ["acc", "flops"]')


def time_limit(v: Any, what: str) -> float | None:
    """A time limit in seconds (300, "300s", "4.5m", "1h"), or None for "none"/"off"."""
    if v is None or (isinstance(v, str) and v.strip().lower() in ("none", "off")):
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise UsageError(f"{what} must be a time like 300s, 4.5m or 1h, or \"none\", got {repr(v)[:60]}")
    try:
        seconds = parse_seconds(str(v))
    except NumberError as e:
        raise UsageError(f"{what}: {e}") from None
    if seconds > MAX_SECONDS:
        raise UsageError(f"{what} must be at most {MAX_SECONDS:g} s (116 days), got {str(v)[:60]}")
    return seconds


def _time_limit_arg(text: str) -> float | str:
    """argparse type of --time-limit: seconds, or "none" (no limit, over a recipe's)."""
    try:
        v = time_limit(text, "time limit")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("time limit: ")) from None
    return "none" if v is None else v


def cmd_search(args: argparse.Namespace) -> int:
    started = time.monotonic()  # a --time-limit counts from here: data loading and outputs included
    check_output_dir(args.run_dir, "--run-dir")  # found now, not after loading the data
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from hwnas.search.problem import GRADIENT_STRATEGIES, STRATEGIES
    from hwnas.search.run import create_search

    s = settings_from(args, extra_tables=("differentiable",))
    if s["strategy"] not in (*STRATEGIES, *GRADIENT_STRATEGIES):
        raise UsageError(f"unknown strategy {s['strategy']!r} (choose from "
                         f"{', '.join((*STRATEGIES, *GRADIENT_STRATEGIES))})")
    if s["differentiable"] and s["strategy"] not in GRADIENT_STRATEGIES:
        raise UsageError(f"recipe {s['recipe']}: [differentiable] sets the darts and gdas strategies, not "
                         f"{s['strategy']}")
    if s["strategy"] in GRADIENT_STRATEGIES and (args.workers > 1 or args.join):
        raise UsageError(f"--strategy {s['strategy']} runs one gradient search at a time: no --workers or --join")
    if args.join and not args.study_name:
        raise UsageError("--join needs --study-name: the study every worker joins")
    if args.join and args.resume:
        raise UsageError("--join already resumes the study if it exists: give --join or --resume")
    if args.storage or args.study_name:  # a given or named storage is known now: checked before the data load
        check_sqlite_storage(storage_url(args, args.study_name or ""), args.study_name or "", args.resume)
    if args.storage and sqlite_path(args.storage) is None:  # a server or a journal: reachable, the study as said
        _check_study(args.storage, args.study_name or "", args.resume and bool(args.study_name), args.join)
    if args.workers > 1:  # N processes of this command, each with --join (hwnas.cli.workers)
        from hwnas.cli.workers import run_workers

        if args.join and not args.storage:
            raise UsageError("--workers with --join: give the --storage the other machines' workers use")
        with located_study(args, s) as place:
            place.created = not args.resume and not args.join
            return run_workers(args, s, place)
    if s["strategy"] in GRADIENT_STRATEGIES:  # one gradient run per trial (hwnas.cli.differentiable)
        return gradient_search(args, s, started)
    problem, data, val_size = build_problem(args, s)
    with located_study(args, s) as place, evaluators(data, val_size, s) as (evaluate, evaluate_many):
        run_root, study_name, storage = place.run_root, place.study_name, place.storage
        fingerprint = proxy_fingerprint(s, data)
        try:
            search = create_search(problem, storage, study_name, s["strategy"], evaluate, seed=int(s["seed"]),
                                   population=int(s["population"]), resume=args.resume or args.join,
                                   settings=fingerprint,
                                   evaluate_many=evaluate_many, parallel=int(s["parallel"]),
                                   prefilter=prefilter_of(data, val_size, s),
                                   prefilter_keep=float(s["prefilter_keep"]), controller=s["controller"])
        except ValueError as e:
            raise UsageError(str(e)) from None
        place.created = not args.resume and not args.join  # a joined study may be another worker's: never undone
        return drive(search, problem, s, data, storage, study_name, run_root, args, started=started)


def gradient_search(args: argparse.Namespace, s: dict[str, Any], started: float) -> int:
    """``cmd_search`` for the gradient strategies (darts, gdas): one run per trial (``hwnas.cli.differentiable``)."""
    from hwnas.cli.differentiable import ATTR, DerivedProposals, cost_model_of, halves, plot_alphas, settings_of
    from hwnas.search.differentiable import run_differentiable
    from hwnas.search.run import create_search

    if s["space_kind"] not in ("nb201", "mbconv"):
        raise UsageError(f"--strategy {s['strategy']} searches NAS-Bench-201's cell space (--space nb201 or "
                         f"--benchmark nb201:DATASET) or an MBConv space, not the {s['space_kind']} space")
    if s["space_kind"] == "mbconv" and s["strategy"] != "gdas":
        raise UsageError(f"--strategy {s['strategy']} searches NAS-Bench-201's cell space (--space nb201 or "
                         "--benchmark nb201:DATASET); on an MBConv space the differentiable search is --strategy gdas "
                         f"({s['strategy']} mixes every op of an edge, which an elastic supernet cannot run at once)")
    settings = settings_of(s["differentiable"], s["recipe"], s["strategy"], s["space_kind"])
    problem, data, val_size = build_problem(args, s)
    model, settings = cost_model_of(problem, settings)
    if data is None:  # a benchmark's accuracies: the images are only the search network's
        data, _ = _load_search_data(args, s)
        wx, wy = data.train_x, data.train_y
    else:
        wx, wy, _, _ = data.split_validation(val_size)
    train, val = halves(wx, wy, int(s["seed"]))
    seed0 = int(s["seed"])
    err = sys.stderr

    def run(k: int) -> Any:
        size = f"C={settings.C} N={settings.N}" if s["space_kind"] == "nb201" else f"width {settings.width:g}"
        n_train = min(len(train[1]), settings.max_train_images or len(train[1]))  # the run's seeded subsets
        n_val = min(len(val[1]), settings.max_val_images or len(val[1]))
        print(f"  {s['strategy']} run {k} (seed {seed0 + k}): {settings.epochs} epochs, {size}, {n_train} + {n_val} "
              f"images, cost term {settings.cost_form} x {settings.cost_coef:g} on {model.name}", file=err, flush=True)

        def progress(rec: dict[str, Any]) -> None:
            cost = f", E[{model.unit}] {rec['expected_cost']:.3g}" if "expected_cost" in rec else ""
            print(f"    epoch {rec['epoch']}: train loss {rec['train_loss']:.3f}, val acc {rec['val_acc']:.3f}"
                  f"{cost}, derived {rec['arch']}", file=err, flush=True)

        try:
            return run_differentiable(problem.space, train, val, settings, model, seed=seed0 + k, device=s["device"],
                                      progress=progress)
        except ValueError as e:
            raise UsageError(str(e)) from None

    proposals = DerivedProposals(problem.space, run)
    fingerprint = {**proxy_fingerprint(s, data), "data_source": data.source,
                   ATTR: {**settings.to_dict(), "cost_model": model.name}}
    with located_study(args, s) as place, evaluators(data, val_size, s) as (evaluate, evaluate_many):
        try:
            search = create_search(problem, place.storage, place.study_name, s["strategy"], evaluate,
                                   seed=seed0, population=int(s["population"]), resume=args.resume,
                                   settings=fingerprint, custom=lambda feasible: proposals,
                                   evaluate_many=evaluate_many, parallel=1)
        except ValueError as e:
            raise UsageError(str(e)) from None
        place.created = not args.resume
        for t in search.study.get_trials(deepcopy=False):  # runs an earlier process finished
            rec = t.user_attrs.get(ATTR)
            if isinstance(rec, dict) and isinstance(rec.get("index"), int) and isinstance(rec.get("arch"), str):
                proposals.done[rec["index"]] = rec["arch"]
        search.annotate = proposals.annotate
        status = drive(search, problem, s, data, place.storage, place.study_name, place.run_root, args,
                       started=started)
        plot_alphas(search.study.get_trials(deepcopy=False), place.run_root / place.study_name / "alphas.png",
                    problem.space)
        return status


def build_problem(args: argparse.Namespace, s: dict[str, Any]) -> tuple[Any, Any, int]:
    """The search problem of the settings (space, latency table, budgets) and the data it trains on."""
    from hwnas.search.problem import Problem, ProblemError

    try:
        space = get_space(s["space_kind"], s["space"])
    except (SpaceError, TypeError) as e:
        raise UsageError(f"recipe {s['recipe']}: {e}") from None
    table = None
    if s["table"]:
        from hwnas.cli.latency import load_table

        table = load_table(s["table"])
    resolution = s["resolution"]
    if s["benchmark"]:  # nothing to load: the benchmark says the classes and the input resolution
        from hwnas.evaluators.tabular import spec

        bspec = spec(s["benchmark"])
        data, val_size, num_classes = None, 0, bspec.num_classes or space.default_num_classes
        if resolution is None:
            resolution = bspec.resolution or space.default_resolution
            if table is not None and "resolution" in table.metadata:  # a benchmark's device table: its input
                resolution = int(table.metadata["resolution"])
    else:
        data, val_size = _load_search_data(args, s)
        num_classes = data.num_classes
    if resolution is None:
        resolution = 224 if s["space_kind"] == "mbconv" else space.default_resolution
    s["resolution"] = resolution
    if "objectives" not in s["explicit"] and not space.has_costs:  # accuracy (and latency) alone
        s["objectives"] = [o for o in s["objectives"] if o not in ("flops", "params")]
    try:
        problem = Problem(space, tuple(s["objectives"]), s["reward"], s["budgets"], int(resolution), num_classes,
                          table)
    except (ProblemError, ValueError) as e:  # a table of another space, another resolution
        raise UsageError(str(e)) from None
    return problem, data, val_size


def proxy_fingerprint(s: dict[str, Any], data: Any) -> dict[str, Any]:
    """The evaluator settings a study is tied to (a resume with other settings is refused)."""
    if s["benchmark"]:
        return {"benchmark": s["benchmark"], "seed_mode": s["seed_mode"]}
    if s["supernet"]:
        from hwnas.cli.supernet import checkpoint_fingerprint

        return {"evaluator": "supernet", **checkpoint_fingerprint(s["supernet"]), "dataset": s["dataset"],
                "data_source": data.source, "seed": s["seed"]}
    if s["zero_cost"]:
        from hwnas.evaluators.zero_cost import BATCH_SIZE

        return {"evaluator": s["evaluator"], "zero_cost_batch": BATCH_SIZE, "zero_cost_reference": ZERO_COST_REFERENCE,
                "proxy_resolution": s["proxy_resolution"], "dataset": s["dataset"], "data_source": data.source,
                "seed": s["seed"]}
    keys = ("epochs", "batch_size", "lr", "proxy_width", "proxy_resolution", "dataset", "device")
    pf = {"prefilter": list(s["prefilter_proxies"]), "prefilter_keep": s["prefilter_keep"]} \
        if s["prefilter_proxies"] else {}  # recorded only when used: studies made before it resume
    return {**{k: s[k] for k in keys}, "data_source": data.source, **pf,
            "val_images": validation_size(s, len(data.train_y))}  # the split every accuracy is measured on


def validation_size(s: dict[str, Any], train_images: int) -> int:
    """Images carved from the training split for validation: ``val_fraction`` of them, 1 to 5,000."""
    return val_size_of(train_images, float(s["val_fraction"]))


def study_location(args: argparse.Namespace, s: dict[str, Any], study_name: str | None = None
                   ) -> tuple[Path, str, str]:
    """(run root, study name, storage URL), checked against --resume."""
    run_root = Path(args.run_dir)  # checked by the command before it loaded data
    study_name = study_name or args.study_name or f"{s['name']}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    storage = storage_url(args, study_name)
    check_sqlite_storage(storage, study_name, args.resume)
    db = sqlite_path(storage) or _journal_file(storage)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    _check_study(storage, study_name, args.resume, getattr(args, "join", False))
    return run_root, study_name, storage


def _journal_file(storage: str) -> Path | None:
    from hwnas.search.run import journal_path

    path = journal_path(storage)
    return Path(path) if path is not None else None


@dataclass
class StudyPlace:
    """Where a command's study lives; ``created``: the command created the study (set once it has)."""

    run_root: Path
    study_name: str
    storage: str
    created: bool = False


@contextlib.contextmanager
def located_study(args: argparse.Namespace, s: dict[str, Any]) -> Iterator[StudyPlace]:
    """``study_location`` for the block that creates (or resumes) the study and runs it. When the block fails (an
    error, an interrupt) before any trial of a study it created ran -- a budget nothing meets, an evaluator
    setting refused -- that study is deleted, then the SQLite file and the folders the command made, if nothing
    else is in them: the corrected command is not refused as 'already exists', and no empty run is left."""
    study_name = args.study_name or f"{s['name']}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    storage = storage_url(args, study_name)
    db = sqlite_path(storage) or _journal_file(storage)
    made = _missing_folders(Path(args.run_dir)) | (_missing_folders(db.parent) if db is not None else set())
    new_db = db is not None and not db.exists()
    place = StudyPlace(*study_location(args, s, study_name))
    try:
        yield place
    except BaseException:
        _undo_new_study(place, db if new_db else None, made)
        raise


def _missing_folders(folder: Path) -> set[Path]:
    """``folder`` and those of its parents that do not exist yet."""
    return {p for p in (folder, *folder.parents) if not p.exists()}


def _undo_new_study(place: StudyPlace, new_db: Path | None, made: set[Path]) -> None:
    """Delete the study ``place`` created if no trial of it ran (enqueued seeds do not count), then ``new_db``
    if it holds no study, then the folders in ``made`` left empty (deepest first). Best effort: the error that
    brought us here is the one to report."""
    import optuna
    from optuna.trial import TrialState

    from hwnas.search.run import storage_of

    with contextlib.suppress(Exception):
        if place.created:
            study = optuna.load_study(study_name=place.study_name, storage=storage_of(place.storage))
            if all(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
                optuna.delete_study(study_name=place.study_name, storage=storage_of(place.storage))
    with contextlib.suppress(Exception):
        if new_db is not None and new_db.is_file() and not optuna.get_all_study_summaries(storage_of(place.storage)):
            new_db.unlink()
            for extra in new_db.parent.glob(f"{new_db.name}.hwnas-claims-*.json"):  # a journal's claims record
                extra.unlink()
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def storage_url(args: argparse.Namespace, study_name: str) -> str:
    return args.storage or f"sqlite:///{Path(args.run_dir) / (study_name + '.db')}"


def check_sqlite_storage(storage: str, study_name: str, resume: bool) -> None:
    """What can be said of an SQLite storage without opening it (so before any data loads)."""
    db = sqlite_path(storage)
    if db is None:
        return
    if resume and not db.is_file():  # not created empty only to say so
        raise UsageError(f"no study {study_name!r} in {mask_url(storage)} to resume (file not found)")
    if resume and not db.stat().st_size:  # a new storage holds no study: Optuna's tables are not written into it
        raise UsageError(f"no study {study_name!r} in {mask_url(storage)} to resume (the file is empty)")
    if db.is_file() and db.stat().st_size:  # damaged, or someone else's (would get Optuna's tables added)
        check_sqlite_study_file(storage, db)


def drive(search: Any, problem: Any, s: dict[str, Any], data: Any, storage: str, study_name: str, run_root: Path,
          args: argparse.Namespace, what: str = "hwnas search", started: float | None = None) -> int:
    """Run a created search to its trial budget (or its time limit, counted from ``started``, a
    ``time.monotonic()`` value: default now) with a progress bar; write and print its outputs."""
    from hwnas.search.run import EvaluationStopped, SearchStopped

    recovered = search.recover() if args.resume or getattr(args, "join", False) else []
    search.seed_population(int(s["trials"]))
    run_dir = run_root / study_name
    shown = mask_url(storage)  # printed and stored without its password
    dashboard = f"optuna-dashboard {shown}"
    err = sys.stderr
    limit = s.get("time_limit")
    print(f"{what}: study {study_name} in {shown}\n  strategy {s['strategy']}, {s['trials']} trials"
          f"{f' or {_duration(limit)} (time limit), whichever comes first' if limit else ''}, "
          f"objectives {', '.join(problem.value_names)}, budgets "
          f"{', '.join(f'{k} <= {_fmt(k, v)}' for k, v in problem.budgets.items()) or 'none'} at "
          f"{problem.resolution} px ({FLOPS_HELP})", file=err)
    if problem.table is not None:  # every candidate's latency is priced from it (Problem.costs)
        t = problem.table
        n = int(t.metadata["batch_size"])
        print(f"  latency {'source' if s['benchmark'] else 'table'}: {t.describe()} (one batch of {n} "
              f"image{'s' * (n > 1)}), {t.source}", file=err)
        if "latency" in problem.value_names or "latency" in problem.budgets:  # a CPU table describes one machine
            from hwnas.cli.latency import probe_warning

            if (warning := probe_warning(t)) is not None:  # the study is open: no refusal follows this line
                print(f"hwnas: warning: {warning}", file=err)
    print(f"  watch it live: {dashboard}", file=err)
    if recovered:
        print(f"  recovered {len(recovered)} interrupted trial(s): {recovered} (re-queued)", file=err)
    if s["benchmark"]:
        from hwnas.evaluators.tabular import spec

        print(f"  accuracy: {spec(s['benchmark']).description}, looked up (tabular benchmark {s['benchmark']})",
              file=err)
    elif s["zero_cost"]:
        print(f"  accuracy: NOT trained. acc is the zero-cost score of {', '.join(s['zero_cost'])} at initialisation "
              f"as Phi(z) against {ZERO_COST_REFERENCE} random architectures of the space (0..1, ranks as the score; "
              f"raw scores in each trial's zero_cost), on {s['dataset']} images", file=err)
    elif s["supernet"]:
        print(f"  accuracy: NOT trained. acc is the held-out accuracy with weights inherited from the supernet "
              f"{s['supernet']} (BatchNorm recalibrated per candidate){'' if s['data_dir'] else '; LOW fidelity: '}"
              f"{'' if s['data_dir'] else EMBEDDED_NOTE}", file=err)
    elif not s["data_dir"]:
        print(f"  fidelity: LOW. {EMBEDDED_NOTE}; proxy: {s['epochs']:g} epochs at width x{s['proxy_width']:g}, "
              f"{s['proxy_resolution'] or data.resolution} px. Full run: this command with --data-dir "
              f"PATH/cifar10 on a CUDA machine", file=err)
    meta = {"study": study_name, "storage": shown, "strategy": s["strategy"], "settings": _plain(s)}
    t0 = time.monotonic()
    status = 0
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hwnas.search.report import feasible_rows, write_outputs

    best = {"acc": None}
    console = Console(stderr=True)
    deadline = None if not limit else (started or t0) + float(limit) - OUTPUT_RESERVE_S
    ended = "trials"

    def on_trial(t: Any) -> None:
        a = t.user_attrs
        if a.get("feasible") and a.get("acc") is not None and t.state.name == "COMPLETE":
            best["acc"] = float(a["acc"]) if best["acc"] is None else max(best["acc"], float(a["acc"]))
        done = min(search.trained_count(), s["trials"])
        bar.update(task, completed=done,
                   description=f"trials (best acc {best['acc'] if best['acc'] is not None else '-'})")
        if not console.is_terminal and (a.get("trained") or a.get("failure")):  # a log file, CI, nohup: a line
            print(_trial_line(t, done, int(s["trials"]), time.monotonic() - t0), file=err, flush=True)

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                      TimeRemainingColumn(), console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task("trials", total=s["trials"], completed=min(search.trained_count(), s["trials"]))
            ended = search.run(int(s["trials"]), on_trial, deadline=deadline)
    except KeyboardInterrupt:
        if not args.resume and not _any_trial_ran(search):  # nothing to resume: the study is undone
            raise
        print(f"\nhwnas: interrupted. Every finished trial is in {shown}; continue with: "
              f"{_resume_cmd(study_name, storage, args)}", file=err)
        status = 130
    except (SearchStopped, SpaceError) as e:
        if not args.resume and not _any_trial_ran(search):  # nothing to report or resume: the study is undone
            raise UsageError(f"search stopped before any trial: {e}") from None
        print(f"hwnas: search stopped: {e}", file=err)
        status = 1
    except EvaluationStopped as e:  # the batch's unfinished trials were failed and re-queued (Search.step)
        print(f"hwnas: search stopped: {e}. Every finished trial is in {shown}; continue with: "
              f"{_resume_cmd(study_name, storage, args)}", file=err)
        status = 1
    if ended == "time":
        print(f"hwnas: stopped at the time limit ({_duration(limit)}): {search.trained_count()} of {s['trials']} "
              f"trials evaluated, the next would have ended after it. Continue with: "
              f"{_resume_cmd(study_name, storage, args)}", file=err)
    trials = search.study.get_trials(deepcopy=False)
    summary = write_outputs(trials, problem, run_dir, {**meta, "seconds": round(time.monotonic() - t0, 1),
                                                       "ended": "time limit" if ended == "time" else ended})
    _print_front(summary, problem, "highest zero-cost score" if s["zero_cost"] else "most accurate")
    rows = feasible_rows(trials)
    dropped = f", {summary['prefiltered']} dropped by the prefilter" if summary["prefiltered"] else ""
    print(f"{len(rows)} architectures evaluated, {summary['infeasible']} infeasible (not trained){dropped}, "
          f"{summary['failed']} failed; hypervolume {summary['hypervolume']:.4f}; {time.monotonic() - t0:.0f} s\n"
          f"outputs: {run_dir}/pareto.csv, pareto.json, pareto.png, hypervolume.png\n"
          f"dashboard: {dashboard}\nresume or extend: {_resume_cmd(study_name, storage, args)}", file=err)
    if status == 0 and not rows and summary["failed"]:  # nothing to show for the run: not a success
        first = next((t.user_attrs.get("failure") for t in trials if t.user_attrs.get("failure")), "unknown")
        print(f"hwnas: error: every trained candidate failed (first failure: {str(first)[:200]})", file=err)
        status = 1
    return status


def _any_trial_ran(search: Any) -> bool:
    """Whether any trial of the search's study was run (enqueued seeds waiting to be asked do not count)."""
    return any(t.state.name != "WAITING" for t in search.study.get_trials(deepcopy=False))


def _print_front(summary: dict[str, Any], problem: Any, best: str = "most accurate") -> None:
    """The Pareto front as a table that fits 80 columns (a genotype cut to what is left; the whole strings are
    in pareto.csv), then the most accurate member's genotype in full, ready for `hwnas train` / `export`."""
    from rich.console import Console
    from rich.table import Table

    front = summary["pareto"]
    cols = ["trial", "acc", "MFLOPs", "Mparams"]
    if any(r["latency_ms"] is not None for r in front):
        cols.append("ms")
    rows = []
    for r in front:
        row = [str(r["trial"]), f"{r['acc']:.4f}", f"{r['flops'] / 1e6:.1f}" if r["flops"] is not None else "-",
               f"{r['params'] / 1e6:.2f}" if r["params"] is not None else "-"]
        if "ms" in cols:
            row.append(f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "-")
        rows.append([*row, r["genotype"]])
    t = Table(title=f"Pareto front: {len(front)} of {summary['evaluated']} evaluated"
              f"{' (ms: predicted latency)' if 'ms' in cols else ''}")
    widths = [max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(cols)]
    for col, w in zip(cols, widths, strict=True):  # numbers keep their width; the genotype gets the rest, cut
        t.add_column(col, justify="right", no_wrap=True, min_width=w)
    t.add_column("genotype (whole: pareto.csv)", overflow="ellipsis", no_wrap=True,
                 max_width=max(12, 80 - 1 - sum(w + 3 for w in widths) - 3))  # borders and padding: 3 a column
    for row in rows:
        t.add_row(*row)
    out = Console(width=80) if not sys.stdout.isatty() else Console()
    out.print(t)
    if front:
        top = max(front, key=lambda r: r["acc"])
        print(f"{best} (trial {top['trial']}, acc {top['acc']:.4f}):\n  {top['genotype']}")


def _trial_line(t: Any, done: int, total: int, seconds: float) -> str:
    """One line per evaluated trial, for output that is not a terminal (no live progress bar there)."""
    a = t.user_attrs
    what = f"failed: {str(a['failure'])[:80]}" if a.get("failure") else f"acc {float(a.get('acc') or 0):.4f}"
    costs = ", ".join(f"{a[k] / 1e6:.1f}M {name}" for k, name in (("flops", "FLOPs"), ("params", "params"))
                      if isinstance(a.get(k), int | float))
    lat = f", {a['latency_ms']:.3f} ms" if isinstance(a.get("latency_ms"), int | float) else ""
    return f"  trial {t.number}: {what}, {costs}{lat} ({done}/{total} evaluated, {seconds:.0f} s)"


def _duration(seconds: float) -> str:
    m, sec = divmod(round(float(seconds)), 60)
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def _fmt(k: str, v: float) -> str:
    return f"{v:.4g} ms" if k == "latency" else f"{v / 1e6:.4g}M"


def _plain(s: dict[str, Any]) -> dict[str, Any]:
    """The settings as stored in a report (storage URLs without their password)."""
    out = {k: v for k, v in s.items() if k != "space"}
    if isinstance(out.get("transfer"), dict) and isinstance(out["transfer"].get("source_storage"), str):
        out["transfer"] = {**out["transfer"], "source_storage": mask_url(out["transfer"]["source_storage"])}
    return out


def without_flags(argv: Sequence[str], valued: Sequence[str], switches: Sequence[str] = ()) -> list[str]:
    """``argv`` without the options ``valued`` (``--flag VALUE`` or ``--flag=VALUE``) and ``switches``."""
    out = list(argv)
    for flag in (*valued, *switches):
        out = [a for a in out if not a.startswith(f"{flag}=")]
        while flag in out:
            i = out.index(flag)
            del out[i:i + (2 if flag in valued else 1)]
    return out


def _resume_cmd(study: str, storage: str, args: argparse.Namespace) -> str:
    """The command that continues the study: this one, with --study-name, --storage and --resume. Storage URLs
    are shown without their password; then a note says so (put it back to run the command)."""
    argv = without_flags(getattr(args, "argv", None) or sys.argv[1:], ("--study-name", "--storage"),
                         ("--resume", "--join"))
    words = [*argv, "--study-name", study, "--storage", storage, "--resume"]
    shown = [mask_url(w) for w in words]
    cmd = "hwnas " + " ".join(shlex.quote(w) for w in shown)
    if shown != words:
        cmd += " (the password is left out of the storage URL: put it back in place of ***)"
    return cmd


def _check_study(storage: str, name: str, resume: bool, join: bool = False) -> None:
    import optuna

    from hwnas.search.run import journal_path, storage_of

    if resume and (path := journal_path(storage)) is not None and not Path(path).is_file():
        raise UsageError(f"no study {name!r} in {mask_url(storage)} to resume (journal file not found)")
    try:
        names = {st.study_name for st in optuna.get_all_study_summaries(storage_of(storage))}
    except Exception as e:  # a broken URL or database
        raise UsageError(f"cannot open storage {mask_url(storage)}: {hide_secrets(first_line(e), storage)}") \
            from None
    if join:  # created by the first worker, joined by the others
        return
    if resume and name not in names:
        raise UsageError(f"no study {name!r} in {mask_url(storage)} to resume")
    if not resume and name in names:
        raise UsageError(f"study {name!r} already exists in {mask_url(storage)}: pass --resume to continue it")


def _load_search_data(args: argparse.Namespace, s: dict[str, Any]) -> tuple[Any, int]:
    from hwnas.cli.train import load_data

    ns = argparse.Namespace(data_dir=s["data_dir"], dataset=s["dataset"], cache_dir=args.cache_dir,
                            image_size=None, download=args.download)
    data = load_data(ns)
    return data, validation_size(s, len(data.train_y))


@contextlib.contextmanager
def evaluators(data: Any, val_size: int, s: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The search's evaluators (one genotype; several trained together): proxy-train the width-scaled
    candidates on the resized images, in this process or (``eval_processes`` > 1) in a pool of processes
    sharing the device, closed on the way out."""
    if s["benchmark"]:  # a table lookup: nothing to start or close
        from hwnas.evaluators.tabular import TabularEvaluator

        tab = TabularEvaluator(s["benchmark"], s["seed_mode"], int(s["seed"]))
        yield tab.evaluate, tab.evaluate_many
        return
    if s["zero_cost"]:
        yield zero_cost_evaluators(data, val_size, s)
        return
    if s["supernet"]:
        from hwnas.cli.supernet import search_evaluator

        ev = search_evaluator(s["supernet"], get_space(s["space_kind"], s["space"]), data, s["device"], int(s["seed"]))
        yield ev.evaluate, ev.evaluate_many
        return
    from hwnas.evaluators.training import Budget, Evaluator, EvaluatorError, EvaluatorPool, Metrics, Recipe
    from hwnas.genotype import Genotype
    from hwnas.scaling import scale
    from hwnas.search.run import EvalResult, EvaluationStopped

    tx, ty, vx, vy = data.split_validation(val_size)
    res = s["proxy_resolution"]
    if res and res != data.resolution:
        tx, vx = _resize(tx, res), _resize(vx, res)
    budget, recipe = Budget(epochs=float(s["epochs"])), Recipe(batch_size=int(s["batch_size"]), lr=float(s["lr"]))
    processes = int(s["eval_processes"])
    ev: Evaluator | EvaluatorPool
    try:
        space = get_space(s["space_kind"], s["space"])  # builds what is not an MBConv genotype (NB201, DARTS)
        if processes > 1:
            ev = EvaluatorPool((tx, ty), (vx, vy), data.num_classes, budget, recipe, s["device"], processes,
                               group=PARALLEL_CUDA if s["device"] == "cuda" else 1, space=space)
        else:
            ev = Evaluator((tx, ty), (vx, vy), data.num_classes, budget, recipe, s["device"], space=space)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except EvaluatorError as e:  # a pool process that died while loading its data
        raise UsageError(f"cannot start {processes} evaluator processes: {e}") from None
    width, seed = float(s["proxy_width"]), int(s["seed"])

    def result(m: Metrics, proxy: Any) -> EvalResult:
        details = {"train_seconds": round(m.train_seconds, 2), "epochs": m.epochs,
                   "images_per_s": round(m.images_per_s, 1), "proxy_genotype": proxy.to_string(),
                   "trained_with": m.extra.get("group_size", 1)}
        return EvalResult(m.val_acc if m.ok else None, m.failure, details)

    def evaluate(g: Any) -> EvalResult:
        return evaluate_many([g])[0]

    def evaluate_many(gs: list[Any]) -> list[EvalResult]:
        proxies = [scale(g, width=width) if isinstance(g, Genotype) else g for g in gs]
        try:
            ms = ev.evaluate_many(proxies, seed)
        except EvaluatorError as e:  # what was finished before it stopped is kept (Search.step)
            raise EvaluationStopped(str(e), [result(m, p) for m, p in zip(e.partial, proxies, strict=False)]) \
                from None
        return [result(m, p) for m, p in zip(ms, proxies, strict=True)]

    try:
        yield evaluate, evaluate_many
    finally:
        ev.close()


def _zero_cost_scorer(data: Any, val_size: int, s: dict[str, Any]) -> Any:
    """A ``ZeroCostScorer`` on the search's training split (never its validation split), at the profile's
    proxy resolution (only its minibatch is resized)."""
    from hwnas.evaluators.zero_cost import ZeroCostError, ZeroCostScorer

    tx, ty, _, _ = data.split_validation(val_size)
    res = s["proxy_resolution"]
    resize = (lambda x: _resize(x, res)) if res and res != data.resolution else None
    try:
        return ZeroCostScorer(get_space(s["space_kind"], s["space"]), tx, ty, data.num_classes, seed=int(s["seed"]),
                              device=s["device"], transform=resize)
    except ZeroCostError as e:
        raise UsageError(str(e)) from None


def prefilter_of(data: Any, val_size: int, s: dict[str, Any]) -> Any:
    """The search's prefilter (``Search.prefilter``): the candidates of a batch ranked by the rank vote of the
    ``prefilter`` proxies over that batch (one proxy: its own ranking); None without one."""
    if not s["prefilter_proxies"]:
        return None
    import math

    from hwnas.evaluators.zero_cost import vote_ranks

    scorer, proxies = _zero_cost_scorer(data, val_size, s), s["prefilter_proxies"]

    def rank(gs: list[Any]) -> list[tuple[float, dict[str, Any]]]:
        raw = []
        for g in gs:
            try:
                raw.append(scorer.score(g, proxies))
            except Exception:  # unscorable (e.g. out of memory): ranked last, and trained only if kept
                raw.append({p: float("nan") for p in proxies})
        votes = vote_ranks({p: [r[p] for r in raw] for p in proxies})
        return [(float(v), {"prefilter_scores": {p: x if math.isfinite(x) else None for p, x in r.items()}})
                for v, r in zip(votes, raw, strict=True)]

    return rank


def zero_cost_evaluators(data: Any, val_size: int, s: dict[str, Any]) -> tuple[Any, Any]:
    """Score each candidate (at full width) with the zero-cost proxies on a minibatch of the training split,
    normalised against ``ZERO_COST_REFERENCE`` random architectures of the space (``Normalizer``)."""
    import math

    import numpy as np

    from hwnas.evaluators.zero_cost import Normalizer, ZeroCostError
    from hwnas.search.run import EvalResult

    space = get_space(s["space_kind"], s["space"])
    rng = np.random.default_rng(int(s["seed"]))
    reference = [space.decode(space.sample(rng)) for _ in range(ZERO_COST_REFERENCE)]
    print(f"  zero-cost: scoring {len(reference)} random architectures of the space to normalise "
          f"{', '.join(s['zero_cost'])}", file=sys.stderr, flush=True)
    scorer = _zero_cost_scorer(data, val_size, s)
    try:
        norm = Normalizer(scorer, reference, s["zero_cost"])
    except ZeroCostError as e:
        raise UsageError(str(e)) from None

    def evaluate(g: Any) -> EvalResult:
        t0 = time.perf_counter()
        try:
            value, raw = norm.score(g)
        except Exception as e:  # one candidate's failure (e.g. out of memory): a failed trial, not a dead study
            return EvalResult(None, f"zero-cost scoring failed: {first_line(e)}")
        return EvalResult(value, details={"zero_cost": {k: v if math.isfinite(v) else None for k, v in raw.items()},
                                          "score_seconds": round(time.perf_counter() - t0, 3)})

    return evaluate, None  # one at a time: Search calls ``evaluate`` for each


def _resize(x: Any, res: int) -> Any:
    """Area-resize uint8 NHWC images (anti-aliased) with torch."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
    out = F.interpolate(t, size=(res, res), mode="area" if res < x.shape[1] else "bilinear")
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def register(sub: Any) -> None:
    from hwnas.search.problem import GRADIENT_STRATEGIES, STRATEGIES

    p = sub.add_parser("search", help="multi-objective hardware-aware search (the main job)",
                       description="Search the space for the best accuracy/cost trade-offs. " + FLOPS_HELP + ".")
    p.add_argument("--recipe", help=f"recipe file or shipped name (default {DEFAULT_RECIPE})")
    add_search_options(p, (*STRATEGIES, *GRADIENT_STRATEGIES))
    p.add_argument("--workers", type=PROCESSES, default=1,
                   help="worker processes searching the study together on this machine (one GPU each on CUDA, a "
                        "group of cores each on the CPU), sharing --trials; logs in RUN_DIR/STUDY/workers/ "
                        "(default 1; docs/distributed.md)")
    p.set_defaults(func=cmd_search)


def add_search_options(p: argparse.ArgumentParser, strategies: tuple[str, ...],
                       data_help: str = "training data (default: the embedded CIFAR-10 subset)") -> None:
    """The options ``search`` and ``transfer`` share (each overrides its recipe's value)."""
    p.add_argument("--budget-flops", help="FLOPs budget (multiply-adds at --resolution): 400M, 0.4G, 4e8")
    p.add_argument("--budget-latency", help="latency budget, predicted from --table for one batch of the "
                   "table's batch size at --resolution: 1.5ms, 800us")
    p.add_argument("--budget-params", help="parameter budget: 6M")
    p.add_argument("--table", help="latency source for latency objectives/budgets: a table (file or shipped name) "
                   "or a benchmark's device, nb201:DEVICE (`hwnas latency list`)")
    p.add_argument("--objectives", help="comma list of acc,latency,flops,params (default: acc + budgeted costs)")
    p.add_argument("--reward", choices=["pareto", "mnas-soft", "mnas-hard"], default=None,
                   help="pareto: a front of acc and the costs, budgets as hard constraints; mnas-soft/mnas-hard: "
                        "one MnasNet reward acc x (cost/budget)^w (default: recipe, pareto)")
    p.add_argument("--strategy", choices=strategies, default=None,
                   help="search strategy (default: recipe, nsga2); see docs/search.md")
    p.add_argument("--trials", type=TRIALS, default=None,
                   help=f"evaluated architectures, at most {MAX_TRIALS} (default: recipe)")
    p.add_argument("--time-limit", type=_time_limit_arg, default=None, metavar="TIME",
                   help="wall-clock limit of the whole command: 300s, 4.5m, 1h, or none; no candidate starts that "
                        "would not end before it (estimated from the ones done), and the outputs are written "
                        "(default: recipe; the CPU profile of the default recipe: 4.5m)")
    p.add_argument("--population", type=POPULATION, default=None,
                   help="population of the evolutionary strategies, first random trials of the model-based ones "
                        "(default: recipe)")
    p.add_argument("--seed", type=SEED, default=None, help="seed of the strategy and of proxy training "
                   "(default: recipe, 0)")
    p.add_argument("--epochs", type=EPOCHS, default=None,
                   help=f"proxy training epochs per candidate (at most {MAX_EPOCHS:g})")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=None,
                   help="proxy training batch size (default: recipe profile)")
    p.add_argument("--lr", type=LR, default=None, help="peak learning rate per 512 images")
    p.add_argument("--resolution", type=RESOLUTION, default=None, help="deployment resolution for costs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where candidates train; auto: CUDA if present (then the recipe's gpu profile), else CPU "
                        "(its cpu profile)")
    p.add_argument("--parallel", type=PARALLEL, default=None,
                   help=f"proposals trained together (default {PARALLEL_CUDA} on CUDA: the evaluator trains them in "
                        "lock-step on separate streams, 3.3x the naive loop vs 2.6x one at a time on an H100; "
                        "1 on CPU)")
    p.add_argument("--eval-processes", type=PROCESSES, default=1,
                   help="evaluator processes sharing the device, each with its own copy of the data: one "
                   "process's set-up of fresh candidates (building, cuDNN kernel choice, graph capture) runs "
                   "while another trains; --parallel then defaults to that many groups (default 1)")
    p.add_argument("--space", choices=SPACE_KINDS, default=None,
                   help="search space (default: the recipe's [space] kind, else mbconv); `hwnas space info --space "
                        "NAME` shows it")
    p.add_argument("--benchmark", default=None,
                   help="look accuracy up in a tabular benchmark instead of training: nb201:cifar10, nb201:cifar100, "
                        "nb201:imagenet16-120, macro, transnas:TASK (sets --space; see docs/benchmarks.md)")
    p.add_argument("--evaluator", default=None, metavar="EVALUATOR",
                   help="where acc comes from: train (proxy training, the default) or zero-cost:PROXY[,PROXY...] / "
                        "zero-cost:vote (synflow+jacov+snip): scores at initialisation, no training, on any space "
                        "hwnas builds; or supernet:PATH: accuracy with weights inherited from a supernet hwnas "
                        "supernet train wrote (nb201, mbconv); see docs/evaluators.md")
    p.add_argument("--prefilter", default=None, metavar="PROXY",
                   help="zero-cost proxy (or proxies, or vote) that picks which proposals train: each batch draws "
                        "1/--prefilter-keep as many and trains the best-scored fraction; the others are PRUNED "
                        "trials with their scores (default: recipe, none)")
    p.add_argument("--prefilter-keep", type=positive_float_at_most(1.0), default=None, metavar="F",
                   help="fraction of the proposals the prefilter keeps (default: recipe, 0.25)")
    p.add_argument("--seed-mode", choices=["mean", "random"], default=None,
                   help="macro benchmark: mean of its 3 training seeds (default) or one drawn per query")
    p.add_argument("--dataset", default=None,
                   help="dataset name of --data-dir: cifar10 or an ImageFolder name (default: recipe, cifar10)")
    p.add_argument("--data-dir", default=None, help=data_help)
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10 into --data-dir with torchvision if it is not there")
    p.add_argument("--cache-dir", default=None,
                   help="where decoded data is cached (default $HWNAS_CACHE or ~/.cache/hwnas; `hwnas cache info`)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///RUN_DIR/STUDY.db; postgresql+psycopg://... "
                   "for workers on several machines), or the path of a journal file (a shared file system)")
    p.add_argument("--study-name", help="the study's name, and its output folder under --run-dir (default: the "
                   "recipe's name and the date and time, e.g. cifar10-400m-20261206-081500)")
    p.add_argument("--resume", action="store_true", help="continue --study-name to its trial budget")
    p.add_argument("--join", action="store_true",
                   help="search --study-name together with the other workers started with it: created by the first, "
                        "joined by the others (one shared --trials budget; docs/search.md)")
    p.add_argument("--run-dir", default="search/runs", help="where studies and outputs go (default search/runs)")
