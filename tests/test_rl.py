"""The reinforcement-learning controller (hwnas.search.rl): it learns in the right direction, avoids what the
budgets rule out, and refuses bad settings. Reproducibility and resume-by-replay are in test_search.py's
contracts (every strategy)."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.search.rl import Controller, ControllerSettings
from hwnas.spaces import get_space

SPACE = get_space("nb201")  # 6 dimensions of 5 operations


@pytest.mark.parametrize("kind", ["lstm", "factorised"])
def test_the_policy_moves_towards_a_choice_that_dominates(kind: str) -> None:
    """Reward 1 when the first edge's operation is choice 2, else 0.1: its probability must rise well above
    the uniform 0.2 (a flipped gradient sign would drive it to 0)."""
    c = Controller(SPACE, 0, lambda x: True, kind, ControllerSettings(lr=0.05, batch=4, entropy=0.0))
    before = c.probabilities()[0][2]
    for _ in range(160):
        x = c.ask()
        c.tell(x, [-(1.0 if x[0] == 2 else 0.1)], [])
    after = c.probabilities()[0][2]
    assert before == pytest.approx(0.2, abs=0.05) and after > 0.6, (before, after)
    assert len(c.history) >= 40 and c.history[-1]["reward"] > c.history[0]["reward"]  # repeats learnt from too


def test_what_a_budget_rules_out_is_learnt_from_without_being_proposed() -> None:
    feasible = lambda x: x[0] != 0  # noqa: E731 (choice 0 of the first edge breaks the budget)
    c = Controller(SPACE, 1, feasible, "factorised", ControllerSettings(lr=0.05, batch=4))
    asked = [c.ask() for _ in range(60)]
    for x in asked:
        c.tell(x, [-0.5], [])
    assert all(x[0] != 0 for x in asked)
    assert c.probabilities()[0][0] < 0.15  # from 0.2: penalised each time it was drawn


def test_pareto_mode_scalarises_with_a_weight_per_update() -> None:
    c = Controller(SPACE, 2, lambda x: True, "lstm", ControllerSettings(batch=2), n_obj=2)
    for i in range(8):
        x = c.ask()
        c.tell(x, [-0.5 - 0.01 * i, 10.0 * i], [])
    assert len(c.history) == 4 and all(0 <= h["reward"] <= 1 for h in c.history)


@pytest.mark.parametrize(("key", "value"), [("lr", 0), ("lr", "0.1"), ("batch", "4"), ("batch", 0), ("batch", 2.5),
                                            ("temperature", 0), ("baseline_decay", 1.0), ("hidden", True),
                                            ("entropy", float("nan"))])
def test_bad_settings_are_named(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"\\[controller\\] {key} must be"):
        ControllerSettings(**{key: value}).check()  # type: ignore[arg-type]


def test_an_unknown_setting_is_refused_by_create_search() -> None:
    from hwnas.search.bench import BenchProblem
    from hwnas.search.run import create_search

    problem, ev = BenchProblem("nb201", "nb201:cifar10").build()
    with pytest.raises(ValueError, match="unknown \\[controller\\] setting"):
        create_search(problem, None, "s", "reinforce", ev.evaluate, controller={"learning_rate": 0.1})


def test_the_same_seed_draws_the_same_architectures() -> None:
    a, b = (Controller(SPACE, 7, lambda x: True) for _ in range(2))
    assert all(np.array_equal(a.ask(), b.ask()) for _ in range(10))
