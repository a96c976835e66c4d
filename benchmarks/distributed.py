"""Several workers on one study: correctness under failures, throughput against worker count, storage overhead.

Run from the repository root on an otherwise idle machine (PostgreSQL's server binaries and psycopg needed:
``apt-get install postgresql``, ``pip install -e '.[distributed]'``)::

    python benchmarks/distributed.py                 # all three parts, ~15 min on 2 cores
    python benchmarks/distributed.py --part overhead # one part

A throwaway PostgreSQL cluster (tests/pgcluster.py, with ``fsync`` on as PostgreSQL's default) serves every
run. Every search is the NAS-Bench-201 CIFAR-10 problem (acc, FLOPs), whose accuracies are looked up: an
evaluation costs microseconds, so what is measured is the search loop and its storage, the worst case for
contention (with real training, each trial takes seconds to minutes and the storage's share shrinks with it).

* ``failures``: 4 workers (``hwnas search ... --join``, separate processes as on 4 machines) x 200 trials against
  PostgreSQL, three times: undisturbed; one worker killed with -9 mid-run and started again; the database
  restarted mid-run (``pg_ctl restart``). Each is checked: exactly 200 distinct trained architectures, none
  twice, nothing RUNNING, the claims record agreeing.
* ``scaling``: ``hwnas search --workers N`` for N = 1, 2, 4, 8 on PostgreSQL and SQLite, 200 trials: trials per
  second from the first trial's start to the last one's end (process start-up excluded).
* ``overhead``: one worker in this process, 200 trials of random search, on each storage (in memory, SQLite,
  a journal file, PostgreSQL): seconds per trial; the in-memory time is the loop's own cost.

Writes ``benchmarks/results/distributed.json`` and ``distributed.png`` (trials/s against workers).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, environment, write_json

sys.path.insert(0, str(ROOT / "tests"))
OUT = RESULTS / "distributed.json"
BENCH = "nb201:cifar10"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hwnas", "search", "--benchmark", BENCH, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _study(url: str, name: str) -> Any:
    import optuna

    from hwnas.search.run import storage_of

    return optuna.load_study(study_name=name, storage=storage_of(url))


def check(url: str, name: str, n: int) -> dict[str, Any]:
    """What the issue asks of a finished multi-worker study, measured (not asserted: the report says it)."""
    from optuna.trial import TrialState

    from hwnas.search.claims import claims_of

    study = _study(url, name)
    trials = study.get_trials(deepcopy=False)
    trained = [t.user_attrs["genotype"] for t in trials
               if t.state == TrialState.COMPLETE and t.user_attrs.get("trained")]
    record = claims_of(study).read()
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    return {"trials": len(trials), "trained": len(trained), "distinct": len(set(trained)),
            "trained_twice": sum(k > 1 for k in Counter(trained).values()),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "failed_why": dict(Counter(_why(t) for t in trials if t.state == TrialState.FAIL)),
            "requeued": len(study.user_attrs.get("requeued", [])),
            "claims_evaluations": record.get("evaluations"), "claims_running": len(record.get("running", {})),
            "workers_ranked": len(record.get("ranks", {})), "seconds": round(span, 2),
            "ok": len(trained) == len(set(trained)) == n and not any(t.state == TrialState.RUNNING for t in trials)
            and record.get("evaluations") == n and not record.get("running")}


def _why(t: Any) -> str:
    a = t.user_attrs
    return "proposed over the budget" if a.get("over_budget") else "interrupted (re-queued)" \
        if a.get("interrupted") else str(a.get("failure") or "no failure said")[:80]


def _running_of(study: Any, pid: int) -> list[int]:
    """The RUNNING trials of the worker process ``pid``."""
    from optuna.trial import TrialState

    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if str(t.user_attrs.get("worker", "")).split(":")[1:2] == [str(pid)]]


def _evaluations(url: str, name: str) -> int:
    try:
        from hwnas.search.claims import claims_of

        return int(claims_of(_study(url, name)).read().get("evaluations", 0))
    except Exception:  # not created yet, or the database restarting
        return 0


def failures(cluster: Any, n: int, workers: int, log: Path) -> dict[str, Any]:
    out = {}
    for case in ("undisturbed", "kill -9 and restart", "database restart"):
        db = "f" + str(len(out))
        url, name = cluster.create_db(db), "s"
        cmd = _cmd("--strategy", "nsga2", "--trials", str(n), "--study-name", name, "--storage", url, "--join",
                   "--run-dir", str(log / db))
        logs = [open(log / f"{db}-{k}.log", "w") for k in range(workers)]  # noqa: SIM115
        procs = [subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env()) for f in logs]
        event: dict[str, Any] = {}
        t0 = time.monotonic()
        if case != "undisturbed":
            while (done := _evaluations(url, name)) < n // 3:
                assert time.monotonic() - t0 < 600, "the workers did not get a third of the way"
                time.sleep(0.05)
            event["at_evaluations"] = done
            if case.startswith("kill"):  # until a kill lands while the victim has a trial RUNNING (at most 4)
                study, kills = _study(url, name), []
                while len(kills) < 4 and not any(kill["left_running"] for kill in kills):
                    for _ in range(5000):  # a worker with a trial asked and not yet told
                        k = next((k for k, p in enumerate(procs) if _running_of(study, p.pid)), None)
                        if k is not None:
                            break
                    k = 1 if k is None else k
                    procs[k].send_signal(signal.SIGKILL)
                    procs[k].wait()
                    kills.append({"at_evaluations": _evaluations(url, name),
                                  "left_running": _running_of(study, procs[k].pid)})
                    f = open(log / f"{db}-restarted-{len(kills)}.log", "w")  # noqa: SIM115
                    logs.append(f)
                    procs[k] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env())
                event["kills"] = kills
                event["victim_running_trials"] = [t for kill in kills for t in kill["left_running"]]
            else:
                r0 = time.monotonic()
                cluster.restart()
                event["restart_seconds"] = round(time.monotonic() - r0, 2)
        codes = [p.wait(timeout=900) for p in procs]
        for f in logs:
            f.close()
        if event.get("victim_running_trials"):
            final = {t.number: t for t in _study(url, name).get_trials(deepcopy=False)}
            event["victim_trials_after"] = {
                k: "COMPLETE (its result was written before the kill: kept)" if final[k].state.name == "COMPLETE"
                else f"{final[k].state.name}, {_why(final[k])}" for k in event["victim_running_trials"]}
        res = {**check(url, name, n), **event, "exit_codes": codes, "wall_seconds": round(time.monotonic() - t0, 1)}
        print(f"  failures / {case}: {res}", flush=True)
        out[case] = res
    return out


def scaling(cluster: Any, n: int, counts: list[int], log: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for storage in ("postgresql", "sqlite"):
        for w in counts:
            name = f"w{w}"
            url = cluster.create_db(f"{storage[:2]}{w}") if storage == "postgresql" else \
                f"sqlite:///{log / f'scale-{w}.db'}"
            t0 = time.monotonic()
            p = subprocess.run(_cmd("--strategy", "random", "--trials", str(n), "--workers", str(w), "--study-name",
                                    name, "--storage", url, "--run-dir", str(log / f"{storage}-{w}")),
                               capture_output=True, text=True, env=_env(), timeout=1800)
            res = {**check(url, name, n), "exit_code": p.returncode, "wall_seconds": round(time.monotonic() - t0, 1)}
            res["trials_per_s"] = round(n / res["seconds"], 2) if res["seconds"] else None
            if p.returncode:
                res["stderr"] = p.stderr[-1500:]
            print(f"  scaling / {storage} / {w} workers: {res['trials_per_s']} trials/s, ok {res['ok']}", flush=True)
            out.setdefault(storage, {})[str(w)] = res
    return out


def overhead(cluster: Any, n: int, log: Path, repeats: int) -> dict[str, Any]:
    import optuna

    from hwnas.search.bench import BenchProblem
    from hwnas.search.run import create_search, storage_of

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bp = BenchProblem("nb201-acc-flops", BENCH, ("acc", "flops"), population=20)
    out: dict[str, Any] = {}
    for r in range(repeats):  # interleaved, so a slower moment of the machine falls on every storage alike
        for kind in ("memory", "sqlite", "journal", "postgresql"):
            name = f"o{r}"
            where = {"memory": None, "sqlite": f"sqlite:///{log / f'over-{r}.db'}",
                     "journal": str(log / f"over-{r}.log"), "postgresql": None}[kind]
            if kind == "postgresql":
                where = cluster.create_db(f"over{r}")
            storage = optuna.storages.InMemoryStorage() if where is None else storage_of(where)
            problem, ev = bp.build()
            search = create_search(problem, storage, name, "random", ev.evaluate, seed=r, population=20)
            search.seed_population(n)
            t0 = time.perf_counter()
            search.run(n)
            dt = time.perf_counter() - t0
            out.setdefault(kind, []).append(round(dt / n * 1000, 2))
            print(f"  overhead / {kind} / repeat {r}: {dt / n * 1000:.1f} ms per trial", flush=True)
    import statistics

    base = statistics.median(out["memory"])
    return {k: {"ms_per_trial": v, "median_ms": statistics.median(v),
                "over_memory_ms": round(statistics.median(v) - base, 2)} for k, v in out.items()}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.atomic import save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for storage, rows in res["scaling"].items():
        ws = sorted(rows, key=int)
        ax.plot([int(w) for w in ws], [rows[w]["trials_per_s"] for w in ws], "o-", label=storage)
    ax.set(xlabel="workers (hwnas search --workers N)", ylabel="trials per second", xscale="log",
           title=f"NAS-Bench-201 lookups (no training), {res['environment']['device_name']}")
    counts = sorted(next(iter(res["scaling"].values())), key=int)
    ax.set_xticks([int(w) for w in counts], labels=counts)
    ax.set_xticks([], minor=True)
    ax.set_ylim(bottom=0)
    ax.title.set_fontsize(8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["failures", "scaling", "overhead"], action="append",
                    help="run only these parts (repeatable; default all), kept with the others in the JSON")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4, help="workers of the failure runs")
    ap.add_argument("--counts", default="1,2,4,8", help="worker counts of the scaling runs")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the overhead runs")
    args = ap.parse_args()
    import pgcluster

    why = pgcluster.available()
    if why:
        sys.exit(f"distributed.py: {why}")
    import json

    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    res["environment"] = {**environment("cpu"), "cores": len(os.sched_getaffinity(0))}
    cluster = pgcluster.Cluster(fsync=True)
    with tempfile.TemporaryDirectory(prefix="hwnas-dist-") as tmp:
        try:
            cluster.start()
            res["postgresql"] = subprocess.run([str(cluster.bin / "postgres"), "--version"], capture_output=True,
                                               text=True).stdout.strip()
            parts = args.part or ["failures", "scaling", "overhead"]
            when = {"date": res["environment"]["date"], "command": res["environment"]["command"]}
            if "failures" in parts:
                res["failures"] = {**when, "workers": args.workers, "trials": args.trials,
                                   **failures(cluster, args.trials, args.workers, Path(tmp))}
            if "scaling" in parts:
                res["scaling_measured"] = when
                res["scaling"] = scaling(cluster, args.trials, [int(c) for c in args.counts.split(",")], Path(tmp))
            if "overhead" in parts:
                over = overhead(cluster, args.trials, Path(tmp), args.repeats)
                res["overhead"] = {**when, "trials": args.trials, **over}
        finally:
            cluster.close()
    write_json(OUT, res)
    if "scaling" in res:
        plot(res, OUT.with_suffix(".png"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
