"""Claims: what the workers of one study have taken, kept beside the study in its storage (no torch).

Several processes may search one study at once (``hwnas search`` started N times against one storage). A
genotype must not be trained twice and the study's budget of evaluations is shared, so before training a worker
*claims* what it trains, in one transaction over a small record per study that every worker reads and writes
under the storage's own serialisation:

* an RDB storage (PostgreSQL, MySQL, SQLite): one row per study in the table ``hwnas_claims`` of the same
  database, locked for the transaction by an ``UPDATE`` of its version counter (a row lock on PostgreSQL and
  MySQL, the database's write lock on SQLite) before it is read;
* a journal file (Optuna's ``JournalStorage`` over ``JournalFileBackend``, for a shared file system without a
  database): a JSON file beside the journal, ``PATH.hwnas-claims.json``, rewritten atomically under an
  ``O_EXCL`` lock file (Optuna's ``JournalFileOpenLock``: NFSv3 and later);
* in memory (one process): a dict under a thread lock.

The record is a JSON object; what it holds is up to the caller (``hwnas.search.run``): the genotypes being
trained and by whom, those trained, the evaluations spent, the worker ranks. A transaction is a function of
the record that changes it in place and returns a value; it runs with the record locked, so it must be quick
and must not touch the storage itself.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna

T = TypeVar("T")
Transaction = Callable[[dict[str, Any]], T]

TABLE = "hwnas_claims"
RETRIES = 8  # creating the table and the row: tried again when another worker raced this one
RETRY_S = 120.0  # how long a worker keeps retrying through a lost database connection (backoff 0.2 s .. 10 s)


def connection_lost(e: BaseException | None) -> bool:
    """Whether ``e`` (or what caused it: Optuna wraps SQLAlchemy's errors) is a lost or refused database
    connection, a deadlock or a busy SQLite file: worth trying again."""
    import sqlalchemy.exc

    while e is not None:
        if isinstance(e, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
                      | sqlalchemy.exc.PendingRollbackError) or \
                (isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated):
            return True
        e = e.__cause__
    return False


class ClaimsError(RuntimeError):
    """The claims record cannot be read or written (the storage is gone, the record damaged)."""


class Claims:
    """A study's claims record; ``transact(fn)`` runs ``fn(record)`` atomically and returns its value."""

    def transact(self, fn: Transaction[T]) -> T:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self) -> dict[str, Any]:
        """A copy of the record as it is now (no lock held afterwards)."""
        return self.transact(lambda r: json.loads(json.dumps(r)))


def _parse(text: str, where: str) -> dict[str, Any]:
    """The record stored as ``text``; a ClaimsError naming ``where`` if it is no JSON object."""
    try:
        record = json.loads(text)
    except ValueError as e:
        raise ClaimsError(f"{where} cannot be read: {e}") from e
    if not isinstance(record, dict):
        raise ClaimsError(f"{where} is damaged (not a JSON object)")
    return record


class MemoryClaims(Claims):
    """One process's claims (an in-memory study): a dict and a lock."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self.lock = threading.Lock()

    def transact(self, fn: Transaction[T]) -> T:
        with self.lock:
            work = json.loads(json.dumps(self.record))
            out = fn(work)
            self.record = work  # only a transaction that returned changes the record
            return out


class FileClaims(Claims):
    """Claims in a JSON file, under a lock file (beside a journal file on a shared file system)."""

    def __init__(self, path: Path | str) -> None:
        from optuna.storages.journal import JournalFileOpenLock

        self.path = Path(path)
        self.lock = JournalFileOpenLock(str(self.path))  # PATH.lock, O_EXCL; taken over after 30 s unreleased

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock.acquire()
        try:
            yield
        finally:
            with contextlib.suppress(RuntimeError):  # taken over after its grace period: nothing to release
                self.lock.release()

    def read(self) -> dict[str, Any]:
        """The record without taking the lock: every write replaces the file whole (atomically)."""
        try:
            text = self.path.read_text() if self.path.exists() else "{}"
        except OSError as e:
            raise ClaimsError(f"the claims file {self.path} cannot be read: {e}") from e
        return _parse(text, f"the claims file {self.path}")

    def transact(self, fn: Transaction[T]) -> T:
        from hwnas.atomic import write_atomic

        with self._locked():
            record = self.read()
            before = json.dumps(record, sort_keys=True)
            out = fn(record)
            if json.dumps(record, sort_keys=True) != before:
                write_atomic(self.path, json.dumps(record), fsync=True)
            return out


class RDBClaims(Claims):
    """Claims in the table ``hwnas_claims`` of an RDB storage's database, one row per study."""

    def __init__(self, engine: Any, study_id: int) -> None:
        import sqlalchemy as sa

        self.engine, self.study_id = engine, study_id
        meta = sa.MetaData()
        self.table = sa.Table(TABLE, meta, sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
                              sa.Column("version", sa.BigInteger, nullable=False),
                              sa.Column("record", sa.Text, nullable=False))
        for attempt in range(RETRIES):  # several workers starting at once race to create the table and the row
            try:
                meta.create_all(engine, checkfirst=True)
                with engine.begin() as con:
                    if con.execute(sa.select(self.table.c.study_id).where(
                            self.table.c.study_id == study_id)).first() is None:
                        con.execute(self.table.insert().values(study_id=study_id, version=0, record="{}"))
                return
            except sa.exc.DBAPIError:  # the other one made it first (IntegrityError, a duplicate table type)
                if attempt == RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def read(self) -> dict[str, Any]:
        """The record as last committed: a plain SELECT, no lock (each transaction writes it whole)."""
        import sqlalchemy as sa

        t = self.table

        def once() -> dict[str, Any]:
            with self.engine.connect() as con:
                text = con.execute(sa.select(t.c.record).where(t.c.study_id == self.study_id)).scalar_one()
            return _parse(text, f"the claims record of study {self.study_id}")

        return self._retry(once)

    def _retry(self, call: Callable[[], T]) -> T:
        """``call()``, again with backoff (0.2 s doubling to 10 s, up to ``RETRY_S``) while the database is out of
        reach."""
        import sqlalchemy as sa

        waited, pause = 0.0, 0.2
        while True:
            try:
                return call()
            except sa.exc.DBAPIError as e:
                if not connection_lost(e) or waited >= RETRY_S:
                    raise
            time.sleep(pause)
            waited, pause = waited + pause, min(10.0, pause * 2)

    def transact(self, fn: Transaction[T]) -> T:
        import sqlalchemy as sa

        t, where = self.table, f"the claims record of study {self.study_id}"

        def once() -> T:
            with self.engine.begin() as con:
                # the lock first: a write, so that no other transaction reads the record before this one ends
                con.execute(t.update().where(t.c.study_id == self.study_id).values(version=t.c.version + 1))
                text = con.execute(sa.select(t.c.record).where(t.c.study_id == self.study_id)).scalar_one()
                record = _parse(text, where)
                out = fn(record)
                if (after := json.dumps(record)) != text:
                    con.execute(t.update().where(t.c.study_id == self.study_id).values(record=after))
            return out

        return self._retry(once)  # a dropped connection, a deadlock, a busy SQLite file: again


def claims_of(study: optuna.Study) -> Claims:
    """The claims record of ``study``, kept where its storage keeps the study."""
    storage: Any = study._storage
    if isinstance(storage, optuna.storages._CachedStorage):  # how Optuna wraps an RDBStorage
        storage = storage._backend
    if isinstance(storage, optuna.storages.RDBStorage):
        return RDBClaims(storage.engine, study._study_id)
    if isinstance(storage, optuna.storages.JournalStorage):
        backend = getattr(storage, "_backend", None)
        path = getattr(backend, "_file_path", None)  # JournalFileBackend's file (no public accessor)
        if path is None:
            raise ClaimsError("claims need a journal file (JournalFileBackend); this journal keeps no file")
        return FileClaims(f"{path}.hwnas-claims-{study._study_id}.json")
    return _MEMORY.setdefault(storage, {}).setdefault(study._study_id, MemoryClaims())


# an in-memory storage's claims live as long as the storage object does
_MEMORY: weakref.WeakKeyDictionary[Any, dict[int, MemoryClaims]] = weakref.WeakKeyDictionary()
