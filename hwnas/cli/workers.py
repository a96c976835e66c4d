"""``hwnas search --workers N``: N worker processes on this machine searching one study together.

Each worker is the same ``hwnas search`` command with ``--join`` (``hwnas.search.run``: claims, one shared trial
budget, ranks), started as a child process with its share of the machine:

* training on CUDA: one GPU each, by ``CUDA_VISIBLE_DEVICES`` (the GPUs this process may use, in turn; more
  workers than GPUs share them round-robin);
* on the CPU: a group of cores each (``sched_setaffinity``, and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set
  to the group's size, so torch's thread pool fits it).

The workers write their output to ``RUN_DIR/STUDY/workers/worker-K.log``; this process shows one progress bar
over the study's shared budget (the claims record's evaluations), forwards an interrupt to the workers (each
saves its work, as one search does), and when they have stopped writes the study's outputs from the storage
(``hwnas report``) and prints its Pareto front. Several machines: run the same command with ``--join``, the same
``--study-name`` and a PostgreSQL ``--storage`` on each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwnas.cli.common import UsageError, first_line
from hwnas.interrupts import deferred
from hwnas.urls import mask_url

STOP_WAIT_S = 120.0  # after an interrupt, how long workers get to save before they are killed
POLL_S = 1.0  # between looks at the study's progress and the workers


def child_argv(argv: Sequence[str], study_name: str, storage: str) -> list[str]:
    """``argv`` (``search ...``) without ``--workers``, ``--study-name``, ``--storage``, ``--resume`` and
    ``--join``, then the study every worker joins."""
    from hwnas.cli.search import without_flags

    out = without_flags(argv, ("--workers", "--study-name", "--storage"), ("--resume", "--join"))
    return [*out, "--study-name", study_name, "--storage", storage, "--join"]


def shares(n: int, device: str, cores: Sequence[int], gpus: Sequence[str]) -> list[dict[str, Any]]:
    """What each of ``n`` workers gets: ``{"gpu": id}`` on CUDA (round-robin over ``gpus``), ``{"cores": [...]}``
    on the CPU (``cores`` split into ``n`` contiguous groups, or one core each, in turn, when there are fewer)."""
    if device == "cuda":
        if not gpus:
            raise UsageError("--workers on CUDA: no GPU is visible to share among the workers")
        return [{"gpu": gpus[i % len(gpus)]} for i in range(n)]
    cores = sorted(cores)
    if n >= len(cores):
        return [{"cores": [cores[i % len(cores)]]} for i in range(n)]
    size, extra = divmod(len(cores), n)
    out, at = [], 0
    for i in range(n):
        k = size + (i < extra)
        out.append({"cores": cores[at:at + k]})
        at += k
    return out


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _env(share: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    if "gpu" in share:
        env["CUDA_VISIBLE_DEVICES"] = str(share["gpu"])
    else:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(len(share["cores"]))
    env["PYTHONUNBUFFERED"] = "1"  # a worker's log is read while it runs
    return env


def _where(share: dict[str, Any]) -> str:
    if "gpu" in share:
        return f"GPU {share['gpu']}"
    c = share["cores"]
    return f"core{'s' * (len(c) > 1)} {c[0]}" + (f"-{c[-1]}" if len(c) > 1 else "")


def _last_line(log: Path) -> str:
    """The last error line a worker wrote (or its last line)."""
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "(no log)"
    errors = [x for x in lines if x.startswith("hwnas: ")]
    return (errors or lines or ["(nothing written)"])[-1][:300]


def run_workers(args: argparse.Namespace, s: dict[str, Any], place: Any) -> int:
    """Start ``args.workers`` workers on the study of ``place`` (``hwnas.cli.search.StudyPlace``), show their
    progress, stop them on an interrupt, and write the study's outputs once they have all stopped."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    n, study_name, storage = int(args.workers), place.study_name, place.storage
    argv = getattr(args, "argv", None) or sys.argv[1:]
    cmd = [sys.executable, "-m", "hwnas", *child_argv(argv, study_name, storage)]
    gpus = _visible_gpus() if s["device"] == "cuda" else []
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    given = shares(n, s["device"], cores, gpus)
    logs = place.run_root / study_name / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    err, shown = sys.stderr, mask_url(storage)
    print(f"hwnas search: {n} workers on study {study_name} in {shown} ({s['trials']} trials between them)\n"
          f"  " + ", ".join(f"worker {k}: {_where(g)}" for k, g in enumerate(given)) + f"\n  logs: {logs}/\n"
          f"  watch it live: optuna-dashboard {shown}", file=err)
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    status = 0
    console = Console(stderr=True)
    t0 = time.monotonic()
    try:
        for k, g in enumerate(given):
            f = open(logs / f"worker-{k}.log", "ab")  # noqa: SIM115 (closed when the workers have stopped)
            files.append(f)
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(g), start_new_session=True)
            if "cores" in g and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):  # it may have ended already
                    os.sched_setaffinity(p.pid, g["cores"])
            procs.append(p)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                      TimeRemainingColumn(), console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"trials ({n} workers)", total=s["trials"])
            claims, said, last = None, -1, 0.0
            while any(p.poll() is None for p in procs):
                time.sleep(POLL_S)
                with deferred():  # an interrupt inside a read could leave SQLite's lock held, and the workers
                    claims = claims or _claims(storage, study_name)  # waiting on it as they save
                    done = min(int(claims.read().get("evaluations", 0)), int(s["trials"])) if claims else 0
                alive = sum(p.poll() is None for p in procs)
                bar.update(task, completed=done, description=f"trials ({alive} of {n} workers running)")
                if not console.is_terminal and done != said and time.monotonic() - last >= 10:
                    print(f"  {done}/{s['trials']} evaluated, {alive} of {n} workers running "
                          f"({time.monotonic() - t0:.0f} s)", file=err, flush=True)
                    said, last = done, time.monotonic()
    except KeyboardInterrupt:
        print(f"\nhwnas: interrupted: stopping the {n} workers (each saves its finished trials)", file=err)
        _stop(procs)
        status = 130
    finally:
        for p in procs:  # an error of this process: the workers are not left running without it
            if p.poll() is None:
                _stop(procs)
                break
        for f in files:
            f.close()
    codes = [p.returncode for p in procs]
    for k, c in enumerate(codes):
        if c not in (0, None) and not (status == 130 and c == 130):
            print(f"hwnas: worker {k} exited with code {c}: {_last_line(logs / f'worker-{k}.log')}", file=err)
    return _finish(args, s, place, codes, status, time.monotonic() - t0)


def _claims(storage: str, study_name: str) -> Any:
    """The claims record of the study, once a worker has created it (else None)."""
    import optuna

    from hwnas.search.claims import claims_of
    from hwnas.search.run import storage_of

    with contextlib.suppress(Exception):  # not created yet, or the database briefly away: looked at again
        return claims_of(optuna.load_study(study_name=study_name, storage=storage_of(storage)))
    return None


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every running worker (each saves, as on Ctrl-C), then SIGKILL those still running after
    ``STOP_WAIT_S``."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    end = time.monotonic() + STOP_WAIT_S
    for p in procs:
        try:
            p.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            for q in procs:
                with contextlib.suppress(ProcessLookupError):
                    q.kill()
            raise


def _finish(args: argparse.Namespace, s: dict[str, Any], place: Any, codes: list[int | None], status: int,
            seconds: float) -> int:
    """Write and print the study's outputs once the workers have stopped; the exit status."""
    from hwnas.cli.report import problem_of, write_report
    from hwnas.cli.search import _print_front, _resume_cmd

    err, shown = sys.stderr, mask_url(place.storage)
    try:
        from hwnas.cli.common import open_study

        study = open_study(place.storage, place.study_name)
    except UsageError:
        study = None
    ran = study is not None and any(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))
    if not ran:  # every worker stopped before any trial (bad settings, data not found): said above, per worker
        failed = [c for c in codes if c not in (0, None)]
        if status == 130:
            raise KeyboardInterrupt
        raise UsageError(f"the workers stopped before any trial (worker 0: "
                         f"{_last_line(place.run_root / place.study_name / 'workers' / 'worker-0.log')})"
                         if failed else "the workers stopped before any trial")
    try:
        problem = problem_of(study)
        summary = write_report(study, problem, place.storage, place.run_root / place.study_name, "hwnas search")
    except (UsageError, ValueError) as e:
        print(f"hwnas: cannot write the study's outputs: {first_line(e)}", file=err)
        return status or 1
    _print_front(summary, problem, "highest zero-cost score" if s["zero_cost"] else "most accurate")
    run_dir = place.run_root / place.study_name
    resume = _resume_cmd(place.study_name, place.storage, args)
    print(f"{summary['evaluated']} architectures evaluated by {len(codes)} workers, {summary['infeasible']} infeasible "
          f"(not trained), {summary['failed']} failed; hypervolume {summary['hypervolume']:.4f}; {seconds:.0f} s\n"
          f"outputs: {run_dir}/pareto.csv, pareto.json, pareto.png, hypervolume.png; worker logs: {run_dir}/workers/\n"
          f"dashboard: optuna-dashboard {shown}\nresume or extend: {resume}",
          file=err)
    if status:
        return status
    return next((int(c) for c in codes if c not in (0, None)), 0)
