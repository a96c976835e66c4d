"""The README as a user reads it: its Python example runs as written and prints what it shows, every command
in its table exists, and it stays a short page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_python_example_runs_as_written_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    api = _section("Python API")
    code = re.search(r"```python\n(.*?)```", api, re.S)
    shown = re.search(r"It prints:\n\n```text\n(.*?)```", api, re.S)
    assert code and shown
    r = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == shown.group(1), r.stdout
    assert not r.stderr, r.stderr  # no warnings either
    assert not list(tmp_path.iterdir())  # an in-memory study: nothing written


@pytest.mark.parametrize("command", sorted({m.split()[0] for m in re.findall(r"^\| `hwnas ([a-z-]+)", README, re.M)}))
def test_every_command_in_the_readme_exists(command: str) -> None:
    from hwnas.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0


def test_the_readme_is_a_short_page_with_its_links_in_place() -> None:
    assert len(README.splitlines()) <= 250
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)", README):
        assert (ROOT / link).is_file(), link


def test_a_plot_the_docs_show_is_the_one_its_benchmark_wrote() -> None:
    # mkdocs serves only docs/, so a result plot the docs show is a copy; it must not drift from the result files
    copies = {"docs/img/bench.png": "benchmarks/results/bench/bench.png",
              "docs/img/distributed.png": "benchmarks/results/distributed.png",
              "docs/img/rl_controller.png": "benchmarks/results/rl_controller.png",
              "docs/img/differentiable.png": "benchmarks/results/differentiable.png",
              "docs/img/differentiable_mbconv.png": "benchmarks/results/differentiable_mbconv.png"}
    for copy, source in copies.items():
        assert (ROOT / copy).read_bytes() == (ROOT / source).read_bytes(), f"{copy} differs from {source}: copy it"
