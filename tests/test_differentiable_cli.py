"""hwnas search --strategy darts|gdas: one gradient run per trial, recorded in the study, resumable."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hwnas.cli import main
from hwnas.evaluators.tabular import TabularEvaluator
from hwnas.spaces.nb201 import NB201Space

RECIPE = """[search]
benchmark = "nb201:cifar10"
strategy = "{strategy}"
[profile.cpu]
trials = 2
[differentiable]
epochs = 2
batch_size = 32
C = 2
N = 1
max_train_images = 128
max_val_images = 128
{extra}
"""


def _recipe(tmp_path: Path, strategy: str = "gdas", extra: str = "") -> str:
    p = tmp_path / f"{strategy}-{len(list(tmp_path.glob('*.toml')))}.toml"
    p.write_text(RECIPE.format(strategy=strategy, extra=extra))
    return str(p)


def _code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code or 0)


@pytest.mark.parametrize("strategy", ["darts", "gdas"])
def test_gradient_search_records_each_run_and_resumes(strategy: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--recipe", _recipe(tmp_path, strategy, "cost_coef = 0.5"), "--run-dir", str(tmp_path),
            "--study-name", "g", "--table", "nb201:pixel3", "--objectives", "acc,latency"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{strategy} run 0 (seed 0)" in err and "run 1 (seed 1)" in err and "latency:pixel3" in err
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'g.db'}")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    for t in trials:
        rec = t.user_attrs["differentiable"]
        assert rec["arch"] == t.user_attrs["genotype"] and rec["settings"]["method"] == strategy
        assert len(rec["alpha_history"]) == 2 and len(rec["alpha_history"][0]) == 6
        assert rec["cost_model"]["name"] == "latency:pixel3" and rec["expected_cost"] > 0
        table = TabularEvaluator("nb201:cifar10").evaluate(NB201Space().parse(rec["arch"])).acc
        assert t.user_attrs["acc"] == table  # the benchmark's accuracy of the derived cell
    assert (tmp_path / "g" / "alphas.png").stat().st_size > 0
    assert main([*argv, "--storage", f"sqlite:///{tmp_path / 'g.db'}", "--resume", "--trials", "3"]) == 0
    err = capsys.readouterr().err
    assert "run 2 (seed 2)" in err and "run 0 (seed" not in err and "run 1 (seed" not in err  # not repeated


def test_gradient_search_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["search", "--strategy", "darts", "--run-dir", str(tmp_path)], "NAS-Bench-201's cell space"),
        (["search", "--recipe", _recipe(tmp_path, extra="depth = 3"), "--run-dir", str(tmp_path)],
         "unknown key(s) in [differentiable]: depth"),
        (["search", "--recipe", _recipe(tmp_path, extra="lr = -1.0"), "--run-dir", str(tmp_path)], "lr must be"),
        (["search", "--recipe", _recipe(tmp_path), "--strategy", "nsga2", "--run-dir", str(tmp_path)],
         "[differentiable] sets the darts and gdas"),
        (["search", "--recipe", _recipe(tmp_path, extra='cost_form = "target"'), "--run-dir", str(tmp_path)],
         "cost_target"),
        (["search", "--recipe", _recipe(tmp_path), "--objectives", "acc,latency", "--table", "cpu-xeon-2c",
          "--run-dir", str(tmp_path)], ""),
        (["search", "--recipe", _recipe(tmp_path), "--workers", "2", "--run-dir", str(tmp_path)], "--workers"),
    ]
    for argv, match in cases:
        capsys.readouterr()
        assert _code(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("hwnas") and match in err[-1], (argv, err)
    assert not list(tmp_path.glob("*.db"))
