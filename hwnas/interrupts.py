"""Interrupts that wait for the database write under way (no torch).

A search stopped with Ctrl-C or SIGTERM must leave its study whole. Python raises ``KeyboardInterrupt`` wherever
the main thread is when the signal comes: in the middle of a storage call, that can leave a trial RUNNING that was
about to be told, a trial created but not yet named by its worker, or (SQLite) a connection holding the
database's lock with an unfinished statement, on which the next commit waits for ever. So the search loop marks
its bookkeeping as ``deferred()``: an interrupt that arrives there is held until the section ends, then raised.
The long waits inside it -- training a candidate, sleeping while another worker trains -- are
``interruptible()``: an interrupt there is raised at once, as before. A second interrupt is never held (a user
who presses Ctrl-C twice means it).

Only signals handled by ``handler`` are held: the CLI installs it for SIGINT and SIGTERM. Code that embeds hwnas
keeps Python's own SIGINT handling (``KeyboardInterrupt`` at once), unless it installs ``handler`` too.
All of this happens in the main thread, where Python runs signal handlers.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

_depth = 0  # nesting of deferred() sections now running (main thread)
_pending = False  # an interrupt arrived in a deferred section and waits for its end


def handler(signum: int, frame: FrameType | None) -> None:
    """A signal handler: ``KeyboardInterrupt`` now, or at the end of the deferred section running (once)."""
    global _pending
    if _depth and not _pending:
        _pending = True
        return
    _pending = False
    raise KeyboardInterrupt


def install() -> dict[int, object]:
    """Install ``handler`` for SIGINT and SIGTERM (main thread only); returns the handlers it replaced, for
    ``restore``. Elsewhere (a thread) nothing is installed."""
    old: dict[int, object] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            old[sig] = signal.signal(sig, handler)
    return old


def restore(old: dict[int, object]) -> None:
    global _pending
    for sig, h in old.items():
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(sig, h)  # type: ignore[arg-type]
    _pending = False


def _raise_pending() -> None:
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def safe_point() -> None:
    """Raise a held interrupt now: a point of a deferred section where stopping leaves nothing half done."""
    _raise_pending()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section an interrupt does not break: one that arrives in it is raised when the outermost section ends
    (unless an exception is leaving it anyway; the interrupt is then raised by the next section's end)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0:
        _raise_pending()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A long wait inside a deferred section that an interrupt may break at once (a held one is raised now)."""
    global _depth
    saved, _depth = _depth, 0
    try:
        _raise_pending()
        yield
    finally:
        _depth = saved
