"""Landing a file: into the raw zone, read once to learn its UTC days, registered by a sidecar.

Used by the sensor and by ``greenstream process``; no Dagster import, so it is testable alone.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from . import landed_tables
from .rules.meter_csv import RejectedFile, read_meter_csv
from .rules.row_checks import (
    bind,
    file_dates_sql,
    parameters,
    placed_rows_sql,
    valid_days_sql,
    valid_row_on_sql,
)
from .settings import Settings
from .storage.raw_zone import ACCEPTED, REJECTED, RawZone, Sidecar

# Threads reading meter files at once: parsing and hashing release the GIL, and the machine
# this is sized for has two cores.
READERS = 2
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Landed:
    sidecar: Sidecar
    already_landed: bool  # the same bytes were landed before: nothing new to process


def land_file(
    path: Path,
    settings: Settings,
    *,
    remove_source: bool = False,
    arrival: dt.datetime | None = None,
    follow_symlinks: bool = True,
) -> Landed:
    """Store ``path`` in the raw zone and register it, accepted with its days or rejected.

    Files taken from the landing folder should pass ``follow_symlinks=False``: a name seen as a
    plain file may be a link by the time it is opened (see ``RawZone.store``)."""
    [landed] = land_files(
        [path], settings, workers=1, arrival=arrival, follow_symlinks=follow_symlinks
    )
    if remove_source:
        path.unlink(missing_ok=True)
    return landed


def land_files(
    paths: list[Path],
    settings: Settings,
    *,
    workers: int = READERS,
    arrival: dt.datetime | None = None,
    follow_symlinks: bool = True,
) -> list[Landed]:
    """Land ``paths`` in that order (their arrival order), the hashing and the reading on
    ``workers`` threads: both release the GIL, and a month of files lands in about two thirds
    of the time it takes one by one.

    The order decides what it would one by one: each new file's arrival time (``arrival``, or
    now, for the first) is taken in order, one microsecond apart at least, so "latest arrival
    wins" keeps the order given; of the same bytes given twice the first lands and the second
    is ``already_landed``. Sidecars are written in order once every file is read. A file that
    cannot be landed (gone, unreadable) raises before any sidecar is written."""
    return _land(paths, settings, workers, arrival, follow_symlinks, each=False)


def land_each(
    paths: list[Path], settings: Settings, *, workers: int = READERS, follow_symlinks: bool = True
) -> list[Landed | Exception]:
    """``land_files`` for files taken from landing/ by the sensor: a file that cannot be landed
    (gone, unreadable, the disk full) gives its exception in its place, and the others land.
    One bad file must not hold back a tick's batch, and landing a batch costs a sixth of landing
    its files one by one (small files: 3 ms a file against 18 ms)."""
    return _land(paths, settings, workers, None, follow_symlinks, each=True)


def _land(paths, settings, workers, arrival, follow_symlinks, *, each: bool):
    zone = RawZone(settings.raw_dir)
    # Each file that failed, when they fail one by one (``land_each``); None: the first raises.
    failed: dict[str, Exception] | None = {} if each else None

    def store(path: Path) -> str | Exception:
        try:
            return zone.store(path, follow_symlinks=follow_symlinks)
        except Exception as exc:
            if failed is None:
                raise
            return exc

    shas = on_readers(store, paths, workers)
    arrivals: dict[str, tuple[str, dt.datetime]] = {}  # new files: name, arrival
    last = None
    for path, sha in zip(paths, shas, strict=True):
        if isinstance(sha, Exception) or sha in arrivals or zone.is_landed(sha):
            continue
        now = arrival if last is None and arrival else dt.datetime.now(dt.UTC)
        last = max(now, last + dt.timedelta(microseconds=1)) if last else now
        arrivals[sha] = (path.name, last)

    examined = _examined(zone, arrivals, settings, workers, failed)
    for sidecar in examined:
        try:
            zone.write_sidecar(sidecar)
        except Exception as exc:
            if failed is None:
                raise
            failed[sidecar.source_file] = exc
    new = {sidecar.source_file: sidecar for sidecar in examined}
    landed: list[Landed | Exception] = []
    for sha in shas:
        if isinstance(sha, Exception):
            landed.append(sha)
        elif failed and sha in failed:
            landed.append(failed[sha])
        else:
            sidecar = new.pop(sha, None)
            landed.append(Landed(sidecar or zone.sidecar(sha), already_landed=sidecar is None))
    return landed


def on_readers(function: Callable[[T], R], items: list[T], workers: int = READERS) -> list[R]:
    """``function`` of each item, in order, on ``workers`` threads (on this one for one)."""
    if workers == 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


def _examined(
    zone: RawZone,
    arrivals: dict[str, tuple[str, dt.datetime]],
    settings: Settings,
    workers: int,
    failed: dict[str, Exception] | None = None,
) -> list[Sidecar]:
    """The sidecars of stored files (``arrivals``: each one's name and arrival), in that order:
    each file read once on the readers, accepted with its days or rejected. The files are read
    and placed a window at a time (``PLACE_WINDOW_BYTES`` of files), all of a window in one
    query (``file_placements``): the tables of a month landed at once never sit in memory
    together. With ``failed`` given, a file that cannot be read or placed is put there and gets
    no sidecar; else its error is raised."""

    def read(sha: str) -> pa.Table | RejectedFile | Exception:
        try:
            return read_meter_csv(zone.data_path(sha), settings.max_inflated_bytes).table
        except RejectedFile as rejected:
            return rejected
        except Exception as exc:
            if failed is None:
                raise
            return exc

    sizes = {sha: zone.data_path(sha).stat().st_size for sha in arrivals}
    sidecars = []
    for window in _windows(list(arrivals), sizes, PLACE_WINDOW_BYTES):
        tables = dict(zip(window, on_readers(read, window, workers), strict=True))
        readable = [sha for sha in window if isinstance(tables[sha], pa.Table)]
        placements = _placed(readable, tables, arrivals, settings, failed)
        for sha in window:
            name, arrival = arrivals[sha]
            if isinstance(tables[sha], RejectedFile):
                reason = tables[sha].reason
                sidecars.append(Sidecar(sha, name, sizes[sha], arrival, REJECTED, reason=reason))
                continue
            if sha not in placements:  # could not be read, or placed (``_placed`` says why)
                if isinstance(tables[sha], Exception):
                    failed[sha] = tables[sha]
                continue
            placement = placements[sha]
            landed_tables.keep(sha, tables[sha], placement.days)
            sidecars.append(
                Sidecar(
                    sha,
                    name,
                    sizes[sha],
                    arrival,
                    ACCEPTED,
                    placement.days,
                    first_day=placement.first_day,
                    first_day_recorded=True,
                )
            )
    return sidecars


def _placed(readable, tables, arrivals, settings, failed) -> dict[str, Placement]:
    """Each readable file's placement, a window's files in one query. With ``failed`` given,
    a window whose query fails is placed a file at a time, so only the file at fault fails."""
    try:
        placed = file_placements([(tables[sha], arrivals[sha][1]) for sha in readable], settings)
        return dict(zip(readable, placed, strict=True))
    except Exception:
        if failed is None:
            raise
    placements = {}
    for sha in readable:
        try:
            [placements[sha]] = file_placements([(tables[sha], arrivals[sha][1])], settings)
        except Exception as exc:
            failed[sha] = exc
    return placements


# Files read and placed together, counted by their size on disk: a 50,000-meter day's 25 files
# (139 MB, about 340 MB as read) go in two windows, each placed by two queries instead of 50.
PLACE_WINDOW_BYTES = 96 << 20


def _windows(shas: list[str], sizes: dict[str, int], limit: int) -> list[list[str]]:
    """``shas`` in order, cut into windows of at least one file and at most ``limit`` bytes
    unless one file alone is bigger."""
    windows: list[list[str]] = []
    held = 0
    for sha in shas:
        if not windows or held + sizes[sha] > limit:
            windows.append([])
            held = 0
        windows[-1].append(sha)
        held += sizes[sha]
    return windows


@dataclass(frozen=True)
class FileRows:
    """A landed file's rows as read, with what placing them needs."""

    table: pa.Table
    source_file: str  # SHA-256
    arrival: dt.datetime
    first_day: dt.date | None  # ``Placement.first_day``


def placed_file_rows(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    sha: str,
    arrival: dt.datetime,
    settings: Settings,
) -> duckdb.DuckDBPyRelation:
    """The file's rows as ``raw_readings`` columns with their ``partition_date``."""
    first_day = file_placement(table, arrival, settings).first_day
    return placed_rows(con, [FileRows(table, sha, arrival, first_day)], settings)


def placed_rows(
    con: duckdb.DuckDBPyConnection, files: list[FileRows], settings: Settings
) -> duckdb.DuckDBPyRelation:
    """The rows of several files as one relation of ``raw_readings`` columns with their
    ``partition_date``, over the Arrow tables it registers as ``file_rows`` and ``file_list``
    (the caller unregisters them once the relation is consumed).

    One relation, so that a day is one insert: an insert per file leaves part-filled row groups
    that the commit then has to merge, which cost a second per 50,000-meter day."""
    _register_files(
        con,
        [f.table for f in files],
        pa.table(
            {
                "file_no": pa.array(range(len(files)), pa.int32()),
                "source_file": pa.array([f.source_file for f in files], pa.string()),
                "arrival_time": pa.array([f.arrival for f in files], pa.timestamp("us", tz="UTC")),
                "first_day": pa.array([f.first_day for f in files], pa.date32()),
            }
        ),
    )
    source = """(SELECT r.* EXCLUDE (file_no), f.source_file, f.arrival_time, f.first_day
                 FROM file_rows r JOIN file_list f USING (file_no))"""
    sql = f"""SELECT meter_id, "timestamp", energy_value, energy_unit, extra_fields,
                     field_count, raw_line, source_file, source_line, partition_date
              FROM ({placed_rows_sql(source, settings)})"""
    return con.sql(sql, params=bind(sql, parameters(settings)))


@dataclass(frozen=True)
class Placement:
    """Where a file's rows go (DESIGN.md section 2): each row on the UTC day its own timestamp
    gives it, and the rows without one on the file's first day."""

    days: list[dt.date]  # every day the file's rows are placed on, sorted
    first_day: dt.date | None  # the earliest day with a valid row, or the arrival day;
    # None when every row has a day of its own (then no row needs it)


def file_placement(table: pa.Table, arrival: dt.datetime, settings: Settings) -> Placement:
    """The placement of one file (see ``file_placements``)."""
    [placement] = file_placements([(table, arrival)], settings)
    return placement


def file_placements(
    files: list[tuple[pa.Table, dt.datetime]], settings: Settings
) -> list[Placement]:
    """Each file's days and first day, from its timestamps parsed once per distinct text.

    All files are asked at once: DuckDB plans the row checks' SQL in about 20 ms, which asked
    file by file was 0.5 to 0.7 s of landing a 50,000-meter day's 25 files. A file's first valid
    day is looked for in the first ``PROBE_SAMPLE_ROWS`` rows of every file in one query; only
    a file whose earliest day is not proven valid there is probed day by day, each probe
    stopping at the first valid row, so no value is checked beyond it."""
    if not files:
        return []
    con = _scratch_connection()
    params = parameters(settings)
    dates_sql = file_dates_sql(_FILES_SOURCE, settings)
    with _registered(con, files):
        dates = con.execute(dates_sql, bind(dates_sql, params)).fetchall()
    # A file without rows has no group: no days, and no row that needs a first day.
    days = {i: ([], False) for i in range(len(files))}
    days |= {file_no: (file_days, undated) for file_no, file_days, undated in dates}
    undated = [i for i, (file_days, is_undated) in days.items() if is_undated and file_days]
    proven = set()
    if undated:
        heads = [(files[i][0].slice(0, PROBE_SAMPLE_ROWS), files[i][1]) for i in undated]
        sql = valid_days_sql(_FILES_SOURCE, settings)
        with _registered(con, heads, numbers=undated):
            proven = set(con.execute(sql, bind(sql, params)).fetchall())
    placements = []
    for i, (table, arrival) in enumerate(files):
        file_days, is_undated = days[i]
        if not is_undated:
            placements.append(Placement(file_days, None))
            continue
        if not file_days:
            first = arrival.astimezone(dt.UTC).date()
        elif (i, file_days[0]) in proven:
            first = file_days[0]
        else:
            first = _first_valid_day(con, table, arrival, file_days, settings)
        placements.append(Placement(sorted({*file_days, first}), first))
    return placements


# Rows from the head of each file in which its first valid day is looked for (see
# ``file_placements``): a day's file nearly always has a valid row there.
PROBE_SAMPLE_ROWS = 2_000
# The files' rows, as ``_registered`` registers them, with the columns the row checks need.
_FILES_SOURCE = """(SELECT r.*, f.arrival_time
                    FROM file_rows r JOIN file_list f USING (file_no))"""


def _register_files(con, tables: list[pa.Table], file_list: pa.Table) -> None:
    """Register ``file_rows``, the rows of ``tables`` each with the ``file_no`` of its table's
    row in ``file_list`` (same order), and ``file_list``: what a file's rows share is joined
    from there rather than repeated on every row."""
    numbers = file_list["file_no"].to_pylist()
    numbered = [
        table.append_column("file_no", pa.array(np.full(table.num_rows, number, np.int32)))
        for number, table in zip(numbers, tables, strict=True)
    ]
    con.register("file_rows", pa.concat_tables(numbered))
    con.register("file_list", file_list)


@contextmanager
def _registered(con, files: list[tuple[pa.Table, dt.datetime]], numbers: list[int] | None = None):
    """The files' rows registered for ``_FILES_SOURCE``, each file numbered by its position in
    ``files`` (or in ``numbers``), for the length of the block."""
    file_list = pa.table(
        {
            "file_no": pa.array(numbers if numbers is not None else range(len(files)), pa.int32()),
            "arrival_time": pa.array([a for _, a in files], pa.timestamp("us", tz="UTC")),
        }
    )
    _register_files(con, [table for table, _ in files], file_list)
    try:
        yield
    finally:
        con.unregister("file_rows")
        con.unregister("file_list")


def _first_valid_day(
    con, table: pa.Table, arrival: dt.datetime, days: list[dt.date], settings: Settings
) -> dt.date:
    """The earliest of ``days`` with a valid row of ``table``, asked day by day; the arrival's
    UTC day when none has one."""
    probe = valid_row_on_sql(_FILES_SOURCE, settings)
    params = parameters(settings)
    with _registered(con, [(table, arrival)]):
        return next(
            (d for d in days if con.execute(probe, bind(probe, {**params, "day": d})).fetchall()),
            arrival.astimezone(dt.UTC).date(),
        )


_SCRATCH = threading.local()
_SCRATCH_LOCK = threading.Lock()
_SCRATCH_DATABASE: list[duckdb.DuckDBPyConnection] = []
# Scratch databases a forked child stopped using (``forget_scratch_connection``), kept referenced.
_FORGOTTEN: list[object] = []


def _scratch_connection() -> duckdb.DuckDBPyConnection:
    """A cursor per thread on one in-memory DuckDB kept for the process: opening one per file
    costs ~30 ms, and a database per thread would keep its own memory (0.1 to 0.2 GB more
    resident after a batch landed on two threads)."""
    con = getattr(_SCRATCH, "con", None)
    if con is None:
        with _SCRATCH_LOCK:
            if not _SCRATCH_DATABASE:
                _SCRATCH_DATABASE.append(duckdb.connect())
            con = _SCRATCH_DATABASE[0].cursor()
        con.execute("SET TimeZone = 'UTC'")
        _SCRATCH.con = con
    return con


def forget_scratch_connection() -> None:
    """Stop using the scratch DuckDB, in a child forked from this process: the child has none
    of the threads DuckDB started here, and opens its own. The old one is left open and
    referenced: closing it, or dropping it, would wait on those threads (the child crashed)."""
    global _SCRATCH
    _FORGOTTEN.append((_SCRATCH, list(_SCRATCH_DATABASE)))
    _SCRATCH = threading.local()
    _SCRATCH_DATABASE.clear()
