"""EAT-NAS transfer: basic-architecture selection, offspring generator, population quality, and the CLI
end to end on real images (a real CIFAR-10 source search, then a transfer to real Imagenette images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from conftest import assert_usage_error, hwnas, hwnas_here, made_once
from hwnas.references import reference
from hwnas.search.problem import Problem
from hwnas.search.transfer import ELEMENTS, EATEvolution, OffspringGenerator, SourceTrial, select_basic
from hwnas.space import SearchSpace, SpaceError
from hwnas.walker import flops

SPACE = SearchSpace.default()
B0 = SPACE.encode(reference("efficientnet-b0"))


def _always(x: np.ndarray) -> bool:
    return True


def test_offspring_change_one_element_and_cover_all_five() -> None:
    gen = OffspringGenerator(SPACE, np.random.default_rng(0), _always)
    names = [n for n, _ in SPACE.dims]
    seen = set()
    for _ in range(300):
        child, tr = gen.offspring(B0)
        seen.add(tr.element)
        changed = [names[i] for i in np.flatnonzero(child != B0)]
        assert len(changed) == 1, changed
        assert SPACE.decode(child).to_string() != SPACE.decode(B0).to_string()
        name = changed[0]
        expected = {"op": ("_op", "_expansion"), "kernel": ("_kernel",), "skip": ("_skip",),
                    "width": ("_width", "width_factor"), "depth": ("_layers", "depth_factor")}[tr.element]
        assert name.endswith(expected), (tr, name)
        if tr.element in ("width", "depth"):  # one step along the ordered choices
            i = names.index(name)
            assert abs(int(child[i]) - int(B0[i])) == 1
    assert seen == set(ELEMENTS)


def test_width_and_depth_steps_follow_value_order_not_listed_order() -> None:
    d = SPACE.to_dict()
    d["width_factors"], d["depth_factors"] = [1.25, 0.75, 1.0], [1.5, 1.0, 1.25]
    for st in d["stages"]:
        st["widths"], st["layers"] = list(reversed(st["widths"])), list(reversed(st["layers"]))
    space = SearchSpace.from_dict(d)
    gen = OffspringGenerator(space, np.random.default_rng(0), _always, elements=("width", "depth"))
    rng = np.random.default_rng(1)
    for _ in range(200):
        parent = rng.integers(0, space.upper_bounds + 1)
        child, tr = gen.offspring(parent)
        i = int(np.flatnonzero(child != parent)[0])
        values = sorted(space.dims[i][1])
        assert abs(values.index(tr.after) - values.index(tr.before)) == 1, tr


def test_offspring_respect_the_budget_and_give_up_cleanly() -> None:
    limit = flops(reference("efficientnet-b0"), 224)
    gen = OffspringGenerator(SPACE, np.random.default_rng(1), lambda x: flops(SPACE.decode(x), 224) <= limit)
    for _ in range(50):
        child, _ = gen.offspring(B0)
        assert flops(SPACE.decode(child), 224) <= limit
    stuck = OffspringGenerator(SPACE, np.random.default_rng(1), lambda x: False, max_attempts=20)
    with pytest.raises(SpaceError, match="no feasible"):
        stuck.offspring(B0)
    with pytest.raises(SpaceError, match="unknown transformation"):
        OffspringGenerator(SPACE, np.random.default_rng(0), _always, elements=("colour",))


def test_population_is_seeded_from_the_basic_architecture_then_bred_above_quality() -> None:
    eat = EATEvolution(SPACE, 0, _always, B0, fitness_of=lambda f: -f[0], population=6, sample=2,
                       quality_lambda=0.0)
    basic = SPACE.decode(B0).to_string()
    first = eat.ask()
    assert np.array_equal(first, B0) and eat.lineage_attrs(first)["transformation"] == "basic architecture"
    seeded = [eat.ask() for _ in range(5)]
    assert all(eat.lineage_attrs(x)["parent_genotype"] == basic for x in seeded)
    fitness = [0.50, 0.10, 0.20, 0.90, 0.80, 0.30]  # mean 0.4667: only 0.50, 0.90, 0.80 may breed
    for x, fit in zip([first, *seeded], fitness, strict=True):
        eat.tell(x, [-fit], [])
    assert eat.quality == pytest.approx(np.mean(fitness))
    allowed = {SPACE.decode(x).to_string() for x, fit in zip([first, *seeded], fitness, strict=True) if fit >= 0.4667}
    parents = {eat.lineage_attrs(eat.ask())["parent_genotype"] for _ in range(40)}
    assert parents <= allowed and len(parents) >= 2  # not only the best member breeds


def _trials() -> list[SourceTrial]:
    def t(n: int, name: str, acc: float) -> SourceTrial:
        return SourceTrial(n, reference(name).to_string(), acc, {})
    # efficientnet-b0 386M, mnasnet-a1 312M, mobilenetv2 301M, mnasnet-b1 314M multiply-adds at 224
    return [t(0, "efficientnet-b0", 0.80), t(1, "mnasnet-a1", 0.78), t(2, "mobilenetv2", 0.60),
            t(3, "mnasnet-b1", 0.79)]


def test_basic_architecture_selection_under_the_target_budget() -> None:
    wide = Problem(SPACE, ("acc", "flops"), budgets={"flops": 400e6}, num_classes=10)
    assert select_basic(_trials(), wide, "acc").number == 0
    assert select_basic(_trials(), wide, "reward").number == 3  # 0.79 x (314/400)^-0.07 beats 0.80 x (386/400)^-0.07
    tight = Problem(SPACE, ("acc", "flops"), budgets={"flops": 350e6}, num_classes=10)
    assert select_basic(_trials(), tight, "acc").number == 3  # b0 is over budget now
    assert select_basic(_trials(), wide, "knee").number in {1, 3}
    with pytest.raises(ValueError, match="no trained trial"):
        select_basic(_trials(), Problem(SPACE, ("acc", "flops"), budgets={"flops": 1e6}, num_classes=10))
    # a reward's target is soft, and the target's own reward ranks: b0 (386M) over a 350M target competes
    better_b0 = [SourceTrial(0, reference("efficientnet-b0").to_string(), 0.84, {}), *_trials()[1:]]
    soft = Problem(SPACE, ("acc",), reward="mnas-soft", budgets={"flops": 350e6}, num_classes=10)
    assert select_basic(better_b0, soft, "reward").number == 0  # 0.84 x (386/350)^-0.07 = 0.834 > b1's 0.796
    hard = Problem(SPACE, ("acc",), reward="mnas-hard", budgets={"flops": 350e6}, num_classes=10)
    assert select_basic(better_b0, hard, "reward").number == 3  # 0.84 x (386/350)^-1 = 0.762 < b1's 0.79


# ---- CLI, end to end on real images --------------------------------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 2-trial source search, run once for the test processes (the tests only read it)."""
    def search(d: Path) -> None:
        r = hwnas("search", "--budget-flops", "400M", "--trials", "2", "--population", "2", "--epochs", "0.2",
                  "--run-dir", str(d), "--study-name", "cifar", "--device", "cpu")
        assert r.returncode == 0, r.stderr

    d = made_once(tmp_path_factory, "transfer-source", search)
    return d, f"sqlite:///{d / 'cifar.db'}"


def test_transfer_end_to_end_records_lineage(source: tuple[Path, str], tmp_path: Path) -> None:
    _, storage = source
    r = hwnas("transfer", "--source-storage", storage, "--source-study", "cifar", "--trials", "3", "--population",
              "2", "--epochs", "0.3", "--target-resolution", "32", "--device", "cpu", "--run-dir", str(tmp_path),
              "--study-name", "imagenette")
    assert r.returncode == 0, r.stderr
    assert "basic architecture = trial" in r.stderr and "lineage" in r.stderr
    study = optuna.load_study(study_name="imagenette", storage=f"sqlite:///{tmp_path / 'imagenette.db'}")
    lineage = study.user_attrs["transfer"]
    assert lineage["source_study"] == "cifar" and lineage["select"] == "reward"
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    first = trials[0].user_attrs
    assert first["transformation"] == "basic architecture" and first["genotype"] == lineage["basic_genotype"]
    assert first["source_trial"] == lineage["source_trial"]
    later = [t.user_attrs for t in trials[1:] if t.user_attrs.get("trained")]
    assert later and all(a["parent_trial"] is not None and ":" in a["transformation"] for a in later)
    assert all(0.0 <= t.user_attrs["acc"] <= 1.0 for t in trials if t.user_attrs.get("trained"))
    assert (tmp_path / "imagenette" / "pareto.json").is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--source-study", "nope"], "no study 'nope'"),
        ([], "--source-study is required"),
        (["--source-study", "cifar", "--source-trial", "99"], "trial 99"),
        (["--source-study", "cifar", "--budget-flops", "1M"], "no trained trial"),
        (["--source-study", "cifar", "--elements", "op,colour"], "unknown transformation"),
    ],
)
def test_transfer_bad_input(source: tuple[Path, str], tmp_path: Path, args: list[str], fragment: str) -> None:
    _, storage = source
    r = hwnas_here("transfer", "--source-storage", storage, *args, "--trials", "1", "--epochs", "0.1", "--device",
                   "cpu", "--run-dir", str(tmp_path))
    assert_usage_error(r, fragment)


@pytest.mark.parametrize(("line", "fragment"), [
    ("tournament = 0", "[transfer] tournament must be an integer from 1 to 10000, got 0"),
    ('quality_lambda = "x"', "[transfer] quality_lambda must be a non-negative finite number, got 'x'"),
    ("source_trial = 1.5", "[transfer] source_trial must be an integer from 0 to 1000000000, got 1.5"),
    ("source_storage = 5", "[transfer] source_storage must be a string, got 5"),
    ("source_study = [1]", "[transfer] source_study must be a string, got [1]"),
    ("elements = [1]", "[transfer] elements must be a list of names (op, kernel, skip, width, depth), got [1]"),
    ('elements = "op"', "[transfer] elements must be a list of names"),
    ('select = "best"', "[transfer] select must be one of reward, knee, acc, got 'best'"),
    ("tournaments = 3", "unknown key(s) in [transfer]: tournaments (known: elements, quality_lambda"),
])
def test_transfer_recipe_values_are_checked_like_flags(tmp_path: Path, line: str, fragment: str) -> None:
    recipe = tmp_path / "r.toml"
    shipped = (Path(__file__).resolve().parents[1] / "search" / "transfer-imagenette.toml").read_text()
    key = line.split(" =")[0]
    kept = [x for x in shipped.splitlines() if not x.startswith(f"{key} =")]  # the shipped value, replaced
    recipe.write_text("\n".join(kept).replace("[transfer]", f"[transfer]\n{line}", 1) + "\n")
    flags = [x for k, v in (("source_storage", "sqlite:///none.db"), ("source_study", "s")) if k != key
             for x in (f"--{k.replace('_', '-')}", v)]  # a flag would override the recipe's value
    assert_usage_error(hwnas_here("transfer", "--recipe", str(recipe), *flags, "--device", "cpu", cwd=tmp_path),
                                  fragment)
