"""The claims record (hwnas.search.claims): a transaction is atomic across processes on every storage kind."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import optuna
import pytest

from hwnas.search.claims import ClaimsError, FileClaims, MemoryClaims, RDBClaims, claims_of


def _journal(path: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return optuna.storages.JournalStorage(JournalFileBackend(str(path), JournalFileOpenLock(str(path))))


def _storage(kind: str, where: str) -> Any:
    return _journal(Path(where)) if kind == "journal" else where


def _bump(kind: str, where: str, name: str, n: int) -> None:
    """Open the study as a worker would and take ``n`` numbers from the shared counter, one transaction each."""
    study = optuna.load_study(study_name=name, storage=_storage(kind, where))
    claims = claims_of(study)

    def take(r: dict[str, Any]) -> int:
        r["next"] = r.get("next", 0) + 1
        r.setdefault("taken", []).append(r["next"])
        return int(r["next"])

    for _ in range(n):
        claims.transact(take)


def _stores(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    out = {"sqlite": f"sqlite:///{tmp_path / 's.db'}", "journal": str(tmp_path / "j.log")}
    if request.node.callspec.params["kind"] == "postgresql":
        out["postgresql"] = request.getfixturevalue("postgres").create_db(f"claims_{abs(hash(str(tmp_path)))}")
    return out


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_concurrent_transactions_lose_no_update(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    where = _stores(tmp_path, request)[kind]
    study = optuna.create_study(study_name="s", storage=_storage(kind, where))
    claims_of(study)  # the table/file exists before the workers race (they would create it themselves too)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(kind, where, "s", 15)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    record = claims_of(optuna.load_study(study_name="s", storage=_storage(kind, where))).read()
    assert record["next"] == 60 and sorted(record["taken"]) == list(range(1, 61))  # every number once


def test_each_study_has_its_own_record_and_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    a, b = (claims_of(optuna.create_study(study_name=n, storage=url)) for n in ("a", "b"))
    a.transact(lambda r: r.update(x=1))

    def fail(r: dict[str, Any]) -> None:
        r["x"] = 2
        raise KeyError("no")

    for claims in (a, MemoryClaims(), FileClaims(tmp_path / "c.json")):
        claims.transact(lambda r: r.update(x=1))
        with pytest.raises(KeyError):
            claims.transact(fail)
        assert claims.read() == {"x": 1}
    assert b.read() == {}
    assert isinstance(a, RDBClaims)


def test_an_in_memory_study_keeps_its_claims_for_as_long_as_its_storage() -> None:
    study = optuna.create_study()
    claims_of(study).transact(lambda r: r.update(x=1))
    assert claims_of(study).read() == {"x": 1}
    assert claims_of(optuna.create_study()).read() == {}


def test_a_damaged_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps([1]))
    with pytest.raises(ClaimsError, match="damaged"):
        FileClaims(path).read()
    path.write_text("{")
    with pytest.raises(ClaimsError, match="cannot be read"):
        FileClaims(path).read()
    assert not list(tmp_path.glob("*.lock"))  # the lock is released whatever happened


def test_a_deleted_studys_claims_do_not_haunt_the_study_that_reuses_its_id(tmp_path: Path) -> None:
    from hwnas.search.bench import BenchProblem
    from hwnas.search.run import create_search

    problem, ev = BenchProblem("nb201", "nb201:cifar10", ("acc", "flops")).build()
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = create_search(problem, url, "a", "random", ev.evaluate)
    first.run(5)
    optuna.delete_study(study_name="a", storage=url)
    second = create_search(problem, url, "a", "random", ev.evaluate, seed=1)
    assert second.study._study_id == first.study._study_id  # SQLite reuses the id
    second.run(5)
    record = second.claims.read()
    assert record["evaluations"] == 5 and len(record["trained"]) == 5
    trials = second.study.get_trials()
    assert all(trials[n].user_attrs["genotype"] == g for g, n in record["trained"].items())


def test_an_interrupt_while_a_batch_is_told_loses_none_of_its_trainings() -> None:
    """Ctrl-C / SIGTERM lands while a batch's results are being written: the trials not yet told are told what
    they got (their trainings are not thrown away), none is left RUNNING, and the claims end with them."""
    import optuna

    from hwnas.search.bench import BenchProblem
    from hwnas.search.claims import claims_of
    from hwnas.search.run import create_search

    problem, ev = BenchProblem("nb201-acc-flops", "nb201:cifar10", ("acc", "flops"), population=8).build()
    search = create_search(problem, optuna.storages.InMemoryStorage(), "s", "random", ev.evaluate, seed=0,
                           population=8, parallel=3)
    calls = []

    def on_trial(t: Any) -> None:  # the first trial told: the interrupt lands mid-batch
        calls.append(t.number)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.run(3, on_trial)
    trials = search.study.get_trials(deepcopy=False)
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["trained"] for t in trials)
    record = claims_of(search.study).read()
    assert record["running"] == {} and record["evaluations"] == 3 and len(record["trained"]) == 3


def test_a_signal_while_a_batch_is_told_waits_for_the_batch(tmp_path: Path) -> None:
    """With hwnas's handler (the CLI's), SIGTERM arriving while results are written is held until the batch is
    told: every trial of it is COMPLETE, no further batch is asked, and the claims end with it."""
    import os
    import signal

    from hwnas import interrupts
    from hwnas.search.bench import BenchProblem
    from hwnas.search.run import create_search

    problem, ev = BenchProblem("nb201-acc-flops", "nb201:cifar10", ("acc", "flops"), population=8).build()
    search = create_search(problem, f"sqlite:///{tmp_path / 's.db'}", "s", "random", ev.evaluate, seed=0,
                           population=8, parallel=3)
    storage, sent, told = search.study._storage, [], []
    write = storage.set_trial_user_attr

    def set_trial_user_attr(trial_id: int, key: str, value: Any) -> None:  # the signal lands in a storage call
        if key == "acc" and not sent:
            sent.append(trial_id)
            os.kill(os.getpid(), signal.SIGTERM)
        write(trial_id, key, value)

    storage.set_trial_user_attr = set_trial_user_attr

    def on_trial(t: Any) -> None:
        told.append(t.number)

    old = interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            search.run(30, on_trial)
    finally:
        interrupts.restore(old)
    trials = search.study.get_trials(deepcopy=False)
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert told == [0, 1, 2]  # told as usual (not by the clean-up after an interrupt in the middle)
    record = claims_of(search.study).read()
    assert record["running"] == {} and record["evaluations"] == 3
