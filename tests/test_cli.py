"""End-to-end CLI tests through a real subprocess (the installed console script's code path)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_usage_error as one_line_error
from conftest import hwnas, hwnas_here
from hwnas.references import reference

ROOT = Path(__file__).resolve().parents[1]


def assert_usage_error(r: subprocess.CompletedProcess[str], fragment: str) -> None:
    one_line_error(r, fragment)
    assert r.stdout == ""
    assert r.stderr.startswith("hwnas"), r.stderr


def test_describe_efficientnet_b0_json() -> None:
    r = hwnas("describe", "efficientnet-b0", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params"] == 5_288_548
    assert round(d["flops"] / 1e6, 1) == 385.8
    assert d["resolution"] == 224 and d["flops_unit"] == "multiply-adds"
    assert d["genotype"] == reference("efficientnet-b0").to_string()
    assert sum(s["flops"] for s in d["stages"]) + d["stem"]["flops"] + d["head"]["flops"] == d["flops"]


def test_describe_table_and_resolution(tmp_path: Path) -> None:
    r = hwnas("describe", "mobilenetv2", "--resolution", "32", "--num-classes", "10")
    assert r.returncode == 0, r.stderr
    assert "multiply-adds at 32x32" in r.stdout and "MobileNetV2" in r.stdout


def test_describe_genotype_string_and_json_file(tmp_path: Path) -> None:
    g = reference("mnasnet-a1")
    r = hwnas("describe", g.to_string(), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    f = tmp_path / "arch.json"
    f.write_text(g.to_json(indent=2))
    r2 = hwnas("describe", str(f), "--json")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout)["flops"] == out["flops"] == 311_579_072
    # describe's own JSON output is accepted as input
    f.write_text(r.stdout)
    assert json.loads(hwnas("describe", str(f), "--json").stdout)["params"] == out["params"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["describe", "garbage"], "unknown architecture 'garbage'"),
        (["describe", "swish,stem32,ir_r1_k3_s1_e6_c16_zz,head1280"], "token 3 at character 14: unknown option 'zz'"),
        (["describe", "swish,stem32,ir_r1_k2_s1_e6_c16,head1280"], "kernel must be odd"),
        (["describe", "missing.json"], "genotype file not found: missing.json"),
        (["describe", "x" * 5000 + ".json"], "genotype file not found: xxxx"),  # too long for a file name
        (["describe", "mobilenetv2", "--resolution", "abc"], "expected an integer from 1 to 8192, got 'abc'"),
        (["describe", "mobilenetv2", "--resolution", "9" * 5000], "expected an integer from 1 to 8192, got '9999"),
        (["describe", "mobilenetv2", "--num-classes", "0"], "expected an integer from 1 to 1048576"),
        (["train", "mobilenetv2", "--seed", str(2**64)], "expected an integer from 0 to 4294967295"),
        (["train", "mobilenetv2", "--image-size", "4"], "expected an integer from 8 to 8192, got '4'"),
        (["latency", "measure-model", "mobilenetv2", "--threads", "9" * 30], "expected an integer from 1 to 4096"),
        (["latency", "validate", "--table", "cpu-epyc-2core-t1-fp32-bs1-r224", "-n", "1000000000"],
         "expected an integer from 1 to 100000"),
        (["latency", "measure", "--calibration", "1000000000"], "expected an integer from 1 to 100000"),
        (["search", "--population", "1000000000"], "expected an integer from 1 to 10000"),
        (["scale", "search", "mobilenetv2", "--tolerance", "inf"], "expected a non-negative number, got 'inf'"),
        (["describe"], "the following arguments are required: ARCH"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["space", "info", "--recipe", "nope.toml"], "recipe not found: nope.toml"),
        (["space", "sample", "-n", "-1"], "expected a positive integer"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], fragment: str) -> None:
    assert_usage_error(hwnas_here(*args), fragment)


def test_bad_json_and_bad_recipe_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"activation": "swish", "stem": 32')
    assert_usage_error(hwnas_here("describe", str(bad)), "invalid genotype JSON")
    bad.write_bytes(b"\xff\xfe\x00")
    assert_usage_error(hwnas_here("describe", str(bad)), "cannot read")
    toml = tmp_path / "r.toml"
    toml.write_text("[space\n")
    assert_usage_error(hwnas_here("space", "info", "--recipe", str(toml)), "is not valid TOML")
    toml.write_text("[space]\nkernels = [2]\n")
    assert_usage_error(hwnas_here("space", "info", "--recipe", str(toml)), "kernels must be odd")
    toml.write_bytes(b'name = "\xff"\n')  # not UTF-8
    assert_usage_error(hwnas_here("space", "info", "--recipe", str(toml)), "is not valid TOML: 'utf-8' codec")


def test_space_info_and_sample() -> None:
    r = hwnas("space", "info", "--recipe", str(ROOT / "search" / "space-mnasnet-b0.toml"))
    assert r.returncode == 0 and "52 choice dimensions" in r.stdout
    info = json.loads(hwnas("space", "info", "--json").stdout)
    assert info["n_dims"] == 52 and info["size"] > 1e20
    a = hwnas("space", "sample", "-n", "5", "--seed", "0")
    b = hwnas("space", "sample", "-n", "5", "--seed", "0")
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout.splitlines()) == 5
    c = hwnas("space", "sample", "-n", "5", "--seed", "1")
    assert c.stdout != a.stdout
    rows = json.loads(hwnas("space", "sample", "-n", "2", "--json").stdout)
    assert rows[0]["genotype"] == a.stdout.splitlines()[0] and rows[0]["flops"] > 0
    assert [r["genotype"] for r in json.loads(hwnas("space", "sample", "-n", "1", "--json").stdout)] == \
        a.stdout.splitlines()[:1]
    # streamed: the first of 10^11 comes at once (it was a list built first: a hang)
    with subprocess.Popen([sys.executable, "-m", "hwnas", "space", "sample", "-n", "100000000000"],
                          stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        first = p.stdout.readline().strip()
        p.kill()
    assert first == a.stdout.splitlines()[0]


def test_version() -> None:
    r = hwnas("--version")
    assert r.returncode == 0 and r.stdout.startswith("hwnas ")


def test_bad_input_is_reported_before_torch_loads(tmp_path: Path) -> None:
    """Loading torch takes seconds: commands that train, export or scale check their input first."""
    commands = [
        ["train", "nope"],
        ["train", "efficientnet-b0", "--data-dir", str(tmp_path / "none")],
        ["search", "--budget-flops", "4X"],
        ["export", "efficientnet-b0", "--weights", str(tmp_path / "none.pt"), "-o", str(tmp_path / "b0.onnx")],
        ["scale", "search", "efficientnet-b0", "--step", "0.3", "--tolerance", "0", "--out-dir", str(tmp_path / "s")],
        ["scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1"],
        ["scale", "family", "efficientnet-b0", "--preset", "efficientnet", "--phi", "8"],
        ["latency", "measure", "--workers", "4", "-o", str(tmp_path / "x.json")],
        ["latency", "measure", "--batch-size", "1,8", "-o", str(tmp_path / "x.json")],
        ["latency", "validate", "--table", "cpu-epyc-2core-t1-fp32-bs1-r224", "--workers", "2"],
    ]
    script = ("import contextlib, io, json, sys\nfrom hwnas.cli import main\ncodes = []\n"
              f"for argv in {commands!r}:\n"
              "    with contextlib.redirect_stderr(io.StringIO()):\n"
              "        codes.append(main(argv))\n"
              "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"codes": [2] * len(commands), "torch": False}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "mobilenetv2", "--epochs", "0.01", "-o", "afile/x.pt"], "-o afile/x.pt: afile is a file"),
        (["train", "mobilenetv2", "--epochs", "0.01", "-o", "adir"], "-o adir is a directory"),
        (["latency", "measure", "--quick", "-o", "afile/x.json"], "-o afile/x.json: afile is a file"),
        (["latency", "measure", "--quick", "-o", "t/{foo}.json"], "not a valid name template ({foo})"),
        (["latency", "measure", "--quick", "-o", "{device.__class__}.json"], "not a valid name template "
         "({device.__class__})"),
        (["latency", "measure", "--quick", "-o", "{batch:zz}.json"], "not a valid name template ({batch:zz})"),
        (["latency", "measure", "--quick", "-o", "{device:>99999999999}.json"], "({device:>99999999999})"),
        (["latency", "validate", "--table", "cpu-epyc-2core-t1-fp32-bs1-r224", "-n", "1", "-o", "adir/r"],
         "validation report adir/r.json is a directory"),
        (["export", "mobilenetv2", "--no-latency", "-o", "adir/r.onnx"], "sidecar adir/r.json is a directory"),
        (["scale", "family", "mobilenetv2", "--preset", "efficientnet", "--plot", "p.xyz"], "give a .png"),
        (["scale", "family", "mobilenetv2", "--coefficients", "1.2,1.1,1.15", "--phi", "0-99999999999"],
         "phi must be at most 20"),
        (["search", "--run-dir", "afile/runs"], "--run-dir afile/runs: afile is a file"),
        (["data", "prepare", "--cache-dir", "afile/c"], "--cache-dir afile/c: afile is a file"),
        (["search", "--recipe", "adir"], "recipe adir is a directory, not a TOML file"),
        (["scale", "family", "mobilenetv2", "--from-search", "adir"], "is a directory (give its scale-search.json)"),
        (["export", "mobilenetv2", "-o", "a" * 300 + ".onnx"], "file name too long: aaaa"),  # ENAMETOOLONG, once
        (["train", "mobilenetv2", "-o", "a" * 300 + ".pt"], "file name too long: aaaa"),
    ],
)
def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path: Path, args: list[str],
                                                                     fragment: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir" / "r.json").mkdir(parents=True)
    (tmp_path / "adir" / "r.json" / "keep").write_text("x")
    assert_usage_error(hwnas_here(*args, cwd=tmp_path), fragment)


def test_a_bad_cache_variable_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "afile"))
    assert_usage_error(hwnas_here("data", "prepare"), f"$HWNAS_CACHE {tmp_path / 'afile'} is a file, not a folder")


def test_broken_data_and_table_files_are_one_line_errors(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(d / "1.png")
    (tmp_path / "imgs" / "train" / "a" / "0.png").write_bytes(b"not an image")  # the first one decoded
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    table = json.loads((Path(__file__).resolve().parents[1] / "latency_tables" /
                        "cpu-epyc-2core-t1-fp32-bs1-r224.json").read_text())
    table["overhead"] = [1, 2]
    (tmp_path / "t.json").write_text(json.dumps(table))
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert_usage_error(hwnas_here("data", "prepare", "--data-dir", str(tmp_path / "imgs"), *cache),
                       "cannot decode image")
    assert_usage_error(hwnas_here("data", "prepare", "--data-dir", str(tmp_path / "trunc.npz"), *cache),
                       "is not a readable hwnas data cache (File is not a zip file)")
    assert_usage_error(hwnas_here("latency", "predict", "mobilenetv2", "--table", str(tmp_path / "t.json")),
                       "overhead must be an object")


@pytest.mark.parametrize("command", ["search", "transfer"])
def test_every_search_option_says_what_it_does(command: str) -> None:
    import argparse

    from hwnas.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [a.option_strings[-1] for a in sub.choices[command]._actions if a.option_strings and not a.help]
    assert not silent, f"options of hwnas {command} without help: {silent}"
