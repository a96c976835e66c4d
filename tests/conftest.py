"""Shared test helpers: hypothesis strategies and seeded generators of arbitrary genotypes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from hwnas.genotype import ACTIVATIONS, Genotype, Stage


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the cores are shared out: each test process (and the CLI processes it starts) uses
    its share of threads, not all of them (torch's threads spin: oversubscribed, every process slows)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


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


def hwnas(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a real subprocess (the console script's code path)."""
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


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
