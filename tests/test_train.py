"""Proxy training on real CIFAR-10 images (CPU): contract, determinism, failures, the CLI."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import hwnas, hwnas_here
from hwnas.data import load_dataset
from hwnas.genotype import Genotype, parse_genotype
from hwnas.model import build_model
from hwnas.train import Budget, DeviceData, Evaluator, EvaluatorError, EvaluatorPool, Metrics, Recipe, TrainState

EMBEDDED = Path(__file__).resolve().parents[1] / "hwnas" / "datasets" / "cifar10-mini.tar.xz"
TINY = parse_genotype("relu,stem16,ds_r1_k3_s1_c16,ir_r1_k3_s2_e3_c24,ir_r1_k3_s2_e3_c40,head128")
TINY2 = parse_genotype("swish,stem16,ds_r1_k5_s1_c16_se0.25,ir_r2_k3_s2_e4_c32,head128")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_dataset(EMBEDDED, "cifar10", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def small(data):  # type: ignore[no-untyped-def]
    tx, ty, vx, vy = data.split_validation(200)
    return (tx[:640], ty[:640]), (vx, vy)


def make(small, budget: Budget | None = None, **recipe) -> Evaluator:  # type: ignore[no-untyped-def]
    r = Recipe(batch_size=64, **recipe)
    return Evaluator(small[0], small[1], 10, budget or Budget(epochs=1), r, "cpu")


def test_metrics_contract(small) -> None:  # type: ignore[no-untyped-def]
    m = make(small).evaluate(TINY, seed=0)
    assert m.ok and m.failure is None
    assert 0.0 <= m.val_acc <= 1.0
    assert m.steps == 10 and m.epochs == 1.0 and m.train_seconds > 0 and m.images_per_s > 0
    assert m.final_loss is not None and np.isfinite(m.final_loss)
    assert m.genotype == TINY.to_string() and m.device == "cpu"


def test_same_seed_same_result_other_seed_differs(small) -> None:  # type: ignore[no-untyped-def]
    ev = make(small)
    a, b, c = ev.evaluate(TINY, 1), ev.evaluate(TINY, 1), ev.evaluate(TINY, 2)
    assert (a.val_acc, a.final_loss) == (b.val_acc, b.final_loss)
    assert a.final_loss != c.final_loss


def test_evaluation_batches_cover_every_image_once(small) -> None:  # type: ignore[no-untyped-def]
    # 200 held-out images in batches of 64 (the last overlaps), of 7, and in one batch: the same accuracy
    accs = {eb: make(small, eval_batch_size=eb).evaluate(TINY, 3).val_acc for eb in (None, 7, 1000)}
    assert len(set(accs.values())) == 1, accs
    assert 0 < accs[None] < 1


def test_training_learns_on_real_images(data) -> None:  # type: ignore[no-untyped-def]
    tx, ty, vx, vy = data.split_validation(500)
    ev = Evaluator((tx[:2000], ty[:2000]), (vx, vy), 10, Budget(epochs=3), Recipe(batch_size=64), "cpu")
    m = ev.evaluate(TINY, 0)
    assert m.val_acc > 0.25, m  # chance is 0.10


def test_non_finite_loss_is_a_failed_candidate_not_an_exception(small) -> None:  # type: ignore[no-untyped-def]
    ev = make(small, lr=1e12)
    out = ev.evaluate_many([TINY, TINY2], 0)
    assert all(m.failure and m.failure.startswith("non-finite loss") for m in out)
    assert all(m.val_acc is None for m in out)
    fine = make(small).evaluate(TINY, 0)  # the evaluator keeps working
    assert fine.ok


def test_seconds_budget(small) -> None:  # type: ignore[no-untyped-def]
    m = make(small, Budget(seconds=1.0)).evaluate(TINY, 0)
    assert m.ok and m.steps >= 1 and m.train_seconds < 10


def test_trained_model_is_handed_over(small) -> None:  # type: ignore[no-untyped-def]
    got: list[tuple[int, torch.nn.Module]] = []
    ms = make(small).evaluate_many([TINY, TINY2], 0, on_trained=lambda i, model, m: got.append((i, model)))
    assert [i for i, _ in got] == [0, 1] and all(m.ok for m in ms)
    assert not got[0][1].training


def test_interrupted_training_hands_over_the_weights_trained_so_far(small) -> None:  # type: ignore[no-untyped-def]
    ev = make(small)
    init = {k: v.clone() for k, v in build_model(TINY2, 10, input_size=32).state_dict().items()}
    got: list[tuple[int, torch.nn.Module, object]] = []

    calls = []

    def stop_in_the_second(step: int, total: int) -> None:  # on CPU candidates train one after another
        calls.append(step)
        if len(calls) == total + 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_many([TINY, TINY2], 0, progress=stop_in_the_second,
                         on_interrupt=lambda i, model, m, st: got.append((i, model, m)))
    assert [i for i, *_ in got] == [1]  # the index in the list given, not in the group
    m = got[0][2]
    assert m.failure == "interrupted after step 4 of 10" and m.steps == 4 and m.val_acc is None  # type: ignore[attr-defined]
    trained = got[0][1].state_dict()
    assert any(not torch.equal(trained[k], init[k]) for k in init if k.endswith("weight"))


def _train_to_the_end(ev: Evaluator, resume: TrainState | None = None):  # type: ignore[no-untyped-def]
    got: list[dict[str, torch.Tensor]] = []
    m = ev.evaluate_many([TINY2], 5, on_trained=lambda i, model, m: got.append(copy.deepcopy(model.state_dict())),
                         resume=resume)[0]
    return m, got[0]


def _interrupted_at(ev: Evaluator, g: Genotype, seed: int, at: int):  # type: ignore[no-untyped-def]
    """Train ``g`` and stop it as Ctrl-C would after step ``at``: (model so far, metrics, resume state)."""

    def stop(step: int, total: int) -> None:
        if step == at:
            raise KeyboardInterrupt

    got: list[tuple[torch.nn.Module, Metrics, TrainState | None]] = []
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_many([g], seed, progress=stop, on_interrupt=lambda i, model, m, st: got.append((model, m, st)))
    return got[0]


def _round_trip(state: TrainState, model: torch.nn.Module, tmp_path: Path) -> TrainState:
    """As ``hwnas train`` saves and ``--resume`` reads it (weights_only)."""
    torch.save({"resume": state.to_dict(), "state_dict": model.state_dict()}, tmp_path / "ck.pt")
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    return TrainState.from_dict(ck["resume"], ck["state_dict"])


@pytest.mark.parametrize("stop_at", [7, 10])  # inside the first epoch's batches, and at the end of its last
def test_a_resumed_training_is_the_uninterrupted_one(small, tmp_path: Path, stop_at: int) -> None:  # type: ignore[no-untyped-def]
    ev = make(small, Budget(epochs=2), dropout=0.3, drop_path=0.2)  # dropout: the global generator is resumed too
    whole, want = _train_to_the_end(ev)
    assert whole.ok and whole.steps == 20

    model, m, state = _interrupted_at(ev, TINY2, 5, stop_at)
    assert state is not None and state.step == stop_at == m.steps and state.total == 20
    torch.manual_seed(123)  # whatever ran in between
    done, weights = _train_to_the_end(ev, _round_trip(state, model, tmp_path))
    assert done.ok and done.steps == 20 and done.extra["resumed_at_step"] == stop_at
    assert all(torch.equal(weights[k], want[k]) for k in want)
    assert (done.val_acc, done.final_loss) == (whole.val_acc, whole.final_loss)


def test_a_signal_waits_for_the_step_under_way(small, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal

    import hwnas.train as train_module

    forwards = []

    def build_and_signal_in_the_5th_forward(*a, **kw):  # type: ignore[no-untyped-def]
        model = build_model(*a, **kw)

        def hook(*_):  # type: ignore[no-untyped-def]
            forwards.append(1)
            if len(forwards) == 5:  # the 5th training step, between its forward and backward
                os.kill(os.getpid(), signal.SIGINT)

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train_module, "build_model", build_and_signal_in_the_5th_forward)
    # the disposition this test relies on, whatever it inherited: a job started in the background (`cmd &`,
    # nohup) has SIGINT ignored, and an ignored signal is left alone by the evaluator (as pool workers need)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ev = make(small, Budget(epochs=1))
    got: list[tuple[torch.nn.Module, TrainState | None]] = []
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_many([TINY2], 5, on_interrupt=lambda i, model, m, st: got.append((model, st)))
    model, state = got[0]
    assert state is not None and state.step == 5  # the step was finished, then the interrupt came
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    done, weights = _train_to_the_end(ev, _round_trip(state, model, tmp_path))
    whole, want = _train_to_the_end(ev)
    assert done.steps == whole.steps == 10 and all(torch.equal(weights[k], want[k]) for k in want)


def test_resume_refuses_another_setting_and_a_damaged_state(small) -> None:  # type: ignore[no-untyped-def]
    ev = make(small, Budget(epochs=2))
    model, _, state = _interrupted_at(ev, TINY, 1, 3)
    assert state is not None
    with pytest.raises(ValueError, match=r"had recipe lr = 0\.2, this run has 0\.4"):
        make(small, Budget(epochs=2), lr=0.4).check_resume(state, 1)
    with pytest.raises(ValueError, match="had budget epochs = 2"):
        make(small, Budget(epochs=3)).check_resume(state, 1)
    with pytest.raises(ValueError, match="had seed = 1, this run has 2"):
        ev.check_resume(state, 2)
    with pytest.raises(ValueError, match="perm orders 5 images, not 640"):
        ev.check_resume(TrainState.from_dict({**state.to_dict(), "perm": torch.arange(5)}, {}), 1)
    with pytest.raises(ValueError, match="step 13 lies beyond the epoch begun at step 0"):
        ev.check_resume(TrainState.from_dict({**state.to_dict(), "step": 13, "perm": None}, {}), 1)
    with pytest.raises(ValueError, match="one network at a time"):
        ev.evaluate_many([TINY, TINY2], 1, resume=state)
    d = state.to_dict()
    for key, value, fragment in [("step", "3", "step must be a count"), ("step", 99, "step 99 is not between"),
                                 ("perm", torch.zeros(3), "perm must be an int64 vector"),
                                 ("momentum", [1], "momentum must be a mapping")]:
        with pytest.raises(ValueError, match=fragment):
            TrainState.from_dict({**d, key: value}, {})
    with pytest.raises(ValueError, match="lacks settings"):
        TrainState.from_dict({k: v for k, v in d.items() if k != "settings"}, {})
    other = TrainState.from_dict({**d, "momentum": {"x": torch.zeros(1)}}, model.state_dict())
    m = ev.evaluate_many([TINY], 1, resume=other)[0]  # the weights fit, the momentum does not: a failed build
    assert m.failure is not None and "momentum does not fit this network" in m.failure


def test_augmentation_shapes_and_identity(data) -> None:  # type: ignore[no-untyped-def]
    dev = torch.device("cpu")
    padded = DeviceData(data.train_x[:32], data.train_y[:32], dev, pad=4)
    plain = DeviceData(data.train_x[:32], data.train_y[:32], dev, pad=0)
    g = torch.Generator().manual_seed(0)
    x = padded.augmented(torch.arange(32), g, flip=True)
    assert x.shape == (32, 3, 32, 32)
    assert torch.equal(padded.plain(0, 32), plain.plain(0, 32))
    assert torch.equal(plain.augmented(torch.arange(32), g, flip=False), plain.plain(0, 32))
    flipped = torch.allclose(x, padded.plain(0, 32)) is False
    assert flipped


def test_budget_and_recipe_validation() -> None:
    with pytest.raises(ValueError, match="either epochs or seconds"):
        Budget()
    with pytest.raises(ValueError, match="positive"):
        Budget(epochs=0)
    with pytest.raises(ValueError, match="invalid recipe"):
        Recipe(batch_size=0)
    with pytest.raises(ValueError, match="unknown training precision 'fp16'"):
        Recipe(precision="fp16")


def test_precision_resolves_per_device() -> None:
    cpu = torch.device("cpu")
    assert all(Recipe(precision=p).autocast_dtype(cpu) is None for p in ("auto", "bf16", "fp32"))
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        assert Recipe(precision="fp32").autocast_dtype(gpu) is None
        assert Recipe().autocast_dtype(gpu) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)


def test_train_cli_checkpoint_round_trip(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    ck = tmp_path / "ck.pt"
    env_cache = ["--cache-dir", str(tmp_path / "cache")]
    r = hwnas("train", TINY.to_string(), "--epochs", "1", "--batch-size", "64", "--device", "cpu", "-o", str(ck),
              "--json", *env_cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["held_out"] == "test" and 0 <= out["test_acc"] <= 1 and out["checkpoint"] == str(ck)
    assert "embedded CIFAR-10 subset" in r.stderr
    c = torch.load(ck, weights_only=True)
    model = build_model(Genotype.from_dict(c["genotype"]), c["num_classes"], input_size=c["input_size"])
    model.load_state_dict(c["state_dict"])
    ev = DeviceData(data.test_x, data.test_y, torch.device("cpu"))
    with torch.no_grad():
        correct = int((model.eval()(ev.plain(0, len(ev))).argmax(1) == ev.y).sum())
    assert correct / len(ev) == out["test_acc"]
    assert out["test_acc"] > 0.12  # it learned something in one epoch


def test_train_cli_saves_the_weights_when_interrupted(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import signal

    from rich.progress import Progress

    from hwnas.cli import main

    update = Progress.update

    def interrupt_at_step_3(self, task, **kw):  # type: ignore[no-untyped-def]
        update(self, task, **kw)
        if kw.get("completed") == 3 and kw.get("total"):  # as Ctrl-C would, in the training loop
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "update", interrupt_at_step_3)
    ck = tmp_path / "ck.pt"
    term = signal.getsignal(signal.SIGTERM)
    try:
        rc = main(["train", TINY.to_string(), "--epochs", "2", "--batch-size", "64", "--device", "cpu", "-o",
                   str(ck)])
    finally:
        signal.signal(signal.SIGTERM, term)
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted after step 3 of 156" in err and f"saved to {ck}" in err, err
    c = torch.load(ck, weights_only=True)
    assert c["interrupted"] is True and c["metrics"]["steps"] == 3 and c["metrics"]["val_acc"] is None
    build_model(Genotype.from_dict(c["genotype"]), c["num_classes"], input_size=c["input_size"]).load_state_dict(
        c["state_dict"])


def test_train_cli_resumes_an_interrupted_training(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import signal

    from rich.progress import Progress

    from hwnas.cli import main

    update = Progress.update

    def interrupt_at_step_5(self, task, **kw):  # type: ignore[no-untyped-def]
        update(self, task, **kw)
        if kw.get("completed") == 5 and kw.get("total"):
            raise KeyboardInterrupt

    ck, whole = tmp_path / "ck.pt", tmp_path / "whole.pt"
    common = ["--epochs", "0.3", "--batch-size", "64", "--device", "cpu"]
    term = signal.getsignal(signal.SIGTERM)
    try:
        with monkeypatch.context() as mp:
            mp.setattr(Progress, "update", interrupt_at_step_5)
            assert main(["train", TINY.to_string(), *common, "-o", str(ck)]) == 130
        err = capsys.readouterr().err
        assert f"continue it with the same command and --resume {ck}" in err, err
        interrupted = torch.load(ck, weights_only=True)
        assert interrupted["interrupted"] is True and interrupted["resume"]["step"] == 5

        def refused(args: list[str], fragment: str) -> None:
            assert main(["train", *args]) == 2
            err = capsys.readouterr().err
            assert f"hwnas: error: --resume {ck}: {fragment}" in err and len(err.splitlines()) == 1, err

        refused([TINY.to_string(), *common, "--lr", "0.4", "--resume", str(ck)],
                "the interrupted training had recipe lr = 0.2, this run has 0.4")
        refused([TINY2.to_string(), *common, "--resume", str(ck)], f"the checkpoint trained {TINY.to_string()}")
        damaged = tmp_path / "damaged.pt"
        torch.save({**interrupted, "resume": {**interrupted["resume"], "step": "5"}}, damaged)
        assert main(["train", TINY.to_string(), *common, "--resume", str(damaged)]) == 2
        assert "resume state: step must be a count, got str" in capsys.readouterr().err

        assert main(["train", TINY.to_string(), *common, "--resume", str(ck), "--json"]) == 0  # -o: ck itself
        resumed = json.loads(capsys.readouterr().out)
        assert main(["train", TINY.to_string(), *common, "-o", str(whole), "--json"]) == 0
        uninterrupted = json.loads(capsys.readouterr().out)
    finally:
        signal.signal(signal.SIGTERM, term)
    assert resumed["steps"] == uninterrupted["steps"] == 23 and resumed["extra"]["resumed_at_step"] == 5
    assert resumed["test_acc"] == uninterrupted["test_acc"] and resumed["final_loss"] == uninterrupted["final_loss"]
    a, b = torch.load(ck, weights_only=True), torch.load(whole, weights_only=True)
    assert a["interrupted"] is False and "resume" not in a
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    refused([TINY.to_string(), *common, "--resume", str(ck)], "not an interrupted training")


def test_train_cli_refuses_to_overwrite_a_checkpoint_without_force(tmp_path: Path) -> None:
    import os

    from conftest import assert_usage_error

    ck, other = tmp_path / "ck.pt", tmp_path / "other.pt"
    ck.write_bytes(b"a finished training")
    other.write_bytes(b"an interrupted one")
    common = [TINY.to_string(), "--epochs", "0.05", "--batch-size", "64", "--device", "cpu", "--cache-dir",
              str(tmp_path / "cache")]  # its own cache: that none is made shows the refusal came before any work
    assert_usage_error(hwnas_here("train", *common, "-o", str(ck)), f"-o {ck} already exists")
    assert_usage_error(hwnas_here("train", *common, "--resume", str(other), "-o", str(ck)),
                                  "pass --force to replace it")
    assert ck.read_bytes() == b"a finished training" and other.read_bytes() == b"an interrupted one"
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "other.pt"]  # refused before any work (no data cache)
    r = hwnas("train", *common, "-o", str(ck), "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checkpoint"] == str(ck)
    assert torch.load(ck, weights_only=True)["interrupted"] is False
    assert sorted(os.listdir(tmp_path)) == ["cache", "ck.pt", "other.pt"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "mobilenetv2", "--data-dir", "/no/such/dir"], "data not found: /no/such/dir"),
        (["train", "mobilenetv2", "--epochs", "-1"], "expected a positive number"),
        (["train", "mobilenetv2", "--epochs", "1", "--seconds", "3"], "not allowed with argument"),
        (["train", "nonsense-net"], "unknown architecture"),
        (["train", "mobilenetv2", "--precision", "fp16"], "invalid choice: 'fp16'"),
        (["train", "mobilenetv2", "--dropout", "5"], "expected a number in [0, 1), got '5'"),
        (["train", "mobilenetv2", "--drop-path", "nan"], "expected a number in [0, 1), got 'nan'"),
        (["train", "mobilenetv2", "--val-size", "999999"], "validation size 999999 must be between 1 and 4999"),
    ],
)
def test_train_cli_bad_input(args: list[str], fragment: str) -> None:
    r = hwnas(*args)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # no note about the embedded data before the error


class _DiesWhenUnpickled:
    """An evaluator process's set-up that ends it (exit code 3) while it loads, as the OOM killer might."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        import os

        return os._exit, (3,)


def test_evaluator_pool_deals_candidates_out_and_survives_a_dead_process(small) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal
    import time

    with pytest.raises(ValueError, match="fewer than one batch"):  # a bad setting surfaces at construction
        EvaluatorPool(small[0], small[1], 10, Budget(epochs=1), Recipe(batch_size=4096), "cpu", processes=2)
    pool = EvaluatorPool(small[0], small[1], 10, Budget(epochs=1), Recipe(batch_size=64), "cpu", processes=2,
                         group=1)
    data_dir = Path(pool._data_dir.name)
    try:
        # the data travel as a file: a spawned process's pickled arguments are read only after it imported torch
        assert len(pickle.dumps(pool._args)) < 10_000 and data_dir.is_dir()
        ms = pool.evaluate_many([TINY, TINY2, TINY], seed=0)
        assert [m.genotype for m in ms] == [g.to_string() for g in (TINY, TINY2, TINY)]  # in order
        assert all(m.ok and 0 <= m.val_acc <= 1 and m.steps == 10 for m in ms)
        assert (ms[0].val_acc, ms[0].final_loss) == (ms[2].val_acc, ms[2].final_loss)  # wherever it trained
        victim = next(iter(pool._procs.values()))[0]
        os.kill(victim.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        victim.join(timeout=30)
        ms = pool.evaluate_many([TINY, TINY2], seed=0)
        dead = [m for m in ms if not m.ok]
        assert [m.failure for m in dead] == ["evaluator process died (exit code -9)"]  # its candidate, not the study
        assert [m.ok for m in ms].count(True) == 1
        t0 = time.monotonic()
        assert pool.evaluate(TINY2, seed=0).ok and pool.processes == 2  # replaced, and the pool goes on
        assert time.monotonic() - t0 < 120
        pool.wait_ready()  # the replacement may still be loading (the other process served TINY2): killed so, it
        # would die "while loading" with -9 before the replacements below could die with their 3
        for p, *_ in list(pool._procs.values()):  # both die, and their replacements die while loading (before
            os.kill(p.pid, signal.SIGKILL)          # they are ready): not replaced again, the pool gives up
            p.join(timeout=30)
        pool._args = (_DiesWhenUnpickled(),)

        def hung(*_: object) -> None:
            raise TimeoutError("replacements that die while loading were replaced for ever")

        signal.signal(signal.SIGALRM, hung)
        signal.alarm(120)
        try:
            with pytest.raises(EvaluatorError, match=r"died \(exit code 3\) while loading its data"):
                for _ in range(2):  # this call or the next
                    pool.evaluate_many([TINY, TINY2], seed=0)
        finally:
            signal.alarm(0)
    finally:
        pool.close()
    assert pool.processes == 0 and not data_dir.exists()


def test_evaluator_pool_reports_a_temporary_folder_it_cannot_write(small, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(EvaluatorError, match="cannot write the data for the evaluator processes"):
        EvaluatorPool(small[0], small[1], 10, Budget(epochs=1), Recipe(batch_size=64), "cpu", processes=2)


@pytest.mark.gpu
def test_evaluator_pool_on_cuda(small) -> None:  # type: ignore[no-untyped-def]
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pool = EvaluatorPool(small[0], small[1], 10, Budget(epochs=2), Recipe(batch_size=64), "cuda", processes=2)
    try:
        ms = pool.evaluate_many([TINY, TINY2, TINY, TINY2], 0)
        assert all(m.ok and 0 <= m.val_acc <= 1 for m in ms)
        assert [m.extra["group_size"] for m in ms] == [2, 2, 2, 2]  # two groups of two, one per process
    finally:
        pool.close()


@pytest.mark.gpu
def test_cuda_graphs_and_concurrent_candidates(small) -> None:  # type: ignore[no-untyped-def]
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ev = Evaluator(small[0], small[1], 10, Budget(epochs=2), Recipe(batch_size=64), "cuda", concurrency=2)
    ms = ev.evaluate_many([TINY, TINY2, TINY], 0)
    assert all(m.ok and 0 <= m.val_acc <= 1 for m in ms)
    assert ms[0].extra["group_size"] == 2 and ms[2].extra["group_size"] == 1
    solo = Evaluator(small[0], small[1], 10, Budget(epochs=2), Recipe(batch_size=64), "cuda", concurrency=1)
    assert solo.evaluate(TINY, 0).val_acc == pytest.approx(ms[0].val_acc, abs=0.05)


@pytest.mark.gpu
def test_cuda_resume_continues_the_captured_training(small, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On CUDA the momentum is loaded into the buffers the captured graph reads (in place), after the capture."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ev = Evaluator(small[0], small[1], 10, Budget(epochs=2), Recipe(batch_size=64, precision="fp32"), "cuda",
                   concurrency=1)
    whole = ev.evaluate(TINY2, 5)
    model, _, state = _interrupted_at(ev, TINY2, 5, 7)
    assert state is not None and state.generator.device.type == "cpu"
    done = ev.evaluate_many([TINY2], 5, resume=_round_trip(state, model, tmp_path))[0]
    assert done.ok and done.steps == whole.steps == 20 and done.extra["resumed_at_step"] == 7
    assert done.final_loss == pytest.approx(whole.final_loss, rel=0.02)  # the same batches and schedule


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_steps_like_torch_optim_sgd(nesterov: bool) -> None:
    """The graph-safe foreach SGD takes the same steps as torch.optim.SGD (decay on weights only)."""
    from hwnas.train import _SGD

    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    ref = copy.deepcopy(ours)
    recipe = Recipe(momentum=0.9, nesterov=nesterov, weight_decay=5e-4)
    lr = torch.tensor(0.05)
    opt = _SGD(ours, recipe, lr)
    decay = [p for p in ref.parameters() if p.dim() > 1]
    rest = [p for p in ref.parameters() if p.dim() <= 1]
    torch_opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                                lr=0.05, momentum=0.9, nesterov=nesterov)
    for _ in range(6):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        for model, o in ((ours, opt), (ref, torch_opt)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_candidate_that_raises_fails_alone_and_a_broken_device_stops_the_evaluator(small, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import hwnas.train as train

    ev = make(small)
    errors = {"step": RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED\ndetails"),
              "alloc": RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")}
    real_step, real_build, real_accuracy = train._Candidate.step, train.build_model, train._Candidate.accuracy
    failing = {"how": "step"}

    def step(self, x, y, lr):  # type: ignore[no-untyped-def]
        if self.genotype == TINY2:
            raise errors[failing["how"]]
        return real_step(self, x, y, lr)

    monkeypatch.setattr(train._Candidate, "step", step)
    ms = ev.evaluate_many([TINY, TINY2, TINY], 0)
    assert [m.ok for m in ms] == [True, False, True] and ms[0].val_acc == ms[2].val_acc
    assert ms[1].failure == "training failed: RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"
    assert ms[1].val_acc is None
    failing["how"] = "alloc"
    assert ev.evaluate(TINY2, 0).failure == "cuda out of memory"  # as cuBLAS says it
    monkeypatch.setattr(train._Candidate, "step", real_step)

    def build(g, *a, **k):  # type: ignore[no-untyped-def]
        if g == TINY2:
            raise TypeError("unsupported block")
        return real_build(g, *a, **k)

    monkeypatch.setattr(train, "build_model", build)
    assert ev.evaluate(TINY2, 0).failure == "build failed: TypeError: unsupported block"
    monkeypatch.setattr(train, "build_model", real_build)
    monkeypatch.setattr(train._Candidate, "accuracy", lambda self, data, batch: 1 / 0)
    assert ev.evaluate(TINY, 0).failure == "evaluation failed: ZeroDivisionError: division by zero"
    monkeypatch.setattr(train._Candidate, "accuracy", real_accuracy)
    monkeypatch.setattr(DeviceData, "augmented", lambda self, idx, gen, flip: 1 / 0)  # shared by the group
    assert ev.evaluate(TINY, 0).failure == "training failed: ZeroDivisionError: division by zero"
    monkeypatch.undo()
    assert ev.evaluate(TINY, 0).val_acc == ms[0].val_acc  # the evaluator is as good as new
    usable = iter([True, False])  # the device breaks in the second group (e.g. an illegal memory access)
    monkeypatch.setattr(Evaluator, "device_usable", lambda self: next(usable))
    with pytest.raises(EvaluatorError, match="cannot be used any more after a group") as stopped:
        ev.evaluate_many([TINY, TINY2, TINY], 0)
    assert [m.genotype for m in stopped.value.partial] == [TINY.to_string(), TINY2.to_string()]  # kept
    assert stopped.value.partial[0].val_acc == ms[0].val_acc
