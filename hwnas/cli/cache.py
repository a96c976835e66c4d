"""``hwnas cache info|clear``: the data cache (decoded datasets) and the evaluator pools' stale temporary
folders. Everything there is derived data, re-created on demand."""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path
from typing import Any

from hwnas.cli.common import Parser, UsageError, dumps_strict
from hwnas.cli.train import cache_origin, cache_root

KINDS = {
    "archive": "decoded archive",
    "folder": "decoded folder",
    "old unpacked archive": "archive unpacked by an older hwnas (no longer read)",
    "partial write": "left by an interrupted write",
    "interrupted clear": "left by an interrupted hwnas cache clear",
    "hash index": "digests of the archives seen (saves rehashing them)",
}


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _root(args: argparse.Namespace) -> Path:
    root = cache_root(args.cache_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{cache_origin(args.cache_dir)} {root} is a file, not a folder")
    return root


def _report(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.data import SAFE_TO_DELETE, cache_entries, disk_usage, is_hwnas_cache, pool_dirs

    root = _root(args)
    entries, others = cache_entries(root)
    tmp = Path(tempfile.gettempdir())
    pools = pool_dirs(tmp)
    return {
        "location": str(root), "origin": cache_origin(args.cache_dir), "exists": root.is_dir(),
        "is_hwnas_cache": is_hwnas_cache(root), "total_size": sum(e.size for e in entries),
        "entries": [{"name": e.path.name, "path": str(e.path), "kind": e.kind, "size": e.size,
                     "removable": e.removable, **e.details,
                     "last_used": datetime.datetime.fromtimestamp(e.details["last_used"]).isoformat(timespec="seconds")}
                    for e in entries],
        "other": [p.name for p in others], "safe_to_delete": SAFE_TO_DELETE, "temp_dir": str(tmp),
        "stale_temp": [{"path": str(p), "size": disk_usage(p), "owner": state} for p, state in pools
                       if state != "live"],
        "temp_in_use": [str(p) for p, state in pools if state == "live"],
    }


def _describe(e: dict[str, Any]) -> str:
    what = KINDS.get(e["kind"], e["kind"])
    if "error" in e:
        what += f" ({e['error']})"
    elif e["kind"] in ("archive", "folder"):
        what += (f" {e['source']}: {e['classes']} classes, {e['train']} train / {e['test']} test, "
                 f"{e['resolution']} px")
    if not e["removable"]:
        what += "; being written now"
    when = e["last_used"][:16].replace("T", " ")
    return f"{what}; last {'used' if e['kind'] in ('archive', 'folder') else 'changed'} {when}"


def cmd_info(args: argparse.Namespace) -> int:
    r = _report(args)
    if args.json:
        print(dumps_strict(r, indent=2))
        return 0
    print(f"cache: {r['location']} ({r['origin']})")
    if not r["exists"]:
        print("  empty (not created yet)")
    elif not r["entries"] and not r["other"]:
        print("  empty")
    elif not r["is_hwnas_cache"]:
        print("  does not look like an hwnas cache (no .hwnas-cache marker): hwnas cache clear refuses it")
    else:
        n = len(r["entries"])
        print(f"  {_size(r['total_size'])} on disk in {n} entr{'y' if n == 1 else 'ies'}")
    width = max((len(e["name"]) for e in r["entries"]), default=0) + 1
    for e in r["entries"]:
        name = e["name"] + ("/" if Path(e["path"]).is_dir() else "")
        print(f"  {_size(e['size']):>10}  {name:<{width}}  {_describe(e)}")
    if r["other"]:
        print(f"  not hwnas's (never deleted): {', '.join(r['other'][:10])}"
              + (f" and {len(r['other']) - 10} more" if len(r["other"]) > 10 else ""))
    print(r["safe_to_delete"])
    if r["stale_temp"]:
        print(f"stale temporary folders in {r['temp_dir']} (evaluator pools of processes that are gone; "
              "hwnas cache clear removes them):")
        for t in r["stale_temp"]:
            print(f"  {_size(t['size']):>10}  {t['path']}" + ("  (an older hwnas's)" if t["owner"] == "unknown"
                                                               else ""))
    else:
        print(f"no stale temporary folders in {r['temp_dir']}")
    if r["temp_in_use"]:
        print(f"in use by running hwnas processes (kept): {', '.join(r['temp_in_use'])}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from hwnas.data import DataError, clear_cache, remove_stale_pool_dirs

    root = _root(args)
    try:
        freed, removed, kept = clear_cache(root)
    except DataError as e:
        raise UsageError(str(e)) from None
    tmp = Path(tempfile.gettempdir())
    temp_freed = remove_stale_pool_dirs(tmp, include_unknown=True)
    if removed:
        print(f"cleared {root}: freed {_size(freed)} ({removed} entr{'y' if removed == 1 else 'ies'})")
    else:
        print(f"nothing to clear in {root}")
    if temp_freed:
        print(f"removed stale temporary folders from {tmp}: freed {_size(temp_freed)}")
    if kept:
        print(f"kept (not hwnas's, or being written now): {', '.join(kept[:10])}"
              + (f" and {len(kept) - 10} more" if len(kept) > 10 else ""))
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("cache", help="show or clear the data cache (decoded datasets; safe to delete)",
                       description="The data cache holds one decoded .npz per dataset (archive or folder) and "
                       "size; everything in it is derived data, re-created on demand.")
    csub = c.add_subparsers(dest="cache_command", required=True, parser_class=Parser)
    for name, func, help_ in (
        ("info", cmd_info, "where the cache is, what is in it and how large, and stale temporary folders"),
        ("clear", cmd_clear, "delete the cache's entries and stale temporary folders, saying how much was freed "
                             "(only hwnas's own files: a folder that is not an hwnas cache is refused)"),
    ):
        p = csub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.add_argument("--cache-dir", help="the cache folder (default $HWNAS_CACHE or ~/.cache/hwnas)")
        if name == "info":
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
