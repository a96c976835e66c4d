"""Searches on tabular benchmarks: the problem, the tabular evaluators and latency sources, `hwnas search
--benchmark` end to end, and `hwnas bench` scored against the true Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from conftest import assert_usage_error, hwnas, hwnas_here
from hwnas import tabular
from hwnas.evaluators.tabular import BenchmarkError, TabularEvaluator
from hwnas.latency.tabular import BenchmarkLatency
from hwnas.search import bench
from hwnas.search.problem import Problem, ProblemError
from hwnas.spaces import get_space

PIXEL3 = bench.BenchProblem("p3", "nb201:cifar10", ("acc", "latency"), "nb201:pixel3")
SINGLE = bench.BenchProblem("acc", "nb201:cifar10", ("acc",))
CONV_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


# ---- evaluators and latency sources ----------------------------------------------------------------
def test_nb201_evaluator_and_latency_are_the_published_values() -> None:
    t = tabular.nb201()
    space = get_space("nb201")
    ev, lat = TabularEvaluator("nb201:cifar10"), BenchmarkLatency("pixel3")
    for i in (0, 3731, 15624):
        arch = space.parse(t.archs[i])
        r = ev.evaluate(arch)
        assert r.acc == pytest.approx(t.acc["cifar10"][i] / 100) and r.details["benchmark_index"] == i
        assert lat.predict(arch) == float(t.latency["pixel3"][i])
    assert ev.evaluate(space.parse(t.archs[3731])).acc == pytest.approx(0.9441)


def test_macro_seed_modes() -> None:
    m = tabular.macro()
    space = get_space("macro")
    arch = space.parse("02012100")
    i = m.index["02012100"]
    assert TabularEvaluator("macro").evaluate(arch).acc == pytest.approx(m.mean_acc[i] / 100)
    draws = [TabularEvaluator("macro", "random", seed=3).evaluate(arch).acc for _ in range(2)]
    assert draws[0] == draws[1]  # same seed, same draw
    many = {TabularEvaluator("macro", "random", seed=s).evaluate(arch).acc for s in range(30)}
    assert many == {x / 100 for x in m.test_acc[i]}  # each draw is one of the three seeds, and all are drawn
    with pytest.raises(BenchmarkError, match="one result per architecture"):
        TabularEvaluator("nb201:cifar10", "random")


def test_problem_over_a_benchmark_space() -> None:
    space = get_space("nb201")
    p = Problem(space, ("acc", "latency"), budgets={"latency": 3.0}, resolution=32, num_classes=10,
                table=BenchmarkLatency("fpga"))
    c = p.costs(space.parse(CONV_CELL))
    assert set(c) == {"flops", "params", "latency"} and c["latency"] > 0
    assert p.feasible(c) == (c["latency"] <= 3.0)
    with pytest.raises(ValueError, match="nb201"):  # a device table of NB201 is not for another space
        Problem(get_space("macro"), ("acc", "latency"), resolution=32, table=BenchmarkLatency("fpga"))
    with pytest.raises(ProblemError, match="no flops model"):
        Problem(get_space("transnas-micro"), ("acc", "flops"))


# ---- ground truth and the score ------------------------------------------------------------------------
def test_true_front_scores_one_and_search_scores_below() -> None:
    problem, ev = PIXEL3.build()
    tr = bench.truth(problem, ev)
    assert len(tr.acc) == 15625 and tr.true_hv > 0 and 1 <= tr.front_size < 200
    # the reference point is the median accuracy and latency of the space (a region of interest)
    assert tr.ref_described["acc"] == pytest.approx(float(np.median(tr.acc)))
    for i in (0, 777, 15624):  # the truth prices every architecture as the search does
        arch = problem.space.decode(np.array(np.unravel_index(i, [5] * 6)))
        assert tr.points[i, 0] == pytest.approx(1 - ev.evaluate(arch).acc)
        assert tr.points[i, 1] == problem.costs(arch)["latency"]
    front = tr.points[bench.nondominated(tr.points)]
    assert bench.hypervolume(front, tr.ref) == pytest.approx(tr.true_hv)
    r = bench.run_one(PIXEL3, "random", 0, 30)
    assert r.evaluations == 30 and len(r.curve) == 30
    assert all(0 <= v <= 1 + 1e-9 for v in r.curve) and np.all(np.diff(r.curve) >= -1e-12)  # never decreases
    assert r.curve[-1] < 1.0  # 30 random networks do not find the whole true front


def test_single_objective_regret_against_the_optimum() -> None:
    r = bench.run_one(SINGLE, "evolution", 1, 40)
    assert len(r.curve) == 40 and np.all(np.diff(r.curve) >= 0)
    assert r.curve[-1] <= 0.9441 + 1e-9
    t = tabular.nb201()
    assert r.best_index is not None and t.acc["cifar10"][r.best_index] / 100 == pytest.approx(r.curve[-1])


def test_budget_problem_counts_only_feasible_evaluations() -> None:
    bp = bench.BenchProblem("fpga", "nb201:cifar10", ("acc", "latency"), "nb201:fpga", {"latency": 3.0})
    problem, ev = bp.build()
    tr = bench.truth(problem, ev)
    assert 0 < tr.feasible.sum() < 15625 and tr.ref_described["latency"] == 3.0
    r = bench.run_one(bp, "evolution", 0, 25)
    assert r.evaluations == 25 and r.proposals >= 25


def test_study_is_reproducible_and_seeds_differ() -> None:
    a = bench.run_one(PIXEL3, "evolution", 5, 25).curve
    assert a == bench.run_one(PIXEL3, "evolution", 5, 25).curve
    assert a != bench.run_one(PIXEL3, "evolution", 6, 25).curve


# ---- the CLI ---------------------------------------------------------------------------------------------
def test_search_on_a_benchmark_end_to_end_and_resume(tmp_path: Path) -> None:
    args = ["search", "--benchmark", "nb201:cifar10", "--objectives", "acc,latency", "--table", "nb201:raspi4",
            "--trials", "25", "--strategy", "evolution", "--run-dir", str(tmp_path), "--study-name", "nb"]
    r = hwnas(*args)
    assert r.returncode == 0, r.stderr
    assert "NAS-Bench-201 cifar10 test accuracy" in r.stderr and "fidelity" not in r.stderr
    summary = json.loads((tmp_path / "nb" / "pareto.json").read_text())
    assert summary["evaluated"] == 25 and summary["problem"]["space_kind"] == "nb201"
    t = tabular.nb201()
    for row in summary["pareto"]:
        i = t.index[row["genotype"]]
        assert row["acc"] == pytest.approx(t.acc["cifar10"][i] / 100)
        assert row["latency_ms"] == float(t.latency["raspi4"][i])
    r2 = hwnas(*[a if a != "25" else "35" for a in args], "--resume")
    assert r2.returncode == 0, r2.stderr
    s = optuna.load_study(study_name="nb", storage=f"sqlite:///{tmp_path / 'nb.db'}")
    trained = [x for x in s.trials if x.user_attrs.get("trained")]
    assert len(trained) == 35 and len({x.user_attrs["genotype"] for x in trained}) == 35


def test_bad_benchmark_input_is_one_line(tmp_path: Path) -> None:
    run = ["--run-dir", str(tmp_path), "--trials", "2"]
    assert_usage_error(hwnas_here("search", "--benchmark", "nb201:svhn", *run), "unknown benchmark")
    assert_usage_error(hwnas_here("search", "--space", "transnas-micro", *run), "--benchmark")
    assert_usage_error(hwnas_here("search", "--benchmark", "macro", "--space", "nb201", *run), "macro space")
    assert_usage_error(hwnas_here("search", "--benchmark", "macro", "--table", "nb201:pixel3", "--objectives",
                                  "acc,latency", *run), "nb201")
    assert_usage_error(hwnas_here("search", "--benchmark", "nb201:cifar10", "--table", "nb201:pixel9", "--objectives",
                                  "acc,latency", *run), "unknown NAS-Bench-201 device")
    assert_usage_error(hwnas_here("search", "--benchmark", "nb201:cifar10", "--seed-mode", "random", *run), "3 seeds")
    assert not list(tmp_path.glob("*.db"))  # refused before a study was made


def test_latency_list_and_describe_any_space() -> None:
    r = hwnas("latency", "list")
    assert r.returncode == 0, r.stderr
    assert "nb201:pixel3" in r.stdout and "nb201:raspi4" in r.stdout and "cpu-epyc" in r.stdout
    r = hwnas("describe", CONV_CELL, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["space"] == "nb201" and d["benchmark"]["nb201_index"] == tabular.nb201().index[CONV_CELL]
    assert d["flops"] > 0 and d["params"] > 0
    r = hwnas("describe", "02012100", "--json")
    d = json.loads(r.stdout)
    assert d["params"] == 890666 and d["flops"] == 47327744 == d["benchmark"]["flops"]
    r = hwnas("space", "info", "--space", "nb201")
    assert r.returncode == 0 and "15,625 architectures" in r.stdout


def test_bench_cli_tiny_study(tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = hwnas("bench", "--recipes", "nb201-cifar10-pixel3,nb201-cifar10-acc", "--strategies", "random,evolution",
              "--seeds", "2", "--evaluations", "12", "--workers", "2", "--transfer-seeds", "2",
              "--transfer-evaluations", "8", "--source-evaluations", "10", "--transfer-targets", "class_object",
              "-o", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "bench.json").read_text())
    p = rep["problems"]["nb201-cifar10-pixel3"]
    assert p["reference_point"]["latency"] > 0 and p["true_hypervolume"] > 0
    for st in ("random", "evolution"):
        d = p["strategies"][st]
        assert d["seeds"] == 2 and 0 <= d["at"]["12"]["score"]["median"] <= 1
        assert d["at"]["12"]["regret"]["median"] == pytest.approx(1 - d["at"]["12"]["score"]["median"])
    single = rep["problems"]["nb201-cifar10-acc"]
    assert single["reference_point"] is None and single["optimum_acc_percent"] == pytest.approx(94.41)
    tr = rep["transfer"]["targets"]["transnas-class_object"]["strategies"]
    assert set(tr) == {"eat-transfer", "evolution", "random"} and tr["eat-transfer"]["seeds"] == 2
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG" and "| strategy |" in (out / "bench.md").read_text()
    assert not list(out.glob("*.tmp*"))


def test_bench_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[search]\nbenchmark = "nb201:cifar10"\nobjectives = ["acc", "latency"]\nbudget_latncy = "3ms"\n')
    assert_usage_error(hwnas_here("bench", "--recipes", str(bad), "-o", str(tmp_path / "o")), "budget_latncy")
    bad.write_text('[search]\nbenchmark = "nb201:cifar10"\nobjectives = ["acc", "latency"]\n')  # no --table
    assert_usage_error(hwnas_here("bench", "--recipes", str(bad), "--no-transfer", "-o", str(tmp_path / "o")),
                       "latency")
    assert_usage_error(hwnas_here("bench", "--strategies", "nsga2,annealing", "-o", str(tmp_path / "o")), "annealing")
    assert_usage_error(hwnas_here("bench", "--recipes", "nope", "-o", str(tmp_path / "o")), "bench recipe not found")
    assert not (tmp_path / "o").exists()


def test_transfer_between_benchmark_tasks(tmp_path: Path) -> None:
    """`hwnas transfer` on TransNAS-Bench-101: the target search starts from the source study's best cell."""
    r = hwnas("search", "--benchmark", "transnas:class_scene", "--strategy", "evolution", "--trials", "20",
              "--run-dir", str(tmp_path), "--study-name", "src")
    assert r.returncode == 0, r.stderr
    url = f"sqlite:///{tmp_path / 'src.db'}"
    src = optuna.load_study(study_name="src", storage=url)
    best = max((t for t in src.trials if t.user_attrs.get("trained")), key=lambda t: (t.user_attrs["acc"], -t.number))
    r = hwnas("transfer", "--benchmark", "transnas:class_object", "--source-storage", url, "--source-study", "src",
              "--select", "acc", "--trials", "8", "--run-dir", str(tmp_path), "--study-name", "tgt")
    assert r.returncode == 0, r.stderr
    tgt = optuna.load_study(study_name="tgt", storage=f"sqlite:///{tmp_path / 'tgt.db'}")
    trials = sorted(tgt.trials, key=lambda t: t.number)
    assert trials[0].user_attrs["genotype"] == best.user_attrs["genotype"]  # the basic architecture first
    assert all("edge_" in t.user_attrs["transformation"] for t in trials[1:])  # then one edge changed at a time
    t = tabular.transnas_micro()
    for x in trials:
        i = t.index[x.user_attrs["genotype"]]
        assert x.user_attrs["acc"] == pytest.approx(t.val["class_object"][i] / 100)
