"""Files' rows as landing read them, kept in memory until the raw rows of their days are loaded.

``greenstream process`` lands files and runs their days in one process. Landing must read every
file to learn its days, and ``raw_readings`` would read it again: 0.55 to 0.7 s of a
50,000-meter day, a quarter of that step. A landed file is named by its SHA-256 and never
changes, so the table read at landing is the table a second read would give.

Nothing is kept unless the process asks for it (``keeping``): the sensor lands files for runs
in other processes, where a kept table would only hold memory. At most ``BUDGET_BYTES`` are
kept, so a month landed at once keeps its first files only and the rest are read when their
day comes. A table is let go when the last day it touches has taken it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

# A 50,000-meter day's files hold about 340 MB as read; a day's run peaks near 1.7 GB, so this
# keeps one such day within the 2.5 GB the pipeline is sized for.
BUDGET_BYTES = 512 << 20


@dataclass
class _Kept:
    table: pa.Table
    last_day: dt.date  # the file's last day: once it has taken the table, nothing else will


_lock = threading.Lock()
_kept: dict[str, _Kept] | None = None  # None: this process keeps nothing
# The bytes of the tables in ``_kept``, kept as a running total: summing them at every keep
# would cost a pass over every kept file, for each of the thousands a batch may land.
_held = 0


@contextmanager
def keeping() -> Iterator[None]:
    """Keep the tables landing reads inside this block; all are let go when it ends."""
    global _kept, _held
    with _lock:
        _kept, _held = {}, 0
    try:
        yield
    finally:
        with _lock:
            _kept, _held = None, 0


def keep(source_file: str, table: pa.Table, days: list[dt.date]) -> None:
    """Keep a landed file's table for the raw rows of ``days``, if the budget allows."""
    global _held
    with _lock:
        if _kept is None or not days or _held + table.nbytes > BUDGET_BYTES:
            return
        _kept[source_file] = _Kept(table, max(days))
        _held += table.nbytes


def take(source_file: str, day: dt.date) -> pa.Table | None:
    """The table landing read for ``source_file``, or None when it was not kept; let go once
    ``day`` is the last day of the file."""
    global _held
    with _lock:
        kept = _kept.get(source_file) if _kept is not None else None
        if kept is None:
            return None
        if day >= kept.last_day:
            del _kept[source_file]
            _held -= kept.table.nbytes
        return kept.table


def kept() -> dict[str, tuple[pa.Table, dt.date]]:
    """Every table kept now, with the last day of its file (for ``landing_child`` to hand
    over)."""
    with _lock:
        return {sha: (k.table, k.last_day) for sha, k in (_kept or {}).items()}


def held_bytes() -> int:
    """What is kept now, in bytes (for tests)."""
    with _lock:
        return _held
