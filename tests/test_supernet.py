"""The NB201 supernet, its training (SPOS, resumable) and the inherited-weights evaluator; hwnas supernet."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnas.cli import main
from hwnas.evaluators.supernet import SupernetEvaluator, load_supernet
from hwnas.spaces import get_space
from hwnas.spaces.nb201 import NB201_OPS, CellArch
from hwnas.supernet import SupernetError, build_supernet
from hwnas.supernet.train import TrainSettings, state_of, train_supernet

SPACE = get_space("nb201")


def _data(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def _net(C: int = 4, N: int = 1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_supernet(SPACE, 10, 32, {"C": C, "N": N})


def _archs(k: int, seed: int = 0) -> list[CellArch]:
    rng = np.random.default_rng(seed)
    return [SPACE.decode(SPACE.sample(rng)) for _ in range(k)]


def test_extract_computes_what_the_supernet_computes() -> None:
    net = _net(C=4, N=2)
    train_supernet(net, _data(128), TrainSettings(epochs=1, batch_size=32), seed=1)  # BN stats and weights moved
    x = torch.randn(3, 3, 32, 32)
    archs = [*_archs(6), CellArch(("nor_conv_3x3",) * 6), CellArch(("none",) * 6)]
    net.eval()
    for a in archs:
        sub = net.extract(a).eval()
        net.activate(a)
        with torch.no_grad():
            assert torch.allclose(sub(x), net(x), atol=1e-6), a


def test_extract_at_the_benchmark_shape_is_the_benchmark_network() -> None:
    net = _net(C=16, N=5)
    for a in _archs(3, seed=4):
        assert sum(p.numel() for p in net.extract(a).parameters()) == SPACE.params(a, 10)


def test_only_the_active_path_learns() -> None:
    net = _net()
    a = CellArch(("nor_conv_1x1", "nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_3x3"))
    net.activate(a)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    for name, p in net.named_parameters():
        parts = name.split(".")
        if "edges" in parts:
            edge, op = int(parts[3]), int(parts[4])
            assert (p.grad is not None) == (NB201_OPS[op] == a.ops[edge]), name
        else:
            assert p.grad is not None, name


def test_activate_refuses_what_is_not_an_nb201_cell() -> None:
    net = _net()
    with pytest.raises(SupernetError, match="NB201 cells"):
        net.activate("|nor_conv_3x3~0|")
    with pytest.raises(SupernetError, match="activate an architecture"):
        _net()(torch.randn(1, 3, 32, 32))
    with pytest.raises(SupernetError, match="setting C"):
        build_supernet(SPACE, 10, 32, {"C": 0})
    with pytest.raises(SupernetError, match="multiple of 4"):
        build_supernet(SPACE, 10, 30, {})
    with pytest.raises(SupernetError, match="no supernet"):
        build_supernet(get_space("macro"), 10, 32)
    with pytest.raises(SupernetError, match="sandwich"):
        train_supernet(_net(), _data(64), TrainSettings(epochs=1, batch_size=32, sandwich=True))


def test_settings_are_checked() -> None:
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"paths": 0}, {"batch_size": True}, {"momentum": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainSettings(**bad).check()  # type: ignore[arg-type]


def test_training_lowers_the_loss_and_is_deterministic() -> None:
    x, y = _data(128)
    y = (x[:, :, :, 0].mean(axis=(1, 2)) > 127).astype(np.int64)  # learnable: bright red images vs the rest
    runs = []
    for _ in range(2):
        net = _net(seed=3)
        r = train_supernet(net, (x, y), TrainSettings(epochs=6, batch_size=32, lr=0.1), seed=5)
        runs.append((r.epoch_losses, [p.detach().clone() for p in net.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    assert runs[0][0][-1] < runs[0][0][0] - 0.05, runs[0][0]


def test_a_stopped_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data, settings = _data(160), TrainSettings(epochs=2, batch_size=32)
    whole = _net(seed=2)
    train_supernet(whole, data, settings, seed=9)

    saved: list[dict] = []
    calls = iter(range(100))
    part = _net(seed=2)
    r = train_supernet(part, data, settings, seed=9, checkpoint=lambda p: saved.append(
        state_of(part, settings, 9, p, {})), should_stop=lambda: next(calls) == 7)
    assert r.stopped and r.step == 7 and saved[-1]["progress"]["finished"] is False
    buf = io.BytesIO()
    torch.save(saved[-1], buf)
    ckpt = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)  # plain values and tensors only
    again, meta = load_supernet(ckpt, kind="nb201")
    r2 = train_supernet(again, data, settings, seed=9, resume=meta["progress"])
    assert not r2.stopped and r2.step == r2.total_steps == 10
    for (n, a), b in zip(whole.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), n


def _checkpoint(net: torch.nn.Module, **changes: object) -> dict:
    ckpt = state_of(net, TrainSettings(epochs=1), 0, {"step": 1, "total_steps": 1, "finished": True}, {})
    ckpt.update(changes)
    return ckpt


def test_load_supernet_refuses_damaged_and_foreign_checkpoints() -> None:
    net = _net()
    net2, _ = load_supernet(_checkpoint(net))
    assert net2.settings() == {"C": 4, "N": 1}
    cases = {
        "not an hwnas supernet": {"format": "x"},
        "version": {"version": 99},
        "space": {"space": {"kind": "darts-ish", "config": None}},
        "num_classes": {"num_classes": -3},
        "state_dict": {"state_dict": {"a": 1}},
        "do not fit": {"state_dict": {**net.state_dict(), "extra.weight": torch.zeros(1)}},
        "settings": {"supernet": {"C": 4, "N": 1, "depth": 3}},
        "NaN": {"state_dict": {k: (v * float("nan") if v.is_floating_point() else v)
                               for k, v in net.state_dict().items()}},
    }
    for match, change in cases.items():
        with pytest.raises(SupernetError, match=match):
            load_supernet(_checkpoint(net, **change))
    with pytest.raises(SupernetError, match="not the mbconv space"):
        load_supernet(_checkpoint(net), kind="mbconv")
    shapes = dict(net.state_dict())
    shapes["stem.0.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(SupernetError, match=r"stem\.0\.weight"):
        load_supernet(_checkpoint(net, state_dict=shapes))


def test_evaluator_scores_held_out_images_without_changing_weights() -> None:
    net = _net()
    train_supernet(net, _data(128), TrainSettings(epochs=1, batch_size=32), seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    ev = SupernetEvaluator(net, _data(256, seed=1), _data(64, seed=2), bn_images=96, batch_size=32)
    a = _archs(1)[0]
    r1, r2 = ev.evaluate(a), ev.evaluate(a)
    assert r1.acc is not None and 0 <= r1.acc <= 1 and r1.acc == r2.acc  # recalibration makes it path-independent
    assert r1.details["bn_images"] == 96 and r1.details["val_images"] == 64
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in before)
    ev.evaluate(_archs(1, seed=7)[0])
    assert ev.evaluate(a).acc == r1.acc  # another subnet's statistics do not leak into this one's
    bad = ev.evaluate("not a cell")
    assert bad.acc is None and "NB201 cells" in (bad.failure or "")


# ---- the CLI ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("supernet") / "nb201.pt"
    assert main(["supernet", "train", "--space", "nb201", "--supernet", "C=4,N=1", "--epochs", "1",
                 "--batch-size", "256", "-o", str(out)]) == 0
    return out


CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.xdist_group("supernet-cli")
def test_cli_train_info_eval(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["supernet", "info", str(trained)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["space"] == "nb201" and info["supernet"] == {"C": 4, "N": 1} and info["progress"]["finished"]
    assert info["data"]["val_size"] == 1000 and info["data"]["train_images"] == 5000
    assert main(["supernet", "eval", str(trained), "--arch", CELL, "--sample", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["arch"] == CELL and len(out["results"]) == 3
    assert all(0 <= r["acc"] <= 1 for r in out["results"]) and out["val_images"] == 1000


@pytest.mark.xdist_group("supernet-cli")
def test_cli_refuses_in_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a pickle at all")
    other = tmp_path / "other.pt"
    ckpt = torch.load(trained, weights_only=True)
    ckpt["space"] = {"kind": "mbconv", "config": None}
    torch.save(ckpt, other)
    cases = [
        (["supernet", "eval", str(junk), "--sample", "1"], "cannot load supernet checkpoint"),
        (["supernet", "eval", str(tmp_path / "none.pt"), "--sample", "1"], "not found"),
        (["supernet", "eval", str(trained), "--arch", "ir_r1_k3_s1_e1_c16"], "--arch"),
        (["supernet", "eval", str(trained)], "--sample"),
        (["supernet", "train", "--space", "nb201", "-o", str(trained)], "already exists"),
        (["supernet", "train", "--space", "nb201", "--supernet", "C=x", "-o", str(tmp_path / "a.pt")], "number"),
        (["supernet", "train", "--space", "nb201", "--supernet", "depth=3", "-o", str(tmp_path / "a.pt")],
         "--supernet"),
        (["search", "--space", "nb201", "--evaluator", f"supernet:{trained}", "--benchmark", "nb201:cifar10"],
         "give one"),
        (["search", "--space", "mbconv", "--evaluator", f"supernet:{trained}", "--run-dir", str(tmp_path)],
         "not the mbconv space"),
        (["search", "--space", "nb201", "--evaluator", "supernet:", "--run-dir", str(tmp_path)], "PATH"),
    ]
    for argv, match in cases:
        capsys.readouterr()
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        assert rc == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 or "embedded" in err[0], err
        assert match in err[-1] and err[-1].startswith("hwnas"), (argv, err)
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.xdist_group("supernet-cli")
def test_search_over_the_supernet(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--space", "nb201", "--evaluator", f"supernet:{trained}", "--strategy", "evolution",
            "--trials", "5", "--run-dir", str(tmp_path), "--study-name", "sn"]
    assert main(argv) == 0
    out = json.loads((tmp_path / "sn" / "pareto.json").read_text())
    assert out["evaluated"] == 5 and out["failed"] == 0
    assert out["pareto"] and all(0 <= r["acc"] <= 1 for r in out["pareto"])
    capsys.readouterr()
    torch.save({**torch.load(trained, weights_only=True), "seed": 1}, tmp_path / "changed.pt")
    assert main([*argv[:4], f"supernet:{tmp_path / 'changed.pt'}", *argv[5:], "--resume"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_interrupted_cli_training_resumes(tmp_path: Path) -> None:
    """SIGINT mid-training: the checkpoint is written at the step boundary and --resume finishes it."""
    out = tmp_path / "s.pt"
    cmd = [sys.executable, "-m", "hwnas", "supernet", "train", "--space", "nb201", "--supernet", "C=4,N=1",
           "--epochs", "4", "--batch-size", "256", "-o", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline:  # the first epoch's checkpoint
        time.sleep(0.2)
    proc.send_signal(2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    ckpt = torch.load(out, weights_only=True)
    assert not ckpt["progress"]["finished"] and 0 < ckpt["progress"]["step"] < ckpt["progress"]["total_steps"]
    assert not list(tmp_path.glob(".*.tmp"))
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert torch.load(out, weights_only=True)["progress"]["finished"]


_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                       max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(["format", "version", "space", "supernet", "num_classes", "input_size",
                                                "data", "train", "progress", "state_dict", "seed", "other"]),
                               _values, min_size=1, max_size=3),
       drop=st.sets(st.sampled_from(["space", "supernet", "num_classes", "state_dict", "progress"]), max_size=2))
def test_hostile_checkpoints_are_refused_in_one_line(changes: dict, drop: set) -> None:
    """Whatever a checkpoint's fields hold, load_supernet loads it or raises a one-line SupernetError."""
    ckpt = _checkpoint(_HOSTILE_NET, **changes)
    for key in drop:
        ckpt.pop(key, None)
    try:
        load_supernet(ckpt)
    except SupernetError as e:
        assert str(e) and "\n" not in str(e)


_HOSTILE_NET = build_supernet(SPACE, 10, 32, {"C": 2, "N": 1})
