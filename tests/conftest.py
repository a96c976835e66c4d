"""Shared test helpers: hypothesis strategies and seeded generators of arbitrary genotypes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from hwnas.genotype import ACTIVATIONS, Genotype, Stage


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the cores are shared out: each test process (and the CLI processes it starts) uses
    its share of threads, not all of them (torch's threads spin: oversubscribed, every process slows)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny networks: one torch thread is faster than two spinning on a shared machine (restored after). A
    module asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _own_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never write into the user's ~/.cache/hwnas: the CLI's default cache is one of this session's."""
    before = os.environ.get("HWNAS_CACHE")
    base = tmp_path_factory.getbasetemp()  # under pytest-xdist, one per worker: their parent is this run's
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    os.environ["HWNAS_CACHE"] = str(shared / "hwnas-cache")  # one decoding of each dataset per run
    yield
    if before is None:
        os.environ.pop("HWNAS_CACHE", None)
    else:
        os.environ["HWNAS_CACHE"] = before


@st.composite
def stages(draw: st.DrawFn) -> Stage:
    op = draw(st.sampled_from(["ir", "ds"]))
    return Stage(
        op=op,
        repeats=draw(st.integers(1, 5)),
        kernel=draw(st.sampled_from([1, 3, 5, 7, 9])),
        stride=draw(st.sampled_from([1, 2])),
        expansion=1 if op == "ds" else draw(st.integers(2, 8)),
        channels=draw(st.integers(1, 512)),
        se_ratio=draw(st.one_of(st.just(0.0), st.floats(0.01, 1.0, allow_nan=False))),
        skip=draw(st.booleans()),
    )


@st.composite
def genotypes(draw: st.DrawFn) -> Genotype:
    return Genotype(
        activation=draw(st.sampled_from(ACTIVATIONS)),
        stem=draw(st.integers(1, 128)),
        stages=tuple(draw(st.lists(stages(), min_size=1, max_size=8))),
        head=draw(st.integers(1, 2048)),
    )


def arbitrary_genotype(rng: np.random.Generator, max_channels: int = 96) -> Genotype:
    """A random genotype *outside* any search space: odd channel counts, kernel 1..7, any SE ratio."""
    stages_ = []
    for _ in range(int(rng.integers(1, 6))):
        op = "ds" if rng.random() < 0.3 else "ir"
        stages_.append(Stage(
            op=op, repeats=int(rng.integers(1, 4)), kernel=int(rng.choice([1, 3, 5, 7])),
            stride=int(rng.integers(1, 3)), expansion=1 if op == "ds" else int(rng.integers(2, 7)),
            channels=int(rng.integers(1, max_channels)),
            se_ratio=float(rng.choice([0.0, 0.25, round(float(rng.uniform(0.05, 1.0)), 3)])),
            skip=bool(rng.random() < 0.7),
        ))
    return Genotype(activation=str(rng.choice(ACTIVATIONS)), stem=int(rng.integers(3, 48)),
                    stages=tuple(stages_), head=int(rng.integers(8, 400)))


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder filled by ``make(folder)`` once per test run and shared by the test processes (pytest-xdist's
    workers would each make their own module-scoped copy): a measured latency table, a searched study. The
    first process to ask makes it under a lock; the others wait and read it. Tests only read it: one that
    changes it works on a copy. A ``make`` that fails leaves nothing: the next test to ask tries again."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made-once"
    root.mkdir(exist_ok=True)
    folder, made = root / name, root / f"{name}.made"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                make(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            made.touch()
    return folder


def completed_to_file(r: subprocess.CompletedProcess[str], path: Path) -> None:
    path.write_text(json.dumps({"args": list(r.args), "returncode": r.returncode, "stdout": r.stdout,
                                "stderr": r.stderr}))


def completed_from_file(path: Path) -> subprocess.CompletedProcess[str]:
    d = json.loads(path.read_text())
    return subprocess.CompletedProcess(d["args"], d["returncode"], d["stdout"], d["stderr"])


def hwnas(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a real subprocess (the console script's code path)."""
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def hwnas_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process (``hwnas.cli.main``), for the commands that end in a usage error: the same
    parser, checks and messages as ``hwnas()`` without a new interpreter importing torch (3-4 s each, the
    better part of the suite's time when every bad input started one). An exception that escapes ``main`` is
    what the console script would print as a traceback with exit code 1: it is returned as such."""
    import contextlib
    import io
    import traceback

    from hwnas.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(args))
            except SystemExit as e:  # argparse's own errors and --help
                rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            except Exception:
                traceback.print_exc()
                rc = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["hwnas", *args], rc, out.getvalue(), err.getvalue())


def assert_usage_error(r: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Bad input: exit code 2 and one line on stderr, naming the problem, without a traceback."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(autouse=True)
def _signal_handlers_put_back() -> Iterator[None]:
    """Every test starts with the signal handlers the previous one found: a test that installs one (in-process
    ``hwnas.cli.main`` sets SIGTERM's, an evaluator holds SIGINT during a step) cannot leave it to the next."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A PostgreSQL cluster of this test session (tests/pgcluster.py); each test makes its own database."""
    import pgcluster as pg

    why = pg.available()
    if why:
        pytest.skip(why)
    cluster = pg.Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def reproducible_random_operations(space: Any) -> list[np.ndarray]:
    """150 vectors from 50 rounds of sample / mutate / crossover over ``space`` (seed 3), after checking that
    the same seed draws them again and another seed does not."""
    def run(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        out = []
        a, b = space.sample(rng), space.sample(rng)
        for _ in range(50):
            a = space.mutate(a, rng)
            c = space.crossover(a, b, rng)
            b = space.sample(rng)
            out += [a, b, c]
        return out

    first, again = run(3), run(3)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(first, run(4), strict=True))
    return first
