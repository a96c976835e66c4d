"""ONNX export: every op of the space through the checker and onnxruntime parity (20+ random genotypes),
the sidecar, checkpoints, a real Optuna study's winners, and bad input; ``hwnas scale`` end to end."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_search import CheapObjective

from conftest import assert_usage_error, hwnas, hwnas_here
from hwnas.cli.latency import load_table
from hwnas.export import PARITY_TOLERANCE, export_genotype, parity
from hwnas.genotype import Genotype
from hwnas.latency.table import predicted_latency
from hwnas.model import build_model
from hwnas.references import reference
from hwnas.search.problem import Problem
from hwnas.search.run import create_search
from hwnas.space import SearchSpace
from hwnas.walker import flops, params

SPACE = SearchSpace.default()
CPU_TABLE = "cpu-epyc-2core-t1-fp32-bs1-r224"


def _random_genotypes(n: int, seed: int = 0) -> list[Genotype]:
    rng = np.random.default_rng(seed)
    return [SPACE.decode(SPACE.sample(rng)) for _ in range(n)]


def _features(gs: list[Genotype]) -> set[str]:
    out: set[str] = set()
    for g in gs:
        out.add(g.activation)
        for s in g.stages:
            out |= {s.op, f"k{s.kernel}", "se" if s.se_ratio else "nose", "skip" if s.skip else "noskip"}
    return out


GENOTYPES = _random_genotypes(20)


def test_random_draws_cover_every_op_of_the_space() -> None:
    want = {*SPACE.activations, "ir", "ds", "k3", "k5", "k7", "se", "nose", "skip", "noskip"}
    assert want <= _features(GENOTYPES)
    assert len({g.to_string() for g in GENOTYPES}) == 20


@pytest.mark.parametrize("i", range(len(GENOTYPES)))
def test_export_passes_checker_and_parity(i: int, tmp_path: Path) -> None:
    g = GENOTYPES[i]
    path = tmp_path / "net.onnx"
    # dropout and stochastic depth on in the model: eval mode must export them as identities
    s = export_genotype(g, path, resolution=32, num_classes=10, dropout=0.3, drop_path=0.2, measure=False, seed=i)
    onnx.checker.check_model(str(path), full_check=True)
    assert s["checker"] == "passed"
    assert s["parity"]["ok"] and s["parity"]["max_rel_error"] <= PARITY_TOLERANCE
    assert s["parity"]["batch"] >= 2 and s["parity"]["max_abs_logit"] > 1e-3  # not a vanished network
    m = onnx.load(str(path), load_external_data=False)
    assert m.opset_import[0].version >= 17
    assert [x.name for x in m.graph.input] == ["input"] and [x.name for x in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(n.op_type in ("Dropout", "RandomUniformLike", "RandomUniform") for n in m.graph.node)


def test_parity_detects_a_different_network(tmp_path: Path) -> None:
    g = GENOTYPES[0]
    path = tmp_path / "a.onnx"
    export_genotype(g, path, 32, 10, measure=False, seed=0)
    other = build_model(g, 10, input_size=32)  # other weights, default BatchNorm statistics
    torch.nn.init.normal_(other.classifier.bias, std=1.0)
    assert not parity(other, path, 32)["ok"]


def test_predicted_latency_is_null_with_a_reason_outside_the_table() -> None:
    table = load_table(CPU_TABLE)
    b0 = reference("efficientnet-b0")
    ok = predicted_latency(table, b0, 224)
    assert ok is not None and ok["ms"] > 0 and ok["table"].endswith(f"{CPU_TABLE}.json") and ok["runtime"] == "torch"
    ort = predicted_latency(load_table("cpu-epyc-2core-t1-onnxruntime-fp32-bs1-r224"), b0, 224)
    assert ort is not None and ort["runtime"] == "onnxruntime" and 0 < ort["ms"] < ok["ms"]
    other_res = predicted_latency(table, b0, 200)
    assert other_res is not None and other_res["ms"] is None and "resolution" in other_res["reason"]
    wide = Genotype.from_string(b0.to_string().replace("c320", "c321"))
    missing = predicted_latency(table, wide, 224)
    assert missing is not None and missing["ms"] is None and "no entry for layer" in missing["reason"]
    assert predicted_latency(None, b0, 224) is None


def test_cli_export_efficientnet_b0_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "export" / "b0.onnx"
    r = hwnas("export", "efficientnet-b0", "-o", str(out), "--runs", "3", "--table", CPU_TABLE, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s == json.loads(out.with_suffix(".json").read_text())
    b0 = reference("efficientnet-b0")
    assert s["genotype"] == b0.to_string() and Genotype.from_dict(s["genotype_json"]) == b0
    assert s["resolution"] == 224 and s["num_classes"] == 1000 and s["opset"] == 17
    assert s["flops"] == flops(b0, 224) and s["params"] == params(b0) and s["flops_unit"] == "multiply-adds"
    assert s["parity"]["ok"] and s["parity"]["max_rel_error"] <= 1e-4
    lat = s["measured_latency"]
    assert lat["batch"] == 1 and lat["onnxruntime"]["provider"] == "CPUExecutionProvider"
    assert lat["onnxruntime"]["median_ms"] > 0 and lat["torch_cpu"]["median_ms"] > 0
    assert s["predicted_latency"]["ms"] > 0 and CPU_TABLE in s["predicted_latency"]["table"]
    assert s["hwnas_version"] and s["accuracy"] is None
    assert "parity max rel error" in r.stderr and "onnxruntime CPU" in r.stderr


def test_cli_export_a_trained_checkpoint(tmp_path: Path) -> None:
    arch = "relu6,stem16,ds_r1_k3_s1_c16,ir_r1_k3_s2_e3_c24_se0.25,ir_r1_k5_s2_e3_c40,head64"
    ckpt = tmp_path / "m.pt"
    r = hwnas("train", arch, "--epochs", "0.01", "--batch-size", "32", "--device", "cpu", "-o", str(ckpt))
    assert r.returncode == 0, r.stderr
    saved = torch.load(ckpt, weights_only=True)
    r = hwnas("export", "--weights", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--no-latency", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["genotype"] == arch and s["num_classes"] == 10 and s["resolution"] == 32
    assert s["weights"] == "checkpoint" and s["accuracy"] == saved["metrics"]["val_acc"]
    assert s["parity"]["ok"] and s["measured_latency"] is None
    r = hwnas("export", arch, "--weights", str(ckpt), "-o", str(tmp_path / "m2.onnx"), "--no-latency")
    assert r.returncode == 0, r.stderr
    assert_usage_error(hwnas_here("export", "mobilenetv2", "--weights", str(ckpt), "-o", str(tmp_path / "x.onnx")),
                       "not ARCH")
    assert_usage_error(hwnas_here("export", "--weights", str(ckpt), "--num-classes", "5", "-o",
                                  str(tmp_path / "x.onnx")), "checkpoint")
    assert_usage_error(hwnas_here("export", "--weights", str(ckpt), "--resolution", "224", "-o",
                                  str(tmp_path / "x.onnx")),
                       "was trained at 32 px (stem stride 1); at 224 px the stem strides 2: another network")
    r = hwnas("export", "--weights", str(ckpt), "--resolution", "64", "-o", str(tmp_path / "m64.onnx"), "--no-latency")
    assert r.returncode == 0, r.stderr  # still the small-input network
    bare = tmp_path / "bare.pt"  # a state_dict without genotype: ARCH is needed, and only shapes can be checked
    torch.save({k: v for k, v in saved.items() if k != "genotype"}, bare)
    assert_usage_error(hwnas_here("export", "--weights", str(bare), "-o", str(tmp_path / "x.onnx")),
                                  "carries no genotype")
    r = hwnas("export", arch, "--weights", str(bare), "-o", str(tmp_path / "bare.onnx"), "--no-latency")
    assert r.returncode == 0 and "matched to ARCH by parameter names and shapes only" in r.stderr, r.stderr
    for key, value, fragment in [("num_classes", "ten",
                                  "num_classes must be a positive integer (at most 1048576), got str 'ten'"),
                                 ("input_size", "big", "input_size must be a positive integer"),
                                 ("state_dict", [1], "state_dict must be a mapping name -> tensor, got list"),
                                 ("metrics", [0.5], "metrics must be an object with a numeric val_acc"),
                                 ("metrics", {"val_acc": float("nan")}, "metrics must be an object with a numeric"),
                                 ("genotype", "relu,stem8", "genotype must be a genotype object")]:
        edited = tmp_path / f"edited-{key}.pt"  # a hand-edited checkpoint: one line naming the field
        torch.save({**saved, key: value}, edited)
        assert_usage_error(hwnas_here("export", "--weights", str(edited), "-o", str(tmp_path / "x.onnx"),
                                      "--no-latency"),
                           f"checkpoint {edited}: {fragment}")


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real (small) search study: 32 px, 10 classes, a FLOPs budget, a cheap deterministic evaluator."""
    root = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{root / 's.db'}"
    problem = Problem(SPACE, budgets={"flops": 12e6}, resolution=32, num_classes=10)
    s = create_search(problem, url, "winners", "random", CheapObjective(), seed=1, population=4)
    s.run(4)
    return url


def test_cli_export_study_pareto_and_trial(study_url: str, tmp_path: Path) -> None:
    import optuna

    study = optuna.load_study(study_name="winners", storage=study_url)
    best = {t.user_attrs["genotype"]: t for t in sorted(study.best_trials, key=lambda t: -t.number)
            if t.user_attrs.get("feasible")}
    assert best
    r = hwnas("export", "--storage", study_url, "--study-name", "winners", "--pareto", "-o", str(tmp_path / "w"),
              "--no-latency")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "w").glob("*.onnx"))
    assert files == sorted(f"trial-{t.number}.onnx" for t in best.values())
    for t in best.values():
        s = json.loads((tmp_path / "w" / f"trial-{t.number}.json").read_text())
        assert s["genotype"] == t.user_attrs["genotype"] and s["resolution"] == 32 and s["num_classes"] == 10
        assert s["accuracy"] == pytest.approx(t.user_attrs["acc"]) and s["source"]["trial"] == t.number
        assert s["parity"]["ok"]
    dominated = [t for t in study.trials if t.number not in {b.number for b in best.values()}]
    one = (dominated or study.trials)[0]  # --trial exports any trial, Pareto-optimal or not
    r = hwnas("export", "--storage", study_url, "--study-name", "winners", "--trial", str(one.number),
              "-o", str(tmp_path / "one"), "--no-latency", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["source"]["trial"] == one.number and s["genotype"] == one.user_attrs["genotype"]
    assert s["accuracy"] == pytest.approx(one.user_attrs["acc"])
    assert (tmp_path / "one" / f"trial-{one.number}.onnx").is_file()


def test_cli_export_study_bad_input(study_url: str, tmp_path: Path) -> None:
    base = ["export", "--storage", study_url, "-o", str(tmp_path / "d")]
    assert_usage_error(hwnas_here(*base, "--study-name", "ghost", "--pareto"), "no study 'ghost'")
    assert_usage_error(hwnas_here(*base, "--study-name", "winners", "--trial", "999"), "no trial 999")
    assert_usage_error(hwnas_here(*base, "--study-name", "winners"), "--trial N or --pareto")
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert_usage_error(hwnas_here("export", "--storage", missing, "--study-name", "winners", "--pareto", "-o",
                                  str(tmp_path / "d")), "no such study storage")
    assert not (tmp_path / "nope.db").exists()
    other = tmp_path / "other.db"  # somebody else's SQLite database: refused, and left as it was
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    assert_usage_error(hwnas_here("export", "--storage", f"sqlite:///{other}", "--study-name", "winners", "--pareto",
                                  "-o", str(tmp_path / "d")), "is not an Optuna study storage")
    with sqlite3.connect(other) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    (tmp_path / "file").write_text("x")
    assert_usage_error(hwnas_here("export", "--storage", study_url, "--study-name", "winners", "--pareto", "-o",
                                  str(tmp_path / "file")), "is not a directory")


@pytest.mark.parametrize(("table", "key", "value", "fragment"), [
    ("trial", "acc", '"high"', "trial 0 attribute acc must be an accuracy in [0, 1], got 'high'"),
    ("trial", "genotype", '"relu,stem8,zz"', "trial 0 attribute genotype must be a genotype string"),
    ("trial", "flops", "[1]", "trial 0 attribute flops must be a non-negative number, got [1]"),
    ("trial", "feasible", '"yes"', "trial 0 attribute feasible must be true or false"),
    ("study", "hwnas", '{"problem": {"resolution": "big"}}', "problem resolution must be a positive integer"),
    ("study", "hwnas", '[1, 2]', "its hwnas settings hold no problem object"),
    ("directions", "", "", "with reward pareto are 2 values, but the study has 3 optimisation directions"),
    ("values", "", "", "trial 1 has 3 objective values, the study 2 directions: damaged"),
    ("no-values", "", "", "trial 0 is complete but has no objective values: damaged"),
    ("no-acc", "", "", "trial 0 is a complete, trained trial without attribute acc: damaged"),
    ("choices", "", "", "trial 0 parameter 's1_kernel' has a choice of type dict: damaged"),  # Optuna's warning: silent
])
def test_a_damaged_study_is_a_one_line_error(study_url: str, tmp_path: Path, table: str, key: str, value: str,
                                             fragment: str) -> None:
    """A hand-edited database: named where it is opened (export here; transfer's source and a resumed search
    use the same check), not a traceback after the first winners are exported."""
    import shutil

    db = tmp_path / "edited.db"
    shutil.copy(study_url.removeprefix("sqlite:///"), db)
    with sqlite3.connect(db) as con:
        if table == "directions":  # a third objective's direction, and a value too many, as the fuzzer made them
            n = con.execute("INSERT INTO study_directions (direction, study_id, objective) VALUES ('MINIMIZE', 1, 2)"
                            ).rowcount
        elif table == "values":
            n = con.execute("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES "
                            "((SELECT MIN(trial_id) + 1 FROM trials), 2, 1.0, 'FINITE')").rowcount
        elif table == "no-values":  # Optuna would read the complete trial's values as None
            n = con.execute("DELETE FROM trial_values WHERE trial_id = (SELECT MIN(trial_id) FROM trials)"
                            ).rowcount // 2  # its two objectives' values
        elif table == "no-acc":
            n = con.execute("DELETE FROM trial_user_attributes WHERE key = 'acc' AND trial_id = "
                            "(SELECT MIN(trial_id) FROM trials)").rowcount
        elif table == "choices":  # a categorical choice Optuna cannot store, as the fuzzer made one
            (raw,) = con.execute("SELECT distribution_json FROM trial_params WHERE trial_id = (SELECT MIN(trial_id) "
                                 "FROM trials) AND param_name = 's1_kernel'").fetchone()
            dist = json.loads(raw)
            dist["attributes"]["choices"][0] = {"value": dist["attributes"]["choices"][0]}
            n = con.execute("UPDATE trial_params SET distribution_json = ? WHERE param_name = 's1_kernel' AND "
                            "trial_id = (SELECT MIN(trial_id) FROM trials)", (json.dumps(dist),)).rowcount
        elif table == "trial":
            n = con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = ? AND trial_id = "
                            "(SELECT MIN(trial_id) FROM trials)", (value, key)).rowcount
        else:
            n = con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = ?", (value, key)).rowcount
        assert n == 1
    r = hwnas("export", "--storage", f"sqlite:///{db}", "--study-name", "winners", "--pareto", "-o",
              str(tmp_path / "d"), "--no-latency")
    assert_usage_error(r, fragment)
    assert not list((tmp_path / "d").glob("*.onnx"))


@pytest.mark.parametrize(("args", "fragment"), [
    (["export", "efficientnet-b0", "-o", "{tmp}/b0.json"], "must end in .onnx"),
    (["export", "efficientnet-b0", "-o", "{tmp}"], "must end in .onnx"),
    (["export", "efficientnet-b0", "-o", "{tmp}/afile/b0.onnx"], "is a file"),
    (["export", "-o", "{tmp}/b0.onnx"], "give ARCH"),
    (["export", "resnet50", "-o", "{tmp}/b0.onnx"], "unknown architecture 'resnet50'"),
    (["export", "efficientnet-b0", "--weights", "{tmp}/none.pt", "-o", "{tmp}/b0.onnx"], "checkpoint not found"),
    (["export", "efficientnet-b0", "--weights", "{tmp}/afile", "-o", "{tmp}/b0.onnx"], "cannot load checkpoint"),
    (["export", "efficientnet-b0", "--trial", "1", "-o", "{tmp}/b0.onnx"], "need --storage"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1"], "must be A,B,G"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "x,1.1,1.15"], "'x' is not a number"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1,1.15", "--phi", "7-0"], "is empty"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1,1.15", "--phi", ""], "phi must look like"),
    (["scale", "family", "efficientnet-b0", "--multipliers", "1,1,224;1,1"], "member 2"),
    (["scale", "family", "efficientnet-b0", "--multipliers", "1,1,224;1,1e300,224"], "member 2 depth: '1e300' is more"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "1,1,3"], "member B4: width 1, depth 1, resolution "
     "18144 is beyond any network"),
    (["scale", "family", "efficientnet-b0", "--multipliers", "1,1,224", "--phi", "1"], "--phi selects"),
    (["scale", "family", "efficientnet-b0", "--preset", "efficientnet", "--phi", "8"], "members 0-7"),
    (["scale", "family", "efficientnet-b0", "--from-search", "{tmp}/afile"], "not a result of hwnas scale"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1,1.15", "--export", "{tmp}/afile"],
     "is not a directory"),
    (["scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1,1.15", "--preset", "efficientnet"],
     "not allowed with"),
    (["scale", "search", "efficientnet-b0", "--step", "0.3", "--tolerance", "0", "--out-dir", "{tmp}/s"],
     "no coefficients"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a checkpoint")
    r = hwnas(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_usage_error(r, fragment)


def test_cli_scale_family_export_and_json(tmp_path: Path) -> None:
    out = tmp_path / "family"
    r = hwnas("scale", "family", "efficientnet-b0", "--coefficients", "1.2,1.1,1.15", "--phi", "0-1",
              "--resolution", "32", "--num-classes", "10", "--export", str(out), "--no-latency", "--json")
    assert r.returncode == 0, r.stderr
    members = json.loads(r.stdout)
    assert [m["name"] for m in members] == ["B0", "B1"]
    assert [(m["width"], m["depth"], m["resolution"]) for m in members] == [(1, 1, 32), (1.1, 1.2, 40)]
    for m in members:
        g = Genotype.from_string(m["genotype"])
        assert m["params"] == params(g, 10) and m["flops"] == flops(g, m["resolution"], 10)
        s = json.loads((out / f"{m['name'].lower()}.json").read_text())
        assert s["parity"]["ok"] and s["resolution"] == m["resolution"] and s["genotype"] == m["genotype"]
        assert s["dropout"] == m["dropout"] and s["family"]["member"] == m["name"]
        assert s["measured_latency"] is None  # timing is covered by the efficientnet-b0 sidecar test
        onnx.checker.check_model(str(out / f"{m['name'].lower()}.onnx"))
    assert (out / "family.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "family.json").read_text())["members"][1]["parity_ok"] is True
    assert "B1" in r.stderr  # the rich table goes to stderr with --json


def test_cli_scale_family_preset_and_multipliers_agree() -> None:
    r = hwnas("scale", "family", "efficientnet-b0", "--preset", "efficientnet", "--json")
    assert r.returncode == 0, r.stderr
    preset = json.loads(r.stdout)
    assert [m["params"] for m in preset][-1] == 66_347_960 and len(preset) == 8
    triples = ";".join(f"{m['width']},{m['depth']},{m['resolution']}" for m in preset)
    r = hwnas("scale", "family", "efficientnet-b0", "--multipliers", triples, "--json")
    assert r.returncode == 0, r.stderr
    explicit = json.loads(r.stdout)
    assert [(m["params"], m["flops"], m["dropout"]) for m in explicit] == \
        [(m["params"], m["flops"], m["dropout"]) for m in preset]
    r = hwnas("scale", "family", "efficientnet-b0", "--preset", "efficientnet", "--phi", "4")
    assert r.returncode == 0 and "B4" in r.stdout and "19.34" in r.stdout, r.stderr


def test_cli_scale_search_then_family_from_search(tmp_path: Path) -> None:
    out = tmp_path / "s"
    # a smoke-sized budget (one training step per candidate): this checks the plumbing, not the ranking
    r = hwnas("scale", "search", "efficientnet-b0", "--max-candidates", "2", "--epochs", "0.001", "--batch-size", "16",
              "--proxy-width", "0.25", "--val-size", "100", "--device", "cpu", "--out-dir", str(out),
              "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res == json.loads((out / "scale-search.json").read_text())
    cands = res["candidates"]
    assert len(cands) == 3 and cands[0]["baseline"] and (cands[0]["alpha"], cands[0]["gamma"]) == (1.0, 1.0)
    assert sum(c["best"] for c in cands) == 1 and res["grid"]["evaluated"] == 2
    for c in cands[1:]:
        assert abs(c["alpha"] * c["beta"] ** 2 * c["gamma"] ** 2 - 2) <= 0.1 + 1e-9
        assert c["proxy_resolution"] == round(32 * c["gamma"]) and c["deploy_resolution"] % 8 == 0
        assert 0 <= c["accuracy"] <= 1
        assert c["flops"] == flops(Genotype.from_string(c["genotype"]), c["deploy_resolution"])
    best = next(c for c in cands if c["best"])
    assert best["accuracy"] == max(c["accuracy"] for c in cands[1:])
    assert (out / "scale-search.png").read_bytes()[:4] == b"\x89PNG"
    r = hwnas("scale", "family", "efficientnet-b0", "--from-search", str(out / "scale-search.json"), "--phi", "1",
              "--json")
    assert r.returncode == 0, r.stderr
    (m,) = json.loads(r.stdout)
    assert (m["depth"], m["width"]) == pytest.approx((best["alpha"], best["beta"]))
    assert m["resolution"] == best["deploy_resolution"]


def test_bound_onnxruntime_run_gives_the_plain_run_s_logits(tmp_path: Path) -> None:
    """The IO-bound call the CUDA provider is timed with (input and output kept on the device), exercised
    here on the CPU provider: the same logits as session.run."""
    from hwnas.export import ort_runner, ort_session

    g = GENOTYPES[0]
    model = build_model(g, 10, input_size=32).eval()
    path = tmp_path / "t.onnx"
    export_genotype(g, path, 32, 10, state_dict=model.state_dict(), measure=False)
    sess = ort_session(path, "CPUExecutionProvider")
    x = torch.randn(1, 3, 32, 32)
    plain = ort_runner(sess, x)(x)[0]
    bound = ort_runner(sess, x, "cpu")(torch.zeros(1))[0].numpy()  # the argument is ignored: x is bound
    assert np.array_equal(plain, bound) and plain.shape == (1, 10)
    with torch.inference_mode():
        assert np.allclose(bound, model(x).numpy(), atol=1e-4)
