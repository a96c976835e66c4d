"""``hwnas report``: a study's outputs (Pareto front, plots) written from its storage, by anyone, at any time.

Every ``hwnas search`` worker writes the outputs of its study when it stops; with several workers on one study
(``--join``, ``--workers``, several machines) the last to stop writes the complete ones. ``hwnas report`` writes
them from the storage alone: the problem (space, objectives, budgets, resolution, latency source) is rebuilt from
the record the search kept in the study (``Problem.record``), so no recipe or flag has to be given again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hwnas.cli.common import UsageError, check_output_dir, first_line, open_study
from hwnas.urls import mask_url


def problem_of(study: Any, table: str | None = None) -> Any:
    """The search problem of ``study`` (``hwnas.search.problem.problem_from_record``); ``table``: the latency
    source to load instead of the one recorded (a table file moved since the search)."""
    from hwnas.cli.latency import load_table
    from hwnas.search.problem import ProblemError, problem_from_record
    from hwnas.search.run import PROBLEM_ATTR

    attrs = study.user_attrs
    record = attrs.get(PROBLEM_ATTR)
    if record is None:  # a study searched before records were kept: its settings describe the problem
        hw = attrs.get("hwnas")
        record = hw.get("problem") if isinstance(hw, dict) else None
        if record is None:
            raise UsageError(f"study {study.study_name!r} was not made by hwnas search (it has no problem record)")
    if table is not None and isinstance(record, dict):
        record = {**record, "table": table}

    def load(source: str) -> Any:
        try:
            return load_table(source)
        except UsageError as e:
            raise UsageError(f"{e} (the study's latency source; give --table where it is now)") from None

    try:
        return problem_from_record(record, load)
    except (ProblemError, ValueError) as e:
        raise UsageError(f"study {study.study_name!r}: {first_line(e)}") from None


def write_report(study: Any, problem: Any, storage: str, run_dir: Path, what: str = "hwnas report") -> dict[str, Any]:
    """Write pareto.csv/json/png and hypervolume.png of ``study`` into ``run_dir``; returns the summary."""
    from hwnas.search.report import write_outputs

    hw = study.user_attrs.get("hwnas")
    strategy = hw.get("strategy", "") if isinstance(hw, dict) else ""
    meta = {"study": study.study_name, "storage": mask_url(storage), "strategy": strategy, "written_by": what,
            "settings": hw if isinstance(hw, dict) else None}
    return write_outputs(study.get_trials(deepcopy=False), problem, run_dir, meta)


def cmd_report(args: argparse.Namespace) -> int:
    from hwnas.cli.search import _print_front, storage_url

    t0 = time.monotonic()
    out = Path(args.output) if args.output else Path(args.run_dir) / args.study_name
    check_output_dir(out, "-o")
    storage = storage_url(args, args.study_name)
    study = open_study(storage, args.study_name)
    problem = problem_of(study, args.table)
    summary = write_report(study, problem, storage, out)
    zero_cost = "evaluator" in (study.user_attrs.get("hwnas") or {}) and \
        str(study.user_attrs["hwnas"]["evaluator"]).startswith("zero-cost")
    _print_front(summary, problem, "highest zero-cost score" if zero_cost else "most accurate")
    running = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    print(f"{summary['evaluated']} architectures evaluated, {summary['infeasible']} infeasible (not trained), "
          f"{summary['failed']} failed{f', {running} running now' if running else ''}; hypervolume "
          f"{summary['hypervolume']:.4f}; {time.monotonic() - t0:.1f} s\n"
          f"outputs: {out}/pareto.csv, pareto.json, pareto.png, hypervolume.png", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write a study's Pareto front and plots from its storage",
                       description="Write the outputs of a search (pareto.csv, pareto.json, pareto.png, "
                       "hypervolume.png) from its study alone, e.g. while or after several workers search it. "
                       "The problem is the one the search recorded in the study.")
    p.add_argument("--study-name", required=True, help="the study")
    p.add_argument("--storage", help="its Optuna storage URL or journal file (default sqlite:///RUN_DIR/STUDY.db)")
    p.add_argument("--run-dir", default="search/runs", help="where the default storage and outputs are "
                   "(default search/runs)")
    p.add_argument("-o", "--output", help="folder for the outputs (default RUN_DIR/STUDY)")
    p.add_argument("--table", help="the latency table to price with, when the one the study names has moved")
    p.set_defaults(func=cmd_report)
