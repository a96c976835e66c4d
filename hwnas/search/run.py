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
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hwnas.interrupts import deferred, interruptible, safe_point
from hwnas.procs import process_alive, process_tag
from hwnas.search.claims import RETRY_S, Claims, MemoryClaims, claims_of, connection_lost
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
PROBLEM_ATTR = "hwnas_problem"  # study user attribute: ``Problem.record`` (``hwnas report`` rebuilds the problem)


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
    poll: float = 1.0  # seconds between looks at a trial another worker is training (a genotype both proposed)
    rank: int = 0  # this worker's rank among the study's live workers (``take_rank``): its strategy's seed offset
    _claims: Claims | None = field(default=None, repr=False)
    _budget: int | None = field(default=None, repr=False)  # ``run``'s n_trials: claims never exceed it

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

    @deferred()
    def recover(self) -> list[int]:
        """Fail the RUNNING trials of workers that are gone and re-enqueue them and interrupted ones, so no
        evaluation is lost. Returns the recovered trial numbers. A worker is gone when:

        * it ran on this host: its process is dead, or its pid now names another process (start time);
        * it ran elsewhere: its trial's heartbeat (RDB storages, every ``heartbeat`` s) is older than the
          storage's grace period (Optuna's ``fail_stale_trials``), or it has not said it is alive in the claims
          record (``see``, every ``heartbeat`` s: every storage, journal files included) for ``grace`` s;
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
        now = datetime.datetime.now()
        seen = {str(v.get("worker")): float(v.get("seen", 0)) for v in self.claims.read().get("ranks", {}).values()}

        def gone(worker: str) -> bool:  # this host: its process; elsewhere: not seen in the claims record lately
            alive = worker_alive(worker)
            return alive is False or (alive is None and worker in seen and now.timestamp() - seen[worker] > self.grace)

        others_maybe_alive = any(not gone(w) for w in workers - {self.worker})
        requeued = set(self.study.user_attrs.get("requeued", []))
        recovered = []

        for t in trials:
            dead = False
            if t.state == TrialState.RUNNING:
                if "worker" in t.user_attrs:
                    dead = gone(str(t.user_attrs["worker"]))
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
            if lost and t.params and t.number not in requeued and not t.user_attrs.get("over_budget") \
                    and self._requeue_claimed(t.number):  # one worker re-queues it, however many recover at once
                # what the strategy said of the proposal (e.g. its lineage) goes with it: no strategy sees
                # the re-queued copy, whose parameters are fixed
                said = {k: t.user_attrs[k] for k in t.user_attrs.get(ANNOTATED, []) if k in t.user_attrs}
                self.study.enqueue_trial(t.params, user_attrs={**said, ANNOTATED: list(said)} if said else None,
                                         skip_if_exists=False)
                requeued.add(t.number)
                recovered.append(t.number)
        if recovered:  # what other workers re-queued meanwhile is kept (the attribute is read again)
            self.study.set_user_attr("requeued", sorted(requeued | set(self.study.user_attrs.get("requeued", []))))
        self.reconcile()
        return recovered

    def _requeue_claimed(self, number: int) -> bool:
        """Whether this worker is the one to re-queue lost trial ``number`` (first to say so in the claims
        record): two workers recovering at once would both read the study's ``requeued`` before either wrote."""
        key = str(number)

        def take(r: dict[str, Any]) -> bool:
            done = r.setdefault("requeued", [])
            if key in done:
                return False
            done.append(key)
            return True

        return bool(self.claims.transact(take))

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

    @deferred()
    def seed_population(self, n_trials: int | None = None) -> int:
        """For Optuna's evolutionary/model samplers on a fresh study: enqueue feasible random first
        trials, so a tight budget does not waste the first generation on infeasible proposals. For the
        other strategies that start from uniform samples (random, evolution, pymoo, reinforce), one feasible network is
        looked for the same way: a budget nothing in the space meets is the same error (SpaceError), before
        any trial. (EAT-NAS transfer starts from its basic architecture's neighbourhood: not probed.)"""
        if self.study.get_trials(deepcopy=False):
            return 0
        rng = np.random.default_rng(self.seed)
        sp = self.problem.space
        if self.strategy in ("nsga2", "nsga3", "tpe", "gp") and not self.claims.transact(_first("seeded")):
            return 0  # another worker starting on the same fresh study seeds it
        if self.strategy in ("random", "evolution", "pymoo-nsga2", "pymoo-agemoea", "reinforce",
                             "reinforce-factorised"):
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

    # ---- claims: what every worker of the study has taken (hwnas.search.claims) --------------------
    # The record: ``running`` {genotype: {trial, worker}} under training, ``trained`` {genotype: trial} trained to
    # completion, ``evaluations`` (trained ones plus genuine failures: the budget spent), ``synced`` (started from
    # the study's trials). A genotype is trained only by the worker that claimed it; the budget is ``evaluations``
    # plus what is running, so N workers never start more than ``n_trials`` evaluations between them.
    @property
    def claims(self) -> Claims:
        if self._claims is None:
            self._claims = claims_of(self.study)
        return self._claims

    def take_rank(self) -> int:
        """The lowest rank no live worker of the study holds (a worker of this host whose process is gone, or
        one not seen for ``grace`` s, holds none); held by this worker from now on (``see``). Each rank seeds
        its strategy with ``seed + rank``, so workers propose different architectures, and a restarted worker
        that takes a dead one's rank replays that rank's own proposals (``VectorSampler``)."""
        import time

        now = time.time()

        def take(r: dict[str, Any]) -> int:
            ranks = r.setdefault("ranks", {})
            for k, v in ranks.items():
                if v.get("worker") == self.worker:
                    v["seen"] = now
                    return int(k)
            i = 0
            while True:
                held = ranks.get(str(i))
                if held is None or worker_alive(str(held.get("worker"))) is False or \
                        now - float(held.get("seen", 0)) > self.grace:
                    ranks[str(i)] = {"worker": self.worker, "seen": now}
                    return i
                i += 1

        self.rank = int(self.claims.transact(take))
        return self.rank

    def see(self) -> None:
        """Say in the claims record that this worker (its rank) is alive; from the heartbeat thread."""
        import time

        def seen(r: dict[str, Any]) -> None:
            held = r.get("ranks", {}).get(str(self.rank))
            if held is not None and held.get("worker") == self.worker:
                held["seen"] = time.time()

        self.claims.transact(seen)

    def sync_claims(self) -> None:
        """Start the claims record of a study from its trials (a study searched before claims were kept), or
        again when the record is stale: it names trials the study does not hold (a deleted study whose id a new
        one reuses, as SQLite does). The record is read before the trials: every trial it names exists by then."""
        record = self.claims.read()
        trials = self.study.get_trials(deepcopy=False)

        def names(number: Any, genotype: str | None = None) -> bool:
            return 0 <= int(number) < len(trials) and (genotype is None or
                                                       trials[int(number)].user_attrs.get("genotype") == genotype)

        stale = not all(names(n, g) for g, n in record.get("trained", {}).items()) or \
            not all(names(c.get("trial", -1)) for c in record.get("running", {}).values()) or \
            (int(record.get("evaluations", 0)) > 0 and not trials)
        if record.get("synced") and not stale:
            return
        trained = {g: t.number for g, t in self.cache().items()}
        spent = self.trained_count()
        was = record.get("version")

        def init(r: dict[str, Any]) -> None:
            if not r.get("synced") or (stale and r.get("version") == was):  # unless another worker did it meanwhile
                r.clear()
                r.update(synced=True, running={}, trained=trained, evaluations=spent, version=(was or 0) + 1)

        self.claims.transact(init)

    def spent(self) -> tuple[int, int]:
        """(evaluations finished, evaluations under way) by every worker of the study."""
        r = self.claims.read()
        return int(r.get("evaluations", 0)), len(r.get("running", {}))

    def _claim(self, todo: dict[str, Any], numbers: dict[str, int]) -> tuple[list[str], dict[str, int], list[str]]:
        """Claim ``todo``'s genotypes (``numbers``: the trial of each) within the budget. Returns (those this
        worker trains, {genotype: trial of another worker training or having trained it}, those over budget)."""
        budget = self._budget

        def take(r: dict[str, Any]) -> tuple[list[str], dict[str, int], list[str]]:
            running, trained = r.setdefault("running", {}), r.setdefault("trained", {})
            used = int(r.setdefault("evaluations", 0)) + len(running)
            won, taken, over = [], {}, []
            for key in todo:
                if key in trained:
                    taken[key] = int(trained[key])
                elif key in running and running[key]["worker"] != self.worker:
                    taken[key] = int(running[key]["trial"])
                elif budget is not None and used >= budget:
                    over.append(key)
                else:
                    running[key] = {"trial": numbers[key], "worker": self.worker}
                    used += 1
                    won.append(key)
            return won, taken, over

        return self.claims.transact(take)

    def _release(self, outcomes: dict[str, tuple[int, str]]) -> None:
        """End this worker's claims: {genotype: (trial, "trained" | "failed" | "interrupted")}; a trained one
        joins ``trained``, a trained or failed one counts as an evaluation, an interrupted one is freed."""
        if not outcomes:
            return

        def end(r: dict[str, Any]) -> None:
            running = r.setdefault("running", {})
            for key, (number, how) in outcomes.items():
                if running.get(key, {}).get("trial") != number:
                    continue  # not this claim (already reconciled by another worker)
                del running[key]
                if how == "trained":
                    r.setdefault("trained", {})[key] = number
                if how in ("trained", "failed"):
                    r["evaluations"] = int(r.get("evaluations", 0)) + 1

        self.claims.transact(end)

    def reconcile(self) -> list[int]:
        """End the claims of trials that are no longer RUNNING (their worker died between the trial's end and the
        claim's, or ``recover`` failed them): a completed training is kept, a lost one freed. Returns the trials."""
        running = self.claims.read().get("running", {})
        if not running:
            return []
        ended: dict[str, tuple[int, str]] = {}
        states = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for key, claim in running.items():
            t = states.get(int(claim["trial"]))
            if t is None or t.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            a = t.user_attrs
            how = "trained" if t.state == TrialState.COMPLETE and a.get("trained") else \
                "failed" if t.state == TrialState.FAIL and a.get("failure") and not a.get("interrupted") else \
                "interrupted"
            ended[key] = (int(claim["trial"]), how)

        self._release(ended)
        return sorted(n for n, _ in ended.values())

    # ---- the loop -------------------------------------------------------------------------------------
    @deferred()  # an interrupt waits for the storage call under way; training and waiting are interruptible
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
        self._budget = n_trials
        self.register()
        self.sync_claims()
        self.reconcile()
        checked = time.monotonic()
        took: list[float] = []  # wall seconds of this run's batches that trained a candidate
        last: tuple[int, float] | None = None  # the batch before: evaluations in the study before it, its start
        while True:
            safe_point()  # between batches: an interrupt held during the last one's bookkeeping stops here
            done, elsewhere = self.spent()
            if last is not None and done > last[0]:
                took.append(time.monotonic() - last[1])
                last = None
            if done >= n_trials:
                return "trials"
            if deadline is not None and took and time.monotonic() + sum(took) / len(took) > deadline:
                return "time"
            if time.monotonic() - checked > self.heartbeat:  # other workers' dead trials, while this one runs
                self.see()
                self.recover()
                checked = time.monotonic()
                continue  # a recovered trial is no evaluation of the next batch
            if (left := n_trials - done - elsewhere) <= 0:  # the rest of the budget is under way in other workers
                if deadline is not None and time.monotonic() > deadline:
                    return "time"
                with interruptible():
                    time.sleep(self.poll)  # until they finish it (or die, and ``recover`` frees what they held)
                continue
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

    @deferred()
    def step(self, on_trial: Callable[[FrozenTrial], None] | None = None, k: int = 1, keep: int | None = None) -> None:
        """Ask ``k`` proposals, price them, train the feasible new ones (together; ``keep``: only the ``keep``
        the prefilter ranks highest), tell every one. While they are RUNNING, a thread records their
        heartbeats (RDB storages)."""
        shared = not isinstance(self.claims, MemoryClaims)  # other processes may search the study
        with _Heartbeat(self.study, self.heartbeat, self.see if shared else None) as beat:
            self._step(on_trial, k, beat, keep)

    def _step(self, on_trial: Callable[[FrozenTrial], None] | None, k: int, beat: _Heartbeat,
              keep: int | None = None) -> None:
        p, sp = self.problem, self.problem.space
        asked: list[tuple[optuna.Trial, Any, dict[str, Any], bool]] = []
        trial: optuna.Trial | None = None
        try:
            batch: int | None = None
            for _ in range(k):
                for _attempt in range(100):
                    with warnings.catch_warnings():  # "heartbeat ... with Study.optimize": _Heartbeat does it here
                        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat")
                        trial = self.study.ask()
                    if self._own(trial):
                        break
                    trial = None  # another worker popped the same enqueued trial first: it is theirs
                else:
                    raise SearchStopped("100 enqueued trials in a row were taken by other workers as this one asked")
                trial.set_user_attr("worker", self.worker)
                if self.rank:  # whose strategy proposed it (replayed so: VectorSampler.catch_up); unset: rank 0
                    trial.set_user_attr("rank", self.rank)
                beat.add(trial._trial_id)
                batch = trial.number if batch is None else batch
                trial.set_user_attr("batch", batch)  # proposed together (replayed so: VectorSampler.catch_up)
                choices = {name: trial.suggest_categorical(name, list(opts)) for name, opts in sp.dims}
                x = sp.from_choices(choices)
                g = sp.canonical(sp.decode(x))  # one network, one genotype: trained once
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
            self._fresh_connections()
            self._interrupt([a[0] for a in asked] + ([trial] if trial is not None else []))
            raise
        cache = self.cache()
        todo: dict[str, Any] = {}  # genotype string -> genotype, trained once however often asked
        for _, g, _, feasible in asked:
            if feasible and g.to_string() not in cache:
                todo.setdefault(g.to_string(), g)
        notes: dict[str, dict[str, Any]] = {}  # genotype -> what the prefilter said of it
        numbers: dict[str, int] = {}  # genotype -> the first trial of the batch that proposed it
        for trial, g, _, _ in asked:
            numbers.setdefault(g.to_string(), trial.number)
        won: list[str] = []  # genotypes this worker claimed: it trains them
        mine: list[str] = []  # those of them claimed first (trained together; the others by ``_await``)
        over: set[str] = set()  # proposed beyond the budget (other workers spent it meanwhile): not trained
        results: list[EvalResult] = []
        later: dict[str, EvalResult] = {}  # results of genotypes claimed again after their first claim was lost
        try:
            if keep is not None and self.prefilter is not None and todo:
                notes = self._prefilter(todo, keep)  # drops from ``todo`` what it does not keep
            mine, taken, over_list = self._claim(todo, numbers)
            won.extend(mine)
            over.update(over_list)
            genos = [todo[key] for key in mine]
            with interruptible():  # training: Ctrl-C stops it at once (the handler below keeps the rest)
                if len(genos) > 1 and self.evaluate_many is not None:
                    results = self.evaluate_many(genos)
                else:
                    for g in genos:
                        results.append(self.evaluate(g))
            later = self._await(taken, todo, numbers, cache, won, over)
        except EvaluationStopped as e:  # what it finished is kept; the rest is interrupted, re-queued on resume
            got = dict(zip(mine, [*results, *e.results], strict=False)) | later
            self._told(asked, cache, got, on_trial, notes, over, {k: numbers[k] for k in won})
            raise
        except BaseException:  # Ctrl-C: nothing of the batch is lost
            self._fresh_connections()
            self._interrupt([a[0] for a in asked])
            self._release({k: (numbers[k], "interrupted") for k in won})
            raise
        got = dict(zip(mine, results, strict=True)) | later
        self._told(asked, cache, got, on_trial, notes, over, {k: numbers[k] for k in won})

    def _told(self, asked: list[tuple[optuna.Trial, Any, dict[str, Any], bool]], cache: dict[str, FrozenTrial],
              got: dict[str, EvalResult], on_trial: Callable[[FrozenTrial], None] | None,
              notes: dict[str, dict[str, Any]], over: set[str], won: dict[str, int]) -> None:
        """``_tell`` the batch, then end this worker's claims (``won``: genotype -> trial). Interrupted while
        telling (Ctrl-C, SIGTERM), it still tells the trials left RUNNING what they got -- a training already
        done is only written, not lost -- and ends the claims by what the trials became, then goes on."""
        try:
            self._tell(asked, cache, got, on_trial, notes, over)
            self._release({k: (n, _how(got.get(k))) for k, n in won.items()})
        except BaseException:
            self._fresh_connections()
            storage = self.study._storage
            still = [a for a in asked if storage.get_trial(a[0]._trial_id).state == TrialState.RUNNING]
            self._tell(still, self.cache(), got, None, notes, over)  # a repeat of one told meanwhile: cached
            self.reconcile()
            raise

    def _await(self, taken: dict[str, int], todo: dict[str, Any], numbers: dict[str, int],
               cache: dict[str, FrozenTrial], won: list[str], over: set[str]) -> dict[str, EvalResult]:
        """Wait for the genotypes of this batch that other workers claimed first (``taken``: genotype -> their
        trial): a training they complete joins ``cache``; one that fails is this batch's failure too (returned,
        ``cached_from`` their trial); one whose worker died is claimed again and, if this worker wins it (added
        to ``won``), trained here (returned). Other workers' dead trials are recovered while it waits."""
        import time

        out: dict[str, EvalResult] = {}
        recovered = time.monotonic()
        while taken:
            trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
            for key, number in list(taken.items()):
                t = trials.get(number)
                if t is not None and t.state in (TrialState.RUNNING, TrialState.WAITING):
                    continue
                del taken[key]
                a = t.user_attrs if t is not None else {}
                if t is not None and t.state == TrialState.COMPLETE and a.get("trained"):
                    cache[key] = t
                elif t is not None and t.state == TrialState.FAIL and a.get("failure") and not a.get("interrupted"):
                    out[key] = EvalResult(None, f"as trial {number}: {a['failure']}", {"cached_from": number})
                else:  # interrupted or lost: whoever claims it now trains it
                    mine, again, beyond = self._claim({key: todo[key]}, numbers)
                    taken.update(again)
                    over.update(beyond)
                    if mine:
                        won.append(key)
                        with interruptible():
                            out[key] = self.evaluate(todo[key])
            if taken:
                with interruptible():
                    time.sleep(self.poll)
                if time.monotonic() - recovered > self.heartbeat:  # (the step's heartbeat thread calls ``see``)
                    self.recover()
                    recovered = time.monotonic()
        return out

    def _own(self, trial: optuna.Trial) -> bool:
        """Whether this worker may run ``trial``, just asked. An enqueued trial (seeded, re-queued) can be popped
        by two workers at once on storages that cannot lock its row (SQLite): the first to claim its number in
        the claims record runs it, the other leaves it alone. A trial the sampler made is this worker's alone."""
        if "fixed_params" not in self.study._storage.get_trial_system_attrs(trial._trial_id):
            return True
        key = str(trial.number)

        def take(r: dict[str, Any]) -> bool:
            popped = r.setdefault("popped", {})
            if popped.get(key, self.worker) != self.worker:
                return False
            popped[key] = self.worker
            return True

        return bool(self.claims.transact(take))

    def _prefilter(self, todo: dict[str, Any], n_keep: int) -> dict[str, dict[str, Any]]:
        """Rank ``todo``'s genotypes by the prefilter and drop from it all but the ``n_keep`` best; returns what
        the prefilter said of each, ``prefiltered`` True for those dropped."""
        assert self.prefilter is not None
        keys = list(todo)
        with interruptible():  # scoring networks: seconds
            scored = self.prefilter([todo[key] for key in keys])
        order = sorted(range(len(keys)), key=lambda i: -scored[i][0])  # stable: ties keep the proposal order
        kept = set(order[:n_keep])
        notes = {}
        for i, key in enumerate(keys):
            notes[key] = {**scored[i][1], "prefiltered": i not in kept}
            if i not in kept:
                del todo[key]
        return notes

    def _fresh_connections(self) -> None:
        """In the handler of an interrupt (Ctrl-C, SIGTERM) that may have landed inside a database call: let go of
        the connection it interrupted and close this process's pooled ones (an RDB storage's). A connection left
        with an unfinished statement holds SQLite's shared lock, and the next commit, ours, would wait on it
        forever; the interrupted call's frames, kept alive by the traceback, still hold that connection."""
        import gc
        import traceback

        storage = getattr(self.study._storage, "_backend", self.study._storage)
        if not isinstance(storage, optuna.storages.RDBStorage):
            return
        tb = sys.exc_info()[2]
        if tb is not None:
            traceback.clear_frames(tb)  # the finished frames' locals: the interrupted call's connection
        gc.collect()
        with contextlib.suppress(Exception):
            storage.remove_session()
            storage.engine.dispose()

    def _interrupt(self, trials: list[optuna.Trial]) -> None:
        """Fail ``trials`` as interrupted: re-queued on resume (those with their parameters), not counted."""
        for t in trials:
            t.set_user_attr("interrupted", True)
            self.study.tell(t, state=TrialState.FAIL)

    def _tell(self, asked: list[tuple[optuna.Trial, Any, dict[str, Any], bool]], cache: dict[str, FrozenTrial],
              trained: dict[str, EvalResult], on_trial: Callable[[FrozenTrial], None] | None,
              notes: dict[str, dict[str, Any]] | None = None, over: set[str] | None = None) -> None:
        """Tell every trial of a batch its outcome; one whose genotype is neither priced out, known nor in
        ``trained`` (its evaluation stopped) is failed as interrupted (``over``: proposed beyond the budget,
        marked ``over_budget`` and never re-queued); one the prefilter dropped (``notes``) is PRUNED, with what
        the prefilter said of it."""
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
                if key in (over or ()):
                    trial.set_user_attr("over_budget", True)
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


def _first(flag: str) -> Callable[[dict[str, Any]], bool]:
    """A claims transaction: True for the first worker that runs it (it sets ``flag``), False for the others."""

    def take(r: dict[str, Any]) -> bool:
        if r.get(flag):
            return False
        r[flag] = True
        return True

    return take


def _how(result: EvalResult | None) -> str:
    """How a claimed training ended, for ``Search._release``."""
    if result is None:
        return "interrupted"
    if result.acc is not None:
        return "trained"
    return "failed" if "cached_from" not in result.details else "interrupted"


class _Heartbeat:
    """Records Optuna heartbeats of the trials ``add``ed (storages with heartbeats: RDB), and calls ``hook`` (the
    worker's own liveness in the claims record: every storage), every ``interval`` s from a thread, until the
    ``with`` block ends."""

    def __init__(self, study: optuna.Study, interval: float, hook: Callable[[], None] | None = None) -> None:
        storage = study._storage  # RDBStorage (BaseHeartbeat) where made with a heartbeat interval
        beats = hasattr(storage, "record_heartbeat") and getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.storage: Any = storage if beats else None
        self.hook = hook
        self.interval, self.ids = interval, list[int]()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if self.storage is not None:
            self.storage.record_heartbeat(trial_id)
            self.ids.append(trial_id)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            # a storage hiccup: the next beat tries again; the grace period is long
            for trial_id in list(self.ids) if self.storage is not None else []:
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(trial_id)
            if self.hook is not None:
                with contextlib.suppress(Exception):
                    self.hook()

    def __enter__(self) -> _Heartbeat:
        if self.storage is not None or self.hook is not None:
            self.thread = threading.Thread(target=self._beat, name="hwnas-heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        import time

        waited, pause, again = 0.0, 0.2, False
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if again and name == "set_trial_state_values":  # the lost answer was to a commit that went in
                    return True
                raise
            except Exception as e:
                if not connection_lost(e) or waited >= self.retry_s:
                    raise
                with contextlib.suppress(Exception):  # this thread's session holds the dead connection's transaction
                    self.remove_session()
            time.sleep(pause)
            waited, pause, again = waited + pause, min(10.0, pause * 2), True

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``RDBStorage.{name}``, retried through a lost connection."
    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """An RDB storage whose calls are retried, with backoff (0.2 s doubling to 10 s), for up to ``retry_s``
    seconds while the database cannot be reached (restarted, a network cut): a worker waits for it instead of
    dying with a finished training in hand. Other errors are raised at once."""

    retry_s: float = RETRY_S


for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
              "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_state_values",
              "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
              "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "get_best_trial",
              "record_heartbeat",  # and the private ones Optuna's _CachedStorage calls on its backend:
              "_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param"):
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retrying(_name))


def journal_path(storage: str) -> str | None:
    """The file of a journal storage: a ``--storage`` that is a path, not a URL (``scheme://...``); else None."""
    return None if "://" in storage else storage


def storage_of(url: str, heartbeat: float = HEARTBEAT_S,
               grace: float = GRACE_S) -> optuna.storages.RDBStorage | optuna.storages.JournalStorage:
    """The storage ``url`` names: an RDB storage whose trials carry heartbeats (dead workers of other hosts are
    recognised), or, for a file path, Optuna's journal file (``JournalFileBackend``, locked by ``O_EXCL`` lock
    files: a shared file system of NFSv3 or later, for workers without a database server)."""
    if (path := journal_path(url)) is not None:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        return optuna.storages.JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))
    import time

    import sqlalchemy.exc

    # SQLite: wait for another writer's lock; a server: a connection dropped (a restart) is replaced before use
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            return RetryingRDBStorage(url, engine_kwargs=dict(kwargs), heartbeat_interval=max(1, round(heartbeat)),
                                      grace_period=max(1, round(grace)))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            # workers started together on a new database race to create Optuna's tables and version rows: the
            # loser finds them made ("UNIQUE constraint failed: alembic_version", "table ... already exists")
            if attempt == 5 or not ("UNIQUE" in str(e) or "already exists" in str(e) or "duplicate" in str(e)):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def create_search(problem: Problem, storage: str | optuna.storages.BaseStorage | None, study_name: str,
                  strategy: str, evaluate: Evaluate, seed: int = 0, population: int = 20, resume: bool = False,
                  settings: dict[str, Any] | None = None,
                  custom: Callable[[Callable[[np.ndarray], bool]], AskTell] | None = None,
                  evaluate_many: EvaluateMany | None = None, parallel: int = 1, prefilter: Prefilter | None = None,
                  prefilter_keep: float = 1.0, controller: dict[str, Any] | None = None) -> Search:
    """Create (or, with ``resume``, load) the study and wire the strategy's sampler. ``custom`` builds an
    ask/tell strategy from the feasibility test (used instead of ``strategy``'s own, which then only names it).
    ``controller``: settings of the ``reinforce`` strategies (``hwnas.search.rl.ControllerSettings``' keys)."""
    fingerprint = {"problem": problem.describe(), "strategy": strategy, "seed": seed, "population": population,
                   **(settings or {})}
    if strategy.startswith("reinforce"):  # its settings shape every proposal: a resume must use the same
        from hwnas.search.rl import ControllerSettings

        try:
            full = ControllerSettings(**(controller or {}))
        except TypeError:
            known = ", ".join(ControllerSettings().to_dict())
            raise ValueError(f"unknown [controller] setting(s) {', '.join(sorted(controller or {}))[:100]} (known: "
                             f"{known})") from None
        full.check()
        fingerprint["controller"] = full.to_dict()
    holder: dict[str, Search] = {}

    def objectives(t: FrozenTrial) -> tuple[list[float], list[float]] | None:
        return holder["s"].objectives_of(t)

    def feasible(x: np.ndarray) -> bool:
        return problem.feasible(problem.costs(problem.space.decode(x)))

    def sampler_of(rank: int) -> optuna.samplers.BaseSampler:
        return VectorSampler(problem.space, custom(feasible), objectives, seed + rank, rank) if custom is not None \
            else make_sampler(strategy, problem.space, seed, len(problem.directions), len(problem.hard_budgets),
                              feasible, objectives, population, rank, controller)

    sampler = sampler_of(0)
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
    if PROBLEM_ATTR not in study.user_attrs:  # what ``hwnas report`` rebuilds the problem from (also kept on resume)
        study.set_user_attr(PROBLEM_ATTR, problem.record())
    if existing is None:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2: the dashboard shows the names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(problem.value_names)
    if not 0 < prefilter_keep <= 1:
        raise ValueError(f"the prefilter keeps a fraction in (0, 1] of the proposals, not {prefilter_keep}")
    s = Search(problem, study, evaluate, strategy, seed, population, evaluate_many=evaluate_many,
               parallel=max(1, parallel), prefilter=prefilter, prefilter_keep=prefilter_keep)
    holder["s"] = s
    s.sync_claims()  # before anything else reads the record: a stale one (a deleted study's) is started afresh
    if s.take_rank():  # another worker is searching the study: this one proposes with its own seed
        study.sampler = sampler_of(s.rank)
    return s


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))
