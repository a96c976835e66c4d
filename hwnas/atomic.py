"""Atomic output files (no torch, no CLI: every layer may import it).

An output is written to a temporary file with a unique name in the same folder, then renamed over the target
(``os.replace``, atomic on POSIX and Windows). Whatever stops the write -- an error, a full disk, Ctrl-C
(``KeyboardInterrupt``), SIGTERM (raised as one by the CLI) -- the temporary file is removed and the target
keeps its previous content; a reader never sees a half-written file. The new file gets the mode of the file it
replaces, or the one the umask gives a new file (not ``mkstemp``'s 0600).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

Writer = Callable[[IO[bytes]], object]


def _umask() -> int:
    try:  # Linux says it without changing it (changing it, even for an instant, races other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path: Path | str, *, fsync: bool = False, mkdir: bool = True) -> Iterator[Path]:
    """A temporary file (created empty) next to ``path`` for the caller to fill; when the block ends normally
    it replaces ``path``, when anything is raised (``BaseException`` included) it is removed and ``path`` is
    left as it was. ``fsync``: flush it to disk before the rename (survives a power cut, costs a sync).
    ``mkdir``: create the missing parent folders first (removed again, if empty, when the write fails)."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()] if mkdir else []  # deepest first
    if made:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
        tmp = Path(name)
        os.close(fd)
        yield tmp
        os.chmod(tmp, _mode_for(path))
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            _unlink(tmp)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise


def write_atomic(path: Path | str, data: bytes | str | Writer, *, fsync: bool = False, mkdir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see the module): bytes, text (UTF-8), or a callable that writes
    into the binary file object it is given (``torch.save``, ``Figure.savefig(f, format=...)``)."""
    with atomic_path(path, fsync=fsync, mkdir=mkdir) as tmp, open(tmp, "wb") as f:
        if isinstance(data, str):
            f.write(data.encode("utf-8"))
        elif isinstance(data, bytes | bytearray | memoryview):
            f.write(data)
        else:
            data(f)


def write_text_atomic(path: Path | str, text: str, *, fsync: bool = False) -> None:
    """``write_atomic`` of UTF-8 text."""
    write_atomic(path, text, fsync=fsync)


def save_figure(fig: object, path: Path | str, **kwargs: object) -> None:
    """``fig.savefig`` (a matplotlib figure) to ``path`` atomically, in the format its suffix names."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    write_atomic(path, lambda f: fig.savefig(f, format=fmt, **kwargs))  # type: ignore[attr-defined]
