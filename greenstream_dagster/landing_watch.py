"""Watching the landing folder: which files are complete, in plain Python for easy testing.

A file is complete when its size and modification time have not changed for the settle period,
seen across two looks. Only the files still settling are remembered, so the state stays small
however many files have landed (landed files leave the folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Names a writer uses while a file is still being written, or that are not data files.
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".filepart", "~")


def is_candidate(path: Path) -> bool:
    """A regular, visible, non-temporary file directly in the landing folder (no links)."""
    name = path.name
    if name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES):
        return False
    return path.is_file() and not path.is_symlink()


@dataclass(frozen=True)
class Scan:
    ready: list[Path]  # complete files, oldest first, at most the tick's limit
    waiting: int  # files still settling or beyond the limit
    state: str  # the new cursor


def scan(
    landing_dir: Path, cursor: str | None, now: float, settle_seconds: float, limit: int
) -> Scan:
    """Look at the landing folder once; return the complete files and the new cursor."""
    seen: dict[str, list] = json.loads(cursor) if cursor else {}
    settling: dict[str, list] = {}
    complete: list[tuple[int, str, Path]] = []
    if landing_dir.is_dir():
        for path in landing_dir.iterdir():
            if not is_candidate(path):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # vanished between two looks: not an error
                continue
            signature = [stat.st_size, stat.st_mtime_ns]
            before = seen.get(path.name)
            if before and before[:2] == signature and now - before[2] >= settle_seconds:
                complete.append((stat.st_mtime_ns, path.name, path))
            first_seen = before[2] if before and before[:2] == signature else now
            settling[path.name] = [*signature, first_seen]
    complete.sort()
    ready = [path for _, _, path in complete[:limit]]
    for path in ready:
        settling.pop(path.name, None)
    return Scan(ready, len(settling), json.dumps(settling, separators=(",", ":")))
