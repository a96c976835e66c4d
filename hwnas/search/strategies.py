"""Search strategies as Optuna samplers (no torch).

Optuna's own samplers (NSGA-II, NSGA-III, TPE, GP, random) are used as they are. Ask/tell strategies
(pymoo's NSGA-II and AGE-MOEA over the integer choice vector, regularized evolution, feasible-uniform
random) plug into Optuna through ``VectorSampler``, which proposes a whole choice vector per trial and
replays the study's finished trials into the strategy, in trial order, before every proposal. So every
strategy persists in one Optuna storage, shows in optuna-dashboard, and resumes by replay (same seed, same
history -> same next proposal).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hwnas.search.problem import STRATEGIES
from hwnas.spaces.base import CategoricalSpace, SpaceError

VIOLATIONS_ATTR = "violations"

Objectives = Callable[[FrozenTrial], tuple[list[float], list[float]] | None]
"""Maps a finished trial to (F to minimise, G <= 0 feasible), or None to skip it."""


class AskTell(Protocol):
    def ask(self) -> np.ndarray: ...

    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float]) -> None: ...


# ---- constraints: one adapter over Optuna's two APIs --------------------------------------------------
NATIVE_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5: per-trial, named


def constraints_func(trial: FrozenTrial) -> Sequence[float]:
    """Older Optuna's constraint hook: the relative budget violations the driver stored (<= 0 feasible)."""
    return list(trial.user_attrs.get(VIOLATIONS_ATTR, []))


def record_constraints(trial: optuna.Trial, violations: dict[str, float]) -> None:
    """Store relative budget violations (<= 0 is feasible) where every sampler and the dashboard see them."""
    trial.set_user_attr(VIOLATIONS_ATTR, list(violations.values()))
    if NATIVE_CONSTRAINTS:  # the list form Optuna's samplers wrote before 5.0 and still read: optuna-dashboard
        # reads only this form (the named keys of Trial.set_constraint leave infeasible trials unmarked there)
        trial.study._storage.set_trial_system_attr(trial._trial_id, "constraints", list(violations.values()))


def _constraints_kw(n_constr: int) -> dict[str, Any]:
    return {"constraints_func": constraints_func} if n_constr and not NATIVE_CONSTRAINTS else {}


# ---- ask/tell strategies ---------------------------------------------------------------------------
class FeasibleRandom:
    """Uniform over the feasible region (bounded rejection sampling)."""

    def __init__(self, space: CategoricalSpace, seed: int, feasible: Callable[[np.ndarray], bool],
                 max_attempts: int = 10_000) -> None:
        self.space, self.rng, self.feasible = space, np.random.default_rng(seed), feasible
        self.max_attempts = max_attempts

    def ask(self) -> np.ndarray:
        for _ in range(self.max_attempts):
            x = self.space.sample(self.rng)
            if self.feasible(x):
                return x
        raise SpaceError(f"no feasible architecture in {self.max_attempts} samples: the budget is too tight for "
                         f"the space")

    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float]) -> None:
        pass


class RegularizedEvolution:
    """Aging evolution (Real et al. 2019), multi-objective by Pareto rank inside each tournament; the first
    ``population`` members are feasible random samples, children are mutations of tournament winners,
    retried (bounded) until feasible."""

    def __init__(self, space: CategoricalSpace, seed: int, feasible: Callable[[np.ndarray], bool],
                 population: int = 20, sample: int = 5, max_attempts: int = 200) -> None:
        self.space, self.rng, self.feasible = space, np.random.default_rng(seed), feasible
        self.population, self.sample, self.max_attempts = population, sample, max_attempts
        self.members: deque[tuple[np.ndarray, np.ndarray, float]] = deque()
        self.asked = 0
        self._random = FeasibleRandom(space, seed + 1, feasible)

    def ask(self) -> np.ndarray:
        self.asked += 1
        if len(self.members) < self.population:
            return self._random.ask()
        idx = self.rng.choice(len(self.members), size=min(self.sample, len(self.members)), replace=False)
        parent = self._winner([self.members[i] for i in idx])
        child = self.space.mutate(parent, self.rng)
        for _ in range(self.max_attempts):
            if self.feasible(child):
                break
            child = self.space.mutate(parent, self.rng)
        return child

    def _winner(self, group: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        best_violation = min(v for _, _, v in group)
        group = [m for m in group if m[2] == best_violation]
        front = NonDominatedSorting().do(np.array([f for _, f, _ in group]), only_non_dominated_front=True)
        return group[int(self.rng.choice(front))][0]

    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float]) -> None:
        self.members.append((np.asarray(x), np.asarray(f, dtype=float), float(sum(max(0.0, v) for v in g))))
        while len(self.members) > self.population:
            self.members.popleft()


class PymooStrategy:
    """A pymoo algorithm driven by ask/tell over the integer choice vector (rounding repair).

    SBX and polynomial mutation take neighbouring integers for similar values, so pymoo's variable of a
    numeric dimension is the rank of the value (a recipe may list kernels = [7, 3, 5]), mapped to the
    space's index on the way out; names (op, activation) and skips keep the recipe's order."""

    def __init__(self, space: CategoricalSpace, seed: int, algorithm: str, n_obj: int, n_constr: int,
                 population: int = 20) -> None:
        from pymoo.core.problem import Problem as PymooProblem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling

        ops: dict[str, Any] = dict(sampling=IntegerRandomSampling(),
                                   crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                                   mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
                                   eliminate_duplicates=True)
        if algorithm == "nsga2":
            from pymoo.algorithms.moo.nsga2 import NSGA2

            self.algorithm = NSGA2(pop_size=population, **ops)
        elif algorithm == "agemoea":
            from pymoo.algorithms.moo.age import AGEMOEA

            self.algorithm = AGEMOEA(pop_size=population, **ops)
        else:  # pragma: no cover - guarded by make_sampler
            raise ValueError(algorithm)
        self.problem = PymooProblem(n_var=space.n_dims, n_obj=n_obj, n_ieq_constr=n_constr, xl=0,
                                    xu=space.upper_bounds.astype(float), vtype=int)
        self.algorithm.setup(self.problem, termination=("n_gen", 10**9), seed=seed, verbose=False)
        self.n_constr = n_constr
        numeric = [all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in opts) for _, opts in space.dims]
        self.index_of_rank = [np.argsort(np.asarray(opts, dtype=float), kind="stable") if num else np.arange(len(opts))
                              for (_, opts), num in zip(space.dims, numeric, strict=True)]
        self.rank_of_index = [np.argsort(order) for order in self.index_of_rank]
        self.pending: Any = None
        self.queue: list[int] = []
        self.results: dict[int, tuple[Sequence[float], Sequence[float]]] = {}

    def ask(self) -> np.ndarray:
        if self.pending is None:
            self.pending = self.algorithm.ask()
            if self.pending is None or len(self.pending) == 0:  # every offspring a duplicate of one seen
                self.pending = None
                raise SpaceError("pymoo found no new architecture to propose: the space (within the budget) is "
                                 "about the size of the population or smaller")
            self.queue = list(range(len(self.pending)))
            self.results = {}
        if not self.queue:  # the whole generation is out and not yet told (parallel workers): resample it
            self.queue = [i for i in range(len(self.pending)) if i not in self.results]
        i = self.queue.pop(0)
        ranks = np.rint(self.pending[i].X).astype(np.int64)
        return np.array([order[r] for order, r in zip(self.index_of_rank, ranks, strict=True)], dtype=np.int64)

    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float]) -> None:
        if self.pending is None:
            return
        ranks = np.array([rank[v] for rank, v in zip(self.rank_of_index, np.asarray(x, dtype=np.int64), strict=True)])
        for i, ind in enumerate(self.pending):
            if i not in self.results and np.array_equal(np.rint(ind.X).astype(np.int64), ranks):
                self.results[i] = (f, g)
                break
        else:
            return  # not from this generation (enqueued or replayed from another strategy)
        if len(self.results) == len(self.pending):
            from pymoo.core.evaluator import Evaluator
            from pymoo.problems.static import StaticProblem

            order = range(len(self.pending))
            kw: dict[str, Any] = {"F": np.array([self.results[i][0] for i in order], dtype=float)}
            if self.n_constr:
                kw["G"] = np.array([self.results[i][1] for i in order], dtype=float)
            Evaluator().eval(StaticProblem(self.problem, **kw), self.pending)
            self.algorithm.tell(infills=self.pending)
            self.pending = None


# ---- the Optuna adapter -------------------------------------------------------------------------------
class VectorSampler(BaseSampler):
    """Proposes whole choice vectors from an ask/tell strategy; replays finished trials into it."""

    def __init__(self, space: CategoricalSpace, strategy: AskTell, objectives: Objectives, seed: int = 0,
                 rank: int = 0) -> None:
        self.space, self.strategy, self.objectives = space, strategy, objectives
        self.rank = rank  # the worker rank whose proposals this sampler makes (trials' ``rank``; 0 if unset)
        self.dists = {name: CategoricalDistribution(list(opts)) for name, opts in space.dims}
        self.told: set[int] = set()
        self.proposed: set[int] = set()
        self.rng = np.random.default_rng(seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self.dists)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        self.catch_up(study)
        x = self.strategy.ask()
        self.proposed.add(trial.number)
        return {name: opts[int(i)] for (name, opts), i in zip(self.space.dims, x, strict=True)}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        assert isinstance(param_distribution, CategoricalDistribution)
        choices = param_distribution.choices
        return choices[int(self.rng.integers(len(choices)))]

    def catch_up(self, study: Study) -> None:
        """Tell the strategy every finished trial it has not seen, in trial order, a batch at a time (the
        ``batch`` user attribute: trials proposed together, all asked before any was told). A trial proposed
        by an earlier process (resume) is first re-asked -- all of its batch before any is told, as they were
        -- so the strategy's random state and generations advance exactly as they did then: a resumed search
        continues as the uninterrupted one would have. Enqueued trials (re-queued after an interrupt, seeds)
        took no proposal and are only told, and so are the trials other workers proposed (another ``rank``):
        with several workers, every finished trial is told exactly once, in trial order."""
        # PRUNED: dropped by a prefilter, told as a result of accuracy 0 (Search.objectives_of)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
        batches: dict[int, list[FrozenTrial]] = {}
        for t in sorted(finished, key=lambda t: t.number):
            if t.number not in self.told:
                batches.setdefault(int(t.user_attrs.get("batch", t.number)), []).append(t)
        for batch in batches.values():
            for t in batch:
                self.told.add(t.number)
                if t.number not in self.proposed and "fixed_params" not in t.system_attrs \
                        and int(t.user_attrs.get("rank", 0)) == self.rank:
                    self.strategy.ask()
                    self.proposed.add(t.number)
            for t in batch:
                fg = self.objectives(t)
                if fg is None or set(t.params) != set(self.dists):
                    continue
                self.strategy.tell(self.space.from_choices(t.params), *fg)


def make_sampler(name: str, space: CategoricalSpace, seed: int, n_obj: int, n_constr: int,
                 feasible: Callable[[np.ndarray], bool], objectives: Objectives,
                 population: int = 20, rank: int = 0, controller: dict[str, Any] | None = None) -> BaseSampler:
    """The sampler for strategy ``name`` (see ``STRATEGIES``) of the worker of rank ``rank`` (seeded ``seed +
    rank``: workers propose different architectures; rank 0 is the one process of a single-worker search).
    ``controller``: the settings of the ``reinforce`` strategies (``hwnas.search.rl.ControllerSettings``)."""
    cf = _constraints_kw(n_constr)
    seed += rank
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, **cf)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed, **cf)
    if name == "tpe":
        with warnings.catch_warnings():  # constant_liar is "experimental" (since Optuna 2.8)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # constant liar: a trial RUNNING elsewhere (another worker's, or one of this batch) counts as a bad
            # result, so workers asking at once do not propose the same region (Optuna's advice for distributed
            # TPE); with one worker and --parallel 1 no trial is RUNNING at an ask, and nothing changes
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, population),
                                              constant_liar=True, **cf)
    if name == "gp":
        if not hasattr(optuna.samplers, "GPSampler"):
            raise ValueError(f"strategy gp needs Optuna with GPSampler (installed: {optuna.__version__})")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, population), **cf)
    if name == "random":
        return VectorSampler(space, FeasibleRandom(space, seed, feasible), objectives, seed, rank)
    if name == "evolution":
        return VectorSampler(space, RegularizedEvolution(space, seed, feasible, population=population),
                             objectives, seed, rank)
    if name in ("reinforce", "reinforce-factorised"):  # imports torch (the controller is a small network)
        from hwnas.search.rl import Controller, ControllerSettings

        kind = "factorised" if name.endswith("factorised") else "lstm"
        return VectorSampler(space, Controller(space, seed, feasible, kind, ControllerSettings(**(controller or {})),
                                               n_obj), objectives, seed, rank)
    if name in ("pymoo-nsga2", "pymoo-agemoea"):
        algo = name.removeprefix("pymoo-")
        if algo == "agemoea" and n_obj < 2:
            raise ValueError("pymoo-agemoea needs two or more objectives (use --reward pareto)")
        return VectorSampler(space, PymooStrategy(space, seed, algo, n_obj, n_constr, population), objectives, seed,
                             rank)
    raise ValueError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
