"""Processes named for good: ``PID-START`` (the pid and when the process started), so the files and trials of a
process that is gone (killed with -9) are told from those of a live one, even after the kernel reuses its pid.
Used by the data cache and evaluator pools (temporary files) and the search loop (trials of dead workers)."""

from __future__ import annotations

import os
from pathlib import Path


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]  # the command name, in parentheses, may hold spaces
    except (OSError, ValueError, IndexError, OverflowError):
        return None


def process_tag(pid: int | None = None) -> str:
    """``PID-START`` of a process (this one by default; START ``x`` where there is no /proc)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{start_time(pid) or 'x'}"


def process_alive(pid: int, start: str) -> bool:
    """Whether the process of ``process_tag`` ``PID-START`` still runs (``start`` "x" or "": unknown, pid only)."""
    now = start_time(pid)
    if now is not None:
        return start in ("x", "", now)
    if start_time(os.getpid()) is not None:  # /proc works, and has no such process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True
