"""The search loop over an Optuna study (no torch: accuracy comes from the evaluator callback).

Per trial: the sampler proposes a choice vector -> genotype -> costs (FLOPs, params, predicted latency,
all analytic) -> over a hard budget: recorded as infeasible without training -> seen before: its
accuracy is reused (a genotype is never trained twice in a study) -> otherwise trained by the evaluator.
A failed training (OOM, NaN) is a FAIL trial with its reason; the study goes on. Everything lands in the
study as user attributes, which optuna-dashboard shows.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hwnas.procs import process_alive, process_tag
from hwnas.search.problem import Problem
from hwnas.search.records import CHOICES_WARNING, check_study_records
from hwnas.search.strategies import VIOLATIONS_ATTR, AskTell, VectorSampler, make_sampler, record_constraints

# Optuna logs its storage retries ("Caught an error from sqlalchemy ...") as warnings: hwnas reports what failed
# in one line of its own (a damaged study file would otherwise print three)
optuna.logging.set_verbosity(optuna.logging.ERROR)


@dataclass
class EvalResult:
    """What the evaluator callback returns: accuracy (None if training failed) and details to store."""

    acc: float | None
    failure: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


Evaluate = Callable[[Any], EvalResult]  # an architecture of the problem's space -> its result
EvaluateMany = Callable[[list[Any]], list[EvalResult]]
# architectures -> (value ranking them, higher is better; attributes to store) each, e.g. zero-cost scores
Prefilter = Callable[[list[Any]], list[tuple[float, dict[str, Any]]]]


ANNOTATED = "annotated"  # user attribute: the keys ``Search.annotate`` set on a trial


class EvaluationStopped(Exception):
    """The evaluator cannot go on (e.g. its device broke). ``results`` are those it finished first: a prefix,
    in order, of the genotypes it was given; the trials of the others are interrupted and re-queued."""

    def __init__(self, message: str, results: Sequence[EvalResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class SearchStopped(Exception):
    """The search cannot go on (e.g. the feasible region is too small to sample)."""


HEARTBEAT_S = 30  # a worker records a heartbeat of its RUNNING trials this often (RDB storages)
GRACE_S = 120  # a RUNNING trial whose worker cannot be looked at is taken as lost after this long without news
WORKER_ATTR = "hwnas:worker:"  # study system attribute, one per process that searched the study


def _worker_id() -> str:
    """``host:pid:start`` of this process (:mod:`hwnas.procs`)."""
    pid, _, start = process_tag().partition("-")
    return f"{socket.gethostname()}:{pid}:{start}"


def worker_alive(worker: str) -> bool | None:
    """Whether the process ``host:pid[:start]`` is alive: True or False for a process of this host, None where
    that cannot be told from here (another host, an unreadable name). A pid alive under another start time
    is a reused pid: the worker is gone."""
    host, pid, start = [*worker.split(":"), "", ""][:3]
    if host != socket.gethostname() or not pid.isdigit() or len(pid) > 12:
        return None
    return process_alive(int(pid), start)


@dataclass
class Search:
    problem: Problem
    study: optuna.Study
    evaluate: Evaluate
    strategy: str
    seed: int = 0
    population: int = 20
    annotate: Callable[[np.ndarray], dict[str, Any]] | None = None  # extra trial attributes per proposal
    evaluate_many: EvaluateMany | None = None  # trains several candidates at once (e.g. on one GPU)
    parallel: int = 1  # proposals asked before any of them is told (candidates trained together)
    grace: float = GRACE_S  # seconds without news after which a RUNNING trial of an unseen worker is lost
    heartbeat: float = HEARTBEAT_S  # seconds between heartbeats of this worker's RUNNING trials
    worker: str = field(default_factory=_worker_id)
    # pre-filtering: a batch of k evaluations asks k / ``prefilter_keep`` proposals, and only the k of its new
    # feasible ones that ``prefilter`` ranks highest are evaluated; the others are PRUNED trials
    prefilter: Prefilter | None = None
    prefilter_keep: float = 1.0

    # ---- study bookkeeping -----------------------------------------------------------------------
    def objectives_of(self, t: FrozenTrial) -> tuple[list[float], list[float]] | None:
        """Minimisation values and constraint values of a finished trial (for ask/tell strategies)."""
        a = t.user_attrs
        if "genotype" not in a or "feasible" not in a or a.get("interrupted"):
            return None
        costs = {k: a[k] for k in ("flops", "params", "latency_ms") if k in a}
        if "latency_ms" in costs:
            costs["latency"] = costs.pop("latency_ms")
        vals = self.problem.values(float(a.get("acc") or 0.0), costs)
        f = [-v if d == "maximize" else v for v, d in zip(vals, self.problem.directions, strict=True)]
        return f, list(a.get(VIOLATIONS_ATTR, []))

    def pareto(self) -> list[Any]:
        """The study's Pareto front as ``hwnas.search.report.Row``s (trial, genotype, acc, flops, params,
        latency_ms): non-dominated feasible trials over accuracy and the problem's cost axes, by first cost."""
        from hwnas.search.report import feasible_rows, pareto_front

        return pareto_front(feasible_rows(self.study.get_trials(deepcopy=False)), self.problem)

    def trained_count(self) -> int:
        """Evaluations spent: trials trained to completion plus genuine failures (not interruptions);
        infeasible proposals and repeats of a known genotype cost nothing and do not count."""
        n = 0
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            failed = t.state == TrialState.FAIL and a.get("failure") and not a.get("interrupted") \
                and "cached_from" not in a  # a repeat of a failed genotype cost nothing
            n += bool((t.state == TrialState.COMPLETE and a.get("trained")) or failed)
        return n

    def cache(self) -> dict[str, FrozenTrial]:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return {t.user_attrs["genotype"]: t for t in done if t.user_attrs.get("trained")}

    def register(self) -> None:
        """Say in the study that this process works on it, before it asks any trial: a trial a process asks
        is RUNNING before the process can write its name into it, and one killed in between leaves a trial
        without a worker, which ``recover`` gives back once no process that may have asked it is alive."""
        self.study._storage.set_study_system_attr(self.study._study_id, WORKER_ATTR + self.worker, True)

    def recover(self) -> list[int]:
        """Fail the RUNNING trials of workers that are gone and re-enqueue them and interrupted ones, so no
        evaluation is lost. Returns the recovered trial numbers. A worker is gone when:

        * it ran on this host: its process is dead, or its pid now names another process (start time);
        * it ran elsewhere: its trial's heartbeat (RDB storages, every ``heartbeat`` s) is older than the
          storage's grace period (Optuna's ``fail_stale_trials``);
        * the trial has no worker (killed between asking and naming itself): every other process registered
          on the study is dead, or the trial started more than ``grace`` s ago.

        (Optuna's own heartbeat runs only inside ``Study.optimize``; this loop uses ask/tell.)"""
        import datetime

        storage = self.study._storage  # BaseStorage's public methods, reached through the study
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)  # other hosts' trials: by their heartbeats
        trials = self.study.get_trials(deepcopy=False)
        workers = {k.removeprefix(WORKER_ATTR) for k in storage.get_study_system_attrs(self.study._study_id)
                   if k.startswith(WORKER_ATTR)}
        workers |= {str(t.user_attrs["worker"]) for t in trials if "worker" in t.user_attrs}
        others_maybe_alive = any(worker_alive(w) is not False for w in workers - {self.worker})
        now = datetime.datetime.now()
        requeued = set(self.study.user_attrs.get("requeued", []))
        recovered = []
        for t in trials:
            dead = False
            if t.state == TrialState.RUNNING:
                if "worker" in t.user_attrs:
                    dead = worker_alive(str(t.user_attrs["worker"])) is False
                else:
                    dead = not others_maybe_alive or t.datetime_start is None or \
                        (now - t.datetime_start).total_seconds() > self.grace
            if dead and self._finish_recorded(t):  # killed after its result was written, before its tell
                recovered.append(t.number)
                continue
            if dead:
                try:
                    storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                    storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:  # another worker recovered it first
                    continue
            # failed without a word of this loop's (no failure, not interrupted): failed by Optuna's heartbeat
            # check, as its worker was gone
            lost = dead or (t.state == TrialState.FAIL and (t.user_attrs.get("interrupted")
                                                             or "failure" not in t.user_attrs))
            if lost and t.params and t.number not in requeued:
                # what the strategy said of the proposal (e.g. its lineage) goes with it: no strategy sees
                # the re-queued copy, whose parameters are fixed
                said = {k: t.user_attrs[k] for k in t.user_attrs.get(ANNOTATED, []) if k in t.user_attrs}
                self.study.enqueue_trial(t.params, user_attrs={**said, ANNOTATED: list(said)} if said else None,
                                         skip_if_exists=False)
                requeued.add(t.number)
                recovered.append(t.number)
        if recovered:
            self.study.set_user_attr("requeued", sorted(requeued))
        return recovered

    def _finish_recorded(self, t: FrozenTrial) -> bool:
        """Complete the dead RUNNING trial ``t`` if its training result is fully written (``_tell`` writes
        ``trained`` last, after the accuracy and details): the training is kept, not run again. Its
        objective values are recomputed from its parameters (costs are pure) and told as this loop tells them."""
        a = t.user_attrs
        if a.get("trained") is not True or "acc" not in a or "failure" in a or not t.params:
            return False
        p = self.problem
        try:
            values = p.values(float(a["acc"]), p.costs(p.space.decode(p.space.from_choices(t.params))))
        except (KeyError, ValueError):  # parameters this space does not know: trained again instead
            return False
        try:
            self.study.tell(t.number, values)
        except ValueError:  # another worker finished it first ("Cannot tell a COMPLETE trial")
            return False
        return True

    def seed_population(self, n_trials: int | None = None) -> int:
        """For Optuna's evolutionary/model samplers on a fresh study: enqueue feasible random first
        trials, so a tight budget does not waste the first generation on infeasible proposals. For the
        other strategies that start from uniform samples (random, evolution, pymoo), one feasible network is
        looked for the same way: a budget nothing in the space meets is the same error (SpaceError), before
        any trial. (EAT-NAS transfer starts from its basic architecture's neighbourhood: not probed.)"""
        if self.study.get_trials(deepcopy=False):
            return 0
        rng = np.random.default_rng(self.seed)
        sp = self.problem.space
        if self.strategy in ("random", "evolution", "pymoo-nsga2", "pymoo-agemoea"):
            sp.sample_where(rng, lambda g: self.problem.feasible(self.problem.costs(g)))
            return 0
        if self.strategy not in ("nsga2", "nsga3", "tpe", "gp"):
            return 0
        n = self.population if self.strategy.startswith("nsga") else min(10, self.population)
        n = min(n, n_trials or n)
        for _ in range(n):
            x = sp.sample_where(rng, lambda g: self.problem.feasible(self.problem.costs(g)))
            self.study.enqueue_trial(sp.to_choices(x))
        return n

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, n_trials: int, on_trial: Callable[[FrozenTrial], None] | None = None,
            max_proposals: int | None = None, deadline: float | None = None) -> str:
        """Run until ``n_trials`` evaluations are in the study (previous runs count), within
        ``max_proposals`` proposals (default 50 x n_trials; infeasible and repeated ones cost no training).
        Proposals come ``parallel`` at a time; their new, feasible genotypes train together.

        ``deadline`` (a ``time.monotonic()`` value): no batch starts that would not end before it, by the mean
        wall time of this run's batches that trained (the first batch always starts). Returns why it ended:
        ``"trials"`` (the budget is in) or ``"time"`` (the next batch would end after ``deadline``)."""
        import time

        limit = max_proposals or 50 * n_trials
        proposals = 0
        self.register()
        checked = time.monotonic()
        took: list[float] = []  # wall seconds of this run's batches that trained a candidate
        last: tuple[int, float] | None = None  # the batch before: evaluations in the study before it, its start
        while True:
            done = self.trained_count()
            if last is not None and done > last[0]:
                took.append(time.monotonic() - last[1])
            if (left := n_trials - done) <= 0:
                return "trials"
            if deadline is not None and took and time.monotonic() + sum(took) / len(took) > deadline:
                return "time"
            if time.monotonic() - checked > self.heartbeat:  # other workers' dead trials, while this one runs
                self.recover()
                checked = time.monotonic()
                done = self.trained_count()  # a recovered trial is no evaluation of the next batch
            if proposals >= limit:
                raise SearchStopped(f"{proposals} proposals gave only {done} feasible, new "
                                    f"architectures: the budget is too tight for the space, or the space too small")
            k = max(1, min(self.parallel, left, limit - proposals))
            waiting = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            keep = None  # how many the prefilter lets through (None: no prefilter)
            if waiting:  # re-queued (or seeded) trials first, as a batch of their own: they were one
                k = min(k, waiting)
            elif self.prefilter is not None:  # 1/keep proposals for each evaluation, the best k evaluated
                keep, k = k, max(1, min(math.ceil(k / self.prefilter_keep - 1e-9), limit - proposals))
            proposals += k
            last = (done, time.monotonic())
            self.step(on_trial, k, keep)

    def step(self, on_trial: Callable[[FrozenTrial], None] | None = None, k: int = 1, keep: int | None = None) -> None:
        """Ask ``k`` proposals, price them, train the feasible new ones (together; ``keep``: only the ``keep``
        the prefilter ranks highest), tell every one. While they are RUNNING, a thread records their
        heartbeats (RDB storages)."""
        with _Heartbeat(self.study, self.heartbeat) as beat:
            self._step(on_trial, k, beat, keep)

    def _step(self, on_trial: Callable[[FrozenTrial], None] | None, k: int, beat: _Heartbeat,
              keep: int | None = None) -> None:
        p, sp = self.problem, self.problem.space
        asked: list[tuple[optuna.Trial, Any, dict[str, Any], bool]] = []
        trial: optuna.Trial | None = None
        try:
            batch: int | None = None
            for _ in range(k):
                with warnings.catch_warnings():  # "heartbeat ... with Study.optimize": _Heartbeat does it here
                    warnings.filterwarnings("ignore", message=".*[Hh]eartbeat")
                    trial = self.study.ask()
                trial.set_user_attr("worker", self.worker)
                beat.add(trial._trial_id)
                batch = trial.number if batch is None else batch
                trial.set_user_attr("batch", batch)  # proposed together (replayed so: VectorSampler.catch_up)
                choices = {name: trial.suggest_categorical(name, list(opts)) for name, opts in sp.dims}
                x = sp.from_choices(choices)
                g = sp.decode(x)
                said = self.annotate(x) if self.annotate else {}
                if said and ANNOTATED not in trial.user_attrs:  # a re-queued trial keeps what its original said
                    for key, v in said.items():
                        trial.set_user_attr(key, v)
                    trial.set_user_attr(ANNOTATED, sorted(said))
                costs = p.costs(g)
                attrs: dict[str, Any] = {"genotype": g.to_string(),
                                         **{k: costs[k] for k in ("flops", "params") if k in costs},
                                         "feasible": p.feasible(costs)}
                if "latency" in costs:
                    attrs["latency_ms"] = costs["latency"]
                for key, v in attrs.items():
                    trial.set_user_attr(key, v)
                record_constraints(trial, p.violations(costs))
                asked.append((trial, g, costs, attrs["feasible"]))
                trial = None
        except BaseException:  # no proposal (a strategy out of feasible points), Ctrl-C: none left RUNNING
            self._interrupt([a[0] for a in asked] + ([trial] if trial is not None else []))
            raise
        cache = self.cache()
        todo: dict[str, Any] = {}  # genotype string -> genotype, trained once however often asked
        for _, g, _, feasible in asked:
            if feasible and g.to_string() not in cache:
                todo.setdefault(g.to_string(), g)
        notes: dict[str, dict[str, Any]] = {}  # genotype -> what the prefilter said of it
        results: list[EvalResult] = []
        try:
            if keep is not None and self.prefilter is not None and todo:
                notes = self._prefilter(todo, keep)  # drops from ``todo`` what it does not keep
            genos = list(todo.values())
            if len(genos) > 1 and self.evaluate_many is not None:
                results = self.evaluate_many(genos)
            else:
                for g in genos:
                    results.append(self.evaluate(g))
        except EvaluationStopped as e:  # what it finished is kept; the rest is interrupted, re-queued on resume
            self._tell(asked, cache, dict(zip(todo, [*results, *e.results], strict=False)), on_trial, notes)
            raise
        except BaseException:  # Ctrl-C: nothing of the batch is lost
            self._interrupt([a[0] for a in asked])
            raise
        self._tell(asked, cache, dict(zip(todo, results, strict=True)), on_trial, notes)

    def _prefilter(self, todo: dict[str, Any], n_keep: int) -> dict[str, dict[str, Any]]:
        """Rank ``todo``'s genotypes by the prefilter and drop from it all but the ``n_keep`` best; returns what
        the prefilter said of each, ``prefiltered`` True for those dropped."""
        assert self.prefilter is not None
        keys = list(todo)
        scored = self.prefilter([todo[key] for key in keys])
        order = sorted(range(len(keys)), key=lambda i: -scored[i][0])  # stable: ties keep the proposal order
        kept = set(order[:n_keep])
        notes = {}
        for i, key in enumerate(keys):
            notes[key] = {**scored[i][1], "prefiltered": i not in kept}
            if i not in kept:
                del todo[key]
        return notes

    def _interrupt(self, trials: list[optuna.Trial]) -> None:
        """Fail ``trials`` as interrupted: re-queued on resume (those with their parameters), not counted."""
        for t in trials:
            t.set_user_attr("interrupted", True)
            self.study.tell(t, state=TrialState.FAIL)

    def _tell(self, asked: list[tuple[optuna.Trial, Any, dict[str, Any], bool]], cache: dict[str, FrozenTrial],
              trained: dict[str, EvalResult], on_trial: Callable[[FrozenTrial], None] | None,
              notes: dict[str, dict[str, Any]] | None = None) -> None:
        """Tell every trial of a batch its outcome; one whose genotype is neither priced out, known nor in
        ``trained`` (its evaluation stopped) is failed as interrupted; one the prefilter dropped (``notes``)
        is PRUNED, with what the prefilter said of it."""
        p = self.problem
        first: dict[str, int] = {}
        notes = notes or {}
        for trial, g, costs, feasible in asked:
            key = g.to_string()
            outcome: dict[str, Any]
            for name, v in notes.get(key, {}).items():
                trial.set_user_attr(name, v)
            if notes.get(key, {}).get("prefiltered"):
                trial.set_user_attr("trained", False)
                self.study.tell(trial, state=TrialState.PRUNED)
                if on_trial is not None:
                    on_trial(self.study._storage.get_trial(trial._trial_id))
                continue
            if feasible and key not in cache and key not in trained:
                self._interrupt([trial])
                continue
            if not feasible:  # priced, never trained
                outcome = {"acc": 0.0, "trained": False}
            elif key in cache:  # never train a genotype twice
                outcome = {"acc": float(cache[key].user_attrs["acc"]), "trained": False,
                           "cached_from": cache[key].number}
            elif key in first:  # asked twice in this batch: the first one's result, failure included
                outcome = {"acc": trained[key].acc or 0.0, "trained": False, "cached_from": first[key]}
                if trained[key].acc is None:
                    outcome["failure"] = f"as trial {first[key]}: {trained[key].failure or 'unknown failure'}"
            else:
                first[key] = trial.number
                res = trained[key]
                outcome = {**res.details, "acc": res.acc or 0.0}
                if res.acc is None:
                    outcome["failure"] = res.failure or "unknown failure"
                outcome["trained"] = res.acc is not None  # written last: a result with it is whole (recover)
            for name, v in outcome.items():
                trial.set_user_attr(name, v)
            if "failure" in outcome:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, p.values(outcome["acc"], costs))
            if on_trial is not None:
                on_trial(self.study._storage.get_trial(trial._trial_id))


class _Heartbeat:
    """Records Optuna heartbeats of the trials ``add``ed, now and every ``interval`` s from a thread, until the
    ``with`` block ends (a no-op on storages without heartbeats, e.g. in memory)."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        storage = study._storage  # RDBStorage (BaseHeartbeat) where made with a heartbeat interval
        beats = hasattr(storage, "record_heartbeat") and getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.storage: Any = storage if beats else None
        self.interval, self.ids = interval, list[int]()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if self.storage is not None:
            self.storage.record_heartbeat(trial_id)
            self.ids.append(trial_id)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            for trial_id in list(self.ids):
                # a storage hiccup: the next beat tries again; the grace period is long
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(trial_id)

    def __enter__(self) -> _Heartbeat:
        if self.storage is not None:
            self.thread = threading.Thread(target=self._beat, name="hwnas-heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def storage_of(url: str, heartbeat: float = HEARTBEAT_S, grace: float = GRACE_S) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url`` whose trials carry heartbeats (dead workers of other hosts are recognised)."""
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=max(1, round(heartbeat)),
                                      grace_period=max(1, round(grace)))


def create_search(problem: Problem, storage: str | optuna.storages.BaseStorage | None, study_name: str,
                  strategy: str, evaluate: Evaluate, seed: int = 0, population: int = 20, resume: bool = False,
                  settings: dict[str, Any] | None = None,
                  custom: Callable[[Callable[[np.ndarray], bool]], AskTell] | None = None,
                  evaluate_many: EvaluateMany | None = None, parallel: int = 1, prefilter: Prefilter | None = None,
                  prefilter_keep: float = 1.0) -> Search:
    """Create (or, with ``resume``, load) the study and wire the strategy's sampler. ``custom`` builds an
    ask/tell strategy from the feasibility test (used instead of ``strategy``'s own, which then only names it)."""
    fingerprint = {"problem": problem.describe(), "strategy": strategy, "seed": seed, "population": population,
                   **(settings or {})}
    holder: dict[str, Search] = {}

    def objectives(t: FrozenTrial) -> tuple[list[float], list[float]] | None:
        return holder["s"].objectives_of(t)

    def feasible(x: np.ndarray) -> bool:
        return problem.feasible(problem.costs(problem.space.decode(x)))

    sampler = VectorSampler(problem.space, custom(feasible), objectives, seed) if custom is not None else \
        make_sampler(strategy, problem.space, seed, len(problem.directions), len(problem.hard_budgets), feasible,
                     objectives, population)
    if isinstance(storage, str):
        storage = storage_of(storage)
    study = optuna.create_study(storage=storage, study_name=study_name, directions=problem.directions,
                                sampler=sampler, load_if_exists=resume)
    existing = study.user_attrs.get("hwnas")
    if existing is not None and not isinstance(existing, dict):  # NaN, [1], "abc": edited by hand, or damaged
        raise ValueError(f"study {study_name!r}: its settings record is damaged (its hwnas attribute is a "
                         f"{type(existing).__name__}, not an object)")
    if existing is not None:  # a setting recorded only since a later version is not held against a study made before it
        now = _jsonable(fingerprint)
        diff = sorted(k for k in existing if existing[k] != now.get(k))
        if diff:
            raise ValueError(f"study {study_name!r} was run with other settings ({', '.join(diff)}); "
                             f"use the same settings to resume, or another --study-name")
    # every resumed study's trials, its settings recorded or not (a study made by hand): before any change to it
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CHOICES_WARNING)  # refused by the check
        trials = study.get_trials(deepcopy=False)
    check_study_records(study_name, study.user_attrs, trials, len(study.directions), problem.space.parse)
    if existing is None:
        study.set_user_attr("hwnas", fingerprint)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2: the dashboard shows the names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(problem.value_names)
    if not 0 < prefilter_keep <= 1:
        raise ValueError(f"the prefilter keeps a fraction in (0, 1] of the proposals, not {prefilter_keep}")
    s = Search(problem, study, evaluate, strategy, seed, population, evaluate_many=evaluate_many,
               parallel=max(1, parallel), prefilter=prefilter, prefilter_keep=prefilter_keep)
    holder["s"] = s
    return s


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))
