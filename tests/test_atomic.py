"""Outputs are written atomically: a failed or interrupted write (or command) leaves the user's existing file as
it was and no temporary file behind -- the helper itself, and the places that write outputs with it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hwnas.genotype import parse_genotype

TINY = parse_genotype("relu,stem16,ds_r1_k3_s1_c16,ir_r1_k3_s2_e3_c24,head64")


def _fail_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)


def test_write_atomic_writes_text_bytes_and_through_a_writer(tmp_path: Path) -> None:
    from hwnas.atomic import write_atomic

    write_atomic(tmp_path / "a" / "t.txt", "héllo\n")
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    write_atomic(tmp_path / "b.bin", lambda f: f.write(b"new"), fsync=True)
    assert (tmp_path / "b.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "t.txt"]


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt(), RuntimeError("x")])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, exc: BaseException) -> None:
    from hwnas.atomic import atomic_path, write_atomic

    out = tmp_path / "out.json"
    out.write_text("old")

    def writer(f: Any) -> None:
        f.write(b"half a fi")
        raise exc

    with pytest.raises(type(exc)):
        write_atomic(out, writer)
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    with pytest.raises(type(exc)), atomic_path(tmp_path / "new" / "folders" / "new.onnx") as tmp:
        tmp.write_bytes(b"partial")
        raise exc
    assert os.listdir(tmp_path) == ["out.json"]  # nor the folders made for it


def test_a_failed_rename_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.atomic import write_atomic

    out = tmp_path / "out.txt"
    out.write_text("old")
    _fail_replace(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        write_atomic(out, "new")
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_new_files_get_the_umask_s_mode_and_replaced_ones_keep_theirs(tmp_path: Path) -> None:
    from hwnas.atomic import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new", "x")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o644  # not mkstemp's 0600
        (tmp_path / "kept").write_text("x")
        (tmp_path / "kept").chmod(0o640)
        write_atomic(tmp_path / "kept", "y")
        assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_cli_write_text_atomic_leaves_no_temp_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.cli.common import write_text_atomic

    out = tmp_path / "table.json"
    out.write_text("old")
    _fail_replace(monkeypatch)
    with pytest.raises(OSError):
        write_text_atomic(out, "new")
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["table.json"]


def test_search_reports_interrupted_mid_plot_keep_the_old_files(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from hwnas.search.problem import Problem
    from hwnas.search.report import write_outputs
    from hwnas.space import SearchSpace

    for name in ("pareto.json", "pareto.csv", "pareto.png", "hypervolume.png"):
        (tmp_path / name).write_bytes(b"old " + name.encode())

    def broken_savefig(self: Any, target: Any, *_: Any, **__: Any) -> None:
        if hasattr(target, "write"):
            target.write(b"\x89PNG half")
        else:
            Path(target).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(KeyboardInterrupt):
        write_outputs([], Problem(SearchSpace.default(), budgets={"flops": 1e8}), tmp_path, {"study": "s"})
    assert (tmp_path / "pareto.png").read_bytes() == b"old pareto.png"
    assert sorted(os.listdir(tmp_path)) == ["hypervolume.png", "pareto.csv", "pareto.json", "pareto.png"]


@pytest.mark.parametrize("how", ["checker", "interrupt", "rename"])
def test_a_failed_export_keeps_the_existing_files_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    how: str) -> None:
    import hwnas.export as ex

    onnx, sidecar = tmp_path / "net.onnx", tmp_path / "net.json"
    onnx.write_bytes(b"a good export")
    sidecar.write_text("{}")
    if how == "checker":
        def reject(*_: Any, **__: Any) -> None:
            raise ex.ExportError("onnx.checker rejected it")

        monkeypatch.setattr(ex, "check_onnx", reject)
    elif how == "interrupt":
        def interrupted(*_: Any, **__: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(ex, "parity", interrupted)
    else:
        _fail_replace(monkeypatch)
    with pytest.raises((ex.ExportError, KeyboardInterrupt, OSError)):
        ex.export_genotype(TINY, onnx, 32, 10, measure=False)
    assert onnx.read_bytes() == b"a good export" and sidecar.read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.onnx"]


def test_export_writes_both_files_and_names_the_user_s_file_in_checker_errors(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx as onnx_lib

    import hwnas.export as ex

    s = ex.export_genotype(TINY, tmp_path / "net.onnx", 32, 10, measure=False)
    assert s["onnx"] == "net.onnx" and (tmp_path / "net.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.onnx"]

    def invalid(*_: Any, **__: Any) -> None:
        raise onnx_lib.checker.ValidationError("bad node")

    monkeypatch.setattr(onnx_lib.checker, "check_model", invalid)
    with pytest.raises(ex.ExportError, match=f"rejected {tmp_path / 'other.onnx'}: bad node"):
        ex.export_genotype(TINY, tmp_path / "other.onnx", 32, 10, measure=False)
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.onnx"]
