"""Numbers too large for a float (a 400-digit integer, 1e400) and absurd values wherever a user's file or flag
reaches the code -- recipes, latency tables, study attributes, checkpoints, resume states, flags -- are one-line
errors (exit 2), never an OverflowError traceback or a run without end; and JSON output is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_usage_error, hwnas
from hwnas.cli import main
from hwnas.references import reference
from hwnas.units import NumberError, integer, number, parse_count, parse_ms, shown

ROOT = Path(__file__).resolve().parents[1]
BIG = 10**400  # too large for a float
BIG_TEXT = str(BIG)
TINY = ROOT / "tests" / "data" / "tiny-space.toml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``hwnas ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]  # a 400-digit number is shown short


def strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ---- the checked conversion --------------------------------------------------------------------------
def test_number_and_integer() -> None:
    assert number(3, "x") == 3.0 and isinstance(number(3, "x"), float)
    assert number(0.5, "x", low=0, high=1) == 0.5
    assert integer(7, "n", low=1, high=10) == 7
    for bad, fragment in [(BIG, "x must be a finite number, got 1000000000"), (math.inf, "got inf"),
                          (math.nan, "got nan"), (True, "got true"), ("3", "got '3'"), (None, "got null")]:
        with pytest.raises(NumberError, match=fragment):
            number(bad, "x")
    with pytest.raises(NumberError, match=r"\(401 digits\)"):
        number(BIG, "x")
    with pytest.raises(NumberError, match="x must be a positive finite number, got 0"):
        number(0, "x", positive=True)
    with pytest.raises(NumberError, match="x must be a number from 0 to 1, got 2"):
        number(2, "x", low=0, high=1)
    with pytest.raises(NumberError, match="n must be an integer from 1 to 10, got 1000000000"):
        integer(BIG, "n", low=1, high=10)
    with pytest.raises(NumberError, match=r"n must be a non-negative integer .*, got 1000000000"):
        integer(BIG, "n", low=0)  # no bound given: an int64
    with pytest.raises(NumberError, match=r"n must be a positive integer, got 1\.5"):
        integer(1.5, "n", low=1)
    assert shown(BIG) == "1000000000... (401 digits)" and "5001 digits" in shown(-(10**5000))


@pytest.mark.parametrize(("text", "parse", "fragment"), [
    ("1e400", parse_count, "too large"), (BIG_TEXT, parse_count, "too large"), ("inf", parse_count, "finite"),
    ("1e400", parse_ms, "too large"), ("0", parse_count, "must be positive"),
])
def test_budgets_too_large_say_so(text: str, parse: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as ei:
        parse(text)
    assert len(str(ei.value)) < 200


def test_budget_flag_too_large(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "search", "--budget-flops", "1e400", "--device", "cpu", "--run-dir", str(tmp_path))
    one_line_error(code, err, "too large")


# ---- recipes -----------------------------------------------------------------------------------------
SEARCH_RECIPE = (ROOT / "search" / "cifar10-400m.toml").read_text()


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("epochs = 1.5\n", f"epochs = {BIG}\n", "epochs must be"),
    ("epochs = 1.5\n", "epochs = 1e400\n", "epochs must be"),
    ("lr = 0.8\n", f"lr = {BIG}\n", "lr must be"),
    ("val_fraction = 0.2 ", f"val_fraction = {BIG} ", "val_fraction must be"),
    ("resolution = 224 ", f"resolution = {BIG} ", "resolution must be"),
    ("proxy_width = 0.25\n", f"proxy_width = {BIG}\n", "proxy_width must be"),
    ("batch_size = 32\n", f"batch_size = {BIG}\n", "batch_size must be"),
    ('budget_flops = "400M"', f"budget_flops = {BIG}", "too large"),
    ('budget_flops = "400M"', "budget_flops = 1e400", "finite"),
    ('budget_flops = "400M"', 'budget_flops = "1e400"', "too large"),
    ('budget_flops = "400M"', f'budget_latency = "{BIG}ms"', "too large"),
    ("[data]", f"[space]\nwidth_factors = [{BIG}]\n[data]", "width_factors"),
    ("[data]", f"[space]\ndepth_factors = [{BIG}]\n[data]", "depth_factors"),
])
def test_search_recipe_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path, old: str, new: str,
                               fragment: str) -> None:
    assert old in SEARCH_RECIPE
    recipe = tmp_path / "r.toml"
    recipe.write_text(SEARCH_RECIPE.replace(old, new, 1))
    code, _, err = run(capsys, "search", "--recipe", str(recipe), "--device", "cpu", "--run-dir", str(tmp_path),
                       "--cache-dir", str(tmp_path / "cache"))
    one_line_error(code, err, fragment)
    assert not (tmp_path / "cache").exists()  # refused before any data loads


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("trials = 24\n", f"trials = {BIG}\n", "trials must be a positive integer (at most 1000000), got 1000000000"),
    ("trials = 24\n", "trials = 1000001\n", "trials must be a positive integer (at most 1000000), got 1000001"),
    ("epochs = 1.5\n", "epochs = 1e300\n", "epochs must be a positive number (at most 100000), got 1e+300"),
])
def test_recipe_values_that_would_run_without_end(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(SEARCH_RECIPE.replace(old, new, 1))
    r = hwnas("search", "--recipe", str(recipe), "--device", "cpu", "--run-dir", str(tmp_path), "--cache-dir",
              str(tmp_path / "cache"), timeout=120)  # before the fix: a search without end
    assert_usage_error(r, fragment)


TRANSFER_RECIPE = (ROOT / "search" / "transfer-imagenette.toml").read_text()


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("quality_lambda = 0.5 ", f"quality_lambda = {BIG} ", "quality_lambda must be"),
    ("tournament = 3 ", f"tournament = {BIG} ", "tournament must be"),
    ("tournament = 3 ", f"source_trial = {BIG}\ntournament = 3 ", "source_trial must be"),
    ("trials = 8\n", f"trials = {BIG}\n", "trials must be"),
])
def test_transfer_recipe_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path, old: str, new: str,
                                 fragment: str) -> None:
    assert old in TRANSFER_RECIPE
    recipe = tmp_path / "t.toml"
    recipe.write_text(TRANSFER_RECIPE.replace(old, new, 1))
    code, _, err = run(capsys, "transfer", "--recipe", str(recipe), "--source-storage",
                       f"sqlite:///{tmp_path / 'none.db'}", "--source-study", "s", "--device", "cpu", "--run-dir",
                       str(tmp_path))
    one_line_error(code, err, fragment)


def test_bench_recipe_budget_too_large(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    recipe = tmp_path / "b.toml"
    recipe.write_text(f'[search]\nbenchmark = "nb201:cifar10"\nbudget_params = "{BIG}"\n')
    code, _, err = run(capsys, "bench", "--recipes", str(recipe), "-o", str(tmp_path / "out"))
    one_line_error(code, err, "too large")


def test_space_recipe_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = TINY.read_text()
    recipe = tmp_path / "s.toml"
    assert "width_factors = [0.5]" in text
    recipe.write_text(text.replace("width_factors = [0.5]", f"width_factors = [0.5, {BIG}]", 1))
    code, _, err = run(capsys, "space", "info", "--recipe", str(recipe))
    one_line_error(code, err, "width_factors")


# ---- flags ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragment"), [
    (["search", "--trials", BIG_TEXT], "expected an integer from 1 to 1000000"),
    (["search", "--trials", "1000001"], "expected an integer from 1 to 1000000"),
    (["search", "--epochs", "1e300"], "--epochs"),
    (["search", "--batch-size", BIG_TEXT], "--batch-size"),
    (["search", "--eval-processes", "100000"], "--eval-processes"),
    (["search", "--parallel", BIG_TEXT], "--parallel"),
    (["train", "mobilenetv2", "--epochs", "1e300"], "--epochs"),
    (["train", "mobilenetv2", "--seconds", "1e300"], "--seconds"),
    (["train", "mobilenetv2", "--batch-size", BIG_TEXT], "--batch-size"),
    (["train", "mobilenetv2", "--val-size", BIG_TEXT], "--val-size"),
    (["export", "mobilenetv2", "-o", "x.onnx", "--runs", BIG_TEXT], "--runs"),
    (["latency", "validate", "--table", "x", "--workers", BIG_TEXT], "--workers"),
    (["latency", "measure", "--workers", "100000"], "--workers"),
    (["latency", "measure", "--resolution", BIG_TEXT], "--resolution"),
    (["latency", "measure", "--batch-size", BIG_TEXT], "--batch-size"),
    (["scale", "search", "mobilenetv2", "--epochs", "1e300"], "--epochs"),
    (["transfer", "--tournament", BIG_TEXT], "--tournament"),
    (["bench", "--source-evaluations", BIG_TEXT], "--source-evaluations"),
])
def test_numeric_flags_have_upper_bounds(capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    from hwnas.cli import build_parser

    with pytest.raises(SystemExit) as ei:  # parsed only: before the bounds, some of these ran without end
        build_parser().parse_args(args)
    one_line_error(int(ei.value.code or 0), capsys.readouterr().err, fragment)


def test_trials_bound_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "search", "--help")
    assert code == 0 and "1000000" in " ".join(out.split())


# ---- latency tables ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table_dict() -> dict[str, Any]:
    """A valid table (test_latency's synthetic one, its overhead fitted) as the JSON a file holds."""
    from test_latency import _synthetic_table

    t = _synthetic_table(0.3, 0.9, 0.02)
    t.fit_overhead()
    return json.loads(t.to_json())


def _genotype(d: dict[str, Any]) -> str:
    return str(d["calibration"][0]["genotype"])


def _first_entry(d: dict[str, Any]) -> list[Any]:
    return d["entries"][next(iter(d["entries"]))]


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda d: d["overhead"]["32"].update(a=BIG), "overhead for resolution 32"),
    (lambda d: d["overhead"]["32"].update(b=BIG), "overhead for resolution 32"),
    (lambda d: d["overhead"]["32"].update(n=BIG), "overhead for resolution 32"),
    (lambda d: d["overhead"]["32"].update(fit_mape=BIG), "overhead for resolution 32"),
    (lambda d: d["calibration"][0].update(ms=BIG), "calibration row 0"),
    (lambda d: d["calibration"][0].update(resolution=BIG), "calibration row 0"),
    (lambda d: _first_entry(d).__setitem__(0, BIG), "entry"),
    (lambda d: _first_entry(d).__setitem__(3, BIG), "entry"),
    (lambda d: _first_entry(d).__setitem__(0, 1e300), "entry"),  # finite, but no layer runs for 3e289 years
    (lambda d: d["metadata"].update(measure_seconds=BIG), "metadata measure_seconds"),
    (lambda d: d["metadata"].update(calibration_networks=BIG), "metadata calibration_networks"),
    (lambda d: d["metadata"].update(timing={"warmup": BIG}), "metadata timing"),
    (lambda d: d["metadata"].update(probe={"genotype": None, "resolution": 32, "ms": [BIG]}), "metadata probe"),
    (lambda d: d["metadata"].update(resolutions=[BIG]), "resolutions"),
    (lambda d: d["metadata"]["space"].update(width_factors=[BIG]), "width_factors"),
])
def test_tables_with_numbers_too_large(capsys: pytest.CaptureFixture[str], tmp_path: Path, table_dict: dict[str, Any],
                                       mutate: Any, fragment: str) -> None:
    d = json.loads(json.dumps(table_dict))
    mutate(d)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(d))  # a 400-digit integer is valid JSON
    code, _, err = run(capsys, "latency", "predict", _genotype(d), "--table", str(path), "--json")
    one_line_error(code, err, fragment)


def test_a_prediction_slower_than_a_day_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   table_dict: dict[str, Any]) -> None:
    d = json.loads(json.dumps(table_dict))
    d["overhead"]["32"]["b"] = 1e308  # each entry is sane; the fitted model is not: a sum overflows to inf
    path = tmp_path / "absurd.json"
    path.write_text(json.dumps(d))
    code, out, err = run(capsys, "latency", "predict", _genotype(d), "--table", str(path), "--json")
    if code == 0:
        strict_json(out)
    one_line_error(code, err, f"latency table {path}")
    assert out == ""
    d["overhead"]["32"]["b"] = 1e12  # finite, but a network slower than a day (the fit is damaged)
    path.write_text(json.dumps(d))
    code, out, err = run(capsys, "latency", "predict", _genotype(d), "--table", str(path), "--json")
    one_line_error(code, err, "slower than a day")


def test_predict_json_is_strict(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                table_dict: dict[str, Any]) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table_dict))
    code, out, err = run(capsys, "latency", "predict", _genotype(table_dict), "--table", str(path), "--json")
    assert code == 0, err
    assert strict_json(out)["latency_ms"] > 0


def test_dumps_strict_refuses_non_finite_numbers() -> None:
    from hwnas.cli.common import dumps_strict

    assert strict_json(dumps_strict({"a": [1.5, None]})) == {"a": [1.5, None]}
    with pytest.raises(ValueError, match="not JSON"):
        dumps_strict({"latency_ms": math.inf})


# ---- studies -------------------------------------------------------------------------------------------
def _study(path: Path, **attrs: Any) -> str:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{path}"
    study = optuna.create_study(storage=url, study_name="s", directions=["maximize", "minimize"])
    t = study.ask()
    base = {"genotype": reference("mobilenetv2").to_string(), "acc": 0.5, "flops": 3e8, "feasible": True,
            "trained": True}
    for k, v in {**base, **attrs}.items():
        t.set_user_attr(k, v)
    study.tell(t, [0.5, 3e8])
    return url


@pytest.mark.parametrize("attr", ["acc", "flops", "params", "latency_ms", "population_quality", "cached_from"])
def test_study_attributes_too_large(capsys: pytest.CaptureFixture[str], tmp_path: Path, attr: str) -> None:
    url = _study(tmp_path / "s.db", **{attr: BIG})  # Optuna stores a 400-digit integer (JSON) and reads it back
    code, _, err = run(capsys, "export", "--storage", url, "--study-name", "s", "--trial", "0", "-o",
                       str(tmp_path / "out"), "--no-latency")
    one_line_error(code, err, f"trial 0 attribute {attr} must be")
    assert "1000000000... (401 digits)" in err


def test_study_problem_settings_too_large(tmp_path: Path) -> None:
    from hwnas.search.records import StudyRecordError, check_study_records

    for key in ("resolution", "num_classes"):
        with pytest.raises(StudyRecordError, match=f"problem {key} must be"):
            check_study_records("s", {"hwnas": {"problem": {key: BIG}}}, [])
    with pytest.raises(StudyRecordError, match="problem resolution must be"):
        check_study_records("s", {"hwnas": {"problem": {"resolution": 100_000}}}, [])


# ---- checkpoints and resume states ---------------------------------------------------------------------
def _checkpoint(path: Path, **fields: Any) -> Path:
    import torch

    ck = {"state_dict": {}, "genotype": reference("mobilenetv2").to_dict(), "num_classes": 10, "input_size": 32,
          "metrics": {"val_acc": 0.5}, "dataset": "cifar10", **fields}
    torch.save(ck, path)
    return path


def _resume(**fields: Any) -> dict[str, Any]:
    import torch

    state = {"step": 3, "total": 10, "epoch_start": 0, "perm": None, "generator": torch.zeros(8, dtype=torch.uint8),
             "torch_rng": torch.zeros(8, dtype=torch.uint8), "momentum": {}, "loss_sum": 1.0, "final_loss": None,
             "train_seconds": 1.0, "settings": {}}
    return {**state, **fields}


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"metrics": {"val_acc": BIG}}, "metrics"),
    ({"num_classes": BIG}, "num_classes"),
    ({"input_size": BIG}, "input_size"),
])
def test_checkpoint_numbers_too_large_for_export(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 fields: dict[str, Any], fragment: str) -> None:
    ck = _checkpoint(tmp_path / "c.pt", **fields)
    code, _, err = run(capsys, "export", "--weights", str(ck), "-o", str(tmp_path / "x.onnx"), "--no-latency")
    one_line_error(code, err, fragment)


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"train_seconds": BIG}, "train_seconds"),
    ({"final_loss": BIG}, "final_loss"),
    ({"loss_sum": BIG}, "loss_sum"),
    ({"step": BIG, "total": BIG}, "step"),
    ({"total": BIG}, "total"),
])
def test_resume_states_with_numbers_too_large(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              fields: dict[str, Any], fragment: str) -> None:
    ck = _checkpoint(tmp_path / "c.pt", interrupted=True, resume=_resume(**fields))
    code, _, err = run(capsys, "train", "mobilenetv2", "--resume", str(ck))
    one_line_error(code, err, fragment)
    assert not (tmp_path / "cache").exists()


def test_number_error_is_a_value_error() -> None:
    assert issubclass(NumberError, ValueError)


def test_genotype_json_with_a_400_digit_se_ratio(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = reference("mobilenetv2").to_dict()
    d["stages"][0]["se_ratio"] = BIG
    path = tmp_path / "g.json"
    path.write_text(json.dumps(d))
    code, _, err = run(capsys, "describe", str(path))
    one_line_error(code, err, "se ratio must be")


def test_scale_search_result_with_a_400_digit_coefficient(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    path = tmp_path / "scale-search.json"
    path.write_text(json.dumps({"best": {"alpha": BIG, "beta": 1.1, "gamma": 1.15}}))
    code, _, err = run(capsys, "scale", "family", "efficientnet-b0", "--from-search", str(path))
    one_line_error(code, err, "alpha must be")


def test_resuming_a_study_without_hwnas_settings_checks_its_trials(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url, study_name="s", directions=["maximize", "minimize"])
    t = study.ask()  # made by hand (no "hwnas" study attribute): before the fix, its trials were never checked
    nb201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    for k, v in {"genotype": nb201, "acc": BIG, "flops": 3e7, "feasible": True, "trained": True}.items():
        t.set_user_attr(k, v)
    study.tell(t, [0.5, 3e7])
    code, _, err = run(capsys, "search", "--benchmark", "nb201:cifar10", "--storage", url, "--study-name", "s",
                       "--resume", "--trials", "2", "--run-dir", str(tmp_path / "runs"))
    one_line_error(code, err, "trial 0 attribute acc must be an accuracy in [0, 1], got 1000000000... (401 digits)")
    assert "hwnas" not in optuna.load_study(study_name="s", storage=url).user_attrs  # refused before any change
