"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl in a temporary folder, reached over a Unix
socket in that folder (no TCP port, no system service). As root the cluster runs as the ``postgres`` user
(initdb refuses root). ``available()`` says why not where the binaries or that user are missing."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def available() -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    if _bindir() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run the cluster as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[distributed]')"
    return None


class Cluster:
    """``start()``, ``stop()``, ``restart()``, ``kill()``; ``url(db)`` for SQLAlchemy; ``create_db(name)``. The tests
    run it with ``fsync`` off (nothing to keep); a benchmark of storage costs keeps PostgreSQL's default, on."""

    def __init__(self, fsync: bool = False) -> None:
        bindir = _bindir()
        assert bindir is not None
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8")
        conf = (f"listen_addresses = ''\nunix_socket_directories = '{self.sock}'\nfsync = {'on' if fsync else 'off'}\n"
                "max_connections = 200\nshared_buffers = 32MB\n")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(conf)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast", "-w", "-t", "60",
                  "restart")

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://{self.user}@/{db}?host={self.sock}"

    def create_db(self, name: str) -> str:
        import psycopg

        for attempt in range(20):
            try:
                with psycopg.connect(host=str(self.sock), user=self.user, dbname="postgres", autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:  # still starting up
                if attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.stop("immediate")
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
