"""The Parquet archive: the clean data of each UTC day as one zstd file under ``date=YYYY-MM-DD``.

One fixed file name per day, written aside (in a staging folder next to the archive) and renamed
over the old one, so a reader (DuckDB, pyarrow, Spark, pandas) sees the old day or the new day,
never a half-written or doubled one.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

FILE_NAME = "readings.parquet"
# The clean columns; the day itself is the hive key ``date`` in the path.
COLUMNS = (
    "meter_id",
    "reading_ts",
    "kw",
    "quality",
    "missing_value",
    "filled",
    "unit_converted",
    "had_duplicates",
    "interval_minutes",
    "source_file",
    "source_line",
)


@dataclass(frozen=True)
class ArchivedDay:
    path: Path
    rows: int
    size_bytes: int


def day_path(archive_dir: Path, day: dt.date) -> Path:
    return Path(archive_dir) / f"date={day.isoformat()}" / FILE_NAME


def staging_dir(archive_dir: Path) -> Path:
    """Where a day is written before it is swapped in: beside the archive, not inside it, so
    that no reader globbing the archive (``readings/**``) ever meets a half-written file, even
    one left by a run that was killed. Same file system, so the swap is an atomic rename."""
    archive_dir = Path(archive_dir)
    return archive_dir.parent / f".{archive_dir.name}-staging"


def write_day(con: duckdb.DuckDBPyConnection, archive_dir: Path, day: dt.date) -> ArchivedDay:
    """Export ``day`` of ``standardized_readings`` and swap it in atomically."""
    target = day_path(archive_dir, day)
    staging = staging_dir(archive_dir)
    staging.mkdir(parents=True, exist_ok=True)
    for stale in staging.glob(f"{day.isoformat()}-*.tmp"):  # left by a run that died writing
        stale.unlink(missing_ok=True)
    tmp = staging / f"{day.isoformat()}-{uuid.uuid4().hex}.tmp"
    quoted = str(tmp).replace("'", "''")
    try:
        # zstd level 1: for a 50,000-meter day 0.25 s faster than DuckDB's default level and
        # smaller too (13.3 MB against 14.1 MB; the meter and time order does the compressing).
        # The rows are in meter and time order without an ORDER BY: that is the order they are
        # inserted in (``standardize``), and DuckDB keeps the insertion order of a scan
        # (``preserve_insertion_order``, on by default). Sorting again cost 1 s a day.
        con.execute(
            f"""COPY (SELECT {", ".join(COLUMNS)} FROM standardized_readings
                      WHERE partition_date = DATE '{day.isoformat()}')
                TO '{quoted}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"""
        )
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        # The day's folder appears only with its file: a write that failed (a full disk) leaves
        # a day never archived before without even an empty partition.
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)  # the rename itself survives a power loss
    finally:
        tmp.unlink(missing_ok=True)
    return ArchivedDay(target, count_rows(archive_dir, day), target.stat().st_size)


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def count_rows(archive_dir: Path, day: dt.date) -> int | None:
    """Rows in the archived day from the Parquet footer, or None when the day is not archived."""
    path = day_path(archive_dir, day)
    if not path.exists():
        return None
    return pq.ParquetFile(path).metadata.num_rows
