"""The data cache (one decoded .npz per source, `hwnas cache info|clear`) and the evaluator pool's temporary
files (removed at the next start when their process is gone)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_usage_error, hwnas, hwnas_here
from hwnas.data import POOL_PREFIX, pool_dir_prefix, pool_dirs, remove_stale_pool_dirs


def _toy_archive(tmp_path: Path, name: str = "toy") -> Path:
    from PIL import Image

    root = tmp_path / f"{name}-tree"
    for split in ("train", "test"):
        for k, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 50 * k + i, np.uint8)).save(root / split / cls / f"{i}.png")
    out = tmp_path / f"{name}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname=name)
    return out


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid  # reaped: no process has it (until reused, which the start time in a name would tell)


def _info(cache: Path) -> dict:  # type: ignore[type-arg]
    r = hwnas("cache", "info", "--json", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_info_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    stale = tmp_path / "tmp" / f"{POOL_PREFIX}{_dead_pid()}-123-abcd"
    stale.mkdir()
    (stale / "data.npy").write_bytes(b"x" * 1000)
    cache = tmp_path / "cache"
    r = hwnas("data", "prepare", "--data-dir", str(_toy_archive(tmp_path)), "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    info = _info(cache)
    assert info["location"] == str(cache) and info["is_hwnas_cache"] is True
    [entry] = [e for e in info["entries"] if e["kind"] != "hash index"]
    assert entry["kind"] == "archive" and entry["name"].startswith("toy-") and entry["name"].endswith("-native.npz")
    assert entry["size"] == (cache / entry["name"]).stat().st_blocks * 512 and entry["classes"] == 2
    assert "toy.tar.gz" in entry["source"] and (entry["train"], entry["test"], entry["resolution"]) == (4, 4, 8)
    assert info["total_size"] >= entry["size"]
    assert [d["path"] for d in info["stale_temp"]] == [str(stale)]
    text = hwnas("cache", "info", "--cache-dir", str(cache))
    assert text.returncode == 0 and str(cache) in text.stdout and entry["name"] in text.stdout
    assert "safe to delete" in text.stdout and str(stale) in text.stdout
    r = hwnas("cache", "clear", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    assert "freed" in r.stdout and not stale.exists()
    assert _info(cache)["entries"] == [] and sorted(p.name for p in cache.iterdir()) == [".hwnas-cache"]
    r = hwnas("data", "prepare", "--data-dir", str(_toy_archive(tmp_path, "again")), "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr


def test_the_cache_location_is_the_one_the_data_commands_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    info = _info_env()
    assert info["location"] == str(tmp_path / "env") and info["exists"] is False and info["entries"] == []
    r = hwnas("cache", "clear")
    assert r.returncode == 0 and "nothing to clear" in r.stdout, (r.stdout, r.stderr)


def _info_env() -> dict:  # type: ignore[type-arg]
    r = hwnas("cache", "info", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_clear_refuses_a_folder_that_is_not_an_hwnas_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (mine / "photos" / "x.npz").write_bytes(b"keep")
    assert_usage_error(hwnas_here("cache", "clear", "--cache-dir", str(mine)), "does not look like an hwnas cache")
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "photos" / "x.npz").exists()
    assert _info(mine)["is_hwnas_cache"] is False


def test_clear_deletes_only_hwnas_entries_and_the_old_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    cache = tmp_path / "cache"
    old = cache / "cifar10-mini-0123456789"  # an archive unpacked by an older hwnas, with its decoding
    (old / "cifar10-mini" / "train" / "cat").mkdir(parents=True)
    (old / "cifar10-mini" / "train" / "cat" / "1.jpg").write_bytes(b"j" * 100)
    (old / ".complete").write_text("ok\n")
    (old / "cifar10-mini-native.npz").write_bytes(b"n" * 100)
    (cache / "ds-0123456789-abcdef0123-r32.npz").write_bytes(b"f" * 10)  # a folder's decoding
    info = _info(cache)
    assert info["is_hwnas_cache"] is True  # nothing but hwnas's entries: an old cache, without the marker
    kinds = {e["name"]: e["kind"] for e in info["entries"]}
    assert kinds == {"cifar10-mini-0123456789": "old unpacked archive", "ds-0123456789-abcdef0123-r32.npz": "folder"}
    (cache / ".hwnas-cache").write_text("hwnas data cache\n")
    (cache / "mine.txt").write_text("not hwnas's")
    (cache / "project").mkdir()
    r = hwnas("cache", "clear", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in cache.iterdir()) == [".hwnas-cache", "mine.txt", "project"]
    assert "mine.txt" in r.stdout  # said to be kept


def test_an_interrupted_clear_leaves_nothing_that_breaks_a_load(tmp_path: Path) -> None:
    """Folders are renamed out of the way (one atomic step) before they are deleted; files are unlinked."""
    from hwnas.data import clear_cache, load_dataset

    cache = tmp_path / "cache"
    archive = _toy_archive(tmp_path)
    first = load_dataset(archive, "toy", cache)
    half = cache / ".hwnas-trash-0123456789"  # what a clear killed while deleting a folder leaves
    (half / "toy" / "train").mkdir(parents=True)
    (cache / ".toy-0123456789abcdef-native.npz.99999999-1.tmp").write_bytes(b"half-written")  # a killed save
    again = load_dataset(archive, "toy", cache)
    assert np.array_equal(again.train_x, first.train_x)
    freed, removed, kept = clear_cache(cache)
    assert freed > 0 and removed == 4 and kept == [] and sorted(p.name for p in cache.iterdir()) == [".hwnas-cache"]
    assert load_dataset(archive, "toy", cache).train_x.shape == first.train_x.shape


# ---- the evaluator pool's temporary folders ----------------------------------------------------------------
def test_temporary_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{POOL_PREFIX}{_dead_pid()}-5-x1"
    reused = tmp_path / f"{pool_dir_prefix().rsplit('-', 2)[0]}-1-x2"  # a live pid with another start time
    live = tmp_path / f"{pool_dir_prefix()}x3"
    legacy = tmp_path / f"{POOL_PREFIX}k2j3h4g5"  # an older hwnas: owner unknown, kept by the automatic clean-up
    other = tmp_path / "hwnas-poolish"
    for d in (dead, reused, live, legacy, other):
        d.mkdir()
        (d / "data.npy").write_bytes(b"x" * 10)
    assert live.name.startswith(f"{POOL_PREFIX}{os.getpid()}-")
    states = {p.name: s for p, s in pool_dirs(tmp_path)}
    assert states == {dead.name: "dead", reused.name: "dead", live.name: "live", legacy.name: "unknown"}
    assert remove_stale_pool_dirs(tmp_path) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, legacy.name, other.name])


def test_a_new_pool_removes_stale_folders_and_its_own_on_failure(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import hwnas.evaluators.training as training

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"{POOL_PREFIX}{_dead_pid()}-5-x1"
    stale.mkdir()
    (stale / "data.npy").write_bytes(b"x" * 10)

    written: list[Path] = []

    def full(f: object, *a: object, **k: object) -> None:
        written.append(Path(f.name))  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training.np, "save", full)
    x, y = np.zeros((8, 8, 8, 3), np.uint8), np.arange(8) % 2
    with pytest.raises(training.EvaluatorError, match="cannot write the data for the evaluator processes"):
        training.EvaluatorPool((x, y), (x, y), 2, training.Budget(epochs=1), training.Recipe(batch_size=4), "cpu")
    assert written[0].parent.name.startswith(pool_dir_prefix())  # named after its owner
    assert list(tmp_path.iterdir()) == []  # the stale folder, and the new pool's own half-written one, are gone
