"""`hwnas search` end to end on real images (the embedded CIFAR-10 subset): outputs, resume after kill -9,
the latency recipe, bad input, and optuna-dashboard serving a real study over loopback."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import completed_from_file, completed_to_file, hwnas, hwnas_here, made_once
from hwnas.genotype import parse_genotype
from hwnas.walker import flops

FAST = ["--epochs", "0.1", "--device", "cpu"]  # the smallest budget that trains every candidate
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """One 4-trial search, run once for the test processes; a test that changes it works on a ``_copy``."""
    def search(root: Path) -> None:
        completed_to_file(hwnas("search", "--budget-flops", "400M", "--trials", "4", *FAST, "--run-dir", str(root),
                                "--study-name", "e2e"), root / "completed.json")

    root = made_once(tmp_path_factory, "search-e2e", search)
    return root, f"sqlite:///{root / 'e2e.db'}", completed_from_file(root / "completed.json")


def _copy(study, to: Path) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    """The shared study's run folder copied to ``to``: its root and storage URL."""
    shutil.copytree(study[0], to / "copy")
    return to / "copy", f"sqlite:///{to / 'copy' / 'e2e.db'}"


def test_search_end_to_end(study) -> None:  # type: ignore[no-untyped-def]
    root, url, r = study
    assert r.returncode == 0, r.stderr
    assert f"optuna-dashboard {url}" in r.stderr and "fidelity: LOW" in r.stderr
    assert "Pareto front" in r.stdout
    rows = list(csv.DictReader((root / "e2e" / "pareto.csv").open()))
    assert rows
    for row in rows:
        assert flops(parse_genotype(row["genotype"]), 224, num_classes=10) == int(row["flops"]) <= 400e6
        assert 0 <= float(row["acc"]) <= 1
    summary = json.loads((root / "e2e" / "pareto.json").read_text())
    assert summary["evaluated"] == 4 and summary["pareto"][0]["genotype"] == rows[0]["genotype"]
    for png in ("pareto.png", "hypervolume.png"):
        assert (root / "e2e" / png).read_bytes()[:4] == b"\x89PNG"
    s = optuna.load_study(study_name="e2e", storage=url)
    trained = [t for t in s.trials if t.user_attrs.get("trained")]
    assert len(trained) == 4
    for t in trained:
        for key in ("genotype", "flops", "params", "acc", "train_seconds", "proxy_genotype"):
            assert key in t.user_attrs, key


def test_existing_study_needs_resume_and_resume_extends(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, url = _copy(study, tmp_path)
    r = hwnas("search", "--budget-flops", "400M", "--trials", "4", *FAST, "--run-dir", str(root),
              "--study-name", "e2e")
    assert r.returncode == 2 and "already exists" in r.stderr and "--resume" in r.stderr
    other_split = root / "other-split.toml"  # the default recipe with 10 % held out instead of 20 %
    other_split.write_text((ROOT / "search" / "cifar10-400m.toml").read_text().replace(
        "val_fraction = 0.2 ", "val_fraction = 0.1 "))
    r = hwnas("search", "--recipe", str(other_split), "--budget-flops", "400M", "--trials", "5", *FAST, "--run-dir",
              str(root), "--study-name", "e2e", "--resume")
    assert r.returncode == 2 and "was run with other settings (val_images)" in r.stderr, r.stderr
    before = {t.number: t.values for t in optuna.load_study(study_name="e2e", storage=url).trials
              if t.state == TrialState.COMPLETE}
    r = hwnas("search", "--budget-flops", "400M", "--trials", "5", *FAST, "--run-dir", str(root),
              "--study-name", "e2e", "--resume")
    assert r.returncode == 0, r.stderr
    s = optuna.load_study(study_name="e2e", storage=url)
    assert sum(bool(t.user_attrs.get("trained")) for t in s.trials) == 5
    assert all(s.trials[n].values == v for n, v in before.items())


def test_kill_9_then_resume_loses_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    args = ["search", "--budget-flops", "400M", "--trials", "4", *FAST, "--run-dir", str(tmp_path),
            "--study-name", "k", "--strategy", "evolution"]
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "hwnas", *args], stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 600  # a loaded machine: the kill comes once one trial is in, whenever that is
    while time.monotonic() < deadline and proc.poll() is None and not _trained_trials(tmp_path / "k.db"):
        time.sleep(0.2)  # looked at read-only: the test is no second writer racing the search to create the file
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the search ended before the kill: {err.read_text()}"
    kept = {t.number: (t.user_attrs["genotype"], t.values) for t in
            optuna.load_study(study_name="k", storage=url).trials if t.state == TrialState.COMPLETE}
    r = hwnas(*args, "--resume")
    assert r.returncode == 0, r.stderr
    s = optuna.load_study(study_name="k", storage=url)
    assert sum(bool(t.user_attrs.get("trained")) for t in s.trials) == 4
    assert all((s.trials[n].user_attrs["genotype"], s.trials[n].values) == v for n, v in kept.items())
    assert not [t for t in s.trials if t.state == TrialState.RUNNING]


def _trained_trials(db: Path) -> int:
    """Trials with a training result in the SQLite study ``db``, read without writing (0 before it exists)."""
    import contextlib
    import sqlite3

    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=1)) as con:
            return int(con.execute("SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'trained' "
                                   "AND value_json = 'true'").fetchone()[0])
    except sqlite3.Error:  # being created, or locked for a moment
        return 0


@pytest.mark.parametrize(("recipe", "device", "batch"), [("cifar10-cpu-latency", "AMD EPYC", "1 image"),
                                                      ("cifar10-h100-latency", "NVIDIA H100", "64 images")])
def test_latency_recipes_with_their_tables(tmp_path: Path, recipe: str, device: str, batch: str) -> None:
    r = hwnas("search", "--recipe", recipe, "--trials", "3", *FAST, "--run-dir", str(tmp_path),
              "--study-name", "lat")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "lat" / "pareto.json").read_text())
    budget = summary["problem"]["budgets"]["latency"]
    assert summary["pareto"] and all(row["latency_ms"] <= budget for row in summary["pareto"])
    assert summary["problem"]["objectives"] == ["acc", "latency"]
    assert f"latency table: {device}" in r.stderr and f"(one batch of {batch}), " in r.stderr


def test_mnas_reward_run(tmp_path: Path) -> None:
    r = hwnas("search", "--budget-flops", "300M", "--reward", "mnas-soft", "--strategy", "tpe", "--trials", "3",
              *FAST, "--run-dir", str(tmp_path), "--study-name", "m")
    assert r.returncode == 0, r.stderr
    s = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path / 'm.db'}")
    for t in s.trials:
        if t.user_attrs.get("trained"):
            ratio = t.user_attrs["flops"] / 300e6
            w = -0.07
            assert t.values[0] == pytest.approx(t.user_attrs["acc"] * ratio ** w)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--budget-flops", "lots"], "not a count: 'lots'"),
        (["--budget-latency", "fast"], "not a duration"),
        (["--budget-latency", "2ms"], "needs a latency table"),
        (["--strategy", "magic"], "invalid choice: 'magic'"),
        (["--objectives", "acc,speed"], "unknown objective(s) speed"),
        (["--recipe", "nope"], "recipe not found: nope"),
        (["--study-name", "ghost", "--resume"], "no study 'ghost'"),
        (["--data-dir", "/no/data/here"], "data not found"),
        (["--table", "missing-table", "--budget-latency", "2ms"], "latency table not found"),
        (["--time-limit", "5ms"], "argument --time-limit: not a time limit: '5ms' (e.g. 300s, 4.5m, 1h)"),
        (["--time-limit", "1e9"], "argument --time-limit: time limit must be at most 1e+07 s"),
    ],
)
def test_bad_input(args: list[str], fragment: str, tmp_path: Path) -> None:
    r = hwnas_here("search", *args, "--run-dir", str(tmp_path), "--trials", "1", "--device", "cpu")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and fragment in lines[-1] and "Traceback" not in r.stderr, r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_optuna_dashboard_serves_the_study(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, url = _copy(study, tmp_path)  # the dashboard may write to the database
    server, port = _serve(url)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
            body = json.loads(resp.read())
        studies = {st["study_name"]: st["study_id"] for st in body["study_summaries"]}
        assert "e2e" in studies
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies['e2e']}", timeout=5) as resp:
            detail = json.loads(resp.read())
        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in detail["trials"]]
        assert any({"genotype", "flops", "acc"} <= set(a) for a in attrs)
        for t, a in zip(detail["trials"], attrs, strict=True):  # the budget as a constraint the dashboard shows
            assert t["constraints"] and (max(t["constraints"]) <= 0) == (a["feasible"] == "True"), (t, a)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _serve(url: str) -> tuple[subprocess.Popen[bytes], int]:
    """optuna-dashboard serving ``url`` on a free loopback port, once its API answers."""
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    port = _free_port()
    server = subprocess.Popen([exe, url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2):
                return server, port
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise AssertionError("optuna-dashboard did not answer")


def _rendered(url: str) -> str:
    """The page's DOM after headless Chromium ran its scripts (the dashboard is a single-page app)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--virtual-time-budget=20000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs Chromium (Debian's chromium package; .ci/run installs it)")
def test_the_dashboard_renders_the_study_in_a_browser(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A real search's study in optuna-dashboard, loaded in headless Chromium: the study and each of its trials
    render; a study with infeasible trials shows them as infeasible on its Pareto front."""
    from test_search import CheapObjective, problem

    from hwnas.search.run import create_search

    _, url = _copy(study, tmp_path)
    tight = create_search(problem(), url, "tight", "nsga2", CheapObjective(), seed=0, population=4)
    tight.run(8)  # its first generation is drawn at random: about half is over the budget
    assert any(not t.user_attrs["feasible"] for t in tight.study.trials)
    server, port = _serve(url)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
            ids = {st["study_name"]: st["study_id"] for st in json.loads(resp.read())["study_summaries"]}
        page = _rendered(f"http://127.0.0.1:{port}/dashboard/studies/{ids['e2e']}/trials")
        assert f"e2e (id={ids['e2e']})" in page
        numbers = [t.number for t in optuna.load_study(study_name="e2e", storage=url).trials]
        assert numbers and all(f"Trial {n}" in page for n in numbers), page[-3000:]
        assert "Infeasible" in _rendered(f"http://127.0.0.1:{port}/dashboard/studies/{ids['tight']}")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_time_limit_ends_the_search_with_its_outputs(tmp_path: Path) -> None:
    """--time-limit 1s: the first candidate runs (nothing to estimate from yet), then no other fits. The output
    is a file here (not a terminal): one line per trial, the table in 80 columns, the best genotype whole."""
    r = hwnas("search", "--budget-flops", "400M", "--trials", "5", *FAST, "--time-limit", "1s", "--run-dir",
              str(tmp_path), "--study-name", "t")
    assert r.returncode == 0, r.stderr
    assert "5 trials or 1s (time limit), whichever comes first" in r.stderr
    assert "hwnas: stopped at the time limit (1s): 1 of 5 trials evaluated" in r.stderr, r.stderr
    assert "  trial 0: acc " in r.stderr and "(1/5 evaluated, " in r.stderr and "━" not in r.stderr  # no bar
    assert json.loads((tmp_path / "t" / "pareto.json").read_text())["ended"] == "time limit"
    genotype = next(iter(csv.DictReader((tmp_path / "t" / "pareto.csv").open())))["genotype"]
    assert "most accurate (trial 0, acc " in r.stdout and f"\n  {genotype}\n" in r.stdout
    table = r.stdout.split("most accurate")[0]  # the genotype line after it is whole, however long
    assert max(map(len, table.splitlines())) <= 80 and " 0 │ 0." in table and "…" in table, r.stdout


def test_a_search_whose_every_candidate_failed_is_not_a_success(tmp_path: Path) -> None:
    r = hwnas("search", "--budget-flops", "400M", "--trials", "1", "--epochs", "0.05", "--lr", "1e6", "--device",
              "cpu", "--run-dir", str(tmp_path), "--study-name", "f")
    assert r.returncode == 1, r.stderr  # the report is written (the failure is in the study), but it is no result
    assert "hwnas: error: every trained candidate failed (first failure: non-finite loss" in r.stderr
    assert (tmp_path / "f" / "pareto.json").is_file()


def _search_trials(tmp_path: Path, name: str, trials: int, *extra: str) -> list[optuna.trial.FrozenTrial]:
    """Run a short CPU search and return its trials: every one complete, ``trials`` of them trained."""
    r = hwnas("search", "--budget-flops", "400M", "--trials", str(trials), *extra, *FAST, "--run-dir",
              str(tmp_path), "--study-name", name)
    assert r.returncode == 0, r.stderr
    got = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / (name + '.db')}").trials
    assert len([t for t in got if t.user_attrs.get("trained")]) == trials
    assert all(t.state == TrialState.COMPLETE for t in got)
    return got


def test_parallel_proposals_train_together(tmp_path: Path) -> None:
    trained = [t for t in _search_trials(tmp_path, "par", 3, "--parallel", "3") if t.user_attrs.get("trained")]
    assert all(t.user_attrs["trained_with"] == 1 for t in trained)  # CPU: one at a time, however many proposed


def test_evaluator_processes(tmp_path: Path) -> None:
    trained = [t for t in _search_trials(tmp_path, "pool", 4, "--eval-processes", "2") if t.user_attrs.get("trained")]
    assert all(0 < t.user_attrs["acc"] < 1 for t in trained)
    r = hwnas("search", "--budget-flops", "400M", "--trials", "1", "--eval-processes", "2", "--batch-size", "100000",
              *FAST, "--run-dir", str(tmp_path), "--study-name", "bad")
    assert r.returncode == 2 and "fewer than one batch" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("trials = 24\n", "trials = \"many\"\n", "trials must be a positive integer (at most 1000000), got 'many'"),
        ("trials = 24\n", "trials = -3\n", "trials must be a positive integer (at most 1000000), got -3"),
        ("epochs = 1.5\n", "epochs = -1.0\n", "epochs must be a positive number"),
        ("proxy_width = 0.25\nproxy_resolution = 32", "proxy_width = 0.25\nproxy_resolution = -8",
         "proxy_resolution must be an integer from 8 to 8192"),
        ("val_fraction = 0.2 ", "val_fraction = \"a\" ", "val_fraction must be a number between 0 and 1"),
        ('objectives = ["acc", "flops"]', 'objectives = "acc"', "objectives must be a list of names"),
        ('data_dir = ""', "data_dir = 5", "data_dir must be a string, got 5"),
        ("[profile.cpu]\ntrials = 24\npopulation = 4\nepochs = 1.5\nbatch_size = 32\nlr = 0.8\nproxy_width = 0.25\n"
         "proxy_resolution = 32", "[profile]\ncpu = \"fast\"", "[profile.cpu] must be a table"),
        ("epochs = 1.5\n", "epoch = 1.5\n", "unknown key(s) in [profile.cpu]: epoch (known: batch_size, epochs"),
        ('data_dir = ""', 'datadir = ""', "unknown key(s) in [data]: datadir"),
        ('name = "cifar10-400m"', 'name = "cifar10-400m"\nbudget_flop = "1M"', "unknown key(s) in [search]: "
         "budget_flop"),
        ("[profile.cpu]", "[profile.cpuu]", "unknown table [profile.cpuu]"),
        ('time_limit = "4.5m"', "time_limit = true", "time_limit must be a time like 300s, 4.5m or 1h, or \"none\""),
        ('time_limit = "4.5m"', 'time_limit = "4.5 fortnights"', "time_limit: not a time limit"),
        ('name = "cifar10-400m"', 'name = "../elsewhere"', "name must be a plain name (the study and its folder "
         "under --run-dir), without / or \\, got '../elsewhere'"),
    ],
)
def test_recipe_values_of_the_wrong_type_are_one_line_errors(tmp_path: Path, old: str, new: str,
                                                              fragment: str) -> None:
    from conftest import assert_usage_error

    text = (ROOT / "search" / "cifar10-400m.toml").read_text()
    assert old in text
    recipe = tmp_path / "r.toml"
    recipe.write_text(text.replace(old, new, 1))
    assert_usage_error(hwnas_here("search", "--recipe", str(recipe), "--device", "cpu", "--run-dir", str(tmp_path)),
                       fragment)


@pytest.mark.parametrize(("command", "text", "fragment"), [
    ("search", 'profile = 0\n\n[search]\nname = "x"\n', "[profile] must be a table, got 0"),  # not read as none
    ("search", 'data = []\n\n[search]\nname = "x"\n', "[data] must be a table, got a list"),
    ("bench", 'profile = 1\n\n[search]\nbenchmark = "nb201:cifar10"\n', "[profile] must be a table, got 1"),
    ("bench", '[search]\nbenchmark = "nb201:cifar10"\n\n[profile]\ncpu = 1\n', "[profile.cpu] must be a table"),
])
def test_a_recipe_section_that_is_not_a_table_is_refused(tmp_path: Path, command: str, text: str,
                                                         fragment: str) -> None:
    from conftest import assert_usage_error

    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    args = ["--recipe", str(recipe), "--device", "cpu", "--run-dir", str(tmp_path / "runs")] if command == "search" \
        else ["--recipes", str(recipe), "--strategies", "random", "-o", str(tmp_path / "out")]
    assert_usage_error(hwnas_here(command, *args), f"recipe {recipe}: {fragment}")


def test_search_refuses_a_foreign_sqlite_file_and_a_missing_study_to_resume(tmp_path: Path) -> None:
    import sqlite3

    from conftest import assert_usage_error

    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE t (x)")
    before = (tmp_path / "other.db").read_bytes()
    assert_usage_error(hwnas_here("search", "--storage", f"sqlite:///{tmp_path / 'other.db'}", "--device", "cpu"),
                       "is not an Optuna study storage")
    assert (tmp_path / "other.db").read_bytes() == before
    assert_usage_error(hwnas_here("search", "--resume", "--study-name", "nope", "--run-dir", str(tmp_path / "runs"),
                                  "--device", "cpu"), "to resume (file not found)")
    assert not (tmp_path / "runs").exists()


def test_a_budget_nothing_meets_leaves_no_study_behind(tmp_path: Path) -> None:
    """The corrected command (same --study-name) is not refused as 'already exists', and the failed one left no
    study, database or run folder behind."""
    from conftest import assert_usage_error

    runs = tmp_path / "runs"
    args = ["search", "--trials", "1", "--epochs", "0.05", "--device", "cpu", "--run-dir", str(runs), "--study-name",
            "s"]
    assert_usage_error(hwnas_here(*args, "--budget-flops", "1k"), "no acceptable architecture")
    assert not runs.exists()
    r = hwnas(*args, "--budget-flops", "400M")
    assert r.returncode == 0, r.stderr
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{runs / 's.db'}").trials) >= 1


def test_a_failed_search_in_a_shared_storage_keeps_the_other_studies(tmp_path: Path) -> None:
    from conftest import assert_usage_error

    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 'shared.db'}"
    args = ["search", "--benchmark", "nb201:cifar10", "--trials", "2", "--run-dir", str(runs), "--storage", url]
    r = hwnas(*args, "--study-name", "kept", "--budget-flops", "100M")
    assert r.returncode == 0, r.stderr
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert_usage_error(hwnas_here(*args, "--study-name", "tight", "--budget-flops", "1k"), "no acceptable architecture")
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["kept"]
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    r = hwnas(*args, "--study-name", "tight", "--budget-flops", "100M")
    assert r.returncode == 0, r.stderr
