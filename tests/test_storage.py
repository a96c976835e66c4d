"""Optuna storage URLs: a password in one is never shown, printed, logged or stored (``mask_url``), and a damaged
SQLite study file is reported as damaged, not as somebody else's database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
from test_search import CheapObjective

from conftest import assert_usage_error, hwnas
from hwnas.search.problem import Problem
from hwnas.search.run import create_search
from hwnas.space import SearchSpace

SECRET = "s3cret"
PG = f"postgresql://u:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1 (and no driver): fails at once


@pytest.mark.parametrize(("url", "masked"), [
    (PG, "postgresql://u:***@127.0.0.1:1/db"),
    ("mysql+pymysql://user:p%40ss@db.example:3306/hwnas?charset=utf8", "mysql+pymysql://user:***@db.example:3306/"
     "hwnas?charset=utf8"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unescaped @ in the password: all of it hidden
    ("postgresql://u@h/db?sslmode=require&password=pp", "postgresql://u@h/db?sslmode=require&password=***"),
    ("sqlite:///search/runs/x.db?password=pp", "sqlite:///search/runs/x.db?password=***"),
    ("sqlite:///search/runs/x.db", "sqlite:///search/runs/x.db"),  # nothing to hide: unchanged
    ("postgresql://h/db", "postgresql://h/db"),
    ("not a url://u:pw@h", "not a url://u:***@h"),  # SQLAlchemy cannot parse it: the pattern still applies
])
def test_mask_url(url: str, masked: str) -> None:
    from hwnas.urls import mask_url

    assert mask_url(url) == masked


def test_hide_secrets_in_messages() -> None:
    from hwnas.urls import hide_secrets

    msg = f"cannot connect to {PG}: password authentication failed for {SECRET!r}"
    assert hide_secrets(msg, PG) == "cannot connect to postgresql://u:***@127.0.0.1:1/db: password authentication " \
        "failed for '***'"


def _no_secret(r: object) -> None:
    out = r.stdout + r.stderr  # type: ignore[attr-defined]
    assert SECRET not in out, out


def test_search_export_and_transfer_never_show_the_password(tmp_path: Path) -> None:
    r = hwnas("search", "--benchmark", "nb201:cifar10", "--trials", "2", "--run-dir", str(tmp_path / "runs"),
              "--storage", PG, "--study-name", "s")
    _no_secret(r)
    assert_usage_error(r, "cannot open storage postgresql://u:***@127.0.0.1:1/db")
    r = hwnas("export", "--storage", PG, "--study-name", "s", "--pareto", "-o", str(tmp_path / "out"))
    _no_secret(r)
    assert_usage_error(r, "cannot open storage postgresql://u:***@")
    r = hwnas("transfer", "--source-storage", PG, "--source-study", "s", "--trials", "1", "--device", "cpu",
              "--run-dir", str(tmp_path / "runs"))
    _no_secret(r)
    assert_usage_error(r, "cannot open storage postgresql://u:***@")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_a_password_in_a_working_storage_url_is_left_out_of_outputs_and_the_resume_command(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 's.db'}?password={SECRET}"  # SQLite ignores the parameter: a storage that works
    r = hwnas("search", "--benchmark", "nb201:cifar10", "--trials", "2", "--run-dir", str(runs), "--storage", url,
              "--study-name", "s")
    assert r.returncode == 0, r.stderr
    _no_secret(r)
    resume = r.stderr.split("resume or extend: ", 1)[1]
    assert f"--storage 'sqlite:///{runs / 's.db'}?password=***' --resume" in resume
    assert "the password is left out" in resume
    assert SECRET not in (runs / "s" / "pareto.json").read_text()
    assert json.loads((runs / "s" / "pareto.json").read_text())["storage"].endswith("password=***")


@pytest.fixture(scope="module")
def source_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small real source study (the cheap deterministic evaluator), in a storage URL with a password."""
    root = tmp_path_factory.mktemp("source")
    problem = Problem(SearchSpace.default(), budgets={"flops": 400e6}, resolution=32, num_classes=10)
    s = create_search(problem, f"sqlite:///{root / 'src.db'}", "cifar", "random", CheapObjective(), seed=1,
                      population=4)
    s.run(3)
    return f"sqlite:///{root / 'src.db'}?password={SECRET}"


def test_transfer_stores_and_prints_the_source_storage_without_its_password(source_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    r = hwnas("transfer", "--source-storage", source_url, "--source-study", "cifar", "--trials", "1",
              "--population", "2", "--epochs", "0.05", "--target-resolution", "32", "--device", "cpu", "--run-dir",
              str(runs), "--study-name", "t")
    assert r.returncode == 0, r.stderr
    _no_secret(r)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{runs / 't.db'}")
    assert SECRET not in json.dumps(study.user_attrs)
    assert study.user_attrs["transfer"]["source_storage"].endswith("password=***")
    assert SECRET not in (runs / "t" / "pareto.json").read_text()
    plain = source_url.split("?")[0]  # (SQLAlchemy warns that SQLite ignores the parameter: not a one-line error)
    r = hwnas("transfer", "--source-storage", plain, "--source-study", "cifar", "--trials", "1", "--device",
              "cpu", "--run-dir", str(runs), "--storage", PG, "--study-name", "t2")
    _no_secret(r)
    assert_usage_error(r, "cannot open storage postgresql://u:***@")


def test_export_sidecar_names_the_storage_without_its_password(source_url: str, tmp_path: Path) -> None:
    r = hwnas("export", "--storage", source_url, "--study-name", "cifar", "--trial", "0", "-o", str(tmp_path / "e"),
              "--no-latency", "--resolution", "32", "--json")
    assert r.returncode == 0, r.stderr
    _no_secret(r)
    sidecar = json.loads((tmp_path / "e" / "trial-0.json").read_text())
    assert sidecar["source"]["storage"].endswith("password=***")


# ---- damaged SQLite files ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("good")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{root / 'g.db'}", study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    return (root / "g.db").read_bytes()


def _damaged(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "overwritten":  # the page holding the studies table intact, pages after it garbage
        third = len(data) // 3
        return data[:third] + b"\xff" * 8192 + data[third + 8192:]
    if how == "header":
        return b"this is not SQLite" + data[18:]
    return b"some text\n" * 100  # "text": not a database at all


@pytest.mark.parametrize("how", ["truncated", "overwritten", "header", "text"])
def test_a_damaged_sqlite_study_is_reported_as_damaged(good_db: bytes, tmp_path: Path, how: str) -> None:
    db = tmp_path / "study.db"
    db.write_bytes(_damaged(good_db, how))
    before = db.read_bytes()
    url = f"sqlite:///{db}"
    r = hwnas("export", "--storage", url, "--study-name", "s", "--pareto", "-o", str(tmp_path / "out"))
    assert_usage_error(r, f"{url} is damaged or not an SQLite database (")
    assert "not an Optuna study storage" not in r.stderr
    r = hwnas("search", "--benchmark", "nb201:cifar10", "--trials", "1", "--storage", url, "--study-name", "s",
              "--resume", "--run-dir", str(tmp_path / "runs"))
    assert_usage_error(r, f"{url} is damaged or not an SQLite database (")
    assert db.read_bytes() == before  # looked at, never written


def test_a_valid_sqlite_file_without_optuna_tables_is_not_a_study_storage(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (x)")
    r = hwnas("export", "--storage", f"sqlite:///{db}", "--study-name", "s", "--pareto", "-o", str(tmp_path / "o"))
    assert_usage_error(r, "is not an Optuna study storage (no studies table)")


def test_the_optuna_tables_checked_are_the_installed_optuna_s() -> None:
    from optuna.storages._rdb import models

    from hwnas.cli.common import OPTUNA_TABLES

    assert set(OPTUNA_TABLES) == {*models.BaseModel.metadata.tables, "alembic_version"}


@pytest.mark.parametrize("sql", ["DROP TABLE trial_intermediate_values", "DELETE FROM alembic_version",
                                 "DELETE FROM version_info"])
def test_an_incomplete_optuna_storage_is_refused_and_left_unwritten(good_db: bytes, tmp_path: Path, sql: str) -> None:
    """Optuna would create the missing table or version row on opening the file, even to read it."""
    db = tmp_path / "study.db"
    db.write_bytes(good_db)
    with sqlite3.connect(db) as c:
        c.execute(sql)
    c.close()
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    r = hwnas("export", "--storage", f"sqlite:///{db}", "--study-name", "s", "--pareto", "-o", str(tmp_path / "o"))
    assert_usage_error(r, "is not a complete Optuna study storage (")
    assert sql.split()[-1] in r.stderr
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]


def test_resuming_from_an_empty_file_is_refused_and_the_file_left_empty(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    db.write_bytes(b"")
    r = hwnas("search", "--benchmark", "nb201:cifar10", "--trials", "1", "--storage", f"sqlite:///{db}",
              "--study-name", "s", "--resume", "--run-dir", str(tmp_path / "runs"))
    assert_usage_error(r, "no study 's' in ")
    assert "to resume" in r.stderr
    assert db.read_bytes() == b""


def test_a_storage_another_process_is_still_creating_is_waited_for(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A second worker (or a dashboard, a script) may be creating the SQLite storage as the search opens it: its
    tables appear one by one. That half-made file is looked at again while it changes, not refused."""
    import threading

    from hwnas.cli import common

    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    with sqlite3.connect(db) as con:  # what a creator has written so far: one table of Optuna's
        con.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name VARCHAR(512))")
    con.close()
    check, looks = common._check_sqlite_study_file, []
    creator = threading.Thread(target=optuna.storages.RDBStorage, args=(url,))  # writes the rest

    def look(storage: str, path: Path) -> None:
        looks.append(path)
        if not creator.ident:
            creator.start()  # the creator goes on only after the first look found the file half-made
        check(storage, path)

    monkeypatch.setattr(common, "_check_sqlite_study_file", look)
    common.check_sqlite_study_file(url, db)
    creator.join()
    assert len(looks) >= 2
    with sqlite3.connect(db) as con:  # a half-made file nobody writes gets its verdict at the first look
        con.execute("DROP TABLE study_directions")
    con.close()
    looks.clear()
    with pytest.raises(common.UsageError, match="missing table study_directions"):
        common.check_sqlite_study_file(url, db)
    assert len(looks) == 1
