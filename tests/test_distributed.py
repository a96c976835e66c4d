"""Several worker processes on one study (hwnas.search.run with hwnas.search.claims): one shared budget, no
genotype trained twice, nothing lost or left RUNNING, on SQLite, a journal file and a real PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from hwnas.search.bench import BenchProblem
from hwnas.search.claims import claims_of
from hwnas.search.run import EvalResult, create_search

BP = BenchProblem("nb201-acc-flops", "nb201:cifar10", ("acc", "flops"), population=8)


def _storage(where: str) -> Any:
    if where.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        return optuna.storages.JournalStorage(JournalFileBackend(where, JournalFileOpenLock(where)))
    return where


def _search(where: str, strategy: str, resume: bool, delay: float = 0.0) -> Any:
    problem, ev = BP.build()

    def evaluate(arch: Any) -> EvalResult:
        time.sleep(delay)  # a training that takes a while: workers overlap, and a kill finds one under way
        return ev.evaluate(arch)

    search = create_search(problem, _storage(where), "s", strategy, evaluate, seed=0, population=BP.population,
                           resume=resume, settings={"test": "distributed"})
    search.poll, search.heartbeat, search.grace = 0.05, 0.5, 5.0
    return search


def _work(where: str, strategy: str, n: int, delay: float) -> None:
    search = _search(where, strategy, resume=True, delay=delay)
    search.seed_population(n)
    search.run(n)


def _start(where: str, strategy: str, n: int, workers: int, delay: float = 0.0) -> list[Any]:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_work, args=(where, strategy, n, delay)) for _ in range(workers)]
    for p in procs:
        p.start()
    return procs


def _join(procs: list[Any], timeout: float = 240) -> None:
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"a worker ended with {p.exitcode}"


def _check(where: str, n: int) -> list[Any]:
    """The study holds exactly ``n`` trained, distinct genotypes and nothing RUNNING; the claims agree."""
    study = optuna.load_study(study_name="s", storage=_storage(where))
    trials = study.get_trials(deepcopy=False)
    trained = [t.user_attrs["genotype"] for t in trials
               if t.state == TrialState.COMPLETE and t.user_attrs.get("trained")]
    twice = [g for g, k in Counter(trained).items() if k > 1]
    assert not twice, f"trained more than once: {twice[:3]}"
    assert len(trained) == n
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    record = claims_of(study).read()
    assert record["evaluations"] == n and record["running"] == {} and len(record["trained"]) == n
    return trials


def _where(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres").create_db(f"w{abs(hash(str(tmp_path)))}")
    return str(tmp_path / "study.log") if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"


@pytest.mark.parametrize(("kind", "strategy"), [("sqlite", "evolution"), ("journal", "random"),
                                                 ("postgresql", "nsga2"), ("postgresql", "evolution")])
def test_workers_share_one_budget_and_never_train_a_genotype_twice(kind: str, strategy: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    where = _where(kind, tmp_path, request)
    _search(where, strategy, resume=False)  # the first worker creates the study; the others join it
    n = 40
    _join(_start(where, strategy, n, workers=3, delay=0.02))
    trials = _check(where, n)
    ranks = Counter(int(t.user_attrs.get("rank", 0)) for t in trials)
    assert set(ranks) <= {0, 1, 2, 3}  # three live workers (and the creator, gone) hold ranks 0..3 at most


def test_a_worker_killed_mid_training_loses_nothing(tmp_path: Path) -> None:
    where = f"sqlite:///{tmp_path / 'study.db'}"
    _search(where, "evolution", resume=False)
    n = 24
    procs = _start(where, "evolution", n, workers=3, delay=1.0)  # a worker spends most of its time training
    study = optuna.load_study(study_name="s", storage=where)

    def running_of(pid: int, training: bool = False) -> list[int]:
        return [t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING
                and str(t.user_attrs.get("worker", "")).split(":")[1:2] == [str(pid)]
                and (not training or "genotype" in t.user_attrs)]

    deadline, lost, training = time.monotonic() + 120, [], []
    while not training:  # kill a worker while it trains (one of its trials RUNNING with its proposal priced)
        assert time.monotonic() < deadline, "no worker was seen training"
        done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        victim = next((p for p in procs if p.is_alive() and running_of(p.pid, training=True)), None)
        if victim is not None and done >= 5:
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(30)
            lost += running_of(victim.pid)  # what it left RUNNING (it can change nothing now)
            training = running_of(victim.pid, training=True)  # (it may have been asking its next batch)
            procs.remove(victim)
            if len(procs) == 1:
                break
        time.sleep(0.05)
    assert training, "both kills missed a training"
    _join(procs)
    trials = {t.number: t for t in _check(where, n)}
    assert all(trials[k].state == TrialState.FAIL and trials[k].user_attrs.get("interrupted") for k in lost)
    requeued = set(optuna.load_study(study_name="s", storage=where).user_attrs.get("requeued", []))
    # every lost proposal is trained again; a trial the kill caught before its parameters (the next batch being
    # asked) held no proposal, nor one priced out of the budget
    proposals = {k for k in lost if trials[k].params and not trials[k].user_attrs.get("over_budget")}
    assert proposals, f"the kill caught no proposal under way: {lost}"
    assert proposals <= requeued
    assert not (set(lost) - proposals) & requeued


def test_workers_ride_out_a_database_restart(postgres: Any) -> None:
    where = postgres.create_db("restart")
    _search(where, "evolution", resume=False)
    n = 40
    procs = _start(where, "evolution", n, workers=3, delay=0.1)
    study = optuna.load_study(study_name="s", storage=where)
    deadline = time.monotonic() + 120
    while sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) < 8:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    postgres.restart()  # every connection is cut; the workers retry until the database is back
    _join(procs)
    _check(where, n)


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hwnas", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_the_same_command_started_twice_with_join_searches_one_study(kind: str, tmp_path: Path) -> None:
    where = str(tmp_path / "study.log") if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    cmd = ("search", "--benchmark", "nb201:cifar10", "--trials", "40", "--study-name", "w", "--storage", where,
           "--join", "--run-dir", str(tmp_path / "runs"))
    procs = [_cli(*cmd) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        assert "--join" not in err.splitlines()[-1] and "--resume" in err.splitlines()[-1]  # how to continue it
    _check_named(where, "w", 40)
    assert (tmp_path / "runs" / "w" / "pareto.csv").is_file()


def _check_named(where: str, name: str, n: int) -> None:
    from hwnas.search.run import storage_of

    trials = optuna.load_study(study_name=name, storage=storage_of(where)).get_trials(deepcopy=False)
    trained = [t.user_attrs["genotype"] for t in trials
               if t.state == TrialState.COMPLETE and t.user_attrs.get("trained")]
    assert len(trained) == len(set(trained)) == n
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.parametrize(("extra", "fragment"), [
    (("--join",), "--join needs --study-name"),
    (("--join", "--resume", "--study-name", "x"), "give --join or --resume"),
    (("--resume", "--study-name", "x", "--storage", "missing.log"), "journal file not found")])
def test_join_refuses_what_cannot_work(extra: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    p = _cli("search", "--benchmark", "nb201:cifar10", "--trials", "5", "--run-dir", str(tmp_path), *extra)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_workers_on_postgresql_then_its_report_and_dashboard(postgres: Any, tmp_path: Path) -> None:
    """`hwnas search --workers 2` against PostgreSQL, then `hwnas report` and optuna-dashboard on the same URL."""
    import json
    import urllib.request

    from test_search_cli import _serve

    url = postgres.create_db("workers")
    p = _cli("search", "--benchmark", "nb201:cifar10", "--strategy", "nsga2", "--trials", "30", "--workers", "2",
             "--study-name", "pg", "--storage", url, "--run-dir", str(tmp_path / "runs"))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    _check_named(url, "pg", 30)
    r = _cli("report", "--study-name", "pg", "--storage", url, "-o", str(tmp_path / "out"))
    _, err = r.communicate(timeout=120)
    assert r.returncode == 0, err[-2000:]
    mine, theirs = (json.loads((d / "pareto.json").read_text()) for d in (tmp_path / "out", tmp_path / "runs" / "pg"))
    assert mine["pareto"] == theirs["pareto"] and mine["evaluated"] == 30
    server, port = _serve(url)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
            ids = {s["study_name"]: s["study_id"] for s in json.loads(resp.read())["study_summaries"]}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{ids['pg']}", timeout=5) as resp:
            trials = json.loads(resp.read())["trials"]
        assert sum(t["state"] == "Complete" for t in trials) >= 30
    finally:
        server.terminate()
        server.wait(timeout=10)
