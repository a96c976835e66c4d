"""`hwnas report` (a study's outputs from its storage alone) and `hwnas search --workers N` (local workers on one
study), end to end on NAS-Bench-201 lookups, plus the pieces they are made of."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import hwnas, hwnas_here
from hwnas.cli.workers import child_argv, shares
from hwnas.search.problem import Problem, ProblemError, problem_from_record
from hwnas.spaces import get_space

NB201 = ("search", "--benchmark", "nb201:cifar10", "--table", "nb201:pixel3", "--budget-latency", "30ms")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-trial NB201 search with a latency budget from a device table (so the report needs the table too)."""
    root = tmp_path_factory.mktemp("report")
    r = hwnas_here(*NB201, "--trials", "30", "--study-name", "s", "--run-dir", str(root / "runs"))
    assert r.returncode == 0, r.stderr
    return root


def test_report_writes_what_the_search_wrote(searched: Path) -> None:
    r = hwnas_here("report", "--study-name", "s", "--run-dir", str(searched / "runs"), "-o", str(searched / "out"))
    assert r.returncode == 0, r.stderr
    mine, theirs = (json.loads((searched / d / "pareto.json").read_text()) for d in ("out", "runs/s"))
    assert mine["pareto"] == theirs["pareto"] and mine["hypervolume"] == theirs["hypervolume"]
    assert mine["problem"] == theirs["problem"] and mine["written_by"] == "hwnas report"
    assert (searched / "out" / "pareto.csv").read_text() == (searched / "runs" / "s" / "pareto.csv").read_text()
    assert "Pareto front" in r.stdout and "30 architectures evaluated" in r.stderr


def test_report_of_a_study_made_before_problem_records(searched: Path, tmp_path: Path) -> None:
    import shutil

    from hwnas.search.run import PROBLEM_ATTR

    shutil.copy(searched / "runs" / "s.db", tmp_path / "s.db")
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.load_study(study_name="s", storage=url)
    study._storage.set_study_user_attr(study._study_id, PROBLEM_ATTR, None)  # as before records were kept
    with __import__("sqlite3").connect(tmp_path / "s.db") as db:  # gone, not None: the old study had no key
        db.execute("DELETE FROM study_user_attributes WHERE key = ?", (PROBLEM_ATTR,))
    r = hwnas_here("report", "--study-name", "s", "--storage", url, "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr  # rebuilt from the settings' problem (describe): the NB201 space
    got = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert got["pareto"] == json.loads((searched / "runs" / "s" / "pareto.json").read_text())["pareto"]


@pytest.mark.parametrize(("extra", "fragment"), [
    (("--study-name", "nope"), "no study 'nope'"),
    (("--study-name", "s", "--table", "no-such-table"), "give --table where it is now"),
])
def test_report_refuses_in_one_line(searched: Path, extra: tuple[str, ...], fragment: str) -> None:
    r = hwnas_here("report", "--run-dir", str(searched / "runs"), "-o", str(searched / "x"), *extra)
    if "nope" in extra:  # the default storage of a study that is not there: no file
        r = hwnas_here("report", "--storage", f"sqlite:///{searched / 'runs' / 's.db'}", *extra)
    assert r.returncode == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_problem_record_round_trips_a_custom_space() -> None:
    space = get_space("mbconv", {"kernels": [3, 5], "expansions": [3, 6], "stem": 24})
    p = Problem(space, ("acc", "flops"), "mnas-soft", {"flops": 300e6}, 192, 10)
    back = problem_from_record(json.loads(json.dumps(p.record())))
    assert back.space == space and back.record() == p.record() and back.directions == ["maximize"]
    nb = Problem(get_space("nb201"), ("acc", "flops"), resolution=32, num_classes=10)
    assert problem_from_record(nb.record()).space.kind == "nb201"
    with pytest.raises(ProblemError, match="damaged"):
        problem_from_record({"space_kind": "nb201"})
    with pytest.raises(ProblemError, match="table loader"):
        problem_from_record({**nb.record(), "table": "nb201:pixel3"})


def test_workers_get_a_gpu_or_a_group_of_cores_each() -> None:
    assert shares(3, "cuda", [0, 1], ["4", "7"]) == [{"gpu": "4"}, {"gpu": "7"}, {"gpu": "4"}]
    assert shares(2, "cpu", [0, 1, 2, 3, 4], []) == [{"cores": [0, 1, 2]}, {"cores": [3, 4]}]
    assert shares(3, "cpu", [2, 5], []) == [{"cores": [2]}, {"cores": [5]}, {"cores": [2]}]
    from hwnas.cli.common import UsageError

    with pytest.raises(UsageError, match="no GPU"):
        shares(2, "cuda", [0], [])


def test_a_worker_repeats_the_command_joined_to_the_study() -> None:
    argv = ["search", "--workers", "4", "--trials", "9", "--resume", "--storage=x.db", "--study-name", "old"]
    assert child_argv(argv, "s", "sqlite:///r/s.db") == ["search", "--trials", "9", "--study-name", "s",
                                                         "--storage", "sqlite:///r/s.db", "--join"]


def _trained(url: str, name: str) -> list[str]:
    from hwnas.search.run import storage_of

    trials = optuna.load_study(study_name=name, storage=storage_of(url)).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    return [t.user_attrs["genotype"] for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("trained")]


def test_workers_share_one_budget_then_extend_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cmd = ("search", "--benchmark", "nb201:cifar10", "--strategy", "evolution", "--study-name", "w", "--run-dir",
           str(runs), "--workers", "3")
    r = hwnas(*cmd, "--trials", "45")
    assert r.returncode == 0, r.stderr
    trained = _trained(f"sqlite:///{runs / 'w.db'}", "w")
    assert len(trained) == len(set(trained)) == 45
    assert "45 architectures evaluated by 3 workers" in r.stderr and "Pareto front" in r.stdout
    assert sorted(p.name for p in (runs / "w" / "workers").iterdir()) == [f"worker-{k}.log" for k in range(3)]
    assert json.loads((runs / "w" / "pareto.json").read_text())["evaluated"] == 45
    resume = r.stderr.strip().splitlines()[-1]
    assert "--workers 3" in resume and resume.endswith("--resume") and "--join" not in resume
    r = hwnas(*cmd, "--trials", "60", "--resume")  # the same command, a bigger budget: the study goes on
    assert r.returncode == 0, r.stderr
    trained = _trained(f"sqlite:///{runs / 'w.db'}", "w")
    assert len(trained) == len(set(trained)) == 60


def test_workers_that_cannot_start_leave_nothing(tmp_path: Path) -> None:
    r = hwnas_here("search", "--workers", "2", "--trials", "4", "--data-dir", str(tmp_path / "missing"),
                   "--study-name", "bad", "--run-dir", str(tmp_path / "runs"), "--device", "cpu")
    assert r.returncode == 2 and "the workers stopped before any trial" in r.stderr, r.stderr
    assert "missing" in r.stderr.strip().splitlines()[-1]  # worker 0's own error, named
    assert not (tmp_path / "runs" / "bad.db").exists()  # the study it created with nothing in it is undone


def test_workers_with_join_need_the_shared_storage(tmp_path: Path) -> None:
    r = hwnas_here("search", "--benchmark", "nb201:cifar10", "--workers", "2", "--join", "--study-name", "s",
                   "--run-dir", str(tmp_path))
    assert r.returncode == 2 and "--storage" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _live_workers(study: str) -> list[int]:
    """Processes whose command line names ``study`` (the workers of a --workers search)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmdline = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--join" in cmdline and study.encode() in cmdline:
                out.append(int(d.name))
    return out


def test_an_interrupted_workers_search_stops_its_workers_and_keeps_their_trials(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    name = f"int{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-m", "hwnas", "search", "--benchmark", "nb201:cifar10", "--trials", "15000",
                          "--strategy", "random", "--workers", "2", "--study-name", name, "--run-dir", str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"sqlite:///{runs / f'{name}.db'}"
    deadline = time.monotonic() + 240
    while True:  # until both workers have trials in the study
        assert p.poll() is None and time.monotonic() < deadline, "the workers did not get going"
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        except Exception:  # not created yet
            continue
        if len({t.user_attrs.get("worker") for t in trials if t.state == TrialState.COMPLETE}) == 2:
            break
    p.send_signal(signal.SIGTERM)  # as `timeout`, a scheduler or Ctrl-C (SIGINT) would
    _, err = p.communicate(timeout=200)
    assert p.returncode == 130, err[-2000:]
    assert "stopping the 2 workers" in err and err.strip().splitlines()[-1].endswith("--resume")
    assert not _live_workers(name)
    trained = _trained(url, name)
    assert 0 < len(trained) < 15000 and len(trained) == len(set(trained))
    for k in range(2):  # each worker said it was interrupted and how to go on
        assert "hwnas: interrupted" in (runs / name / "workers" / f"worker-{k}.log").read_text()
