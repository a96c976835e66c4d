"""Proxy training of the cell spaces' own networks (NB201, NASNet/DARTS), in the trainer and in a search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.evaluators.training import Budget, Evaluator, Recipe
from hwnas.spaces import get_space


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("kind", ["nb201", "darts"])
def test_the_trainer_builds_each_space_s_network(kind: str) -> None:
    space = get_space(kind, {"channels": 4, "cells": 3} if kind == "darts" else None)
    arch = space.decode(space.sample(np.random.default_rng(1)))
    ev = Evaluator(_data(64), _data(32, seed=1), 10, Budget(epochs=1.0), Recipe(batch_size=32), "cpu", space=space)
    m = ev.evaluate(arch)
    assert m.ok and m.steps == 2 and 0 <= (m.val_acc or 0) <= 1 and m.genotype == arch.to_string()
    bare = Evaluator(_data(64), _data(32, seed=1), 10, Budget(epochs=1.0), Recipe(batch_size=32), "cpu")
    failed = bare.evaluate(arch)  # without its space the architecture cannot be built: a failed candidate
    assert not failed.ok and "space" in (failed.failure or "")


def test_search_trains_the_darts_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "darts.toml"
    recipe.write_text('[search]\nstrategy = "random"\n[space]\nkind = "darts"\nchannels = 4\ncells = 3\n'
                      "[profile.cpu]\nepochs = 0.05\nbatch_size = 64\ntrials = 2\n")
    assert main(["search", "--recipe", str(recipe), "--run-dir", str(tmp_path), "--study-name", "d"]) == 0
    out = json.loads((tmp_path / "d" / "pareto.json").read_text())
    assert out["evaluated"] == 2 and out["failed"] == 0
    assert all(r["genotype"].startswith("darts:") and r["flops"] > 0 for r in out["pareto"])
    assert out["problem"]["space_config"] == {"channels": 4, "cells": 3, "stem_multiplier": 3}
    capsys.readouterr()
    assert main(["search", "--space", "nb201", "--run-dir", str(tmp_path), "--recipe", str(_width(tmp_path))]) == 2
    assert "proxy_width" in capsys.readouterr().err


def _width(tmp_path: Path) -> Path:
    p = tmp_path / "w.toml"
    p.write_text('[space]\nkind = "nb201"\n[profile.cpu]\nproxy_width = 0.5\n')
    return p
