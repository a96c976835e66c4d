"""Search: a contract suite over every strategy (cheap deterministic objective), problem/reward maths,
units, and reports. The CLI end to end on real images is in test_search_cli.py."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from optuna.trial import TrialState

from hwnas.genotype import Genotype
from hwnas.references import reference
from hwnas.search.problem import STRATEGIES, Problem, ProblemError
from hwnas.search.report import feasible_rows, hypervolume, pareto_front, write_outputs
from hwnas.search.run import EvalResult, SearchStopped, create_search
from hwnas.space import SearchSpace, SpaceError
from hwnas.units import parse_count, parse_ms
from hwnas.walker import flops, params

SPACE = SearchSpace.default()
BUDGET = 250e6


class CheapObjective:
    """Deterministic stand-in for training (contract tests only): bigger networks score higher, with a
    genotype-dependent wiggle. Counts calls so tests can check what was (not) trained."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.batches: list[int] = []

    def many(self, gs: list[Genotype]) -> list[EvalResult]:
        self.batches.append(len(gs))
        return [self(g) for g in gs]

    def __call__(self, g: Genotype) -> EvalResult:
        self.calls.append(g.to_string())
        f = flops(g, 224)
        wiggle = (sum(map(ord, g.to_string())) % 97) / 2000
        return EvalResult(1 - math.exp(-f / 1.5e8) * 0.8 - wiggle, details={"train_seconds": 0.0})


def problem(**kw) -> Problem:  # type: ignore[no-untyped-def]
    return Problem(SPACE, budgets={"flops": BUDGET}, **kw)


def run(strategy: str, n: int, seed: int = 0, storage=None, name: str = "s", resume: bool = False,  # type: ignore[no-untyped-def]
        obj: CheapObjective | None = None, prob: Problem | None = None, parallel: int = 1):
    obj = obj or CheapObjective()
    s = create_search(prob or problem(), storage, name, strategy, obj, seed=seed, population=4, resume=resume,
                      evaluate_many=obj.many, parallel=parallel)
    if resume:
        s.recover()
    s.seed_population()
    s.run(n)
    return s, obj


def trials_for(strategy: str) -> int:
    """Trials per contract run: GP fits Gaussian processes (one per objective and constraint) and optimises its
    acquisition for every proposal, seconds each on a CPU: 6 trials, 2 of them past its 4 seeded ones."""
    return 6 if strategy == "gp" else 10


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_contract_seeded_constrained_no_repeats(strategy: str) -> None:
    n = trials_for(strategy)
    s1, obj1 = run(strategy, n, seed=3)
    s2, _ = run(strategy, n, seed=3)
    g1 = [t.user_attrs["genotype"] for t in s1.study.trials]
    g2 = [t.user_attrs["genotype"] for t in s2.study.trials]
    assert g1 == g2, "same seed, same evaluator -> same trials"
    assert s1.trained_count() == n == len(obj1.calls)
    assert len(set(obj1.calls)) == len(obj1.calls), "a genotype is never trained twice"
    assert all(flops(Genotype.from_string(c), 224) <= BUDGET for c in obj1.calls), "infeasible never trained"
    for t in s1.study.trials:
        feasible = t.user_attrs["flops"] <= BUDGET
        assert t.user_attrs["feasible"] == feasible
        assert all(v <= 0 for v in t.constraints.values()) == feasible if t.constraints else True
    rows = feasible_rows(s1.study.trials)
    assert rows and all(r.flops <= BUDGET for r in pareto_front(rows, s1.problem))
    s3, _ = run(strategy, n, seed=4)
    assert [t.user_attrs["genotype"] for t in s3.study.trials] != g1, "another seed explores differently"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_contract_parallel_proposals(strategy: str) -> None:
    """Proposals asked three at a time and trained together keep the contract."""
    n = trials_for(strategy)
    s1, obj1 = run(strategy, n, seed=3, parallel=3)
    s2, _ = run(strategy, n, seed=3, parallel=3)
    assert [t.user_attrs["genotype"] for t in s1.study.trials] == [t.user_attrs["genotype"] for t in s2.study.trials]
    assert s1.trained_count() == n == len(obj1.calls) == len(set(obj1.calls))
    assert all(flops(Genotype.from_string(c), 224) <= BUDGET for c in obj1.calls)
    assert max(obj1.batches) > 1 and sum(obj1.batches) <= n
    assert all(t.state == TrialState.COMPLETE for t in s1.study.trials)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])  # Ctrl-C; an evaluator that cannot go on
def test_interrupt_during_a_parallel_batch_fails_and_requeues_all(tmp_path: Path, stop: type[BaseException]) -> None:
    class Interrupting(CheapObjective):
        def many(self, gs: list[Genotype]) -> list[EvalResult]:
            if len(self.calls) >= 2:
                raise stop
            return super().many(gs)

    url = f"sqlite:///{tmp_path / 'i.db'}"
    with pytest.raises(stop):
        run("random", 8, storage=url, name="i", obj=Interrupting(), parallel=3)
    s, obj = run("random", 8, storage=url, name="i", resume=True, parallel=3)
    interrupted = [t for t in s.study.trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 3 and all(t.state == TrialState.FAIL for t in interrupted)
    assert s.trained_count() == 8
    redone = {t.user_attrs["genotype"] for t in interrupted} & set(obj.calls)
    assert redone == {t.user_attrs["genotype"] for t in interrupted if t.user_attrs["feasible"]}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_contract_resume_loses_nothing(strategy: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    n = trials_for(strategy) - 1
    first, obj = run(strategy, 5, storage=url, name="r")
    before = {t.number: (t.user_attrs["genotype"], t.values) for t in first.study.trials}
    again, obj2 = run(strategy, n, storage=url, name="r", resume=True)
    after = {t.number: (t.user_attrs["genotype"], t.values) for t in again.study.trials}
    assert all(after[k] == v for k, v in before.items()), "finished trials are kept as they were"
    assert again.trained_count() == n and len(obj2.calls) == n - 5
    assert not set(obj2.calls) & set(obj.calls)


def test_a_damaged_study_is_refused_on_resume(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'd.db'}"
    run("random", 3, storage=url, name="d")
    with sqlite3.connect(tmp_path / "d.db") as con:
        assert con.execute("UPDATE trial_user_attributes SET value_json = '\"high\"' WHERE key = 'acc' AND "
                           "trial_id = (SELECT MAX(trial_id) FROM trials)").rowcount == 1
    with pytest.raises(ValueError, match=r"study 'd': trial 2 attribute acc must be an accuracy in \[0, 1\], got "
                       "'high'"):
        run("random", 5, storage=url, name="d", resume=True)


@pytest.mark.parametrize("value", ["NaN", "[1]", '"abc"', "3"])
def test_a_study_whose_settings_record_is_not_an_object_is_refused_on_resume(tmp_path: Path, value: str) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'd.db'}"
    run("random", 2, storage=url, name="d")
    with sqlite3.connect(tmp_path / "d.db") as con:
        assert con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = 'hwnas'", (value,)
                           ).rowcount == 1
    with pytest.raises(ValueError, match="study 'd': its settings record is damaged"):
        run("random", 3, storage=url, name="d", resume=True)


def test_replayed_strategies_resume_exactly(tmp_path: Path) -> None:
    """Ask/tell strategies rebuild their state by replay: resumed == uninterrupted."""
    for strategy in ("evolution", "pymoo-nsga2", "random", "reinforce", "reinforce-factorised"):
        whole, _ = run(strategy, 10, seed=5)
        url = f"sqlite:///{tmp_path / (strategy + '.db')}"
        run(strategy, 6, seed=5, storage=url, name="x")
        resumed, _ = run(strategy, 10, seed=5, storage=url, name="x", resume=True)
        assert [t.user_attrs["genotype"] for t in resumed.study.trials] == \
               [t.user_attrs["genotype"] for t in whole.study.trials], strategy


@pytest.mark.parametrize("strategy", ["evolution", "pymoo-nsga2", "random", "reinforce"])
def test_replayed_strategies_resume_exactly_in_batches_after_an_interrupt(strategy: str, tmp_path: Path) -> None:
    """Proposals two at a time, stopped at a clean point and interrupted inside a batch: the resumed study
    proposes and tells what the uninterrupted one did (re-queued trials replace the interrupted ones)."""
    class StopsAtThirdBatch(CheapObjective):
        def many(self, gs: list[Genotype]) -> list[EvalResult]:
            if len(self.batches) == 2:
                raise KeyboardInterrupt
            return super().many(gs)

    whole, _ = run(strategy, 12, seed=5, parallel=2)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    run(strategy, 4, seed=5, storage=url, name="x", parallel=2)
    with pytest.raises(KeyboardInterrupt):
        run(strategy, 12, seed=5, storage=url, name="x", resume=True, parallel=2, obj=StopsAtThirdBatch())
    resumed, _ = run(strategy, 12, seed=5, storage=url, name="x", resume=True, parallel=2)
    assert any(t.user_attrs.get("interrupted") for t in resumed.study.trials)
    kept = [t.user_attrs["genotype"] for t in resumed.study.trials if not t.user_attrs.get("interrupted")]
    assert kept == [t.user_attrs["genotype"] for t in whole.study.trials]


def test_killed_trial_is_recovered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    s, _ = run("evolution", 3, storage=url, name="k")
    t = s.study.ask()  # a trial left RUNNING by a process that no longer exists
    t.set_user_attr("worker", "nonexistent-host-xyz:1")
    for name, opts in SPACE.dims:
        t.suggest_categorical(name, list(opts))
    dead = s.study.ask()
    dead.set_user_attr("worker", f"{__import__('socket').gethostname()}:999999")
    for name, opts in SPACE.dims:
        dead.suggest_categorical(name, list(opts))
    again = create_search(problem(), url, "k", "evolution", CheapObjective(), population=4, resume=True)
    assert again.recover() == [dead.number]  # the other host's trial is left to its owner
    states = {tr.number: tr.state for tr in again.study.trials}
    assert states[dead.number] == TrialState.FAIL and states[t.number] == TrialState.RUNNING
    waiting = [tr for tr in again.study.trials if tr.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == dead.params


def test_a_trial_killed_after_its_result_was_written_is_completed_not_trained_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    s, _ = run("evolution", 2, storage=url, name="w")
    whole, half = s.study.ask(), s.study.ask()  # both left RUNNING by a process killed before its tell
    for t in (whole, half):
        t.set_user_attr("worker", f"{__import__('socket').gethostname()}:999999")
        for name, opts in SPACE.dims:
            t.suggest_categorical(name, list(opts))
        t.set_user_attr("acc", 0.5)
    whole.set_user_attr("trained", True)  # written last: its result is whole; ``half`` died before it
    again = create_search(problem(), url, "w", "evolution", CheapObjective(), population=4, resume=True)
    assert sorted(again.recover()) == sorted([whole.number, half.number])
    done = again.study.trials[whole.number]
    g = SPACE.decode(SPACE.from_choices(done.params))
    assert done.state == TrialState.COMPLETE and done.values == problem().values(0.5, problem().costs(g))
    assert again.study.trials[half.number].state == TrialState.FAIL  # re-queued to train
    assert [t.system_attrs["fixed_params"] for t in again.study.trials if t.state == TrialState.WAITING] == \
        [half.params]
    assert again.trained_count() == 3


def test_a_deadline_starts_no_batch_that_would_end_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    clock = [1000.0]  # each evaluation takes 10 s of this clock; the loop estimates from the ones done
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    class TenSeconds(CheapObjective):
        def __call__(self, g: Genotype) -> EvalResult:
            clock[0] += 10.0
            return super().__call__(g)

    obj = TenSeconds()
    s = create_search(problem(), None, "d", "random", obj, seed=0, population=4)
    assert s.run(10, deadline=1000.0 + 35.0) == "time"  # at 30 s the next would end at 40 s
    assert len(obj.calls) == s.trained_count() == 3 and clock[0] == 1030.0
    assert s.run(4, deadline=clock[0] + 35.0) == "trials"  # 3 were in: one more
    assert s.trained_count() == 4
    clock[0] += 100.0  # past the deadline before any batch of this run: the first one still starts
    assert s.run(6, deadline=clock[0] - 1.0) == "time" and s.trained_count() == 5


def test_settings_mismatch_on_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    run("random", 2, storage=url, name="m")
    with pytest.raises(ValueError, match="was run with other settings"):
        create_search(problem(), url, "m", "tpe", CheapObjective(), resume=True)


def test_tight_budget_is_bounded() -> None:
    tight = Problem(SPACE, budgets={"flops": 5e6})  # smaller than any network of the space
    for strategy in STRATEGIES:  # the same error, before any trial, whatever the strategy (seed_population)
        with pytest.raises(SpaceError, match=r"no acceptable architecture in 10000 samples"):
            run(strategy, 3, prob=tight)
    with pytest.raises(SearchStopped, match="proposals gave only 0"):
        s = create_search(tight, None, "t", "nsga2", CheapObjective(), population=4)
        s.run(2, max_proposals=30)
    s = create_search(tight, None, "r", "random", CheapObjective(), parallel=2)
    with pytest.raises(SpaceError, match="no feasible architecture"):
        s.run(2)
    assert s.study.trials and all(t.state == TrialState.FAIL for t in s.study.trials)  # none left RUNNING


def test_pymoo_out_of_new_offspring_stops_with_a_reason() -> None:
    d = tomllib.loads((Path(__file__).parent / "data" / "tiny-space.toml").read_text())["space"]
    d |= {"ops": ["ir"], "se_ratios": [0.0], "stages": [{**st, "layers": [1]} for st in d["stages"][:2]]}
    four = SearchSpace.from_dict(d)  # kernel 3 or 5 in each of two stages: 4 architectures
    for strategy in ("pymoo-nsga2", "pymoo-agemoea"):
        s = create_search(Problem(four, budgets={"flops": 1e12}), None, strategy, strategy, CheapObjective(),
                          population=6)
        with pytest.raises((SpaceError, SearchStopped)):  # not pymoo's None handed on (a TypeError)
            s.run(5)
        assert all(t.state != TrialState.RUNNING for t in s.study.trials)


@pytest.mark.parametrize("strategy", ["pymoo-nsga2", "pymoo-agemoea"])
def test_pymoo_sees_numeric_choices_in_value_order_whatever_the_recipe_order(strategy: str) -> None:
    """SBX and polynomial mutation step to neighbouring integers: the same space with its numeric choices
    listed in another order (kernels = [7, 3, 5]) must be searched the same way, network for network."""
    d = SPACE.to_dict()
    d["width_factors"], d["depth_factors"] = d["width_factors"][::-1], d["depth_factors"][::-1]
    d["stages"] = [{**st, **{k: st[k][::-1] for k in ("kernels", "expansions", "widths", "layers", "se_ratios")}}
                   for st in d["stages"]]
    shuffled = SearchSpace.from_dict(d)
    assert shuffled.dims != SPACE.dims
    runs = []
    for space in (SPACE, shuffled):
        s, _ = run(strategy, 12, seed=2, prob=Problem(space, budgets={"flops": BUDGET}))
        runs.append([t.user_attrs["genotype"] for t in s.study.trials])
    assert runs[0] == runs[1] and len(runs[0]) >= 12


def test_failed_training_is_a_failed_trial_not_a_dead_study() -> None:
    calls = []

    def flaky(g: Genotype) -> EvalResult:
        calls.append(g)
        return EvalResult(None, "cuda out of memory") if len(calls) % 3 == 0 else EvalResult(0.5)

    s = create_search(problem(), None, "f", "random", flaky, population=4)
    s.run(6)
    failed = [t for t in s.study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["failure"] == "cuda out of memory" for t in failed)


# ---- problem, rewards, units ------------------------------------------------------------------------
def test_mnas_rewards() -> None:
    soft = Problem(SPACE, reward="mnas-soft", budgets={"flops": 400e6})
    hard = Problem(SPACE, reward="mnas-hard", budgets={"flops": 400e6})
    assert soft.directions == ["maximize"] and soft.hard_budgets == {}
    assert soft.reward_value(0.8, {"flops": 400e6}) == pytest.approx(0.8)
    assert soft.reward_value(0.8, {"flops": 200e6}) == pytest.approx(0.8 * 0.5 ** -0.07)
    assert soft.reward_value(0.8, {"flops": 800e6}) == pytest.approx(0.8 * 2 ** -0.07)
    assert hard.reward_value(0.8, {"flops": 200e6}) == pytest.approx(0.8)
    assert hard.reward_value(0.8, {"flops": 800e6}) == pytest.approx(0.4)
    with_params = Problem(SPACE, reward="mnas-soft", budgets={"flops": 400e6, "params": 5e6})
    assert with_params.hard_budgets == {"params": 5e6}


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"objectives": ("acc", "speed")}, "unknown objective(s) speed"),
        ({"objectives": ("flops",)}, "must include acc"),
        ({"reward": "mnas-soft"}, "needs a FLOPs or latency budget"),
        ({"budgets": {"latency": 1.0}}, "needs a latency table"),
        ({"reward": "magic"}, "unknown reward"),
        ({"budgets": {"flops": -1.0}}, "must be positive"),
    ],
)
def test_problem_errors(kw: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ProblemError) as ei:
        Problem(SPACE, **kw)
    assert fragment in str(ei.value)


def test_units() -> None:
    assert parse_count("400M") == parse_count("0.4G") == parse_count("4e8") == 4e8
    assert parse_count("6m") == 6e6 and parse_count("1500k") == 1.5e6 and parse_count("123") == 123
    assert parse_ms("1.5ms") == 1.5 and parse_ms("800us") == pytest.approx(0.8) and parse_ms("0.002s") == 2.0
    assert parse_ms("800\u00b5s") == parse_ms("800\u03bcs") == pytest.approx(0.8)  # micro sign, Greek mu
    assert parse_ms("1.5MS") == 1.5 and parse_ms("2S") == 2000.0  # like counts, case does not matter
    for bad in ("", "4x", "-1M", "M", "0"):
        with pytest.raises(ValueError):
            parse_count(bad)
    with pytest.raises(ValueError, match="not a duration"):
        parse_ms("fast")


def test_reports(tmp_path: Path) -> None:
    s, _ = run("nsga2", 12, seed=1)
    summary = write_outputs(s.study.trials, s.problem, tmp_path, {"study": "t", "strategy": "nsga2"})
    front = summary["pareto"]
    assert front and all(r["flops"] <= BUDGET for r in front)
    accs = [r["acc"] for r in front]
    assert accs == sorted(accs), "sorted by cost, accuracy rises along the front"
    assert 0 < summary["hypervolume"] <= 1
    assert summary["hypervolume_axes"] == "(1 - acc, flops / 250M multiply-adds (its budget)), reference point (1, 1)"
    rows = feasible_rows(s.study.trials)
    assert hypervolume(rows, s.problem) == pytest.approx(summary["hypervolume"])
    assert hypervolume(rows[:3], s.problem) <= summary["hypervolume"] + 1e-12
    for f in ("pareto.csv", "pareto.json", "pareto.png", "hypervolume.png"):
        assert (tmp_path / f).stat().st_size > 0
    header = (tmp_path / "pareto.csv").read_text().splitlines()[0]
    assert header.startswith("trial,genotype,acc,flops,params,latency_ms")


def test_references_fit_the_default_budget() -> None:
    for name in ("efficientnet-b0", "mnasnet-a1", "mobilenetv2"):
        assert flops(reference(name), 224) <= 400e6 and params(reference(name), 10) > 0


def test_a_setting_recorded_later_is_not_held_against_an_older_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    create_search(problem(), url, "v", "random", CheapObjective(), settings={"epochs": 1})
    again = create_search(problem(), url, "v", "random", CheapObjective(), resume=True,
                          settings={"epochs": 1, "val_images": 1000})  # a study from before val_images
    assert again.study.user_attrs["hwnas"]["epochs"] == 1
    with pytest.raises(ValueError, match=r"other settings \(epochs\)"):
        create_search(problem(), url, "v", "random", CheapObjective(), resume=True, settings={"epochs": 2})
    create_search(problem(), url, "w", "random", CheapObjective(), settings={"epochs": 1, "val_images": 1000})
    with pytest.raises(ValueError, match=r"other settings \(val_images\)"):  # recorded: it must agree
        create_search(problem(), url, "w", "random", CheapObjective(), resume=True,
                      settings={"epochs": 1, "val_images": 500})


class _Scripted:
    """An ask/tell strategy that proposes given vectors in order."""

    def __init__(self, xs: list[np.ndarray]) -> None:
        self.xs = list(xs)

    def ask(self) -> np.ndarray:
        return self.xs.pop(0)

    def tell(self, x: np.ndarray, f: object, g: object) -> None:
        pass


def test_a_genotype_that_fails_twice_in_a_batch_is_failed_twice_and_trained_again_later() -> None:
    from hwnas.search.report import feasible_rows

    rng = np.random.default_rng(3)
    ok = problem()
    x, y = (SPACE.sample_where(rng, lambda g: ok.feasible(ok.costs(g))) for _ in range(2))
    gx = SPACE.decode(x).to_string()
    obj = CheapObjective()
    failed_once: list[str] = []

    def many(gs: list[Genotype]) -> list[EvalResult]:
        out = obj.many(gs)
        if gx in [g.to_string() for g in gs] and not failed_once:
            failed_once.append(gx)
            out[[g.to_string() for g in gs].index(gx)] = EvalResult(None, "cuda out of memory")
        return out

    s = create_search(ok, None, "dup", "custom", lambda g: many([g])[0],
                      custom=lambda feasible: _Scripted([x, x, y, x]), evaluate_many=many, parallel=2)
    s.run(3)
    t = s.study.trials
    assert [tr.state for tr in t] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert t[1].user_attrs["failure"] == "as trial 0: cuda out of memory"  # not a COMPLETE trial at acc 0
    assert s.trained_count() == 3  # the repeat cost nothing
    rows = {r.genotype: r.acc for r in feasible_rows(t)}
    assert rows[gx] == t[3].user_attrs["acc"] > 0  # its real accuracy, trained in the next batch


def test_latency_scale_comes_from_a_reference_the_table_can_price(tmp_path: Path) -> None:
    """Without a latency budget, the latency axis is scaled by twice a reference's predicted latency: the
    first the table holds (a table over another space may hold none of them), else 1 ms. Outputs are written."""
    from hwnas.cli.latency import load_table
    from hwnas.search.report import scale_of, write_outputs
    from hwnas.walker import walk

    t = load_table("cpu-epyc-2core-t1-fp32-bs1-r224")
    b0, a1 = reference("efficientnet-b0"), reference("mnasnet-a1")
    p = Problem(SPACE, objectives=("acc", "latency"), budgets={"flops": BUDGET}, table=t)
    assert scale_of(p, "latency") == 2 * t.predict(b0, 224)
    s = create_search(p, None, "lat", "random", CheapObjective(), population=4)
    s.run(3)
    for k in {layer.key() for layer in walk(b0, 224)} - {layer.key() for layer in walk(a1, 224)}:
        del t.entries[k]
    assert scale_of(p, "latency") == 2 * t.predict(a1, 224)
    assert scale_of(p, "flops") == BUDGET and scale_of(p, "params") == 2 * params(b0, 1000)
    t.entries.clear()  # no reference priceable
    assert scale_of(p, "latency") == 1.0
    summary = write_outputs(s.study.trials, p, tmp_path, {})
    assert summary["evaluated"] == 3 and (tmp_path / "pareto.json").is_file()


def test_an_evaluator_that_stops_keeps_what_it_finished_and_requeues_the_rest(tmp_path: Path) -> None:
    from hwnas.search.run import EvaluationStopped

    obj = CheapObjective()

    def breaks_after_one(gs: list[Genotype]) -> list[EvalResult]:
        raise EvaluationStopped("the CUDA device cannot be used any more", [obj(gs[0])])

    url = f"sqlite:///{tmp_path / 'e.db'}"
    s = create_search(problem(), url, "e", "random", obj, population=4, evaluate_many=breaks_after_one, parallel=3)
    with pytest.raises(EvaluationStopped):
        s.run(3)
    t = s.study.trials
    assert [tr.state for tr in t] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert t[0].user_attrs["trained"] and all(tr.user_attrs.get("interrupted") for tr in t[1:])
    again, obj2 = run("random", 3, storage=url, name="e", resume=True, parallel=3)
    assert again.trained_count() == 3 and sorted(obj2.calls) == sorted(tr.user_attrs["genotype"] for tr in t[1:])


def test_a_requeued_trial_keeps_what_the_strategy_said_of_its_proposal(tmp_path: Path) -> None:
    """Search.annotate (e.g. EAT-NAS lineage) describes a proposal; the re-queued copy of an interrupted trial
    is not proposed by the strategy again, so it carries its original's annotation."""
    class Interrupting(CheapObjective):
        def many(self, gs: list[Genotype]) -> list[EvalResult]:
            if self.batches:
                raise KeyboardInterrupt
            return super().many(gs)

    url = f"sqlite:///{tmp_path / 'a.db'}"
    obj = Interrupting()
    s = create_search(problem(), url, "a", "random", obj, population=4, evaluate_many=obj.many, parallel=2)
    said = iter(range(100))
    s.annotate = lambda x: {"proposal": next(said)}
    with pytest.raises(KeyboardInterrupt):
        s.run(4)
    before = {tr.user_attrs["genotype"]: tr.user_attrs["proposal"] for tr in s.study.trials}
    again = create_search(problem(), url, "a", "random", CheapObjective(), population=4, resume=True)
    again.annotate = lambda x: {"proposal": "wrong"}  # what a fresh process would say without the strategy's memory
    assert len(again.recover()) == 2
    again.run(5)
    redone = [tr for tr in again.study.trials[4:6]]
    assert all(tr.user_attrs["proposal"] == before[tr.user_attrs["genotype"]] for tr in redone)
    assert again.study.trials[-1].user_attrs["proposal"] == "wrong"  # a fresh proposal is described afresh


def _ask_running(s, worker: str | None):  # type: ignore[no-untyped-def]
    """A trial left RUNNING with parameters, named after ``worker`` (None: killed before it named itself)."""
    t = s.study.ask()
    if worker is not None:
        t.set_user_attr("worker", worker)
    for name, opts in SPACE.dims:
        t.suggest_categorical(name, list(opts))
    return t


def test_a_trial_asked_by_a_worker_killed_before_naming_itself_is_recovered(tmp_path: Path) -> None:
    """kill -9 between ``ask`` and the worker's name: the trial has no worker. It is lost once no other
    process registered on the study may still be asking (or after the grace period), not left RUNNING."""
    import socket

    from hwnas.procs import start_time
    from hwnas.search.run import WORKER_ATTR

    url = f"sqlite:///{tmp_path / 'w.db'}"
    s, _ = run("evolution", 2, storage=url, name="w")  # its process (this one) registered as a worker
    s.study._storage.set_study_system_attr(s.study._study_id, WORKER_ATTR + f"{socket.gethostname()}:999999:1",
                                           True)  # a process that registered, then died
    orphan = _ask_running(s, None)
    again = create_search(problem(), url, "w", "evolution", CheapObjective(), population=4, resume=True)
    again.worker = "another-process"  # not the process that ran ``s`` (that one is this test, alive)
    # this test's own process is registered and alive: it might be naming the trial right now
    assert again.recover() == [] and again.study.trials[orphan.number].state == TrialState.RUNNING
    again.grace = 0.0  # ... until the trial is older than the grace period
    assert again.recover() == [orphan.number]
    assert again.study.trials[orphan.number].state == TrialState.FAIL
    # the registered processes all dead: recovered at once, whatever the grace
    dead_only = create_search(problem(), url, "w", "evolution", CheapObjective(), population=4, resume=True)
    dead_only.worker = s.worker  # as if this were the process that ran ``s``: every other registered one is dead
    late = _ask_running(dead_only, None)
    assert dead_only.recover() == [late.number]
    assert start_time(__import__("os").getpid()) is not None  # this host names processes by pid and start


def test_a_reused_pid_and_a_silent_remote_worker_are_recognised(tmp_path: Path) -> None:
    import socket
    import sqlite3

    url = f"sqlite:///{tmp_path / 'r.db'}"
    s, _ = run("evolution", 2, storage=url, name="r")
    reused = _ask_running(s, f"{socket.gethostname()}:{__import__('os').getpid()}:1")  # this pid, another start
    remote = _ask_running(s, "elsewhere-host:1:1")
    s.study._storage.record_heartbeat(remote._trial_id)
    silent = _ask_running(s, "elsewhere-host:2:1")
    s.study._storage.record_heartbeat(silent._trial_id)
    with sqlite3.connect(tmp_path / "r.db") as db:  # its last heartbeat long ago
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00' WHERE trial_id = ?",
                   (silent._trial_id,))
    again = create_search(problem(), url, "r", "evolution", CheapObjective(), population=4, resume=True)
    assert sorted(again.recover()) == sorted([reused.number, silent.number])
    states = {t.number: t.state for t in again.study.trials}
    assert states[remote.number] == TrialState.RUNNING  # its heartbeat is fresh: left to its owner
    assert states[reused.number] == states[silent.number] == TrialState.FAIL


def by_params(gs: list[Genotype]) -> list[tuple[float, dict]]:  # type: ignore[type-arg]
    """A deterministic prefilter: more parameters rank higher."""
    return [(float(params(g)), {"prefilter_scores": {"params": params(g)}}) for g in gs]


@pytest.mark.parametrize("strategy", ["random", "evolution", "nsga2", "tpe"])
def test_a_prefilter_trains_only_the_best_scored_fraction_of_each_batch(strategy: str) -> None:
    obj = CheapObjective()
    s = create_search(problem(), None, "p", strategy, obj, seed=0, population=4, evaluate_many=obj.many,
                      prefilter=by_params, prefilter_keep=0.25)
    s.seed_population()
    s.run(8)
    assert s.trained_count() == 8 == len(obj.calls) == len(set(obj.calls))
    pruned = [t for t in s.study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["prefiltered"] and not t.user_attrs["trained"] for t in pruned)
    batches: dict[int, list] = {}  # type: ignore[type-arg]
    for t in s.study.trials:
        if "prefiltered" in t.user_attrs:
            batches.setdefault(t.user_attrs["batch"], []).append(t)
    assert batches
    for ts in batches.values():  # the trained one of each prefiltered batch is its best scored
        kept = [t for t in ts if not t.user_attrs["prefiltered"]]
        assert len(kept) == 1 and kept[0].user_attrs["genotype"] in obj.calls
        best = max(t.user_attrs["prefilter_scores"]["params"] for t in ts)
        assert kept[0].user_attrs["prefilter_scores"]["params"] == best
    assert not any(t.user_attrs["genotype"] in obj.calls for t in pruned if t.user_attrs["genotype"] not in
                   {k.user_attrs["genotype"] for k in s.study.trials if k.state == TrialState.COMPLETE})


def test_a_prefiltered_search_resumes_exactly(tmp_path: Path) -> None:
    """Pruned proposals are replayed into an ask/tell strategy like the others (told as accuracy 0)."""
    def go(n: int, storage: str | None, resume: bool = False) -> Any:
        obj = CheapObjective()
        s = create_search(problem(), storage, "x", "evolution", obj, seed=3, population=4, resume=resume,
                          evaluate_many=obj.many, prefilter=by_params, prefilter_keep=0.5)
        s.run(n)
        return s

    whole = go(10, None)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    go(5, url)
    resumed = go(10, url, resume=True)
    assert [t.user_attrs["genotype"] for t in resumed.study.trials] == \
           [t.user_attrs["genotype"] for t in whole.study.trials]
    assert any(t.state == TrialState.PRUNED for t in whole.study.trials)


def test_a_prefilter_keeps_a_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        create_search(problem(), None, "k", "random", CheapObjective(), prefilter=by_params, prefilter_keep=0)
