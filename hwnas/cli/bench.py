"""``hwnas bench``: every search strategy x seeds x an evaluation budget on tabular benchmark problems,
scored against the benchmark's ground truth (``hwnas.search.bench``)."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

from hwnas.cli.common import (
    UsageError,
    check_output_dir,
    dumps_strict,
    int_in,
    load_recipe,
    recipe_table,
    write_text_atomic,
)
from hwnas.units import NumberError, integer, parse_count, parse_ms

DEFAULT_EVALUATIONS = 200
DEFAULT_SEEDS = 10
GP_SEEDS = 1  # Optuna's GP proposes in seconds, not milliseconds, at a hundred trials (see docs/benchmarks.md)
GP_EVALUATIONS = 100
TRANSFER_SOURCE = "class_scene"
TRANSFER_TARGETS = ("class_object", "normal")


def bench_recipes() -> list[Path]:
    from hwnas.cli.search import recipes_dir

    return sorted(recipes_dir().glob("bench-*.toml"))


def problem_from_recipe(path: Path) -> Any:
    """A ``BenchProblem`` from a bench recipe (``[search]`` with a ``benchmark``; ``[profile.cpu]``)."""
    from hwnas.search.bench import BenchProblem

    r = load_recipe(str(path))
    s = recipe_table(r, path, "search")
    allowed = {"name", "description", "benchmark", "objectives", "table", "budget_latency", "budget_flops",
               "budget_params", "resolution", "strategy", "seed"}  # strategy, seed: for `hwnas search --recipe`
    if not s.get("benchmark"):
        raise UsageError(f"recipe {path}: a bench recipe needs [search] benchmark = \"...\"")
    bad = sorted(set(s) - allowed) + sorted(set(r) - {"search", "profile", "space"})
    kind = recipe_table(r, path, "space").get("kind")
    for name in recipe_table(r, path, "profile"):  # [profile.gpu] too: `hwnas search --recipe` reads the file
        recipe_table(r, path, "profile", name)
    profile = recipe_table(r, path, "profile", "cpu")  # the one profile a benchmark run reads
    from hwnas.evaluators.tabular import BenchmarkError, spec

    try:
        if kind is not None and kind != spec(str(s["benchmark"])).space:
            raise UsageError(f"recipe {path}: [space] kind {kind!r} is not the space of benchmark {s['benchmark']}")
    except BenchmarkError as e:
        raise UsageError(f"recipe {path}: {e}") from None
    if bad:
        raise UsageError(f"recipe {path}: unknown key(s) or table(s) for a bench problem: {', '.join(bad)}")
    budgets = {}
    try:
        for k, parse in (("latency", parse_ms), ("flops", parse_count), ("params", parse_count)):
            if s.get(f"budget_{k}") not in (None, ""):
                budgets[k] = parse(str(s[f"budget_{k}"]))
    except ValueError as e:
        raise UsageError(f"recipe {path}: {e}") from None
    if s.get("table") is not None and not isinstance(s["table"], str):
        raise UsageError(f"recipe {path}: table must be a string (a latency source), got {type(s['table']).__name__}")
    objectives = s.get("objectives", ["acc"])
    if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
        raise UsageError(f"recipe {path}: objectives must be a list of names")
    res = s.get("resolution")
    pop = profile.get("population", 20)
    try:  # the one checked conversion of a number from a file
        if res is not None:
            integer(res, "resolution", low=4, high=8192)
        integer(pop, "population", low=2, high=10_000)
    except NumberError as e:
        raise UsageError(f"recipe {path}: {e}") from None
    return BenchProblem(str(s.get("name", path.stem)), str(s["benchmark"]), tuple(objectives), s.get("table") or None,
                        budgets, s.get("resolution"), pop, str(s.get("description", "")))


def _recipes(arg: str | None) -> list[Path]:
    shipped = bench_recipes()
    if not arg or arg == "all":
        return shipped
    out = []
    for name in (x.strip() for x in arg.split(",") if x.strip()):
        p = Path(name)
        if p.is_file():
            out.append(p)
            continue
        match = [q for q in shipped if q.stem in (name, f"bench-{name}")]
        if not match:
            raise UsageError(f"bench recipe not found: {name} (shipped: {', '.join(q.stem for q in shipped)})")
        out.append(match[0])
    return out


def _strategies(arg: str | None) -> list[str]:
    from hwnas.search.problem import STRATEGIES

    if not arg or arg == "all":
        return list(STRATEGIES)
    names = [x.strip() for x in arg.split(",") if x.strip()]
    bad = [n for n in names if n not in STRATEGIES]
    if bad or not names:
        raise UsageError(f"unknown strategy {', '.join(bad) or '(none)'} (choose from {', '.join(STRATEGIES)})")
    return list(dict.fromkeys(names))


def cmd_bench(args: argparse.Namespace) -> int:
    out_dir = Path(args.output or f"search/runs/bench-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    check_output_dir(out_dir, "-o")
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # inherited by the workers
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its storage retries: hwnas says what failed, once
    from hwnas.evaluators.tabular import BenchmarkError
    from hwnas.search import bench
    from hwnas.search.problem import ProblemError
    from hwnas.spaces import SpaceError

    problems = [problem_from_recipe(p) for p in _recipes(args.recipes)]
    strategies = _strategies(args.strategies)
    t0 = time.monotonic()
    err = sys.stderr
    try:  # every problem is built (and its ground truth computed) before any run: errors come first
        for bp in problems:
            bench.truth_of(bp)
    except (BenchmarkError, ProblemError, SpaceError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    jobs, notes = bench.jobs_for(problems, strategies, args.seeds, args.evaluations, {"gp": args.gp_seeds},
                                 {"gp": args.gp_evaluations})
    tjobs: list[Any] = []
    source = targets = None
    if args.transfer:
        source = bench.BenchProblem(f"transnas-{args.transfer_source}", f"transnas:{args.transfer_source}")
        targets = [bench.BenchProblem(f"transnas-{t}", f"transnas:{t}") for t in args.transfer_targets.split(",")]
        try:
            for bp in (source, *targets):
                bench.truth_of(bp)
        except (BenchmarkError, ProblemError, SpaceError, ValueError) as e:
            raise UsageError(str(e).splitlines()[0]) from None
        tr = {"source": source, "source_evaluations": args.source_evaluations}
        for bp in targets:
            for seed in range(args.transfer_seeds):
                tjobs += [bench.Job(bp, "evolution", seed, args.transfer_evaluations, tr, "eat-transfer"),
                          bench.Job(bp, "evolution", seed, args.transfer_evaluations),
                          bench.Job(bp, "random", seed, args.transfer_evaluations)]
    print(f"hwnas bench: {len(problems)} problem(s) x {len(strategies)} strategies x {args.seeds} seeds x "
          f"{args.evaluations} evaluations ({len(jobs)} runs" + (f", {len(tjobs)} transfer runs" if tjobs else "")
          + f") on {args.workers} worker process(es); results in {out_dir}", file=err)
    for n in notes:
        print(f"  note: {n}", file=err)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if args.workers > 1:  # one core per worker: a sampler that runs torch (Optuna's GP) must not spread its
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # threads over the other workers' cores (10x slower)
            os.environ.setdefault(var, "1")
    results: list[Any] = []
    status = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("runs", total=len(jobs) + len(tjobs))

        def done(r: Any) -> None:
            bar.update(task, advance=1, description=f"runs ({r.problem} {r.strategy} seed {r.seed})")

        try:
            results = bench.run_jobs([*jobs, *tjobs], args.workers, done)
        except KeyboardInterrupt:
            print("hwnas: interrupted: the study is not written (a bench run is rerun, not resumed)", file=err)
            return 130
    main_results = [r for r in results if r.problem in {p.name for p in problems}]
    transfer = None
    if tjobs and source is not None and targets is not None:
        transfer = bench.transfer_report([r for r in results if r not in main_results], source, targets,
                                         args.transfer_evaluations)
        transfer["source_evaluations"] = args.source_evaluations
    rep = bench.report(problems, main_results, args.evaluations, transfer)
    rep["settings"] = {"recipes": [p.name for p in problems], "strategies": strategies, "seeds": args.seeds,
                       "evaluations": args.evaluations, "gp_seeds": args.gp_seeds,
                       "gp_evaluations": min(args.gp_evaluations, args.evaluations), "workers": args.workers,
                       "notes": notes, "transfer_seeds": args.transfer_seeds if tjobs else 0,
                       "transfer_evaluations": args.transfer_evaluations if tjobs else 0,
                       "command": "hwnas " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("hwnas") else None}
    rep["published_nb201_cifar10"] = {"note": bench.PUBLISHED_NOTE, **{k: {"mean": m, "std": s} for k, (m, s) in
                                                                        bench.PUBLISHED_NB201_CIFAR10.items()}}
    rep["wall_seconds"] = round(time.monotonic() - t0, 1)
    rep["machine"] = {"cpus": os.cpu_count()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "bench.json", dumps_strict(rep, indent=1) + "\n")
    md = bench.markdown(rep)
    write_text_atomic(out_dir / "bench.md", md + "\n")
    bench.plot(rep, out_dir / "bench.png")  # written atomically
    print(md)
    print(f"{len(results)} runs in {rep['wall_seconds']:.0f} s; outputs: {out_dir}/bench.json, bench.md, bench.png",
          file=err)
    return status


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="score search strategies against tabular benchmarks (ground truth)",
                       description="Run search strategies x seeds x an evaluation budget on tabular benchmark "
                       "problems (shipped recipes search/bench-*.toml) and score each found front by its "
                       "hypervolume divided by the true Pareto front's (same reference point), or single-objective "
                       "runs by the best accuracy found. FLOPs are multiply-adds. See docs/benchmarks.md.")
    p.add_argument("--recipes", help="comma list of bench recipes (files or shipped names), default: all shipped")
    p.add_argument("--strategies", help="comma list of strategies, default: all")
    p.add_argument("--seeds", type=int_in(1, 1000), default=DEFAULT_SEEDS, help="seeds per strategy (default 10)")
    p.add_argument("--evaluations", type=int_in(1, 100_000), default=DEFAULT_EVALUATIONS,
                   help="evaluated architectures per run (default 200)")
    p.add_argument("--gp-seeds", type=int_in(0, 1000), default=GP_SEEDS,
                   help=f"seeds for the gp strategy, slow per proposal (default {GP_SEEDS})")
    p.add_argument("--gp-evaluations", type=int_in(1, 100_000), default=GP_EVALUATIONS,
                   help=f"evaluations of a gp run, at most --evaluations (default {GP_EVALUATIONS})")
    p.add_argument("--workers", type=int_in(1, 256), default=max(1, min(2, os.cpu_count() or 1)),
                   help="worker processes (default: 2 or the CPU count if fewer)")
    p.add_argument("--no-transfer", dest="transfer", action="store_false",
                   help="skip the TransNAS-Bench-101 transfer study")
    p.add_argument("--transfer-source", default=TRANSFER_SOURCE, help=f"source task (default {TRANSFER_SOURCE})")
    p.add_argument("--transfer-targets", default=",".join(TRANSFER_TARGETS),
                   help=f"comma list of target tasks (default {','.join(TRANSFER_TARGETS)})")
    p.add_argument("--transfer-seeds", type=int_in(1, 1000), default=DEFAULT_SEEDS)
    p.add_argument("--transfer-evaluations", type=int_in(1, 100_000), default=100,
                   help="evaluations on the target per transfer run (default 100)")
    p.add_argument("--source-evaluations", type=int_in(1, 100_000), default=200,
                   help="evaluations of the source search per transfer run (default 200)")
    p.add_argument("-o", "--output", help="run folder (default search/runs/bench-DATE)")
    p.set_defaults(func=cmd_bench)
